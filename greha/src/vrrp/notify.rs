//! Notify commands: run one after the other, in the order of the
//! transitions that queued them, off the VRRP loop.
use std::time::Duration;

use tokio::{sync::mpsc, task::JoinHandle};
use tracing::warn;

use super::track::{RunError, run_bounded};

/// How long one notify command may run before it is killed.
const NOTIFY_TIMEOUT: Duration = Duration::from_secs(10);

pub struct Notifier {
    tx: Option<mpsc::UnboundedSender<Vec<String>>>,
    task: Option<JoinHandle<()>>,
}

impl Notifier {
    pub fn start() -> Self {
        let (tx, mut rx) = mpsc::unbounded_channel::<Vec<String>>();
        let task = tokio::spawn(async move {
            while let Some(argv) = rx.recv().await {
                run(&argv).await;
            }
        });
        Self {
            tx: Some(tx),
            task: Some(task),
        }
    }

    /// Queues a command (program and arguments).
    pub fn queue(&self, argv: Vec<String>) {
        if let Some(tx) = &self.tx {
            let _ = tx.send(argv);
        }
    }

    /// Lets the queued commands run, bounded; nothing is queued after.
    pub async fn finish(&mut self) {
        self.tx = None;
        if let Some(task) = self.task.take()
            && tokio::time::timeout(NOTIFY_TIMEOUT * 4, task)
                .await
                .is_err()
        {
            warn!("notify commands still running at exit");
        }
    }
}

impl Drop for Notifier {
    fn drop(&mut self) {
        if let Some(task) = &self.task {
            task.abort();
        }
    }
}

async fn run(argv: &[String]) {
    match run_bounded(argv, NOTIFY_TIMEOUT).await {
        Ok(status) if status.success() => {}
        Ok(status) => warn!(command = ?argv, %status, "notify command failed"),
        Err(RunError::Spawn(e)) => warn!(command = ?argv, "cannot run notify command: {e}"),
        Err(RunError::TimedOut) => {
            warn!(command = ?argv, "notify command timed out and was killed")
        }
    }
}
