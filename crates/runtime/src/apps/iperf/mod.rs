//! iperf3 (3.12 wire protocol) on the stack: a server and a client that
//! interoperate with the real `iperf3`.
//!
//! The protocol, as iperf3 3.12 speaks it: one TCP port carries the control
//! connection and every TCP data stream. The client opens the control
//! connection and sends a 37-byte cookie; the server then drives the test with
//! one signed state byte at a time (PARAM_EXCHANGE, CREATE_STREAMS,
//! TEST_START, TEST_RUNNING, EXCHANGE_RESULTS, DISPLAY_RESULTS), and the
//! client answers TEST_END, IPERF_DONE. Parameters and results travel as a
//! 4-byte big-endian length and that much JSON. Data streams open with the
//! same cookie (TCP) or a 4-byte hello (UDP); ids go 1, 3, 4, 5, …
//!
//! Both apps take time as the loop's `now` and randomness (the cookie) as a
//! seed. The only other things they read from the OS are the wall clock, once
//! per test (UDP datagrams carry Unix time, as iperf3's do), and the process's
//! CPU time, which iperf3's results must report.
//!
//! Both are driven by readiness, like every app: each registers every
//! socket it opens ([`Stack::register`]), works only when an event names
//! one of its sockets or one of its deadlines passes, and then reads and
//! writes only the data streams that had events. They say when they next
//! need a turn ([`App::next_deadline`]: a handshake timeout, a UDP hello's
//! retry, a paced sender's next millisecond, the next interval, the end of
//! the test), so one event loop serves them beside other apps; [`run`]
//! drives one of them on it, reporting what happens.

mod client;
mod data;
mod json;
mod server;
mod spread;
mod stream;
#[cfg(test)]
mod tests;

pub use client::IperfClient;
pub use json::Json;
pub use server::IperfServer;
pub use spread::{IperfStreams, StreamShards};
pub use stream::WallClock;

use crate::apps::APP_TOKEN;
use crate::{App, EventLoop, RunEnd, StopSignal, Waitable};
use std::net::SocketAddr;
use ustack_core::phy::Device;
use ustack_core::tcp::{RecvError, SendError};
use ustack_core::{Duration, Event, Instant, Interest, Stack, TcpHandle};

/// iperf3's port for control and data.
pub const DEFAULT_PORT: u16 = 5201;
/// 36 characters of `a-z2-7` and a NUL.
pub const COOKIE_LEN: usize = 37;
/// The version we announce as `client_version`.
pub const CLIENT_VERSION: &str = "3.12";

/// iperf3's state bytes (iperf_api.h), sent as one signed byte.
pub mod state {
    /// Server to client: start the test (the client sets up its timers).
    pub const TEST_START: i8 = 1;
    /// Server to client: data flows now.
    pub const TEST_RUNNING: i8 = 2;
    /// Client to server: the client's sending time or byte count is over.
    pub const TEST_END: i8 = 4;
    /// Server to client: send the test parameters (JSON).
    pub const PARAM_EXCHANGE: i8 = 9;
    /// Server to client: open the data streams.
    pub const CREATE_STREAMS: i8 = 10;
    /// Server to client: the server is stopping (a signal), the test ends.
    pub const SERVER_TERMINATE: i8 = 11;
    /// Client to server: the client is stopping (a signal), the test ends.
    pub const CLIENT_TERMINATE: i8 = 12;
    /// Server to client: exchange results (each side sends its JSON).
    pub const EXCHANGE_RESULTS: i8 = 13;
    /// Server to client: print the results; the server is done.
    pub const DISPLAY_RESULTS: i8 = 14;
    /// Client to server: the client is done too.
    pub const IPERF_DONE: i8 = 16;
    /// Server to client: refused (a test is already running, or a bad cookie).
    pub const ACCESS_DENIED: i8 = -1;
    /// Server to client: the test failed; two 32-bit error codes follow.
    pub const SERVER_ERROR: i8 = -2;
}

