//! Process to process over a veth pair: ustack↔ustack beside Linux↔Linux.
//!
//! What a user of a kernel-bypass device wants to know: two programs on
//! ustack, each in its own process on its own end of a link, against two
//! programs on Linux over the same kind of link. Topology, made fresh for
//! each side in private namespaces that vanish with their threads:
//!
//! ```text
//!   client thread (namespace C)            server thread (namespace S)
//!   upc0 ─────────────── veth ─────────────── ups0
//!   ustack: this process, KIND:upc0         ustack: `ustack up --device KIND:ups0`
//!   Linux:  kernel socket, 10.0.0.1         Linux:  `ustack bench --kernel-server`
//! ```
//!
//! The server is a child process started from the server thread (a child
//! inherits the namespace of the thread that starts it). CPU time per
//! operation adds the client's (this process) and the server child's. The
//! Linux veth ends run with checksum offload (and so TSO) off, as ustack's
//! devices have none: both sides carry MTU-sized frames whose checksums
//! software computes. With `offloads` both keep them: Linux moves 64 KiB
//! segments through the veth, and ustack does too where its device speaks
//! the virtio-net header (af_packet; not af_xdp).

use crate::client::Client;
use crate::netns;
use crate::report::{BenchPath, DeviceNotes, Figures, Report};
use crate::{Params, Workload};
use std::io::{BufRead, BufReader};
use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::thread;
use std::time::Duration;
use ustack_core::{Ipv4Cidr, Stack, StackConfig};
use ustack_device::DeviceSpec;
use ustack_runtime::{EventLoop, StopSignal, Waitable};
use ustack_wire::EthernetAddress;

pub(crate) const PORT: u16 = 5001;
const CLIENT_IF: &str = "upc0";
const SERVER_IF: &str = "ups0";
pub(crate) const CLIENT_IP: Ipv4Addr = Ipv4Addr::new(10, 0, 0, 1);
pub(crate) const SERVER_IP: Ipv4Addr = Ipv4Addr::new(10, 0, 0, 2);
/// How long a server child may take to say it is up.
const START_LIMIT: Duration = Duration::from_secs(10);

/// What the process-to-process run needs.
#[derive(Clone, Debug)]
pub struct P2pSetup {
    /// The device kind and options as the user wrote them (`af_packet:x,ring=…`);
    /// the name is replaced by the veth ends the bench makes.
    pub device: DeviceSpec,
    /// The `ustack` binary, for the server processes.
    pub ustack_bin: PathBuf,
    /// Keep the kernel's offloads (checksum, TSO, GRO) on the veth ends, for
    /// both stacks; off by default, as on the TAP comparison.
    pub offloads: bool,
}

/// Run `workload` ustack↔ustack and Linux↔Linux across two processes, then
/// the kernel's client against ustack's server and against Linux's: two
/// reports, process to process first.
pub fn run_p2p(workload: Workload, params: &Params, setup: &P2pSetup) -> Result<Vec<Report>, String> {
    let run = |server_ustack, client_ustack| {
        thread::scope(|s| {
            s.spawn(|| side(workload, params, setup, server_ustack, client_ustack))
                .join()
                .unwrap_or_else(|_| Err("a bench thread panicked".into()))
        })
    };
    let both_ustack = run(true, true)?;
    let both_linux = run(false, false)?;
    let kernel_to_ustack = run(true, false)?;
    let device = match setup.offloads {
        true => format!("{} (veth offloads on for both stacks)", setup.device),
        false => format!("{} (veth checksum offload off for both stacks)", setup.device),
    };
    let kernel_client = BenchPath::Device { device: device.clone(), notes: DeviceNotes::default() };
    Ok(vec![
        Report::new(workload, params, both_ustack, both_linux.clone()).on(BenchPath::Processes { device }),
        Report::new(workload, params, kernel_to_ustack, both_linux).on(kernel_client),
    ])
}

