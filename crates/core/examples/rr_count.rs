//! Fixed-count 64-byte request/response between two ustack stacks on the
//! in-memory link, for instruction counting:
//! `valgrind --tool=callgrind target/release/examples/rr_count N`; take the
//! difference of two N to remove setup. The clock is simulated (1 µs per
//! turn, about what a turn costs natively), so callgrind's slowdown does
//! not change how often timers tick.
use std::net::{Ipv4Addr, SocketAddrV4};
use ustack_core::{Instant, Ipv4Cidr, Stack, StackConfig};
use ustack_device::{LinkConfig, MemoryLink};
use ustack_wire::EthernetAddress;

fn main() {
    let n: u64 = std::env::args().nth(1).and_then(|s| s.parse().ok()).unwrap_or(10_000);
    let link = LinkConfig { capacity: 4096, checksum_offload: true, ..LinkConfig::default() };
    let (mut pa, mut pb) = MemoryLink::pair(link, 7);
    let cfg = |mac: u8, ip| {
        let mut c = StackConfig::new(EthernetAddress([2, 0, 0, 0, 0, mac]), Ipv4Cidr::new(ip, 24).expect("valid"));
        c.tcp.nodelay = true;
        c
    };
    let (a_ip, b_ip) = (Ipv4Addr::new(10, 0, 0, 1), Ipv4Addr::new(10, 0, 0, 2));
    let (mut a, mut b) = (Stack::new(cfg(1, a_ip), 1), Stack::new(cfg(2, b_ip), 2));
    let mut micros = 0u64;
    let mut turn = |a: &mut Stack, b: &mut Stack| {
        micros += 1;
        let now = Instant::from_micros(micros);
        a.poll(now, &mut pa, 64);
        b.poll(now, &mut pb, 64);
    };
    b.tcp_listen(5001, 16).expect("listen");
    let c = a.tcp_connect(Instant::ZERO, SocketAddrV4::new(b_ip, 5001)).expect("connect");
    let s = loop {
        turn(&mut a, &mut b);
        if let Some(s) = b.tcp_accept(5001) {
            break s;
        }
    };
    let req = [0x11u8; 64];
    let mut buf = [0u8; 64];
    for _ in 0..n {
        a.tcp_send(c, &req).expect("send");
        for (stack, h, other) in [(1, s, 0), (0, c, 1)] {
            let mut got = 0;
            while got < buf.len() {
                turn(&mut a, &mut b);
                let st = if stack == 1 { &mut b } else { &mut a };
                if let Ok(k) = st.tcp_recv(h, &mut buf[got..]) {
                    assert!(k > 0, "peer closed");
                    got += k;
                }
            }
            if other == 0 {
                b.tcp_send(s, &buf).expect("send");
            }
        }
    }
}
