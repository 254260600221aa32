//! TCP and UDP of the `ustack` binary over IPv6 against the Linux kernel on
//! a TAP: `curl -6` of 64 MiB from the stack's HTTP server, `ustack get` of
//! 64 MiB from a kernel IPv6 HTTP server (python's http.server), each body
//! checked by SHA-256, `iperf3 -6` against `ustack perf -s` and `ustack
//! perf -c` against the kernel's `iperf3 -s` over IPv6, TCP and UDP (byte
//! counts equal both sides), and `socat` UDP6 datagrams to the stack's UDP echo
//! (each reply equal to what was sent, fragmented ones included).
//!
//! Topology per test: namespace `ust-<tag>-<pid>`; a TAP `t6<N>p<pid>` made
//! by the test (offloads off) with kernel IPv6 on it, the kernel's side
//! `fd00:67:N::1/64` (no DAD); the stack is `fd00:67:N::2/64` (`--ip6`, with
//! its own duplicate address detection) and 10.67.N.2/24. Neighbour
//! discovery runs between the kernel and the stack both ways.
//!
//! (`ping -6`, neighbour discovery and hostile IPv6 are `ipv6_hostile.rs`'s.)
//!
//! Needs root, ping, curl, python3, iperf3, socat, ethtool and sha256sum (skips with a
//! printed reason otherwise). Every process and wait is bounded; the
//! namespace, processes and temp files are removed by guards, also when a
//! test fails.

#[macro_use]
mod support;

use std::collections::BTreeMap;
use std::time::{Duration, Instant};
use support::tcp::*;
use support::{assert_no_panic, end_bytes, json_documents, Netns, Stopped, UpOpts, Ustack};

const SECS: fn(u64) -> Duration = Duration::from_secs;
const MIB: usize = 1 << 20;
const TRANSFER_LIMIT: Duration = Duration::from_secs(300);

struct Link6 {
    ns: Netns,
    tap: String,
    n: u8,
    /// The stack's TAP with its offloads (a virtio-net header; the kernel
    /// finishes the checksums the stack leaves partial).
    offload: bool,
}

impl Link6 {
    /// A namespace and a TAP with kernel IPv6 on, offloads off, the kernel's
    /// address on it.
    fn new(tag: &str, n: u8) -> Link6 {
        let ns = Netns::new(tag);
        let tap = support::short_name("t6", n);
        ns.exec_ok(&["ip", "tuntap", "add", "dev", &tap, "mode", "tap"], SECS(5));
        ns.exec_ok(&["sysctl", "-qw", &format!("net.ipv6.conf.{tap}.disable_ipv6=0")], SECS(5));
        offloads_off(&ns, &tap);
        ns.exec_ok(&["ip", "-6", "addr", "add", &format!("fd00:67:{n}::1/64"), "dev", &tap, "nodad"], SECS(5));
        ns.exec_ok(&["ip", "link", "set", &tap, "up"], SECS(5));
        Link6 { ns, tap, n, offload: false }
    }
    fn stack6(&self) -> String {
        format!("fd00:67:{}::2", self.n)
    }
    fn host6(&self) -> String {
        format!("fd00:67:{}::1", self.n)
    }
    fn device_args(&self) -> Vec<String> {
        vec![
            "--device".into(),
            format!("tap:{},offload={}", self.tap, if self.offload { "on" } else { "off" }),
            "--ip".into(),
            format!("10.67.{}.2/24", self.n),
            "--ip6".into(),
            format!("{}/64", self.stack6()),
        ]
    }

    /// `ustack up` with IPv6 and HTTP on 8080 serving `http_root` (if
    /// given), started and answering `ping -6` (its address past DAD).
    fn start(&self, http_root: Option<&str>) -> Ustack {
        let mut extra: Vec<String> = Vec::new();
        if let Some(root) = http_root {
            extra.extend(["--http-root".into(), root.into(), "--http-port".into(), HTTP_PORT.to_string()]);
        }
        self.start_with(&extra, &[])
    }

