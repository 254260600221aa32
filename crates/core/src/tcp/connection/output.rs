//! Segment departure: what to send next, in priority order — RST, SYN or
//! SYN-ACK, loss-recovery retransmissions, new data (Nagle, sender SWS
//! avoidance, congestion and receive windows), FIN, zero-window and
//! keepalive probes, and finally a bare ACK.

use super::{bump, Connection};
use crate::tcp::pool::BufferPool;
use crate::tcp::segment::{Flags, Options, SackBlock, Segment};
use crate::tcp::seq::SeqNumber;
use crate::tcp::state::State;
use crate::tcp::timers::Timer;
use crate::time::Instant;

impl Connection {
    /// The next segment to send, or `None`. Call in a loop after every
    /// handler or application call.
    ///
    /// `max_payload` is the room after the IPv4 header and the fixed 20-byte
    /// TCP header (MTU − 40 on a plain Ethernet link); TCP options come out of
    /// it, so `seg.options.wire_len() + seg.payload_len <= max_payload`.
    /// Copy the payload with [`Connection::read_payload`] before calling any
    /// other `&mut self` method.
    ///
    /// `pool` is only looked at: the receive window offered is clamped to
    /// what it can still give.
    pub fn poll_transmit(&mut self, now: Instant, max_payload: usize, pool: &BufferPool) -> Option<Segment> {
        self.poll_transmit_tso(now, max_payload, 0, pool)
    }

    /// As [`Connection::poll_transmit`], for a device with TCP segmentation
    /// offload: new data may leave as one super-segment of up to
    /// `tso_payload` bytes after the IPv4 and fixed TCP headers (the device's
    /// TSO limit − 40), always a whole number of segments of the size a
    /// plain send would use (`mss`, which `seg.payload_len` then exceeds), so
    /// the device cuts exactly the segments we would have sent. Only full
    /// segments are ever merged: whatever would have gone as one full
    /// segment is extended while the data, the peer's window and the
    /// congestion window all allow; Nagle, SWS avoidance, probes and
    /// retransmissions see single segments as before, and RACK and the SACK
    /// scoreboard account in sequence ranges, so the segments a
    /// super-segment stands for are tracked as if sent one by one at once.
    /// `tso_payload <= max_payload` turns it off.
    pub fn poll_transmit_tso(
        &mut self,
        now: Instant,
        max_payload: usize,
        tso_payload: usize,
        pool: &BufferPool,
    ) -> Option<Segment> {
        self.note_pool(pool);
        if self.send_buf.len() > 0 || self.fin_queued {
            self.recovery.prepare_log(pool, self.snd_una);
        }
        if self.rst_due {
            self.rst_due = false;
            return Some(self.emit(Segment {
                seq: self.snd_max,
                ack: None,
                flags: Flags::RST,
                window: 0,
                options: Options::default(),
                payload_len: 0,
            }));
        }
        if self.read_closed && self.state == State::FinWait2 && self.timers.get(Timer::Close).is_none() {
            self.timers.set(Timer::Close, now + self.cfg.fin_wait_2_timeout);
        }
        match self.state {
            State::Closed | State::Listen => None,
            State::SynSent => self.syn_due.then(|| self.send_syn(now, false)),
            // A bare ACK in SYN-RECEIVED would be our SYN-ACK without the SYN:
            // resend the SYN-ACK instead (it acknowledges the same thing).
            State::SynReceived => (self.syn_due || self.ack_now).then(|| self.send_syn(now, true)),
            State::TimeWait => self.ack_now.then(|| self.bare_ack(now, max_payload)),
            _ => self.transmit_synchronized(now, max_payload, tso_payload),
        }
    }

    /// Copies the payload of `seg` (returned by the last `poll_transmit`)
    /// from the send buffer (chunks of `pool`) into `dst[..seg.payload_len]`.
    pub fn read_payload(&self, seg: &Segment, dst: &mut [u8], pool: &BufferPool) {
        let offset = seg.seq.since(self.buf_seq) as usize;
        let n = seg.payload_len.min(dst.len());
        self.send_buf.copy_out(offset, &mut dst[..n], pool);
    }

