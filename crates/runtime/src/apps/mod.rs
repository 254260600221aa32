//! Small servers and clients that run on the stack: the services `ustack up`
//! offers and the client `ustack get` runs.
//!
//! Apps are driven by readiness events: each turn they look only at the
//! sockets the stack reported ready (see [`crate::App::poll`]) and at the
//! connections they just accepted, never scanning their whole table. They
//! pick their sockets out of the events by [`Event::socket`], so the token
//! they register with ([`APP_TOKEN`]) carries nothing. Each keeps a
//! small, fixed state per connection, and each bounds its connection count:
//! a connection over the bound is reset at once.

mod fairness;
mod http_client;
mod http_server;
pub mod iperf;
mod tcp_discard;
mod tcp_echo;
mod udp_echo;

pub use fairness::{Admission, ConnPolicy, FairnessConfig, FairnessStats, Phase, EXPIRE_PER_POLL};
pub use http_client::{HttpClient, HttpClientError, HttpResponse};
pub use http_server::{HttpServer, HttpServerConfig, HttpStats, Site, SiteError};
pub use tcp_discard::TcpDiscard;
pub use tcp_echo::TcpEcho;
pub use udp_echo::UdpEcho;

use std::collections::HashMap;
use ustack_core::{Event, Instant, Interest, ListenError, Socket, Stack, TcpHandle};

/// The token the apps register their sockets with: they tell their sockets
/// apart by [`Event::socket`], leaving tokens to embedders' own use.
pub const APP_TOKEN: u64 = 0;

/// Connections a server app holds at once unless told otherwise.
pub const DEFAULT_MAX_CONNECTIONS: usize = 1024;

/// The listen backlog the server apps ask for.
const BACKLOG: usize = 128;

/// A listening port and the connections accepted on it, each with its state.
struct Server<T> {
    port: u16,
    max_connections: usize,
    conns: HashMap<TcpHandle, T>,
    /// Accepted this turn, driven at once (their first data may be waiting).
    fresh: Vec<TcpHandle>,
    accepted: u64,
    refused: u64,
    /// Timeouts, a cap per source and eviction when full; `None`: a plain
    /// connection limit.
    policy: Option<ConnPolicy>,
    /// Handles the policy closed this turn (reused, no allocation).
    closed: Vec<TcpHandle>,
}

impl<T> Server<T> {
    fn listen(stack: &mut Stack, port: u16, max_connections: usize) -> Result<Server<T>, ListenError> {
        stack.tcp_listen(port, BACKLOG)?;
        stack.register(Socket::Listener(port), APP_TOKEN, Interest::READABLE).expect("the listener was just opened");
        let max_connections = max_connections.max(1);
        Ok(Server {
            port,
            max_connections,
            conns: HashMap::with_capacity(max_connections.min(DEFAULT_MAX_CONNECTIONS)),
            fresh: Vec::new(),
            accepted: 0,
            refused: 0,
            policy: None,
            closed: Vec::new(),
        })
    }

    /// Apply `cfg`'s fairness policy to this server's connections.
    fn with_policy(mut self, cfg: FairnessConfig) -> Server<T> {
        self.policy = Some(ConnPolicy::new(cfg));
        self
    }

    /// When `events` say the listener has connections waiting, take them
    /// all, up to the bound (or the policy's choice); the rest are reset.
    /// Each is registered for reading and writing. `nodelay` turns Nagle off
    /// for request/response protocols, whose last small segment would
    /// otherwise wait for the peer's delayed ACK.
    fn accept(&mut self, stack: &mut Stack, now: Instant, events: &[Event], nodelay: bool, mut new: impl FnMut() -> T) {
        self.fresh.clear();
        if !events.iter().any(|e| e.socket == Socket::Listener(self.port)) {
            return;
        }
        while let Some(h) = stack.tcp_accept(self.port) {
            let full = self.conns.len() >= self.max_connections;
            match &mut self.policy {
                Some(policy) => match policy.admit(stack, now, h, full) {
                    Admission::Refused => {
                        self.refused += 1;
                        continue;
                    }
                    Admission::Admitted { evicted } => {
                        if let Some(v) = evicted {
                            self.conns.remove(&v);
                        }
                    }
                },
                None if full => {
                    stack.tcp_abort(h);
                    self.refused += 1;
                    continue;
                }
                None => {}
            }
            if nodelay {
                stack.tcp_set_nodelay(h, true);
            }
            stack.register(h, APP_TOKEN, Interest::READABLE | Interest::WRITABLE).expect("just accepted");
            self.conns.insert(h, new());
            self.fresh.push(h);
            self.accepted += 1;
        }
    }

    /// Take in connection `h`, moved here from another shard with its
    /// state: registered and driven this turn, like one just accepted.
    fn adopt(&mut self, stack: &mut Stack, h: TcpHandle, state: T) {
        stack.register(h, APP_TOKEN, Interest::READABLE | Interest::WRITABLE).expect("just moved in");
        self.conns.insert(h, state);
        self.fresh.push(h);
    }

    /// Let go of connection `h` (moving to another shard): its state.
    fn release(&mut self, h: TcpHandle) -> Option<T> {
        if let Some(policy) = &mut self.policy {
            policy.forget(h);
        }
        self.conns.remove(&h)
    }

    /// Drive the connections this server owns that have events, then the fresh ones,
    /// then close those whose wait ran out (with a policy). `drive` returns
    /// what the connection waits for now, or `None` when it is finished
    /// with (the handle was closed or aborted by it); its state is then dropped.
    fn drive(
        &mut self,
        stack: &mut Stack,
        now: Instant,
        events: &[Event],
        mut drive: impl FnMut(&mut Stack, TcpHandle, &mut T) -> Option<Phase>,
    ) {
        let ready = events.iter().filter_map(|e| match e.socket {
            Socket::Tcp(h) => Some(h),
            _ => None,
        });
        for h in ready.chain(self.fresh.iter().copied()) {
            let Some(state) = self.conns.get_mut(&h) else { continue };
            match (drive(stack, h, state), &mut self.policy) {
                (Some(phase), Some(policy)) => policy.update(h, now, phase),
                (Some(_), None) => {}
                (None, policy) => {
                    self.conns.remove(&h);
                    if let Some(policy) = policy {
                        policy.forget(h);
                    }
                }
            }
        }
        self.fresh.clear();
        if let Some(policy) = &mut self.policy {
            let closed = &mut self.closed;
            policy.expire(stack, now, |h| closed.push(h));
            for h in self.closed.drain(..) {
                self.conns.remove(&h);
            }
        }
    }
}
