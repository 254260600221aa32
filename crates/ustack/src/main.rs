//! `ustack`: run the userspace stack on a device, or show it working.

mod demo;
mod device;
mod error;
mod get;
mod metrics;
mod perf;
mod plot;
mod bench;
mod bench_reflect;
mod config;
mod shards;
mod stats;
mod switch;
mod top;
mod up;

use clap::{Parser, Subcommand};
use std::process::ExitCode;

#[derive(Parser)]
#[command(name = "ustack", version, about = "A userspace TCP/IP stack", propagate_version = true)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the stack on a device until SIGINT or SIGTERM: answer ARP and ping, serve UDP/TCP echo, TCP discard, HTTP.
    Up(up::UpArgs),
    /// Fetch URLs over HTTP/1.1 with the stack on a device, pipelined on one connection per server.
    Get(get::GetArgs),
    /// Two stacks in this process over an in-memory link: ARP, ping, UDP echo, an HTTP download and short TCP connections, with figures.
    Demo(demo::DemoArgs),
    /// Print a running stack's counters once (read over its control socket).
    Stats(stats::StatsArgs),
    /// A running stack live: packets and bytes per second, pools, TCP states, retransmissions, drops (q quits).
    Top(top::TopArgs),
    /// The same workload over Linux loopback sockets and over ustack, side by side (stream, rr, crr).
    Bench(bench::BenchArgs),
    /// Print the config file: every tunable with its default (--defaults), or what --config and --set make of them.
    Config(config::ConfigCmdArgs),
    /// iperf3 on the stack: a server (-s) or client (-c HOST) that interoperates with iperf3 3.12.
    Perf(perf::PerfArgs),
    /// An L2 switch between ports (vhost-user ports mostly): MAC learning, flooding, per-port counters; --reflect sends every frame back.
    Switch(switch::SwitchArgs),
}

fn main() -> ExitCode {
    memory_returns_to_the_os();
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Up(args) => up::run(args),
        Command::Get(args) => get::run(args),
        Command::Demo(args) => demo::run(args),
        Command::Stats(args) => stats::run(args),
        Command::Top(args) => top::run(args),
        Command::Bench(args) => bench::run(args),
        Command::Perf(args) => perf::run(args),
        Command::Config(args) => config::run(args),
        Command::Switch(args) => switch::run(args),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("ustack: error: {e}");
            // A bad configuration is a usage error, like a bad flag (clap's 2).
            if matches!(e, error::CliError::Config(_)) {
                ExitCode::from(2)
            } else {
                ExitCode::FAILURE
            }
        }
    }
}

/// Blocks of 16 KiB and more (the TCP buffer pool's chunks at the default
/// buffer sizes) get their own mappings, so storage the pool frees after a
/// load (`tcp.buffer_pool_floor`) leaves the process at once. glibc's
/// default serves them from the heap, where freed chunks between live ones
/// stay resident: RSS stayed at its peak after a load.
fn memory_returns_to_the_os() {
    #[cfg(target_env = "gnu")]
    // SAFETY: mallopt only sets an allocator parameter; called before any thread starts.
    unsafe {
        libc::mallopt(libc::M_MMAP_THRESHOLD, 16 * 1024);
    }
}
