//! The BPF filesystem where greha pins its maps, so that counters outlive a
//! daemon restart and `bpftool map dump pinned …` can read them.
use std::{
    fs,
    path::{Path, PathBuf},
};

use anyhow::{Context as _, Result, bail};
use nix::{
    mount::{MsFlags, mount},
    sys::statfs::{BPF_FS_MAGIC, statfs},
};

/// Where bpffs lives on every distribution systemd supports.
pub const BPFFS_ROOT: &str = "/sys/fs/bpf";
/// greha's own directory in bpffs, unless `--pin-dir` says otherwise.
pub const DEFAULT_PIN_DIR: &str = "/sys/fs/bpf/greha";

/// Makes sure `pin_dir` is a directory on a bpffs, mounting bpffs at
/// [`BPFFS_ROOT`] when nothing is mounted there yet (as systemd and bpftool
/// would do on a normal host).
pub fn prepare_pin_dir(pin_dir: &Path) -> Result<PathBuf> {
    if !pin_dir.starts_with(BPFFS_ROOT) {
        bail!(
            "pin directory {} is not below {BPFFS_ROOT}: greha pins its maps in the BPF filesystem",
            pin_dir.display()
        );
    }
    ensure_mounted()?;
    fs::create_dir_all(pin_dir)
        .with_context(|| format!("cannot create pin directory {}", pin_dir.display()))?;
    Ok(pin_dir.to_path_buf())
}

fn ensure_mounted() -> Result<()> {
    let root = Path::new(BPFFS_ROOT);
    if is_bpffs(root)? {
        return Ok(());
    }
    mount(
        Some("bpf"),
        root,
        Some("bpf"),
        MsFlags::MS_NOSUID | MsFlags::MS_NODEV | MsFlags::MS_NOEXEC,
        Some("mode=0700"),
    )
    .with_context(|| {
        format!(
            "{BPFFS_ROOT} is not a BPF filesystem and mounting one there failed \
             (greha must run as root; or mount it yourself: mount -t bpf bpf {BPFFS_ROOT})"
        )
    })?;
    Ok(())
}

fn is_bpffs(path: &Path) -> Result<bool> {
    match statfs(path) {
        Ok(fs) => Ok(fs.filesystem_type() == BPF_FS_MAGIC),
        Err(nix::errno::Errno::ENOENT) => bail!(
            "{} does not exist: this kernel has no sysfs BPF mount point (is CONFIG_BPF_SYSCALL set?)",
            path.display()
        ),
        Err(e) => Err(e).with_context(|| format!("statfs {}", path.display())),
    }
}

/// Removes a pin if present; a pin left by a crashed run must not stop a
/// new one from starting.
pub fn remove_pin(path: &Path) -> Result<bool> {
    match fs::remove_file(path) {
        Ok(()) => Ok(true),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(false),
        Err(e) => Err(e).with_context(|| format!("cannot remove pin {}", path.display())),
    }
}

/// Removes the pin directory when greha left nothing else in it.
/// Whether `pin` exists; an error (not "absent") when it cannot be looked
/// at, which for a user without root is the rule: the pins are root's.
pub fn pin_exists(pin: &Path) -> Result<bool> {
    match fs::symlink_metadata(pin) {
        Ok(_) => Ok(true),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(false),
        Err(e) if e.kind() == std::io::ErrorKind::PermissionDenied => bail!(
            "permission denied reading {}: greha's pins belong to root (run it as root)",
            pin.display()
        ),
        Err(e) => Err(e).with_context(|| format!("reading {}", pin.display())),
    }
}

pub fn remove_dir_if_empty(dir: &Path) {
    // ENOTEMPTY means an operator or `--keep-datapath` left pins: keep them.
    let _ = fs::remove_dir(dir);
}
