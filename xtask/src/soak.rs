//! `cargo xtask soak [--minutes N] [--seed S]`: a bounded chaos run. Two
//! greha routers (A priority 150, B 100) and a third VRRP speaker
//! (keepalived on C, priority 50) share a LAN with a client; random link
//! flaps, partitions (a switch port down), kill -9s and restarts, reloads
//! and stray adverts hit them, and after each the invariants are checked:
//! within a bound the network settles on one VIP holder, the right one (A
//! when it runs, else B), every greha master holds the VIP and no greha
//! non-master does, and the client reaches the VIP; while whole, never two
//! holders. Prints the counts, writes target/soak.json, fails on any
//! violation.
use std::{
    fs,
    path::Path,
    time::{Duration, Instant},
};

use anyhow::{Result, bail};
use greha_tests::{Host, Lab, Proc, SHORT, wait_until};
use serde_json::json;

const VIP: &str = "198.51.100.10";
/// How long the network may take to settle after an event ends: B's
/// Master_Down_Interval at 100 ms (360 ms), a daemon's start, and ARP.
const SETTLE: Duration = Duration::from_millis(2500);

/// xorshift64*: reproducible from the printed seed, no dependency.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }

    fn millis(&mut self, lo: u64, hi: u64) -> Duration {
        Duration::from_millis(lo + self.below(hi - lo))
    }
}

struct Soak {
    lab: Lab,
    hosts: [Host; 3],
    client: Host,
    sw: Host,
    /// The switch ports of A, B and C.
    ports: [String; 3],
    daemons: [Option<Proc>; 2],
    _keepalived: Proc,
}

impl Soak {
    fn start_greha(&mut self, k: usize) -> Result<()> {
        let prio = if k == 0 { 150 } else { 100 };
        let mut cmd = self.lab.greha(&self.hosts[k]);
        let spec =
            format!("VI_1 interface eth0 vrid 51 priority {prio} advert-int 0.1 vip {VIP}/24");
        cmd.args(["run", "--vrrp", &spec]);
        let mut p = self.hosts[k].spawn(&self.lab, cmd, true)?;
        p.wait_ready(SHORT)?;
        self.daemons[k] = Some(p);
        Ok(())
    }

    fn holds_vip(&self, k: usize) -> Result<bool> {
        Ok(self.hosts[k]
            .ip(&["-br", "-4", "addr", "show", "dev", "eth0"])?
            .contains(&format!("{VIP}/24")))
    }

    /// A running greha's state; none while it is down or not answering.
    fn state(&self, k: usize) -> Option<String> {
        self.daemons[k].as_ref()?;
        let v = self.lab.greha_status(&self.hosts[k]).ok()?;
        v["vrrp"][0]["state"].as_str().map(str::to_owned)
    }

    fn client_reaches_vip(&self) -> bool {
        self.client
            .command("ping")
            .args(["-c", "1", "-W", "0.2", VIP])
            .output()
            .is_ok_and(|o| o.status.success())
    }

    /// What is wrong now, if anything: the holders of the VIP, the greha
    /// states, the client.
    fn check(&self) -> Result<Option<String>> {
        let holders: Vec<usize> = (0..3)
            .filter_map(|k| self.holds_vip(k).ok()?.then_some(k))
            .collect();
        let expected = if self.daemons[0].is_some() { 0 } else { 1 };
        if holders != [expected] {
            return Ok(Some(format!(
                "VIP held by {:?}, expected {}",
                holders.iter().map(|k| name(*k)).collect::<Vec<_>>(),
                name(expected)
            )));
        }
        for k in 0..2 {
            let state = self.state(k);
            let master = state.as_deref() == Some("master");
            if master != holders.contains(&k) && state.is_some() {
                return Ok(Some(format!(
                    "{} is {state:?} and {} the VIP",
                    name(k),
                    if holders.contains(&k) {
                        "holds"
                    } else {
                        "lacks"
                    }
                )));
            }
        }
        if !self.client_reaches_vip() {
            return Ok(Some("the client does not reach the VIP".into()));
        }
        Ok(None)
    }

