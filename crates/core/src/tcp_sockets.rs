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

use crate::hash::{KeyedMap, KeyedState};
use crate::phy::{RxMeta, TxQueue};
use crate::readiness::{drain_ready, Event, Interest, Readiness, Socket, Watch};
use crate::stack::{Iface, Stack};
use crate::tcp::{
    self, BufferPool, Connection, DropReason, Flags, FourTuple, ListenOutcome, Listener, Options, RecvError, Segment,
    SendError, SeqNumber, State, TcpConfig, TimeWait, TimeWaitOutcome,
};
use crate::time::Instant;
use crate::timer::TimerWheel;
use std::collections::VecDeque;
use std::net::SocketAddrV4;
use std::sync::Arc;
use ustack_wire::{checksum, ChecksumMode, IpProtocol, Ipv4Repr, TcpPacket, TcpRepr, IPV4_HEADER_LEN};

/// RFC 6056's suggested ephemeral range (also IANA's dynamic ports).
const EPHEMERAL: core::ops::RangeInclusive<u16> = 49152..=65535;
/// The fixed TCP header; options come out of the payload room.
const TCP_HEADER_LEN: usize = 20;

/// A TCP connection owned by the application.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct TcpHandle {
    index: u32,
    generation: u32,
}

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
        }
    }
}

impl std::error::Error for ConnectError {}

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

/// Slots in pages of `SLOT_PAGE`: the table grows a page at a time and
/// never moves (or doubles) what it holds, so its overhead over the live
/// connections is at most one page.
const SLOT_PAGE: usize = 1024;

#[derive(Debug, Default)]
struct Slots {
    /// Fixed-size pages: indexing within one needs no bounds check, and
    /// every packet and socket call looks a slot up.
    pages: Vec<Box<[Option<Slot>; SLOT_PAGE]>>,
    len: usize,
}

impl Slots {
    fn len(&self) -> usize {
        self.len
    }
    /// Appends an empty slot and returns its index.
    fn push_empty(&mut self) -> usize {
        if self.len == self.pages.len() * SLOT_PAGE {
            let page: Box<[Option<Slot>]> = (0..SLOT_PAGE).map(|_| None).collect();
            self.pages.push(page.try_into().expect("SLOT_PAGE slots"));
        }
        self.len += 1;
        self.len - 1
    }
    // Slots past `len` in the last page are `None`, like a freed slot, so
    // the page lookup alone bounds the index.
    fn get(&self, i: usize) -> Option<&Option<Slot>> {
        self.pages.get(i / SLOT_PAGE).map(|p| &p[i % SLOT_PAGE])
    }
    fn get_mut(&mut self, i: usize) -> Option<&mut Option<Slot>> {
        self.pages.get_mut(i / SLOT_PAGE).map(|p| &mut p[i % SLOT_PAGE])
    }
}

impl core::ops::Index<usize> for Slots {
    type Output = Option<Slot>;
    fn index(&self, i: usize) -> &Option<Slot> {
        self.get(i).expect("slot index in range")
    }
}

impl core::ops::IndexMut<usize> for Slots {
    fn index_mut(&mut self, i: usize) -> &mut Option<Slot> {
        self.get_mut(i).expect("slot index in range")
    }
}

/// The connection table's 4-tuple index, remembering its last hit: a flow
/// sends segment after segment to one connection, and comparing 12 bytes
/// costs less than hashing them and probing. Any removal forgets the hit.
#[derive(Debug)]
struct Demux {
    map: KeyedMap<FourTuple, u32>,
    last: Option<(FourTuple, u32)>,
}

