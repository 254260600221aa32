//! TIME-WAIT in compact form.
//!
//! Once a connection reaches TIME-WAIT and the application has let go of it,
//! the stack replaces the whole [`super::Connection`] with a [`TimeWait`]
//! record: the 4-tuple, SND.NXT, RCV.NXT, the timestamp state and the
//! expiry, about 40 bytes instead of the full state. It answers what RFC
//! 9293 §3.10.7.4 lets arrive in TIME-WAIT:
//!
//! * a retransmitted FIN is acknowledged and the 2MSL timer restarted ("The
//!   only thing that can arrive in this state is a retransmission of the
//!   remote FIN. Acknowledge it, and restart the 2 MSL timeout.");
//! * a RST is ignored (RFC 1337 §3, "TIME-WAIT Assassination": "ignore RST
//!   segments in TIME-WAIT state");
//! * a SYN whose sequence number is above RCV.NXT, or (with timestamps)
//!   whose TSval is newer than the last one seen, may reopen the connection
//!   (RFC 9293 §3.10.7.4 note / RFC 1122 §4.2.2.13, RFC 6191 §2): the stack
//!   drops the record and hands the SYN to the listener;
//! * any other segment that is not acceptable is answered with an ACK
//!   (RFC 9293 §3.10.7.4 first check), and PAWS (RFC 7323 §5.3) applies.

use super::segment::{Flags, FourTuple, Options, Segment};
use super::seq::SeqNumber;
use crate::time::{Duration, Instant};

/// A connection in TIME-WAIT, reduced to what it still has to answer.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TimeWait {
    pub(crate) tuple: FourTuple,
    /// Our SND.NXT (our FIN acknowledged: also SND.MAX).
    pub(crate) snd_nxt: SeqNumber,
    /// The peer's FIN included.
    pub(crate) rcv_nxt: SeqNumber,
    /// The window field last advertised (already scaled down).
    pub(crate) window: u16,
    pub(crate) timestamps: bool,
    /// TS.Recent: the peer's last TSval.
    pub(crate) ts_recent: u32,
    /// Our timestamp clock's offset from `now` in milliseconds.
    pub(crate) ts_offset: u32,
    pub(crate) expires: Instant,
}

/// What a segment did to a TIME-WAIT record.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TimeWaitOutcome {
    /// Nothing to send (a RST, a duplicate ACK, a PAWS-old RST...).
    Ignore,
    /// Send this ACK. The 2MSL timer may have been restarted: re-read
    /// [`TimeWait::expires`].
    Ack(Segment),
    /// A new SYN may reuse the 4-tuple (RFC 6191): forget the record and
    /// give the SYN to the listener.
    Reopen,
}

impl TimeWait {
    /// The closed connection's local and remote endpoints.
    pub fn four_tuple(&self) -> FourTuple {
        self.tuple
    }
    /// When the record goes (2MSL after the last FIN).
    pub fn expires(&self) -> Instant {
        self.expires
    }
    /// Our next sequence number: one past our FIN.
    pub fn snd_nxt(&self) -> SeqNumber {
        self.snd_nxt
    }
    /// The next sequence number expected from the peer: one past its FIN.
    pub fn rcv_nxt(&self) -> SeqNumber {
        self.rcv_nxt
    }

    /// Handles a segment for this 4-tuple. `time_wait` is 2MSL.
    pub fn on_segment(&mut self, now: Instant, seg: &Segment, time_wait: Duration) -> TimeWaitOutcome {
        // RFC 1337: "ignore RST segments in TIME-WAIT state".
        if seg.rst() {
            return TimeWaitOutcome::Ignore;
        }
        let tsval = seg.options.timestamp.map(|t| t.0);
        if seg.syn() && seg.ack.is_none() {
            // RFC 6191 §2: with timestamps, "the TS Value of the SYN ... is
            // larger than the value stored in TS.Recent"; otherwise (RFC 1122
            // §4.2.2.13) "its initial sequence number [is] larger than the
            // largest sequence number used on the previous connection".
            let newer = match (self.timestamps, tsval) {
                (true, Some(v)) => (v.wrapping_sub(self.ts_recent) as i32) > 0,
                _ => seg.seq.gt(self.rcv_nxt),
            };
            return if newer { TimeWaitOutcome::Reopen } else { TimeWaitOutcome::Ack(self.ack(now)) };
        }
        // RFC 7323 §5.3 R1 (PAWS): an old timestamp is answered and dropped.
        if self.timestamps {
            if let Some(v) = tsval {
                if (v.wrapping_sub(self.ts_recent) as i32) < 0 {
                    return TimeWaitOutcome::Ack(self.ack(now));
                }
            }
        }
        if seg.fin() {
            // A retransmitted FIN: acknowledge it and restart 2MSL.
            if let Some(v) = tsval.filter(|_| self.timestamps) {
                self.ts_recent = v;
            }
            self.expires = now + time_wait;
            return TimeWaitOutcome::Ack(self.ack(now));
        }
        // A bare ACK at RCV.NXT is acceptable and needs no answer (answering
        // would start an ACK loop); anything else is not acceptable in a
        // zero-length window: "an acknowledgment should be sent in reply".
        if seg.payload_len == 0 && seg.seq == self.rcv_nxt {
            return TimeWaitOutcome::Ignore;
        }
        TimeWaitOutcome::Ack(self.ack(now))
    }