/// The UDP stream hello and its answer, as 32-bit values iperf3 writes in
/// host order. Every iperf3 we meet runs on a little-endian host, so we send
/// little-endian and accept either order.
pub const UDP_CONNECT_MSG: u32 = 0x3637_3839;
/// The server's answer to [`UDP_CONNECT_MSG`].
pub const UDP_CONNECT_REPLY: u32 = 0x3938_3736;
/// iperf3 before 3.1 answered with this instead.
const LEGACY_UDP_CONNECT_REPLY: u32 = 987_654_321;

/// iperf3 error codes (iperf_api.h) that a SERVER_ERROR carries: "Number
/// of parallel streams too large".
pub const IE_NUM_STREAMS: i32 = 6;
/// "Block size too large" (TCP).
pub const IE_BLOCK_SIZE: i32 = 7;
/// "Block size too large" (UDP: the datagram does not fit the MTU).
pub const IE_UDP_BLOCK_SIZE: i32 = 20;
/// "Unable to receive parameters from client".
pub const IE_RECV_PARAMS: i32 = 114;

/// The largest JSON message we accept (iperf3 itself allows much more, but
/// parameters and results of up to 128 streams fit easily).
const MAX_JSON: usize = 1 << 20;
/// The most parallel streams a test may ask for (iperf3's limit).
pub const MAX_STREAMS: u32 = 128;
/// The largest TCP block (`-l`) we accept: iperf3's MAX_BLOCKSIZE.
pub const MAX_TCP_LEN: usize = 1 << 20;
/// Default TCP block: iperf3's DEFAULT_TCP_BLKSIZE.
pub const DEFAULT_TCP_LEN: usize = 128 * 1024;
/// The largest UDP datagram payload we send: a 1500-byte MTU less the IPv4
/// and UDP headers (the stack does not fragment).
pub const MAX_UDP_LEN: usize = 1472;
/// UDP rate when none is given: iperf3's 1 Mbit/s.
pub const DEFAULT_UDP_RATE: u64 = 1024 * 1024;

/// What a test does: the parameters the client sends after PARAM_EXCHANGE.
#[derive(Clone, Debug, PartialEq)]
pub struct TestParams {
    /// UDP streams (`-u`) rather than TCP.
    pub udp: bool,
    /// Seconds omitted at the start (accepted, reported; we count from 0).
    pub omit: u32,
    /// Test length in seconds; 0 when `bytes` or `blocks` bound it instead.
    pub time: u32,
    /// Bytes to send (`-n`), 0 for none.
    pub bytes: u64,
    /// Blocks to send (`-k`), 0 for none.
    pub blocks: u64,
    /// Streams in each direction (`-P`), at least 1.
    pub parallel: u32,
    /// Block (TCP write) or datagram (UDP) length.
    pub len: usize,
    /// The server sends and the client receives (`-R`).
    pub reverse: bool,
    /// Both sides send, each on its own streams (`--bidir`).
    pub bidir: bool,
    /// Target bits per second per stream (`-b`), 0 for unlimited (UDP always has one).
    pub bandwidth: u64,
    /// 64-bit UDP sequence numbers.
    pub udp64: bool,
    /// TCP_NODELAY on the data streams (`-N`).
    pub nodelay: bool,
    /// The client's iperf3 version, as it announces it ("" when it does not).
    pub client_version: String,
}

impl Default for TestParams {
    fn default() -> TestParams {
        TestParams {
            udp: false,
            omit: 0,
            time: 10,
            bytes: 0,
            blocks: 0,
            parallel: 1,
            len: DEFAULT_TCP_LEN,
            reverse: false,
            bidir: false,
            bandwidth: 0,
            udp64: false,
            nodelay: false,
            client_version: CLIENT_VERSION.into(),
        }
    }
}

impl TestParams {
    /// The parameters JSON, with iperf3's key names and order.
    pub fn to_json(&self) -> Json {
        let mut m: Vec<(String, Json)> = Vec::new();
        let mut put = |k: &str, v: Json| m.push((k.to_string(), v));
        put(if self.udp { "udp" } else { "tcp" }, true.into());
        put("omit", u64::from(self.omit).into());
        put("time", u64::from(self.time).into());
        put("num", self.bytes.into());
        put("blockcount", self.blocks.into());
        if self.nodelay {
            put("nodelay", true.into());
        }
        put("parallel", u64::from(self.parallel).into());
        if self.reverse {
            put("reverse", true.into());
        }
        if self.bidir {
            put("bidirectional", true.into());
        }
        put("len", (self.len as u64).into());
        if self.bandwidth > 0 {
            put("bandwidth", self.bandwidth.into());
        }
        put("pacing_timer", 1000u64.into());
        if self.udp64 {
            put("udp_counters_64bit", 1u64.into());
        }
        put("client_version", self.client_version.as_str().into());
        Json::Obj(m)
    }

