//! GRE tunnels without the kernel's GRE module.
//!
//! A tunnel interface is one end of a veth pair (the other end only gives
//! it a peer). Both halves run in tc, where the skb keeps its checksum
//! offload state and GSO: an XDP redirect would drop both, and TCP over a
//! veth underlay then stalls on partial checksums.
//!
//! - `greha_gre_encap` (tc egress on the tunnel interface) wraps each frame
//!   in IPv4 + GRE and redirects it out of the underlay, with the outer
//!   Ethernet addresses from the kernel's FIB and neighbour table;
//! - `greha_gre_decap` (tc ingress on the underlay) validates GRE from a
//!   tunnel's remote, strips the outer headers and redirects the inner
//!   frame into the tunnel interface's ingress, as if received there.
use core::mem::size_of;

use crate::frame::{CHUNK, Frame as _, Scratch, fold, ones_sum};
use aya_ebpf::{
    bindings,
    bindings::{
        BPF_F_ADJ_ROOM_ENCAP_L2_ETH, BPF_F_ADJ_ROOM_ENCAP_L3_IPV4, BPF_F_ADJ_ROOM_ENCAP_L3_IPV6,
        BPF_F_ADJ_ROOM_ENCAP_L4_GRE, BPF_F_ADJ_ROOM_FIXED_GSO, BPF_F_INGRESS,
        BPF_FIB_LKUP_RET_NO_NEIGH, BPF_FIB_LKUP_RET_SUCCESS, TC_ACT_OK, TC_ACT_SHOT,
        bpf_adj_room_mode, bpf_fib_lookup, bpf_redir_neigh, bpf_redir_neigh__bindgen_ty_1,
    },
    bpf_f_adj_room_encap_l2,
    btf_maps::{Array, HashMap, PerCpuArray},
    helpers::{
        bpf_fib_lookup as fib_lookup, bpf_get_prandom_u32, bpf_redirect, bpf_redirect_neigh,
        bpf_skb_change_head, bpf_skb_change_proto, bpf_skb_change_tail, bpf_skb_vlan_pop,
        bpf_spin_lock, bpf_spin_unlock,
    },
    macros::{btf_map, classifier, map},
    maps::ProgramArray,
    programs::TcContext,
};
use greha_common::{
    Endpoints, FLOWLABEL_INHERIT, GRE_PROTO_IPV4, GRE_PROTO_IPV6, GRE_PROTO_TEB, KeyedEndpoints,
    MAX_TUNNELS, TAIL_ENCAP_VLAN, TAIL_TOO_BIG, TUNNEL_F_ACTIVE, TUNNEL_F_ENCAP_LIMIT,
    TUNNEL_F_GRETAP, TUNNEL_F_ICSUM, TUNNEL_F_IPV6, TUNNEL_F_ISEQ, TUNNEL_F_OCSUM, TUNNEL_F_OKEY,
    TUNNEL_F_OSEQ, TunnelConfig, TunnelCounters, TunnelProbe, TunnelSeq, ipv4_in16, outer_df,
};

#[btf_map]
static GREHA_TUNNELS: Array<TunnelConfig, { MAX_TUNNELS as usize }> = Array::new();
#[btf_map]
pub(crate) static GREHA_TUNNEL_BY_DEV: HashMap<u32, u32, { MAX_TUNNELS as usize }> = HashMap::new();
#[btf_map]
static GREHA_TUNNEL_BY_ENDP: HashMap<Endpoints, u32, { MAX_TUNNELS as usize }> = HashMap::new();
#[btf_map]
static GREHA_TUNNEL_BY_KEY: HashMap<KeyedEndpoints, u32, { MAX_TUNNELS as usize }> = HashMap::new();
#[btf_map]
static GREHA_TUNNEL_BY_LOCAL: HashMap<[u8; 16], u32, { MAX_TUNNELS as usize }> = HashMap::new();
#[btf_map]
static GREHA_TUNNEL_COUNTERS: PerCpuArray<TunnelCounters, { MAX_TUNNELS as usize }> =
    PerCpuArray::new();
#[btf_map]
static GREHA_TUNNEL_SEQ: Array<TunnelSeq, { MAX_TUNNELS as usize }> = Array::new();
/// The tail calls: [`TAIL_TOO_BIG`] is `greha_gre_too_big`,
/// [`TAIL_ENCAP_VLAN`] `greha_gre_encap_vlan`, `TAIL_FRAGMENT_NEXT`
/// `greha_gre_fragment_next`.
#[map]
pub(crate) static GREHA_GRE_TAILS: ProgramArray = ProgramArray::with_max_entries(3, 0);
/// Written by userspace only: here so it is pinned with the tunnel maps
/// and its BTF names the fields.
#[btf_map]
static GREHA_TUNNEL_PROBE: Array<TunnelProbe, { MAX_TUNNELS as usize }> = Array::new();

pub(crate) const ETH_LEN: usize = 14;
pub(crate) const IPV4_LEN: usize = 20;
pub(crate) const IPV6_LEN: usize = 40;
/// An 802.1Q tag.
const VLAN_LEN: usize = 4;
/// The IPv6 destination options header.
const IPPROTO_DSTOPTS: u8 = 60;
const AF_INET6: u8 = 10;
pub(crate) const ETH_P_IP: u16 = 0x0800;
pub(crate) const ETH_P_IPV6: u16 = 0x86dd;
const ETH_P_8021Q: u16 = 0x8100;
const IPPROTO_TCP: u8 = 6;
const IPPROTO_UDP: u8 = 17;
const IPPROTO_GRE: u8 = 47;
const AF_INET: u8 = 2;
/// `skb->pkt_type` of a frame for another host's MAC.
const PACKET_OTHERHOST: u32 = 3;

// GRE flags and version word (RFC 2784, RFC 2890).
const GRE_C: u16 = 0x8000;
const GRE_K: u16 = 0x2000;
const GRE_S: u16 = 0x1000;
/// Routing present, strict source route, recursion control, other flags and
/// the version: all must be zero for GRE version 0 as Linux sends it.
const GRE_MUST_BE_ZERO: u16 = 0x4000 | 0x0800 | 0x0700 | 0x00f8 | 0x0007;

/// Largest GRE packet whose checksum is verified (jumbo MTU).
const MAX_CSUM_BYTES: usize = 9216;

