//! GRE tunnels: their definition (iproute2's vocabulary), validation
//! against the host, and setting them up and down on the datapath.
//!
//! A tunnel is a veth pair (the host-visible interface and an internal
//! peer), entries in the datapath's tunnel maps, and two pinned tc
//! attachments: encap on the interface's egress, decap on the underlay's
//! ingress (shared by the tunnels on one underlay).
use std::{
    fmt,
    net::{IpAddr, Ipv4Addr},
    path::Path,
    str::FromStr,
};

use anyhow::{Context as _, Result, anyhow, bail};
use aya::maps::{Array, HashMap, MapError, PerCpuArray, PerCpuValues};
use greha_common::{
    Endpoints, FLOWLABEL_INHERIT, KeyedEndpoints, MAX_TUNNELS, PROBE_ALIVE, PROBE_DEAD,
    PROBE_UNKNOWN, TUNNEL_F_ACTIVE, TUNNEL_F_ENCAP_LIMIT, TUNNEL_F_GRETAP, TUNNEL_F_ICSUM,
    TUNNEL_F_IGNORE_DF, TUNNEL_F_IKEY, TUNNEL_F_IPV6, TUNNEL_F_ISEQ, TUNNEL_F_NOPMTUDISC,
    TUNNEL_F_OCSUM, TUNNEL_F_OKEY, TUNNEL_F_OSEQ, TUNNEL_F_OWN_NEIGH, TunnelConfig, TunnelCounters,
    TunnelProbe, TunnelSeq, names,
};
use serde::Serialize;
use tracing::{info, warn};

use aya::programs::TcAttachType;

use crate::{
    datapath::Datapath,
    netlink::{self, Link, Netlink},
    pins,
    spec::SpecError,
};

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Mode {
    /// Ethernet over GRE (0x6558) over IPv4, like `ip link add … type
    /// gretap`.
    Gretap,
    /// IPv4 or IPv6 over GRE over IPv4, like `ip link add … type gre`.
    Gre,
    /// Ethernet over GRE over IPv6 (`type ip6gretap`).
    Ip6gretap,
    /// IPv4 or IPv6 over GRE over IPv6 (`type ip6gre`).
    Ip6gre,
}

impl Mode {
    const ALL: [Self; 4] = [Self::Gretap, Self::Gre, Self::Ip6gretap, Self::Ip6gre];

    /// Outer IP + GRE (+ inner Ethernet for the tap modes), with `words`
    /// 4-byte GRE fields (checksum, key, sequence number sent): the
    /// kernel's figures (its ip6 modes' without the encapsulation limit
    /// option; [`TunnelDef::overhead`] adds it).
    fn overhead(self, words: u32) -> u32 {
        let base = match self {
            Self::Gretap => 38,
            Self::Gre => 24,
            Self::Ip6gretap => 58,
            Self::Ip6gre => 44,
        };
        base + 4 * words
    }

    /// Ethernet inside (the tap modes).
    pub fn ethernet(self) -> bool {
        matches!(self, Self::Gretap | Self::Ip6gretap)
    }

    /// An IPv6 underlay.
    pub fn ipv6(self) -> bool {
        matches!(self, Self::Ip6gretap | Self::Ip6gre)
    }

    fn of_flags(flags: u32) -> Self {
        match (flags & TUNNEL_F_GRETAP != 0, flags & TUNNEL_F_IPV6 != 0) {
            (true, false) => Self::Gretap,
            (false, false) => Self::Gre,
            (true, true) => Self::Ip6gretap,
            (false, true) => Self::Ip6gre,
        }
    }
}

impl fmt::Display for Mode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Gretap => "gretap",
            Self::Gre => "gre",
            Self::Ip6gretap => "ip6gretap",
            Self::Ip6gre => "ip6gre",
        })
    }
}

/// An address as the datapath's maps hold it (16 bytes; IPv4 first).
fn addr16(a: IpAddr) -> [u8; 16] {
    match a {
        IpAddr::V4(a) => greha_common::ipv4_in16(a.octets()),
        IpAddr::V6(a) => a.octets(),
    }
}

/// The address of a tunnel's 16 bytes, in its family.
fn addr_of(ipv6: bool, a: [u8; 16]) -> IpAddr {
    if ipv6 {
        IpAddr::from(a)
    } else {
        IpAddr::from([a[0], a[1], a[2], a[3]])
    }
}

/// A tunnel as the operator defines it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TunnelDef {
    pub name: String,
    pub mode: Mode,
    /// IPv4, or IPv6 in the ip6 modes.
    pub local: IpAddr,
    pub remote: IpAddr,
    /// The key required on receive (`ikey`, or `key` for both ways).
    pub ikey: Option<u32>,
    /// The key sent (`okey`, or `key`).
    pub okey: Option<u32>,
    /// GRE checksums required on receive (`icsum`, or `csum`).
    pub icsum: bool,
    /// GRE checksums sent (`ocsum`, or `csum`).
    pub ocsum: bool,
    /// Sequence numbers required, in order, on receive (`iseq`, or `seq`).
    pub iseq: bool,
    /// Sequence numbers sent (`oseq`, or `seq`).
    pub oseq: bool,
    /// 0: inherit the inner packet's (`ttl inherit`, the kernel's default).
    pub ttl: u8,
    /// Bit 0 set: inherit the inner packet's (`tos inherit`).
    pub tos: u8,
    /// IPv6 underlay: the outer flow label, or [`FLOWLABEL_INHERIT`]
    /// (`flowlabel inherit`); 0 by default, as the kernel's.
    pub flowlabel: u32,
    /// IPv6 underlay: the tunnel encapsulation limit sent in a destination
    /// option (RFC 2473, `encaplimit N`); None sends no option
    /// (`encaplimit none`, greha's default).
    pub encap_limit: Option<u8>,
    /// Outer DF always (`pmtudisc`, the kernel's default), or only as the
    /// inner IPv4 packet has it (`nopmtudisc`): a packet too big for the
    /// path is then fragmented unless it has DF. IPv4 underlays only.
    pub pmtudisc: bool,
    /// With `nopmtudisc`: never DF, the inner packet's ignored too
    /// (`ignore-df`).
    pub ignore_df: bool,
    /// The underlay; derived from the route to `remote` when not given.
    pub dev: Option<String>,
    pub mtu: Option<u32>,
    /// The tunnel interface's own addresses, either family.
    pub addresses: Vec<(IpAddr, u8)>,
    /// An address at the far end that greha's daemon pings through the
    /// tunnel to know whether it is alive (`probe ADDR`).
    pub probe: Option<Ipv4Addr>,
    /// Between two probes (`probe-interval SECONDS`, default 1); the
    /// tunnel is dead after [`crate::probe::FALL`] in a row unanswered.
    pub probe_interval: std::time::Duration,
}

