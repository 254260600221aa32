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
//! SYN flood: see [`syn_flood_with_cookies_leaves_real_clients_served`].
//!
//! Topology: namespace `ust-slowloris-<pid>`, a TAP made by the test
//! (offloads off), the stack 10.23.50.2/16, the kernel 10.23.50.1/16 plus the
//! attacker's 10.23.50.100–119. Needs root, python3 and curl. Bounded: the
//! attacker ends by itself after 35 s and is killed at 60 s; each curl at 5 s.

#[macro_use]
mod support;

use std::time::{Duration, Instant};
use support::tcp::{precreate_tap, python, quiet_namespace, stack_pid, Bg, TempDir, SECS};
use support::{parse_counters, run_bounded, ustack_bin, Netns};

const SUBNET: u8 = 50;
const ATTACK_CONNECTIONS: usize = 1120;
const ATTACK_SOURCES: u8 = 20;
const ATTACK_SECS: u64 = 35;
const _: () = assert!(ATTACK_SECS >= 30, "the issue's slowloris lasts at least 30 s");
/// Real clients fetching at once during the SYN flood.
const CLIENT_LOOPS: usize = 6;

/// The attacks load both cores (1,120 slow connections, a SYN flood, wrk):
/// run one at a time, so that no test's timing is another's attack.
static ONE_ATTACK_AT_A_TIME: std::sync::Mutex<()> = std::sync::Mutex::new(());

fn one_attack_at_a_time() -> std::sync::MutexGuard<'static, ()> {
    ONE_ATTACK_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner())
}

fn script(name: &str) -> String {
    format!("{}/tests/scripts/{name}", env!("CARGO_MANIFEST_DIR"))
}

/// `ustack up --http-root` on a TAP in a namespace of its own, serving a
/// one-line page, with the kernel's side at 10.23.SUBNET.1/16.
struct Site {
    stack: Bg,
    tap: String,
    stack_ip: String,
    _root: TempDir,
    // Last: the namespace goes after the stack.
    ns: Netns,
}

impl Site {
    fn new(tag: &str, subnet: u8, extra: &[&str]) -> Site {
        let ns = Netns::new(tag);
        quiet_namespace(&ns);
        let tap = support::short_name(&tag[..2], 1);
        precreate_tap(&ns, &tap, None);
        let root = TempDir::new(tag);
        std::fs::write(root.path("index.html"), b"<h1>still here</h1>\n").unwrap();
        let stack_ip = format!("10.23.{subnet}.2");
        let dev = format!("tap:{tap}");
        let ip_arg = format!("{stack_ip}/16");
        let host_arg = format!("10.23.{subnet}.1/16");
        let mut argv =
            vec![ustack_bin(), "up", "--device", &dev, "--ip", &ip_arg, "--host-ip", &host_arg, "--http-root", root.as_str()];
        argv.extend_from_slice(extra);
        let mut stack = Bg::spawn(&ns, &argv);
        stack.wait_ready("serving HTTP", SECS(10), |e| e.contains("HTTP on port 80"));
        let deadline = Instant::now() + SECS(5);
        while !ns.exec(&["ip", "-4", "addr", "show", "dev", &tap], SECS(5)).stdout_str().contains(&host_arg) {
            assert!(Instant::now() < deadline, "TAP {tap} has no {host_arg}");
            std::thread::sleep(Duration::from_millis(20));
        }
        Site { stack, tap, stack_ip, _root: root, ns }
    }
}

#[test]
fn slowloris_does_not_lock_out_real_clients() {
    let _serial = one_attack_at_a_time();
    skip_unless!("curl", "ethtool");
    if let Some(r) = support::skip_reason_with(&[python()]) {
        eprintln!("SKIPPED: {r}");
        return;
    }
    let site = Site::new("slowloris", SUBNET, &[]);
    let (ns, tap, stack_ip) = (&site.ns, &site.tap, site.stack_ip.clone());
    let stack = site.stack;
    let sources: Vec<String> = (0..ATTACK_SOURCES).map(|i| format!("10.23.{SUBNET}.{}", 100 + i)).collect();
    for s in &sources {
        ns.exec_ok(&["ip", "addr", "add", &format!("{s}/16"), "dev", tap], SECS(5));
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
    // The bar: at least 1,100 slow connections held at once (the
    // attacker's view: the server's table has room for 1,024, so it was
    // evicting) for at least 30 s (ATTACK_SECS, checked at compile time).
    assert!(result["held_max"].as_u64().unwrap_or(0) >= 1100, "the attack never held 1,100 connections: {result}");
    assert!(get("http_80_evicted") > 0, "the table never filled: {stdout}");
    assert!(total >= 50, "too few client requests to judge ({total})");
    assert!(ok * 100 >= total * 99, "only {ok} of {total} real requests served within 1 s: {slow:?}");
}

/// Resident memory of `pid` in KiB (VmRSS).
fn rss_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())
        .unwrap_or(0)
}

