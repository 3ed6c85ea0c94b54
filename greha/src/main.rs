//! greha's command line.
use greha::{bpffs, config, counters, daemon, import, tunnel};

use std::{path::PathBuf, process::ExitCode};

use anyhow::Context as _;

use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(name = "greha", version, about)]
struct Cli {
    /// Directory in the BPF filesystem for greha's pinned maps.
    #[arg(long, global = true, default_value = bpffs::DEFAULT_PIN_DIR)]
    pin_dir: PathBuf,
    /// The daemon's control socket.
    #[arg(long, global = true, default_value = daemon::DEFAULT_CONTROL)]
    control: PathBuf,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Convert a keepalived.conf into greha's configuration (on stdout);
    /// what cannot be carried over is listed on stderr with its line.
    ImportKeepalived {
        file: PathBuf,
        /// keepalived's config-id for the conditional lines (`@ID ...`):
        /// by default, as keepalived's, this host's name up to its first
        /// dot.
        #[arg(long, value_name = "ID")]
        config_id: Option<String>,
    },
    /// Check a configuration file without touching the host.
    CheckConfig {
        /// The file (default: /etc/greha/greha.toml).
        #[arg(long)]
        config: Option<PathBuf>,
    },
    /// Run the daemon in the foreground until SIGTERM or SIGINT.
    Run {
        /// Configuration file (default: /etc/greha/greha.toml, if present);
        /// --count, --tunnel and --vrrp add to it.
        #[arg(long)]
        config: Option<PathBuf>,
        /// Count the frames received on this interface (repeatable).
        #[arg(long = "count", value_name = "IFACE")]
        count: Vec<String>,
        /// A tunnel the daemon owns, in `greha tunnel add`'s words, quoted
        /// as one argument (repeatable). Removed when the daemon stops.
        #[arg(long = "tunnel", value_name = "SPEC")]
        tunnels: Vec<String>,
        /// A VRRP instance, quoted as one argument (repeatable): NAME
        /// interface IF vrid N priority N [version 2|3] [advert-int S]
        /// [nopreempt] [preempt-delay S] [auth-pass PW] [checksum
        /// keepalived|rfc9568] [no-fastpath] vip CIDR [dev IF] [label L] ...
        #[arg(long = "vrrp", value_name = "SPEC")]
        vrrp: Vec<String>,
        /// Run every instance without the eBPF fast path: the daemon sees
        /// each advert (as `no-fastpath` does for one instance).
        #[arg(long)]
        no_fastpath: bool,
        /// Write a line per state change to this FIFO, in keepalived's
        /// notify_fifo format (`INSTANCE "VI_1" MASTER 150`); made if
        /// missing. Overrides the file's `notify_fifo`.
        #[arg(long, value_name = "PATH")]
        notify_fifo: Option<std::path::PathBuf>,
        /// Run each notify and track script as a transient systemd service
        /// (systemd-run): outside this service's sandbox and capabilities,
        /// as root, as keepalived runs them. The shipped unit sets it.
        #[arg(long)]
        script_units: bool,
        /// Serve Prometheus metrics at ADDR (default 127.0.0.1:9477).
        #[arg(long, value_name = "ADDR", num_args = 0..=1, default_missing_value = "127.0.0.1:9477")]
        metrics: Option<std::net::SocketAddr>,
        /// Leave the datapath (attachments, tunnels, pinned maps) in place
        /// on exit, for a restart that loses no packet.
        #[arg(long)]
        keep_datapath: bool,
        /// Release the VIPs at once on a stop, as keepalived does. By
        /// default a master resigns but keeps its VIPs until another
        /// router is master (at most three advert intervals), so clients
        /// lose nothing.
        #[arg(long)]
        no_handover: bool,
    },
    /// GRE tunnels (gretap, gre) on greha's eBPF datapath; they stay up
    /// after this command exits, as `ip link add` ones do.
    Tunnel {
        #[command(subcommand)]
        command: TunnelCommand,
    },
    /// Reload the configuration (as SIGHUP does): unchanged tunnels and
    /// instances keep running untouched; an invalid file is refused.
    Reload,
    /// Step an instance down for maintenance: as master it hands over
    /// without a gap (its VIPs stay until another router is master), then
    /// it runs with priority 1 until `greha resume`, across reloads.
    Demote { instance: String },
    /// Take an instance out of service for maintenance (FRR's `vrrp N
    /// shutdown`): as master it hands over without a gap, then it stays
    /// in Initialize, across reloads, until `greha resume`.
    Shutdown { instance: String },
    /// Undo `greha demote` or `greha shutdown`: in service with its own
    /// priority again (it preempts if configured to).
    Resume { instance: String },
    /// Follow the daemon's VRRP events as they happen: one JSON line per
    /// transition, priority change and handover, in order (the
    /// `EventLine` type of docs/events.schema.json).
    Events,
    /// What the daemon is doing: VRRP instances (state, priority, master,
    /// statistics) and tunnels.
    Status {
        /// JSON instead of a table.
        #[arg(long)]
        json: bool,
    },
    /// Print the datapath counters from the pinned maps (works with the
    /// daemon stopped, as long as the maps are pinned).
    Counters {
        /// JSON instead of a table.
        #[arg(long)]
        json: bool,
    },
}

