//! Readiness, edge-triggered, the way epoll reports it.
//!
//! Every kind of socket — a TCP connection, a TCP listener, a UDP socket, a
//! ping socket — is registered the same way, with [`Stack::register`], a
//! token of the caller's choosing and an [`Interest`]; [`Stack::poll_events`]
//! returns only the sockets that became ready since they were last reported
//! (or that received new data), each as an [`Event`] carrying the token and
//! the socket. The stack keeps ready lists that a socket joins when something
//! happens to it, so a poll costs one step per socket on a list — in
//! practice, per event returned — never one per socket that exists.
//!
//! Edge-triggered, as with `EPOLLET`: an event says a condition became true
//! (or more data came); it is not repeated while the condition holds. Read or
//! write until the call would block, and the next change brings a new event.
//! A call that would block (`tcp_recv` returning `WouldBlock`, a full send
//! buffer, an empty accept queue) re-arms its condition.
//!
//! [`Stack::register`]: crate::Stack::register
//! [`Stack::poll_events`]: crate::Stack::poll_events
//!
//! # An echo server
//!
//! Two stacks on the in-memory link; stack B runs an echo server driven only
//! by events, stack A is its client.
//!
//! ```
//! use std::net::{Ipv4Addr, SocketAddrV4};
//! use ustack_core::{Event, Instant, Interest, Ipv4Cidr, Socket, Stack, StackConfig, TcpHandle};
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
//! b.register(Socket::Listener(port), LISTENER, Interest::READABLE).unwrap();
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
//!                 b.register(h, conns.len() as u64, Interest::READABLE).unwrap();
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

#![warn(missing_docs)]

use crate::icmp::PingHandle;
use crate::tcp_sockets::TcpHandle;
use crate::udp::UdpHandle;
use core::ops::{BitAnd, BitOr, BitOrAssign, Not};

/// A set of readiness conditions.
#[derive(Clone, Copy, Default, PartialEq, Eq, Hash)]
pub struct Readiness(u8);

impl Readiness {
    /// No condition.
    pub const EMPTY: Readiness = Readiness(0);
    /// A receive would return data (or a listener has a connection to accept).
    pub const READABLE: Readiness = Readiness(1);
    /// A send would accept at least one byte (UDP and ping: one datagram).
    pub const WRITABLE: Readiness = Readiness(2);
    /// The peer finished sending: `recv` returns end of stream once drained.
    pub const READ_CLOSED: Readiness = Readiness(4);
    /// The connection failed (reset, timed out, refused).
    pub const ERROR: Readiness = Readiness(8);
    /// Reported whatever the interest, like EPOLLHUP and EPOLLERR.
    pub(crate) const ALWAYS: Readiness = Readiness(4 | 8);

    /// Every condition in `other` is in `self`.
    pub const fn contains(self, other: Readiness) -> bool {
        self.0 & other.0 == other.0
    }
    /// No condition at all.
    pub const fn is_empty(self) -> bool {
        self.0 == 0
    }
    /// Contains [`Readiness::READABLE`].
    pub const fn is_readable(self) -> bool {
        self.contains(Readiness::READABLE)
    }
    /// Contains [`Readiness::WRITABLE`].
    pub const fn is_writable(self) -> bool {
        self.contains(Readiness::WRITABLE)
    }
    /// Contains [`Readiness::READ_CLOSED`].
    pub const fn is_read_closed(self) -> bool {
        self.contains(Readiness::READ_CLOSED)
    }
    /// Contains [`Readiness::ERROR`].
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

impl Not for Readiness {
    type Output = Readiness;
    fn not(self) -> Readiness {
        Readiness(!self.0 & 0x0f)
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

/// A socket of any kind, as [`Stack::register`](crate::Stack::register)
/// takes it and an [`Event`] names it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Socket {
    /// A TCP connection.
    Tcp(TcpHandle),
    /// The TCP listener on a port: READABLE when a connection waits to be accepted.
    Listener(u16),
    /// A UDP socket.
    Udp(UdpHandle),
    /// A ping socket.
    Ping(PingHandle),
}

impl From<TcpHandle> for Socket {
    fn from(h: TcpHandle) -> Socket {
        Socket::Tcp(h)
    }
}

impl From<UdpHandle> for Socket {
    fn from(h: UdpHandle) -> Socket {
        Socket::Udp(h)
    }
}

impl From<PingHandle> for Socket {
    fn from(h: PingHandle) -> Socket {
        Socket::Ping(h)
    }
}

/// [`Stack::register`](crate::Stack::register) was given a socket that is
/// not open (closed, or never opened).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct NoSuchSocket(pub Socket);

impl core::fmt::Display for NoSuchSocket {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        write!(f, "cannot register {:?}: no such socket is open", self.0)
    }
}

impl std::error::Error for NoSuchSocket {}

/// One socket's readiness change.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Event {
    /// The token the socket was registered with.
    pub token: u64,
    /// The socket's readiness now (within its interest, plus errors and end
    /// of stream).
    pub readiness: Readiness,
    /// The socket the event is about.
    pub socket: Socket,
}

/// A socket's registration and what it was last told.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Registration {
    pub(crate) token: u64,
    pub(crate) interest: Interest,
    /// Conditions the application knows to be true: set when reported,
    /// cleared when a call finds them false (would block).
    pub(crate) reported: Readiness,
    /// New data arrived since the last report (an edge even if it was
    /// readable already).
    pub(crate) new_data: bool,
}

impl Registration {
    fn watched(&self) -> Readiness {
        self.interest | Readiness::ALWAYS
    }

    /// Whether `now` is news: a watched condition the application does not
    /// know about, or new data while readable.
    pub(crate) fn changed(&self, now: Readiness) -> bool {
        !(now & self.watched() & !self.reported).is_empty() || (self.new_data && (now & self.interest).is_readable())
    }

