//! ustack: two stacks on the in-memory link, both driven by this thread;
//! N idle connections from A to B and one active one.

use super::{heap_in_use, measure_alternating, per_endpoint, rss, IdleFigures, IdleParams, RequestResponse};
use std::net::{Ipv4Addr, SocketAddrV4};
use std::time::{Duration as WallDuration, Instant as WallInstant};
use ustack_core::tcp::State;
use ustack_core::{Instant, Ipv4Cidr, Stack, StackConfig, TcpHandle};
use ustack_device::{LinkConfig, MemoryLink, MemoryPort};
use ustack_wire::EthernetAddress;

const A_IP: Ipv4Addr = Ipv4Addr::new(10, 0, 0, 1);
const B_IP: Ipv4Addr = Ipv4Addr::new(10, 0, 0, 2);
const ACTIVE_PORT: u16 = 5001;
/// Idle connections go to `IDLE_PORT..IDLE_PORT + idle_ports(n)`.
const IDLE_PORT: u16 = 6000;
/// Connections per listening port: one destination port offers 16,384
/// ephemeral ports, and keeping each port's range at most half used keeps
/// the random port search short.
const PER_PORT: usize = 8192;
/// Connections opened per batch; the link holds twice as many frames.
const BATCH: usize = 4096;
/// Frames a stack takes per poll.
const BUDGET: usize = 1024;
/// Turns without progress before an exchange is declared stuck.
const STUCK_TURNS: u64 = 10_000_000;
/// Longest a batch of connections may take to open (SYNs lost to a full
/// link come back after the 1 s initial RTO).
const BATCH_DEADLINE: WallDuration = WallDuration::from_secs(30);

/// Two stacks with `idle` idle connections and one active connection.
pub struct UstackIdle {
    a: Stack,
    pa: MemoryPort,
    b: Stack,
    pb: MemoryPort,
    start: WallInstant,
    client: TcpHandle,
    server: TcpHandle,
    idle: usize,
    idle_ports: usize,
    req: Vec<u8>,
    buf: Vec<u8>,
}

/// Listening ports needed for `n` idle connections.
pub fn idle_ports(n: usize) -> usize {
    n.div_ceil(PER_PORT).max(1)
}

impl UstackIdle {
    /// Two stacks with room for `max_idle` idle connections on `idle_ports`
    /// listening ports (at least [`idle_ports`]`(max_idle)`), and the active
    /// connection open (which also resolves the neighbours).
    pub fn new(max_idle: usize, idle_ports: usize, message: usize) -> Result<UstackIdle, String> {
        let idle_ports = idle_ports.max(self::idle_ports(max_idle));
        if IDLE_PORT as usize + idle_ports > usize::from(u16::MAX) {
            return Err(format!("{max_idle} idle connections need more listening ports than there are"));
        }
        // Checksum offload, as loopback has. Frame buffers are allocated up
        // front: part of the pair's fixed cost, which `run` subtracts.
        let link =
            LinkConfig { capacity: 2 * BATCH, checksum_offload: true, preallocate: true, ..LinkConfig::default() };
        let (pa, pb) = MemoryLink::pair(link, 7);
        let cfg = |mac: u8, ip| {
            let mut c = StackConfig::new(EthernetAddress([2, 0, 0, 0, 0, mac]), Ipv4Cidr::new(ip, 24).expect("valid"));
            c.tcp.nodelay = true;
            c.tcp_max_connections = c.tcp_max_connections.max(max_idle + 16);
            c
        };
        let (mut a, mut b) = (Stack::new(cfg(1, A_IP), 1), Stack::new(cfg(2, B_IP), 2));
        b.tcp_listen(ACTIVE_PORT, 16).map_err(|e| e.to_string())?;
        for i in 0..idle_ports {
            b.tcp_listen(IDLE_PORT + i as u16, 2 * BATCH).map_err(|e| e.to_string())?;
        }
        let client = a.tcp_connect(Instant::ZERO, SocketAddrV4::new(B_IP, ACTIVE_PORT)).map_err(|e| e.to_string())?;
        let start = WallInstant::now();
        let mut pair = (a, pa, b, pb);
        for _ in 0..STUCK_TURNS {
            let now = Instant::from_micros(start.elapsed().as_micros() as u64);
            pair.0.poll(now, &mut pair.1, BUDGET);
            pair.2.poll(now, &mut pair.3, BUDGET);
            if let Some(server) = pair.2.tcp_accept(ACTIVE_PORT) {
                let (a, pa, b, pb) = pair;
                return Ok(UstackIdle {
                    a,
                    pa,
                    b,
                    pb,
                    start,
                    client,
                    server,
                    idle: 0,
                    idle_ports,
                    req: vec![0x11; message],
                    buf: vec![0; message],
                });
            }
        }
        Err("the active connection never opened".into())
    }

    /// Idle connections open so far.
    pub fn idle(&self) -> usize {
        self.idle
    }

    fn now(&self) -> Instant {
        Instant::from_micros(self.start.elapsed().as_micros() as u64)
    }