#[derive(Subcommand)]
enum TunnelCommand {
    /// Create a tunnel: NAME mode gretap|gre local ADDR remote ADDR [key K]
    /// [ttl N] [tos N] [dev UNDERLAY] [mtu N] [address CIDR]...
    Add {
        #[arg(required = true, num_args = 1.., allow_hyphen_values = true)]
        spec: Vec<String>,
    },
    /// Remove a tunnel, its interface and its attachments.
    Del { name: String },
    /// List the tunnels with their counters.
    Show {
        /// JSON instead of a table.
        #[arg(long)]
        json: bool,
    },
}

fn main() -> ExitCode {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("GREHA_LOG")
                .unwrap_or_else(|_| "info".into()),
        )
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .init();
    match dispatch(Cli::parse()) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("greha: {e:#}");
            if e.is::<daemon::StartRefused>() {
                ExitCode::from(daemon::EXIT_START_REFUSED)
            } else {
                ExitCode::FAILURE
            }
        }
    }
}

/// One request on the daemon's control socket; its whole answer.
fn ask(control: &std::path::Path, request: &str) -> anyhow::Result<String> {
    use std::io::{Read as _, Write as _};
    let mut conn = std::os::unix::net::UnixStream::connect(control).map_err(|e| {
        anyhow::anyhow!(
            "greha is not running (no answer on {}: {e})",
            control.display()
        )
    })?;
    conn.write_all(format!("{request}\n").as_bytes())?;
    let mut answer = String::new();
    conn.read_to_string(&mut answer)?;
    Ok(answer)
}

/// `greha events`: the daemon's event lines, copied to stdout as they
/// come, until the daemon stops.
fn events(control: &std::path::Path) -> anyhow::Result<()> {
    use std::io::{BufRead as _, Write as _};
    let mut conn = std::os::unix::net::UnixStream::connect(control).map_err(|e| {
        anyhow::anyhow!(
            "greha is not running (no answer on {}: {e})",
            control.display()
        )
    })?;
    conn.write_all(b"events\n")?;
    let mut out = std::io::stdout().lock();
    for line in std::io::BufReader::new(conn).lines() {
        writeln!(out, "{}", line?)?;
        out.flush()?;
    }
    Ok(())
}

/// `greha demote`, `greha shutdown` and `greha resume`.
fn demote(control: &std::path::Path, verb: &str, instance: &str) -> anyhow::Result<()> {
    let reply = ask(control, &format!("{verb} {instance}"))?;
    print!("{reply}");
    if reply.starts_with("ok") {
        Ok(())
    } else {
        Err(anyhow::anyhow!("{verb} refused"))
    }
}

fn print_status(doc: &greha::vrrp::status::StatusDoc, tunnels: &[tunnel::TunnelStatus]) {
    let now_ms = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis());
    println!(
        "{:<12} {:<10} {:>4} {:<8} {:>4} {:<22} {:>10} {:<16} {:>12}",
        "INSTANCE",
        "INTERFACE",
        "VRID",
        "STATE",
        "PRIO",
        "MASTER",
        "SINCE",
        "REASON",
        "ADVERTS_RCVD"
    );
    for i in &doc.vrrp {
        let since = format!(
            "{:.1}s ago",
            now_ms.saturating_sub(i.since_unix_ms) as f64 / 1000.0
        );
        let reason = i.transitions.last().map_or("-".into(), |t| word(&t.reason));
        println!(
            "{:<12} {:<10} {:>4} {:<8} {:>4} {:<22} {:>10} {:<16} {:>12}",
            i.name,
            i.interface,
            i.vrid,
            word(&i.state),
            i.priority,
            match (i.master, i.master_priority) {
                (Some(m), Some(p)) => format!("{m} ({p})"),
                (Some(m), None) => m.to_string(),
                (None, _) => "-".into(),
            },
            since,
            reason,
            i.stats.rcvd_advertisements,
        );
    }
    for i in &doc.vrrp {
        if i.shut_down {
            println!("{}: shut down until greha resume {}", i.name, i.name);
        }
        if i.demoted {
            println!(
                "{}: demoted (priority 1) until greha resume {}",
                i.name, i.name
            );
        }
        if let Some(h) = &i.handover {
            println!("{}: handover: {h}", i.name);
        }
    }
    for i in &doc.vrrp {
        if let Some(why) = &i.fastpath_off {
            println!("{}: fast path off: {why}", i.name);
        }
    }
    if !tunnels.is_empty() {
        println!();
        tunnel::print_table(tunnels);
    }
}

