//! The iperf3 server: one test at a time on one port, as `iperf3 -s` runs.

use super::data::DataPlane;
use super::stream::{tcp_local, tcp_remote, Stream, Transport, WallClock};
use super::{
    apply_peer_results, results_json, state, Control, PerfApp, PerfEvent, TestParams, TestReport, COOKIE_LEN,
    HANDSHAKE_TIMEOUT, LEGACY_UDP_CONNECT_REPLY, UDP_CONNECT_MSG, UDP_CONNECT_REPLY,
};
use crate::apps::APP_TOKEN;
use crate::App;
use std::collections::VecDeque;
use std::net::SocketAddr;
use ustack_core::tcp::RecvError;
use ustack_core::{Duration, Event, Instant, Interest, ListenError, Socket, Stack, TcpHandle, UdpHandle};

/// Connections that may be sending their cookie at once; more are reset.
const MAX_PENDING: usize = 16;
/// Events the command has not taken yet; the oldest intervals go first.
const MAX_EVENTS: usize = 1024;

/// A connection that has not yet sent its whole cookie.
struct Pending {
    h: TcpHandle,
    cookie: [u8; COOKIE_LEN],
    got: usize,
    since: Instant,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Phase {
    /// PARAM_EXCHANGE sent; waiting for the parameters.
    Params,
    /// CREATE_STREAMS sent; waiting for the data streams.
    CreateStreams,
    /// TEST_RUNNING sent; data flows until the client's TEST_END.
    Running,
    /// EXCHANGE_RESULTS sent; waiting for the client's results.
    Results,
    /// DISPLAY_RESULTS sent; waiting for IPERF_DONE.
    Display,
}

struct Test {
    ctrl: Control,
    cookie: [u8; COOKIE_LEN],
    peer: Option<SocketAddr>,
    local: Option<SocketAddr>,
    phase: Phase,
    since: Instant,
    data: Option<DataPlane>,
    /// The UDP socket on the test port, while a UDP test needs it.
    udp: Option<UdpHandle>,
    /// The peer's results, once exchanged: (cpu, sender_has_retransmits).
    peer_cpu: [f64; 3],
    peer_retrans: bool,
    reports: Vec<super::StreamReport>,
}

/// `iperf3 -s` on the stack. Serves tests one after another; a client that
/// comes while a test runs gets ACCESS_DENIED, as iperf3's does.
pub struct IperfServer {
    port: u16,
    pending: Vec<Pending>,
    /// Refused connections, drained until their clients close.
    denied: Vec<(TcpHandle, Instant)>,
    test: Option<Test>,
    events: VecDeque<PerfEvent>,
    /// Set once a test finished or failed when serving only one (`-1`).
    one_off: bool,
    served: u64,
    /// The time of the last turn, which `next_wake` counts from.
    last_turn: Instant,
}

impl IperfServer {
    /// Listen on `port` (TCP; UDP is bound per UDP test).
    pub fn listen(stack: &mut Stack, port: u16, one_off: bool) -> Result<IperfServer, ListenError> {
        stack.tcp_listen(port, MAX_PENDING)?;
        stack.register(Socket::Listener(port), APP_TOKEN, Interest::READABLE).expect("the listener was just opened");
        Ok(IperfServer {
            port,
            pending: Vec::new(),
            denied: Vec::new(),
            test: None,
            events: VecDeque::new(),
            one_off,
            served: 0,
            last_turn: Instant::ZERO,
        })
    }

    /// The port it listens on (control and data).
    pub fn port(&self) -> u16 {
        self.port
    }

    /// A test is in progress (being set up, running or reporting).
    pub fn busy(&self) -> bool {
        self.test.is_some()
    }

    fn event(&mut self, e: PerfEvent) {
        if self.events.len() >= MAX_EVENTS {
            self.events.pop_front();
        }
        self.events.push_back(e);
    }

    /// Turn a connection away: one ACCESS_DENIED byte and our FIN. Its
    /// cookie is still read and dropped until the client closes: closing
    /// with unread data would answer it with a reset, which can destroy the
    /// byte before the client reads it.
    fn deny(&mut self, stack: &mut Stack, now: Instant, h: TcpHandle) {
        let peer = tcp_remote(stack, h);
        // Its cookie and its close come as events.
        let _ = stack.register(h, APP_TOKEN, Interest::READABLE);
        let _ = stack.tcp_send(h, &[state::ACCESS_DENIED as u8]);
        let _ = stack.tcp_shutdown(h);
        if self.denied.len() >= MAX_PENDING {
            let (old, _) = self.denied.remove(0);
            stack.tcp_abort(old);
        }
        self.denied.push((h, now));
        self.event(PerfEvent::Refused(peer));
    }

