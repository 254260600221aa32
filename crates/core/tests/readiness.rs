//! The readiness API's cost is per event, not per socket: with 20,000
//! registered connections, a poll visits exactly the sockets that had news —
//! shown by the stack's `poll_visited` / `poll_events` counters, not by timing.

mod common;

use common::*;
use std::net::SocketAddrV4;
use ustack_core::{Event, Interest, Readiness, Socket, Stack, StackConfig, TcpHandle};
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
        p.b.register(Socket::Listener(port), u64::from(port) << 32, Interest::READABLE).unwrap();
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
                p.b.register(h, servers.len() as u64, Interest::READABLE).unwrap();
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

const UDP_SOCKETS: usize = 10_000;

/// UDP sockets use the same contract: 10,000 registered sockets, and an idle
/// poll visits none of them; a datagram makes exactly its socket ready.
#[test]
fn udp_idle_poll_visits_no_socket() {
    let small_udp = |mut c: StackConfig| {
        // Idle sockets need little queue; the test is about the lists.
        c.udp_rx_packets = 4;
        c.udp_rx_bytes = 4096;
        c.udp_tx_packets = 2;
        c.udp_tx_bytes = 4096;
        c
    };
    let (pa, pb) = MemoryLink::pair(LinkConfig::default(), 6);
    let mut p = Pair {
        a: Stack::new(small_udp(config(A_MAC, A_IP)), 1),
        pa,
        b: Stack::new(small_udp(config(B_MAC, B_IP)), 2),
        pb,
        now: ustack_core::Instant::ZERO,
    };
    let mut sockets = Vec::with_capacity(UDP_SOCKETS);
    for i in 0..UDP_SOCKETS {
        let h = p.b.udp_bind(10_000 + i as u16).unwrap();
        p.b.register(h, i as u64, Interest::READABLE | Interest::WRITABLE).unwrap();
        sockets.push(h);
    }
    // Registration reports each (writable) socket once, as EPOLL_CTL_ADD does.
    let mut events: Vec<Event> = Vec::new();
    p.b.poll_events(&mut events, usize::MAX);
    assert_eq!(events.len(), UDP_SOCKETS);
    assert!(events.iter().all(|e| e.readiness == Readiness::WRITABLE));

    // An idle loop: turns, polls, nothing visited.
    let before = p.b.counters().clone();
    for _ in 0..10 {
        p.turn();
        events.clear();
        p.b.poll_events(&mut events, usize::MAX);
        assert!(events.is_empty());
    }
    assert_eq!(p.b.counters().poll_visited, before.poll_visited, "an idle poll visits no socket");
    assert!(!p.b.has_events());

    // Datagrams to a few ports make exactly those sockets readable.
    let client = p.a.udp_bind(0).unwrap();
    let active: Vec<usize> = (0..50).map(|i| (i * 7919) % UDP_SOCKETS).collect();
    for &i in &active {
        p.a.udp_send_to(client, SocketAddrV4::new(B_IP, 10_000 + i as u16), &(i as u32).to_be_bytes()).unwrap();
        p.settle(ustack_core::Duration::from_millis(1));
    }
    let before = p.b.counters().clone();
    events.clear();
    p.b.poll_events(&mut events, usize::MAX);
    let visited = p.b.counters().poll_visited - before.poll_visited;
    assert_eq!(events.len(), active.len());
    assert_eq!(visited, active.len() as u64, "a poll visits exactly the sockets it reports");
    let mut buf = [0u8; 8];
    for e in &events {
        assert!(e.readiness.is_readable());
        assert_eq!(e.socket, Socket::Udp(sockets[e.token as usize]));
        let (n, _) = p.b.udp_recv_from(sockets[e.token as usize], &mut buf).unwrap();
        assert_eq!(&buf[..n], &(e.token as u32).to_be_bytes());
    }

    // Edge-triggered: until a receive finds the queue empty, a second
    // datagram is still news (new data); after it, too.
    let s = active[0];
    assert!(p.b.udp_recv_from(sockets[s], &mut buf).is_none());
    p.a.udp_send_to(client, SocketAddrV4::new(B_IP, 10_000 + s as u16), b"again").unwrap();
    p.settle(ustack_core::Duration::from_millis(1));
    events.clear();
    p.b.poll_events(&mut events, usize::MAX);
    assert_eq!(events.iter().map(|e| e.token).collect::<Vec<_>>(), vec![s as u64]);

    // WRITABLE comes back once a full send queue drains.
    let h = sockets[s];
    let mut refused = false;
    for _ in 0..8 {
        if p.b.udp_send_to(h, SocketAddrV4::new(A_IP, 9), b"x").is_err() {
            refused = true;
            break;
        }
    }
    assert!(refused, "the two-datagram send queue fills");
    events.clear();
    p.b.poll_events(&mut events, usize::MAX);
    assert!(events.is_empty(), "a full queue is no news");
    p.settle(ustack_core::Duration::from_millis(1));
    events.clear();
    p.b.poll_events(&mut events, usize::MAX);
    assert_eq!(events.len(), 1);
    assert!(events[0].readiness.is_writable());

    // Deregistered or closed sockets say nothing.
    p.b.deregister(sockets[active[1]]);
    p.b.udp_close(sockets[active[2]]);
    for &i in &active[1..3] {
        let _ = p.a.udp_send_to(client, SocketAddrV4::new(B_IP, 10_000 + i as u16), b"late");
    }
    p.settle(ustack_core::Duration::from_millis(1));
    events.clear();
    p.b.poll_events(&mut events, usize::MAX);
    assert!(events.is_empty(), "{events:?}");
}

/// Ping sockets too: a reply makes the socket readable.
#[test]
fn ping_reply_is_an_event() {
    let mut p = Pair::new();
    let h = p.a.ping_open(0x4242).unwrap();
    p.a.register(h, 7, Interest::READABLE).unwrap();
    let mut events: Vec<Event> = Vec::new();
    p.a.poll_events(&mut events, usize::MAX);
    assert!(events.is_empty(), "not readable yet");
    p.a.ping_send(h, B_IP, 1, b"hi").unwrap();
    p.settle(ustack_core::Duration::from_millis(1));
    p.a.poll_events(&mut events, usize::MAX);
    assert_eq!(events, vec![Event { token: 7, readiness: Readiness::READABLE, socket: Socket::Ping(h) }]);
    let mut buf = [0u8; 8];
    assert_eq!(p.a.ping_recv(h, &mut buf).map(|r| r.seq_no), Some(1));
    p.a.ping_close(h);
    assert!(p.a.register(h, 1, Interest::READABLE).is_err(), "a closed socket cannot be registered");
}
