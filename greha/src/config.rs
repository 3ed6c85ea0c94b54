//! The configuration file (TOML; /etc/greha/greha.toml unless told).
//!
//! Each `[[tunnel]]` and `[[vrrp]]` table is turned into the words of the
//! command line's spec and checked by the same parser, so the file and
//! `--tunnel`/`--vrrp` accept exactly the same things. Every word remembers
//! the line it came from: an error names the file, the line, the field and
//! the value.
use std::{
    fmt::Write as _,
    ops::Range,
    path::{Path, PathBuf},
};

use anyhow::{Context as _, Result, anyhow, bail};
use toml::de::{DeTable, DeValue};

use crate::{
    spec::SpecError,
    tunnel::TunnelDef,
    vrrp::def::{InstanceDef, Notify, SyncGroup, Track, TrackKind},
};

pub const DEFAULT_PATH: &str = "/etc/greha/greha.toml";

/// A loaded configuration.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Config {
    pub count: Vec<String>,
    pub tunnels: Vec<TunnelDef>,
    pub vrrp: Vec<InstanceDef>,
    /// keepalived's notify_fifo (`notify_fifo = "/run/greha/notify"`).
    pub notify_fifo: Option<PathBuf>,
    /// keepalived's interface_up_down_delays: `[interface_up_down_delays]`
    /// with `eth0 = 0.5` (both ways) or `eth0 = [0.5, 2]` (down, up).
    pub link_delays: std::collections::BTreeMap<String, (std::time::Duration, std::time::Duration)>,
    /// keepalived's script_user: `script_user = "USER[:GROUP]"`.
    pub script_user: Option<String>,
}

/// One word of a spec and where it came from.
struct Word {
    text: String,
    line: usize,
    /// The TOML key it came from, as the spec names it.
    key: String,
}

struct Source<'a> {
    path: &'a Path,
    /// Where each line after the first starts: a line number is a binary
    /// search, so a large file is read in linear time.
    line_starts: Vec<usize>,
}

impl<'a> Source<'a> {
    fn new(path: &'a Path, text: &str) -> Self {
        let line_starts = text
            .bytes()
            .enumerate()
            .filter(|(_, b)| *b == b'\n')
            .map(|(i, _)| i + 1)
            .collect();
        Self { path, line_starts }
    }

    fn line(&self, span: &Range<usize>) -> usize {
        self.line_starts.partition_point(|&s| s <= span.start) + 1
    }

    fn err(&self, span: &Range<usize>, msg: impl std::fmt::Display) -> anyhow::Error {
        anyhow!("{}:{}: {msg}", self.path.display(), self.line(span))
    }
}

/// A scalar as a spec word: strings as they are, numbers and booleans as
/// TOML writes them.
fn scalar(src: &Source, key: &str, v: &toml::Spanned<DeValue>) -> Result<String> {
    Ok(match v.get_ref() {
        DeValue::String(s) => s.to_string(),
        DeValue::Integer(i) => i.to_string(),
        DeValue::Float(f) => f.to_string(),
        DeValue::Boolean(b) => b.to_string(),
        _ => return Err(src.err(&v.span(), format!("{key}: expected a single value"))),
    })
}

fn array<'a>(
    src: &Source,
    key: &str,
    v: &'a toml::Spanned<DeValue<'a>>,
) -> Result<&'a [toml::Spanned<DeValue<'a>>]> {
    match v.get_ref() {
        DeValue::Array(a) => Ok(a),
        _ => Err(src.err(&v.span(), format!("{key}: expected a list"))),
    }
}

fn table<'a>(
    src: &Source,
    key: &str,
    v: &'a toml::Spanned<DeValue<'a>>,
) -> Result<&'a DeTable<'a>> {
    match v.get_ref() {
        DeValue::Table(t) => Ok(t),
        _ => Err(src.err(&v.span(), format!("{key}: expected a table"))),
    }
}