    /// RFC 9293 §3.10.1 (OPEN) / §3.10.7.2 (SYN in LISTEN): "<SEQ=ISS><CTL=SYN>"
    /// or "<SEQ=ISS><ACK=RCV.NXT><CTL=SYN,ACK>", with our options.
    fn send_syn(&mut self, now: Instant, with_ack: bool) -> Segment {
        let first = self.snd_max == self.iss;
        if first {
            self.set_timed(Some((self.iss, now)));
        } else if self.syn_due {
            bump(&mut self.stats.retransmits);
        }
        let cfg = &self.cfg;
        let mut options = Options { mss: Some(self.tuple.advertised_mss(cfg.mss)), ..Options::default() };
        if with_ack {
            // Only what the peer offered (RFC 7323 §2.2, §3.2; RFC 2018 §2).
            if self.window_scaling {
                options.window_scale = Some(self.rcv_wscale);
            }
            options.sack_permitted = self.sack;
            if self.timestamps {
                options.timestamp = Some((self.ts_now(now), self.ts_recent));
            }
        } else {
            options.window_scale = cfg.window_scaling.then(|| cfg.our_window_scale());
            options.sack_permitted = cfg.sack;
            options.timestamp = cfg.timestamps.then(|| (self.ts_now(now), 0));
        }
        // "The window field in a segment where the SYN bit is set ... MUST NOT
        // be scaled."
        let window = self.recv_buf.free().min(self.pool_room as usize).min(65535);
        let seg = Segment {
            seq: self.iss,
            ack: with_ack.then_some(self.rcv_nxt),
            flags: Flags::SYN,
            window: window as u16,
            options,
            payload_len: 0,
        };
        if with_ack {
            self.rcv_adv = self.rcv_adv.max(self.rcv_nxt + window);
            self.last_ack_sent = self.rcv_nxt;
        }
        self.syn_due = false;
        self.ack_now = false;
        self.snd_nxt = self.iss + 1;
        self.snd_max = self.snd_max.max(self.iss + 1);
        self.timers.set(Timer::Retransmit, now + self.rtt.rto());
        self.emit(seg)
    }

    fn transmit_synchronized(&mut self, now: Instant, max_payload: usize, tso_payload: usize) -> Option<Segment> {
        let options = self.data_options(now);
        let room = max_payload.saturating_sub(options.wire_len());
        let mss = self.eff_mss.min(room);
        // Every segment the device cuts repeats our header and options.
        let burst = if tso_payload > max_payload && mss > 0 {
            (tso_payload.saturating_sub(options.wire_len()) / mss).max(1) * mss
        } else {
            mss
        };
        if mss > 0 {
            if let Some(seg) = self.next_data(now, mss, burst, options) {
                return Some(seg);
            }
        }
        if self.keepalive_due {
            // RFC 9293 §3.8.4: "sending a segment with SEG.SEQ = SND.NXT-1" so
            // the peer must answer with an ACK.
            self.keepalive_due = false;
            bump(&mut self.stats.keepalive_probes);
            let mut seg = self.ack_segment(now, options);
            seg.seq = self.snd_una - 1;
            return Some(self.emit(seg));
        }
        self.ack_now.then(|| self.bare_ack(now, max_payload))
    }

    /// Timestamp and SACK options for a segment of the synchronized states.
    fn data_options(&self, now: Instant) -> Options {
        let mut options = Options::default();
        if self.timestamps {
            // RFC 7323 §3.2: "TSecr ... echoes TS.Recent".
            options.timestamp = Some((self.ts_now(now), self.ts_recent));
        }
        if self.sack && (self.dsack.0 != self.dsack.1 || !self.reassembly.is_empty()) {
            options.sack_blocks = self.sack_blocks();
        }
        options
    }

