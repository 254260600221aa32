//! The config file (`--config FILE`, `--set KEY=VALUE`, `ustack config`).
//!
//! - `readme_tunables_table_is_generated`: README's table between the
//!   `tunables:begin`/`end` markers is exactly `ustack config --markdown`.
//! - `defaults_file_reads_back_as_the_defaults`: `ustack config --config
//!   <the defaults>` prints the defaults again, byte for byte.
//! - `bad_config_is_one_line_and_exit_2`: each kind of bad file (unknown
//!   key, unknown section, wrong type, out of range, bad TOML, missing file)
//!   and bad `--set`, on `up`, `get`, `perf` and `demo`: exit status 2, one line
//!   naming the key, the value and what is allowed, before any device opens
//!   (no privileges needed: the TAP is never touched).
//! - `defaults_file_behaves_as_no_file` (root): two stacks in one namespace,
//!   one without a file, one with `ustack config --defaults`'s file. Both
//!   report the same configuration in `stats --json`, answer ping and TCP
//!   echo, and offer the same SYN-ACK (MSS, window scale, window).
//! - `changed_tunables_show_in_behaviour_and_stats` (root): a stack with a
//!   16 KiB receive buffer, NewReno and a neighbour cache of 2, beside one
//!   with the defaults: the kernel's connection sees a window of at most
//!   16 KiB (against more than 16 KiB from the default stack), `stats`
//!   reports NewReno, and after pings from four kernel addresses the tuned
//!   stack holds at most 2 neighbours while the default one holds 4.
//!
//! - `http_timeouts_come_from_the_file` (root): `ustack up --http-root` with
//!   `[http] request_timeout = "1s"` in its file closes a connection that
//!   sends no request within 10 s (the default is 20 s), and `stats` reports
//!   the value.
//!
//! Root tests skip themselves otherwise; each uses its own namespace
//! `ust-cfg*-<pid>` and TAPs, bounded waits, and guards that clean up.

#[macro_use]
mod support;

use serde_json::Value;
use std::time::Duration;
use support::tcp::{python, Bg, TempDir};
use support::{run_bounded, ustack_bin, Netns, Output};

const SECS: fn(u64) -> Duration = Duration::from_secs;

fn ustack(args: &[&str]) -> Output {
    let mut c = std::process::Command::new(ustack_bin());
    c.args(args);
    run_bounded(c, None, SECS(20))
}

fn defaults() -> String {
    let out = ustack(&["config", "--defaults"]);
    assert!(out.success(), "ustack config --defaults: {out}");
    out.stdout_str()
}

#[test]
fn readme_tunables_table_is_generated() {
    let readme = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../../README.md")).expect("README.md");
    let begin = readme.find("<!-- tunables:begin").expect("README has a tunables:begin marker");
    let body = &readme[begin..];
    let body = &body[body.find('\n').expect("marker line ends") + 1..];
    let end = body.find("<!-- tunables:end -->").expect("README has a tunables:end marker");
    let out = ustack(&["config", "--markdown"]);
    assert!(out.success(), "{out}");
    assert_eq!(
        &body[..end],
        out.stdout_str(),
        "README's tunables table differs from `ustack config --markdown`: paste its output between the markers"
    );
}

#[test]
fn defaults_file_reads_back_as_the_defaults() {
    let dir = TempDir::new("cfg-rt");
    let file = dir.file("defaults.toml");
    let text = defaults();
    std::fs::write(&file, &text).unwrap();
    let out = ustack(&["config", "--config", &file]);
    assert!(out.success(), "{out}");
    assert_eq!(out.stdout_str(), text);
    // Every key is there, each under a one-line comment.
    let keys = text.lines().filter(|l| !l.starts_with('#') && l.contains(" = ")).count();
    let comments = text.lines().zip(text.lines().skip(1)).filter(|(a, b)| a.starts_with("# ") && b.contains(" = ")).count();
    assert!(keys >= 50 && comments == keys, "{keys} keys, {comments} commented:\n{text}");
    // The demo's two stacks run with the file and a --set.
    let out = ustack(&[
        "demo", "--pings", "10", "--datagrams", "10", "--http-mib", "1", "--connections", "10",
        "--config", &file, "--set", "tcp.congestion=newreno",
    ]);
    assert!(out.success(), "demo with the defaults file: {out}");
    // --set lands in the printed file.
    let out = ustack(&["config", "--config", &file, "--set", "tcp.congestion=newreno", "--set", "tcp.min_rto=5ms"]);
    assert!(out.success(), "{out}");
    let s = out.stdout_str();
    assert!(s.contains("\ncongestion = \"newreno\"\n") && s.contains("\nmin_rto = \"5ms\"\n"), "{s}");
}

