//! One TCP connection, sans-IO.
//!
//! # Driving a connection
//!
//! The stack owns the clock, the wire and the connection table. For each
//! connection it calls, in this order:
//!
//! 1. **Handlers**, whenever something happens:
//!    [`Connection::on_segment`] for every segment demultiplexed to it (the
//!    returned [`SegmentOutcome`] may carry a RST to send verbatim and says
//!    whether the connection just became established, was reset or closed),
//!    and [`Connection::handle_timeout`] when the deadline from
//!    [`Connection::poll_timeout`] has passed.
//! 2. **Application calls** ([`Connection::send`], [`Connection::recv`],
//!    [`Connection::shutdown_write`], [`Connection::close`],
//!    [`Connection::abort`]) at any time.
//! 3. **Pollers**, after any of the above: [`Connection::poll_transmit`] in a
//!    loop until it returns `None`; for each segment, write the header with
//!    the wire crate and copy the payload with [`Connection::read_payload`]
//!    *before* the next call that mutates the connection. Then
//!    [`Connection::poll_timeout`] for the next deadline to sleep until.
//!    When [`Connection::is_closed`] is true, the stack removes the
//!    connection from its table.
//!
//! Nothing here reads a clock, draws a random number or allocates per
//! segment. Buffer bytes live in chunks of the stack's [`BufferPool`], passed
//! to every call that moves bytes (`on_segment`, `send`, `recv`,
//! `poll_transmit`, `read_payload`): chunks are taken as data is queued or
//! arrives and given back as soon as it is acknowledged or read, so an idle
//! connection holds none. Before dropping a connection, the stack gives its
//! chunks back with [`Connection::release_buffers`].
//!
//! # Memory
//!
//! The state is kept small so that a million idle connections fit in a
//! process: the configuration is shared (`Arc`), rarely used structures
//! (the reassembly islands, the SACK scoreboard) are boxed only while in use,
//! timers are plain microsecond counts and rare counters are `u32`.

mod input;
mod moving;
mod output;
mod path_mtu;
mod timeout;

use super::config::TcpConfig;
use super::congestion::{CongestionControl, Controller};
use super::pool::BufferPool;
use super::reassembly::Reassembly;
use super::recovery::Recovery;
use super::recv_buffer::RecvBuffer;
use super::rtt::RttEstimator;
use super::segment::{FourTuple, Options, SackBlock, Segment};
use super::send_buffer::SendBuffer;
use super::seq::SeqNumber;
use super::state::State;
use super::timers::{Timer, TimerSet};
use super::tlp::{self, TailLossProbe};
use crate::time::{Duration, Instant};
use std::sync::Arc;

pub(crate) use moving::DetachedBuffers;

/// Why a connection ended abnormally.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ConnError {
    /// The peer answered our SYN with a reset.
    Refused,
    /// The peer reset an open connection.
    Reset,
    /// Retransmissions, SYN retries or keepalive probes ran out.
    TimedOut,
    /// The application aborted the connection.
    Aborted,
}

/// Why `send` wrote nothing.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SendError {
    /// The send buffer is full; retry once `is_writable`.
    Full,
    /// `shutdown_write` or `close` was called, or the peer's FIN has been
    /// acknowledged and the connection is closing.
    Closing,
    /// The connection is closed, cleanly or not.
    Closed(Option<ConnError>),
}

/// Why `recv` returned no data.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RecvError {
    /// Nothing to read yet; retry once `is_readable`.
    WouldBlock,
    /// The application closed the connection.
    Closed,
    /// The connection failed.
    Connection(ConnError),
}

/// Why `accept` refused a segment.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AcceptError {
    /// The segment is not a bare SYN (it has ACK or RST, or lacks SYN).
    NotASyn,
}

/// Why (part of) a segment was dropped. Each reason has a counter in
/// [`Stats::drops`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DropReason {
    /// `payload.len()` differs from `seg.payload_len`.
    Malformed,
    /// No connection state: CLOSED.
    Closed,
    /// RFC 9293 §3.10.7.4 first check: not in the receive window.
    OutOfWindow,
    /// RFC 7323 §5 PAWS: an old timestamp.
    Paws,
    /// Timestamps were negotiated but the segment has none (RFC 7323 §3.2).
    MissingTimestamp,
    /// A RST not exactly at RCV.NXT (RFC 5961 §3), or without an acceptable ACK.
    Rst,
    /// A SYN on a synchronized connection (RFC 5961 §4).
    Syn,
    /// No ACK bit where one is required.
    NoAck,
    /// Acknowledges data never sent, or too old (RFC 5961 §5), or
    /// unacceptable in SYN-SENT / SYN-RECEIVED.
    BadAck,
    /// SYN-SENT received neither SYN nor RST.
    NotSyn,
    /// Data arrived after the application closed the socket; the connection
    /// was reset.
    DataAfterClose,
    /// An out-of-order segment would exceed the island limit.
    ReassemblyFull,
    /// The stack's buffer pool had no chunk for (part of) the segment's text.
    NoBuffer,
    /// The segment arrived in a state that ignores it (e.g. a retransmitted
    /// SYN in SYN-RECEIVED, which we answer by resending our SYN-ACK).
    Ignored,
    /// Wholly left of the window: sequence space we have already received
    /// (a retransmission that crossed our ACK, a duplicate, an old ACK).
    /// Honest peers send these; each is answered with an ACK.
    Duplicate,
}

