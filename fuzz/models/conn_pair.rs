//! Sequence model of one TCP connection: two `tcp::Connection` engines (A
//! opens, B accepts) joined by a wire the input controls, driven by a
//! sequence of actions — deliver, drop, duplicate or reorder a segment in
//! flight, forge a segment from arbitrary fields, let time pass, and the
//! application calls (send, recv, shutdown, close, abort).
//!
//! After every step it checks what must always hold: nothing panics, every
//! `poll_transmit` loop runs dry, buffers and reassembly stay within their
//! configured bounds, the pool's accounting matches the connection's, and —
//! while no forged segment has been delivered — each side has read exactly a
//! prefix of what the other side sent, in order. At the end, if both sides
//! are still honest and open, a lossless drain must deliver every byte sent,
//! exactly once.
//!
//! Shared by the `tcp_sequence` fuzz target and the proptest in
//! `crates/core/tests/sequence_model.rs` (included there by path), so it
//! depends on `ustack-core` and `arbitrary` only.

use arbitrary::Unstructured;
use std::net::Ipv4Addr;
use ustack_core::tcp::{
    BufferPool, ConnError, Connection, Flags, FourTuple, Options, RecvError, Segment, SeqNumber, State, TcpConfig,
};
use ustack_core::{Duration, Instant};

/// Steps taken from one input, at most.
pub const MAX_STEPS: usize = 512;
/// Segments one `poll_transmit` loop may yield before it counts as endless.
const MAX_BURST: usize = 4096;
/// Segments in flight per direction; the oldest is lost past this.
const WIRE_CAP: usize = 256;
const MAX_PAYLOAD: usize = 1460;

/// Byte `i` of the stream in direction `dir` (0: A→B, 1: B→A): a keyed
/// pattern, so every received byte can be checked against its offset.
pub fn pattern(dir: usize, i: u64) -> u8 {
    ((i.wrapping_mul(2_654_435_761) >> 13) as u8) ^ (dir as u8 * 0x5a)
}

struct Wire {
    seg: Segment,
    payload: Vec<u8>,
}

struct End {
    conn: Option<Connection>,
    pool: BufferPool,
    /// Bytes the application handed to `send` that it accepted.
    sent: u64,
    /// Bytes the application read.
    read: u64,
    /// The application called close or abort (the handle is gone).
    let_go: bool,
    eof: bool,
}

impl End {
    fn new(cfg: &TcpConfig) -> End {
        End { conn: None, pool: BufferPool::for_config(cfg), sent: 0, read: 0, let_go: false, eof: false }
    }
}

pub struct Model {
    cfg: TcpConfig,
    ends: [End; 2],
    /// In flight: `wire[0]` towards B, `wire[1]` towards A.
    wire: [Vec<Wire>; 2],
    now: Instant,
    /// A forged segment has been delivered: stream contents are no longer
    /// checked (the forgery may have been in window, which TCP accepts).
    forged: bool,
    tuple: [FourTuple; 2],
    b_iss: SeqNumber,
    buf: Vec<u8>,
}

