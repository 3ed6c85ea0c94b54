//! The long-running greha process: sets up counters, tunnels and VRRP,
//! tells systemd it is ready, reloads on SIGHUP or `greha reload`, and
//! takes everything down on SIGTERM/SIGINT.
//!
//! Start and reload are the same operation: `apply` takes the running
//! state to the desired one, touching only what differs. Starting is
//! applying to nothing.
use std::{
    path::{Path, PathBuf},
    time::Duration,
};

use anyhow::{Context as _, Result, anyhow};
use greha_common::XDP_IF_COUNT;
use tokio::{
    signal::unix::{Signal, SignalKind, signal},
    sync::{Semaphore, mpsc, oneshot},
};
use tracing::{info, warn};

pub use crate::plan::{Desired, Plan, plan};
use crate::{
    config,
    datapath::Datapath,
    probe::Probers,
    tunnel::{self, TunnelDef},
    vrrp::{
        def::InstanceDef,
        shell::{Exit, Maintenance, Request, Vrrp},
    },
};

/// What the command line adds to the configuration file.
#[derive(Clone, Debug, Default)]
pub struct Extra {
    pub count: Vec<String>,
    /// `greha tunnel add`'s words, one string per tunnel.
    pub tunnels: Vec<String>,
    /// `--vrrp`'s words, one string per instance.
    pub vrrp: Vec<String>,
    /// `--no-fastpath`: every instance, the file's too, without it.
    pub no_fastpath: bool,
    /// `--notify-fifo`: instead of the file's.
    pub notify_fifo: Option<PathBuf>,
}

pub struct Options {
    pub pin_dir: PathBuf,
    /// The configuration file, read again on reload.
    pub config: Option<PathBuf>,
    pub extra: Extra,
    pub keep_datapath: bool,
    /// Unix socket answering `greha status` and `greha reload` (root only).
    pub control: PathBuf,
    /// Address of the Prometheus endpoint, when wanted.
    pub metrics: Option<std::net::SocketAddr>,
    /// Scripts run as transient systemd services (`--script-units`).
    pub script_units: bool,
    /// A stop hands each master's VIPs over before releasing them (make
    /// before break); `--no-handover` releases them at once.
    pub handover: bool,
}

/// A `--tunnel` or `--vrrp` spec's words: blanks separate them, quotes
/// group them, as in a script's command line (`track-script 'killall -0
/// haproxy'`).
fn split(spec: &str) -> Result<Vec<String>> {
    crate::vrrp::command::split(spec).map_err(|e| anyhow::anyhow!("{spec:?}: {e}"))
}

/// Reads and checks everything the daemon is to run; nothing on the host
/// changes here.
pub fn desired(config: Option<&Path>, extra: &Extra) -> Result<Desired> {
    let (file, _) = config::load_default(config)?;
    let mut d = Desired {
        count: file.count,
        tunnels: file.tunnels,
        vrrp: file.vrrp,
        notify_fifo: extra.notify_fifo.clone().or(file.notify_fifo),
        link_delays: file.link_delays,
        script_user: file.script_user,
    };
    d.count.extend(extra.count.iter().cloned());
    for spec in &extra.tunnels {
        d.tunnels.push(TunnelDef::parse(&split(spec)?)?);
    }
    for spec in &extra.vrrp {
        d.vrrp.push(InstanceDef::parse(&split(spec)?)?);
    }
    if extra.no_fastpath {
        for v in &mut d.vrrp {
            v.fastpath = false;
        }
    }
    config::check_tracked_tunnels(&d.tunnels, &d.vrrp)?;
    Ok(d)
}

/// Where `greha run` listens and `greha status` asks, unless told.
pub const DEFAULT_CONTROL: &str = "/run/greha/greha.sock";

fn is_socket(path: &Path) -> bool {
    use std::os::unix::fs::FileTypeExt as _;
    std::fs::symlink_metadata(path).is_ok_and(|m| m.file_type().is_socket())
}

