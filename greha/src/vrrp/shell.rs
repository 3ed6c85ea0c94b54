//! The I/O shell around the VRRP engines: definitions checked against the
//! host, sockets, timers, virtual addresses. It turns what happens on the
//! host into engine events and engine actions into packets and addresses,
//! and decides nothing itself.
use std::{
    collections::HashMap,
    net::Ipv4Addr,
    sync::Arc,
    time::{Duration, Instant},
};

use anyhow::{Context as _, Result, anyhow, bail};
use serde::Serialize;
use tokio::{sync::mpsc, task::JoinHandle};
use tracing::{info, warn};

use greha_common::{
    MAX_VRRP, VRRP_STATE_BACKUP, VRRP_STATE_FAULT, VRRP_STATE_INIT, VRRP_STATE_MASTER, VrrpCtl,
    VrrpKey, VrrpSeen, VrrpStats, names,
};

use super::{
    engine::{Action, Config, Event, Instance, Reason, State, Stats},
    io::{ArpSender, Received, VrrpSocket},
    packet::{Advert, Auth, ChecksumForm, MULTICAST, ParseError, Version},
};
use crate::{
    datapath::{Datapath, MmapArray},
    netlink::{self, Netlink},
};

/// A virtual address and where it lives (the seed runs VRRP on gretap1 and
/// puts the VIP on eth0).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct VipDef {
    pub addr: Ipv4Addr,
    pub prefix: u8,
    /// The interface to put it on; the instance's when not given.
    pub dev: Option<String>,
    pub label: Option<String>,
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
    pub unicast_peers: Vec<Ipv4Addr>,
    /// The source of unicast adverts (keepalived's unicast_src_ip); the
    /// interface's primary address when not given.
    pub unicast_src: Option<Ipv4Addr>,
    /// While master, announce the VIPs again at this interval
    /// (keepalived's garp_master_refresh); never when zero.
    pub garp_refresh: Duration,
    /// Let the XDP fast path check adverts and absorb the steady ones
    /// (`no-fastpath` turns it off: the daemon then sees every advert).
    pub fastpath: bool,
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
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum TrackKind {
    /// Up means administratively up with carrier.
    Interface(String),
    /// Run every `interval` (killed after `timeout`); `rise` successes in a
    /// row make it up, `fall` failures down. It starts up.
    Script {
        path: String,
        interval: Duration,
        timeout: Duration,
        rise: u32,
        fall: u32,
    },
}

/// Notify commands of an instance (each a program path).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Notify {
    pub master: Option<String>,
    pub backup: Option<String>,
    pub fault: Option<String>,
    pub stop: Option<String>,
    pub any: Option<String>,
}

impl Notify {
    /// The commands for entering `to`, in the order keepalived runs them.
    fn commands(&self, name: &str, to: State, priority: u8) -> Vec<Vec<String>> {
        let (specific, word) = match to {
            State::Master => (&self.master, "MASTER"),
            State::Backup => (&self.backup, "BACKUP"),
            State::Fault => (&self.fault, "FAULT"),
            State::Initialize => (&self.stop, "STOP"),
        };
        let mut out = Vec::new();
        if let Some(cmd) = specific {
            out.push(vec![cmd.clone()]);
        }
        if let Some(cmd) = &self.any {
            out.push(vec![
                cmd.clone(),
                "INSTANCE".into(),
                name.into(),
                word.into(),
                priority.to_string(),
            ]);
        }
        out
    }
}

fn bad(name: &str, field: &str, value: &str, what: &str) -> anyhow::Error {
    anyhow!("vrrp instance {name}: {field}: {value:?} {what}")
}

/// Seconds with up to two decimals, as centiseconds.
fn parse_seconds_cs(name: &str, field: &str, v: &str) -> Result<u32> {
    let secs: f64 = v
        .parse()
        .map_err(|_| bad(name, field, v, "is not a number of seconds"))?;
    let cs = (secs * 100.0).round();
    if !(0.0..=1e6).contains(&cs) || (cs / 100.0 - secs).abs() > 1e-9 {
        return Err(bad(name, field, v, "is not a whole number of centiseconds"));
    }
    Ok(cs as u32)
}

impl InstanceDef {
    /// Parses `NAME interface IF vrid N priority N [version 2|3]
    /// [advert-int SECONDS] [nopreempt] [preempt-delay SECONDS]
    /// [auth-pass PASSWORD] [checksum keepalived|rfc9568] [garp-repeat N]
    /// [garp-delay SECONDS] vip CIDR [dev IFACE] [label LABEL] ...`.
    pub fn parse(words: &[String]) -> Result<Self> {
        let mut it = words.iter().map(String::as_str).peekable();
        let name = it
            .next()
            .context("vrrp instance: a name is required")?
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
            garp_refresh: Duration::ZERO,
            fastpath: true,
        };
        let mut vrid = None;
        while let Some(word) = it.next() {
            let mut value = || {
                it.next()
                    .ok_or_else(|| anyhow!("vrrp instance {name}: {word}: a value is required"))
            };
            match word {
                "interface" => {
                    let v = value()?;
                    netlink::check_ifname(v)
                        .with_context(|| format!("vrrp instance {name}: interface"))?;
                    d.interface = v.to_owned();
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
                "garp-repeat" => {
                    let v = value()?;
                    d.garp_repeat = v
                        .parse()
                        .map_err(|_| bad(&name, word, v, "is not a count"))?;
                }
                "unicast-peer" => {
                    let v = value()?;
                    d.unicast_peers.push(
                        v.parse()
                            .map_err(|_| bad(&name, word, v, "is not an IPv4 address"))?,
                    );
                }
                "unicast-src" => {
                    let v = value()?;
                    d.unicast_src = Some(
                        v.parse()
                            .map_err(|_| bad(&name, word, v, "is not an IPv4 address"))?,
                    );
                }
                "garp-refresh" => {
                    let v = value()?;
                    let cs = parse_seconds_cs(&name, word, v)?;
                    d.garp_refresh = Duration::from_millis(u64::from(cs) * 10);
                }
                "track-interface" => {
                    let v = value()?;
                    netlink::check_ifname(v)
                        .with_context(|| format!("vrrp instance {name}: track-interface"))?;
                    d.track.push(Track {
                        kind: TrackKind::Interface(v.to_owned()),
                        weight: None,
                    });
                }
                "track-script" => d.track.push(Track {
                    kind: TrackKind::Script {
                        path: value()?.to_owned(),
                        interval: Duration::from_secs(1),
                        timeout: Duration::from_secs(1),
                        rise: 1,
                        fall: 1,
                    },
                    weight: None,
                }),
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
                            anyhow!(
                                "vrrp instance {name}: weight: belongs after a track-interface or track-script"
                            )
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
                        bail!("vrrp instance {name}: {word}: belongs after a track-script");
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
                "notify-master" => d.notify.master = Some(value()?.to_owned()),
                "notify-backup" => d.notify.backup = Some(value()?.to_owned()),
                "notify-fault" => d.notify.fault = Some(value()?.to_owned()),
                "notify-stop" => d.notify.stop = Some(value()?.to_owned()),
                "notify" => d.notify.any = Some(value()?.to_owned()),
                "garp-delay" => {
                    let v = value()?;
                    let cs = parse_seconds_cs(&name, word, v)?;
                    d.garp_delay = Duration::from_millis(u64::from(cs) * 10);
                }
                "vip" => {
                    let v = value()?;
                    let (addr, prefix) = v.split_once('/').unwrap_or((v, "32"));
                    let addr: Ipv4Addr = addr
                        .parse()
                        .map_err(|_| bad(&name, word, v, "is not an IPv4 address"))?;
                    let prefix: u8 = prefix
                        .parse()
                        .ok()
                        .filter(|p| *p <= 32)
                        .ok_or_else(|| bad(&name, word, v, "has a bad prefix length"))?;
                    d.vips.push(VipDef {
                        addr,
                        prefix,
                        dev: None,
                        label: None,
                    });
                }
                "dev" | "label" => {
                    let v = value()?.to_owned();
                    let vip = d.vips.last_mut().ok_or_else(|| {
                        anyhow!("vrrp instance {name}: {word}: belongs after a vip")
                    })?;
                    if word == "dev" {
                        netlink::check_ifname(&v)
                            .with_context(|| format!("vrrp instance {name}: dev"))?;
                        vip.dev = Some(v);
                    } else {
                        vip.label = Some(v);
                    }
                }
                other => bail!("vrrp instance {name}: unknown keyword {other:?}"),
            }
        }
        if d.interface.is_empty() {
            bail!("vrrp instance {name}: interface: an interface is required");
        }
        d.vrid = vrid.with_context(|| format!("vrrp instance {name}: vrid: a VRID is required"))?;
        if d.vips.is_empty() {
            bail!("vrrp instance {name}: vip: at least one virtual address is required");
        }
        if d.version == Version::V2 && !d.advert_interval_cs.is_multiple_of(100) {
            bail!(
                "vrrp instance {name}: advert-int: {} s is not whole seconds, which VRRP version 2 requires",
                f64::from(d.advert_interval_cs) / 100.0
            );
        }
        if d.unicast_src.is_some() && d.unicast_peers.is_empty() {
            bail!("vrrp instance {name}: unicast-src: needs at least one unicast-peer");
        }
        if d.version == Version::V3 && d.auth != Auth::None {
            bail!("vrrp instance {name}: auth-pass: VRRP version 3 has no authentication");
        }
        Ok(d)
    }
}

