//! The IPv6 neighbour cache (RFC 4861 §7.3): neighbour unreachability
//! detection with its five states, and the bounded queue of packets waiting
//! for resolution. Shaped as the ARP cache ([`crate::neighbor`]) is.
//!
//! Bounds, from [`Ipv6Config`]: entries in total (`neighbor_cache_size`; a
//! full cache evicts a STALE entry first, then any resolved one, never an
//! INCOMPLETE one, counted as `ndp_neighbor_evicted`), unresolved entries
//! (`neighbor_max_incomplete`; a packet to one more is dropped), and waiting
//! packets per entry and in total, in slots allocated once at start.
//!
//! States (RFC 4861 §7.3.2, Appendix C):
//!
//! | state | meaning | leaves on |
//! |---|---|---|
//! | INCOMPLETE | solicited by multicast, packets wait | an advertisement with a link-layer address (REACHABLE if solicited, else STALE); `max_multicast_solicit` unanswered solicitations (deleted, packets dropped) |
//! | REACHABLE | confirmed within `reachable_time` | that time running out (STALE, found when next used) |
//! | STALE | address known, reachability not | a packet sent (DELAY) |
//! | DELAY | a packet went out, upper layers may confirm | `delay_first_probe` passing (PROBE) |
//! | PROBE | solicited by unicast every `retrans_timer` | confirmation (REACHABLE); `max_unicast_solicit` unanswered (deleted) |

use super::Ipv6Config;
use crate::hash::{KeyedMap, KeyedState};
use crate::neighbor::{NeighborResolver, Resolution, MAX_PENDING_PER_ENTRY};
use crate::time::{Duration, Instant};
use std::net::Ipv6Addr;
use ustack_wire::{EthernetAddress, NdiscNeighborFlags};

/// A neighbour's reachability state (RFC 4861 §7.3.2).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum NudState {
    /// Address resolution in progress.
    Incomplete,
    /// Recently confirmed reachable.
    Reachable,
    /// Address known, reachability unknown.
    Stale,
    /// Waiting for an upper-layer confirmation before probing.
    Delay,
    /// Probing by unicast solicitations.
    Probe,
}

#[derive(Clone, Copy, Debug)]
struct Entry {
    mac: Option<EthernetAddress>,
    state: NudState,
    /// REACHABLE: until when; INCOMPLETE, DELAY, PROBE: when the next step is due.
    timer: Instant,
    /// Solicitations sent in this state.
    probes: u8,
    is_router: bool,
    /// Where the entry sits in `NdpCache::timed`, if it does.
    timed_at: Option<u32>,
    pending: [u16; MAX_PENDING_PER_ENTRY],
    pending_len: u8,
}

impl Entry {
    fn new(state: NudState, mac: Option<EthernetAddress>, timer: Instant) -> Entry {
        Entry {
            mac,
            state,
            timer,
            probes: 0,
            is_router: false,
            timed_at: None,
            pending: [0; MAX_PENDING_PER_ENTRY],
            pending_len: 0,
        }
    }
}

/// What a timeout asks for, for one neighbour.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum NdpTimer {
    /// Send a neighbour solicitation for `target`: to its solicited-node
    /// group (resolution) or, with `unicast`, to its known address (a probe).
    Solicit {
        /// The address solicited.
        target: Ipv6Addr,
        /// The link address to probe; `None` for multicast.
        unicast: Option<EthernetAddress>,
    },
    /// Given up: the entry is gone, and `dropped` waiting packets with it.
    Unreachable {
        /// The neighbour.
        target: Ipv6Addr,
        /// How many waiting packets were dropped.
        dropped: usize,
        /// It was a router (the caller drops it from the default router list).
        was_router: bool,
    },
}

/// What an advertisement did (RFC 4861 §7.2.5).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AdvertOutcome {
    /// No entry for the target: silently discarded.
    NoEntry,
    /// An entry exists but the advertisement changes nothing (no override).
    Ignored,
    /// The entry was updated; `router_lost` when the R flag went from set to clear.
    Updated {
        /// The neighbour stopped being a router.
        router_lost: bool,
    },
}

