//! An in-memory Ethernet link between two ports in one process, with seeded
//! fault injection: the link for simulations, tests and benchmarks.
//!
//! [`MemoryLink::pair`] returns two [`MemoryPort`]s; a frame sent on one is
//! received on the other. Each direction is a bounded FIFO of frames in
//! flight. Crossing costs one `memcpy` (the sender's `fill` writes straight into
//! a recycled [`Frame`] from the direction's [`FramePool`]) and no allocation
//! once the pool has warmed up.
//!
//! # How time reaches the link
//!
//! The core never reads a clock and [`TxQueue::send`] takes no `now`, so each
//! port keeps a *clock*: the latest `now` it has been given, through
//! [`RxQueue::recv`] or [`MemoryPort::set_now`]. It never goes backwards (an
//! older `now` is ignored). A frame sent on a port is stamped with that port's
//! clock, and becomes visible to the peer's `recv(now)` once
//! `now >= sent_at + delay + jitter`. An event loop that calls `recv(now)`
//! before it transmits needs nothing else; a caller that sends first calls
//! `set_now(now)`. A simulation jumps virtual time to
//! [`MemoryPort::next_delivery`].
//!
//! # Faults
//!
//! All faults are off by default. Each direction has its own generator seeded
//! from the pair's seed, so a direction's faults depend only on the seed and
//! on the frames sent in that direction, never on how the two directions
//! interleave. Per frame sent, in this order:
//!
//! 1. **oversize** (longer than `mtu` + 14 bytes) and **full queue** drops,
//!    without calling `fill`;
//! 2. **loss** with probability `loss`;
//! 3. **corruption** with probability `corrupt`: one uniformly chosen bit flips;
//! 4. **delay**: `delay` plus a uniform `0..=jitter`. Delivery stays FIFO:
//!    a frame is never delivered before one sent earlier, so jitter alone does
//!    not reorder (reordering is its own fault);
//! 5. **duplication** with probability `duplicate`: a copy follows the frame;
//! 6. **reordering** with probability `reorder`: the frame is held back and the
//!    next frame sent in that direction overtakes it. If none comes within
//!    `reorder_hold` of its delivery time, it is released in order.
//!
//! Every outcome has a counter in [`LinkStats`].

use std::cell::RefCell;
use std::collections::VecDeque;
use std::rc::Rc;

use ustack_core::phy::{Device, DeviceCaps, GsoType, RxMeta, RxQueue, TxFull, TxMeta, TxQueue};
use ustack_core::time::{Duration, Instant};

use crate::pool::{Frame, FramePool};
use crate::rng::SplitMix64;

/// Ethernet header without FCS: a frame may be this much longer than the MTU.
const ETHERNET_HEADER_LEN: usize = 14;
/// The largest super-segment the link carries with `tso` on: an IPv4
/// datagram's limit, as virtio's.
const TSO_MAX: usize = u16::MAX as usize;

