//! `greha_xdp`: the one XDP program greha attaches to an interface, so that
//! frame counting (`--count IF`) and the VRRP fast path can share it (an
//! interface has one XDP program). GREHA_XDP_IF says, per ifindex, which
//! of them run: counting first (every frame, before any verdict), then the
//! VRRP check, whose verdict is the program's.
use aya_ebpf::{
    bindings::xdp_action,
    btf_maps::HashMap,
    macros::{btf_map, xdp},
    programs::XdpContext,
};
use greha_common::{MAX_INTERFACES, XDP_IF_COUNT, XDP_IF_VRRP};

use crate::{count::count, vrrp::xdp_vrrp};

#[btf_map]
static GREHA_XDP_IF: HashMap<u32, u32, { MAX_INTERFACES as usize }> = HashMap::new();

#[xdp]
pub fn greha_xdp(ctx: XdpContext) -> u32 {
    let ifindex = unsafe { (*ctx.ctx).ingress_ifindex };
    let flags = match unsafe { GREHA_XDP_IF.get(ifindex) } {
        Some(f) => *f,
        None => return xdp_action::XDP_PASS,
    };
    if flags & XDP_IF_COUNT != 0 {
        count(&ctx);
    }
    if flags & XDP_IF_VRRP != 0 {
        return xdp_vrrp(&ctx);
    }
    xdp_action::XDP_PASS
}
