//! The one ethtool setting greha makes: checksum offload off on an
//! interface of its own (a `nopmtudisc` tunnel's fragmenting pair), so
//! that the kernel completes checksums before a packet leaves it.
use std::{io, mem::zeroed, os::fd::AsRawFd as _};

use anyhow::{Context as _, Result, bail};

/// ETHTOOL_STXCSUM from linux/ethtool.h: set transmit checksumming.
const ETHTOOL_STXCSUM: u32 = 0x17;

#[repr(C)]
struct EthtoolValue {
    cmd: u32,
    data: u32,
}

/// Turns transmit checksum offload off on `ifname` (and with it TSO: the
/// kernel then also cuts GSO packets before they leave it).
pub fn tx_checksum_off(ifname: &str) -> Result<()> {
    let socket = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::DGRAM, None)
        .context("opening a socket for ethtool")?;
    let mut value = EthtoolValue {
        cmd: ETHTOOL_STXCSUM,
        data: 0,
    };
    // SAFETY: a zeroed ifreq is valid; the name fits (checked) and the
    // ioctl reads the ethtool_value ifr_data points to, which outlives it.
    unsafe {
        let mut req: libc::ifreq = zeroed();
        if ifname.len() >= libc::IFNAMSIZ {
            bail!("interface name {ifname} is too long");
        }
        for (d, s) in req.ifr_name.iter_mut().zip(ifname.bytes()) {
            *d = s as libc::c_char;
        }
        req.ifr_ifru.ifru_data = (&raw mut value).cast();
        if libc::ioctl(socket.as_raw_fd(), libc::SIOCETHTOOL, &raw mut req) != 0 {
            return Err(io::Error::last_os_error())
                .with_context(|| format!("turning checksum offload off on {ifname}"));
        }
    }
    Ok(())
}
