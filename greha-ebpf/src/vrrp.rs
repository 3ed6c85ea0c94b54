//! `greha_vrrp`: VRRP adverts checked, counted and, in the steady state,
//! absorbed in XDP, before the daemon is woken. `greha_vrrp_tc` is the same
//! check for the receiving side of a greha tunnel: decapsulated frames enter
//! the tunnel interface through a tc redirect, which generic XDP skips
//! (`skb_is_tc_redirected`), so there it runs at tcx ingress.
//!
//! Each advert for an instance the daemon configured (GREHA_VRRP_CTL, by
//! interface, VRID and family: IPv4, or IPv6 without extension headers)
//! goes through the engine's receive checks: TTL (hop limit) 255, version,
//! type, length against the address count, checksum (IPv4 v3 in both
//! forms, IPv6 with its pseudo-header), v2 interval and authentication. What fails is counted and
//! dropped. What passes is dropped too if it is steady (greha-common's
//! `vrrp_steady`: a backup hearing the master it follows, unchanged, and
//! not about to preempt it), and then recorded in GREHA_VRRP_SEEN. Everything
//! else (priority 0, another source, another priority or interval, a
//! master below our priority when we preempt, anything while Master or
//! Initialize) goes to the daemon. The daemon's Master_Down timer reads
//! GREHA_VRRP_SEEN when it fires instead of being reset by every advert.
use crate::frame::{Frame, Scratch, fold};
use aya_ebpf::{
    bindings::{TC_ACT_SHOT, TC_ACT_UNSPEC, xdp_action},
    btf_maps::{Array, HashMap, PerCpuArray, PerCpuHashMap},
    helpers::{bpf_csum_diff, bpf_ktime_get_ns},
    macros::{btf_map, classifier, xdp},
    programs::{TcContext, XdpContext},
};
use greha_common::{
    AdvertSummary, MAX_VRRP, VRRP_FAMILY_IPV4, VRRP_FAMILY_IPV6, VrrpCtl, VrrpKey, VrrpSeen,
    VrrpStats, ipv4_in16, vrrp_steady,
};

#[btf_map]
static GREHA_VRRP_CTL: HashMap<VrrpKey, VrrpCtl, { MAX_VRRP as usize }> = HashMap::new();
/// BPF_F_MMAPABLE: the daemon reads the records from shared memory, so
/// its timers cost no system call.
const BPF_F_MMAPABLE: usize = 1 << 10;
#[btf_map]
static GREHA_VRRP_SEEN: Array<VrrpSeen, { MAX_VRRP as usize }, BPF_F_MMAPABLE> = Array::new();
#[btf_map]
static GREHA_VRRP_STATS: PerCpuHashMap<VrrpKey, VrrpStats, { MAX_VRRP as usize }> =
    PerCpuHashMap::new();

const ETH_LEN: usize = 14;
const ETH_P_IP: u16 = 0x0800;
const ETH_P_IPV6: u16 = 0x86dd;
const IPV6_LEN: usize = 40;
const IPPROTO_VRRP: u8 = 112;
/// The longest message the programs sum: 8-byte header, 255 IPv4
/// addresses, 8 bytes of v2 authentication (IPv6: 64 addresses).
const MAX_VRRP_LEN: usize = 8 + 4 * 255 + 8;

#[btf_map]
static GREHA_VRRP_SCRATCH: PerCpuArray<Scratch, 1> = PerCpuArray::new();

/// What the check decided.
#[derive(PartialEq, Eq)]
enum Verdict {
    /// Not ours, or for the daemon.
    Pass,
    /// Failed a check, or a steady advert absorbed.
    Drop,
}

#[xdp]
pub fn greha_vrrp(ctx: XdpContext) -> u32 {
    xdp_vrrp(&ctx)
}

/// The check as an XDP verdict.
#[inline(always)]
pub fn xdp_vrrp(ctx: &XdpContext) -> u32 {
    match vrrp(ctx) {
        Verdict::Pass => xdp_action::XDP_PASS,
        Verdict::Drop => xdp_action::XDP_DROP,
    }
}

#[classifier]
pub fn greha_vrrp_tc(ctx: TcContext) -> i32 {
    match vrrp(&ctx) {
        // tcx: let whatever else is attached decide.
        Verdict::Pass => TC_ACT_UNSPEC,
        Verdict::Drop => TC_ACT_SHOT,
    }
}

