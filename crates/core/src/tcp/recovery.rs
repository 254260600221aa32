//! Loss recovery: the SACK scoreboard and RFC 6675's conservative recovery
//! when the peer SACKs, NewReno (RFC 6582) fast retransmit when it does not.
//! With RACK on (SACK and `TcpConfig::rack_tlp`), RACK (`rack.rs`, RFC 8985
//! §6) decides what is lost instead of RFC 6675's DupThresh and IsLost():
//! recovery begins when RACK marks a loss, retransmits what it marked, and
//! counts in flight what is neither SACKed nor marked.
//!
//! The scoreboard is a fixed array of at most [`MAX_RANGES`] SACKed ranges,
//! so every operation here is O(limit) whatever the peer sends. When it is
//! full, a new range below the highest one evicts the highest (holes near
//! SND.UNA matter most); forgetting a SACKed range only makes us resend data
//! the peer already has, never lose any.

use super::pool::BufferPool;
use super::rack::{AckInfo, RackHistory, SentLog};
use super::reassembly::MAX_RANGES;
use super::segment::SackBlock;
use super::seq::SeqNumber;
use crate::time::{Duration, Instant};

/// RFC 6675 §2: "DupThresh: The number of duplicate acknowledgments required
/// to trigger a retransmission. ... set to 3".
const DUP_THRESH: u32 = 3;

#[derive(Debug)]
pub(crate) struct Scoreboard {
    /// Allocated on the first SACK block; freed (`shrink`) once empty while
    /// nothing is outstanding.
    ranges: Option<Box<[(SeqNumber, SeqNumber); MAX_RANGES]>>,
    count: usize,
    limit: usize,
}

impl Scoreboard {
    pub(crate) fn new(limit: usize) -> Scoreboard {
        Scoreboard { ranges: None, count: 0, limit: limit.clamp(1, MAX_RANGES) }
    }

    pub(crate) fn clear(&mut self) {
        self.count = 0;
    }

    /// Frees the range array if no range is held.
    pub(crate) fn shrink(&mut self) {
        if self.count == 0 {
            self.ranges = None;
        }
    }

    fn ranges(&self) -> &[(SeqNumber, SeqNumber)] {
        self.ranges.as_deref().map_or(&[], |r| &r[..self.count])
    }

    /// No SACKed range is held.
    pub(crate) fn is_empty(&self) -> bool {
        self.count == 0
    }

    pub(crate) fn sacked_bytes(&self) -> usize {
        self.ranges().iter().map(|&(s, e)| e.since(s) as usize).sum()
    }

    /// Records a SACK block; returns true if it reported data not SACKed before.
    /// Blocks outside `(snd_una, snd_max]` are bogus (or D-SACKs) and ignored.
    pub(crate) fn add(&mut self, (start, end): SackBlock, snd_una: SeqNumber, snd_max: SeqNumber) -> bool {
        if !(start.gt(snd_una) && start.lt(end) && end.le(snd_max)) {
            return false;
        }
        let first = self.ranges().iter().position(|r| r.1.ge(start)).unwrap_or(self.count);
        let ranges = self.ranges.get_or_insert_with(|| Box::new([(SeqNumber(0), SeqNumber(0)); MAX_RANGES]));
        let mut last = first;
        while last < self.count && ranges[last].0.le(end) {
            last += 1;
        }
        if first == last {
            if self.count == self.limit {
                if first == self.count {
                    return false;
                }
                self.count -= 1; // evict the highest range
            }
            ranges.copy_within(first..self.count, first + 1);
            ranges[first] = (start, end);
            self.count += 1;
            return true;
        }
        let merged = (ranges[first].0.min(start), ranges[last - 1].1.max(end));
        let grew = last - first > 1 || merged != ranges[first];
        ranges[first] = merged;
        ranges.copy_within(last..self.count, first + 1);
        self.count -= last - first - 1;
        grew
    }

