//! Planned changes as a client sees them, at 1 ms: greha (A) stopped or
//! demoted hands the VIP to keepalived 2.2.7 (B) without a lost probe,
//! where releasing at once (keepalived's own way) loses Skew_Time; a
//! reload that changes A's priority or VIPs keeps A master, unnoticed.
use std::{
    fs,
    net::SocketAddr,
    time::{Duration, Instant},
};

use anyhow::{Context as _, Result, ensure};
use greha_tests::{
    Host, Lab, Proc, SHORT,
    probe::{ECHO_PORT, Echo, Gap, Prober, gap},
    wait_until,
};

const VIP: &str = "203.0.113.10";

struct Lan {
    lab: Lab,
    a: Host,
    b: Host,
    client: Host,
    a_if: String,
    b_if: String,
}

/// A, B and a client on one switch.
fn lan() -> Result<Lan> {
    let mut lab = Lab::new()?;
    let a = lab.host("a")?;
    let b = lab.host("b")?;
    let client = lab.host("client")?;
    let sw = lab.switch("lan")?;
    let a_if = lab.plug(&a, "203.0.113.2/24", &sw)?;
    let b_if = lab.plug(&b, "203.0.113.3/24", &sw)?;
    lab.plug(&client, "203.0.113.100/24", &sw)?;
    Ok(Lan {
        lab,
        a,
        b,
        client,
        a_if,
        b_if,
    })
}

fn holds_vip(host: &Host, dev: &str) -> Result<bool> {
    Ok(host
        .ip(&["-br", "-4", "addr", "show", "dev", dev])?
        .contains(&format!("{VIP}/24")))
}

/// greha on A, VRRPv3 at 100 ms, priority 150, with `flags` for `run`.
fn greha(l: &Lan, flags: &[&str]) -> Result<Proc> {
    let mut cmd = l.lab.greha(&l.a);
    cmd.args(["run", "--vrrp"])
        .arg(format!(
            "VI_1 interface {} vrid 51 priority 150 version 3 advert-int 0.1 vip {VIP}/24",
            l.a_if
        ))
        .args(flags);
    let mut g = l.a.spawn(&l.lab, cmd, true)?;
    g.wait_ready(SHORT)?;
    Ok(g)
}

/// keepalived on B, VRRPv3 at 100 ms, priority 100.
fn keepalived(l: &Lan) -> Result<Proc> {
    let dir = l.lab.tmp().join("keepalived");
    fs::create_dir_all(&dir)?;
    let conf = dir.join("keepalived.conf");
    fs::write(
        &conf,
        format!(
            "vrrp_instance VI_1 {{\n  state BACKUP\n  interface {}\n  virtual_router_id 51\n  \
             priority 100\n  advert_int 0.1\n  version 3\n  \
             virtual_ipaddress {{\n    {VIP}/24 dev {}\n  }}\n}}\n",
            l.b_if, l.b_if
        ),
    )?;
    let mut cmd = l.b.command("keepalived");
    cmd.args(["-n", "-l", "-P", "-D", "-f"])
        .arg(&conf)
        .arg("-p")
        .arg(dir.join("keepalived.pid"))
        .arg("-r")
        .arg(dir.join("vrrp.pid"));
    let mut k = l.b.spawn(&l.lab, cmd, false)?;
    k.wait_for_output("(VI_1) Entering BACKUP STATE", SHORT)?;
    Ok(k)
}

/// A master, B backup, the client's probes answered by A.
fn steady(l: &Lan, flags: &[&str]) -> Result<(Proc, Proc, Echo, Echo, Prober)> {
    let echo_a = Echo::start(&l.a, 'A')?;
    let echo_b = Echo::start(&l.b, 'B')?;
    let g = greha(l, flags)?;
    wait_until(SHORT, "A to hold the VIP", || holds_vip(&l.a, &l.a_if))?;
    let k = keepalived(l)?;
    let target: SocketAddr = format!("{VIP}:{ECHO_PORT}").parse()?;
    let prober = Prober::start(&l.client, target, Duration::from_millis(1))?;
    prober.wait_for('A', Instant::now(), SHORT)?;
    Ok((g, k, echo_a, echo_b, prober))
}

