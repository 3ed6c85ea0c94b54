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
//! dropped. What passes is recorded in GREHA_VRRP_SEEN, and dropped too if
//! it changes nothing: a backup hearing the master it follows, with the
//! same priority and interval, and not about to preempt it. Everything
//! else (priority 0, another source, another priority or interval, a
//! master below our priority when we preempt, anything while Master or
//! Initialize) goes to the daemon. The daemon's Master_Down timer reads
//! GREHA_VRRP_SEEN when it fires instead of being reset by every advert.
use aya_ebpf::{
    EbpfContext as _,
    bindings::{TC_ACT_SHOT, TC_ACT_UNSPEC, xdp_action},
    btf_maps::{Array, HashMap, PerCpuArray, PerCpuHashMap},
    helpers::{bpf_csum_diff, bpf_ktime_get_ns, bpf_skb_load_bytes, bpf_xdp_load_bytes},
    macros::{btf_map, classifier, xdp},
    programs::{TcContext, XdpContext},
};
use greha_common::{MAX_VRRP, VRRP_STATE_BACKUP, VrrpCtl, VrrpKey, VrrpSeen, VrrpStats};

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
const CHUNK: usize = 512;

/// Room for a whole advert, plus slack so the zero padding after the last
/// byte needs no bounds check LLVM could drop.
#[btf_map]
static GREHA_VRRP_SCRATCH: PerCpuArray<[u8; CHUNK + 4], 1> = PerCpuArray::new();

/// What the check needs of a frame, from XDP or from tc; the frame starts
/// at its Ethernet header in both.
trait Frame {
    /// The frame's length.
    fn len(&self) -> usize;
    /// The interface the frame arrived on.
    fn ifindex(&self) -> u32;
    /// Copies `len` bytes at `off` into `buf`; false if out of the frame.
    fn load(&self, off: usize, buf: *mut u8, len: usize) -> bool;

    #[inline(always)]
    fn bytes<const N: usize>(&self, off: usize) -> Option<[u8; N]> {
        let mut b = [0u8; N];
        self.load(off, b.as_mut_ptr(), N).then_some(b)
    }
}

impl Frame for XdpContext {
    #[inline(always)]
    fn len(&self) -> usize {
        self.data_end() - self.data()
    }

    #[inline(always)]
    fn ifindex(&self) -> u32 {
        unsafe { (*self.ctx).ingress_ifindex }
    }

    #[inline(always)]
    fn load(&self, off: usize, buf: *mut u8, len: usize) -> bool {
        unsafe { bpf_xdp_load_bytes(self.ctx, off as u32, buf.cast(), len as u32) == 0 }
    }

    /// Headers by direct packet access: every frame on the interface is
    /// looked at, most are not VRRP, and a helper call each would cost.
    #[inline(always)]
    fn bytes<const N: usize>(&self, off: usize) -> Option<[u8; N]> {
        direct(self.data(), self.data_end(), off)
    }
}

#[inline(always)]
fn direct<const N: usize>(data: usize, data_end: usize, off: usize) -> Option<[u8; N]> {
    let start = data + off;
    if start + N > data_end {
        return None;
    }
    Some(unsafe { core::ptr::read_unaligned(start as *const [u8; N]) })
}

impl Frame for TcContext {
    #[inline(always)]
    fn len(&self) -> usize {
        unsafe { (*self.skb.skb).len as usize }
    }

    #[inline(always)]
    fn ifindex(&self) -> u32 {
        // The device the frame is on: the tunnel interface after the
        // decapsulation's redirect.
        unsafe { (*self.skb.skb).ifindex }
    }

    #[inline(always)]
    fn load(&self, off: usize, buf: *mut u8, len: usize) -> bool {
        unsafe { bpf_skb_load_bytes(self.as_ptr(), off as u32, buf.cast(), len as u32) == 0 }
    }

    /// Direct packet access from the linear part, the helper past it.
    #[inline(always)]
    fn bytes<const N: usize>(&self, off: usize) -> Option<[u8; N]> {
        direct(self.data(), self.data_end(), off).or_else(|| {
            let mut b = [0u8; N];
            // The trait's load: TcContext has an inherent one of that name.
            Frame::load(self, off, b.as_mut_ptr(), N).then_some(b)
        })
    }
}

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
    match vrrp(&ctx) {
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
    let Some(plain) = partial_sum(ctx, voff, voff + len) else {
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
    let src = [ip[12], ip[13], ip[14], ip[15]];
    if let Some(seen) = GREHA_VRRP_SEEN.get_ptr_mut(ctl.slot) {
        // The time last: a reader that sees it unchanged around its read of
        // the other fields has a consistent record.
        unsafe {
            core::ptr::write_volatile(&raw mut (*seen).src, src);
            core::ptr::write_volatile(&raw mut (*seen).priority, priority);
            core::ptr::write_volatile(&raw mut (*seen).interval_cs, interval_cs);
            core::ptr::write_volatile(&raw mut (*seen).last_ns, bpf_ktime_get_ns());
        }
    }
    // A backup keeps following a master that has not changed, unless it
    // preempts it now: that advert is for the daemon.
    let steady = ctl.fastpath != 0
        && ctl.state == VRRP_STATE_BACKUP
        && priority != 0
        && src == ctl.master_ip
        && priority == ctl.master_priority
        && interval_cs == ctl.master_interval_cs
        && count == ctl.vip_count as usize
        && (ctl.preempt == 0 || priority >= ctl.priority);
    if steady {
        s.absorbed += 1;
        Verdict::Drop
    } else {
        s.to_daemon += 1;
        Verdict::Pass
    }
}

#[inline(always)]
fn fold(mut sum: u64) -> u16 {
    for _ in 0..4 {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    sum as u16
}

/// The ones' complement sum (unfolded) of the frame's bytes `start..end`,
/// chunk by chunk with bpf_csum_diff.
#[inline(always)]
fn partial_sum<F: Frame>(ctx: &F, start: usize, end: usize) -> Option<u64> {
    let buf = GREHA_VRRP_SCRATCH.get_ptr_mut(0)?;
    let mut sum: i64 = 0;
    let mut off = start;
    for _ in 0..MAX_VRRP_LEN / CHUNK {
        if off + CHUNK > end {
            break;
        }
        if !ctx.load(off, buf.cast(), CHUNK) {
            return None;
        }
        sum = unsafe {
            bpf_csum_diff(
                core::ptr::null_mut(),
                0,
                buf.cast(),
                CHUNK as u32,
                sum as u32,
            )
        };
        if sum < 0 {
            return None;
        }
        off += CHUNK;
    }
    // Opaque to LLVM, so the bounds below stay for the verifier.
    let tail = core::hint::black_box(end.checked_sub(off)?);
    if tail >= CHUNK {
        return None;
    }
    if tail > 0 {
        if !ctx.load(off, buf.cast(), tail) {
            return None;
        }
        let bytes = buf.cast::<u8>();
        for k in 0..3 {
            unsafe { core::ptr::write_volatile(bytes.add(tail + k), 0) };
        }
        let words = ((tail + 3) & !3) as u32;
        sum = unsafe { bpf_csum_diff(core::ptr::null_mut(), 0, buf.cast(), words, sum as u32) };
        if sum < 0 {
            return None;
        }
    }
    // A 32-bit partial sum in the CPU's byte order: fold it and compare with
    // all ones, which reads the same in either order.
    Some((sum as u64) & 0xffff_ffff)
}
