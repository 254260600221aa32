//! `ustack`: run the userspace stack on a device, or show it working.

mod demo;
mod error;
mod stats;
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
    /// Run the stack on a device until SIGINT or SIGTERM: answer ARP and ping, serve UDP echo.
    Up(up::UpArgs),
    /// Two stacks in this process over an in-memory link: ARP, ping and UDP echo, with figures.
    Demo(demo::DemoArgs),
    /// Print a running stack's counters once (read over its control socket).
    Stats(stats::StatsArgs),
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Up(args) => up::run(args),
        Command::Demo(args) => demo::run(args),
        Command::Stats(args) => stats::run(args),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("ustack: error: {e}");
            ExitCode::FAILURE
        }
    }
}
