//! IPv6 Neighbor Discovery's unsolicited Neighbor Advertisement (RFC 4861
//! §7.2.6): the one writer and reader of the frame that announces an IPv6
//! VIP, the counterpart of a gratuitous ARP.
use std::net::Ipv6Addr;

use crate::vrrp::packet::{fold, ones_complement_sum};

/// All-nodes, ff02::1, and its Ethernet multicast address.
const ALL_NODES: Ipv6Addr = Ipv6Addr::new(0xff02, 0, 0, 0, 0, 0, 0, 1);
pub const ALL_NODES_MAC: [u8; 6] = [0x33, 0x33, 0, 0, 0, 1];
pub const ETH_P_IPV6: u16 = 0x86dd;
const IPPROTO_ICMPV6: u8 = 58;
const NEIGHBOR_ADVERT: u8 = 136;
/// The flags word's Override bit: receivers replace a cached MAC.
const OVERRIDE: u8 = 0x20;
/// The Target Link-Layer Address option.
const TARGET_LL_ADDR: u8 = 2;
const FRAME_LEN: usize = 14 + 40 + 32;

/// An unsolicited Neighbor Advertisement for `vip` at `mac`, as keepalived
/// sends it: from the VIP to all nodes, hop limit 255, Override set (not
/// Solicited, not Router), with the target link-layer address option.
pub fn unsolicited_na(mac: [u8; 6], vip: Ipv6Addr) -> [u8; FRAME_LEN] {
    let mut f = [0u8; FRAME_LEN];
    f[0..6].copy_from_slice(&ALL_NODES_MAC);
    f[6..12].copy_from_slice(&mac);
    f[12..14].copy_from_slice(&ETH_P_IPV6.to_be_bytes());
    let ip = &mut f[14..54];
    ip[0] = 0x60;
    ip[4..6].copy_from_slice(&32u16.to_be_bytes());
    ip[6] = IPPROTO_ICMPV6;
    ip[7] = 255;
    ip[8..24].copy_from_slice(&vip.octets());
    ip[24..40].copy_from_slice(&ALL_NODES.octets());
    let icmp = &mut f[54..];
    icmp[0] = NEIGHBOR_ADVERT;
    icmp[4] = OVERRIDE;
    icmp[8..24].copy_from_slice(&vip.octets());
    icmp[24] = TARGET_LL_ADDR;
    icmp[25] = 1;
    icmp[26..32].copy_from_slice(&mac);
    let sum = !fold(ones_complement_sum(
        pseudo_header(vip, ALL_NODES, 32),
        &f[54..],
    ));
    f[56..58].copy_from_slice(&sum.to_be_bytes());
    f
}

fn pseudo_header(src: Ipv6Addr, dst: Ipv6Addr, len: u32) -> u32 {
    let mut ph = [0u8; 40];
    ph[0..16].copy_from_slice(&src.octets());
    ph[16..32].copy_from_slice(&dst.octets());
    ph[32..36].copy_from_slice(&len.to_be_bytes());
    ph[39] = IPPROTO_ICMPV6;
    ones_complement_sum(0, &ph)
}

/// The announcer of a Neighbor Advertisement frame (Ethernet header
/// included): the sender's MAC and the target it advertises; None if the
/// frame is not one with a valid checksum.
pub fn advertiser(frame: &[u8]) -> Option<([u8; 6], Ipv6Addr)> {
    let ip = frame.get(14..54)?;
    if frame[12..14] != ETH_P_IPV6.to_be_bytes() || ip[0] >> 4 != 6 || ip[6] != IPPROTO_ICMPV6 {
        return None;
    }
    let len = usize::from(u16::from_be_bytes([ip[4], ip[5]]));
    let icmp = frame.get(54..54 + len)?;
    if len < 24 || icmp[0] != NEIGHBOR_ADVERT {
        return None;
    }
    let src = Ipv6Addr::from(<[u8; 16]>::try_from(&ip[8..24]).ok()?);
    let dst = Ipv6Addr::from(<[u8; 16]>::try_from(&ip[24..40]).ok()?);
    if fold(ones_complement_sum(
        pseudo_header(src, dst, len as u32),
        icmp,
    )) != 0xffff
    {
        return None;
    }
    let mac: [u8; 6] = frame[6..12].try_into().ok()?;
    let target = Ipv6Addr::from(<[u8; 16]>::try_from(&icmp[8..24]).ok()?);
    Some((mac, target))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// keepalived 2.2.7's NA for 2001:db8::10 as captured (tcpdump -e -x),
    /// the Ethernet header included.
    #[test]
    fn matches_keepalived_on_the_wire() {
        let mac = [0xaa, 0xe0, 0x38, 0xce, 0xa4, 0xff];
        let vip: Ipv6Addr = "2001:db8::10".parse().unwrap();
        let mut want = vec![0x33, 0x33, 0, 0, 0, 1];
        want.extend_from_slice(&mac);
        want.extend_from_slice(&[0x86, 0xdd]);
        for word in [
            0x6000_0000u32,
            0x0020_3aff,
            0x2001_0db8,
            0,
            0,
            0x10,
            0xff02_0000,
            0,
            0,
            1,
            0x8800_725f,
            0x2000_0000,
            0x2001_0db8,
            0,
            0,
            0x10,
        ] {
            want.extend_from_slice(&word.to_be_bytes());
        }
        want.extend_from_slice(&[2, 1]);
        want.extend_from_slice(&mac);
        let f = unsolicited_na(mac, vip);
        assert_eq!(&f[..], &want[..]);
        assert_eq!(advertiser(&f), Some((mac, vip)));
        let mut bad = f;
        bad[60] ^= 1;
        assert_eq!(advertiser(&bad), None, "a bad checksum is no advert");
        assert_eq!(advertiser(&f[..70]), None);
    }
}
