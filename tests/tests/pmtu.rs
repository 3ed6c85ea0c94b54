//! Path MTU discovery through a tunnel, as the kernel's tunnels do it with
//! `pmtudisc`: A's underlay carries 1500 bytes, but a router on the way to
//! B carries only 1400. The router answers A's too-big GRE packets with
//! "fragmentation needed"; A's daemon learns the path MTU from that, and
//! the encapsulation answers A's own too-big inner packets with
//! "fragmentation needed" / "packet too big" of the inner MTU, so TCP over
//! the tunnel shrinks its segments instead of losing every full-sized one
//! (a PMTU black hole: the kernel's TCP does not probe by default). Over
//! an IPv4 underlay (gretap) and an IPv6 one (ip6gretap, where the router
//! says "packet too big").
use std::time::Duration;

use anyhow::{Result, ensure};
use greha_tests::{Host, Lab, SHORT, tcp_transfer, wait_until};

const A_INNER: &str = "192.0.2.1";
const B_INNER: &str = "192.0.2.2";
const A_INNER6: &str = "2001:db8:2::1";
const B_INNER6: &str = "2001:db8:2::2";
/// What the router's link to B carries.
const NARROW: u32 = 1400;

/// The underlay of one family: A's, the router's on A's side, B's, the
/// router's on B's side, the prefix length, the tunnel mode and its
/// overhead (outer IP, GRE, inner Ethernet).
struct Underlay {
    a: &'static str,
    r_a: &'static str,
    b: &'static str,
    r_b: &'static str,
    prefix: u8,
    mode: &'static str,
    overhead: u32,
}

const IPV4: Underlay = Underlay {
    a: "198.51.100.1",
    r_a: "198.51.100.254",
    b: "203.0.113.2",
    r_b: "203.0.113.254",
    prefix: 24,
    mode: "gretap",
    overhead: 20 + 4 + 14,
};

const IPV6: Underlay = Underlay {
    a: "2001:db8:1::1",
    r_a: "2001:db8:1::fe",
    b: "2001:db8:3::2",
    r_b: "2001:db8:3::fe",
    prefix: 64,
    mode: "ip6gretap",
    overhead: 40 + 4 + 14,
};

/// The lab: A, the router, B.
fn lab(u: &Underlay) -> Result<(Lab, Host, Host, Host)> {
    let mut lab = Lab::new()?;
    let a = lab.host("a")?;
    let r = lab.host("r")?;
    let b = lab.host("b")?;
    for h in [&a, &r, &b] {
        h.enable_ipv6()?;
    }
    let p = u.prefix;
    lab.link(&a, &format!("{}/{p}", u.a), &r, &format!("{}/{p}", u.r_a))?;
    let narrow = lab.link(&r, &format!("{}/{p}", u.r_b), &b, &format!("{}/{p}", u.b))?;
    // Only the router's side: B's tunnel keeps the MTU of its 1500-byte
    // underlay and tells A's TCP a full-sized MSS (B sends A nothing
    // larger than an ACK).
    r.ip(&["link", "set", &narrow.a.ifname, "mtu", &NARROW.to_string()])?;
    r.sysctl("net.ipv4.ip_forward", "1")?;
    r.sysctl("net.ipv6.conf.all.forwarding", "1")?;
    a.ip(&["route", "add", u.b, "via", u.r_a])?;
    b.ip(&["route", "add", u.a, "via", u.r_b])?;
    Ok((lab, a, r, b))
}

fn tunnel(u: &Underlay, local: &str, remote: &str, inner: &str, inner6: &str) -> String {
    format!(
        "t1 mode {} local {local} remote {remote} address {inner}/24 address {inner6}/64",
        u.mode
    )
}

#[test]
fn tcp_through_a_narrower_ipv4_path_learns_its_mtu_instead_of_stalling() -> Result<()> {
    narrower_path(&IPV4)
}

#[test]
fn tcp_through_a_narrower_ipv6_path_learns_its_mtu_instead_of_stalling() -> Result<()> {
    narrower_path(&IPV6)
}

