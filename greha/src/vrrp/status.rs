//! What `greha status`, the metrics and the control socket report of the
//! VRRP instances: the status document's types, apart from the code that
//! fills them, so readers of the document need nothing of the daemon.
use std::{collections::VecDeque, net::IpAddr};

use greha_common::VrrpStats;
use serde::{Deserialize, Serialize};

use super::engine::{Reason, State, Stats};

/// Counters of packets no instance could own.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct GlobalStats {
    pub checksum_errors: u64,
    pub version_errors: u64,
    pub vrid_errors: u64,
    /// Adverts to an instance with unicast peers from an address not among
    /// them.
    pub unknown_unicast_sources: u64,
    /// IPv6 adverts to ff02::12 from a source that is not link-local.
    pub not_link_local_sources: u64,
    /// v3 adverts whose checksum verified with the IPv4 pseudo-header
    /// (keepalived's form) and without it (RFC 9568's).
    pub rcvd_checksum_pseudo_header: u64,
    pub rcvd_checksum_vrrp_only: u64,
}

/// One instance's view for status output.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct InstanceStatus {
    pub name: String,
    pub interface: String,
    /// "ipv4" or "ipv6".
    pub family: String,
    pub vrid: u8,
    pub state: State,
    pub priority: u8,
    pub master: Option<IpAddr>,
    /// The followed master's priority as last heard, while Backup.
    pub master_priority: Option<u8>,
    /// When the current state began, in milliseconds since the Unix epoch.
    pub since_unix_ms: u128,
    /// The most recent transitions, oldest first (at most 16).
    pub transitions: Vec<TransitionRecord>,
    /// Why greha put the instance in Fault itself (a VIP it could not
    /// add); none otherwise.
    pub fault_reason: Option<String>,
    pub stats: Stats,
    /// The XDP fast path's counters; null without a fast path.
    pub fastpath: Option<VrrpStats>,
    /// Why the instance runs without the fast path ("no-fastpath", or what
    /// the kernel or the host refused); null while it has one.
    pub fastpath_off: Option<String>,
    /// The newest steady advert the fast path absorbed (dropped in XDP,
    /// so tcpdump never shows it); null if none yet or no fast path.
    pub last_absorbed: Option<LastAbsorbed>,
    /// Adverts the daemon itself processed: those the fast path passed,
    /// plus one per Master_Down check that found absorbed ones. Without a
    /// fast path, every advert.
    pub daemon_adverts: u64,
    /// Demoted (`greha demote`) until `greha resume`: priority 1.
    pub demoted: bool,
    /// Shut down (`greha shutdown`) until `greha resume`: Initialize.
    pub shut_down: bool,
    /// "handing over" while a resigning master keeps its VIPs for the new
    /// master's arrival; what became of the last one that found no new
    /// master; null otherwise.
    pub handover: Option<String>,
    /// The sync group it belongs to.
    pub sync_group: Option<String>,
    /// A sync group member whose master went silent, still Backup until
    /// every member of its group would be master.
    pub wants_master: bool,
}

/// `InstanceStatus::handover` while a handover is under way.
pub const HANDING_OVER: &str = "handing over";

/// A steady advert as the fast path recorded it.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct LastAbsorbed {
    pub at_unix_ms: u128,
    pub src: IpAddr,
    pub priority: u8,
    pub interval_cs: u16,
}

/// One state change, for status output.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct TransitionRecord {
    pub at_unix_ms: u128,
    pub from: State,
    pub to: State,
    pub reason: Reason,
}

/// Now, in milliseconds since the Unix epoch: the times of the document.
pub fn unix_ms_now() -> u128 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default()
        .as_millis()
}

/// What the control socket answers to `status`: the VRRP part of `greha
/// status --json` (the CLI adds the tunnels, read from the pins).
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct StatusDoc {
    pub vrrp: Vec<InstanceStatus>,
    pub vrrp_global: GlobalStats,
}

/// One line of `greha events`: what changed, as it happened, in order.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "event", rename_all = "snake_case")]
pub enum EventLine {
    /// A state change, with the priority at that moment.
    Transition {
        at_unix_ms: u128,
        instance: String,
        from: State,
        to: State,
        reason: Reason,
        priority: u8,
    },
    /// The effective priority changed (tracking, demote, resume, reload).
    Priority {
        at_unix_ms: u128,
        instance: String,
        from: u8,
        to: u8,
    },
    /// A handover began, or ended with no router taking over.
    Handover {
        at_unix_ms: u128,
        instance: String,
        note: String,
    },
}

/// Transitions kept per instance for status output.
pub const TRANSITIONS_KEPT: usize = 16;

/// The last [`TRANSITIONS_KEPT`] transitions of an instance, oldest first.
#[derive(Clone, Debug, Default)]
pub struct Transitions(VecDeque<TransitionRecord>);

impl Transitions {
    pub fn push(&mut self, r: TransitionRecord) {
        if self.0.len() == TRANSITIONS_KEPT {
            self.0.pop_front();
        }
        self.0.push_back(r);
    }

    pub fn to_vec(&self) -> Vec<TransitionRecord> {
        self.0.iter().cloned().collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keeps_the_newest_transitions() {
        let mut t = Transitions::default();
        for at in 0..20u128 {
            t.push(TransitionRecord {
                at_unix_ms: at,
                from: State::Backup,
                to: State::Master,
                reason: Reason::MasterDown,
            });
        }
        let v = t.to_vec();
        assert_eq!(v.len(), TRANSITIONS_KEPT);
        assert_eq!((v[0].at_unix_ms, v[15].at_unix_ms), (4, 19));
    }
}