    fn turn(&mut self) {
        let now = self.now();
        self.a.poll(now, &mut self.pa, BUDGET);
        self.b.poll(now, &mut self.pb, BUDGET);
    }

    /// Open `n` more idle connections and accept them. Their handles are not
    /// kept: nobody touches them again, and a handle is only an index.
    pub fn open_idle(&mut self, n: usize) -> Result<(), String> {
        let mut left = n;
        while left > 0 {
            let batch = BATCH.min(left);
            let now = self.now();
            for i in 0..batch {
                let port = IDLE_PORT + ((self.idle + i) % self.idle_ports) as u16;
                self.a
                    .tcp_connect(now, SocketAddrV4::new(B_IP, port))
                    .map_err(|e| format!("connection {}: {e}", self.idle + i))?;
            }
            let deadline = WallInstant::now() + BATCH_DEADLINE;
            let mut accepted = 0;
            while accepted < batch {
                self.turn();
                for i in 0..self.idle_ports {
                    while self.b.tcp_accept(IDLE_PORT + i as u16).is_some() {
                        accepted += 1;
                    }
                }
                if WallInstant::now() > deadline {
                    return Err(format!(
                        "only {accepted} of a batch of {batch} connections opened in {BATCH_DEADLINE:?} ({} open before)",
                        self.idle
                    ));
                }
            }
            self.idle += batch;
            left -= batch;
        }
        // Let the last ACKs land.
        for _ in 0..STUCK_TURNS {
            if self.pa.in_flight() == 0 && self.pb.in_flight() == 0 {
                break;
            }
            self.turn();
        }
        // Count them as the stacks see them: every one established at both ends.
        for (side, stack) in [("client", &self.a), ("server", &self.b)] {
            let established = stack.tcp_states().count(State::Established);
            if established != self.idle + 1 {
                return Err(format!(
                    "{side} stack has {established} established connections, expected {} idle + 1 active",
                    self.idle
                ));
            }
        }
        Ok(())
    }

    fn read_exact(&mut self, client_side: bool) -> Result<(), String> {
        let mut got = 0;
        for _ in 0..STUCK_TURNS {
            let (stack, h) = if client_side { (&mut self.a, self.client) } else { (&mut self.b, self.server) };
            if let Ok(n) = stack.tcp_recv(h, &mut self.buf[got..]) {
                if n == 0 {
                    return Err("peer closed early".into());
                }
                got += n;
                if got == self.buf.len() {
                    return Ok(());
                }
            }
            self.turn();
        }
        Err("read stalled".into())
    }
}

impl RequestResponse for UstackIdle {
    fn request_response(&mut self) -> Result<(), String> {
        self.a.tcp_send(self.client, &self.req).map_err(|e| format!("{e:?}"))?;
        self.turn();
        self.read_exact(false)?;
        self.b.tcp_send(self.server, &self.buf).map_err(|e| format!("{e:?}"))?;
        self.turn();
        self.read_exact(true)
    }
}

const METHOD: &str = if cfg!(all(target_os = "linux", target_env = "gnu")) {
    "heap (glibc mallinfo2 uordblks+hblkhd) of the pair with N idle less that of the same pair with none, / 2N"
} else {
    "resident set of the pair with N idle less that of the same pair with none, / 2N"
};

/// Below this many idle connections the memory figure says it undercounts.
const FEW: usize = 50_000;

pub(crate) fn run(p: &IdleParams) -> Result<IdleFigures, String> {
    // The pair with no idle connections is built exactly like the other
    // (same link, listeners, active connection), so what it costs is the
    // fixed part, subtracted from what the idle pair costs in the end.
    let ports = idle_ports(p.connections);
    let (heap0, rss0) = (heap_in_use(), rss());
    let mut zero = UstackIdle::new(0, ports, p.message)?;
    let (heap1, rss1) = (heap_in_use(), rss());
    let mut idle = UstackIdle::new(p.connections, ports, p.message)?;
    let t = WallInstant::now();
    idle.open_idle(p.connections)?;
    let open = t.elapsed();
    let (heap2, rss2) = (heap_in_use(), rss());
    // What the idle pair costs less what the zero pair costs, per endpoint.
    let marginal =
        |at0: u64, at1: u64, at2: u64| per_endpoint(at1, at2, p.connections) - per_endpoint(at0, at1, p.connections);
    let (hz, hi) = measure_alternating(&mut zero, &mut idle, p.duration)?;
    Ok(IdleFigures {
        connections: idle.idle(),
        open,
        bytes_per_connection: marginal(heap0, heap1, heap2),
        rss_bytes_per_connection: marginal(rss0, rss1, rss2),
        rr_ns: hi.value_at_quantile(0.5),
        rr_ns_zero: hz.value_at_quantile(0.5),
        rr_samples: hi.len(),
        rr_samples_zero: hz.len(),
        memory_method: METHOD,
        note: (p.connections < FEW).then(|| {
            format!(
                "below {FEW} connections bytes/conn undercounts: the connection table grows by pages of slots \
                 and the first is bought by the active connection"
            )
        }),
    })
}
