//! Tunnel liveness. Linux's gretap has no keepalive, so a tunnel whose far
//! end died looks the same as a quiet one. greha's daemon pings an address
//! at the far end through each tunnel that has a `probe` address (ICMP echo,
//! which any peer answers, the kernel's gretap/gre included, with nothing
//! of greha's there), and keeps the verdict in the pinned probe map, where
//! `greha tunnel show`, status, metrics, bpftool and VRRP's `track-tunnel`
//! read it.
use std::{
    io,
    mem::MaybeUninit,
    net::{Ipv4Addr, SocketAddrV4},
    path::Path,
    time::Duration,
};

use anyhow::{Context as _, Result, anyhow};
use aya::maps::{Array, MapData};
use greha_common::{PROBE_ALIVE, PROBE_DEAD, PROBE_OFF, PROBE_UNKNOWN, TunnelProbe};
use socket2::{Domain, Protocol, SockAddr, Socket, Type};
use tokio::{io::unix::AsyncFd, task::JoinHandle};
use tracing::{info, warn};

use crate::{
    tunnel::{self, TunnelDef},
    vrrp::packet::{fold, ones_complement_sum},
};

/// Probes in a row without an answer that make a tunnel dead (BFD's and
/// keepalived's usual multiplier).
pub const FALL: u32 = 3;

/// The verdict from probe results: alive on any answer, dead after
/// [`FALL`] intervals in a row with none, unknown before either.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Liveness {
    state: u32,
    misses: u32,
}

impl Default for Liveness {
    fn default() -> Self {
        Self {
            state: PROBE_UNKNOWN,
            misses: 0,
        }
    }
}

impl Liveness {
    pub fn state(&self) -> u32 {
        self.state
    }

    /// An answer came: alive at once. The new state if it changed.
    pub fn answered(&mut self) -> Option<u32> {
        self.misses = 0;
        self.set(PROBE_ALIVE)
    }

    /// An interval ended; `answered` whether its probe was answered.
    pub fn interval_ended(&mut self, answered: bool) -> Option<u32> {
        if answered {
            return None;
        }
        self.misses = self.misses.saturating_add(1);
        if self.misses >= FALL {
            self.set(PROBE_DEAD)
        } else {
            None
        }
    }

    fn set(&mut self, state: u32) -> Option<u32> {
        (self.state != state).then(|| {
            self.state = state;
            state
        })
    }
}

/// An ICMP echo request (RFC 792) with its checksum.
pub fn echo_request(id: u16, seq: u16) -> Vec<u8> {
    let mut m = vec![8, 0, 0, 0];
    m.extend_from_slice(&id.to_be_bytes());
    m.extend_from_slice(&seq.to_be_bytes());
    m.extend_from_slice(b"greha tunnel probe");
    let sum = !fold(ones_complement_sum(0, &m));
    m[2..4].copy_from_slice(&sum.to_be_bytes());
    m
}

/// From an IPv4 packet as a raw ICMP socket receives it: the source and
/// (id, sequence) of an echo reply; None for anything else.
pub fn echo_reply(packet: &[u8]) -> Option<(Ipv4Addr, u16, u16)> {
    let ihl = usize::from(packet.first()? & 0x0f) * 4;
    let icmp = packet.get(ihl..)?;
    if ihl < 20 || icmp.len() < 8 || icmp[0] != 0 || icmp[1] != 0 {
        return None;
    }
    let src = Ipv4Addr::new(packet[12], packet[13], packet[14], packet[15]);
    Some((
        src,
        u16::from_be_bytes([icmp[4], icmp[5]]),
        u16::from_be_bytes([icmp[6], icmp[7]]),
    ))
}

/// A raw ICMP socket bound to the tunnel interface: echo requests leave
/// through the tunnel, and only what arrives through it is read.
struct IcmpSocket {
    fd: AsyncFd<Socket>,
}

