//! Path MTU signalling, as the kernel's tunnels do with `pmtudisc`: an
//! inner packet that would leave the tunnel larger than the path to the
//! remote carries is answered with ICMP "fragmentation needed" (IPv4 with
//! DF) or ICMPv6 "packet too big" to its sender, so that the sender sends
//! smaller packets instead of losing every large one (a PMTU black hole).
//!
//! The encapsulation tail-calls this program: the error's frame and the
//! encap's would not fit in 512 bytes of stack together.
//!
//! The error is made in place of the packet and received on the tunnel
//! interface, as if it came from the inner destination: a local sender
//! takes it as the kernel's own tunnels' error (the route learns the MTU),
//! a forwarded packet's sender gets it routed back to it. The path MTU is
//! the tunnel's `underlay_mtu`, which the daemon lowers when the underlay
//! reports a smaller one (see greha's `pmtu` module).
use aya_ebpf::{
    bindings::{BPF_F_INGRESS, TC_ACT_SHOT, bpf_adj_room_mode},
    btf_maps::PerCpuArray,
    helpers::{bpf_redirect, bpf_skb_change_tail},
    macros::{btf_map, classifier},
    programs::TcContext,
};
use greha_common::TUNNEL_F_GRETAP;

use crate::{
    frame::{fold, ones_sum, skb_load},
    gre::{
        ETH_LEN, ETH_P_IP, ETH_P_IPV6, GREHA_CSUM_SCRATCH, GREHA_TUNNEL_BY_DEV, IPV4_LEN, IPV6_LEN,
        counters, lco_sum, left_partial, tunnel,
    },
};

const IPPROTO_ICMP: u8 = 1;
const IPPROTO_ICMPV6: u8 = 58;
const ICMP_HDR: usize = 8;
/// The most an ICMP error may be (RFC 1812 4.3.2.3), and an ICMPv6 one
/// (RFC 4443 2.4), their IP header included.
const ICMP_MAX: usize = 576;
const ICMP6_MAX: usize = 1280;

/// The packet's Ethernet and IP headers (`IN`) and the error's (`OUT`:
/// Ethernet, IP, ICMP) are kept here rather than on the stack: as stack
/// arrays LLVM splits them into a register per byte and spills each, a
/// frame of over 400 bytes.
const IN: usize = 0;
const OUT: usize = 64;
type Headers = [u8; 128];
#[btf_map]
static GREHA_ICMP_SCRATCH: PerCpuArray<Headers, 1> = PerCpuArray::new();

/// Tail-called by the encapsulation with an inner packet too big for the
/// path: drops it, and tells its sender where the kernel's tunnels would.
#[classifier]
pub fn greha_gre_too_big(ctx: TcContext) -> i32 {
    let ifindex = unsafe { (*ctx.skb.skb).ifindex };
    let Some(id) = (unsafe { GREHA_TUNNEL_BY_DEV.get(ifindex) }).copied() else {
        return TC_ACT_SHOT;
    };
    let (Some(cfg), Some(c)) = (tunnel(id), counters(id)) else {
        return TC_ACT_SHOT;
    };
    c.tx_drop_too_big += 1;
    // What the path carries of the inner packet, its IP header included.
    let gretap = cfg.flags & TUNNEL_F_GRETAP != 0;
    let l2_len = match (gretap, unsafe { (*ctx.skb.skb).vlan_present } != 0) {
        (false, _) => 0,
        (true, false) => ETH_LEN as u32,
        // The tag the encapsulation puts in the inner frame.
        (true, true) => ETH_LEN as u32 + 4,
    };
    let overhead = cfg.ip_header_len() + cfg.gre_header_len() + l2_len;
    let mtu = cfg.underlay_mtu.saturating_sub(overhead);
    if !signal(&ctx, mtu) {
        return TC_ACT_SHOT;
    }
    c.tx_icmp_too_big += 1;
    unsafe { bpf_redirect(cfg.dev_ifindex, BPF_F_INGRESS as u64) as i32 }
}