/// "Fragmentation needed" is believed only about GRE, as the kernel's
/// gre_err parses the quoted header before it takes the MTU: the router
/// sends one quoting a packet to B of protocol GRE but no GRE header,
/// then one quoting a gretap header. The second is read after the
/// first, and A's path MTU is the second's (a learned MTU only ever
/// goes down, so had the first been taken it would have stayed 600).
#[test]
fn fragmentation_needed_quoting_no_gre_is_not_believed() -> Result<()> {
    let u = &IPV4;
    let (lab, a, r, _b) = lab(u)?;
    let mut cmd = lab.greha(&a);
    cmd.args(["run", "--tunnel", &tunnel(u, u.a, u.b, A_INNER, A_INNER6)]);
    let mut daemon = a.spawn(&lab, cmd, true)?;
    daemon.wait_ready(SHORT)?;
    let error = |mtu: u32, quoted: &str| {
        format!(
            "send(IP(src='{}', dst='{}')/ICMP(type=3, code=4, nexthopmtu={mtu})\
             /IP(src='{}', dst='{}', proto=47, flags='DF')/Raw({quoted}), verbose=False)\n",
            u.r_a, u.a, u.a, u.b
        )
    };
    r.python(
        &lab,
        &format!(
            "from scapy.all import *\n{}{}",
            error(600, "b'\\x00\\x00\\x12\\x34' + bytes(4)"),
            error(1300, "b'\\x00\\x00\\x65\\x58' + bytes(4)")
        ),
    )?;
    wait_until(SHORT, "A to learn a path MTU", || {
        Ok(lab.greha_status(&a)?["tunnels"][0]["path_mtu"] != 1500)
    })?;
    let status = lab.greha_status(&a)?;
    ensure!(
        status["tunnels"][0]["path_mtu"] == 1300,
        "A took the error quoting no GRE: {}\n{}",
        status["tunnels"][0],
        daemon.log()
    );
    let s = daemon.terminate(SHORT)?;
    ensure!(s.success(), "greha exited {s}:\n{}", daemon.log());
    Ok(())
}

fn narrower_path(u: &Underlay) -> Result<()> {
    let (mut lab, a, _r, b) = lab(u)?;
    let b_pins = lab.pin_dir("b");
    greha_tests::run(
        b.command(greha_tests::greha_bin())
            .arg("--pin-dir")
            .arg(&b_pins)
            .args(["tunnel", "add"])
            .args(tunnel(u, u.b, u.a, B_INNER, B_INNER6).split(' ')),
    )?;
    let mut cmd = lab.greha(&a);
    cmd.args(["run", "--tunnel", &tunnel(u, u.a, u.b, A_INNER, A_INNER6)]);
    let mut daemon = a.spawn(&lab, cmd, true)?;
    daemon.wait_ready(SHORT)?;
    let mtu = a.ip(&["-j", "link", "show", "t1"])?;
    ensure!(
        mtu.contains(&format!("\"mtu\":{}", 1500 - u.overhead)),
        "A's tunnel interface takes its underlay's MTU: {mtu}"
    );

    // 4 MiB each way of A's sending: full-sized segments first, each too
    // big for the router's link. A stall fails the transfer's timeout.
    let timeout = Duration::from_secs(15);
    tcp_transfer(&a, &b, &format!("{B_INNER}:5001"), 4 << 20, timeout)?;
    tcp_transfer(&a, &b, &format!("[{B_INNER6}]:5001"), 4 << 20, timeout)?;

    // The inner routes learned the inner MTU from greha's answers.
    let inner_mtu = NARROW - u.overhead;
    for (family, dst) in [("-4", B_INNER), ("-6", B_INNER6)] {
        let route = a.ip(&[family, "route", "get", dst])?;
        ensure!(
            route.contains(&format!("mtu {inner_mtu}")),
            "A's route to {dst}: {route}\nstatus: {}\nlog: {}",
            lab.greha_status(&a)?["tunnels"][0]["counters"],
            daemon.log()
        );
    }
    let status = lab.greha_status(&a)?;
    ensure!(
        status["tunnels"][0]["path_mtu"] == NARROW,
        "status: {}",
        status["tunnels"][0]
    );
    let c = &status["tunnels"][0]["counters"];
    ensure!(
        c["tx_icmp_too_big"].as_u64().unwrap_or(0) >= 2,
        "counters: {c}"
    );
    ensure!(
        daemon.log().contains(&format!("path_mtu={NARROW}")),
        "the daemon's log names the learned MTU:\n{}",
        daemon.log()
    );
    // A ping that does not fit is refused at once, by the kernel, with the
    // MTU greha told it.
    let ping = a
        .command("ping")
        .args(["-M", "do", "-s", "1400", "-c", "1", "-W", "1", B_INNER])
        .output()?;
    let said =
        String::from_utf8_lossy(&ping.stderr).into_owned() + &String::from_utf8_lossy(&ping.stdout);
    ensure!(
        said.contains(&format!("mtu={inner_mtu}")) || said.contains(&format!("mtu = {inner_mtu}")),
        "ping: {said}"
    );
    wait_until(SHORT, "the daemon to stop", || {
        let s = daemon.terminate(SHORT)?;
        ensure!(s.success(), "greha exited {s}:\n{}", daemon.log());
        Ok(true)
    })?;
    Ok(())
}
