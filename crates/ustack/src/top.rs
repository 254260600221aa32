//! `ustack top`: a running stack's snapshot, live, in the terminal.
//!
//! Every interval it reads the control socket's JSON snapshot (see
//! `ustack_runtime::control::snapshot_json`) and draws, in a fixed layout
//! that fits 80×24:
//!
//! ```text
//!  ustack top  tap:ust0  up 0:01:02  every 1000 ms  q quits
//! ┌ tap:ust0 ─────────────────────────────────────────────────────────────────┐
//! │            packets/s       bytes/s          packets            bytes     │
//! │ in              10.0       980 B/s              123            12054     │
//! │ out             10.0       980 B/s              121            11858     │
//! │ device  rx_errors 0  tx_full 0  tx_blocked 0  tx_dropped 0               │
//! └──────────────────────────────────────────────────────────────────────────┘
//! ┌ TCP connections ─────────────────────┐┌ Pools ────────────────────────────┐
//! │ ESTABLISHED     2  CLOSE-WAIT      0 ││ TCP buffers 3 in use / 65536      │
//! │ …                                    ││ ▏…gauge (in use / limit)…         │
//! │ total 2  listeners 1                 ││ chunk 16.0 KiB  allocated 8  exh… │
//! │ retransmits 0  (0.0/s)               ││ ARP queue 0 / 64                  │
//! │                                      ││ neighbours 1                      │
//! │                                      ││ tx ring 0 / 32 (TAP)              │
//! └──────────────────────────────────────┘└───────────────────────────────────┘
//! ┌ Drops (non-zero) ─────────────────────────────────────────────────────────┐
//! │ reason                              total           /s                    │
//! └──────────────────────────────────────────────────────────────────────────┘
//! ```
//!
//! Rates come from two successive snapshots, divided by the difference of
//! their `uptime_us` (the stack's own clock, so a slow read does not skew
//! them). Every widget keeps its place from frame to frame, and ratatui
//! writes only the cells that changed.
//!
//! `q`, Esc, Ctrl-C, SIGINT and SIGTERM all quit the same way: the terminal
//! gets its main screen and its cooked mode back.
//!
//! # Per-port and per-shard views
//!
//! The snapshot's `interfaces` is one entry per port of the stack; the
//! interface box shows the port [`View::port`] selects, and Tab / Shift-Tab
//! step through them (the box's title says `port i/N` once there are
//! several). A stack with one loop per core will report one snapshot per
//! shard; the selection then becomes (shard, port) in `View`, the header
//! names the shard, and the TCP, pools and drops boxes show the selected
//! shard's figures, summed over all shards on a `total` entry. Nothing of
//! that is drawn before the snapshot carries shards.

use crate::error::CliError;
use crate::stats::{control_addr, read_snapshot};
use clap::Args;
use crossterm::event::{self, Event, KeyCode, KeyEventKind, KeyModifiers};
use ratatui::layout::{Constraint, Layout, Rect};
use ratatui::style::{Modifier, Style};
use ratatui::text::Line;
use ratatui::widgets::{Block, Gauge, Padding, Paragraph, Row, Table};
use ratatui::Frame;
use serde_json::Value;
use std::time::{Duration, Instant};
use ustack_runtime::{ControlAddr, StopSignal};

#[derive(Args, Debug)]
pub struct TopArgs {
    /// The stack's device, as given to `ustack up` (tap:NAME); it is looked up
    /// in the current network namespace.
    #[arg(long, value_name = "KIND:NAME", required_unless_present = "control", conflicts_with = "control")]
    pub device: Option<String>,
    /// The control socket path given to `ustack up --control`.
    #[arg(long, value_name = "PATH")]
    pub control: Option<std::path::PathBuf>,
    /// How often to read the snapshot, in milliseconds.
    #[arg(long, value_name = "MS", default_value_t = 1000, value_parser = clap::value_parser!(u64).range(50..=60_000))]
    pub interval: u64,
}

