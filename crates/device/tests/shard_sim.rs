//! The simulation kit: a sharded stack on a multi-queue in-memory link,
//! steered by the symmetric Toeplitz hash, against a peer stack. Each
//! connection is handled wholly on the shard the hash names, passive and
//! active opens alike.

use std::net::SocketAddrV4;
use ustack_core::rss::{queue_of, Toeplitz};
use ustack_core::{Stack, TcpHandle};
use ustack_device::sim::{ShardSim, PEER_IP, SHARD_IP};
use ustack_device::LinkConfig;

const PORT: u16 = 7;
const TURNS: usize = 2_000_000;

fn message(i: usize) -> Vec<u8> {
    format!("message {i} from connection {i}\n").into_bytes()
}

/// Echo on every accepted connection of `stack`; accepted handles kept in `conns`.
fn serve_echo(stack: &mut Stack, conns: &mut Vec<TcpHandle>, accepted: &mut usize) {
    while let Some(h) = stack.tcp_accept(PORT) {
        conns.push(h);
        *accepted += 1;
    }
    let mut buf = [0u8; 2048];
    conns.retain(|&h| match stack.tcp_recv(h, &mut buf) {
        Ok(0) => {
            stack.tcp_close(h);
            false
        }
        Ok(n) => {
            assert_eq!(stack.tcp_send(h, &buf[..n]), Ok(n));
            true
        }
        Err(_) => true,
    });
}

struct Client {
    h: TcpHandle,
    i: usize,
    sent: bool,
    got: Vec<u8>,
}

/// Drive `clients` on `stack` (towards its peer's echo server); returns
/// how many finished with their own message echoed back.
fn drive_clients(stack: &mut Stack, clients: &mut Vec<Client>) -> usize {
    let mut done = 0;
    let mut buf = [0u8; 2048];
    clients.retain_mut(|c| {
        if !c.sent && stack.tcp_send(c.h, &message(c.i)).is_ok_and(|n| n > 0) {
            c.sent = true;
        }
        while let Ok(n) = stack.tcp_recv(c.h, &mut buf) {
            if n == 0 {
                break;
            }
            c.got.extend_from_slice(&buf[..n]);
        }
        if c.got.len() == message(c.i).len() {
            assert_eq!(c.got, message(c.i), "connection {} got another's bytes", c.i);
            stack.tcp_close(c.h);
            done += 1;
            false
        } else {
            true
        }
    });
    done
}

fn passive_opens(shards: usize, total: usize) {
    passive_opens_on(shards, total, LinkConfig { capacity: 4096, ..LinkConfig::default() });
}

fn passive_opens_on(shards: usize, total: usize, link: LinkConfig) {
    let mut sim = ShardSim::new(shards, link, Toeplitz::default(), |c| c.tcp.time_wait = ustack_core::Duration::from_millis(50));
    for s in &mut sim.shards {
        s.tcp_listen(PORT, 1024).unwrap();
    }
    let mut served: Vec<Vec<TcpHandle>> = vec![Vec::new(); shards];
    let mut accepted = vec![0usize; shards];
    let mut expected = vec![0usize; shards];
    let mut clients: Vec<Client> = Vec::new();
    let (mut opened, mut finished) = (0, 0);
    let toeplitz = Toeplitz::default();
    let ok = sim.run_until(TURNS, |sim| {
        // At most 64 connections at once.
        while opened < total && clients.len() < 64 {
            let h = sim.peer.tcp_connect(sim.now, SocketAddrV4::new(SHARD_IP, PORT)).unwrap();
            let t = sim.peer.tcp_connection(h).unwrap().four_tuple();
            expected[queue_of(toeplitz.hash_v4(PEER_IP, SHARD_IP, t.local_port, PORT), shards)] += 1;
            clients.push(Client { h, i: opened, sent: false, got: Vec::new() });
            opened += 1;
        }
        finished += drive_clients(&mut sim.peer, &mut clients);
        for k in 0..shards {
            serve_echo(&mut sim.shards[k], &mut served[k], &mut accepted[k]);
        }
        finished == total
    });
    assert!(ok, "{finished} of {total} connections echoed");
    // Each shard accepted exactly the connections the hash gave it, and no
    // shard saw a segment for a connection it did not have.
    assert_eq!(accepted, expected);
    assert!(accepted.iter().all(|&n| n > total / shards / 2), "{accepted:?}");
    for (k, s) in sim.shards.iter().enumerate() {
        let c = s.counters();
        if link.loss == 0.0 && link.duplicate == 0.0 && link.reorder == 0.0 {
            // (With faults a late duplicate may meet a closed connection.)
            assert_eq!((c.drop_tcp_no_socket, c.tcp_rst_sent), (0, 0), "shard {k}");
        }
        assert_eq!(c.tcp_established, accepted[k] as u64, "shard {k}");
    }
    let steering = sim.peer_port.steering();
    assert!(steering.broadcast >= 1, "the peer's ARP request reached the shards");
    assert!(steering.steered.iter().all(|&n| n > 0), "{steering:?}");
}

