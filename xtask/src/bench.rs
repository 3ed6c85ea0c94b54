//! `cargo xtask bench tunnel`: greha's GRE tunnel against the plain
//! underlay and a kernel VXLAN tunnel, in one lab and one run, plus the
//! per-packet cost of the datapath programs under BPF_PROG_TEST_RUN.
use std::{
    fs,
    net::SocketAddr,
    path::{Path, PathBuf},
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    },
    time::{Duration, Instant},
};

use anyhow::{Context as _, Result, bail};
use greha_tests::{
    Host, Lab, Proc, SHORT,
    probe::{ECHO_PORT, Echo, Gap, Probe, Prober, gap},
    progs_dir, run, wait_until,
    web::{Answer, fetch, http_service},
};
use serde_json::{Value, json};

use crate::timeline::{Timeline, write_svg};

const A_UNDERLAY: &str = "198.51.100.1";
const B_UNDERLAY: &str = "198.51.100.2";
const A_GREHA: &str = "192.0.2.1";
const B_GREHA: &str = "192.0.2.2";
const A_VXLAN: &str = "203.0.113.1";
const B_VXLAN: &str = "203.0.113.2";
/// IPv6 on each path, for TCP over IPv6 inside (and on the underlay).
const UNDERLAY6: (&str, &str) = ("2001:db8:0:1::1", "2001:db8:0:1::2");
const GREHA6: (&str, &str) = ("2001:db8:0:2::1", "2001:db8:0:2::2");
const VXLAN6: (&str, &str) = ("2001:db8:0:3::1", "2001:db8:0:3::2");
/// Parallel UDP flows of the many-flow small-packet case.
const FLOWS: &str = "8";
/// Rounds of TCP measurements; an odd number, for a plain median.
const ROUNDS: usize = 3;
/// Seconds per iperf3 measurement.
const SECONDS: &str = "5";
/// BPF_PROG_TEST_RUN calls per program.
const RUNS: u32 = 200_000;

pub fn tunnel(greha: &Path, out_dir: &Path) -> Result<()> {
    let mut lab = Lab::new()?;
    let a = lab.host("a")?;
    let b = lab.host("b")?;
    lab.link(
        &a,
        &format!("{A_UNDERLAY}/24"),
        &b,
        &format!("{B_UNDERLAY}/24"),
    )?;
    let a_pins = lab.pin_dir("a");
    let b_pins = lab.pin_dir("b");
    for (host, pins, local, remote, inner, vx) in [
        (&a, &a_pins, A_UNDERLAY, B_UNDERLAY, A_GREHA, A_VXLAN),
        (&b, &b_pins, B_UNDERLAY, A_UNDERLAY, B_GREHA, B_VXLAN),
    ] {
        run(host.command(greha).arg("--pin-dir").arg(pins).args([
            "tunnel",
            "add",
            "gretap1",
            "mode",
            "gretap",
            "local",
            local,
            "remote",
            remote,
            "address",
            &format!("{inner}/24"),
        ]))?;
        host.ip(&[
            "link", "add", "vx0", "type", "vxlan", "id", "42", "local", local, "remote", remote,
            "dstport", "4789", "dev", "eth0",
        ])?;
        host.ip(&["addr", "add", &format!("{vx}/24"), "dev", "vx0"])?;
        host.ip(&["link", "set", "vx0", "up"])?;
    }
    // The lab's hosts start with IPv6 off.
    for (host, side) in [(&a, 0), (&b, 1)] {
        for (dev, addrs) in [("eth0", UNDERLAY6), ("gretap1", GREHA6), ("vx0", VXLAN6)] {
            host.sysctl(&format!("net.ipv6.conf.{dev}.disable_ipv6"), "0")?;
            let addr = if side == 0 { addrs.0 } else { addrs.1 };
            host.ip(&[
                "-6",
                "addr",
                "add",
                &format!("{addr}/64"),
                "dev",
                dev,
                "nodad",
            ])?;
        }
    }

    let mut results = serde_json::Map::new();
    let paths = [
        ("underlay", B_UNDERLAY, UNDERLAY6.1),
        ("greha", B_GREHA, GREHA6.1),
        ("vxlan", B_VXLAN, VXLAN6.1),
    ];
    // TCP in interleaved rounds, each path's median kept: on a shared
    // machine the rate drifts by more than a tunnel costs, and a drift
    // then moves all paths of a round alike instead of one.
    let mut tcp: Vec<(String, &str)> = Vec::new();
    for (key, dst, dst6) in paths {
        tcp.push((format!("{key}_tcp_gbps"), dst));
        tcp.push((format!("{key}_tcp6_gbps"), dst6));
    }
    tcp_rounds(&lab, &a, &b, &tcp, &mut results)?;
    for (key, dst, _) in paths {
        eprintln!("bench: {key} UDP, 64-byte datagrams");
        let pps = udp_pps(iperf3(&lab, &a, &b, dst, &["-u", "-b", "0", "-l", "64"])?)?;
        results.insert(format!("{key}_udp_pps"), json!(pps.round()));
        eprintln!("bench: {key} UDP, 64-byte datagrams, {FLOWS} flows");
        let flows = ["-u", "-b", "0", "-l", "64", "-P", FLOWS];
        let pps = udp_pps(iperf3(&lab, &a, &b, dst, &flows)?)?;
        results.insert(format!("{key}_udp_flows_pps"), json!(pps.round()));
    }

    tunnel_ip6(greha, &mut results)?;
    // The issues' goals are ratios to the underlay of the same family.
    for (tunnel, underlay) in [
        ("greha_tcp", "underlay_tcp"),
        ("greha_tcp6", "underlay_tcp6"),
        ("ip6gretap_tcp", "underlay6_tcp"),
        ("ip6gretap_tcp6", "underlay6_tcp"),
    ] {
        let gbps = |k: &str| results[&format!("{k}_gbps")].as_f64().unwrap_or(0.0);
        let ratio = round(gbps(tunnel) / gbps(underlay).max(f64::MIN_POSITIVE), 2);
        results.insert(format!("{tunnel}_ratio"), json!(ratio));
    }

    eprintln!("bench: program cost under BPF_PROG_TEST_RUN");
    let progs = progs_dir(&a_pins)?;
    let mac = |h: &Host, dev: &str| -> Result<[u8; 6]> {
        let v: Value = serde_json::from_str(&h.ip(&["-j", "link", "show", "dev", dev])?)?;
        parse_mac(v[0]["address"].as_str().context("address")?)
    };
    let ifindex = |h: &Host, dev: &str| -> Result<u32> {
        let v: Value = serde_json::from_str(&h.ip(&["-j", "link", "show", "dev", dev])?)?;
        Ok(v[0]["ifindex"].as_u64().context("ifindex")? as u32)
    };
    // What A's gretap1 sends (encap input) and what arrives for it from B
    // (decap input): an IPv4/UDP frame with 64 bytes of payload.
    let inner = udp_frame(mac(&b, "gretap1")?, mac(&a, "gretap1")?, A_GREHA, B_GREHA);
    let outer = gre_frame(
        mac(&a, "eth0")?,
        mac(&b, "eth0")?,
        B_UNDERLAY,
        A_UNDERLAY,
        &udp_frame(mac(&a, "gretap1")?, mac(&b, "gretap1")?, B_GREHA, A_GREHA),
    );
    // A __sk_buff with only ifindex (offset 40) set: the encap program finds
    // its tunnel by the interface the frame leaves through.
    let mut ctx = vec![0u8; 48];
    ctx[40..44].copy_from_slice(&ifindex(&a, "gretap1")?.to_ne_bytes());
    // The decap's frame arrives on A's underlay: addressed to its MAC, so
    // the skb is for this host (PACKET_HOST), as on the wire.
    let mut underlay_ctx = vec![0u8; 48];
    underlay_ctx[40..44].copy_from_slice(&ifindex(&a, "eth0")?.to_ne_bytes());
    let cost = |prog: &str, frame: &[u8], ctx: Option<&[u8]>| -> Result<(u32, f64)> {
        let path = progs.join(prog);
        a.enter(|| greha_tests::prog_test_run(&path, frame, ctx, RUNS))?
    };
    let (decap_rc, decap_ns) = cost("greha_gre_decap", &outer, Some(&underlay_ctx))?;
    let (encap_rc, encap_ns) = cost("greha_gre_encap", &inner, Some(&ctx))?;
    let (_, nop_outer_ns) = cost("greha_nop", &outer, Some(&underlay_ctx))?;
    let (_, nop_inner_ns) = cost("greha_nop", &inner, Some(&ctx))?;
    // TC_ACT_REDIRECT: both programs took their full path, not an early exit.
    if decap_rc != 7 || encap_rc != 7 {
        bail!(
            "under test run decap returned {decap_rc} and encap {encap_rc}, not TC_ACT_REDIRECT (7)"
        );
    }
    results.insert("decap_ns".into(), json!(decap_ns));
    results.insert("encap_ns".into(), json!(encap_ns));
    results.insert("nop_ns".into(), json!((nop_outer_ns + nop_inner_ns) / 2.0));
    results.insert(
        "decap_cost_ratio".into(),
        json!(round(decap_ns / nop_outer_ns.max(1.0), 2)),
    );
    results.insert(
        "encap_cost_ratio".into(),
        json!(round(encap_ns / nop_inner_ns.max(1.0), 2)),
    );

    let results = Value::Object(results);
    fs::create_dir_all(out_dir)?;
    let path = out_dir.join("tunnel.json");
    fs::write(&path, serde_json::to_string_pretty(&results)? + "\n")?;
    print_table(&results);
    println!("written: {}", path.display());
    Ok(())
}

