//! Scale against real peers: 20,000 concurrent TCP connections from Linux
//! clients to the `ustack up --tcp-echo` service over a TAP, all held open at
//! the same time, then each echoing one distinct message.
//!
//! Topology: namespace `ust-tcpmany-<pid>` with kernel IPv6 off; a TAP
//! `tm1p<pid>` made by the test (TSO/GSO/GRO off) before the stack opens it;
//! the stack is 10.22.40.2/16 and the kernel's side 10.22.40.1/16
//! (`--host-ip`) plus 10.22.40.10 … 10.22.40.13, the clients' four source
//! addresses (5,000 connections each, far from the ~28k ephemeral ports one
//! address has).
//!
//! The client is `tests/scripts/many_clients.py`: four forked python worker
//! processes (more if `RLIMIT_NOFILE` is under 5,000-odd), each with one
//! source address and 5,000 non-blocking sockets on epoll, stepped through
//! the phases together by their parent. One process cannot be counted on to
//! hold 20,000 sockets: where CAP_SYS_RESOURCE is missing (containers) the
//! hard `RLIMIT_NOFILE` may be exactly 20,000. The workers connect with at
//! most 100 handshakes in flight in all (the echo app listens with a backlog
//! of 128), each source's first handshake alone so the stack has resolved
//! its MAC before the burst (its queue for an unresolved neighbour holds 3
//! packets). Then the parent checks that all 20,000 are open at once on both
//! sides (the workers' sockets see nothing, the kernel's /proc/net/tcp, and
//! the stack's own `ustack stats --json` ESTABLISHED count), the workers send
//! 16 bytes carrying the connection index on each and check every echo, and
//! close every connection (half-close, wait for the stack's FIN). The stack
//! then must hold no connection, and its counters must show exactly 20,000
//! handshakes, 320,000 echoed bytes, no RST, no refusal and no packet dropped
//! for want of a MAC.
//!
//! The echo service caps its connections (`--max-connections`, default
//! 1024); the test raises the cap to exactly the client count.
//!
//! Needs root, python3 and ethtool (skips with a printed reason otherwise).
//! Bounded: the client gives up after 150 s and is killed at 200 s (its
//! workers die with it: PR_SET_PDEATHSIG); every other wait is a few seconds.
//! The namespace, the stack and the client are removed by guards, also when
//! the test fails. It takes a few seconds here (2 cores, test profile).

#[macro_use]
mod support;

use std::time::{Duration, Instant};
use support::tcp::{counter, diagnostics, precreate_tap, python, quiet_namespace, stack_pid, stats_json, Bg, SECS};
use support::{parse_counters, run_bounded, ustack_bin, Netns};

/// Connections held open at once.
const CLIENTS: usize = 20_000;
/// Source addresses on the kernel's side (host part of 10.22.SUBNET.x).
const SOURCES: [u8; 4] = [10, 11, 12, 13];
/// Second-to-last octet of every address of this test (10.22.SUBNET.x/16).
const SUBNET: u8 = 40;
const ECHO_PORT: u16 = 7;
/// Client processes sharing the connections (5,000 sockets each).
const PROCS: usize = 4;
/// Handshakes (and later echoes, and closes) the clients keep in flight, in all.
const WINDOW: usize = 100;
/// The client's own deadline for all of its phases, and our hard bound on it.
const CLIENT_DEADLINE_S: u64 = 150;
const CLIENT_KILL: Duration = Duration::from_secs(200);

fn script() -> &'static str {
    concat!(env!("CARGO_MANIFEST_DIR"), "/tests/scripts/many_clients.py")
}

/// `ustack stats --json` in `ns`, parsed.
fn snapshot(ns: &Netns, tap: &str) -> Option<serde_json::Value> {
    let dev = format!("tap:{tap}");
    let out = ns.exec(&[ustack_bin(), "stats", "--device", &dev, "--json"], SECS(10));
    if !out.success() {
        return None;
    }
    serde_json::from_slice(&out.stdout).ok()
}

fn tcp_field(snap: &serde_json::Value, path: &[&str]) -> u64 {
    let mut v = &snap["tcp"];
    for p in path {
        v = &v[*p];
    }
    v.as_u64().unwrap_or(0)
}