/// Waiting packets in fixed slots, allocated once.
#[derive(Debug)]
struct Slots {
    data: Vec<Box<[u8]>>,
    len: Vec<usize>,
    free: Vec<u16>,
}

/// The neighbour cache of one interface for IPv6: address to MAC, with NUD
/// state and the packets that wait for resolution.
#[derive(Debug)]
pub struct NdpCache {
    entries: KeyedMap<Ipv6Addr, Entry>,
    /// Entries in INCOMPLETE, DELAY or PROBE: those with a timer. Bounded by
    /// the capacity, scanned only when a timer is due; each entry knows its
    /// place, so joining and leaving cost O(1).
    timed: Vec<Ipv6Addr>,
    slots: Slots,
    capacity: usize,
    max_incomplete: usize,
    incomplete: usize,
    per_entry: usize,
    reachable_time: Duration,
    retrans_timer: Duration,
    delay_first_probe: Duration,
    max_multicast_solicit: u8,
    max_unicast_solicit: u8,
    evicted: u64,
}

impl NdpCache {
    /// An empty cache sized and timed by `cfg`; every slot for waiting
    /// packets is allocated here. `hash_key` keys the table against collision floods.
    pub fn new(cfg: &Ipv6Config, hash_key: u64) -> NdpCache {
        let capacity = cfg.neighbor_cache_size.max(1);
        let count = cfg.neighbor_pending_total.min(u16::MAX as usize);
        NdpCache {
            entries: KeyedMap::with_capacity_and_hasher(capacity, KeyedState::new(hash_key)),
            timed: Vec::with_capacity(capacity),
            slots: Slots {
                data: (0..count).map(|_| vec![0u8; cfg.mtu].into_boxed_slice()).collect(),
                len: vec![0; count],
                free: (0..count as u16).rev().collect(),
            },
            capacity,
            max_incomplete: cfg.neighbor_max_incomplete.min(capacity),
            incomplete: 0,
            per_entry: cfg.neighbor_pending_per_entry.min(MAX_PENDING_PER_ENTRY),
            reachable_time: cfg.reachable_time,
            retrans_timer: cfg.retrans_timer,
            delay_first_probe: cfg.delay_first_probe,
            max_multicast_solicit: cfg.max_multicast_solicit.max(1),
            max_unicast_solicit: cfg.max_unicast_solicit.max(1),
            evicted: 0,
        }
    }

    /// Entries of any state.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// Whether the cache is empty.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// Entries in INCOMPLETE.
    pub fn incomplete_len(&self) -> usize {
        self.incomplete
    }

    /// Packets waiting for resolution, over all entries.
    pub fn pending_len(&self) -> usize {
        self.slots.data.len() - self.slots.free.len()
    }

    /// The state of `ip`'s entry and its link address, if any. A REACHABLE
    /// entry past its time reads as STALE.
    pub fn get(&self, now: Instant, ip: Ipv6Addr) -> Option<(NudState, Option<EthernetAddress>)> {
        self.entries.get(&ip).map(|e| {
            let state = if e.state == NudState::Reachable && now >= e.timer { NudState::Stale } else { e.state };
            (state, e.mac)
        })
    }

    /// Whether `ip` is known as a router (R flag or a router advertisement).
    pub fn is_router(&self, ip: Ipv6Addr) -> bool {
        self.entries.get(&ip).is_some_and(|e| e.is_router)
    }

    /// Set the base reachable time (from a router advertisement).
    pub fn set_times(&mut self, reachable: Option<Duration>, retrans: Option<Duration>) {
        if let Some(r) = reachable {
            self.reachable_time = r;
        }
        if let Some(r) = retrans {
            self.retrans_timer = r;
        }
    }

    /// The retransmission interval in use.
    pub fn retrans_timer(&self) -> Duration {
        self.retrans_timer
    }

    fn set_timed(&mut self, ip: Ipv6Addr, timed: bool) {
        let Some(e) = self.entries.get_mut(&ip) else { return };
        match (e.timed_at, timed) {
            (None, true) => {
                e.timed_at = Some(self.timed.len() as u32);
                self.timed.push(ip);
            }
            (Some(i), false) => {
                e.timed_at = None;
                self.untime_at(i as usize);
            }
            _ => {}
        }
    }

