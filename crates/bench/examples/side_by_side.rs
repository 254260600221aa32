//! `cargo run --release -p ustack-bench --example side_by_side -- [stream|rr|crr] [seconds] [mtu]`
fn main() {
    let args: Vec<String> = std::env::args().collect();
    let workload = match args.get(1).map(String::as_str) {
        Some("stream") => ustack_bench::Workload::Stream,
        Some("crr") => ustack_bench::Workload::Crr,
        _ => ustack_bench::Workload::Rr,
    };
    let mut p = ustack_bench::Params::default();
    if let Some(s) = args.get(2).and_then(|s| s.parse().ok()) {
        p.duration = std::time::Duration::from_secs_f64(s);
    }
    if let Some(m) = args.get(3).and_then(|s| s.parse().ok()) {
        p.mtu = m;
    }
    let r = ustack_bench::run(workload, &p).expect("benchmark");
    print!("{}", r.table());
    println!("{}", r.json());
}
