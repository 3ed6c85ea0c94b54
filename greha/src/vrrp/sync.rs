//! Sync groups (keepalived's vrrp_sync_group): the decisions that make the
//! instances of a group change state together, pure.
//!
//! - A member that faults takes the group into Fault; it leaves Fault when
//!   no member has a fault ([`faulted`]).
//! - A member that becomes master takes the others along; a master that
//!   becomes backup takes the other masters along ([`follow`]).
//! - A member whose master went silent becomes master only when every
//!   other member is master or wants to be ([`ready`]): keepalived prefers
//!   backup to thrashing, where one member alone would flip back and forth
//!   against a master the others still hear.
use super::engine::{Event, Reason, State};

/// What the group's rules read of a member.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Member {
    pub state: State,
    pub wants_master: bool,
    /// Its own trackers say Fault.
    pub own_fault: bool,
}

/// Whether the group is in Fault: some member's own trackers say so.
pub fn faulted(members: &[Member]) -> bool {
    members.iter().any(|m| m.own_fault)
}

/// The events the other members get after member `i` went `from` -> `to`
/// for `reason` (index, event), in member order. A transition the group
/// itself caused is not followed again.
pub fn follow(
    members: &[Member],
    i: usize,
    from: State,
    to: State,
    reason: Reason,
) -> Vec<(usize, Event)> {
    if reason == Reason::SyncGroup {
        return Vec::new();
    }
    let (whose, event) = match (from, to) {
        (_, State::Master) => (State::Backup, Event::SyncMaster),
        (State::Master, State::Backup) => (State::Master, Event::SyncBackup),
        _ => return Vec::new(),
    };
    members
        .iter()
        .enumerate()
        .filter(|(j, m)| *j != i && m.state == whose)
        .map(|(j, _)| (j, event.clone()))
        .collect()
}

/// Member `i` wants to be master: whether the group lets it (every other
/// member is master or wants to be).
pub fn ready(members: &[Member], i: usize) -> bool {
    members
        .iter()
        .enumerate()
        .all(|(j, m)| j == i || m.state == State::Master || m.wants_master)
}

/// The group's state, for its notify commands: Fault if a member is,
/// Master when all are, Backup when any is, else Initialize.
pub fn group_state(members: &[Member]) -> State {
    let any = |s: State| members.iter().any(|m| m.state == s);
    if any(State::Fault) {
        State::Fault
    } else if !members.is_empty() && members.iter().all(|m| m.state == State::Master) {
        State::Master
    } else if any(State::Backup) {
        State::Backup
    } else {
        State::Initialize
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use State::*;

    fn m(state: State, wants_master: bool) -> Member {
        Member {
            state,
            wants_master,
            own_fault: false,
        }
    }

    #[test]
    fn follow_takes_the_others_along() {
        let group = [
            m(Master, false),
            m(Backup, false),
            m(Backup, true),
            m(Fault, false),
        ];
        for (i, from, to, reason, want) in [
            // One became master: the backups follow, Fault stays.
            (
                0,
                Backup,
                Master,
                Reason::MasterDown,
                vec![(1, Event::SyncMaster), (2, Event::SyncMaster)],
            ),
            // A master preempted: the other masters resign.
            (
                1,
                Master,
                Backup,
                Reason::Preempted,
                vec![(0, Event::SyncBackup)],
            ),
            // What the group itself caused is not followed again.
            (1, Backup, Master, Reason::SyncGroup, vec![]),
            (1, Master, Backup, Reason::SyncGroup, vec![]),
            // Startup and Fault are not followed here (Fault goes by
            // `faulted`).
            (1, Initialize, Backup, Reason::Startup, vec![]),
            (3, Master, Fault, Reason::Fault, vec![]),
        ] {
            assert_eq!(
                follow(&group, i, from, to, reason),
                want,
                "{i} {from:?}->{to:?}"
            );
        }
    }

    #[test]
    fn master_only_when_every_member_would_be() {
        for (group, i, want) in [
            (vec![m(Backup, true), m(Backup, false)], 0, false),
            (vec![m(Backup, true), m(Backup, true)], 0, true),
            (vec![m(Backup, true), m(Master, false)], 0, true),
            (vec![m(Backup, true), m(Fault, false)], 0, false),
            (vec![m(Backup, true)], 0, true),
        ] {
            assert_eq!(ready(&group, i), want, "{group:?}");
        }
    }

    #[test]
    fn the_group_state_and_its_fault() {
        for (group, want) in [
            (vec![m(Master, false), m(Master, false)], Master),
            (vec![m(Master, false), m(Backup, false)], Backup),
            (vec![m(Master, false), m(Fault, false)], Fault),
            (vec![m(Initialize, false), m(Initialize, false)], Initialize),
        ] {
            assert_eq!(group_state(&group), want, "{group:?}");
        }
        let mut g = vec![m(Master, false), m(Master, false)];
        assert!(!faulted(&g));
        g[1].own_fault = true;
        assert!(faulted(&g));
    }
}
