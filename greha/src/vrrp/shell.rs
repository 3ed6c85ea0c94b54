//! The loop that runs the VRRP engines on a host: it checks definitions
//! against the host, owns the sockets, timers and virtual addresses, hands
//! what it reads to the router and the engines, and carries out their
//! actions. It decides nothing itself (see `router`); the daemon talks to
//! it through [`Request`]s.
use std::{
    collections::HashMap,
    net::IpAddr,
    sync::Arc,
    time::{Duration, Instant},
};

use anyhow::{Context as _, Result};
use tokio::{
    sync::{mpsc, oneshot},
    task::JoinHandle,
};
use tracing::{info, warn};

use super::{
    def::{Family, InstanceDef, RouteDef, RuleDef, TrackKind},
    engine::{Action, Event, HandoverNote, Instance, State},
    fastpath::{self, Fast, FastPath, ctl_of},
    host::{self, Prepared, Vip},
    io::{self, Outlet, Received, VrrpSocket},
    notify::Notifier,
    packet::{Advert, multicast_for},
    router::{self, Delivery, InstanceCounter, Packet, RouteKey, TrackerState},
    status::{
        EventLine, GlobalStats, HANDING_OVER, InstanceStatus, StatusDoc, TransitionRecord,
        Transitions, unix_ms_now,
    },
    sync::{self, Member},
    track::{self, Reading, ScriptResult, Tracker},
};
use crate::netlink::{self, Netlink};

struct Running {
    /// Stable across reconfigurations, unlike the position in the list.
    id: u64,
    def: InstanceDef,
    engine: Instance,
    /// Index into `Vrrp::sockets`.
    socket: usize,
    /// The source of adverts: the interface's primary address, or the
    /// unicast source.
    primary: IpAddr,
    /// Sends the unicast adverts, when there are unicast peers.
    unicast: Option<VrrpSocket>,
    vips: Vec<Vip>,
    /// VIPs this run added, removed exactly on leaving Master.
    added: Vec<(u32, IpAddr)>,
    /// The virtual routes (with their device's index), and those in
    /// place while Master.
    routes: Vec<(RouteDef, Option<u32>)>,
    added_routes: Vec<(RouteDef, Option<u32>)>,
    /// The virtual rules in place while Master.
    added_rules: Vec<RuleDef>,
    /// use_vmac: the virtual MAC interface this instance made (removed
    /// with it).
    vmac: Option<u32>,
    garp: Option<JoinHandle<()>>,
    /// The re-announcement after hearing a lower priority as master.
    lower_garp: Option<JoinHandle<()>>,
    transitions: Transitions,
    trackers: Vec<Tracker>,
    /// A weightless tracker is down, or a VIP could not be added: the
    /// engine was told Fault(true).
    faulted: bool,
    /// Why greha itself put the instance in Fault (a VIP it could not
    /// add), for status.
    fault_reason: Option<String>,
    /// The check scripts' loops, stopped with the instance.
    script_tasks: Vec<JoinHandle<()>>,
    /// The fast path's view of this instance, when it has one.
    fast: Option<Fast>,
    /// Why it has none, for status.
    fastpath_off: Option<String>,
    /// Start as master (a restart with the datapath kept).
    resume: bool,
    /// For status: a handover under way, or how the last one ended.
    handover: Option<String>,
    /// While handing over: the watch for the new master's gratuitous ARP
    /// (set the flag to stop it).
    arp_watch: Option<Arc<std::sync::atomic::AtomicBool>>,
}

impl Running {
    fn tracked(&self) -> (bool, u8) {
        let states: Vec<TrackerState> = self.trackers.iter().map(|t| t.state.clone()).collect();
        router::tracked(self.def.priority, &states)
    }

    fn route_key(&self) -> RouteKey {
        RouteKey {
            socket: self.socket,
            vrid: self.def.vrid,
            version: self.def.version,
            unicast_peers: self.def.unicast_peers.clone(),
        }
    }
}

/// What the daemon asks of the VRRP loop.
pub enum Request {
    /// The status document.
    Status(oneshot::Sender<StatusDoc>),
    /// Return `Exit::Reload` (with where to answer, for `greha reload`).
    Reload(Option<oneshot::Sender<String>>),
    /// Return `Exit::Shutdown`.
    Shutdown,
    /// Answer, to prove the loop turns (systemd's watchdog).
    Ping(oneshot::Sender<()>),
    /// `greha demote|shutdown|resume NAME`; the answer's text goes back.
    Maintain(String, Maintenance, oneshot::Sender<String>),
    /// `greha events`: every event from now on, one JSON line each, until
    /// the receiver goes.
    Subscribe(mpsc::UnboundedSender<String>),
}

/// What an operator asks of one instance at run time.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Maintenance {
    /// Hand over, then priority 1 (a backup of last resort).
    Demote,
    /// Hand over, then out of service (Initialize).
    Shutdown,
    /// Undo either.
    Resume,
}

impl Maintenance {
    pub fn parse(verb: &str) -> Option<Self> {
        match verb {
            "demote" => Some(Self::Demote),
            "shutdown" => Some(Self::Shutdown),
            "resume" => Some(Self::Resume),
            _ => None,
        }
    }
}

/// Why `Vrrp::run` returned.
pub enum Exit {
    Shutdown,
    /// Reload asked; the answer for `greha reload`, if it asked, goes here.
    Reload(Option<oneshot::Sender<String>>),
}

