//! The trackers' I/O: check scripts run on their interval with a timeout,
//! tunnels' far ends and tracked files are read, each result sent to the
//! VRRP loop, which gives it to [`super::router::TrackerState`]; interface
//! trackers are fed by the loop's netlink link events.
use std::time::Duration;

use tokio::{sync::mpsc, task::JoinHandle};

use super::{def::Track, router::TrackerState};

/// Who a script runs as (keepalived's `user`/`script_user`): a user's id
/// and a group's.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RunAs {
    pub uid: u32,
    pub gid: u32,
}

/// `USER[:GROUP]` as keepalived's `user USER [GROUP]` takes it: the user's
/// own group unless one is named.
pub fn run_as(spec: &str) -> anyhow::Result<RunAs> {
    use anyhow::{Context as _, anyhow};
    let (user, group) = spec
        .split_once(':')
        .map_or((spec, None), |(u, g)| (u, Some(g)));
    let u = nix::unistd::User::from_name(user)
        .with_context(|| format!("looking up user {user}"))?
        .ok_or_else(|| anyhow!("user {user:?} does not exist"))?;
    let gid = match group {
        None => u.gid.as_raw(),
        Some(g) => nix::unistd::Group::from_name(g)
            .with_context(|| format!("looking up group {g}"))?
            .ok_or_else(|| anyhow!("group {g:?} does not exist"))?
            .gid
            .as_raw(),
    };
    Ok(RunAs {
        uid: u.uid.as_raw(),
        gid,
    })
}

/// A tracker of a running instance.
pub struct Tracker {
    /// A check script's user (its own `user`, or the daemon's
    /// `script_user`); None runs it as root.
    pub run_as: Option<RunAs>,
    pub track: Track,
    /// The tracked interface (0 for a script).
    pub ifindex: u32,
    pub state: TrackerState,
}

/// What a tracker's task reports: (instance id, tracker index, reading).
pub type ScriptResult = (u64, usize, Reading);

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Reading {
    /// A check script's run, or a tunnel's far end: up or not.
    Up(bool),
    /// A tracked file's number.
    Value(i64),
}

/// Runs `path` every `interval`, killed after `timeout`, and sends each
/// result, until the receiver is gone or the task is aborted.
pub fn spawn_script(
    path: String,
    interval: Duration,
    timeout: Duration,
    run_as: Option<RunAs>,
    id: u64,
    tracker: usize,
    tx: mpsc::Sender<ScriptResult>,
) -> JoinHandle<()> {
    // Checked when parsed, as for notify commands.
    let argv = super::command::split(&path).unwrap_or_else(|_| vec![path.clone()]);
    tokio::spawn(async move {
        loop {
            let ok = run_bounded(&argv, timeout, run_as)
                .await
                .is_ok_and(|s| s.success());
            if tx.send((id, tracker, Reading::Up(ok))).await.is_err() {
                break;
            }
            tokio::time::sleep(interval).await;
        }
    })
}

/// Every `period`, `read` (None: nothing to read this time); a value
/// other than the last is sent as `reading(value)`, until the receiver
/// is gone or the task is aborted.
fn spawn_watch<T: Copy + PartialEq + Send + 'static>(
    period: Duration,
    mut last: T,
    mut read: impl FnMut() -> Option<T> + Send + 'static,
    reading: fn(T) -> Reading,
    id: u64,
    tracker: usize,
    tx: mpsc::Sender<ScriptResult>,
) -> JoinHandle<()> {
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(period);
        loop {
            tick.tick().await;
            let Some(v) = read() else { continue };
            if v != last {
                last = v;
                if tx.send((id, tracker, reading(v))).await.is_err() {
                    break;
                }
            }
        }
    })
}