/// Turns a table into spec words: `name` first, then `word value` for each
/// key (TOML's `snake_case` is the spec's `kebab-case`); `flags` are
/// boolean keys with the bare word each value stands for ("" for none),
/// `lists` keys whose every element repeats the word.
fn words(
    src: &Source,
    what: &str,
    t: &toml::Spanned<DeTable>,
    keys: &[&str],
    flags: &[(&str, &str, &str)],
    lists: &[(&str, &str)],
    out: &mut Vec<Word>,
) -> Result<String> {
    let name = t
        .get_ref()
        .get("name")
        .ok_or_else(|| src.err(&t.span(), format!("{what}: a name is required")))?;
    let name_text = scalar(src, "name", name)?;
    out.push(Word {
        text: name_text.clone(),
        line: src.line(&name.span()),
        key: "name".into(),
    });
    for (k, v) in t.get_ref() {
        let key = k.get_ref().as_ref();
        let line = src.line(&k.span());
        let push = |out: &mut Vec<Word>, word: &str, text: String| {
            out.push(Word {
                text: word.to_owned(),
                line,
                key: word.to_owned(),
            });
            out.push(Word {
                text,
                line,
                key: word.to_owned(),
            });
        };
        if key == "name" {
            continue;
        } else if let Some((_, yes, no)) = flags.iter().find(|(k, _, _)| *k == key) {
            let word = match v.get_ref() {
                DeValue::Boolean(b) => {
                    if *b {
                        yes
                    } else {
                        no
                    }
                }
                _ => {
                    return Err(src.err(
                        &v.span(),
                        format!("{what} {name_text}: {key}: expected true or false"),
                    ));
                }
            };
            if !word.is_empty() {
                out.push(Word {
                    text: (*word).to_owned(),
                    line,
                    key: key.to_owned(),
                });
            }
        } else if let Some((_, word)) = lists.iter().find(|(k, _)| *k == key) {
            for item in array(src, key, v)? {
                push(out, word, scalar(src, key, item)?);
            }
        } else if keys.contains(&key) {
            push(out, &key.replace('_', "-"), scalar(src, key, v)?);
        } else if !matches!(
            key,
            "vip"
                | "route"
                | "rule"
                | "unicast_peer"
                | "track_interface"
                | "track_script"
                | "track_tunnel"
                | "track_file"
                | "track_process"
        ) {
            return Err(src.err(
                &k.span(),
                format!("{what} {name_text}: unknown key {key:?}"),
            ));
        }
    }
    Ok(name_text)
}

/// Runs `parse` on the words; an error gets the line of the word it
/// names: the field's, and of the value when the error names one.
fn checked<T>(
    src: &Source,
    table_line: usize,
    words: &[Word],
    parse: impl FnOnce(&[String]) -> Result<T, SpecError>,
) -> Result<T> {
    let texts: Vec<String> = words.iter().map(|w| w.text.clone()).collect();
    parse(&texts).map_err(|e| {
        let field = e.field.as_deref().unwrap_or("");
        // A key spelled with `_` for the word's `-` (ignore_df).
        let named = |w: &&Word| w.key == field || w.key.replace('_', "-") == field;
        let line = words
            .iter()
            .filter(named)
            .find(|w| e.value.as_deref().is_some_and(|v| v == w.text))
            .or_else(|| words.iter().find(named))
            // A missing field: the table it is missing from.
            .map_or(table_line, |w| w.line);
        anyhow!("{}:{line}: {e}", src.path.display())
    })
}

const TUNNEL_KEYS: &[&str] = &[
    "mode",
    "local",
    "remote",
    "key",
    "ikey",
    "okey",
    "ttl",
    "tos",
    "hoplimit",
    "tclass",
    "flowlabel",
    "encaplimit",
    "dev",
    "mtu",
    "probe",
    "probe_interval",
];
const VRRP_KEYS: &[&str] = &[
    "interface",
    "vrid",
    "priority",
    "version",
    "advert_int",
    "preempt_delay",
    "auth_pass",
    "checksum",
    "unicast_src",
    "garp_repeat",
    "garp_delay",
    "garp_refresh",
    "garp_lower_prio_repeat",
    "garp_lower_prio_delay",
    "notify_master",
    "notify_backup",
    "notify_fault",
    "notify_stop",
    "notify",
    "sync_group",
    "unicast_ttl",
    "vmac_name",
];

/// A `[[vrrp.rule]]`'s keys, each the spec's word.
const RULE_KEYS: &[&str] = &[
    "from", "to", "table", "pref", "fwmark", "iif", "oif", "type", "family",
];