#[inline(always)]
pub(crate) fn counters(id: u32) -> Option<&'static mut TunnelCounters> {
    GREHA_TUNNEL_COUNTERS
        .get_ptr_mut(id)
        .map(|p| unsafe { &mut *p })
}

/// The active tunnel `id`. Callers must check `flags & TUNNEL_F_ACTIVE`
/// themselves with an early return: folded into an `Option` combinator,
/// LLVM masks the map pointer arithmetically, which the verifier refuses.
#[inline(always)]
pub(crate) fn tunnel(id: u32) -> Option<&'static TunnelConfig> {
    GREHA_TUNNELS.get(id)
}

// ---------------------------------------------------------------- decap --

#[classifier]
pub fn greha_gre_decap(ctx: TcContext) -> i32 {
    decap(&ctx)
}

#[inline(always)]
fn decap(ctx: &TcContext) -> i32 {
    // The outer headers at fixed offsets by direct packet access (no
    // helper call); the rest, at offsets the verifier cannot bound as
    // well, through bpf_skb_load_bytes.
    let Some(eth) = ctx.bytes::<ETH_LEN>(0) else {
        return TC_ACT_OK;
    };
    let outer = match u16::from_be_bytes([eth[12], eth[13]]) {
        ETH_P_IP => outer4(ctx),
        ETH_P_IPV6 => outer6(ctx),
        _ => None,
    };
    let Some(outer) = outer else {
        return TC_ACT_OK;
    };
    // As ip_rcv: a frame the NIC took for another host's MAC (promiscuous
    // mode, a bridge port) is not ours to decapsulate; the stack drops it.
    if unsafe { (*ctx.skb.skb).pkt_type } == PACKET_OTHERHOST {
        return TC_ACT_OK;
    }
    let endpoints = outer.endpoints;
    // The tunnel, in one lookup for a valid packet: by the endpoints and
    // the key the GRE header carries (or none), as the kernel's
    // ip_tunnel_lookup tells the tunnels between two hosts apart. The
    // header is read before it is checked; a malformed one fails the
    // checks below, counted against the tunnel found (or one of the pair).
    let gre_off = ETH_LEN + outer.hdr_len;
    // Flags, protocol and the next word (the key when there is no
    // checksum) in one read.
    let (key, keyed) = match ctx.load::<[u8; 8]>(gre_off) {
        Ok(h) if u16::from_be_bytes([h[0], h[1]]) & GRE_K != 0 => {
            if u16::from_be_bytes([h[0], h[1]]) & GRE_C == 0 {
                (u32::from_be_bytes([h[4], h[5], h[6], h[7]]), 1)
            } else {
                match ctx.load::<[u8; 4]>(gre_off + 8) {
                    Ok(k) => (u32::from_be_bytes(k), 1),
                    Err(_) => (0, 1),
                }
            }
        }
        _ => (0, 0),
    };
    let by_key = KeyedEndpoints {
        local: endpoints.local,
        remote: endpoints.remote,
        key,
        keyed,
    };
    // A pair's tunnel without this key: checked like any, then dropped as
    // of a wrong key.
    let (id, stray_key) = match unsafe { GREHA_TUNNEL_BY_KEY.get(by_key) } {
        Some(id) => (*id, false),
        None => match unsafe { GREHA_TUNNEL_BY_ENDP.get(endpoints) } {
            Some(id) => (*id, true),
            None => {
                // GRE aimed at one of our tunnel endpoints from a stranger.
                if let Some(id) = unsafe { GREHA_TUNNEL_BY_LOCAL.get(endpoints.local) }
                    && let Some(c) = counters(*id)
                {
                    c.rx_drop_wrong_source += 1;
                    return TC_ACT_SHOT;
                }
                return TC_ACT_OK;
            }
        },
    };
    let (Some(cfg), Some(c)) = (tunnel(id), counters(id)) else {
        return TC_ACT_OK;
    };
    if cfg.flags & TUNNEL_F_ACTIVE == 0 {
        return TC_ACT_OK;
    }
    // The tunnel's family, not just any with these addresses.
    if (cfg.flags & TUNNEL_F_IPV6 != 0) != outer.ipv6 {
        return TC_ACT_OK;
    }
    let ihl = outer.hdr_len;
    let tot_len = outer.tot_len;
    let frame_len = unsafe { (*ctx.skb.skb).len } as usize;
    let gso = unsafe { (*ctx.skb.skb).gso_segs } > 1;
    // A GSO packet's tot_len is one segment's; the skb holds them all.
    if tot_len < ihl + 4 || !gso && ETH_LEN + tot_len > frame_len {
        c.rx_drop_truncated += 1;
        return TC_ACT_SHOT;
    }
    if !outer.ipv6
        && let Some(ip) = ctx.bytes::<IPV4_LEN>(ETH_LEN)
    {
        // A fragment cannot be decapsulated on its own: the kernel
        // reassembles the packet, and greha's daemon brings it back here
        // whole (see greha's `reasm`).
        let frag = u16::from_be_bytes([ip[6], ip[7]]);
        if frag & 0x3fff != 0 {
            c.rx_fragments += 1;
            return TC_ACT_OK;
        }
        // As ip_rcv: the outer header's checksum (options included).
        if !header_checksum_ok(ctx, &ip, ihl) {
            c.rx_drop_bad_checksum += 1;
            return TC_ACT_SHOT;
        }
    }
    // As ip_rcv, bytes past the outer packet (Ethernet padding) are not
    // part of it, nor of the inner frame.
    if !gso
        && frame_len > ETH_LEN + tot_len
        && unsafe { bpf_skb_change_tail(ctx.skb.skb, (ETH_LEN + tot_len) as u32, 0) } != 0
    {
        c.rx_drop_truncated += 1;
        return TC_ACT_SHOT;
    }
    let Ok(gre) = ctx.load::<[u8; 4]>(gre_off) else {
        c.rx_drop_truncated += 1;
        return TC_ACT_SHOT;
    };
    let flags = u16::from_be_bytes([gre[0], gre[1]]);
    let proto = u16::from_be_bytes([gre[2], gre[3]]);
    if flags & GRE_MUST_BE_ZERO != 0 {
        c.rx_drop_bad_flags += 1;
        return TC_ACT_SHOT;
    }
    let has_csum = flags & GRE_C != 0;
    let has_key = flags & GRE_K != 0;
    let gre_len = 4
        + if has_csum { 4 } else { 0 }
        + if has_key { 4 } else { 0 }
        + if flags & GRE_S != 0 { 4 } else { 0 };
    let outer_len = gre_off + gre_len;
    if ihl + gre_len > tot_len {
        c.rx_drop_truncated += 1;
        return TC_ACT_SHOT;
    }
    if stray_key {
        c.rx_drop_wrong_key += 1;
        return TC_ACT_SHOT;
    }
    let gretap = cfg.flags & TUNNEL_F_GRETAP != 0;
    // gretap carries Ethernet; gre IPv4 or IPv6, as the kernel's.
    let (proto_ok, min_inner, inner_type) = match (gretap, proto) {
        (true, GRE_PROTO_TEB) => (true, ETH_LEN, 0),
        (false, GRE_PROTO_IPV4) => (true, IPV4_LEN, ETH_P_IP),
        (false, GRE_PROTO_IPV6) => (true, IPV6_LEN, ETH_P_IPV6),
        _ => (false, 0, 0),
    };
    if !proto_ok {
        c.rx_drop_bad_protocol += 1;
        return TC_ACT_SHOT;
    }
    let inner_len = tot_len - ihl - gre_len;
    if inner_len < min_inner {
        c.rx_drop_truncated += 1;
        return TC_ACT_SHOT;
    }
    // What the kernel's gre_rcv accepts as its checksum state allows, from
    // what the frame shows: a GSO packet (GRO verified each packet before
    // merging them, or a sender on this host left the checksum to its
    // segmentation, which a veth never does), and a checksum of 0, which
    // is how a sender on this host leaves the GRE checksum itself to
    // offload (a kernel gretap with csum over a veth or tap sends even its
    // ARP so). Any other is verified: over the bytes as they are, or as
    // local checksum offload made it.
    let csum_left_to_offload = gso || ctx.load::<[u8; 2]>(gre_off + 4).is_ok_and(|f| f == [0, 0]);
    if has_csum && !csum_left_to_offload {
        let (l3_off, inner_type) = inner_l3(ctx, outer_len, gretap, inner_type);
        if !checksum_ok(ctx, gre_off, ETH_LEN + tot_len)
            && lco_sum(ctx, gre_off, l3_off, inner_type).is_none_or(|s| fold(s) != 0xffff)
        {
            c.rx_drop_bad_checksum += 1;
            return TC_ACT_SHOT;
        }
    }
    if !has_csum && cfg.flags & TUNNEL_F_ICSUM != 0 {
        c.rx_drop_bad_checksum += 1;
        return TC_ACT_SHOT;
    }
    // Last, so only a packet that is otherwise accepted moves the window:
    // as ip_tunnel_rcv, one older than the last is dropped (0: no packet
    // seen yet).
    if cfg.flags & TUNNEL_F_ISEQ != 0 {
        let has_seq = flags & GRE_S != 0;
        let seq_off = gre_off + gre_len - 4;
        let (Some(state), true, Ok(seq)) = (
            GREHA_TUNNEL_SEQ.get_ptr_mut(id),
            has_seq,
            ctx.load::<[u8; 4]>(seq_off),
        ) else {
            c.rx_drop_out_of_order += 1;
            return TC_ACT_SHOT;
        };
        let seq = u32::from_be_bytes(seq);
        let next = unsafe { (*state).rx_next };
        if next != 0 && (seq.wrapping_sub(next) as i32) < 0 {
            c.rx_drop_out_of_order += 1;
            return TC_ACT_SHOT;
        }
        unsafe { (*state).rx_next = seq.wrapping_add(1) };
    }

    // Remove everything between the outer Ethernet header and the inner
    // frame's L3 header, then put the right Ethernet header in front.
    let inner_eth = if gretap {
        match ctx.load::<[u8; ETH_LEN]>(outer_len) {
            Ok(e) => e,
            Err(_) => {
                c.rx_drop_truncated += 1;
                return TC_ACT_SHOT;
            }
        }
    } else {
        let mut e = [0u8; ETH_LEN];
        e[0..6].copy_from_slice(&cfg.dev_mac);
        e[6..12].copy_from_slice(&cfg.peer_mac);
        e[12..14].copy_from_slice(&inner_type.to_be_bytes());
        e
    };
    let strip = outer_len - ETH_LEN + if gretap { ETH_LEN } else { 0 };
    // adjust_room leaves an IPv6 skb at least an IPv6 header's worth of
    // network bytes, and an IPv4 one 20: a shorter inner packet (an ARP
    // inside ip6gretap) makes the skb IPv4 first, which takes 20 bytes
    // of the outer header off, and the rest goes as usual. (An inner
    // frame with under 20 bytes after its Ethernet header is dropped.)
    let l3_left = if gretap {
        inner_len - ETH_LEN
    } else {
        inner_len
    };
    let small = outer.ipv6 && l3_left < IPV6_LEN;
    let rest = if small {
        strip - (IPV6_LEN - IPV4_LEN)
    } else {
        strip
    };
    // FIXED_GSO: a GSO or GRO packet's segment size is its inner
    // payload's already; without it the kernel grew it by the headers
    // taken off, and such a packet routed on was judged too big for the
    // next link's MTU.
    let shrunk = (!small || unsafe { bpf_skb_change_proto(ctx.skb.skb, ETH_P_IP.to_be(), 0) } == 0)
        && ctx
            .adjust_room(
                -(rest as i32),
                bpf_adj_room_mode::BPF_ADJ_ROOM_MAC,
                BPF_F_ADJ_ROOM_FIXED_GSO as u64,
            )
            .is_ok()
        && ctx.store(0, &inner_eth, 0).is_ok();
    if !shrunk {
        c.rx_drop_truncated += 1;
        return TC_ACT_SHOT;
    }
    let segs = unsafe { (*ctx.skb.skb).gso_segs };
    c.rx_packets += segs.max(1) as u64;
    c.rx_bytes += unsafe { (*ctx.skb.skb).len } as u64;
    unsafe { bpf_redirect(cfg.dev_ifindex, BPF_F_INGRESS as u64) as i32 }
}