/// Counters of packets no instance could own.
#[derive(Clone, Debug, Default, Serialize)]
pub struct GlobalStats {
    pub checksum_errors: u64,
    pub version_errors: u64,
    pub vrid_errors: u64,
    /// Adverts to an instance with unicast peers from an address not among
    /// them.
    pub unknown_unicast_sources: u64,
    /// v3 adverts whose checksum verified with the IPv4 pseudo-header
    /// (keepalived's form) and without it (RFC 9568's).
    pub rcvd_checksum_pseudo_header: u64,
    pub rcvd_checksum_vrrp_only: u64,
}

/// One instance's view for status output.
#[derive(Clone, Debug, Serialize)]
pub struct InstanceStatus {
    pub name: String,
    pub interface: String,
    pub vrid: u8,
    pub state: State,
    pub priority: u8,
    pub master: Option<Ipv4Addr>,
    /// When the current state began, in milliseconds since the Unix epoch.
    pub since_unix_ms: u128,
    /// The most recent transitions, oldest first (at most 16).
    pub transitions: Vec<TransitionRecord>,
    pub stats: Stats,
    /// The XDP fast path's counters; null without a fast path.
    pub fastpath: Option<VrrpStats>,
    /// Adverts the daemon itself processed: those the fast path passed,
    /// plus one per Master_Down check that found absorbed ones. Without a
    /// fast path, every advert.
    pub daemon_adverts: u64,
}

/// One state change, for status output.
#[derive(Clone, Debug, Serialize)]
pub struct TransitionRecord {
    pub at_unix_ms: u128,
    pub from: State,
    pub to: State,
    pub reason: Reason,
}

/// Transitions kept per instance for status output.
const TRANSITIONS_KEPT: usize = 16;

struct Vip {
    addr: Ipv4Addr,
    prefix: u8,
    label: Option<String>,
    ifindex: u32,
    mac: [u8; 6],
}

struct Running {
    /// Stable across reconfigurations, unlike the position in the list.
    id: u64,
    def: InstanceDef,
    engine: Instance,
    /// Index into `Vrrp::sockets`.
    socket: usize,
    /// The source of adverts: the interface's primary address, or the
    /// unicast source.
    primary: Ipv4Addr,
    /// Sends the unicast adverts, when there are unicast peers.
    unicast: Option<VrrpSocket>,
    vips: Vec<Vip>,
    /// VIPs this run added, removed exactly on leaving Master.
    added: Vec<(u32, Ipv4Addr)>,
    garp: Option<JoinHandle<()>>,
    transitions: std::collections::VecDeque<TransitionRecord>,
    trackers: Vec<Tracker>,
    /// A weightless tracker is down: the engine was told Fault(true).
    faulted: bool,
    /// The check scripts' loops, stopped with the instance.
    script_tasks: Vec<JoinHandle<()>>,
    /// The XDP fast path's view of this instance, when it has one.
    fast: Option<Fast>,
    /// Start as master (a restart with the datapath kept).
    resume: bool,
}

/// Which socket an advert leaves by.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Outlet {
    Shared(usize),
    Unicast(u64),
}

/// An instance's entry in the fast path's maps.
struct Fast {
    key: VrrpKey,
    /// The instance's record in GREHA_VRRP_SEEN.
    slot: u32,
    /// What GREHA_VRRP_CTL holds now (written only when it changes).
    ctl: Option<VrrpCtl>,
    /// The newest GREHA_VRRP_SEEN time already given to the engine.
    fed_ns: u64,
    /// Absorbed adverts given to the engine that way (it counted them).
    fed: u64,
}

/// The fast path's maps, opened once from the pins.
struct FastMaps {
    ctl: aya::maps::HashMap<aya::maps::MapData, VrrpKey, VrrpCtl>,
    seen: MmapArray<VrrpSeen>,
    stats: aya::maps::PerCpuHashMap<aya::maps::MapData, VrrpKey, VrrpStats>,
}

/// Record `slot` of GREHA_VRRP_SEEN as one consistent copy: the program
/// writes the time last, so an unchanged time around the copy means no
/// write overlapped it. None if the program kept writing.
fn read_seen(seen: &MmapArray<VrrpSeen>, slot: u32) -> Option<VrrpSeen> {
    let p = seen.ptr(slot)?;
    for _ in 0..4 {
        // SAFETY: an aligned element inside the mapping; volatile, as the
        // program writes it concurrently.
        let before = unsafe { (&raw const (*p).last_ns).read_volatile() };
        std::sync::atomic::fence(std::sync::atomic::Ordering::Acquire);
        let copy = unsafe { p.read_volatile() };
        std::sync::atomic::fence(std::sync::atomic::Ordering::Acquire);
        let after = unsafe { (&raw const (*p).last_ns).read_volatile() };
        if before == after && copy.last_ns == before {
            return Some(copy);
        }
    }
    None
}

