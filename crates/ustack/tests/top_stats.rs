//! `ustack top` and `ustack stats --json` against a running `ustack up`.
//!
//! Topology per test: namespace `ust-<test>-<pid>` with kernel IPv6 off;
//! `ustack up` on TAP `ut<N>p<pid>` as 10.77.N.2/24 with UDP and TCP echo on
//! port 7, the kernel's side 10.77.N.1/24. The kernel's neighbour entry for
//! the stack is pinned (`nud permanent`), so the kernel never ARPs and the
//! only frames on the wire are the ones the test sends, their answers, and
//! the stack's own ARP for the kernel, which its counters report.
//!
//! - `top_in_tmux_shows_counters_moving_and_q_quits`: `ustack top` in a
//!   detached tmux session of its own (private server socket, 160×48); ping
//!   floods the stack, a TCP connection stays open, one datagram goes to a
//!   closed port. Two screens a second apart must show the packet and byte
//!   totals growing with non-zero rates, the open connection, the listener
//!   and the drop by reason, the pools and the TAP's ring. Then the stack
//!   stops under it: top keeps the last figures and says they are stale.
//!   `q` must end `top` with status 0, the terminal back on its main screen
//!   and out of raw mode.
//! - `stats_json_matches_traffic_sent`: an exact amount of ICMP, UDP and TCP
//!   echo traffic; `ustack stats --json` must count exactly those frames and
//!   bytes, per protocol and per device, plus the ARP frames it reports, and
//!   agree with the kernel's counters for the TAP and with a tcpdump capture.
//! - `top_restores_the_terminal_on_sigterm`: killing top restores the
//!   terminal as `q` does.
//! - `stats_and_top_without_a_stack_fail_in_one_line` (no privileges needed).
//!
//! Needs root, tmux, ping, pgrep, tcpdump and python3 (skips with a printed
//! reason otherwise). Every wait is bounded; the namespace, the stack, the tmux
//! server and every helper process are removed by guards, also on failure.

#[macro_use]
mod support;

use serde_json::Value;
use std::time::{Duration, Instant};
use support::tcp::{python, Bg, TempDir};
use support::{run_bounded, ustack_bin, Netns, Output};

const SECS: fn(u64) -> Duration = Duration::from_secs;

/// Ethernet + IPv4 + ICMP/UDP headers: a frame's bytes beyond its payload.
const ETH_IP_8: u64 = 14 + 20 + 8;
/// An ARP frame on a TAP: Ethernet header + 28 bytes, no padding (a TAP
/// carries no minimum frame size, and neither the kernel nor ustack pads).
const ARP_FRAME: u64 = 42;
const ECHO_PORT: &str = "7";

/// A namespace with a running `ustack up --udp-echo 7 --tcp-echo 7`.
struct Setup {
    // Field order is drop order: the stack goes before its namespace.
    stack: Option<Bg>,
    ns: Netns,
    tap: String,
    stack_ip: String,
    stack_mac: String,
}

impl Setup {
    /// `extra`: more `ustack up` arguments (`--control PATH`).
    fn new(tag: &str, subnet: u8, extra: &[&str]) -> Setup {
        let ns = Netns::new(tag);
        for kv in ["net.ipv6.conf.default.disable_ipv6=1", "net.ipv6.conf.all.disable_ipv6=1"] {
            ns.exec_ok(&["sysctl", "-qw", kv], SECS(5));
        }
        let tap = support::short_name("ut", subnet);
        let (stack_ip, host_ip) = (format!("10.77.{subnet}.2"), format!("10.77.{subnet}.1"));
        let (dev, ip, host) = (format!("tap:{tap}"), format!("{stack_ip}/24"), format!("{host_ip}/24"));
        let mut argv = vec![ustack_bin(), "up", "--device", &dev, "--ip", &ip, "--host-ip", &host];
        argv.extend(["--udp-echo", ECHO_PORT, "--tcp-echo", ECHO_PORT]);
        argv.extend_from_slice(extra);
        let mut stack = Bg::spawn(&ns, &argv);
        stack.wait_ready("serving UDP and TCP echo", SECS(10), |e| {
            e.contains("UDP echo on port 7") && e.contains("TCP echo on port 7")
        });
        // The banner: "ustack: up on tap:NAME as A.B.C.D/N (MAC); Ctrl-C stops".
        let err = stack.stderr_now();
        let stack_mac = err
            .split_once(" (")
            .and_then(|(_, rest)| rest.split_once(')'))
            .map(|(mac, _)| mac.to_owned())
            .filter(|mac| mac.len() == 17)
            .unwrap_or_else(|| panic!("no MAC in ustack's banner:\n{err}"));
        if let Err(out) = support::wait_tap_up(&ns, &tap, &host, SECS(5)) {
            panic!("TAP {tap} not up with {host}: {out}\nustack: {}", stack.stderr_now());
        }
        // The kernel knows the stack's MAC for good: it sends no ARP of its
        // own, now or when an entry would go stale.
        ns.exec_ok(
            &["ip", "neigh", "replace", &stack_ip, "lladdr", &stack_mac, "dev", &tap, "nud", "permanent"],
            SECS(5),
        );
        Setup { stack: Some(stack), ns, tap, stack_ip, stack_mac }
    }

