//! `ustack demo`: two stacks in one process over the in-memory link.
//!
//! Needs no privileges and no network: it is the quickest way to see the
//! stack resolve a neighbour, answer pings, echo UDP, serve a download over
//! HTTP and take a burst of short TCP connections, with figures.

use crate::config::{ConfigArgs, Settings};
use crate::error::CliError;
use clap::Args;
use std::io::Write;
use std::net::{Ipv4Addr, SocketAddrV4};
use std::sync::Arc;
use std::time::Instant as WallInstant;
use ustack_core::tcp::RecvError;
use ustack_core::{Event, Instant, Ipv4Cidr, Stack, TcpHandle};
use ustack_device::{LinkConfig, MemoryLink, MemoryPort};
use ustack_runtime::apps::{HttpClient, HttpServer, Site, TcpEcho, UdpEcho, DEFAULT_MAX_CONNECTIONS};
use ustack_runtime::{poll_apps, App, Clock};
use ustack_wire::EthernetAddress;

#[derive(Args, Debug)]
pub struct DemoArgs {
    /// Ping round trips to time.
    #[arg(long, default_value_t = 10_000)]
    pub pings: u32,
    /// UDP datagrams to echo, for each payload size.
    #[arg(long, default_value_t = 100_000)]
    pub datagrams: u32,
    /// Size of the object downloaded over HTTP, in MiB (0 skips the download).
    #[arg(long, value_name = "MIB", default_value_t = 64)]
    pub http_mib: u32,
    /// Short TCP connections to open, each one 64-byte request and reply (0 skips them).
    #[arg(long, default_value_t = 2000, value_parser = clap::value_parser!(u32).range(0..=16000))]
    pub connections: u32,
    /// Both stacks' tunables and stack B's HTTP server's, as for `ustack up`.
    #[command(flatten)]
    pub cfg: ConfigArgs,
}

const A_IP: Ipv4Addr = Ipv4Addr::new(10, 0, 0, 1);
const B_IP: Ipv4Addr = Ipv4Addr::new(10, 0, 0, 2);
const ECHO_PORT: u16 = 7;
const HTTP_PORT: u16 = 80;
/// The path the generated object is served at.
const OBJECT_PATH: &str = "/object.bin";
/// Turns of both stacks without progress before the demo calls it stuck.
const STUCK_TURNS: u32 = 10_000;

/// Two stacks joined by a link, turned by hand.
struct Pair {
    a: Stack,
    pa: MemoryPort,
    b: Stack,
    pb: MemoryPort,
    echo: UdpEcho,
    tcp_echo: TcpEcho,
    http: HttpServer,
    clock: Clock,
    events_a: Vec<Event>,
    events_b: Vec<Event>,
}

impl Pair {
    fn new(object: Arc<[u8]>, settings: &Settings) -> Result<Pair, CliError> {
        let link = LinkConfig::default();
        let (pa, pb) = MemoryLink::pair(link, 1);
        let cfg = |mac: [u8; 6], ip| {
            let cidr = Ipv4Cidr::new(ip, 24).expect("/24 is valid");
            settings.stack_config(EthernetAddress(mac), cidr, None, link.mtu)
        };
        let a = Stack::new(cfg([2, 0, 0, 0, 0, 1], A_IP)?, 11);
        let mut b = Stack::new(cfg([2, 0, 0, 0, 0, 2], B_IP)?, 22);
        let demo = |e: &dyn std::fmt::Display| CliError::Demo(e.to_string());
        let echo = UdpEcho::bind(&mut b, ECHO_PORT).map_err(|e| demo(&e))?;
        let tcp_echo = TcpEcho::listen(&mut b, ECHO_PORT, DEFAULT_MAX_CONNECTIONS).map_err(|e| demo(&e))?;
        let mut site = Site::memory();
        site.insert(OBJECT_PATH, object);
        let http = HttpServer::listen(&mut b, HTTP_PORT, site, settings.http).map_err(|e| demo(&e))?;
        Ok(Pair { a, pa, b, pb, echo, tcp_echo, http, clock: Clock::new(), events_a: Vec::new(), events_b: Vec::new() })
    }

    fn turn(&mut self) -> Instant {
        self.turn_with(&mut [])
    }

    /// One turn of both stacks: A with `a_apps` (clients), B with its servers.
    fn turn_with(&mut self, a_apps: &mut [&mut dyn App]) -> Instant {
        let now = self.clock.now();
        self.a.poll(now, &mut self.pa, 64);
        poll_apps(&mut self.a, now, a_apps, &mut self.events_a);
        self.a.poll(now, &mut self.pa, 0);
        self.b.poll(now, &mut self.pb, 64);
        poll_apps(&mut self.b, now, &mut [&mut self.echo, &mut self.tcp_echo, &mut self.http], &mut self.events_b);
        self.b.poll(now, &mut self.pb, 0);
        now
    }
}

