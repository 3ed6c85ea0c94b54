//! VRRPv3 for IPv6 against keepalived 2.2.7 on a LAN with a client: greha
//! as master and as backup, a hard kill either way, the client's neighbour
//! entry for the VIP following the master (unsolicited Neighbor
//! Advertisements), tshark decoding greha's adverts and advertisements as
//! valid, a stale IPv6 VIP of a crashed run removed, and dual stack: an
//! IPv4 and an IPv6 instance sharing VRID 51 on one interface.
use std::{
    fs,
    time::{Duration, Instant},
};

use anyhow::{Context as _, Result, ensure};
use greha_tests::{Host, Lab, Proc, SHORT, wait_until};
use nix::sys::signal::Signal;

const VIP6: &str = "2001:db8::10";
const VIP4: &str = "203.0.113.10";

struct Lan {
    lab: Lab,
    a: Host,
    b: Host,
    client: Host,
}

/// greha's A, keepalived's B and a client on one switch, dual stack.
fn lan() -> Result<Lan> {
    let mut lab = Lab::new()?;
    let a = lab.host("a")?;
    let b = lab.host("b")?;
    let client = lab.host("client")?;
    let sw = lab.switch("lan")?;
    for h in [&a, &b, &client, &sw] {
        h.enable_ipv6()?;
    }
    for (h, n) in [(&a, 2), (&b, 3), (&client, 100)] {
        lab.plug(h, &format!("203.0.113.{n}/24"), &sw)?;
        h.ip(&["addr", "add", &format!("2001:db8::{n}/64"), "dev", "eth0"])?;
    }
    Ok(Lan { lab, a, b, client })
}

fn holds(host: &Host, vip: &str) -> Result<bool> {
    Ok(host
        .ip(&["-br", "addr", "show", "dev", "eth0"])?
        .split_whitespace()
        .any(|w| w.split('/').next() == Some(vip)))
}

fn mac(host: &Host) -> Result<String> {
    let out = host.ip(&["-br", "link", "show", "dev", "eth0"])?;
    out.split_whitespace()
        .nth(2)
        .map(str::to_owned)
        .context("no MAC in ip -br link")
}

/// The MAC the client's neighbour table has for the IPv6 VIP, if any.
fn client_sees(l: &Lan) -> Result<Option<String>> {
    let out = l.client.ip(&["-6", "neigh", "show", VIP6, "dev", "eth0"])?;
    let mut words = out.split_whitespace();
    Ok(words
        .position(|w| w == "lladdr")
        .and_then(|_| words.next())
        .map(str::to_owned))
}

/// One ping from the client to the IPv6 VIP: the VIP answers (and the
/// client resolves it).
fn ping6(l: &Lan) -> Result<bool> {
    Ok(l.client
        .command("ping")
        .args(["-6", "-c", "1", "-W", "1", VIP6])
        .output()?
        .status
        .success())
}

/// greha on A with `specs`, each a `--vrrp` instance.
fn greha(l: &Lan, specs: &[String]) -> Result<Proc> {
    let mut cmd = l.lab.greha(&l.a);
    cmd.arg("run");
    for s in specs {
        cmd.args(["--vrrp", s]);
    }
    let mut g = l.a.spawn(&l.lab, cmd, true)?;
    g.wait_ready(SHORT)?;
    Ok(g)
}

/// Whether this run is the one without the fast path: `cargo xtask test`
/// runs the suite twice, the second time with GREHA_TEST_NO_FASTPATH=1.
fn no_fastpath() -> bool {
    std::env::var_os("GREHA_TEST_NO_FASTPATH").is_some()
}

fn v6_spec(priority: u8) -> String {
    let off = if no_fastpath() { " no-fastpath" } else { "" };
    format!("V6 interface eth0 vrid 51 priority {priority} advert-int 0.1 vip {VIP6}/64{off}")
}

