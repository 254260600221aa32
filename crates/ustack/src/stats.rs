//! `ustack stats`: a running stack's counters, once, for people or scripts.

use crate::error::CliError;
use clap::Args;
use ustack_runtime::ControlAddr;

#[derive(Args, Debug)]
pub struct StatsArgs {
    /// The stack's device, as given to `ustack up` (tap:NAME); it is looked up
    /// in the current network namespace.
    #[arg(long, value_name = "KIND:NAME", required_unless_present = "control", conflicts_with = "control")]
    pub device: Option<String>,
    /// The control socket path given to `ustack up --control`.
    #[arg(long, value_name = "PATH")]
    pub control: Option<std::path::PathBuf>,
    /// Print the snapshot as one JSON object: device, uptime_us, neighbors,
    /// counters, interfaces, pools, tcp, drops (see `ustack_runtime::control::snapshot_json`).
    #[arg(long)]
    pub json: bool,
}

/// The control socket named by `--control PATH` or `--device tap:NAME`.
pub fn control_addr(device: Option<String>, control: Option<std::path::PathBuf>) -> Result<ControlAddr, CliError> {
    if let Some(p) = control {
        return Ok(ControlAddr::Path(p));
    }
    let dev = device.unwrap_or_default(); // clap requires one of the two
    match dev.split_once(':') {
        Some(("tap", name)) if !name.is_empty() => Ok(ControlAddr::Device(name.to_string())),
        _ => Err(CliError::DeviceSpec(dev)),
    }
}

/// Read and parse one snapshot.
pub fn read_snapshot(addr: &ControlAddr) -> Result<serde_json::Value, CliError> {
    let text = addr.read_snapshot().map_err(|source| CliError::NoStack { addr: addr.to_string(), source })?;
    serde_json::from_str(&text).map_err(|source| CliError::BadSnapshot { addr: addr.to_string(), source })
}

pub fn run(args: StatsArgs) -> Result<(), CliError> {
    let addr = control_addr(args.device, args.control)?;
    let snapshot = read_snapshot(&addr)?;
    if args.json {
        println!("{snapshot}");
        return Ok(());
    }
    let uptime = snapshot["uptime_us"].as_u64().unwrap_or(0) as f64 / 1e6;
    println!("{}  up {uptime:.1} s  neighbours {}", snapshot["device"].as_str().unwrap_or("?"), snapshot["neighbors"]);
    if let Some(counters) = snapshot["counters"].as_object() {
        for (name, value) in counters.iter().filter(|(_, v)| v.as_u64() != Some(0)) {
            println!("  {name:<32} {value}");
        }
    }
    Ok(())
}
