//! The TCP socket calls on [`Stack`]: listen, accept, connect, send,
//! receive, shutdown, close.

use super::events::readiness_of;
use super::{Child, ListenEntry, TcpHandle};
use crate::readiness::{Readiness, Watch};
use crate::stack::Stack;
use crate::tcp::{self, BufferSizes, Connection, FourTuple, Listener, RecvError, SendError, State};
use crate::time::Instant;
use std::collections::VecDeque;
use std::net::{IpAddr, SocketAddr};

/// RFC 6056's suggested ephemeral range (also IANA's dynamic ports).
const EPHEMERAL: core::ops::RangeInclusive<u16> = 49152..=65535;

/// Why a listen failed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ListenError {
    /// Another listener holds the port.
    AddrInUse(u16),
    /// Port 0 cannot be listened on.
    InvalidPort,
}

/// Why a connect failed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ConnectError {
    /// Every ephemeral port towards that destination is in use.
    NoFreePort,
    /// The connection table is at `tcp_max_connections`.
    TableFull,
    /// Port 0, or an address that is not unicast.
    InvalidAddress,
    /// No address of that IP version to connect from (IPv6 not enabled, or
    /// its addresses still tentative).
    NoSourceAddress,
}

impl core::fmt::Display for ListenError {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match self {
            ListenError::AddrInUse(p) => write!(f, "TCP port {p} already has a listener"),
            ListenError::InvalidPort => f.write_str("cannot listen on TCP port 0"),
        }
    }
}

impl std::error::Error for ListenError {}

impl core::fmt::Display for ConnectError {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match self {
            ConnectError::NoFreePort => f.write_str("no free ephemeral TCP port towards that destination"),
            ConnectError::TableFull => f.write_str("the TCP connection table is full (tcp_max_connections)"),
            ConnectError::InvalidAddress => f.write_str("cannot connect to port 0 or a non-unicast address"),
            ConnectError::NoSourceAddress => {
                f.write_str("no usable address of that IP version to connect from (give one with --ip6)")
            }
        }
    }
}

impl std::error::Error for ConnectError {}

impl Stack {
    /// Listen on `port` with room for `backlog` connections in the SYN queue
    /// and again in the accept queue. Its connections have the stack's
    /// buffer sizes; see [`Stack::tcp_listen_with`].
    pub fn tcp_listen(&mut self, port: u16, backlog: usize) -> Result<(), ListenError> {
        self.tcp_listen_with(port, backlog, BufferSizes::default())
    }

    /// [`Stack::tcp_listen`] whose connections (SYN-cookie ones included)
    /// have the buffer sizes in `buffers` (Linux's `SO_SNDBUF`/`SO_RCVBUF`
    /// set on a listening socket, which its children inherit), each at most
    /// [`Stack::tcp_largest_buffer`]. The receive size also chooses the
    /// window scale the SYN-ACKs offer.
    pub fn tcp_listen_with(&mut self, port: u16, backlog: usize, buffers: BufferSizes) -> Result<(), ListenError> {
        if port == 0 {
            return Err(ListenError::InvalidPort);
        }
        if self.tcp.listeners.contains_key(&port) {
            return Err(ListenError::AddrInUse(port));
        }
        let cfg = self.tcp.config_with(buffers);
        let listener = Listener::new(cfg, backlog.max(1), self.tcp.secret, self.tcp.syn_cookies);
        self.tcp
            .listeners
            .insert(port, ListenEntry { listener, accept_queue: VecDeque::new(), watch: Watch::default() });
        Ok(())
    }

    /// Give a listener's connections opened from now on the buffer sizes
    /// in `buffers` (`None`: the stack's), as [`Stack::tcp_listen_with`]
    /// does: Linux's `SO_SNDBUF`/`SO_RCVBUF` set on a socket already
    /// listening (nginx sets them after `listen`). False if nothing listens
    /// on `port`.
    pub fn tcp_set_listen_buffers(&mut self, port: u16, buffers: BufferSizes) -> bool {
        let cfg = self.tcp.config_with(buffers);
        let Some(entry) = self.tcp.listeners.get_mut(&port) else { return false };
        entry.listener.set_config(cfg);
        true
    }

    /// Stop listening; connections not yet accepted are reset.
    pub fn tcp_unlisten(&mut self, port: u16) {
        if let Some(entry) = self.tcp.listeners.remove(&port) {
            for index in entry.accept_queue {
                if let Some(slot) = self.tcp.slots[index as usize].as_mut() {
                    slot.child = Child::None;
                    slot.orphan = true;
                    slot.conn.abort();
                    self.tcp.mark_tx(index);
                }
            }
        }
    }

