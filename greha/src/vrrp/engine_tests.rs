//! The engine module's tests, apart so the module reads as what it does.
use super::*;
use std::net::Ipv4Addr;

const ME: IpAddr = IpAddr::V4(Ipv4Addr::new(192, 0, 2, 10));
const LOW: IpAddr = IpAddr::V4(Ipv4Addr::new(192, 0, 2, 5));
const HIGH: IpAddr = IpAddr::V4(Ipv4Addr::new(192, 0, 2, 20));
const VIP: IpAddr = IpAddr::V4(Ipv4Addr::new(203, 0, 113, 1));

fn ms(n: u64) -> Time {
    Duration::from_millis(n)
}

fn cfg(version: Version, priority: u8, interval_cs: u16) -> Config {
    Config {
        name: "VI_1".into(),
        version,
        vrid: 51,
        priority,
        advert_interval_cs: interval_cs,
        preempt: true,
        preempt_delay: Duration::ZERO,
        primary_ip: ME,
        vips: vec![VIP],
        auth: if version == Version::V2 {
            Auth::pass("1111")
        } else {
            Auth::None
        },
        higher_prio_send_advert: false,
        sync_group: false,
        unicast_ttl: None,
    }
}

fn advert(c: &Config, priority: u8) -> Advert {
    Advert {
        version: c.version,
        vrid: c.vrid,
        priority,
        interval_cs: c.advert_interval_cs,
        addresses: c.vips.clone(),
        auth: c.auth.clone(),
    }
}

fn from(src: IpAddr, advert: Advert) -> Event {
    Event::Advert {
        src,
        ttl: 255,
        advert,
    }
}

/// `Heard` does what the followed master's unchanged advert does:
/// following it, and not following it once this router's priority
/// has risen above it (preempt).
#[test]
fn heard_is_the_followed_masters_advert_again() {
    let c = cfg(Version::V3, 100, 100);
    for raised in [None, Some(200)] {
        let mut by_advert = started(c.clone());
        by_advert.handle(ms(10), from(HIGH, advert(&c, 150)));
        let mut by_heard = by_advert.clone();
        if let Some(p) = raised {
            by_advert.handle(ms(20), Event::Priority(p));
            by_heard.handle(ms(20), Event::Priority(p));
        }
        let a = by_advert.handle(ms(1000), from(HIGH, advert(&c, 150)));
        let h = by_heard.handle(ms(1000), Event::Heard);
        assert!(a.is_empty() && h.is_empty(), "{a:?} {h:?}");
        assert_eq!(by_advert.next_deadline(), by_heard.next_deadline());
        assert_eq!(by_advert.stats(), by_heard.stats());
        assert_eq!(by_advert.state(), by_heard.state());
    }
    // Not following anyone: nothing to hear.
    let mut alone = started(c.clone());
    let before = alone.next_deadline();
    alone.handle(ms(10), Event::Heard);
    assert_eq!(alone.next_deadline(), before);
    assert_eq!(alone.stats().rcvd_advertisements, 0);
}

fn started(c: Config) -> Instance {
    let mut i = Instance::new(c);
    i.handle(ms(0), Event::Startup);
    i
}

fn sends(actions: &[Action]) -> Vec<u8> {
    actions
        .iter()
        .filter_map(|a| match a {
            Action::SendAdvert { priority } => Some(*priority),
            _ => None,
        })
        .collect()
}

#[test]
fn timer_formulas_v2() {
    let i = Instance::new(cfg(Version::V2, 100, 100));
    // (256 - 100) / 256 s = 0.609375 s exactly.
    assert_eq!(i.skew_time(), Duration::from_micros(609_375));
    assert_eq!(i.master_down_interval(), Duration::from_micros(3_609_375));
    let i = Instance::new(cfg(Version::V2, 254, 300));
    assert_eq!(i.skew_time(), Duration::from_nanos(7_812_500));
    assert_eq!(
        i.master_down_interval(),
        ms(9000) + Duration::from_nanos(7_812_500)
    );
}

