//! Links for ustack. Placeholder docs, expanded below.

pub mod memory;
pub mod pool;
mod rng;
pub mod tap;

pub use memory::{LinkConfig, LinkStats, MemoryLink, MemoryPort, MemoryRx, MemoryTx};
pub use pool::{Frame, FramePool};
pub use tap::{DeviceError, TapDevice, TapRx, TapStats, TapTx};
