//! GRE tunnels on greha's eBPF datapath, between two lab hosts, on a kernel
//! with no GRE module: real traffic (ping, iperf3, a 1 MiB transfer), the
//! wire format checked by tshark, hostile GRE built by scapy, counters read
//! by bpftool, and nothing left behind.
use std::{
    fs,
    path::{Path, PathBuf},
    process::Command,
};

use anyhow::{Context as _, Result, bail, ensure};
use greha_tests::{Host, Lab, SHORT, greha_bin, run, wait_until};

const A_UNDERLAY: &str = "198.51.100.1";
const B_UNDERLAY: &str = "198.51.100.2";
const A_INNER: &str = "192.0.2.1";
/// The inner addresses' network.
const A_INNER_NET: &str = "192.0.2";
const B_INNER: &str = "192.0.2.2";

/// Two hosts joined by an underlay veth, each with its own greha pin
/// directory.
struct Pair {
    lab: Lab,
    a: Host,
    b: Host,
    a_pins: PathBuf,
    b_pins: PathBuf,
}

impl Pair {
    fn new() -> Result<Self> {
        let mut lab = Lab::new()?;
        let a = lab.host("a")?;
        let b = lab.host("b")?;
        let link = lab.link(
            &a,
            &format!("{A_UNDERLAY}/24"),
            &b,
            &format!("{B_UNDERLAY}/24"),
        )?;
        ensure!(link.a.ifname == "eth0" && link.b.ifname == "eth0");
        let a_pins = lab.pin_dir("a");
        let b_pins = lab.pin_dir("b");
        Ok(Self {
            lab,
            a,
            b,
            a_pins,
            b_pins,
        })
    }

    /// Both ends of one tunnel; `extra` is appended to both definitions.
    fn tunnel(&self, name: &str, mode: &str, extra: &str) -> Result<()> {
        for (host, pins, local, remote, inner) in [
            (&self.a, &self.a_pins, A_UNDERLAY, B_UNDERLAY, A_INNER),
            (&self.b, &self.b_pins, B_UNDERLAY, A_UNDERLAY, B_INNER),
        ] {
            let spec = format!(
                "{name} mode {mode} local {local} remote {remote} address {inner}/24 {extra}"
            );
            greha(host, pins, &["tunnel", "add"], &spec)?;
        }
        Ok(())
    }
}

fn greha(host: &Host, pins: &Path, args: &[&str], spec: &str) -> Result<String> {
    run(host
        .command(greha_bin())
        .arg("--pin-dir")
        .arg(pins)
        .args(args)
        .args(spec.split_whitespace()))
}

/// `greha tunnel add` that must fail; returns its stderr.
fn greha_fails(host: &Host, pins: &Path, spec: &str) -> Result<String> {
    let out = host
        .command(greha_bin())
        .arg("--pin-dir")
        .arg(pins)
        .args(["tunnel", "add"])
        .args(spec.split_whitespace())
        .output()?;
    ensure!(!out.status.success(), "greha accepted: {spec}");
    Ok(String::from_utf8_lossy(&out.stderr).into_owned())
}

/// The counters of tunnel `name` from `greha tunnel show --json`.
fn counters(host: &Host, pins: &Path, name: &str) -> Result<serde_json::Value> {
    let out = greha(host, pins, &["tunnel", "show", "--json"], "")?;
    let v: serde_json::Value = serde_json::from_str(&out)?;
    v.as_array()
        .context("not an array")?
        .iter()
        .find(|t| t["name"] == name)
        .map(|t| t["counters"].clone())
        .with_context(|| format!("no tunnel {name} in {out}"))
}

fn counter(host: &Host, pins: &Path, name: &str, field: &str) -> Result<u64> {
    counters(host, pins, name)?[field]
        .as_u64()
        .with_context(|| format!("no counter {field}"))
}

/// The same counters summed over CPUs from bpftool's BTF dump of the
/// pinned map: the field names are the kernel's view, not greha's.
fn bpftool_counters(pins: &Path, id: u64) -> Result<serde_json::Map<String, serde_json::Value>> {
    let out = run(Command::new("bpftool")
        .args(["map", "lookup", "pinned"])
        .arg(pins.join("GREHA_TUNNEL_COUNTERS"))
        .args(["key", &id.to_string(), "0", "0", "0", "-j"]))?;
    let v: serde_json::Value = serde_json::from_str(&out)?;
    let mut total = serde_json::Map::new();
    for cpu in v["formatted"]["values"].as_array().context("values")? {
        for (k, val) in cpu["value"].as_object().context("value")? {
            let sum =
                total.get(k).and_then(|x| x.as_u64()).unwrap_or(0) + val.as_u64().unwrap_or(0);
            total.insert(k.clone(), sum.into());
        }
    }
    Ok(total)
}

/// Permanent neighbour entries on the tunnel interfaces, so no ARP crosses
/// the tunnel and frame counts are exact.
fn pin_tunnel_neighbours(pair: &Pair, dev: &str) -> Result<()> {
    for (here, there, addr) in [(&pair.a, &pair.b, B_INNER), (&pair.b, &pair.a, A_INNER)] {
        let mac = mac_of(there, dev)?;
        here.ip(&[
            "neigh",
            "replace",
            addr,
            "lladdr",
            &mac,
            "dev",
            dev,
            "nud",
            "permanent",
        ])?;
    }
    Ok(())
}

fn ping(host: &Host, dst: &str, count: u32, size: u32) -> Result<String> {
    run(host.command("ping").args([
        "-c",
        &count.to_string(),
        "-i",
        "0.01",
        "-W",
        "2",
        "-s",
        &size.to_string(),
        "-M",
        "do",
        dst,
    ]))
}

fn mac_of(host: &Host, ifname: &str) -> Result<String> {
    let v: serde_json::Value =
        serde_json::from_str(&host.ip(&["-j", "link", "show", "dev", ifname])?)?;
    Ok(v[0]["address"].as_str().context("address")?.to_owned())
}

/// 1 MiB over TCP through the tunnel, compared byte for byte.
fn transfer_1mib(pair: &Pair) -> Result<()> {
    transfer(pair, &format!("{B_INNER}:5001"), 1 << 20)
}

/// `len` bytes over TCP from A to B listening on `to`, compared byte for
/// byte.
fn transfer(pair: &Pair, to: &str, len: u32) -> Result<()> {
    greha_tests::tcp_transfer(&pair.a, &pair.b, to, len, SHORT)
}

/// No drop counted by `name`'s counters on either host.
fn no_drops(pair: &Pair, name: &str) -> Result<()> {
    for (host, pins) in [(&pair.a, &pair.a_pins), (&pair.b, &pair.b_pins)] {
        let c = counters(host, pins, name)?;
        for (field, v) in c.as_object().context("counters")? {
            if field.contains("drop") {
                ensure!(v == 0, "{field} = {v} on a clean run: {c}");
            }
        }
    }
    Ok(())
}

fn iperf3_tcp(pair: &Pair) -> Result<f64> {
    let mut server = pair.b.spawn(
        &pair.lab,
        {
            let mut c = pair.b.command("iperf3");
            c.args(["-s", "-1", "--forceflush", "-B", B_INNER]);
            c
        },
        false,
    )?;
    server.wait_for_output("Server listening", SHORT)?;
    let out = run(pair
        .a
        .command("iperf3")
        .args(["-c", B_INNER, "-t", "2", "-J"]))?;
    server.wait(SHORT)?;
    let v: serde_json::Value = serde_json::from_str(&out)?;
    v["end"]["sum_received"]["bits_per_second"]
        .as_f64()
        .context("no throughput in iperf3's report")
}