    /// Drain refused connections until their clients close (or time runs out).
    fn drain_denied(&mut self, stack: &mut Stack, now: Instant) {
        let mut scratch = [0u8; 256];
        self.denied.retain(|&(h, since)| loop {
            match stack.tcp_recv(h, &mut scratch) {
                Ok(0) => {
                    stack.tcp_close(h);
                    return false;
                }
                Ok(_) => {}
                Err(RecvError::WouldBlock) if now.saturating_since(since) < HANDSHAKE_TIMEOUT => return true,
                Err(_) => {
                    stack.tcp_abort(h);
                    return false;
                }
            }
        });
    }

    /// Take the connections waiting on the listener. Returns whether one
    /// became pending (its cookie may have come with it).
    fn accept(&mut self, stack: &mut Stack, now: Instant) -> bool {
        let mut pending = false;
        while let Some(h) = stack.tcp_accept(self.port) {
            let creating = self
                .test
                .as_ref()
                .is_some_and(|t| t.phase == Phase::CreateStreams && t.data.as_ref().is_some_and(|d| !d.params.udp));
            if self.test.is_some() && !creating {
                self.deny(stack, now, h);
            } else if self.pending.len() >= MAX_PENDING {
                stack.tcp_abort(h);
            } else {
                let _ = stack.register(h, APP_TOKEN, Interest::READABLE);
                self.pending.push(Pending { h, cookie: [0; COOKIE_LEN], got: 0, since: now });
                pending = true;
            }
        }
        pending
    }

    /// Read cookies; a complete one starts a test or joins the one being set up.
    fn read_cookies(&mut self, stack: &mut Stack, now: Instant) {
        let mut i = 0;
        while i < self.pending.len() {
            let p = &mut self.pending[i];
            let mut failed = now.saturating_since(p.since) >= HANDSHAKE_TIMEOUT;
            while !failed && p.got < COOKIE_LEN {
                match stack.tcp_recv(p.h, &mut p.cookie[p.got..]) {
                    Ok(0) => failed = true,
                    Ok(n) => p.got += n,
                    Err(RecvError::WouldBlock) => break,
                    Err(_) => failed = true,
                }
            }
            if failed {
                stack.tcp_abort(p.h);
                self.pending.swap_remove(i);
                continue;
            }
            if p.got < COOKIE_LEN {
                i += 1;
                continue;
            }
            let p = self.pending.swap_remove(i);
            self.cookie_complete(stack, now, p);
        }
    }

    fn cookie_complete(&mut self, stack: &mut Stack, now: Instant, p: Pending) {
        match &mut self.test {
            None => {
                let mut ctrl = Control::new(stack, p.h);
                // Control messages are small and each waits for an answer: no Nagle.
                stack.tcp_set_nodelay(p.h, true);
                ctrl.send_state(stack, state::PARAM_EXCHANGE);
                let (local, peer) = (tcp_local(stack, p.h), tcp_remote(stack, p.h));
                self.test = Some(Test {
                    ctrl,
                    cookie: p.cookie,
                    peer,
                    local,
                    phase: Phase::Params,
                    since: now,
                    data: None,
                    udp: None,
                    peer_cpu: [0.0; 3],
                    peer_retrans: false,
                    reports: Vec::new(),
                });
            }
            Some(t)
                if t.phase == Phase::CreateStreams
                    && t.cookie == p.cookie
                    && t.data.as_ref().is_some_and(|d| !d.params.udp) =>
            {
                let d = t.data.as_mut().expect("data plane exists once parameters are in");
                let n = d.streams.len();
                if n >= expected_streams(&d.params) {
                    self.deny(stack, now, p.h);
                    return;
                }
                let sender = server_sends(&d.params, n);
                let (local, remote) = (tcp_local(stack, p.h), tcp_remote(stack, p.h));
                d.add_stream(stack, Stream::new(Stream::id_for(n), sender, Transport::Tcp(p.h), local, remote));
            }
            Some(_) => self.deny(stack, now, p.h),
        }
    }

