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
    /// tc ingress on an underlay: decapsulates GRE for the tunnels it carries.
    pub const PROG_GRE_DECAP: &str = "greha_gre_decap";
    /// tc egress on a tunnel interface: encapsulates what the host sends.
    pub const PROG_GRE_ENCAP: &str = "greha_gre_encap";
    /// tc program that does nothing: the benchmarks' baseline.
    pub const PROG_NOP: &str = "greha_nop";
    /// Array of [`super::TunnelConfig`] indexed by tunnel id.
    pub const MAP_TUNNELS: &str = "GREHA_TUNNELS";
    /// Hash: tunnel interface ifindex -> tunnel id (encapsulation).
    pub const MAP_TUNNEL_BY_DEV: &str = "GREHA_TUNNEL_BY_DEV";
    /// Hash: [`super::Endpoints`] -> tunnel id (decapsulation).
    pub const MAP_TUNNEL_BY_ENDPOINTS: &str = "GREHA_TUNNEL_BY_ENDP";
    /// Hash: local underlay address -> a tunnel id, to count GRE from a
    /// wrong source against the tunnel it was aimed at.
    pub const MAP_TUNNEL_BY_LOCAL: &str = "GREHA_TUNNEL_BY_LOCAL";
    /// Per-CPU array of [`super::TunnelCounters`] indexed by tunnel id.
    pub const MAP_TUNNEL_COUNTERS: &str = "GREHA_TUNNEL_COUNTERS";
    /// The maps userspace pins in its bpffs directory.
    pub const PINNED_MAPS: &[&str] = &[
        MAP_IF_COUNTERS,
        MAP_TUNNELS,
        MAP_TUNNEL_BY_DEV,
        MAP_TUNNEL_BY_ENDPOINTS,
        MAP_TUNNEL_BY_LOCAL,
        MAP_TUNNEL_COUNTERS,
    ];
}

/// Most tunnels one host runs; tunnel ids are `0..MAX_TUNNELS`.
pub const MAX_TUNNELS: u32 = 256;

/// `TunnelConfig::flags`: the slot holds a live tunnel.
pub const TUNNEL_F_ACTIVE: u32 = 1;
/// `TunnelConfig::flags`: GRE key present (RFC 2890) on send, required on receive.
pub const TUNNEL_F_KEY: u32 = 2;
/// `TunnelConfig::flags`: Ethernet over GRE (gretap, 0x6558); IPv4 over GRE (0x0800) without it.
pub const TUNNEL_F_GRETAP: u32 = 4;

/// `TunnelConfig::flags`: greha added the managed neighbour entry for the
/// next hop, and removes it with the last tunnel that uses it.
pub const TUNNEL_F_OWN_NEIGH: u32 = 8;

/// GRE protocol type of transparent Ethernet bridging (gretap).
pub const GRE_PROTO_TEB: u16 = 0x6558;
/// GRE protocol type of IPv4.
pub const GRE_PROTO_IPV4: u16 = 0x0800;

/// One tunnel as the datapath needs it. Addresses are in network order.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct TunnelConfig {
    pub local: [u8; 4],
    pub remote: [u8; 4],
    pub key: u32,
    pub flags: u32,
    pub underlay_ifindex: u32,
    /// The host-visible tunnel interface.
    pub dev_ifindex: u32,
    /// The other end of the tunnel interface's veth pair. The encap FIB
    /// lookup runs as if from it (forwarding is on there, and only there).
    pub peer_ifindex: u32,
    /// Largest outer IPv4 packet the underlay carries.
    pub underlay_mtu: u32,
    pub ttl: u8,
    pub tos: u8,
    pub _pad: [u8; 2],
    /// MAC of the tunnel interface: destination of frames decapsulated in
    /// `gre` mode, which carry no Ethernet header on the wire.
    pub dev_mac: [u8; 6],
    pub peer_mac: [u8; 6],
    /// Gateway towards the remote, or the remote itself when on-link.
    pub next_hop: [u8; 4],
    /// The tunnel interface's name, NUL-padded.
    pub name: [u8; 16],
}

impl TunnelConfig {
    /// Bytes of GRE header this tunnel sends (4, or 8 with a key).
    pub fn gre_header_len(&self) -> u32 {
        if self.flags & TUNNEL_F_KEY != 0 { 8 } else { 4 }
    }
}

/// Key of the decapsulation lookup: the outer destination and source.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct Endpoints {
    pub local: [u8; 4],
    pub remote: [u8; 4],
}

/// Per-tunnel counters. rx counts decapsulated frames (inner bytes), tx
/// encapsulated ones (inner bytes, GSO segments counted one by one).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[cfg_attr(feature = "user", derive(serde::Serialize))]
pub struct TunnelCounters {
    pub rx_packets: u64,
    pub rx_bytes: u64,
    pub tx_packets: u64,
    pub tx_bytes: u64,
    /// Key missing, unexpected, or different from the configured one.
    pub rx_drop_wrong_key: u64,
    /// GRE to this tunnel's local address from another source.
    pub rx_drop_wrong_source: u64,
    /// GRE version other than 0, or reserved flags (routing, strict source
    /// route, recursion, ...) set.
    pub rx_drop_bad_flags: u64,
    /// Protocol type other than the tunnel mode's (0x6558 or 0x0800).
    pub rx_drop_bad_protocol: u64,
    pub rx_drop_bad_checksum: u64,
    pub rx_drop_truncated: u64,
    /// Encapsulated packet larger than the underlay MTU.
    pub tx_drop_too_big: u64,
    /// No route or no resolved neighbour towards the remote.
    pub tx_drop_no_next_hop: u64,
    /// Frame the mode cannot carry (non-IPv4 in `gre` mode) or a helper failure.
    pub tx_drop_error: u64,
}

impl TunnelCounters {
    pub fn add(&mut self, o: &Self) {
        self.rx_packets += o.rx_packets;
        self.rx_bytes += o.rx_bytes;
        self.tx_packets += o.tx_packets;
        self.tx_bytes += o.tx_bytes;
        self.rx_drop_wrong_key += o.rx_drop_wrong_key;
        self.rx_drop_wrong_source += o.rx_drop_wrong_source;
        self.rx_drop_bad_flags += o.rx_drop_bad_flags;
        self.rx_drop_bad_protocol += o.rx_drop_bad_protocol;
        self.rx_drop_bad_checksum += o.rx_drop_bad_checksum;
        self.rx_drop_truncated += o.rx_drop_truncated;
        self.tx_drop_too_big += o.tx_drop_too_big;
        self.tx_drop_no_next_hop += o.tx_drop_no_next_hop;
        self.tx_drop_error += o.tx_drop_error;
    }
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

// SAFETY: plain `repr(C)` integers and byte arrays with no implicit
// padding, valid for any bit pattern.
#[cfg(feature = "user")]
mod pod {
    unsafe impl aya::Pod for super::PacketCounters {}
    unsafe impl aya::Pod for super::TunnelConfig {}
    unsafe impl aya::Pod for super::Endpoints {}
    unsafe impl aya::Pod for super::TunnelCounters {}
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The eBPF side and userspace must agree on sizes with no hidden
    /// padding (BTF and the kernel see exactly these bytes).
    #[test]
    fn layouts_have_no_padding() {
        assert_eq!(size_of::<TunnelConfig>(), 4 * 8 + 4 + 12 + 4 + 16);
        assert_eq!(size_of::<Endpoints>(), 8);
        assert_eq!(size_of::<TunnelCounters>(), 13 * 8);
        assert_eq!(size_of::<PacketCounters>(), 16);
    }
}
