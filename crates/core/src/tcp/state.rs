//! The eleven connection states of RFC 9293 §3.3.2 and the questions each
//! answers about what the connection may still do.
//!
//! The per-state behaviour lives in `connection/input.rs`, one `match` arm
//! per state, each quoting the RFC 9293 §3.10.7 text it implements.

/// RFC 9293 §3.3.2 connection states.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum State {
    /// "represents no connection state at all".
    Closed,
    /// "waiting for a connection request from any remote TCP peer and port"
    /// (the [`super::Listener`]; a `Connection` is never in this state).
    Listen,
    /// "waiting for a matching connection request after having sent a
    /// connection request".
    SynSent,
    /// "waiting for a confirming connection request acknowledgment after
    /// having both received and sent a connection request".
    SynReceived,
    /// "an open connection, data received can be delivered to the user".
    Established,
    /// "waiting for a connection termination request from the remote TCP
    /// peer, or an acknowledgment of the connection termination request
    /// previously sent".
    FinWait1,
    /// "waiting for a connection termination request from the remote TCP peer".
    FinWait2,
    /// "waiting for a connection termination request from the local user".
    CloseWait,
    /// "waiting for a connection termination request acknowledgment from the
    /// remote TCP peer".
    Closing,
    /// "waiting for an acknowledgment of the connection termination request
    /// previously sent to the remote TCP peer".
    LastAck,
    /// "waiting for enough time to pass to be sure the remote TCP peer
    /// received the acknowledgment of its connection termination request".
    TimeWait,
}

impl State {
    /// Both sides' ISNs are known (RFC 9293's "synchronized states", plus
    /// SYN-RECEIVED, which shares their segment processing).
    pub fn is_synchronized(self) -> bool {
        !matches!(self, State::Closed | State::Listen | State::SynSent)
    }

    /// Data from the peer is still delivered to the application.
    pub fn accepts_data(self) -> bool {
        matches!(self, State::Established | State::FinWait1 | State::FinWait2)
    }

    /// We have not yet sent (or queued) our FIN.
    pub fn can_send(self) -> bool {
        matches!(self, State::SynSent | State::SynReceived | State::Established | State::CloseWait)
    }
}

impl core::fmt::Display for State {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        let name = match self {
            State::Closed => "CLOSED",
            State::Listen => "LISTEN",
            State::SynSent => "SYN-SENT",
            State::SynReceived => "SYN-RECEIVED",
            State::Established => "ESTABLISHED",
            State::FinWait1 => "FIN-WAIT-1",
            State::FinWait2 => "FIN-WAIT-2",
            State::CloseWait => "CLOSE-WAIT",
            State::Closing => "CLOSING",
            State::LastAck => "LAST-ACK",
            State::TimeWait => "TIME-WAIT",
        };
        f.write_str(name)
    }
}