/// ip6gretap in a lab of its own (an IPv6 underlay only): TCP with IPv4
/// and IPv6 inside against TCP on the IPv6 underlay itself, and 64-byte
/// UDP.
fn tunnel_ip6(greha: &Path, results: &mut serde_json::Map<String, Value>) -> Result<()> {
    let mut lab = Lab::new()?;
    let a = lab.host("a")?;
    let b = lab.host("b")?;
    for h in [&a, &b] {
        h.enable_ipv6()?;
    }
    lab.link(
        &a,
        &format!("{}/64", UNDERLAY6.0),
        &b,
        &format!("{}/64", UNDERLAY6.1),
    )?;
    let pins = [lab.pin_dir("a"), lab.pin_dir("b")];
    for (host, pins, local, remote, inner, inner6) in [
        (&a, &pins[0], UNDERLAY6.0, UNDERLAY6.1, A_GREHA, GREHA6.0),
        (&b, &pins[1], UNDERLAY6.1, UNDERLAY6.0, B_GREHA, GREHA6.1),
    ] {
        run(host.command(greha).arg("--pin-dir").arg(pins).args([
            "tunnel",
            "add",
            "t6",
            "mode",
            "ip6gretap",
            "local",
            local,
            "remote",
            remote,
            "address",
            &format!("{inner}/24"),
            "address",
            &format!("{inner6}/64"),
        ]))?;
    }
    let tcp = [
        ("underlay6_tcp_gbps".to_string(), UNDERLAY6.1),
        ("ip6gretap_tcp_gbps".to_string(), B_GREHA),
        ("ip6gretap_tcp6_gbps".to_string(), GREHA6.1),
    ];
    tcp_rounds(&lab, &a, &b, &tcp, results)?;
    eprintln!("bench: ip6gretap UDP, 64-byte datagrams");
    let pps = udp_pps(iperf3(
        &lab,
        &a,
        &b,
        B_GREHA,
        &["-u", "-b", "0", "-l", "64"],
    )?)?;
    results.insert("ip6gretap_udp_pps".into(), json!(pps.round()));
    Ok(())
}

/// Each (result key, destination) measured by TCP once a round for
/// [`ROUNDS`] rounds; the key gets the median in Gbit/s and `KEY_runs`
/// every round's.
fn tcp_rounds(
    lab: &Lab,
    a: &Host,
    b: &Host,
    paths: &[(String, &str)],
    results: &mut serde_json::Map<String, Value>,
) -> Result<()> {
    let mut runs = vec![Vec::new(); paths.len()];
    for round_no in 1..=ROUNDS {
        for ((key, dst), runs) in paths.iter().zip(&mut runs) {
            eprintln!("bench: {key} to {dst}, round {round_no} of {ROUNDS}");
            runs.push(round(tcp_gbps(iperf3(lab, a, b, dst, &[])?)?, 2));
        }
    }
    for ((key, _), mut runs) in paths.iter().zip(runs) {
        results.insert(format!("{key}_runs"), json!(runs));
        runs.sort_by(f64::total_cmp);
        results.insert(key.clone(), json!(runs[runs.len() / 2]));
    }
    Ok(())
}

fn round(x: f64, digits: i32) -> f64 {
    let m = 10f64.powi(digits);
    (x * m).round() / m
}