/// The XDP program's link on an interface, named by ifindex.
fn fastpath_pin(ifindex: u32) -> String {
    format!("vrrp-{ifindex}")
}

/// An instance checked against the host, not yet started.
pub struct Prepared {
    def: InstanceDef,
    link: netlink::Link,
    primary: Ipv4Addr,
    vips: Vec<Vip>,
    trackers: Vec<Tracker>,
}

/// Why `Vrrp::run` returned.
pub enum Exit {
    Shutdown,
    /// Reload asked by SIGHUP (no connection) or `greha reload` (answer
    /// on the connection).
    Reload(Option<tokio::net::UnixStream>),
}

/// What the daemon's loop listens to besides VRRP.
pub struct DaemonIo {
    pub term: tokio::signal::unix::Signal,
    pub int: tokio::signal::unix::Signal,
    pub hup: tokio::signal::unix::Signal,
    /// `greha status` and `greha reload`.
    pub control: tokio::net::UnixListener,
    pub metrics: Option<(tokio::net::TcpListener, std::path::PathBuf)>,
}

/// A control connection's request.
enum Request {
    Status,
    Reload,
}

struct Tracker {
    track: Track,
    /// The tracked interface (0 for a script).
    ifindex: u32,
    up: bool,
    successes: u32,
    failures: u32,
}

impl Running {
    /// Fault, and the priority the trackers' weights give.
    fn tracked(&self) -> (bool, u8) {
        let fault = self
            .trackers
            .iter()
            .any(|t| t.track.weight.is_none() && !t.up);
        let base = i32::from(self.def.priority);
        if base == 255 {
            return (fault, 255);
        }
        let delta: i32 = self
            .trackers
            .iter()
            .filter_map(|t| match t.track.weight {
                Some(w) if w > 0 && t.up => Some(w),
                Some(w) if w < 0 && !t.up => Some(w),
                _ => None,
            })
            .sum();
        (fault, (base + delta).clamp(1, 254) as u8)
    }
}

/// All VRRP instances of the daemon.
pub struct Vrrp {
    nl: Netlink,
    sockets: Vec<(u32, Arc<VrrpSocket>)>,
    instances: Vec<Running>,
    epoch: Instant,
    /// The wall-clock time of `epoch`, for status output.
    epoch_unix_ms: u128,
    /// CLOCK_MONOTONIC at `epoch`: the clock of bpf_ktime_get_ns.
    epoch_mono_ns: u64,
    /// Where the datapath is pinned; no fast path without it.
    pin_dir: Option<std::path::PathBuf>,
    fast_maps: Option<FastMaps>,
    arp: Arc<ArpSender>,
    /// While set, adverts wait here and leave together: one sendmmsg per
    /// socket for all the instances due at the same tick. (Socket index,
    /// or the instance's unicast socket by instance id; bytes;
    /// destination.)
    outbox: Option<Vec<(Outlet, Vec<u8>, Ipv4Addr)>>,
    rx: mpsc::Receiver<(usize, Received)>,
    rx_tx: mpsc::Sender<(usize, Received)>,
    readers: Vec<JoinHandle<()>>,
    next_id: u64,
    /// Instances that were master when a restart with the datapath kept
    /// stopped the previous run, and when (Unix ms): they resume as master
    /// if that is recent enough.
    resume: HashMap<String, u128>,
    requests: mpsc::Receiver<(Request, tokio::net::UnixStream)>,
    requests_tx: mpsc::Sender<(Request, tokio::net::UnixStream)>,
    links: Option<mpsc::UnboundedReceiver<(u32, bool)>>,
    scripts: mpsc::Receiver<(u64, usize, bool)>,
    script_tx: mpsc::Sender<(u64, usize, bool)>,
    /// Notify commands, run one after the other in transition order.
    notify_tx: Option<mpsc::UnboundedSender<Vec<String>>>,
    notifier: Option<JoinHandle<()>>,
    pub global: GlobalStats,
}

impl Vrrp {
    /// Checks the definitions against the host, removes VIPs an earlier
    /// run left behind, opens the sockets and starts every instance.
    pub async fn start(
        defs: Vec<InstanceDef>,
        pin_dir: Option<std::path::PathBuf>,
    ) -> Result<Self> {
        let nl = Netlink::new()?;
        let (rx_tx, rx) = mpsc::channel(1024);
        let (script_tx, scripts) = mpsc::channel(64);
        let (requests_tx, requests) = mpsc::channel(16);
        let (notify_tx, mut notify_rx) = mpsc::unbounded_channel::<Vec<String>>();
        let notifier = tokio::spawn(async move {
            while let Some(argv) = notify_rx.recv().await {
                run_notify(&argv).await;
            }
        });
        let mut vrrp = Self {
            nl,
            sockets: Vec::new(),
            instances: Vec::new(),
            epoch: Instant::now(),
            epoch_unix_ms: std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap_or_default()
                .as_millis(),
            epoch_mono_ns: monotonic_ns(),
            pin_dir,
            fast_maps: None,
            arp: Arc::new(ArpSender::open()?),
            outbox: None,
            rx,
            rx_tx,
            readers: Vec::new(),
            next_id: 0,
            resume: HashMap::new(),
            requests,
            requests_tx,
            notify_tx: Some(notify_tx),
            notifier: Some(notifier),
            links: None,
            scripts,
            script_tx,
            global: GlobalStats::default(),
        };
        // All checked before the host changes.
        let prepared = vrrp.prepare(&defs, &[]).await?;
        for p in prepared {
            vrrp.add(p).await?;
        }
        vrrp.start_engines(0).await;
        Ok(vrrp)
    }

