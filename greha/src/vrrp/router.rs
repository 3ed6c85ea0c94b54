//! Every decision between the sockets and the engines, without I/O: which
//! instance a received packet is for (or which counter it moves), what the
//! trackers make of a check or a link event, whether a restart resumes as
//! master, and whether an advert the fast path absorbed is the followed
//! master's. The shell feeds these functions what it read and carries out
//! what they return; the tables below drive them as the shell would.
use std::{collections::HashMap, net::IpAddr, time::Duration};

use greha_common::{AdvertSummary, VrrpCtl, VrrpSeen, vrrp_steady};

use super::{
    def::InstanceDef,
    engine::Event,
    packet::{Advert, ChecksumForm, ParseError, Version},
    status::GlobalStats,
};

/// What routing needs of an instance.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RouteKey {
    /// The receiving socket (one per interface).
    pub socket: usize,
    pub vrid: u8,
    pub version: Version,
    /// When not empty, only these sources are accepted.
    pub unicast_peers: Vec<IpAddr>,
}

/// A packet as a VRRP socket received it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Packet<'a> {
    pub socket: usize,
    pub src: IpAddr,
    pub dst: IpAddr,
    pub ttl: u8,
    pub payload: &'a [u8],
}

/// A counter of packets no instance owns.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum GlobalCounter {
    Checksum,
    Version,
    Vrid,
    UnknownUnicastSource,
    /// An IPv6 advert to ff02::12 from an address that is not link-local
    /// (RFC 5798 §5.1.2.1: a router sends from its link-local address).
    NotLinkLocalSource,
}

/// A counter of an instance that the engine keeps but never acts on.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum InstanceCounter {
    InvalidType,
    Length,
    AuthType,
}

/// Where a received packet goes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Delivery {
    /// Instance `.0`'s engine gets the advert.
    Engine(usize, Event),
    Instance(usize, InstanceCounter),
    Global(GlobalCounter),
}

/// The outcome of one packet: where it goes, and the v3 checksum form it
/// verified with (counted globally).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Routed {
    pub to: Delivery,
    pub form: Option<ChecksumForm>,
}

/// Routes a received packet: parse it, find the instance by socket and
/// VRID, apply the version and unicast-peer filters.
pub fn route(instances: &[RouteKey], p: &Packet) -> Routed {
    let (advert, form) = match Advert::parse(p.payload, p.src, p.dst) {
        Ok(ok) => ok,
        Err(e) => {
            let vrid = p.payload.get(1).copied();
            let owner = instances
                .iter()
                .position(|i| i.socket == p.socket && Some(i.vrid) == vrid);
            let to = match (e, owner) {
                (ParseError::Checksum, _) => Delivery::Global(GlobalCounter::Checksum),
                (ParseError::Version(_), _) => Delivery::Global(GlobalCounter::Version),
                (ParseError::Type(_), Some(i)) => {
                    Delivery::Instance(i, InstanceCounter::InvalidType)
                }
                (ParseError::Length, Some(i)) => Delivery::Instance(i, InstanceCounter::Length),
                (ParseError::AuthType(_), Some(i)) => {
                    Delivery::Instance(i, InstanceCounter::AuthType)
                }
                (_, None) => Delivery::Global(GlobalCounter::Vrid),
            };
            return Routed { to, form: None };
        }
    };
    let form = (advert.version == Version::V3).then_some(form);
    if let (IpAddr::V6(src), IpAddr::V6(dst)) = (p.src, p.dst)
        && dst.is_multicast()
        && !src.is_unicast_link_local()
    {
        return Routed {
            to: Delivery::Global(GlobalCounter::NotLinkLocalSource),
            form,
        };
    }
    let Some(i) = instances
        .iter()
        .position(|i| i.socket == p.socket && i.vrid == advert.vrid)
    else {
        return Routed {
            to: Delivery::Global(GlobalCounter::Vrid),
            form,
        };
    };
    let k = &instances[i];
    let to = if k.version != advert.version {
        Delivery::Global(GlobalCounter::Version)
    } else if !k.unicast_peers.is_empty() && !k.unicast_peers.contains(&p.src) {
        Delivery::Global(GlobalCounter::UnknownUnicastSource)
    } else {
        Delivery::Engine(
            i,
            Event::Advert {
                src: p.src,
                ttl: p.ttl,
                advert,
            },
        )
    };
    Routed { to, form }
}