/// `greha VERB VI_1` on A (demote or shutdown) answers "ok: VI_1 SAID",
/// keepalived takes the VIP over, and A lets it go.
fn hand_over(l: &Lan, verb: &str, said: &str) -> Result<()> {
    let out = greha_tests::run(l.lab.greha(&l.a).args([verb, "VI_1"]))?;
    ensure!(out.starts_with(&format!("ok: VI_1 {said}")), "{out}");
    wait_until(SHORT, "keepalived to take over", || {
        holds_vip(&l.b, &l.b_if)
    })?;
    let taken = Instant::now();
    wait_until(SHORT, "A to release the VIP", || {
        Ok(!holds_vip(&l.a, &l.a_if)?)
    })?;
    // On seeing keepalived's gratuitous ARP, not after the fallback wait.
    ensure!(
        taken.elapsed() < greha::vrrp::engine::HANDOVER_ANNOUNCE_WAIT / 2,
        "A kept the VIP {:?} after keepalived took it",
        taken.elapsed()
    );
    Ok(())
}

/// What the client saw from `event` until B answered.
fn seen(prober: Prober, event: Instant) -> Result<Gap> {
    prober.wait_for('B', event, SHORT)?;
    let probes = prober.finish();
    gap(&probes, event, 'B').context("no answer from A before, or from B after, the event")
}

#[test]
fn a_stop_hands_over_to_keepalived_without_a_lost_probe() -> Result<()> {
    // Released at once: the client loses what keepalived takes to notice
    // (Skew_Time, 60 ms at priority 100) plus its announcement.
    let l = lan()?;
    let (mut g, _k, _ea, _eb, prober) = steady(&l, &["--no-handover"])?;
    let event = Instant::now();
    ensure!(g.terminate(SHORT)?.success(), "greha:\n{}", g.log());
    let at_once = seen(prober, event)?;
    ensure!(
        at_once.lost >= 20,
        "releasing at once lost only {at_once:?}: the lab cannot tell a gap"
    );

    // Make before break (the default): none lost.
    let l = lan()?;
    let (mut g, _k, _ea, _eb, prober) = steady(&l, &[])?;
    let event = Instant::now();
    ensure!(g.terminate(SHORT)?.success(), "greha:\n{}", g.log());
    ensure!(!holds_vip(&l.a, &l.a_if)?, "greha left its VIP behind");
    ensure!(holds_vip(&l.b, &l.b_if)?, "keepalived is not master");
    let handed = seen(prober, event)?;
    ensure!(
        handed.lost == 0,
        "the handover lost {handed:?} (at once: {at_once:?})\n{}",
        g.log()
    );
    Ok(())
}

/// `greha events` on A, its lines gathered as they come.
struct Events {
    child: std::process::Child,
    lines: std::sync::mpsc::Receiver<serde_json::Value>,
}

impl Events {
    fn follow(l: &Lan) -> Result<Self> {
        use std::io::BufRead as _;
        let mut child = l
            .lab
            .greha(&l.a)
            .arg("events")
            .stdout(std::process::Stdio::piped())
            .spawn()?;
        let out = child.stdout.take().context("stdout")?;
        let (tx, lines) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            for line in std::io::BufReader::new(out).lines().map_while(Result::ok) {
                if let Ok(v) = serde_json::from_str(&line) {
                    let _ = tx.send(v);
                }
            }
        });
        Ok(Self { child, lines })
    }

    /// Waits for the next lines to be `want` (fields compared as given),
    /// in this order, skipping none; each line must also be valid by
    /// docs/events.schema.json.
    fn expect(&self, l: &Lan, want: &[serde_json::Value]) -> Result<()> {
        let mut seen = Vec::new();
        for w in want {
            let got = self
                .lines
                .recv_timeout(SHORT)
                .with_context(|| format!("no event line; wanted {w}"))?;
            let fits = w
                .as_object()
                .context("an object")?
                .iter()
                .all(|(k, v)| &got[k] == v);
            ensure!(fits, "event {got} where {w} was due");
            seen.push(got);
        }
        let file = l.lab.tmp().join("events.json");
        fs::write(&file, serde_json::Value::Array(seen).to_string())?;
        let schema =
            std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../docs/events.schema.json");
        greha_tests::run(
            std::process::Command::new("/usr/bin/python3")
                .arg("-c")
                .arg(
                    "import json, sys, jsonschema\n\
                     s = json.load(open(sys.argv[2]))\n\
                     for e in json.load(open(sys.argv[1])): jsonschema.validate(e, s)",
                )
                .arg(&file)
                .arg(schema),
        )?;
        Ok(())
    }
}

