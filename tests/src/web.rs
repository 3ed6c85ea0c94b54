//! The web service standing in for the seed's nginx on each server, and a
//! client's request to it.
use std::{
    io::{Read as _, Write as _},
    net::{SocketAddr, TcpStream},
    time::Duration,
};

use anyhow::Result;

use crate::{Host, Lab, Proc, SHORT};

/// Python's http.server in `host` on port 80, answering "server NAME".
pub fn http_service(lab: &Lab, host: &Host, name: char) -> Result<Proc> {
    let dir = lab.tmp().join(format!("www-{name}"));
    std::fs::create_dir_all(&dir)?;
    std::fs::write(dir.join("index.html"), format!("server {name}\n"))?;
    let mut cmd = host.command("/usr/bin/python3");
    cmd.args([
        "-u",
        "-m",
        "http.server",
        "80",
        "--bind",
        "0.0.0.0",
        "--directory",
    ])
    .arg(&dir);
    let mut p = host.spawn(lab, cmd, false)?;
    p.wait_for_output("Serving HTTP", SHORT)?;
    Ok(p)
}

/// How one request went.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Answer {
    /// This server answered.
    Server(char),
    /// No connection: nobody answered the SYN in time (the VIP was
    /// nowhere the client's ARP entry pointed).
    Unreachable,
    /// Connected, then reset or silent: the connection was opened with one
    /// server and its later segments reached another (the client's ARP
    /// entry changed mid-request), or the server went away.
    Broken,
}

impl Answer {
    pub fn server(self) -> Option<char> {
        match self {
            Self::Server(c) => Some(c),
            _ => None,
        }
    }
}

/// One GET on a new connection (from the calling thread's namespace),
/// each step waiting at most `timeout`.
pub fn fetch(addr: &SocketAddr, timeout: Duration) -> Answer {
    let Ok(mut conn) = TcpStream::connect_timeout(addr, timeout) else {
        return Answer::Unreachable;
    };
    let mut body = String::new();
    let done = conn.set_read_timeout(Some(timeout)).is_ok()
        && conn
            .write_all(b"GET / HTTP/1.0\r\nHost: vip\r\n\r\n")
            .is_ok()
        && conn.read_to_string(&mut body).is_ok();
    let server = body
        .lines()
        .last()
        .and_then(|l| l.strip_prefix("server "))
        .and_then(|n| n.chars().next());
    match server {
        Some(c) if done => Answer::Server(c),
        _ => Answer::Broken,
    }
}
