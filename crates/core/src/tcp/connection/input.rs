//! Segment arrival: RFC 9293 §3.10.7 "SEGMENT ARRIVES", with RFC 5961's
//! hardening, RFC 7323's PAWS and RTTM, and RFC 2018/6675 SACK processing.

use super::{bump, ConnError, Connection, DropReason, PeerSyn, SegmentOutcome};
use crate::tcp::congestion::CongestionControl;
use crate::tcp::pool::BufferPool;
use crate::tcp::rack::AckInfo;
use crate::tcp::reassembly::{Inserted, Reassembly};
use crate::tcp::recovery::AckEvent;
use crate::tcp::segment::{reset_for, SackBlock, Segment};
use crate::tcp::seq::SeqNumber;
use crate::tcp::state::State;
use crate::tcp::timers::Timer;
use crate::tcp::tlp::ProbeVerdict;
use crate::time::{Duration, Instant};

/// RFC 7323 §5.5: "If a connection remains idle for more than 24 days ... the
/// value of TS.Recent ... is invalid".
const PAWS_IDLE: Duration = Duration::from_secs(24 * 24 * 3600);

impl Connection {
    /// Processes one arriving segment (already demultiplexed to this
    /// connection, checksum verified). `payload.len()` must equal
    /// `seg.payload_len`. Afterwards call `poll_transmit` until it returns
    /// `None`, and send `outcome.reply` if present. Arriving text is stored
    /// in chunks taken from `pool`; acknowledged send chunks go back to it.
    pub fn on_segment(&mut self, now: Instant, seg: &Segment, payload: &[u8], pool: &mut BufferPool) -> SegmentOutcome {
        let mut out = SegmentOutcome::default();
        self.stats.segments_in += 1;
        if payload.len() != seg.payload_len {
            out.dropped = Some(DropReason::Malformed);
        } else {
            match self.state {
                // RFC 9293 §3.10.7.1: "If the state is CLOSED (i.e., TCB does
                // not exist) then all data in the incoming segment is discarded
                // ... An incoming segment not containing a RST causes a RST to
                // be sent in response."
                State::Closed | State::Listen => {
                    out.reply = reset_for(seg);
                    out.dropped = Some(DropReason::Closed);
                }
                State::SynSent => self.on_segment_syn_sent(now, seg, payload, &mut out, pool),
                _ => self.on_segment_synchronized(now, seg, payload, &mut out, pool),
            }
        }
        if let Some(reason) = out.dropped {
            self.stats.count_drop(reason);
        }
        out.closed = self.state == State::Closed;
        out.transmit = self.wants_transmit();
        out
    }

    /// RFC 9293 §3.10.7.3, SYN-SENT.
    fn on_segment_syn_sent(
        &mut self,
        now: Instant,
        seg: &Segment,
        payload: &[u8],
        out: &mut SegmentOutcome,
        pool: &mut BufferPool,
    ) {
        // "first check the ACK bit ... If SEG.ACK =< ISS or SEG.ACK > SND.NXT,
        // send a reset (unless the RST bit is set, if so drop the segment and
        // return) <SEQ=SEG.ACK><CTL=RST>".
        if let Some(ack) = seg.ack {
            if ack.le(self.iss) || ack.gt(self.snd_max) {
                out.reply = reset_for(seg);
                out.dropped = Some(DropReason::BadAck);
                return;
            }
        }
        // "second check the RST bit: If the ACK was acceptable, then signal to
        // the user "error: connection reset", drop the segment, enter CLOSED
        // state ... Otherwise (no ACK), drop the segment and return."
        if seg.rst() {
            if seg.ack.is_some() {
                out.reset = true;
                self.enter_closed(Some(ConnError::Refused));
            } else {
                out.dropped = Some(DropReason::Rst);
            }
            return;
        }
        // "fifth, if neither of the SYN or RST bits is set, then drop the
        // segment and return."
        if !seg.syn() {
            out.dropped = Some(DropReason::NotSyn);
            return;
        }
        // "fourth check the SYN bit ... RCV.NXT is set to SEG.SEQ+1, IRS is set
        // to SEG.SEQ."
        self.irs = seg.seq;
        self.rcv_nxt = seg.seq + 1;
        // Our SYN advertised this much, unscaled.
        self.rcv_adv = self.rcv_nxt + self.recv_buf.free().min(65535);
        self.last_rx = now;
        self.negotiate(&PeerSyn::from_options(&seg.options), now);
        // RFC 7323 §2.2: "The window field in a segment where the SYN bit is set
        // (i.e., a <SYN> or <SYN,ACK>) MUST NOT be scaled."
        self.snd_wnd = u32::from(seg.window);
        self.max_snd_wnd = self.snd_wnd;
        self.snd_wl1 = seg.seq;
        let Some(ack) = seg.ack else {
            // "Otherwise, enter SYN-RECEIVED, form a SYN,ACK segment
            // <SEQ=ISS><ACK=RCV.NXT><CTL=SYN,ACK> and send it." (simultaneous open)
            self.state = State::SynReceived;
            self.syn_due = true;
            return;
        };
        // "SND.UNA should be advanced to equal SEG.ACK (if there is an ACK) ...
        // If SND.UNA > ISS (our SYN has been ACKed), change the connection
        // state to ESTABLISHED, form an ACK segment <SEQ=SND.NXT><ACK=RCV.NXT>
        // <CTL=ACK> and send it."
        self.rtt_sample(now, seg, ack);
        if self.syn_retransmits > 0 {
            self.rtt.syn_was_retransmitted();
        }
        self.snd_una = ack;
        self.snd_wl2 = ack;
        self.timers.stop(Timer::Retransmit);
        self.establish(now, out);
        self.ack_now = true;
        // "If there are other controls or text in the segment, then continue
        // processing at the sixth step ... where the URG bit is checked".
        if !payload.is_empty() || seg.fin() {
            self.process_text(now, seg.seq + 1, payload, seg.fin(), seg, out, pool);
        }
    }

