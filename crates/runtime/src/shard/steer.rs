//! A shard's device queue, wrapped so that every frame reaches the shard
//! that owns its flow: frames the queue received for another shard cross
//! once through that shard's inbox ([`super::handoff`]); frames other
//! shards handed over are received first.
//!
//! Ownership is the RSS hash: a TCP or UDP frame over IPv4 belongs to shard
//! `ShardHome::shard_of(its 4-tuple)`, the shard whose active opens picked
//! that port ([`ustack_core::Stack::set_shard`]) and whose queue a device
//! steering by the same hash delivers it to. Frames without ports (ICMP,
//! IP fragments) stay on the shard that received them. ARP replies are also
//! copied to every other shard, so each shard's neighbour cache resolves
//! without asking again; ARP requests are answered where they land.
//!
//! A connection moved to another shard ([`super::moves`]) takes its flow
//! with it: its frames go where the shard's table of moved flows says,
//! whether they came from the device queue or from the inbox (handed over
//! before the move was known), and a move in the inbox is imported before
//! anything behind it is received.

use std::cell::RefCell;
use std::os::fd::RawFd;
use std::rc::Rc;

use ustack_core::phy::{Device, DeviceCaps, RxMeta, RxQueue};
use ustack_core::rss::{FrameFlow, ShardHome};
use ustack_core::time::Instant;
use ustack_device::{DeviceError, Waitable};

use super::handoff::{Endpoint, Handoff, Message};
use super::moves::{Moves, MAX_HOPS};

/// Frames of other shards one `recv` call hands over at most before it
/// says the queue is empty for now (so a flood for other shards cannot
/// keep this one from its own turn).
const HANDOFFS_PER_RECV: usize = 256;

/// A shard's device with its handoffs (see the module docs).
pub struct SteeredDevice<D> {
    inner: D,
    endpoint: Endpoint,
    home: ShardHome,
    moves: Rc<RefCell<Moves>>,
    /// The handed-over frame lent out by the last `recv`.
    current: Option<Handoff>,
}

impl<D> SteeredDevice<D> {
    pub(crate) fn new(inner: D, endpoint: Endpoint, home: ShardHome, moves: Rc<RefCell<Moves>>) -> SteeredDevice<D> {
        SteeredDevice { inner, endpoint, home, moves, current: None }
    }

    /// The device this shard's queue is.
    pub fn inner(&self) -> &D {
        &self.inner
    }
}

/// Where a received frame goes.
enum Verdict {
    Here,
    Shard(usize),
    /// Here, and a copy to every other shard.
    Everywhere,
}

/// The shard that has a TCP or UDP frame's flow: the one a move took it
/// to, or its home by the hash.
fn owner(home: &ShardHome, moves: &Moves, f: &FrameFlow) -> Option<usize> {
    let (sport, dport) = f.ports?;
    let (src, dst) = (f.src, f.dst);
    Some(moves.owner((dst, dport, src, sport)).unwrap_or_else(|| home.shard_of(dst, dport, src, sport)))
}

fn verdict(home: &ShardHome, moves: &Moves, frame: &[u8]) -> Verdict {
    match FrameFlow::parse(frame) {
        Some(f @ FrameFlow { ports: Some(_), .. }) => {
            let owner = owner(home, moves, &f).expect("a flow with ports");
            if owner == home.shard() {
                Verdict::Here
            } else {
                Verdict::Shard(owner)
            }
        }
        Some(_) => Verdict::Here,
        // ARP (EtherType 0x0806) reply (operation 2).
        None if frame.get(12..14) == Some(&[0x08, 0x06]) && frame.get(20..22) == Some(&[0, 2]) => Verdict::Everywhere,
        None => Verdict::Here,
    }
}

impl<D: Device> Device for SteeredDevice<D> {
    type Rx<'a>
        = SteeredRx<'a, D::Rx<'a>>
    where
        Self: 'a;
    type Tx<'a>
        = D::Tx<'a>
    where
        Self: 'a;

    fn queues(&mut self) -> (Self::Rx<'_>, Self::Tx<'_>) {
        let (rx, tx) = self.inner.queues();
        let rx = SteeredRx {
            rx,
            endpoint: &mut self.endpoint,
            home: &self.home,
            moves: &self.moves,
            current: &mut self.current,
        };
        (rx, tx)
    }

    fn caps(&self) -> DeviceCaps {
        self.inner.caps()
    }
}

/// Receive side of a [`SteeredDevice`].
pub struct SteeredRx<'a, R> {
    rx: R,
    endpoint: &'a mut Endpoint,
    home: &'a ShardHome,
    moves: &'a RefCell<Moves>,
    current: &'a mut Option<Handoff>,
}