/// One daemon per pin directory: an exclusive lock on a directory of its
/// own there, held for the daemon's life (a killed daemon's lock goes with
/// its process). Dropped last: the lock directory goes, and the pin
/// directory too if nothing else is left in it.
struct DaemonLock {
    dir: PathBuf,
    pin_dir: PathBuf,
    _lock: nix::fcntl::Flock<std::fs::File>,
}

impl DaemonLock {
    fn take(pin_dir: &Path) -> Result<Self> {
        use nix::fcntl::{Flock, FlockArg};
        let pin_dir = crate::bpffs::prepare_pin_dir(pin_dir)?;
        let dir = pin_dir.join(crate::pins::DAEMON_LOCK);
        match std::fs::create_dir(&dir) {
            Err(e) if e.kind() != std::io::ErrorKind::AlreadyExists => {
                return Err(e).with_context(|| format!("creating {}", dir.display()));
            }
            _ => {}
        }
        let file =
            std::fs::File::open(&dir).with_context(|| format!("opening {}", dir.display()))?;
        let lock = Flock::lock(file, FlockArg::LockExclusiveNonblock).map_err(|(_, e)| {
            if e == nix::errno::Errno::EWOULDBLOCK {
                anyhow!(
                    "--pin-dir: another greha daemon uses {}; stop it first (one daemon per \
                     pin directory and control socket)",
                    pin_dir.display()
                )
            } else {
                anyhow!("locking {}: {e}", dir.display())
            }
        })?;
        Ok(Self {
            dir,
            pin_dir,
            _lock: lock,
        })
    }
}

impl Drop for DaemonLock {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir(&self.dir);
        crate::bpffs::remove_dir_if_empty(&self.pin_dir);
    }
}

/// Refuses a control socket path that another greha answers on (a second
/// daemon would take the first one's VIPs for a crashed run's), or that
/// is not a socket (it would be replaced, then deleted). Checked before
/// anything on the host changes.
fn check_control(path: &Path) -> Result<()> {
    match std::fs::symlink_metadata(path) {
        Err(_) => Ok(()),
        Ok(_) if !is_socket(path) => Err(anyhow!(
            "--control: {} exists and is not a socket; refusing to replace it",
            path.display()
        )),
        Ok(_) => match std::os::unix::net::UnixStream::connect(path) {
            Ok(_) => Err(anyhow!(
                "--control: another greha is running on {}; stop it first (one daemon per \
                 control socket and pin directory)",
                path.display()
            )),
            // Nobody listens: a killed daemon's socket.
            Err(_) => Ok(()),
        },
    }
}

/// The control socket, readable and writable by root only.
fn listen(path: &Path) -> Result<tokio::net::UnixListener> {
    use std::os::unix::fs::PermissionsExt as _;
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    }
    // A socket file left by a killed daemon would make bind fail
    // (`check_control` made sure it is a stale socket, if anything).
    if is_socket(path) {
        let _ = std::fs::remove_file(path);
    }
    let l = tokio::net::UnixListener::bind(path)
        .with_context(|| format!("listening on {}", path.display()))?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600))?;
    Ok(l)
}

/// Where a stop with --keep-datapath leaves the masters for the next
/// start: beside the control socket (systemd's RuntimeDirectory, kept
/// across restarts by RuntimeDirectoryPreserve).
fn saved_path(control: &Path) -> PathBuf {
    control.with_extension("masters")
}

fn save_masters(control: &Path, masters: &[String]) {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis());
    let doc = serde_json::json!({ "at_unix_ms": now as u64, "masters": masters });
    if let Err(e) = write_new(&saved_path(control), doc.to_string().as_bytes()) {
        warn!("cannot save the VRRP masters for the next start: {e:#}");
    }
}

