//! The neighbour (ARP) cache, with the bounded queue of packets waiting for
//! resolution.
//!
//! Bounds, all from [`StackConfig`]: entries in total, unresolved entries,
//! waiting packets per entry and in total. Waiting packets live in slots
//! allocated once at start, so a flood of packets to unresolved addresses
//! costs drops (counted by the caller), never memory.
//!
//! Entries follow a simplified Linux lifecycle: an answer is trusted for
//! `neighbor_reachable_time`; after that it is still used while a refresh
//! request goes out; after `neighbor_stale_time` more it is forgotten.
//!
//! Address changes follow Linux's `arp_process`: within `neighbor_locktime`
//! of the last confirmation a different address is ignored (the first
//! answer wins), and a change learned from anything but a unicast reply (a
//! request, a gratuitous or broadcast ARP) is used but stale at once, so the
//! next packet sent to the neighbour asks it again.

use crate::config::StackConfig;
use crate::hash::{KeyedMap, KeyedState};
use crate::time::{Duration, Instant};
use std::net::Ipv4Addr;
use ustack_wire::EthernetAddress;

/// The hard cap on `neighbor_pending_per_entry`.
pub const MAX_PENDING_PER_ENTRY: usize = 8;

#[derive(Clone, Copy, Debug)]
struct Entry {
    /// `None` while unresolved.
    mac: Option<EthernetAddress>,
    /// When the address was last confirmed by an ARP packet from the neighbour.
    confirmed_at: Instant,
    /// When to send the next request (unresolved, or refreshing a stale entry).
    next_request: Instant,
    /// Requests sent since the last confirmation.
    requests: u8,
    /// The address came from a packet that does not assert reachability:
    /// refresh it on next use, as if its reachable time were over.
    stale: bool,
    pending: [u16; MAX_PENDING_PER_ENTRY],
    pending_len: u8,
}

/// What the egress path should do with a packet for a next hop.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Resolution {
    /// Send to this MAC now.
    Send(EthernetAddress),
    /// Send to this MAC now, and also send a refresh request for it.
    SendAndRefresh(EthernetAddress),
    /// Unresolved: queue the packet; send a request if `request` is set.
    Queue {
        /// Send an ARP request now: set for the first packet to an address
        /// not in the cache; retries come from the timer
        /// ([`NeighborTimer::Request`]).
        request: bool,
    },
    /// Too many unresolved neighbours: drop the packet.
    Full,
}

/// Next-hop resolution as the IP output path needs it: the ARP cache
/// ([`NeighborCache`]) implements it for IPv4, the NDP cache for IPv6, so
/// one egress path serves both (`ip::resolve_next_hop`).
pub trait NeighborResolver {
    /// The protocol address of a neighbour (`Ipv4Addr`, `Ipv6Addr`).
    type Addr: Copy;
    /// How to reach `next_hop` now; may create an unresolved entry.
    fn resolve(&mut self, now: Instant, next_hop: Self::Addr) -> Resolution;
    /// Hold a packet of `len` bytes, written by `fill`, until `next_hop`
    /// resolves; false (the caller counts the drop) when there is no room.
    fn enqueue(&mut self, next_hop: Self::Addr, len: usize, fill: impl FnOnce(&mut [u8])) -> bool;
    /// When the resolver next has timer work (retries, expiry).
    fn poll_timeout(&self) -> Option<Instant>;
}

impl NeighborResolver for NeighborCache {
    type Addr = Ipv4Addr;
    #[inline]
    fn resolve(&mut self, now: Instant, next_hop: Ipv4Addr) -> Resolution {
        NeighborCache::resolve(self, now, next_hop)
    }
    fn enqueue(&mut self, next_hop: Ipv4Addr, len: usize, fill: impl FnOnce(&mut [u8])) -> bool {
        NeighborCache::enqueue(self, next_hop, len, fill)
    }
    fn poll_timeout(&self) -> Option<Instant> {
        NeighborCache::poll_timeout(self)
    }
}

/// What a timeout asks for, for one neighbour.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum NeighborTimer {
    /// Send another request for this address.
    Request(Ipv4Addr),
    /// Give up: the packets that waited were released and dropped.
    Unreachable {
        /// How many waiting packets were dropped.
        dropped: usize,
    },
}

/// Packets waiting for resolution: fixed slots, allocated once.
#[derive(Debug)]
struct PendingSlots {
    data: Vec<Box<[u8]>>,
    len: Vec<usize>,
    free: Vec<u16>,
}

impl PendingSlots {
    fn new(count: usize, size: usize) -> PendingSlots {
        let count = count.min(u16::MAX as usize);
        PendingSlots {
            data: (0..count).map(|_| vec![0u8; size].into_boxed_slice()).collect(),
            len: vec![0; count],
            free: (0..count as u16).rev().collect(),
        }
    }
}