    /// The next established connection on a listening port. An empty
    /// accept queue re-arms the listener's READABLE event.
    pub fn tcp_accept(&mut self, port: u16) -> Option<TcpHandle> {
        let entry = self.tcp.listeners.get_mut(&port)?;
        let Some(index) = entry.accept_queue.pop_front() else {
            entry.watch.lower(Readiness::EMPTY);
            return None;
        };
        entry.listener.accepted();
        let slot = self.tcp.slots[index as usize].as_mut()?;
        slot.child = Child::None;
        Some(self.tcp.handle(index))
    }

    /// Open a connection to `remote` from a random ephemeral port (RFC 6056).
    /// The SYN leaves on the next poll. The connection has the stack's
    /// buffer sizes; see [`Stack::tcp_connect_with`].
    pub fn tcp_connect(&mut self, now: Instant, remote: impl Into<SocketAddr>) -> Result<TcpHandle, ConnectError> {
        self.tcp_connect_with(now, remote, BufferSizes::default())
    }

    /// [`Stack::tcp_connect`] with the buffer sizes in `buffers` (Linux's
    /// `SO_SNDBUF`/`SO_RCVBUF` set before `connect`), each at most
    /// [`Stack::tcp_largest_buffer`]. The receive size also chooses the
    /// window scale the SYN offers.
    pub fn tcp_connect_with(
        &mut self,
        now: Instant,
        remote: impl Into<SocketAddr>,
        buffers: BufferSizes,
    ) -> Result<TcpHandle, ConnectError> {
        let remote = remote.into();
        let (remote_addr, remote_port) = (remote.ip(), remote.port());
        let unicast = match remote_addr {
            IpAddr::V4(a) => !(a.is_broadcast() || a.is_multicast() || a.is_unspecified()),
            IpAddr::V6(a) => !(a.is_multicast() || a.is_unspecified()),
        };
        if remote_port == 0 || !unicast {
            return Err(ConnectError::InvalidAddress);
        }
        if self.tcp.live >= self.tcp.max_connections {
            return Err(ConnectError::TableFull);
        }
        let local_addr = match remote_addr {
            IpAddr::V4(_) => IpAddr::V4(self.iface.cfg.ipv4.addr),
            IpAddr::V6(dst) => IpAddr::V6(self.iface.ipv6_source(dst).ok_or(ConnectError::NoSourceAddress)?),
        };
        let home = self.shard.as_ref();
        let tcp = &mut self.tcp;
        let (by_tuple, listeners, tw) = (&tcp.by_tuple, &tcp.listeners, &tcp.tw_by_tuple);
        let local_port = tcp::ephemeral_port(
            &tcp.secret,
            local_addr,
            remote_addr,
            remote_port,
            EPHEMERAL,
            &mut tcp.next_ephemeral,
            |p| {
                let t = FourTuple { local_addr, local_port: p, remote_addr, remote_port };
                !listeners.contains_key(&p)
                    && !by_tuple.contains_key(&t)
                    && !tw.contains_key(&t)
                    && home.is_none_or(|h| match (local_addr, remote_addr) {
                        (IpAddr::V4(l), IpAddr::V4(r)) => h.is_home(l, p, r, remote_port),
                        _ => true,
                    })
            },
        )
        .ok_or(ConnectError::NoFreePort)?;
        let tuple = FourTuple { local_addr, local_port, remote_addr, remote_port };
        let iss = tcp::isn(&tcp.secret, &tuple, now);
        let mut conn = Connection::connect(tuple, tcp.config_with(buffers), iss, now);
        conn.set_ts_offset(tcp::ts_offset(&tcp.secret, local_addr, remote_addr));
        let index = tcp.insert(conn, Child::None);
        tcp.mark_tx(index);
        Ok(tcp.handle(index))
    }

    /// Queue data to send; returns how much fit in the send buffer. A full
    /// buffer re-arms the WRITABLE event.
    pub fn tcp_send(&mut self, h: TcpHandle, data: &[u8]) -> Result<usize, SendError> {
        let tcp = &mut self.tcp;
        let slot = tcp
            .slots
            .get_mut(h.index as usize)
            .and_then(Option::as_mut)
            .filter(|s| s.generation == h.generation && !s.orphan)
            .ok_or(SendError::Closed(None))?;
        let sent = slot.conn.send(data, &mut tcp.pool);
        // Full, or took less than offered (the buffer or the stack's buffer
        // pool ran out): space coming back is news.
        if !matches!(sent, Ok(n) if n == data.len()) {
            slot.watch.lower(readiness_of(&slot.conn) & !Readiness::WRITABLE);
        }
        let n = sent?;
        self.tcp.mark_tx(h.index);
        Ok(n)
    }

