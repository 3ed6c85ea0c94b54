//! `cargo xtask vmtest`: greha on the kernels people run. Each Debian
//! kernel (5.10, 6.1, 6.12; Debian's cloud image kernels, all with BTF and
//! ip_gre) boots in qemu under TCG with an initramfs that holds greha, the
//! tools the suite uses and their libraries, and runs the guest suite
//! (`tests/src/bin/vm-suite.rs`) as its init's only job. The kernels come
//! from Debian's archive through a private apt configuration under
//! target/vm (the host's sources are not touched).
use std::{
    collections::BTreeSet,
    fs,
    io::{BufRead as _, BufReader},
    path::{Path, PathBuf},
    process::{Command, Stdio},
    time::{Duration, Instant},
};

use anyhow::{Context as _, Result, bail, ensure};

use crate::{cmd_output, run};

pub struct Kernel {
    pub name: &'static str,
    /// The Debian suite whose `linux-image-cloud-amd64` it is.
    suite: &'static str,
}

pub const KERNELS: &[Kernel] = &[
    Kernel {
        name: "5.10",
        suite: "bullseye",
    },
    Kernel {
        name: "6.1",
        suite: "bookworm",
    },
    Kernel {
        name: "6.12",
        suite: "trixie",
    },
];

/// The kernel the systemd lane boots: Debian 12's, with its systemd 252.
pub const SYSTEMD_KERNEL: &str = "6.1";

/// Host programs the guest suite runs, besides greha and busybox.
const PROGRAMS: &[&str] = &[
    "/usr/bin/ip",
    "/usr/sbin/tc",
    "/usr/bin/nsenter",
    "/usr/sbin/bpftool",
    "/usr/sbin/keepalived",
    "/usr/bin/ping",
    "/usr/sbin/ethtool",
    "/usr/sbin/sysctl",
];

/// Modules the suite needs that Debian builds as modules (with what they
/// depend on, in order).
const MODULES: &[&str] = &[
    "veth",
    "bridge",
    "sch_ingress",
    "cls_bpf",
    "ip_gre",
    "ip6_gre",
    "macvlan",
    "8021q",
    "tun",
];

/// How long one kernel's suite may take under TCG.
const GUEST_TIMEOUT: Duration = Duration::from_secs(900);

pub fn kernel(name: &str) -> Result<&'static Kernel> {
    KERNELS.iter().find(|k| k.name == name).with_context(|| {
        let names: Vec<_> = KERNELS.iter().map(|k| k.name).collect();
        format!("no kernel {name:?} in the lane; there are {names:?} (or all)")
    })
}

/// Boots `k` with `greha` and `suite` and fails unless the suite passed.
pub fn vmtest(k: &Kernel, greha: &Path, suite: &Path, work: &Path) -> Result<()> {
    let started = Instant::now();
    let files = fetch(k, work)?;
    let initrd = initramfs(k, &files, Payload::Suite { greha, suite }, work)?;
    eprintln!(
        "xtask: vmtest {}: booting {} under TCG",
        k.name, files.release
    );
    let log = work.join(format!("console-{}.log", k.name));
    let passed = boot(&files.vmlinuz, &initrd, None, &log)?;
    eprintln!(
        "xtask: vmtest {}: {} in {:.0} s (console: {})",
        k.name,
        if passed { "passed" } else { "FAILED" },
        started.elapsed().as_secs_f64(),
        log.display()
    );
    ensure!(passed, "the guest suite failed on kernel {}", k.name);
    Ok(())
}