/// The outer IP header of a GRE packet, either family.
struct OuterIp {
    /// Outer destination (ours) and source, 16 bytes each.
    endpoints: Endpoints,
    /// The IP header's length, IPv4 options or the IPv6 destination
    /// options header included: where GRE starts after the Ethernet
    /// header.
    hdr_len: usize,
    /// The outer packet's length by its header (IPv6: 40 + payload).
    tot_len: usize,
    ipv6: bool,
}

/// An IPv4 packet of protocol GRE.
#[inline(always)]
fn outer4(ctx: &TcContext) -> Option<OuterIp> {
    let ip = ctx.bytes::<IPV4_LEN>(ETH_LEN)?;
    if ip[9] != IPPROTO_GRE || ip[0] >> 4 != 4 {
        return None;
    }
    let ihl = ((ip[0] & 0x0f) as usize) * 4;
    if ihl < IPV4_LEN {
        return None;
    }
    Some(OuterIp {
        endpoints: Endpoints {
            local: ipv4_in16([ip[16], ip[17], ip[18], ip[19]]),
            remote: ipv4_in16([ip[12], ip[13], ip[14], ip[15]]),
        },
        hdr_len: ihl,
        tot_len: u16::from_be_bytes([ip[2], ip[3]]) as usize,
        ipv6: false,
    })
}