    /// Forgets everything at or below the cumulative ACK.
    pub(crate) fn trim(&mut self, snd_una: SeqNumber) {
        let gone = self.ranges().iter().take_while(|r| r.1.le(snd_una)).count();
        let count = self.count;
        let Some(ranges) = self.ranges.as_mut() else { return };
        ranges.copy_within(gone..count, 0);
        self.count -= gone;
        if self.count > 0 && ranges[0].0.lt(snd_una) {
            ranges[0].0 = snd_una;
        }
    }

    /// The holes between SND.UNA and the highest SACKed byte, each with
    /// whether RFC 6675's IsLost() holds for it.
    ///
    /// RFC 6675 §4 IsLost(SeqNum): "This routine returns whether the given
    /// sequence number is considered to be lost. The routine returns true when
    /// either DupThresh discontiguous SACKed sequences have arrived above
    /// 'SeqNum' or more than (DupThresh - 1) * SMSS bytes with sequence numbers
    /// greater than 'SeqNum' have been SACKed." All octets of one hole share
    /// the answer, since no SACKed octet lies between them.
    fn holes(&self, snd_una: SeqNumber, mss: usize) -> impl Iterator<Item = (SeqNumber, SeqNumber, bool)> + '_ {
        let total = self.sacked_bytes();
        let mut below = 0usize;
        let mut pos = snd_una;
        self.ranges().iter().enumerate().filter_map(move |(i, &(s, e))| {
            let above = total - below;
            let blocks_above = self.count - i;
            let hole = (pos, s, blocks_above >= DUP_THRESH as usize || above > (DUP_THRESH as usize - 1) * mss);
            below += e.since(s) as usize;
            pos = e;
            hole.0.lt(hole.1).then_some(hole)
        })
    }

    fn highest(&self) -> Option<SeqNumber> {
        self.ranges().last().map(|r| r.1)
    }

    /// SACKed octets below `seq` (all of them when `seq` is SND.MAX).
    fn sacked_bytes_below(&self, seq: SeqNumber) -> usize {
        self.ranges().iter().map(|&(s, e)| e.min(seq).since(s) as usize).sum()
    }

    /// For a go-back-N resend from `seq`: the first octet at or after `seq`
    /// that is not SACKed, and the start of the next SACKed range above it
    /// (where the resend must stop), if any.
    pub(crate) fn skip_sacked(&self, seq: SeqNumber) -> (SeqNumber, Option<SeqNumber>) {
        let mut start = seq;
        for &(s, e) in self.ranges() {
            if e.le(start) {
                continue;
            }
            if s.le(start) {
                start = e;
                continue;
            }
            return (start, Some(s));
        }
        (start, None)
    }
}

/// What an acknowledgement means for loss recovery.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum AckEvent {
    Nothing,
    /// Fast retransmit: the congestion controller must reduce now.
    EnterRecovery,
    ExitRecovery,
}

#[derive(Debug)]
pub(crate) struct Recovery {
    pub(crate) board: Scoreboard,
    sack: bool,
    dupacks: u32,
    in_recovery: bool,
    /// RFC 6675 RecoveryPoint / RFC 6582 "recover" at entry: SND.MAX then.
    recovery_point: SeqNumber,
    /// RFC 6675 HighRxt: just past the highest octet retransmitted.
    high_rxt: SeqNumber,
    /// RFC 6582 §3.2 after a timeout: no fast retransmit until the cumulative
    /// ACK covers what was outstanding when the timer fired.
    recover_after_rto: Option<SeqNumber>,
    /// RFC 6582 window inflation (peers without SACK only).
    inflation: u32,
    /// The segment at SND.UNA must be retransmitted now.
    retransmit_first: bool,
    /// RACK governs loss marking (SACK negotiated and RACK-TLP on).
    rack: bool,
    /// RACK's transmit times, boxed while data is outstanding.
    log: Option<Box<SentLog>>,
    history: RackHistory,
    /// RFC 6937 Proportional Rate Reduction, in SACK recovery.
    prr: Prr,
    /// Undoing a fast recovery whose retransmissions were all duplicates.
    undo: Undo,
}

