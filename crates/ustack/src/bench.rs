//! `ustack bench`: the same workload over Linux kernel sockets (loopback) and
//! over ustack (two stacks on the in-memory link), in one run, side by side;
//! with `--device`, ustack on a TAP and Linux on a veth pair.

use crate::config::ConfigArgs;
use crate::device::DeviceArgs;
use crate::error::CliError;
use clap::{Args, ValueEnum};
use std::net::Ipv4Addr;
use ustack_bench::{DeviceSetup, Params, Workload};
use ustack_core::Ipv4Cidr;

/// The in-memory link's MTU unless `--mtu` says otherwise.
const DEFAULT_MTU: usize = 1500;

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
    /// MTU of the in-memory link (default 1500, Ethernet's; Linux loopback's is 65536).
    #[arg(long)]
    pub mtu: Option<usize>,
    /// stream: bytes the application writes at a time.
    #[arg(long, value_name = "BYTES", default_value_t = ustack_bench::DEFAULT_WRITE_SIZE)]
    pub write_size: usize,
    /// stream: the sender's socket send buffer (Linux SO_SNDBUF, ustack tcp.send_buffer_size) [default: each stack's own].
    #[arg(long, value_name = "BYTES")]
    pub send_buffer: Option<usize>,
    /// stream: measure both stacks at each point of a sweep instead of once: write-size (64 B to 8 KiB)
    /// or send-buffer (2 KiB to 1 MiB), on the in-memory link and loopback.
    #[arg(long, value_enum, value_name = "WHAT")]
    pub sweep: Option<Sweep>,
    /// Also draw what is printed as an SVG chart, ustack beside Linux.
    #[arg(long, value_name = "FILE.svg")]
    pub plot: Option<std::path::PathBuf>,
    /// Run ustack on this device instead (tap:NAME) against the kernel's TCP as client, and Linux
    /// on a veth pair; each in private network namespaces the bench makes and that vanish with it
    /// (root needed). stream, rr and crr only. `virtio-user`: two ustack processes on ports of a
    /// `ustack switch` the bench starts, beside two Linux processes over loopback (no root);
    /// `virtio-user,OPTS` gives both ports OPTS (e.g. busy_poll=USEC, also the switch's --busy-poll).
    #[arg(long, value_name = "KIND:NAME")]
    pub device: Option<String>,
    /// With --device: ustack's address (and the Linux server's on its veth) [default: 10.0.0.2/24].
    #[arg(long, value_name = "A.B.C.D/N", requires = "device")]
    pub ip: Option<Ipv4Cidr>,
    /// With --device: the kernel client's address on the TAP's side (and on its veth) [default: 10.0.0.1/24].
    #[arg(long, value_name = "A.B.C.D/N", requires = "device")]
    pub host_ip: Option<Ipv4Cidr>,
    /// stream, rr and crr over IPv6: the in-memory pair on fd00:0:0:5001::1 and ::2 beside Linux on ::1;
    /// with --device tap:NAME, ustack at fd00:0:0:5001::2/64 and the kernel client at ::1/64 on the TAP,
    /// beside Linux's veth pair with the same two addresses.
    #[arg(long)]
    pub ip6: bool,
    /// Print one JSON object: workload, path, linux_path, ip_version, ustack, linux, ratio (--device adds device,
    /// client_retransmits, ustack_counters, device_counters; idle: ustack's figures at the top level,
    /// then smoltcp and linux).
    #[arg(long)]
    pub json: bool,
    /// reflect: measure each cell this many times, ustack and DPDK taking turns, and report each side's best
    /// (with the spread): one run per cell moves 2-3x on a machine whose cores the runs share.
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u32).range(1..=20))]
    pub rounds: u32,
    /// reflect: how testpmd makes its frames: flowgen builds every one; loop sends 32 bursts once
    /// (`start tx_first 32`) and then forwards what comes back (mac), as DPDK's loopback test plans do.
    #[arg(long, value_enum, default_value = "flowgen")]
    pub generator: crate::bench_reflect::Generator,
    /// reflect: the generator's mbuf cache per lcore (testpmd --mbcache, 0-512). testpmd's own default, 250,
    /// is smaller than what two queues' in-order transmit cleanups hand back together, and a generator
    /// that spills it runs slower against a reflector that keeps up with it (see README).
    #[arg(long, default_value_t = 512, value_parser = clap::value_parser!(u32).range(0..=512))]
    pub generator_mbuf_cache: u32,
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
    /// With --device af_packet:/af_xdp:, keep the kernel's checksum and TSO offloads on the veth ends
    /// for both stacks (default: off, each side's software sums MTU-sized frames).
    #[arg(long, requires = "device")]
    pub veth_offloads: bool,
    /// With --device virtio-user: pin the switch to the first CPU and both ends of each side (ustack's two
    /// stacks, then Linux's client and server) to the second, e.g. 0,1 (default: the kernel places them).
    #[arg(long, value_name = "SWITCH_CPU,ENDS_CPU", value_delimiter = ',', num_args = 1, requires = "device")]
    pub pin: Vec<usize>,
    /// Serve the Linux side of a process-to-process run on ADDR:PORT (the bench starts it itself).
    #[arg(long, value_name = "ADDR:PORT", hide = true)]
    pub kernel_server: Option<std::net::SocketAddrV4>,
    /// With --device: the stack's tunables, as for `ustack up`.
    #[command(flatten)]
    pub cfg: ConfigArgs,
    /// Run stream, rr or crr on each of these core counts (e.g. 1,2): ustack as N shards on the
    /// in-memory link (each core a shard and the client whose flows hash to it), beside Linux with N
    /// SO_REUSEPORT server threads and N clients on loopback; prints each count's ratio, each side's
    /// scaling from the first count and CPU per operation. With --device tap:NAME (root): N shards on a
    /// multi-queue TAP, one queue each, against N kernel clients, beside Linux's N servers on a veth pair.
    #[arg(long, value_name = "N,N,...", value_delimiter = ',',
        value_parser = clap::builder::RangedU64ValueParser::<usize>::new().range(1..=1024))]
    pub cores: Vec<usize>,
}