#[test]
fn timer_formulas_v3_in_centiseconds() {
    // (156 * 100) / 256 = 60.9 -> 60 cs; 3 * 100 + 60 = 360 cs.
    let i = Instance::new(cfg(Version::V3, 100, 100));
    assert_eq!(i.skew_time(), ms(600));
    assert_eq!(i.master_down_interval(), ms(3600));
    // 100 ms adverts: (156 * 10) / 256 = 6.09 -> 6 cs; 30 + 6 = 36 cs.
    let i = Instance::new(cfg(Version::V3, 100, 10));
    assert_eq!(i.skew_time(), ms(60));
    assert_eq!(i.master_down_interval(), ms(360));
    // (6 * 10) / 256 = 0.23 -> 0 cs.
    let i = Instance::new(cfg(Version::V3, 250, 10));
    assert_eq!(i.skew_time(), ms(0));
    assert_eq!(i.master_down_interval(), ms(300));
}

#[test]
fn v3_backup_learns_the_masters_interval() {
    let c = cfg(Version::V3, 100, 100);
    let mut i = started(c.clone());
    let mut a = advert(&c, 150);
    a.interval_cs = 10;
    i.handle(ms(50), from(HIGH, a));
    // 3 * 10 cs + (156 * 10) / 256 cs = 36 cs after the advert.
    assert_eq!(i.master_down_interval(), ms(360));
    assert_eq!(i.next_deadline(), Some(ms(50 + 360)));
}

#[test]
fn resume_is_master_at_once_with_an_advert() {
    let mut i = Instance::new(cfg(Version::V3, 100, 100));
    let out = i.handle(ms(0), Event::Resume);
    assert_eq!(i.state(), State::Master);
    assert_eq!(sends(&out), vec![100]);
    assert_eq!(i.stats().new_master_reason, Some(Reason::Resumed));
    assert_eq!(i.next_deadline(), Some(ms(1000)));
}

#[test]
fn owner_starts_as_master_and_sends_at_once() {
    let mut i = Instance::new(cfg(Version::V3, 255, 100));
    let out = i.handle(ms(0), Event::Startup);
    assert_eq!(i.state(), State::Master);
    assert_eq!(
        out,
        vec![
            Action::SendAdvert { priority: 255 },
            Action::Transition {
                from: State::Initialize,
                to: State::Master,
                reason: Reason::Owner
            },
            Action::AddVips,
        ]
    );
    assert_eq!(i.next_deadline(), Some(ms(1000)));
}

#[test]
fn backup_becomes_master_exactly_at_master_down() {
    let mut i = started(cfg(Version::V3, 100, 100));
    assert_eq!(i.state(), State::Backup);
    assert_eq!(i.next_deadline(), Some(ms(3600)));
    assert!(i.handle(ms(3599), Event::Timer).is_empty());
    assert_eq!(i.state(), State::Backup);
    let out = i.handle(ms(3600), Event::Timer);
    assert_eq!(i.state(), State::Master);
    assert_eq!(sends(&out), vec![100]);
    assert!(out.contains(&Action::AddVips));
    assert_eq!(i.stats().new_master_reason, Some(Reason::MasterDown));
    // Then an advert every interval.
    assert_eq!(i.next_deadline(), Some(ms(4600)));
    assert_eq!(sends(&i.handle(ms(4600), Event::Timer)), vec![100]);
    assert_eq!(i.next_deadline(), Some(ms(5600)));
}

#[test]
fn adverts_from_a_master_keep_the_backup_down() {
    let c = cfg(Version::V2, 100, 100);
    let mut i = started(c.clone());
    for t in (0..10_000).step_by(1000) {
        i.handle(ms(t), from(HIGH, advert(&c, 150)));
        assert_eq!(i.next_deadline(), Some(ms(t) + i.master_down_interval()));
    }
    assert_eq!(i.state(), State::Backup);
    assert_eq!(i.master(), Some(HIGH));
    assert_eq!(i.stats().rcvd_advertisements, 10);
}

#[test]
fn priority_zero_makes_the_backup_take_over_after_skew_time() {
    let c = cfg(Version::V3, 100, 100);
    let mut i = started(c.clone());
    i.handle(ms(500), from(HIGH, advert(&c, 150)));
    i.handle(ms(800), from(HIGH, advert(&c, 0)));
    assert_eq!(i.stats().rcvd_pri_zero_packets, 1);
    assert_eq!(i.next_deadline(), Some(ms(800 + 600)));
    i.handle(ms(1400), Event::Timer);
    assert_eq!(i.state(), State::Master);
    assert_eq!(i.stats().new_master_reason, Some(Reason::MasterResigned));
}