/// The undo of a spurious fast recovery (RFC 3708's D-SACK detection, the
/// response Linux's tcp_try_undo_dsack gives): when every segment the
/// episode retransmitted comes back reported as a duplicate, the original
/// had arrived after all (reordering, not loss), and the window and
/// threshold go back to what they were.
#[derive(Clone, Copy, Debug, Default)]
struct Undo {
    /// An episode may still be undone.
    armed: bool,
    /// A D-SACK for the episode came.
    dsacked: bool,
    /// Segments the episode retransmitted that no D-SACK has reported yet
    /// ("undo_retrans").
    retrans: u16,
    /// SND.UNA when the episode began ("undo_marker"): a D-SACK below it is
    /// about older retransmissions.
    marker: SeqNumber,
    /// The congestion window and slow-start threshold it found, saturated
    /// to `u32::MAX`.
    prior_cwnd: u32,
    prior_ssthresh: u32,
}

/// RFC 6937's state for one recovery episode. Without it the window drops
/// to ssthresh at once: the sender falls silent until half the flight has
/// drained, then bursts. PRR spreads the reduction over the episode's ACKs
/// (sending about ssthresh/RecoverFS of what each ACK delivers) and, once
/// the pipe is below ssthresh, grows back toward it no faster than slow
/// start (PRR-SSRB), as Linux does (tcp_cwnd_reduction).
#[derive(Clone, Copy, Debug, Default)]
struct Prr {
    /// "RecoverFS": the flight when recovery began.
    recover_fs: u32,
    /// "prr_delivered": octets the peer reported delivered since then.
    delivered: u32,
    /// "prr_out": octets sent since then.
    out: u32,
    /// The congestion window the last ACK set: "cwnd = pipe + sndcnt".
    cwnd: u32,
}

impl Recovery {
    pub(crate) fn new(sack_limit: usize) -> Recovery {
        Recovery {
            board: Scoreboard::new(sack_limit),
            sack: false,
            dupacks: 0,
            in_recovery: false,
            recovery_point: SeqNumber(0),
            high_rxt: SeqNumber(0),
            recover_after_rto: None,
            inflation: 0,
            retransmit_first: false,
            rack: false,
            log: None,
            history: RackHistory::default(),
            prr: Prr::default(),
            undo: Undo::default(),
        }
    }

    /// SACK was negotiated (or not); `rack` turns RACK on with it.
    pub(crate) fn set_sack(&mut self, sack: bool, rack: bool) {
        self.sack = sack;
        self.rack = sack && rack;
    }

    // ---- RACK (RFC 8985 §6) ----------------------------------------------------

    /// `[start, end)` was sent (or resent) at `now`; SND.UNA is `snd_una`.
    #[inline]
    pub(crate) fn on_sent(&mut self, start: SeqNumber, end: SeqNumber, now: Instant, snd_una: SeqNumber) {
        if self.prr_active() {
            // RFC 6937 §3: "prr_out += (data sent)".
            self.prr.out = self.prr.out.saturating_add(end.since(start));
        }
        if self.rack {
            self.log.get_or_insert_with(|| Box::new(SentLog::new(snd_una))).on_sent(start, end, now);
        }
    }

    /// RFC 8985 §6.2 steps 1-4 for an acceptable ACK.
    pub(crate) fn rack_on_ack(&mut self, info: &AckInfo) {
        if let Some(log) = self.log.as_mut() {
            log.on_ack(info, &mut self.history);
        }
    }

    /// RFC 8985 §6.2 step 5: marks losses; returns whether any was newly
    /// marked and when the RACK reordering timer should look again.
    pub(crate) fn rack_detect_loss(
        &mut self,
        now: Instant,
        snd_una: SeqNumber,
        srtt: Option<Duration>,
        mss: usize,
    ) -> (bool, Option<Instant>) {
        let in_recovery = self.in_recovery || self.in_rto_recovery(snd_una);
        match self.log.as_mut() {
            Some(log) => log.detect_loss(now, &self.history, in_recovery, srtt, mss),
            None => (false, None),
        }
    }