/// The systemd lane: `k` boots a Debian bookworm root (debootstrap, cached
/// under target/vm) from a virtio disk with systemd as PID 1, greha
/// installed as `cargo xtask install` does, and the suite
/// (tests/vm/systemd-suite.sh) drives the shipped unit.
pub fn systemd_test(k: &Kernel, greha: &Path, repo: &Path, work: &Path) -> Result<()> {
    let started = Instant::now();
    let files = fetch(k, work)?;
    let root = debian_root(work)?;
    let install = |from: &Path, to: &str, mode: u32| -> Result<()> {
        use std::os::unix::fs::PermissionsExt as _;
        let dest = root.join(to);
        copy_file(from, &dest)?;
        fs::set_permissions(&dest, fs::Permissions::from_mode(mode))?;
        Ok(())
    };
    install(greha, "usr/local/bin/greha", 0o755)?;
    install(
        &repo.join("dist/greha.service"),
        "etc/systemd/system/greha.service",
        0o644,
    )?;
    install(
        &repo.join("tests/vm/systemd-suite.sh"),
        "usr/local/sbin/greha-systemd-suite",
        0o755,
    )?;
    install(
        &repo.join("tests/vm/greha-systemd-suite.service"),
        "etc/systemd/system/greha-systemd-suite.service",
        0o644,
    )?;
    let wants = root.join("etc/systemd/system/multi-user.target.wants");
    fs::create_dir_all(&wants)?;
    let link = wants.join("greha-systemd-suite.service");
    if fs::symlink_metadata(&link).is_err() {
        std::os::unix::fs::symlink("/etc/systemd/system/greha-systemd-suite.service", &link)?;
    }
    // What the last run left (its log) does not count.
    let _ = fs::remove_file(root.join("var/log/greha-notify.log"));
    let disk = work.join("debian.img");
    let _ = fs::remove_file(&disk);
    run(Command::new("mke2fs")
        .args(["-q", "-F", "-t", "ext4", "-d"])
        .arg(&root)
        .arg(&disk)
        .arg("3G"))?;
    let initrd = initramfs(k, &files, Payload::SwitchRoot, work)?;
    eprintln!(
        "xtask: vmtest {} systemd: booting {} with systemd as PID 1",
        k.name, files.release
    );
    let log = work.join(format!("console-{}-systemd.log", k.name));
    let passed = boot(&files.vmlinuz, &initrd, Some(&disk), &log)?;
    let _ = fs::remove_file(&disk);
    eprintln!(
        "xtask: vmtest {} systemd: {} in {:.0} s (console: {})",
        k.name,
        if passed { "passed" } else { "FAILED" },
        started.elapsed().as_secs_f64(),
        log.display()
    );
    ensure!(passed, "the systemd suite failed on kernel {}", k.name);
    Ok(())
}

/// Debian bookworm with systemd, keepalived and iproute2, made once.
fn debian_root(work: &Path) -> Result<PathBuf> {
    let root = work.join("debian");
    if work.join("debian.done").exists() {
        return Ok(root);
    }
    let _ = fs::remove_dir_all(&root);
    eprintln!("xtask: vmtest: debootstrap of a Debian bookworm root with systemd (once)");
    run(Command::new("debootstrap")
        .args([
            "--variant=minbase",
            "--include=systemd,systemd-sysv,dbus,iproute2,keepalived,procps,kmod,iputils-ping",
            "bookworm",
        ])
        .arg(&root)
        .arg("http://deb.debian.org/debian"))?;
    fs::write(root.join("etc/hostname"), "greha-vm\n")?;
    fs::write(work.join("debian.done"), "")?;
    Ok(root)
}

/// A kernel unpacked from its Debian package.
struct KernelFiles {
    vmlinuz: PathBuf,
    /// `lib/modules/<release>` with a modules.dep.
    modules: PathBuf,
    release: String,
}

/// The private apt configuration's options.
fn apt(work: &Path, program: &str) -> Command {
    let dir = work.join("apt");
    let mut c = Command::new(program);
    for (k, v) in [
        ("Dir::State", dir.join("state")),
        ("Dir::Cache", dir.join("cache")),
        ("Dir::Etc::SourceList", dir.join("sources.list")),
        ("Dir::Etc::SourceParts", dir.join("sources.list.d")),
        ("Debug::NoLocking", "1".into()),
        // The downloads land in target/, which _apt cannot write.
        ("APT::Sandbox::User", "root".into()),
    ] {
        c.arg("-o").arg(format!("{k}={}", v.display()));
    }
    c
}