/// What `--sweep` varies.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum Sweep {
    /// The application's write size: 64 B to 8 KiB, doubling.
    WriteSize,
    /// The sender's socket send buffer: 2 KiB to 1 MiB, doubling.
    SendBuffer,
}

impl Sweep {
    fn points(self) -> Vec<usize> {
        let (first, last) = match self {
            Sweep::WriteSize => (64, 8 * 1024),
            Sweep::SendBuffer => (2 * 1024, 1024 * 1024),
        };
        std::iter::successors(Some(first), |&x| (x < last).then_some(x * 2)).collect()
    }

    fn name(self) -> &'static str {
        match self {
            Sweep::WriteSize => "write_size",
            Sweep::SendBuffer => "send_buffer",
        }
    }

    fn label(self) -> &'static str {
        match self {
            Sweep::WriteSize => "application write size (bytes)",
            Sweep::SendBuffer => "socket send buffer (bytes)",
        }
    }
}

#[derive(Clone, Copy, Debug, ValueEnum)]
pub enum BenchWorkload {
    Stream,
    Rr,
    Crr,
    Idle,
    /// dpdk-testpmd (virtio-user; flowgen, or a loop with --generator loop) against
    /// `ustack switch --reflect` and DPDK's net_vhost + macswap: Mpps per frame size and
    /// queue count, with the ratio and how often the generator found nothing to receive.
    Reflect,
}

