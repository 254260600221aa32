//! A connection's timers, kept as plain deadlines. The stack only ever sees
//! the earliest one (`Connection::poll_timeout`).

use crate::time::Instant;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Timer {
    /// RFC 6298 retransmission (also SYN and SYN-ACK retransmission).
    Retransmit = 0,
    /// RFC 9293 §3.8.6.3 delayed acknowledgement.
    DelayedAck = 1,
    /// RFC 9293 §3.8.6.1 zero-window probe, and the SWS override timeout.
    Persist = 2,
    /// RFC 9293 §3.8.4 keep-alive.
    Keepalive = 3,
    /// TIME-WAIT expiry, or the FIN-WAIT-2 timeout of a closed socket.
    Close = 4,
    /// RFC 8985 §7.2 tail loss probe timeout (PTO).
    LossProbe = 5,
    /// RFC 8985 §6.2 step 5, the RACK reordering timer: when a segment not
    /// yet old enough to be called lost will be.
    Reorder = 6,
}

const COUNT: usize = 7;
/// The order in which `handle_timeout` runs expired timers. The probe comes
/// before the RTO: the PTO never outlasts the RTO (RFC 8985 §7.2), and when
/// both are due the probe re-arms the RTO instead (§7.3).
pub(crate) const ALL: [Timer; COUNT] = [
    Timer::Reorder,
    Timer::LossProbe,
    Timer::Retransmit,
    Timer::DelayedAck,
    Timer::Persist,
    Timer::Keepalive,
    Timer::Close,
];

/// Deadlines in microseconds; `OFF` marks a stopped timer (half the size of
/// `Option<Instant>`).
#[derive(Clone, Copy, Debug)]
pub(crate) struct TimerSet {
    deadlines: [u64; COUNT],
}

const OFF: u64 = u64::MAX;

impl TimerSet {
    pub(crate) fn new() -> TimerSet {
        TimerSet { deadlines: [OFF; COUNT] }
    }
    pub(crate) fn set(&mut self, timer: Timer, at: Instant) {
        self.deadlines[timer as usize] = at.total_micros().min(OFF - 1);
    }
    /// Sets the timer unless it is already running.
    pub(crate) fn start(&mut self, timer: Timer, at: Instant) {
        if self.deadlines[timer as usize] == OFF {
            self.set(timer, at);
        }
    }
    pub(crate) fn stop(&mut self, timer: Timer) {
        self.deadlines[timer as usize] = OFF;
    }
    pub(crate) fn get(&self, timer: Timer) -> Option<Instant> {
        let at = self.deadlines[timer as usize];
        (at != OFF).then(|| Instant::from_micros(at))
    }
    /// Stops `timer` and reports whether it had expired by `now`.
    pub(crate) fn take_expired(&mut self, timer: Timer, now: Instant) -> bool {
        match self.get(timer) {
            Some(at) if at <= now => {
                self.stop(timer);
                true
            }
            _ => false,
        }
    }
    pub(crate) fn stop_all(&mut self) {
        self.deadlines = [OFF; COUNT];
    }
    pub(crate) fn earliest(&self) -> Option<Instant> {
        let at = *self.deadlines.iter().min().expect("COUNT > 0");
        (at != OFF).then(|| Instant::from_micros(at))
    }
}