impl Demux {
    fn lookup(&mut self, tuple: &FourTuple) -> Option<u32> {
        if let Some((last, index)) = self.last {
            if last == *tuple {
                return Some(index);
            }
        }
        let index = *self.map.get(tuple)?;
        self.last = Some((*tuple, index));
        Some(index)
    }
    fn contains_key(&self, tuple: &FourTuple) -> bool {
        self.map.contains_key(tuple)
    }
    fn insert(&mut self, tuple: FourTuple, index: u32) {
        self.last = None;
        self.map.insert(tuple, index);
    }
    fn remove(&mut self, tuple: &FourTuple) {
        self.last = None;
        self.map.remove(tuple);
    }
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

impl TcpSockets {
    pub(crate) fn new(
        cfg: TcpConfig,
        syn_cookies: bool,
        max_connections: usize,
        secret: [u8; 16],
        hash_key: u64,
    ) -> TcpSockets {
        TcpSockets {
            pool: BufferPool::for_config(&cfg),
            pool_trim_due: None,
            cfg: Arc::new(cfg),
            secret,
            syn_cookies,
            max_connections,
            slots: Slots::default(),
            generations: Vec::new(),
            free: Vec::new(),
            by_tuple: Demux { map: KeyedMap::with_hasher(KeyedState::new(hash_key)), last: None },
            listeners: KeyedMap::with_hasher(KeyedState::new(hash_key.rotate_left(17))),
            timers: TimerWheel::new(),
            fired: Vec::new(),
            tx_list: VecDeque::new(),
            events: VecDeque::new(),
            listener_events: VecDeque::new(),
            next_ephemeral: 0,
            live: 0,
            time_wait: Vec::new(),
            tw_free: Vec::new(),
            tw_by_tuple: KeyedMap::with_hasher(KeyedState::new(hash_key.rotate_left(33))),
            tw_timers: TimerWheel::new(),
            freed_retransmits: 0,
        }
    }

    pub(crate) fn poll_timeout(&self) -> Option<Instant> {
        let t = match (self.timers.poll_timeout(), self.tw_timers.poll_timeout()) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        };
        match (t, self.pool_trim_due) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }

    /// Give spare buffer storage back after a load (bounded work; see
    /// `BufferPool::trim`), and remember when to go on.
    pub(crate) fn trim_pool(&mut self, now: Instant) {
        self.pool_trim_due = self.pool.trim(now);
    }

    /// Replaces a connection in TIME-WAIT by its compact record.
    fn insert_time_wait(&mut self, tw: TimeWait) {
        let index = match self.tw_free.pop() {
            Some(i) => i,
            None => {
                self.time_wait.push(None);
                (self.time_wait.len() - 1) as u32
            }
        };
        self.tw_by_tuple.insert(tw.four_tuple(), index);
        self.tw_timers.set(index, Some(tw.expires()));
        self.time_wait[index as usize] = Some(tw);
        self.live += 1;
    }

    fn remove_time_wait(&mut self, index: u32) {
        if let Some(tw) = self.time_wait[index as usize].take() {
            self.tw_by_tuple.remove(&tw.four_tuple());
            self.tw_timers.set(index, None);
            self.tw_free.push(index);
            self.live -= 1;
        }
    }

    fn insert(&mut self, conn: Connection, child: Child) -> u32 {
        let tuple = conn.four_tuple();
        let index = match self.free.pop() {
            Some(i) => i,
            None => {
                self.slots.push_empty();
                self.generations.push(0);
                (self.slots.len() - 1) as u32
            }
        };
        let generation = self.generations[index as usize];
        self.slots[index as usize] = Some(Slot {
            conn,
            generation,
            child,
            orphan: false,
            dead: false,
            on_tx_list: false,
            watch: Watch::default(),
        });
        self.by_tuple.insert(tuple, index);
        self.live += 1;
        index
    }

    /// Free a slot for good.
    fn remove(&mut self, index: u32) {
        if let Some(mut slot) = self.slots[index as usize].take() {
            slot.conn.release_buffers(&mut self.pool);
            self.freed_retransmits += slot.conn.stats().retransmits;
            if !slot.dead {
                self.by_tuple.remove(&slot.conn.four_tuple());
                self.live -= 1;
            }
            self.timers.set(index, None);
            self.generations[index as usize] = self.generations[index as usize].wrapping_add(1);
            self.free.push(index);
        }
    }

    fn slot(&self, h: TcpHandle) -> Option<&Slot> {
        self.slots.get(h.index as usize)?.as_ref().filter(|s| s.generation == h.generation && !s.orphan)
    }

    fn slot_mut(&mut self, h: TcpHandle) -> Option<&mut Slot> {
        self.slots.get_mut(h.index as usize)?.as_mut().filter(|s| s.generation == h.generation && !s.orphan)
    }

    fn handle(&self, index: u32) -> TcpHandle {
        TcpHandle { index, generation: self.generations[index as usize] }
    }

    fn mark_tx(&mut self, index: u32) {
        if let Some(s) = self.slots[index as usize].as_mut() {
            if !s.on_tx_list {
                s.on_tx_list = true;
                self.tx_list.push_back(index);
            }
        }
    }