pub fn run(args: TopArgs) -> Result<(), CliError> {
    let addr = control_addr(args.device, args.control)?;
    // Fail on the plain screen, with the one-line error, before taking over
    // the terminal.
    let first = read_snapshot(&addr)?;
    // SIGINT/SIGTERM end the loop like `q`, so the terminal is restored;
    // their default action would leave it raw, on the alternate screen.
    let stop = StopSignal::install();
    let terminal = ratatui::try_init().map_err(terminal_error)?;
    let mut session = Session { terminal, _restore: Restore };
    let mut view = View::new(addr, Duration::from_millis(args.interval), first);
    view.run(&mut session.terminal, &stop)
}

/// The longest top waits for a key without looking at the stop flag.
const STOP_CHECK: Duration = Duration::from_millis(100);

fn terminal_error(source: std::io::Error) -> CliError {
    CliError::Output { path: "the terminal".into(), source }
}

/// Restores the terminal (raw mode off, main screen back) however `run`
/// ends: normally, by an error, or by a panic unwinding through it.
struct Restore;

impl Drop for Restore {
    fn drop(&mut self) {
        ratatui::restore();
    }
}

struct Session {
    terminal: ratatui::DefaultTerminal,
    _restore: Restore,
}

/// What the screen shows: the latest snapshot, the one before (for rates),
/// and the latest read error, if the stack stopped answering.
struct View {
    addr: ControlAddr,
    interval: Duration,
    current: Value,
    previous: Option<Value>,
    error: Option<String>,
    /// Which entry of the snapshot's `interfaces` the interface box shows.
    port: usize,
}

impl View {
    fn new(addr: ControlAddr, interval: Duration, first: Value) -> View {
        View { addr, interval, current: first, previous: None, error: None, port: 0 }
    }

    fn ports(&self) -> usize {
        self.current["interfaces"].as_array().map_or(0, Vec::len)
    }

    /// Select the next port (or the previous), wrapping.
    fn select_port(&mut self, forward: bool) {
        let n = self.ports().max(1);
        self.port = if forward { (self.port + 1) % n } else { (self.port + n - 1) % n };
    }

