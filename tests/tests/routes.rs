//! What follows mastership besides the VIPs themselves, against keepalived
//! 2.2.7: virtual routes (keepalived's virtual_routes) on the master only,
//! moving with a crash and with a planned stop, a crashed run's routes
//! removed when greha starts again as backup; instances without VIPs; and
//! the VIPs' own options (brd, scope, peer, noprefixroute) as the kernel
//! keeps them.
use anyhow::{Result, ensure};
use greha_tests::{Host, Lab, Proc, SHORT, run, start_keepalived, wait_until};
use nix::sys::signal::Signal;

const VIP: &str = "203.0.113.10";

/// The routes as `ip route` shows them (a gateway route in the main table
/// with the VIP as its source, and a blackhole in table 100), each there
/// or not; the rule sending the VIP's traffic to table 100, as `ip rule`
/// shows it, must be there exactly when they are.
fn routes(host: &Host) -> Result<(bool, bool)> {
    let main = host.ip(&["route", "show", "198.51.100.0/24", "proto", "keepalived"])?;
    let t100 = host.ip(&["route", "show", "table", "100", "proto", "keepalived"])?;
    let rules = host.ip(&["rule", "show", "pref", "100"])?;
    let rule = rules.contains(&format!("from {VIP} lookup 100 proto keepalived"));
    let (a, b) = (
        main.contains("via 203.0.113.254") && main.contains(&format!("src {VIP}")),
        t100.contains("blackhole 192.0.2.0/24"),
    );
    ensure!(
        a == b && b == rule,
        "routes {a} {b}, rule {rule}:\n{main}\n{t100}\n{rules}"
    );
    Ok((a, b))
}

fn greha(lab: &Lab, host: &Host, priority: u8) -> Result<Proc> {
    let mut cmd = lab.greha(host);
    cmd.args(["run", "--vrrp"]).arg(format!(
        "VI_1 interface eth0 vrid 51 priority {priority} advert-int 0.1 vip {VIP}/24 \
         route 198.51.100.0/24 via 203.0.113.254 src {VIP} \
         route 192.0.2.0/24 type blackhole table 100 rule from {VIP} table 100 pref 100"
    ));
    let mut g = host.spawn(lab, cmd, true)?;
    g.wait_ready(SHORT)?;
    Ok(g)
}

#[test]
fn virtual_routes_follow_the_master() -> Result<()> {
    let (lab, a, b) = greha_tests::lan_pair()?;
    let _ka = start_keepalived(
        &lab,
        &b,
        "b",
        &format!(
            "state BACKUP\n interface eth0\n virtual_router_id 51\n priority 100\n advert_int 0.1\n \
             version 3\n virtual_ipaddress {{\n {VIP}/24\n }}\n virtual_routes {{\n \
             src {VIP} to 198.51.100.0/24 via 203.0.113.254\n blackhole 192.0.2.0/24 table 100\n }}\n \
             virtual_rules {{\n from {VIP} table 100 priority 100\n }}"
        ),
        "Entering BACKUP STATE",
    )?;
    let mut g = greha(&lab, &a, 150)?;
    wait_until(SHORT, "greha's routes on A, none on B", || {
        Ok(routes(&a)? == (true, true) && routes(&b)? == (false, false))
    })?;
    // A planned stop: greha takes its routes away, keepalived adds its.
    let status = g.terminate(SHORT)?;
    ensure!(status.success(), "greha exited {status}:\n{}", g.log());
    ensure!(
        routes(&a)? == (false, false),
        "greha left its routes behind"
    );
    wait_until(SHORT, "keepalived's routes on B", || {
        Ok(routes(&b)? == (true, true))
    })?;
    // Master again, then a crash: the routes stay behind on A...
    let g = greha(&lab, &a, 150)?;
    wait_until(SHORT, "greha's routes on A again", || {
        Ok(routes(&a)? == (true, true) && routes(&b)? == (false, false))
    })?;
    g.signal(Signal::SIGKILL)?;
    wait_until(SHORT, "keepalived's routes on B again", || {
        Ok(routes(&b)? == (true, true))
    })?;
    ensure!(
        routes(&a)? == (true, true),
        "a crash should leave the routes (this is the test's premise)"
    );
    // ...until greha starts again, here as a backup: they go.
    let _g = greha(&lab, &a, 50)?;
    ensure!(
        routes(&a)? == (false, false),
        "a starting backup kept the routes of a crashed run"
    );
    ensure!(routes(&b)? == (true, true), "keepalived lost its routes");
    Ok(())
}

