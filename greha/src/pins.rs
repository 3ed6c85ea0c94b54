//! The name of every object greha pins in bpffs, relative to the pin
//! directory: the maps (by their names in greha-common), the programs of
//! one build, and the attachments (links) by what they are for. Whoever
//! pins or looks for a pin takes its name from here.
//!
//! Names are built from numbers only: bpffs refuses '.', which interface
//! names may have (eth0.100).

/// The directory of the attachments' link pins.
pub const LINKS_DIR: &str = "links";

/// The directory a running daemon holds an exclusive lock on: one daemon
/// per pin directory (bpffs holds only pins and directories, so the lock
/// is on a directory).
pub const DAEMON_LOCK: &str = "daemon-lock";

/// The programs of one greha build: `progs-<hash of the object>`.
pub fn progs_dir(object_hash: u64) -> String {
    format!("progs-{object_hash:016x}")
}

/// Whether a directory entry is some build's programs directory.
pub fn is_progs_dir(name: &str) -> bool {
    name.starts_with("progs-")
}

/// greha_xdp on an interface, shared by counting and the VRRP fast path.
pub fn xdp(ifindex: u32) -> String {
    format!("xdp-{ifindex}")
}

/// The VRRP fast path at tcx ingress of a greha tunnel.
pub fn vrrp(ifindex: u32) -> String {
    format!("vrrp-{ifindex}")
}

/// The GRE decapsulation at tc ingress of an underlay.
pub fn decap(underlay_ifindex: u32) -> String {
    format!("decap-{underlay_ifindex}")
}

/// The fragmentation at tc ingress of a `nopmtudisc` tunnel's
/// fragmenting pair, named by the pair's outer end.
pub fn fragment(outer_ifindex: u32) -> String {
    format!("fragment-{outer_ifindex}")
}

/// The GRE encapsulation at tc egress of a tunnel interface.
pub fn encap(dev_ifindex: u32) -> String {
    format!("encap-{dev_ifindex}")
}

/// The record of a tc attachment made as a netlink filter (no tcx): the
/// program pinned under the attachment's name with this prefix.
pub fn netlink(pin: &str) -> String {
    format!("nl-{pin}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_bpffs_accepts() {
        assert_eq!(xdp(4), "xdp-4");
        assert_eq!(vrrp(7), "vrrp-7");
        assert_eq!(decap(3), "decap-3");
        assert_eq!(encap(9), "encap-9");
        assert_eq!(progs_dir(0xab), "progs-00000000000000ab");
        assert!(is_progs_dir(&progs_dir(1)));
        assert_eq!(netlink(&decap(3)), "nl-decap-3");
        for n in [xdp(1), vrrp(1), decap(1), encap(1), netlink(&encap(1))] {
            assert!(!n.contains('.') && !n.contains('/'), "{n}");
        }
    }
}