/// Per-reason drop counters.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct DropCounters {
    /// [`DropReason::Malformed`]: the payload's length differs from the segment's.
    pub malformed: u64,
    /// [`DropReason::Closed`]: the connection had no state left (CLOSED).
    pub closed: u64,
    /// [`DropReason::OutOfWindow`] and [`DropReason::Duplicate`]: not in the receive window.
    pub out_of_window: u64,
    /// [`DropReason::Paws`]: an old timestamp (RFC 7323 PAWS).
    pub paws: u64,
    /// [`DropReason::MissingTimestamp`]: no timestamp where they were negotiated.
    pub missing_timestamp: u64,
    /// [`DropReason::Rst`]: a RST not exactly at RCV.NXT or without an acceptable ACK.
    pub rst: u64,
    /// [`DropReason::Syn`]: a SYN on a synchronized connection (answered by a
    /// challenge ACK).
    pub syn: u64,
    /// [`DropReason::NoAck`]: no ACK bit where one is required.
    pub no_ack: u64,
    /// [`DropReason::BadAck`]: acknowledges data never sent, or too old.
    pub bad_ack: u64,
    /// [`DropReason::NotSyn`]: SYN-SENT received neither SYN nor RST.
    pub not_syn: u64,
    /// [`DropReason::DataAfterClose`]: data after the application closed; the
    /// connection was reset.
    pub data_after_close: u64,
    /// [`DropReason::ReassemblyFull`]: an out-of-order segment beyond the island limit.
    pub reassembly_full: u64,
    /// [`DropReason::NoBuffer`]: the buffer pool had no chunk for the text.
    pub no_buffer: u64,
    /// [`DropReason::Ignored`]: a segment the state ignores (a retransmitted SYN
    /// in SYN-RECEIVED, …).
    pub ignored: u64,
}

/// The per-connection counters as stored: byte and segment totals in `u64`,
/// rare events and drop reasons in `u32` (they saturate). [`Stats`] is the
/// public view.
#[derive(Clone, Copy, Debug, Default)]
struct Counters {
    segments_in: u64,
    segments_out: u64,
    bytes_in: u64,
    bytes_out: u64,
    bytes_acked: u64,
    bytes_retransmitted: u64,
    retransmits: u32,
    rto_expirations: u32,
    fast_recoveries: u32,
    dup_acks_in: u32,
    challenge_acks: u32,
    challenge_acks_suppressed: u32,
    invalid_acks_suppressed: u32,
    dsacks_sent: u32,
    recoveries_undone: u32,
    zero_window_probes: u32,
    keepalive_probes: u32,
    loss_probes: u32,
    loss_probe_repairs: u32,
    drops: [u32; 14],
}

impl Counters {
    fn count_drop(&mut self, reason: DropReason) {
        // Per connection, duplicates count with the out-of-window drops (the
        // stack's counters tell them apart); it keeps the state compact.
        let reason = if reason == DropReason::Duplicate { DropReason::OutOfWindow } else { reason };
        let c = &mut self.drops[reason as usize];
        *c = c.saturating_add(1);
    }

    fn stats(&self) -> Stats {
        let d = |r: DropReason| u64::from(self.drops[r as usize]);
        Stats {
            segments_in: self.segments_in,
            segments_out: self.segments_out,
            bytes_in: self.bytes_in,
            bytes_out: self.bytes_out,
            bytes_acked: self.bytes_acked,
            retransmits: self.retransmits.into(),
            bytes_retransmitted: self.bytes_retransmitted,
            rto_expirations: self.rto_expirations.into(),
            fast_recoveries: self.fast_recoveries.into(),
            dup_acks_in: self.dup_acks_in.into(),
            challenge_acks: self.challenge_acks.into(),
            challenge_acks_suppressed: self.challenge_acks_suppressed.into(),
            invalid_acks_suppressed: self.invalid_acks_suppressed.into(),
            dsacks_sent: self.dsacks_sent.into(),
            recoveries_undone: self.recoveries_undone.into(),
            zero_window_probes: self.zero_window_probes.into(),
            keepalive_probes: self.keepalive_probes.into(),
            loss_probes: self.loss_probes.into(),
            loss_probe_repairs: self.loss_probe_repairs.into(),
            drops: DropCounters {
                malformed: d(DropReason::Malformed),
                closed: d(DropReason::Closed),
                out_of_window: d(DropReason::OutOfWindow),
                paws: d(DropReason::Paws),
                missing_timestamp: d(DropReason::MissingTimestamp),
                rst: d(DropReason::Rst),
                syn: d(DropReason::Syn),
                no_ack: d(DropReason::NoAck),
                bad_ack: d(DropReason::BadAck),
                not_syn: d(DropReason::NotSyn),
                data_after_close: d(DropReason::DataAfterClose),
                reassembly_full: d(DropReason::ReassemblyFull),
                no_buffer: d(DropReason::NoBuffer),
                ignored: d(DropReason::Ignored),
            },
        }
    }
}

/// Adds one to a `u32` counter, saturating.
fn bump(c: &mut u32) {
    *c = c.saturating_add(1);
}

