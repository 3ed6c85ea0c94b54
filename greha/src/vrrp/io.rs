//! VRRP on the wire: a raw IP protocol 112 socket per interface and
//! family, and gratuitous ARP for the virtual addresses. Thin on purpose:
//! what a packet means is the engine's business.
use std::{
    io,
    mem::MaybeUninit,
    net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddrV4, SocketAddrV6},
};

use anyhow::{Context as _, Result};
use socket2::{Domain, InterfaceIndexOrAddress, Protocol, SockAddr, Socket, Type};
use tokio::io::unix::AsyncFd;

use super::packet::{IPPROTO_VRRP, MULTICAST, MULTICAST6};

/// A received VRRP message with what the IP header said about it.
pub struct Received {
    pub src: IpAddr,
    pub dst: IpAddr,
    /// The TTL, or the IPv6 hop limit.
    pub ttl: u8,
    pub payload: Vec<u8>,
}

/// The VRRP socket of one interface and family: joined to 224.0.0.18 or
/// ff02::12 there, sending with TTL (hop limit) 255 from the interface's
/// primary (IPv6: link-local) address.
pub struct VrrpSocket {
    fd: AsyncFd<Socket>,
    /// IPv6 sends from its own socket, bound to the source: bound, the
    /// receiving one would hear only packets sent to that address, and
    /// unbound the kernel would pick the source (which the checksum
    /// covers) on its own.
    tx: Option<Socket>,
    /// Where link-scope destinations (ff02::12, fe80::/10) are.
    ifindex: u32,
}

/// Lets root's socket queue a burst: until the backups follow their
/// masters, every instance's adverts reach the daemon (255 instances at
/// 10 ms are 25,500 a second). SO_RCVBUFFORCE lifts rmem_max for root.
fn big_receive_buffer(s: &Socket) {
    use std::os::fd::AsRawFd as _;
    let size: libc::c_int = 8 << 20;
    // SAFETY: setsockopt on our own socket with an int option.
    unsafe {
        libc::setsockopt(
            s.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_RCVBUFFORCE,
            (&size as *const libc::c_int).cast(),
            size_of::<libc::c_int>() as u32,
        );
    }
}

fn raw_socket(domain: Domain) -> Result<Socket> {
    Socket::new(
        domain,
        Type::RAW,
        Some(Protocol::from(i32::from(IPPROTO_VRRP))),
    )
    .context("opening a raw VRRP socket (needs CAP_NET_RAW)")
}

/// `addr` as a socket address, with the interface as the scope of a
/// link-scope IPv6 one.
fn sockaddr(addr: IpAddr, ifindex: u32) -> SockAddr {
    match addr {
        IpAddr::V4(a) => SockAddr::from(SocketAddrV4::new(a, 0)),
        IpAddr::V6(a) => {
            // ff02::/16 is link-scope multicast.
            let link_scope = a.is_unicast_link_local() || a.segments()[0] == 0xff02;
            let scope = if link_scope { ifindex } else { 0 };
            SockAddr::from(SocketAddrV6::new(a, 0, 0, scope))
        }
    }
}

/// A raw IPv6 VRRP socket sending from `src` on `iface` with hop limit
/// 255, never read.
fn ipv6_sender(iface: &str, ifindex: u32, src: Ipv6Addr) -> Result<Socket> {
    let s = raw_socket(Domain::IPV6)?;
    s.bind_device(Some(iface.as_bytes()))?;
    s.bind(&sockaddr(src.into(), ifindex))
        .with_context(|| format!("binding the VRRP socket to {src}%{iface}"))?;
    s.set_multicast_if_v6(ifindex)?;
    s.set_multicast_hops_v6(255)?;
    s.set_unicast_hops_v6(255)?;
    s.set_multicast_loop_v6(false)?;
    s.set_recv_buffer_size(1)?;
    s.set_nonblocking(true)?;
    Ok(s)
}

impl VrrpSocket {
    /// The shared socket of `iface` in `primary`'s family.
    pub fn open(iface: &str, ifindex: u32, primary: IpAddr) -> Result<Self> {
        match primary {
            IpAddr::V4(primary) => Self::open_v4(iface, ifindex, primary),
            IpAddr::V6(primary) => Self::open_v6(iface, ifindex, primary),
        }
    }

    fn open_v4(iface: &str, ifindex: u32, primary: Ipv4Addr) -> Result<Self> {
        let s = raw_socket(Domain::IPV4)?;
        s.bind_device(Some(iface.as_bytes()))
            .with_context(|| format!("binding the VRRP socket to {iface}"))?;
        // The source of what we send: the interface's primary address, out
        // of this interface (by index: a virtual MAC interface has not
        // the address, and the kernel refuses a multicast interface by
        // address other than the bound device). Not bind(): a raw socket
        // bound to an address receives only packets sent to it, and
        // adverts go to 224.0.0.18.
        set_multicast_if_v4(&s, primary, ifindex)
            .with_context(|| format!("sending multicast from {primary} on {iface}"))?;
        s.set_multicast_ttl_v4(255)?;
        s.set_ttl_v4(255)?;
        s.set_multicast_loop_v4(false)?;
        // Only the groups joined on this socket, not every one of the host.
        s.set_multicast_all_v4(false)?;
        s.join_multicast_v4_n(&MULTICAST, &InterfaceIndexOrAddress::Index(ifindex))
            .with_context(|| format!("joining {MULTICAST} on {iface}"))?;
        s.set_nonblocking(true)?;
        big_receive_buffer(&s);
        // SAFETY: the Socket owns its descriptor, which stays open and the
        // same until the AsyncFd (which owns the Socket) is dropped.
        let fd = unsafe { AsyncFd::register(s) }.map_err(io::Error::from)?;
        Ok(Self {
            fd,
            tx: None,
            ifindex,
        })
    }