/// An instance without VIPs (version 2, as keepalived allows) moves only
/// its routes: keepalived follows greha's adverts with no address, greha
/// follows keepalived's, and a crash moves the route.
#[test]
fn an_instance_without_vips_moves_its_routes() -> Result<()> {
    let (lab, a, b) = greha_tests::lan_pair()?;
    let route = |host: &Host| -> Result<bool> {
        Ok(host
            .ip(&["route", "show", "198.51.100.0/24", "proto", "keepalived"])?
            .contains("via 203.0.113.254"))
    };
    let _ka = start_keepalived(
        &lab,
        &b,
        "b",
        "state BACKUP\n interface eth0\n virtual_router_id 51\n priority 100\n advert_int 1\n \
         version 2\n virtual_routes {\n 198.51.100.0/24 via 203.0.113.254\n }",
        "Entering BACKUP STATE",
    )?;
    let start = |priority: u8| -> Result<Proc> {
        let mut cmd = lab.greha(&a);
        cmd.args(["run", "--vrrp"]).arg(format!(
            "VI_1 interface eth0 vrid 51 priority {priority} version 2 advert-int 1 \
             route 198.51.100.0/24 via 203.0.113.254"
        ));
        let mut g = a.spawn(&lab, cmd, true)?;
        g.wait_ready(SHORT)?;
        Ok(g)
    };
    let g = start(150)?;
    wait_until(SHORT, "greha master with the route", || {
        Ok(lab.greha_status(&a)?["vrrp"][0]["state"] == "master" && route(&a)?)
    })?;
    // keepalived keeps following (its Master_Down_Interval is 3.6 s).
    std::thread::sleep(std::time::Duration::from_secs(4));
    ensure!(!route(&b)?, "keepalived took over from a live greha master");
    g.signal(Signal::SIGKILL)?;
    drop(g);
    wait_until(SHORT, "keepalived master with the route", || route(&b))?;
    let _g = start(50)?;
    wait_until(SHORT, "greha following keepalived", || {
        let v = &lab.greha_status(&a)?["vrrp"][0];
        Ok(v["state"] == "backup" && v["master"] == "203.0.113.3")
    })?;
    ensure!(!route(&a)?, "greha kept the route of its crashed run");
    Ok(())
}

/// A VIP's `ip addr add` options reach the kernel as given: broadcast,
/// scope, noprefixroute (no subnet route appears), a point-to-point peer;
/// and the VIPs go with them when the master stops.
#[test]
fn vip_options_reach_the_kernel() -> Result<()> {
    let mut lab = Lab::new()?;
    let a = lab.host("a")?;
    let sw = lab.switch("lan")?;
    lab.plug(&a, "203.0.113.2/24", &sw)?;
    let mut cmd = lab.greha(&a);
    cmd.args(["run", "--vrrp"]).arg(
        "VI_1 interface eth0 vrid 51 priority 150 advert-int 0.1 \
         vip 192.0.2.50/24 brd 192.0.2.127 scope link noprefixroute \
         vip 198.51.100.60 peer 198.51.100.61",
    );
    let mut g = a.spawn(&lab, cmd, true)?;
    g.wait_ready(SHORT)?;
    let addr = |ip: &str| -> Result<Option<serde_json::Value>> {
        let v: serde_json::Value =
            serde_json::from_str(&a.ip(&["-j", "addr", "show", "dev", "eth0"])?)?;
        Ok(v[0]["addr_info"]
            .as_array()
            .and_then(|a| a.iter().find(|i| i["local"] == ip))
            .cloned())
    };
    wait_until(SHORT, "both VIPs", || {
        Ok(addr("192.0.2.50")?.is_some() && addr("198.51.100.60")?.is_some())
    })?;
    let x = addr("192.0.2.50")?.unwrap_or_default();
    ensure!(
        x["broadcast"] == "192.0.2.127" && x["scope"] == "link" && x["noprefixroute"] == true,
        "{x:#}"
    );
    ensure!(
        !a.ip(&["route", "show", "192.0.2.0/24"])?
            .contains("192.0.2.0/24"),
        "noprefixroute, yet a subnet route"
    );
    let p = addr("198.51.100.60")?.unwrap_or_default();
    ensure!(p["address"] == "198.51.100.61", "the peer: {p:#}");
    let status = g.terminate(SHORT)?;
    ensure!(status.success(), "greha exited {status}:\n{}", g.log());
    ensure!(
        addr("192.0.2.50")?.is_none() && addr("198.51.100.60")?.is_none(),
        "VIPs left behind"
    );
    Ok(())
}