    /// Some run is marked lost and not yet resent.
    pub(crate) fn rack_has_lost(&self) -> bool {
        self.log.as_ref().is_some_and(|log| log.first_lost().is_some())
    }

    /// RACK marked a loss outside recovery: RFC 6675 §5 (4.1) "RecoveryPoint
    /// = HighData" and recovery begins; RACK's marks say what to resend.
    pub(crate) fn enter_rack_recovery(&mut self, snd_max: SeqNumber) {
        self.in_recovery = true;
        self.recovery_point = snd_max;
        self.retransmit_first = false;
        self.dupacks = 0;
    }

    /// Data is about to be sent: take a transmit log from `pool` now, while
    /// the pool is at hand, rather than allocate one in `on_sent`.
    pub(crate) fn prepare_log(&mut self, pool: &BufferPool, snd_una: SeqNumber) {
        if self.rack && self.log.is_none() {
            self.log = Some(pool.take_log(snd_una));
        }
    }

    /// Nothing is outstanding: the transmit log goes back to `pool` until
    /// the next send.
    pub(crate) fn shrink_log(&mut self, pool: &mut BufferPool) {
        if let Some(log) = self.log.take() {
            pool.give_log(log);
        }
    }

    pub(crate) fn in_recovery(&self) -> bool {
        self.in_recovery
    }

    // ---- Undo (RFC 3708) --------------------------------------------------------

    /// Fast recovery begins at `snd_una` with the controller at `cwnd` and
    /// `ssthresh` (before its reduction): the episode can be undone.
    pub(crate) fn undo_arm(&mut self, snd_una: SeqNumber, cwnd: usize, ssthresh: usize) {
        let clamp = |n: usize| u32::try_from(n).unwrap_or(u32::MAX);
        self.undo = Undo {
            armed: self.sack,
            dsacked: false,
            retrans: 0,
            marker: snd_una,
            prior_cwnd: clamp(cwnd),
            prior_ssthresh: clamp(ssthresh),
        };
    }

    /// `segments` were retransmitted.
    #[inline]
    pub(crate) fn undo_on_retransmit(&mut self, segments: usize) {
        if self.undo.armed {
            let n = u16::try_from(segments).unwrap_or(u16::MAX);
            self.undo.retrans = self.undo.retrans.saturating_add(n);
        }
    }

    /// A D-SACK reported `[start, end)` a duplicate.
    pub(crate) fn undo_on_dsack(&mut self, (start, end): SackBlock, mss: usize) {
        let u = &mut self.undo;
        if u.armed && !start.lt(u.marker) && start.lt(end) {
            let segments = (end.since(start) as usize).div_ceil(mss.max(1));
            u.retrans = u.retrans.saturating_sub(u16::try_from(segments).unwrap_or(u16::MAX));
            u.dsacked = true;
        }
    }

    /// Every retransmission of the episode, now over, was a duplicate: the
    /// window and threshold to go back to, once.
    #[inline]
    pub(crate) fn take_undo(&mut self) -> Option<(usize, usize)> {
        let u = &mut self.undo;
        if !(u.armed && u.dsacked && u.retrans == 0 && !self.in_recovery) {
            return None;
        }
        u.armed = false;
        let widen = |n: u32| if n == u32::MAX { usize::MAX } else { n as usize };
        Some((widen(u.prior_cwnd), widen(u.prior_ssthresh)))
    }

    // ---- PRR (RFC 6937) ---------------------------------------------------------

    /// Proportional rate reduction governs the window: SACK recovery.
    #[inline]
    pub(crate) fn prr_active(&self) -> bool {
        self.in_recovery && self.sack
    }

