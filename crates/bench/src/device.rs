//! ustack on a real device against the Linux kernel, and the Linux baseline
//! over the same kind of path.
//!
//! - ustack: a private namespace holds the TAP; ustack serves on it (echo for
//!   rr and crr, a sink for stream) from the runtime's event loop, and the
//!   kernel client in the same namespace reaches it through the TAP.
//! - Linux: a kernel server in a second private namespace, reached by the same
//!   client through a veth pair with the TAP's MTU and the same offloads: by
//!   default the TAP has checksum offload and TSO/GRO through its vnet header
//!   and the veth keeps its own (64 KiB segments on both paths); with
//!   `tap:NAME,offload=off` the veth's checksum offload (and so TSO) is
//!   turned off too, and both paths carry MTU-sized frames.
//!
//! Both clients run in namespaces tuned the same way (`netns::tune_client`).
//! CPU time is the whole process's, so it covers the client's kernel work and
//! the server (ustack's event loop, or the kernel server's thread).

use crate::linux::{self, KernelServer};
use crate::netns;
use crate::report::{BenchPath, DeviceNotes, Figures, Report};
use crate::{Params, Workload};
use std::net::{IpAddr, Ipv6Addr, SocketAddr, TcpListener};
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread;
use ustack_core::phy::Device;
use ustack_core::{Event, Instant, Ipv4Cidr, Stack};
use ustack_runtime::apps::{TcpDiscard, TcpEcho, DEFAULT_MAX_CONNECTIONS};
use ustack_runtime::{App, EventLoop, StopSignal, Waitable};
use ustack_wire::Ipv6Cidr;

pub(crate) const PORT: u16 = 5001;
/// The veth ends: fixed names are safe, each lives in a private namespace.
pub(crate) const VETH_CLIENT: &str = "ubc0";
pub(crate) const VETH_SERVER: &str = "ubs0";

/// ustack's IPv6 address on the device in an IPv6 run (`Params::ip6`), and
/// the Linux server's on its veth: give it to the stack (`--ip6`).
pub const SERVER_IP6: Ipv6Cidr = Ipv6Cidr { addr: Ipv6Addr::new(0xfd00, 0, 0, 0x5001, 0, 0, 0, 2), prefix_len: 64 };
/// The kernel client's IPv6 address: on the TAP's kernel side, or its veth end.
pub const CLIENT_IP6: Ipv6Cidr = Ipv6Cidr { addr: Ipv6Addr::new(0xfd00, 0, 0, 0x5001, 0, 0, 0, 1), prefix_len: 64 };

/// Where the device run puts things.
#[derive(Clone, Debug)]
pub struct DeviceSetup {
    /// The device as the user named it (`tap:NAME`), for the report.
    pub device: String,
    /// ustack's address; the Linux server gets the same one on its veth.
    pub server: Ipv4Cidr,
    /// The kernel client's address: the TAP's kernel side, or its veth end.
    pub client: Ipv4Cidr,
}

impl DeviceSetup {
    /// Whether the device runs with its offloads (all but `…,offload=off`).
    pub fn offload(&self) -> bool {
        !self.device.split(',').any(|o| o == "offload=off")
    }
}

/// Run `workload` over ustack on the device that `open` makes, then over
/// Linux on a veth pair, and report them side by side.
///
/// `open` runs inside the private namespace and returns the stack on its
/// device, the device's kernel side already holding `setup.client`.
/// ustack runs first: a device that cannot be opened fails the run at once.
pub fn run_device<D, F>(workload: Workload, params: &Params, setup: &DeviceSetup, open: F) -> Result<Report, String>
where
    D: Device + Waitable,
    F: FnOnce() -> Result<(Stack, D), String> + Send,
{
    let (ustack, mtu, notes) = thread::scope(|s| {
        s.spawn(|| ustack_side(workload, params, setup, open))
            .join()
            .unwrap_or_else(|_| Err("the ustack run panicked".into()))
    })?;
    let params = Params { mtu, ..*params };
    let (linux, linux_retransmits) = thread::scope(|s| {
        s.spawn(|| linux_side(workload, &params, setup).map_err(|e| e.to_string()))
            .join()
            .unwrap_or_else(|_| Err("the Linux run panicked".into()))
    })?;
    let notes = DeviceNotes { client_retransmits: [notes.client_retransmits[0], linux_retransmits], ..notes };
    let path = BenchPath::Device { device: setup.device.clone(), notes };
    Ok(Report::new(workload, &params, ustack, linux).on(path))
}