fn print_table(r: &Value) {
    println!(
        "{:<10} {:>10} {:>11} {:>12} {:>14}",
        "PATH", "TCP Gbit/s", "TCP6 Gbit/s", "UDP64 pps", "UDP64x8 pps"
    );
    for key in ["underlay", "greha", "vxlan"] {
        println!(
            "{:<10} {:>10} {:>11} {:>12} {:>14}",
            key,
            r[format!("{key}_tcp_gbps")],
            r[format!("{key}_tcp6_gbps")],
            r[format!("{key}_udp_pps")],
            r[format!("{key}_udp_flows_pps")]
        );
    }
    println!(
        "IPv6 underlay: TCP {} Gbit/s; ip6gretap: TCP {} Gbit/s, TCP over IPv6 {} Gbit/s, UDP64 {} pps",
        r["underlay6_tcp_gbps"],
        r["ip6gretap_tcp_gbps"],
        r["ip6gretap_tcp6_gbps"],
        r["ip6gretap_udp_pps"]
    );
    println!(
        "TCP to the underlay of its family (medians of {ROUNDS} rounds): gretap {} (IPv6 inside {}), ip6gretap {} (IPv6 inside {})",
        r["greha_tcp_ratio"],
        r["greha_tcp6_ratio"],
        r["ip6gretap_tcp_ratio"],
        r["ip6gretap_tcp6_ratio"]
    );
    println!(
        "decap {} ns, encap {} ns, nop {} ns per packet (BPF_PROG_TEST_RUN): decap x{}, encap x{}",
        r["decap_ns"], r["encap_ns"], r["nop_ns"], r["decap_cost_ratio"], r["encap_cost_ratio"]
    );
}

/// The received TCP throughput of an iperf3 report, in Gbit/s.
fn tcp_gbps(report: Value) -> Result<f64> {
    Ok(report["end"]["sum_received"]["bits_per_second"]
        .as_f64()
        .context("no TCP throughput in iperf3's report")?
        / 1e9)
}

/// The UDP datagrams a second that arrived, from an iperf3 report.
fn udp_pps(report: Value) -> Result<f64> {
    let sum = &report["end"]["sum"];
    let received = sum["packets"].as_f64().context("packets")?
        - sum["lost_packets"].as_f64().context("lost_packets")?;
    Ok(received / sum["seconds"].as_f64().context("seconds")?)
}

/// One iperf3 run from `a` to `dst` on `b`; its JSON report.
fn iperf3(lab: &Lab, a: &Host, b: &Host, dst: &str, extra: &[&str]) -> Result<Value> {
    let mut server = b.spawn(
        lab,
        {
            let mut c = b.command("iperf3");
            c.args(["-s", "-1", "--forceflush", "-B", dst]);
            c
        },
        false,
    )?;
    server.wait_for_output("Server listening", SHORT)?;
    // Not pinned to CPUs (iperf3 -A): tried on 2026-12-07, it made each
    // path's rate depend on which CPU its softirq work landed on (gretap
    // above the plain underlay), a bias worse than the scheduler's noise.
    let out = run(a
        .command("iperf3")
        .args(["-c", dst, "-t", SECONDS, "-J"])
        .args(extra))?;
    server.wait(SHORT + Duration::from_secs(10))?;
    Ok(serde_json::from_str(&out)?)
}

fn parse_mac(s: &str) -> Result<[u8; 6]> {
    let mut mac = [0u8; 6];
    let parts: Vec<&str> = s.split(':').collect();
    if parts.len() != 6 {
        bail!("bad MAC {s}");
    }
    for (m, p) in mac.iter_mut().zip(parts) {
        *m = u8::from_str_radix(p, 16)?;
    }
    Ok(mac)
}

