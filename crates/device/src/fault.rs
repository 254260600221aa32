//! Fault injection around any device: the in-memory link's faults (loss,
//! duplication, reordering, corruption, delay, jitter), applied to the frames
//! a real device carries, in both directions.
//!
//! This is the impaired path for tests against real peers where the kernel
//! has no `netem` (some VM kernels are built without it): wrap the TAP, and a
//! Linux peer on the other side sees a lossy, reordering, duplicating,
//! corrupting link, as the stack does. Corrupted frames towards the stack must
//! be caught by its checksums; corrupted frames towards the kernel by the
//! kernel's.
//!
//! Each direction is a bounded queue with its own seeded generator (the same
//! machinery as [`crate::MemoryLink`]). Frames from the wire are copied in and
//! lent to the stack when due; frames from the stack are copied in and written
//! to the wire when due — on the next `send`, `flush` or `recv`. The event loop
//! learns when held frames come due from [`FaultDevice::next_delivery`].

use crate::memory::{Direction, LinkConfig, LinkStats};
use crate::pool::Frame;
use std::cell::Cell;
use ustack_core::phy::{Device, DeviceCaps, RxMeta, RxQueue, TxFull, TxMeta, TxQueue};
use ustack_core::time::Instant;

/// A device whose frames cross a faulty link on their way in and out.
pub struct FaultDevice<D: Device> {
    inner: D,
    config: LinkConfig,
    /// Frames from the wire towards the stack.
    inbound: Direction,
    /// Frames from the stack towards the wire.
    outbound: Direction,
    /// The frame lent by the last `recv`.
    current: Option<Frame>,
    now: Cell<Instant>,
}

impl<D: Device> FaultDevice<D> {
    /// Wrap `inner`; `config`'s capacity, MTU and fault rates apply to each
    /// direction, and `seed` makes the faults repeatable.
    pub fn new(inner: D, config: LinkConfig, seed: u64) -> FaultDevice<D> {
        FaultDevice {
            inner,
            inbound: Direction::new(&config, seed),
            outbound: Direction::new(&config, seed ^ 0x2545_f491_4f6c_dd1d),
            config,
            current: None,
            now: Cell::new(Instant::ZERO),
        }
    }

    /// The wrapped device, e.g. to read its own statistics.
    pub fn inner(&self) -> &D {
        &self.inner
    }

    /// What happened to frames from the wire towards the stack.
    pub fn inbound_stats(&self) -> LinkStats {
        self.inbound.stats
    }

    /// What happened to frames from the stack towards the wire.
    pub fn outbound_stats(&self) -> LinkStats {
        self.outbound.stats
    }

    /// When a held frame (either way) comes due, if any is held.
    pub fn next_delivery(&self) -> Option<Instant> {
        match (self.inbound.next_delivery(), self.outbound.next_delivery()) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }
}

impl<D: Device> Device for FaultDevice<D> {
    type Rx<'a>
        = FaultRx<'a, D::Rx<'a>>
    where
        Self: 'a;
    type Tx<'a>
        = FaultTx<'a, D::Tx<'a>>
    where
        Self: 'a;

    fn queues(&mut self) -> (Self::Rx<'_>, Self::Tx<'_>) {
        let (rx, tx) = self.inner.queues();
        let (config, now) = (&self.config, &self.now);
        (
            FaultRx { inner: rx, inbound: &mut self.inbound, current: &mut self.current, config, now },
            FaultTx { inner: tx, outbound: &mut self.outbound, config, now },
        )
    }

    fn caps(&self) -> DeviceCaps {
        let inner = self.inner.caps();
        // Frames are copied through our queues, so offloads do not survive.
        DeviceCaps { mtu: inner.mtu.min(self.config.mtu), ..Default::default() }
    }
}

/// Receive side of a [`FaultDevice`], lent for one poll.
pub struct FaultRx<'a, R> {
    inner: R,
    inbound: &'a mut Direction,
    current: &'a mut Option<Frame>,
    config: &'a LinkConfig,
    now: &'a Cell<Instant>,
}

