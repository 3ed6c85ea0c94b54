//! Outer fragments. A GRE packet that arrives in fragments cannot be
//! decapsulated piece by piece, so the decapsulation hands the pieces to
//! the kernel (`rx_fragments`), which reassembles them as it does for any
//! local protocol. With no GRE module loaded, the whole packet then goes
//! only to raw GRE sockets: the daemon reads it from one, and writes it
//! into a TAP interface of its own, `greha-reasm`, where the same
//! decapsulation program runs at ingress and takes it into the tunnel as
//! if it had arrived whole. Only packets between a tunnel's endpoints are
//! written back, so nothing the decapsulation passes on can come round
//! again. This is the slow path of a rare case: a kernel peer fragments
//! its GRE only when told not to set DF (`nopmtudisc`), or over IPv6.
use std::{
    fs::{File, OpenOptions},
    io::{self, Write as _},
    mem::{size_of, zeroed},
    net::{IpAddr, Ipv4Addr, Ipv6Addr},
    os::fd::AsRawFd as _,
    path::{Path, PathBuf},
    sync::Arc,
    time::{Duration, Instant},
};

use anyhow::{Context as _, Result, bail};
use aya::programs::SchedClassifier;
use greha_common::names;
use socket2::{Domain, Protocol, Socket, Type};
use tokio::{
    io::{Interest, unix::AsyncFd},
    sync::Notify,
    task::JoinHandle,
};
use tracing::{info, warn};

use crate::{
    datapath::{self, Datapath},
    netlink::Netlink,
    tunnel,
};

/// The TAP interface reassembled packets are written into.
pub const DEV: &str = "greha-reasm";
/// How long the list of tunnel endpoints is trusted before it is read
/// again: at most once a second, or a flood of GRE from strangers would
/// have the daemon read every tunnel for each packet (a new tunnel's
/// reassembled packets wait up to that long).
const ENDPOINTS_TTL: Duration = Duration::from_secs(1);
/// The raw GRE sockets' receive buffer.
const RECV_BUFFER: libc::c_int = 4 << 20;
const ETH_P_IP: u16 = 0x0800;
const ETH_P_IPV6: u16 = 0x86dd;
const IPPROTO_GRE: u8 = 47;

/// A packet from a raw GRE socket, and for IPv6 its (source, destination):
/// an IPv6 raw socket gives the payload without the header.
type Received = (Vec<u8>, Option<(Ipv6Addr, Ipv6Addr)>);

/// The outer packet for the decapsulation: an Ethernet header to `mac`
/// (the TAP's own, so the frame is for this host), then the IPv4 packet as
/// the raw socket gave it, or an IPv6 header rebuilt in front of the
/// payload an IPv6 raw socket gives (`from` → `to`).
pub fn frame(mac: [u8; 6], packet: &[u8], v6: Option<(Ipv6Addr, Ipv6Addr)>) -> Vec<u8> {
    let mut f = Vec::with_capacity(14 + 40 + packet.len());
    f.extend_from_slice(&mac);
    f.extend_from_slice(&mac);
    match v6 {
        None => {
            f.extend_from_slice(&ETH_P_IP.to_be_bytes());
        }
        Some((from, to)) => {
            f.extend_from_slice(&ETH_P_IPV6.to_be_bytes());
            f.extend_from_slice(&[0x60, 0, 0, 0]);
            f.extend_from_slice(&(packet.len() as u16).to_be_bytes());
            f.extend_from_slice(&[IPPROTO_GRE, 64]);
            f.extend_from_slice(&from.octets());
            f.extend_from_slice(&to.octets());
        }
    }
    f.extend_from_slice(packet);
    f
}

/// The (local, remote) endpoints of an IPv4 packet, as the raw socket gives
/// it; None if it is not IPv4 GRE.
pub fn ipv4_endpoints(packet: &[u8]) -> Option<(IpAddr, IpAddr)> {
    if packet.len() < 20 || packet[0] >> 4 != 4 || packet[9] != IPPROTO_GRE {
        return None;
    }
    let addr = |i: usize| {
        IpAddr::V4(Ipv4Addr::new(
            packet[i],
            packet[i + 1],
            packet[i + 2],
            packet[i + 3],
        ))
    };
    Some((addr(16), addr(12)))
}

/// How often the daemon looks whether the reassembly it runs is still
/// the one the tunnels need: tunnels added or removed with `greha tunnel`
/// beside it, or a datapath loaded anew, show within this time.
const CHECK_EVERY: Duration = Duration::from_secs(1);

