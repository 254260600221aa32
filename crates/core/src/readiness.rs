//! Readiness, edge-triggered, the way epoll reports it.
//!
//! A socket is registered with a token and an [`Interest`]; `Stack::poll_events`
//! returns only the sockets whose readiness changed since they were last
//! reported (or that received new data), each as an [`Event`] carrying the
//! token. The stack keeps a ready list that a socket joins when something
//! happens to it, so a poll costs one step per socket on the list — in
//! practice, per event returned — never one per socket that exists.

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
