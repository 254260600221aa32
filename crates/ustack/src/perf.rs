//! `ustack perf`: an iperf3-compatible server (`-s`) and client (`-c HOST`)
//! on the stack, speaking iperf3 3.12's protocol, printing iperf3's
//! interval lines or (`-J`) iperf3's JSON.

use crate::config::ConfigArgs;
use crate::device::DeviceArgs;
use crate::error::CliError;
use clap::Args;
use serde_json::{json, Value};
use std::io::Write;
use std::net::{IpAddr, SocketAddr};
use ustack_core::phy::Device;
use ustack_runtime::apps::iperf::{self, Interval, PerfEvent, StreamReport, TestParams, TestReport};
use ustack_runtime::{App, EventLoop, RunEnd, StopSignal, Waitable};

#[derive(Args, Debug)]
#[command(group(clap::ArgGroup::new("role").required(true).args(["server", "client"])))]
#[command(after_help = "Like iperf3: the client opens the control connection and every data stream; \
    -R makes the server send, --bidir both. Rates take K, M, G suffixes (powers of 1000), byte counts \
    K, M, G (powers of 1024).")]
pub struct PerfArgs {
    /// Run as a server, one test at a time (a client that comes during a test is refused).
    #[arg(short = 's', long = "server")]
    pub server: bool,
    /// Run as a client against the iperf3 server at this IPv4 or IPv6 address (`fd00::1` or `[fd00::1]`).
    #[arg(short = 'c', long = "client", value_name = "HOST", value_parser = parse_host)]
    pub client: Option<IpAddr>,
    /// Server port.
    #[arg(short = 'p', long = "port", default_value_t = iperf::DEFAULT_PORT, value_parser = clap::value_parser!(u16).range(1..))]
    pub port: u16,
    /// Seconds to transmit (client).
    #[arg(short = 't', long = "time", value_name = "SECS", default_value_t = 10)]
    pub time: u32,
    /// Seconds at the start left out of the figures, e.g. slow start (client).
    #[arg(short = 'O', long = "omit", value_name = "SECS", default_value_t = 0)]
    pub omit: u32,
    /// Bytes to transmit instead of a time (client), e.g. 10M.
    #[arg(short = 'n', long = "bytes", value_name = "BYTES", value_parser = parse_bytes)]
    pub bytes: Option<u64>,
    /// Blocks (of -l bytes) to transmit instead of a time (client), e.g. 100.
    #[arg(short = 'k', long = "blockcount", value_name = "N", value_parser = parse_bytes, conflicts_with = "bytes")]
    pub blocks: Option<u64>,
    /// Block (TCP write) or datagram (UDP) length, e.g. 128K.
    #[arg(short = 'l', long = "length", value_name = "BYTES", value_parser = parse_bytes)]
    pub length: Option<u64>,
    /// Parallel streams (client).
    #[arg(short = 'P', long = "parallel", value_name = "N", default_value_t = 1,
        value_parser = clap::value_parser!(u32).range(1..=i64::from(iperf::MAX_STREAMS)))]
    pub parallel: u32,
    /// Reverse: the server sends, the client receives.
    #[arg(short = 'R', long = "reverse", conflicts_with = "bidir")]
    pub reverse: bool,
    /// Both directions at once.
    #[arg(long = "bidir")]
    pub bidir: bool,
    /// UDP instead of TCP.
    #[arg(short = 'u', long = "udp")]
    pub udp: bool,
    /// Target bits per second per stream, e.g. 50M (UDP default 1M; TCP unlimited).
    #[arg(short = 'b', long = "bitrate", value_name = "RATE", value_parser = parse_rate)]
    pub bitrate: Option<u64>,
    /// Print iperf3's JSON instead of interval lines (one document per test).
    #[arg(short = 'J', long = "json")]
    pub json: bool,
    /// Server: serve one test, then exit.
    #[arg(short = '1', long = "one-off")]
    pub one_off: bool,
    /// Give up when the test has not finished after this many seconds (client; default: its length plus 30).
    #[arg(long, value_name = "SECS")]
    pub timeout: Option<u64>,
    #[command(flatten)]
    pub dev: DeviceArgs,
    #[command(flatten)]
    pub cfg: ConfigArgs,
    /// With shards (client, TCP, timed tests): the control connection stays on shard 0 and data stream
    /// n opens on shard n mod N, from a port that hashes back to it.
    #[command(flatten)]
    pub cores: crate::shards::CoresArgs,
}

