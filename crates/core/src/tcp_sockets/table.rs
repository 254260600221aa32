//! The connection table: slots and handles, TIME-WAIT records, and the
//! bookkeeping after anything happened to a connection.

use super::demux::Demux;
use super::{Child, Slot, TcpHandle, TcpSockets};
use crate::hash::{KeyedMap, KeyedState};
use crate::readiness::Watch;
use crate::tcp::{BufferPool, BufferSizes, Connection, TcpConfig, TimeWait};
use crate::time::Instant;
use crate::timer::TimerWheel;
use std::collections::VecDeque;
use std::sync::Arc;

/// Slots in pages of `SLOT_PAGE`: the table grows a page at a time and
/// never moves (or doubles) what it holds, so its overhead over the live
/// connections is at most one page.
const SLOT_PAGE: usize = 1024;

#[derive(Debug, Default)]
pub(super) struct Slots {
    /// Fixed-size pages: indexing within one needs no bounds check, and
    /// every packet and socket call looks a slot up.
    pages: Vec<Box<[Option<Slot>; SLOT_PAGE]>>,
    len: usize,
}

impl Slots {
    pub(super) fn len(&self) -> usize {
        self.len
    }
    /// Appends an empty slot and returns its index.
    pub(super) fn push_empty(&mut self) -> usize {
        if self.len == self.pages.len() * SLOT_PAGE {
            let page: Box<[Option<Slot>]> = (0..SLOT_PAGE).map(|_| None).collect();
            self.pages.push(page.try_into().expect("SLOT_PAGE slots"));
        }
        self.len += 1;
        self.len - 1
    }
    // Slots past `len` in the last page are `None`, like a freed slot, so
    // the page lookup alone bounds the index.
    pub(super) fn get(&self, i: usize) -> Option<&Option<Slot>> {
        self.pages.get(i / SLOT_PAGE).map(|p| &p[i % SLOT_PAGE])
    }
    pub(super) fn get_mut(&mut self, i: usize) -> Option<&mut Option<Slot>> {
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

impl TcpSockets {
    /// The configuration of a socket with `buffers`: the stack's own, shared,
    /// when they change nothing (no allocation, the same cost as before);
    /// else a copy with the sizes clamped to what the pool can back.
    pub(super) fn config_with(&self, buffers: BufferSizes) -> Arc<TcpConfig> {
        match self.cfg.with_buffer_sizes(buffers, self.pool.largest_buffer()) {
            Some(cfg) => Arc::new(cfg),
            None => self.cfg.clone(),
        }
    }

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
            by_tuple: Demux::new(hash_key),
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
    pub(super) fn insert_time_wait(&mut self, tw: TimeWait) {
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

    pub(super) fn remove_time_wait(&mut self, index: u32) {
        if let Some(tw) = self.time_wait[index as usize].take() {
            self.tw_by_tuple.remove(&tw.four_tuple());
            self.tw_timers.set(index, None);
            self.tw_free.push(index);
            self.live -= 1;
        }
    }

    pub(super) fn insert(&mut self, conn: Connection, child: Child) -> u32 {
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
    pub(super) fn remove(&mut self, index: u32) {
        if let Some(slot) = self.slots[index as usize].as_mut() {
            slot.conn.release_buffers(&mut self.pool);
            self.freed_retransmits += slot.conn.stats().retransmits;
        }
        self.take(index);
    }

    /// Take a connection out of the table with its state as it is
    /// (buffers included: the caller has detached or released them),
    /// freeing its slot.
    pub(super) fn take(&mut self, index: u32) -> Option<Connection> {
        let slot = self.slots[index as usize].take()?;
        if !slot.dead {
            self.by_tuple.remove(&slot.conn.four_tuple());
            self.live -= 1;
        }
        self.timers.set(index, None);
        self.generations[index as usize] = self.generations[index as usize].wrapping_add(1);
        self.free.push(index);
        Some(slot.conn)
    }

    pub(super) fn slot(&self, h: TcpHandle) -> Option<&Slot> {
        self.slots.get(h.index as usize)?.as_ref().filter(|s| s.generation == h.generation && !s.orphan)
    }

    pub(super) fn slot_mut(&mut self, h: TcpHandle) -> Option<&mut Slot> {
        self.slots.get_mut(h.index as usize)?.as_mut().filter(|s| s.generation == h.generation && !s.orphan)
    }

    pub(super) fn handle(&self, index: u32) -> TcpHandle {
        TcpHandle { index, generation: self.generations[index as usize] }
    }

    pub(super) fn mark_tx(&mut self, index: u32) {
        if let Some(s) = self.slots[index as usize].as_mut() {
            if !s.on_tx_list {
                s.on_tx_list = true;
                self.tx_list.push_back(index);
            }
        }
    }

    /// Bookkeeping after anything happened to a connection: its timer, its
    /// listener's counts, and its removal once CLOSED.
    pub(super) fn settle(&mut self, index: u32) {
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