#[test]
fn shutdown_of_a_master_sends_priority_zero_and_removes_vips() {
    let mut i = started(cfg(Version::V3, 255, 100));
    let out = i.handle(ms(100), Event::Shutdown);
    assert_eq!(sends(&out), vec![0]);
    assert!(out.contains(&Action::DelVips));
    assert_eq!(i.state(), State::Initialize);
    assert_eq!(i.next_deadline(), None);
    assert_eq!(i.stats().sent_pri_zero_packets, 1);
}

#[test]
fn master_yields_to_higher_priority_and_to_higher_address_on_a_tie() {
    let c = cfg(Version::V3, 100, 100);
    for (src, prio, yields) in [
        (LOW, 101, true),
        (HIGH, 100, true),
        (LOW, 100, false),
        (HIGH, 99, false),
    ] {
        let mut i = started(c.clone());
        i.handle(ms(3600), Event::Timer);
        assert_eq!(i.state(), State::Master);
        let out = i.handle(ms(3700), from(src, advert(&c, prio)));
        if yields {
            assert_eq!(i.state(), State::Backup, "{src} {prio}");
            assert!(out.contains(&Action::DelVips));
            assert_eq!(i.master(), Some(src));
            assert_eq!(i.next_deadline(), Some(ms(3700) + i.master_down_interval()));
        } else {
            // The master answers a lower-priority advert at once.
            assert_eq!(i.state(), State::Master, "{src} {prio}");
            assert_eq!(sends(&out), vec![100]);
            assert_eq!(i.next_deadline(), Some(ms(4700)));
        }
    }
}

#[test]
fn master_answers_priority_zero_with_an_advert() {
    let c = cfg(Version::V3, 200, 100);
    let mut i = started(c.clone());
    i.handle(ms(3600), Event::Timer);
    let out = i.handle(ms(3650), from(LOW, advert(&c, 0)));
    assert_eq!(sends(&out), vec![200]);
    assert_eq!(i.state(), State::Master);
}

#[test]
fn preemption_on_and_off() {
    // A higher-priority backup does not follow a lower master when
    // preempting: it takes over at Master_Down.
    let c = cfg(Version::V3, 200, 100);
    let mut i = started(c.clone());
    for t in (0..5000).step_by(1000) {
        i.handle(ms(t), from(LOW, advert(&c, 100)));
        i.handle(ms(t), Event::Timer);
    }
    assert_eq!(i.state(), State::Master);
    assert_eq!(i.stats().new_master_reason, Some(Reason::MasterDown));
    // Without preemption it keeps following.
    let mut c = c;
    c.preempt = false;
    let mut i = started(c.clone());
    for t in (0..10_000).step_by(1000) {
        i.handle(ms(t), from(LOW, advert(&c, 100)));
        i.handle(ms(t), Event::Timer);
    }
    assert_eq!(i.state(), State::Backup);
}

#[test]
fn preempt_delay_holds_back_preemption_after_startup() {
    let mut c = cfg(Version::V3, 200, 100);
    c.preempt_delay = Duration::from_secs(5);
    let mut i = started(c.clone());
    // Within the delay, a lower master is followed...
    for t in (0..5000).step_by(1000) {
        i.handle(ms(t), from(LOW, advert(&c, 100)));
        i.handle(ms(t), Event::Timer);
        assert_eq!(i.state(), State::Backup, "at {t} ms");
    }
    // ...after it, no longer: Master_Down (3.6 s after the last
    // followed advert at 4 s) makes this router master.
    for t in (5000..9000).step_by(1000) {
        i.handle(ms(t), from(LOW, advert(&c, 100)));
    }
    i.handle(ms(7600), Event::Timer);
    assert_eq!(i.state(), State::Master);
}

