//! `greha import-keepalived`: a keepalived.conf turned into greha's
//! configuration. Read as keepalived reads it: includes, conditional lines
//! and parameters first ([`crate::kaconf`]), then line by line, the first
//! word the keyword and the rest its arguments, `#` and `!` comments,
//! `{ }` blocks. Whatever has no greha equivalent is listed with where it
//! is, never dropped silently.
use std::{collections::HashMap, path::Path};

use anyhow::{Context as _, Result};

use crate::kaconf::{self, Origin};
use toml::{Table, Value};

/// One keyword line and the block it opens, if any.
#[derive(Debug)]
struct Node {
    line: usize,
    keyword: String,
    args: Vec<String>,
    children: Vec<Node>,
}

/// The conversion: greha's TOML and what could not be carried over.
#[derive(Debug, Default)]
pub struct Imported {
    pub toml: String,
    /// (where, message), in file order (the main file's first).
    pub dropped: Vec<(Origin, String)>,
}

fn tokens(line: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut cur = String::new();
    let mut quoted = false;
    for c in line.chars() {
        match c {
            '"' => quoted = !quoted,
            '#' | '!' if !quoted => break,
            '{' | '}' if !quoted => {
                if !cur.is_empty() {
                    out.push(std::mem::take(&mut cur));
                }
                out.push(c.to_string());
            }
            c if c.is_whitespace() && !quoted => {
                if !cur.is_empty() {
                    out.push(std::mem::take(&mut cur));
                }
            }
            c => cur.push(c),
        }
    }
    if !cur.is_empty() {
        out.push(cur);
    }
    out
}

/// Deepest block nesting read: keepalived's own configuration never goes
/// past a few levels, and a hostile file must not exhaust the stack.
const MAX_DEPTH: usize = 16;

/// Parses the lines into a tree of keyword lines; a node's `line` is its
/// line's place in `lines`, from 1.
fn parse(lines: &[kaconf::Line], dropped: &mut Vec<(usize, String)>) -> Vec<Node> {
    let mut stack: Vec<Node> = vec![Node {
        line: 0,
        keyword: String::new(),
        args: Vec::new(),
        children: Vec::new(),
    }];
    'lines: for (i, l) in lines.iter().enumerate() {
        let line = i + 1;
        let toks = tokens(&l.text);
        let mut current: Option<Node> = None;
        for t in toks {
            match t.as_str() {
                "{" => {
                    if stack.len() > MAX_DEPTH {
                        dropped.push((
                            line,
                            format!(
                                "blocks nested deeper than {MAX_DEPTH} levels: the rest of the file is not read"
                            ),
                        ));
                        break 'lines;
                    }
                    let node = current.take().unwrap_or(Node {
                        line,
                        keyword: String::new(),
                        args: Vec::new(),
                        children: Vec::new(),
                    });
                    stack.push(node);
                }
                "}" => {
                    if let Some(n) = current.take() {
                        stack.last_mut().expect("root").children.push(n);
                    }
                    if stack.len() > 1 {
                        let done = stack.pop().expect("checked");
                        stack.last_mut().expect("root").children.push(done);
                    } else {
                        dropped.push((line, "unbalanced '}'".into()));
                    }
                }
                _ => match &mut current {
                    None => {
                        current = Some(Node {
                            line,
                            keyword: t,
                            args: Vec::new(),
                            children: Vec::new(),
                        })
                    }
                    Some(n) => n.args.push(t),
                },
            }
        }
        if let Some(n) = current {
            stack.last_mut().expect("root").children.push(n);
        }
    }
    while stack.len() > 1 {
        let n = stack.pop().expect("checked");
        dropped.push((n.line, format!("{}: block not closed", n.keyword)));
        stack.last_mut().expect("root").children.push(n);
    }
    stack.pop().expect("root").children
}

/// `keyword value` with exactly one argument; extra words are reported,
/// as keepalived ignores them.
fn one<'a>(n: &'a Node, dropped: &mut Vec<(usize, String)>) -> Option<&'a str> {
    if n.args.len() > 1 {
        dropped.push((
            n.line,
            format!(
                "{}: extra words {:?} ignored, as keepalived ignores them",
                n.keyword,
                n.args[1..].join(" ")
            ),
        ));
    }
    match n.args.first() {
        Some(a) => Some(a),
        None => {
            dropped.push((n.line, format!("{}: no value", n.keyword)));
            None
        }
    }
}

/// A keepalived value as TOML data: a number where it reads as one (the
/// spec parser takes both), a string otherwise.
fn number(v: &str) -> Value {
    if let Ok(i) = v.parse::<i64>() {
        Value::Integer(i)
    } else if let Ok(f) = v.parse::<f64>() {
        Value::Float(f)
    } else {
        Value::String(v.to_owned())
    }
}

fn string(v: &str) -> Value {
    Value::String(v.to_owned())
}

/// Appends `item` to the array of tables `key` of `t`.
fn push(t: &mut Table, key: &str, item: Table) {
    if let Value::Array(a) = t.entry(key).or_insert_with(|| Value::Array(Vec::new())) {
        a.push(Value::Table(item));
    }
}

/// Converts a keepalived.conf's text (no includes: they need the file's
/// place; see [`import_file`]) as keepalived reads it with config-id
/// `config_id`.
pub fn import(text: &str) -> Imported {
    import_lines(kaconf::read(text, None, "", &|_| {
        Err(std::io::ErrorKind::NotFound.into())
    }))
}

fn import_lines((lines, notes): (Vec<kaconf::Line>, Vec<(Origin, String)>)) -> Imported {
    let raw = convert(&lines);
    let mut out = Imported {
        toml: raw.toml,
        dropped: raw
            .dropped
            .into_iter()
            .map(|(i, m)| {
                let origin = lines
                    .get(i.wrapping_sub(1))
                    .map(|l| l.origin.clone())
                    .unwrap_or_default();
                (origin, m)
            })
            .chain(notes)
            .collect(),
    };
    out.dropped.sort_by(|a, b| a.0.cmp(&b.0));
    out
}

/// A conversion whose lines are places in the list read.
#[derive(Default)]
struct Converted {
    toml: String,
    dropped: Vec<(usize, String)>,
}

