//! Reads the counters straight from the pinned maps, so they can be read
//! with the daemon down, and by bpftool with the same field names.
use std::{ffi::CStr, path::Path};

use anyhow::{Context as _, Result};
use aya::maps::{Map, MapData, PerCpuHashMap};
use greha_common::{PacketCounters, names};
use serde::Serialize;

/// The counters of one interface, summed over CPUs.
#[derive(Debug, Serialize, PartialEq, Eq)]
pub struct InterfaceCounters {
    pub ifindex: u32,
    /// Empty when the interface no longer exists (or lives in another netns).
    pub name: String,
    pub rx_packets: u64,
    pub rx_bytes: u64,
}

#[derive(Debug, Serialize)]
pub struct Counters {
    pub interfaces: Vec<InterfaceCounters>,
    /// The tunnels and their datapath counters, from the same pins.
    pub tunnels: Vec<crate::tunnel::TunnelStatus>,
}

pub fn read(pin_dir: &Path) -> Result<Counters> {
    let path = pin_dir.join(names::MAP_IF_COUNTERS);
    crate::bpffs::pin_exists(&path)?;
    let data = MapData::from_pin(&path).with_context(|| {
        format!(
            "no counters pinned at {} (is greha running, or was it stopped with --keep-datapath?)",
            path.display()
        )
    })?;
    let map: PerCpuHashMap<_, u32, PacketCounters> = Map::from_map_data(data)?.try_into()?;
    let mut interfaces = Vec::new();
    for entry in map.iter() {
        let (ifindex, per_cpu) = entry.context("reading the interface counters")?;
        let mut total = PacketCounters::default();
        for c in per_cpu.iter() {
            total.add(c);
        }
        interfaces.push(InterfaceCounters {
            ifindex,
            name: ifname(ifindex),
            rx_packets: total.rx_packets,
            rx_bytes: total.rx_bytes,
        });
    }
    interfaces.sort_by_key(|i| i.ifindex);
    Ok(Counters {
        interfaces,
        tunnels: crate::tunnel::list(pin_dir)?,
    })
}

fn ifname(ifindex: u32) -> String {
    let mut buf = [0u8; libc::IF_NAMESIZE];
    // SAFETY: buf has the IF_NAMESIZE bytes if_indextoname writes at most.
    let p = unsafe { libc::if_indextoname(ifindex, buf.as_mut_ptr().cast()) };
    if p.is_null() {
        return String::new();
    }
    CStr::from_bytes_until_nul(&buf)
        .map(|s| s.to_string_lossy().into_owned())
        .unwrap_or_default()
}

pub fn print_table(c: &Counters) {
    if !c.tunnels.is_empty() {
        crate::tunnel::print_table(&c.tunnels);
        println!();
    }
    println!(
        "{:<16} {:>8} {:>14} {:>16}",
        "INTERFACE", "IFINDEX", "RX_PACKETS", "RX_BYTES"
    );
    for i in &c.interfaces {
        let name = if i.name.is_empty() { "-" } else { &i.name };
        println!(
            "{:<16} {:>8} {:>14} {:>16}",
            name, i.ifindex, i.rx_packets, i.rx_bytes
        );
    }
}