/// All VRRP instances of the daemon.
pub struct Vrrp {
    nl: Netlink,
    /// By interface index and family.
    sockets: Vec<((u32, Family), Arc<VrrpSocket>)>,
    instances: Vec<Running>,
    /// `router::route`'s view of `instances`, index for index, kept with
    /// them (built per packet, it cost the busiest path an allocation per
    /// instance).
    route_keys: Vec<RouteKey>,
    epoch: Instant,
    /// The wall-clock time of `epoch`, for status output.
    epoch_unix_ms: u128,
    fast: FastPath,
    arp: Arc<crate::arp::ArpSender>,
    /// While set, adverts wait here and leave together: one sendmmsg per
    /// socket for all the instances due at the same tick.
    outbox: Option<Vec<(Outlet, Vec<u8>, IpAddr)>>,
    rx: mpsc::Receiver<(usize, Received)>,
    rx_tx: mpsc::Sender<(usize, Received)>,
    readers: Vec<JoinHandle<()>>,
    next_id: u64,
    /// Instances that were master when a restart with the datapath kept
    /// stopped the previous run, and when (Unix ms).
    resume: HashMap<String, u128>,
    links: Option<mpsc::UnboundedReceiver<(u32, bool)>>,
    scripts: mpsc::Receiver<ScriptResult>,
    script_tx: mpsc::Sender<ScriptResult>,
    notifier: Notifier,
    global: GlobalStats,
    /// Where the tunnels' probe results are, for `track-tunnel`.
    pin_dir: Option<std::path::PathBuf>,
    /// Instances demoted by name: kept across reloads, even when one
    /// restarts, until resumed.
    demoted: std::collections::HashSet<String>,
    /// Instances shut down by name, kept the same way.
    disabled: std::collections::HashSet<String>,
    /// `greha events` subscribers.
    subscribers: Vec<mpsc::UnboundedSender<String>>,
    /// Instances (by id) whose VIPs another router announced while they
    /// handed over.
    announced: mpsc::UnboundedReceiver<u64>,
    announced_tx: mpsc::UnboundedSender<u64>,
    /// Events for the other members of a sync group, given once the
    /// instance being fed is done (index, event).
    sync_queue: std::collections::VecDeque<(usize, Event)>,
    /// Each sync group's state as its notify commands last saw it.
    group_states: HashMap<String, State>,
    /// keepalived's notify_fifo: its path and the open FIFO.
    fifo: Option<(std::path::PathBuf, std::fs::File)>,
    /// keepalived's interface_up_down_delays, by interface name, and the
    /// link changes waiting for theirs.
    link_delays: std::collections::BTreeMap<String, (Duration, Duration)>,
    debounce: router::LinkDebounce,
    /// keepalived's script_user: who runs notify commands, and check
    /// scripts without a user of their own (root when None).
    script_user: Option<track::RunAs>,
}

impl Vrrp {
    /// A VRRP loop with no instance yet; `update` adds them.
    pub async fn start(pin_dir: Option<std::path::PathBuf>) -> Result<Self> {
        let nl = Netlink::new()?;
        let (rx_tx, rx) = mpsc::channel(1024);
        let (script_tx, scripts) = mpsc::channel(64);
        let (announced_tx, announced) = mpsc::unbounded_channel();
        Ok(Self {
            nl,
            sockets: Vec::new(),
            instances: Vec::new(),
            route_keys: Vec::new(),
            epoch: Instant::now(),
            epoch_unix_ms: unix_ms_now(),
            fast: FastPath::new(pin_dir.clone(), fastpath::monotonic_ns()),
            arp: Arc::new(crate::arp::ArpSender::open()?),
            outbox: None,
            rx,
            rx_tx,
            readers: Vec::new(),
            next_id: 0,
            resume: HashMap::new(),
            links: None,
            scripts,
            script_tx,
            notifier: Notifier::start(),
            global: GlobalStats::default(),
            pin_dir,
            demoted: Default::default(),
            disabled: Default::default(),
            subscribers: Vec::new(),
            announced,
            announced_tx,
            sync_queue: Default::default(),
            group_states: HashMap::new(),
            fifo: None,
            link_delays: Default::default(),
            debounce: Default::default(),
            script_user: None,
        })
    }

    /// keepalived's script_user from now on; scripts already running
    /// keep theirs until their instance restarts.
    pub fn set_script_user(&mut self, user: Option<track::RunAs>) {
        self.script_user = user;
    }

    /// keepalived's interface_up_down_delays from now on.
    pub fn set_link_delays(
        &mut self,
        delays: std::collections::BTreeMap<String, (Duration, Duration)>,
    ) {
        self.link_delays = delays;
    }

    /// A tracked interface's state, as its trackers have it, and its
    /// delays (down, up): none if no tracker watches it.
    fn link_in_force(&self, ifindex: u32) -> Option<(bool, (Duration, Duration))> {
        self.instances
            .iter()
            .flat_map(|r| &r.trackers)
            .find(|t| t.ifindex == ifindex)
            .map(|t| {
                let delays = match &t.track.kind {
                    TrackKind::Interface(name) => self.link_delays.get(name).copied(),
                    _ => None,
                };
                (t.state.up, delays.unwrap_or_default())
            })
    }

    /// Gives every tracker of `ifindex` its new state.
    async fn apply_link(&mut self, ifindex: u32, up: bool) {
        for i in 0..self.instances.len() {
            let mut changed = false;
            for t in &mut self.instances[i].trackers {
                if t.ifindex == ifindex {
                    changed |= t.state.link(up);
                }
            }
            if changed {
                self.retrack(i).await;
            }
        }
    }

    /// Writes state changes to the FIFO at `path` from now on (made if
    /// missing), or to none. The same path keeps the open FIFO.
    pub fn set_notify_fifo(&mut self, path: Option<&std::path::Path>) -> Result<()> {
        if self.fifo.as_ref().map(|(p, _)| p.as_path()) == path {
            return Ok(());
        }
        self.fifo = match path {
            None => None,
            Some(p) => Some((p.to_owned(), super::notify::open_fifo(p)?)),
        };
        Ok(())
    }

    /// One line to the notify FIFO, as keepalived writes it; a FIFO nobody
    /// reads drops lines rather than stall the daemon.
    fn fifo_line(&mut self, kind: &str, name: &str, to: State, priority: u8) {
        if let Some((path, f)) = &mut self.fifo {
            let line = super::notify::fifo_line(kind, name, to, priority);
            if let Err(e) = std::io::Write::write_all(f, line.as_bytes())
                && e.kind() != std::io::ErrorKind::WouldBlock
            {
                warn!("notify fifo {}: {e}", path.display());
            }
        }
    }

    /// The indices of the instances in sync group `group`.
    fn members(&self, group: &str) -> Vec<usize> {
        (0..self.instances.len())
            .filter(|&j| {
                self.instances[j]
                    .def
                    .sync_group
                    .as_ref()
                    .is_some_and(|g| g.name == group)
            })
            .collect()
    }

    /// Instance `i`'s sync group, if any: its members' indices (`i` among
    /// them) and what the group's rules read of each.
    fn group_of(&self, i: usize) -> Option<(Vec<usize>, Vec<Member>)> {
        let group = self.instances[i].def.sync_group.as_ref()?;
        let idx = self.members(&group.name);
        let view = idx
            .iter()
            .map(|&j| {
                let r = &self.instances[j];
                Member {
                    state: r.engine.state(),
                    wants_master: r.engine.wants_master(),
                    own_fault: r.tracked().0,
                }
            })
            .collect();
        Some((idx, view))
    }

    /// Instances that were master at the given time (Unix ms) resume as
    /// master when they start, if that is recent enough
    /// ([`router::resumes`]).
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