/// The daemon's reassembly, kept in step with the tunnels pinned under
/// its pin directory: running while there are any, on the decapsulation
/// program pinned now. Stops, and its interface goes, when dropped.
pub struct Keeper {
    task: JoinHandle<()>,
    nudge: Arc<Notify>,
}

impl Drop for Keeper {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl Keeper {
    pub async fn start(pin_dir: &Path) -> Self {
        let pin_dir = pin_dir.to_owned();
        let mut current = None;
        let mut last_error = None;
        // The first check before the daemon goes on.
        keep(&pin_dir, &mut current, &mut last_error).await;
        let nudge = Arc::new(Notify::new());
        let nudged = nudge.clone();
        let task = tokio::spawn(async move {
            loop {
                tokio::select! {
                    () = tokio::time::sleep(CHECK_EVERY) => {}
                    () = nudged.notified() => {}
                }
                keep(&pin_dir, &mut current, &mut last_error).await;
            }
        });
        Self { task, nudge }
    }

    /// Checks at once rather than within a second: after a reload, which
    /// may have added the first tunnel or replaced the datapath.
    pub fn check_now(&self) {
        self.nudge.notify_one();
    }
}

/// One check: starts, stops or makes again the reassembly. An error is
/// logged when it first happens, not every second while it lasts (a
/// second daemon in the namespace cannot have `greha-reasm`).
async fn keep(pin_dir: &Path, current: &mut Option<Reassembly>, last_error: &mut Option<String>) {
    let decap = decap_id(pin_dir);
    if current.as_ref().is_some_and(|r| Some(r.decap_id) != decap) {
        *current = None;
    }
    if current.is_some() || decap.is_none() {
        return;
    }
    match Reassembly::start(pin_dir).await {
        Ok(r) => {
            *current = Some(r);
            *last_error = None;
        }
        Err(e) => {
            let text = format!("{e:#}");
            if last_error.as_ref() != Some(&text) {
                warn!("outer fragments are not reassembled: {text}");
            }
            *last_error = Some(text);
        }
    }
}

/// The id of the decapsulation program pinned under `pin_dir`, while
/// there are tunnels; None without.
fn decap_id(pin_dir: &Path) -> Option<u32> {
    if !tunnel::any(pin_dir) {
        return None;
    }
    let pin = datapath::pinned_prog(pin_dir, names::PROG_GRE_DECAP);
    aya::programs::ProgramInfo::from_pin(pin)
        .ok()
        .map(|i| i.id())
}

/// The reassembly path on one decapsulation program; stops, and its
/// interface goes, when dropped.
struct Reassembly {
    task: JoinHandle<()>,
    _attached: SchedClassifier,
    decap_id: u32,
}

impl Drop for Reassembly {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl Reassembly {
    /// Starts it on the decapsulation program pinned under `pin_dir`;
    /// [`keep`] calls it only while there are tunnels (and so a datapath:
    /// a daemon with VRRP alone pays nothing for it).
    async fn start(pin_dir: &Path) -> Result<Self> {
        let tap = open_tap(DEV)?;
        let nl = Netlink::new()?;
        let Some(link) = nl.link_by_name(DEV).await? else {
            bail!("{DEV} vanished after it was made");
        };
        // Its MTU is not in the way: a TAP takes a frame of any size.
        nl.set_up(link.index, false).await?;
        let attached = Datapath::attach_tc_ingress_owned(pin_dir, names::PROG_GRE_DECAP, DEV)?;
        let decap_id = attached.info()?.id();
        let mac = link.mac;
        let v4 = RawGre::open(false)?;
        let v6 = RawGre::open(true)
            .inspect_err(|e| warn!("outer IPv6 fragments are not reassembled: {e:#}"))
            .ok();
        info!(
            dev = DEV,
            "outer fragments are reassembled by the kernel and decapsulated here"
        );
        let pin_dir = pin_dir.to_owned();
        let task = tokio::spawn(async move {
            if let Err(e) = run(tap, mac, v4, v6, pin_dir).await {
                warn!("outer fragments are no longer reassembled: {e:#}");
            }
        });
        Ok(Self {
            task,
            _attached: attached,
            decap_id,
        })
    }
}

/// The tunnels' (local, remote) endpoints, read again when stale.
struct Endpoints {
    pin_dir: PathBuf,
    list: Vec<(IpAddr, IpAddr)>,
    read: Option<Instant>,
}

impl Endpoints {
    fn known(&mut self, pair: (IpAddr, IpAddr)) -> bool {
        let fresh = self.read.is_some_and(|t| t.elapsed() < ENDPOINTS_TTL);
        if !fresh {
            self.read = Some(Instant::now());
            if let Ok(tunnels) = tunnel::list(&self.pin_dir) {
                self.list = tunnels.iter().map(|t| (t.local, t.remote)).collect();
            }
        }
        self.list.contains(&pair)
    }
}

async fn run(
    mut tap: File,
    mac: [u8; 6],
    v4: RawGre,
    v6: Option<RawGre>,
    pin_dir: PathBuf,
) -> Result<()> {
    let mut endpoints = Endpoints {
        pin_dir,
        list: Vec::new(),
        read: None,
    };
    loop {
        let (packet, v6_addrs) = tokio::select! {
            r = v4.recv() => r?,
            r = async { v6.as_ref().expect("checked").recv().await }, if v6.is_some() => r?,
        };
        let pair = match v6_addrs {
            None => match ipv4_endpoints(&packet) {
                Some(p) => p,
                None => continue,
            },
            Some((from, to)) => (IpAddr::V6(to), IpAddr::V6(from)),
        };
        if !endpoints.known(pair) {
            continue;
        }
        // A TAP takes one frame per write; a full queue drops it, as a
        // full receive queue would.
        if let Err(e) = tap.write(&frame(mac, &packet, v6_addrs)) {
            warn!("writing a reassembled packet into {DEV}: {e}");
        }
    }
}

/// A TAP interface `name`, without packet information headers: each write
/// is one Ethernet frame received on it. It lives while the file is open.
fn open_tap(name: &str) -> Result<File> {
    let tun = OpenOptions::new()
        .read(true)
        .write(true)
        .open("/dev/net/tun")
        .context("opening /dev/net/tun")?;
    // SAFETY: a zeroed ifreq is valid; the name fits (checked below) and
    // the ioctl reads the struct it is given.
    unsafe {
        let mut req: libc::ifreq = zeroed();
        if name.len() >= libc::IFNAMSIZ {
            bail!("interface name {name} is too long");
        }
        for (d, s) in req.ifr_name.iter_mut().zip(name.bytes()) {
            *d = s as libc::c_char;
        }
        req.ifr_ifru.ifru_flags = (libc::IFF_TAP | libc::IFF_NO_PI) as libc::c_short;
        if libc::ioctl(tun.as_raw_fd(), libc::TUNSETIFF, &raw mut req) != 0 {
            return Err(io::Error::last_os_error())
                .with_context(|| format!("creating the TAP interface {name}"));
        }
    }
    Ok(tun)
}

/// A raw GRE socket: every GRE packet that reaches this host's IP layer,
/// which with the decapsulation in front is reassembled fragments and GRE
/// for no tunnel of greha's.
struct RawGre {
    fd: AsyncFd<Socket>,
    v6: bool,
}

impl RawGre {
    fn open(v6: bool) -> Result<Self> {
        let domain = if v6 { Domain::IPV6 } else { Domain::IPV4 };
        let s = Socket::new(domain, Type::RAW, Some(Protocol::from(libc::IPPROTO_GRE)))
            .context("opening a raw GRE socket (needs CAP_NET_RAW)")?;
        if v6 {
            // The destination, which the IPv6 header rebuilt needs.
            set_int(&s, libc::SOL_IPV6, libc::IPV6_RECVPKTINFO, 1)?;
        }
        // Room for a burst: a `nopmtudisc` peer's bulk TCP arrives all in
        // fragments, and the default buffer lost a packet in six.
        set_int(&s, libc::SOL_SOCKET, libc::SO_RCVBUFFORCE, RECV_BUFFER)?;
        s.set_nonblocking(true)?;
        // SAFETY: the Socket owns its descriptor until the AsyncFd, which
        // owns the Socket, is dropped.
        let fd = unsafe { AsyncFd::register_with_interest(s, Interest::READABLE) }
            .map_err(io::Error::from)?;
        Ok(Self { fd, v6 })
    }

