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
    /// The XDP program greha attaches: counting and the VRRP check, as
    /// [`MAP_XDP_IF`] says per interface.
    pub const PROG_XDP: &str = "greha_xdp";
    /// Hash: ifindex -> `XDP_IF_*` flags, written by userspace.
    pub const MAP_XDP_IF: &str = "GREHA_XDP_IF";
    /// Per-CPU hash of [`super::PacketCounters`] keyed by ifindex.
    pub const MAP_IF_COUNTERS: &str = "GREHA_IF_COUNTERS";
    /// tc ingress on an underlay: decapsulates GRE for the tunnels it carries.
    pub const PROG_GRE_DECAP: &str = "greha_gre_decap";
    /// tc egress on a tunnel interface: encapsulates what the host sends.
    pub const PROG_GRE_ENCAP: &str = "greha_gre_encap";
    /// Tail-called by the encapsulation for a packet too big for the path:
    /// answers its sender with ICMP (`pmtudisc`).
    pub const PROG_GRE_TOO_BIG: &str = "greha_gre_too_big";
    /// Tail-called by the encapsulation for a gretap frame whose VLAN tag
    /// is in the skb's metadata.
    pub const PROG_GRE_ENCAP_VLAN: &str = "greha_gre_encap_vlan";
    /// tc ingress on the inner end of a `nopmtudisc` tunnel's fragmenting
    /// veth pair: cuts the outer packets that arrive there, checksums
    /// complete, into IPv4 fragments for the path.
    pub const PROG_GRE_FRAGMENT: &str = "greha_gre_fragment";
    /// Tail-called by [`PROG_GRE_FRAGMENT`], and by itself: sends one
    /// fragment each time.
    pub const PROG_GRE_FRAGMENT_NEXT: &str = "greha_gre_fragment_next";
    /// Program array of the encapsulation's tail calls; pinned with the
    /// programs of its build (it holds them).
    pub const MAP_GRE_TAILS: &str = "GREHA_GRE_TAILS";
    /// tc program that does nothing: the benchmarks' baseline.
    pub const PROG_NOP: &str = "greha_nop";
    /// Array of [`super::TunnelConfig`] indexed by tunnel id.
    pub const MAP_TUNNELS: &str = "GREHA_TUNNELS";
    /// Hash: tunnel interface ifindex -> tunnel id (encapsulation).
    pub const MAP_TUNNEL_BY_DEV: &str = "GREHA_TUNNEL_BY_DEV";
    /// Hash: [`super::Endpoints`] -> a tunnel id of that pair, to count
    /// GRE with no tunnel's key against one of them.
    pub const MAP_TUNNEL_BY_ENDPOINTS: &str = "GREHA_TUNNEL_BY_ENDP";
    /// Hash: [`super::KeyedEndpoints`] -> tunnel id (decapsulation): the
    /// tunnels between two hosts are told apart by key, as the kernel's.
    pub const MAP_TUNNEL_BY_KEY: &str = "GREHA_TUNNEL_BY_KEY";
    /// Hash: local underlay address -> a tunnel id, to count GRE from a
    /// wrong source against the tunnel it was aimed at.
    pub const MAP_TUNNEL_BY_LOCAL: &str = "GREHA_TUNNEL_BY_LOCAL";
    /// Per-CPU array of [`super::TunnelCounters`] indexed by tunnel id.
    pub const MAP_TUNNEL_COUNTERS: &str = "GREHA_TUNNEL_COUNTERS";
    /// Array of [`super::TunnelSeq`] indexed by tunnel id.
    pub const MAP_TUNNEL_SEQ: &str = "GREHA_TUNNEL_SEQ";
    /// Array of [`super::TunnelProbe`] indexed by tunnel id.
    pub const MAP_TUNNEL_PROBE: &str = "GREHA_TUNNEL_PROBE";
    /// XDP on an interface carrying VRRP: validates and counts adverts,
    /// absorbs the steady ones.
    pub const PROG_VRRP: &str = "greha_vrrp";
    /// The same check at tcx ingress of a greha tunnel interface.
    pub const PROG_VRRP_TC: &str = "greha_vrrp_tc";
    /// Hash: [`super::VrrpKey`] -> [`super::VrrpCtl`], written by the daemon.
    pub const MAP_VRRP_CTL: &str = "GREHA_VRRP_CTL";
    /// Array (mmap-able) indexed by [`super::VrrpCtl::slot`] ->
    /// [`super::VrrpSeen`], written by the program; the daemon reads it
    /// with no system call.
    pub const MAP_VRRP_SEEN: &str = "GREHA_VRRP_SEEN";
    /// Per-CPU hash: [`super::VrrpKey`] -> [`super::VrrpStats`].
    pub const MAP_VRRP_STATS: &str = "GREHA_VRRP_STATS";
    /// The maps userspace pins in its bpffs directory.
    pub const PINNED_MAPS: &[&str] = &[
        MAP_XDP_IF,
        MAP_VRRP_CTL,
        MAP_VRRP_SEEN,
        MAP_VRRP_STATS,
        MAP_IF_COUNTERS,
        MAP_TUNNELS,
        MAP_TUNNEL_BY_DEV,
        MAP_TUNNEL_BY_ENDPOINTS,
        MAP_TUNNEL_BY_KEY,
        MAP_TUNNEL_BY_LOCAL,
        MAP_TUNNEL_COUNTERS,
        MAP_TUNNEL_SEQ,
        MAP_TUNNEL_PROBE,
    ];
}