/// tshark, an independent dissector, on B's underlay while `during` runs:
/// the first `count` frames matching `filter`, as `fields` separated by
/// commas (repeated fields, outer then inner, too).
fn tshark_during(
    pair: &Pair,
    count: u32,
    filter: &str,
    fields: &[&str],
    during: impl FnOnce() -> Result<()>,
) -> Result<String> {
    let mut c = pair.b.command("tshark");
    c.args(["-i", "eth0", "-l", "-c", &count.to_string(), "-f", filter])
        .args(["-T", "fields", "-E", "separator=,"]);
    for f in fields {
        c.args(["-e", f]);
    }
    let mut tshark = pair.b.spawn(&pair.lab, c, false)?;
    // "Capturing on" comes before dumpcap captures; this comes after.
    tshark.wait_for_output("Capture started", SHORT)?;
    during()?;
    let status = tshark
        .wait(SHORT)
        .with_context(|| format!("tshark:\n{}", tshark.log()))?;
    ensure!(status.success(), "tshark failed:\n{}", tshark.log());
    Ok(tshark.log())
}

/// Everything a working tunnel must carry, in either mode.
fn check_traffic(pair: &Pair, name: &str) -> Result<()> {
    ping(&pair.a, B_INNER, 3, 56).context("ping through the tunnel")?;
    ping(&pair.b, A_INNER, 3, 56).context("ping back through the tunnel")?;
    transfer_1mib(pair)?;
    let bps = iperf3_tcp(pair)?;
    ensure!(bps > 0.0, "iperf3 moved nothing");
    // The underlay keeps working beside the tunnel.
    ping(&pair.a, B_UNDERLAY, 3, 56).context("ping on the underlay")?;
    no_drops(pair, name)
}

#[test]
fn gretap_with_key_carries_arp_ping_tcp_and_is_real_gre() -> Result<()> {
    let pair = Pair::new()?;
    pair.tunnel("gretap1", "gretap", "key 42")?;
    // Overhead with a key: 38 + 4 bytes, as the kernel's.
    let mtu: serde_json::Value =
        serde_json::from_str(&pair.a.ip(&["-j", "link", "show", "dev", "gretap1"])?)?;
    assert_eq!(mtu[0]["mtu"], 1500 - 42);

    check_traffic(&pair, "gretap1")?;
    // ARP crossed the tunnel: A learned B's tunnel interface MAC on gretap1.
    let neigh = pair.a.ip(&["neigh", "show", B_INNER, "dev", "gretap1"])?;
    let b_mac = mac_of(&pair.b, "gretap1")?;
    ensure!(
        neigh.contains(&b_mac),
        "no ARP entry for B via gretap1: {neigh:?}"
    );

    // A packet of exactly the tunnel MTU passes; one byte more with DF is
    // refused by the sender's stack, as with kernel gretap.
    ping(&pair.a, B_INNER, 1, 1458 - 28).context("a full-MTU packet")?;
    let too_big = pair
        .a
        .command("ping")
        .args([
            "-c",
            "1",
            "-W",
            "1",
            "-M",
            "do",
            "-s",
            &(1458 - 28 + 1).to_string(),
            B_INNER,
        ])
        .output()?;
    ensure!(
        !too_big.status.success(),
        "a packet over the tunnel MTU went through"
    );
    let err = String::from_utf8_lossy(&too_big.stderr).to_string()
        + &String::from_utf8_lossy(&too_big.stdout);
    ensure!(err.contains("mtu=1458"), "not refused for its size: {err}");

    // tshark, an independent dissector, sees GRE with the key and inner frame.
    let log = tshark_during(
        &pair,
        2,
        "ip proto 47",
        &["gre.proto", "gre.key", "eth.type", "ip.src", "icmp.type"],
        || ping(&pair.a, B_INNER, 1, 56).map(drop),
    )?;
    let line = log
        .lines()
        .find(|l| l.starts_with("0x6558"))
        .map(str::to_owned)
        .with_context(|| format!("tshark saw no gretap frame:\n{log}"))?;
    // Outer then inner values, as tshark lists repeated fields.
    // tshark prints the key in hex: 0x2a is 42.
    assert_eq!(
        line,
        format!("0x6558,0x0000002a,0x0800,0x0800,{A_UNDERLAY},{A_INNER},8")
    );
    Ok(())
}

/// iproute2's ikey/okey, `ttl inherit`/`tos inherit` and a hexadecimal
/// TOS, on the wire as tshark reads it: A sends with okey 6 and its
/// ping's TTL and TOS (inherited), B answers with okey 5, TTL 33 and TOS
/// 0x20; each accepts the other's key.
#[test]
fn ikey_okey_and_inherited_ttl_and_tos_are_on_the_wire() -> Result<()> {
    let pair = Pair::new()?;
    for (host, pins, local, remote, inner, extra) in [
        (
            &pair.a,
            &pair.a_pins,
            A_UNDERLAY,
            B_UNDERLAY,
            A_INNER,
            "ikey 5 okey 6 ttl inherit tos inherit",
        ),
        (
            &pair.b,
            &pair.b_pins,
            B_UNDERLAY,
            A_UNDERLAY,
            B_INNER,
            "ikey 6 okey 5 ttl 33 tos 20",
        ),
    ] {
        let spec =
            format!("t1 mode gretap local {local} remote {remote} address {inner}/24 {extra}");
        greha(host, pins, &["tunnel", "add"], &spec)?;
    }
    pin_tunnel_neighbours(&pair, "t1")?;
    let log = tshark_during(
        &pair,
        2,
        "ip proto 47",
        &["ip.src", "ip.ttl", "ip.dsfield", "gre.key"],
        || {
            run(pair
                .a
                .command("ping")
                .args(["-c", "1", "-W", "2", "-t", "17", "-Q", "0x28", B_INNER]))
            .map(drop)
        },
    )?;
    // Outer then inner values, as tshark lists repeated fields: outer
    // TTL, outer TOS and the key of the frame from `src`.
    let outer = |src: &str| -> Option<(String, String, String)> {
        let line = log.lines().find(|l| l.starts_with(&format!("{src},")))?;
        let f: Vec<&str> = line.split(',').collect();
        Some((
            f.get(2)?.to_string(),
            f.get(4)?.to_string(),
            f.get(6)?.to_string(),
        ))
    };
    let want = |t: &str, d: &str, k: &str| Some((t.to_owned(), d.to_owned(), k.to_owned()));
    ensure!(
        outer(A_UNDERLAY) == want("17", "0x28", "0x00000006"),
        "A's frame (inherited TTL and TOS, okey 6): {log}"
    );
    ensure!(
        outer(B_UNDERLAY) == want("33", "0x20", "0x00000005"),
        "B's frame (TTL 33, TOS 0x20, okey 5): {log}"
    );
    Ok(())
}

/// IPv6 TCP over gretap where A's underlay segments in software (TSO and
/// GSO off): each segment carries its own outer lengths. Before, the
/// encap put IPv6 frames in front of the GRE header by change_head and
/// wrote the whole GSO packet's length into every segment's outer header;
/// B dropped them as truncated and the transfer stalled.
#[test]
fn ipv6_over_gretap_survives_software_segmentation() -> Result<()> {
    let pair = Pair::new()?;
    pair.tunnel("gretap1", "gretap", "")?;
    for (host, addr) in [(&pair.a, "2001:db8::1/64"), (&pair.b, "2001:db8::2/64")] {
        // The lab's hosts start with IPv6 off.
        host.sysctl("net.ipv6.conf.gretap1.disable_ipv6", "0")?;
        host.ip(&["-6", "addr", "add", addr, "dev", "gretap1", "nodad"])?;
    }
    run(pair
        .a
        .command("ethtool")
        .args(["-K", "eth0", "tso", "off", "gso", "off"]))?;
    run(pair
        .a
        .command("ping")
        .args(["-6", "-c", "2", "-W", "2", "2001:db8::2"]))
    .context("IPv6 ping through the tunnel")?;
    transfer(&pair, "[2001:db8::2]:5001", 4 << 20).context("4 MiB of IPv6 TCP")?;
    no_drops(&pair, "gretap1")
}

