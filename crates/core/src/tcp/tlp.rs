//! Tail Loss Probe (RFC 8985 §7): when the ACKs stop while data is
//! outstanding, probe after about two round trips instead of waiting for the
//! RTO, so a lost tail is repaired by fast recovery rather than by a timeout.
//!
//! This module holds the probe timeout (§7.2) and the episode bookkeeping of
//! §7.4 (was a loss repaired by the probe?). When to arm the timer and what
//! the probe carries are the connection's business (`connection/output.rs`,
//! `connection/input.rs`).

use super::segment::SackBlock;
use super::seq::SeqNumber;
use crate::time::{Duration, Instant};

/// RFC 8985 §7.2: "WCDelAckT stands for worst case delayed ACK timer. When
/// FlightSize is 1, PTO is inflated by WCDelAckT time to compensate for a
/// potential long delayed ACK timer at the receiver. The RECOMMENDED value
/// for WCDelAckT is 200ms."
const WORST_CASE_DELAYED_ACK: Duration = Duration::from_millis(200);

/// A floor under 2·SRTT, for paths whose SRTT rounds to nothing: the probe
/// should not race the ACKs of a LAN. Linux keeps 10 ms (`tcp_schedule_loss_probe`
/// before 5.x, `TCP_TIMEOUT_MIN` granularity since).
const PTO_FLOOR: Duration = Duration::from_millis(10);

/// RFC 8985 §7.2: "If SRTT is not available, PTO = 1 sec" (the initial RTO).
const PTO_WITHOUT_SRTT: Duration = Duration::from_secs(1);

/// RFC 8985 §7.2 TLP_calc_PTO(): the probe timeout, as a deadline.
///
/// "If SRTT is available: PTO = 2 * SRTT; If FlightSize is one segment: PTO
/// += WCDelAckT ... If Now() + PTO > TCP_RTO_expire(): PTO = TCP_RTO_expire()
/// - Now()".
pub(crate) fn probe_deadline(
    now: Instant,
    srtt: Option<Duration>,
    one_segment_in_flight: bool,
    rto_deadline: Instant,
) -> Instant {
    let pto = match srtt {
        Some(srtt) => {
            let pto = srtt.saturating_mul(2).max(PTO_FLOOR);
            if one_segment_in_flight {
                pto + WORST_CASE_DELAYED_ACK
            } else {
                pto
            }
        }
        None => PTO_WITHOUT_SRTT,
    };
    (now + pto).min(rto_deadline)
}

/// What an ACK said about the probe episode in progress.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum ProbeVerdict {
    /// Nothing decided yet (or no episode).
    Pending,
    /// The episode ended without evidence of a loss.
    NoLoss,
    /// RFC 8985 §7.4: the probe repaired a loss the sender never saw, so
    /// congestion control must still react to it.
    RepairedLoss,
}

/// RFC 8985 §7.4.1 TLP episode state: "TLP.end_seq" (SND.NXT after the
/// probe went out) and "TLP.is_retrans" (the probe was a retransmission).
#[derive(Clone, Copy, Debug, Default)]
pub(crate) struct TailLossProbe {
    /// The probe's sequence range and whether it was a retransmission; `None`
    /// outside an episode ("TLP.end_seq = None").
    episode: Option<(SeqNumber, SeqNumber, bool)>,
}

impl TailLossProbe {
    /// RFC 8985 §7.3: a sender "MUST NOT" send another probe while one
    /// episode is open: "the sender ... only sends one TLP per episode".
    pub(crate) fn may_probe(&self) -> bool {
        self.episode.is_none()
    }

    /// A probe carrying `[start, end)` went out; `snd_nxt` is SND.NXT after it.
    pub(crate) fn on_probe_sent(&mut self, start: SeqNumber, snd_nxt: SeqNumber, retransmission: bool) {
        // RFC 8985 §7.4.1: "TLP.is_retrans = ... TLP.end_seq = SND.NXT".
        self.episode = Some((start, snd_nxt, retransmission));
    }