    fn open_v6(iface: &str, ifindex: u32, link_local: Ipv6Addr) -> Result<Self> {
        let s = raw_socket(Domain::IPV6)?;
        s.bind_device(Some(iface.as_bytes()))
            .with_context(|| format!("binding the VRRP socket to {iface}"))?;
        s.set_multicast_all_v6(false)?;
        s.join_multicast_v6(&MULTICAST6, ifindex)
            .with_context(|| format!("joining {MULTICAST6} on {iface}"))?;
        // A raw IPv6 socket gets no IP header: the hop limit and the
        // destination come as ancillary data.
        s.set_recv_hoplimit_v6(true)?;
        set_int(&s, libc::IPPROTO_IPV6, libc::IPV6_RECVPKTINFO, 1)?;
        s.set_nonblocking(true)?;
        big_receive_buffer(&s);
        let tx = ipv6_sender(iface, ifindex, link_local)?;
        // SAFETY: as in `open_v4`.
        let fd = unsafe { AsyncFd::register(s) }.map_err(io::Error::from)?;
        Ok(Self {
            fd,
            tx: Some(tx),
            ifindex,
        })
    }

    /// A socket that sends unicast adverts from `src` on `iface`. Bound to
    /// `src` so the kernel puts it as the source; it is never read (the
    /// receiving socket hears unicast adverts too).
    pub fn open_unicast(iface: &str, ifindex: u32, src: IpAddr, ttl: u8) -> Result<Self> {
        let s = match src {
            IpAddr::V6(src) => {
                let s = ipv6_sender(iface, ifindex, src)?;
                s.set_unicast_hops_v6(u32::from(ttl))?;
                s
            }
            IpAddr::V4(src) => {
                let s = raw_socket(Domain::IPV4)?;
                s.bind_device(Some(iface.as_bytes()))?;
                s.bind(&SockAddr::from(SocketAddrV4::new(src, 0)))
                    .with_context(|| format!("binding the unicast VRRP socket to {src}"))?;
                s.set_ttl_v4(u32::from(ttl))?;
                // Nothing reads it: keep what queues there small.
                s.set_recv_buffer_size(1)?;
                s.set_nonblocking(true)?;
                s
            }
        };
        // SAFETY: as in `open_v4`.
        let fd = unsafe { AsyncFd::register(s) }.map_err(io::Error::from)?;
        Ok(Self {
            fd,
            tx: None,
            ifindex,
        })
    }

    fn sender(&self) -> &Socket {
        self.tx.as_ref().unwrap_or(self.fd.get_ref())
    }

