//! Instance definitions checked against the host before anything
//! changes: the interfaces exist, the VRRP interface has an address to send
//! from, VRIDs are unique per interface, a priority-255 owner owns its
//! addresses; the result is what the shell needs to start the instance.
use std::{collections::HashMap, net::Ipv4Addr};

use anyhow::{Result, anyhow, bail};

use super::{
    def::{InstanceDef, TrackKind},
    router::TrackerState,
    track::Tracker,
};
use crate::netlink::{self, Netlink};

/// A virtual address and the interface it goes on.
pub struct Vip {
    pub addr: Ipv4Addr,
    pub prefix: u8,
    pub label: Option<String>,
    pub ifindex: u32,
    pub mac: [u8; 6],
}

/// An instance checked against the host, not yet started.
pub struct Prepared {
    pub def: InstanceDef,
    pub link: netlink::Link,
    pub primary: Ipv4Addr,
    pub vips: Vec<Vip>,
    pub trackers: Vec<Tracker>,
}

/// Checks `defs` against the host (interfaces, addresses, VRIDs unique
/// with `kept`), changing nothing.
pub async fn prepare(
    nl: &Netlink,
    defs: &[InstanceDef],
    kept: &[&InstanceDef],
) -> Result<Vec<Prepared>> {
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
                        anyhow!("vrrp instance {name}: track-interface: {ifname} does not exist")
                    })?;
                    (l.index, l.up)
                }
                TrackKind::Script { .. } => (0, true),
            };
            trackers.push(Tracker {
                track: t.clone(),
                ifindex,
                state: TrackerState::new(t.weight, up),
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