/// Writes `path` whole or not at all: a new file beside it (never through
/// a symlink or into a FIFO someone left there), renamed over it.
fn write_new(path: &Path, bytes: &[u8]) -> Result<()> {
    use std::{io::Write as _, os::unix::fs::OpenOptionsExt as _};
    let tmp = path.with_extension(format!("tmp.{}", std::process::id()));
    let _ = std::fs::remove_file(&tmp);
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(&tmp)
        .with_context(|| format!("creating {}", tmp.display()))?;
    f.write_all(bytes)?;
    f.sync_all()?;
    std::fs::rename(&tmp, path).with_context(|| format!("renaming to {}", path.display()))
}

/// The masters a kept stop saved, removed once read: they are for the
/// next start only. Only a regular file is read (a FIFO would hang the
/// start, a symlink could point anywhere); a time in the future is
/// refused by the resume window.
fn take_saved_masters(control: &Path) -> Vec<(String, u128)> {
    use std::{io::Read as _, os::unix::fs::OpenOptionsExt as _};
    let path = saved_path(control);
    // No following a symlink, no waiting on a FIFO: opened as it is, then
    // checked to be a regular file.
    let Ok(mut f) = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NOFOLLOW | libc::O_NONBLOCK)
        .open(&path)
    else {
        if std::fs::symlink_metadata(&path).is_ok() {
            warn!(path = %path.display(), "ignoring the saved masters: not a regular file");
        }
        return Vec::new();
    };
    if !f.metadata().is_ok_and(|m| m.is_file()) {
        warn!(path = %path.display(), "ignoring the saved masters: not a regular file");
        return Vec::new();
    }
    let mut text = String::new();
    let _ = f.read_to_string(&mut text);
    let _ = std::fs::remove_file(&path);
    let Ok(v) = serde_json::from_str::<serde_json::Value>(&text) else {
        return Vec::new();
    };
    let at = u128::from(v["at_unix_ms"].as_u64().unwrap_or(0));
    v["masters"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|m| m.as_str())
        .map(|m| (m.to_owned(), at))
        .collect()
}

/// Connections served at once on the control socket, and on the metrics
/// endpoint: more wait in the kernel's backlog. Each is served off the
/// VRRP loop with a time limit, so a flood delays no advert.
const MAX_CONNECTIONS: usize = 256;
/// How long a client has to send its request.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(1);

/// The exit status of a daemon that could not start: a configuration or a
/// host it cannot run with, which a restart would meet again. The unit
/// does not restart on it (RestartPreventExitStatus=78; sysexits'
/// EX_CONFIG), so a mistake stops the unit with greha's message instead
/// of a restart loop.
pub const EXIT_START_REFUSED: u8 = 78;

/// Marks an error that came before the daemon was ready.
#[derive(Debug)]
pub struct StartRefused;

impl std::fmt::Display for StartRefused {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("not started")
    }
}

impl std::error::Error for StartRefused {}

/// Runs the daemon until it is told to stop. An error before it is ready
/// carries [`StartRefused`].
pub async fn run(opts: Options) -> Result<()> {
    let mut ready = false;
    serve(opts, &mut ready)
        .await
        .map_err(|e| if ready { e } else { e.context(StartRefused) })
}