impl GlobalStats {
    pub fn count(&mut self, c: GlobalCounter) {
        match c {
            GlobalCounter::Checksum => self.checksum_errors += 1,
            GlobalCounter::Version => self.version_errors += 1,
            GlobalCounter::Vrid => self.vrid_errors += 1,
            GlobalCounter::UnknownUnicastSource => self.unknown_unicast_sources += 1,
            GlobalCounter::NotLinkLocalSource => self.not_link_local_sources += 1,
        }
    }

    pub fn count_form(&mut self, form: ChecksumForm) {
        match form {
            ChecksumForm::PseudoHeader => self.rcvd_checksum_pseudo_header += 1,
            ChecksumForm::VrrpOnly => self.rcvd_checksum_vrrp_only += 1,
        }
    }
}

/// What a tracker says now, and how it got there.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TrackerState {
    /// keepalived's rule: a positive weight is added while up, a negative
    /// one while down; none (or 0, keepalived's default) means down is
    /// Fault.
    pub weight: Option<i32>,
    pub up: bool,
    /// `weight N reverse`: up counts as down, down as up.
    pub reverse: bool,
    /// A tracked file's number (None for the other trackers).
    pub value: Option<i64>,
    successes: u32,
    failures: u32,
}

impl TrackerState {
    pub fn new(weight: Option<i32>, up: bool) -> Self {
        Self {
            weight,
            up,
            reverse: false,
            value: None,
            successes: 0,
            failures: 0,
        }
    }

    /// The same, `weight N reverse` if `reverse`.
    pub fn reversed(self, reverse: bool) -> Self {
        Self { reverse, ..self }
    }

    /// A tracked file with this weight (negated for `reverse`) holding
    /// `value`.
    pub fn file(weight: i32, value: i64) -> Self {
        Self {
            value: Some(value),
            ..Self::new(Some(weight), true)
        }
    }

    /// A tracked file's new number. True when that is news.
    pub fn file_value(&mut self, value: i64) -> bool {
        let changed = self.value != Some(value);
        self.value = Some(value);
        changed
    }

    /// A tracked file's say: Fault, or what it adds to the priority
    /// (keepalived's rules: weight 0 makes any number but 0 a fault; else
    /// number times weight, a fault below -253, at most 253 either way).
    fn file_effect(&self) -> Option<Result<i32, ()>> {
        let v = self.value?;
        let w = i64::from(self.weight.unwrap_or(1));
        Some(if w == 0 {
            if v == 0 { Ok(0) } else { Err(()) }
        } else {
            match v.saturating_mul(w) {
                r if r < -253 => Err(()),
                r => Ok(r.min(253) as i32),
            }
        })
    }

    /// A check script's result: `rise` successes in a row bring a down
    /// tracker up, `fall` failures in a row take an up one down. True when
    /// it flipped.
    pub fn script_result(&mut self, ok: bool, rise: u32, fall: u32) -> bool {
        if ok {
            self.successes += 1;
            self.failures = 0;
        } else {
            self.failures += 1;
            self.successes = 0;
        }
        let flip = if self.up {
            self.failures >= fall
        } else {
            self.successes >= rise
        };
        if flip {
            self.up = !self.up;
        }
        flip
    }

    /// A tracked interface went up or down. True when that is news.
    pub fn link(&mut self, up: bool) -> bool {
        let changed = self.up != up;
        self.up = up;
        changed
    }
}

