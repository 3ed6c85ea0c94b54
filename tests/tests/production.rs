//! Running greha in production: the systemd unit, the configuration file,
//! the watchdog.
use std::{fs, path::Path, process::Command, time::Duration};

use anyhow::{Result, ensure};
use greha_tests::{Lab, SHORT, greha_bin, run, wait_until};

fn repo() -> &'static Path {
    Path::new(concat!(env!("CARGO_MANIFEST_DIR"), "/.."))
}

#[test]
fn the_systemd_unit_passes_systemd_analyze_verify() -> Result<()> {
    let lab = Lab::new()?;
    let unit = fs::read_to_string(repo().join("dist/greha.service"))?;
    // verify checks that the executables exist: point it at this build.
    let unit = unit.replace("/usr/local/bin/greha", &greha_bin().display().to_string());
    let path = lab.tmp().join("greha.service");
    fs::write(&path, unit)?;
    let out = Command::new("systemd-analyze")
        .arg("verify")
        .arg(&path)
        .output()?;
    let stderr = String::from_utf8_lossy(&out.stderr);
    ensure!(out.status.success() && stderr.trim().is_empty(), "{stderr}");
    Ok(())
}

#[test]
fn check_config_accepts_the_example_and_names_the_line_of_a_mistake() -> Result<()> {
    let lab = Lab::new()?;
    let out = run(Command::new(greha_bin())
        .args(["check-config", "--config"])
        .arg(repo().join("examples/greha.toml")))?;
    ensure!(
        out.contains("tunnel gretap1: gretap 198.51.100.1 -> 198.51.100.2"),
        "{out}"
    );
    ensure!(
        out.contains("vrrp instance VI_1: gretap1 vrid 51 priority 150"),
        "{out}"
    );
    let bad = lab.tmp().join("bad.toml");
    fs::write(
        &bad,
        "[[vrrp]]\nname = \"VI_1\"\ninterface = \"eth0\"\nvrid = 51\npriority = 0\n",
    )?;
    let out = Command::new(greha_bin())
        .args(["check-config", "--config"])
        .arg(&bad)
        .output()?;
    let err = String::from_utf8_lossy(&out.stderr);
    ensure!(!out.status.success(), "a bad file was accepted");
    let want = format!(
        "{}:5: vrrp instance VI_1: priority: \"0\" is not a priority",
        bad.display()
    );
    ensure!(err.contains(&want), "got: {err}\nwant: {want}");
    Ok(())
}

#[test]
fn run_takes_its_instances_from_the_file_and_pings_the_watchdog() -> Result<()> {
    let mut lab = Lab::new()?;
    let a = lab.host("a")?;
    let b = lab.host("b")?;
    lab.link(&a, "198.51.100.1/24", &b, "198.51.100.2/24")?;
    let conf = lab.tmp().join("greha.toml");
    fs::write(
        &conf,
        "[[vrrp]]\nname = \"VI_1\"\ninterface = \"eth0\"\nvrid = 51\nadvert_int = 0.1\n\
         [[vrrp.vip]]\naddress = \"203.0.113.10/24\"\n",
    )?;
    let mut cmd = lab.greha(&a);
    cmd.args(["run", "--config"])
        .arg(&conf)
        // As systemd sets it for WatchdogSec=200ms.
        .env("WATCHDOG_USEC", "200000");
    let mut g = a.spawn(&lab, cmd, true)?;
    g.wait_ready(SHORT)?;
    g.wait_notify("WATCHDOG=1", SHORT)?;
    wait_until(SHORT, "the file's VIP on eth0", || {
        Ok(a.ip(&["-br", "addr", "show", "dev", "eth0"])?
            .contains("203.0.113.10"))
    })?;
    Ok(())
}

