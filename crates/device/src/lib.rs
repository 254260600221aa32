//! Links for ustack: everything that moves frames between the sans-IO core
//! and the outside world, behind the core's [`Device`](ustack_core::phy::Device)
//! traits.
//!
//! * [`tap`] — [`TapDevice`], a Linux TAP interface opened through
//!   `/dev/net/tun` with our own ioctls: non-blocking, one `read(2)` per
//!   received frame, transmitted frames queued in a small ring and written on
//!   `flush`. Its fd goes into the runtime's `poll(2)`. Errors
//!   ([`DeviceError`]) say what is wrong and what to do about it.
//! * [`af_packet`] — [`AfPacketDevice`], an existing interface through an
//!   AF_PACKET socket's mmap'd rings: a TPACKET_V3 receive ring whose
//!   frames are lent in place, a transmit ring kicked once per burst, kernel
//!   partial checksums passed on as metadata.
//! * [`memory`] — [`MemoryLink`], two [`MemoryPort`]s joined in one process:
//!   the link for simulations, tests and benchmarks. Bounded queues, seeded
//!   fault injection (loss, duplication, reordering, corruption, delay and
//!   jitter) in virtual time, and no allocation per frame. Time reaches it
//!   through `recv(now)` and [`MemoryPort::set_now`]; a simulation jumps to
//!   [`MemoryPort::next_delivery`].
//! * [`multiqueue`] — [`MultiQueueLink`]: one peer port and N queue
//!   ports, the peer's frames steered to a queue by the RSS Toeplitz hash
//!   of their flow (ARP copied to every queue), for sharded stacks.
//! * [`sim`] — [`sim::ShardSim`], the simulation kit: N shard stacks on a
//!   multi-queue link and a peer stack, in virtual time, one thread.
//! * [`pcap`] — [`PcapDevice`] wraps any device and records every frame it
//!   receives and transmits to a classic pcap file, stamped with the core's
//!   `now`; [`PcapWriter`] and [`PcapReader`] are usable on their own.
//! * [`fault`] — [`FaultDevice`] wraps any device in the in-memory link's
//!   faults, both ways: the impaired path for tests against real peers.
//! * [`pool`] — [`FramePool`], bounded and recycling: a [`Frame`] is an owned
//!   buffer that goes back to its pool when dropped.
//!
//! * [`af_xdp`] — [`AfXdpDevice`], an AF_XDP socket on one queue of an
//!   existing interface: a UMEM with fill, completion, RX and TX rings,
//!   batched ring operations, frames read in place; the XDP program that
//!   feeds it is loaded and attached (BPF link) by ustack itself.
//! * [`vhost_user`] — [`VhostUserDevice`], a vhost-user backend port (the
//!   device side of virtio-net, like DPDK's `net_vhost`): a frontend's
//!   virtqueues in its shared memory, read and written in place.
//! * [`virtio_user`] — [`VirtioUserDevice`], the driver side (like DPDK's
//!   `virtio_user`): a stack on a vhost-user backend, memory shared by memfd.
//! * [`dpdk`] — the `dpdk:` kind, a DPDK port (crate `ustack-dpdk`, built
//!   with the `dpdk` feature; without it the kind says how to rebuild).
//! * [`spec`] — [`DeviceSpec`] parses `KIND:NAME[,key=value…]` and opens an
//!   [`AnyDevice`]; [`ChainSpec`] adds the capture and fault wrappers and
//!   builds a [`DeviceChain`]. [`Waitable`] is what an event loop needs from
//!   a device: a descriptor to sleep on, a deadline, counters, failures.
//!
//! Everything here is single-threaded (one device per event loop, as the
//! runtime runs one loop per core).

#![deny(missing_docs)]

pub mod af_xdp;
pub mod af_packet;
mod any;
pub mod dpdk;
mod error;
pub mod fault;
pub mod memory;
pub mod multiqueue;
pub mod pcap;
pub mod pool;
mod rng;
pub mod sim;
mod soft_offload;
pub mod spec;
pub mod steer_bpf;
pub mod tap;
pub mod vhost_user;
pub mod virtio_user;
pub mod vnet;
mod waitable;

pub use af_packet::{AfPacketConfig, AfPacketDevice, AfPacketRx, AfPacketStats, AfPacketTx, RingVersion};
pub use fault::{FaultDevice, FaultRx, FaultTx};
pub use memory::{LinkConfig, LinkStats, MemoryLink, MemoryPort, MemoryRx, MemoryTx};
pub use multiqueue::{MultiQueueLink, PeerPort, QueuePort, SteeringStats};
pub use pcap::{PcapDevice, PcapReader, PcapRecord, PcapRx, PcapTx, PcapWriter};
pub use pool::{Frame, FramePool};
pub use af_xdp::{AfXdpConfig, AfXdpDevice, AfXdpRx, AfXdpStats, AfXdpTx};
pub use any::{AnyDevice, AnyRx, AnyTx, ChainRx, ChainTx, DeviceChain};
pub use error::DeviceError;
pub use spec::{ChainSpec, DeviceKind, DeviceSpec, Options, ShardQueue};
pub use tap::{TapConfig, TapDevice, TapRx, TapStats, TapTx};
pub use vhost_user::{VhostUserConfig, VhostUserControl, VhostUserDevice, VhostUserQueues, VhostUserRx, VhostUserTx};
pub use virtio_user::{VirtioUserConfig, VirtioUserDevice, VirtioUserRx, VirtioUserTx};
pub use waitable::{earliest, Waitable};