/// A TCP segment keeps its size through the tunnel, as through the
/// kernel's: cut in software on A's underlay, the GRE packets fill the
/// underlay's MTU (the encap once cut each segment short by the outer
/// headers); and a GSO packet decapsulated on B and routed on to C, over
/// a link of the tunnel's MTU, still fits it (the decap once grew the
/// segment size by the headers it took off, and B refused every such
/// packet as too big: a black hole as soon as the far end sent segments
/// of full size, as a kernel peer does).
#[test]
fn tcp_segments_keep_their_size_through_the_tunnel() -> Result<()> {
    let mut pair = Pair::new()?;
    pair.tunnel("gretap1", "gretap", "")?;
    let tunnel_mtu = 1500 - 38;
    run(pair
        .a
        .command("ethtool")
        .args(["-K", "eth0", "tso", "off", "gso", "off"]))?;
    let wire = tshark_during(&pair, 200, "ip proto 47", &["frame.len"], || {
        transfer_1mib(&pair)
    })?;
    let largest = wire
        .lines()
        .filter_map(|l| l.trim().parse::<u32>().ok())
        .max();
    ensure!(
        largest == Some(1514),
        "the largest GRE frame on the underlay is {largest:?} bytes, not 1514: {wire}"
    );

    run(pair
        .a
        .command("ethtool")
        .args(["-K", "eth0", "tso", "on", "gso", "on"]))?;
    let c = pair.lab.host("c")?;
    let link = pair
        .lab
        .link(&pair.b, "203.0.113.1/24", &c, "203.0.113.2/24")?;
    let mtu = tunnel_mtu.to_string();
    pair.b.ip(&["link", "set", &link.a.ifname, "mtu", &mtu])?;
    c.ip(&["link", "set", &link.b.ifname, "mtu", &mtu])?;
    pair.b.sysctl("net.ipv4.ip_forward", "1")?;
    pair.a
        .ip(&["route", "add", "203.0.113.0/24", "via", B_INNER])?;
    c.ip(&["route", "add", "default", "via", "203.0.113.1"])?;
    greha_tests::tcp_transfer(&pair.a, &c, "203.0.113.2:5001", 4 << 20, SHORT)
        .context("4 MiB of TCP through the tunnel and routed on by B")?;
    // TCP gets there in the end even so, by ever smaller segments: the
    // packets B refused are what tell.
    let refused = pair
        .b
        .command("nstat")
        .args(["-asz", "IpFragFails"])
        .output()?;
    let refused = String::from_utf8_lossy(&refused.stdout);
    let count = refused
        .lines()
        .find_map(|l| l.strip_prefix("IpFragFails"))
        .and_then(|l| l.split_whitespace().next());
    ensure!(
        count == Some("0"),
        "B refused packets as too big for C's link: {refused}"
    );
    no_drops(&pair, "gretap1")
}

/// ip6gretap and ip6gre between two hosts joined by an IPv6 underlay
/// (2001:db8:1::/64): IPv4 and IPv6 inside, ARP and Neighbor Discovery
/// (an ARP frame is shorter than an IPv6 skb allows), ping, 4 MiB of TCP
/// each way in each family with A's underlay segmenting in software, and
/// tshark finding real IPv6 + GRE on the wire, with the flow label and
/// traffic class asked for and no malformed frame; and once with A sending
/// the tunnel encapsulation limit option, which tshark must find in A's
/// frames only.
#[test]
fn ip6gretap_and_ip6gre_carry_both_families() -> Result<()> {
    let mut lab = Lab::new()?;
    let a = lab.host("a")?;
    let b = lab.host("b")?;
    for h in [&a, &b] {
        h.enable_ipv6()?;
    }
    lab.link(&a, "2001:db8:1::1/64", &b, "2001:db8:1::2/64")?;
    let pair = Pair {
        a_pins: lab.pin_dir("a"),
        b_pins: lab.pin_dir("b"),
        lab,
        a,
        b,
    };
    run(pair
        .a
        .command("ethtool")
        .args(["-K", "eth0", "tso", "off", "gso", "off"]))?;
    // The third round: A sends the encapsulation limit option (as the
    // kernel's default does), B none; each must take the other's.
    for (mode, a_limit, mtu) in [
        ("ip6gretap", "", 1500 - 58),
        ("ip6gre", "", 1500 - 44),
        ("ip6gretap", "encaplimit 4", 1500 - 58 - 8),
    ] {
        for (host, pins, local, remote, n, extra) in [
            (
                &pair.a,
                &pair.a_pins,
                "2001:db8:1::1",
                "2001:db8:1::2",
                1,
                a_limit,
            ),
            (
                &pair.b,
                &pair.b_pins,
                "2001:db8:1::2",
                "2001:db8:1::1",
                2,
                "",
            ),
        ] {
            let spec = format!(
                "t6 mode {mode} local {local} remote {remote} tclass 0x20 flowlabel 12345 \
                 address {A_INNER_NET}.{n}/24 address 2001:db8:2::{n}/64 {extra}"
            );
            greha(host, pins, &["tunnel", "add"], &spec)?;
        }
        let mode = format!("{mode} {a_limit}");
        let link: serde_json::Value =
            serde_json::from_str(&pair.a.ip(&["-j", "link", "show", "dev", "t6"])?)?;
        ensure!(link[0]["mtu"] == mtu, "{mode}: {link}");
        let wire = tshark_during(
            &pair,
            4,
            "ip6 proto 47 or (ip6 and ip6[6] == 60)",
            &[
                "ipv6.tclass",
                "ipv6.flow",
                "ipv6.src",
                "ipv6.opt.tel",
                "gre.proto",
                "_ws.expert",
            ],
            || {
                ping(&pair.a, B_INNER, 2, 56).context("IPv4 ping")?;
                Ok(())
            },
        )
        .context(mode.clone())?;
        let mut from_a = 0;
        for line in wire.lines().filter(|l| l.contains(',')) {
            let f: Vec<&str> = line.split(',').collect();
            let hex = |s: &str| u32::from_str_radix(s.trim_start_matches("0x"), 16).ok();
            let limit = if f[2] == "2001:db8:1::1" {
                from_a += 1;
                a_limit.strip_prefix("encaplimit ").unwrap_or("")
            } else {
                ""
            };
            ensure!(
                hex(f[0]) == Some(0x20)
                    && hex(f[1]) == Some(0x12345)
                    && f[3] == limit
                    && !f[4].is_empty()
                    && f.get(5).is_none_or(|e| e.is_empty()),
                "{mode}: the outer header as tshark reads it: {line}"
            );
        }
        ensure!(from_a > 0, "{mode}: tshark saw nothing from A: {wire}");
        run(pair
            .a
            .command("ping")
            .args(["-6", "-c", "2", "-W", "2", "2001:db8:2::2"]))
        .with_context(|| format!("{mode}: IPv6 ping"))?;
        transfer(&pair, &format!("{B_INNER}:5001"), 4 << 20)
            .with_context(|| format!("{mode}: 4 MiB of IPv4 TCP"))?;
        greha_tests::tcp_transfer(&pair.b, &pair.a, &format!("{A_INNER}:5002"), 4 << 20, SHORT)
            .with_context(|| format!("{mode}: 4 MiB of IPv4 TCP back"))?;
        transfer(&pair, "[2001:db8:2::2]:5003", 4 << 20)
            .with_context(|| format!("{mode}: 4 MiB of IPv6 TCP"))?;
        no_drops(&pair, "t6").context(mode.clone())?;
        for (host, pins) in [(&pair.a, &pair.a_pins), (&pair.b, &pair.b_pins)] {
            greha(host, pins, &["tunnel", "del", "t6"], "")?;
        }
    }
    Ok(())
}

#[test]
fn both_modes_with_and_without_key_carry_traffic() -> Result<()> {
    let pair = Pair::new()?;
    for (name, mode, extra, mtu) in [
        ("gre1", "gre", "", 1500 - 24),
        ("gre2", "gre", "key 0.0.0.9", 1500 - 28),
        ("tap1", "gretap", "", 1500 - 38),
        ("tap2", "gretap", "key 4294967295", 1500 - 42),
    ] {
        pair.tunnel(name, mode, extra)?;
        let link: serde_json::Value =
            serde_json::from_str(&pair.a.ip(&["-j", "link", "show", "dev", name])?)?;
        assert_eq!(link[0]["mtu"], mtu, "{name}");
        let noarp = link[0]["flags"]
            .as_array()
            .unwrap()
            .iter()
            .any(|f| f == "NOARP");
        assert_eq!(
            noarp,
            mode == "gre",
            "{name}: only IP-over-GRE goes without ARP"
        );
        check_traffic(&pair, name).with_context(|| format!("{mode} {extra}"))?;
        for (host, pins) in [(&pair.a, &pair.a_pins), (&pair.b, &pair.b_pins)] {
            greha(host, pins, &["tunnel", "del", name], "")?;
        }
    }
    Ok(())
}

