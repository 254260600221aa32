//! A socket's own send and receive buffer sizes (`BufferSizes`, Linux's
//! SO_SNDBUF/SO_RCVBUF) through whole stacks: the sizes a connection gets,
//! the window scale its SYN or SYN-ACK offers, the window the peer sees, and
//! what `send` takes; a listener's children inherit the listener's sizes.

mod common;

use common::*;
use std::net::SocketAddrV4;
use ustack_core::tcp::BufferSizes;
use ustack_core::{Stack, TcpHandle};

/// Bytes `send` takes before the buffer is full (the peer has no time to
/// acknowledge any: no turn in between).
fn send_until_full(s: &mut Stack, h: TcpHandle) -> usize {
    let chunk = [7u8; 4096];
    let mut total = 0;
    while let Ok(n @ 1..) = s.tcp_send(h, &chunk) {
        total += n;
        assert!(total <= 1 << 24, "send never filled up");
    }
    total
}

/// 8 KiB to send, 4 KiB to receive: a window that needs no scale.
const SMALL: BufferSizes = BufferSizes { send: Some(8192), recv: Some(4096) };

/// Connection `h` of `sized` has [`SMALL`]'s buffers: its SYN or SYN-ACK
/// offered shift 0, by which its peer `ph` of `peer` scales, the peer may
/// send it at most 4 KiB, and `send` takes 8 KiB.
fn assert_small(sized: &mut Stack, h: TcpHandle, peer: &Stack, ph: TcpHandle) {
    let c = sized.tcp_connection(h).unwrap();
    assert_eq!((c.send_buffer_size(), c.recv_buffer_size()), (8192, 4096));
    assert_eq!(c.window_scales().1, 0);
    let peer = peer.tcp_connection(ph).unwrap();
    assert_eq!(peer.window_scales().0, 0);
    assert!(peer.send_window() <= 4096, "the peer may send {} bytes", peer.send_window());
    assert_eq!(send_until_full(sized, h), 8192);
}

#[test]
fn a_small_receive_buffer_set_before_connect_offers_a_small_window_without_scale() {
    let mut p = Pair::new();
    let (c, s) = open_tcp(&mut p, 80, SMALL, BufferSizes::default());
    assert_small(&mut p.a, c, &p.b, s);

    // The same stacks without an override: the stack's 256 KiB, shift 3.
    let (c, s) = open_tcp(&mut p, 81, BufferSizes::default(), BufferSizes::default());
    let client = p.a.tcp_connection(c).unwrap();
    assert_eq!((client.send_buffer_size(), client.recv_buffer_size()), (256 * 1024, 256 * 1024));
    assert_eq!(client.window_scales().1, 3);
    assert_eq!(p.b.tcp_connection(s).unwrap().window_scales().0, 3);
    assert_eq!(send_until_full(&mut p.a, c), 256 * 1024);
}

#[test]
fn a_large_receive_buffer_gets_a_window_scale_large_enough_for_it() {
    let mut p = Pair::new();
    // The stack's own receive buffer fits 16 bits; its send buffer makes
    // the pool's chunks large enough for 1 MiB buffers.
    let mut cfg = config(A_MAC, A_IP);
    cfg.tcp.recv_buffer_size = 64 * 1024 - 1;
    cfg.tcp.send_buffer_size = 1 << 20;
    p.a = Stack::new(cfg, 1);
    assert_eq!(p.a.tcp_largest_buffer(), 1 << 20);
    let (c, s) = open_tcp(&mut p, 80, BufferSizes::default(), BufferSizes::default());
    assert_eq!(p.a.tcp_connection(c).unwrap().window_scales().1, 0);
    assert!(p.b.tcp_connection(s).unwrap().send_window() < 65536);

    // Asking for more than the pool can back gets the most it can.
    let large = BufferSizes { send: None, recv: Some(8 << 20) };
    let (c, s) = open_tcp(&mut p, 81, large, BufferSizes::default());
    let client = p.a.tcp_connection(c).unwrap();
    assert_eq!(client.recv_buffer_size(), 1 << 20);
    // 1 MiB >> 5 is the first to fit 16 bits.
    assert_eq!(client.window_scales().1, 5);
    let server = p.b.tcp_connection(s).unwrap();
    assert_eq!(server.window_scales().0, 5);
    assert!(server.send_window() > 512 * 1024, "the server may send only {} bytes", server.send_window());
}

#[test]
fn accepted_connections_inherit_their_listeners_buffer_sizes() {
    let mut p = Pair::new();
    let (c, s) = open_tcp(&mut p, 80, BufferSizes::default(), SMALL);
    assert_small(&mut p.b, s, &p.a, c);

    // A second connection to the same listener inherits the same; another
    // listener without an override has the stack's sizes.
    let c2 = p.a.tcp_connect(p.now, SocketAddrV4::new(B_IP, 80)).unwrap();
    let s2 = accept_next(&mut p, 80);
    assert_small(&mut p.b, s2, &p.a, c2);
    let (_, s3) = open_tcp(&mut p, 81, BufferSizes::default(), BufferSizes::default());
    assert_eq!(p.b.tcp_connection(s3).unwrap().recv_buffer_size(), 256 * 1024);
}

#[test]
fn sizes_set_on_a_listening_port_reach_the_connections_opened_after() {
    let mut p = Pair::new();
    let (_, before) = open_tcp(&mut p, 80, BufferSizes::default(), BufferSizes::default());
    assert!(p.b.tcp_set_listen_buffers(80, SMALL));
    assert!(!p.b.tcp_set_listen_buffers(81, SMALL), "nothing listens on 81");
    let c = p.a.tcp_connect(p.now, SocketAddrV4::new(B_IP, 80)).unwrap();
    let s = accept_next(&mut p, 80);
    assert_small(&mut p.b, s, &p.a, c);
    // The connection accepted before keeps the stack's sizes.
    assert_eq!(p.b.tcp_connection(before).unwrap().recv_buffer_size(), 256 * 1024);
}

#[test]
fn a_send_buffer_sized_on_an_open_connection_applies_while_nothing_is_in_flight() {
    let mut p = Pair::new();
    let (c, s) = open_tcp(&mut p, 80, BufferSizes::default(), BufferSizes::default());
    assert!(p.a.tcp_set_send_buffer_size(c, 10_000));
    assert_eq!(p.a.tcp_connection(c).unwrap().send_buffer_size(), 10_000);
    assert_eq!(send_until_full(&mut p.a, c), 10_000);
    // Bytes in flight: refused, the size stays.
    assert!(!p.a.tcp_set_send_buffer_size(c, 20_000));
    assert_eq!(p.a.tcp_connection(c).unwrap().send_buffer_size(), 10_000);
    let mut buf = vec![0u8; 65536];
    for _ in 0..1000 {
        step(&mut p);
        let _ = p.b.tcp_recv(s, &mut buf);
        if p.a.tcp_connection(c).unwrap().send_queue() == 0 {
            break;
        }
    }
    assert_eq!(p.a.tcp_connection(c).unwrap().send_queue(), 0, "the peer acknowledged everything");
    // Empty again: it may grow, to the most the pool can back.
    assert!(p.a.tcp_set_send_buffer_size(c, 1 << 30));
    assert_eq!(p.a.tcp_connection(c).unwrap().send_buffer_size(), p.a.tcp_largest_buffer());
    assert_eq!(send_until_full(&mut p.a, c), p.a.tcp_largest_buffer());
}