/// Sends whether tunnel `name`'s far end is up (not found dead by its
/// prober: alive, not yet known, or not probed) whenever that changes,
/// read from the pinned probe map every 100 ms: a tenth of the finest
/// useful probe interval times its three losses, and one map read.
pub fn spawn_tunnel_watch(
    pin_dir: std::path::PathBuf,
    name: String,
    id: u64,
    tracker: usize,
    tx: mpsc::Sender<ScriptResult>,
) -> JoinHandle<()> {
    let mut map = None;
    let read = move || {
        // Opened (and the tunnel's slot found) again after any error: a
        // reload may re-create the tunnel elsewhere.
        if map.is_none() {
            map = crate::tunnel::id_of(&pin_dir, &name)
                .ok()
                .flatten()
                .and_then(|i| Some((i, crate::tunnel::probe_map(&pin_dir).ok()?)));
        }
        let (slot, m) = map.as_ref()?;
        match m.get(slot, 0) {
            Ok(p) => Some(p.state != greha_common::PROBE_DEAD),
            Err(_) => {
                map = None;
                None
            }
        }
    };
    spawn_watch(
        Duration::from_millis(100),
        true,
        read,
        Reading::Up,
        id,
        tracker,
        tx,
    )
}

/// A tracked file's number as keepalived reads it: the text's leading
/// whole number; a file that is missing, unreadable or holds none counts
/// as 0.
pub fn read_number(path: &std::path::Path) -> i64 {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let t = text.trim_start();
    let end = t
        .char_indices()
        .find(|&(i, c)| !(c.is_ascii_digit() || (i == 0 && (c == '-' || c == '+'))))
        .map_or(t.len(), |(i, _)| i);
    t[..end].parse().unwrap_or(0)
}

/// Writes `init` to a tracked file at start if it does not exist (or
/// always, with `overwrite`), as keepalived's init_file does.
pub fn init_file(
    path: &std::path::Path,
    init: Option<i64>,
    overwrite: bool,
) -> std::io::Result<()> {
    match init {
        Some(v) if overwrite || !path.exists() => std::fs::write(path, format!("{v}\n")),
        _ => Ok(()),
    }
}

/// Sends a tracked file's number whenever it changes, read every 100 ms
/// (one small read; keepalived watches with inotify, which a file
/// replaced by rename would escape).
pub fn spawn_file_watch(
    path: std::path::PathBuf,
    last: i64,
    id: u64,
    tracker: usize,
    tx: mpsc::Sender<ScriptResult>,
) -> JoinHandle<()> {
    let read = move || Some(read_number(&path));
    spawn_watch(
        Duration::from_millis(100),
        last,
        read,
        Reading::Value,
        id,
        tracker,
        tx,
    )
}

/// Why a bounded run did not give an exit status.
#[derive(Debug)]
pub enum RunError {
    Spawn(std::io::Error),
    TimedOut,
}

/// Where systemd-run is, when scripts run as transient services.
static SCRIPT_UNITS: std::sync::OnceLock<std::path::PathBuf> = std::sync::OnceLock::new();

/// From now on every script runs as a transient systemd service of its own
/// (`greha run --script-units`): a service's sandbox (read-only /var,
/// no capability to signal others' processes, no mount namespace changes)
/// would otherwise be its scripts' too, and keepalived users' scripts
/// expect to run as plain root. greha keeps its own minimal privileges.
pub fn run_scripts_as_units() -> anyhow::Result<()> {
    let runner = ["/usr/bin/systemd-run", "/bin/systemd-run"]
        .into_iter()
        .map(std::path::PathBuf::from)
        .find(|p| p.exists())
        .ok_or_else(|| anyhow::anyhow!("--script-units: systemd-run is not installed"))?;
    let _ = SCRIPT_UNITS.set(runner);
    Ok(())
}

