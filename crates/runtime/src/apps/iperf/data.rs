//! The data phase of a test, the same on both sides: the streams, the
//! sending (paced for UDP, bounded by `-n`/`-k`), the receiving, and the
//! per-second intervals.
//!
//! Driven by readiness: every stream's socket is registered, the app hands
//! each event to [`DataPlane::note`], and [`DataPlane::drive`] then reads
//! and writes only the streams that had one. Time does the rest: a paced
//! sender's next tick and the next interval are [`DataPlane::next_wake`].

use super::stream::{paced_bytes, Flow, Stream, Transport, WallClock};
use super::{cpu_times, cpu_util, secs_between, Interval, StreamReport, TestParams, INTERVAL};
use crate::apps::APP_TOKEN;
use std::collections::HashMap;
use ustack_core::{Duration, Instant, Interest, Socket, Stack, UdpHandle};

/// A paced sender (UDP, or TCP with `-b`) wakes at least this often to keep its pace smooth.
const PACE_TICK: Duration = Duration::from_millis(1);

pub(super) struct DataPlane {
    pub params: TestParams,
    /// In the order they were opened (ids 1, 3, 4, …); add with [`DataPlane::add_stream`].
    pub streams: Vec<Stream>,
    /// The stream each socket carries (a UDP socket the server's streams
    /// share: the first of them), to find the stream an event names.
    by_socket: HashMap<Socket, usize>,
    /// Streams an event named since the last `drive`, each once (`Stream::marked`).
    ready: Vec<usize>,
    /// UDP sockets an event named since the last `drive`.
    ready_udp: Vec<UdpHandle>,
    /// A paced sender's next tick: the paced senders all send then.
    pace_at: Instant,
    /// When TEST_RUNNING was sent or seen; counting starts here.
    pub start: Option<Instant>,
    /// When the data phase ended (TEST_END).
    pub end: Option<Instant>,
    /// Counting starts here: TEST_RUNNING, or the end of `-O` omitted seconds.
    counted_from: Instant,
    /// The end of the omitted seconds, while they last.
    omit_until: Option<Instant>,
    interval_start: Instant,
    pub sent_total: u64,
    pub received_total: u64,
    /// When bytes last moved either way (or the test started).
    last_activity: Instant,
    /// One block of the `-l` length, sent over and over (TCP).
    block: Box<[u8]>,
    scratch: Box<[u8]>,
    pub wall: WallClock,
    cpu_start: (f64, f64),
}

impl DataPlane {
    pub fn new(params: TestParams, wall: WallClock) -> DataPlane {
        // iperf3 fills its block with random bytes; a fixed pattern serves
        // the same purpose here (nothing on the path compresses).
        let block: Box<[u8]> = (0..params.len.max(1)).map(|i| (i * 7 + 13) as u8).collect();
        DataPlane {
            params,
            streams: Vec::new(),
            by_socket: HashMap::new(),
            ready: Vec::new(),
            ready_udp: Vec::new(),
            pace_at: Instant::ZERO,
            start: None,
            end: None,
            counted_from: Instant::ZERO,
            omit_until: None,
            interval_start: Instant::ZERO,
            sent_total: 0,
            received_total: 0,
            last_activity: Instant::ZERO,
            block,
            scratch: vec![0; 64 * 1024].into_boxed_slice(),
            wall,
            cpu_start: (0.0, 0.0),
        }
    }

    pub fn running(&self) -> bool {
        self.start.is_some() && self.end.is_none()
    }

    /// Take `stream` into the test: its socket is registered for reading
    /// and writing (a UDP socket the streams share, again: that changes
    /// nothing), and the first `drive` looks at it, whatever was reported
    /// before.
    pub fn add_stream(&mut self, stack: &mut Stack, stream: Stream) {
        let socket = stream.socket();
        // The stream's socket is open: it was just connected, accepted or bound.
        let _ = stack.register(socket, APP_TOKEN, Interest::READABLE | Interest::WRITABLE);
        let i = self.streams.len();
        self.by_socket.entry(socket).or_insert(i);
        self.streams.push(stream);
        self.mark(i);
        if let Socket::Udp(u) = socket {
            self.mark_udp(u);
        }
    }

    /// An event named `socket`: if it is one of the test's, the next `drive`
    /// looks at its stream. Returns whether it is.
    pub fn note(&mut self, socket: Socket) -> bool {
        let Some(&i) = self.by_socket.get(&socket) else { return false };
        match socket {
            Socket::Udp(u) => self.mark_udp(u),
            _ => self.mark(i),
        }
        true
    }