impl TunnelDef {
    /// The definition without what only the daemon's prober uses: what
    /// re-creating the tunnel would change.
    pub fn datapath_part(&self) -> Self {
        Self {
            probe: None,
            probe_interval: std::time::Duration::from_secs(1),
            ..self.clone()
        }
    }

    /// The optional 4-byte GRE fields this tunnel sends.
    fn gre_words(&self) -> u32 {
        u32::from(self.ocsum) + u32::from(self.okey.is_some()) + u32::from(self.oseq)
    }

    /// Bytes the encapsulation adds, the encapsulation limit option's 8
    /// included.
    pub fn overhead(&self) -> u32 {
        self.mode.overhead(self.gre_words()) + if self.encap_limit.is_some() { 8 } else { 0 }
    }
}

/// The largest outer packet a `nopmtudisc` tunnel cuts into fragments:
/// greha_gre_fragment takes 16 KiB after the outer IPv4 header.
const MAX_FRAGMENTED: u32 = 20 + 16 * 1024;

/// Default outer TTL: inherit, as the kernel's tunnels do when none is
/// given (64 for frames that are not IP).
const DEFAULT_TTL: u8 = 0;

/// The TOS byte that means `inherit` (the kernel reads bit 0).
pub const TOS_INHERIT: u8 = 1;

/// iproute2's DS field names (rt_dsfield): DSCP classes shifted into
/// the TOS byte.
const DSFIELD_NAMES: &[(&str, u8)] = &[
    ("CS0", 0x00),
    ("CS1", 0x20),
    ("CS2", 0x40),
    ("CS3", 0x60),
    ("CS4", 0x80),
    ("CS5", 0xa0),
    ("CS6", 0xc0),
    ("CS7", 0xe0),
    ("AF11", 0x28),
    ("AF12", 0x30),
    ("AF13", 0x38),
    ("AF21", 0x48),
    ("AF22", 0x50),
    ("AF23", 0x58),
    ("AF31", 0x68),
    ("AF32", 0x70),
    ("AF33", 0x78),
    ("AF41", 0x88),
    ("AF42", 0x90),
    ("AF43", 0x98),
    ("EF", 0xb8),
];

/// A TOS as iproute2 reads it: `inherit`, a DS field name, or a number in
/// hexadecimal (`0x20` and `20` are both 0x20: iproute2 reads base 16).
fn parse_tos(name: &str, value: &str) -> Result<u8, SpecError> {
    if value == "inherit" {
        return Ok(TOS_INHERIT);
    }
    if let Some((_, v)) = DSFIELD_NAMES
        .iter()
        .find(|(n, _)| n.eq_ignore_ascii_case(value))
    {
        return Ok(*v);
    }
    let digits = value
        .strip_prefix("0x")
        .or_else(|| value.strip_prefix("0X"))
        .unwrap_or(value);
    u8::from_str_radix(digits, 16).map_err(|_| {
        SpecError::bad(
            "tunnel",
            name,
            "tos",
            value,
            "is not a TOS (hexadecimal 0 to ff as iproute2 reads it, a DS field name such as AF11, or inherit)",
        )
    })
}

fn err(name: &str, field: &str, message: impl Into<String>) -> SpecError {
    SpecError::field("tunnel", name, field, message)
}

fn parse_value<T: FromStr>(
    name: &str,
    field: &str,
    value: &str,
    what: &str,
) -> Result<T, SpecError> {
    value
        .parse()
        .map_err(|_| SpecError::bad("tunnel", name, field, value, &format!("is not {what}")))
}

/// A GRE key: a number (0 to 4294967295) or dotted quad, as iproute2 takes it.
fn parse_key(name: &str, field: &str, value: &str) -> Result<u32, SpecError> {
    if let Ok(ip) = value.parse::<Ipv4Addr>() {
        return Ok(u32::from(ip));
    }
    match value.parse::<u64>() {
        Ok(k) => u32::try_from(k).map_err(|_| {
            err(
                name,
                field,
                format!("{value} is out of range (0 to 4294967295)"),
            )
            .value(value)
        }),
        Err(_) => Err(SpecError::bad(
            "tunnel",
            name,
            field,
            value,
            "is not a number or a dotted quad",
        )),
    }
}

fn parse_cidr(name: &str, value: &str) -> Result<(IpAddr, u8), SpecError> {
    let (addr, prefix) = value
        .split_once('/')
        .map_or((value, None), |(a, p)| (a, Some(p)));
    let addr: IpAddr = parse_value(name, "address", addr, "an IP address")?;
    let max = if addr.is_ipv4() { 32 } else { 128 };
    let prefix: u8 = match prefix {
        None => max,
        Some(p) => parse_value(name, "address", p, "a prefix length")?,
    };
    if prefix > max {
        return Err(err(
            name,
            "address",
            format!("prefix length {prefix} is over {max}"),
        )
        .value(value));
    }
    Ok((addr, prefix))
}

fn ifname(name: &str, field: &str, value: &str) -> Result<(), SpecError> {
    netlink::check_ifname(value).map_err(|e| err(name, field, e.to_string()).value(value))
}

