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

mod http_client;
mod http_server;
pub mod iperf;
mod tcp_discard;
mod tcp_echo;
mod udp_echo;

pub use http_client::{HttpClient, HttpClientError, HttpResponse};
pub use http_server::{HttpServer, HttpServerConfig, HttpStats, Site, SiteError};
pub use tcp_discard::TcpDiscard;
pub use tcp_echo::TcpEcho;
pub use udp_echo::UdpEcho;

use std::collections::HashMap;
use ustack_core::{Event, Interest, ListenError, Socket, Stack, TcpHandle};

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
        })
    }

    /// When `events` say the listener has connections waiting, take them
    /// all, up to the bound; the rest are reset. Each is registered for
    /// reading and writing. `nodelay` turns Nagle off for request/response
    /// protocols, whose last small segment would otherwise wait for the
    /// peer's delayed ACK.
    fn accept(&mut self, stack: &mut Stack, events: &[Event], nodelay: bool, mut new: impl FnMut() -> T) {
        self.fresh.clear();
        if !events.iter().any(|e| e.socket == Socket::Listener(self.port)) {
            return;
        }
        while let Some(h) = stack.tcp_accept(self.port) {
            if self.conns.len() >= self.max_connections {
                stack.tcp_abort(h);
                self.refused += 1;
                continue;
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

    /// Drive the connections this server owns that have events, then the
    /// fresh ones. `drive` returns false when the connection is finished
    /// with (the handle was closed or aborted by it); its state is then
    /// dropped.
    fn drive(
        &mut self,
        stack: &mut Stack,
        events: &[Event],
        mut drive: impl FnMut(&mut Stack, TcpHandle, &mut T) -> bool,
    ) {
        let ready = events.iter().filter_map(|e| match e.socket {
            Socket::Tcp(h) => Some(h),
            _ => None,
        });
        for h in ready.chain(self.fresh.iter().copied()) {
            let Some(state) = self.conns.get_mut(&h) else { continue };
            if !drive(stack, h, state) {
                self.conns.remove(&h);
            }
        }
        self.fresh.clear();
    }
}
