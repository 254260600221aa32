//! The local control socket a running stack opens, so `ustack stats` (and
//! later `ustack top`) can read its counters without stopping it.
//!
//! By default the socket is a Linux *abstract* Unix socket named
//! `ustack/<device>`: abstract names belong to the network namespace, so two
//! stacks in two namespaces never collide and nothing is left on disk. A
//! filesystem path can be given instead.
//!
//! The protocol is one JSON object per connection: connect, read to EOF.

use std::io::{self, Write};
use std::os::fd::{AsRawFd, RawFd};
use std::os::linux::net::SocketAddrExt;
use std::os::unix::net::{SocketAddr, UnixListener, UnixStream};
use std::path::PathBuf;
use ustack_core::Stack;

/// Where a control socket lives.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ControlAddr {
    /// Abstract socket `ustack/<device name>` in the current network namespace.
    Device(String),
    /// A socket file.
    Path(PathBuf),
}

impl ControlAddr {
    fn socket_addr(&self) -> io::Result<SocketAddr> {
        match self {
            ControlAddr::Device(name) => SocketAddr::from_abstract_name(format!("ustack/{name}").as_bytes()),
            ControlAddr::Path(p) => SocketAddr::from_pathname(p),
        }
    }

    /// Connect and read the stack's snapshot.
    pub fn read_snapshot(&self) -> io::Result<String> {
        let mut s = UnixStream::connect_addr(&self.socket_addr()?)?;
        s.set_read_timeout(Some(std::time::Duration::from_secs(5)))?;
        let mut out = String::new();
        io::Read::read_to_string(&mut s, &mut out)?;
        Ok(out)
    }
}

impl std::fmt::Display for ControlAddr {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ControlAddr::Device(name) => write!(f, "@ustack/{name}"),
            ControlAddr::Path(p) => write!(f, "{}", p.display()),
        }
    }
}

pub struct ControlSocket {
    listener: UnixListener,
    path: Option<PathBuf>,
}

impl ControlSocket {
    pub fn bind(addr: &ControlAddr) -> io::Result<ControlSocket> {
        let path = match addr {
            ControlAddr::Path(p) => {
                // A socket file left by a stack that died is stale; one that
                // answers belongs to a live stack and must not be taken over.
                if p.exists() && UnixStream::connect(p).is_err() {
                    let _ = std::fs::remove_file(p);
                }
                Some(p.clone())
            }
            ControlAddr::Device(_) => None,
        };
        let listener = UnixListener::bind_addr(&addr.socket_addr()?)?;
        listener.set_nonblocking(true)?;
        Ok(ControlSocket { listener, path })
    }

    pub fn fd(&self) -> RawFd {
        self.listener.as_raw_fd()
    }

    /// Answer every waiting client with `snapshot`. Never blocks the loop:
    /// a client that does not read is dropped.
    pub fn serve(&self, snapshot: impl Fn() -> String) {
        while let Ok((mut client, _)) = self.listener.accept() {
            let _ = client.set_nonblocking(true);
            let _ = client.write_all(snapshot().as_bytes());
        }
    }
}

impl Drop for ControlSocket {
    fn drop(&mut self) {
        if let Some(p) = &self.path {
            let _ = std::fs::remove_file(p);
        }
    }
}

/// The stack's state as one JSON object: `device`, `uptime_us`, `counters`
/// (every counter by name), `neighbors`.
pub fn snapshot_json(stack: &Stack, device: &str, uptime_us: u64) -> String {
    let mut s = String::with_capacity(2048);
    s.push_str("{\"device\":\"");
    s.extend(device.chars().filter(|c| !matches!(c, '"' | '\\') && !c.is_control()));
    s.push_str(&format!("\",\"uptime_us\":{uptime_us},\"neighbors\":{},\"counters\":{{", stack.neighbors().len()));
    for (i, (name, value)) in stack.counters().iter().enumerate() {
        if i > 0 {
            s.push(',');
        }
        s.push_str(&format!("\"{name}\":{value}"));
    }
    s.push_str("}}\n");
    s
}