/// The command that runs `argv`: itself, or systemd-run starting it as a
/// service that systemd stops (its whole cgroup) after `timeout`, and
/// whose exit status systemd-run returns.
fn script_command(
    argv: &[String],
    timeout: Duration,
    run_as: Option<RunAs>,
) -> tokio::process::Command {
    match SCRIPT_UNITS.get() {
        None => {
            let mut cmd = tokio::process::Command::new(&argv[0]);
            cmd.args(&argv[1..]);
            if let Some(r) = run_as {
                // Supplementary groups go too (std drops them for a new uid).
                cmd.uid(r.uid).gid(r.gid);
            }
            cmd
        }
        Some(runner) => {
            let mut cmd = tokio::process::Command::new(runner);
            if let Some(r) = run_as {
                cmd.arg(format!("--uid={}", r.uid))
                    .arg(format!("--property=Group={}", r.gid));
            }
            cmd.args([
                "--quiet",
                "--collect",
                "--wait",
                "--pipe",
                "--service-type=exec",
                "--property=KillMode=control-group",
            ])
            .arg(format!(
                "--property=RuntimeMaxSec={}ms",
                timeout.as_millis().max(1)
            ))
            .arg(format!("--description=greha script {}", argv[0]))
            .arg("--")
            .args(argv);
            cmd
        }
    }
}

/// Runs `argv` in a process group of its own and waits at most `timeout`;
/// then the whole group is killed, so a script's children (a `sleep` it
/// started, a pipeline) go with it instead of piling up as orphans.
pub async fn run_bounded(
    argv: &[String],
    timeout: Duration,
    run_as: Option<RunAs>,
) -> Result<std::process::ExitStatus, RunError> {
    let mut cmd = script_command(argv, timeout, run_as);
    cmd.process_group(0).kill_on_drop(true);
    let mut child = cmd.spawn().map_err(RunError::Spawn)?;
    // Kills the group however this ends: done, timed out, or the task
    // aborted (the instance stopped, the daemon is shutting down).
    let _group = child
        .id()
        .map(|pid| GroupKiller(nix::unistd::Pid::from_raw(pid as i32)));
    match tokio::time::timeout(timeout, child.wait()).await {
        Ok(Ok(status)) => Ok(status),
        Ok(Err(e)) => Err(RunError::Spawn(e)),
        Err(_) => Err(RunError::TimedOut),
    }
}

/// SIGKILL to a process group when dropped: what a script started (a
/// `sleep` in the background, a pipeline) goes with it.
struct GroupKiller(nix::unistd::Pid);

impl Drop for GroupKiller {
    fn drop(&mut self) {
        let _ = nix::sys::signal::killpg(self.0, nix::sys::signal::Signal::SIGKILL);
    }
}

#[cfg(test)]
mod file_tests {
    use super::*;

