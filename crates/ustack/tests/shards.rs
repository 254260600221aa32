//! One stack shard per core against Linux peers: `ustack up --cores 2` on
//! a multi-queue TAP (the kernel steers its queues with ustack's BPF
//! program) and on a veth through AF_PACKET fan-out (steered by ustack's
//! classic BPF program), each serving 20,000 Linux client connections that
//! each echo a distinct message.
//!
//! What must hold: every connection echoed; each shard established exactly
//! the connections whose client port the symmetric Toeplitz hash gives it
//! (so each was handled wholly there: a segment on another shard would
//! have met no connection and drawn a RST, and none did); no frame crossed
//! between shards (both devices steer by ustack's own hash); and `ustack
//! stats --json` shows each shard and their total.
//!
//! Topology: a namespace per test (TAP: the kernel side 10.23.N.1/24 by
//! `--host-ip`; veth: the stack's end bare, the kernel's end 10.77.N.1/24).
//! The client is `tests/scripts/shard_echo.py` (asyncio, at most 200
//! connections in flight, its own 60 s deadline, killed at 90 s). Needs
//! root and python3; skips otherwise. Each test takes ~15 s here; the
//! tests of this file run one at a time (each loads both cores).

#[macro_use]
mod support;

use std::net::Ipv4Addr;
use std::time::{Duration, Instant};
use support::tcp::{python, Bg, SECS};
use support::veth::{Peer, VethPair};
use support::{run_bounded, ustack_bin, Netns};
use ustack_core::rss::{ShardHome, Toeplitz};

const CLIENTS: usize = 20_000;
const WINDOW: usize = 200;
const PORT: u16 = 7;
const SHARDS: usize = 2;

fn script() -> &'static str {
    concat!(env!("CARGO_MANIFEST_DIR"), "/tests/scripts/shard_echo.py")
}

/// `ustack stats --json` for `dev` in `ns`, parsed.
fn snapshot(ns: &Netns, dev: &str) -> serde_json::Value {
    let out = ns.exec(&[ustack_bin(), "stats", "--device", dev, "--json"], SECS(10));
    assert!(out.success(), "ustack stats: {out}");
    serde_json::from_slice(&out.stdout).expect("stats --json is JSON")
}

/// Start `ustack up --cores 2 --tcp-echo 7` on `dev` in `ns`.
fn start(ns: &Netns, dev: &str, ip: &str, extra: &[&str]) -> Bg {
    let max = CLIENTS.to_string();
    let mut argv = vec![ustack_bin(), "up", "--device", dev, "--ip", ip, "--tcp-echo", "7"];
    argv.extend(["--max-connections", &max, "--cores", "2"]);
    argv.extend(extra);
    let mut stack = Bg::spawn(ns, &argv);
    stack.wait_ready("up with 2 shards", SECS(15), |e| e.contains("with 2 shards") && e.contains("TCP echo on port 7"));
    stack
}

/// The tests here each load both cores (two pinned shards, thousands of
/// clients, a saturating iperf3 test, a benchmark): run one at a time, so
/// that none waits out its bounds behind another (the 20,000-client TAP
/// test once ran past them beside the others on the 2-core CI machine).
static ONE_AT_A_TIME: std::sync::Mutex<()> = std::sync::Mutex::new(());

fn one_at_a_time() -> std::sync::MutexGuard<'static, ()> {
    // A test that failed holding the lock leaves nothing to protect.
    ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner())
}

/// Run `count` echo clients (at most `window` at once) from `client_ns`
/// against `stack_ip`, check that every one echoed, and return how many
/// of them belong to each shard by the hash of their ports.
fn echo_clients(
    client_ns: &Netns,
    stack: &Bg,
    client_ip: Ipv4Addr,
    stack_ip: Ipv4Addr,
    count: usize,
    window: usize,
) -> [u64; SHARDS] {
    let (host, n, w) = (stack_ip.to_string(), count.to_string(), window.to_string());
    let t = Instant::now();
    let out = run_bounded(client_ns.command(&[python(), script(), &host, "7", &n, &w, "60"]), None, SECS(90));
    eprintln!("clients took {:.1} s; stderr: {}", t.elapsed().as_secs_f64(), out.stderr);
    let result = support::client_result(&out, count, &stack.stderr_now());
    let home = ShardHome::new(Toeplitz::default(), 0, SHARDS);
    let mut expected = [0u64; SHARDS];
    for p in result["ports"].as_array().expect("ports") {
        let port = p.as_u64().expect("a port") as u16;
        expected[home.shard_of(stack_ip, PORT, client_ip, port)] += 1;
    }
    expected
}

