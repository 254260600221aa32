//! The iperf3 client: runs one test against an `iperf3 -s`, as `iperf3 -c` does.

use super::data::DataPlane;
use super::spread::{RemoteStream, StreamShards, SHARD_POLL};
use super::stream::{tcp_local, Stream, Transport, WallClock};
use super::{
    apply_peer_results, results_json, state, Control, Interval, PerfApp, PerfEvent, StreamReport, TestParams,
    TestReport, COOKIE_LEN, HANDSHAKE_TIMEOUT, LEGACY_UDP_CONNECT_REPLY, UDP_CONNECT_MSG, UDP_CONNECT_REPLY,
};
use crate::apps::APP_TOKEN;
use crate::App;
use std::collections::VecDeque;
use std::net::SocketAddr;
use std::sync::Arc;
use ustack_core::tcp::State;
use ustack_core::{Event, Instant, Interest, Socket, Stack};

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Phase {
    /// The control connection's SYN is out.
    Connecting,
    /// Following the server's state bytes up to TEST_RUNNING.
    Setup,
    Running,
    /// The last byte is written; TEST_END waits (at most `DRAIN_LIMIT`)
    /// until the server acknowledged every byte, so the server counts what
    /// the client counts: the server reports at TEST_END, and bytes still
    /// in flight then would be sent but never counted.
    Draining,
    /// TEST_END sent; waiting for EXCHANGE_RESULTS.
    Ending,
    /// Our results sent; waiting for the server's.
    Results,
    /// Waiting for DISPLAY_RESULTS.
    Display,
    Done,
}

/// A data stream being opened: connected, then its cookie (TCP) or hello (UDP) sent.
struct Opening {
    stream: Stream,
    /// TCP: cookie bytes written so far.
    sent: usize,
    /// UDP: when the hello last went out (it is resent until answered:
    /// either datagram may be lost).
    hello_at: Option<Instant>,
}

/// How often the client tries to connect while its IPv6 source address is tentative.
const SOURCE_RETRY: ustack_core::Duration = ustack_core::Duration::from_millis(20);

/// How long a UDP stream waits for the server's answer before saying hello again.
const HELLO_RETRY: ustack_core::Duration = ustack_core::Duration::from_millis(100);
/// How long TEST_END waits for the last bytes to be acknowledged, and how
/// often it looks.
const DRAIN_LIMIT: ustack_core::Duration = ustack_core::Duration::from_secs(2);
const DRAIN_POLL: ustack_core::Duration = ustack_core::Duration::from_millis(1);

/// A test spread over shards: the streams other shards open.
struct Spread {
    shared: Arc<StreamShards>,
    /// The stream asked of another shard and not yet open: its id.
    pending: Option<u32>,
    /// Streams open on other shards, in opening order, with the bytes they
    /// had counted at the last interval.
    remote: Vec<(RemoteStream, u64)>,
}

/// `iperf3 -c` on the stack.
pub struct IperfClient {
    server: SocketAddr,
    cookie: [u8; COOKIE_LEN],
    params: TestParams,
    ctrl: Option<Control>,
    phase: Phase,
    since: Instant,
    data: Option<DataPlane>,
    /// Streams still to open, and the one being opened (one at a time, so
    /// the server sees them in our order and gives them the same ids and roles).
    to_open: usize,
    opening: Option<Opening>,
    reports: Vec<StreamReport>,
    peer_cpu: [f64; 3],
    peer_retrans: bool,
    events: VecDeque<PerfEvent>,
    /// The time of the last turn, which `next_wake` counts from.
    last_turn: Instant,
    error: Option<String>,
    /// The server asked for results; ours go once every shard has reported.
    exchange_due: bool,
    spread: Option<Spread>,
    /// When the first connect was tried (the client waits for a source address from then on).
    source_wait: Option<Instant>,
}

impl IperfClient {
    /// A client for one test of `params` against `server`; `seed` makes the cookie.
    pub fn new(server: SocketAddr, params: TestParams, seed: u64) -> IperfClient {
        IperfClient {
            server,
            cookie: make_cookie(seed),
            params,
            ctrl: None,
            phase: Phase::Connecting,
            since: Instant::ZERO,
            data: None,
            to_open: 0,
            opening: None,
            reports: Vec::new(),
            peer_cpu: [0.0; 3],
            peer_retrans: false,
            events: VecDeque::new(),
            error: None,
            last_turn: Instant::ZERO,
            exchange_due: false,
            spread: None,
            source_wait: None,
        }
    }

