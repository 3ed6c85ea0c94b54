//! Instance definitions checked against the host before anything
//! changes: the interfaces exist, the VRRP interface has an address to send
//! from, VRIDs are unique per interface, a priority-255 owner owns its
//! addresses; the result is what the shell needs to start the instance.
use std::{collections::HashMap, net::IpAddr};

use anyhow::{Context as _, Result, anyhow, bail};

use super::{
    def::{Family, InstanceDef, RouteDef, Track, TrackKind},
    router::TrackerState,
    track::Tracker,
};
use crate::netlink::{self, Netlink};

/// A virtual address and the interface it goes on.
#[derive(Clone)]
pub struct Vip {
    pub addr: IpAddr,
    pub prefix: u8,
    /// Its label, broadcast, scope, peer, noprefixroute.
    pub opts: netlink::AddrOptions,
    pub ifindex: u32,
    pub mac: [u8; 6],
}

/// An instance checked against the host, not yet started.
pub struct Prepared {
    pub def: InstanceDef,
    pub link: netlink::Link,
    pub primary: IpAddr,
    pub vips: Vec<Vip>,
    pub trackers: Vec<Tracker>,
    /// The virtual routes, each with its device's index if it names one.
    pub routes: Vec<(RouteDef, Option<u32>)>,
}

