//! Sync groups (keepalived's vrrp_sync_group) against keepalived 2.2.7:
//! two instances on two LANs that must change state together. greha as
//! master: a fault on one LAN takes both instances to Fault, so
//! keepalived takes both, and the group's notify runs once; greha as
//! backup: an instance whose master is silent stays backup while its
//! group's other instance still hears a master, and the group takes over
//! once both masters are gone.
use std::{fs, time::Duration};

use anyhow::{Context as _, Result, ensure};
use greha_tests::{Host, Lab, Proc, SHORT, wait_until};

const VIP1: &str = "203.0.113.10";
const VIP2: &str = "203.0.113.20";

struct Lans {
    lab: Lab,
    a: Host,
    b: Host,
}

/// A and B on two switches: eth0 on the first LAN, eth1 on the second.
fn lans() -> Result<Lans> {
    let mut lab = Lab::new()?;
    let a = lab.host("a")?;
    let b = lab.host("b")?;
    let lan0 = lab.switch("lan0")?;
    let lan1 = lab.switch("lan1")?;
    lab.plug(&a, "198.51.100.1/24", &lan0)?;
    lab.plug(&b, "198.51.100.2/24", &lan0)?;
    lab.plug(&a, "192.0.2.1/24", &lan1)?;
    lab.plug(&b, "192.0.2.2/24", &lan1)?;
    Ok(Lans { lab, a, b })
}

fn holds(host: &Host, dev: &str, vip: &str) -> Result<bool> {
    Ok(host
        .ip(&["-br", "-4", "addr", "show", "dev", dev])?
        .contains(&format!("{vip}/32")))
}

/// Both VIPs on `host` (true) or neither (false).
fn holds_both(host: &Host, want: bool) -> Result<bool> {
    Ok(holds(host, "eth0", VIP1)? == want && holds(host, "eth1", VIP2)? == want)
}

/// An instance's status on `host`.
fn instance(lab: &Lab, host: &Host, name: &str) -> Result<serde_json::Value> {
    let doc = lab.greha_status(host)?;
    doc["vrrp"]
        .as_array()
        .and_then(|a| a.iter().find(|i| i["name"] == name))
        .cloned()
        .with_context(|| format!("no instance {name}: {doc:#}"))
}

fn states(lab: &Lab, host: &Host) -> Result<(String, String)> {
    let s = |n: &str| -> Result<String> {
        Ok(instance(lab, host, n)?["state"]
            .as_str()
            .unwrap_or("")
            .to_owned())
    };
    Ok((s("VI_1")?, s("VI_2")?))
}

/// keepalived on `host` with `instances` ((name, vrid, dev, vip)), all in
/// sync group G, VRRPv3 at 100 ms.
fn keepalived(
    l: &Lans,
    host: &Host,
    priority: u8,
    instances: &[(&str, u8, &str, &str)],
) -> Result<Ka> {
    let names: Vec<&str> = instances.iter().map(|i| i.0).collect();
    let mut text = format!(
        "vrrp_sync_group G {{\n  group {{\n    {}\n  }}\n}}\n",
        names.join("\n    ")
    );
    for (name, vrid, dev, vip) in instances {
        text += &format!(
            "vrrp_instance {name} {{\n  state BACKUP\n  interface {dev}\n  virtual_router_id {vrid}\n  \
             priority {priority}\n  advert_int 0.1\n  version 3\n  \
             virtual_ipaddress {{\n    {vip}/32 dev {dev}\n  }}\n}}\n"
        );
    }
    let proc = greha_tests::start_keepalived_conf(
        &l.lab,
        host,
        &host.name,
        &text,
        "Entering BACKUP STATE",
    )?;
    // Where start_keepalived_conf has it write its VRRP child's pid.
    let vrrp_pid = l.lab.tmp().join(format!("ka-{}", host.name)).join("v.pid");
    Ok(Ka { proc, vrrp_pid })
}

struct Ka {
    proc: Proc,
    vrrp_pid: std::path::PathBuf,
}

impl Ka {
    /// Both processes killed at once, the parent frozen first so it
    /// restarts nothing: nothing resigns.
    fn kill_hard(&mut self) -> Result<()> {
        use nix::{sys::signal::Signal, unistd::Pid};
        self.proc.signal(Signal::SIGSTOP)?;
        let child: i32 = fs::read_to_string(&self.vrrp_pid)?.trim().parse()?;
        nix::sys::signal::kill(Pid::from_raw(child), Signal::SIGKILL)?;
        self.proc.signal(Signal::SIGKILL)?;
        self.proc.wait(SHORT)?;
        Ok(())
    }
}

