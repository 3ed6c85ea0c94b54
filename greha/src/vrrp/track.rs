//! The trackers' I/O: check scripts run on their interval with a timeout,
//! each result sent to the VRRP loop, which gives it to
//! [`super::router::TrackerState`]; interface trackers are fed by the
//! loop's netlink link events.
use std::time::Duration;

use tokio::{sync::mpsc, task::JoinHandle};

use super::{def::Track, router::TrackerState};

/// A tracker of a running instance.
pub struct Tracker {
    pub track: Track,
    /// The tracked interface (0 for a script).
    pub ifindex: u32,
    pub state: TrackerState,
}

/// A script's result: (instance id, tracker index, success).
pub type ScriptResult = (u64, usize, bool);

/// Runs `path` every `interval`, killed after `timeout`, and sends each
/// result, until the receiver is gone or the task is aborted.
pub fn spawn_script(
    path: String,
    interval: Duration,
    timeout: Duration,
    id: u64,
    tracker: usize,
    tx: mpsc::Sender<ScriptResult>,
) -> JoinHandle<()> {
    tokio::spawn(async move {
        loop {
            let mut cmd = tokio::process::Command::new(&path);
            cmd.kill_on_drop(true);
            let ok = matches!(
                tokio::time::timeout(timeout, cmd.status()).await,
                Ok(Ok(s)) if s.success()
            );
            if tx.send((id, tracker, ok)).await.is_err() {
                break;
            }
            tokio::time::sleep(interval).await;
        }
    })
}
