//! RACK, time-based loss detection (RFC 8985 §6), for peers that SACK.
//!
//! RFC 6675 declares a segment lost when enough data above it was SACKed;
//! a retransmission that is lost again is never declared lost and waits for
//! the RTO. RACK instead remembers when each outstanding segment was last
//! sent, and declares a segment lost once a segment sent *after* it was
//! delivered and a round trip (plus a reordering window) has passed since it
//! was sent. A lost retransmission is then found like any other loss.
//!
//! The per-segment transmit times live in [`SentLog`]: the outstanding
//! sequence space `[SND.UNA, SND.MAX)` as at most [`CAPACITY`] contiguous
//! runs, each sent at one instant with the same state (in flight, SACKed,
//! lost; ever retransmitted). Segments sent in one burst share an instant
//! and merge into one run, so a full window usually takes a few dozen runs.
//! When the log is full, the two adjacent runs that are most alike merge,
//! keeping the later transmit time: a run then looks sent *later* than some
//! of its bytes were, which can only delay a loss verdict, never invent one.
//! Every operation is O(CAPACITY). The log is boxed while data is
//! outstanding and freed when everything is acknowledged.

use super::segment::SackBlock;
use super::seq::SeqNumber;
use crate::time::{Duration, Instant};

/// Runs kept per connection.
pub(crate) const CAPACITY: usize = 64;

/// RFC 8985 §6.2: "DupThresh ... 3".
const DUP_THRESH: usize = 3;

/// RFC 8985 §6.2 step 4: after a D-SACK round, "reset the window after 16
/// DSACK-free recoveries".
const REO_WND_PERSIST: u8 = 16;

/// One run of sequence space, sent at one instant. Its start is the end of
/// the run before it (or the log's base, SND.UNA).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Run {
    end: SeqNumber,
    /// RFC 8985 §5.2 "Segment.xmit_ts": the most recent transmission.
    sent: Instant,
    state: RunState,
    /// RFC 8985 §5.2 "Segment.retransmitted".
    retransmitted: bool,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum RunState {
    InFlight,
    Sacked,
    /// RFC 8985 §5.2 "Segment.lost": declared lost and not resent since.
    Lost,
}

/// The transmit times of the outstanding data, and RACK's per-flight state
/// (RFC 8985 §5.3), boxed together.
#[derive(Debug)]
pub(crate) struct SentLog {
    runs: [Run; CAPACITY],
    len: usize,
    /// SND.UNA: where the first run starts.
    base: SeqNumber,
    /// "RACK.xmit_ts", "RACK.end_seq": the most recently sent segment that
    /// has been delivered.
    xmit_ts: Option<(Instant, SeqNumber)>,
    /// "RACK.rtt": the RTT of that segment's delivery.
    rtt: Duration,
    /// "RACK.fack": the highest sequence number delivered.
    fack: SeqNumber,
    /// "RACK.dsack_round": SND.NXT when a D-SACK last grew the window.
    dsack_round: Option<SeqNumber>,
}

/// RACK state that outlives a flight (kept outside the box, so an idle
/// connection keeps it without the log).
#[derive(Clone, Copy, Debug)]
pub(crate) struct RackHistory {
    /// "RACK.min_RTT" in microseconds (`u32::MAX`: none yet). A plain
    /// minimum since the connection began, not a windowed one.
    min_rtt: u32,
    /// "RACK.reordering_seen".
    reordering_seen: bool,
    /// "RACK.reo_wnd_mult" and "RACK.reo_wnd_persist".
    reo_wnd_mult: u8,
    reo_wnd_persist: u8,
    /// How late (µs) a reordered segment arrived after RACK would have
    /// declared it lost with a window of zero; the largest seen. See
    /// `SentLog::reo_wnd`.
    reo_extent: u32,
}

impl Default for RackHistory {
    fn default() -> Self {
        RackHistory { min_rtt: u32::MAX, reordering_seen: false, reo_wnd_mult: 1, reo_wnd_persist: 0, reo_extent: 0 }
    }
}

impl RackHistory {
    fn min_rtt(&self) -> Option<Duration> {
        (self.min_rtt != u32::MAX).then(|| Duration::from_micros(u64::from(self.min_rtt)))
    }