/// Counters and gauges of one connection.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Stats {
    /// Segments that reached this connection, dropped ones included.
    pub segments_in: u64,
    /// Segments sent, retransmissions included; a super-segment counts as the
    /// segments the device cuts it into.
    pub segments_out: u64,
    /// Payload bytes delivered in order to the receive buffer.
    pub bytes_in: u64,
    /// Payload bytes sent, retransmissions included.
    pub bytes_out: u64,
    /// Payload bytes the peer has acknowledged.
    pub bytes_acked: u64,
    /// Segments retransmitted (RTO, fast retransmit, SACK recovery, SYNs).
    pub retransmits: u64,
    /// Payload bytes in those retransmissions.
    pub bytes_retransmitted: u64,
    /// Retransmission timeouts (RFC 6298), SYN timeouts included.
    pub rto_expirations: u64,
    /// Loss-recovery episodes entered by duplicate ACKs or SACK.
    pub fast_recoveries: u64,
    /// Duplicate ACKs received (RFC 5681 §2, or RFC 6675: one with new SACK
    /// information).
    pub dup_acks_in: u64,
    /// Challenge ACKs sent (RFC 5961) for suspicious RSTs, SYNs and ACKs.
    pub challenge_acks: u64,
    /// Challenge ACKs not sent because this second's quota
    /// (`challenge_ack_limit`) was spent (RFC 5961 §7).
    pub challenge_acks_suppressed: u64,
    /// Replies to out-of-window pure ACKs and SYNs not sent because one went
    /// less than `invalid_ack_interval` ago (what breaks ACK loops).
    pub invalid_acks_suppressed: u64,
    /// Duplicate data reported to the peer in a D-SACK block (RFC 2883).
    pub dsacks_sent: u64,
    /// Fast recoveries undone: every segment they retransmitted was
    /// reported a duplicate by the peer's D-SACKs (RFC 3708).
    pub recoveries_undone: u64,
    /// Probes sent into the peer's zero window (RFC 9293 §3.8.6.1).
    pub zero_window_probes: u64,
    /// Keep-alive probes sent on an idle connection (RFC 9293 §3.8.4).
    pub keepalive_probes: u64,
    /// Tail loss probes sent (RFC 8985 §7.3).
    pub loss_probes: u64,
    /// Losses a tail loss probe repaired, each answered by a congestion
    /// window reduction (RFC 8985 §7.4).
    pub loss_probe_repairs: u64,
    /// Segments dropped, by reason.
    pub drops: DropCounters,
}

/// What an arriving segment did. `#[must_use]`: a `reply` must be sent.
#[must_use]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct SegmentOutcome {
    /// The segment (or its data) was dropped, and why.
    pub dropped: Option<DropReason>,
    /// A RST to send now, verbatim and without payload. It is not part of the
    /// connection's own stream, so it does not come from `poll_transmit`.
    pub reply: Option<Segment>,
    /// The handshake completed with this segment.
    pub established: bool,
    /// The peer's FIN was received, in order, with this segment.
    pub peer_fin: bool,
    /// The peer reset the connection.
    pub reset: bool,
    /// The connection is now CLOSED; the stack may remove it.
    pub closed: bool,
    /// `poll_transmit` has something to send (an ACK at least).
    pub transmit: bool,
}

/// One TCP connection: RFC 9293 state plus its send and receive machinery.
#[derive(Debug)]
pub struct Connection {
    tuple: FourTuple,
    cfg: Arc<TcpConfig>,
    state: State,
    /// Opened by `connect` (matters for a RST in SYN-RECEIVED).
    active_open: bool,
    error: Option<ConnError>,

    // Send sequence space (RFC 9293 §3.3.1).
    iss: SeqNumber,
    snd_una: SeqNumber,
    snd_nxt: SeqNumber,
    /// One past the highest sequence number ever sent. SND.NXT is rewound to
    /// SND.UNA by an RTO (go-back-N); acceptability uses this.
    snd_max: SeqNumber,
    snd_wnd: u32,
    snd_wl1: SeqNumber,
    snd_wl2: SeqNumber,
    max_snd_wnd: u32,
    snd_wscale: u8,
    send_buf: SendBuffer,
    /// Sequence number of the send buffer's first byte.
    buf_seq: SeqNumber,
    /// The application shut down writing: a FIN follows the buffered data.
    fin_queued: bool,
    /// Minshall's Nagle: end of the last sub-MSS segment sent.
    snd_sml: SeqNumber,
    /// Largest payload we put in a segment (peer MSS, our MSS, options).
    eff_mss: usize,
    nodelay: bool,
    /// SYN (SYN-SENT) or SYN-ACK (SYN-RECEIVED) must be (re)sent.
    syn_due: bool,
    syn_retransmits: u16,
    /// Consecutive RTO expiries without progress.
    rto_in_row: u16,
    probe_due: bool,
    /// The next bare ACK after a zero-window probe goes at SND.MAX (they
    /// alternate with SND.NXT; see `output::bare_ack`).
    probe_ack_at_max: bool,
    persist_backoff: u16,
    keepalive: bool,
    keepalive_due: bool,
    keepalive_probes: u16,
    rtt: RttEstimator,
    /// RTT measurement without timestamps: the sequence number timed and
    /// when it was sent, in microseconds plus one (0: none). Two fields, not
    /// an `Option<(SeqNumber, Instant)>`: that takes 24 bytes, these 12 (see
    /// `timed` and `set_timed`).
    timed_seq: SeqNumber,
    timed_at: u64,
    cc: Controller,
    /// The congestion window, not the application or the peer, limited the
    /// last send decision (RFC 7661: only then may cwnd grow).
    cwnd_limited: bool,
    recovery: Recovery,
    /// RFC 8985 §7: the probe episode, and a probe is owed (the PTO fired).
    tlp: TailLossProbe,
    tlp_due: bool,
    rst_due: bool,