    fn mark_ready(&mut self, index: u32) {
        self.mark_ready_with(index, false);
    }

    /// Something happened to a connection: queue it for `poll_events` if
    /// it is registered and that is news (a condition became true, or
    /// `new_data` arrived).
    fn mark_ready_with(&mut self, index: u32, new_data: bool) {
        let Some(s) = self.slots[index as usize].as_mut() else { return };
        if s.orphan || s.child != Child::None {
            return;
        }
        if s.watch.notify(readiness_of(&s.conn), new_data) {
            self.events.push_back(index);
        }
    }

    fn mark_listener(&mut self, port: u16) {
        if let Some(l) = self.listeners.get_mut(&port) {
            if l.watch.notify(Readiness::READABLE, true) {
                self.listener_events.push_back(port);
            }
        }
    }

    /// Register a connection or a listener (see [`Stack::register`]).
    pub(crate) fn register(&mut self, socket: Socket, token: u64, interest: Interest) -> bool {
        match socket {
            Socket::Tcp(h) => {
                let Some(slot) = self.slot_mut(h) else { return false };
                if slot.watch.register(token, interest, readiness_of(&slot.conn)) {
                    self.events.push_back(h.index);
                }
                true
            }
            Socket::Listener(port) => {
                let Some(l) = self.listeners.get_mut(&port) else { return false };
                if l.watch.register(token, interest, listener_readiness(l)) {
                    self.listener_events.push_back(port);
                }
                true
            }
            _ => false,
        }
    }

    /// Stop reporting a connection or a listener.
    pub(crate) fn deregister(&mut self, socket: Socket) {
        match socket {
            Socket::Tcp(h) => {
                if let Some(slot) = self.slot_mut(h) {
                    slot.watch.registration = None;
                }
            }
            Socket::Listener(port) => {
                if let Some(l) = self.listeners.get_mut(&port) {
                    l.watch.registration = None;
                }
            }
            _ => {}
        }
    }

    pub(crate) fn has_events(&self) -> bool {
        !self.events.is_empty() || !self.listener_events.is_empty()
    }

    /// Move up to `max` events of listeners and connections into `out`.
    pub(crate) fn poll_events(&mut self, out: &mut Vec<Event>, max: usize, c: &mut crate::counters::Counters) -> usize {
        let listeners = &mut self.listeners;
        let n = drain_ready(&mut self.listener_events, out, max, c, |port| {
            let l = listeners.get_mut(&port)?;
            let now = listener_readiness(l);
            l.watch.take(now, Socket::Listener(port))
        });
        let slots = &mut self.slots;
        n + drain_ready(&mut self.events, out, max - n, c, |index| {
            let slot = slots[index as usize].as_mut()?;
            if slot.orphan {
                slot.watch.queued = false;
                return None;
            }
            let h = TcpHandle { index, generation: slot.generation };
            slot.watch.take(readiness_of(&slot.conn), Socket::Tcp(h))
        })
    }

    /// Bookkeeping after anything happened to a connection: its timer, its
    /// listener's counts, and its removal once CLOSED.
    fn settle(&mut self, index: u32) {
        let Some(slot) = self.slots[index as usize].as_mut() else { return };
        if slot.orphan && slot.child == Child::None {
            // Nobody will read this connection again: TIME-WAIT needs only
            // the compact record.
            if let Some(tw) = slot.conn.time_wait() {
                self.remove(index);
                self.insert_time_wait(tw);
                return;
            }
        }
        if !slot.conn.is_closed() {
            let deadline = slot.conn.poll_timeout();
            self.timers.set(index, deadline);
            return;
        }
        match slot.child {
            Child::HalfOpen(port) => {
                if let Some(l) = self.listeners.get_mut(&port) {
                    l.listener.half_open_gone();
                }
                self.remove(index);
            }
            // A queued child that died stays queued: accept hands it out and
            // the application reads the error, as with BSD sockets.
            Child::Queued(_) | Child::None if !slot.orphan => {
                if !slot.dead {
                    slot.dead = true;
                    let tuple = slot.conn.four_tuple();
                    self.by_tuple.remove(&tuple);
                    self.live -= 1;
                    self.timers.set(index, None);
                    self.mark_ready(index);
                }
            }
            _ => self.remove(index),
        }
    }
}

