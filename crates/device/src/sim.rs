//! The simulation kit: a sharded stack (N [`Stack`]s sharing one address,
//! one per queue of a [`MultiQueueLink`]) and a peer stack, turned in
//! virtual time on one thread.
//!
//! [`ShardSim::new`] builds it; [`ShardSim::turn`] polls every stack once
//! at the current time; [`ShardSim::run_until`] turns, jumping virtual time
//! to the next deadline (a stack's timer, a frame's delivery) whenever a
//! turn moves nothing, until a condition holds or a bound on turns is
//! reached (a livelock ends the run instead of hanging it). Same seeds, same
//! run, frame for frame.
//!
//! [`ShardSim::move_connection`] moves an established connection from one
//! shard's stack to another's ([`Stack::tcp_export`], [`Stack::tcp_import`]).
//! The link still steers the flow by its hash, so, as the sharded runtime
//! does, the shard that receives one of its frames hands it to the shard
//! that now holds the connection, through that shard's inbox (counted in
//! [`ShardSim::handed_over`]).

use std::collections::{HashMap, VecDeque};
use std::net::Ipv4Addr;

use ustack_core::phy::{Device, DeviceCaps, RxMeta, RxQueue};
use ustack_core::rss::{FrameFlow, ShardHome, Toeplitz};
use ustack_core::{Instant, Ipv4Cidr, MoveError, Stack, StackConfig, TcpHandle};
use ustack_wire::EthernetAddress;

use crate::memory::LinkConfig;
use crate::multiqueue::{MultiQueueLink, PeerPort, QueuePort, QueueTx};
use crate::waitable::earliest;

/// The peer's address.
pub const PEER_IP: Ipv4Addr = Ipv4Addr::new(10, 0, 0, 1);
/// The sharded stack's address, the same on every shard.
pub const SHARD_IP: Ipv4Addr = Ipv4Addr::new(10, 0, 0, 2);
/// The peer's MAC.
pub const PEER_MAC: EthernetAddress = EthernetAddress([2, 0, 0, 0, 0, 1]);
/// The sharded stack's MAC, the same on every shard.
pub const SHARD_MAC: EthernetAddress = EthernetAddress([2, 0, 0, 0, 0, 2]);

/// Frames each stack receives at most per turn.
const BURST: usize = 64;

/// A peer stack and a sharded stack on a multi-queue in-memory link.
pub struct ShardSim {
    /// The peer (a client or server the shards talk to).
    pub peer: Stack,
    /// The peer's port.
    pub peer_port: PeerPort,
    /// Shard `k`'s stack; it knows it is shard `k` ([`Stack::set_shard`]).
    pub shards: Vec<Stack>,
    /// Shard `k`'s queue.
    pub ports: Vec<QueuePort>,
    /// Virtual time.
    pub now: Instant,
    /// Frames handed from the shard that received them to the one holding
    /// their (moved) connection.
    pub handed_over: u64,
    /// The shard holding each moved flow, by (shard address, shard port,
    /// peer address, peer port).
    owners: HashMap<FlowKey, usize>,
    /// Each shard's frames handed over by the others, in arrival order.
    inboxes: Vec<VecDeque<(Vec<u8>, RxMeta)>>,
    /// Buffers of frames already passed on, for reuse.
    spare: Vec<Vec<u8>>,
    /// Each shard's frame lent to its stack by the last receive.
    current: Vec<Vec<u8>>,
}

/// A flow as the shards see it: (local address, local port, remote address, remote port).
type FlowKey = (Ipv4Addr, u16, Ipv4Addr, u16);

impl ShardSim {
    /// `shards` stacks at [`SHARD_IP`] and a peer at [`PEER_IP`] (both /24)
    /// on a link shaped by `link`, steered by `toeplitz`; `configure` may
    /// change each stack's configuration (it sees the peer's first, then
    /// each shard's).
    pub fn new(shards: usize, link: LinkConfig, toeplitz: Toeplitz, configure: impl Fn(&mut StackConfig)) -> ShardSim {
        let (peer_port, ports) = MultiQueueLink::build(link, shards, toeplitz.clone(), 0x5eed);
        let cfg = |mac, ip| {
            let mut c = StackConfig::new(mac, Ipv4Cidr::new(ip, 24).expect("a valid /24"));
            configure(&mut c);
            c
        };
        let peer = Stack::new(cfg(PEER_MAC, PEER_IP), 1);
        let n = ports.len();
        let shards = (0..n)
            .map(|k| {
                let mut s = Stack::new(cfg(SHARD_MAC, SHARD_IP), 100 + k as u64);
                s.set_shard(Some(ShardHome::new(toeplitz.clone(), k, n)));
                s
            })
            .collect();
        ShardSim {
            peer,
            peer_port,
            shards,
            ports,
            now: Instant::ZERO,
            handed_over: 0,
            owners: HashMap::new(),
            inboxes: vec![VecDeque::new(); n],
            spare: Vec::new(),
            current: vec![Vec::new(); n],
        }
    }

    /// Poll every stack once at `now`; returns the frames they received.
    pub fn turn(&mut self) -> usize {
        let mut n = self.peer.poll(self.now, &mut self.peer_port, BURST);
        let ShardSim { shards, ports, owners, inboxes, spare, current, handed_over, now, .. } = self;
        for (me, (stack, port)) in shards.iter_mut().zip(ports.iter_mut()).enumerate() {
            let mut dev = Forwarding { port, me, owners, inboxes, spare, current: &mut current[me], handed_over };
            n += stack.poll(*now, &mut dev, BURST);
        }
        n
    }

