//! Opening the stack on a device, shared by the commands that run one
//! (`up`, `get`): the device flags, their checks, the TAP and the stack.

use crate::config::Settings;
use crate::error::CliError;
use clap::Args;
use std::net::Ipv4Addr;
use ustack_core::phy::Device;
use ustack_core::{Ipv4Cidr, Stack};
use ustack_device::{LinkConfig, TapDevice};
use ustack_runtime::os_seed;
use ustack_wire::EthernetAddress;

#[derive(Args, Debug)]
pub struct DeviceArgs {
    /// The device to run on: tap:NAME (created if it does not exist).
    #[arg(long, value_name = "KIND:NAME")]
    pub device: String,
    /// The stack's address and subnet.
    #[arg(long, value_name = "A.B.C.D/N")]
    pub ip: Ipv4Cidr,
    /// Next hop for destinations outside the subnet.
    #[arg(long, value_name = "A.B.C.D")]
    pub gateway: Option<Ipv4Addr>,
    /// The stack's MAC address (default: a random locally administered one).
    #[arg(long, value_name = "MAC", value_parser = parse_mac)]
    pub mac: Option<EthernetAddress>,
    /// Give this address to the kernel's side of the TAP, so the host can reach the stack at once.
    #[arg(long, value_name = "A.B.C.D/N")]
    pub host_ip: Option<Ipv4Cidr>,
    /// Impair the device both ways, for tests where the kernel has no netem:
    /// comma-separated loss=2%,reorder=5%,duplicate=1%,corrupt=0.5%,delay=5ms,jitter=1ms,seed=N.
    #[arg(long, value_name = "SPEC", value_parser = parse_impairment)]
    pub impair: Option<Impairment>,
}

/// Faults to apply around the device (`--impair`).
#[derive(Clone, Copy, Debug)]
pub struct Impairment {
    pub link: LinkConfig,
    pub seed: u64,
}

fn parse_impairment(spec: &str) -> Result<Impairment, String> {
    let mut imp = Impairment { link: LinkConfig { capacity: 4096, ..LinkConfig::default() }, seed: 1 };
    for part in spec.split(',').map(str::trim).filter(|p| !p.is_empty()) {
        let (key, value) =
            part.split_once('=').ok_or_else(|| format!("'{part}': expected key=value, like loss=2%"))?;
        let rate = || -> Result<f64, String> {
            let v = value.strip_suffix('%').map_or_else(|| value.parse::<f64>(), |p| p.parse::<f64>().map(|x| x / 100.0));
            v.ok().filter(|r| (0.0..=1.0).contains(r)).ok_or_else(|| format!("{key}={value}: expected a rate like 2% or 0.02"))
        };
        let time = || -> Result<std::time::Duration, String> {
            let ms = value.strip_suffix("ms").unwrap_or(value);
            ms.parse::<f64>()
                .ok()
                .filter(|m| (0.0..=60_000.0).contains(m))
                .map(|m| std::time::Duration::from_micros((m * 1000.0) as u64))
                .ok_or_else(|| format!("{key}={value}: expected milliseconds like 5ms"))
        };
        match key {
            "loss" => imp.link.loss = rate()?,
            "duplicate" | "dup" => imp.link.duplicate = rate()?,
            "reorder" => imp.link.reorder = rate()?,
            "corrupt" => imp.link.corrupt = rate()?,
            "delay" => imp.link.delay = time()?,
            "jitter" => imp.link.jitter = time()?,
            "seed" => imp.seed = value.parse().map_err(|_| format!("seed={value}: expected a number"))?,
            _ => return Err(format!("unknown impairment '{key}': use loss, duplicate, reorder, corrupt, delay, jitter, seed")),
        }
    }
    Ok(imp)
}

/// A stack on its freshly opened device.
pub struct Opened {
    /// The TAP's name.
    pub name: String,
    pub tap: TapDevice,
    pub stack: Stack,
    pub mac: EthernetAddress,
}

impl DeviceArgs {
    /// The TAP's name, if `--device` is well formed.
    pub fn tap_name(&self) -> Result<&str, CliError> {
        match self.device.split_once(':') {
            Some(("tap", name)) if !name.is_empty() => Ok(name),
            _ => Err(CliError::DeviceSpec(self.device.clone())),
        }
    }

    /// Check the flags, open the TAP, and make the stack for it with the
    /// tunables of `settings` (the config file).
    pub fn open(&self, settings: &Settings) -> Result<Opened, CliError> {
        let name = self.tap_name()?.to_string();
        let ip = self.ip;
        if ip.broadcast() == Some(ip.addr) || (ip.prefix_len < 31 && ip.addr == network(ip)) {
            return Err(CliError::BadAddress(ip.to_string()));
        }
        if let Some(gateway) = self.gateway {
            if !ip.contains(gateway) {
                return Err(CliError::GatewayOutsideSubnet { gateway, subnet: ip });
            }
        }
        let seed = os_seed();
        let mac = self.mac.unwrap_or_else(|| random_mac(seed));
        let tap = TapDevice::open(&name)?;
        if let Some(host) = self.host_ip {
            tap.set_host_addr(host.addr, host.prefix_len)?;
        }
        // The fault queues hold frames up to their MTU.
        let device_mtu = self.impair.map_or(tap.caps().mtu, |imp| tap.caps().mtu.min(imp.link.mtu));
        let cfg = settings.stack_config(mac, ip, self.gateway, device_mtu)?;
        let stack = Stack::new(cfg, seed);
        Ok(Opened { name, tap, stack, mac })
    }
}

fn network(c: Ipv4Cidr) -> Ipv4Addr {
    Ipv4Addr::from(u32::from(c.addr) & u32::from(c.netmask()))
}

fn parse_mac(s: &str) -> Result<EthernetAddress, String> {
    s.parse().map_err(|_| format!("'{s}' is not a MAC address: expected six hex pairs like 02:00:00:00:00:01"))
}

/// A locally administered, unicast MAC from the seed (02:xx:..).
fn random_mac(seed: u64) -> EthernetAddress {
    let b = seed.to_le_bytes();
    EthernetAddress([0x02, b[1], b[2], b[3], b[4], b[5]])
}