/// Shape and faults of a [`MemoryLink`]; the same for both directions.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct LinkConfig {
    /// Frames in flight per direction before new ones are dropped. Default 1024.
    pub capacity: usize,
    /// Largest Ethernet payload; frames up to `mtu + 14` bytes cross. Default 1500.
    pub mtu: usize,
    /// Probability that a frame is lost. Default 0.
    pub loss: f64,
    /// Probability that a frame arrives twice. Default 0.
    pub duplicate: f64,
    /// Probability that a frame is overtaken by the next one. Default 0.
    pub reorder: f64,
    /// Probability that one bit of a frame is flipped. Default 0.
    pub corrupt: f64,
    /// Fixed one-way delay. Default 0.
    pub delay: Duration,
    /// Extra delay drawn uniformly from `0..=jitter` per frame. Default 0.
    pub jitter: Duration,
    /// Longest a frame held back for reordering waits for a frame to overtake
    /// it before it is released in order. Default 1 ms.
    pub reorder_hold: Duration,
    /// Allocate every frame buffer (`capacity + 1` per direction) when the
    /// link is made, instead of as traffic first needs them. With it the link
    /// never allocates after construction; without it, it stops allocating
    /// once the most frames it ever holds at once have been in flight.
    /// Default false.
    pub preallocate: bool,
    /// Offer checksum offload, as Linux's loopback and veth do: senders may
    /// leave TCP/UDP checksums partial ([`TxMeta::csum_partial`]), and such
    /// frames arrive marked [`RxMeta::csum_verified`] — unless the `corrupt`
    /// fault hit them, in which case they arrive unmarked and the receiver's
    /// own check drops them. Default false, so tests exercise checksums.
    pub checksum_offload: bool,
    /// Offer TCP segmentation offload and coalesced receive, as virtio-net
    /// between two VMs does: a sender may hand TCP super-segments of up to
    /// 64 KiB marked [`GsoType::TcpV4`] or [`GsoType::TcpV6`]
    /// ([`DeviceCaps::tso4_max`], [`DeviceCaps::tso6`]); they
    /// cross whole (faults hit the whole frame) and arrive marked with the
    /// segment size they stand for ([`RxMeta::gso_type`]). Takes effect only
    /// with `checksum_offload`, as virtio's TSO needs checksum offload.
    /// Frame buffers are then 64 KiB each. Default false.
    pub tso: bool,
}

impl Default for LinkConfig {
    fn default() -> Self {
        LinkConfig {
            capacity: 1024,
            mtu: 1500,
            loss: 0.0,
            duplicate: 0.0,
            reorder: 0.0,
            corrupt: 0.0,
            delay: Duration::ZERO,
            jitter: Duration::ZERO,
            reorder_hold: Duration::from_millis(1),
            preallocate: false,
            checksum_offload: false,
            tso: false,
        }
    }
}

/// What happened to the frames one port sent.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct LinkStats {
    /// Frames accepted by `send` (including those the link then dropped).
    pub sent: u64,
    /// Frames handed to the peer's `recv`, duplicates included.
    pub delivered: u64,
    /// Dropped because the direction already held `capacity` frames.
    pub dropped_full: u64,
    /// Dropped because they were longer than `mtu + 14` bytes (or, marked
    /// for segmentation, than 64 KiB or on a link without `tso`).
    pub dropped_oversize: u64,
    /// Dropped by the `loss` fault.
    pub dropped_loss: u64,
    /// Extra copies queued by the `duplicate` fault.
    pub duplicated: u64,
    /// Frames that were overtaken by a later frame.
    pub reordered: u64,
    /// Frames with one bit flipped.
    pub corrupted: u64,
    /// Super-segments accepted (marked for segmentation, `tso` on).
    pub super_segments: u64,
}

/// Constructor for a pair of joined [`MemoryPort`]s.
#[derive(Debug)]
pub struct MemoryLink;

impl MemoryLink {
    /// Two ports joined by a link shaped by `config`. The same `seed` (and the
    /// same sequence of calls) gives the same faults, frame for frame.
    pub fn pair(config: LinkConfig, seed: u64) -> (MemoryPort, MemoryPort) {
        let shared = Rc::new(RefCell::new(Shared {
            config,
            // Distinct, fixed seeds per direction (see the module docs).
            dirs: [Direction::new(&config, seed), Direction::new(&config, seed ^ 0x5851_f42d_4c95_7f2d)],
            clocks: [Instant::ZERO; 2],
        }));
        (MemoryPort::new(&shared, 0), MemoryPort::new(&shared, 1))
    }
}

pub(crate) struct InFlight {
    frame: Frame,
    deliver_at: Instant,
    /// What the receiver is told: the checksum is vouched for (sent partial
    /// over an offloading link, and intact), and a super-segment's shape.
    meta: RxMeta,
}