    /// Read the client's parameters, checking what we rely on. The error
    /// carries iperf3's error code (iperf_api.h) for SERVER_ERROR.
    pub fn from_json(j: &Json) -> Result<TestParams, (i32, String)> {
        let flag = |k: &str| j.get(k).is_some_and(Json::truthy);
        let num = |k: &str| j.get(k).and_then(Json::as_u64).unwrap_or(0);
        let udp = flag("udp");
        if !udp && !flag("tcp") {
            return Err((IE_RECV_PARAMS, "only TCP and UDP tests are supported".into()));
        }
        let p = TestParams {
            udp,
            omit: num("omit").min(u64::from(u32::MAX)) as u32,
            time: num("time").min(u64::from(u32::MAX)) as u32,
            bytes: num("num"),
            blocks: num("blockcount"),
            parallel: num("parallel").max(1).min(u64::from(u32::MAX)) as u32,
            len: match num("len") {
                0 if udp => 1460,
                0 => DEFAULT_TCP_LEN,
                n => n.min(u64::from(u32::MAX)) as usize,
            },
            reverse: flag("reverse"),
            bidir: flag("bidirectional"),
            bandwidth: num("bandwidth"),
            udp64: flag("udp_counters_64bit"),
            nodelay: flag("nodelay"),
            client_version: j.get("client_version").and_then(Json::as_str).unwrap_or("").to_string(),
        };
        if p.parallel > MAX_STREAMS {
            return Err((IE_NUM_STREAMS, format!("{} parallel streams: at most {MAX_STREAMS}", p.parallel)));
        }
        if p.len > MAX_TCP_LEN {
            return Err((IE_BLOCK_SIZE, format!("block length {} is over {MAX_TCP_LEN}", p.len)));
        }
        if udp && p.len > MAX_UDP_LEN {
            // Larger datagrams would be IP fragments: the stack reassembles them but does not
            // fragment on transmit, so a test in either direction is held to one frame.
            return Err((IE_UDP_BLOCK_SIZE, format!("UDP datagrams of {} bytes: at most {MAX_UDP_LEN}", p.len)));
        }
        Ok(p)
    }

    /// Streams the client sends on, and streams it receives on.
    pub fn client_streams(&self) -> (u32, u32) {
        match (self.bidir, self.reverse) {
            (true, _) => (self.parallel, self.parallel),
            (false, true) => (0, self.parallel),
            (false, false) => (self.parallel, 0),
        }
    }

    /// The byte bound of a test, if it has one (`-n`, or `-k` blocks).
    pub fn byte_bound(&self) -> Option<u64> {
        match (self.bytes, self.blocks) {
            (0, 0) => None,
            (0, k) => Some(k.saturating_mul(self.len as u64)),
            (n, _) => Some(n),
        }
    }

    /// The per-stream UDP rate: the asked one, or iperf3's default.
    pub fn udp_rate(&self) -> u64 {
        if self.bandwidth > 0 {
            self.bandwidth
        } else {
            DEFAULT_UDP_RATE
        }
    }
}

/// One stream's end-of-test figures, ours and (once results are exchanged) the peer's.
#[derive(Clone, Debug, Default)]
pub struct StreamReport {
    /// The stream id (1, 3, 4, 5, … as iperf3 numbers them).
    pub id: u32,
    /// We sent on this stream.
    pub sender: bool,
    /// Our end of the stream (`None` until it connected).
    pub local: Option<SocketAddr>,
    /// The peer's end of the stream.
    pub remote: Option<SocketAddr>,
    /// Bytes we sent or received during the test.
    pub bytes: u64,
    /// UDP datagrams we sent; as a receiver, the highest sequence number
    /// seen (what iperf3 reports as the total).
    pub packets: u64,
    /// UDP: datagrams missing by sequence number (receiver), as iperf3 counts them.
    pub lost: u64,
    /// UDP: datagrams that arrived after a higher sequence number (receiver).
    pub out_of_order: u64,
    /// UDP receive jitter, seconds (RFC 1889 estimator as iperf3 computes it).
    pub jitter: f64,
    /// TCP segments retransmitted (sender), from the stack's connection statistics.
    pub retransmits: Option<u64>,
    /// Seconds since the test started.
    pub end: f64,
    /// What the peer reported for this stream id.
    pub peer: Option<PeerStream>,
}

