//! `idle`: N idle established connections and one active connection doing
//! 64-byte request/response, on ustack, smoltcp and Linux loopback sockets.
//!
//! What it answers: does an idle connection cost anything once it is open —
//! memory (bytes per connection) and time (the active connection's
//! request/response with N idle next to it, against the same with none).
//!
//! Method, per stack:
//! - **rr**: median wall-clock nanoseconds per request/response on the one
//!   active connection, with N idle (`rr_ns`) and with none (`rr_ns_zero`).
//!   ustack and smoltcp keep a second pair of stacks with no idle
//!   connections and alternate rounds between the two, so both figures see
//!   the same machine conditions. Linux has one kernel: its zero figure is
//!   taken half before the N are opened and half after they are closed,
//!   around the figure with N.
//! - **memory**: heap bytes in use (glibc `mallinfo2`: `uordblks + hblkhd`),
//!   divided by 2N — per connection *endpoint*, both ends of every
//!   connection live in this process (the same unit as
//!   `crates/core/tests/scale.rs`). ustack: what the pair with N idle costs
//!   (built and opened) less what the identical pair with none costs, so
//!   the link's frames, the listeners and the connection table's first page
//!   are not counted and everything the N brought is. smoltcp: the heap
//!   delta across creating and opening the N sockets. The resident-set delta
//!   (`/proc/self/statm`) the same way is given too, and the peak resident
//!   set of the whole process (`VmHWM`) after the ustack run. For Linux the
//!   connections live in the kernel: the figure is the system-wide `Slab`
//!   delta of `/proc/meminfo` divided by 2N, an approximation that other
//!   activity on the machine disturbs.
//! - **open**: wall-clock seconds to open (and accept) the N, and check that
//!   they are established.
//!
//! smoltcp visits every socket on every poll and on every arriving segment,
//! so its N is capped ([`IdleParams::smoltcp_max`]); Linux is capped by
//! [`IdleParams::linux_max`] (its connections are held by helper processes,
//! two descriptors each, within each one's `RLIMIT_NOFILE`). The report says
//! when a cap applied.

mod linux;
mod smol;
mod ustack;

pub use smol::SmoltcpIdle;
pub use ustack::{idle_ports, UstackIdle};

use crate::report::histogram;
use hdrhistogram::Histogram;
use std::time::{Duration, Instant};

/// What to run.
#[derive(Clone, Copy, Debug)]
pub struct IdleParams {
    /// Idle connections to open (ustack runs any N up to its table size).
    pub connections: usize,
    /// Measured time per figure (`rr_ns` and `rr_ns_zero` each get this much).
    pub duration: Duration,
    /// Request and response size.
    pub message: usize,
    /// Largest N smoltcp is run with; above it smoltcp runs at this N.
    pub smoltcp_max: usize,
    /// Largest N Linux is run with.
    pub linux_max: usize,
    /// Run smoltcp and Linux at all.
    pub baselines: bool,
}

impl Default for IdleParams {
    fn default() -> Self {
        IdleParams {
            connections: 10_000,
            duration: Duration::from_secs(2),
            message: 64,
            smoltcp_max: 10_000,
            linux_max: 100_000,
            baselines: true,
        }
    }
}

/// One stack's figures.
#[derive(Clone, Debug, Default)]
pub struct IdleFigures {
    /// Idle connections actually opened.
    pub connections: usize,
    /// Time to open (and accept) them.
    pub open: Duration,
    /// Memory per idle connection endpoint (see the module docs for the method).
    pub bytes_per_connection: f64,
    /// Resident-set growth per endpoint (`/proc/self/statm`); 0 for Linux.
    pub rss_bytes_per_connection: f64,
    /// Median ns per request/response with `connections` idle.
    pub rr_ns: u64,
    /// Median ns per request/response with none idle.
    pub rr_ns_zero: u64,
    /// Request/responses behind `rr_ns` and `rr_ns_zero`.
    pub rr_samples: u64,
    pub rr_samples_zero: u64,
    /// How `bytes_per_connection` was measured.
    pub memory_method: &'static str,
    /// Why N is smaller than asked, or anything else to know.
    pub note: Option<String>,
}

impl IdleFigures {
    pub fn ratio(&self) -> f64 {
        self.rr_ns as f64 / self.rr_ns_zero.max(1) as f64
    }