/// `ustack stats --json` of the stack on `tap`.
fn stats(ns: &Netns, tap: &str) -> serde_json::Value {
    let dev = format!("tap:{tap}");
    let out = ns.exec(&[ustack_bin(), "stats", "--device", &dev, "--json"], SECS(10));
    assert!(out.success(), "ustack stats: {out}");
    serde_json::from_slice(&out.stdout).unwrap_or_else(|e| panic!("stats JSON: {e}: {out}"))
}

/// SYN flood: `hping3 --flood --rand-source` at the HTTP port for 10 s, the
/// stack with a gateway so it answers every SYN (with a cookie once the
/// listener's SYN queue is full), while six `curl` loops fetch the page
/// again and again from the host's address (100 requests at least). Every real request must succeed (at least
/// 99% of them without a SYN retransmission: connect within 1 s), the stack's
/// RSS must stay flat, and `ustack stats` must show the cookies.
#[test]
fn syn_flood_with_cookies_leaves_real_clients_served() {
    let _serial = one_attack_at_a_time();
    skip_unless!("curl", "ethtool", "hping3", "timeout");
    let site = Site::new("synflood", SUBNET + 1, &["--gateway", "10.23.51.1"]);
    let (ns, tap) = (&site.ns, &site.tap);
    // The kernel's queue in front of the TAP (1,000 frames by default) is
    // where a flood's frames, and so real clients' SYNs, are lost while the
    // stack is not scheduled; an operator sizes it as they size a NIC ring.
    ns.exec_ok(&["ip", "link", "set", tap, "txqueuelen", "10000"], SECS(5));
    let url = format!("http://{}/index.html", site.stack_ip);
    let curl = || {
        let w = "%{http_code} %{time_connect}";
        let out = run_bounded(ns.command(&["curl", "-s", "-o", "/dev/null", "--max-time", "5", "-w", w, &url]), None, SECS(10));
        let text = out.stdout_str();
        let mut parts = text.split_whitespace();
        (parts.next().unwrap_or("").to_string(), parts.next().and_then(|t| t.parse::<f64>().ok()).unwrap_or(f64::MAX))
    };
    assert_eq!(curl().0, "200", "before the flood");
    let pid = stack_pid(ns, tap);
    assert_ne!(pid, 0, "no ustack up on {tap}");
    // The stack ahead of everything else on the machine, as an operator
    // runs a dataplane. Where the remaining losses were: not in the stack
    // (it drains the device before the apps run, and a cookie is one
    // SipHash; a profile shows it mostly in the TAP's read and write) but in
    // the kernel's TAP queue, while the stack was off the CPU: hping3, six
    // curl loops and the kernel share these two cores, and any of them
    // holding the stack off for a quarter of a second (10,000 queued frames
    // at 40,000 a second) dropped frames there (`tx_dropped` on the TAP:
    // 2,098 to 15,889 frames and 1-3% of real SYNs in runs at equal
    // priority; 0 in every run since).
    let mut renice = std::process::Command::new("renice");
    renice.args(["-n", "-10", "-p", &pid.to_string()]);
    let renice = run_bounded(renice, None, SECS(5));
    assert!(renice.success(), "renice: {renice}");
    let rss_before = rss_kib(pid);

    let flood_secs = 10;
    let target = site.stack_ip.clone();
    let flood = ns.command(&[
        "timeout", "-s", "INT", &flood_secs.to_string(), "hping3", "--flood", "--rand-source", "-S", "-p", "80", &target,
    ]);
    let flooder = std::thread::spawn(move || run_bounded(flood, None, SECS(flood_secs + 10)));
    std::thread::sleep(Duration::from_secs(1));
    // Several clients at once, so that enough requests are made for 99% to
    // mean something (a miss is one request in a hundred or more).
    let results: Vec<(String, f64)> = std::thread::scope(|s| {
        let loops: Vec<_> = (0..CLIENT_LOOPS)
            .map(|_| {
                s.spawn(|| {
                    let mut got = Vec::new();
                    let end = Instant::now() + SECS(flood_secs - 2);
                    while Instant::now() < end {
                        got.push(curl());
                        std::thread::sleep(Duration::from_millis(20));
                    }
                    got
                })
            })
            .collect();
        loops.into_iter().flat_map(|l| l.join().expect("client loop")).collect()
    });
    let (mut total, mut ok, mut misses) = (0u32, 0u32, Vec::new());
    for (code, connect) in results {
        total += 1;
        if code == "200" && connect < 1.0 {
            ok += 1;
        } else {
            misses.push(format!("{code} connect {connect:.3}s"));
        }
    }
    let rss_during = rss_kib(pid);
    let flood_out = flooder.join().expect("flood thread");
    let snap = stats(ns, tap);
    let tcp = &snap["tcp"];
    let rss_after = rss_kib(pid);
    // Frames the kernel dropped in front of the TAP (its queue full while
    // the stack was not reading): where real SYNs would be lost.
    let kernel_drops = ns.exec(&["cat", &format!("/sys/class/net/{tap}/statistics/tx_dropped")], SECS(5)).stdout_str();
    eprintln!(
        "SYN flood: hping3 {}; curl {ok}/{total} connected within 1 s (misses {misses:?}); syns {} cookies {}; \
         RSS {rss_before} → {rss_during} → {rss_after} KiB; kernel TAP drops {}; device {}",
        flood_out.stderr.lines().filter(|l| l.contains("packets")).collect::<Vec<_>>().join(" "),
        tcp["syns"],
        tcp["syn_cookies"],
        kernel_drops.trim(),
        snap["interfaces"][0]["device_counters"]
    );
    let sent = tcp["syn_cookies"]["sent"].as_u64().unwrap_or(0);
    assert!(sent > 0, "the flood never overflowed the SYN queue: {tcp}");
    assert!(tcp["syns"].as_u64().unwrap_or(0) > sent, "{tcp}");
    assert!(total >= 100, "too few client requests to judge ({total})");
    // Every real request is served, and at least 99% without a SYN
    // retransmission (connect within 1 s).
    let served = total as usize - misses.iter().filter(|m| !m.starts_with("200")).count();
    assert_eq!(served, total as usize, "real requests failed under the flood: {misses:?}");
    assert!(ok * 100 >= total * 99, "only {ok} of {total} real connections made without a SYN retransmission: {misses:?}");
    // Flat: the flood holds no state (cookies), so memory does not follow it.
    assert!(rss_after <= rss_before * 2 + 4096, "RSS grew under the flood: {rss_before} → {rss_after} KiB");
}