    /// <SEQ=SND.NXT><ACK=RCV.NXT><CTL=ACK>, with a timestamp if in use.
    pub fn ack(&self, now: Instant) -> Segment {
        let mut options = Options::default();
        if self.timestamps {
            let ts = (now.total_millis() as u32).wrapping_add(self.ts_offset);
            options.timestamp = Some((ts, self.ts_recent));
        }
        Segment {
            seq: self.snd_nxt,
            ack: Some(self.rcv_nxt),
            flags: Flags::NONE,
            window: self.window,
            options,
            payload_len: 0,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::Ipv4Addr;

    const MSL2: Duration = Duration::from_secs(60);

    fn record(timestamps: bool) -> TimeWait {
        TimeWait {
            tuple: FourTuple {
                local_addr: Ipv4Addr::new(10, 0, 0, 1).into(),
                local_port: 80,
                remote_addr: Ipv4Addr::new(10, 0, 0, 2).into(),
                remote_port: 5000,
            },
            snd_nxt: SeqNumber(1002),
            rcv_nxt: SeqNumber(2002),
            window: 1000,
            timestamps,
            ts_recent: 500,
            ts_offset: 7,
            expires: Instant::from_secs(60),
        }
    }

    fn seg(seq: u32, flags: Flags, ts: Option<u32>) -> Segment {
        Segment {
            seq: SeqNumber(seq),
            ack: (!flags.syn()).then_some(SeqNumber(1002)),
            flags,
            window: 100,
            options: Options { timestamp: ts.map(|v| (v, 0)), ..Options::default() },
            payload_len: 0,
        }
    }

    #[test]
    fn retransmitted_fin_is_acked_and_restarts_2msl() {
        let mut tw = record(false);
        let now = Instant::from_secs(30);
        let TimeWaitOutcome::Ack(ack) = tw.on_segment(now, &seg(2001, Flags::FIN, None), MSL2) else { panic!() };
        assert_eq!((ack.seq, ack.ack, ack.window), (SeqNumber(1002), Some(SeqNumber(2002)), 1000));
        assert_eq!(tw.expires(), now + MSL2);
    }

    #[test]
    fn rst_is_ignored() {
        let mut tw = record(false);
        let rst = Segment { ack: None, ..seg(2002, Flags::RST, None) };
        assert_eq!(tw.on_segment(Instant::from_secs(1), &rst, MSL2), TimeWaitOutcome::Ignore);
        assert_eq!(tw.expires(), Instant::from_secs(60));
    }

    #[test]
    fn a_newer_syn_reopens_an_older_one_is_acked() {
        let mut tw = record(false);
        assert_eq!(tw.on_segment(Instant::from_secs(1), &seg(9000, Flags::SYN, None), MSL2), TimeWaitOutcome::Reopen);
        assert!(matches!(tw.on_segment(Instant::from_secs(1), &seg(100, Flags::SYN, None), MSL2), TimeWaitOutcome::Ack(_)));
        // With timestamps the TSval decides (RFC 6191), not the sequence number.
        let mut tw = record(true);
        assert_eq!(tw.on_segment(Instant::from_secs(1), &seg(100, Flags::SYN, Some(501)), MSL2), TimeWaitOutcome::Reopen);
        assert!(matches!(tw.on_segment(Instant::from_secs(1), &seg(9000, Flags::SYN, Some(400)), MSL2), TimeWaitOutcome::Ack(_)));
    }

    #[test]
    fn paws_and_duplicate_acks() {
        let mut tw = record(true);
        let now = Instant::from_millis(1000);
        let TimeWaitOutcome::Ack(ack) = tw.on_segment(now, &seg(2001, Flags::FIN, Some(400)), MSL2) else { panic!() };
        assert_eq!(ack.options.timestamp, Some((1007, 500)));
        assert_eq!(tw.expires(), Instant::from_secs(60), "a PAWS-old FIN does not restart 2MSL");
        assert_eq!(tw.on_segment(now, &seg(2002, Flags::NONE, Some(600)), MSL2), TimeWaitOutcome::Ignore);
        assert!(matches!(tw.on_segment(now, &seg(1500, Flags::NONE, Some(600)), MSL2), TimeWaitOutcome::Ack(_)));
    }
}