impl TunnelDef {
    /// Parses `NAME mode gretap local A remote B [key K] [ttl N] [tos N]
    /// [dev IFACE] [mtu N] [address CIDR]...`; `type` is taken for `mode`.
    pub fn parse(words: &[String]) -> Result<Self, SpecError> {
        let mut it = words.iter().map(String::as_str);
        let name = it
            .next()
            .ok_or_else(|| SpecError::whole("tunnel", "", "a name is required"))?
            .to_owned();
        ifname(&name, "name", &name)?;
        let (mut mode, mut local, mut remote) = (None, None, None);
        let mut def = TunnelDef {
            name: name.clone(),
            mode: Mode::Gretap,
            local: Ipv4Addr::UNSPECIFIED.into(),
            remote: Ipv4Addr::UNSPECIFIED.into(),
            ikey: None,
            okey: None,
            icsum: false,
            ocsum: false,
            iseq: false,
            oseq: false,
            ttl: DEFAULT_TTL,
            tos: 0,
            flowlabel: 0,
            encap_limit: None,
            pmtudisc: true,
            ignore_df: false,
            dev: None,
            mtu: None,
            addresses: Vec::new(),
            probe: None,
            probe_interval: std::time::Duration::from_secs(1),
        };
        while let Some(word) = it.next() {
            let mut value = || {
                it.next()
                    .ok_or_else(|| err(&name, word, "a value is required"))
            };
            match word {
                "mode" | "type" => {
                    let v = value()?;
                    mode = Some(
                        Mode::ALL
                            .into_iter()
                            .find(|m| m.to_string() == v)
                            .ok_or_else(|| {
                                SpecError::bad(
                                    "tunnel",
                                    &name,
                                    "mode",
                                    v,
                                    "is not gretap, gre, ip6gretap or ip6gre",
                                )
                            })?,
                    )
                }
                "local" => local = Some(parse_value(&name, word, value()?, "an IP address")?),
                "remote" => remote = Some(parse_value(&name, word, value()?, "an IP address")?),
                "flowlabel" => {
                    let v = value()?;
                    def.flowlabel = match v {
                        "inherit" => FLOWLABEL_INHERIT,
                        _ => {
                            // iproute2 reads it in hexadecimal.
                            let digits = v.strip_prefix("0x").unwrap_or(v);
                            u32::from_str_radix(digits, 16)
                                .ok()
                                .filter(|l| *l <= 0xfffff)
                                .ok_or_else(|| {
                                    SpecError::bad(
                                        "tunnel",
                                        &name,
                                        word,
                                        v,
                                        "is not a flow label (hexadecimal 0 to fffff, or inherit)",
                                    )
                                })?
                        }
                    };
                }
                "encaplimit" => {
                    let v = value()?;
                    def.encap_limit = match v {
                        "none" => None,
                        _ => Some(v.parse::<u8>().map_err(|_| {
                            SpecError::bad(
                                "tunnel",
                                &name,
                                word,
                                v,
                                "is not an encapsulation limit (0 to 255, or none)",
                            )
                        })?),
                    };
                }
                "key" => {
                    let k = parse_key(&name, word, value()?)?;
                    (def.ikey, def.okey) = (Some(k), Some(k));
                }
                "ikey" => def.ikey = Some(parse_key(&name, word, value()?)?),
                "okey" => def.okey = Some(parse_key(&name, word, value()?)?),
                // iproute2's words, each with its `no` form.
                "csum" | "nocsum" => (def.icsum, def.ocsum) = (word == "csum", word == "csum"),
                "icsum" | "noicsum" => def.icsum = word == "icsum",
                "ocsum" | "noocsum" => def.ocsum = word == "ocsum",
                "seq" | "noseq" => (def.iseq, def.oseq) = (word == "seq", word == "seq"),
                "iseq" | "noiseq" => def.iseq = word == "iseq",
                "oseq" | "nooseq" => def.oseq = word == "oseq",
                "ttl" | "hoplimit" => {
                    let v = value()?;
                    // 0 is inherit too, as in iproute2.
                    def.ttl = match v {
                        "inherit" => 0,
                        _ => parse_value(&name, "ttl", v, "a TTL (0 to 255, or inherit)")?,
                    };
                }
                "tos" | "dsfield" | "tclass" => def.tos = parse_tos(&name, value()?)?,
                "dev" => {
                    let d = value()?;
                    ifname(&name, "dev", d)?;
                    def.dev = Some(d.to_owned());
                }
                "mtu" => {
                    let v = value()?;
                    let m: u32 = parse_value(&name, word, v, "an MTU")?;
                    if m < 68 {
                        return Err(err(
                            &name,
                            "mtu",
                            format!("{m} is below the IPv4 minimum of 68"),
                        )
                        .value(v));
                    }
                    def.mtu = Some(m);
                }
                "address" | "addr" => def.addresses.push(parse_cidr(&name, value()?)?),
                "pmtudisc" | "nopmtudisc" => def.pmtudisc = word == "pmtudisc",
                "ignore-df" | "noignore-df" => def.ignore_df = word == "ignore-df",
                "probe" => def.probe = Some(parse_value(&name, word, value()?, "an IPv4 address")?),
                "probe-interval" => {
                    let v = value()?;
                    def.probe_interval = v
                        .parse::<f64>()
                        .ok()
                        .filter(|s| (0.01..=3600.0).contains(s))
                        .map(std::time::Duration::from_secs_f64)
                        .ok_or_else(|| {
                            err(&name, word, format!("{v:?} is not 0.01 to 3600 seconds")).value(v)
                        })?;
                }
                other => {
                    return Err(SpecError::whole(
                        "tunnel",
                        &name,
                        format!("unknown keyword {other:?}"),
                    ));
                }
            }
        }
        def.mode = mode.ok_or_else(|| {
            err(
                &name,
                "mode",
                "gretap, gre, ip6gretap or ip6gre is required",
            )
        })?;
        def.local = local.ok_or_else(|| err(&name, "local", "an address is required"))?;
        def.remote = remote.ok_or_else(|| err(&name, "remote", "an address is required"))?;
        for (field, a) in [("local", def.local), ("remote", def.remote)] {
            let broadcast = matches!(a, IpAddr::V4(v4) if v4.is_broadcast());
            if a.is_unspecified() || a.is_multicast() || broadcast {
                return Err(err(&name, field, format!("{a} is not a unicast address"))
                    .value(&a.to_string()));
            }
            if a.is_ipv6() != def.mode.ipv6() {
                return Err(err(
                    &name,
                    field,
                    format!(
                        "{a} is not an {} address, which mode {} runs over",
                        if def.mode.ipv6() { "IPv6" } else { "IPv4" },
                        def.mode
                    ),
                )
                .value(&a.to_string()));
            }
        }
        if def.flowlabel != 0 && !def.mode.ipv6() {
            return Err(err(
                &name,
                "flowlabel",
                "is for the IPv6 underlays (ip6gretap, ip6gre)",
            ));
        }
        if def.encap_limit.is_some() && !def.mode.ipv6() {
            return Err(err(
                &name,
                "encaplimit",
                "is for the IPv6 underlays (ip6gretap, ip6gre)",
            ));
        }
        if def.mode.ipv6() {
            for (set, word) in [(!def.pmtudisc, "nopmtudisc"), (def.ignore_df, "ignore-df")] {
                if set {
                    return Err(err(
                        &name,
                        word,
                        "is for the IPv4 underlays (gretap, gre): IPv6 is never fragmented \
                         on the way",
                    ));
                }
            }
        }
        // The kernel refuses it too: DF cannot be ignored where the tunnel
        // sets it on every packet.
        if def.ignore_df && def.pmtudisc {
            return Err(err(
                &name,
                "ignore-df",
                "needs nopmtudisc: with pmtudisc every outer packet has DF",
            ));
        }
        if def.probe.is_none() && words.iter().any(|w| w == "probe-interval") {
            return Err(err(&name, "probe-interval", "needs a probe address"));
        }
        if def.local == def.remote {
            return Err(err(
                &name,
                "remote",
                format!("{} is the local address", def.remote),
            )
            .value(&def.remote.to_string()));
        }
        Ok(def)
    }
}

/// Has the kernel resolve IPv6 `next_hop` on `iface` (on kernels without
/// managed neighbour entries): a datagram to its discard port makes it
/// solicit the neighbour.
fn solicit(iface: &str, ifindex: u32, next_hop: IpAddr) -> Result<()> {
    let s = socket2::Socket::new(socket2::Domain::IPV6, socket2::Type::DGRAM, None)?;
    s.bind_device(Some(iface.as_bytes()))?;
    let IpAddr::V6(nh) = next_hop else {
        return Ok(());
    };
    let scope = if nh.is_unicast_link_local() {
        ifindex
    } else {
        0
    };
    s.send_to(&[], &std::net::SocketAddrV6::new(nh, 9, 0, scope).into())?;
    Ok(())
}