impl<R: RxQueue> RxQueue for FaultRx<'_, R> {
    fn recv(&mut self, now: Instant) -> Option<(&[u8], RxMeta)> {
        *self.current = None;
        self.now.set(self.now.get().max(now));
        // Take in what the wire has, up to the queue's capacity.
        while self.inbound.in_flight() < self.config.capacity {
            let Some((frame, meta)) = self.inner.recv(now) else { break };
            self.inbound.stats.sent += 1;
            match self.inbound.pool.alloc(frame.len()) {
                Some(mut copy) => {
                    copy.copy_from_slice(frame);
                    let tx_meta = TxMeta { csum_partial: meta.csum_partial, ..Default::default() };
                    self.inbound.enqueue(self.config, copy, now, tx_meta);
                }
                None => self.inbound.stats.dropped_full += 1,
            }
        }
        let (frame, _) = self.inbound.dequeue(now)?;
        let frame = self.current.insert(frame);
        Some((&frame[..], RxMeta::default()))
    }
}

/// Transmit side of a [`FaultDevice`], lent for one poll: frames join the
/// outbound queue and go to the wire when due, on this or a later `send`
/// or `flush`.
pub struct FaultTx<'a, T> {
    inner: T,
    outbound: &'a mut Direction,
    config: &'a LinkConfig,
    now: &'a Cell<Instant>,
}

impl<T: TxQueue> FaultTx<'_, T> {
    fn release(&mut self) {
        while let Some((frame, _)) = self.outbound.dequeue(self.now.get()) {
            // The inner device copies; a full wire queue drops, like a NIC.
            let _ = self.inner.send(frame.len(), TxMeta::default(), |b| b.copy_from_slice(&frame));
        }
    }
}

impl<T: TxQueue> TxQueue for FaultTx<'_, T> {
    fn send<F: FnOnce(&mut [u8])>(&mut self, len: usize, meta: TxMeta, fill: F) -> Result<(), TxFull> {
        self.outbound.stats.sent += 1;
        if self.outbound.in_flight() >= self.config.capacity {
            self.outbound.stats.dropped_full += 1;
            return Ok(());
        }
        let Some(mut frame) = self.outbound.pool.alloc(len) else {
            self.outbound.stats.dropped_full += 1;
            return Ok(());
        };
        fill(&mut frame);
        self.outbound.enqueue(self.config, frame, self.now.get(), meta);
        self.release();
        Ok(())
    }

    fn flush(&mut self) {
        self.release();
        self.inner.flush();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::memory::MemoryLink;
    use ustack_core::time::Duration;

    /// A clean memory link with faults wrapped around one end behaves like a
    /// faulty link: rates as configured, delays in virtual time.
    #[test]
    fn faults_apply_both_ways() {
        let (a, mut b) = MemoryLink::pair(LinkConfig::default(), 1);
        let faults = LinkConfig { loss: 0.1, duplicate: 0.05, delay: Duration::from_millis(5), ..LinkConfig::default() };
        let mut fa = FaultDevice::new(a, faults, 9);
        let frame = [0x42u8; 100];
        let n = 2000;
        // Outbound: from the wrapped side to b, which reads as it goes.
        let mut got = 0u64;
        for i in 0..n + 20 {
            let (_, mut tx) = fa.queues();
            tx.now.set(Instant::from_millis(i));
            if i < n {
                tx.send(frame.len(), TxMeta::default(), |f| f.copy_from_slice(&frame)).unwrap();
            }
            tx.flush();
            let (rx, _) = b.queues();
            while rx.recv(Instant::from_millis(i)).is_some() {
                got += 1;
            }
        }
        let s = fa.outbound_stats();
        assert_eq!(s.sent, n);
        assert_eq!(got, s.delivered);
        assert!(s.dropped_loss > n / 20 && s.dropped_loss < n / 5, "{s:?}");
        assert!(s.duplicated > 0);
        // Inbound: from b to the wrapped side, delayed by 5 ms.
        let (_, tx) = b.queues();
        tx.send(frame.len(), TxMeta::default(), |f| f.copy_from_slice(&frame)).unwrap();
        let mut seen_at = None;
        for ms in 0..20 {
            let (mut rx, _) = fa.queues();
            if rx.recv(Instant::from_secs(200) + Duration::from_millis(ms)).is_some() {
                seen_at = Some(ms);
                break;
            }
        }
        // Lost with 10% chance under this seed? Then nothing arrives: the
        // seed is fixed, so the outcome is too.
        if let Some(ms) = seen_at {
            assert!(ms >= 5, "delivered after the configured delay, not before");
        }
    }
}