impl Model {
    pub fn new(u: &mut Unstructured<'_>) -> arbitrary::Result<Model> {
        let mut cfg = TcpConfig::default();
        // Small buffers and pools, so their limits are reached.
        cfg.send_buffer_size = [2048, 8192, 65536][usize::from(u.int_in_range(0u8..=2)?)];
        cfg.recv_buffer_size = [2048, 8192, 65536][usize::from(u.int_in_range(0u8..=2)?)];
        cfg.buffer_pool_limit = [16 * 1024, 1 << 20][usize::from(u.int_in_range(0u8..=1)?)];
        cfg.buffer_pool_floor = 0;
        cfg.mss = u.int_in_range(48u16..=1460)?;
        cfg.sack = u.arbitrary()?;
        cfg.rack_tlp = u.arbitrary()?;
        cfg.timestamps = u.arbitrary()?;
        cfg.window_scaling = u.arbitrary()?;
        cfg.nodelay = u.arbitrary()?;
        cfg.keepalive = u.arbitrary()?;
        cfg.keepalive_idle = Duration::from_secs(5);
        cfg.keepalive_interval = Duration::from_secs(1);
        cfg.max_ooo_ranges = usize::from(u.int_in_range(1u8..=8)?);
        let a = FourTuple {
            local_addr: Ipv4Addr::new(10, 0, 0, 1).into(),
            local_port: 40000,
            remote_addr: Ipv4Addr::new(10, 0, 0, 2).into(),
            remote_port: 80,
        };
        let b = FourTuple { local_addr: a.remote_addr, local_port: 80, remote_addr: a.local_addr, remote_port: 40000 };
        let a_iss = SeqNumber(u.arbitrary()?);
        let b_iss = SeqNumber(u.arbitrary()?);
        let now = Instant::from_millis(u64::from(u.arbitrary::<u32>()?));
        let mut ends = [End::new(&cfg), End::new(&cfg)];
        ends[0].conn = Some(Connection::connect(a, cfg, a_iss, now));
        Ok(Model { cfg, ends, wire: [Vec::new(), Vec::new()], now, forged: false, tuple: [a, b], b_iss, buf: vec![0; 70000] })
    }

    /// Runs actions from `u` until it is spent, checking after each; then
    /// the final drain.
    pub fn run(u: &mut Unstructured<'_>) -> arbitrary::Result<()> {
        let mut m = Model::new(u)?;
        m.flush();
        m.check();
        for _ in 0..MAX_STEPS {
            if u.is_empty() {
                break;
            }
            m.step(u)?;
            m.flush();
            m.check();
        }
        m.drain();
        Ok(())
    }

    fn step(&mut self, u: &mut Unstructured<'_>) -> arbitrary::Result<()> {
        let side = usize::from(u.arbitrary::<bool>()?);
        match u.int_in_range(0u8..=12)? {
            // Deliver the oldest segment (most common: an honest network).
            0..=2 => {
                if !self.wire[side].is_empty() {
                    let w = self.wire[side].remove(0);
                    self.deliver(side, &w.seg, &w.payload);
                }
            }
            // Deliver one out of order.
            3 => {
                if !self.wire[side].is_empty() {
                    let i = u.choose_index(self.wire[side].len())?;
                    let w = self.wire[side].remove(i);
                    self.deliver(side, &w.seg, &w.payload);
                }
            }
            // Lose one.
            4 => {
                if !self.wire[side].is_empty() {
                    let i = u.choose_index(self.wire[side].len())?;
                    self.wire[side].remove(i);
                }
            }
            // Deliver one twice (it stays in flight).
            5 => {
                if !self.wire[side].is_empty() {
                    let i = u.choose_index(self.wire[side].len())?;
                    let (seg, payload) = (self.wire[side][i].seg, self.wire[side][i].payload.clone());
                    self.deliver(side, &seg, &payload);
                }
            }
            // Time passes: up to ~65 s, or straight to the next deadline.
            6 => {
                let ms = u64::from(u.arbitrary::<u16>()?);
                self.advance(Duration::from_millis(ms));
            }
            7 => {
                if let Some(t) = self.next_deadline() {
                    self.now = self.now.max(t);
                    self.fire_timers();
                }
            }
            8 => {
                let len = usize::from(u.arbitrary::<u16>()?) % 20000;
                self.app_send(side, len);
            }
            9 => {
                let len = usize::from(u.arbitrary::<u16>()?) % 20000 + 1;
                self.app_recv(side, len);
            }
            10 => match u.int_in_range(0u8..=3)? {
                0 => self.app_shutdown(side),
                1 => self.app_close(side),
                2 => self.app_abort(side),
                _ => {
                    if let Some(c) = self.ends[side].conn.as_mut() {
                        c.set_nodelay(!c.nodelay());
                    }
                }
            },
            // A forged segment towards `side`'s peer: fields near the real
            // sequence space (from a segment in flight) or anywhere.
            _ => {
                let (seg, payload) = self.forge(side, u)?;
                self.forged = true;
                self.deliver(side, &seg, &payload);
            }
        }
        Ok(())
    }

