//! The netlink operations greha needs (links, addresses, routes,
//! neighbours), on rtnetlink. Each one is a small async function, so the
//! callers read as the list of steps they perform.
use std::net::{IpAddr, Ipv4Addr};

use anyhow::{Context as _, Result, anyhow, bail};
use futures_util::TryStreamExt as _;
use netlink_packet_route::{
    link::{LinkAttribute, LinkMessage},
    neighbour::{NeighbourAddress, NeighbourAttribute, NeighbourExtFlags, NeighbourState},
    route::{RouteAddress, RouteAttribute},
};
use rtnetlink::{Handle, LinkUnspec, LinkVeth, RouteMessageBuilder};

/// What greha needs to know of an interface.
#[derive(Clone, Debug)]
pub struct Link {
    pub index: u32,
    pub name: String,
    pub mtu: u32,
    pub mac: [u8; 6],
    /// Administratively up with carrier: able to carry traffic.
    pub up: bool,
}

pub struct Netlink {
    handle: Handle,
}

/// What `ip addr add` may say of an address besides itself.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct AddrOptions {
    /// The ifconfig alias (IPv4), e.g. "eth0:vip".
    pub label: Option<String>,
    /// IPv4's broadcast address; derived from the prefix when not given.
    pub brd: Option<Ipv4Addr>,
    /// iproute2's scope number (0 global, 253 link, 254 host).
    pub scope: Option<u8>,
    /// The other end of a point-to-point address.
    pub peer: Option<IpAddr>,
    /// No prefix route for the address's subnet.
    pub noprefixroute: bool,
}

/// Where packets to a destination leave: the interface and, when the
/// destination is not on-link, the gateway.
#[derive(Clone, Copy, Debug)]
pub struct Route {
    pub oif: u32,
    pub gateway: Option<IpAddr>,
}

fn errno(e: &rtnetlink::Error) -> Option<i32> {
    match e {
        rtnetlink::Error::NetlinkError(m) => m.code.map(|c| -c.get()),
        _ => None,
    }
}

impl Netlink {
    /// Opens a netlink socket in the current network namespace. Needs a
    /// tokio runtime.
    pub fn new() -> Result<Self> {
        let (conn, handle, _) = rtnetlink::new_connection().context("opening netlink")?;
        tokio::spawn(conn);
        Ok(Self { handle })
    }

    fn parse_link(msg: LinkMessage) -> Link {
        use netlink_packet_route::link::LinkFlags;
        let mut link = Link {
            index: msg.header.index,
            name: String::new(),
            mtu: 0,
            mac: [0; 6],
            up: msg
                .header
                .flags
                .contains(LinkFlags::Up | LinkFlags::LowerUp),
        };
        for attr in msg.attributes {
            match attr {
                LinkAttribute::IfName(n) => link.name = n,
                LinkAttribute::Mtu(m) => link.mtu = m,
                LinkAttribute::Address(a) if a.len() == 6 => link.mac.copy_from_slice(&a),
                _ => {}
            }
        }
        link
    }

    pub async fn link_by_name(&self, name: &str) -> Result<Option<Link>> {
        let mut links = self
            .handle
            .link()
            .get()
            .match_name(name.to_owned())
            .execute();
        match links.try_next().await {
            Ok(Some(msg)) => Ok(Some(Self::parse_link(msg))),
            Ok(None) => Ok(None),
            Err(e) if errno(&e) == Some(libc::ENODEV) => Ok(None),
            Err(e) => Err(e).with_context(|| format!("looking up interface {name}")),
        }
    }

    pub async fn link_by_index(&self, index: u32) -> Result<Option<Link>> {
        let mut links = self.handle.link().get().match_index(index).execute();
        match links.try_next().await {
            Ok(Some(msg)) => Ok(Some(Self::parse_link(msg))),
            Ok(None) => Ok(None),
            Err(e) if errno(&e) == Some(libc::ENODEV) => Ok(None),
            Err(e) => Err(e).with_context(|| format!("looking up interface {index}")),
        }
    }