/// An IPv6 packet whose next header is GRE, directly or after one
/// destination options header: the kernel's ip6gretap/ip6gre put the
/// tunnel encapsulation limit there by default (RFC 2473).
#[inline(always)]
fn outer6(ctx: &TcContext) -> Option<OuterIp> {
    let ip = ctx.bytes::<IPV6_LEN>(ETH_LEN)?;
    if ip[0] >> 4 != 6 {
        return None;
    }
    let hdr_len = match ip[6] {
        IPPROTO_GRE => IPV6_LEN,
        IPPROTO_DSTOPTS => {
            let opt = ctx.load::<[u8; 2]>(ETH_LEN + IPV6_LEN).ok()?;
            if opt[0] != IPPROTO_GRE {
                return None;
            }
            IPV6_LEN + (opt[1] as usize + 1) * 8
        }
        _ => return None,
    };
    let mut local = [0u8; 16];
    let mut remote = [0u8; 16];
    remote.copy_from_slice(&ip[8..24]);
    local.copy_from_slice(&ip[24..40]);
    Some(OuterIp {
        endpoints: Endpoints { local, remote },
        hdr_len,
        tot_len: IPV6_LEN + u16::from_be_bytes([ip[4], ip[5]]) as usize,
        ipv6: true,
    })
}

/// The IPv4 header checksum of the outer header (`ihl` bytes, the first
/// 20 in `ip`): the ones' complement sum must be all ones.
#[inline(always)]
fn header_checksum_ok(ctx: &TcContext, ip: &[u8; IPV4_LEN], ihl: usize) -> bool {
    let mut sum: u64 = 0;
    let mut i = 0;
    while i < IPV4_LEN {
        sum += u16::from_be_bytes([ip[i], ip[i + 1]]) as u64;
        i += 2;
    }
    if ihl > IPV4_LEN {
        // Options: at most 40 bytes, read as 4-byte words.
        let mut off = IPV4_LEN;
        while off < 60 {
            if off >= ihl {
                break;
            }
            match ctx.load::<[u8; 4]>(ETH_LEN + off) {
                Ok(w) => {
                    sum += u16::from_be_bytes([w[0], w[1]]) as u64;
                    sum += u16::from_be_bytes([w[2], w[3]]) as u64;
                }
                Err(_) => return false,
            }
            off += 4;
        }
    }
    fold(sum) == 0xffff
}

/// Where the inner frame's L3 header starts and its ethertype, for an
/// inner frame at `off` (behind one VLAN tag at most); a `gre` tunnel's
/// inner packet has no Ethernet header, and `l3` is its type.
#[inline(always)]
fn inner_l3(ctx: &TcContext, off: usize, gretap: bool, l3: u16) -> (usize, u16) {
    if !gretap {
        return (off, l3);
    }
    let ty = |at: usize| ctx.load::<[u8; 2]>(at).map_or(0, u16::from_be_bytes);
    match ty(off + 12) {
        ETH_P_8021Q => (off + ETH_LEN + 4, ty(off + 16)),
        t => (off + ETH_LEN, t),
    }
}

/// The GRE checksum's sum as local checksum offload (the kernel's
/// lco_csum) computes it: the bytes from the GRE header to the inner TCP
/// or UDP header, plus the complement of the inner pseudo-header sum,
/// which is what the TCP/UDP bytes sum to once their own checksum is
/// filled. So it is right both for a packet whose inner checksum is
/// already filled and for one whose checksum a same-host sender left to
/// offload (a veth or tap never fills it), where summing the bytes as they
/// are cannot be. None for any other inner packet (or UDP without a
/// checksum): only the plain sum applies.
#[inline(always)]
pub(crate) fn lco_sum(
    ctx: &TcContext,
    gre_off: usize,
    l3_off: usize,
    ethertype: u16,
) -> Option<u64> {
    let (l4_off, proto, field, pseudo) = l4_pseudo(ctx, l3_off, ethertype)?;
    if proto == IPPROTO_UDP && field == [0, 0] {
        return None;
    }
    let head = GREHA_CSUM_SCRATCH
        .get_ptr_mut(0)
        .and_then(|buf| ones_sum(ctx, buf, gre_off, l4_off, CHUNK))?;
    Some(head + !fold(pseudo) as u64)
}

/// Whether the TCP or UDP packet at `l3_off` has its checksum left to
/// offload (CHECKSUM_PARTIAL): the field then holds its pseudo-header's
/// sum, which a filled checksum matches once in 65536.
#[inline(always)]
pub(crate) fn left_partial(ctx: &TcContext, l3_off: usize, ethertype: u16) -> bool {
    l4_pseudo(ctx, l3_off, ethertype)
        .is_some_and(|(_, _, field, pseudo)| u16::from_ne_bytes(field) == fold(pseudo))
}

