//! The device boundary: what the core needs from a link, and nothing more.
//!
//! A device is split into a receive queue and a transmit queue that can be
//! borrowed at the same time, so the core can read a frame in place (no copy)
//! and write its replies straight into the device's own transmit buffers while
//! the received frame is still borrowed. Both sides are burst-oriented: a
//! device may fill a batch of frames per system call on `recv` and hold
//! transmitted frames until `flush`.
//!
//! Implementations live in `ustack-device` (TAP, in-memory link, pcap
//! capture); the core only sees these traits and performs no I/O itself.

use crate::time::Instant;

/// Offload and size facts a device reports; the core queries, never assumes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct DeviceCaps {
    /// Largest IP packet (Ethernet payload) the link carries, normally 1500.
    pub mtu: usize,
    /// The device verifies IPv4/TCP/UDP checksums on receive, so the core may
    /// trust frames marked [`RxMeta::csum_verified`].
    pub rx_checksum: bool,
    /// The device (or its peer) completes checksums on transmit when asked
    /// through [`TxMeta::csum_partial`].
    pub tx_checksum: bool,
}

impl Default for DeviceCaps {
    fn default() -> Self {
        DeviceCaps { mtu: 1500, rx_checksum: false, tx_checksum: false }
    }
}

/// Facts about one received frame.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct RxMeta {
    /// The device (or kernel peer) vouches for the L3/L4 checksums.
    pub csum_verified: bool,
    /// The L4 checksum field holds only the pseudo-header sum
    /// (CHECKSUM_PARTIAL from a kernel sender on veth/TAP): the payload is
    /// intact but the field must not be verified as a full checksum.
    pub csum_partial: bool,
}

/// Facts about one frame to transmit.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct TxMeta {
    /// The L4 checksum holds only the pseudo-header sum; the device completes it.
    pub csum_partial: bool,
}

/// The transmit queue is full; the frame was not sent.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TxFull;

/// Receive side of a device.
pub trait RxQueue {
    /// The next received frame, borrowed until the next call. `None` when no
    /// frame is ready now (the caller then waits on the device).
    fn recv(&mut self, now: Instant) -> Option<(&[u8], RxMeta)>;
}

/// Transmit side of a device.
pub trait TxQueue {
    /// Reserve a frame of exactly `len` bytes, let `fill` write all of it, and
    /// queue it. `fill` must write every byte: the buffer may hold stale data.
    /// Fails without calling `fill` when the queue has no room.
    fn send<F: FnOnce(&mut [u8])>(&mut self, len: usize, meta: TxMeta, fill: F) -> Result<(), TxFull>;
    /// Push queued frames to the link (one system call per batch where the
    /// device can). Cheap when nothing is queued.
    fn flush(&mut self) {}
}

/// A link the stack can drive.
///
/// The queues are lent for one poll (`'a`), so a wrapper device (capture,
/// fault injection, tracing) can hold its inner device's queues by borrow,
/// with no `unsafe`.
pub trait Device {
    type Rx<'a>: RxQueue
    where
        Self: 'a;
    type Tx<'a>: TxQueue
    where
        Self: 'a;
    /// Both queues at once, so a reply can be written while the request is borrowed.
    fn queues(&mut self) -> (Self::Rx<'_>, Self::Tx<'_>);
    fn caps(&self) -> DeviceCaps;
}

impl<Q: RxQueue + ?Sized> RxQueue for &mut Q {
    fn recv(&mut self, now: Instant) -> Option<(&[u8], RxMeta)> {
        (**self).recv(now)
    }
}

impl<Q: TxQueue + ?Sized> TxQueue for &mut Q {
    fn send<F: FnOnce(&mut [u8])>(&mut self, len: usize, meta: TxMeta, fill: F) -> Result<(), TxFull> {
        (**self).send(len, meta, fill)
    }
    fn flush(&mut self) {
        (**self).flush()
    }
}
