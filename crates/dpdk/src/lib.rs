//! ustack on DPDK: one port of a DPDK poll-mode driver as a ustack device.
//!
//! Built only with the `dpdk` feature (against the installed DPDK, found by
//! `pkg-config libdpdk`); without it this crate is empty, so the default
//! build needs no DPDK. `ustack-device` registers the kind (`dpdk:` specs)
//! and turns [`DpdkError`] into its own errors.
//!
//! * [`DpdkDevice::open`] starts DPDK's environment (EAL) once per process
//!   with the arguments of a [`DpdkConfig`] (by default no hugepages, one
//!   lcore, no shared files, so it runs anywhere as root), finds the port,
//!   creates its mbuf pool and starts one receive and one transmit queue.
//! * Frames are mbufs: received in bursts of [`BURST`] by one call, each lent
//!   in place to the stack and freed back to its pool when the next one is
//!   taken; transmitted frames are written straight into mbufs from the pool
//!   and handed to the port in one burst per flush.
//! * Checksum offloads are used only where the port reports them.

#![deny(missing_docs)]

#[cfg(feature = "dpdk")]
mod device;
#[cfg(feature = "dpdk")]
mod ffi;

#[cfg(feature = "dpdk")]
pub use device::{DpdkDevice, DpdkRx, DpdkStats, DpdkTx, BURST};

use std::fmt;

/// How to start DPDK and the port; `ustack-device` fills it from the spec.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DpdkConfig {
    /// The port: a virtual device (`net_tap0`, `net_virtio_user0`, …), given
    /// to the EAL as `--vdev`, or a PCI address, given as `-a`.
    pub device: String,
    /// The driver's own arguments (`iface=dtap0`, `path=/tmp/sock`, …),
    /// appended to the `--vdev`/`-a` argument.
    pub devargs: Vec<(String, String)>,
    /// Memory for DPDK in MiB (`-m`).
    pub mem_mb: u32,
    /// Use hugepages; without them (the default) the EAL runs with
    /// `--no-huge --no-shconf` and a file prefix of its own.
    pub huge: bool,
    /// More EAL arguments, given as they are (after ustack's own).
    pub eal: Vec<String>,
    /// Receive ring entries asked for (the driver may adjust them).
    pub rxd: u16,
    /// Transmit ring entries asked for.
    pub txd: u16,
    /// Mbufs in the pool (receive ring, frames in flight, the pool's cache).
    pub mbufs: u32,
    /// Put the port in promiscuous mode: the stack has a MAC of its own.
    pub promisc: bool,
}

impl Default for DpdkConfig {
    fn default() -> Self {
        DpdkConfig {
            device: String::new(),
            devargs: Vec::new(),
            mem_mb: 256,
            huge: false,
            eal: Vec::new(),
            rxd: 512,
            txd: 512,
            mbufs: 4096,
            promisc: true,
        }
    }
}

impl DpdkConfig {
    /// Whether `device` names a virtual device (`net_…`, `eth_…`) rather
    /// than a PCI address.
    pub fn is_vdev(&self) -> bool {
        !self.device.contains(':')
    }

    /// The EAL's command line for this config, with `cpu` as its one lcore
    /// and `prefix` as its file prefix (argv[0] first).
    pub fn eal_args(&self, cpu: usize, prefix: &str) -> Vec<String> {
        let mut args: Vec<String> = vec!["ustack".into(), "-l".into(), cpu.to_string()];
        args.extend(["-m".into(), self.mem_mb.to_string()]);
        if !self.huge {
            args.extend(["--no-huge".into(), "--no-shconf".into()]);
        }
        args.push(format!("--file-prefix={prefix}"));
        args.extend(["--no-telemetry".into(), "--log-level=notice".into()]);
        let mut dev = self.device.clone();
        for (k, v) in &self.devargs {
            dev.push(',');
            dev.push_str(k);
            if !v.is_empty() {
                dev.push('=');
                dev.push_str(v);
            }
        }
        if self.is_vdev() {
            args.extend(["--no-pci".into(), format!("--vdev={dev}")]);
        } else {
            args.extend(["-a".into(), dev]);
        }
        args.extend(self.eal.iter().cloned());
        args
    }
}

/// Why a DPDK port could not be opened; each says what to do.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum DpdkError {
    /// `rte_eal_init` refused its arguments or failed.
    Eal {
        /// The EAL arguments it was given.
        args: String,
        /// DPDK's reason.
        reason: String,
    },
    /// The EAL started but has no port by that name.
    NoPort {
        /// The name asked for.
        name: String,
        /// The ports it has.
        ports: Vec<String>,
    },
    /// A step of setting up the port failed.
    Setup {
        /// The port.
        name: String,
        /// The step and DPDK's reason.
        reason: String,
    },
    /// DPDK's environment starts once per process and was already used.
    AlreadyStarted,
}