/// Parses a configuration text; `path` is only for messages.
pub fn parse(path: &Path, text: &str) -> Result<Config> {
    let src = Source::new(path, text);
    let root = DeTable::parse(text)
        .map_err(|e| anyhow!("{}: {}", path.display(), e.to_string().trim_end()))?;
    let mut cfg = Config::default();
    let mut groups = Vec::new();
    for (k, v) in root.get_ref() {
        let key = k.get_ref().as_ref();
        match key {
            "count" => {
                for item in array(&src, key, v)? {
                    cfg.count.push(scalar(&src, key, item)?);
                }
            }
            "tunnel" => {
                for t in array(&src, key, v)? {
                    let t = toml::Spanned::new(t.span(), table(&src, key, t)?.clone());
                    let mut w = Vec::new();
                    words(
                        &src,
                        "tunnel",
                        &t,
                        TUNNEL_KEYS,
                        &[
                            ("csum", "csum", "nocsum"),
                            ("icsum", "icsum", "noicsum"),
                            ("ocsum", "ocsum", "noocsum"),
                            ("seq", "seq", "noseq"),
                            ("iseq", "iseq", "noiseq"),
                            ("oseq", "oseq", "nooseq"),
                            ("pmtudisc", "pmtudisc", "nopmtudisc"),
                            ("ignore_df", "ignore-df", "noignore-df"),
                        ],
                        &[("addresses", "address")],
                        &mut w,
                    )?;
                    cfg.tunnels
                        .push(checked(&src, src.line(&t.span()), &w, TunnelDef::parse)?);
                }
            }
            "vrrp" => {
                for t in array(&src, key, v)? {
                    let t = toml::Spanned::new(t.span(), table(&src, key, t)?.clone());
                    cfg.vrrp.push(vrrp_instance(&src, &t)?);
                }
            }
            "sync_group" => {
                for t in array(&src, key, v)? {
                    groups.push(sync_group(&src, t)?);
                }
            }
            "interface_up_down_delays" => {
                let t = table(&src, key, v)?;
                for (k, v) in t {
                    let name = k.get_ref().as_ref();
                    let secs = |v: &toml::Spanned<DeValue>| -> Result<std::time::Duration> {
                        let text = scalar(&src, name, v)?;
                        text.parse::<f64>()
                            .ok()
                            .filter(|s| (0.0..=255.0).contains(s))
                            .map(std::time::Duration::from_secs_f64)
                            .ok_or_else(|| {
                                src.err(
                                    &v.span(),
                                    format!("interface_up_down_delays: {name}: {text:?} is not a delay (0 to 255 seconds)"),
                                )
                            })
                    };
                    let (down, up) = match v.get_ref() {
                        DeValue::Array(a) if a.len() == 2 => (secs(&a[0])?, secs(&a[1])?),
                        DeValue::Array(_) => {
                            return Err(src.err(
                                &v.span(),
                                format!(
                                    "interface_up_down_delays: {name}: give DOWN or [DOWN, UP]"
                                ),
                            ));
                        }
                        _ => {
                            let d = secs(v)?;
                            (d, d)
                        }
                    };
                    cfg.link_delays.insert(name.to_owned(), (down, up));
                }
            }
            "script_user" => {
                let u = scalar(&src, key, v)?;
                if u.is_empty() || u.chars().any(char::is_whitespace) {
                    return Err(src.err(
                        &v.span(),
                        format!("script_user: {u:?} is not USER or USER:GROUP"),
                    ));
                }
                cfg.script_user = Some(u);
            }
            "notify_fifo" => {
                let p = scalar(&src, key, v)?;
                if !p.starts_with('/') {
                    return Err(src.err(
                        &v.span(),
                        format!("notify_fifo: {p:?} is not an absolute path"),
                    ));
                }
                cfg.notify_fifo = Some(PathBuf::from(p));
            }
            _ => return Err(src.err(&k.span(), format!("unknown key {key:?}"))),
        }
    }
    join_groups(&src, &groups, &mut cfg.vrrp)?;
    let mut seen = std::collections::HashSet::new();
    for t in &cfg.tunnels {
        if !seen.insert(("tunnel", t.name.clone())) {
            bail!("{}: tunnel {}: name: defined twice", path.display(), t.name);
        }
    }
    for v in &cfg.vrrp {
        if !seen.insert(("vrrp", v.name.clone())) {
            bail!(
                "{}: vrrp instance {}: name: defined twice",
                path.display(),
                v.name
            );
        }
        // An IPv4 and an IPv6 instance may share a VRID (RFC 5798 §7.1).
        let family = v.family().name();
        if !seen.insert(("vrid", format!("{} {} {family}", v.interface, v.vrid))) {
            bail!(
                "{}: vrrp instance {}: vrid: {} is used twice on {} ({family})",
                path.display(),
                v.name,
                v.vrid,
                v.interface
            );
        }
    }
    Ok(cfg)
}

/// A `[[sync_group]]` table: its name, its instances (each with its line)
/// and its notify commands.
struct GroupTable {
    group: SyncGroup,
    line: usize,
    instances: Vec<(String, usize)>,
}

