//! `cargo xtask demo`: the seed's two-server failover, in network
//! namespaces on this machine. Servers A and B share an underlay and a LAN;
//! greha on each runs a gretap tunnel to the other and VRRP instance VI_1
//! over it (A priority 150, B 100), with the VIP on the LAN, where a client
//! fetches from a small HTTP service on each server every 50 ms.
use std::{
    io::{Read as _, Write as _},
    net::{SocketAddr, TcpStream},
    path::{Path, PathBuf},
    sync::{
        Arc, Mutex,
        atomic::{AtomicBool, Ordering},
    },
    thread,
    time::{Duration, Instant},
};

use anyhow::{Context as _, Result, bail, ensure};
use greha_tests::{Host, Lab, Proc, SHORT, run, wait_until};

const A_UNDERLAY: &str = "198.51.100.1";
const B_UNDERLAY: &str = "198.51.100.2";
const A_TUNNEL: &str = "192.0.2.1";
const B_TUNNEL: &str = "192.0.2.2";
const VIP: &str = "203.0.113.10";

static INTERRUPTED: AtomicBool = AtomicBool::new(false);

extern "C" fn on_sigint(_: libc::c_int) {
    INTERRUPTED.store(true, Ordering::SeqCst);
}

fn check_interrupted() -> Result<()> {
    if INTERRUPTED.load(Ordering::SeqCst) {
        bail!("interrupted");
    }
    Ok(())
}

fn step(msg: &str) {
    println!("demo: {msg}");
}

/// One fetch of the client: who answered (None: no answer).
#[derive(Clone, Copy)]
struct Sample {
    at: Instant,
    server: Option<char>,
}

/// The client: GET http://VIP/ every 50 ms, from its own namespace.
struct Client {
    samples: Arc<Mutex<Vec<Sample>>>,
    stop: Arc<AtomicBool>,
    thread: Option<thread::JoinHandle<()>>,
}

impl Client {
    fn start(host: &Host) -> Result<Self> {
        let ns = std::fs::File::open(host.netns_path())?;
        let samples = Arc::new(Mutex::new(Vec::new()));
        let stop = Arc::new(AtomicBool::new(false));
        let (s, st) = (Arc::clone(&samples), Arc::clone(&stop));
        let thread = thread::spawn(move || {
            if nix::sched::setns(&ns, nix::sched::CloneFlags::CLONE_NEWNET).is_err() {
                return;
            }
            let addr: SocketAddr = format!("{VIP}:80").parse().expect("literal");
            while !st.load(Ordering::SeqCst) {
                let t0 = Instant::now();
                let server = fetch(&addr);
                s.lock().expect("poisoned").push(Sample { at: t0, server });
                let spent = t0.elapsed();
                if spent < Duration::from_millis(50) {
                    thread::sleep(Duration::from_millis(50) - spent);
                }
            }
        });
        Ok(Self {
            samples,
            stop,
            thread: Some(thread),
        })
    }

    /// Waits until `server` answers, and returns the gap: the time from
    /// `since` during which nobody answered.
    fn wait_for(&self, server: char, since: Instant, timeout: Duration) -> Result<Duration> {
        wait_until(timeout, &format!("server {server} to answer"), || {
            check_interrupted()?;
            Ok(self
                .samples
                .lock()
                .expect("poisoned")
                .iter()
                .any(|s| s.at >= since && s.server == Some(server)))
        })?;
        let samples = self.samples.lock().expect("poisoned");
        let after: Vec<&Sample> = samples.iter().filter(|s| s.at >= since).collect();
        // From the first unanswered fetch to the first answer from `server`.
        let first_fail = after.iter().find(|s| s.server.is_none()).map(|s| s.at);
        let back = after
            .iter()
            .find(|s| s.server == Some(server))
            .map(|s| s.at)
            .expect("waited for it");
        Ok(first_fail.map_or(Duration::ZERO, |f| back.saturating_duration_since(f)))
    }
}

