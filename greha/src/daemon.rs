//! The long-running greha process: sets up the datapath, tells systemd it is
//! ready, and takes everything down on SIGTERM/SIGINT.
use std::path::PathBuf;

use anyhow::{Context as _, Result};
use tokio::signal::unix::{SignalKind, signal};
use tracing::{info, warn};

use crate::datapath::Datapath;

pub struct Options {
    pub pin_dir: PathBuf,
    pub count_ifaces: Vec<String>,
    pub keep_datapath: bool,
}

pub async fn run(opts: Options) -> Result<()> {
    // Register the handlers before anything is set up, so a signal that
    // arrives during setup still leads to a clean teardown.
    let mut term = signal(SignalKind::terminate()).context("installing SIGTERM handler")?;
    let mut int = signal(SignalKind::interrupt()).context("installing SIGINT handler")?;

    let mut datapath = Datapath::load(&opts.pin_dir)?;
    for iface in &opts.count_ifaces {
        match datapath.attach_counter(iface) {
            Ok(a) => info!(iface, mode = %a.mode, "counting frames"),
            Err(e) => {
                // Nothing half-applied: undo what is attached before failing.
                datapath.close(false)?;
                return Err(e);
            }
        }
    }
    info!(pin_dir = %opts.pin_dir.display(), "datapath ready");
    if let Err(e) = sd_notify::notify(false, &[sd_notify::NotifyState::Ready]) {
        warn!("cannot notify systemd: {e}");
    }

    tokio::select! {
        _ = term.recv() => info!("SIGTERM: shutting down"),
        _ = int.recv() => info!("SIGINT: shutting down"),
    }
    let _ = sd_notify::notify(false, &[sd_notify::NotifyState::Stopping]);
    datapath.close(opts.keep_datapath)?;
    info!("stopped");
    Ok(())
}