    /// A client whose data streams are spread over the shards `shared`
    /// plans (this client on shard 0, an [`super::IperfStreams`] on each of
    /// the others): stream `n` opens on shard `n % shards`. TCP only.
    pub fn sharded(server: SocketAddr, params: TestParams, seed: u64, shared: Arc<StreamShards>) -> IperfClient {
        let mut c = IperfClient::new(server, params, seed);
        c.spread = Some(Spread { shared, pending: None, remote: Vec::new() });
        c
    }

    /// How many data streams this client opened on its own stack.
    pub fn streams_opened(&self) -> usize {
        self.data.as_ref().map_or(0, |d| d.streams.len())
    }

    /// Why the test failed, if it did.
    pub fn error(&self) -> Option<&str> {
        self.error.as_deref()
    }

    fn fail(&mut self, stack: &mut Stack, why: String) {
        if self.error.is_none() {
            self.error = Some(why);
        }
        self.release(stack);
        self.phase = Phase::Done;
    }

    fn release(&mut self, stack: &mut Stack) {
        if let Some(d) = self.data.as_mut() {
            d.release(stack);
        }
        if let Some(o) = self.opening.take() {
            let mut s = o.stream;
            s.release(stack);
        }
        if let Some(c) = self.ctrl.as_mut() {
            c.flush(stack);
            stack.tcp_close(c.h);
        }
        if let Some(sp) = &self.spread {
            sp.shared.release();
        }
    }

    /// Every stream's report as far as this shard knows it, in id order:
    /// its own, and the other shards' streams with their endpoints.
    fn stream_reports(&self, stack: &Stack) -> Vec<StreamReport> {
        let mut all = self.data.as_ref().map_or_else(Vec::new, |d| d.reports(stack));
        if let Some(sp) = &self.spread {
            all.extend(sp.remote.iter().map(|(r, _)| StreamReport {
                id: r.id,
                sender: r.sender,
                local: r.local,
                remote: Some(self.server),
                ..StreamReport::default()
            }));
        }
        all.sort_by_key(|r| r.id);
        all
    }

    /// Add the other shards' streams to an interval: what each counted since the last.
    fn with_remote(&mut self, mut iv: Interval) -> Interval {
        if let Some(sp) = self.spread.as_mut() {
            let plan = sp.shared.lock();
            for (r, last) in &mut sp.remote {
                let now = plan.opened.iter().find(|o| o.id == r.id).map_or(*last, |o| o.bytes);
                iv.streams.push((r.id, r.sender, now.saturating_sub(*last), 0));
                *last = now;
            }
            iv.streams.sort_by_key(|s| s.0);
        }
        iv
    }

    /// Send our results once the server asked for them and every shard has
    /// handed in its streams' reports.
    fn try_exchange(&mut self, stack: &mut Stack) -> Result<(), String> {
        if !self.exchange_due {
            return Ok(());
        }
        if let Some(sp) = &self.spread {
            let mut plan = sp.shared.lock();
            if !StreamShards::all_reported(&plan) {
                return Ok(());
            }
            for r in plan.reports.iter_mut().skip(1) {
                self.reports.extend(r.take().unwrap_or_default());
            }
            self.reports.sort_by_key(|r| r.id);
        }
        self.exchange_due = false;
        let d = self.data.as_ref().expect("running");
        let ours = results_json(&self.reports, d.params.udp, d.cpu(), d.duration());
        let ctrl = self.ctrl.as_mut().expect("connected");
        ctrl.send_json(stack, &ours);
        self.phase = Phase::Results;
        Ok(())
    }