/// The TOML of `lines`, and what it leaves out.
fn convert(lines: &[kaconf::Line]) -> Converted {
    let mut out = Converted::default();
    let tree = parse(lines, &mut out.dropped);
    // The named blocks trackers refer to, by the instance block's keyword
    // that uses them and name.
    let blocks: Blocks = tree
        .iter()
        .filter_map(|n| {
            let user = match n.keyword.as_str() {
                "vrrp_script" => "track_script",
                "track_file" | "vrrp_track_file" => "track_file",
                "vrrp_track_process" => "track_process",
                _ => return None,
            };
            Some(((user, n.args.first()?.as_str()), n))
        })
        .collect();
    // keepalived speaks VRRPv2 unless told otherwise; greha's default is 3.
    let mut default_version = "2".to_owned();
    for g in tree.iter().filter(|n| n.keyword == "global_defs") {
        for c in g.children.iter().filter(|c| c.keyword == "vrrp_version") {
            if let Some(v) = c.args.first() {
                default_version = v.clone();
            }
        }
    }
    let mut config = Table::new();
    let mut groups = Vec::new();
    for n in &tree {
        match n.keyword.as_str() {
            "vrrp_instance" => {
                let t = instance(n, &blocks, &default_version, &mut out.dropped);
                push(&mut config, "vrrp", t);
            }
            // Turned into track_script and track_file entries where an
            // instance uses them.
            "vrrp_script" | "track_file" | "vrrp_track_file" | "vrrp_track_process" => {}
            "interface_up_down_delays" => {
                let mut delays = Table::new();
                for c in &n.children {
                    let secs = |v: &str| v.parse::<f64>().ok().map(Value::Float);
                    let value = match c.args.as_slice() {
                        [d] => secs(d),
                        [d, u] => secs(d).zip(secs(u)).map(|(d, u)| Value::Array(vec![d, u])),
                        _ => None,
                    };
                    match value {
                        Some(v) => {
                            delays.insert(c.keyword.clone(), v);
                        }
                        None => out.dropped.push((
                            c.line,
                            format!("interface_up_down_delays: {}: not understood", c.keyword),
                        )),
                    }
                }
                config.insert("interface_up_down_delays".into(), Value::Table(delays));
            }
            "vrrp_sync_group" => {
                if let Some(g) = sync_group(n, &blocks, &mut out.dropped) {
                    groups.push(g);
                }
            }
            "global_defs" => {
                for c in n.children.iter().filter(|c| c.keyword != "vrrp_version") {
                    match (c.keyword.as_str(), c.args.as_slice()) {
                        // The same lines to the same readers; greha's own
                        // FIFO is for VRRP only, as vrrp_notify_fifo.
                        ("notify_fifo" | "vrrp_notify_fifo", [path, ..]) => {
                            config.insert("notify_fifo".into(), string(path));
                        }
                        ("script_user", [u]) => {
                            config.insert("script_user".into(), string(u));
                        }
                        ("script_user", [u, g]) => {
                            config.insert("script_user".into(), string(&format!("{u}:{g}")));
                        }
                        // What greha does in any case.
                        ("enable_script_security", []) => {}
                        (k, _) => out
                            .dropped
                            .push((c.line, format!("global_defs: {k}: no greha equivalent"))),
                    }
                }
            }
            other => out
                .dropped
                .push((n.line, format!("{other}: not supported by greha"))),
        }
    }
    for (group, tracks) in groups {
        let members: Vec<&str> = group
            .get("instances")
            .and_then(Value::as_array)
            .map(|a| a.iter().filter_map(Value::as_str).collect())
            .unwrap_or_default();
        // The group's trackers fault the group whichever member they
        // are given to: each member gets them, without weights.
        if let Some(Value::Array(instances)) = config.get_mut("vrrp") {
            for t in instances.iter_mut().filter_map(Value::as_table_mut) {
                if t.get("name")
                    .and_then(Value::as_str)
                    .is_some_and(|n| members.contains(&n))
                {
                    for (kind, entries) in &tracks {
                        for e in entries.as_array().into_iter().flatten() {
                            if let Value::Table(e) = e {
                                push(t, kind, e.clone());
                            }
                        }
                    }
                }
            }
        }
        push(&mut config, "sync_group", group);
    }
    // Written once, from the data.
    out.toml = format!(
        "# Converted from keepalived.conf by `greha import-keepalived`.\n\n{}",
        toml::to_string(&config).expect("a table of strings and numbers serializes")
    );
    out.dropped.sort_by_key(|(l, _)| *l);
    out
}

fn instance(
    n: &Node,
    blocks: &Blocks,
    default_version: &str,
    dropped: &mut Vec<(usize, String)>,
) -> Table {
    let name = n.args.first().map_or("VI", String::as_str);
    let mut t = Table::new();
    t.insert("name".into(), string(name));
    if !n.children.iter().any(|c| c.keyword == "version") {
        t.insert("version".into(), number(default_version));
    }
    let mut vips = Vec::new();
    let mut tracks = Table::new();
    let mut auth_pass = None;
    // The instance's family, as keepalived decides it: native_ipv6, else
    // the first VIP's.
    let native_ipv6 = n.children.iter().any(|c| c.keyword == "native_ipv6");
    let ipv6 = n
        .children
        .iter()
        .filter(|c| c.keyword == "virtual_ipaddress")
        .flat_map(|c| &c.children)
        .find_map(|v| vip_address(&v.keyword))
        .map(|a| native_ipv6 || a.is_ipv6());
    for c in &n.children {
        let key = c.keyword.as_str();
        let simple = match key {
            "interface" => Some("interface"),
            "virtual_router_id" => Some("vrid"),
            "priority" => Some("priority"),
            "advert_int" => Some("advert_int"),
            "version" => Some("version"),
            "preempt_delay" => Some("preempt_delay"),
            "unicast_src_ip" => Some("unicast_src"),
            "garp_master_delay" => Some("garp_delay"),
            "garp_master_repeat" => Some("garp_repeat"),
            "garp_master_refresh" => Some("garp_refresh"),
            "garp_lower_prio_delay" => Some("garp_lower_prio_delay"),
            "garp_lower_prio_repeat" => Some("garp_lower_prio_repeat"),
            "unicast_ttl" => Some("unicast_ttl"),
            _ => None,
        };
        if let Some(field) = simple {
            if let Some(v) = one(c, dropped) {
                let value = if matches!(field, "interface" | "unicast_src") {
                    string(v)
                } else {
                    number(v)
                };
                t.insert(field.into(), value);
            }
            continue;
        }
        match key {
            "notify_master" | "notify_backup" | "notify_fault" | "notify_stop" | "notify" => {
                match notify_line(&c.args) {
                    Ok(line) => {
                        t.insert(key.into(), string(&line));
                    }
                    Err(why) => dropped.push((c.line, format!("{key}: {why}"))),
                }
            }
            "nopreempt" => {
                t.insert("preempt".into(), Value::Boolean(false));
            }
            "dont_track_primary" => {
                t.insert("dont_track_primary".into(), Value::Boolean(true));
            }
            "state" => dropped.push((
                c.line,
                "state: greha always starts as backup, as RFC 3768/5798 do (priority decides)"
                    .into(),
            )),
            "authentication" => {
                for a in &c.children {
                    match (a.keyword.as_str(), a.args.first().map(String::as_str)) {
                        ("auth_type", Some("PASS")) => {}
                        ("auth_pass", Some(p)) => auth_pass = Some(p.to_owned()),
                        (k, v) => dropped.push((
                            a.line,
                            format!("authentication: {k} {}: not supported", v.unwrap_or("")),
                        )),
                    }
                }
            }
            "native_ipv6" => {
                t.insert("native_ipv6".into(), Value::Boolean(true));
            }
            "use_vmac" => {
                t.insert("use_vmac".into(), Value::Boolean(true));
                if let Some(name) = c.args.first() {
                    t.insert("vmac_name".into(), string(name));
                }
                if c.args.len() > 1 {
                    dropped.push((
                        c.line,
                        "use_vmac: a MAC of its own: greha uses the RFC's virtual MAC".into(),
                    ));
                }
            }
            "virtual_ipaddress" | "virtual_ipaddress_excluded" => {
                let excluded = key == "virtual_ipaddress_excluded";
                for v in &c.children {
                    let addr = &v.keyword;
                    let Some(ip) = vip_address(addr) else {
                        dropped.push((
                            v.line,
                            format!(
                                "{key}: {addr:?} is not an IP address (an undefined $variable?)"
                            ),
                        ));
                        continue;
                    };
                    if !excluded && Some(ip.is_ipv6()) != ipv6 {
                        dropped.push((
                            v.line,
                            format!("virtual_ipaddress: {addr}: its address family is not the instance's (keepalived ignores it too)"),
                        ));
                        continue;
                    }
                    let mut vip = Table::new();
                    vip.insert("address".into(), string(addr));
                    if excluded {
                        vip.insert("excluded".into(), Value::Boolean(true));
                    }
                    let mut args = v.args.iter();
                    while let Some(k) = args.next() {
                        match k.as_str() {
                            "noprefixroute" => {
                                vip.insert(k.into(), Value::Boolean(true));
                            }
                            // keepalived's own bookkeeping, not the address's.
                            "no_track" => {}
                            "dev" | "label" | "brd" | "scope" | "peer" => match args.next() {
                                Some(d) => {
                                    vip.insert(k.into(), string(d));
                                }
                                None => {
                                    dropped.push((v.line, format!("{key} {addr}: {k}: no value")))
                                }
                            },
                            k => {
                                dropped.push((v.line, format!("{key} {addr}: {k}: not supported")));
                                break;
                            }
                        }
                    }
                    vips.push(vip);
                }
            }
            "virtual_rules" => {
                for r in &c.children {
                    if let Some(rule) = virtual_rule(r, dropped) {
                        push(&mut t, "rule", rule);
                    }
                }
            }
            "virtual_routes" => {
                for r in &c.children {
                    if let Some(route) = virtual_route(r, dropped) {
                        push(&mut t, "route", route);
                    }
                }
            }
            "unicast_peer" => {
                // Plain addresses as a list; one with TTL bounds as a table.
                let mut peers = Vec::new();
                for p in &c.children {
                    if p.args.is_empty() {
                        peers.push(string(&p.keyword));
                        continue;
                    }
                    let mut peer = Table::new();
                    peer.insert("address".into(), string(&p.keyword));
                    let mut args = p.args.iter();
                    while let Some(k) = args.next() {
                        match (k.as_str(), args.next()) {
                            (k @ ("min_ttl" | "max_ttl"), Some(v)) => {
                                peer.insert(k.into(), number(v));
                            }
                            (k, _) => dropped.push((
                                p.line,
                                format!("unicast_peer {}: {k}: not supported", p.keyword),
                            )),
                        }
                    }
                    push(&mut t, "unicast_peer", peer);
                }
                if !peers.is_empty() {
                    t.insert("unicast_peers".into(), Value::Array(peers));
                }
            }
            "track_interface" | "track_script" | "track_file" | "track_process" => {
                tracks_of(c, blocks, dropped, &mut tracks);
            }
            other => dropped.push((
                c.line,
                format!("vrrp_instance {name}: {other}: not supported by greha"),
            )),
        }
    }
    if let Some(p) = auth_pass {
        t.insert("auth_pass".into(), string(&p));
    }
    // keepalived runs an IPv6 instance as version 3, whatever it is told.
    if ipv6 == Some(true) && t.get("version").and_then(Value::as_integer) == Some(2) {
        t.insert("version".into(), Value::Integer(3));
        if let Some(c) = n.children.iter().find(|c| c.keyword == "version") {
            dropped.push((
                c.line,
                "version 2: an IPv6 instance speaks version 3 (keepalived switches too)".into(),
            ));
        }
    }
    for vip in vips {
        push(&mut t, "vip", vip);
    }
    t.extend(tracks);
    t
}