/// The neighbour cache of one interface: IPv4 address to MAC, with the
/// packets that wait for an answer. Bounded as the module says.
#[derive(Debug)]
pub struct NeighborCache {
    entries: KeyedMap<Ipv4Addr, Entry>,
    /// Addresses of unresolved entries; bounded by `max_incomplete`, so the
    /// timer scan over it is bounded too.
    incomplete: Vec<Ipv4Addr>,
    slots: PendingSlots,
    capacity: usize,
    max_incomplete: usize,
    per_entry: usize,
    reachable_time: Duration,
    stale_time: Duration,
    retry_interval: Duration,
    locktime: Duration,
    max_requests: u8,
    /// The last neighbour `resolve` found reachable, its address, and a
    /// time before which it certainly still is: every packet of a flow asks
    /// for the same next hop, and this spares the table lookup. Cleared
    /// whenever an entry is confirmed or removed.
    last: Option<(Ipv4Addr, EthernetAddress, Instant)>,
}

impl NeighborCache {
    /// An empty cache sized and timed by `cfg`; every slot for waiting packets
    /// is allocated here. `hash_key` keys the table's hash against collision
    /// floods (the stack derives it from its seed).
    pub fn new(cfg: &StackConfig, hash_key: u64) -> NeighborCache {
        let capacity = cfg.neighbor_cache_size.max(1);
        NeighborCache {
            entries: KeyedMap::with_capacity_and_hasher(capacity, KeyedState::new(hash_key)),
            incomplete: Vec::with_capacity(cfg.neighbor_max_incomplete),
            slots: PendingSlots::new(cfg.neighbor_pending_total, cfg.mtu),
            capacity,
            max_incomplete: cfg.neighbor_max_incomplete.min(capacity),
            per_entry: cfg.neighbor_pending_per_entry.min(MAX_PENDING_PER_ENTRY),
            reachable_time: cfg.neighbor_reachable_time,
            stale_time: cfg.neighbor_stale_time,
            retry_interval: cfg.arp_retry_interval,
            locktime: cfg.neighbor_locktime,
            max_requests: cfg.arp_max_retries.max(1),
            last: None,
        }
    }

    /// Entries of any kind.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// Whether the cache holds no entry at all.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// Unresolved entries.
    pub fn incomplete_len(&self) -> usize {
        self.incomplete.len()
    }

    /// Packets waiting for resolution, over all entries.
    pub fn pending_len(&self) -> usize {
        self.slots.data.len() - self.slots.free.len()
    }

    /// The cached address, if resolved (stale or not).
    pub fn get(&self, ip: Ipv4Addr) -> Option<EthernetAddress> {
        self.entries.get(&ip).and_then(|e| e.mac)
    }

    /// How to reach `ip` now. Creates an unresolved entry when there is none.
    pub fn resolve(&mut self, now: Instant, ip: Ipv4Addr) -> Resolution {
        if let Some((last_ip, mac, fresh_until)) = self.last {
            if last_ip == ip && now < fresh_until {
                return Resolution::Send(mac);
            }
        }
        if let Some(e) = self.entries.get_mut(&ip) {
            match e.mac {
                Some(mac) => {
                    let mut age = now.saturating_since(e.confirmed_at);
                    if e.stale {
                        age += self.reachable_time;
                    }
                    if age < self.reachable_time {
                        // Instant + Duration drops sub-microseconds, so
                        // before `fresh_until` the age is below
                        // `reachable_time` too: the same answer as here.
                        self.last = Some((ip, mac, e.confirmed_at + self.reachable_time));
                        return Resolution::Send(mac);
                    }
                    if age < self.reachable_time + self.stale_time {
                        if now >= e.next_request {
                            e.next_request = now + self.retry_interval;
                            e.requests = e.requests.saturating_add(1);
                            return Resolution::SendAndRefresh(mac);
                        }
                        return Resolution::Send(mac);
                    }
                    // Forgotten: start over as unresolved.
                    self.entries.remove(&ip);
                    self.last = None;
                }
                None => return Resolution::Queue { request: false },
            }
        }
        if self.incomplete.len() >= self.max_incomplete {
            return Resolution::Full;
        }
        if self.entries.len() >= self.capacity && !self.evict_one(now) {
            return Resolution::Full;
        }
        self.entries.insert(
            ip,
            Entry {
                mac: None,
                confirmed_at: now,
                next_request: now + self.retry_interval,
                requests: 1,
                stale: false,
                pending: [0; MAX_PENDING_PER_ENTRY],
                pending_len: 0,
            },
        );
        self.incomplete.push(ip);
        Resolution::Queue { request: true }
    }

    /// Make room by dropping one resolved entry, preferring one past its
    /// reachable time. Unresolved entries are bounded separately and expire
    /// on their own.
    fn evict_one(&mut self, now: Instant) -> bool {
        let mut victim = None;
        for (ip, e) in self.entries.iter() {
            if e.mac.is_none() {
                continue;
            }
            victim = Some(*ip);
            if now.saturating_since(e.confirmed_at) >= self.reachable_time {
                break;
            }
        }
        match victim {
            Some(ip) => {
                self.entries.remove(&ip);
                self.last = None;
                true
            }
            None => false,
        }
    }

