//! keepalived's use_vmac against keepalived 2.2.7 (also with use_vmac):
//! the VIP lives on a macvlan with the VRRP virtual MAC, so a client's
//! ARP entry for it is 00:00:5e:00:01:VRID and stays so when the master
//! changes; greha's adverts and gratuitous ARPs come from that MAC; a
//! crash of greha's router costs the client Master_Down_Interval, no ARP
//! change; a graceful stop removes greha's virtual MAC interface.
use std::{
    net::SocketAddr,
    time::{Duration, Instant},
};

use anyhow::{Context as _, Result, ensure};
use greha_tests::{
    Lab, SHORT,
    probe::{ECHO_PORT, Echo, Prober, gap},
    start_keepalived, wait_until,
};
use nix::sys::signal::Signal;

const VIP: &str = "203.0.113.10";
/// VRID 51's virtual MAC.
const VMAC: &str = "00:00:5e:00:01:33";

#[test]
fn the_virtual_mac_stays_with_the_vip_across_a_failover() -> Result<()> {
    let mut lab = Lab::new()?;
    let a = lab.host("a")?;
    let b = lab.host("b")?;
    let client = lab.host("client")?;
    let sw = lab.switch("lan")?;
    let a_if = lab.plug(&a, "203.0.113.2/24", &sw)?;
    lab.plug(&b, "203.0.113.3/24", &sw)?;
    lab.plug(&client, "203.0.113.100/24", &sw)?;
    let _echo_a = Echo::start(&a, 'A')?;
    let _echo_b = Echo::start(&b, 'B')?;
    let _ka = start_keepalived(
        &lab,
        &b,
        "b",
        &format!(
            "state BACKUP\n interface eth0\n use_vmac\n virtual_router_id 51\n priority 100\n \
             advert_int 0.1\n version 3\n virtual_ipaddress {{\n {VIP}/32\n }}"
        ),
        "Entering BACKUP STATE",
    )?;
    let mut cmd = lab.greha(&a);
    cmd.args(["run", "--vrrp"]).arg(format!(
        "VI_1 interface eth0 vrid 51 priority 150 advert-int 0.1 use-vmac vip {VIP}/32"
    ));
    let mut g = a.spawn(&lab, cmd, true)?;
    g.wait_ready(SHORT)?;
    let holds = |h: &greha_tests::Host| -> Result<bool> {
        Ok(h.ip(&["-br", "-4", "addr", "show", "dev", "vrrp.51"])
            .is_ok_and(|o| o.contains(&format!("{VIP}/32"))))
    };
    wait_until(SHORT, "greha's VIP on its virtual MAC interface", || {
        holds(&a)
    })?;
    let link: serde_json::Value =
        serde_json::from_str(&a.ip(&["-j", "-d", "link", "show", "dev", "vrrp.51"])?)?;
    ensure!(
        link[0]["address"] == VMAC && link[0]["linkinfo"]["info_kind"] == "macvlan",
        "greha's vrrp.51: {link:#}"
    );
    // What the client's ARP entry says, and greha's adverts' source MAC.
    let target = SocketAddr::new(VIP.parse()?, ECHO_PORT);
    let prober = Prober::start(&client, target, Duration::from_millis(1))?;
    prober.wait_for('A', Instant::now(), SHORT)?;
    let neigh = || -> Result<String> { client.ip(&["neigh", "show", VIP]) };
    ensure!(neigh()?.contains(VMAC), "the client's entry: {}", neigh()?);
    let mut cap = client.command("tcpdump");
    cap.args(["-i", "eth0", "-e", "-n", "-c", "2", "ip proto 112"]);
    let mut cap = client.spawn(&lab, cap, false)?;
    cap.wait(SHORT).context("no advert seen")?;
    ensure!(
        cap.log()
            .lines()
            .filter(|l| l.contains("VRRP"))
            .all(|l| l.contains(&format!("{VMAC} >"))),
        "greha's adverts not from the virtual MAC:\n{}",
        cap.log()
    );
    // A crash: A leaves the LAN, then greha is killed.
    a.ip(&["link", "set", &a_if, "down"])?;
    let event = Instant::now();
    g.signal(Signal::SIGKILL)?;
    prober.wait_for('B', event, SHORT)?;
    let probes = prober.finish();
    let gap = gap(&probes, event, 'B').context("no failover seen")?;
    // Master_Down_Interval at priority 100, 100 ms: 360 ms; the rest is
    // a loaded machine's slack, not a goal (the bench measures).
    ensure!(
        gap.longest <= Duration::from_millis(360 + 300),
        "the client lost the VIP for {:?}",
        gap.longest
    );
    ensure!(
        neigh()?.contains(VMAC),
        "the client's entry moved: {}",
        neigh()?
    );
    // A graceful stop takes greha's virtual MAC interface with it.
    drop(g);
    a.ip(&["link", "set", &a_if, "up"])?;
    let mut cmd = lab.greha(&a);
    cmd.args(["run", "--vrrp"]).arg(format!(
        "VI_1 interface eth0 vrid 51 priority 50 advert-int 0.1 use-vmac vip {VIP}/32"
    ));
    let mut g = a.spawn(&lab, cmd, true)?;
    g.wait_ready(SHORT)?;
    ensure!(!holds(&a)?, "a crashed run's VIP is still on vrrp.51");
    let status = g.terminate(SHORT)?;
    ensure!(status.success(), "greha exited {status}:\n{}", g.log());
    ensure!(
        a.ip(&["link", "show", "dev", "vrrp.51"]).is_err(),
        "greha left vrrp.51 behind"
    );
    Ok(())
}