/// Turns the packet into the error for its sender; false if it gets none.
#[inline(always)]
fn signal(ctx: &TcContext, mtu: u32) -> bool {
    let Some(buf) = GREHA_ICMP_SCRATCH.get_ptr_mut(0) else {
        return false;
    };
    let b = unsafe { &mut *buf };
    let Ok(ethertype) = ctx.load::<[u8; 2]>(12).map(u16::from_be_bytes) else {
        return false;
    };
    let ip_len = if ethertype == ETH_P_IP {
        IPV4_LEN
    } else if ethertype == ETH_P_IPV6 {
        IPV6_LEN
    } else {
        return false;
    };
    // The packet's Ethernet and IP headers, at IN.
    if !skb_load(ctx, 0, b.as_mut_ptr(), ETH_LEN + ip_len) {
        return false;
    }
    let ipv6 = ethertype == ETH_P_IPV6;
    let ip = IN + ETH_LEN;
    let partial = left_partial(ctx, ETH_LEN, ethertype);
    let wanted = if ipv6 {
        wants_icmp6(ctx, b)
    } else {
        wants_icmp4(ctx, b)
    };
    // The error quotes as much of the packet as its size limit leaves.
    let (max, room) = if ipv6 {
        (ICMP6_MAX, IPV6_LEN + ICMP_HDR)
    } else {
        (ICMP_MAX, IPV4_LEN + ICMP_HDR)
    };
    if !wanted || !make_room(ctx, ETH_LEN + max - room, room) {
        return false;
    }
    let len = ctx.len() as usize - ETH_LEN;

    // Ethernet: back to where the packet came from.
    let o = OUT;
    for k in 0..6 {
        b[o + k] = b[IN + 6 + k];
        b[o + 6 + k] = b[IN + k];
    }
    b[o + 12] = b[IN + 12];
    b[o + 13] = b[IN + 13];
    // IP: from the packet's destination to its source.
    let h = OUT + ETH_LEN;
    let icmp = h + ip_len;
    let mut pseudo = 0u64;
    if ipv6 {
        b[h..h + 8].copy_from_slice(&[0x60, 0, 0, 0, 0, 0, IPPROTO_ICMPV6, 64]);
        b[h + 4..h + 6].copy_from_slice(&((len - IPV6_LEN) as u16).to_be_bytes());
        for k in 0..16 {
            b[h + 8 + k] = b[ip + 24 + k];
            b[h + 24 + k] = b[ip + 8 + k];
        }
        // IPv6 links carry 1280 bytes at least (RFC 8200 5); a smaller
        // path is the underlay's to fragment, which greha does not.
        b[icmp..icmp + 4].copy_from_slice(&[2, 0, 0, 0]);
        b[icmp + 4..icmp + 8].copy_from_slice(&mtu.max(1280).to_be_bytes());
        // The pseudo-header: both addresses, the ICMPv6 length, next
        // header.
        pseudo = u16::from_ne_bytes([b[h + 4], b[h + 5]]) as u64
            + u16::from_ne_bytes([0, IPPROTO_ICMPV6]) as u64
            + ones(b, h + 8, 32);
    } else {
        b[h..h + 12].copy_from_slice(&[0x45, 0xc0, 0, 0, 0, 0, 0, 0, 64, IPPROTO_ICMP, 0, 0]);
        b[h + 2..h + 4].copy_from_slice(&(len as u16).to_be_bytes());
        for k in 0..4 {
            b[h + 12 + k] = b[ip + 16 + k];
            b[h + 16 + k] = b[ip + 12 + k];
        }
        let sum = !fold(ones(b, h, IPV4_LEN));
        b[h + 10..h + 12].copy_from_slice(&sum.to_ne_bytes());
        b[icmp..icmp + 6].copy_from_slice(&[3, 4, 0, 0, 0, 0]);
        b[icmp + 6..icmp + 8].copy_from_slice(&(mtu.min(0xffff) as u16).to_be_bytes());
    }
    let headers = ETH_LEN + ip_len + ICMP_HDR;
    let stored = if ipv6 {
        store(ctx, b, OUT, ETH_LEN + IPV6_LEN + ICMP_HDR)
    } else {
        store(ctx, b, OUT, ETH_LEN + IPV4_LEN + ICMP_HDR)
    };
    if !stored {
        return false;
    }
    let Some(sum) = icmp_sum(ctx, partial, headers - ICMP_HDR, ethertype) else {
        return false;
    };
    ctx.store(
        headers - ICMP_HDR + 2,
        &(!fold(sum + pseudo)).to_ne_bytes(),
        0,
    )
    .is_ok()
}

