//! VRRP instances as the operator defines them (`--vrrp` words and the
//! file's `[[vrrp]]` tables, which become the same words), and their parser.
//! Nothing here touches the host: `check-config`, the file, the import and
//! the daemon all read definitions through this one parser.
use std::{fmt, net::IpAddr, time::Duration};

use super::{
    command,
    engine::{Config, State},
    packet::{Auth, ChecksumForm, Version},
};
use crate::{netlink, spec::SpecError};

const OBJECT: &str = "vrrp instance";

/// Most gratuitous ARPs per VIP in one burst.
const MAX_GARP_REPEAT: u32 = 255;

/// A virtual address and where it lives (the seed runs VRRP on gretap1 and
/// puts the VIP on eth0).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct VipDef {
    pub addr: IpAddr,
    pub prefix: u8,
    /// The interface to put it on; the instance's when not given.
    pub dev: Option<String>,
    pub label: Option<String>,
    /// Added and removed with the others but not advertised (keepalived's
    /// virtual_ipaddress_excluded): past the advert's 255, or where the
    /// peers' lists need not agree.
    pub excluded: bool,
    /// `ip addr add`'s options, as keepalived's virtual_ipaddress takes
    /// them: broadcast (IPv4), scope, point-to-point peer, noprefixroute.
    pub brd: Option<std::net::Ipv4Addr>,
    pub scope: Option<u8>,
    pub peer: Option<IpAddr>,
    pub noprefixroute: bool,
}

/// A route that follows mastership (keepalived's virtual_routes): added
/// on becoming master, removed on leaving it, and removed at start if a
/// crashed run left it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RouteDef {
    pub dst: IpAddr,
    pub prefix: u8,
    pub via: Option<IpAddr>,
    pub dev: Option<String>,
    /// The preferred source (`src`, often a VIP).
    pub src: Option<IpAddr>,
    pub metric: Option<u32>,
    /// The routing table (main when not given).
    pub table: Option<u32>,
    /// iproute2's scope: 0 global, 253 link, 254 host; when not given,
    /// link for a route without a gateway, as `ip route` does.
    pub scope: Option<u8>,
    pub kind: RouteKind,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RouteKind {
    Unicast,
    Blackhole,
    Unreachable,
    Prohibit,
}

impl fmt::Display for RouteDef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.kind {
            RouteKind::Unicast => {}
            RouteKind::Blackhole => f.write_str("blackhole ")?,
            RouteKind::Unreachable => f.write_str("unreachable ")?,
            RouteKind::Prohibit => f.write_str("prohibit ")?,
        }
        write!(f, "{}/{}", self.dst, self.prefix)?;
        if let Some(v) = self.via {
            write!(f, " via {v}")?;
        }
        if let Some(d) = &self.dev {
            write!(f, " dev {d}")?;
        }
        if let Some(t) = self.table {
            write!(f, " table {t}")?;
        }
        Ok(())
    }
}

/// A routing rule that follows mastership (keepalived's virtual_rules):
/// `ip rule add` on becoming master, `ip rule del` on leaving.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RuleDef {
    pub from: Option<(IpAddr, u8)>,
    pub to: Option<(IpAddr, u8)>,
    /// The table looked up (with `RuleKind::Table`).
    pub table: Option<u32>,
    /// The rule's preference (`pref`; the kernel picks one when absent).
    pub pref: Option<u32>,
    /// A firewall mark and its mask.
    pub fwmark: Option<(u32, Option<u32>)>,
    pub iif: Option<String>,
    pub oif: Option<String>,
    pub kind: RuleKind,
    /// An IPv6 rule (its addresses say so; `from all` rules are IPv4
    /// unless `family inet6`).
    pub ipv6: bool,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RuleKind {
    Table,
    Blackhole,
    Unreachable,
    Prohibit,
}

impl fmt::Display for RuleDef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let all = if self.ipv6 { "::/0" } else { "all" };
        match self.from {
            Some((a, p)) => write!(f, "from {a}/{p}")?,
            None => write!(f, "from {all}")?,
        }
        if let Some((a, p)) = self.to {
            write!(f, " to {a}/{p}")?;
        }
        if let Some((m, mask)) = self.fwmark {
            write!(f, " fwmark {m:#x}")?;
            if let Some(mask) = mask {
                write!(f, "/{mask:#x}")?;
            }
        }
        if let Some(i) = &self.iif {
            write!(f, " iif {i}")?;
        }
        if let Some(o) = &self.oif {
            write!(f, " oif {o}")?;
        }
        match self.kind {
            RuleKind::Table => write!(f, " table {}", self.table.unwrap_or(254))?,
            RuleKind::Blackhole => f.write_str(" blackhole")?,
            RuleKind::Unreachable => f.write_str(" unreachable")?,
            RuleKind::Prohibit => f.write_str(" prohibit")?,
        }
        if let Some(p) = self.pref {
            write!(f, " pref {p}")?;
        }
        Ok(())
    }
}

/// A VRRP instance as the operator defines it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct InstanceDef {
    pub name: String,
    pub interface: String,
    pub version: Version,
    pub vrid: u8,
    pub priority: u8,
    pub advert_interval_cs: u16,
    pub preempt: bool,
    pub preempt_delay: Duration,
    pub auth: Auth,
    pub vips: Vec<VipDef>,
    /// v3 checksum form sent (both are accepted).
    pub checksum: ChecksumForm,
    /// Gratuitous ARPs per VIP on becoming master, and again after
    /// `garp_delay` (keepalived's garp_master_repeat and _delay).
    pub garp_repeat: u32,
    pub garp_delay: Duration,
    /// Commands run on transitions, keepalived's way: `notify_master` and
    /// its siblings without arguments, `notify` with INSTANCE NAME STATE
    /// PRIORITY.
    pub notify: Notify,
    pub track: Vec<Track>,
    /// Adverts go to these addresses instead of 224.0.0.18, and only
    /// theirs are accepted (keepalived's unicast_peer).
    pub unicast_peers: Vec<IpAddr>,
    /// The source of unicast adverts (keepalived's unicast_src_ip); the
    /// interface's primary address when not given.
    pub unicast_src: Option<IpAddr>,
    /// The TTL (hop limit) of unicast adverts sent (keepalived's
    /// unicast_ttl; 255 by default).
    pub unicast_ttl: u8,
    /// Each unicast peer's accepted TTL range, index for index with
    /// `unicast_peers` (keepalived's `min_ttl`/`max_ttl`; 0 to 255 by
    /// default: a peer may be routers away).
    pub unicast_peer_ttl: Vec<(u8, u8)>,
    /// While master, announce the VIPs again at this interval
    /// (keepalived's garp_master_refresh); never when zero.
    pub garp_refresh: Duration,
    /// Gratuitous ARPs per VIP when a master hears a lower priority, and
    /// again after the delay (keepalived's garp_lower_prio_repeat and
    /// _delay, whose defaults are those of garp_master_repeat and _delay).
    pub garp_lower_prio_repeat: u32,
    pub garp_lower_prio_delay: Duration,
    /// Send one advert before yielding to a higher priority as master
    /// (keepalived's higher_prio_send_advert; on by default here, so a
    /// healed split brain always ends with the VIPs re-announced).
    pub higher_prio_send_advert: bool,
    /// Let the XDP fast path check adverts and absorb the steady ones
    /// (`no-fastpath` turns it off: the daemon then sees every advert).
    pub fastpath: bool,
    /// The VRRP interface going down puts the instance in Fault, as
    /// keepalived does by default (`dont-track-primary` turns it off).
    pub track_primary: bool,
    /// The sync group it belongs to (`sync-group NAME`, or a file's
    /// `[[sync_group]]`): its members change state together.
    pub sync_group: Option<SyncGroup>,
    /// Routes that follow mastership (`route DEST ...`).
    pub routes: Vec<RouteDef>,
    /// Rules that follow mastership (`rule [from ...] ...`).
    pub rules: Vec<RuleDef>,
    /// IPv6 whatever the VIPs say (keepalived's native_ipv6): what makes an
    /// instance without VIPs an IPv6 one.
    pub native_ipv6: bool,
    /// keepalived's use_vmac: the name of a macvlan on the interface with
    /// the VRRP virtual MAC (00:00:5e:00:01:VRID, IPv6 00:00:5e:00:02:VRID)
    /// that holds the VIPs (those without a dev of their own) and sends
    /// the adverts, so the clients' ARP and neighbour entries never change
    /// when the master does. `use-vmac` names it vrrp.VRID (vrrp6.VRID),
    /// `vmac-name NAME` otherwise.
    pub vmac: Option<String>,
}