#[test]
fn the_seeds_keepalived_conf_imports_into_a_valid_configuration() -> Result<()> {
    let lab = Lab::new()?;
    // The seed's file with its placeholder VIP defined, as keepalived allows.
    let conf = lab.tmp().join("keepalived.conf");
    fs::write(
        &conf,
        "$virtual_third_ip=203.0.113.10\nglobal_defs {\n    router_id LVS_DEVEL\n}\n\
         vrrp_instance VI_1 {\n    state MASTER\n    interface gretap1\n    virtual_router_id 51\n    \
         priority 100          advert_int 1\n    authentication {\n        auth_type PASS\n        \
         auth_pass 1111\n    }\n    virtual_ipaddress {\n        $virtual_third_ip dev eth0\n    }\n}\n",
    )?;
    let out = Command::new(greha_bin())
        .arg("import-keepalived")
        .arg(&conf)
        .output()?;
    ensure!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let stderr = String::from_utf8_lossy(&out.stderr);
    for line in [
        ":3: global_defs: router_id",
        ":6: state:",
        ":9: priority: extra words",
    ] {
        ensure!(stderr.contains(line), "{line} not listed in:\n{stderr}");
    }
    let converted = lab.tmp().join("greha.toml");
    fs::write(&converted, &out.stdout)?;
    let checked = run(Command::new(greha_bin())
        .args(["check-config", "--config"])
        .arg(&converted))?;
    ensure!(
        checked.contains("vrrp instance VI_1: gretap1 vrid 51 priority 100"),
        "{checked}"
    );
    Ok(())
}

#[test]
fn status_json_follows_the_documented_schema() -> Result<()> {
    let mut lab = Lab::new()?;
    let a = lab.host("a")?;
    let b = lab.host("b")?;
    lab.link(&a, "198.51.100.1/24", &b, "198.51.100.2/24")?;
    let mut cmd = lab.greha(&a);
    cmd.args([
        "run",
        "--tunnel",
        "gretap1 mode gretap local 198.51.100.1 remote 198.51.100.2 key 7 address 192.0.2.1/24",
        "--vrrp",
        "VI_1 interface gretap1 vrid 51 advert-int 0.1 vip 203.0.113.10/24",
        "--vrrp",
        "VI_2 interface eth0 vrid 52 advert-int 0.1 no-fastpath vip 203.0.113.20/24",
    ]);
    let mut g = a.spawn(&lab, cmd, true)?;
    g.wait_ready(SHORT)?;
    let status = || lab.greha_status(&a);
    // Why an instance has no fast path is said, and only then.
    let v = status()?;
    assert_eq!(v["vrrp"][0]["fastpath_off"], serde_json::Value::Null, "{v}");
    assert_eq!(v["vrrp"][1]["fastpath_off"], "no-fastpath", "{v}");
    let text = run(lab.greha(&a).arg("status"))?;
    ensure!(text.contains("VI_2: fast path off: no-fastpath"), "{text}");
    // Alone: Initialize -> Backup -> Master, two transitions recorded.
    wait_until(SHORT, "master", || {
        Ok(status()?["vrrp"][0]["state"] == "master")
    })?;
    let v = status()?;
    assert_eq!(
        v["vrrp"][0]["transitions"][1]["reason"], "master_down",
        "{v}"
    );
    assert_eq!(v["tunnels"][0]["up"], true, "{v}");
    let doc = lab.tmp().join("status.json");
    fs::write(&doc, v.to_string())?;
    run(Command::new("/usr/bin/python3")
        .arg("-c")
        .arg(
            "import json, sys, jsonschema\n\
             jsonschema.validate(json.load(open(sys.argv[1])), json.load(open(sys.argv[2])))",
        )
        .arg(&doc)
        .arg(repo().join("docs/status.schema.json")))?;
    Ok(())
}

#[test]
fn metrics_endpoint_serves_valid_prometheus_text() -> Result<()> {
    use std::io::{Read as _, Write as _};
    let mut lab = Lab::new()?;
    let a = lab.host("a")?;
    let b = lab.host("b")?;
    lab.link(&a, "198.51.100.1/24", &b, "198.51.100.2/24")?;
    let mut cmd = lab.greha(&a);
    cmd.args([
        "run",
        "--metrics",
        "127.0.0.1:9477",
        "--tunnel",
        "gretap1 mode gretap local 198.51.100.1 remote 198.51.100.2",
        "--vrrp",
        "VI_1 interface eth0 vrid 51 advert-int 0.1 vip 203.0.113.10/24",
    ]);
    let mut g = a.spawn(&lab, cmd, true)?;
    g.wait_ready(SHORT)?;
    // The namespace's own loopback: nothing leaves the lab.
    let scrape = || -> Result<String> {
        a.enter(|| -> Result<String> {
            let mut c = std::net::TcpStream::connect("127.0.0.1:9477")?;
            c.write_all(b"GET /metrics HTTP/1.0\r\n\r\n")?;
            let mut s = String::new();
            c.read_to_string(&mut s)?;
            Ok(s)
        })?
    };
    wait_until(SHORT, "master in the metrics", || {
        Ok(scrape()?.contains("greha_vrrp_state{instance=\"VI_1\",state=\"master\"} 1"))
    })?;
    let reply = scrape()?;
    let body = reply
        .split_once("\r\n\r\n")
        .map(|(_, b)| b)
        .unwrap_or_default();
    ensure!(
        body.contains("greha_tunnel_up{tunnel=\"gretap1\"} 1"),
        "{body}"
    );
    let file = lab.tmp().join("metrics.txt");
    fs::write(&file, body)?;
    let parsed = run(Command::new("/usr/bin/python3")
        .arg("-c")
        .arg(
            "import sys\n\
             from prometheus_client.parser import text_string_to_metric_families\n\
             fams = list(text_string_to_metric_families(open(sys.argv[1]).read()))\n\
             print(len(fams), sum(len(f.samples) for f in fams))",
        )
        .arg(&file))?;
    let families: usize = parsed.split_whitespace().next().unwrap_or("0").parse()?;
    ensure!(
        families > 20,
        "only {families} metric families parsed: {parsed}"
    );
    Ok(())
}