async fn serve(opts: Options, ready: &mut bool) -> Result<()> {
    // Register the handlers before anything is set up, so a signal that
    // arrives during setup still leads to a clean teardown.
    let term = signal(SignalKind::terminate()).context("installing SIGTERM handler")?;
    let int = signal(SignalKind::interrupt()).context("installing SIGINT handler")?;
    let hup = signal(SignalKind::hangup()).context("installing SIGHUP handler")?;

    if opts.script_units {
        crate::vrrp::track::run_scripts_as_units()?;
    }
    // Every definition, file and flags, is checked before anything changes.
    let want = desired(opts.config.as_deref(), &opts.extra)?;
    let _lock = DaemonLock::take(&opts.pin_dir)?;
    check_control(&opts.control)?;
    let mut vrrp = Vrrp::start(Some(opts.pin_dir.clone())).await?;
    vrrp.resume_masters(take_saved_masters(&opts.control));
    let mut current = Desired::default();
    if let Err(e) = apply(&opts, &mut current, want, &mut vrrp).await {
        // Nothing half-applied: undo what the start did.
        let _ = teardown(&opts, &mut current, &mut vrrp).await;
        return Err(e);
    }
    let mut probers = Probers::default();
    probers.sync(&current.tunnels, &opts.pin_dir);
    // Path MTUs are learned for every tunnel while the daemon runs.
    let _pmtu = match crate::pmtu::Watch::start(&opts.pin_dir).await {
        Ok(w) => Some(w),
        Err(e) => {
            warn!("no path MTU discovery: {e:#}");
            None
        }
    };
    let reasm = crate::reasm::Keeper::start(&opts.pin_dir).await;
    let control = match listen(&opts.control) {
        Ok(l) => l,
        Err(e) => {
            teardown(&opts, &mut current, &mut vrrp).await?;
            return Err(e);
        }
    };
    let metrics = match opts.metrics {
        None => None,
        Some(addr) => match tokio::net::TcpListener::bind(addr).await {
            Ok(l) => Some(l),
            Err(e) => {
                teardown(&opts, &mut current, &mut vrrp).await?;
                return Err(e).with_context(|| format!("metrics: cannot listen on {addr}"));
            }
        },
    };
    let (tx, mut requests) = mpsc::channel(16);
    let clients = match Clients::serve(control, metrics, opts.pin_dir.clone(), tx.clone()) {
        Ok(c) => c,
        Err(e) => {
            teardown(&opts, &mut current, &mut vrrp).await?;
            return Err(e);
        }
    };
    let tasks = [
        tokio::spawn(signals(term, int, hup, tx.clone())),
        tokio::spawn(watchdog(tx)),
    ];
    *ready = true;
    info!(pin_dir = %opts.pin_dir.display(), control = %opts.control.display(), "ready");
    if let Err(e) = sd_notify::notify(false, &[sd_notify::NotifyState::Ready]) {
        warn!("cannot notify systemd: {e}");
    }

    loop {
        match vrrp.run(&mut requests).await? {
            Exit::Shutdown => break,
            Exit::Reload(reply) => {
                let _ = sd_notify::notify(false, &[sd_notify::NotifyState::Reloading]);
                let result = match desired(opts.config.as_deref(), &opts.extra) {
                    Ok(want) => apply(&opts, &mut current, want, &mut vrrp).await,
                    Err(e) => Err(e.context("the new configuration is refused; nothing changed")),
                };
                probers.sync(&current.tunnels, &opts.pin_dir);
                reasm.check_now();
                let text = match &result {
                    Ok(summary) => {
                        info!("reloaded: {summary}");
                        format!("ok: {summary}\n")
                    }
                    Err(e) => {
                        warn!("reload: {e:#}");
                        format!("error: {e:#}\n")
                    }
                };
                if let Some(reply) = reply {
                    let _ = reply.send(text);
                }
                let _ = sd_notify::notify(false, &[sd_notify::NotifyState::Ready]);
            }
        }
    }
    for t in tasks {
        t.abort();
    }
    probers.stop();
    drop(reasm);
    clients.stop();
    let _ = sd_notify::notify(false, &[sd_notify::NotifyState::Stopping]);
    if opts.keep_datapath {
        // No resignation, VIPs and tunnels stay: the next start resumes.
        save_masters(&opts.control, &vrrp.masters());
        info!("stopped; datapath kept, VRRP masters saved for the next start");
    } else {
        teardown(&opts, &mut current, &mut vrrp).await?;
        let _ = std::fs::remove_file(&opts.control);
        info!("stopped");
    }
    Ok(())
}

