//! What a start or a reload changes: the desired state (the file's and the
//! command line's definitions) and the plan from the running one to it, a
//! pure diff that the daemon then carries out.
use crate::{tunnel::TunnelDef, vrrp::def::InstanceDef};

/// What the daemon runs: the file's definitions and the command line's.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Desired {
    pub count: Vec<String>,
    pub tunnels: Vec<TunnelDef>,
    pub vrrp: Vec<InstanceDef>,
    /// keepalived's notify_fifo: where state changes are written.
    pub notify_fifo: Option<std::path::PathBuf>,
    /// keepalived's interface_up_down_delays: by interface name, how long
    /// a change to down, and to up, must last to count.
    pub link_delays: std::collections::BTreeMap<String, (std::time::Duration, std::time::Duration)>,
    /// keepalived's script_user (`USER[:GROUP]`).
    pub script_user: Option<String>,
}

/// What it takes to go from one desired state to another; everything not
/// named here runs on untouched.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Plan {
    pub count_add: Vec<String>,
    pub count_del: Vec<String>,
    /// Tunnels removed, or changed: a changed tunnel is removed and added
    /// again.
    pub tunnels_del: Vec<String>,
    /// Tunnels new or changed.
    pub tunnels_add: Vec<TunnelDef>,
    /// Instances running over a changed tunnel: stopped before it goes.
    pub vrrp_stop_first: Vec<String>,
    /// Instances removed or changed (the others of `vrrp_stop_first` are
    /// stopped already).
    pub vrrp_del: Vec<String>,
    /// Instances new, changed, or over a changed tunnel.
    pub vrrp_add: Vec<InstanceDef>,
}

impl Plan {
    /// Tunnels both removed and added: changed ones.
    pub fn tunnels_recreated(&self) -> Vec<String> {
        self.tunnels_del
            .iter()
            .filter(|n| self.tunnels_add.iter().any(|t| &t.name == *n))
            .cloned()
            .collect()
    }

    /// What the plan does, for the reload's answer and the log.
    pub fn summary(&self) -> String {
        let names = |v: &[String]| v.join(" ");
        let t_add: Vec<String> = self.tunnels_add.iter().map(|t| t.name.clone()).collect();
        let v_add: Vec<String> = self.vrrp_add.iter().map(|v| v.name.clone()).collect();
        let mut v_del = self.vrrp_stop_first.clone();
        v_del.extend(
            self.vrrp_del
                .iter()
                .filter(|n| !self.vrrp_stop_first.contains(n))
                .cloned(),
        );
        let done: Vec<String> = [
            ("tunnels added", t_add),
            ("tunnels removed", self.tunnels_del.clone()),
            ("instances added", v_add),
            ("instances removed", v_del),
            ("counting added", self.count_add.clone()),
            ("counting removed", self.count_del.clone()),
        ]
        .into_iter()
        .filter(|(_, v)| !v.is_empty())
        .map(|(what, v)| format!("{what}: {}", names(&v)))
        .collect();
        if done.is_empty() {
            "no change".into()
        } else {
            done.join("; ")
        }
    }
}