/// An IPv4 or IPv6 address, the latter bare or in brackets as in URLs.
fn parse_host(s: &str) -> Result<IpAddr, String> {
    let bare = s.strip_prefix('[').and_then(|r| r.strip_suffix(']')).unwrap_or(s);
    bare.parse().map_err(|_| {
        format!("'{s}' is not an IP address: give the server's IPv4 or IPv6 address, e.g. 10.0.0.1 or fd00::1")
    })
}

/// `10M` → 10 * 1024 * 1024, as iperf3's `unit_atoi` reads byte counts.
fn parse_bytes(s: &str) -> Result<u64, String> {
    parse_unit(s, 1024).ok_or_else(|| format!("'{s}' is not a byte count: expected a number like 100K, 10M or 1G"))
}

/// `50M` → 50,000,000, as iperf3's `unit_atof_rate` reads rates.
fn parse_rate(s: &str) -> Result<u64, String> {
    parse_unit(s, 1000).ok_or_else(|| format!("'{s}' is not a rate: expected bits per second like 500K, 50M or 1G"))
}

fn parse_unit(s: &str, base: u64) -> Option<u64> {
    let (num, mult) = match s.chars().last()? {
        'k' | 'K' => (&s[..s.len() - 1], base),
        'm' | 'M' => (&s[..s.len() - 1], base * base),
        'g' | 'G' => (&s[..s.len() - 1], base * base * base),
        _ => (s, 1),
    };
    let v: f64 = num.parse().ok()?;
    (v.is_finite() && v >= 0.0 && v * mult as f64 <= u64::MAX as f64 / 2.0).then_some((v * mult as f64) as u64)
}

pub fn run(args: PerfArgs) -> Result<(), CliError> {
    let settings = args.cfg.load()?;
    args.dev.check()?;
    let params = client_params(&args)?;
    if args.cores.sharded() {
        return sharded_client(&args, &settings, params);
    }
    let opened = args.dev.open(&settings)?;
    let label = opened.label;
    perf(EventLoop::new(opened.stack, opened.device), &args, &label, params)
}

/// The test the client asks for, checked before any device is touched.
fn client_params(args: &PerfArgs) -> Result<TestParams, CliError> {
    let bad = |m: String| CliError::Perf(m);
    let len = match args.length {
        Some(l) if args.udp && !(16..=iperf::MAX_UDP_LEN as u64).contains(&l) => {
            return Err(bad(format!("-l {l}: a UDP datagram carries 16 to {} bytes here", iperf::MAX_UDP_LEN)))
        }
        Some(l) if !(1..=iperf::MAX_TCP_LEN as u64).contains(&l) => {
            return Err(bad(format!("-l {l}: a TCP block is 1 to {} bytes", iperf::MAX_TCP_LEN)))
        }
        Some(l) => l as usize,
        None if args.udp => 1448,
        None => iperf::DEFAULT_TCP_LEN,
    };
    Ok(TestParams {
        udp: args.udp,
        time: if args.bytes.is_some() || args.blocks.is_some() { 0 } else { args.time },
        blocks: args.blocks.unwrap_or(0),
        omit: args.omit,
        bytes: args.bytes.unwrap_or(0),
        parallel: args.parallel,
        len,
        reverse: args.reverse,
        bidir: args.bidir,
        bandwidth: args.bitrate.unwrap_or(if args.udp { iperf::DEFAULT_UDP_RATE } else { 0 }),
        ..TestParams::default()
    })
}