/// A vrrp_sync_group: the `[[sync_group]]` table, and its trackers as
/// each member instance takes them (weightless: any of them down faults
/// the group, as keepalived's group tracking without
/// sync_group_tracking_weight).
fn sync_group(
    n: &Node,
    blocks: &Blocks,
    dropped: &mut Vec<(usize, String)>,
) -> Option<(Table, Table)> {
    let Some(name) = n.args.first() else {
        dropped.push((n.line, "vrrp_sync_group: no name".into()));
        return None;
    };
    let mut t = Table::new();
    t.insert("name".into(), string(name));
    let mut tracks = Table::new();
    for c in &n.children {
        let key = c.keyword.as_str();
        match key {
            "group" => {
                let members = c.children.iter().map(|m| string(&m.keyword)).collect();
                t.insert("instances".into(), Value::Array(members));
            }
            "notify_master" | "notify_backup" | "notify_fault" | "notify_stop" | "notify" => {
                match notify_line(&c.args) {
                    Ok(line) => {
                        t.insert(key.into(), string(&line));
                    }
                    Err(why) => {
                        dropped.push((c.line, format!("vrrp_sync_group {name}: {key}: {why}")))
                    }
                }
            }
            "track_interface" | "track_script" | "track_file" => {
                tracks_of(c, blocks, dropped, &mut tracks);
            }
            other => dropped.push((
                c.line,
                format!("vrrp_sync_group {name}: {other}: not supported by greha"),
            )),
        }
    }
    if !t.contains_key("instances") {
        dropped.push((
            n.line,
            format!("vrrp_sync_group {name}: no group of instances"),
        ));
        return None;
    }
    for (kind, entries) in tracks.iter_mut() {
        for e in entries.as_array_mut().into_iter().flatten() {
            if let Value::Table(e) = e {
                e.remove("weight");
                e.remove("reverse");
                if kind == "track_file" {
                    // A file's weight 0: any number but 0 is Fault.
                    e.insert("weight".into(), Value::Integer(0));
                }
            }
        }
    }
    Some((t, tracks))
}

/// The named blocks trackers refer to: (the using block's keyword, name).
type Blocks<'a> = HashMap<(&'a str, &'a str), &'a Node>;

/// What is dropped, by line.
type Dropped = Vec<(usize, String)>;

/// A named block and the entry using it, as a tracker's table.
type TrackConverter = fn(&Node, &Node, &mut Dropped) -> Option<Table>;

/// A track_script, track_process or track_file block `c`: each entry
/// names a top-level block (`what`, for the message when there is none),
/// which `convert` turns into a tracker with the entry's own words.
fn named_tracks(
    c: &Node,
    blocks: &Blocks,
    what: &str,
    convert: TrackConverter,
    dropped: &mut Vec<(usize, String)>,
    tracks: &mut Table,
) {
    for entry in &c.children {
        let Some(block) = blocks.get(&(c.keyword.as_str(), entry.keyword.as_str())) else {
            dropped.push((
                entry.line,
                format!("{}: no {what} {:?}", c.keyword, entry.keyword),
            ));
            continue;
        };
        if let Some(track) = convert(block, entry, dropped) {
            push(tracks, &c.keyword, track);
        }
    }
}

/// An instance's or sync group's track_interface, track_script or
/// track_file block `c`, its entries pushed to `tracks`.
fn tracks_of(c: &Node, blocks: &Blocks, dropped: &mut Vec<(usize, String)>, tracks: &mut Table) {
    match c.keyword.as_str() {
        "track_interface" => {
            for ti in &c.children {
                let mut track = Table::new();
                track.insert("name".into(), string(&ti.keyword));
                match weight_words(&ti.args) {
                    Some((w, reverse)) => {
                        track.insert("weight".into(), number(&w));
                        if reverse {
                            track.insert("reverse".into(), Value::Boolean(true));
                        }
                    }
                    None if ti.args.is_empty() => {}
                    None => {
                        dropped.push((
                            ti.line,
                            format!(
                                "track_interface {}: {}: not understood",
                                ti.keyword,
                                ti.args.join(" ")
                            ),
                        ));
                        continue;
                    }
                }
                push(tracks, "track_interface", track);
            }
        }
        "track_script" => named_tracks(c, blocks, "vrrp_script", script, dropped, tracks),
        "track_process" => {
            named_tracks(
                c,
                blocks,
                "vrrp_track_process",
                track_process,
                dropped,
                tracks,
            );
        }
        "track_file" => named_tracks(c, blocks, "track_file", track_file, dropped, tracks),
        _ => {}
    }
}

