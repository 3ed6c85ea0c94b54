//! The long-running greha process: sets up the datapath, tells systemd it is
//! ready, and takes everything down on SIGTERM/SIGINT.
use std::path::PathBuf;

use anyhow::{Context as _, Result, anyhow};
use greha_common::names;
use tokio::signal::unix::{SignalKind, signal};
use tracing::{info, warn};

use crate::{
    datapath::Datapath,
    tunnel::{self, TunnelDef},
    vrrp::shell::{InstanceDef, Vrrp},
};

pub struct Options {
    pub pin_dir: PathBuf,
    pub count_ifaces: Vec<String>,
    /// Tunnels the daemon owns: created at start, removed at stop.
    pub tunnels: Vec<TunnelDef>,
    pub vrrp: Vec<InstanceDef>,
    pub keep_datapath: bool,
    /// Unix socket answering `greha status` (root only).
    pub control: PathBuf,
    /// Address of the Prometheus endpoint, when wanted.
    pub metrics: Option<std::net::SocketAddr>,
}

/// Where `greha run` listens and `greha status` asks, unless told.
pub const DEFAULT_CONTROL: &str = "/run/greha/greha.sock";

/// The control socket, readable and writable by root only.
fn listen(path: &std::path::Path) -> Result<tokio::net::UnixListener> {
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

/// bpffs refuses '.' in names, which interface names may have (eth0.100).
fn count_pin(iface: &str) -> String {
    format!("count-{}", iface.replace('.', "_"))
}

pub async fn run(opts: Options) -> Result<()> {
    // Register the handlers before anything is set up, so a signal that
    // arrives during setup still leads to a clean teardown.
    let mut term = signal(SignalKind::terminate()).context("installing SIGTERM handler")?;
    let mut int = signal(SignalKind::interrupt()).context("installing SIGINT handler")?;

    attach_counters(&opts)?;
    if let Err(e) = add_tunnels(&opts).await {
        detach_counters(&opts, &opts.count_ifaces)?;
        return Err(e);
    }
    // VRRP may run over a tunnel, so it starts after them.
    let mut vrrp = match Vrrp::start(opts.vrrp.clone()).await {
        Ok(v) => v,
        Err(e) => {
            del_tunnels(&opts, &opts.tunnels).await?;
            detach_counters(&opts, &opts.count_ifaces)?;
            return Err(e);
        }
    };
    let control = match listen(&opts.control) {
        Ok(l) => l,
        Err(e) => {
            drop(vrrp);
            del_tunnels(&opts, &opts.tunnels).await?;
            detach_counters(&opts, &opts.count_ifaces)?;
            return Err(e);
        }
    };
    let metrics = match opts.metrics {
        None => None,
        Some(addr) => match tokio::net::TcpListener::bind(addr).await {
            Ok(l) => Some((l, opts.pin_dir.clone())),
            Err(e) => {
                drop(vrrp);
                del_tunnels(&opts, &opts.tunnels).await?;
                detach_counters(&opts, &opts.count_ifaces)?;
                return Err(e).with_context(|| format!("metrics: cannot listen on {addr}"));
            }
        },
    };
    info!(pin_dir = %opts.pin_dir.display(), control = %opts.control.display(), "ready");
    if let Err(e) = sd_notify::notify(false, &[sd_notify::NotifyState::Ready]) {
        warn!("cannot notify systemd: {e}");
    }

    vrrp.run(
        async {
            tokio::select! {
                _ = term.recv() => info!("SIGTERM: shutting down"),
                _ = int.recv() => info!("SIGINT: shutting down"),
            }
        },
        Some(control),
        metrics,
    )
    .await?;
    drop(vrrp);
    let _ = std::fs::remove_file(&opts.control);
    let _ = sd_notify::notify(false, &[sd_notify::NotifyState::Stopping]);
    if opts.keep_datapath {
        info!("stopped; datapath kept");
    } else {
        del_tunnels(&opts, &opts.tunnels).await?;
        detach_counters(&opts, &opts.count_ifaces)?;
        info!("stopped");
    }
    Ok(())
}

/// Creates the daemon's tunnels, all or none. A tunnel of the same
/// definition that an earlier run left up (a crash, or --keep-datapath) is
/// adopted as it is: its traffic never stopped, and must not now.
async fn add_tunnels(opts: &Options) -> Result<()> {
    let existing = tunnel::list(&opts.pin_dir)?;
    for (i, def) in opts.tunnels.iter().enumerate() {
        let result = match existing.iter().find(|t| t.name == def.name) {
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
        };
        if let Err(e) = result {
            del_tunnels(opts, &opts.tunnels[..i]).await?;
            return Err(e);
        }
    }
    Ok(())
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
fn attach_counters(opts: &Options) -> Result<()> {
    if opts.count_ifaces.is_empty() {
        return Ok(());
    }
    let dp = Datapath::open(&opts.pin_dir)?;
    let mut done: Vec<String> = Vec::new();
    for iface in &opts.count_ifaces {
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
