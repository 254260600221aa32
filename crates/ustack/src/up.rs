//! `ustack up`: the stack on a TAP device, in the foreground.

use crate::config::ConfigArgs;
use crate::device::DeviceArgs;
use crate::error::CliError;
use clap::Args;
use ustack_core::phy::Device;
use ustack_core::{Counters, Stack};
use ustack_runtime::apps::{HttpServer, HttpServerConfig, Site, TcpDiscard, TcpEcho, UdpEcho, DEFAULT_MAX_CONNECTIONS};
use ustack_runtime::{App, ControlAddr, ControlSocket, EventLoop, RunEnd, StopSignal, Waitable};

#[derive(Args, Debug)]
pub struct UpArgs {
    #[command(flatten)]
    pub dev: DeviceArgs,
    #[command(flatten)]
    pub cfg: ConfigArgs,
    /// Control socket for `ustack stats` (default: the abstract socket @ustack/NAME of this network namespace).
    #[arg(long, value_name = "PATH")]
    pub control: Option<std::path::PathBuf>,
    /// Serve UDP echo on this port (repeatable).
    #[arg(long = "udp-echo", value_name = "PORT", value_parser = clap::value_parser!(u16).range(1..))]
    pub udp_echo: Vec<u16>,
    /// Serve TCP echo on this port (repeatable).
    #[arg(long = "tcp-echo", value_name = "PORT", value_parser = clap::value_parser!(u16).range(1..))]
    pub tcp_echo: Vec<u16>,
    /// Serve TCP discard on this port: read and drop (repeatable).
    #[arg(long = "tcp-discard", value_name = "PORT", value_parser = clap::value_parser!(u16).range(1..))]
    pub tcp_discard: Vec<u16>,
    /// Serve the files under this directory over HTTP/1.1 (GET, HEAD; / is index.html).
    #[arg(long = "http-root", value_name = "DIR")]
    pub http_root: Option<std::path::PathBuf>,
    /// Connections each TCP service (echo, discard, HTTP) holds at once; more are reset and counted.
    #[arg(long = "max-connections", value_name = "N", default_value_t = DEFAULT_MAX_CONNECTIONS,
        value_parser = clap::builder::RangedU64ValueParser::<usize>::new().range(1..=1_000_000))]
    pub max_connections: usize,
    /// The port of the HTTP server (repeatable; default 80).
    #[arg(long = "http-port", value_name = "PORT", requires = "http_root",
        value_parser = clap::value_parser!(u16).range(1..))]
    pub http_port: Vec<u16>,
    /// Serve Prometheus metrics at http://ADDR:PORT/metrics on a kernel socket (e.g. 127.0.0.1:9100).
    #[arg(long, value_name = "ADDR:PORT")]
    pub metrics: Option<std::net::SocketAddr>,
    #[command(flatten)]
    pub cores: crate::shards::CoresArgs,
    /// With --cores: hand each TCP echo connection to the next shard every BYTES bytes it echoes
    /// (moving connections between shards under load: a demonstration and a test).
    #[arg(long = "move-every", value_name = "BYTES", requires = "cores",
        value_parser = clap::value_parser!(u64).range(1..))]
    pub move_every: Option<u64>,
}

/// The services `up` runs, in the order they were set up.
pub(crate) struct Services {
    udp_echo: Vec<UdpEcho>,
    tcp_echo: Vec<TcpEcho>,
    tcp_discard: Vec<TcpDiscard>,
    http: Vec<HttpServer>,
}

pub fn run(args: UpArgs) -> Result<(), CliError> {
    let settings = args.cfg.load()?;
    args.dev.check()?;
    // Check the web root before touching any device.
    args.http_root.as_ref().map(Site::dir).transpose()?;
    if args.cores.sharded() {
        return crate::shards::up(&args, &settings);
    }
    let opened = args.dev.open(&settings)?;
    let (label, device, mut stack, mac) = (opened.label, opened.device, opened.stack, opened.mac);
    let services = Services::start(&mut stack, &args, &settings)?;
    let control_addr = control_addr(&args, &label);
    let mut control = ControlSocket::bind(&control_addr)
        .map_err(|source| CliError::Control { addr: control_addr.to_string(), source })?;
    // What the stack runs with, read back from the stack itself.
    let mut effective = settings;
    effective.stack = stack.config().clone();
    control.set_config(effective.to_json());
    if let Some(addr) = args.metrics {
        let bound = crate::metrics::serve(addr, control_addr.clone())?;
        eprintln!("ustack: Prometheus metrics at http://{bound}/metrics");
    }
    let banner = format!("ustack: up on {label} as {} ({mac}); Ctrl-C stops", args.dev.ip);
    let root = args.http_root.as_ref().map(|r| r.display().to_string()).unwrap_or_default();
    serve(stack, device, services, (control, label), &banner, &root)
}

/// Where `ustack stats` finds this stack.
pub(crate) fn control_addr(args: &UpArgs, label: &str) -> ControlAddr {
    match &args.control {
        Some(p) => ControlAddr::Path(p.clone()),
        None => ControlAddr::Device(control_name(label)),
    }
}

impl Services {
    /// Bind and listen for every service `args` asks for, on `stack`.
    pub(crate) fn start(
        stack: &mut Stack,
        args: &UpArgs,
        settings: &crate::config::Settings,
    ) -> Result<Services, CliError> {
        let http_root = args.http_root.as_ref();
        let mut services =
            Services { udp_echo: Vec::new(), tcp_echo: Vec::new(), tcp_discard: Vec::new(), http: Vec::new() };
        Self::listen_all(stack, args, settings, http_root, &mut services)?;
        Ok(services)
    }

