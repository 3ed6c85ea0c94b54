//! The daemon's side of the VRRP fast path's maps: it attaches the program
//! to an interface, gives each instance a record slot, writes
//! GREHA_VRRP_CTL when the engine's view changes, and reads
//! GREHA_VRRP_SEEN (shared memory, no system call) for the newest steady
//! advert the program absorbed, which it returns as a time for the engine
//! rather than calling into it.
use std::{net::IpAddr, path::PathBuf, time::Duration};

use anyhow::Result;
use greha_common::{
    MAX_VRRP, VRRP_FAMILY_IPV4, VRRP_FAMILY_IPV6, VRRP_STATE_BACKUP, VRRP_STATE_FAULT,
    VRRP_STATE_INIT, VRRP_STATE_MASTER, VrrpCtl, VrrpKey, VrrpSeen, VrrpStats, XDP_IF_VRRP,
    ipv4_in16, names,
};
use tracing::{info, warn};

use super::{
    def::{Family, InstanceDef},
    engine::{Instance, State},
    packet::{Auth, Version},
    router,
    status::LastAbsorbed,
};
use crate::{
    datapath::{Datapath, MmapArray},
    pins,
};

/// An instance's entry in the fast path's maps.
pub struct Fast {
    pub key: VrrpKey,
    /// The instance's record in GREHA_VRRP_SEEN.
    pub slot: u32,
    /// What GREHA_VRRP_CTL holds now (written only when it changes).
    ctl: Option<VrrpCtl>,
    /// The newest GREHA_VRRP_SEEN time already given to the engine.
    fed_ns: u64,
    /// Absorbed adverts given to the engine (it counted them).
    pub fed: u64,
}

/// The fast path's maps, opened once from the pins.
struct Maps {
    ctl: aya::maps::HashMap<aya::maps::MapData, VrrpKey, VrrpCtl>,
    seen: MmapArray<VrrpSeen>,
    stats: aya::maps::PerCpuHashMap<aya::maps::MapData, VrrpKey, VrrpStats>,
}

/// The fast path of one daemon.
pub struct FastPath {
    /// Where the datapath is pinned; no fast path without it.
    pin_dir: Option<PathBuf>,
    maps: Option<Maps>,
    /// CLOCK_MONOTONIC at the engines' epoch: the clock of
    /// bpf_ktime_get_ns.
    epoch_mono_ns: u64,
}

/// CLOCK_MONOTONIC in nanoseconds, bpf_ktime_get_ns's clock.
pub fn monotonic_ns() -> u64 {
    nix::time::clock_gettime(nix::time::ClockId::CLOCK_MONOTONIC).map_or(0, |t| {
        t.tv_sec() as u64 * 1_000_000_000 + t.tv_nsec() as u64
    })
}

/// An address as the maps hold it (IPv4: `ipv4_in16`).
pub fn addr16(a: IpAddr) -> [u8; 16] {
    match a {
        IpAddr::V4(a) => ipv4_in16(a.octets()),
        IpAddr::V6(a) => a.octets(),
    }
}

/// The address of `family` in a map's 16 bytes.
pub fn from_addr16(family: u16, a: [u8; 16]) -> IpAddr {
    if family == VRRP_FAMILY_IPV6 {
        IpAddr::from(a)
    } else {
        IpAddr::from([a[0], a[1], a[2], a[3]])
    }
}