fn segment_from(repr: &TcpRepr<'_>) -> Segment {
    Segment {
        seq: repr.seq_number,
        ack: repr.ack_number,
        // ACK is said by `ack`; urgent data is not supported.
        flags: repr.flags.without(Flags::ACK | Flags::URG),
        window: repr.window_len,
        options: Options {
            mss: repr.max_seg_size,
            window_scale: repr.window_scale,
            sack_permitted: repr.sack_permitted,
            sack_blocks: repr.sack_ranges,
            timestamp: repr.timestamp,
        },
        payload_len: repr.payload.len(),
    }
}

fn repr_from(seg: &Segment, tuple: &FourTuple) -> TcpRepr<'static> {
    TcpRepr {
        src_port: tuple.local_port,
        dst_port: tuple.remote_port,
        seq_number: seg.seq,
        ack_number: seg.ack,
        // `emit_header` sets ACK from `ack_number`.
        flags: seg.flags,
        window_len: seg.window,
        max_seg_size: seg.options.mss,
        window_scale: seg.options.window_scale,
        sack_permitted: seg.options.sack_permitted,
        sack_ranges: seg.options.sack_blocks,
        timestamp: seg.options.timestamp,
        payload: &[],
    }
}

impl Iface {
    /// Send one TCP segment; its payload (if any) is copied in place by
    /// `payload`. `gso_size` is the payload per segment when `seg` may be a
    /// super-segment for the device to cut.
    fn send_tcp<T: TxQueue>(
        &mut self,
        now: Instant,
        tx: &mut T,
        tuple: &FourTuple,
        seg: &Segment,
        gso_size: Option<usize>,
        payload: impl FnOnce(&mut [u8]),
    ) -> bool {
        let repr = repr_from(seg, tuple);
        let header_len = repr.header_len();
        let (src, dst) = (tuple.local_addr, tuple.remote_addr);
        self.counters.tcp_tx += 1;
        if seg.flags.rst() {
            self.counters.tcp_rst_sent += 1;
        }
        let l4_len = header_len + seg.payload_len;
        let gso = gso_size.filter(|&size| seg.payload_len > size).map(|size| (size, header_len));
        self.send_ipv4_offload(now, tx, dst, IpProtocol::Tcp, l4_len, gso, |b, partial| {
            repr.emit_header(&mut TcpPacket::new_unchecked(&mut *b), seg.payload_len);
            payload(&mut b[header_len..]);
            let mut packet = TcpPacket::new_unchecked(&mut *b);
            if partial {
                // The device sums the segment; we give it the pseudo header.
                let pseudo = checksum::fold(checksum::pseudo_header_v4(src, dst, 6, l4_len as u32));
                packet.set_checksum(pseudo);
            } else {
                packet.fill_checksum(src, dst);
            }
        })
        .is_ok()
    }

    /// Write everything a connection wants to send now.
    fn flush_connection<T: TxQueue>(&mut self, now: Instant, tx: &mut T, conn: &mut Connection, pool: &BufferPool) {
        let tuple = conn.four_tuple();
        let max_payload = self.path_mtu(now, tuple.remote_addr) - IPV4_HEADER_LEN - TCP_HEADER_LEN;
        let tso_payload = self.tso_max.saturating_sub(IPV4_HEADER_LEN + TCP_HEADER_LEN);
        while let Some(seg) = conn.poll_transmit_tso(now, max_payload, tso_payload, pool) {
            let conn = &*conn;
            // The segment size the connection cut by (see `poll_transmit_tso`).
            let gso_size = conn.mss().min(max_payload.saturating_sub(seg.options.wire_len()));
            self.send_tcp(now, tx, &tuple, &seg, Some(gso_size), |b| conn.read_payload(&seg, b, pool));
        }
    }
}

impl Stack {
    /// A believable "fragmentation needed" must quote a segment of a
    /// connection within its window (see `path_mtu`); if so, and `mtu` is
    /// below `current`, the connection shrinks its segments and resends.
    pub(crate) fn tcp_path_mtu<T: TxQueue>(
        &mut self,
        now: Instant,
        tuple: &FourTuple,
        seq: SeqNumber,
        current: usize,
        mtu: usize,
        tx: &mut T,
    ) -> crate::path_mtu::PathMtuOutcome {
        use crate::path_mtu::PathMtuOutcome;
        let Stack { iface, tcp, .. } = self;
        let Some(index) = tcp.by_tuple.lookup(tuple) else { return PathMtuOutcome::NoConnection };
        let slot = tcp.slots[index as usize].as_mut().expect("the table points at live slots");
        if !slot.conn.icmp_seq_acceptable(seq) {
            return PathMtuOutcome::BadSequence;
        }
        if mtu >= current {
            return PathMtuOutcome::NotLower;
        }
        slot.conn.on_path_mtu(mtu - IPV4_HEADER_LEN - TCP_HEADER_LEN);
        // Record the new MTU before the resend reads it.
        iface.path_mtus_lower(now, tuple.remote_addr, mtu);
        iface.flush_connection(now, tx, &mut slot.conn, &tcp.pool);
        tcp.settle(index);
        PathMtuOutcome::Lowered
    }

