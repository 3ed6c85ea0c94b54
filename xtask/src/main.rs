//! `cargo xtask`: build, run, test and lint greha with one command each.
mod bench;
mod bootstrap;
mod demo;
mod soak;
mod timeline;
mod vm;

use std::{
    os::unix::process::CommandExt as _,
    path::{Path, PathBuf},
    process::{Command, ExitCode},
};

use anyhow::{Context as _, Result, bail};
use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(name = "cargo xtask")]
struct Cli {
    #[command(subcommand)]
    command: Task,
}

#[derive(Subcommand)]
enum Task {
    /// The seed's two-server failover, in network namespaces: greha tunnel
    /// and VRRP on servers A and B, a client fetching from the VIP.
    Demo {
        /// Leave the lab up to explore (prints how to remove it).
        #[arg(long)]
        keep: bool,
        /// VRRP advertisement interval in seconds: whole for VRRPv2 (as in
        /// the seed), fractional for VRRPv3.
        #[arg(long, default_value_t = 1.0)]
        advert_interval: f64,
        /// Dual stack: an ip6gretap underlay, and an IPv6 VIP (VRRPv3 for
        /// IPv6) beside the IPv4 one.
        #[arg(long)]
        ipv6: bool,
    },
    /// Install what the build and the tests need (each task runs this first).
    Bootstrap,
    /// Build greha in release mode and install it as a systemd service:
    /// /usr/local/bin/greha, /etc/systemd/system/greha.service, and the
    /// example configuration as /etc/greha/greha.toml unless one exists.
    Install,
    /// Build everything, then run `greha ARGS` (as root).
    Run {
        #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
        args: Vec<String>,
    },
    /// Unit tests, then the privileged integration tests (root, network
    /// namespaces, real BPF).
    Test,
    /// `cargo fmt --check` and `cargo clippy -D warnings` over the workspace.
    Lint,
    /// Boots Debian's kernels in qemu (TCG) and runs the guest suite in
    /// each: tunnels, counters, VRRP against keepalived with the fast path;
    /// then, on 6.1, Debian 12 with systemd as PID 1 driving greha.service.
    Vmtest {
        /// 5.10, 6.1, 6.12 (comma-separated) or all.
        #[arg(long, default_value = "all")]
        kernel: String,
        /// Only the guest suite, or only the systemd lane.
        #[arg(long, value_enum, default_value = "all")]
        lane: Lane,
    },
    /// A bounded chaos run: two greha routers, keepalived as a third, a
    /// client; random link flaps, partitions, kill -9s, reloads and stray
    /// adverts, with the invariants checked after each (target/soak.json).
    Soak {
        #[arg(long, default_value_t = 5.0)]
        minutes: f64,
        /// Replays a run: its events follow from the seed it printed.
        #[arg(long)]
        seed: Option<u64>,
    },
    /// Benchmarks in a lab; each prints a table and writes
    /// target/bench/NAME.json.
    Bench {
        #[command(subcommand)]
        which: Bench,
    },
}

#[derive(Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
enum Lane {
    Suite,
    Systemd,
    All,
}

#[derive(Subcommand)]
enum Bench {
    /// TCP and 64-byte UDP through greha's tunnel, the plain underlay and
    /// kernel VXLAN; cost of the encap and decap programs.
    Tunnel,
    /// Time from stopping the VRRP master to the VIP on the backup, greha
    /// and keepalived, kill -9 and graceful, VRRPv2 at 1 s and v3 at 100 ms.
    Failover,
    /// 255 VRRP instances at 100 ms and 10 ms: CPU and wakeups of the
    /// backup and the master, greha with and without the fast path and
    /// keepalived.
    Scale {
        /// How long each measurement lasts.
        #[arg(long, default_value_t = 30)]
        seconds: u64,
        /// Only the cases whose key (e.g. `greha_backup_10ms`) contains
        /// this.
        #[arg(long)]
        only: Option<String>,
    },
}