    #[test]
    fn numbers_as_keepalived_reads_them() {
        let dir = std::env::temp_dir().join(format!("greha-track-file-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("temp dir");
        let f = dir.join("v");
        for (text, want) in [
            ("0\n", 0),
            ("  42 \n", 42),
            ("-300", -300),
            ("+7", 7),
            ("12abc", 12),
            ("abc", 0),
            ("", 0),
        ] {
            std::fs::write(&f, text).expect("write");
            assert_eq!(read_number(&f), want, "{text:?}");
        }
        assert_eq!(read_number(&dir.join("missing")), 0);
        let g = dir.join("init");
        init_file(&g, Some(5), false).expect("init");
        assert_eq!(read_number(&g), 5);
        init_file(&g, Some(9), false).expect("kept");
        assert_eq!(read_number(&g), 5);
        init_file(&g, Some(9), true).expect("overwritten");
        assert_eq!(read_number(&g), 9);
        std::fs::remove_dir_all(&dir).expect("cleanup");
    }
}

/// One process as a track-process sees it: the name the kernel keeps
/// (`Name:` of /proc/PID/status, at most 15 bytes) and its command line.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Proc {
    pub name: String,
    pub argv: Vec<String>,
}

/// Whether `p` is one of the processes `m` counts, as keepalived matches
/// them: the name alone (its first 15 bytes, as the kernel keeps it)
/// unless parameters are given or `full_command`; then argv[0] exactly,
/// and the parameters by `param_match`.
pub fn process_matches(m: &super::def::ProcessMatch, p: &Proc) -> bool {
    use super::def::ParamMatch;
    let want = super::command::split(&m.process).unwrap_or_else(|_| vec![m.process.clone()]);
    let (cmd, params) = want.split_first().expect("split gives a program");
    if params.is_empty() && !m.full_command && m.param_match.is_none() {
        let short: String = cmd.chars().take(15).collect();
        return p.name == short;
    }
    let Some((arg0, args)) = p.argv.split_first() else {
        return false;
    };
    if arg0 != cmd {
        return false;
    }
    match m.param_match {
        None if params.is_empty() => true,
        None | Some(ParamMatch::Exact) => args == params,
        Some(_) if params.is_empty() => args.is_empty(),
        Some(ParamMatch::Partial) => args.len() >= params.len() && args[..params.len()] == *params,
        Some(ParamMatch::Initial) => {
            args.len() >= params.len()
                && params.split_last().is_none_or(|(last, first)| {
                    args[..first.len()] == *first && args[first.len()].starts_with(last.as_str())
                })
        }
    }
}

/// The processes running now (kernel threads, with no command line, and
/// zombies left out, as keepalived does).
pub fn processes() -> Vec<Proc> {
    let Ok(dir) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    dir.filter_map(Result::ok)
        .filter(|e| {
            e.file_name()
                .to_str()
                .is_some_and(|n| n.bytes().all(|b| b.is_ascii_digit()))
        })
        .filter_map(|e| {
            let status = std::fs::read_to_string(e.path().join("status")).ok()?;
            let field = |k: &str| {
                status
                    .lines()
                    .find_map(|l| l.strip_prefix(k))
                    .map(|v| v.trim().to_owned())
            };
            if field("State:").is_some_and(|s| s.starts_with('Z')) {
                return None;
            }
            let cmdline = std::fs::read(e.path().join("cmdline")).ok()?;
            if cmdline.is_empty() {
                return None;
            }
            let argv = cmdline
                .split(|b| *b == 0)
                .filter(|a| !a.is_empty())
                .map(|a| String::from_utf8_lossy(a).into_owned())
                .collect();
            Some(Proc {
                name: field("Name:")?,
                argv,
            })
        })
        .collect()
}

/// Whether `m`'s quorum holds among `procs`.
pub fn quorum(m: &super::def::ProcessMatch, procs: &[Proc]) -> bool {
    let n = procs.iter().filter(|p| process_matches(m, p)).count();
    (m.quorum as usize..=m.quorum_max as usize).contains(&n)
}

/// Sends whether `m`'s quorum holds whenever that changes, after its
/// fork or terminate delay (a change undone within the delay is not
/// sent), reading /proc every 250 ms (keepalived listens to the kernel's
/// process events; a quarter second is well inside any advert-based
/// failover).
pub fn spawn_process_watch(
    m: super::def::ProcessMatch,
    mut last: bool,
    id: u64,
    tracker: usize,
    tx: mpsc::Sender<ScriptResult>,
) -> JoinHandle<()> {
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(Duration::from_millis(250));
        let mut since: Option<tokio::time::Instant> = None;
        loop {
            tick.tick().await;
            let m2 = m.clone();
            let Ok(now) = tokio::task::spawn_blocking(move || quorum(&m2, &processes())).await
            else {
                continue;
            };
            if now == last {
                since = None;
                continue;
            }
            let started = *since.get_or_insert_with(tokio::time::Instant::now);
            let delay = if now { m.fork_delay } else { m.terminate_delay };
            if started.elapsed() < delay {
                continue;
            }
            since = None;
            last = now;
            if tx.send((id, tracker, Reading::Up(now))).await.is_err() {
                break;
            }
        }
    })
}

#[cfg(test)]
mod process_tests {
    use super::*;
    use crate::vrrp::def::{ParamMatch, ProcessMatch};

