//! The stack's TCP: the connection table, listening ports, and the socket
//! API on [`Stack`].
//!
//! The per-connection engine lives in [`crate::tcp`]; this file is the glue
//! that makes it a stack:
//! - arriving segments are demultiplexed by a hash of the 4-tuple, and SYNs
//!   by listening port: O(1) per segment, whatever the number of
//!   connections;
//! - every connection's earliest deadline sits in one [`TimerWheel`], so
//!   timer work is proportional to the timers that fire;
//! - connections the application wrote to go on a transmit list, and
//!   registered ones that became ready on a ready list, so neither transmit
//!   nor `poll_events` ever scans the table.
//!
//! A segment is answered in place: after `on_segment`, the connection's
//! output (its ACK, and data the window now allows) is written straight into
//! the device's transmit queue, the payload copied once from the send buffer.
//!
//! By concern: `table` (slots, handles, TIME-WAIT records, the bookkeeping
//! after every event), `demux` (a segment or an ICMP error to its
//! connection, listener or TIME-WAIT record), `output` (segments out,
//! timers, the transmit list), `calls` (the socket API), `events`
//! (readiness and `poll_events`) and `stats` (monitoring).

mod calls;
mod demux;
mod events;
mod moving;
mod output;
mod stats;
mod table;

pub use calls::{ConnectError, ListenError};
pub use moving::{MoveError, MovedConnection};

use crate::hash::KeyedMap;
use crate::readiness::Watch;
use crate::tcp::{BufferPool, Connection, FourTuple, Listener, TcpConfig, TimeWait};
use crate::time::Instant;
use crate::timer::TimerWheel;
use demux::Demux;
use std::collections::VecDeque;
use std::sync::Arc;
use table::Slots;

/// The fixed TCP header; options come out of the payload room.
const TCP_HEADER_LEN: usize = 20;

/// A TCP connection owned by the application.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct TcpHandle {
    index: u32,
    generation: u32,
}

/// Where a passively opened connection stands towards its listener.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Child {
    /// Not a listener's child, or already accepted.
    None,
    /// SYN-RECEIVED, counted in the listener's half-open total.
    HalfOpen(u16),
    /// Established and waiting in the listener's accept queue.
    Queued(u16),
}

#[derive(Debug)]
struct Slot {
    conn: Connection,
    generation: u32,
    child: Child,
    /// The application closed its handle; the slot goes when the
    /// connection reaches CLOSED.
    orphan: bool,
    /// Reached CLOSED while the application still holds the handle: out of
    /// the demultiplexing table, kept so the application can read why.
    dead: bool,
    on_tx_list: bool,
    /// Registered for events with [`Stack::register`].
    watch: Watch,
}

#[derive(Debug)]
struct ListenEntry {
    listener: Listener,
    accept_queue: VecDeque<u32>,
    watch: Watch,
}

#[derive(Debug)]
pub(crate) struct TcpSockets {
    cfg: Arc<TcpConfig>,
    /// Every connection's send and receive bytes (see `tcp::BufferPool`).
    pool: BufferPool,
    /// When the pool next has storage to give back.
    pool_trim_due: Option<Instant>,
    secret: [u8; 16],
    syn_cookies: bool,
    max_connections: usize,
    slots: Slots,
    /// Generations survive their slot so a stale handle never matches.
    generations: Vec<u32>,
    free: Vec<u32>,
    by_tuple: Demux,
    listeners: KeyedMap<u16, ListenEntry>,
    timers: TimerWheel,
    fired: Vec<u32>,
    tx_list: VecDeque<u32>,
    /// Registered connections with news for `poll_events`.
    events: VecDeque<u32>,
    /// Registered listeners with a new connection to accept.
    listener_events: VecDeque<u16>,
    next_ephemeral: u32,
    live: usize,
    /// Connections in TIME-WAIT that the application let go of, as compact
    /// records (`tcp::TimeWait`) with their own table and timer wheel.
    time_wait: Vec<Option<TimeWait>>,
    tw_free: Vec<u32>,
    tw_by_tuple: KeyedMap<FourTuple, u32>,
    tw_timers: TimerWheel,
    /// Retransmissions of connections already freed, so that
    /// [`Stack::tcp_states`] reports a total that never goes down.
    freed_retransmits: u64,
}
