//! A multi-queue in-memory link: one peer port on one side, `N` queue ports
//! on the other, with the peer's frames steered to a queue by the RSS
//! (Toeplitz) hash of their flow, as a NIC with receive-side scaling does.
//! The link for simulating a sharded stack (one stack per queue) against
//! its clients in one thread, under virtual time.
//!
//! [`MultiQueueLink::build`] returns the [`PeerPort`] and the
//! [`QueuePort`]s. A frame the peer sends goes to queue
//! `rss::queue_of(hash, N)` when it is IPv4 ([`Toeplitz::hash_frame`]); a
//! frame that is not (ARP) is copied to every queue, as the sharded runtime
//! shares what resolves neighbours with every shard. Every queue port's
//! frames go to the peer, in the order they were sent.
//!
//! Each direction (peer → queue `k`, queues → peer) is a
//! [`MemoryLink`](crate::MemoryLink) direction: the same [`LinkConfig`]
//! faults, bounds, clocks and counters, and no allocation per frame once
//! its pool is warm. Time reaches each port as it does a
//! [`MemoryPort`](crate::MemoryPort): through `recv(now)` or `set_now`.

use std::cell::RefCell;
use std::rc::Rc;

use ustack_core::phy::{Device, DeviceCaps, GsoType, RxMeta, RxQueue, TxFull, TxMeta, TxQueue};
use ustack_core::rss::{queue_of, Toeplitz};
use ustack_core::time::Instant;

use crate::memory::{Direction, LinkConfig, LinkStats};
use crate::pool::Frame;

/// Constructor for a multi-queue link (see the module docs).
#[derive(Debug)]
pub struct MultiQueueLink;

/// Where the peer's frames went, per queue.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct SteeringStats {
    /// IPv4 frames steered to each queue by their hash.
    pub steered: Vec<u64>,
    /// Frames with no flow (ARP) copied to every queue.
    pub broadcast: u64,
}

struct Shared {
    config: LinkConfig,
    toeplitz: Toeplitz,
    /// `to_queue[k]` carries the peer's frames to queue `k`.
    to_queue: Vec<Direction>,
    /// Every queue's frames to the peer.
    to_peer: Direction,
    /// The peer's clock, then each queue's.
    peer_clock: Instant,
    queue_clocks: Vec<Instant>,
    steering: SteeringStats,
    /// Where the peer's frames are written before they are steered.
    scratch: Vec<u8>,
}

impl MultiQueueLink {
    /// A peer port and `queues` queue ports (at least one), steered by
    /// `toeplitz`. The same `seed` gives the same faults.
    pub fn build(config: LinkConfig, queues: usize, toeplitz: Toeplitz, seed: u64) -> (PeerPort, Vec<QueuePort>) {
        let queues = queues.max(1);
        let shared = Rc::new(RefCell::new(Shared {
            config,
            toeplitz,
            to_queue: (0..queues)
                .map(|k| Direction::new(&config, seed ^ (k as u64 + 1).wrapping_mul(0x9e37_79b9_7f4a_7c15)))
                .collect(),
            to_peer: Direction::new(&config, seed ^ 0x5851_f42d_4c95_7f2d),
            peer_clock: Instant::ZERO,
            queue_clocks: vec![Instant::ZERO; queues],
            steering: SteeringStats { steered: vec![0; queues], broadcast: 0 },
            scratch: Vec::new(),
        }));
        let peer = PeerPort { shared: Rc::clone(&shared), current: None };
        let ports = (0..queues).map(|k| QueuePort { shared: Rc::clone(&shared), queue: k, current: None }).collect();
        (peer, ports)
    }
}

fn caps_of(c: &LinkConfig) -> DeviceCaps {
    let tso = c.tso && c.checksum_offload;
    DeviceCaps {
        mtu: c.mtu,
        rx_checksum: c.checksum_offload,
        tx_checksum: c.checksum_offload,
        tso4_max: if tso { usize::from(u16::MAX) } else { 0 },
        tso6: tso,
        rx_coalesced: tso,
    }
}

/// Take a frame from `dir`'s pool for a send of `len` bytes, or count why not.
fn reserve(dir: &mut Direction, config: &LinkConfig, len: usize, meta: &TxMeta) -> Option<Frame> {
    dir.stats.sent += 1;
    if !config.fits(len, meta) {
        dir.stats.dropped_oversize += 1;
        return None;
    }
    if meta.gso_type != GsoType::None {
        dir.stats.super_segments += 1;
    }
    if dir.in_flight() >= config.capacity {
        dir.stats.dropped_full += 1;
        return None;
    }
    let frame = dir.pool.alloc(len);
    if frame.is_none() {
        dir.stats.dropped_full += 1;
    }
    frame
}

/// The single port on the peer's side. Implements [`Device`].
pub struct PeerPort {
    shared: Rc<RefCell<Shared>>,
    current: Option<Frame>,
}

impl PeerPort {
    /// Advance the peer's clock (an older `now` is ignored).
    pub fn set_now(&mut self, now: Instant) {
        let mut s = self.shared.borrow_mut();
        s.peer_clock = s.peer_clock.max(now);
    }

    /// When the next frame towards the peer becomes visible.
    pub fn next_delivery(&self) -> Option<Instant> {
        self.shared.borrow().to_peer.next_delivery()
    }

    /// Counters of the frames the peer sent to queue `k`.
    pub fn stats_to(&self, k: usize) -> LinkStats {
        self.shared.borrow().to_queue.get(k).map(|d| d.stats).unwrap_or_default()
    }

    /// Where the peer's frames were steered.
    pub fn steering(&self) -> SteeringStats {
        self.shared.borrow().steering.clone()
    }