    // Receive sequence space.
    irs: SeqNumber,
    rcv_nxt: SeqNumber,
    /// Right edge of the window we advertised; never moves left.
    rcv_adv: SeqNumber,
    rcv_wscale: u8,
    recv_buf: RecvBuffer,
    /// Receive bytes the pool could back, as of the last call that had it
    /// (see `window_to_advertise`).
    pool_room: u32,
    reassembly: Reassembly,
    /// A FIN seen beyond a hole.
    ooo_fin: Option<SeqNumber>,
    /// Duplicate data to report in the first SACK block of our next ACK
    /// (D-SACK, RFC 2883), then forgotten: the peer learns that its
    /// retransmission was spurious and can undo or widen its reordering window.
    /// Empty (start = end) when there is none: an `Option` would cost the
    /// connection slot 8 more bytes.
    dsack: SackBlock,
    fin_received: bool,
    /// The application called `close`: no more reads.
    read_closed: bool,
    /// Largest segment payload seen from the peer (for "full-sized").
    rcv_mss: u16,
    ack_now: bool,
    /// In-order payload received since our last ACK.
    bytes_unacked: u32,

    // Negotiated options.
    window_scaling: bool,
    sack: bool,
    timestamps: bool,
    ts_recent: u32,
    ts_recent_at: Instant,
    last_ack_sent: SeqNumber,
    ts_offset: u32,

    challenge_window: Instant,
    challenge_count: u32,
    /// From when an out-of-window pure ACK or SYN may be answered again
    /// (`TcpConfig::invalid_ack_interval` after the last such answer).
    invalid_ack_from: Instant,
    last_rx: Instant,
    timers: TimerSet,
    stats: Counters,
}

/// The options a peer's SYN (or SYN-ACK) carried, after clamping.
#[derive(Clone, Copy, Debug)]
struct PeerSyn {
    mss: u16,
    window_scale: Option<u8>,
    sack: bool,
    timestamp: Option<u32>,
}

impl PeerSyn {
    fn from_options(o: &Options) -> PeerSyn {
        PeerSyn {
            mss: o.mss.unwrap_or(0),
            // RFC 7323 §2.3: "If a Window Scale option is received with a
            // shift.cnt value larger than 14, the TCP SHOULD log the error but
            // MUST use 14 instead of the specified value."
            window_scale: o.window_scale.map(|s| s.min(14)),
            sack: o.sack_permitted,
            timestamp: o.timestamp.map(|t| t.0),
        }
    }
}

impl Connection {
    fn new(tuple: FourTuple, cfg: Arc<TcpConfig>, iss: SeqNumber, now: Instant, state: State) -> Connection {
        let mss = usize::from(cfg.mss).max(1);
        Connection {
            tuple,
            state,
            active_open: state == State::SynSent,
            error: None,
            iss,
            snd_una: iss,
            snd_nxt: iss,
            snd_max: iss,
            snd_wnd: 0,
            snd_wl1: SeqNumber(0),
            snd_wl2: iss,
            max_snd_wnd: 0,
            snd_wscale: 0,
            send_buf: SendBuffer::new(cfg.send_buffer_size.max(1)),
            buf_seq: iss + 1,
            fin_queued: false,
            snd_sml: iss,
            eff_mss: mss,
            nodelay: cfg.nodelay,
            syn_due: true,
            syn_retransmits: 0,
            rto_in_row: 0,
            probe_due: false,
            probe_ack_at_max: false,
            persist_backoff: 0,
            keepalive: cfg.keepalive,
            keepalive_due: false,
            keepalive_probes: 0,
            rtt: RttEstimator::new(cfg.initial_rto, cfg.min_rto, cfg.max_rto),
            timed_seq: SeqNumber(0),
            timed_at: 0,
            cc: Controller::new(cfg.congestion, mss * cfg.initial_cwnd_segments.max(1) as usize),
            cwnd_limited: false,
            recovery: Recovery::new(cfg.max_sack_ranges),
            tlp: TailLossProbe::default(),
            tlp_due: false,
            rst_due: false,
            irs: SeqNumber(0),
            rcv_nxt: SeqNumber(0),
            rcv_adv: SeqNumber(0),
            rcv_wscale: 0,
            recv_buf: RecvBuffer::new(cfg.recv_buffer_size),
            pool_room: u32::MAX,
            reassembly: Reassembly::new(cfg.max_ooo_ranges),
            ooo_fin: None,
            dsack: (SeqNumber(0), SeqNumber(0)),
            fin_received: false,
            read_closed: false,
            rcv_mss: 1,
            ack_now: false,
            bytes_unacked: 0,
            window_scaling: false,
            sack: false,
            timestamps: false,
            ts_recent: 0,
            ts_recent_at: now,
            last_ack_sent: SeqNumber(0),
            // RFC 7323 §5.4 suggests a random per-connection offset; the ISS
            // is one (keyed hash of the 4-tuple). The stack replaces it with
            // one per address pair (`set_ts_offset`, `super::ts_offset`).
            ts_offset: iss.0.rotate_left(13),
            challenge_window: now,
            challenge_count: 0,
            invalid_ack_from: now,
            last_rx: now,
            timers: TimerSet::new(),
            stats: Counters::default(),
            cfg,
        }
    }

    /// An active open (RFC 9293 OPEN call, active): the connection starts in
    /// SYN-SENT and its SYN comes out of the first `poll_transmit`.
    /// `iss` should come from [`super::isn`].
    /// The configuration is shared: pass the stack's `Arc<TcpConfig>` (a
    /// `TcpConfig` by value works too, at the cost of one allocation).
    pub fn connect(four_tuple: FourTuple, cfg: impl Into<Arc<TcpConfig>>, iss: SeqNumber, now: Instant) -> Connection {
        Connection::new(four_tuple, cfg.into(), iss, now, State::SynSent)
    }