/// `csum` and `seq` as the kernel's gretap: checksums and sequence numbers
/// on every frame both ways, with checksum offload left on (a veth never
/// fills the inner TCP checksum, so the GRE checksum is the one local
/// checksum offload computes) and off (tshark verifies the checksum of
/// complete frames, independently of greha), and a receiver that refuses
/// frames without a checksum, without a sequence number, or older than
/// the last.
#[test]
fn checksums_and_sequence_numbers_are_sent_verified_and_required() -> Result<()> {
    let pair = Pair::new()?;
    pair.tunnel("gretap1", "gretap", "key 42 csum")?;
    pin_tunnel_neighbours(&pair, "gretap1")?;
    check_traffic(&pair, "gretap1").context("checksums, with offload")?;
    for (host, pins) in [(&pair.a, &pair.a_pins), (&pair.b, &pair.b_pins)] {
        greha(host, pins, &["tunnel", "del", "gretap1"], "")?;
    }
    // With sequence numbers, frames sent from two CPUs at once may cross
    // on the way and the later one is dropped, as the kernel's iseq does:
    // no "no drop" check from here on.
    pair.tunnel("gretap1", "gretap", "key 42 csum seq")?;
    // 38 + key, checksum and sequence number: the kernel's 1450.
    let link: serde_json::Value =
        serde_json::from_str(&pair.a.ip(&["-j", "link", "show", "dev", "gretap1"])?)?;
    ensure!(link[0]["mtu"] == 1450, "MTU: {}", link[0]["mtu"]);
    pin_tunnel_neighbours(&pair, "gretap1")?;
    ping(&pair.a, B_INNER, 3, 1450 - 28).context("a full-size ping")?;

    // Offload off on A's underlay: the stack fills the inner checksums
    // there, so the frames on the wire are complete and tshark can check
    // greha's GRE checksum.
    run(pair.a.command("ethtool").args(["-K", "eth0", "tx", "off"]))?;
    let log = tshark_during(
        &pair,
        40,
        &format!("ip proto 47 and src {A_UNDERLAY}"),
        &[
            "gre.checksum.status",
            "gre.sequence_number",
            "_ws.malformed",
        ],
        || transfer_1mib(&pair).context("1 MiB with offload off"),
    )?;
    let frames: Vec<(String, u64)> = log
        .lines()
        .filter_map(|l| {
            let f: Vec<&str> = l.split(',').collect();
            Some((f.first()?.to_string(), f.get(1)?.parse().ok()?))
        })
        .collect();
    ensure!(frames.len() == 40, "40 frames with sequence numbers: {log}");
    // 1: Good (0 would be Bad, 2 Unverified).
    ensure!(
        frames.iter().all(|(c, _)| c == "1"),
        "a GRE checksum tshark does not find right: {log}"
    );
    // Each frame its own number (taken under a lock), however many CPUs
    // sent them; the capture may see neighbours swapped.
    let mut seqs: Vec<u64> = frames.iter().map(|f| f.1).collect();
    seqs.sort_unstable();
    seqs.dedup();
    ensure!(
        seqs.len() == 40 && seqs[39] - seqs[0] < 64,
        "sequence numbers repeated or far apart: {log}"
    );
    ensure!(!log.contains("Malformed"), "malformed frames: {log}");
    for field in ["rx_drop_bad_checksum", "rx_drop_truncated", "tx_drop_error"] {
        for (host, pins) in [(&pair.a, &pair.a_pins), (&pair.b, &pair.b_pins)] {
            ensure!(counter(host, pins, "gretap1", field)? == 0, "{field}");
        }
    }

    // The receiving side's rules, with frames from scapy.
    let rx = |field: &str| counter(&pair.a, &pair.a_pins, "gretap1", field);
    let expect = |field: &str, want: u64| -> Result<()> {
        wait_until(SHORT, &format!("{field} to reach {want}"), || {
            Ok(rx(field)? >= want)
        })?;
        let got = rx(field)?;
        ensure!(got == want, "{field} = {got}, expected {want}");
        Ok(())
    };
    let packets = rx("rx_packets")?;
    let reordered = rx("rx_drop_out_of_order")?;
    // Far ahead of anything B sent, so B's own frames (A's ping replies go
    // to B, whose answers number on) stay behind it afterwards.
    let ahead = 1u64 << 30;
    let gre = |seq: u64| {
        format!(
            "key_present=1, key=42, proto=0x6558, chksum_present=1, seqnum_present=1, sequence_number={seq}"
        )
    };
    scapy_send(&pair, B_UNDERLAY, &gre(ahead), None)?;
    expect("rx_packets", packets + 1)?;
    scapy_send(&pair, B_UNDERLAY, &gre(ahead - 1), None)?;
    expect("rx_drop_out_of_order", reordered + 1)?;
    scapy_send(
        &pair,
        B_UNDERLAY,
        "key_present=1, key=42, proto=0x6558, chksum_present=1",
        None,
    )?;
    expect("rx_drop_out_of_order", reordered + 2)?;
    scapy_send(
        &pair,
        B_UNDERLAY,
        &format!(
            "key_present=1, key=42, proto=0x6558, seqnum_present=1, sequence_number={}",
            ahead + 1
        ),
        None,
    )?;
    expect("rx_drop_bad_checksum", 1)?;
    scapy_send(&pair, B_UNDERLAY, &gre(ahead + 1), None)?;
    expect("rx_packets", packets + 2)?;
    Ok(())
}

/// Several tunnels between the same two hosts, told apart by key as the
/// kernel's are (two keyed, one without): each carries its own traffic,
/// GRE with a key none of them has is counted against one of the pair, and
/// removing the first leaves the others working and counting.
#[test]
fn tunnels_between_the_same_hosts_are_told_apart_by_key() -> Result<()> {
    let pair = Pair::new()?;
    let tunnels = [
        ("t1", "key 1", "192.0.2.1", "192.0.2.2"),
        ("t2", "ikey 2 okey 3", "192.0.2.65", "192.0.2.66"),
        ("t3", "", "192.0.2.129", "192.0.2.130"),
    ];
    for (name, key, a_addr, b_addr) in tunnels {
        // B receives what A sends: its ikey is A's okey.
        let b_key = key.replace("ikey 2 okey 3", "ikey 3 okey 2");
        for (host, pins, local, remote, addr, key) in [
            (&pair.a, &pair.a_pins, A_UNDERLAY, B_UNDERLAY, a_addr, key),
            (
                &pair.b,
                &pair.b_pins,
                B_UNDERLAY,
                A_UNDERLAY,
                b_addr,
                b_key.as_str(),
            ),
        ] {
            let spec =
                format!("{name} mode gretap local {local} remote {remote} {key} address {addr}/26");
            greha(host, pins, &["tunnel", "add"], &spec)?;
        }
    }
    let carries = |name: &str, to: &str| -> Result<()> {
        let before = counter(&pair.b, &pair.b_pins, name, "rx_packets")?;
        ping(&pair.a, to, 3, 56).with_context(|| format!("ping through {name}"))?;
        let after = counter(&pair.b, &pair.b_pins, name, "rx_packets")?;
        ensure!(after >= before + 3, "{name} did not count its pings");
        Ok(())
    };
    for (name, _, _, b_addr) in tunnels {
        carries(name, b_addr)?;
    }
    transfer(&pair, "192.0.2.66:5001", 1 << 20).context("1 MiB through t2")?;
    for (name, ..) in tunnels {
        no_drops(&pair, name)?;
    }
    // A key that no tunnel of the pair has: counted against one of them.
    let a_mac = mac_of(&pair.a, "eth0")?;
    let stray = || -> Result<()> {
        pair.b.python(
            &pair.lab,
            &format!(
                "from scapy.all import *\n\
                 sendp(Ether(dst='{a_mac}')/IP(src='{B_UNDERLAY}', dst='{A_UNDERLAY}')\
                 /GRE(key_present=1, key=9, proto=0x6558)/Ether()/IP()/ICMP(), \
                 iface='eth0', verbose=False)\n"
            ),
        )?;
        Ok(())
    };
    let wrong_keys = || -> Result<u64> {
        let mut n = 0;
        for (name, ..) in tunnels {
            if let Ok(c) = counter(&pair.a, &pair.a_pins, name, "rx_drop_wrong_key") {
                n += c;
            }
        }
        Ok(n)
    };
    stray()?;
    wait_until(SHORT, "the stray key counted", || Ok(wrong_keys()? == 1))?;
    for (host, pins) in [(&pair.a, &pair.a_pins), (&pair.b, &pair.b_pins)] {
        greha(host, pins, &["tunnel", "del", "t1"], "")?;
    }
    carries("t2", "192.0.2.66")?;
    carries("t3", "192.0.2.130")?;
    stray()?;
    // t1's count went with it; the next one is another tunnel's.
    wait_until(SHORT, "the stray key counted again", || {
        Ok(wrong_keys()? == 1)
    })?;
    Ok(())
}

