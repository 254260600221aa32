//! CUBIC (RFC 9438).

use super::{slow_start_increase, CongestionControl};
use crate::time::{Duration, Instant};

/// RFC 9438 §5: "C SHOULD be set to 0.4".
const C: f64 = 0.4;
/// RFC 9438 §4.6: "β_cubic SHOULD be set to 0.7".
const BETA: f64 = 0.7;
/// RFC 9438 §4.3: "α_cubic = 3 * (1 - β_cubic) / (1 + β_cubic)".
const ALPHA: f64 = 3.0 * (1.0 - BETA) / (1.0 + BETA);

/// The CUBIC controller (RFC 9438): never grows slower than Reno would
/// (its W_est estimate), with fast convergence.
#[derive(Clone, Debug)]
pub struct Cubic {
    cwnd: usize,
    ssthresh: usize,
    /// W_max in segments: the window just before the last reduction.
    w_max: f64,
    /// Start of the current congestion-avoidance epoch.
    epoch: Option<Instant>,
    /// The epoch's K in seconds (a time to plateau: `f32` is precise enough
    /// and keeps the connection slot small).
    k: f32,
    /// Fractional byte growth carried between ACKs (under one byte).
    carry: f32,
    /// W_est in segments, the Reno-friendly estimate (`f64`: the growth it
    /// adds per ACK is far below an `f32`'s step at large windows).
    w_est: f64,
}

impl Cubic {
    /// A controller in slow start with a window of `initial_cwnd` bytes.
    pub fn new(initial_cwnd: usize) -> Cubic {
        Cubic { cwnd: initial_cwnd, ssthresh: usize::MAX, w_max: 0.0, epoch: None, k: 0.0, carry: 0.0, w_est: 0.0 }
    }

    /// RFC 9438 §4.2: "W_cubic(t) = C * (t - K)^3 + W_max".
    fn w_cubic(&self, t: f64, k: f64) -> f64 {
        C * (t - k).powi(3) + self.w_max
    }

    fn reduce(&mut self, mss: usize) {
        let cwnd_seg = self.cwnd as f64 / mss as f64;
        // RFC 9438 §4.7 (fast convergence): "if (cwnd < W_max) W_max = cwnd *
        // (1 + β_cubic) / 2 else W_max = cwnd".
        self.w_max = if cwnd_seg < self.w_max { cwnd_seg * (1.0 + BETA) / 2.0 } else { cwnd_seg };
        // RFC 9438 §4.6: "ssthresh = cwnd * β_cubic", at least 2 segments.
        self.ssthresh = ((self.cwnd as f64 * BETA) as usize).max(2 * mss);
        self.epoch = None;
        self.carry = 0.0;
    }
}

impl CongestionControl for Cubic {
    fn on_ack(&mut self, now: Instant, acked: usize, srtt: Option<Duration>, mss: usize, cwnd_limited: bool) {
        if !cwnd_limited || mss == 0 {
            return;
        }
        if self.cwnd < self.ssthresh {
            self.cwnd += slow_start_increase(acked, mss);
            return;
        }
        let cwnd_seg = self.cwnd as f64 / mss as f64;
        let start = match self.epoch {
            Some(start) => start,
            None => {
                // RFC 9438 §4.2: "K = cubic_root((W_max - cwnd_epoch) / C)";
                // after a timeout (W_max unset or below cwnd) K is 0 and
                // W_max = cwnd.
                if cwnd_seg < self.w_max {
                    self.k = ((self.w_max - cwnd_seg) / C).cbrt() as f32;
                } else {
                    self.w_max = cwnd_seg;
                    self.k = 0.0;
                }
                *self.epoch.insert(now)
            }
        };
        let k = f64::from(self.k);
        if self.w_est == 0.0 {
            self.w_est = cwnd_seg;
        }
        let t = now.saturating_since(start).as_secs_f64();
        let rtt = srtt.unwrap_or(Duration::from_millis(100)).as_secs_f64();
        let acked_seg = acked as f64 / mss as f64;
        // RFC 9438 §4.3: "W_est = W_est + α_cubic * segments_acked / cwnd".
        self.w_est += ALPHA * acked_seg / cwnd_seg;
        let target = if self.w_cubic(t, k) < self.w_est {
            // "the protocol is in the Reno-friendly region and cwnd SHOULD be
            // set to W_est"
            self.w_est
        } else {
            // §4.4: target = W_cubic(t + RTT), kept within [cwnd, 1.5 * cwnd].
            self.w_cubic(t + rtt, k).clamp(cwnd_seg, 1.5 * cwnd_seg)
        };
        if target > cwnd_seg {
            // "cwnd MUST be incremented by (target - cwnd) / cwnd for each
            // received new ACK", scaled here by the segments it covers.
            let grown = f64::from(self.carry) + (target - cwnd_seg) / cwnd_seg * acked_seg * mss as f64;
            let whole = grown.floor();
            self.carry = (grown - whole) as f32;
            self.cwnd += whole as usize;
        }
    }

    fn on_congestion_event(&mut self, _now: Instant, _flight: usize, mss: usize) {
        self.reduce(mss);
        self.cwnd = self.ssthresh;
        self.w_est = self.cwnd as f64 / mss as f64;
    }

    fn on_rto(&mut self, _now: Instant, _flight: usize, mss: usize) {
        // RFC 9438 §4.8: "CUBIC follows Reno to reduce cwnd [RFC5681] but sets
        // ssthresh using β_cubic"; the next epoch starts with K = 0.
        self.reduce(mss);
        self.w_max = 0.0;
        self.w_est = 0.0;
        self.cwnd = mss;
    }

    fn cwnd(&self) -> usize {
        self.cwnd
    }
    fn ssthresh(&self) -> usize {
        self.ssthresh
    }
    fn undo(&mut self, prior_cwnd: usize, prior_ssthresh: usize) {
        // RFC 9438 §4.9: a spurious congestion event restores the window and
        // threshold from before it. W_max is the window before the
        // reduction (less after fast convergence), so the epoch that starts
        // at the next ACK sits on the curve's plateau (K = 0).
        self.cwnd = self.cwnd.max(prior_cwnd);
        self.ssthresh = self.ssthresh.max(prior_ssthresh);
        self.epoch = None;
        self.w_est = 0.0;
        self.carry = 0.0;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reduces_by_beta_and_regrows_towards_w_max() {
        let mss = 1000;
        let mut c = Cubic::new(100 * mss);
        c.on_congestion_event(Instant::ZERO, 100 * mss, mss);
        assert_eq!(c.cwnd(), 70 * mss);
        let mut now = Instant::ZERO;
        let rtt = Duration::from_millis(50);
        for _ in 0..400 {
            now += rtt;
            let cwnd = c.cwnd();
            c.on_ack(now, cwnd, Some(rtt), mss, true);
        }
        // Plateau around W_max, then probing beyond it.
        assert!(c.cwnd() > 100 * mss, "cwnd {}", c.cwnd());
        c.on_rto(now, c.cwnd(), mss);
        assert_eq!(c.cwnd(), mss);
    }
}