    /// Move connection `h` from shard `from` to shard `to`: out of the one
    /// stack, into the other; from now on the frames of its flow that
    /// reach another shard are handed to `to`. Returns its handle on `to`.
    /// A connection `to` cannot take goes back to `from` (under a new handle,
    /// returned with the error).
    pub fn move_connection(
        &mut self,
        from: usize,
        h: TcpHandle,
        to: usize,
    ) -> Result<TcpHandle, (MoveError, Option<TcpHandle>)> {
        let moved = self.shards[from].tcp_export(h).map_err(|e| (e, None))?;
        let t = moved.four_tuple();
        let key = match (t.local_addr, t.remote_addr) {
            (std::net::IpAddr::V4(l), std::net::IpAddr::V4(r)) => (l, t.local_port, r, t.remote_port),
            _ => unreachable!("the simulated link carries IPv4"),
        };
        match self.shards[to].tcp_import(moved) {
            Ok(h) => {
                self.owners.insert(key, to);
                Ok(h)
            }
            Err((e, back)) => {
                let h = self.shards[from].tcp_import(back).ok();
                Err((e, h))
            }
        }
    }

    /// The earliest time anything is due: a stack's timer or a frame's
    /// delivery.
    pub fn next_deadline(&self) -> Option<Instant> {
        if self.inboxes.iter().any(|i| !i.is_empty()) {
            return Some(self.now);
        }
        let mut t = earliest(self.peer.poll_timeout(), self.peer_port.next_delivery());
        for (stack, port) in self.shards.iter().zip(&self.ports) {
            t = earliest(t, earliest(stack.poll_timeout(), port.next_delivery()));
        }
        t
    }

    /// Turn until `done` holds, at most `max_turns` turns; when a turn
    /// receives nothing, time jumps to the next deadline (never backwards).
    /// Returns whether `done` held.
    pub fn run_until(&mut self, max_turns: usize, mut done: impl FnMut(&mut ShardSim) -> bool) -> bool {
        for _ in 0..max_turns {
            if done(self) {
                return true;
            }
            if self.turn() == 0 {
                match self.next_deadline() {
                    Some(t) if t > self.now => self.now = t,
                    Some(_) => {}
                    None => return done(self),
                }
            }
        }
        done(self)
    }
}

/// A shard's queue with the handoffs of moved flows: frames handed to this
/// shard first, then the queue's own, each of a flow another shard holds
/// passed to that shard's inbox instead.
struct Forwarding<'a> {
    port: &'a mut QueuePort,
    me: usize,
    owners: &'a HashMap<FlowKey, usize>,
    inboxes: &'a mut [VecDeque<(Vec<u8>, RxMeta)>],
    spare: &'a mut Vec<Vec<u8>>,
    current: &'a mut Vec<u8>,
    handed_over: &'a mut u64,
}

impl Device for Forwarding<'_> {
    type Rx<'b>
        = ForwardingRx<'b>
    where
        Self: 'b;
    type Tx<'b>
        = QueueTx<'b>
    where
        Self: 'b;

    fn queues(&mut self) -> (ForwardingRx<'_>, QueueTx<'_>) {
        let (rx, tx) = self.port.queues();
        let rx = ForwardingRx {
            rx,
            me: self.me,
            owners: self.owners,
            inboxes: &mut *self.inboxes,
            spare: &mut *self.spare,
            current: &mut *self.current,
            handed_over: &mut *self.handed_over,
        };
        (rx, tx)
    }

    fn caps(&self) -> DeviceCaps {
        self.port.caps()
    }
}

struct ForwardingRx<'a> {
    rx: crate::multiqueue::QueueRx<'a>,
    me: usize,
    owners: &'a HashMap<FlowKey, usize>,
    inboxes: &'a mut [VecDeque<(Vec<u8>, RxMeta)>],
    spare: &'a mut Vec<Vec<u8>>,
    current: &'a mut Vec<u8>,
    handed_over: &'a mut u64,
}

impl ForwardingRx<'_> {
    /// The shard holding the flow of `frame`, when it is not this one.
    fn elsewhere(&self, frame: &[u8]) -> Option<usize> {
        if self.owners.is_empty() {
            return None;
        }
        let f = FrameFlow::parse(frame)?;
        let (sport, dport) = f.ports?;
        self.owners.get(&(f.dst, dport, f.src, sport)).copied().filter(|&k| k != self.me)
    }
}

impl RxQueue for ForwardingRx<'_> {
    fn recv(&mut self, now: Instant) -> Option<(&[u8], RxMeta)> {
        loop {
            // Handed over first; a frame whose connection moved on again
            // since is handed on.
            let (copy, meta) = match self.inboxes[self.me].pop_front() {
                Some(handed) => handed,
                None => {
                    let (frame, meta) = self.rx.recv(now)?;
                    let mut copy = self.spare.pop().unwrap_or_default();
                    copy.clear();
                    copy.extend_from_slice(frame);
                    (copy, meta)
                }
            };
            match self.elsewhere(&copy) {
                Some(owner) => {
                    *self.handed_over += 1;
                    self.inboxes[owner].push_back((copy, meta));
                }
                None => {
                    self.spare.push(std::mem::replace(self.current, copy));
                    return Some((&self.current[..], meta));
                }
            }
        }
    }
}