/// Reload keeps what did not change running untouched: with a ping every
/// 10 ms through the tunnel, adding an instance, refusing an invalid file
/// and removing the instance again lose no packet and cause no
/// transition of the instance that stayed.
#[test]
fn reload_without_transitions_or_lost_packets() -> Result<()> {
    let mut lab = Lab::new()?;
    let a = lab.host("a")?;
    let b = lab.host("b")?;
    lab.link(&a, "198.51.100.1/24", &b, "198.51.100.2/24")?;
    let conf = |local: &str, remote: &str, inner: &str, prio: u8, extra: &str| {
        format!(
            "[[tunnel]]\nname = \"gretap1\"\nmode = \"gretap\"\nlocal = \"{local}\"\n\
             remote = \"{remote}\"\naddresses = [\"{inner}/24\"]\n\
             [[vrrp]]\nname = \"VI_1\"\ninterface = \"gretap1\"\nvrid = 51\npriority = {prio}\n\
             advert_int = 0.1\n[[vrrp.vip]]\naddress = \"203.0.113.10/24\"\n{extra}"
        )
    };
    let vi2 = "[[vrrp]]\nname = \"VI_2\"\ninterface = \"gretap1\"\nvrid = 52\npriority = 150\n\
               advert_int = 0.1\n[[vrrp.vip]]\naddress = \"203.0.113.20/24\"\n";
    let files = [lab.tmp().join("a.toml"), lab.tmp().join("b.toml")];
    fs::write(
        &files[0],
        conf("198.51.100.1", "198.51.100.2", "192.0.2.1", 150, ""),
    )?;
    fs::write(
        &files[1],
        conf("198.51.100.2", "198.51.100.1", "192.0.2.2", 100, ""),
    )?;
    let mut daemons = Vec::new();
    for (k, host) in [&a, &b].into_iter().enumerate() {
        let mut cmd = lab.greha(host);
        cmd.args(["run", "--config"]).arg(&files[k]);
        let mut d = host.spawn(&lab, cmd, true)?;
        d.wait_ready(SHORT)?;
        daemons.push(d);
    }
    let greha = |k: usize, args: &[&str]| {
        let mut c = lab.greha([&a, &b][k]);
        c.args(args);
        c
    };
    let instances = |k: usize| -> Result<Vec<serde_json::Value>> {
        let v: serde_json::Value =
            serde_json::from_str(&run(&mut greha(k, &["status", "--json"]))?)?;
        Ok(v["vrrp"].as_array().cloned().unwrap_or_default())
    };
    let vi1 = |k: usize| -> Result<serde_json::Value> {
        instances(k)?
            .into_iter()
            .find(|i| i["name"] == "VI_1")
            .ok_or_else(|| anyhow::anyhow!("no VI_1"))
    };
    wait_until(SHORT, "A master, B backup", || {
        Ok(vi1(0)?["state"] == "master" && vi1(1)?["state"] == "backup")
    })?;
    let before = [
        vi1(0)?["transitions"].clone(),
        vi1(1)?["transitions"].clone(),
    ];

    let mut pinger = a.spawn(
        &lab,
        {
            let mut c = a.command("ping");
            c.args(["-i", "0.01", "-c", "400", "-W", "1", "192.0.2.2"]);
            c
        },
        false,
    )?;
    pinger.wait_for_output("bytes from", SHORT)?;

    // Add VI_2.
    fs::write(
        &files[0],
        conf("198.51.100.1", "198.51.100.2", "192.0.2.1", 150, vi2),
    )?;
    let reply = run(&mut greha(0, &["reload"]))?;
    ensure!(reply.contains("instances added: VI_2"), "{reply}");
    wait_until(SHORT, "VI_2 master", || {
        Ok(instances(0)?
            .iter()
            .any(|i| i["name"] == "VI_2" && i["state"] == "master"))
    })?;
    // An invalid file is refused, by `greha reload` and by SIGHUP alike.
    fs::write(&files[0], "[[vrrp]]\nname = \"VI_1\"\nvrid = 999\n")?;
    let out = greha(0, &["reload"]).output()?;
    ensure!(!out.status.success(), "an invalid file was accepted");
    ensure!(
        String::from_utf8_lossy(&out.stdout).contains("refused"),
        "{out:?}"
    );
    daemons[0].signal(nix::sys::signal::Signal::SIGHUP)?;
    daemons[0].wait_for_output("reload: the new configuration is refused", SHORT)?;
    ensure!(
        instances(0)?.len() == 2,
        "a refused reload changed the instances"
    );
    // Remove VI_2: its VIP goes with it.
    fs::write(
        &files[0],
        conf("198.51.100.1", "198.51.100.2", "192.0.2.1", 150, ""),
    )?;
    let reply = run(&mut greha(0, &["reload"]))?;
    ensure!(reply.contains("instances removed: VI_2"), "{reply}");
    ensure!(
        !a.ip(&["-br", "addr", "show", "dev", "gretap1"])?
            .contains("203.0.113.20"),
        "VI_2's VIP is still there"
    );

    let status = pinger.wait(Duration::from_secs(20))?;
    let log = pinger.log();
    ensure!(
        status.success() && log.contains("400 received, 0% packet loss"),
        "packets lost across reloads:\n{log}"
    );
    let after = [
        vi1(0)?["transitions"].clone(),
        vi1(1)?["transitions"].clone(),
    ];
    assert_eq!(before, after, "VI_1 made a transition during the reloads");
    Ok(())
}