    /// Take the `i`th address out of `timed` (its entry already knows).
    fn untime_at(&mut self, i: usize) {
        self.timed.swap_remove(i);
        if let Some(&moved) = self.timed.get(i) {
            if let Some(m) = self.entries.get_mut(&moved) {
                m.timed_at = Some(i as u32);
            }
        }
    }

    /// How to reach `ip` now (RFC 4861 §7.3.3): a STALE entry moves to
    /// DELAY; an unknown address gets an INCOMPLETE entry (`request` set:
    /// send the first solicitation now).
    pub fn resolve(&mut self, now: Instant, ip: Ipv6Addr) -> Resolution {
        if let Some(e) = self.entries.get_mut(&ip) {
            let Some(mac) = e.mac else { return Resolution::Queue { request: false } };
            match e.state {
                NudState::Reachable if now < e.timer => {}
                NudState::Reachable | NudState::Stale => {
                    e.state = NudState::Delay;
                    e.timer = now + self.delay_first_probe;
                    e.probes = 0;
                    self.set_timed(ip, true);
                }
                _ => {}
            }
            return Resolution::Send(mac);
        }
        if self.incomplete >= self.max_incomplete || !self.make_room() {
            return Resolution::Full;
        }
        let mut e = Entry::new(NudState::Incomplete, None, now + self.retrans_timer);
        e.probes = 1;
        self.entries.insert(ip, e);
        self.incomplete += 1;
        self.set_timed(ip, true);
        Resolution::Queue { request: true }
    }

    /// Whether a new entry fits, evicting one resolved entry if the cache is
    /// full (a STALE one first). Returns false when nothing can go.
    fn make_room(&mut self) -> bool {
        if self.entries.len() < self.capacity {
            return true;
        }
        // The first entry not confirmed lately and not a router will do
        // (a flood fills the table with those, so the scan stops at once);
        // else any resolved one.
        let mut victim = None;
        for (ip, e) in self.entries.iter() {
            if e.state == NudState::Incomplete {
                continue;
            }
            victim = Some(*ip);
            if e.state != NudState::Reachable && !e.is_router {
                break;
            }
        }
        let Some(ip) = victim else { return false };
        self.remove(ip);
        self.evicted += 1;
        true
    }

    fn remove(&mut self, ip: Ipv6Addr) -> Option<Entry> {
        self.set_timed(ip, false);
        let e = self.entries.remove(&ip)?;
        if e.state == NudState::Incomplete {
            self.incomplete -= 1;
        }
        for &slot in &e.pending[..usize::from(e.pending_len)] {
            self.slots.free.push(slot);
        }
        Some(e)
    }