    /// [`Link6::start`] with `extra` arguments and UDP echo on `udp_echo`.
    fn start_with(&self, extra: &[String], udp_echo: &[u16]) -> Ustack {
        let mut argv: Vec<String> = vec![support::ustack_bin().into(), "up".into()];
        argv.extend(self.device_args());
        argv.extend(extra.iter().cloned());
        for port in udp_echo {
            argv.extend(["--udp-echo".into(), port.to_string()]);
        }
        let argv_ref: Vec<&str> = argv.iter().map(String::as_str).collect();
        let up = UpOpts { tap: self.tap.clone(), subnet: self.n, pcap: None, udp_echo: udp_echo.to_vec() };
        let up_line = format!("ustack: up on tap:{}", self.tap);
        let u = Ustack::spawn(&self.ns, &argv_ref, up, "the startup line", |err| {
            err.contains(&up_line) && err.matches("UDP echo on port").count() >= udp_echo.len()
        });
        self.wait_ping6(|| u.stderr_now());
        u
    }

    /// Duplicate address detection takes about a second: wait (bounded)
    /// for the stack's first echo reply.
    fn wait_ping6(&self, stderr: impl Fn() -> String) {
        let deadline = Instant::now() + SECS(15);
        loop {
            let out = self.ns.exec(&["ping", "-6", "-n", "-c", "1", "-W", "1", &self.stack6()], SECS(5));
            if out.success() {
                return;
            }
            assert!(Instant::now() < deadline, "no echo reply from {} within 15 s: {out}\n{}", self.stack6(), stderr());
        }
    }
}

fn stop_ok(u: Ustack) -> (Stopped, BTreeMap<String, u64>) {
    let s = u.stop(SECS(5));
    assert_no_panic(&s.stderr);
    assert!(s.status.success(), "ustack exited with {} after SIGTERM; stderr:\n{}", s.status, s.stderr);
    let c = s.counters();
    (s, c)
}

#[test]
fn curl6_downloads_64_mib_from_the_stack() {
    skip_unless!("curl", "ping", "ethtool", "sha256sum");
    let dir = TempDir::new("curl6");
    std::fs::create_dir_all(dir.path("www")).unwrap();
    let big = dir.path("www").join("big.bin");
    write_random_file(&big, 64 * MIB, 0x6464_0006);
    let want = sha256_file(&big);
    let link = Link6::new("curl6", 2);
    let u = link.start(Some(&dir.file("www")));
    let url = format!("http://[{}]:{HTTP_PORT}/big.bin", link.stack6());
    let max = (TRANSFER_LIMIT.as_secs() - 5).to_string();
    let got = dir.file("got.bin");
    let out = link.ns.exec(
        &[
            "curl",
            "-6",
            "-g",
            "-sS",
            "--fail",
            "--max-time",
            &max,
            "-o",
            &got,
            "-w",
            "%{http_code} %{size_download}\n",
            &url,
        ],
        TRANSFER_LIMIT,
    );
    assert!(out.success(), "curl -6 {url}: {out}\n{}", u.stderr_now());
    assert_eq!(file_len(&dir.path("got.bin")), (64 * MIB) as u64, "{out}");
    assert_eq!(sha256_file(&dir.path("got.bin")), want, "64 MiB body over IPv6 differs from the file served");
    let (s, c) = stop_ok(u);
    for name in ["drop_tcp_checksum", "drop_tcp_malformed", "drop_tcp_table_full"] {
        assert_eq!(c.get(name).copied().unwrap_or(0), 0, "{name}; counters:\n{}", s.stdout);
    }
    assert!(c.get("tcp_established").copied().unwrap_or(0) >= 1, "counters:\n{}", s.stdout);
}