fn perf<D: Device + Waitable>(
    mut lp: EventLoop<D>,
    args: &PerfArgs,
    label: &str,
    params: TestParams,
) -> Result<(), CliError> {
    let stop = StopSignal::install();
    // The server's banner comes back after each test, as iperf3's does (not with -1: it exits).
    let banner = (args.client.is_none() && !args.json).then_some(args.port);
    let mut out =
        Printer { json: args.json, client: args.client.is_some(), banner, intervals: Vec::new(), start: Value::Null };
    match args.client {
        None => {
            let mut server = iperf::IperfServer::listen(&mut lp.stack, args.port, args.one_off)
                .map_err(|source| CliError::Listen { port: args.port, source })?;
            // Static IPv6 addresses too (dual-stack: the listener takes both versions).
            let v6: String = args
                .dev
                .ip6
                .iter()
                .filter_map(|a| match a {
                    crate::device::Ip6Arg::Static(c) => Some(format!(" and [{}]:{}", c.addr, args.port)),
                    crate::device::Ip6Arg::Auto => None,
                })
                .collect();
            eprintln!("ustack: perf server on {label} {}:{}{v6}; Ctrl-C stops", args.dev.ip.addr, args.port);
            out.banner();
            if args.one_off {
                out.banner = None;
            }
            match iperf::run(&mut lp, &mut server, &stop, None, |e| out.event(e)) {
                RunEnd::DeviceFailed => Err(device_failed(&lp)),
                _ => Ok(()),
            }
        }
        Some(host) => {
            let server = SocketAddr::new(host, args.port);
            let limit = args.timeout.unwrap_or(u64::from(params.time) + u64::from(params.omit) + 30);
            let deadline = lp.clock.now() + ustack_core::Duration::from_secs(limit.min(1 << 32));
            let mut client = iperf::IperfClient::new(server, params, ustack_runtime::os_seed());
            let end = iperf::run(&mut lp, &mut client, &stop, Some(deadline), |e| out.event(e));
            match (end, client.error()) {
                (_, Some(e)) => Err(CliError::Perf(e.to_string())),
                (RunEnd::Finished, None) => Ok(()),
                (RunEnd::Stopped, None) => Err(CliError::Perf("interrupted".into())),
                (RunEnd::TimedOut, None) => {
                    Err(CliError::Perf(format!("the test did not finish within {limit} s (--timeout)")))
                }
                (RunEnd::DeviceFailed, None) => Err(device_failed(&lp)),
            }
        }
    }
}

/// What `--cores` does not do yet, as the error that says so.
fn sharded_unsupported(args: &PerfArgs) -> Option<&'static str> {
    if args.client.is_none() {
        Some("--cores runs the client only: drop --cores for -s")
    } else if args.udp {
        Some("--cores spreads TCP streams only: drop --cores for -u")
    } else if args.bytes.is_some() || args.blocks.is_some() {
        Some("--cores runs timed tests only: use -t instead of -n or -k")
    } else {
        None
    }
}

/// Shard 0's app: the client, its events printed as they come, given up at `deadline`.
struct ShardClient {
    client: iperf::IperfClient,
    out: Printer,
    deadline: ustack_core::Instant,
    shared: std::sync::Arc<iperf::StreamShards>,
    timed_out: bool,
}

impl App for ShardClient {
    fn poll(&mut self, stack: &mut ustack_core::Stack, now: ustack_core::Instant, events: &[ustack_core::Event]) {
        if self.finished() {
            return;
        }
        if now >= self.deadline {
            self.timed_out = true;
            self.shared.release();
            return;
        }
        self.client.poll(stack, now, events);
        while let Some(e) = iperf::PerfApp::next_event(&mut self.client) {
            self.out.event(e);
        }
    }

    fn next_deadline(&self) -> Option<ustack_core::Instant> {
        Some(self.client.next_deadline().map_or(self.deadline, |t| t.min(self.deadline)))
    }

    fn finished(&self) -> bool {
        self.timed_out || self.client.finished()
    }
}

/// A shard's apps: the client on shard 0, its streams on the others.
enum PerfShard {
    Client(Box<ShardClient>),
    Streams(Box<iperf::IperfStreams>),
}

