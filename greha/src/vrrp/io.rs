//! VRRP on the wire: a raw IP protocol 112 socket per interface, and
//! gratuitous ARP for the virtual addresses. Thin on purpose: what a packet
//! means is the engine's business.
use std::{
    io,
    mem::MaybeUninit,
    net::{Ipv4Addr, SocketAddrV4},
};

use anyhow::{Context as _, Result};
use socket2::{Domain, InterfaceIndexOrAddress, Protocol, SockAddr, Socket, Type};
use tokio::io::unix::AsyncFd;

use super::packet::{IPPROTO_VRRP, MULTICAST};

/// A received VRRP message with what the IP header said about it.
pub struct Received {
    pub src: Ipv4Addr,
    pub dst: Ipv4Addr,
    pub ttl: u8,
    pub payload: Vec<u8>,
}

/// The VRRP socket of one interface: joined to 224.0.0.18 there, sending
/// with TTL 255 from the interface's primary address.
pub struct VrrpSocket {
    fd: AsyncFd<Socket>,
}

impl VrrpSocket {
    pub fn open(iface: &str, ifindex: u32, primary: Ipv4Addr) -> Result<Self> {
        let s = Socket::new(
            Domain::IPV4,
            Type::RAW,
            Some(Protocol::from(i32::from(IPPROTO_VRRP))),
        )
        .context("opening a raw VRRP socket (needs CAP_NET_RAW)")?;
        s.bind_device(Some(iface.as_bytes()))
            .with_context(|| format!("binding the VRRP socket to {iface}"))?;
        // The source of what we send: the interface's primary address.
        // Not bind(): a raw socket bound to an address receives only
        // packets sent to it, and adverts go to 224.0.0.18.
        s.set_multicast_if_v4(&primary)?;
        s.set_multicast_ttl_v4(255)?;
        s.set_ttl_v4(255)?;
        s.set_multicast_loop_v4(false)?;
        // Only the groups joined on this socket, not every one of the host.
        s.set_multicast_all_v4(false)?;
        s.join_multicast_v4_n(&MULTICAST, &InterfaceIndexOrAddress::Index(ifindex))
            .with_context(|| format!("joining {MULTICAST} on {iface}"))?;
        s.set_nonblocking(true)?;
        // Room for a burst: until the backups follow their masters, every
        // instance's adverts reach the daemon (255 instances at 10 ms are
        // 25,500 a second). SO_RCVBUFFORCE lifts rmem_max for root.
        let size: libc::c_int = 8 << 20;
        // SAFETY: setsockopt on our own socket with an int option.
        unsafe {
            use std::os::fd::AsRawFd as _;
            libc::setsockopt(
                s.as_raw_fd(),
                libc::SOL_SOCKET,
                libc::SO_RCVBUFFORCE,
                (&size as *const libc::c_int).cast(),
                size_of::<libc::c_int>() as u32,
            );
        }
        // SAFETY: the Socket owns its descriptor, which stays open and the
        // same until the AsyncFd (which owns the Socket) is dropped.
        let fd = unsafe { AsyncFd::register(s) }.map_err(io::Error::from)?;
        Ok(Self { fd })
    }

    /// A socket that sends unicast adverts from `src` on `iface`. Bound to
    /// `src` so the kernel puts it as the source; it is never read (the
    /// receiving socket hears unicast adverts too).
    pub fn open_unicast(iface: &str, src: Ipv4Addr) -> Result<Self> {
        let s = Socket::new(
            Domain::IPV4,
            Type::RAW,
            Some(Protocol::from(i32::from(IPPROTO_VRRP))),
        )
        .context("opening a raw VRRP socket (needs CAP_NET_RAW)")?;
        s.bind_device(Some(iface.as_bytes()))?;
        s.bind(&SockAddr::from(SocketAddrV4::new(src, 0)))
            .with_context(|| format!("binding the unicast VRRP socket to {src}"))?;
        s.set_ttl_v4(255)?;
        // Nothing reads it: keep what queues there small.
        s.set_recv_buffer_size(1)?;
        s.set_nonblocking(true)?;
        // SAFETY: as in `open`.
        let fd = unsafe { AsyncFd::register(s) }.map_err(io::Error::from)?;
        Ok(Self { fd })
    }