    /// UDP streams announce themselves with a 4-byte hello on the test port.
    fn udp_hellos(&mut self, stack: &mut Stack) {
        let Some(t) = self.test.as_mut() else { return };
        let (Some(sock), Some(d)) = (t.udp, t.data.as_mut()) else { return };
        if t.phase != Phase::CreateStreams {
            return;
        }
        let local = t.local;
        while let Some((hello, from)) =
            stack.udp_recv_with(sock, |data, from| (data.len() == 4 && is_hello(data), from))
        {
            if !hello {
                continue;
            }
            // A hello again from a known stream means our answer was lost: answer again.
            let known = d.streams.iter().any(|s| s.remote == Some(from));
            if !known {
                if d.streams.len() >= expected_streams(&d.params) {
                    continue;
                }
                let n = d.streams.len();
                let sender = server_sends(&d.params, n);
                let transport = Transport::Udp { socket: sock, peer: from };
                d.add_stream(stack, Stream::new(Stream::id_for(n), sender, transport, local, Some(from)));
            }
            // iperf3 writes the reply in host order; its hosts are little-endian.
            let _ = stack.udp_send_to(sock, from, &UDP_CONNECT_REPLY.to_le_bytes());
        }
    }

    /// Drive the test's control connection through its phases, then its data.
    fn drive_test(&mut self, stack: &mut Stack, now: Instant) {
        let Some(t) = self.test.as_mut() else { return };
        t.ctrl.pump(stack);
        match step(t, stack, now, self.port) {
            Step::Continue(mut events) => {
                if let (Some(d), Phase::Running) = (t.data.as_mut(), t.phase) {
                    events.extend(d.drive(stack, now).map(PerfEvent::Interval));
                }
                // The control connection may have queued replies during this step.
                t.ctrl.flush(stack);
                for e in events {
                    self.event(e);
                }
            }
            Step::Done(report) => {
                self.end_test(stack);
                self.event(PerfEvent::Finished(*report));
            }
            Step::Failed(why) => {
                self.end_test(stack);
                self.event(PerfEvent::Aborted(why));
            }
        }
    }