impl Drop for Client {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

fn fetch(addr: &SocketAddr) -> Option<char> {
    let mut conn = TcpStream::connect_timeout(addr, Duration::from_millis(40)).ok()?;
    conn.set_read_timeout(Some(Duration::from_millis(200)))
        .ok()?;
    conn.write_all(b"GET / HTTP/1.0\r\nHost: vip\r\n\r\n")
        .ok()?;
    let mut body = String::new();
    conn.read_to_string(&mut body).ok()?;
    body.lines()
        .last()
        .and_then(|l| l.strip_prefix("server "))
        .and_then(|n| n.chars().next())
}

/// The small HTTP service standing in for the seed's nginx: answers
/// "server X" on port 80.
fn http_service(lab: &Lab, host: &Host, name: char) -> Result<Proc> {
    let dir = lab.tmp().join(format!("www-{name}"));
    std::fs::create_dir_all(&dir)?;
    std::fs::write(dir.join("index.html"), format!("server {name}\n"))?;
    let mut cmd = host.command("/usr/bin/python3");
    cmd.args([
        "-u",
        "-m",
        "http.server",
        "80",
        "--bind",
        "0.0.0.0",
        "--directory",
    ])
    .arg(&dir);
    let mut p = host.spawn(lab, cmd, false)?;
    p.wait_for_output("Serving HTTP", SHORT)?;
    Ok(p)
}

struct Server<'a> {
    host: &'a Host,
    pins: PathBuf,
    control: PathBuf,
    args: Vec<String>,
}

impl Server<'_> {
    fn start(&self, lab: &Lab, greha: &Path) -> Result<Proc> {
        let mut cmd = self.host.command(greha);
        cmd.arg("--pin-dir")
            .arg(&self.pins)
            .arg("--control")
            .arg(&self.control)
            .arg("run")
            .args(&self.args);
        let mut p = self.host.spawn(lab, cmd, true)?;
        p.wait_ready(SHORT)?;
        Ok(p)
    }

    fn state(&self, greha: &Path) -> Result<String> {
        let out = run(self
            .host
            .command(greha)
            .arg("--control")
            .arg(&self.control)
            .args(["status", "--json"])
            .arg("--pin-dir")
            .arg(&self.pins))?;
        let v: serde_json::Value = serde_json::from_str(&out)?;
        Ok(v["vrrp"][0]["state"].as_str().unwrap_or("").to_owned())
    }
}

pub struct Options {
    pub keep: bool,
    /// VRRP advertisement interval in seconds (whole: VRRPv2 as in the
    /// seed; fractional: VRRPv3).
    pub advert_interval: f64,
}