    pub(crate) fn receive_tcp<T: TxQueue>(&mut self, now: Instant, ip: &Ipv4Repr, l4: &[u8], meta: RxMeta, tx: &mut T) {
        let c = &mut self.iface.counters;
        c.tcp_rx += 1;
        let Ok(packet) = TcpPacket::new_checked(l4) else {
            c.drop_tcp_malformed += 1;
            return;
        };
        let trusted = (meta.csum_verified || meta.csum_partial) && self.iface.cfg.use_device_checksums;
        if !trusted && !packet.verify_checksum(ip.src_addr, ip.dst_addr) {
            c.drop_tcp_checksum += 1;
            return;
        }
        let Ok(repr) = TcpRepr::parse(&packet, ip.src_addr, ip.dst_addr, ChecksumMode::Ignore) else {
            c.drop_tcp_malformed += 1;
            return;
        };
        let seg = segment_from(&repr);
        let tuple = FourTuple {
            local_addr: ip.dst_addr,
            local_port: repr.dst_port,
            remote_addr: ip.src_addr,
            remote_port: repr.src_port,
        };
        let Stack { iface, tcp, .. } = self;
        if let Some(index) = tcp.by_tuple.lookup(&tuple) {
            let slot = tcp.slots[index as usize].as_mut().expect("the table points at live slots");
            let queued_before = slot.conn.recv_queue();
            let outcome = slot.conn.on_segment(now, &seg, repr.payload, &mut tcp.pool);
            let new_data = slot.conn.recv_queue() > queued_before;
            match outcome.dropped {
                Some(reason) => count_drop(&mut iface.counters, reason),
                None => iface.counters.rx_consumed += 1,
            }
            if let Some(rst) = outcome.reply {
                iface.send_tcp(now, tx, &tuple, &rst, None, |_| {});
            }
            iface.flush_connection(now, tx, &mut slot.conn, &tcp.pool);
            if outcome.established {
                iface.counters.tcp_established += 1;
                if let Child::HalfOpen(port) = slot.child {
                    slot.child = Child::Queued(port);
                    match tcp.listeners.get_mut(&port) {
                        Some(l) => {
                            l.listener.child_established();
                            l.accept_queue.push_back(index);
                            tcp.mark_listener(port);
                        }
                        // The listener went away: nobody will accept this.
                        None => {
                            slot.child = Child::None;
                            slot.orphan = true;
                            slot.conn.abort();
                            iface.flush_connection(now, tx, &mut slot.conn, &tcp.pool);
                        }
                    }
                }
            }
            tcp.mark_ready_with(index, new_data);
            tcp.settle(index);
            return;
        }
        let mut reopened = None;
        if let Some(&index) = tcp.tw_by_tuple.get(&tuple) {
            let record = tcp.time_wait[index as usize].as_mut().expect("the table points at live records");
            match record.on_segment(now, &seg, tcp.cfg.time_wait) {
                TimeWaitOutcome::Ignore => {
                    iface.counters.drop_tcp_other += 1;
                    return;
                }
                TimeWaitOutcome::Ack(ack) => {
                    // Answered (a retransmitted FIN, an old SYN or duplicate).
                    iface.counters.rx_consumed += 1;
                    let expires = record.expires();
                    tcp.tw_timers.set(index, Some(expires));
                    iface.send_tcp(now, tx, &tuple, &ack, None, |_| {});
                    return;
                }
                // RFC 6191: a newer SYN takes the 4-tuple over.
                TimeWaitOutcome::Reopen => {
                    reopened = Some(record.snd_nxt);
                    tcp.remove_time_wait(index);
                }
            }
        }
        if let Some(entry) = tcp.listeners.get_mut(&tuple.local_port) {
            if tuple.local_addr == iface.cfg.ipv4.addr {
                let outcome = match reopened {
                    Some(old) => entry.listener.on_reopening_syn(now, tuple, &seg, repr.payload, &mut tcp.pool, old),
                    None => entry.listener.on_segment(now, tuple, &seg, repr.payload, &mut tcp.pool),
                };
                match outcome {
                    ListenOutcome::Drop(reason) => count_drop(&mut iface.counters, reason),
                    ListenOutcome::Reply(reply) => {
                        iface.counters.rx_consumed += 1;
                        iface.send_tcp(now, tx, &tuple, &reply, None, |_| {});
                    }
                    ListenOutcome::HalfOpen(mut conn) => {
                        if tcp.live >= tcp.max_connections {
                            entry.listener.half_open_gone();
                            iface.counters.drop_tcp_table_full += 1;
                            return;
                        }
                        iface.counters.rx_consumed += 1;
                        iface.flush_connection(now, tx, &mut conn, &tcp.pool);
                        let port = tuple.local_port;
                        let index = tcp.insert(conn, Child::HalfOpen(port));
                        tcp.settle(index);
                    }
                    ListenOutcome::Established(mut conn) => {
                        if tcp.live >= tcp.max_connections {
                            conn.release_buffers(&mut tcp.pool);
                            entry.listener.accepted();
                            iface.counters.drop_tcp_table_full += 1;
                            return;
                        }
                        iface.counters.rx_consumed += 1;
                        iface.counters.tcp_established += 1;
                        iface.flush_connection(now, tx, &mut conn, &tcp.pool);
                        let port = tuple.local_port;
                        let index = tcp.insert(conn, Child::Queued(port));
                        if let Some(entry) = tcp.listeners.get_mut(&port) {
                            entry.accept_queue.push_back(index);
                        }
                        tcp.mark_listener(port);
                        tcp.settle(index);
                    }
                }
                return;
            }
        }
        // RFC 9293 §3.10.7.1: a segment for no connection gets a RST, unless
        // it is one.
        iface.counters.drop_tcp_no_socket += 1;
        if let Some(rst) = tcp::reset_for(&seg) {
            iface.send_tcp(now, tx, &tuple, &rst, None, |_| {});
        }
    }