#[test]
fn twenty_thousand_linux_clients_held_open_then_echo() {
    skip_unless!("ethtool");
    if let Some(r) = support::skip_reason_with(&[python()]) {
        eprintln!("SKIPPED: {r}");
        return;
    }
    let started = Instant::now();
    let ns = Netns::new("tcpmany");
    quiet_namespace(&ns);
    let tap = support::short_name("tm", 1);
    precreate_tap(&ns, &tap, None);

    let stack_ip = format!("10.22.{SUBNET}.2");
    let host_ip = format!("10.22.{SUBNET}.1");
    let dev = format!("tap:{tap}");
    let ip_arg = format!("{stack_ip}/16");
    let host_arg = format!("{host_ip}/16");
    let port_s = ECHO_PORT.to_string();
    let max_s = CLIENTS.to_string();
    let mut stack = Bg::spawn(
        &ns,
        &[
            ustack_bin(),
            "up",
            "--device",
            &dev,
            "--ip",
            &ip_arg,
            "--host-ip",
            &host_arg,
            "--tcp-echo",
            &port_s,
            "--max-connections",
            &max_s,
        ],
    );
    let up_line = format!("ustack: up on {dev}");
    stack.wait_ready("up with TCP echo", SECS(10), |e| e.contains(&up_line) && e.contains("TCP echo on port"));

    // The kernel's side: the host address (given by ustack) and then the
    // clients' source addresses, all in the stack's /16.
    let deadline = Instant::now() + SECS(5);
    loop {
        let out = ns.exec(&["ip", "-4", "addr", "show", "dev", &tap], SECS(5));
        let text = out.stdout_str();
        if out.success() && text.contains(&format!("inet {host_arg}")) && text.contains(",UP") {
            break;
        }
        assert!(Instant::now() < deadline, "TAP {tap} not up with {host_arg}: {out}\n{}", stack.stderr_now());
        std::thread::sleep(Duration::from_millis(20));
    }
    let sources: Vec<String> = SOURCES.iter().map(|h| format!("10.22.{SUBNET}.{h}")).collect();
    for s in &sources {
        ns.exec_ok(&["ip", "addr", "add", &format!("{s}/16"), "dev", &tap], SECS(5));
    }

    let stats_cmd = serde_json::json!([ustack_bin(), "stats", "--device", dev, "--json"]).to_string();
    let stack_pid = format!("{}", stack_pid(&ns, &tap));
    let (count_s, procs_s, window_s, deadline_s, srcs) =
        (CLIENTS.to_string(), PROCS.to_string(), WINDOW.to_string(), CLIENT_DEADLINE_S.to_string(), sources.join(","));
    let argv = [
        python(),
        script(),
        "--dst",
        &stack_ip,
        "--port",
        &port_s,
        "--srcs",
        &srcs,
        "--count",
        &count_s,
        "--procs",
        &procs_s,
        "--window",
        &window_s,
        "--deadline",
        &deadline_s,
        "--stats-cmd",
        &stats_cmd,
        "--stack-pid",
        &stack_pid,
    ];
    let t = Instant::now();
    let out = run_bounded(ns.command(&argv), None, CLIENT_KILL);
    let client_took = t.elapsed();
    eprintln!("client ({:.1} s):\n{}", client_took.as_secs_f64(), out.stderr);
    let stdout = out.stdout_str();
    let result: Option<serde_json::Value> =
        stdout.lines().find_map(|l| l.strip_prefix("RESULT ")).and_then(|j| serde_json::from_str(j).ok());
    let Some(result) = result else {
        // `ss` lists every socket left: 20,000 lines would bury the cause.
        let mut diag = diagnostics(&ns, &tap);
        if diag.len() > 20_000 {
            let cut = diag.char_indices().nth(20_000).map_or(diag.len(), |(i, _)| i);
            diag.truncate(cut);
            diag.push_str("\n[diagnostics cut at 20,000 characters]");
        }
        panic!("no RESULT from the client: {out}\n{}\n{diag}", stats_json(&ns, &tap));
    };
    eprintln!("client result: {result}");
    assert!(
        out.success() && result["ok"] == true,
        "client failed: {}\n{out}\n{}\nustack stderr:\n{}",
        result["error"],
        stats_json(&ns, &tap),
        stack.stderr_now()
    );
    let n = CLIENTS as u64;
    assert_eq!(result["established"].as_u64(), Some(n), "{result}");
    assert_eq!(result["kernel_established_held"].as_u64(), Some(n), "{result}");
    assert_eq!(result["stack_established_held"].as_u64(), Some(n), "{result}");
    assert_eq!(result["echoed"].as_u64(), Some(n), "{result}");
    assert_eq!(result["closed"].as_u64(), Some(n), "{result}");

    // Every connection ended on the stack's side too (passive close: no
    // TIME-WAIT there), bounded.
    let deadline = Instant::now() + SECS(30);
    let last = loop {
        let snap = snapshot(&ns, &tap).unwrap_or_else(|| panic!("no snapshot: {}", stats_json(&ns, &tap)));
        if tcp_field(&snap, &["connections"]) == 0 {
            break snap;
        }
        assert!(Instant::now() < deadline, "stack still holds connections 30 s after the clients closed: {snap}");
        std::thread::sleep(Duration::from_millis(200));
    };

    let (stdout, stderr) = stack.stop_both("TERM", SECS(10));
    assert!(!stderr.contains("panicked") && !stderr.contains("RUST_BACKTRACE"), "ustack panicked; stderr:\n{stderr}");
    let c =
        parse_counters(&stdout).unwrap_or_else(|| panic!("no counters after SIGTERM:\n{stdout}\nstderr:\n{stderr}"));
    assert_eq!(counter(&c, "tcp_established"), n, "handshakes; counters:\n{stdout}");
    assert_eq!(counter(&c, &format!("tcp_echo_{ECHO_PORT}_bytes")), 16 * n, "echoed bytes; counters:\n{stdout}");
    for name in [
        "tcp_rst_sent",
        "drop_tcp_table_full",
        "drop_tcp_checksum",
        "drop_tcp_malformed",
        "drop_tcp_no_buffer",
        "drop_neighbor_pending_full",
    ] {
        assert_eq!(counter(&c, name), 0, "{name}; counters:\n{stdout}");
    }
    eprintln!(
        "{CLIENTS} connections from {} sources held open at once and echoed: client {:.1} s (phases {}), \
         stack RSS while holding {} KiB, pools while holding {}, retransmits {}; test {:.1} s",
        sources.len(),
        client_took.as_secs_f64(),
        result["phases"],
        result["stack_rss_kib_held"],
        result["stack_pools_held"],
        tcp_field(&last, &["retransmits"]),
        started.elapsed().as_secs_f64()
    );
}