/// For a TCP or UDP packet (not a fragment) at `l3_off`: where its header
/// starts, its protocol, its checksum field, and its pseudo-header's sum
/// (unfolded, in the CPU's byte order of network-order words).
#[inline(always)]
fn l4_pseudo(ctx: &TcContext, l3_off: usize, ethertype: u16) -> Option<(usize, u8, [u8; 2], u64)> {
    let word = |a: u8, b: u8| u16::from_ne_bytes([a, b]) as u64;
    let (l4_off, proto, mut pseudo) = match ethertype {
        ETH_P_IP => {
            let h = ctx.load::<[u8; IPV4_LEN]>(l3_off).ok()?;
            let ihl = ((h[0] & 0x0f) as usize) * 4;
            let tot_len = u16::from_be_bytes([h[2], h[3]]) as usize;
            let frag = u16::from_be_bytes([h[6], h[7]]) & 0x3fff;
            if h[0] >> 4 != 4 || ihl < IPV4_LEN || tot_len < ihl || frag != 0 {
                return None;
            }
            let l4_len = ((tot_len - ihl) as u16).to_be_bytes();
            let addrs = word(h[12], h[13]) + word(h[14], h[15]);
            let addrs = addrs + word(h[16], h[17]) + word(h[18], h[19]);
            (l3_off + ihl, h[9], addrs + word(l4_len[0], l4_len[1]))
        }
        ETH_P_IPV6 => {
            let h = ctx.load::<[u8; 40]>(l3_off).ok()?;
            let mut addrs = 0;
            let mut i = 8;
            while i < 40 {
                addrs += word(h[i], h[i + 1]);
                i += 2;
            }
            (l3_off + 40, h[6], addrs + word(h[4], h[5]))
        }
        _ => return None,
    };
    let csum_off = match proto {
        IPPROTO_TCP => 16,
        IPPROTO_UDP => 6,
        _ => return None,
    };
    pseudo += word(0, proto);
    let field = ctx.load::<[u8; 2]>(l4_off + csum_off).ok()?;
    Some((l4_off, proto, field, pseudo))
}

/// Scratch space for checksumming: the BPF stack (512 bytes) cannot hold
/// a chunk and the program's other state.
#[btf_map]
pub(crate) static GREHA_CSUM_SCRATCH: PerCpuArray<Scratch, 1> = PerCpuArray::new();

/// The GRE checksum (RFC 2784): the ones' complement sum over the GRE
/// header and payload, `start..end` of the frame, must be all ones.
#[inline(always)]
fn checksum_ok(ctx: &TcContext, start: usize, end: usize) -> bool {
    GREHA_CSUM_SCRATCH
        .get_ptr_mut(0)
        .and_then(|buf| ones_sum(ctx, buf, start, end, MAX_CSUM_BYTES))
        .is_some_and(|sum| fold(sum) == 0xffff)
}

// ---------------------------------------------------------------- encap --

#[classifier]
pub fn greha_gre_encap(ctx: TcContext) -> i32 {
    encap::<false>(&ctx)
}

/// The encapsulation of a gretap frame whose VLAN tag is in the skb's
/// metadata, tail-called by `greha_gre_encap`: a program of its own, so
/// that neither has the other's branches for the verifier to walk (6.1's
/// gave up on one program with both).
#[classifier]
pub fn greha_gre_encap_vlan(ctx: TcContext) -> i32 {
    encap::<true>(&ctx)
}