/// The decapsulation key of a tunnel: its endpoints and the key it
/// receives.
fn keyed(cfg: &TunnelConfig) -> KeyedEndpoints {
    let keyed = cfg.flags & TUNNEL_F_IKEY != 0;
    KeyedEndpoints {
        local: cfg.local,
        remote: cfg.remote,
        key: if keyed { cfg.ikey } else { 0 },
        keyed: u32::from(keyed),
    }
}

/// The internal peer's name: derived from the tunnel's so it is found again
/// after a restart, hashed so any 15-byte name fits.
pub fn peer_name(name: &str) -> String {
    format!("ghp{:08x}", name_hash(name))
}

/// FNV-1a of a tunnel's name: stable across releases, unlike std's
/// hasher.
fn name_hash(name: &str) -> u32 {
    let mut h: u32 = 0x811c_9dc5;
    for b in name.bytes() {
        h = (h ^ u32::from(b)).wrapping_mul(0x0100_0193);
    }
    h
}

fn name_bytes(name: &str) -> [u8; 16] {
    let mut b = [0u8; 16];
    b[..name.len()].copy_from_slice(name.as_bytes());
    b
}

fn name_of(cfg: &TunnelConfig) -> String {
    let end = cfg.name.iter().position(|&b| b == 0).unwrap_or(16);
    String::from_utf8_lossy(&cfg.name[..end]).into_owned()
}

/// The tunnel maps of a datapath.
struct Maps {
    tunnels: Array<aya::maps::MapData, TunnelConfig>,
    by_dev: HashMap<aya::maps::MapData, u32, u32>,
    by_endp: HashMap<aya::maps::MapData, Endpoints, u32>,
    by_key: HashMap<aya::maps::MapData, KeyedEndpoints, u32>,
    by_local: HashMap<aya::maps::MapData, [u8; 16], u32>,
    counters: PerCpuArray<aya::maps::MapData, TunnelCounters>,
    seq: Array<aya::maps::MapData, TunnelSeq>,
    probe: Array<aya::maps::MapData, TunnelProbe>,
}

impl Maps {
    fn open(dp: &Datapath) -> Result<Self> {
        Ok(Self {
            tunnels: dp.map(names::MAP_TUNNELS)?.try_into()?,
            by_dev: dp.map(names::MAP_TUNNEL_BY_DEV)?.try_into()?,
            by_endp: dp.map(names::MAP_TUNNEL_BY_ENDPOINTS)?.try_into()?,
            by_key: dp.map(names::MAP_TUNNEL_BY_KEY)?.try_into()?,
            by_local: dp.map(names::MAP_TUNNEL_BY_LOCAL)?.try_into()?,
            counters: dp.map(names::MAP_TUNNEL_COUNTERS)?.try_into()?,
            seq: dp.map(names::MAP_TUNNEL_SEQ)?.try_into()?,
            probe: dp.map(names::MAP_TUNNEL_PROBE)?.try_into()?,
        })
    }

    /// Every active tunnel with its id.
    fn active(&self) -> Result<Vec<(u32, TunnelConfig)>> {
        let mut out = Vec::new();
        for id in 0..MAX_TUNNELS {
            let cfg = self.tunnels.get(&id, 0)?;
            if cfg.flags & TUNNEL_F_ACTIVE != 0 {
                out.push((id, cfg));
            }
        }
        Ok(out)
    }

    fn reset_counters(&mut self, id: u32, probe: Option<Ipv4Addr>) -> Result<()> {
        let zero = PerCpuValues::try_from(vec![
            TunnelCounters::default();
            aya::util::nr_cpus().map_err(|(_, e)| e)?
        ])?;
        self.counters.set(id, zero, 0)?;
        // A new tunnel numbers from the start, and expects any number.
        self.seq.set(id, TunnelSeq::default(), 0)?;
        // Off until a daemon probes it.
        let target = probe.map_or([0; 4], |a| a.octets());
        self.probe.set(
            id,
            TunnelProbe {
                target,
                ..Default::default()
            },
            0,
        )?;
        Ok(())
    }
}

fn ignore_missing(r: Result<(), MapError>) -> Result<()> {
    match r {
        Ok(()) | Err(MapError::KeyNotFound) => Ok(()),
        Err(MapError::SyscallError(e)) if e.io_error.raw_os_error() == Some(libc::ENOENT) => Ok(()),
        Err(e) => Err(e.into()),
    }
}

// Link pins are named by ifindex: bpffs refuses names with a '.', which
// interface names may have (eth0.100).