/// With the TAP's offloads on, the stack leaves each IPv6 TCP segment's
/// checksum for the kernel to finish and hands it super-segments to cut:
/// the capture (taken before the kernel does either) shows the stack's
/// segments with checksums that do not add up yet and longer than the MTU,
/// and the 16 MiB arrive whole.
#[test]
fn curl6_from_a_stack_that_leaves_checksums_and_segmentation_to_the_tap() {
    skip_unless!("curl", "ping", "ethtool", "sha256sum", "tcpdump");
    let dir = TempDir::new("csum6");
    std::fs::create_dir_all(dir.path("www")).unwrap();
    let big = dir.path("www").join("big.bin");
    write_random_file(&big, 16 * MIB, 0x6464_0016);
    let want = sha256_file(&big);
    let mut link = Link6::new("csum6", 8);
    link.offload = true;
    let u = link.start(Some(&dir.file("www")));
    let pcap = dir.file("csum6.pcap");
    // Whole frames (`tcpdump` here keeps 128 bytes), so every checksum can be judged.
    let argv = ["tcpdump", "-i", &link.tap, "-n", "-s", "0", "--immediate-mode", "-U", "-w", &pcap, "ip6", "and", "tcp"];
    let mut dump = Bg::spawn(&link.ns, &argv);
    dump.wait_ready("listening", SECS(10), |e| e.contains("listening on"));
    let url = format!("http://[{}]:{HTTP_PORT}/big.bin", link.stack6());
    let got = dir.file("got.bin");
    let out = link.ns.exec(&["curl", "-6", "-g", "-sS", "--fail", "--max-time", "100", "-o", &got, &url], SECS(110));
    let dump_err = dump.stop("INT", SECS(10));
    assert!(out.success(), "curl -6 {url}: {out}\n{}", u.stderr_now());
    assert_eq!(sha256_file(&dir.path("got.bin")), want, "16 MiB over IPv6 with checksum offload differ");
    let read = link.ns.exec(&["tcpdump", "-r", &pcap, "-n", "-vv", "src", &link.stack6()], SECS(30));
    let text = read.stdout_str();
    let (from_stack, unfinished) = (text.matches(" > ").count(), text.matches("incorrect").count());
    assert!(from_stack > 100, "the stack's segments in the capture: {from_stack}\n{dump_err}");
    assert!(unfinished * 2 > from_stack, "{unfinished} of {from_stack} left for the kernel to finish:\n{}", &text[..text.len().min(2000)]);
    // ... and it handed the kernel super-segments to cut (TSO for IPv6).
    let longest = text
        .lines()
        .filter_map(|l| l.rsplit_once("length ").and_then(|(_, n)| n.split(|c: char| !c.is_ascii_digit()).next()?.parse::<usize>().ok()))
        .max()
        .unwrap_or(0);
    assert!(longest > 1500, "the longest segment from the stack carried {longest} bytes: no super-segment");
    let (s, c) = stop_ok(u);
    for name in ["drop_tcp_checksum", "drop_tcp_malformed"] {
        assert_eq!(c.get(name).copied().unwrap_or(0), 0, "{name}; counters:\n{}", s.stdout);
    }
}

#[test]
fn ustack_get_downloads_64_mib_from_a_kernel_ipv6_server() {
    skip_unless!("ethtool", "sha256sum", "ss");
    let dir = TempDir::new("get6");
    let www = dir.path("www");
    std::fs::create_dir_all(&www).unwrap();
    write_random_file(&www.join("big.bin"), 64 * MIB, 0x6464_0007);
    let want = sha256_file(&www.join("big.bin"));
    let link = Link6::new("get6", 3);
    // python's http.server on the kernel's IPv6 address (`http_server`
    // looks for an IPv4-style "ADDR:PORT" in ss).
    let host6 = link.host6();
    let server = Bg::spawn(
        &link.ns,
        &[
            python(),
            "-m",
            "http.server",
            "--bind",
            &host6,
            "--directory",
            www.to_str().unwrap(),
            "-p",
            "HTTP/1.1",
            "8000",
        ],
    );
    wait_listening(&link.ns, 8000, SECS(15));
    let mut argv: Vec<String> = vec![support::ustack_bin().into(), "get".into()];
    argv.push(format!("http://[{}]:8000/big.bin", link.host6()));
    argv.extend(link.device_args());
    argv.extend(["-o".into(), dir.file("got.bin"), "--timeout".into(), "240".into()]);
    let argv_ref: Vec<&str> = argv.iter().map(String::as_str).collect();
    let out = support::run_bounded(link.ns.command(&argv_ref), None, TRANSFER_LIMIT);
    assert_no_panic(&out.stderr);
    assert!(out.success(), "ustack get over IPv6: {out}\nserver: {}", server.stderr_now());
    assert_eq!(file_len(&dir.path("got.bin")), (64 * MIB) as u64, "{out}");
    assert_eq!(sha256_file(&dir.path("got.bin")), want, "64 MiB fetched over IPv6 differs from the file served");
    // The request came from the stack's global address, not from the
    // link-local one usable while the global one was still tentative.
    let log = server.stderr_now();
    let from: Vec<&str> = log.lines().filter(|l| l.contains("GET /big.bin")).filter_map(|l| l.split(' ').next()).collect();
    assert_eq!(from, [link.stack6()], "the server's log:\n{log}");
    drop(server);
}

