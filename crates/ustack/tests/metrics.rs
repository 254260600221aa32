//! Prometheus metrics from a running stack (`ustack up --metrics`, `ustack
//! stats --prometheus`).
//!
//! - `metrics_parse_with_promtool_and_equal_stats_json` (root): `ustack up`
//!   on TAP `um1p<pid>` in namespace `ust-metrics-<pid>` with TCP and UDP
//!   echo and `--metrics 127.0.0.1:9187` (the namespace's own loopback).
//!   After ping, a TCP echo and a datagram to a closed port, and once the
//!   counters stand still, `curl` of `/metrics` must pass `promtool check
//!   metrics` (Prometheus's own parser and linter), and every counter, drop
//!   reason, device counter, pool level and TCP figure in it must equal
//!   `ustack stats --json`'s, read before and after the scrape; `ustack
//!   stats --prometheus` must pass promtool and say the same; other paths
//!   get 404.
//!
//! Needs root, curl, promtool (Debian `prometheus`), ping and python3; skips
//! with a printed reason otherwise. Bounded waits; guards clean up.

#[macro_use]
mod support;

use serde_json::Value;
use std::collections::BTreeMap;
use std::time::{Duration, Instant};
use support::tcp::{python, Bg, TempDir};
use support::{ustack_bin, Netns};

const SECS: fn(u64) -> Duration = Duration::from_secs;
const METRICS: &str = "127.0.0.1:9187";

/// `series{labels}` → value, for every sample of an exposition.
fn samples(text: &str) -> BTreeMap<String, f64> {
    text.lines()
        .filter(|l| !l.starts_with('#') && !l.trim().is_empty())
        .map(|l| {
            let (series, value) = l.rsplit_once(' ').unwrap_or_else(|| panic!("not a sample: {l}"));
            (series.to_owned(), value.parse().unwrap_or_else(|_| panic!("bad value in: {l}")))
        })
        .collect()
}

fn promtool_ok(ns: &Netns, file: &str) {
    let out = ns.exec(&["sh", "-c", &format!("promtool check metrics < {file}")], SECS(30));
    assert!(out.success() && out.stdout_str().trim().is_empty(), "promtool check metrics: {out}");
}