/// Checks `defs` against the host (interfaces, addresses, VRIDs unique
/// with `kept`), changing nothing.
pub async fn prepare(
    nl: &Netlink,
    defs: &[InstanceDef],
    kept: &[&InstanceDef],
) -> Result<Vec<Prepared>> {
    // An IPv4 and an IPv6 instance may share a VRID (RFC 5798 §7.1).
    let mut seen: HashMap<(String, u8, Family), String> = kept
        .iter()
        .map(|d| ((d.interface.clone(), d.vrid, d.family()), d.name.clone()))
        .collect();
    let mut prepared = Vec::new();
    for def in defs.iter().cloned() {
        let name = &def.name;
        let family = def.family();
        if let Some(other) = seen.insert((def.interface.clone(), def.vrid, family), name.clone()) {
            bail!(
                "vrrp instance {name}: vrid: {} on {} is already instance {other}'s ({})",
                def.vrid,
                def.interface,
                family.name()
            );
        }
        let link = nl.link_by_name(&def.interface).await?.ok_or_else(|| {
            anyhow!(
                "vrrp instance {name}: interface: {} does not exist",
                def.interface
            )
        })?;
        let own = nl.addresses(link.index).await?;
        // IPv6 adverts go from the link-local address (RFC 5798 §5.1.2.1).
        let mut primary = own
            .iter()
            .map(|(a, _)| *a)
            .find(|a| match (family, a) {
                (Family::V4, IpAddr::V4(_)) => true,
                (Family::V6, IpAddr::V6(a)) => a.is_unicast_link_local(),
                _ => false,
            })
            .ok_or_else(|| {
                anyhow!(
                    "vrrp instance {name}: interface: {} has no {} to send from",
                    def.interface,
                    match family {
                        Family::V4 => "IPv4 address",
                        Family::V6 => "IPv6 link-local address",
                    }
                )
            })?;
        if let Some(src) = def.unicast_src {
            if !own.iter().any(|(a, _)| *a == src) {
                bail!(
                    "vrrp instance {name}: unicast-src: {src} is not an address of {}",
                    def.interface
                );
            }
            primary = src;
        }
        let mut vips = Vec::new();
        if def.vmac.is_some() && def.family() == Family::V6 {
            bail!(
                "vrrp instance {name}: use-vmac: greha runs a virtual MAC for IPv4 instances only"
            );
        }
        for v in &def.vips {
            let opts = netlink::AddrOptions {
                label: v.label.clone(),
                brd: v.brd,
                scope: v.scope,
                peer: v.peer,
                noprefixroute: v.noprefixroute,
            };
            // On the virtual MAC interface, made when the instance starts:
            // its index is filled in then.
            let (ifindex, mac) = match (&def.vmac, &v.dev) {
                (Some(_), None) => (0, def.virtual_mac()),
                _ => {
                    let dev = v.dev.as_deref().unwrap_or(&def.interface);
                    let l = nl.link_by_name(dev).await?.ok_or_else(|| {
                        anyhow!(
                            "vrrp instance {name}: vip {}: dev {dev} does not exist",
                            v.addr
                        )
                    })?;
                    (l.index, l.mac)
                }
            };
            vips.push(Vip {
                addr: v.addr,
                prefix: v.prefix,
                opts,
                ifindex,
                mac,
            });
        }
        let mut routes = Vec::new();
        for r in &def.routes {
            let oif = match &r.dev {
                Some(dev) => Some(
                    nl.link_by_name(dev)
                        .await?
                        .ok_or_else(|| {
                            anyhow!("vrrp instance {name}: route {r}: dev {dev} does not exist")
                        })?
                        .index,
                ),
                None => None,
            };
            routes.push((r.clone(), oif));
        }
        let not_owned = def
            .vips
            .iter()
            .find(|v| !own.iter().any(|(a, _)| *a == v.addr));
        if def.priority == 255
            && let Some(v) = not_owned
        {
            bail!(
                "vrrp instance {name}: priority: 255 is for the address owner, and {} is not an address of {}",
                v.addr,
                def.interface
            );
        }
        let n = &def.notify;
        for (field, path) in [
            ("notify-master", &n.master),
            ("notify-backup", &n.backup),
            ("notify-fault", &n.fault),
            ("notify-stop", &n.stop),
            ("notify", &n.any),
        ] {
            if let Some(path) = path {
                script_is_secure(path).with_context(|| format!("vrrp instance {name}: {field}"))?;
            }
        }
        for t in &def.track {
            if let TrackKind::Script { path, .. } = &t.kind {
                script_is_secure(path)
                    .with_context(|| format!("vrrp instance {name}: track-script"))?;
            }
        }
        // keepalived's default: the VRRP interface itself is tracked
        // (down: Fault), unless tracked explicitly already.
        let primary_track = Track {
            kind: TrackKind::Interface(def.interface.clone()),
            weight: None,
            reverse: false,
        };
        let explicit = def.track.iter().any(|t| t.kind == primary_track.kind);
        let implicit = (def.track_primary && !explicit).then_some(&primary_track);
        let mut trackers = Vec::new();
        for t in def.track.iter().chain(implicit) {
            let (ifindex, up) = match &t.kind {
                TrackKind::Interface(ifname) => {
                    let l = nl.link_by_name(ifname).await?.ok_or_else(|| {
                        anyhow!("vrrp instance {name}: track-interface: {ifname} does not exist")
                    })?;
                    (l.index, l.up)
                }
                TrackKind::File {
                    path,
                    reverse,
                    init,
                    ..
                } => {
                    // What the file holds now (or will once initialized):
                    // the instance starts with the right priority.
                    let p = std::path::Path::new(path);
                    let value = match init {
                        Some(v) if !p.exists() => *v,
                        _ => super::track::read_number(p),
                    };
                    let w = t.weight.unwrap_or(1);
                    trackers.push(Tracker {
                        run_as: None,
                        track: t.clone(),
                        ifindex: 0,
                        state: TrackerState::file(if *reverse { -w } else { w }, value),
                    });
                    continue;
                }
                // A script is up until it fails (unless init-fail), a
                // tunnel until its far end is found dead.
                TrackKind::Script { init_fail, .. } => (0, !init_fail),
                TrackKind::Tunnel(_) => (0, true),
                // What runs now: the instance starts with the right state.
                TrackKind::Process(m) => (0, super::track::quorum(m, &super::track::processes())),
            };
            let run_as = match &t.kind {
                TrackKind::Script {
                    user: Some(user), ..
                } => Some(
                    super::track::run_as(user)
                        .with_context(|| format!("vrrp instance {name}: track-script: user"))?,
                ),
                _ => None,
            };
            trackers.push(Tracker {
                run_as,
                track: t.clone(),
                ifindex,
                state: TrackerState::new(t.weight, up).reversed(t.reverse),
            });
        }
        prepared.push(Prepared {
            def,
            link,
            primary,
            vips,
            trackers,
            routes,
        });
    }
    Ok(prepared)
}

