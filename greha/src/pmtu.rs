//! The path MTU towards each tunnel's remote, learned as the kernel's own
//! tunnels learn it: from ICMP "fragmentation needed" and ICMPv6 "packet
//! too big" about the outer packets. Without the kernel's GRE module
//! nothing on the host takes those errors, so the daemon holds a raw GRE
//! socket per family: the kernel hands such an error to raw sockets of
//! the protocol, which read it from their error queue (IP_RECVERR). The
//! learned MTU goes into the tunnel's `underlay_mtu`, by which the
//! encapsulation judges packets too big and answers their senders (see
//! greha-ebpf's `too_big`); it is forgotten after the kernel's time for a
//! learned MTU (`net.ipv4.route.mtu_expires`, 10 minutes), when a path
//! still as small reports itself again.
use std::{
    collections::HashMap,
    io,
    mem::{size_of, zeroed},
    net::{IpAddr, Ipv4Addr, Ipv6Addr},
    os::fd::AsRawFd as _,
    path::{Path, PathBuf},
    time::Duration,
};

use anyhow::{Context as _, Result};
use socket2::{Domain, Protocol, Socket, Type};
use tokio::{
    io::{Interest, unix::AsyncFd},
    task::JoinHandle,
    time::Instant,
};
use tracing::{info, warn};

use greha_common::{GRE_PROTO_IPV4, GRE_PROTO_IPV6, GRE_PROTO_TEB};

use crate::tunnel;

/// How long a learned path MTU holds (the kernel's default
/// `net.ipv4.route.mtu_expires`).
pub const EXPIRES: Duration = Duration::from_secs(600);

/// The smallest path MTU believed: the kernel's `min_pmtu` for IPv4 (552),
/// and IPv6's minimum link MTU (RFC 8200).
fn floor(remote: IpAddr) -> u32 {
    if remote.is_ipv4() { 552 } else { 1280 }
}

/// The path MTUs learned, by remote: pure, fed reports and the clock.
#[derive(Debug, Default)]
pub struct PathMtus {
    learned: HashMap<IpAddr, (u32, Instant)>,
}

impl PathMtus {
    /// The path to `remote` reported to carry `mtu` bytes: the MTU in
    /// force from now. As the kernel, a report only lowers what is known (a
    /// larger one is stale or forged) and is raised to the floor; the
    /// caller applies it every time, so that a tunnel added since to the
    /// same remote takes it too.
    pub fn reported(&mut self, remote: IpAddr, mtu: u32, now: Instant) -> u32 {
        let mtu = mtu.max(floor(remote));
        match self.learned.get(&remote) {
            Some(&(known, _)) if known <= mtu => known,
            _ => {
                self.learned.insert(remote, (mtu, now + EXPIRES));
                mtu
            }
        }
    }

    /// When the next learned MTU expires.
    pub fn next_expiry(&self) -> Option<Instant> {
        self.learned.values().map(|&(_, until)| until).min()
    }

    /// The remotes whose learned MTU expired by `now`, forgotten.
    pub fn expire(&mut self, now: Instant) -> Vec<IpAddr> {
        let gone: Vec<IpAddr> = self
            .learned
            .iter()
            .filter(|(_, (_, until))| *until <= now)
            .map(|(a, _)| *a)
            .collect();
        for a in &gone {
            self.learned.remove(a);
        }
        gone
    }
}

/// What an error-queue message reports: the path MTU to the packet's
/// destination, from its IP_RECVERR / IPV6_RECVERR extended error. None
/// for any other error.
pub fn path_mtu_of(err: &libc::sock_extended_err) -> Option<u32> {
    const SO_EE_ORIGIN_ICMP: u8 = 2;
    const SO_EE_ORIGIN_ICMP6: u8 = 3;
    match (err.ee_origin, err.ee_type, err.ee_code) {
        // Destination unreachable, fragmentation needed.
        (SO_EE_ORIGIN_ICMP, 3, 4) => Some(err.ee_info),
        // Packet too big.
        (SO_EE_ORIGIN_ICMP6, 2, 0) => Some(err.ee_info),
        _ => None,
    }
}

