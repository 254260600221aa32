//! ustack: two stacks on the in-memory link, both driven by this thread.

use crate::report::{timed_transactions, Figures};
use crate::{cpu_time, Params, Workload};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::time::Instant as WallInstant;
use ustack_core::ipv6::Ipv6Config;
use ustack_core::rss::{ShardHome, Toeplitz};
use ustack_core::{Duration, Instant, Ipv4Cidr, Stack, StackConfig, TcpHandle};
use ustack_device::{LinkConfig, MemoryLink, MemoryPort};
use ustack_wire::{EthernetAddress, Ipv6Cidr};

const A_IP: Ipv4Addr = Ipv4Addr::new(10, 0, 0, 1);
const B_IP: Ipv4Addr = Ipv4Addr::new(10, 0, 0, 2);
/// The pair's IPv6 addresses (`--ip6`), on one /64.
const A_IP6: Ipv6Addr = Ipv6Addr::new(0xfd00, 0, 0, 0x5001, 0, 0, 0, 1);
const B_IP6: Ipv6Addr = Ipv6Addr::new(0xfd00, 0, 0, 0x5001, 0, 0, 0, 2);
const PORT: u16 = 5001;
/// Turns without progress before a run is declared stuck.
const STUCK_TURNS: u64 = 10_000_000;

struct Pair {
    a: Stack,
    pa: MemoryPort,
    b: Stack,
    pb: MemoryPort,
    start: WallInstant,
    /// B's listening address: IPv4, or IPv6 with `--ip6`.
    server: SocketAddr,
}

impl Pair {
    fn new(workload: Workload, p: &Params, tso: bool, shard: Option<(usize, usize)>) -> Pair {
        // Checksum offload, as loopback has: Linux does not sum loopback
        // traffic either. TSO and coalesced receive when `tso`, as virtio
        // between two VMs (loopback needs none: its MTU is 64 KiB).
        let link = LinkConfig { mtu: p.mtu, capacity: 4096, checksum_offload: true, tso, ..LinkConfig::default() };
        let (pa, pb) = MemoryLink::pair(link, 7);
        let cfg = |mac: u8, ip| {
            let mut c = StackConfig::new(EthernetAddress([2, 0, 0, 0, 0, mac]), Ipv4Cidr::new(ip, 24).expect("valid"));
            c.mtu = p.mtu;
            c.tcp.mss = (p.mtu - 40).min(usize::from(u16::MAX)) as u16;
            if workload != Workload::Stream {
                c.tcp.nodelay = true;
            }
            if let Some(size) = p.send_buffer {
                c.tcp.send_buffer_size = size;
            }
            if workload == Workload::Crr {
                // Like Linux's tcp_tw_reuse on loopback: a benchmark that
                // opens tens of thousands of connections per second from one
                // address must not wait 60 s per port.
                c.tcp.time_wait = Duration::from_millis(10);
            }
            c
        };
        let mut a = Stack::new(cfg(1, A_IP), 1);
        let mut b = Stack::new(cfg(2, B_IP), 2);
        let server = if p.ip6 {
            for (stack, addr) in [(&mut a, A_IP6), (&mut b, B_IP6)] {
                let mut v6 = Ipv6Config::new(stack.config().mac);
                v6.addresses.push(Ipv6Cidr { addr, prefix_len: 64 });
                // The link is the bench's own: no duplicate can exist, and the
                // measurement starts at once (as with --ip, which has no DAD).
                v6.dad_transmits = 0;
                stack.enable_ipv6(v6, Instant::ZERO);
            }
            IpAddr::V6(B_IP6)
        } else {
            IpAddr::V4(B_IP)
        };
        if let Some((k, n)) = shard {
            // The client's flows all hash to shard k, so a multi-queue link
            // steering by that hash would deliver them all to this shard.
            let home = ShardHome::new(Toeplitz::default(), k, n);
            a.set_shard(Some(home.clone()));
            b.set_shard(Some(home));
        }
        Pair { a, pa, b, pb, start: WallInstant::now(), server: SocketAddr::new(server, PORT) }
    }

    fn now(&self) -> Instant {
        Instant::from_micros(self.start.elapsed().as_micros() as u64)
    }

    fn turn(&mut self) {
        let now = self.now();
        self.a.poll(now, &mut self.pa, 64);
        self.b.poll(now, &mut self.pb, 64);
    }