/// `GREHA_XDP_IF` flags: count the interface's frames.
pub const XDP_IF_COUNT: u32 = 1;
/// `GREHA_XDP_IF` flags: run the VRRP check on the interface.
pub const XDP_IF_VRRP: u32 = 2;

/// `GREHA_GRE_TAILS` index of [`names::PROG_GRE_TOO_BIG`].
pub const TAIL_TOO_BIG: u32 = 0;
/// `GREHA_GRE_TAILS` index of [`names::PROG_GRE_ENCAP_VLAN`].
pub const TAIL_ENCAP_VLAN: u32 = 1;
/// `GREHA_GRE_TAILS` index of [`names::PROG_GRE_FRAGMENT_NEXT`].
pub const TAIL_FRAGMENT_NEXT: u32 = 2;

/// Most tunnels one host runs; tunnel ids are `0..MAX_TUNNELS`.
pub const MAX_TUNNELS: u32 = 256;

/// `TunnelConfig::flags`: the slot holds a live tunnel.
pub const TUNNEL_F_ACTIVE: u32 = 1;
/// `TunnelConfig::flags`: GRE key `okey` sent (RFC 2890; iproute2's okey).
pub const TUNNEL_F_OKEY: u32 = 2;
/// `TunnelConfig::flags`: GRE key `ikey` required on receive (iproute2's
/// ikey); without it, keyed packets are refused.
pub const TUNNEL_F_IKEY: u32 = 16;
/// `TunnelConfig::flags`: Ethernet over GRE (gretap, 0x6558); IPv4 over GRE (0x0800) without it.
pub const TUNNEL_F_GRETAP: u32 = 4;

