//! The `ustack` binary on `af_packet:` against the Linux kernel and Linux
//! tools, and against another `ustack` process, over a veth pair.
//!
//! Topology per test (see /work/shared/TESTING.md): namespace `ust-<tag>-<pid>-s`
//! holds the stack's end of a veth pair, with no kernel address and kernel
//! IPv6 off, and `ustack` runs there as 10.88.N.2/24; namespace
//! `ust-<tag>-<pid>-k` holds the other end with the kernel's 10.88.N.1/24
//! (or a second ustack as 10.88.N.3). The kernel end keeps its default
//! offloads (TX checksum offload on), so the stack receives partial
//! checksums and must honour them.
//!
//! Needs root (skips with a printed reason otherwise). Every tool run and
//! wait is bounded; namespaces and processes are removed by guards, also
//! when a test fails.

#[macro_use]
mod support;

use serde_json::Value;
use std::collections::BTreeMap;
use std::time::{Duration, Instant};
use support::tcp::{curl_get, sha256_file, write_random_file, Bg, TempDir};
use support::{assert_no_panic, assert_one_error_line, end_bytes, json_documents, Netns, Output};

const SECS: fn(u64) -> Duration = Duration::from_secs;

/// Two namespaces joined by a veth pair, the stack's end bare.
struct Veth {
    /// The stack's side.
    stack: Netns,
    /// The kernel's side (or a second stack's).
    peer: Netns,
    /// Interface names: the stack's, the peer's.
    stack_if: String,
    peer_if: String,
    subnet: u8,
}

impl Veth {
    /// A veth pair; the peer end gets 10.88.`subnet`.1/24 when `peer_ip`.
    fn new(tag: &str, subnet: u8, peer_ip: bool) -> Veth {
        let stack = Netns::new(&format!("{tag}-s"));
        let peer = Netns::new(&format!("{tag}-k"));
        for ns in [&stack, &peer] {
            ns.exec_ok(&["sysctl", "-qw", "net.ipv6.conf.default.disable_ipv6=1"], SECS(5));
            ns.exec_ok(&["sysctl", "-qw", "net.ipv6.conf.all.disable_ipv6=1"], SECS(5));
        }
        let stack_if = support::short_name("ap", subnet);
        let peer_if = support::short_name("ak", subnet);
        let out = stack.exec(
            &["ip", "link", "add", &stack_if, "type", "veth", "peer", "name", &peer_if, "netns", &peer.name],
            SECS(5),
        );
        assert!(out.success(), "ip link add veth: {out}");
        stack.exec_ok(&["sysctl", "-qw", &format!("net.ipv6.conf.{stack_if}.disable_ipv6=1")], SECS(5));
        stack.exec_ok(&["ip", "link", "set", &stack_if, "up"], SECS(5));
        if peer_ip {
            peer.exec_ok(&["ip", "addr", "add", &format!("10.88.{subnet}.1/24"), "dev", &peer_if], SECS(5));
        }
        peer.exec_ok(&["ip", "link", "set", &peer_if, "up"], SECS(5));
        Veth { stack, peer, stack_if, peer_if, subnet }
    }

    fn stack_ip(&self) -> String {
        format!("10.88.{}.2", self.subnet)
    }

    /// `--device af_packet:IF --ip A/24` for the stack's end.
    fn dev_args(&self) -> Vec<String> {
        vec!["--device".into(), format!("af_packet:{}", self.stack_if), "--ip".into(), format!("{}/24", self.stack_ip())]
    }

    /// Start `ustack SUBCOMMAND ... DEVICE` on the stack's end; wait for `banner` on stderr.
    fn ustack(&self, args: &[&str], banner: &str) -> Bg {
        self.ustack_with("", args, banner)
    }

    /// As `ustack`, with `options` (",key=value...") after the device's name.
    fn ustack_with(&self, options: &str, args: &[&str], banner: &str) -> Bg {
        let mut argv: Vec<String> = vec![support::ustack_bin().into()];
        argv.extend(args.iter().map(|s| s.to_string()));
        let mut dev = self.dev_args();
        dev[1].push_str(options);
        argv.extend(dev);
        let argv: Vec<&str> = argv.iter().map(String::as_str).collect();
        let mut b = Bg::spawn(&self.stack, &argv);
        b.wait_ready(banner, SECS(10), |e| e.contains(banner));
        b
    }