impl DpdkError {
    /// What to do about it, in a few words.
    pub fn hint(&self) -> &'static str {
        match self {
            DpdkError::Eal { .. } => {
                "the EAL's own messages above say why; check the eal= options (without hugepages keep \
                 huge=off), and run as root"
            }
            DpdkError::NoPort { .. } => {
                "name a virtual device (net_tap0,iface=NAME; net_virtio_user0,path=SOCK) or the PCI \
                 address of a port bound to a DPDK driver (dpdk-devbind.py --status)"
            }
            DpdkError::Setup { .. } => "try smaller rxd=/txd=/mbufs=, or more memory with mem=MB",
            DpdkError::AlreadyStarted => "run one dpdk: device per ustack process (and no --cores with dpdk:)",
        }
    }
}

impl fmt::Display for DpdkError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            DpdkError::Eal { args, reason } => write!(f, "DPDK's EAL did not start ({reason}; EAL arguments: {args})"),
            DpdkError::NoPort { name, ports } if ports.is_empty() => {
                write!(f, "DPDK has no port {name} (the EAL found no ports at all)")
            }
            DpdkError::NoPort { name, ports } => {
                write!(f, "DPDK has no port {name} (its ports: {})", ports.join(", "))
            }
            DpdkError::Setup { name, reason } => write!(f, "DPDK port {name}: {reason}"),
            DpdkError::AlreadyStarted => write!(f, "DPDK was already started in this process"),
        }
    }
}

impl std::error::Error for DpdkError {}

/// Complete a partial L4 checksum in software: the field holds the
/// pseudo-header sum, so summing from `start` to the end, the field
/// included, gives the checksum. False if the offsets do not fit.
#[cfg_attr(not(feature = "dpdk"), allow(dead_code))]
pub(crate) fn finish_checksum(frame: &mut [u8], start: usize, offset: usize) -> bool {
    let field = start + offset;
    if start >= frame.len() || field + 2 > frame.len() {
        return false;
    }
    let mut sum: u32 = 0;
    let mut chunks = frame[start..].chunks_exact(2);
    for c in &mut chunks {
        sum += u32::from(u16::from_be_bytes([c[0], c[1]]));
    }
    if let [last] = chunks.remainder() {
        sum += u32::from(*last) << 8;
    }
    while sum > 0xffff {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    let mut csum = !(sum as u16);
    if csum == 0 && offset == 6 {
        csum = 0xffff; // UDP: zero means "no checksum"
    }
    frame[field..field + 2].copy_from_slice(&csum.to_be_bytes());
    true
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn eal_args_for_a_vdev_without_hugepages() {
        let c = DpdkConfig {
            device: "net_tap0".into(),
            devargs: vec![("iface".into(), "dtap0".into()), ("persist".into(), String::new())],
            eal: vec!["--log-level=debug".into()],
            ..DpdkConfig::default()
        };
        let a = c.eal_args(3, "ustack-1").join(" ");
        assert_eq!(
            a,
            "ustack -l 3 -m 256 --no-huge --no-shconf --file-prefix=ustack-1 --no-telemetry --log-level=notice \
             --no-pci --vdev=net_tap0,iface=dtap0,persist --log-level=debug"
        );
    }

    #[test]
    fn eal_args_for_a_pci_port_with_hugepages() {
        let c = DpdkConfig { device: "0000:03:00.0".into(), huge: true, mem_mb: 1024, ..DpdkConfig::default() };
        assert!(!c.is_vdev());
        let a = c.eal_args(0, "p").join(" ");
        assert!(a.ends_with("-a 0000:03:00.0"), "{a}");
        assert!(!a.contains("--no-huge") && a.contains("-m 1024"), "{a}");
    }

    #[test]
    fn errors_name_the_port_and_its_neighbours() {
        let e = DpdkError::NoPort { name: "net_tap9".into(), ports: vec!["net_tap0".into()] };
        assert_eq!(e.to_string(), "DPDK has no port net_tap9 (its ports: net_tap0)");
        assert!(!e.hint().is_empty());
    }

    #[test]
    fn software_checksum_matches_a_full_sum() {
        // A UDP segment whose field holds a pseudo-header sum.
        let mut seg = vec![0u8; 14];
        seg.extend_from_slice(&[0x12, 0x34, 0x00, 0x35, 0x00, 0x0b, 0xab, 0xcd, 1, 2, 3]);
        assert!(finish_checksum(&mut seg, 14, 6));
        let mut sum: u32 = 0;
        for c in seg[14..].chunks(2) {
            sum += u32::from(u16::from_be_bytes([c[0], *c.get(1).unwrap_or(&0)]));
        }
        // With the pseudo-header sum that was in the field, the segment
        // now sums to all ones.
        let mut total = sum + 0xabcd;
        while total > 0xffff {
            total = (total & 0xffff) + (total >> 16);
        }
        assert_eq!(total, 0xffff);
        assert!(!finish_checksum(&mut seg, 30, 6), "offsets past the frame are refused");
    }
}
