//! Side-by-side workloads: the same measurement over Linux kernel sockets
//! (loopback) and over ustack (two stacks on the in-memory link), in one run,
//! so the figure that matters is the ratio. [`run_device`] does the same
//! with ustack on a real device (a TAP) and Linux on a veth pair;
//! [`run_cores`] and [`run_device_cores`] on N cores, ustack as N shards.
//!
//! Workloads (netperf's vocabulary):
//! - `stream`: one connection, bulk data one way; throughput.
//! - `rr`: one connection, 64-byte request / 64-byte response; transactions
//!   per second and latency percentiles.
//! - `crr`: connect, 64-byte request, 64-byte response, close; connections
//!   per second and latency percentiles.
//!
//! Both sides are measured the way they would run: Linux with a client and a
//! server thread (the kernel adds its own softirq work on any core), ustack
//! with both stacks on the calling thread — one core for the whole exchange.
//! CPU time per transaction comes from getrusage over the whole process.

mod client;
mod cores;
mod device;
mod device_cores;
pub mod idle;
mod linux;
mod netns;
mod p2p;
mod report;
mod ustack;
mod vswitch;

pub use cores::{cores_json, cores_table, run_cores, CoresPoint, ShardShare};
pub use device::{run_device, DeviceSetup, CLIENT_IP6, SERVER_IP6};
pub use device_cores::run_device_cores;
pub use idle::{run_idle, IdleParams, IdleReport};
pub use p2p::{run_p2p, serve_kernel, P2pSetup};
pub use report::{BenchPath, DeviceNotes, Figures, Report};
pub use vswitch::{run_switch, SwitchSetup};

use std::time::Duration;

/// Which workload to run.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Workload {
    Stream,
    Rr,
    Crr,
}

impl Workload {
    pub fn name(self) -> &'static str {
        match self {
            Workload::Stream => "stream",
            Workload::Rr => "rr",
            Workload::Crr => "crr",
        }
    }
}

/// How long and how big.
#[derive(Clone, Copy, Debug)]
pub struct Params {
    /// Measured time per side (after a short warm-up).
    pub duration: Duration,
    /// Request and response size for rr/crr.
    pub message: usize,
    /// MTU of the in-memory link (Linux loopback's is 65536).
    pub mtu: usize,
    /// stream: bytes the application hands over per write (`write(2)` on
    /// Linux, `tcp_send` on ustack). Default 128 KiB.
    pub write_size: usize,
    /// stream: the sender's socket send buffer in bytes (Linux `SO_SNDBUF`,
    /// which the kernel doubles for its bookkeeping and floors at 4,608;
    /// ustack `tcp.send_buffer_size`). `None`: each stack's default (Linux
    /// autotunes, ustack 256 KiB).
    pub send_buffer: Option<usize>,
    /// Both stacks over IPv6: ustack's pair (or its device) on IPv6
    /// addresses, Linux on `::1` (or its veth pair with IPv6 addresses).
    pub ip6: bool,
}

/// stream's default write size.
pub const DEFAULT_WRITE_SIZE: usize = 128 * 1024;

impl Default for Params {
    fn default() -> Self {
        Params {
            duration: Duration::from_secs(3),
            message: 64,
            mtu: 1500,
            write_size: DEFAULT_WRITE_SIZE,
            send_buffer: None,
            ip6: false,
        }
    }
}

/// Run `workload` on both stacks and report them side by side.
pub fn run(workload: Workload, params: &Params) -> std::io::Result<Report> {
    let linux = linux::run(workload, params)?;
    let ustack = ustack::run(workload, params, true).map_err(std::io::Error::other)?;
    let mut report = Report::new(workload, params, ustack, linux);
    if workload == Workload::Stream {
        // The same stream without the link's TSO, for the difference it makes.
        report.ustack_no_tso = Some(ustack::run(workload, params, false).map_err(std::io::Error::other)?);
    }
    Ok(report)
}

/// CPU time (user + system) the process has used so far.
pub(crate) fn cpu_time() -> Duration {
    // SAFETY: getrusage writes into the zeroed struct we own.
    let mut ru: libc::rusage = unsafe { std::mem::zeroed() };
    unsafe { libc::getrusage(libc::RUSAGE_SELF, &mut ru) };
    let tv = |t: libc::timeval| Duration::new(t.tv_sec as u64, t.tv_usec as u32 * 1000);
    tv(ru.ru_utime) + tv(ru.ru_stime)
}