/// An upgrade-style restart: stopped with --keep-datapath and started
/// again within the backups' Master_Down_Interval, greha loses no tunnel
/// packet and the backup never sees the master go.
#[test]
fn restart_with_the_datapath_kept_loses_nothing() -> Result<()> {
    let mut lab = Lab::new()?;
    let a = lab.host("a")?;
    let b = lab.host("b")?;
    lab.link(&a, "198.51.100.1/24", &b, "198.51.100.2/24")?;
    let spec = |k: usize| {
        let (local, remote, inner, prio) = if k == 0 {
            ("198.51.100.1", "198.51.100.2", "192.0.2.1", 150)
        } else {
            ("198.51.100.2", "198.51.100.1", "192.0.2.2", 100)
        };
        vec![
            "run".to_owned(),
            "--keep-datapath".into(),
            "--tunnel".into(),
            format!("gretap1 mode gretap local {local} remote {remote} address {inner}/24"),
            "--vrrp".into(),
            format!(
                "VI_1 interface gretap1 vrid 51 priority {prio} advert-int 1 vip 203.0.113.10/24"
            ),
        ]
    };
    let hosts = [&a, &b];
    let start = |k: usize| -> Result<greha_tests::Proc> {
        let mut cmd = lab.greha(hosts[k]);
        cmd.args(spec(k));
        let mut d = hosts[k].spawn(&lab, cmd, true)?;
        d.wait_ready(SHORT)?;
        Ok(d)
    };
    let vi1 = |k: usize| -> Result<serde_json::Value> {
        let out = run(lab.greha(hosts[k]).args(["status", "--json"]))?;
        let v: serde_json::Value = serde_json::from_str(&out)?;
        Ok(v["vrrp"][0].clone())
    };
    let mut greha_a = start(0)?;
    let _greha_b = start(1)?;
    wait_until(Duration::from_secs(10), "A master", || {
        Ok(vi1(0)?["state"] == "master")
    })?;
    wait_until(SHORT, "B backup", || Ok(vi1(1)?["state"] == "backup"))?;
    let b_before = vi1(1)?["transitions"].clone();

    let mut pinger = a.spawn(
        &lab,
        {
            let mut c = a.command("ping");
            c.args(["-i", "0.01", "-c", "300", "-W", "1", "192.0.2.2"]);
            c
        },
        false,
    )?;
    pinger.wait_for_output("bytes from", SHORT)?;
    let status = greha_a.terminate(SHORT)?;
    ensure!(
        status.success(),
        "greha exited {status}:\n{}",
        greha_a.log()
    );
    ensure!(
        a.ip(&["-br", "addr", "show", "dev", "gretap1"])?
            .contains("203.0.113.10"),
        "the kept stop removed the VIP"
    );
    let _greha_a = start(0)?;
    let v = vi1(0)?;
    assert_eq!(v["state"], "master", "{v}");
    assert_eq!(v["transitions"][0]["reason"], "resumed", "{v}");

    let status = pinger.wait(Duration::from_secs(20))?;
    let log = pinger.log();
    ensure!(
        status.success() && log.contains("300 received, 0% packet loss"),
        "packets lost across the restart:\n{log}"
    );
    // B heard A's adverts throughout: no transition at all.
    assert_eq!(vi1(1)?["transitions"], b_before);
    assert_eq!(vi1(1)?["state"], "backup");
    Ok(())
}