    /// Checks `defs` against the host (interfaces, addresses, VRIDs unique
    /// with `kept`), changing nothing.
    async fn prepare(&self, defs: &[InstanceDef], kept: &[&InstanceDef]) -> Result<Vec<Prepared>> {
        let nl = &self.nl;
        let mut seen: HashMap<(String, u8), String> = kept
            .iter()
            .map(|d| ((d.interface.clone(), d.vrid), d.name.clone()))
            .collect();
        let mut prepared = Vec::new();
        for def in defs.iter().cloned() {
            let name = &def.name;
            if let Some(other) = seen.insert((def.interface.clone(), def.vrid), name.clone()) {
                bail!(
                    "vrrp instance {name}: vrid: {} on {} is already instance {other}'s",
                    def.vrid,
                    def.interface
                );
            }
            let link = nl.link_by_name(&def.interface).await?.ok_or_else(|| {
                anyhow!(
                    "vrrp instance {name}: interface: {} does not exist",
                    def.interface
                )
            })?;
            let own = nl.addresses(link.index).await?;
            let (mut primary, _) = *own.first().ok_or_else(|| {
                anyhow!(
                    "vrrp instance {name}: interface: {} has no IPv4 address to send from",
                    def.interface
                )
            })?;
            if let Some(src) = def.unicast_src {
                if !own.iter().any(|(a, _)| *a == src) {
                    bail!(
                        "vrrp instance {name}: unicast-src: {src} is not an address of {}",
                        def.interface
                    );
                }
                primary = src;
            }
            let mut vips = Vec::new();
            for v in &def.vips {
                let dev = v.dev.as_deref().unwrap_or(&def.interface);
                let l = nl.link_by_name(dev).await?.ok_or_else(|| {
                    anyhow!(
                        "vrrp instance {name}: vip {}: dev {dev} does not exist",
                        v.addr
                    )
                })?;
                vips.push(Vip {
                    addr: v.addr,
                    prefix: v.prefix,
                    label: v.label.clone(),
                    ifindex: l.index,
                    mac: l.mac,
                });
            }
            let not_owned = def
                .vips
                .iter()
                .find(|v| !own.iter().any(|(a, _)| *a == v.addr));
            if def.priority == 255
                && let Some(v) = not_owned
            {
                bail!(
                    "vrrp instance {name}: priority: 255 is for the address owner, and {} is not an address of {}",
                    v.addr,
                    def.interface
                );
            }
            let mut trackers = Vec::new();
            for t in &def.track {
                let (ifindex, up) = match &t.kind {
                    TrackKind::Interface(ifname) => {
                        let l = nl.link_by_name(ifname).await?.ok_or_else(|| {
                            anyhow!(
                                "vrrp instance {name}: track-interface: {ifname} does not exist"
                            )
                        })?;
                        (l.index, l.up)
                    }
                    TrackKind::Script { .. } => (0, true),
                };
                trackers.push(Tracker {
                    track: t.clone(),
                    ifindex,
                    up,
                    successes: 0,
                    failures: 0,
                });
            }
            prepared.push(Prepared {
                def,
                link,
                primary,
                vips,
                trackers,
            });
        }
        Ok(prepared)
    }

    /// Instances that were master at `at_unix_ms` resume as master when
    /// they start, if that is within three of their advertisement
    /// intervals (well inside the backups' Master_Down_Interval).
    pub fn resume_masters(&mut self, names: impl IntoIterator<Item = (String, u128)>) {
        self.resume.extend(names);
    }

    /// The instances that are master now, for a restart to resume.
    pub fn masters(&self) -> Vec<String> {
        self.instances
            .iter()
            .filter(|r| r.engine.state() == State::Master)
            .map(|r| r.def.name.clone())
            .collect()
    }

    /// Starts a prepared instance.
    async fn add(&mut self, p: Prepared) -> Result<()> {
        let Prepared {
            def,
            link,
            primary,
            vips,
            trackers,
        } = p;
        let now_ms = self.epoch_unix_ms + self.epoch.elapsed().as_millis();
        let resume = self.resume.remove(&def.name).is_some_and(|at| {
            now_ms.saturating_sub(at) < u128::from(def.advert_interval_cs) * 10 * 3
        });
        // A resumed master keeps its VIPs: they never went away.
        if def.priority != 255 && !resume {
            for v in &vips {
                // A crashed run may have left its VIPs (keepalived issue
                // #2361); a starting backup must not hold them.
                if self.nl.del_address(v.ifindex, v.addr).await? {
                    warn!(instance = %def.name, vip = %v.addr, "removed a VIP left behind by an earlier run");
                }
            }
        }
        let socket = match self.sockets.iter().position(|(i, _)| *i == link.index) {
            Some(i) => i,
            None => {
                let sock = Arc::new(VrrpSocket::open(&def.interface, link.index, primary)?);
                let i = self.sockets.len();
                let (s, tx) = (Arc::clone(&sock), self.rx_tx.clone());
                self.readers.push(tokio::spawn(async move {
                    while let Ok(r) = s.recv().await {
                        if tx.send((i, r)).await.is_err() {
                            break;
                        }
                    }
                }));
                self.sockets.push((link.index, sock));
                i
            }
        };
        let unicast = if def.unicast_peers.is_empty() {
            None
        } else {
            Some(VrrpSocket::open_unicast(&def.interface, primary)?)
        };
        if self.links.is_none() && trackers.iter().any(|t| t.ifindex != 0) {
            self.links = Some(netlink::watch_links()?);
        }
        let id = self.next_id;
        self.next_id += 1;
        let mut script_tasks = Vec::new();
        for (t, tracker) in trackers.iter().enumerate() {
            if let TrackKind::Script {
                path,
                interval,
                timeout,
                ..
            } = &tracker.track.kind
            {
                let (path, interval, timeout) = (path.clone(), *interval, *timeout);
                let tx = self.script_tx.clone();
                script_tasks.push(tokio::spawn(async move {
                    loop {
                        let mut cmd = tokio::process::Command::new(&path);
                        cmd.kill_on_drop(true);
                        let ok = matches!(
                            tokio::time::timeout(timeout, cmd.status()).await,
                            Ok(Ok(s)) if s.success()
                        );
                        if tx.send((id, t, ok)).await.is_err() {
                            break;
                        }
                        tokio::time::sleep(interval).await;
                    }
                }));
            }
        }
        let cfg = Config {
            name: def.name.clone(),
            version: def.version,
            vrid: def.vrid,
            priority: def.priority,
            advert_interval_cs: def.advert_interval_cs,
            preempt: def.preempt,
            preempt_delay: def.preempt_delay,
            primary_ip: primary,
            vips: def.vips.iter().map(|v| v.addr).collect(),
            auth: def.auth.clone(),
        };
        let fast = if def.fastpath {
            self.fastpath_attach(&def.name, &def.interface, link.index, def.vrid)
        } else {
            None
        };
        self.instances.push(Running {
            id,
            fast,
            resume: false,
            engine: Instance::new(cfg),
            def,
            socket,
            primary,
            unicast,
            vips,
            added: Vec::new(),
            garp: None,
            transitions: std::collections::VecDeque::new(),
            trackers,
            faulted: false,
            script_tasks,
        });
        self.instances.last_mut().expect("just pushed").resume = resume;
        Ok(())
    }

    /// Starts the engines of the instances just added, together: their
    /// Master_Down timers must not run while the others are being set up
    /// and no advert is read.
    async fn start_engines(&mut self, from: usize) {
        for i in from..self.instances.len() {
            // Trackers first: an instance whose tracked interface is down
            // starts in Fault, not as a backup that could become master.
            let (fault, priority) = self.instances[i].tracked();
            self.feed(i, Event::Priority(priority)).await;
            if fault {
                self.instances[i].faulted = true;
                self.feed(i, Event::Fault(true)).await;
            } else if self.instances[i].resume {
                info!(instance = %self.instances[i].def.name, "resuming as master after a restart");
                self.feed(i, Event::Resume).await;
            } else {
                self.feed(i, Event::Startup).await;
            }
        }
    }

    /// Stops instance `i`: it resigns, removes its VIPs and is forgotten.
    async fn remove(&mut self, i: usize) {
        self.feed(i, Event::Shutdown).await;
        self.fastpath_forget(i);
        let r = self.instances.remove(i);
        for t in r.script_tasks {
            t.abort();
        }
        if let Some(g) = r.garp {
            g.abort();
        }
    }