/// A program greha runs as root must not be one another user can change
/// (keepalived's enable_script_security): the file and every directory
/// above it belong to root and are not writable by others (a directory
/// with the sticky bit, /tmp, may be), nor by a group other than root's.
pub fn script_is_secure(line: &str) -> Result<()> {
    use std::os::unix::fs::MetadataExt as _;
    // The program of the command line; its arguments are data.
    let argv = super::command::split(line).map_err(|e| anyhow!("{line:?}: {e}"))?;
    let path = argv[0].as_str();
    let resolved = if path.contains('/') {
        std::path::PathBuf::from(path)
    } else {
        // As Command finds it.
        std::env::var_os("PATH")
            .into_iter()
            .flat_map(|p| std::env::split_paths(&p).collect::<Vec<_>>())
            .map(|d| d.join(path))
            .find(|p| p.is_file())
            .ok_or_else(|| anyhow!("{path}: not found in PATH"))?
    };
    let resolved =
        std::fs::canonicalize(&resolved).with_context(|| format!("{path}: cannot be run"))?;
    let mut at = Some(resolved.as_path());
    while let Some(p) = at {
        let meta = std::fs::metadata(p).with_context(|| format!("reading {}", p.display()))?;
        let mode = meta.mode();
        let sticky_dir = meta.is_dir() && mode & 0o1000 != 0;
        let others_write = mode & 0o002 != 0 && !sticky_dir;
        let group_write = mode & 0o020 != 0 && meta.gid() != 0 && !sticky_dir;
        if meta.uid() != 0 || others_write || group_write {
            bail!(
                "{path}: {} can be changed by a user other than root (owner uid {}, mode {:o}); \
                 greha runs it as root, so it refuses it",
                p.display(),
                meta.uid(),
                mode & 0o7777
            );
        }
        at = p.parent();
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt as _;

    /// Which scripts greha refuses to run as root: the table of who can
    /// change the file or a directory above it.
    #[test]
    fn scripts_others_can_change_are_refused() {
        let base = std::env::temp_dir().join(format!("greha-script-{}", std::process::id()));
        let dir = base.join("d");
        std::fs::create_dir_all(&dir).unwrap();
        let set = |p: &std::path::Path, mode: u32| {
            std::fs::set_permissions(p, std::fs::Permissions::from_mode(mode)).unwrap()
        };
        set(&base, 0o755);
        let file = dir.join("check.sh");
        std::fs::write(&file, "#!/bin/sh\n").unwrap();
        let path = file.to_str().unwrap().to_owned();
        // (what, dir mode, file mode, file owner, refused)
        let table = [
            ("root's, 0755 in a 0755 directory", 0o755, 0o755, 0, false),
            ("the file writable by all", 0o755, 0o777, 0, true),
            (
                "the file writable by its group (root's)",
                0o755,
                0o775,
                0,
                false,
            ),
            ("the directory writable by all", 0o777, 0o755, 0, true),
            (
                "a sticky directory writable by all (/tmp)",
                0o1777,
                0o755,
                0,
                false,
            ),
            ("the file owned by nobody", 0o755, 0o755, 65534, true),
        ];
        for (what, dmode, fmode, owner, refused) in table {
            set(&dir, dmode);
            set(&file, fmode);
            nix::unistd::chown(&file, Some(nix::unistd::Uid::from_raw(owner)), None).unwrap();
            let got = script_is_secure(&path);
            assert_eq!(got.is_err(), refused, "{what}: {got:?}");
        }
        assert!(script_is_secure("sh").is_ok(), "found in PATH");
        assert!(
            script_is_secure("sh -c 'exit 0'").is_ok(),
            "the program counts"
        );
        assert!(script_is_secure("no-such-program-here sh").is_err());
        assert!(script_is_secure("no-such-program-here").is_err());
        std::fs::remove_dir_all(&base).unwrap();
    }
}