    /// Recovery began with `flight` octets outstanding and the pipe at
    /// `pipe`: "prr_delivered = 0, prr_out = 0, RecoverFS = snd.nxt -
    /// snd.una". Until the first ACK computes the window, the fast
    /// retransmit may go (`pipe + mss`).
    pub(crate) fn prr_start(&mut self, flight: usize, pipe: usize, mss: usize) {
        let clamp = |n: usize| u32::try_from(n).unwrap_or(u32::MAX);
        self.prr = Prr { recover_fs: clamp(flight.max(1)), delivered: 0, out: 0, cwnd: clamp(pipe + mss) };
    }

    /// RFC 6937 §3, on every ACK in recovery: `delivered` octets newly
    /// acknowledged or SACKed by this ACK, the pipe after it, ssthresh.
    /// An ACK that delivered nothing leaves the window as it was (Linux).
    pub(crate) fn prr_on_ack(&mut self, delivered: usize, pipe: usize, ssthresh: usize, mss: usize) {
        if !self.prr_active() || delivered == 0 {
            return;
        }
        let p = &mut self.prr;
        let delivered = u32::try_from(delivered).unwrap_or(u32::MAX);
        p.delivered = p.delivered.saturating_add(delivered);
        let sndcnt = if pipe > ssthresh {
            // "sndcnt = CEIL(prr_delivered * ssthresh / RecoverFS) - prr_out"
            let due = (u64::from(p.delivered) * ssthresh as u64).div_ceil(u64::from(p.recover_fs));
            due.saturating_sub(u64::from(p.out)) as usize
        } else {
            // PRR-SSRB: "limit = MAX(prr_delivered - prr_out, DeliveredData)
            // + MSS; sndcnt = MIN(ssthresh - pipe, limit)".
            let limit = p.delivered.saturating_sub(p.out).max(delivered) as usize + mss;
            (ssthresh - pipe).min(limit)
        };
        // The fast retransmit goes whatever the arithmetic says (Linux:
        // "sndcnt = max(sndcnt, prr_out ? 0 : 1)").
        let sndcnt = if p.out == 0 { sndcnt.max(mss) } else { sndcnt };
        p.cwnd = u32::try_from(pipe.saturating_add(sndcnt)).unwrap_or(u32::MAX);
    }

    /// The congestion window PRR allows (meaningful while `prr_active`).
    pub(crate) fn prr_cwnd(&self) -> usize {
        self.prr.cwnd as usize
    }

    /// Recovering from an RTO: the cumulative ACK has not yet covered what
    /// was outstanding when the timer fired.
    pub(crate) fn in_rto_recovery(&self, snd_una: SeqNumber) -> bool {
        self.recover_after_rto.is_some_and(|r| snd_una.lt(r))
    }

    /// Extra window allowed by RFC 6582 inflation.
    pub(crate) fn inflation(&self) -> usize {
        self.inflation as usize
    }

    /// A cumulative ACK moved SND.UNA forward by `acked` octets to `snd_una`.
    pub(crate) fn on_new_ack(&mut self, snd_una: SeqNumber, acked: usize, mss: usize) -> AckEvent {
        self.board.trim(snd_una);
        // RFC 6675 §5: "If the incoming ACK is a cumulative acknowledgment, the
        // TCP MUST reset DupAcks to zero."
        self.dupacks = 0;
        if !self.in_recovery {
            return AckEvent::Nothing;
        }
        // RFC 6675 §5: "once a TCP receives a cumulative ACK at or above
        // RecoveryPoint ... the TCP MUST leave loss recovery" (RFC 6582's "full
        // acknowledgment" is the same test).
        if snd_una.ge(self.recovery_point) {
            self.in_recovery = false;
            if self.rack {
                self.history.on_recovery_exit();
            }
            self.inflation = 0;
            self.retransmit_first = false;
            return AckEvent::ExitRecovery;
        }
        self.high_rxt = self.high_rxt.max(snd_una);
        if !self.sack {
            // RFC 6582 §3.2 step 5, partial acknowledgment: "retransmit the first
            // unacknowledged segment. ... deflate the congestion window by the
            // amount of new data acknowledged ... then add back SMSS bytes if the
            // partial ACK acknowledges at least SMSS bytes of new data".
            self.retransmit_first = true;
            let deflated = (self.inflation as usize).saturating_sub(acked) + if acked >= mss { mss } else { 0 };
            self.inflation = u32::try_from(deflated).unwrap_or(u32::MAX);
        }
        AckEvent::Nothing
    }