    /// The running definitions.
    pub fn defs(&self) -> Vec<InstanceDef> {
        self.instances.iter().map(|r| r.def.clone()).collect()
    }

    /// Starts the loops of instance `id`'s script, tunnel and file trackers.
    fn spawn_trackers(&self, id: u64, trackers: &[Tracker]) -> Vec<JoinHandle<()>> {
        let mut script_tasks = Vec::new();
        for (t, tracker) in trackers.iter().enumerate() {
            match &tracker.track.kind {
                TrackKind::Script {
                    path,
                    interval,
                    timeout,
                    ..
                } => script_tasks.push(track::spawn_script(
                    path.clone(),
                    *interval,
                    *timeout,
                    tracker.run_as.or(self.script_user),
                    id,
                    t,
                    self.script_tx.clone(),
                )),
                TrackKind::Tunnel(name) => match self.pin_dir.clone() {
                    Some(pin_dir) => script_tasks.push(track::spawn_tunnel_watch(
                        pin_dir,
                        name.clone(),
                        id,
                        t,
                        self.script_tx.clone(),
                    )),
                    // The daemon always has one; a tunnel tracker stays up.
                    None => warn!("track-tunnel {name}: no datapath to read it from"),
                },
                TrackKind::File {
                    path,
                    init,
                    overwrite,
                    ..
                } => {
                    let path = std::path::PathBuf::from(path);
                    if let Err(e) = track::init_file(&path, *init, *overwrite) {
                        warn!(
                            "track-file {}: cannot write its initial value: {e}",
                            path.display()
                        );
                    }
                    let now = track::read_number(&path);
                    script_tasks.push(track::spawn_file_watch(
                        path,
                        tracker.state.value.unwrap_or(now),
                        id,
                        t,
                        self.script_tx.clone(),
                    ));
                }
                TrackKind::Process(m) => script_tasks.push(track::spawn_process_watch(
                    m.clone(),
                    tracker.state.up,
                    id,
                    t,
                    self.script_tx.clone(),
                )),
                TrackKind::Interface(_) => {}
            }
        }
        script_tasks
    }

    /// Starts a prepared instance (its engine waits for `start_engines`).
    async fn add(&mut self, mut p: Prepared) -> Result<()> {
        let resume = router::resumes(
            self.resume.remove(&p.def.name),
            unix_ms_now(),
            p.def.advert_interval_cs,
        );
        // use_vmac: VRRP speaks, and the VIPs live, on the virtual MAC
        // interface; the fast path stays on the interface the frames
        // arrive on.
        let vrrp_at = match &p.def.vmac {
            None => (p.def.interface.clone(), p.link.index),
            Some(name) => {
                let index = self
                    .vmac_up(
                        name,
                        &p.def.interface,
                        p.link.index,
                        p.def.virtual_mac(),
                        resume,
                    )
                    .await
                    .with_context(|| format!("vrrp instance {}: use-vmac", p.def.name))?;
                for v in p.vips.iter_mut().filter(|v| v.ifindex == 0) {
                    v.ifindex = index;
                }
                (name.clone(), index)
            }
        };
        let vmac = p.def.vmac.as_ref().map(|_| vrrp_at.1);
        let result = self.add_on(p, resume, vrrp_at, vmac).await;
        if result.is_err()
            && let Some(index) = vmac
        {
            let _ = self.nl.del_link(index).await;
        }
        result
    }
    /// The virtual MAC interface `name` on `base`: made anew (a crashed
    /// run's is removed with whatever it held), or a resumed master's
    /// kept. The base stops answering ARP for addresses it does not hold,
    /// so clients learn the VIPs at the virtual MAC only (keepalived sets
    /// the same).
    async fn vmac_up(
        &self,
        name: &str,
        base_name: &str,
        base: u32,
        mac: [u8; 6],
        resume: bool,
    ) -> Result<u32> {
        if let Some(old) = self.nl.link_by_name(name).await? {
            if resume && old.mac == mac {
                return Ok(old.index);
            }
            warn!(
                vmac = name,
                "removed a virtual MAC interface left by an earlier run"
            );
            self.nl.del_link(old.index).await?;
        }
        let turn_on = |iface: &str, key: &str| {
            std::fs::write(format!("/proc/sys/net/ipv4/conf/{iface}/{key}"), "1")
                .with_context(|| format!("setting {key} on {iface}"))
        };
        turn_on(base_name, "arp_ignore")?;
        turn_on(base_name, "arp_filter")?;
        self.nl.add_vmac(name, base, mac).await?;
        let link = self
            .nl
            .link_by_name(name)
            .await?
            .ok_or_else(|| anyhow::anyhow!("{name} vanished as it was made"))?;
        turn_on(name, "arp_ignore")?;
        Ok(link.index)
    }

