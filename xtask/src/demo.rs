//! `cargo xtask demo`: the seed's two-server failover, in network
//! namespaces on this machine. Servers A and B share an underlay and a LAN;
//! greha on each runs a gretap tunnel to the other and VRRP instance VI_1
//! over it (A priority 150, B 100), with the VIP on the LAN. A client
//! there probes the VIP every millisecond (a small UDP echo service on each
//! server answers with its name) and fetches from the web server standing
//! in for nginx: each failover's gap is what that client saw. With
//! `--ipv6` the scenario runs dual stack: the tunnel is ip6gretap over an
//! IPv6 underlay, and instance VI_6 (VRRPv3 for IPv6, the same VRID) moves
//! an IPv6 VIP on the LAN beside VI_1's IPv4 one, probed the same way.
use std::{
    net::SocketAddr,
    path::{Path, PathBuf},
    sync::atomic::{AtomicBool, Ordering},
    time::{Duration, Instant},
};

use anyhow::{Context as _, Result, bail, ensure};
use greha_tests::{
    Host, Lab, Proc, SHORT,
    probe::{ECHO_PORT, Echo, Prober, gap},
    run, wait_until,
    web::{fetch, http_service},
};

use crate::timeline::{Timeline, write_svg};

const A_UNDERLAY: &str = "198.51.100.1";
const B_UNDERLAY: &str = "198.51.100.2";
const A_TUNNEL: &str = "192.0.2.1";
const B_TUNNEL: &str = "192.0.2.2";
const VIP: &str = "203.0.113.10";
const A_UNDERLAY6: &str = "2001:db8:1::1";
const B_UNDERLAY6: &str = "2001:db8:1::2";
const VIP6: &str = "2001:db8::10";

/// What the demo tolerates over an RFC bound on a busy machine (the
/// failover benchmark measures the goal of 5 ms).
const CHECK_SLACK: Duration = Duration::from_millis(50);

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

/// Waits until `server` answers a probe sent after `since`; Ctrl-C ends
/// the wait (and the demo, cleanly).
fn answers(prober: &Prober, server: char, since: Instant, timeout: Duration) -> Result<()> {
    wait_until(timeout, &format!("server {server} to answer"), || {
        check_interrupted()?;
        Ok(prober
            .probes()
            .iter()
            .any(|p| p.sent >= since && p.by == Some(server)))
    })
}

struct Server<'a> {
    host: &'a Host,
    pins: PathBuf,
    control: PathBuf,
    args: Vec<String>,
}

impl Server<'_> {
    /// greha in the server's host, with its pins and control socket.
    fn command(&self, greha: &Path) -> std::process::Command {
        let mut cmd = self.host.command(greha);
        cmd.arg("--pin-dir")
            .arg(&self.pins)
            .arg("--control")
            .arg(&self.control);
        cmd
    }

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

    /// The state of every instance when they agree, else "mixed".
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
        let states: Vec<&str> = v["vrrp"]
            .as_array()
            .map(|a| {
                a.iter()
                    .map(|i| i["state"].as_str().unwrap_or(""))
                    .collect()
            })
            .unwrap_or_default();
        Ok(match states.split_first() {
            Some((first, rest)) if rest.iter().all(|s| s == first) => (*first).to_owned(),
            _ => "mixed".to_owned(),
        })
    }
}

pub struct Options {
    pub keep: bool,
    /// Where the timelines (SVG) go.
    pub out_dir: PathBuf,
    /// VRRP advertisement interval in seconds (whole: VRRPv2 as in the
    /// seed; fractional: VRRPv3).
    pub advert_interval: f64,
    /// Dual stack over an ip6gretap underlay (VRRPv3 for both families).
    pub ipv6: bool,
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
    // VRRPv2 as in the seed, unless the interval or IPv6 needs v3.
    let (version, auth) = if cs.is_multiple_of(100) && !opts.ipv6 {
        ("2", " auth-pass 1111")
    } else {
        ("3", "")
    };
    let ipv6 = opts.ipv6;
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
    if ipv6 {
        for h in [&a, &b, &client, &lan] {
            h.enable_ipv6()?;
        }
    }
    let (ua, ub, plen, mode) = if ipv6 {
        (A_UNDERLAY6, B_UNDERLAY6, 64, "ip6gretap")
    } else {
        (A_UNDERLAY, B_UNDERLAY, 24, "gretap")
    };
    lab.link(&a, &format!("{ua}/{plen}"), &b, &format!("{ub}/{plen}"))?;
    let a_lan = lab.plug(&a, "203.0.113.2/24", &lan)?;
    let b_lan = lab.plug(&b, "203.0.113.3/24", &lan)?;
    let c_lan = lab.plug(&client, "203.0.113.100/24", &lan)?;
    if ipv6 {
        for (h, dev, n) in [(&a, &a_lan, 2), (&b, &b_lan, 3), (&client, &c_lan, 100)] {
            h.ip(&["addr", "add", &format!("2001:db8::{n}/64"), "dev", dev])?;
        }
    }
    step(&format!(
        "lab up: servers A and B (underlay {ua} <-> {ub}), client on the LAN 203.0.113.0/24{}",
        if ipv6 { " and 2001:db8::/64" } else { "" }
    ));

