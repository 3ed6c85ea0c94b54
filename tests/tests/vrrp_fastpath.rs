//! The VRRP programs (XDP, and its tc twin for greha tunnels) under
//! BPF_PROG_TEST_RUN: a table of input frames, the verdict each must get,
//! the counter it must move, and the map state it must leave. The control
//! map is written with bpftool, as the daemon would write it. IPv4 and
//! IPv6 adverts, an IPv4 and an IPv6 instance sharing a VRID.
use std::{
    net::{IpAddr, Ipv4Addr, Ipv6Addr},
    path::Path,
    process::Command,
};

use anyhow::{Context as _, Result, ensure};
use greha::vrrp::packet::{Advert, Auth, ChecksumForm, MULTICAST, MULTICAST6, Version};
use greha_tests::{Host, Lab, SHORT, prog_test_run, run};

const XDP_DROP: u32 = 1;
const XDP_PASS: u32 = 2;
const TC_ACT_SHOT: u32 = 2;
/// TC_ACT_UNSPEC (-1): tcx goes on to the next program, or passes.
const TC_ACT_UNSPEC: u32 = u32::MAX;
const MASTER: Ipv4Addr = Ipv4Addr::new(198, 51, 100, 2);
const VIP: Ipv4Addr = Ipv4Addr::new(203, 0, 113, 10);
const MASTER6: Ipv6Addr = Ipv6Addr::new(0xfe80, 0, 0, 0, 0, 0, 0, 2);
const VIP6: Ipv6Addr = Ipv6Addr::new(0x2001, 0xdb8, 0, 0, 0, 0, 0, 0x10);

