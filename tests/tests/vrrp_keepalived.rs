//! greha's VRRP against real keepalived 2.2.7 on a lab link: each side as
//! master and as backup, v2 with PASS authentication and v3 at 100 ms,
//! hard kills and graceful stops, preemption, authentication mismatch.
use std::{
    fs,
    path::PathBuf,
    time::{Duration, Instant},
};

use anyhow::{Context as _, Result, ensure};
use greha_tests::{Host, Lab, Proc, SHORT, wait_until};
use nix::{sys::signal::Signal, unistd::Pid};

const A: &str = "198.51.100.1";
const B: &str = "198.51.100.2";
const VIP: &str = "203.0.113.10";

struct Pair {
    lab: Lab,
    a: Host,
    b: Host,
}

fn pair() -> Result<Pair> {
    let mut lab = Lab::new()?;
    let a = lab.host("a")?;
    let b = lab.host("b")?;
    lab.link(&a, &format!("{A}/24"), &b, &format!("{B}/24"))?;
    Ok(Pair { lab, a, b })
}

/// `greha status --json` of greha on A.
fn status(p: &Pair) -> Result<serde_json::Value> {
    p.lab.greha_status(&p.a)
}

fn holds_vip(host: &Host) -> Result<bool> {
    Ok(host
        .ip(&["-br", "-4", "addr", "show", "dev", "eth0"])?
        .contains(&format!("{VIP}/24")))
}

/// The instance spec in the mode under test: `cargo xtask test` runs this
/// suite twice, the second time with GREHA_TEST_NO_FASTPATH=1.
fn mode(spec: &str) -> String {
    if std::env::var_os("GREHA_TEST_NO_FASTPATH").is_some() {
        format!("{spec} no-fastpath")
    } else {
        spec.to_owned()
    }
}

/// greha on A as `run --vrrp SPEC`, started and ready.
fn greha(p: &Pair, spec: &str) -> Result<Proc> {
    let spec = &mode(spec);
    let mut cmd = p.lab.greha(&p.a);
    cmd.args(["run", "--vrrp", spec]);
    let mut g = p.a.spawn(&p.lab, cmd, true)?;
    g.wait_ready(SHORT)?;
    Ok(g)
}

struct Keepalived {
    proc: Proc,
    vrrp_pid_file: PathBuf,
}

impl Keepalived {
    /// keepalived on B with one instance; `extra` goes into vrrp_instance.
    fn start(p: &Pair, priority: u8, advert_int: &str, extra: &str) -> Result<Self> {
        Self::start_on(&p.lab, &p.b, "eth0", "eth0", priority, advert_int, extra)
    }

    /// keepalived on `host`, running VRRP on `iface` with the VIP on
    /// `vip_dev`, as in the seed's keepalived.conf.
    fn start_on(
        lab: &Lab,
        host: &Host,
        iface: &str,
        vip_dev: &str,
        priority: u8,
        advert_int: &str,
        extra: &str,
    ) -> Result<Self> {
        let dir = lab.tmp().join("keepalived");
        fs::create_dir_all(&dir)?;
        let conf = dir.join("keepalived.conf");
        fs::write(
            &conf,
            format!(
                "global_defs {{\n  router_id LAB_B\n}}\n\
                 vrrp_instance VI_1 {{\n  state BACKUP\n  interface {iface}\n  \
                 virtual_router_id 51\n  priority {priority}\n  advert_int {advert_int}\n  \
                 {extra}\n  virtual_ipaddress {{\n    {VIP}/24 dev {vip_dev}\n  }}\n}}\n"
            ),
        )?;
        let vrrp_pid_file = dir.join("vrrp.pid");
        let mut cmd = host.command("keepalived");
        cmd.args(["-n", "-l", "-P", "-D", "-f"])
            .arg(&conf)
            .arg("-p")
            .arg(dir.join("keepalived.pid"))
            .arg("-r")
            .arg(&vrrp_pid_file);
        let mut proc = host.spawn(lab, cmd, false)?;
        proc.wait_for_output("(VI_1) Entering BACKUP STATE", SHORT)?;
        Ok(Self {
            proc,
            vrrp_pid_file,
        })
    }