    fn json(&self) -> String {
        let mut o = format!(
            "{{\"connections\":{},\"open_seconds\":{:.6},\"bytes_per_connection\":{:.1},\"rss_bytes_per_connection\":{:.1},\"rr_ns\":{},\"rr_ns_zero\":{},\"rr_ratio\":{:.4},\"rr_samples\":{},\"rr_samples_zero\":{},\"memory_method\":\"{}\"",
            self.connections,
            self.open.as_secs_f64(),
            self.bytes_per_connection,
            self.rss_bytes_per_connection,
            self.rr_ns,
            self.rr_ns_zero,
            self.ratio(),
            self.rr_samples,
            self.rr_samples_zero,
            self.memory_method
        );
        if let Some(n) = &self.note {
            o.push_str(&format!(",\"note\":\"{}\"", json_escape(n)));
        }
        o.push('}');
        o
    }
}

/// A baseline's result: figures, or why there are none.
#[derive(Clone, Debug)]
pub enum Baseline {
    Ran(IdleFigures),
    Skipped(String),
    Failed(String),
}

impl Baseline {
    fn json(&self) -> String {
        match self {
            Baseline::Ran(f) => f.json(),
            Baseline::Skipped(why) => format!("{{\"skipped\":\"{}\"}}", json_escape(why)),
            Baseline::Failed(why) => format!("{{\"error\":\"{}\"}}", json_escape(why)),
        }
    }
}

pub struct IdleReport {
    pub params: IdleParams,
    pub ustack: IdleFigures,
    /// Peak resident set (VmHWM) after the ustack run, before the baselines.
    pub ustack_peak_rss: Option<u64>,
    pub smoltcp: Baseline,
    pub linux: Baseline,
}

/// Run the idle workload on ustack, then (unless `baselines` is off) smoltcp
/// and Linux.
pub fn run_idle(p: &IdleParams) -> Result<IdleReport, String> {
    let ustack = ustack::run(p)?;
    let ustack_peak_rss = peak_rss();
    let (smoltcp, linux) = if !p.baselines {
        let off = || Baseline::Skipped("baselines turned off".into());
        (off(), off())
    } else {
        (smol::run(p), linux::run(p))
    };
    Ok(IdleReport { params: *p, ustack, ustack_peak_rss, smoltcp, linux })
}

impl IdleReport {
    /// A table for people.
    pub fn table(&self) -> String {
        let mut s = format!(
            "idle: one connection doing {}-byte request/response next to N idle ones ({:.1} s per figure)\n",
            self.params.message,
            self.params.duration.as_secs_f64()
        );
        s.push_str(&format!(
            "  {:<8} {:>9} {:>10} {:>12} {:>12} {:>12} {:>12} {:>8}\n",
            "stack", "N", "open s", "bytes/conn", "RSS B/conn", "rr ns (N)", "rr ns (0)", "ratio"
        ));
        let mut notes = Vec::new();
        let rows = [
            ("ustack", Baseline::Ran(self.ustack.clone())),
            ("smoltcp", self.smoltcp.clone()),
            ("linux", self.linux.clone()),
        ];
        for (name, b) in rows {
            match b {
                Baseline::Ran(f) => {
                    s.push_str(&format!(
                        "  {:<8} {:>9} {:>10.3} {:>12.0} {:>12.0} {:>12} {:>12} {:>7.2}x\n",
                        name,
                        f.connections,
                        f.open.as_secs_f64(),
                        f.bytes_per_connection,
                        f.rss_bytes_per_connection,
                        f.rr_ns,
                        f.rr_ns_zero,
                        f.ratio()
                    ));
                    notes.push(format!("{name}: memory = {}", f.memory_method));
                    if let Some(n) = f.note {
                        notes.push(format!("{name}: {n}"));
                    }
                }
                Baseline::Skipped(why) => s.push_str(&format!("  {name:<8} skipped: {why}\n")),
                Baseline::Failed(why) => s.push_str(&format!("  {name:<8} failed: {why}\n")),
            }
        }
        if let Some(rss) = self.ustack_peak_rss {
            s.push_str(&format!("  peak RSS after the ustack run (VmHWM): {:.1} MiB\n", rss as f64 / (1 << 20) as f64));
        }
        s.push_str("  bytes/conn: per connection endpoint (both ends of each connection are in this process)\n");
        for n in notes {
            s.push_str(&format!("  {n}\n"));
        }
        s
    }