pub fn run(args: BenchArgs) -> Result<(), CliError> {
    if !(0.1..=3600.0).contains(&args.seconds) {
        return Err(CliError::Bench(format!("--seconds {}: expected 0.1 to 3600", args.seconds)));
    }
    let mtu = args.mtu.unwrap_or(DEFAULT_MTU);
    if !(576..=65535).contains(&mtu) {
        return Err(CliError::Bench(format!("--mtu {mtu}: expected 576 to 65535")));
    }
    if !(1..=65536).contains(&args.message) {
        return Err(CliError::Bench(format!("--message {}: expected 1 to 65536 bytes", args.message)));
    }
    let workload = match args.workload {
        BenchWorkload::Idle if args.device.is_some() => {
            return Err(CliError::Bench("--device runs stream, rr and crr; idle runs on the in-memory link".into()))
        }
        BenchWorkload::Idle if args.plot.is_some() || args.sweep.is_some() => {
            return Err(CliError::Bench(
                "--plot and --sweep draw stream, rr and crr; idle prints its table only".into(),
            ))
        }
        BenchWorkload::Idle | BenchWorkload::Reflect if args.ip6 => {
            return Err(CliError::Bench("--ip6 runs stream, rr and crr".into()))
        }
        BenchWorkload::Idle => return idle(&args),
        BenchWorkload::Reflect => {
            let setup = crate::bench_reflect::Setup { generator: args.generator, mbuf_cache: args.generator_mbuf_cache };
            return crate::bench_reflect::run(setup, args.seconds, args.rounds, args.json);
        }
        BenchWorkload::Stream => Workload::Stream,
        BenchWorkload::Rr => Workload::Rr,
        BenchWorkload::Crr => Workload::Crr,
    };
    if args.device.is_none() && (args.cfg.config.is_some() || !args.cfg.set.is_empty()) {
        return Err(CliError::Config(
            "bench: --config and --set configure the stack on --device; the in-memory pair is set by the workload"
                .into(),
        ));
    }
    if !(1..=16 * 1024 * 1024).contains(&args.write_size) {
        return Err(CliError::Bench(format!("--write-size {}: expected 1 to 16 MiB", args.write_size)));
    }
    if let Some(b) = args.send_buffer.filter(|b| !(2048..=1 << 30).contains(b)) {
        return Err(CliError::Bench(format!("--send-buffer {b}: expected 2048 to 1 GiB")));
    }
    if args.sweep.is_some() && (!matches!(workload, Workload::Stream) || args.device.is_some()) {
        return Err(CliError::Bench("--sweep runs stream on the in-memory link and loopback".into()));
    }
    if args.ip6 && (!args.cores.is_empty() || args.device.as_deref().is_some_and(|d| !d.starts_with("tap:"))) {
        return Err(CliError::Bench(
            "--ip6 runs on the in-memory link and on --device tap:NAME; drop it for --cores and other devices".into(),
        ));
    }
    let params = Params {
        duration: std::time::Duration::from_secs_f64(args.seconds),
        message: args.message,
        mtu,
        write_size: args.write_size,
        send_buffer: args.send_buffer,
        ip6: args.ip6,
    };
    if let Some(sweep) = args.sweep {
        return run_sweep(sweep, &params, &args);
    }
    if !args.cores.is_empty() {
        if args.plot.is_some() || args.device.as_deref().is_some_and(|d| !d.starts_with("tap:")) {
            return Err(CliError::Bench(
                "--cores runs on the in-memory link or on --device tap:NAME (a multi-queue TAP), without --plot".into(),
            ));
        }
        let device = args.device.as_deref();
        let points = match device {
            Some(device) => on_device_cores(workload, &params, &args, device)?,
            None => {
                ustack_bench::run_cores(workload, &params, &args.cores).map_err(|e| CliError::Bench(e.to_string()))?
            }
        };
        if args.json {
            println!("{}", ustack_bench::cores_json(workload, device, &points));
        } else {
            print!("{}", ustack_bench::cores_table(workload, device, &points));
        }
        return Ok(());
    }
    if let Some(addr) = args.kernel_server {
        // The Linux server process of a process-to-process run (hidden).
        return ustack_bench::serve_kernel(workload, args.message, addr).map_err(CliError::Bench);
    }
    let reports = match &args.device {
        Some(device) => on_device(workload, &params, &args, device)?,
        None => vec![ustack_bench::run(workload, &params).map_err(|e| CliError::Bench(e.to_string()))?],
    };
    for report in &reports {
        if args.json {
            println!("{}", report.json());
        } else {
            print!("{}", report.table());
        }
    }
    let report = &reports[0];
    if let Some(path) = &args.plot {
        let ip = if report.params.ip6 { ", IPv6" } else { "" };
        let title = format!("{} ({}{ip})", report.workload.name(), path_words(&report.path, report.params.mtu));
        let mut bars = vec![("ustack", report.main_figure(&report.ustack))];
        if let Some(f) = &report.ustack_no_tso {
            bars.push(("ustack without TSO", report.main_figure(f)));
        }
        bars.push(("Linux", report.main_figure(&report.linux)));
        crate::plot::bars(path, &title, report.unit(), &bars)?;
    }
    Ok(())
}

fn path_words(path: &ustack_bench::BenchPath, mtu: usize) -> String {
    match path {
        ustack_bench::BenchPath::Memory => format!("ustack: in-memory link, MTU {mtu}; Linux: loopback"),
        ustack_bench::BenchPath::Device { device, .. } => format!("ustack on {device}; Linux on a veth pair"),
        ustack_bench::BenchPath::Switch { pin } => format!(
            "two processes on virtio-user ports of ustack switch; Linux: two processes over loopback{}",
            pin.map_or(String::new(), |(sw, ends)| format!(" (switch on CPU {sw}, ends on CPU {ends})"))
        ),
        ustack_bench::BenchPath::Processes { device } => {
            format!("two processes: ustack on {device} at both ends; Linux sockets at both ends")
        }
    }
}