#[test]
fn receive_checks_count_and_drop() {
    let c = cfg(Version::V2, 100, 100);
    let mut i = started(c.clone());
    let deadline = i.next_deadline();
    let mut bad_ttl = from(HIGH, advert(&c, 150));
    if let Event::Advert { ttl, .. } = &mut bad_ttl {
        *ttl = 64;
    }
    i.handle(ms(10), bad_ttl);
    let mut a = advert(&c, 150);
    a.interval_cs = 200;
    i.handle(ms(20), from(HIGH, a));
    let mut a = advert(&c, 150);
    a.auth = Auth::pass("2222");
    i.handle(ms(30), from(HIGH, a));
    let mut a = advert(&c, 150);
    a.auth = Auth::None;
    i.handle(ms(40), from(HIGH, a));
    let mut a = advert(&c, 150);
    a.vrid = 52;
    i.handle(ms(50), from(HIGH, a));
    // None of those was followed.
    assert_eq!(i.next_deadline(), deadline);
    let s = i.stats();
    assert_eq!(
        (
            s.ip_ttl_errors,
            s.adv_interval_errors,
            s.auth_failures,
            s.rcvd_advertisements
        ),
        (1, 1, 2, 0)
    );
    // A different address list is counted, and still followed.
    let mut a = advert(&c, 150);
    a.addresses.push(Ipv4Addr::new(203, 0, 113, 2).into());
    i.handle(ms(60), from(HIGH, a));
    assert_eq!(i.stats().address_list_errors, 1);
    assert_eq!(i.next_deadline(), Some(ms(60) + i.master_down_interval()));
}

#[test]
fn v3_ignores_interval_differences_and_auth() {
    let c = cfg(Version::V3, 100, 100);
    let mut i = started(c.clone());
    let mut a = advert(&c, 150);
    a.interval_cs = 25;
    i.handle(ms(10), from(HIGH, a));
    assert_eq!(i.stats().adv_interval_errors, 0);
    assert_eq!(i.master(), Some(HIGH));
}

#[test]
fn fault_resigns_and_recovery_restarts() {
    let c = cfg(Version::V3, 100, 100);
    let mut i = started(c);
    i.handle(ms(3600), Event::Timer);
    let out = i.handle(ms(4000), Event::Fault(true));
    assert_eq!(sends(&out), vec![0]);
    assert!(out.contains(&Action::DelVips));
    assert_eq!(i.state(), State::Fault);
    assert_eq!(i.next_deadline(), None);
    // Adverts are ignored in Fault.
    assert!(i.handle(ms(4100), Event::Timer).is_empty());
    i.handle(ms(5000), Event::Fault(false));
    assert_eq!(i.state(), State::Backup);
    assert_eq!(i.next_deadline(), Some(ms(5000 + 3600)));
}

#[test]
fn a_lower_priority_on_the_master_is_advertised_at_once() {
    let c = cfg(Version::V3, 200, 100);
    let mut i = started(c);
    i.handle(ms(3600), Event::Timer);
    let out = i.handle(ms(3700), Event::Priority(90));
    assert_eq!(sends(&out), vec![90]);
    assert_eq!(i.priority(), 90);
    // Tracking never reaches 0 or 255.
    i.handle(ms(3800), Event::Priority(0));
    assert_eq!(i.priority(), 1);
}

#[test]
fn two_engines_elect_one_master_and_fail_over() {
    // Two routers wired back to back on a virtual clock: the higher
    // priority wins, a crash hands over after Master_Down_Interval.
    let ca = Config {
        primary_ip: HIGH,
        ..cfg(Version::V3, 150, 10)
    };
    let cb = Config {
        primary_ip: LOW,
        ..cfg(Version::V3, 100, 10)
    };
    let mut a = Instance::new(ca.clone());
    let mut b = Instance::new(cb.clone());
    let mut now = ms(0);
    let mut pending: Vec<(bool, u8)> = Vec::new();
    for (r, is_a) in [(&mut a, true), (&mut b, false)] {
        for act in r.handle(now, Event::Startup) {
            if let Action::SendAdvert { priority } = act {
                pending.push((is_a, priority));
            }
        }
    }
    let mut a_alive = true;
    let mut masters_at_once = 0;
    while now < ms(3000) {
        if now == ms(1500) {
            a_alive = false;
            pending.clear();
        }
        // Deliver, then fire timers, 10 ms at a time.
        for (from_a, prio) in std::mem::take(&mut pending) {
            let (to, src, c) = if from_a {
                (&mut b, HIGH, &ca)
            } else {
                (&mut a, LOW, &cb)
            };
            if !from_a && !a_alive {
                continue;
            }
            for act in to.handle(now, from(src, advert(c, prio))) {
                if let Action::SendAdvert { priority } = act {
                    pending.push((!from_a, priority));
                }
            }
        }
        for (r, is_a) in [(&mut a, true), (&mut b, false)] {
            if is_a && !a_alive {
                continue;
            }
            if r.next_deadline().is_some_and(|d| d <= now) {
                for act in r.handle(now, Event::Timer) {
                    if let Action::SendAdvert { priority } = act {
                        pending.push((is_a, priority));
                    }
                }
            }
        }
        if a_alive && a.state() == State::Master && b.state() == State::Master {
            masters_at_once += 1;
        }
        if now == ms(1490) {
            assert_eq!((a.state(), b.state()), (State::Master, State::Backup));
        }
        now += ms(10);
    }
    // A wins within B's first Master_Down (it starts as backup too).
    assert!(
        masters_at_once <= 1,
        "two masters for {masters_at_once} ticks"
    );
    assert_eq!(b.state(), State::Master);
    // B took over at most Master_Down_Interval (36 cs at 10 cs, p100)
    // after A's last advert, which went out at or before 1.5 s.
    assert!(
        b.since() <= ms(1500 + 360),
        "B took over at {:?}",
        b.since()
    );
    assert!(b.since() > ms(1500));
}