/// Frames travelling from one port to the other (also one direction of a
/// [`crate::FaultDevice`]).
pub(crate) struct Direction {
    queue: VecDeque<InFlight>,
    /// A frame held back for reordering, and when it is released regardless.
    held: Option<(InFlight, Instant)>,
    pub(crate) pool: FramePool,
    rng: SplitMix64,
    /// Delivery time of the newest queued frame, to keep delivery FIFO.
    last_deliver_at: Instant,
    pub(crate) stats: LinkStats,
}

impl Direction {
    pub(crate) fn new(config: &LinkConfig, seed: u64) -> Direction {
        // One frame more than the queue holds: the receiver's borrowed frame.
        let frames = config.capacity.saturating_add(1);
        let pool = FramePool::new(config.max_frame(), frames);
        if config.preallocate {
            pool.prefill(frames);
        }
        Direction {
            queue: VecDeque::with_capacity(frames),
            held: None,
            pool,
            rng: SplitMix64::new(seed),
            last_deliver_at: Instant::ZERO,
            stats: LinkStats::default(),
        }
    }

    pub(crate) fn in_flight(&self) -> usize {
        self.queue.len() + usize::from(self.held.is_some())
    }

    /// Apply faults to a filled frame and queue it.
    pub(crate) fn enqueue(&mut self, config: &LinkConfig, mut frame: Frame, sent_at: Instant, meta: TxMeta) {
        let on = |p: f64| p > 0.0; // as `SplitMix64::chance` reads a rate
        if !on(config.loss)
            && !on(config.corrupt)
            && !on(config.duplicate)
            && !on(config.reorder)
            && config.jitter.is_zero()
        {
            // A perfect link (the benchmarks'): what the general path below
            // does with every fault off, without its random draws. Only the
            // zero jitter draw is skipped, and with every fault off nothing
            // else ever reads the generator.
            let deliver_at = (sent_at + config.delay).max(self.last_deliver_at);
            self.last_deliver_at = deliver_at;
            let meta = config.rx_meta(&meta);
            self.queue.push_back(InFlight { frame, deliver_at, meta });
            return;
        }
        if self.rng.chance(config.loss) {
            self.stats.dropped_loss += 1;
            return;
        }
        let mut meta = config.rx_meta(&meta);
        if self.rng.chance(config.corrupt) && !frame.is_empty() {
            let bit = self.rng.below(frame.len() as u64 * 8) as usize;
            frame[bit / 8] ^= 1 << (bit % 8);
            self.stats.corrupted += 1;
            // Unvouched: the receiver's own check (of a checksum left
            // partial, which cannot pass) drops it.
            meta.csum_verified = false;
        }
        let jitter = Duration::from_micros(self.rng.below(micros(config.jitter).saturating_add(1)));
        let deliver_at = (sent_at + config.delay + jitter).max(self.last_deliver_at);
        self.last_deliver_at = deliver_at;

        let copy = if self.rng.chance(config.duplicate) && self.in_flight() + 1 < config.capacity {
            self.pool.alloc(frame.len()).map(|mut copy| {
                copy.copy_from_slice(&frame);
                InFlight { frame: copy, deliver_at, meta }
            })
        } else {
            None
        };
        let original = InFlight { frame, deliver_at, meta };

        if let Some((mut held, _)) = self.held.take() {
            // This frame overtakes the one held back.
            self.queue.push_back(original);
            held.deliver_at = deliver_at;
            self.queue.push_back(held);
            self.stats.reordered += 1;
        } else if self.rng.chance(config.reorder) {
            self.held = Some((original, deliver_at + config.reorder_hold));
        } else {
            self.queue.push_back(original);
        }
        if let Some(copy) = copy {
            self.stats.duplicated += 1;
            self.queue.push_back(copy);
        }
    }