/// `TunnelConfig::flags`: greha added the managed neighbour entry for the
/// next hop, and removes it with the last tunnel that uses it.
pub const TUNNEL_F_OWN_NEIGH: u32 = 8;
/// `TunnelConfig::flags`: GRE checksum required on receive (iproute2's
/// icsum); without it a checksum is verified when present.
pub const TUNNEL_F_ICSUM: u32 = 32;
/// `TunnelConfig::flags`: GRE checksum sent (ocsum).
pub const TUNNEL_F_OCSUM: u32 = 64;
/// `TunnelConfig::flags`: sequence numbers required on receive, and
/// packets older than the last one dropped (iseq, as the kernel does).
pub const TUNNEL_F_ISEQ: u32 = 128;
/// `TunnelConfig::flags`: sequence numbers sent (oseq).
pub const TUNNEL_F_OSEQ: u32 = 256;
/// `TunnelConfig::flags`: the underlay is IPv6 (ip6gretap, ip6gre): the
/// addresses are 16 bytes, the outer header IPv6's.
pub const TUNNEL_F_IPV6: u32 = 512;
/// `TunnelConfig::flags`: IPv6 underlay, and every outer packet carries a
/// destination option with the tunnel encapsulation limit
/// (`TunnelConfig::encap_limit`; RFC 2473, iproute2's `encaplimit N`).
pub const TUNNEL_F_ENCAP_LIMIT: u32 = 1024;
/// `TunnelConfig::flags`: outer DF only where the inner IPv4 packet has
/// it (iproute2's `nopmtudisc`; IPv4 underlay); a packet too big for the
/// path without DF is fragmented, as the kernel's tunnels do.
pub const TUNNEL_F_NOPMTUDISC: u32 = 2048;
/// `TunnelConfig::flags`: with [`TUNNEL_F_NOPMTUDISC`], never DF: the
/// inner packet's is ignored too (`ignore-df`).
pub const TUNNEL_F_IGNORE_DF: u32 = 4096;

/// Whether an outer IPv4 packet carries DF, as the kernel's
/// ip_tunnel_xmit decides: always with `pmtudisc` (the default); with
/// `nopmtudisc` only if the inner packet is IPv4 with DF, unless
/// `ignore-df`. A packet too big for the path is answered with ICMP when
/// this holds, and fragmented when not.
/// 0 or 1 (`inner_ipv4_df` too), for the datapath to compute with rather
/// than branch on.
#[inline(always)]
pub const fn outer_df(flags: u32, inner_ipv4_df: u32) -> u32 {
    let pmtudisc = (flags & TUNNEL_F_NOPMTUDISC == 0) as u32;
    let heed = (flags & TUNNEL_F_IGNORE_DF == 0) as u32;
    pmtudisc | (heed & inner_ipv4_df & 1)
}

/// `TunnelConfig::flowlabel`: copy the inner IPv6 packet's flow label
/// (iproute2's `flowlabel inherit`).
pub const FLOWLABEL_INHERIT: u32 = 1 << 31;

/// GRE protocol type of transparent Ethernet bridging (gretap).
pub const GRE_PROTO_TEB: u16 = 0x6558;
/// GRE protocol type of IPv4.
pub const GRE_PROTO_IPV4: u16 = 0x0800;
/// GRE protocol type of IPv6 (inside gre and ip6gre tunnels).
pub const GRE_PROTO_IPV6: u16 = 0x86dd;

/// One tunnel as the datapath needs it. Addresses are in network order,
/// 16 bytes: an IPv6 one, or an IPv4 one first and zeros after
/// ([`ipv4_in16`]).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct TunnelConfig {
    pub local: [u8; 16],
    pub remote: [u8; 16],
    /// The key required on receive (with `TUNNEL_F_IKEY`).
    pub ikey: u32,
    /// The key sent (with `TUNNEL_F_OKEY`).
    pub okey: u32,
    pub flags: u32,
    pub underlay_ifindex: u32,
    /// The host-visible tunnel interface.
    pub dev_ifindex: u32,
    /// The other end of the tunnel interface's veth pair. The encap FIB
    /// lookup runs as if from it (forwarding is on there, and only there).
    pub peer_ifindex: u32,
    /// Largest outer IP packet the underlay carries.
    pub underlay_mtu: u32,
    /// With [`TUNNEL_F_NOPMTUDISC`]: the fragmenting veth pair's outer
    /// end, which the encapsulation sends a packet to fragment into (its
    /// checksum offload is off, so the kernel completes the checksums and
    /// cuts GSO packets on the way through).
    pub frag_ifindex: u32,
    /// IPv6 underlay: the outer flow label (20 bits), or
    /// [`FLOWLABEL_INHERIT`].
    pub flowlabel: u32,
    /// Outer TTL (IPv6: hop limit); 0 inherits the inner packet's (64 for
    /// other frames), as the kernel's `ttl inherit`.
    pub ttl: u8,
    /// Outer TOS (IPv6: traffic class); bit 0 set inherits the inner
    /// packet's, as the kernel's `tos inherit` (1).
    pub tos: u8,
    /// With [`TUNNEL_F_ENCAP_LIMIT`]: the limit sent.
    pub encap_limit: u8,
    pub _pad: [u8; 1],
    /// MAC of the tunnel interface: destination of frames decapsulated in
    /// `gre` mode, which carry no Ethernet header on the wire.
    pub dev_mac: [u8; 6],
    pub peer_mac: [u8; 6],
    /// Gateway towards the remote, or the remote itself when on-link.
    pub next_hop: [u8; 16],
    /// The tunnel interface's name, NUL-padded.
    pub name: [u8; 16],
}