/// Whether what an ICMP error quotes of the packet, from its GRE header
/// on, is GRE that greha's tunnels send: version 0, no routing, the whole
/// header quoted (checksum, key and sequence number as its flags say), a
/// protocol a tunnel carries. The kernel's gre_err parses the header as
/// far before it takes the error's MTU; an error quoting anything else
/// was not about a tunnel's packet.
pub fn quotes_gre(quoted: &[u8]) -> bool {
    const CSUM: u8 = 0x80;
    const ROUTING: u8 = 0x40;
    const KEY: u8 = 0x20;
    const SEQ: u8 = 0x10;
    let [flags, version, p0, p1, ..] = *quoted else {
        return false;
    };
    let len = 4 + [CSUM, KEY, SEQ].iter().filter(|&&f| flags & f != 0).count() * 4;
    let protocol = u16::from_be_bytes([p0, p1]);
    flags & ROUTING == 0
        && version & 0x07 == 0
        && quoted.len() >= len
        && [GRE_PROTO_TEB, GRE_PROTO_IPV4, GRE_PROTO_IPV6].contains(&protocol)
}

/// A raw GRE socket that receives nothing but the errors about GRE this
/// host sent.
struct ErrSocket {
    fd: AsyncFd<Socket>,
}

impl ErrSocket {
    fn open(v6: bool) -> Result<Self> {
        let domain = if v6 { Domain::IPV6 } else { Domain::IPV4 };
        let s = Socket::new(domain, Type::RAW, Some(Protocol::from(libc::IPPROTO_GRE)))
            .context("opening a raw GRE socket (needs CAP_NET_RAW)")?;
        // No GRE packet is queued: the filter takes none (the tunnels'
        // own never reach it, the decap takes them before IP).
        // BPF_RET | BPF_K, 0: keep no byte.
        s.attach_filter(&[socket2::SockFilter::new(0x06, 0, 0, 0)])?;
        let (level, name) = if v6 {
            (libc::SOL_IPV6, libc::IPV6_RECVERR)
        } else {
            (libc::SOL_IP, libc::IP_RECVERR)
        };
        crate::reasm::set_int(&s, level, name, 1).context("setting IP_RECVERR")?;
        s.set_nonblocking(true)?;
        // SAFETY: the Socket owns its descriptor until the AsyncFd, which
        // owns the Socket, is dropped.
        let fd = unsafe { AsyncFd::register_with_interest(s, Interest::ERROR) }
            .map_err(io::Error::from)?;
        Ok(Self { fd })
    }

    /// The next path MTU report: (remote, MTU).
    async fn next(&self) -> io::Result<(IpAddr, u32)> {
        loop {
            let mut guard = self.fd.ready(Interest::ERROR).await?;
            match read_error(self.fd.get_ref().as_raw_fd()) {
                Ok(Some(report)) => return Ok(report),
                Ok(None) => continue,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => guard.clear_ready(),
                Err(e) => return Err(e),
            }
        }
    }
}

