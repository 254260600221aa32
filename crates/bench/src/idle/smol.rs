//! smoltcp: two interfaces on an in-memory Ethernet link, both polled by
//! this thread; N idle sockets from A to B and one active one.
//!
//! smoltcp preallocates every socket's buffers and has no accept queue: each
//! idle connection needs its own listening socket on B. Its `poll` visits
//! every socket for egress and every arriving TCP segment is matched against
//! the sockets in turn, so its costs grow with N by design.

use super::{
    heap_in_use, measure_alternating, per_endpoint, rss, Baseline, IdleFigures, IdleParams, RequestResponse,
    HEAP_METHOD,
};
use ::smoltcp::iface::{Config, Interface, SocketHandle, SocketSet};
use ::smoltcp::phy::{self, ChecksumCapabilities, DeviceCapabilities, Medium};
use ::smoltcp::socket::tcp;
use ::smoltcp::time::Instant;
use ::smoltcp::wire::{EthernetAddress, HardwareAddress, IpAddress, IpCidr, Ipv4Address};
use std::cell::RefCell;
use std::collections::VecDeque;
use std::rc::Rc;
use std::time::{Duration as WallDuration, Instant as WallInstant};

const A_IP: Ipv4Address = Ipv4Address::new(10, 0, 0, 1);
const B_IP: Ipv4Address = Ipv4Address::new(10, 0, 0, 2);
const ACTIVE_PORT: u16 = 5001;
const IDLE_PORT: u16 = 5002;
const FIRST_LOCAL_PORT: u16 = 10_000;
/// Each socket's receive and send buffer (smoltcp allocates them up front).
pub const SOCKET_BUFFER: usize = 4096;
const MTU: usize = 1514;
const STUCK_TURNS: u64 = 10_000_000;
const OPEN_DEADLINE: WallDuration = WallDuration::from_secs(600);

/// Both directions of the link, and spent frame buffers for reuse.
#[derive(Default)]
struct Link {
    queues: [VecDeque<Vec<u8>>; 2],
    spare: Vec<Vec<u8>>,
}

/// One end of the link: receives from `queues[side]`, sends to the other.
struct Port {
    link: Rc<RefCell<Link>>,
    side: usize,
}

struct Rx {
    frame: Vec<u8>,
    link: Rc<RefCell<Link>>,
}

struct Tx {
    link: Rc<RefCell<Link>>,
    to: usize,
}

impl phy::RxToken for Rx {
    fn consume<R, F: FnOnce(&[u8]) -> R>(self, f: F) -> R {
        let r = f(&self.frame);
        self.link.borrow_mut().spare.push(self.frame);
        r
    }
}

impl phy::TxToken for Tx {
    fn consume<R, F: FnOnce(&mut [u8]) -> R>(self, len: usize, f: F) -> R {
        let mut frame = self.link.borrow_mut().spare.pop().unwrap_or_default();
        frame.resize(len, 0);
        let r = f(&mut frame);
        self.link.borrow_mut().queues[self.to].push_back(frame);
        r
    }
}

impl phy::Device for Port {
    type RxToken<'a> = Rx;
    type TxToken<'a> = Tx;

    fn receive(&mut self, _: Instant) -> Option<(Rx, Tx)> {
        let frame = self.link.borrow_mut().queues[self.side].pop_front()?;
        Some((Rx { frame, link: self.link.clone() }, Tx { link: self.link.clone(), to: 1 - self.side }))
    }

    fn transmit(&mut self, _: Instant) -> Option<Tx> {
        Some(Tx { link: self.link.clone(), to: 1 - self.side })
    }

    fn capabilities(&self) -> DeviceCapabilities {
        let mut caps = DeviceCapabilities::default();
        caps.medium = Medium::Ethernet;
        caps.max_transmission_unit = MTU;
        // As loopback (and ustack's in-memory link here): no checksums.
        caps.checksum = ChecksumCapabilities::ignored();
        caps
    }
}

