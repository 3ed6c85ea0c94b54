//! The VRRP state machine of one virtual router, without I/O (RFC 3768 for
//! version 2, RFC 5798 for version 3).
//!
//! It is fed events with the current time and returns the actions to
//! perform; it never reads a clock or touches a socket. The shell around it
//! calls [`Instance::handle`] with each received advertisement, with
//! [`Event::Timer`] when [`Instance::next_deadline`] has passed, and with
//! startup, shutdown, fault and priority changes. Tests drive it with a
//! virtual clock.
use std::{net::Ipv4Addr, time::Duration};

use serde::{Deserialize, Serialize};

use super::packet::{Advert, Auth, Version};

/// Time as the engine sees it: a duration since an epoch the caller picks.
pub type Time = Duration;

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Config {
    pub name: String,
    pub version: Version,
    pub vrid: u8,
    /// 1 to 254, or 255 for the address owner.
    pub priority: u8,
    /// Advertisement interval in centiseconds (v2: a multiple of 100).
    pub advert_interval_cs: u16,
    pub preempt: bool,
    /// After startup, a higher priority does not preempt for this long.
    pub preempt_delay: Duration,
    /// This router's address on the VRRP interface: the advert's source
    /// and the tie-breaker between equal priorities.
    pub primary_ip: Ipv4Addr,
    pub vips: Vec<Ipv4Addr>,
    /// v2 only.
    pub auth: Auth,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum State {
    Initialize,
    Backup,
    Master,
    Fault,
}

/// Why a transition happened, for status output and notify scripts.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Reason {
    /// Startup as the address owner (priority 255).
    Owner,
    /// Startup as a non-owner.
    Startup,
    /// No advertisement from a master within Master_Down_Interval.
    MasterDown,
    /// The master resigned (priority 0) and Skew_Time passed.
    MasterResigned,
    /// An advertisement with a higher priority, or an equal priority from
    /// a higher address.
    Preempted,
    Shutdown,
    /// A tracked interface or check failed.
    Fault,
    /// Master again after a restart that kept the datapath, before the
    /// peers' Master_Down_Interval ran out: nothing changed on the wire.
    Resumed,
    /// The fault cleared.
    FaultCleared,
}

/// What the shell must do, in order.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Action {
    /// Send an advertisement with this priority (0 when resigning).
    SendAdvert { priority: u8 },
    /// Add the virtual addresses and announce them (gratuitous ARP).
    AddVips,
    /// Remove the virtual addresses this instance added.
    DelVips,
    Transition {
        from: State,
        to: State,
        reason: Reason,
    },
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Event {
    Startup,
    /// Startup of a router that was master a moment ago (a restart with
    /// the datapath kept): Master at once, with an advert, so the backups
    /// never see the master go.
    Resume,
    Shutdown,
    /// A tracked interface or check failed (true) or recovered (false).
    Fault(bool),
    /// The effective priority changed (tracking weights).
    Priority(u8),
    /// A parsed advertisement for this VRID, with the IP header's source
    /// and TTL.
    Advert {
        src: Ipv4Addr,
        ttl: u8,
        advert: Advert,
    },
    /// The time returned by `next_deadline` has come.
    Timer,
    /// The master this backup follows was heard again, unchanged: the fast
    /// path checked the advert and absorbed it. The same as that advert,
    /// without carrying its bytes around.
    Heard,
}

/// Per-instance statistics, named as RFC 6527's vrrpv3StatisticsTable.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Stats {
    pub master_transitions: u64,
    pub new_master_reason: Option<Reason>,
    pub rcvd_advertisements: u64,
    pub adv_interval_errors: u64,
    pub ip_ttl_errors: u64,
    pub rcvd_pri_zero_packets: u64,
    pub sent_pri_zero_packets: u64,
    pub rcvd_invalid_type_packets: u64,
    pub address_list_errors: u64,
    pub packet_length_errors: u64,
    pub sent_advertisements: u64,
    /// v2: authentication type or password mismatch.
    pub auth_failures: u64,
}

