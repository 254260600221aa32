//! Links for ustack. Placeholder docs, expanded below.

pub mod memory;
pub mod pcap;
pub mod pool;
mod rng;
pub mod tap;

pub use memory::{LinkConfig, LinkStats, MemoryLink, MemoryPort, MemoryRx, MemoryTx};
pub use pcap::{PcapDevice, PcapReader, PcapRecord, PcapRx, PcapTx, PcapWriter};
pub use pool::{Frame, FramePool};
pub use tap::{DeviceError, TapDevice, TapRx, TapStats, TapTx};
