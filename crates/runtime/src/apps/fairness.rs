//! Fair service under attack, for any server app: connections that wait on
//! their peer have a deadline, one source address holds at most so many
//! connections, and when the table is full a new client gets the place of
//! the connection that has waited longest instead of being refused.
//!
//! A slowloris attacker holds connections by sending a request head one line
//! every few seconds; with only a connection limit every real client is
//! refused for as long as the attack lasts. Here each waiting connection
//! sits in one ordered index by deadline, so a timeout check and the choice
//! of whom to close to make room both cost O(log n), and the work per poll
//! is bounded ([`EXPIRE_PER_POLL`]).
//!
//! The app says, after each turn with a connection, what it waits for
//! ([`Phase`]): a connection busy sending a response is never timed out or
//! evicted here (TCP's own timers bound a stalled peer); one waiting for a
//! request head must complete it within `request_timeout` of the first
//! wait (nginx's `client_header_timeout` is a deadline too, not an
//! inactivity timer, which is what defeats a trickle of header lines); an
//! idle keep-alive connection is closed after `idle_timeout`.

use std::collections::{BTreeMap, HashMap};
use std::net::IpAddr;
use ustack_core::{Duration, Instant, Stack, TcpHandle};

/// Connections closed for their deadline in one poll at most; the rest wait
/// for the next poll (a few milliseconds later), so a mass expiry never
/// stalls the loop.
pub const EXPIRE_PER_POLL: usize = 64;

/// The policy's tunables, with their defaults.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FairnessConfig {
    /// A request (its head, for HTTP) must arrive whole within this time of
    /// the connection starting to wait for it. Default 20 s: nginx's
    /// `client_header_timeout` is 60 s and Apache's `mod_reqtimeout` starts
    /// at 20 s; a person's browser sends its head in one segment.
    pub request_timeout: Duration,
    /// An idle keep-alive connection is closed after this. Default 15 s
    /// (nginx 75 s, Apache 5 s): long enough for a page's next request.
    pub idle_timeout: Duration,
    /// Connections one source address may hold at once; more are reset.
    /// Default 256: a NAT with many users stays served, one host cannot
    /// take the whole table.
    pub max_per_source: usize,
}

impl Default for FairnessConfig {
    fn default() -> Self {
        FairnessConfig {
            request_timeout: Duration::from_secs(20),
            idle_timeout: Duration::from_secs(15),
            max_per_source: 256,
        }
    }
}

/// What a connection waits for, as its app reports it after each turn.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Phase {
    /// Working for the peer (a response being sent): no deadline here.
    Busy,
    /// Waiting for a request; `served` counts the requests answered so
    /// far, so a new request starts a new deadline.
    Request {
        /// Requests answered on the connection so far.
        served: u64,
    },
    /// Idle between requests, nothing buffered.
    Idle {
        /// Requests answered on the connection so far.
        served: u64,
    },
}

/// What the policy did, for stats.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct FairnessStats {
    /// Connections reset because their request did not arrive in time.
    pub request_timeouts: u64,
    /// Idle keep-alive connections closed.
    pub idle_timeouts: u64,
    /// Waiting connections reset to make room for a new one.
    pub evicted: u64,
    /// New connections reset because their source held too many.
    pub refused_per_source: u64,
    /// New connections reset because the table was full of busy ones.
    pub refused_full: u64,
}

/// Whether a new connection may stay.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Admission {
    /// Keep it; if `evicted` is set, that connection was reset to make room
    /// (the app drops its state).
    Admitted {
        /// The connection reset to make room, if one was.
        evicted: Option<TcpHandle>,
    },
    /// Reset it (the policy has done so).
    Refused,
}

#[derive(Clone, Copy, Debug)]
struct Tracked {
    source: IpAddr,
    phase: Phase,
    /// Its key in `waiting`, unless busy.
    deadline: Option<(Instant, u64)>,
}

/// The policy for one server's connections.
#[derive(Debug)]
pub struct ConnPolicy {
    cfg: FairnessConfig,
    conns: HashMap<TcpHandle, Tracked>,
    /// Waiting connections by deadline (ties broken by arrival order).
    waiting: BTreeMap<(Instant, u64), TcpHandle>,
    per_source: HashMap<IpAddr, usize>,
    seq: u64,
    /// What the policy has done so far.
    pub stats: FairnessStats,
}