    /// RFC 8985 §6.2 step 4, the part run on leaving recovery: "Else if
    /// exiting Fast or RTO recovery: RACK.reo_wnd_persist -= 1; If
    /// RACK.reo_wnd_persist <= 0: RACK.reo_wnd_mult = 1".
    pub(crate) fn on_recovery_exit(&mut self) {
        self.reo_wnd_persist = self.reo_wnd_persist.saturating_sub(1);
        if self.reo_wnd_persist == 0 {
            self.reo_wnd_mult = 1;
            self.reo_extent /= 2;
        }
    }
}

/// What an ACK carried, as RACK needs it.
pub(crate) struct AckInfo<'a> {
    pub(crate) now: Instant,
    /// The cumulative ACK (already checked acceptable).
    pub(crate) ack: SeqNumber,
    /// Its SACK blocks other than a D-SACK, sorted by start.
    pub(crate) sacked: &'a [SackBlock],
    pub(crate) dsack: bool,
    /// The echoed timestamp, as an instant on our clock (ms precision).
    pub(crate) echoed: Option<Instant>,
    pub(crate) snd_nxt: SeqNumber,
}

impl SentLog {
    /// Blank again, starting at `base`, as if just made (a reused log).
    pub(crate) fn reset(&mut self, base: SeqNumber) {
        // Only the scalar state: nothing reads `runs` past `len`, and
        // rewriting the 64 runs (built on the stack, then copied in) cost
        // about 1,100 instructions per request/response. Destructured so a
        // new field cannot be forgotten here.
        let SentLog { runs: _, len, base: b, xmit_ts, rtt, fack, dsack_round } = self;
        *len = 0;
        *b = base;
        *xmit_ts = None;
        *rtt = Duration::ZERO;
        *fack = base;
        *dsack_round = None;
    }

    pub(crate) fn new(base: SeqNumber) -> SentLog {
        let blank = Run { end: base, sent: Instant::ZERO, state: RunState::InFlight, retransmitted: false };
        SentLog {
            runs: [blank; CAPACITY],
            len: 0,
            base,
            xmit_ts: None,
            rtt: Duration::ZERO,
            fack: base,
            dsack_round: None,
        }
    }

    fn start_of(&self, i: usize) -> SeqNumber {
        if i == 0 {
            self.base
        } else {
            self.runs[i - 1].end
        }
    }

    fn end(&self) -> SeqNumber {
        if self.len == 0 {
            self.base
        } else {
            self.runs[self.len - 1].end
        }
    }

    /// `[start, end)` went out at `now` (new data, a retransmission, or a
    /// go-back-N resend).
    pub(crate) fn on_sent(&mut self, start: SeqNumber, end: SeqNumber, now: Instant) {
        let start = start.max(self.base);
        if !start.lt(end) {
            return;
        }
        let log_end = self.end();
        if start.lt(log_end) {
            // Resent: those runs now carry this transmit time.
            let upto = end.min(log_end);
            self.split_at(start);
            self.split_at(upto);
            for i in 0..self.len {
                let s = self.start_of(i);
                if s.ge(start) && self.runs[i].end.le(upto) {
                    let r = &mut self.runs[i];
                    r.sent = now;
                    r.retransmitted = true;
                    r.state = RunState::InFlight;
                }
            }
            self.merge_alike();
        }
        if end.gt(log_end) {
            let first_new = start.max(log_end);
            if first_new != log_end {
                // A gap cannot happen (data goes out in order); stay consistent.
                return;
            }
            let run = Run { end, sent: now, state: RunState::InFlight, retransmitted: false };
            if self.len > 0 && Self::alike(&self.runs[self.len - 1], &run) {
                self.runs[self.len - 1].end = end;
            } else {
                self.make_room();
                self.runs[self.len] = run;
                self.len += 1;
            }
        }
    }

    /// Two runs that may become one without losing anything.
    fn alike(a: &Run, b: &Run) -> bool {
        a.state == b.state && a.retransmitted == b.retransmitted && (a.sent == b.sent || a.state != RunState::InFlight)
    }

