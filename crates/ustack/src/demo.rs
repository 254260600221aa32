//! `ustack demo`: two stacks in one process over the in-memory link.
//!
//! Needs no privileges and no network: it is the quickest way to see the
//! stack resolve a neighbour, answer pings and echo UDP, with figures.

use crate::error::CliError;
use clap::Args;
use std::net::{Ipv4Addr, SocketAddrV4};
use std::time::Instant as WallInstant;
use ustack_core::{Instant, Ipv4Cidr, Stack, StackConfig};
use ustack_device::{LinkConfig, MemoryLink, MemoryPort};
use ustack_runtime::apps::UdpEcho;
use ustack_runtime::{App, Clock};
use ustack_wire::EthernetAddress;

#[derive(Args, Debug)]
pub struct DemoArgs {
    /// Ping round trips to time.
    #[arg(long, default_value_t = 10_000)]
    pub pings: u32,
    /// UDP datagrams to echo, for each payload size.
    #[arg(long, default_value_t = 100_000)]
    pub datagrams: u32,
}

const A_IP: Ipv4Addr = Ipv4Addr::new(10, 0, 0, 1);
const B_IP: Ipv4Addr = Ipv4Addr::new(10, 0, 0, 2);
const ECHO_PORT: u16 = 7;
/// Turns of both stacks without progress before the demo calls it stuck.
const STUCK_TURNS: u32 = 10_000;

/// Two stacks joined by a link, turned by hand.
struct Pair {
    a: Stack,
    pa: MemoryPort,
    b: Stack,
    pb: MemoryPort,
    echo: UdpEcho,
    clock: Clock,
}

impl Pair {
    fn new() -> Result<Pair, CliError> {
        let (pa, pb) = MemoryLink::pair(LinkConfig::default(), 1);
        let cfg = |mac: [u8; 6], ip| StackConfig::new(EthernetAddress(mac), Ipv4Cidr::new(ip, 24).expect("/24 is valid"));
        let a = Stack::new(cfg([2, 0, 0, 0, 0, 1], A_IP), 11);
        let mut b = Stack::new(cfg([2, 0, 0, 0, 0, 2], B_IP), 22);
        let echo = UdpEcho::bind(&mut b, ECHO_PORT).map_err(|e| CliError::Demo(e.to_string()))?;
        Ok(Pair { a, pa, b, pb, echo, clock: Clock::new() })
    }

    fn turn(&mut self) -> Instant {
        let now = self.clock.now();
        self.a.poll(now, &mut self.pa, 64);
        self.b.poll(now, &mut self.pb, 64);
        self.echo.poll(&mut self.b, now, &[]);
        self.b.poll(now, &mut self.pb, 0);
        now
    }
}

pub fn run(args: DemoArgs) -> Result<(), CliError> {
    let mut net = Pair::new()?;
    println!("ustack demo: stack A {A_IP} and stack B {B_IP} on an in-memory Ethernet link\n");
    arp_and_ping(&mut net, args.pings)?;
    for size in [64usize, 1400] {
        udp_echo(&mut net, args.datagrams, size)?;
    }
    let ca = net.a.counters();
    let cb = net.b.counters();
    println!("\ncounters: A sent {} frames / received {}; B sent {} / received {}; drops A {} B {}",
        ca.tx_frames, ca.rx_frames, cb.tx_frames, cb.rx_frames, ca.total_drops(), cb.total_drops());
    Ok(())
}

fn arp_and_ping(net: &mut Pair, count: u32) -> Result<(), CliError> {
    let ping = net.a.ping_open(0x5553).map_err(|e| CliError::Demo(e.to_string()))?;
    let payload = [0xa5u8; 56];
    let mut buf = [0u8; 64];
    let mut rtts_ns = Vec::with_capacity(count as usize);
    for seq in 0..=count {
        let start = WallInstant::now();
        net.a.ping_send(ping, B_IP, seq as u16, &payload).map_err(|e| CliError::Demo(e.to_string()))?;
        let mut turns = 0;
        loop {
            net.turn();
            if let Some(reply) = net.a.ping_recv(ping, &mut buf) {
                if reply.seq_no == seq as u16 && reply.from == B_IP && buf[..reply.len.min(64)] == payload[..] {
                    break;
                }
            }
            turns += 1;
            if turns > STUCK_TURNS {
                return Err(CliError::Demo(format!("no echo reply for ping {seq}")));
            }
        }
        let rtt = start.elapsed().as_nanos() as u64;
        if seq == 0 {
            let mac = net.a.neighbors().get(B_IP).map(|m| m.to_string()).unwrap_or_default();
            println!("arp:  A asked who-has {B_IP}; B answered {B_IP} is-at {mac} ({} request, {} reply)",
                net.a.counters().arp_requests_sent, net.b.counters().arp_replies_sent);
            println!("      first ping, including resolution: {:.1} µs", rtt as f64 / 1e3);
        } else {
            rtts_ns.push(rtt);
        }
    }
    rtts_ns.sort_unstable();
    let pct = |p: f64| rtts_ns[((rtts_ns.len() as f64 - 1.0) * p) as usize] as f64 / 1e3;
    let mean = rtts_ns.iter().sum::<u64>() as f64 / rtts_ns.len().max(1) as f64 / 1e3;
    println!("ping: {count} echoes of 56 bytes, 0% loss; round trip min {:.2} / p50 {:.2} / mean {mean:.2} / p99 {:.2} / max {:.2} µs",
        pct(0.0), pct(0.5), pct(0.99), pct(1.0));
    Ok(())
}

fn udp_echo(net: &mut Pair, count: u32, size: usize) -> Result<(), CliError> {
    /// Datagrams in flight at once: enough to keep both stacks busy, few
    /// enough that no queue overflows.
    const WINDOW: u32 = 32;
    let sock = net.a.udp_bind(0).map_err(|e| CliError::Demo(e.to_string()))?;
    let dst = SocketAddrV4::new(B_IP, ECHO_PORT);
    let mut out = vec![0u8; size];
    let mut back = vec![0u8; 2048];
    let (mut sent, mut received, mut idle) = (0u32, 0u32, 0u32);
    let start = WallInstant::now();
    while received < count {
        while sent < count && sent - received < WINDOW {
            out[..4].copy_from_slice(&sent.to_be_bytes());
            if net.a.udp_send_to(sock, dst, &out).is_err() {
                break;
            }
            sent += 1;
        }
        net.turn();
        let mut progressed = false;
        while let Some((len, from)) = net.a.udp_recv_from(sock, &mut back) {
            out[..4].copy_from_slice(&received.to_be_bytes());
            if len != size || from != dst || back[..len] != out[..] {
                return Err(CliError::Demo(format!("UDP echo {received} came back wrong")));
            }
            received += 1;
            progressed = true;
        }
        idle = if progressed { 0 } else { idle + 1 };
        if idle > STUCK_TURNS {
            return Err(CliError::Demo(format!("UDP echo stalled after {received} of {count} datagrams")));
        }
    }
    let secs = start.elapsed().as_secs_f64();
    net.a.udp_close(sock);
    println!("udp:  {count} datagrams of {size} bytes echoed intact: {:.0} round trips/s, {:.1} Mbit/s each way",
        count as f64 / secs, count as f64 * size as f64 * 8.0 / secs / 1e6);
    Ok(())
}
