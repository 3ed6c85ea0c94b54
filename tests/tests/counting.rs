//! The first program end to end: greha loads and attaches its counting XDP
//! program in a lab host, and the pinned per-CPU BTF map holds the exact
//! count of the frames another host sent, read both by greha and by bpftool.
use std::{net::UdpSocket, path::Path, process::Command};

use anyhow::{Context as _, Result, ensure};
use greha_tests::{Host, Lab, SHORT, greha_bin, run, wait_until};

const FRAMES: u64 = 100;
const PAYLOAD: usize = 100;
/// Ethernet 14 + IPv4 20 + UDP 8 + payload.
const FRAME_LEN: u64 = 14 + 20 + 8 + PAYLOAD as u64;

/// (rx_packets, rx_bytes) of `ifname` as `greha counters --json` reports them.
fn greha_counts(host: &Host, pin_dir: &Path, ifname: &str) -> Result<(u64, u64)> {
    let out = run(host
        .command(greha_bin())
        .arg("--pin-dir")
        .arg(pin_dir)
        .args(["counters", "--json"]))?;
    let v: serde_json::Value = serde_json::from_str(&out)?;
    let iface = v["interfaces"]
        .as_array()
        .context("no interfaces array")?
        .iter()
        .find(|i| i["name"] == ifname)
        .with_context(|| format!("no counters for {ifname} in {out}"))?;
    Ok((
        iface["rx_packets"].as_u64().context("rx_packets")?,
        iface["rx_bytes"].as_u64().context("rx_bytes")?,
    ))
}

/// The same, summed over CPUs from bpftool's BTF-formatted dump: proves the
/// pinned map carries named fields for any BTF-aware tool.
fn bpftool_counts(pin_dir: &Path, ifindex: u64) -> Result<(u64, u64)> {
    let map = pin_dir.join("GREHA_IF_COUNTERS");
    let out = run(Command::new("bpftool")
        .args(["map", "dump", "pinned"])
        .arg(&map)
        .arg("-j"))?;
    let v: serde_json::Value = serde_json::from_str(&out)?;
    let entry = v
        .as_array()
        .context("bpftool dump is not an array")?
        .iter()
        .map(|e| &e["formatted"])
        .find(|f| f["key"].as_u64() == Some(ifindex))
        .with_context(|| format!("no entry for ifindex {ifindex} in {out}"))?;
    let (mut packets, mut bytes) = (0, 0);
    for cpu in entry["values"].as_array().context("values")? {
        packets += cpu["value"]["rx_packets"]
            .as_u64()
            .context("no rx_packets field")?;
        bytes += cpu["value"]["rx_bytes"]
            .as_u64()
            .context("no rx_bytes field")?;
    }
    Ok((packets, bytes))
}

fn ifindex(host: &Host, ifname: &str) -> Result<u64> {
    let v: serde_json::Value =
        serde_json::from_str(&host.ip(&["-j", "link", "show", "dev", ifname])?)?;
    v[0]["ifindex"].as_u64().context("ifindex")
}

/// The id of the XDP program attached to `ifname`, if any.
fn xdp_prog_id(host: &Host, ifname: &str) -> Result<Option<u64>> {
    let v: serde_json::Value =
        serde_json::from_str(&host.ip(&["-j", "-d", "link", "show", "dev", ifname])?)?;
    Ok(v[0]["xdp"]["prog"]["id"].as_u64())
}

#[test]
fn counts_exact_frames_and_bytes() -> Result<()> {
    let mut lab = Lab::new()?;
    let a = lab.host("a")?;
    let b = lab.host("b")?;
    let link = lab.link(&a, "192.0.2.1/24", &b, "192.0.2.2/24")?;
    link.pin_neighbours()?;
    let pin_dir = lab.pin_dir("b");

    let mut greha = b.spawn(
        &lab,
        {
            let mut cmd = lab.greha(&b);
            cmd.args(["run", "--count", &link.b.ifname]);
            cmd
        },
        true,
    )?;
    greha.wait_ready(SHORT)?;
    let prog_id = xdp_prog_id(&b, &link.b.ifname)?.context("no XDP program attached")?;
    assert_eq!(greha_counts(&b, &pin_dir, &link.b.ifname).ok(), None);

    let dst = format!("{}:9", link.b.addr);
    a.enter(|| -> Result<()> {
        let sock = UdpSocket::bind("0.0.0.0:0")?;
        for _ in 0..FRAMES {
            sock.send_to(&[0x5a; PAYLOAD], &dst)?;
        }
        Ok(())
    })??;

    wait_until(SHORT, "all frames counted", || {
        Ok(greha_counts(&b, &pin_dir, &link.b.ifname)?.0 >= FRAMES)
    })?;
    let expected = (FRAMES, FRAMES * FRAME_LEN);
    assert_eq!(greha_counts(&b, &pin_dir, &link.b.ifname)?, expected);
    assert_eq!(
        bpftool_counts(&pin_dir, ifindex(&b, &link.b.ifname)?)?,
        expected
    );

    // A graceful stop leaves nothing behind: no pins, no XDP, no program.
    let status = greha.terminate(SHORT)?;
    ensure!(status.success(), "greha exited {status}:\n{}", greha.log());
    assert!(!pin_dir.exists(), "{} left behind", pin_dir.display());
    assert_eq!(xdp_prog_id(&b, &link.b.ifname)?, None);
    wait_until(SHORT, "the program to be unloaded", || {
        Ok(!Command::new("bpftool")
            .args(["prog", "show", "id", &prog_id.to_string()])
            .output()?
            .status
            .success())
    })?;
    Ok(())
}