    /// Merges neighbours that are alike (transmit times of SACKed or lost
    /// runs no longer matter).
    fn merge_alike(&mut self) {
        let mut i = 1;
        while i < self.len {
            if Self::alike(&self.runs[i - 1], &self.runs[i]) {
                self.merge(i - 1);
            } else {
                i += 1;
            }
        }
    }

    /// Joins runs `i` and `i + 1`, keeping the later transmit time (a loss
    /// verdict can only come later). The result is SACKed or lost only if
    /// both were.
    fn merge(&mut self, i: usize) {
        let (a, b) = (self.runs[i], self.runs[i + 1]);
        let state = if a.state == b.state { a.state } else { RunState::InFlight };
        self.runs[i] =
            Run { end: b.end, sent: a.sent.max(b.sent), state, retransmitted: a.retransmitted || b.retransmitted };
        self.runs.copy_within(i + 2..self.len, i + 1);
        self.len -= 1;
    }

    /// Frees one slot if the log is full: merges the most alike neighbours.
    fn make_room(&mut self) {
        if self.len < CAPACITY {
            return;
        }
        let cost = |a: &Run, b: &Run| -> u64 {
            if a.state != b.state || a.retransmitted != b.retransmitted {
                u64::MAX
            } else if a.state != RunState::InFlight {
                0
            } else {
                a.sent.max(b.sent).total_micros() - a.sent.min(b.sent).total_micros()
            }
        };
        let best = (0..self.len - 1).min_by_key(|&i| cost(&self.runs[i], &self.runs[i + 1])).unwrap_or(0);
        self.merge(best);
    }

    /// Makes `at` a run boundary (if it lies inside a run).
    fn split_at(&mut self, at: SeqNumber) {
        for i in 0..self.len {
            let s = self.start_of(i);
            if s.lt(at) && at.lt(self.runs[i].end) {
                self.make_room();
                // `make_room` may have merged run `i` with a neighbour; find it again.
                let Some(j) = (0..self.len).find(|&j| self.start_of(j).lt(at) && at.lt(self.runs[j].end)) else {
                    return;
                };
                self.runs.copy_within(j..self.len, j + 1);
                self.len += 1;
                self.runs[j].end = at;
                return;
            }
        }
    }

    /// RFC 8985 §6.2 steps 1-3 for one ACK: the runs it newly delivered
    /// (cumulatively or selectively) update RACK.xmit_ts/end_seq, RACK.rtt,
    /// RACK.min_RTT, RACK.fack and RACK.reordering_seen; and step 4's D-SACK
    /// bookkeeping.
    pub(crate) fn on_ack(&mut self, a: &AckInfo, history: &mut RackHistory) {
        // Cumulatively acknowledged runs leave the log.
        if a.ack.gt(self.base) {
            let ack = a.ack.min(self.end());
            let mut gone = 0;
            while gone < self.len && self.runs[gone].end.le(ack) {
                let r = self.runs[gone];
                if r.state != RunState::Sacked {
                    self.delivered(r, r.end, a, history);
                }
                gone += 1;
            }
            // Part of the next run was acknowledged too.
            if gone < self.len && self.start_of(gone).lt(ack) && self.runs[gone].state != RunState::Sacked {
                let r = self.runs[gone];
                self.delivered(r, ack, a, history);
            }
            self.runs.copy_within(gone..self.len, 0);
            self.len -= gone;
            self.base = a.ack;
        }
        for &(s, e) in a.sacked {
            let (s, e) = (s.max(self.base), e.min(self.end()));
            if !s.lt(e) {
                continue;
            }
            self.split_at(s);
            self.split_at(e);
            for i in 0..self.len {
                if self.start_of(i).ge(s) && self.runs[i].end.le(e) && self.runs[i].state != RunState::Sacked {
                    let r = self.runs[i];
                    self.runs[i].state = RunState::Sacked;
                    self.delivered(r, r.end, a, history);
                }
            }
            self.merge_alike();
        }
        // Step 4: "If RACK.dsack_round is not None AND SND.UNA >=
        // RACK.dsack_round: RACK.dsack_round = None ... If RACK.dsack_round is
        // None AND any DSACK option is present on latest received ACK:
        // RACK.dsack_round = SND.NXT; RACK.reo_wnd_mult += 1;
        // RACK.reo_wnd_persist = 16".
        if self.dsack_round.is_some_and(|r| a.ack.ge(r)) {
            self.dsack_round = None;
        }
        if self.dsack_round.is_none() && a.dsack {
            self.dsack_round = Some(a.snd_nxt);
            history.reo_wnd_mult = history.reo_wnd_mult.saturating_add(1);
            history.reo_wnd_persist = REO_WND_PERSIST;
        }
    }