/// One message from the socket's error queue: its path MTU report, if it
/// is one.
fn read_error(fd: i32) -> io::Result<Option<(IpAddr, u32)>> {
    let mut data = [0u8; 64];
    let mut control = [0u64; 64];
    // SAFETY: plain C structures, zero is a valid value of each.
    let mut name: libc::sockaddr_storage = unsafe { zeroed() };
    let mut iov = libc::iovec {
        iov_base: data.as_mut_ptr().cast(),
        iov_len: data.len(),
    };
    let mut msg: libc::msghdr = unsafe { zeroed() };
    msg.msg_name = (&raw mut name).cast();
    msg.msg_namelen = size_of::<libc::sockaddr_storage>() as libc::socklen_t;
    msg.msg_iov = &raw mut iov;
    msg.msg_iovlen = 1;
    msg.msg_control = control.as_mut_ptr().cast();
    msg.msg_controllen = size_of::<[u64; 64]>();
    // SAFETY: every buffer msg points to lives until the call returns.
    let n = unsafe { libc::recvmsg(fd, &raw mut msg, libc::MSG_ERRQUEUE | libc::MSG_DONTWAIT) };
    if n < 0 {
        return Err(io::Error::last_os_error());
    }
    // The error's packet went to the address in msg_name.
    let remote = match i32::from(name.ss_family) {
        libc::AF_INET => {
            // SAFETY: the kernel wrote a sockaddr_in for this family.
            let sin = unsafe { &*(&raw const name).cast::<libc::sockaddr_in>() };
            IpAddr::V4(Ipv4Addr::from(u32::from_be(sin.sin_addr.s_addr)))
        }
        libc::AF_INET6 => {
            // SAFETY: the kernel wrote a sockaddr_in6 for this family.
            let sin6 = unsafe { &*(&raw const name).cast::<libc::sockaddr_in6>() };
            IpAddr::V6(Ipv6Addr::from(sin6.sin6_addr.s6_addr))
        }
        _ => return Ok(None),
    };
    // SAFETY: the CMSG macros walk the control buffer recvmsg filled, within
    // msg_controllen.
    unsafe {
        let mut c = libc::CMSG_FIRSTHDR(&raw const msg);
        while !c.is_null() {
            let (level, ty) = ((*c).cmsg_level, (*c).cmsg_type);
            if (level == libc::SOL_IP && ty == libc::IP_RECVERR)
                || (level == libc::SOL_IPV6 && ty == libc::IPV6_RECVERR)
            {
                let err = libc::CMSG_DATA(c)
                    .cast::<libc::sock_extended_err>()
                    .read_unaligned();
                let quoted = &data[..(n as usize).min(data.len())];
                return Ok(path_mtu_of(&err)
                    .filter(|_| quotes_gre(quoted))
                    .map(|mtu| (remote, mtu)));
            }
            c = libc::CMSG_NXTHDR(&raw const msg, c);
        }
    }
    Ok(None)
}

/// The daemon's path MTU watch; stops when dropped.
pub struct Watch(JoinHandle<()>);

impl Drop for Watch {
    fn drop(&mut self) {
        self.0.abort();
    }
}

impl Watch {
    /// Starts watching for the tunnels pinned under `pin_dir`. What an
    /// earlier run learned is forgotten first (its time is not known).
    pub async fn start(pin_dir: &Path) -> Result<Self> {
        let v4 = ErrSocket::open(false)?;
        // A host without IPv6 has no IPv6 tunnels to learn for.
        let v6 = ErrSocket::open(true)
            .inspect_err(|e| warn!("no path MTU discovery for IPv6 tunnels: {e:#}"))
            .ok();
        tunnel::reset_path_mtus(pin_dir).await?;
        let pin_dir = pin_dir.to_owned();
        Ok(Self(tokio::spawn(async move {
            run(v4, v6, pin_dir).await;
        })))
    }
}

async fn run(v4: ErrSocket, v6: Option<ErrSocket>, pin_dir: PathBuf) {
    let mut mtus = PathMtus::default();
    loop {
        let expiry = mtus.next_expiry();
        let report = tokio::select! {
            r = v4.next() => r.map(Some),
            r = async { v6.as_ref().expect("checked").next().await }, if v6.is_some() => r.map(Some),
            () = tokio::time::sleep_until(expiry.unwrap_or_else(Instant::now)), if expiry.is_some() => Ok(None),
        };
        match report {
            Ok(Some((remote, mtu))) => {
                let mtu = mtus.reported(remote, mtu, Instant::now());
                apply(&pin_dir, remote, Some(mtu)).await;
            }
            Ok(None) => {
                for remote in mtus.expire(Instant::now()) {
                    apply(&pin_dir, remote, None).await;
                }
            }
            Err(e) => {
                warn!("path MTU discovery stopped: reading the error queue: {e}");
                return;
            }
        }
    }
}

