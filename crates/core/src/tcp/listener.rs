//! A listening port (RFC 9293 LISTEN state) with backlog accounting and
//! SYN cookies.
//!
//! The stack keeps the connections (half-open ones included) in its own
//! table; the listener only counts them. The stack reports each child's fate:
//! [`Listener::child_established`] when a half-open child's `on_segment`
//! outcome says `established`, [`Listener::half_open_gone`] when a half-open
//! child closes before that, and [`Listener::accepted`] when the application
//! takes an established child (or it dies while queued).

use super::config::TcpConfig;
use super::pool::BufferPool;
use std::sync::Arc;
use super::connection::{Connection, DropReason};
use super::isn::{check_syn_cookie, cookie_options, cookie_timestamp, isn, syn_cookie, ts_offset};
use super::segment::{reset_for, Flags, FourTuple, Options, Segment};
use super::seq::SeqNumber;
use crate::time::Instant;

/// How far above the old connection's SND.NXT a connection reopened from
/// TIME-WAIT starts (Linux's `tcp_timewait_state_process`: 65535 + 2).
const REOPEN_ISS_GAP: usize = 65_537;

/// What to do with a segment that reached a listening port.
#[derive(Debug)]
pub enum ListenOutcome {
    /// Drop it (and count the reason).
    Drop(DropReason),
    /// Send this segment verbatim (a RST, or a SYN-ACK carrying a cookie);
    /// no state was kept.
    Reply(Segment),
    /// A new half-open connection in SYN-RECEIVED: insert it into the
    /// connection table and `poll_transmit` it for its SYN-ACK.
    HalfOpen(Connection),
    /// A SYN cookie was validated: an ESTABLISHED connection (already fed
    /// the completing ACK) for the accept queue. Also `poll_transmit` it.
    Established(Connection),
}

/// Listener counters.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ListenerStats {
    /// SYNs that reached the listener.
    pub syns: u64,
    /// SYNs that found the half-open (SYN) queue full at the backlog: dropped,
    /// or answered with a SYN cookie when cookies are on.
    pub syn_queue_overflows: u64,
    /// SYNs and valid cookie ACKs dropped because the accept queue was full.
    pub accept_queue_overflows: u64,
    /// SYN-ACKs carrying a SYN cookie (no state kept).
    pub cookies_sent: u64,
    /// ACKs whose cookie checked out, each making an established connection.
    pub cookies_accepted: u64,
    /// ACKs with no valid cookie while cookies are on (answered with a RST).
    pub cookies_rejected: u64,
    /// ACK-bearing segments answered with a RST (RFC 9293: "any acknowledgment
    /// is bad if it arrives on a connection still in the LISTEN state").
    pub resets_sent: u64,
}

/// A listening port: its backlog, counts of its half-open and queued
/// children, and the SYN-cookie secret. The connections themselves live in
/// the stack's table.
#[derive(Debug)]
pub struct Listener {
    cfg: Arc<TcpConfig>,
    secret: [u8; 16],
    backlog: usize,
    syn_cookies: bool,
    half_open: usize,
    accept_queue: usize,
    stats: ListenerStats,
}

impl Listener {
    /// `backlog` bounds both the half-open (SYN) queue and the accept queue.
    /// `secret` keys ISNs and cookies; draw it from the OS RNG once.
    /// Children share `cfg`.
    pub fn new(cfg: impl Into<Arc<TcpConfig>>, backlog: usize, secret: [u8; 16], syn_cookies: bool) -> Listener {
        Listener {
            cfg: cfg.into(),
            secret,
            backlog: backlog.max(1),
            syn_cookies,
            half_open: 0,
            accept_queue: 0,
            stats: ListenerStats::default(),
        }
    }

    /// The configuration children opened from now on share (their buffer
    /// sizes, the window scale the SYN-ACK offers); those already open keep
    /// theirs.
    pub fn set_config(&mut self, cfg: impl Into<Arc<TcpConfig>>) {
        self.cfg = cfg.into();
    }

    /// Children in SYN-RECEIVED (at most the backlog).
    pub fn half_open(&self) -> usize {
        self.half_open
    }
    /// Established children the application has not accepted yet.
    pub fn accept_queue_len(&self) -> usize {
        self.accept_queue
    }
    /// The listener's counters.
    pub fn stats(&self) -> ListenerStats {
        self.stats
    }

    /// A half-open child completed its handshake.
    pub fn child_established(&mut self) {
        self.half_open = self.half_open.saturating_sub(1);
        self.accept_queue += 1;
    }
    /// A half-open child died before completing its handshake.
    pub fn half_open_gone(&mut self) {
        self.half_open = self.half_open.saturating_sub(1);
    }
    /// An established child left the accept queue.
    pub fn accepted(&mut self) {
        self.accept_queue = self.accept_queue.saturating_sub(1);
    }

    /// RFC 9293 §3.10.7.2, LISTEN. `pool` backs the text of a segment that
    /// completes a SYN-cookie handshake.
    pub fn on_segment(
        &mut self,
        now: Instant,
        tuple: FourTuple,
        seg: &Segment,
        payload: &[u8],
        pool: &mut BufferPool,
    ) -> ListenOutcome {
        self.segment(now, tuple, seg, payload, pool, None)
    }

    /// As [`Listener::on_segment`], for a SYN that took over the 4-tuple of
    /// a connection in TIME-WAIT (RFC 6191) whose SND.NXT was `old_snd_nxt`.
    /// The new connection's ISS lies above everything the old one sent, as
    /// Linux does (`tw_snd_nxt + 65537`), so that the peer can never take a
    /// late duplicate of the old connection for new data.
    pub fn on_reopening_syn(
        &mut self,
        now: Instant,
        tuple: FourTuple,
        seg: &Segment,
        payload: &[u8],
        pool: &mut BufferPool,
        old_snd_nxt: SeqNumber,
    ) -> ListenOutcome {
        self.segment(now, tuple, seg, payload, pool, Some(old_snd_nxt))
    }