#[test]
fn bad_config_is_one_line_and_exit_2() {
    let dir = TempDir::new("cfg-bad");
    let write = |name: &str, text: &str| {
        let p = dir.file(name);
        std::fs::write(&p, text).unwrap();
        p
    };
    let missing = dir.file("missing.toml");
    // (file or --set, what the one line must contain)
    let cases: Vec<(Vec<String>, Vec<&str>)> = vec![
        (
            vec!["--config".into(), write("unknown.toml", "[tcp]\nrecv_bufer_size = 65536\n")],
            vec!["unknown key tcp.recv_bufer_size", "did you mean tcp.recv_buffer_size", "ustack config --defaults"],
        ),
        (vec!["--config".into(), write("section.toml", "[tpc]\nsack = true\n")], vec!["unknown section [tpc]", "[stack], [tcp]"]),
        (
            vec!["--config".into(), write("type.toml", "[tcp]\nsack = \"yes\"\n")],
            vec!["tcp.sack = \"yes\"", "expected true or false"],
        ),
        (
            vec!["--config".into(), write("range.toml", "[stack]\nneighbor_pending_per_entry = 9\n")],
            vec!["stack.neighbor_pending_per_entry = 9", "out of range", "allowed: 1 to 8"],
        ),
        (
            vec!["--config".into(), write("time.toml", "[tcp]\nmin_rto = 200\n")],
            vec!["tcp.min_rto = 200", "a duration with a unit", "allowed: 1ms to 60s"],
        ),
        (vec!["--config".into(), write("syntax.toml", "[tcp]\nsack = \n")], vec!["line 2, column", "not valid TOML"]),
        (vec!["--config".into(), missing.clone()], vec![&missing, "cannot read it", "No such file"]),
        (
            vec!["--set".into(), "tcp.congestion=vegas".into()],
            vec!["tcp.congestion = \"vegas\"", "\"cubic\" or \"newreno\""],
        ),
        (vec!["--set".into(), "tcp.recv_buffer_size".into()], vec!["expected KEY=VALUE"]),
        (
            vec!["--config".into(), write("gw6.toml", "[ipv6]\ngateway = \"ff02::2\"\n")],
            vec!["ipv6.gateway = \"ff02::2\"", "an IPv6 unicast address"],
        ),
        (
            vec!["--set".into(), "tcp.min_rto=2s".into(), "--set".into(), "tcp.max_rto=1s".into()],
            vec!["tcp.min_rto = \"2s\"", "tcp.max_rto = \"1s\""],
        ),
    ];
    let commands: [&[&str]; 4] = [
        &["demo", "--pings", "1", "--datagrams", "1", "--http-mib", "0", "--connections", "0"],
        &["up", "--device", "tap:cfgbad0", "--ip", "10.9.9.2/24"],
        &["get", "http://10.9.9.1/", "--device", "tap:cfgbad0", "--ip", "10.9.9.2/24"],
        &["perf", "-s", "--device", "tap:cfgbad0", "--ip", "10.9.9.2/24"],
    ];
    for command in commands {
        for (extra, needles) in &cases {
            let mut argv: Vec<&str> = command.to_vec();
            argv.extend(extra.iter().map(String::as_str));
            let out = ustack(&argv);
            assert_eq!(out.code(), Some(2), "ustack {argv:?}: {out}");
            let lines: Vec<&str> = out.stderr.lines().collect();
            assert!(lines.len() == 1 && lines[0].starts_with("ustack: error: "), "ustack {argv:?}: {out}");
            for n in needles {
                assert!(lines[0].contains(n), "ustack {argv:?}: no '{n}' in: {}", lines[0]);
            }
            assert!(out.stdout.is_empty(), "ustack {argv:?}: {out}");
        }
    }
    // The device is never opened: no TAP was created by any of these runs.
    assert!(!std::path::Path::new("/sys/class/net/cfgbad0").exists());
}

// ------------------------------------------------------------ real stacks ---

/// `ustack up` on its own TAP in `ns`, as 10.78.N.2/24 with TCP echo on 7;
/// the kernel's side is 10.78.N.1/24.
struct Up {
    stack: Option<Bg>,
    tap: String,
    ip: String,
}