/// stream at every point of `sweep`, both stacks at each, printed (and
/// plotted) as one curve per stack.
fn run_sweep(sweep: Sweep, base: &Params, args: &BenchArgs) -> Result<(), CliError> {
    let mut rows = Vec::new();
    if !args.json {
        println!(
            "stream, sweeping the {} ({} s per side per point, in-memory link MTU {}; Linux on loopback):",
            sweep.label(),
            base.duration.as_secs_f64(),
            base.mtu
        );
        println!(
            "  {:>10} {:>16} {:>16} {:>16} {:>8}",
            sweep.name(),
            "ustack Gbit/s",
            "no-tso Gbit/s",
            "linux Gbit/s",
            "ratio"
        );
    }
    for x in sweep.points() {
        let params = match sweep {
            Sweep::WriteSize => Params { write_size: x, ..*base },
            Sweep::SendBuffer => Params { send_buffer: Some(x), ..*base },
        };
        let report = ustack_bench::run(Workload::Stream, &params)
            .map_err(|e| CliError::Bench(format!("{} {x}: {e}", sweep.name())))?;
        let (u, l) = (report.main_figure(&report.ustack), report.main_figure(&report.linux));
        if !args.json {
            let no_tso =
                report.ustack_no_tso.as_ref().map_or("-".to_string(), |f| format!("{:.2}", report.main_figure(f)));
            println!("  {x:>10} {u:>16.2} {no_tso:>16} {l:>16.2} {:>7.2}x", report.ratio());
        }
        rows.push((x, report));
    }
    if args.json {
        let points: Vec<serde_json::Value> = rows
            .iter()
            .map(|(x, r)| {
                let mut v: serde_json::Value = serde_json::from_str(&r.json()).unwrap_or_default();
                v["x"] = (*x).into();
                v
            })
            .collect();
        println!("{}", serde_json::json!({ "workload": "stream", "sweep": sweep.name(), "points": points }));
    }
    if let Some(path) = &args.plot {
        let title =
            format!("stream goodput against the {} (in-memory link MTU {}; Linux: loopback)", sweep.label(), base.mtu);
        let curve = |name: &str, pick: &dyn Fn(&ustack_bench::Report) -> Option<f64>| crate::plot::Series {
            name: name.to_string(),
            points: rows.iter().filter_map(|(x, r)| pick(r).map(|y| (*x as u64, y))).collect(),
        };
        let mut series = vec![curve("ustack", &|r| Some(r.main_figure(&r.ustack)))];
        if rows.iter().any(|(_, r)| r.ustack_no_tso.is_some()) {
            series.push(curve("ustack without TSO", &|r| r.ustack_no_tso.as_ref().map(|f| r.main_figure(f))));
        }
        series.push(curve("Linux", &|r| Some(r.main_figure(&r.linux))));
        crate::plot::sweep(path, &title, sweep.label(), "Gbit/s", &series)?;
    }
    Ok(())
}

/// The options of `--device virtio-user,OPTS` (checked as a port's would be).
fn virtio_user_options(opts: &str) -> Result<Vec<(String, String)>, CliError> {
    let opts = opts.trim_start_matches([':', ',']);
    if opts.is_empty() {
        return Ok(Vec::new());
    }
    let spec: ustack_device::DeviceSpec = format!("virtio-user:bench,{opts}").parse().map_err(CliError::DeviceSpec)?;
    let mut o = ustack_device::Options::new(&spec);
    ustack_device::VirtioUserConfig::from_options(&mut o)?;
    o.finish()?;
    Ok(spec.options)
}

