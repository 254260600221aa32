//! The `dpdk:` kind: a DPDK port (crate `ustack-dpdk`, feature `dpdk`).
//! Without the feature the kind still parses, and opening it says how to
//! rebuild; [`DpdkDevice`] is then a type with no values.
//!
//! `dpdk:DEVICE[,mem=MB][,huge][,eal=ARGS][,rxd=N][,txd=N][,mbufs=N][,promisc=on|off][,KEY=VALUE…]`:
//! `DEVICE` is a virtual device (`net_tap0`, `net_virtio_user0`, …) or a
//! PCI address; options ustack does not know are the driver's own
//! arguments (`iface=dtap0` for `net_tap`), passed with the device to the EAL.

use crate::{DeviceError, Options, ShardQueue, Waitable};

/// How a `dpdk:` spec is written.
pub const SPEC_FORM: &str =
    "dpdk:DEVICE[,mem=MB][,huge][,eal=ARGS][,rxd=N][,txd=N][,mbufs=N][,promisc=on|off][,DRIVER-ARG=VALUE…] \
     (e.g. dpdk:net_tap0,iface=dtap0; needs a build with --features dpdk)";

#[cfg(feature = "dpdk")]
pub use ustack_dpdk::DpdkDevice;

/// Open the spec's port (the `dpdk:` arm of `DeviceSpec::open`).
pub(crate) fn open(
    opts: &mut Options<'_>,
    name: &str,
    shard: Option<&ShardQueue>,
) -> Result<crate::AnyDevice, DeviceError> {
    #[cfg(not(feature = "dpdk"))]
    {
        let _ = (opts, name, shard);
        Err(DeviceError::Unsupported {
            what: "this ustack was built without DPDK".into(),
            hint: "rebuild with --features dpdk (cargo build --release --features dpdk; needs libdpdk-dev)",
        })
    }
    #[cfg(feature = "dpdk")]
    {
        let config = config(opts, name)?;
        if shard.is_some_and(|q| q.count > 1) {
            return Err(opts.error("dpdk: runs one queue per process for now: no --cores with it".into()));
        }
        let dev = DpdkDevice::open(&config).map_err(|e| match e {
            ustack_dpdk::DpdkError::NoPort { .. } => opts.error(format!("{e}: {}", e.hint())),
            e => DeviceError::Unsupported { what: e.to_string(), hint: e.hint() },
        })?;
        Ok(crate::AnyDevice::Dpdk(dev))
    }
}

/// The spec's options as a port config: ustack's own keys, the rest the
/// driver's arguments.
#[cfg(feature = "dpdk")]
fn config(opts: &mut Options<'_>, name: &str) -> Result<ustack_dpdk::DpdkConfig, DeviceError> {
    let d = ustack_dpdk::DpdkConfig::default();
    let config = ustack_dpdk::DpdkConfig {
        device: name.to_owned(),
        mem_mb: opts.number("mem", d.mem_mb.into(), 16..=65536)? as u32,
        huge: opts.switch("huge", d.huge)?,
        eal: opts.take("eal").map(|a| a.split_whitespace().map(str::to_owned).collect()).unwrap_or_default(),
        rxd: opts.number("rxd", d.rxd.into(), 32..=4096)? as u16,
        txd: opts.number("txd", d.txd.into(), 32..=4096)? as u16,
        mbufs: opts.number("mbufs", d.mbufs.into(), 1024..=1 << 20)? as u32,
        promisc: opts.switch("promisc", d.promisc)?,
        devargs: opts.take_rest(),
    };
    Ok(config)
}

/// Without the feature: a device that cannot exist.
#[cfg(not(feature = "dpdk"))]
mod absent {
    use std::convert::Infallible;
    use ustack_core::phy::{Device, DeviceCaps, RxMeta, RxQueue, TxFull, TxMeta, TxQueue};
    use ustack_core::time::Instant;

    /// A DPDK port; this build has none (no `dpdk` feature), so no value
    /// of this type is ever made.
    pub struct DpdkDevice {
        pub(super) never: Infallible,
    }

    impl Device for DpdkDevice {
        type Rx<'a> = DpdkDevice;
        type Tx<'a> = DpdkDevice;
        fn queues(&mut self) -> (DpdkDevice, DpdkDevice) {
            match self.never {}
        }
        fn caps(&self) -> DeviceCaps {
            match self.never {}
        }
    }

    impl RxQueue for DpdkDevice {
        fn recv(&mut self, _: Instant) -> Option<(&[u8], RxMeta)> {
            match self.never {}
        }
    }

    impl TxQueue for DpdkDevice {
        fn send<F: FnOnce(&mut [u8])>(&mut self, _: usize, _: TxMeta, _: F) -> Result<(), TxFull> {
            match self.never {}
        }
    }
}

#[cfg(not(feature = "dpdk"))]
pub use absent::DpdkDevice;

impl Waitable for DpdkDevice {
    fn wait_fd(&self) -> Option<std::os::fd::RawFd> {
        #[cfg(feature = "dpdk")]
        return DpdkDevice::wait_fd(self);
        #[cfg(not(feature = "dpdk"))]
        match self.never {}
    }

    fn device_stats(&self) -> Vec<(&'static str, u64)> {
        #[cfg(not(feature = "dpdk"))]
        match self.never {}
        #[cfg(feature = "dpdk")]
        {
            let s = self.stats();
            let mut v = vec![
                ("rx_frames", s.rx_frames),
                ("rx_bytes", s.rx_bytes),
                ("rx_dropped_segmented", s.rx_dropped_segmented),
                ("tx_frames", s.tx_frames),
                ("tx_bytes", s.tx_bytes),
                ("tx_full", s.tx_full),
                ("tx_no_mbuf", s.tx_no_mbuf),
                ("tx_dropped_oversize", s.tx_dropped_oversize),
                ("tx_queued", self.tx_queued() as u64),
            ];
            v.extend(self.port_stats());
            v
        }
    }
}