    pub(crate) fn handle_tcp_timeouts<T: TxQueue>(&mut self, now: Instant, tx: &mut T) {
        let Stack { iface, tcp, .. } = self;
        // Most polls have no timer due: leave before borrowing `fired`
        // (`&`, not `&&`: both wheels move their time to `now`).
        if tcp.tw_timers.idle_until(now) & tcp.timers.idle_until(now) {
            return;
        }
        let mut fired = core::mem::take(&mut tcp.fired);
        fired.clear();
        tcp.tw_timers.expire(now, &mut fired);
        for &index in &fired {
            match tcp.time_wait[index as usize].map(|tw| tw.expires()) {
                // "When the time-wait timeout expires, ... delete the TCB".
                Some(at) if at <= now => tcp.remove_time_wait(index),
                Some(at) => tcp.tw_timers.set(index, Some(at)),
                None => {}
            }
        }
        fired.clear();
        tcp.timers.expire(now, &mut fired);
        for &index in &fired {
            let Some(slot) = tcp.slots[index as usize].as_mut() else { continue };
            slot.conn.handle_timeout(now);
            iface.flush_connection(now, tx, &mut slot.conn, &tcp.pool);
            tcp.mark_ready(index);
            tcp.settle(index);
        }
        tcp.fired = fired;
    }

    pub(crate) fn transmit_tcp<T: TxQueue>(&mut self, now: Instant, tx: &mut T) {
        let Stack { iface, tcp, .. } = self;
        while let Some(index) = tcp.tx_list.pop_front() {
            let Some(slot) = tcp.slots[index as usize].as_mut() else { continue };
            slot.on_tx_list = false;
            iface.flush_connection(now, tx, &mut slot.conn, &tcp.pool);
            tcp.settle(index);
        }
    }