    /// Whether `addr` is configured on any interface of this host.
    pub async fn has_address(&self, addr: IpAddr) -> Result<bool> {
        use netlink_packet_route::address::AddressAttribute;
        let mut addrs = self.handle.address().get().execute();
        while let Some(msg) = addrs.try_next().await.context("listing addresses")? {
            // IPv4 names its own address Local; IPv6 only Address.
            if msg.attributes.iter().any(|a| match a {
                AddressAttribute::Local(l) => *l == addr,
                AddressAttribute::Address(l) => addr.is_ipv6() && *l == addr,
                _ => false,
            }) {
                return Ok(true);
            }
        }
        Ok(false)
    }

    /// `ip route get DST`: the kernel's own answer, policy routing included.
    pub async fn route_get(&self, dst: IpAddr) -> Result<Option<Route>> {
        let msg = match dst {
            IpAddr::V4(d) => RouteMessageBuilder::<Ipv4Addr>::new()
                .destination_prefix(d, 32)
                .build(),
            IpAddr::V6(d) => RouteMessageBuilder::<std::net::Ipv6Addr>::new()
                .destination_prefix(d, 128)
                .build(),
        };
        let mut routes = self.handle.route().get(msg).execute();
        let found = match routes.try_next().await {
            Ok(found) => found,
            Err(e) if errno(&e) == Some(libc::ENETUNREACH) => None,
            Err(e) => return Err(e).with_context(|| format!("route lookup for {dst}")),
        };
        Ok(found.and_then(|r| {
            let mut oif = None;
            let mut gateway = None;
            for attr in r.attributes {
                match attr {
                    RouteAttribute::Oif(i) => oif = Some(i),
                    RouteAttribute::Gateway(RouteAddress::Inet(g)) => gateway = Some(g.into()),
                    RouteAttribute::Gateway(RouteAddress::Inet6(g)) => gateway = Some(g.into()),
                    _ => {}
                }
            }
            oif.map(|oif| Route { oif, gateway })
        }))
    }

    /// A veth pair; `one_segment` caps `name`'s GSO packets at one segment.
    pub async fn add_veth(
        &self,
        name: &str,
        peer: &str,
        mtu: u32,
        one_segment: bool,
    ) -> Result<()> {
        let mut msg = LinkVeth::new(name, peer).mtu(mtu).build();
        if one_segment {
            msg.attributes.push(LinkAttribute::GsoMaxSegs(1));
        }
        // The peer takes its MTU from its own nested message; without it
        // the peer would keep 1500 and accept frames the tunnel cannot carry.
        if let Some(info) = msg.attributes.iter_mut().find_map(|a| match a {
            LinkAttribute::LinkInfo(i) => Some(i),
            _ => None,
        }) {
            use netlink_packet_route::link::{InfoData, InfoVeth, LinkInfo};
            for i in info.iter_mut() {
                if let LinkInfo::Data(InfoData::Veth(InfoVeth::Peer(p))) = i {
                    p.attributes.push(LinkAttribute::Mtu(mtu));
                }
            }
        }
        self.handle
            .link()
            .add(msg)
            .execute()
            .await
            .with_context(|| format!("creating interface {name}"))
    }

    /// A macvlan `name` on `base` with MAC `mac`, private mode (keepalived's
    /// use_vmac), up.
    pub async fn add_vmac(&self, name: &str, base: u32, mac: [u8; 6]) -> Result<()> {
        use netlink_packet_route::link::MacVlanMode;
        let msg = rtnetlink::LinkMacVlan::new(name, base, MacVlanMode::Private)
            .address(mac.to_vec())
            .up()
            .build();
        self.handle
            .link()
            .add(msg)
            .execute()
            .await
            .with_context(|| format!("creating the virtual MAC interface {name}"))
    }