/// What the IP header says of a VRRP message.
struct Outer {
    family: u16,
    /// Where the VRRP message starts in the frame.
    voff: usize,
    /// Its length by the IP header.
    len: usize,
    /// TTL or hop limit.
    hops: u8,
    /// IPv4 addresses as [`ipv4_in16`] gives them.
    src: [u8; 16],
    dst: [u8; 16],
}

/// An IPv4 packet of protocol 112; None for anything else.
#[inline(always)]
fn outer4<F: Frame>(ctx: &F) -> Option<Outer> {
    let ip = ctx.bytes::<20>(ETH_LEN)?;
    if ip[9] != IPPROTO_VRRP || ip[0] >> 4 != 4 {
        return None;
    }
    let ihl = ((ip[0] & 0x0f) as usize) * 4;
    let tot_len = u16::from_be_bytes([ip[2], ip[3]]) as usize;
    if ihl < 20 || tot_len < ihl {
        return None;
    }
    Some(Outer {
        family: VRRP_FAMILY_IPV4,
        voff: ETH_LEN + ihl,
        len: tot_len - ihl,
        hops: ip[8],
        src: ipv4_in16([ip[12], ip[13], ip[14], ip[15]]),
        dst: ipv4_in16([ip[16], ip[17], ip[18], ip[19]]),
    })
}

/// An IPv6 packet whose next header is VRRP; one with extension headers
/// goes to the daemon, whose socket gets it after the kernel's parsing.
#[inline(always)]
fn outer6<F: Frame>(ctx: &F) -> Option<Outer> {
    let ip = ctx.bytes::<IPV6_LEN>(ETH_LEN)?;
    if ip[6] != IPPROTO_VRRP || ip[0] >> 4 != 6 {
        return None;
    }
    let mut src = [0u8; 16];
    let mut dst = [0u8; 16];
    src.copy_from_slice(&ip[8..24]);
    dst.copy_from_slice(&ip[24..40]);
    Some(Outer {
        family: VRRP_FAMILY_IPV6,
        voff: ETH_LEN + IPV6_LEN,
        len: u16::from_be_bytes([ip[4], ip[5]]) as usize,
        hops: ip[7],
        src,
        dst,
    })
}

/// Whether the checksum verifies with the pseudo-header: IPv4's (12
/// bytes, keepalived's v3 form) or IPv6's (40 bytes). `plain` is the
/// message's own sum; the pseudo-header is summed by bpf_csum_diff too,
/// so the byte order matches.
#[inline(always)]
fn pseudo_verifies(o: &Outer, len: usize, plain: u64) -> bool {
    let mut pseudo = [0u8; 40];
    let size = if o.family == VRRP_FAMILY_IPV6 {
        pseudo[0..16].copy_from_slice(&o.src);
        pseudo[16..32].copy_from_slice(&o.dst);
        pseudo[32..36].copy_from_slice(&(len as u32).to_be_bytes());
        pseudo[39] = IPPROTO_VRRP;
        40
    } else {
        pseudo[0..4].copy_from_slice(&o.src[..4]);
        pseudo[4..8].copy_from_slice(&o.dst[..4]);
        pseudo[9] = IPPROTO_VRRP;
        pseudo[10..12].copy_from_slice(&(len as u16).to_be_bytes());
        12
    };
    let with = unsafe {
        bpf_csum_diff(
            core::ptr::null_mut(),
            0,
            pseudo.as_mut_ptr().cast(),
            size,
            plain as u32,
        )
    };
    with >= 0 && fold(with as u64) == 0xffff
}

