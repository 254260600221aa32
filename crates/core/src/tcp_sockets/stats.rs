//! Monitoring: connections by state, retransmissions, listener counters,
//! and the drop counter for each reason the engine gives.

use crate::stack::Stack;
use crate::tcp::{self, BufferPool, DropReason, State};

impl Stack {
    /// Connections in the table (half-open, established, closing, TIME-WAIT).
    pub fn tcp_connections(&self) -> usize {
        self.tcp.live
    }

    /// The buffer pool every connection's send and receive bytes live in:
    /// its occupancy (`in_use`), limit and counters.
    pub fn tcp_buffer_pool(&self) -> &BufferPool {
        &self.tcp.pool
    }

    /// Connections in TIME-WAIT held as compact records (included in
    /// [`Stack::tcp_connections`]).
    pub fn tcp_time_wait(&self) -> usize {
        self.tcp.tw_by_tuple.len()
    }

    /// Connections by state and retransmissions, for monitoring
    /// (`ustack stats`, `ustack top`).
    ///
    /// This scans the whole connection table, O(connections): fine for a
    /// monitor that asks about once a second, wrong for the packet path,
    /// which keeps no per-state gauges so that a transition costs nothing.
    pub fn tcp_states(&self) -> TcpStates {
        let mut out = TcpStates {
            by_state: TcpStates::STATES.map(|s| (s, 0)),
            time_wait_records: self.tcp_time_wait(),
            listeners: self.tcp.listeners.len(),
            retransmits: self.tcp.freed_retransmits,
        };
        for i in 0..self.tcp.slots.len() {
            let Some(slot) = &self.tcp.slots[i] else { continue };
            let state = if slot.dead { State::Closed } else { slot.conn.state() };
            if let Some(entry) = out.by_state.iter_mut().find(|(s, _)| *s == state) {
                entry.1 += 1;
            }
            out.retransmits += slot.conn.stats().retransmits;
        }
        out
    }

    /// Counters of a listening port.
    pub fn tcp_listener_stats(&self, port: u16) -> Option<tcp::ListenerStats> {
        self.tcp.listeners.get(&port).map(|e| e.listener.stats())
    }

    /// Counters of every listening port, summed (SYNs, queue overflows, SYN
    /// cookies sent, accepted and rejected). A port closed since no longer counts.
    pub fn tcp_listeners_stats(&self) -> tcp::ListenerStats {
        self.tcp.listeners.values().map(|e| e.listener.stats()).fold(tcp::ListenerStats::default(), |a, b| {
            tcp::ListenerStats {
                syns: a.syns + b.syns,
                syn_queue_overflows: a.syn_queue_overflows + b.syn_queue_overflows,
                accept_queue_overflows: a.accept_queue_overflows + b.accept_queue_overflows,
                cookies_sent: a.cookies_sent + b.cookies_sent,
                cookies_accepted: a.cookies_accepted + b.cookies_accepted,
                cookies_rejected: a.cookies_rejected + b.cookies_rejected,
                resets_sent: a.resets_sent + b.resets_sent,
            }
        })
    }
}

/// What [`Stack::tcp_states`] found in the connection table.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TcpStates {
    /// Connections held in full slots, per state, in [`TcpStates::STATES`]
    /// order. `Closed` counts connections that ended while the application
    /// still holds their handle.
    pub by_state: [(State, usize); 10],
    /// TIME-WAIT connections kept as compact records, not in `by_state`
    /// ([`Stack::tcp_time_wait`]).
    pub time_wait_records: usize,
    /// Listening ports.
    pub listeners: usize,
    /// Segments retransmitted by the connections in the table plus those of
    /// connections already freed. SYN-ACKs answered by SYN cookies have no
    /// connection and are not counted.
    pub retransmits: u64,
}

impl TcpStates {
    /// Every state a connection can be in (`Listen` belongs to listeners).
    pub const STATES: [State; 10] = [
        State::SynSent,
        State::SynReceived,
        State::Established,
        State::FinWait1,
        State::FinWait2,
        State::CloseWait,
        State::Closing,
        State::LastAck,
        State::TimeWait,
        State::Closed,
    ];

    /// Connections in `state`; TIME-WAIT includes the compact records.
    pub fn count(&self, state: State) -> usize {
        let n = self.by_state.iter().find(|(s, _)| *s == state).map_or(0, |(_, n)| *n);
        if state == State::TimeWait {
            n + self.time_wait_records
        } else {
            n
        }
    }
}

pub(super) fn count_drop(c: &mut crate::counters::Counters, reason: DropReason) {
    match reason {
        DropReason::OutOfWindow | DropReason::Paws | DropReason::MissingTimestamp => c.drop_tcp_out_of_window += 1,
        DropReason::Rst | DropReason::Syn | DropReason::BadAck => c.drop_tcp_rfc5961 += 1,
        DropReason::ReassemblyFull => c.drop_tcp_reassembly_full += 1,
        DropReason::NoBuffer => c.drop_tcp_no_buffer += 1,
        // A segment for a connection that has ended (still held by its
        // application) or a RST at a listener: nothing is there for it.
        DropReason::Closed => c.drop_tcp_no_socket += 1,
        DropReason::Duplicate => c.drop_tcp_duplicate += 1,
        _ => c.drop_tcp_other += 1,
    }
}

#[cfg(test)]
mod size_tests {
    /// The fixed per-connection state stays well inside the 1 KiB budget
    /// (the scale test measures the whole cost, tables and buffers included).
    /// The 4-tuple holds addresses of either IP version (`IpAddr`, 17 bytes
    /// each): 38 bytes where IPv4-only addresses took 12, so the slot and
    /// the TIME-WAIT record are 32 and 24 bytes larger than they were. The
    /// out-of-window ACK limit (its next instant and counter) added 16.
    #[test]
    fn connection_state_is_compact() {
        use core::mem::size_of;
        let conn = size_of::<crate::tcp::Connection>();
        let slot = size_of::<Option<super::super::Slot>>();
        let tw = size_of::<Option<crate::tcp::TimeWait>>();
        eprintln!("Connection {conn} B, slot {slot} B, TIME-WAIT record {tw} B");
        assert!(slot <= 848, "slot {slot} B");
        assert!(tw <= 72, "TIME-WAIT record {tw} B");
    }
}
