//! One concrete type for "whatever device the spec named": [`AnyDevice`] over
//! the kinds, [`DeviceChain`] over the wrappers around them. Commands, the
//! event loop and embedders hold these instead of matching over every
//! combination of kind × capture × faults.
//!
//! Dispatch is an enum `match` per call (per frame on the queues): a
//! predictable branch, no allocation, no trait objects (the queue traits
//! have generic methods and lifetimes, so they are not object-safe anyway).
//! A new kind is one variant in [`AnyDevice`] plus its arm in
//! [`DeviceSpec::open`](crate::DeviceSpec::open).

use std::os::fd::RawFd;

use ustack_core::phy::{Device, DeviceCaps, RxMeta, RxQueue, TxFull, TxMeta, TxQueue};
use ustack_core::time::Instant;

use crate::{AfPacketDevice, DeviceError, FaultDevice, PcapDevice, TapDevice, Waitable};

/// Writes an enum of devices with its queue enums and every trait method of
/// `Device`, `RxQueue`, `TxQueue` and `Waitable` forwarded to the variant.
/// A method added to those traits must be forwarded here too.
macro_rules! device_enum {
    (
        $(#[$meta:meta])*
        pub enum $name:ident, $rx:ident, $tx:ident { $($(#[$vmeta:meta])* $var:ident($ty:ty)),+ $(,)? }
    ) => {
        $(#[$meta])*
        pub enum $name {
            $($(#[$vmeta])* $var($ty)),+
        }

        #[doc = concat!("Receive queue of a [`", stringify!($name), "`].")]
        pub enum $rx<'a> {
            $(#[allow(missing_docs)] $var(<$ty as Device>::Rx<'a>)),+
        }

        #[doc = concat!("Transmit queue of a [`", stringify!($name), "`].")]
        pub enum $tx<'a> {
            $(#[allow(missing_docs)] $var(<$ty as Device>::Tx<'a>)),+
        }

        impl Device for $name {
            type Rx<'a> = $rx<'a>;
            type Tx<'a> = $tx<'a>;

            fn queues(&mut self) -> ($rx<'_>, $tx<'_>) {
                match self {
                    $($name::$var(d) => {
                        let (rx, tx) = d.queues();
                        ($rx::$var(rx), $tx::$var(tx))
                    })+
                }
            }

            fn caps(&self) -> DeviceCaps {
                match self {
                    $($name::$var(d) => d.caps()),+
                }
            }
        }

        impl RxQueue for $rx<'_> {
            #[inline]
            fn recv(&mut self, now: Instant) -> Option<(&[u8], RxMeta)> {
                match self {
                    $($rx::$var(q) => q.recv(now)),+
                }
            }
        }

        impl TxQueue for $tx<'_> {
            #[inline]
            fn send<F: FnOnce(&mut [u8])>(&mut self, len: usize, meta: TxMeta, fill: F) -> Result<(), TxFull> {
                match self {
                    $($tx::$var(q) => q.send(len, meta, fill)),+
                }
            }

            #[inline]
            fn send_parts(&mut self, parts: &[&[u8]], meta: TxMeta) -> Result<(), TxFull> {
                match self {
                    $($tx::$var(q) => q.send_parts(parts, meta)),+
                }
            }

            fn flush(&mut self) {
                match self {
                    $($tx::$var(q) => q.flush()),+
                }
            }
        }

        impl Waitable for $name {
            fn wait_fd(&self) -> Option<RawFd> {
                match self {
                    $($name::$var(d) => d.wait_fd()),+
                }
            }
            fn next_deadline(&self) -> Option<Instant> {
                match self {
                    $($name::$var(d) => d.next_deadline()),+
                }
            }
            fn device_stats(&self) -> Vec<(&'static str, u64)> {
                match self {
                    $($name::$var(d) => d.device_stats()),+
                }
            }
            fn failure(&self) -> Option<&DeviceError> {
                match self {
                    $($name::$var(d) => d.failure()),+
                }
            }
            fn prepare_sleep(&mut self) -> bool {
                match self {
                    $($name::$var(d) => d.prepare_sleep()),+
                }
            }
            fn busy_poll(&self) -> Option<std::time::Duration> {
                match self {
                    $($name::$var(d) => d.busy_poll()),+
                }
            }
        }
    };
}

device_enum! {
    /// A device of any kind a [`DeviceSpec`](crate::DeviceSpec) can name.
    pub enum AnyDevice, AnyRx, AnyTx {
        /// `tap:NAME`
        Tap(TapDevice),
        /// `af_xdp:IFACE[,options]`
        AfXdp(crate::AfXdpDevice),
        /// `af_packet:IFACE[,options]`
        AfPacket(AfPacketDevice),
        /// `vhost-user:PATH[,options]`
        VhostUser(crate::VhostUserDevice),
        /// `virtio-user:PATH[,options]`
        VirtioUser(crate::VirtioUserDevice),
        /// `dpdk:DEVICE[,options]` (a type with no values without the `dpdk` feature)
        Dpdk(crate::dpdk::DpdkDevice),
    }
}

device_enum! {
    /// A device with its optional wrappers, as [`ChainSpec::open`](crate::ChainSpec::open) builds it.
    pub enum DeviceChain, ChainRx, ChainTx {
        /// The device alone.
        Plain(AnyDevice),
        /// Faults both ways (`--impair`).
        Fault(FaultDevice<AnyDevice>),
        /// A capture of every frame (`--pcap`).
        Pcap(PcapDevice<AnyDevice>),
        /// Both: the capture sees what the stack sends and receives.
        PcapFault(PcapDevice<FaultDevice<AnyDevice>>),
    }
}

impl AnyDevice {
    /// The TAP, if this is one (for what only a TAP can do, like giving its
    /// kernel side an address).
    pub fn as_tap(&self) -> Option<&TapDevice> {
        match self {
            AnyDevice::Tap(t) => Some(t),
            #[allow(unreachable_patterns)]
            _ => None,
        }
    }
}

impl DeviceChain {
    /// The device under the wrappers.
    pub fn device(&self) -> &AnyDevice {
        match self {
            DeviceChain::Plain(d) => d,
            DeviceChain::Fault(f) => f.inner(),
            DeviceChain::Pcap(p) => p.inner(),
            DeviceChain::PcapFault(p) => p.inner().inner(),
        }
    }
}