impl Drop for Events {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[test]
fn demote_hands_over_without_a_lost_probe_and_resume_takes_back() -> Result<()> {
    let l = lan()?;
    let (_g, _k, _ea, _eb, prober) = steady(&l, &[])?;
    let events = Events::follow(&l)?;
    // Subscribed once the daemon answers a request after it.
    l.lab.greha_status(&l.a)?;
    let event = Instant::now();
    hand_over(&l, "demote", "demoted")?;
    let s = &l.lab.greha_status(&l.a)?["vrrp"][0];
    ensure!(
        s["state"] == "backup" && s["priority"] == 1 && s["demoted"] == true,
        "{s}"
    );
    ensure!(
        s["transitions"]
            .as_array()
            .and_then(|t| t.last())
            .is_some_and(|t| t["reason"] == "demoted"),
        "{s}"
    );
    // A reload keeps it demoted.
    let out = greha_tests::run(l.lab.greha(&l.a).arg("reload"))?;
    ensure!(out.starts_with("ok"), "{out}");
    let s = &l.lab.greha_status(&l.a)?["vrrp"][0];
    ensure!(s["demoted"] == true && s["priority"] == 1, "{s}");
    // Demoted, it does not preempt keepalived (priority 100 > 1).
    std::thread::sleep(Duration::from_millis(500));
    ensure!(
        !holds_vip(&l.a, &l.a_if)?,
        "a demoted greha took the VIP back"
    );
    let handed = seen(prober, event)?;
    ensure!(handed.lost == 0, "the demote lost {handed:?}");

    let out = greha_tests::run(l.lab.greha(&l.a).args(["resume", "VI_1"]))?;
    ensure!(out.starts_with("ok: VI_1 resumed"), "{out}");
    wait_until(SHORT, "A to preempt keepalived again", || {
        holds_vip(&l.a, &l.a_if)
    })?;
    let s = &l.lab.greha_status(&l.a)?["vrrp"][0];
    ensure!(s["priority"] == 150 && s["demoted"] == false, "{s}");
    use serde_json::json;
    events.expect(
        &l,
        &[
        json!({"event": "handover", "instance": "VI_1", "note": "handing over"}),
        json!({"event": "priority", "instance": "VI_1", "from": 150, "to": 1}),
        json!({"event": "transition", "from": "master", "to": "backup", "reason": "demoted", "priority": 1}),
        json!({"event": "priority", "from": 1, "to": 150}),
        json!({"event": "transition", "from": "backup", "to": "master", "reason": "master_down", "priority": 150}),
    ])?;
    let bad = greha_tests::run(l.lab.greha(&l.a).args(["demote", "VI_9"]));
    ensure!(
        bad.as_ref()
            .is_err_and(|e| format!("{e:#}").contains("VI_9")),
        "{bad:?}"
    );
    Ok(())
}

/// greha's configuration on A: VI_1 at `priority` with these VIPs.
fn config(l: &Lan, priority: u8, vips: &[&str]) -> String {
    let mut c = format!(
        "[[vrrp]]\nname = \"VI_1\"\ninterface = \"{}\"\nvrid = 51\npriority = {priority}\n\
         version = 3\nadvert_int = 0.1\n",
        l.a_if
    );
    for v in vips {
        c += &format!("\n[[vrrp.vip]]\naddress = \"{v}/24\"\n");
    }
    c
}

/// greha on A from a configuration file, master; the peer on B is
/// keepalived or (`greha_peer`) greha; the client's probes answered by A.
fn from_file(
    l: &Lan,
    greha_peer: bool,
) -> Result<(std::path::PathBuf, Vec<Proc>, Vec<Echo>, Prober)> {
    let file = l.lab.tmp().join("greha.toml");
    fs::write(&file, config(l, 150, &[VIP]))?;
    let echoes = vec![Echo::start(&l.a, 'A')?, Echo::start(&l.b, 'B')?];
    let mut cmd = l.lab.greha(&l.a);
    cmd.arg("run").arg("--config").arg(&file);
    let mut g = l.a.spawn(&l.lab, cmd, true)?;
    g.wait_ready(SHORT)?;
    wait_until(SHORT, "A to hold the VIP", || holds_vip(&l.a, &l.a_if))?;
    let peer = if greha_peer {
        let mut cmd = l.lab.greha(&l.b);
        cmd.args(["run", "--vrrp"]).arg(format!(
            "VI_1 interface {} vrid 51 priority 100 version 3 advert-int 0.1 vip {VIP}/24",
            l.b_if
        ));
        let mut p = l.b.spawn(&l.lab, cmd, true)?;
        p.wait_ready(SHORT)?;
        p
    } else {
        keepalived(l)?
    };
    let target: SocketAddr = format!("{VIP}:{ECHO_PORT}").parse()?;
    let prober = Prober::start(&l.client, target, Duration::from_millis(1))?;
    prober.wait_for('A', Instant::now(), SHORT)?;
    Ok((file, vec![g, peer], echoes, prober))
}

/// Reloads A with `priority` and `vips`, waits long enough for the peer
/// to take over had A resigned (Skew_Time, 60 ms, then its announcement),
/// and checks that A is master with the new priority and no new
/// transition.
fn reload_stays_master(
    l: &Lan,
    file: &std::path::Path,
    priority: u8,
    vips: &[&str],
    before: &serde_json::Value,
) -> Result<()> {
    fs::write(file, config(l, priority, vips))?;
    let out = greha_tests::run(l.lab.greha(&l.a).arg("reload"))?;
    ensure!(out.starts_with("ok"), "{out}");
    std::thread::sleep(Duration::from_millis(300));
    let s = &l.lab.greha_status(&l.a)?["vrrp"][0];
    ensure!(s["state"] == "master" && s["priority"] == priority, "{s}");
    ensure!(&s["transitions"] == before, "A changed state: {s}");
    Ok(())
}

/// No probe after `event` went unanswered by A.
fn all_answered_by_a(prober: Prober, event: Instant) -> Result<()> {
    let probes = prober.finish();
    let lost = probes
        .iter()
        .filter(|p| p.sent >= event && p.by != Some('A'))
        .count();
    ensure!(
        lost == 0,
        "{lost} probes after the reload not answered by A"
    );
    Ok(())
}

#[test]
fn a_reload_that_changes_the_priority_keeps_the_master_against_keepalived() -> Result<()> {
    let l = lan()?;
    let (file, procs, _echoes, prober) = from_file(&l, false)?;
    let before = l.lab.greha_status(&l.a)?["vrrp"][0]["transitions"].clone();
    let event = Instant::now();
    reload_stays_master(&l, &file, 160, &[VIP], &before)?;
    reload_stays_master(&l, &file, 120, &[VIP], &before)?;
    ensure!(
        !procs[1].log().contains("Entering MASTER STATE"),
        "keepalived became master during a reload:\n{}",
        procs[1].log()
    );
    all_answered_by_a(prober, event)
}

/// keepalived drops adverts whose address count differs from its own
/// configuration, so a VIP change is tried against greha as the peer (it
/// counts them as address list errors and keeps following).
#[test]
fn a_reload_that_adds_and_removes_a_vip_keeps_the_master() -> Result<()> {
    let l = lan()?;
    let (file, _procs, _echoes, prober) = from_file(&l, true)?;
    let before = l.lab.greha_status(&l.a)?["vrrp"][0]["transitions"].clone();
    let extra = "203.0.113.11";
    let has = |addr: &str| -> Result<bool> {
        Ok(l.a
            .ip(&["-br", "-4", "addr", "show", "dev", &l.a_if])?
            .contains(&format!("{addr}/24")))
    };
    let event = Instant::now();
    reload_stays_master(&l, &file, 150, &[VIP, extra], &before)?;
    ensure!(has(extra)?, "the new VIP is not on A");
    reload_stays_master(&l, &file, 150, &[VIP], &before)?;
    ensure!(!has(extra)?, "the removed VIP is still on A");
    ensure!(!holds_vip(&l.b, &l.b_if)?, "B took over");
    all_answered_by_a(prober, event)
}

/// `greha shutdown` (FRR's `vrrp N shutdown`): A hands the VIP to
/// keepalived without a lost probe, then stays out of service (also
/// across a reload, with keepalived's lower priority on the wire) until
/// `greha resume`, when it starts again and preempts.
#[test]
fn shutdown_hands_over_and_stays_out_until_resumed() -> Result<()> {
    let l = lan()?;
    let (_g, _k, _ea, _eb, prober) = steady(&l, &[])?;
    let event = Instant::now();
    hand_over(&l, "shutdown", "shut down")?;
    let out = greha_tests::run(l.lab.greha(&l.a).arg("reload"))?;
    ensure!(out.starts_with("ok"), "{out}");
    // Long enough for A to preempt keepalived, were it in service.
    std::thread::sleep(Duration::from_millis(600));
    let s = &l.lab.greha_status(&l.a)?["vrrp"][0];
    ensure!(s["state"] == "initialize" && s["shut_down"] == true, "{s}");
    ensure!(!holds_vip(&l.a, &l.a_if)?, "a shut down greha took the VIP");
    let handed = seen(prober, event)?;
    ensure!(handed.lost == 0, "the shutdown lost {handed:?}");
    let out = greha_tests::run(l.lab.greha(&l.a).args(["resume", "VI_1"]))?;
    ensure!(out.starts_with("ok: VI_1 resumed"), "{out}");
    wait_until(SHORT, "A to preempt keepalived again", || {
        holds_vip(&l.a, &l.a_if)
    })?;
    let s = &l.lab.greha_status(&l.a)?["vrrp"][0];
    ensure!(s["state"] == "master" && s["shut_down"] == false, "{s}");
    Ok(())
}