    /// One newly delivered run (up to `end`).
    fn delivered(&mut self, r: Run, end: SeqNumber, a: &AckInfo, history: &mut RackHistory) {
        // Step 3, RACK_detect_reordering(): "If Segment.end_seq > RACK.fack:
        // RACK.fack = Segment.end_seq; Else if Segment.end_seq < RACK.fack AND
        // Segment.retransmitted is FALSE: RACK.reordering_seen = TRUE".
        if end.gt(self.fack) {
            self.fack = end;
        } else if end.lt(self.fack) && !r.retransmitted {
            history.reordering_seen = true;
            // How much window this arrival needed: it came this long after
            // the RACK.rtt of a segment sent later than it.
            if self.xmit_ts.is_some_and(|(t, seq)| sent_after(t, seq, r.sent, end)) {
                let late = a.now.saturating_since(r.sent).saturating_sub(self.rtt);
                let late = late.as_micros().min(u128::from(u32::MAX)) as u32;
                history.reo_extent = history.reo_extent.max(late);
                history.reo_wnd_persist = REO_WND_PERSIST;
            }
        }
        // Step 2, RACK_update(): "rtt = Now() - Segment.xmit_ts; If
        // Segment.retransmitted is TRUE: If ACK.ts_option.echo_reply <
        // Segment.xmit_ts: Continue; If rtt < RACK.min_RTT: Continue".
        let rtt = a.now.saturating_since(r.sent);
        if r.retransmitted {
            if a.echoed.is_some_and(|e| e.total_millis() < r.sent.total_millis()) {
                return;
            }
            if history.min_rtt().is_some_and(|m| rtt < m) {
                return;
            }
        }
        // Step 1: "Update RACK.min_RTT".
        let micros = rtt.as_micros().min(u128::from(u32::MAX - 1)) as u32;
        history.min_rtt = history.min_rtt.min(micros);
        // "RACK.rtt = rtt; If RACK_sent_after(Segment.xmit_ts,
        // Segment.end_seq, RACK.xmit_ts, RACK.end_seq): RACK.xmit_ts =
        // Segment.xmit_ts; RACK.end_seq = Segment.end_seq".
        self.rtt = rtt;
        if self.xmit_ts.is_none_or(|(t, seq)| sent_after(r.sent, end, t, seq)) {
            self.xmit_ts = Some((r.sent, end));
        }
    }

    /// RFC 8985 §6.2 step 4 RACK_update_reo_wnd(), the window itself: "If
    /// RACK.reordering_seen is FALSE: If in Fast or RTO recovery: Return 0;
    /// Else if RACK.segs_sacked >= DupThresh: Return 0. Return min(
    /// RACK.min_RTT * RACK.reo_wnd_mult / 4, SRTT)".
    ///
    /// One departure: the window is at least the lateness of the worst
    /// reordering measured (`RackHistory::reo_extent`, still capped by SRTT).
    /// A segment that overtakes others on a fast path gives both a short
    /// RACK.rtt and a small min_RTT, so min_RTT / 4 can be far less than
    /// how late the overtaken segments arrive; each such event would then be
    /// a spurious loss, and without undo (RFC 8985 §9.4's DSACK-based
    /// recovery of cwnd is not implemented) every one costs a window
    /// reduction. The RFC's D-SACK growth of the window reacts too, but only
    /// after the spurious retransmissions, and only with a D-SACKing peer.
    fn reo_wnd(&self, history: &RackHistory, in_recovery: bool, srtt: Option<Duration>, mss: usize) -> Duration {
        if !history.reordering_seen && (in_recovery || self.sacked_bytes() >= DUP_THRESH * mss) {
            return Duration::ZERO;
        }
        let Some(min_rtt) = history.min_rtt() else { return Duration::ZERO };
        let measured = Duration::from_micros(u64::from(history.reo_extent));
        let wnd = (min_rtt * u32::from(history.reo_wnd_mult) / 4).max(measured);
        srtt.map_or(wnd, |s| wnd.min(s))
    }