/// SIGTERM and SIGINT stop the daemon, SIGHUP reloads it.
async fn signals(mut term: Signal, mut int: Signal, mut hup: Signal, tx: mpsc::Sender<Request>) {
    loop {
        let req = tokio::select! {
            _ = term.recv() => {
                info!("SIGTERM: shutting down");
                Request::Shutdown
            }
            _ = int.recv() => {
                info!("SIGINT: shutting down");
                Request::Shutdown
            }
            _ = hup.recv() => {
                info!("SIGHUP: reloading");
                Request::Reload(None)
            }
        };
        if tx.send(req).await.is_err() {
            return;
        }
    }
}

/// The control socket and the metrics endpoint, served on a thread of
/// their own: however many clients come and whatever they read, the VRRP
/// loop's thread only answers the requests they pass on (a flood of
/// scrapes sharing its thread delayed adverts).
struct Clients {
    stop: oneshot::Sender<()>,
    thread: std::thread::JoinHandle<()>,
}

impl Clients {
    fn serve(
        control: tokio::net::UnixListener,
        metrics: Option<tokio::net::TcpListener>,
        pin_dir: PathBuf,
        tx: mpsc::Sender<Request>,
    ) -> Result<Self> {
        let control = control.into_std().context("control socket")?;
        let metrics = metrics
            .map(|l| l.into_std())
            .transpose()
            .context("metrics socket")?;
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .context("starting the clients' runtime")?;
        let (stop, stopped) = oneshot::channel();
        let thread = std::thread::Builder::new()
            .name("greha-clients".into())
            .spawn(move || {
                rt.block_on(async move {
                    // Registered with this runtime, which polls them.
                    let control = tokio::net::UnixListener::from_std(control);
                    let metrics = metrics.map(tokio::net::TcpListener::from_std).transpose();
                    let (Ok(control), Ok(metrics)) = (control, metrics) else {
                        warn!("cannot serve the control socket and metrics");
                        return;
                    };
                    tokio::select! {
                        _ = serve_control(control, tx.clone()) => {}
                        _ = serve_metrics(metrics, pin_dir, tx) => {}
                        _ = stopped => {}
                    }
                });
            })
            .context("starting the clients' thread")?;
        Ok(Self { stop, thread })
    }

    /// Closes the listeners and every connection (the runtime goes with
    /// the thread).
    fn stop(self) {
        let _ = self.stop.send(());
        let _ = self.thread.join();
    }
}

/// `greha status` and `greha reload` on the control socket: one line in,
/// the answer out, each connection in its own task.
async fn serve_control(control: tokio::net::UnixListener, tx: mpsc::Sender<Request>) {
    use tokio::io::{AsyncBufReadExt as _, AsyncWriteExt as _};
    let limit = std::sync::Arc::new(Semaphore::new(MAX_CONNECTIONS));
    loop {
        let Ok(permit) = limit.clone().acquire_owned().await else {
            return;
        };
        let Ok((conn, _)) = control.accept().await else {
            continue;
        };
        let tx = tx.clone();
        tokio::spawn(async move {
            let _permit = permit;
            let mut conn = tokio::io::BufReader::new(conn);
            let mut line = String::new();
            let read = tokio::time::timeout(REQUEST_TIMEOUT, conn.read_line(&mut line)).await;
            let answer = match (read, line.trim()) {
                // Nothing asked in time: nothing for the VRRP loop to do.
                (Ok(Ok(0)) | Ok(Err(_)) | Err(_), _) => return,
                (Ok(Ok(_)), "reload") => {
                    let (reply, rx) = oneshot::channel();
                    let _ = tx.send(Request::Reload(Some(reply))).await;
                    rx.await.unwrap_or_default()
                }
                (Ok(Ok(_)), "events") => {
                    let (events_tx, mut events) = mpsc::unbounded_channel();
                    if tx.send(Request::Subscribe(events_tx)).await.is_err() {
                        return;
                    }
                    // Until the client or the daemon goes.
                    while let Some(line) = events.recv().await {
                        if conn.get_mut().write_all(line.as_bytes()).await.is_err() {
                            return;
                        }
                    }
                    return;
                }
                (Ok(Ok(_)), line)
                    if line
                        .split_once(' ')
                        .is_some_and(|(verb, _)| Maintenance::parse(verb).is_some()) =>
                {
                    let (verb, name) = line.split_once(' ').unwrap_or_default();
                    let what = Maintenance::parse(verb).expect("checked");
                    let (reply, rx) = oneshot::channel();
                    let req = Request::Maintain(name.trim().to_owned(), what, reply);
                    let _ = tx.send(req).await;
                    rx.await.unwrap_or_default()
                }
                _ => {
                    let (reply, rx) = oneshot::channel();
                    let _ = tx.send(Request::Status(reply)).await;
                    match rx.await {
                        Ok(doc) => serde_json::to_string(&doc).unwrap_or_default(),
                        Err(_) => return,
                    }
                }
            };
            let _ = conn.get_mut().write_all(answer.as_bytes()).await;
        });
    }
}