impl TunnelConfig {
    /// Bytes of the outer IP header this tunnel sends: IPv4's 20, or
    /// IPv6's 40 and 8 more for the encapsulation limit option.
    pub fn ip_header_len(&self) -> u32 {
        if self.flags & TUNNEL_F_IPV6 == 0 {
            20
        } else if self.flags & TUNNEL_F_ENCAP_LIMIT != 0 {
            48
        } else {
            40
        }
    }

    /// Bytes of GRE header this tunnel sends: 4, and 4 more for each of
    /// checksum, key and sequence number.
    pub fn gre_header_len(&self) -> u32 {
        let mut len = 4;
        for f in [TUNNEL_F_OCSUM, TUNNEL_F_OKEY, TUNNEL_F_OSEQ] {
            if self.flags & f != 0 {
                len += 4;
            }
        }
        len
    }
}

/// The kernel's `struct bpf_spin_lock`, under that name: the verifier
/// finds a map value's lock by its BTF type name.
#[repr(C)]
#[allow(non_camel_case_types)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct bpf_spin_lock {
    pub val: u32,
}

/// A tunnel's GRE sequence numbers (RFC 2890), shared by all CPUs: the
/// last one sent (`oseq`), taken under `lock` so no two frames share one
/// (a fetch-and-add needs 5.12's atomics), and the next one expected
/// (`iseq`; 0 until the first packet), updated without a lock as the
/// kernel's ip_tunnel_rcv does.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct TunnelSeq {
    pub lock: bpf_spin_lock,
    pub tx_last: u32,
    pub rx_next: u32,
}

/// `TunnelProbe::state`: nobody probes the tunnel (no `probe` address, or
/// no greha daemon runs it).
pub const PROBE_OFF: u32 = 0;
/// `TunnelProbe::state`: probing, no answer yet and not enough lost to
/// call it dead.
pub const PROBE_UNKNOWN: u32 = 1;
/// `TunnelProbe::state`: the far end answered within the last `fall`
/// probes.
pub const PROBE_ALIVE: u32 = 2;
/// `TunnelProbe::state`: `fall` probes in a row went unanswered.
pub const PROBE_DEAD: u32 = 3;

/// A tunnel's liveness as greha's daemon finds it, by pinging an address
/// at the far end through the tunnel (which any peer answers, the
/// kernel's gretap/gre included). Written by userspace only; a map of the
/// datapath so it is pinned with the tunnel's counters, read by any greha
/// command, and printed by field name by bpftool.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct TunnelProbe {
    /// The probed address, network order (0: none).
    pub target: [u8; 4],
    /// `PROBE_*`.
    pub state: u32,
    /// Echo requests sent.
    pub sent: u64,
    /// Echo replies received.
    pub answered: u64,
    /// Changes between alive and dead.
    pub changes: u64,
}

/// Key of the decapsulation lookup: the outer destination and source.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct Endpoints {
    pub local: [u8; 16],
    pub remote: [u8; 16],
}