/// A stream as the peer's results JSON describes it.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct PeerStream {
    /// Bytes the peer sent or received on the stream.
    pub bytes: u64,
    /// UDP datagrams the peer sent, or as receiver the highest sequence number it saw.
    pub packets: u64,
    /// UDP datagrams the peer's receiver counted lost.
    pub errors: u64,
    /// UDP receive jitter the peer measured, seconds.
    pub jitter: f64,
    /// TCP retransmissions the peer's sender counted (`None` where it counts none).
    pub retransmits: Option<u64>,
    /// The peer's `end_time`: seconds its stream ran.
    pub end: Option<f64>,
}

/// Bytes per stream over one reporting interval.
#[derive(Clone, Debug)]
pub struct Interval {
    /// Seconds from the test's start to the interval's start.
    pub start: f64,
    /// Seconds from the test's start to the interval's end.
    pub end: f64,
    /// (stream id, sender, bytes, packets) in stream order.
    pub streams: Vec<(u32, bool, u64, u64)>,
}

/// A finished test, as one side saw it.
#[derive(Clone, Debug)]
pub struct TestReport {
    /// The parameters the test ran with.
    pub params: TestParams,
    /// The test's cookie (36 characters, the NUL left off).
    pub cookie: String,
    /// The other side's control-connection address.
    pub peer: Option<SocketAddr>,
    /// Our end of the control connection.
    pub local: Option<SocketAddr>,
    /// Seconds from TEST_RUNNING to the end of data.
    pub duration: f64,
    /// Every stream of the test, in id order.
    pub streams: Vec<StreamReport>,
    /// The peer's `cpu_util_total/user/system`.
    pub peer_cpu: [f64; 3],
    /// Our CPU use over the test: total, user, system (percent of one core).
    pub cpu: [f64; 3],
    /// Whether the peer's sender counted retransmits.
    pub peer_sender_has_retransmits: bool,
}

impl TestReport {
    /// Sum over the streams where we were the sender (`true`) or receiver.
    pub fn our_bytes(&self, sender: bool) -> u64 {
        self.streams.iter().filter(|s| s.sender == sender).map(|s| s.bytes).sum()
    }
}

/// What the apps tell the command that runs them, in order.
#[derive(Clone, Debug)]
pub enum PerfEvent {
    /// A client connected and the streams are up; data flows now.
    Started {
        /// The other side's control-connection address.
        peer: Option<SocketAddr>,
        /// The parameters the test runs with.
        params: TestParams,
        /// The streams, each with its endpoints, in id order.
        streams: Vec<StreamReport>,
    },
    /// The figures of one reporting interval.
    Interval(Interval),
    /// A test ended with results exchanged.
    Finished(TestReport),
    /// A connection was turned away with ACCESS_DENIED (busy, or a bad cookie).
    Refused(Option<SocketAddr>),
    /// A test ended without results.
    Aborted(String),
}

/// CPU time this process used so far (user, system), in seconds; iperf3
/// reports it, and the results JSON must carry it. `getrusage` is the only
/// OS call here: it reads accounting, not the network.
pub fn cpu_times() -> (f64, f64) {
    // SAFETY: rusage is plain data; getrusage fills it.
    let mut ru: libc::rusage = unsafe { std::mem::zeroed() };
    // SAFETY: valid pointer to a rusage.
    if unsafe { libc::getrusage(libc::RUSAGE_SELF, &mut ru) } != 0 {
        return (0.0, 0.0);
    }
    let t = |tv: libc::timeval| tv.tv_sec as f64 + tv.tv_usec as f64 / 1e6;
    (t(ru.ru_utime), t(ru.ru_stime))
}