/// greha on `host` from a configuration file: VI_1 on eth0, VI_2 on eth1,
/// in sync group G with a generic notify that appends its arguments to
/// `notify_log`.
fn greha(l: &Lans, host: &Host, priority: u8, notify_log: &std::path::Path) -> Result<Proc> {
    let conf = l.lab.tmp().join(format!("greha-{}.toml", host.name));
    let instance = |name: &str, vrid: u8, dev: &str, vip: &str| {
        format!(
            "[[vrrp]]\nname = \"{name}\"\ninterface = \"{dev}\"\nvrid = {vrid}\npriority = {priority}\n\
             advert_int = 0.1\n[[vrrp.vip]]\naddress = \"{vip}/32\"\n"
        )
    };
    fs::write(
        &conf,
        format!(
            "{}{}[[sync_group]]\nname = \"G\"\ninstances = [\"VI_1\", \"VI_2\"]\n\
             notify = \"/bin/sh -c 'echo \\\"$*\\\" >> {}' sh\"\n",
            instance("VI_1", 51, "eth0", VIP1),
            instance("VI_2", 52, "eth1", VIP2),
            notify_log.display()
        ),
    )?;
    let mut cmd = l.lab.greha(host);
    cmd.args(["run", "--config"]).arg(&conf);
    let mut g = host.spawn(&l.lab, cmd, true)?;
    g.wait_ready(SHORT)?;
    Ok(g)
}

/// greha master on A, keepalived backup on B. A's second LAN fails: its
/// VI_2 faults, and VI_1 with it (resigning), so keepalived holds both
/// VIPs rather than each LAN having another master; the group's notify
/// says FAULT once. The LAN back, A preempts both. Without the group, A
/// kept VI_1 while B took VI_2.
#[test]
fn a_fault_on_one_lan_moves_the_whole_group() -> Result<()> {
    let l = lans()?;
    let log = l.lab.tmp().join("group-notify.log");
    let _ka = keepalived(
        &l,
        &l.b,
        100,
        &[("VI_1", 51, "eth0", VIP1), ("VI_2", 52, "eth1", VIP2)],
    )?;
    let _g = greha(&l, &l.a, 150, &log)?;
    wait_until(SHORT, "greha master of both, keepalived of neither", || {
        Ok(holds_both(&l.a, true)? && holds_both(&l.b, false)?)
    })?;
    l.a.ip(&["link", "set", "eth1", "down"])?;
    wait_until(SHORT, "keepalived master of both, greha in Fault", || {
        Ok(holds_both(&l.b, true)?
            && holds_both(&l.a, false)?
            && states(&l.lab, &l.a)? == ("fault".into(), "fault".into()))
    })?;
    wait_until(SHORT, "the group's notify", || {
        Ok(fs::read_to_string(&log)
            .unwrap_or_default()
            .contains("GROUP G FAULT 0"))
    })?;
    l.a.ip(&["link", "set", "eth1", "up"])?;
    wait_until(SHORT, "greha master of both again", || {
        Ok(holds_both(&l.a, true)?
            && holds_both(&l.b, false)?
            && states(&l.lab, &l.a)? == ("master".into(), "master".into()))
    })?;
    let lines = fs::read_to_string(&log)?;
    let faults = lines.lines().filter(|l| l.contains("FAULT")).count();
    ensure!(
        faults == 1,
        "the group's FAULT notify ran {faults} times:\n{lines}"
    );
    ensure!(lines.lines().last() == Some("GROUP G MASTER 0"), "{lines}");
    Ok(())
}

/// keepalived master of VI_2 only on A, greha backup of both on B: B's
/// VI_1 hears no master and wants to be one, but its group's VI_2 still
/// follows a master, so VI_1 stays backup (keepalived prefers that to one
/// instance flipping alone). With A gone, VI_2 wants it too and the group
/// takes both.
#[test]
fn a_member_waits_for_its_group_before_taking_over() -> Result<()> {
    let l = lans()?;
    let log = l.lab.tmp().join("group-notify.log");
    let mut ka = keepalived(&l, &l.a, 150, &[("VI_2", 52, "eth1", VIP2)])?;
    wait_until(SHORT, "keepalived master of VI_2", || {
        holds(&l.a, "eth1", VIP2)
    })?;
    let _g = greha(&l, &l.b, 100, &log)?;
    wait_until(SHORT, "B's VI_1 waiting for its group", || {
        Ok(instance(&l.lab, &l.b, "VI_1")?["wants_master"] == true)
    })?;
    // Waiting it stays: well past another Master_Down_Interval (0.36 s
    // at priority 100) it is still backup, and holds nothing.
    for _ in 0..8 {
        ensure!(
            states(&l.lab, &l.b)? == ("backup".into(), "backup".into()) && holds_both(&l.b, false)?,
            "B took over alone: {:#}",
            l.lab.greha_status(&l.b)?
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    ka.kill_hard()?;
    wait_until(SHORT, "B master of both", || {
        Ok(holds_both(&l.b, true)? && states(&l.lab, &l.b)? == ("master".into(), "master".into()))
    })?;
    Ok(())
}