    /// Sends every message in one sendmmsg(2) where the kernel takes them
    /// all (the adverts of many instances due at the same tick).
    pub fn send_batch(&self, msgs: &[(Vec<u8>, Ipv4Addr)]) -> io::Result<()> {
        use std::os::fd::AsRawFd as _;
        let mut addrs: Vec<libc::sockaddr_in> = msgs
            .iter()
            .map(|(_, dst)| {
                // SAFETY: sockaddr_in is plain data; zero is a valid start.
                let mut a: libc::sockaddr_in = unsafe { std::mem::zeroed() };
                a.sin_family = libc::AF_INET as libc::sa_family_t;
                a.sin_addr.s_addr = u32::from_ne_bytes(dst.octets());
                a
            })
            .collect();
        let mut iovs: Vec<libc::iovec> = msgs
            .iter()
            .map(|(m, _)| libc::iovec {
                iov_base: m.as_ptr() as *mut libc::c_void,
                iov_len: m.len(),
            })
            .collect();
        let mut hdrs: Vec<libc::mmsghdr> = iovs
            .iter_mut()
            .zip(addrs.iter_mut())
            .map(|(iov, addr)| {
                // SAFETY: msghdr is plain data; the pointers set below
                // outlive the call.
                let mut h: libc::mmsghdr = unsafe { std::mem::zeroed() };
                h.msg_hdr.msg_name = (addr as *mut libc::sockaddr_in).cast();
                h.msg_hdr.msg_namelen = size_of::<libc::sockaddr_in>() as u32;
                h.msg_hdr.msg_iov = iov;
                h.msg_hdr.msg_iovlen = 1;
                h
            })
            .collect();
        let fd = self.fd.get_ref().as_raw_fd();
        let mut sent = 0;
        while sent < hdrs.len() {
            // SAFETY: hdrs[sent..] points at live iovecs and addresses.
            let n = unsafe {
                libc::sendmmsg(fd, hdrs[sent..].as_mut_ptr(), (hdrs.len() - sent) as u32, 0)
            };
            if n < 0 {
                return Err(io::Error::last_os_error());
            }
            if n == 0 {
                break;
            }
            sent += n as usize;
        }
        Ok(())
    }

    pub fn send(&self, msg: &[u8], dst: Ipv4Addr) -> io::Result<()> {
        self.fd
            .get_ref()
            .send_to(msg, &SockAddr::from(SocketAddrV4::new(dst, 0)))?;
        Ok(())
    }

    /// The next VRRP packet; a raw IPv4 socket delivers it with its IP
    /// header, whose TTL the receive checks need.
    pub async fn recv(&self) -> io::Result<Received> {
        loop {
            let mut guard = self.fd.readable().await?;
            let mut buf = [MaybeUninit::<u8>::uninit(); 2048];
            match guard.try_io(|fd| fd.get_ref().recv(&mut buf)) {
                Ok(Ok(n)) => {
                    // SAFETY: recv initialized the first n bytes.
                    let data: Vec<u8> = buf[..n]
                        .iter()
                        .map(|b| unsafe { b.assume_init() })
                        .collect();
                    if let Some(r) = parse_ip(&data) {
                        return Ok(r);
                    }
                }
                Ok(Err(e)) => return Err(e),
                Err(_would_block) => continue,
            }
        }
    }
}