    /// The SACK blocks of our next ACK: a D-SACK first if there is one, then
    /// the islands, the most recently changed first. Out of line: on an
    /// in-order exchange there are none.
    #[inline(never)]
    fn sack_blocks(&self) -> [Option<SackBlock>; 4] {
        // RFC 2018 §3: at most 3 blocks fit beside a timestamp, 4 without.
        let max = if self.timestamps { 3 } else { 4 };
        if self.dsack.0 == self.dsack.1 {
            return self.reassembly.sack_blocks(max);
        }
        // RFC 2883 §4: "the first SACK block ... MUST specify the contiguous
        // sequence space of the received duplicate segment".
        let mut blocks = [None; 4];
        blocks[0] = Some(self.dsack);
        blocks[1..max].copy_from_slice(&self.reassembly.sack_blocks(max - 1)[..max - 1]);
        blocks
    }

    /// RFC 9293's "<SEQ=SND.NXT><ACK=RCV.NXT><CTL=ACK>". Our SND.NXT may have
    /// been rewound by go-back-N; the peer's RCV.NXT can be as far as our
    /// SND.MAX, and an ACK below it would be unacceptable there. One
    /// exception: right after a zero-window probe (SND.MAX one past SND.NXT,
    /// the peer's window zero) the peer most likely refused the probe byte,
    /// and a zero-window receiver accepts only SEG.SEQ = RCV.NXT
    /// (§3.10.7.4): an ACK at SND.MAX would be dropped with the window
    /// update it carries and both ends could wait forever (the preload
    /// library's duplex stall against Linux). Linux's `tcp_acceptable_seq`
    /// uses the window's right edge whenever SND.NXT is past it; we cannot:
    /// our receivers shrink their windows under pool pressure, so a peer may
    /// hold everything up to SND.MAX with its advertised window ending far
    /// below, and two stacks sending ACKs below each other's RCV.NXT dropped
    /// and answered each other's ACKs forever (tcp_sequence fuzz target).
    fn ack_segment(&self, _now: Instant, options: Options) -> Segment {
        // (Once our SYN is acknowledged: before that SND.WND means nothing.)
        let after_probe = self.snd_una != self.iss && self.snd_wnd == 0 && self.snd_max == self.snd_nxt + 1;
        let seq = if after_probe { self.snd_nxt } else { self.snd_max };
        Segment { seq, ack: Some(self.rcv_nxt), flags: Flags::NONE, window: 0, options, payload_len: 0 }
    }

    fn bare_ack(&mut self, now: Instant, max_payload: usize) -> Segment {
        let mut options = self.data_options(now);
        // Drop SACK blocks that do not fit (tiny MTUs only).
        while options.wire_len() > max_payload && options.sack_blocks().count() > 0 {
            let last = options.sack_blocks().count() - 1;
            options.sack_blocks[last] = None;
        }
        let mut seg = self.ack_segment(now, options);
        if seg.seq != self.snd_max {
            // After a probe the peer's RCV.NXT is SND.NXT (probe refused) or
            // SND.MAX (accepted), and an ACK at the wrong one is dropped and
            // answered. Alternating makes one of any two acceptable, so two
            // ends that both probed cannot answer each other's dropped ACKs
            // forever (tcp_sequence fuzz target).
            if self.probe_ack_at_max {
                seg.seq = self.snd_max;
            }
            self.probe_ack_at_max = !self.probe_ack_at_max;
        }
        self.emit(seg)
    }