    fn forge(&self, dir: usize, u: &mut Unstructured<'_>) -> arbitrary::Result<(Segment, Vec<u8>)> {
        let template = if self.wire[dir].is_empty() {
            Segment::default()
        } else {
            self.wire[dir][u.choose_index(self.wire[dir].len())?].seg
        };
        let near = |u: &mut Unstructured<'_>, s: SeqNumber| -> arbitrary::Result<SeqNumber> {
            Ok(if u.arbitrary()? { SeqNumber(s.0.wrapping_add(i32::from(u.arbitrary::<i16>()?) as u32)) } else { SeqNumber(u.arbitrary()?) })
        };
        let seq = near(u, template.seq)?;
        let ack = if u.arbitrary()? { Some(near(u, template.ack.unwrap_or(template.seq))?) } else { None };
        let flags = Flags::from_byte(u.arbitrary::<u8>()?).without(Flags::ACK | Flags::URG);
        let mut options = Options::default();
        if u.arbitrary()? {
            options.mss = u.arbitrary()?;
            options.window_scale = u.arbitrary()?;
            options.sack_permitted = u.arbitrary()?;
            options.timestamp = u.arbitrary()?;
            for b in options.sack_blocks.iter_mut() {
                if u.arbitrary()? {
                    *b = Some((near(u, template.seq)?, near(u, template.seq)?));
                }
            }
        } else {
            options = template.options;
        }
        let len = usize::from(u.arbitrary::<u16>()?) % 3000;
        let payload: Vec<u8> = (0..len).map(|i| i as u8).collect();
        let seg = Segment { seq, ack, flags, window: u.arbitrary()?, options, payload_len: len };
        Ok((seg, payload))
    }

    /// Hands a segment travelling in direction `dir` to its receiver.
    fn deliver(&mut self, dir: usize, seg: &Segment, payload: &[u8]) {
        let to = 1 - dir;
        if self.ends[to].conn.is_none() {
            // B does not exist yet: it is a listener that accepts a bare SYN.
            if to == 1 && !self.ends[1].let_go {
                if let Ok(c) = Connection::accept(self.tuple[1], seg, self.cfg, self.b_iss, self.now) {
                    self.ends[1].conn = Some(c);
                }
            }
            return;
        }
        let end = &mut self.ends[to];
        let conn = end.conn.as_mut().unwrap();
        let out = conn.on_segment(self.now, seg, payload, &mut end.pool);
        assert_eq!(out.closed, conn.is_closed(), "outcome.closed matches the connection");
        if let Some(rst) = out.reply {
            assert!(rst.flags.rst() && rst.payload_len == 0, "a reply is a bare RST: {rst:?}");
            self.push(to, rst, Vec::new());
        }
    }

    fn push(&mut self, from: usize, seg: Segment, payload: Vec<u8>) {
        let q = &mut self.wire[from];
        if q.len() >= WIRE_CAP {
            q.remove(0);
        }
        q.push(Wire { seg, payload });
    }

    /// Every end sends what it has (the stack's pollers); a closed
    /// connection the application let go of is removed, as the stack does,
    /// and must give every chunk back.
    fn flush(&mut self) {
        for end in &mut self.ends {
            if end.let_go && end.conn.as_ref().is_some_and(Connection::is_closed) {
                let mut c = end.conn.take().unwrap();
                c.release_buffers(&mut end.pool);
                assert_eq!(end.pool.in_use(), 0, "a removed connection left chunks in use");
            }
        }
        for from in 0..2 {
            let Some(conn) = self.ends[from].conn.as_mut() else { continue };
            let pool = &self.ends[from].pool;
            let mut out = Vec::new();
            for n in 0.. {
                assert!(n < MAX_BURST, "poll_transmit never ran dry");
                let Some(seg) = conn.poll_transmit(self.now, MAX_PAYLOAD, pool) else { break };
                assert!(seg.payload_len <= MAX_PAYLOAD, "segment larger than asked: {seg:?}");
                assert!(seg.options.wire_len() <= 40, "options do not fit a header: {seg:?}");
                let mut payload = vec![0; seg.payload_len];
                conn.read_payload(&seg, &mut payload, pool);
                out.push(Wire { seg, payload });
            }
            for w in out {
                self.push(from, w.seg, w.payload);
            }
        }
    }

    fn advance(&mut self, d: Duration) {
        self.now += d;
        self.fire_timers();
    }

    fn next_deadline(&self) -> Option<Instant> {
        self.ends.iter().filter_map(|e| e.conn.as_ref()?.poll_timeout()).min()
    }

    fn fire_timers(&mut self) {
        for end in &mut self.ends {
            if let Some(c) = end.conn.as_mut() {
                if c.poll_timeout().is_some_and(|t| t <= self.now) {
                    c.handle_timeout(self.now);
                }
            }
        }
    }

    fn app_send(&mut self, side: usize, len: usize) {
        let end = &mut self.ends[side];
        let (Some(conn), false) = (end.conn.as_mut(), end.let_go) else { return };
        let data: Vec<u8> = (0..len as u64).map(|i| pattern(side, end.sent + i)).collect();
        if let Ok(n) = conn.send(&data, &mut end.pool) {
            assert!(n <= len);
            end.sent += n as u64;
        }
    }

    fn app_recv(&mut self, side: usize, len: usize) {
        let end = &mut self.ends[side];
        let (Some(conn), false) = (end.conn.as_mut(), end.let_go) else { return };
        let len = len.min(self.buf.len());
        match conn.recv(&mut self.buf[..len], &mut end.pool) {
            Ok(0) => end.eof = true,
            Ok(n) => {
                assert!(!end.eof, "data after end of stream");
                if !self.forged {
                    for (k, &b) in self.buf[..n].iter().enumerate() {
                        let at = end.read + k as u64;
                        assert_eq!(b, pattern(1 - side, at), "side {side} read a wrong byte at offset {at}");
                    }
                }
                end.read += n as u64;
            }
            Err(RecvError::WouldBlock) | Err(RecvError::Closed) | Err(RecvError::Connection(_)) => {}
        }
    }

    fn app_shutdown(&mut self, side: usize) {
        let end = &mut self.ends[side];
        if let (Some(c), false) = (end.conn.as_mut(), end.let_go) {
            let _ = c.shutdown_write();
        }
    }

    fn app_close(&mut self, side: usize) {
        let end = &mut self.ends[side];
        if let (Some(c), false) = (end.conn.as_mut(), end.let_go) {
            c.close();
        }
        end.let_go = true;
    }

    fn app_abort(&mut self, side: usize) {
        let end = &mut self.ends[side];
        if let (Some(c), false) = (end.conn.as_mut(), end.let_go) {
            c.abort();
        }
        end.let_go = true;
    }

    /// What must hold after every step.
    fn check(&self) {
        for (side, end) in self.ends.iter().enumerate() {
            let Some(c) = end.conn.as_ref() else { continue };
            assert!(c.recv_queue() <= self.cfg.recv_buffer_size, "receive buffer over its size");
            assert!(c.send_queue() <= self.cfg.send_buffer_size, "send buffer over its size");
            assert!(c.ooo_islands() <= self.cfg.max_ooo_ranges, "more reassembly islands than allowed");
            assert!(end.pool.in_use() <= end.pool.limit(), "pool over its limit");
            assert!(c.buffer_chunks() <= end.pool.in_use(), "connection holds chunks the pool does not count");
            let st = c.stats();
            // Bytes delivered in order = bytes read + bytes waiting to be read.
            if !end.let_go && c.error().is_none() {
                assert_eq!(st.bytes_in, end.read + c.recv_queue() as u64, "side {side}: bytes_in != read + queued");
            }
            assert!(st.bytes_acked <= end.sent, "side {side}: more bytes acknowledged than sent");
            if !self.forged {
                // Honest peers: never more delivered than the other side sent.
                assert!(st.bytes_in <= self.ends[1 - side].sent, "side {side}: received bytes nobody sent");
            }
        }
    }

    /// A lossless network and an application that reads everything: every
    /// byte sent must arrive, once, in order.
    fn drain(&mut self) {
        let open = |e: &End| e.conn.as_ref().is_some_and(|c| c.error().is_none() && !c.is_closed()) && !e.let_go;
        if self.forged || !open(&self.ends[0]) {
            return;
        }
        // B may not exist yet (A's SYN lost): the drain's retransmissions
        // bring it. If it exists it must be open too (its SYN-ACK retries
        // may have run out before the drain: then there is nothing to check).
        let b = &self.ends[1];
        if b.let_go || (b.conn.is_some() && !open(b)) {
            return;
        }
        // An end whose retransmissions are at their limit may fail on the
        // drain's first timeout before an acknowledgement reaches it: an
        // acknowledgement can ride on a retransmission of data the peer
        // already holds, which the peer drops whole (RFC 9293 §3.10.7.4,
        // as Linux does), so one more timeout is needed to get it through.
        let limit = |c: &Connection| match c.state() {
            State::SynSent => self.cfg.syn_retries,
            State::SynReceived => self.cfg.synack_retries,
            _ => self.cfg.max_retransmits,
        };
        let at_limit: Vec<bool> =
            self.ends.iter().map(|e| e.conn.as_ref().is_some_and(|c| c.timeouts_in_row() + 1 >= limit(c))).collect();
        for round in 0..20_000 {
            // MODEL_TRACE=1 prints the first rounds of a failing drain.
            if round < 30 && std::env::var_os("MODEL_TRACE").is_some() {
                for (i, e) in self.ends.iter().enumerate() {
                    if let Some(c) = e.conn.as_ref() {
                        eprintln!("round {round} end {i}: pool {}/{} chunks {} islands {} {:?} sendq {} recvq {} wnd {} cwnd {} una {:?} max {:?} timeout {:?} now {:?} wire {}", e.pool.in_use(), e.pool.limit(), c.buffer_chunks(), c.ooo_islands(), c.state(), c.send_queue(), c.recv_queue(), c.send_window(), c.cwnd(), c.snd_una(), c.snd_max(), c.poll_timeout(), self.now, self.wire[i].len());
                    }
                }
            }
            let mut moved = false;
            for dir in 0..2 {
                while !self.wire[dir].is_empty() {
                    let w = self.wire[dir].remove(0);
                    if round < 30 && std::env::var_os("MODEL_TRACE").is_some() {
                        eprintln!("  {} -> {}: {:?}", dir, 1 - dir, w.seg);
                    }
                    self.deliver(dir, &w.seg, &w.payload);
                    moved = true;
                }
            }
            for side in 0..2 {
                self.app_recv(side, 70000);
            }
            self.flush();
            self.check();
            let done = (0..2).all(|s| {
                let peer = &self.ends[1 - s];
                self.ends[s].conn.is_some() && self.ends[s].read == peer.sent
            }) && self.wire.iter().all(Vec::is_empty);
            if done {
                return;
            }
            if !moved && self.wire.iter().all(Vec::is_empty) {
                // Nothing in flight: let the next timer fire.
                match self.next_deadline() {
                    Some(t) => self.now = self.now.max(t),
                    None => break,
                }
                self.fire_timers();
                self.flush();
            }
            for (side, end) in self.ends.iter().enumerate() {
                if let Some(c) = end.conn.as_ref() {
                    if let Some(e) = c.error() {
                        if e == ConnError::TimedOut && at_limit[side] {
                            return;
                        }
                        panic!("connection failed on a lossless drain: {e:?} (state {:?})", c.state());
                    }
                }
            }
        }
        let (a, b) = (&self.ends[0], &self.ends[1]);
        panic!(
            "drain did not deliver everything: A sent {} B read {}; B sent {} A read {}; states {:?} {:?}",
            a.sent,
            b.read,
            b.sent,
            a.read,
            a.conn.as_ref().map(Connection::state),
            b.conn.as_ref().map(Connection::state)
        );
    }
}
