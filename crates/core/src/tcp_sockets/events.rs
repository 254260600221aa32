//! Readiness: which connections and listeners have news for
//! `poll_events`, and registration.

use super::{Child, ListenEntry, TcpHandle, TcpSockets};
use crate::readiness::{drain_ready, Event, Interest, Readiness, Socket};
use crate::tcp::{Connection, State};

impl TcpSockets {
    pub(super) fn mark_ready(&mut self, index: u32) {
        self.mark_ready_with(index, false);
    }

    /// Something happened to a connection: queue it for `poll_events` if
    /// it is registered and that is news (a condition became true, or
    /// `new_data` arrived).
    pub(super) fn mark_ready_with(&mut self, index: u32, new_data: bool) {
        let Some(s) = self.slots[index as usize].as_mut() else { return };
        if s.orphan || s.child != Child::None {
            return;
        }
        if s.watch.notify(readiness_of(&s.conn), new_data) {
            self.events.push_back(index);
        }
    }

    pub(super) fn mark_listener(&mut self, port: u16) {
        if let Some(l) = self.listeners.get_mut(&port) {
            if l.watch.notify(Readiness::READABLE, true) {
                self.listener_events.push_back(port);
            }
        }
    }

    /// Register a connection or a listener (see [`Stack::register`]).
    pub(crate) fn register(&mut self, socket: Socket, token: u64, interest: Interest) -> bool {
        match socket {
            Socket::Tcp(h) => {
                let Some(slot) = self.slot_mut(h) else { return false };
                if slot.watch.register(token, interest, readiness_of(&slot.conn)) {
                    self.events.push_back(h.index);
                }
                true
            }
            Socket::Listener(port) => {
                let Some(l) = self.listeners.get_mut(&port) else { return false };
                if l.watch.register(token, interest, listener_readiness(l)) {
                    self.listener_events.push_back(port);
                }
                true
            }
            _ => false,
        }
    }

    /// Stop reporting a connection or a listener.
    pub(crate) fn deregister(&mut self, socket: Socket) {
        match socket {
            Socket::Tcp(h) => {
                if let Some(slot) = self.slot_mut(h) {
                    slot.watch.registration = None;
                }
            }
            Socket::Listener(port) => {
                if let Some(l) = self.listeners.get_mut(&port) {
                    l.watch.registration = None;
                }
            }
            _ => {}
        }
    }

    pub(crate) fn has_events(&self) -> bool {
        !self.events.is_empty() || !self.listener_events.is_empty()
    }

    /// Move up to `max` events of listeners and connections into `out`.
    pub(crate) fn poll_events(&mut self, out: &mut Vec<Event>, max: usize, c: &mut crate::counters::Counters) -> usize {
        let listeners = &mut self.listeners;
        let n = drain_ready(&mut self.listener_events, out, max, c, |port| {
            let l = listeners.get_mut(&port)?;
            let now = listener_readiness(l);
            l.watch.take(now, Socket::Listener(port))
        });
        let slots = &mut self.slots;
        n + drain_ready(&mut self.events, out, max - n, c, |index| {
            let slot = slots[index as usize].as_mut()?;
            if slot.orphan {
                slot.watch.queued = false;
                return None;
            }
            let h = TcpHandle { index, generation: slot.generation };
            slot.watch.take(readiness_of(&slot.conn), Socket::Tcp(h))
        })
    }
}

/// A listener's readiness: READABLE while connections wait to be accepted.
pub(super) fn listener_readiness(l: &ListenEntry) -> Readiness {
    if l.accept_queue.is_empty() {
        Readiness::EMPTY
    } else {
        Readiness::READABLE
    }
}

/// A connection's readiness as the application sees it.
pub(super) fn readiness_of(conn: &Connection) -> Readiness {
    let mut r = Readiness::EMPTY;
    if conn.error().is_some() {
        return Readiness::ERROR | Readiness::READABLE;
    }
    if conn.is_readable() {
        r |= Readiness::READABLE;
    }
    if conn.is_writable() && conn.state().is_synchronized() {
        r |= Readiness::WRITABLE;
    }
    if matches!(conn.state(), State::CloseWait | State::LastAck | State::Closing | State::TimeWait | State::Closed) {
        r |= Readiness::READ_CLOSED;
    }
    r
}