    /// `add`'s rest, with VRRP on `vrrp_at` (the interface, or its virtual
    /// MAC interface).
    async fn add_on(
        &mut self,
        p: Prepared,
        resume: bool,
        vrrp_at: (String, u32),
        vmac: Option<u32>,
    ) -> Result<()> {
        let Prepared {
            def,
            link,
            primary,
            vips,
            trackers,
            routes,
        } = p;
        // A resumed master keeps its VIPs: they never went away.
        if def.priority != 255 && !resume {
            for v in &vips {
                // A crashed run may have left its VIPs (keepalived issue
                // #2361); a starting backup must not hold them.
                if self.nl.del_address(v.ifindex, v.addr).await? {
                    warn!(instance = %def.name, vip = %v.addr, "removed a VIP left behind by an earlier run");
                }
            }
            for (r, oif) in &routes {
                if self.nl.del_route(r, *oif).await? {
                    warn!(instance = %def.name, route = %r, "removed a route left behind by an earlier run");
                }
            }
            for r in &def.rules {
                if self.nl.del_rule(r).await? {
                    warn!(instance = %def.name, rule = %r, "removed a rule left behind by an earlier run");
                }
            }
        }
        if self.links.is_none() && trackers.iter().any(|t| t.ifindex != 0) {
            self.links = Some(netlink::watch_links()?);
        }
        // The fast path first: loading its programs takes a while, and
        // adverts the socket queued meanwhile would all wake the daemon.
        let fast = if def.fastpath {
            let used: Vec<u32> = self
                .instances
                .iter()
                .filter_map(|r| r.fast.as_ref().map(|f| f.slot))
                .collect();
            self.fast.attach(
                &def.name,
                &def.interface,
                link.index,
                (def.vrid, def.family()),
                &used,
            )
        } else {
            Err("no-fastpath".to_owned())
        };
        let (vrrp_if, vrrp_index) = vrrp_at;
        let at = (vrrp_index, def.family());
        let sockets = (|| -> Result<(Option<Arc<VrrpSocket>>, Option<VrrpSocket>)> {
            let shared = match self.sockets.iter().any(|(k, _)| *k == at) {
                true => None,
                false => Some(Arc::new(VrrpSocket::open(&vrrp_if, vrrp_index, primary)?)),
            };
            let unicast = match def.unicast_peers.is_empty() {
                true => None,
                false => Some(VrrpSocket::open_unicast(
                    &vrrp_if,
                    vrrp_index,
                    primary,
                    def.unicast_ttl,
                )?),
            };
            Ok((shared, unicast))
        })();
        let (shared, unicast) = match sockets {
            Ok(s) => s,
            Err(e) => {
                // Nothing of a refused instance stays attached.
                if let Ok(f) = fast {
                    let still_used = self.instances.iter().any(|r| {
                        r.fast
                            .as_ref()
                            .is_some_and(|g| g.key.ifindex == f.key.ifindex)
                    });
                    self.fast.forget(f, still_used);
                }
                return Err(e);
            }
        };
        let socket = match shared {
            None => self
                .sockets
                .iter()
                .position(|(k, _)| *k == at)
                .expect("looked up above"),
            Some(sock) => {
                let i = self.sockets.len();
                let (s, tx) = (Arc::clone(&sock), self.rx_tx.clone());
                self.readers.push(tokio::spawn(async move {
                    while let Ok(r) = s.recv().await {
                        if tx.send((i, r)).await.is_err() {
                            break;
                        }
                    }
                }));
                self.sockets.push((at, sock));
                i
            }
        };
        let id = self.next_id;
        self.next_id += 1;
        let script_tasks = self.spawn_trackers(id, &trackers);
        let cfg = def.engine_config(primary);
        let (fast, fastpath_off) = match fast {
            Ok(f) => (Some(f), None),
            Err(why) => (None, Some(why)),
        };
        self.instances.push(Running {
            id,
            fast,
            fastpath_off,
            resume,
            handover: None,
            arp_watch: None,
            engine: Instance::new(cfg),
            def,
            socket,
            primary,
            unicast,
            vips,
            added: Vec::new(),
            routes,
            added_routes: Vec::new(),
            added_rules: Vec::new(),
            vmac,
            garp: None,
            lower_garp: None,
            transitions: Transitions::default(),
            trackers,
            faulted: false,
            fault_reason: None,
            script_tasks,
        });
        let key = self.instances.last().expect("just pushed").route_key();
        self.route_keys.push(key);
        Ok(())
    }

    /// Starts the engines of the instances from `from` on, together: their
    /// Master_Down timers must not run while the others are being set up
    /// and no advert is read.
    async fn start_engines(&mut self, from: usize) {
        for i in from..self.instances.len() {
            let r = &self.instances[i];
            let events = router::start_events(r.tracked(), r.resume);
            if r.resume {
                info!(instance = %r.def.name, "resuming as master after a restart");
            }
            let demoted = self.demoted.contains(&r.def.name);
            if self.disabled.contains(&r.def.name) {
                // Out of service before it starts: the start events are
                // then ignored.
                self.feed(i, Event::Disable).await;
            }
            for e in events {
                if e == Event::Fault(true) {
                    self.instances[i].faulted = true;
                }
                self.feed(i, e).await;
            }
            if demoted {
                self.feed(i, Event::Demote).await;
            }
        }
    }

    /// Stops instance `i`: it resigns, removes its VIPs and is forgotten.
    async fn remove(&mut self, i: usize) {
        self.feed(i, Event::Shutdown).await;
        self.fastpath_forget(i);
        let r = self.instances.remove(i);
        self.route_keys.remove(i);
        if let Some(index) = r.vmac
            && let Err(e) = self.nl.del_link(index).await
        {
            warn!(instance = %r.def.name, "removing its virtual MAC interface: {e:#}");
        }
        for t in r.script_tasks {
            t.abort();
        }
        for g in [r.garp, r.lower_garp].into_iter().flatten() {
            g.abort();
        }
    }

    /// Stops the instances named in `remove`, then starts `add`. Every new
    /// definition is checked against the host (and against the instances
    /// that keep running) before anything changes; the others run on
    /// untouched.
    pub async fn update(&mut self, remove: &[String], add: Vec<InstanceDef>) -> Result<()> {
        let kept: Vec<&InstanceDef> = self
            .instances
            .iter()
            .map(|r| &r.def)
            .filter(|d| !remove.contains(&d.name))
            .collect();
        let prepared = host::prepare(&self.nl, &add, &kept).await?;
        // A changed instance that stays the same virtual router takes the
        // change in place: no resignation, no second failover back.
        let (in_place, fresh): (Vec<Prepared>, Vec<Prepared>) =
            prepared.into_iter().partition(|p| {
                self.instances.iter().any(|r| {
                    r.def.name == p.def.name
                        && remove.contains(&r.def.name)
                        && !router::restarts(&r.def, &p.def)
                })
            });
        while let Some(i) = self.instances.iter().position(|r| {
            remove.contains(&r.def.name) && !in_place.iter().any(|p| p.def.name == r.def.name)
        }) {
            self.remove(i).await;
        }
        for p in in_place {
            if let Some(i) = self.instances.iter().position(|r| r.def.name == p.def.name) {
                self.reconfigure(i, p).await;
            }
        }
        let first = self.instances.len();
        for p in fresh {
            self.add(p).await?;
        }
        self.start_engines(first).await;
        // A member added, removed or changed may put its group in Fault
        // or take it out.
        for i in 0..self.instances.len() {
            if self.instances[i].def.sync_group.is_some() {
                self.retrack_one(i).await;
            }
        }
        Ok(())
    }

