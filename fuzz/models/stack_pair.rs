//! Sequence model of two whole stacks on the in-memory link: A (10.0.0.1)
//! opens connections to B (10.0.0.2), which listens on port 80 (and on 81
//! when told to). The link's loss, duplication, reordering, corruption and
//! delay come from the input, and so does a sequence of actions: poll, let
//! time pass, the application calls (connect, listen, accept, send, recv,
//! shutdown, close, abort), and frames injected into either stack — TCP
//! segments built from arbitrary fields aimed at live connections, or raw
//! bytes.
//!
//! After every step: nothing panicked, the buffer pool and connection table
//! are within their limits, every socket's receive queue within its buffer,
//! the counters add up (`Counters::unaccounted_frames` is zero: every frame
//! received was consumed or dropped with a reason), and — while no forged
//! TCP segment reached a stack — every byte read is the byte sent at that
//! offset of that connection. At the end, if nothing was forged, a drain
//! (the application reading everything, time running on) must deliver every
//! byte sent on every connection neither side let go of.
//!
//! Shared by the `stack_sequence` fuzz target and the proptest in
//! `crates/core/tests/sequence_model.rs` (included there by path).

use arbitrary::Unstructured;
use std::net::{Ipv4Addr, SocketAddrV4};
use ustack_core::phy::{Device, RxMeta};
use ustack_core::tcp::TcpConfig;
use ustack_core::{Duration, Instant, Ipv4Cidr, Stack, StackConfig, TcpHandle};
use ustack_device::{LinkConfig, MemoryLink, MemoryPort};
use ustack_wire::{EtherType, EthernetAddress, EthernetRepr, Ipv4Repr, TcpFlags, TcpRepr, TcpSeqNumber};

pub const MAX_STEPS: usize = 400;
const MAX_CONNS: usize = 12;
const IPS: [Ipv4Addr; 2] = [Ipv4Addr::new(10, 0, 0, 1), Ipv4Addr::new(10, 0, 0, 2)];
const MACS: [EthernetAddress; 2] = [EthernetAddress([2, 0, 0, 0, 0, 1]), EthernetAddress([2, 0, 0, 0, 0, 2])];

/// Byte `i` of the stream from `side` on the connection whose client port
/// is `port`.
fn pattern(port: u16, side: usize, i: u64) -> u8 {
    ((i.wrapping_mul(2_654_435_761) >> 11) as u8) ^ (port as u8) ^ ((port >> 8) as u8) ^ (side as u8 * 0xa5)
}

/// One end of a connection, as the application holds it.
struct Sock {
    side: usize,
    h: TcpHandle,
    /// The client's port: the connection's name in both stacks.
    port: u16,
    sent: u64,
    read: u64,
    let_go: bool,
    /// The peer's end was reset before its application accepted it.
    peer_gone: bool,
}

pub struct Model {
    stacks: [Stack; 2],
    ports: [MemoryPort; 2],
    socks: Vec<Sock>,
    now: Instant,
    forged: bool,
    listening_81: bool,
    lossless: bool,
    buf: Vec<u8>,
    frame: Vec<u8>,
}

fn config(side: usize, u: &mut Unstructured<'_>) -> arbitrary::Result<StackConfig> {
    let mut cfg = StackConfig::new(MACS[side], Ipv4Cidr::new(IPS[side], 24).unwrap());
    let mut tcp = TcpConfig::default();
    tcp.send_buffer_size = [4096, 65536][usize::from(u.int_in_range(0u8..=1)?)];
    tcp.recv_buffer_size = [4096, 65536][usize::from(u.int_in_range(0u8..=1)?)];
    tcp.buffer_pool_limit = [32 * 1024, 1 << 20][usize::from(u.int_in_range(0u8..=1)?)];
    tcp.buffer_pool_floor = 0;
    tcp.sack = u.arbitrary()?;
    tcp.timestamps = u.arbitrary()?;
    tcp.window_scaling = u.arbitrary()?;
    tcp.time_wait = Duration::from_secs(2);
    cfg.tcp = tcp;
    cfg.tcp_syn_cookies = u.arbitrary()?;
    cfg.tcp_max_connections = usize::from(u.int_in_range(2u8..=16)?);
    Ok(cfg)
}