/// A Max Advert Interval of 0 is counted and ignored, in Backup and in
/// Master: a flood of them changes nothing.
#[test]
fn interval_zero_is_an_error_and_ignored() {
    let c = cfg(Version::V3, 100, 100);
    let mut backup = started(c.clone());
    backup.handle(ms(10), from(HIGH, advert(&c, 150)));
    let deadline = backup.next_deadline();
    let mut zero = advert(&c, 150);
    zero.interval_cs = 0;
    for n in 0..1000 {
        assert_eq!(backup.handle(ms(20 + n), from(LOW, zero.clone())), vec![]);
    }
    assert_eq!(backup.next_deadline(), deadline);
    assert_eq!(backup.master_down_interval(), ms(3600));
    assert_eq!(backup.stats().adv_interval_errors, 1000);
    assert_eq!(backup.state(), State::Backup);
    let mut higher = zero.clone();
    higher.priority = 200;
    let mut master = started(cfg(Version::V3, 100, 100));
    master.handle(ms(4000), Event::Timer);
    assert_eq!(master.state(), State::Master);
    assert_eq!(master.handle(ms(4010), from(HIGH, higher)), vec![]);
    assert_eq!(master.state(), State::Master);
}

/// After a split brain heals: the master that wins re-announces its VIPs
/// when it hears the other's lower priority, and the one that yields
/// first sends one advert of its own (when configured), so the winner
/// hears it whichever advert crossed first.
#[test]
fn a_healed_split_brain_reannounces_the_vips() {
    let c = cfg(Version::V3, 150, 100);
    let mut winner = started(c.clone());
    winner.handle(ms(4000), Event::Timer);
    assert_eq!(winner.state(), State::Master);
    let acts = winner.handle(ms(5000), from(LOW, advert(&c, 100)));
    assert_eq!(sends(&acts), vec![150]);
    assert!(acts.contains(&Action::ReannounceVips), "{acts:?}");
    // Equal priority from a lower address: ours wins too.
    let acts = winner.handle(ms(5010), from(LOW, advert(&c, 150)));
    assert!(acts.contains(&Action::ReannounceVips), "{acts:?}");

    for send in [false, true] {
        let low = Config {
            priority: 100,
            higher_prio_send_advert: send,
            ..c.clone()
        };
        let mut loser = started(low.clone());
        loser.handle(ms(4000), Event::Timer);
        assert_eq!(loser.state(), State::Master);
        let acts = loser.handle(ms(5000), from(HIGH, advert(&c, 150)));
        assert_eq!(loser.state(), State::Backup);
        assert_eq!(sends(&acts), if send { vec![100] } else { vec![] });
        assert!(acts.contains(&Action::DelVips));
    }
}