impl IcmpSocket {
    fn open(dev: &str) -> Result<Self> {
        let s = Socket::new(Domain::IPV4, Type::RAW, Some(Protocol::ICMPV4))
            .context("opening a raw ICMP socket (needs CAP_NET_RAW)")?;
        s.bind_device(Some(dev.as_bytes()))
            .with_context(|| format!("binding the probe socket to {dev}"))?;
        s.set_nonblocking(true)?;
        // SAFETY: the Socket owns its descriptor until the AsyncFd, which
        // owns the Socket, is dropped.
        let fd = unsafe { AsyncFd::register(s) }.map_err(io::Error::from)?;
        Ok(Self { fd })
    }

    fn send(&self, msg: &[u8], dst: Ipv4Addr) -> io::Result<()> {
        self.fd
            .get_ref()
            .send_to(msg, &SockAddr::from(SocketAddrV4::new(dst, 0)))
            .map(drop)
    }

    async fn recv(&self) -> io::Result<Vec<u8>> {
        loop {
            let mut guard = self.fd.readable().await?;
            let mut buf = [MaybeUninit::<u8>::uninit(); 1500];
            match guard.try_io(|fd| fd.get_ref().recv(&mut buf)) {
                // SAFETY: recv initialized the first n bytes.
                Ok(Ok(n)) => {
                    return Ok(buf[..n]
                        .iter()
                        .map(|b| unsafe { b.assume_init() })
                        .collect());
                }
                Ok(Err(e)) => return Err(e),
                Err(_would_block) => continue,
            }
        }
    }
}

/// The probe map entry of one tunnel, written as the prober learns; set
/// back to off when the prober ends (its task aborted: the daemon stopped,
/// or a reload restarts the probers).
struct Entry {
    map: Array<MapData, TunnelProbe>,
    id: u32,
    name: String,
    value: TunnelProbe,
}

impl Entry {
    fn write(&mut self) {
        if let Err(e) = self.map.set(self.id, self.value, 0) {
            warn!(tunnel = %self.name, "recording the probe result: {e}");
        }
    }
}

impl Drop for Entry {
    fn drop(&mut self) {
        self.value.state = PROBE_OFF;
        self.write();
    }
}

/// The daemon's probers, one per tunnel with a probe address.
#[derive(Default)]
pub struct Probers(Vec<JoinHandle<()>>);

impl Probers {
    /// Probes exactly `tunnels`' far ends from now on; a reload restarts
    /// them all (a re-created tunnel has a new slot). A prober that cannot
    /// start is reported, not fatal: the tunnel carries traffic anyway.
    pub fn sync(&mut self, tunnels: &[TunnelDef], pin_dir: &Path) {
        self.stop();
        for t in tunnels {
            match spawn(t, pin_dir) {
                Ok(Some(task)) => self.0.push(task),
                Ok(None) => {}
                Err(e) => warn!(tunnel = %t.name, "cannot probe the far end: {e:#}"),
            }
        }
    }

    pub fn stop(&mut self) {
        for task in self.0.drain(..) {
            task.abort();
        }
    }
}

/// Starts probing `def`'s far end, if it has a probe address.
pub fn spawn(def: &TunnelDef, pin_dir: &Path) -> Result<Option<JoinHandle<()>>> {
    let Some(target) = def.probe else {
        return Ok(None);
    };
    let socket = IcmpSocket::open(&def.name)?;
    let name = def.name.clone();
    let interval = def.probe_interval;
    let tunnel_id = tunnel::id_of(pin_dir, &name)?
        .ok_or_else(|| anyhow!("tunnel {name}: not running, nothing to probe"))?;
    let mut entry = Entry {
        map: tunnel::probe_map(pin_dir)?,
        id: tunnel_id,
        name: name.clone(),
        value: TunnelProbe {
            target: target.octets(),
            state: PROBE_UNKNOWN,
            ..Default::default()
        },
    };
    entry.write();
    // Tells this prober's replies from another's (each tunnel has its own).
    let id = (std::process::id() as u16) ^ tunnel_id as u16;
    Ok(Some(tokio::spawn(async move {
        run(socket, target, id, interval, &mut entry).await;
    })))
}

