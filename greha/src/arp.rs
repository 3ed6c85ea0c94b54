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
        let f = frame(mac, sender, target_mac, target);
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
/// address): an ARP frame from that address but another MAC, which is a
/// new master's gratuitous ARP during a handover. Calls `seen` once and
/// returns; or returns when `stop` is set. Runs on its own thread.
pub fn watch_announcements(
    vips: Vec<([u8; 6], Ipv4Addr)>,
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
    seen: impl FnOnce() + Send + 'static,
) -> Result<std::thread::JoinHandle<()>> {
    let proto = (libc::ETH_P_ARP as u16).to_be();
    let sock = socket2::Socket::new(
        socket2::Domain::PACKET,
        socket2::Type::RAW,
        Some(socket2::Protocol::from(i32::from(proto))),
    )
    .context("opening a packet socket to watch ARP")?;
    sock.set_read_timeout(Some(std::time::Duration::from_millis(20)))?;
    Ok(std::thread::spawn(move || {
        let mut buf = [std::mem::MaybeUninit::<u8>::uninit(); 64];
        while !stop.load(std::sync::atomic::Ordering::Relaxed) {
            let Ok(n) = sock.recv(&mut buf) else { continue };
            // SAFETY: recv initialized the first n bytes.
            let frame: Vec<u8> = buf[..n]
                .iter()
                .map(|b| unsafe { b.assume_init() })
                .collect();
            if let Some((mac, ip)) = sender(&frame)
                && vips.iter().any(|&(own, vip)| vip == ip && own != mac)
            {
                seen();
                return;
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
