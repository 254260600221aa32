//! One client test spread over stack shards (`ustack perf -c … --cores N`).
//!
//! The control connection and the protocol stay with the [`IperfClient`]
//! on shard 0; data stream `n` is opened on shard `n % N`, from that
//! shard's own stack, so its port hashes home there
//! ([`Stack::set_shard`]) and the server's replies need no handoff.
//! Shards other than the client's run an [`IperfStreams`]: it opens the
//! streams asked of it (one at a time, in the client's order, so the
//! server numbers them as the client does), sends and receives on them
//! while the test runs, and hands back their reports when it ends.
//!
//! What the shards share ([`StreamShards`]) is touched once per turn of
//! each shard, never per packet: a lock taken a few thousand times a
//! second at most, uncontended but for those turns.
//!
//! [`IperfClient`]: super::IperfClient

use super::data::DataPlane;
use super::stream::{tcp_local, Stream, Transport, WallClock};
use super::{StreamReport, TestParams, COOKIE_LEN};
use crate::apps::APP_TOKEN;
use crate::App;
use std::collections::VecDeque;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, MutexGuard};
use ustack_core::tcp::State;
use ustack_core::{Duration, Event, Instant, Interest, Stack};

/// How often a shard looks at the shared plan while it waits on another
/// shard (a stream being opened, the reports at the end).
pub(super) const SHARD_POLL: Duration = Duration::from_millis(1);

/// What the shards of one sharded client test share.
pub struct StreamShards {
    shards: usize,
    plan: Mutex<Plan>,
}

/// A stream another shard opened: its id, our end, and the bytes it has
/// counted so far in the test.
#[derive(Clone, Copy, Debug)]
pub(super) struct RemoteStream {
    pub id: u32,
    pub sender: bool,
    pub local: Option<SocketAddr>,
    pub bytes: u64,
}

pub(super) struct Plan {
    /// The test, once the server asked for streams (CREATE_STREAMS).
    pub params: Option<(TestParams, [u8; COOKIE_LEN], SocketAddr)>,
    /// Streams asked of each shard and not yet taken: (id, sender).
    pub asked: Vec<VecDeque<(u32, bool)>>,
    /// Streams open on a shard other than the client's (cookie written),
    /// in the order they opened; their counts kept current while the test runs.
    pub opened: Vec<RemoteStream>,
    /// Why a shard could not do its part.
    pub failed: Option<String>,
    /// TEST_RUNNING: counting starts.
    pub began: bool,
    /// The client's test time is over: stop sending, count no more.
    pub ended: bool,
    /// Each shard's final reports, once it has ended (index 0 unused).
    pub reports: Vec<Option<Vec<StreamReport>>>,
    /// The test is over or failed: let go of every stream.
    pub released: bool,
}

impl StreamShards {
    /// The plan for a test over `shards` shards (shard 0 runs the client).
    pub fn new(shards: usize) -> Arc<StreamShards> {
        let shards = shards.max(1);
        Arc::new(StreamShards {
            shards,
            plan: Mutex::new(Plan {
                params: None,
                asked: vec![VecDeque::new(); shards],
                opened: Vec::new(),
                failed: None,
                began: false,
                ended: false,
                reports: vec![None; shards],
                released: false,
            }),
        })
    }

    /// How many shards take part.
    pub fn shards(&self) -> usize {
        self.shards
    }

    /// The shard that opens data stream `n` (0-based, in opening order).
    pub fn shard_of_stream(&self, n: usize) -> usize {
        n % self.shards
    }

    pub(super) fn lock(&self) -> MutexGuard<'_, Plan> {
        // A shard that panicked holding the lock leaves a plan still worth reading.
        self.plan.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Let every shard go: the test is over (or was given up).
    pub fn release(&self) {
        self.lock().released = true;
    }

    /// Whether every shard other than the client's has handed in its reports.
    pub(super) fn all_reported(plan: &Plan) -> bool {
        plan.reports.iter().skip(1).all(Option::is_some)
    }
}

