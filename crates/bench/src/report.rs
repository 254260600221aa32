//! Figures for one side and the side-by-side report.

use crate::{Params, Workload};
use hdrhistogram::Histogram;
use std::time::Duration;

/// What one stack achieved on one workload.
#[derive(Clone, Debug, Default)]
pub struct Figures {
    /// Bytes moved (stream), or transactions/connections completed (rr/crr).
    pub count: u64,
    pub elapsed: Duration,
    pub cpu: Duration,
    /// Latency of each transaction in nanoseconds (rr/crr).
    pub latency_ns: Option<Histogram<u64>>,
}

impl Figures {
    pub fn per_second(&self) -> f64 {
        self.count as f64 / self.elapsed.as_secs_f64().max(1e-9)
    }
    pub fn cpu_ns_per_op(&self) -> f64 {
        self.cpu.as_nanos() as f64 / self.count.max(1) as f64
    }
    fn percentile_ns(&self, p: f64) -> Option<u64> {
        self.latency_ns.as_ref().map(|h| h.value_at_quantile(p))
    }
}

/// The path each side's traffic took.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub enum BenchPath {
    /// ustack: two stacks on the in-memory link; Linux: loopback.
    #[default]
    Memory,
    /// ustack on this device (`tap:NAME`) and Linux on a veth pair, each with
    /// the kernel client in a private namespace.
    Device { device: String, notes: DeviceNotes },
    /// Two processes on the two ends of a veth pair: ustack on this device
    /// kind at both ends, Linux's kernel sockets at both ends.
    Processes { device: String },
    /// Two processes on `virtio-user` ports of `ustack switch` (a third
    /// process); Linux: two processes over loopback. `pin`: the switch's
    /// CPU, and the CPU both ends (of each side) were pinned to.
    Switch { pin: Option<(usize, usize)> },
}