    /// Retransmissions from loss recovery, then new data (or, after an RTO,
    /// go-back-N resends from SND.NXT), then the FIN, then probes.
    fn next_data(&mut self, now: Instant, mss: usize, burst: usize, options: Options) -> Option<Segment> {
        if self.tlp_due {
            self.tlp_due = false;
            if let Some(seg) = self.loss_probe(now, mss, options) {
                return Some(seg);
            }
        }
        let buf_end = self.buf_seq + self.send_buf.len();
        let cwnd_room = self.cwnd_room();
        // RFC 6675 §5 (C): "If cwnd - pipe >= 1 SMSS the sender SHOULD transmit
        // one or more segments" chosen by NextSeg(); the fast retransmit itself
        // (4.3) goes out regardless of the window.
        if let Some((seq, len)) = self.recovery.next_retransmit(self.snd_una, mss) {
            let forced = self.recovery.in_recovery() && seq == self.snd_una;
            if forced || cwnd_room >= mss {
                let len = len.min(buf_end.since(seq) as usize);
                let fin = self.fin_seq() == Some(seq + len) && self.snd_max.gt(seq + len);
                if len > 0 || fin {
                    // The FIN counts: HighRxt must pass it, or a FIN-only
                    // resend would be chosen again at once, forever.
                    self.recovery.on_retransmitted(seq + len + usize::from(fin));
                    return Some(self.data_segment(now, seq, len, fin, options));
                }
            }
        }

        // Go-back-N after an RTO (SND.NXT < SND.MAX): RFC 6675 §5.1, "a SACK
        // TCP sender SHOULD utilize all SACK information made available during
        // the slow start phase of loss recovery following an RTO". What the
        // peer SACKed since the timeout is stepped over, and a resend stops
        // where the next SACKed range begins.
        let mut sacked_above = None;
        if self.snd_nxt.lt(self.snd_max) {
            let (first, limit) = self.recovery.board.skip_sacked(self.snd_nxt);
            if first != self.snd_nxt {
                self.snd_nxt = first;
                // SACKed is not acknowledged (the peer may renege): the timer
                // keeps watching SND.UNA even if nothing is left to resend.
                self.timers.start(Timer::Retransmit, now + self.rtt.rto());
            }
            sacked_above = limit;
        }
        let start = self.snd_nxt;
        let available = buf_end.since(start) as usize;
        let fin_pending = self.fin_seq().is_some_and(|f| start.le(f));
        let resend = start.lt(self.snd_max);
        let wnd_room = (self.snd_una + self.snd_wnd as usize).since(start) as usize;
        let in_flight = self.snd_nxt.gt(self.snd_una);
        let before_sacked = sacked_above.map_or(usize::MAX, |s| s.since(start) as usize);
        let want = available.min(mss).min(before_sacked);
        let len = want.min(wnd_room).min(cwnd_room);

        if self.probe_due {
            // RFC 9293 §3.8.6.1: "The sending TCP peer must regularly transmit at
            // least one octet of new data (if available), even if the send window
            // is zero". The probe does not advance SND.NXT; its ACK may.
            self.probe_due = false;
            if available > 0 && len == 0 {
                bump(&mut self.stats.zero_window_probes);
                self.probe_ack_at_max = false;
                let seg = self.data_segment(now, start, 1, false, options);
                self.snd_nxt = start;
                self.timers.stop(Timer::Retransmit);
                self.arm_persist(now);
                return Some(seg);
            }
            // Window open but SWS-blocked: the override timeout sends what fits.
            if len > 0 {
                return Some(self.data_segment(now, start, len, false, options));
            }
            if available == 0 && fin_pending && !self.fin_may_go(start) {
                // Only the FIN waits, for room in a window it may not enter.
                // Ask for the window as Linux's tcp_write_wakeup does: a bare
                // ACK one below SND.UNA, which the peer must answer.
                bump(&mut self.stats.zero_window_probes);
                let mut seg = self.ack_segment(now, options);
                seg.seq = self.snd_una - 1;
                self.arm_persist(now);
                return Some(self.emit(seg));
            }
        }

        if len < want {
            if cwnd_room < want.min(wnd_room) {
                // Congestion-limited: wait for ACKs rather than send a runt.
                self.cwnd_limited = true;
                if len < want && in_flight {
                    return self.rescue(now, mss, options, cwnd_room);
                }
            } else if len == 0 || !(resend || len * 2 >= self.max_snd_wnd as usize) {
                // RFC 9293 §3.8.6.2.1 sender SWS avoidance: send only if "(1) a
                // maximum-sized segment can be sent ... (2) data is pushed and
                // all queued data can be sent now ... (3) at least a fraction Fs
                // of the maximum window can be sent" (Fs = 1/2). Otherwise wait
                // for the window, with the persist timer as the override.
                if !in_flight {
                    self.arm_persist(now);
                }
                return self.rescue(now, mss, options, cwnd_room);
            }
        } else if want > 0 {
            self.cwnd_limited = false;
        }

        if len > 0 && len < mss && len == available && !resend && !self.nodelay && !fin_pending {
            // Nagle (RFC 9293 §3.7.4): "If there is unacknowledged data (i.e.,
            // SND.NXT > SND.UNA), then the sending TCP endpoint buffers all user
            // data ... until the outstanding data has been acknowledged or until
            // the TCP endpoint can send a full-sized segment". Minshall's variant:
            // only while an earlier *small* segment is unacknowledged.
            if in_flight && self.snd_sml.gt(self.snd_una) {
                return None;
            }
        }
        let len = if len == mss && burst > mss {
            // A full segment goes: make it as many full segments as may go
            // now (TSO). A partial tail is left for the next call, which
            // judges it by Nagle and SWS avoidance like any small segment.
            let most = available.min(burst).min(before_sacked).min(wnd_room).min(cwnd_room);
            most - most % mss
        } else {
            len
        };
        let fin_next = fin_pending && start + len == self.fin_seq().unwrap_or(start);
        let fin = fin_next && self.fin_may_go(start + len);
        if len == 0 && !fin {
            if fin_next && !in_flight {
                // Only the FIN is left and the window has no room for it:
                // no ACK is coming to open it, so the persist timer asks.
                self.arm_persist(now);
            }
            return self.rescue(now, mss, options, cwnd_room);
        }
        Some(self.data_segment(now, start, len, fin, options))
    }

