//! The Prometheus text exposition of greha's state and counters, for the
//! optional `--metrics ADDR` endpoint.
use std::fmt::Write as _;

use crate::{
    tunnel::TunnelStatus,
    vrrp::{
        engine::State,
        status::{GlobalStats, HANDING_OVER, InstanceStatus},
    },
};

fn family(out: &mut String, name: &str, kind: &str, help: &str) {
    let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} {kind}");
}

/// Label values escape backslash, quote and newline.
fn esc(v: &str) -> String {
    v.replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

/// Reads one counter of an instance.
type Getter = fn(&InstanceStatus) -> u64;

pub fn render(vrrp: &[InstanceStatus], global: &GlobalStats, tunnels: &[TunnelStatus]) -> String {
    let mut out = String::new();
    family(
        &mut out,
        "greha_vrrp_state",
        "gauge",
        "1 for the instance's current VRRP state.",
    );
    for i in vrrp {
        for (s, name) in [
            (State::Initialize, "initialize"),
            (State::Backup, "backup"),
            (State::Master, "master"),
            (State::Fault, "fault"),
        ] {
            let _ = writeln!(
                out,
                "greha_vrrp_state{{instance=\"{}\",state=\"{name}\"}} {}",
                esc(&i.name),
                u8::from(i.state == s)
            );
        }
    }
    let gauges: &[(&str, &str, Getter)] = &[
        ("priority", "Effective VRRP priority.", |i| {
            u64::from(i.priority)
        }),
        (
            "demoted",
            "1 while the instance is demoted (greha demote, until greha resume).",
            |i| u64::from(i.demoted),
        ),
        (
            "shut_down",
            "1 while the instance is out of service (greha shutdown, until greha resume).",
            |i| u64::from(i.shut_down),
        ),
        (
            "handing_over",
            "1 while a resigning master keeps its VIPs for the new master.",
            |i| u64::from(i.handover.as_deref() == Some(HANDING_OVER)),
        ),
    ];
    for (name, help, get) in gauges {
        let metric = format!("greha_vrrp_{name}");
        family(&mut out, &metric, "gauge", help);
        for i in vrrp {
            let _ = writeln!(out, "{metric}{{instance=\"{}\"}} {}", esc(&i.name), get(i));
        }
    }
    let counters: &[(&str, &str, Getter)] = &[
        ("master_transitions", "Transitions to Master.", |i| {
            i.stats.master_transitions
        }),
        (
            "rcvd_advertisements",
            "Valid advertisements received.",
            |i| i.stats.rcvd_advertisements,
        ),
        ("sent_advertisements", "Advertisements sent.", |i| {
            i.stats.sent_advertisements
        }),
        (
            "adv_interval_errors",
            "v2 advertisements with another interval.",
            |i| i.stats.adv_interval_errors,
        ),
        (
            "ip_ttl_errors",
            "Advertisements with a TTL other than 255.",
            |i| i.stats.ip_ttl_errors,
        ),
        (
            "rcvd_pri_zero_packets",
            "Priority 0 advertisements received.",
            |i| i.stats.rcvd_pri_zero_packets,
        ),
        (
            "sent_pri_zero_packets",
            "Priority 0 advertisements sent.",
            |i| i.stats.sent_pri_zero_packets,
        ),
        (
            "rcvd_invalid_type_packets",
            "Packets of an unknown VRRP type.",
            |i| i.stats.rcvd_invalid_type_packets,
        ),
        (
            "address_list_errors",
            "Advertisements with another address list.",
            |i| i.stats.address_list_errors,
        ),
        (
            "packet_length_errors",
            "Packets whose length does not match.",
            |i| i.stats.packet_length_errors,
        ),
        ("auth_failures", "v2 authentication failures.", |i| {
            i.stats.auth_failures
        }),
    ];
    for (name, help, get) in counters {
        let metric = format!("greha_vrrp_{name}_total");
        family(&mut out, &metric, "counter", help);
        for i in vrrp {
            let _ = writeln!(out, "{metric}{{instance=\"{}\"}} {}", esc(&i.name), get(i));
        }
    }
    for (name, value) in [
        ("checksum_errors", global.checksum_errors),
        ("version_errors", global.version_errors),
        ("vrid_errors", global.vrid_errors),
        ("unknown_unicast_sources", global.unknown_unicast_sources),
        ("not_link_local_sources", global.not_link_local_sources),
    ] {
        let metric = format!("greha_vrrp_{name}_total");
        family(
            &mut out,
            &metric,
            "counter",
            "VRRP packets no instance could own.",
        );
        let _ = writeln!(out, "{metric} {value}");
    }
    family(
        &mut out,
        "greha_tunnel_up",
        "gauge",
        "1 when the tunnel interface is up with carrier.",
    );
    for t in tunnels {
        let _ = writeln!(
            out,
            "greha_tunnel_up{{tunnel=\"{}\"}} {}",
            esc(&t.name),
            u8::from(t.up)
        );
    }
    let probed: Vec<(&TunnelStatus, &crate::tunnel::ProbeStatus)> = tunnels
        .iter()
        .filter_map(|t| Some((t, t.probe.as_ref()?)))
        .collect();
    if !probed.is_empty() {
        family(
            &mut out,
            "greha_tunnel_far_end_alive",
            "gauge",
            "1 while the tunnel's far end answers its probes, 0 once it is dead; absent while unknown or not probed.",
        );
        for (t, p) in &probed {
            let v = match p.state {
                "alive" => 1,
                "dead" => 0,
                _ => continue,
            };
            let _ = writeln!(
                out,
                "greha_tunnel_far_end_alive{{tunnel=\"{}\"}} {v}",
                esc(&t.name)
            );
        }
        for (name, help, get) in [
            (
                "greha_tunnel_probes_sent_total",
                "Echo requests sent through the tunnel to its far end.",
                (|p: &crate::tunnel::ProbeStatus| p.sent) as fn(&crate::tunnel::ProbeStatus) -> u64,
            ),
            (
                "greha_tunnel_probes_answered_total",
                "Echo replies from the tunnel's far end.",
                |p| p.answered,
            ),
            (
                "greha_tunnel_far_end_changes_total",
                "Changes of the far end between alive and dead.",
                |p| p.changes,
            ),
        ] {
            family(&mut out, name, "counter", help);
            for (t, p) in &probed {
                let _ = writeln!(out, "{name}{{tunnel=\"{}\"}} {}", esc(&t.name), get(p));
            }
        }
    }
    // The counters by their field names (the same names BTF gives bpftool).
    let fields = |t: &TunnelStatus| -> Vec<(String, u64)> {
        match serde_json::to_value(t.counters) {
            Ok(serde_json::Value::Object(m)) => m
                .into_iter()
                .map(|(k, v)| (k, v.as_u64().unwrap_or(0)))
                .collect(),
            _ => Vec::new(),
        }
    };
    if let Some(first) = tunnels.first() {
        for (k, (name, _)) in fields(first).iter().enumerate() {
            let metric = format!("greha_tunnel_{name}_total");
            family(
                &mut out,
                &metric,
                "counter",
                "Tunnel datapath counter (pinned BTF map).",
            );
            for t in tunnels {
                let _ = writeln!(
                    out,
                    "{metric}{{tunnel=\"{}\"}} {}",
                    esc(&t.name),
                    fields(t)[k].1
                );
            }
        }
    }
    out
}