/// What the program must know of an instance: the engine's state, the
/// master it follows and our priority, mapped to the ABI's values.
pub fn ctl_of(def: &InstanceDef, engine: &Instance, slot: u32) -> VrrpCtl {
    let (auth_type, auth) = match &def.auth {
        Auth::None => (0, [0; 8]),
        Auth::Pass(p) => (1, *p),
    };
    let (master_ip, master_priority, master_interval_cs) = engine
        .followed()
        .map_or(([0; 16], 0, 0), |(m, p, int)| (addr16(m), p, int));
    VrrpCtl {
        version: match def.version {
            Version::V2 => 2,
            Version::V3 => 3,
        },
        state: match engine.state() {
            State::Initialize => VRRP_STATE_INIT,
            State::Backup => VRRP_STATE_BACKUP,
            State::Master => VRRP_STATE_MASTER,
            State::Fault => VRRP_STATE_FAULT,
        },
        // A unicast peer with TTL bounds: every advert goes to the daemon,
        // which checks them (the program takes any TTL from a unicast
        // peer).
        fastpath: u8::from(def.unicast_peer_ttl.iter().all(|b| *b == (0, 255))),
        auth_type,
        interval_cs: def.advert_interval_cs,
        vip_count: def.advertised().count() as u16,
        auth,
        master_ip,
        master_priority,
        unicast: u8::from(!def.unicast_peers.is_empty()),
        master_interval_cs,
        slot,
        priority: engine.priority(),
        preempt: u8::from(def.preempt),
        _pad2: [0; 2],
    }
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

impl FastPath {
    pub fn new(pin_dir: Option<PathBuf>, epoch_mono_ns: u64) -> Self {
        Self {
            pin_dir,
            maps: None,
            epoch_mono_ns,
        }
    }

    /// Attaches the program to `ifindex` unless it is there already, and
    /// gives the instance the lowest slot not in `used`: XDP on an
    /// interface, tcx ingress on a greha tunnel (its frames arrive by a tc
    /// redirect, which XDP never sees). Without the datapath (or if the
    /// interface refuses) the instance runs without a fast path, which
    /// behaves the same.
    pub fn attach(
        &mut self,
        name: &str,
        iface: &str,
        ifindex: u32,
        (vrid, family): (u8, Family),
        used: &[u32],
    ) -> Result<Fast, String> {
        let pin_dir = self
            .pin_dir
            .clone()
            .ok_or_else(|| "no datapath (no pin directory)".to_owned())?;
        let slot = (0..MAX_VRRP)
            .find(|s| !used.contains(s))
            .ok_or_else(|| format!("all {MAX_VRRP} fast path slots are in use"))?;
        let attached = (|| -> Result<()> {
            let dp = Datapath::open(&pin_dir)?;
            if self.maps.is_none() {
                self.maps = Some(Maps {
                    ctl: dp.map(names::MAP_VRRP_CTL)?.try_into()?,
                    seen: dp.mmap_array(names::MAP_VRRP_SEEN, MAX_VRRP)?,
                    stats: dp.map(names::MAP_VRRP_STATS)?.try_into()?,
                });
            }
            if let Some(maps) = &self.maps {
                // A record left by an instance that had the slot before.
                maps.seen.write(slot, VrrpSeen::default());
            }
            let pin = pins::vrrp(ifindex);
            let tunnels: aya::maps::HashMap<_, u32, u32> =
                dp.map(names::MAP_TUNNEL_BY_DEV)?.try_into()?;
            if tunnels.get(&ifindex, 0).is_ok() {
                if !dp.pinned_link_exists(&pin) {
                    dp.attach_tc_pinned(
                        names::PROG_VRRP_TC,
                        iface,
                        aya::programs::TcAttachType::Ingress,
                        &pin,
                    )?;
                    info!(instance = %name, iface, "VRRP fast path attached (tcx ingress of a greha tunnel)");
                }
            } else if let Some(mode) = dp.xdp_use(ifindex, XDP_IF_VRRP)? {
                info!(instance = %name, iface, %mode, "VRRP fast path attached");
            }
            Ok(())
        })();
        match attached {
            Ok(()) => Ok(Fast {
                key: VrrpKey {
                    ifindex,
                    vrid: u16::from(vrid),
                    family: match family {
                        Family::V4 => VRRP_FAMILY_IPV4,
                        Family::V6 => VRRP_FAMILY_IPV6,
                    },
                },
                slot,
                ctl: None,
                fed_ns: 0,
                fed: 0,
            }),
            Err(e) => {
                warn!(instance = %name, "running without the fast path: {e:#}");
                Err(format!("{e:#}"))
            }
        }
    }

    /// Writes `ctl` for the instance, if it changed.
    pub fn sync(&mut self, name: &str, fast: &mut Fast, ctl: VrrpCtl) {
        let Some(maps) = &mut self.maps else {
            return;
        };
        if fast.ctl != Some(ctl) {
            match maps.ctl.insert(fast.key, ctl, 0) {
                Ok(()) => fast.ctl = Some(ctl),
                Err(e) => warn!(instance = %name, "fast path: {e}"),
            }
        }
    }

    /// The engine time of the newest steady advert the program absorbed
    /// since the engine last got one, if any; the engine is to hear it
    /// (`Event::Heard`) at that time.
    pub fn absorbed(&self, fast: &mut Fast) -> Option<Duration> {
        let (maps, ctl) = (self.maps.as_ref()?, fast.ctl.as_ref()?);
        let seen = read_seen(&maps.seen, fast.slot)?;
        let t = router::absorbed(ctl, &seen, fast.fed_ns, self.epoch_mono_ns)?;
        fast.fed_ns = seen.last_ns;
        fast.fed += 1;
        Some(t)
    }

    /// Removes the instance from the maps, and the program from its
    /// interface when `still_used` is false.
    pub fn forget(&mut self, fast: Fast, still_used: bool) {
        if let Some(maps) = &mut self.maps {
            let _ = maps.ctl.remove(&fast.key);
            maps.seen.write(fast.slot, VrrpSeen::default());
            let _ = maps.stats.remove(&fast.key);
        }
        if let (false, Some(pin_dir)) = (still_used, &self.pin_dir) {
            let done = Datapath::open(pin_dir).and_then(|dp| {
                let tc = pins::vrrp(fast.key.ifindex);
                if dp.pinned_link_exists(&tc) {
                    dp.detach_tc(
                        names::PROG_VRRP_TC,
                        fast.key.ifindex,
                        aya::programs::TcAttachType::Ingress,
                        &tc,
                    )?;
                } else {
                    dp.xdp_release(fast.key.ifindex, XDP_IF_VRRP)?;
                }
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

    /// The newest steady advert the program absorbed for the instance
    /// (tcpdump on the interface does not show them: XDP drops them before
    /// packet taps), with the time as milliseconds since the Unix epoch
    /// given the engines' epoch.
    pub fn last_absorbed(&self, fast: &Fast, epoch_unix_ms: u128) -> Option<LastAbsorbed> {
        let seen = read_seen(&self.maps.as_ref()?.seen, fast.slot)?;
        (seen.last_ns >= self.epoch_mono_ns && seen.last_ns > 0).then(|| LastAbsorbed {
            at_unix_ms: epoch_unix_ms + u128::from((seen.last_ns - self.epoch_mono_ns) / 1_000_000),
            src: from_addr16(fast.key.family, seen.src),
            priority: seen.priority,
            interval_cs: seen.interval_cs,
        })
    }

    /// The program's counters for the instance, summed over CPUs.
    pub fn stats(&self, fast: &Fast) -> Option<VrrpStats> {
        let maps = self.maps.as_ref()?;
        let mut total = VrrpStats::default();
        if let Ok(per_cpu) = maps.stats.get(&fast.key, 0) {
            for s in per_cpu.iter() {
                total.add(s);
            }
        }
        Some(total)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::vrrp::engine::Event;
    use std::net::Ipv4Addr;

    fn def(words: &str) -> InstanceDef {
        InstanceDef::parse(
            &words
                .split_whitespace()
                .map(str::to_owned)
                .collect::<Vec<_>>(),
        )
        .unwrap()
    }

    fn engine(d: &InstanceDef) -> Instance {
        Instance::new(d.engine_config(Ipv4Addr::new(198, 51, 100, 1).into()))
    }

    /// The control record follows the engine: its state, the master it
    /// follows once it heard one, and our effective priority.
    #[test]
    fn ctl_mirrors_the_engine() {
        let d = def(
            "v interface eth0 vrid 51 priority 100 version 2 auth-pass 1111 nopreempt \
             vip 203.0.113.1 vip 203.0.113.2",
        );
        let mut e = engine(&d);
        let c = ctl_of(&d, &e, 7);
        assert_eq!(
            (c.version, c.state, c.slot, c.vip_count),
            (2, VRRP_STATE_INIT, 7, 2)
        );
        assert_eq!((c.auth_type, &c.auth[..4], c.preempt), (1, &b"1111"[..], 0));
        e.handle(Duration::ZERO, Event::Startup);
        let c = ctl_of(&d, &e, 7);
        assert_eq!(
            (c.state, c.master_ip, c.master_priority),
            (VRRP_STATE_BACKUP, [0; 16], 0)
        );
        let master = Ipv4Addr::new(198, 51, 100, 2);
        e.handle(
            Duration::from_millis(10),
            Event::Advert {
                src: master.into(),
                ttl: 255,
                advert: crate::vrrp::packet::Advert {
                    version: Version::V2,
                    vrid: 51,
                    priority: 150,
                    interval_cs: 100,
                    addresses: d.vips.iter().map(|v| v.addr).collect(),
                    auth: d.auth.clone(),
                },
            },
        );
        let c = ctl_of(&d, &e, 7);
        assert_eq!(
            (c.master_ip, c.master_priority, c.master_interval_cs),
            (ipv4_in16(master.octets()), 150, 100)
        );
        e.handle(Duration::from_millis(20), Event::Priority(90));
        assert_eq!(ctl_of(&d, &e, 7).priority, 90);
        e.handle(Duration::from_millis(30), Event::Fault(true));
        let c = ctl_of(&d, &e, 7);
        assert_eq!((c.state, c.master_priority), (VRRP_STATE_FAULT, 0));
    }
}
