//! greha's eBPF programs. Each program has a module; the maps they share with
//! userspace are declared there, with types from `greha-common`.
//!
//! Only the BPF target builds the real object. On the host this is an
//! ordinary std binary, so that `cargo clippy --workspace --all-targets` lints
//! the programs without a no_std panic runtime for the host.
#![cfg_attr(target_arch = "bpf", no_std)]
#![cfg_attr(target_arch = "bpf", no_main)]

mod count;
mod fragment;
mod frame;
mod gre;
mod nop;
mod too_big;
mod vrrp;
mod xdp;

#[cfg(target_arch = "bpf")]
#[panic_handler]
fn panic(_info: &core::panic::PanicInfo) -> ! {
    // The verifier rejects any reachable panic, so this is never executed.
    loop {}
}

#[cfg(not(target_arch = "bpf"))]
fn main() {
    eprintln!("greha-ebpf is a BPF object; build it with `cargo build -p greha`");
}

// GPL-compatible so the programs may call GPL-only helpers
// (bpf_redirect_neigh, bpf_fib_lookup, ...).
#[unsafe(link_section = "license")]
#[unsafe(no_mangle)]
static LICENSE: [u8; 13] = *b"Dual MIT/GPL\0";
