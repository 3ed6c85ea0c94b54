//! The VRRP state machine of one virtual router, without I/O (RFC 3768 for
//! version 2, RFC 5798 for version 3).
//!
//! It is fed events with the current time and returns the actions to
//! perform; it never reads a clock or touches a socket. The shell around it
//! calls [`Instance::handle`] with each received advertisement, with
//! [`Event::Timer`] when [`Instance::next_deadline`] has passed, and with
//! startup, shutdown, fault and priority changes. Tests drive it with a
//! virtual clock.
use std::{net::IpAddr, time::Duration};

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
    pub primary_ip: IpAddr,
    pub vips: Vec<IpAddr>,
    /// v2 only.
    pub auth: Auth,
    /// As master, send one advert of ours before yielding to a higher
    /// priority (keepalived's higher_prio_send_advert): after a split
    /// brain heals, the new master then hears a lower priority and
    /// re-announces its VIPs, even if its advert crossed first.
    pub higher_prio_send_advert: bool,
    /// A member of a sync group: when Master_Down_Interval runs out it
    /// only says it wants to be master ([`Action::WantMaster`]); the group
    /// makes it master ([`Event::SyncMaster`]) once every member wants to
    /// (keepalived's vrrp_sync_group, which prefers backup to thrashing).
    pub sync_group: bool,
    /// Unicast: each peer's accepted TTL range (keepalived checks no TTL
    /// of a unicast advert unless the peer has bounds). None: multicast,
    /// where the RFC's 255 is required.
    pub unicast_ttl: Option<Vec<(IpAddr, u8, u8)>>,
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
    /// Asked to step down (`greha demote`): handed over to the router
    /// that took over, or became backup with priority 1.
    Demoted,
    /// Taken out of service (`greha shutdown`) until `greha resume`.
    Disabled,
    /// Another member of its sync group changed state.
    SyncGroup,
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
    /// Announce the VIPs again (gratuitous ARP): a master heard a lower
    /// priority, so some hosts may have the other router's MAC for them
    /// (keepalived's garp_lower_prio_repeat and _delay).
    ReannounceVips,
    Transition {
        from: State,
        to: State,
        reason: Reason,
    },
    /// Say how a handover goes.
    Handover(HandoverNote),
    /// A sync group member's Master_Down_Interval ran out: it stays
    /// Backup until the group sends [`Event::SyncMaster`].
    WantMaster,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum HandoverNote {
    /// Resigned; the VIPs stay until another router is master.
    Began,
    /// No router took over in time. A demote keeps the VIPs (the master
    /// stays master); a stop releases them anyway.
    AbandonedKeepingVips,
    AbandonedReleasingVips,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Event {
    Startup,
    /// Hand the VIPs over before stopping: as master, resign (priority 0)
    /// but keep the VIPs until another router is heard as master, then
    /// go to Initialize. Other states are left alone; `Shutdown` follows.
    HandOver,
    /// Step down and stay down until `Undemote`: priority 1, and as
    /// master a handover as for `HandOver`, ending in Backup.
    Demote,
    Undemote,
    /// Out of service until `Enable` (FRR's `vrrp N shutdown`): as master
    /// a handover first, then Initialize; no startup, fault or advert
    /// moves it meanwhile.
    Disable,
    /// Back in service: Fault if a tracker says so, else a start.
    Enable {
        fault: bool,
    },
    /// Another router announced one of this instance's VIPs (a gratuitous
    /// ARP from another MAC): during a handover, the clients now follow
    /// it, and the VIPs can go.
    Announced,
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
        src: IpAddr,
        ttl: u8,
        advert: Advert,
    },
    /// The time returned by `next_deadline` has come.
    Timer,
    /// The master this backup follows was heard again, unchanged: the fast
    /// path checked the advert and absorbed it. The same as that advert,
    /// without carrying its bytes around.
    Heard,
    /// Its sync group goes master: a Backup becomes Master.
    SyncMaster,
    /// Its sync group goes backup: a Master resigns (priority 0) and
    /// becomes Backup.
    SyncBackup,
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
    master: Option<IpAddr>,
    /// Its priority as last advertised.
    master_priority: u8,
    since: Time,
    stats: Stats,
    /// The priority tracking gives; `priority` is 1 instead while demoted.
    tracked_priority: u8,
    demoted: bool,
    disabled: bool,
    /// A master resigning without dropping its VIPs yet.
    handover: Option<Handover>,
    /// A sync group member whose Master_Down_Interval ran out, waiting for
    /// its group: why it would become master.
    wants_master: Option<Reason>,
}

