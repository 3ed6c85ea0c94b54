//! ARP requests: the one writer of ARP frames, for the gratuitous ones
//! that announce a VIP and the ones that resolve a tunnel's next hop.
use std::{io, net::Ipv4Addr};

use anyhow::{Context as _, Result};

/// Sends ARP requests. One socket for the daemon's life: closing a
/// packet socket waits for an RCU grace period (tens of ms), which per ARP
/// stalled the event loop for seconds when hundreds of instances became
/// master at once. Protocol 0: it receives nothing.
pub struct ArpSender {
    fd: std::os::fd::OwnedFd,
}

impl ArpSender {
    pub fn open() -> Result<Self> {
        use std::os::fd::FromRawFd as _;
        // SAFETY: socket(2) with constant arguments; the fd is owned here.
        let fd = unsafe { libc::socket(libc::AF_PACKET, libc::SOCK_RAW | libc::SOCK_CLOEXEC, 0) };
        if fd < 0 {
            return Err(io::Error::last_os_error()).context("opening a packet socket for ARP");
        }
        // SAFETY: fd is a new, valid descriptor nobody else owns.
        Ok(Self {
            fd: unsafe { std::os::fd::OwnedFd::from_raw_fd(fd) },
        })
    }

    /// Announces `vip` on interface `ifindex` (MAC `mac`): a broadcast ARP
    /// request with the VIP as sender and target, which hosts and switches
    /// use to update their tables.
    pub fn send(&self, ifindex: u32, mac: [u8; 6], vip: Ipv4Addr) -> Result<()> {
        // Target hardware address all ones, as keepalived sends it.
        self.send_frame(ifindex, mac, vip, [0xff; 6], vip)
            .with_context(|| format!("sending gratuitous ARP for {vip}"))
    }

    /// A broadcast request for `target` from `sender` at `mac`: the reply
    /// fills the kernel's neighbour entry for `target`, if it has one.
    pub fn request(
        &self,
        ifindex: u32,
        mac: [u8; 6],
        sender: Ipv4Addr,
        target: Ipv4Addr,
    ) -> Result<()> {
        self.send_frame(ifindex, mac, sender, [0; 6], target)
            .with_context(|| format!("sending an ARP request for {target}"))
    }

    fn send_frame(
        &self,
        ifindex: u32,
        mac: [u8; 6],
        sender: Ipv4Addr,
        target_mac: [u8; 6],
        target: Ipv4Addr,
    ) -> io::Result<()> {
        use std::os::fd::AsRawFd as _;
        const ETH_P_ARP: u16 = 0x0806;
        let mut f = Vec::with_capacity(42);
        f.extend_from_slice(&[0xff; 6]);
        f.extend_from_slice(&mac);
        f.extend_from_slice(&ETH_P_ARP.to_be_bytes());
        f.extend_from_slice(&[0, 1, 0x08, 0, 6, 4, 0, 1]);
        f.extend_from_slice(&mac);
        f.extend_from_slice(&sender.octets());
        f.extend_from_slice(&target_mac);
        f.extend_from_slice(&target.octets());
        // SAFETY: sendto(2) on our socket with a sockaddr_ll built here.
        let rc = unsafe {
            let mut addr: libc::sockaddr_ll = std::mem::zeroed();
            addr.sll_family = libc::AF_PACKET as u16;
            addr.sll_protocol = ETH_P_ARP.to_be();
            addr.sll_ifindex = ifindex as i32;
            addr.sll_halen = 6;
            addr.sll_addr[..6].copy_from_slice(&[0xff; 6]);
            libc::sendto(
                self.fd.as_raw_fd(),
                f.as_ptr().cast(),
                f.len(),
                libc::MSG_DONTWAIT,
                (&addr as *const libc::sockaddr_ll).cast(),
                size_of::<libc::sockaddr_ll>() as u32,
            )
        };
        if rc < 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(())
    }
}