/// A virtual_routes line (`[src IP] [to] DEST [via|gw GW] [dev IF] [scope
/// S] [table T] [metric N]`, or a `blackhole`/`unreachable`/`prohibit`
/// DEST) as a `[[vrrp.route]]`; options greha has no use for are named.
fn virtual_route(r: &Node, dropped: &mut Vec<(usize, String)>) -> Option<Table> {
    let words: Vec<&str> = std::iter::once(r.keyword.as_str())
        .chain(r.args.iter().map(String::as_str))
        .collect();
    let mut t = Table::new();
    let mut it = words.iter().copied();
    while let Some(w) = it.next() {
        let mut value = |key: &str| {
            let v = it.next();
            if v.is_none() {
                dropped.push((r.line, format!("virtual_routes: {key}: no value")));
            }
            v
        };
        match w {
            "blackhole" | "unreachable" | "prohibit" => {
                t.insert("type".into(), string(w));
            }
            "src" | "dev" | "scope" => {
                let key = w;
                if let Some(v) = value(key) {
                    t.insert(key.into(), string(v));
                }
            }
            "via" | "gw" => {
                if let Some(v) = value(w) {
                    t.insert("via".into(), string(v));
                }
            }
            "to" => {
                if let Some(v) = value(w) {
                    t.insert("to".into(), string(v));
                }
            }
            "metric" | "preference" | "priority" => {
                if let Some(v) = value(w) {
                    t.insert("metric".into(), number(v));
                }
            }
            "table" => match value(w) {
                Some("main") => {
                    t.insert("table".into(), Value::Integer(254));
                }
                Some("local") => {
                    t.insert("table".into(), Value::Integer(255));
                }
                Some("default") => {
                    t.insert("table".into(), Value::Integer(253));
                }
                Some(v) if v.parse::<u32>().is_ok() => {
                    t.insert("table".into(), number(v));
                }
                Some(v) => {
                    dropped.push((
                        r.line,
                        format!("virtual_routes: table {v}: give the table's number"),
                    ));
                    return None;
                }
                None => return None,
            },
            // keepalived's own bookkeeping, not the route's.
            "no_track" => {}
            dest if !t.contains_key("to") && cidr_like(dest) => {
                t.insert("to".into(), string(dest));
            }
            other => {
                dropped.push((r.line, format!("virtual_routes: {other}: not supported")));
                return None;
            }
        }
    }
    if !t.contains_key("to") {
        dropped.push((r.line, "virtual_routes: no destination".into()));
        return None;
    }
    Some(t)
}

/// A virtual_rules line (`from A to B table T priority P fwmark M iif I
/// oif O`, or `blackhole`/`unreachable`/`prohibit` instead of a table) as
/// a `[[vrrp.rule]]`; a rule with an option greha lacks is named, not
/// half carried.
fn virtual_rule(r: &Node, dropped: &mut Vec<(usize, String)>) -> Option<Table> {
    let words: Vec<&str> = std::iter::once(r.keyword.as_str())
        .chain(r.args.iter().map(String::as_str))
        .collect();
    let mut t = Table::new();
    let mut it = words.iter().copied();
    while let Some(w) = it.next() {
        let Some(key) = (match w {
            "blackhole" | "unreachable" | "prohibit" => {
                t.insert("type".into(), string(w));
                continue;
            }
            "no_track" => continue,
            "from" | "to" | "fwmark" | "iif" | "oif" => Some(w),
            "priority" | "preference" | "pref" => Some("pref"),
            "table" | "lookup" => Some("table"),
            _ => None,
        }) else {
            dropped.push((r.line, format!("virtual_rules: {w}: not supported")));
            return None;
        };
        let Some(v) = it.next() else {
            dropped.push((r.line, format!("virtual_rules: {w}: no value")));
            return None;
        };
        let value = match (key, v) {
            ("table", "main") => Value::Integer(254),
            ("table", "local") => Value::Integer(255),
            ("table", "default") => Value::Integer(253),
            ("table", v) if v.parse::<u32>().is_err() => {
                dropped.push((
                    r.line,
                    format!("virtual_rules: table {v}: give the table's number"),
                ));
                return None;
            }
            ("table" | "pref", v) => number(v),
            (_, v) => string(v),
        };
        t.insert(key.into(), value);
    }
    Some(t)
}

/// A destination as keepalived takes one: `ADDR[/LEN]` or `default`.
fn cidr_like(w: &str) -> bool {
    w == "default" || vip_address(w).is_some()
}

/// A virtual_ipaddress entry's address (`ADDR` or `ADDR/PREFIX`).
fn vip_address(entry: &str) -> Option<std::net::IpAddr> {
    entry.split('/').next()?.parse().ok()
}

/// A script or notify command as greha writes it: keepalived's quoted
/// string (`"killall -0 haproxy"`, one word here, split as keepalived
/// splits it) as it is, or its unquoted words joined so they split back
/// into the same words.
fn notify_line(args: &[String]) -> Result<String, String> {
    let line = match args {
        [] => return Err("no program given".into()),
        [one] => one.clone(),
        words => crate::vrrp::command::join(words),
    };
    match crate::vrrp::command::split(&line) {
        Ok(_) => Ok(line),
        Err(why) => Err(format!("{line:?}: {why}")),
    }
}

/// A vrrp_script used by an instance's track_script entry `ts`; none if
/// it cannot be carried over (reported).
fn script(s: &Node, ts: &Node, dropped: &mut Vec<(usize, String)>) -> Option<Table> {
    let mut track = Table::new();
    let mut weight = None;
    for c in &s.children {
        match (c.keyword.as_str(), c.args.as_slice()) {
            ("init_fail", []) => {
                track.insert("init_fail".into(), Value::Boolean(true));
            }
            ("user", [u]) => {
                track.insert("user".into(), string(u));
            }
            ("user", [u, g]) => {
                track.insert("user".into(), string(&format!("{u}:{g}")));
            }
            ("script", args) => match notify_line(args) {
                Ok(line) => {
                    track.insert("path".into(), string(&line));
                }
                Err(why) => {
                    dropped.push((c.line, format!("vrrp_script: script: {why}")));
                    return None;
                }
            },
            ("interval" | "timeout" | "rise" | "fall", [v]) => {
                track.insert(c.keyword.clone(), number(v));
            }
            ("weight", args) if !args.is_empty() => {
                let mut all = vec!["weight".to_owned()];
                all.extend(args.iter().cloned());
                match weight_words(&all) {
                    Some(w) => weight = Some(w),
                    None => dropped.push((
                        c.line,
                        format!("vrrp_script: weight {}: not understood", args.join(" ")),
                    )),
                }
            }
            (k, _) => dropped.push((c.line, format!("vrrp_script: {k}: not supported"))),
        }
    }
    // The instance's weight overrides the script's, as in keepalived.
    if let Some(w) = weight_words(&ts.args) {
        weight = Some(w);
    }
    if let Some((w, reverse)) = weight {
        track.insert("weight".into(), number(&w));
        if reverse {
            track.insert("reverse".into(), Value::Boolean(true));
        }
    }
    Some(track)
}

/// keepalived's `weight N [reverse]` after a tracked name: the weight and
/// whether it is reversed.
fn weight_words(args: &[String]) -> Option<(String, bool)> {
    match args {
        [w, v] if w == "weight" => Some((v.clone(), false)),
        [w, v, r] if w == "weight" && r == "reverse" => Some((v.clone(), true)),
        [w, v, r] if w == "weight" && r == "noreverse" => Some((v.clone(), false)),
        _ => None,
    }
}

/// A vrrp_track_process used by an instance's track_process entry `tp`;
/// none if it cannot be carried over (reported).
fn track_process(p: &Node, tp: &Node, dropped: &mut Vec<(usize, String)>) -> Option<Table> {
    let mut track = Table::new();
    let mut weight = None;
    for c in &p.children {
        match (c.keyword.as_str(), c.args.as_slice()) {
            ("process", args) if !args.is_empty() => match notify_line(args) {
                Ok(line) => {
                    track.insert("process".into(), string(&line));
                }
                Err(why) => {
                    dropped.push((c.line, format!("vrrp_track_process: process: {why}")));
                    return None;
                }
            },
            ("quorum" | "quorum_max", [v]) => {
                track.insert(c.keyword.clone(), number(v));
            }
            ("delay" | "fork_delay" | "terminate_delay", [v]) => {
                track.insert(c.keyword.clone(), number(v));
            }
            ("param_match", [v]) => {
                track.insert("param_match".into(), string(v));
            }
            ("full_command", []) => {
                track.insert("full_command".into(), Value::Boolean(true));
            }
            ("weight", args) if !args.is_empty() => {
                let mut all = vec!["weight".to_owned()];
                all.extend(args.iter().cloned());
                weight = weight_words(&all);
            }
            (k, _) => {
                dropped.push((c.line, format!("vrrp_track_process: {k}: not supported")));
                return None;
            }
        }
    }
    if !track.contains_key("process") {
        dropped.push((p.line, "vrrp_track_process: no process given".into()));
        return None;
    }
    // The instance's weight overrides the block's, as in keepalived.
    if let Some(w) = weight_words(&tp.args) {
        weight = Some(w);
    }
    if let Some((w, reverse)) = weight {
        track.insert("weight".into(), number(&w));
        if reverse {
            track.insert("reverse".into(), Value::Boolean(true));
        }
    }
    Some(track)
}