    /// Gives running instance `i` its changed definition in place
    /// ([`router::restarts`] said it may): new trackers and scripts, the
    /// VIPs moved if it is master, the priority through tracking.
    async fn reconfigure(&mut self, i: usize, p: Prepared) {
        let Prepared {
            def,
            vips,
            trackers,
            routes,
            ..
        } = p;
        info!(instance = %def.name, "changed in place");
        let id = self.instances[i].id;
        let script_tasks = self.spawn_trackers(id, &trackers);
        if self.links.is_none() && trackers.iter().any(|t| t.ifindex != 0) {
            match netlink::watch_links() {
                Ok(l) => self.links = Some(l),
                Err(e) => warn!(instance = %def.name, "cannot watch links: {e:#}"),
            }
        }
        let r = &mut self.instances[i];
        for t in std::mem::replace(&mut r.script_tasks, script_tasks) {
            t.abort();
        }
        r.trackers = trackers;
        r.engine.reconfigure(def.engine_config(r.primary));
        r.def = def;
        r.vips = vips;
        r.routes = routes;
        if r.engine.state() == State::Master {
            // Routes and rules that changed go, new ones come; the same
            // stay.
            let r = &mut self.instances[i];
            let (gone, new) = router::changes(&r.added_routes, &r.routes);
            r.added_routes.retain(|a| !gone.contains(a));
            let (gone_rules, new_rules) = router::changes(&r.added_rules, &r.def.rules);
            r.added_rules.retain(|a| !gone_rules.contains(a));
            self.del_routing(i, gone, gone_rules).await;
            self.add_routing(i, new, new_rules).await;
        }
        let r = &mut self.instances[i];
        if r.engine.state() == State::Master {
            let want: Vec<(u32, IpAddr)> = r.vips.iter().map(|v| (v.ifindex, v.addr)).collect();
            let (gone, new) = router::changes(&r.added, &want);
            for (ifindex, addr) in gone {
                if let Err(e) = self.nl.del_address(ifindex, addr).await {
                    warn!(instance = %self.instances[i].def.name, "removing VIP {addr}: {e:#}");
                }
                self.instances[i].added.retain(|a| *a != (ifindex, addr));
            }
            let r = &self.instances[i];
            let adds: Vec<Vip> = r
                .vips
                .iter()
                .filter(|v| new.contains(&(v.ifindex, v.addr)))
                .cloned()
                .collect();
            for v in adds {
                match self
                    .nl
                    .add_address_with(v.ifindex, v.addr, v.prefix, &v.opts)
                    .await
                {
                    Ok(_) => self.instances[i].added.push((v.ifindex, v.addr)),
                    Err(e) => {
                        warn!(instance = %self.instances[i].def.name, "adding VIP {}: {e:#}", v.addr);
                    }
                }
            }
            if !new.is_empty() {
                // Announce the VIP list anew (the refresh task held the
                // old one).
                let r = &self.instances[i];
                let rounds = io::Rounds {
                    repeat: r.def.garp_repeat,
                    delay: r.def.garp_delay,
                    refresh: r.def.garp_refresh,
                };
                let task = self.announce(i, rounds);
                if let Some(old) = self.instances[i].garp.replace(task) {
                    old.abort();
                }
            }
        }
        self.retrack(i).await;
        self.fastpath_sync(i);
    }

    fn now(&self) -> Duration {
        self.epoch.elapsed()
    }