    /// `ustack stats --device tap:NAME --json`, parsed.
    fn stats(&self) -> Value {
        let dev = format!("tap:{}", self.tap);
        let out = self.ns.exec(&[ustack_bin(), "stats", "--device", &dev, "--json"], SECS(10));
        assert!(out.success(), "ustack stats --json: {out}");
        serde_json::from_slice(&out.stdout).unwrap_or_else(|e| panic!("stats --json is not JSON ({e}): {out}"))
    }

    /// Stop the stack with SIGTERM; its stderr must show no panic.
    fn stop(&mut self) -> String {
        let (stdout, stderr) = self.stack.take().expect("stack already stopped").stop_both("TERM", SECS(10));
        assert!(!stderr.contains("panicked"), "ustack panicked:\n{stderr}");
        stdout
    }
}

/// The number at `path` in `v` (array indices as digits); panics if absent,
/// so a renamed or missing field fails loudly instead of reading as 0.
fn num(v: &Value, path: &str) -> u64 {
    let mut at = v;
    for key in path.split('.') {
        at = match key.parse::<usize>() {
            Ok(i) if at.is_array() => &at[i],
            _ => &at[key],
        };
    }
    at.as_u64().unwrap_or_else(|| panic!("no number at {path} in the snapshot:\n{v:#}"))
}

// ------------------------------------------------------------------ tmux ---

/// A tmux server of this test's own (its socket in a directory of the
/// test's), killed on drop with everything running in it; the directory
/// goes after it, socket included.
struct Tmux {
    socket: String,
    _dir: TempDir,
}

impl Tmux {
    /// A server with one detached session `top` of `width`×`height` running
    /// `command`. Panes stay after their command exits (so the test can read
    /// the last screen and the exit status), and there is no status line
    /// (the pane is the whole window).
    fn new(tag: &str, width: u16, height: u16, command: &str) -> Tmux {
        let dir = TempDir::new(&format!("tmux-{tag}"));
        let (socket, conf) = (dir.file("socket"), dir.file("tmux.conf"));
        // In the configuration, so that it holds from the command's start:
        // a `top` that fails at once still leaves its screen behind.
        std::fs::write(&conf, "set -g remain-on-exit on\nset -g status off\n").unwrap();
        let tmux = Tmux { socket, _dir: dir };
        let (w, h) = (width.to_string(), height.to_string());
        tmux.run_ok(&["-f", &conf, "new-session", "-d", "-s", "top", "-x", &w, "-y", &h, command]);
        tmux
    }

    fn run(&self, args: &[&str]) -> Output {
        let mut c = std::process::Command::new("tmux");
        c.args(["-S", &self.socket]).args(args);
        run_bounded(c, None, SECS(10))
    }

    fn run_ok(&self, args: &[&str]) -> String {
        let out = self.run(args);
        assert!(out.success(), "tmux {args:?}: {out}");
        out.stdout_str()
    }

    /// The visible screen of the pane, one string per row.
    fn screen(&self) -> String {
        self.run_ok(&["capture-pane", "-p", "-t", "top"])
    }

    /// Everything the pane printed, its scrollback included: tmux may move
    /// the first rows a command prints into the history.
    fn everything(&self) -> String {
        self.run_ok(&["capture-pane", "-p", "-S", "-", "-t", "top"])
    }

    /// A tmux format (`#{pane_dead}`, ...) for the pane.
    fn format(&self, fmt: &str) -> String {
        self.run_ok(&["display-message", "-p", "-t", "top", fmt]).trim().to_owned()
    }
}