    /// The episode is over for other reasons (fast recovery or an RTO took
    /// over; their own congestion response covers any loss).
    pub(crate) fn end_episode(&mut self) {
        self.episode = None;
    }

    /// RFC 8985 §7.4.2 TLP_process_ack(ACK), for an acceptable ACK of
    /// `ack`. `dsack` is the D-SACK block the ACK carried, if any;
    /// `pure_dupack_without_sack` says whether it was a duplicate ACK with no
    /// SACK option at all.
    pub(crate) fn on_ack(
        &mut self,
        ack: SeqNumber,
        dsack: Option<SackBlock>,
        pure_dupack_without_sack: bool,
    ) -> ProbeVerdict {
        let Some((start, end, retransmission)) = self.episode else { return ProbeVerdict::Pending };
        // "If TLP.end_seq is not None AND ACK's ack. number >= TLP.end_seq"
        if ack.lt(end) {
            return ProbeVerdict::Pending;
        }
        let verdict = if !retransmission {
            // "If not TLP.is_retrans: TLP.end_seq = None /* TLP of new data
            // delivered */"
            ProbeVerdict::NoLoss
        } else if dsack.is_some_and(|(s, e)| s.lt(end) && e.gt(start)) {
            // "Else if ACK has a DSACK option matching TLP.end_seq:
            // TLP.end_seq = None /* Retransmission is spurious */"
            ProbeVerdict::NoLoss
        } else if ack.gt(end) {
            // "Else if ACK's ack. number > TLP.end_seq: TLP.end_seq = None
            // /* Repaired the single loss */ (Invoke congestion control to
            // lower cwnd and ssthresh)"
            ProbeVerdict::RepairedLoss
        } else if pure_dupack_without_sack {
            // "Else if ACK is a DUPACK without any SACK option: TLP.end_seq =
            // None /* Assume it's spurious */"
            ProbeVerdict::NoLoss
        } else {
            return ProbeVerdict::Pending;
        };
        self.episode = None;
        verdict
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn s(n: u32) -> SeqNumber {
        SeqNumber(n)
    }

    #[test]
    fn pto_is_two_srtt_plus_delayed_ack_for_one_segment_capped_by_rto() {
        let now = Instant::from_millis(1000);
        let rto_at = Instant::from_millis(1500);
        let srtt = Some(Duration::from_millis(100));
        assert_eq!(probe_deadline(now, srtt, false, rto_at), Instant::from_millis(1200));
        assert_eq!(probe_deadline(now, srtt, true, rto_at), Instant::from_millis(1400));
        assert_eq!(probe_deadline(now, Some(Duration::from_millis(300)), false, rto_at), rto_at);
        assert_eq!(probe_deadline(now, None, false, Instant::from_millis(5000)), Instant::from_millis(2000));
    }

    #[test]
    fn episode_outcomes() {
        let mut t = TailLossProbe::default();
        assert!(t.may_probe());
        // A probe of new data: delivered means nothing was lost.
        t.on_probe_sent(s(100), s(110), false);
        assert!(!t.may_probe());
        assert_eq!(t.on_ack(s(100), None, false), ProbeVerdict::Pending);
        assert_eq!(t.on_ack(s(110), None, false), ProbeVerdict::NoLoss);
        assert!(t.may_probe());
        // A retransmitted probe that was D-SACKed: the original arrived.
        t.on_probe_sent(s(100), s(110), true);
        assert_eq!(t.on_ack(s(110), None, false), ProbeVerdict::Pending);
        assert_eq!(t.on_ack(s(110), Some((s(100), s(110))), false), ProbeVerdict::NoLoss);
        // A retransmitted probe and then an ACK beyond it with no D-SACK:
        // the probe filled the hole.
        t.on_probe_sent(s(100), s(110), true);
        assert_eq!(t.on_ack(s(110), None, false), ProbeVerdict::Pending);
        assert_eq!(t.on_ack(s(120), None, false), ProbeVerdict::RepairedLoss);
        assert_eq!(t.on_ack(s(130), None, false), ProbeVerdict::Pending);
    }
}