/// On a fresh thread: the TAP's namespace, ustack's event loop on this
/// thread, the kernel client on another in the same namespace.
fn ustack_side<D, F>(
    workload: Workload,
    p: &Params,
    setup: &DeviceSetup,
    open: F,
) -> Result<(Figures, usize, DeviceNotes), String>
where
    D: Device + Waitable,
    F: FnOnce() -> Result<(Stack, D), String>,
{
    netns::enter_private().map_err(|e| e.to_string())?;
    netns::tune_client().map_err(|e| e.to_string())?;
    let (mut stack, device) = open()?;
    if p.ip6 {
        // The TAP's kernel side, made after tune_client turned IPv6 off by default.
        let tap = setup.device.strip_prefix("tap:").and_then(|r| r.split(',').next()).unwrap_or_default();
        enable_ipv6(tap, &CLIENT_IP6.to_string()).map_err(|e| e.to_string())?;
    }
    let mtu = stack.config().mtu;
    let listen = |e| format!("cannot listen on port {PORT}: {e}");
    let mut server: Box<dyn App> = match workload {
        Workload::Stream => Box::new(TcpDiscard::listen(&mut stack, PORT, DEFAULT_MAX_CONNECTIONS).map_err(listen)?),
        _ => Box::new(TcpEcho::listen(&mut stack, PORT, DEFAULT_MAX_CONNECTIONS).map_err(listen)?),
    };
    let addr = SocketAddr::new(server_ip(setup, p), PORT);
    let done = AtomicBool::new(false);
    let retransmits = netns::tcp_retransmits();
    let (figures, ustack_counters, device_counters) = thread::scope(|s| {
        let mut lp = EventLoop::new(stack, device);
        if p.ip6 {
            // Duplicate address detection first (about a second): the client
            // waits for the address, as the Linux client does for nothing.
            let mut settled = Settled { done: false, next: Instant::ZERO };
            let limit = lp.clock.now() + ustack_core::Duration::from_secs(10);
            lp.run_until(&mut [&mut settled], &StopSignal::unarmed(), Some(limit));
        }
        // Threads inherit the namespace of the thread that starts them.
        let client = s.spawn(|| {
            let f = linux::client(workload, addr, p);
            done.store(true, Ordering::SeqCst);
            f
        });
        let mut until = Until(&done);
        lp.run_until(&mut [server.as_mut(), &mut until], &StopSignal::unarmed(), None);
        let stack_counters = lp.stack.counters().iter().filter(|&(_, v)| v != 0).collect();
        let device_counters = lp.device.device_stats().into_iter().filter(|&(_, v)| v != 0).collect();
        let figures = client.join().unwrap_or_else(|_| Err(std::io::Error::other("the client panicked")));
        (figures, stack_counters, device_counters)
    });
    let client_retransmits = [delta(retransmits, netns::tcp_retransmits()), None];
    let notes = DeviceNotes { client_retransmits, ustack_counters, device_counters };
    figures.map(|f| (f, mtu, notes)).map_err(|e| format!("ustack on {}: {e}", setup.device))
}

fn delta(before: Option<u64>, after: Option<u64>) -> Option<u64> {
    after?.checked_sub(before?)
}