    fn establish(&mut self, now: Instant, out: &mut SegmentOutcome) {
        self.state = if self.fin_queued { State::FinWait1 } else { State::Established };
        out.established = true;
        self.syn_due = false;
        if self.keepalive {
            self.timers.set(Timer::Keepalive, now + self.cfg.keepalive_idle);
        }
    }

    /// RFC 9293 §3.10.7.4, "Otherwise": SYN-RECEIVED and the synchronized states.
    fn on_segment_synchronized(
        &mut self,
        now: Instant,
        seg: &Segment,
        payload: &[u8],
        out: &mut SegmentOutcome,
        pool: &mut BufferPool,
    ) {
        // A retransmission of the peer's SYN: our SYN-ACK was lost. Resend it
        // (Linux does the same) rather than treating it as a new attempt.
        if self.state == State::SynReceived && seg.syn() && seg.ack.is_none() && !seg.rst() && seg.seq == self.irs {
            self.syn_due = true;
            out.dropped = Some(DropReason::Ignored);
            return;
        }
        // Simultaneous open (RFC 9293 Figure 8, line 5): the peer's SYN,ACK
        // repeats the SYN we already took in SYN-SENT. Its SYN lies just left of
        // the window; take the segment for its ACK (as Linux does) instead of
        // answering it with a challenge ACK.
        if self.state == State::SynReceived
            && self.active_open
            && seg.syn()
            && seg.ack.is_some()
            && seg.seq + 1 == self.rcv_nxt
        {
            let rest = Segment { seq: self.rcv_nxt, flags: seg.flags.without(crate::tcp::segment::Flags::SYN), ..*seg };
            return self.on_segment_synchronized(now, &rest, payload, out, pool);
        }

        // RFC 7323 §5.3 R1: "If there is a Timestamps option in the arriving
        // segment, SEG.TSval < TS.Recent, TS.Recent is valid ..., and the RST
        // bit is not set, then treat the arriving segment as not acceptable:
        // Send an acknowledgment in reply ... and drop the segment."
        let mut tsval = None;
        // A SYN is exempt too: RFC 5961 §4.2 answers any SYN in a
        // synchronized state with a challenge ACK, which is how a peer that
        // lost its state (and so its timestamps) learns to reset us; Linux
        // (tcp_validate_incoming) answers it the same way.
        if self.timestamps && !seg.rst() && !(seg.syn() && seg.options.timestamp.is_none()) {
            let Some((val, _)) = seg.options.timestamp else {
                // RFC 7323 §3.2: "If a non-<RST> segment is received without a
                // TSopt, a TCP SHOULD silently drop the segment."
                out.dropped = Some(DropReason::MissingTimestamp);
                return;
            };
            let recent_valid = now.saturating_since(self.ts_recent_at) < PAWS_IDLE;
            if recent_valid && (val.wrapping_sub(self.ts_recent) as i32) < 0 {
                self.ack_unacceptable(now, seg);
                out.dropped = Some(DropReason::Paws);
                return;
            }
            tsval = Some(val);
        }

        // First, check sequence number (the four acceptability cases).
        let wnd = self.rcv_adv.since(self.rcv_nxt);
        let end = self.rcv_nxt + wnd as usize;
        let seg_len = seg.len();
        // One departure from the table: a zero-length segment exactly at the
        // right edge (SEG.SEQ = RCV.NXT+RCV.WND) is acceptable. A peer that
        // filled our window sends every pure ACK there (its SND.NXT) until
        // its data arrives; the table would drop those ACKs, leaving our
        // SND.UNA behind and our RTO resending acknowledged data. It occupies
        // no sequence space beyond the window, and Linux (tcp_sequence) and
        // the BSDs (tcp_input's trimming) accept it too. Not a RST: RFC 5961
        // §3.2 drops one "outside the current receive window" silently.
        let acceptable = match (seg_len, wnd) {
            (0, 0) => seg.seq == self.rcv_nxt,
            (0, _) => seg.seq.in_window(self.rcv_nxt, end) || (seg.seq == end && !seg.rst()),
            (_, 0) => false,
            (_, _) => seg.seq.in_window(self.rcv_nxt, end) || (seg.end() - 1).in_window(self.rcv_nxt, end),
        };
        // "If the RCV.WND is zero, no segments will be acceptable, but special
        // allowance should be made to accept valid ACKs, URGs, and RSTs." A
        // segment at RCV.NXT is processed for its ACK; its text is trimmed away.
        let zero_window_allowance = wnd == 0 && seg.seq == self.rcv_nxt;
        // A RST at the peer's FIN (RCV.NXT - 1) once that FIN is in: what
        // Linux sends when data reaches a socket it has closed before our ACK
        // of its FIN did (the RST takes its sequence number from the ACK
        // field of that data, the FIN's own). Linux accepts it in these three
        // states (tcp_reset_check); without this, the connection lingers in
        // LAST-ACK resending its FIN into RSTs.
        let rst_at_fin = seg.rst()
            && self.fin_received
            && seg.seq + 1 == self.rcv_nxt
            && matches!(self.state, State::CloseWait | State::LastAck | State::Closing);
        if rst_at_fin {
            out.reset = true;
            let error = if self.state == State::CloseWait { Some(ConnError::Reset) } else { None };
            self.enter_closed(error);
            return;
        }
        if !acceptable && !zero_window_allowance {
            // "If an incoming segment is not acceptable, an acknowledgment should
            // be sent in reply (unless the RST bit is set, if so drop the segment
            // and return)". In TIME-WAIT a retransmitted FIN also restarts 2MSL.
            if !seg.rst() {
                self.ack_unacceptable(now, seg);
                if self.state == State::TimeWait && seg.fin() {
                    self.timers.set(Timer::Close, now + self.cfg.time_wait);
                }
            }
            // Sequence space already received, within the last window we
            // could have offered, is an honest peer's old news (counted
            // apart from segments beyond the window, and from RSTs).
            let old = if seg_len == 0 { seg.seq.lt(self.rcv_nxt) } else { seg.end().le(self.rcv_nxt) };
            let wholly_left = old && !seg.seq.lt(self.rcv_nxt - self.cfg.recv_buffer_size.max(65535));
            if wholly_left && seg.payload_len > 0 && !seg.syn() && !seg.rst() {
                // RFC 2883 §4 (1): a duplicate below the cumulative ACK.
                self.note_duplicate(seg.seq, seg.seq + seg.payload_len);
            }
            out.dropped = Some(if wholly_left && !seg.rst() { DropReason::Duplicate } else { DropReason::OutOfWindow });
            return;
        }
        self.last_rx = now;
        self.keepalive_probes = 0;
        if self.keepalive && matches!(self.state, State::Established | State::CloseWait) {
            self.timers.set(Timer::Keepalive, now + self.cfg.keepalive_idle);
        }
        // RFC 7323 §4.3: "If SEG.TSval >= TS.Recent and SEG.SEQ <= Last.ACK.sent,
        // then SEG.TSval is copied to TS.Recent; otherwise, it is ignored."
        if let Some(val) = tsval {
            if (val.wrapping_sub(self.ts_recent) as i32) >= 0 && seg.seq.le(self.last_ack_sent) {
                self.ts_recent = val;
                self.ts_recent_at = now;
            }
        }

        // Second, check the RST bit (RFC 5961 §3.2).
        if seg.rst() {
            // "If the RST bit is set and the sequence number exactly matches the
            // next expected sequence number (RCV.NXT), then TCP MUST reset the
            // connection in the manner prescribed below according to the
            // connection state."
            if seg.seq == self.rcv_nxt {
                out.reset = true;
                let error = match self.state {
                    // SYN-RECEIVED from a passive OPEN "return this connection
                    // to LISTEN state": the listener lives on; this TCB goes.
                    State::SynReceived if !self.active_open => None,
                    State::SynReceived => Some(ConnError::Refused),
                    // CLOSING, LAST-ACK, TIME-WAIT: "enter the CLOSED state".
                    State::Closing | State::LastAck | State::TimeWait => None,
                    _ => Some(ConnError::Reset),
                };
                self.enter_closed(error);
            } else {
                // "If the RST bit is set and the sequence number does not exactly
                // match the next expected sequence value, yet is within the
                // current receive window, TCP MUST send an acknowledgment
                // (challenge ACK)".
                self.challenge_ack(now);
                out.dropped = Some(DropReason::Rst);
            }
            return;
        }

        // Fourth, check the SYN bit.
        if seg.syn() {
            if self.state == State::SynReceived && !self.active_open {
                // RFC 9293: "If the connection was initiated with a passive OPEN,
                // then return this connection to the LISTEN state and return."
                self.enter_closed(None);
            } else {
                // RFC 5961 §4.2: "If the SYN bit is set, irrespective of the
                // sequence number, TCP MUST send an ACK (also referred to as
                // challenge ACK) to the remote peer".
                self.challenge_ack(now);
            }
            out.dropped = Some(DropReason::Syn);
            return;
        }

        // Fifth, check the ACK field: "if the ACK bit is off, drop the segment
        // and return".
        let Some(ack) = seg.ack else {
            out.dropped = Some(DropReason::NoAck);
            return;
        };
        if self.state == State::SynReceived {
            // "If SND.UNA < SEG.ACK =< SND.NXT, then enter ESTABLISHED state and
            // continue processing with the variables below set to: SND.WND <-
            // SEG.WND, SND.WL1 <- SEG.SEQ, SND.WL2 <- SEG.ACK". Otherwise "form a
            // reset segment <SEQ=SEG.ACK><CTL=RST> and send it."
            if !(ack.gt(self.snd_una) && ack.le(self.snd_max)) {
                out.reply = reset_for(seg);
                out.dropped = Some(DropReason::BadAck);
                return;
            }
            self.timers.stop(Timer::Retransmit);
            if self.syn_retransmits > 0 {
                self.rtt.syn_was_retransmitted();
            }
            self.establish(now, out);
            self.snd_wnd = u32::from(seg.window) << self.snd_wscale;
            self.max_snd_wnd = self.max_snd_wnd.max(self.snd_wnd);
            self.snd_wl1 = seg.seq;
            self.snd_wl2 = ack;
        }
        if !self.process_ack(now, seg, ack, payload, out, pool) {
            return;
        }
        let fin_acked = self.fin_acked();
        match self.state {
            // "FIN-WAIT-1 STATE: In addition to the processing for the ESTABLISHED
            // state, if the FIN segment is now acknowledged, then enter
            // FIN-WAIT-2 and continue processing in that state."
            State::FinWait1 if fin_acked => {
                self.state = State::FinWait2;
                if self.read_closed {
                    // Orphaned: don't wait forever for a peer that never closes.
                    self.timers.set(Timer::Close, now + self.cfg.fin_wait_2_timeout);
                }
            }
            // "CLOSING STATE: ... if the ACK acknowledges our FIN, then enter the
            // TIME-WAIT state; otherwise, ignore the segment."
            State::Closing => {
                if fin_acked {
                    self.enter_time_wait(now);
                }
                return;
            }
            // "LAST-ACK STATE: The only thing that can arrive in this state is an
            // acknowledgment of our FIN. If our FIN is now acknowledged, delete
            // the TCB, enter the CLOSED state, and return."
            State::LastAck => {
                if fin_acked {
                    self.enter_closed(None);
                }
                return;
            }
            // "TIME-WAIT STATE: The only thing that can arrive in this state is a
            // retransmission of the remote FIN. Acknowledge it, and restart the 2
            // MSL timeout."
            State::TimeWait => {
                if seg.fin() {
                    self.ack_now = true;
                    self.timers.set(Timer::Close, now + self.cfg.time_wait);
                }
                return;
            }
            _ => {}
        }
        // Sixth (URG) is not supported. Seventh and eighth: text and FIN.
        self.process_text(now, seg.seq, payload, seg.fin(), seg, out, pool);
    }

