//! The tunnel module's tests, apart so the module reads as what it does.
use super::*;

fn words(s: &str) -> Vec<String> {
    s.split_whitespace().map(str::to_owned).collect()
}

fn err(s: &str) -> String {
    format!("{:#}", TunnelDef::parse(&words(s)).unwrap_err())
}

#[test]
fn parses_iproute2_vocabulary() {
    let d = TunnelDef::parse(&words(
        "gretap1 type gretap local 192.0.2.1 remote 192.0.2.2 key 42 ttl 32 tos 16 \
         dev eth0 address 10.1.1.2/24",
    ))
    .unwrap();
    assert_eq!(d.name, "gretap1");
    assert_eq!(d.mode, Mode::Gretap);
    assert_eq!(d.local, IpAddr::from([192, 0, 2, 1]));
    assert_eq!(d.remote, IpAddr::from([192, 0, 2, 2]));
    assert_eq!((d.ikey, d.okey), (Some(42), Some(42)));
    // iproute2 reads a TOS in hexadecimal.
    assert_eq!((d.ttl, d.tos), (32, 0x16));
    assert_eq!(d.dev.as_deref(), Some("eth0"));
    assert_eq!(d.addresses, vec![(IpAddr::from([10, 1, 1, 2]), 24)]);
    let d = TunnelDef::parse(&words(
        "g mode gre local 192.0.2.1 remote 192.0.2.2 key 0.0.1.0",
    ))
    .unwrap();
    assert_eq!((d.mode, d.okey, d.ttl), (Mode::Gre, Some(256), DEFAULT_TTL));
}

/// The IPv6 underlays in iproute2's words: the family follows the mode,
/// hoplimit and tclass are ttl and tos, flowlabel is hexadecimal or
/// inherit, and encaplimit is a number of 0 to 255 or none (the option
/// adding 8 bytes to the overhead).
#[test]
fn ip6_modes_as_iproute2_reads_them() {
    let d = TunnelDef::parse(&words(
        "t6 mode ip6gretap local 2001:db8:1::1 remote 2001:db8:1::2 hoplimit 64 \
         tclass 0x20 flowlabel 12345 encaplimit none address 192.0.2.1/24 \
         address 2001:db8:2::1/64",
    ))
    .unwrap();
    assert_eq!(
        (d.mode, d.ttl, d.tos, d.flowlabel),
        (Mode::Ip6gretap, 64, 0x20, 0x12345)
    );
    assert_eq!(d.remote, "2001:db8:1::2".parse::<IpAddr>().unwrap());
    assert_eq!(d.addresses[1], ("2001:db8:2::1".parse().unwrap(), 64));
    let d = TunnelDef::parse(&words(
        "t6 mode ip6gre local 2001:db8:1::1 remote 2001:db8:1::2 flowlabel inherit",
    ))
    .unwrap();
    assert_eq!((d.mode, d.flowlabel), (Mode::Ip6gre, FLOWLABEL_INHERIT));
    assert_eq!((d.encap_limit, d.overhead()), (None, 44));
    let d = TunnelDef::parse(&words(
        "t6 mode ip6gretap local 2001:db8:1::1 remote 2001:db8:1::2 encaplimit 4 key 1",
    ))
    .unwrap();
    assert_eq!((d.encap_limit, d.overhead()), (Some(4), 58 + 8 + 4));
    for (spec, want) in [
        (
            "t mode ip6gretap local 192.0.2.1 remote 2001:db8:1::2",
            "tunnel t: local: 192.0.2.1 is not an IPv6 address, which mode ip6gretap runs over",
        ),
        (
            "t mode gretap local 192.0.2.1 remote 2001:db8:1::2",
            "tunnel t: remote: 2001:db8:1::2 is not an IPv4 address, which mode gretap runs over",
        ),
        (
            "t mode ip6gre local 2001:db8:1::1 remote 2001:db8:1::2 encaplimit 256",
            "tunnel t: encaplimit: \"256\" is not an encapsulation limit (0 to 255, or none)",
        ),
        (
            "t mode gretap local 192.0.2.1 remote 192.0.2.2 encaplimit 4",
            "tunnel t: encaplimit: is for the IPv6 underlays",
        ),
        (
            "t mode ip6gre local 2001:db8:1::1 remote 2001:db8:1::2 flowlabel 100000",
            "tunnel t: flowlabel: \"100000\" is not a flow label",
        ),
        (
            "t mode gre local 192.0.2.1 remote 192.0.2.2 flowlabel 1",
            "tunnel t: flowlabel: is for the IPv6 underlays",
        ),
        (
            "t mode ip6 local 2001:db8:1::1 remote 2001:db8:1::2",
            "tunnel t: mode: \"ip6\" is not gretap, gre, ip6gretap or ip6gre",
        ),
    ] {
        let e = err(spec);
        assert!(e.starts_with(want), "{spec}: {e}");
    }
}