struct Host {
    iface: Interface,
    port: Port,
    sockets: SocketSet<'static>,
}

impl Host {
    fn new(link: &Rc<RefCell<Link>>, side: usize, mac: u8, ip: Ipv4Address, now: Instant) -> Host {
        let mut port = Port { link: link.clone(), side };
        let mut config = Config::new(HardwareAddress::Ethernet(EthernetAddress([2, 0, 0, 0, 0, mac])));
        config.random_seed = u64::from(mac);
        let mut iface = Interface::new(config, &mut port, now);
        iface.update_ip_addrs(|addrs| {
            addrs.push(IpCidr::new(IpAddress::Ipv4(ip), 24)).expect("room for one address");
        });
        Host { iface, port, sockets: SocketSet::new(Vec::new()) }
    }

    fn poll(&mut self, now: Instant) {
        self.iface.poll(now, &mut self.port, &mut self.sockets);
    }

    fn socket() -> tcp::Socket<'static> {
        tcp::Socket::new(tcp::SocketBuffer::new(vec![0; SOCKET_BUFFER]), tcp::SocketBuffer::new(vec![0; SOCKET_BUFFER]))
    }
}

/// Two smoltcp interfaces with `idle` idle connections and one active connection.
pub struct SmoltcpIdle {
    a: Host,
    b: Host,
    start: WallInstant,
    client: SocketHandle,
    server: SocketHandle,
    idle: usize,
    req: Vec<u8>,
    buf: Vec<u8>,
}

impl SmoltcpIdle {
    /// Two interfaces and the active connection, open.
    pub fn new(message: usize) -> Result<SmoltcpIdle, String> {
        let link = Rc::new(RefCell::new(Link::default()));
        let start = WallInstant::now();
        let mut a = Host::new(&link, 0, 1, A_IP, Instant::ZERO);
        let mut b = Host::new(&link, 1, 2, B_IP, Instant::ZERO);
        let mut server = Host::socket();
        server.listen(ACTIVE_PORT).map_err(|e| e.to_string())?;
        server.set_nagle_enabled(false);
        let server = b.sockets.add(server);
        let mut client = Host::socket();
        client.set_nagle_enabled(false);
        client
            .connect(a.iface.context(), (IpAddress::Ipv4(B_IP), ACTIVE_PORT), FIRST_LOCAL_PORT - 1)
            .map_err(|e| e.to_string())?;
        let client = a.sockets.add(client);
        let mut s =
            SmoltcpIdle { a, b, start, client, server, idle: 0, req: vec![0x11; message], buf: vec![0; message] };
        for _ in 0..STUCK_TURNS {
            s.turn();
            if s.a.sockets.get::<tcp::Socket>(s.client).state() == tcp::State::Established
                && s.b.sockets.get::<tcp::Socket>(s.server).state() == tcp::State::Established
            {
                return Ok(s);
            }
        }
        Err("the active smoltcp connection never opened".into())
    }

    pub fn idle(&self) -> usize {
        self.idle
    }

    fn now(&self) -> Instant {
        Instant::from_micros(self.start.elapsed().as_micros() as i64)
    }

    fn turn(&mut self) {
        let now = self.now();
        self.a.poll(now);
        self.b.poll(now);
    }