fn ipv4_header(src: &str, dst: &str, proto: u8, payload_len: usize) -> Result<Vec<u8>> {
    let src: std::net::Ipv4Addr = src.parse()?;
    let dst: std::net::Ipv4Addr = dst.parse()?;
    let mut h = vec![0x45, 0, 0, 0, 0, 0, 0x40, 0, 64, proto, 0, 0];
    h[2..4].copy_from_slice(&((20 + payload_len) as u16).to_be_bytes());
    h.extend_from_slice(&src.octets());
    h.extend_from_slice(&dst.octets());
    let mut sum: u32 = h
        .chunks(2)
        .map(|w| u32::from(u16::from_be_bytes([w[0], w[1]])))
        .sum();
    while sum >> 16 != 0 {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    h[10..12].copy_from_slice(&(!(sum as u16)).to_be_bytes());
    Ok(h)
}

fn udp_frame(dst_mac: [u8; 6], src_mac: [u8; 6], src: &str, dst: &str) -> Vec<u8> {
    let payload = [0x5au8; 64];
    let mut udp = vec![0x13, 0x89, 0x13, 0x89];
    udp.extend_from_slice(&((8 + payload.len()) as u16).to_be_bytes());
    udp.extend_from_slice(&[0, 0]);
    udp.extend_from_slice(&payload);
    let mut f = Vec::new();
    f.extend_from_slice(&dst_mac);
    f.extend_from_slice(&src_mac);
    f.extend_from_slice(&[0x08, 0x00]);
    f.extend(ipv4_header(src, dst, 17, udp.len()).expect("literal addresses"));
    f.extend(udp);
    f
}

fn gre_frame(dst_mac: [u8; 6], src_mac: [u8; 6], src: &str, dst: &str, inner: &[u8]) -> Vec<u8> {
    let mut f = Vec::new();
    f.extend_from_slice(&dst_mac);
    f.extend_from_slice(&src_mac);
    f.extend_from_slice(&[0x08, 0x00]);
    f.extend(ipv4_header(src, dst, 47, 4 + inner.len()).expect("literal addresses"));
    f.extend_from_slice(&[0x00, 0x00, 0x65, 0x58]);
    f.extend_from_slice(inner);
    f
}

/// The failover modes: (name, VRRP version, advert interval in cs).
/// (name, VRRP version, advert interval in cs, IPv6).
const MODES: [(&str, u8, u32, bool); 5] = [
    ("v2_1s", 2, 100, false),
    ("v3_100ms", 3, 10, false),
    ("v3_10ms", 3, 1, false),
    ("v3_100ms_ipv6", 3, 10, true),
    ("v3_10ms_ipv6", 3, 1, true),
];

/// Runs per failover case.
const FAILOVER_RUNS: usize = 3;

/// The index of the median of `v` (the lower one for an even count).
fn median_index(v: &[f64]) -> usize {
    let mut idx: Vec<usize> = (0..v.len()).collect();
    idx.sort_by(|&a, &b| v[a].total_cmp(&v[b]));
    idx[(v.len() - 1) / 2]
}

fn median(v: &[f64]) -> f64 {
    v[median_index(v)]
}

/// Skew_Time and Master_Down_Interval of the backup (priority 100), in ns.
fn rfc_ns(version: u8, adv_cs: u32) -> (u64, u64) {
    let skew = if version == 2 {
        156 * 1_000_000_000u64 / 256
    } else {
        u64::from(156 * adv_cs / 256) * 10_000_000
    };
    (skew, u64::from(adv_cs) * 30_000_000 + skew)
}

/// `cargo xtask bench failover`: each failover measured twice, greha and
/// keepalived with the same settings in one run: by the RFC's clock (from
/// the advert it counts from to the VIP on the backup) and by a client's
/// (its 1 ms probes of the VIP); then a planned handover's lost requests.
/// Timelines of what the client saw go to `out_dir/timelines/`.
pub fn failover(greha: &Path, out_dir: &Path) -> Result<()> {
    let pictures = out_dir.join("timelines");
    fs::create_dir_all(&pictures)?;
    let mut results = serde_json::Map::new();
    for (mode, version, adv_cs, ipv6) in MODES {
        let (skew_ns, mdi_ns) = rfc_ns(version, adv_cs);
        results.insert(format!("rfc_kill_{mode}_ms"), json!(mdi_ns as f64 / 1e6));
        results.insert(
            format!("rfc_graceful_{mode}_ms"),
            json!(skew_ns as f64 / 1e6),
        );
        for stop in ["kill", "graceful"] {
            for imp in ["greha", "greha_nofastpath", "keepalived"] {
                let kill = stop == "kill";
                let bound = Duration::from_nanos(if kill { mdi_ns } else { skew_ns });
                // Each case FAILOVER_RUNS times; the median is reported (and every
                // run kept): a crash's figures move by a few ms with the
                // scheduling of the stop, enough to blur a comparison.
                let mut runs = Vec::new();
                for run in 1..=FAILOVER_RUNS {
                    eprintln!("bench: {imp} {stop} {mode} ({run}/{FAILOVER_RUNS})");
                    runs.push(failover_once(greha, imp, version, adv_cs, kill, ipv6)?);
                }
                let rfc: Vec<f64> = runs.iter().map(|(ms, _)| round(*ms, 1)).collect();
                let client: Vec<f64> = runs
                    .iter()
                    .map(|(_, s)| round(s.gap.longest.as_secs_f64() * 1e3, 1))
                    .collect();
                results.insert(format!("{imp}_{stop}_{mode}_ms"), json!(median(&rfc)));
                results.insert(format!("{imp}_{stop}_{mode}_ms_runs"), json!(rfc));
                results.insert(
                    format!("{imp}_{stop}_{mode}_client_ms"),
                    json!(median(&client)),
                );
                results.insert(format!("{imp}_{stop}_{mode}_client_ms_runs"), json!(client));
                if !kill {
                    let silent = runs.iter().filter(|(_, s)| s.silent).count();
                    results.insert(
                        format!("{imp}_{stop}_{mode}_taken_over_before_priority_zero"),
                        json!(silent),
                    );
                }
                // The picture of the median run.
                let mid = median_index(&client);
                let seen = &runs[mid].1;
                write_svg(
                    &pictures.join(format!("{imp}_{stop}_{mode}.svg")),
                    &Timeline {
                        title: &format!(
                            "{imp}, {stop}, {mode}: {:.0} ms without answers",
                            seen.gap.longest.as_secs_f64() * 1e3
                        ),
                        probes: &seen.probes,
                        event: seen.event,
                        from: seen.gap.from,
                        until: seen.gap.until,
                        bound_ms: Some(bound.as_secs_f64() * 1e3),
                    },
                )?;
            }
        }
    }
    for imp in ["greha", "keepalived"] {
        eprintln!("bench: {imp} planned handover, a new HTTP request every 10 ms");
        let h = handover_once(greha, imp)?;
        results.insert(format!("{imp}_handover_requests"), json!(h.made));
        results.insert(format!("{imp}_handover_lost_requests"), json!(h.lost));
        results.insert(
            format!("{imp}_handover_unreachable_requests"),
            json!(h.unreachable),
        );
    }
    let results = Value::Object(results);
    let path = out_dir.join("failover.json");
    fs::write(&path, serde_json::to_string_pretty(&results)? + "\n")?;
    let ms = |key: String| results[key].as_f64().unwrap_or(f64::NAN);
    for (title, suffix) in [
        ("By the RFC's clock (advert to VIP), ms:", "ms"),
        (
            "By the client's clock (longest stretch without answers, 1 ms probes), ms:",
            "client_ms",
        ),
    ] {
        println!("{title}");
        println!(
            "{:<10} {:<9} {:>10} {:>16} {:>14} {:>10}",
            "MODE", "STOP", "greha", "no fast path", "keepalived", "RFC"
        );
        for (mode, _, _, _) in MODES {
            for stop in ["kill", "graceful"] {
                println!(
                    "{:<10} {:<9} {:>10.1} {:>16.1} {:>14.1} {:>10.3}",
                    mode,
                    stop,
                    ms(format!("greha_{stop}_{mode}_{suffix}")),
                    ms(format!("greha_nofastpath_{stop}_{mode}_{suffix}")),
                    ms(format!("keepalived_{stop}_{mode}_{suffix}")),
                    ms(format!("rfc_{stop}_{mode}_ms")),
                );
            }
        }
    }
    for imp in ["greha", "keepalived"] {
        println!(
            "Planned handover (graceful stop, v2 1 s), {imp}: {} of {} requests lost, {} of them unreachable",
            results[format!("{imp}_handover_lost_requests")],
            results[format!("{imp}_handover_requests")],
            results[format!("{imp}_handover_unreachable_requests")],
        );
    }
    println!("written: {} and {}", path.display(), pictures.display());
    Ok(())
}

/// The failover lab: A and B (the routers) and a client on one switch,
/// each router with the echo service the client probes.
struct FailoverLab {
    greha: PathBuf,
    /// The VIP is 2001:db8::10/64 (VRRPv3 for IPv6) rather than
    /// 203.0.113.10/24.
    ipv6: bool,
    lab: Lab,
    a: Host,
    b: Host,
    client: Host,
    a_if: String,
    b_if: String,
    pins: [PathBuf; 2],
}

const VIP: &str = "203.0.113.10";
const VIP6: &str = "2001:db8::10";

impl FailoverLab {
    fn new(greha: &Path, ipv6: bool) -> Result<Self> {
        let mut lab = Lab::new()?;
        let a = lab.host("a")?;
        let b = lab.host("b")?;
        let client = lab.host("client")?;
        let sw = lab.switch("lan")?;
        if ipv6 {
            for h in [&a, &b, &client, &sw] {
                h.enable_ipv6()?;
            }
        }
        let a_if = lab.plug(&a, &format!("{A_UNDERLAY}/24"), &sw)?;
        let b_if = lab.plug(&b, &format!("{B_UNDERLAY}/24"), &sw)?;
        // The client is on the VIP's subnet, as the seed's clients are.
        let c_if = lab.plug(&client, "203.0.113.100/24", &sw)?;
        if ipv6 {
            for (h, ifname, n) in [(&a, &a_if, 2), (&b, &b_if, 3), (&client, &c_if, 100)] {
                h.ip(&["addr", "add", &format!("2001:db8::{n}/64"), "dev", ifname])?;
            }
        }
        let pins = [lab.pin_dir("a"), lab.pin_dir("b")];
        Ok(Self {
            greha: greha.to_owned(),
            ipv6,
            lab,
            a,
            b,
            client,
            a_if,
            b_if,
            pins,
        })
    }

    /// `imp` (greha, greha_nofastpath or keepalived) on A or B.
    fn start(&self, imp: &str, on_b: bool, priority: u8, version: u8, adv_cs: u32) -> Result<Proc> {
        let (host, name, ifname) = if on_b {
            (&self.b, "b", &self.b_if)
        } else {
            (&self.a, "a", &self.a_if)
        };
        let adv = f64::from(adv_cs) / 100.0;
        let vip = self.vip_cidr();
        if imp.starts_with("greha") {
            let auth = if version == 2 { " auth-pass 1111" } else { "" };
            let fastpath = if imp == "greha" { "" } else { " no-fastpath" };
            let mut cmd = host.command(&self.greha);
            cmd.arg("--pin-dir")
                .arg(&self.pins[usize::from(on_b)])
                .arg("--control")
                .arg(self.lab.tmp().join(format!("{name}.sock")))
                .args([
                    "run",
                    "--vrrp",
                    &format!(
                        "VI_1 interface {ifname} vrid 51 priority {priority} version {version} advert-int {adv}{auth}{fastpath} vip {vip}"
                    ),
                ]);
            let mut p = host.spawn(&self.lab, cmd, true)?;
            p.wait_ready(SHORT)?;
            Ok(p)
        } else {
            let auth = if version == 2 {
                "authentication {\n auth_type PASS\n auth_pass 1111\n }"
            } else {
                ""
            };
            greha_tests::start_keepalived(
                &self.lab,
                host,
                name,
                &format!(
                    "state BACKUP\n interface {ifname}\n virtual_router_id 51\n \
                     priority {priority}\n advert_int {adv}\n version {version}\n {auth}\n \
                     virtual_ipaddress {{\n {vip} dev {ifname}\n }}"
                ),
                "(VI_1) Entering BACKUP STATE",
            )
        }
    }

    fn has_vip(&self, on_b: bool) -> Result<bool> {
        let (host, ifname) = if on_b {
            (&self.b, &self.b_if)
        } else {
            (&self.a, &self.a_if)
        };
        let vip = self.vip();
        Ok(host
            .ip(&["-br", "addr", "show", "dev", ifname])?
            .split_whitespace()
            .any(|w| w.split('/').next() == Some(vip)))
    }

    fn vip(&self) -> &'static str {
        if self.ipv6 { VIP6 } else { VIP }
    }

    fn vip_cidr(&self) -> String {
        if self.ipv6 {
            format!("{VIP6}/64")
        } else {
            format!("{VIP}/24")
        }
    }

    /// Stops the master on A: kill -9 (the server dies: off the LAN first,
    /// so no client reaches it from then on) or SIGTERM.
    fn stop_master(&self, master: &mut Proc, imp: &str, kill: bool) -> Result<()> {
        if kill {
            self.a.ip(&["link", "set", &self.a_if, "down"])?;
        }
        let sig = if kill {
            nix::sys::signal::Signal::SIGKILL
        } else {
            nix::sys::signal::Signal::SIGTERM
        };
        if imp == "keepalived" && kill {
            // Freeze the parent so it neither respawns nor gracefully
            // stops the VRRP child, then kill both.
            master.signal(nix::sys::signal::Signal::SIGSTOP)?;
            let child: i32 = fs::read_to_string(self.lab.tmp().join("ka-a/v.pid"))?
                .trim()
                .parse()?;
            nix::sys::signal::kill(nix::unistd::Pid::from_raw(child), sig)?;
        }
        master.signal(sig)?;
        Ok(())
    }
}