    fn run(&mut self, terminal: &mut ratatui::DefaultTerminal, stop: &StopSignal) -> Result<(), CliError> {
        let mut next_read = Instant::now() + self.interval;
        'frames: loop {
            terminal.draw(|f| self.draw(f)).map_err(terminal_error)?;
            // Wait for a key until the next read is due. crossterm retries
            // its poll when a signal interrupts it, so look at the stop flag
            // between short waits: SIGTERM must not wait for a long interval.
            loop {
                if stop.raised() {
                    return Ok(());
                }
                let wait = next_read.saturating_duration_since(Instant::now());
                if wait.is_zero() {
                    break;
                }
                if event::poll(wait.min(STOP_CHECK)).map_err(terminal_error)? {
                    if let Event::Key(key) = event::read().map_err(terminal_error)? {
                        let quit = key.kind != KeyEventKind::Release
                            && (matches!(key.code, KeyCode::Char('q' | 'Q') | KeyCode::Esc)
                                || (key.code == KeyCode::Char('c') && key.modifiers.contains(KeyModifiers::CONTROL)));
                        if quit {
                            return Ok(());
                        }
                        if key.kind != KeyEventKind::Release && matches!(key.code, KeyCode::Tab | KeyCode::BackTab) {
                            self.select_port(key.code == KeyCode::Tab);
                        }
                    }
                    // Resizes and other keys: redraw now, keep the schedule.
                    continue 'frames;
                }
            }
            next_read = Instant::now() + self.interval;
            self.refresh();
        }
    }

    fn refresh(&mut self) {
        match read_snapshot(&self.addr) {
            Ok(snap) => {
                self.previous = Some(std::mem::replace(&mut self.current, snap));
                self.error = None;
            }
            // Keep the last figures on screen and say why they are stale;
            // the next tick tries again.
            Err(e) => self.error = Some(e.to_string()),
        }
    }

    /// Per-second rate of the number at `path` between the last two snapshots.
    fn rate(&self, path: &[&str]) -> Option<f64> {
        let prev = self.previous.as_ref()?;
        let dt = u(&self.current, &["uptime_us"]).checked_sub(u(prev, &["uptime_us"]))?;
        if dt == 0 {
            return None;
        }
        let dv = u(&self.current, path).saturating_sub(u(prev, path));
        Some(dv as f64 * 1e6 / dt as f64)
    }

    fn draw(&self, f: &mut Frame) {
        let [header, iface, middle, drops] =
            Layout::vertical([Constraint::Length(1), Constraint::Length(6), Constraint::Length(9), Constraint::Min(3)])
                .areas(f.area());
        self.draw_header(f, header);
        self.draw_interface(f, iface);
        let [tcp, pools] = Layout::horizontal([Constraint::Percentage(50), Constraint::Percentage(50)]).areas(middle);
        self.draw_tcp(f, tcp);
        self.draw_pools(f, pools);
        self.draw_drops(f, drops);
    }

    fn draw_header(&self, f: &mut Frame, area: Rect) {
        let snap = &self.current;
        let up = u(snap, &["uptime_us"]) / 1_000_000;
        let mut text = format!(
            " ustack top  {}  up {}:{:02}:{:02}  every {} ms  q quits",
            snap["device"].as_str().unwrap_or("?"),
            up / 3600,
            up / 60 % 60,
            up % 60,
            self.interval.as_millis()
        );
        if let Some(e) = &self.error {
            text = format!(" STALE: {e}");
        }
        f.render_widget(Paragraph::new(text).style(Style::new().add_modifier(Modifier::REVERSED)), area);
    }

    fn draw_interface(&self, f: &mut Frame, area: Rect) {
        let snap = &self.current;
        // A port that went away (fewer interfaces than before) shows the first.
        let port = if self.port < self.ports() { self.port } else { 0 };
        let iface = &snap["interfaces"][port];
        let index = port.to_string();
        let name = iface["name"].as_str().or(snap["device"].as_str()).unwrap_or("?");
        let row = |label: &'static str, dir: &str| {
            let (pk, by) = (format!("{dir}_packets"), format!("{dir}_bytes"));
            Row::new([
                Line::from(label),
                right(fmt_rate(self.rate(&["interfaces", &index, &pk]))),
                right(fmt_bytes_rate(self.rate(&["interfaces", &index, &by]))),
                right(u(iface, &[&pk]).to_string()),
                right(u(iface, &[&by]).to_string()),
            ])
        };
        let widths =
            [Constraint::Length(6), Constraint::Fill(1), Constraint::Fill(1), Constraint::Fill(1), Constraint::Fill(1)];
        let block = match self.ports() {
            0 | 1 => bordered(format!(" {name} ")),
            n => bordered(format!(" {name}  port {}/{n}  Tab: next ", port + 1)),
        };
        let [table_area, device_area] =
            Layout::vertical([Constraint::Length(3), Constraint::Length(1)]).areas(block.inner(area));
        f.render_widget(block, area);
        let header = Row::new(["", "packets/s", "bytes/s", "packets", "bytes"].map(|h| right(h.into())))
            .style(Style::new().add_modifier(Modifier::BOLD));
        f.render_widget(Table::new([row("in", "rx"), row("out", "tx")], widths).header(header), table_area);
        // The device's own error counters; its frame counts repeat the rows
        // above, its ring is in the pools box.
        let mut dev = String::from("device ");
        if let Some(obj) = iface["device_counters"].as_object().filter(|o| !o.is_empty()) {
            for (k, v) in obj.iter().filter(|(k, _)| {
                !matches!(k.as_str(), "rx_frames" | "rx_bytes" | "tx_frames" | "tx_bytes") && !k.starts_with("tx_ring_")
            }) {
                if v.as_u64() != Some(0) || !k.starts_with("fault_") {
                    dev.push_str(&format!(" {k} {v}"));
                }
            }
        } else {
            dev.push_str(" (no counters)");
        }
        f.render_widget(Paragraph::new(dev), device_area);
    }

    fn draw_tcp(&self, f: &mut Frame, area: Rect) {
        let tcp = &self.current["tcp"];
        let states: Vec<(&str, u64)> = STATES.iter().map(|&k| (k, u(tcp, &["states", k]))).collect();
        // Two columns, in a fixed order so nothing moves between frames.
        let half = states.len().div_ceil(2);
        let mut lines: Vec<Line> = (0..half)
            .map(|i| {
                let cell = |j: usize| states.get(j).map_or(String::new(), |(k, v)| format!("{k:<12}{v:>5}"));
                Line::from(format!("{}  {}", cell(i), cell(i + half)))
            })
            .collect();
        lines.push(Line::from(format!("total {}  listeners {}", u(tcp, &["connections"]), u(tcp, &["listeners"]))));
        lines.push(Line::from(format!(
            "retransmits {}  ({}/s)",
            u(tcp, &["retransmits"]),
            fmt_rate(self.rate(&["tcp", "retransmits"]))
        )));
        f.render_widget(Paragraph::new(lines).block(bordered(" TCP connections ".into())), area);
    }

    fn draw_pools(&self, f: &mut Frame, area: Rect) {
        let pools = &self.current["pools"];
        let buf = &pools["tcp_buffers"];
        let (in_use, allocated, limit) = (u(buf, &["in_use"]), u(buf, &["allocated"]), u(buf, &["limit"]));
        let block = bordered(" Pools ".into());
        let inner = block.inner(area);
        f.render_widget(block, area);
        let [l1, gauge, l2, l3, l4, l5] = Layout::vertical([Constraint::Length(1); 6]).areas(inner);
        f.render_widget(Paragraph::new(format!("TCP buffers {in_use} in use / {limit}")), l1);
        let ratio = if limit == 0 { 0.0 } else { (in_use as f64 / limit as f64).clamp(0.0, 1.0) };
        f.render_widget(Gauge::default().ratio(ratio).label(format!("{:.1}% of limit", ratio * 100.0)), gauge);
        f.render_widget(
            Paragraph::new(format!(
                "chunk {}  allocated {allocated}  exhausted {}",
                fmt_bytes(u(buf, &["chunk_size"]) as f64),
                u(buf, &["exhausted"])
            )),
            l2,
        );
        let arp = &pools["neighbor_pending"];
        f.render_widget(Paragraph::new(format!("ARP queue {} / {}", u(arp, &["in_use"]), u(arp, &["limit"]))), l3);
        f.render_widget(Paragraph::new(format!("neighbours {}", u(&self.current, &["neighbors"]))), l4);
        // The device's transmit ring, for devices that have one (TAP).
        let dev = &self.current["interfaces"][0]["device_counters"];
        if dev.get("tx_ring_size").is_some() {
            let ring = format!("tx ring {} / {}", u(dev, &["tx_ring_in_use"]), u(dev, &["tx_ring_size"]));
            f.render_widget(Paragraph::new(ring), l5);
        }
    }

    fn draw_drops(&self, f: &mut Frame, area: Rect) {
        let drops: Vec<Row> = self.current["drops"]
            .as_object()
            .map(|o| {
                o.iter()
                    .filter(|(_, v)| v.as_u64().unwrap_or(0) > 0)
                    .map(|(k, v)| {
                        Row::new([
                            Line::from(k.clone()),
                            right(v.to_string()),
                            right(fmt_rate(self.rate(&["drops", k]))),
                        ])
                    })
                    .collect()
            })
            .unwrap_or_default();
        let block = bordered(" Drops (non-zero) ".into());
        if drops.is_empty() {
            f.render_widget(Paragraph::new("none").block(block), area);
            return;
        }
        let widths = [Constraint::Fill(2), Constraint::Fill(1), Constraint::Fill(1)];
        let header = Row::new([Line::from("reason"), right("total".into()), right("/s".into())])
            .style(Style::new().add_modifier(Modifier::BOLD));
        f.render_widget(Table::new(drops, widths).header(header).block(block), area);
    }
}