/// CPU percentages over a test from `cpu_times` at its start and end.
fn cpu_util(start: (f64, f64), end: (f64, f64), secs: f64) -> [f64; 3] {
    if secs <= 0.0 {
        return [0.0; 3];
    }
    let user = (end.0 - start.0).max(0.0) / secs * 100.0;
    let system = (end.1 - start.1).max(0.0) / secs * 100.0;
    [user + system, user, system]
}

/// Seconds between two loop instants.
fn secs_between(from: Instant, to: Instant) -> f64 {
    to.saturating_since(from).as_micros() as f64 / 1e6
}

/// The control connection: bytes in, parsed into state bytes and
/// length-framed JSON; bytes out, queued until the send buffer takes them.
struct Control {
    h: TcpHandle,
    rx: Vec<u8>,
    tx: Vec<u8>,
    /// The peer closed its side or the connection failed.
    eof: bool,
    /// The last pump stopped at the `rx` bound with bytes possibly left in
    /// the stack: no event will say so, so the app pumps again next turn.
    more: bool,
}

impl Control {
    /// The control connection `h` (just connected or accepted), registered
    /// for reading and for room to write.
    fn new(stack: &mut Stack, h: TcpHandle) -> Control {
        let _ = stack.register(h, APP_TOKEN, Interest::READABLE | Interest::WRITABLE);
        Control { h, rx: Vec::new(), tx: Vec::new(), eof: false, more: false }
    }

    /// Read what arrived and send what is queued.
    fn pump(&mut self, stack: &mut Stack) {
        let mut buf = [0u8; 4096];
        self.more = false;
        loop {
            if self.rx.len() >= MAX_JSON + 4 {
                self.more = true;
                break;
            }
            match stack.tcp_recv(self.h, &mut buf) {
                Ok(0) => {
                    self.eof = true;
                    break;
                }
                Ok(n) => self.rx.extend_from_slice(&buf[..n]),
                Err(RecvError::WouldBlock) => break,
                Err(_) => {
                    self.eof = true;
                    break;
                }
            }
        }
        self.flush(stack);
    }

    fn flush(&mut self, stack: &mut Stack) {
        while !self.tx.is_empty() {
            match stack.tcp_send(self.h, &self.tx) {
                Ok(n) => {
                    self.tx.drain(..n);
                }
                Err(SendError::Full) => break,
                Err(_) => {
                    self.eof = true;
                    self.tx.clear();
                }
            }
        }
    }

    fn send_state(&mut self, stack: &mut Stack, s: i8) {
        self.tx.push(s as u8);
        self.flush(stack);
    }

    fn send_json(&mut self, stack: &mut Stack, j: &Json) {
        let text = j.to_text();
        self.tx.extend_from_slice(&(text.len() as u32).to_be_bytes());
        self.tx.extend_from_slice(text.as_bytes());
        self.flush(stack);
    }

    fn take_state(&mut self) -> Option<i8> {
        if self.rx.is_empty() {
            return None;
        }
        Some(self.rx.remove(0) as i8)
    }

    fn take_bytes<const N: usize>(&mut self) -> Option<[u8; N]> {
        let bytes = self.rx.get(..N)?.try_into().ok()?;
        self.rx.drain(..N);
        Some(bytes)
    }

    /// A whole JSON message, if it has arrived; `Err` for one too large or not JSON.
    fn take_json(&mut self) -> Option<Result<Json, String>> {
        let len = u32::from_be_bytes(self.rx.get(..4)?.try_into().ok()?) as usize;
        if len > MAX_JSON {
            return Some(Err(format!("JSON message of {len} bytes is over {MAX_JSON}")));
        }
        if self.rx.len() < 4 + len {
            return None;
        }
        let body: Vec<u8> = self.rx.drain(..4 + len).skip(4).collect();
        Some(Json::parse(&body))
    }
}