#[test]
fn passive_opens_are_handled_wholly_on_their_shard() {
    passive_opens(2, 600);
    passive_opens(4, 600);
}

#[test]
fn shards_survive_a_faulty_link() {
    // Loss, duplication, reordering and delay on every queue and back:
    // retransmissions find the same shard, every byte still arrives.
    let link = LinkConfig {
        capacity: 4096,
        loss: 0.02,
        duplicate: 0.01,
        reorder: 0.02,
        delay: ustack_core::Duration::from_micros(200),
        jitter: ustack_core::Duration::from_micros(100),
        ..LinkConfig::default()
    };
    passive_opens_on(2, 200, link);
}

#[test]
fn active_opens_from_every_shard_come_home() {
    let shards = 2;
    let mut sim = ShardSim::new(shards, LinkConfig::default(), Toeplitz::default(), |_| {});
    sim.peer.tcp_listen(PORT, 1024).unwrap();
    let mut clients: Vec<Vec<Client>> = (0..shards).map(|_| Vec::new()).collect();
    for (k, shard) in sim.shards.iter_mut().enumerate() {
        for i in 0..100 {
            let h = shard.tcp_connect(sim.now, SocketAddrV4::new(PEER_IP, PORT)).unwrap();
            let t = shard.tcp_connection(h).unwrap().four_tuple();
            // The port was chosen so that the peer's replies come to this shard.
            let home = shard.shard().unwrap();
            assert_eq!(home.shard_of(SHARD_IP, t.local_port, PEER_IP, PORT), k);
            clients[k].push(Client { h, i: k * 1000 + i, sent: false, got: Vec::new() });
        }
    }
    let (mut served, mut accepted, mut finished) = (Vec::new(), 0, 0);
    let ok = sim.run_until(TURNS, |sim| {
        serve_echo(&mut sim.peer, &mut served, &mut accepted);
        for (k, shard) in sim.shards.iter_mut().enumerate() {
            finished += drive_clients(shard, &mut clients[k]);
        }
        finished == 200
    });
    assert!(ok, "{finished} of 200 echoed");
    for s in &sim.shards {
        let c = s.counters();
        assert_eq!((c.drop_tcp_no_socket, c.tcp_rst_sent, c.tcp_established), (0, 0, 100));
        // Each shard resolved the peer's address by itself: the ARP reply
        // was copied to every queue.
        assert!(c.arp_rx >= 1);
    }
}

#[test]
fn one_shard_is_a_plain_pair() {
    let mut sim = ShardSim::new(1, LinkConfig::default(), Toeplitz::default(), |_| {});
    sim.shards[0].tcp_listen(PORT, 16).unwrap();
    let h = sim.peer.tcp_connect(sim.now, SocketAddrV4::new(SHARD_IP, PORT)).unwrap();
    let mut clients = vec![Client { h, i: 1, sent: false, got: Vec::new() }];
    let (mut served, mut accepted, mut done) = (Vec::new(), 0, 0);
    assert!(sim.run_until(100_000, |sim| {
        serve_echo(&mut sim.shards[0], &mut served, &mut accepted);
        done += drive_clients(&mut sim.peer, &mut clients);
        done == 1
    }));
    assert_eq!(sim.peer_port.steering().steered, [sim.peer_port.stats_to(0).delivered - sim.peer_port.steering().broadcast]);
}

/// Byte `offset` of the stream `seed` names (SplitMix64 over 8-byte words):
/// every connection and direction has its own, so a byte from the wrong
/// place or the wrong connection is caught.
fn stream_byte(seed: u64, offset: u64) -> u8 {
    let mut z = seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) ^ (offset / 8).wrapping_add(0x6a09_e667_f3bc_c908);
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^= z >> 31;
    (z >> ((offset % 8) * 8)) as u8
}

/// One side of a connection that sends its stream and checks the other's.
struct Flow {
    h: TcpHandle,
    /// The seeds of what this side sends and what it must receive.
    tx_seed: u64,
    rx_seed: u64,
    sent: u64,
    got: u64,
}