    /// RFC 8985 §6.2 step 5 RACK_detect_loss(): marks runs lost and returns
    /// whether any was newly marked, and when to look again (the RACK
    /// reordering timer) if some run may still turn out lost.
    pub(crate) fn detect_loss(
        &mut self,
        now: Instant,
        history: &RackHistory,
        in_recovery: bool,
        srtt: Option<Duration>,
        mss: usize,
    ) -> (bool, Option<Instant>) {
        let Some((xmit_ts, end_seq)) = self.xmit_ts else { return (false, None) };
        let reo_wnd = self.reo_wnd(history, in_recovery, srtt, mss);
        let mut marked = false;
        let mut again: Option<Instant> = None;
        for r in self.runs[..self.len].iter_mut() {
            // "For each Segment, not acknowledged yet: If RACK_sent_after(
            // RACK.xmit_ts, RACK.end_seq, Segment.xmit_ts, Segment.end_seq):
            // remaining = Segment.xmit_ts + RACK.rtt + RACK.reo_wnd - Now();
            // If remaining <= 0: Segment.lost = TRUE ... Else: timeout =
            // max(remaining, timeout)".
            if r.state != RunState::InFlight || !sent_after(xmit_ts, end_seq, r.sent, r.end) {
                continue;
            }
            // A resend is not judged in the instant it left: a delivery in that
            // same instant (RACK.rtt 0: a coarse clock, or two stacks in one
            // process sharing a poll's time) cannot tell whether what was
            // delivered left before or after it — RACK_sent_after's
            // sequence tie-break assumes one instant's segments left in
            // sequence order, which a resend breaks. Judged so, every
            // duplicate ACK marked the resend lost and sent it again, with
            // no time passing (the sequence fuzzer found it). A later
            // delivery or the RTO judges it instead.
            if r.retransmitted && r.sent >= now {
                continue;
            }
            let deadline = r.sent + self.rtt + reo_wnd;
            if deadline <= now {
                r.state = RunState::Lost;
                marked = true;
            } else {
                again = Some(again.map_or(deadline, |a| a.max(deadline)));
            }
        }
        if marked {
            self.merge_alike();
        }
        (marked, again)
    }

    /// The retransmission timer fired: RFC 2018 §8 forgets SACKed bits, and
    /// the go-back-N resend that follows covers every lost run.
    pub(crate) fn on_rto(&mut self) {
        for r in self.runs[..self.len].iter_mut() {
            r.state = RunState::InFlight;
        }
        self.merge_alike();
    }

    fn sacked_bytes(&self) -> usize {
        (0..self.len)
            .filter(|&i| self.runs[i].state == RunState::Sacked)
            .map(|i| self.runs[i].end.since(self.start_of(i)) as usize)
            .sum()
    }

    /// Octets in flight: neither SACKed nor lost (RFC 8985 leaves the
    /// in-flight estimate to RFC 6675's "pipe"; a lost run resent is in
    /// flight again).
    pub(crate) fn in_flight(&self) -> usize {
        (0..self.len)
            .filter(|&i| self.runs[i].state == RunState::InFlight)
            .map(|i| self.runs[i].end.since(self.start_of(i)) as usize)
            .sum()
    }

    /// The lowest lost run not yet resent, as `(seq, end)`.
    pub(crate) fn first_lost(&self) -> Option<(SeqNumber, SeqNumber)> {
        (0..self.len).find(|&i| self.runs[i].state == RunState::Lost).map(|i| (self.start_of(i), self.runs[i].end))
    }

    #[cfg(test)]
    fn runs(&self) -> Vec<(u32, u32, u64, char, bool)> {
        (0..self.len)
            .map(|i| {
                let r = self.runs[i];
                let c = match r.state {
                    RunState::InFlight => 'f',
                    RunState::Sacked => 's',
                    RunState::Lost => 'l',
                };
                (self.start_of(i).0, r.end.0, r.sent.total_millis(), c, r.retransmitted)
            })
            .collect()
    }
}