    fn step(&mut self, stack: &mut Stack, now: Instant) -> Result<(), String> {
        if self.phase == Phase::Connecting {
            let Some(c) = self.ctrl.as_mut() else {
                let first = *self.source_wait.get_or_insert(now);
                // The IPv6 address the server should see us at may still be
                // tentative (duplicate address detection, about a second):
                // try again, as long as a handshake may take.
                let unsettled = match (self.server, stack.ipv6()) {
                    (SocketAddr::V6(s), Some(l)) => l.settled_source(*s.ip()).is_none(),
                    _ => false,
                };
                if unsettled && now.saturating_since(first) < HANDSHAKE_TIMEOUT {
                    return Ok(());
                }
                let h = stack
                    .tcp_connect(now, self.server)
                    .map_err(|e| format!("cannot connect to {}: {e}", self.server))?;
                stack.tcp_set_nodelay(h, true);
                self.ctrl = Some(Control::new(stack, h));
                self.since = now;
                return Ok(());
            };
            match stack.tcp_state(c.h) {
                Some(State::Established) => {
                    c.tx.extend_from_slice(&self.cookie);
                    self.phase = Phase::Setup;
                    self.since = now;
                }
                Some(State::SynSent) if now.saturating_since(self.since) >= HANDSHAKE_TIMEOUT => {
                    let secs = HANDSHAKE_TIMEOUT.as_secs();
                    return Err(format!("unable to connect to server {}: no answer in {secs} s", self.server));
                }
                Some(State::SynSent) => return Ok(()),
                _ => {
                    return Err(format!("unable to connect to server {}: connection refused or timed out", self.server))
                }
            }
        }
        let Some(ctrl) = self.ctrl.as_mut() else { return Ok(()) };
        ctrl.pump(stack);
        if let Some(sp) = &self.spread {
            if let Some(why) = sp.shared.lock().failed.clone() {
                return Err(why);
            }
        }
        self.open_streams(stack, now)?;
        self.try_exchange(stack)?;
        loop {
            let ctrl = self.ctrl.as_mut().expect("connected");
            if self.phase == Phase::Results {
                match ctrl.take_json() {
                    None => break,
                    Some(Err(e)) => return Err(format!("bad results from the server: {e}")),
                    Some(Ok(j)) => {
                        (self.peer_cpu, self.peer_retrans) = apply_peer_results(&j, &mut self.reports)?;
                        self.phase = Phase::Display;
                        continue;
                    }
                }
            }
            let Some(s) = ctrl.take_state() else { break };
            match (s, self.phase) {
                (state::PARAM_EXCHANGE, Phase::Setup) => ctrl.send_json(stack, &self.params.to_json()),
                (state::CREATE_STREAMS, Phase::Setup) => {
                    self.data = Some(DataPlane::new(self.params.clone(), WallClock::now(now)));
                    if let Some(sp) = &self.spread {
                        sp.shared.lock().params = Some((self.params.clone(), self.cookie, self.server));
                    }
                    let (up, down) = self.params.client_streams();
                    self.to_open = (up + down) as usize;
                    self.since = now;
                }
                (state::TEST_START, Phase::Setup) => {}
                (state::TEST_RUNNING, Phase::Setup) => {
                    let d = self.data.as_mut().ok_or("TEST_RUNNING before CREATE_STREAMS")?;
                    // The server starts once it has every stream: a last UDP
                    // stream whose answer was lost is open all the same.
                    if let Some(o) = self.opening.take_if(|o| o.hello_at.is_some() && self.to_open == 0) {
                        d.add_stream(stack, o.stream);
                    }
                    let pending = self.spread.as_ref().is_some_and(|sp| sp.pending.is_some());
                    if self.to_open > 0 || self.opening.is_some() || pending {
                        return Err("the server started the test before all streams were open".into());
                    }
                    d.begin(now);
                    if let Some(sp) = &self.spread {
                        sp.shared.lock().began = true;
                    }
                    self.phase = Phase::Running;
                    let params = d.params.clone();
                    let ev =
                        PerfEvent::Started { peer: Some(self.server), params, streams: self.stream_reports(stack) };
                    self.events.push_back(ev);
                }
                (state::EXCHANGE_RESULTS, Phase::Running | Phase::Draining | Phase::Ending) if !self.exchange_due => {
                    if self.phase == Phase::Running {
                        self.end_data(stack, now);
                        self.phase = Phase::Ending;
                    }
                    self.exchange_due = true;
                    self.since = now;
                    self.try_exchange(stack)?;
                }
                (state::DISPLAY_RESULTS, Phase::Display) => {
                    ctrl.send_state(stack, state::IPERF_DONE);
                    let d = self.data.as_ref().expect("running");
                    let report = TestReport {
                        params: d.params.clone(),
                        cookie: String::from_utf8_lossy(&self.cookie[..COOKIE_LEN - 1]).into_owned(),
                        peer: Some(self.server),
                        local: None,
                        duration: d.duration(),
                        streams: self.reports.clone(),
                        peer_cpu: self.peer_cpu,
                        cpu: d.cpu(),
                        peer_sender_has_retransmits: self.peer_retrans,
                    };
                    self.events.push_back(PerfEvent::Finished(report));
                    self.release(stack);
                    self.phase = Phase::Done;
                    return Ok(());
                }
                (state::ACCESS_DENIED, _) => return Err("the server is busy running a test. try again later".into()),
                (state::SERVER_ERROR, _) => {
                    let errs = ctrl.take_bytes::<8>();
                    let (ie, errno) = errs.map_or((0, 0), |b| {
                        (i32::from_be_bytes([b[0], b[1], b[2], b[3]]), i32::from_be_bytes([b[4], b[5], b[6], b[7]]))
                    });
                    return Err(format!("the server reported an error (iperf3 error {ie}, errno {errno})"));
                }
                (state::SERVER_TERMINATE, _) => return Err("the server has terminated".into()),
                (s, phase) => return Err(format!("unexpected state {s} from the server during {phase:?}")),
            }
        }
        // CREATE_STREAMS may have come just now: the first stream starts at once.
        self.open_streams(stack, now)?;
        if self.phase == Phase::Running {
            let d = self.data.as_mut().expect("running");
            if let Some(iv) = d.drive(stack, now) {
                let iv = self.with_remote(iv);
                self.events.push_back(PerfEvent::Interval(iv));
            }
            if self.test_over(now) {
                self.end_data(stack, now);
                self.phase = Phase::Draining;
                self.since = now;
            }
        } else if let Some(d) = self.data.as_mut() {
            // Keep draining receivers (uncounted) so the server's sender is not stuck.
            let _ = d.drive(stack, now);
        }
        if self.phase == Phase::Draining && (self.all_acked(stack) || now.saturating_since(self.since) >= DRAIN_LIMIT) {
            let ctrl = self.ctrl.as_mut().expect("connected");
            ctrl.send_state(stack, state::TEST_END);
            self.phase = Phase::Ending;
            self.since = now;
        }
        let ctrl = self.ctrl.as_mut().expect("connected");
        if ctrl.eof {
            return Err("the server closed the control connection".into());
        }
        let waiting = !matches!(self.phase, Phase::Running | Phase::Done);
        if waiting && now.saturating_since(self.since) >= HANDSHAKE_TIMEOUT {
            return Err(format!("the server went quiet ({:?})", self.phase));
        }
        Ok(())
    }