fn sync_group(src: &Source, v: &toml::Spanned<DeValue>) -> Result<GroupTable> {
    let t = table(src, "sync_group", v)?;
    let line = src.line(&v.span());
    let name = t
        .get("name")
        .map(|n| scalar(src, "name", n))
        .transpose()?
        .filter(|n| !n.is_empty() && !n.chars().any(char::is_whitespace))
        .ok_or_else(|| src.err(&v.span(), "sync_group: a name (one word) is required"))?;
    let mut g = GroupTable {
        group: SyncGroup {
            name: name.clone(),
            notify: Notify::default(),
        },
        line,
        instances: Vec::new(),
    };
    for (k, v) in t {
        let key = k.get_ref().as_ref();
        let at = |msg: String| src.err(&k.span(), format!("sync_group {name}: {key}: {msg}"));
        let command = || -> Result<Option<String>> {
            let text = scalar(src, key, v)?;
            crate::vrrp::command::split(&text).map_err(|why| at(format!("{text:?}: {why}")))?;
            Ok(Some(text))
        };
        match key {
            "name" => {}
            "instances" => {
                for item in array(src, key, v)? {
                    g.instances
                        .push((scalar(src, key, item)?, src.line(&item.span())));
                }
            }
            "notify_master" => g.group.notify.master = command()?,
            "notify_backup" => g.group.notify.backup = command()?,
            "notify_fault" => g.group.notify.fault = command()?,
            "notify_stop" => g.group.notify.stop = command()?,
            "notify" => g.group.notify.any = command()?,
            _ => return Err(at("unknown key".into())),
        }
    }
    if g.instances.is_empty() {
        return Err(src.err(
            &v.span(),
            format!("sync_group {name}: instances: at least one instance is required"),
        ));
    }
    Ok(g)
}

/// Puts each `[[sync_group]]`'s instances in it: each must exist and be
/// in no other group; an instance naming the group itself
/// (`sync_group = NAME`) gets its notify commands too.
fn join_groups(src: &Source, groups: &[GroupTable], vrrp: &mut [InstanceDef]) -> Result<()> {
    let path = src.path.display();
    let mut names = std::collections::HashSet::new();
    for g in groups {
        let name = &g.group.name;
        if !names.insert(name.clone()) {
            bail!("{path}:{}: sync_group {name}: name: defined twice", g.line);
        }
        for (member, line) in &g.instances {
            let v = vrrp.iter_mut().find(|v| &v.name == member).ok_or_else(|| {
                anyhow!("{path}:{line}: sync_group {name}: instances: no vrrp instance {member:?}")
            })?;
            if let Some(other) = v.sync_group.as_ref().filter(|o| &o.name != name) {
                bail!(
                    "{path}:{line}: sync_group {name}: instances: {member} is in sync group {} already",
                    other.name
                );
            }
            v.sync_group = Some(g.group.clone());
        }
        for v in vrrp.iter_mut() {
            if let Some(mine) = v.sync_group.as_mut().filter(|m| &m.name == name) {
                mine.notify = g.group.notify.clone();
            }
        }
    }
    Ok(())
}

fn vrrp_instance(src: &Source, t: &toml::Spanned<DeTable>) -> Result<InstanceDef> {
    let mut w = Vec::new();
    let name = words(
        src,
        "vrrp instance",
        t,
        VRRP_KEYS,
        &[
            // Only `preempt = false` says something: nopreempt.
            ("preempt", "", "nopreempt"),
            ("fastpath", "", "no-fastpath"),
            ("higher_prio_send_advert", "", "no-higher-prio-send-advert"),
            ("dont_track_primary", "dont-track-primary", ""),
            ("native_ipv6", "native-ipv6", ""),
            ("use_vmac", "use-vmac", ""),
        ],
        &[("unicast_peers", "unicast-peer")],
        &mut w,
    )?;
    // Sub-tables in the spec's order: each vip with its dev and label,
    // each tracker with its parameters.
    let sub = |key: &str| -> Result<Vec<toml::Spanned<DeTable>>> {
        match t.get_ref().get(key) {
            None => Ok(Vec::new()),
            Some(v) => array(src, key, v)?
                .iter()
                .map(|e| Ok(toml::Spanned::new(e.span(), table(src, key, e)?.clone())))
                .collect(),
        }
    };
    let push = |w: &mut Vec<Word>, line: usize, key: &str, text: String| {
        w.push(Word {
            text: key.to_owned(),
            line,
            key: key.to_owned(),
        });
        w.push(Word {
            text,
            line,
            key: key.to_owned(),
        });
    };
    // A rule has no key of its own to lead with: `rule`, then its keys.
    for e in sub("rule")? {
        w.push(Word {
            text: "rule".into(),
            line: src.line(&e.span()),
            key: "rule".into(),
        });
        for (k, v) in e.get_ref() {
            let key = k.get_ref().as_ref();
            if !RULE_KEYS.contains(&key) {
                return Err(src.err(
                    &k.span(),
                    format!("vrrp instance {name}: rule: unknown key {key:?}"),
                ));
            }
            push(&mut w, src.line(&k.span()), key, scalar(src, key, v)?);
        }
    }
    for (kind, first, allowed) in [
        (
            "vip",
            "address",
            &[
                "address",
                "dev",
                "label",
                "excluded",
                "brd",
                "scope",
                "peer",
                "noprefixroute",
            ][..],
        ),
        (
            "route",
            "to",
            &[
                "to", "via", "dev", "src", "metric", "table", "scope", "type",
            ][..],
        ),
        (
            "track_interface",
            "name",
            &["name", "weight", "reverse"][..],
        ),
        ("track_tunnel", "name", &["name", "weight", "reverse"][..]),
        (
            "track_script",
            "path",
            &[
                "path",
                "interval",
                "timeout",
                "rise",
                "fall",
                "weight",
                "reverse",
                "init_fail",
                "user",
            ][..],
        ),
        (
            "track_file",
            "path",
            &["path", "weight", "reverse", "init", "overwrite"][..],
        ),
        (
            "unicast_peer",
            "address",
            &["address", "min_ttl", "max_ttl"][..],
        ),
        (
            "track_process",
            "process",
            &[
                "process",
                "quorum",
                "quorum_max",
                "param_match",
                "full_command",
                "delay",
                "fork_delay",
                "terminate_delay",
                "weight",
                "reverse",
            ][..],
        ),
    ] {
        for e in sub(kind)? {
            let head = e.get_ref().get(first).ok_or_else(|| {
                src.err(
                    &e.span(),
                    format!("vrrp instance {name}: {kind}: {first} is required"),
                )
            })?;
            let word = match kind {
                "vip" => "vip",
                "route" => "route",
                "track_interface" => "track-interface",
                "track_tunnel" => "track-tunnel",
                "track_file" => "track-file",
                "unicast_peer" => "unicast-peer",
                "track_process" => "track-process",
                _ => "track-script",
            };
            push(
                &mut w,
                src.line(&head.span()),
                word,
                scalar(src, first, head)?,
            );
            for (k, v) in e.get_ref() {
                let key = k.get_ref().as_ref();
                if key == first {
                    continue;
                }
                if !allowed.contains(&key) {
                    return Err(src.err(
                        &k.span(),
                        format!("vrrp instance {name}: {kind}: unknown key {key:?}"),
                    ));
                }
                // A flag (reverse, overwrite, init_fail): its word when
                // true.
                if let Some(on) = v.get_ref().as_bool() {
                    if on {
                        w.push(Word {
                            text: key.replace('_', "-"),
                            line: src.line(&k.span()),
                            key: key.to_owned(),
                        });
                    }
                    continue;
                }
                push(
                    &mut w,
                    src.line(&k.span()),
                    &key.replace('_', "-"),
                    scalar(src, key, v)?,
                );
            }
        }
    }
    checked(src, src.line(&t.span()), &w, InstanceDef::parse)
}