/// The Prometheus endpoint: the VRRP loop hands over the status document,
/// and the text is rendered and sent off it.
async fn serve_metrics(
    listener: Option<tokio::net::TcpListener>,
    pin_dir: PathBuf,
    tx: mpsc::Sender<Request>,
) {
    use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
    let Some(listener) = listener else {
        return std::future::pending().await;
    };
    let limit = std::sync::Arc::new(Semaphore::new(MAX_CONNECTIONS));
    let cache = std::sync::Arc::new(tokio::sync::Mutex::new(MetricsCache::default()));
    loop {
        let Ok(permit) = limit.clone().acquire_owned().await else {
            return;
        };
        let Ok((mut conn, _)) = listener.accept().await else {
            continue;
        };
        let (tx, pin_dir, cache) = (tx.clone(), pin_dir.clone(), cache.clone());
        tokio::spawn(async move {
            let _permit = permit;
            // The request is read (whatever it asks, the answer is the
            // metrics) so that closing does not reset the connection under
            // the reply; a connection that asks nothing in time costs the
            // VRRP loop nothing.
            let mut req = [0u8; 1024];
            match tokio::time::timeout(REQUEST_TIMEOUT, conn.read(&mut req)).await {
                Ok(Ok(n)) if n > 0 => {}
                _ => return,
            }
            let Some(body) = metrics_body(&cache, &tx, pin_dir).await else {
                return;
            };
            let head = format!(
                "HTTP/1.0 200 OK\r\nContent-Type: text/plain; version=0.0.4\r\n\
                 Content-Length: {}\r\nConnection: close\r\n\r\n",
                body.len()
            );
            let _ = tokio::time::timeout(REQUEST_TIMEOUT, async {
                let _ = conn.write_all(head.as_bytes()).await;
                let _ = conn.write_all(body.as_bytes()).await;
                let _ = conn.shutdown().await;
            })
            .await;
        });
    }
}

/// How old a metrics body may be when it is served again. Scrapers come
/// every few seconds; a flood of them must not cost the VRRP loop more
/// than one status per period.
const METRICS_MAX_AGE: Duration = Duration::from_millis(250);

#[derive(Default)]
struct MetricsCache {
    made: Option<tokio::time::Instant>,
    body: std::sync::Arc<str>,
}

/// The current metrics body: the cached one while it is fresh, else one
/// made from a new status. Scrapes that arrive while one is being made
/// wait for it (the lock) instead of each asking the loop.
async fn metrics_body(
    cache: &tokio::sync::Mutex<MetricsCache>,
    tx: &mpsc::Sender<Request>,
    pin_dir: PathBuf,
) -> Option<std::sync::Arc<str>> {
    let mut c = cache.lock().await;
    if c.made.is_some_and(|t| t.elapsed() < METRICS_MAX_AGE) {
        return Some(c.body.clone());
    }
    let (reply, rx) = oneshot::channel();
    tx.send(Request::Status(reply)).await.ok()?;
    let doc = rx.await.ok()?;
    let tunnels = tunnel::list(&pin_dir).unwrap_or_default();
    let body = crate::metrics::render(&doc.vrrp, &doc.vrrp_global, &tunnels);
    *c = MetricsCache {
        made: Some(tokio::time::Instant::now()),
        body: body.into(),
    };
    Some(c.body.clone())
}