fn main() -> ExitCode {
    match dispatch(Cli::parse()) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("xtask: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn dispatch(cli: Cli) -> Result<()> {
    bootstrap::bootstrap()?;
    match cli.command {
        Task::Bootstrap => Ok(()),
        Task::Install => install(),
        Task::Run { args } => {
            let greha = build_greha()?;
            let err = Command::new(&greha).args(&args).exec();
            Err(err).with_context(|| format!("cannot exec {}", greha.display()))
        }
        Task::Test => test(),
        Task::Vmtest { kernel, lane } => vmtest(&kernel, lane),
        Task::Soak { minutes, seed } => sweep_leftover_labs().and_then(|()| {
            soak::soak(
                &build_greha()?,
                &workspace_root().join("target"),
                minutes,
                seed,
            )
        }),
        Task::Demo {
            keep,
            advert_interval,
            ipv6,
        } => sweep_leftover_labs().and_then(|()| {
            demo::run_demo(
                &build_greha()?,
                &demo::Options {
                    keep,
                    advert_interval,
                    ipv6,
                    out_dir: workspace_root().join("target/demo"),
                },
            )
        }),
        Task::Bench { which } => {
            // What a deployment runs (`cargo xtask install` builds release).
            let greha = build_greha_release()?;
            sweep_leftover_labs()?;
            let out = workspace_root().join("target/bench");
            match which {
                Bench::Tunnel => bench::tunnel(&greha, &out),
                Bench::Failover => bench::failover(&greha, &out),
                Bench::Scale { seconds, only } => {
                    bench::scale(&greha, &out, seconds, only.as_deref())
                }
            }
        }
        Task::Lint => {
            cargo(&["fmt", "--all", "--check"])?;
            cargo(&[
                "clippy",
                "--workspace",
                "--all-targets",
                "--",
                "-D",
                "warnings",
            ])
        }
    }
}

fn install() -> Result<()> {
    let greha = build_greha_release()?;
    let root = workspace_root();
    let copy = |from: PathBuf, to: &str, mode: u32| -> Result<()> {
        use std::os::unix::fs::PermissionsExt as _;
        let to = Path::new(to);
        if let Some(dir) = to.parent() {
            std::fs::create_dir_all(dir)?;
        }
        std::fs::copy(&from, to)
            .with_context(|| format!("installing {} as {}", from.display(), to.display()))?;
        std::fs::set_permissions(to, std::fs::Permissions::from_mode(mode))?;
        eprintln!("xtask: installed {}", to.display());
        Ok(())
    };
    copy(greha, "/usr/local/bin/greha", 0o755)?;
    copy(
        root.join("dist/greha.service"),
        "/etc/systemd/system/greha.service",
        0o644,
    )?;
    if Path::new("/etc/greha/greha.toml").exists() {
        eprintln!("xtask: kept the existing /etc/greha/greha.toml");
    } else {
        copy(
            root.join("examples/greha.toml"),
            "/etc/greha/greha.toml",
            0o600,
        )?;
        eprintln!("xtask: edit /etc/greha/greha.toml (it is the seed's server A), then:");
    }
    eprintln!("xtask: systemctl daemon-reload && systemctl enable --now greha");
    Ok(())
}

fn test() -> Result<()> {
    let greha = build_greha()?;
    sweep_leftover_labs()?;
    eprintln!("xtask: unit tests");
    cargo(&[
        "test",
        "--workspace",
        "--exclude",
        "greha-ebpf",
        "--exclude",
        "greha-tests",
    ])?;
    eprintln!("xtask: integration tests (network namespaces, real BPF)");
    run(Command::new(env!("CARGO"))
        .current_dir(workspace_root())
        .env("GREHA_BIN", &greha)
        .args(["test", "--package", "greha-tests"]))?;
    eprintln!(
        "xtask: the keepalived interoperability tests (IPv4, IPv6) again, without the fast path"
    );
    run(Command::new(env!("CARGO"))
        .current_dir(workspace_root())
        .env("GREHA_BIN", &greha)
        .env("GREHA_TEST_NO_FASTPATH", "1")
        .args([
            "test",
            "--package",
            "greha-tests",
            "--test",
            "vrrp_keepalived",
            "--test",
            "vrrp_ipv6",
        ]))?;
    eprintln!(
        "xtask: the demo (the README's first command), at 1 s and at 10 ms, then dual stack at 100 ms"
    );
    for (advert_interval, ipv6) in [(1.0, false), (0.01, false), (0.1, true)] {
        demo::run_demo(
            &greha,
            &demo::Options {
                keep: false,
                advert_interval,
                ipv6,
                out_dir: workspace_root().join("target/demo"),
            },
        )?;
    }
    eprintln!("xtask: the guest suite on Debian's 5.10, 6.1 and 6.12 kernels (qemu)");
    vmtest("all", Lane::All)?;
    eprintln!("xtask: a short soak (cargo xtask soak runs longer ones)");
    soak::soak(&greha, &workspace_root().join("target"), 1.0, None)?;
    check_nothing_left()?;
    eprintln!("xtask: all tests passed");
    Ok(())
}

/// The guest suite on `which` kernels (a name or "all"), and the systemd
/// lane on 6.1 (Debian 12's) if it is among them; every one is tried, and
/// the run fails if any failed.
fn vmtest(which: &str, lane: Lane) -> Result<()> {
    let kernels: Vec<&vm::Kernel> = if which == "all" {
        vm::KERNELS.iter().collect()
    } else {
        which.split(',').map(vm::kernel).collect::<Result<_>>()?
    };
    let greha = build_greha_release()?;
    cargo(&[
        "build",
        "--release",
        "--package",
        "greha-tests",
        "--bin",
        "vm-suite",
    ])?;
    let suite = workspace_root().join("target/release/vm-suite");
    let work = workspace_root().join("target/vm");
    std::fs::create_dir_all(&work)?;
    let mut failed: Vec<String> = Vec::new();
    if lane != Lane::Systemd {
        for k in &kernels {
            if let Err(e) = vm::vmtest(k, &greha, &suite, &work) {
                eprintln!("xtask: vmtest {}: {e:#}", k.name);
                failed.push(k.name.to_owned());
            }
        }
    }
    if lane != Lane::Suite {
        for k in kernels.iter().filter(|k| k.name == vm::SYSTEMD_KERNEL) {
            if let Err(e) = vm::systemd_test(k, &greha, &workspace_root(), &work) {
                eprintln!("xtask: vmtest {} systemd: {e:#}", k.name);
                failed.push(format!("{} systemd", k.name));
            }
        }
    }
    if !failed.is_empty() {
        bail!("the guest suite failed on kernels {failed:?}");
    }
    Ok(())
}

/// The lab removes what it creates, also when a test fails; a leak is a bug
/// of its own, so it fails the run. Labs of processes still running (a
/// benchmark in another shell) are theirs, not leaks.
fn check_nothing_left() -> Result<()> {
    let leaked: Vec<_> = greha_tests::leftover_labs()?
        .into_iter()
        .filter(|l| !l.namespaces.is_empty() || !l.pin_dirs.is_empty())
        .collect();
    if !leaked.is_empty() {
        let netns: Vec<&String> = leaked.iter().flat_map(|l| &l.namespaces).collect();
        let pins: Vec<&PathBuf> = leaked.iter().flat_map(|l| &l.pin_dirs).collect();
        bail!("the tests left namespaces {netns:?} and pin directories {pins:?} behind");
    }
    Ok(())
}

/// Removes the labs of runs that were killed before they could tear down
/// (their process is gone), so that they neither clash with nor count
/// against this run.
fn sweep_leftover_labs() -> Result<()> {
    for lab in greha_tests::leftover_labs()? {
        eprintln!(
            "xtask: removing lab {} left by a run that was killed: namespaces {:?}, pins {:?}",
            lab.id, lab.namespaces, lab.pin_dirs
        );
        lab.remove()?;
    }
    Ok(())
}

/// Builds the workspace (the eBPF object included) and returns the path of
/// the greha binary.
fn build_greha() -> Result<PathBuf> {
    cargo(&["build", "--package", "greha"])?;
    Ok(workspace_root().join("target/debug/greha"))
}

/// The release build: what `install` deploys and the benchmarks measure.
fn build_greha_release() -> Result<PathBuf> {
    cargo(&["build", "--release", "--package", "greha"])?;
    Ok(workspace_root().join("target/release/greha"))
}

fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("xtask lives in the workspace")
        .to_path_buf()
}

fn cargo(args: &[&str]) -> Result<()> {
    run(Command::new(env!("CARGO"))
        .current_dir(workspace_root())
        .args(args))
}

/// Runs a command with inherited output; fails on a non-zero exit.
pub(crate) fn run(cmd: &mut Command) -> Result<()> {
    let status = cmd
        .status()
        .with_context(|| format!("cannot run {cmd:?}"))?;
    if !status.success() {
        bail!("{cmd:?} failed ({status})");
    }
    Ok(())
}

/// Runs a command and returns its stdout; fails on a non-zero exit.
pub(crate) fn cmd_output(cmd: &mut Command) -> Result<String> {
    let out = cmd
        .output()
        .with_context(|| format!("cannot run {cmd:?}"))?;
    if !out.status.success() {
        bail!("{cmd:?} failed ({})", out.status);
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}
