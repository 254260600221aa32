//! The Toeplitz hash per flow: the table-driven hash the shards steer by,
//! beside the bit-by-bit definition as the baseline, on the IPv4 4-tuple
//! (12 bytes) and on a whole frame (parse + hash). Run:
//! `cargo bench -p ustack-core --bench rss`.

use criterion::{black_box, criterion_group, criterion_main, Criterion, Throughput};
use std::net::Ipv4Addr;
use ustack_core::rss::{toeplitz_reference, Toeplitz, SYMMETRIC_KEY};

fn bench(c: &mut Criterion) {
    let mut g = c.benchmark_group("toeplitz");
    g.throughput(Throughput::Elements(1));
    let t = Toeplitz::default();
    let (a, b) = (Ipv4Addr::new(10, 0, 0, 1), Ipv4Addr::new(10, 0, 0, 2));
    let mut port = 49152u16;
    g.bench_function("table_ipv4_4tuple", |bn| {
        bn.iter(|| {
            port = port.wrapping_add(1);
            black_box(t.hash_v4(black_box(a), black_box(b), port, 80))
        })
    });
    g.bench_function("bitwise_ipv4_4tuple (baseline)", |bn| {
        bn.iter(|| {
            port = port.wrapping_add(1);
            let mut input = [0u8; 12];
            input[0..4].copy_from_slice(&black_box(a).octets());
            input[4..8].copy_from_slice(&black_box(b).octets());
            input[8..10].copy_from_slice(&port.to_be_bytes());
            input[10..12].copy_from_slice(&80u16.to_be_bytes());
            black_box(toeplitz_reference(&SYMMETRIC_KEY, &input))
        })
    });
    // A TCP SYN as it comes off a device: Ethernet, IPv4, TCP.
    let mut frame = vec![0u8; 74];
    frame[12..14].copy_from_slice(&[0x08, 0x00]);
    frame[14] = 0x45;
    frame[14 + 9] = 6;
    frame[26..30].copy_from_slice(&a.octets());
    frame[30..34].copy_from_slice(&b.octets());
    frame[36..38].copy_from_slice(&80u16.to_be_bytes());
    g.bench_function("table_frame", |bn| {
        bn.iter(|| {
            port = port.wrapping_add(1);
            frame[34..36].copy_from_slice(&port.to_be_bytes());
            black_box(t.hash_frame(black_box(&frame)))
        })
    });
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