/// ustack's address for the run: IPv4, or IPv6 with `Params::ip6`.
fn server_ip(setup: &DeviceSetup, p: &Params) -> IpAddr {
    if p.ip6 {
        IpAddr::V6(SERVER_IP6.addr)
    } else {
        IpAddr::V4(setup.server.addr)
    }
}

/// Ends the event loop once the stack's IPv6 addresses are past duplicate
/// address detection.
struct Settled {
    done: bool,
    next: Instant,
}

impl App for Settled {
    fn poll(&mut self, stack: &mut Stack, now: Instant, _: &[Event]) {
        self.done = stack.ipv6().is_some_and(|l| l.settled_source(CLIENT_IP6.addr).is_some());
        // DAD's end is the stack's timer, not an event of ours: look again shortly.
        self.next = now + ustack_core::Duration::from_millis(5);
    }
    fn next_deadline(&self) -> Option<Instant> {
        Some(self.next)
    }
    fn finished(&self) -> bool {
        self.done
    }
}

/// Ends the event loop once the client is done.
pub(crate) struct Until<'a>(pub(crate) &'a AtomicBool);

impl App for Until<'_> {
    fn poll(&mut self, _: &mut Stack, _: Instant, _: &[Event]) {}
    fn finished(&self) -> bool {
        self.0.load(Ordering::SeqCst)
    }
}

/// On a fresh thread: the client's namespace; the kernel server in its own,
/// joined by a veth pair that the server's thread makes.
fn linux_side(workload: Workload, p: &Params, setup: &DeviceSetup) -> std::io::Result<(Figures, Option<u64>)> {
    netns::enter_private()?;
    netns::tune_client()?;
    let client_ns = netns::thread_id().to_string();
    let (server_cidr, client_cidr) = match p.ip6 {
        true => (SERVER_IP6.to_string(), CLIENT_IP6.to_string()),
        false => (setup.server.to_string(), setup.client.to_string()),
    };
    let mtu = p.mtu.to_string();
    let offload = setup.offload();
    let bind_to = SocketAddr::new(server_ip(setup, p), PORT);
    let server = KernelServer::spawn(workload, p.message, move || {
        netns::enter_private()?;
        #[rustfmt::skip]
        netns::ip(&["link", "add", VETH_SERVER, "mtu", &mtu, "type", "veth",
            "peer", "name", VETH_CLIENT, "mtu", &mtu, "netns", &client_ns])?;
        configure(VETH_SERVER, &server_cidr, offload)?;
        TcpListener::bind(bind_to)
    })?;
    let retransmits = netns::tcp_retransmits();
    let figures = configure(VETH_CLIENT, &client_cidr, offload).and_then(|()| linux::client(workload, server.addr, p));
    let stopped = server.stop();
    let figures = figures?;
    stopped?;
    Ok((figures, delta(retransmits, netns::tcp_retransmits())))
}

/// Address (IPv4, or IPv6 without DAD), checksum offload as on the TAP, link up.
pub(crate) fn configure(link: &str, cidr: &str, offload: bool) -> std::io::Result<()> {
    if cidr.contains(':') {
        enable_ipv6(link, cidr)?;
    } else {
        netns::ip(&["addr", "add", cidr, "dev", link])?;
    }
    if !offload {
        netns::ethtool(&["-K", link, "tx", "off"])?;
    }
    netns::ip(&["link", "set", link, "up"])
}

/// Kernel IPv6 on `link` (links made after `tune_client` start without it)
/// and `cidr` on it, usable at once (no DAD: the link is the bench's own).
fn enable_ipv6(link: &str, cidr: &str) -> std::io::Result<()> {
    let key = format!("/proc/sys/net/ipv6/conf/{link}/disable_ipv6");
    std::fs::write(&key, "0").map_err(|e| std::io::Error::new(e.kind(), format!("cannot set {key}: {e}")))?;
    netns::ip(&["-6", "addr", "add", cidr, "dev", link, "nodad"])
}
