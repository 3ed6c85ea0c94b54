//! What a client sees of a service address, at 1 ms resolution: a small
//! UDP echo service on each server answers with the server's name, and a
//! client probes the address every millisecond. A failover then reads as
//! the probes nobody answered, from the client's side, whatever the VRRP
//! daemons say about themselves.
use std::{
    net::{SocketAddr, UdpSocket},
    sync::{
        Arc, Mutex,
        atomic::{AtomicBool, Ordering},
    },
    thread,
    time::{Duration, Instant},
};

use anyhow::{Context as _, Result};

use crate::{Host, wait_until};

/// The echo service's port on every server.
pub const ECHO_PORT: u16 = 7007;

/// An answer later than this counts as none: a client would have given up.
pub const REPLY_TIMEOUT: Duration = Duration::from_millis(100);

/// How often the threads look at their stop flag.
const POLL: Duration = Duration::from_millis(5);

/// The echo service on one server: answers each probe with the probe's
/// sequence number and the server's name.
pub struct Echo {
    stop: Arc<AtomicBool>,
    thread: Option<thread::JoinHandle<()>>,
}

impl Echo {
    /// The echo service on `host`, both families (one dual-stack socket;
    /// IPv4 only where the host has no IPv6).
    pub fn start(host: &Host, name: char) -> Result<Self> {
        let sock = host
            .enter(|| {
                let dual = || -> std::io::Result<UdpSocket> {
                    let s =
                        socket2::Socket::new(socket2::Domain::IPV6, socket2::Type::DGRAM, None)?;
                    s.set_only_v6(false)?;
                    s.bind(&SocketAddr::from(([0u16; 8], ECHO_PORT)).into())?;
                    Ok(s.into())
                };
                dual().or_else(|_| UdpSocket::bind(("0.0.0.0", ECHO_PORT)))
            })?
            .context("binding the echo service")?;
        sock.set_read_timeout(Some(POLL))?;
        let stop = Arc::new(AtomicBool::new(false));
        let st = Arc::clone(&stop);
        let thread = thread::spawn(move || {
            let mut buf = [0u8; 16];
            while !st.load(Ordering::Relaxed) {
                if let Ok((8, from)) = sock.recv_from(&mut buf) {
                    buf[8] = name as u8;
                    let _ = sock.send_to(&buf[..9], from);
                }
            }
        });
        Ok(Self {
            stop,
            thread: Some(thread),
        })
    }
}

impl Drop for Echo {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// One probe: when it left, and who answered in time (None: nobody).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Probe {
    pub sent: Instant,
    pub by: Option<char>,
}

#[derive(Default)]
struct Log {
    sent: Vec<Instant>,
    by: Vec<Option<char>>,
}

/// The client: a probe to `target` every `period`, from its own thread.
pub struct Prober {
    log: Arc<Mutex<Log>>,
    stop: Arc<AtomicBool>,
    threads: Vec<thread::JoinHandle<()>>,
}

impl Prober {
    pub fn start(client: &Host, target: SocketAddr, period: Duration) -> Result<Self> {
        // Unconnected: a server answers from its own address, not the VIP.
        let any = if target.is_ipv4() {
            "0.0.0.0:0"
        } else {
            "[::]:0"
        };
        let sock = client
            .enter(|| UdpSocket::bind(any))?
            .context("binding the prober")?;
        sock.set_read_timeout(Some(POLL))?;
        let rx = sock.try_clone()?;
        let log = Arc::new(Mutex::new(Log::default()));
        let stop = Arc::new(AtomicBool::new(false));
        let (l, st) = (Arc::clone(&log), Arc::clone(&stop));
        let sender = thread::spawn(move || {
            let start = Instant::now();
            let mut seq: u64 = 0;
            while !st.load(Ordering::Relaxed) {
                // On a fixed schedule, so a slow step does not shift the
                // rest.
                let due = start + period * u32::try_from(seq).unwrap_or(u32::MAX);
                if let Some(wait) = due.checked_duration_since(Instant::now()) {
                    thread::sleep(wait);
                }
                {
                    let mut l = l.lock().expect("poisoned");
                    l.sent.push(Instant::now());
                    l.by.push(None);
                }
                let _ = sock.send_to(&seq.to_be_bytes(), target);
                seq += 1;
            }
        });
        let (l, st) = (Arc::clone(&log), Arc::clone(&stop));
        let receiver = thread::spawn(move || {
            let mut buf = [0u8; 16];
            while !st.load(Ordering::Relaxed) {
                let Ok(9) = rx.recv(&mut buf) else { continue };
                let now = Instant::now();
                let seq = u64::from_be_bytes(buf[..8].try_into().expect("8 bytes"));
                let mut l = l.lock().expect("poisoned");
                let Ok(i) = usize::try_from(seq) else {
                    continue;
                };
                if l.sent.get(i).is_some_and(|&t| now - t <= REPLY_TIMEOUT) {
                    l.by[i] = Some(char::from(buf[8]));
                }
            }
        });
        Ok(Self {
            log,
            stop,
            threads: vec![sender, receiver],
        })
    }