/// TCP states in the order shown: the busy ones first.
const STATES: [&str; 10] = [
    "ESTABLISHED",
    "SYN-SENT",
    "SYN-RECEIVED",
    "FIN-WAIT-1",
    "FIN-WAIT-2",
    "CLOSE-WAIT",
    "CLOSING",
    "LAST-ACK",
    "TIME-WAIT",
    "CLOSED",
];

fn bordered(title: String) -> Block<'static> {
    Block::bordered().title(title).padding(Padding::horizontal(1))
}

fn right(s: String) -> Line<'static> {
    Line::from(s).right_aligned()
}

/// The number at `path` (object keys, or array indices as digits), 0 if absent.
fn u(v: &Value, path: &[&str]) -> u64 {
    let mut v = v;
    for key in path {
        v = match (v, key.parse::<usize>()) {
            (Value::Array(a), Ok(i)) => a.get(i).unwrap_or(&Value::Null),
            _ => &v[*key],
        };
    }
    v.as_u64().unwrap_or(0)
}

fn fmt_rate(r: Option<f64>) -> String {
    r.map_or_else(|| "-".into(), |r| format!("{r:.1}"))
}

fn fmt_bytes_rate(r: Option<f64>) -> String {
    r.map_or_else(|| "-".into(), |r| format!("{}/s", fmt_bytes(r)))
}

