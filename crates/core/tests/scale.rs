//! Small connections: 100,000 idle established connections between two
//! stacks on the in-memory link cost at most 1 KiB each (connection state,
//! table slot, hash entry, timer node and any buffers, both ends counted),
//! measured as live heap bytes by a counting global allocator. An active
//! connection takes buffer chunks from the pool and gives them all back
//! once its data is acknowledged and read; a bulk transfer in steady state
//! allocates nothing.

mod common;

use common::*;
use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;
use std::net::SocketAddrV4;
use ustack_core::{Duration, Instant, Stack, StackConfig, TcpHandle};
use ustack_device::{LinkConfig, MemoryLink};

/// Per thread, so tests running side by side do not see each other.
struct Counting;

thread_local! {
    static LIVE: Cell<i64> = const { Cell::new(0) };
    static ALLOCS: Cell<u64> = const { Cell::new(0) };
}

fn note(delta: i64, alloc: bool) {
    // `try_with`: the allocator also runs while thread locals are torn down.
    let _ = LIVE.try_with(|l| l.set(l.get() + delta));
    if alloc {
        let _ = ALLOCS.try_with(|a| a.set(a.get() + 1));
    }
}

unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        note(layout.size() as i64, true);
        unsafe { System.alloc(layout) }
    }
    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        note(layout.size() as i64, true);
        unsafe { System.alloc_zeroed(layout) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        note(-(layout.size() as i64), false);
        unsafe { System.dealloc(ptr, layout) }
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        note(new_size as i64 - layout.size() as i64, true);
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

fn live_bytes() -> i64 {
    LIVE.with(Cell::get)
}

fn allocations() -> u64 {
    ALLOCS.with(Cell::get)
}

const CONNECTIONS: usize = 100_000;
const BATCH: usize = 2048;
/// One destination port offers 16,384 ephemeral ports.
const PORTS: u16 = 8;

fn scale_config(mut c: StackConfig) -> StackConfig {
    c.tcp.buffer_pool_limit = 16 << 20;
    c.tcp_max_connections = 2 * CONNECTIONS;
    c
}

/// Turns both stacks until the link is quiet.
fn quiesce(p: &mut Pair) {
    for _ in 0..10_000 {
        p.turn();
        if p.pa.in_flight() == 0 && p.pb.in_flight() == 0 {
            p.turn();
            return;
        }
        p.now += Duration::from_micros(10);
    }
    panic!("link did not quiesce");
}

/// Opens `n` more connections from A to B and accepts them.
fn open(p: &mut Pair, n: usize, clients: &mut Vec<TcpHandle>, servers: &mut Vec<TcpHandle>) {
    let target = servers.len() + n;
    for _ in 0..n {
        let port = 80 + (clients.len() % usize::from(PORTS)) as u16;
        clients.push(p.a.tcp_connect(p.now, SocketAddrV4::new(B_IP, port)).unwrap());
    }
    // The first SYNs may wait for address resolution: retransmissions
    // (virtual seconds later) bring the rest.
    for _ in 0..5 {
        quiesce(p);
        for port in 80..80 + PORTS {
            while let Some(h) = p.b.tcp_accept(port) {
                servers.push(h);
            }
        }
        if servers.len() == target {
            break;
        }
        p.now += Duration::from_secs(1);
    }
    assert_eq!(servers.len(), target, "every connection was accepted");
}

#[test]
fn idle_connections_cost_at_most_1_kib_and_buffers_go_back_to_the_pool() {
    let (pa, pb) = MemoryLink::pair(LinkConfig { capacity: 4 * BATCH, ..LinkConfig::default() }, 7);
    let mut p = Pair {
        a: Stack::new(scale_config(config(A_MAC, A_IP)), 1),
        pa,
        b: Stack::new(scale_config(config(B_MAC, B_IP)), 2),
        pb,
        now: Instant::ZERO,
    };
    for port in 80..80 + PORTS {
        p.b.tcp_listen(port, 2 * BATCH).unwrap();
    }
    let mut clients = Vec::with_capacity(CONNECTIONS);
    let mut servers = Vec::with_capacity(CONNECTIONS);
    // Warm-up: one batch fills the link's frame pools and the stacks'
    // per-batch queues, which do not grow with the number of connections.
    open(&mut p, BATCH, &mut clients, &mut servers);
    let before = live_bytes();
    while servers.len() < CONNECTIONS {
        let n = BATCH.min(CONNECTIONS - servers.len());
        open(&mut p, n, &mut clients, &mut servers);
    }
    assert_eq!(p.a.tcp_connections(), CONNECTIONS);
    assert_eq!(p.b.tcp_connections(), CONNECTIONS);
    let measured = (CONNECTIONS - BATCH) * 2;
    let per_connection = (live_bytes() - before) as f64 / measured as f64;
    eprintln!("{per_connection:.0} bytes per idle established connection ({measured} connection objects)");
    assert!(per_connection <= 1024.0, "{per_connection:.0} bytes per idle connection");
    assert_eq!(p.a.tcp_buffer_pool().in_use(), 0, "idle connections hold no buffer chunks");
    assert_eq!(p.b.tcp_buffer_pool().in_use(), 0);

    // One request/response among 100,000 idle connections.
    let c = clients[CONNECTIONS / 2];
    let ct = p.a.tcp_connection(c).unwrap().four_tuple();
    let s = *servers
        .iter()
        .find(|&&s| {
            let st = p.b.tcp_connection(s).unwrap().four_tuple();
            (st.remote_port, st.local_port) == (ct.local_port, ct.remote_port)
        })
        .unwrap();
    let mut buf = [0u8; 4096];
    p.a.tcp_send(c, &[b'q'; 3000]).unwrap();
    quiesce(&mut p);
    assert!(p.b.tcp_buffer_pool().in_use() > 0, "the request sits in B's receive buffer");
    assert_eq!(p.b.tcp_recv(s, &mut buf), Ok(3000));
    p.b.tcp_send(s, &[b'r'; 2000]).unwrap();
    quiesce(&mut p);
    assert_eq!(p.a.tcp_recv(c, &mut buf), Ok(2000));
    // Let the window update and the delayed ACKs go out.
    p.now += Duration::from_millis(200);
    quiesce(&mut p);
    assert_eq!(p.a.tcp_buffer_pool().in_use(), 0, "A's chunks went back to the pool");
    assert_eq!(p.b.tcp_buffer_pool().in_use(), 0, "B's chunks went back to the pool");
    let pa = p.a.tcp_buffer_pool().stats();
    assert!(pa.taken > 0 && pa.taken == pa.returned, "{pa:?}");
}

#[test]
fn bulk_transfer_allocates_nothing_in_steady_state() {
    bulk_transfer_without_allocating(LinkConfig::default());
}

/// With the link's TSO on, the sender hands out 64 KiB super-segments: the
/// send path still allocates nothing, per segment or otherwise.
#[test]
fn bulk_transfer_with_tso_allocates_nothing_in_steady_state() {
    let p = bulk_transfer_without_allocating(LinkConfig { checksum_offload: true, tso: true, ..LinkConfig::default() });
    assert!(p.pa.stats().super_segments > 100, "{:?}", p.pa.stats());
}

fn bulk_transfer_without_allocating(link: LinkConfig) -> Pair {
    let mut p = Pair::with_link(link);
    p.b.tcp_listen(80, 16).unwrap();
    let c = p.a.tcp_connect(p.now, SocketAddrV4::new(B_IP, 80)).unwrap();
    p.settle(Duration::from_millis(1));
    let s = p.b.tcp_accept(80).expect("accepted");
    let chunk = vec![0x5au8; 64 * 1024];
    let mut buf = vec![0u8; 64 * 1024];
    let mut moved = 0u64;
    let mut transfer = |p: &mut Pair, bytes: u64| {
        let end = moved + bytes;
        let mut sent = moved;
        while moved < end {
            if sent < end {
                if let Ok(n) = p.a.tcp_send(c, &chunk[..chunk.len().min((end - sent) as usize)]) {
                    sent += n as u64;
                }
            }
            p.turn();
            while let Ok(n) = p.b.tcp_recv(s, &mut buf) {
                if n == 0 {
                    break;
                }
                moved += n as u64;
            }
            p.now += Duration::from_micros(50);
        }
    };
    transfer(&mut p, 8 << 20); // warm-up: windows open, pools fill
    let before = allocations();
    transfer(&mut p, 32 << 20);
    let during = allocations() - before;
    assert_eq!(during, 0, "allocations during a 32 MiB transfer in steady state");
    p.now += Duration::from_millis(500);
    p.settle(Duration::from_millis(1));
    assert_eq!(p.a.tcp_buffer_pool().in_use(), 0);
    assert_eq!(p.b.tcp_buffer_pool().in_use(), 0);
    assert_eq!(p.a.tcp_connection(c).unwrap().stats().retransmits, 0);
    p
}

#[test]
fn request_response_allocates_nothing_in_steady_state() {
    let mut p = Pair::new();
    p.b.tcp_listen(80, 16).unwrap();
    let c = p.a.tcp_connect(p.now, SocketAddrV4::new(B_IP, 80)).unwrap();
    p.settle(Duration::from_millis(1));
    let s = p.b.tcp_accept(80).expect("accepted");
    p.a.tcp_set_nodelay(c, true);
    p.b.tcp_set_nodelay(s, true);
    let mut buf = [0u8; 256];
    // 64-byte request, 64-byte response; each side's flight drains between
    // rounds, so whatever a flight needs (buffers, RACK's transmit log) is
    // taken and given back every round.
    let mut rounds = |p: &mut Pair, n: usize| {
        for _ in 0..n {
            assert_eq!(p.a.tcp_send(c, &[b'q'; 64]), Ok(64));
            p.settle(Duration::from_micros(1));
            assert_eq!(p.b.tcp_recv(s, &mut buf), Ok(64));
            assert_eq!(p.b.tcp_send(s, &[b'r'; 64]), Ok(64));
            p.settle(Duration::from_micros(1));
            assert_eq!(p.a.tcp_recv(c, &mut buf), Ok(64));
            p.now += Duration::from_micros(20);
        }
    };
    rounds(&mut p, 100); // warm-up
    let before = allocations();
    rounds(&mut p, 1000);
    let during = allocations() - before;
    assert_eq!(during, 0, "allocations during 1,000 request/responses in steady state");
}
