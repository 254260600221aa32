//! Receive→reply cost over the in-memory link: one ICMP echo or one UDP echo
//! round trip between two stacks, per iteration (two frames crossing, each
//! parsed, answered and emitted), beside the same UDP echo through Linux
//! loopback sockets as the baseline. Run: `cargo bench -p ustack-core --bench echo`.

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use std::net::{Ipv4Addr, SocketAddrV4};
use ustack_core::{Instant, Ipv4Cidr, Stack, StackConfig};
use ustack_device::{LinkConfig, MemoryLink, MemoryPort};
use ustack_wire::EthernetAddress;

const A_IP: Ipv4Addr = Ipv4Addr::new(10, 0, 0, 1);
const B_IP: Ipv4Addr = Ipv4Addr::new(10, 0, 0, 2);

fn pair() -> (Stack, MemoryPort, Stack, MemoryPort) {
    let (pa, pb) = MemoryLink::pair(LinkConfig::default(), 1);
    let cfg = |m, ip| StackConfig::new(EthernetAddress([2, 0, 0, 0, 0, m]), Ipv4Cidr::new(ip, 24).unwrap());
    (Stack::new(cfg(1, A_IP), 1), pa, Stack::new(cfg(2, B_IP), 2), pb)
}

fn bench(c: &mut Criterion) {
    let mut g = c.benchmark_group("echo_round_trip");
    g.throughput(Throughput::Elements(1));

    for size in [56usize, 1400] {
        let (mut a, mut pa, mut b, mut pb) = pair();
        let h = a.ping_open(1).unwrap();
        let now = Instant::ZERO;
        let data = vec![0x42u8; size];
        let mut buf = vec![0u8; 2048];
        let mut seq = 0u16;
        // Resolve first so the loop measures the steady state.
        a.ping_send(h, B_IP, 0, &data).unwrap();
        for _ in 0..4 {
            a.poll(now, &mut pa, 64);
            b.poll(now, &mut pb, 64);
        }
        a.ping_recv(h, &mut buf).unwrap();
        g.bench_function(format!("icmp_echo_{size}B"), |bn| {
            bn.iter(|| {
                seq = seq.wrapping_add(1);
                a.ping_send(h, B_IP, seq, &data).unwrap();
                a.poll(now, &mut pa, 64);
                b.poll(now, &mut pb, 64);
                a.poll(now, &mut pa, 64);
                a.ping_recv(h, &mut buf).unwrap()
            })
        });
    }

    for size in [64usize, 1400] {
        let (mut a, mut pa, mut b, mut pb) = pair();
        let sa = a.udp_bind(0).unwrap();
        let sb = b.udp_bind(7).unwrap();
        let now = Instant::ZERO;
        let data = vec![0x42u8; size];
        let mut buf = vec![0u8; 2048];
        let dst = SocketAddrV4::new(B_IP, 7);
        a.udp_send_to(sa, dst, &data).unwrap();
        for _ in 0..4 {
            a.poll(now, &mut pa, 64);
            b.poll(now, &mut pb, 64);
        }
        b.udp_recv_from(sb, &mut buf).unwrap();
        g.bench_function(format!("udp_echo_{size}B"), |bn| {
            bn.iter(|| {
                a.udp_send_to(sa, dst, &data).unwrap();
                a.poll(now, &mut pa, 64);
                b.poll(now, &mut pb, 64);
                let (n, from) = b.udp_recv_from(sb, &mut buf).unwrap();
                b.udp_send_to(sb, from, &buf[..n]).unwrap();
                b.poll(now, &mut pb, 0);
                a.poll(now, &mut pa, 64);
                a.udp_recv_from(sa, &mut buf).unwrap()
            })
        });
    }
    // The baseline, measured in the same run: the same UDP echo round trip
    // through the Linux kernel's loopback, both sockets on this thread.
    for size in [64usize, 1400] {
        let a = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        let b = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        a.connect(b.local_addr().unwrap()).unwrap();
        b.connect(a.local_addr().unwrap()).unwrap();
        let data = vec![0x42u8; size];
        let mut buf = vec![0u8; 2048];
        g.bench_function(format!("linux_loopback_udp_echo_{size}B"), |bn| {
            bn.iter(|| {
                a.send(&data).unwrap();
                let n = b.recv(&mut buf).unwrap();
                b.send(&buf[..n]).unwrap();
                a.recv(&mut buf).unwrap()
            })
        });
    }
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