    /// Open `n` more idle connections (local ports from 10,000 up, so at
    /// most 55,000 in all).
    pub fn open_idle(&mut self, n: usize) -> Result<(), String> {
        if self.idle + n > usize::from(u16::MAX - FIRST_LOCAL_PORT) {
            return Err(format!("smoltcp side: at most {} idle connections", u16::MAX - FIRST_LOCAL_PORT));
        }
        let mut servers = Vec::with_capacity(n);
        for i in 0..n {
            let mut server = Host::socket();
            server.listen(IDLE_PORT).map_err(|e| e.to_string())?;
            servers.push(self.b.sockets.add(server));
            let mut client = Host::socket();
            let local = FIRST_LOCAL_PORT + (self.idle + i) as u16;
            client
                .connect(self.a.iface.context(), (IpAddress::Ipv4(B_IP), IDLE_PORT), local)
                .map_err(|e| e.to_string())?;
            self.a.sockets.add(client);
        }
        let deadline = WallInstant::now() + OPEN_DEADLINE;
        // Checking costs a pass over the new sockets, as a poll does.
        while !servers.iter().all(|&h| self.b.sockets.get::<tcp::Socket>(h).state() == tcp::State::Established) {
            self.turn();
            if WallInstant::now() > deadline {
                return Err(format!("smoltcp: {n} connections did not open in {OPEN_DEADLINE:?}"));
            }
        }
        // Let the last ACKs land.
        for _ in 0..16 {
            self.turn();
        }
        self.idle += n;
        Ok(())
    }

    fn read_exact(&mut self, client_side: bool) -> Result<(), String> {
        let mut got = 0;
        for _ in 0..STUCK_TURNS {
            let (host, h) = if client_side { (&mut self.a, self.client) } else { (&mut self.b, self.server) };
            match host.sockets.get_mut::<tcp::Socket>(h).recv_slice(&mut self.buf[got..]) {
                Ok(n) => {
                    got += n;
                    if got == self.buf.len() {
                        return Ok(());
                    }
                }
                Err(e) => return Err(format!("smoltcp recv: {e}")),
            }
            self.turn();
        }
        Err("smoltcp read stalled".into())
    }
}

impl RequestResponse for SmoltcpIdle {
    fn request_response(&mut self) -> Result<(), String> {
        let sent =
            self.a.sockets.get_mut::<tcp::Socket>(self.client).send_slice(&self.req).map_err(|e| e.to_string())?;
        if sent != self.req.len() {
            return Err("smoltcp: request did not fit the send buffer".into());
        }
        self.turn();
        self.read_exact(false)?;
        let b = &mut self.b.sockets;
        b.get_mut::<tcp::Socket>(self.server).send_slice(&self.buf).map_err(|e| e.to_string())?;
        self.turn();
        self.read_exact(true)
    }
}

pub(crate) fn run(p: &IdleParams) -> Baseline {
    let n = p.connections.min(p.smoltcp_max);
    let mut note = format!(
        "smoltcp 0.12 scans every socket per poll and per segment; {SOCKET_BUFFER} B receive + {SOCKET_BUFFER} B send buffer preallocated per socket"
    );
    if n < p.connections {
        note.push_str(&format!("; capped at N = {n} (--smoltcp-max)"));
    }
    match run_n(p, n) {
        Ok(mut f) => {
            f.note = Some(note);
            Baseline::Ran(f)
        }
        Err(e) => Baseline::Failed(e),
    }
}

fn run_n(p: &IdleParams, n: usize) -> Result<IdleFigures, String> {
    let mut zero = SmoltcpIdle::new(p.message)?;
    let mut idle = SmoltcpIdle::new(p.message)?;
    let (heap0, rss0) = (heap_in_use(), rss());
    let t = WallInstant::now();
    idle.open_idle(n)?;
    let open = t.elapsed();
    let (heap1, rss1) = (heap_in_use(), rss());
    let (hz, hi) = measure_alternating(&mut zero, &mut idle, p.duration)?;
    Ok(IdleFigures {
        connections: n,
        open,
        bytes_per_connection: per_endpoint(heap0, heap1, n),
        rss_bytes_per_connection: per_endpoint(rss0, rss1, n),
        rr_ns: hi.value_at_quantile(0.5),
        rr_ns_zero: hz.value_at_quantile(0.5),
        rr_samples: hi.len(),
        rr_samples_zero: hz.len(),
        memory_method: HEAP_METHOD,
        note: None,
    })
}
