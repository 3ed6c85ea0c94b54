//! The lab: hosts as network namespaces joined by veth links, for greha's
//! integration tests (and its demo and benchmarks).
//!
//! Everything a lab creates lives inside namespaces it created, or in bpffs
//! and temp directories that carry its unique id; dropping the [`Lab`]
//! (also while a test panics) kills its processes and removes all of it.
//! Nothing is ever configured on the host's own interfaces: every `ip`
//! command runs with `-n <namespace>`.
use std::{
    fs,
    io::ErrorKind,
    os::unix::net::UnixDatagram,
    path::{Path, PathBuf},
    process::{Child, Command, ExitStatus, Stdio},
    sync::atomic::{AtomicU32, Ordering},
    thread,
    time::{Duration, Instant},
};

use anyhow::{Context as _, Result, bail, ensure};

pub mod probe;
pub mod web;
use nix::{
    sched::{CloneFlags, setns},
    sys::signal::{Signal, kill},
    unistd::Pid,
};

/// How long a test waits for an event that should happen at once (a daemon
/// starting, a counter catching up) before it fails.
pub const SHORT: Duration = Duration::from_secs(10);

/// The `greha` binary under test: `$GREHA_BIN` (set by `cargo xtask test`),
/// or the workspace's debug build.
pub fn greha_bin() -> PathBuf {
    std::env::var_os("GREHA_BIN").map_or_else(
        || Path::new(env!("CARGO_MANIFEST_DIR")).join("../target/debug/greha"),
        PathBuf::from,
    )
}

/// Polls `cond` until it holds, failing after `timeout` with `what` and the
/// last error `cond` gave.
pub fn wait_until(
    timeout: Duration,
    what: &str,
    mut cond: impl FnMut() -> Result<bool>,
) -> Result<()> {
    let deadline = Instant::now() + timeout;
    loop {
        let last = match cond() {
            Ok(true) => return Ok(()),
            Ok(false) => None,
            Err(e) => Some(e),
        };
        if Instant::now() >= deadline {
            match last {
                Some(e) => bail!("timed out after {timeout:?} waiting for {what}: {e:#}"),
                None => bail!("timed out after {timeout:?} waiting for {what}"),
            }
        }
        thread::sleep(Duration::from_millis(10));
    }
}