/// Key of the decapsulation lookup proper: the outer destination and
/// source, and the GRE key the packet carries (`keyed` 1) or none
/// (`keyed` 0, `key` 0), as the kernel's ip_tunnel_lookup matches them.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct KeyedEndpoints {
    pub local: [u8; 16],
    pub remote: [u8; 16],
    pub key: u32,
    pub keyed: u32,
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
    /// GRE checksum (RFC 2784) or outer IPv4 header checksum wrong, or no
    /// GRE checksum where `icsum` requires one.
    pub rx_drop_bad_checksum: u64,
    pub rx_drop_truncated: u64,
    /// No sequence number, or one older than the last (`iseq`, RFC 2890).
    pub rx_drop_out_of_order: u64,
    /// Encapsulated packet larger than the path to the remote carries (the
    /// underlay's MTU, or a smaller one the path reported).
    pub tx_drop_too_big: u64,
    /// No route or no resolved neighbour towards the remote.
    pub tx_drop_no_next_hop: u64,
    /// Frame the mode cannot carry (non-IPv4 in `gre` mode, a packet of
    /// several GSO segments on a tunnel with `ocsum` or `oseq`, which carries
    /// one segment per packet) or a helper failure.
    pub tx_drop_error: u64,
    /// Of `tx_drop_too_big`: those whose sender was sent ICMP
    /// "fragmentation needed" or ICMPv6 "packet too big" (`pmtudisc`).
    pub tx_icmp_too_big: u64,
    /// Outer IPv4 fragments handed to the kernel to reassemble; greha's
    /// daemon takes the whole packet back through `greha-reasm`.
    pub rx_fragments: u64,
    /// Outer IPv4 fragments sent: packets too big for the path without DF
    /// (`nopmtudisc`), cut as the kernel's tunnels cut them.
    pub tx_fragments: u64,
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
        self.rx_drop_out_of_order += o.rx_drop_out_of_order;
        self.tx_drop_too_big += o.tx_drop_too_big;
        self.tx_icmp_too_big += o.tx_icmp_too_big;
        self.rx_fragments += o.rx_fragments;
        self.tx_fragments += o.tx_fragments;
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
    unsafe impl aya::Pod for super::KeyedEndpoints {}
    unsafe impl aya::Pod for super::TunnelCounters {}
    unsafe impl aya::Pod for super::TunnelSeq {}
    unsafe impl aya::Pod for super::TunnelProbe {}
    unsafe impl aya::Pod for super::VrrpKey {}
    unsafe impl aya::Pod for super::VrrpCtl {}
    unsafe impl aya::Pod for super::VrrpSeen {}
    unsafe impl aya::Pod for super::VrrpStats {}
    unsafe impl aya::Pod for super::AdvertSummary {}
}

/// Most VRRP instances one host runs (255 VRIDs on a few interfaces).
pub const MAX_VRRP: u32 = 1024;

/// `VrrpCtl::state`: values of the daemon's engine state.
pub const VRRP_STATE_INIT: u8 = 0;
pub const VRRP_STATE_BACKUP: u8 = 1;
pub const VRRP_STATE_MASTER: u8 = 2;
pub const VRRP_STATE_FAULT: u8 = 3;

/// `VrrpKey::family`: an IPv4 and an IPv6 instance may share a VRID.
pub const VRRP_FAMILY_IPV4: u16 = 4;
pub const VRRP_FAMILY_IPV6: u16 = 6;

/// An instance as the datapath knows it: the interface, the VRID and the
/// family.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct VrrpKey {
    pub ifindex: u32,
    pub vrid: u16,
    /// `VRRP_FAMILY_*`.
    pub family: u16,
}

/// An IPv4 address as the 16-byte fields hold it: its four bytes, then
/// zeros.
#[inline(always)]
pub const fn ipv4_in16(a: [u8; 4]) -> [u8; 16] {
    [a[0], a[1], a[2], a[3], 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0]
}

