//! Notify commands: run one after the other, in the order of the
//! transitions that queued them, off the VRRP loop. An instance that
//! changes state faster than its commands run has only its latest
//! transition's commands waiting (older waiting ones are dropped, the
//! order of the rest is kept), and the queue is bounded: a flapping
//! instance cannot pile up work that runs long after.
use std::{
    collections::VecDeque,
    sync::{Arc, Mutex},
    time::Duration,
};

use tokio::{sync::Notify as Wake, task::JoinHandle};
use tracing::warn;

use super::track::{RunError, run_bounded};

/// How long one notify command may run before it is killed.
const NOTIFY_TIMEOUT: Duration = Duration::from_secs(10);
/// Most transitions waiting at once (over all instances).
const MAX_WAITING: usize = 256;

/// One transition's commands.
#[derive(Clone, Debug, PartialEq, Eq)]
struct Job {
    instance: String,
    commands: Vec<Vec<String>>,
    run_as: Option<super::track::RunAs>,
}

/// The waiting transitions, in order.
#[derive(Debug, Default)]
struct Queue {
    jobs: VecDeque<Job>,
    closed: bool,
}

impl Queue {
    /// Queues `job`: an earlier waiting transition of the same instance
    /// is dropped (latest state wins), and beyond the bound the oldest
    /// waiting job goes. Returns how many were dropped.
    fn push(&mut self, job: Job) -> usize {
        let before = self.jobs.len();
        self.jobs.retain(|j| j.instance != job.instance);
        let mut dropped = before - self.jobs.len();
        if self.jobs.len() == MAX_WAITING {
            self.jobs.pop_front();
            dropped += 1;
        }
        self.jobs.push_back(job);
        dropped
    }
}

pub struct Notifier {
    queue: Arc<Mutex<Queue>>,
    wake: Arc<Wake>,
    task: Option<JoinHandle<()>>,
}

impl Notifier {
    pub fn start() -> Self {
        let queue = Arc::new(Mutex::new(Queue::default()));
        let wake = Arc::new(Wake::new());
        let (q, w) = (Arc::clone(&queue), Arc::clone(&wake));
        let task = tokio::spawn(async move {
            loop {
                let next = {
                    let mut q = q.lock().expect("not poisoned");
                    match q.jobs.pop_front() {
                        Some(job) => Some(job),
                        None if q.closed => return,
                        None => None,
                    }
                };
                match next {
                    Some(job) => {
                        for argv in &job.commands {
                            run(argv, job.run_as).await;
                        }
                    }
                    None => w.notified().await,
                }
            }
        });
        Self {
            queue,
            wake,
            task: Some(task),
        }
    }

    /// Queues the commands of one transition of `instance`, to run as
    /// `run_as` (root when None).
    pub fn queue(
        &self,
        instance: &str,
        commands: Vec<Vec<String>>,
        run_as: Option<super::track::RunAs>,
    ) {
        if commands.is_empty() {
            return;
        }
        let dropped = self.queue.lock().expect("not poisoned").push(Job {
            instance: instance.to_owned(),
            commands,
            run_as,
        });
        if dropped > 0 {
            warn!(
                instance,
                dropped, "notify commands of earlier transitions not run: the state changed again"
            );
        }
        self.wake.notify_one();
    }