    /// The time is up, or every byte of `-n` went out (or came in, with -R).
    fn test_over(&self, now: Instant) -> bool {
        let Some(d) = &self.data else { return false };
        let p = &d.params;
        if p.time > 0 {
            return d.elapsed(now) >= f64::from(p.time) + f64::from(p.omit);
        }
        match p.byte_bound() {
            Some(b) if p.client_streams().0 > 0 => d.sent_total >= b,
            Some(b) => d.received_total >= b,
            None => false,
        }
    }

    /// Whether every byte our TCP streams wrote is acknowledged (receivers
    /// and UDP streams have nothing in flight to wait for).
    fn all_acked(&self, stack: &Stack) -> bool {
        let Some(d) = &self.data else { return true };
        d.streams
            .iter()
            .filter(|s| s.sender)
            .filter_map(|s| s.tcp())
            .all(|h| stack.tcp_connection(h).is_none_or(|c| c.send_queue() == 0))
    }

    fn end_data(&mut self, stack: &mut Stack, now: Instant) {
        let d = self.data.as_mut().expect("running");
        let last = d.finish(stack, now);
        self.reports = d.reports(stack);
        if let Some(sp) = &self.spread {
            sp.shared.lock().ended = true;
        }
        if let Some(iv) = last {
            let iv = self.with_remote(iv);
            self.events.push_back(PerfEvent::Interval(iv));
        }
    }

    /// Open the data streams one after another: connect, then the cookie
    /// (TCP) or the hello and its answer (UDP).
    fn open_streams(&mut self, stack: &mut Stack, now: Instant) -> Result<(), String> {
        // Each new stream is looked at once at once (a UDP hello goes out),
        // then on its events and the hello's retry time.
        for _ in 0..2 {
            if !self.open_next(stack, now)? {
                break;
            }
        }
        Ok(())
    }

