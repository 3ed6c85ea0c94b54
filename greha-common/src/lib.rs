//! The ABI between greha's eBPF programs and userspace.
//!
//! Every type here is `#[repr(C)]` and made of fixed-size integers only, so
//! its layout is the same for `bpfel-unknown-none` and the host, and BTF
//! describes it field by field (which is what lets `bpftool map dump` print
//! the field names).
#![no_std]

/// Names of the programs and maps in the greha-ebpf object. Userspace looks
/// them up by these names, and the pins in bpffs carry them too.
pub mod names {
    /// XDP program that counts every frame received on an interface.
    pub const PROG_COUNT: &str = "greha_count";
    /// Per-CPU hash of [`super::PacketCounters`] keyed by ifindex.
    pub const MAP_IF_COUNTERS: &str = "GREHA_IF_COUNTERS";
    /// The maps userspace pins in its bpffs directory.
    pub const PINNED_MAPS: &[&str] = &[MAP_IF_COUNTERS];
}

/// Most interfaces one datapath counts at once; sized for a host with many
/// VLANs and tunnels, small enough to cost nothing.
pub const MAX_INTERFACES: u32 = 1024;

/// Received traffic on one interface, as the XDP program saw it (frames
/// including their Ethernet header, before any other program's verdict).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct PacketCounters {
    pub rx_packets: u64,
    pub rx_bytes: u64,
}

impl PacketCounters {
    /// Per-CPU values are summed by userspace; the kernel never sees a total.
    pub fn add(&mut self, other: &Self) {
        self.rx_packets += other.rx_packets;
        self.rx_bytes += other.rx_bytes;
    }
}

#[cfg(feature = "user")]
// SAFETY: plain `repr(C)` integers with no padding, valid for any bit pattern.
unsafe impl aya::Pod for PacketCounters {}
