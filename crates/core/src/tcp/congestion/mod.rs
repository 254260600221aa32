//! Congestion control behind a small trait. The connection tells the
//! controller about acknowledgements and losses; the controller answers with
//! a congestion window. Loss detection and recovery (which segment to resend)
//! live in `recovery.rs`, not here.

mod cubic;
mod newreno;

pub use cubic::Cubic;
pub use newreno::NewReno;

use super::config::CongestionAlgorithm;
use crate::time::{Duration, Instant};

/// A congestion controller. Sizes are in bytes; `mss` is the sender's
/// current maximum segment payload.
pub trait CongestionControl {
    /// New data was cumulatively acknowledged outside loss recovery.
    /// `cwnd_limited` says whether the window was actually the constraint on
    /// sending (RFC 7661: an application-limited sender must not grow it).
    fn on_ack(&mut self, now: Instant, acked: usize, srtt: Option<Duration>, mss: usize, cwnd_limited: bool);
    /// Loss was detected by duplicate ACKs or SACK: recovery begins.
    fn on_congestion_event(&mut self, now: Instant, flight: usize, mss: usize);
    /// The retransmission timer expired.
    fn on_rto(&mut self, now: Instant, flight: usize, mss: usize);
    /// The congestion window in bytes.
    fn cwnd(&self) -> usize;
    /// The slow-start threshold in bytes (`usize::MAX` before the first loss).
    fn ssthresh(&self) -> usize;
    /// The last reduction was for nothing (every retransmission it caused
    /// was reported a duplicate): back to the window and threshold it found,
    /// `prior_cwnd` and `prior_ssthresh`, unless the controller has since
    /// grown beyond them.
    fn undo(&mut self, prior_cwnd: usize, prior_ssthresh: usize);
}

/// The controllers this crate ships, dispatched without a heap allocation.
#[derive(Clone, Debug)]
pub enum Controller {
    /// CUBIC (RFC 9438).
    Cubic(Cubic),
    /// NewReno (RFC 5681).
    NewReno(NewReno),
}

impl Controller {
    /// The controller `algorithm` names, in slow start with a window of
    /// `initial_cwnd` bytes.
    pub fn new(algorithm: CongestionAlgorithm, initial_cwnd: usize) -> Controller {
        match algorithm {
            CongestionAlgorithm::Cubic => Controller::Cubic(Cubic::new(initial_cwnd)),
            CongestionAlgorithm::NewReno => Controller::NewReno(NewReno::new(initial_cwnd)),
        }
    }

    fn inner(&self) -> &dyn CongestionControl {
        match self {
            Controller::Cubic(c) => c,
            Controller::NewReno(c) => c,
        }
    }

    fn inner_mut(&mut self) -> &mut dyn CongestionControl {
        match self {
            Controller::Cubic(c) => c,
            Controller::NewReno(c) => c,
        }
    }
}

impl CongestionControl for Controller {
    fn on_ack(&mut self, now: Instant, acked: usize, srtt: Option<Duration>, mss: usize, cwnd_limited: bool) {
        self.inner_mut().on_ack(now, acked, srtt, mss, cwnd_limited)
    }
    fn on_congestion_event(&mut self, now: Instant, flight: usize, mss: usize) {
        self.inner_mut().on_congestion_event(now, flight, mss)
    }
    fn on_rto(&mut self, now: Instant, flight: usize, mss: usize) {
        self.inner_mut().on_rto(now, flight, mss)
    }
    fn cwnd(&self) -> usize {
        self.inner().cwnd()
    }
    fn ssthresh(&self) -> usize {
        self.inner().ssthresh()
    }
    fn undo(&mut self, prior_cwnd: usize, prior_ssthresh: usize) {
        self.inner_mut().undo(prior_cwnd, prior_ssthresh)
    }
}

/// Slow start shared by both controllers. RFC 5681 §3.1: "cwnd += min (N,
/// SMSS)", with RFC 3465's byte counting and its limit L raised from 2*SMSS
/// to a 64 KiB super-segment's worth: a receiver that coalesces segments
/// (GRO, LRO, virtio) sends one stretch ACK for up to 44 segments, and
/// clamping it to two would slow slow start twentyfold. Linux applies no
/// limit at all (`tcp_slow_start` adds every segment acknowledged).
pub(crate) fn slow_start_increase(acked: usize, mss: usize) -> usize {
    acked.min(STRETCH_ACK_SEGMENTS * mss)
}

/// Segments one ACK may stand for in slow start: a 64 KiB super-segment
/// of 1,460-byte segments, rounded up.
const STRETCH_ACK_SEGMENTS: usize = 45;