impl<R: RxQueue> RxQueue for SteeredRx<'_, R> {
    fn recv(&mut self, now: Instant) -> Option<(&[u8], RxMeta)> {
        if let Some(done) = self.current.take() {
            self.endpoint.release(done);
        }
        let mut moves = self.moves.borrow_mut();
        if moves.blocked() {
            // A move waits to be imported: nothing behind it passes it.
            return None;
        }
        while let Some(m) = self.endpoint.receive() {
            let Message::Frame(h) = m else {
                moves.message(m);
                if moves.blocked() {
                    return None;
                }
                continue;
            };
            self.endpoint.note_handoff_in();
            // Its flow may have moved on since it was handed over.
            let to = FrameFlow::parse(&h.buf).and_then(|f| owner(self.home, &moves, &f));
            if let Some(to) = to.filter(|&to| to != self.home.shard()) {
                if h.hops < MAX_HOPS {
                    self.endpoint.forward(to, h);
                } else {
                    self.endpoint.drop_handoff(h);
                }
                continue;
            }
            let h = self.current.insert(h);
            return Some((&h.buf[..], h.meta));
        }
        for _ in 0..HANDOFFS_PER_RECV {
            let (ptr, len, meta) = {
                let (frame, meta) = self.rx.recv(now)?;
                self.endpoint.note_received();
                match verdict(self.home, &moves, frame) {
                    Verdict::Here => (frame.as_ptr(), frame.len(), meta),
                    Verdict::Shard(owner) => {
                        let sent = self.endpoint.send(owner, frame, meta);
                        self.endpoint.note_handoff(sent);
                        continue;
                    }
                    Verdict::Everywhere => {
                        self.endpoint.note_arp_copy();
                        let me = self.endpoint.me;
                        for k in (0..self.endpoint.shards()).filter(|&k| k != me) {
                            self.endpoint.send(k, frame, meta);
                        }
                        (frame.as_ptr(), frame.len(), meta)
                    }
                }
            };
            // SAFETY: the frame is the inner queue's, lent until its next
            // `recv`, which cannot happen before the caller lets go of what
            // this returns (it borrows `self` mutably). The pointer only
            // leaves the block above because the borrow checker cannot see
            // that the loop does not go round again after this point.
            return Some((unsafe { std::slice::from_raw_parts(ptr, len) }, meta));
        }
        None
    }
}