impl Up {
    fn start(ns: &Netns, n: u8, extra: &[&str]) -> Up {
        let tap = support::short_name("uc", n);
        let (ip, host) = (format!("10.78.{n}.2"), format!("10.78.{n}.1/24"));
        let (dev, cidr) = (format!("tap:{tap}"), format!("{ip}/24"));
        let mut argv = vec![ustack_bin(), "up", "--device", &dev, "--ip", &cidr, "--host-ip", &host, "--tcp-echo", "7"];
        argv.extend_from_slice(extra);
        let mut stack = Bg::spawn(ns, &argv);
        stack.wait_ready("serving TCP echo", SECS(10), |e| e.contains("TCP echo on port 7"));
        if let Err(out) = support::wait_tap_up(ns, &tap, &host, SECS(5)) {
            panic!("TAP {tap} not up with {host}: {out}\nustack: {}", stack.stderr_now());
        }
        Up { stack: Some(stack), tap, ip }
    }

    fn stats(&self, ns: &Netns) -> Value {
        let dev = format!("tap:{}", self.tap);
        let out = ns.exec(&[ustack_bin(), "stats", "--device", &dev, "--json"], SECS(10));
        assert!(out.success(), "ustack stats --json: {out}");
        serde_json::from_slice(&out.stdout).unwrap_or_else(|e| panic!("stats --json is not JSON ({e}): {out}"))
    }

    fn stop(&mut self) {
        if let Some(stack) = self.stack.take() {
            let err = stack.stop("TERM", SECS(10));
            assert!(!err.contains("panicked"), "ustack panicked:\n{err}");
        }
    }
}

/// A namespace with IPv6 off, so only the test's own traffic moves.
fn namespace(tag: &str) -> Netns {
    let ns = Netns::new(tag);
    for kv in ["net.ipv6.conf.default.disable_ipv6=1", "net.ipv6.conf.all.disable_ipv6=1"] {
        ns.exec_ok(&["sysctl", "-qw", kv], SECS(5));
    }
    ns
}

/// Open a TCP connection from the kernel to `ip`:7, echo 100 bytes, and
/// report the window the stack advertises as the kernel sees it (`ss`'s
/// `snd_wnd`) while the connection is open.
const ECHO_AND_WINDOW: &str = r#"
import socket, subprocess, sys, re
s = socket.create_connection((sys.argv[1], 7), timeout=10)
s.sendall(b"x" * 100)
got = b""
while len(got) < 100:
    chunk = s.recv(4096)
    if not chunk:
        break
    got += chunk
ss = subprocess.run(["ss", "-tinH", "dst", sys.argv[1]], capture_output=True, text=True).stdout
m = re.search(r"snd_wnd:(\d+)", ss)
print("echoed", len(got), "snd_wnd", m.group(1) if m else "none")
s.close()
"#;

fn echo_and_window(ns: &Netns, ip: &str) -> u64 {
    let out = ns.exec(&[python(), "-c", ECHO_AND_WINDOW, ip], SECS(30));
    let text = out.stdout_str();
    assert!(out.success() && text.contains("echoed 100 "), "TCP echo to {ip}: {out}");
    text.split_whitespace()
        .last()
        .and_then(|w| w.parse().ok())
        .unwrap_or_else(|| panic!("no snd_wnd in `ss -ti` for {ip}: {out}"))
}

fn ping(ns: &Netns, ip: &str, from: Option<&str>) -> Output {
    let mut argv = vec!["ping", "-n", "-q", "-c", "2", "-i", "0.2", "-W", "2"];
    if let Some(src) = from {
        argv.extend(["-I", src]);
    }
    argv.push(ip);
    ns.exec(&argv, SECS(20))
}

#[test]
fn defaults_file_behaves_as_no_file() {
    skip_unless!("ping", "ss", python());
    let dir = TempDir::new("cfg-same");
    let file = dir.file("defaults.toml");
    std::fs::write(&file, defaults()).unwrap();
    let ns = namespace("cfgsame");
    let mut plain = Up::start(&ns, 1, &[]);
    let mut with_file = Up::start(&ns, 2, &["--config", &file]);
    let (a, b) = (plain.stats(&ns), with_file.stats(&ns));
    assert!(a["config"].as_object().is_some_and(|o| o.len() >= 50), "no config in the snapshot:\n{a:#}");
    assert_eq!(a["config"], b["config"], "the defaults file changed the configuration");
    for up in [&plain, &with_file] {
        let out = ping(&ns, &up.ip, None);
        assert!(out.success() && out.stdout_str().contains(" 2 received"), "ping {}: {out}", up.ip);
    }
    let (wa, wb) = (echo_and_window(&ns, &plain.ip), echo_and_window(&ns, &with_file.ip));
    assert_eq!(wa, wb, "advertised windows differ");
    let (a, b) = (plain.stats(&ns), with_file.stats(&ns));
    for key in ["tcp_established", "icmp_echo_replies_sent", "drop_tcp_out_of_window", "drop_tcp_no_buffer"] {
        assert_eq!(a["counters"][key], b["counters"][key], "{key}:\n{a:#}\n{b:#}");
    }
    plain.stop();
    with_file.stop();
}

