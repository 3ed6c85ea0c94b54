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

/// One GET on a new connection (from the calling thread's namespace):
/// the name of the server that answered, None if none did within
/// `timeout` per step.
pub fn fetch(addr: &SocketAddr, timeout: Duration) -> Option<char> {
    let mut conn = TcpStream::connect_timeout(addr, timeout).ok()?;
    conn.set_read_timeout(Some(timeout)).ok()?;
    conn.write_all(b"GET / HTTP/1.0\r\nHost: vip\r\n\r\n")
        .ok()?;
    let mut body = String::new();
    conn.read_to_string(&mut body).ok()?;
    body.lines()
        .last()
        .and_then(|l| l.strip_prefix("server "))
        .and_then(|n| n.chars().next())
}