    fn end_test(&mut self, stack: &mut Stack) {
        if let Some(mut t) = self.test.take() {
            if let Some(d) = t.data.as_mut() {
                d.release(stack);
            }
            t.ctrl.flush(stack);
            stack.tcp_close(t.ctrl.h);
            if let Some(u) = t.udp {
                stack.udp_close(u);
            }
        }
        self.served += 1;
    }
}

enum Step {
    Continue(Vec<PerfEvent>),
    Done(Box<TestReport>),
    Failed(String),
}

/// One look at the control connection in the test's current phase.
fn step(t: &mut Test, stack: &mut Stack, now: Instant, port: u16) -> Step {
    let mut events = Vec::new();
    if t.phase != Phase::Running && now.saturating_since(t.since) >= HANDSHAKE_TIMEOUT {
        return Step::Failed(format!("the client went quiet during {:?}", t.phase));
    }
    loop {
        match t.phase {
            Phase::Params => match t.ctrl.take_json() {
                None => break,
                Some(Err(e)) => return Step::Failed(format!("bad parameters: {e}")),
                Some(Ok(j)) => {
                    let params = match TestParams::from_json(&j) {
                        Ok(p) => p,
                        Err((code, e)) => {
                            // iperf3's answer to parameters it cannot run.
                            t.ctrl.send_state(stack, state::SERVER_ERROR);
                            t.ctrl.tx.extend_from_slice(&code.to_be_bytes());
                            t.ctrl.tx.extend_from_slice(&0i32.to_be_bytes());
                            t.ctrl.flush(stack);
                            return Step::Failed(e);
                        }
                    };
                    if params.udp {
                        match stack.udp_bind(port) {
                            Ok(u) => {
                                // The streams' hellos come as events.
                                let _ = stack.register(u, APP_TOKEN, Interest::READABLE);
                                t.udp = Some(u);
                            }
                            Err(e) => return Step::Failed(format!("cannot bind UDP port {port}: {e:?}")),
                        }
                    }
                    t.data = Some(DataPlane::new(params, WallClock::now(now)));
                    t.phase = Phase::CreateStreams;
                    t.since = now;
                    t.ctrl.send_state(stack, state::CREATE_STREAMS);
                }
            },
            Phase::CreateStreams => {
                let d = t.data.as_mut().expect("parameters are in");
                if d.streams.len() < expected_streams(&d.params) {
                    break;
                }
                t.ctrl.send_state(stack, state::TEST_START);
                t.ctrl.send_state(stack, state::TEST_RUNNING);
                d.begin(now);
                t.phase = Phase::Running;
                t.since = now;
                events.push(PerfEvent::Started { peer: t.peer, params: d.params.clone(), streams: d.reports(stack) });
            }
            Phase::Running => match t.ctrl.take_state() {
                None if t.data.as_ref().is_some_and(|d| d.idle(now) >= IDLE_TIMEOUT) => {
                    // iperf3's --rcv-timeout default: a test nothing moves in is over.
                    return Step::Failed(format!("no data for {} s", IDLE_TIMEOUT.as_secs()));
                }
                None => break,
                Some(state::TEST_END) => {
                    let d = t.data.as_mut().expect("parameters are in");
                    if let Some(iv) = d.finish(stack, now) {
                        events.push(PerfEvent::Interval(iv));
                    }
                    // The figures before the streams go (retransmits live in the connections).
                    t.reports = d.reports(stack);
                    d.release(stack);
                    t.ctrl.send_state(stack, state::EXCHANGE_RESULTS);
                    t.phase = Phase::Results;
                    t.since = now;
                }
                Some(s) => return unexpected(s, t.phase),
            },
            Phase::Results => match t.ctrl.take_json() {
                None => break,
                Some(Err(e)) => return Step::Failed(format!("bad results: {e}")),
                Some(Ok(j)) => {
                    match apply_peer_results(&j, &mut t.reports) {
                        Ok((cpu, retrans)) => (t.peer_cpu, t.peer_retrans) = (cpu, retrans),
                        Err(e) => return Step::Failed(format!("bad results: {e}")),
                    }
                    let d = t.data.as_ref().expect("parameters are in");
                    let ours = results_json(&t.reports, d.params.udp, d.cpu(), d.duration());
                    t.ctrl.send_json(stack, &ours);
                    t.ctrl.send_state(stack, state::DISPLAY_RESULTS);
                    t.phase = Phase::Display;
                    t.since = now;
                }
            },
            Phase::Display => match t.ctrl.take_state() {
                None if t.ctrl.eof => return Step::Done(Box::new(report(t))),
                None => break,
                Some(state::IPERF_DONE) => return Step::Done(Box::new(report(t))),
                Some(s) => return unexpected(s, t.phase),
            },
        }
    }
    if t.ctrl.eof {
        return Step::Failed(format!("the client closed the control connection during {:?}", t.phase));
    }
    Step::Continue(events)
}

fn unexpected(s: i8, phase: Phase) -> Step {
    match s {
        state::CLIENT_TERMINATE => Step::Failed("the client ended the test (CLIENT_TERMINATE)".into()),
        s => Step::Failed(format!("unexpected state {s} from the client during {phase:?}")),
    }
}

fn report(t: &Test) -> TestReport {
    let d = t.data.as_ref().expect("parameters are in");
    TestReport {
        params: d.params.clone(),
        cookie: String::from_utf8_lossy(&t.cookie[..COOKIE_LEN - 1]).into_owned(),
        peer: t.peer,
        local: t.local,
        duration: d.duration(),
        streams: t.reports.clone(),
        peer_cpu: t.peer_cpu,
        cpu: d.cpu(),
        peer_sender_has_retransmits: t.peer_retrans,
    }
}

/// A running test in which no byte moves for this long is abandoned (iperf3's
/// default receive timeout), so a client that vanishes cannot hold the server.
const IDLE_TIMEOUT: Duration = Duration::from_secs(120);

/// Streams a test opens: `-P` of them, twice that for `--bidir`.
fn expected_streams(p: &TestParams) -> usize {
    p.parallel as usize * if p.bidir { 2 } else { 1 }
}

/// Whether the server sends on the `n`th stream (0-based): in `--bidir`
/// the client opens its sending streams first.
fn server_sends(p: &TestParams, n: usize) -> bool {
    if p.bidir {
        n >= p.parallel as usize
    } else {
        p.reverse
    }
}

fn is_hello(data: &[u8]) -> bool {
    let v = [data[0], data[1], data[2], data[3]];
    let (le, be) = (u32::from_le_bytes(v), u32::from_be_bytes(v));
    le == UDP_CONNECT_MSG || be == UDP_CONNECT_MSG || le == LEGACY_UDP_CONNECT_REPLY
}

impl PerfApp for IperfServer {
    fn next_event(&mut self) -> Option<PerfEvent> {
        self.events.pop_front()
    }
}

impl IperfServer {
    /// When the server needs a turn even if nothing arrives (handshake and
    /// idle timeouts, UDP pacing, interval reports), counted from `now`.
    pub(crate) fn next_wake(&self, now: Instant) -> Option<Instant> {
        // Handshake deadlines: cookies still coming, refused clients draining.
        let pending = self.pending.iter().map(|p| p.since).chain(self.denied.iter().map(|&(_, since)| since));
        let handshakes = pending.min().map(|since| since + HANDSHAKE_TIMEOUT);
        let test = self.test.as_ref().and_then(|t| match &t.data {
            Some(d) if t.phase == Phase::Running => {
                let idle_end = now + (IDLE_TIMEOUT - d.idle(now).min(IDLE_TIMEOUT));
                [d.next_wake(now), Some(idle_end)].into_iter().flatten().min()
            }
            _ => Some(t.since + HANDSHAKE_TIMEOUT),
        });
        [handshakes, test].into_iter().flatten().min()
    }
}

impl IperfServer {
    /// Sort this turn's events: which of the server's sockets have news.
    /// The test's data streams are noted in its data plane, which then
    /// looks at those alone; pending and refused connections (16 of each at
    /// most) are looked at together when one of them has news.
    fn sort_events(&mut self, events: &[Event]) -> News {
        let mut news = News::default();
        for ev in events {
            let socket = ev.socket;
            if let Some(t) = self.test.as_mut() {
                if socket == Socket::Tcp(t.ctrl.h) {
                    news.test = true;
                    continue;
                }
                let udp = t.udp.is_some_and(|u| socket == Socket::Udp(u));
                news.udp |= udp;
                if t.data.as_mut().is_some_and(|d| d.note(socket)) || udp {
                    news.test = true;
                    continue;
                }
            }
            match socket {
                Socket::Listener(port) if port == self.port => news.listener = true,
                Socket::Tcp(h) if self.pending.iter().any(|p| p.h == h) => news.pending = true,
                Socket::Tcp(h) if self.denied.iter().any(|&(d, _)| d == h) => news.denied = true,
                _ => {}
            }
        }
        news
    }
}

/// Which of the server's sockets had events this turn.
#[derive(Clone, Copy, Debug, Default)]
struct News {
    listener: bool,
    pending: bool,
    denied: bool,
    /// The control connection, a data stream, or the UDP socket.
    test: bool,
    /// The test's UDP socket (hellos while the streams are created).
    udp: bool,
}

impl App for IperfServer {
    fn poll(&mut self, stack: &mut Stack, now: Instant, events: &[Event]) {
        // A deadline that passed: handshake timeouts, a paced send, an interval.
        let due = self.next_wake(self.last_turn).is_some_and(|t| now >= t);
        self.last_turn = now;
        let mut news = self.sort_events(events);
        let more = self.test.as_ref().is_some_and(|t| t.ctrl.more);
        if !(due || more || news.listener || news.pending || news.denied || news.test) {
            return; // nothing of ours happened
        }
        if news.listener {
            news.pending |= self.accept(stack, now);
        }
        let had_test = self.test.is_some();
        if news.pending || due {
            self.read_cookies(stack, now);
        }
        if news.denied || due {
            self.drain_denied(stack, now);
        }
        if news.udp {
            self.udp_hellos(stack);
        }
        if self.test.is_some() && (news.test || news.pending || due || more || !had_test) {
            self.drive_test(stack, now);
        }
    }

    fn next_deadline(&self) -> Option<Instant> {
        self.next_wake(self.last_turn)
    }

    fn finished(&self) -> bool {
        // The events stay to be taken: `run` drains them before asking.
        self.one_off && self.served > 0
    }
}