    /// Fifth check, ESTABLISHED and later. Returns false when the segment
    /// must be dropped.
    fn process_ack(
        &mut self,
        now: Instant,
        seg: &Segment,
        ack: SeqNumber,
        payload: &[u8],
        out: &mut SegmentOutcome,
        pool: &mut BufferPool,
    ) -> bool {
        // RFC 5961 §5.2: "the ACK value is considered acceptable only if it is in
        // the range of ((SND.UNA - MAX.SND.WND) =< SEG.ACK =< SND.NXT). All
        // incoming segments whose ACK value doesn't satisfy the above condition
        // MUST be discarded and an ACK sent back." (Rate-limited like other
        // challenge ACKs.)
        if ack.gt(self.snd_max) || ack.lt(self.snd_una - self.max_snd_wnd as usize) {
            self.challenge_ack(now);
            out.dropped = Some(DropReason::BadAck);
            return false;
        }
        let mss = self.eff_mss;
        let old_una = self.snd_una;
        let new_wnd = u32::from(seg.window) << self.snd_wscale;
        // RFC 2883 §4: "If the first SACK block's left edge is below the
        // cumulative acknowledgement, or it is wholly contained in the second
        // block, it reports a duplicate (D-SACK)".
        let mut blocks = seg.options.sack_blocks();
        let dsack = match (blocks.next(), blocks.next()) {
            (Some(first), second) if first.0.lt(ack) || second.is_some_and(|b| b.0.le(first.0) && first.1.le(b.1)) => {
                Some(first)
            }
            _ => None,
        };
        // RFC 6937 DeliveredData is SND.UNA's advance plus the change in
        // SACKed octets; the board is only read for an ACK with SACK blocks
        // (a receiver with holes left sends them; without, the ACK ends the
        // recovery or its receiver reneged, and SND.UNA's advance is close).
        let sack_news = self.sack && seg.options.sack_blocks[0].is_some();
        let sacked_before = if sack_news { self.recovery.board.sacked_bytes() } else { 0 };
        // RFC 2018 / RFC 6675: record SACK blocks; bogus ones are ignored.
        let mut sacked_new = false;
        if self.sack {
            for block in seg.options.sack_blocks() {
                sacked_new |= self.recovery.board.add(block, old_una.max(ack), self.snd_max);
            }
            self.rack_on_ack(now, seg, ack, dsack);
        }
        if ack.gt(old_una) {
            // "If SND.UNA < SEG.ACK =< SND.NXT, then set SND.UNA <- SEG.ACK. Any
            // segments on the retransmission queue that are thereby entirely
            // acknowledged are removed."
            let acked = ack.since(old_una) as usize;
            self.rtt_sample(now, seg, ack);
            let buf_end = self.buf_seq + self.send_buf.len();
            let data_acked = ack.min(buf_end).since(self.buf_seq) as usize;
            self.send_buf.consume(data_acked, pool);
            self.buf_seq = self.buf_seq + data_acked;
            self.stats.bytes_acked += data_acked as u64;
            self.snd_una = ack;
            self.snd_nxt = self.snd_nxt.max(ack);
            let flight_before = self.flight() + acked;
            match self.recovery.on_new_ack(ack, acked, mss) {
                AckEvent::Nothing if !self.recovery.in_recovery() => {
                    let limited = self.cwnd_limited || flight_before + mss >= self.cc.cwnd();
                    self.cc.on_ack(now, acked, self.rtt.srtt(), mss, limited);
                }
                _ => {}
            }
            self.rto_in_row = 0;
            self.persist_backoff = 0;
            // RFC 6298 §5.2: "When all outstanding data has been acknowledged,
            // turn off the retransmission timer." §5.3: "When an ACK is received
            // that acknowledges new data, restart the retransmission timer".
            if self.snd_una.ge(self.snd_nxt) {
                self.timers.stop(Timer::Retransmit);
                self.timers.stop(Timer::LossProbe);
                if self.snd_una.ge(self.snd_max) {
                    // Nothing outstanding: the scoreboard goes until the
                    // next SACK, the transmit log until the next send (an
                    // idle connection holds no box).
                    self.recovery.board.shrink();
                    self.recovery.shrink_log(pool);
                }
            } else {
                self.timers.set(Timer::Retransmit, now + self.rtt.rto());
                // RFC 8985 §7.2: restart the PTO "upon receiving an ACK that
                // cumulatively acknowledges new data".
                self.arm_loss_probe(now);
            }
        } else if ack == old_una
            && self.snd_nxt.gt(old_una)
            && payload.is_empty()
            && !seg.syn()
            && !seg.fin()
            && (new_wnd == self.snd_wnd || sacked_new)
        {
            // RFC 5681 §2 DUPLICATE ACKNOWLEDGMENT: outstanding data, no data,
            // no SYN/FIN, same ACK number, same window (or, RFC 6675, new SACK
            // information).
            bump(&mut self.stats.dup_acks_in);
            let flight = self.snd_max.since(self.snd_una) as usize;
            if self.recovery.on_dup_ack(old_una, self.snd_max, mss) == AckEvent::EnterRecovery {
                bump(&mut self.stats.fast_recoveries);
                self.recovery.undo_arm(self.snd_una, self.cc.cwnd(), self.cc.ssthresh());
                self.cc.on_congestion_event(now, flight, mss);
                self.recovery.prr_start(flight, self.flight(), mss);
                // Recovery's reduction covers whatever a probe repaired.
                self.tlp.end_episode();
                // Karn: the segment being timed may be retransmitted.
                self.set_timed(None);
            }
        }
        if ack.ge(old_una) {
            if self.sack {
                self.detect_losses(now);
            }
            self.on_ack_for_loss_probe(now, seg, ack, old_una, dsack, payload.is_empty());
            if self.recovery.prr_active() {
                let sacked_after = if sack_news { self.recovery.board.sacked_bytes() } else { 0 };
                let delivered = (ack.since(old_una) as usize + sacked_after).saturating_sub(sacked_before);
                self.recovery.prr_on_ack(delivered, self.flight(), self.cc.ssthresh(), mss);
            }
            if let Some(block) = dsack {
                self.recovery.undo_on_dsack(block, mss);
            }
            if let Some((cwnd, ssthresh)) = self.recovery.take_undo() {
                self.cc.undo(cwnd, ssthresh);
                bump(&mut self.stats.recoveries_undone);
            }
        }
        // "If SND.UNA =< SEG.ACK =< SND.NXT, the send window should be updated.
        // If (SND.WL1 < SEG.SEQ or (SND.WL1 = SEG.SEQ and SND.WL2 =< SEG.ACK)),
        // set SND.WND <- SEG.WND, set SND.WL1 <- SEG.SEQ, and set SND.WL2 <-
        // SEG.ACK."
        if ack.ge(old_una) && (self.snd_wl1.lt(seg.seq) || (self.snd_wl1 == seg.seq && self.snd_wl2.le(ack))) {
            self.snd_wnd = new_wnd;
            self.snd_wl1 = seg.seq;
            self.snd_wl2 = ack;
            self.max_snd_wnd = self.max_snd_wnd.max(new_wnd);
            if new_wnd > 0 {
                self.timers.stop(Timer::Persist);
                self.persist_backoff = 0;
            }
        }
        true
    }