impl Model {
    pub fn new(u: &mut Unstructured<'_>) -> arbitrary::Result<Model> {
        let pct = |u: &mut Unstructured<'_>| -> arbitrary::Result<f64> {
            Ok([0.0, 0.0, 0.01, 0.05, 0.2][usize::from(u.int_in_range(0u8..=4)?)])
        };
        let link = LinkConfig {
            capacity: [8, 64, 1024][usize::from(u.int_in_range(0u8..=2)?)],
            loss: pct(u)?,
            duplicate: pct(u)?,
            reorder: pct(u)?,
            corrupt: pct(u)?,
            delay: Duration::from_micros(u64::from(u.arbitrary::<u16>()?) * 10),
            ..LinkConfig::default()
        };
        let seed = u.arbitrary()?;
        let (pa, pb) = MemoryLink::pair(link, seed);
        let stacks = [Stack::new(config(0, u)?, seed ^ 1), Stack::new(config(1, u)?, seed ^ 2)];
        let mut m = Model {
            stacks,
            ports: [pa, pb],
            socks: Vec::new(),
            now: Instant::ZERO,
            forged: false,
            listening_81: false,
            lossless: link.loss == 0.0 && link.corrupt == 0.0,
            buf: vec![0; 70000],
            frame: vec![0; 2048],
        };
        m.stacks[1].tcp_listen(80, usize::from(u.int_in_range(1u8..=8)?)).unwrap();
        Ok(m)
    }

    pub fn run(u: &mut Unstructured<'_>) -> arbitrary::Result<()> {
        let mut m = Model::new(u)?;
        for _ in 0..MAX_STEPS {
            if u.is_empty() {
                break;
            }
            m.step(u)?;
            m.check();
        }
        m.drain();
        Ok(())
    }

    fn turn(&mut self, budget: usize) {
        for side in 0..2 {
            self.ports[side].set_now(self.now);
            self.stacks[side].poll(self.now, &mut self.ports[side], budget);
        }
    }

    fn next_event(&self) -> Option<Instant> {
        let t = self.stacks.iter().filter_map(Stack::poll_timeout).min();
        let d = self.ports.iter().filter_map(MemoryPort::next_delivery).min();
        match (t, d) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }

    fn pick(&self, u: &mut Unstructured<'_>) -> arbitrary::Result<Option<usize>> {
        Ok(if self.socks.is_empty() { None } else { Some(u.choose_index(self.socks.len())?) })
    }

    fn step(&mut self, u: &mut Unstructured<'_>) -> arbitrary::Result<()> {
        match u.int_in_range(0u8..=13)? {
            0..=2 => {
                let budget = usize::from(u.int_in_range(1u8..=64)?);
                self.turn(budget);
            }
            3 => {
                self.now += Duration::from_millis(u64::from(u.arbitrary::<u16>()?) % 5000);
                self.turn(64);
            }
            4 => {
                if let Some(t) = self.next_event() {
                    self.now = self.now.max(t);
                }
                self.turn(64);
            }
            5 => {
                if self.socks.len() < MAX_CONNS {
                    let port = [80, 81, 82][usize::from(u.int_in_range(0u8..=2)?)];
                    if let Ok(h) = self.stacks[0].tcp_connect(self.now, SocketAddrV4::new(IPS[1], port)) {
                        let local = self.stacks[0].tcp_connection(h).unwrap().four_tuple().local_port;
                        self.socks.push(Sock { side: 0, h, port: local, sent: 0, read: 0, let_go: false, peer_gone: false });
                    }
                }
            }
            6 => self.accept(),
            7 => {
                if let Some(i) = self.pick(u)? {
                    let len = usize::from(u.arbitrary::<u16>()?) % 30000;
                    self.send(i, len);
                }
            }
            8 => {
                if let Some(i) = self.pick(u)? {
                    let len = usize::from(u.arbitrary::<u16>()?) % 30000 + 1;
                    self.recv(i, len);
                }
            }
            9 => {
                if let Some(i) = self.pick(u)? {
                    let s = &mut self.socks[i];
                    if !s.let_go {
                        let stack = &mut self.stacks[s.side];
                        match u.int_in_range(0u8..=2)? {
                            0 => {
                                let _ = stack.tcp_shutdown(s.h);
                            }
                            1 => {
                                stack.tcp_close(s.h);
                                s.let_go = true;
                            }
                            _ => {
                                stack.tcp_abort(s.h);
                                s.let_go = true;
                            }
                        }
                    }
                }
            }
            10 => {
                if self.listening_81 {
                    self.stacks[1].tcp_unlisten(81);
                    self.forget_unaccepted(81);
                } else {
                    self.stacks[1].tcp_listen(81, 4).unwrap();
                }
                self.listening_81 = !self.listening_81;
            }
            11 => self.inject_tcp(u)?,
            _ => self.inject_raw(u)?,
        }
        Ok(())
    }

    fn accept(&mut self) {
        for port in [80, 81] {
            while let Some(h) = self.stacks[1].tcp_accept(port) {
                let client = self.stacks[1].tcp_connection(h).unwrap().four_tuple().remote_port;
                self.socks.push(Sock { side: 1, h, port: client, sent: 0, read: 0, let_go: false, peer_gone: false });
            }
        }
    }

    /// `tcp_unlisten` resets the connections not yet accepted: B's
    /// application let go of them. Each RST goes once; when the link drops
    /// it (a full queue), A's end stays open with nothing in flight to draw
    /// another, as after any lost RST, so the drain does not wait for them.
    fn forget_unaccepted(&mut self, port: u16) {
        let accepted: Vec<u16> = self.socks.iter().filter(|s| s.side == 1).map(|s| s.port).collect();
        for s in self.socks.iter_mut().filter(|s| s.side == 0 && !accepted.contains(&s.port)) {
            if self.stacks[0].tcp_connection(s.h).is_some_and(|c| c.four_tuple().remote_port == port) {
                s.peer_gone = true;
            }
        }
    }

    fn send(&mut self, i: usize, len: usize) {
        let s = &mut self.socks[i];
        if s.let_go {
            return;
        }
        let data: Vec<u8> = (0..len as u64).map(|k| pattern(s.port, s.side, s.sent + k)).collect();
        if let Ok(n) = self.stacks[s.side].tcp_send(s.h, &data) {
            assert!(n <= len);
            s.sent += n as u64;
        }
    }

    fn recv(&mut self, i: usize, len: usize) {
        let s = &mut self.socks[i];
        if s.let_go {
            return;
        }
        let len = len.min(self.buf.len());
        if let Ok(n) = self.stacks[s.side].tcp_recv(s.h, &mut self.buf[..len]) {
            if !self.forged {
                for (k, &b) in self.buf[..n].iter().enumerate() {
                    let at = s.read + k as u64;
                    assert_eq!(b, pattern(s.port, 1 - s.side, at), "port {} side {}: wrong byte at {at}", s.port, s.side);
                }
            }
            s.read += n as u64;
        }
    }

    /// A TCP segment from arbitrary fields, aimed at a live connection (its
    /// addresses and ports, sequence numbers near its own) or anywhere.
    fn inject_tcp(&mut self, u: &mut Unstructured<'_>) -> arbitrary::Result<()> {
        let to = usize::from(u.arbitrary::<bool>()?);
        let (mut src_port, mut dst_port, mut seq, mut ack) = (u.arbitrary()?, u.arbitrary()?, 0u32, 0u32);
        if let Some(i) = self.pick(u)? {
            let s = &self.socks[i];
            if let Some(c) = self.stacks[s.side].tcp_connection(s.h) {
                let t = c.four_tuple();
                // As if from the peer of `s` (to its stack), or from `s`'s
                // stack to its peer.
                (src_port, dst_port) = if s.side == to { (t.remote_port, t.local_port) } else { (t.local_port, t.remote_port) };
                seq = c.snd_max().0;
                ack = c.snd_una().0;
                if s.side == to {
                    (seq, ack) = (ack, seq);
                }
            }
        }
        let jitter = |u: &mut Unstructured<'_>, v: u32| -> arbitrary::Result<u32> {
            Ok(if u.arbitrary()? { v.wrapping_add(i32::from(u.arbitrary::<i16>()?) as u32) } else { u.arbitrary()? })
        };
        let seq = jitter(u, seq)?;
        let ack = jitter(u, ack)?;
        let bits: u8 = u.arbitrary()?;
        let len = usize::from(u.arbitrary::<u16>()?) % 1400;
        let payload: Vec<u8> = (0..len).map(|k| k as u8 ^ bits).collect();
        let mut sack_ranges = [None; 4];
        for r in &mut sack_ranges {
            if u.arbitrary()? {
                *r = Some((TcpSeqNumber(jitter(u, ack)?), TcpSeqNumber(jitter(u, ack)?)));
            }
        }
        let tcp = TcpRepr {
            src_port,
            dst_port,
            seq_number: TcpSeqNumber(seq),
            ack_number: (bits & 0x10 != 0).then_some(TcpSeqNumber(ack)),
            flags: TcpFlags::from_byte(bits),
            window_len: u.arbitrary()?,
            max_seg_size: u.arbitrary()?,
            window_scale: u.arbitrary::<Option<u8>>()?.map(|w| w % 16),
            sack_permitted: u.arbitrary()?,
            sack_ranges: if u.arbitrary()? { sack_ranges } else { [None; 4] },
            timestamp: u.arbitrary()?,
            payload: &payload,
        };
        let eth = EthernetRepr { src_addr: MACS[1 - to], dst_addr: MACS[to], ethertype: EtherType::Ipv4, vlan_id: None };
        let ip = ip_repr(IPS[1 - to], IPS[to], 0);
        let n = ustack_wire::build::tcp_frame_len(&eth, &tcp);
        if n > self.frame.len() {
            return Ok(());
        }
        if let Ok(n) = ustack_wire::build::tcp_frame(&mut self.frame[..n], &eth, &ip, &tcp) {
            self.forged = true;
            let frame = self.frame[..n].to_vec();
            self.receive(to, &frame);
        }
        Ok(())
    }

    /// Raw bytes, or an IPv4 packet of any protocol around raw bytes.
    fn inject_raw(&mut self, u: &mut Unstructured<'_>) -> arbitrary::Result<()> {
        let to = usize::from(u.arbitrary::<bool>()?);
        let len = usize::from(u.int_in_range(0u16..=1600)?);
        let bytes = u.bytes(len.min(u.len()))?.to_vec();
        let frame = if u.arbitrary()? {
            bytes
        } else {
            let eth = EthernetRepr { src_addr: MACS[1 - to], dst_addr: MACS[to], ethertype: EtherType::Ipv4, vlan_id: None };
            let proto = u.arbitrary::<u8>()?;
            let ip = Ipv4Repr { payload_len: bytes.len().min(1480), ..ip_repr(IPS[1 - to], IPS[to], proto) };
            let mut f = vec![0; 14 + 20 + ip.payload_len];
            eth.emit(&mut ustack_wire::EthernetFrame::new_unchecked(&mut f[..]));
            ip.emit(&mut ustack_wire::Ipv4Packet::new_unchecked(&mut f[14..]), ustack_wire::ChecksumMode::Verify);
            f[34..].copy_from_slice(&bytes[..ip.payload_len]);
            f
        };
        let before = self.stacks[to].counters().clone();
        self.receive(to, &frame);
        let after = self.stacks[to].counters();
        // Raw bytes that passed for a TCP segment (checksum and all) count
        // as forged: they may have been in window.
        if after.tcp_rx > before.tcp_rx && after.total_drops() == before.total_drops() {
            self.forged = true;
        }
        Ok(())
    }

    fn receive(&mut self, to: usize, frame: &[u8]) {
        self.ports[to].set_now(self.now);
        let (_, mut tx) = self.ports[to].queues();
        self.stacks[to].receive(self.now, frame, RxMeta::default(), &mut tx);
    }

    fn check(&self) {
        for stack in &self.stacks {
            let pool = stack.tcp_buffer_pool();
            assert!(pool.in_use() <= pool.limit(), "pool over its limit");
            assert!(stack.tcp_connections() <= stack.config().tcp_max_connections, "connection table over its limit");
            let c = stack.counters();
            assert_eq!(c.unaccounted_frames(), 0, "frames neither consumed nor dropped: {c:?}");
        }
        for s in &self.socks {
            if let Some(c) = self.stacks[s.side].tcp_connection(s.h) {
                assert!(c.recv_queue() <= self.stacks[s.side].config().tcp.recv_buffer_size);
                assert!(c.send_queue() <= self.stacks[s.side].config().tcp.send_buffer_size);
            }
        }
    }

    /// Read everything and let time run: every byte sent on a connection
    /// neither application let go of must arrive.
    fn drain(&mut self) {
        if self.forged || !self.lossless {
            return;
        }
        for _ in 0..5000 {
            self.accept();
            for i in 0..self.socks.len() {
                self.recv(i, 70000);
            }
            let pending = self.pending();
            if pending.is_empty() {
                return;
            }
            match self.next_event() {
                Some(t) => self.now = self.now.max(t).max(self.now + Duration::from_micros(1)),
                None => self.now += Duration::from_millis(10),
            }
            self.turn(64);
            self.check();
        }
        panic!("drain did not deliver everything: {:?}", self.pending());
    }

    /// Connections (by client port) with bytes sent and not yet read, both
    /// ends held, and both still able to move them.
    fn pending(&self) -> Vec<(u16, u64, u64)> {
        let mut out = Vec::new();
        for a in self.socks.iter().filter(|s| s.side == 0 && !s.peer_gone) {
            let Some(b) = self.socks.iter().find(|s| s.side == 1 && s.port == a.port) else {
                // Not accepted (yet): fine if nothing was sent or it failed.
                let alive = self.stacks[0].tcp_connection(a.h).is_some_and(|c| c.error().is_none());
                if !a.let_go && alive && a.sent > 0 && self.stacks[1].tcp_connections() > 0 {
                    out.push((a.port, a.sent, 0));
                }
                continue;
            };
            if a.let_go || b.let_go {
                continue;
            }
            let failed = |s: &Sock| self.stacks[s.side].tcp_connection(s.h).is_none_or(|c| c.error().is_some());
            if failed(a) || failed(b) {
                continue;
            }
            if a.sent != b.read || b.sent != a.read {
                out.push((a.port, a.sent, b.read));
            }
        }
        out
    }
}

fn ip_repr(src: Ipv4Addr, dst: Ipv4Addr, proto: u8) -> Ipv4Repr {
    Ipv4Repr {
        src_addr: src,
        dst_addr: dst,
        protocol: proto.into(),
        payload_len: 0,
        ttl: 64,
        ident: 1,
        dont_frag: true,
        more_frags: false,
        frag_offset: 0,
        dscp_ecn: 0,
    }
}