    /// Applies a new set of definitions: instances whose definition did
    /// not change keep running untouched (no transition, no packet);
    /// removed or changed ones stop, added or changed ones start. Every new
    /// definition is checked against the host before anything changes.
    /// Returns the names (added, removed).
    pub async fn reconfigure(
        &mut self,
        defs: Vec<InstanceDef>,
    ) -> Result<(Vec<String>, Vec<String>)> {
        let kept: Vec<&InstanceDef> = self
            .instances
            .iter()
            .map(|r| &r.def)
            .filter(|d| defs.contains(d))
            .collect();
        let fresh: Vec<InstanceDef> = defs.iter().filter(|d| !kept.contains(d)).cloned().collect();
        let prepared = self.prepare(&fresh, &kept).await?;
        let mut removed = Vec::new();
        let mut i = 0;
        while i < self.instances.len() {
            if defs.contains(&self.instances[i].def) {
                i += 1;
            } else {
                removed.push(self.instances[i].def.name.clone());
                self.remove(i).await;
            }
        }
        let added = fresh.iter().map(|d| d.name.clone()).collect();
        let first = self.instances.len();
        for p in prepared {
            self.add(p).await?;
        }
        self.start_engines(first).await;
        Ok((added, removed))
    }

    fn now(&self) -> Duration {
        self.epoch.elapsed()
    }

    /// An engine time as milliseconds since the Unix epoch.
    fn unix_ms(&self, t: Duration) -> u128 {
        self.epoch_unix_ms + t.as_millis()
    }

    /// Each instance's view. Its RFC 6527 statistics include what the
    /// fast path dropped or absorbed, which the engine never saw.
    pub fn status(&self) -> Vec<InstanceStatus> {
        self.instances
            .iter()
            .map(|r| {
                let fastpath = self.fastpath_stats(r);
                let mut stats = r.engine.stats().clone();
                if let Some(f) = &fastpath {
                    stats.ip_ttl_errors += f.ip_ttl_errors;
                    stats.adv_interval_errors += f.adv_interval_errors;
                    stats.auth_failures += f.auth_failures;
                    stats.packet_length_errors += f.packet_length_errors;
                    stats.rcvd_invalid_type_packets += f.rcvd_invalid_type_packets;
                    // The absorbed adverts fed to the timer were counted
                    // by the engine already.
                    let fed = r.fast.as_ref().map_or(0, |f| f.fed);
                    stats.rcvd_advertisements += f.absorbed.saturating_sub(fed);
                }
                InstanceStatus {
                    name: r.def.name.clone(),
                    interface: r.def.interface.clone(),
                    vrid: r.def.vrid,
                    state: r.engine.state(),
                    priority: r.engine.priority(),
                    master: r.engine.master(),
                    since_unix_ms: self.unix_ms(r.engine.since()),
                    transitions: r.transitions.iter().cloned().collect(),
                    daemon_adverts: r.engine.stats().rcvd_advertisements,
                    stats,
                    fastpath,
                }
            })
            .collect()
    }

    /// The global counters, with the checksum and version errors the fast
    /// path dropped.
    pub fn global(&self) -> GlobalStats {
        let mut g = self.global.clone();
        for r in &self.instances {
            if let Some(f) = self.fastpath_stats(r) {
                g.checksum_errors += f.checksum_errors;
                g.version_errors += f.version_errors;
            }
        }
        g
    }

    /// Runs until a signal or a control request needs the daemon: SIGTERM
    /// or SIGINT (`Exit::Shutdown`: call `shutdown` next), SIGHUP or `greha
    /// reload` (`Exit::Reload`: call `run` again afterwards; the engines,
    /// their timers and the sockets carry on in between).
    pub async fn run(&mut self, io: &mut DaemonIo) -> Result<Exit> {
        // Under systemd with WatchdogSec, prove liveness at half the period.
        let mut watchdog = watchdog_period().map(|p| tokio::time::interval(p / 2));
        loop {
            let deadline = self
                .instances
                .iter()
                .filter_map(|r| r.engine.next_deadline())
                .min();
            let sleep = async {
                match deadline {
                    Some(d) => tokio::time::sleep_until((self.epoch + d).into()).await,
                    None => std::future::pending().await,
                }
            };
            tokio::select! {
                _ = io.term.recv() => {
                    info!("SIGTERM: shutting down");
                    return Ok(Exit::Shutdown);
                }
                _ = io.int.recv() => {
                    info!("SIGINT: shutting down");
                    return Ok(Exit::Shutdown);
                }
                _ = io.hup.recv() => {
                    info!("SIGHUP: reloading");
                    return Ok(Exit::Reload(None));
                }
                Some((req, mut conn)) = self.requests.recv() => match req {
                    Request::Reload => return Ok(Exit::Reload(Some(conn))),
                    Request::Status => {
                        use tokio::io::AsyncWriteExt as _;
                        let doc = serde_json::json!({
                            "vrrp": self.status(),
                            "vrrp_global": self.global(),
                        })
                        .to_string();
                        // Off the VRRP loop: a slow client must not delay
                        // an advert.
                        tokio::spawn(async move {
                            let _ = conn.write_all(doc.as_bytes()).await;
                        });
                    }
                },
                Some((sock, r)) = self.rx.recv() => self.received(sock, r).await,
                _ = async {
                    match &mut watchdog {
                        Some(t) => t.tick().await,
                        None => std::future::pending().await,
                    }
                } => {
                    let _ = sd_notify::notify(false, &[sd_notify::NotifyState::Watchdog]);
                }
                Some((ifindex, up)) = recv_opt(&mut self.links) => {
                    for i in 0..self.instances.len() {
                        let mut changed = false;
                        for t in &mut self.instances[i].trackers {
                            if t.ifindex == ifindex && t.up != up {
                                t.up = up;
                                changed = true;
                            }
                        }
                        if changed {
                            self.retrack(i).await;
                        }
                    }
                }
                Some((id, t, ok)) = self.scripts.recv() => {
                    let Some(i) = self.instances.iter().position(|r| r.id == id) else {
                        continue;
                    };
                    let tr = &mut self.instances[i].trackers[t];
                    let TrackKind::Script { rise, fall, .. } = tr.track.kind else {
                        continue;
                    };
                    if ok {
                        tr.successes += 1;
                        tr.failures = 0;
                    } else {
                        tr.failures += 1;
                        tr.successes = 0;
                    }
                    let flip = if tr.up { tr.failures >= fall } else { tr.successes >= rise };
                    if flip {
                        tr.up = !tr.up;
                        self.retrack(i).await;
                    }
                }
                Ok((mut conn, _)) = async {
                    match &io.metrics {
                        Some((l, _)) => l.accept().await,
                        None => std::future::pending().await,
                    }
                } => {
                    use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
                    let pin_dir = &io.metrics.as_ref().expect("accepted on it").1;
                    let tunnels = crate::tunnel::list(pin_dir).unwrap_or_default();
                    let body = crate::metrics::render(&self.status(), &self.global(), &tunnels);
                    let reply = format!(
                        "HTTP/1.0 200 OK\r\nContent-Type: text/plain; version=0.0.4\r\n\
                         Content-Length: {}\r\nConnection: close\r\n\r\n{body}",
                        body.len()
                    );
                    // Answered off the VRRP loop: a slow client must not
                    // delay an advert. The request is read (whatever it
                    // asks, the answer is the metrics) so that closing does
                    // not reset the connection under the reply.
                    tokio::spawn(async move {
                        let mut req = [0u8; 1024];
                        let _ = tokio::time::timeout(Duration::from_secs(1), conn.read(&mut req)).await;
                        let _ = conn.write_all(reply.as_bytes()).await;
                        let _ = conn.shutdown().await;
                    });
                }
                Ok((conn, _)) = io.control.accept() => {
                    // The one-line request is read off the loop too.
                    let tx = self.requests_tx.clone();
                    tokio::spawn(async move {
                        use tokio::io::AsyncBufReadExt as _;
                        let mut conn = tokio::io::BufReader::new(conn);
                        let mut line = String::new();
                        let read = tokio::time::timeout(
                            Duration::from_secs(1),
                            conn.read_line(&mut line),
                        )
                        .await;
                        let req = match (read, line.trim()) {
                            (Ok(Ok(_)), "reload") => Request::Reload,
                            _ => Request::Status,
                        };
                        let _ = tx.send((req, conn.into_inner())).await;
                    });
                }
                () = sleep => {
                    let now = self.now();
                    self.outbox = Some(Vec::new());
                    for i in 0..self.instances.len() {
                        // Master_Down may only look due: the fast path may
                        // have absorbed the master's adverts. Every
                        // instance takes its newest one now, due or not (a
                        // read of shared memory): their timers then fall
                        // due together, and the daemon wakes once for all
                        // rather than once per group of instances.
                        self.fastpath_absorbed(i).await;
                        if self.instances[i].engine.next_deadline().is_some_and(|d| d <= now) {
                            self.feed(i, Event::Timer).await;
                        }
                    }
                    self.flush();
                }
            }
        }
    }

