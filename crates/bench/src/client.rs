//! The bench's workloads as a client app on a stack driven by the runtime's
//! event loop over a real device: what `ustack bench --device` runs in the
//! client process when both ends are ustack.
//!
//! One connection at a time, as the kernel client does (`linux::client`):
//! rr keeps one connection and exchanges `message`-byte requests and
//! responses; crr connects, exchanges one, closes and starts the next at
//! once; stream writes `write_size` bytes at a time for the whole run.

use crate::report::{histogram, Figures};
use crate::{Params, Workload};
use hdrhistogram::Histogram;
use std::net::SocketAddrV4;
use std::time::{Duration, Instant as WallInstant};
use ustack_core::tcp::State;
use ustack_core::{Event, Instant, Stack, TcpHandle};
use ustack_runtime::App;

/// A connection stuck this long (no progress at all) fails the run.
const STUCK: Duration = Duration::from_secs(5);

/// The client: one workload against `server` for `duration`.
pub(crate) struct Client {
    workload: Workload,
    server: SocketAddrV4,
    message: Vec<u8>,
    buf: Vec<u8>,
    duration: Duration,
    conn: Option<TcpHandle>,
    /// Bytes of the current request sent, and of its response received.
    sent: usize,
    got: usize,
    started: Option<WallInstant>,
    transaction: WallInstant,
    last_progress: WallInstant,
    count: u64,
    latency: Histogram<u64>,
    error: Option<String>,
    done: bool,
    elapsed: Duration,
}

impl Client {
    pub(crate) fn new(workload: Workload, server: SocketAddrV4, p: &Params) -> Client {
        let message = if workload == Workload::Stream { vec![0x5a; p.write_size] } else { vec![0x5a; p.message] };
        let now = WallInstant::now();
        Client {
            workload,
            server,
            buf: vec![0; message.len().max(64 * 1024)],
            message,
            duration: p.duration,
            conn: None,
            sent: 0,
            got: 0,
            started: None,
            transaction: now,
            last_progress: now,
            count: 0,
            latency: histogram(),
            error: None,
            done: false,
            elapsed: Duration::ZERO,
        }
    }

    /// What it achieved (CPU time is the caller's to fill in).
    pub(crate) fn figures(self) -> Result<Figures, String> {
        if let Some(e) = self.error {
            return Err(e);
        }
        let latency_ns = (self.workload != Workload::Stream).then_some(self.latency);
        Ok(Figures { count: self.count, elapsed: self.elapsed, cpu: Duration::ZERO, latency_ns })
    }

    fn fail(&mut self, why: String) {
        self.error.get_or_insert(why);
        self.done = true;
    }

    fn connect(&mut self, stack: &mut Stack, now: Instant) {
        match stack.tcp_connect(now, self.server) {
            Ok(h) => {
                if self.workload != Workload::Stream {
                    stack.tcp_set_nodelay(h, true);
                }
                self.conn = Some(h);
                self.sent = 0;
                self.got = 0;
                self.transaction = WallInstant::now();
            }
            Err(e) => self.fail(format!("connect to {}: {e}", self.server)),
        }
    }

    /// Move the current connection on as far as it goes this turn.
    fn work(&mut self, stack: &mut Stack, h: TcpHandle) -> Result<(), String> {
        match stack.tcp_state(h) {
            Some(State::SynSent | State::SynReceived) => return Ok(()),
            Some(State::Established | State::CloseWait) => {}
            other => return Err(format!("connection to {} ended early ({other:?})", self.server)),
        }
        if self.workload == Workload::Stream {
            loop {
                match stack.tcp_send(h, &self.message) {
                    Ok(0) => return Ok(()),
                    Ok(n) => {
                        self.count += n as u64;
                        self.last_progress = WallInstant::now();
                    }
                    Err(ustack_core::tcp::SendError::Full) => return Ok(()),
                    Err(e) => return Err(format!("send: {e:?}")),
                }
            }
        }
        while self.sent < self.message.len() {
            match stack.tcp_send(h, &self.message[self.sent..]) {
                Ok(0) | Err(ustack_core::tcp::SendError::Full) => return Ok(()),
                Ok(n) => self.sent += n,
                Err(e) => return Err(format!("send: {e:?}")),
            }
        }
        loop {
            let want = self.message.len() - self.got;
            match stack.tcp_recv(h, &mut self.buf[..want]) {
                Ok(0) => return Err(format!("{} closed the connection", self.server)),
                Ok(n) => self.got += n,
                Err(ustack_core::tcp::RecvError::WouldBlock) => return Ok(()),
                Err(e) => return Err(format!("recv: {e:?}")),
            }
            if self.got == self.message.len() {
                let now = WallInstant::now();
                self.latency.saturating_record(now.duration_since(self.transaction).as_nanos() as u64);
                self.count += 1;
                self.last_progress = now;
                self.transaction = now;
                self.sent = 0;
                self.got = 0;
                if self.workload == Workload::Crr {
                    stack.tcp_close(h);
                    self.conn = None;
                    return Ok(());
                }
                // rr: the next request at once.
                return self.work(stack, h);
            }
        }
    }
}

impl App for Client {
    fn poll(&mut self, stack: &mut Stack, now: Instant, _events: &[Event]) {
        if self.done {
            return;
        }
        let wall = WallInstant::now();
        let started = *self.started.get_or_insert(wall);
        if wall.duration_since(started) >= self.duration {
            self.elapsed = wall.duration_since(started);
            if let Some(h) = self.conn.take() {
                stack.tcp_abort(h);
            }
            self.done = true;
            return;
        }
        if wall.duration_since(self.last_progress) > STUCK {
            return self.fail(format!("no progress with {} for {STUCK:?}", self.server));
        }
        if self.conn.is_none() {
            self.connect(stack, now);
        }
        if let Some(h) = self.conn {
            if let Err(e) = self.work(stack, h) {
                self.fail(e);
            }
            if self.conn.is_none() && !self.done {
                // crr: the next connection in the same turn.
                self.connect(stack, now);
            }
        }
    }

    fn next_deadline(&self) -> Option<Instant> {
        // Woken by the device for every step; a coarse tick ends the run on time.
        None
    }

    fn finished(&self) -> bool {
        self.done
    }
}