#[test]
fn counters_match_the_traffic_through_bpftool() -> Result<()> {
    let pair = Pair::new()?;
    pair.tunnel("gretap1", "gretap", "key 7")?;
    pin_tunnel_neighbours(&pair, "gretap1")?;
    ping(&pair.a, B_INNER, 10, 56)?;
    // 10 echo requests out, 10 replies in, each a 98-byte inner frame.
    wait_until(SHORT, "the replies to be counted", || {
        Ok(counter(&pair.a, &pair.a_pins, "gretap1", "rx_packets")? >= 10)
    })?;
    let c = bpftool_counters(&pair.a_pins, 0)?;
    for (field, want) in [
        ("tx_packets", 10),
        ("tx_bytes", 980),
        ("rx_packets", 10),
        ("rx_bytes", 980),
    ] {
        assert_eq!(c[field], want, "{field} in {c:?}");
    }
    assert_eq!(c["rx_drop_wrong_key"], 0);
    Ok(())
}

/// Sends one GRE packet from B to A with scapy. `gre` is the scapy GRE
/// layer's arguments; the inner frame is an ICMP echo request to A.
fn scapy_send(pair: &Pair, src: &str, gre: &str, cut: Option<usize>) -> Result<()> {
    let a_mac = mac_of(&pair.a, "eth0")?;
    let a_tunnel_mac = mac_of(&pair.a, "gretap1")?;
    let frame = format!(
        "Ether(dst='{a_mac}')/IP(src='{src}', dst='{A_UNDERLAY}')/GRE({gre})\
         /Ether(dst='{a_tunnel_mac}')/IP(src='{B_INNER}', dst='{A_INNER}')/ICMP()"
    );
    let cut = cut.map_or(String::new(), |n| format!("raw(p)[:{n}]"));
    let send = if cut.is_empty() { "p".to_owned() } else { cut };
    pair.b.python(
        &pair.lab,
        &format!(
            "from scapy.all import *\n\
             p = {frame}\n\
             sendp({send}, iface='eth0', verbose=False)\n"
        ),
    )?;
    Ok(())
}

#[test]
fn hostile_gre_is_dropped_and_counted_valid_gre_is_accepted() -> Result<()> {
    let pair = Pair::new()?;
    pair.tunnel("gretap1", "gretap", "key 42")?;
    // A answers the valid packets; no ARP may cross the tunnel meanwhile.
    pin_tunnel_neighbours(&pair, "gretap1")?;
    let rx = |field: &str| counter(&pair.a, &pair.a_pins, "gretap1", field);
    let expect = |field: &str, want: u64| -> Result<()> {
        wait_until(SHORT, &format!("{field} to reach {want}"), || {
            Ok(rx(field)? >= want)
        })?;
        let got = rx(field)?;
        ensure!(got == want, "{field} = {got}, expected {want}");
        Ok(())
    };

    let valid = "key_present=1, key=42, proto=0x6558";
    scapy_send(&pair, B_UNDERLAY, valid, None)?;
    expect("rx_packets", 1)?;
    // The checksum option, valid (scapy computes it) and corrupted.
    scapy_send(
        &pair,
        B_UNDERLAY,
        &format!("{valid}, chksum_present=1"),
        None,
    )?;
    expect("rx_packets", 2)?;
    scapy_send(
        &pair,
        B_UNDERLAY,
        &format!("{valid}, chksum_present=1, chksum=0x1234"),
        None,
    )?;
    expect("rx_drop_bad_checksum", 1)?;

    scapy_send(
        &pair,
        B_UNDERLAY,
        "key_present=1, key=43, proto=0x6558",
        None,
    )?;
    expect("rx_drop_wrong_key", 1)?;
    scapy_send(&pair, B_UNDERLAY, "proto=0x6558", None)?;
    expect("rx_drop_wrong_key", 2)?;
    scapy_send(&pair, "198.51.100.9", valid, None)?;
    expect("rx_drop_wrong_source", 1)?;
    scapy_send(&pair, B_UNDERLAY, &format!("{valid}, version=1"), None)?;
    expect("rx_drop_bad_flags", 1)?;
    scapy_send(
        &pair,
        B_UNDERLAY,
        &format!("{valid}, routing_present=1"),
        None,
    )?;
    expect("rx_drop_bad_flags", 2)?;
    scapy_send(
        &pair,
        B_UNDERLAY,
        "key_present=1, key=42, proto=0x0800",
        None,
    )?;
    expect("rx_drop_bad_protocol", 1)?;
    // Cut inside the inner Ethernet header: the IP header still claims it all.
    scapy_send(&pair, B_UNDERLAY, valid, Some(14 + 20 + 8 + 6))?;
    expect("rx_drop_truncated", 1)?;

    // Nothing hostile got through.
    assert_eq!(rx("rx_packets")?, 2);
    Ok(())
}

#[test]
fn bad_definitions_are_refused_before_anything_changes() -> Result<()> {
    let pair = Pair::new()?;
    let (a, pins) = (&pair.a, &pair.a_pins);
    let base = format!("mode gretap local {A_UNDERLAY} remote {B_UNDERLAY}");
    for (spec, expected) in [
        (
            format!("t1 mode gretap local 192.0.2.77 remote {B_UNDERLAY}"),
            "tunnel t1: local: 192.0.2.77 is not an address of this host",
        ),
        (
            format!("t1 {base} dev eth9"),
            "tunnel t1: dev: interface eth9 does not exist",
        ),
        (
            format!("t1 mode gretap local {A_UNDERLAY} remote 203.0.113.5"),
            "tunnel t1: remote: no route to 203.0.113.5",
        ),
        (
            "eth0 ".to_owned() + &base,
            "tunnel eth0: name: an interface named eth0 already exists",
        ),
        (
            format!("t1 {base} key 99999999999"),
            "tunnel t1: key: 99999999999 is out of range",
        ),
        (
            format!("t1 {base} mtu 1600"),
            "tunnel t1: mtu: 1600 is over 1462",
        ),
        (
            format!("name-of-16-bytes {base}"),
            "tunnel name-of-16-bytes: name: \"name-of-16-bytes\" is 16 bytes long",
        ),
    ] {
        let err = greha_fails(a, pins, &spec)?;
        ensure!(
            err.contains(expected),
            "{spec}\n  got: {err}\n  want: {expected}"
        );
    }
    // A duplicate: a second tunnel between the same endpoints with the
    // same (no) key.
    greha(a, pins, &["tunnel", "add"], &format!("t1 {base}"))?;
    let err = greha_fails(a, pins, &format!("t2 {base}"))?;
    ensure!(
        err.contains("tunnel t2: local/remote: tunnel t1 already runs"),
        "{err}"
    );
    // Nothing of the refused ones exists.
    let links = a.ip(&["-o", "link", "show"])?;
    ensure!(
        !links.contains("t2"),
        "a refused tunnel left an interface:\n{links}"
    );
    Ok(())
}