    /// Resigns every instance, then waits (bounded) for the notify
    /// commands of the shutdown.
    pub async fn shutdown(&mut self) -> Result<()> {
        for i in 0..self.instances.len() {
            self.feed(i, Event::Shutdown).await;
        }
        for i in 0..self.instances.len() {
            self.fastpath_forget(i);
        }
        // Let the notify commands of the shutdown run before exiting.
        self.notify_tx = None;
        if let Some(n) = self.notifier.take()
            && tokio::time::timeout(NOTIFY_TIMEOUT * 4, n).await.is_err()
        {
            warn!("notify commands still running at exit");
        }
        Ok(())
    }

    /// Tells instance `i` what its trackers now say.
    async fn retrack(&mut self, i: usize) {
        let (fault, priority) = self.instances[i].tracked();
        if priority != self.instances[i].engine.priority() {
            self.feed(i, Event::Priority(priority)).await;
        }
        if fault != self.instances[i].faulted {
            self.instances[i].faulted = fault;
            self.feed(i, Event::Fault(fault)).await;
        }
    }

    async fn received(&mut self, sock: usize, r: Received) {
        let (advert, form) = match Advert::parse(&r.payload, r.src, r.dst) {
            Ok(ok) => ok,
            Err(e) => {
                let vrid = r.payload.get(1).copied();
                let owner = self
                    .instances
                    .iter_mut()
                    .find(|i| i.socket == sock && Some(i.def.vrid) == vrid);
                match (e, owner) {
                    (ParseError::Checksum, _) => self.global.checksum_errors += 1,
                    (ParseError::Version(_), _) => self.global.version_errors += 1,
                    (ParseError::Type(_), Some(i)) => i.engine.count_invalid_type(),
                    (ParseError::Length, Some(i)) => i.engine.count_length_error(),
                    (ParseError::AuthType(_), Some(i)) => i.engine.count_auth_failure(),
                    (_, None) => self.global.vrid_errors += 1,
                }
                return;
            }
        };
        if advert.version == Version::V3 {
            match form {
                ChecksumForm::PseudoHeader => self.global.rcvd_checksum_pseudo_header += 1,
                ChecksumForm::VrrpOnly => self.global.rcvd_checksum_vrrp_only += 1,
            }
        }
        let Some(i) = self
            .instances
            .iter()
            .position(|i| i.socket == sock && i.def.vrid == advert.vrid)
        else {
            self.global.vrid_errors += 1;
            return;
        };
        if self.instances[i].def.version != advert.version {
            self.global.version_errors += 1;
            return;
        }
        let peers = &self.instances[i].def.unicast_peers;
        if !peers.is_empty() && !peers.contains(&r.src) {
            self.global.unknown_unicast_sources += 1;
            return;
        }
        self.feed(
            i,
            Event::Advert {
                src: r.src,
                ttl: r.ttl,
                advert,
            },
        )
        .await;
    }

    /// Gives instance `i` an event and carries out what it answers.
    async fn feed(&mut self, i: usize, event: Event) {
        let now = self.now();
        self.feed_at(i, now, event).await;
    }

    /// `feed` at a given engine time (an advert the fast path absorbed
    /// earlier).
    async fn feed_at(&mut self, i: usize, t: Duration, event: Event) {
        let actions = self.instances[i].engine.handle(t, event);
        for action in actions {
            if let Err(e) = self.act(i, action).await {
                warn!(instance = %self.instances[i].def.name, "{e:#}");
            }
        }
        self.fastpath_sync(i);
    }

    /// Sends what the tick queued: one sendmmsg per socket.
    fn flush(&mut self) {
        let Some(out) = self.outbox.take() else {
            return;
        };
        let mut outlets: Vec<Outlet> = Vec::new();
        for (o, _, _) in &out {
            if !outlets.contains(o) {
                outlets.push(*o);
            }
        }
        for outlet in outlets {
            let batch: Vec<(Vec<u8>, Ipv4Addr)> = out
                .iter()
                .filter(|(o, _, _)| *o == outlet)
                .map(|(_, b, d)| (b.clone(), *d))
                .collect();
            let sent = match outlet {
                Outlet::Shared(s) => self.sockets[s].1.send_batch(&batch),
                Outlet::Unicast(id) => match self
                    .instances
                    .iter()
                    .find(|r| r.id == id)
                    .and_then(|r| r.unicast.as_ref())
                {
                    Some(sock) => sock.send_batch(&batch),
                    None => Ok(()),
                },
            };
            if let Err(e) = sent {
                warn!("sending {} advertisements: {e}", batch.len());
            }
        }
    }