/// Fault, and the priority the trackers give a configured `priority`: any
/// weightless tracker down is Fault; the weights move a non-owner's
/// priority within 1 to 254 (the owner's 255 never moves).
pub fn tracked(priority: u8, trackers: &[TrackerState]) -> (bool, u8) {
    let up = |t: &TrackerState| t.up != t.reverse;
    let fault = trackers.iter().any(|t| {
        matches!(t.weight, None | Some(0)) && t.value.is_none() && !up(t)
            || t.file_effect() == Some(Err(()))
    });
    if priority == 255 {
        return (fault, 255);
    }
    let delta: i32 = trackers
        .iter()
        .filter_map(|t| match (t.file_effect(), t.weight) {
            (Some(effect), _) => effect.ok(),
            (None, Some(w)) if w > 0 && up(t) => Some(w),
            (None, Some(w)) if w < 0 && !up(t) => Some(w),
            _ => None,
        })
        .sum();
    (fault, (i32::from(priority) + delta).clamp(1, 254) as u8)
}

/// The events that tell an engine at `priority`, `faulted` or not, what
/// the trackers now say: the priority first (a resignation then carries
/// the new one), then the fault.
pub fn retrack(priority: u8, faulted: bool, now: (bool, u8)) -> Vec<Event> {
    let (fault, p) = now;
    let mut out = Vec::new();
    if p != priority {
        out.push(Event::Priority(p));
    }
    if fault != faulted {
        out.push(Event::Fault(fault));
    }
    out
}

/// How an instance starts: its priority from the trackers, then Fault if
/// a weightless tracker is down (it must not start as a backup that could
/// become master), else resuming as master after a restart, else Startup.
pub fn start_events(tracked: (bool, u8), resume: bool) -> Vec<Event> {
    let (fault, priority) = tracked;
    let first = if fault {
        Event::Fault(true)
    } else if resume {
        Event::Resume
    } else {
        Event::Startup
    };
    vec![Event::Priority(priority), first]
}

/// Whether an instance that was master when a restart kept the datapath
/// (`saved_at_ms`) resumes as master at `now_ms`: only within three of its
/// advertisement intervals, well inside the backups' Master_Down_Interval;
/// later, a backup may have taken over, and it starts as a backup.
pub fn resumes(saved_at_ms: Option<u128>, now_ms: u128, advert_interval_cs: u16) -> bool {
    saved_at_ms
        .is_some_and(|at| at <= now_ms && now_ms - at < u128::from(advert_interval_cs) * 10 * 3)
}

/// The engine time of a Heard event for the fast path's record `seen`:
/// when the record is newer than the last one given (`fed_ns`), from this
/// run (`epoch_ns`, CLOCK_MONOTONIC at the engine's epoch), and steady for
/// the instance as the control map now describes it (the same rule the
/// program absorbed it by). None otherwise.
pub fn absorbed(ctl: &VrrpCtl, seen: &VrrpSeen, fed_ns: u64, epoch_ns: u64) -> Option<Duration> {
    let advert = AdvertSummary {
        src: seen.src,
        priority: seen.priority,
        _pad: [0],
        interval_cs: seen.interval_cs,
        // The program records only adverts with the instance's count.
        count: ctl.vip_count,
    };
    (seen.last_ns > fed_ns && seen.last_ns >= epoch_ns && vrrp_steady(ctl, &advert))
        .then(|| Duration::from_nanos(seen.last_ns - epoch_ns))
}

/// Whether a reload's change from `old` to `new` (same name) needs the
/// instance restarted: a different virtual router (VRID, interface,
/// family), other sockets (unicast peers or source), the fast path turned
/// on or off, or ownership (priority 255) gained or lost. Anything else
/// (priority, VIPs, timers, trackers, scripts, authentication) is taken in
/// place, so a master stays master.
pub fn restarts(old: &InstanceDef, new: &InstanceDef) -> bool {
    old.interface != new.interface
        || old.vrid != new.vrid
        || old.version != new.version
        || old.unicast_peers != new.unicast_peers
        || old.unicast_src != new.unicast_src
        || old.unicast_ttl != new.unicast_ttl
        || old.fastpath != new.fastpath
        || (old.priority == 255) != (new.priority == 255)
}