/// Under systemd with WatchdogSec, proves at half the period that the VRRP
/// loop turns: it must answer a ping first.
async fn watchdog(tx: mpsc::Sender<Request>) {
    let Some(period) = watchdog_period() else {
        return;
    };
    let mut tick = tokio::time::interval(period / 2);
    loop {
        tick.tick().await;
        let (reply, rx) = oneshot::channel();
        if tx.send(Request::Ping(reply)).await.is_err() {
            return;
        }
        if rx.await.is_ok() {
            let _ = sd_notify::notify(false, &[sd_notify::NotifyState::Watchdog]);
        }
    }
}

/// systemd's watchdog period, as libsystemd's sd_watchdog_enabled reads
/// it: WATCHDOG_USEC, unless WATCHDOG_PID names another process (sd-notify
/// also demands WATCHDOG_PID, which systemd does not promise).
fn watchdog_period() -> Option<Duration> {
    let usec: u64 = std::env::var("WATCHDOG_USEC").ok()?.parse().ok()?;
    if let Ok(pid) = std::env::var("WATCHDOG_PID")
        && pid.parse::<u32>().ok() != Some(std::process::id())
    {
        return None;
    }
    (usec > 0).then(|| Duration::from_micros(usec))
}

/// Everything down: VRRP resigns and removes its VIPs, then the tunnels
/// and counters go.
async fn teardown(opts: &Options, current: &mut Desired, vrrp: &mut Vrrp) -> Result<()> {
    vrrp.shutdown(opts.handover).await?;
    let tunnels = std::mem::take(&mut current.tunnels);
    del_tunnels(opts, &tunnels).await?;
    let count = std::mem::take(&mut current.count);
    detach_counters(opts, &count)
}

/// Takes the running state `current` to `want` by [`plan`]. On an error,
/// what this call added is taken back and `current` still describes what
/// runs.
async fn apply(
    opts: &Options,
    current: &mut Desired,
    want: Desired,
    vrrp: &mut Vrrp,
) -> Result<String> {
    let plan = plan(current, &want);
    // First: a user that does not exist or a FIFO that cannot be opened
    // refuses the whole change.
    let script_user = match &want.script_user {
        Some(u) => Some(crate::vrrp::track::run_as(u).context("script_user")?),
        None => None,
    };
    vrrp.set_notify_fifo(want.notify_fifo.as_deref())?;
    vrrp.set_link_delays(want.link_delays.clone());
    vrrp.set_script_user(script_user);
    attach_counters(opts, &plan.count_add)?;
    if let Err(e) = apply_tunnels_and_vrrp(opts, current, &plan, vrrp).await {
        let _ = detach_counters(opts, &plan.count_add);
        return Err(e);
    }
    detach_counters(opts, &plan.count_del)?;
    *current = want;
    Ok(plan.summary())
}

/// The tunnel and VRRP part of `apply`.
async fn apply_tunnels_and_vrrp(
    opts: &Options,
    current: &mut Desired,
    plan: &Plan,
    vrrp: &mut Vrrp,
) -> Result<()> {
    // Tunnels first: VRRP may run over them. A changed tunnel is
    // re-created, and the instances over it with it.
    let recreated = plan.tunnels_recreated();
    if !recreated.is_empty() {
        vrrp.update(&plan.vrrp_stop_first, Vec::new()).await?;
        current.vrrp = vrrp.defs();
        for name in &recreated {
            tunnel::del(name, &opts.pin_dir).await?;
            current.tunnels.retain(|c| &c.name != name);
        }
    }
    let mut added_tunnels: Vec<String> = Vec::new();
    let undo = |added: Vec<String>| async move {
        for done in &added {
            let _ = tunnel::del(done, &opts.pin_dir).await;
        }
    };
    for t in &plan.tunnels_add {
        if let Err(e) = add_tunnel(opts, t).await {
            undo(added_tunnels).await;
            return Err(e);
        }
        added_tunnels.push(t.name.clone());
    }
    if let Err(e) = vrrp.update(&plan.vrrp_del, plan.vrrp_add.clone()).await {
        undo(added_tunnels).await;
        return Err(e);
    }
    for name in plan.tunnels_del.iter().filter(|n| !recreated.contains(n)) {
        tunnel::del(name, &opts.pin_dir).await?;
    }
    Ok(())
}