/// One side, on a fresh thread that becomes the client's namespace.
fn side(
    workload: Workload,
    p: &Params,
    setup: &P2pSetup,
    server_ustack: bool,
    client_ustack: bool,
) -> Result<Figures, String> {
    netns::enter_private().map_err(|e| e.to_string())?;
    netns::tune_client().map_err(|e| e.to_string())?;
    let client_ns = netns::thread_id().to_string();
    let (tx, rx) = mpsc::channel::<Result<u32, String>>();
    let (stop_tx, stop_rx) = mpsc::channel::<()>();
    let server_spec = spec_on(&setup.device, SERVER_IF).to_string();
    let bin = setup.ustack_bin.clone();
    let (mtu, message, offloads) = (p.mtu, p.message, setup.offloads);
    let server = thread::spawn(move || -> Result<u64, String> {
        let child = (|| {
            netns::enter_private().map_err(|e| e.to_string())?;
            let mtu = mtu.to_string();
            #[rustfmt::skip]
            netns::ip(&["link", "add", SERVER_IF, "mtu", &mtu, "type", "veth",
                "peer", "name", CLIENT_IF, "mtu", &mtu, "netns", &client_ns]).map_err(|e| e.to_string())?;
            configure(SERVER_IF, (!server_ustack).then_some(SERVER_IP), offloads)?;
            spawn_server(&bin, workload, message, &server_spec, server_ustack)
        })();
        let mut child = match child {
            Ok(c) => {
                let _ = tx.send(Ok(c.id()));
                c
            }
            Err(e) => {
                let _ = tx.send(Err(e));
                return Ok(0);
            }
        };
        let _ = stop_rx.recv();
        let cpu = child_cpu_ns(child.id());
        let _ = Command::new("kill").args(["-INT", &child.id().to_string()]).status();
        let _ = wait_bounded(&mut child, Duration::from_secs(5));
        Ok(cpu)
    });
    let started = rx.recv().map_err(|_| "the server thread ended early".to_string())?;
    let result = started.and_then(|pid| {
        configure(CLIENT_IF, (!client_ustack).then_some(CLIENT_IP), setup.offloads)?;
        let server_cpu0 = child_cpu_ns(pid);
        let cpu0 = crate::cpu_time();
        let figures = if client_ustack {
            ustack_client(workload, p, spec_on(&setup.device, CLIENT_IF))
        } else {
            kernel_client(workload, p)
        };
        let cpu = crate::cpu_time() - cpu0;
        let server_cpu = child_cpu_ns(pid).saturating_sub(server_cpu0);
        figures.map(|f| Figures { cpu: cpu + Duration::from_nanos(server_cpu), ..f })
    });
    let _ = stop_tx.send(());
    server.join().unwrap_or_else(|_| Err("the server thread panicked".into()))?;
    let who = match (server_ustack, client_ustack) {
        (true, true) => format!("ustack to ustack on {}", setup.device.kind.as_str()),
        (true, false) => format!("kernel client to ustack on {}", setup.device.kind.as_str()),
        _ => "Linux to Linux on veth".to_string(),
    };
    result.map_err(|e| format!("{who}: {e}"))
}

/// The user's spec with the bench's interface name in it.
fn spec_on(spec: &DeviceSpec, name: &str) -> DeviceSpec {
    DeviceSpec { name: name.to_owned(), ..spec.clone() }
}

/// Kernel IPv6 off (no ND/MLD chatter to count), checksum offload (and so
/// TSO) off unless `offloads`, an address only for a kernel end, link up.
fn configure(link: &str, ip: Option<Ipv4Addr>, offloads: bool) -> Result<(), String> {
    let e = |e: std::io::Error| e.to_string();
    let _ = std::fs::write(format!("/proc/sys/net/ipv6/conf/{link}/disable_ipv6"), "1");
    if let Some(ip) = ip {
        netns::ip(&["addr", "add", &format!("{ip}/24"), "dev", link]).map_err(e)?;
    }
    if !offloads {
        netns::ethtool(&["-K", link, "tx", "off"]).map_err(e)?;
    }
    netns::ip(&["link", "set", link, "up"]).map_err(e)
}

/// `ustack up` (echo, or discard for stream) or the kernel server, as a
/// child of this thread; returns once it serves.
fn spawn_server(bin: &PathBuf, workload: Workload, message: usize, spec: &str, ustack: bool) -> Result<Child, String> {
    let mut cmd = Command::new(bin);
    if ustack {
        ustack_server_args(&mut cmd, workload, spec);
        spawn_until(cmd, "the server", "on port")
    } else {
        kernel_server_args(&mut cmd, workload, message, SocketAddrV4::new(SERVER_IP, PORT));
        spawn_until(cmd, "the server", "kernel server on")
    }
}

/// `up --device SPEC --ip SERVER_IP/24`, discarding (stream) or echoing on PORT.
pub(crate) fn ustack_server_args(cmd: &mut Command, workload: Workload, spec: &str) {
    let service = if workload == Workload::Stream { "--tcp-discard" } else { "--tcp-echo" };
    cmd.args(["up", "--device", spec, "--ip", &format!("{SERVER_IP}/24"), service, &PORT.to_string()]);
}

/// `bench WORKLOAD --message N --kernel-server ADDR`: the Linux server.
pub(crate) fn kernel_server_args(cmd: &mut Command, workload: Workload, message: usize, addr: SocketAddrV4) {
    cmd.args(["bench", workload.name(), "--message", &message.to_string(), "--kernel-server", &addr.to_string()]);
}