#[test]
fn keys_ttl_and_tos_as_iproute2_reads_them() {
    let base = "t mode gretap local 192.0.2.1 remote 192.0.2.2";
    for (extra, ikey, okey, ttl, tos) in [
        ("", None, None, 0, 0),
        ("ikey 5 okey 6", Some(5), Some(6), 0, 0),
        ("okey 6", None, Some(6), 0, 0),
        ("key 7 ikey 8", Some(8), Some(7), 0, 0),
        ("ttl inherit tos inherit", None, None, 0, TOS_INHERIT),
        ("ttl 0 tos 0x20", None, None, 0, 0x20),
        ("ttl 64 tos 20", None, None, 64, 0x20),
        ("tos AF11", None, None, 0, 0x28),
        ("tos ef", None, None, 0, 0xb8),
        ("dsfield 0xb8", None, None, 0, 0xb8),
    ] {
        let d = TunnelDef::parse(&words(&format!("{base} {extra}"))).unwrap();
        assert_eq!(
            (d.ikey, d.okey, d.ttl, d.tos),
            (ikey, okey, ttl, tos),
            "{extra}"
        );
    }
}

#[test]
fn checksum_and_sequence_words_as_iproute2_reads_them() {
    let base = "t mode gretap local 192.0.2.1 remote 192.0.2.2";
    for (extra, want) in [
        ("", (false, false, false, false)),
        ("csum", (true, true, false, false)),
        ("icsum", (true, false, false, false)),
        ("ocsum", (false, true, false, false)),
        ("csum noicsum", (false, true, false, false)),
        ("seq", (false, false, true, true)),
        ("iseq oseq", (false, false, true, true)),
        ("seq nooseq csum nocsum", (false, false, true, false)),
    ] {
        let d = TunnelDef::parse(&words(&format!("{base} {extra}"))).unwrap();
        assert_eq!((d.icsum, d.ocsum, d.iseq, d.oseq), want, "{extra}");
    }
    // DF as the kernel's: pmtudisc by default, nopmtudisc, ignore-df only
    // with nopmtudisc (the kernel refuses it with pmtudisc), the last word
    // of each pair winning.
    for (extra, want) in [
        ("", (true, false)),
        ("pmtudisc", (true, false)),
        ("nopmtudisc", (false, false)),
        ("nopmtudisc ignore-df", (false, true)),
        ("ignore-df nopmtudisc", (false, true)),
        ("nopmtudisc ignore-df noignore-df", (false, false)),
    ] {
        let d = TunnelDef::parse(&words(&format!("{base} {extra}"))).unwrap();
        assert_eq!((d.pmtudisc, d.ignore_df), want, "{extra}");
    }
    for (input, expected) in [
        (
            format!("{base} ignore-df"),
            "tunnel t: ignore-df: needs nopmtudisc: with pmtudisc every outer packet has DF",
        ),
        (
            format!("{base} nopmtudisc ignore-df pmtudisc"),
            "tunnel t: ignore-df: needs nopmtudisc",
        ),
        (
            "t mode ip6gretap local 2001:db8:1::1 remote 2001:db8:1::2 nopmtudisc".to_owned(),
            "tunnel t: nopmtudisc: is for the IPv4 underlays (gretap, gre)",
        ),
    ] {
        let e = err(&input);
        assert!(e.contains(expected), "{input}: {e}");
    }
    // Each sent field costs 4 bytes of MTU; a required one nothing.
    let d = TunnelDef::parse(&words(&format!("{base} key 1 ocsum oseq iseq"))).unwrap();
    assert_eq!(d.gre_words(), 3);
}