    /// A duplicate ACK arrived (RFC 5681 §2's definition, or, with SACK, an
    /// ACK at SND.UNA reporting new SACKed data). `flight` is what the
    /// congestion controller should take as FlightSize.
    pub(crate) fn on_dup_ack(&mut self, snd_una: SeqNumber, snd_max: SeqNumber, mss: usize) -> AckEvent {
        if self.in_recovery {
            if !self.sack {
                // RFC 6582 §3.2 step 4: "increment cwnd by SMSS".
                self.inflation = self.inflation.saturating_add(u32::try_from(mss).unwrap_or(u32::MAX));
            }
            return AckEvent::Nothing;
        }
        self.dupacks += 1;
        if self.rack {
            // RFC 8985 replaces the DupThresh trigger: RACK marks the losses
            // (`rack_detect_loss`) and recovery begins from there.
            return AckEvent::Nothing;
        }
        let lost = self.sack && self.board.holes(snd_una, mss).next().is_some_and(|h| h.0 == snd_una && h.2);
        // RFC 6675 §5: "(a) If DupAcks >= DupThresh, go to step (4). ... (b) If
        // DupAcks < DupThresh but IsLost (HighACK + 1) returns true".
        if self.dupacks < DUP_THRESH && !lost {
            return AckEvent::Nothing;
        }
        if self.recover_after_rto.is_some_and(|r| snd_una.lt(r)) {
            return AckEvent::Nothing;
        }
        self.recover_after_rto = None;
        // RFC 6675 §5 (4.1): "RecoveryPoint = HighData"; (4.3) "retransmit the
        // first data segment presumed dropped".
        self.in_recovery = true;
        self.recovery_point = snd_max;
        self.high_rxt = snd_una;
        self.retransmit_first = true;
        if !self.sack {
            // RFC 6582 §3.2 step 3: "cwnd = ssthresh + 3*SMSS".
            self.inflation = u32::try_from(DUP_THRESH as usize * mss).unwrap_or(u32::MAX);
        }
        AckEvent::EnterRecovery
    }

    /// The retransmission timer fired: recovery is abandoned and, RFC 2018
    /// §8, "the data sender SHOULD turn off all of the SACKed bits" (the
    /// receiver may have reneged). SACK blocks that arrive afterwards are
    /// recorded again, and the go-back-N resend skips them (RFC 6675 §5.1).
    pub(crate) fn on_rto(&mut self, snd_max: SeqNumber) {
        // An RTO's go-back-N resends whatever the episode left; no undo.
        self.undo.armed = false;
        self.board.clear();
        self.in_recovery = false;
        self.dupacks = 0;
        self.inflation = 0;
        self.retransmit_first = false;
        self.recover_after_rto = Some(snd_max);
        if let Some(log) = self.log.as_mut() {
            log.on_rto();
        }
    }

    /// Octets presumed in the network. In SACK recovery this is RFC 6675's
    /// SetPipe(); otherwise what was sent and not yet acknowledged or SACKed.
    pub(crate) fn pipe(&self, snd_una: SeqNumber, snd_nxt: SeqNumber, mss: usize) -> usize {
        let outstanding = snd_nxt.since(snd_una) as usize;
        if let (true, true, Some(log)) = (self.in_recovery, self.rack, self.log.as_ref()) {
            return log.in_flight();
        }
        if !(self.in_recovery && self.sack) {
            // Only SACKs below SND.NXT: after an RTO rewinds SND.NXT, what lies
            // above it was sent before the timeout and is no longer counted.
            return outstanding.saturating_sub(self.board.sacked_bytes_below(snd_nxt));
        }
        // RFC 6675 §4 SetPipe: for each octet "(a) If IsLost (S1) returns false:
        // Pipe is incremented by 1 octet. (b) If S1 <= HighRxt: Pipe is
        // incremented by 1 octet."
        let retransmitted = |s: SeqNumber, e: SeqNumber| self.high_rxt.min(e).since(s) as usize;
        let mut pipe = 0;
        for (s, e, lost) in self.board.holes(snd_una, mss) {
            if !lost {
                pipe += e.since(s) as usize;
            }
            pipe += retransmitted(s, e);
        }
        let tail = self.board.highest().unwrap_or(snd_una).max(snd_una);
        pipe + snd_nxt.since(tail) as usize + retransmitted(tail, snd_nxt)
    }

