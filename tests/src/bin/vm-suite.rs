//! The suite `cargo xtask vmtest` runs inside each guest kernel, as the
//! initramfs's one job: every greha program loads (or greha says why not),
//! two namespaces with greha gretap tunnels ping and move 16 MiB byte for
//! byte, counters read by name with bpftool, and the seed's VRRP failover
//! against keepalived with the fast path on. Each check prints one line,
//! `vm-suite: NAME: ok` or `vm-suite: NAME: FAILED: why`; the exit status
//! is 0 only if all passed.
use std::{path::Path, process::Command, time::Duration};

use anyhow::{Context as _, Result, ensure};
use greha_tests::{Host, Lab, Proc, greha_bin, run, start_keepalived, wait_until};

/// Generous: the guest runs under TCG, many times slower than the host.
const LONG: Duration = Duration::from_secs(60);

const A_UNDERLAY: &str = "198.51.100.1";
const B_UNDERLAY: &str = "198.51.100.2";
const A_INNER: &str = "192.0.2.1";
const B_INNER: &str = "192.0.2.2";
const VIP: &str = "203.0.113.10";

/// A named check of the suite.
type Check = (&'static str, fn() -> Result<()>);

fn main() -> std::process::ExitCode {
    let checks: &[Check] = &[
        ("tunnel", tunnel),
        ("vrrp-keepalived", vrrp_keepalived),
        ("restart-kept", restart_kept),
        ("kernel-peer", kernel_peer),
        ("kernel-peer-liveness", kernel_peer_liveness),
        ("kernel-peer-keys", kernel_peer_keys),
        ("kernel-peer-ip6", kernel_peer_ip6),
        ("kernel-peer-vlan", kernel_peer_vlan),
        ("kernel-peer-fragments", kernel_peer_fragments),
    ];
    let mut failed = 0;
    for (name, check) in checks {
        match check() {
            Ok(()) => println!("vm-suite: {name}: ok"),
            Err(e) => {
                failed += 1;
                println!("vm-suite: {name}: FAILED: {e:#}");
            }
        }
    }
    println!(
        "vm-suite: {} of {} checks passed on {}",
        checks.len() - failed,
        checks.len(),
        uname_r()
    );
    if failed == 0 {
        std::process::ExitCode::SUCCESS
    } else {
        std::process::ExitCode::FAILURE
    }
}

fn uname_r() -> String {
    nix::sys::utsname::uname()
        .map(|u| u.release().to_string_lossy().into_owned())
        .unwrap_or_default()
}

fn greha(host: &Host, pins: &Path, args: &[&str]) -> Result<String> {
    run(host
        .command(greha_bin())
        .arg("--pin-dir")
        .arg(pins)
        .args(args))
}

/// gretap with a key both ways: ping, 16 MiB byte-exact, the counters by
/// name through bpftool, no drop.
fn tunnel() -> Result<()> {
    let (mut lab, a, b) = linked_pair()?;
    let (a_pins, b_pins) = (lab.pin_dir("a"), lab.pin_dir("b"));
    for (host, pins, local, remote, inner) in [
        (&a, &a_pins, A_UNDERLAY, B_UNDERLAY, A_INNER),
        (&b, &b_pins, B_UNDERLAY, A_UNDERLAY, B_INNER),
    ] {
        let spec =
            format!("gretap1 mode gretap local {local} remote {remote} key 7 address {inner}/24");
        let words: Vec<&str> = spec.split_whitespace().collect();
        greha(host, pins, &[&["tunnel", "add"], &words[..]].concat())
            .context("greha tunnel add")?;
    }
    let counters = |host: &Host, pins: &Path| {
        greha(host, pins, &["tunnel", "show", "--json"]).unwrap_or_else(|e| format!("{e:#}"))
    };
    run(a.command("ping").args(["-c", "3", "-W", "5", B_INNER])).with_context(|| {
        format!(
            "ping through the tunnel; A:\n{}\nB:\n{}",
            counters(&a, &a_pins),
            counters(&b, &b_pins)
        )
    })?;
    transfer_to(&a, &b, &format!("{B_INNER}:5001"), 16 << 20)?;
    let out = run(Command::new("bpftool")
        .args(["map", "dump", "pinned"])
        .arg(a_pins.join("GREHA_TUNNEL_COUNTERS"))
        .arg("-j"))?;
    for field in ["rx_packets", "tx_packets", "tx_drop_no_next_hop"] {
        ensure!(
            out.contains(&format!("\"{field}\"")),
            "bpftool does not name {field}: {out}"
        );
    }
    no_drops(&a, &a_pins, &[])?;
    no_drops(&b, &b_pins, &[])
}

/// `len` pseudo-random bytes from `a` to `b` listening on `to` (an
/// address and port), compared byte for byte.
fn transfer_to(a: &Host, b: &Host, to: &str, len: u32) -> Result<()> {
    greha_tests::tcp_transfer(a, b, to, len, LONG)
}

/// No drop counted by the host's one tunnel, but those in `except`.
fn no_drops(host: &Host, pins: &Path, except: &[&str]) -> Result<()> {
    let v: serde_json::Value =
        serde_json::from_str(&greha(host, pins, &["tunnel", "show", "--json"])?)?;
    let c = &v[0]["counters"];
    for (field, n) in c.as_object().context("counters")? {
        if field.contains("drop") && !except.contains(&field.as_str()) {
            ensure!(n == 0, "{field} = {n} on a clean run: {c}");
        }
    }
    Ok(())
}

/// A lab of hosts A and B joined by an underlay veth.
fn linked_pair() -> Result<(Lab, Host, Host)> {
    let mut lab = Lab::new()?;
    let a = lab.host("a")?;
    let b = lab.host("b")?;
    lab.link(
        &a,
        &format!("{A_UNDERLAY}/24"),
        &b,
        &format!("{B_UNDERLAY}/24"),
    )?;
    Ok((lab, a, b))
}

fn holds(host: &Host, addr: &str) -> Result<bool> {
    Ok(host
        .ip(&["-4", "addr", "show", "dev", "eth0"])?
        .contains(&format!("{addr}/")))
}

fn holds_vip(host: &Host) -> Result<bool> {
    holds(host, VIP)
}

fn start_greha(lab: &Lab, host: &Host) -> Result<Proc> {
    let mut cmd = lab.greha(host);
    cmd.args([
        "run",
        "--vrrp",
        &format!("VI_1 interface eth0 vrid 51 priority 150 advert-int 1 version 2 vip {VIP}/24"),
    ]);
    let mut g = host.spawn(lab, cmd, true)?;
    g.wait_ready(LONG)?;
    Ok(g)
}

/// greha (150) and keepalived (100) on one link, as in the seed: greha
/// master; kill -9: keepalived takes the VIP; greha back: it preempts and
/// keepalived lets go. Then the roles the other way: keepalived master,
/// greha's fast path absorbing its adverts, keepalived stopped: greha
/// takes over.
fn vrrp_keepalived() -> Result<()> {
    let (lab, a, b) = linked_pair()?;
    let mut g = start_greha(&lab, &a)?;
    let ka = start_keepalived(
        &lab,
        &b,
        "b",
        &format!(
            "state BACKUP\n interface eth0\n virtual_router_id 51\n priority 100\n \
             advert_int 1\n virtual_ipaddress {{\n {VIP}/24 dev eth0\n }}"
        ),
        "(VI_1) Entering BACKUP STATE",
    )?;
    wait_until(LONG, "greha master with the VIP", || holds_vip(&a))?;
    let status = lab.greha_status(&a)?;
    let vi_1 = &status["vrrp"][0];
    ensure!(vi_1["state"] == "master", "greha: {vi_1:#}");
    ensure!(!holds_vip(&b)?, "keepalived holds the VIP beside greha");
    g.signal(nix::sys::signal::Signal::SIGKILL)?;
    g.wait(LONG)?;
    wait_until(LONG, "keepalived to take the VIP", || holds_vip(&b))?;
    let mut g = start_greha(&lab, &a)?;
    wait_until(LONG, "greha to preempt", || {
        Ok(holds_vip(&a)? && !holds_vip(&b)?)
    })?;
    g.terminate(LONG)?;
    drop(ka);

    // keepalived master (200), greha backup with its fast path.
    let mut ka = start_keepalived(
        &lab,
        &b,
        "b2",
        "state BACKUP\n interface eth0\n virtual_router_id 52\n priority 200\n \
         advert_int 1\n virtual_ipaddress {\n 203.0.113.20/24 dev eth0\n }",
        "(VI_1) Entering MASTER STATE",
    )?;
    let mut cmd = lab.greha(&a);
    cmd.args([
        "run",
        "--vrrp",
        "VI_2 interface eth0 vrid 52 priority 100 advert-int 1 version 2 vip 203.0.113.20/24",
    ]);
    let mut g = a.spawn(&lab, cmd, true)?;
    g.wait_ready(LONG)?;
    wait_until(LONG, "the fast path to absorb keepalived's adverts", || {
        let v = lab.greha_status(&a)?;
        let i = &v["vrrp"][0];
        Ok(i["state"] == "backup" && i["fastpath"]["absorbed"].as_u64() > Some(1))
    })
    .context("the fast path (null means it is off; greha's log says why)")?;
    // keepalived stops (priority 0): greha takes over.
    ka.terminate(LONG)?;
    wait_until(LONG, "greha to take over from keepalived", || {
        holds(&a, "203.0.113.20")
    })?;
    g.terminate(LONG)?;
    Ok(())
}

/// greha A and B with a tunnel and VRRP over it; A stopped with
/// `--keep-datapath` and started again loses no ping through the tunnel
/// (its attachments stay in the kernel: netlink filters where there is
/// no tcx), and B never takes over. A's last stop, without the flag,
/// removes everything: the tunnel, greha's tc filters and the pins.
fn restart_kept() -> Result<()> {
    let (mut lab, a, b) = linked_pair()?;
    let start = |host: &Host, k: usize, keep: bool| -> Result<Proc> {
        let (local, remote, inner, prio) = if k == 0 {
            (A_UNDERLAY, B_UNDERLAY, A_INNER, 150)
        } else {
            (B_UNDERLAY, A_UNDERLAY, B_INNER, 100)
        };
        let mut cmd = lab.greha(host);
        cmd.arg("run");
        if keep {
            cmd.arg("--keep-datapath");
        }
        cmd.args([
            "--tunnel",
            &format!("gretap1 mode gretap local {local} remote {remote} address {inner}/24"),
            "--vrrp",
            &format!("VI_1 interface gretap1 vrid 51 priority {prio} advert-int 1 vip {VIP}/24"),
        ]);
        let mut g = host.spawn(&lab, cmd, true)?;
        g.wait_ready(LONG)?;
        Ok(g)
    };
    let state = |host: &Host| -> Result<serde_json::Value> {
        Ok(lab.greha_status(host)?["vrrp"][0]["state"].clone())
    };
    let mut ga = start(&a, 0, true)?;
    let _gb = start(&b, 1, false)?;
    wait_until(LONG, "A master, B backup", || {
        Ok(state(&a)? == "master" && state(&b)? == "backup")
    })?;
    let mut pinger = a.spawn(
        &lab,
        {
            let mut c = a.command("ping");
            c.args(["-i", "0.02", "-c", "200", "-W", "2", B_INNER]);
            c
        },
        false,
    )?;
    pinger.wait_for_output("bytes from", LONG)?;
    let status = ga.terminate(LONG)?;
    ensure!(status.success(), "greha exited {status}:\n{}", ga.log());
    let mut ga = start(&a, 0, false)?;
    let status = pinger.wait(LONG)?;
    let log = pinger.log();
    ensure!(
        status.success() && log.contains(" 0% packet loss"),
        "packets lost across the restart:\n{log}"
    );
    ensure!(state(&b)? == "backup", "B took over during the restart");
    // Where the kernel has no tcx, the attachment is this filter.
    let filters = run(a
        .command("tc")
        .args(["filter", "show", "dev", "eth0", "ingress"]))?;
    println!(
        "vm-suite: (tc filters on A's underlay while running: {})",
        filters.trim().replace('\n', " | ")
    );
    ga.terminate(LONG)?;
    ensure!(
        a.ip(&["link", "show", "gretap1"]).is_err(),
        "the tunnel stayed after the last stop"
    );
    let filters = run(a
        .command("tc")
        .args(["filter", "show", "dev", "eth0", "ingress"]))?;
    ensure!(
        !filters.contains("bpf"),
        "greha's tc filter stayed: {filters}"
    );
    let pins = lab.pin_dir("a");
    ensure!(!pins.exists(), "pins stayed in {}", pins.display());
    Ok(())
}

/// greha's tunnel against the kernel's own gretap/gre (ip_gre, which the
/// guest kernels have) as the far end, as the seed's server B would run
/// it: each mode with and without a key (one each way, too), checksums
/// and sequence numbers (both ways and crossed), ping and 16 MiB byte for
/// byte in both directions, no drop counted by greha and no checksum
/// error by the kernel. Checksums run with the underlays' offload on (a
/// veth leaves the inner checksum unfilled: the kernel sends and accepts
/// the local checksum offload's GRE checksum, and checksum-carrying GSO
/// packets with the field still 0) and off (complete frames: the kernel
/// verifies greha's arithmetic).
fn kernel_peer() -> Result<()> {
    for (mode, greha_opts, kernel_opts, offload) in [
        ("gretap", "", "", true),
        ("gretap", "key 7", "key 7", true),
        ("gretap", "ikey 5 okey 6", "ikey 6 okey 5", true),
        ("gre", "", "", true),
        ("gre", "key 9", "key 9", true),
        ("gretap", "key 3 csum", "key 3 csum", true),
        ("gretap", "csum", "csum", false),
        ("gretap", "icsum oseq", "ocsum iseq", true),
        ("gre", "csum seq", "csum seq", false),
    ] {
        kernel_peer_case(mode, greha_opts, kernel_opts, offload).with_context(|| {
            format!("greha {mode} {greha_opts}, kernel {kernel_opts}, offload {offload}")
        })?;
    }
    Ok(())
}

/// greha's daemon probes the far end of a tunnel whose other side is the
/// kernel's gretap and nothing of greha's: alive, dead once the kernel's
/// tunnel is down, alive again when it is back.
fn kernel_peer_liveness() -> Result<()> {
    let (lab, a, b) = linked_pair()?;
    let mut cmd = lab.greha(&a);
    cmd.args([
        "run",
        "--tunnel",
        &format!(
            "t1 mode gretap local {A_UNDERLAY} remote {B_UNDERLAY} address {A_INNER}/24 \
             probe {B_INNER} probe-interval 0.2"
        ),
    ]);
    let mut g = a.spawn(&lab, cmd, true)?;
    g.wait_ready(LONG)?;
    b.ip(&[
        "link", "add", "t1", "type", "gretap", "local", B_UNDERLAY, "remote", A_UNDERLAY,
    ])?;
    b.ip(&["addr", "add", &format!("{B_INNER}/24"), "dev", "t1"])?;
    b.ip(&["link", "set", "t1", "up"])?;
    let far_end = |want: &str| -> Result<()> {
        wait_until(LONG, &format!("the far end to be {want}"), || {
            let v: serde_json::Value =
                serde_json::from_str(&run(lab.greha(&a).args(["tunnel", "show", "--json"]))?)?;
            Ok(v[0]["probe"]["state"] == want)
        })
    };
    far_end("alive")?;
    b.ip(&["link", "set", "t1", "down"])?;
    far_end("dead")?;
    b.ip(&["link", "set", "t1", "up"])?;
    far_end("alive")?;
    g.terminate(LONG)?;
    Ok(())
}

/// Outer fragments both ways, between the kernel's gretap with
/// `nopmtudisc` and greha's with `nopmtudisc ignore-df`, both with an MTU
/// of 1500, above the 1462 their underlay carries. The kernel sends a
/// full-sized frame's GRE in fragments; greha's daemon has the kernel
/// reassemble them and decapsulates the whole packet; greha cuts its own
/// (`greha_gre_fragment`), and the kernel reassembles those. Full-sized
/// pings each way (the kernel's without DF: with `nopmtudisc` it answers
/// a DF one with ICMP; greha's with DF, which `ignore-df` ignores) and
/// 1 MiB of TCP from greha's side, every full segment in two fragments.
/// (The kernel's tunnel lowers its own inner route's MTU as it sends, so
/// its TCP would shrink its segments rather than fragment.)
fn kernel_peer_fragments() -> Result<()> {
    let (mut lab, a, b) = linked_pair()?;
    let pins = lab.pin_dir("a");
    let mut cmd = lab.greha(&a);
    cmd.args([
        "run",
        "--tunnel",
        &format!(
            "t1 mode gretap local {A_UNDERLAY} remote {B_UNDERLAY} address {A_INNER}/24 \
             nopmtudisc ignore-df mtu 1500"
        ),
    ]);
    let mut g = a.spawn(&lab, cmd, true)?;
    g.wait_ready(LONG)?;
    b.ip(&[
        "link",
        "add",
        "t1",
        "type",
        "gretap",
        "local",
        B_UNDERLAY,
        "remote",
        A_UNDERLAY,
        "nopmtudisc",
    ])?;
    b.ip(&["link", "set", "t1", "mtu", "1500"])?;
    b.ip(&["addr", "add", &format!("{B_INNER}/24"), "dev", "t1"])?;
    b.ip(&["link", "set", "t1", "up"])?;
    let shown = || greha(&a, &pins, &["tunnel", "show", "--json"]);
    run(b
        .command("ping")
        .args(["-c", "3", "-W", "5", "-M", "dont", "-s", "1472", A_INNER]))
    .with_context(|| {
        format!(
            "the kernel's pings in fragments\n{}",
            shown().unwrap_or_default()
        )
    })?;
    run(a
        .command("ping")
        .args(["-c", "3", "-W", "5", "-M", "do", "-s", "1472", B_INNER]))
    .with_context(|| {
        format!(
            "greha's pings in fragments\n{}",
            shown().unwrap_or_default()
        )
    })?;
    transfer_to(&a, &b, &format!("{B_INNER}:5001"), 1 << 20)
        .with_context(|| format!("1 MiB of TCP in fragments\n{}", shown().unwrap_or_default()))?;
    let v: serde_json::Value = serde_json::from_str(&shown()?)?;
    let c = &v[0]["counters"];
    ensure!(
        c["rx_fragments"].as_u64() >= Some(6) && c["tx_fragments"].as_u64() >= Some(2 * 700),
        "counters: {c}"
    );
    no_drops(&a, &pins, &[])?;
    g.terminate(LONG)?;
    Ok(())
}

/// greha's ip6gretap and ip6gre against the kernel's (ip6_gre) over an
/// IPv6 underlay. The kernel's default puts the tunnel encapsulation limit
/// (RFC 2473) in a destination option before GRE, which greha accepts;
/// with `encaplimit none` it sends plain GRE after IPv6, and greha's own
/// `encaplimit N` option is one the kernel takes. IPv4 and IPv6
/// inside, ping both ways, 4 MiB of TCP each way in IPv4 and one way in
/// IPv6, no drop counted by greha, no error by the kernel.
fn kernel_peer_ip6() -> Result<()> {
    for (mode, greha_opts, kernel_opts) in [
        ("ip6gretap", "", ""),
        ("ip6gretap", "key 7", "key 7 encaplimit none"),
        ("ip6gre", "", ""),
        ("ip6gre", "ikey 5 okey 6", "ikey 6 okey 5"),
        ("ip6gretap", "encaplimit 4", ""),
        ("ip6gre", "encaplimit 0 key 9", "key 9 encaplimit 2"),
    ] {
        kernel_peer_ip6_case(mode, greha_opts, kernel_opts)
            .with_context(|| format!("greha {mode} {greha_opts}, kernel {kernel_opts}"))?;
    }
    Ok(())
}

fn kernel_peer_ip6_case(mode: &str, greha_opts: &str, kernel_opts: &str) -> Result<()> {
    let (a6, b6) = ("2001:db8:1::1", "2001:db8:1::2");
    let mut lab = Lab::new()?;
    let a = lab.host("a")?;
    let b = lab.host("b")?;
    for h in [&a, &b] {
        h.enable_ipv6()?;
    }
    lab.link(&a, &format!("{a6}/64"), &b, &format!("{b6}/64"))?;
    let pins = lab.pin_dir("a");
    let spec = format!(
        "t1 mode {mode} local {a6} remote {b6} {greha_opts} address {A_INNER}/24 \
         address 2001:db8:2::1/64"
    );
    let words: Vec<&str> = spec.split_whitespace().collect();
    greha(&a, &pins, &[&["tunnel", "add"], &words[..]].concat()).context("greha tunnel add")?;
    let kernel = format!("link add t1 type {mode} local {b6} remote {a6} {kernel_opts}");
    b.ip(&kernel.split_whitespace().collect::<Vec<_>>())
        .context("the kernel's tunnel")?;
    b.ip(&["addr", "add", &format!("{B_INNER}/24"), "dev", "t1"])?;
    b.ip(&["addr", "add", "2001:db8:2::2/64", "dev", "t1", "nodad"])?;
    b.ip(&["link", "set", "t1", "up"])?;
    let counts = || {
        format!(
            "greha: {}\nkernel: {}",
            greha(&a, &pins, &["tunnel", "show", "--json"]).unwrap_or_else(|e| e.to_string()),
            b.ip(&["-s", "-s", "link", "show", "dev", "t1"])
                .unwrap_or_else(|e| e.to_string())
        )
    };
    for (from, to) in [
        (&a, B_INNER),
        (&b, A_INNER),
        (&a, "2001:db8:2::2"),
        (&b, "2001:db8:2::1"),
    ] {
        run(from.command("ping").args(["-c", "3", "-W", "5", to]))
            .with_context(|| format!("ping {to}\n{}", counts()))?;
    }
    transfer_to(&a, &b, &format!("{B_INNER}:5001"), 4 << 20).context("4 MiB greha -> kernel")?;
    transfer_to(&b, &a, &format!("{A_INNER}:5001"), 4 << 20).context("4 MiB kernel -> greha")?;
    transfer_to(&a, &b, "[2001:db8:2::2]:5001", 4 << 20)
        .context("4 MiB of IPv6, greha -> kernel")?;
    no_drops(&a, &pins, &[])?;
    let v: serde_json::Value =
        serde_json::from_str(&b.ip(&["-j", "-s", "-s", "link", "show", "dev", "t1"])?)?;
    let rx = &v[0]["stats64"]["rx"];
    for field in ["errors", "crc_errors", "frame_errors", "length_errors"] {
        ensure!(
            rx[field].as_u64().unwrap_or(0) == 0,
            "the kernel counts {field} on its tunnel: {rx}"
        );
    }
    greha(&a, &pins, &["tunnel", "del", "t1"])?;
    Ok(())
}

/// Two tunnels between the same two hosts, told apart by key, greha's
/// against the kernel's: each pings through its own, and greha counts
/// each one's traffic on it.
fn kernel_peer_keys() -> Result<()> {
    let (mut lab, a, b) = linked_pair()?;
    let pins = lab.pin_dir("a");
    for (name, key, net) in [("t1", "1", "192.0.2"), ("t2", "2", "203.0.113")] {
        let spec = format!(
            "{name} mode gretap local {A_UNDERLAY} remote {B_UNDERLAY} key {key} address {net}.1/24"
        );
        let words: Vec<&str> = spec.split_whitespace().collect();
        greha(&a, &pins, &[&["tunnel", "add"], &words[..]].concat())?;
        b.ip(&[
            "link", "add", name, "type", "gretap", "local", B_UNDERLAY, "remote", A_UNDERLAY,
            "key", key,
        ])?;
        b.ip(&["addr", "add", &format!("{net}.2/24"), "dev", name])?;
        b.ip(&["link", "set", name, "up"])?;
    }
    for (name, to) in [("t1", "192.0.2.2"), ("t2", "203.0.113.2")] {
        run(a.command("ping").args(["-c", "3", "-W", "5", to]))
            .with_context(|| format!("ping through {name}"))?;
    }
    let v: serde_json::Value =
        serde_json::from_str(&greha(&a, &pins, &["tunnel", "show", "--json"])?)?;
    for t in v.as_array().context("tunnels")? {
        ensure!(
            t["counters"]["rx_packets"].as_u64() >= Some(3),
            "{} counted too little: {t}",
            t["name"]
        );
    }
    Ok(())
}

/// A VLAN interface on each end of a gretap, greha's and the kernel's:
/// greha's tunnel interface (a veth) takes the tag as metadata, and the
/// frame on the wire must carry it inside, as the kernel's gretap sends
/// and expects it. Both ways, with A's underlay segmenting in software so
/// that every segment's lengths are checked by the kernel's receive.
fn kernel_peer_vlan() -> Result<()> {
    let (mut lab, a, b) = linked_pair()?;
    let pins = lab.pin_dir("a");
    greha(
        &a,
        &pins,
        &[
            "tunnel", "add", "t1", "mode", "gretap", "local", A_UNDERLAY, "remote", B_UNDERLAY,
        ],
    )
    .context("greha tunnel add")?;
    b.ip(&[
        "link", "add", "t1", "type", "gretap", "local", B_UNDERLAY, "remote", A_UNDERLAY,
    ])?;
    b.ip(&["link", "set", "t1", "up"])?;
    for (host, addr) in [(&a, A_INNER), (&b, B_INNER)] {
        host.ip(&[
            "link", "add", "link", "t1", "name", "t1.10", "type", "vlan", "id", "10",
        ])?;
        // The tag's 4 bytes off the tunnel's MTU, as an operator sets it:
        // 6.12's gretap drops a full-sized tagged frame it cannot send
        // (its TX dropped count), where 5.10's and 6.1's shrink the sender.
        host.ip(&["link", "set", "t1.10", "mtu", "1458"])?;
        host.ip(&["addr", "add", &format!("{addr}/24"), "dev", "t1.10"])?;
        host.ip(&["link", "set", "t1.10", "up"])?;
    }
    run(a
        .command("ethtool")
        .args(["-K", "eth0", "tso", "off", "gso", "off"]))?;
    let counts = || {
        format!(
            "greha: {}\nkernel: {}",
            greha(&a, &pins, &["tunnel", "show", "--json"]).unwrap_or_else(|e| e.to_string()),
            b.ip(&["-s", "-s", "link", "show", "dev", "t1"])
                .unwrap_or_else(|e| e.to_string())
        )
    };
    for (from, to) in [(&a, B_INNER), (&b, A_INNER)] {
        run(from.command("ping").args(["-c", "3", "-W", "5", to]))
            .with_context(|| format!("ping {to} over VLAN 10\n{}", counts()))?;
    }
    transfer_to(&a, &b, &format!("{B_INNER}:5001"), 4 << 20)
        .with_context(|| format!("4 MiB over VLAN 10, greha -> kernel\n{}", counts()))?;
    transfer_to(&b, &a, &format!("{A_INNER}:5001"), 4 << 20)
        .with_context(|| format!("4 MiB over VLAN 10, kernel -> greha\n{}", counts()))?;
    // The VLAN interface takes the tunnel's MTU, and its tag makes a
    // full-sized frame 4 bytes too big for the path (the kernel's gretap
    // the same): each such packet must have been answered with ICMP, the
    // tag counted in the MTU it gives.
    no_drops(&a, &pins, &["tx_drop_too_big"])?;
    let v: serde_json::Value =
        serde_json::from_str(&greha(&a, &pins, &["tunnel", "show", "--json"])?)?;
    let c = &v[0]["counters"];
    ensure!(
        c["tx_drop_too_big"] == c["tx_icmp_too_big"],
        "a too-big packet without an answer: {c}"
    );
    let route = a.ip(&["route", "get", B_INNER])?;
    ensure!(
        c["tx_icmp_too_big"].as_u64() == Some(0)
            || route.contains(&format!("mtu {}", 1500 - 20 - 4 - 14 - 4)),
        "the MTU learned over VLAN 10: {route}"
    );
    let v: serde_json::Value =
        serde_json::from_str(&b.ip(&["-j", "-s", "-s", "link", "show", "dev", "t1"])?)?;
    let rx = &v[0]["stats64"]["rx"];
    for field in ["crc_errors", "frame_errors", "length_errors"] {
        ensure!(
            rx[field].as_u64() == Some(0),
            "the kernel counts {field} on its tunnel: {rx}"
        );
    }
    greha(&a, &pins, &["tunnel", "del", "t1"])?;
    Ok(())
}

fn kernel_peer_case(mode: &str, key: &str, kernel_key: &str, offload: bool) -> Result<()> {
    let (mut lab, a, b) = linked_pair()?;
    if !offload {
        for host in [&a, &b] {
            run(host.command("ethtool").args(["-K", "eth0", "tx", "off"]))?;
        }
    }
    let pins = lab.pin_dir("a");
    let spec =
        format!("t1 mode {mode} local {A_UNDERLAY} remote {B_UNDERLAY} {key} address {A_INNER}/24");
    let words: Vec<&str> = spec.split_whitespace().collect();
    greha(&a, &pins, &[&["tunnel", "add"], &words[..]].concat()).context("greha tunnel add")?;
    let kernel =
        format!("link add t1 type {mode} local {B_UNDERLAY} remote {A_UNDERLAY} {kernel_key}");
    b.ip(&kernel.split_whitespace().collect::<Vec<_>>())
        .context("the kernel's tunnel")?;
    b.ip(&["addr", "add", &format!("{B_INNER}/24"), "dev", "t1"])?;
    b.ip(&["link", "set", "t1", "up"])?;
    // Both sides' view when the tunnel does not carry: who dropped what.
    let counts = || {
        format!(
            "greha: {}\nkernel: {}",
            greha(&a, &pins, &["tunnel", "show", "--json"]).unwrap_or_else(|e| e.to_string()),
            b.ip(&["-s", "-s", "link", "show", "dev", "t1"])
                .unwrap_or_else(|e| e.to_string())
        )
    };
    for (from, to) in [(&a, B_INNER), (&b, A_INNER)] {
        run(from.command("ping").args(["-c", "3", "-W", "5", to]))
            .with_context(|| format!("ping {to}\n{}", counts()))?;
    }
    transfer_to(&a, &b, &format!("{B_INNER}:5001"), 16 << 20).context("16 MiB greha -> kernel")?;
    transfer_to(&b, &a, &format!("{A_INNER}:5001"), 16 << 20).context("16 MiB kernel -> greha")?;
    if mode == "gretap" && !key.contains("csum") && !key.contains("seq") {
        // IPv6 inside, with A's underlay segmenting in software.
        for (host, addr) in [(&a, "2001:db8::1/64"), (&b, "2001:db8::2/64")] {
            // The lab's hosts start with IPv6 off.
            host.sysctl("net.ipv6.conf.t1.disable_ipv6", "0")?;
            host.ip(&["-6", "addr", "add", addr, "dev", "t1", "nodad"])?;
        }
        run(a
            .command("ethtool")
            .args(["-K", "eth0", "tso", "off", "gso", "off"]))?;
        run(a
            .command("ping")
            .args(["-6", "-c", "2", "-W", "5", "2001:db8::2"]))
        .context("IPv6 ping")?;
        transfer_to(&a, &b, "[2001:db8::2]:5001", 4 << 20)
            .context("4 MiB of IPv6, greha -> kernel")?;
        transfer_to(&b, &a, "[2001:db8::1]:5001", 4 << 20)
            .context("4 MiB of IPv6, kernel -> greha")?;
    }
    // Frames sent from two CPUs at once may cross, and the later one is
    // dropped by iseq, the kernel's as greha's: not a fault.
    no_drops(&a, &pins, &["rx_drop_out_of_order"])?;
    let v: serde_json::Value =
        serde_json::from_str(&b.ip(&["-j", "-s", "-s", "link", "show", "dev", "t1"])?)?;
    let rx = &v[0]["stats64"]["rx"];
    for field in ["crc_errors", "frame_errors", "length_errors"] {
        ensure!(
            rx[field].as_u64() == Some(0),
            "the kernel counts {field} on its tunnel: {rx}"
        );
    }
    greha(&a, &pins, &["tunnel", "del", "t1"])?;
    Ok(())
}