impl ConnPolicy {
    /// A policy with no connection yet; `max_per_source` below 1 counts as 1.
    pub fn new(cfg: FairnessConfig) -> ConnPolicy {
        ConnPolicy {
            cfg: FairnessConfig { max_per_source: cfg.max_per_source.max(1), ..cfg },
            conns: HashMap::new(),
            waiting: BTreeMap::new(),
            per_source: HashMap::new(),
            seq: 0,
            stats: FairnessStats::default(),
        }
    }

    /// The tunables in force.
    pub fn config(&self) -> &FairnessConfig {
        &self.cfg
    }

    /// Connections the policy tracks.
    pub fn len(&self) -> usize {
        self.conns.len()
    }

    /// Whether the policy tracks no connection.
    pub fn is_empty(&self) -> bool {
        self.conns.is_empty()
    }

    /// A connection just accepted. `full` says the app's table has no room:
    /// then the waiting connection nearest its deadline is reset to make
    /// room, or, when every connection is busy, the new one is. A new
    /// connection starts waiting for its first request.
    pub fn admit(&mut self, stack: &mut Stack, now: Instant, h: TcpHandle, full: bool) -> Admission {
        let Some(source) = stack.tcp_connection(h).map(|c| c.four_tuple().remote_addr) else {
            return Admission::Refused;
        };
        if self.per_source.get(&source).copied().unwrap_or(0) >= self.cfg.max_per_source {
            stack.tcp_abort(h);
            self.stats.refused_per_source += 1;
            return Admission::Refused;
        }
        let mut evicted = None;
        if full {
            let Some((_, victim)) = self.waiting.pop_first() else {
                stack.tcp_abort(h);
                self.stats.refused_full += 1;
                return Admission::Refused;
            };
            if let Some(t) = self.conns.get_mut(&victim) {
                t.deadline = None;
            }
            self.forget(victim);
            stack.tcp_abort(victim);
            self.stats.evicted += 1;
            evicted = Some(victim);
        }
        *self.per_source.entry(source).or_insert(0) += 1;
        self.conns.insert(h, Tracked { source, phase: Phase::Busy, deadline: None });
        self.update(h, now, Phase::Request { served: 0 });
        Admission::Admitted { evicted }
    }

    /// What `h` waits for now. A change of phase (or a request served)
    /// starts a new deadline; the same phase keeps the old one, so a peer
    /// that trickles a request head does not extend its time.
    pub fn update(&mut self, h: TcpHandle, now: Instant, phase: Phase) {
        let Some(t) = self.conns.get_mut(&h) else { return };
        if t.phase == phase && (t.deadline.is_some() || phase == Phase::Busy) {
            return;
        }
        if let Some(key) = t.deadline.take() {
            self.waiting.remove(&key);
        }
        t.phase = phase;
        let wait = match phase {
            Phase::Busy => return,
            Phase::Request { .. } => self.cfg.request_timeout,
            Phase::Idle { .. } => self.cfg.idle_timeout,
        };
        self.seq += 1;
        let key = (now + wait, self.seq);
        t.deadline = Some(key);
        self.waiting.insert(key, h);
    }

    /// When the next waiting connection runs out of time, for
    /// [`crate::App::next_deadline`].
    pub fn next_deadline(&self) -> Option<Instant> {
        self.waiting.first_key_value().map(|(&(t, _), _)| t)
    }

    /// `h` is gone (closed by its app, or by the policy).
    pub fn forget(&mut self, h: TcpHandle) {
        let Some(t) = self.conns.remove(&h) else { return };
        if let Some(key) = t.deadline {
            self.waiting.remove(&key);
        }
        if let Some(n) = self.per_source.get_mut(&t.source) {
            *n -= 1;
            if *n == 0 {
                self.per_source.remove(&t.source);
            }
        }
    }

    /// Close the connections whose deadline has passed, at most
    /// [`EXPIRE_PER_POLL`]: a late request is reset (nothing more will come
    /// of it), an idle connection closed gracefully. Each closed handle goes
    /// to `closed` so the app drops its state.
    pub fn expire(&mut self, stack: &mut Stack, now: Instant, mut closed: impl FnMut(TcpHandle)) {
        for _ in 0..EXPIRE_PER_POLL {
            let Some((&(deadline, _), &h)) = self.waiting.first_key_value() else { return };
            if deadline > now {
                return;
            }
            let phase = self.conns.get(&h).map_or(Phase::Busy, |t| t.phase);
            self.forget(h);
            match phase {
                Phase::Idle { .. } => {
                    self.stats.idle_timeouts += 1;
                    stack.tcp_close(h);
                }
                _ => {
                    self.stats.request_timeouts += 1;
                    stack.tcp_abort(h);
                }
            }
            closed(h);
        }
    }
}