#[inline(always)]
fn vrrp<F: Frame>(ctx: &F) -> Verdict {
    let Some(eth) = ctx.bytes::<ETH_LEN>(0) else {
        return Verdict::Pass;
    };
    let outer = match u16::from_be_bytes([eth[12], eth[13]]) {
        ETH_P_IP => outer4(ctx),
        ETH_P_IPV6 => outer6(ctx),
        _ => None,
    };
    let Some(o) = outer else {
        return Verdict::Pass;
    };
    let voff = o.voff;
    let Some(hdr) = ctx.bytes::<8>(voff) else {
        return Verdict::Pass;
    };
    let key = VrrpKey {
        ifindex: ctx.ifindex(),
        vrid: hdr[1] as u16,
        family: o.family,
    };
    // Not an instance the daemon configured here: its business (it counts
    // VRID errors).
    let Some(ctl) = (unsafe { GREHA_VRRP_CTL.get(key) }) else {
        return Verdict::Pass;
    };
    let stats = match GREHA_VRRP_STATS.get_ptr_mut(key) {
        Some(s) => s,
        None => {
            let _ = GREHA_VRRP_STATS.insert(key, VrrpStats::default(), 0);
            match GREHA_VRRP_STATS.get_ptr_mut(key) {
                Some(s) => s,
                None => return Verdict::Pass,
            }
        }
    };
    let s = unsafe { &mut *stats };

    // A unicast peer may be routers away: its TTL is not the RFC's 255,
    // and keepalived takes any unless the peer has bounds (the daemon
    // checks those, with the fast path off for such an instance).
    if o.hops != 255 && ctl.unicast == 0 {
        s.ip_ttl_errors += 1;
        return Verdict::Drop;
    }
    let version = hdr[0] >> 4;
    if version != ctl.version {
        s.version_errors += 1;
        return Verdict::Drop;
    }
    if hdr[0] & 0x0f != 1 {
        s.rcvd_invalid_type_packets += 1;
        return Verdict::Drop;
    }
    let count = hdr[3] as usize;
    let width = if o.family == VRRP_FAMILY_IPV6 { 16 } else { 4 };
    let len = 8 + width * count + if version == 2 { 8 } else { 0 };
    if o.len != len || voff + len > ctx.len() {
        s.packet_length_errors += 1;
        return Verdict::Drop;
    }
    // Longer than the sum's bound (an IPv6 advert of more than 64
    // addresses): valid perhaps, and the daemon's to check.
    if len > MAX_VRRP_LEN {
        s.to_daemon += 1;
        return Verdict::Pass;
    }
    let plain = GREHA_VRRP_SCRATCH
        .get_ptr_mut(0)
        .and_then(|buf| ctx.ones_sum(buf, voff, voff + len, MAX_VRRP_LEN));
    let Some(plain) = plain else {
        s.packet_length_errors += 1;
        return Verdict::Drop;
    };
    // IPv4: RFC 9568's form (none) or, in v3, keepalived's (the
    // pseudo-header); IPv6: the pseudo-header only.
    let verified = if o.family == VRRP_FAMILY_IPV6 {
        pseudo_verifies(&o, len, plain)
    } else {
        fold(plain) == 0xffff || version == 3 && pseudo_verifies(&o, len, plain)
    };
    if !verified {
        s.checksum_errors += 1;
        return Verdict::Drop;
    }
    let priority = hdr[2];
    let interval_cs = if version == 2 {
        hdr[5] as u16 * 100
    } else {
        u16::from_be_bytes([hdr[4] & 0x0f, hdr[5]])
    };
    // As the engine: an interval of 0 is an error, never followed.
    if interval_cs == 0 {
        s.adv_interval_errors += 1;
        return Verdict::Drop;
    }
    if version == 2 {
        if interval_cs != ctl.interval_cs {
            s.adv_interval_errors += 1;
            return Verdict::Drop;
        }
        if hdr[4] != ctl.auth_type {
            s.auth_failures += 1;
            return Verdict::Drop;
        }
        if ctl.auth_type == 1 {
            match ctx.bytes::<8>(voff + 8 + 4 * count) {
                Some(a) if a == ctl.auth => {}
                _ => {
                    s.auth_failures += 1;
                    return Verdict::Drop;
                }
            }
        }
    }
    s.rcvd_advertisements += 1;
    if priority == 0 {
        s.rcvd_pri_zero_packets += 1;
    }
    let advert = AdvertSummary {
        src: o.src,
        priority,
        _pad: [0],
        interval_cs,
        count: count as u16,
    };
    let steady = vrrp_steady(ctl, &advert);
    // Only steady adverts are recorded: the daemon's timer takes the record
    // as the followed master's, and a stray advert (a third router, a
    // non-peer) written there would hide the master's last one.
    if steady && let Some(seen) = GREHA_VRRP_SEEN.get_ptr_mut(ctl.slot) {
        // The time last: a reader that sees it unchanged around its read of
        // the other fields has a consistent record.
        unsafe {
            core::ptr::write_volatile(&raw mut (*seen).src, advert.src);
            core::ptr::write_volatile(&raw mut (*seen).priority, priority);
            core::ptr::write_volatile(&raw mut (*seen).interval_cs, interval_cs);
            core::ptr::write_volatile(&raw mut (*seen).last_ns, bpf_ktime_get_ns());
        }
    }
    if steady {
        s.absorbed += 1;
        Verdict::Drop
    } else {
        s.to_daemon += 1;
        Verdict::Pass
    }
}