/// A track_file used by an instance's track_file entry `tf`; none if it
/// cannot be carried over (reported).
fn track_file(f: &Node, tf: &Node, dropped: &mut Vec<(usize, String)>) -> Option<Table> {
    let mut track = Table::new();
    let mut weight: Option<(&str, bool)> = None;
    let weight_of = |args: &[String]| -> Option<(String, bool)> {
        match args {
            [w] => Some((w.clone(), false)),
            [w, r] if r == "reverse" => Some((w.clone(), true)),
            [w, r] if r == "noreverse" => Some((w.clone(), false)),
            _ => None,
        }
    };
    let mut own = None;
    for c in &f.children {
        match (c.keyword.as_str(), c.args.as_slice()) {
            ("file", [path]) => {
                track.insert("path".into(), string(path));
            }
            ("weight", args) if weight_of(args).is_some() => own = weight_of(args),
            ("init_file", args) => {
                let (value, overwrite) = match args {
                    [] => ("0", false),
                    [o] if o == "overwrite" => ("0", true),
                    [v] => (v.as_str(), false),
                    [v, o] if o == "overwrite" => (v.as_str(), true),
                    _ => {
                        dropped.push((c.line, "track_file: init_file: not understood".into()));
                        return None;
                    }
                };
                track.insert("init".into(), number(value));
                if overwrite {
                    track.insert("overwrite".into(), Value::Boolean(true));
                }
            }
            (k, _) => {
                dropped.push((c.line, format!("track_file: {k}: not supported")));
                return None;
            }
        }
    }
    if !track.contains_key("path") {
        dropped.push((f.line, "track_file: no file given".into()));
        return None;
    }
    // The instance's weight overrides the file's, as in keepalived.
    let over = match tf.args.as_slice() {
        [w, rest @ ..] if w == "weight" => weight_of(rest),
        _ => None,
    };
    if let Some((w, reverse)) = over.as_ref().or(own.as_ref()) {
        weight = Some((w.as_str(), *reverse));
    }
    if let Some((w, reverse)) = weight {
        track.insert("weight".into(), number(w));
        if reverse {
            track.insert("reverse".into(), Value::Boolean(true));
        }
    }
    Some(track)
}