impl InstanceDef {
    /// The virtual MAC of RFC 5798 §7.3 for this instance.
    pub fn virtual_mac(&self) -> [u8; 6] {
        let kind = if self.family() == Family::V6 { 2 } else { 1 };
        [0, 0, 0x5e, 0, kind, self.vrid]
    }
}

/// keepalived's vrrp_sync_group as an instance sees it: the instances
/// naming the same group fault together, go backup together, and go
/// master together once each of them would.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct SyncGroup {
    pub name: String,
    /// Run when the group as a whole changes state (a file's
    /// `[[sync_group]]`; `notify` gets GROUP NAME STATE 0).
    pub notify: Notify,
}

/// Something whose failure lowers the priority (`weight`) or, without a
/// weight, puts the instance in Fault (keepalived's track_interface and
/// track_script).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Track {
    pub kind: TrackKind,
    /// keepalived's rule: a positive weight is added while the tracked
    /// thing is up, a negative one while it is down.
    pub weight: Option<i32>,
    /// keepalived's `weight N reverse`: up counts as down and down as up
    /// (for a track-file, its number is negated instead).
    pub reverse: bool,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum TrackKind {
    /// Up means administratively up with carrier.
    Interface(String),
    /// Run every `interval` (killed after `timeout`); `rise` successes in a
    /// row make it up, `fall` failures down. It starts up.
    Script {
        /// The program and its arguments, quoted as keepalived quotes
        /// them (see [`super::command`]).
        path: String,
        interval: Duration,
        timeout: Duration,
        rise: u32,
        fall: u32,
        /// Down until it first succeeds (keepalived's init_fail).
        init_fail: bool,
        /// Who runs it, `USER[:GROUP]` (keepalived's `user`); the
        /// daemon's script_user, else root, when not given.
        user: Option<String>,
    },
    /// A greha tunnel with a `probe` address: down while its far end is
    /// dead (see [`crate::probe`]).
    Tunnel(String),
    /// keepalived's track_file: a number read from `path` whenever it
    /// changes, times the weight (1 by default; `reverse` negates it), is
    /// added to the priority; below -253 it is Fault. With weight 0, any
    /// number but 0 is Fault. `init` is written at start if the file does
    /// not exist (or always, with `overwrite`).
    File {
        path: String,
        reverse: bool,
        init: Option<i64>,
        overwrite: bool,
    },
    /// keepalived's vrrp_track_process: up while the number of matching
    /// processes is within `quorum..=quorum_max`.
    Process(ProcessMatch),
}

/// Which processes a track-process counts, and when it changes its mind.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ProcessMatch {
    /// The command line as keepalived quotes it: the process, then the
    /// parameters that must match (none: the name alone is compared).
    pub process: String,
    /// `param_match`: how the parameters match; without it, given ones
    /// match exactly and none given are not compared (with it, none given
    /// means the process must have none).
    pub param_match: Option<ParamMatch>,
    pub quorum: u32,
    pub quorum_max: u32,
    /// Compare the whole command line (argv[0] as given), not the name
    /// the kernel keeps (`Name:` in /proc/PID/status).
    pub full_command: bool,
    /// Quorum reached for this long before counting as up (after a fork).
    pub fork_delay: Duration,
    /// Quorum lost for this long before counting as down.
    pub terminate_delay: Duration,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ParamMatch {
    /// The same parameters, no more.
    Exact,
    /// The first parameters match; more may follow.
    Partial,
    /// As partial, and the last given one may be a prefix.
    Initial,
}

/// Notify commands of an instance (each a program and its arguments,
/// quoted as keepalived quotes them).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Notify {
    pub master: Option<String>,
    pub backup: Option<String>,
    pub fault: Option<String>,
    pub stop: Option<String>,
    pub any: Option<String>,
}

impl Notify {
    /// The commands for an instance or group (`kind` INSTANCE or GROUP)
    /// entering `to`, in the order keepalived runs them.
    pub fn commands(&self, kind: &str, name: &str, to: State, priority: u8) -> Vec<Vec<String>> {
        let (specific, word) = match to {
            State::Master => (&self.master, "MASTER"),
            State::Backup => (&self.backup, "BACKUP"),
            State::Fault => (&self.fault, "FAULT"),
            State::Initialize => (&self.stop, "STOP"),
        };
        // Checked when parsed; a line that no longer splits runs as one
        // program name, which then fails to start and is logged.
        let argv = |cmd: &String| command::split(cmd).unwrap_or_else(|_| vec![cmd.clone()]);
        let mut out = Vec::new();
        if let Some(cmd) = specific {
            out.push(argv(cmd));
        }
        if let Some(cmd) = &self.any {
            let mut a = argv(cmd);
            a.extend([kind.into(), name.into(), word.into(), priority.to_string()]);
            out.push(a);
        }
        out
    }
}

/// A script or notify command line, checked to split into a program and
/// its arguments.
fn command_line(name: &str, field: &str, value: &str) -> Result<String, SpecError> {
    command::split(value)
        .map(|_| value.to_owned())
        .map_err(|why| bad(name, field, value, &why))
}

fn bad(name: &str, field: &str, value: &str, what: &str) -> SpecError {
    SpecError::bad(OBJECT, name, field, value, what)
}

fn err(name: &str, field: &str, message: impl Into<String>) -> SpecError {
    SpecError::field(OBJECT, name, field, message)
}

/// iproute2's scope names, or a number.
fn scope_number(name: &str, v: &str) -> Result<u8, SpecError> {
    Ok(match v {
        "global" | "universe" => 0,
        "site" => 200,
        "link" => 253,
        "host" => 254,
        "nowhere" => 255,
        _ => v.parse().map_err(|_| {
            bad(
                name,
                "scope",
                v,
                "is not a scope (global, site, link, host or 0 to 255)",
            )
        })?,
    })
}

/// `ADDR[/LEN]` (a host route without a length), or `default` (IPv4's
/// 0.0.0.0/0; IPv6's is `::/0`).
fn cidr(v: &str, default: bool) -> Option<(IpAddr, u8)> {
    if default && v == "default" {
        return Some((IpAddr::from([0, 0, 0, 0]), 0));
    }
    let (text, prefix) = v.split_once('/').map_or((v, None), |(a, p)| (a, Some(p)));
    let addr: IpAddr = text.parse().ok()?;
    let max = if addr.is_ipv4() { 32 } else { 128 };
    let prefix = match prefix {
        None => max,
        Some(p) => p.parse().ok().filter(|p| *p <= max)?,
    };
    Some((addr, prefix))
}

fn ifname(name: &str, field: &str, value: &str) -> Result<(), SpecError> {
    netlink::check_ifname(value).map_err(|e| err(name, field, e.to_string()).value(value))
}

/// Seconds with up to two decimals, as centiseconds.
fn parse_seconds_cs(name: &str, field: &str, v: &str) -> Result<u32, SpecError> {
    let secs: f64 = v
        .parse()
        .map_err(|_| bad(name, field, v, "is not a number of seconds"))?;
    let cs = (secs * 100.0).round();
    if !(0.0..=1e6).contains(&cs) || (cs / 100.0 - secs).abs() > 1e-9 {
        return Err(bad(name, field, v, "is not a whole number of centiseconds"));
    }
    Ok(cs as u32)
}

