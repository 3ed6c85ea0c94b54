//! Installs what building and testing greha needs, skipping what is there.
//! Every xtask entry point runs it first, so a fresh machine needs no other
//! step than the README's command.
use std::{path::Path, process::Command};

use anyhow::{Context as _, Result, bail};

use crate::{cmd_output, run};

/// Debian packages: LLVM 22 for bpf-linker, bpftool and iproute2 for the
/// datapath, and the independent peers the tests compare greha against.
const PACKAGES: &[&str] = &[
    "llvm-22-dev",
    "libpolly-22-dev",
    "bpftool",
    "iproute2",
    "iputils-ping",
    "keepalived",
    "iperf3",
    // Offloads off on a lab link, to make the stack segment in software.
    "ethtool",
    "tshark",
    "tcpdump",
    "python3-scapy",
    // An independent validator for `greha status --json`'s schema.
    "python3-jsonschema",
    // An independent parser of the Prometheus text format.
    "python3-prometheus-client",
    // cargo xtask vmtest: the guest kernels' modules, the initramfs and
    // the machine.
    "kmod",
    "busybox-static",
    "cpio",
    "debootstrap",
    "e2fsprogs",
    "qemu-system-x86",
];

const BPF_LINKER_VERSION: &str = "0.13.0";

pub fn bootstrap() -> Result<()> {
    check_platform()?;
    debian_packages()?;
    nightly_rust_src()?;
    bpf_linker()?;
    Ok(())
}

/// What no install can fix: say which and what to do.
fn check_platform() -> Result<()> {
    if !cfg!(target_os = "linux") {
        bail!("greha needs Linux (eBPF, network namespaces)");
    }
    // SAFETY: geteuid has no preconditions and cannot fail.
    if unsafe { libc::geteuid() } != 0 {
        bail!(
            "cargo xtask needs root: it installs packages and loads BPF programs \
             in network namespaces (run it as root; greha does not use sudo)"
        );
    }
    if !Path::new("/proc/sys/kernel/unprivileged_bpf_disabled").exists() {
        bail!("this kernel has no BPF system call (CONFIG_BPF_SYSCALL): greha cannot run on it");
    }
    if !Path::new("/sys/kernel/btf/vmlinux").exists() {
        bail!(
            "this kernel has no BTF (/sys/kernel/btf/vmlinux is missing, CONFIG_DEBUG_INFO_BTF): \
             greha needs Linux 6.6 or newer built with BTF"
        );
    }
    Ok(())
}

fn debian_packages() -> Result<()> {
    let missing: Vec<&str> = PACKAGES
        .iter()
        .copied()
        .filter(|p| {
            // "ii " is dpkg's installed-and-configured state.
            !cmd_output(Command::new("dpkg-query").args(["-W", "-f", "${db:Status-Abbrev}", p]))
                .is_ok_and(|s| s.starts_with("ii"))
        })
        .collect();
    if missing.is_empty() {
        return Ok(());
    }
    eprintln!(
        "bootstrap: installing Debian packages: {}",
        missing.join(" ")
    );
    run(Command::new("apt-get").args(["update", "-q"]))?;
    run(Command::new("apt-get")
        .env("DEBIAN_FRONTEND", "noninteractive")
        .args(["install", "-y", "-q", "--no-install-recommends"])
        .args(&missing))
    .context("apt-get install failed")
}

fn nightly_rust_src() -> Result<()> {
    let installed = cmd_output(Command::new("rustup").args([
        "component",
        "list",
        "--installed",
        "--toolchain",
        "nightly",
    ]))
    .context(
        "the nightly toolchain is missing; the eBPF programs need it (-Z build-std) \
         and rustup cannot install toolchains on this machine",
    )?;
    if installed.lines().any(|l| l.starts_with("rust-src")) {
        return Ok(());
    }
    eprintln!("bootstrap: installing rust-src for nightly");
    run(Command::new("rustup").args(["component", "add", "rust-src", "--toolchain", "nightly"]))
}

fn bpf_linker() -> Result<()> {
    if cmd_output(Command::new("bpf-linker").arg("--version"))
        .is_ok_and(|v| v.contains(BPF_LINKER_VERSION))
    {
        return Ok(());
    }
    eprintln!(
        "bootstrap: building bpf-linker {BPF_LINKER_VERSION} against LLVM 22 (a few minutes)"
    );
    run(Command::new(env!("CARGO"))
        .env("LLVM_PREFIX", "/usr/lib/llvm-22")
        .args([
            "install",
            "bpf-linker",
            "--version",
            BPF_LINKER_VERSION,
            "--no-default-features",
            "--features",
            "llvm-22",
        ]))
    .context("building bpf-linker failed")
}