    /// The next retransmission, as `(seq, max_len)`, before any new data.
    /// RFC 6675 NextSeg() rule (1): "the first unSACKed sequence number 'S2'
    /// ... S2 > HighRxt ... S2 < the highest octet covered by any received SACK
    /// ... IsLost (S2) returns true". The forced first retransmission of
    /// fast retransmit / RFC 6582 partial ACKs comes first.
    pub(crate) fn next_retransmit(&self, snd_una: SeqNumber, mss: usize) -> Option<(SeqNumber, usize)> {
        if self.retransmit_first {
            let end = self.board.ranges().first().map_or(snd_una + mss, |r| r.0);
            return Some((snd_una, (end.since(snd_una) as usize).clamp(1, mss)));
        }
        if !(self.in_recovery && self.sack) {
            return None;
        }
        if self.rack {
            // What RACK marked lost, lowest first; never a SACKed octet.
            let (seq, end) = self.log.as_ref()?.first_lost()?;
            let (start, sacked_from) = self.board.skip_sacked(seq);
            let end = sacked_from.map_or(end, |s| s.min(end));
            return start.lt(end).then(|| (start, (end.since(start) as usize).min(mss)));
        }
        self.first_hole_above_high_rxt(snd_una, mss, true)
    }

    /// RFC 6675 NextSeg() rule (3), used when no new data can be sent: "an
    /// unSACKed sequence number S3 that meets the criteria ... (1.a) and (1.b)"
    /// (above HighRxt, below the highest SACKed octet, lost or not).
    /// Not with RACK, whose reordering timer marks such holes lost in time.
    pub(crate) fn next_rescue(&self, snd_una: SeqNumber, mss: usize) -> Option<(SeqNumber, usize)> {
        if !(self.in_recovery && self.sack) || self.rack {
            return None;
        }
        self.first_hole_above_high_rxt(snd_una, mss, false)
    }

    fn first_hole_above_high_rxt(&self, snd_una: SeqNumber, mss: usize, lost_only: bool) -> Option<(SeqNumber, usize)> {
        self.board.holes(snd_una, mss).filter(|h| h.2 || !lost_only).find_map(|(s, e, _)| {
            let start = s.max(self.high_rxt);
            start.lt(e).then(|| (start, (e.since(start) as usize).min(mss)))
        })
    }