/// keepalived on B with `instances` (name, VIP with prefix), all VRID 51
/// at 100 ms, version 3.
fn keepalived(l: &Lan, priority: u8, instances: &[(&str, &str)]) -> Result<Keepalived> {
    let dir = l.lab.tmp().join("keepalived");
    fs::create_dir_all(&dir)?;
    let conf = dir.join("keepalived.conf");
    let mut text = String::new();
    for (name, vip) in instances {
        text += &format!(
            "vrrp_instance {name} {{\n  state BACKUP\n  interface eth0\n  virtual_router_id 51\n  \
             priority {priority}\n  advert_int 0.1\n  version 3\n  \
             virtual_ipaddress {{\n    {vip} dev eth0\n  }}\n}}\n"
        );
    }
    fs::write(&conf, text)?;
    let vrrp_pid = dir.join("vrrp.pid");
    let mut cmd = l.b.command("keepalived");
    cmd.args(["-n", "-l", "-P", "-D", "-f"])
        .arg(&conf)
        .arg("-p")
        .arg(dir.join("keepalived.pid"))
        .arg("-r")
        .arg(&vrrp_pid);
    let mut proc = l.b.spawn(&l.lab, cmd, false)?;
    for (name, _) in instances {
        proc.wait_for_output(&format!("({name}) Entering BACKUP STATE"), SHORT)?;
    }
    Ok(Keepalived { proc, vrrp_pid })
}

struct Keepalived {
    proc: Proc,
    vrrp_pid: std::path::PathBuf,
}

impl Keepalived {
    /// Dies as a crashed host would: no priority 0 (the parent frozen
    /// first, or it would respawn the child or make it resign).
    fn kill_hard(&mut self) -> Result<()> {
        self.proc.signal(Signal::SIGSTOP)?;
        let child: i32 = fs::read_to_string(&self.vrrp_pid)?.trim().parse()?;
        nix::sys::signal::kill(nix::unistd::Pid::from_raw(child), Signal::SIGKILL)?;
        self.proc.signal(Signal::SIGKILL)?;
        self.proc.wait(SHORT)?;
        Ok(())
    }
}

/// For `window`, never A and B holding `vip` together.
fn never_two_masters(l: &Lan, vip: &str, window: Duration) -> Result<()> {
    let end = Instant::now() + window;
    while Instant::now() < end {
        ensure!(
            !(holds(&l.a, vip)? && holds(&l.b, vip)?),
            "A and B both hold {vip}"
        );
        std::thread::sleep(Duration::from_millis(10));
    }
    Ok(())
}

/// What tshark on the client makes of `count` frames matching `filter`,
/// captured while `during` runs: one line per frame with `fields`.
fn tshark(
    l: &Lan,
    filter: &str,
    fields: &[&str],
    during: impl FnOnce() -> Result<()>,
) -> Result<Vec<String>> {
    let out = l.lab.tmp().join(format!("cap-{}.pcap", fields.len()));
    let mut cap = l.client.command("tcpdump");
    cap.args(["-i", "eth0", "-U", "-w"]).arg(&out).arg(filter);
    let mut cap = l.client.spawn(&l.lab, cap, false)?;
    cap.wait_for_output("listening on", SHORT)?;
    during()?;
    // tcpdump -U writes each packet as it comes; let the last arrive.
    std::thread::sleep(Duration::from_millis(300));
    cap.terminate(SHORT)?;
    let mut cmd = std::process::Command::new("tshark");
    cmd.args(["-r"]).arg(&out).args(["-T", "fields"]);
    for f in fields {
        cmd.args(["-e", f]);
    }
    let text = greha_tests::run(cmd.args(["-o", "vrrp.v3_checksum_as_in_v2:FALSE"]))?;
    Ok(text.lines().map(str::to_owned).collect())
}

