//! ARP requests: the one writer of ARP frames, for the gratuitous ones
//! that announce a VIP and the ones that resolve a tunnel's next hop; and
//! the packet socket that also sends IPv6 VIPs' Neighbor Advertisements
//! (written by `nd`).
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

    /// Announces IPv6 `vip` on interface `ifindex` (MAC `mac`): an
    /// unsolicited Neighbor Advertisement to all nodes, Override set.
    pub fn send_na(&self, ifindex: u32, mac: [u8; 6], vip: std::net::Ipv6Addr) -> Result<()> {
        let f = crate::nd::unsolicited_na(mac, vip);
        self.send_raw(ifindex, crate::nd::ALL_NODES_MAC, crate::nd::ETH_P_IPV6, &f)
            .with_context(|| format!("sending a neighbor advertisement for {vip}"))
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
        const ETH_P_ARP: u16 = 0x0806;
        let f = frame(mac, sender, target_mac, target);
        self.send_raw(ifindex, [0xff; 6], ETH_P_ARP, &f)
    }

    /// Sends frame `f` (Ethernet header included) to `dst` on `ifindex`.
    fn send_raw(&self, ifindex: u32, dst: [u8; 6], ethertype: u16, f: &[u8]) -> io::Result<()> {
        use std::os::fd::AsRawFd as _;
        // SAFETY: sendto(2) on our socket with a sockaddr_ll built here.
        let rc = unsafe {
            let mut addr: libc::sockaddr_ll = std::mem::zeroed();
            addr.sll_family = libc::AF_PACKET as u16;
            addr.sll_protocol = ethertype.to_be();
            addr.sll_ifindex = ifindex as i32;
            addr.sll_halen = 6;
            addr.sll_addr[..6].copy_from_slice(&dst);
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

/// A broadcast ARP request frame from `sender` at `mac` for `target`.
fn frame(mac: [u8; 6], sender: Ipv4Addr, target_mac: [u8; 6], target: Ipv4Addr) -> Vec<u8> {
    let mut f = Vec::with_capacity(42);
    f.extend_from_slice(&[0xff; 6]);
    f.extend_from_slice(&mac);
    f.extend_from_slice(&[0x08, 0x06]);
    f.extend_from_slice(&[0, 1, 0x08, 0, 6, 4, 0, 1]);
    f.extend_from_slice(&mac);
    f.extend_from_slice(&sender.octets());
    f.extend_from_slice(&target_mac);
    f.extend_from_slice(&target.octets());
    f
}

/// The sender of an ARP frame (Ethernet header included): its MAC and
/// IPv4 address; None if the frame is not IPv4-over-Ethernet ARP.
pub fn sender(frame: &[u8]) -> Option<([u8; 6], Ipv4Addr)> {
    let arp = frame.get(14..42)?;
    if frame[12..14] != [0x08, 0x06] || arp[..6] != [0, 1, 0x08, 0, 6, 4] {
        return None;
    }
    let mac: [u8; 6] = arp[8..14].try_into().ok()?;
    let ip: [u8; 4] = arp[14..18].try_into().ok()?;
    Some((mac, Ipv4Addr::from(ip)))
}

/// Watches for another host announcing one of `vips` (interface MAC,
/// address): an ARP frame from that address, or a Neighbor Advertisement
/// for it, from another MAC, which is a new master's announcement during a
/// handover. Calls `seen` once and returns; or returns when `stop` is set.
/// Runs on its own thread.
pub fn watch_announcements(
    vips: Vec<([u8; 6], std::net::IpAddr)>,
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
    seen: impl FnOnce() + Send + 'static,
) -> Result<std::thread::JoinHandle<()>> {
    use std::{net::IpAddr, os::fd::AsRawFd as _};
    let open = |proto: u16| {
        socket2::Socket::new(
            socket2::Domain::PACKET,
            socket2::Type::RAW,
            Some(socket2::Protocol::from(i32::from(proto.to_be()))),
        )
    };
    let mut socks = Vec::new();
    if vips.iter().any(|(_, a)| a.is_ipv4()) {
        socks.push(open(libc::ETH_P_ARP as u16).context("opening a packet socket to watch ARP")?);
    }
    if vips.iter().any(|(_, a)| a.is_ipv6()) {
        socks
            .push(open(crate::nd::ETH_P_IPV6).context("opening a packet socket to watch IPv6 ND")?);
    }
    for s in &socks {
        s.set_nonblocking(true)?;
    }
    Ok(std::thread::spawn(move || {
        let mut buf = [std::mem::MaybeUninit::<u8>::uninit(); 128];
        while !stop.load(std::sync::atomic::Ordering::Relaxed) {
            let mut fds: Vec<libc::pollfd> = socks
                .iter()
                .map(|s| libc::pollfd {
                    fd: s.as_raw_fd(),
                    events: libc::POLLIN,
                    revents: 0,
                })
                .collect();
            // SAFETY: poll(2) on descriptors this thread owns; 20 ms so
            // `stop` is seen soon.
            unsafe { libc::poll(fds.as_mut_ptr(), fds.len() as libc::nfds_t, 20) };
            for s in &socks {
                while let Ok(n) = s.recv(&mut buf) {
                    // SAFETY: recv initialized the first n bytes.
                    let frame: Vec<u8> = buf[..n]
                        .iter()
                        .map(|b| unsafe { b.assume_init() })
                        .collect();
                    let from = sender(&frame)
                        .map(|(mac, ip)| (mac, IpAddr::V4(ip)))
                        .or_else(|| {
                            crate::nd::advertiser(&frame).map(|(mac, ip)| (mac, IpAddr::V6(ip)))
                        });
                    if let Some((mac, ip)) = from
                        && vips.iter().any(|&(own, vip)| vip == ip && own != mac)
                    {
                        seen();
                        return;
                    }
                }
            }
        }
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sender_of_arp_frames() {
        let mac = [2, 0, 0, 0, 0, 1];
        let vip = Ipv4Addr::new(203, 0, 113, 10);
        // What this module writes, it reads back.
        let f = frame(mac, vip, [0xff; 6], vip);
        assert_eq!(sender(&f), Some((mac, vip)));
        assert_eq!(sender(&f[..41]), None);
        let mut ip = f.clone();
        ip[12..14].copy_from_slice(&[0x08, 0x00]);
        assert_eq!(sender(&ip), None);
    }
}