    /// The status document. Each instance's RFC 6527 statistics include
    /// what the fast path dropped or absorbed, which the engine never saw.
    pub fn status(&self) -> StatusDoc {
        let vrrp = self
            .instances
            .iter()
            .map(|r| {
                let fastpath = r.fast.as_ref().and_then(|f| self.fast.stats(f));
                let last_absorbed = r
                    .fast
                    .as_ref()
                    .and_then(|f| self.fast.last_absorbed(f, self.epoch_unix_ms));
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
                    family: r.def.family().name().to_lowercase(),
                    vrid: r.def.vrid,
                    state: r.engine.state(),
                    priority: r.engine.priority(),
                    master: r.engine.master(),
                    master_priority: r.engine.followed().map(|(_, p, _)| p),
                    since_unix_ms: self.epoch_unix_ms + r.engine.since().as_millis(),
                    transitions: r.transitions.to_vec(),
                    fault_reason: r.fault_reason.clone(),
                    daemon_adverts: r.engine.stats().rcvd_advertisements,
                    stats,
                    fastpath,
                    fastpath_off: r.fastpath_off.clone(),
                    last_absorbed,
                    demoted: r.engine.demoted(),
                    shut_down: r.engine.disabled(),
                    handover: r.handover.clone(),
                    sync_group: r.def.sync_group.as_ref().map(|g| g.name.clone()),
                    wants_master: r.engine.wants_master(),
                }
            })
            .collect::<Vec<_>>();
        // The checksum and version errors the fast path dropped.
        let mut global = self.global.clone();
        for s in vrrp.iter().filter_map(|s| s.fastpath.as_ref()) {
            global.checksum_errors += s.checksum_errors;
            global.version_errors += s.version_errors;
        }
        StatusDoc {
            vrrp,
            vrrp_global: global,
        }
    }

    /// Runs until the daemon asks for a shutdown or a reload (then call
    /// `run` again: the engines, their timers and the sockets carry on in
    /// between).
    pub async fn run(&mut self, requests: &mut mpsc::Receiver<Request>) -> Result<Exit> {
        loop {
            let deadline = self
                .instances
                .iter()
                .filter_map(|r| r.engine.next_deadline())
                .chain(self.debounce.next())
                .min();
            let sleep = async {
                match deadline {
                    Some(d) => tokio::time::sleep_until((self.epoch + d).into()).await,
                    None => std::future::pending().await,
                }
            };
            tokio::select! {
                req = requests.recv() => match req {
                    None | Some(Request::Shutdown) => return Ok(Exit::Shutdown),
                    Some(Request::Reload(reply)) => return Ok(Exit::Reload(reply)),
                    Some(Request::Status(reply)) => {
                        let _ = reply.send(self.status());
                    }
                    Some(Request::Ping(reply)) => {
                        let _ = reply.send(());
                    }
                    Some(Request::Maintain(name, what, reply)) => {
                        let _ = reply.send(self.maintain(&name, what).await);
                    }
                    Some(Request::Subscribe(tx)) => self.subscribers.push(tx),
                },
                Some((sock, r)) = self.rx.recv() => self.received(sock, r).await,
                Some((ifindex, up)) = recv_opt(&mut self.links) => {
                    let Some((in_force, (down, up_delay))) = self.link_in_force(ifindex) else {
                        continue;
                    };
                    let delay = if up { up_delay } else { down };
                    let now = self.now();
                    if let Some(up) = self.debounce.event(ifindex, up, in_force, delay, now) {
                        self.apply_link(ifindex, up).await;
                    }
                }
                Some(id) = self.announced.recv() => self.announced(id).await,
                Some((id, t, reading)) = self.scripts.recv() => {
                    let Some(i) = self.instances.iter().position(|r| r.id == id) else {
                        continue;
                    };
                    // A reading sent just before a reload changed the
                    // trackers in place may name one that is gone.
                    let Some(tr) = self.instances[i].trackers.get_mut(t) else {
                        continue;
                    };
                    let changed = match (&tr.track.kind, reading) {
                        (TrackKind::Script { rise, fall, .. }, Reading::Up(ok)) => {
                            tr.state.script_result(ok, *rise, *fall)
                        }
                        // The prober already counted the losses.
                        (TrackKind::Tunnel(_), Reading::Up(ok)) => tr.state.script_result(ok, 1, 1),
                        (TrackKind::File { .. }, Reading::Value(v)) => tr.state.file_value(v),
                        // The watch applied the delays already.
                        (TrackKind::Process(_), Reading::Up(up)) => tr.state.link(up),
                        _ => false,
                    };
                    if changed {
                        self.retrack(i).await;
                    }
                }
                () = sleep => self.tick().await,
            }
        }
    }

    /// The timers' turn: what is due runs, after the adverts already here.
    async fn tick(&mut self) {
        // Adverts that arrived before the deadline go first: a timer must
        // not run ahead of an advert already here.
        while let Ok((sock, r)) = self.rx.try_recv() {
            self.received(sock, r).await;
        }
        let now = self.now();
        for (ifindex, up) in self.debounce.due(now) {
            self.apply_link(ifindex, up).await;
        }
        self.outbox = Some(Vec::new());
        for i in 0..self.instances.len() {
            // Master_Down may only look due: the fast path may have
            // absorbed the master's adverts. Every instance takes its
            // newest one now, due or not (a read of shared memory): their
            // timers then fall due together, and the daemon wakes once for
            // all rather than once per group of instances.
            self.fastpath_absorbed(i).await;
            if self.instances[i]
                .engine
                .next_deadline()
                .is_some_and(|d| d <= now)
            {
                self.feed(i, Event::Timer).await;
            }
        }
        self.flush();
    }

    /// Another router announced instance `id`'s VIPs during its handover.
    async fn announced(&mut self, id: u64) {
        if let Some(i) = self.instances.iter().position(|r| r.id == id) {
            self.feed(i, Event::Announced).await;
        }
    }

    /// Demotes, shuts down or resumes the instance `name`; the answer for
    /// the CLI.
    async fn maintain(&mut self, name: &str, what: Maintenance) -> String {
        let Some(i) = self.instances.iter().position(|r| r.def.name == name) else {
            return format!("error: no VRRP instance is named {name:?}\n");
        };
        match what {
            Maintenance::Demote => {
                self.demoted.insert(name.to_owned());
                self.feed(i, Event::Demote).await;
            }
            Maintenance::Shutdown => {
                self.disabled.insert(name.to_owned());
                self.feed(i, Event::Disable).await;
            }
            Maintenance::Resume => {
                self.demoted.remove(name);
                self.disabled.remove(name);
                let fault = self.instances[i].faulted;
                self.feed(i, Event::Enable { fault }).await;
                self.feed(i, Event::Undemote).await;
            }
        }
        let e = &self.instances[i].engine;
        let doing = match (what, e.state(), e.handing_over()) {
            (Maintenance::Resume, State::Master, _) => "master, with its own priority",
            (Maintenance::Resume, _, _) => {
                "in service with its own priority; it preempts if configured to"
            }
            (_, _, true) => "handing over: it keeps the VIPs until another router is master",
            (Maintenance::Demote, _, _) => "priority 1 until resumed",
            (Maintenance::Shutdown, _, _) => "out of service until resumed",
        };
        info!(instance = %name, ?what, "{doing}");
        let done = match what {
            Maintenance::Demote => "demoted",
            Maintenance::Shutdown => "shut down",
            Maintenance::Resume => "resumed",
        };
        format!("ok: {name} {done}: {doing}\n")
    }

    /// Resigns every instance, then waits (bounded) for the notify
    /// commands of the shutdown. With `handover`, masters first hand their
    /// VIPs over: they keep them until another router is master (at most
    /// [`super::engine::HANDOVER_MAX`]), so clients lose nothing.
    pub async fn shutdown(&mut self, handover: bool) -> Result<()> {
        if handover {
            for i in 0..self.instances.len() {
                self.feed(i, Event::HandOver).await;
            }
            while let Some(deadline) = self
                .instances
                .iter()
                .filter(|r| r.engine.handing_over())
                .filter_map(|r| r.engine.next_deadline())
                .min()
            {
                tokio::select! {
                    Some((sock, r)) = self.rx.recv() => self.received(sock, r).await,
                    Some(id) = self.announced.recv() => self.announced(id).await,
                    () = tokio::time::sleep_until((self.epoch + deadline).into()) => self.tick().await,
                }
            }
        }
        for i in 0..self.instances.len() {
            self.feed(i, Event::Shutdown).await;
        }
        for i in 0..self.instances.len() {
            self.fastpath_forget(i);
            if let Some(index) = self.instances[i].vmac.take()
                && let Err(e) = self.nl.del_link(index).await
            {
                warn!(instance = %self.instances[i].def.name, "removing its virtual MAC interface: {e:#}");
            }
        }
        self.notifier.finish().await;
        Ok(())
    }

    /// Tells instance `i` what its trackers now say, and the other
    /// members of its sync group whether the group is in Fault.
    async fn retrack(&mut self, i: usize) {
        let others = match self.group_of(i) {
            Some((idx, _)) => idx.into_iter().filter(|&j| j != i).collect(),
            None => Vec::new(),
        };
        self.retrack_one(i).await;
        for j in others {
            self.retrack_one(j).await;
        }
    }

    async fn retrack_one(&mut self, i: usize) {
        let group_fault = self
            .group_of(i)
            .is_some_and(|(_, members)| sync::faulted(&members));
        let r = &self.instances[i];
        let (fault, priority) = r.tracked();
        let now = (fault || group_fault, priority);
        for e in router::retrack(r.engine.priority(), r.faulted, now) {
            if let Event::Fault(f) = e {
                self.instances[i].faulted = f;
                if !f {
                    // Another try at the VIPs too.
                    self.instances[i].fault_reason = None;
                }
            }
            self.feed(i, e).await;
        }
    }

    async fn received(&mut self, sock: usize, r: Received) {
        let routed = router::route(
            &self.route_keys,
            &Packet {
                socket: sock,
                src: r.src,
                dst: r.dst,
                ttl: r.ttl,
                payload: &r.payload,
            },
        );
        if let Some(form) = routed.form {
            self.global.count_form(form);
        }
        match routed.to {
            Delivery::Engine(i, event) => self.feed(i, event).await,
            Delivery::Instance(i, c) => {
                let e = &mut self.instances[i].engine;
                match c {
                    InstanceCounter::InvalidType => e.count_invalid_type(),
                    InstanceCounter::Length => e.count_length_error(),
                    InstanceCounter::AuthType => e.count_auth_failure(),
                }
            }
            Delivery::Global(c) => self.global.count(c),
        }
    }

    /// Gives instance `i` an event and carries out what it answers, then
    /// what that asks of the other members of its sync group.
    async fn feed(&mut self, i: usize, event: Event) {
        self.feed_one(i, event).await;
        while let Some((j, e)) = self.sync_queue.pop_front() {
            self.feed_one(j, e).await;
        }
    }

    async fn feed_one(&mut self, i: usize, event: Event) {
        let before = self.instances[i].engine.priority();
        let mut next = Some(event);
        while let Some(event) = next.take() {
            let now = self.now();
            let actions = self.instances[i].engine.handle(now, event);
            self.carry_out(i, actions).await;
            // A master without its VIPs serves nobody: it resigns into
            // Fault (a backup takes over after Skew_Time) and says why.
            let r = &mut self.instances[i];
            if r.fault_reason.is_some() && !r.faulted {
                warn!(instance = %r.def.name, reason = ?r.fault_reason, "fault");
                r.faulted = true;
                next = Some(Event::Fault(true));
            }
        }
        let r = &mut self.instances[i];
        if !r.engine.handing_over()
            && let Some(stop) = r.arp_watch.take()
        {
            stop.store(true, std::sync::atomic::Ordering::Relaxed);
        }
        let r = &self.instances[i];
        if r.engine.priority() != before {
            let line = EventLine::Priority {
                at_unix_ms: unix_ms_now(),
                instance: r.def.name.clone(),
                from: before,
                to: r.engine.priority(),
            };
            publish(&mut self.subscribers, &line);
        }
        self.fastpath_sync(i);
    }

    async fn carry_out(&mut self, i: usize, actions: Vec<Action>) {
        for action in actions {
            if let Err(e) = self.act(i, action).await {
                warn!(instance = %self.instances[i].def.name, "{e:#}");
            }
        }
    }

    /// Puts virtual routes, then rules, in place for master `i`, each that
    /// went in recorded; one that cannot be added is logged (the VIPs
    /// serve regardless).
    async fn add_routing(
        &mut self,
        i: usize,
        routes: Vec<(RouteDef, Option<u32>)>,
        rules: Vec<RuleDef>,
    ) {
        for (route, oif) in routes {
            match self.nl.add_route(&route, oif).await {
                Ok(_) => self.instances[i].added_routes.push((route, oif)),
                Err(e) => warn!(instance = %self.instances[i].def.name, "{e:#}"),
            }
        }
        for rule in rules {
            match self.nl.add_rule(&rule).await {
                Ok(_) => self.instances[i].added_rules.push(rule),
                Err(e) => warn!(instance = %self.instances[i].def.name, "{e:#}"),
            }
        }
    }

    /// Takes instance `i`'s virtual rules, then routes, away; one that
    /// cannot be removed is logged.
    async fn del_routing(
        &self,
        i: usize,
        routes: Vec<(RouteDef, Option<u32>)>,
        rules: Vec<RuleDef>,
    ) {
        let name = &self.instances[i].def.name;
        for rule in rules {
            if let Err(e) = self.nl.del_rule(&rule).await {
                warn!(instance = %name, "{e:#}");
            }
        }
        for (route, oif) in routes {
            if let Err(e) = self.nl.del_route(&route, oif).await {
                warn!(instance = %name, "{e:#}");
            }
        }
    }

    /// Sends what the tick queued: one sendmmsg per socket.
    fn flush(&mut self) {
        let Some(out) = self.outbox.take() else {
            return;
        };
        for (outlet, batch) in io::by_outlet(out) {
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

    /// Writes what the fast path must know of instance `i`, if it changed.
    fn fastpath_sync(&mut self, i: usize) {
        let r = &mut self.instances[i];
        if let Some(fast) = &mut r.fast {
            let ctl = ctl_of(&r.def, &r.engine, fast.slot);
            self.fast.sync(&r.def.name, fast, ctl);
        }
    }

    /// Gives instance `i`'s engine the newest steady advert the fast path
    /// absorbed since it last looked, at the time it arrived: the
    /// Master_Down timer then runs from there, as if the daemon had seen it.
    async fn fastpath_absorbed(&mut self, i: usize) {
        let r = &mut self.instances[i];
        let Some(t) = r.fast.as_mut().and_then(|f| self.fast.absorbed(f)) else {
            return;
        };
        // The steady state's one step, many times a second per instance:
        // kept off the general path (nothing to carry out or to write back
        // to the maps, unless the engine answers).
        let actions = r.engine.handle(t, Event::Heard);
        if !actions.is_empty() {
            self.carry_out(i, actions).await;
            self.fastpath_sync(i);
        }
    }

    /// Removes instance `i` from the fast path's maps, and the program
    /// from its interface when no other instance there uses it.
    fn fastpath_forget(&mut self, i: usize) {
        let Some(fast) = self.instances[i].fast.take() else {
            return;
        };
        let still_used = self.instances.iter().any(|r| {
            r.fast
                .as_ref()
                .is_some_and(|f| f.key.ifindex == fast.key.ifindex)
        });
        self.fast.forget(fast, still_used);
    }

    /// Gratuitous ARPs for instance `i`'s VIPs ([`io::announce`]).
    fn announce(&self, i: usize, rounds: io::Rounds) -> JoinHandle<()> {
        let r = &self.instances[i];
        let targets = r.vips.iter().map(|v| (v.ifindex, v.mac, v.addr)).collect();
        io::announce(self.arp.clone(), r.def.name.clone(), targets, rounds)
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
                let dsts: Vec<IpAddr> = if r.unicast.is_some() {
                    r.def.unicast_peers.clone()
                } else {
                    vec![multicast_for(r.primary)]
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
                    let added = match self
                        .nl
                        .add_address_with(v.ifindex, v.addr, v.prefix, &v.opts)
                        .await
                    {
                        Ok(added) => added,
                        Err(e) => {
                            r.fault_reason =
                                Some(format!("VIP {}/{} not added: {e:#}", v.addr, v.prefix));
                            return Err(e);
                        }
                    };
                    // Already there: the owner's own address is not ours
                    // to remove; for any other instance it is the VIP a
                    // resumed master kept (a start removes any other
                    // leftover first).
                    if added || r.def.priority != 255 {
                        r.added.push((v.ifindex, v.addr));
                    }
                }
                // After the VIPs: a route's source is often one.
                let (routes, rules) = (r.routes.clone(), r.def.rules.clone());
                self.add_routing(i, routes, rules).await;
                let r = &mut self.instances[i];
                let rounds = io::Rounds {
                    repeat: r.def.garp_repeat,
                    delay: r.def.garp_delay,
                    refresh: r.def.garp_refresh,
                };
                let task = self.announce(i, rounds);
                let r = &mut self.instances[i];
                if let Some(old) = r.garp.replace(task) {
                    old.abort();
                }
            }
            Action::ReannounceVips => {
                let rounds = io::Rounds {
                    repeat: r.def.garp_lower_prio_repeat,
                    delay: r.def.garp_lower_prio_delay,
                    refresh: Duration::ZERO,
                };
                if rounds.repeat > 0 {
                    let task = self.announce(i, rounds);
                    let r = &mut self.instances[i];
                    if let Some(old) = r.lower_garp.replace(task) {
                        old.abort();
                    }
                }
            }
            Action::DelVips => {
                for g in [r.garp.take(), r.lower_garp.take()].into_iter().flatten() {
                    g.abort();
                }
                let routes = std::mem::take(&mut r.added_routes);
                let rules = std::mem::take(&mut r.added_rules);
                self.del_routing(i, routes, rules).await;
                let r = &mut self.instances[i];
                for (ifindex, addr) in std::mem::take(&mut r.added) {
                    self.nl.del_address(ifindex, addr).await?;
                }
            }
            Action::Handover(note) => {
                let name = &r.def.name;
                let text = match note {
                    HandoverNote::Began => {
                        info!(instance = %name, "handing over: resigned, keeping the VIPs until another router is master");
                        let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
                        let (tx, id) = (self.announced_tx.clone(), r.id);
                        let vips = r.vips.iter().map(|v| (v.mac, v.addr)).collect();
                        match crate::arp::watch_announcements(vips, stop.clone(), move || {
                            let _ = tx.send(id);
                        }) {
                            Ok(_) => r.arp_watch = Some(stop),
                            // The release then waits HANDOVER_ANNOUNCE_WAIT.
                            Err(e) => warn!(instance = %name, "{e:#}"),
                        }
                        HANDING_OVER.to_owned()
                    }
                    HandoverNote::AbandonedKeepingVips => {
                        warn!(instance = %name, "handover abandoned: no router took over; staying master with the VIPs");
                        format!(
                            "abandoned at {} (Unix ms): no router took over; the VIPs stayed",
                            unix_ms_now()
                        )
                    }
                    HandoverNote::AbandonedReleasingVips => {
                        warn!(instance = %name, "handover abandoned: no router took over; the VIPs go with the stop");
                        format!(
                            "abandoned at {} (Unix ms): no router took over; the VIPs went with the stop",
                            unix_ms_now()
                        )
                    }
                };
                let line = EventLine::Handover {
                    at_unix_ms: unix_ms_now(),
                    instance: r.def.name.clone(),
                    note: text.clone(),
                };
                r.handover = Some(text);
                publish(&mut self.subscribers, &line);
            }
            Action::WantMaster => {
                info!(instance = %r.def.name, "master down; waiting for the sync group");
                if let Some((idx, members)) = self.group_of(i) {
                    let me = idx.iter().position(|&j| j == i).unwrap_or(0);
                    if sync::ready(&members, me) {
                        self.sync_queue.push_back((i, Event::SyncMaster));
                    }
                }
            }
            Action::Transition { from, to, reason } => {
                if r.handover.as_deref() == Some(HANDING_OVER) {
                    r.handover = None;
                }
                r.transitions.push(TransitionRecord {
                    at_unix_ms: unix_ms_now(),
                    from,
                    to,
                    reason,
                });
                self.notifier.queue(
                    &r.def.name,
                    r.def
                        .notify
                        .commands("INSTANCE", &r.def.name, to, r.engine.priority()),
                    self.script_user,
                );
                info!(
                    instance = %r.def.name, vrid = r.def.vrid, ?from, ?to, ?reason,
                    priority = r.engine.priority(), "transition"
                );
                let line = EventLine::Transition {
                    at_unix_ms: unix_ms_now(),
                    instance: r.def.name.clone(),
                    from,
                    to,
                    reason,
                    priority: r.engine.priority(),
                };
                publish(&mut self.subscribers, &line);
                let (name, priority) = (r.def.name.clone(), r.engine.priority());
                self.fifo_line("INSTANCE", &name, to, priority);
                self.group_transition(i, from, to, reason);
            }
        }
        Ok(())
    }

    /// After member `i` of a sync group changed state: what the others
    /// must follow, and the group's notify commands if the group as a
    /// whole changed state.
    fn group_transition(
        &mut self,
        i: usize,
        from: State,
        to: State,
        reason: super::engine::Reason,
    ) {
        let Some((idx, members)) = self.group_of(i) else {
            return;
        };
        let me = idx.iter().position(|&j| j == i).unwrap_or(0);
        for (k, e) in sync::follow(&members, me, from, to, reason) {
            self.sync_queue.push_back((idx[k], e));
        }
        let Some(group) = self.instances[i].def.sync_group.clone() else {
            return;
        };
        let state = sync::group_state(&members);
        if self.group_states.insert(group.name.clone(), state) != Some(state) {
            info!(sync_group = %group.name, ?state, "sync group transition");
            self.fifo_line("GROUP", &group.name, state, 0);
            self.notifier.queue(
                &format!("group {}", group.name),
                group.notify.commands("GROUP", &group.name, state, 0),
                self.script_user,
            );
        }
    }
}

/// Sends `line` to every subscriber still listening.
fn publish(subscribers: &mut Vec<mpsc::UnboundedSender<String>>, line: &EventLine) {
    if subscribers.is_empty() {
        return;
    }
    let text = serde_json::to_string(line).unwrap_or_default() + "\n";
    subscribers.retain(|s| s.send(text.clone()).is_ok());
}

async fn recv_opt<T>(rx: &mut Option<mpsc::UnboundedReceiver<T>>) -> Option<T> {
    match rx {
        Some(rx) => rx.recv().await,
        None => std::future::pending().await,
    }
}

impl Drop for Vrrp {
    fn drop(&mut self) {
        for r in &self.readers {
            r.abort();
        }
        for r in &mut self.instances {
            for t in &r.script_tasks {
                t.abort();
            }
            if let Some(stop) = r.arp_watch.take() {
                stop.store(true, std::sync::atomic::Ordering::Relaxed);
            }
            for g in [r.garp.take(), r.lower_garp.take()].into_iter().flatten() {
                g.abort();
            }
        }
    }
}