struct PerfShards<'a> {
    args: &'a PerfArgs,
    settings: &'a crate::config::Settings,
    mac: ustack_wire::EthernetAddress,
    params: TestParams,
    shared: std::sync::Arc<iperf::StreamShards>,
    limit: u64,
}

impl ustack_runtime::shard::ShardSetup for PerfShards<'_> {
    type Device = ustack_device::DeviceChain;
    type Apps = PerfShard;
    /// (streams opened on the shard, the client's error: shard 0 only).
    type Summary = (usize, Option<CliError>);

    fn open(
        &self,
        env: &ustack_runtime::shard::ShardEnv,
    ) -> Result<(ustack_core::Stack, ustack_device::DeviceChain, PerfShard), String> {
        let opened = crate::shards::open_shard(&self.args.dev, self.settings, self.mac, env)?;
        let app = if env.index == 0 {
            let server = SocketAddr::new(self.args.client.expect("checked"), self.args.port);
            let seed = ustack_runtime::os_seed();
            let client = iperf::IperfClient::sharded(server, self.params.clone(), seed, self.shared.clone());
            let out =
                Printer { json: self.args.json, client: true, banner: None, intervals: Vec::new(), start: Value::Null };
            // The shard's loop clock starts when it does, at about this time.
            let deadline = ustack_core::Instant::ZERO + ustack_core::Duration::from_secs(self.limit.min(1 << 32));
            PerfShard::Client(Box::new(ShardClient {
                client,
                out,
                deadline,
                shared: self.shared.clone(),
                timed_out: false,
            }))
        } else {
            PerfShard::Streams(Box::new(iperf::IperfStreams::new(self.shared.clone(), env.index)))
        };
        Ok((opened.stack, opened.device, app))
    }

    fn apps<'a>(&self, apps: &'a mut PerfShard) -> Vec<&'a mut dyn App> {
        match apps {
            PerfShard::Client(c) => vec![c.as_mut()],
            PerfShard::Streams(s) => vec![s.as_mut()],
        }
    }

    fn finish(
        &self,
        _env: &ustack_runtime::shard::ShardEnv,
        _stack: &ustack_core::Stack,
        apps: PerfShard,
    ) -> Self::Summary {
        match apps {
            PerfShard::Client(c) => {
                let error = match (c.client.error(), c.timed_out, c.client.finished()) {
                    (Some(e), _, _) => Some(CliError::Perf(e.to_string())),
                    (None, true, _) => {
                        Some(CliError::Perf(format!("the test did not finish within {} s (--timeout)", self.limit)))
                    }
                    (None, false, true) => None,
                    (None, false, false) => Some(CliError::Perf("interrupted".into())),
                };
                (c.client.streams_opened(), error)
            }
            PerfShard::Streams(s) => (s.streams_opened(), None),
        }
    }
}

/// `ustack perf -c HOST --cores N`: one test whose data streams are spread
/// over N shards, each opened from a port that hashes back to its shard.
fn sharded_client(args: &PerfArgs, settings: &crate::config::Settings, params: TestParams) -> Result<(), CliError> {
    if let Some(why) = sharded_unsupported(args) {
        return Err(CliError::Perf(why.into()));
    }
    let cores = args.cores.assign();
    let limit = args.timeout.unwrap_or(u64::from(params.time) + u64::from(params.omit) + 30);
    let setup = PerfShards {
        args,
        settings,
        mac: args.dev.mac_or_random(ustack_runtime::os_seed()),
        params,
        shared: iperf::StreamShards::new(cores.len()),
        limit,
    };
    let stop = StopSignal::install();
    let ends = ustack_runtime::shard::run_shards(&setup, &cores, &ustack_core::rss::Toeplitz::default(), None, &stop)
        .map_err(CliError::DeviceFailed)?;
    if let Some(e) = crate::shards::failure(&ends) {
        return Err(e);
    }
    for (k, end) in ends.iter().enumerate() {
        let pairs: Vec<String> = end.handoffs.iter().map(|(n, v)| format!("{n} {v}")).collect();
        eprintln!("ustack: shard {k} (core {}): {} streams, {}", cores[k], end.summary.0, pairs.join(", "));
    }
    match ends.into_iter().next().and_then(|e| e.summary.1) {
        Some(e) => Err(e),
        None => Ok(()),
    }
}