/// Memory comes back: 1 MiB downloads with `wrk -c 100` for 10 s take the
/// TCP buffer pool far above its floor; within 5 s of the end the stack's
/// RSS is back within twice its idle baseline.
#[test]
fn rss_returns_near_baseline_after_wrk_downloads() {
    let _serial = one_attack_at_a_time();
    skip_unless!("curl", "ethtool", "wrk");
    let site = Site::new("wrkrss", SUBNET + 2, &[]);
    let (ns, tap) = (&site.ns, &site.tap);
    let big: Vec<u8> = (0..1 << 20).map(|i: u32| (i.wrapping_mul(2_654_435_761) >> 24) as u8).collect();
    std::fs::write(site._root.path("big.bin"), &big).unwrap();
    let url = format!("http://{}/big.bin", site.stack_ip);
    let first = run_bounded(ns.command(&["curl", "-s", "-o", "/dev/null", "-w", "%{http_code} %{size_download}", &url]), None, SECS(20));
    assert_eq!(first.stdout_str(), "200 1048576", "{first}");
    let pid = stack_pid(ns, tap);
    assert_ne!(pid, 0, "no ustack up on {tap}");
    std::thread::sleep(SECS(2));
    let baseline = rss_kib(pid);
    let wrk = run_bounded(ns.command(&["wrk", "-t", "2", "-c", "100", "-d", "10s", "--timeout", "5s", &url]), None, SECS(40));
    assert!(wrk.success(), "wrk: {wrk}");
    let loaded = rss_kib(pid);
    let peak_pool = stats(ns, tap)["pools"]["tcp_buffers"]["allocated"].as_u64().unwrap_or(0);
    let deadline = Instant::now() + SECS(5);
    let mut now_rss = loaded;
    while Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(250));
        now_rss = rss_kib(pid);
        if now_rss <= 2 * baseline {
            break;
        }
    }
    let pool_after = stats(ns, tap)["pools"]["tcp_buffers"]["allocated"].as_u64().unwrap_or(0);
    eprintln!(
        "wrk: {}\nRSS baseline {baseline} KiB, after wrk {loaded} KiB, 5 s later {now_rss} KiB; pool chunks {peak_pool} → {pool_after}",
        wrk.stdout_str().lines().filter(|l| l.contains("Requests/sec") || l.contains("requests in") || l.contains("errors")).collect::<Vec<_>>().join(" | ")
    );
    assert!(loaded > baseline, "the load never grew the stack ({baseline} → {loaded} KiB)");
    assert!(now_rss <= 2 * baseline, "RSS {now_rss} KiB 5 s after the load, baseline {baseline} KiB (peak {loaded} KiB)");
}

