//! Outer fragmentation, as the kernel's tunnels do it with `nopmtudisc`:
//! an outer IPv4 packet without DF that the path cannot carry is sent in
//! fragments (RFC 791) instead of being lost.
//!
//! The encapsulation sends such a packet into the tunnel's fragmenting
//! veth pair, whose outer end has checksum offload off: on the way
//! through, the kernel completes the checksums offload left open (a
//! fragment's could not be completed later, by a device that sees only
//! the first piece) and cuts a GSO packet into its segments. This program,
//! at the inner end's ingress, copies each packet's payload aside and
//! tail-calls `greha_gre_fragment_next`, which sends one fragment and
//! tail-calls itself for the next: the packet is made into each fragment
//! in turn (shortened, the fragment's bytes written from the copy), each
//! but the last sent as a clone (bpf_clone_redirect).
use aya_ebpf::{
    bindings::{TC_ACT_SHOT, bpf_adj_room_mode, bpf_fib_lookup},
    btf_maps::PerCpuArray,
    helpers::{
        bpf_clone_redirect, bpf_fib_lookup as fib_lookup, bpf_redirect, bpf_skb_load_bytes,
        bpf_skb_store_bytes,
    },
    macros::{btf_map, classifier},
    programs::TcContext,
};

use greha_common::TAIL_FRAGMENT_NEXT;

use crate::gre::{
    ETH_LEN, GREHA_GRE_TAILS, GREHA_TUNNEL_BY_DEV, IPV4_LEN, counters, set_ipv4_checksum, tunnel,
};

/// The most payload (GRE and the inner frame) one packet may carry to be
/// cut: a tunnel MTU of 16 KiB less its headers.
const MAX_PAYLOAD: usize = 16 * 1024;
/// The most fragments one packet is cut into (an underlay MTU of 1280 or
/// more cuts 16 KiB into 14).
const MAX_FRAGMENTS: usize = 16;
const AF_INET: u8 = 2;
const IP_MF: u16 = 0x2000;

/// The packet's payload. Twice the largest so the verifier sees every
/// copy, at an offset and of a length each under [`MAX_PAYLOAD`], stay
/// inside it.
type Payload = [u8; 2 * MAX_PAYLOAD];
#[btf_map]
static GREHA_FRAG_SCRATCH: PerCpuArray<Payload, 1> = PerCpuArray::new();

/// Where the cutting of the packet in [`GREHA_FRAG_SCRATCH`] stands:
/// tail calls run on one CPU, one after the other, so per-CPU state
/// carries from one to the next.
#[repr(C)]
struct FragState {
    /// The outer IPv4 header, rewritten for each fragment.
    header: [u8; IPV4_LEN],
    /// The tunnel's id, for its counters.
    id: u32,
    /// The interface the fragments leave through.
    out: u32,
    /// The payload offset of the next fragment.
    off: u32,
    /// Payload bytes the packet holds now.
    held: u32,
    payload: u32,
    /// Payload bytes of every fragment but the last.
    step: u32,
}
#[btf_map]
static GREHA_FRAG_STATE: PerCpuArray<FragState, 1> = PerCpuArray::new();

#[classifier]
pub fn greha_gre_fragment(ctx: TcContext) -> i32 {
    let skb = ctx.skb.skb;
    let ifindex = unsafe { (*skb).ifindex };
    let Some(id) = (unsafe { GREHA_TUNNEL_BY_DEV.get(ifindex) }).copied() else {
        return TC_ACT_SHOT;
    };
    let (Some(cfg), Some(c)) = (tunnel(id), counters(id)) else {
        return TC_ACT_SHOT;
    };
    let Ok(h) = ctx.load::<[u8; IPV4_LEN]>(ETH_LEN) else {
        c.tx_drop_error += 1;
        return TC_ACT_SHOT;
    };
    // Only what the encapsulation made: IPv4 without options or DF.
    let tot_len = u16::from_be_bytes([h[2], h[3]]) as usize;
    if h[0] != 0x45 || h[6] & 0x40 != 0 || tot_len <= IPV4_LEN {
        c.tx_drop_error += 1;
        return TC_ACT_SHOT;
    }

    let mut fib: bpf_fib_lookup = unsafe { core::mem::zeroed() };
    fib.ifindex = cfg.peer_ifindex;
    fib.family = AF_INET;
    // A length the route's MTU always takes: without one the helper
    // judges this packet, too big for the path, against it.
    fib.__bindgen_anon_1.tot_len = IPV4_LEN as u16;
    fib.__bindgen_anon_3.ipv4_src = u32::from_ne_bytes([h[12], h[13], h[14], h[15]]);
    fib.__bindgen_anon_4.ipv4_dst = u32::from_ne_bytes([h[16], h[17], h[18], h[19]]);
    let rc = unsafe { fib_lookup(skb.cast(), &mut fib, size_of::<bpf_fib_lookup>() as i32, 0) };
    if rc != 0 {
        c.tx_drop_no_next_hop += 1;
        return TC_ACT_SHOT;
    }
    let out = fib.ifindex;
    let mut eth = [0u8; ETH_LEN];
    eth[0..6].copy_from_slice(&fib.dmac);
    eth[6..12].copy_from_slice(&fib.smac);
    eth[12..14].copy_from_slice(&0x0800u16.to_be_bytes());
    if ctx.store(0, &eth, 0).is_err() {
        c.tx_drop_error += 1;
        return TC_ACT_SHOT;
    }
    let mtu = cfg.underlay_mtu as usize;
    if tot_len <= mtu {
        // A GSO packet's segment that fits.
        return unsafe { bpf_redirect(out, 0) as i32 };
    }

    // Every fragment but the last carries a multiple of 8 bytes.
    let step = (mtu - IPV4_LEN) & !7;
    let payload = tot_len - IPV4_LEN;
    if step == 0 || payload > MAX_PAYLOAD || payload > step * MAX_FRAGMENTS {
        c.tx_drop_too_big += 1;
        return TC_ACT_SHOT;
    }
    let (Some(buf), Some(state)) = (
        GREHA_FRAG_SCRATCH.get_ptr_mut(0),
        GREHA_FRAG_STATE.get_ptr_mut(0),
    ) else {
        return TC_ACT_SHOT;
    };
    let copied = unsafe {
        bpf_skb_load_bytes(
            skb.cast(),
            (ETH_LEN + IPV4_LEN) as u32,
            buf.cast(),
            bounded(payload) as u32,
        )
    };
    if copied != 0 {
        c.tx_drop_error += 1;
        return TC_ACT_SHOT;
    }
    unsafe {
        *state = FragState {
            header: h,
            id,
            out,
            off: 0,
            held: payload as u32,
            payload: payload as u32,
            step: step as u32,
        };
        GREHA_GRE_TAILS.tail_call(&ctx, TAIL_FRAGMENT_NEXT)
    };
    c.tx_drop_error += 1;
    TC_ACT_SHOT
}