/// A VIP where it lives: (interface index, address).
pub type VipAt = (u32, IpAddr);

/// A master's VIPs, routes or rules after an in-place change: which of
/// those it `added` go, and which of `want` are new.
pub fn changes<T: Clone + PartialEq>(added: &[T], want: &[T]) -> (Vec<T>, Vec<T>) {
    let gone = added
        .iter()
        .filter(|a| !want.contains(a))
        .cloned()
        .collect();
    let new = want
        .iter()
        .filter(|w| !added.contains(w))
        .cloned()
        .collect();
    (gone, new)
}

/// keepalived's interface_up_down_delays: an interface's change of state
/// counts only once it has lasted its delay; back to the state in force
/// before then, nothing happened.
#[derive(Debug, Default)]
pub struct LinkDebounce {
    /// ifindex -> (the state waiting, when it counts).
    pending: HashMap<u32, (bool, Duration)>,
}

impl LinkDebounce {
    /// A link event at `now` for an interface whose trackers say
    /// `in_force`: the state to apply now, if any.
    pub fn event(
        &mut self,
        ifindex: u32,
        up: bool,
        in_force: bool,
        delay: Duration,
        now: Duration,
    ) -> Option<bool> {
        if up == in_force {
            self.pending.remove(&ifindex);
            return None;
        }
        if delay.is_zero() {
            self.pending.remove(&ifindex);
            return Some(up);
        }
        let due = now + delay;
        let e = self.pending.entry(ifindex).or_insert((up, due));
        if e.0 != up {
            *e = (up, due);
        }
        None
    }

    /// The changes that have lasted their delay by `now`.
    pub fn due(&mut self, now: Duration) -> Vec<(u32, bool)> {
        let due: Vec<(u32, bool)> = self
            .pending
            .iter()
            .filter(|(_, (_, at))| *at <= now)
            .map(|(i, (up, _))| (*i, *up))
            .collect();
        for (i, _) in &due {
            self.pending.remove(i);
        }
        due
    }

