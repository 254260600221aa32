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
    /// counters, interfaces, pools, tcp, drops, config (see `ustack_runtime::control::snapshot_json`).
    #[arg(long, conflicts_with = "prometheus")]
    pub json: bool,
    /// Print the snapshot in Prometheus's text exposition format (what `ustack up --metrics` serves).
    #[arg(long)]
    pub prometheus: bool,
}

/// The control socket named by `--control PATH` or `--device KIND:NAME`.
pub fn control_addr(device: Option<String>, control: Option<std::path::PathBuf>) -> Result<ControlAddr, CliError> {
    if let Some(p) = control {
        return Ok(ControlAddr::Path(p));
    }
    let dev = device.unwrap_or_default(); // clap requires one of the two
    let spec: ustack_device::DeviceSpec = dev.parse().map_err(CliError::DeviceSpec)?;
    Ok(ControlAddr::Device(crate::up::control_name(&spec.to_string())))
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
    if args.prometheus {
        print!("{}", ustack_runtime::control::prometheus_text(&snapshot));
        return Ok(());
    }
    if snapshot["switch"] == true {
        crate::switch::stats_lines(&snapshot).iter().for_each(|l| println!("{l}"));
        return Ok(());
    }
    let uptime = snapshot["uptime_us"].as_u64().unwrap_or(0) as f64 / 1e6;
    println!("{}  up {uptime:.1} s  neighbours {}", snapshot["device"].as_str().unwrap_or("?"), snapshot["neighbors"]);
    if let Some(counters) = snapshot["counters"].as_object() {
        for (name, value) in counters.iter().filter(|(_, v)| v.as_u64() != Some(0)) {
            println!("  {name:<32} {value}");
        }
    }
    // What `top` shows beside the counters, one line each, so the plain
    // form is not poorer than the live one.
    for line in summary(&snapshot) {
        println!("{line}");
    }
    Ok(())
}

/// The snapshot's device counters, TCP table and pools as `label  k v ...`
/// lines (zero TCP states left out).
fn summary(snap: &serde_json::Value) -> Vec<String> {
    let pairs = |v: &serde_json::Value, skip_zero: bool| -> String {
        v.as_object()
            .map(|o| {
                o.iter()
                    .filter(|(_, v)| !(skip_zero && v.as_u64() == Some(0)))
                    .map(|(k, v)| format!(" {k} {v}"))
                    .collect()
            })
            .unwrap_or_default()
    };
    let tcp = &snap["tcp"];
    let (buf, arp) = (&snap["pools"]["tcp_buffers"], &snap["pools"]["neighbor_pending"]);
    vec![
        format!("device{}", pairs(&snap["interfaces"][0]["device_counters"], false)),
        format!(
            "tcp  connections {}  listeners {}  retransmits {}{}",
            tcp["connections"],
            tcp["listeners"],
            tcp["retransmits"],
            pairs(&tcp["states"], true)
        ),
        format!(
            "listen  syns {}  syn_queue_overflows {}  accept_queue_overflows {}  syn_cookies sent {} accepted {} rejected {}",
            tcp["syns"],
            tcp["syn_queue_overflows"],
            tcp["accept_queue_overflows"],
            tcp["syn_cookies"]["sent"],
            tcp["syn_cookies"]["accepted"],
            tcp["syn_cookies"]["rejected"]
        ),
        format!(
            "pools  tcp_buffers {} in use / {} allocated / {} limit ({} B chunks, {} refused)  arp_queue {} / {}",
            buf["in_use"],
            buf["allocated"],
            buf["limit"],
            buf["chunk_size"],
            buf["exhausted"],
            arp["in_use"],
            arp["limit"]
        ),
    ]
}