/// Bytes with a binary prefix: `980 B`, `1.2 KiB`, `3.4 MiB`.
fn fmt_bytes(b: f64) -> String {
    const UNITS: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut b = b;
    let mut unit = 0;
    while b >= 1024.0 && unit + 1 < UNITS.len() {
        b /= 1024.0;
        unit += 1;
    }
    if unit == 0 {
        format!("{b:.0} B")
    } else {
        format!("{b:.1} {}", UNITS[unit])
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use ratatui::backend::TestBackend;
    use ratatui::Terminal;

    fn snapshot(uptime_us: u64, rx: u64, drops: u64) -> Value {
        serde_json::json!({
            "device": "tap:t0", "uptime_us": uptime_us, "neighbors": 1,
            "interfaces": [{"name": "tap:t0", "rx_packets": rx, "rx_bytes": rx * 100, "tx_packets": rx, "tx_bytes": rx * 100,
                            "device_counters": {"rx_frames": rx, "tx_full": 0, "tx_ring_in_use": 1, "tx_ring_size": 32}}],
            "pools": {"tcp_buffers": {"in_use": 2, "allocated": 4, "limit": 8, "chunk_size": 16384, "exhausted": 0},
                      "neighbor_pending": {"in_use": 0, "limit": 64}},
            "tcp": {"connections": 1, "listeners": 1, "states": {"ESTABLISHED": 1, "TIME-WAIT": 0},
                    "time_wait_records": 0, "retransmits": 3},
            "drops": {"eth_other_host": drops, "tcp_checksum": 0},
        })
    }

    fn screen(view: &View) -> String {
        let buf = buffer(view);
        (0..24).map(|y| (0..80).map(|x| buf[(x, y)].symbol()).collect::<String>() + "\n").collect()
    }

    #[test]
    fn rates_come_from_successive_snapshots() {
        let mut v = View::new(ControlAddr::Device("t0".into()), Duration::from_secs(1), snapshot(1_000_000, 10, 1));
        assert_eq!(v.rate(&["interfaces", "0", "rx_packets"]), None);
        v.previous = Some(std::mem::replace(&mut v.current, snapshot(3_000_000, 30, 5)));
        assert_eq!(v.rate(&["interfaces", "0", "rx_packets"]), Some(10.0));
        assert_eq!(v.rate(&["drops", "eth_other_host"]), Some(2.0));
    }

    fn buffer(view: &View) -> ratatui::buffer::Buffer {
        let mut t = Terminal::new(TestBackend::new(80, 24)).unwrap();
        t.draw(|f| view.draw(f)).unwrap();
        t.backend().buffer().clone()
    }

    /// ratatui writes to the terminal only the cells that differ from the
    /// last frame (`Buffer::diff`); that saves work only if every widget
    /// keeps its place. A tick in which only the packet counters moved must
    /// rewrite nothing but the header's clock and the `in`/`out` rows.
    #[test]
    fn a_tick_rewrites_only_the_cells_whose_figures_changed() {
        let mut v = View::new(ControlAddr::Device("t0".into()), Duration::from_secs(1), snapshot(1_000_000, 10, 1));
        v.previous = Some(std::mem::replace(&mut v.current, snapshot(2_000_000, 30, 1)));
        let before = buffer(&v);
        assert!(before.diff(&buffer(&v)).is_empty(), "an unchanged snapshot rewrote cells");
        v.previous = Some(std::mem::replace(&mut v.current, snapshot(3_000_000, 60, 1)));
        let after = buffer(&v);
        let changed = before.diff(&after);
        assert!(!changed.is_empty(), "new figures were not drawn");
        // Row 0: the header; rows 3 and 4: `in` and `out` (row 1 is the
        // interface box's border, row 2 its column titles).
        for (x, y, cell) in &changed {
            assert!(matches!(y, 0 | 3 | 4), "cell ({x},{y}) = {:?} rewritten", cell.symbol());
        }
    }

    /// A backend that counts what the terminal is asked to write.
    struct Counting {
        inner: TestBackend,
        cells: usize,
        clears: usize,
    }

    impl ratatui::backend::Backend for Counting {
        type Error = <TestBackend as ratatui::backend::Backend>::Error;
        fn draw<'a, I>(&mut self, content: I) -> Result<(), Self::Error>
        where
            I: Iterator<Item = (u16, u16, &'a ratatui::buffer::Cell)>,
        {
            let cells: Vec<_> = content.collect();
            self.cells += cells.len();
            self.inner.draw(cells.into_iter())
        }
        fn hide_cursor(&mut self) -> Result<(), Self::Error> {
            self.inner.hide_cursor()
        }
        fn show_cursor(&mut self) -> Result<(), Self::Error> {
            self.inner.show_cursor()
        }
        fn get_cursor_position(&mut self) -> Result<ratatui::layout::Position, Self::Error> {
            self.inner.get_cursor_position()
        }
        fn set_cursor_position<P: Into<ratatui::layout::Position>>(&mut self, p: P) -> Result<(), Self::Error> {
            self.inner.set_cursor_position(p)
        }
        fn clear(&mut self) -> Result<(), Self::Error> {
            self.clears += 1;
            self.inner.clear()
        }
        fn clear_region(&mut self, t: ratatui::backend::ClearType) -> Result<(), Self::Error> {
            self.clears += 1;
            self.inner.clear_region(t)
        }
        fn size(&self) -> Result<ratatui::layout::Size, Self::Error> {
            self.inner.size()
        }
        fn window_size(&mut self) -> Result<ratatui::backend::WindowSize, Self::Error> {
            self.inner.window_size()
        }
        fn flush(&mut self) -> Result<(), Self::Error> {
            self.inner.flush()
        }
    }

    /// What the real loop does, on one terminal: the first frame writes the
    /// screen, an unchanged one writes nothing, a tick writes only the cells
    /// that changed, and no frame clears the screen.
    #[test]
    fn one_terminal_writes_only_changes_and_never_clears() {
        let mut v = View::new(ControlAddr::Device("t0".into()), Duration::from_secs(1), snapshot(1_000_000, 10, 1));
        v.previous = Some(std::mem::replace(&mut v.current, snapshot(2_000_000, 30, 1)));
        let mut t = Terminal::new(Counting { inner: TestBackend::new(80, 24), cells: 0, clears: 0 }).unwrap();
        t.draw(|f| v.draw(f)).unwrap();
        let first = t.backend().cells;
        assert!(first > 500, "the first frame wrote {first} cells");
        t.draw(|f| v.draw(f)).unwrap();
        assert_eq!(t.backend().cells, first, "an unchanged frame wrote cells");
        v.previous = Some(std::mem::replace(&mut v.current, snapshot(3_000_000, 60, 1)));
        t.draw(|f| v.draw(f)).unwrap();
        let tick = t.backend().cells - first;
        assert!(tick > 0 && tick < 80 * 3, "a tick wrote {tick} cells");
        assert_eq!(t.backend().clears, 0, "a frame cleared the screen");
    }

    /// With two ports in the snapshot, Tab moves the interface box to the
    /// second one, and the title says which of how many.
    #[test]
    fn tab_selects_the_port_shown() {
        let two = |uptime, rx| {
            let mut s = snapshot(uptime, rx, 1);
            let mut second = s["interfaces"][0].clone();
            second["name"] = "tap:t1".into();
            second["rx_packets"] = 777_777.into();
            s["interfaces"].as_array_mut().unwrap().push(second);
            s
        };
        let mut v = View::new(ControlAddr::Device("t0".into()), Duration::from_secs(1), two(1_000_000, 10));
        let s = screen(&v);
        assert!(s.contains("tap:t0  port 1/2") && !s.contains("777777"), "{s}");
        v.select_port(true);
        let s = screen(&v);
        assert!(s.contains("tap:t1  port 2/2") && s.contains("777777"), "{s}");
        v.select_port(true);
        assert_eq!(v.port, 0);
        v.select_port(false);
        assert_eq!(v.port, 1);
        // One port: no selector in the title.
        let v = View::new(ControlAddr::Device("t0".into()), Duration::from_secs(1), snapshot(1_000_000, 10, 1));
        assert!(!screen(&v).contains("port 1/1"));
    }

    /// A terminal of any size, however small, gets a clipped screen, not a panic.
    #[test]
    fn tiny_terminals_do_not_panic() {
        let mut v = View::new(ControlAddr::Device("t0".into()), Duration::from_secs(1), snapshot(1_000_000, 10, 1));
        v.previous = Some(std::mem::replace(&mut v.current, snapshot(2_000_000, 30, 5)));
        for (w, h) in [(1, 1), (2, 30), (200, 2), (20, 5), (40, 12), (79, 23)] {
            let mut t = Terminal::new(TestBackend::new(w, h)).unwrap();
            t.draw(|f| v.draw(f)).unwrap();
        }
    }

    #[test]
    fn fits_80_by_24_and_shows_non_zero_drops_only() {
        let mut v = View::new(ControlAddr::Device("t0".into()), Duration::from_secs(1), snapshot(1_000_000, 10, 1));
        v.previous = Some(std::mem::replace(&mut v.current, snapshot(2_000_000, 30, 5)));
        let s = screen(&v);
        assert!(s.contains("ESTABLISHED"), "{s}");
        assert!(s.contains("retransmits 3"), "{s}");
        assert!(s.contains("eth_other_host"), "{s}");
        assert!(!s.contains("tcp_checksum"), "{s}");
        assert!(s.contains("20.0"), "rx packets/s: {s}");
        assert!(s.contains("TCP buffers 2 in use / 8") && s.contains("allocated 4"), "{s}");
        assert!(s.contains("tx ring 1 / 32") && !s.contains("tx_ring"), "{s}");
    }
}