/// Kernel `iperf3 -6` against `ustack perf -s`: TCP, then UDP at 20 Mbit/s
/// (the UDP streams' hellos and data over IPv6 to the server's dual-stack
/// socket). Byte counts equal on both sides, test by test.
#[test]
fn iperf3_6_against_ustack_perf_server() {
    skip_unless!("iperf3", "ping", "ethtool");
    let link = Link6::new("perf6", 4);
    let mut argv: Vec<String> = vec![support::ustack_bin().into(), "perf".into(), "-s".into(), "-J".into()];
    argv.extend(link.device_args());
    let argv_ref: Vec<&str> = argv.iter().map(String::as_str).collect();
    let mut server = Bg::spawn(&link.ns, &argv_ref);
    server.wait_ready("serving", SECS(10), |e| e.contains("perf server on"));
    link.wait_ping6(|| server.stderr_now());
    let modes: [&[&str]; 2] = [&[], &["-u", "-b", "20M"]];
    for (i, mode) in modes.iter().enumerate() {
        let stack6 = link.stack6();
        let mut argv = vec!["iperf3", "-6", "-c", &stack6, "-J", "-t", "2"];
        argv.extend_from_slice(mode);
        let out = link.ns.exec(&argv, SECS(40));
        let theirs: serde_json::Value =
            serde_json::from_slice(&out.stdout).unwrap_or_else(|e| panic!("iperf3 -6 {mode:?}: not JSON ({e}): {out}"));
        assert!(
            out.success() && theirs.get("error").is_none(),
            "iperf3 -6 {mode:?} failed: {out}\n{}",
            server.stderr_now()
        );
        let ours = nth_document(&server, i);
        for sum in ["sum_sent", "sum_received"] {
            let (t, o) = (end_bytes(&theirs, sum), end_bytes(&ours, sum));
            eprintln!("iperf3 -6 {mode:?}: end.{sum}.bytes iperf3 {t}, ustack {o}");
            assert!(t > 0, "iperf3 -6 {mode:?}: no bytes in end.{sum}");
            assert_eq!(t, o, "iperf3 -6 {mode:?}: end.{sum}.bytes differ (iperf3 {t}, ustack {o})");
        }
        let peer = ours["start"]["accepted_connection"]["host"].as_str();
        assert_eq!(peer, Some(link.host6().as_str()), "the server's peer: {ours}");
        if mode.contains(&"-u") {
            let streams = theirs["end"]["streams"].as_array().expect("streams");
            assert!(streams.iter().all(|s| s["udp"]["packets"].as_u64().unwrap_or(0) > 0), "UDP packets: {theirs}");
        }
    }
}