    /// The next frame visible at `now`, if any. Inlined into `recv`, its
    /// one caller on the hot path: left to the compiler, whether it was
    /// moved with unrelated changes to the crate (it decides per codegen
    /// unit), which moved the IPv4 rr instruction count that CI bounds.
    #[inline(always)]
    pub(crate) fn dequeue(&mut self, now: Instant) -> Option<(Frame, RxMeta)> {
        if let Some((_, release_at)) = &self.held {
            if now >= *release_at {
                let (held, _) = self.held.take().expect("checked above");
                self.queue.push_back(held);
            }
        }
        if self.queue.front()?.deliver_at > now {
            return None;
        }
        let next = self.queue.pop_front()?;
        self.stats.delivered += 1;
        Some((next.frame, next.meta))
    }

    pub(crate) fn next_delivery(&self) -> Option<Instant> {
        match (self.queue.front(), &self.held) {
            (Some(head), _) => Some(head.deliver_at),
            (None, Some((_, release_at))) => Some(*release_at),
            (None, None) => None,
        }
    }
}

impl LinkConfig {
    /// The longest frame the link carries: a super-segment with `tso`.
    pub(crate) fn max_frame(&self) -> usize {
        let ip = if self.offers_tso() { self.mtu.max(TSO_MAX) } else { self.mtu };
        ip.saturating_add(ETHERNET_HEADER_LEN)
    }

    fn offers_tso(&self) -> bool {
        self.tso && self.checksum_offload
    }

    /// Whether a frame of `len` bytes sent with `meta` may cross.
    pub(crate) fn fits(&self, len: usize, meta: &TxMeta) -> bool {
        match meta.gso_type {
            GsoType::None => len <= self.mtu.saturating_add(ETHERNET_HEADER_LEN),
            GsoType::TcpV4 | GsoType::TcpV6 => self.offers_tso() && meta.csum_partial && len <= self.max_frame(),
        }
    }

    /// What the receiving port says about a frame sent with `meta`.
    fn rx_meta(&self, meta: &TxMeta) -> RxMeta {
        let verified = self.checksum_offload && meta.csum_partial;
        RxMeta {
            csum_verified: verified,
            gso_type: meta.gso_type,
            gso_size: meta.gso_size,
            hdr_len: meta.hdr_len,
            ..Default::default()
        }
    }
}

fn micros(d: Duration) -> u64 {
    u64::try_from(d.as_micros()).unwrap_or(u64::MAX)
}

struct Shared {
    config: LinkConfig,
    /// `dirs[i]` carries frames sent by port `i`.
    dirs: [Direction; 2],
    /// Each port's clock (see the module docs).
    clocks: [Instant; 2],
}

impl Shared {
    fn advance(&mut self, side: usize, now: Instant) {
        if now > self.clocks[side] {
            self.clocks[side] = now;
        }
    }
}

/// One end of a [`MemoryLink`]. Implements [`Device`].
pub struct MemoryPort {
    rx: MemoryRx,
    tx: MemoryTx,
}

impl MemoryPort {
    fn new(shared: &Rc<RefCell<Shared>>, side: usize) -> MemoryPort {
        MemoryPort {
            rx: MemoryRx { shared: Rc::clone(shared), side, current: None },
            tx: MemoryTx { shared: Rc::clone(shared), side },
        }
    }

    /// Advance this port's clock to `now` (ignored if older). Frames sent
    /// afterwards are stamped with it. `recv(now)` does the same.
    pub fn set_now(&mut self, now: Instant) {
        self.tx.shared.borrow_mut().advance(self.tx.side, now);
    }

    /// This port's clock: the latest `now` it was given.
    pub fn now(&self) -> Instant {
        self.tx.shared.borrow().clocks[self.tx.side]
    }

    /// When the next frame travelling towards this port becomes visible to
    /// `recv` (possibly already in the past); `None` when nothing is in flight.
    pub fn next_delivery(&self) -> Option<Instant> {
        self.rx.shared.borrow().dirs[1 - self.rx.side].next_delivery()
    }