#[test]
fn errors_name_the_field_and_value() {
    let base = "local 192.0.2.1 remote 192.0.2.2";
    for (input, expected) in [
        (
            format!("averyveryverylongname mode gretap {base}"),
            "tunnel averyveryverylongname: name: \"averyveryverylongname\" is 21 bytes long",
        ),
        (
            format!("t mode vxlan {base}"),
            "tunnel t: mode: \"vxlan\" is not gretap, gre, ip6gretap or ip6gre",
        ),
        (
            "t mode gre local 300.1.1.1 remote 192.0.2.2".into(),
            "tunnel t: local: \"300.1.1.1\" is not an IP address",
        ),
        (
            format!("t mode gre {base} key 4294967296"),
            "tunnel t: key: 4294967296 is out of range (0 to 4294967295)",
        ),
        (
            format!("t mode gre {base} key -1"),
            "tunnel t: key: \"-1\" is not a number or a dotted quad",
        ),
        (
            format!("t mode gre {base} ttl 256"),
            "tunnel t: ttl: \"256\" is not a TTL",
        ),
        (
            format!("t mode gre {base} tos 0x100"),
            "tunnel t: tos: \"0x100\" is not a TOS",
        ),
        (
            format!("t mode gre {base} tos AF99"),
            "tunnel t: tos: \"AF99\" is not a TOS",
        ),
        (
            format!("t mode gre {base} okey -1"),
            "tunnel t: okey: \"-1\" is not a number or a dotted quad",
        ),
        (
            format!("t mode gre {base} key"),
            "tunnel t: key: a value is required",
        ),
        (
            format!("t mode gre {base} colour red"),
            "tunnel t: unknown keyword \"colour\"",
        ),
        (
            "t mode gre remote 192.0.2.2".into(),
            "tunnel t: local: an address is required",
        ),
        (
            "t mode gre local 192.0.2.1 remote 192.0.2.1".into(),
            "tunnel t: remote: 192.0.2.1 is the local address",
        ),
        (
            "t mode gre local 192.0.2.1 remote 224.0.0.18".into(),
            "tunnel t: remote: 224.0.0.18 is not a unicast address",
        ),
        (
            format!("t mode gre {base} address 10.0.0.1/33"),
            "tunnel t: address: prefix length 33 is over 32",
        ),
        (
            format!("t mode gre {base} mtu 60"),
            "tunnel t: mtu: 60 is below",
        ),
        (
            format!("t {base}"),
            "tunnel t: mode: gretap, gre, ip6gretap or ip6gre is required",
        ),
    ] {
        let got = err(&input);
        assert!(
            got.contains(expected),
            "{input}\n  got: {got}\n  want: {expected}"
        );
    }
}

#[test]
fn overhead_matches_the_kernel() {
    assert_eq!(Mode::Gretap.overhead(0), 38);
    assert_eq!(Mode::Gre.overhead(0), 24);
    assert_eq!(Mode::Gretap.overhead(1), 42);
    assert_eq!(Mode::Gre.overhead(1), 28);
    // csum key seq, as `ip link add … type gretap csum key 1 seq` gets.
    assert_eq!(Mode::Gretap.overhead(3), 50);
}

#[test]
fn peer_names_are_stable_and_short() {
    assert_eq!(peer_name("gretap1"), peer_name("gretap1"));
    assert_ne!(peer_name("gretap1"), peer_name("gretap2"));
    assert!(peer_name("averyverylongnm").len() <= 15);
}