/// The stack's snapshot once its shards' total shows `count` connections
/// established (shards publish four times a second), or after 20 s.
fn settled_snapshot(ns: &Netns, dev: &str, count: usize) -> serde_json::Value {
    let deadline = Instant::now() + SECS(20);
    loop {
        let snap = snapshot(ns, dev);
        if snap["counters"]["tcp_established"].as_u64() == Some(count as u64) || Instant::now() > deadline {
            return snap;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// Run the clients from `client_ns` against `stack_ip`, check every echo,
/// then check the shards' counters against the hash of each client port.
fn clients_and_shards(
    client_ns: &Netns,
    stack_ns: &Netns,
    dev: &str,
    stack: &mut Bg,
    client_ip: Ipv4Addr,
    stack_ip: Ipv4Addr,
) {
    // Ports enough for 20,000 connections that end in the client's TIME-WAIT.
    client_ns.exec_ok(&["sysctl", "-qw", "net.ipv4.ip_local_port_range=10000 65000"], SECS(5));
    let expected = echo_clients(client_ns, stack, client_ip, stack_ip, CLIENTS, WINDOW);
    assert!(expected.iter().all(|&n| n > CLIENTS as u64 / 4), "the hash spreads clients: {expected:?}");
    let snap = settled_snapshot(stack_ns, dev, CLIENTS);
    eprintln!("sharding: {}", snap["sharding"]);
    let shards = snap["shards"].as_array().expect("per-shard snapshots");
    assert_eq!(shards.len(), SHARDS);
    for (k, s) in shards.iter().enumerate() {
        let c = &s["counters"];
        assert_eq!(s["shard"].as_u64(), Some(k as u64));
        assert_eq!(
            c["tcp_established"].as_u64(),
            Some(expected[k]),
            "shard {k} (the total: {}, by hash: {expected:?}): {c}",
            snap["counters"]["tcp_established"]
        );
        assert_eq!(c["tcp_rst_sent"].as_u64(), Some(0), "shard {k}");
        assert_eq!(c["drop_tcp_no_socket"].as_u64(), Some(0), "shard {k}");
        let d = &s["interfaces"][0]["device_counters"];
        assert_eq!(d["shard_handoffs"].as_u64(), Some(0), "shard {k}: {d}");
        assert_eq!(d["shard_handoff_drops"].as_u64(), Some(0), "shard {k}: {d}");
    }
    assert_eq!(snap["counters"]["tcp_established"].as_u64(), Some(CLIENTS as u64), "the total: {}", snap["counters"]);
    assert_eq!(snap["sharding"]["shards"].as_u64(), Some(SHARDS as u64));
    assert_eq!(snap["sharding"]["handoffs"].as_u64(), Some(0));
    let echoed: u64 = shards.iter().map(|s| s["counters"]["tcp_rx"].as_u64().unwrap_or(0)).sum();
    assert_eq!(snap["counters"]["tcp_rx"].as_u64(), Some(echoed), "the total is the shards' sum");
}

#[test]
fn two_shards_on_a_multi_queue_tap_serve_twenty_thousand_clients() {
    let _serial = one_at_a_time();
    if let Some(r) = support::skip_reason_with(&[python()]) {
        eprintln!("SKIPPED: {r}");
        return;
    }
    let ns = Netns::new("shtap");
    ns.exec_ok(&["sysctl", "-qw", "net.ipv6.conf.default.disable_ipv6=1"], SECS(5));
    let tap = support::short_name("sht", 1);
    let dev = format!("tap:{tap}");
    let mut stack = start(&ns, &dev, "10.23.1.2/24", &["--host-ip", "10.23.1.1/24"]);
    clients_and_shards(&ns, &ns, &dev, &mut stack, Ipv4Addr::new(10, 23, 1, 1), Ipv4Addr::new(10, 23, 1, 2));
    let (out, err) = stack.stop_both("INT", SECS(10));
    assert!(out.contains("shard 1 (core") && out.contains("shard_handoffs 0"), "per-shard lines on exit: {out}\n{err}");
}

#[test]
fn two_shards_on_a_veth_through_af_packet_fanout_serve_twenty_thousand_clients() {
    let _serial = one_at_a_time();
    skip_unless!("ethtool");
    if let Some(r) = support::skip_reason_with(&[python()]) {
        eprintln!("SKIPPED: {r}");
        return;
    }
    let pair = VethPair::new("shv", 61, Peer::Kernel);
    let dev = format!("af_packet:{}", pair.stack_if);
    let ip = format!("{}/24", pair.stack_ip());
    let mut stack = start(&pair.stack_ns, &dev, &ip, &[]);
    let (client, server) = (pair.peer_ip().parse().unwrap(), pair.stack_ip().parse().unwrap());
    clients_and_shards(&pair.peer_ns, &pair.stack_ns, &dev, &mut stack, client, server);
    stack.stop("INT", SECS(10));
}

/// Active opens: `ustack get --cores 2` shares eight URLs out over both
/// shards; each shard's connections pick ports that hash back to it, so
/// the kernel's replies (steered by the same hash) need no handoff, and the
/// bodies come out whole and in URL order.
#[test]
fn active_opens_from_both_shards_stay_home() {
    let _serial = one_at_a_time();
    if let Some(r) = support::skip_reason_with(&[python(), "ss"]) {
        eprintln!("SKIPPED: {r}");
        return;
    }
    let ns = Netns::new("shget");
    ns.exec_ok(&["sysctl", "-qw", "net.ipv6.conf.default.disable_ipv6=1"], SECS(5));
    let tap = support::short_name("shg", 1);
    multi_queue_tap(&ns, &tap, "10.23.2.1/24");
    let dir = support::tcp::TempDir::new("shget");
    let mut want = Vec::new();
    let mut urls = Vec::new();
    for i in 1..=8u32 {
        let body: Vec<u8> = (0..i * 20_000).map(|j| (j.wrapping_mul(2654435761) >> (i % 24)) as u8).collect();
        std::fs::write(dir.path(&format!("f{i}")), &body).unwrap();
        want.extend(body);
        urls.push(format!("http://10.23.2.1:8080/f{i}"));
    }
    let _server = support::tcp::http_server(&ns, "10.23.2.1", 8080, dir.as_str());
    let dev = format!("tap:{tap}");
    let mut argv =
        vec![ustack_bin(), "get", "--device", &dev, "--ip", "10.23.2.2/24", "--cores", "2", "--timeout", "30"];
    argv.extend(urls.iter().map(String::as_str));
    let out = ns.exec(&argv, SECS(60));
    assert!(out.success(), "ustack get --cores 2: {out}");
    assert!(out.stdout == want, "bodies differ: {} bytes, want {}", out.stdout.len(), want.len());
    let err = out.stderr.clone();
    for k in 0..SHARDS {
        let line =
            err.lines().find(|l| l.starts_with(&format!("ustack: shard {k} "))).unwrap_or_else(|| panic!("{err}"));
        assert!(line.contains(": 4 URLs,") && line.contains("shard_handoffs 0,"), "{line}");
        assert!(line.contains("shard_handoff_drops 0,"), "{line}");
    }
}

/// A persistent multi-queue TAP in `ns` with the kernel's address `addr`,
/// so a server there can listen before the stack comes.
fn multi_queue_tap(ns: &Netns, tap: &str, addr: &str) {
    ns.exec_ok(&["ip", "tuntap", "add", "dev", tap, "mode", "tap", "multi_queue"], SECS(5));
    ns.exec_ok(&["ip", "addr", "add", addr, "dev", tap], SECS(5));
    ns.exec_ok(&["ip", "link", "set", tap, "up"], SECS(5));
}

/// Active opens from `ustack perf -c -P 8 --cores 2` against the kernel's
/// `iperf3 -s`: the control connection on shard 0, data stream n on shard
/// n mod 2, each from a port whose hash names the shard that opened it, so
/// the TAP (steered by ustack's hash) brings every reply home and nothing
/// is handed over. Byte counts agree on both sides, stream by stream.
#[test]
fn perf_client_streams_open_on_both_shards_and_stay_home() {
    let _serial = one_at_a_time();
    if let Some(r) = support::skip_reason_with(&["iperf3"]) {
        eprintln!("SKIPPED: {r}");
        return;
    }
    let ns = Netns::new("shperf");
    ns.exec_ok(&["sysctl", "-qw", "net.ipv6.conf.default.disable_ipv6=1"], SECS(5));
    let tap = support::short_name("shp", 1);
    multi_queue_tap(&ns, &tap, "10.23.3.1/24");
    let mut server = Bg::spawn(&ns, &["iperf3", "-s", "-1", "-J", "-B", "10.23.3.1", "-p", "5201"]);
    support::tcp::wait_listening(&ns, 5201, SECS(10));
    let dev = format!("tap:{tap}");
    let argv = [ustack_bin(), "perf", "-c", "10.23.3.1", "-P", "8", "-t", "3", "-J", "--cores", "2"];
    let mut argv = argv.to_vec();
    argv.extend(["--device", &dev, "--ip", "10.23.3.2/24", "--timeout", "40"]);
    let out = ns.exec(&argv, SECS(60));
    assert!(out.success(), "ustack perf -c -P 8 --cores 2: {out}\n{}", server.stderr_now());
    server.wait_exit(SECS(10));
    let theirs = support::json_documents(&server.stdout_now()).into_iter().next().expect("iperf3's JSON");
    let ours = support::json_documents(&out.stdout_str()).into_iter().next().expect("ustack's JSON");

    // Each shard opened 4 streams and handed nothing over.
    let err = out.stderr.clone();
    for k in 0..SHARDS {
        let line =
            err.lines().find(|l| l.starts_with(&format!("ustack: shard {k} "))).unwrap_or_else(|| panic!("{err}"));
        assert!(line.contains(": 4 streams,"), "{line}");
        assert!(line.contains("shard_handoffs 0,") && line.contains("shard_handoff_drops 0,"), "{line}");
    }
    // The server saw 8 streams; by their ports, 4 were opened on each shard.
    let home = ShardHome::new(Toeplitz::default(), 0, SHARDS);
    let (client, server_ip) = (Ipv4Addr::new(10, 23, 3, 2), Ipv4Addr::new(10, 23, 3, 1));
    let connected = theirs["start"]["connected"].as_array().expect("start.connected");
    assert_eq!(connected.len(), 8, "{}", theirs["start"]);
    let mut per_shard = [0usize; SHARDS];
    for c in connected {
        let port = c["remote_port"].as_u64().expect("remote_port") as u16;
        per_shard[home.shard_of(client, port, server_ip, 5201)] += 1;
    }
    assert_eq!(per_shard, [4, 4], "{connected:?}");

    // Byte counts: what the server received, as it counted and as it told
    // the client, in total and stream by stream (in the order opened);
    // iperf3's server leaves the sender's counts out of its own JSON.
    let (o, t) = (support::end_bytes(&ours, "sum_received"), support::end_bytes(&theirs, "sum_received"));
    eprintln!("end.sum_received.bytes: ustack {o}, iperf3 {t}; ustack sent {}", support::end_bytes(&ours, "sum_sent"));
    assert_eq!(o, t, "end.sum_received.bytes differ");
    assert!(o > 0 && o <= support::end_bytes(&ours, "sum_sent"), "{}", ours["end"]);
    let received = |doc: &serde_json::Value| -> Vec<u64> {
        let streams = doc["end"]["streams"].as_array().expect("end.streams");
        streams.iter().map(|s| s["receiver"]["bytes"].as_u64().unwrap_or(0)).collect()
    };
    let ours_received = received(&ours);
    assert_eq!(ours_received.len(), 8);
    assert!(ours_received.iter().all(|&b| b > 0), "{ours_received:?}");
    assert_eq!(ours_received, received(&theirs), "per-stream counts differ");
}

/// `ustack bench --cores 1,2` measures both stacks at each count and
/// reports the ratio and each side's scaling (figures are not asserted:
/// speed is for benchmarks, not tests).
#[test]
fn bench_reports_each_core_count_beside_linux() {
    let _serial = one_at_a_time();
    for workload in ["crr", "rr"] {
        let out = std::process::Command::new(ustack_bin())
            .args(["bench", workload, "--cores", "1,2", "--seconds", "0.2", "--json"])
            .output()
            .expect("ustack bench runs");
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
        let v: serde_json::Value = serde_json::from_slice(&out.stdout).expect("one JSON object");
        assert_eq!(v["workload"], workload);
        let points = v["points"].as_array().expect("points");
        assert_eq!(points.iter().map(|p| p["cores"].as_u64()).collect::<Vec<_>>(), [Some(1), Some(2)]);
        for p in points {
            for key in ["ustack", "linux", "ratio", "ustack_scaling", "linux_scaling"] {
                assert!(p[key].as_f64().is_some_and(|x| x > 0.0), "{key} in {p}");
            }
        }
        assert_eq!(points[0]["ustack_scaling"].as_f64(), Some(1.0));
    }
    let out = std::process::Command::new(ustack_bin())
        .args(["bench", "crr", "--cores", "0"])
        .output()
        .expect("ustack bench runs");
    assert_eq!(out.status.code(), Some(2), "--cores 0 is refused as a bad flag");
}

/// Where the device does not steer by ustack's hash (AF_PACKET fan-out by
/// the kernel's own flow hash, `steer=kernel`), frames that land on the
/// wrong shard cross once to their owner: every connection still echoes
/// and is established on the shard its hash names, the crossings are
/// counted, none is dropped.
#[test]
fn frames_on_the_wrong_shard_are_handed_to_their_owner() {
    let _serial = one_at_a_time();
    skip_unless!("ethtool");
    if let Some(r) = support::skip_reason_with(&[python()]) {
        eprintln!("SKIPPED: {r}");
        return;
    }
    let pair = VethPair::new("shk", 62, Peer::Kernel);
    let dev = format!("af_packet:{},steer=kernel", pair.stack_if);
    let ip = format!("{}/24", pair.stack_ip());
    let stack = start(&pair.stack_ns, &dev, &ip, &[]);
    let (client, server): (Ipv4Addr, Ipv4Addr) = (pair.peer_ip().parse().unwrap(), pair.stack_ip().parse().unwrap());
    let n = 2_000;
    let expected = echo_clients(&pair.peer_ns, &stack, client, server, n, 100);
    let snap = settled_snapshot(&pair.stack_ns, &format!("af_packet:{}", pair.stack_if), n);
    for (k, s) in snap["shards"].as_array().expect("shards").iter().enumerate() {
        let c = &s["counters"];
        assert_eq!(c["tcp_established"].as_u64(), Some(expected[k]), "shard {k}: {c}");
        assert_eq!((c["tcp_rst_sent"].as_u64(), c["drop_tcp_no_socket"].as_u64()), (Some(0), Some(0)), "shard {k}");
    }
    // The kernel's hash is not ours: about half the frames crossed.
    let sharding = &snap["sharding"];
    eprintln!("sharding: {sharding}");
    assert!(sharding["handoffs"].as_u64().unwrap_or(0) > n as u64, "{sharding}");
    assert_eq!(sharding["handoff_drops"].as_u64(), Some(0), "{sharding}");
    stack.stop("INT", SECS(10));
}