    /// A passive open for a SYN that reached a listening port (RFC 9293
    /// §3.10.7.2, LISTEN, "third check for a SYN"): the connection starts in
    /// SYN-RECEIVED and its SYN-ACK comes out of the first `poll_transmit`.
    /// [`super::Listener`] wraps this with backlog accounting and cookies.
    pub fn accept(
        four_tuple: FourTuple,
        syn: &Segment,
        cfg: impl Into<Arc<TcpConfig>>,
        iss: SeqNumber,
        now: Instant,
    ) -> Result<Connection, AcceptError> {
        if !syn.syn() || syn.rst() || syn.ack.is_some() {
            return Err(AcceptError::NotASyn);
        }
        let mut c = Connection::new(four_tuple, cfg.into(), iss, now, State::SynReceived);
        // "Set RCV.NXT to SEG.SEQ+1, IRS is set to SEG.SEQ, and any other
        // control or text should be queued for processing later." (Text in a
        // SYN is dropped instead; the peer retransmits it.)
        c.irs = syn.seq;
        c.rcv_nxt = syn.seq + 1;
        c.rcv_adv = c.rcv_nxt;
        c.snd_wnd = u32::from(syn.window);
        c.max_snd_wnd = c.snd_wnd;
        c.snd_wl1 = syn.seq;
        c.negotiate(&PeerSyn::from_options(&syn.options), now);
        c.last_rx = now;
        Ok(c)
    }

    /// A connection whose handshake was completed statelessly by a SYN
    /// cookie: SYN-RECEIVED as if our SYN-ACK had been sent. `options` are
    /// what the cookie's timestamp carried (the peer's window scale and
    /// SACK-permitted) with the completing ACK's TSval; `None` when the SYN
    /// had no timestamps, and then the connection runs without window
    /// scaling, SACK or timestamps. Feed it the completing ACK with
    /// `on_segment`.
    pub(crate) fn from_cookie(
        four_tuple: FourTuple,
        cfg: Arc<TcpConfig>,
        iss: SeqNumber,
        irs: SeqNumber,
        peer_mss: u16,
        options: Option<(Option<u8>, bool, u32)>,
        now: Instant,
    ) -> Connection {
        let mut c = Connection::new(four_tuple, cfg, iss, now, State::SynReceived);
        c.irs = irs;
        c.rcv_nxt = irs + 1;
        let peer = match options {
            Some((window_scale, sack, tsval)) => PeerSyn { mss: peer_mss, window_scale, sack, timestamp: Some(tsval) },
            None => PeerSyn { mss: peer_mss, window_scale: None, sack: false, timestamp: None },
        };
        c.negotiate(&peer, now);
        c.last_ack_sent = c.rcv_nxt;
        c.snd_nxt = iss + 1;
        c.snd_max = iss + 1;
        c.syn_due = false;
        c.rcv_adv = c.rcv_nxt + c.recv_buf.free().min(65535);
        c
    }

    /// Applies the peer's SYN options to what we offered (or will offer).
    fn negotiate(&mut self, peer: &PeerSyn, now: Instant) {
        // RFC 7323 §2.2: window scaling is used only if "both sides send Window
        // Scale options in their <SYN> segments".
        match (self.cfg.window_scaling, peer.window_scale) {
            (true, Some(shift)) => {
                self.window_scaling = true;
                self.snd_wscale = shift;
                self.rcv_wscale = self.cfg.our_window_scale();
            }
            _ => {
                self.window_scaling = false;
                self.snd_wscale = 0;
                self.rcv_wscale = 0;
            }
        }
        self.sack = self.cfg.sack && peer.sack;
        self.recovery.set_sack(self.sack, self.cfg.rack_tlp);
        if let (true, Some(tsval)) = (self.cfg.timestamps, peer.timestamp) {
            self.timestamps = true;
            self.ts_recent = tsval;
            self.ts_recent_at = now;
        } else {
            self.timestamps = false;
        }
        // RFC 9293 §3.7.1: "If an MSS Option is not received at connection
        // setup, TCP implementations MUST assume a default send MSS of 536".
        let peer_mss = if peer.mss == 0 { self.cfg.default_peer_mss } else { peer.mss };
        let send_mss = peer_mss.max(self.cfg.min_peer_mss).min(self.cfg.mss.max(self.cfg.min_peer_mss));
        // RFC 9293 §3.7.1: the payload shrinks by the options every segment
        // carries ("Eff.snd.MSS = min(SendMSS+20, MMS_S) - TCPhdrsize - IPoptionsize").
        let ts_len = if self.timestamps { 12 } else { 0 };
        self.eff_mss = usize::from(send_mss).saturating_sub(ts_len).max(1);
    }

    // ---- Getters ----------------------------------------------------------