/// The device's own account of why it stopped working.
pub fn device_failed<D: Device + Waitable>(lp: &EventLoop<D>) -> CliError {
    CliError::DeviceFailed(lp.device.failure().map_or_else(|| "the device failed".to_string(), |e| e.to_string()))
}

/// Prints events as iperf3 does: interval lines as they come and a summary,
/// or one JSON document at the end of each test.
struct Printer {
    json: bool,
    client: bool,
    /// The server's port, for its "Server listening" banner in plain output.
    banner: Option<u16>,
    intervals: Vec<Value>,
    start: Value,
}

impl Printer {
    fn banner(&self) {
        if let Some(port) = self.banner {
            println!("-----------------------------------------------------------");
            println!("Server listening on {port} (ustack)");
            println!("-----------------------------------------------------------");
            flush();
        }
    }

    fn event(&mut self, e: PerfEvent) {
        match e {
            PerfEvent::Started { peer, params, streams } => self.started(peer, &params, &streams),
            PerfEvent::Interval(iv) => self.interval(&iv),
            PerfEvent::Finished(report) => self.finished(&report),
            PerfEvent::Refused(peer) => {
                eprintln!("ustack: refused {} (busy running a test)", addr_or_unknown(peer));
            }
            PerfEvent::Aborted(why) => {
                eprintln!("ustack: test aborted: {why}");
                self.intervals.clear();
                self.banner();
            }
        }
    }

    fn started(&mut self, peer: Option<SocketAddr>, params: &TestParams, streams: &[StreamReport]) {
        self.intervals.clear();
        let connected: Vec<Value> = streams
            .iter()
            .map(|s| {
                json!({
                    "socket": s.id,
                    "local_host": s.local.map(|a| a.ip().to_string()),
                    "local_port": s.local.map(|a| a.port()),
                    "remote_host": s.remote.map(|a| a.ip().to_string()),
                    "remote_port": s.remote.map(|a| a.port()),
                })
            })
            .collect();
        self.start = json!({
            "connected": connected,
            "version": concat!("ustack ", env!("CARGO_PKG_VERSION")),
            "accepted_connection": peer.map(|p| json!({"host": p.ip().to_string(), "port": p.port()})),
            "test_start": {
                "protocol": if params.udp { "UDP" } else { "TCP" },
                "num_streams": params.parallel,
                "blksize": params.len,
                "omit": params.omit,
                "duration": params.time,
                "bytes": params.bytes,
                "blocks": params.blocks,
                "reverse": u8::from(params.reverse),
                "bidir": u8::from(params.bidir),
            },
        });
        if self.json {
            return;
        }
        match peer {
            Some(p) if self.client => println!("Connecting to host {}, port {}", p.ip(), p.port()),
            Some(p) => println!("Accepted connection from {}, port {}", p.ip(), p.port()),
            None => {}
        }
        for s in streams {
            println!(
                "[{:>3}] local {} port {} connected to {} port {}",
                s.id,
                s.local.map_or("?".into(), |a| a.ip().to_string()),
                s.local.map_or(0, |a| a.port()),
                s.remote.map_or("?".into(), |a| a.ip().to_string()),
                s.remote.map_or(0, |a| a.port()),
            );
        }
        println!("[ ID] Interval           Transfer     Bitrate");
        flush();
    }