    /// Brings a link up, optionally with ARP off (an L3 tunnel).
    pub async fn set_up(&self, index: u32, arp: bool) -> Result<()> {
        let msg = LinkUnspec::new_with_index(index).arp(arp).up().build();
        self.handle
            .link()
            .set(msg)
            .execute()
            .await
            .with_context(|| format!("bringing interface {index} up"))
    }

    pub async fn del_link(&self, index: u32) -> Result<()> {
        match self.handle.link().del(index).execute().await {
            Ok(()) => Ok(()),
            Err(e) if errno(&e) == Some(libc::ENODEV) => Ok(()),
            Err(e) => Err(e).with_context(|| format!("deleting interface {index}")),
        }
    }

    pub async fn add_address(&self, index: u32, addr: Ipv4Addr, prefix: u8) -> Result<()> {
        self.handle
            .address()
            .add(index, IpAddr::V4(addr), prefix)
            .execute()
            .await
            .with_context(|| format!("adding address {addr}/{prefix}"))
    }

    /// The addresses on interface `index` of both families, with prefix
    /// lengths, in the kernel's order (the primary first).
    pub async fn addresses(&self, index: u32) -> Result<Vec<(IpAddr, u8)>> {
        use netlink_packet_route::address::AddressAttribute;
        let mut out = Vec::new();
        let mut addrs = self
            .handle
            .address()
            .get()
            .set_link_index_filter(index)
            .execute();
        while let Some(msg) = addrs.try_next().await.context("listing addresses")? {
            // IPv4 names its own address Local; IPv6 only Address.
            let local = msg.attributes.iter().find_map(|a| match a {
                AddressAttribute::Local(l) => Some(*l),
                _ => None,
            });
            let addr = local.or_else(|| {
                msg.attributes.iter().find_map(|a| match a {
                    AddressAttribute::Address(a @ IpAddr::V6(_)) => Some(*a),
                    _ => None,
                })
            });
            if let Some(a) = addr {
                out.push((a, msg.header.prefix_len));
            }
        }
        Ok(out)
    }

    /// Adds `addr/prefix` to interface `index`, with `label` (the ifconfig
    /// alias, e.g. "eth0:vip") when given. False when it is there already.
    /// An IPv6 one skips duplicate address detection (keepalived's
    /// `nodad`): a VIP moving between routers is a duplicate for a moment
    /// by design, and DAD would keep it tentative, unusable, for a second.
    pub async fn add_address_labeled(
        &self,
        index: u32,
        addr: IpAddr,
        prefix: u8,
        label: Option<&str>,
    ) -> Result<bool> {
        let opts = AddrOptions {
            label: label.map(str::to_owned),
            ..AddrOptions::default()
        };
        self.add_address_with(index, addr, prefix, &opts).await
    }

    /// `add_address_labeled` with all of `ip addr add`'s options that a
    /// VIP may carry (keepalived's virtual_ipaddress: brd, scope, peer,
    /// noprefixroute, label).
    pub async fn add_address_with(
        &self,
        index: u32,
        addr: IpAddr,
        prefix: u8,
        opts: &AddrOptions,
    ) -> Result<bool> {
        use netlink_packet_route::address::{
            AddressAttribute, AddressFlags, AddressHeaderFlags, AddressScope,
        };
        let mut req = self.handle.address().add(index, addr, prefix);
        let mut flags = AddressFlags::empty();
        if addr.is_ipv6() {
            req.message_mut().header.flags |= AddressHeaderFlags::Nodad;
            flags |= AddressFlags::Nodad;
        }
        if opts.noprefixroute {
            flags |= AddressFlags::Noprefixroute;
        }
        let m = req.message_mut();
        if !flags.is_empty() {
            m.attributes.push(AddressAttribute::Flags(flags));
        }
        if let Some(label) = opts.label.as_deref().filter(|_| addr.is_ipv4()) {
            m.attributes.push(AddressAttribute::Label(label.to_owned()));
        }
        if let Some(scope) = opts.scope {
            m.header.scope = AddressScope::from(scope);
        }
        if let Some(brd) = opts.brd {
            m.attributes
                .retain(|a| !matches!(a, AddressAttribute::Broadcast(_)));
            m.attributes.push(AddressAttribute::Broadcast(brd));
        }
        if let Some(peer) = opts.peer {
            // IFA_LOCAL is the address itself, IFA_ADDRESS the far end.
            for a in m.attributes.iter_mut() {
                if let AddressAttribute::Address(x) = a {
                    *x = peer;
                }
            }
            m.attributes
                .retain(|a| !matches!(a, AddressAttribute::Broadcast(_)));
        }
        match req.execute().await {
            Ok(()) => Ok(true),
            Err(e) if errno(&e) == Some(libc::EEXIST) => Ok(false),
            Err(e) => Err(e).with_context(|| format!("adding address {addr}/{prefix}")),
        }
    }