/// greha master, keepalived backup: keepalived follows greha's IPv6
/// adverts and never takes the VIP; the client reaches the VIP at A's MAC,
/// told by greha's Neighbor Advertisement; tshark finds greha's adverts
/// and advertisements valid. Killed, greha loses the VIP to keepalived
/// within Master_Down_Interval, and the client follows keepalived's NA.
#[test]
fn greha_master_keepalived_backup_ipv6() -> Result<()> {
    let l = lan()?;
    let mut ka = keepalived(&l, 100, &[("V6", &format!("{VIP6}/64"))])?;
    let mut g = None;
    let lines = tshark(
        &l,
        "ip6 proto 112 or icmp6",
        &[
            "ipv6.src",
            "ipv6.hlim",
            "vrrp.prio",
            "vrrp.checksum.status",
            "icmpv6.type",
            "icmpv6.nd.na.target_address",
            "icmpv6.nd.na.flag.o",
            "icmpv6.checksum.status",
            "eth.src",
        ],
        || {
            g = Some(greha(&l, &[v6_spec(150)])?);
            wait_until(SHORT, "greha to hold the IPv6 VIP", || holds(&l.a, VIP6))?;
            never_two_masters(&l, VIP6, Duration::from_secs(1))?;
            Ok(())
        },
    )?;
    let mut g = g.expect("started");
    let a_mac = mac(&l.a)?;
    ensure!(
        !holds(&l.b, VIP6)?,
        "keepalived took the VIP from a higher-priority greha"
    );
    // greha's adverts: from its link-local address, hop limit 255,
    // priority 150, checksum good.
    let adverts: Vec<&String> = lines
        .iter()
        .filter(|s| s.split('\t').nth(2) == Some("150"))
        .collect();
    ensure!(adverts.len() >= 5, "few adverts from greha: {lines:#?}");
    for a in &adverts {
        let f: Vec<&str> = a.split('\t').collect();
        ensure!(
            f[0].starts_with("fe80::") && f[1] == "255" && f[3] == "1",
            "advert as tshark reads it (src, hlim, prio, checksum status 1 = good): {a}"
        );
    }
    // Its Neighbor Advertisements, garp-repeat (5) at once: the VIP,
    // Override set, checksum good.
    let nas: Vec<&String> = lines
        .iter()
        .filter(|s| {
            let f: Vec<&str> = s.split('\t').collect();
            f[4] == "136" && f[8] == a_mac
        })
        .collect();
    ensure!(
        nas.len() >= 5,
        "{} neighbor advertisements from A: {lines:#?}",
        nas.len()
    );
    for na in &nas {
        let f: Vec<&str> = na.split('\t').collect();
        ensure!(
            f[0] == VIP6 && f[5] == VIP6 && f[6] == "1" && f[7] == "1",
            "NA as tshark reads it (src, target, override, checksum good): {na}"
        );
    }
    ensure!(ping6(&l)?, "the client cannot reach the IPv6 VIP on A");
    ensure!(
        client_sees(&l)?.as_deref() == Some(a_mac.as_str()),
        "client's neighbour entry is not A's MAC {a_mac}"
    );
    let st = l.lab.greha_status(&l.a)?;
    let v6 = &st["vrrp"][0];
    ensure!(
        v6["state"] == "master" && v6["family"] == "ipv6",
        "status: {v6}"
    );
    // kill -9: keepalived takes over within Master_Down_Interval (30 + 6
    // cs at priority 100), and its NA moves the client.
    g.signal(Signal::SIGKILL)?;
    g.wait(SHORT)?;
    let t0 = Instant::now();
    wait_until(
        Duration::from_millis(360 + 400),
        "keepalived to take over",
        || holds(&l.b, VIP6),
    )?;
    ensure!(
        t0.elapsed() >= Duration::from_millis(200),
        "keepalived took over after {:?}, before Master_Down",
        t0.elapsed()
    );
    let b_mac = mac(&l.b)?;
    wait_until(SHORT, "the client to follow keepalived's NA", || {
        Ok(client_sees(&l)?.as_deref() == Some(b_mac.as_str()))
    })?;
    ensure!(ping6(&l)?, "the client cannot reach the VIP on B");
    ka.proc.terminate(SHORT)?;
    Ok(())
}