/// Creates a tunnel, or adopts the one of the same definition that an
/// earlier run left up (a crash, or --keep-datapath): its traffic never
/// stopped, and must not now.
async fn add_tunnel(opts: &Options, def: &TunnelDef) -> Result<()> {
    match tunnel::list(&opts.pin_dir)?
        .iter()
        .find(|t| t.name == def.name)
    {
        Some(t) if t.matches(def) => {
            info!(tunnel = %def.name, "adopted the tunnel an earlier run left up");
            Ok(())
        }
        Some(_) => Err(anyhow!(
            "tunnel {}: a greha tunnel of that name runs with another definition; \
             remove it first (greha tunnel del {})",
            def.name,
            def.name
        )),
        None => tunnel::add(def, &opts.pin_dir).await,
    }
}

async fn del_tunnels(opts: &Options, defs: &[TunnelDef]) -> Result<()> {
    // Every tunnel is attempted; the first failure is reported.
    let mut first_err = None;
    for def in defs.iter().rev() {
        if let Err(e) = tunnel::del(&def.name, &opts.pin_dir).await {
            warn!("removing tunnel {}: {e:#}", def.name);
            first_err.get_or_insert(e);
        }
    }
    first_err.map_or(Ok(()), Err)
}

/// Attaches the counting program to every listed interface, or to none:
/// on a failure the ones already attached are detached again.
fn attach_counters(opts: &Options, ifaces: &[String]) -> Result<()> {
    if ifaces.is_empty() {
        return Ok(());
    }
    let dp = Datapath::open(&opts.pin_dir)?;
    let mut done: Vec<String> = Vec::new();
    for iface in ifaces {
        let attached = (|| {
            if done.contains(iface) {
                return Err(anyhow!("interface {iface} is listed twice"));
            }
            let ifindex = nix::net::if_::if_nametoindex(iface.as_str())
                .map_err(|_| anyhow!("interface {iface} does not exist"))?;
            if dp.xdp_in_use(ifindex, XDP_IF_COUNT) {
                // Kept by an earlier run (--keep-datapath): still counting.
                info!(
                    iface,
                    "counting frames (attachment kept from an earlier run)"
                );
                return Ok(());
            }
            match dp.xdp_use(ifindex, XDP_IF_COUNT)? {
                Some(mode) => info!(iface, %mode, "counting frames"),
                None => info!(iface, "counting frames (greha_xdp was there already)"),
            }
            Ok(())
        })();
        if let Err(e) = attached {
            drop(dp);
            detach_counters(opts, &done)?;
            return Err(e);
        }
        done.push(iface.clone());
    }
    Ok(())
}

fn detach_counters(opts: &Options, ifaces: &[String]) -> Result<()> {
    if ifaces.is_empty() {
        return Ok(());
    }
    let dp = Datapath::open(&opts.pin_dir)?;
    for iface in ifaces {
        // Gone with its interface: nothing of it is left to count.
        let Ok(ifindex) = nix::net::if_::if_nametoindex(iface.as_str()) else {
            warn!(iface, "not counting any more: the interface is gone");
            continue;
        };
        dp.xdp_release(ifindex, XDP_IF_COUNT)?;
        info!(iface, "not counting any more");
    }
    dp.release_if_unused()?;
    Ok(())
}