    /// Attaches the fast path to `ifindex` unless it is there already, and
    /// opens the maps: XDP on an interface, tcx ingress on a greha tunnel
    /// (its frames arrive by a tc redirect, which XDP never sees). Without
    /// the datapath (or if the interface refuses) the instance runs without
    /// a fast path, which behaves the same.
    fn fastpath_attach(&mut self, name: &str, iface: &str, ifindex: u32, vrid: u8) -> Option<Fast> {
        let pin_dir = self.pin_dir.clone()?;
        // The lowest record no other instance uses.
        let slot = (0..MAX_VRRP).find(|s| {
            !self
                .instances
                .iter()
                .any(|r| r.fast.as_ref().is_some_and(|f| f.slot == *s))
        })?;
        let attached = (|| -> Result<()> {
            let dp = Datapath::open(&pin_dir)?;
            if self.fast_maps.is_none() {
                self.fast_maps = Some(FastMaps {
                    ctl: dp.map(names::MAP_VRRP_CTL)?.try_into()?,
                    seen: dp.mmap_array(names::MAP_VRRP_SEEN, MAX_VRRP)?,
                    stats: dp.map(names::MAP_VRRP_STATS)?.try_into()?,
                });
            }
            if let Some(maps) = &self.fast_maps {
                // A record left by an instance that had the slot before.
                maps.seen.write(slot, VrrpSeen::default());
            }
            let pin = fastpath_pin(ifindex);
            if !dp.pinned_link_exists(&pin) {
                let tunnels: aya::maps::HashMap<_, u32, u32> =
                    dp.map(names::MAP_TUNNEL_BY_DEV)?.try_into()?;
                if tunnels.get(&ifindex, 0).is_ok() {
                    dp.attach_tc_pinned(
                        names::PROG_VRRP_TC,
                        iface,
                        aya::programs::TcAttachType::Ingress,
                        &pin,
                    )?;
                    info!(instance = %name, iface, "VRRP fast path attached (tcx ingress of a greha tunnel)");
                } else {
                    let mode = dp.attach_xdp_pinned(names::PROG_VRRP, ifindex, &pin)?;
                    info!(instance = %name, iface, %mode, "VRRP fast path attached");
                }
            }
            Ok(())
        })();
        match attached {
            Ok(()) => Some(Fast {
                key: VrrpKey {
                    ifindex,
                    vrid: u32::from(vrid),
                },
                slot,
                ctl: None,
                fed_ns: 0,
                fed: 0,
            }),
            Err(e) => {
                warn!(instance = %name, "running without the fast path: {e:#}");
                None
            }
        }
    }

    /// Writes what the XDP program must know of instance `i`, if it
    /// changed.
    fn fastpath_sync(&mut self, i: usize) {
        let r = &mut self.instances[i];
        let (Some(fast), Some(maps)) = (&mut r.fast, &mut self.fast_maps) else {
            return;
        };
        let (auth_type, auth) = match &r.def.auth {
            Auth::None => (0, [0; 8]),
            Auth::Pass(p) => (1, *p),
        };
        let (master_ip, master_priority, master_interval_cs) = r
            .engine
            .followed()
            .map_or(([0; 4], 0, 0), |(m, p, int)| (m.octets(), p, int));
        let ctl = VrrpCtl {
            version: match r.def.version {
                Version::V2 => 2,
                Version::V3 => 3,
            },
            state: match r.engine.state() {
                State::Initialize => VRRP_STATE_INIT,
                State::Backup => VRRP_STATE_BACKUP,
                State::Master => VRRP_STATE_MASTER,
                State::Fault => VRRP_STATE_FAULT,
            },
            fastpath: 1,
            auth_type,
            interval_cs: r.def.advert_interval_cs,
            vip_count: r.def.vips.len() as u16,
            auth,
            master_ip,
            master_priority,
            _pad: [0],
            master_interval_cs,
            slot: fast.slot,
            priority: r.engine.priority(),
            preempt: u8::from(r.def.preempt),
            _pad2: [0; 2],
        };
        if fast.ctl != Some(ctl) {
            match maps.ctl.insert(fast.key, ctl, 0) {
                Ok(()) => fast.ctl = Some(ctl),
                Err(e) => warn!(instance = %r.def.name, "fast path: {e}"),
            }
        }
    }

    /// Gives instance `i`'s engine the newest steady advert the fast path
    /// absorbed since it last looked, at the time it arrived: the
    /// Master_Down timer then runs from there, as if the daemon had seen it.
    async fn fastpath_absorbed(&mut self, i: usize) {
        let r = &self.instances[i];
        let (Some(fast), Some(maps), Some((master, priority, interval))) =
            (&r.fast, &self.fast_maps, r.engine.followed())
        else {
            return;
        };
        let Some(seen) = read_seen(&maps.seen, fast.slot) else {
            return;
        };
        if seen.last_ns <= fast.fed_ns
            || seen.last_ns < self.epoch_mono_ns
            || Ipv4Addr::from(seen.src) != master
            || seen.priority != priority
            || seen.interval_cs != interval
        {
            return;
        }
        let t = Duration::from_nanos(seen.last_ns - self.epoch_mono_ns);
        let r = &mut self.instances[i];
        if let Some(f) = &mut r.fast {
            f.fed_ns = seen.last_ns;
            f.fed += 1;
        }
        // The steady state's one step, many times a second per instance:
        // kept off the general path (no advert built, nothing to carry out
        // or to write back to the maps).
        let actions = r.engine.handle(t, Event::Heard);
        if !actions.is_empty() {
            for action in actions {
                if let Err(e) = self.act(i, action).await {
                    warn!(instance = %self.instances[i].def.name, "{e:#}");
                }
            }
            self.fastpath_sync(i);
        }
    }

    /// Removes instance `i` from the fast path's maps, and the XDP program
    /// from its interface when no other instance there uses it.
    fn fastpath_forget(&mut self, i: usize) {
        let Some(fast) = self.instances[i].fast.take() else {
            return;
        };
        if let Some(maps) = &mut self.fast_maps {
            let _ = maps.ctl.remove(&fast.key);
            maps.seen.write(fast.slot, VrrpSeen::default());
            let _ = maps.stats.remove(&fast.key);
        }
        let still_used = self.instances.iter().any(|r| {
            r.fast
                .as_ref()
                .is_some_and(|f| f.key.ifindex == fast.key.ifindex)
        });
        if let (false, Some(pin_dir)) = (still_used, &self.pin_dir) {
            let done = Datapath::open(pin_dir).and_then(|dp| {
                dp.detach_pinned(&fastpath_pin(fast.key.ifindex))?;
                dp.release_if_unused().map(|_| ())
            });
            if let Err(e) = done {
                warn!(
                    "fast path: detaching from ifindex {}: {e:#}",
                    fast.key.ifindex
                );
            }
        }
    }

    /// The XDP program's counters for instance `i`, summed over CPUs.
    fn fastpath_stats(&self, r: &Running) -> Option<VrrpStats> {
        let (fast, maps) = (r.fast.as_ref()?, self.fast_maps.as_ref()?);
        let mut total = VrrpStats::default();
        if let Ok(per_cpu) = maps.stats.get(&fast.key, 0) {
            for s in per_cpu.iter() {
                total.add(s);
            }
        }
        Some(total)
    }