    /// The number of queues.
    pub fn queues(&self) -> usize {
        self.shared.borrow().to_queue.len()
    }
}

impl Device for PeerPort {
    type Rx<'a> = PeerRx<'a>;
    type Tx<'a> = PeerTx<'a>;

    fn queues(&mut self) -> (PeerRx<'_>, PeerTx<'_>) {
        (PeerRx { shared: &self.shared, current: &mut self.current }, PeerTx { shared: &self.shared })
    }

    fn caps(&self) -> DeviceCaps {
        caps_of(&self.shared.borrow().config)
    }
}

/// Receive side of the [`PeerPort`].
pub struct PeerRx<'a> {
    shared: &'a Rc<RefCell<Shared>>,
    current: &'a mut Option<Frame>,
}

impl RxQueue for PeerRx<'_> {
    fn recv(&mut self, now: Instant) -> Option<(&[u8], RxMeta)> {
        *self.current = None;
        let (frame, meta) = {
            let mut s = self.shared.borrow_mut();
            s.peer_clock = s.peer_clock.max(now);
            s.to_peer.dequeue(now)?
        };
        Some((&self.current.insert(frame)[..], meta))
    }
}

/// Transmit side of the [`PeerPort`]: steers each frame to its queue.
pub struct PeerTx<'a> {
    shared: &'a Rc<RefCell<Shared>>,
}

impl TxQueue for PeerTx<'_> {
    /// Never [`TxFull`]: a full queue drops the frame and counts it.
    fn send<F: FnOnce(&mut [u8])>(&mut self, len: usize, meta: TxMeta, fill: F) -> Result<(), TxFull> {
        // The hash needs the frame's bytes before its queue is known: fill a
        // scratch buffer (reused, so no allocation once warm), then copy.
        let mut scratch = std::mem::take(&mut self.shared.borrow_mut().scratch);
        scratch.clear();
        scratch.resize(len, 0);
        fill(&mut scratch);
        let mut s = self.shared.borrow_mut();
        let Shared { config, toeplitz, to_queue, peer_clock, steering, .. } = &mut *s;
        let queues = to_queue.len();
        let targets = match toeplitz.hash_frame(&scratch) {
            Some(hash) => {
                let k = queue_of(hash, queues);
                steering.steered[k] += 1;
                k..k + 1
            }
            None => {
                steering.broadcast += 1;
                0..queues
            }
        };
        for dir in &mut to_queue[targets] {
            if let Some(mut frame) = reserve(dir, config, len, &meta) {
                frame.copy_from_slice(&scratch);
                dir.enqueue(config, frame, *peer_clock, meta);
            }
        }
        s.scratch = scratch;
        Ok(())
    }
}

/// One queue of the sharded side. Implements [`Device`].
pub struct QueuePort {
    shared: Rc<RefCell<Shared>>,
    queue: usize,
    current: Option<Frame>,
}

impl QueuePort {
    /// Which queue this is.
    pub fn queue(&self) -> usize {
        self.queue
    }

    /// Advance this queue's clock (an older `now` is ignored).
    pub fn set_now(&mut self, now: Instant) {
        let mut s = self.shared.borrow_mut();
        let c = &mut s.queue_clocks[self.queue];
        *c = (*c).max(now);
    }

    /// When the next frame towards this queue becomes visible.
    pub fn next_delivery(&self) -> Option<Instant> {
        self.shared.borrow().to_queue[self.queue].next_delivery()
    }

    /// Counters of the frames all queues sent to the peer.
    pub fn stats_to_peer(&self) -> LinkStats {
        self.shared.borrow().to_peer.stats
    }
}

impl Device for QueuePort {
    type Rx<'a> = QueueRx<'a>;
    type Tx<'a> = QueueTx<'a>;

    fn queues(&mut self) -> (QueueRx<'_>, QueueTx<'_>) {
        (
            QueueRx { shared: &self.shared, queue: self.queue, current: &mut self.current },
            QueueTx { shared: &self.shared, queue: self.queue },
        )
    }

    fn caps(&self) -> DeviceCaps {
        caps_of(&self.shared.borrow().config)
    }
}

/// Receive side of a [`QueuePort`].
pub struct QueueRx<'a> {
    shared: &'a Rc<RefCell<Shared>>,
    queue: usize,
    current: &'a mut Option<Frame>,
}

impl RxQueue for QueueRx<'_> {
    fn recv(&mut self, now: Instant) -> Option<(&[u8], RxMeta)> {
        *self.current = None;
        let (frame, meta) = {
            let mut s = self.shared.borrow_mut();
            let c = &mut s.queue_clocks[self.queue];
            *c = (*c).max(now);
            s.to_queue[self.queue].dequeue(now)?
        };
        Some((&self.current.insert(frame)[..], meta))
    }
}

/// Transmit side of a [`QueuePort`]: everything goes to the peer.
pub struct QueueTx<'a> {
    shared: &'a Rc<RefCell<Shared>>,
    queue: usize,
}

impl TxQueue for QueueTx<'_> {
    /// Never [`TxFull`]: a full link drops the frame and counts it.
    fn send<F: FnOnce(&mut [u8])>(&mut self, len: usize, meta: TxMeta, fill: F) -> Result<(), TxFull> {
        let (mut frame, sent_at) = {
            let mut s = self.shared.borrow_mut();
            let sent_at = s.queue_clocks[self.queue];
            let Shared { config, to_peer, .. } = &mut *s;
            match reserve(to_peer, config, len, &meta) {
                Some(f) => (f, sent_at),
                None => return Ok(()),
            }
        };
        fill(&mut frame);
        let mut s = self.shared.borrow_mut();
        let Shared { config, to_peer, .. } = &mut *s;
        to_peer.enqueue(config, frame, sent_at, meta);
        Ok(())
    }
}
