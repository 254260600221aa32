//! `ustack up`: the stack on a TAP device, in the foreground.

use crate::error::CliError;
use clap::Args;
use std::net::Ipv4Addr;
use ustack_core::phy::Device;
use ustack_core::{Counters, Ipv4Cidr, Stack, StackConfig};
use ustack_device::{PcapDevice, TapDevice};
use ustack_runtime::apps::UdpEcho;
use ustack_runtime::{os_seed, App, ControlAddr, ControlSocket, EventLoop, StopSignal, Waitable};
use ustack_wire::EthernetAddress;

#[derive(Args, Debug)]
pub struct UpArgs {
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
    /// Write every frame in and out to this pcap file.
    #[arg(long, value_name = "FILE")]
    pub pcap: Option<String>,
    /// Control socket for `ustack stats` (default: the abstract socket @ustack/NAME of this network namespace).
    #[arg(long, value_name = "PATH")]
    pub control: Option<std::path::PathBuf>,
    /// Serve UDP echo on this port (repeatable).
    #[arg(long = "udp-echo", value_name = "PORT", value_parser = clap::value_parser!(u16).range(1..))]
    pub udp_echo: Vec<u16>,
}

pub fn run(args: UpArgs) -> Result<(), CliError> {
    let name = match args.device.split_once(':') {
        Some(("tap", name)) if !name.is_empty() => name,
        _ => return Err(CliError::DeviceSpec(args.device)),
    };
    if args.ip.broadcast() == Some(args.ip.addr) || (args.ip.prefix_len < 31 && args.ip.addr == network(args.ip)) {
        return Err(CliError::BadAddress(args.ip.to_string()));
    }
    if let Some(gateway) = args.gateway {
        if !args.ip.contains(gateway) {
            return Err(CliError::GatewayOutsideSubnet { gateway, subnet: args.ip });
        }
    }
    let seed = os_seed();
    let mac = args.mac.unwrap_or_else(|| random_mac(seed));
    let tap = TapDevice::open(name)?;
    if let Some(host) = args.host_ip {
        tap.set_host_addr(host.addr, host.prefix_len)?;
    }
    let mut cfg = StackConfig::new(mac, args.ip);
    cfg.gateway = args.gateway;
    cfg.mtu = tap.caps().mtu;
    let mut stack = Stack::new(cfg, seed);
    let mut echoes = Vec::new();
    for &port in &args.udp_echo {
        echoes.push(UdpEcho::bind(&mut stack, port).map_err(|source| CliError::Bind { port, source })?);
    }
    let control_addr = match &args.control {
        Some(p) => ControlAddr::Path(p.clone()),
        None => ControlAddr::Device(name.to_string()),
    };
    let control = ControlSocket::bind(&control_addr)
        .map_err(|source| CliError::Control { addr: control_addr.to_string(), source })?;
    let control = (control, format!("tap:{name}"));
    let banner = format!("ustack: up on tap:{name} as {} ({mac}); Ctrl-C stops", args.ip);
    match args.pcap {
        Some(path) => {
            let dev = PcapDevice::create(tap, &path).map_err(|source| CliError::Pcap { path: path.clone(), source })?;
            serve(stack, dev, echoes, control, &banner)
        }
        None => serve(stack, tap, echoes, control, &banner),
    }
}

/// Everything is set up when this runs: only now does ustack say it is up.
fn serve<D: Device + Waitable>(
    stack: Stack,
    device: D,
    mut echoes: Vec<UdpEcho>,
    control: (ControlSocket, String),
    banner: &str,
) -> Result<(), CliError> {
    eprintln!("{banner}");
    for e in &echoes {
        eprintln!("ustack: UDP echo on port {}", e.port());
    }
    let stop = StopSignal::install();
    let mut lp = EventLoop::new(stack, device);
    lp.control = Some(control);
    let mut apps: Vec<&mut dyn App> = echoes.iter_mut().map(|e| e as &mut dyn App).collect();
    lp.run(&mut apps, &stop);
    drop(apps);
    print_counters(lp.stack.counters());
    Ok(())
}

/// The counters a person wants after a run: everything that is not zero.
pub fn print_counters(c: &Counters) {
    println!("counters:");
    for (name, value) in c.iter().filter(|&(_, v)| v != 0) {
        println!("  {name:<32} {value}");
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
