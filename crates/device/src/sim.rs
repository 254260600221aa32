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

use std::net::Ipv4Addr;

use ustack_core::rss::{ShardHome, Toeplitz};
use ustack_core::{Instant, Ipv4Cidr, Stack, StackConfig};
use ustack_wire::EthernetAddress;

use crate::memory::LinkConfig;
use crate::multiqueue::{MultiQueueLink, PeerPort, QueuePort};
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
}

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
        ShardSim { peer, peer_port, shards, ports, now: Instant::ZERO }
    }

    /// Poll every stack once at `now`; returns the frames they received.
    pub fn turn(&mut self) -> usize {
        let mut n = self.peer.poll(self.now, &mut self.peer_port, BURST);
        for (stack, port) in self.shards.iter_mut().zip(&mut self.ports) {
            n += stack.poll(self.now, port, BURST);
        }
        n
    }

    /// The earliest time anything is due: a stack's timer or a frame's
    /// delivery.
    pub fn next_deadline(&self) -> Option<Instant> {
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