fn hex(bytes: &[u8]) -> Vec<String> {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// A VrrpCtl as greha-common lays it out, for a backup of priority 100
/// that preempts and follows MASTER at priority 150; the record is
/// GREHA_VRRP_SEEN's element `slot`.
fn ctl(
    version: u8,
    state: u8,
    auth_type: u8,
    interval_cs: u16,
    auth: &[u8; 8],
    slot: u32,
) -> Vec<u8> {
    ctl_prio(
        version,
        state,
        auth_type,
        interval_cs,
        auth,
        slot,
        100,
        true,
    )
}

/// `ctl` of a v3 IPv6 instance following MASTER6.
fn ctl6(state: u8, slot: u32) -> Vec<u8> {
    let mut v = ctl(3, state, 0, 100, &[0; 8], slot);
    v[16..32].copy_from_slice(&MASTER6.octets());
    v
}

/// `ctl` with our effective priority and preemption.
#[allow(clippy::too_many_arguments)]
fn ctl_prio(
    version: u8,
    state: u8,
    auth_type: u8,
    interval_cs: u16,
    auth: &[u8; 8],
    slot: u32,
    priority: u8,
    preempt: bool,
) -> Vec<u8> {
    let mut v = vec![version, state, 1, auth_type];
    v.extend(interval_cs.to_le_bytes());
    v.extend(1u16.to_le_bytes()); // one VIP
    v.extend(auth);
    // The master's address: 16 bytes, an IPv4 one first and zeros after.
    v.extend(MASTER.octets());
    v.extend([0; 12]);
    v.extend([150, 0]);
    v.extend(interval_cs.to_le_bytes());
    v.extend(slot.to_le_bytes());
    v.extend([priority, u8::from(preempt), 0, 0]);
    v
}

/// xdp_md: data_end is the frame's length, as the kernel's test run
/// demands; ingress_ifindex makes the frame arrive on `ifindex`.
fn xdp_md(frame: &[u8], ifindex: u32) -> Vec<u8> {
    let mut md = vec![0u8; 24];
    md[4..8].copy_from_slice(&(frame.len() as u32).to_ne_bytes());
    md[12..16].copy_from_slice(&ifindex.to_ne_bytes());
    md
}

/// __sk_buff up to ifindex (the rest zero, as the test run demands): the
/// frame is on `ifindex`.
fn skb_md(ifindex: u32) -> Vec<u8> {
    let mut md = vec![0u8; 44];
    md[40..44].copy_from_slice(&ifindex.to_ne_bytes());
    md
}

/// GREHA_VRRP_CTL's key of an IPv4 instance: interface, VRID, family 4.
fn key(ifindex: u32, vrid: u16) -> Vec<u8> {
    [
        &ifindex.to_le_bytes()[..],
        &vrid.to_le_bytes(),
        &4u16.to_le_bytes(),
    ]
    .concat()
}

/// The same for an IPv6 instance (family 6).
fn key6(ifindex: u32, vrid: u16) -> Vec<u8> {
    [
        &ifindex.to_le_bytes()[..],
        &vrid.to_le_bytes(),
        &6u16.to_le_bytes(),
    ]
    .concat()
}

fn map_update(pins: &Path, map: &str, key: &[u8], value: &[u8]) -> Result<()> {
    run(Command::new("bpftool")
        .args(["map", "update", "pinned"])
        .arg(pins.join(map))
        .arg("key")
        .arg("hex")
        .args(hex(key))
        .arg("value")
        .arg("hex")
        .args(hex(value)))?;
    Ok(())
}

/// GREHA_VRRP_STATS for `key`, summed over CPUs (zero before any packet).
fn stats(pins: &Path, key: &[u8]) -> Result<serde_json::Map<String, serde_json::Value>> {
    let out = Command::new("bpftool")
        .args(["map", "lookup", "pinned"])
        .arg(pins.join("GREHA_VRRP_STATS"))
        .arg("key")
        .arg("hex")
        .args(hex(key))
        .arg("-j")
        .output()?;
    let mut total = serde_json::Map::new();
    if !out.status.success() {
        return Ok(total);
    }
    let v: serde_json::Value = serde_json::from_slice(&out.stdout)?;
    for cpu in v["formatted"]["values"].as_array().context("values")? {
        for (k, val) in cpu["value"].as_object().context("value")? {
            let sum =
                total.get(k).and_then(|x| x.as_u64()).unwrap_or(0) + val.as_u64().unwrap_or(0);
            total.insert(k.clone(), sum.into());
        }
    }
    Ok(total)
}

/// An Ethernet + IPv6 frame around `vrrp`, from `src` to ff02::12 with
/// hop limit `hops`.
fn frame6(src: Ipv6Addr, hops: u8, vrrp: &[u8]) -> Vec<u8> {
    let mut f = vec![0x33, 0x33, 0, 0, 0, 0x12, 2, 0, 0, 0, 0, 1, 0x86, 0xdd];
    f.extend([0x60, 0, 0, 0]);
    f.extend((vrrp.len() as u16).to_be_bytes());
    f.extend([112, hops]);
    f.extend(src.octets());
    f.extend(MULTICAST6.octets());
    f.extend(vrrp);
    f
}

/// An Ethernet + IPv4 frame around `vrrp`, from `src` with `ttl`.
fn frame(src: Ipv4Addr, ttl: u8, vrrp: &[u8]) -> Vec<u8> {
    let mut f = vec![
        0x01, 0x00, 0x5e, 0x00, 0x00, 0x12, 2, 0, 0, 0, 0, 1, 0x08, 0x00,
    ];
    let mut ip = vec![0x45, 0xc0, 0, 0, 0, 0, 0, 0, ttl, 112, 0, 0];
    ip[2..4].copy_from_slice(&((20 + vrrp.len()) as u16).to_be_bytes());
    ip.extend(src.octets());
    ip.extend(MULTICAST.octets());
    f.extend(ip);
    f.extend(vrrp);
    f
}

fn advert(version: Version, vrid: u8, priority: u8, interval_cs: u16, auth: Auth) -> Advert {
    Advert {
        version,
        vrid,
        priority,
        interval_cs,
        addresses: vec![VIP.into()],
        auth,
    }
}

#[test]
fn verdicts_and_counters_for_every_check_and_rule() -> Result<()> {
    let mut lab = Lab::new()?;
    let a = lab.host("a")?;
    let b = lab.host("b")?;
    lab.link(&a, "198.51.100.1/24", &b, "198.51.100.2/24")?;
    let pins = lab.pin_dir("a");
    // greha loads and pins its datapath (the counter keeps it in use).
    let mut g = a.spawn(
        &lab,
        {
            let mut c = lab.greha(&a);
            c.args(["run", "--count", "eth0"]);
            c
        },
        true,
    )?;
    g.wait_ready(SHORT)?;
    let ifindex = ifindex(&a, "eth0")?;
    let progs = greha_tests::progs_dir(&pins)?;

    let pass = *b"1111\0\0\0\0";
    let v3 = key(ifindex, 51);
    // The IPv6 instance of the same VRID, its record in slot 7.
    let v6 = key6(ifindex, 51);
    map_update(&pins, "GREHA_VRRP_CTL", &v6, &ctl6(1, 7))?;
    let v2 = key(ifindex, 60);
    map_update(&pins, "GREHA_VRRP_CTL", &v3, &ctl(3, 1, 0, 100, &[0; 8], 0))?;
    map_update(&pins, "GREHA_VRRP_CTL", &v2, &ctl(2, 1, 1, 100, &pass, 1))?;
    // Our priority (200) above the master's (150): with preemption its
    // adverts go to the daemon (Master_Down must run out), without they are
    // steady.
    let preempting = key(ifindex, 53);
    let not_preempting = key(ifindex, 54);
    map_update(
        &pins,
        "GREHA_VRRP_CTL",
        &preempting,
        &ctl_prio(3, 1, 0, 100, &[0; 8], 2, 200, true),
    )?;
    map_update(
        &pins,
        "GREHA_VRRP_CTL",
        &not_preempting,
        &ctl_prio(3, 1, 0, 100, &[0; 8], 3, 200, false),
    )?;
    // A unicast instance: a peer routers away sends TTL below 255, which
    // keepalived takes unless the peer has bounds; with bounds the fast
    // path is off and the daemon judges each advert.
    let unicast = key(ifindex, 55);
    let mut unicast_ctl = ctl(3, 1, 0, 100, &[0; 8], 4);
    unicast_ctl[33] = 1;
    map_update(&pins, "GREHA_VRRP_CTL", &unicast, &unicast_ctl)?;
    let bounded = key(ifindex, 56);
    let mut bounded_ctl = ctl(3, 1, 0, 100, &[0; 8], 5);
    bounded_ctl[33] = 1;
    bounded_ctl[2] = 0;
    map_update(&pins, "GREHA_VRRP_CTL", &bounded, &bounded_ctl)?;

    let ka = ChecksumForm::PseudoHeader;
    let w3 = |a: Advert| a.write(ka, MASTER, MULTICAST).to_vec();
    let steady3 = w3(advert(Version::V3, 51, 150, 100, Auth::None));
    let steady2 = advert(Version::V2, 60, 150, 100, Auth::pass("1111"))
        .write(ka, MASTER, MULTICAST)
        .to_vec();
    let other = Ipv4Addr::new(198, 51, 100, 9);
    let mut bad_sum = steady3.clone();
    bad_sum[7] ^= 0xff;
    let mut bad_type = steady3.clone();
    bad_type[0] = 0x32;
    let mut bad_len = steady3.clone();
    bad_len[3] = 2;
    let w6 = |a: Advert| a.write(ka, MASTER6, MULTICAST6).to_vec();
    let advert6 = |priority: u8| Advert {
        addresses: vec![VIP6.into()],
        ..advert(Version::V3, 51, priority, 100, Auth::None)
    };
    let steady6 = w6(advert6(150));
    // The checksum without the pseudo-header: valid over IPv4 (RFC 9568),
    // never over IPv6.
    let mut no_pseudo6 = steady6.clone();
    no_pseudo6[6..8].copy_from_slice(&[0, 0]);
    let mut sum: u32 = no_pseudo6
        .chunks(2)
        .map(|w| u32::from(u16::from_be_bytes([w[0], w[1]])))
        .sum();
    while sum >> 16 != 0 {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    no_pseudo6[6..8].copy_from_slice(&(!(sum as u16)).to_be_bytes());
    let other6 = Ipv6Addr::new(0xfe80, 0, 0, 0, 0, 0, 0, 9);
    let fixtures: Vec<Fixture> = vec![
        (
            "IPv6: steady advert from the followed master",
            &v6,
            frame6(MASTER6, 255, &steady6),
            XDP_DROP,
            "absorbed",
        ),
        (
            "IPv6: a new priority",
            &v6,
            frame6(MASTER6, 255, &w6(advert6(160))),
            XDP_PASS,
            "to_daemon",
        ),
        (
            "IPv6: a new source",
            &v6,
            frame6(other6, 255, &advert6(150).write(ka, other6, MULTICAST6)),
            XDP_PASS,
            "to_daemon",
        ),
        (
            "IPv6: hop limit 64",
            &v6,
            frame6(MASTER6, 64, &steady6),
            XDP_DROP,
            "ip_ttl_errors",
        ),
        (
            "IPv6: checksum without the pseudo-header",
            &v6,
            frame6(MASTER6, 255, &no_pseudo6),
            XDP_DROP,
            "checksum_errors",
        ),
        (
            "IPv6: an IPv4 advert's length (4-byte addresses)",
            &v6,
            frame6(MASTER6, 255, &steady3),
            XDP_DROP,
            "packet_length_errors",
        ),
        (
            "steady v3 advert from the followed master",
            &v3,
            frame(MASTER, 255, &steady3),
            XDP_DROP,
            "absorbed",
        ),
        (
            "steady, RFC 9568 checksum form",
            &v3,
            frame(
                MASTER,
                255,
                &advert(Version::V3, 51, 150, 100, Auth::None).write(
                    ChecksumForm::VrrpOnly,
                    MASTER,
                    MULTICAST,
                ),
            ),
            XDP_DROP,
            "absorbed",
        ),
        (
            "priority 0",
            &v3,
            frame(
                MASTER,
                255,
                &w3(advert(Version::V3, 51, 0, 100, Auth::None)),
            ),
            XDP_PASS,
            "rcvd_pri_zero_packets",
        ),
        (
            "a new priority",
            &v3,
            frame(
                MASTER,
                255,
                &w3(advert(Version::V3, 51, 160, 100, Auth::None)),
            ),
            XDP_PASS,
            "to_daemon",
        ),
        (
            "a master below our priority, preempting",
            &preempting,
            frame(
                MASTER,
                255,
                &w3(advert(Version::V3, 53, 150, 100, Auth::None)),
            ),
            XDP_PASS,
            "to_daemon",
        ),
        (
            "a master below our priority, nopreempt",
            &not_preempting,
            frame(
                MASTER,
                255,
                &w3(advert(Version::V3, 54, 150, 100, Auth::None)),
            ),
            XDP_DROP,
            "absorbed",
        ),
        (
            "a new interval",
            &v3,
            frame(
                MASTER,
                255,
                &w3(advert(Version::V3, 51, 150, 50, Auth::None)),
            ),
            XDP_PASS,
            "to_daemon",
        ),
        (
            "a new source",
            &v3,
            frame(
                other,
                255,
                &advert(Version::V3, 51, 150, 100, Auth::None).write(ka, other, MULTICAST),
            ),
            XDP_PASS,
            "to_daemon",
        ),
        (
            "interval 0",
            &v3,
            frame(
                MASTER,
                255,
                &w3(advert(Version::V3, 51, 150, 0, Auth::None)),
            ),
            XDP_DROP,
            "adv_interval_errors",
        ),
        (
            "TTL 64",
            &v3,
            frame(MASTER, 64, &steady3),
            XDP_DROP,
            "ip_ttl_errors",
        ),
        (
            "TTL 64 to a unicast instance",
            &unicast,
            frame(
                MASTER,
                64,
                &w3(advert(Version::V3, 55, 150, 100, Auth::None)),
            ),
            XDP_DROP,
            "absorbed",
        ),
        (
            "TTL 64 to a unicast instance with TTL bounds",
            &bounded,
            frame(
                MASTER,
                64,
                &w3(advert(Version::V3, 56, 150, 100, Auth::None)),
            ),
            XDP_PASS,
            "to_daemon",
        ),
        (
            "bad checksum",
            &v3,
            frame(MASTER, 255, &bad_sum),
            XDP_DROP,
            "checksum_errors",
        ),
        (
            "type 2",
            &v3,
            frame(MASTER, 255, &bad_type),
            XDP_DROP,
            "rcvd_invalid_type_packets",
        ),
        (
            "count says 2, one address",
            &v3,
            frame(MASTER, 255, &bad_len),
            XDP_DROP,
            "packet_length_errors",
        ),
        (
            "v2 advert to a v3 instance",
            &v3,
            frame(MASTER, 255, &{
                let mut v = steady2.clone();
                v[1] = 51;
                v
            }),
            XDP_DROP,
            "version_errors",
        ),
        (
            "steady v2 advert with the password",
            &v2,
            frame(MASTER, 255, &steady2),
            XDP_DROP,
            "absorbed",
        ),
        (
            "v2, another interval",
            &v2,
            frame(
                MASTER,
                255,
                &advert(Version::V2, 60, 150, 200, Auth::pass("1111")).write(ka, MASTER, MULTICAST),
            ),
            XDP_DROP,
            "adv_interval_errors",
        ),
        (
            "v2, wrong password",
            &v2,
            frame(
                MASTER,
                255,
                &advert(Version::V2, 60, 150, 100, Auth::pass("2222")).write(ka, MASTER, MULTICAST),
            ),
            XDP_DROP,
            "auth_failures",
        ),
        (
            "v2, no authentication",
            &v2,
            frame(
                MASTER,
                255,
                &advert(Version::V2, 60, 150, 100, Auth::None).write(ka, MASTER, MULTICAST),
            ),
            XDP_DROP,
            "auth_failures",
        ),
    ];
    // The XDP program, then its tc twin for greha tunnels: one table.
    for tc in [false, true] {
        let prog = progs.join(if tc { "greha_vrrp_tc" } else { "greha_vrrp" });
        let ctx_of = |frame: &[u8]| {
            if tc {
                skb_md(ifindex)
            } else {
                xdp_md(frame, ifindex)
            }
        };
        let as_prog = |xdp: u32| match (tc, xdp) {
            (false, v) => v,
            (true, XDP_DROP) => TC_ACT_SHOT,
            (true, _) => TC_ACT_UNSPEC,
        };
        // A backup following MASTER.
        map_update(&pins, "GREHA_VRRP_CTL", &v3, &ctl(3, 1, 0, 100, &[0; 8], 0))?;
        for (what, key, frame, verdict, counter) in &fixtures {
            let before = stats(&pins, key)?;
            let (got, _) = a.enter(|| prog_test_run(&prog, frame, Some(&ctx_of(frame)), 1))??;
            let verdict = &as_prog(*verdict);
            ensure!(
                got == *verdict,
                "{what}: verdict {got}, expected {verdict}; counters {:?}",
                stats(&pins, key)?
            );
            let after = stats(&pins, key)?;
            let delta = |f: &str| {
                after.get(f).and_then(|v| v.as_u64()).unwrap_or(0)
                    - before.get(f).and_then(|v| v.as_u64()).unwrap_or(0)
            };
            ensure!(
                delta(counter) == 1,
                "{what}: {counter} moved by {}: {after:?}",
                delta(counter)
            );
            let moved: Vec<&String> = after.keys().filter(|f| delta(f) > 0).collect();
            let expected = match *counter {
                "absorbed" => 2,
                "to_daemon" => 2,
                "rcvd_pri_zero_packets" => 3,
                _ => 1,
            };
            ensure!(moved.len() == expected, "{what}: counters moved: {moved:?}");
        }

        // Not for a configured instance, or not VRRP: not the program's.
        for (what, frame) in [
            (
                "unknown VRID",
                frame(
                    MASTER,
                    255,
                    &w3(advert(Version::V3, 52, 150, 100, Auth::None)),
                ),
            ),
            ("not VRRP", {
                let mut f = frame(MASTER, 255, &steady3);
                f[14 + 9] = 17;
                f
            }),
        ] {
            let (got, _) = a.enter(|| prog_test_run(&prog, &frame, Some(&ctx_of(&frame)), 1))??;
            ensure!(got == as_prog(XDP_PASS), "{what}: verdict {got}");
        }

        // Master: every valid advert reaches the daemon.
        map_update(&pins, "GREHA_VRRP_CTL", &v3, &ctl(3, 2, 0, 100, &[0; 8], 0))?;
        let f = frame(MASTER, 255, &steady3);
        let (got, _) = a.enter(|| prog_test_run(&prog, &f, Some(&ctx_of(&f)), 1))??;
        ensure!(
            got == as_prog(XDP_PASS),
            "a master must see every advert: verdict {got}"
        );
    }

    // The last valid advert is in GREHA_VRRP_SEEN for the daemon's timer.
    let out = run(Command::new("bpftool")
        .args(["map", "lookup", "pinned"])
        .arg(pins.join("GREHA_VRRP_SEEN"))
        .arg("key")
        .arg("hex")
        .args(hex(&0u32.to_le_bytes()))
        .arg("-j"))?;
    let seen: serde_json::Value = serde_json::from_str(&out)?;
    let seen = &seen["formatted"]["value"];
    ensure!(
        seen["src"] == serde_json::json!(greha_common::ipv4_in16([198, 51, 100, 2])),
        "{seen}"
    );
    let seen6 = self::seen(&pins, 7)?;
    ensure!(
        seen6["src"] == serde_json::json!(MASTER6.octets()),
        "the IPv6 instance's record: {seen6}"
    );
    ensure!(
        seen["priority"] == 150 && seen["interval_cs"] == 100,
        "{seen}"
    );
    ensure!(seen["last_ns"].as_u64() > Some(0), "{seen}");
    Ok(())
}

/// (what, map key, frame, expected verdict, the counter it must move).
type Fixture<'a> = (&'a str, &'a [u8], Vec<u8>, u32, &'a str);

fn ifindex(host: &Host, dev: &str) -> Result<u32> {
    let v: serde_json::Value =
        serde_json::from_str(&host.ip(&["-j", "link", "show", "dev", dev])?)?;
    Ok(v[0]["ifindex"].as_u64().context("ifindex")? as u32)
}

/// A `repr(C)` map value of greha-common as the bytes the kernel stores.
fn bytes_of<T: Copy>(v: &T) -> Vec<u8> {
    // SAFETY: greha-common's ABI types are plain integers and byte arrays
    // with no padding (its layout test checks it).
    unsafe { std::slice::from_raw_parts((v as *const T).cast::<u8>(), size_of::<T>()).to_vec() }
}

/// GREHA_VRRP_SEEN's record `slot`, as the program left it.
fn seen(pins: &Path, slot: u32) -> Result<serde_json::Value> {
    let out = run(Command::new("bpftool")
        .args(["map", "lookup", "pinned"])
        .arg(pins.join("GREHA_VRRP_SEEN"))
        .arg("key")
        .arg("hex")
        .args(hex(&slot.to_le_bytes()))
        .arg("-j"))?;
    let v: serde_json::Value = serde_json::from_str(&out)?;
    Ok(v["formatted"]["value"].clone())
}

/// The eBPF programs are held to greha-common's table of steady-advert
/// cases, the table the daemon's rule is tested against
/// (`router::absorbed`): a steady advert is dropped and recorded in
/// GREHA_VRRP_SEEN; anything else reaches the daemon and is not recorded
/// (a stray advert recorded there would hide the followed master's).
#[test]
fn the_programs_follow_the_steady_table() -> Result<()> {
    use greha_common::STEADY_CASES;
    let mut lab = Lab::new()?;
    let a = lab.host("a")?;
    let b = lab.host("b")?;
    lab.link(&a, "198.51.100.1/24", &b, "198.51.100.2/24")?;
    let pins = lab.pin_dir("a");
    let mut cmd = lab.greha(&a);
    cmd.args(["run", "--count", "eth0"]);
    let mut g = a.spawn(&lab, cmd, true)?;
    g.wait_ready(SHORT)?;
    let ifindex = ifindex(&a, "eth0")?;
    let progs = greha_tests::progs_dir(&pins)?;
    let vips = [VIP, Ipv4Addr::new(203, 0, 113, 11)];
    let vips6 = [VIP6, Ipv6Addr::new(0x2001, 0xdb8, 0, 0, 0, 0, 0, 0x11)];
    // The table's IPv4 addresses as link-local IPv6 ones (fe80::a.b.c.d),
    // for the IPv6 round.
    let to6 = |a: [u8; 16]| -> [u8; 16] {
        if a == [0; 16] {
            return a;
        }
        let mut v6 = [0u8; 16];
        v6[..2].copy_from_slice(&[0xfe, 0x80]);
        v6[12..].copy_from_slice(&a[..4]);
        v6
    };
    for (tc, ipv6) in [(false, false), (true, false), (false, true), (true, true)] {
        let prog = progs.join(if tc { "greha_vrrp_tc" } else { "greha_vrrp" });
        for (n, case) in STEADY_CASES.iter().enumerate() {
            let vrid = 100 + n as u8;
            let slot = n as u32;
            let mut ctl = case.ctl;
            ctl.slot = slot;
            let mut advert_src = case.advert.src;
            if ipv6 {
                ctl.master_ip = to6(ctl.master_ip);
                advert_src = to6(advert_src);
            }
            let k = if ipv6 {
                key6(ifindex, u16::from(vrid))
            } else {
                key(ifindex, u16::from(vrid))
            };
            map_update(&pins, "GREHA_VRRP_CTL", &k, &bytes_of(&ctl))?;
            // A blank record, so a write is seen.
            map_update(
                &pins,
                "GREHA_VRRP_SEEN",
                &slot.to_le_bytes(),
                &bytes_of(&greha_common::VrrpSeen::default()),
            )?;
            let count = usize::from(case.advert.count);
            let addresses: Vec<IpAddr> = if ipv6 {
                vips6[..count].iter().map(|a| (*a).into()).collect()
            } else {
                vips[..count].iter().map(|a| (*a).into()).collect()
            };
            let vrrp = Advert {
                version: Version::V3,
                vrid,
                priority: case.advert.priority,
                interval_cs: case.advert.interval_cs,
                addresses,
                auth: Auth::None,
            };
            let f = if ipv6 {
                let src = Ipv6Addr::from(advert_src);
                frame6(
                    src,
                    255,
                    &vrrp.write(ChecksumForm::PseudoHeader, src, MULTICAST6),
                )
            } else {
                let src = Ipv4Addr::from(<[u8; 4]>::try_from(&advert_src[..4])?);
                frame(
                    src,
                    255,
                    &vrrp.write(ChecksumForm::PseudoHeader, src, MULTICAST),
                )
            };
            let md = if tc {
                skb_md(ifindex)
            } else {
                xdp_md(&f, ifindex)
            };
            let (got, _) = a.enter(|| prog_test_run(&prog, &f, Some(&md), 1))??;
            let want = match (tc, case.steady) {
                (false, true) => XDP_DROP,
                (false, false) => XDP_PASS,
                (true, true) => TC_ACT_SHOT,
                (true, false) => TC_ACT_UNSPEC,
            };
            let what = format!(
                "{} ({}, {})",
                case.what,
                if tc { "tc" } else { "XDP" },
                if ipv6 { "IPv6" } else { "IPv4" }
            );
            ensure!(got == want, "{what}: verdict {got}, expected {want}");
            let s = seen(&pins, slot)?;
            let recorded = s["last_ns"].as_u64() > Some(0);
            ensure!(
                recorded == case.steady,
                "{what}: recorded in GREHA_VRRP_SEEN: {recorded}, steady: {}: {s}",
                case.steady
            );
            if recorded {
                ensure!(
                    s["src"] == serde_json::json!(advert_src)
                        && s["priority"] == case.advert.priority,
                    "{what}: {s}"
                );
            }
        }
    }
    Ok(())
}