/// A shard's part of a sharded client test: the data streams asked of it.
pub struct IperfStreams {
    shared: Arc<StreamShards>,
    shard: usize,
    data: Option<DataPlane>,
    /// The stream being opened and the cookie bytes written on it.
    opening: Option<(Stream, usize)>,
    /// How many streams this shard opened.
    opened: usize,
    last_turn: Instant,
    done: bool,
}

impl IperfStreams {
    /// Shard `shard`'s part of the test `shared` plans.
    pub fn new(shared: Arc<StreamShards>, shard: usize) -> IperfStreams {
        IperfStreams { shared, shard, data: None, opening: None, opened: 0, last_turn: Instant::ZERO, done: false }
    }

    /// How many data streams this shard opened.
    pub fn streams_opened(&self) -> usize {
        self.opened
    }

    fn release(&mut self, stack: &mut Stack) {
        if let Some(d) = self.data.as_mut() {
            d.release(stack);
        }
        if let Some((mut s, _)) = self.opening.take() {
            s.release(stack);
        }
        self.done = true;
    }

    /// One turn with the plan locked. Errors are why the shard failed.
    fn step(&mut self, stack: &mut Stack, now: Instant, plan: &mut Plan) -> Result<(), String> {
        let Some((params, cookie, server)) = plan.params.clone() else { return Ok(()) };
        let d = self.data.get_or_insert_with(|| DataPlane::new(params, WallClock::now(now)));
        if let Some((stream, sent)) = self.opening.as_mut() {
            let h = stream.tcp().expect("TCP streams only");
            match stack.tcp_state(h) {
                Some(State::SynSent) => {}
                Some(State::Established) => {
                    *sent += stack.tcp_send(h, &cookie[*sent..]).unwrap_or(0);
                }
                _ => return Err(format!("shard {}: unable to open a data stream to {server}", self.shard)),
            }
            if *sent == COOKIE_LEN {
                let (stream, _) = self.opening.take().expect("checked");
                plan.opened.push(RemoteStream { id: stream.id, sender: stream.sender, local: stream.local, bytes: 0 });
                d.add_stream(stack, stream);
                self.opened += 1;
            }
        }
        if self.opening.is_none() {
            if let Some((id, sender)) = plan.asked[self.shard].pop_front() {
                let h = stack
                    .tcp_connect(now, server)
                    .map_err(|e| format!("shard {}: cannot open a data stream: {e:?}", self.shard))?;
                let _ = stack.register(h, APP_TOKEN, Interest::WRITABLE);
                let local = tcp_local(stack, h);
                self.opening = Some((Stream::new(id, sender, Transport::Tcp(h), local, Some(server)), 0));
            }
        }
        if plan.began && d.start.is_none() {
            d.begin(now);
        }
        let _ = d.drive(stack, now);
        if d.running() {
            for s in &d.streams {
                if let Some(r) = plan.opened.iter_mut().find(|r| r.id == s.id) {
                    r.bytes = s.bytes;
                }
            }
        }
        if plan.ended && plan.reports[self.shard].is_none() {
            let _ = d.finish(stack, now);
            plan.reports[self.shard] = Some(d.reports(stack));
        }
        Ok(())
    }
}

impl App for IperfStreams {
    fn poll(&mut self, stack: &mut Stack, now: Instant, events: &[Event]) {
        self.last_turn = now;
        if self.done {
            return;
        }
        if let Some(d) = self.data.as_mut() {
            for ev in events {
                d.note(ev.socket);
            }
        }
        let shared = Arc::clone(&self.shared);
        let mut plan = shared.lock();
        if plan.released {
            drop(plan);
            self.release(stack);
            return;
        }
        if let Err(why) = self.step(stack, now, &mut plan) {
            plan.failed.get_or_insert(why);
            plan.reports[self.shard].get_or_insert_with(Vec::new);
        }
    }

    fn next_deadline(&self) -> Option<Instant> {
        if self.done {
            return None;
        }
        // The plan changes without a packet: look again shortly.
        let poll = self.last_turn + SHARD_POLL;
        Some(self.data.as_ref().and_then(|d| d.next_wake(self.last_turn)).map_or(poll, |t| t.min(poll)))
    }

    fn finished(&self) -> bool {
        self.done
    }
}