/// Two routers on a virtual clock, 1 ms a step: A (150) master, B (100)
/// backup; `ask` is given to A at 1 s. Returns, per step, whether A and B
/// hold the VIPs (what a client on the LAN can reach).
fn handover_run(ask: Event, b_alive: bool) -> (Instance, Instance, Vec<(Time, bool, bool)>) {
    let ca = Config {
        primary_ip: HIGH,
        ..cfg(Version::V3, 150, 10)
    };
    let cb = Config {
        primary_ip: LOW,
        ..cfg(Version::V3, 100, 10)
    };
    let mut a = Instance::new(ca.clone());
    let mut b = Instance::new(cb.clone());
    let (mut a_vips, mut b_vips) = (false, false);
    // An advert (its priority), or None: a gratuitous ARP for the VIP.
    let mut wire: Vec<(bool, Option<u8>)> = Vec::new();
    let mut seen = Vec::new();
    let mut now = ms(0);
    let step =
        |r: &mut Instance, is_a: bool, now: Time, e: Event, wire: &mut Vec<(bool, Option<u8>)>| {
            let mut vips = None;
            for act in r.handle(now, e) {
                match act {
                    Action::SendAdvert { priority } => wire.push((is_a, Some(priority))),
                    Action::AddVips => {
                        vips = Some(true);
                        wire.push((is_a, None));
                    }
                    Action::DelVips => vips = Some(false),
                    _ => {}
                }
            }
            vips
        };
    for (r, is_a) in [(&mut a, true), (&mut b, false)] {
        if is_a || b_alive {
            step(r, is_a, now, Event::Startup, &mut wire);
        }
    }
    let mut ask = Some(ask);
    while now < ms(3000) {
        if now == ms(1000) {
            let e = ask.take().expect("once");
            if let Some(v) = step(&mut a, true, now, e, &mut wire) {
                a_vips = v;
            }
        }
        for (from_a, prio) in std::mem::take(&mut wire) {
            let (to, src, c, vips) = if from_a {
                (&mut b, HIGH, &ca, &mut b_vips)
            } else {
                (&mut a, LOW, &cb, &mut a_vips)
            };
            if from_a && !b_alive {
                continue;
            }
            let e = match prio {
                Some(p) => from(src, advert(c, p)),
                None => Event::Announced,
            };
            if let Some(v) = step(to, !from_a, now, e, &mut wire) {
                *vips = v;
            }
        }
        for (r, is_a, vips) in [(&mut a, true, &mut a_vips), (&mut b, false, &mut b_vips)] {
            if (is_a || b_alive)
                && r.next_deadline().is_some_and(|d| d <= now)
                && let Some(v) = step(r, is_a, now, Event::Timer, &mut wire)
            {
                *vips = v;
            }
        }
        seen.push((now, a_vips, b_vips));
        now += ms(1);
    }
    (a, b, seen)
}

/// Make before break: from the moment A is asked to hand over until B is
/// master, A keeps the VIPs; it releases them HANDOVER_GRACE after seeing
/// B's gratuitous ARP, and at no time does neither hold them.
#[test]
fn a_handover_keeps_the_vips_until_the_new_master_is_heard() {
    for (ask, a_ends) in [
        (Event::HandOver, State::Initialize),
        (Event::Demote, State::Backup),
    ] {
        let (a, b, seen) = handover_run(ask.clone(), true);
        assert_eq!((a.state(), b.state()), (a_ends, State::Master), "{ask:?}");
        let after: Vec<_> = seen.iter().filter(|s| s.0 >= ms(990)).collect();
        assert!(after.iter().all(|&&(_, a, b)| a || b), "{ask:?}: a gap");
        let b_from = after.iter().find(|s| s.2).expect("B took over").0;
        let a_until = after.iter().rev().find(|s| s.1).expect("A held").0;
        // B takes over after Skew_Time (6 cs at 10 cs, p100).
        assert_eq!(b_from, ms(1060), "{ask:?}");
        // B's announcement reaches A in the next step.
        assert_eq!(a_until, b_from + HANDOVER_GRACE, "{ask:?}");
        assert!(!a.handing_over());
    }
}

/// Nobody takes over: a stop releases the VIPs after three intervals
/// anyway and says so; a demote keeps them, stays master and says so.
#[test]
fn a_handover_nobody_answers_is_abandoned() {
    for (ask, note) in [
        (Event::HandOver, HandoverNote::AbandonedReleasingVips),
        (Event::Demote, HandoverNote::AbandonedKeepingVips),
    ] {
        let mut a = started(cfg(Version::V3, 150, 10));
        a.handle(ms(400), Event::Timer);
        assert_eq!(a.state(), State::Master);
        let out = a.handle(ms(1000), ask.clone());
        assert_eq!(sends(&out), vec![0]);
        assert!(!out.contains(&Action::DelVips));
        // Priority 0 again each interval while waiting.
        assert_eq!(a.next_deadline(), Some(ms(1100)));
        assert_eq!(sends(&a.handle(ms(1100), Event::Timer)), vec![0]);
        assert_eq!(sends(&a.handle(ms(1200), Event::Timer)), vec![0]);
        let out = a.handle(ms(1300), Event::Timer);
        assert!(out.contains(&Action::Handover(note)), "{out:?}");
        if note == HandoverNote::AbandonedKeepingVips {
            assert_eq!(sends(&out), vec![1]);
            assert!(!out.contains(&Action::DelVips));
            assert_eq!(a.state(), State::Master);
        } else {
            assert!(out.contains(&Action::DelVips));
            assert_eq!(a.state(), State::Initialize);
        }
        assert!(!a.handing_over());
    }
}