pub fn run(args: DemoArgs) -> Result<(), CliError> {
    let settings = args.cfg.load()?;
    let object_len = args.http_mib as usize * (1 << 20);
    let object: Arc<[u8]> = (0..object_len as u64).map(byte_at).collect();
    let mut net = Pair::new(object, &settings)?;
    println!("ustack demo: stack A {A_IP} and stack B {B_IP} on an in-memory Ethernet link\n");
    arp_and_ping(&mut net, args.pings)?;
    for size in [64usize, 1400] {
        udp_echo(&mut net, args.datagrams, size)?;
    }
    if object_len > 0 {
        http_download(&mut net, object_len as u64)?;
    }
    if args.connections > 0 {
        short_connections(&mut net, args.connections)?;
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
            if len != size || from != dst.into() || back[..len] != out[..] {
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

/// A keyed pseudorandom byte at `offset`: the generated object, checked on
/// arrival byte by byte without keeping a copy.
fn byte_at(offset: u64) -> u8 {
    let mut z = offset.wrapping_mul(0x9E37_79B9_7F4A_7C15);
    z ^= z >> 29;
    (z.wrapping_mul(0xBF58_476D_1CE4_E5B9) >> 56) as u8
}

/// A sink that checks every byte against [`byte_at`].
struct PatternCheck {
    offset: u64,
    first_bad: Option<u64>,
}

impl Write for PatternCheck {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        if self.first_bad.is_none() {
            if let Some(i) = buf.iter().enumerate().position(|(i, &b)| b != byte_at(self.offset + i as u64)) {
                self.first_bad = Some(self.offset + i as u64);
            }
        }
        self.offset += buf.len() as u64;
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

fn http_download(net: &mut Pair, len: u64) -> Result<(), CliError> {
    let server = SocketAddrV4::new(B_IP, HTTP_PORT);
    let mut client = HttpClient::new(server, vec![OBJECT_PATH.to_string()], PatternCheck { offset: 0, first_bad: None });
    let start = WallInstant::now();
    let mut idle = 0u32;
    let mut last = 0;
    while !client.finished() {
        net.turn_with(&mut [&mut client]);
        let got = client.body_bytes();
        idle = if got == last { idle + 1 } else { 0 };
        last = got;
        if idle > STUCK_TURNS * 10 {
            return Err(CliError::Demo(format!("HTTP download stalled after {got} of {len} bytes")));
        }
    }
    let secs = start.elapsed().as_secs_f64();
    let (outcome, check) = client.into_result();
    if let Some(Err(e)) = outcome {
        return Err(CliError::Demo(format!("HTTP download failed: {e}")));
    }
    if let Some(at) = check.first_bad {
        return Err(CliError::Demo(format!("HTTP download corrupted at byte {at}")));
    }
    if check.offset != len {
        return Err(CliError::Demo(format!("HTTP download delivered {} of {len} bytes", check.offset)));
    }
    println!("http: GET of a {} MiB object, every byte checked: {secs:.3} s, {:.0} Mbit/s",
        len >> 20, len as f64 * 8.0 / secs / 1e6);
    Ok(())
}

fn short_connections(net: &mut Pair, count: u32) -> Result<(), CliError> {
    /// Connections open at once.
    const PARALLEL: usize = 32;
    const SIZE: usize = 64;
    let dst = SocketAddrV4::new(B_IP, ECHO_PORT);
    let mut open: Vec<(TcpHandle, u32, usize)> = Vec::with_capacity(PARALLEL);
    let (mut started, mut done, mut idle) = (0u32, 0u32, 0u32);
    let mut buf = [0u8; SIZE];
    let start = WallInstant::now();
    while done < count {
        while started < count && open.len() < PARALLEL {
            let h = net.a.tcp_connect(net.clock.now(), dst).map_err(|e| CliError::Demo(format!("connect: {e}")))?;
            net.a.tcp_set_nodelay(h, true);
            // Queued before the handshake completes; it leaves right after.
            let request = [started as u8; SIZE];
            net.a.tcp_send(h, &request).map_err(|e| CliError::Demo(format!("send: {e:?}")))?;
            open.push((h, started, 0));
            started += 1;
        }
        net.turn();
        let before = done;
        let mut i = 0;
        while i < open.len() {
            let (h, id, got) = &mut open[i];
            match net.a.tcp_recv(*h, &mut buf[*got..]) {
                Ok(0) => return Err(CliError::Demo(format!("connection {id} ended after {got} of {SIZE} bytes"))),
                Ok(n) => {
                    if buf[*got..*got + n].iter().any(|&b| b != *id as u8) {
                        return Err(CliError::Demo(format!("connection {id} got a wrong reply")));
                    }
                    *got += n;
                }
                Err(RecvError::WouldBlock) => {}
                Err(e) => return Err(CliError::Demo(format!("connection {id} failed: {e:?}"))),
            }
            if *got == SIZE {
                net.a.tcp_close(*h);
                open.swap_remove(i);
                done += 1;
            } else {
                i += 1;
            }
        }
        idle = if done == before { idle + 1 } else { 0 };
        if idle > STUCK_TURNS {
            return Err(CliError::Demo(format!("short connections stalled after {done} of {count}")));
        }
    }
    let secs = start.elapsed().as_secs_f64();
    println!("tcp:  {count} short connections (connect, {SIZE}-byte request and reply, close), {PARALLEL} at a time: {:.0} connections/s",
        count as f64 / secs);
    Ok(())
}