/// Creates the tunnel. Everything is validated before the host is
/// changed; a failure half-way undoes what was done.
pub async fn add(def: &TunnelDef, pin_dir: &Path) -> Result<()> {
    let nl = Netlink::new()?;
    let name = &def.name;
    let peer = peer_name(name);
    if nl.link_by_name(name).await?.is_some() {
        bail!("tunnel {name}: name: an interface named {name} already exists");
    }
    if nl.link_by_name(&peer).await?.is_some() {
        bail!("tunnel {name}: name: its internal interface {peer} already exists");
    }
    if !nl.has_address(def.local).await? {
        bail!(
            "tunnel {name}: local: {} is not an address of this host",
            def.local
        );
    }
    let route = nl
        .route_get(def.remote)
        .await?
        .ok_or_else(|| anyhow!("tunnel {name}: remote: no route to {}", def.remote))?;
    let underlay = match &def.dev {
        Some(dev) => {
            let link = nl
                .link_by_name(dev)
                .await?
                .ok_or_else(|| anyhow!("tunnel {name}: dev: interface {dev} does not exist"))?;
            if link.index != route.oif {
                bail!(
                    "tunnel {name}: dev: the route to {} leaves through ifindex {}, not {dev}",
                    def.remote,
                    route.oif
                );
            }
            link
        }
        None => nl.link_by_index(route.oif).await?.ok_or_else(|| {
            anyhow!(
                "tunnel {name}: the route to {} has no interface",
                def.remote
            )
        })?,
    };
    let max_mtu = underlay
        .mtu
        .checked_sub(def.overhead())
        .filter(|m| *m >= 68)
        .ok_or_else(|| {
            anyhow!(
                "tunnel {name}: dev: {} has MTU {}, too small for {} encapsulation",
                underlay.name,
                underlay.mtu,
                def.mode
            )
        })?;
    let mtu = def.mtu.unwrap_or(max_mtu);
    // Without DF larger packets are fragmented, as the kernel's tunnels
    // fragment them, up to what greha_gre_fragment cuts.
    let max_mtu = if def.pmtudisc {
        max_mtu
    } else {
        MAX_FRAGMENTED - def.overhead()
    };
    if mtu > max_mtu {
        bail!(
            "tunnel {name}: mtu: {mtu} is over {max_mtu}, the most {} carries with {} encapsulation",
            underlay.name,
            def.mode
        );
    }
    let next_hop = route.gateway.unwrap_or(def.remote);

    let dp = Datapath::open(pin_dir)?;
    let mut maps = Maps::open(&dp)?;
    let active = maps.active()?;
    // Tunnels between the same two hosts are told apart by the key they
    // receive, as the kernel's: a second one needs an ikey of its own.
    if let Some((_, other)) = active.iter().find(|(_, t)| {
        t.local == addr16(def.local)
            && t.remote == addr16(def.remote)
            && (t.flags & TUNNEL_F_IKEY != 0).then_some(t.ikey) == def.ikey
    }) {
        bail!(
            "tunnel {name}: local/remote: tunnel {} already runs from {} to {} with {}; \
             another between them needs a key of its own",
            name_of(other),
            def.local,
            def.remote,
            def.ikey.map_or("no key".to_owned(), |k| format!("key {k}"))
        );
    }
    let id = (0..MAX_TUNNELS)
        .find(|id| active.iter().all(|(a, _)| a != id))
        .ok_or_else(|| anyhow!("tunnel {name}: greha runs at most {MAX_TUNNELS} tunnels"))?;

    // From here on the host changes; undo on failure.
    let mut cfg = TunnelConfig {
        local: addr16(def.local),
        remote: addr16(def.remote),
        ikey: def.ikey.unwrap_or(0),
        okey: def.okey.unwrap_or(0),
        flags: if def.ikey.is_some() { TUNNEL_F_IKEY } else { 0 }
            | if def.okey.is_some() { TUNNEL_F_OKEY } else { 0 }
            | if def.icsum { TUNNEL_F_ICSUM } else { 0 }
            | if def.ocsum { TUNNEL_F_OCSUM } else { 0 }
            | if def.iseq { TUNNEL_F_ISEQ } else { 0 }
            | if def.oseq { TUNNEL_F_OSEQ } else { 0 }
            | if def.mode.ethernet() {
                TUNNEL_F_GRETAP
            } else {
                0
            }
            | if def.mode.ipv6() { TUNNEL_F_IPV6 } else { 0 }
            | if def.encap_limit.is_some() {
                TUNNEL_F_ENCAP_LIMIT
            } else {
                0
            }
            | if def.pmtudisc { 0 } else { TUNNEL_F_NOPMTUDISC }
            | if def.ignore_df { TUNNEL_F_IGNORE_DF } else { 0 },
        encap_limit: def.encap_limit.unwrap_or(0),
        underlay_ifindex: underlay.index,
        underlay_mtu: underlay.mtu,
        ttl: def.ttl,
        tos: def.tos,
        flowlabel: def.flowlabel,
        next_hop: addr16(next_hop),
        name: name_bytes(name),
        ..Default::default()
    };
    let result = setup(&nl, &dp, &mut maps, def, &peer, &underlay, id, &mut cfg).await;
    if let Err(e) = result {
        if let Err(undo) = teardown(&nl, &dp, &mut maps, id, &cfg).await {
            warn!("tunnel {name}: undoing a failed setup: {undo:#}");
        }
        drop(maps);
        dp.release_if_unused()?;
        return Err(e);
    }
    info!(
        tunnel = %name, mode = %def.mode, local = %def.local, remote = %def.remote,
        underlay = %underlay.name, mtu, "tunnel up"
    );
    Ok(())
}

#[allow(clippy::too_many_arguments)]
async fn setup(
    nl: &Netlink,
    dp: &Datapath,
    maps: &mut Maps,
    def: &TunnelDef,
    peer: &str,
    underlay: &Link,
    id: u32,
    cfg: &mut TunnelConfig,
) -> Result<()> {
    let name = &def.name;
    let mtu = def.mtu.unwrap_or(cfg.underlay_mtu - def.overhead());
    // A checksum or sequence number is per packet: one segment per packet,
    // as the kernel turns GSO off for such tunnels.
    let one_segment = def.ocsum || def.oseq;
    nl.add_veth(name, peer, mtu, one_segment).await?;
    let dev = nl
        .link_by_name(name)
        .await?
        .context("the tunnel interface vanished")?;
    let peer_link = nl
        .link_by_name(peer)
        .await?
        .context("the internal interface vanished")?;
    cfg.dev_ifindex = dev.index;
    cfg.peer_ifindex = peer_link.index;
    cfg.dev_mac = dev.mac;
    cfg.peer_mac = peer_link.mac;
    // The encap program's FIB lookup runs as if from the peer, and the
    // kernel answers it only where forwarding is on. Nothing but tunnel
    // frames ever reaches the peer, so this routes nothing else.
    let family = if def.mode.ipv6() { "ipv6" } else { "ipv4" };
    let forwarding = format!("/proc/sys/net/{family}/conf/{peer}/forwarding");
    std::fs::write(&forwarding, "1").with_context(|| format!("enabling {forwarding}"))?;

    // The underlay's decap attachment is shared by its tunnels.
    let decap_pin = pins::decap(cfg.underlay_ifindex);
    if !dp.pinned_link_exists(&decap_pin) {
        dp.attach_tc_pinned(
            names::PROG_GRE_DECAP,
            &underlay.name,
            TcAttachType::Ingress,
            &decap_pin,
        )?;
    }
    dp.attach_tc_pinned(
        names::PROG_GRE_ENCAP,
        name,
        TcAttachType::Egress,
        &pins::encap(dev.index),
    )?;

    if !def.pmtudisc {
        let (outer, inner) = fragmenting_pair(nl, dp, name).await?;
        cfg.frag_ifindex = outer;
        // The fragmentation finds its tunnel by the interface it runs on.
        maps.by_dev.insert(inner, id, 0)?;
    }

    maps.reset_counters(id, def.probe)?;
    cfg.flags |= TUNNEL_F_ACTIVE;
    let endpoints = Endpoints {
        local: cfg.local,
        remote: cfg.remote,
    };
    maps.tunnels.set(id, *cfg, 0)?;
    maps.by_dev.insert(cfg.dev_ifindex, id, 0)?;
    maps.by_key.insert(keyed(cfg), id, 0)?;
    if maps.by_endp.get(&endpoints, 0).is_err() {
        maps.by_endp.insert(endpoints, id, 0)?;
    }
    if maps.by_local.get(&cfg.local, 0).is_err() {
        maps.by_local.insert(cfg.local, id, 0)?;
    }

    for (addr, prefix) in &def.addresses {
        nl.add_address_labeled(dev.index, *addr, *prefix, None)
            .await
            .with_context(|| format!("tunnel {name}: address"))?;
    }
    nl.set_up(peer_link.index, true).await?;
    nl.set_up(dev.index, def.mode.ethernet()).await?;

    let next_hop = addr_of(def.mode.ipv6(), cfg.next_hop);
    if !nl.has_neighbour(cfg.underlay_ifindex, next_hop).await? {
        nl.add_managed_neighbour(cfg.underlay_ifindex, next_hop)
            .await?;
        cfg.flags |= TUNNEL_F_OWN_NEIGH;
        maps.tunnels.set(id, *cfg, 0)?;
        if !nl
            .neighbour_is_managed(cfg.underlay_ifindex, next_hop)
            .await?
        {
            // Resolved once now, by asking; the kernel fills the entry
            // from the reply. (IP frames resolve it again by themselves:
            // the encap's bpf_redirect_neigh.)
            let asked = match (def.local, next_hop) {
                (IpAddr::V4(local), IpAddr::V4(nh)) => crate::arp::ArpSender::open()
                    .and_then(|arp| arp.request(cfg.underlay_ifindex, underlay.mac, local, nh)),
                // A datagram to the discard port: the kernel resolves the
                // next hop by Neighbor Solicitation to send it.
                _ => solicit(&underlay.name, cfg.underlay_ifindex, next_hop),
            };
            if let Err(e) = asked {
                warn!("tunnel {name}: cannot resolve the next hop {next_hop}: {e:#}");
            }
        }
    }
    Ok(())
}

