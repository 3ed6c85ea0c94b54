//! Path MTU discovery through a tunnel, as the kernel's tunnels do it with
//! `pmtudisc`: A's underlay carries 1500 bytes, but a router on the way to
//! B carries only 1400. The router answers A's too-big GRE packets with
//! "fragmentation needed"; A's daemon learns the path MTU from that, and
//! the encapsulation answers A's own too-big inner packets with
//! "fragmentation needed" / "packet too big" of the inner MTU, so TCP over
//! the tunnel shrinks its segments instead of losing every full-sized one
//! (a PMTU black hole: the kernel's TCP does not probe by default).
use std::time::Duration;

use anyhow::{Result, ensure};
use greha_tests::{Host, Lab, SHORT, tcp_transfer, wait_until};

const A_UNDERLAY: &str = "198.51.100.1";
const R_A_SIDE: &str = "198.51.100.254";
const B_UNDERLAY: &str = "203.0.113.2";
const R_B_SIDE: &str = "203.0.113.254";
const A_INNER: &str = "192.0.2.1";
const B_INNER: &str = "192.0.2.2";
const A_INNER6: &str = "2001:db8:2::1";
const B_INNER6: &str = "2001:db8:2::2";
/// What the router's link to B carries.
const NARROW: u32 = 1400;
/// gretap over IPv4: 20 + 4 + 14 bytes.
const OVERHEAD: u32 = 38;

fn lab() -> Result<(Lab, Host, Host, Host)> {
    let mut lab = Lab::new()?;
    let a = lab.host("a")?;
    let r = lab.host("r")?;
    let b = lab.host("b")?;
    for h in [&a, &b] {
        h.enable_ipv6()?;
    }
    lab.link(&a, &format!("{A_UNDERLAY}/24"), &r, &format!("{R_A_SIDE}/24"))?;
    let narrow = lab.link(&r, &format!("{R_B_SIDE}/24"), &b, &format!("{B_UNDERLAY}/24"))?;
    // Only the router's side: B's tunnel keeps the MTU of its 1500-byte
    // underlay and tells A's TCP a full-sized MSS (B sends A nothing
    // larger than an ACK).
    r.ip(&["link", "set", &narrow.a.ifname, "mtu", &NARROW.to_string()])?;
    r.sysctl("net.ipv4.ip_forward", "1")?;
    a.ip(&["route", "add", "203.0.113.0/24", "via", R_A_SIDE])?;
    b.ip(&["route", "add", "198.51.100.0/24", "via", R_B_SIDE])?;
    Ok((lab, a, r, b))
}

fn tunnel(local: &str, remote: &str, inner: &str, inner6: &str) -> String {
    format!(
        "t1 mode gretap local {local} remote {remote} address {inner}/24 address {inner6}/64"
    )
}

#[test]
fn tcp_through_a_narrower_path_learns_its_mtu_instead_of_stalling() -> Result<()> {
    let (mut lab, a, _r, b) = lab()?;
    let b_pins = lab.pin_dir("b");
    greha_tests::run(
        b.command(greha_tests::greha_bin())
            .arg("--pin-dir")
            .arg(&b_pins)
            .args(["tunnel", "add"])
            .args(tunnel(B_UNDERLAY, A_UNDERLAY, B_INNER, B_INNER6).split(' ')),
    )?;
    let mut cmd = lab.greha(&a);
    cmd.args(["run", "--tunnel", &tunnel(A_UNDERLAY, B_UNDERLAY, A_INNER, A_INNER6)]);
    let mut daemon = a.spawn(&lab, cmd, true)?;
    daemon.wait_ready(SHORT)?;
    let mtu = a.ip(&["-j", "link", "show", "t1"])?;
    ensure!(
        mtu.contains(&format!("\"mtu\":{}", 1500 - OVERHEAD)),
        "A's tunnel interface takes its underlay's MTU: {mtu}"
    );

    // 4 MiB each way of A's sending: full-sized segments first, each too
    // big for the router's link. A stall fails the transfer's timeout.
    let timeout = Duration::from_secs(15);
    tcp_transfer(&a, &b, &format!("{B_INNER}:5001"), 4 << 20, timeout)?;
    tcp_transfer(&a, &b, &format!("[{B_INNER6}]:5001"), 4 << 20, timeout)?;

    // The inner routes learned the inner MTU from greha's answers.
    let inner_mtu = NARROW - OVERHEAD;
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
    let c = &status["tunnels"][0]["counters"];
    ensure!(
        c["tx_icmp_too_big"].as_u64().unwrap_or(0) >= 2,
        "counters: {c}"
    );
    ensure!(
        daemon.log().contains("path_mtu=1400"),
        "the daemon's log names the learned MTU:\n{}",
        daemon.log()
    );
    // A ping that does not fit is refused at once, by the kernel, with the
    // MTU greha told it.
    let ping = a
        .command("ping")
        .args(["-M", "do", "-s", "1400", "-c", "1", "-W", "1", B_INNER])
        .output()?;
    let said = String::from_utf8_lossy(&ping.stderr).into_owned()
        + &String::from_utf8_lossy(&ping.stdout);
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
