//! NewReno's window arithmetic (RFC 5681 §3.1). The recovery half of RFC 6582
//! (window inflation, partial ACKs) is in `recovery.rs`.

use super::{slow_start_increase, CongestionControl};
use crate::time::{Duration, Instant};

/// The NewReno controller (RFC 5681 window growth, halving on loss).
#[derive(Clone, Debug)]
pub struct NewReno {
    cwnd: usize,
    ssthresh: usize,
    /// Bytes acknowledged in congestion avoidance since cwnd last grew.
    bytes_acked: usize,
}

impl NewReno {
    /// A controller in slow start with a window of `initial_cwnd` bytes.
    pub fn new(initial_cwnd: usize) -> NewReno {
        NewReno { cwnd: initial_cwnd, ssthresh: usize::MAX, bytes_acked: 0 }
    }
}

impl CongestionControl for NewReno {
    fn on_ack(&mut self, _now: Instant, acked: usize, _srtt: Option<Duration>, mss: usize, cwnd_limited: bool) {
        if !cwnd_limited {
            return;
        }
        if self.cwnd < self.ssthresh {
            self.cwnd += slow_start_increase(acked, mss);
            return;
        }
        // RFC 5681 §3.1: "the congestion window ... MAY be increased by SMSS
        // bytes ... each time bytes_acked reaches cwnd".
        self.bytes_acked += acked;
        if self.bytes_acked >= self.cwnd {
            self.bytes_acked -= self.cwnd;
            self.cwnd += mss;
        }
    }

    fn on_congestion_event(&mut self, _now: Instant, flight: usize, mss: usize) {
        // RFC 5681 §3.2 (4): "ssthresh = max (FlightSize / 2, 2*SMSS)"; recovery
        // then runs with cwnd = ssthresh (inflation is the recovery's business).
        self.ssthresh = (flight / 2).max(2 * mss);
        self.cwnd = self.ssthresh;
        self.bytes_acked = 0;
    }

    fn undo(&mut self, prior_cwnd: usize, prior_ssthresh: usize) {
        // As Linux's tcp_undo_cwnd_reduction with tcp_reno_undo_cwnd.
        self.cwnd = self.cwnd.max(prior_cwnd);
        self.ssthresh = self.ssthresh.max(prior_ssthresh);
        self.bytes_acked = 0;
    }

    fn on_rto(&mut self, _now: Instant, flight: usize, mss: usize) {
        // RFC 5681 §3.1: ssthresh as above, and "cwnd MUST be set to no more
        // than the loss window, LW, which equals 1 full-sized segment".
        self.ssthresh = (flight / 2).max(2 * mss);
        self.cwnd = mss;
        self.bytes_acked = 0;
    }

    fn cwnd(&self) -> usize {
        self.cwnd
    }
    fn ssthresh(&self) -> usize {
        self.ssthresh
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slow_start_then_avoidance() {
        let mut c = NewReno::new(10 * 1000);
        c.on_ack(Instant::ZERO, 2000, None, 1000, true);
        assert_eq!(c.cwnd(), 12_000);
        c.on_congestion_event(Instant::ZERO, 12_000, 1000);
        assert_eq!((c.cwnd(), c.ssthresh()), (6000, 6000));
        for _ in 0..6 {
            c.on_ack(Instant::ZERO, 1000, None, 1000, true);
        }
        assert_eq!(c.cwnd(), 7000);
        c.on_ack(Instant::ZERO, 1000, None, 1000, false);
        c.on_rto(Instant::ZERO, 7000, 1000);
        assert_eq!((c.cwnd(), c.ssthresh()), (1000, 3500));
    }
}