    /// RFC 8985 §6.2 steps 1-4: what this ACK delivered, for RACK.
    fn rack_on_ack(&mut self, now: Instant, seg: &Segment, ack: SeqNumber, dsack: Option<SackBlock>) {
        // The SACK blocks other than a D-SACK, lowest first (RACK.fack and
        // reordering are judged in sequence order).
        let mut blocks = [(SeqNumber(0), SeqNumber(0)); 4];
        let mut n = 0;
        for block in seg.options.sack_blocks().skip(usize::from(dsack.is_some())) {
            blocks[n] = block;
            n += 1;
        }
        // By distance from the ACK: a total order whatever the peer sent.
        blocks[..n].sort_unstable_by_key(|b| b.0 .0.wrapping_sub(ack.0));
        // RFC 7323 TSecr, mapped back onto our clock.
        let echoed = seg.options.timestamp.filter(|&(_, ecr)| self.timestamps && ecr != 0).and_then(|(_, ecr)| {
            let elapsed = self.ts_now(now).wrapping_sub(ecr);
            (elapsed < 1 << 31).then(|| now - Duration::from_millis(u64::from(elapsed)))
        });
        let info = AckInfo { now, ack, sacked: &blocks[..n], dsack: dsack.is_some(), echoed, snd_nxt: self.snd_nxt };
        self.recovery.rack_on_ack(&info);
    }