    fn m(process: &str, param_match: ParamMatch, full_command: bool) -> ProcessMatch {
        ProcessMatch {
            process: process.into(),
            // Exact stands for "not given" here.
            param_match: (param_match != ParamMatch::Exact).then_some(param_match),
            quorum: 1,
            quorum_max: u32::MAX,
            full_command,
            fork_delay: Duration::ZERO,
            terminate_delay: Duration::ZERO,
        }
    }

    fn p(name: &str, argv: &[&str]) -> Proc {
        Proc {
            name: name.into(),
            argv: argv.iter().map(|a| a.to_string()).collect(),
        }
    }

    /// keepalived.conf(5)'s rules: the name exactly (not pgrep's regular
    /// expression: `ssh` is not `sshd`), truncated as the kernel keeps it;
    /// argv[0] and parameters when given.
    #[test]
    fn processes_match_as_keepalived_matches_them() {
        let haproxy = p(
            "haproxy",
            &["/usr/sbin/haproxy", "-f", "/etc/haproxy.cfg", "-Ws"],
        );
        let long = p("a-very-long-nam", &["/opt/a-very-long-name-indeed"]);
        for (spec, pm, full, proc_, want) in [
            ("haproxy", ParamMatch::Exact, false, &haproxy, true),
            ("hapr", ParamMatch::Exact, false, &haproxy, false),
            (
                "a-very-long-name-indeed",
                ParamMatch::Exact,
                false,
                &long,
                true,
            ),
            ("/usr/sbin/haproxy", ParamMatch::Exact, true, &haproxy, true),
            (
                "/usr/sbin/haproxy",
                ParamMatch::Partial,
                false,
                &haproxy,
                false,
            ),
            ("haproxy", ParamMatch::Exact, true, &haproxy, false),
            (
                "/usr/sbin/haproxy -f",
                ParamMatch::Exact,
                false,
                &haproxy,
                false,
            ),
            (
                "/usr/sbin/haproxy -f",
                ParamMatch::Partial,
                false,
                &haproxy,
                true,
            ),
            (
                "/usr/sbin/haproxy -f /etc/ha",
                ParamMatch::Partial,
                false,
                &haproxy,
                false,
            ),
            (
                "/usr/sbin/haproxy -f /etc/ha",
                ParamMatch::Initial,
                false,
                &haproxy,
                true,
            ),
            (
                "/usr/sbin/haproxy -f /etc/haproxy.cfg -Ws",
                ParamMatch::Exact,
                false,
                &haproxy,
                true,
            ),
        ] {
            assert_eq!(
                process_matches(&m(spec, pm, full), proc_),
                want,
                "{spec} {pm:?} {full}"
            );
        }
        let two = [haproxy.clone(), haproxy.clone()];
        let mut q = m("haproxy", ParamMatch::Exact, false);
        assert!(quorum(&q, &two));
        q.quorum_max = 1;
        assert!(!quorum(&q, &two));
        q.quorum = 0;
        q.quorum_max = 0;
        assert!(quorum(&q, &[]));
    }
}

#[cfg(test)]
mod run_as_tests {
    use super::*;

    /// keepalived's `user USER [GROUP]`: the user's own group unless one
    /// is named; a name that does not exist is said.
    #[test]
    fn users_and_groups_by_name() {
        assert_eq!(run_as("root").unwrap(), RunAs { uid: 0, gid: 0 });
        let nobody = nix::unistd::User::from_name("nobody").unwrap().unwrap();
        assert_eq!(
            run_as("nobody:root").unwrap(),
            RunAs {
                uid: nobody.uid.as_raw(),
                gid: 0
            }
        );
        let e = run_as("no-such-user-here").unwrap_err().to_string();
        assert!(
            e.contains("user \"no-such-user-here\" does not exist"),
            "{e}"
        );
        let e = run_as("root:no-such-group").unwrap_err().to_string();
        assert!(e.contains("group \"no-such-group\" does not exist"), "{e}");
    }
}