/// What the daemon tells the datapath about an instance.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct VrrpCtl {
    /// 2 or 3.
    pub version: u8,
    /// `VRRP_STATE_*`.
    pub state: u8,
    /// Absorb steady adverts (the fast path), or pass every valid one.
    pub fastpath: u8,
    /// v2: 0 none, 1 PASS.
    pub auth_type: u8,
    /// Our advertisement interval (cs): v2 requires the same.
    pub interval_cs: u16,
    /// How many VIPs we have: an advert with another count goes to the
    /// daemon, which counts the address list error.
    pub vip_count: u16,
    pub auth: [u8; 8],
    /// The master the backup follows, as the engine last saw it (IPv4:
    /// [`ipv4_in16`]).
    pub master_ip: [u8; 16],
    pub master_priority: u8,
    /// 1: the instance takes unicast adverts at any TTL (a peer may be
    /// routers away; keepalived checks none unless the peer has bounds,
    /// and then `fastpath` is 0 and the daemon checks them); 0: TTL 255
    /// is required here.
    pub unicast: u8,
    pub master_interval_cs: u16,
    /// The instance's index in GREHA_VRRP_SEEN (below [`MAX_VRRP`]).
    pub slot: u32,
    /// Our effective priority (tracking included).
    pub priority: u8,
    /// Preemption configured: a master below our priority is then not
    /// followed, and its adverts go to the daemon.
    pub preempt: u8,
    pub _pad2: [u8; 2],
}

/// The last valid advert of an instance, as the program saw it. The program
/// writes `last_ns` after the other fields; a reader of the mmap'd array
/// reads `last_ns` before and after them and retries if it moved.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[cfg_attr(feature = "user", derive(serde::Serialize))]
pub struct VrrpSeen {
    /// bpf_ktime_get_ns (CLOCK_MONOTONIC).
    pub last_ns: u64,
    /// IPv4: [`ipv4_in16`].
    pub src: [u8; 16],
    pub priority: u8,
    pub _pad: [u8; 1],
    pub interval_cs: u16,
    pub _pad2: [u8; 4],
}

/// What the steady rule reads of an advert that passed the receive checks.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct AdvertSummary {
    /// The source, network order (IPv4: [`ipv4_in16`]).
    pub src: [u8; 16],
    pub priority: u8,
    pub _pad: [u8; 1],
    /// Centiseconds (v2: seconds times 100).
    pub interval_cs: u16,
    /// The advert's address count.
    pub count: u16,
}

/// The one definition of a steady advert: a backup hears the master it
/// follows with nothing changed (same source, priority, interval and
/// address count, not resigning), and does not preempt it. The eBPF
/// program absorbs exactly these (and records only these in
/// GREHA_VRRP_SEEN); the daemon hands the engine a recorded one only if it
/// is steady for the instance as it is now. Anything else can change what
/// the engine decides, so it reaches the daemon.
#[inline(always)]
pub fn vrrp_steady(ctl: &VrrpCtl, a: &AdvertSummary) -> bool {
    ctl.fastpath != 0
        && ctl.state == VRRP_STATE_BACKUP
        && a.priority != 0
        && a.src == ctl.master_ip
        && a.priority == ctl.master_priority
        && a.interval_cs == ctl.master_interval_cs
        && a.count == ctl.vip_count
        && (ctl.preempt == 0 || a.priority >= ctl.priority)
}

/// One row of the table that holds the eBPF program and userspace to the
/// same steady rule: the instance, the advert, and whether it is steady.
pub struct SteadyCase {
    pub what: &'static str,
    pub ctl: VrrpCtl,
    pub advert: AdvertSummary,
    pub steady: bool,
}

/// A v3 backup of priority 100 that preempts, following 198.51.100.2 at
/// priority 150, 1 s, one VIP.
pub const STEADY_BASE_CTL: VrrpCtl = VrrpCtl {
    version: 3,
    state: VRRP_STATE_BACKUP,
    fastpath: 1,
    auth_type: 0,
    interval_cs: 100,
    vip_count: 1,
    auth: [0; 8],
    master_ip: ipv4_in16([198, 51, 100, 2]),
    master_priority: 150,
    unicast: 0,
    master_interval_cs: 100,
    slot: 0,
    priority: 100,
    preempt: 1,
    _pad2: [0; 2],
};

/// The followed master's unchanged advert.
pub const STEADY_BASE_ADVERT: AdvertSummary = AdvertSummary {
    src: ipv4_in16([198, 51, 100, 2]),
    priority: 150,
    _pad: [0],
    interval_cs: 100,
    count: 1,
};