    /// Counters for the frames this port sent.
    pub fn stats(&self) -> LinkStats {
        self.tx.shared.borrow().dirs[self.tx.side].stats
    }

    /// Frames sent by this port that are still in flight.
    pub fn in_flight(&self) -> usize {
        self.tx.shared.borrow().dirs[self.tx.side].in_flight()
    }

    /// Frame buffers allocated so far for frames this port sends.
    pub fn buffers_allocated(&self) -> usize {
        self.tx.shared.borrow().dirs[self.tx.side].pool.allocated()
    }

    /// The link's configuration.
    pub fn config(&self) -> LinkConfig {
        self.tx.shared.borrow().config
    }
}

impl Device for MemoryPort {
    type Rx<'a> = &'a mut MemoryRx;
    type Tx<'a> = &'a mut MemoryTx;

    fn queues(&mut self) -> (&mut MemoryRx, &mut MemoryTx) {
        (&mut self.rx, &mut self.tx)
    }

    fn caps(&self) -> DeviceCaps {
        let c = self.config();
        DeviceCaps {
            mtu: c.mtu,
            rx_checksum: c.checksum_offload,
            tx_checksum: c.checksum_offload,
            tso4_max: if c.offers_tso() { TSO_MAX } else { 0 },
            tso6: c.offers_tso(),
            rx_coalesced: c.offers_tso(),
        }
    }
}

/// Receive side of a [`MemoryPort`].
pub struct MemoryRx {
    shared: Rc<RefCell<Shared>>,
    side: usize,
    /// The frame lent out by the last `recv`; back to the pool on the next.
    current: Option<Frame>,
}

impl RxQueue for MemoryRx {
    fn recv(&mut self, now: Instant) -> Option<(&[u8], RxMeta)> {
        self.current = None;
        let (frame, meta) = {
            let mut shared = self.shared.borrow_mut();
            shared.advance(self.side, now);
            shared.dirs[1 - self.side].dequeue(now)?
        };
        let frame = self.current.insert(frame);
        Some((&frame[..], meta))
    }
}

/// Transmit side of a [`MemoryPort`]. Frames are queued on the link inside
/// `send`; `flush` has nothing to do.
pub struct MemoryTx {
    shared: Rc<RefCell<Shared>>,
    side: usize,
}