    fn interval(&mut self, iv: &Interval) {
        let secs = (iv.end - iv.start).max(1e-9);
        let streams: Vec<Value> = iv
            .streams
            .iter()
            .map(|&(id, sender, bytes, packets)| {
                json!({
                    "socket": id, "start": iv.start, "end": iv.end, "seconds": secs, "bytes": bytes,
                    "bits_per_second": bytes as f64 * 8.0 / secs, "packets": packets, "omitted": false, "sender": sender,
                })
            })
            .collect();
        let total: u64 = iv.streams.iter().map(|s| s.2).sum();
        let sum = json!({
            "start": iv.start, "end": iv.end, "seconds": secs, "bytes": total,
            "bits_per_second": total as f64 * 8.0 / secs, "omitted": false,
        });
        if self.intervals.len() < MAX_INTERVALS {
            self.intervals.push(json!({ "streams": streams, "sum": sum }));
        }
        if self.json {
            return;
        }
        for &(id, _, bytes, _) in &iv.streams {
            println!("{}", line(&format!("{id:>3}"), iv.start, iv.end, bytes, ""));
        }
        if iv.streams.len() > 1 {
            println!("{}", line("SUM", iv.start, iv.end, total, ""));
        }
        flush();
    }

    fn finished(&mut self, r: &TestReport) {
        let end = end_json(r, self.client);
        if self.json {
            let doc = json!({ "start": self.start, "intervals": self.intervals, "end": end });
            println!("{}", serde_json::to_string_pretty(&doc).unwrap_or_default());
        } else {
            println!("- - - - - - - - - - - - - - - - - - - - - - - - -");
            let udp = r.params.udp;
            println!(
                "[ ID] Interval           Transfer     Bitrate{}",
                if udp { "         Jitter    Lost/Total Datagrams" } else { "" }
            );
            for s in &r.streams {
                let (sent, received) = stream_bytes(s);
                let secs = s.end.max(r.duration);
                let id = format!("{:>3}", s.id);
                let loss = if udp { udp_loss(s) } else { String::new() };
                println!("{}", line(&id, 0.0, secs, sent, "sender"));
                println!("{}{loss}", line(&id, 0.0, secs, received, "receiver"));
            }
            let sum_line = |key: &str, label: &str, role: &str| {
                let bytes = end[key]["bytes"].as_u64().unwrap_or(0);
                println!("{}", line(label, 0.0, r.duration, bytes, role));
            };
            if r.params.bidir {
                // As iperf3 does: one pair of sums per direction.
                let (fwd, rev) = if self.client { ("SUM][TX-C", "SUM][RX-C") } else { ("SUM][RX-S", "SUM][TX-S") };
                sum_line("sum_sent", fwd, "sender");
                sum_line("sum_received", fwd, "receiver");
                sum_line("sum_sent_bidir_reverse", rev, "sender");
                sum_line("sum_received_bidir_reverse", rev, "receiver");
            } else if r.streams.len() > 1 {
                sum_line("sum_sent", "SUM", "sender");
                sum_line("sum_received", "SUM", "receiver");
            }
            if self.client {
                println!("\niperf Done.");
            }
        }
        // One line a script can read without parsing either format: our own counts.
        eprintln!(
            "ustack: test done: {} bytes sent, {} bytes received by this side in {:.2} s",
            r.our_bytes(true),
            r.our_bytes(false),
            r.duration
        );
        self.intervals.clear();
        flush();
        self.banner();
    }
}

/// A UDP stream as iperf3 reports it: (jitter in seconds, datagrams lost,
/// datagrams in all). Loss and jitter are the receiver's, the packet count
/// the sender's, whichever side we were.
fn udp_view(s: &StreamReport) -> (f64, u64, u64) {
    match (&s.peer, s.sender) {
        (Some(p), true) => (p.jitter, p.errors, s.packets),
        (Some(p), false) => (s.jitter, s.lost, p.packets),
        (None, _) => (s.jitter, s.lost, s.packets),
    }
}

/// The receiver's `jitter  lost/total (percent)` for a UDP stream's summary line.
fn udp_loss(s: &StreamReport) -> String {
    let (jitter, lost, packets) = udp_view(s);
    let pct = if packets > 0 { lost as f64 * 100.0 / packets as f64 } else { 0.0 };
    format!("  {:.3} ms  {lost}/{packets} ({pct:.2}%)", jitter * 1000.0)
}