/// Reads `path` and converts it; the result is checked by greha's own
/// configuration parser before it is returned.
pub fn import_file(path: &Path, config_id: &str) -> Result<Imported> {
    let text =
        std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
    let read = |p: &Path| std::fs::read_to_string(p);
    let out = import_lines(kaconf::read(&text, path.parent(), config_id, &read));
    crate::config::parse(Path::new("<converted>"), &out.toml)
        .context("the converted configuration is not valid")?;
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{
        config,
        vrrp::{
            def::{Family, TrackKind},
            packet::Version,
        },
    };

    /// The seed's keepalived.conf, as it stands in the post (its VIP is the
    /// placeholder `$virtual_third_ip`, defined here as keepalived allows).
    const SEED: &str = r#"
global_defs {
    router_id LVS_DEVEL
}

vrrp_instance VI_1 {
    state MASTER
    interface gretap1 # 绑在建立起来的隧道上
    virtual_router_id 51
    # 优先级别,越高的设备会被弄成主设备, A,B 服务器要有所差别，其他都一样
    priority 100          advert_int 1      # 广播时间间隔
    authentication {  #  验证相关
        auth_type PASS
        auth_pass 1111
    }
    virtual_ipaddress {
        $virtual_third_ip dev eth0
    }
}
"#;

    #[test]
    fn the_seeds_keepalived_conf_converts() {
        let text = format!("$virtual_third_ip=203.0.113.10\n{SEED}");
        let out = import(&text);
        let cfg = config::parse(Path::new("x"), &out.toml)
            .unwrap_or_else(|e| panic!("{e:#}\n{}", out.toml));
        let v = &cfg.vrrp[0];
        assert_eq!(
            (v.name.as_str(), v.interface.as_str(), v.vrid, v.priority),
            ("VI_1", "gretap1", 51, 100)
        );
        assert_eq!(v.auth, crate::vrrp::packet::Auth::pass("1111"));
        assert_eq!(v.vips[0].addr, std::net::Ipv4Addr::new(203, 0, 113, 10));
        assert_eq!(v.vips[0].dev.as_deref(), Some("eth0"));
        let lines: Vec<usize> = out.dropped.iter().map(|(l, _)| l.line).collect();
        // router_id, state, and advert_int written on priority's line.
        assert_eq!(lines, vec![4, 8, 12], "{:?}", out.dropped);
        assert!(out.dropped[2].1.contains("extra words \"advert_int 1\""));
    }

    /// A hostile file: nesting is bounded (100 000 levels used to
    /// overflow the stack), and what was read is still converted.
    #[test]
    fn deep_nesting_is_refused_not_a_crash() {
        let text = format!(
            "vrrp_instance V {{\n interface eth0\n virtual_router_id 1\n virtual_ipaddress {{\n 192.0.2.1\n }}\n{}",
            "a {\n".repeat(100_000)
        );
        let out = import(&text);
        assert!(
            out.dropped
                .iter()
                .any(|(l, m)| l.line == 22 && m.contains("nested deeper than 16")),
            "{:?}",
            &out.dropped[..out.dropped.len().min(5)]
        );
    }

    #[test]
    fn the_seed_as_published_reports_its_placeholder() {
        let out = import(SEED);
        let msg = out
            .dropped
            .iter()
            .find(|(l, _)| l.line == 17)
            .map(|(_, m)| m.as_str());
        assert!(
            msg.is_some_and(|m| m.contains("$virtual_third_ip")),
            "{:?}",
            out.dropped
        );
    }

    #[test]
    fn other_keepalived_configurations_convert() {
        let text = r#"
! a comment
vrrp_script chk_nginx {
    script "/usr/local/bin/check-nginx"
    interval 2
    fall 3
    rise 2
    weight -20
}
vrrp_script chk_args {
    script "/bin/check --deep"
}
vrrp_instance VI_2 {
    interface eth0
    virtual_router_id 7
    priority 150
    advert_int 0.1
    version 3
    nopreempt
    unicast_src_ip 192.0.2.1
    unicast_peer {
        192.0.2.2
        192.0.2.3
    }
    track_interface {
        eth1
        eth2 weight -10
    }
    track_script {
        chk_nginx
        chk_args
    }
    notify_master /usr/local/bin/master
    notify "/usr/local/bin/event arg"
    smtp_alert
    virtual_ipaddress {
        203.0.113.20/24 dev eth0 label eth0:1
        203.0.113.21 brd 203.0.113.255
    }
}
virtual_server 203.0.113.20 80 {
    lb_algo rr
}
"#;
        let out = import(text);
        let cfg = config::parse(Path::new("x"), &out.toml).expect(&out.toml);
        let v = &cfg.vrrp[0];
        assert_eq!(
            (v.vrid, v.priority, v.advert_interval_cs, v.preempt),
            (7, 150, 10, false)
        );
        assert_eq!(v.unicast_peers.len(), 2);
        assert_eq!(v.track.len(), 4);
        assert_eq!(v.track[1].weight, Some(-10));
        assert_eq!(v.track[2].weight, Some(-20));
        assert!(
            matches!(&v.track[3].kind, TrackKind::Script { path, .. } if path == "/bin/check --deep"),
            "{:?}",
            v.track[3]
        );
        assert_eq!(v.notify.any.as_deref(), Some("/usr/local/bin/event arg"));
        assert_eq!(v.vips.len(), 2);
        assert_eq!(v.vips[0].label.as_deref(), Some("eth0:1"));
        assert_eq!(v.vips[1].brd, Some("203.0.113.255".parse().unwrap()));
        assert_eq!(v.notify.master.as_deref(), Some("/usr/local/bin/master"));
        let dropped: Vec<String> = out
            .dropped
            .iter()
            .map(|(l, m)| format!("{l}: {m}"))
            .collect();
        for want in [
            "35: vrrp_instance VI_2: smtp_alert: not supported",
            "41: virtual_server: not supported",
        ] {
            assert!(
                dropped.iter().any(|d| d.starts_with(want)),
                "{want} not in {dropped:#?}"
            );
        }
    }

    /// Dual stack as keepalived runs it: one instance per family, the same
    /// VRID; an IPv6 instance speaks version 3 whatever the global default;
    /// a VIP of the other family is left out, as keepalived ignores it.
    #[test]
    fn ipv6_instances_carry_over() {
        let text = r#"
global_defs {
    vrrp_version 2
}
vrrp_instance V4 {
    interface eth0
    virtual_router_id 51
    virtual_ipaddress {
        192.0.2.10/24
    }
}
vrrp_instance V6 {
    interface eth0
    virtual_router_id 51
    native_ipv6
    unicast_peer {
        fe80::2
    }
    virtual_ipaddress {
        2001:db8::10/64 dev eth1
        192.0.2.11/24
        2001:db8::11
    }
}
"#;
        let out = import(text);
        let cfg = config::parse(Path::new("x"), &out.toml).expect(&out.toml);
        let (v4, v6) = (&cfg.vrrp[0], &cfg.vrrp[1]);
        assert_eq!((v4.version, v4.family()), (Version::V2, Family::V4));
        assert_eq!(
            (v6.version, v6.family(), v6.vrid),
            (Version::V3, Family::V6, 51)
        );
        let vips: Vec<String> = v6
            .vips
            .iter()
            .map(|v| format!("{}/{}", v.addr, v.prefix))
            .collect();
        assert_eq!(vips, ["2001:db8::10/64", "2001:db8::11/128"]);
        assert_eq!(v6.vips[0].dev.as_deref(), Some("eth1"));
        assert_eq!(
            v6.unicast_peers,
            ["fe80::2".parse::<std::net::IpAddr>().unwrap()]
        );
        assert_eq!(
            out.dropped
                .iter()
                .map(|(l, m)| (l.line, m.clone()))
                .collect::<Vec<_>>(),
            [(
                21,
                "virtual_ipaddress: 192.0.2.11/24: its address family is not the instance's \
                 (keepalived ignores it too)"
                    .to_owned()
            )]
        );
    }

    /// track_file as keepalived.conf(5) writes it, with the instance's
    /// weight overriding the file's.
    #[test]
    fn track_files_carry_over() {
        let text = r#"
track_file maint {
    file "/run/greha-maint"
    weight -10 reverse
    init_file 0 overwrite
}
vrrp_track_file down {
    file "/run/down"
    weight 0
}
vrrp_instance VI_1 {
    interface eth0
    virtual_router_id 51
    priority 100
    track_file {
        maint
        down weight 0
    }
    virtual_ipaddress {
        203.0.113.10/24
    }
}
"#;
        let out = import(text);
        assert!(out.dropped.is_empty(), "{:?}", out.dropped);
        let cfg = config::parse(Path::new("x"), &out.toml).expect(&out.toml);
        let files: Vec<(&TrackKind, Option<i32>)> = cfg.vrrp[0]
            .track
            .iter()
            .map(|t| (&t.kind, t.weight))
            .collect();
        assert_eq!(
            files,
            vec![
                (
                    &TrackKind::File {
                        path: "/run/greha-maint".into(),
                        reverse: true,
                        init: Some(0),
                        overwrite: true
                    },
                    Some(-10)
                ),
                (
                    &TrackKind::File {
                        path: "/run/down".into(),
                        reverse: false,
                        init: None,
                        overwrite: false
                    },
                    Some(0)
                ),
            ]
        );
    }

    fn cfg_vips(toml: &str) -> Vec<crate::vrrp::def::VipDef> {
        config::parse(Path::new("x"), toml).expect(toml).vrrp[0]
            .vips
            .clone()
    }

    /// virtual_ipaddress_excluded becomes excluded VIPs (of either
    /// family), and virtual_routes in keepalived's forms become `[[vrrp.route]]`
    /// tables greha reads back as the same routes; a route with an option
    /// greha lacks is named, not half carried.
    #[test]
    fn virtual_routes_carry_over() {
        let text = r#"
vrrp_instance VI_1 {
    interface eth0
    virtual_router_id 51
    virtual_ipaddress {
        203.0.113.10/24
    }
    virtual_ipaddress_excluded {
        2001:db8::10/64 dev eth1 scope link noprefixroute
    }
    virtual_routes {
        src 203.0.113.10 to 198.51.100.0/24 via 203.0.113.254 dev eth0 metric 5
        192.0.2.0/24 dev eth1 scope link table main
        blackhole 192.0.2.128/25
        0.0.0.0/0 gw 203.0.113.1 table 100
        198.51.100.128/25 via 203.0.113.254 or 203.0.113.253
    }
}
"#;
        let out = import(text);
        let dropped: Vec<String> = out
            .dropped
            .iter()
            .map(|(l, m)| format!("{l}: {m}"))
            .collect();
        assert_eq!(dropped, vec!["16: virtual_routes: or: not supported"]);
        let x = &cfg_vips(&out.toml)[1];
        assert!(x.excluded && x.addr.is_ipv6() && x.dev.as_deref() == Some("eth1"));
        assert_eq!((x.scope, x.noprefixroute), (Some(253), true));
        let cfg = config::parse(Path::new("x"), &out.toml).expect(&out.toml);
        let routes: Vec<String> = cfg.vrrp[0].routes.iter().map(|r| r.to_string()).collect();
        assert_eq!(
            routes,
            vec![
                "198.51.100.0/24 via 203.0.113.254 dev eth0",
                "192.0.2.0/24 dev eth1 table 254",
                "blackhole 192.0.2.128/25",
                "0.0.0.0/0 via 203.0.113.1 table 100",
            ]
        );
        let r = &cfg.vrrp[0].routes[0];
        assert_eq!(
            (r.src, r.metric),
            (Some("203.0.113.10".parse().unwrap()), Some(5))
        );
        assert_eq!(cfg.vrrp[0].routes[1].scope, Some(253));
    }

    /// virtual_rules in keepalived's words become `[[vrrp.rule]]` tables
    /// greha reads back as the same rules.
    #[test]
    fn virtual_rules_carry_over() {
        let text = r#"
vrrp_instance VI_1 {
    interface eth0
    virtual_router_id 51
    virtual_ipaddress {
        203.0.113.10/24
    }
    virtual_rules {
        from 203.0.113.10 table 100 priority 100
        to 2001:db8:5::/48 lookup main
        from all fwmark 0x10/0xff iif eth1 table 200
        from 192.0.2.0/24 blackhole
        from 192.0.2.0/24 goto 10
    }
}
"#;
        let out = import(text);
        let dropped: Vec<String> = out
            .dropped
            .iter()
            .map(|(l, m)| format!("{l}: {m}"))
            .collect();
        assert_eq!(dropped, vec!["13: virtual_rules: goto: not supported"]);
        let cfg = config::parse(Path::new("x"), &out.toml).expect(&out.toml);
        let rules: Vec<String> = cfg.vrrp[0].rules.iter().map(|r| r.to_string()).collect();
        assert_eq!(
            rules,
            vec![
                "from 203.0.113.10/32 table 100 pref 100",
                "from ::/0 to 2001:db8:5::/48 table 254",
                "from all fwmark 0x10/0xff iif eth1 table 200",
                "from 192.0.2.0/24 blackhole",
            ]
        );
    }

    /// One keepalived.conf for two hosts, as keepalived.conf(5) suggests:
    /// conditional lines and parameters pick each host's priority and
    /// addresses, the instance comes from an included file, and what is
    /// left out is named with the included file's name and line.
    #[test]
    fn includes_conditionals_and_parameters_per_host() {
        let dir = std::env::temp_dir().join(format!("greha-import-{}", std::process::id()));
        std::fs::create_dir_all(dir.join("conf.d")).unwrap();
        std::fs::write(
            dir.join("keepalived.conf"),
            "@main $PRIO=150\n@^main $PRIO=100\n$IF=eth0\ninclude conf.d/*.conf\n",
        )
        .unwrap();
        std::fs::write(
            dir.join("conf.d/vi1.conf"),
            "vrrp_script chk {\n  script \"killall -0 haproxy\"\n}\n\
             vrrp_instance VI_1 {\n  interface $IF\n  virtual_router_id 51\n  priority $PRIO\n\
               track_script {\n    chk\n  }\n\
               @main unicast_src_ip 192.0.2.1\n  @^main unicast_src_ip 192.0.2.2\n\
               unicast_peer {\n    @^main 192.0.2.1\n    @main 192.0.2.2\n  }\n\
               virtual_ipaddress {\n    203.0.113.10/24 dev ${IF}\n  }\n  smtp_alert\n}\n",
        )
        .unwrap();
        let conf = dir.join("keepalived.conf");
        for (id, prio, src, peer) in [
            ("main", 150, "192.0.2.1", "192.0.2.2"),
            ("backup", 100, "192.0.2.2", "192.0.2.1"),
        ] {
            let out = import_file(&conf, id).unwrap();
            let cfg = config::parse(Path::new("x"), &out.toml).expect(&out.toml);
            let v = &cfg.vrrp[0];
            assert_eq!(v.priority, prio, "{id}");
            assert_eq!(v.unicast_src, Some(src.parse().unwrap()), "{id}");
            assert_eq!(
                v.unicast_peers,
                vec![peer.parse::<std::net::IpAddr>().unwrap()],
                "{id}"
            );
            assert_eq!(
                (v.interface.as_str(), v.vips[0].dev.as_deref()),
                ("eth0", Some("eth0"))
            );
            assert!(
                matches!(&v.track[0].kind, TrackKind::Script { path, .. } if path == "killall -0 haproxy")
            );
            let dropped: Vec<String> = out
                .dropped
                .iter()
                .map(|(o, m)| format!("{o}: {m}"))
                .collect();
            assert_eq!(
                dropped,
                vec![format!(
                    "{}:20: vrrp_instance VI_1: smtp_alert: not supported by greha",
                    dir.join("conf.d/vi1.conf").display()
                )]
            );
        }
        std::fs::remove_dir_all(&dir).unwrap();
    }

    /// vrrp_track_process blocks, used by an instance's track_process,
    /// carry over with their quorum, matching and delays.
    #[test]
    fn track_processes_carry_over() {
        let text = r#"
vrrp_track_process haproxy {
    process "/usr/sbin/haproxy" -f
    param_match partial
    quorum 1
    quorum_max 2
    delay 0.5
    weight -30
}
vrrp_track_process nginx {
    process nginx
}
vrrp_instance VI_1 {
    interface eth0
    virtual_router_id 51
    track_process {
        haproxy
        nginx weight 10 reverse
    }
    virtual_ipaddress {
        203.0.113.10/24
    }
}
"#;
        let out = import(text);
        assert!(out.dropped.is_empty(), "{:?}", out.dropped);
        let cfg = config::parse(Path::new("x"), &out.toml).expect(&out.toml);
        let v = &cfg.vrrp[0];
        let TrackKind::Process(h) = &v.track[0].kind else {
            panic!("{:?}", v.track)
        };
        assert_eq!(
            (h.process.as_str(), h.param_match, h.quorum, h.quorum_max),
            (
                "/usr/sbin/haproxy -f",
                Some(crate::vrrp::def::ParamMatch::Partial),
                1,
                2
            )
        );
        assert_eq!(
            (h.fork_delay, h.terminate_delay),
            (
                std::time::Duration::from_millis(500),
                std::time::Duration::from_millis(500)
            )
        );
        assert_eq!(
            (v.track[0].weight, v.track[1].weight, v.track[1].reverse),
            (Some(-30), Some(10), true)
        );
    }

    /// use_vmac, with or without a name, carries over.
    #[test]
    fn use_vmac_carries_over() {
        let text = "vrrp_instance VI_1 {\n interface eth0\n use_vmac vrrp51\n vmac_xmit_base\n \
                    virtual_router_id 51\n virtual_ipaddress {\n 203.0.113.10/24\n }\n}\n";
        let out = import(text);
        let dropped: Vec<String> = out
            .dropped
            .iter()
            .map(|(l, m)| format!("{l}: {m}"))
            .collect();
        assert_eq!(
            dropped,
            vec!["4: vrrp_instance VI_1: vmac_xmit_base: not supported by greha"]
        );
        let cfg = config::parse(Path::new("x"), &out.toml).expect(&out.toml);
        assert_eq!(cfg.vrrp[0].vmac.as_deref(), Some("vrrp51"));
    }

    /// interface_up_down_delays carries over, one delay or two.
    #[test]
    fn interface_delays_carry_over() {
        let text = "interface_up_down_delays {\n  eth0 0.5\n  eth1 1 2.5\n}\n\
                    vrrp_instance VI_1 {\n interface eth0\n virtual_router_id 51\n \
                    virtual_ipaddress {\n 203.0.113.10/24\n }\n}\n";
        let out = import(text);
        assert!(out.dropped.is_empty(), "{:?}", out.dropped);
        let cfg = config::parse(Path::new("x"), &out.toml).expect(&out.toml);
        let ms = std::time::Duration::from_millis;
        assert_eq!(cfg.link_delays.get("eth0"), Some(&(ms(500), ms(500))));
        assert_eq!(cfg.link_delays.get("eth1"), Some(&(ms(1000), ms(2500))));
    }

    /// script_user and a vrrp_script's user carry over as USER[:GROUP].
    #[test]
    fn script_users_carry_over() {
        let text = "global_defs {\n  script_user nobody nogroup\n  enable_script_security\n}\n\
                    vrrp_script chk {\n  script \"/usr/bin/true\"\n  user daemon\n}\n\
                    vrrp_instance VI_1 {\n interface eth0\n virtual_router_id 51\n \
                    track_script {\n chk\n }\n virtual_ipaddress {\n 203.0.113.10/24\n }\n}\n";
        let out = import(text);
        assert!(out.dropped.is_empty(), "{:?}", out.dropped);
        let cfg = config::parse(Path::new("x"), &out.toml).expect(&out.toml);
        assert_eq!(cfg.script_user.as_deref(), Some("nobody:nogroup"));
        assert!(
            matches!(&cfg.vrrp[0].track[0].kind, TrackKind::Script { user: Some(u), .. } if u == "daemon")
        );
    }

    /// notify_fifo (or vrrp_notify_fifo) becomes greha's notify_fifo.
    #[test]
    fn notify_fifo_carries_over() {
        let text = "global_defs {\n  vrrp_notify_fifo /run/keepalived.fifo\n}\n\
                    vrrp_instance VI_1 {\n interface eth0\n virtual_router_id 51\n \
                    virtual_ipaddress {\n 203.0.113.10/24\n }\n}\n";
        let out = import(text);
        assert!(out.dropped.is_empty(), "{:?}", out.dropped);
        let cfg = config::parse(Path::new("x"), &out.toml).expect(&out.toml);
        assert_eq!(cfg.notify_fifo, Some("/run/keepalived.fifo".into()));
    }

    /// unicast_ttl and a unicast peer's min_ttl/max_ttl carry over.
    #[test]
    fn unicast_ttls_carry_over() {
        let text = r#"
vrrp_instance VI_1 {
    interface eth0
    virtual_router_id 51
    unicast_ttl 64
    unicast_src_ip 192.0.2.1
    unicast_peer {
        192.0.2.2
        198.51.100.2 min_ttl 250 max_ttl 254
    }
    virtual_ipaddress {
        203.0.113.10/24
    }
}
"#;
        let out = import(text);
        assert!(out.dropped.is_empty(), "{:?}", out.dropped);
        let cfg = config::parse(Path::new("x"), &out.toml).expect(&out.toml);
        let v = &cfg.vrrp[0];
        assert_eq!(v.unicast_ttl, 64);
        let peers: Vec<String> = v.unicast_peers.iter().map(ToString::to_string).collect();
        assert_eq!(peers, vec!["192.0.2.2", "198.51.100.2"]);
        assert_eq!(v.unicast_peer_ttl, vec![(0, 255), (250, 254)]);
    }

    /// A vrrp_sync_group becomes a `[[sync_group]]` whose instances carry
    /// its name and notify commands; the group's trackers go to each
    /// member without weights (any one down faults the group), and what
    /// greha has no use for is named.
    #[test]
    fn sync_groups_carry_over() {
        let text = r#"
vrrp_script chk_haproxy {
    script "killall -0 haproxy"
    weight -20
}
vrrp_sync_group VG_1 {
    group {
        VI_1
        VI_2
    }
    notify_master "/usr/local/bin/vg.sh MASTER"
    notify "/usr/local/bin/vg-any.sh"
    track_interface {
        eth2 weight -10
    }
    track_script {
        chk_haproxy
    }
    smtp_alert
}
vrrp_instance VI_1 {
    interface eth0
    virtual_router_id 51
    virtual_ipaddress {
        203.0.113.10/24
    }
}
vrrp_instance VI_2 {
    interface eth1
    virtual_router_id 52
    virtual_ipaddress {
        198.51.100.10/24
    }
}
vrrp_instance VI_3 {
    interface eth1
    virtual_router_id 53
    virtual_ipaddress {
        198.51.100.11/24
    }
}
"#;
        let out = import(text);
        let dropped: Vec<String> = out
            .dropped
            .iter()
            .map(|(l, m)| format!("{l}: {m}"))
            .collect();
        assert_eq!(
            dropped,
            vec!["19: vrrp_sync_group VG_1: smtp_alert: not supported by greha"]
        );
        let cfg = config::parse(Path::new("x"), &out.toml).expect(&out.toml);
        for v in &cfg.vrrp[..2] {
            let g = v.sync_group.as_ref().expect(&v.name);
            assert_eq!(g.name, "VG_1");
            assert_eq!(
                g.notify.master.as_deref(),
                Some("/usr/local/bin/vg.sh MASTER")
            );
            assert_eq!(g.notify.any.as_deref(), Some("/usr/local/bin/vg-any.sh"));
            let tracks: Vec<(&TrackKind, Option<i32>)> =
                v.track.iter().map(|t| (&t.kind, t.weight)).collect();
            assert_eq!(tracks.len(), 2, "{}: {tracks:?}", v.name);
            assert_eq!(tracks[0], (&TrackKind::Interface("eth2".into()), None));
            assert!(
                matches!(tracks[1], (TrackKind::Script { path, .. }, None) if path == "killall -0 haproxy"),
                "{tracks:?}"
            );
        }
        assert_eq!(cfg.vrrp[2].sync_group, None);
        assert!(cfg.vrrp[2].track.is_empty());
    }

    /// `weight N reverse` (on a vrrp_script, a track_script entry or a
    /// track_interface entry) and `init_fail` carry over.
    #[test]
    fn reverse_weights_and_init_fail_carry_over() {
        let text = r#"
vrrp_script chk_maint {
    script "/usr/bin/test -e /run/maint"
    weight 0 reverse
    init_fail
}
vrrp_script chk_app {
    script "/usr/bin/true"
    weight -10
}
vrrp_instance VI_1 {
    interface eth0
    virtual_router_id 51
    track_interface {
        eth1 weight 20 reverse
    }
    track_script {
        chk_maint
        chk_app weight 30 reverse
    }
    virtual_ipaddress {
        203.0.113.10/24
    }
}
"#;
        let out = import(text);
        assert!(out.dropped.is_empty(), "{:?}", out.dropped);
        let cfg = config::parse(Path::new("x"), &out.toml).expect(&out.toml);
        let got: Vec<(Option<i32>, bool, bool)> = cfg.vrrp[0]
            .track
            .iter()
            .map(|t| {
                let init_fail = matches!(
                    t.kind,
                    TrackKind::Script {
                        init_fail: true,
                        ..
                    }
                );
                (t.weight, t.reverse, init_fail)
            })
            .collect();
        assert_eq!(
            got,
            vec![
                (Some(20), true, false),
                (Some(0), true, true),
                (Some(30), true, false)
            ]
        );
    }

    /// keepalived's everyday script and notify lines carry over with their
    /// arguments, and greha runs exactly the words keepalived would.
    #[test]
    fn scripts_and_notifies_with_arguments() {
        let text = r#"
vrrp_script chk_haproxy {
    script "killall -0 haproxy"
}
vrrp_script chk_sh {
    script "/bin/sh -c 'pidof nginx || exit 1'"
}
vrrp_instance VI_1 {
    interface eth0
    virtual_router_id 51
    priority 100
    track_script {
        chk_haproxy
        chk_sh
    }
    notify_master "/usr/local/bin/vrrp.sh MASTER VI_1"
    notify_backup /usr/local/bin/vrrp.sh BACKUP "VI 1"
    notify "/usr/local/bin/event"
    dont_track_primary
    virtual_ipaddress {
        203.0.113.10/24
    }
}
"#;
        let out = import(text);
        assert!(out.dropped.is_empty(), "{:?}", out.dropped);
        let cfg = config::parse(Path::new("x"), &out.toml).expect(&out.toml);
        let v = &cfg.vrrp[0];
        assert!(!v.track_primary);
        let argv = |line: &str| crate::vrrp::command::split(line).expect("splits");
        let scripts: Vec<Vec<String>> = v
            .track
            .iter()
            .filter_map(|t| match &t.kind {
                TrackKind::Script { path, .. } => Some(argv(path)),
                _ => None,
            })
            .collect();
        assert_eq!(
            scripts,
            vec![
                vec!["killall", "-0", "haproxy"],
                vec!["/bin/sh", "-c", "pidof nginx || exit 1"],
            ]
        );
        let cmds = v
            .notify
            .commands("INSTANCE", "VI_1", crate::vrrp::engine::State::Master, 100);
        assert_eq!(
            cmds,
            vec![
                vec!["/usr/local/bin/vrrp.sh", "MASTER", "VI_1"],
                vec!["/usr/local/bin/event", "INSTANCE", "VI_1", "MASTER", "100"],
            ]
        );
        let cmds = v
            .notify
            .commands("INSTANCE", "VI_1", crate::vrrp::engine::State::Backup, 100);
        assert_eq!(cmds[0], vec!["/usr/local/bin/vrrp.sh", "BACKUP", "VI 1"]);
    }
}