pub const STEADY_CASES: &[SteadyCase] = &[
    SteadyCase {
        what: "the followed master, unchanged",
        ctl: STEADY_BASE_CTL,
        advert: STEADY_BASE_ADVERT,
        steady: true,
    },
    SteadyCase {
        what: "a third router below us (a stray advert)",
        ctl: STEADY_BASE_CTL,
        advert: AdvertSummary {
            src: ipv4_in16([198, 51, 100, 3]),
            priority: 50,
            ..STEADY_BASE_ADVERT
        },
        steady: false,
    },
    SteadyCase {
        what: "a third router at the master's priority",
        ctl: STEADY_BASE_CTL,
        advert: AdvertSummary {
            src: ipv4_in16([198, 51, 100, 3]),
            ..STEADY_BASE_ADVERT
        },
        steady: false,
    },
    SteadyCase {
        what: "the master lowers its priority",
        ctl: STEADY_BASE_CTL,
        advert: AdvertSummary {
            priority: 120,
            ..STEADY_BASE_ADVERT
        },
        steady: false,
    },
    SteadyCase {
        what: "the master raises its priority",
        ctl: STEADY_BASE_CTL,
        advert: AdvertSummary {
            priority: 160,
            ..STEADY_BASE_ADVERT
        },
        steady: false,
    },
    SteadyCase {
        what: "the master resigns (priority 0)",
        ctl: STEADY_BASE_CTL,
        advert: AdvertSummary {
            priority: 0,
            ..STEADY_BASE_ADVERT
        },
        steady: false,
    },
    SteadyCase {
        what: "the master changes its interval",
        ctl: STEADY_BASE_CTL,
        advert: AdvertSummary {
            interval_cs: 50,
            ..STEADY_BASE_ADVERT
        },
        steady: false,
    },
    SteadyCase {
        what: "another address count",
        ctl: STEADY_BASE_CTL,
        advert: AdvertSummary {
            count: 2,
            ..STEADY_BASE_ADVERT
        },
        steady: false,
    },
    SteadyCase {
        what: "a master below us while we preempt",
        ctl: VrrpCtl {
            priority: 200,
            ..STEADY_BASE_CTL
        },
        advert: STEADY_BASE_ADVERT,
        steady: false,
    },
    SteadyCase {
        what: "a master below us, nopreempt",
        ctl: VrrpCtl {
            priority: 200,
            preempt: 0,
            ..STEADY_BASE_CTL
        },
        advert: STEADY_BASE_ADVERT,
        steady: true,
    },
    SteadyCase {
        what: "a master at our priority while we preempt",
        ctl: VrrpCtl {
            priority: 150,
            ..STEADY_BASE_CTL
        },
        advert: STEADY_BASE_ADVERT,
        steady: true,
    },
    SteadyCase {
        what: "we are master",
        ctl: VrrpCtl {
            state: VRRP_STATE_MASTER,
            ..STEADY_BASE_CTL
        },
        advert: STEADY_BASE_ADVERT,
        steady: false,
    },
    SteadyCase {
        what: "we are initializing",
        ctl: VrrpCtl {
            state: VRRP_STATE_INIT,
            ..STEADY_BASE_CTL
        },
        advert: STEADY_BASE_ADVERT,
        steady: false,
    },
    SteadyCase {
        what: "we are in fault",
        ctl: VrrpCtl {
            state: VRRP_STATE_FAULT,
            ..STEADY_BASE_CTL
        },
        advert: STEADY_BASE_ADVERT,
        steady: false,
    },
    SteadyCase {
        what: "a backup following no master (after priority 0)",
        ctl: VrrpCtl {
            master_ip: [0; 16],
            master_priority: 0,
            master_interval_cs: 0,
            ..STEADY_BASE_CTL
        },
        advert: STEADY_BASE_ADVERT,
        steady: false,
    },
    SteadyCase {
        what: "fast path off for the instance",
        ctl: VrrpCtl {
            fastpath: 0,
            ..STEADY_BASE_CTL
        },
        advert: STEADY_BASE_ADVERT,
        steady: false,
    },
];