/// Make before break: the VIPs stay with the resigning master until
/// another router is master and has announced them.
#[derive(Clone, Copy, Debug)]
struct Handover {
    /// Where the handover ends: Backup (demote) or Initialize (stop).
    then: State,
    /// No router took over by then (none heard, none announced): the
    /// handover is abandoned.
    give_up_at: Time,
    /// The VIPs go at this time: soon after the new master's gratuitous
    /// ARP was seen, or a while after its advert if none is.
    release_at: Option<Time>,
}

/// The longest a handover waits for another router to take over (within
/// the shipped unit's TimeoutStopSec of 20 s).
pub const HANDOVER_MAX: Duration = Duration::from_secs(15);

/// One centisecond.
const CS: Duration = Duration::from_millis(10);

/// How long a resigning master keeps its VIPs after it saw the new
/// master's gratuitous ARP: the clients received the same broadcast.
pub const HANDOVER_GRACE: Duration = Duration::from_millis(10);

/// How long it keeps them after hearing the new master's advert when no
/// announcement is seen (a peer that announces late, or not where this
/// router can see it).
pub const HANDOVER_ANNOUNCE_WAIT: Duration = Duration::from_secs(1);

impl Instance {
    pub fn new(cfg: Config) -> Self {
        Self {
            priority: cfg.priority,
            tracked_priority: cfg.priority,
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
            demoted: false,
            disabled: false,
            handover: None,
            wants_master: None,
        }
    }

    /// A sync group member that wants to be master (see
    /// [`Config::sync_group`]).
    pub fn wants_master(&self) -> bool {
        self.wants_master.is_some()
    }

    /// Out of service (`greha shutdown`) and not resumed.
    pub fn disabled(&self) -> bool {
        self.disabled
    }

    /// Takes a changed configuration in place (a reload that kept the
    /// VRID, interface, family and ownership): state, timers and
    /// statistics stay, so a master stays master and no backup notices. A
    /// new priority arrives as `Event::Priority` (it goes through
    /// tracking); the shell moves the VIPs.
    pub fn reconfigure(&mut self, cfg: Config) {
        // A backup keeps the interval it learned from the master (v3).
        if self.state != State::Backup || cfg.version == Version::V2 {
            self.master_adver_interval_cs = cfg.advert_interval_cs;
        }
        self.cfg = cfg;
    }

    /// Demoted (`greha demote`) and not resumed.
    pub fn demoted(&self) -> bool {
        self.demoted
    }