#[test]
fn unknown_interface_is_refused_and_nothing_is_left() -> Result<()> {
    let mut lab = Lab::new()?;
    let a = lab.host("a")?;
    let b = lab.host("b")?;
    let link = lab.link(&a, "192.0.2.1/24", &b, "192.0.2.2/24")?;
    let pin_dir = lab.pin_dir("b");

    let out = lab
        .greha(&b)
        .args(["run", "--count", &link.b.ifname, "--count", "nosuch0"])
        .output()?;
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "greha accepted a missing interface");
    assert!(
        stderr.contains("interface nosuch0 does not exist"),
        "the error does not name the interface: {stderr}"
    );
    // The interface that did exist was attached first, and must be undone.
    assert_eq!(xdp_prog_id(&b, &link.b.ifname)?, None);
    assert!(!pin_dir.exists(), "{} left behind", pin_dir.display());
    Ok(())
}

/// Counting and the VRRP fast path share an interface (one XDP program,
/// greha_xdp, doing what each asks): the backup's interface counts every
/// frame, the master's adverts included, while the fast path absorbs the
/// steady ones; each goes away on its own.
#[test]
fn counting_and_the_vrrp_fast_path_share_an_interface() -> Result<()> {
    let mut lab = Lab::new()?;
    let a = lab.host("a")?;
    let b = lab.host("b")?;
    let link = lab.link(&a, "192.0.2.1/24", &b, "192.0.2.2/24")?;
    link.pin_neighbours()?;
    let vrrp = |p: u8| {
        format!("VI_1 interface eth0 vrid 51 priority {p} advert-int 0.1 vip 203.0.113.10/24")
    };
    let mut cmd = lab.greha(&a);
    cmd.args(["run", "--vrrp", &vrrp(150)]);
    let mut ga = a.spawn(&lab, cmd, true)?;
    ga.wait_ready(SHORT)?;
    let pin_dir = lab.pin_dir("b");
    let mut cmd = lab.greha(&b);
    cmd.args(["run", "--count", &link.b.ifname, "--vrrp", &vrrp(100)]);
    let mut gb = b.spawn(&lab, cmd, true)?;
    gb.wait_ready(SHORT)?;
    let prog_id = xdp_prog_id(&b, &link.b.ifname)?.context("no XDP program attached")?;
    let name =
        run(Command::new("bpftool").args(["prog", "show", "id", &prog_id.to_string(), "-j"]))?;
    ensure!(name.contains("\"greha_xdp\""), "{name}");
    wait_until(SHORT, "adverts absorbed on the counted interface", || {
        let v = lab.greha_status(&b)?;
        Ok(v["vrrp"][0]["fastpath"]["absorbed"].as_u64() >= Some(10))
    })?;
    let v = lab.greha_status(&b)?;
    let fp = &v["vrrp"][0]["fastpath"];
    let (packets, _) = greha_counts(&b, &pin_dir, &link.b.ifname)?;
    // Every advert that reached the fast path was counted first.
    let adverts = fp["absorbed"].as_u64().unwrap_or(0) + fp["to_daemon"].as_u64().unwrap_or(0);
    ensure!(
        packets >= adverts && adverts > 0,
        "counted {packets}, adverts {adverts}: {fp}"
    );
    ensure!(v["vrrp"][0]["state"] == "backup", "{v}");
    // Stopping B's VRRP and counting together leaves nothing on the
    // interface.
    let status = gb.terminate(SHORT)?;
    ensure!(status.success(), "greha exited {status}:\n{}", gb.log());
    assert_eq!(xdp_prog_id(&b, &link.b.ifname)?, None);
    assert!(!pin_dir.exists(), "{} left behind", pin_dir.display());
    Ok(())
}