    /// Removes `addr` from interface `index`; absent is not an error.
    pub async fn del_address(&self, index: u32, addr: IpAddr) -> Result<bool> {
        use netlink_packet_route::address::AddressAttribute;
        let mut addrs = self
            .handle
            .address()
            .get()
            .set_link_index_filter(index)
            .execute();
        while let Some(msg) = addrs.try_next().await.context("listing addresses")? {
            if msg.attributes.iter().any(|a| match a {
                AddressAttribute::Local(l) => *l == addr,
                AddressAttribute::Address(l) => addr.is_ipv6() && *l == addr,
                _ => false,
            }) {
                self.handle
                    .address()
                    .del(msg)
                    .execute()
                    .await
                    .with_context(|| format!("removing address {addr}"))?;
                return Ok(true);
            }
        }
        Ok(false)
    }

    /// The netlink message of a virtual route, `oif` its device's index.
    /// Marked `proto keepalived`, as keepalived marks its own: what put
    /// the route there shows in `ip route`.
    fn route_message(
        r: &crate::vrrp::def::RouteDef,
        oif: Option<u32>,
    ) -> Result<netlink_packet_route::route::RouteMessage> {
        use crate::vrrp::def::RouteKind;
        use netlink_packet_route::route::{RouteProtocol, RouteScope, RouteType};
        let mut b = RouteMessageBuilder::<IpAddr>::new()
            .destination_prefix(r.dst, r.prefix)
            .map_err(|e| anyhow!("route {r}: {e}"))?;
        if let Some(via) = r.via {
            b = b.gateway(via).map_err(|e| anyhow!("route {r}: {e}"))?;
        }
        if let Some(src) = r.src {
            b = b.pref_source(src).map_err(|e| anyhow!("route {r}: {e}"))?;
        }
        if let Some(i) = oif {
            b = b.output_interface(i);
        }
        if let Some(m) = r.metric {
            b = b.priority(m);
        }
        b = b.table_id(r.table.unwrap_or(254));
        let kind = match r.kind {
            RouteKind::Unicast => RouteType::Unicast,
            RouteKind::Blackhole => RouteType::BlackHole,
            RouteKind::Unreachable => RouteType::Unreachable,
            RouteKind::Prohibit => RouteType::Prohibit,
        };
        // As `ip route add`: a unicast route without a gateway is on-link.
        let scope = r
            .scope
            .unwrap_or(if r.kind == RouteKind::Unicast && r.via.is_none() {
                253
            } else {
                0
            });
        Ok(b.kind(kind)
            .scope(RouteScope::from(scope))
            .protocol(RouteProtocol::KeepAlived)
            .build())
    }

    /// Adds a virtual route; false when it is there already.
    pub async fn add_route(
        &self,
        r: &crate::vrrp::def::RouteDef,
        oif: Option<u32>,
    ) -> Result<bool> {
        let msg = Self::route_message(r, oif)?;
        match self.handle.route().add(msg).execute().await {
            Ok(()) => Ok(true),
            Err(e) if errno(&e) == Some(libc::EEXIST) => Ok(false),
            Err(e) => Err(e).with_context(|| format!("adding route {r}")),
        }
    }