    /// Hand each TCP echo connection to the next shard every `bytes` echoed.
    pub(crate) fn move_echo_every(&mut self, mover: &ustack_runtime::shard::Mover, bytes: u64) {
        self.tcp_echo =
            std::mem::take(&mut self.tcp_echo).into_iter().map(|e| e.move_every(mover.clone(), bytes)).collect();
    }

    /// The services as the event loop polls them.
    pub(crate) fn apps(&mut self) -> Vec<&mut dyn App> {
        let Services { udp_echo, tcp_echo, tcp_discard, http } = self;
        let mut apps: Vec<&mut dyn App> = Vec::new();
        apps.extend(udp_echo.iter_mut().map(|a| a as &mut dyn App));
        apps.extend(tcp_echo.iter_mut().map(|a| a as &mut dyn App));
        apps.extend(tcp_discard.iter_mut().map(|a| a as &mut dyn App));
        apps.extend(http.iter_mut().map(|a| a as &mut dyn App));
        apps
    }

    /// What the services did, one `name value` line each.
    pub(crate) fn report(&self) -> Vec<(String, u64)> {
        let mut lines = Vec::new();
        for e in &self.udp_echo {
            lines.push((format!("udp_echo_{}_datagrams", e.port()), e.echoed));
            // Replies the socket's send queue had no room for: lost here, not
            // in the stack, so no stack counter saw them.
            lines.push((format!("udp_echo_{}_dropped", e.port()), e.dropped));
        }
        for e in &self.tcp_echo {
            lines.push((format!("tcp_echo_{}_bytes", e.port()), e.echoed));
            if e.is_moving() {
                lines.push((format!("tcp_echo_{}_moved", e.port()), e.moved.0));
                lines.push((format!("tcp_echo_{}_moves_refused", e.port()), e.moved.1));
            }
        }
        for d in &self.tcp_discard {
            lines.push((format!("tcp_discard_{}_bytes", d.port()), d.discarded));
        }
        for h in &self.http {
            lines.push((format!("http_{}_requests", h.port()), h.stats.requests));
            let f = h.fairness();
            let (_, refused) = h.accepted();
            for (what, n) in [
                ("request_timeouts", f.request_timeouts),
                ("idle_timeouts", f.idle_timeouts),
                ("evicted", f.evicted),
                ("refused", refused),
            ] {
                lines.push((format!("http_{}_{what}", h.port()), n));
            }
        }
        lines
    }

    /// The banner lines naming each service.
    pub(crate) fn describe(&self, http_root: &str) {
        for e in &self.udp_echo {
            eprintln!("ustack: UDP echo on port {}", e.port());
        }
        for e in &self.tcp_echo {
            eprintln!("ustack: TCP echo on port {}", e.port());
        }
        for d in &self.tcp_discard {
            eprintln!("ustack: TCP discard on port {}", d.port());
        }
        for h in &self.http {
            eprintln!("ustack: HTTP on port {} serving {http_root}", h.port());
        }
    }

    fn listen_all(
        stack: &mut Stack,
        args: &UpArgs,
        settings: &crate::config::Settings,
        http_root: Option<&std::path::PathBuf>,
        services: &mut Services,
    ) -> Result<(), CliError> {
        for &port in &args.udp_echo {
            services.udp_echo.push(UdpEcho::bind(stack, port).map_err(|source| CliError::Bind { port, source })?);
        }
        let listen = |port, source| CliError::Listen { port, source };
        for &port in &args.tcp_echo {
            services.tcp_echo.push(TcpEcho::listen(stack, port, args.max_connections).map_err(|e| listen(port, e))?);
        }
        for &port in &args.tcp_discard {
            let app = TcpDiscard::listen(stack, port, args.max_connections).map_err(|e| listen(port, e))?;
            services.tcp_discard.push(app);
        }
        if let Some(root) = http_root {
            let ports = if args.http_port.is_empty() { vec![80] } else { args.http_port.clone() };
            for port in ports {
                let site = Site::dir(root)?;
                let config = HttpServerConfig { max_connections: args.max_connections, ..settings.http };
                let app = HttpServer::listen(stack, port, site, config).map_err(|e| listen(port, e))?;
                services.http.push(app);
            }
        }
        Ok(())
    }
}

/// The name `ustack stats` finds the control socket under: the interface
/// name alone for a TAP (as before device specs), the spec's name otherwise.
pub fn control_name(label: &str) -> String {
    let name = label.split_once(':').map_or(label, |(_, n)| n);
    name.split(',').next().unwrap_or(name).to_string()
}

/// Everything is set up when this runs: only now does ustack say it is up.
fn serve<D: Device + Waitable>(
    stack: Stack,
    device: D,
    mut services: Services,
    control: (ControlSocket, String),
    banner: &str,
    http_root: &str,
) -> Result<(), CliError> {
    // The handlers first: whoever reads the banner may signal at once, and
    // a SIGINT before them would kill the process without its counters.
    let stop = StopSignal::install();
    eprintln!("{banner}");
    services.describe(http_root);
    let mut lp = EventLoop::new(stack, device);
    lp.control = Some(control);
    let mut apps = services.apps();
    let end = lp.run_until(&mut apps, &stop, None);
    drop(apps);
    if end == RunEnd::DeviceFailed {
        print_counters(lp.stack.counters());
        let why = lp.device.failure().map_or_else(|| "the device failed".to_string(), |e| e.to_string());
        return Err(CliError::DeviceFailed(why));
    }
    print_counters(lp.stack.counters());
    for (name, n) in services.report() {
        println!("  {name:<32} {n}");
    }
    Ok(())
}

/// The counters a person wants after a run: everything that is not zero.
pub fn print_counters(c: &Counters) {
    println!("counters:");
    for (name, value) in c.iter().filter(|&(_, v)| v != 0) {
        println!("  {name:<32} {value}");
    }
}