#[inline(always)]
fn encap<const VLAN: bool>(ctx: &TcContext) -> i32 {
    let skb = ctx.skb.skb;
    let ifindex = unsafe { (*skb).ifindex };
    let Some(id) = (unsafe { GREHA_TUNNEL_BY_DEV.get(ifindex) }).copied() else {
        return TC_ACT_OK;
    };
    let (Some(cfg), Some(c)) = (tunnel(id), counters(id)) else {
        return TC_ACT_SHOT;
    };
    if cfg.flags & TUNNEL_F_ACTIVE == 0 {
        return TC_ACT_SHOT;
    }
    let len = unsafe { (*skb).len } as usize;
    let gso_segs = unsafe { (*skb).gso_segs };
    // Fixed offsets by direct packet access, as in the decap.
    let Some(eth) = ctx.bytes::<ETH_LEN>(0) else {
        c.tx_drop_error += 1;
        return TC_ACT_SHOT;
    };
    let ethertype = u16::from_be_bytes([eth[12], eth[13]]);
    let gretap = cfg.flags & TUNNEL_F_GRETAP != 0;
    let ipv6 = cfg.flags & TUNNEL_F_IPV6 != 0;
    let (ttl, tos) = outer_ttl_tos(ctx, cfg, ethertype);
    // gre and ip6gre carry IPv4 and IPv6, as the kernel's.
    if !gretap && ethertype != ETH_P_IP && ethertype != ETH_P_IPV6 {
        c.tx_drop_error += 1;
        return TC_ACT_SHOT;
    }
    let gre_len = cfg.gre_header_len() as usize;
    // 20, 40, or 48 with the encapsulation limit option.
    let ip_len = cfg.ip_header_len() as usize;
    // A checksum or sequence number is per packet, and GSO would copy one
    // header into every segment: such tunnels are made with gso_max_segs 1
    // (the kernel's turn GSO off), so only a packet forwarded in whole from
    // GRO gets here, and it cannot be cut up.
    if cfg.flags & (TUNNEL_F_OCSUM | TUNNEL_F_OSEQ) != 0 && gso_segs > 1 {
        c.tx_drop_error += 1;
        return TC_ACT_SHOT;
    }
    // A VLAN tag the stack left in the skb's metadata (a VLAN interface on
    // a gretap: the tunnel interface offloads tagging) goes into the inner
    // frame, as the kernel's gretap, which offloads none, carries it.
    if !VLAN && gretap && unsafe { (*skb).vlan_present } != 0 {
        unsafe { GREHA_GRE_TAILS.tail_call(ctx, TAIL_ENCAP_VLAN) };
        c.tx_drop_error += 1;
        return TC_ACT_SHOT;
    }
    let tag_len = if VLAN { VLAN_LEN } else { 0 };
    let inner_len = if gretap { len + tag_len } else { len - ETH_LEN };
    let outer_l3_len = ip_len + gre_len + inner_len;
    // What one packet on the path carries of the inner frame: all of it,
    // or of a GSO packet one segment.
    let l2_len = if gretap { ETH_LEN + tag_len } else { 0 };
    let seg_len = if gso_segs > 1 {
        l2_len + gso_seg_l3_len(ctx, ethertype)
    } else {
        inner_len
    };
    // DF and whether to fragment as numbers (0 or 1), not branches: the
    // verifier would walk the rest of the program once for each value,
    // and took twice as long to load it.
    let inner_df = u32::from(ethertype == ETH_P_IP)
        & u32::from(ctx.load::<u8>(ETH_LEN + 6).unwrap_or(0) >> 6)
        & 1;
    // An IPv6 underlay never fragments on the way: DF as good as set.
    let df = u32::from(ipv6) | outer_df(cfg.flags, inner_df);
    let too_big = u32::from(ip_len + gre_len + seg_len > cfg.underlay_mtu as usize);
    let fragment = too_big & !df & 1;
    if too_big & df != 0 {
        // Its sender is answered in a program of its own: the answer's
        // frame and this one's would not fit in one stack together.
        unsafe { GREHA_GRE_TAILS.tail_call(ctx, TAIL_TOO_BIG) };
        c.tx_drop_too_big += 1;
        return TC_ACT_SHOT;
    }

    // Looked up as if the outer packet arrived on the peer: the kernel
    // checks forwarding on the lookup's interface even for output lookups,
    // and the peer (greha's own, where nothing else enters the stack) is
    // the one interface greha enables forwarding on.
    let mut fib: bpf_fib_lookup = unsafe { core::mem::zeroed() };
    fib.ifindex = cfg.peer_ifindex;
    // A length the route's MTU always takes: without one the helper
    // judges the skb against the underlay's MTU, and a `nopmtudisc`
    // tunnel's frame larger than that, to be fragmented, failed it. The
    // path is judged above.
    fib.__bindgen_anon_1.tot_len = IPV4_LEN as u16;
    if ipv6 {
        fib.family = AF_INET6;
        fib.__bindgen_anon_3.ipv6_src = words(&cfg.local);
        fib.__bindgen_anon_4.ipv6_dst = words(&cfg.remote);
    } else {
        fib.family = AF_INET;
        let v4 = |a: &[u8; 16]| u32::from_ne_bytes([a[0], a[1], a[2], a[3]]);
        fib.__bindgen_anon_3.ipv4_src = v4(&cfg.local);
        fib.__bindgen_anon_4.ipv4_dst = v4(&cfg.remote);
    }
    let rc = unsafe { fib_lookup(skb.cast(), &mut fib, size_of::<bpf_fib_lookup>() as i32, 0) };
    // A route but no resolved neighbour: the entry greha made is gone (a
    // link down flushes it). A frame that leaves as an IPv4 skb then goes
    // out through bpf_redirect_neigh, which has the kernel resolve the next
    // hop (the frame waits for ARP, as the stack's own would) and so makes
    // the entry again; other frames (ARP: the helper needs skb->protocol to
    // be IP) wait for the next such one (VRRP adverts are IPv4). Without
    // this the tunnel stayed dead after a flap.
    let no_neigh = rc == BPF_FIB_LKUP_RET_NO_NEIGH as i64;
    if rc != BPF_FIB_LKUP_RET_SUCCESS as i64 && !no_neigh {
        c.tx_drop_no_next_hop += 1;
        return TC_ACT_SHOT;
    }

    // Make room. IPv4 and IPv6 inner packets go through adjust_room with
    // the encap flags, which keeps GSO working: the stack segments the GRE
    // packet later and gives each segment its own outer lengths (written
    // whole by change_head, a segmented IPv6 packet's outer header claimed
    // the whole GSO length in every segment). adjust_room refuses other
    // protocols (ARP), which carry no GSO and get their room in front of
    // the frame instead.
    let encap_len = ip_len + gre_len + l2_len;
    let inner_eth_off = ETH_LEN + ip_len + gre_len;
    if ethertype == ETH_P_IP || ethertype == ETH_P_IPV6 {
        let l3 = if ipv6 {
            BPF_F_ADJ_ROOM_ENCAP_L3_IPV6
        } else {
            BPF_F_ADJ_ROOM_ENCAP_L3_IPV4
        };
        // FIXED_GSO: the tunnel's MTU already leaves room for the outer
        // headers, so each segment keeps its size; without it the kernel
        // cut the segment size by the room, and every segment went out
        // that much short of the path's MTU.
        let mut flags = (l3 | BPF_F_ADJ_ROOM_ENCAP_L4_GRE | BPF_F_ADJ_ROOM_FIXED_GSO) as u64;
        if gretap {
            flags |= bpf_f_adj_room_encap_l2(l2_len as u64);
        }
        let room = |flags: u64| {
            ctx.adjust_room(encap_len as i32, bpf_adj_room_mode::BPF_ADJ_ROOM_MAC, flags)
                .is_ok()
        };
        // ENCAP_L2_ETH (5.13) marks the inner header as Ethernet for GSO;
        // a kernel without it refuses the flag before changing anything,
        // and segments by the inner MAC length alone.
        let made = (gretap && room(flags | BPF_F_ADJ_ROOM_ENCAP_L2_ETH as u64)) || room(flags);
        if !made {
            c.tx_drop_error += 1;
            return TC_ACT_SHOT;
        }
        if gretap && !VLAN && ctx.store(inner_eth_off, &eth, 0).is_err() {
            c.tx_drop_error += 1;
            return TC_ACT_SHOT;
        }
    // change_head leaves the frame's own Ethernet header after the room:
    // a tagged one is written over it and the 4 bytes before.
    } else if unsafe { bpf_skb_change_head(skb.cast(), (inner_eth_off + tag_len) as u32, 0) } != 0 {
        c.tx_drop_error += 1;
        return TC_ACT_SHOT;
    }
    if VLAN {
        let mut tagged = [0u8; ETH_LEN + VLAN_LEN];
        tagged[0..12].copy_from_slice(&eth[0..12]);
        // vlan_proto is in network order already; the TCI in the CPU's.
        let proto = unsafe { (*skb).vlan_proto } as u16;
        tagged[12..14].copy_from_slice(&proto.to_ne_bytes());
        let tci = unsafe { (*skb).vlan_tci } as u16;
        tagged[14..16].copy_from_slice(&tci.to_be_bytes());
        tagged[16..18].copy_from_slice(&eth[12..14]);
        // The tag is in the frame now: off the metadata, or the underlay
        // would tag the outer frame too.
        if ctx.store(inner_eth_off, &tagged, 0).is_err()
            || unsafe { bpf_skb_vlan_pop(skb.cast()) } != 0
        {
            c.tx_drop_error += 1;
            return TC_ACT_SHOT;
        }
    }
    // adjust_room gave an IP skb the outer protocol; an ARP one stays
    // ARP.
    let outer_type = if ipv6 { ETH_P_IPV6 } else { ETH_P_IP };
    let resolve = no_neigh && unsafe { (*skb).protocol } == u32::from(outer_type.to_be());
    if no_neigh && !resolve {
        c.tx_drop_no_next_hop += 1;
        return TC_ACT_SHOT;
    }

    let mut outer_eth = [0u8; ETH_LEN];
    outer_eth[0..6].copy_from_slice(&fib.dmac);
    outer_eth[6..12].copy_from_slice(&fib.smac);
    outer_eth[12..14].copy_from_slice(&outer_type.to_be_bytes());
    let gre_off = ETH_LEN + ip_len;
    let stored = ctx.store(0, &outer_eth, 0).is_ok()
        && if ipv6 {
            let label = outer_flowlabel(ctx, cfg, ethertype);
            let payload = (ip_len - IPV6_LEN + gre_len + inner_len).min(0xffff) as u16;
            let limit = cfg.flags & TUNNEL_F_ENCAP_LIMIT != 0;
            let next = if limit { IPPROTO_DSTOPTS } else { IPPROTO_GRE };
            ctx.store(
                ETH_LEN,
                &ipv6_header(cfg, ttl, tos, label, payload, next),
                0,
            )
            .is_ok()
                && (!limit
                    || ctx
                        .store(ETH_LEN + IPV6_LEN, &encap_limit_option(cfg.encap_limit), 0)
                        .is_ok())
        } else {
            // Fragments of different packets are told apart by the ID
            // alone: one of its own for each packet that may be cut.
            let ip_id = (unsafe { bpf_get_prandom_u32() } & (df.wrapping_sub(1))) as u16;
            let ip = ipv4_header(cfg, ttl, tos, outer_l3_len.min(0xffff) as u16, df, ip_id);
            ctx.store(ETH_LEN, &ip, 0).is_ok()
        }
        && store_gre(ctx, cfg, id, gretap, gre_off, ethertype);
    if !stored {
        c.tx_drop_error += 1;
        return TC_ACT_SHOT;
    }
    c.tx_packets += gso_segs.max(1) as u64;
    c.tx_bytes += inner_len as u64;
    // A packet to fragment goes through the fragmenting pair: the kernel
    // completes what checksums offload left and cuts a GSO packet into
    // segments on the way, then `greha_gre_fragment` cuts each for the
    // path (and resolves the next hop itself).
    let keep = fragment.wrapping_sub(1);
    let out = (fib.ifindex & keep) | (cfg.frag_ifindex & !keep);
    if resolve && keep != 0 {
        // The lookup left the next hop in ipv4_dst / ipv6_dst.
        let mut nh = if ipv6 {
            bpf_redir_neigh {
                nh_family: AF_INET6 as u32,
                __bindgen_anon_1: bpf_redir_neigh__bindgen_ty_1 {
                    ipv6_nh: unsafe { fib.__bindgen_anon_4.ipv6_dst },
                },
            }
        } else {
            bpf_redir_neigh {
                nh_family: AF_INET as u32,
                __bindgen_anon_1: bpf_redir_neigh__bindgen_ty_1 {
                    ipv4_nh: unsafe { fib.__bindgen_anon_4.ipv4_dst },
                },
            }
        };
        return unsafe {
            bpf_redirect_neigh(fib.ifindex, &mut nh, size_of::<bpf_redir_neigh>() as i32, 0) as i32
        };
    }
    unsafe { bpf_redirect(out, 0) as i32 }
}

