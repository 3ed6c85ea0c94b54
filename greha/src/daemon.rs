//! The long-running greha process: sets up counters, tunnels and VRRP,
//! tells systemd it is ready, reloads on SIGHUP or `greha reload`, and
//! takes everything down on SIGTERM/SIGINT.
//!
//! Start and reload are the same operation: `apply` takes the running
//! state to the desired one, touching only what differs. Starting is
//! applying to nothing.
use std::path::{Path, PathBuf};

use anyhow::{Context as _, Result, anyhow};
use greha_common::names;
use tokio::signal::unix::{SignalKind, signal};
use tracing::{info, warn};

use crate::{
    config,
    datapath::Datapath,
    tunnel::{self, TunnelDef},
    vrrp::shell::{DaemonIo, Exit, InstanceDef, Vrrp},
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
}

/// What the daemon runs: the file's definitions and the command line's.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Desired {
    pub count: Vec<String>,
    pub tunnels: Vec<TunnelDef>,
    pub vrrp: Vec<InstanceDef>,
}

fn split(spec: &str) -> Vec<String> {
    spec.split_whitespace().map(str::to_owned).collect()
}

/// Reads and checks everything the daemon is to run; nothing on the host
/// changes here.
pub fn desired(config: Option<&Path>, extra: &Extra) -> Result<Desired> {
    let (file, _) = config::load_default(config)?;
    let mut d = Desired {
        count: file.count,
        tunnels: file.tunnels,
        vrrp: file.vrrp,
    };
    d.count.extend(extra.count.iter().cloned());
    for spec in &extra.tunnels {
        d.tunnels.push(TunnelDef::parse(&split(spec))?);
    }
    for spec in &extra.vrrp {
        d.vrrp.push(InstanceDef::parse(&split(spec))?);
    }
    if extra.no_fastpath {
        for v in &mut d.vrrp {
            v.fastpath = false;
        }
    }
    Ok(d)
}

/// Where `greha run` listens and `greha status` asks, unless told.
pub const DEFAULT_CONTROL: &str = "/run/greha/greha.sock";

/// The control socket, readable and writable by root only.
fn listen(path: &Path) -> Result<tokio::net::UnixListener> {
    use std::os::unix::fs::PermissionsExt as _;
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    }
    // A socket file left by a killed daemon would make bind fail.
    let _ = std::fs::remove_file(path);
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
    if let Err(e) = std::fs::write(saved_path(control), doc.to_string()) {
        warn!("cannot save the VRRP masters for the next start: {e}");
    }
}

/// The masters a kept stop saved, removed once read: they are for the
/// next start only.
fn take_saved_masters(control: &Path) -> Vec<(String, u128)> {
    let path = saved_path(control);
    let Ok(text) = std::fs::read_to_string(&path) else {
        return Vec::new();
    };
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

/// bpffs refuses '.' in names, which interface names may have (eth0.100).
fn count_pin(iface: &str) -> String {
    format!("count-{}", iface.replace('.', "_"))
}

pub async fn run(opts: Options) -> Result<()> {
    // Register the handlers before anything is set up, so a signal that
    // arrives during setup still leads to a clean teardown.
    let term = signal(SignalKind::terminate()).context("installing SIGTERM handler")?;
    let int = signal(SignalKind::interrupt()).context("installing SIGINT handler")?;
    let hup = signal(SignalKind::hangup()).context("installing SIGHUP handler")?;

    // Every definition, file and flags, is checked before anything changes.
    let want = desired(opts.config.as_deref(), &opts.extra)?;
    let mut vrrp = Vrrp::start(Vec::new(), Some(opts.pin_dir.clone())).await?;
    vrrp.resume_masters(take_saved_masters(&opts.control));
    let mut current = Desired::default();
    if let Err(e) = apply(&opts, &mut current, want, &mut vrrp).await {
        // Nothing half-applied: undo what the start did.
        let _ = teardown(&opts, &mut current, &mut vrrp).await;
        return Err(e);
    }
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
            Ok(l) => Some((l, opts.pin_dir.clone())),
            Err(e) => {
                teardown(&opts, &mut current, &mut vrrp).await?;
                return Err(e).with_context(|| format!("metrics: cannot listen on {addr}"));
            }
        },
    };
    let mut io = DaemonIo {
        term,
        int,
        hup,
        control,
        metrics,
    };
    info!(pin_dir = %opts.pin_dir.display(), control = %opts.control.display(), "ready");
    if let Err(e) = sd_notify::notify(false, &[sd_notify::NotifyState::Ready]) {
        warn!("cannot notify systemd: {e}");
    }

    loop {
        match vrrp.run(&mut io).await? {
            Exit::Shutdown => break,
            Exit::Reload(conn) => {
                let _ = sd_notify::notify(false, &[sd_notify::NotifyState::Reloading]);
                let result = match desired(opts.config.as_deref(), &opts.extra) {
                    Ok(want) => apply(&opts, &mut current, want, &mut vrrp).await,
                    Err(e) => Err(e.context("the new configuration is refused; nothing changed")),
                };
                let reply = match &result {
                    Ok(summary) => {
                        info!("reloaded: {summary}");
                        format!("ok: {summary}\n")
                    }
                    Err(e) => {
                        warn!("reload: {e:#}");
                        format!("error: {e:#}\n")
                    }
                };
                if let Some(mut conn) = conn {
                    use tokio::io::AsyncWriteExt as _;
                    let _ = conn.write_all(reply.as_bytes()).await;
                }
                let _ = sd_notify::notify(false, &[sd_notify::NotifyState::Ready]);
            }
        }
    }
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