/// A `nopmtudisc` tunnel's fragmenting veth pair (see greha-ebpf's
/// `fragment`): its outer end without checksum offload, so the kernel
/// completes checksums and cuts GSO packets sent into it, and
/// `greha_gre_fragment` at the inner end's ingress. (outer, inner)
/// ifindex. Its MTU takes any packet greha fragments.
async fn fragmenting_pair(nl: &Netlink, dp: &Datapath, name: &str) -> Result<(u32, u32)> {
    let (outer, inner) = fragmenting_names(name);
    nl.add_veth(&outer, &inner, MAX_FRAGMENTED, false).await?;
    let mut index = [0; 2];
    for (i, dev) in [&outer, &inner].into_iter().enumerate() {
        let link = nl
            .link_by_name(dev)
            .await?
            .with_context(|| format!("{dev} vanished after it was made"))?;
        index[i] = link.index;
    }
    crate::ethtool::tx_checksum_off(&outer)?;
    // Nothing of the host's own may cross the pair (IPv6 would send
    // router solicitations through it).
    for dev in [&outer, &inner] {
        let sysctl = format!("/proc/sys/net/ipv6/conf/{dev}/disable_ipv6");
        if Path::new(&sysctl).exists() {
            std::fs::write(&sysctl, "1").with_context(|| format!("writing {sysctl}"))?;
        }
    }
    dp.attach_tc_pinned(
        names::PROG_GRE_FRAGMENT,
        &inner,
        TcAttachType::Ingress,
        &pins::fragment(index[0]),
    )?;
    for i in index {
        nl.set_up(i, false).await?;
    }
    Ok((index[0], index[1]))
}

/// The fragmenting pair's names, found again from the tunnel's.
fn fragmenting_names(name: &str) -> (String, String) {
    let h = name_hash(name);
    (format!("gfo{h:08x}"), format!("gfi{h:08x}"))
}

/// Takes a tunnel down, tolerating pieces that are already gone (a failed
/// setup, an interface deleted by hand).
async fn teardown(
    nl: &Netlink,
    dp: &Datapath,
    maps: &mut Maps,
    id: u32,
    cfg: &TunnelConfig,
) -> Result<()> {
    maps.tunnels.set(id, TunnelConfig::default(), 0)?;
    let others: Vec<(u32, TunnelConfig)> = maps
        .active()?
        .into_iter()
        .filter(|(other, _)| *other != id)
        .collect();

    // The tunnel interface's entry, and the fragmenting pair's.
    let devs: Vec<u32> = maps
        .by_dev
        .iter()
        .filter_map(|e| e.ok())
        .filter(|(_, t)| *t == id)
        .map(|(dev, _)| dev)
        .collect();
    for dev in devs {
        ignore_missing(maps.by_dev.remove(&dev))?;
    }
    // Only this tunnel's own entry: a failed setup may not have made it,
    // and another tunnel of the pair may hold the same key.
    if maps.by_key.get(&keyed(cfg), 0).ok() == Some(id) {
        ignore_missing(maps.by_key.remove(&keyed(cfg)))?;
    }
    let endpoints = Endpoints {
        local: cfg.local,
        remote: cfg.remote,
    };
    if maps.by_endp.get(&endpoints, 0).ok() == Some(id) {
        match others
            .iter()
            .find(|(_, t)| t.local == cfg.local && t.remote == cfg.remote)
        {
            Some((other, _)) => maps.by_endp.insert(endpoints, *other, 0)?,
            None => ignore_missing(maps.by_endp.remove(&endpoints))?,
        }
    }
    if maps.by_local.get(&cfg.local, 0).ok() == Some(id) {
        match others.iter().find(|(_, t)| t.local == cfg.local) {
            Some((other, _)) => maps.by_local.insert(cfg.local, *other, 0)?,
            None => ignore_missing(maps.by_local.remove(&cfg.local))?,
        }
    }
    dp.detach_tc(
        names::PROG_GRE_ENCAP,
        cfg.dev_ifindex,
        TcAttachType::Egress,
        &pins::encap(cfg.dev_ifindex),
    )?;
    if cfg.dev_ifindex != 0 {
        // Deleting one end of the veth pair deletes both.
        nl.del_link(cfg.dev_ifindex).await?;
    }
    // The fragmenting pair: made by a setup that failed after it too.
    let (outer, _) = fragmenting_names(&name_of(cfg));
    if let Some(link) = nl.link_by_name(&outer).await? {
        nl.del_link(link.index).await?;
        // The interface gone, only the attachment's pin is left.
        dp.detach_tc(
            names::PROG_GRE_FRAGMENT,
            link.index,
            TcAttachType::Ingress,
            &pins::fragment(link.index),
        )?;
    }
    if !others
        .iter()
        .any(|(_, t)| t.underlay_ifindex == cfg.underlay_ifindex)
    {
        dp.detach_tc(
            names::PROG_GRE_DECAP,
            cfg.underlay_ifindex,
            TcAttachType::Ingress,
            &pins::decap(cfg.underlay_ifindex),
        )?;
    }
    if cfg.flags & TUNNEL_F_OWN_NEIGH != 0 {
        let shared = others.iter().find(|(_, t)| {
            t.underlay_ifindex == cfg.underlay_ifindex && t.next_hop == cfg.next_hop
        });
        match shared {
            // Hand the entry over to a tunnel that still needs it.
            Some((other, t)) => {
                let mut t = *t;
                t.flags |= TUNNEL_F_OWN_NEIGH;
                maps.tunnels.set(*other, t, 0)?;
            }
            None => {
                let ipv6 = cfg.flags & TUNNEL_F_IPV6 != 0;
                nl.del_neighbour(cfg.underlay_ifindex, addr_of(ipv6, cfg.next_hop))
                    .await?
            }
        }
    }
    Ok(())
}

