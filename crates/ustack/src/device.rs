//! Opening the stack on a device, shared by the commands that run one
//! (`up`, `get`, `perf`, `bench`): the device flags, their checks, the device
//! chain the spec builds (`ustack_device::ChainSpec`), and the stack.

use crate::config::Settings;
use crate::error::CliError;
use clap::Args;
use std::net::{Ipv4Addr, Ipv6Addr};
use std::path::PathBuf;
use ustack_core::phy::Device;
use ustack_core::ipv6::Ipv6Config;
use ustack_core::{Ipv4Cidr, Stack};
use ustack_device::{ChainSpec, DeviceChain, DeviceSpec, LinkConfig, ShardQueue};
use ustack_runtime::os_seed;
use ustack_wire::{EthernetAddress, Ipv6Cidr};

#[derive(Args, Debug)]
pub struct DeviceArgs {
    /// The device to run on, as KIND:NAME[,key=value|flag...]: tap:NAME (a TAP, created if
    /// missing), af_packet:IFACE[,blocks=N,block_size=B,block_timeout=MS,tx_frames=N,burst=N,
    /// tso=on|off,promisc=on|off,fanout=ID], af_xdp:IFACE[,queue=N][,mode=drv|skb][,copy|zerocopy][,gso=on|off][,gro=on|off],
    /// vhost-user:PATH[,queues=N][,client] (a vhost-user backend port), virtio-user:PATH[,ring=N] (a virtio-net
    /// driver on a vhost-user backend such as `ustack switch`).
    #[arg(long, value_name = "KIND:NAME[,OPTS]")]
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
    /// Speak IPv6 too: a static address (repeatable), or `auto` for SLAAC from
    /// router advertisements. The link-local address comes either way.
    #[arg(long, value_name = "ADDR/N|auto", value_parser = parse_ip6)]
    pub ip6: Vec<Ip6Arg>,
    /// A static IPv6 default router (on-link: link-local, or inside an
    /// `--ip6` prefix), beside the ones router advertisements teach.
    #[arg(long, value_name = "ADDR")]
    pub gateway6: Option<Ipv6Addr>,
    /// Impair the device both ways, for tests where the kernel has no netem:
    /// comma-separated loss=2%,reorder=5%,duplicate=1%,corrupt=0.5%,delay=5ms,jitter=1ms,seed=N.
    #[arg(long, value_name = "SPEC", value_parser = parse_impairment)]
    pub impair: Option<Impairment>,
    /// Write every frame in and out to this pcap file.
    #[arg(long, value_name = "FILE")]
    pub pcap: Option<PathBuf>,
}

/// One `--ip6`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Ip6Arg {
    /// `auto`: addresses from advertised prefixes (SLAAC, RFC 4862).
    Auto,
    /// A static address and its on-link prefix.
    Static(Ipv6Cidr),
}