/// Everything down: VRRP resigns and removes its VIPs, then the tunnels
/// and counters go.
async fn teardown(opts: &Options, current: &mut Desired, vrrp: &mut Vrrp) -> Result<()> {
    vrrp.shutdown().await?;
    let tunnels = std::mem::take(&mut current.tunnels);
    del_tunnels(opts, &tunnels).await?;
    let count = std::mem::take(&mut current.count);
    detach_counters(opts, &count)
}

/// Takes the running state `current` to `want`, touching only what
/// differs: an unchanged tunnel or instance keeps running as it is. On an
/// error, what this call added is taken back and `current` still
/// describes what runs.
async fn apply(
    opts: &Options,
    current: &mut Desired,
    want: Desired,
    vrrp: &mut Vrrp,
) -> Result<String> {
    let mut done = Vec::new();
    let add_c: Vec<String> = want
        .count
        .iter()
        .filter(|c| !current.count.contains(c))
        .cloned()
        .collect();
    let del_c: Vec<String> = current
        .count
        .iter()
        .filter(|c| !want.count.contains(c))
        .cloned()
        .collect();
    attach_counters(opts, &add_c)?;
    let result = apply_tunnels_and_vrrp(opts, current, &want, vrrp).await;
    let (added_tunnels, del_t, added_v, removed_v) = match result {
        Ok(r) => r,
        Err(e) => {
            let _ = detach_counters(opts, &add_c);
            return Err(e);
        }
    };
    detach_counters(opts, &del_c)?;
    for (what, names) in [
        ("tunnels added", added_tunnels),
        ("tunnels removed", del_t),
        ("instances added", added_v),
        ("instances removed", removed_v),
        ("counting added", add_c),
        ("counting removed", del_c),
    ] {
        if !names.is_empty() {
            done.push(format!("{what}: {}", names.join(" ")));
        }
    }
    *current = want;
    Ok(if done.is_empty() {
        "no change".into()
    } else {
        done.join("; ")
    })
}

/// The tunnel and VRRP part of `apply`: returns the names of the tunnels
/// added and removed and of the instances added and removed.
async fn apply_tunnels_and_vrrp(
    opts: &Options,
    current: &mut Desired,
    want: &Desired,
    vrrp: &mut Vrrp,
) -> Result<(Vec<String>, Vec<String>, Vec<String>, Vec<String>)> {
    // Tunnels first: VRRP may run over them.
    let add_t: Vec<TunnelDef> = want
        .tunnels
        .iter()
        .filter(|t| !current.tunnels.contains(t))
        .cloned()
        .collect();
    let del_t: Vec<TunnelDef> = current
        .tunnels
        .iter()
        .filter(|t| !want.tunnels.contains(t))
        .cloned()
        .collect();
    // A changed tunnel is recreated, and the instances over it with it.
    let recreated: Vec<&str> = del_t
        .iter()
        .filter(|t| add_t.iter().any(|a| a.name == t.name))
        .map(|t| t.name.as_str())
        .collect();
    if !recreated.is_empty() {
        let survivors: Vec<InstanceDef> = current
            .vrrp
            .iter()
            .filter(|v| !recreated.contains(&v.interface.as_str()))
            .cloned()
            .collect();
        vrrp.reconfigure(survivors.clone()).await?;
        current.vrrp = survivors;
        for t in del_t
            .iter()
            .filter(|t| recreated.contains(&t.name.as_str()))
        {
            tunnel::del(&t.name, &opts.pin_dir).await?;
            current.tunnels.retain(|c| c.name != t.name);
        }
    }
    let mut added_tunnels: Vec<String> = Vec::new();
    for t in &add_t {
        if let Err(e) = add_tunnel(opts, t).await {
            for done in &added_tunnels {
                let _ = tunnel::del(done, &opts.pin_dir).await;
            }
            return Err(e);
        }
        added_tunnels.push(t.name.clone());
    }
    let (added_v, removed_v) = match vrrp.reconfigure(want.vrrp.clone()).await {
        Ok(r) => r,
        Err(e) => {
            for done in &added_tunnels {
                let _ = tunnel::del(done, &opts.pin_dir).await;
            }
            return Err(e);
        }
    };
    for t in del_t
        .iter()
        .filter(|t| !recreated.contains(&t.name.as_str()))
    {
        tunnel::del(&t.name, &opts.pin_dir).await?;
    }
    let removed_t = del_t.iter().map(|t| t.name.clone()).collect();
    Ok((added_tunnels, removed_t, added_v, removed_v))
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
            let pin = count_pin(iface);
            if dp.pinned_link_exists(&pin) {
                // Kept by an earlier run (--keep-datapath): still counting.
                info!(
                    iface,
                    "counting frames (attachment kept from an earlier run)"
                );
                return Ok(());
            }
            let ifindex = nix::net::if_::if_nametoindex(iface.as_str())
                .map_err(|_| anyhow!("interface {iface} does not exist"))?;
            let mode = dp.attach_xdp_pinned(names::PROG_COUNT, ifindex, &pin)?;
            info!(iface, %mode, "counting frames");
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
        dp.detach_pinned(&count_pin(iface))?;
        info!(iface, program = names::PROG_COUNT, "detached");
    }
    dp.release_if_unused()?;
    Ok(())
}
