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
///
/// `Default` is a plain 1500-byte Ethernet link with no offload at all.
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
    /// TCP segmentation offload for IPv4 (virtio's `VIRTIO_NET_F_HOST_TSO4`,
    /// Linux's `TUNSETOFFLOAD` `TUN_F_TSO4`): the largest IP packet the
    /// device takes marked [`GsoType::TcpV4`], which it (or its peer) cuts
    /// into segments of [`TxMeta::gso_size`] payload bytes. 0: no TSO. Only
    /// used together with `tx_checksum` (a super-segment's checksum is
    /// always left partial, as virtio requires).
    pub tso4_max: usize,
    /// TCP segmentation offload for IPv6 too (virtio's `HOST_TSO6`, TUN's
    /// `TUN_F_TSO6`): super-segments marked [`GsoType::TcpV6`], up to the
    /// same `tso4_max`.
    pub tso6: bool,
    /// The device may hand over coalesced TCP segments (GRO/LRO, virtio's
    /// `VIRTIO_NET_F_GUEST_TSO4`) larger than `mtu`, marked in
    /// [`RxMeta::gso_type`] with the size of the segments they stand for.
    pub rx_coalesced: bool,
}

impl Default for DeviceCaps {
    fn default() -> Self {
        DeviceCaps { mtu: 1500, rx_checksum: false, tx_checksum: false, tso4_max: 0, tso6: false, rx_coalesced: false }
    }
}

impl DeviceCaps {
    /// The largest TCP/IPv4 super-segment the core may hand this device:
    /// `tso4_max` when it also completes checksums and exceeds the MTU,
    /// otherwise 0 (segments no larger than the MTU).
    pub fn tso4_limit(&self) -> usize {
        if self.tx_checksum && self.tso4_max > self.mtu {
            self.tso4_max.min(usize::from(u16::MAX))
        } else {
            0
        }
    }

    /// [`DeviceCaps::tso4_limit`] for TCP over IPv6: 0 unless `tso6`.
    pub fn tso6_limit(&self) -> usize {
        if self.tso6 { self.tso4_limit() } else { 0 }
    }
}

/// Which segmentation a frame needs or has had, as virtio-net's `gso_type`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum GsoType {
    /// A frame no larger than the MTU (`VIRTIO_NET_HDR_GSO_NONE`).
    #[default]
    None,
    /// TCP over IPv4 (`VIRTIO_NET_HDR_GSO_TCPV4`): on transmit, cut into
    /// segments of `gso_size` payload bytes; on receive, a coalesced segment
    /// that stands for segments of `gso_size` bytes.
    TcpV4,
    /// TCP over IPv6 (`VIRTIO_NET_HDR_GSO_TCPV6`), as `TcpV4`.
    TcpV6,
}

/// Facts about one received frame (the meaning of virtio-net's header).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct RxMeta {
    /// The device (or kernel peer) vouches for the L3/L4 checksums
    /// (`VIRTIO_NET_HDR_F_DATA_VALID`).
    pub csum_verified: bool,
    /// The L4 checksum field holds only the pseudo-header sum
    /// (CHECKSUM_PARTIAL from a kernel sender on veth/TAP,
    /// `VIRTIO_NET_HDR_F_NEEDS_CSUM`): the payload is intact but the field
    /// must not be verified as a full checksum.
    pub csum_partial: bool,
    /// With `csum_partial`: where the checksummed part starts, from the start
    /// of the frame, and where in it the checksum field is (virtio's
    /// `csum_start` and `csum_offset`).
    pub csum_start: u16,
    /// With `csum_partial`: where the checksum field is, from `csum_start`.
    pub csum_offset: u16,
    /// A coalesced segment (GRO) and what it was made of; `None` for an
    /// ordinary frame.
    pub gso_type: GsoType,
    /// Payload bytes of each segment a coalesced frame stands for.
    pub gso_size: u16,
    /// Bytes of headers (Ethernet, IP, TCP) before the payload.
    pub hdr_len: u16,
}

/// Facts about one frame to transmit (the meaning of virtio-net's header).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct TxMeta {
    /// The L4 checksum holds only the pseudo-header sum; the device completes it.
    pub csum_partial: bool,
    /// With `csum_partial`: where the device starts summing, from the start
    /// of the frame, and where in that the checksum goes.
    pub csum_start: u16,
    /// With `csum_partial`: where the checksum field is, from `csum_start`.
    pub csum_offset: u16,
    /// A super-segment for the device to cut ([`DeviceCaps::tso4_max`]);
    /// `None` for a frame that goes as it is.
    pub gso_type: GsoType,
    /// Payload bytes per segment the device cuts (the MSS in use).
    pub gso_size: u16,
    /// Bytes of headers (Ethernet, IP, TCP) repeated on every segment.
    pub hdr_len: u16,
}

/// Copy `parts`, in order, into `buf` (exactly as long as they are together).
pub fn gather(parts: &[&[u8]], buf: &mut [u8]) {
    let mut at = 0;
    for p in parts {
        buf[at..at + p.len()].copy_from_slice(p);
        at += p.len();
    }
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
    /// Queue the frame made of `parts` in order: a forwarder's path (the
    /// switch), where the frame is already whole in another device's buffer
    /// (its head perhaps rewritten: `[&new_macs, &frame[12..]]`). A device
    /// that can write it out straight from the slices overrides this and
    /// spares the copy into its own staging buffer that `send` costs.
    fn send_parts(&mut self, parts: &[&[u8]], meta: TxMeta) -> Result<(), TxFull> {
        self.send(parts.iter().map(|p| p.len()).sum(), meta, |buf| gather(parts, buf))
    }
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
    /// The receive queue, lent for one poll.
    type Rx<'a>: RxQueue
    where
        Self: 'a;
    /// The transmit queue, lent for one poll.
    type Tx<'a>: TxQueue
    where
        Self: 'a;
    /// Both queues at once, so a reply can be written while the request is borrowed.
    fn queues(&mut self) -> (Self::Rx<'_>, Self::Tx<'_>);
    /// What the link offers: MTU, checksum and segmentation offloads. The
    /// stack reads it once per poll, so a device may change it (a link's MTU
    /// changing) between polls.
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
    fn send_parts(&mut self, parts: &[&[u8]], meta: TxMeta) -> Result<(), TxFull> {
        (**self).send_parts(parts, meta)
    }
    fn flush(&mut self) {
        (**self).flush()
    }
}
