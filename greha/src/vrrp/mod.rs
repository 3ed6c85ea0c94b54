//! VRRP (RFC 3768 version 2, RFC 5798 version 3, IPv4).
pub mod engine;
pub mod packet;