    fn connect(&mut self) -> Result<(TcpHandle, TcpHandle), String> {
        let now = self.now();
        let c = self.a.tcp_connect(now, self.server).map_err(|e| e.to_string())?;
        for _ in 0..STUCK_TURNS {
            self.turn();
            if let Some(s) = self.b.tcp_accept(PORT) {
                return Ok((c, s));
            }
        }
        Err("connection never established".into())
    }
}

/// `workload` on two stacks over the in-memory link, with the link's TSO
/// and coalesced receive on or off.
pub(crate) fn run(workload: Workload, p: &Params, tso: bool) -> Result<Figures, String> {
    run_shard(workload, p, tso, None)
}

/// As [`run`], the two stacks being shard `k` of `n` and a client whose
/// flows all hash to it.
pub(crate) fn run_shard(
    workload: Workload,
    p: &Params,
    tso: bool,
    shard: Option<(usize, usize)>,
) -> Result<Figures, String> {
    let mut pair = Pair::new(workload, p, tso, shard);
    pair.b.tcp_listen(PORT, 1024).map_err(|e| e.to_string())?;
    // Resolve neighbours before measuring.
    let (c, s) = pair.connect()?;
    match workload {
        Workload::Stream => stream(&mut pair, c, s, p),
        Workload::Rr => rr(&mut pair, c, s, p),
        Workload::Crr => {
            pair.a.tcp_close(c);
            pair.b.tcp_close(s);
            crr(&mut pair, p)
        }
    }
}

fn stream(pair: &mut Pair, c: TcpHandle, s: TcpHandle, p: &Params) -> Result<Figures, String> {
    let chunk = vec![0x5au8; p.write_size.max(1)];
    let mut buf = vec![0u8; 256 * 1024];
    let cpu0 = cpu_time();
    let start = WallInstant::now();
    let mut received = 0u64;
    let mut idle = 0u64;
    while start.elapsed() < p.duration {
        // Write as a blocking writer would, until the send buffer is full
        // (a short or refused write), then let the stacks run.
        while pair.a.tcp_send(c, &chunk).is_ok_and(|n| n == chunk.len()) {}
        pair.turn();
        let mut progressed = false;
        while let Ok(n) = pair.b.tcp_recv(s, &mut buf) {
            if n == 0 {
                return Err("stream ended early".into());
            }
            received += n as u64;
            progressed = true;
        }
        idle = if progressed { 0 } else { idle + 1 };
        if idle > STUCK_TURNS {
            return Err(format!("stream stalled after {received} bytes"));
        }
    }
    Ok(Figures { count: received, elapsed: start.elapsed(), cpu: cpu_time() - cpu0, latency_ns: None })
}

/// Turn until `h` on `stack` has read exactly `buf.len()` bytes.
fn read_exact(pair: &mut Pair, client_side: bool, h: TcpHandle, buf: &mut [u8]) -> Result<(), String> {
    let mut got = 0;
    for _ in 0..STUCK_TURNS {
        let stack = if client_side { &mut pair.a } else { &mut pair.b };
        if let Ok(n) = stack.tcp_recv(h, &mut buf[got..]) {
            if n == 0 {
                return Err("peer closed early".into());
            }
            got += n;
            if got == buf.len() {
                return Ok(());
            }
        }
        pair.turn();
    }
    Err("read stalled".into())
}

fn rr(pair: &mut Pair, c: TcpHandle, s: TcpHandle, p: &Params) -> Result<Figures, String> {
    let req = vec![0x11u8; p.message];
    let mut buf = vec![0u8; p.message];
    timed_transactions(p.duration, || {
        pair.a.tcp_send(c, &req).map_err(|e| format!("{e:?}"))?;
        pair.turn();
        read_exact(pair, false, s, &mut buf)?;
        pair.b.tcp_send(s, &buf).map_err(|e| format!("{e:?}"))?;
        pair.turn();
        read_exact(pair, true, c, &mut buf)
    })
}

fn crr(pair: &mut Pair, p: &Params) -> Result<Figures, String> {
    let req = vec![0x22u8; p.message];
    let mut buf = vec![0u8; p.message];
    timed_transactions(p.duration, || {
        let (c, s) = pair.connect()?;
        pair.a.tcp_send(c, &req).map_err(|e| format!("{e:?}"))?;
        pair.turn();
        read_exact(pair, false, s, &mut buf)?;
        pair.b.tcp_send(s, &buf).map_err(|e| format!("{e:?}"))?;
        pair.turn();
        read_exact(pair, true, c, &mut buf)?;
        // The client closes first, as in the Linux run; the server closes
        // when it sees the FIN. Teardown overlaps the next connection.
        pair.a.tcp_close(c);
        pair.b.tcp_close(s);
        Ok(())
    })
}