    let mut server = |host, name: &str, local, remote, tunnel_ip, prio: u8, lan_if: &str| {
        let mut args = vec![
            "--tunnel".into(),
            format!("gretap1 mode {mode} local {local} remote {remote} address {tunnel_ip}/24"),
            "--vrrp".into(),
            format!(
                "VI_1 interface gretap1 vrid 51 priority {prio} version {version} advert-int {adv}{auth} vip {VIP}/24 dev {lan_if}"
            ),
        ];
        if ipv6 {
            args.push("--vrrp".into());
            args.push(format!(
                "VI_6 interface gretap1 vrid 51 priority {prio} advert-int {adv} vip {VIP6}/64 dev {lan_if}"
            ));
        }
        Server {
            host,
            pins: lab.pin_dir(name),
            control: lab.tmp().join(format!("{name}.sock")),
            args,
        }
    };
    let sa = server(&a, "a", ua, ub, A_TUNNEL, 150, &a_lan);
    let sb = server(&b, "b", ub, ua, B_TUNNEL, 100, &b_lan);
    let instances: &[&str] = if ipv6 { &["VI_1", "VI_6"] } else { &["VI_1"] };
    let _www_a = http_service(&lab, &a, 'A')?;
    let _www_b = http_service(&lab, &b, 'B')?;
    let _echo_a = Echo::start(&a, 'A')?;
    let _echo_b = Echo::start(&b, 'B')?;
    let mut greha_a = sa.start(&lab, greha)?;
    let greha_b = sb.start(&lab, greha)?;
    step(&format!(
        "greha running on A (priority 150) and B (priority 100): gretap1 ({mode}) on the eBPF datapath, VRRPv{version} every {adv} s, VIP {VIP}{} on the LAN",
        if ipv6 {
            format!(" and {VIP6}")
        } else {
            String::new()
        }
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

    let vip: SocketAddr = format!("{VIP}:{ECHO_PORT}").parse()?;
    let web: SocketAddr = format!("{VIP}:80").parse()?;
    let prober = Prober::start(&client, vip, Duration::from_millis(1))?;
    prober.wait_for('A', Instant::now(), SHORT)?;
    // The IPv6 VIP, probed the same way.
    let prober6 = match ipv6 {
        true => {
            let vip6: SocketAddr = format!("[{VIP6}]:{ECHO_PORT}").parse()?;
            let p = Prober::start(&client, vip6, Duration::from_millis(1))?;
            p.wait_for('A', Instant::now(), SHORT)?;
            Some(p)
        }
        false => None,
    };
    // Both probers see `server` answer after `since`.
    let answered = |server: char, since: Instant, timeout: Duration| -> Result<()> {
        answers(&prober, server, since, timeout)?;
        if let Some(p6) = &prober6 {
            answers(p6, server, since, timeout)?;
        }
        Ok(())
    };
    let serves = |want: char| -> Result<()> {
        let got = client.enter(|| fetch(&web, Duration::from_secs(2)).server())?;
        ensure!(
            got == Some(want),
            "http://{VIP}/ answered by {got:?}, not {want}"
        );
        Ok(())
    };
    serves('A')?;
    step(&format!(
        "client probing {VIP}{} every 1 ms (UDP echo) and fetching http://{VIP}/: server A answers",
        if ipv6 {
            format!(" and {VIP6}")
        } else {
            String::new()
        }
    ));

    // (what, when, who serves after it, the RFC's bound)
    let mut events: Vec<(&str, Instant, char, Option<Duration>)> = Vec::new();
    // A dies hard: its greha killed, its LAN link down (the whole server
    // is gone, VIP and web server with it).
    // Off the LAN first: from that instant no client reaches A, as when
    // a server dies (A's adverts, over the tunnel, stop with the kill).
    let stop = Instant::now();
    a.ip(&["link", "set", &a_lan, "down"])?;
    greha_a.signal(nix::sys::signal::Signal::SIGKILL)?;
    greha_a.wait(SHORT)?;
    step("A off the LAN and its greha killed (kill -9)");
    answered('B', stop, master_down + SHORT)?;
    serves('B')?;
    step(&format!(
        "B took over: server B answers (Master_Down_Interval {} ms)",
        master_down.as_millis()
    ));
    events.push(("A killed, B takes over", stop, 'B', Some(master_down)));

    // A comes back: greha removes the VIP the crash left, starts as
    // backup, and preempts B (higher priority).
    a.ip(&["link", "set", &a_lan, "up"])?;
    let back = Instant::now();
    greha_a = sa.start(&lab, greha)?;
    step("A back: greha removed the VIP its crash left behind and starts as backup");
    answered('A', back, master_down + SHORT)?;
    wait_until(SHORT, "A to be master again", || {
        Ok(sa.state(greha)? == "master")
    })?;
    serves('A')?;
    step("A preempted B (priority 150 > 100): server A answers again");
    events.push(("A returns, preempts", back, 'A', None));

    // Maintenance: A hands over without a gap (make before break), stays
    // backup while demoted, and takes back over when resumed.
    let demote = Instant::now();
    let mut out = String::new();
    for i in instances {
        out += &run(sa.command(greha).args(["demote", i]))?;
    }
    answered('B', demote, master_down + SHORT)?;
    wait_until(SHORT, "A to become backup", || {
        Ok(sa.state(greha)? == "backup")
    })?;
    serves('B')?;
    step(&format!(
        "greha demote {} on A: {}",
        instances.join(", "),
        out.trim().replace('\n', "; ")
    ));
    events.push(("A demoted, hands over", demote, 'B', Some(skew)));
    let resume = Instant::now();
    for i in instances {
        run(sa.command(greha).args(["resume", i]))?;
    }
    answered('A', resume, master_down + SHORT)?;
    wait_until(SHORT, "A to be master again", || {
        Ok(sa.state(greha)? == "master")
    })?;
    step(&format!(
        "greha resume {} on A: A preempts B again",
        instances.join(", ")
    ));
    events.push(("A resumed, preempts", resume, 'A', None));

    // A graceful stop: A resigns with priority 0 and keeps the VIP until B
    // is master and has announced it.
    let graceful = Instant::now();
    let status = greha_a.terminate(SHORT)?;
    ensure!(status.success(), "greha on A exited {status}");
    answered('B', graceful, master_down + SHORT)?;
    serves('B')?;
    step("graceful stop of A (SIGTERM): it handed the VIP over to B, then exited");
    events.push(("A stops gracefully", graceful, 'B', Some(skew)));
    ensure!(sb.state(greha)? == "master", "B is not master at the end");
    let mut families = vec![("IPv4", prober.finish())];
    if let Some(p6) = prober6 {
        families.push(("IPv6", p6.finish()));
    }

    std::fs::create_dir_all(&opts.out_dir)?;
    println!();
    println!(
        "{:<31} {:>10} {:>12} {:>14}   TIMELINE",
        "STEP", "GAP ms", "LOST PROBES", "RFC BOUND ms"
    );
    let mut gaps = Vec::new();
    for (family, probes) in &families {
        for (i, (what, at, to, bound)) in events.iter().enumerate() {
            let g = gap(probes, *at, *to).with_context(|| {
                format!("{what} ({family}): the client saw no answer before or after it")
            })?;
            let svg = match ipv6 {
                false => opts.out_dir.join(format!("demo-{}.svg", i + 1)),
                true => opts
                    .out_dir
                    .join(format!("demo-{}-{}.svg", family.to_lowercase(), i + 1)),
            };
            let what = &format!(
                "{what}{}",
                if ipv6 {
                    format!(" ({family})")
                } else {
                    String::new()
                }
            );
            write_svg(
                &svg,
                &Timeline {
                    title: &format!(
                        "{what} (VRRPv{version}, advert {adv} s): {} ms without answers",
                        g.longest.as_millis()
                    ),
                    probes,
                    event: *at,
                    from: g.from,
                    until: g.until,
                    bound_ms: bound.map(|b| b.as_secs_f64() * 1e3),
                },
            )?;
            println!(
                "{:<31} {:>10} {:>12} {:>14}   {}",
                what,
                g.longest.as_millis(),
                g.lost,
                bound.map_or("-".to_owned(), |b| b.as_millis().to_string()),
                svg.display()
            );
            gaps.push((what.clone(), g, *bound));
        }
    }
    // The client's view against the RFC: a crash costs at most
    // Master_Down_Interval; a handover, nothing.
    for (what, g, bound) in &gaps {
        if let Some(b) = bound {
            ensure!(
                g.longest <= *b + CHECK_SLACK,
                "{what}: the client saw {} ms without answers, over the RFC's {} ms",
                g.longest.as_millis(),
                b.as_millis()
            );
        }
        if what.contains("gracefully") || what.contains("demoted") {
            ensure!(g.lost == 0, "{what}: the handover lost {} probes", g.lost);
        }
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
