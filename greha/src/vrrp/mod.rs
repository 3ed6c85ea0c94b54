//! VRRP (RFC 3768 version 2, RFC 5798 version 3, IPv4).
//!
//! - [`packet`]: the v2/v3 codec;
//! - [`engine`]: the sans-IO state machine of one virtual router;
//! - [`def`]: instances as the operator defines them, and their parser;
//! - [`router`]: every decision between the sockets and the engines, pure;
//! - [`status`]: the status document's types;
//! - [`shell`]: the loop that runs the engines on a host, with [`io`]
//!   (sockets, gratuitous ARP), [`host`] (definitions checked against the
//!   host), [`fastpath`] (the eBPF fast path's maps),
//!   [`track`] (check scripts), [`notify`] (notify commands) and
//!   [`command`] (their command lines);
//! - [`sync`]: sync groups, the rules that move their members together.
pub mod command;
pub mod def;
pub mod engine;
pub mod fastpath;
pub mod host;
pub mod io;
pub mod notify;
pub mod packet;
pub mod router;
pub mod shell;
pub mod status;
pub mod sync;
pub mod track;