    /// RFC 8985 §7.3 TLP_send_probe(): "If an unsent segment exists AND the
    /// receive window allows new data to be sent: Transmit the lowest-sequence
    /// unsent segment of up to SMSS ... Else: Retransmit the highest-sequence
    /// segment sent so far". The congestion window does not hold it back.
    fn loss_probe(&mut self, now: Instant, mss: usize, options: Options) -> Option<Segment> {
        if !self.loss_probe_allowed() {
            return None;
        }
        let buf_end = self.buf_seq + self.send_buf.len();
        let wnd_end = self.snd_una + self.snd_wnd as usize;
        let unsent = buf_end.since(self.snd_max).min(wnd_end.since(self.snd_max)) as usize;
        let fin = self.fin_seq();
        let new_fin = |at: SeqNumber| fin == Some(at) && self.fin_may_go(at);
        let (seq, len, with_fin, retransmission) = if unsent > 0 || new_fin(self.snd_max) {
            let len = unsent.min(mss);
            (self.snd_max, len, new_fin(self.snd_max + len), false)
        } else {
            // The highest segment: up to an MSS below SND.MAX (and its FIN).
            let fin_sent = fin.is_some_and(|f| f.lt(self.snd_max));
            let data_end = if fin_sent { self.snd_max - 1 } else { self.snd_max };
            let len = (data_end.since(self.snd_una) as usize).min(mss);
            (data_end - len, len, fin_sent, true)
        };
        if len == 0 && !with_fin {
            return None;
        }
        let seg = self.data_segment(now, seq, len, with_fin, options);
        // §7.4.1: "TLP.end_seq = SND.NXT".
        self.tlp.on_probe_sent(seq, self.snd_max, retransmission);
        bump(&mut self.stats.loss_probes);
        // §7.3: "After attempting to send a loss probe ... the sender MUST
        // re-arm the RTO timer, not the PTO timer, if FlightSize is not zero."
        self.timers.stop(Timer::LossProbe);
        self.timers.set(Timer::Retransmit, now + self.rtt.rto());
        Some(seg)
    }

    /// RFC 6675 NextSeg() rule (3), when neither a lost segment nor new data
    /// could go.
    fn rescue(&mut self, now: Instant, mss: usize, options: Options, cwnd_room: usize) -> Option<Segment> {
        if cwnd_room < mss {
            return None;
        }
        let (seq, len) = self.recovery.next_rescue(self.snd_una, mss)?;
        let len = len.min((self.buf_seq + self.send_buf.len()).since(seq) as usize);
        if len == 0 {
            return None;
        }
        self.recovery.on_retransmitted(seq + len);
        Some(self.data_segment(now, seq, len, false, options))
    }