/// What the client saw of one failover.
struct Seen {
    event: Instant,
    probes: Vec<Probe>,
    gap: Gap,
    /// A graceful stop whose backup took over before any priority 0
    /// advert (by Master_Down).
    silent: bool,
}

/// One failover: master (priority 150) on A, backup (100) on B, both `imp`;
/// returns milliseconds to the VIP on B from what the RFC counts from: A's
/// last advert heard by B (a crash) or its priority 0 advert (a graceful
/// stop); and what the client saw.
fn failover_once(
    greha: &Path,
    imp: &str,
    version: u8,
    adv_cs: u32,
    kill: bool,
    ipv6: bool,
) -> Result<(f64, Seen)> {
    let l = FailoverLab::new(greha, ipv6)?;
    let _echo_a = Echo::start(&l.a, 'A')?;
    let _echo_b = Echo::start(&l.b, 'B')?;
    let mut master = l.start(imp, false, 150, version, adv_cs)?;
    wait_until(Duration::from_secs(10), "A to take the VIP", || {
        l.has_vip(false)
    })?;
    let _backup = l.start(imp, true, 100, version, adv_cs)?;
    let target = SocketAddr::new(l.vip().parse()?, ECHO_PORT);
    let prober = Prober::start(&l.client, target, Duration::from_millis(1))?;
    prober.wait_for('A', Instant::now(), SHORT)?;
    // The backup has heard the master for two Master_Down_Intervals.
    std::thread::sleep(Duration::from_millis(u64::from(adv_cs) * 10 * 8));
    if l.has_vip(true)? {
        bail!("{imp}: B holds the VIP while A is master");
    }
    // Watch the adverts on the link itself, where no datapath filters
    // them: a packet socket on A's end of the veth sees what A sends (B's
    // XDP fast path drops steady adverts before any socket in B sees
    // them). B's addresses are watched from B's namespace; the socket,
    // once open, keeps working there.
    let (ns_a, ns_b) = (
        fs::File::open(l.a.netns_path())?,
        fs::File::open(l.b.netns_path())?,
    );
    let a_if = l.a_if.clone();
    let a_mac = parse_mac(
        l.a.ip(&["-br", "link", "show", "dev", &l.a_if])?
            .split_whitespace()
            .nth(2)
            .context("A's MAC")?,
    )?;
    let vip: std::net::IpAddr = l.vip().parse()?;
    let (heard_tx, heard) = std::sync::mpsc::channel();
    let watcher = std::thread::spawn(move || -> Result<(Instant, Vec<(Instant, u8)>)> {
        nix::sched::setns(&ns_a, nix::sched::CloneFlags::CLONE_NEWNET)?;
        let sock = link_capture(&a_if)?;
        nix::sched::setns(&ns_b, nix::sched::CloneFlags::CLONE_NEWNET)?;
        let mut adverts = Vec::new();
        let deadline = Instant::now() + Duration::from_secs(15);
        let mut buf = [std::mem::MaybeUninit::<u8>::uninit(); 256];
        // A's adverts waiting in the socket, stamped now (or `by`, when
        // they are drained after the VIP was seen: they came before it,
        // within one polling step).
        let mut drain = |by: Option<Instant>, adverts: &mut Vec<(Instant, u8)>| {
            while let Ok(n) = sock.recv(&mut buf) {
                // SAFETY: recv initialized the first n bytes.
                let d: Vec<u8> = buf[..n]
                    .iter()
                    .map(|b| unsafe { b.assume_init() })
                    .collect();
                // From A's MAC: IPv4 with protocol 112, or IPv6 with
                // next header 112; the priority is the third byte.
                if d.get(6..12) != Some(&a_mac[..]) {
                    continue;
                }
                let Some(ip) = d.get(14..) else { continue };
                let at = match d.get(12..14) {
                    Some([0x08, 0x00]) if ip.get(9) == Some(&112) => {
                        usize::from(ip[0] & 0x0f) * 4 + 2
                    }
                    Some([0x86, 0xdd]) if ip.get(6) == Some(&112) => 40 + 2,
                    _ => continue,
                };
                if let Some(&priority) = ip.get(at) {
                    let now = Instant::now();
                    adverts.push((by.map_or(now, |b| b.min(now)), priority));
                    let _ = heard_tx.send(());
                }
            }
        };
        while Instant::now() < deadline {
            drain(None, &mut adverts);
            let found = nix::ifaddrs::getifaddrs()?.any(|i| {
                i.address.is_some_and(|a| {
                    a.as_sockaddr_in()
                        .map(|s| std::net::IpAddr::from(s.ip()))
                        .or_else(|| a.as_sockaddr_in6().map(|s| s.ip().into()))
                        == Some(vip)
                })
            });
            if found {
                let t1 = Instant::now();
                // At 10 ms adverts Skew_Time is 0: B may take the VIP
                // between a drain and this check.
                drain(Some(t1), &mut adverts);
                return Ok((t1, adverts));
            }
            std::thread::sleep(Duration::from_micros(200));
        }
        bail!("B never took the VIP")
    });
    // Let the watcher see at least one advert before the stop. A stop
    // comes right after an advert, so every implementation's client gap is
    // a whole Master_Down_Interval, comparable across them (at a random
    // phase it is anything down to three intervals less).
    // A graceful stop waits for one too: it proves the watcher's socket
    // open (at 10 ms, Skew_Time 0, B could take the VIP before the
    // watcher saw the priority 0 advert, and the run had no start).
    std::thread::sleep(Duration::from_millis(u64::from(adv_cs) * 10 * 2));
    while heard.try_recv().is_ok() {}
    heard
        .recv_timeout(Duration::from_millis(u64::from(adv_cs) * 10 * 3))
        .with_context(|| format!("{imp}: A sent no advert"))?;
    let event = Instant::now();
    l.stop_master(&mut master, imp, kill)?;
    let (t1, adverts) = watcher.join().expect("watcher panicked")?;
    if !(imp == "keepalived" && kill) {
        master.wait(SHORT)?;
    }
    prober.wait_for('B', event, SHORT)?;
    let probes = prober.finish();
    let gap =
        gap(&probes, event, 'B').with_context(|| format!("{imp}: the client saw no failover"))?;
    // What the RFC's figures count from: a crash, from the last advert the
    // backup heard; a graceful stop, from the priority 0 advert. A stop
    // that went silent for Master_Down_Interval before resigning (seen of
    // keepalived at 10 ms adverts) counts as a crash, and is counted.
    let resigned = adverts.iter().find(|(_, p)| *p == 0).map(|(t, _)| *t);
    let last = adverts.iter().rev().find(|(_, p)| *p > 0).map(|(t, _)| *t);
    let silent = !kill && resigned.is_none();
    let from = if kill { last } else { resigned.or(last) }
        .with_context(|| format!("{imp}: the backup heard no advert"))?;
    Ok((
        t1.duration_since(from).as_secs_f64() * 1000.0,
        Seen {
            event,
            probes,
            gap,
            silent,
        },
    ))
}

