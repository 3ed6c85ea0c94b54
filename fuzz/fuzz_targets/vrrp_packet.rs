//! The VRRP codec on arbitrary bytes: no panic, and what parses re-encodes
//! to the same advertisement (`greha::vrrp::packet::round_trip`).
#![no_main]

use std::net::Ipv4Addr;

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let src = Ipv4Addr::new(192, 0, 2, 1);
    greha::vrrp::packet::round_trip(data, src, greha::vrrp::packet::MULTICAST);
});