/// Per-instance counters of the XDP program, named as the engine's.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[cfg_attr(feature = "user", derive(serde::Serialize, serde::Deserialize))]
pub struct VrrpStats {
    pub rcvd_advertisements: u64,
    pub rcvd_pri_zero_packets: u64,
    pub ip_ttl_errors: u64,
    pub rcvd_invalid_type_packets: u64,
    pub packet_length_errors: u64,
    pub adv_interval_errors: u64,
    pub auth_failures: u64,
    pub checksum_errors: u64,
    pub version_errors: u64,
    /// Steady adverts recorded in GREHA_VRRP_SEEN and dropped: the daemon
    /// was not woken.
    pub absorbed: u64,
    /// Valid adverts passed to the daemon.
    pub to_daemon: u64,
}

impl VrrpStats {
    pub fn add(&mut self, o: &Self) {
        self.rcvd_advertisements += o.rcvd_advertisements;
        self.rcvd_pri_zero_packets += o.rcvd_pri_zero_packets;
        self.ip_ttl_errors += o.ip_ttl_errors;
        self.rcvd_invalid_type_packets += o.rcvd_invalid_type_packets;
        self.packet_length_errors += o.packet_length_errors;
        self.adv_interval_errors += o.adv_interval_errors;
        self.auth_failures += o.auth_failures;
        self.checksum_errors += o.checksum_errors;
        self.version_errors += o.version_errors;
        self.absorbed += o.absorbed;
        self.to_daemon += o.to_daemon;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The eBPF side and userspace must agree on sizes with no hidden
    /// padding (BTF and the kernel see exactly these bytes).
    #[test]
    fn layouts_have_no_padding() {
        assert_eq!(size_of::<TunnelConfig>(), 16 * 2 + 4 * 9 + 4 + 12 + 16 + 16);
        assert_eq!(size_of::<Endpoints>(), 32);
        assert_eq!(size_of::<KeyedEndpoints>(), 40);
        assert_eq!(size_of::<TunnelCounters>(), 17 * 8);
        assert_eq!(size_of::<TunnelSeq>(), 12);
        assert_eq!(size_of::<TunnelProbe>(), 4 + 4 + 3 * 8);
        assert_eq!(size_of::<PacketCounters>(), 16);
        assert_eq!(size_of::<VrrpKey>(), 8);
        assert_eq!(size_of::<VrrpCtl>(), 4 + 4 + 8 + 16 + 4 + 4 + 4);
        assert_eq!(size_of::<VrrpSeen>(), 8 + 16 + 4 + 4);
        assert_eq!(size_of::<VrrpStats>(), 11 * 8);
        assert_eq!(size_of::<AdvertSummary>(), 16 + 6);
    }

    /// The kernel's rule (ip_tunnel_xmit): `pmtudisc` always sets DF,
    /// `nopmtudisc` copies an inner IPv4 packet's, `ignore-df` never.
    #[test]
    fn outer_df_follows_the_kernels_rule() {
        let (no, ignore) = (
            TUNNEL_F_NOPMTUDISC,
            TUNNEL_F_NOPMTUDISC | TUNNEL_F_IGNORE_DF,
        );
        for (flags, inner_df, df) in [
            (0, true, true),
            (0, false, true),
            (no, true, true),
            (no, false, false),
            (ignore, true, false),
            (ignore, false, false),
        ] {
            assert_eq!(
                outer_df(flags, u32::from(inner_df)),
                u32::from(df),
                "{flags:#x} {inner_df}"
            );
        }
    }

    /// The table itself; the eBPF programs are held to it under
    /// BPF_PROG_TEST_RUN (tests/tests/vrrp_fastpath.rs).
    #[test]
    fn steady_rule_follows_its_table() {
        for c in STEADY_CASES {
            assert_eq!(vrrp_steady(&c.ctl, &c.advert), c.steady, "{}", c.what);
        }
    }
}