#[test]
fn removing_the_last_tunnel_leaves_nothing_behind() -> Result<()> {
    let pair = Pair::new()?;
    pair.tunnel("gretap1", "gretap", "")?;
    // A program lives while a pin or an attachment holds it: once the pins
    // are gone, a program id that still exists means it is still attached.
    // (Debian's bpftool predates tcx and cannot list those attachments.)
    let mut prog_ids = Vec::new();
    for prog in ["greha_gre_encap", "greha_gre_decap"] {
        let progs = greha_tests::progs_dir(&pair.a_pins)?;
        let out = run(Command::new("bpftool")
            .args(["prog", "show", "pinned"])
            .arg(progs.join(prog))
            .arg("-j"))?;
        let v: serde_json::Value = serde_json::from_str(&out)?;
        prog_ids.push(v["id"].as_u64().context("prog id")?);
    }
    greha(&pair.a, &pair.a_pins, &["tunnel", "del", "gretap1"], "")?;
    ensure!(
        pair.a.ip(&["link", "show", "gretap1"]).is_err(),
        "the tunnel interface is still there"
    );
    for id in prog_ids {
        wait_until(SHORT, &format!("program {id} to be released"), || {
            Ok(!Command::new("bpftool")
                .args(["prog", "show", "id", &id.to_string()])
                .output()?
                .status
                .success())
        })?;
    }
    ensure!(
        !pair.a_pins.exists(),
        "pins left in {}",
        pair.a_pins.display()
    );
    let neigh = pair.a.ip(&["neigh", "show", B_UNDERLAY])?;
    ensure!(
        !neigh.contains("managed"),
        "greha's managed neighbour is still there: {neigh}"
    );
    // Deleting what does not exist is an error that names it.
    let out = pair
        .a
        .command(greha_bin())
        .arg("--pin-dir")
        .arg(&pair.a_pins)
        .args(["tunnel", "del", "gretap1"])
        .output()?;
    ensure!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    if !err.contains("tunnel gretap1: no such greha tunnel") {
        bail!("the error does not name the tunnel: {err}");
    }
    ensure!(!pair.a_pins.exists(), "a failed del left pins behind");
    Ok(())
}

/// A load the kernel refuses half way leaves nothing. Here greha runs
/// without CAP_PERFMON and CAP_SYS_ADMIN, so the maps are made and pinned
/// and then the verifier refuses a program (as 6.1's verifier did before
/// greha's programs were fixed for it); before, the maps and programs
/// pinned until then stayed, and no later stop removed them.
#[test]
fn a_load_the_kernel_refuses_leaves_no_pins() -> Result<()> {
    let pair = Pair::new()?;
    let out = pair
        .a
        .command("setpriv")
        .args(["--bounding-set", "-perfmon,-sys_admin"])
        .arg(greha_bin())
        .arg("--pin-dir")
        .arg(&pair.a_pins)
        .args(["tunnel", "add", "gretap1", "mode", "gretap", "local"])
        .args([A_UNDERLAY, "remote", B_UNDERLAY])
        .output()?;
    let err = String::from_utf8_lossy(&out.stderr);
    ensure!(
        !out.status.success() && err.contains("the kernel refused program"),
        "the load was not refused: {err}"
    );
    let left = walk(&pair.a_pins);
    ensure!(left.is_empty(), "pins left after a refused load: {left:?}");
    ensure!(
        pair.a.ip(&["link", "show", "gretap1"]).is_err(),
        "the tunnel interface was made"
    );
    Ok(())
}

/// Every path under `dir`, depth first; none if it does not exist.
fn walk(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    for e in fs::read_dir(dir).into_iter().flatten().flatten() {
        out.extend(walk(&e.path()));
        out.push(e.path());
    }
    out
}

#[test]
fn a_datapath_of_another_build_in_use_is_not_replaced() -> Result<()> {
    let pair = Pair::new()?;
    pair.tunnel("gretap1", "gretap", "")?;
    // Make the running datapath look like another build's.
    let progs = greha_tests::progs_dir(&pair.a_pins)?;
    let other = pair.a_pins.join("progs-0000000000000001");
    std::fs::rename(&progs, &other)?;
    let err = greha_fails(
        &pair.a,
        &pair.a_pins,
        &format!("t2 mode gre local {A_UNDERLAY} remote 198.51.100.7"),
    )?;
    ensure!(err.contains("loaded by another greha build"), "{err}");
    ensure!(
        pair.a.ip(&["link", "show", "t2"]).is_err(),
        "t2 was created"
    );
    // The running tunnel was left alone and still carries traffic.
    ping(&pair.a, B_INNER, 2, 56)?;
    std::fs::rename(&other, &progs)?;
    Ok(())
}

#[test]
fn the_daemon_owns_its_tunnels_and_removes_them_when_it_stops() -> Result<()> {
    let pair = Pair::new()?;
    let mut daemons = daemons(&pair, "gretap1", "")?;
    ping(&pair.a, B_INNER, 3, 56)?;
    for (d, (host, pins)) in daemons
        .iter_mut()
        .zip([(&pair.a, &pair.a_pins), (&pair.b, &pair.b_pins)])
    {
        let status = d.terminate(SHORT)?;
        ensure!(status.success(), "greha exited {status}:\n{}", d.log());
        ensure!(
            host.ip(&["link", "show", "gretap1"]).is_err(),
            "gretap1 left behind"
        );
        ensure!(!pins.exists(), "pins left in {}", pins.display());
    }
    Ok(())
}

/// Tunnel liveness: B's daemon pings A's inner address through the tunnel
/// (A runs only a tunnel, as a kernel peer would) and knows when A's side
/// goes silent; its VRRP instance tracks the tunnel, so with the far end
/// dead it is in Fault and holds no VIP, instead of a master nobody can
/// reach, and comes back when A does. Seen in `greha tunnel show`, status
/// and metrics.
#[test]
fn a_dead_far_end_is_seen_and_a_tracking_instance_faults() -> Result<()> {
    let pair = Pair::new()?;
    greha(
        &pair.a,
        &pair.a_pins,
        &["tunnel", "add"],
        &format!("t1 mode gretap local {A_UNDERLAY} remote {B_UNDERLAY} address {A_INNER}/24"),
    )?;
    let mut cmd = pair.lab.greha(&pair.b);
    cmd.args([
        "run",
        "--metrics",
        "127.0.0.1:9650",
        "--tunnel",
        &format!(
            "t1 mode gretap local {B_UNDERLAY} remote {A_UNDERLAY} address {B_INNER}/24 \
             probe {A_INNER} probe-interval 0.1"
        ),
        "--vrrp",
        "VI_1 interface t1 vrid 51 priority 100 advert-int 0.1 version 3 \
         vip 203.0.113.10/24 track-tunnel t1",
    ]);
    let mut daemon = pair.b.spawn(&pair.lab, cmd, true)?;
    daemon.wait_ready(SHORT)?;
    let status = || pair.lab.greha_status(&pair.b);
    let far_end = |want: &str| -> Result<()> {
        wait_until(SHORT, &format!("the far end to be {want}"), || {
            Ok(status()?["tunnels"][0]["probe"]["state"] == want)
        })
    };
    let state_is = |want: &str| -> Result<()> {
        wait_until(SHORT, &format!("VI_1 to be {want}"), || {
            Ok(status()?["vrrp"][0]["state"] == want)
        })
    };
    far_end("alive")?;
    state_is("master")?;

    // A's side goes silent: its underlay is down.
    pair.a.ip(&["link", "set", "eth0", "down"])?;
    far_end("dead")?;
    state_is("fault")?;
    let vips = pair.b.ip(&["-4", "-o", "addr", "show", "dev", "t1"])?;
    ensure!(
        !vips.contains("203.0.113.10"),
        "a faulted instance holds the VIP: {vips}"
    );
    let show = greha(&pair.b, &pair.b_pins, &["tunnel", "show"], "")?;
    ensure!(
        show.contains(&format!("{A_INNER} dead")),
        "tunnel show: {show}"
    );
    // On the namespace's own loopback.
    let metrics = pair.b.enter(|| -> Result<String> {
        use std::io::{Read as _, Write as _};
        let mut c = std::net::TcpStream::connect("127.0.0.1:9650")?;
        c.write_all(b"GET /metrics HTTP/1.0\r\n\r\n")?;
        let mut s = String::new();
        c.read_to_string(&mut s)?;
        Ok(s)
    })??;
    ensure!(
        metrics.contains("greha_tunnel_far_end_alive{tunnel=\"t1\"} 0"),
        "metrics: {metrics}"
    );

    // And back.
    pair.a.ip(&["link", "set", "eth0", "up"])?;
    far_end("alive")?;
    state_is("master")?;
    let probe = &status()?["tunnels"][0]["probe"];
    ensure!(probe["changes"] == 2, "alive -> dead -> alive: {probe}");
    let status = daemon.terminate(SHORT)?;
    ensure!(status.success(), "greha exited {status}:\n{}", daemon.log());
    Ok(())
}