fn parse_ip(d: &[u8]) -> Option<Received> {
    let ihl = usize::from(d.first()? & 0x0f) * 4;
    let tot = usize::from(u16::from_be_bytes([*d.get(2)?, *d.get(3)?]));
    if ihl < 20 || tot < ihl || d.len() < tot {
        return None;
    }
    Some(Received {
        ttl: d[8],
        src: Ipv4Addr::new(d[12], d[13], d[14], d[15]),
        dst: Ipv4Addr::new(d[16], d[17], d[18], d[19]),
        payload: d[ihl..tot].to_vec(),
    })
}

/// When gratuitous ARPs go: `repeat` per VIP at once, again after
/// `delay` (none when it and `refresh` are zero), then every `refresh`
/// unless it is zero.
pub struct Rounds {
    pub repeat: u32,
    pub delay: std::time::Duration,
    pub refresh: std::time::Duration,
}

/// Announces `targets` (ifindex, MAC, VIP) in `rounds`: the first now, the
/// rest off the loop; abort the task to stop them (on leaving Master).
pub fn announce(
    arp: std::sync::Arc<crate::arp::ArpSender>,
    instance: String,
    targets: Vec<(u32, [u8; 6], Ipv4Addr)>,
    rounds: Rounds,
) -> tokio::task::JoinHandle<()> {
    let Rounds {
        repeat,
        delay,
        refresh,
    } = rounds;
    // The first round goes now, from the caller's step: the clients
    // learn the new MAC before anything else this step does (a spawned
    // task would wait for the step to end), and a master handing over
    // (make before break) hears this router's advert after it.
    send_round(&arp, &instance, &targets, repeat);
    tokio::spawn(async move {
        for round in 1.. {
            match round {
                1 if delay.is_zero() && refresh.is_zero() => break,
                1 => tokio::time::sleep(delay).await,
                _ if refresh.is_zero() => break,
                _ => tokio::time::sleep(refresh).await,
            }
            send_round(&arp, &instance, &targets, repeat);
        }
    })
}

/// One round of gratuitous ARPs: `repeat` for each target.
fn send_round(
    arp: &crate::arp::ArpSender,
    instance: &str,
    targets: &[(u32, [u8; 6], Ipv4Addr)],
    repeat: u32,
) {
    for _ in 0..repeat {
        for (ifindex, mac, vip) in targets {
            if let Err(e) = arp.send(*ifindex, *mac, *vip) {
                tracing::warn!(instance = %instance, "{e:#}");
            }
        }
    }
}

/// Which socket an advert leaves by: an interface's shared one (by index),
/// or an instance's unicast one (by instance id).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Outlet {
    Shared(usize),
    Unicast(u64),
}

/// An advert's bytes and destination.
pub type Datagram = (Vec<u8>, Ipv4Addr);

/// Adverts queued at one tick, grouped by outlet in the order the outlets
/// first appear: one sendmmsg each.
pub fn by_outlet(out: Vec<(Outlet, Vec<u8>, Ipv4Addr)>) -> Vec<(Outlet, Vec<Datagram>)> {
    let mut groups: Vec<(Outlet, Vec<Datagram>)> = Vec::new();
    for (outlet, bytes, dst) in out {
        match groups.iter_mut().find(|(o, _)| *o == outlet) {
            Some((_, batch)) => batch.push((bytes, dst)),
            None => groups.push((outlet, vec![(bytes, dst)])),
        }
    }
    groups
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn adverts_group_by_outlet_in_order() {
        let d = Ipv4Addr::new(224, 0, 0, 18);
        let out = vec![
            (Outlet::Shared(1), vec![1], d),
            (Outlet::Unicast(7), vec![2], d),
            (Outlet::Shared(1), vec![3], d),
            (Outlet::Shared(0), vec![4], d),
        ];
        assert_eq!(
            by_outlet(out),
            vec![
                (Outlet::Shared(1), vec![(vec![1], d), (vec![3], d)]),
                (Outlet::Unicast(7), vec![(vec![2], d)]),
                (Outlet::Shared(0), vec![(vec![4], d)]),
            ]
        );
    }
}