    /// Listen on `port` with room for `backlog` connections in the SYN queue
    /// and again in the accept queue.
    pub fn tcp_listen(&mut self, port: u16, backlog: usize) -> Result<(), ListenError> {
        if port == 0 {
            return Err(ListenError::InvalidPort);
        }
        if self.tcp.listeners.contains_key(&port) {
            return Err(ListenError::AddrInUse(port));
        }
        let listener = Listener::new(self.tcp.cfg.clone(), backlog.max(1), self.tcp.secret, self.tcp.syn_cookies);
        self.tcp.listeners.insert(
            port,
            ListenEntry { listener, accept_queue: VecDeque::new(), watch: Watch::default() },
        );
        Ok(())
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
    /// The SYN leaves on the next poll.
    pub fn tcp_connect(&mut self, now: Instant, remote: SocketAddrV4) -> Result<TcpHandle, ConnectError> {
        let (remote_addr, remote_port) = (*remote.ip(), remote.port());
        if remote_port == 0 || remote_addr.is_broadcast() || remote_addr.is_multicast() || remote_addr.is_unspecified()
        {
            return Err(ConnectError::InvalidAddress);
        }
        if self.tcp.live >= self.tcp.max_connections {
            return Err(ConnectError::TableFull);
        }
        let local_addr = self.iface.cfg.ipv4.addr;
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
                !listeners.contains_key(&p) && !by_tuple.contains_key(&t) && !tw.contains_key(&t)
            },
        )
        .ok_or(ConnectError::NoFreePort)?;
        let tuple = FourTuple { local_addr, local_port, remote_addr, remote_port };
        let iss = tcp::isn(&tcp.secret, &tuple, now);
        let mut conn = Connection::connect(tuple, tcp.cfg.clone(), iss, now);
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

    /// The connection behind a handle, for its state, readiness and statistics.
    pub fn tcp_connection(&self, h: TcpHandle) -> Option<&Connection> {
        self.tcp.slot(h).map(|s| &s.conn)
    }

    /// The connection's state (`State::Closed` once it ended).
    pub fn tcp_state(&self, h: TcpHandle) -> Option<State> {
        self.tcp_connection(h).map(Connection::state)
    }

    /// Turn Nagle's algorithm off (like TCP_NODELAY) or back on.
    pub fn tcp_set_nodelay(&mut self, h: TcpHandle, nodelay: bool) {
        if let Some(s) = self.tcp.slot_mut(h) {
            s.conn.set_nodelay(nodelay);
            self.tcp.mark_tx(h.index);
        }
    }

    /// Connections in the table (half-open, established, closing, TIME-WAIT).
    pub fn tcp_connections(&self) -> usize {
        self.tcp.live
    }

    /// The buffer pool every connection's send and receive bytes live in:
    /// its occupancy (`in_use`), limit and counters.
    pub fn tcp_buffer_pool(&self) -> &BufferPool {
        &self.tcp.pool
    }

    /// Connections in TIME-WAIT held as compact records (included in
    /// [`Stack::tcp_connections`]).
    pub fn tcp_time_wait(&self) -> usize {
        self.tcp.tw_by_tuple.len()
    }

    /// Connections by state and retransmissions, for monitoring
    /// (`ustack stats`, `ustack top`).
    ///
    /// This scans the whole connection table, O(connections): fine for a
    /// monitor that asks about once a second, wrong for the packet path,
    /// which keeps no per-state gauges so that a transition costs nothing.
    pub fn tcp_states(&self) -> TcpStates {
        let mut out = TcpStates {
            by_state: TcpStates::STATES.map(|s| (s, 0)),
            time_wait_records: self.tcp_time_wait(),
            listeners: self.tcp.listeners.len(),
            retransmits: self.tcp.freed_retransmits,
        };
        for i in 0..self.tcp.slots.len() {
            let Some(slot) = &self.tcp.slots[i] else { continue };
            let state = if slot.dead { State::Closed } else { slot.conn.state() };
            if let Some(entry) = out.by_state.iter_mut().find(|(s, _)| *s == state) {
                entry.1 += 1;
            }
            out.retransmits += slot.conn.stats().retransmits;
        }
        out
    }

    /// Counters of a listening port.
    pub fn tcp_listener_stats(&self, port: u16) -> Option<tcp::ListenerStats> {
        self.tcp.listeners.get(&port).map(|e| e.listener.stats())
    }