/// A planned handover's requests: lost in all, and of those, how many
/// found nobody (the rest broke mid-request).
struct Handover {
    made: usize,
    lost: usize,
    unreachable: usize,
}

/// A planned handover at the seed's settings (VRRPv2, 1 s): the master on
/// A stopped gracefully while a client opens a new HTTP connection to the
/// VIP every 10 ms. Counts the requests from the stop until a second after
/// B first answered.
fn handover_once(greha: &Path, imp: &str) -> Result<Handover> {
    let l = FailoverLab::new(greha, false)?;
    let _www_a = http_service(&l.lab, &l.a, 'A')?;
    let _www_b = http_service(&l.lab, &l.b, 'B')?;
    let mut master = l.start(imp, false, 150, 2, 100)?;
    wait_until(Duration::from_secs(10), "A to take the VIP", || {
        l.has_vip(false)
    })?;
    let _backup = l.start(imp, true, 100, 2, 100)?;
    std::thread::sleep(Duration::from_secs(4));
    let web: SocketAddr = format!("{VIP}:80").parse()?;
    let ns = fs::File::open(l.client.netns_path())?;
    let stop = Arc::new(AtomicBool::new(false));
    let st = Arc::clone(&stop);
    // Threads inherit the namespace of the thread that starts them.
    let client = std::thread::spawn(move || -> Result<Vec<(Instant, Answer)>> {
        nix::sched::setns(&ns, nix::sched::CloneFlags::CLONE_NEWNET)?;
        let mut requests = Vec::new();
        let start = Instant::now();
        let mut n = 0u32;
        while !st.load(Ordering::Relaxed) {
            let due = start + Duration::from_millis(10) * n;
            if let Some(w) = due.checked_duration_since(Instant::now()) {
                std::thread::sleep(w);
            }
            let t = Instant::now();
            requests.push((
                t,
                std::thread::spawn(move || fetch(&web, Duration::from_secs(1))),
            ));
            n += 1;
        }
        Ok(requests
            .into_iter()
            .map(|(t, h)| (t, h.join().unwrap_or(Answer::Broken)))
            .collect())
    });
    std::thread::sleep(Duration::from_millis(500));
    let event = Instant::now();
    l.stop_master(&mut master, imp, false)?;
    master.wait(SHORT)?;
    wait_until(SHORT, "B to take the VIP", || l.has_vip(true))?;
    std::thread::sleep(Duration::from_secs(2));
    stop.store(true, Ordering::Relaxed);
    let requests = client.join().expect("client panicked")?;
    let first_b = requests
        .iter()
        .find(|(t, a)| *t >= event && *a == Answer::Server('B'))
        .map(|(t, _)| *t)
        .context("B never answered a request")?;
    let during: Vec<_> = requests
        .iter()
        .filter(|(t, _)| *t >= event && *t <= first_b + Duration::from_secs(1))
        .collect();
    Ok(Handover {
        made: during.len(),
        lost: during.iter().filter(|(_, a)| a.server().is_none()).count(),
        unreachable: during
            .iter()
            .filter(|(_, a)| *a == Answer::Unreachable)
            .count(),
    })
}