    /// Hold a packet of `len` bytes (written by `fill`) for unresolved `ip`.
    /// False (the caller counts the drop) when the entry or the pool is full.
    pub fn enqueue(&mut self, ip: Ipv6Addr, len: usize, fill: impl FnOnce(&mut [u8])) -> bool {
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

    /// Entries evicted so far (the caller moves them to `ndp_neighbor_evicted`).
    pub fn take_evicted(&mut self) -> u64 {
        core::mem::take(&mut self.evicted)
    }

    /// Release the packets that waited for `ip` through `send`, in order.
    fn flush(&mut self, ip: Ipv6Addr, mut send: impl FnMut(EthernetAddress, &[u8])) {
        let Some(e) = self.entries.get_mut(&ip) else { return };
        let Some(mac) = e.mac else { return };
        let n = usize::from(core::mem::take(&mut e.pending_len));
        let pending = e.pending;
        for &slot in &pending[..n] {
            let s = usize::from(slot);
            send(mac, &self.slots.data[s][..self.slots.len[s]]);
            self.slots.free.push(slot);
        }
    }

    /// A solicitation, router solicitation or router advertisement from
    /// `ip` carried its link-layer address (RFC 4861 §7.2.3, §6.3.4): create
    /// a STALE entry, or make an existing one STALE if the address changed;
    /// an INCOMPLETE entry resolves and its packets go out through `send`.
    /// `create` false only updates (a table full of resolved entries is not
    /// churned by solicitations). Returns whether an entry now holds `mac`.
    pub fn learn(
        &mut self,
        now: Instant,
        ip: Ipv6Addr,
        mac: EthernetAddress,
        create: bool,
        send: impl FnMut(EthernetAddress, &[u8]),
    ) -> bool {
        if !self.entries.contains_key(&ip) {
            if !create || !self.make_room() {
                return false;
            }
            self.entries.insert(ip, Entry::new(NudState::Stale, Some(mac), now));
            return true;
        }
        let Some(e) = self.entries.get_mut(&ip) else { return false };
        if e.state == NudState::Incomplete {
            self.incomplete -= 1;
        } else if e.mac == Some(mac) {
            return true;
        }
        e.mac = Some(mac);
        e.state = NudState::Stale;
        e.timer = now;
        e.probes = 0;
        self.set_timed(ip, false);
        self.flush(ip, send);
        true
    }

    /// A neighbour advertisement for `ip` (RFC 4861 §7.2.5), already
    /// validated; packets that waited go out through `send`.
    pub fn advert(
        &mut self,
        now: Instant,
        ip: Ipv6Addr,
        mac: Option<EthernetAddress>,
        flags: NdiscNeighborFlags,
        send: impl FnMut(EthernetAddress, &[u8]),
    ) -> AdvertOutcome {
        let reachable_until = now + self.reachable_time;
        let Some(e) = self.entries.get_mut(&ip) else { return AdvertOutcome::NoEntry };
        let was_router = e.is_router;
        if e.state == NudState::Incomplete {
            let Some(mac) = mac else { return AdvertOutcome::Ignored };
            e.mac = Some(mac);
            self.incomplete -= 1;
            (e.state, e.timer) =
                if flags.solicited { (NudState::Reachable, reachable_until) } else { (NudState::Stale, now) };
            e.probes = 0;
            e.is_router = flags.router;
            self.set_timed(ip, false);
            self.flush(ip, send);
            return AdvertOutcome::Updated { router_lost: false };
        }
        let changed = mac.is_some_and(|m| Some(m) != e.mac);
        if !flags.override_ && changed {
            // Keep the old address; a REACHABLE entry is now in doubt.
            if e.state == NudState::Reachable {
                e.state = NudState::Stale;
                e.timer = now;
            }
            return AdvertOutcome::Ignored;
        }
        if changed {
            e.mac = mac;
        }
        if flags.solicited {
            e.state = NudState::Reachable;
            e.timer = reachable_until;
            e.probes = 0;
        } else if changed {
            e.state = NudState::Stale;
            e.timer = now;
        }
        e.is_router = flags.router;
        let timed = matches!(e.state, NudState::Delay | NudState::Probe);
        self.set_timed(ip, timed);
        AdvertOutcome::Updated { router_lost: was_router && !flags.router }
    }

    /// Mark `ip` a router (it sent a router advertisement).
    pub fn set_router(&mut self, ip: Ipv6Addr) {
        if let Some(e) = self.entries.get_mut(&ip) {
            e.is_router = true;
        }
    }

    /// An upper layer saw forward progress with `ip` (RFC 4861 §7.3.1): a
    /// resolved entry becomes REACHABLE.
    pub fn confirm_reachable(&mut self, now: Instant, ip: Ipv6Addr) {
        if let Some(e) = self.entries.get_mut(&ip) {
            if e.mac.is_some() {
                e.state = NudState::Reachable;
                e.timer = now + self.reachable_time;
                e.probes = 0;
                self.set_timed(ip, false);
            }
        }
    }

    /// The earliest time [`NdpCache::handle_timeout`] has work.
    pub fn poll_timeout(&self) -> Option<Instant> {
        self.timed.iter().filter_map(|ip| self.entries.get(ip)).map(|e| e.timer).min()
    }

    /// Advance the entries whose timer is due; report each step through `out`.
    pub fn handle_timeout(&mut self, now: Instant, mut out: impl FnMut(NdpTimer)) {
        let mut i = 0;
        while i < self.timed.len() {
            let ip = self.timed[i];
            let Some(e) = self.entries.get_mut(&ip) else {
                self.untime_at(i); // cannot happen: removal leaves `timed` too
                continue;
            };
            if now < e.timer {
                i += 1;
                continue;
            }
            let (limit, unicast) = match e.state {
                NudState::Incomplete => (self.max_multicast_solicit, None),
                NudState::Delay => {
                    e.state = NudState::Probe;
                    e.probes = 0;
                    (self.max_unicast_solicit, e.mac)
                }
                NudState::Probe => (self.max_unicast_solicit, e.mac),
                NudState::Reachable | NudState::Stale => {
                    e.timed_at = None;
                    self.untime_at(i);
                    continue;
                }
            };
            if e.probes >= limit {
                let dropped = usize::from(e.pending_len);
                let was_router = e.is_router;
                self.remove(ip);
                out(NdpTimer::Unreachable { target: ip, dropped, was_router });
                continue;
            }
            e.probes += 1;
            e.timer = now + self.retrans_timer;
            out(NdpTimer::Solicit { target: ip, unicast });
            i += 1;
        }
    }
}

/// The IP layer's view of a neighbour cache, shared with ARP.
impl NeighborResolver for NdpCache {
    type Addr = Ipv6Addr;
    fn resolve(&mut self, now: Instant, next_hop: Ipv6Addr) -> Resolution {
        NdpCache::resolve(self, now, next_hop)
    }
    fn enqueue(&mut self, next_hop: Ipv6Addr, len: usize, fill: impl FnOnce(&mut [u8])) -> bool {
        NdpCache::enqueue(self, next_hop, len, fill)
    }
    fn poll_timeout(&self) -> Option<Instant> {
        NdpCache::poll_timeout(self)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MAC: EthernetAddress = EthernetAddress([2, 0, 0, 0, 0, 9]);
    const MAC2: EthernetAddress = EthernetAddress([2, 0, 0, 0, 0, 10]);

    fn cache() -> NdpCache {
        let mut cfg = Ipv6Config::new(EthernetAddress([2, 0, 0, 0, 0, 1]));
        cfg.neighbor_cache_size = 4;
        cfg.neighbor_max_incomplete = 2;
        cfg.neighbor_pending_total = 4;
        NdpCache::new(&cfg, 7)
    }

    fn ip(n: u16) -> Ipv6Addr {
        Ipv6Addr::new(0xfe80, 0, 0, 0, 0, 0, 0, n)
    }

    fn solicited() -> NdiscNeighborFlags {
        NdiscNeighborFlags { router: false, solicited: true, override_: true }
    }

    #[test]
    fn resolution_queues_then_a_solicited_advert_releases_and_makes_reachable() {
        let mut c = cache();
        let t0 = Instant::from_secs(1);
        assert_eq!(c.resolve(t0, ip(1)), Resolution::Queue { request: true });
        assert!(c.enqueue(ip(1), 3, |b| b.copy_from_slice(b"abc")));
        assert_eq!(c.resolve(t0, ip(1)), Resolution::Queue { request: false });
        let mut sent = Vec::new();
        let out = c.advert(t0, ip(1), Some(MAC), solicited(), |m, p| sent.push((m, p.to_vec())));
        assert_eq!(out, AdvertOutcome::Updated { router_lost: false });
        assert_eq!(sent, vec![(MAC, b"abc".to_vec())]);
        assert_eq!(c.get(t0, ip(1)), Some((NudState::Reachable, Some(MAC))));
        assert_eq!((c.pending_len(), c.incomplete_len()), (0, 0));
        // After the reachable time: STALE, then DELAY when used, PROBE, gone.
        let t1 = t0 + Duration::from_secs(31);
        assert_eq!(c.get(t1, ip(1)).unwrap().0, NudState::Stale);
        assert_eq!(c.resolve(t1, ip(1)), Resolution::Send(MAC));
        assert_eq!(c.get(t1, ip(1)).unwrap().0, NudState::Delay);
        let mut steps = Vec::new();
        let mut t = t1;
        while let Some(due) = c.poll_timeout() {
            t = due;
            c.handle_timeout(t, |s| steps.push(s));
        }
        let probe = NdpTimer::Solicit { target: ip(1), unicast: Some(MAC) };
        let gone = NdpTimer::Unreachable { target: ip(1), dropped: 0, was_router: false };
        assert_eq!(steps, vec![probe, probe, probe, gone]);
        assert_eq!(t, t1 + Duration::from_secs(5 + 3));
        assert!(c.is_empty());
    }

    #[test]
    fn unanswered_resolution_gives_up_and_drops_what_waited() {
        let mut c = cache();
        c.resolve(Instant::ZERO, ip(1));
        c.enqueue(ip(1), 1, |b| b[0] = 1);
        c.enqueue(ip(1), 1, |b| b[0] = 2);
        let mut steps = Vec::new();
        while let Some(due) = c.poll_timeout() {
            c.handle_timeout(due, |s| steps.push(s));
        }
        assert_eq!(steps.len(), 3, "two more solicitations, then unreachable: {steps:?}");
        assert_eq!(steps[2], NdpTimer::Unreachable { target: ip(1), dropped: 2, was_router: false });
        assert_eq!((c.len(), c.pending_len(), c.incomplete_len()), (0, 0, 0));
    }

    #[test]
    fn bounded_in_entries_incomplete_and_pending() {
        let mut c = cache();
        assert_eq!(c.resolve(Instant::ZERO, ip(1)), Resolution::Queue { request: true });
        assert_eq!(c.resolve(Instant::ZERO, ip(2)), Resolution::Queue { request: true });
        assert_eq!(c.resolve(Instant::ZERO, ip(3)), Resolution::Full);
        for _ in 0..3 {
            c.enqueue(ip(1), 8, |b| b.fill(0));
        }
        assert!(!c.enqueue(ip(1), 8, |b| b.fill(0)), "three per entry");
        assert!(c.enqueue(ip(2), 8, |b| b.fill(0)));
        assert!(!c.enqueue(ip(2), 8, |b| b.fill(0)), "four in all");
        // A flood of solicitations from new sources: the cache stays at four,
        // never evicting the unresolved entries.
        for n in 100..200 {
            c.learn(Instant::ZERO, ip(n), MAC, true, |_, _| {});
        }
        assert_eq!((c.len(), c.incomplete_len()), (4, 2));
        assert_eq!(c.take_evicted(), 98);
        // Every entry with a timer is in `timed` once, and knows where.
        assert_eq!(c.timed.len(), 2);
        for (i, ip) in c.timed.iter().enumerate() {
            assert_eq!(c.entries[ip].timed_at, Some(i as u32));
        }
        assert_eq!(c.pending_len(), 4);
    }

    #[test]
    fn advert_rules_of_rfc4861_7_2_5() {
        let mut c = cache();
        let t = Instant::from_secs(1);
        assert_eq!(c.advert(t, ip(1), Some(MAC), solicited(), |_, _| {}), AdvertOutcome::NoEntry);
        c.learn(t, ip(1), MAC, true, |_, _| {});
        assert_eq!(c.get(t, ip(1)), Some((NudState::Stale, Some(MAC))));
        // Solicited with the same address: REACHABLE.
        let router = NdiscNeighborFlags { router: true, ..solicited() };
        c.advert(t, ip(1), Some(MAC), router, |_, _| {});
        assert_eq!(c.get(t, ip(1)), Some((NudState::Reachable, Some(MAC))));
        assert!(c.is_router(ip(1)));
        // No override and another address: kept, but in doubt.
        let no_override = NdiscNeighborFlags { override_: false, ..router };
        assert_eq!(c.advert(t, ip(1), Some(MAC2), no_override, |_, _| {}), AdvertOutcome::Ignored);
        assert_eq!(c.get(t, ip(1)), Some((NudState::Stale, Some(MAC))));
        // Override, unsolicited, another address, R cleared.
        let flags = NdiscNeighborFlags { router: false, solicited: false, override_: true };
        assert_eq!(c.advert(t, ip(1), Some(MAC2), flags, |_, _| {}), AdvertOutcome::Updated { router_lost: true });
        assert_eq!(c.get(t, ip(1)), Some((NudState::Stale, Some(MAC2))));
        // An upper layer confirms.
        c.confirm_reachable(t, ip(1));
        assert_eq!(c.get(t, ip(1)).unwrap().0, NudState::Reachable);
    }
}