/// Removes the tunnel named `name`, and the datapath with the last one.
pub async fn del(name: &str, pin_dir: &Path) -> Result<()> {
    let nl = Netlink::new()?;
    let dp = Datapath::open(pin_dir)?;
    let mut maps = Maps::open(&dp)?;
    let Some((id, cfg)) = maps.active()?.into_iter().find(|(_, t)| name_of(t) == name) else {
        drop(maps);
        // Opening may have loaded a datapath just now; leave none behind.
        dp.release_if_unused()?;
        bail!("tunnel {name}: no such greha tunnel");
    };
    teardown(&nl, &dp, &mut maps, id, &cfg).await?;
    drop(maps);
    dp.release_if_unused()?;
    info!(tunnel = name, "tunnel removed");
    Ok(())
}

/// A tunnel as `greha tunnel show` and `greha status` report it.
#[derive(Debug, Serialize)]
pub struct TunnelStatus {
    pub name: String,
    pub mode: Mode,
    pub local: IpAddr,
    pub remote: IpAddr,
    /// The key both ways, when it is one (`key K`).
    pub key: Option<u32>,
    /// The key required on receive.
    pub ikey: Option<u32>,
    /// The key sent.
    pub okey: Option<u32>,
    /// GRE checksums required on receive.
    pub icsum: bool,
    /// GRE checksums sent.
    pub ocsum: bool,
    /// Sequence numbers required, in order, on receive.
    pub iseq: bool,
    /// Sequence numbers sent.
    pub oseq: bool,
    /// Outer TTL, 0 for inherit.
    pub ttl: u8,
    /// Outer TOS (IPv6: traffic class), 1 for inherit.
    pub tos: u8,
    /// IPv6 underlay: the flow label (1 << 31 for inherit).
    pub flowlabel: u32,
    /// IPv6 underlay: the encapsulation limit sent; None for none.
    pub encaplimit: Option<u8>,
    /// False: `nopmtudisc`.
    pub pmtudisc: bool,
    pub ignore_df: bool,
    pub underlay_ifindex: u32,
    /// The largest outer packet sent: the underlay's MTU, or the smaller
    /// path MTU the daemon learned.
    pub path_mtu: u32,
    /// The tunnel interface is up with carrier.
    pub up: bool,
    /// Where encap and decap run: "tc" (tcx), the only datapath tunnels
    /// use (see greha-ebpf's gre.rs for why not XDP).
    pub datapath: &'static str,
    pub counters: TunnelCounters,
    /// The far end's liveness; None without a probe address.
    pub probe: Option<ProbeStatus>,
}

/// A tunnel's liveness as `greha tunnel show` and status report it.
#[derive(Debug, Serialize)]
pub struct ProbeStatus {
    pub target: Ipv4Addr,
    /// "alive", "dead", "unknown" (no verdict yet), or "off" (no greha
    /// daemon probes it).
    pub state: &'static str,
    pub sent: u64,
    pub answered: u64,
    /// Changes between alive and dead.
    pub changes: u64,
}

impl ProbeStatus {
    fn of(p: &TunnelProbe) -> Option<Self> {
        (p.target != [0; 4]).then(|| Self {
            target: Ipv4Addr::from(p.target),
            state: probe_state_name(p.state),
            sent: p.sent,
            answered: p.answered,
            changes: p.changes,
        })
    }
}

pub fn probe_state_name(state: u32) -> &'static str {
    match state {
        PROBE_UNKNOWN => "unknown",
        PROBE_ALIVE => "alive",
        PROBE_DEAD => "dead",
        _ => "off",
    }
}

/// The id of the running tunnel `name` under `pin_dir`.
pub fn id_of(pin_dir: &Path, name: &str) -> Result<Option<u32>> {
    let data = aya::maps::MapData::from_pin(pin_dir.join(names::MAP_TUNNELS))?;
    let tunnels: Array<_, TunnelConfig> = aya::maps::Map::from_map_data(data)?.try_into()?;
    for id in 0..MAX_TUNNELS {
        let t = tunnels.get(&id, 0)?;
        if t.flags & TUNNEL_F_ACTIVE != 0 && name_of(&t) == name {
            return Ok(Some(id));
        }
    }
    Ok(None)
}

/// The pinned probe map, for the daemon's prober to write.
pub fn probe_map(pin_dir: &Path) -> Result<Array<aya::maps::MapData, TunnelProbe>> {
    let data = aya::maps::MapData::from_pin(pin_dir.join(names::MAP_TUNNEL_PROBE))?;
    Ok(aya::maps::Map::from_map_data(data)?.try_into()?)
}

/// Whether interface `name` (in this network namespace) is up with
/// carrier. An ioctl rather than /sys, which shows the namespace /sys was
/// mounted in.
fn link_up(name: &str) -> bool {
    if name.len() >= libc::IFNAMSIZ {
        return false;
    }
    // SAFETY: a zeroed ifreq with the name copied in, for SIOCGIFFLAGS on a
    // socket opened and closed here.
    unsafe {
        let fd = libc::socket(libc::AF_INET, libc::SOCK_DGRAM | libc::SOCK_CLOEXEC, 0);
        if fd < 0 {
            return false;
        }
        let mut req: libc::ifreq = std::mem::zeroed();
        for (d, s) in req.ifr_name.iter_mut().zip(name.bytes()) {
            *d = s as libc::c_char;
        }
        let ok = libc::ioctl(fd, libc::SIOCGIFFLAGS, &mut req) == 0;
        libc::close(fd);
        let flags = i32::from(req.ifr_ifru.ifru_flags);
        ok && flags & libc::IFF_UP != 0 && flags & libc::IFF_RUNNING != 0
    }
}

impl TunnelStatus {
    /// Whether this running tunnel is the one `def` defines (its endpoints,
    /// mode and key; not its addresses, which the host may have changed).
    pub fn matches(&self, def: &TunnelDef) -> bool {
        self.name == def.name
            && self.mode == def.mode
            && self.local == def.local
            && self.remote == def.remote
            && self.ikey == def.ikey
            && self.okey == def.okey
            && (self.icsum, self.ocsum, self.iseq, self.oseq)
                == (def.icsum, def.ocsum, def.iseq, def.oseq)
            && self.ttl == def.ttl
            && self.tos == def.tos
            && self.flowlabel == def.flowlabel
            && self.encaplimit == def.encap_limit
    }
}

/// Sets the largest outer packet that each tunnel to `remote` sends: the
/// path MTU learned (`Some`), never above the underlay's, or the
/// underlay's again (`None`). The tunnels changed, with the value set.
pub async fn set_path_mtu(
    pin_dir: &Path,
    remote: IpAddr,
    mtu: Option<u32>,
) -> Result<Vec<(String, u32)>> {
    set_underlay_mtus(
        pin_dir,
        |cfg| addr_of(cfg.flags & TUNNEL_F_IPV6 != 0, cfg.remote) == remote,
        mtu,
    )
    .await
}

/// Every tunnel back to its underlay's MTU: a path MTU an earlier daemon
/// learned has no known time left.
pub async fn reset_path_mtus(pin_dir: &Path) -> Result<()> {
    set_underlay_mtus(pin_dir, |_| true, None).await.map(drop)
}