/// ustack on the TAP, opened as `ustack up` opens it, inside the bench's
/// private namespace.
fn on_device(
    workload: Workload,
    params: &Params,
    args: &BenchArgs,
    device: &str,
) -> Result<Vec<ustack_bench::Report>, CliError> {
    if args.mtu.is_some() {
        return Err(CliError::Bench("--mtu sets the in-memory link's MTU; with --device the TAP's own is used".into()));
    }
    if let Some(opts) = device.strip_prefix("virtio-user").filter(|o| o.is_empty() || o.starts_with([':', ','])) {
        // Two ustack processes on ports of a `ustack switch` the bench
        // starts (its sockets in a temporary directory), beside two Linux
        // processes over loopback; `virtio-user,OPTS` gives both ports OPTS.
        let bin =
            std::env::current_exe().map_err(|e| CliError::Bench(format!("cannot find the ustack binary: {e}")))?;
        let port_options = virtio_user_options(opts)?;
        let pin = match args.pin[..] {
            [] => None,
            [sw, ends] => {
                if let Some((c, allowed)) = ustack_runtime::shard::not_allowed(&[sw, ends]) {
                    return Err(CliError::Bench(format!(
                        "--pin: this process may not run on CPU {c}; pick from {allowed:?}"
                    )));
                }
                Some((sw, ends))
            }
            _ => {
                return Err(CliError::Bench(
                    "--pin takes two CPUs: the switch's, then both ends', e.g. --pin 0,1".into(),
                ))
            }
        };
        let setup = ustack_bench::SwitchSetup { ustack_bin: bin, port_options, pin };
        return ustack_bench::run_switch(workload, params, &setup).map(|r| vec![r]).map_err(CliError::Bench);
    }
    if !args.pin.is_empty() {
        return Err(CliError::Bench(
            "--pin places the switch and the two ends of --device virtio-user; drop it here".into(),
        ));
    }
    let spec: ustack_device::DeviceSpec = device.parse().map_err(CliError::DeviceSpec)?;
    if spec.kind != ustack_device::DeviceKind::Tap {
        // Devices on one end of a link: the bench makes a veth pair and runs
        // both ends as separate processes, and the kernel's client too.
        let bin =
            std::env::current_exe().map_err(|e| CliError::Bench(format!("cannot find the ustack binary: {e}")))?;
        let setup = ustack_bench::P2pSetup { device: spec, ustack_bin: bin, offloads: args.veth_offloads };
        return ustack_bench::run_p2p(workload, params, &setup).map_err(CliError::Bench);
    }
    let (dev, setup) = tap_setup(params, args, device)?;
    let settings = args.cfg.load()?;
    let open = move || dev.open(&settings).map(|o| (o.stack, o.device)).map_err(|e| e.to_string());
    ustack_bench::run_device(workload, params, &setup, open).map(|r| vec![r]).map_err(CliError::Bench)
}

/// `--cores N,... --device tap:NAME`: at each count, N shards on a
/// multi-queue TAP opened as `ustack up --cores N` opens it (one queue a
/// shard, steered by the symmetric hash), beside Linux's N servers.
fn on_device_cores(
    workload: Workload,
    params: &Params,
    args: &BenchArgs,
    device: &str,
) -> Result<Vec<ustack_bench::CoresPoint>, CliError> {
    if args.mtu.is_some() {
        return Err(CliError::Bench("--mtu sets the in-memory link's MTU; with --device the TAP's own is used".into()));
    }
    let (dev, setup) = tap_setup(params, args, device)?;
    let settings = args.cfg.load()?;
    let mac = dev.mac_or_random(ustack_runtime::os_seed());
    let open = |env: &ustack_runtime::shard::ShardEnv| {
        crate::shards::open_shard(&dev, &settings, mac, env).map(|o| (o.stack, o.device))
    };
    ustack_bench::run_device_cores(workload, params, &setup, &args.cores, open).map_err(CliError::Bench)
}

/// The TAP as `ustack up` would open it (ustack at `--ip`, the kernel
/// client at `--host-ip` on its side), checked before any namespace is made.
fn tap_setup(params: &Params, args: &BenchArgs, device: &str) -> Result<(DeviceArgs, DeviceSetup), CliError> {
    let cidr = |a, b, c, d| Ipv4Cidr::new(Ipv4Addr::new(a, b, c, d), 24).expect("a /24 is valid");
    let server = args.ip.unwrap_or_else(|| cidr(10, 0, 0, 2));
    let client = args.host_ip.unwrap_or_else(|| cidr(10, 0, 0, 1));
    if client.addr == server.addr || !server.contains(client.addr) {
        return Err(CliError::Bench(format!(
            "--host-ip {client} must be another address in --ip {server}'s subnet: the client reaches ustack directly"
        )));
    }
    let dev = DeviceArgs {
        device: device.to_string(),
        ip: server,
        gateway: None,
        mac: None,
        host_ip: Some(client),
        ip6: if params.ip6 { vec![crate::device::Ip6Arg::Static(ustack_bench::SERVER_IP6)] } else { Vec::new() },
        gateway6: None,
        impair: None,
        pcap: None,
    };
    // A malformed --device fails before any namespace is made.
    dev.check()?;
    Ok((dev, DeviceSetup { device: device.to_string(), server, client }))
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