/// What else a device run saw: a figure earned while packets were lost is
/// not the same figure.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct DeviceNotes {
    /// Segments the kernel client retransmitted (its namespace's
    /// `RetransSegs`) on ustack's path and on Linux's.
    pub client_retransmits: [Option<u64>; 2],
    /// ustack's counters that are not zero after the run.
    pub ustack_counters: Vec<(&'static str, u64)>,
    /// Its device's counters that are not zero after the run.
    pub device_counters: Vec<(&'static str, u64)>,
}

impl DeviceNotes {
    /// The counters that say something was lost or refused.
    fn losses(&self) -> impl Iterator<Item = &(&'static str, u64)> {
        let lossy = |(n, _): &&(&str, u64)| ["drop", "full", "error"].iter().any(|w| n.contains(w));
        self.ustack_counters.iter().chain(&self.device_counters).filter(lossy)
    }
}

impl BenchPath {
    /// The kind of path ustack ran on, and Linux's: the JSON's `path` and `linux_path`.
    fn names(&self) -> (&str, &'static str) {
        match self {
            BenchPath::Memory => ("memory", "loopback"),
            BenchPath::Switch { .. } => ("virtio-user", "loopback"),
            BenchPath::Device { device, .. } | BenchPath::Processes { device } => {
                (device.split_once(':').map_or(device.as_str(), |(kind, _)| kind), "veth")
            }
        }
    }
}

pub struct Report {
    pub workload: Workload,
    pub params: Params,
    pub path: BenchPath,
    pub ustack: Figures,
    pub linux: Figures,
    /// In-memory stream only: ustack again with the link's TSO and
    /// coalesced receive off (`ustack` has them on).
    pub ustack_no_tso: Option<Figures>,
}

impl Report {
    pub(crate) fn new(workload: Workload, params: &Params, ustack: Figures, linux: Figures) -> Report {
        Report { workload, params: *params, path: BenchPath::Memory, ustack, linux, ustack_no_tso: None }
    }

    /// The same figures, measured on `path`.
    pub(crate) fn on(self, path: BenchPath) -> Report {
        Report { path, ..self }
    }

    /// ustack over Linux on the workload's main figure (throughput, or rate).
    pub fn ratio(&self) -> f64 {
        self.ustack.per_second() / self.linux.per_second().max(1e-9)
    }

    /// The unit of [`Report::main_figure`].
    pub fn unit(&self) -> &'static str {
        match self.workload {
            Workload::Stream => "Gbit/s",
            Workload::Rr => "transactions/s",
            Workload::Crr => "connections/s",
        }
    }

    /// The workload's headline figure for `f` (Gbit/s for stream, else per second).
    pub fn main_figure(&self, f: &Figures) -> f64 {
        match self.workload {
            Workload::Stream => f.per_second() * 8.0 / 1e9,
            _ => f.per_second(),
        }
    }

    /// A table for people.
    pub fn table(&self) -> String {
        let mut s = String::new();
        let p = &self.params;
        let path = match &self.path {
            BenchPath::Memory if self.ustack_no_tso.is_some() => {
                format!("in-memory link MTU {} with TSO/GRO (no-tso: without); Linux on loopback", p.mtu)
            }
            BenchPath::Memory => format!("in-memory link MTU {}; Linux on loopback", p.mtu),
            BenchPath::Device { device, .. } if device.contains("(veth") => {
                format!("ustack on {device} as the server, Linux on a veth pair, MTU {}; kernel client for both", p.mtu)
            }
            BenchPath::Device { device, .. } => format!(
                "ustack on {device}, Linux on a veth pair, MTU {}, {}; kernel client for both",
                p.mtu,
                if device.split(',').any(|o| o == "offload=off") {
                    "no checksum offload or TSO"
                } else {
                    "checksum offload and TSO/GRO on both"
                }
            ),
            BenchPath::Switch { pin } => format!(
                "process to process: ustack on virtio-user ports of `ustack switch` at both ends, MTU {}; Linux \
                 sockets at both ends over loopback; CPU adds the switch's{}",
                p.mtu,
                pin.map_or(String::new(), |(sw, ends)| format!(
                    "; the switch on CPU {sw}, both ends of each side on CPU {ends}"
                ))
            ),
            BenchPath::Processes { device } => format!(
                "process to process over a veth pair, MTU {}: ustack on {device} at both ends; Linux sockets at \
                 both ends",
                p.mtu
            ),
        };
        let sizes = match (self.workload, p.send_buffer) {
            (Workload::Stream, None) => format!("{}-byte writes", p.write_size),
            (Workload::Stream, Some(b)) => format!("{}-byte writes, {b}-byte send buffer", p.write_size),
            _ => format!("{}-byte messages", p.message),
        };
        let ip = if p.ip6 { "IPv6" } else { "IPv4" };
        s.push_str(&format!(
            "{} ({} s per side, {sizes}, {ip}, {path}):\n",
            self.workload.name(),
            p.duration.as_secs_f64()
        ));
        s.push_str(&format!(
            "  {:<8} {:>16} {:>10} {:>10} {:>10} {:>14}\n",
            "stack",
            self.unit(),
            "p50 µs",
            "p99 µs",
            "p99.9 µs",
            "CPU ns/op"
        ));
        let rows =
            [("ustack", Some(&self.ustack)), ("no-tso", self.ustack_no_tso.as_ref()), ("linux", Some(&self.linux))];
        for (name, f) in rows.into_iter().filter_map(|(n, f)| Some((n, f?))) {
            let pct = |q| f.percentile_ns(q).map_or("-".to_string(), |v| format!("{:.2}", v as f64 / 1e3));
            let per_op = match self.workload {
                Workload::Stream => format!("{:.2}/KiB", f.cpu.as_nanos() as f64 / (f.count.max(1) as f64 / 1024.0)),
                _ => format!("{:.0}", f.cpu_ns_per_op()),
            };
            s.push_str(&format!(
                "  {:<8} {:>16.2} {:>10} {:>10} {:>10} {:>14}\n",
                name,
                self.main_figure(f),
                pct(0.5),
                pct(0.99),
                pct(0.999),
                per_op
            ));
        }
        s.push_str(&format!("  ratio ustack/linux: {:.2}x\n", self.ratio()));
        if let Some(f) = &self.ustack_no_tso {
            s.push_str(&format!("  ratio no-tso/linux: {:.2}x\n", f.per_second() / self.linux.per_second().max(1e-9)));
        }
        if let BenchPath::Device { notes, .. } = &self.path {
            let count = |r: Option<u64>| r.map_or("?".to_string(), |n| n.to_string());
            let [on_ustack, on_linux] = notes.client_retransmits;
            s.push_str(&format!(
                "  kernel client retransmitted {} segments on ustack's path, {} on Linux's\n",
                count(on_ustack),
                count(on_linux)
            ));
            let losses: Vec<String> = notes.losses().map(|(n, v)| format!("{n} {v}")).collect();
            if !losses.is_empty() {
                s.push_str(&format!("  ustack dropped or refused: {}\n", losses.join(", ")));
            }
        }
        s
    }

    /// One JSON object: `workload`, `path` (memory, tap), `linux_path`
    /// (loopback, veth), `ip_version` (4 or 6), `ustack`, `linux`, `ratio`; on a device also
    /// `device`, `client_retransmits`, `ustack_counters` and `device_counters`.
    pub fn json(&self) -> String {
        let side = |f: &Figures| {
            let mut o = format!(
                "{{\"count\":{},\"elapsed_s\":{:.6},\"per_second\":{:.3},\"cpu_s\":{:.6},\"cpu_ns_per_op\":{:.3}",
                f.count,
                f.elapsed.as_secs_f64(),
                f.per_second(),
                f.cpu.as_secs_f64(),
                f.cpu_ns_per_op()
            );
            if self.workload == Workload::Stream {
                o.push_str(&format!(",\"bits_per_second\":{:.0}", f.per_second() * 8.0));
            }
            if let Some(h) = &f.latency_ns {
                o.push_str(&format!(
                    ",\"p50_ns\":{},\"p99_ns\":{},\"p999_ns\":{}",
                    h.value_at_quantile(0.5),
                    h.value_at_quantile(0.99),
                    h.value_at_quantile(0.999)
                ));
            }
            o.push('}');
            o
        };
        let (path, linux_path) = self.path.names();
        let device = match &self.path {
            BenchPath::Memory => String::new(),
            BenchPath::Switch { pin } => format!(
                ",\"device\":\"virtio-user through ustack switch\",\"processes\":3,\"pin\":{}",
                pin.map_or("null".to_string(), |(sw, ends)| format!("{{\"switch\":{sw},\"ends\":{ends}}}"))
            ),
            BenchPath::Processes { device } => format!(",\"device\":{},\"processes\":2", json_string(device)),
            BenchPath::Device { device, notes } => {
                let count = |r: Option<u64>| r.map_or("null".to_string(), |n| n.to_string());
                let [on_ustack, on_linux] = notes.client_retransmits;
                let object = |c: &[(&str, u64)]| {
                    let fields: Vec<String> = c.iter().map(|(n, v)| format!("\"{n}\":{v}")).collect();
                    format!("{{{}}}", fields.join(","))
                };
                format!(
                    ",\"device\":{},\"client_retransmits\":{{\"ustack\":{},\"linux\":{}}},\
                     \"ustack_counters\":{},\"device_counters\":{}",
                    json_string(device),
                    count(on_ustack),
                    count(on_linux),
                    object(&notes.ustack_counters),
                    object(&notes.device_counters)
                )
            }
        };
        let no_tso = match &self.ustack_no_tso {
            Some(f) => format!(
                ",\"ustack_no_tso\":{},\"ratio_no_tso\":{:.4}",
                side(f),
                f.per_second() / self.linux.per_second().max(1e-9)
            ),
            None => String::new(),
        };
        format!(
            "{{\"workload\":\"{}\",\"path\":{},\"linux_path\":\"{linux_path}\"{device},\"ip_version\":{},\"mtu\":{},\
             \"message\":{},\"write_size\":{},\"send_buffer\":{},\"ustack\":{},\"linux\":{},\"ratio\":{:.4}{no_tso}}}",
            self.workload.name(),
            json_string(path),
            if self.params.ip6 { 6 } else { 4 },
            self.params.mtu,
            self.params.message,
            self.params.write_size,
            self.params.send_buffer.map_or("null".to_string(), |b| b.to_string()),
            side(&self.ustack),
            side(&self.linux),
            self.ratio()
        )
    }
}

