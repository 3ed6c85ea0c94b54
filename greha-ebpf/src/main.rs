//! greha's eBPF programs. Each program has a module; the maps they share with
//! userspace are declared here, with types from `greha-common`.
#![no_std]
#![no_main]

mod count;

#[cfg(not(test))]
#[panic_handler]
fn panic(_info: &core::panic::PanicInfo) -> ! {
    // The verifier rejects any reachable panic, so this is never executed.
    loop {}
}

// GPL-compatible so the programs may call GPL-only helpers
// (bpf_redirect_neigh, bpf_fib_lookup, ...).
#[unsafe(link_section = "license")]
#[unsafe(no_mangle)]
static LICENSE: [u8; 13] = *b"Dual MIT/GPL\0";