    /// Whether our FIN may go at sequence number `at`: it takes a sequence
    /// number, so a first transmission must fit inside the peer's window
    /// (Linux's tcp_snd_wnd_test counts it too). Sent past the window, it is
    /// refused, and every ACK we send after it carries a sequence number the
    /// peer finds out of window. A retransmission goes as before: the
    /// window it was sent into may have shrunk since.
    fn fin_may_go(&self, at: SeqNumber) -> bool {
        at.lt(self.snd_max) || at.lt(self.snd_una + self.snd_wnd as usize)
    }

    /// A segment carrying `[seq, seq + len)` of the send buffer (and our FIN
    /// when `fin`), with every side effect of sending it.
    fn data_segment(&mut self, now: Instant, seq: SeqNumber, len: usize, fin: bool, options: Options) -> Segment {
        let end = seq + len + usize::from(fin);
        let retransmission = seq.lt(self.snd_max);
        let buf_end = self.buf_seq + self.send_buf.len();
        let mut flags = if fin { Flags::FIN } else { Flags::NONE };
        if len > 0 && seq + len == buf_end {
            flags |= Flags::PSH;
        }
        if len > self.eff_mss {
            // A super-segment: count the segments it stands for.
            self.stats.segments_out += (len.div_ceil(self.eff_mss) - 1) as u64;
        }
        if retransmission {
            bump(&mut self.stats.retransmits);
            self.stats.bytes_retransmitted += len as u64;
            self.recovery.undo_on_retransmit(len.div_ceil(self.eff_mss.max(1)).max(1));
            // Karn: an ACK covering a retransmitted segment cannot be timed.
            if self.timed().is_some_and(|(t, _)| t.in_window(seq, end)) {
                self.set_timed(None);
            }
        } else if self.timed_at == 0 {
            self.set_timed(Some((seq, now)));
        }
        if seq == self.snd_nxt {
            self.snd_nxt = end;
        }
        self.snd_max = self.snd_max.max(end);
        if len < self.eff_mss {
            self.snd_sml = end;
        }
        // RFC 6298 §5.1: "Every time a packet containing data is sent (including
        // a retransmission), if the timer is not running, start it running so
        // that it will expire after RTO seconds".
        self.timers.start(Timer::Retransmit, now + self.rtt.rto());
        self.recovery.on_sent(seq, end, now, self.snd_una);
        if !retransmission {
            self.arm_loss_probe(now);
        }
        self.stats.bytes_out += len as u64;
        self.emit(Segment { seq, ack: Some(self.rcv_nxt), flags, window: 0, options, payload_len: len })
    }

    pub(super) fn arm_persist(&mut self, now: Instant) {
        // RFC 9293 §3.8.6.1: "The transmitting host SHOULD send the first
        // zero-window probe when a zero window has existed for the
        // retransmission timeout period, and SHOULD increase exponentially the
        // interval between successive probes."
        let shift = self.persist_backoff.min(16);
        let interval = self.rtt.rto().saturating_mul(1 << shift).min(self.cfg.max_rto);
        self.timers.start(Timer::Persist, now + interval);
    }

    /// Fills in the window, records what the peer now knows (RFC 7323's
    /// Last.ACK.sent, the advertised right edge), and clears owed ACKs: every
    /// segment with an ACK satisfies them.
    fn emit(&mut self, mut seg: Segment) -> Segment {
        self.stats.segments_out += 1;
        if seg.ack.is_some() && !seg.syn() {
            let window = self.window_to_advertise();
            let field = (window >> self.rcv_wscale).min(65535);
            seg.window = field as u16;
            self.rcv_adv = self.rcv_adv.max(self.rcv_nxt + (field << self.rcv_wscale));
            self.last_ack_sent = self.rcv_nxt;
            self.ack_now = false;
            self.bytes_unacked = 0;
            // Reported once (RFC 2883 §4: "each duplicate contiguous sequence
            // ... in only one SACK block").
            self.dsack.1 = self.dsack.0;
            self.timers.stop(Timer::DelayedAck);
        }
        seg
    }
}