pub fn run_demo(greha: &Path, opts: &Options) -> Result<()> {
    // SAFETY: the handler only stores to an atomic.
    unsafe { libc::signal(libc::SIGINT, on_sigint as *const () as libc::sighandler_t) };
    let adv = opts.advert_interval;
    let cs = (adv * 100.0).round() as u32;
    ensure!(
        (1..=4095).contains(&cs),
        "--advert-interval {adv} is out of range (0.01 to 40.95 s)"
    );
    let (version, auth) = if cs.is_multiple_of(100) {
        ("2", " auth-pass 1111")
    } else {
        ("3", "")
    };
    // Skew_Time and Master_Down_Interval of B (priority 100), the longest
    // takeover: v2 in seconds, v3 in whole centiseconds (RFC 3768, 5798).
    let skew = if version == "2" {
        Duration::from_nanos(156 * 1_000_000_000 / 256)
    } else {
        Duration::from_millis(u64::from(cs * 156 / 256) * 10)
    };
    let master_down = Duration::from_millis(u64::from(cs) * 30) + skew;

    let mut lab = Lab::new()?;
    let a = lab.host("a")?;
    let b = lab.host("b")?;
    let client = lab.host("client")?;
    let lan = lab.switch("lan")?;
    lab.link(
        &a,
        &format!("{A_UNDERLAY}/24"),
        &b,
        &format!("{B_UNDERLAY}/24"),
    )?;
    let a_lan = lab.plug(&a, "203.0.113.2/24", &lan)?;
    let b_lan = lab.plug(&b, "203.0.113.3/24", &lan)?;
    lab.plug(&client, "203.0.113.100/24", &lan)?;
    step(&format!(
        "lab up: servers A and B (underlay {A_UNDERLAY} <-> {B_UNDERLAY}), client on the LAN 203.0.113.0/24"
    ));

    let mut server = |host, name: &str, local, remote, tunnel_ip, prio: u8, lan_if: &str| Server {
        host,
        pins: lab.pin_dir(name),
        control: lab.tmp().join(format!("{name}.sock")),
        args: vec![
            "--tunnel".into(),
            format!("gretap1 mode gretap local {local} remote {remote} address {tunnel_ip}/24"),
            "--vrrp".into(),
            format!(
                "VI_1 interface gretap1 vrid 51 priority {prio} version {version} advert-int {adv}{auth} vip {VIP}/24 dev {lan_if}"
            ),
        ],
    };
    let sa = server(&a, "a", A_UNDERLAY, B_UNDERLAY, A_TUNNEL, 150, &a_lan);
    let sb = server(&b, "b", B_UNDERLAY, A_UNDERLAY, B_TUNNEL, 100, &b_lan);
    let _www_a = http_service(&lab, &a, 'A')?;
    let _www_b = http_service(&lab, &b, 'B')?;
    let mut greha_a = sa.start(&lab, greha)?;
    let greha_b = sb.start(&lab, greha)?;
    step(&format!(
        "greha running on A (priority 150) and B (priority 100): gretap1 on the eBPF datapath, VRRPv{version} every {adv} s, VIP {VIP} on the LAN"
    ));

    let t0 = Instant::now();
    run(a.command("ping").args(["-c", "1", "-W", "2", B_TUNNEL]))
        .context("no ping across the tunnel")?;
    step(&format!(
        "tunnel up: ping {A_TUNNEL} -> {B_TUNNEL} across gretap1 answered in {:?}",
        t0.elapsed()
    ));

    wait_until(master_down + SHORT, "A to become master", || {
        check_interrupted()?;
        Ok(sa.state(greha)? == "master")
    })?;
    step("A is master, B is backup");

    let client_http = Client::start(&client)?;
    client_http.wait_for('A', Instant::now(), SHORT)?;
    step("client fetching http://203.0.113.10/ every 50 ms: server A answers");

    let mut summary = Vec::new();
    // A dies hard: its greha killed, its LAN link down (the whole server
    // is gone, VIP and web server with it).
    let stop = Instant::now();
    greha_a.signal(nix::sys::signal::Signal::SIGKILL)?;
    greha_a.wait(SHORT)?;
    a.ip(&["link", "set", &a_lan, "down"])?;
    step("A's greha killed (kill -9) and A off the LAN");
    let gap = client_http.wait_for('B', stop, master_down + SHORT)?;
    step(&format!(
        "B took over: server B answers after a gap of {} ms (Master_Down_Interval {} ms)",
        gap.as_millis(),
        master_down.as_millis()
    ));
    summary.push(("A killed, B takes over", gap, master_down));

    // A comes back: greha removes the VIP the crash left, starts as
    // backup, and preempts B (higher priority).
    a.ip(&["link", "set", &a_lan, "up"])?;
    let back = Instant::now();
    greha_a = sa.start(&lab, greha)?;
    step("A back: greha removed the VIP its crash left behind and starts as backup");
    let gap_preempt = client_http.wait_for('A', back, master_down + SHORT)?;
    wait_until(SHORT, "A to be master again", || {
        Ok(sa.state(greha)? == "master")
    })?;
    step(&format!(
        "A preempted B (priority 150 > 100): server A answers again, gap {} ms",
        gap_preempt.as_millis()
    ));
    summary.push(("A returns, preempts", gap_preempt, Duration::ZERO));

    // A graceful stop: A resigns with priority 0, B takes over after
    // Skew_Time instead of Master_Down_Interval.
    let graceful = Instant::now();
    let status = greha_a.terminate(SHORT)?;
    ensure!(status.success(), "greha on A exited {status}");
    let gap_graceful = client_http.wait_for('B', graceful, master_down + SHORT)?;
    step(&format!(
        "graceful stop of A (SIGTERM, priority 0): B answers after a gap of {} ms (Skew_Time {} ms)",
        gap_graceful.as_millis(),
        skew.as_millis()
    ));
    summary.push(("A stops gracefully", gap_graceful, skew));
    ensure!(
        gap_graceful < gap,
        "the graceful stop ({gap_graceful:?}) was not shorter than the crash ({gap:?})"
    );
    drop(client_http);
    ensure!(sb.state(greha)? == "master", "B is not master at the end");

    println!();
    println!("{:<26} {:>10} {:>14}", "STEP", "GAP ms", "RFC BOUND ms");
    for (what, gap, bound) in &summary {
        let bound = if bound.is_zero() {
            "-".to_owned()
        } else {
            bound.as_millis().to_string()
        };
        println!("{:<26} {:>10} {:>14}", what, gap.as_millis(), bound);
    }
    println!();
    println!("live counters (bpftool reads the pinned BTF maps by field name):");
    for s in [&sa, &sb] {
        println!(
            "  bpftool map dump pinned {}/GREHA_TUNNEL_COUNTERS",
            s.pins.display()
        );
    }
    println!(
        "  nsenter --net={} {} --pin-dir {} --control {} status",
        b.netns_path().display(),
        greha.display(),
        sb.pins.display(),
        sb.control.display()
    );
    if opts.keep {
        greha_b.detach();
        let cmds = lab.keep();
        println!();
        println!("--keep: the lab stays up; remove it with:");
        for c in cmds {
            println!("  {c}");
        }
    } else {
        drop(greha_b);
        drop(lab);
        step("lab removed");
    }
    println!("demo: ok");
    Ok(())
}