fn fetch(k: &Kernel, work: &Path) -> Result<KernelFiles> {
    let dir = work.join("kernels").join(k.name);
    if !dir.join("done").exists() {
        let apt_dir = work.join("apt");
        if !apt_dir.join("done").exists() {
            for d in [
                "state/lists/partial",
                "cache/archives/partial",
                "sources.list.d",
            ] {
                fs::create_dir_all(apt_dir.join(d))?;
            }
            let sources: String = KERNELS
                .iter()
                .map(|k| {
                    format!(
                        "deb [signed-by=/usr/share/keyrings/debian-archive-keyring.gpg] \
                         http://deb.debian.org/debian {} main\n",
                        k.suite
                    )
                })
                .collect();
            fs::write(apt_dir.join("sources.list"), sources)?;
            eprintln!("xtask: vmtest: reading Debian's package lists (private apt configuration)");
            run(apt(work, "apt-get").args(["update", "-q"]))?;
            fs::write(apt_dir.join("done"), "")?;
        }
        let _ = fs::remove_dir_all(&dir);
        let debs = dir.join("debs");
        fs::create_dir_all(&debs)?;
        // The metapackage names the suite's current kernel package.
        let meta = format!("linux-image-cloud-amd64/{}", k.suite);
        run(apt(work, "apt-get")
            .current_dir(&debs)
            .args(["download", "-q", &meta]))?;
        let meta_deb = only_file(&debs)?;
        let depends = cmd_output(
            Command::new("dpkg-deb")
                .arg("-f")
                .arg(&meta_deb)
                .arg("Depends"),
        )?;
        let image = depends
            .split([',', ' ', '|'])
            .find(|w| w.starts_with("linux-image-"))
            .with_context(|| format!("{meta}: no linux-image dependency in {depends:?}"))?
            .to_owned();
        fs::remove_file(&meta_deb)?;
        eprintln!("xtask: vmtest {}: downloading {image}", k.name);
        run(apt(work, "apt-get").current_dir(&debs).args([
            "download",
            "-q",
            &format!("{image}/{}", k.suite),
        ]))?;
        let deb = only_file(&debs)?;
        let root = dir.join("root");
        run(Command::new("dpkg-deb").arg("-x").arg(&deb).arg(&root))?;
        fs::remove_dir_all(&debs)?;
        // Merged /usr (trixie) or not (bullseye, bookworm).
        let base = if root.join("usr/lib/modules").exists() {
            root.join("usr")
        } else {
            root.clone()
        };
        let release = only_file(&base.join("lib/modules"))?
            .file_name()
            .context("release")?
            .to_string_lossy()
            .into_owned();
        run(Command::new("depmod").arg("-b").arg(&base).arg(&release))?;
        fs::write(dir.join("base"), base.to_string_lossy().as_bytes())?;
        fs::write(dir.join("done"), &release)?;
    }
    let release = fs::read_to_string(dir.join("done"))?;
    let base = PathBuf::from(fs::read_to_string(dir.join("base"))?);
    Ok(KernelFiles {
        vmlinuz: dir.join(format!("root/boot/vmlinuz-{release}")),
        modules: base.join("lib/modules").join(&release),
        release,
    })
}

fn only_file(dir: &Path) -> Result<PathBuf> {
    let mut entries: Vec<_> = fs::read_dir(dir)?.collect::<Result<_, _>>()?;
    ensure!(
        entries.len() == 1,
        "expected one file in {}, found {}",
        dir.display(),
        entries.len()
    );
    Ok(entries.remove(0).path())
}

/// The modules `wanted` need, each after the ones it depends on, as paths
/// relative to the modules directory.
fn module_order(modules: &Path, wanted: &[&str]) -> Result<Vec<String>> {
    let dep = fs::read_to_string(modules.join("modules.dep"))?;
    let deps: std::collections::HashMap<&str, Vec<&str>> = dep
        .lines()
        .filter_map(|l| {
            let (m, d) = l.split_once(':')?;
            Some((m, d.split_whitespace().collect()))
        })
        .collect();
    let name_of = |path: &str| -> String {
        let file = path.rsplit('/').next().unwrap_or(path);
        file.split(".ko").next().unwrap_or(file).replace('-', "_")
    };
    let mut order = Vec::new();
    let mut seen = BTreeSet::new();
    fn visit<'a>(
        m: &'a str,
        deps: &std::collections::HashMap<&'a str, Vec<&'a str>>,
        seen: &mut BTreeSet<&'a str>,
        order: &mut Vec<String>,
    ) {
        if !seen.insert(m) {
            return;
        }
        // modules.dep lists every dependency, the indirect ones too, last
        // first: loading them in reverse order satisfies each.
        for d in deps.get(m).into_iter().flatten().rev() {
            visit(d, deps, seen, order);
        }
        order.push(m.to_owned());
    }
    for w in wanted {
        match deps.keys().find(|m| name_of(m) == *w) {
            Some(m) => visit(m, &deps, &mut seen, &mut order),
            // Built in on this kernel.
            None => continue,
        }
    }
    Ok(order)
}

/// Copies `program` and the shared libraries it loads to the same paths
/// under `root`.
fn copy_with_libraries(program: &Path, to: &Path, root: &Path) -> Result<()> {
    copy_file(program, &root.join(to.strip_prefix("/").unwrap_or(to)))?;
    let ldd = cmd_output(Command::new("ldd").arg(program)).unwrap_or_default();
    for line in ldd.lines() {
        // "libc.so.6 => /lib/x86_64-linux-gnu/libc.so.6 (0x…)" or
        // "/lib64/ld-linux-x86-64.so.2 (0x…)".
        let path = line
            .split("=>")
            .last()
            .and_then(|s| s.split_whitespace().next())
            .filter(|p| p.starts_with('/'));
        if let Some(p) = path {
            let dest = root.join(&p[1..]);
            if !dest.exists() {
                copy_file(Path::new(p), &dest)?;
            }
        }
    }
    Ok(())
}