/// Wait (bounded) until the `ustack perf -s -J` in `server` has printed
/// its `i`th result (0-based); that document.
fn nth_document(server: &Bg, i: usize) -> serde_json::Value {
    let deadline = Instant::now() + SECS(10);
    loop {
        if let Some(doc) = json_documents(&server.stdout_now()).into_iter().nth(i) {
            return doc;
        }
        assert!(Instant::now() < deadline, "ustack perf printed no result {i}:\n{}", server.stderr_now());
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// `ustack perf -c [fd00:67:7::1]` against the kernel's `iperf3 -s`: two
/// parallel TCP streams, the same reversed, and UDP at 20 Mbit/s. The
/// kernel's own count (it reaches us in the results exchange) equals what
/// `ustack perf -J` reports, and every stream names IPv6 endpoints.
#[test]
fn ustack_perf_client_over_ipv6_against_iperf3_server() {
    skip_unless!("iperf3", "ss", "ethtool");
    let link = Link6::new("perfc6", 7);
    let modes: [&[&str]; 3] = [&["-P", "2"], &["-P", "2", "-R"], &["-u", "-b", "20M"]];
    for (i, mode) in modes.iter().enumerate() {
        // iperf3 -s listens on [::] (IPv4 and IPv6); -1: one test, then exit.
        let mut iperf3 = Bg::spawn(&link.ns, &["iperf3", "-s", "-1", "-J"]);
        wait_listening(&link.ns, 5201, SECS(10));
        // Brackets, as in a URL, on every other run: both spellings work.
        let host = if i % 2 == 0 { link.host6() } else { format!("[{}]", link.host6()) };
        let mut argv: Vec<String> = vec![support::ustack_bin().into(), "perf".into(), "-c".into(), host];
        argv.extend(["-t", "2", "-J"].map(String::from));
        argv.extend(mode.iter().map(|s| s.to_string()));
        argv.extend(link.device_args());
        let argv_ref: Vec<&str> = argv.iter().map(String::as_str).collect();
        let out = support::run_bounded(link.ns.command(&argv_ref), None, SECS(60));
        assert_no_panic(&out.stderr);
        assert!(out.success(), "ustack perf -c {mode:?} over IPv6: {out}\niperf3: {}", iperf3.stderr_now());
        let ours: serde_json::Value =
            serde_json::from_slice(&out.stdout).unwrap_or_else(|e| panic!("not JSON ({e}): {out}"));
        assert!(iperf3.wait_exit(SECS(10)).success(), "iperf3 -s: {}", iperf3.stderr_now());
        // Its output may still be on the way through the pipe: read until it parses (bounded).
        let deadline = Instant::now() + SECS(5);
        let theirs: serde_json::Value = loop {
            match serde_json::from_str(&iperf3.stdout_now()) {
                Ok(doc) => break doc,
                Err(e) if Instant::now() >= deadline => panic!("iperf3 -s JSON ({e}): {}", iperf3.stdout_now()),
                Err(_) => std::thread::sleep(Duration::from_millis(20)),
            }
        };
        // iperf3 -s fills in the side it counted itself (the other reads 0).
        let (theirs_sum, ours_sum) =
            if mode.contains(&"-R") { ("sum_sent", "sum_received") } else { ("sum_received", "sum_sent") };
        let (o, t) = (end_bytes(&ours, theirs_sum), end_bytes(&theirs, theirs_sum));
        let own = end_bytes(&ours, ours_sum);
        eprintln!(
            "ustack perf -c {mode:?} over IPv6: end.{theirs_sum} ustack {o}, iperf3 {t}; end.{ours_sum} ours {own}"
        );
        assert_eq!(o, t, "{mode:?}: end.{theirs_sum}.bytes differ");
        assert!(t > 0 && own > 0, "{mode:?}: no bytes moved: {ours}");
        assert!(end_bytes(&ours, "sum_received") <= end_bytes(&ours, "sum_sent"), "{mode:?}: received more than sent");
        // The kernel saw the connections come from the stack's IPv6 address.
        let peer = theirs["start"]["accepted_connection"]["host"].as_str();
        assert_eq!(peer, Some(link.stack6().as_str()), "iperf3's peer: {theirs}");
        let connected = ours["start"]["connected"].as_array().expect("start.connected");
        let want = if mode.contains(&"-P") { 2 } else { 1 };
        assert_eq!(connected.len(), want, "{mode:?}: streams {connected:?}");
        for c in connected {
            assert_eq!(c["local_host"].as_str(), Some(link.stack6().as_str()), "{c}");
            assert_eq!(c["remote_host"].as_str(), Some(link.host6().as_str()), "{c}");
        }
        if mode.contains(&"-u") {
            let packets = ours["end"]["sum"]["packets"].as_u64().unwrap_or(0);
            assert!(packets > 0, "UDP packets: {ours}");
        }
    }
}

/// `socat` in the namespace sends one datagram of each size over UDP6 to
/// the stack's echo and must read back the same bytes; 3000 and 8000 bytes
/// leave the kernel as fragments and come back as fragments.
#[test]
fn socat_udp6_echo_returns_same_bytes() {
    skip_unless!("socat", "ping", "ethtool");
    let link = Link6::new("udp6echo", 5);
    let u = link.start_with(&[], &[7]);
    let addr = format!("UDP6:[{}]:7", link.stack6());
    let sizes = [1, 18, 512, 1232, 1452, 3000, 8000];
    for (i, &size) in sizes.iter().enumerate() {
        let payload = support::pseudo_random(size, 0x0dd6_0000 + i as u64 * 7919 + size as u64);
        // -T 3: give up after 3 s of silence; -t 2: after stdin's EOF, wait
        // up to 2 s for the echo; `-b` so that one read is one datagram.
        let out = link.ns.exec_stdin(&["socat", "-T", "3", "-t", "2", "-b", "65536", "-", &addr], &payload, SECS(15));
        assert!(out.success(), "socat UDP6 {size} bytes: {out}\n{}", u.stderr_now());
        assert_eq!(
            out.stdout.len(),
            size,
            "UDP6 echo of {size} bytes returned {} bytes: {}",
            out.stdout.len(),
            out.stderr
        );
        assert!(out.stdout == payload, "UDP6 echo of {size} bytes came back altered");
    }
    let sent = sizes.len() as u64;
    let (s, c) = stop_ok(u);
    let n = |name: &str| c.get(name).copied().unwrap_or(0);
    assert_eq!(n("udp_rx"), sent, "counters:\n{}", s.stdout);
    assert_eq!(n("udp_tx"), sent, "counters:\n{}", s.stdout);
    for name in ["drop_udp_checksum", "drop_udp6_zero_checksum", "drop_udp_no_socket", "drop_udp_rx_queue_full"] {
        assert_eq!(n(name), 0, "{name}; counters:\n{}", s.stdout);
    }
    // The two datagrams over 1452 bytes arrived in fragments and left in them.
    assert_eq!(n("ipv6_reassembled"), 2, "counters:\n{}", s.stdout);
    assert!(n("ipv6_frag_tx") >= 4, "counters:\n{}", s.stdout);
}

/// `--gateway6`: the kernel is the stack's router to an address of its own
/// outside the link's prefix (on its loopback). `socat` sends from that
/// address; the stack's echo, off-link, goes back through the router.
#[test]
fn off_link_replies_go_through_the_static_gateway6() {
    skip_unless!("socat", "ping", "ethtool");
    let link = Link6::new("gw6", 6);
    let far = format!("fd00:68:{}::1", link.n);
    link.ns.exec_ok(&["ip", "link", "set", "lo", "up"], SECS(5));
    link.ns.exec_ok(&["ip", "-6", "addr", "add", &format!("{far}/128"), "dev", "lo", "nodad"], SECS(5));
    let u = link.start_with(&["--gateway6".into(), link.host6()], &[7]);
    let addr = format!("UDP6:[{}]:7,bind=[{far}]", link.stack6());
    let payload = support::pseudo_random(300, 0x0006_6a7e);
    let out = link.ns.exec_stdin(&["socat", "-T", "3", "-t", "2", "-", &addr], &payload, SECS(15));
    assert!(out.success() && out.stdout == payload, "echo to {far} via the gateway: {out}\n{}", u.stderr_now());
    let (s, c) = stop_ok(u);
    let n = |name: &str| c.get(name).copied().unwrap_or(0);
    assert_eq!((n("udp_rx"), n("udp_tx"), n("drop_no_route")), (1, 1, 0), "counters:\n{}", s.stdout);
}