#[derive(Clone)]
pub struct Instance {
    cfg: Config,
    state: State,
    /// The effective priority (configured, adjusted by tracking).
    priority: u8,
    /// v3: the interval the current master advertises (centiseconds);
    /// v2: always the configured one.
    master_adver_interval_cs: u16,
    adver_timer: Option<Time>,
    master_down_timer: Option<Time>,
    /// While set, this router does not preempt (preempt_delay).
    no_preempt_until: Time,
    /// The master the backup follows, for status and the fast path.
    master: Option<Ipv4Addr>,
    /// Its priority as last advertised.
    master_priority: u8,
    since: Time,
    stats: Stats,
}

/// One centisecond.
const CS: Duration = Duration::from_millis(10);

impl Instance {
    pub fn new(cfg: Config) -> Self {
        Self {
            priority: cfg.priority,
            master_adver_interval_cs: cfg.advert_interval_cs,
            cfg,
            state: State::Initialize,
            adver_timer: None,
            master_down_timer: None,
            no_preempt_until: Duration::ZERO,
            master: None,
            master_priority: 0,
            since: Duration::ZERO,
            stats: Stats::default(),
        }
    }

    pub fn config(&self) -> &Config {
        &self.cfg
    }

    pub fn state(&self) -> State {
        self.state
    }

    pub fn priority(&self) -> u8 {
        self.priority
    }

    /// The router currently believed to be master (this one when Master).
    pub fn master(&self) -> Option<Ipv4Addr> {
        match self.state {
            State::Master => Some(self.cfg.primary_ip),
            State::Backup => self.master,
            _ => None,
        }
    }

    /// The followed master's priority and interval (centiseconds), while
    /// Backup: what a steady advert repeats.
    pub fn followed(&self) -> Option<(Ipv4Addr, u8, u16)> {
        match (self.state, self.master) {
            (State::Backup, Some(m)) => {
                Some((m, self.master_priority, self.master_adver_interval_cs))
            }
            _ => None,
        }
    }

    /// When the current state began.
    pub fn since(&self) -> Time {
        self.since
    }

    pub fn stats(&self) -> &Stats {
        &self.stats
    }

    /// A packet for this VRID of another type than advertisement.
    pub fn count_invalid_type(&mut self) {
        self.stats.rcvd_invalid_type_packets += 1;
    }

    /// A packet for this VRID whose length does not match its count.
    pub fn count_length_error(&mut self) {
        self.stats.packet_length_errors += 1;
    }

    /// A v2 packet for this VRID with an unknown authentication type.
    pub fn count_auth_failure(&mut self) {
        self.stats.auth_failures += 1;
    }

    /// The earliest pending timer: call `handle(deadline, Event::Timer)`
    /// when it comes.
    pub fn next_deadline(&self) -> Option<Time> {
        match (self.adver_timer, self.master_down_timer) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }

    /// Skew_Time: v2 `(256 - Priority) / 256` s; v3 `((256 - Priority) *
    /// Master_Adver_Interval) / 256` cs, in integer centiseconds.
    pub fn skew_time(&self) -> Duration {
        let p = u32::from(256 - u16::from(self.priority));
        match self.cfg.version {
            Version::V2 => Duration::from_nanos(u64::from(p) * 1_000_000_000 / 256),
            Version::V3 => CS * (p * u32::from(self.master_adver_interval_cs) / 256),
        }
    }

    /// Master_Down_Interval: `3 * Advertisement_Interval + Skew_Time` (v3:
    /// with the master's interval).
    pub fn master_down_interval(&self) -> Duration {
        let interval = match self.cfg.version {
            Version::V2 => self.cfg.advert_interval_cs,
            Version::V3 => self.master_adver_interval_cs,
        };
        CS * (3 * u32::from(interval)) + self.skew_time()
    }

    fn advert_interval(&self) -> Duration {
        CS * u32::from(self.cfg.advert_interval_cs)
    }

    fn transition(&mut self, now: Time, to: State, reason: Reason, out: &mut Vec<Action>) {
        let from = self.state;
        if from == to {
            return;
        }
        if to == State::Master {
            self.stats.master_transitions += 1;
            self.stats.new_master_reason = Some(reason);
        }
        if from == State::Master {
            out.push(Action::DelVips);
        }
        self.state = to;
        self.since = now;
        out.push(Action::Transition { from, to, reason });
        if to == State::Master {
            out.push(Action::AddVips);
        }
    }