#[test]
fn counters_are_read_from_the_pins_with_the_daemon_gone() -> Result<()> {
    let mut lab = Lab::new()?;
    let a = lab.host("a")?;
    let b = lab.host("b")?;
    lab.link(&a, "198.51.100.1/24", &b, "198.51.100.2/24")?;
    let mut cmd = lab.greha(&a);
    cmd.args([
        "run",
        "--keep-datapath",
        "--tunnel",
        "gretap1 mode gretap local 198.51.100.1 remote 198.51.100.2 address 192.0.2.1/24",
    ]);
    let mut g = a.spawn(&lab, cmd, true)?;
    g.wait_ready(SHORT)?;
    // Frames the tunnel sends (ARP for the remote end; no answer needed).
    let _ = a
        .command("ping")
        .args(["-c", "2", "-W", "1", "192.0.2.2"])
        .output()?;
    ensure!(g.terminate(SHORT)?.success(), "{}", g.log());
    let out = run(lab.greha(&a).args(["counters", "--json"]))?;
    let v: serde_json::Value = serde_json::from_str(&out)?;
    ensure!(v["tunnels"][0]["name"] == "gretap1", "{v}");
    ensure!(
        v["tunnels"][0]["counters"]["tx_packets"].as_u64() > Some(0),
        "{v}"
    );
    Ok(())
}

/// Where the kernel refuses the fast path (here: greha without
/// CAP_PERFMON and CAP_SYS_ADMIN, whose programs the verifier refuses),
/// VRRP still runs, and `greha status` says why the fast path is off.
#[test]
fn vrrp_runs_and_says_why_when_the_fast_path_is_refused() -> Result<()> {
    let mut lab = Lab::new()?;
    let a = lab.host("a")?;
    let b = lab.host("b")?;
    lab.link(&a, "198.51.100.1/24", &b, "198.51.100.2/24")?;
    // lab.greha's command (nsenter … -- greha …) with setpriv put in
    // front of greha, inside the namespace.
    let inner = lab.greha(&a);
    let args: Vec<_> = inner.get_args().collect();
    let split = args.iter().position(|a| *a == "--").map_or(0, |i| i + 1);
    let mut cmd = Command::new(inner.get_program());
    cmd.args(&args[..split])
        .args(["setpriv", "--bounding-set", "-perfmon,-sys_admin"])
        .args(&args[split..]);
    cmd.args([
        "run",
        "--vrrp",
        "VI_1 interface eth0 vrid 51 advert-int 0.1 vip 203.0.113.10/24",
    ]);
    let mut g = a.spawn(&lab, cmd, true)?;
    g.wait_ready(SHORT)?;
    wait_until(SHORT, "master without the fast path", || {
        Ok(lab.greha_status(&a)?["vrrp"][0]["state"] == "master")
    })?;
    let v = lab.greha_status(&a)?;
    let why = v["vrrp"][0]["fastpath_off"].as_str().unwrap_or_default();
    ensure!(why.contains("the kernel refused program"), "{v}");
    let text = run(lab.greha(&a).arg("status"))?;
    ensure!(text.contains("VI_1: fast path off: "), "{text}");
    Ok(())
}