    /// One step of `open_streams`: the stream being opened, and, once it is
    /// open, the next one started. Returns whether a stream was started.
    fn open_next(&mut self, stack: &mut Stack, now: Instant) -> Result<bool, String> {
        if self.data.is_none() {
            return Ok(false);
        }
        if let Some(sp) = self.spread.as_mut() {
            if let Some(id) = sp.pending {
                let plan = sp.shared.lock();
                match plan.opened.iter().find(|r| r.id == id) {
                    Some(r) => {
                        sp.remote.push((*r, 0));
                        sp.pending = None;
                    }
                    None => return Ok(false),
                }
            }
        }
        let d = self.data.as_mut().expect("checked");
        if let Some(o) = self.opening.as_mut() {
            let done = match o.stream.transport {
                Transport::Tcp(h) => match stack.tcp_state(h) {
                    Some(State::SynSent) => false,
                    Some(State::Established) => {
                        if o.sent < COOKIE_LEN {
                            o.sent += stack.tcp_send(h, &self.cookie[o.sent..]).unwrap_or(0);
                        }
                        o.sent == COOKIE_LEN
                    }
                    _ => return Err(format!("unable to open a data stream to {}", self.server)),
                },
                Transport::Udp { socket, .. } => {
                    let due = o.hello_at.is_none_or(|t| now.saturating_since(t) >= HELLO_RETRY);
                    if due && stack.udp_send_to(socket, self.server, &UDP_CONNECT_MSG.to_le_bytes()).is_ok() {
                        o.hello_at = Some(now);
                    }
                    let mut answered = false;
                    while let Some(ok) =
                        stack.udp_recv_with(socket, |data, _: SocketAddr| data.len() == 4 && is_reply(data))
                    {
                        answered |= ok;
                    }
                    answered
                }
            };
            if !done {
                return Ok(false);
            }
            let o = self.opening.take().expect("checked");
            d.add_stream(stack, o.stream);
        }
        if self.to_open == 0 {
            return Ok(false);
        }
        let n = d.streams.len() + self.spread.as_ref().map_or(0, |sp| sp.remote.len());
        // In --bidir iperf3 opens its sending streams first.
        let sender = match (d.params.bidir, d.params.reverse) {
            (true, _) => n < d.params.parallel as usize,
            (false, reverse) => !reverse,
        };
        let id = Stream::id_for(n);
        if let Some(sp) = self.spread.as_mut() {
            let shard = sp.shared.shard_of_stream(n);
            if shard != 0 {
                sp.shared.lock().asked[shard].push_back((id, sender));
                sp.pending = Some(id);
                self.to_open -= 1;
                return Ok(true);
            }
        }
        let stream = if d.params.udp {
            let socket = stack.udp_bind(0).map_err(|e| format!("cannot bind a UDP socket: {e:?}"))?;
            // The server's answer to the hello comes as an event.
            let _ = stack.register(socket, APP_TOKEN, Interest::READABLE);
            let local =
                stack.udp_local_port(socket).zip(source_for(stack, self.server)).map(|(p, a)| SocketAddr::new(a, p));
            Stream::new(id, sender, Transport::Udp { socket, peer: self.server }, local, Some(self.server))
        } else {
            let h = stack.tcp_connect(now, self.server).map_err(|e| format!("cannot open a data stream: {e}"))?;
            // Established (writable) or failed comes as an event.
            let _ = stack.register(h, APP_TOKEN, Interest::WRITABLE);
            let local = tcp_local(stack, h);
            Stream::new(id, sender, Transport::Tcp(h), local, Some(self.server))
        };
        self.to_open -= 1;
        self.opening = Some(Opening { stream, sent: 0, hello_at: None });
        Ok(true)
    }
}

/// The address our datagrams to `server` leave from: the interface's IPv4
/// address, or the IPv6 source address selected for it (RFC 6724).
fn source_for(stack: &Stack, server: SocketAddr) -> Option<std::net::IpAddr> {
    match server {
        SocketAddr::V4(_) => Some(stack.config().ipv4.addr.into()),
        SocketAddr::V6(s) => stack.ipv6()?.select_source(*s.ip()).map(Into::into),
    }
}

fn is_reply(data: &[u8]) -> bool {
    let v = [data[0], data[1], data[2], data[3]];
    [u32::from_le_bytes(v), u32::from_be_bytes(v)]
        .iter()
        .any(|&x| x == UDP_CONNECT_REPLY || x == LEGACY_UDP_CONNECT_REPLY)
}