    /// Removes a virtual route; absent is not an error (false).
    pub async fn del_route(
        &self,
        r: &crate::vrrp::def::RouteDef,
        oif: Option<u32>,
    ) -> Result<bool> {
        let msg = Self::route_message(r, oif)?;
        match self.handle.route().del(msg).execute().await {
            Ok(()) => Ok(true),
            Err(e) if matches!(errno(&e), Some(libc::ESRCH | libc::ENOENT)) => Ok(false),
            Err(e) => Err(e).with_context(|| format!("removing route {r}")),
        }
    }

    /// The netlink message of a virtual rule, marked `proto keepalived`
    /// as keepalived marks its own.
    fn rule_message(r: &crate::vrrp::def::RuleDef) -> netlink_packet_route::rule::RuleMessage {
        use crate::vrrp::def::RuleKind;
        use netlink_packet_route::{
            AddressFamily,
            route::RouteProtocol,
            rule::{RuleAction, RuleAttribute, RuleMessage},
        };
        let mut m = RuleMessage::default();
        m.header.family = if r.ipv6 {
            AddressFamily::Inet6
        } else {
            AddressFamily::Inet
        };
        m.header.action = match r.kind {
            RuleKind::Table => RuleAction::ToTable,
            RuleKind::Blackhole => RuleAction::Blackhole,
            RuleKind::Unreachable => RuleAction::Unreachable,
            RuleKind::Prohibit => RuleAction::Prohibit,
        };
        if let Some((a, p)) = r.from {
            m.header.src_len = p;
            m.attributes.push(RuleAttribute::Source(a));
        }
        if let Some((a, p)) = r.to {
            m.header.dst_len = p;
            m.attributes.push(RuleAttribute::Destination(a));
        }
        if r.kind == RuleKind::Table {
            let t = r.table.unwrap_or(254);
            m.header.table = u8::try_from(t).unwrap_or(252);
            m.attributes.push(RuleAttribute::Table(t));
        }
        if let Some(p) = r.pref {
            m.attributes.push(RuleAttribute::Priority(p));
        }
        if let Some((mark, mask)) = r.fwmark {
            m.attributes.push(RuleAttribute::FwMark(mark));
            if let Some(mask) = mask {
                m.attributes.push(RuleAttribute::FwMask(mask));
            }
        }
        if let Some(i) = &r.iif {
            m.attributes.push(RuleAttribute::Iifname(i.clone()));
        }
        if let Some(o) = &r.oif {
            m.attributes.push(RuleAttribute::Oifname(o.clone()));
        }
        m.attributes
            .push(RuleAttribute::Protocol(RouteProtocol::KeepAlived));
        m
    }

    /// Adds a virtual rule; false when it is there already.
    pub async fn add_rule(&self, r: &crate::vrrp::def::RuleDef) -> Result<bool> {
        let mut req = self.handle.rule().add();
        *req.message_mut() = Self::rule_message(r);
        match req.execute().await {
            Ok(()) => Ok(true),
            Err(e) if errno(&e) == Some(libc::EEXIST) => Ok(false),
            Err(e) => Err(e).with_context(|| format!("adding rule {r}")),
        }
    }

    /// Removes a virtual rule; absent is not an error (false).
    pub async fn del_rule(&self, r: &crate::vrrp::def::RuleDef) -> Result<bool> {
        match self
            .handle
            .rule()
            .del(Self::rule_message(r))
            .execute()
            .await
        {
            Ok(()) => Ok(true),
            Err(e) if matches!(errno(&e), Some(libc::ESRCH | libc::ENOENT)) => Ok(false),
            Err(e) => Err(e).with_context(|| format!("removing rule {r}")),
        }
    }