/// The 16-bit words of `b[at..at + len]` summed.
#[inline(always)]
fn ones(b: &Headers, at: usize, len: usize) -> u64 {
    let mut sum = 0u64;
    let mut i = 0;
    while i < len {
        sum += u16::from_ne_bytes([b[at + i], b[at + i + 1]]) as u64;
        i += 2;
    }
    sum
}

/// Writes `len` bytes of the scratch at `at` to the packet's start.
#[inline(always)]
fn store(ctx: &TcContext, b: &Headers, at: usize, len: usize) -> bool {
    let from = b[at..].as_ptr();
    unsafe {
        aya_ebpf::helpers::bpf_skb_store_bytes(ctx.skb.skb.cast(), 0, from.cast(), len as u32, 0)
            == 0
    }
}

/// An IPv4 packet gets "fragmentation needed" (type 3, code 4, RFC 1191)
/// when DF is set: one without DF the kernel's tunnels drop too (their
/// outer header has DF). A later fragment or an ICMP error gets nothing
/// (RFC 1122 3.2.2).
#[inline(always)]
fn wants_icmp4(ctx: &TcContext, b: &Headers) -> bool {
    let ip = IN + ETH_LEN;
    let frag = u16::from_be_bytes([b[ip + 6], b[ip + 7]]);
    if b[ip] >> 4 != 4 || frag & 0x4000 == 0 || frag & 0x1fff != 0 {
        return false;
    }
    let ihl = ((b[ip] & 0x0f) as usize) * 4;
    b[ip + 9] != IPPROTO_ICMP
        || matches!(ctx.load::<u8>(ETH_LEN + ihl), Ok(t) if !matches!(t, 3 | 4 | 5 | 11 | 12))
}

/// An IPv6 packet gets "packet too big" (RFC 4443 3.2), unless it is an
/// ICMPv6 error or from the unspecified address (RFC 4443 2.4 (e)).
#[inline(always)]
fn wants_icmp6(ctx: &TcContext, b: &Headers) -> bool {
    let ip = IN + ETH_LEN;
    if b[ip] >> 4 != 6 || b[ip + 8..ip + 24].iter().all(|&x| x == 0) {
        return false;
    }
    b[ip + 6] != IPPROTO_ICMPV6 || ctx.load::<u8>(ETH_LEN + IPV6_LEN).is_ok_and(|t| t >= 128)
}

/// Cuts the packet to `keep` bytes and opens `room` bytes after its
/// Ethernet header, for the error's IP and ICMP headers.
#[inline(always)]
fn make_room(ctx: &TcContext, keep: usize, room: usize) -> bool {
    let len = ctx.len() as usize;
    // A GSO packet is cut like any: change_tail resets its GSO state.
    (len <= keep || unsafe { bpf_skb_change_tail(ctx.skb.skb.cast(), keep as u32, 0) } == 0)
        && ctx
            .adjust_room(room as i32, bpf_adj_room_mode::BPF_ADJ_ROOM_MAC, 0)
            .is_ok()
}

/// The ones' complement sum of the ICMP message from `icmp_off` to the
/// end, the quoted packet after its 8-byte header. A packet whose TCP or
/// UDP checksum its sender left to offload (CHECKSUM_PARTIAL: a local
/// sender, or a guest on a tap) still has it left so in the error, and
/// whoever fills it on the way fills it over the quoted bytes; those bytes
/// then sum to the complement of the pseudo-header sum that the field
/// holds now, which is what lco_sum counts. Any other packet's bytes are
/// summed as they are.
#[inline(always)]
fn icmp_sum(ctx: &TcContext, partial: bool, icmp_off: usize, ethertype: u16) -> Option<u64> {
    if partial {
        return lco_sum(ctx, icmp_off, icmp_off + ICMP_HDR, ethertype);
    }
    let end = ctx.len() as usize;
    GREHA_CSUM_SCRATCH
        .get_ptr_mut(0)
        .and_then(|buf| ones_sum(ctx, buf, icmp_off, end, ICMP6_MAX))
}