async fn run(socket: IcmpSocket, target: Ipv4Addr, id: u16, interval: Duration, entry: &mut Entry) {
    let mut live = Liveness::default();
    let mut ticker = tokio::time::interval(interval);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut seq: u16 = 0;
    let mut answered = true;
    loop {
        tokio::select! {
            _ = ticker.tick() => {
                if seq > 0
                    && let Some(s) = live.interval_ended(answered)
                {
                    changed(entry, s);
                }
                answered = false;
                seq = seq.wrapping_add(1);
                if let Err(e) = socket.send(&echo_request(id, seq), target) {
                    // No route, the tunnel down: a lost probe like any.
                    tracing::debug!(tunnel = %entry.name, "probe not sent: {e}");
                }
                entry.value.sent += 1;
                entry.write();
            }
            r = socket.recv() => match r {
                Ok(packet) => {
                    // Only this interval's answer counts: a late one says
                    // nothing about the link now.
                    if echo_reply(&packet) == Some((target, id, seq)) && !answered {
                        answered = true;
                        entry.value.answered += 1;
                        if let Some(s) = live.answered() {
                            changed(entry, s);
                        }
                        entry.write();
                    }
                }
                Err(e) => {
                    warn!(tunnel = %entry.name, "probe socket: {e}");
                    return;
                }
            }
        }
    }
}

fn changed(entry: &mut Entry, state: u32) {
    let was = entry.value.state;
    entry.value.state = state;
    if was == PROBE_ALIVE || (state == PROBE_ALIVE && was == PROBE_DEAD) {
        entry.value.changes += 1;
    }
    let target = Ipv4Addr::from(entry.value.target);
    info!(
        tunnel = %entry.name, %target,
        "far end {}", tunnel::probe_state_name(state)
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    /// (event, state after): `a` an answer, `m` an interval that ended
    /// unanswered, `k` one that ended answered.
    #[test]
    fn liveness_follows_answers_and_losses() {
        for (events, want) in [
            ("", PROBE_UNKNOWN),
            ("a", PROBE_ALIVE),
            ("mm", PROBE_UNKNOWN),
            ("mmm", PROBE_DEAD),
            ("akmm", PROBE_ALIVE),
            ("akmmm", PROBE_DEAD),
            ("mmmmma", PROBE_ALIVE),
            ("ammamm", PROBE_ALIVE),
            ("ammammm", PROBE_DEAD),
        ] {
            let mut l = Liveness::default();
            for e in events.chars() {
                match e {
                    'a' => drop(l.answered()),
                    'm' => drop(l.interval_ended(false)),
                    _ => drop(l.interval_ended(true)),
                }
            }
            assert_eq!(l.state(), want, "{events}");
        }
    }

    #[test]
    fn echo_request_and_reply_round_trip() {
        let req = echo_request(0x1234, 7);
        // The checksum makes the message sum to all ones.
        assert_eq!(fold(ones_complement_sum(0, &req)), 0xffff);
        // The reply a peer makes of it: type 0, behind an IPv4 header.
        let mut packet = vec![
            0x45, 0, 0, 0, 0, 0, 0, 0, 64, 1, 0, 0, 192, 0, 2, 2, 192, 0, 2, 1,
        ];
        let mut reply = req.clone();
        reply[0] = 0;
        packet.extend_from_slice(&reply);
        assert_eq!(
            echo_reply(&packet),
            Some((Ipv4Addr::new(192, 0, 2, 2), 0x1234, 7))
        );
        // A request is not a reply; a cut packet is nothing.
        packet[20] = 8;
        assert_eq!(echo_reply(&packet), None);
        assert_eq!(echo_reply(&packet[..25]), None);
    }
}