    /// Local and remote address and port.
    pub fn four_tuple(&self) -> FourTuple {
        self.tuple
    }
    /// The RFC 9293 state.
    pub fn state(&self) -> State {
        self.state
    }
    /// CLOSED: the stack may drop this connection from its table.
    pub fn is_closed(&self) -> bool {
        self.state == State::Closed && !self.rst_due
    }
    /// Why the connection failed, if it did.
    pub fn error(&self) -> Option<ConnError> {
        self.error
    }
    /// Retransmission timeouts in a row without an acknowledgement of
    /// anything new (SYN or SYN-ACK retries during the handshake), as Linux
    /// reports `tcpi_retransmits`. The connection fails with
    /// [`ConnError::TimedOut`] on the timeout after its limit
    /// ([`TcpConfig::max_retransmits`], `syn_retries`, `synack_retries`).
    pub fn timeouts_in_row(&self) -> u32 {
        match self.state {
            State::SynSent | State::SynReceived => u32::from(self.syn_retransmits),
            _ => u32::from(self.rto_in_row),
        }
    }
    /// `recv` would return data, end-of-stream or an error.
    pub fn is_readable(&self) -> bool {
        self.recv_buf.readable() > 0 || self.fin_received || self.error.is_some()
    }
    /// `send` would accept at least one byte, or report an error.
    pub fn is_writable(&self) -> bool {
        self.error.is_some() || (self.state.can_send() && !self.fin_queued && self.send_buf.free() > 0)
    }
    /// Bytes ready for `recv`.
    pub fn recv_queue(&self) -> usize {
        self.recv_buf.readable()
    }
    /// Out-of-order islands held in the receive buffer (bounded by
    /// `TcpConfig::max_ooo_ranges`).
    pub fn ooo_islands(&self) -> usize {
        self.reassembly.island_count()
    }
    /// The send buffer's capacity in bytes ([`TcpConfig::send_buffer_size`],
    /// or the socket's own).
    pub fn send_buffer_size(&self) -> usize {
        self.send_buf.capacity()
    }
    /// The receive buffer's capacity in bytes ([`TcpConfig::recv_buffer_size`],
    /// or the socket's own).
    pub fn recv_buffer_size(&self) -> usize {
        self.recv_buf.capacity()
    }
    /// Bytes written by the application and not yet acknowledged.
    pub fn send_queue(&self) -> usize {
        self.send_buf.len()
    }
    /// Whether Nagle's algorithm is off (small segments go at once).
    pub fn nodelay(&self) -> bool {
        self.nodelay
    }
    /// Smoothed RTT, once measured.
    pub fn srtt(&self) -> Option<Duration> {
        self.rtt.srtt()
    }
    /// Current retransmission timeout, backoff included.
    pub fn rto(&self) -> Duration {
        self.rtt.rto()
    }
    /// Congestion window in bytes (NewReno inflation included).
    pub fn cwnd(&self) -> usize {
        if self.recovery.prr_active() {
            return self.recovery.prr_cwnd();
        }
        self.cc.cwnd() + self.recovery.inflation()
    }
    /// The slow-start threshold in bytes (`usize::MAX` before the first loss).
    pub fn ssthresh(&self) -> usize {
        self.cc.ssthresh()
    }
    /// The peer's receive window, scaled.
    pub fn send_window(&self) -> u32 {
        self.snd_wnd
    }
    /// Largest payload per segment we send.
    pub fn mss(&self) -> usize {
        self.eff_mss
    }
    /// Whether SACK / timestamps / window scaling were negotiated.
    pub fn sack_enabled(&self) -> bool {
        self.sack
    }
    /// Whether both ends agreed on timestamps (RFC 7323) in the handshake.
    pub fn timestamps_enabled(&self) -> bool {
        self.timestamps
    }
    /// The window scale shifts in effect (RFC 7323): (the peer's, for windows
    /// it advertises; ours, for windows we advertise). Both 0 without scaling.
    pub fn window_scales(&self) -> (u8, u8) {
        (self.snd_wscale, self.rcv_wscale)
    }
    /// The connection's counters.
    pub fn stats(&self) -> Stats {
        self.stats.stats()
    }
    /// In TIME-WAIT, the compact record that can stand in for this
    /// connection (see [`super::TimeWait`]); `None` in any other state.
    pub fn time_wait(&self) -> Option<super::TimeWait> {
        if self.state != State::TimeWait {
            return None;
        }
        let window = (self.rcv_adv.since(self.rcv_nxt) as usize >> self.rcv_wscale).min(65535) as u16;
        Some(super::TimeWait {
            tuple: self.tuple,
            snd_nxt: self.snd_max,
            rcv_nxt: self.rcv_nxt,
            window,
            timestamps: self.timestamps,
            ts_recent: self.ts_recent,
            ts_offset: self.ts_offset,
            expires: self.timers.get(Timer::Close)?,
        })
    }
    /// Pool chunks held by the send and receive buffers (0 when idle).
    pub fn buffer_chunks(&self) -> usize {
        self.send_buf.chunks_held() + self.recv_buf.chunks_held()
    }

    // ---- Application calls -------------------------------------------------

    /// The offset of this connection's TCP timestamp clock (see
    /// [`super::ts_offset`]); set before the first `poll_transmit`.
    pub fn set_ts_offset(&mut self, offset: u32) {
        self.ts_offset = offset;
    }

    /// TCP_NODELAY: turn Nagle's algorithm off (true) or on.
    pub fn set_nodelay(&mut self, nodelay: bool) {
        self.nodelay = nodelay;
    }

    /// SO_SNDBUF on an open connection: a send buffer of `bytes` in place
    /// of the current one, clamped to 1 and the largest that `pool` can
    /// back, if the current one holds nothing (no byte unacknowledged), as
    /// right after `connect` or `accept`. Returns whether it did: bytes in
    /// flight sit at ring positions a new capacity would move.
    pub fn set_send_buffer_size(&mut self, bytes: usize, pool: &mut BufferPool) -> bool {
        if self.send_buf.len() > 0 {
            return false;
        }
        self.send_buf.release(pool);
        self.send_buf = SendBuffer::new(bytes.clamp(1, pool.largest_buffer()));
        true
    }

    /// SO_KEEPALIVE with the configured idle time, interval and count.
    pub fn set_keepalive(&mut self, on: bool) {
        self.keepalive = on;
        if !on {
            self.timers.stop(Timer::Keepalive);
        }
    }