    fn send(&mut self, priority: u8, out: &mut Vec<Action>) {
        self.stats.sent_advertisements += 1;
        if priority == 0 {
            self.stats.sent_pri_zero_packets += 1;
        }
        out.push(Action::SendAdvert { priority });
    }

    fn become_master(&mut self, now: Time, reason: Reason, out: &mut Vec<Action>) {
        self.master_down_timer = None;
        self.master = None;
        let priority = self.priority;
        self.send(priority, out);
        self.adver_timer = Some(now + self.advert_interval());
        self.transition(now, State::Master, reason, out);
    }

    fn become_backup(&mut self, now: Time, reason: Reason, out: &mut Vec<Action>) {
        self.adver_timer = None;
        self.master_down_timer = Some(now + self.master_down_interval());
        self.transition(now, State::Backup, reason, out);
    }

    /// Initialize -> Master (owner) or Backup.
    fn start(&mut self, now: Time, reason: Reason, out: &mut Vec<Action>) {
        self.master_adver_interval_cs = self.cfg.advert_interval_cs;
        self.no_preempt_until = now + self.cfg.preempt_delay;
        if self.priority == 255 {
            self.become_master(now, Reason::Owner, out);
        } else {
            self.become_backup(now, reason, out);
        }
    }

    fn preempts(&self, now: Time) -> bool {
        self.cfg.preempt && now >= self.no_preempt_until
    }

    pub fn handle(&mut self, now: Time, event: Event) -> Vec<Action> {
        let mut out = Vec::new();
        match event {
            Event::Startup => {
                if self.state == State::Initialize {
                    self.start(now, Reason::Startup, &mut out);
                }
            }
            Event::Resume => {
                if self.state == State::Initialize {
                    self.master_adver_interval_cs = self.cfg.advert_interval_cs;
                    self.no_preempt_until = now + self.cfg.preempt_delay;
                    self.become_master(now, Reason::Resumed, &mut out);
                }
            }
            Event::Shutdown => {
                if self.state == State::Master {
                    self.send(0, &mut out);
                }
                self.adver_timer = None;
                self.master_down_timer = None;
                self.transition(now, State::Initialize, Reason::Shutdown, &mut out);
            }
            Event::Fault(true) => {
                if self.state == State::Master {
                    // Resign, so a backup takes over after Skew_Time.
                    self.send(0, &mut out);
                }
                self.adver_timer = None;
                self.master_down_timer = None;
                self.transition(now, State::Fault, Reason::Fault, &mut out);
            }
            Event::Fault(false) => {
                if self.state == State::Fault {
                    self.state = State::Initialize;
                    self.start(now, Reason::FaultCleared, &mut out);
                }
            }
            Event::Priority(p) => self.set_priority(now, p, &mut out),
            Event::Timer => self.timer(now, &mut out),
            Event::Heard => self.heard(now),
            Event::Advert { src, ttl, advert } => self.advert(now, src, ttl, &advert, &mut out),
        }
        out
    }

    fn set_priority(&mut self, now: Time, p: u8, out: &mut Vec<Action>) {
        // 255 belongs to the address owner alone; tracking cannot reach it
        // nor 0 (which means resigning).
        let p = if self.cfg.priority == 255 {
            255
        } else {
            p.clamp(1, 254)
        };
        if p == self.priority {
            return;
        }
        self.priority = p;
        // Tell the backups now: a lower priority may let one preempt. In
        // Backup, Skew_Time follows the new priority from the next advert.
        if self.state == State::Master {
            self.send(p, out);
            self.adver_timer = Some(now + self.advert_interval());
        }
    }

    fn timer(&mut self, now: Time, out: &mut Vec<Action>) {
        if self.master_down_timer.is_some_and(|t| now >= t) {
            let reason = if self.master.is_none() && self.stats.rcvd_pri_zero_packets > 0 {
                Reason::MasterResigned
            } else {
                Reason::MasterDown
            };
            self.become_master(now, reason, out);
            return;
        }
        if self.adver_timer.is_some_and(|t| now >= t) {
            let p = self.priority;
            self.send(p, out);
            self.adver_timer = Some(now + self.advert_interval());
        }
    }