impl TxQueue for MemoryTx {
    /// Never returns [`TxFull`]: like a switch port, a full link drops the
    /// frame (counted in [`LinkStats::dropped_full`]) without calling `fill`.
    fn send<F: FnOnce(&mut [u8])>(&mut self, len: usize, meta: TxMeta, fill: F) -> Result<(), TxFull> {
        let (mut frame, sent_at) = {
            let mut shared = self.shared.borrow_mut();
            let capacity = shared.config.capacity;
            let fits = shared.config.fits(len, &meta);
            let sent_at = shared.clocks[self.side];
            let dir = &mut shared.dirs[self.side];
            dir.stats.sent += 1;
            if !fits {
                dir.stats.dropped_oversize += 1;
                return Ok(());
            }
            if meta.gso_type != GsoType::None {
                dir.stats.super_segments += 1;
            }
            if dir.in_flight() >= capacity {
                dir.stats.dropped_full += 1;
                return Ok(());
            }
            match dir.pool.alloc(len) {
                Some(frame) => (frame, sent_at),
                None => {
                    dir.stats.dropped_full += 1;
                    return Ok(());
                }
            }
        };
        // The link is not borrowed while the caller's code runs.
        fill(&mut frame);
        let mut shared = self.shared.borrow_mut();
        // Borrow the two fields apart rather than copy the whole config.
        let Shared { config, dirs, .. } = &mut *shared;
        dirs[self.side].enqueue(config, frame, sent_at, meta);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn send(port: &mut MemoryPort, bytes: &[u8]) {
        let (_, tx) = port.queues();
        tx.send(bytes.len(), TxMeta::default(), |buf| buf.copy_from_slice(bytes)).unwrap();
    }

    fn recv(port: &mut MemoryPort, now: Instant) -> Option<Vec<u8>> {
        let (rx, _) = port.queues();
        rx.recv(now).map(|(frame, _)| frame.to_vec())
    }

    fn frame(i: u32) -> Vec<u8> {
        let mut f = vec![0u8; 60];
        f[..4].copy_from_slice(&i.to_be_bytes());
        f[59] = 0xa5;
        f
    }

    fn index(f: &[u8]) -> u32 {
        u32::from_be_bytes(f[..4].try_into().unwrap())
    }

    #[test]
    fn frames_cross_both_ways_unchanged() {
        let (mut a, mut b) = MemoryLink::pair(LinkConfig::default(), 1);
        let t = Instant::ZERO;
        let big: Vec<u8> = (0..1514).map(|i| (i * 7) as u8).collect();
        send(&mut a, &big);
        send(&mut a, &frame(1));
        send(&mut b, &frame(2));
        assert_eq!(recv(&mut b, t).unwrap(), big);
        assert_eq!(recv(&mut b, t).unwrap(), frame(1));
        assert_eq!(recv(&mut b, t), None);
        assert_eq!(recv(&mut a, t).unwrap(), frame(2));
        assert_eq!(recv(&mut a, t), None);
        assert_eq!(a.stats().sent, 2);
        assert_eq!(a.stats().delivered, 2);
        assert_eq!(b.stats().delivered, 1);
        assert_eq!(a.caps().mtu, 1500);
    }

    #[test]
    fn oversize_frames_dropped_without_fill() {
        let (mut a, mut b) = MemoryLink::pair(LinkConfig { mtu: 100, ..LinkConfig::default() }, 1);
        let (_, tx) = a.queues();
        tx.send(115, TxMeta::default(), |_| panic!("fill must not run")).unwrap();
        tx.send(114, TxMeta::default(), |buf| buf.fill(1)).unwrap();
        assert_eq!(a.stats().dropped_oversize, 1);
        assert_eq!(recv(&mut b, Instant::ZERO).unwrap().len(), 114);
    }

    #[test]
    fn super_segments_cross_whole_only_with_tso() {
        let gso = TxMeta {
            csum_partial: true,
            csum_start: 34,
            csum_offset: 16,
            gso_type: GsoType::TcpV4,
            gso_size: 1448,
            hdr_len: 66,
        };
        for (tso, offload) in [(true, true), (true, false), (false, true)] {
            let config = LinkConfig { tso, checksum_offload: offload, ..LinkConfig::default() };
            let (mut a, mut b) = MemoryLink::pair(config, 1);
            assert_eq!(a.caps().tso4_max > 0, tso && offload);
            assert_eq!(a.caps().rx_coalesced, tso && offload);
            let (_, tx) = a.queues();
            tx.send(14 + 65_535, gso, |buf| buf.fill(3)).unwrap();
            // Marked or not, nothing over the MTU crosses otherwise.
            tx.send(1515, TxMeta::default(), |_| panic!("oversize")).unwrap();
            let (rx, _) = b.queues();
            match rx.recv(Instant::ZERO) {
                Some((frame, meta)) => {
                    assert!(tso && offload);
                    assert_eq!(frame.len(), 14 + 65_535);
                    assert_eq!((meta.gso_type, meta.gso_size, meta.hdr_len), (GsoType::TcpV4, 1448, 66));
                    assert!(meta.csum_verified);
                    assert_eq!((a.stats().super_segments, a.stats().dropped_oversize), (1, 1));
                }
                None => assert_eq!((a.stats().super_segments, a.stats().dropped_oversize), (0, 2)),
            }
        }
    }

    #[test]
    fn capacity_bound_enforced_and_counted() {
        let config = LinkConfig { capacity: 8, ..LinkConfig::default() };
        let (mut a, mut b) = MemoryLink::pair(config, 1);
        for i in 0..20 {
            send(&mut a, &frame(i));
        }
        assert_eq!(a.in_flight(), 8);
        assert_eq!(a.stats().dropped_full, 12);
        let got: Vec<u32> = std::iter::from_fn(|| recv(&mut b, Instant::ZERO)).map(|f| index(&f)).collect();
        assert_eq!(got, (0..8).collect::<Vec<_>>());
        // Room again once drained.
        send(&mut a, &frame(99));
        assert_eq!(index(&recv(&mut b, Instant::ZERO).unwrap()), 99);
        assert_eq!(a.stats().dropped_full, 12);
    }

    #[test]
    fn delay_respects_virtual_time() {
        let config = LinkConfig { delay: Duration::from_millis(10), ..LinkConfig::default() };
        let (mut a, mut b) = MemoryLink::pair(config, 1);
        a.set_now(Instant::from_millis(5));
        send(&mut a, &frame(1));
        assert_eq!(b.next_delivery(), Some(Instant::from_millis(15)));
        assert_eq!(recv(&mut b, Instant::from_millis(14)), None);
        assert_eq!(recv(&mut b, Instant::from_micros(14_999)), None);
        assert_eq!(index(&recv(&mut b, Instant::from_millis(15)).unwrap()), 1);
        assert_eq!(b.next_delivery(), None);

        // recv(now) on the sender advances its clock too; an older now is ignored.
        let (rx, _) = a.queues();
        assert!(rx.recv(Instant::from_millis(100)).is_none());
        a.set_now(Instant::from_millis(50));
        assert_eq!(a.now(), Instant::from_millis(100));
        send(&mut a, &frame(2));
        assert_eq!(b.next_delivery(), Some(Instant::from_millis(110)));
    }

    #[test]
    fn jitter_keeps_fifo_within_bounds() {
        let config =
            LinkConfig { delay: Duration::from_millis(10), jitter: Duration::from_millis(5), ..LinkConfig::default() };
        let (mut a, mut b) = MemoryLink::pair(config, 3);
        for i in 0..100u32 {
            a.set_now(Instant::from_millis(u64::from(i)));
            send(&mut a, &frame(i));
        }
        let mut expected = 0;
        let mut now = Instant::ZERO;
        while let Some(at) = b.next_delivery() {
            assert!(at >= now);
            now = at;
            let f = recv(&mut b, now).unwrap();
            assert_eq!(index(&f), expected);
            let sent = Instant::from_millis(u64::from(expected));
            assert!(now >= sent + Duration::from_millis(10));
            expected += 1;
        }
        assert_eq!(expected, 100);
    }

    #[test]
    fn reorder_lets_next_frame_overtake() {
        let config = LinkConfig { reorder: 1.0, ..LinkConfig::default() };
        let (mut a, mut b) = MemoryLink::pair(config, 1);
        send(&mut a, &frame(1)); // held back
        assert_eq!(recv(&mut b, Instant::ZERO), None);
        send(&mut a, &frame(2)); // overtakes 1
        let got: Vec<u32> = std::iter::from_fn(|| recv(&mut b, Instant::ZERO)).map(|f| index(&f)).collect();
        assert_eq!(got, [2, 1]);
        assert_eq!(a.stats().reordered, 1);

        // A lone held frame is released after `reorder_hold`.
        send(&mut a, &frame(3));
        assert_eq!(b.next_delivery(), Some(Instant::from_millis(1)));
        assert_eq!(recv(&mut b, Instant::from_micros(999)), None);
        assert_eq!(index(&recv(&mut b, Instant::from_millis(1)).unwrap()), 3);
        assert_eq!(a.stats().reordered, 1);
    }

    /// Send `n` numbered frames from a to b, delivering everything, and return
    /// what arrived plus a's counters.
    fn run(config: LinkConfig, seed: u64, n: u32) -> (Vec<Vec<u8>>, LinkStats) {
        let (mut a, mut b) = MemoryLink::pair(config, seed);
        let mut got = Vec::new();
        let mut now = Instant::ZERO;
        for i in 0..n {
            a.set_now(now);
            send(&mut a, &frame(i));
            now += Duration::from_micros(100);
            while let Some(f) = recv(&mut b, now) {
                got.push(f);
            }
        }
        while let Some(at) = b.next_delivery() {
            now = now.max(at);
            while let Some(f) = recv(&mut b, now) {
                got.push(f);
            }
        }
        (got, a.stats())
    }

    fn assert_rate(what: &str, count: u64, n: u32, p: f64) {
        let expected = p * f64::from(n);
        let sigma = (expected * (1.0 - p)).sqrt();
        assert!(
            (count as f64 - expected).abs() < 5.0 * sigma + 1.0,
            "{what}: {count} events in {n} frames, expected about {expected}"
        );
    }

    #[test]
    fn faults_happen_at_configured_rates() {
        const N: u32 = 10_000;
        let config = LinkConfig {
            capacity: 4096,
            loss: 0.05,
            duplicate: 0.03,
            reorder: 0.04,
            corrupt: 0.02,
            delay: Duration::from_micros(250),
            jitter: Duration::from_micros(100),
            ..LinkConfig::default()
        };
        let (got, stats) = run(config, 0xfeed, N);
        assert_eq!(stats.sent, u64::from(N));
        assert_rate("loss", stats.dropped_loss, N, 0.05);
        assert_rate("duplicate", stats.duplicated, N, 0.03 * 0.95);
        assert_rate("corrupt", stats.corrupted, N, 0.02 * 0.95);
        // A frame is held with p=0.04 only when none is held already, and the
        // next surviving frame overtakes it unless the hold timer runs first.
        assert_rate("reorder", stats.reordered, N, 0.04 * 0.95 * 0.95);
        assert_eq!(stats.delivered, got.len() as u64);
        assert_eq!(stats.delivered, u64::from(N) - stats.dropped_loss + stats.duplicated);

        // The observed frames agree with the counters.
        let corrupted = got.iter().filter(|f| f[4..59].iter().any(|&b| b != 0) || f[59] != 0xa5).count();
        assert!(corrupted as u64 <= stats.corrupted + stats.duplicated);
        let inversions = got.windows(2).filter(|w| index(&w[0]) > index(&w[1])).count();
        assert!(inversions > 0);
    }

    #[test]
    fn same_seed_same_sequence() {
        let config = LinkConfig {
            loss: 0.1,
            duplicate: 0.1,
            reorder: 0.1,
            corrupt: 0.1,
            delay: Duration::from_micros(300),
            jitter: Duration::from_micros(300),
            ..LinkConfig::default()
        };
        let first = run(config, 7, 10_000);
        let second = run(config, 7, 10_000);
        assert_eq!(first, second);
        let other = run(config, 8, 10_000);
        assert_ne!(first.0, other.0, "another seed gives other faults");
    }

    #[test]
    fn steady_state_recycles_buffers() {
        let (mut a, mut b) = MemoryLink::pair(LinkConfig::default(), 1);
        for i in 0..10_000 {
            send(&mut a, &frame(i));
            send(&mut a, &frame(i));
            assert!(recv(&mut b, Instant::ZERO).is_some());
            assert!(recv(&mut b, Instant::ZERO).is_some());
        }
        // Two in flight plus the one the receiver is holding.
        assert!(a.buffers_allocated() <= 3, "{}", a.buffers_allocated());
        let (a, _) = MemoryLink::pair(LinkConfig { capacity: 16, preallocate: true, ..LinkConfig::default() }, 1);
        assert_eq!(a.buffers_allocated(), 17);
    }
}
