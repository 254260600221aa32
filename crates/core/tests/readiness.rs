//! The readiness API's cost is per event, not per socket: with 20,000
//! registered connections, a poll visits exactly the sockets that had news —
//! shown by the stack's `poll_visited` / `poll_events` counters, not by timing.

mod common;

use common::*;
use std::net::SocketAddrV4;
use ustack_core::{Event, Interest, Readiness, Stack, StackConfig, TcpHandle};
use ustack_device::{LinkConfig, MemoryLink};

const CONNECTIONS: usize = 20_000;

fn small(mut c: StackConfig) -> StackConfig {
    // Idle connections need little buffer; the test is about the table.
    c.tcp.recv_buffer_size = 2048;
    c.tcp.send_buffer_size = 2048;
    c
}

#[test]
fn poll_visits_only_sockets_with_news() {
    let (pa, pb) = MemoryLink::pair(LinkConfig { capacity: 8192, ..LinkConfig::default() }, 5);
    let mut p = Pair { a: Stack::new(small(config(A_MAC, A_IP)), 1), pa, b: Stack::new(small(config(B_MAC, B_IP)), 2), pb, now: ustack_core::Instant::ZERO };
    // Two listening ports: one destination port offers 16,384 ephemeral ports.
    for port in [80, 81] {
        p.b.tcp_listen(port, 4096).unwrap();
        p.b.tcp_register_listener(port, u64::from(port) << 32);
    }
    let mut clients: Vec<TcpHandle> = Vec::with_capacity(CONNECTIONS);
    let mut servers: Vec<TcpHandle> = Vec::with_capacity(CONNECTIONS);
    let mut events: Vec<Event> = Vec::new();
    while servers.len() < CONNECTIONS {
        for _ in 0..256.min(CONNECTIONS - clients.len()) {
            let port = if clients.len().is_multiple_of(2) { 80 } else { 81 };
            clients.push(p.a.tcp_connect(p.now, SocketAddrV4::new(B_IP, port)).unwrap());
        }
        for _ in 0..8 {
            p.turn();
        }
        events.clear();
        p.b.poll_events(&mut events, usize::MAX);
        for e in &events {
            let port = (e.token >> 32) as u16;
            while let Some(h) = p.b.tcp_accept(port) {
                p.b.tcp_register(h, servers.len() as u64, Interest::READABLE);
                servers.push(h);
            }
        }
        p.now += ustack_core::Duration::from_micros(100);
    }
    assert_eq!(p.b.tcp_connections(), CONNECTIONS);
    // Settle: drain whatever the registrations reported.
    for _ in 0..10 {
        p.turn();
    }
    events.clear();
    p.b.poll_events(&mut events, usize::MAX);
    assert!(events.is_empty(), "idle connections have no news: {:?}", &events[..events.len().min(5)]);

    // A few connections out of 20,000 receive a request.
    let active: Vec<usize> = (0..100).map(|i| (i * 7919) % CONNECTIONS).collect();
    for &i in &active {
        p.a.tcp_send(clients[i], b"ping").unwrap();
    }
    for _ in 0..20 {
        p.turn();
    }
    let before = p.b.counters().clone();
    events.clear();
    p.b.poll_events(&mut events, usize::MAX);
    let visited = p.b.counters().poll_visited - before.poll_visited;
    let returned = p.b.counters().poll_events - before.poll_events;
    assert_eq!(returned, active.len() as u64);
    assert_eq!(visited, returned, "a poll visits exactly the sockets it reports");
    // Each event's token names a server connection holding the request.
    let mut buf = [0u8; 16];
    for e in &events {
        assert!(e.readiness.contains(Readiness::READABLE));
        assert_eq!(p.b.tcp_recv(servers[e.token as usize], &mut buf), Ok(4));
        assert_eq!(&buf[..4], b"ping");
    }

    // Edge-triggered: nothing new, nothing reported, nothing visited.
    let before = p.b.counters().clone();
    events.clear();
    p.b.poll_events(&mut events, usize::MAX);
    assert!(events.is_empty());
    assert_eq!(p.b.counters().poll_visited, before.poll_visited);

    // A peer's FIN is always reported.
    p.a.tcp_shutdown(clients[active[0]]).unwrap();
    for _ in 0..20 {
        p.turn();
    }
    p.b.poll_events(&mut events, usize::MAX);
    assert_eq!(events.len(), 1);
    assert!(events[0].readiness.is_read_closed());
}