async fn apply(pin_dir: &Path, remote: IpAddr, mtu: Option<u32>) {
    match tunnel::set_path_mtu(pin_dir, remote, mtu).await {
        Ok(changed) => {
            for (name, sent) in changed {
                match mtu {
                    Some(m) => info!(
                        tunnel = %name, %remote, path_mtu = m,
                        "the path to the remote carries less than the underlay: larger packets are answered with ICMP"
                    ),
                    None => info!(
                        tunnel = %name, %remote, mtu = sent,
                        "the learned path MTU expired: the underlay's MTU again"
                    ),
                }
            }
        }
        Err(e) => warn!(%remote, "cannot set the path MTU: {e:#}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reports_only_lower_raise_to_the_floor_and_expire() {
        let t0 = Instant::now();
        let r4: IpAddr = "198.51.100.2".parse().unwrap();
        let r6: IpAddr = "2001:db8::2".parse().unwrap();
        let mut m = PathMtus::default();
        // (remote, reported, after, MTU in force)
        let table: &[(IpAddr, u32, u64, u32)] = &[
            (r4, 1400, 0, 1400),
            (r4, 1400, 1, 1400),
            (r4, 1450, 2, 1400),
            (r4, 1300, 3, 1300),
            (r4, 68, 4, 552),
            (r6, 1000, 5, 1280),
            (r6, 1280, 6, 1280),
        ];
        for &(remote, mtu, after, want) in table {
            let now = t0 + Duration::from_secs(after);
            assert_eq!(m.reported(remote, mtu, now), want, "{remote} {mtu}");
        }
        assert_eq!(m.next_expiry(), Some(t0 + Duration::from_secs(4) + EXPIRES));
        assert!(m.expire(t0 + EXPIRES).is_empty());
        assert_eq!(m.expire(t0 + Duration::from_secs(4) + EXPIRES), vec![r4]);
        assert_eq!(m.expire(t0 + Duration::from_secs(5) + EXPIRES), vec![r6]);
        assert_eq!(m.next_expiry(), None);
        // Forgotten: a larger report is taken again.
        assert_eq!(m.reported(r4, 1450, t0), 1450);
    }

    #[test]
    fn only_errors_quoting_a_tunnels_gre_count() {
        // (quoted bytes from the GRE header on, counted)
        let cases: &[(&[u8], bool)] = &[
            (&[0x00, 0x00, 0x65, 0x58], true),
            (&[0x00, 0x00, 0x08, 0x00, 0x45], true),
            (&[0x00, 0x00, 0x86, 0xdd], true),
            // Key: 4 more bytes, which must be quoted.
            (&[0x20, 0x00, 0x65, 0x58, 0, 0, 0, 42], true),
            (&[0x20, 0x00, 0x65, 0x58, 0, 0, 0], false),
            // Checksum, key and sequence number: 16 bytes.
            (
                &[0xb0, 0x00, 0x65, 0x58, 0, 0, 0, 0, 0, 0, 0, 1, 0, 0, 0, 2],
                true,
            ),
            (&[0xb0, 0x00, 0x65, 0x58, 0, 0, 0, 0, 0, 0, 0, 1], false),
            // Routing, version 1 (PPTP), a protocol no tunnel carries.
            (&[0x40, 0x00, 0x65, 0x58, 0, 0, 0, 0], false),
            (&[0x00, 0x01, 0x88, 0x0b], false),
            (&[0x00, 0x00, 0x12, 0x34], false),
            (&[0x00, 0x00, 0x65], false),
            (&[], false),
        ];
        for (quoted, want) in cases {
            assert_eq!(quotes_gre(quoted), *want, "{quoted:02x?}");
        }
    }

    #[test]
    fn only_pmtu_errors_report_an_mtu() {
        // SAFETY: a plain C structure.
        let mut e: libc::sock_extended_err = unsafe { zeroed() };
        e.ee_info = 1400;
        for (origin, ty, code, want) in [
            (2, 3, 4, Some(1400)),
            (2, 3, 1, None),
            (2, 11, 0, None),
            (3, 2, 0, Some(1400)),
            (3, 1, 4, None),
            (1, 3, 4, None),
        ] {
            e.ee_origin = origin;
            e.ee_type = ty;
            e.ee_code = code;
            assert_eq!(path_mtu_of(&e), want, "{origin} {ty} {code}");
        }
    }
}