/// The drop counters that say "the peer misbehaved": an honest kernel
/// client never earns one.
const PEER_MISBEHAVED: [&str; 7] = [
    "drop_tcp_out_of_window",
    "drop_tcp_rfc5961",
    "drop_tcp_malformed",
    "drop_tcp_checksum",
    "drop_ipv4_malformed",
    "drop_ipv4_checksum",
    "drop_ipv4_martian",
];

/// Ordinary HTTP load from the kernel's own clients, no impairment: `wrk`
/// (100 keep-alive connections for 3 s, closed mid-request at the end) and
/// `ab` (5,000 one-request connections, then 5,000 keep-alive requests).
/// Every "peer misbehaved" counter stays at zero.
///
/// Before: a 3 s `wrk` run counted 6 `drop_tcp_out_of_window` and 6
/// `drop_tcp_rfc5961`, all at wrk's end. wrk closes a connection whose
/// response is still on the way; Linux answers that data with a RST whose
/// sequence number is its FIN's (RCV.NXT - 1 for us, already in LAST-ACK),
/// which Linux itself accepts (tcp_reset_check) and we counted out of
/// window; our FIN then drew a second RST, which after the first had ended
/// the connection reached the listener and was counted as an RFC 5961
/// refusal. Both are now taken as Linux takes them: the first RST closes
/// the connection, the later ones count as `drop_tcp_no_socket` (segments
/// for a connection that is gone, printed below, not asserted). Bytes
/// already received that an honest kernel sends again (its loss probe beat
/// our ACK on a loaded machine) count as `drop_tcp_duplicate`, also printed,
/// not asserted: that is TCP working, not a peer misbehaving.
#[test]
fn wrk_and_ab_load_draws_no_peer_misbehaved_drops() {
    let _serial = one_attack_at_a_time();
    skip_unless!("curl", "ethtool", "wrk", "ab");
    let site = Site::new("abload", SUBNET + 3, &[]);
    let (ns, tap) = (&site.ns, &site.tap);
    let url = format!("http://{}/index.html", site.stack_ip);
    let first = run_bounded(ns.command(&["curl", "-s", "-o", "/dev/null", "-w", "%{http_code}", &url]), None, SECS(10));
    assert_eq!(first.stdout_str(), "200", "{first}");

    let counters = || -> serde_json::Value { stats(ns, tap)["counters"].clone() };
    let runs: [(&str, Vec<&str>); 3] = [
        ("wrk", vec!["wrk", "-t", "2", "-c", "100", "-d", "3s", "--timeout", "5s", &url]),
        ("ab", vec!["ab", "-q", "-n", "5000", "-c", "50", "-s", "5", &url]),
        ("ab -k", vec!["ab", "-q", "-k", "-n", "5000", "-c", "50", "-s", "5", &url]),
    ];
    for (name, argv) in &runs {
        let out = run_bounded(ns.command(argv), None, SECS(40));
        assert!(out.success(), "{name}: {out}");
        let text = out.stdout_str();
        if name.starts_with("ab") {
            assert!(text.contains("Failed requests:        0"), "{name}: {text}");
        } else {
            assert!(!text.contains("Socket errors"), "{name}: {text}");
        }
        let c = counters();
        let bad: Vec<String> = PEER_MISBEHAVED
            .iter()
            .filter(|k| c[**k].as_u64().unwrap_or(0) > 0)
            .map(|k| format!("{k} {}", c[*k]))
            .collect();
        eprintln!(
            "after {name}: established {}, rx {}, drop_tcp_no_socket {}, drop_tcp_duplicate {}, drop_tcp_other {}; {}",
            c["tcp_established"],
            c["tcp_rx"],
            c["drop_tcp_no_socket"],
            c["drop_tcp_duplicate"],
            c["drop_tcp_other"],
            text.lines()
                .filter(|l| l.contains("Requests per") || l.contains("Requests/sec"))
                .collect::<Vec<_>>()
                .join(" ")
        );
        assert!(bad.is_empty(), "after {name}, an honest kernel client was counted as misbehaving: {bad:?}");
    }
}