/// Reads and parses the file at `path`.
pub fn load(path: &Path) -> Result<Config> {
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("reading the configuration {}", path.display()))?;
    parse(path, &text)
}

/// Each `track-tunnel` names a tunnel of the same run that has a probe
/// address: without one, nothing would ever say its far end is dead.
pub fn check_tracked_tunnels(tunnels: &[TunnelDef], vrrp: &[InstanceDef]) -> Result<()> {
    for v in vrrp {
        for t in &v.track {
            let TrackKind::Tunnel(name) = &t.kind else {
                continue;
            };
            match tunnels.iter().find(|d| &d.name == name) {
                None => bail!(
                    "vrrp instance {}: track-tunnel: no tunnel {name} is defined",
                    v.name
                ),
                Some(d) if d.probe.is_none() => bail!(
                    "vrrp instance {}: track-tunnel: tunnel {name} has no probe address \
                     (probe ADDR: an address at its far end to ping)",
                    v.name
                ),
                Some(_) => {}
            }
        }
    }
    Ok(())
}

/// The configuration to run with: `--config FILE` (which must exist), else
/// the default file if there is one, else nothing.
pub fn load_default(explicit: Option<&Path>) -> Result<(Config, Option<PathBuf>)> {
    match explicit {
        Some(p) => Ok((load(p)?, Some(p.to_path_buf()))),
        None if Path::new(DEFAULT_PATH).exists() => {
            Ok((load(Path::new(DEFAULT_PATH))?, Some(DEFAULT_PATH.into())))
        }
        None => Ok((Config::default(), None)),
    }
}