    fn segment(
        &mut self,
        now: Instant,
        tuple: FourTuple,
        seg: &Segment,
        payload: &[u8],
        pool: &mut BufferPool,
        reopened: Option<SeqNumber>,
    ) -> ListenOutcome {
        // "First, check for a RST: An incoming RST segment could not be valid
        // ... An incoming RST should be ignored."
        // No connection is there to reset, so this is no RFC 5961 matter:
        // typically a peer's second RST for a connection the first one ended.
        if seg.rst() {
            return ListenOutcome::Drop(DropReason::Closed);
        }
        // "Second, check for an ACK: Any acknowledgment is bad if it arrives on
        // a connection still in the LISTEN state. An acceptable reset segment
        // should be formed for any arriving ACK-bearing segment." Except a
        // genuine SYN cookie, which completes a handshake we kept no state for.
        if let Some(ack) = seg.ack {
            if self.syn_cookies && !seg.syn() {
                if let Some(mss) = check_syn_cookie(&self.secret, &tuple, seg.seq - 1, ack - 1, now) {
                    if self.accept_queue >= self.backlog {
                        self.stats.accept_queue_overflows += 1;
                        return ListenOutcome::Drop(DropReason::Ignored);
                    }
                    self.stats.cookies_accepted += 1;
                    // With timestamps, the TSecr echoes the SYN-ACK's TSval,
                    // which carried the SYN's window scale and SACK-permitted.
                    let offset = ts_offset(&self.secret, tuple.local_addr, tuple.remote_addr);
                    let options = seg.options.timestamp.filter(|_| self.cfg.timestamps).and_then(|(tsval, tsecr)| {
                        let ts_now = (now.total_millis() as u32).wrapping_add(offset);
                        cookie_options(tsecr, ts_now).map(|(wscale, sack)| (wscale, sack, tsval))
                    });
                    let mut conn = Connection::from_cookie(tuple, self.cfg.clone(), ack - 1, seg.seq - 1, mss, options, now);
                    conn.set_ts_offset(offset);
                    let outcome = conn.on_segment(now, seg, payload, pool);
                    if outcome.established {
                        self.accept_queue += 1;
                        return ListenOutcome::Established(conn);
                    }
                    conn.release_buffers(pool);
                    return ListenOutcome::Drop(outcome.dropped.unwrap_or(DropReason::BadAck));
                }
                self.stats.cookies_rejected += 1;
            }
            self.stats.resets_sent += 1;
            return match reset_for(seg) {
                Some(rst) => ListenOutcome::Reply(rst),
                None => ListenOutcome::Drop(DropReason::Rst),
            };
        }
        // "Third, check for a SYN".
        if !seg.syn() {
            // "Fourth, other data or control: ... drop the segment, and return."
            return ListenOutcome::Drop(DropReason::NotSyn);
        }
        // SYN|FIN is no way to open a connection, only a scanner's probe (it
        // passes filters that look for a lone SYN): drop it, as Linux does
        // (tcp_rcv_state_process, LISTEN: "if (th->fin) goto discard").
        if seg.fin() {
            return ListenOutcome::Drop(DropReason::Ignored);
        }
        self.stats.syns += 1;
        if self.accept_queue >= self.backlog {
            // Like Linux: with a full accept queue even cookies cannot help.
            self.stats.accept_queue_overflows += 1;
            return ListenOutcome::Drop(DropReason::Ignored);
        }
        if self.half_open >= self.backlog {
            self.stats.syn_queue_overflows += 1;
            if !self.syn_cookies {
                return ListenOutcome::Drop(DropReason::Ignored);
            }
            self.stats.cookies_sent += 1;
            let mss = tuple.advertised_mss(self.cfg.mss);
            let peer_mss = seg.options.mss.unwrap_or(self.cfg.default_peer_mss).min(mss);
            let cookie = syn_cookie(&self.secret, &tuple, seg.seq, peer_mss, now);
            let mut options = Options { mss: Some(mss), ..Options::default() };
            if let (true, Some((tsval, _))) = (self.cfg.timestamps, seg.options.timestamp) {
                // Only what the SYN offered and we do (RFC 7323 §2.2, §3.2;
                // RFC 2018 §2), remembered in our TSval: no state is kept.
                let wscale = seg.options.window_scale.filter(|_| self.cfg.window_scaling);
                let sack = self.cfg.sack && seg.options.sack_permitted;
                let offset = ts_offset(&self.secret, tuple.local_addr, tuple.remote_addr);
                let ts_now = (now.total_millis() as u32).wrapping_add(offset);
                options.timestamp = Some((cookie_timestamp(ts_now, wscale, sack), tsval));
                options.window_scale = wscale.map(|_| self.cfg.our_window_scale());
                options.sack_permitted = sack;
            }
            return ListenOutcome::Reply(Segment {
                seq: cookie,
                ack: Some(seg.seq + 1),
                flags: Flags::SYN,
                window: self.cfg.recv_buffer_size.min(65535) as u16,
                options,
                payload_len: 0,
            });
        }
        let iss = reopened.map_or_else(|| isn(&self.secret, &tuple, now), |old| old + REOPEN_ISS_GAP);
        match Connection::accept(tuple, seg, self.cfg.clone(), iss, now) {
            Ok(mut conn) => {
                conn.set_ts_offset(ts_offset(&self.secret, tuple.local_addr, tuple.remote_addr));
                self.half_open += 1;
                ListenOutcome::HalfOpen(conn)
            }
            Err(_) => ListenOutcome::Drop(DropReason::NotSyn),
        }
    }
}