/// Intervals kept for the JSON document (a day of seconds).
const MAX_INTERVALS: usize = 86_400;

fn flush() {
    let _ = std::io::stdout().flush();
}

fn addr_or_unknown(a: Option<SocketAddr>) -> String {
    a.map_or("a client".into(), |a| a.to_string())
}

/// iperf3's interval line: `[  5]   0.00-1.00   sec   112 MBytes   941 Mbits/sec`.
fn line(id: &str, start: f64, end: f64, bytes: u64, role: &str) -> String {
    let secs = (end - start).max(1e-9);
    let role = if role.is_empty() { String::new() } else { format!("  {role}") };
    format!("[{id}] {:>6.2}-{:<6.2} sec  {}  {}{role}", start, end, transfer(bytes), bitrate(bytes as f64 * 8.0 / secs))
}

fn transfer(bytes: u64) -> String {
    let b = bytes as f64;
    let (v, unit) = if b >= 1024.0 * 1024.0 * 1024.0 {
        (b / (1024.0 * 1024.0 * 1024.0), "GBytes")
    } else if b >= 1024.0 * 1024.0 {
        (b / (1024.0 * 1024.0), "MBytes")
    } else if b >= 1024.0 {
        (b / 1024.0, "KBytes")
    } else {
        (b, "Bytes")
    };
    format!("{} {unit}", three_digits(v))
}

fn bitrate(bps: f64) -> String {
    let (v, unit) = if bps >= 1e9 {
        (bps / 1e9, "Gbits/sec")
    } else if bps >= 1e6 {
        (bps / 1e6, "Mbits/sec")
    } else if bps >= 1e3 {
        (bps / 1e3, "Kbits/sec")
    } else {
        (bps, "bits/sec")
    };
    format!("{} {unit}", three_digits(v))
}

/// iperf3 prints three significant digits: `941`, `94.1`, `9.41`.
fn three_digits(v: f64) -> String {
    if v >= 99.95 {
        format!("{v:>4.0}")
    } else if v >= 9.995 {
        format!("{v:>4.1}")
    } else {
        format!("{v:>4.2}")
    }
}

/// (sent, received) for one stream: our count on our side, the peer's on its side.
fn stream_bytes(s: &StreamReport) -> (u64, u64) {
    let peer = s.peer.as_ref().map_or(0, |p| p.bytes);
    if s.sender {
        (s.bytes, peer)
    } else {
        (peer, s.bytes)
    }
}

/// The `end` object in iperf3's shape. `sum_sent`/`sum_received` cover the
/// test's direction (client to server, or server to client with -R); with
/// --bidir, the server-to-client streams go in `*_bidir_reverse`, as iperf3 does.
fn end_json(r: &TestReport, client: bool) -> Value {
    let udp = r.params.udp;
    let secs = r.duration.max(1e-9);
    let forward = |s: &StreamReport| s.sender == client;
    let sums = |pick: &dyn Fn(&StreamReport) -> bool| -> (Value, Value, Option<Value>) {
        let picked: Vec<&StreamReport> = r.streams.iter().filter(|s| pick(s)).collect();
        let (sent, received) =
            picked.iter().map(|s| stream_bytes(s)).fold((0u64, 0u64), |(a, b), (x, y)| (a + x, b + y));
        let retrans: u64 = picked
            .iter()
            .map(|s| {
                if s.sender {
                    s.retransmits.unwrap_or(0)
                } else {
                    s.peer.as_ref().and_then(|p| p.retransmits).unwrap_or(0)
                }
            })
            .sum();
        let sum = |bytes: u64, sender: bool| {
            let mut v = json!({
                "start": 0, "end": r.duration, "seconds": r.duration, "bytes": bytes,
                "bits_per_second": bytes as f64 * 8.0 / secs, "sender": sender,
            });
            if sender && !udp {
                v["retransmits"] = json!(retrans);
            }
            v
        };
        let udp_sum = udp.then(|| udp_summary(&picked, secs));
        (sum(sent, true), sum(received, false), udp_sum)
    };
    let streams: Vec<Value> = r.streams.iter().map(|s| stream_json(s, r.duration, udp)).collect();
    let mut end = json!({ "streams": streams });
    let (sent, received, udp_sum) = if r.params.bidir { sums(&forward) } else { sums(&|_| true) };
    end["sum_sent"] = sent;
    end["sum_received"] = received;
    if let Some(u) = udp_sum {
        end["sum"] = u;
    }
    if r.params.bidir {
        let (sent, received, udp_sum) = sums(&|s| !forward(s));
        end["sum_sent_bidir_reverse"] = sent;
        end["sum_received_bidir_reverse"] = received;
        if let Some(u) = udp_sum {
            end["sum_bidir_reverse"] = u;
        }
    }
    let (host, remote) = (r.cpu, r.peer_cpu);
    end["cpu_utilization_percent"] = json!({
        "host_total": host[0], "host_user": host[1], "host_system": host[2],
        "remote_total": remote[0], "remote_user": remote[1], "remote_system": remote[2],
    });
    end
}