/// Our results message: iperf3's `send_results` shape.
fn results_json(streams: &[StreamReport], udp: bool, cpu: [f64; 3], duration: f64) -> Json {
    let any_sender = streams.iter().any(|s| s.sender);
    // iperf3 sends -1 when it only received, 1 when its TCP sender counted retransmits.
    let has_retrans: i64 = if !any_sender {
        -1
    } else if udp {
        0
    } else {
        1
    };
    let list = streams
        .iter()
        .map(|s| {
            let retrans = match (s.sender, s.retransmits) {
                (true, Some(r)) if !udp => r as i64,
                _ => -1,
            };
            Json::Obj(vec![
                ("id".into(), u64::from(s.id).into()),
                ("bytes".into(), s.bytes.into()),
                ("retransmits".into(), retrans.into()),
                ("jitter".into(), s.jitter.into()),
                ("errors".into(), s.lost.into()),
                ("packets".into(), s.packets.into()),
                ("start_time".into(), 0u64.into()),
                ("end_time".into(), (if s.end > 0.0 { s.end } else { duration }).into()),
            ])
        })
        .collect();
    Json::Obj(vec![
        ("cpu_util_total".into(), cpu[0].into()),
        ("cpu_util_user".into(), cpu[1].into()),
        ("cpu_util_system".into(), cpu[2].into()),
        ("sender_has_retransmits".into(), has_retrans.into()),
        ("streams".into(), Json::Arr(list)),
    ])
}

/// Apply the peer's results to our streams (matched by id). Missing keys
/// that iperf3 requires are an error, as they are for iperf3.
fn apply_peer_results(j: &Json, streams: &mut [StreamReport]) -> Result<([f64; 3], bool), String> {
    let f = |k: &str| j.get(k).and_then(Json::as_f64).ok_or_else(|| format!("results lack {k}"));
    let cpu = [f("cpu_util_total")?, f("cpu_util_user")?, f("cpu_util_system")?];
    let has_retrans =
        j.get("sender_has_retransmits").and_then(Json::as_f64).ok_or("results lack sender_has_retransmits")?;
    let list = j.get("streams").and_then(Json::as_array).ok_or("results lack streams")?;
    for s in list {
        let num = |k: &str| s.get(k).ok_or_else(|| format!("a stream in the results lacks {k}"));
        let id = num("id")?.as_u64().unwrap_or(0);
        let peer = PeerStream {
            bytes: num("bytes")?.as_u64().unwrap_or(0),
            retransmits: num("retransmits")?.as_u64(),
            jitter: num("jitter")?.as_f64().unwrap_or(0.0),
            errors: num("errors")?.as_u64().unwrap_or(0),
            packets: num("packets")?.as_u64().unwrap_or(0),
            end: s.get("end_time").and_then(Json::as_f64),
        };
        let ours = streams
            .iter_mut()
            .find(|o| u64::from(o.id) == id)
            .ok_or_else(|| format!("results name unknown stream {id}"))?;
        ours.peer = Some(peer);
    }
    Ok((cpu, has_retrans == 1.0))
}

/// How long a handshake phase may take before the test is abandoned.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(20);
/// Interval between reports.
const INTERVAL: Duration = Duration::from_secs(1);

/// What the command needs from either app besides [`App`].
pub trait PerfApp: App {
    /// The next thing to tell the person running it.
    fn next_event(&mut self) -> Option<PerfEvent>;
}

/// Run `app` on the loop until it finishes, `stop` is raised or `deadline`
/// passes, handing each event to `on_event` as it happens. The loop sleeps
/// until the app's own deadline too ([`App::next_deadline`]): a UDP sender
/// paces itself by the millisecond.
pub fn run<D: Device + Waitable, A: PerfApp>(
    lp: &mut EventLoop<D>,
    app: &mut A,
    stop: &StopSignal,
    deadline: Option<Instant>,
    on_event: impl FnMut(PerfEvent),
) -> RunEnd {
    lp.run_until(&mut [&mut Reporting { app, on_event }], stop, deadline)
}

/// An app whose events are handed on after every turn.
struct Reporting<'a, A, F> {
    app: &'a mut A,
    on_event: F,
}

impl<A: PerfApp, F: FnMut(PerfEvent)> App for Reporting<'_, A, F> {
    fn poll(&mut self, stack: &mut Stack, now: Instant, events: &[Event]) {
        self.app.poll(stack, now, events);
        while let Some(e) = self.app.next_event() {
            (self.on_event)(e);
        }
    }

    fn next_deadline(&self) -> Option<Instant> {
        self.app.next_deadline()
    }

    fn finished(&self) -> bool {
        self.app.finished()
    }
}