/// Start `cmd` (`what`, for errors) and return once a line of its standard
/// error holds `ready` (within START_LIMIT); its error output if it exits first.
pub(crate) fn spawn_until(mut cmd: Command, what: &str, ready: &'static str) -> Result<Child, String> {
    let bin = cmd.get_program().to_string_lossy().into_owned();
    cmd.stdin(Stdio::null()).stdout(Stdio::null()).stderr(Stdio::piped());
    let mut child = cmd.spawn().map_err(|e| format!("cannot start {bin}: {e}"))?;
    let mut lines = BufReader::new(child.stderr.take().expect("piped"));
    let (tx, rx) = mpsc::channel();
    thread::spawn(move || {
        let mut seen = String::new();
        let mut line = String::new();
        while lines.read_line(&mut line).map(|n| n > 0).unwrap_or(false) {
            if line.contains(ready) {
                let _ = tx.send(Ok(()));
            }
            seen.push_str(&line);
            line.clear();
        }
        let _ = tx.send(Err(seen));
    });
    match rx.recv_timeout(START_LIMIT) {
        Ok(Ok(())) => Ok(child),
        Ok(Err(stderr)) => {
            let _ = child.kill();
            let _ = child.wait();
            Err(format!("{what} exited: {}", stderr.trim()))
        }
        Err(_) => {
            let _ = child.kill();
            let _ = child.wait();
            Err(format!("{what} did not start within {START_LIMIT:?}"))
        }
    }
}

/// ustack on `spec` (the client's veth end, a switch port) as CLIENT_IP,
/// driven by the runtime's event loop.
pub(crate) fn ustack_client(workload: Workload, p: &Params, spec: DeviceSpec) -> Result<Figures, String> {
    let device = spec.open().map_err(|e| e.to_string())?;
    let mut cfg = StackConfig::new(EthernetAddress([2, 0, 0, 0, 0, 1]), Ipv4Cidr::new(CLIENT_IP, 24).expect("valid"));
    cfg.mtu = ustack_core::phy::Device::caps(&device).mtu;
    if workload == Workload::Crr {
        // As tcp_tw_reuse lets the kernel client reuse ports at once.
        cfg.tcp.time_wait = ustack_core::Duration::from_millis(10);
    }
    if let Some(size) = p.send_buffer {
        cfg.tcp.send_buffer_size = size;
    }
    let mut lp = EventLoop::new(Stack::new(cfg, 1), device);
    let mut client = Client::new(workload, SocketAddrV4::new(SERVER_IP, PORT), p);
    lp.run_until(&mut [&mut client], &StopSignal::unarmed(), None);
    if let Some(e) = lp.device.failure() {
        return Err(e.to_string());
    }
    client.figures()
}

fn kernel_client(workload: Workload, p: &Params) -> Result<Figures, String> {
    let addr = SocketAddr::V4(SocketAddrV4::new(SERVER_IP, PORT));
    crate::linux::client(workload, addr, p).map_err(|e| e.to_string())
}

/// The kernel server for the Linux side's child process: serve on `addr`
/// until SIGINT or SIGTERM.
pub fn serve_kernel(workload: Workload, message: usize, addr: SocketAddrV4) -> Result<(), String> {
    let stop = StopSignal::install();
    let server = crate::linux::KernelServer::spawn(workload, message, move || std::net::TcpListener::bind(addr))
        .map_err(|e| format!("kernel server on {addr}: {e}"))?;
    eprintln!("ustack: kernel server on {}", server.addr);
    while !stop.raised() {
        thread::sleep(Duration::from_millis(20));
    }
    server.stop().map_err(|e| e.to_string())
}

/// User + system CPU of process `pid` so far, in nanoseconds (0 if gone).
pub(crate) fn child_cpu_ns(pid: u32) -> u64 {
    let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else { return 0 };
    // Fields after the command name (which may hold spaces) start at ')'.
    let rest = stat.rsplit_once(')').map_or("", |(_, r)| r);
    let f: Vec<&str> = rest.split_whitespace().collect();
    // utime and stime are fields 14 and 15 of the whole line: 12 and 13 here.
    let ticks: u64 = f.get(11).and_then(|u| u.parse::<u64>().ok()).unwrap_or(0)
        + f.get(12).and_then(|s| s.parse::<u64>().ok()).unwrap_or(0);
    // SAFETY: sysconf has no preconditions.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) }.max(1) as u64;
    ticks * 1_000_000_000 / hz
}

pub(crate) fn wait_bounded(child: &mut Child, limit: Duration) -> std::io::Result<()> {
    let deadline = std::time::Instant::now() + limit;
    while child.try_wait()?.is_none() {
        if std::time::Instant::now() >= deadline {
            let _ = child.kill();
            child.wait()?;
            break;
        }
        thread::sleep(Duration::from_millis(10));
    }
    Ok(())
}
