//! `ustack bench`: the same workload over Linux kernel sockets (loopback) and
//! over ustack (two stacks on the in-memory link), in one run, side by side.

use crate::error::CliError;
use clap::{Args, ValueEnum};
use ustack_bench::{Params, Workload};

#[derive(Args, Debug)]
pub struct BenchArgs {
    /// stream (bulk throughput), rr (64-byte request/response), crr (connect, request, response, close),
    /// idle (request/response next to --connections idle connections, and memory per idle connection).
    #[arg(value_enum)]
    pub workload: BenchWorkload,
    /// Seconds to measure each stack.
    #[arg(long, default_value_t = 3.0)]
    pub seconds: f64,
    /// Request and response size for rr and crr.
    #[arg(long, default_value_t = 64)]
    pub message: usize,
    /// MTU of the in-memory link (Linux loopback's is 65536; 1500 is Ethernet's).
    #[arg(long, default_value_t = 1500)]
    pub mtu: usize,
    /// Print one JSON object: workload, ustack, linux, ratio (idle: ustack's
    /// figures at the top level, then smoltcp and linux).
    #[arg(long)]
    pub json: bool,
    /// idle: idle established connections to open (ustack runs any N up to 4,000,000).
    #[arg(long, default_value_t = 10_000)]
    pub connections: usize,
    /// idle: largest N for smoltcp, which visits every socket on every poll.
    #[arg(long, default_value_t = 10_000)]
    pub smoltcp_max: usize,
    /// idle: largest N for Linux loopback sockets (held by helper processes, each within RLIMIT_NOFILE).
    #[arg(long, default_value_t = 100_000)]
    pub linux_max: usize,
    /// idle: ustack only, without the smoltcp and Linux baselines.
    #[arg(long)]
    pub no_baselines: bool,
}

#[derive(Clone, Copy, Debug, ValueEnum)]
pub enum BenchWorkload {
    Stream,
    Rr,
    Crr,
    Idle,
}

pub fn run(args: BenchArgs) -> Result<(), CliError> {
    if !(0.1..=3600.0).contains(&args.seconds) {
        return Err(CliError::Bench(format!("--seconds {}: expected 0.1 to 3600", args.seconds)));
    }
    if !(576..=65535).contains(&args.mtu) {
        return Err(CliError::Bench(format!("--mtu {}: expected 576 to 65535", args.mtu)));
    }
    if !(1..=65536).contains(&args.message) {
        return Err(CliError::Bench(format!("--message {}: expected 1 to 65536 bytes", args.message)));
    }
    let workload = match args.workload {
        BenchWorkload::Idle => return idle(&args),
        BenchWorkload::Stream => Workload::Stream,
        BenchWorkload::Rr => Workload::Rr,
        BenchWorkload::Crr => Workload::Crr,
    };
    let params =
        Params { duration: std::time::Duration::from_secs_f64(args.seconds), message: args.message, mtu: args.mtu };
    let report = ustack_bench::run(workload, &params).map_err(|e| CliError::Bench(e.to_string()))?;
    if args.json {
        println!("{}", report.json());
    } else {
        print!("{}", report.table());
    }
    Ok(())
}

fn idle(args: &BenchArgs) -> Result<(), CliError> {
    if !(1..=4_000_000).contains(&args.connections) {
        return Err(CliError::Bench(format!("--connections {}: expected 1 to 4,000,000", args.connections)));
    }
    let params = ustack_bench::IdleParams {
        connections: args.connections,
        duration: std::time::Duration::from_secs_f64(args.seconds),
        message: args.message,
        smoltcp_max: args.smoltcp_max,
        linux_max: args.linux_max,
        baselines: !args.no_baselines,
    };
    let report = ustack_bench::run_idle(&params).map_err(CliError::Bench)?;
    if args.json {
        println!("{}", report.json());
    } else {
        print!("{}", report.table());
    }
    Ok(())
}