/// 36 characters of `a-z2-7` (iperf3's alphabet) and a NUL, from `seed`.
fn make_cookie(seed: u64) -> [u8; COOKIE_LEN] {
    const ALPHABET: &[u8; 32] = b"abcdefghijklmnopqrstuvwxyz234567";
    let mut x = seed | 1;
    let mut cookie = [0u8; COOKIE_LEN];
    for c in cookie.iter_mut().take(COOKIE_LEN - 1) {
        // xorshift64*: plenty for a test identifier that is not a secret.
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        *c = ALPHABET[(x.wrapping_mul(0x2545_F491_4F6C_DD1D) >> 59) as usize];
    }
    cookie
}

impl PerfApp for IperfClient {
    fn next_event(&mut self) -> Option<PerfEvent> {
        self.events.pop_front()
    }
}

impl IperfClient {
    /// When the client needs a turn even if nothing arrives (UDP pacing,
    /// interval reports, the hello retry, handshake timeouts, the end of a
    /// timed test), counted from `now`.
    pub(crate) fn next_wake(&self, now: Instant) -> Option<Instant> {
        match self.phase {
            Phase::Done => None,
            Phase::Running => {
                let d = self.data.as_ref()?;
                let end = (d.params.time > 0)
                    .then(|| {
                        d.start.map(|s| {
                            s + ustack_core::Duration::from_secs(u64::from(d.params.time) + u64::from(d.params.omit))
                        })
                    })
                    .flatten();
                [d.next_wake(now), end].into_iter().flatten().min()
            }
            Phase::Draining => Some((now + DRAIN_POLL).min(self.since + DRAIN_LIMIT)),
            // The first turn connects; while no source address is usable, the next tries again.
            Phase::Connecting if self.ctrl.is_none() => {
                Some(self.source_wait.map_or(Instant::ZERO, |_| now + SOURCE_RETRY))
            }
            _ => {
                let handshake = self.since + HANDSHAKE_TIMEOUT;
                // A UDP stream's hello goes again until the server answers.
                let hello = self.opening.as_ref().and_then(|o| match o.stream.transport {
                    Transport::Udp { .. } => Some(o.hello_at.map_or(now, |t| t + HELLO_RETRY)),
                    Transport::Tcp(_) => None,
                });
                // Another shard's stream being opened, or its reports awaited.
                let waiting = self.exchange_due || self.spread.as_ref().is_some_and(|sp| sp.pending.is_some());
                let shards = waiting.then(|| now + SHARD_POLL);
                [Some(handshake), hello, shards].into_iter().flatten().min()
            }
        }
    }
}

impl IperfClient {
    /// Whether an event names one of the client's sockets: the control
    /// connection, the stream being opened, or a data stream (noted in the
    /// data plane, which then looks at those streams alone).
    fn sort_events(&mut self, events: &[Event]) -> bool {
        let ctrl = self.ctrl.as_ref().map(|c| Socket::Tcp(c.h));
        let opening = self.opening.as_ref().map(|o| o.stream.socket());
        let mut news = false;
        for ev in events {
            if Some(ev.socket) == ctrl || Some(ev.socket) == opening {
                news = true;
            } else if let Some(d) = self.data.as_mut() {
                news |= d.note(ev.socket);
            }
        }
        news
    }
}

impl App for IperfClient {
    fn poll(&mut self, stack: &mut Stack, now: Instant, events: &[Event]) {
        // A deadline that passed: the first connect, a timeout, a paced send,
        // an interval, the end of the test.
        let due = self.next_wake(self.last_turn).is_some_and(|t| now >= t);
        self.last_turn = now;
        if self.phase == Phase::Done {
            return;
        }
        let news = self.sort_events(events);
        let more = self.ctrl.as_ref().is_some_and(|c| c.more);
        if !(news || due || more) {
            return; // nothing of ours happened
        }
        if let Err(why) = self.step(stack, now) {
            self.fail(stack, why);
        }
        if let Some(c) = self.ctrl.as_mut() {
            c.flush(stack);
        }
    }

    fn next_deadline(&self) -> Option<Instant> {
        self.next_wake(self.last_turn)
    }

    fn finished(&self) -> bool {
        // The events stay to be taken: `run` drains them before asking.
        self.phase == Phase::Done
    }
}
