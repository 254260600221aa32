//! Path MTU discovery's part in a connection (RFC 1191 §6.4, RFC 5927 §4.1):
//! whether an ICMP error quoting one of our segments is believable, and what
//! to do when the path turns out narrower than our segments.

use super::Connection;
use crate::tcp::seq::SeqNumber;
use crate::tcp::state::State;
use crate::tcp::timers::Timer;

impl Connection {
    /// SND.UNA: the oldest sequence number not yet acknowledged.
    pub fn snd_una(&self) -> SeqNumber {
        self.snd_una
    }

    /// The highest sequence number sent so far (SND.NXT before any rewind).
    pub fn snd_max(&self) -> SeqNumber {
        self.snd_max
    }

    /// RFC 5927 §4.1: "TCP SHOULD check that the TCP sequence number
    /// contained in the payload of the ICMP error message is within the range
    /// SND.UNA =< SEG.SEQ < SND.NXT". Our SND.NXT may have been rewound
    /// (go-back-N), so the right end is the highest sent, SND.MAX; and a
    /// bare ACK at SND.MAX itself is quoted as SND.MAX, so it is included,
    /// as Linux does (`between(seq, snd_una, snd_nxt)`).
    pub fn icmp_seq_acceptable(&self, seq: SeqNumber) -> bool {
        !matches!(self.state, State::Closed | State::Listen | State::TimeWait)
            && seq.ge(self.snd_una)
            && seq.le(self.snd_max)
    }

    /// The path to the peer carries at most `max_payload` bytes after the
    /// IPv4 and fixed TCP headers (path MTU − 40). RFC 1191 §6.4: the
    /// segment size shrinks to fit; and, as Linux's `tcp_simple_retransmit`,
    /// what is in flight is resent from SND.UNA at once in the new size
    /// (the router dropped it), without the RTO's cut of the congestion
    /// window: this is not congestion. Returns whether the size shrank.
    pub fn on_path_mtu(&mut self, max_payload: usize) -> bool {
        let options = if self.timestamps { 12 } else { 0 };
        let mss = max_payload.saturating_sub(options).max(1);
        if mss >= self.eff_mss {
            return false;
        }
        self.eff_mss = mss;
        if matches!(self.state, State::SynSent | State::SynReceived) || !self.snd_max.gt(self.snd_una) {
            return true;
        }
        self.recovery.on_rto(self.snd_max);
        self.tlp.end_episode();
        self.tlp_due = false;
        self.timers.stop(Timer::LossProbe);
        self.timers.stop(Timer::Reorder);
        self.snd_nxt = self.snd_una;
        self.set_timed(None);
        true
    }
}