    /// When the next waiting change counts.
    pub fn next(&self) -> Option<Duration> {
        self.pending.values().map(|(_, at)| *at).min()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::vrrp::packet::Auth;
    use greha_common::{STEADY_BASE_CTL, STEADY_CASES};
    use std::net::Ipv4Addr;

    const A: IpAddr = IpAddr::V4(Ipv4Addr::new(192, 0, 2, 1));
    const B: IpAddr = IpAddr::V4(Ipv4Addr::new(192, 0, 2, 2));
    const VIP: IpAddr = IpAddr::V4(Ipv4Addr::new(203, 0, 113, 1));
    const MCAST: IpAddr = IpAddr::V4(Ipv4Addr::new(224, 0, 0, 18));

    fn advert(version: Version, vrid: u8) -> Advert {
        Advert {
            version,
            vrid,
            priority: 100,
            interval_cs: 100,
            addresses: vec![VIP],
            auth: Auth::None,
        }
    }

    fn key(socket: usize, vrid: u8, version: Version, peers: &[IpAddr]) -> RouteKey {
        RouteKey {
            socket,
            vrid,
            version,
            unicast_peers: peers.to_vec(),
        }
    }

    /// (what, receiving socket, payload, where it goes, checksum form).
    type RouteRow = (&'static str, usize, Vec<u8>, Delivery, Option<ChecksumForm>);

    /// Received packets and where each goes, as the shell sees them.
    #[test]
    fn routes_by_socket_vrid_version_and_peer() {
        let instances = [
            key(0, 51, Version::V3, &[]),
            key(1, 51, Version::V2, &[]),
            key(0, 52, Version::V3, &[B]),
        ];
        let v3 = |vrid| {
            advert(Version::V3, vrid)
                .write(ChecksumForm::PseudoHeader, A, MCAST)
                .to_vec()
        };
        let v2 = |vrid| {
            advert(Version::V2, vrid)
                .write(ChecksumForm::PseudoHeader, A, MCAST)
                .to_vec()
        };
        let mut bad_sum = v3(51);
        bad_sum[7] ^= 1;
        let mut bad_type = v3(51);
        bad_type[0] = 0x32;
        let mut bad_type_unknown = v3(60);
        bad_type_unknown[0] = 0x32;
        let mut bad_len = v3(51);
        bad_len[3] = 3;
        let rfc9568 = advert(Version::V3, 51)
            .write(ChecksumForm::VrrpOnly, A, MCAST)
            .to_vec();
        let engine = |i| {
            Delivery::Engine(
                i,
                Event::Advert {
                    src: A,
                    ttl: 255,
                    advert: advert(Version::V3, 51),
                },
            )
        };
        let ka = Some(ChecksumForm::PseudoHeader);
        let table: Vec<RouteRow> = vec![
            ("v3 for 51 on socket 0", 0, v3(51), engine(0), ka),
            (
                "RFC 9568's checksum form",
                0,
                rfc9568,
                engine(0),
                Some(ChecksumForm::VrrpOnly),
            ),
            (
                "v2 for 51 on socket 1",
                1,
                v2(51),
                Delivery::Engine(
                    1,
                    Event::Advert {
                        src: A,
                        ttl: 255,
                        advert: advert(Version::V2, 51),
                    },
                ),
                None,
            ),
            (
                "v2 to the v3 instance",
                0,
                v2(51),
                Delivery::Global(GlobalCounter::Version),
                None,
            ),
            (
                "v3 to the v2 instance",
                1,
                v3(51),
                Delivery::Global(GlobalCounter::Version),
                ka,
            ),
            (
                "unknown VRID",
                0,
                v3(60),
                Delivery::Global(GlobalCounter::Vrid),
                ka,
            ),
            (
                "VRID of another socket",
                1,
                v3(52),
                Delivery::Global(GlobalCounter::Vrid),
                ka,
            ),
            (
                "not from a unicast peer",
                0,
                v3(52),
                Delivery::Global(GlobalCounter::UnknownUnicastSource),
                ka,
            ),
            (
                "bad checksum",
                0,
                bad_sum,
                Delivery::Global(GlobalCounter::Checksum),
                None,
            ),
            (
                "type 3, known VRID",
                0,
                bad_type,
                Delivery::Instance(0, InstanceCounter::InvalidType),
                None,
            ),
            (
                "type 3, unknown VRID",
                0,
                bad_type_unknown,
                Delivery::Global(GlobalCounter::Vrid),
                None,
            ),
            (
                "length against count",
                0,
                bad_len,
                Delivery::Instance(0, InstanceCounter::Length),
                None,
            ),
        ];
        for (what, socket, payload, to, form) in table {
            let got = route(
                &instances,
                &Packet {
                    socket,
                    src: A,
                    dst: MCAST,
                    ttl: 255,
                    payload: &payload,
                },
            );
            assert_eq!(got, Routed { to, form }, "{what}");
        }
        // From the peer, the unicast instance takes it.
        let p = advert(Version::V3, 52)
            .write(ChecksumForm::PseudoHeader, B, A)
            .to_vec();
        let got = route(
            &instances,
            &Packet {
                socket: 0,
                src: B,
                dst: A,
                ttl: 255,
                payload: &p,
            },
        );
        assert!(matches!(got.to, Delivery::Engine(2, _)), "{got:?}");
    }

    /// IPv6 multicast adverts come from link-local addresses; a unicast
    /// peer may use a global one.
    #[test]
    fn ipv6_multicast_adverts_come_from_link_local_addresses() {
        let ll: IpAddr = "fe80::2".parse().unwrap();
        let global: IpAddr = "2001:db8::2".parse().unwrap();
        let mcast6: IpAddr = crate::vrrp::packet::MULTICAST6.into();
        let me: IpAddr = "2001:db8::1".parse().unwrap();
        let instances = [
            key(0, 51, Version::V3, &[]),
            key(1, 51, Version::V3, &[global]),
        ];
        let advert6 = Advert {
            addresses: vec!["2001:db8::10".parse().unwrap()],
            ..advert(Version::V3, 51)
        };
        for (what, socket, src, dst, engine) in [
            ("link-local to ff02::12", 0, ll, mcast6, true),
            ("global to ff02::12", 0, global, mcast6, false),
            ("a global unicast peer", 1, global, me, true),
        ] {
            let payload = advert6.write(ChecksumForm::PseudoHeader, src, dst).to_vec();
            let got = route(
                &instances,
                &Packet {
                    socket,
                    src,
                    dst,
                    ttl: 255,
                    payload: &payload,
                },
            );
            let want = if engine {
                matches!(got.to, Delivery::Engine(_, _))
            } else {
                got.to == Delivery::Global(GlobalCounter::NotLinkLocalSource)
            };
            assert!(want, "{what}: {got:?}");
        }
    }

    #[test]
    fn scripts_rise_and_fall() {
        // (ok, expected up after it, flipped)
        let script = [
            (false, true, false),
            (false, false, true),
            (true, false, false),
            (false, false, false),
            (true, false, false),
            (true, false, false),
            (true, true, true),
            (false, true, false),
            (true, true, false),
            (false, true, false),
            (false, false, true),
        ];
        let mut t = TrackerState::new(Some(-10), true);
        for (n, (ok, up, flipped)) in script.into_iter().enumerate() {
            assert_eq!(t.script_result(ok, 3, 2), flipped, "step {n}");
            assert_eq!(t.up, up, "step {n}");
        }
    }

    #[test]
    fn links_flip_only_on_change() {
        let mut t = TrackerState::new(None, true);
        assert!(!t.link(true));
        assert!(t.link(false));
        assert!(!t.link(false));
        assert!(t.link(true));
    }

    #[test]
    fn weights_and_faults_as_keepalived() {
        let t = |w, up| TrackerState::new(w, up);
        for (what, priority, trackers, want) in [
            ("nothing tracked", 100, vec![], (false, 100)),
            (
                "positive weight, up",
                100,
                vec![t(Some(20), true)],
                (false, 120),
            ),
            (
                "positive weight, down",
                100,
                vec![t(Some(20), false)],
                (false, 100),
            ),
            (
                "negative weight, down",
                100,
                vec![t(Some(-60), false)],
                (false, 40),
            ),
            (
                "negative weight, up",
                100,
                vec![t(Some(-60), true)],
                (false, 100),
            ),
            (
                "weights add",
                100,
                vec![t(Some(20), true), t(Some(-30), false)],
                (false, 90),
            ),
            (
                "never above 254",
                250,
                vec![t(Some(20), true)],
                (false, 254),
            ),
            ("never below 1", 10, vec![t(Some(-60), false)], (false, 1)),
            (
                "the owner stays 255",
                255,
                vec![t(Some(-60), false)],
                (false, 255),
            ),
            (
                "weightless down: fault",
                100,
                vec![t(None, false), t(Some(5), true)],
                (true, 105),
            ),
            ("weightless up", 100, vec![t(None, true)], (false, 100)),
            // keepalived's default weight is 0: the same as none.
            (
                "weight 0, down: fault",
                100,
                vec![t(Some(0), false)],
                (true, 100),
            ),
            // `weight N reverse`: up counts as down, down as up.
            (
                "reverse, positive weight, down",
                100,
                vec![t(Some(20), false).reversed(true)],
                (false, 120),
            ),
            (
                "reverse, negative weight, up",
                100,
                vec![t(Some(-60), true).reversed(true)],
                (false, 40),
            ),
            (
                "weight 0 reverse, up: fault",
                100,
                vec![t(Some(0), true).reversed(true)],
                (true, 100),
            ),
            (
                "weightless reverse, down",
                100,
                vec![t(None, false).reversed(true)],
                (false, 100),
            ),
        ] {
            assert_eq!(tracked(priority, &trackers), want, "{what}");
        }
    }

    #[test]
    fn retrack_and_start_events() {
        assert_eq!(retrack(100, false, (false, 100)), vec![]);
        assert_eq!(retrack(100, false, (false, 40)), vec![Event::Priority(40)]);
        assert_eq!(
            retrack(100, false, (true, 40)),
            vec![Event::Priority(40), Event::Fault(true)]
        );
        assert_eq!(retrack(40, true, (false, 40)), vec![Event::Fault(false)]);
        assert_eq!(
            start_events((false, 100), false),
            vec![Event::Priority(100), Event::Startup]
        );
        assert_eq!(
            start_events((false, 100), true),
            vec![Event::Priority(100), Event::Resume]
        );
        // Fault wins over resuming: a master whose tracked link is down
        // must not come back as master.
        assert_eq!(
            start_events((true, 100), true),
            vec![Event::Priority(100), Event::Fault(true)]
        );
    }

    #[test]
    fn resume_window() {
        // 1 s adverts: within 3 s of the save.
        for (what, saved, now, want) in [
            ("nothing saved", None, 10_000, false),
            ("just saved", Some(10_000), 10_000, true),
            ("2.999 s later", Some(10_000), 12_999, true),
            ("3 s later", Some(10_000), 13_000, false),
            ("saved in the future", Some(20_000), 10_000, false),
        ] {
            assert_eq!(resumes(saved, now, 100), want, "{what}");
        }
        assert!(!resumes(Some(0), 300, 10), "10 ms adverts: 30 ms");
    }

    fn seen_of(a: &AdvertSummary, last_ns: u64) -> VrrpSeen {
        VrrpSeen {
            last_ns,
            src: a.src,
            priority: a.priority,
            _pad: [0],
            interval_cs: a.interval_cs,
            _pad2: [0; 4],
        }
    }

    /// The daemon gives the engine a recorded advert by the same table the
    /// eBPF program is held to (the address count is the instance's: the
    /// program records only such adverts).
    #[test]
    fn absorbed_follows_the_steady_table() {
        for c in STEADY_CASES
            .iter()
            .filter(|c| c.advert.count == c.ctl.vip_count)
        {
            let got = absorbed(&c.ctl, &seen_of(&c.advert, 5_000), 0, 1_000);
            assert_eq!(got.is_some(), c.steady, "{}", c.what);
        }
    }

    #[test]
    fn absorbed_only_newer_records_of_this_run() {
        let a = greha_common::STEADY_BASE_ADVERT;
        let ctl = STEADY_BASE_CTL;
        assert_eq!(
            absorbed(&ctl, &seen_of(&a, 5_000), 0, 1_000),
            Some(Duration::from_nanos(4_000))
        );
        assert_eq!(
            absorbed(&ctl, &seen_of(&a, 5_000), 5_000, 1_000),
            None,
            "given already"
        );
        assert_eq!(
            absorbed(&ctl, &seen_of(&a, 500), 0, 1_000),
            None,
            "an earlier run's"
        );
        assert_eq!(absorbed(&ctl, &VrrpSeen::default(), 0, 0), None, "empty");
    }

    fn def(spec: &str) -> InstanceDef {
        let words: Vec<String> = spec.split_whitespace().map(String::from).collect();
        InstanceDef::parse(&words).expect("valid spec")
    }

    /// What a reload may change in place, and what restarts the instance.
    #[test]
    fn a_reload_restarts_only_another_virtual_router() {
        const OLD: &str =
            "VI_1 interface eth0 vrid 51 priority 150 version 3 advert-int 0.1 vip 203.0.113.10/24";
        let table = [
            (
                "VI_1 interface eth0 vrid 51 priority 160 version 3 advert-int 0.1 vip 203.0.113.10/24",
                false,
            ),
            (
                "VI_1 interface eth0 vrid 51 priority 150 version 3 advert-int 0.1 vip 203.0.113.10/24 vip 203.0.113.11/24",
                false,
            ),
            (
                "VI_1 interface eth0 vrid 51 priority 150 version 3 advert-int 1 nopreempt vip 203.0.113.10/24",
                false,
            ),
            (
                "VI_1 interface eth0 vrid 51 priority 150 version 3 advert-int 0.1 vip 203.0.113.10/24 track-interface eth1",
                false,
            ),
            (
                "VI_1 interface eth0 vrid 52 priority 150 version 3 advert-int 0.1 vip 203.0.113.10/24",
                true,
            ),
            (
                "VI_1 interface eth1 vrid 51 priority 150 version 3 advert-int 0.1 vip 203.0.113.10/24",
                true,
            ),
            (
                "VI_1 interface eth0 vrid 51 priority 150 version 2 advert-int 1 vip 203.0.113.10/24",
                true,
            ),
            (
                "VI_1 interface eth0 vrid 51 priority 255 version 3 advert-int 0.1 vip 203.0.113.10/24",
                true,
            ),
            (
                "VI_1 interface eth0 vrid 51 priority 150 version 3 advert-int 0.1 no-fastpath vip 203.0.113.10/24",
                true,
            ),
            (
                "VI_1 interface eth0 vrid 51 priority 150 version 3 advert-int 0.1 unicast-peer 198.51.100.2 vip 203.0.113.10/24",
                true,
            ),
        ];
        for (new, restart) in table {
            assert_eq!(restarts(&def(OLD), &def(new)), restart, "{new}");
        }
    }

    /// A flap shorter than the delay is nothing; a change that lasts
    /// counts when its delay is over; no delay, at once.
    #[test]
    fn links_debounce_as_keepalived() {
        let ms = Duration::from_millis;
        let mut d = LinkDebounce::default();
        assert_eq!(d.event(2, false, true, ms(500), ms(0)), None);
        assert_eq!(d.next(), Some(ms(500)));
        assert_eq!(d.event(2, true, true, ms(500), ms(300)), None);
        assert_eq!((d.next(), d.due(ms(600))), (None, vec![]));
        assert_eq!(d.event(2, false, true, ms(500), ms(1000)), None);
        // The same state again does not restart the wait.
        assert_eq!(d.event(2, false, true, ms(500), ms(1200)), None);
        assert_eq!(d.due(ms(1499)), vec![]);
        assert_eq!(d.due(ms(1500)), vec![(2, false)]);
        assert_eq!(d.event(3, false, true, Duration::ZERO, ms(0)), Some(false));
    }

    #[test]
    fn changes_in_place() {
        let a = |n: u8| (2, IpAddr::from([203, 0, 113, n]));
        let (gone, new) = changes(
            &[a(10), a(11)],
            &[a(11), a(12), (3, IpAddr::from([203, 0, 113, 10]))],
        );
        assert_eq!(gone, vec![a(10)]);
        assert_eq!(new, vec![a(12), (3, IpAddr::from([203, 0, 113, 10]))]);
    }

    /// keepalived's track_file rules, as keepalived.conf(5) states them.
    #[test]
    fn tracked_files_move_the_priority_or_fault() {
        // (weight, value, owner?) -> (fault, priority from 100 or 255)
        let table = [
            (1, 0, false, (false, 100)),
            (1, 20, false, (false, 120)),
            (-10, 3, false, (false, 70)),
            (1, 200, false, (false, 254)),
            (1, -99, false, (false, 1)),
            (1, -253, false, (false, 1)),
            (1, -254, false, (true, 1)),
            (10, -30, false, (true, 1)),
            (0, 0, false, (false, 100)),
            (0, 7, false, (true, 100)),
            (0, 7, true, (true, 255)),
            (5, 5, true, (false, 255)),
            (1, i64::MIN, false, (true, 1)),
            (-1, i64::MIN, false, (false, 254)),
        ];
        for (w, v, owner, want) in table {
            let prio = if owner { 255 } else { 100 };
            let got = tracked(prio, &[TrackerState::file(w, v)]);
            let want = if want.0 && !owner {
                (true, got.1)
            } else {
                want
            };
            assert_eq!(got, want, "weight {w} value {v} owner {owner}");
        }
    }
}