/// The plan from `current` to `want`: compares whole definitions, so any
/// change to a tunnel or an instance re-creates it, and the instances over
/// a re-created tunnel restart with it.
pub fn plan(current: &Desired, want: &Desired) -> Plan {
    fn added<T: Clone + PartialEq>(from: &[T], to: &[T]) -> Vec<T> {
        to.iter().filter(|x| !from.contains(x)).cloned().collect()
    }
    // A tunnel is re-created only for what its datapath uses: a new probe
    // address or interval only restarts its prober (every reload does).
    let tunnels_added = |from: &[TunnelDef], to: &[TunnelDef]| -> Vec<TunnelDef> {
        to.iter()
            .filter(|t| !from.iter().any(|f| f.datapath_part() == t.datapath_part()))
            .cloned()
            .collect()
    };
    let tunnels_add = tunnels_added(&current.tunnels, &want.tunnels);
    let tunnels_del: Vec<String> = tunnels_added(&want.tunnels, &current.tunnels)
        .into_iter()
        .map(|t| t.name)
        .collect();
    let recreated: Vec<&String> = tunnels_del
        .iter()
        .filter(|n| tunnels_add.iter().any(|t| &t.name == *n))
        .collect();
    let over = |v: &InstanceDef| recreated.contains(&&v.interface);
    let vrrp_stop_first: Vec<String> = current
        .vrrp
        .iter()
        .filter(|v| over(v))
        .map(|v| v.name.clone())
        .collect();
    let vrrp_del = added(&want.vrrp, &current.vrrp)
        .into_iter()
        .map(|v| v.name)
        .collect();
    let vrrp_add = want
        .vrrp
        .iter()
        .filter(|v| !current.vrrp.contains(v) || over(v))
        .cloned()
        .collect();
    Plan {
        count_add: added(&current.count, &want.count),
        count_del: added(&want.count, &current.count),
        tunnels_del,
        tunnels_add,
        vrrp_stop_first,
        vrrp_del,
        vrrp_add,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn words(s: &str) -> Vec<String> {
        s.split_whitespace().map(str::to_owned).collect()
    }

    fn tunnel(s: &str) -> TunnelDef {
        TunnelDef::parse(&words(s)).unwrap()
    }

    fn instance(s: &str) -> InstanceDef {
        InstanceDef::parse(&words(s)).unwrap()
    }

    fn desired(count: &[&str], tunnels: &[&str], vrrp: &[&str]) -> Desired {
        Desired {
            count: count.iter().map(|c| c.to_string()).collect(),
            tunnels: tunnels.iter().map(|t| tunnel(t)).collect(),
            vrrp: vrrp.iter().map(|v| instance(v)).collect(),
            notify_fifo: None,
            link_delays: Default::default(),
            script_user: None,
        }
    }

    const T1: &str = "t1 mode gretap local 192.0.2.1 remote 192.0.2.2";
    const T1_KEYED: &str = "t1 mode gretap local 192.0.2.1 remote 192.0.2.2 key 5";
    const T2: &str = "t2 mode gre local 192.0.2.1 remote 192.0.2.3";
    const V1: &str = "V1 interface t1 vrid 1 vip 203.0.113.1";
    const V1_PRIO: &str = "V1 interface t1 vrid 1 priority 120 vip 203.0.113.1";
    const V2: &str = "V2 interface eth0 vrid 2 vip 203.0.113.2";

    #[test]
    fn plans_touch_only_what_differs() {
        let base = desired(&["eth0"], &[T1, T2], &[V1, V2]);
        // (what, wanted, tunnels del, tunnels add, stop first, vrrp del, vrrp add, summary)
        let table: Vec<(&str, Desired, Plan, &str)> = vec![
            (
                "nothing changed",
                base.clone(),
                Plan::default(),
                "no change",
            ),
            (
                "an instance added",
                desired(
                    &["eth0"],
                    &[T1, T2],
                    &[V1, V2, "V3 interface eth0 vrid 3 vip 203.0.113.3"],
                ),
                Plan {
                    vrrp_add: vec![instance("V3 interface eth0 vrid 3 vip 203.0.113.3")],
                    ..Plan::default()
                },
                "instances added: V3",
            ),
            (
                "an instance removed",
                desired(&["eth0"], &[T1, T2], &[V1]),
                Plan {
                    vrrp_del: vec!["V2".into()],
                    ..Plan::default()
                },
                "instances removed: V2",
            ),
            (
                "an instance changed",
                desired(&["eth0"], &[T1, T2], &[V1_PRIO, V2]),
                Plan {
                    vrrp_del: vec!["V1".into()],
                    vrrp_add: vec![instance(V1_PRIO)],
                    ..Plan::default()
                },
                "instances added: V1; instances removed: V1",
            ),
            (
                "a tunnel changed: it and the instances over it restart",
                desired(&["eth0"], &[T1_KEYED, T2], &[V1, V2]),
                Plan {
                    tunnels_del: vec!["t1".into()],
                    tunnels_add: vec![tunnel(T1_KEYED)],
                    vrrp_stop_first: vec!["V1".into()],
                    vrrp_add: vec![instance(V1)],
                    ..Plan::default()
                },
                "tunnels added: t1; tunnels removed: t1; instances added: V1; instances removed: V1",
            ),
            (
                "a tunnel's probe changed: its prober restarts, nothing else",
                desired(
                    &["eth0"],
                    &[
                        format!("{T1} probe 10.0.0.2 probe-interval 0.5").as_str(),
                        T2,
                    ],
                    &[V1, V2],
                ),
                Plan::default(),
                "no change",
            ),
            (
                "a tunnel removed, counting moved",
                desired(&["eth1"], &[T1], &[V1, V2]),
                Plan {
                    count_add: vec!["eth1".into()],
                    count_del: vec!["eth0".into()],
                    tunnels_del: vec!["t2".into()],
                    ..Plan::default()
                },
                "tunnels removed: t2; counting added: eth1; counting removed: eth0",
            ),
        ];
        for (what, want, expected, summary) in table {
            let got = plan(&base, &want);
            assert_eq!(got, expected, "{what}");
            assert_eq!(got.summary(), summary, "{what}");
        }
        // Starting is applying to nothing.
        let start = plan(&Desired::default(), &base);
        assert_eq!(start.tunnels_add.len(), 2);
        assert_eq!(start.vrrp_add.len(), 2);
        assert!(start.tunnels_recreated().is_empty());
    }
}