    /// Copies as much of `data` as fits into the send buffer and returns how
    /// much that was. Data written before the handshake completes is sent
    /// once it does.
    ///
    /// The bytes go into chunks taken from `pool`; when the pool is
    /// exhausted, less (possibly nothing: `Full`) is accepted.
    pub fn send(&mut self, data: &[u8], pool: &mut BufferPool) -> Result<usize, SendError> {
        if let Some(e) = self.error {
            return Err(SendError::Closed(Some(e)));
        }
        if self.fin_queued {
            return Err(SendError::Closing);
        }
        if !self.state.can_send() {
            return Err(if self.state == State::Closed { SendError::Closed(None) } else { SendError::Closing });
        }
        if data.is_empty() {
            return Ok(0);
        }
        match self.send_buf.push(data, pool) {
            0 => Err(SendError::Full),
            n => Ok(n),
        }
    }

    /// Reads received bytes; `Ok(0)` means the peer closed its side and all
    /// its data has been read. Chunks read past go back to `pool`.
    pub fn recv(&mut self, buf: &mut [u8], pool: &mut BufferPool) -> Result<usize, RecvError> {
        if self.recv_buf.readable() > 0 && !buf.is_empty() {
            let n = self.recv_buf.read(buf, pool);
            self.maybe_window_update(pool);
            return Ok(n);
        }
        if self.read_closed {
            return Err(RecvError::Closed);
        }
        if let Some(e) = self.error {
            return Err(RecvError::Connection(e));
        }
        if self.fin_received || buf.is_empty() {
            return Ok(0);
        }
        Err(RecvError::WouldBlock)
    }

    /// Shuts down the sending direction: a FIN follows the queued data
    /// (RFC 9293 CLOSE call; the receive side stays open — half-close).
    pub fn shutdown_write(&mut self) -> Result<(), SendError> {
        match self.state {
            State::Closed => Err(SendError::Closed(self.error)),
            // "If no SENDs have been issued and there is no pending data to
            // send, then form a FIN segment and send it ... otherwise, queue for
            // processing after entering ESTABLISHED state." (SYN-SENT queues too.)
            State::SynSent | State::SynReceived => {
                self.fin_queued = true;
                Ok(())
            }
            // ESTABLISHED: "Queue this until all preceding SENDs have been
            // segmentized, then form a FIN segment and send it. In any case,
            // enter FIN-WAIT-1 state."
            State::Established => {
                self.fin_queued = true;
                self.state = State::FinWait1;
                Ok(())
            }
            // CLOSE-WAIT: "Queue this request until all preceding SENDs have
            // been segmentized; then send a FIN segment, enter LAST-ACK state."
            State::CloseWait => {
                self.fin_queued = true;
                self.state = State::LastAck;
                Ok(())
            }
            _ => Ok(()),
        }
    }

    /// Closes both directions. Unread received data (now or later) resets the
    /// connection, as RFC 2525 §2.17 recommends and Linux does; otherwise this
    /// is `shutdown_write` and the connection lingers until the FIN exchange
    /// completes (the stack keeps polling it).
    pub fn close(&mut self) {
        if self.state == State::SynSent {
            // "SYN-SENT STATE: Delete the TCB".
            self.enter_closed(None);
            return;
        }
        if self.recv_buf.readable() > 0 {
            self.abort();
            return;
        }
        self.read_closed = true;
        let _ = self.shutdown_write();
        // Already in FIN-WAIT-2: the orphan timeout is armed by the next
        // `poll_transmit` (this call has no clock).
    }

    /// Resets the connection (RFC 9293 ABORT call).
    pub fn abort(&mut self) {
        // "SYN-RECEIVED, ESTABLISHED, FIN-WAIT-1, FIN-WAIT-2, CLOSE-WAIT STATES:
        // Send a reset segment: <SEQ=SND.NXT><CTL=RST>". Other states just
        // delete the TCB.
        if matches!(
            self.state,
            State::SynReceived | State::Established | State::FinWait1 | State::FinWait2 | State::CloseWait
        ) {
            self.rst_due = true;
        }
        self.enter_closed(Some(ConnError::Aborted));
    }

    /// Gives every pool chunk back and frees the boxed parts of the state.
    /// The stack calls this before dropping the connection; afterwards the
    /// buffers are empty (unread and unacknowledged bytes are gone).
    pub fn release_buffers(&mut self, pool: &mut BufferPool) {
        self.send_buf.release(pool);
        self.recv_buf.release(pool);
        self.reassembly = Reassembly::new(self.cfg.max_ooo_ranges);
        self.recovery.board.clear();
        self.recovery.board.shrink();
        self.recovery.shrink_log(pool);
    }

    // ---- Internal helpers shared by input, output and timeout ---------------

    fn enter_closed(&mut self, error: Option<ConnError>) {
        self.state = State::Closed;
        if self.error.is_none() {
            self.error = error;
        }
        self.timers.stop_all();
        self.ack_now = false;
        self.syn_due = false;
        self.probe_due = false;
        self.keepalive_due = false;
        self.tlp_due = false;
    }

    /// Sequence number of our FIN, once the application queued it.
    fn fin_seq(&self) -> Option<SeqNumber> {
        self.fin_queued.then(|| self.buf_seq + self.send_buf.len())
    }

    fn fin_acked(&self) -> bool {
        self.fin_seq().is_some_and(|f| self.snd_una.gt(f))
    }