fn copy_file(from: &Path, to: &Path) -> Result<()> {
    if let Some(d) = to.parent() {
        fs::create_dir_all(d)?;
    }
    fs::copy(from, to)
        .with_context(|| format!("copying {} to {}", from.display(), to.display()))?;
    Ok(())
}

// busybox's applets come last in PATH: the real ip, tc and nsenter first.
const INIT: &str = r#"#!/bin/busybox sh
/bin/busybox mkdir -p /busybox
/bin/busybox --install -s /busybox
export PATH=/bin:/sbin:/usr/bin:/usr/sbin:/busybox
mount -t proc proc /proc
mount -t sysfs sys /sys
mount -t devtmpfs dev /dev
mount -t tmpfs tmp /tmp
mount -t tmpfs run /run
mount -t bpf bpf /sys/fs/bpf
mount -t debugfs debugfs /sys/kernel/debug 2>/dev/null
mkdir -p /var/run /var/tmp /etc
for m in $(cat /modules/order); do
    insmod "/modules/$m" || echo "vm-init: cannot load $m"
done
ip link set lo up
echo "vm-init: kernel $(uname -r), starting the suite"
GREHA_BIN=/bin/greha /bin/vm-suite
echo "VM-SUITE-EXIT $?"
echo o > /proc/sysrq-trigger
sleep 10
"#;

/// What an initramfs holds besides busybox and the modules.
enum Payload<'a> {
    /// greha, the guest suite and the tools it runs: the suite is the job.
    Suite { greha: &'a Path, suite: &'a Path },
    /// Nothing: it mounts the disk's Debian root and hands over to systemd.
    SwitchRoot,
}

// Loads the modules, mounts the Debian root from the virtio disk and
// hands over to systemd.
const SWITCH_ROOT_INIT: &str = r#"#!/bin/busybox sh
/bin/busybox mkdir -p /busybox
/bin/busybox --install -s /busybox
export PATH=/busybox
mount -t proc proc /proc
mount -t sysfs sys /sys
mount -t devtmpfs dev /dev
for m in $(cat /modules/order); do
    insmod "/modules/$m" || echo "vm-init: cannot load $m"
done
mkdir -p /newroot
for _ in $(seq 50); do [ -b /dev/vda ] && break; sleep 0.1; done
mount -t ext4 /dev/vda /newroot || { echo "vm-init: cannot mount /dev/vda"; echo o > /proc/sysrq-trigger; }
umount /proc /sys
mount --move /dev /newroot/dev
exec switch_root /newroot /lib/systemd/systemd
"#;