    /// The next packet, and for IPv6 its (source, destination).
    async fn recv(&self) -> io::Result<Received> {
        loop {
            let mut guard = self.fd.readable().await?;
            match recv_packet(self.fd.get_ref().as_raw_fd(), self.v6) {
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => guard.clear_ready(),
                r => return r,
            }
        }
    }
}

/// Turns the c_int socket option `name` on.
pub(crate) fn set_int(
    s: &Socket,
    level: libc::c_int,
    name: libc::c_int,
    on: libc::c_int,
) -> Result<()> {
    // SAFETY: a c_int option of the size given, on an open socket.
    let rc = unsafe {
        libc::setsockopt(
            s.as_raw_fd(),
            level,
            name,
            (&raw const on).cast(),
            size_of::<libc::c_int>() as libc::socklen_t,
        )
    };
    if rc != 0 {
        return Err(io::Error::last_os_error()).context("setsockopt");
    }
    Ok(())
}

fn recv_packet(fd: i32, v6: bool) -> io::Result<Received> {
    let mut data = vec![0u8; 65536];
    let mut control = [0u64; 16];
    // SAFETY: plain C structures, zero is a valid value of each.
    let mut name: libc::sockaddr_in6 = unsafe { zeroed() };
    let mut iov = libc::iovec {
        iov_base: data.as_mut_ptr().cast(),
        iov_len: data.len(),
    };
    let mut msg: libc::msghdr = unsafe { zeroed() };
    msg.msg_name = (&raw mut name).cast();
    msg.msg_namelen = size_of::<libc::sockaddr_in6>() as libc::socklen_t;
    msg.msg_iov = &raw mut iov;
    msg.msg_iovlen = 1;
    msg.msg_control = control.as_mut_ptr().cast();
    msg.msg_controllen = size_of::<[u64; 16]>();
    // SAFETY: every buffer msg points to lives until the call returns.
    let n = unsafe { libc::recvmsg(fd, &raw mut msg, libc::MSG_DONTWAIT) };
    if n < 0 {
        return Err(io::Error::last_os_error());
    }
    data.truncate(n as usize);
    if !v6 {
        return Ok((data, None));
    }
    let from = Ipv6Addr::from(name.sin6_addr.s6_addr);
    let mut to = None;
    // SAFETY: the CMSG macros walk the control buffer recvmsg filled.
    unsafe {
        let mut c = libc::CMSG_FIRSTHDR(&raw const msg);
        while !c.is_null() {
            if (*c).cmsg_level == libc::SOL_IPV6 && (*c).cmsg_type == libc::IPV6_PKTINFO {
                let info = libc::CMSG_DATA(c)
                    .cast::<libc::in6_pktinfo>()
                    .read_unaligned();
                to = Some(Ipv6Addr::from(info.ipi6_addr.s6_addr));
            }
            c = libc::CMSG_NXTHDR(&raw const msg, c);
        }
    }
    match to {
        Some(to) => Ok((data, Some((from, to)))),
        None => Err(io::Error::other("no IPV6_PKTINFO with an IPv6 packet")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frames_carry_the_packet_behind_the_right_header() {
        let mac = [2, 0, 0, 0, 0, 1];
        let mut v4 = vec![0x45, 0, 0, 24, 0, 0, 0, 0, 64, 47, 0, 0];
        v4.extend_from_slice(&[198, 51, 100, 2, 198, 51, 100, 1, 0, 0, 0x65, 0x58]);
        let f = frame(mac, &v4, None);
        assert_eq!(&f[12..14], &[0x08, 0x00]);
        assert_eq!(&f[14..], &v4[..]);
        assert_eq!(
            ipv4_endpoints(&v4),
            Some((
                "198.51.100.1".parse().unwrap(),
                "198.51.100.2".parse().unwrap()
            ))
        );
        assert_eq!(ipv4_endpoints(&v4[..19]), None);
        let gre = [0, 0, 0x65, 0x58];
        let (from, to): (Ipv6Addr, Ipv6Addr) = (
            "2001:db8::2".parse().unwrap(),
            "2001:db8::1".parse().unwrap(),
        );
        let f = frame(mac, &gre, Some((from, to)));
        assert_eq!(&f[12..14], &[0x86, 0xdd]);
        assert_eq!(f[14] >> 4, 6);
        assert_eq!(u16::from_be_bytes([f[18], f[19]]), 4);
        assert_eq!(f[20], IPPROTO_GRE);
        assert_eq!(&f[22..38], &from.octets());
        assert_eq!(&f[38..54], &to.octets());
        assert_eq!(&f[54..], &gre);
    }
}