/// An instance's address family: its VIPs', as in keepalived.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Family {
    V4,
    V6,
}

impl Family {
    pub fn of(addr: IpAddr) -> Self {
        if addr.is_ipv4() { Self::V4 } else { Self::V6 }
    }

    pub fn name(self) -> &'static str {
        match self {
            Self::V4 => "IPv4",
            Self::V6 => "IPv6",
        }
    }
}

impl InstanceDef {
    /// The family the instance speaks VRRP in (its VIPs are all of it).
    /// The VIPs an advert carries: all but the excluded ones.
    pub fn advertised(&self) -> impl Iterator<Item = IpAddr> + '_ {
        self.vips.iter().filter(|v| !v.excluded).map(|v| v.addr)
    }

    pub fn family(&self) -> Family {
        if self.native_ipv6 {
            return Family::V6;
        }
        self.advertised().next().map_or(Family::V4, Family::of)
    }

    /// The engine's configuration of this instance, sending from `primary`
    /// (the interface's address, or the unicast source).
    pub fn engine_config(&self, primary: IpAddr) -> Config {
        Config {
            name: self.name.clone(),
            version: self.version,
            vrid: self.vrid,
            priority: self.priority,
            advert_interval_cs: self.advert_interval_cs,
            preempt: self.preempt,
            preempt_delay: self.preempt_delay,
            primary_ip: primary,
            vips: self.advertised().collect(),
            auth: self.auth.clone(),
            higher_prio_send_advert: self.higher_prio_send_advert,
            sync_group: self.sync_group.is_some(),
            unicast_ttl: (!self.unicast_peers.is_empty()).then(|| {
                self.unicast_peers
                    .iter()
                    .zip(&self.unicast_peer_ttl)
                    .map(|(p, (min, max))| (*p, *min, *max))
                    .collect()
            }),
        }
    }

    /// Parses `NAME interface IF vrid N priority N [version 2|3]
    /// [advert-int SECONDS] [nopreempt] [preempt-delay SECONDS]
    /// [auth-pass PASSWORD] [checksum keepalived|rfc9568] [garp-repeat N]
    /// [garp-delay SECONDS] vip CIDR [dev IFACE] [label LABEL] ...`.
    pub fn parse(words: &[String]) -> Result<Self, SpecError> {
        let mut it = words.iter().map(String::as_str).peekable();
        let name = it
            .next()
            .ok_or_else(|| SpecError::whole(OBJECT, "", "a name is required"))?
            .to_owned();
        let mut d = InstanceDef {
            name: name.clone(),
            interface: String::new(),
            version: Version::V3,
            vrid: 0,
            priority: 100,
            advert_interval_cs: 100,
            preempt: true,
            preempt_delay: Duration::ZERO,
            auth: Auth::None,
            vips: Vec::new(),
            checksum: ChecksumForm::PseudoHeader,
            garp_repeat: 5,
            garp_delay: Duration::from_secs(5),
            notify: Notify::default(),
            track: Vec::new(),
            unicast_peers: Vec::new(),
            unicast_src: None,
            unicast_ttl: 255,
            unicast_peer_ttl: Vec::new(),
            garp_refresh: Duration::ZERO,
            garp_lower_prio_repeat: 5,
            garp_lower_prio_delay: Duration::from_secs(5),
            higher_prio_send_advert: true,
            fastpath: true,
            track_primary: true,
            sync_group: None,
            routes: Vec::new(),
            rules: Vec::new(),
            native_ipv6: false,
            vmac: None,
        };
        let mut vmac_name = None;
        let mut vrid = None;
        // Whether a `dev` belongs to the last route (else the last vip).
        let mut after_route = false;
        // Whether `table` and `type` belong to the last rule.
        let mut after_rule = false;
        while let Some(word) = it.next() {
            let mut value = || {
                it.next()
                    .ok_or_else(|| err(&name, word, "a value is required"))
            };
            match word {
                "interface" => {
                    let v = value()?;
                    ifname(&name, "interface", v)?;
                    d.interface = v.to_owned();
                }
                "sync-group" => {
                    let v = value()?;
                    if v.is_empty() || v.chars().any(char::is_whitespace) {
                        return Err(bad(&name, word, v, "is not a group name"));
                    }
                    d.sync_group = Some(SyncGroup {
                        name: v.to_owned(),
                        notify: Notify::default(),
                    });
                }
                "vrid" => {
                    let v = value()?;
                    vrid = Some(
                        v.parse::<u8>()
                            .ok()
                            .filter(|n| *n >= 1)
                            .ok_or_else(|| bad(&name, word, v, "is not a VRID (1 to 255)"))?,
                    );
                }
                "priority" => {
                    let v = value()?;
                    d.priority = v
                        .parse::<u8>()
                        .ok()
                        .filter(|n| *n >= 1)
                        .ok_or_else(|| bad(&name, word, v, "is not a priority (1 to 255)"))?;
                }
                "version" => {
                    d.version = match value()? {
                        "2" => Version::V2,
                        "3" => Version::V3,
                        v => return Err(bad(&name, word, v, "is not 2 or 3")),
                    }
                }
                "advert-int" => {
                    let v = value()?;
                    let cs = parse_seconds_cs(&name, word, v)?;
                    d.advert_interval_cs = u16::try_from(cs)
                        .ok()
                        .filter(|cs| (1..=4095).contains(cs))
                        .ok_or_else(|| bad(&name, word, v, "is out of range (0.01 to 40.95 s)"))?;
                }
                "nopreempt" => d.preempt = false,
                "no-fastpath" => d.fastpath = false,
                "preempt-delay" => {
                    let v = value()?;
                    let cs = parse_seconds_cs(&name, word, v)?;
                    d.preempt_delay = Duration::from_millis(u64::from(cs) * 10);
                }
                "auth-pass" => d.auth = Auth::pass(value()?),
                "checksum" => {
                    d.checksum = match value()? {
                        "keepalived" => ChecksumForm::PseudoHeader,
                        "rfc9568" => ChecksumForm::VrrpOnly,
                        v => return Err(bad(&name, word, v, "is not keepalived or rfc9568")),
                    }
                }
                "garp-repeat" | "garp-lower-prio-repeat" => {
                    let v = value()?;
                    // Sent in one burst per VIP: a huge count would stall
                    // the sender for seconds.
                    let n = v
                        .parse::<u32>()
                        .ok()
                        .filter(|n| *n <= MAX_GARP_REPEAT)
                        .ok_or_else(|| bad(&name, word, v, "is not a count (0 to 255)"))?;
                    if word == "garp-repeat" {
                        d.garp_repeat = n;
                    } else {
                        d.garp_lower_prio_repeat = n;
                    }
                }
                "garp-lower-prio-delay" => {
                    let v = value()?;
                    let cs = parse_seconds_cs(&name, word, v)?;
                    d.garp_lower_prio_delay = Duration::from_millis(u64::from(cs) * 10);
                }
                "no-higher-prio-send-advert" => d.higher_prio_send_advert = false,
                "dont-track-primary" => d.track_primary = false,
                "native-ipv6" => d.native_ipv6 = true,
                "use-vmac" => d.vmac = Some(String::new()),
                "vmac-name" => {
                    let v = value()?;
                    ifname(&name, word, v)?;
                    vmac_name = Some(v.to_owned());
                }
                "unicast-peer" => {
                    let v = value()?;
                    d.unicast_peers.push(
                        v.parse()
                            .map_err(|_| bad(&name, word, v, "is not an IP address"))?,
                    );
                    d.unicast_peer_ttl.push((0, 255));
                }
                "min-ttl" | "max-ttl" | "unicast-ttl" => {
                    let v = value()?;
                    let n: u8 = v
                        .parse()
                        .map_err(|_| bad(&name, word, v, "is not a TTL (0 to 255)"))?;
                    if word == "unicast-ttl" {
                        if n == 0 {
                            return Err(bad(&name, word, v, "is not a TTL to send (1 to 255)"));
                        }
                        d.unicast_ttl = n;
                    } else {
                        let bounds = d.unicast_peer_ttl.last_mut().ok_or_else(|| {
                            err(&name, word, "belongs after a unicast-peer").value(v)
                        })?;
                        if word == "min-ttl" {
                            bounds.0 = n;
                        } else {
                            bounds.1 = n;
                        }
                    }
                }
                "unicast-src" => {
                    let v = value()?;
                    d.unicast_src = Some(
                        v.parse()
                            .map_err(|_| bad(&name, word, v, "is not an IP address"))?,
                    );
                }
                "garp-refresh" => {
                    let v = value()?;
                    let cs = parse_seconds_cs(&name, word, v)?;
                    d.garp_refresh = Duration::from_millis(u64::from(cs) * 10);
                }
                "track-interface" | "track-tunnel" => {
                    let v = value()?;
                    ifname(&name, word, v)?;
                    let kind = if word == "track-interface" {
                        TrackKind::Interface(v.to_owned())
                    } else {
                        TrackKind::Tunnel(v.to_owned())
                    };
                    d.track.push(Track {
                        kind,
                        weight: None,
                        reverse: false,
                    });
                }
                "track-process" => {
                    let v = command_line(&name, word, value()?)?;
                    d.track.push(Track {
                        kind: TrackKind::Process(ProcessMatch {
                            process: v,
                            param_match: None,
                            quorum: 1,
                            quorum_max: u32::MAX,
                            full_command: false,
                            fork_delay: Duration::ZERO,
                            terminate_delay: Duration::ZERO,
                        }),
                        weight: None,
                        reverse: false,
                    });
                }
                "quorum" | "quorum-max" | "param-match" | "full-command" | "delay"
                | "fork-delay" | "terminate-delay" => {
                    let Some(Track {
                        kind: TrackKind::Process(m),
                        ..
                    }) = d.track.last_mut()
                    else {
                        return Err(err(&name, word, "belongs after a track-process"));
                    };
                    if word == "full-command" {
                        m.full_command = true;
                        continue;
                    }
                    let v = value()?;
                    match word {
                        "quorum" | "quorum-max" => {
                            let n: u32 = v
                                .parse()
                                .map_err(|_| bad(&name, word, v, "is not a count"))?;
                            if word == "quorum" {
                                m.quorum = n;
                            } else {
                                m.quorum_max = n;
                            }
                        }
                        "param-match" => {
                            m.param_match = Some(match v {
                                "initial" => ParamMatch::Initial,
                                "partial" => ParamMatch::Partial,
                                _ => return Err(bad(&name, word, v, "is not initial or partial")),
                            });
                        }
                        _ => {
                            let cs = parse_seconds_cs(&name, word, v)?;
                            let t = Duration::from_millis(u64::from(cs) * 10);
                            if word != "terminate-delay" {
                                m.fork_delay = t;
                            }
                            if word != "fork-delay" {
                                m.terminate_delay = t;
                            }
                        }
                    }
                }
                "track-script" => d.track.push(Track {
                    kind: TrackKind::Script {
                        path: command_line(&name, word, value()?)?,
                        interval: Duration::from_secs(1),
                        timeout: Duration::from_secs(1),
                        rise: 1,
                        fall: 1,
                        init_fail: false,
                        user: None,
                    },
                    weight: None,
                    reverse: false,
                }),
                "user" => {
                    let v = value()?;
                    let Some(Track {
                        kind: TrackKind::Script { user, .. },
                        ..
                    }) = d.track.last_mut()
                    else {
                        return Err(err(&name, word, "belongs after a track-script").value(v));
                    };
                    if v.is_empty() || v.chars().any(char::is_whitespace) {
                        return Err(bad(&name, word, v, "is not USER or USER:GROUP"));
                    }
                    *user = Some(v.to_owned());
                }
                "track-file" => {
                    let v = value()?;
                    if !v.starts_with('/') {
                        return Err(bad(&name, word, v, "is not an absolute path"));
                    }
                    d.track.push(Track {
                        kind: TrackKind::File {
                            path: v.to_owned(),
                            reverse: false,
                            init: None,
                            overwrite: false,
                        },
                        weight: Some(1),
                        reverse: false,
                    });
                }
                "reverse"
                    if d.track
                        .last()
                        .is_some_and(|t| !matches!(t.kind, TrackKind::File { .. })) =>
                {
                    if let Some(t) = d.track.last_mut() {
                        t.reverse = true;
                    }
                }
                "init-fail" => {
                    let Some(Track {
                        kind: TrackKind::Script { init_fail, .. },
                        ..
                    }) = d.track.last_mut()
                    else {
                        return Err(err(&name, word, "belongs after a track-script"));
                    };
                    *init_fail = true;
                }
                "reverse" | "overwrite" | "init" => {
                    let Some(Track {
                        kind:
                            TrackKind::File {
                                reverse,
                                init,
                                overwrite,
                                ..
                            },
                        ..
                    }) = d.track.last_mut()
                    else {
                        return Err(err(&name, word, "belongs after a track-file"));
                    };
                    match word {
                        "reverse" => *reverse = true,
                        "overwrite" => *overwrite = true,
                        _ => {
                            let v = value()?;
                            *init = Some(
                                v.parse()
                                    .map_err(|_| bad(&name, word, v, "is not a whole number"))?,
                            );
                        }
                    }
                }
                "weight" => {
                    let v = value()?;
                    let w: i32 = v
                        .parse()
                        .ok()
                        .filter(|w: &i32| (-254..=254).contains(w))
                        .ok_or_else(|| bad(&name, word, v, "is not a weight (-254 to 254)"))?;
                    d.track
                        .last_mut()
                        .ok_or_else(|| {
                            err(
                                &name,
                                "weight",
                                "belongs after a track-interface, track-script, track-tunnel or track-file",
                            )
                            .value(v)
                        })?
                        .weight = Some(w);
                }
                "interval" | "timeout" | "rise" | "fall" => {
                    let v = value()?;
                    let Some(Track {
                        kind:
                            TrackKind::Script {
                                interval,
                                timeout,
                                rise,
                                fall,
                                ..
                            },
                        ..
                    }) = d.track.last_mut()
                    else {
                        return Err(err(&name, word, "belongs after a track-script").value(v));
                    };
                    match word {
                        "interval" | "timeout" => {
                            let cs = parse_seconds_cs(&name, word, v)?;
                            if cs == 0 {
                                return Err(bad(&name, word, v, "must be above 0"));
                            }
                            let t = Duration::from_millis(u64::from(cs) * 10);
                            *(if word == "interval" {
                                interval
                            } else {
                                timeout
                            }) = t;
                        }
                        _ => {
                            let n: u32 =
                                v.parse().ok().filter(|n| *n >= 1).ok_or_else(|| {
                                    bad(&name, word, v, "is not a count (1 or more)")
                                })?;
                            *(if word == "rise" { rise } else { fall }) = n;
                        }
                    }
                }
                "notify-master" => d.notify.master = Some(command_line(&name, word, value()?)?),
                "notify-backup" => d.notify.backup = Some(command_line(&name, word, value()?)?),
                "notify-fault" => d.notify.fault = Some(command_line(&name, word, value()?)?),
                "notify-stop" => d.notify.stop = Some(command_line(&name, word, value()?)?),
                "notify" => d.notify.any = Some(command_line(&name, word, value()?)?),
                "garp-delay" => {
                    let v = value()?;
                    let cs = parse_seconds_cs(&name, word, v)?;
                    d.garp_delay = Duration::from_millis(u64::from(cs) * 10);
                }
                "vip" => {
                    let v = value()?;
                    let (text, prefix) = v.split_once('/').map_or((v, None), |(a, p)| (a, Some(p)));
                    let addr: IpAddr = text
                        .parse()
                        .map_err(|_| bad(&name, word, v, "is not an IP address"))?;
                    // A host address unless told otherwise, as keepalived.
                    let max = if addr.is_ipv4() { 32 } else { 128 };
                    let prefix: u8 = match prefix {
                        None => max,
                        Some(p) => p
                            .parse()
                            .ok()
                            .filter(|p| *p <= max)
                            .ok_or_else(|| bad(&name, word, v, "has a bad prefix length"))?,
                    };
                    if let IpAddr::V6(a) = addr
                        && (a.is_unicast_link_local() || a.is_multicast() || a.is_unspecified())
                    {
                        return Err(bad(
                            &name,
                            word,
                            v,
                            "is not a global IPv6 address (the VRRP source is the link-local one)",
                        ));
                    }
                    d.vips.push(VipDef {
                        addr,
                        prefix,
                        dev: None,
                        label: None,
                        excluded: false,
                        brd: None,
                        scope: None,
                        peer: None,
                        noprefixroute: false,
                    });
                    after_route = false;
                    after_rule = false;
                }
                "route" => {
                    let v = value()?;
                    let (dst, prefix) = cidr(v, true).ok_or_else(|| {
                        bad(
                            &name,
                            word,
                            v,
                            "is not a destination (ADDR[/LEN] or default)",
                        )
                    })?;
                    d.routes.push(RouteDef {
                        dst,
                        prefix,
                        via: None,
                        dev: None,
                        src: None,
                        metric: None,
                        table: None,
                        scope: None,
                        kind: RouteKind::Unicast,
                    });
                    after_route = true;
                    after_rule = false;
                }
                "rule" => {
                    d.rules.push(RuleDef {
                        from: None,
                        to: None,
                        table: None,
                        pref: None,
                        fwmark: None,
                        iif: None,
                        oif: None,
                        kind: RuleKind::Table,
                        ipv6: false,
                    });
                    after_rule = true;
                    after_route = false;
                }
                "from" | "to" | "pref" | "fwmark" | "iif" | "oif" | "family" | "table" | "type"
                    if after_rule || !matches!(word, "table" | "type") =>
                {
                    let v = value()?;
                    let rule = d
                        .rules
                        .last_mut()
                        .ok_or_else(|| err(&name, word, "belongs after a rule").value(v))?;
                    match word {
                        "from" | "to" => {
                            let at = if v == "all" {
                                None
                            } else {
                                let (a, p) = cidr(v, false).ok_or_else(|| {
                                    bad(&name, word, v, "is not an address (ADDR[/LEN] or all)")
                                })?;
                                let other = if word == "from" { rule.to } else { rule.from };
                                if other.is_some_and(|(o, _)| o.is_ipv4() != a.is_ipv4()) {
                                    return Err(bad(
                                        &name,
                                        word,
                                        v,
                                        "is not of the rule's other address's family",
                                    ));
                                }
                                rule.ipv6 = a.is_ipv6();
                                Some((a, p))
                            };
                            if word == "from" {
                                rule.from = at;
                            } else {
                                rule.to = at;
                            }
                        }
                        "family" => {
                            rule.ipv6 = match v {
                                "inet" | "ipv4" => false,
                                "inet6" | "ipv6" => true,
                                _ => return Err(bad(&name, word, v, "is not inet or inet6")),
                            };
                        }
                        "pref" | "table" => {
                            let n: u32 = v
                                .parse()
                                .ok()
                                .filter(|n| word == "pref" || (1..=0xffff_fffe).contains(n))
                                .ok_or_else(|| bad(&name, word, v, "is not a number"))?;
                            if word == "pref" {
                                rule.pref = Some(n);
                            } else {
                                rule.table = Some(n);
                            }
                        }
                        "fwmark" => {
                            let num = |t: &str| {
                                t.strip_prefix("0x").map_or_else(
                                    || t.parse().ok(),
                                    |h| u32::from_str_radix(h, 16).ok(),
                                )
                            };
                            let (m, mask) =
                                v.split_once('/').map_or((v, None), |(m, k)| (m, Some(k)));
                            let m = num(m).ok_or_else(|| {
                                bad(&name, word, v, "is not a mark (N or N/MASK)")
                            })?;
                            let mask = match mask {
                                Some(k) => Some(num(k).ok_or_else(|| {
                                    bad(&name, word, v, "is not a mark (N or N/MASK)")
                                })?),
                                None => None,
                            };
                            rule.fwmark = Some((m, mask));
                        }
                        "iif" | "oif" => {
                            ifname(&name, word, v)?;
                            if word == "iif" {
                                rule.iif = Some(v.to_owned());
                            } else {
                                rule.oif = Some(v.to_owned());
                            }
                        }
                        _ => {
                            rule.kind = match v {
                                "table" => RuleKind::Table,
                                "blackhole" => RuleKind::Blackhole,
                                "unreachable" => RuleKind::Unreachable,
                                "prohibit" => RuleKind::Prohibit,
                                _ => {
                                    return Err(bad(
                                        &name,
                                        word,
                                        v,
                                        "is not a rule type (table, blackhole, unreachable, prohibit)",
                                    ));
                                }
                            };
                        }
                    }
                }
                "via" | "src" | "metric" | "table" | "scope" | "type"
                    if word != "scope" || after_route =>
                {
                    let v = value()?;
                    let route = d
                        .routes
                        .last_mut()
                        .ok_or_else(|| err(&name, word, "belongs after a route").value(v))?;
                    let family_of = |a: &IpAddr| a.is_ipv4() == route.dst.is_ipv4();
                    match word {
                        "via" | "src" => {
                            let a: IpAddr = v.parse().ok().filter(family_of).ok_or_else(|| {
                                bad(&name, word, v, "is not an address of the route's family")
                            })?;
                            if word == "via" {
                                route.via = Some(a);
                            } else {
                                route.src = Some(a);
                            }
                        }
                        "metric" | "table" => {
                            let n: u32 = v
                                .parse()
                                .ok()
                                .filter(|n| word == "metric" || (1..=0xffff_fffe).contains(n))
                                .ok_or_else(|| bad(&name, word, v, "is not a number"))?;
                            if word == "metric" {
                                route.metric = Some(n);
                            } else {
                                route.table = Some(n);
                            }
                        }
                        "scope" => route.scope = Some(scope_number(&name, v)?),
                        _ => {
                            route.kind = match v {
                                "unicast" => RouteKind::Unicast,
                                "blackhole" => RouteKind::Blackhole,
                                "unreachable" => RouteKind::Unreachable,
                                "prohibit" => RouteKind::Prohibit,
                                _ => {
                                    return Err(bad(
                                        &name,
                                        word,
                                        v,
                                        "is not a route type (unicast, blackhole, unreachable, prohibit)",
                                    ));
                                }
                            };
                        }
                    }
                }
                "dev" if after_route => {
                    let v = value()?.to_owned();
                    ifname(&name, "dev", &v)?;
                    if let Some(route) = d.routes.last_mut() {
                        route.dev = Some(v);
                    }
                }
                "brd" | "peer" | "scope" | "noprefixroute" => {
                    let vip = d
                        .vips
                        .last_mut()
                        .ok_or_else(|| err(&name, word, "belongs after a vip"))?;
                    if word == "noprefixroute" {
                        vip.noprefixroute = true;
                        continue;
                    }
                    let v = value()?;
                    match word {
                        "brd" => {
                            vip.brd =
                                Some(v.parse().ok().filter(|_| vip.addr.is_ipv4()).ok_or_else(
                                    || bad(&name, word, v, "is not an IPv4 address of an IPv4 VIP"),
                                )?);
                        }
                        "peer" => {
                            vip.peer = Some(
                                v.parse()
                                    .ok()
                                    .filter(|p: &IpAddr| p.is_ipv4() == vip.addr.is_ipv4())
                                    .ok_or_else(|| {
                                        bad(&name, word, v, "is not an address of the VIP's family")
                                    })?,
                            );
                        }
                        _ => vip.scope = Some(scope_number(&name, v)?),
                    }
                }
                "excluded" => {
                    let vip = d
                        .vips
                        .last_mut()
                        .ok_or_else(|| err(&name, word, "belongs after a vip"))?;
                    vip.excluded = true;
                }
                "dev" | "label" => {
                    let v = value()?.to_owned();
                    let vip = d
                        .vips
                        .last_mut()
                        .ok_or_else(|| err(&name, word, "belongs after a vip").value(&v))?;
                    if word == "dev" {
                        ifname(&name, "dev", &v)?;
                        vip.dev = Some(v);
                    } else {
                        // The kernel keeps 15 bytes of a label; a longer one
                        // is refused when the VIP is added, as master.
                        if v.is_empty() || v.len() > 15 {
                            return Err(err(
                                &name,
                                "label",
                                format!("{v:?} is {} bytes long; labels have 1 to 15", v.len()),
                            )
                            .value(&v));
                        }
                        vip.label = Some(v);
                    }
                }
                other => {
                    return Err(SpecError::whole(
                        OBJECT,
                        &name,
                        format!("unknown keyword {other:?}"),
                    ));
                }
            }
        }
        if d.interface.is_empty() {
            return Err(err(&name, "interface", "an interface is required"));
        }
        if let Some(n) = vmac_name {
            if d.vmac.is_none() {
                return Err(err(&name, "vmac-name", "needs use-vmac").value(&n));
            }
            d.vmac = Some(n);
        }
        for t in &d.track {
            if let TrackKind::Process(m) = &t.kind
                && m.quorum > m.quorum_max
            {
                return Err(err(
                    &name,
                    "quorum",
                    format!(
                        "track-process {}: quorum {} is above quorum-max {}",
                        m.process, m.quorum, m.quorum_max
                    ),
                ));
            }
        }
        for r in &d.rules {
            if r.kind == RuleKind::Table && r.table.is_none() {
                return Err(err(
                    &name,
                    "rule",
                    format!(
                        "{r}: a rule needs a table, or a type (blackhole, unreachable, prohibit)"
                    ),
                ));
            }
        }
        for r in &d.routes {
            if r.kind == RouteKind::Unicast && r.via.is_none() && r.dev.is_none() {
                return Err(err(
                    &name,
                    "route",
                    format!("{r}: a unicast route needs a gateway (via) or a device (dev)"),
                )
                .value(&format!("{}/{}", r.dst, r.prefix)));
            }
        }
        d.vrid = vrid.ok_or_else(|| err(&name, "vrid", "a VRID is required"))?;
        if d.advertised().count() > 255 {
            // An advert's address count is one byte.
            return Err(err(
                &name,
                "vip",
                format!(
                    "{} virtual addresses; an advert carries at most 255 \
                     (mark the others `excluded`)",
                    d.advertised().count()
                ),
            ));
        }
        // keepalived's rule: only a VRRPv2 IPv4 instance may have no VIP
        // (RFC 5798's minimum count is 1).
        if d.advertised().next().is_none() && (d.version == Version::V3 || d.native_ipv6) {
            return Err(err(
                &name,
                "vip",
                "at least one virtual address is required in version 3 (RFC 5798); \
                 only a version 2 IPv4 instance may have none, as in keepalived",
            ));
        }
        let family = d.family();
        // Excluded VIPs may be of either family, as in keepalived (one
        // instance carrying an IPv6 address beside its IPv4 ones).
        let advertised = || d.vips.iter().filter(|v| !v.excluded);
        if let Some(v) = advertised().find(|v| Family::of(v.addr) != family)
            && d.native_ipv6
        {
            return Err(err(
                &name,
                "vip",
                format!(
                    "{}/{} is an IPv4 address in a native-ipv6 instance",
                    v.addr, v.prefix
                ),
            )
            .value(&format!("{}/{}", v.addr, v.prefix)));
        }
        if let Some(v) = advertised().find(|v| Family::of(v.addr) != family) {
            return Err(err(
                &name,
                "vip",
                format!(
                    "{}/{} is an {} address in an {} instance (its first VIP, {}, says so); \
                     an instance speaks one family: define one instance per family \
                     (they may share the VRID), or mark it `excluded`",
                    v.addr,
                    v.prefix,
                    Family::of(v.addr).name(),
                    family.name(),
                    advertised().next().map_or(v.addr, |f| f.addr)
                ),
            )
            .value(&v.addr.to_string()));
        }
        if family == Family::V6 && d.version == Version::V2 {
            return Err(err(
                &name,
                "version",
                "VRRP version 2 is IPv4-only; IPv6 instances speak version 3",
            )
            .value("2"));
        }
        for (field, a) in d
            .unicast_peers
            .iter()
            .map(|a| ("unicast-peer", a))
            .chain(d.unicast_src.iter().map(|a| ("unicast-src", a)))
        {
            if Family::of(*a) != family {
                return Err(bad(
                    &name,
                    field,
                    &a.to_string(),
                    &format!("is not an {} address, as the VIPs are", family.name()),
                ));
            }
        }
        if d.version == Version::V2 && !d.advert_interval_cs.is_multiple_of(100) {
            return Err(err(
                &name,
                "advert-int",
                format!(
                    "{} s is not whole seconds, which VRRP version 2 requires",
                    f64::from(d.advert_interval_cs) / 100.0
                ),
            ));
        }
        if let Some((p, (min, max))) = d
            .unicast_peers
            .iter()
            .zip(&d.unicast_peer_ttl)
            .find(|(_, (min, max))| min > max)
        {
            return Err(err(
                &name,
                "min-ttl",
                format!("unicast-peer {p}: min-ttl {min} is above max-ttl {max}"),
            ));
        }
        if d.unicast_ttl != 255 && d.unicast_peers.is_empty() {
            return Err(err(&name, "unicast-ttl", "needs at least one unicast-peer"));
        }
        if d.unicast_src.is_some() && d.unicast_peers.is_empty() {
            return Err(err(&name, "unicast-src", "needs at least one unicast-peer"));
        }
        if d.version == Version::V3 && d.auth != Auth::None {
            return Err(err(
                &name,
                "auth-pass",
                "VRRP version 3 has no authentication",
            ));
        }
        if d.vmac.as_deref() == Some("") {
            let six = if d.family() == Family::V6 { "6" } else { "" };
            d.vmac = Some(format!("vrrp{six}.{}", d.vrid));
        }
        Ok(d)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(s: &str) -> Result<InstanceDef, SpecError> {
        InstanceDef::parse(&s.split_whitespace().map(str::to_owned).collect::<Vec<_>>())
    }

    /// `v interface eth0 vrid 1` and `words` is refused, saying `want`.
    fn refused(words: &str, want: &str) {
        let e = parse(&format!("v interface eth0 vrid 1 {words}"))
            .unwrap_err()
            .to_string();
        assert!(e.contains(want), "{words}: {e}");
    }

    #[test]
    fn parses_trackers() {
        let d = parse(
            "v interface eth0 vrid 1 vip 192.0.2.5 track-interface eth1 \
             track-interface eth2 weight -20 \
             track-script /bin/check interval 2 timeout 0.5 rise 3 fall 2 weight 10",
        )
        .unwrap();
        assert_eq!(d.track.len(), 3);
        assert_eq!(d.track[0].weight, None);
        assert_eq!(d.track[1].weight, Some(-20));
        assert_eq!(
            d.track[2],
            Track {
                kind: TrackKind::Script {
                    path: "/bin/check".into(),
                    interval: Duration::from_secs(2),
                    timeout: Duration::from_millis(500),
                    rise: 3,
                    fall: 2,
                    init_fail: false,
                    user: None,
                },
                weight: Some(10),
                reverse: false,
            }
        );
        for (input, want) in [
            (
                "v interface eth0 vrid 1 vip 192.0.2.5 weight 5",
                "weight: belongs after a track",
            ),
            (
                "v interface eth0 vrid 1 vip 192.0.2.5 track-interface e weight 300",
                "weight: \"300\" is not a weight",
            ),
            (
                "v interface eth0 vrid 1 vip 192.0.2.5 track-interface e rise 2",
                "rise: belongs after a track-script",
            ),
            (
                "v interface eth0 vrid 1 vip 192.0.2.5 track-script /x fall 0",
                "fall: \"0\" is not a count",
            ),
            (
                "v interface eth0 vrid 1 vip 192.0.2.5 track-script /x interval 0",
                "interval: \"0\" must be above 0",
            ),
        ] {
            let got = format!("{:#}", parse(input).unwrap_err());
            assert!(got.contains(want), "{input}\n  got: {got}\n  want: {want}");
        }
    }

    /// An instance without VIPs is valid in version 2, as in keepalived
    /// (routes, notifies, a sync group are what it moves); version 3
    /// needs one (RFC 5798), IPv6 is version 3.
    #[test]
    fn instances_without_vips() {
        let d = parse("v interface eth0 vrid 1 version 2").unwrap();
        assert_eq!((d.vips.len(), d.family()), (0, Family::V4));
        for spec in [
            "v interface eth0 vrid 1",
            "v interface eth0 vrid 1 version 2 native-ipv6",
        ] {
            let e = parse(spec).unwrap_err().to_string();
            assert!(
                e.contains("at least one virtual address is required in version 3"),
                "{e}"
            );
        }
        let d = parse("v interface eth0 vrid 1 native-ipv6 vip 2001:db8::1").unwrap();
        assert_eq!(d.family(), Family::V6);
    }

    /// keepalived's unicast TTL words: the TTL sent, and each peer's
    /// accepted range.
    #[test]
    fn unicast_ttls() {
        let d = parse(
            "v interface eth0 vrid 1 vip 192.0.2.5 unicast-peer 192.0.2.6 min-ttl 250 \
             unicast-peer 192.0.2.7 unicast-ttl 64",
        )
        .unwrap();
        assert_eq!(
            (d.unicast_ttl, d.unicast_peer_ttl.clone()),
            (64, vec![(250, 255), (0, 255)])
        );
        assert_eq!(
            d.engine_config(d.vips[0].addr).unicast_ttl,
            Some(vec![
                ("192.0.2.6".parse().unwrap(), 250, 255),
                ("192.0.2.7".parse().unwrap(), 0, 255)
            ])
        );
        for (spec, want) in [
            ("min-ttl 3", "belongs after a unicast-peer"),
            (
                "unicast-peer 192.0.2.6 min-ttl 9 max-ttl 8",
                "min-ttl 9 is above max-ttl 8",
            ),
            ("unicast-ttl 64", "needs at least one unicast-peer"),
            (
                "unicast-peer 192.0.2.6 unicast-ttl 0",
                "is not a TTL to send",
            ),
        ] {
            refused(&format!("vip 192.0.2.5 {spec}"), want);
        }
    }

    /// use-vmac: the RFC's virtual MAC, keepalived's default name.
    #[test]
    fn use_vmac() {
        let d = parse("v interface eth0 vrid 51 use-vmac vip 192.0.2.5").unwrap();
        assert_eq!(
            (d.vmac.as_deref(), d.virtual_mac()),
            (Some("vrrp.51"), [0, 0, 0x5e, 0, 1, 0x33])
        );
        let d = parse("v interface eth0 vrid 7 use-vmac vmac-name vm7 vip 2001:db8::1").unwrap();
        assert_eq!(
            (d.vmac.as_deref(), d.virtual_mac()),
            (Some("vm7"), [0, 0, 0x5e, 0, 2, 7])
        );
        let e = parse("v interface eth0 vrid 7 vmac-name vm7 vip 192.0.2.5").unwrap_err();
        assert!(e.to_string().contains("needs use-vmac"), "{e}");
    }

    /// Rules in iproute2's words; `table` and `type` after a rule are the
    /// rule's, after a route the route's.
    #[test]
    fn parses_rules() {
        let d = parse(
            "v interface eth0 vrid 1 vip 192.0.2.5 rule from 192.0.2.5 table 100 pref 10 \
             route 198.51.100.0/24 dev eth0 table 7 rule to 2001:db8::/32 type prohibit \
             rule fwmark 0x10/0xff iif eth1 table 200",
        )
        .unwrap();
        let rules: Vec<String> = d.rules.iter().map(ToString::to_string).collect();
        assert_eq!(
            rules,
            vec![
                "from 192.0.2.5/32 table 100 pref 10",
                "from ::/0 to 2001:db8::/32 prohibit",
                "from all fwmark 0x10/0xff iif eth1 table 200",
            ]
        );
        assert_eq!(d.routes[0].table, Some(7));
        for (spec, want) in [
            ("rule from 192.0.2.0/24", "a rule needs a table, or a type"),
            (
                "rule from 192.0.2.0/24 to 2001:db8::/32 table 1",
                "is not of the rule's other address's family",
            ),
            ("rule fwmark x table 1", "is not a mark"),
            ("from 192.0.2.1", "belongs after a rule"),
        ] {
            refused(&format!("vip 192.0.2.5 {spec}"), want);
        }
    }

    /// A VIP takes `ip addr add`'s brd, scope, peer and noprefixroute, as
    /// keepalived's virtual_ipaddress does; `scope` after a route is the
    /// route's.
    #[test]
    fn vip_options() {
        let d = parse(
            "v interface eth0 vrid 1 vip 192.0.2.5/24 brd 192.0.2.127 scope link noprefixroute \
             route 198.51.100.0/24 dev eth0 scope host vip 192.0.2.6 peer 192.0.2.9 label eth0:p",
        )
        .unwrap();
        let (a, b) = (&d.vips[0], &d.vips[1]);
        assert_eq!(
            (a.brd, a.scope, a.noprefixroute, b.peer, b.label.as_deref()),
            (
                Some("192.0.2.127".parse().unwrap()),
                Some(253),
                true,
                Some("192.0.2.9".parse().unwrap()),
                Some("eth0:p")
            )
        );
        assert_eq!((d.routes[0].scope, b.scope), (Some(254), None));
        for (spec, want) in [
            (
                "vip 2001:db8::1 brd 192.0.2.255",
                "is not an IPv4 address of an IPv4 VIP",
            ),
            (
                "vip 192.0.2.5 peer 2001:db8::1",
                "is not an address of the VIP's family",
            ),
            ("vip 192.0.2.5 scope everywhere", "is not a scope"),
        ] {
            refused(spec, want);
        }
    }

    /// `excluded` VIPs are added but not advertised: of either family,
    /// beyond the advert's 255, and none alone makes a version 3 instance.
    #[test]
    fn excluded_vips() {
        let d =
            parse("v interface eth0 vrid 1 vip 192.0.2.5/24 vip 2001:db8::5/64 excluded dev eth1")
                .unwrap();
        assert!(d.vips[1].excluded && d.vips[1].dev.as_deref() == Some("eth1"));
        assert_eq!(d.advertised().collect::<Vec<_>>(), vec![d.vips[0].addr]);
        assert_eq!(d.engine_config(d.vips[0].addr).vips.len(), 1);
        assert_eq!(d.family(), Family::V4);
        let many: String = (0..300)
            .map(|i| format!(" vip 198.51.{}.{} excluded", i / 250, i % 250 + 1))
            .collect();
        assert!(parse(&format!("v interface eth0 vrid 1 vip 192.0.2.5{many}")).is_ok());
        let e = parse("v interface eth0 vrid 1 vip 192.0.2.5 excluded").unwrap_err();
        assert!(e.to_string().contains("required in version 3"), "{e}");
    }

    /// Routes follow their destination with iproute2's words; `dev`
    /// after a route is the route's, after a vip the vip's.
    #[test]
    fn parses_routes() {
        let d = parse(
            "v interface eth0 vrid 1 vip 192.0.2.5 route 198.51.100.0/24 via 192.0.2.254 \
             dev eth1 src 192.0.2.5 metric 5 table 100 vip 192.0.2.6 dev eth2 \
             route default type blackhole route 2001:db8:9::/48 dev eth1 scope link",
        )
        .unwrap();
        assert_eq!(d.vips[1].dev.as_deref(), Some("eth2"));
        let r = &d.routes[0];
        assert_eq!(
            (
                r.dst.to_string(),
                r.prefix,
                r.via,
                r.dev.as_deref(),
                r.metric,
                r.table
            ),
            (
                "198.51.100.0".into(),
                24,
                Some("192.0.2.254".parse().unwrap()),
                Some("eth1"),
                Some(5),
                Some(100)
            )
        );
        assert_eq!(r.src, Some("192.0.2.5".parse().unwrap()));
        assert_eq!(
            (d.routes[1].prefix, d.routes[1].kind),
            (0, RouteKind::Blackhole)
        );
        assert_eq!((d.routes[2].prefix, d.routes[2].scope), (48, Some(253)));
        for (spec, want) in [
            (
                "route 198.51.100.0/24",
                "a unicast route needs a gateway (via) or a device (dev)",
            ),
            ("route 198.51.100.0/33 dev eth1", "is not a destination"),
            (
                "route 198.51.100.0/24 via 2001:db8::1",
                "is not an address of the route's family",
            ),
            ("route 198.51.100.0/24 type nat", "is not a route type"),
            ("via 192.0.2.1", "belongs after a route"),
        ] {
            refused(&format!("vip 192.0.2.5 {spec}"), want);
        }
    }

    #[test]
    fn notify_follows_keepalived() {
        let d = parse(
            "VI_1 interface eth0 vrid 51 vip 192.0.2.5 notify-master /m notify /n notify-stop /s",
        )
        .unwrap();
        assert_eq!(
            d.notify.commands("INSTANCE", "VI_1", State::Master, 150),
            vec![
                vec!["/m".to_owned()],
                ["/n", "INSTANCE", "VI_1", "MASTER", "150"]
                    .map(String::from)
                    .to_vec()
            ]
        );
        assert_eq!(
            d.notify
                .commands("INSTANCE", "VI_1", State::Initialize, 150),
            vec![
                vec!["/s".to_owned()],
                ["/n", "INSTANCE", "VI_1", "STOP", "150"]
                    .map(String::from)
                    .to_vec()
            ]
        );
        assert_eq!(
            d.notify.commands("INSTANCE", "VI_1", State::Fault, 1).len(),
            1
        );
    }

    #[test]
    fn parses_the_seeds_instance() {
        let d = parse(
            "VI_1 interface gretap1 vrid 51 priority 100 version 2 advert-int 1 \
             auth-pass 1111 vip 203.0.113.10/24 dev eth0 label eth0:vip",
        )
        .unwrap();
        assert_eq!((d.vrid, d.priority, d.advert_interval_cs), (51, 100, 100));
        assert_eq!(d.auth, Auth::pass("1111"));
        assert_eq!(d.vips[0].dev.as_deref(), Some("eth0"));
        assert_eq!(d.vips[0].label.as_deref(), Some("eth0:vip"));
        let d = parse("v interface eth0 vrid 1 advert-int 0.1 vip 192.0.2.5").unwrap();
        assert_eq!((d.version, d.advert_interval_cs), (Version::V3, 10));
        assert_eq!((d.family(), d.vips[0].prefix), (Family::V4, 32));
    }

    /// An instance's family is its VIPs', as in keepalived; a VIP without a
    /// prefix is a host address in either family.
    #[test]
    fn ipv6_instances() {
        let d = parse(
            "v6 interface eth0 vrid 51 vip 2001:db8::10/64 vip 2001:db8::11 \
             unicast-peer fe80::2 unicast-src fe80::1",
        )
        .unwrap();
        assert_eq!(d.family(), Family::V6);
        assert_eq!((d.vips[0].prefix, d.vips[1].prefix), (64, 128));
        assert_eq!(d.version, Version::V3);
        let c = d.engine_config("fe80::1".parse().unwrap());
        assert_eq!(c.vips.len(), 2);
    }

    #[test]
    fn at_most_255_vips() {
        let vips = |n: u32| {
            (0..n)
                .map(|i| format!(" vip 10.0.{}.{}", i / 250, i % 250 + 1))
                .collect::<String>()
        };
        assert!(parse(&format!("v interface eth0 vrid 1{}", vips(255))).is_ok());
        let e = parse(&format!("v interface eth0 vrid 1{}", vips(256))).unwrap_err();
        assert_eq!(
            e.to_string(),
            "vrrp instance v: vip: 256 virtual addresses; an advert carries at most 255 (mark the others `excluded`)"
        );
    }

    #[test]
    fn errors_name_the_field_and_value() {
        for (input, want) in [
            (
                "v interface eth0 vrid 0 vip 192.0.2.5",
                "vrid: \"0\" is not a VRID (1 to 255)",
            ),
            (
                "v interface eth0 vrid 256 vip 192.0.2.5",
                "vrid: \"256\" is not a VRID",
            ),
            (
                "v interface eth0 vrid 1 priority 0 vip 192.0.2.5",
                "priority: \"0\" is not a priority",
            ),
            (
                "v interface eth0 vrid 1 priority 300 vip 192.0.2.5",
                "priority: \"300\" is not",
            ),
            (
                "v interface eth0 vrid 1 vip 192.0.2.500",
                "vip: \"192.0.2.500\" is not an IP address",
            ),
            (
                "v interface eth0 vrid 1 vip 2001:db8::10/129",
                "vip: \"2001:db8::10/129\" has a bad prefix length",
            ),
            (
                "v interface eth0 vrid 1 vip fe80::10/64",
                "vip: \"fe80::10/64\" is not a global IPv6 address",
            ),
            (
                "v interface eth0 vrid 1 vip 192.0.2.5 vip 2001:db8::10/64",
                "vip: 2001:db8::10/64 is an IPv6 address in an IPv4 instance",
            ),
            (
                "v interface eth0 vrid 1 version 2 vip 2001:db8::10",
                "version: VRRP version 2 is IPv4-only",
            ),
            (
                "v interface eth0 vrid 1 vip 2001:db8::10 unicast-peer 192.0.2.7",
                "unicast-peer: \"192.0.2.7\" is not an IPv6 address, as the VIPs are",
            ),
            (
                "v interface eth0 vrid 1 native-ipv6 vip 192.0.2.9",
                "vip: 192.0.2.9/32 is an IPv4 address in a native-ipv6 instance",
            ),
            (
                "v vrid 1 vip 192.0.2.5",
                "interface: an interface is required",
            ),
            (
                "v interface eth0 vrid 1 version 2 advert-int 0.5 vip 192.0.2.5",
                "advert-int: 0.5 s is not whole seconds",
            ),
            (
                "v interface eth0 vrid 1 advert-int 50 vip 192.0.2.5",
                "advert-int: \"50\" is out of range",
            ),
            (
                "v interface eth0 vrid 1 auth-pass x vip 192.0.2.5",
                "auth-pass: VRRP version 3 has no authentication",
            ),
            (
                "v interface eth0 vrid 1 dev eth1 vip 192.0.2.5",
                "dev: belongs after a vip",
            ),
            (
                "v interface eth0 vrid 1 vip 192.0.2.5 color red",
                "unknown keyword \"color\"",
            ),
            (
                "v interface eth0 vrid 1 vip 192.0.2.5 label eth0:a-very-long-label",
                "label: \"eth0:a-very-long-label\" is 22 bytes long; labels have 1 to 15",
            ),
            (
                "v interface eth0 vrid 1 vip 192.0.2.5 garp-repeat 2000000",
                "garp-repeat: \"2000000\" is not a count (0 to 255)",
            ),
            (
                "v interface eth0 vrid 1 vip 192.0.2.5 garp-lower-prio-repeat -1",
                "garp-lower-prio-repeat: \"-1\" is not a count (0 to 255)",
            ),
        ] {
            let got = format!("{:#}", parse(input).unwrap_err());
            assert!(got.contains(want), "{input}\n  got: {got}\n  want: {want}");
            assert!(got.starts_with("vrrp instance v: "), "{got}");
        }
    }
}