/// keepalived master, greha backup: greha follows keepalived's IPv6
/// adverts (and first removes the IPv6 VIP a crashed run left on A).
/// keepalived killed, greha takes over within Master_Down_Interval, and
/// its Neighbor Advertisement moves the client's entry to A's MAC.
#[test]
fn keepalived_master_greha_backup_ipv6() -> Result<()> {
    let l = lan()?;
    let mut ka = keepalived(&l, 150, &[("V6", &format!("{VIP6}/64"))])?;
    wait_until(SHORT, "keepalived to hold the VIP", || holds(&l.b, VIP6))?;
    // What a greha killed as master leaves behind.
    l.a.ip(&["addr", "add", &format!("{VIP6}/64"), "dev", "eth0", "nodad"])?;
    let g = greha(&l, &[v6_spec(100)])?;
    ensure!(!holds(&l.a, VIP6)?, "the stale IPv6 VIP stayed on A");
    ensure!(
        g.log().contains("removed a VIP left behind"),
        "no word of the stale VIP:\n{}",
        g.log()
    );
    never_two_masters(&l, VIP6, Duration::from_secs(1))?;
    let st = l.lab.greha_status(&l.a)?;
    let v6 = &st["vrrp"][0];
    ensure!(
        v6["state"] == "backup"
            && v6["master"]
                .as_str()
                .is_some_and(|m| m.starts_with("fe80::"))
            && v6["master_priority"] == 150,
        "greha does not follow keepalived: {v6}"
    );
    // keepalived's adverts: checked and, steady, absorbed by the fast path
    // (or all seen by the daemon without it); none refused.
    let fp = &v6["fastpath"];
    if no_fastpath() {
        ensure!(
            fp.is_null() && v6["daemon_adverts"].as_u64() > Some(5),
            "{v6}"
        );
    } else {
        ensure!(
            fp["absorbed"].as_u64() > Some(5) && fp["checksum_errors"] == 0,
            "the fast path did not absorb keepalived's IPv6 adverts: {v6}"
        );
    }
    ensure!(ping6(&l)?, "the client cannot reach the VIP on B");
    ka.kill_hard()?;
    let t0 = Instant::now();
    wait_until(
        Duration::from_millis(360 + 400),
        "greha to take over",
        || holds(&l.a, VIP6),
    )?;
    ensure!(
        t0.elapsed() >= Duration::from_millis(200),
        "greha took over after {:?}, before Master_Down",
        t0.elapsed()
    );
    let a_mac = mac(&l.a)?;
    wait_until(SHORT, "the client to follow greha's NA", || {
        Ok(client_sees(&l)?.as_deref() == Some(a_mac.as_str()))
    })?;
    ensure!(ping6(&l)?, "the client cannot reach the VIP on A");
    drop(g);
    Ok(())
}

/// Dual stack, as keepalived runs it: an IPv4 and an IPv6 instance share
/// VRID 51 on one interface, on both routers, and each family elects on
/// its own. keepalived holds both; greha preempts only the IPv6 one (its
/// IPv4 instance has the lower priority). `greha demote V6` hands the IPv6
/// VIP back, released as soon as keepalived's Neighbor Advertisement is
/// seen (make before break), and a stop leaves nothing behind.
#[test]
fn dual_stack_instances_share_a_vrid() -> Result<()> {
    let l = lan()?;
    let ka = keepalived(
        &l,
        120,
        &[("V4", &format!("{VIP4}/24")), ("V6", &format!("{VIP6}/64"))],
    )?;
    wait_until(SHORT, "keepalived to hold both VIPs", || {
        Ok(holds(&l.b, VIP4)? && holds(&l.b, VIP6)?)
    })?;
    let mut g = greha(
        &l,
        &[
            format!("V4 interface eth0 vrid 51 priority 100 advert-int 0.1 vip {VIP4}/24"),
            v6_spec(150),
        ],
    )?;
    wait_until(SHORT, "greha to preempt the IPv6 instance", || {
        holds(&l.a, VIP6)
    })?;
    // Preemption overlaps by keepalived's reaction to greha's first advert
    // (greha adds the VIP as it sends it): a few ms, more on a loaded
    // machine. From keepalived's release on, never both.
    wait_until(SHORT, "keepalived to release the IPv6 VIP", || {
        Ok(!holds(&l.b, VIP6)?)
    })?;
    never_two_masters(&l, VIP6, Duration::from_secs(1))?;
    ensure!(
        holds(&l.b, VIP4)? && !holds(&l.a, VIP4)?,
        "the IPv4 instance moved with the IPv6 one"
    );
    let st = l.lab.greha_status(&l.a)?;
    let states: Vec<(&str, &str)> = st["vrrp"]
        .as_array()
        .context("vrrp")?
        .iter()
        .map(|v| {
            (
                v["name"].as_str().unwrap_or(""),
                v["state"].as_str().unwrap_or(""),
            )
        })
        .collect();
    ensure!(
        states == [("V4", "backup"), ("V6", "master")],
        "states: {states:?}"
    );
    let out = greha_tests::run(l.lab.greha(&l.a).args(["demote", "V6"]))?;
    ensure!(out.starts_with("ok: V6 demoted"), "{out}");
    wait_until(SHORT, "keepalived to take the IPv6 VIP back", || {
        holds(&l.b, VIP6)
    })?;
    let taken = Instant::now();
    wait_until(SHORT, "A to release the IPv6 VIP", || {
        Ok(!holds(&l.a, VIP6)?)
    })?;
    // On seeing keepalived's NA, not after the fallback wait.
    ensure!(
        taken.elapsed() < greha::vrrp::engine::HANDOVER_ANNOUNCE_WAIT / 2,
        "A kept the IPv6 VIP {:?} after keepalived took it",
        taken.elapsed()
    );
    let status = g.terminate(SHORT)?;
    ensure!(status.success(), "greha exited {status}:\n{}", g.log());
    ensure!(
        !holds(&l.a, VIP6)? && !holds(&l.a, VIP4)?,
        "greha left a VIP behind"
    );
    drop(ka);
    Ok(())
}