    /// Read received data; `Ok(0)` is the end of the stream. Finding nothing
    /// to read re-arms the READABLE event.
    pub fn tcp_recv(&mut self, h: TcpHandle, buf: &mut [u8]) -> Result<usize, RecvError> {
        let tcp = &mut self.tcp;
        let slot = tcp
            .slots
            .get_mut(h.index as usize)
            .and_then(Option::as_mut)
            .filter(|s| s.generation == h.generation && !s.orphan)
            .ok_or(RecvError::Closed)?;
        let read = slot.conn.recv(buf, &mut tcp.pool);
        if read == Err(RecvError::WouldBlock) {
            slot.watch.lower(readiness_of(&slot.conn));
        }
        let n = read?;
        // Reading opens the window: the engine decides whether that is news.
        self.tcp.mark_tx(h.index);
        Ok(n)
    }

    /// Send a FIN after the queued data; reading goes on.
    pub fn tcp_shutdown(&mut self, h: TcpHandle) -> Result<(), SendError> {
        let slot = self.tcp.slot_mut(h).ok_or(SendError::Closed(None))?;
        slot.conn.shutdown_write()?;
        self.tcp.mark_tx(h.index);
        Ok(())
    }

    /// Close the handle. The connection finishes in the background (FIN,
    /// TIME-WAIT); the handle is invalid from now on.
    pub fn tcp_close(&mut self, h: TcpHandle) {
        self.release_handle(h, Connection::close);
    }

    /// Reset the connection and release the handle.
    pub fn tcp_abort(&mut self, h: TcpHandle) {
        self.release_handle(h, Connection::abort);
    }

    /// The application lets go of `h` after `end` (close or abort): a dead
    /// connection goes at once, a live one is orphaned to finish on its own.
    fn release_handle(&mut self, h: TcpHandle, end: fn(&mut Connection)) {
        let Some(slot) = self.tcp.slot_mut(h) else { return };
        if slot.dead {
            self.tcp.remove(h.index);
            return;
        }
        end(&mut slot.conn);
        slot.orphan = true;
        self.tcp.mark_tx(h.index);
    }

    /// The largest send or receive buffer a socket can have: 16 chunks of
    /// the stack's buffer pool, whose chunk size follows the configured
    /// sizes (`TcpConfig::buffer_chunk_size`); so at least the larger of
    /// `TcpConfig::send_buffer_size` and `recv_buffer_size`.
    pub fn tcp_largest_buffer(&self) -> usize {
        self.tcp.pool.largest_buffer()
    }

    /// The connection behind a handle, for its state, readiness and statistics.
    pub fn tcp_connection(&self, h: TcpHandle) -> Option<&Connection> {
        self.tcp.slot(h).map(|s| &s.conn)
    }

    /// The connection's state (`State::Closed` once it ended).
    pub fn tcp_state(&self, h: TcpHandle) -> Option<State> {
        self.tcp_connection(h).map(Connection::state)
    }

    /// `SO_SNDBUF` on an open connection: a send buffer of `bytes` (at
    /// most [`Stack::tcp_largest_buffer`]) if its current one holds nothing
    /// unacknowledged (see [`Connection::set_send_buffer_size`]); false,
    /// and nothing changed, if it does or `h` is stale. Room that this makes
    /// is reported as WRITABLE.
    pub fn tcp_set_send_buffer_size(&mut self, h: TcpHandle, bytes: usize) -> bool {
        let tcp = &mut self.tcp;
        let slot = tcp.slots.get_mut(h.index as usize).and_then(Option::as_mut);
        let Some(slot) = slot.filter(|s| s.generation == h.generation && !s.orphan) else { return false };
        if !slot.conn.set_send_buffer_size(bytes, &mut tcp.pool) {
            return false;
        }
        tcp.mark_ready(h.index);
        true
    }

    /// Turn Nagle's algorithm off (like TCP_NODELAY) or back on.
    pub fn tcp_set_nodelay(&mut self, h: TcpHandle, nodelay: bool) {
        if let Some(s) = self.tcp.slot_mut(h) {
            s.conn.set_nodelay(nodelay);
            self.tcp.mark_tx(h.index);
        }
    }
}
