//! The HTTP server under attack, with real clients still served.
//!
//! Slowloris: `tests/scripts/slowloris.py` holds 1,120 connections to
//! `ustack up --http-root` (more than its 1,024-connection table) from 20
//! source addresses, each sending one header line every 3 s and never the
//! end of the head, for 35 s, re-opening whatever the server cuts. A real
//! deployment sees an attack from a handful of addresses against clients from
//! many; 20 addresses at 56 connections each stay under the per-source cap
//! (256), so what keeps the door open is the policy itself: the request-head
//! deadline and, while the table is full, eviction of the connection that
//! has waited longest. Meanwhile `curl` fetches a page from the host's own
//! address, one request after another: at least 99% must succeed, each
//! within 1 s.
//!
//! Topology: namespace `ust-slowloris-<pid>`, a TAP made by the test
//! (offloads off), the stack 10.23.50.2/16, the kernel 10.23.50.1/16 plus the
//! attacker's 10.23.50.100–119. Needs root, python3 and curl. Bounded: the
//! attacker ends by itself after 35 s and is killed at 60 s; each curl at 5 s.

#[macro_use]
mod support;

use std::time::{Duration, Instant};
use support::tcp::{precreate_tap, python, quiet_namespace, Bg, TempDir, SECS};
use support::{parse_counters, run_bounded, ustack_bin, Netns};

const SUBNET: u8 = 50;
const ATTACK_CONNECTIONS: usize = 1120;
const ATTACK_SOURCES: u8 = 20;
const ATTACK_SECS: u64 = 35;

fn script(name: &str) -> String {
    format!("{}/tests/scripts/{name}", env!("CARGO_MANIFEST_DIR"))
}

#[test]
fn slowloris_does_not_lock_out_real_clients() {
    skip_unless!("curl", "ethtool");
    if let Some(r) = support::skip_reason_with(&[python()]) {
        eprintln!("SKIPPED: {r}");
        return;
    }
    let ns = Netns::new("slowloris");
    quiet_namespace(&ns);
    let tap = support::short_name("sl", 1);
    precreate_tap(&ns, &tap, None);
    let root = TempDir::new("slowloris");
    std::fs::write(root.path("index.html"), b"<h1>still here</h1>\n").unwrap();

    let stack_ip = format!("10.23.{SUBNET}.2");
    let dev = format!("tap:{tap}");
    let ip_arg = format!("{stack_ip}/16");
    let host_arg = format!("10.23.{SUBNET}.1/16");
    let mut stack = Bg::spawn(
        &ns,
        &[ustack_bin(), "up", "--device", &dev, "--ip", &ip_arg, "--host-ip", &host_arg, "--http-root", root.as_str()],
    );
    stack.wait_ready("serving HTTP", SECS(10), |e| e.contains("HTTP on port 80"));
    let deadline = Instant::now() + SECS(5);
    while !ns.exec(&["ip", "-4", "addr", "show", "dev", &tap], SECS(5)).stdout_str().contains(&host_arg) {
        assert!(Instant::now() < deadline, "TAP {tap} has no {host_arg}");
        std::thread::sleep(Duration::from_millis(20));
    }
    let sources: Vec<String> = (0..ATTACK_SOURCES).map(|i| format!("10.23.{SUBNET}.{}", 100 + i)).collect();
    for s in &sources {
        ns.exec_ok(&["ip", "addr", "add", &format!("{s}/16"), "dev", &tap], SECS(5));
    }

    let url = format!("http://{stack_ip}/index.html");
    let curl = |limit: Duration| {
        run_bounded(
            ns.command(&[
                "curl", "-s", "-o", "/dev/null", "--max-time", "5", "-w", "%{http_code} %{time_total}", &url,
            ]),
            None,
            limit,
        )
    };
    let first = curl(SECS(10));
    assert_eq!(first.stdout_str().split(' ').next(), Some("200"), "before the attack: {first}");

    let attack_cmd = format!(
        "ulimit -n 8192 && exec {} {} --dst {stack_ip} --port 80 --srcs {} --count {ATTACK_CONNECTIONS} \
         --interval 3 --duration {ATTACK_SECS}",
        python(),
        script("slowloris.py"),
        sources.join(",")
    );
    let attack = ns.command(&["sh", "-c", &attack_cmd]);
    let attacker = std::thread::spawn(move || run_bounded(attack, None, SECS(ATTACK_SECS + 25)));
    // Let the attacker fill the table before the clients come.
    std::thread::sleep(SECS(5));

    let (mut total, mut ok, mut slow) = (0u32, 0u32, Vec::new());
    let end = Instant::now() + SECS(ATTACK_SECS - 8);
    while Instant::now() < end {
        let out = curl(SECS(10));
        total += 1;
        let text = out.stdout_str();
        let mut parts = text.split_whitespace();
        let code = parts.next().unwrap_or("");
        let secs: f64 = parts.next().and_then(|t| t.parse().ok()).unwrap_or(f64::MAX);
        if code == "200" && secs < 1.0 {
            ok += 1;
        } else {
            slow.push(format!("{code} {secs:.3}s"));
        }
        std::thread::sleep(Duration::from_millis(100));
    }

    let attack = attacker.join().expect("attacker thread");
    let result: serde_json::Value = attack
        .stdout_str()
        .lines()
        .find_map(|l| l.strip_prefix("RESULT "))
        .and_then(|j| serde_json::from_str(j).ok())
        .unwrap_or_else(|| panic!("no RESULT from the attacker: {attack}"));
    let (stdout, stderr) = stack.stop_both("TERM", SECS(10));
    assert!(!stderr.contains("panicked"), "ustack panicked:\n{stderr}");
    let c = parse_counters(&stdout).unwrap_or_else(|| panic!("no counters:\n{stdout}\n{stderr}"));
    let get = |k: &str| c.get(k).copied().unwrap_or(0);
    eprintln!(
        "slowloris: attacker {result}; curl {ok}/{total} within 1 s (misses: {slow:?}); server: \
         evicted {}, request timeouts {}, refused {}, requests {}",
        get("http_80_evicted"),
        get("http_80_request_timeouts"),
        get("http_80_refused"),
        get("http_80_requests")
    );
    // The attack really filled the table: the attacker held more than it
    // has room for, and the server had to make room.
    assert!(result["held_max"].as_u64().unwrap_or(0) >= 1000, "the attack never filled the table: {result}");
    assert!(get("http_80_evicted") > 0, "the table never filled: {stdout}");
    assert!(total >= 50, "too few client requests to judge ({total})");
    assert!(ok * 100 >= total * 99, "only {ok} of {total} real requests served within 1 s: {slow:?}");
}