/// A demoted router runs with priority 1: it does not preempt back, and
/// after `Undemote` it does (preempt on, a lower master is not followed).
#[test]
fn demoted_stays_backup_until_undemoted() {
    let c = cfg(Version::V3, 150, 10);
    let mut i = started(c.clone());
    i.handle(ms(10), Event::Demote);
    assert_eq!(i.priority(), 1);
    i.handle(ms(20), from(LOW, advert(&c, 100)));
    for t in (120..2000).step_by(100) {
        i.handle(ms(t), from(LOW, advert(&c, 100)));
        assert_eq!(i.state(), State::Backup);
    }
    // Tracking changes while demoted count once resumed.
    i.handle(ms(2000), Event::Priority(140));
    assert_eq!(i.priority(), 1);
    i.handle(ms(2010), Event::Undemote);
    assert_eq!(i.priority(), 140);
    i.handle(ms(2100), from(LOW, advert(&c, 100)));
    let due = i.next_deadline().expect("master down");
    let out = i.handle(due, Event::Timer);
    assert_eq!(i.state(), State::Master);
    assert_eq!(sends(&out), vec![140]);
}

/// Resumed during its handover, a master stays master and advertises
/// its priority at once; a fault or a stop ends the handover at once.
#[test]
fn a_handover_ends_on_undemote_fault_and_shutdown() {
    let c = cfg(Version::V3, 150, 10);
    let master = || {
        let mut a = started(c.clone());
        a.handle(ms(400), Event::Timer);
        a.handle(ms(1000), Event::Demote);
        assert!(a.handing_over());
        a
    };
    let mut a = master();
    let out = a.handle(ms(1010), Event::Undemote);
    assert_eq!(sends(&out), vec![150]);
    assert!(!a.handing_over() && a.state() == State::Master);
    let mut a = master();
    let out = a.handle(ms(1010), Event::Fault(true));
    assert!(sends(&out).is_empty() && out.contains(&Action::DelVips));
    assert!(!a.handing_over() && a.state() == State::Fault);
    let mut a = master();
    let out = a.handle(ms(1010), Event::Shutdown);
    assert!(sends(&out).is_empty() && out.contains(&Action::DelVips));
    assert!(!a.handing_over() && a.state() == State::Initialize);
    // A stop during a demote's handover ends it in Initialize.
    let mut a = master();
    a.handle(ms(1010), Event::HandOver);
    a.handle(ms(1020), from(LOW, advert(&c, 100)));
    // No announcement seen: the VIPs go HANDOVER_ANNOUNCE_WAIT after the
    // new master's advert, not before.
    a.handle(ms(1019) + HANDOVER_ANNOUNCE_WAIT, Event::Timer);
    assert_eq!(a.state(), State::Master);
    let out = a.handle(ms(1020) + HANDOVER_ANNOUNCE_WAIT, Event::Timer);
    assert!(out.contains(&Action::DelVips));
    assert_eq!(a.state(), State::Initialize);
}