    /// The neighbour table's entry for `addr` on interface `index`.
    async fn neighbour(
        &self,
        index: u32,
        addr: IpAddr,
    ) -> Result<Option<netlink_packet_route::neighbour::NeighbourMessage>> {
        let mut neighs = self.handle.neighbours().get().execute();
        while let Some(n) = neighs.try_next().await.context("listing neighbours")? {
            if n.header.ifindex == index
                && n.attributes.iter().any(|a| match a {
                    NeighbourAttribute::Destination(NeighbourAddress::Inet(d)) => {
                        IpAddr::from(*d) == addr
                    }
                    NeighbourAttribute::Destination(NeighbourAddress::Inet6(d)) => {
                        IpAddr::from(*d) == addr
                    }
                    _ => false,
                })
            {
                return Ok(Some(n));
            }
        }
        Ok(None)
    }

    /// Whether the neighbour table already has an entry for `addr`.
    pub async fn has_neighbour(&self, index: u32, addr: IpAddr) -> Result<bool> {
        Ok(self.neighbour(index, addr).await?.is_some())
    }

    /// A neighbour entry the kernel keeps resolved by itself
    /// (`ip neigh add ADDR dev DEV managed`): the datapath's FIB lookups then
    /// find the next hop's MAC without any traffic from the host.
    pub async fn add_managed_neighbour(&self, index: u32, addr: IpAddr) -> Result<()> {
        let mut req = self
            .handle
            .neighbours()
            .add(index, addr)
            .state(NeighbourState::None)
            .replace();
        req.message_mut()
            .attributes
            .push(NeighbourAttribute::ExtFlags(NeighbourExtFlags::Managed));
        req.execute()
            .await
            .with_context(|| format!("adding managed neighbour {addr}"))
    }

    /// Whether the entry for `addr` is one the kernel keeps resolved
    /// (managed entries are Linux 5.16's; older kernels make a plain one
    /// of the request and never resolve it by themselves).
    pub async fn neighbour_is_managed(&self, index: u32, addr: IpAddr) -> Result<bool> {
        Ok(self.neighbour(index, addr).await?.is_some_and(|n| {
            n.attributes.iter().any(|a| {
                matches!(a, NeighbourAttribute::ExtFlags(f) if f.contains(NeighbourExtFlags::Managed))
            })
        }))
    }

    pub async fn del_neighbour(&self, index: u32, addr: IpAddr) -> Result<()> {
        match self.neighbour(index, addr).await? {
            Some(n) => self
                .handle
                .neighbours()
                .del(n)
                .execute()
                .await
                .with_context(|| format!("removing neighbour {addr}")),
            None => Ok(()),
        }
    }
}

/// Link state changes as the kernel announces them: (ifindex, up) for
/// every RTM_NEWLINK, until the receiver is dropped.
pub fn watch_links() -> Result<tokio::sync::mpsc::UnboundedReceiver<(u32, bool)>> {
    use futures_util::StreamExt as _;
    use netlink_packet_core::NetlinkPayload;
    use netlink_packet_route::RouteNetlinkMessage;
    let (conn, _handle, mut messages) =
        rtnetlink::new_multicast_connection(&[rtnetlink::MulticastGroup::Link])
            .context("subscribing to link changes")?;
    tokio::spawn(conn);
    let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
    tokio::spawn(async move {
        while let Some((msg, _)) = messages.next().await {
            if let NetlinkPayload::InnerMessage(RouteNetlinkMessage::NewLink(l)) = msg.payload {
                let link = Netlink::parse_link(l);
                if tx.send((link.index, link.up)).is_err() {
                    break;
                }
            }
        }
    });
    Ok(rx)
}

/// Interface names the kernel accepts: 1 to 15 bytes, no '/', ':' or
/// white space, not "." or "..".
pub fn check_ifname(name: &str) -> Result<()> {
    if name.is_empty() || name.len() > 15 {
        bail!(
            "{name:?} is {} bytes long; interface names have 1 to 15",
            name.len()
        );
    }
    if name == "."
        || name == ".."
        || name.contains(['/', ':'])
        || name.contains(char::is_whitespace)
    {
        return Err(anyhow!("{name:?} is not a valid interface name"));
    }
    Ok(())
}
