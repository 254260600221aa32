//! What an event loop needs from a device beyond its queues: a descriptor to
//! sleep on, the device's own deadline, its counters, and whether it still
//! works. Each device kind implements it beside its queues, so a new device
//! is a new file in this crate and nothing else.

use std::os::fd::{AsRawFd, RawFd};

use ustack_core::time::Instant;

use crate::{DeviceError, FaultDevice, MemoryPort, PcapDevice, TapDevice};
use ustack_core::phy::Device;

/// A device an event loop can drive and sleep on.
pub trait Waitable {
    /// The descriptor to poll(2) for readability; `None` for in-memory links
    /// (the loop then polls them).
    fn wait_fd(&self) -> Option<RawFd>;
    /// When the device itself has work due (frames it holds back), if ever.
    fn next_deadline(&self) -> Option<Instant> {
        None
    }
    /// The device's own counters by name, for the control socket's snapshot
    /// (`ustack stats`, `ustack top`). Called about once a second, never on
    /// the packet path.
    fn device_stats(&self) -> Vec<(&'static str, u64)> {
        Vec::new()
    }
    /// A failure the device cannot recover from (its interface was deleted,
    /// its rings broke): the loop stops and reports it. Checked after each
    /// sleep, so it costs nothing per frame.
    fn failure(&self) -> Option<&DeviceError> {
        None
    }
    /// The loop found nothing to do and is about to sleep on
    /// [`wait_fd`](Waitable::wait_fd): the device clears what woke it last
    /// and asks its peer to wake it again. `false` when work came in
    /// meanwhile: the loop turns again instead of sleeping.
    ///
    /// A device whose loop calls this before every sleep may leave that
    /// bookkeeping out of [`Device::queues`] (the shared-memory ring devices
    /// then make no system call per turn); one never told keeps doing it
    /// there, so a loop that never calls this still works.
    fn prepare_sleep(&mut self) -> bool {
        true
    }
    /// How long the loop should keep polling the device after the last frame
    /// it received before sleeping (busy polling: no wake-up per frame, at
    /// the cost of a core); `None` to sleep at once.
    fn busy_poll(&self) -> Option<std::time::Duration> {
        None
    }
}

impl Waitable for TapDevice {
    fn wait_fd(&self) -> Option<RawFd> {
        Some(self.as_raw_fd())
    }
    fn device_stats(&self) -> Vec<(&'static str, u64)> {
        let s = self.stats();
        vec![
            ("rx_frames", s.rx_frames),
            ("rx_bytes", s.rx_bytes),
            ("rx_errors", s.rx_errors),
            ("tx_frames", s.tx_frames),
            ("tx_bytes", s.tx_bytes),
            ("tx_full", s.tx_full),
            ("tx_blocked", s.tx_blocked),
            ("tx_dropped", s.tx_dropped),
            ("tx_ring_in_use", self.tx_queued() as u64),
            ("tx_ring_size", crate::tap::TX_QUEUE_FRAMES as u64),
        ]
    }
    fn failure(&self) -> Option<&DeviceError> {
        self.failure()
    }
}

/// The in-memory link has no descriptor: the loop polls it.
impl Waitable for MemoryPort {
    fn wait_fd(&self) -> Option<RawFd> {
        None
    }
}

impl<D: Device + Waitable> Waitable for PcapDevice<D> {
    fn wait_fd(&self) -> Option<RawFd> {
        self.inner().wait_fd()
    }
    fn next_deadline(&self) -> Option<Instant> {
        self.inner().next_deadline()
    }
    fn device_stats(&self) -> Vec<(&'static str, u64)> {
        let mut v = self.inner().device_stats();
        v.push(("pcap_errors", self.capture_errors()));
        v
    }
    fn failure(&self) -> Option<&DeviceError> {
        self.inner().failure()
    }
    fn prepare_sleep(&mut self) -> bool {
        self.inner_mut().prepare_sleep()
    }
    fn busy_poll(&self) -> Option<std::time::Duration> {
        self.inner().busy_poll()
    }
}

impl<D: Device + Waitable> Waitable for FaultDevice<D> {
    fn wait_fd(&self) -> Option<RawFd> {
        self.inner().wait_fd()
    }
    fn next_deadline(&self) -> Option<Instant> {
        earliest(self.next_delivery(), self.inner().next_deadline())
    }
    fn device_stats(&self) -> Vec<(&'static str, u64)> {
        let (i, o) = (self.inbound_stats(), self.outbound_stats());
        let mut v = self.inner().device_stats();
        v.extend([
            ("fault_in_delivered", i.delivered),
            ("fault_in_dropped_full", i.dropped_full),
            ("fault_in_dropped_oversize", i.dropped_oversize),
            ("fault_in_dropped_loss", i.dropped_loss),
            ("fault_in_duplicated", i.duplicated),
            ("fault_in_reordered", i.reordered),
            ("fault_in_corrupted", i.corrupted),
            ("fault_out_delivered", o.delivered),
            ("fault_out_dropped_full", o.dropped_full),
            ("fault_out_dropped_oversize", o.dropped_oversize),
            ("fault_out_dropped_loss", o.dropped_loss),
            ("fault_out_duplicated", o.duplicated),
            ("fault_out_reordered", o.reordered),
            ("fault_out_corrupted", o.corrupted),
        ]);
        v
    }
    fn failure(&self) -> Option<&DeviceError> {
        self.inner().failure()
    }
}

/// The earlier of two optional deadlines.
pub fn earliest(a: Option<Instant>, b: Option<Instant>) -> Option<Instant> {
    match (a, b) {
        (Some(a), Some(b)) => Some(a.min(b)),
        (a, b) => a.or(b),
    }
}