/// `greha tunnel show` and `greha counters` by a user without root: the
/// pins are root's, and the answer says so instead of an empty table.
#[test]
fn an_unprivileged_user_is_told_permission_denied() -> Result<()> {
    let pair = Pair::new()?;
    pair.tunnel("gretap1", "gretap", "")?;
    for args in [&["tunnel", "show"][..], &["counters"][..]] {
        let out = pair
            .a
            .command("setpriv")
            .args(["--reuid=65534", "--regid=65534", "--clear-groups"])
            .arg(greha_bin())
            .arg("--pin-dir")
            .arg(&pair.a_pins)
            .args(args)
            .output()?;
        let err = String::from_utf8_lossy(&out.stderr);
        ensure!(
            !out.status.success() && err.contains("permission denied"),
            "{args:?} as nobody: {}\nstdout: {}\nstderr: {err}",
            out.status,
            String::from_utf8_lossy(&out.stdout)
        );
    }
    Ok(())
}

/// The decapsulation checks what the kernel's ip_rcv checks of the outer
/// packet: a bad IPv4 header checksum is dropped and counted, a frame
/// for another host's MAC is left to the stack (which drops it), and
/// bytes past the outer packet's length (padding) are not carried into the
/// inner frame. Scapy builds the frames.
#[test]
fn decapsulation_checks_what_ip_rcv_checks() -> Result<()> {
    let pair = Pair::new()?;
    pair.tunnel("gretap1", "gretap", "")?;
    pin_tunnel_neighbours(&pair, "gretap1")?;
    let rx = |field: &str| counter(&pair.a, &pair.a_pins, "gretap1", field);
    let a_mac = mac_of(&pair.a, "eth0")?;
    let a_tunnel_mac = mac_of(&pair.a, "gretap1")?;
    // (ether dst, outer IP arguments, bytes appended after the packet)
    let send = |dst: &str, ip: &str, trailer: usize| -> Result<()> {
        pair.b.python(
            &pair.lab,
            &format!(
                "from scapy.all import *\n\
                 p = Ether(dst='{dst}')/IP(src='{B_UNDERLAY}', dst='{A_UNDERLAY}'{ip})\
                 /GRE(proto=0x6558)/Ether(dst='{a_tunnel_mac}')\
                 /IP(src='{B_INNER}', dst='{A_INNER}')/ICMP()\n\
                 sendp(raw(p) + b'\\xee' * {trailer}, iface='eth0', verbose=False)\n"
            ),
        )?;
        Ok(())
    };
    send(&a_mac, "", 0)?;
    wait_until(SHORT, "the valid packet", || Ok(rx("rx_packets")? == 1))?;
    let one = rx("rx_bytes")?;

    send(&a_mac, "", 30)?;
    wait_until(SHORT, "the padded packet", || Ok(rx("rx_packets")? == 2))?;
    ensure!(
        rx("rx_bytes")? == 2 * one,
        "the padding went into the inner frame: {} bytes after {one}",
        rx("rx_bytes")? - one
    );

    // For another MAC: not decapsulated. The bad checksum after it is
    // counted only once the frame before it was handled (one queue, in
    // order), so rx_packets is final then.
    send("02:00:00:00:00:99", "", 0)?;
    send(&a_mac, ", chksum=0x1234", 0)?;
    wait_until(SHORT, "the bad header checksum counted", || {
        Ok(rx("rx_drop_bad_checksum")? == 1)
    })?;
    ensure!(
        rx("rx_packets")? == 2,
        "a frame for another MAC was decapsulated"
    );
    Ok(())
}

/// Outer fragments (a kernel peer told `nopmtudisc`, or an IPv6 path):
/// the decapsulation hands them to the kernel, which reassembles the GRE
/// packet, and A's daemon brings it back whole through `greha-reasm`. An
/// echo request from B whose outer packet scapy cut in two is answered
/// through the tunnel; A counts the IPv4 fragments and the packet.
#[test]
fn outer_ipv4_fragments_are_reassembled_and_decapsulated() -> Result<()> {
    outer_fragments(Pair::new()?, None, false)
}

/// The same with A's tunnel added by `greha tunnel add` beside a daemon
/// that started with none: the daemon starts the reassembly for it, and
/// stops it, its interface gone, when the tunnel is deleted the same way.
#[test]
fn a_tunnel_added_beside_the_daemon_has_its_fragments_reassembled() -> Result<()> {
    outer_fragments(Pair::new()?, None, true)
}

#[test]
fn outer_ipv6_fragments_are_reassembled_and_decapsulated() -> Result<()> {
    let mut lab = Lab::new()?;
    let a = lab.host("a")?;
    let b = lab.host("b")?;
    for h in [&a, &b] {
        h.enable_ipv6()?;
    }
    lab.link(&a, "2001:db8:1::1/64", &b, "2001:db8:1::2/64")?;
    let pair = Pair {
        a_pins: lab.pin_dir("a"),
        b_pins: lab.pin_dir("b"),
        lab,
        a,
        b,
    };
    outer_fragments(pair, Some(("2001:db8:1::1", "2001:db8:1::2")), false)
}

/// `v6`: A's and B's IPv6 underlay addresses (ip6gretap), or the pair's
/// IPv4 underlay (gretap). `beside`: A's tunnel is added with `greha
/// tunnel add` after the daemon started, not by the daemon.
fn outer_fragments(pair: Pair, v6: Option<(&str, &str)>, beside: bool) -> Result<()> {
    let (mode, a_under, b_under) = match v6 {
        Some((a, b)) => ("ip6gretap", a, b),
        None => ("gretap", A_UNDERLAY, B_UNDERLAY),
    };
    let a_tunnel = format!("t1 mode {mode} local {a_under} remote {b_under} address {A_INNER}/24");
    let mut cmd = pair.lab.greha(&pair.a);
    cmd.arg("run");
    if !beside {
        cmd.args(["--tunnel", &a_tunnel]);
    }
    let mut daemon = pair.a.spawn(&pair.lab, cmd, true)?;
    daemon.wait_ready(SHORT)?;
    let reasm = || pair.a.ip(&["link", "show", "greha-reasm"]).is_ok();
    if beside {
        ensure!(!reasm(), "greha-reasm with no tunnel");
        greha(&pair.a, &pair.a_pins, &["tunnel", "add"], &a_tunnel)?;
        wait_until(SHORT, "the daemon to make greha-reasm", || Ok(reasm()))?;
    }
    greha(
        &pair.b,
        &pair.b_pins,
        &["tunnel", "add"],
        &format!("t1 mode {mode} local {b_under} remote {a_under} address {B_INNER}/24"),
    )?;
    ping(&pair.b, A_INNER, 1, 56)?;
    let (a_mac, a_t1, b_t1) = (
        mac_of(&pair.a, "eth0")?,
        mac_of(&pair.a, "t1")?,
        mac_of(&pair.b, "t1")?,
    );
    let inner = format!(
        "GRE(proto=0x6558)/Ether(dst='{a_t1}', src='{b_t1}')\
         /IP(src='{B_INNER}', dst='{A_INNER}')/ICMP(id=0x4242)/(b'x' * 64)"
    );
    let fragments = match v6 {
        None => {
            format!("fragment(IP(src='{b_under}', dst='{a_under}', flags=0)/{inner}, fragsize=64)")
        }
        Some(_) => format!(
            "fragment6(IPv6(src='{b_under}', dst='{a_under}')/IPv6ExtHdrFragment()/{inner}, 104)"
        ),
    };
    let out = pair.b.python(
        &pair.lab,
        &format!(
            "from scapy.all import *\n\
             reply = lambda p: ICMP in p and p[ICMP].type == 0 and p[ICMP].id == 0x4242\n\
             s = AsyncSniffer(iface='t1', lfilter=reply, count=1, timeout=10)\n\
             s.start()\n\
             time.sleep(0.5)\n\
             frags = {fragments}\n\
             assert len(frags) > 1, frags\n\
             sendp([Ether(dst='{a_mac}')/f for f in frags], iface='eth0', verbose=False)\n\
             s.join()\n\
             print('answered' if s.results else 'no answer')\n"
        ),
    )?;
    let a_counters = counters(&pair.a, &pair.a_pins, "t1")?;
    ensure!(
        out.contains("answered"),
        "B got no answer: {out}\nA's counters: {a_counters}\n{}",
        daemon.log()
    );
    // IPv6 fragments never look like GRE to the decapsulation: they go to
    // the kernel before a tunnel is found, uncounted.
    ensure!(
        v6.is_some() || a_counters["rx_fragments"].as_u64() >= Some(2),
        "A's counters: {a_counters}"
    );
    no_drops_of(&a_counters)?;
    if beside {
        greha(&pair.a, &pair.a_pins, &["tunnel", "del", "t1"], "")?;
        wait_until(SHORT, "the daemon to remove greha-reasm", || Ok(!reasm()))?;
        // The running daemon's own lock stays, until it stops.
        let left: Vec<_> = walk(&pair.a_pins)
            .into_iter()
            .filter(|p| !p.ends_with("daemon-lock"))
            .collect();
        ensure!(left.is_empty(), "pins left with no tunnel: {left:?}");
    }
    let status = daemon.terminate(SHORT)?;
    ensure!(status.success(), "greha exited {status}:\n{}", daemon.log());
    ensure!(
        pair.a.ip(&["link", "show", "greha-reasm"]).is_err(),
        "greha-reasm outlived the daemon"
    );
    Ok(())
}