    /// Wait (bounded) until the stack answers one ping from the peer.
    fn wait_answering(&self, b: &Bg) {
        let ip = self.stack_ip();
        let deadline = Instant::now() + SECS(10);
        while !self.peer.exec(&["ping", "-n", "-c", "1", "-W", "1", &ip], SECS(5)).success() {
            assert!(Instant::now() < deadline, "ustack on af_packet does not answer ping:\n{}", b.stderr_now());
        }
    }

    /// The peer end's TX checksum offload, as ethtool reports it.
    fn peer_tx_csum(&self) -> String {
        let k = self.peer.exec(&["ethtool", "-k", &self.peer_if], SECS(5)).stdout_str();
        k.lines().find(|l| l.starts_with("tx-checksumming:")).unwrap_or("?").to_owned()
    }
}

/// SIGTERM: exit 0 within 5 s without a panic; (stdout, stderr).
fn stop_ok(b: Bg) -> (String, String) {
    let (status, out, err) = b.stop_with_status("TERM", SECS(5));
    assert_no_panic(&err);
    assert!(status.is_some_and(|s| s.success()), "ustack exited with {status:?} after SIGTERM; stderr:\n{err}");
    (out, err)
}

/// `ustack up`'s counters, printed as it exits.
fn counters(out: &str, err: &str) -> BTreeMap<String, u64> {
    support::parse_counters(out).unwrap_or_else(|| panic!("no counters in stdout:\n{out}\n{err}"))
}

fn counter(c: &BTreeMap<String, u64>, name: &str) -> u64 {
    c.get(name).copied().unwrap_or(0)
}

/// Ping `count` times at 10 ms from the peer; require every echo answered.
fn ping(v: &Veth, count: u32, size: u32) -> u64 {
    let (count_s, size_s, dst) = (count.to_string(), size.to_string(), v.stack_ip());
    let out = v.peer.exec(&["ping", "-n", "-c", &count_s, "-i", "0.01", "-W", "2", "-s", &size_s, &dst], SECS(60));
    let text = out.stdout_str();
    let line = text.lines().find(|l| l.contains("packets transmitted")).unwrap_or_else(|| panic!("no ping summary: {out}"));
    assert!(out.success() && line.contains(" 0% packet loss"), "ping -c {count} -s {size}: {out}");
    let nums: Vec<u64> = line.split(',').filter_map(|p| p.split_whitespace().next()?.parse().ok()).collect();
    assert_eq!(&nums[..2], &[u64::from(count), u64::from(count)], "ping -s {size}: {out}");
    nums[1]
}

#[test]
fn ping_arping_and_udp_echo_with_checksum_offload_on() {
    skip_unless!("ping", "arping", "socat", "ethtool");
    let v = Veth::new("apbasic", 1, true);
    // The point of this test: the kernel peer leaves checksums partial.
    assert_eq!(v.peer_tx_csum(), "tx-checksumming: on", "the veth's default changed; this test needs offload on");
    let b = v.ustack(&["up", "--udp-echo", "7"], "UDP echo on port 7");
    v.wait_answering(&b);

    let answered = 1 + ping(&v, 200, 56) + ping(&v, 200, 1400);

    let dst = v.stack_ip();
    let out = v.peer.exec(&["arping", "-c", "5", "-w", "5", "-W", "0.2", "-I", &v.peer_if, &dst], SECS(20));
    let replies = out.stdout_str().lines().filter(|l| l.contains("bytes from") && l.contains(&format!("({dst})"))).count();
    assert_eq!(replies, 5, "arping -c 5 {dst}: {out}");

    let mut echoed = 0;
    for (i, size) in [1, 64, 1000, 1472].into_iter().enumerate() {
        let payload = support::pseudo_random(size, 0xa5a5 + i as u64);
        let addr = format!("UDP:{dst}:7");
        let out = v.peer.exec_stdin(&["socat", "-T", "3", "-t", "2", "-b", "65536", "-", &addr], &payload, SECS(15));
        assert!(out.success() && out.stdout == payload, "UDP echo of {size} bytes: {} bytes back; {out}", out.stdout.len());
        echoed += 1;
    }

    // The device's own counters: the kernel's partial checksums reached the
    // stack as such (and were answered, above).
    let dev = format!("af_packet:{}", v.stack_if);
    let out = v.stack.exec(&[support::ustack_bin(), "stats", "--device", &dev, "--json"], SECS(5));
    let snap: Value = serde_json::from_slice(&out.stdout).unwrap_or_else(|e| panic!("ustack stats --json ({e}): {out}"));
    let dc = &snap["interfaces"][0]["device_counters"];
    eprintln!("device counters: {dc}");
    assert!(dc["rx_csum_partial"].as_u64().unwrap_or(0) > 0, "no partial checksums seen: {dc}");
    assert_eq!(dc["rx_kernel_drops"].as_u64(), Some(0), "{dc}");

    let (stdout, stderr) = stop_ok(b);
    let c = counters(&stdout, &stderr);
    assert_eq!(counter(&c, "icmp_echo_replies_sent"), answered, "counters:\n{stdout}");
    assert_eq!(counter(&c, "udp_tx"), echoed, "counters:\n{stdout}");
    for drop in ["drop_udp_checksum", "drop_icmp_checksum", "drop_ipv4_checksum"] {
        assert_eq!(counter(&c, drop), 0, "{drop}; counters:\n{stdout}");
    }
    assert!(counter(&c, "arp_replies_sent") >= 5, "counters:\n{stdout}");
}