    /// One JSON object: ustack's figures at the top level (`connections`,
    /// `open_seconds`, `bytes_per_connection`, `rr_ns`, `rr_ns_zero`,
    /// `rr_ratio`, …, `peak_rss_bytes`), then `smoltcp` and `linux`.
    pub fn json(&self) -> String {
        let mut top = self.ustack.json();
        top.pop();
        format!(
            "{top},\"workload\":\"idle\",\"message\":{},\"peak_rss_bytes\":{},\"smoltcp\":{},\"linux\":{}}}",
            self.params.message,
            self.ustack_peak_rss.map_or("null".to_string(), |v| v.to_string()),
            self.smoltcp.json(),
            self.linux.json()
        )
    }
}

/// One request/response on a stack's active connection.
pub trait RequestResponse {
    fn request_response(&mut self) -> Result<(), String>;
}

/// Median ns per request/response of `idle` and of `zero`, measured in
/// alternating rounds for `duration` each.
pub(crate) fn measure_alternating(
    zero: &mut dyn RequestResponse,
    idle: &mut dyn RequestResponse,
    duration: Duration,
) -> Result<(Histogram<u64>, Histogram<u64>), String> {
    const ROUNDS: u32 = 5;
    let (mut hz, mut hi) = (histogram(), histogram());
    for _ in 0..ROUNDS {
        measure(zero, duration / ROUNDS, &mut hz)?;
        measure(idle, duration / ROUNDS, &mut hi)?;
    }
    Ok((hz, hi))
}

fn measure(side: &mut dyn RequestResponse, duration: Duration, h: &mut Histogram<u64>) -> Result<(), String> {
    // A few unmeasured exchanges warm the caches after the other side ran.
    for _ in 0..16 {
        side.request_response()?;
    }
    let start = Instant::now();
    while start.elapsed() < duration {
        let t = Instant::now();
        side.request_response()?;
        h.saturating_record(t.elapsed().as_nanos() as u64);
    }
    Ok(())
}

/// Heap bytes in use: glibc's `mallinfo2` (`uordblks + hblkhd`), or the
/// resident set where there is no glibc.
pub(crate) fn heap_in_use() -> u64 {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    {
        // SAFETY: mallinfo2 takes no arguments and returns a plain struct.
        let m = unsafe { libc::mallinfo2() };
        (m.uordblks + m.hblkhd) as u64
    }
    #[cfg(not(all(target_os = "linux", target_env = "gnu")))]
    {
        rss()
    }
}

/// How smoltcp's memory figure is taken.
pub(crate) const HEAP_METHOD: &str = if cfg!(all(target_os = "linux", target_env = "gnu")) {
    "heap delta (glibc mallinfo2 uordblks+hblkhd) / 2N"
} else {
    "resident set delta (/proc/self/statm) / 2N"
};

/// Resident set in bytes (`/proc/self/statm`, second field), 0 if unknown.
pub(crate) fn rss() -> u64 {
    let Ok(s) = std::fs::read_to_string("/proc/self/statm") else { return 0 };
    let pages: u64 = s.split_whitespace().nth(1).and_then(|v| v.parse().ok()).unwrap_or(0);
    // SAFETY: sysconf has no preconditions.
    let page = unsafe { libc::sysconf(libc::_SC_PAGESIZE) }.max(1) as u64;
    pages * page
}

/// Peak resident set (`VmHWM` in `/proc/self/status`) in bytes.
pub fn peak_rss() -> Option<u64> {
    proc_kib("/proc/self/status", "VmHWM:")
}

/// A `Name:   123 kB` line of a /proc file, in bytes.
pub(crate) fn proc_kib(path: &str, key: &str) -> Option<u64> {
    let s = std::fs::read_to_string(path).ok()?;
    let line = s.lines().find(|l| l.starts_with(key))?;
    let kib: u64 = line[key.len()..].split_whitespace().next()?.parse().ok()?;
    Some(kib * 1024)
}

/// Bytes per endpoint of `n` connections (two endpoints each).
pub(crate) fn per_endpoint(before: u64, after: u64, n: usize) -> f64 {
    (after as f64 - before as f64) / (2 * n.max(1)) as f64
}

fn json_escape(s: &str) -> String {
    s.replace('\\', "\\\\").replace('"', "\\\"")
}