    /// The event to report for `now`, if any, and remember it as reported.
    pub(crate) fn report(&mut self, now: Readiness, socket: Socket) -> Option<Event> {
        let news = self.changed(now);
        let r = now & self.watched();
        self.reported = r;
        self.new_data = false;
        (news && !r.is_empty()).then_some(Event { token: self.token, readiness: r, socket })
    }
}

/// A datagram socket's readiness from its queues: READABLE while something
/// waits to be read, WRITABLE while the send queue has room for another.
pub(crate) fn queue_readiness(rx_waiting: bool, tx_full: bool) -> Readiness {
    let mut r = Readiness::EMPTY;
    if rx_waiting {
        r |= Readiness::READABLE;
    }
    if !tx_full {
        r |= Readiness::WRITABLE;
    }
    r
}

/// Take sockets off a ready list until `max` events are in `out`; `take`
/// gives a socket's event, if it still has one. Counts every visit and event.
pub(crate) fn drain_ready<K>(
    list: &mut std::collections::VecDeque<K>,
    out: &mut Vec<Event>,
    max: usize,
    c: &mut crate::counters::Counters,
    mut take: impl FnMut(K) -> Option<Event>,
) -> usize {
    let mut n = 0;
    while n < max {
        let Some(key) = list.pop_front() else { break };
        c.poll_visited += 1;
        if let Some(event) = take(key) {
            out.push(event);
            n += 1;
        }
    }
    c.poll_events += n as u64;
    n
}

/// A socket's place in the readiness machinery: its registration, and
/// whether it waits on its kind's ready list.
#[derive(Clone, Copy, Debug, Default)]
pub(crate) struct Watch {
    pub(crate) registration: Option<Registration>,
    pub(crate) queued: bool,
}

impl Watch {
    /// Register (or change the registration). Returns true when the socket
    /// must join its ready list: it is ready now, and, as on
    /// `EPOLL_CTL_ADD`/`MOD`, the next poll says so once.
    pub(crate) fn register(&mut self, token: u64, interest: Interest, now: Readiness) -> bool {
        self.registration = Some(Registration { token, interest, reported: Readiness::EMPTY, new_data: false });
        self.enqueue(now)
    }

    /// Something happened to the socket (`new_data`: bytes or datagrams
    /// arrived). Returns true when it must join its ready list.
    pub(crate) fn notify(&mut self, now: Readiness, new_data: bool) -> bool {
        let Some(reg) = self.registration.as_mut() else { return false };
        reg.new_data |= new_data;
        self.enqueue(now)
    }

    fn enqueue(&mut self, now: Readiness) -> bool {
        let news = self.registration.is_some_and(|r| r.changed(now));
        if news && !self.queued {
            self.queued = true;
            return true;
        }
        false
    }

    /// A call found the socket lacking what `now` lacks (it would block):
    /// those conditions are re-armed, their return will be news.
    pub(crate) fn lower(&mut self, now: Readiness) {
        if let Some(reg) = self.registration.as_mut() {
            reg.reported = reg.reported & now;
        }
    }

    /// Taken off the ready list: the event to report, if any.
    pub(crate) fn take(&mut self, now: Readiness, socket: Socket) -> Option<Event> {
        if !self.queued {
            return None; // a stale entry: the slot was reused
        }
        self.queued = false;
        self.registration.as_mut()?.report(now, socket)
    }
}

impl crate::Stack {
    /// Register `socket` for [`Stack::poll_events`](crate::Stack::poll_events)
    /// under `token`, with `interest` (READABLE and/or WRITABLE; READ_CLOSED
    /// and ERROR are always reported). Registering again changes the token or
    /// interest. If the socket is ready now, the next poll reports it once, as
    /// epoll does on `EPOLL_CTL_ADD`. A listener's only condition is READABLE.
    pub fn register(&mut self, socket: impl Into<Socket>, token: u64, interest: Interest) -> Result<(), NoSuchSocket> {
        let socket = socket.into();
        let found = match socket {
            Socket::Tcp(_) | Socket::Listener(_) => self.tcp.register(socket, token, interest),
            Socket::Udp(h) => self.udp.register(h, token, interest),
            Socket::Ping(h) => self.ping.register(h, token, interest),
        };
        found.then_some(()).ok_or(NoSuchSocket(socket))
    }

    /// Stop reporting `socket`. Closing a socket deregisters it too.
    pub fn deregister(&mut self, socket: impl Into<Socket>) {
        match socket.into() {
            s @ (Socket::Tcp(_) | Socket::Listener(_)) => self.tcp.deregister(s),
            Socket::Udp(h) => self.udp.deregister(h),
            Socket::Ping(h) => self.ping.deregister(h),
        }
    }

    /// Move up to `max` events into `out` (appending): the registered sockets
    /// of every kind that became ready (or received data) since they were
    /// last reported. Returns how many were added. Costs one step per socket
    /// with news, however many sockets exist; the `poll_visited` and
    /// `poll_events` counters show it. Sockets past `max` wait for the next call.
    pub fn poll_events(&mut self, out: &mut Vec<Event>, max: usize) -> usize {
        let c = &mut self.iface.counters;
        let mut n = self.tcp.poll_events(out, max, c);
        n += self.udp.poll_events(out, max - n, c);
        n += self.ping.poll_events(out, max - n, c);
        n
    }

    /// Whether some registered socket has news for
    /// [`Stack::poll_events`](crate::Stack::poll_events) (an event loop
    /// must not sleep then).
    pub fn has_events(&self) -> bool {
        self.tcp.has_events() || self.udp.has_events() || self.ping.has_events()
    }
}