impl<D: Waitable> Waitable for SteeredDevice<D> {
    fn wait_fd(&self) -> Option<RawFd> {
        self.inner.wait_fd()
    }
    fn next_deadline(&self) -> Option<Instant> {
        self.inner.next_deadline()
    }
    fn device_stats(&self) -> Vec<(&'static str, u64)> {
        let mut v = self.inner.device_stats();
        v.extend(self.endpoint.counters().pairs());
        v
    }
    fn failure(&self) -> Option<&DeviceError> {
        self.inner.failure()
    }
    fn prepare_sleep(&mut self) -> bool {
        self.inner.prepare_sleep()
    }
    fn busy_poll(&self) -> Option<std::time::Duration> {
        self.inner.busy_poll()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::VecDeque;
    use std::net::Ipv4Addr;
    use ustack_core::phy::{TxFull, TxMeta, TxQueue};
    use ustack_core::rss::Toeplitz;

    /// A device queue fed by the test: frames come out in order.
    #[derive(Default)]
    struct Feed {
        frames: VecDeque<Vec<u8>>,
        current: Vec<u8>,
    }

    struct NoTx;
    impl TxQueue for NoTx {
        fn send<F: FnOnce(&mut [u8])>(&mut self, _: usize, _: TxMeta, _: F) -> Result<(), TxFull> {
            Err(TxFull)
        }
    }

    impl RxQueue for &mut Feed {
        fn recv(&mut self, _now: Instant) -> Option<(&[u8], RxMeta)> {
            self.current = self.frames.pop_front()?;
            Some((&self.current[..], RxMeta::default()))
        }
    }

    impl Device for Feed {
        type Rx<'a> = &'a mut Feed;
        type Tx<'a> = NoTx;
        fn queues(&mut self) -> (&mut Feed, NoTx) {
            (self, NoTx)
        }
        fn caps(&self) -> DeviceCaps {
            DeviceCaps::default()
        }
    }

    const LOCAL: Ipv4Addr = Ipv4Addr::new(10, 0, 0, 2);
    const REMOTE: Ipv4Addr = Ipv4Addr::new(10, 0, 0, 1);

    fn tcp_frame(sport: u16) -> Vec<u8> {
        let mut f = vec![0u8; 14 + 20 + 20];
        f[12..14].copy_from_slice(&[0x08, 0x00]);
        f[14] = 0x45;
        f[14 + 9] = 6;
        f[26..30].copy_from_slice(&REMOTE.octets());
        f[30..34].copy_from_slice(&LOCAL.octets());
        f[34..36].copy_from_slice(&sport.to_be_bytes());
        f[36..38].copy_from_slice(&80u16.to_be_bytes());
        f
    }

    fn arp(op: u8) -> Vec<u8> {
        let mut f = vec![0u8; 42];
        f[12..14].copy_from_slice(&[0x08, 0x06]);
        f[21] = op;
        f
    }

    fn steered(feed: Feed, e: Endpoint, home: ShardHome) -> SteeredDevice<Feed> {
        let moves = Moves::new(home.clone(), e.poster());
        SteeredDevice::new(feed, e, home, Rc::new(RefCell::new(moves)))
    }

    fn drain<D: Device>(dev: &mut D) -> Vec<Vec<u8>> {
        let (mut rx, _) = dev.queues();
        std::iter::from_fn(|| rx.recv(Instant::ZERO).map(|(f, _)| f.to_vec())).collect()
    }

    #[test]
    fn frames_for_another_shard_cross_once_and_are_counted() {
        let (shared, mut endpoints) = super::super::handoff::mesh(2);
        let t = Toeplitz::default();
        let e1 = endpoints.pop().unwrap();
        let e0 = endpoints.pop().unwrap();
        let mut s0 = steered(Feed::default(), e0, ShardHome::new(t.clone(), 0, 2));
        let mut s1 = steered(Feed::default(), e1, ShardHome::new(t.clone(), 1, 2));
        // Everything arrives on shard 0's queue, as from a device that
        // does not steer: 200 flows, an ARP reply and an ARP request.
        let home = ShardHome::new(t, 0, 2);
        let mut mine = Vec::new();
        let mut theirs = Vec::new();
        for port in 40000..40200u16 {
            let f = tcp_frame(port);
            if home.shard_of(LOCAL, 80, REMOTE, port) == 0 { &mut mine } else { &mut theirs }.push(f.clone());
            s0.inner.frames.push_back(f);
        }
        s0.inner.frames.push_back(arp(2));
        s0.inner.frames.push_back(arp(1));
        let got0 = drain(&mut s0);
        let mut want0 = mine.clone();
        want0.extend([arp(2), arp(1)]);
        assert_eq!(got0, want0);
        // Shard 1 gets its flows' frames, in order, and the ARP reply.
        let mut want1 = theirs.clone();
        want1.push(arp(2));
        assert_eq!(drain(&mut s1), want1);
        assert!(!mine.is_empty() && !theirs.is_empty());
        let c0 = shared.counters[0].pairs();
        let c1 = shared.counters[1].pairs();
        assert_eq!(c0[0], ("shard_handoffs", theirs.len() as u64));
        assert_eq!(c0[3], ("shard_arp_copies", 1));
        assert_eq!(c0[4], ("shard_rx_frames", 202));
        assert_eq!(c1[1], ("shard_handoffs_in", theirs.len() as u64 + 1));
        assert_eq!(c0[2].1 + c1[2].1, 0, "no drops");
        // Buffers come back: another round allocates no more than the first.
        for port in 40000..40200u16 {
            s0.inner.frames.push_back(tcp_frame(port));
        }
        drain(&mut s0);
        assert_eq!(drain(&mut s1).len(), theirs.len());
    }

    #[test]
    fn a_full_inbox_drops_and_counts() {
        let (shared, mut endpoints) = super::super::handoff::mesh(2);
        let t = Toeplitz::default();
        let _e1 = endpoints.pop().unwrap();
        let e0 = endpoints.pop().unwrap();
        let home = ShardHome::new(t.clone(), 0, 2);
        let mut s0 = steered(Feed::default(), e0, home.clone());
        let port = (40000..).find(|&p| home.shard_of(LOCAL, 80, REMOTE, p) == 1).unwrap();
        let n = super::super::handoff::INBOX_FRAMES + 10;
        for _ in 0..n {
            s0.inner.frames.push_back(tcp_frame(port));
        }
        // Shard 1 never reads: its inbox fills, the rest are dropped.
        while !s0.inner.frames.is_empty() {
            drain(&mut s0);
        }
        let c0 = shared.counters[0].pairs();
        assert_eq!(c0[0].1, super::super::handoff::INBOX_FRAMES as u64);
        assert_eq!(c0[2], ("shard_handoff_drops", 10));
    }
}