    /// Counters of every listening port, summed (SYNs, queue overflows, SYN
    /// cookies sent, accepted and rejected). A port closed since no longer counts.
    pub fn tcp_listeners_stats(&self) -> tcp::ListenerStats {
        self.tcp.listeners.values().map(|e| e.listener.stats()).fold(tcp::ListenerStats::default(), |a, b| {
            tcp::ListenerStats {
                syns: a.syns + b.syns,
                syn_queue_overflows: a.syn_queue_overflows + b.syn_queue_overflows,
                accept_queue_overflows: a.accept_queue_overflows + b.accept_queue_overflows,
                cookies_sent: a.cookies_sent + b.cookies_sent,
                cookies_accepted: a.cookies_accepted + b.cookies_accepted,
                cookies_rejected: a.cookies_rejected + b.cookies_rejected,
                resets_sent: a.resets_sent + b.resets_sent,
            }
        })
    }
}

/// What [`Stack::tcp_states`] found in the connection table.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TcpStates {
    /// Connections held in full slots, per state, in [`TcpStates::STATES`]
    /// order. `Closed` counts connections that ended while the application
    /// still holds their handle.
    pub by_state: [(State, usize); 10],
    /// TIME-WAIT connections kept as compact records, not in `by_state`
    /// ([`Stack::tcp_time_wait`]).
    pub time_wait_records: usize,
    /// Listening ports.
    pub listeners: usize,
    /// Segments retransmitted by the connections in the table plus those of
    /// connections already freed. SYN-ACKs answered by SYN cookies have no
    /// connection and are not counted.
    pub retransmits: u64,
}

impl TcpStates {
    /// Every state a connection can be in (`Listen` belongs to listeners).
    pub const STATES: [State; 10] = [
        State::SynSent,
        State::SynReceived,
        State::Established,
        State::FinWait1,
        State::FinWait2,
        State::CloseWait,
        State::Closing,
        State::LastAck,
        State::TimeWait,
        State::Closed,
    ];

    /// Connections in `state`; TIME-WAIT includes the compact records.
    pub fn count(&self, state: State) -> usize {
        let n = self.by_state.iter().find(|(s, _)| *s == state).map_or(0, |(_, n)| *n);
        if state == State::TimeWait {
            n + self.time_wait_records
        } else {
            n
        }
    }
}

/// A listener's readiness: READABLE while connections wait to be accepted.
fn listener_readiness(l: &ListenEntry) -> Readiness {
    if l.accept_queue.is_empty() {
        Readiness::EMPTY
    } else {
        Readiness::READABLE
    }
}

/// A connection's readiness as the application sees it.
fn readiness_of(conn: &Connection) -> Readiness {
    let mut r = Readiness::EMPTY;
    if conn.error().is_some() {
        return Readiness::ERROR | Readiness::READABLE;
    }
    if conn.is_readable() {
        r |= Readiness::READABLE;
    }
    if conn.is_writable() && conn.state().is_synchronized() {
        r |= Readiness::WRITABLE;
    }
    if matches!(conn.state(), State::CloseWait | State::LastAck | State::Closing | State::TimeWait | State::Closed) {
        r |= Readiness::READ_CLOSED;
    }
    r
}

fn count_drop(c: &mut crate::counters::Counters, reason: DropReason) {
    match reason {
        DropReason::OutOfWindow | DropReason::Paws | DropReason::MissingTimestamp => c.drop_tcp_out_of_window += 1,
        DropReason::Rst | DropReason::Syn | DropReason::BadAck => c.drop_tcp_rfc5961 += 1,
        DropReason::ReassemblyFull => c.drop_tcp_reassembly_full += 1,
        DropReason::NoBuffer => c.drop_tcp_no_buffer += 1,
        // A segment for a connection that has ended (still held by its
        // application) or a RST at a listener: nothing is there for it.
        DropReason::Closed => c.drop_tcp_no_socket += 1,
        DropReason::Duplicate => c.drop_tcp_duplicate += 1,
        _ => c.drop_tcp_other += 1,
    }
}

#[cfg(test)]
mod size_tests {
    /// The fixed per-connection state stays well inside the 1 KiB budget
    /// (the scale test measures the whole cost, tables and buffers included).
    #[test]
    fn connection_state_is_compact() {
        use core::mem::size_of;
        let conn = size_of::<super::Connection>();
        let slot = size_of::<Option<super::Slot>>();
        let tw = size_of::<Option<crate::tcp::TimeWait>>();
        eprintln!("Connection {conn} B, slot {slot} B, TIME-WAIT record {tw} B");
        assert!(slot <= 800, "slot {slot} B");
        assert!(tw <= 48, "TIME-WAIT record {tw} B");
    }
}
