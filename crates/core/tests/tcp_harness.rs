//! A small language for per-state TCP tests, shared by `tcp_states.rs` and
//! `tcp_behaviour.rs` (this file is also built as an empty test target).
//!
//! ```ignore
//! let mut s = socket_established();
//! send!(s, time = 10, seg! { seq: REMOTE + 1, ack: LOCAL + 1, payload: b"abc" });
//! recv!(s, time = 50, seg! { seq: LOCAL + 1, ack: REMOTE + 4 });
//! recv_nothing!(s);
//! ```
//!
//! Our ISS is `LOCAL` (1000) and the peer's is `REMOTE` (2000). Segments are
//! written with plain `u32` sequence numbers; `window` and `options` are only
//! compared when the expected segment sets them.
#![allow(dead_code, unused_macros)]

pub use std::net::Ipv4Addr;
pub use ustack_core::tcp::*;
pub use ustack_core::time::{Duration, Instant};

pub const LOCAL: u32 = 1000;
pub const REMOTE: u32 = 2000;
/// Receive buffer of the sockets under test: the window we advertise.
pub const WINDOW: u32 = 64_000;
pub const MAX_PAYLOAD: usize = 1460;

pub const ACK: Flags = Flags::NONE;
pub const SYN: Flags = Flags::SYN;
pub const FIN: Flags = Flags::FIN;
pub const RST: Flags = Flags::RST;
pub const PSH: Flags = Flags::PSH;

/// A segment as written in tests.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct TestSegment {
    pub seq: u32,
    pub ack: Option<u32>,
    pub flags: Flags,
    pub window: Option<u16>,
    pub options: Option<Options>,
    pub payload: Vec<u8>,
}

impl TestSegment {
    pub fn to_segment(&self) -> Segment {
        Segment {
            seq: SeqNumber(self.seq),
            ack: self.ack.map(SeqNumber),
            flags: self.flags,
            window: self.window.unwrap_or(WINDOW.min(65535) as u16),
            options: self.options.unwrap_or_default(),
            payload_len: self.payload.len(),
        }
    }
}


macro_rules! seg {
    (@set $s:ident, seq, $v:expr) => { $s.seq = $v; };
    (@set $s:ident, ack, $v:expr) => { $s.ack = Some($v); };
    (@set $s:ident, flags, $v:expr) => { $s.flags = $v; };
    (@set $s:ident, window, $v:expr) => { $s.window = Some($v); };
    (@set $s:ident, options, $v:expr) => { $s.options = Some($v); };
    (@set $s:ident, payload, $v:expr) => { $s.payload = $v.to_vec(); };
    ($($field:ident : $val:expr),* $(,)?) => {{
        #[allow(unused_mut)]
        let mut s = TestSegment::default();
        $( seg!(@set s, $field, $val); )*
        s
    }};
}

/// A `SegmentOutcome` that tests may ignore.
#[derive(Clone, Copy, Debug)]
pub struct Out(pub SegmentOutcome);

impl std::ops::Deref for Out {
    type Target = SegmentOutcome;
    fn deref(&self) -> &SegmentOutcome {
        &self.0
    }
}

/// The socket under test and the virtual clock.
pub struct Sock {
    pub conn: Connection,
    pub now: Instant,
    /// The buffer pool the connection's bytes live in.
    pub pool: BufferPool,
}

impl Sock {
    pub fn at(&mut self, millis: u64) {
        let t = Instant::from_millis(millis);
        assert!(t >= self.now, "time went backwards");
        self.now = t;
        self.conn.handle_timeout(t);
    }

    pub fn send(&mut self, seg: &TestSegment) -> Out {
        let out = self.conn.on_segment(self.now, &seg.to_segment(), &seg.payload, &mut self.pool);
        Out(out)
    }

    /// The next segment the socket sends, as a `TestSegment` (window and
    /// options always filled in).
    pub fn poll(&mut self) -> Option<TestSegment> {
        let seg = self.conn.poll_transmit(self.now, MAX_PAYLOAD, &self.pool)?;
        let mut payload = vec![0u8; seg.payload_len];
        self.conn.read_payload(&seg, &mut payload, &self.pool);
        Some(TestSegment {
            seq: seg.seq.0,
            ack: seg.ack.map(|a| a.0),
            flags: seg.flags,
            window: Some(seg.window),
            options: Some(seg.options),
            payload,
        })
    }

    pub fn expect(&mut self, want: &TestSegment) -> TestSegment {
        let got = self.poll().unwrap_or_else(|| panic!("at {}: expected {want:?}, got nothing", self.now));
        let mut cmp = got.clone();
        if want.window.is_none() {
            cmp.window = None;
        }
        if want.options.is_none() {
            cmp.options = None;
        }
        assert_eq!(&cmp, want, "at {} in {}", self.now, self.conn.state());
        got
    }

    pub fn expect_nothing(&mut self) {
        if let Some(got) = self.poll() {
            panic!("at {} in {}: expected nothing, got {got:?}", self.now, self.conn.state());
        }
    }

    pub fn state(&self) -> State {
        self.conn.state()
    }

    /// The application writes.
    pub fn write(&mut self, data: &[u8]) -> Result<usize, SendError> {
        self.conn.send(data, &mut self.pool)
    }

    /// The application reads.
    pub fn read(&mut self, buf: &mut [u8]) -> Result<usize, RecvError> {
        self.conn.recv(buf, &mut self.pool)
    }

