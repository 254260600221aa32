//! Round-trip time estimation and the retransmission timeout (RFC 6298).

use crate::time::Duration;

/// Clock granularity G: our timestamps tick in milliseconds.
const GRANULARITY: Duration = Duration::from_millis(1);

#[derive(Clone, Copy, Debug)]
pub(crate) struct RttEstimator {
    srtt: Option<Duration>,
    rttvar: Duration,
    /// The RTO before backoff.
    base_rto: Duration,
    backoff: u32,
    min_rto: Duration,
    max_rto: Duration,
}

impl RttEstimator {
    pub(crate) fn new(initial_rto: Duration, min_rto: Duration, max_rto: Duration) -> RttEstimator {
        RttEstimator { srtt: None, rttvar: Duration::ZERO, base_rto: initial_rto, backoff: 0, min_rto, max_rto }
    }

    pub(crate) fn srtt(&self) -> Option<Duration> {
        self.srtt
    }

    /// The current RTO, including exponential backoff.
    pub(crate) fn rto(&self) -> Duration {
        let factor = 1u32 << self.backoff.min(16);
        self.base_rto.saturating_mul(factor).min(self.max_rto)
    }

    pub(crate) fn on_sample(&mut self, r: Duration) {
        match self.srtt {
            // RFC 6298 §2.2: "When the first RTT measurement R is made, the host
            // MUST set SRTT <- R, RTTVAR <- R/2, RTO <- SRTT + max (G, K*RTTVAR)"
            None => {
                self.srtt = Some(r);
                self.rttvar = r / 2;
            }
            // RFC 6298 §2.3: "RTTVAR <- (1 - beta) * RTTVAR + beta * |SRTT - R'|,
            // SRTT <- (1 - alpha) * SRTT + alpha * R'" with alpha 1/8, beta 1/4.
            Some(srtt) => {
                let delta = srtt.abs_diff(r);
                self.rttvar = (self.rttvar * 3 + delta) / 4;
                self.srtt = Some((srtt * 7 + r) / 8);
            }
        }
        let srtt = self.srtt.unwrap_or(r);
        // RFC 6298 §2.4: "Whenever RTO is computed, if it is less than 1 second,
        // then the RTO SHOULD be rounded up to 1 second" (our floor is tunable).
        self.base_rto = (srtt + GRANULARITY.max(self.rttvar * 4)).clamp(self.min_rto, self.max_rto);
        // Karn: the backed-off RTO is kept "until an acknowledgment for a
        // segment that was not retransmitted arrives"; a valid sample is that.
        self.backoff = 0;
    }

    /// RFC 6298 §5.5: "The host MUST set RTO <- RTO * 2 ("back off the timer")."
    pub(crate) fn back_off(&mut self) {
        if self.rto() < self.max_rto {
            self.backoff += 1;
        }
    }

    /// RFC 6298 §5.7: "If the timer expires awaiting the ACK of a SYN segment
    /// and the TCP implementation is using an RTO less than 3 seconds, the RTO
    /// MUST be re-initialized to 3 seconds when data transmission begins".
    pub(crate) fn syn_was_retransmitted(&mut self) {
        if self.srtt.is_none() {
            self.base_rto = self.base_rto.max(Duration::from_secs(3)).min(self.max_rto);
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