    /// Hold a packet of `len` bytes (written by `fill`) for unresolved `ip`.
    /// Returns false (the caller counts the drop) when the entry or the pool is full.
    pub fn enqueue(&mut self, ip: Ipv4Addr, len: usize, fill: impl FnOnce(&mut [u8])) -> bool {
        let Some(e) = self.entries.get_mut(&ip) else { return false };
        if e.mac.is_some() || usize::from(e.pending_len) >= self.per_entry {
            return false;
        }
        let Some(slot) = self.slots.free.pop() else { return false };
        let buf = &mut self.slots.data[usize::from(slot)];
        if len > buf.len() {
            self.slots.free.push(slot);
            return false;
        }
        fill(&mut buf[..len]);
        self.slots.len[usize::from(slot)] = len;
        e.pending[usize::from(e.pending_len)] = slot;
        e.pending_len += 1;
        true
    }

    /// Record that `ip` is at `mac` (an ARP packet from it). With `create`
    /// false only an existing entry is updated (RFC 826's merge rule: learn
    /// from packets addressed to us, refresh from any). `reachable` says the
    /// packet asserts reachability (a unicast reply, in Linux's terms).
    /// Calls `send` with each packet that waited for this neighbour, in
    /// order. Returns false when a change of address was refused because
    /// the entry was confirmed less than `neighbor_locktime` ago.
    pub fn confirm(
        &mut self,
        now: Instant,
        ip: Ipv4Addr,
        mac: EthernetAddress,
        create: bool,
        reachable: bool,
        mut send: impl FnMut(EthernetAddress, &[u8]),
    ) -> bool {
        self.last = None;
        if let Some(e) = self.entries.get_mut(&ip) {
            if e.mac.is_some_and(|old| old != mac) {
                // Linux's arp_process: "If several different ARP replies
                // follows back-to-back, use the FIRST one."
                if now.saturating_since(e.confirmed_at) < self.locktime {
                    return false;
                }
                e.mac = Some(mac);
                e.confirmed_at = now;
                e.next_request = now;
                e.requests = 0;
                e.stale = !reachable;
                return true;
            }
        }
        let e = match self.entries.get_mut(&ip) {
            Some(e) => e,
            None if create => {
                if self.entries.len() >= self.capacity && !self.evict_one(now) {
                    return true;
                }
                self.entries.entry(ip).or_insert(Entry {
                    mac: None,
                    confirmed_at: now,
                    next_request: now,
                    requests: 0,
                    stale: false,
                    pending: [0; MAX_PENDING_PER_ENTRY],
                    pending_len: 0,
                })
            }
            None => return true,
        };
        let was_incomplete = e.mac.is_none();
        e.mac = Some(mac);
        e.stale = false;
        e.confirmed_at = now;
        e.next_request = now;
        e.requests = 0;
        let pending = e.pending;
        let n = usize::from(core::mem::take(&mut e.pending_len));
        if was_incomplete {
            self.incomplete.retain(|&x| x != ip);
        }
        for &slot in &pending[..n] {
            let s = usize::from(slot);
            send(mac, &self.slots.data[s][..self.slots.len[s]]);
            self.slots.free.push(slot);
        }
        true
    }

    /// The earliest time [`NeighborCache::handle_timeout`] has work.
    pub fn poll_timeout(&self) -> Option<Instant> {
        self.incomplete.iter().filter_map(|ip| self.entries.get(ip)).map(|e| e.next_request).min()
    }

    /// Unresolved entries wait for an answer: only then has
    /// `handle_timeout` anything to do.
    pub fn resolving(&self) -> bool {
        !self.incomplete.is_empty()
    }

    /// Retry or give up on unresolved neighbours whose time has come; report
    /// each through `out`.
    pub fn handle_timeout(&mut self, now: Instant, mut out: impl FnMut(NeighborTimer)) {
        let mut i = 0;
        while i < self.incomplete.len() {
            let ip = self.incomplete[i];
            let Some(e) = self.entries.get_mut(&ip) else {
                self.incomplete.swap_remove(i);
                continue;
            };
            if now < e.next_request {
                i += 1;
                continue;
            }
            if e.requests >= self.max_requests {
                let n = usize::from(e.pending_len);
                for &slot in &e.pending[..n] {
                    self.slots.free.push(slot);
                }
                self.entries.remove(&ip);
                self.last = None;
                self.incomplete.swap_remove(i);
                out(NeighborTimer::Unreachable { dropped: n });
                continue;
            }
            e.requests += 1;
            e.next_request = now + self.retry_interval;
            out(NeighborTimer::Request(ip));
            i += 1;
        }
    }
}
