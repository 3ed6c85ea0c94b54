//! `greha_count`: counts every frame an interface receives, per ifindex.
use aya_ebpf::{
    bindings::xdp_action,
    btf_maps::PerCpuHashMap,
    macros::{btf_map, xdp},
    programs::XdpContext,
};
use greha_common::{MAX_INTERFACES, PacketCounters};

#[btf_map]
static GREHA_IF_COUNTERS: PerCpuHashMap<u32, PacketCounters, { MAX_INTERFACES as usize }> =
    PerCpuHashMap::new();

#[xdp]
pub fn greha_count(ctx: XdpContext) -> u32 {
    count(&ctx);
    xdp_action::XDP_PASS
}

/// Counts the frame against its interface.
#[inline(always)]
pub fn count(ctx: &XdpContext) {
    let ifindex = unsafe { (*ctx.ctx).ingress_ifindex };
    let len = (ctx.data_end() - ctx.data()) as u64;
    match GREHA_IF_COUNTERS.get_ptr_mut(ifindex) {
        Some(c) => unsafe {
            (*c).rx_packets += 1;
            (*c).rx_bytes += len;
        },
        None => {
            let first = PacketCounters {
                rx_packets: 1,
                rx_bytes: len,
            };
            // Losing one frame's count when the table is full is better than
            // dropping traffic; the map is sized far beyond real interface counts.
            let _ = GREHA_IF_COUNTERS.insert(ifindex, first, 0);
        }
    }
}