    /// The window to advertise, before scaling.
    ///
    /// RFC 9293 §3.8.6.2.2 (receiver SWS avoidance): "the receiver ... should
    /// not advance the right window edge ... until the increase is at least
    /// min(Fr * RCV.BUFF, Eff.snd.MSS)" with Fr = 1/2.
    ///
    /// The window is also clamped to what `pool` can still give this
    /// connection (chunks it holds plus the pool's free chunks), so under
    /// pool pressure the offer shrinks instead of promising space that does
    /// not exist. Connections share the pool, so the clamp is per connection
    /// at the time of advertising; a segment that later finds the pool dry
    /// is dropped (`DropReason::NoBuffer`) and retransmitted by the peer.
    /// The right edge already advertised never moves left.
    fn window_to_advertise(&self) -> usize {
        let free = self.recv_buf.free().min(self.pool_room as usize);
        let current = self.rcv_adv.since(self.rcv_nxt) as usize;
        let threshold = (self.recv_buf.capacity() / 2).min(usize::from(self.cfg.mss));
        if free >= current + threshold {
            free
        } else {
            current.min(free)
        }
    }

    /// Records how many more receive bytes `pool` could back, for
    /// `window_to_advertise` during this call.
    fn note_pool(&mut self, pool: &BufferPool) {
        let cs = pool.chunk_size();
        let room = self.recv_buf.backed_free(cs).saturating_add(pool.available().saturating_mul(cs));
        self.pool_room = room.min(u32::MAX as usize) as u32;
    }

    /// After the application read: owe a window update when the window we can
    /// now offer grew enough to matter (at least the SWS threshold, and at
    /// least doubling what the peer sees).
    fn maybe_window_update(&mut self, pool: &BufferPool) {
        if !self.state.accepts_data() {
            return;
        }
        self.note_pool(pool);
        let current = self.rcv_adv.since(self.rcv_nxt) as usize;
        let offer = self.window_to_advertise();
        if offer > current && offer >= 2 * current {
            self.ack_now = true;
        }
    }

    /// The timestamp clock: milliseconds plus the per-connection offset.
    fn ts_now(&self, now: Instant) -> u32 {
        (now.total_millis() as u32).wrapping_add(self.ts_offset)
    }

    /// Octets in flight as loss recovery counts them.
    fn flight(&self) -> usize {
        self.recovery.pipe(self.snd_una, self.snd_nxt, self.eff_mss)
    }

    /// RFC 8985 §7.2: "The sender SHOULD start or restart a loss probe PTO
    /// timer after transmitting new data (that was not itself a loss probe)
    /// or upon receiving an ACK that cumulatively acknowledges new data,
    /// unless it is already in fast recovery, RTO recovery, or segments have
    /// been SACKed". As in Linux, only with SACK: without it §7.4 cannot tell
    /// a probe that repaired a loss from a spurious one.
    fn loss_probe_allowed(&self) -> bool {
        self.sack
            && self.cfg.rack_tlp
            && self.snd_max.gt(self.snd_una)
            && self.snd_nxt == self.snd_max
            && !self.recovery.in_recovery()
            && !self.recovery.in_rto_recovery(self.snd_una)
            && self.recovery.board.is_empty()
    }

    /// (Re)starts the PTO when §7.2 allows it, stops it otherwise.
    fn arm_loss_probe(&mut self, now: Instant) {
        if !self.loss_probe_allowed() {
            self.timers.stop(Timer::LossProbe);
            return;
        }
        let rto_at = self.timers.get(Timer::Retransmit).unwrap_or(now + self.rtt.rto());
        let one_segment = self.snd_max.since(self.snd_una) as usize <= self.eff_mss;
        self.timers.set(Timer::LossProbe, tlp::probe_deadline(now, self.rtt.srtt(), one_segment, rto_at));
    }

    /// RFC 8985 §6.2 step 5 RACK_detect_loss_and_arm_timer(): marks losses,
    /// arms the reordering timer for segments not yet old enough, and starts
    /// recovery on the first loss of an episode.
    fn detect_losses(&mut self, now: Instant) {
        let (marked, again) = self.recovery.rack_detect_loss(now, self.snd_una, self.rtt.srtt(), self.eff_mss);
        match again {
            Some(at) => self.timers.set(Timer::Reorder, at),
            None => self.timers.stop(Timer::Reorder),
        }
        // Marks made during RTO recovery start an episode once it is over.
        let outside = !self.recovery.in_recovery() && !self.recovery.in_rto_recovery(self.snd_una);
        if outside && (marked || self.recovery.rack_has_lost()) {
            let flight = self.snd_max.since(self.snd_una) as usize;
            self.recovery.enter_rack_recovery(self.snd_max);
            bump(&mut self.stats.fast_recoveries);
            self.recovery.undo_arm(self.snd_una, self.cc.cwnd(), self.cc.ssthresh());
            self.cc.on_congestion_event(now, flight, self.eff_mss);
            self.recovery.prr_start(flight, self.flight(), self.eff_mss);
            // Karn: the segment being timed may be retransmitted.
            self.set_timed(None);
            // Recovery's reduction covers whatever a probe repaired.
            self.tlp.end_episode();
            self.timers.stop(Timer::LossProbe);
        }
    }

    /// The segment timed for an RTT sample and when it was sent.
    #[inline]
    fn timed(&self) -> Option<(SeqNumber, Instant)> {
        (self.timed_at != 0).then(|| (self.timed_seq, Instant::from_micros(self.timed_at - 1)))
    }

    /// Times `Some((seq, sent_at))`, or nothing (Karn).
    #[inline]
    fn set_timed(&mut self, timed: Option<(SeqNumber, Instant)>) {
        (self.timed_seq, self.timed_at) = match timed {
            Some((seq, at)) => (seq, at.total_micros().saturating_add(1)),
            None => (SeqNumber(0), 0),
        };
    }

    /// Room the congestion window leaves.
    fn cwnd_room(&self) -> usize {
        self.cwnd().saturating_sub(self.flight())
    }
}
