//! Moving a connection from one stack to another: the shards of one
//! address each run a stack, and an application may hand a connection it
//! accepted (or opened) to another shard, e.g. to balance long-lived
//! connections over the cores.
//!
//! [`Stack::tcp_export`] takes the connection out of this stack's tables
//! whole: its state, its timers (deadlines, which are data) and its
//! buffered bytes, copied out of this stack's buffer pool (each stack has
//! its own). [`Stack::tcp_import`] puts it into another stack's tables and
//! pool, re-arms its timers and queues whatever it owes the peer (an ACK,
//! data the window allows). The two stacks must share one clock (their
//! `now`s are the same instants) and one configuration.
//!
//! Frames of the moved flow that still reach the old stack must be passed
//! to the new one (the device's steering updated, or the frames handed
//! over): the old stack no longer knows the connection and would answer
//! them with a reset.

use super::{Child, TcpHandle};
use crate::stack::Stack;
use crate::tcp::{Connection, DetachedBuffers, FourTuple};

/// An established connection between two stacks, with everything it holds.
#[derive(Debug)]
pub struct MovedConnection {
    /// Boxed: a move passes a pointer through the shards' rings.
    conn: Box<Connection>,
    buffers: DetachedBuffers,
}

impl MovedConnection {
    /// The connection's addresses and ports.
    pub fn four_tuple(&self) -> FourTuple {
        self.conn.four_tuple()
    }

    /// The connection itself (its state and statistics), to look at.
    pub fn connection(&self) -> &Connection {
        &self.conn
    }
}

/// Why a connection could not be moved.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum MoveError {
    /// The handle names no connection the application holds.
    NoSuchConnection,
    /// The connection has not been accepted yet, or has ended.
    NotMovable,
    /// The receiving stack's table is at `tcp_max_connections`.
    TableFull,
    /// The receiving stack already has a connection (or a TIME-WAIT
    /// record) with the same addresses and ports.
    InUse,
    /// The receiving stack's buffer pool cannot hold the connection's bytes now.
    NoBuffer,
}

impl core::fmt::Display for MoveError {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.write_str(match self {
            MoveError::NoSuchConnection => "no such TCP connection",
            MoveError::NotMovable => "the connection is not established (or not yet accepted): it cannot move",
            MoveError::TableFull => "the TCP connection table is full (tcp_max_connections)",
            MoveError::InUse => "a connection with the same addresses and ports is already there",
            MoveError::NoBuffer => "the TCP buffer pool is too full to take the connection's bytes (tcp buffers)",
        })
    }
}

impl std::error::Error for MoveError {}

impl Stack {
    /// Take connection `h` out of this stack, to [`Stack::tcp_import`] it
    /// into another; the handle is invalid from now on. Only a connection
    /// the application holds (accepted, or opened by it) and that is
    /// synchronized (past the handshake, not yet closed) moves. Its
    /// registration for events does not move: register it again there.
    pub fn tcp_export(&mut self, h: TcpHandle) -> Result<MovedConnection, MoveError> {
        let tcp = &mut self.tcp;
        tcp.slot(h).ok_or(MoveError::NoSuchConnection)?;
        let slot = tcp.slots[h.index as usize].as_mut().expect("checked");
        if slot.dead || slot.child != Child::None || !slot.conn.state().is_synchronized() || slot.conn.is_closed() {
            return Err(MoveError::NotMovable);
        }
        let buffers = slot.conn.detach_buffers(&mut tcp.pool);
        let conn = tcp.take(h.index).expect("checked: the slot is there");
        Ok(MovedConnection { conn: Box::new(conn), buffers })
    }

    /// Put a connection another stack exported into this one: its bytes
    /// into this stack's pool, its timers armed, what it owes the peer
    /// queued for the next poll. Returns the new handle, or the connection
    /// back (unchanged) with why it could not come in.
    pub fn tcp_import(&mut self, moved: MovedConnection) -> Result<TcpHandle, (MoveError, MovedConnection)> {
        let tcp = &mut self.tcp;
        let tuple = moved.conn.four_tuple();
        if tcp.live >= tcp.max_connections {
            return Err((MoveError::TableFull, moved));
        }
        if tcp.by_tuple.contains_key(&tuple) || tcp.tw_by_tuple.contains_key(&tuple) {
            return Err((MoveError::InUse, moved));
        }
        let MovedConnection { mut conn, buffers } = moved;
        if let Err(buffers) = conn.attach_buffers(buffers, &mut tcp.pool) {
            return Err((MoveError::NoBuffer, MovedConnection { conn, buffers }));
        }
        let index = tcp.insert(*conn, Child::None);
        tcp.mark_tx(index);
        tcp.settle(index);
        Ok(tcp.handle(index))
    }
}

impl Stack {
    /// Whether this stack has a connection (or a TIME-WAIT record) with
    /// these addresses and ports: where a sharded runtime learns that a
    /// connection it took in has ended, so frames of its flow need no
    /// longer be steered to it.
    pub fn tcp_holds(&self, tuple: &FourTuple) -> bool {
        self.tcp.by_tuple.contains_key(tuple) || self.tcp.tw_by_tuple.contains_key(tuple)
    }
}