    /// The probes so far whose answer is no longer awaited.
    pub fn probes(&self) -> Vec<Probe> {
        let l = self.log.lock().expect("poisoned");
        let settled = Instant::now() - REPLY_TIMEOUT;
        l.sent
            .iter()
            .zip(&l.by)
            .filter(|(t, by)| by.is_some() || **t <= settled)
            .map(|(&sent, &by)| Probe { sent, by })
            .collect()
    }

    /// Waits until a probe sent after `since` is answered by `server`.
    pub fn wait_for(&self, server: char, since: Instant, timeout: Duration) -> Result<()> {
        wait_until(timeout, &format!("server {server} to answer"), || {
            Ok(self
                .probes()
                .iter()
                .any(|p| p.sent >= since && p.by == Some(server)))
        })
    }

    /// Stops probing, once every probe sent is settled; all of them.
    pub fn finish(mut self) -> Vec<Probe> {
        thread::sleep(REPLY_TIMEOUT);
        self.halt();
        self.probes()
    }

    fn halt(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        for t in self.threads.drain(..) {
            let _ = t.join();
        }
    }
}

impl Drop for Prober {
    fn drop(&mut self) {
        self.halt();
    }
}

/// What the client saw of one event: the stretch without answers.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Gap {
    /// From the first unanswered probe to the next answered one: the
    /// longest such stretch between the last answer before the event and
    /// the first answer from the new server (zero when none was lost).
    pub longest: Duration,
    /// Unanswered probes in that span.
    pub lost: usize,
    /// The last answered probe before the event, and the first answered
    /// by `to` after it: the span looked at.
    pub from: Instant,
    pub until: Instant,
}

/// The client-visible gap of an event at `event` after which `to` serves;
/// None if `to` never answered after it or nothing answered before.
pub fn gap(probes: &[Probe], event: Instant, to: char) -> Option<Gap> {
    let first = probes
        .iter()
        .rposition(|p| p.sent <= event && p.by.is_some())?;
    let last = first
        + probes[first..]
            .iter()
            .position(|p| p.sent > event && p.by == Some(to))?;
    let span = &probes[first..=last];
    let mut longest = Duration::ZERO;
    let mut lost = 0;
    let mut hole: Option<Instant> = None;
    for p in span {
        match (p.by, hole) {
            (None, None) => {
                hole = Some(p.sent);
                lost += 1;
            }
            (None, Some(_)) => lost += 1,
            (Some(_), Some(h)) => {
                longest = longest.max(p.sent - h);
                hole = None;
            }
            (Some(_), None) => {}
        }
    }
    Some(Gap {
        longest,
        lost,
        from: span[0].sent,
        until: span[span.len() - 1].sent,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn probes(pattern: &str) -> (Instant, Vec<Probe>) {
        let t0 = Instant::now();
        let v = pattern
            .chars()
            .enumerate()
            .map(|(i, c)| Probe {
                sent: t0 + Duration::from_millis(i as u64),
                by: (c != '.').then_some(c),
            })
            .collect();
        (t0, v)
    }

    #[test]
    fn gaps_as_the_client_saw_them() {
        // (probes, event at ms, new server, longest ms, lost)
        let table = [
            ("AAAA....BBB", 3, 'B', Some((4, 4))),
            ("AAAABBBB", 3, 'B', Some((0, 0))),
            // Make before break: A answers past the event, then B.
            ("AAAAAAABBB", 2, 'B', Some((0, 0))),
            // Two holes: the longest counts, every lost probe too.
            ("AA.A...BB", 1, 'B', Some((3, 4))),
            // A preempting back.
            ("BB..A", 1, 'A', Some((2, 2))),
            ("AAA...", 1, 'B', None),
            ("...BB", 1, 'B', None),
        ];
        for (pattern, event, to, want) in table {
            let (t0, p) = probes(pattern);
            let got = gap(&p, t0 + Duration::from_millis(event), to)
                .map(|g| (g.longest.as_millis() as u64, g.lost));
            assert_eq!(got, want, "{pattern}");
        }
    }
}