/// Runs a command to completion; an error carries its stderr.
pub fn run(cmd: &mut Command) -> Result<String> {
    let out = cmd
        .stdin(Stdio::null())
        .output()
        .with_context(|| format!("cannot run {cmd:?}"))?;
    if !out.status.success() {
        bail!(
            "{cmd:?} failed ({}): {}",
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

fn unique_id() -> String {
    static NEXT: AtomicU32 = AtomicU32::new(0);
    format!(
        "gh{:x}x{}",
        std::process::id(),
        NEXT.fetch_add(1, Ordering::Relaxed)
    )
}

/// A set of hosts and links that exists until it is dropped.
pub struct Lab {
    id: String,
    namespaces: Vec<String>,
    pin_dirs: Vec<PathBuf>,
    tmp: PathBuf,
}

impl Lab {
    pub fn new() -> Result<Self> {
        ensure!(
            nix::unistd::geteuid().is_root(),
            "the integration tests need root (network namespaces, BPF); run them as root"
        );
        let id = unique_id();
        let tmp = std::env::temp_dir().join(format!("greha-lab-{id}"));
        fs::create_dir_all(&tmp).with_context(|| format!("creating {}", tmp.display()))?;
        Ok(Self {
            id,
            namespaces: Vec::new(),
            pin_dirs: Vec::new(),
            tmp,
        })
    }

    /// The lab's unique id; names derived from it do not clash with other
    /// labs running at the same time.
    pub fn id(&self) -> &str {
        &self.id
    }

    /// A directory for the lab's files (logs, configs), removed with it.
    pub fn tmp(&self) -> &Path {
        &self.tmp
    }

    /// A new host: a network namespace with loopback up and IPv6 off, so
    /// that the only frames on its links are the ones a test sends.
    pub fn host(&mut self, name: &str) -> Result<Host> {
        let netns = format!("{}-{name}", self.id);
        run(Command::new("ip").args(["netns", "add", &netns]))?;
        self.namespaces.push(netns.clone());
        let host = Host {
            name: name.to_owned(),
            netns,
            next_if: std::cell::Cell::new(0),
        };
        // Its greha's pins (if it runs one) go with the lab.
        self.pin_dir(name);
        host.ip(&["link", "set", "lo", "up"])?;
        for knob in ["all", "default"] {
            host.sysctl(&format!("net.ipv6.conf.{knob}.disable_ipv6"), "1")?;
        }
        Ok(host)
    }

    /// A veth link between `a` and `b` with the given addresses (CIDR), up.
    /// Interfaces are named eth0, eth1, … in each host, in creation order.
    pub fn link(&mut self, a: &Host, a_addr: &str, b: &Host, b_addr: &str) -> Result<Link> {
        let a_if = a.next_ifname();
        let b_if = b.next_ifname();
        // Created inside a's namespace with the peer placed directly in b's:
        // the pair never exists in the host's namespace.
        a.ip(&[
            "link", "add", &a_if, "type", "veth", "peer", "name", &b_if, "netns", &b.netns,
        ])?;
        for (host, ifname, addr) in [(a, &a_if, a_addr), (b, &b_if, b_addr)] {
            host.ip(&["addr", "add", addr, "dev", ifname])?;
            host.ip(&["link", "set", ifname, "up"])?;
        }
        Ok(Link {
            a: End::new(a, &a_if, a_addr)?,
            b: End::new(b, &b_if, b_addr)?,
        })
    }

    /// A switch: a host whose only job is a bridge, `br0`. Hosts join it
    /// with [`Lab::plug`], all on one Ethernet segment (a LAN where an
    /// address can move from one host to another with gratuitous ARP).
    pub fn switch(&mut self, name: &str) -> Result<Host> {
        let sw = self.host(name)?;
        sw.ip(&["link", "add", "br0", "type", "bridge"])?;
        sw.ip(&["link", "set", "br0", "up"])?;
        Ok(sw)
    }

    /// Connects `host` to `switch` with address `addr` (CIDR); returns the
    /// host's interface name.
    pub fn plug(&mut self, host: &Host, addr: &str, switch: &Host) -> Result<String> {
        let ifname = host.next_ifname();
        let port = switch.next_ifname();
        host.ip(&[
            "link",
            "add",
            &ifname,
            "type",
            "veth",
            "peer",
            "name",
            &port,
            "netns",
            &switch.netns,
        ])?;
        switch.ip(&["link", "set", &port, "master", "br0"])?;
        switch.ip(&["link", "set", &port, "up"])?;
        host.ip(&["addr", "add", addr, "dev", &ifname])?;
        host.ip(&["link", "set", &ifname, "up"])?;
        Ok(ifname)
    }

    /// Leaves everything in place when the lab is dropped (a demo's
    /// `--keep`); returns the commands that remove it.
    pub fn keep(self) -> Vec<String> {
        let mut cmds: Vec<String> = self
            .namespaces
            .iter()
            .map(|n| format!("ip netns pids {n} | xargs -r kill; ip netns del {n}"))
            .collect();
        cmds.extend(
            self.pin_dirs
                .iter()
                .map(|d| format!("rm -rf {}", d.display())),
        );
        cmds.push(format!("rm -rf {}", self.tmp.display()));
        // Marks the lab as left on purpose: the sweep of labs whose process
        // died leaves it alone.
        let _ = fs::write(self.tmp.join(KEPT), "");
        std::mem::forget(self);
        cmds
    }

    /// A unique directory path in bpffs for one greha's pins; whatever is
    /// left in it is removed with the lab.
    pub fn pin_dir(&mut self, name: &str) -> PathBuf {
        let dir = self.pin_path(name);
        if !self.pin_dirs.contains(&dir) {
            self.pin_dirs.push(dir.clone());
        }
        dir
    }

    fn pin_path(&self, name: &str) -> PathBuf {
        PathBuf::from(format!("/sys/fs/bpf/greha-test-{}-{name}", self.id))
    }

    /// The control socket of `host`'s greha.
    pub fn control(&self, host: &Host) -> PathBuf {
        self.tmp.join(format!("{}.sock", host.name))
    }

    /// A greha command in `host`, with the host's pin directory and
    /// control socket; add the subcommand and its arguments.
    pub fn greha(&self, host: &Host) -> Command {
        let pins = self.pin_path(&host.name);
        let mut cmd = host.command(greha_bin());
        cmd.arg("--pin-dir")
            .arg(pins)
            .arg("--control")
            .arg(self.control(host));
        cmd
    }

    /// `greha status --json` of `host`'s daemon.
    pub fn greha_status(&self, host: &Host) -> Result<serde_json::Value> {
        let out = run(self.greha(host).args(["status", "--json"]))?;
        Ok(serde_json::from_str(&out)?)
    }
}

impl Drop for Lab {
    fn drop(&mut self) {
        for e in teardown(&self.namespaces, &self.pin_dirs, &self.tmp) {
            eprintln!("lab teardown: {e}");
        }
    }
}

/// Name of the marker file in a kept lab's temp directory.
const KEPT: &str = "kept";

/// Kills the processes of the namespaces, removes them, the pin directories
/// and the temp directory; returns what could not be removed.
fn teardown(namespaces: &[String], pin_dirs: &[PathBuf], tmp: &Path) -> Vec<String> {
    let mut errors = Vec::new();
    for netns in namespaces {
        // Processes started with nsenter (and their children) are found by
        // namespace, whoever owns them.
        if let Ok(pids) = run(Command::new("ip").args(["netns", "pids", netns])) {
            for pid in pids.split_whitespace().filter_map(|p| p.parse().ok()) {
                let _ = kill(Pid::from_raw(pid), Signal::SIGKILL);
            }
        }
        if let Err(e) = run(Command::new("ip").args(["netns", "del", netns])) {
            errors.push(format!("{e:#}"));
        }
    }
    for dir in pin_dirs {
        match fs::remove_dir_all(dir) {
            Err(e) if e.kind() != ErrorKind::NotFound => {
                errors.push(format!("removing {}: {e}", dir.display()))
            }
            _ => {}
        }
    }
    let _ = fs::remove_dir_all(tmp);
    errors
}

/// A lab found on the machine whose process is gone: killed before its
/// teardown ran (a SIGKILL, a session that ended mid-run).
#[derive(Debug)]
pub struct Leftover {
    pub id: String,
    pub namespaces: Vec<String>,
    pub pin_dirs: Vec<PathBuf>,
    tmp: PathBuf,
}

impl Leftover {
    /// Removes it as its own teardown would have.
    pub fn remove(self) -> Result<()> {
        let errors = teardown(&self.namespaces, &self.pin_dirs, &self.tmp);
        ensure!(errors.is_empty(), "lab {}: {}", self.id, errors.join("; "));
        Ok(())
    }
}

/// The labs on this machine whose creating process no longer runs, except
/// the ones kept on purpose (`Lab::keep`). A lab id is `gh<pid hex>x<n>`,
/// so this needs no registry that a killed run could leave stale too.
pub fn leftover_labs() -> Result<Vec<Leftover>> {
    // (lab id, namespace or pin directory) of everything carrying a lab id.
    let mut found: Vec<(String, Option<String>, Option<PathBuf>)> = Vec::new();
    for line in run(Command::new("ip").args(["netns", "list"]))?.lines() {
        if let Some(netns) = line.split_whitespace().next()
            && let Some((id, _host)) = netns.split_once('-')
        {
            found.push((id.to_owned(), Some(netns.to_owned()), None));
        }
    }
    for e in fs::read_dir("/sys/fs/bpf").into_iter().flatten().flatten() {
        let name = e.file_name().to_string_lossy().into_owned();
        if let Some((id, _host)) = name
            .strip_prefix("greha-test-")
            .and_then(|rest| rest.split_once('-'))
        {
            found.push((id.to_owned(), None, Some(e.path())));
        }
    }
    for e in fs::read_dir(std::env::temp_dir())
        .into_iter()
        .flatten()
        .flatten()
    {
        let name = e.file_name().to_string_lossy().into_owned();
        if let Some(id) = name.strip_prefix("greha-lab-") {
            found.push((id.to_owned(), None, None));
        }
    }
    let mut labs: std::collections::BTreeMap<String, Leftover> = Default::default();
    for (id, netns, pin_dir) in found {
        let Some(pid) = id
            .strip_prefix("gh")
            .and_then(|rest| rest.split_once('x'))
            .and_then(|(pid, _)| u32::from_str_radix(pid, 16).ok())
        else {
            continue;
        };
        let tmp = std::env::temp_dir().join(format!("greha-lab-{id}"));
        if Path::new(&format!("/proc/{pid}")).exists() || tmp.join(KEPT).exists() {
            continue;
        }
        let lab = labs.entry(id.clone()).or_insert_with(|| Leftover {
            id,
            namespaces: Vec::new(),
            pin_dirs: Vec::new(),
            tmp,
        });
        lab.namespaces.extend(netns);
        lab.pin_dirs.extend(pin_dir);
    }
    Ok(labs.into_values().collect())
}

/// One host of a lab: a network namespace.
pub struct Host {
    pub name: String,
    netns: String,
    next_if: std::cell::Cell<u32>,
}

impl Host {
    /// Path of the namespace, for `nsenter --net=` and setns.
    pub fn netns_path(&self) -> PathBuf {
        PathBuf::from("/run/netns").join(&self.netns)
    }

    pub fn netns(&self) -> &str {
        &self.netns
    }

    fn next_ifname(&self) -> String {
        let n = self.next_if.get();
        self.next_if.set(n + 1);
        format!("eth{n}")
    }

    /// A command that runs `program` inside this host. nsenter changes only
    /// the network namespace, so bpffs pins stay visible (`ip netns exec`
    /// would remount /sys and hide them).
    pub fn command(&self, program: impl AsRef<std::ffi::OsStr>) -> Command {
        let mut cmd = Command::new("nsenter");
        cmd.arg(format!("--net={}", self.netns_path().display()))
            .arg("--")
            .arg(program);
        cmd
    }

    /// `ip -n <this host> ARGS`.
    pub fn ip(&self, args: &[&str]) -> Result<String> {
        run(Command::new("ip").arg("-n").arg(&self.netns).args(args))
    }

    /// Turns IPv6 on (hosts start without it), without duplicate address
    /// detection: a link-local address is usable at once. Interfaces made
    /// after this call get it.
    pub fn enable_ipv6(&self) -> Result<()> {
        for knob in ["all", "default"] {
            self.sysctl(&format!("net.ipv6.conf.{knob}.disable_ipv6"), "0")?;
            self.sysctl(&format!("net.ipv6.conf.{knob}.accept_dad"), "0")?;
        }
        Ok(())
    }

    pub fn sysctl(&self, key: &str, value: &str) -> Result<()> {
        run(self
            .command("sysctl")
            .args(["-q", "-w", &format!("{key}={value}")]))?;
        Ok(())
    }

    /// Runs `f` on a thread that has entered this host's namespace; sockets
    /// it opens belong to the host.
    pub fn enter<R: Send>(&self, f: impl FnOnce() -> R + Send) -> Result<R> {
        let ns = fs::File::open(self.netns_path())
            .with_context(|| format!("opening {}", self.netns_path().display()))?;
        thread::scope(|s| {
            s.spawn(move || {
                setns(&ns, CloneFlags::CLONE_NEWNET).context("setns")?;
                Ok(f())
            })
            .join()
            .expect("lab thread panicked")
        })
    }

    /// Runs a Python 3 script with Debian's interpreter (the one
    /// python3-scapy is installed for, whatever python3 PATH finds) in this
    /// host and returns its stdout.
    pub fn python(&self, lab: &Lab, script: &str) -> Result<String> {
        let path = lab.tmp().join(format!("{}-{}.py", self.name, unique_id()));
        fs::write(&path, script)?;
        run(self.command("/usr/bin/python3").arg(&path))
    }

    /// Starts a long-lived process in this host, its output going to log
    /// files in the lab's directory. With `notify`, it gets a
    /// `NOTIFY_SOCKET` as under systemd, for [`Proc::wait_ready`].
    pub fn spawn(&self, lab: &Lab, mut cmd: Command, notify: bool) -> Result<Proc> {
        let tag = format!("{}-{}", self.name, unique_id());
        let log = lab.tmp().join(format!("{tag}.log"));
        let out = fs::File::create(&log)?;
        cmd.stdin(Stdio::null())
            .stdout(out.try_clone()?)
            .stderr(out);
        let notify = if notify {
            let path = lab.tmp().join(format!("{tag}.notify"));
            let sock =
                UnixDatagram::bind(&path).with_context(|| format!("binding {}", path.display()))?;
            cmd.env("NOTIFY_SOCKET", &path);
            Some(sock)
        } else {
            None
        };
        let child = cmd
            .spawn()
            .with_context(|| format!("cannot start {cmd:?}"))?;
        Ok(Proc {
            child,
            log,
            notify,
            what: format!("{cmd:?}"),
        })
    }
}

/// A process running in a lab host; killed when dropped.
pub struct Proc {
    child: Child,
    log: PathBuf,
    notify: Option<UnixDatagram>,
    what: String,
}

impl Proc {
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// What the process printed so far.
    pub fn log(&self) -> String {
        fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Waits for the process to send READY=1 on its notify socket; fails at
    /// once, with its log, if it exits first.
    pub fn wait_ready(&mut self, timeout: Duration) -> Result<()> {
        self.wait_notify("READY=1", timeout)
    }

    /// Waits for the process to send `line` (e.g. WATCHDOG=1) on its
    /// notify socket.
    pub fn wait_notify(&mut self, line: &str, timeout: Duration) -> Result<()> {
        let sock = self
            .notify
            .as_ref()
            .context("process was spawned without a notify socket")?;
        sock.set_read_timeout(Some(Duration::from_millis(50)))?;
        let deadline = Instant::now() + timeout;
        let mut buf = [0u8; 4096];
        loop {
            match sock.recv(&mut buf) {
                Ok(n) => {
                    let msg = String::from_utf8_lossy(&buf[..n]);
                    if msg.lines().any(|l| l == line) {
                        return Ok(());
                    }
                }
                // EINTR: a signal to this process, not a failure to wait.
                Err(e)
                    if matches!(
                        e.kind(),
                        ErrorKind::WouldBlock | ErrorKind::TimedOut | ErrorKind::Interrupted
                    ) => {}
                Err(e) => return Err(e).context("reading the notify socket"),
            }
            if let Some(status) = self.child.try_wait()? {
                bail!(
                    "{} exited ({status}) before it sent {line}:\n{}",
                    self.what,
                    self.log()
                );
            }
            if Instant::now() >= deadline {
                bail!(
                    "{} sent no {line} within {timeout:?}:\n{}",
                    self.what,
                    self.log()
                );
            }
        }
    }

    /// Waits until the process has printed `needle` (e.g. tshark's
    /// "Capturing on"); fails at once, with its log, if it exits first.
    pub fn wait_for_output(&mut self, needle: &str, timeout: Duration) -> Result<()> {
        let what = format!("{needle:?} from {}", self.what);
        wait_until(timeout, &what, || {
            if self.log().contains(needle) {
                return Ok(true);
            }
            if let Some(status) = self.child.try_wait()? {
                bail!("exited ({status}) first:\n{}", self.log());
            }
            Ok(false)
        })
    }

    /// Sends SIGTERM and waits (bounded) for the exit.
    pub fn terminate(&mut self, timeout: Duration) -> Result<ExitStatus> {
        self.signal(Signal::SIGTERM)?;
        self.wait(timeout)
    }

    pub fn signal(&self, sig: Signal) -> Result<()> {
        kill(Pid::from_raw(self.child.id() as i32), sig).context("kill")?;
        Ok(())
    }

    /// Waits for the process to exit, at most `timeout`.
    pub fn wait(&mut self, timeout: Duration) -> Result<ExitStatus> {
        let mut status = None;
        wait_until(timeout, &format!("{} to exit", self.what), || {
            status = self.child.try_wait()?;
            Ok(status.is_some())
        })?;
        Ok(status.expect("checked by wait_until"))
    }
}

impl Proc {
    /// Leaves the process running when this handle is dropped.
    pub fn detach(self) {
        std::mem::forget(self);
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// One end of a link.
pub struct End {
    pub netns: String,
    pub ifname: String,
    /// The address without its prefix length.
    pub addr: String,
    pub mac: String,
}

impl End {
    fn new(host: &Host, ifname: &str, cidr: &str) -> Result<Self> {
        let json = host.ip(&["-j", "link", "show", "dev", ifname])?;
        let v: serde_json::Value = serde_json::from_str(&json)?;
        let mac = v[0]["address"]
            .as_str()
            .context("no MAC address in `ip -j link show`")?
            .to_owned();
        Ok(Self {
            netns: host.netns.clone(),
            ifname: ifname.to_owned(),
            addr: cidr.split('/').next().unwrap_or(cidr).to_owned(),
            mac,
        })
    }
}

/// A veth link between two hosts.
pub struct Link {
    pub a: End,
    pub b: End,
}

impl Link {
    /// Permanent neighbour entries both ways, so no ARP crosses the link and
    /// a test can count its frames exactly.
    pub fn pin_neighbours(&self) -> Result<()> {
        for (here, there) in [(&self.a, &self.b), (&self.b, &self.a)] {
            run(Command::new("ip").args([
                "-n",
                &here.netns,
                "neigh",
                "replace",
                &there.addr,
                "lladdr",
                &there.mac,
                "dev",
                &here.ifname,
                "nud",
                "permanent",
            ]))?;
        }
        Ok(())
    }
}

/// The pinned programs' directory (`progs-<hash>`) under a pin directory.
pub fn progs_dir(pins: &Path) -> Result<PathBuf> {
    fs::read_dir(pins)?
        .flatten()
        .map(|e| e.path())
        .find(|p| {
            p.file_name()
                .is_some_and(|n| n.to_string_lossy().starts_with("progs-"))
        })
        .context("no pinned programs")
}

/// Runs a pinned BPF program once per BPF_PROG_TEST_RUN call, `runs`
/// times, on a fresh copy of `frame` each time: with the kernel's own
/// `repeat`, a program that rewrites the packet would see its own output
/// from the second run on. Returns the last verdict and the kernel-timed
/// average in nanoseconds. Runs in the calling thread's network namespace
/// (FIB lookups, the ctx's ifindex): call it from [`Host::enter`].
pub fn prog_test_run(
    prog: &Path,
    frame: &[u8],
    ctx: Option<&[u8]>,
    runs: u32,
) -> Result<(u32, f64)> {
    use aya::{
        TestRun as _, TestRunOptions,
        programs::{ProgramInfo, SchedClassifier, Xdp},
    };
    use aya_obj::generated::bpf_prog_type;
    let what = || format!("BPF_PROG_TEST_RUN {}", prog.display());
    let xdp = ProgramInfo::from_pin(prog)
        .with_context(what)?
        .program_type()
        == bpf_prog_type::BPF_PROG_TYPE_XDP;
    let (xdp_prog, tc_prog) = if xdp {
        (
            Some(
                Xdp::from_pin(prog, aya_obj::programs::XdpAttachType::Interface)
                    .with_context(what)?,
            ),
            None,
        )
    } else {
        (
            None,
            Some(SchedClassifier::from_pin(prog).with_context(what)?),
        )
    };
    let mut total = Duration::ZERO;
    let mut retval = 0;
    let mut out = vec![0u8; frame.len() + 256];
    for _ in 0..runs {
        let opts = TestRunOptions {
            data_in: Some(frame),
            data_out: Some(&mut out),
            ctx_in: ctx,
            ..TestRunOptions::new()
        };
        let r = match (&xdp_prog, &tc_prog) {
            (Some(p), _) => p.test_run(opts),
            (_, Some(p)) => p.test_run(opts),
            _ => unreachable!("one of them is loaded"),
        }
        .with_context(what)?;
        total += r.duration;
        retval = r.return_value;
    }
    Ok((retval, total.as_nanos() as f64 / f64::from(runs.max(1))))
}

/// Routers A (203.0.113.2/24) and B (.3) on one switch: the LAN of the
/// tests that need nothing more.
pub fn lan_pair() -> Result<(Lab, Host, Host)> {
    let mut lab = Lab::new()?;
    let a = lab.host("a")?;
    let b = lab.host("b")?;
    let sw = lab.switch("lan")?;
    lab.plug(&a, "203.0.113.2/24", &sw)?;
    lab.plug(&b, "203.0.113.3/24", &sw)?;
    Ok((lab, a, b))
}

/// keepalived 2.2.7 in `host` with one `vrrp_instance VI_1 { body }`, its
/// own pid files under the lab's `ka-NAME/` (so several run on one
/// machine), VRRP only, logging to the console; ready once it prints
/// `ready`.
pub fn start_keepalived(
    lab: &Lab,
    host: &Host,
    name: &str,
    body: &str,
    ready: &str,
) -> Result<Proc> {
    start_keepalived_conf(
        lab,
        host,
        name,
        &format!("vrrp_instance VI_1 {{\n {body}\n}}\n"),
        ready,
    )
}

/// keepalived 2.2.7 in `host` with the configuration `text`, as
/// [`start_keepalived`] runs it.
pub fn start_keepalived_conf(
    lab: &Lab,
    host: &Host,
    name: &str,
    text: &str,
    ready: &str,
) -> Result<Proc> {
    let dir = lab.tmp().join(format!("ka-{name}"));
    fs::create_dir_all(&dir)?;
    fs::write(dir.join("k.conf"), text)?;
    let mut cmd = host.command("keepalived");
    cmd.args(["-n", "-l", "-P", "-f"])
        .arg(dir.join("k.conf"))
        .arg("-p")
        .arg(dir.join("k.pid"))
        .arg("-r")
        .arg(dir.join("v.pid"));
    let mut p = host.spawn(lab, cmd, false)?;
    p.wait_for_output(ready, SHORT)?;
    Ok(p)
}

/// Sends `len` pseudo-random bytes over TCP from `from` to `to`, which
/// listens on `addr` (an address and port), and checks that they arrive
/// byte for byte; each socket operation waits at most `timeout`.
pub fn tcp_transfer(from: &Host, to: &Host, addr: &str, len: u32, timeout: Duration) -> Result<()> {
    use std::io::{Read as _, Write as _};
    let data: Vec<u8> = (0..len)
        .map(|i: u32| (i.wrapping_mul(2_654_435_761) >> 13) as u8)
        .collect();
    let listener = to.enter(|| std::net::TcpListener::bind(addr))??;
    let received = thread::scope(|s| -> Result<Vec<u8>> {
        let rx = s.spawn(|| -> Result<Vec<u8>> {
            // Bounded: if the sender never connects, accept would block
            // forever and the scope with it.
            use std::os::fd::AsFd as _;
            let mut fds = [nix::poll::PollFd::new(
                listener.as_fd(),
                nix::poll::PollFlags::POLLIN,
            )];
            let ms = u16::try_from(timeout.as_millis()).unwrap_or(u16::MAX);
            ensure!(
                nix::poll::poll(&mut fds, ms)? == 1,
                "no connection to {addr} within {timeout:?}"
            );
            let (mut conn, _) = listener.accept()?;
            conn.set_read_timeout(Some(timeout))?;
            let mut buf = Vec::new();
            conn.read_to_end(&mut buf)?;
            Ok(buf)
        });
        from.enter(|| -> Result<()> {
            let mut conn = std::net::TcpStream::connect_timeout(&addr.parse()?, timeout)?;
            conn.set_write_timeout(Some(timeout))?;
            conn.write_all(&data)?;
            Ok(())
        })??;
        rx.join().expect("receiver panicked")
    })?;
    ensure!(
        received.len() == data.len(),
        "received {} of {} bytes",
        received.len(),
        data.len()
    );
    ensure!(received == data, "the bytes arrived altered");
    Ok(())
}
