//! `greha_vrrp`: VRRP adverts checked, counted and, in the steady state,
//! absorbed in XDP, before the daemon is woken. `greha_vrrp_tc` is the same
//! check for the receiving side of a greha tunnel: decapsulated frames enter
//! the tunnel interface through a tc redirect, which generic XDP skips
//! (`skb_is_tc_redirected`), so there it runs at tcx ingress.
//!
//! Each advert for an instance the daemon configured (GREHA_VRRP_CTL, by
//! interface and VRID) goes through the engine's receive checks: TTL 255,
//! version, type, length against the address count, checksum (v3 in both
//! forms), v2 interval and authentication. What fails is counted and
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
use greha_common::{AdvertSummary, MAX_VRRP, VrrpCtl, VrrpKey, VrrpSeen, VrrpStats, vrrp_steady};

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
const IPPROTO_VRRP: u8 = 112;
/// 8-byte header, 255 addresses, 8 bytes of v2 authentication.
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

#[inline(always)]
fn vrrp<F: Frame>(ctx: &F) -> Verdict {
    let Some(eth) = ctx.bytes::<ETH_LEN>(0) else {
        return Verdict::Pass;
    };
    if u16::from_be_bytes([eth[12], eth[13]]) != ETH_P_IP {
        return Verdict::Pass;
    }
    let Some(ip) = ctx.bytes::<20>(ETH_LEN) else {
        return Verdict::Pass;
    };
    if ip[9] != IPPROTO_VRRP || ip[0] >> 4 != 4 {
        return Verdict::Pass;
    }
    let ihl = ((ip[0] & 0x0f) as usize) * 4;
    let tot_len = u16::from_be_bytes([ip[2], ip[3]]) as usize;
    if ihl < 20 || tot_len < ihl {
        return Verdict::Pass;
    }
    let voff = ETH_LEN + ihl;
    let Some(hdr) = ctx.bytes::<8>(voff) else {
        return Verdict::Pass;
    };
    let key = VrrpKey {
        ifindex: ctx.ifindex(),
        vrid: hdr[1] as u32,
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

    if ip[8] != 255 {
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
    let len = 8 + 4 * count + if version == 2 { 8 } else { 0 };
    if tot_len - ihl != len || voff + len > ctx.len() || len > MAX_VRRP_LEN {
        s.packet_length_errors += 1;
        return Verdict::Drop;
    }
    let plain = GREHA_VRRP_SCRATCH
        .get_ptr_mut(0)
        .and_then(|buf| ctx.ones_sum(buf, voff, voff + len, MAX_VRRP_LEN));
    let Some(plain) = plain else {
        s.packet_length_errors += 1;
        return Verdict::Drop;
    };
    let verified = fold(plain) == 0xffff
        || version == 3 && {
            // keepalived's form adds the IPv4 pseudo-header; RFC 9568's does
            // not. Summed by bpf_csum_diff too, so the byte order matches.
            let len_be = (len as u16).to_be_bytes();
            let mut pseudo: [u8; 12] = [
                ip[12],
                ip[13],
                ip[14],
                ip[15],
                ip[16],
                ip[17],
                ip[18],
                ip[19],
                0,
                IPPROTO_VRRP,
                len_be[0],
                len_be[1],
            ];
            let with = unsafe {
                bpf_csum_diff(
                    core::ptr::null_mut(),
                    0,
                    pseudo.as_mut_ptr().cast(),
                    12,
                    plain as u32,
                )
            };
            with >= 0 && fold(with as u64) == 0xffff
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
        src: [ip[12], ip[13], ip[14], ip[15]],
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