fn initramfs(k: &Kernel, files: &KernelFiles, payload: Payload, work: &Path) -> Result<PathBuf> {
    let (tag, init, extra_modules): (&str, &str, &[&str]) = match payload {
        Payload::Suite { .. } => ("suite", INIT, &[]),
        Payload::SwitchRoot => ("systemd", SWITCH_ROOT_INIT, &["virtio_pci", "virtio_blk"]),
    };
    let root = work.join(format!("initramfs-{}-{tag}", k.name));
    let _ = fs::remove_dir_all(&root);
    for d in [
        "bin", "sbin", "proc", "sys", "dev", "tmp", "run", "modules", "etc",
    ] {
        fs::create_dir_all(root.join(d))?;
    }
    copy_file(Path::new("/bin/busybox"), &root.join("bin/busybox"))?;
    if let Payload::Suite { greha, suite } = payload {
        copy_with_libraries(greha, Path::new("/bin/greha"), &root)?;
        copy_with_libraries(suite, Path::new("/bin/vm-suite"), &root)?;
        for p in PROGRAMS {
            copy_with_libraries(Path::new(p), Path::new(p), &root)?;
        }
        // keepalived and iproute2 read these.
        for f in [
            "/etc/passwd",
            "/etc/group",
            "/etc/protocols",
            "/etc/services",
        ] {
            if Path::new(f).exists() {
                copy_file(Path::new(f), &root.join(&f[1..]))?;
            }
        }
        if Path::new("/usr/lib/iproute2").exists() {
            run(Command::new("cp")
                .arg("-a")
                .arg("/usr/lib/iproute2")
                .arg(root.join("usr/lib/")))?;
        }
    }
    // Modules decompressed (busybox insmod reads plain ones), in order.
    let mut order = String::new();
    let wanted: Vec<&str> = MODULES.iter().chain(extra_modules).copied().collect();
    for (i, m) in module_order(&files.modules, &wanted)?.iter().enumerate() {
        let src = files.modules.join(m);
        let name = format!("{i:02}-{}.ko", module_name(m));
        let dest = root.join("modules").join(&name);
        if m.ends_with(".xz") {
            let out = Command::new("xz").arg("-dc").arg(&src).output()?;
            ensure!(out.status.success(), "xz -d {}", src.display());
            fs::write(&dest, out.stdout)?;
        } else if m.ends_with(".zst") {
            let out = Command::new("zstd").arg("-dc").arg(&src).output()?;
            ensure!(out.status.success(), "zstd -d {}", src.display());
            fs::write(&dest, out.stdout)?;
        } else {
            copy_file(&src, &dest)?;
        }
        order.push_str(&name);
        order.push('\n');
    }
    fs::write(root.join("modules/order"), order)?;
    fs::write(root.join("init"), init)?;
    run(Command::new("chmod").arg("755").arg(root.join("init")))?;
    let cpio = work.join(format!("initramfs-{}-{tag}.cpio", k.name));
    // Uncompressed: decompressing under TCG would cost more than the copy.
    let out = fs::File::create(&cpio)?;
    let status = Command::new("sh")
        .arg("-c")
        .arg("find . | LC_ALL=C sort | cpio --quiet -o -H newc")
        .current_dir(&root)
        .stdout(out)
        .status()?;
    ensure!(status.success(), "cpio failed ({status})");
    fs::remove_dir_all(&root)?;
    Ok(cpio)
}

fn module_name(path: &str) -> String {
    let file = path.rsplit('/').next().unwrap_or(path);
    file.split(".ko").next().unwrap_or(file).to_owned()
}

/// Boots and follows the console; true if the suite exited 0.
fn boot(vmlinuz: &Path, initrd: &Path, disk: Option<&Path>, log: &Path) -> Result<bool> {
    let mut qemu = Command::new("qemu-system-x86_64");
    if let Some(disk) = disk {
        qemu.arg("-drive")
            .arg(format!("file={},format=raw,if=virtio", disk.display()));
    }
    let cmdline = match disk {
        None => "console=ttyS0 rdinit=/init panic=-1 loglevel=4 mitigations=off",
        // The suite's unit owns the console; no login prompt on it.
        Some(_) => {
            "console=ttyS0 rdinit=/init panic=-1 loglevel=4 mitigations=off \
             systemd.mask=serial-getty@ttyS0.service systemd.show_status=0"
        }
    };
    let mut qemu = qemu
        .args(["-machine", "q35,accel=tcg"])
        // 6.12 oopses on qemu 7.2's TCG with la57 or cx16.
        .args(["-cpu", "max,la57=off,cx16=off"])
        .args(["-m", "2048", "-smp", "2"])
        .args(["-nographic", "-no-reboot", "-nic", "none"])
        .arg("-kernel")
        .arg(vmlinuz)
        .arg("-initrd")
        .arg(initrd)
        .args(["-append", cmdline])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .context("cannot start qemu-system-x86_64")?;
    let stdout = qemu.stdout.take().context("qemu's console")?;
    let deadline = Instant::now() + GUEST_TIMEOUT;
    // The console is read on a thread; the deadline is kept here.
    let log_path = log.to_path_buf();
    let reader = std::thread::spawn(move || -> Result<Option<i32>> {
        use std::io::Write as _;
        let mut out = fs::File::create(&log_path)?;
        let mut exit = None;
        for line in BufReader::new(stdout).lines() {
            let line = line.unwrap_or_default();
            writeln!(out, "{line}")?;
            if line.contains("vm-suite: ") || line.starts_with("vm-init") {
                eprintln!("  {line}");
            }
            if let Some((_, rc)) = line.split_once("VM-SUITE-EXIT ") {
                exit = rc.trim().parse().ok();
            }
        }
        Ok(exit)
    });
    loop {
        if qemu.try_wait()?.is_some() {
            break;
        }
        if Instant::now() > deadline {
            let _ = qemu.kill();
            let _ = qemu.wait();
            bail!(
                "the guest did not finish within {GUEST_TIMEOUT:?} (console: {})",
                log.display()
            );
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    let exit = reader
        .join()
        .map_err(|_| anyhow::anyhow!("console reader panicked"))??;
    Ok(exit == Some(0))
}
