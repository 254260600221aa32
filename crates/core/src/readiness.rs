//! Readiness, edge-triggered, the way epoll reports it.
//!
//! A socket is registered with a token and an [`Interest`]; `Stack::poll_events`
//! returns only the sockets whose readiness changed since they were last
//! reported (or that received new data), each as an [`Event`] carrying the
//! token. The stack keeps a ready list that a socket joins when something
//! happens to it, so a poll costs one step per socket on the list — in
//! practice, per event returned — never one per socket that exists.
//!
//! # An echo server
//!
//! Two stacks on the in-memory link; stack B runs an echo server driven only
//! by events, stack A is its client.
//!
//! ```
//! use std::net::{Ipv4Addr, SocketAddrV4};
//! use ustack_core::{Event, Instant, Interest, Ipv4Cidr, Stack, StackConfig, TcpHandle};
//! use ustack_device::{LinkConfig, MemoryLink};
//! use ustack_wire::EthernetAddress;
//!
//! let cfg = |m, ip| StackConfig::new(EthernetAddress([2, 0, 0, 0, 0, m]), Ipv4Cidr::new(ip, 24).unwrap());
//! let (b_ip, port) = (Ipv4Addr::new(10, 0, 0, 2), 7);
//! let (mut pa, mut pb) = MemoryLink::pair(LinkConfig::default(), 1);
//! let mut a = Stack::new(cfg(1, Ipv4Addr::new(10, 0, 0, 1)), 1);
//! let mut b = Stack::new(cfg(2, b_ip), 2);
//!
//! // The server: a listener token, then one token per connection.
//! const LISTENER: u64 = u64::MAX;
//! b.tcp_listen(port, 128).unwrap();
//! b.tcp_register_listener(port, LISTENER);
//! let mut conns: Vec<TcpHandle> = Vec::new();
//! let mut events: Vec<Event> = Vec::new();
//! let mut buf = [0u8; 4096];
//!
//! let client = a.tcp_connect(Instant::ZERO, SocketAddrV4::new(b_ip, port)).unwrap();
//! let mut sent = false;
//! let mut echoed = Vec::new();
//! for turn in 0..200u64 {
//!     let now = Instant::from_millis(turn);
//!     a.poll(now, &mut pa, 64);
//!     b.poll(now, &mut pb, 64);
//!
//!     // Server work: only the sockets with news.
//!     events.clear();
//!     b.poll_events(&mut events, 256);
//!     for ev in &events {
//!         if ev.token == LISTENER {
//!             while let Some(h) = b.tcp_accept(port) {
//!                 b.tcp_register(h, conns.len() as u64, Interest::READABLE);
//!                 conns.push(h);
//!             }
//!             continue;
//!         }
//!         let h = conns[ev.token as usize];
//!         while let Ok(n) = b.tcp_recv(h, &mut buf) {
//!             if n == 0 {
//!                 b.tcp_close(h); // the client finished
//!                 break;
//!             }
//!             b.tcp_send(h, &buf[..n]).unwrap();
//!         }
//!     }
//!
//!     // Client work: say hello once connected, read the echo.
//!     if !sent && a.tcp_send(client, b"hello").is_ok() {
//!         sent = true;
//!     }
//!     while let Ok(n) = a.tcp_recv(client, &mut buf) {
//!         echoed.extend_from_slice(&buf[..n]);
//!     }
//! }
//! assert_eq!(echoed, b"hello");
//! ```

use core::ops::{BitAnd, BitOr, BitOrAssign};

/// A set of readiness conditions.
#[derive(Clone, Copy, Default, PartialEq, Eq, Hash)]
pub struct Readiness(u8);

impl Readiness {
    pub const EMPTY: Readiness = Readiness(0);
    /// `recv` would return data (or a listener has a connection to accept).
    pub const READABLE: Readiness = Readiness(1);
    /// `send` would accept at least one byte.
    pub const WRITABLE: Readiness = Readiness(2);
    /// The peer finished sending: `recv` returns end of stream once drained.
    pub const READ_CLOSED: Readiness = Readiness(4);
    /// The connection failed (reset, timed out, refused).
    pub const ERROR: Readiness = Readiness(8);
    /// Reported whatever the interest, like EPOLLHUP and EPOLLERR.
    pub(crate) const ALWAYS: Readiness = Readiness(4 | 8);

    pub const fn contains(self, other: Readiness) -> bool {
        self.0 & other.0 == other.0
    }
    pub const fn is_empty(self) -> bool {
        self.0 == 0
    }
    pub const fn is_readable(self) -> bool {
        self.contains(Readiness::READABLE)
    }
    pub const fn is_writable(self) -> bool {
        self.contains(Readiness::WRITABLE)
    }
    pub const fn is_read_closed(self) -> bool {
        self.contains(Readiness::READ_CLOSED)
    }
    pub const fn is_error(self) -> bool {
        self.contains(Readiness::ERROR)
    }
}

impl BitOr for Readiness {
    type Output = Readiness;
    fn bitor(self, rhs: Readiness) -> Readiness {
        Readiness(self.0 | rhs.0)
    }
}

impl BitOrAssign for Readiness {
    fn bitor_assign(&mut self, rhs: Readiness) {
        self.0 |= rhs.0;
    }
}

impl BitAnd for Readiness {
    type Output = Readiness;
    fn bitand(self, rhs: Readiness) -> Readiness {
        Readiness(self.0 & rhs.0)
    }
}

impl core::fmt::Debug for Readiness {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        let names = [(Readiness::READABLE, "R"), (Readiness::WRITABLE, "W"), (Readiness::READ_CLOSED, "HUP"), (Readiness::ERROR, "ERR")];
        let set: Vec<&str> = names.iter().filter(|(r, _)| self.contains(*r)).map(|(_, n)| *n).collect();
        write!(f, "{}", if set.is_empty() { "-".to_string() } else { set.join("|") })
    }
}

/// What a registration wants to hear about (errors and end of stream are
/// always reported).
pub type Interest = Readiness;

/// One socket's readiness change.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Event {
    /// The token the socket was registered with.
    pub token: u64,
    pub readiness: Readiness,
}

/// A socket's registration and what it was last told.
#[derive(Clone, Copy, Debug, Default)]
pub(crate) struct Registration {
    pub(crate) token: u64,
    pub(crate) interest: Interest,
    pub(crate) reported: Readiness,
    /// New data arrived since the last report (an edge even if it was
    /// readable already).
    pub(crate) new_data: bool,
}

impl Registration {
    /// Whether `now` is news worth a place on the ready list.
    pub(crate) fn changed(&self, now: Readiness) -> bool {
        let watched = self.interest | Readiness::ALWAYS;
        (now & watched) != (self.reported & watched) || (self.new_data && (now & self.interest).is_readable())
    }

    /// The event to report for `now`, if any, and remember it as reported.
    pub(crate) fn report(&mut self, now: Readiness) -> Option<Event> {
        let watched = self.interest | Readiness::ALWAYS;
        let news = self.changed(now);
        self.reported = now;
        self.new_data = false;
        let r = now & watched;
        (news && !r.is_empty()).then_some(Event { token: self.token, readiness: r })
    }
}
