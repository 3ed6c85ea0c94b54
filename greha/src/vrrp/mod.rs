//! VRRP (RFC 3768 version 2, RFC 5798 version 3, IPv4): the packet codec,
//! the sans-IO engine, and the I/O shell that runs engines on a host.
pub mod engine;
pub mod io;
pub mod packet;
pub mod shell;