/// Shut down (FRR's `vrrp N shutdown`): a master hands over first, then
/// nothing moves it (startup, faults, adverts) until Enable, which starts
/// it (or puts it in Fault if a tracker is down).
#[test]
fn disabled_stays_out_of_service_until_enabled() {
    let (a, b, seen) = handover_run(Event::Disable, true);
    assert_eq!((a.state(), b.state()), (State::Initialize, State::Master));
    assert!(a.disabled());
    assert!(
        seen.iter()
            .filter(|s| s.0 >= ms(990))
            .all(|&(_, a, b)| a || b)
    );

    let c = cfg(Version::V3, 150, 10);
    let mut i = started(c.clone());
    let out = i.handle(ms(10), Event::Disable);
    assert!(out.iter().any(|a| matches!(
        a,
        Action::Transition {
            to: State::Initialize,
            reason: Reason::Disabled,
            ..
        }
    )));
    assert_eq!(i.next_deadline(), None);
    for e in [
        Event::Startup,
        Event::Fault(true),
        Event::Fault(false),
        Event::HandOver,
    ] {
        assert!(i.handle(ms(20), e).is_empty());
        assert_eq!(i.state(), State::Initialize);
    }
    i.handle(ms(30), from(LOW, advert(&c, 100)));
    assert_eq!(i.state(), State::Initialize);
    i.handle(ms(40), Event::Enable { fault: true });
    assert_eq!(i.state(), State::Fault);
    let mut i = started(c.clone());
    i.handle(ms(10), Event::Disable);
    i.handle(ms(50), Event::Enable { fault: false });
    assert_eq!(i.state(), State::Backup);
    assert!(!i.disabled());
}

/// A sync group member whose master went silent only wants to be master
/// (Backup still, the wish said once); a master heard again takes the
/// wish back; the group's SyncMaster makes it master for the reason it
/// had, or for the group's; SyncBackup makes a master resign.
#[test]
fn a_sync_group_member_waits_for_its_group() {
    let c = Config {
        sync_group: true,
        ..cfg(Version::V3, 100, 100)
    };
    let mut e = started(c.clone());
    e.handle(ms(0), from(HIGH, advert(&c, 150)));
    let down = e.next_deadline().unwrap();
    let out = e.handle(down, Event::Timer);
    assert_eq!(out, vec![Action::WantMaster]);
    assert!(e.wants_master() && e.state() == State::Backup);
    // Said once, however long it waits.
    let again = e.next_deadline().unwrap();
    assert!(again > down);
    assert!(e.handle(again, Event::Timer).is_empty());
    // The master is heard again: no wish.
    e.handle(again + ms(1), from(HIGH, advert(&c, 150)));
    assert!(!e.wants_master());
    // Silent again, and the group lets it go.
    let down = e.next_deadline().unwrap();
    assert_eq!(e.handle(down, Event::Timer), vec![Action::WantMaster]);
    let out = e.handle(down, Event::SyncMaster);
    assert!(
        out.contains(&Action::Transition {
            from: State::Backup,
            to: State::Master,
            reason: Reason::MasterDown
        }),
        "{out:?}"
    );
    assert!(!e.wants_master());
    // The group goes backup: resign, then Backup.
    let out = e.handle(down + ms(5), Event::SyncBackup);
    assert_eq!(out[0], Action::SendAdvert { priority: 0 });
    assert!(out.contains(&Action::Transition {
        from: State::Master,
        to: State::Backup,
        reason: Reason::SyncGroup
    }));
    // Taken along without a wish of its own.
    let out = e.handle(down + ms(10), Event::SyncMaster);
    assert!(out.contains(&Action::Transition {
        from: State::Backup,
        to: State::Master,
        reason: Reason::SyncGroup
    }));
    // Outside a group the timer makes it master at once.
    let mut alone = started(cfg(Version::V3, 100, 100));
    let down = alone.next_deadline().unwrap();
    assert!(alone.handle(down, Event::Timer).contains(&Action::AddVips));
}

/// TTL as keepalived judges it: multicast needs 255; a unicast advert is
/// taken at any TTL (the peer may be routers away) unless the peer has
/// bounds.
#[test]
fn unicast_ttl_bounds() {
    for (bounds, ttl, taken) in [
        (None, 255, true),
        (None, 254, false),
        (Some((0, 255)), 254, true),
        (Some((0, 255)), 1, true),
        (Some((250, 255)), 249, false),
        (Some((250, 254)), 255, false),
        (Some((250, 254)), 252, true),
    ] {
        let c = Config {
            unicast_ttl: bounds.map(|(min, max)| vec![(HIGH, min, max)]),
            ..cfg(Version::V3, 100, 100)
        };
        let mut e = started(c.clone());
        e.handle(
            ms(10),
            Event::Advert {
                src: HIGH,
                ttl,
                advert: advert(&c, 150),
            },
        );
        assert_eq!(
            (e.master() == Some(HIGH), e.stats().ip_ttl_errors),
            (taken, u64::from(!taken)),
            "{bounds:?} ttl {ttl}"
        );
    }
}