/// The IP length of each segment a GSO packet of `ethertype` is cut
/// into: its IP and TCP or UDP headers and the segment size; 0 (nothing
/// to check) for any other.
#[inline(always)]
fn gso_seg_l3_len(ctx: &TcContext, ethertype: u16) -> usize {
    let (l3, proto) = match ethertype {
        ETH_P_IP => match ctx.bytes::<10>(ETH_LEN) {
            Some(h) => (((h[0] & 0x0f) as usize) * 4, h[9]),
            None => return 0,
        },
        ETH_P_IPV6 => match ctx.bytes::<7>(ETH_LEN) {
            Some(h) => (IPV6_LEN, h[6]),
            None => return 0,
        },
        _ => return 0,
    };
    let l4 = match proto {
        IPPROTO_TCP => match ctx.load::<u8>(ETH_LEN + l3 + 12) {
            Ok(off) => ((off >> 4) as usize) * 4,
            Err(_) => return 0,
        },
        IPPROTO_UDP => 8,
        _ => return 0,
    };
    l3 + l4 + unsafe { (*ctx.skb.skb).gso_size } as usize
}

/// Writes the GRE header (RFC 2784, 2890) at `gre_off`, after the outer
/// IP header, for an inner frame of `ethertype`: flags and protocol, then
/// the checksum, key and sequence number the tunnel sends, the checksum
/// computed last, over everything after it.
#[inline(always)]
fn store_gre(
    ctx: &TcContext,
    cfg: &TunnelConfig,
    id: u32,
    gretap: bool,
    gre_off: usize,
    ethertype: u16,
) -> bool {
    let inner_off = gre_off + cfg.gre_header_len() as usize;
    let (csum, key, seq) = (
        cfg.flags & TUNNEL_F_OCSUM != 0,
        cfg.flags & TUNNEL_F_OKEY != 0,
        cfg.flags & TUNNEL_F_OSEQ != 0,
    );
    let flags =
        if csum { GRE_C } else { 0 } | if key { GRE_K } else { 0 } | if seq { GRE_S } else { 0 };
    let proto = match (gretap, ethertype) {
        (true, _) => GRE_PROTO_TEB,
        (false, ETH_P_IPV6) => GRE_PROTO_IPV6,
        (false, _) => GRE_PROTO_IPV4,
    };
    let mut base = [0u8; 4];
    base[0..2].copy_from_slice(&flags.to_be_bytes());
    base[2..4].copy_from_slice(&proto.to_be_bytes());
    if ctx.store(gre_off, &base, 0).is_err() {
        return false;
    }
    let mut off = gre_off + 4;
    if csum {
        if ctx.store(off, &[0u8; 4], 0).is_err() {
            return false;
        }
        off += 4;
    }
    if key {
        if ctx.store(off, &cfg.okey.to_be_bytes(), 0).is_err() {
            return false;
        }
        off += 4;
    }
    if seq {
        let Some(state) = GREHA_TUNNEL_SEQ.get_ptr_mut(id) else {
            return false;
        };
        // The first is 1: a receiver's 0 means "none yet".
        let n = unsafe {
            let lock = (&raw mut (*state).lock).cast::<bindings::bpf_spin_lock>();
            bpf_spin_lock(lock);
            let n = (*state).tx_last.wrapping_add(1);
            (*state).tx_last = n;
            bpf_spin_unlock(lock);
            n
        };
        if ctx.store(off, &n.to_be_bytes(), 0).is_err() {
            return false;
        }
    }
    if csum {
        let end = unsafe { (*ctx.skb.skb).len } as usize;
        let (l3_off, inner_type) = inner_l3(ctx, inner_off, gretap, ethertype);
        let sum = match lco_sum(ctx, gre_off, l3_off, inner_type) {
            Some(s) => Some(s),
            None => GREHA_CSUM_SCRATCH
                .get_ptr_mut(0)
                .and_then(|buf| ones_sum(ctx, buf, gre_off, end, MAX_CSUM_BYTES)),
        };
        let Some(sum) = sum else {
            return false;
        };
        if ctx
            .store(gre_off + 4, &(!fold(sum)).to_ne_bytes(), 0)
            .is_err()
        {
            return false;
        }
    }
    true
}