    /// A socket around `conn`, with a pool sized for `cfg`.
    pub fn new(conn: Connection, cfg: &TcpConfig) -> Sock {
        Sock { conn, now: Instant::ZERO, pool: BufferPool::for_config(cfg) }
    }
}

/// `send!(sock, [time = ms,] seg)`: deliver a segment to the socket.
macro_rules! send {
    ($s:expr, time = $t:expr, $seg:expr) => {{
        $s.at($t);
        $s.send(&$seg)
    }};
    ($s:expr, $seg:expr) => {
        $s.send(&$seg)
    };
}

/// `recv!(sock, [time = ms,] seg)`: the socket sends exactly `seg` next.
macro_rules! recv {
    ($s:expr, time = $t:expr, $seg:expr) => {{
        $s.at($t);
        $s.expect(&$seg)
    }};
    ($s:expr, $seg:expr) => {
        $s.expect(&$seg)
    };
}

/// `recv_nothing!(sock, [time = ms])`: the socket has nothing to send.
macro_rules! recv_nothing {
    ($s:expr, time = $t:expr) => {{
        $s.at($t);
        $s.expect_nothing()
    }};
    ($s:expr) => {
        $s.expect_nothing()
    };
}

pub fn tuple() -> FourTuple {
    FourTuple {
        local_addr: Ipv4Addr::new(192, 168, 1, 1).into(),
        local_port: 80,
        remote_addr: Ipv4Addr::new(192, 168, 1, 2).into(),
        remote_port: 49500,
    }
}

/// No options, so segments stay short: tests that need options turn them on.
pub fn config() -> TcpConfig {
    TcpConfig {
        sack: false,
        timestamps: false,
        window_scaling: false,
        recv_buffer_size: WINDOW as usize,
        send_buffer_size: 64_000,
        ..TcpConfig::default()
    }
}

pub fn socket_syn_sent_with(cfg: &TcpConfig) -> Sock {
    let mut s = Sock::new(Connection::connect(tuple(), *cfg, SeqNumber(LOCAL), Instant::ZERO), cfg);
    let syn = s.poll().expect("SYN");
    assert_eq!((syn.seq, syn.ack, syn.flags), (LOCAL, None, SYN));
    s
}

pub fn socket_syn_sent() -> Sock {
    socket_syn_sent_with(&config())
}

pub fn socket_syn_received_with(cfg: &TcpConfig, syn: TestSegment) -> Sock {
    let conn = Connection::accept(tuple(), &syn.to_segment(), *cfg, SeqNumber(LOCAL), Instant::ZERO).unwrap();
    let mut s = Sock::new(conn, cfg);
    assert_eq!(s.state(), State::SynReceived);
    let synack = s.poll().expect("SYN-ACK");
    assert_eq!((synack.seq, synack.ack, synack.flags), (LOCAL, Some(syn.seq + 1), SYN));
    s
}

pub fn socket_syn_received() -> Sock {
    socket_syn_received_with(&config(), seg! { seq: REMOTE, flags: SYN, options: Options { mss: Some(1460), ..Options::default() } })
}

pub fn socket_established() -> Sock {
    let mut s = socket_syn_received();
    let out = send!(s, seg! { seq: REMOTE + 1, ack: LOCAL + 1 });
    assert!(out.established);
    assert_eq!(s.state(), State::Established);
    recv_nothing!(s);
    s
}

pub fn socket_fin_wait_1() -> Sock {
    let mut s = socket_established();
    s.conn.shutdown_write().unwrap();
    recv!(s, seg! { seq: LOCAL + 1, ack: REMOTE + 1, flags: FIN });
    assert_eq!(s.state(), State::FinWait1);
    s
}

pub fn socket_fin_wait_2() -> Sock {
    let mut s = socket_fin_wait_1();
    send!(s, seg! { seq: REMOTE + 1, ack: LOCAL + 2 });
    assert_eq!(s.state(), State::FinWait2);
    recv_nothing!(s);
    s
}

pub fn socket_closing() -> Sock {
    let mut s = socket_fin_wait_1();
    send!(s, seg! { seq: REMOTE + 1, ack: LOCAL + 1, flags: FIN });
    assert_eq!(s.state(), State::Closing);
    recv!(s, seg! { seq: LOCAL + 2, ack: REMOTE + 2 });
    s
}

pub fn socket_time_wait() -> Sock {
    let mut s = socket_fin_wait_2();
    send!(s, seg! { seq: REMOTE + 1, ack: LOCAL + 2, flags: FIN });
    assert_eq!(s.state(), State::TimeWait);
    recv!(s, seg! { seq: LOCAL + 2, ack: REMOTE + 2 });
    s
}

pub fn socket_close_wait() -> Sock {
    let mut s = socket_established();
    let out = send!(s, seg! { seq: REMOTE + 1, ack: LOCAL + 1, flags: FIN });
    assert!(out.peer_fin);
    assert_eq!(s.state(), State::CloseWait);
    recv!(s, seg! { seq: LOCAL + 1, ack: REMOTE + 2 });
    s
}

pub fn socket_last_ack() -> Sock {
    let mut s = socket_close_wait();
    s.conn.shutdown_write().unwrap();
    recv!(s, seg! { seq: LOCAL + 1, ack: REMOTE + 2, flags: FIN });
    assert_eq!(s.state(), State::LastAck);
    s
}

impl Sock {
    /// Our current TSval, from a bare ACK we make the socket send.
    pub fn poll_timestamp(&mut self) -> u32 {
        self.conn.poll_transmit(self.now, MAX_PAYLOAD, &self.pool).and_then(|s| s.options.timestamp).map_or(0, |t| t.0)
    }
}