    /// The receive checks of RFC 3768 §7.1 / RFC 5798 §7.1 that need the
    /// configuration; false when the advert must be dropped.
    fn accept(&mut self, ttl: u8, adv: &Advert) -> bool {
        if ttl != 255 {
            self.stats.ip_ttl_errors += 1;
            return false;
        }
        if adv.version != self.cfg.version {
            // Counted globally by the shell; an instance never sees one.
            return false;
        }
        if self.cfg.version == Version::V2 {
            if adv.interval_cs != self.cfg.advert_interval_cs {
                self.stats.adv_interval_errors += 1;
                return false;
            }
            if adv.auth != self.cfg.auth {
                self.stats.auth_failures += 1;
                return false;
            }
        }
        let mut theirs = adv.addresses.clone();
        let mut ours = self.cfg.vips.clone();
        theirs.sort();
        ours.sort();
        if theirs != ours {
            // Counted and logged but accepted, as keepalived does outside
            // strict mode: the peers disagree on configuration, not on who
            // is master.
            self.stats.address_list_errors += 1;
        }
        true
    }

    /// `advert` for an advert equal to the followed master's last one, in
    /// Backup: it resets Master_Down, unless this router now preempts a
    /// lower priority.
    fn heard(&mut self, now: Time) {
        if self.state != State::Backup || self.master.is_none() {
            return;
        }
        self.stats.rcvd_advertisements += 1;
        if !self.preempts(now) || self.master_priority >= self.priority {
            self.master_down_timer = Some(now + self.master_down_interval());
        }
    }

    fn advert(&mut self, now: Time, src: Ipv4Addr, ttl: u8, adv: &Advert, out: &mut Vec<Action>) {
        if adv.vrid != self.cfg.vrid || !self.accept(ttl, adv) {
            return;
        }
        self.stats.rcvd_advertisements += 1;
        if adv.priority == 0 {
            self.stats.rcvd_pri_zero_packets += 1;
        }
        match self.state {
            State::Initialize | State::Fault => {}
            State::Backup => {
                if adv.priority == 0 {
                    // The master resigned: take over after Skew_Time.
                    self.master = None;
                    self.master_down_timer = Some(now + self.skew_time());
                } else if !self.preempts(now) || adv.priority >= self.priority {
                    if self.cfg.version == Version::V3 {
                        self.master_adver_interval_cs = adv.interval_cs;
                    }
                    self.master = Some(src);
                    self.master_priority = adv.priority;
                    self.master_down_timer = Some(now + self.master_down_interval());
                }
                // else: a lower-priority master while preempting is not
                // followed; Master_Down fires and this router takes over.
            }
            State::Master => {
                let theirs_wins = adv.priority > self.priority
                    || adv.priority == self.priority && src > self.cfg.primary_ip;
                if adv.priority == 0 {
                    let p = self.priority;
                    self.send(p, out);
                    self.adver_timer = Some(now + self.advert_interval());
                } else if theirs_wins {
                    if self.cfg.version == Version::V3 {
                        self.master_adver_interval_cs = adv.interval_cs;
                    }
                    self.master = Some(src);
                    self.master_priority = adv.priority;
                    self.become_backup(now, Reason::Preempted, out);
                } else {
                    // A lower-priority router thinks it is master: answer
                    // at once rather than let two masters run for an
                    // interval (keepalived does the same).
                    let p = self.priority;
                    self.send(p, out);
                    self.adver_timer = Some(now + self.advert_interval());
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const ME: Ipv4Addr = Ipv4Addr::new(192, 0, 2, 10);
    const LOW: Ipv4Addr = Ipv4Addr::new(192, 0, 2, 5);
    const HIGH: Ipv4Addr = Ipv4Addr::new(192, 0, 2, 20);
    const VIP: Ipv4Addr = Ipv4Addr::new(203, 0, 113, 1);

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

    fn from(src: Ipv4Addr, advert: Advert) -> Event {
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
        a.addresses.push(Ipv4Addr::new(203, 0, 113, 2));
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
}