    /// RFC 8985 §7.4: did a tail loss probe repair a loss? And §7.2: the PTO
    /// does not run once segments are SACKed or recovery began.
    fn on_ack_for_loss_probe(
        &mut self,
        now: Instant,
        seg: &Segment,
        ack: SeqNumber,
        old_una: SeqNumber,
        dsack: Option<SackBlock>,
        no_payload: bool,
    ) {
        let pure_dupack = ack == old_una && no_payload && seg.options.sack_blocks().next().is_none();
        if self.tlp.on_ack(ack, dsack, pure_dupack) == ProbeVerdict::RepairedLoss {
            // "(Invoke congestion control to lower cwnd and ssthresh)"
            bump(&mut self.stats.loss_probe_repairs);
            let flight = self.snd_max.since(self.snd_una) as usize;
            self.cc.on_congestion_event(now, flight, self.eff_mss);
        }
        if !self.loss_probe_allowed() {
            self.timers.stop(Timer::LossProbe);
        }
    }

    /// RTT measurement: RFC 7323 §4 RTTM from the echoed timestamp, else
    /// the one timed segment, which Karn's algorithm never takes from a
    /// retransmission.
    fn rtt_sample(&mut self, now: Instant, seg: &Segment, ack: SeqNumber) {
        if self.timestamps {
            if let Some((_, tsecr)) = seg.options.timestamp {
                let elapsed = self.ts_now(now).wrapping_sub(tsecr);
                if tsecr != 0 && elapsed < (1 << 31) {
                    self.rtt.on_sample(Duration::from_millis(u64::from(elapsed)));
                    self.set_timed(None);
                    return;
                }
            }
        }
        if let Some((seq, at)) = self.timed() {
            if ack.gt(seq) {
                self.rtt.on_sample(now.saturating_since(at));
                self.set_timed(None);
            }
        }
    }

