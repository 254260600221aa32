//! Timer expiry: retransmission (RFC 6298 §5), delayed ACK, persist,
//! keep-alive, TIME-WAIT and the orphaned FIN-WAIT-2 timeout.

use super::{bump, ConnError, Connection};
use crate::tcp::congestion::CongestionControl;
use crate::tcp::state::State;
use crate::tcp::timers::{Timer, ALL};
use crate::time::Instant;

impl Connection {
    /// The earliest deadline at which `handle_timeout` has work, if any.
    pub fn poll_timeout(&self) -> Option<Instant> {
        self.timers.earliest()
    }

    /// Runs every timer that has expired by `now`. Calling it again with the
    /// same `now` (or early) does nothing. Follow with `poll_transmit`.
    pub fn handle_timeout(&mut self, now: Instant) {
        for timer in ALL {
            if self.timers.take_expired(timer, now) {
                self.on_timer(timer, now);
            }
        }
    }

    fn on_timer(&mut self, timer: Timer, now: Instant) {
        match timer {
            Timer::Retransmit => self.on_retransmit_timeout(now),
            Timer::Reorder => self.detect_losses(now),
            // RFC 8985 §7.3: the probe goes out from `poll_transmit`; one per
            // episode ("only sends one TLP per episode").
            Timer::LossProbe => {
                self.tlp_due = self.loss_probe_allowed() && self.tlp.may_probe();
                if self.tlp_due {
                    // §7.3: "After attempting to send a loss probe ... the
                    // sender MUST re-arm the RTO timer". Now, so that an RTO
                    // due at the same instant does not preempt the probe.
                    self.timers.set(Timer::Retransmit, now + self.rtt.rto());
                }
            }
            Timer::DelayedAck => self.ack_now = true,
            Timer::Persist => {
                self.probe_due = true;
                self.persist_backoff = self.persist_backoff.saturating_add(1);
            }
            Timer::Keepalive => self.on_keepalive_timeout(now),
            // TIME-WAIT: "When the time-wait timeout expires, ... delete the TCB,
            // enter the CLOSED state". Also the orphaned FIN-WAIT-2 timeout.
            Timer::Close => self.enter_closed(None),
        }
    }

    fn on_retransmit_timeout(&mut self, now: Instant) {
        match self.state {
            State::SynSent | State::SynReceived => {
                let limit = if self.state == State::SynSent { self.cfg.syn_retries } else { self.cfg.synack_retries };
                if u32::from(self.syn_retransmits) >= limit {
                    self.enter_closed(Some(ConnError::TimedOut));
                    return;
                }
                self.syn_retransmits = self.syn_retransmits.saturating_add(1);
                bump(&mut self.stats.rto_expirations);
                self.rtt.back_off();
                self.set_timed(None);
                self.syn_due = true;
            }
            State::Closed | State::Listen | State::TimeWait => {}
            _ => {
                if !self.snd_max.gt(self.snd_una) {
                    return;
                }
                if u32::from(self.rto_in_row) >= self.cfg.max_retransmits {
                    self.enter_closed(Some(ConnError::TimedOut));
                    return;
                }
                self.rto_in_row = self.rto_in_row.saturating_add(1);
                bump(&mut self.stats.rto_expirations);
                let mss = self.eff_mss;
                let flight = self.snd_max.since(self.snd_una) as usize;
                // RFC 5681 §3.1 (4): "ssthresh = max (FlightSize / 2, 2*SMSS)"
                // and cwnd to the loss window (the controller decides).
                self.cc.on_rto(now, flight, mss);
                self.recovery.on_rto(self.snd_max);
                // The RTO's own response supersedes a probe episode.
                self.tlp.end_episode();
                self.tlp_due = false;
                self.timers.stop(Timer::LossProbe);
                self.timers.stop(Timer::Reorder);
                // RFC 6298 §5.4: "Retransmit the earliest segment that has not
                // been acknowledged by the TCP receiver." Everything outstanding
                // is resent from SND.UNA as the window reopens (go-back-N).
                self.snd_nxt = self.snd_una;
                self.set_timed(None);
                // §5.5: "The host MUST set RTO <- RTO * 2 ("back off the timer")".
                self.rtt.back_off();
            }
        }
    }

    fn on_keepalive_timeout(&mut self, now: Instant) {
        if !self.keepalive || !matches!(self.state, State::Established | State::CloseWait) {
            return;
        }
        // Only an idle connection is probed; otherwise the RTO watches it.
        if self.snd_max.gt(self.snd_una) || self.send_buf.len() > 0 {
            self.timers.set(Timer::Keepalive, now + self.cfg.keepalive_idle);
            return;
        }
        if u32::from(self.keepalive_probes) >= self.cfg.keepalive_count {
            self.enter_closed(Some(ConnError::TimedOut));
            return;
        }
        self.keepalive_probes = self.keepalive_probes.saturating_add(1);
        self.keepalive_due = true;
        self.timers.set(Timer::Keepalive, now + self.cfg.keepalive_interval);
    }
}
