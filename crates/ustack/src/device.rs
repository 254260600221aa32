//! Opening the stack on a device, shared by the commands that run one
//! (`up`, `get`): the device flags, their checks, the TAP and the stack.

use crate::error::CliError;
use clap::Args;
use std::net::Ipv4Addr;
use ustack_core::phy::Device;
use ustack_core::{Ipv4Cidr, Stack, StackConfig};
use ustack_device::TapDevice;
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

    /// Check the flags, open the TAP, and make the stack for it.
    pub fn open(&self) -> Result<Opened, CliError> {
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
        let mut cfg = StackConfig::new(mac, ip);
        cfg.gateway = self.gateway;
        cfg.mtu = tap.caps().mtu;
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