/// A state or reason as the status document spells it.
fn word<T: serde::Serialize>(v: &T) -> String {
    serde_json::to_value(v)
        .ok()
        .and_then(|v| v.as_str().map(str::to_owned))
        .unwrap_or_default()
}

fn runtime() -> anyhow::Result<tokio::runtime::Runtime> {
    Ok(tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?)
}

fn dispatch(cli: Cli) -> anyhow::Result<()> {
    match cli.command {
        Command::Tunnel { command } => match command {
            TunnelCommand::Add { spec } => {
                let def = tunnel::TunnelDef::parse(&spec)?;
                runtime()?.block_on(tunnel::add(&def, &cli.pin_dir))
            }
            TunnelCommand::Del { name } => runtime()?.block_on(tunnel::del(&name, &cli.pin_dir)),
            TunnelCommand::Show { json } => {
                let tunnels = tunnel::list(&cli.pin_dir)?;
                if json {
                    println!("{}", serde_json::to_string_pretty(&tunnels)?);
                } else {
                    tunnel::print_table(&tunnels);
                }
                Ok(())
            }
        },
        Command::ImportKeepalived { file, config_id } => {
            let config_id = config_id.unwrap_or_else(|| {
                let host = std::fs::read_to_string("/proc/sys/kernel/hostname").unwrap_or_default();
                host.trim().split('.').next().unwrap_or_default().to_owned()
            });
            let out = import::import_file(&file, &config_id)?;
            print!("{}", out.toml);
            for (origin, msg) in &out.dropped {
                match origin.file {
                    None => eprintln!("{}:{origin}: {msg}", file.display()),
                    Some(_) => eprintln!("{origin}: {msg}"),
                }
            }
            if !out.dropped.is_empty() {
                eprintln!(
                    "{}: {} line(s) not carried over, listed above",
                    file.display(),
                    out.dropped.len()
                );
            }
            Ok(())
        }
        Command::CheckConfig { config } => {
            let path = config.unwrap_or_else(|| config::DEFAULT_PATH.into());
            let cfg = config::load(&path)?;
            config::check_tracked_tunnels(&cfg.tunnels, &cfg.vrrp)
                .with_context(|| path.display().to_string())?;
            print!("{}", config::summary(&cfg));
            println!("{}: ok", path.display());
            Ok(())
        }
        Command::Run {
            config,
            count,
            tunnels,
            vrrp,
            metrics,
            keep_datapath,
            no_fastpath,
            notify_fifo,
            script_units,
            no_handover,
        } => runtime()?.block_on(daemon::run(daemon::Options {
            pin_dir: cli.pin_dir,
            config,
            extra: daemon::Extra {
                count,
                tunnels,
                vrrp,
                no_fastpath,
                notify_fifo,
            },
            keep_datapath,
            control: cli.control,
            metrics,
            script_units,
            handover: !no_handover,
        })),
        Command::Reload => {
            let reply = ask(&cli.control, "reload")?;
            print!("{reply}");
            if reply.starts_with("ok") {
                Ok(())
            } else {
                Err(anyhow::anyhow!("reload refused"))
            }
        }
        Command::Demote { instance } => demote(&cli.control, "demote", &instance),
        Command::Shutdown { instance } => demote(&cli.control, "shutdown", &instance),
        Command::Resume { instance } => demote(&cli.control, "resume", &instance),
        Command::Events => events(&cli.control),
        Command::Status { json } => {
            let text = ask(&cli.control, "status")?;
            let doc: greha::vrrp::status::StatusDoc = serde_json::from_str(&text)
                .context("the daemon's status document is not what this greha reads")?;
            let tunnels = tunnel::list(&cli.pin_dir)?;
            if json {
                let mut v = serde_json::to_value(&doc)?;
                v["tunnels"] = serde_json::to_value(&tunnels)?;
                println!("{}", serde_json::to_string_pretty(&v)?);
            } else {
                print_status(&doc, &tunnels);
            }
            Ok(())
        }
        Command::Counters { json } => {
            let c = counters::read(&cli.pin_dir)?;
            if json {
                println!("{}", serde_json::to_string_pretty(&c)?);
            } else {
                counters::print_table(&c);
            }
            Ok(())
        }
    }
}
