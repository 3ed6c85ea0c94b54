//! The migration as a user makes it: one keepalived.conf for two routers
//! (conditional lines pick each one's priority and check file, a
//! parameter carries it), run by keepalived 2.2.7 on both; then router A
//! moves to greha by `greha import-keepalived --config-id a` and nothing
//! else. The same lab must behave the same: A master with the VIP and its
//! virtual route, B backup; A's check failing lowers A below B, and B
//! takes over; the check back, A preempts.
use std::{fs, path::Path};

use anyhow::{Context as _, Result, ensure};
use greha_tests::{Host, Lab, Proc, SHORT, run, wait_until};

const VIP: &str = "203.0.113.10";

fn keepalived_conf(dir: &Path) -> String {
    format!(
        r#"global_defs {{
    vrrp_version 3
}}
@a $OK={dir}/a-ok
@b $OK={dir}/b-ok
vrrp_script chk_service {{
    script "/usr/bin/test -e ${{OK}}"
    interval 1
    fall 1
    rise 1
    weight -60
}}
vrrp_instance VI_1 {{
    state BACKUP
    interface eth0
    virtual_router_id 51
    @a priority 150
    @b priority 100
    advert_int 0.1
    track_script {{
        chk_service
    }}
    virtual_ipaddress {{
        {VIP}/24
    }}
    virtual_routes {{
        198.51.100.0/24 via 203.0.113.254
    }}
}}
"#,
        dir = dir.display()
    )
}

fn keepalived(lab: &Lab, host: &Host, conf: &Path, id: &str) -> Result<Proc> {
    let dir = lab.tmp().join(format!("ka-{id}"));
    fs::create_dir_all(&dir)?;
    let mut cmd = host.command("keepalived");
    cmd.args(["-n", "-l", "-P", "-i", id, "-f"])
        .arg(conf)
        .arg("-p")
        .arg(dir.join("k.pid"))
        .arg("-r")
        .arg(dir.join("v.pid"));
    let mut p = host.spawn(lab, cmd, false)?;
    p.wait_for_output("Entering BACKUP STATE", SHORT)?;
    Ok(p)
}

/// Who holds the VIP and the virtual route: (A, B), each both or neither.
fn holders(a: &Host, b: &Host) -> Result<(bool, bool)> {
    let holds = |h: &Host| -> Result<bool> {
        let vip = h
            .ip(&["-br", "-4", "addr", "show", "dev", "eth0"])?
            .contains(&format!("{VIP}/24"));
        let route = h
            .ip(&["route", "show", "198.51.100.0/24"])?
            .contains("via 203.0.113.254");
        ensure!(
            vip == route,
            "the VIP and the route apart: VIP {vip}, route {route}"
        );
        Ok(vip)
    };
    Ok((holds(a)?, holds(b)?))
}

/// The scenario, with A run by `start_a`: A master; A's check fails, B
/// takes over; the check back, A preempts.
fn scenario(lab: &Lab, a: &Host, b: &Host, dir: &Path) -> Result<()> {
    wait_until(SHORT, "A master, B backup", || {
        Ok(holders(a, b)? == (true, false))
    })?;
    fs::remove_file(dir.join("a-ok"))?;
    wait_until(SHORT, "B master once A's check fails", || {
        Ok(holders(a, b)? == (false, true))
    })?;
    fs::write(dir.join("a-ok"), "")?;
    wait_until(SHORT, "A master again", || {
        Ok(holders(a, b)? == (true, false))
    })?;
    let _ = lab;
    Ok(())
}

#[test]
fn a_keepalived_conf_moves_to_greha_and_behaves_the_same() -> Result<()> {
    let (lab, a, b) = greha_tests::lan_pair()?;
    let dir = lab.tmp().join("checks");
    fs::create_dir_all(&dir)?;
    fs::write(dir.join("a-ok"), "")?;
    fs::write(dir.join("b-ok"), "")?;
    let conf = lab.tmp().join("keepalived.conf");
    fs::write(&conf, keepalived_conf(&dir))?;

    // keepalived on both: the behaviour to keep.
    let _kb = keepalived(&lab, &b, &conf, "b")?;
    let mut ka = keepalived(&lab, &a, &conf, "a")?;
    scenario(&lab, &a, &b, &dir).context("keepalived on both")?;
    ka.terminate(SHORT)?;
    wait_until(SHORT, "B master while A changes", || {
        Ok(holders(&a, &b)? == (false, true))
    })?;

    // A moves to greha: the import, and nothing else.
    let out = run(lab
        .greha(&a)
        .args(["import-keepalived", "--config-id", "a"])
        .arg(&conf))?;
    let converted = lab.tmp().join("greha.toml");
    fs::write(&converted, &out)?;
    run(lab
        .greha(&a)
        .args(["check-config", "--config"])
        .arg(&converted))
    .context("the import's output must pass check-config")?;
    let mut cmd = lab.greha(&a);
    cmd.args(["run", "--config"]).arg(&converted);
    let mut g = a.spawn(&lab, cmd, true)?;
    g.wait_ready(SHORT)?;
    scenario(&lab, &a, &b, &dir).with_context(|| format!("greha on A, from:\n{out}"))?;
    Ok(())
}