/// RFC 8985 §6.2 RACK_sent_after(t1, seq1, t2, seq2): "If t1 > t2: Return
/// true; Else if t1 == t2 AND seq1 > seq2: Return true; Else: Return false".
fn sent_after(t1: Instant, seq1: SeqNumber, t2: Instant, seq2: SeqNumber) -> bool {
    t1 > t2 || (t1 == t2 && seq1.gt(seq2))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn s(n: u32) -> SeqNumber {
        SeqNumber(n)
    }
    fn ms(n: u64) -> Instant {
        Instant::from_millis(n)
    }
    fn ack<'a>(now: u64, ack: u32, sacked: &'a [SackBlock]) -> AckInfo<'a> {
        AckInfo { now: ms(now), ack: s(ack), sacked, dsack: false, echoed: None, snd_nxt: s(1000) }
    }

    #[test]
    fn runs_merge_per_burst_and_split_on_resend_and_sack() {
        let mut log = SentLog::new(s(0));
        log.on_sent(s(0), s(10), ms(1));
        log.on_sent(s(10), s(20), ms(1));
        log.on_sent(s(20), s(30), ms(2));
        assert_eq!(log.runs(), vec![(0, 20, 1, 'f', false), (20, 30, 2, 'f', false)]);
        let mut h = RackHistory::default();
        log.on_ack(&ack(50, 0, &[(s(20), s(30))]), &mut h);
        assert_eq!(log.runs(), vec![(0, 20, 1, 'f', false), (20, 30, 2, 's', false)]);
        assert_eq!(log.xmit_ts, Some((ms(2), s(30))));
        assert_eq!(h.min_rtt(), Some(Duration::from_millis(48)));
        log.on_sent(s(5), s(10), ms(60));
        assert_eq!(
            log.runs(),
            vec![(0, 5, 1, 'f', false), (5, 10, 60, 'f', true), (10, 20, 1, 'f', false), (20, 30, 2, 's', false)]
        );
        log.on_ack(&ack(70, 10, &[]), &mut h);
        assert_eq!(log.runs(), vec![(10, 20, 1, 'f', false), (20, 30, 2, 's', false)]);
    }

    /// Arbitrary sends, resends, ACKs and SACK blocks (bogus ones included):
    /// no panic, the runs stay contiguous from SND.UNA and within capacity.
    #[test]
    fn random_operations_keep_the_log_consistent() {
        let mut x = 0x2545_f491_4f6c_dd1du64;
        let mut rnd = |n: u32| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            (x % u64::from(n)) as u32
        };
        let mut h = RackHistory::default();
        let base = u32::MAX - 5000; // wraps around 0
        let mut log = SentLog::new(s(base));
        let (mut una, mut max) = (base, base);
        for step in 0..20_000u64 {
            let now = ms(step);
            match rnd(6) {
                0 | 1 => {
                    let end = max.wrapping_add(1 + rnd(3000));
                    log.on_sent(s(max), s(end), now);
                    max = end;
                }
                2 => {
                    let from = una.wrapping_add(rnd(max.wrapping_sub(una) + 1));
                    let end = from.wrapping_add(rnd(4000));
                    log.on_sent(s(from), s(end), now);
                    max = s(max).max(s(end)).0;
                }
                3 => {
                    let ack = una.wrapping_add(rnd(max.wrapping_sub(una) + 1));
                    log.on_ack(&ack_at(step, ack, &[], max), &mut h);
                    una = ack;
                }
                4 => {
                    let a = rnd(u32::MAX).wrapping_add(if rnd(2) == 0 { 0 } else { una });
                    let blocks = [(s(a), s(a.wrapping_add(rnd(5000)))), (s(una.wrapping_add(rnd(9000))), s(max))];
                    log.on_ack(&ack_at(step, una, &blocks, max), &mut h);
                }
                _ => {
                    log.detect_loss(now, &h, rnd(2) == 0, Some(Duration::from_millis(u64::from(rnd(50)))), 1000);
                }
            }
            assert!(log.len <= CAPACITY);
            assert_eq!(log.base, s(una));
            if log.len > 0 {
                assert_eq!(log.end(), s(max));
            }
            for i in 0..log.len {
                assert!(log.start_of(i).lt(log.runs[i].end), "empty run {i}: {:?}", log.runs());
            }
            assert!(log.in_flight() <= max.wrapping_sub(una) as usize);
        }
    }

    fn ack_at<'a>(now: u64, ack: u32, sacked: &'a [SackBlock], max: u32) -> AckInfo<'a> {
        AckInfo { now: ms(now), ack: s(ack), sacked, dsack: false, echoed: None, snd_nxt: s(max) }
    }

    #[test]
    fn the_log_stays_bounded() {
        let mut log = SentLog::new(s(0));
        for i in 0..1000u32 {
            log.on_sent(s(i * 10), s(i * 10 + 10), ms(u64::from(i)));
        }
        assert_eq!(log.len, CAPACITY);
        assert_eq!(log.end(), s(10_000));
        assert_eq!(log.in_flight(), 10_000);
    }

    #[test]
    fn a_hole_below_a_later_delivery_is_lost_after_rtt_plus_window() {
        let mss = 10;
        let mut h = RackHistory::default();
        let mut log = SentLog::new(s(0));
        log.on_sent(s(0), s(10), ms(0));
        log.on_sent(s(10), s(20), ms(1));
        // [10, 20) delivered at 41 (RTT 40); [0, 10) not yet: within the
        // reordering window (min_RTT / 4 = 10 ms) after RACK.rtt.
        log.on_ack(&ack(41, 0, &[(s(10), s(20))]), &mut h);
        let (lost, again) = log.detect_loss(ms(41), &h, false, None, mss);
        assert!(!lost);
        assert_eq!(again, Some(ms(50)));
        let (lost, _) = log.detect_loss(ms(50), &h, false, None, mss);
        assert!(lost);
        assert_eq!(log.first_lost(), Some((s(0), s(10))));
        assert_eq!(log.in_flight(), 0);
        // Resent at 60 and lost again: found once something sent later is
        // delivered and RACK.rtt has passed, without any timeout.
        log.on_sent(s(0), s(10), ms(60));
        log.on_sent(s(20), s(30), ms(61));
        log.on_ack(&ack(101, 0, &[(s(10), s(30))]), &mut h);
        let (lost, _) = log.detect_loss(ms(101), &h, true, None, mss);
        assert!(lost, "{:?}", log.runs());
        assert_eq!(log.first_lost(), Some((s(0), s(10))));
    }
    #[test]
    fn a_resend_is_not_judged_lost_in_the_instant_it_left() {
        let mss = 10;
        let mut h = RackHistory::default();
        let mut log = SentLog::new(s(0));
        // Everything at one instant (RACK.rtt 0): [0, 20) then [20, 30) go
        // out; [20, 30) is SACKed, so [0, 20) is lost and resent.
        log.on_sent(s(0), s(20), ms(5));
        log.on_sent(s(20), s(30), ms(5));
        log.on_ack(&ack(5, 0, &[(s(20), s(30))]), &mut h);
        assert!(log.detect_loss(ms(5), &h, true, None, mss).0);
        log.on_sent(s(0), s(20), ms(5));
        // The same SACK again in that instant: it cannot tell whether the
        // resend left before [20, 30) (it used to be marked lost and resent
        // on every duplicate ACK).
        log.on_ack(&ack(5, 0, &[(s(20), s(30))]), &mut h);
        let (lost, again) = log.detect_loss(ms(5), &h, true, None, mss);
        assert!(!lost, "{:?}", log.runs());
        assert_eq!(again, None, "no timer for that instant: it would fire in it again");
        assert_eq!(log.first_lost(), None);
        // Time passes and something sent after the resend is delivered:
        // now it is lost.
        log.on_sent(s(30), s(40), ms(6));
        log.on_ack(&ack(6, 0, &[(s(20), s(40))]), &mut h);
        assert!(log.detect_loss(ms(6), &h, true, None, mss).0, "{:?}", log.runs());
        assert_eq!(log.first_lost(), Some((s(0), s(20))));
    }
}