    /// Sends every message in one sendmmsg(2) where the kernel takes them
    /// all (the adverts of many instances due at the same tick).
    pub fn send_batch(&self, msgs: &[Datagram]) -> io::Result<()> {
        use std::os::fd::AsRawFd as _;
        let addrs: Vec<SockAddr> = msgs
            .iter()
            .map(|(_, dst)| sockaddr(*dst, self.ifindex))
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
            .zip(addrs.iter())
            .map(|(iov, addr)| {
                // SAFETY: msghdr is plain data; the pointers set below
                // outlive the call (the kernel only reads the address).
                let mut h: libc::mmsghdr = unsafe { std::mem::zeroed() };
                h.msg_hdr.msg_name = addr.as_ptr() as *mut libc::c_void;
                h.msg_hdr.msg_namelen = addr.len();
                h.msg_hdr.msg_iov = iov;
                h.msg_hdr.msg_iovlen = 1;
                h
            })
            .collect();
        let fd = self.sender().as_raw_fd();
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

    pub fn send(&self, msg: &[u8], dst: IpAddr) -> io::Result<()> {
        self.sender().send_to(msg, &sockaddr(dst, self.ifindex))?;
        Ok(())
    }

    /// The next VRRP packet: a raw IPv4 socket delivers it with its IP
    /// header, whose TTL the receive checks need; a raw IPv6 one gives the
    /// hop limit and destination as ancillary data.
    pub async fn recv(&self) -> io::Result<Received> {
        loop {
            let mut guard = self.fd.readable().await?;
            let got = guard.try_io(|fd| {
                if self.tx.is_some() {
                    recv_v6(fd.get_ref())
                } else {
                    let mut buf = [MaybeUninit::<u8>::uninit(); 2048];
                    let n = fd.get_ref().recv(&mut buf)?;
                    // SAFETY: recv initialized the first n bytes.
                    let data: Vec<u8> = buf[..n]
                        .iter()
                        .map(|b| unsafe { b.assume_init() })
                        .collect();
                    Ok(parse_ip(&data))
                }
            });
            match got {
                Ok(Ok(Some(r))) => return Ok(r),
                Ok(Ok(None)) => continue,
                Ok(Err(e)) => return Err(e),
                Err(_would_block) => continue,
            }
        }
    }
}

/// IP_MULTICAST_IF by interface index, with `src` as the source.
fn set_multicast_if_v4(s: &Socket, src: Ipv4Addr, ifindex: u32) -> io::Result<()> {
    use std::os::fd::AsRawFd as _;
    let m = libc::ip_mreqn {
        imr_multiaddr: libc::in_addr { s_addr: 0 },
        imr_address: libc::in_addr {
            s_addr: u32::from_ne_bytes(src.octets()),
        },
        imr_ifindex: ifindex as libc::c_int,
    };
    // SAFETY: setsockopt on our own socket with an ip_mreqn.
    let rc = unsafe {
        libc::setsockopt(
            s.as_raw_fd(),
            libc::IPPROTO_IP,
            libc::IP_MULTICAST_IF,
            (&m as *const libc::ip_mreqn).cast(),
            size_of::<libc::ip_mreqn>() as u32,
        )
    };
    if rc < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

fn set_int(s: &Socket, level: libc::c_int, name: libc::c_int, v: libc::c_int) -> io::Result<()> {
    use std::os::fd::AsRawFd as _;
    // SAFETY: setsockopt on our own socket with an int option.
    let rc = unsafe {
        libc::setsockopt(
            s.as_raw_fd(),
            level,
            name,
            (&v as *const libc::c_int).cast(),
            size_of::<libc::c_int>() as u32,
        )
    };
    if rc < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// One datagram from a raw IPv6 socket, with the source from its address,
/// the destination and hop limit from the ancillary data. None when the
/// kernel left either out (it does not, with the options set).
fn recv_v6(s: &Socket) -> io::Result<Option<Received>> {
    use nix::sys::socket::{ControlMessageOwned, MsgFlags, SockaddrIn6, recvmsg};
    use std::os::fd::AsRawFd as _;
    let mut buf = [0u8; 4096];
    let mut iov = [io::IoSliceMut::new(&mut buf)];
    let mut cmsg = nix::cmsg_space!(libc::in6_pktinfo, libc::c_int);
    let msg = recvmsg::<SockaddrIn6>(
        s.as_raw_fd(),
        &mut iov,
        Some(&mut cmsg),
        MsgFlags::MSG_DONTWAIT,
    )
    .map_err(io::Error::from)?;
    let (mut dst, mut hops) = (None, None);
    for c in msg.cmsgs().map_err(io::Error::from)? {
        match c {
            ControlMessageOwned::Ipv6PacketInfo(info) => {
                dst = Some(Ipv6Addr::from(info.ipi6_addr.s6_addr));
            }
            ControlMessageOwned::Ipv6HopLimit(h) => hops = u8::try_from(h).ok(),
            _ => {}
        }
    }
    let (Some(src), Some(dst), Some(ttl)) = (msg.address.map(|a| a.ip()), dst, hops) else {
        return Ok(None);
    };
    let n = msg.bytes;
    Ok(Some(Received {
        src: src.into(),
        dst: dst.into(),
        ttl,
        payload: buf[..n].to_vec(),
    }))
}

/// An IPv4 datagram as a raw IPv4 socket gives it.
fn parse_ip(d: &[u8]) -> Option<Received> {
    let ihl = usize::from(d.first()? & 0x0f) * 4;
    let tot = usize::from(u16::from_be_bytes([*d.get(2)?, *d.get(3)?]));
    if ihl < 20 || tot < ihl || d.len() < tot {
        return None;
    }
    Some(Received {
        ttl: d[8],
        src: Ipv4Addr::new(d[12], d[13], d[14], d[15]).into(),
        dst: Ipv4Addr::new(d[16], d[17], d[18], d[19]).into(),
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
    targets: Vec<(u32, [u8; 6], IpAddr)>,
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

/// One round of gratuitous ARPs (IPv6: unsolicited Neighbor
/// Advertisements): `repeat` for each target.
fn send_round(
    arp: &crate::arp::ArpSender,
    instance: &str,
    targets: &[(u32, [u8; 6], IpAddr)],
    repeat: u32,
) {
    for _ in 0..repeat {
        for (ifindex, mac, vip) in targets {
            let sent = match vip {
                IpAddr::V4(vip) => arp.send(*ifindex, *mac, *vip),
                IpAddr::V6(vip) => arp.send_na(*ifindex, *mac, *vip),
            };
            if let Err(e) = sent {
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
pub type Datagram = (Vec<u8>, IpAddr);

/// Adverts queued at one tick, grouped by outlet in the order the outlets
/// first appear: one sendmmsg each.
pub fn by_outlet(out: Vec<(Outlet, Vec<u8>, IpAddr)>) -> Vec<(Outlet, Vec<Datagram>)> {
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
        let d = IpAddr::from([224, 0, 0, 18]);
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