    /// A master resigning that still holds its VIPs.
    pub fn handing_over(&self) -> bool {
        self.handover.is_some()
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
    pub fn master(&self) -> Option<IpAddr> {
        match self.state {
            State::Master => Some(self.cfg.primary_ip),
            State::Backup => self.master,
            _ => None,
        }
    }

    /// The followed master's priority and interval (centiseconds), while
    /// Backup: what a steady advert repeats.
    pub fn followed(&self) -> Option<(IpAddr, u8, u16)> {
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
        let handover = self.handover.map(|h| h.release_at.unwrap_or(h.give_up_at));
        [self.adver_timer, self.master_down_timer, handover]
            .into_iter()
            .flatten()
            .min()
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
        self.wants_master = None;
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
        if self.disabled
            && matches!(
                event,
                Event::Startup | Event::Resume | Event::Fault(_) | Event::HandOver
            )
        {
            // Out of service: only Enable brings it back.
            return out;
        }
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
                // A handover already resigned.
                if self.state == State::Master && self.handover.take().is_none() {
                    self.send(0, &mut out);
                }
                self.adver_timer = None;
                self.master_down_timer = None;
                self.transition(now, State::Initialize, Reason::Shutdown, &mut out);
            }
            Event::Fault(true) => {
                if self.state == State::Master && self.handover.take().is_none() {
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
            Event::HandOver => match &mut self.handover {
                // A demote's handover ends in Initialize instead.
                Some(h) => h.then = State::Initialize,
                None if self.state == State::Master => {
                    self.begin_handover(now, State::Initialize, &mut out);
                }
                None => {}
            },
            Event::Demote => {
                if !self.demoted {
                    self.demoted = true;
                    if self.state == State::Master && self.handover.is_none() {
                        self.begin_handover(now, State::Backup, &mut out);
                    }
                    self.apply_priority(now, false, &mut out);
                }
            }
            Event::Disable => {
                if !self.disabled {
                    self.disabled = true;
                    match (&mut self.handover, self.state) {
                        (Some(h), _) => h.then = State::Initialize,
                        (None, State::Master) => {
                            self.begin_handover(now, State::Initialize, &mut out);
                        }
                        (None, _) => {
                            self.adver_timer = None;
                            self.master_down_timer = None;
                            self.transition(now, State::Initialize, Reason::Disabled, &mut out);
                        }
                    }
                }
            }
            Event::Enable { fault } => {
                if self.disabled {
                    self.disabled = false;
                    if self.handover.take().is_some() {
                        // Still master: stay, and say so at once.
                        let p = self.priority;
                        self.send(p, &mut out);
                        self.adver_timer = Some(now + self.advert_interval());
                    } else if self.state == State::Initialize {
                        if fault {
                            self.transition(now, State::Fault, Reason::Fault, &mut out);
                        } else {
                            self.start(now, Reason::Startup, &mut out);
                        }
                    }
                }
            }
            Event::Announced => {
                if let Some(h) = &mut self.handover {
                    let t = now + HANDOVER_GRACE;
                    h.release_at = Some(h.release_at.map_or(t, |r| r.min(t)));
                }
            }
            Event::Undemote => {
                if self.demoted {
                    self.demoted = false;
                    // Still master, handing over: stay, and say so at once.
                    let stays = self.handover.is_some_and(|h| h.then == State::Backup);
                    if stays {
                        self.handover = None;
                    }
                    self.apply_priority(now, stays, &mut out);
                }
            }
            Event::Timer => self.timer(now, &mut out),
            Event::Heard => self.heard(now),
            Event::SyncMaster => {
                if self.state == State::Backup {
                    let reason = self.wants_master.unwrap_or(Reason::SyncGroup);
                    self.become_master(now, reason, &mut out);
                }
            }
            Event::SyncBackup => {
                if self.state == State::Master && self.handover.is_none() {
                    // Resign, so the other router's member takes over
                    // after Skew_Time rather than Master_Down_Interval.
                    self.send(0, &mut out);
                    self.become_backup(now, Reason::SyncGroup, &mut out);
                }
            }
            Event::Advert { src, ttl, advert } => self.advert(now, src, ttl, &advert, &mut out),
        }
        out
    }

    fn set_priority(&mut self, now: Time, p: u8, out: &mut Vec<Action>) {
        // 255 belongs to the address owner alone; tracking cannot reach it
        // nor 0 (which means resigning).
        self.tracked_priority = if self.cfg.priority == 255 {
            255
        } else {
            p.clamp(1, 254)
        };
        self.apply_priority(now, false, out);
    }

    /// Takes the tracked priority, or 1 while demoted (the lowest a backup
    /// may have: it takes over only when no other router is left).
    fn apply_priority(&mut self, now: Time, advertise: bool, out: &mut Vec<Action>) {
        let p = if self.demoted {
            1
        } else {
            self.tracked_priority
        };
        if p == self.priority && !advertise {
            return;
        }
        self.priority = p;
        // Tell the backups now: a lower priority may let one preempt. In
        // Backup, Skew_Time follows the new priority from the next advert.
        // A handover advertises 0 until it ends.
        if self.state == State::Master && self.handover.is_none() {
            self.send(p, out);
            self.adver_timer = Some(now + self.advert_interval());
        }
    }

    /// Resigns as master (priority 0, repeated each interval in case one
    /// is lost) but keeps the VIPs until another router is master.
    fn begin_handover(&mut self, now: Time, then: State, out: &mut Vec<Action>) {
        self.send(0, out);
        self.adver_timer = Some(now + self.advert_interval());
        // A backup takes over Skew_Time (less than an interval) after a
        // priority 0 advert; three intervals cover two of them lost. A
        // stop must end before the service manager's patience does.
        let bound = (self.advert_interval() * 3).min(HANDOVER_MAX);
        self.handover = Some(Handover {
            then,
            give_up_at: now + bound,
            release_at: None,
        });
        out.push(Action::Handover(HandoverNote::Began));
    }

    fn handover_timer(&mut self, now: Time, h: Handover, out: &mut Vec<Action>) -> bool {
        // Once a new master is known, only the release is awaited.
        if now < h.release_at.unwrap_or(h.give_up_at) {
            return false;
        }
        let released = h.release_at.is_some();
        self.handover = None;
        if !released {
            if h.then == State::Backup {
                out.push(Action::Handover(HandoverNote::AbandonedKeepingVips));
                // Nobody to hand over to: stay master, and say so.
                let p = self.priority;
                self.send(p, out);
                self.adver_timer = Some(now + self.advert_interval());
                return true;
            }
            out.push(Action::Handover(HandoverNote::AbandonedReleasingVips));
        }
        self.adver_timer = None;
        if h.then == State::Backup {
            self.become_backup(now, Reason::Demoted, out);
        } else {
            let reason = if self.disabled {
                Reason::Disabled
            } else {
                Reason::Shutdown
            };
            self.transition(now, State::Initialize, reason, out);
        }
        true
    }

    fn timer(&mut self, now: Time, out: &mut Vec<Action>) {
        if let Some(h) = self.handover
            && self.handover_timer(now, h, out)
        {
            return;
        }
        if self.master_down_timer.is_some_and(|t| now >= t) {
            let reason = if self.master.is_none() && self.stats.rcvd_pri_zero_packets > 0 {
                Reason::MasterResigned
            } else {
                Reason::MasterDown
            };
            if self.cfg.sync_group {
                // Waits for the group, still Backup: a master heard
                // meanwhile takes the wish back.
                self.master_down_timer = Some(now + self.master_down_interval());
                if self.wants_master.is_none() {
                    self.wants_master = Some(reason);
                    out.push(Action::WantMaster);
                }
                return;
            }
            self.become_master(now, reason, out);
            return;
        }
        if self.adver_timer.is_some_and(|t| now >= t) {
            let p = if self.handover.is_some() {
                0
            } else {
                self.priority
            };
            self.send(p, out);
            self.adver_timer = Some(now + self.advert_interval());
        }
    }

    /// The receive checks of RFC 3768 §7.1 / RFC 5798 §7.1 that need the
    /// configuration; false when the advert must be dropped.
    fn accept(&mut self, src: IpAddr, ttl: u8, adv: &Advert) -> bool {
        let ttl_ok = match &self.cfg.unicast_ttl {
            None => ttl == 255,
            Some(peers) => peers
                .iter()
                .find(|(p, _, _)| *p == src)
                .is_none_or(|(_, min, max)| (*min..=*max).contains(&ttl)),
        };
        if !ttl_ok {
            self.stats.ip_ttl_errors += 1;
            return false;
        }
        if adv.version != self.cfg.version {
            // Counted globally by the shell; an instance never sees one.
            return false;
        }
        if adv.interval_cs == 0 {
            // A Max Advert Interval of 0 would make Master_Down_Interval
            // about Skew_Time: a flood of them flipped the state thousands
            // of times a second. No router sends it; it is an error.
            self.stats.adv_interval_errors += 1;
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
            self.wants_master = None;
        }
    }

    fn advert(&mut self, now: Time, src: IpAddr, ttl: u8, adv: &Advert, out: &mut Vec<Action>) {
        if adv.vrid != self.cfg.vrid || !self.accept(src, ttl, adv) {
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
                    self.wants_master = None;
                }
                // else: a lower-priority master while preempting is not
                // followed; Master_Down fires and this router takes over.
            }
            State::Master if self.handover.is_some() => {
                // Another router advertising is master now (backups are
                // silent): release the VIPs once its announcement is out.
                if adv.priority > 0 {
                    if self.cfg.version == Version::V3 {
                        self.master_adver_interval_cs = adv.interval_cs;
                    }
                    self.master = Some(src);
                    self.master_priority = adv.priority;
                    if let Some(h) = &mut self.handover {
                        let t = now + HANDOVER_ANNOUNCE_WAIT;
                        h.release_at = Some(h.release_at.map_or(t, |r| r.min(t)));
                    }
                }
            }
            State::Master => {
                let theirs_wins = adv.priority > self.priority
                    || adv.priority == self.priority && src > self.cfg.primary_ip;
                if adv.priority == 0 {
                    let p = self.priority;
                    self.send(p, out);
                    self.adver_timer = Some(now + self.advert_interval());
                } else if theirs_wins {
                    if self.cfg.higher_prio_send_advert {
                        let p = self.priority;
                        self.send(p, out);
                    }
                    if self.cfg.version == Version::V3 {
                        self.master_adver_interval_cs = adv.interval_cs;
                    }
                    self.master = Some(src);
                    self.master_priority = adv.priority;
                    self.become_backup(now, Reason::Preempted, out);
                } else {
                    // A lower-priority router thinks it is master: answer
                    // at once rather than let two masters run for an
                    // interval (keepalived does the same), and take the
                    // VIPs' MAC back from whoever it convinced.
                    let p = self.priority;
                    self.send(p, out);
                    self.adver_timer = Some(now + self.advert_interval());
                    out.push(Action::ReannounceVips);
                }
            }
        }
    }
}

#[cfg(test)]
#[path = "engine_tests.rs"]
mod tests;