    fn mark(&mut self, i: usize) {
        let s = &mut self.streams[i];
        if !s.marked {
            s.marked = true;
            self.ready.push(i);
        }
    }

    fn mark_udp(&mut self, u: UdpHandle) {
        // One socket on the server, one per stream (at most 256) on the client.
        if !self.ready_udp.contains(&u) {
            self.ready_udp.push(u);
        }
    }

    /// TEST_RUNNING: counting starts now.
    pub fn begin(&mut self, now: Instant) {
        self.start = Some(now);
        self.last_activity = now;
        self.pace_at = now;
        // Writability reported before the test ran was not acted on: every
        // sender starts now.
        for i in 0..self.streams.len() {
            self.mark(i);
        }
        let omit = u64::from(self.params.omit);
        self.omit_until = (omit > 0).then(|| now + Duration::from_secs(omit));
        self.restart_counts(now);
    }

    /// Counting (re)starts at `now`: at TEST_RUNNING, and again when the
    /// omitted seconds end (iperf3 leaves them out of every figure).
    fn restart_counts(&mut self, now: Instant) {
        self.counted_from = now;
        self.interval_start = now;
        self.cpu_start = cpu_times();
        for s in &mut self.streams {
            s.restart_counts();
        }
    }

    /// Seconds since TEST_RUNNING.
    pub fn elapsed(&self, now: Instant) -> f64 {
        self.start.map_or(0.0, |s| secs_between(s, now))
    }

    /// Bytes still to send under `-n`/`-k`, if bounded.
    fn budget(&self) -> u64 {
        self.params.byte_bound().map_or(u64::MAX, |b| b.saturating_sub(self.sent_total))
    }

    /// Receive on the streams events named (counting only while running),
    /// then, while running, send on those and, at a paced sender's tick, on
    /// every paced one. Returns the interval that closed this turn, if any.
    pub fn drive(&mut self, stack: &mut Stack, now: Instant) -> Option<Interval> {
        let moved = self.sent_total + self.received_total;
        self.receive(stack, now, false);
        if self.running() {
            self.send(stack, now);
        }
        for &i in &self.ready {
            self.streams[i].marked = false;
        }
        self.ready.clear();
        if self.sent_total + self.received_total != moved {
            self.last_activity = now;
        }
        if self.omit_until.is_some_and(|t| now >= t) {
            // The omitted seconds are over: report what they moved, then count afresh.
            self.omit_until = None;
            let omitted = (now > self.interval_start).then(|| self.take_interval(now));
            self.restart_counts(now);
            return omitted;
        }
        self.interval(now)
    }

    /// How long no byte has moved on any stream during the test.
    pub fn idle(&self, now: Instant) -> Duration {
        now.saturating_since(self.last_activity)
    }

    /// Read the TCP receivers and drain the UDP sockets that events named
    /// (`all`: every one, at the end of the test).
    fn receive(&mut self, stack: &mut Stack, now: Instant, all: bool) {
        let running = self.running();
        let n = if all { self.streams.len() } else { self.ready.len() };
        for k in 0..n {
            let s = &mut self.streams[if all { k } else { self.ready[k] }];
            if s.sender || s.ended || s.tcp().is_none() {
                continue;
            }
            let before = s.bytes;
            if s.recv_tcp(stack, &mut self.scratch, running) == Flow::Ended && s.end == 0.0 {
                s.end = self.start.map_or(0.0, |st| secs_between(st, now));
            }
            self.received_total += s.bytes - before;
        }
        // UDP: drain each socket that had news (the server's streams share one).
        if all {
            for i in 0..self.streams.len() {
                if let Transport::Udp { socket, .. } = self.streams[i].transport {
                    self.mark_udp(socket);
                }
            }
        }
        while let Some(sock) = self.ready_udp.pop() {
            self.drain_udp(stack, sock, now, running, self.params.udp64);
        }
    }