/// A one-paragraph summary for `greha check-config`.
pub fn summary(cfg: &Config) -> String {
    let mut s = String::new();
    for t in &cfg.tunnels {
        let _ = writeln!(
            s,
            "tunnel {}: {} {} -> {}{}",
            t.name,
            t.mode,
            t.local,
            t.remote,
            match (t.ikey, t.okey) {
                (None, None) => String::new(),
                (i, o) if i == o => format!(" key {}", i.unwrap_or_default()),
                (i, o) => format!(
                    "{}{}",
                    i.map_or(String::new(), |k| format!(" ikey {k}")),
                    o.map_or(String::new(), |k| format!(" okey {k}"))
                ),
            } + &[
                (t.icsum, "icsum"),
                (t.ocsum, "ocsum"),
                (t.iseq, "iseq"),
                (t.oseq, "oseq")
            ]
            .iter()
            .filter(|(on, _)| *on)
            .map(|(_, w)| format!(" {w}"))
            .collect::<String>()
        );
    }
    for v in &cfg.vrrp {
        let tracks = v
            .track
            .iter()
            .map(|t: &Track| match &t.kind {
                TrackKind::Interface(i) => i.clone(),
                TrackKind::Script { path, .. } => path.clone(),
                TrackKind::Tunnel(t) => format!("tunnel {t}"),
                TrackKind::File { path, .. } => format!("file {path}"),
                TrackKind::Process(m) => format!("process {}", m.process),
            })
            .collect::<Vec<_>>();
        let _ = writeln!(
            s,
            "vrrp instance {}: {} vrid {} priority {}, {} VIP(s){}",
            v.name,
            v.interface,
            v.vrid,
            v.priority,
            v.vips.len(),
            if tracks.is_empty() {
                String::new()
            } else {
                format!(", tracking {}", tracks.join(" "))
            }
        );
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tunnel::Mode;

    fn parse_str(text: &str) -> Result<Config> {
        parse(Path::new("greha.toml"), text)
    }

    #[test]
    fn the_example_reproduces_the_seed() {
        let cfg = load(Path::new(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../examples/greha.toml"
        )))
        .unwrap();
        assert_eq!(cfg.tunnels.len(), 1);
        let t = &cfg.tunnels[0];
        assert_eq!(
            (t.name.as_str(), t.mode, t.okey),
            ("gretap1", Mode::Gretap, None)
        );
        let v = &cfg.vrrp[0];
        assert_eq!(
            (v.interface.as_str(), v.vrid, v.priority),
            ("gretap1", 51, 150)
        );
        assert_eq!(v.auth, crate::vrrp::packet::Auth::pass("1111"));
        assert_eq!(v.vips[0].dev.as_deref(), Some("eth0"));
    }

    #[test]
    fn the_file_and_the_command_line_agree() {
        let cfg = parse_str(
            r#"
[[vrrp]]
name = "VI_1"
interface = "eth0"
vrid = 7
advert_int = 0.1
preempt = false
unicast_peers = ["192.0.2.9"]
[[vrrp.vip]]
address = "203.0.113.10/24"
label = "eth0:vip"
[[vrrp.track_script]]
path = "/bin/true"
fall = 3
weight = -10
"#,
        )
        .unwrap();
        let words: Vec<String> = "VI_1 interface eth0 vrid 7 advert-int 0.1 nopreempt \
             unicast-peer 192.0.2.9 vip 203.0.113.10/24 label eth0:vip \
             track-script /bin/true fall 3 weight -10"
            .split_whitespace()
            .map(str::to_owned)
            .collect();
        assert_eq!(cfg.vrrp[0], InstanceDef::parse(&words).unwrap());
    }

    /// iproute2's `csum`/`seq` words as booleans, each with its `no` form
    /// and one direction overriding the pair, in the file's order.
    #[test]
    fn checksum_and_sequence_flags_read_as_the_words() {
        let head = "[[tunnel]]\nname = \"t\"\nmode = \"gretap\"\nlocal = \"192.0.2.1\"\nremote = \"192.0.2.2\"\n";
        for (flags, want) in [
            ("csum = true\n", (true, true, false, false)),
            ("csum = true\nocsum = false\n", (true, false, false, false)),
            ("seq = true\n", (false, false, true, true)),
            ("oseq = true\nicsum = true\n", (true, false, false, true)),
            ("csum = false\nseq = false\n", (false, false, false, false)),
        ] {
            let cfg = parse_str(&format!("{head}{flags}")).unwrap();
            let t = &cfg.tunnels[0];
            assert_eq!((t.icsum, t.ocsum, t.iseq, t.oseq), want, "{flags}");
        }
    }

    /// `pmtudisc` and `ignore_df` as booleans for iproute2's words; an
    /// `ignore_df` without `pmtudisc = false` is named at its line.
    #[test]
    fn pmtudisc_and_ignore_df_read_as_the_words() {
        let head = "[[tunnel]]\nname = \"t\"\nmode = \"gretap\"\nlocal = \"192.0.2.1\"\nremote = \"192.0.2.2\"\n";
        for (flags, want) in [
            ("", (true, false)),
            ("pmtudisc = false\n", (false, false)),
            ("pmtudisc = false\nignore_df = true\n", (false, true)),
        ] {
            let cfg = parse_str(&format!("{head}{flags}")).unwrap();
            let t = &cfg.tunnels[0];
            assert_eq!((t.pmtudisc, t.ignore_df), want, "{flags}");
        }
        let e = parse_str(&format!("{head}ignore_df = true\n")).unwrap_err();
        assert_eq!(
            e.to_string(),
            "greha.toml:6: tunnel t: ignore-df: needs nopmtudisc: with pmtudisc every outer packet has DF"
        );
    }

    /// The IPv6 underlays' words in a `[[tunnel]]` table, as on the
    /// command line.
    #[test]
    fn ip6_tunnel_keys_read_as_the_words() {
        let cfg = parse_str(
            "[[tunnel]]\nname = \"t6\"\nmode = \"ip6gretap\"\nlocal = \"2001:db8:1::1\"\n\
             remote = \"2001:db8:1::2\"\nhoplimit = 64\ntclass = \"0x20\"\n\
             flowlabel = \"inherit\"\nencaplimit = 4\naddresses = [\"2001:db8:2::1/64\"]\n",
        )
        .unwrap();
        let t = &cfg.tunnels[0];
        assert_eq!(
            (t.ttl, t.tos, t.flowlabel, t.encap_limit),
            (64, 0x20, greha_common::FLOWLABEL_INHERIT, Some(4))
        );
        let e = parse_str(
            "[[tunnel]]\nname = \"t6\"\nmode = \"ip6gre\"\nlocal = \"2001:db8:1::1\"\n\
             remote = \"2001:db8:1::2\"\nencaplimit = 300\n",
        )
        .unwrap_err();
        assert_eq!(
            format!("{e:#}"),
            "greha.toml:6: tunnel t6: encaplimit: \"300\" is not an encapsulation limit (0 to 255, or none)"
        );
    }

    /// `[[sync_group]]` puts its instances in the group with its notify
    /// commands; an unknown or doubly grouped instance is named with its
    /// line.
    #[test]
    fn sync_groups_join_their_instances() {
        let vrrp = |name: &str, vrid: u8, extra: &str| {
            format!(
                "[[vrrp]]\nname = \"{name}\"\ninterface = \"eth0\"\nvrid = {vrid}\n{extra}\
                 [[vrrp.vip]]\naddress = \"203.0.113.{vrid}/24\"\n"
            )
        };
        let base = format!(
            "{}{}{}",
            vrrp("VI_1", 1, ""),
            vrrp("VI_2", 2, ""),
            vrrp("VI_3", 3, "sync_group = \"G\"\n")
        );
        let cfg = parse_str(&format!(
            "{base}[[sync_group]]\nname = \"G\"\ninstances = [\"VI_1\", \"VI_2\"]\n\
             notify_backup = \"/bin/logger 'G backup'\"\n"
        ))
        .unwrap();
        for v in &cfg.vrrp {
            let g = v.sync_group.as_ref().expect(&v.name);
            assert_eq!(
                (g.name.as_str(), g.notify.backup.as_deref()),
                ("G", Some("/bin/logger 'G backup'")),
                "{}",
                v.name
            );
        }
        for (groups, want) in [
            (
                "[[sync_group]]\nname = \"G\"\ninstances = [\n\"VI_1\",\n\"VI_9\"]\n",
                "greha.toml:24: sync_group G: instances: no vrrp instance \"VI_9\"",
            ),
            (
                "[[sync_group]]\nname = \"H\"\ninstances = [\"VI_3\"]\n",
                "greha.toml:22: sync_group H: instances: VI_3 is in sync group G already",
            ),
            (
                "[[sync_group]]\nname = \"G\"\ninstances = []\n",
                "greha.toml:20: sync_group G: instances: at least one instance is required",
            ),
            (
                "[[sync_group]]\nname = \"G\"\ninstances = [\"VI_1\"]\nnotify = \"'unclosed\"\n",
                "greha.toml:23: sync_group G: notify:",
            ),
        ] {
            let e = parse_str(&format!("{base}{groups}")).unwrap_err();
            assert!(format!("{e:#}").starts_with(want), "{e:#}\nwanted {want}");
        }
    }

    /// A tracked tunnel must be defined and have a probe address.
    #[test]
    fn track_tunnel_names_a_probed_tunnel() {
        let tunnel = |extra: &str| {
            format!(
                "[[tunnel]]\nname = \"t1\"\nmode = \"gretap\"\nlocal = \"192.0.2.1\"\n\
                 remote = \"192.0.2.2\"\n{extra}"
            )
        };
        let vrrp = "[[vrrp]]\nname = \"VI_1\"\ninterface = \"t1\"\nvrid = 1\n\
                    [[vrrp.vip]]\naddress = \"203.0.113.10/24\"\n\
                    [[vrrp.track_tunnel]]\nname = \"t1\"\nweight = -20\n";
        for (text, want) in [
            (
                vrrp.to_owned(),
                Err("vrrp instance VI_1: track-tunnel: no tunnel t1 is defined"),
            ),
            (
                format!("{}{vrrp}", tunnel("")),
                Err("vrrp instance VI_1: track-tunnel: tunnel t1 has no probe address"),
            ),
            (
                format!(
                    "{}{vrrp}",
                    tunnel("probe = \"10.0.0.2\"\nprobe_interval = 0.5\n")
                ),
                Ok(()),
            ),
        ] {
            let cfg = parse_str(&text).unwrap();
            let got = check_tracked_tunnels(&cfg.tunnels, &cfg.vrrp).map_err(|e| format!("{e:#}"));
            match (got, want) {
                (Ok(()), Ok(())) => {
                    let t = &cfg.tunnels[0];
                    assert_eq!(t.probe, Some(std::net::Ipv4Addr::new(10, 0, 0, 2)));
                    assert_eq!(t.probe_interval, std::time::Duration::from_millis(500));
                    assert_eq!(cfg.vrrp[0].track[0].weight, Some(-20));
                }
                (Err(g), Err(w)) => assert!(g.contains(w), "{g}"),
                (g, w) => panic!("{text}\n got {g:?}, want {w:?}"),
            }
        }
    }

    #[test]
    fn a_large_file_is_read_whole_and_lines_stay_right() {
        let table = |i: usize| {
            format!(
                "[[vrrp]]\nname = \"V{i}\"\ninterface = \"eth{}\"\nvrid = {}\n\
                 [[vrrp.vip]]\naddress = \"10.{}.{}.1\"\n",
                i / 255,
                i % 255 + 1,
                i / 250,
                i % 250
            )
        };
        let mut text: String = (0..8000).map(table).collect();
        let cfg = parse(Path::new("big.toml"), &text).unwrap();
        assert_eq!(cfg.vrrp.len(), 8000);
        let line = text.lines().count() + 4;
        text.push_str("[[vrrp]]\nname = \"bad\"\ninterface = \"eth0\"\nvrid = 0\n");
        let err = format!("{:#}", parse(Path::new("big.toml"), &text).unwrap_err());
        assert!(
            err.starts_with(&format!("big.toml:{line}: vrrp instance bad: vrid")),
            "{err}"
        );
    }

    #[test]
    fn errors_name_the_file_line_field_and_value() {
        let vrrp = "[[vrrp]]\nname = \"VI_1\"\ninterface = \"eth0\"\n";
        for (text, want) in [
            (
                format!("{vrrp}vrid = 300\n[[vrrp.vip]]\naddress = \"192.0.2.5\"\n"),
                "greha.toml:4: vrrp instance VI_1: vrid: \"300\" is not a VRID (1 to 255)",
            ),
            (
                format!("{vrrp}vrid = 1\n[[vrrp.vip]]\naddress = \"192.0.2.5\"\n[[vrrp.vip]]\naddress = \"192.0.2.500\"\n"),
                "greha.toml:8: vrrp instance VI_1: vip: \"192.0.2.500\" is not an IP address",
            ),
            (
                format!("{vrrp}vrid = 1\npriorty = 5\n"),
                "greha.toml:5: vrrp instance VI_1: unknown key \"priorty\"",
            ),
            (
                format!("{vrrp}vrid = 1\nnative_ipv6 = true\n[[vrrp.vip]]\naddress = \"192.0.2.9/24\"\n"),
                "greha.toml:7: vrrp instance VI_1: vip: 192.0.2.9/24 is an IPv4 address in a native-ipv6 instance",
            ),
            (
                "[[tunnel]]\nname = \"t\"\nmode = \"gretap\"\nlocal = \"192.0.2.1\"\nremote = \"192.0.2.2\"\nkey = 4294967296\n".into(),
                "greha.toml:6: tunnel t: key: 4294967296 is out of range",
            ),
            (
                "[[tunnel]]\nname = \"t\"\nmode = \"vxlan\"\n".into(),
                "greha.toml:3: tunnel t: mode: \"vxlan\" is not gretap, gre, ip6gretap or ip6gre",
            ),
            ("[[tunnel]]\nmode = \"gre\"\n".into(), "greha.toml:1: tunnel: a name is required"),
            (
                "[[tunnel]]\nname = \"t\"\nmode = \"gre\"\ncsum = \"yes\"\n".into(),
                "greha.toml:4: tunnel t: csum: expected true or false",
            ),
            ("tunnels = []\n".into(), "greha.toml:1: unknown key \"tunnels\""),
            ("[[vrrp]\n".into(), "greha.toml: TOML parse error at line 1"),
            (
                format!("{vrrp}vrid = 1\n[[vrrp.vip]]\naddress = \"192.0.2.5\"\n[[vrrp]]\nname = \"VI_2\"\ninterface = \"eth0\"\nvrid = 1\n[[vrrp.vip]]\naddress = \"192.0.2.6\"\n"),
                "greha.toml: vrrp instance VI_2: vrid: 1 is used twice on eth0",
            ),
        ] {
            let got = format!("{:#}", parse_str(&text).unwrap_err());
            assert!(got.contains(want), "{text}\n  got: {got}\n  want: {want}");
        }
    }
}