#[test]
fn changed_tunables_show_in_behaviour_and_stats() {
    skip_unless!("ping", "ss", python());
    let ns = namespace("cfgchg");
    let mut plain = Up::start(&ns, 3, &[]);
    let sets = ["tcp.recv_buffer_size=16384", "tcp.congestion=newreno", "stack.neighbor_cache_size=2"];
    let mut extra = Vec::new();
    for s in &sets {
        extra.extend(["--set", s]);
    }
    let mut tuned = Up::start(&ns, 4, &extra);

    let snap = tuned.stats(&ns);
    let cfg = &snap["config"];
    assert_eq!(cfg["tcp.congestion"], "newreno", "{snap:#}");
    assert_eq!(cfg["tcp.recv_buffer_size"], 16384, "{snap:#}");
    assert_eq!(cfg["stack.neighbor_cache_size"], 2, "{snap:#}");
    assert_eq!(plain.stats(&ns)["config"]["tcp.congestion"], "cubic");

    // The receive buffer bounds the window the kernel is offered.
    let (w_plain, w_tuned) = (echo_and_window(&ns, &plain.ip), echo_and_window(&ns, &tuned.ip));
    eprintln!("windows offered: default stack {w_plain}, tuned stack {w_tuned}");
    assert!(w_tuned > 0 && w_tuned <= 16384, "tuned stack's window {w_tuned}");
    assert!(w_plain > 16384, "default stack's window {w_plain}");

    // Four kernel addresses on each TAP ping their stack: the default stack
    // learns them all, the tuned one keeps at most two.
    // (Whether the tuned stack answers every ping depends on which entry
    // it evicts; only the default one's answers are checked.)
    for (up, n, must_answer) in [(&plain, 3, true), (&tuned, 4, false)] {
        for host in 11..=14 {
            let addr = format!("10.78.{n}.{host}");
            ns.exec_ok(&["ip", "addr", "add", &format!("{addr}/24"), "dev", &up.tap], SECS(5));
            let out = ping(&ns, &up.ip, Some(&addr));
            assert!(!must_answer || out.success(), "ping {} from {addr}: {out}", up.ip);
        }
    }
    let (np, nt) = (plain.stats(&ns)["neighbors"].as_u64(), tuned.stats(&ns)["neighbors"].as_u64());
    eprintln!("neighbours: default stack {np:?}, tuned stack {nt:?}");
    // The host's own address (.1) may be known too: it answered the echo test.
    assert!(np.is_some_and(|n| n >= 4), "default stack's neighbours: {np:?}");
    assert!(nt.is_some_and(|n| (1..=2).contains(&n)), "tuned stack's neighbours: {nt:?}");
    plain.stop();
    tuned.stop();
}

/// Connect to `ip`:`port`, send nothing, and report how long the server
/// took to close the connection (or "open" after `limit` seconds).
const SILENT_CLIENT: &str = r#"
import socket, sys, time
s = socket.create_connection((sys.argv[1], int(sys.argv[2])), timeout=float(sys.argv[3]))
t = time.monotonic()
try:
    closed = s.recv(1) == b""
except ConnectionResetError:
    closed = True
except socket.timeout:
    closed = False
print("closed" if closed else "open", round(time.monotonic() - t, 2))
"#;

#[test]
fn http_timeouts_come_from_the_file() {
    skip_unless!(python());
    let dir = TempDir::new("cfg-http");
    std::fs::write(dir.path("index.html"), "hello\n").unwrap();
    let file = dir.file("http.toml");
    std::fs::write(&file, "[http]\nrequest_timeout = \"1s\"\n").unwrap();
    let ns = namespace("cfghttp");
    let mut up = Up::start(&ns, 5, &["--config", &file, "--http-root", dir.as_str(), "--http-port", "8080"]);
    assert_eq!(up.stats(&ns)["config"]["http.request_timeout"], "1s");
    let out = ns.exec(&[python(), "-c", SILENT_CLIENT, &up.ip, "8080", "10"], SECS(30));
    eprintln!("silent client: {}", out.stdout_str().trim());
    assert!(out.success() && out.stdout_str().starts_with("closed "), "a silent client was not closed within 10 s: {out}");
    up.stop();
}