/// A reload that changes a master's routes and rules moves them in place:
/// the gone ones leave, the new ones come, the kept one stays, and the
/// instance stays master without a transition.
#[test]
fn a_reload_changes_a_masters_routes_in_place() -> Result<()> {
    let (lab, a, _b) = greha_tests::lan_pair()?;
    let conf = lab.tmp().join("greha.toml");
    let write = |routes: &[&str], pref: u32| -> Result<()> {
        let mut text = format!(
            "[[vrrp]]\nname = \"VI_1\"\ninterface = \"eth0\"\nvrid = 51\npriority = 150\n\
             advert_int = 0.1\n[[vrrp.vip]]\naddress = \"{VIP}/24\"\n\
             [[vrrp.rule]]\nfrom = \"{VIP}\"\ntable = 100\npref = {pref}\n"
        );
        for r in routes {
            text += &format!("[[vrrp.route]]\nto = \"{r}\"\nvia = \"203.0.113.254\"\n");
        }
        std::fs::write(&conf, text)?;
        Ok(())
    };
    let has = |what: &[&str]| -> Result<String> { a.ip(what) };
    write(&["198.51.100.0/24", "192.0.2.0/24"], 100)?;
    let mut cmd = lab.greha(&a);
    cmd.args(["run", "--config"]).arg(&conf);
    let mut g = a.spawn(&lab, cmd, true)?;
    g.wait_ready(SHORT)?;
    wait_until(SHORT, "master with both routes and the rule", || {
        Ok(has(&["route", "show", "proto", "keepalived"])?
            .lines()
            .count()
            == 2
            && has(&["rule", "show", "pref", "100"])?.contains("lookup 100"))
    })?;
    write(&["192.0.2.0/24", "198.18.0.0/15"], 110)?;
    let out = run(lab.greha(&a).arg("reload"))?;
    ensure!(out.starts_with("ok"), "reload: {out}");
    let routes = has(&["route", "show", "proto", "keepalived"])?;
    ensure!(
        routes.contains("192.0.2.0/24")
            && routes.contains("198.18.0.0/15")
            && !routes.contains("198.51.100.0/24"),
        "routes after the reload:\n{routes}"
    );
    ensure!(
        !has(&["rule", "show", "pref", "100"])?.contains("lookup 100")
            && has(&["rule", "show", "pref", "110"])?.contains("lookup 100"),
        "rules after the reload:\n{}",
        has(&["rule", "show"])?
    );
    let v = &lab.greha_status(&a)?["vrrp"][0];
    ensure!(
        v["state"] == "master" && v["stats"]["master_transitions"] == 1,
        "the reload moved the instance: {v:#}"
    );
    g.terminate(SHORT)?;
    ensure!(
        has(&["route", "show", "proto", "keepalived"])?.is_empty(),
        "routes left behind"
    );
    Ok(())
}