/// keepalived's dual-stack idiom: one IPv4 instance whose IPv6 address is
/// excluded from the adverts (virtual_ipaddress_excluded). keepalived
/// master, greha backup: the address lists agree (no address list error),
/// greha holds nothing; keepalived killed, greha holds both, and the
/// client reaches the IPv6 one at A's MAC, told by greha's NA.
#[test]
fn an_excluded_ipv6_vip_moves_with_an_ipv4_instance() -> Result<()> {
    let l = lan()?;
    let proc = greha_tests::start_keepalived_conf(
        &l.lab,
        &l.b,
        "x",
        &format!(
            "vrrp_instance VX {{\n  state BACKUP\n  interface eth0\n  virtual_router_id 52\n  \
             priority 150\n  advert_int 0.1\n  version 3\n  \
             virtual_ipaddress {{\n    {VIP4}/24 dev eth0\n  }}\n  \
             virtual_ipaddress_excluded {{\n    {VIP6}/64 dev eth0\n  }}\n}}\n"
        ),
        "Entering BACKUP STATE",
    )?;
    let vrrp_pid = l.lab.tmp().join("ka-x").join("v.pid");
    let mut ka = Keepalived { proc, vrrp_pid };
    wait_until(SHORT, "keepalived holding both", || {
        Ok(holds(&l.b, VIP4)? && holds(&l.b, VIP6)?)
    })?;
    let off = if no_fastpath() { " no-fastpath" } else { "" };
    let _g = greha(
        &l,
        &[format!(
            "VX interface eth0 vrid 52 priority 100 advert-int 0.1 vip {VIP4}/24 \
             vip {VIP6}/64 excluded{off}"
        )],
    )?;
    wait_until(SHORT, "greha following keepalived", || {
        let v = &l.lab.greha_status(&l.a)?["vrrp"][0];
        Ok(v["state"] == "backup" && v["master"] == "203.0.113.3")
    })?;
    never_two_masters(&l, VIP6, Duration::from_millis(500))?;
    let v = &l.lab.greha_status(&l.a)?["vrrp"][0];
    ensure!(
        v["stats"]["address_list_errors"] == 0 && v["stats"]["rcvd_advertisements"] != 0,
        "greha and keepalived disagree on the advertised list: {v:#}"
    );
    ka.kill_hard()?;
    wait_until(SHORT, "greha holding both", || {
        // A killed keepalived leaves its addresses behind, as a crashed
        // host's would be unreachable: the client follows the NA.
        Ok(holds(&l.a, VIP4)? && holds(&l.a, VIP6)?)
    })?;
    let a_mac = mac(&l.a)?;
    wait_until(SHORT, "the client reaching the IPv6 VIP at A", || {
        Ok(ping6(&l)? && client_sees(&l)?.as_deref() == Some(a_mac.as_str()))
    })?;
    Ok(())
}