    /// Seventh and eighth checks: segment text and FIN. `seq` is the sequence
    /// number of the first payload byte.
    #[allow(clippy::too_many_arguments)]
    fn process_text(
        &mut self,
        now: Instant,
        seq: SeqNumber,
        payload: &[u8],
        fin: bool,
        seg: &Segment,
        out: &mut SegmentOutcome,
        pool: &mut BufferPool,
    ) {
        let (mut seq, mut data, mut fin) = (seq, payload, fin);
        // Trim what we already have ...
        if seq.lt(self.rcv_nxt) {
            let skip = self.rcv_nxt.since(seq) as usize;
            if skip > data.len() {
                fin = false;
            }
            if !data.is_empty() {
                // A segment that starts with bytes we already have (Linux's
                // "partial packet" case of tcp_data_queue).
                self.note_duplicate(seq, seq + skip.min(data.len()));
            }
            data = &data[skip.min(data.len())..];
            seq = self.rcv_nxt;
        }
        // ... and what lies beyond the window ("Segments with higher beginning
        // sequence numbers may be held for later processing"; text past the
        // right edge is dropped and its FIN with it).
        let room = self.rcv_adv.since(seq) as usize;
        if !self.state.accepts_data() {
            // CLOSE-WAIT, CLOSING, LAST-ACK, TIME-WAIT: "This should not occur
            // since a FIN has been received from the remote side. Ignore the
            // segment text." (A second FIN is ignored likewise.)
            return;
        }
        if data.len() > room {
            data = &data[..room];
            fin = false;
            self.ack_now = true;
        }
        if !data.is_empty() {
            if self.read_closed {
                // The application will never read this: reset (RFC 2525 §2.17).
                out.reply = reset_for(seg);
                out.dropped = Some(DropReason::DataAfterClose);
                self.enter_closed(Some(ConnError::Aborted));
                return;
            }
            self.receive_data(now, seq, data, out, pool);
        }
        if fin {
            let fin_at = seq + data.len();
            if fin_at == self.rcv_nxt {
                self.process_fin(now, out);
            } else if fin_at.gt(self.rcv_nxt) {
                self.ooo_fin = Some(fin_at);
                self.ack_now = true;
            }
        } else if self.ooo_fin == Some(self.rcv_nxt) {
            self.process_fin(now, out);
        }
    }