async fn set_underlay_mtus(
    pin_dir: &Path,
    which: impl Fn(&TunnelConfig) -> bool,
    mtu: Option<u32>,
) -> Result<Vec<(String, u32)>> {
    if !crate::bpffs::pin_exists(&pin_dir.join(names::MAP_TUNNELS))? {
        return Ok(Vec::new());
    }
    let data = aya::maps::MapData::from_pin(pin_dir.join(names::MAP_TUNNELS))?;
    let mut tunnels: Array<_, TunnelConfig> = aya::maps::Map::from_map_data(data)?.try_into()?;
    let nl = Netlink::new()?;
    let mut changed = Vec::new();
    for id in 0..MAX_TUNNELS {
        let cfg = tunnels.get(&id, 0)?;
        if cfg.flags & TUNNEL_F_ACTIVE == 0 || !which(&cfg) {
            continue;
        }
        let Some(underlay) = nl.link_by_index(cfg.underlay_ifindex).await? else {
            continue;
        };
        let want = mtu.map_or(underlay.mtu, |m| m.min(underlay.mtu));
        // Read again just before the write: the slot may have been freed
        // (tunnel del) while the netlink call ran.
        let mut now = tunnels.get(&id, 0)?;
        if now.flags & TUNNEL_F_ACTIVE == 0 || now.underlay_mtu == want {
            continue;
        }
        now.underlay_mtu = want;
        tunnels.set(id, now, 0)?;
        changed.push((name_of(&now), want));
    }
    Ok(changed)
}

/// Whether any tunnel is pinned under `pin_dir`: a look the daemon can
/// afford every second (one key of one map, where `list` reads them all).
pub fn any(pin_dir: &Path) -> bool {
    let pin = pin_dir.join(names::MAP_TUNNEL_BY_DEV);
    let Ok(data) = aya::maps::MapData::from_pin(pin) else {
        return false;
    };
    let map = aya::maps::Map::HashMap(data);
    let Ok(by_dev) = HashMap::<_, u32, u32>::try_from(&map) else {
        return false;
    };
    by_dev.keys().next().is_some()
}

/// The tunnels pinned under `pin_dir`, read without taking the lock (a
/// read-only view, usable while another greha changes them).
pub fn list(pin_dir: &Path) -> Result<Vec<TunnelStatus>> {
    if !crate::bpffs::pin_exists(&pin_dir.join(names::MAP_TUNNELS))? {
        return Ok(Vec::new());
    }
    let open = |name: &str| -> Result<aya::maps::Map> {
        let data = aya::maps::MapData::from_pin(pin_dir.join(name))?;
        Ok(aya::maps::Map::from_map_data(data)?)
    };
    let tunnels: Array<_, TunnelConfig> = open(names::MAP_TUNNELS)?.try_into()?;
    let counters: PerCpuArray<_, TunnelCounters> = open(names::MAP_TUNNEL_COUNTERS)?.try_into()?;
    let probes: Array<_, TunnelProbe> = open(names::MAP_TUNNEL_PROBE)?.try_into()?;
    let mut out = Vec::new();
    for id in 0..MAX_TUNNELS {
        let t = tunnels.get(&id, 0)?;
        if t.flags & TUNNEL_F_ACTIVE == 0 {
            continue;
        }
        let mut total = TunnelCounters::default();
        for c in counters.get(&id, 0)?.iter() {
            total.add(c);
        }
        out.push(TunnelStatus {
            up: link_up(&name_of(&t)),
            datapath: "tc",
            name: name_of(&t),
            mode: Mode::of_flags(t.flags),
            local: addr_of(t.flags & TUNNEL_F_IPV6 != 0, t.local),
            remote: addr_of(t.flags & TUNNEL_F_IPV6 != 0, t.remote),
            key: (t.flags & TUNNEL_F_IKEY != 0 && t.flags & TUNNEL_F_OKEY != 0 && t.ikey == t.okey)
                .then_some(t.ikey),
            ikey: (t.flags & TUNNEL_F_IKEY != 0).then_some(t.ikey),
            okey: (t.flags & TUNNEL_F_OKEY != 0).then_some(t.okey),
            icsum: t.flags & TUNNEL_F_ICSUM != 0,
            ocsum: t.flags & TUNNEL_F_OCSUM != 0,
            iseq: t.flags & TUNNEL_F_ISEQ != 0,
            oseq: t.flags & TUNNEL_F_OSEQ != 0,
            ttl: t.ttl,
            tos: t.tos,
            flowlabel: t.flowlabel,
            encaplimit: (t.flags & TUNNEL_F_ENCAP_LIMIT != 0).then_some(t.encap_limit),
            pmtudisc: t.flags & TUNNEL_F_NOPMTUDISC == 0,
            ignore_df: t.flags & TUNNEL_F_IGNORE_DF != 0,
            underlay_ifindex: t.underlay_ifindex,
            path_mtu: t.underlay_mtu,
            counters: total,
            probe: ProbeStatus::of(&probes.get(&id, 0)?),
        });
    }
    Ok(out)
}

pub fn print_table(tunnels: &[TunnelStatus]) {
    println!(
        "{:<16} {:<5} {:<9} {:<16} {:<16} {:>10} {:>10} {:>10} {:>8}  FAR END",
        "TUNNEL", "STATE", "MODE", "LOCAL", "REMOTE", "KEY", "RX_PKTS", "TX_PKTS", "DROPS"
    );
    for t in tunnels {
        let c = &t.counters;
        let drops = c.rx_drop_wrong_key
            + c.rx_drop_wrong_source
            + c.rx_drop_bad_flags
            + c.rx_drop_bad_protocol
            + c.rx_drop_bad_checksum
            + c.rx_drop_truncated
            + c.rx_drop_out_of_order
            + c.tx_drop_too_big
            + c.tx_drop_no_next_hop
            + c.tx_drop_error;
        let far_end = t.probe.as_ref().map_or("-".to_owned(), |p| {
            format!(
                "{} {} ({}/{} answered)",
                p.target, p.state, p.answered, p.sent
            )
        });
        println!(
            "{:<16} {:<5} {:<9} {:<16} {:<16} {:>10} {:>10} {:>10} {:>8}  {far_end}",
            t.name,
            if t.up { "up" } else { "down" },
            t.mode.to_string(),
            t.local.to_string(),
            t.remote.to_string(),
            match (t.ikey, t.okey) {
                (None, None) => "-".into(),
                (i, o) if i == o => i.map_or("-".into(), |k| k.to_string()),
                (i, o) => format!(
                    "{}/{}",
                    i.map_or("-".into(), |k| k.to_string()),
                    o.map_or("-".into(), |k| k.to_string())
                ),
            },
            c.rx_packets,
            c.tx_packets,
            drops
        );
    }
}

#[cfg(test)]
#[path = "tunnel_tests.rs"]
mod tests;