    fn send(&mut self, stack: &mut Stack, now: Instant) {
        // Paced from where counting began, as the counts restart after `-O`.
        let start = self.counted_from;
        let wall = self.wall;
        let paced = self.params.udp || self.params.bandwidth > 0;
        let tick = paced && now >= self.pace_at;
        if tick {
            self.pace_at = now + PACE_TICK;
        }
        // At a tick every (paced) sender; between ticks the ones events named.
        let n = if tick { self.streams.len() } else { self.ready.len() };
        for k in 0..n {
            let i = if tick { k } else { self.ready[k] };
            let budget = self.budget();
            let s = &mut self.streams[i];
            if !s.sender || s.ended || budget == 0 {
                continue;
            }
            let sent = match s.transport {
                // `-b` paces TCP too, per stream, as iperf3 does.
                Transport::Tcp(_) if self.params.bandwidth > 0 => {
                    let paced = paced_bytes(self.params.bandwidth, start, now).saturating_sub(s.bytes);
                    s.send_tcp(stack, &self.block, budget.min(paced))
                }
                Transport::Tcp(_) => s.send_tcp(stack, &self.block, budget),
                Transport::Udp { .. } => s.send_udp(stack, now, start, &wall, &self.params, budget),
            };
            self.sent_total += sent;
        }
    }

    fn drain_udp(&mut self, stack: &mut Stack, sock: UdpHandle, now: Instant, running: bool, udp64: bool) {
        let (streams, wall, received) = (&mut self.streams, &self.wall, &mut self.received_total);
        // Bounded by the socket's queue: it holds at most udp_rx_packets.
        while let Some(()) = stack.udp_recv_with(sock, |data, from| {
            if !running {
                return;
            }
            let own = |s: &&mut Stream| matches!(s.transport, Transport::Udp { socket, peer } if socket == sock && peer == from);
            if let Some(s) = streams.iter_mut().filter(|s| !s.sender).find(|s| own(s)) {
                s.recv_udp(data, now, wall, udp64);
                *received += data.len() as u64;
            }
        }) {}
    }

    /// Close the interval if a second has passed.
    fn interval(&mut self, now: Instant) -> Option<Interval> {
        self.start?;
        if self.end.is_some() || now.saturating_since(self.interval_start) < INTERVAL {
            return None;
        }
        Some(self.take_interval(now))
    }

    /// The interval from `interval_start` to `now`, in seconds since counting began.
    fn take_interval(&mut self, now: Instant) -> Interval {
        let start = self.counted_from;
        let iv = Interval {
            start: secs_between(start, self.interval_start),
            end: secs_between(start, now),
            streams: self.streams.iter().map(|s| (s.id, s.sender, s.interval_bytes, s.interval_packets)).collect(),
        };
        for s in &mut self.streams {
            (s.interval_bytes, s.interval_packets) = (0, 0);
        }
        self.interval_start = now;
        iv
    }

    /// TEST_END: stop counting; the last partial interval, if it has any length.
    pub fn finish(&mut self, stack: &mut Stack, now: Instant) -> Option<Interval> {
        // What already arrived was sent during the test: count it.
        if self.running() {
            self.receive(stack, now, true);
        }
        self.start?;
        self.end = Some(now);
        let secs = secs_between(self.counted_from, now);
        for s in &mut self.streams {
            if s.end == 0.0 {
                s.end = secs;
            }
        }
        (now.saturating_since(self.interval_start) >= Duration::from_millis(10)).then(|| self.take_interval(now))
    }

    /// Seconds of data phase.
    pub fn duration(&self) -> f64 {
        match (self.start, self.end) {
            (Some(_), Some(e)) => secs_between(self.counted_from, e),
            _ => 0.0,
        }
    }

    pub fn cpu(&self) -> [f64; 3] {
        cpu_util(self.cpu_start, cpu_times(), self.duration())
    }

    pub fn reports(&self, stack: &Stack) -> Vec<StreamReport> {
        self.streams.iter().map(|s| s.report(self.params.udp, stack)).collect()
    }

    /// When the data phase next needs a turn without any packet arriving:
    /// a UDP sender's pace, or the next interval.
    pub fn next_wake(&self, now: Instant) -> Option<Instant> {
        self.start?;
        if self.end.is_some() {
            return None;
        }
        let interval = (self.interval_start + INTERVAL).min(self.omit_until.unwrap_or(Instant::NEVER));
        let paced = self.params.udp || self.params.bandwidth > 0;
        let pacing = paced && self.budget() > 0 && self.streams.iter().any(|s| s.sender && !s.ended);
        // Streams an event named wait for a turn at once.
        let ready = (!self.ready.is_empty() || !self.ready_udp.is_empty()).then_some(now);
        [Some(interval), pacing.then_some(self.pace_at), ready].into_iter().flatten().min()
    }

    pub fn release(&mut self, stack: &mut Stack) {
        for s in &mut self.streams {
            s.release(stack);
        }
    }
}