    /// Lets the queued commands run, bounded; nothing is queued after.
    pub async fn finish(&mut self) {
        self.queue.lock().expect("not poisoned").closed = true;
        self.wake.notify_one();
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

async fn run(argv: &[String], run_as: Option<super::track::RunAs>) {
    match run_bounded(argv, NOTIFY_TIMEOUT, run_as).await {
        Ok(status) if status.success() => {}
        Ok(status) => warn!(command = ?argv, %status, "notify command failed"),
        Err(RunError::Spawn(e)) => warn!(command = ?argv, "cannot run notify command: {e}"),
        Err(RunError::TimedOut) => {
            warn!(command = ?argv, "notify command timed out and was killed")
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn job(instance: &str, state: &str) -> Job {
        Job {
            instance: instance.into(),
            commands: vec![vec!["/n".into(), instance.into(), state.into()]],
            run_as: None,
        }
    }

    /// Transitions queued while others wait: per instance the latest wins,
    /// the order of what is left is the order of queueing.
    #[test]
    fn latest_state_wins_order_kept() {
        let mut q = Queue::default();
        assert_eq!(q.push(job("A", "BACKUP")), 0);
        assert_eq!(q.push(job("B", "BACKUP")), 0);
        assert_eq!(q.push(job("A", "MASTER")), 1);
        assert_eq!(q.push(job("C", "FAULT")), 0);
        assert_eq!(q.push(job("A", "BACKUP")), 1);
        let left: Vec<Job> = q.jobs.iter().cloned().collect();
        assert_eq!(
            left,
            vec![job("B", "BACKUP"), job("C", "FAULT"), job("A", "BACKUP")]
        );
    }

    /// 5 000 transitions of one instance leave one job; of many
    /// instances, at most the bound.
    #[test]
    fn the_queue_is_bounded() {
        let mut q = Queue::default();
        for n in 0..5000 {
            q.push(job("A", if n % 2 == 0 { "MASTER" } else { "BACKUP" }));
        }
        assert_eq!(q.jobs.len(), 1);
        let mut q = Queue::default();
        for n in 0..5000 {
            q.push(job(&format!("I{n}"), "MASTER"));
        }
        assert_eq!(q.jobs.len(), MAX_WAITING);
        assert_eq!(q.jobs.back(), Some(&job("I4999", "MASTER")));
    }
}

/// A notify_fifo line, in keepalived's format: `INSTANCE "VI_1" MASTER
/// 150` (a group's priority is 0).
pub fn fifo_line(kind: &str, name: &str, to: super::engine::State, priority: u8) -> String {
    use super::engine::State;
    let state = match to {
        State::Master => "MASTER",
        State::Backup => "BACKUP",
        State::Fault => "FAULT",
        State::Initialize => "STOP",
    };
    format!("{kind} \"{name}\" {state} {priority}\n")
}

/// Opens the notify FIFO at `path` for writing without blocking, making it
/// (mode 0600, as keepalived does) if it does not exist; anything else at
/// the path is refused by name.
pub fn open_fifo(path: &std::path::Path) -> anyhow::Result<std::fs::File> {
    use anyhow::{Context as _, bail};
    use std::os::unix::fs::{FileTypeExt as _, OpenOptionsExt as _};
    match std::fs::symlink_metadata(path) {
        Ok(m) if m.file_type().is_fifo() => {}
        Ok(_) => bail!("notify_fifo: {} exists and is not a FIFO", path.display()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            nix::unistd::mkfifo(path, nix::sys::stat::Mode::from_bits_truncate(0o600))
                .with_context(|| format!("notify_fifo: making {}", path.display()))?;
        }
        Err(e) => return Err(e).with_context(|| format!("notify_fifo: {}", path.display())),
    }
    // Read-write: opening never waits for a reader, and writes go to the
    // pipe's buffer while none reads.
    std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .custom_flags(libc::O_NONBLOCK)
        .open(path)
        .with_context(|| format!("notify_fifo: opening {}", path.display()))
}

#[cfg(test)]
mod fifo_tests {
    use super::*;
    use crate::vrrp::engine::State;

    #[test]
    fn lines_as_keepalived_writes_them() {
        assert_eq!(
            fifo_line("INSTANCE", "VI_1", State::Master, 150),
            "INSTANCE \"VI_1\" MASTER 150\n"
        );
        assert_eq!(
            fifo_line("GROUP", "G", State::Initialize, 0),
            "GROUP \"G\" STOP 0\n"
        );
    }
}