/// `s` as a JSON string: a device name is the user's text.
fn json_string(s: &str) -> String {
    let mut o = String::from("\"");
    for c in s.chars() {
        match c {
            '"' => o.push_str("\\\""),
            '\\' => o.push_str("\\\\"),
            c if u32::from(c) < 0x20 => o.push_str(&format!("\\u{:04x}", u32::from(c))),
            c => o.push(c),
        }
    }
    o.push('"');
    o
}

/// Runs `transaction` back to back for `duration`, timing each one: the
/// count, the latency histogram and the process's CPU time (rr and crr,
/// for every stack).
pub(crate) fn timed_transactions<E>(
    duration: Duration,
    mut transaction: impl FnMut() -> Result<(), E>,
) -> Result<Figures, E> {
    let mut h = histogram();
    let cpu0 = crate::cpu_time();
    let start = std::time::Instant::now();
    let mut count = 0u64;
    while start.elapsed() < duration {
        let t = std::time::Instant::now();
        transaction()?;
        h.saturating_record(t.elapsed().as_nanos() as u64);
        count += 1;
    }
    Ok(Figures { count, elapsed: start.elapsed(), cpu: crate::cpu_time() - cpu0, latency_ns: Some(h) })
}

pub(crate) fn histogram() -> Histogram<u64> {
    Histogram::new_with_bounds(1, 60_000_000_000, 3).expect("static bounds are valid")
}