    /// Dies as a crashed host would: silent, no priority 0. The parent is
    /// frozen first, or it would respawn the VRRP child, and its death
    /// would make the child resign gracefully.
    fn kill_hard(&mut self) -> Result<()> {
        self.proc.signal(Signal::SIGSTOP)?;
        let child: i32 = fs::read_to_string(&self.vrrp_pid_file)?.trim().parse()?;
        nix::sys::signal::kill(Pid::from_raw(child), Signal::SIGKILL)?;
        self.proc.signal(Signal::SIGKILL)?;
        self.proc.wait(SHORT)?;
        Ok(())
    }
}

/// Watches both hosts for `window`: never both holding the VIP for longer
/// than `allowed`.
fn never_two_masters(p: &Pair, window: Duration, allowed: Duration) -> Result<()> {
    let end = Instant::now() + window;
    let mut both_since: Option<Instant> = None;
    while Instant::now() < end {
        if holds_vip(&p.a)? && holds_vip(&p.b)? {
            let since = *both_since.get_or_insert_with(Instant::now);
            ensure!(
                since.elapsed() <= allowed,
                "two masters for {:?}",
                since.elapsed()
            );
        } else {
            both_since = None;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    Ok(())
}

/// Waits for `host` to hold the VIP and returns how long it took.
fn takes_over(host: &Host, within: Duration) -> Result<Duration> {
    let t0 = Instant::now();
    wait_until(within, "the VIP to move", || holds_vip(host))?;
    Ok(t0.elapsed())
}

#[test]
fn greha_master_keepalived_backup_v2_pass_then_kill() -> Result<()> {
    let p = pair()?;
    let _ka = Keepalived::start(
        &p,
        100,
        "1",
        "authentication {\n auth_type PASS\n auth_pass 1111\n }",
    )?;
    let mut g = greha(
        &p,
        &format!(
            "VI_1 interface eth0 vrid 51 priority 150 version 2 advert-int 1 auth-pass 1111 vip {VIP}/24"
        ),
    )?;
    takes_over(&p.a, SHORT)?;
    // keepalived follows greha: it never takes the VIP while greha runs.
    never_two_masters(&p, Duration::from_secs(4), Duration::ZERO)?;
    ensure!(
        !holds_vip(&p.b)?,
        "keepalived took the VIP from a higher-priority greha"
    );
    // kill -9: keepalived (priority 100) holds the VIP no later than
    // Master_Down_Interval (3 s + 0.609 s) after greha's last advert.
    g.signal(Signal::SIGKILL)?;
    g.wait(SHORT)?;
    let t = takes_over(&p.b, Duration::from_millis(3609 + 500))?;
    ensure!(
        t >= Duration::from_secs(2),
        "took over after {t:?}, before any master down"
    );
    Ok(())
}

#[test]
fn keepalived_master_greha_backup_v3_100ms_then_kill() -> Result<()> {
    let p = pair()?;
    let mut ka = Keepalived::start(&p, 150, "0.1", "version 3")?;
    takes_over(&p.b, SHORT)?;
    let _g = greha(
        &p,
        &format!("VI_1 interface eth0 vrid 51 priority 100 version 3 advert-int 0.1 vip {VIP}/24"),
    )?;
    never_two_masters(&p, Duration::from_secs(1), Duration::ZERO)?;
    ensure!(
        !holds_vip(&p.a)?,
        "greha took the VIP from a higher-priority keepalived"
    );
    // Master_Down_Interval at 10 cs, priority 100: 30 + 6 cs.
    ka.kill_hard()?;
    takes_over(&p.a, Duration::from_millis(360 + 300))?;
    Ok(())
}

#[test]
fn graceful_stop_hands_over_after_skew_time_and_removes_the_vip() -> Result<()> {
    let p = pair()?;
    let _ka = Keepalived::start(
        &p,
        100,
        "1",
        "authentication {\n auth_type PASS\n auth_pass 1111\n }",
    )?;
    let mut g = greha(
        &p,
        &format!(
            "VI_1 interface eth0 vrid 51 priority 150 version 2 advert-int 1 auth-pass 1111 vip {VIP}/24"
        ),
    )?;
    takes_over(&p.a, SHORT)?;
    never_two_masters(&p, Duration::from_secs(2), Duration::ZERO)?;
    let status = g.terminate(SHORT)?;
    ensure!(status.success(), "greha exited {status}:\n{}", g.log());
    ensure!(!holds_vip(&p.a)?, "greha left its VIP behind");
    // Priority 0 received: keepalived takes over after Skew_Time (0.609 s
    // at priority 100), far sooner than Master_Down.
    takes_over(&p.b, Duration::from_millis(609 + 500))?;
    Ok(())
}

#[test]
fn greha_preempts_keepalived_and_does_not_with_nopreempt() -> Result<()> {
    for (preempt, expect_a) in [("", true), (" nopreempt", false)] {
        let p = pair()?;
        let _ka = Keepalived::start(&p, 100, "0.1", "version 3")?;
        takes_over(&p.b, SHORT)?;
        let _g = greha(
            &p,
            &format!(
                "VI_1 interface eth0 vrid 51 priority 200 version 3 advert-int 0.1 vip {VIP}/24{preempt}"
            ),
        )?;
        if expect_a {
            // Master_Down_Interval at priority 200: 30 + 2 cs.
            takes_over(&p.a, Duration::from_millis(320 + 500))?;
            never_two_masters(&p, Duration::from_secs(1), Duration::from_millis(100))?;
            ensure!(
                !holds_vip(&p.b)?,
                "keepalived kept the VIP after being preempted"
            );
        } else {
            never_two_masters(&p, Duration::from_secs(2), Duration::ZERO)?;
            ensure!(!holds_vip(&p.a)?, "greha preempted with nopreempt");
        }
    }
    Ok(())
}

#[test]
fn authentication_mismatch_is_ignored() -> Result<()> {
    let p = pair()?;
    let _ka = Keepalived::start(
        &p,
        150,
        "1",
        "authentication {\n auth_type PASS\n auth_pass 1111\n }",
    )?;
    takes_over(&p.b, SHORT)?;
    // keepalived has the higher priority, but greha does not accept its
    // adverts (wrong password): after Master_Down it is master too.
    let _g = greha(
        &p,
        &format!("VI_1 interface eth0 vrid 51 priority 100 version 2 advert-int 1 auth-pass 2222 vip {VIP}/24"),
    )
    .context("starting greha")?;
    takes_over(&p.a, Duration::from_millis(3609 + 1000))?;
    // Ignored because of the password, and counted as such.
    let v = status(&p)?;
    let s = &v["vrrp"][0]["stats"];
    ensure!(
        s["auth_failures"].as_u64() > Some(0),
        "no authentication failure counted: {v}"
    );
    assert_eq!(s["rcvd_advertisements"], 0, "{v}");
    assert_eq!(v["vrrp"][0]["state"], "master");
    Ok(())
}

/// The seed's setup, migrated one node: A runs greha (its own gretap
/// tunnel and VRRP over it), B a greha tunnel with keepalived doing VRRP
/// over it. The VIP lives on each server's LAN interface, where a client
/// reaches it; it moves to B when A dies.
#[test]
fn seed_topology_vrrp_over_a_greha_tunnel_with_the_vip_on_the_lan() -> Result<()> {
    let mut lab = Lab::new()?;
    let a = lab.host("a")?;
    let b = lab.host("b")?;
    let client_a = lab.host("ca")?;
    let client_b = lab.host("cb")?;
    lab.link(&a, &format!("{A}/24"), &b, &format!("{B}/24"))?;
    lab.link(&a, "203.0.113.2/24", &client_a, "203.0.113.100/24")?;
    lab.link(&b, "203.0.113.3/24", &client_b, "203.0.113.101/24")?;
    let tunnel = |local: &str, remote: &str, inner: &str| {
        format!("gretap1 mode gretap local {local} remote {remote} address {inner}/24")
    };

    let mut tb = lab.greha(&b);
    tb.args(["run", "--tunnel", &tunnel(B, A, "192.0.2.2")]);
    let mut greha_b = b.spawn(&lab, tb, true)?;
    greha_b.wait_ready(SHORT)?;
    let _ka = Keepalived::start_on(
        &lab,
        &b,
        "gretap1",
        "eth1",
        100,
        "1",
        "authentication {\n auth_type PASS\n auth_pass 1111\n }",
    )?;

    let mut ta = lab.greha(&a);
    ta.args([
        "run",
        "--tunnel",
        &tunnel(A, B, "192.0.2.1"),
        "--vrrp",
        &mode(&format!(
            "VI_1 interface gretap1 vrid 51 priority 150 version 2 advert-int 1 \
                 auth-pass 1111 vip {VIP}/24 dev eth1"
        )),
    ]);
    let mut greha_a = a.spawn(&lab, ta, true)?;
    greha_a.wait_ready(SHORT)?;

    let on_lan = |h: &Host| -> Result<bool> {
        Ok(h.ip(&["-br", "-4", "addr", "show", "dev", "eth1"])?
            .contains(&format!("{VIP}/24")))
    };
    wait_until(SHORT, "A to hold the VIP on its LAN", || on_lan(&a))?;
    greha_tests::run(client_a.command("ping").args(["-c", "2", "-W", "2", VIP]))
        .context("the client cannot reach the VIP on A")?;
    // keepalived on B hears greha over the tunnel: it would be master
    // after Master_Down_Interval (3.6 s) otherwise. Watched for longer.
    let end = Instant::now() + Duration::from_secs(5);
    while Instant::now() < end {
        ensure!(!on_lan(&b)?, "B took the VIP while A is master");
        std::thread::sleep(Duration::from_millis(20));
    }

    greha_a.signal(Signal::SIGKILL)?;
    greha_a.wait(SHORT)?;
    wait_until(
        Duration::from_millis(3609 + 1000),
        "B to take the VIP",
        || on_lan(&b),
    )?;
    greha_tests::run(client_b.command("ping").args(["-c", "2", "-W", "2", VIP]))
        .context("the client cannot reach the VIP on B")?;
    Ok(())
}

/// A failing check script with weight -60 drops greha (150) below
/// keepalived (100): keepalived preempts; the script recovering (rise 2)
/// gives greha the VIP back.
#[test]
fn a_failing_check_script_lowers_the_priority_and_keepalived_preempts() -> Result<()> {
    let p = pair()?;
    // A check with arguments, as keepalived's `script "test -e FILE"`.
    let healthy = p.lab.tmp().join("healthy");
    fs::write(&healthy, "")?;
    let _ka = Keepalived::start(&p, 100, "0.1", "version 3")?;
    let _g = greha(
        &p,
        &format!(
            "VI_1 interface eth0 vrid 51 priority 150 version 3 advert-int 0.1 vip {VIP}/24 \
             track-script 'test -e {}' interval 0.1 rise 2 fall 2 weight -60",
            healthy.display()
        ),
    )?;
    takes_over(&p.a, SHORT)?;
    // keepalived may have become master first (it started first); it
    // yields on A's first advert.
    wait_until(SHORT, "keepalived to yield", || Ok(!holds_vip(&p.b)?))?;
    never_two_masters(&p, Duration::from_secs(1), Duration::ZERO)?;
    fs::remove_file(&healthy)?;
    takes_over(&p.b, SHORT)?;
    let v = status(&p)?;
    assert_eq!(v["vrrp"][0]["priority"], 90, "{v}");
    assert_eq!(v["vrrp"][0]["state"], "backup", "{v}");
    fs::write(&healthy, "")?;
    takes_over(&p.a, SHORT)?;
    wait_until(SHORT, "keepalived to give up the VIP", || {
        Ok(!holds_vip(&p.b)?)
    })?;
    assert_eq!(status(&p)?["vrrp"][0]["priority"], 150);
    Ok(())
}

/// keepalived's unicast_peer/unicast_src_ip against greha's unicast-peer:
/// each side follows the other as backup, no multicast needed.
#[test]
fn unicast_peers_interoperate_both_ways() -> Result<()> {
    let p = pair()?;
    let unicast = format!("version 3\n  unicast_src_ip {B}\n  unicast_peer {{\n    {A}\n  }}");
    // keepalived master, greha backup.
    let mut ka = Keepalived::start(&p, 150, "0.1", &unicast)?;
    takes_over(&p.b, SHORT)?;
    let g = greha(
        &p,
        &format!(
            "VI_1 interface eth0 vrid 51 priority 100 version 3 advert-int 0.1 vip {VIP}/24 unicast-peer {B}"
        ),
    )?;
    never_two_masters(&p, Duration::from_secs(1), Duration::ZERO)?;
    let v = status(&p)?;
    assert_eq!(v["vrrp"][0]["state"], "backup", "{v}");
    assert_eq!(v["vrrp"][0]["master"], B, "{v}");
    ka.kill_hard()?;
    takes_over(&p.a, Duration::from_millis(360 + 300))?;
    drop(g);
    drop(ka);
    // greha master, keepalived backup: keepalived accepts greha's unicast
    // adverts (it takes only its peer's, sent to its unicast_src_ip).
    let p = pair()?;
    let _g = greha(
        &p,
        &format!(
            "VI_1 interface eth0 vrid 51 priority 150 version 3 advert-int 0.1 vip {VIP}/24 unicast-peer {B}"
        ),
    )?;
    takes_over(&p.a, SHORT)?;
    let _ka = Keepalived::start(&p, 100, "0.1", &unicast)?;
    never_two_masters(&p, Duration::from_secs(1), Duration::ZERO)?;
    ensure!(
        !holds_vip(&p.b)?,
        "keepalived did not follow greha's unicast adverts"
    );
    Ok(())
}

/// keepalived's default, track the VRRP interface: greha's interface going
/// down puts VI_1 in Fault (VIP gone, keepalived master); back up, greha
/// preempts again. `dont-track-primary` would leave it master on a dead
/// link.
#[test]
fn the_vrrp_interface_going_down_is_a_fault_as_in_keepalived() -> Result<()> {
    let mut lab = Lab::new()?;
    let a = lab.host("a")?;
    let b = lab.host("b")?;
    let sw = lab.switch("lan")?;
    let a_if = lab.plug(&a, &format!("{A}/24"), &sw)?;
    let b_if = lab.plug(&b, &format!("{B}/24"), &sw)?;
    let _ka = Keepalived::start_on(&lab, &b, &b_if, &b_if, 100, "0.1", "version 3")?;
    let mut cmd = lab.greha(&a);
    cmd.args([
        "run",
        "--vrrp",
        &mode(&format!(
            "VI_1 interface {a_if} vrid 51 priority 150 version 3 advert-int 0.1 vip {VIP}/24"
        )),
    ]);
    let mut g = a.spawn(&lab, cmd, true)?;
    g.wait_ready(SHORT)?;
    let state = || -> Result<String> {
        Ok(lab.greha_status(&a)?["vrrp"][0]["state"]
            .as_str()
            .unwrap_or("")
            .to_owned())
    };
    let has_vip = |h: &Host, dev: &str| -> Result<bool> {
        Ok(h.ip(&["-br", "-4", "addr", "show", "dev", dev])?
            .contains(&format!("{VIP}/24")))
    };
    wait_until(SHORT, "A master", || Ok(state()? == "master"))?;
    a.ip(&["link", "set", &a_if, "down"])?;
    wait_until(SHORT, "A in fault", || Ok(state()? == "fault"))?;
    ensure!(!has_vip(&a, &a_if)?, "A kept the VIP on a dead link");
    wait_until(SHORT, "keepalived to take over", || has_vip(&b, &b_if))?;
    a.ip(&["link", "set", &a_if, "up"])?;
    wait_until(SHORT, "A master again", || Ok(state()? == "master"))?;
    wait_until(SHORT, "keepalived to yield", || Ok(!has_vip(&b, &b_if)?))?;
    Ok(())
}

/// keepalived's track_file: a number in a file times the weight moves the
/// priority (keepalived preempts when it falls below its own), and with
/// weight 0 any number but 0 is Fault.
#[test]
fn tracked_files_move_the_priority_and_fault() -> Result<()> {
    let p = pair()?;
    let maint = p.lab.tmp().join("maint");
    let down = p.lab.tmp().join("down");
    fs::write(&down, "0\n")?;
    let _ka = Keepalived::start(&p, 100, "0.1", "version 3")?;
    let _g = greha(
        &p,
        &format!(
            "VI_1 interface eth0 vrid 51 priority 150 version 3 advert-int 0.1 vip {VIP}/24 \
             track-file {} weight -60 init 0 track-file {} weight 0",
            maint.display(),
            down.display()
        ),
    )?;
    takes_over(&p.a, SHORT)?;
    wait_until(SHORT, "keepalived to yield", || Ok(!holds_vip(&p.b)?))?;
    ensure!(
        fs::read_to_string(&maint)?.trim() == "0",
        "init not written"
    );
    fs::write(&maint, "1\n")?;
    takes_over(&p.b, SHORT)?;
    let v = status(&p)?;
    ensure!(v["vrrp"][0]["priority"] == 90, "{v}");
    fs::write(&maint, "0\n")?;
    takes_over(&p.a, SHORT)?;
    fs::write(&down, "1\n")?;
    wait_until(SHORT, "A in fault", || {
        Ok(status(&p)?["vrrp"][0]["state"] == "fault")
    })?;
    ensure!(!holds_vip(&p.a)?, "a faulted greha kept the VIP");
    fs::write(&down, "0\n")?;
    takes_over(&p.a, SHORT)?;
    Ok(())
}

/// Unicast VRRP between routers a router apart, as keepalived runs it: a
/// unicast advert arrives with TTL 254, which keepalived accepts unless
/// the peer has `min_ttl`/`max_ttl` bounds; greha sends with `unicast-ttl`
/// and accepts the same way. greha master (TTL 64 sent, 63 seen past the
/// router), keepalived following; greha backup, following keepalived; and
/// with `min-ttl 255` greha refuses the routed adverts and counts them.
#[test]
fn unicast_across_a_router_with_keepalived() -> Result<()> {
    let mut lab = Lab::new()?;
    let a = lab.host("a")?;
    let r = lab.host("r")?;
    let b = lab.host("b")?;
    lab.link(&a, "198.51.100.1/24", &r, "198.51.100.254/24")?;
    lab.link(&r, "192.0.2.254/24", &b, "192.0.2.2/24")?;
    r.sysctl("net.ipv4.ip_forward", "1")?;
    a.ip(&["route", "add", "192.0.2.0/24", "via", "198.51.100.254"])?;
    b.ip(&["route", "add", "198.51.100.0/24", "via", "192.0.2.254"])?;
    let vip = "203.0.113.10";
    let holds = |h: &Host| -> Result<bool> {
        Ok(h.ip(&["-br", "-4", "addr", "show", "dev", "eth0"])?
            .contains(&format!("{vip}/32")))
    };
    let _ka = greha_tests::start_keepalived(
        &lab,
        &b,
        "b",
        &format!(
            "state BACKUP\n interface eth0\n virtual_router_id 51\n priority 100\n \
             advert_int 0.1\n version 3\n unicast_src_ip 192.0.2.2\n \
             unicast_peer {{\n 198.51.100.1\n }}\n virtual_ipaddress {{\n {vip}/32\n }}"
        ),
        "Entering BACKUP STATE",
    )?;
    let start = |lab: &Lab, priority: u8, peer: &str| -> Result<Proc> {
        let mut cmd = lab.greha(&a);
        cmd.args(["run", "--vrrp"]).arg(format!(
            "VI_1 interface eth0 vrid 51 priority {priority} advert-int 0.1 \
             unicast-peer 192.0.2.2 {peer} unicast-ttl 64 vip {vip}/32"
        ));
        let mut g = a.spawn(lab, cmd, true)?;
        g.wait_ready(SHORT)?;
        Ok(g)
    };
    // greha master: keepalived follows its adverts, seen with TTL 63.
    let mut cap = r.command("tshark");
    cap.args([
        "-i",
        "eth1",
        "-l",
        "-c",
        "1",
        "-f",
        "ip proto 112 and src 198.51.100.1",
    ])
    .args(["-T", "fields", "-e", "ip.ttl"]);
    let mut cap = r.spawn(&lab, cap, false)?;
    cap.wait_for_output("Capture started", SHORT)?;
    let mut g = start(&lab, 150, "")?;
    cap.wait(SHORT)?;
    ensure!(
        cap.log().lines().any(|l| l.trim() == "63"),
        "greha's unicast advert past the router: {}",
        cap.log()
    );
    wait_until(SHORT, "greha master", || holds(&a))?;
    for _ in 0..10 {
        ensure!(!holds(&b)?, "keepalived took over from a live greha");
        std::thread::sleep(Duration::from_millis(100));
    }
    // greha backup: it follows keepalived's adverts, TTL 254 here.
    g.terminate(SHORT)?;
    wait_until(SHORT, "keepalived master", || holds(&b))?;
    let mut g = start(&lab, 50, "")?;
    wait_until(SHORT, "greha following keepalived", || {
        let v = &lab.greha_status(&a)?["vrrp"][0];
        Ok(v["state"] == "backup" && v["master"] == "192.0.2.2")
    })?;
    ensure!(!holds(&a)?, "greha holds the VIP as backup");
    g.terminate(SHORT)?;
    // Bounds: routed adverts refused and counted.
    let _g = start(&lab, 50, "min-ttl 255")?;
    wait_until(SHORT, "greha refusing the routed adverts", || {
        let v = &lab.greha_status(&a)?["vrrp"][0];
        Ok(v["stats"]["ip_ttl_errors"].as_u64().unwrap_or(0) > 0 && v["state"] == "master")
    })?;
    Ok(())
}

/// keepalived's notify_fifo, side by side: greha (A) and keepalived (B)
/// each write their state changes to a FIFO; the lines have the same
/// shape (`INSTANCE "VI_1" BACKUP 100`), greha's come in order (BACKUP,
/// MASTER, then STOP when it stops), and a FIFO nobody reads never stalls
/// greha (the test reads only at the end).
#[test]
fn notify_fifo_lines_as_keepalived_writes_them() -> Result<()> {
    let p = pair()?;
    let dir = p.lab.tmp().join("fifo");
    fs::create_dir_all(&dir)?;
    let ka_fifo = dir.join("keepalived.fifo");
    nix::unistd::mkfifo(&ka_fifo, nix::sys::stat::Mode::from_bits_truncate(0o600))?;
    // Readers first: keepalived opens its FIFO for writing only, which
    // waits for a reader.
    let read_all = |path: PathBuf| {
        std::thread::spawn(move || -> std::io::Result<String> {
            use std::io::Read as _;
            let mut f = fs::File::open(path)?;
            let mut text = String::new();
            f.read_to_string(&mut text)?;
            Ok(text)
        })
    };
    let ka_lines = read_all(ka_fifo.clone());
    let mut ka = greha_tests::start_keepalived_conf(
        &p.lab,
        &p.b,
        "b",
        &format!(
            "global_defs {{\n notify_fifo {}\n}}\nvrrp_instance VI_1 {{\n state BACKUP\n \
             interface eth0\n virtual_router_id 51\n priority 100\n advert_int 0.1\n version 3\n \
             virtual_ipaddress {{\n {VIP}/24\n }}\n}}\n",
            ka_fifo.display()
        ),
        "Entering BACKUP STATE",
    )?;
    let greha_fifo = dir.join("greha.fifo");
    let mut cmd = p.lab.greha(&p.a);
    cmd.args(["run", "--notify-fifo"])
        .arg(&greha_fifo)
        .arg("--vrrp")
        .arg(mode(&format!(
            "VI_1 interface eth0 vrid 51 priority 150 advert-int 0.1 vip {VIP}/24"
        )));
    let mut g = p.a.spawn(&p.lab, cmd, true)?;
    g.wait_ready(SHORT)?;
    wait_until(SHORT, "greha master", || holds_vip(&p.a))?;
    // Nobody reads greha's FIFO yet: greha must have run on regardless.
    let greha_lines = read_all(greha_fifo.clone());
    let status = g.terminate(SHORT)?;
    ensure!(status.success(), "greha exited {status}:\n{}", g.log());
    let greha_text = greha_lines.join().expect("reader")?;
    ka.terminate(SHORT)?;
    let ka_text = ka_lines.join().expect("reader")?;
    let greha: Vec<&str> = greha_text.lines().collect();
    ensure!(
        greha
            == [
                "INSTANCE \"VI_1\" BACKUP 150",
                "INSTANCE \"VI_1\" MASTER 150",
                "INSTANCE \"VI_1\" STOP 150"
            ],
        "greha's FIFO: {greha_text:?}"
    );
    ensure!(
        ka_text.lines().next() == Some("INSTANCE \"VI_1\" BACKUP 100"),
        "keepalived's FIFO: {ka_text:?}"
    );
    Ok(())
}

/// keepalived's vrrp_track_process: greha (A, priority 150) holds the VIP
/// only while its service runs; keepalived (B) takes it when the service
/// is gone and gives it back when it returns. The service is a copy of
/// sleep under a name no other process on the machine has, matched by
/// its full command.
#[test]
fn track_process_moves_the_vip_with_the_service() -> Result<()> {
    let p = pair()?;
    let service = p.lab.tmp().join(format!("svc-{}", std::process::id()));
    fs::copy("/bin/sleep", &service)?;
    let _ka = Keepalived::start(&p, 100, "0.1", "version 3")?;
    let mut cmd = p.lab.greha(&p.a);
    cmd.args(["run", "--vrrp"]).arg(mode(&format!(
        "VI_1 interface eth0 vrid 51 priority 150 version 3 advert-int 0.1 vip {VIP}/24 \
         track-process {} full-command",
        service.display()
    )));
    let mut g = p.a.spawn(&p.lab, cmd, true)?;
    g.wait_ready(SHORT)?;
    wait_until(SHORT, "greha in Fault, keepalived master", || {
        Ok(status(&p)?["vrrp"][0]["state"] == "fault" && holds_vip(&p.b)?)
    })?;
    let mut svc = std::process::Command::new(&service).arg("60").spawn()?;
    wait_until(SHORT, "greha master with its service up", || {
        Ok(holds_vip(&p.a)? && status(&p)?["vrrp"][0]["state"] == "master")
    })?;
    svc.kill()?;
    svc.wait()?;
    wait_until(SHORT, "keepalived master once the service is gone", || {
        Ok(status(&p)?["vrrp"][0]["state"] == "fault" && holds_vip(&p.b)? && !holds_vip(&p.a)?)
    })?;
    Ok(())
}