fn parse_ip6(s: &str) -> Result<Ip6Arg, String> {
    if s == "auto" {
        return Ok(Ip6Arg::Auto);
    }
    let cidr: Ipv6Cidr =
        s.parse().map_err(|_| format!("'{s}' is not an IPv6 address with a prefix length, like 2001:db8::2/64, nor 'auto'"))?;
    if cidr.addr.is_multicast() || cidr.addr.is_unspecified() || cidr.addr.is_loopback() {
        return Err(format!("'{s}' cannot be an interface's address: give a unicast address, like 2001:db8::2/64"));
    }
    Ok(Ip6Arg::Static(cidr))
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

/// A stack on its freshly opened device chain.
pub struct Opened {
    /// The device as the user named it, for banners and `stats`.
    pub label: String,
    pub device: DeviceChain,
    pub stack: Stack,
    pub mac: EthernetAddress,
}

impl DeviceArgs {
    /// The parsed `--device` (parsed here rather than by clap, so a bad spec
    /// is one line and not a usage screen).
    pub fn spec(&self) -> Result<DeviceSpec, CliError> {
        self.device.parse().map_err(CliError::DeviceSpec)
    }

    /// Check the flags that need no system call (the spec, addresses, their fit).
    pub fn check(&self) -> Result<(), CliError> {
        let spec = self.spec()?;
        let ip = self.ip;
        if ip.broadcast() == Some(ip.addr) || (ip.prefix_len < 31 && ip.addr == network(ip)) {
            return Err(CliError::BadAddress(ip.to_string()));
        }
        if let Some(gateway) = self.gateway {
            if !ip.contains(gateway) {
                return Err(CliError::GatewayOutsideSubnet { gateway, subnet: ip });
            }
        }
        if let Some(gw) = self.gateway6 {
            if self.ip6.is_empty() {
                return Err(CliError::Gateway6(format!("--gateway6 {gw} needs IPv6: add --ip6 ADDR/N or --ip6 auto")));
            }
            let link_local = gw.segments()[0] & 0xffc0 == 0xfe80;
            // With `--ip6 auto` the prefixes come later, from advertisements.
            let in_prefix = self.ip6.iter().any(|a| match a {
                Ip6Arg::Static(c) => c.contains(gw),
                Ip6Arg::Auto => true,
            });
            if gw.is_multicast() || gw.is_unspecified() || !(link_local || in_prefix) {
                return Err(CliError::Gateway6(format!(
                    "--gateway6 {gw} is not on-link: give a link-local router (fe80::...) or one inside an --ip6 prefix"
                )));
            }
        }
        if self.host_ip.is_some() && spec.kind != ustack_device::DeviceKind::Tap {
            return Err(CliError::HostIpNeedsTap(spec.to_string()));
        }
        Ok(())
    }

    /// Check the flags, open the device chain, and make the stack for it
    /// with the tunables of `settings` (the config file).
    pub fn open(&self, settings: &Settings) -> Result<Opened, CliError> {
        self.check()?;
        let seed = os_seed();
        let mac = self.mac.unwrap_or_else(|| random_mac(seed));
        self.open_queue(settings, mac, seed, None)
    }

    /// The stack's MAC: `--mac`, or a random one from `seed`.
    pub fn mac_or_random(&self, seed: u64) -> EthernetAddress {
        self.mac.unwrap_or_else(|| random_mac(seed))
    }

    /// As [`DeviceArgs::open`] with the MAC and seed given, on shard `q`'s
    /// queue of the device when there are shards (every shard has the same
    /// MAC; the first gives the TAP's host side its address).
    pub fn open_queue(
        &self,
        settings: &Settings,
        mac: EthernetAddress,
        seed: u64,
        q: Option<&ShardQueue>,
    ) -> Result<Opened, CliError> {
        let chain = ChainSpec {
            device: self.spec()?,
            impair: self.impair.map(|imp| (imp.link, imp.seed)),
            pcap: self.pcap.clone(),
        };
        let device = chain.open_queue(q)?;
        if let (Some(host), Some(tap)) = (self.host_ip, device.device().as_tap()) {
            if q.is_none_or(|q| q.index == 0) {
                tap.set_host_addr(host.addr, host.prefix_len)?;
            }
        }
        let cfg = settings.stack_config(mac, self.ip, self.gateway, device.caps().mtu)?;
        let mut stack = Stack::new(cfg, seed);
        if !self.ip6.is_empty() {
            let mut v6 = Ipv6Config { mac, ..settings.ipv6.clone() };
            v6.autoconf = self.ip6.contains(&Ip6Arg::Auto);
            v6.addresses = self.ip6.iter().filter_map(|a| if let Ip6Arg::Static(c) = a { Some(*c) } else { None }).collect();
            v6.gateway = self.gateway6.or(v6.gateway);
            // RFC 7217's secret is the stack's to draw: addresses are stable
            // while it runs, not across restarts. The runtime's clock starts
            // with the event loop, at zero.
            stack.enable_ipv6(v6, ustack_core::Instant::ZERO);
        }
        let label = match device.device().as_tap() {
            Some(tap) => format!("tap:{}", tap.name()),
            None => self.spec()?.to_string(),
        };
        Ok(Opened { label, device, stack, mac })
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