    /// A retransmission of `[seq, end)` was sent.
    pub(crate) fn on_retransmitted(&mut self, end: SeqNumber) {
        // Whatever went out first was the forced retransmission, if one was due.
        self.retransmit_first = false;
        if self.in_recovery {
            self.high_rxt = self.high_rxt.max(end);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    fn s(n: u32) -> SeqNumber {
        SeqNumber(n)
    }

    #[test]
    fn scoreboard_ignores_bogus_blocks_and_merges() {
        let mut b = Scoreboard::new(4);
        assert!(!b.add((s(50), s(60)), s(100), s(200)), "below SND.UNA");
        assert!(!b.add((s(150), s(250)), s(100), s(200)), "beyond SND.MAX");
        assert!(!b.add((s(160), s(150)), s(100), s(200)), "inverted");
        assert!(b.add((s(150), s(160)), s(100), s(200)));
        assert!(!b.add((s(150), s(160)), s(100), s(200)), "repeat");
        assert!(b.add((s(160), s(170)), s(100), s(200)));
        assert_eq!(b.ranges(), &[(s(150), s(170))]);
        b.trim(s(155));
        assert_eq!(b.ranges(), &[(s(155), s(170))]);
    }

    #[test]
    fn scoreboard_is_bounded() {
        let mut b = Scoreboard::new(2);
        b.add((s(10), s(11)), s(0), s(100));
        b.add((s(20), s(21)), s(0), s(100));
        assert!(!b.add((s(30), s(31)), s(0), s(100)));
        assert!(b.add((s(5), s(6)), s(0), s(100)));
        assert_eq!(b.ranges(), &[(s(5), s(6)), (s(10), s(11))]);
    }

    #[test]
    fn go_back_n_skips_sacked_ranges_and_pipe_counts_below_snd_nxt() {
        let mut b = Scoreboard::new(4);
        b.add((s(20), s(30)), s(0), s(100));
        b.add((s(40), s(50)), s(0), s(100));
        assert_eq!(b.skip_sacked(s(10)), (s(10), Some(s(20))));
        assert_eq!(b.skip_sacked(s(20)), (s(30), Some(s(40))));
        assert_eq!(b.skip_sacked(s(45)), (s(50), None));
        assert_eq!(b.skip_sacked(s(60)), (s(60), None));
        let mut r = Recovery::new(4);
        r.board = b;
        // SND.NXT rewound to 25 by an RTO: only [20, 25) of the SACKed octets
        // lies in what was sent since.
        assert_eq!(r.pipe(s(0), s(25), 10), 20);
        assert_eq!(r.pipe(s(0), s(100), 10), 80);
    }

    #[test]
    fn sack_recovery_resends_only_holes() {
        let mss = 10;
        let mut r = Recovery::new(8);
        r.set_sack(true, false);
        // Segments [0,10) and [20,30) lost out of [0,60).
        r.board.add((s(10), s(20)), s(0), s(60));
        assert_eq!(r.on_dup_ack(s(0), s(60), mss), AckEvent::Nothing);
        r.board.add((s(30), s(60)), s(0), s(60));
        assert_eq!(r.on_dup_ack(s(0), s(60), mss), AckEvent::EnterRecovery);
        assert_eq!(r.next_retransmit(s(0), mss), Some((s(0), 10)));
        r.on_retransmitted(s(10));
        assert_eq!(r.next_retransmit(s(0), mss), Some((s(20), 10)));
        r.on_retransmitted(s(30));
        assert_eq!(r.next_retransmit(s(0), mss), None);
        // Both holes lost and resent: each counts once.
        assert_eq!(r.pipe(s(0), s(60), mss), 20);
        assert_eq!(r.on_new_ack(s(10), 10, mss), AckEvent::Nothing);
        assert_eq!(r.on_new_ack(s(60), 50, mss), AckEvent::ExitRecovery);
    }

    #[test]
    fn newreno_inflates_and_retransmits_on_partial_ack() {
        let mss = 10;
        let mut r = Recovery::new(8);
        for _ in 0..2 {
            assert_eq!(r.on_dup_ack(s(0), s(100), mss), AckEvent::Nothing);
        }
        assert_eq!(r.on_dup_ack(s(0), s(100), mss), AckEvent::EnterRecovery);
        assert_eq!(r.inflation(), 30);
        assert_eq!(r.next_retransmit(s(0), mss), Some((s(0), 10)));
        r.on_retransmitted(s(10));
        assert_eq!(r.next_retransmit(s(0), mss), None);
        r.on_dup_ack(s(0), s(100), mss);
        assert_eq!(r.inflation(), 40);
        r.on_new_ack(s(50), 50, mss);
        assert_eq!(r.next_retransmit(s(50), mss), Some((s(50), 10)));
        assert_eq!(r.inflation(), 10);
    }

    #[test]
    fn no_fast_retransmit_right_after_rto() {
        let mut r = Recovery::new(8);
        r.on_rto(s(100));
        for _ in 0..5 {
            assert_eq!(r.on_dup_ack(s(0), s(100), 10), AckEvent::Nothing);
        }
    }
}