/// A daemon on each host of `pair`, each running its end of a gretap
/// `name` with `extra` (daemons own their tunnels and reassemble outer
/// fragments).
fn daemons(pair: &Pair, name: &str, extra: &str) -> Result<[greha_tests::Proc; 2]> {
    let mut out = Vec::new();
    for (host, local, remote, inner) in [
        (&pair.a, A_UNDERLAY, B_UNDERLAY, A_INNER),
        (&pair.b, B_UNDERLAY, A_UNDERLAY, B_INNER),
    ] {
        let mut cmd = pair.lab.greha(host);
        cmd.args([
            "run",
            "--tunnel",
            &format!("{name} mode gretap local {local} remote {remote} address {inner}/24 {extra}"),
        ]);
        let mut daemon = host.spawn(&pair.lab, cmd, true)?;
        daemon.wait_ready(SHORT)?;
        out.push(daemon);
    }
    out.try_into().map_err(|_| anyhow::anyhow!("two daemons"))
}

/// A ping of `size` bytes with DF (`-M do`) or without (`-M dont`); its
/// output, whether it succeeded or not.
fn ping_df(host: &Host, dst: &str, size: u32, df: bool) -> Result<String> {
    let out = host
        .command("ping")
        .args(["-c", "2", "-i", "0.2", "-W", "2", "-s", &size.to_string()])
        .args(["-M", if df { "do" } else { "dont" }, dst])
        .output()?;
    Ok(String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr))
}

/// The outer and inner DF bits of the GRE frames tshark sees on B's
/// underlay while `during` runs: (outer, inner) per frame that has both.
fn df_bits(
    pair: &Pair,
    count: u32,
    during: impl FnOnce() -> Result<()>,
) -> Result<Vec<(bool, bool)>> {
    let wire = tshark_during(
        pair,
        count,
        "ip proto 47 and ip[6:2] & 0x3fff == 0",
        &["ip.flags.df"],
        during,
    )?;
    Ok(wire
        .lines()
        .filter_map(|l| {
            let f: Vec<&str> = l.trim().split(',').collect();
            (f.len() == 2).then(|| (f[0] == "1" || f[0] == "True", f[1] == "1" || f[1] == "True"))
        })
        .collect())
}

/// `nopmtudisc` as the kernel's: the outer DF copies the inner IPv4
/// packet's; a packet with DF too big for the path is answered with ICMP
/// (the tunnel's MTU of 1500 is over the 1462 the path carries); one
/// without DF is sent in outer fragments, which the far end reassembles.
#[test]
fn nopmtudisc_copies_df_and_fragments_what_has_none() -> Result<()> {
    let pair = Pair::new()?;
    let _daemons = daemons(&pair, "t1", "nopmtudisc mtu 1500")?;
    let bits = df_bits(&pair, 8, || {
        ping_df(&pair.a, B_INNER, 1000, true)?;
        ping_df(&pair.a, B_INNER, 1000, false)?;
        Ok(())
    })?;
    ensure!(
        bits.iter().all(|(outer, inner)| outer == inner)
            && bits.iter().any(|b| b.1)
            && bits.iter().any(|b| !b.1),
        "(outer DF, inner DF) per frame: {bits:?}"
    );
    let said = ping_df(&pair.a, B_INNER, 1472, true)?;
    ensure!(
        said.contains("mtu=1462") || said.contains("mtu = 1462"),
        "a DF packet too big for the path: {said}"
    );
    // From B, whose route has learned nothing: the packets leave whole
    // and are cut on the way out of the tunnel.
    let said = ping_df(&pair.b, A_INNER, 1472, false)?;
    ensure!(said.contains(" 0% packet loss"), "{said}");
    let (a, b) = (
        counters(&pair.a, &pair.a_pins, "t1")?,
        counters(&pair.b, &pair.b_pins, "t1")?,
    );
    ensure!(
        b["tx_fragments"].as_u64() >= Some(4) && a["rx_fragments"].as_u64() >= Some(4),
        "A: {a}\nB: {b}"
    );
    ensure!(a["tx_icmp_too_big"].as_u64() >= Some(1), "A: {a}");
    no_drops_of(&b)
}

/// `nopmtudisc ignore-df`: no outer packet has DF, and everything too
/// big for the path goes in fragments: pings with DF both ways, and
/// 4 MiB of TCP (every full-sized segment cut in two; GSO packets cut
/// into segments first, as the kernel's tunnels cut them).
#[test]
fn ignore_df_fragments_everything_too_big() -> Result<()> {
    let pair = Pair::new()?;
    let _daemons = daemons(&pair, "t1", "nopmtudisc ignore-df mtu 1500")?;
    let bits = df_bits(&pair, 8, || {
        ping_df(&pair.a, B_INNER, 1000, true)?;
        Ok(())
    })?;
    ensure!(
        !bits.is_empty() && bits.iter().all(|(outer, _)| !outer),
        "(outer DF, inner DF) per frame: {bits:?}"
    );
    for (from, to) in [(&pair.a, B_INNER), (&pair.b, A_INNER)] {
        let said = ping_df(from, to, 1472, true)?;
        ensure!(said.contains(" 0% packet loss"), "{said}");
    }
    transfer(&pair, &format!("{B_INNER}:5001"), 4 << 20).context("4 MiB of TCP")?;
    let (a, b) = (
        counters(&pair.a, &pair.a_pins, "t1")?,
        counters(&pair.b, &pair.b_pins, "t1")?,
    );
    ensure!(
        a["tx_fragments"].as_u64() >= Some(2 * (4 << 20) / 1500)
            && b["rx_fragments"] == a["tx_fragments"],
        "A: {a}\nB: {b}"
    );
    no_drops_of(&a)?;
    no_drops_of(&b)
}

fn no_drops_of(c: &serde_json::Value) -> Result<()> {
    for (field, n) in c.as_object().context("counters")? {
        ensure!(!field.contains("drop") || n == 0, "{field} = {n}: {c}");
    }
    Ok(())
}
