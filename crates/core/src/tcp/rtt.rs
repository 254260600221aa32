//! Round-trip time estimation and the retransmission timeout (RFC 6298).

use crate::time::Duration;

/// Clock granularity G: our timestamps tick in milliseconds.
const GRANULARITY: Duration = Duration::from_millis(1);

/// Durations are kept as `u32` microseconds (up to 71 minutes, far above any
/// RTO bound) so that a connection's state stays small; see [`Micros`].
#[derive(Clone, Copy, Debug)]
pub(crate) struct RttEstimator {
    /// `NONE` until the first sample.
    srtt: Micros,
    rttvar: Micros,
    /// The RTO before backoff.
    base_rto: Micros,
    backoff: u32,
    min_rto: Micros,
    max_rto: Micros,
}

/// A duration in microseconds, saturating at `u32::MAX - 1`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Micros(u32);

impl Micros {
    const NONE: Micros = Micros(u32::MAX);
    fn of(d: Duration) -> Micros {
        Micros(d.as_micros().min(u128::from(u32::MAX - 1)) as u32)
    }
    fn get(self) -> Duration {
        Duration::from_micros(u64::from(self.0))
    }
}

impl RttEstimator {
    pub(crate) fn new(initial_rto: Duration, min_rto: Duration, max_rto: Duration) -> RttEstimator {
        RttEstimator {
            srtt: Micros::NONE,
            rttvar: Micros(0),
            base_rto: Micros::of(initial_rto),
            backoff: 0,
            min_rto: Micros::of(min_rto),
            max_rto: Micros::of(max_rto),
        }
    }

    pub(crate) fn srtt(&self) -> Option<Duration> {
        (self.srtt != Micros::NONE).then(|| self.srtt.get())
    }

    /// The current RTO, including exponential backoff.
    pub(crate) fn rto(&self) -> Duration {
        let factor = 1u32 << self.backoff.min(16);
        self.base_rto.get().saturating_mul(factor).min(self.max_rto.get())
    }

    pub(crate) fn on_sample(&mut self, r: Duration) {
        let r = Micros::of(r).get();
        let (srtt, rttvar) = match self.srtt() {
            // RFC 6298 §2.2: "When the first RTT measurement R is made, the host
            // MUST set SRTT <- R, RTTVAR <- R/2, RTO <- SRTT + max (G, K*RTTVAR)"
            None => (r, r / 2),
            // RFC 6298 §2.3: "RTTVAR <- (1 - beta) * RTTVAR + beta * |SRTT - R'|,
            // SRTT <- (1 - alpha) * SRTT + alpha * R'" with alpha 1/8, beta 1/4.
            Some(srtt) => {
                let delta = srtt.abs_diff(r);
                ((srtt * 7 + r) / 8, (self.rttvar.get() * 3 + delta) / 4)
            }
        };
        self.srtt = Micros::of(srtt);
        self.rttvar = Micros::of(rttvar);
        // RFC 6298 §2.4: "Whenever RTO is computed, if it is less than 1 second,
        // then the RTO SHOULD be rounded up to 1 second" (our floor is tunable).
        let rto = (srtt + GRANULARITY.max(rttvar * 4)).clamp(self.min_rto.get(), self.max_rto.get());
        self.base_rto = Micros::of(rto);
        // Karn: the backed-off RTO is kept "until an acknowledgment for a
        // segment that was not retransmitted arrives"; a valid sample is that.
        self.backoff = 0;
    }

    /// RFC 6298 §5.5: "The host MUST set RTO <- RTO * 2 ("back off the timer")."
    pub(crate) fn back_off(&mut self) {
        if self.rto() < self.max_rto.get() {
            self.backoff += 1;
        }
    }

    /// RFC 6298 §5.7: "If the timer expires awaiting the ACK of a SYN segment
    /// and the TCP implementation is using an RTO less than 3 seconds, the RTO
    /// MUST be re-initialized to 3 seconds when data transmission begins".
    pub(crate) fn syn_was_retransmitted(&mut self) {
        if self.srtt().is_none() {
            self.base_rto = Micros::of(self.base_rto.get().max(Duration::from_secs(3)).min(self.max_rto.get()));
        }
        self.backoff = 0;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn first_sample_and_backoff() {
        let mut r = RttEstimator::new(Duration::from_secs(1), Duration::from_millis(200), Duration::from_secs(60));
        assert_eq!(r.rto(), Duration::from_secs(1));
        r.on_sample(Duration::from_millis(100));
        // 100 + 4 * 50 = 300 ms
        assert_eq!(r.rto(), Duration::from_millis(300));
        r.back_off();
        r.back_off();
        assert_eq!(r.rto(), Duration::from_millis(1200));
        for _ in 0..20 {
            r.back_off();
        }
        assert_eq!(r.rto(), Duration::from_secs(60));
        r.on_sample(Duration::from_millis(100));
        assert!(r.rto() < Duration::from_secs(1));
    }

    #[test]
    fn min_rto_applies() {
        let mut r = RttEstimator::new(Duration::from_secs(1), Duration::from_millis(200), Duration::from_secs(60));
        r.on_sample(Duration::from_millis(1));
        assert_eq!(r.rto(), Duration::from_millis(200));
    }
}