impl Flow {
    /// Send and receive what the stack takes and holds now; panics on a
    /// byte out of place. The connection stays open: the tests close it
    /// once every transfer is whole, so that a RST before then can only be
    /// a frame that met no connection. (After a close, a duplicated final
    /// ACK that arrives once LAST-ACK is over meets no connection and is
    /// answered with a RST, rightly, as Linux does.)
    fn pump(&mut self, stack: &mut Stack, len: u64, buf: &mut [u8]) {
        while self.sent < len {
            let n = buf.len().min((len - self.sent) as usize);
            for (i, b) in buf[..n].iter_mut().enumerate() {
                *b = stream_byte(self.tx_seed, self.sent + i as u64);
            }
            match stack.tcp_send(self.h, &buf[..n]) {
                Ok(0) | Err(_) => break,
                Ok(k) => self.sent += k as u64,
            }
        }
        while let Ok(n) = stack.tcp_recv(self.h, buf) {
            if n == 0 {
                break;
            }
            for (i, &b) in buf[..n].iter().enumerate() {
                let at = self.got + i as u64;
                assert_eq!(b, stream_byte(self.rx_seed, at), "stream {} byte {at}", self.rx_seed);
            }
            self.got += n as u64;
        }
    }

    fn done(&self, len: u64) -> bool {
        self.sent == len && self.got == len
    }
}

/// Connections moved between shards in the middle of a transfer, both ways
/// at once, over a link that loses, duplicates and reorders: every byte
/// arrives in place on both sides, nothing is reset, and frames the link
/// still steers to the old shard are handed to the new one.
#[test]
fn connections_moved_between_shards_mid_transfer_keep_every_byte() {
    const CONNS: usize = 16;
    const LEN: u64 = 2 * 1024 * 1024;
    const DATA_PORT: u16 = 9;
    let link = LinkConfig {
        capacity: 4096,
        loss: 0.005,
        duplicate: 0.005,
        reorder: 0.01,
        delay: ustack_core::Duration::from_micros(200),
        ..LinkConfig::default()
    };
    let mut sim =
        ShardSim::new(2, link, Toeplitz::default(), |c| c.tcp.time_wait = ustack_core::Duration::from_millis(50));
    for s in &mut sim.shards {
        s.tcp_listen(DATA_PORT, 64).unwrap();
    }
    let mut peers: Vec<Flow> = (0..CONNS)
        .map(|_| {
            let h = sim.peer.tcp_connect(sim.now, SocketAddrV4::new(SHARD_IP, DATA_PORT)).unwrap();
            let port = u64::from(sim.peer.tcp_connection(h).unwrap().four_tuple().local_port);
            Flow { h, tx_seed: port << 1, rx_seed: port << 1 | 1, sent: 0, got: 0 }
        })
        .collect();
    // The shards' ends, with the shard each is on now.
    let mut ends: Vec<(usize, Flow)> = Vec::new();
    let mut moves = vec![0u32; CONNS];
    let mut buf = vec![0u8; 16 * 1024];
    let ok = sim.run_until(TURNS, |sim| {
        for k in 0..2 {
            while let Some(h) = sim.shards[k].tcp_accept(DATA_PORT) {
                let port = u64::from(sim.shards[k].tcp_connection(h).unwrap().four_tuple().remote_port);
                ends.push((k, Flow { h, tx_seed: port << 1 | 1, rx_seed: port << 1, sent: 0, got: 0 }));
            }
        }
        for f in &mut peers {
            f.pump(&mut sim.peer, LEN, &mut buf);
        }
        for (k, f) in &mut ends {
            f.pump(&mut sim.shards[*k], LEN, &mut buf);
        }
        // Each connection moves to the other shard each time its transfer
        // passes another eighth (of what it received; at most once a turn),
        // data in flight both ways.
        for (i, (k, f)) in ends.iter_mut().enumerate() {
            if f.got < LEN && f.got >= (u64::from(moves[i]) + 1) * LEN / 8 {
                let to = 1 - *k;
                match sim.move_connection(*k, f.h, to) {
                    Ok(h) => {
                        (f.h, *k) = (h, to);
                        moves[i] += 1;
                    }
                    Err(e) => panic!("moving connection {i}: {e:?}"),
                }
            }
        }
        ends.len() == CONNS && peers.iter().all(|f| f.done(LEN)) && ends.iter().all(|(_, f)| f.done(LEN))
    });
    let progress: Vec<(u64, u64)> = peers.iter().map(|f| (f.sent, f.got)).collect();
    assert!(ok, "transfers unfinished (peer sent, got): {progress:?}");
    eprintln!("moves per connection {moves:?}; frames handed over {}", sim.handed_over);
    assert!(moves.iter().all(|&m| m >= 3), "every connection moved three times or more mid-transfer: {moves:?}");
    assert!(sim.handed_over > 0, "frames steered to the old shard were handed to the new one");
    for (k, s) in sim.shards.iter().enumerate() {
        assert_eq!(s.counters().tcp_rst_sent, 0, "shard {k}: a frame met no connection");
    }
    assert_eq!(sim.peer.counters().tcp_rst_sent, 0);
    // Closed, the connections give every chunk back to the pool of the
    // shard they ended on; none is left in the pool of one they left.
    for f in &peers {
        sim.peer.tcp_close(f.h);
    }
    for (k, f) in &ends {
        sim.shards[*k].tcp_close(f.h);
    }
    let drained = sim.run_until(TURNS, |sim| sim.shards.iter().all(|s| s.tcp_buffer_pool().in_use() == 0));
    let in_use: Vec<usize> = sim.shards.iter().map(|s| s.tcp_buffer_pool().in_use()).collect();
    assert!(drained, "chunks still in use: {in_use:?}");
}