/// A packet socket on `ifname` (in the calling thread's namespace) that
/// sees its frames both ways, non-blocking. ETH_P_ALL: a socket for one
/// protocol is not given what the interface sends.
fn link_capture(ifname: &str) -> Result<socket2::Socket> {
    let ifindex = nix::net::if_::if_nametoindex(ifname)?;
    let proto = (libc::ETH_P_ALL as u16).to_be();
    let sock = socket2::Socket::new(
        socket2::Domain::PACKET,
        socket2::Type::RAW,
        Some(socket2::Protocol::from(i32::from(proto))),
    )?;
    let mut storage = socket2::SockAddrStorage::zeroed();
    // SAFETY: sockaddr_storage holds a sockaddr_ll; a zeroed one with
    // family, protocol and ifindex set is a valid packet socket address.
    let addr = unsafe {
        let sll: &mut libc::sockaddr_ll = storage.view_as();
        sll.sll_family = libc::AF_PACKET as u16;
        sll.sll_protocol = proto;
        sll.sll_ifindex = ifindex as i32;
        socket2::SockAddr::new(storage, size_of::<libc::sockaddr_ll>() as libc::socklen_t)
    };
    sock.bind(&addr)?;
    sock.set_nonblocking(true)?;
    Ok(sock)
}

/// A VRRP implementation in the scale benchmark.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Vrrpd {
    Greha,
    GrehaNoFastpath,
    Keepalived,
}

impl Vrrpd {
    fn key(self) -> &'static str {
        match self {
            Self::Greha => "greha",
            Self::GrehaNoFastpath => "greha_nofastpath",
            Self::Keepalived => "keepalived",
        }
    }
}

const SCALE_INSTANCES: u32 = 255;

/// `cargo xtask bench scale`: 255 VRRP instances between two hosts, v3 at
/// 100 ms and at 10 ms; CPU seconds and wakeups (context switches) of the
/// backup, then of the master, for greha with and without the fast path
/// and for keepalived, over `seconds` each.
pub fn scale(greha: &Path, out_dir: &Path, seconds: u64, only: Option<&str>) -> Result<()> {
    let mut results = serde_json::Map::new();
    for (rate, cs) in [("100ms", 10u32), ("10ms", 1)] {
        for side in ["backup", "master"] {
            for imp in [Vrrpd::Greha, Vrrpd::GrehaNoFastpath, Vrrpd::Keepalived] {
                let case = format!("{}_{side}_{rate}", imp.key());
                if only.is_some_and(|o| !case.contains(o)) {
                    continue;
                }
                eprintln!("bench: {} as the {side}, {rate} adverts", imp.key());
                // The other side is greha with the fast path.
                let (master, backup) = if side == "backup" {
                    (Vrrpd::Greha, imp)
                } else {
                    (imp, Vrrpd::Greha)
                };
                let (cpu, wakeups, false_failovers) =
                    scale_once(greha, cs, master, backup, side == "master", seconds)?;
                results.insert(
                    format!("{}_{side}_cpu_s_{rate}", imp.key()),
                    json!(round(cpu, 3)),
                );
                results.insert(
                    format!("{}_{side}_wakeups_{rate}", imp.key()),
                    json!(wakeups),
                );
                results.insert(
                    format!("{}_{side}_false_failovers_{rate}", imp.key()),
                    json!(false_failovers),
                );
            }
        }
    }
    results.insert("seconds".into(), json!(seconds));
    results.insert("instances".into(), json!(SCALE_INSTANCES));
    let results = Value::Object(results);
    fs::create_dir_all(out_dir)?;
    let path = out_dir.join("scale.json");
    fs::write(&path, serde_json::to_string_pretty(&results)? + "\n")?;
    println!(
        "{:<8} {:<7} {:>12} {:>12} {:>12} {:>10} {:>10} {:>10}",
        "RATE", "SIDE", "greha cpu", "nofast cpu", "kad cpu", "greha wk", "nofast wk", "kad wk"
    );
    for rate in ["100ms", "10ms"] {
        for side in ["backup", "master"] {
            let r = |imp: &str, what: &str| results[format!("{imp}_{side}_{what}_{rate}")].clone();
            println!(
                "{:<8} {:<7} {:>12} {:>12} {:>12} {:>10} {:>10} {:>10}",
                rate,
                side,
                r("greha", "cpu_s"),
                r("greha_nofastpath", "cpu_s"),
                r("keepalived", "cpu_s"),
                r("greha", "wakeups"),
                r("greha_nofastpath", "wakeups"),
                r("keepalived", "wakeups"),
            );
        }
    }
    for (k, v) in results.as_object().expect("an object") {
        if k.contains("false_failovers") && v.as_u64() > Some(0) {
            println!("{k}: {v} instances of the backup took their VIP under load");
        }
    }
    println!("written: {}", path.display());
    Ok(())
}