#[test]
fn curl_64_mib_from_http_root_with_equal_sha256() {
    skip_unless!("curl", "ping");
    let v = Veth::new("aphttp", 2, true);
    let dir = TempDir::new("aphttp");
    std::fs::create_dir_all(dir.path("www")).unwrap();
    let file = dir.path("www").join("big.bin");
    write_random_file(&file, 64 << 20, 0xc0ffee);
    let b = v.ustack(&["up", "--http-root", &dir.file("www")], "HTTP on port 80");
    v.wait_answering(&b);

    let got = dir.file("got.bin");
    let url = format!("http://{}/big.bin", v.stack_ip());
    let out = curl_get(&v.peer, &url, &got, SECS(90));
    assert!(out.success(), "curl {url}: {out}\nustack stderr:\n{}", b.stderr_now());
    assert_eq!(sha256_file(std::path::Path::new(&got)), sha256_file(&file), "SHA-256 of the fetched file differs");
    let (stdout, stderr) = stop_ok(b);
    let c = counters(&stdout, &stderr);
    assert_eq!(counter(&c, "drop_tcp_checksum"), 0, "counters:\n{stdout}");
}

/// Wait (bounded) for `n` JSON documents on `b`'s stdout.
fn wait_documents(b: &Bg, n: usize) -> Vec<Value> {
    let deadline = Instant::now() + SECS(15);
    loop {
        let docs = json_documents(&b.stdout_now());
        if docs.len() >= n {
            return docs;
        }
        assert!(Instant::now() < deadline, "{} of {n} results:\n{}", docs.len(), b.stderr_now());
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn iperf3_client_against_ustack_perf_server() {
    skip_unless!("iperf3", "ping");
    let v = Veth::new("apiperf", 3, true);
    // Both ring layouts (the default, v2, and v3) against the kernel sender.
    for ring in ["", ",ring=v3"] {
        // Each stack has a MAC of its own: the kernel must not keep the last one's.
        v.peer.exec_ok(&["ip", "neigh", "flush", "dev", &v.peer_if], SECS(5));
        let server = v.ustack_with(ring, &["perf", "-s", "-J"], "perf server on");
        v.wait_answering(&server);
        iperf3_both_ways(&v, server);
    }
}

fn iperf3_both_ways(v: &Veth, server: Bg) {
    let dst = v.stack_ip();
    for (i, mode) in [&[][..], &["-R"][..]].into_iter().enumerate() {
        let mut argv = vec!["iperf3", "-c", &dst, "-J", "-t", "2"];
        argv.extend_from_slice(mode);
        let out = v.peer.exec(&argv, SECS(40));
        let theirs: Value = serde_json::from_slice(&out.stdout).unwrap_or_else(|e| panic!("iperf3 {mode:?}: not JSON ({e}): {out}"));
        assert!(out.success() && theirs.get("error").is_none(), "iperf3 {mode:?}: {out}\n{}", server.stderr_now());
        let ours = wait_documents(&server, i + 1).swap_remove(i);
        for sum in ["sum_sent", "sum_received"] {
            let (t, o) = (end_bytes(&theirs, sum), end_bytes(&ours, sum));
            eprintln!("iperf3 {mode:?} over af_packet: end.{sum}.bytes iperf3 {t}, ustack {o}");
            assert!(t > 0, "iperf3 {mode:?}: no bytes in end.{sum}");
            assert_eq!(t, o, "iperf3 {mode:?}: end.{sum}.bytes differ");
        }
    }
    // Bytes moved both ways with the kernel's checksums left partial: the
    // stack took them as they are.
    stop_ok(server);
}

#[test]
fn ustack_perf_client_to_ustack_perf_server_across_processes() {
    skip_unless!("ping");
    // No kernel address on either end: a stack on each.
    let v = Veth::new("apu2u", 4, false);
    let server = v.ustack(&["perf", "-s", "-J"], "perf server on");
    let dst = v.stack_ip();
    let client_ip = format!("10.88.{}.3/24", v.subnet);
    // The client on the other ring layout: both meet on one wire.
    let dev = format!("af_packet:{},ring=v3", v.peer_if);
    for (i, mode) in [&[][..], &["-R"][..]].into_iter().enumerate() {
        let mut argv = vec![support::ustack_bin(), "perf", "-c", &dst, "-t", "2", "-J", "--device", &dev, "--ip", &client_ip];
        argv.extend_from_slice(mode);
        let out = v.peer.exec(&argv, SECS(60));
        assert!(out.success(), "ustack perf -c {mode:?}: {out}\nserver:\n{}", server.stderr_now());
        let client: Value = serde_json::from_slice(&out.stdout).unwrap_or_else(|e| panic!("not JSON ({e}): {out}"));
        let srv = wait_documents(&server, i + 1).swap_remove(i);
        for sum in ["sum_sent", "sum_received"] {
            let (c, s) = (end_bytes(&client, sum), end_bytes(&srv, sum));
            eprintln!("ustack↔ustack {mode:?} over af_packet: end.{sum}.bytes client {c}, server {s}");
            assert!(c > 0, "{mode:?}: no bytes in end.{sum}");
            assert_eq!(c, s, "{mode:?}: end.{sum}.bytes differ");
        }
        assert!(end_bytes(&client, "sum_received") <= end_bytes(&client, "sum_sent"), "{mode:?}: received more than sent");
    }
    stop_ok(server);
}

#[test]
fn interface_deleted_under_a_running_stack_ends_it_with_one_line() {
    skip_unless!("ping");
    let v = Veth::new("apdel", 5, true);
    let mut b = v.ustack(&["up"], "ustack: up on");
    v.wait_answering(&b);
    let t = Instant::now();
    v.stack.exec_ok(&["ip", "link", "del", &v.stack_if], SECS(5));
    let status = b.wait_exit(SECS(10));
    let err = b.stderr_now();
    eprintln!("exited {status} {:?} after ip link del; stderr:\n{err}", t.elapsed());
    assert_no_panic(&err);
    assert_eq!(status.code(), Some(1), "ustack's exit after its interface was deleted:\n{err}");
    let errors: Vec<&str> = err.lines().filter(|l| l.starts_with("ustack: error: ")).collect();
    assert_eq!(errors.len(), 1, "expected one error line:\n{err}");
    assert!(errors[0].contains(&v.stack_if) && errors[0].contains("went away"), "{err}");
}

/// `ustack up --device af_packet:...` in a fresh namespace; its output.
fn up_in_ns(tag: &str, device: &str) -> Output {
    let ns = Netns::new(tag);
    ns.exec(&[support::ustack_bin(), "up", "--device", device, "--ip", "10.88.9.2/24"], SECS(10))
}

#[test]
fn missing_interface_bad_option_and_no_cap_net_raw_are_one_line_each() {
    skip_unless!("capsh");
    let out = up_in_ns("apnoif", "af_packet:nosuch0");
    assert_one_error_line(&out, &["nosuch0"]);
    let out = up_in_ns("apopt", "af_packet:lo,blocks=1");
    assert_one_error_line(&out, &["blocks=1"]);
    let out = up_in_ns("apopt2", "af_packet:lo,typo=3");
    assert_one_error_line(&out, &["typo"]);
    // Root without CAP_NET_RAW in the bounding set.
    let ns = Netns::new("apraw");
    let cmd = format!("exec {} up --device af_packet:lo --ip 10.88.9.2/24", support::ustack_bin());
    let out = ns.exec(&["capsh", "--drop=cap_net_raw", "--", "-c", &cmd], SECS(10));
    assert_one_error_line(&out, &["CAP_NET_RAW"]);
}

/// IPv6 over AF_PACKET with its offloads: the stack hands the kernel TCP
/// super-segments to cut (GSO_TCPV6; a capture on the peer's end, taken
/// before anything cuts them, sees them longer than the MTU), and takes
/// the kernel's own whole (they were dropped as unsupported before);
/// 16 MiB arrive unchanged one way, 16 MiB are taken the other.
#[test]
fn ipv6_super_segments_both_ways_over_af_packet() {
    skip_unless!("curl", "ping", "tcpdump", "socat", "sha256sum");
    let v = Veth::new("ap6", 6, false);
    for sysctl in ["all", "default", v.peer_if.as_str()] {
        v.peer.exec_ok(&["sysctl", "-qw", &format!("net.ipv6.conf.{sysctl}.disable_ipv6=0")], SECS(5));
    }
    v.peer.exec_ok(&["ip", "-6", "addr", "add", "fd00:88:6::1/64", "dev", &v.peer_if, "nodad"], SECS(5));
    let dir = TempDir::new("ap6");
    std::fs::create_dir_all(dir.path("www")).unwrap();
    let file = dir.path("www").join("big.bin");
    write_random_file(&file, 16 << 20, 0x6a6b);
    let www = dir.file("www");
    let args = ["up", "--ip6", "fd00:88:6::2/64", "--http-root", &www, "--tcp-discard", "9"];
    let b = v.ustack(&args, "HTTP on port 80");
    // Duplicate address detection takes about a second.
    let deadline = Instant::now() + SECS(15);
    while !v.peer.exec(&["ping", "-6", "-n", "-c", "1", "-W", "1", "fd00:88:6::2"], SECS(5)).success() {
        assert!(Instant::now() < deadline, "no answer to ping -6:\n{}", b.stderr_now());
    }
    let pcap = dir.file("ap6.pcap");
    let argv = ["tcpdump", "-i", &v.peer_if, "-n", "-s", "0", "--immediate-mode", "-U", "-w", &pcap, "ip6 and tcp"];
    let mut dump = Bg::spawn(&v.peer, &argv);
    dump.wait_ready("listening", SECS(10), |e| e.contains("listening on"));

    let got = dir.file("got.bin");
    let url = "http://[fd00:88:6::2]/big.bin";
    let out = v.peer.exec(&["curl", "-6", "-g", "-sS", "--fail", "--max-time", "60", "-o", &got, url], SECS(70));
    assert!(out.success(), "curl {url}: {out}\nustack stderr:\n{}", b.stderr_now());
    assert_eq!(sha256_file(std::path::Path::new(&got)), sha256_file(&file), "SHA-256 of the fetched file differs");
    let src = format!("OPEN:{}", file.display());
    let out = v.peer.exec(&["socat", "-u", "-T", "30", &src, "TCP6:[fd00:88:6::2]:9"], SECS(60));
    assert!(out.success(), "16 MiB to the discard port: {out}\nustack stderr:\n{}", b.stderr_now());
    let dump_err = dump.stop("INT", SECS(10));

    let read = v.peer.exec(&["tcpdump", "-r", &pcap, "-n", "src", "fd00:88:6::2"], SECS(30));
    let longest = read
        .stdout_str()
        .lines()
        .filter_map(|l| l.rsplit_once("length ").and_then(|(_, n)| n.split(|c: char| !c.is_ascii_digit()).next()?.parse::<usize>().ok()))
        .max()
        .unwrap_or(0);
    assert!(longest > 1500, "the stack's longest segment carried {longest} bytes: no super-segment\n{dump_err}");
    let dev = format!("af_packet:{}", v.stack_if);
    let out = v.stack.exec(&[support::ustack_bin(), "stats", "--device", &dev, "--json"], SECS(5));
    let snap: Value = serde_json::from_slice(&out.stdout).unwrap_or_else(|e| panic!("ustack stats --json ({e}): {out}"));
    let dc = &snap["interfaces"][0]["device_counters"];
    assert_eq!(dc["rx_gso_unsupported"].as_u64(), Some(0), "{dc}");
    assert!(dc["rx_coalesced"].as_u64().unwrap_or(0) > 0, "the kernel's super-segments did not arrive whole: {dc}");
    let (stdout, stderr) = stop_ok(b);
    let c = counters(&stdout, &stderr);
    assert_eq!(counter(&c, "drop_tcp_checksum"), 0, "counters:\n{stdout}");
    assert!(counter(&c, "tcp_rx") > 0, "counters:\n{stdout}");
}