/// Sends the next fragment of the packet [`GREHA_FRAG_STATE`] describes,
/// then tail-calls itself for the one after: a fragment a program, so
/// the verifier walks one and not every count of them.
#[classifier]
pub fn greha_gre_fragment_next(ctx: TcContext) -> i32 {
    let skb = ctx.skb.skb;
    let (Some(buf), Some(state)) = (
        GREHA_FRAG_SCRATCH.get_ptr_mut(0),
        GREHA_FRAG_STATE.get_ptr_mut(0),
    ) else {
        return TC_ACT_SHOT;
    };
    let st = unsafe { &mut *state };
    let Some(c) = counters(st.id) else {
        return TC_ACT_SHOT;
    };
    let (off, payload, step) = (st.off as usize, st.payload as usize, st.step as usize);
    if off >= payload || step == 0 {
        c.tx_drop_error += 1;
        return TC_ACT_SHOT;
    }
    let len = if payload - off > step {
        step
    } else {
        payload - off
    };
    let last = off + len == payload;
    let mut held = st.held as usize;
    if !shorten(&ctx, &mut held, len) {
        c.tx_drop_error += 1;
        return TC_ACT_SHOT;
    }
    let size = bounded(len);
    let stored = unsafe {
        bpf_skb_store_bytes(
            skb.cast(),
            (ETH_LEN + IPV4_LEN) as u32,
            buf.cast::<u8>().add(off & (MAX_PAYLOAD - 1)).cast(),
            size as u32,
            0,
        )
    } == 0;
    set_header(&mut st.header, off, size, !last);
    if !stored || ctx.store(ETH_LEN, &st.header, 0).is_err() {
        c.tx_drop_error += 1;
        return TC_ACT_SHOT;
    }
    c.tx_fragments += 1;
    if last {
        return unsafe { bpf_redirect(st.out, 0) as i32 };
    }
    if unsafe { bpf_clone_redirect(skb.cast(), st.out, 0) } != 0 {
        c.tx_drop_error += 1;
        return TC_ACT_SHOT;
    }
    st.off = (off + len) as u32;
    st.held = len as u32;
    unsafe { GREHA_GRE_TAILS.tail_call(&ctx, TAIL_FRAGMENT_NEXT) };
    c.tx_drop_error += 1;
    TC_ACT_SHOT
}

/// A length as the verifier can bound it: 1 to [`MAX_PAYLOAD`]. Read
/// back through memory, or LLVM, knowing the length checked already,
/// drops the mask, and 5.10's verifier cannot bound what is left.
#[inline(always)]
fn bounded(n: usize) -> usize {
    let n = unsafe { core::ptr::read_volatile(&n) };
    ((n.wrapping_sub(1)) & (MAX_PAYLOAD - 1)) + 1
}

/// Shortens the packet's payload from `held` bytes to `len`, in the
/// steps adjust_room allows (4095 bytes at most).
#[inline(always)]
fn shorten(ctx: &TcContext, held: &mut usize, len: usize) -> bool {
    const MAX_STEP: usize = 0xfff;
    let mut i = 0;
    while i < MAX_PAYLOAD / MAX_STEP + 1 && *held > len {
        let cut = if *held - len > MAX_STEP {
            MAX_STEP
        } else {
            *held - len
        };
        if ctx
            .adjust_room(-(cut as i32), bpf_adj_room_mode::BPF_ADJ_ROOM_NET, 0)
            .is_err()
        {
            return false;
        }
        *held -= cut;
        i += 1;
    }
    *held == len
}

/// The header of the fragment of `len` payload bytes at `off`, more to
/// follow or not.
#[inline(always)]
fn set_header(h: &mut [u8; IPV4_LEN], off: usize, len: usize, more: bool) {
    h[2..4].copy_from_slice(&((IPV4_LEN + len) as u16).to_be_bytes());
    let frag = ((off / 8) as u16) | if more { IP_MF } else { 0 };
    h[6..8].copy_from_slice(&frag.to_be_bytes());
    set_ipv4_checksum(h);
}