    fn receive_data(
        &mut self,
        now: Instant,
        seq: SeqNumber,
        data: &[u8],
        out: &mut SegmentOutcome,
        pool: &mut BufferPool,
    ) {
        let len = u16::try_from(data.len()).unwrap_or(u16::MAX);
        self.rcv_mss = self.rcv_mss.max(len).min(self.cfg.mss);
        if seq == self.rcv_nxt {
            // "Once in the ESTABLISHED state, it is possible to deliver segment
            // data to user RECEIVE buffers ... RCV.NXT is advanced over the data
            // accepted".
            let mut n = self.recv_buf.write_at(0, data, pool);
            if n < data.len() && !self.reassembly.is_empty() {
                // The pool ran dry while out-of-order islands hold chunks:
                // renege on them (RFC 2018 §8 lets a receiver discard data
                // it only SACKed; the sender keeps it until it is
                // cumulatively acknowledged) so the bytes at RCV.NXT fit.
                // Otherwise islands can hold the last chunks while the
                // segment that would join them never finds room, and the
                // connection stalls for good (the sequence fuzzer found it).
                self.recv_buf.drop_out_of_order(pool);
                self.reassembly = Reassembly::new(self.cfg.max_ooo_ranges);
                self.ooo_fin = None;
                n = self.recv_buf.write_at(0, data, pool);
            }
            if n < data.len() {
                // The pool ran dry: keep what fit, the peer resends the rest.
                out.dropped = Some(DropReason::NoBuffer);
                self.ack_now = true;
            }
            let before = self.rcv_nxt;
            let filled_hole = !self.reassembly.is_empty();
            self.rcv_nxt = self.reassembly.advance(before + n);
            if filled_hole && self.reassembly.is_empty() {
                self.reassembly.shrink();
            }
            let delivered = self.rcv_nxt.since(before) as usize;
            self.recv_buf.commit(delivered);
            self.stats.bytes_in += delivered as u64;
            if filled_hole {
                // RFC 5681 §4.2: "an immediate ACK SHOULD be generated when a
                // segment arrives that fills in all or part of a gap".
                self.ack_now = true;
            } else {
                // RFC 5681 §4.2: "an ACK SHOULD be generated for at least every
                // second full-sized segment, and MUST be generated within 500 ms
                // of the arrival of the first unacknowledged packet."
                // Counted in bytes, as Linux does ("more than one full frame
                // received", `__tcp_ack_snd_check`): a coalesced segment (GRO)
                // is ACKed as the segments it stands for were, even when the
                // peer's segments are a little smaller than `rcv_mss` (its
                // options), and a full segment followed by a short one (the
                // tail of a burst) is ACKed now, not after the delayed-ACK
                // timer that a Linux sender's tail loss probe would beat with
                // a needless retransmission.
                self.bytes_unacked = self.bytes_unacked.saturating_add(u32::try_from(data.len()).unwrap_or(u32::MAX));
                let ack_after = self.cfg.ack_every.saturating_sub(1).saturating_mul(u32::from(self.rcv_mss));
                if self.bytes_unacked > ack_after {
                    self.ack_now = true;
                } else {
                    self.timers.start(Timer::DelayedAck, now + self.cfg.delayed_ack);
                }
            }
            if self.ooo_fin == Some(self.rcv_nxt) {
                self.process_fin(now, out);
            }
        } else {
            // Out of order: store in place, remember the island, and RFC 5681
            // §4.2: "A TCP receiver SHOULD send an immediate duplicate ACK when
            // an out-of-order segment arrives."
            let offset = seq.since(self.rcv_nxt) as usize;
            let n = self.recv_buf.write_at(offset, data, pool);
            if n < data.len() {
                out.dropped = Some(DropReason::NoBuffer);
            }
            match self.reassembly.insert(seq, seq + n) {
                _ if n == 0 => {}
                Inserted::TooManyIslands => out.dropped = Some(DropReason::ReassemblyFull),
                // RFC 2883 §4 (2): a duplicate of data held out of order; the
                // island that holds it, now the most recently changed, is the
                // next SACK block.
                Inserted::Duplicate => self.note_duplicate(seq, seq + n),
                Inserted::Stored => {}
            }
            self.ack_now = true;
        }
    }