#[test]
fn metrics_parse_with_promtool_and_equal_stats_json() {
    skip_unless!("curl", "promtool", "ping", python());
    let ns = Netns::new("metrics");
    for kv in ["net.ipv6.conf.default.disable_ipv6=1", "net.ipv6.conf.all.disable_ipv6=1"] {
        ns.exec_ok(&["sysctl", "-qw", kv], SECS(5));
    }
    let files = TempDir::new("metrics");
    let tap = support::short_name("um", 1);
    let dev = format!("tap:{tap}");
    let argv = [
        ustack_bin(), "up", "--device", &dev, "--ip", "10.79.1.2/24", "--host-ip", "10.79.1.1/24",
        "--tcp-echo", "7", "--udp-echo", "7", "--metrics", METRICS,
    ];
    let mut stack = Bg::spawn(&ns, &argv);
    stack.wait_ready("serving metrics and echo", SECS(10), |e| {
        e.contains("metrics at http://127.0.0.1:9187/metrics") && e.contains("TCP echo on port 7")
    });
    if let Err(out) = support::wait_tap_up(&ns, &tap, "10.79.1.1/24", SECS(5)) {
        panic!("TAP {tap} not up: {out}\nustack: {}", stack.stderr_now());
    }

    let out = ns.exec(&["ping", "-n", "-q", "-c", "3", "-i", "0.2", "-W", "2", "10.79.1.2"], SECS(20));
    assert!(out.success(), "ping: {out}");
    let input = files.path("in");
    support::tcp::write_random_file(&input, 10_000, 3);
    let out = support::tcp::echo_client(&ns, "10.79.1.2", 7, input.to_str().unwrap(), &files.file("out"), SECS(30));
    assert!(out.success() && out.stdout_str().contains("sent 10000 received 10000"), "TCP echo: {out}");
    let udp = "import socket; s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM); s.sendto(b'x', ('10.79.1.2', 9))";
    ns.exec_ok(&[python(), "-c", udp], SECS(10));

    let stats = || -> Value {
        let out = ns.exec(&[ustack_bin(), "stats", "--device", &dev, "--json"], SECS(10));
        assert!(out.success(), "stats --json: {out}");
        serde_json::from_slice(&out.stdout).expect("stats --json is JSON")
    };
    // Wait until nothing moves: the connection is gone and two reads agree.
    let deadline = Instant::now() + SECS(15);
    let mut last = stats();
    loop {
        std::thread::sleep(Duration::from_millis(300));
        let now = stats();
        let still = now["tcp"]["connections"] == 0 && now["counters"] == last["counters"];
        last = now;
        if still {
            break;
        }
        assert!(Instant::now() < deadline, "counters did not settle:\n{last:#}");
    }

    let scrape = files.file("metrics.txt");
    let url = format!("http://{METRICS}/metrics");
    let out = ns.exec(&["curl", "-sS", "-f", "-m", "10", "-o", &scrape, &url], SECS(15));
    assert!(out.success(), "curl {url}: {out}");
    let after = stats();
    assert_eq!(last["counters"], after["counters"], "counters moved during the scrape");
    promtool_ok(&ns, &scrape);
    let text = std::fs::read_to_string(&scrape).unwrap();
    let got = samples(&text);

    // Every figure of the snapshot, under its Prometheus name.
    let d = format!("device=\"{dev}\"");
    let mut want: BTreeMap<String, u64> = BTreeMap::new();
    for (name, v) in after["counters"].as_object().unwrap() {
        let series = match name.strip_prefix("drop_") {
            Some(reason) => format!("ustack_drops_total{{{d},reason=\"{reason}\"}}"),
            None => format!("ustack_{name}_total{{{d}}}"),
        };
        want.insert(series, v.as_u64().unwrap());
    }
    for (name, v) in after["interfaces"][0]["device_counters"].as_object().unwrap() {
        let gauge = name.ends_with("_in_use") || name.ends_with("_size");
        let series = if gauge { format!("ustack_device_{name}{{{d}}}") } else { format!("ustack_device_{name}_total{{{d}}}") };
        want.insert(series, v.as_u64().unwrap());
    }
    let bufs = &after["pools"]["tcp_buffers"];
    want.insert(format!("ustack_pool_in_use{{{d},pool=\"tcp_buffers\"}}"), bufs["in_use"].as_u64().unwrap());
    want.insert(format!("ustack_pool_limit{{{d},pool=\"tcp_buffers\"}}"), bufs["limit"].as_u64().unwrap());
    want.insert(format!("ustack_pool_exhausted_total{{{d},pool=\"tcp_buffers\"}}"), bufs["exhausted"].as_u64().unwrap());
    want.insert(format!("ustack_pool_chunk_size_bytes{{{d},pool=\"tcp_buffers\"}}"), bufs["chunk_size"].as_u64().unwrap());
    let arp = &after["pools"]["neighbor_pending"];
    want.insert(format!("ustack_pool_limit{{{d},pool=\"neighbor_pending\"}}"), arp["limit"].as_u64().unwrap());
    for (state, v) in after["tcp"]["states"].as_object().unwrap() {
        want.insert(format!("ustack_tcp_connections_by_state{{{d},state=\"{state}\"}}"), v.as_u64().unwrap());
    }
    want.insert(format!("ustack_tcp_listeners{{{d}}}"), after["tcp"]["listeners"].as_u64().unwrap());
    want.insert(format!("ustack_tcp_connections{{{d}}}"), 0);
    want.insert(format!("ustack_tcp_retransmits_total{{{d}}}"), after["tcp"]["retransmits"].as_u64().unwrap());
    want.insert(format!("ustack_neighbors{{{d}}}"), after["neighbors"].as_u64().unwrap());
    want.insert(format!("ustack_path_mtu_entries{{{d}}}"), after["path_mtu_entries"].as_u64().unwrap());
    for (series, value) in &want {
        assert_eq!(got.get(series).copied(), Some(*value as f64), "{series}\n--- /metrics ---\n{text}");
    }
    // The traffic is in there, not only zeros.
    assert!(want[&format!("ustack_tcp_established_total{{{d}}}")] >= 1);
    assert!(want[&format!("ustack_icmp_echo_replies_sent_total{{{d}}}")] >= 3);
    assert!(want[&format!("ustack_drops_total{{{d},reason=\"udp_no_socket\"}}")] >= 1);
    assert!(got.contains_key(&format!("ustack_uptime_seconds{{{d}}}")));

    // `ustack stats --prometheus` is the same exposition.
    let out = ns.exec(&[ustack_bin(), "stats", "--device", &dev, "--prometheus"], SECS(10));
    assert!(out.success(), "stats --prometheus: {out}");
    let local = files.file("stats.txt");
    std::fs::write(&local, &out.stdout).unwrap();
    promtool_ok(&ns, &local);
    let mut from_stats = samples(&out.stdout_str());
    let mut from_http = got.clone();
    for m in [&mut from_stats, &mut from_http] {
        m.retain(|k, _| !k.starts_with("ustack_uptime_seconds"));
    }
    assert_eq!(from_stats, from_http);

    let out = ns.exec(&["curl", "-sS", "-o", "/dev/null", "-w", "%{http_code}", "-m", "10", &format!("http://{METRICS}/")], SECS(15));
    assert_eq!(out.stdout_str(), "404", "{out}");

    let err = stack.stop("TERM", SECS(10));
    assert!(!err.contains("panicked"), "ustack panicked:\n{err}");
}