/// CPU seconds and context switches of `pids` (all their threads). CPU
/// time from schedstat, in nanoseconds: /proc/PID/stat counts clock ticks,
/// too coarse for a daemon that is idle most of the time.
fn usage(pids: &[u32]) -> Result<(f64, u64)> {
    let (mut cpu_ns, mut switches) = (0u64, 0);
    for pid in pids {
        for task in fs::read_dir(format!("/proc/{pid}/task"))? {
            let task = task?.path();
            let sched = fs::read_to_string(task.join("schedstat"))?;
            cpu_ns += sched
                .split_whitespace()
                .next()
                .context("empty schedstat")?
                .parse::<u64>()?;
            let status = fs::read_to_string(task.join("status"))?;
            for line in status.lines() {
                if let Some(v) = line
                    .strip_prefix("voluntary_ctxt_switches:")
                    .or_else(|| line.strip_prefix("nonvoluntary_ctxt_switches:"))
                {
                    switches += v.trim().parse::<u64>()?;
                }
            }
        }
    }
    Ok((cpu_ns as f64 / 1e9, switches))
}

fn scale_once(
    greha: &Path,
    adv_cs: u32,
    master: Vrrpd,
    backup: Vrrpd,
    measure_master: bool,
    seconds: u64,
) -> Result<(f64, u64, u64)> {
    let mut lab = Lab::new()?;
    let a = lab.host("a")?;
    let b = lab.host("b")?;
    lab.link(
        &a,
        &format!("{A_UNDERLAY}/24"),
        &b,
        &format!("{B_UNDERLAY}/24"),
    )?;
    let adv = f64::from(adv_cs) / 100.0;
    let pins = [lab.pin_dir("a"), lab.pin_dir("b")];
    // A is the master (priority 150), B the backup (100).
    let mut pids = Vec::new();
    let mut procs = Vec::new();
    for (k, (host, imp, prio)) in [(&a, master, 150u8), (&b, backup, 100u8)]
        .into_iter()
        .enumerate()
    {
        let dir = lab.tmp().join(format!("host{k}"));
        fs::create_dir_all(&dir)?;
        let mut conf = String::new();
        for vrid in 1..=SCALE_INSTANCES {
            let vip = format!("203.0.113.{vrid}/32");
            if imp == Vrrpd::Keepalived {
                conf += &format!(
                    "vrrp_instance VI_{vrid} {{\n state BACKUP\n interface eth0\n virtual_router_id {vrid}\n \
                     priority {prio}\n advert_int {adv}\n version 3\n virtual_ipaddress {{\n {vip} dev eth0\n }}\n}}\n"
                );
            } else {
                let fast = if imp == Vrrpd::GrehaNoFastpath {
                    "fastpath = false\n"
                } else {
                    ""
                };
                conf += &format!(
                    "[[vrrp]]\nname = \"VI_{vrid}\"\ninterface = \"eth0\"\nvrid = {vrid}\npriority = {prio}\n\
                     advert_int = {adv}\n{fast}[[vrrp.vip]]\naddress = \"{vip}\"\n"
                );
            }
        }
        let file = dir.join(if imp == Vrrpd::Keepalived {
            "k.conf"
        } else {
            "g.toml"
        });
        fs::write(&file, conf)?;
        let proc = if imp == Vrrpd::Keepalived {
            let mut cmd = host.command("keepalived");
            cmd.args(["-n", "-l", "-P", "-f"])
                .arg(&file)
                .arg("-p")
                .arg(dir.join("k.pid"))
                .arg("-r")
                .arg(dir.join("v.pid"));
            let mut p = host.spawn(&lab, cmd, false)?;
            p.wait_for_output("Entering BACKUP STATE", SHORT)?;
            p
        } else {
            let mut cmd = host.command(greha);
            cmd.arg("--pin-dir")
                .arg(&pins[k])
                .arg("--control")
                .arg(dir.join("g.sock"))
                .args(["run", "--config"])
                .arg(&file);
            let mut p = host.spawn(&lab, cmd, true)?;
            p.wait_ready(Duration::from_secs(30))?;
            p
        };
        let mut these = vec![proc.pid()];
        if imp == Vrrpd::Keepalived {
            wait_until(SHORT, "keepalived's VRRP process", || {
                Ok(dir.join("v.pid").exists())
            })?;
            these.push(fs::read_to_string(dir.join("v.pid"))?.trim().parse()?);
        }
        pids.push(these);
        procs.push(proc);
        if k == 0 {
            // The master holds all its VIPs before the backup starts.
            wait_until(
                Duration::from_secs(60),
                "the master to hold every VIP",
                || {
                    let out = a.ip(&["-4", "-o", "addr", "show", "dev", "eth0"])?;
                    Ok(out.matches("203.0.113.").count() as u32 == SCALE_INSTANCES)
                },
            )?;
        }
    }
    // Let the backup settle for two Master_Down_Intervals.
    std::thread::sleep(
        Duration::from_millis(u64::from(adv_cs) * 10 * 8).max(Duration::from_secs(1)),
    );
    let measured = &pids[usize::from(!measure_master)];
    let (cpu0, sw0) = usage(measured)?;
    std::thread::sleep(Duration::from_secs(seconds));
    let (cpu1, sw1) = usage(measured)?;
    // A backup holding VIPs while the master runs is a false failover:
    // the backup fell behind its adverts.
    let held = b
        .ip(&["-4", "-o", "addr", "show", "dev", "eth0"])?
        .matches("203.0.113.")
        .count();
    if held > 0 && backup != Vrrpd::Keepalived {
        // What the backup's engines went through, for the first few.
        let status = b
            .command(greha)
            .arg("--pin-dir")
            .arg(&pins[1])
            .arg("--control")
            .arg(lab.tmp().join("host1/g.sock"))
            .args(["status", "--json"])
            .output()?;
        let v: Value = serde_json::from_slice(&status.stdout).unwrap_or_default();
        for inst in v["vrrp"]
            .as_array()
            .into_iter()
            .flatten()
            .filter(|i| i["state"] != "backup")
            .take(3)
        {
            eprintln!(
                "bench: backup's {} is {}: {} {}",
                inst["name"], inst["state"], inst["transitions"], inst["stats"]
            );
        }
        eprintln!("bench: backup's global counters: {}", v["vrrp_global"]);
        let log = procs[1].log();
        let lines: Vec<&str> = log.lines().collect();
        eprintln!(
            "bench: backup's log ({} lines), the last:\n{}",
            lines.len(),
            lines[lines.len().saturating_sub(15)..].join("\n")
        );
    }
    drop(procs);
    Ok((cpu1 - cpu0, sw1 - sw0, held as u64))
}