    /// Remembers `[start, end)`, data that arrived twice, for the first SACK
    /// block of our next ACK (D-SACK, RFC 2883), when SACK was negotiated.
    /// The latest duplicate wins: each is reported once, in the ACK it draws.
    fn note_duplicate(&mut self, start: SeqNumber, end: SeqNumber) {
        if self.sack && start.lt(end) {
            self.dsack = (start, end);
            bump(&mut self.stats.dsacks_sent);
        }
    }

    /// Eighth check, the FIN bit, once it is in order.
    fn process_fin(&mut self, now: Instant, out: &mut SegmentOutcome) {
        // "advance RCV.NXT over the FIN, and send an acknowledgment for the FIN."
        self.rcv_nxt = self.rcv_nxt + 1;
        self.ooo_fin = None;
        self.fin_received = true;
        self.ack_now = true;
        out.peer_fin = true;
        match self.state {
            // "SYN-RECEIVED STATE, ESTABLISHED STATE: Enter the CLOSE-WAIT state."
            State::SynReceived | State::Established => self.state = State::CloseWait,
            // "FIN-WAIT-1 STATE: If our FIN has been ACKed (perhaps in this
            // segment), then enter TIME-WAIT, start the time-wait timer, turn off
            // the other timers; otherwise, enter the CLOSING state."
            State::FinWait1 if self.fin_acked() => self.enter_time_wait(now),
            State::FinWait1 => self.state = State::Closing,
            // "FIN-WAIT-2 STATE: Enter the TIME-WAIT state. Start the time-wait
            // timer, turn off the other timers."
            State::FinWait2 => self.enter_time_wait(now),
            _ => {}
        }
    }

    fn enter_time_wait(&mut self, now: Instant) {
        self.state = State::TimeWait;
        self.timers.stop_all();
        self.timers.set(Timer::Close, now + self.cfg.time_wait);
    }

    /// "If an incoming segment is not acceptable, an acknowledgment should be
    /// sent in reply": queued, except that a pure ACK or a SYN is answered at
    /// most once per `invalid_ack_interval` (as Linux's
    /// `tcp_oow_rate_limited`). Two ends that each find the other's ACKs
    /// unacceptable (a window that shrank, a FIN past the window) would
    /// otherwise answer each other forever; a segment with data or a FIN is
    /// not part of such a loop and is always answered.
    fn ack_unacceptable(&mut self, now: Instant, seg: &Segment) {
        let loop_prone = seg.syn() || (seg.payload_len == 0 && !seg.fin());
        if loop_prone && now < self.invalid_ack_from {
            bump(&mut self.stats.invalid_acks_suppressed);
            return;
        }
        if loop_prone {
            self.invalid_ack_from = now + self.cfg.invalid_ack_interval;
        }
        self.ack_now = true;
    }

    /// Queues a challenge ACK (RFC 5961 §3.2, §4.2, §5.2) unless this
    /// connection already sent its quota this second (RFC 5961 §7: "limit
    /// the number of challenge ACKs a TCP stack can send").
    fn challenge_ack(&mut self, now: Instant) {
        if now.saturating_since(self.challenge_window) >= Duration::from_secs(1) {
            self.challenge_window = now;
            self.challenge_count = 0;
        }
        if self.challenge_count < self.cfg.challenge_ack_limit {
            self.challenge_count += 1;
            bump(&mut self.stats.challenge_acks);
            self.ack_now = true;
        } else {
            bump(&mut self.stats.challenge_acks_suppressed);
        }
    }

    /// Whether `poll_transmit` is likely to produce a segment.
    fn wants_transmit(&self) -> bool {
        self.rst_due
            || self.ack_now
            || self.syn_due
            || (self.state.is_synchronized()
                && (self.buf_seq + self.send_buf.len()).gt(self.snd_nxt)
                && self.snd_wnd > 0)
            || self.fin_seq().is_some_and(|f| self.snd_nxt.le(f))
    }
}