impl Drop for Tmux {
    fn drop(&mut self) {
        // SIGHUP to every pane's processes, then the server exits.
        let _ = self.run(&["kill-server"]);
    }
}

/// One direction's row of top's interface table:
/// `│ in   63.7   6.1 KiB/s   77   7490 │`.
#[derive(Debug, Clone, Copy)]
struct Row {
    packets_per_s: f64,
    bytes_per_s: f64,
    packets: u64,
    bytes: u64,
}

/// The `in` or `out` row of the screen; `None` until it shows numbers
/// (the first frame has no rate yet: `-`).
fn row(screen: &str, label: &str) -> Option<Row> {
    let line = screen.lines().find(|l| l.trim_start_matches(['│', ' ']).split_whitespace().next() == Some(label))?;
    let t: Vec<&str> = line.split_whitespace().filter(|t| *t != "│").collect();
    let &[_, rate, bytes_rate, unit, packets, bytes] = t.as_slice() else { return None };
    let scale = match unit {
        "B/s" => 1.0,
        "KiB/s" => 1024.0,
        "MiB/s" => 1024.0 * 1024.0,
        _ => panic!("unknown byte-rate unit {unit:?} in {line:?}"),
    };
    Some(Row {
        packets_per_s: rate.parse().ok()?,
        bytes_per_s: bytes_rate.parse::<f64>().ok()? * scale,
        packets: packets.parse().ok()?,
        bytes: bytes.parse().ok()?,
    })
}

/// The number after `label` on the screen (`ESTABLISHED     1`, `listeners 1`).
fn after(screen: &str, label: &str) -> Option<u64> {
    let (_, rest) = screen.split_once(label)?;
    rest.split_whitespace().next()?.parse().ok()
}

