//! One 64-byte request/response next to N idle established connections,
//! against the same with none, on ustack (N = 10,000) and on smoltcp
//! (N = 1,000: its poll visits every socket, so it pays for each idle one).
//! The figure to read is the ratio of the two lines of each stack, measured
//! in the same run. Run: `cargo bench -p ustack-bench --bench idle`.
//! `ustack bench idle` measures the same with any N, plus memory and Linux.

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use std::time::Duration;
use ustack_bench::idle::{idle_ports, RequestResponse, SmoltcpIdle, UstackIdle};

const MESSAGE: usize = 64;
const USTACK_IDLE: usize = 10_000;
const SMOLTCP_IDLE: usize = 1_000;

fn ustack(n: usize) -> UstackIdle {
    // The same listening ports for both sizes, so that only the idle
    // connections differ.
    let mut pair = UstackIdle::new(n, idle_ports(USTACK_IDLE), MESSAGE).expect("two ustack stacks");
    pair.open_idle(n).expect("idle ustack connections open");
    pair
}

fn smoltcp(n: usize) -> SmoltcpIdle {
    let mut pair = SmoltcpIdle::new(MESSAGE).expect("two smoltcp interfaces");
    pair.open_idle(n).expect("idle smoltcp connections open");
    pair
}

fn bench(c: &mut Criterion) {
    let mut g = c.benchmark_group("idle_rr");
    g.throughput(Throughput::Elements(1));
    for n in [0, USTACK_IDLE] {
        let mut pair = ustack(n);
        g.bench_with_input(BenchmarkId::new("ustack", n), &n, |b, _| {
            b.iter(|| pair.request_response().expect("request/response"))
        });
    }
    // Each smoltcp exchange costs a pass over every socket: fewer samples.
    g.sample_size(20).measurement_time(Duration::from_secs(3));
    for n in [0, SMOLTCP_IDLE] {
        let mut pair = smoltcp(n);
        g.bench_with_input(BenchmarkId::new("smoltcp", n), &n, |b, _| {
            b.iter(|| pair.request_response().expect("request/response"))
        });
    }
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