    async fn act(&mut self, i: usize, action: Action) -> Result<()> {
        let r = &mut self.instances[i];
        match action {
            Action::SendAdvert { priority } => {
                let c = r.engine.config();
                let advert = Advert {
                    version: c.version,
                    vrid: c.vrid,
                    priority,
                    interval_cs: c.advert_interval_cs,
                    addresses: c.vips.clone(),
                    auth: c.auth.clone(),
                };
                let dsts: Vec<Ipv4Addr> = if r.unicast.is_some() {
                    r.def.unicast_peers.clone()
                } else {
                    vec![MULTICAST]
                };
                for dst in dsts {
                    // The pseudo-header checksum covers the destination.
                    let bytes = advert.write(r.def.checksum, r.primary, dst).to_vec();
                    let outlet = if r.unicast.is_some() {
                        Outlet::Unicast(r.id)
                    } else {
                        Outlet::Shared(r.socket)
                    };
                    match &mut self.outbox {
                        Some(out) => out.push((outlet, bytes, dst)),
                        None => match &r.unicast {
                            Some(sock) => sock
                                .send(&bytes, dst)
                                .with_context(|| format!("sending an advertisement to {dst}"))?,
                            None => self.sockets[r.socket]
                                .1
                                .send(&bytes, dst)
                                .context("sending an advertisement")?,
                        },
                    }
                }
            }
            Action::AddVips => {
                for v in &r.vips {
                    match self
                        .nl
                        .add_address_labeled(v.ifindex, v.addr, v.prefix, v.label.as_deref())
                        .await
                    {
                        Ok(()) => r.added.push((v.ifindex, v.addr)),
                        // Already there: the owner's own address is not
                        // ours to remove; for any other instance it is the
                        // VIP a resumed master kept (a start removes any
                        // other leftover first).
                        Err(e) if format!("{e:#}").contains("File exists") => {
                            if r.def.priority != 255 {
                                r.added.push((v.ifindex, v.addr));
                            }
                        }
                        Err(e) => return Err(e),
                    }
                }
                let targets: Vec<(u32, [u8; 6], Ipv4Addr)> =
                    r.vips.iter().map(|v| (v.ifindex, v.mac, v.addr)).collect();
                let (repeat, delay, refresh) =
                    (r.def.garp_repeat, r.def.garp_delay, r.def.garp_refresh);
                let name = r.def.name.clone();
                let arp = self.arp.clone();
                if let Some(old) = r.garp.take() {
                    old.abort();
                }
                r.garp = Some(tokio::spawn(async move {
                    // A burst at once, another after `delay`, then one every
                    // `refresh` while master (aborted on leaving it).
                    for round in 0.. {
                        match round {
                            0 => {}
                            1 => tokio::time::sleep(delay).await,
                            _ if refresh.is_zero() => break,
                            _ => tokio::time::sleep(refresh).await,
                        }
                        for _ in 0..repeat {
                            for (ifindex, mac, vip) in &targets {
                                if let Err(e) = arp.send(*ifindex, *mac, *vip) {
                                    warn!(instance = %name, "{e:#}");
                                }
                            }
                        }
                    }
                }));
            }
            Action::DelVips => {
                if let Some(g) = r.garp.take() {
                    g.abort();
                }
                for (ifindex, addr) in std::mem::take(&mut r.added) {
                    self.nl.del_address(ifindex, addr).await?;
                }
            }
            Action::Transition { from, to, reason } => {
                if r.transitions.len() == TRANSITIONS_KEPT {
                    r.transitions.pop_front();
                }
                r.transitions.push_back(TransitionRecord {
                    at_unix_ms: self.epoch_unix_ms + self.epoch.elapsed().as_millis(),
                    from,
                    to,
                    reason,
                });
                if let Some(tx) = &self.notify_tx {
                    for argv in r.def.notify.commands(&r.def.name, to, r.engine.priority()) {
                        let _ = tx.send(argv);
                    }
                }
                info!(
                    instance = %r.def.name, vrid = r.def.vrid, ?from, ?to, ?reason,
                    priority = r.engine.priority(), "transition"
                );
            }
        }
        Ok(())
    }
}

/// CLOCK_MONOTONIC in nanoseconds, bpf_ktime_get_ns's clock.
fn monotonic_ns() -> u64 {
    nix::time::clock_gettime(nix::time::ClockId::CLOCK_MONOTONIC).map_or(0, |t| {
        t.tv_sec() as u64 * 1_000_000_000 + t.tv_nsec() as u64
    })
}

/// systemd's watchdog period, as libsystemd's sd_watchdog_enabled reads
/// it: WATCHDOG_USEC, unless WATCHDOG_PID names another process (sd-notify
/// also demands WATCHDOG_PID, which systemd does not promise).
fn watchdog_period() -> Option<Duration> {
    let usec: u64 = std::env::var("WATCHDOG_USEC").ok()?.parse().ok()?;
    if let Ok(pid) = std::env::var("WATCHDOG_PID")
        && pid.parse::<u32>().ok() != Some(std::process::id())
    {
        return None;
    }
    (usec > 0).then(|| Duration::from_micros(usec))
}

async fn recv_opt<T>(rx: &mut Option<mpsc::UnboundedReceiver<T>>) -> Option<T> {
    match rx {
        Some(rx) => rx.recv().await,
        None => std::future::pending().await,
    }
}

/// How long one notify command may run before it is killed.
const NOTIFY_TIMEOUT: Duration = Duration::from_secs(10);

async fn run_notify(argv: &[String]) {
    let mut cmd = tokio::process::Command::new(&argv[0]);
    cmd.args(&argv[1..]).kill_on_drop(true);
    match tokio::time::timeout(NOTIFY_TIMEOUT, cmd.status()).await {
        Ok(Ok(status)) if status.success() => {}
        Ok(Ok(status)) => warn!(command = ?argv, %status, "notify command failed"),
        Ok(Err(e)) => warn!(command = ?argv, "cannot run notify command: {e}"),
        Err(_) => warn!(command = ?argv, "notify command timed out and was killed"),
    }
}

impl Drop for Vrrp {
    fn drop(&mut self) {
        for r in &self.readers {
            r.abort();
        }
        if let Some(n) = &self.notifier {
            n.abort();
        }
        for r in &self.instances {
            for t in &r.script_tasks {
                t.abort();
            }
        }
        for r in &mut self.instances {
            if let Some(g) = r.garp.take() {
                g.abort();
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(s: &str) -> Result<InstanceDef> {
        InstanceDef::parse(&s.split_whitespace().map(str::to_owned).collect::<Vec<_>>())
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
                },
                weight: Some(10),
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

    #[test]
    fn notify_follows_keepalived() {
        let d = parse(
            "VI_1 interface eth0 vrid 51 vip 192.0.2.5 notify-master /m notify /n notify-stop /s",
        )
        .unwrap();
        assert_eq!(
            d.notify.commands("VI_1", State::Master, 150),
            vec![
                vec!["/m".to_owned()],
                ["/n", "INSTANCE", "VI_1", "MASTER", "150"]
                    .map(String::from)
                    .to_vec()
            ]
        );
        assert_eq!(
            d.notify.commands("VI_1", State::Initialize, 150),
            vec![
                vec!["/s".to_owned()],
                ["/n", "INSTANCE", "VI_1", "STOP", "150"]
                    .map(String::from)
                    .to_vec()
            ]
        );
        assert_eq!(d.notify.commands("VI_1", State::Fault, 1).len(), 1);
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
                "vip: \"192.0.2.500\" is not an IPv4 address",
            ),
            (
                "v interface eth0 vrid 1",
                "vip: at least one virtual address is required",
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
        ] {
            let got = format!("{:#}", parse(input).unwrap_err());
            assert!(got.contains(want), "{input}\n  got: {got}\n  want: {want}");
            assert!(got.starts_with("vrrp instance v: "), "{got}");
        }
    }
}