/// The outer TTL and TOS, as the kernel's tunnels choose them: fixed, or
/// (TTL 0, TOS with bit 0 set: `inherit`) the inner IPv4 or IPv6 packet's,
/// and for other frames TTL 64 and TOS 0.
#[inline(always)]
fn outer_ttl_tos(ctx: &TcContext, cfg: &TunnelConfig, ethertype: u16) -> (u8, u8) {
    let (mut ttl, mut tos) = (cfg.ttl, cfg.tos);
    if ttl != 0 && tos & 1 == 0 {
        return (ttl, tos);
    }
    let (inner_ttl, inner_tos) = match ethertype {
        ETH_P_IP => match ctx.bytes::<9>(ETH_LEN) {
            Some(h) => (h[8], h[1]),
            None => (64, 0),
        },
        ETH_P_IPV6 => match ctx.bytes::<8>(ETH_LEN) {
            Some(h) => (h[7], (h[0] << 4) | (h[1] >> 4)),
            None => (64, 0),
        },
        _ => (64, 0),
    };
    if ttl == 0 {
        ttl = inner_ttl;
    }
    if tos & 1 != 0 {
        tos = inner_tos;
    }
    (ttl, tos)
}

/// The outer flow label: fixed, or (`inherit`) the inner IPv6 packet's
/// (0 for other frames).
#[inline(always)]
fn outer_flowlabel(ctx: &TcContext, cfg: &TunnelConfig, ethertype: u16) -> u32 {
    if cfg.flowlabel & FLOWLABEL_INHERIT == 0 {
        return cfg.flowlabel & 0x000f_ffff;
    }
    match (ethertype, ctx.bytes::<4>(ETH_LEN)) {
        (ETH_P_IPV6, Some(h)) => u32::from_be_bytes(h) & 0x000f_ffff,
        _ => 0,
    }
}

/// The outer IPv6 header, `payload` bytes after it (the encapsulation
/// limit option if sent, GRE and the inner frame), `next` the header
/// that follows.
#[inline(always)]
fn ipv6_header(
    cfg: &TunnelConfig,
    hops: u8,
    tclass: u8,
    label: u32,
    payload: u16,
    next: u8,
) -> [u8; IPV6_LEN] {
    let mut h = [0u8; IPV6_LEN];
    let first = (6u32 << 28) | (u32::from(tclass) << 20) | label;
    h[0..4].copy_from_slice(&first.to_be_bytes());
    h[4..6].copy_from_slice(&payload.to_be_bytes());
    h[6] = next;
    h[7] = hops;
    h[8..24].copy_from_slice(&cfg.local);
    h[24..40].copy_from_slice(&cfg.remote);
    h
}

/// The destination options header carrying the tunnel encapsulation
/// limit (RFC 2473 4.1.1), laid out as the kernel's ip6_tnl sends it: the
/// option, then a PadN filling the header to 8 bytes.
#[inline(always)]
fn encap_limit_option(limit: u8) -> [u8; 8] {
    [IPPROTO_GRE, 0, 4, 1, limit, 1, 1, 0]
}

/// An address's bytes as the four 32-bit words bpf_fib_lookup and
/// bpf_redir_neigh take (network order in memory).
#[inline(always)]
fn words(a: &[u8; 16]) -> [u32; 4] {
    let w = |i: usize| u32::from_ne_bytes([a[i], a[i + 1], a[i + 2], a[i + 3]]);
    [w(0), w(4), w(8), w(12)]
}

/// The outer IPv4 header, with DF or without (see `outer_df`), its ID
/// and its checksum.
#[inline(always)]
fn ipv4_header(
    cfg: &TunnelConfig,
    ttl: u8,
    tos: u8,
    tot_len: u16,
    df: u32,
    id: u16,
) -> [u8; IPV4_LEN] {
    let mut h = [0u8; IPV4_LEN];
    h[0] = 0x45;
    h[1] = tos;
    h[2..4].copy_from_slice(&tot_len.to_be_bytes());
    h[4..6].copy_from_slice(&id.to_be_bytes());
    h[6] = ((df & 1) << 6) as u8;
    h[8] = ttl;
    h[9] = IPPROTO_GRE;
    h[12..16].copy_from_slice(&cfg.local[..4]);
    h[16..20].copy_from_slice(&cfg.remote[..4]);
    set_ipv4_checksum(&mut h);
    h
}

/// Writes an IPv4 header's checksum, over the header with the field zero.
#[inline(always)]
pub(crate) fn set_ipv4_checksum(h: &mut [u8; IPV4_LEN]) {
    h[10] = 0;
    h[11] = 0;
    let mut sum: u64 = 0;
    let mut i = 0;
    while i < IPV4_LEN {
        sum += u16::from_be_bytes([h[i], h[i + 1]]) as u64;
        i += 2;
    }
    let csum = !fold(sum);
    h[10..12].copy_from_slice(&csum.to_be_bytes());
}