/// Wait (bounded) until the screen satisfies `ok`; returns it.
fn wait_screen(tmux: &Tmux, what: &str, limit: Duration, ok: impl Fn(&str) -> bool) -> String {
    let deadline = Instant::now() + limit;
    loop {
        let s = tmux.screen();
        if ok(&s) {
            return s;
        }
        assert!(Instant::now() < deadline, "top's screen: no {what} within {limit:?}:\n{s}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// A TCP connection to the echo port that stays open until killed.
const HOLD_TCP: &str = r#"
import socket, sys, time
s = socket.create_connection((sys.argv[1], int(sys.argv[2])), timeout=10)
print("connected", file=sys.stderr, flush=True)
time.sleep(30)
"#;

/// Send one UDP datagram to `port` and exit (nothing listens there).
const UDP_ONE: &str = r#"
import socket, sys
socket.socket(socket.AF_INET, socket.SOCK_DGRAM).sendto(b"x" * 10, (sys.argv[1], int(sys.argv[2])))
"#;

#[test]
fn top_in_tmux_shows_counters_moving_and_q_quits() {
    skip_unless!("tmux", "ping", python());
    let control = TempDir::new("topctl");
    let sock = control.file("control.sock");
    let mut setup = Setup::new("top", 40, &["--control", &sock]);
    let ip = setup.stack_ip.clone();

    let tmux = Tmux::new("top", 160, 48, &top_command(&setup.ns, &format!("--control {sock} --interval 200")));
    wait_screen(&tmux, "first frame", SECS(10), |s| s.contains("ustack top") && s.contains("packets/s"));
    assert_eq!(tmux.format("#{alternate_on}"), "1", "top should draw on the alternate screen");

    // Traffic: a ping flood (bounded by its count), one idle TCP connection,
    // one datagram to a closed port (a drop by reason). One ping first lets
    // the stack resolve the kernel before the flood (see the stats test).
    let out = setup.ns.exec(&["ping", "-n", "-q", "-c", "1", "-W", "2", &ip], SECS(10));
    assert!(out.success(), "first ping: {out}");
    let mut ping = Bg::spawn(&setup.ns, &["ping", "-n", "-q", "-c", "1000", "-i", "0.01", "-s", "200", &ip]);
    let mut hold = Bg::spawn(&setup.ns, &[python(), "-c", HOLD_TCP, &ip, ECHO_PORT]);
    hold.wait_ready("connected", SECS(10), |e| e.contains("connected"));
    let out = setup.ns.exec(&[python(), "-c", UDP_ONE, &ip, "9"], SECS(10));
    assert!(out.success(), "UDP to port 9: {out}");

    let moving = |s: &str| {
        let (rx, tx) = (row(s, "in"), row(s, "out"));
        rx.zip(tx).is_some_and(|(rx, tx)| rx.packets_per_s > 0.0 && tx.packets_per_s > 0.0)
            && after(s, "ESTABLISHED") == Some(1)
            && s.contains("udp_no_socket")
    };
    let first = wait_screen(&tmux, "moving counters, the connection and the drop", SECS(15), moving);
    std::thread::sleep(SECS(1));
    let second = wait_screen(&tmux, "moving counters a second later", SECS(5), moving);
    ping.assert_running(); // the flood lasts 10 s: still flowing during both reads
    let (a_in, a_out) = (row(&first, "in").unwrap(), row(&first, "out").unwrap());
    let (b_in, b_out) = (row(&second, "in").unwrap(), row(&second, "out").unwrap());
    let both = format!("first:\n{first}\nsecond:\n{second}");
    for (a, b, dir) in [(a_in, b_in, "in"), (a_out, b_out, "out")] {
        assert!(
            b.packets > a.packets && b.bytes > a.bytes,
            "{dir}: totals did not grow in a second: {a:?} {b:?}\n{both}"
        );
        assert!(b.packets_per_s > 0.0 && b.bytes_per_s > 0.0, "{dir}: zero rate while ping flows: {b:?}\n{both}");
        // Between the two screens only echo requests (in) and replies (out)
        // moved, 242-byte frames each: top shows bytes and packets in the
        // same units as the wire.
        assert_eq!(b.bytes - a.bytes, (b.packets - a.packets) * (ETH_IP_8 + 200), "{dir}: {a:?} → {b:?}\n{both}");
        // A rate is per second, from the stack's own clock: a 242-byte frame
        // rate and its byte rate agree (within the display's rounding).
        let per_frame = b.bytes_per_s / b.packets_per_s;
        assert!(
            (per_frame - 242.0).abs() < 242.0 * 0.05,
            "{dir}: {per_frame:.1} bytes per frame from the rates\n{both}"
        );
    }
    assert_eq!(after(&second, "listeners"), Some(1), "{second}");
    assert_eq!(after(&second, "udp_no_socket"), Some(1), "{second}");
    assert!(second.contains("TCP buffers") && second.contains("ARP queue 0 / 64"), "pools missing:\n{second}");
    let ring = (after(&second, "tx ring"), second.split_once("tx ring").and_then(|(_, r)| after(r, "/")));
    assert!(matches!(ring, (Some(used), Some(size)) if size > 0 && used <= size), "TAP ring {ring:?}:\n{second}");
    assert_eq!(after(&second, "retransmits"), Some(0), "{second}");

    // The stack goes away under top: it keeps the last figures and says
    // they are stale, and still answers its keys.
    drop(hold);
    drop(ping);
    let stdout = setup.stop();
    assert!(stdout.contains("counters:"), "{stdout}");
    // The socket file goes with the stack.
    assert!(!std::path::Path::new(&sock).exists(), "{sock} left behind");
    wait_screen(&tmux, "STALE after the stack stopped", SECS(5), |s| s.contains("STALE") && s.contains("packets/s"));

    // `q` quits: the pane's command ends, top's status is 0, and the
    // terminal is back on its main screen, out of raw mode.
    tmux.run_ok(&["send-keys", "-t", "top", "q"]);
    assert_ended_and_restored(&tmux, "q");
}

/// After `how` (a key, a signal): the pane's command ends within 5 s, top's
/// status is 0, and the terminal is back on its main screen, out of raw
/// mode, with top's screen gone.
fn assert_ended_and_restored(tmux: &Tmux, how: &str) {
    // The pane may be marked dead before tmux has read the last output
    // from its terminal: wait for both.
    let deadline = Instant::now() + SECS(5);
    let last = loop {
        let last = tmux.everything();
        if tmux.format("#{pane_dead}") == "1" && last.contains("top exited with") && last.contains("icanon") {
            break last;
        }
        assert!(Instant::now() < deadline, "top not ended 5 s after {how}:\n{last}");
        std::thread::sleep(Duration::from_millis(50));
    };
    assert_eq!(tmux.format("#{alternate_on}"), "0", "after {how}, top left the alternate screen on:\n{last}");
    assert!(last.contains("top exited with 0"), "after {how}:\n{last}");
    let stty = last.lines().find(|l| l.contains("icanon")).unwrap_or_else(|| panic!("no stty output:\n{last}"));
    for flag in ["icanon", "echo", "isig"] {
        assert!(stty.split_whitespace().any(|f| f == flag), "after {how}, terminal left without {flag}: {stty}");
    }
    assert!(!last.contains("packets/s"), "after {how}, top's screen is still there:\n{last}");
}

/// The pane's command line: top (`top_args` after `ustack top`), then how it
/// ended and how the terminal was left (`stty -a` prints `-icanon -echo` if
/// raw mode was never undone).
fn top_command(ns: &Netns, top_args: &str) -> String {
    format!("ip netns exec {} {} top {top_args}; echo \"top exited with $?\"; stty -a", ns.name, ustack_bin())
}

/// SIGTERM (`kill`, a service manager) ends top like `q` does: the terminal
/// is restored, not left in raw mode on the alternate screen.
#[test]
fn top_restores_the_terminal_on_sigterm() {
    skip_unless!("tmux", "pgrep");
    let setup = Setup::new("topterm", 42, &[]);
    // A long interval: the signal must not wait for the next read.
    let tmux =
        Tmux::new("topterm", 100, 30, &top_command(&setup.ns, &format!("--device tap:{} --interval 60000", setup.tap)));
    wait_screen(&tmux, "first frame", SECS(10), |s| s.contains("ustack top") && s.contains("packets/s"));
    // The pane's shell runs top as its child (`ip netns exec` execs it).
    let shell = tmux.format("#{pane_pid}");
    let out = run_bounded(
        {
            let mut c = std::process::Command::new("pgrep");
            c.args(["-P", &shell]);
            c
        },
        None,
        SECS(5),
    );
    let pids: Vec<&str> = out
        .stdout
        .split(|b| *b == b'\n')
        .filter_map(|l| std::str::from_utf8(l).ok())
        .filter(|l| !l.is_empty())
        .collect();
    assert_eq!(pids.len(), 1, "children of the pane's shell {shell}: {out}");
    let st = std::process::Command::new("kill").args(["-TERM", pids[0]]).status().expect("run kill");
    assert!(st.success(), "kill -TERM {}", pids[0]);
    assert_ended_and_restored(&tmux, "SIGTERM");
}

// ----------------------------------------------------------------- stats ---

/// UDP echo client: one socket, one datagram of each size in argv[3..] to
/// argv[1]:argv[2], each echo awaited and compared. Prints "echoed N".
const UDP_ECHO: &str = r#"
import socket, sys
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s.settimeout(5)
dst = (sys.argv[1], int(sys.argv[2]))
n = 0
for i, size in enumerate(int(a) for a in sys.argv[3:]):
    data = bytes((i * 31 + j * 7) & 0xff for j in range(size))
    s.sendto(data, dst)
    back, src = s.recvfrom(65536)
    if back != data or src != dst:
        sys.exit("datagram %d (%d bytes): %d bytes back from %s" % (i, size, len(back), src))
    n += 1
print("echoed %d" % n)
"#;

/// Frames and bytes one way, by kind, read from a pcap file.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
struct Tally {
    frames: u64,
    bytes: u64,
    arp: u64,
    icmp: u64,
    udp: u64,
    tcp: u64,
    tcp_bytes: u64,
    other: u64,
}

/// (from the stack, to the stack) in a classic pcap of Ethernet frames;
/// sizes are the frames' original lengths (the capture may be cut short).
fn tally_pcap(bytes: &[u8], stack_mac: [u8; 6]) -> (Tally, Tally) {
    let (mut out, mut inn) = (Tally::default(), Tally::default());
    for (orig, frame) in support::pcap_records(bytes) {
        assert!(frame.len() >= 14, "runt frame in the capture");
        let t = if frame[6..12] == stack_mac { &mut out } else { &mut inn };
        t.frames += 1;
        t.bytes += orig;
        match (u16::from_be_bytes([frame[12], frame[13]]), frame.get(14 + 9)) {
            (0x0806, _) => t.arp += 1,
            (0x0800, Some(1)) => t.icmp += 1,
            (0x0800, Some(17)) => t.udp += 1,
            (0x0800, Some(6)) => {
                t.tcp += 1;
                t.tcp_bytes += orig;
            }
            _ => t.other += 1,
        }
    }
    (out, inn)
}

fn parse_mac(s: &str) -> [u8; 6] {
    let v: Vec<u8> = s.split(':').map(|h| u8::from_str_radix(h, 16).unwrap()).collect();
    v.try_into().unwrap_or_else(|_| panic!("bad MAC {s}"))
}

/// The kernel's packet and byte counters for `dev` in `ns` (`ip -s -j link`):
/// (rx packets, rx bytes, tx packets, tx bytes).
fn kernel_link_stats(ns: &Netns, dev: &str) -> (u64, u64, u64, u64) {
    let out = ns.exec_ok(&["ip", "-s", "-j", "link", "show", "dev", dev], SECS(5));
    let v: Value = serde_json::from_slice(&out.stdout).unwrap_or_else(|e| panic!("ip -j: {e}: {out}"));
    let s = &v[0]["stats64"];
    (num(s, "rx.packets"), num(s, "rx.bytes"), num(s, "tx.packets"), num(s, "tx.bytes"))
}

#[test]
fn stats_json_matches_traffic_sent() {
    skip_unless!("ping", "tcpdump", python());
    let mut setup = Setup::new("stats", 41, &[]);
    let ip = setup.stack_ip.clone();
    let files = TempDir::new("stats");
    let pcap = files.file("tap.pcap");

    // Nothing has moved yet: the kernel's neighbour is pinned and IPv6 is off.
    let before = setup.stats();
    assert_eq!(num(&before, "interfaces.0.rx_packets") + num(&before, "interfaces.0.tx_packets"), 0, "{before:#}");
    let tcpdump = support::tcp::tcpdump(&setup.ns, &setup.tap, &pcap, "");

    // ICMP: N echo requests of S bytes, every one answered. One first, on
    // its own: the stack holds only 3 packets per neighbour while it ARPs
    // for the kernel, and on a loaded machine a 10 ms flood could outrun
    // that exchange.
    const N: u64 = 25;
    const S: u64 = 300;
    for (count, interval) in [(1, "1"), (N - 1, "0.01")] {
        let out = setup.ns.exec(
            &["ping", "-n", "-q", "-c", &count.to_string(), "-i", interval, "-W", "2", "-s", &S.to_string(), &ip],
            SECS(30),
        );
        assert!(out.success() && out.stdout_str().contains(&format!(" {count} received")), "ping: {out}");
    }
    // UDP: one datagram of each size, echoed back unchanged.
    let sizes: [u64; 7] = [18, 100, 512, 999, 1000, 1400, 1472];
    let mut argv = vec![python().to_owned(), "-c".into(), UDP_ECHO.into(), ip.clone(), ECHO_PORT.into()];
    argv.extend(sizes.iter().map(u64::to_string));
    let out = setup.ns.exec(&argv.iter().map(String::as_str).collect::<Vec<_>>(), SECS(30));
    assert!(out.success() && out.stdout_str().contains(&format!("echoed {}", sizes.len())), "UDP echo: {out}");
    // TCP: one echo of M bytes, connection closed both ways.
    const M: u64 = 20_000;
    let input = files.path("tcp.in");
    support::tcp::write_random_file(&input, M as usize, 5);
    let output = files.file("tcp.out");
    let out = support::tcp::echo_client(&setup.ns, &ip, 7, input.to_str().unwrap(), &output, SECS(30));
    assert!(out.success() && out.stdout_str().contains(&format!("sent {M} received {M}")), "TCP echo: {out}");

    // Let the last ACKs land: the connection is gone from the stack's table
    // and two reads in a row agree.
    let deadline = Instant::now() + SECS(10);
    let mut last = setup.stats();
    loop {
        std::thread::sleep(Duration::from_millis(200));
        let now = setup.stats();
        let settled = num(&now, "tcp.connections") == 0 && now["interfaces"] == last["interfaces"];
        last = now;
        if settled {
            break;
        }
        assert!(Instant::now() < deadline, "traffic did not settle in 10 s:\n{last:#}");
    }
    tcpdump.stop("INT", SECS(10));
    let snap = setup.stats();
    assert_eq!(snap["interfaces"], last["interfaces"], "frames moved after the traffic settled");
    let c = &snap["counters"];
    let dump = format!("{snap:#}");

    // The stack's view, per protocol, against what the test sent.
    let k = sizes.len() as u64;
    assert_eq!(num(c, "icmp_rx"), N, "{dump}");
    assert_eq!(num(c, "icmp_echo_replies_sent"), N, "{dump}");
    assert_eq!(num(c, "icmp_errors_sent"), 0, "{dump}");
    assert_eq!(num(c, "udp_rx"), k, "{dump}");
    assert_eq!(num(c, "udp_tx"), k, "{dump}");
    assert_eq!(num(c, "tcp_established"), 1, "{dump}");
    assert_eq!(num(c, "tcp_rst_sent"), 0, "{dump}");
    let (tcp_rx, tcp_tx) = (num(c, "tcp_rx"), num(c, "tcp_tx"));
    assert_eq!(num(c, "ipv4_rx"), N + k + tcp_rx, "{dump}");
    let arp_rx = num(c, "arp_rx");
    let arp_tx = num(c, "arp_requests_sent") + num(c, "arp_replies_sent");
    // The stack resolves the kernel once (a request and its reply, or
    // nothing if it learned the kernel's address from traffic).
    assert!(arp_rx <= 1 && arp_tx <= 1, "ARP beyond one exchange: {dump}");
    let drops: u64 = snap["drops"].as_object().expect("drops").values().map(|v| v.as_u64().unwrap()).sum();
    assert_eq!(drops, 0, "{dump}");

    // The capture: what really crossed the TAP, split by direction.
    let (out, inn) = tally_pcap(&std::fs::read(&pcap).unwrap(), parse_mac(&setup.stack_mac));
    let wire = format!("on the wire: from the stack {out:?}, to the stack {inn:?}\n{dump}");
    assert_eq!((inn.other, out.other), (0, 0), "frames the test did not send: {wire}");
    assert_eq!((inn.arp, out.arp), (arp_rx, arp_tx), "ARP: {wire}");
    assert_eq!((inn.icmp, out.icmp), (N, N), "ICMP: {wire}");
    assert_eq!((inn.udp, out.udp), (k, k), "UDP: {wire}");
    assert_eq!((inn.tcp, out.tcp), (tcp_rx, tcp_tx), "TCP segments: {wire}");

    // The interface, both ways: exactly the test's frames plus ARP. ICMP and
    // UDP sizes are known; TCP's (handshake, ACKs, options) come from the capture.
    let udp_bytes: u64 = sizes.iter().map(|b| ETH_IP_8 + b).sum();
    let rx_frames = arp_rx + N + k + tcp_rx;
    let rx_bytes = arp_rx * ARP_FRAME + N * (ETH_IP_8 + S) + udp_bytes + inn.tcp_bytes;
    let tx_frames = arp_tx + N + k + tcp_tx;
    let tx_bytes = arp_tx * ARP_FRAME + N * (ETH_IP_8 + S) + udp_bytes + out.tcp_bytes;
    let i = &snap["interfaces"][0];
    assert_eq!(i["name"], format!("tap:{}", setup.tap), "{dump}");
    let stack_view = (num(i, "rx_packets"), num(i, "rx_bytes"), num(i, "tx_packets"), num(i, "tx_bytes"));
    assert_eq!(stack_view, (rx_frames, rx_bytes, tx_frames, tx_bytes), "rx/tx packets and bytes: {wire}");
    assert_eq!(stack_view, (inn.frames, inn.bytes, out.frames, out.bytes), "stack vs capture: {wire}");
    let d = &i["device_counters"];
    assert!(num(d, "tx_ring_size") > 0, "no TAP ring size: {dump}");
    let device_view = (num(d, "rx_frames"), num(d, "rx_bytes"), num(d, "tx_frames"), num(d, "tx_bytes"));
    assert_eq!(device_view, stack_view, "TAP device counters vs the stack's: {dump}");
    for name in ["rx_errors", "tx_full", "tx_dropped", "tx_ring_in_use"] {
        assert_eq!(num(d, name), 0, "device {name}: {dump}");
    }
    // The kernel's side of the TAP: what it sent is what the stack received.
    let (k_rx, k_rx_b, k_tx, k_tx_b) = kernel_link_stats(&setup.ns, &setup.tap);
    assert_eq!((k_tx, k_tx_b, k_rx, k_rx_b), stack_view, "kernel's TAP counters (tx, rx) vs the stack's (rx, tx)");

    // The rest of the snapshot: TCP table and pools back to idle.
    assert_eq!(num(&snap, "tcp.listeners"), 1, "{dump}");
    assert_eq!(num(&snap, "tcp.states.ESTABLISHED"), 0, "{dump}");
    assert_eq!(num(&snap, "pools.tcp_buffers.in_use"), 0, "{dump}");
    assert_eq!(num(&snap, "pools.neighbor_pending.in_use"), 0, "{dump}");
    assert_eq!(num(&snap, "neighbors"), 1, "{dump}");

    // The plain form prints the same counters.
    let dev = format!("tap:{}", setup.tap);
    let plain = setup.ns.exec(&[ustack_bin(), "stats", "--device", &dev], SECS(10));
    assert!(plain.success(), "ustack stats: {plain}");
    let text = plain.stdout_str();
    for (name, want) in [("icmp_echo_replies_sent", N), ("udp_tx", k), ("rx_frames", rx_frames), ("tx_bytes", tx_bytes)]
    {
        let line = text.lines().find(|l| l.split_whitespace().next() == Some(name));
        let got = line.and_then(|l| l.split_whitespace().nth(1)).and_then(|v| v.parse::<u64>().ok());
        assert_eq!(got, Some(want), "{name} in `ustack stats`:\n{text}");
    }
    // ... and the device's counters, the TCP table and the pools, as `k v` pairs.
    let line = |label: &str| {
        let l = text.lines().find(|l| l.split_whitespace().next() == Some(label));
        l.unwrap_or_else(|| panic!("no `{label}` line in `ustack stats`:\n{text}"))
            .split_whitespace()
            .collect::<Vec<_>>()
    };
    let pair =
        |words: &[&str], key: &str| words.windows(2).find(|w| w[0] == key).and_then(|w| w[1].parse::<u64>().ok());
    let device = line("device");
    assert_eq!(pair(&device, "rx_frames"), Some(rx_frames), "{text}");
    assert_eq!(pair(&device, "tx_bytes"), Some(tx_bytes), "{text}");
    let tcp = line("tcp");
    assert_eq!((pair(&tcp, "connections"), pair(&tcp, "listeners")), (Some(0), Some(1)), "{text}");
    assert!(line("pools").contains(&"tcp_buffers"), "{text}");

    // And the exit report agrees with the last snapshot.
    let stdout = setup.stop();
    let exit = support::parse_counters(&stdout).unwrap_or_else(|| panic!("no counters at exit:\n{stdout}"));
    // (poll_* count the apps' own work, which goes on while idle.)
    for (name, value) in c.as_object().unwrap().iter().filter(|(n, _)| !n.starts_with("poll_")) {
        let value = value.as_u64().unwrap();
        assert_eq!(exit.get(name).copied().unwrap_or(0), value, "{name}: snapshot vs exit report\n{stdout}");
    }
}

/// With no stack behind the socket, `stats` and `top` say so in one line
/// and exit 1, before `top` touches the terminal. Needs no privileges.
#[test]
fn stats_and_top_without_a_stack_fail_in_one_line() {
    let dir = TempDir::new("nostack");
    let sock = dir.file("none.sock");
    for argv in [
        vec!["stats", "--control", &sock],
        vec!["stats", "--json", "--control", &sock],
        vec!["top", "--control", &sock],
    ] {
        let mut c = std::process::Command::new(ustack_bin());
        c.args(&argv);
        let out = run_bounded(c, None, SECS(10));
        assert_eq!(out.code(), Some(1), "ustack {argv:?}: {out}");
        let lines: Vec<&str> = out.stderr.lines().collect();
        assert!(lines.len() == 1 && lines[0].starts_with("ustack: error: "), "ustack {argv:?}: {out}");
        assert!(lines[0].contains(&sock) && lines[0].contains("ustack up"), "ustack {argv:?}: {out}");
        // Nothing on stdout: no half-drawn screen, no partial JSON.
        assert!(out.stdout.is_empty(), "ustack {argv:?}: {out}");
    }
    let mut c = std::process::Command::new(ustack_bin());
    c.args(["stats", "--device", "ust0"]);
    let out = run_bounded(c, None, SECS(10));
    assert_eq!(out.code(), Some(1), "{out}");
    assert!(out.stderr.contains("tap:NAME"), "{out}");
}
