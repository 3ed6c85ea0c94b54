//! greha: GRE tunnels and VRRP high availability on an eBPF datapath.
//!
//! - [`datapath`]: loads, attaches, pins and detaches the eBPF programs;
//! - [`tunnel`]: GRE tunnel definitions, setup and teardown;
//! - [`vrrp`]: the VRRP packet codec and the sans-IO state machine;
//! - [`netlink`]: the rtnetlink operations greha needs;
//! - [`daemon`]: the long-running process around all of it.
pub mod arp;
pub mod bpffs;
pub mod config;
pub mod counters;
pub mod daemon;
pub mod datapath;
pub mod ethtool;
pub mod import;
pub mod kaconf;
pub mod metrics;
pub mod nd;
pub mod netlink;
pub mod pins;
pub mod plan;
pub mod pmtu;
pub mod probe;
pub mod reasm;
pub mod spec;
pub mod tunnel;
pub mod vrrp;