/// A move the receiving shard cannot take (its table is full) leaves the
/// connection where it was, under a new handle, its bytes intact; a
/// handle that moved away names nothing; a connection not yet accepted
/// does not move.
#[test]
fn a_move_that_cannot_happen_leaves_the_connection_whole() {
    const LEN: u64 = 64 * 1024;
    // The shards (configured after the peer) hold one connection each.
    let configured = std::cell::Cell::new(0);
    let mut sim = ShardSim::new(2, LinkConfig::default(), Toeplitz::default(), |c| {
        if configured.replace(configured.get() + 1) > 0 {
            c.tcp_max_connections = 1;
        }
    });
    for s in &mut sim.shards {
        s.tcp_listen(PORT, 4).unwrap();
    }
    // One connection to each shard (ports picked by their hash).
    let home = sim.shards[0].shard().unwrap().clone();
    let mut peers = Vec::new();
    while peers.len() < 2 {
        let h = sim.peer.tcp_connect(sim.now, SocketAddrV4::new(SHARD_IP, PORT)).unwrap();
        let port = sim.peer.tcp_connection(h).unwrap().four_tuple().local_port;
        if home.shard_of(SHARD_IP, PORT, PEER_IP, port) == peers.len() {
            let p = u64::from(port);
            peers.push(Flow { h, tx_seed: p << 1, rx_seed: p << 1 | 1, sent: 0, got: 0 });
        } else {
            sim.peer.tcp_abort(h);
        }
    }
    let mut ends: Vec<Option<Flow>> = vec![None, None];
    let mut buf = vec![0u8; 4096];
    let mut tried = false;
    let ok = sim.run_until(TURNS, |sim| {
        for k in 0..2 {
            if let Some(h) = sim.shards[k].tcp_accept(PORT) {
                let p = u64::from(sim.shards[k].tcp_connection(h).unwrap().four_tuple().remote_port);
                ends[k] = Some(Flow { h, tx_seed: p << 1 | 1, rx_seed: p << 1, sent: 0, got: 0 });
            }
        }
        for f in &mut peers {
            f.pump(&mut sim.peer, LEN, &mut buf);
        }
        for (k, f) in ends.iter_mut().enumerate() {
            if let Some(f) = f {
                f.pump(&mut sim.shards[k], LEN, &mut buf);
            }
        }
        let both = ends.iter().all(Option::is_some);
        if let (false, true, Some(f0)) = (tried, both, &mut ends[0]) {
            if f0.got > LEN / 4 {
                tried = true;
                let old = f0.h;
                let (e, back) = sim.move_connection(0, old, 1).expect_err("shard 1's table is full");
                assert_eq!(e, ustack_core::MoveError::TableFull);
                f0.h = back.expect("the connection went back to shard 0");
                assert_eq!(sim.shards[0].tcp_export(old).unwrap_err(), ustack_core::MoveError::NoSuchConnection);
            }
        }
        tried && peers.iter().all(|f| f.done(LEN)) && ends.iter().flatten().all(|f| f.done(LEN))
    });
    assert!(ok, "transfers unfinished");
    for s in &sim.shards {
        assert_eq!(s.counters().tcp_rst_sent, 0);
    }
}