/// The UDP `sum`: the receiver's loss and jitter over the picked streams.
fn udp_summary(picked: &[&StreamReport], secs: f64) -> Value {
    let (mut bytes, mut packets, mut lost, mut jitter) = (0u64, 0u64, 0u64, 0f64);
    for s in picked {
        let (rx_jitter, rx_lost, tx_packets) = udp_view(s);
        bytes += s.bytes;
        packets += tx_packets;
        lost += rx_lost;
        jitter += rx_jitter;
    }
    let n = picked.len().max(1) as f64;
    json!({
        "start": 0, "end": secs, "seconds": secs, "bytes": bytes, "bits_per_second": bytes as f64 * 8.0 / secs,
        "jitter_ms": jitter / n * 1000.0, "lost_packets": lost, "packets": packets,
        "lost_percent": if packets > 0 { lost as f64 * 100.0 / packets as f64 } else { 0.0 },
    })
}

fn stream_json(s: &StreamReport, duration: f64, udp: bool) -> Value {
    let (sent, received) = stream_bytes(s);
    let secs = s.end.max(duration).max(1e-9);
    let side = |bytes: u64, sender: bool| {
        json!({
            "socket": s.id, "start": 0, "end": secs, "seconds": secs, "bytes": bytes,
            "bits_per_second": bytes as f64 * 8.0 / secs, "sender": sender,
        })
    };
    let mut v = json!({ "sender": side(sent, true), "receiver": side(received, false) });
    if udp {
        let (jitter, lost, packets) = udp_view(s);
        v["udp"] = json!({
            "socket": s.id, "start": 0, "end": secs, "seconds": secs, "bytes": s.bytes,
            "bits_per_second": s.bytes as f64 * 8.0 / secs, "jitter_ms": jitter * 1000.0,
            "lost_packets": lost, "packets": packets, "out_of_order": s.out_of_order,
            "lost_percent": if packets > 0 { lost as f64 * 100.0 / packets as f64 } else { 0.0 },
            "sender": s.sender,
        });
    }
    v
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn units() {
        assert_eq!(parse_bytes("10M"), Ok(10 * 1024 * 1024));
        assert_eq!(parse_bytes("128K"), Ok(128 * 1024));
        assert_eq!(parse_rate("50M"), Ok(50_000_000));
        assert_eq!(parse_rate("1.5G"), Ok(1_500_000_000));
        assert!(parse_rate("fast").is_err());
        assert!(parse_bytes("-1").is_err());
        assert_eq!(three_digits(941.2), " 941");
        assert_eq!(parse_host("[fd00::1]"), Ok("fd00::1".parse().unwrap()));
        assert_eq!(parse_host("fd00::1"), Ok("fd00::1".parse().unwrap()));
        assert_eq!(parse_host("10.0.0.1"), Ok("10.0.0.1".parse().unwrap()));
        assert!(parse_host("[10.0.0.1").is_err());
        assert_eq!(transfer(112 * 1024 * 1024), " 112 MBytes");
    }
}