    /// Waits (bounded) for the network to settle; the time it took.
    fn settle(&self) -> Result<std::result::Result<Duration, String>> {
        let t0 = Instant::now();
        let mut last = String::new();
        while t0.elapsed() < SETTLE {
            match self.check()? {
                None => return Ok(Ok(t0.elapsed())),
                Some(why) => last = why,
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        Ok(Err(last))
    }

    /// While the network is whole: never two VIP holders.
    fn quiet(&self, for_: Duration) -> Result<Option<String>> {
        let t0 = Instant::now();
        while t0.elapsed() < for_ {
            let holders = (0..3)
                .filter(|k| self.holds_vip(*k).unwrap_or(false))
                .count();
            if holders > 1 {
                return Ok(Some(format!("{holders} VIP holders while whole")));
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        Ok(None)
    }

    fn stray_adverts(&self) -> Result<()> {
        // From the client's address, priority 30: below everyone.
        self.client.python(
            &self.lab,
            &format!(
                "import time\n\
                 from scapy.all import Ether, IP, conf, get_if_hwaddr\n\
                 from scapy.layers.vrrp import VRRPv3\n\
                 s = conf.L2socket(iface='eth0')\n\
                 p = Ether(src=get_if_hwaddr('eth0'), dst='01:00:5e:00:00:12')/IP(src='198.51.100.100', \
                 dst='224.0.0.18', ttl=255, proto=112)/VRRPv3(vrid=51, priority=30, adv=10, \
                 ipcount=1, addrlist=['{VIP}'])\n\
                 for _ in range(10):\n\
                 \x20   s.send(p)\n\
                 \x20   time.sleep(0.05)\n"
            ),
        )?;
        Ok(())
    }
}

fn name(k: usize) -> &'static str {
    ["A", "B", "C"][k]
}

pub fn soak(greha: &Path, out_dir: &Path, minutes: f64, seed: Option<u64>) -> Result<()> {
    let seed = seed.unwrap_or_else(|| {
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(1, |d| d.as_nanos() as u64)
            | 1
    });
    eprintln!("soak: seed {seed} (cargo xtask soak --seed {seed} replays it)");
    let mut rng = Rng(seed);
    // The lab helpers find greha through GREHA_BIN.
    // SAFETY: set before this process starts any thread.
    unsafe { std::env::set_var("GREHA_BIN", greha) };
    let mut lab = Lab::new()?;
    let sw = lab.switch("lan")?;
    let (a, b, c, client) = (
        lab.host("a")?,
        lab.host("b")?,
        lab.host("c")?,
        lab.host("client")?,
    );
    let mut ports = Vec::new();
    for (h, addr) in [(&a, "1"), (&b, "2"), (&c, "3"), (&client, "100")] {
        lab.plug(h, &format!("198.51.100.{addr}/24"), &sw)?;
        // plug names the switch's ports in order.
        ports.push(format!("eth{}", ports.len()));
    }
    let keepalived = greha_tests::start_keepalived(
        &lab,
        &c,
        "c",
        &format!(
            "state BACKUP\n interface eth0\n virtual_router_id 51\n priority 50\n \
             advert_int 0.1\n version 3\n virtual_ipaddress {{\n {VIP}/24 dev eth0\n }}"
        ),
        "(VI_1) Entering",
    )?;
    let mut s = Soak {
        lab,
        hosts: [a, b, c],
        client,
        sw,
        ports: [ports[0].clone(), ports[1].clone(), ports[2].clone()],
        daemons: [None, None],
        _keepalived: keepalived,
    };
    s.start_greha(0)?;
    s.start_greha(1)?;
    if let Err(why) = s.settle()? {
        bail!("the lab never settled before the first event: {why}");
    }

    let kinds = ["flap", "partition", "kill", "reload", "stray"];
    let mut counts = serde_json::Map::new();
    let mut violations = Vec::new();
    let mut worst = Duration::ZERO;
    let end = Instant::now() + Duration::from_secs_f64(minutes * 60.0);
    let mut events = 0u64;
    while Instant::now() < end {
        let kind = kinds[rng.below(kinds.len() as u64) as usize];
        let k = rng.below(3) as usize;
        let what = match kind {
            "flap" => {
                let hold = rng.millis(300, 3000);
                s.hosts[k].ip(&["link", "set", "eth0", "down"])?;
                std::thread::sleep(hold);
                s.hosts[k].ip(&["link", "set", "eth0", "up"])?;
                format!("{}'s link down {hold:?}", name(k))
            }
            "partition" => {
                let hold = rng.millis(300, 3000);
                let port = s.ports[k].clone();
                s.sw.ip(&["link", "set", &port, "down"])?;
                std::thread::sleep(hold);
                s.sw.ip(&["link", "set", &port, "up"])?;
                format!("{} cut off {hold:?}", name(k))
            }
            "kill" => {
                let k = k % 2;
                let gap = rng.millis(100, 2000);
                if let Some(mut p) = s.daemons[k].take() {
                    p.signal(nix::sys::signal::Signal::SIGKILL)?;
                    p.wait(SHORT)?;
                }
                std::thread::sleep(gap);
                s.start_greha(k)?;
                format!("{}'s greha killed, back after {gap:?}", name(k))
            }
            "reload" => {
                let k = k % 2;
                if let Some(p) = &s.daemons[k] {
                    p.signal(nix::sys::signal::Signal::SIGHUP)?;
                }
                format!("{}'s greha reloaded", name(k))
            }
            _ => {
                s.stray_adverts()?;
                "stray adverts from the client".into()
            }
        };
        events += 1;
        let n = counts.get(kind).and_then(|v| v.as_u64()).unwrap_or(0);
        counts.insert(kind.into(), json!(n + 1));
        match s.settle()? {
            Ok(t) => worst = worst.max(t),
            Err(why) => {
                eprintln!("soak: VIOLATION after {what}: {why}");
                violations.push(format!("after {what}: {why}"));
                // Let it settle before going on, so one fault is counted once.
                let _ = wait_until(Duration::from_secs(10), "the lab to settle", || {
                    Ok(s.check()?.is_none())
                });
            }
        }
        if let Some(why) = s.quiet(rng.millis(300, 1500))? {
            eprintln!("soak: VIOLATION after {what}: {why}");
            violations.push(format!("after {what}: {why}"));
        }
        eprintln!("soak: {events}: {what}");
    }
    for k in 0..2 {
        if let Some(mut p) = s.daemons[k].take() {
            p.terminate(SHORT)?;
        }
    }
    let report = json!({
        "seed": seed,
        "minutes": minutes,
        "events": events,
        "by_kind": counts,
        "violations": violations,
        "worst_settle_ms": worst.as_millis() as u64,
    });
    fs::create_dir_all(out_dir)?;
    let path = out_dir.join("soak.json");
    fs::write(&path, serde_json::to_string_pretty(&report)? + "\n")?;
    println!("{}", serde_json::to_string_pretty(&report)?);
    eprintln!("soak: written {}", path.display());
    if !violations.is_empty() {
        bail!(
            "{} violation(s); replay with --seed {seed}",
            violations.len()
        );
    }
    Ok(())
}
