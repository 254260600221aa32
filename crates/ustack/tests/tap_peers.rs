//! The `ustack` binary on a TAP against the Linux kernel and Linux tools
//! (ping, arping, socat, tcpdump, tshark), each test inside a network namespace
//! of its own.
//!
//! Topology per test: namespace `ust-<test>-<pid>`; `ustack up` runs in it on
//! TAP `ut<N>p<pid>` as 10.77.N.2/24 and gives the kernel's side 10.77.N.1/24.
//! Tools run in the same namespace against 10.77.N.2. Kernel IPv6 is disabled
//! in the namespace (default + the TAP) so the kernel sends no ND/MLD noise.
//!
//! Needs root (skips with a printed reason otherwise). Every tool run and wait
//! is bounded; the namespace and the ustack process are removed by guards, also
//! when a test fails.

#[macro_use]
mod support;

use std::collections::BTreeMap;
use std::time::Duration;
use support::{assert_no_panic, assert_one_error_line, Netns, Output, Stopped, TempPath, UpOpts, Ustack};

const SECS: fn(u64) -> Duration = Duration::from_secs;

/// Namespace with IPv6 off by default, then ustack in it.
fn setup(tag: &str, idx: u8, pcap: Option<&TempPath>, udp_echo: &[u16]) -> (Netns, Ustack) {
    let ns = Netns::new(tag);
    // New interfaces inherit `default`: the TAP never gets an IPv6 address, so
    // no DAD/ND/MLD frames reach the stack.
    ns.exec_ok(&["sysctl", "-qw", "net.ipv6.conf.default.disable_ipv6=1"], SECS(5));
    ns.exec_ok(&["sysctl", "-qw", "net.ipv6.conf.all.disable_ipv6=1"], SECS(5));
    let opts = UpOpts {
        tap: support::short_name("ut", idx),
        subnet: idx,
        pcap: pcap.map(|p| p.as_str().to_owned()),
        udp_echo: udp_echo.to_vec(),
    };
    let u = Ustack::start(&ns, opts);
    let tap = u.opts.tap.clone();
    ns.exec_ok(&["sysctl", "-qw", &format!("net.ipv6.conf.{tap}.disable_ipv6=1")], SECS(5));
    (ns, u)
}

/// Stop with SIGTERM: must exit 0 within 5 s, print counters, not panic.
fn stop_ok(u: Ustack) -> (Stopped, BTreeMap<String, u64>) {
    let s = u.stop(SECS(5));
    assert_no_panic(&s.stderr);
    assert!(s.status.success(), "ustack exited with {} after SIGTERM; stderr:\n{}", s.status, s.stderr);
    let c = s.counters();
    (s, c)
}

fn counter(c: &BTreeMap<String, u64>, name: &str) -> u64 {
    c.get(name).copied().unwrap_or(0)
}

/// `(transmitted, received)` from ping's summary line
/// "N packets transmitted, M received, ...".
fn ping_summary(out: &Output) -> (u64, u64) {
    let text = out.stdout_str();
    let line = text
        .lines()
        .find(|l| l.contains("packets transmitted"))
        .unwrap_or_else(|| panic!("no ping summary line: {out}"));
    let nums: Vec<u64> = line.split(',').filter_map(|part| part.split_whitespace().next()?.parse().ok()).collect();
    assert!(nums.len() >= 2, "cannot parse ping summary {line:?}");
    assert!(line.contains(" 0% packet loss"), "ping lost packets: {line}\n{out}");
    (nums[0], nums[1])
}

/// Ping `count` times, flooding at 10 ms, and require 0% loss.
fn ping(ns: &Netns, dst: &str, count: u32, size: u32) -> u64 {
    let count_s = count.to_string();
    let size_s = size.to_string();
    let out = ns.exec(&["ping", "-n", "-c", &count_s, "-i", "0.01", "-W", "2", "-s", &size_s, dst], SECS(60));
    assert!(out.success(), "ping -c {count} -s {size} {dst}: {out}");
    let (tx, rx) = ping_summary(&out);
    assert_eq!((tx, rx), (count as u64, count as u64), "ping -s {size}: {out}");
    rx
}

#[test]
fn ping_200_small_and_large_without_loss() {
    skip_unless!("ping");
    let (ns, u) = setup("ping", 11, None, &[]);
    let dst = u.opts.stack_ip();
    let mut answered = ping(&ns, &dst, 200, 56);
    answered += ping(&ns, &dst, 200, 1400);
    let (s, c) = stop_ok(u);
    assert_eq!(counter(&c, "icmp_echo_replies_sent"), answered, "counters:\n{}", s.stdout);
    assert_eq!(counter(&c, "drop_icmp_checksum"), 0, "counters:\n{}", s.stdout);
    drop(ns);
}

/// Replies that arping 2.x (Thomas Habets) printed: "... bytes from MAC (IP): index=N time=...".
fn arping_replies(out: &Output, ip: &str) -> usize {
    out.stdout_str()
        .lines()
        .filter(|l| l.contains("bytes from") && l.contains(&format!("({ip})")) && l.contains("index="))
        .count()
}

#[test]
fn arping_gets_five_replies() {
    skip_unless!("arping");
    let (ns, u) = setup("arping", 12, None, &[]);
    let dst = u.opts.stack_ip();
    let tap = u.opts.tap.clone();
    // -W: interval between requests (arping 2.x), to keep the test short.
    let out = ns.exec(&["arping", "-c", "5", "-w", "5", "-W", "0.2", "-I", &tap, &dst], SECS(20));
    let replies = arping_replies(&out, &dst);
    assert_eq!(replies, 5, "arping -c 5 {dst}: {out}");
    assert!(out.success(), "arping exit: {out}");
    let (s, c) = stop_ok(u);
    // The kernel may ARP for the stack on its own too; at least arping's five.
    assert!(counter(&c, "arp_replies_sent") >= 5, "counters:\n{}", s.stdout);
    assert!(counter(&c, "arp_rx") >= 5, "counters:\n{}", s.stdout);
    drop(ns);
}

/// Send one datagram with socat and return what came back.
fn socat_echo(ns: &Netns, dst: &str, port: u16, payload: &[u8]) -> Output {
    let addr = format!("UDP:{dst}:{port}");
    // -T 3: give up after 3 s of silence; -t 2: after stdin's EOF, wait up to
    // 2 s for the echo. `-b` large enough that one read is one datagram.
    ns.exec_stdin(&["socat", "-T", "3", "-t", "2", "-b", "65536", "-", &addr], payload, SECS(15))
}

fn udp_echo_sizes(ns: &Netns, dst: &str, sizes: &[usize]) -> u64 {
    let mut n = 0;
    for (i, &size) in sizes.iter().enumerate() {
        let payload = support::pseudo_random(size, 0x5eed_0000 + i as u64 * 7919 + size as u64);
        let out = socat_echo(ns, dst, 7, &payload);
        assert!(out.success(), "socat {size} bytes: {out}");
        assert_eq!(
            out.stdout.len(),
            size,
            "UDP echo of {size} bytes returned {} bytes; socat stderr: {}",
            out.stdout.len(),
            out.stderr
        );
        assert!(out.stdout == payload, "UDP echo of {size} bytes came back altered");
        n += 1;
    }
    n
}

#[test]
fn udp_echo_with_socat_returns_same_bytes() {
    skip_unless!("socat", "ethtool");
    let (ns, u) = setup("udpecho", 13, None, &[7]);
    let dst = u.opts.stack_ip();
    let tap = u.opts.tap.clone();
    // This test runs with the TAP's defaults (no `ethtool -K tx off`), on
    // purpose: the stack opens its TAP with IFF_VNET_HDR/TUNSETOFFLOAD, so
    // the kernel's side offloads checksums and hands the stack UDP datagrams
    // whose checksum is only the pseudo-header sum (CHECKSUM_PARTIAL, told
    // by the virtio-net header). The stack must take them all.
    let k = ns.exec(&["ethtool", "-k", &tap], SECS(5)).stdout_str();
    let tx_csum = k.lines().find(|l| l.starts_with("tx-checksumming:")).unwrap_or("?").to_owned();
    eprintln!("{tap}: {tx_csum}");
    assert_eq!(tx_csum, "tx-checksumming: on", "kernel side of the TAP does not offload checksums:\n{k}");
    let sizes = [1000, 1, 18, 64, 512, 999, 1024, 1400, 1472];
    let sent = udp_echo_sizes(&ns, &dst, &sizes);
    let (s, c) = stop_ok(u);
    assert_eq!(counter(&c, "udp_rx"), sent, "counters:\n{}", s.stdout);
    assert_eq!(counter(&c, "udp_tx"), sent, "counters:\n{}", s.stdout);
    assert_eq!(counter(&c, "drop_udp_checksum"), 0, "counters:\n{}", s.stdout);
    drop(ns);
}

#[test]
fn udp_echo_with_tx_checksum_offload_off() {
    skip_unless!("socat", "ethtool");
    let (ns, u) = setup("udpnocsum", 14, None, &[7]);
    let dst = u.opts.stack_ip();
    let tap = u.opts.tap.clone();
    ns.exec_ok(&["ethtool", "-K", &tap, "tx", "off"], SECS(5));
    let sent = udp_echo_sizes(&ns, &dst, &[1000, 1, 1400]);
    let (s, c) = stop_ok(u);
    assert_eq!(counter(&c, "udp_tx"), sent, "counters:\n{}", s.stdout);
    drop(ns);
}

#[test]
fn pcap_holds_every_frame_counted() {
    skip_unless!("ping", "socat", "tcpdump", "ethtool");
    let pcap = TempPath::new("pcap", "pcap");
    let (ns, u) = setup("pcap", 15, Some(&pcap), &[7]);
    let dst = u.opts.stack_ip();
    // The capture holds frames as the kernel handed them over: with its
    // checksum offload on (the TAP's default) its UDP checksums would be only
    // the pseudo-header sum, which tshark rightly calls bad. Off here, so
    // every checksum in the file can be checked.
    ns.exec_ok(&["ethtool", "-K", &u.opts.tap, "tx", "off"], SECS(5));
    let answered = ping(&ns, &dst, 20, 56) + ping(&ns, &dst, 5, 1400);
    let echoed = udp_echo_sizes(&ns, &dst, &[1000, 100, 1400]);
    let (s, c) = stop_ok(u);
    let counted = counter(&c, "rx_frames") + counter(&c, "tx_frames");
    assert_eq!(counter(&c, "icmp_echo_replies_sent"), answered, "counters:\n{}", s.stdout);
    assert_eq!(counter(&c, "udp_tx"), echoed, "counters:\n{}", s.stdout);

    let bytes = std::fs::read(&pcap.0).unwrap_or_else(|e| panic!("read {}: {e}", pcap.as_str()));
    let in_file = support::pcap_records(&bytes).len() as u64;
    assert_eq!(in_file, counted, "frames in the pcap vs rx_frames + tx_frames; counters:\n{}", s.stdout);

    // The same count as tcpdump sees it (one line per frame without -v).
    let out = support::run_bounded(
        {
            let mut c = std::process::Command::new("tcpdump");
            c.args(["-r", pcap.as_str(), "-nn"]);
            c
        },
        None,
        SECS(30),
    );
    assert!(out.success(), "tcpdump -r: {out}");
    let lines = out.stdout_str().lines().count() as u64;
    assert_eq!(lines, counted, "tcpdump -r {} -nn | wc -l; counters:\n{}\n{out}", pcap.as_str(), s.stdout);

    // tshark, if present: frame count and no malformed frames.
    if support::skip_reason_with(&["tshark"]).is_none() {
        let mut cmd = std::process::Command::new("tshark");
        cmd.args(["-r", pcap.as_str(), "-n", "-T", "fields", "-e", "frame.number", "-e", "_ws.malformed"]);
        let out = support::run_bounded(cmd, None, SECS(60));
        assert!(out.success(), "tshark -r: {out}");
        let text = out.stdout_str();
        assert_eq!(text.lines().count() as u64, counted, "tshark frame count: {out}");
        assert!(!text.lines().any(|l| l.split('\t').nth(1).is_some_and(|m| !m.is_empty())), "malformed frames: {out}");
        // Every IP/ICMP/UDP checksum in the file verifies, both directions
        // (status 0 = Bad, 1 = Good in Wireshark), and the check really ran.
        let mut cmd = std::process::Command::new("tshark");
        cmd.args([
            "-r",
            pcap.as_str(),
            "-n",
            "-o",
            "ip.check_checksum:TRUE",
            "-o",
            "udp.check_checksum:TRUE",
            "-T",
            "fields",
            "-e",
            "ip.checksum.status",
            "-e",
            "icmp.checksum.status",
            "-e",
            "udp.checksum.status",
        ]);
        let out = support::run_bounded(cmd, None, SECS(60));
        assert!(out.success(), "tshark checksums: {out}");
        let text = out.stdout_str();
        assert!(!text.lines().any(|l| l.split('\t').any(|f| f == "0")), "bad checksum in the capture: {out}");
        let good_udp = text.lines().filter(|l| l.split('\t').nth(2) == Some("1")).count() as u64;
        assert_eq!(good_udp, 2 * echoed, "UDP datagrams with a verified-good checksum: {out}");
        // Every echo request in the file has its reply.
        let mut cmd = std::process::Command::new("tshark");
        cmd.args(["-r", pcap.as_str(), "-n", "-Y", "icmp.type == 0", "-T", "fields", "-e", "frame.number"]);
        let out = support::run_bounded(cmd, None, SECS(60));
        assert_eq!(out.stdout_str().lines().count() as u64, answered, "echo replies in pcap: {out}");
    }
    drop(ns);
}

#[test]
fn sigterm_after_traffic_exits_zero_with_counters() {
    skip_unless!("ping");
    let (ns, u) = setup("sigterm", 16, None, &[]);
    let dst = u.opts.stack_ip();
    let answered = ping(&ns, &dst, 50, 56);
    // Idle a moment: SIGTERM must also wake a stack that is waiting for frames.
    std::thread::sleep(Duration::from_millis(300));
    let (s, c) = stop_ok(u);
    assert!(s.stdout.starts_with("counters:\n"), "stdout should start with the counters block:\n{}", s.stdout);
    assert_eq!(counter(&c, "icmp_echo_replies_sent"), answered, "counters:\n{}", s.stdout);
    assert!(counter(&c, "icmp_rx") >= answered, "counters:\n{}", s.stdout);
    assert!(counter(&c, "ipv4_rx") >= answered, "counters:\n{}", s.stdout);
    assert!(counter(&c, "rx_frames") >= answered && counter(&c, "tx_frames") >= answered, "counters:\n{}", s.stdout);
    assert!(counter(&c, "rx_bytes") >= answered * 98, "counters:\n{}", s.stdout);
    // Only non-zero counters are printed.
    assert!(c.values().all(|&v| v != 0), "a zero counter was printed:\n{}", s.stdout);
    eprintln!("exited {:?} after SIGTERM", s.elapsed);
    drop(ns);
}

#[test]
fn sigint_exits_zero_with_counters() {
    skip_unless!("ping");
    let (ns, u) = setup("sigint", 17, None, &[]);
    let dst = u.opts.stack_ip();
    let answered = ping(&ns, &dst, 10, 56);
    let s = u.stop_with("INT", SECS(5));
    assert_no_panic(&s.stderr);
    assert!(s.status.success(), "exit {} after SIGINT; stderr:\n{}", s.status, s.stderr);
    assert_eq!(counter(&s.counters(), "icmp_echo_replies_sent"), answered, "{}", s.stdout);
    drop(ns);
}

#[test]
fn sigterm_when_idle_from_start_exits_zero() {
    skip_unless!();
    let (ns, u) = setup("idle", 18, None, &[7]);
    std::thread::sleep(Duration::from_millis(200));
    let (s, _c) = stop_ok(u);
    assert!(s.stdout.contains("counters:"), "{}", s.stdout);
    drop(ns);
}

#[test]
fn fragments_broadcast_ping_and_closed_port_leave_stack_answering() {
    skip_unless!("ping", "socat");
    let (ns, u) = setup("odd", 20, None, &[7]);
    let dst = u.opts.stack_ip();
    // Fragmented echo requests are reassembled, and their replies (3,028 and
    // 1,501 bytes of IP) exceed the MTU, so they leave in fragments too.
    let mut big_answered = 0;
    for size in ["3000", "1473"] {
        let out = ns.exec(&["ping", "-n", "-c", "3", "-i", "0.05", "-W", "2", "-s", size, &dst], SECS(20));
        assert!(out.stdout_str().contains(" 3 received"), "ping -s {size} (fragmented): {out}");
        big_answered += 3;
    }
    // Echo to the subnet broadcast is ignored (no smurf amplifier).
    let out = ns.exec(&["ping", "-n", "-b", "-c", "2", "-i", "0.05", "-W", "1", "10.77.20.255"], SECS(20));
    assert!(out.stdout_str().contains(" 0 received"), "broadcast ping answered: {out}");
    // A closed UDP port answers with ICMP port unreachable: socat sees ECONNREFUSED.
    let out = ns.exec_stdin(&["socat", "-T", "2", "-t", "1", "-", &format!("UDP:{dst}:9")], b"hello", SECS(15));
    assert!(out.stderr.contains("Connection refused"), "UDP to closed port 9: {out}");
    // Still alive and answering, on both ICMP and UDP.
    let answered = ping(&ns, &dst, 5, 56);
    udp_echo_sizes(&ns, &dst, &[100]);
    let (s, c) = stop_ok(u);
    // 3 × 3 fragments (3008-byte datagrams) + 3 × 2 (1481-byte), all six
    // datagrams reassembled, all six replies fragmented the same way.
    assert_eq!(counter(&c, "ipv4_frag_rx"), 15, "counters:\n{}", s.stdout);
    assert_eq!(counter(&c, "ipv4_reassembled"), 6, "counters:\n{}", s.stdout);
    assert_eq!(counter(&c, "ipv4_fragmented"), 6, "counters:\n{}", s.stdout);
    assert_eq!(counter(&c, "ipv4_frag_tx"), 15, "counters:\n{}", s.stdout);
    assert_eq!(counter(&c, "drop_too_big"), 0, "counters:\n{}", s.stdout);
    assert_eq!(counter(&c, "drop_icmp_ignored"), 2, "counters:\n{}", s.stdout);
    assert_eq!(counter(&c, "drop_udp_no_socket"), 1, "counters:\n{}", s.stdout);
    assert_eq!(counter(&c, "icmp_errors_sent"), 1, "counters:\n{}", s.stdout);
    assert_eq!(counter(&c, "icmp_echo_replies_sent"), answered + big_answered, "counters:\n{}", s.stdout);
    drop(ns);
}

// ---- errors a person sees ----

/// `ustack up ARGS` inside a fresh namespace (so a TAP it creates vanishes
/// with it); returns its output.
fn up_in_ns(tag: &str, args: &[&str]) -> Output {
    let ns = Netns::new(tag);
    let mut argv = vec![support::ustack_bin(), "up"];
    argv.extend_from_slice(args);
    ns.exec(&argv, SECS(10))
}

#[test]
fn config_errors_are_one_line_each() {
    skip_unless!();
    let out = up_in_ns("errlong", &["--device", "tap:averyveryverylongname0", "--ip", "10.1.1.2/24"]);
    assert_one_error_line(&out, &["15 bytes"]);
    let out = up_in_ns("errgw", &["--device", "tap:e0", "--ip", "10.1.1.2/24", "--gateway", "10.2.2.1"]);
    assert_one_error_line(&out, &["--gateway", "10.2.2.1"]);
    for ip in ["10.1.1.0/24", "10.1.1.255/24"] {
        let out = up_in_ns("errnet", &["--device", "tap:e0", "--ip", ip]);
        assert_one_error_line(&out, &["--ip", ip]);
    }
    // `lo` exists and is not a TAP.
    let out = up_in_ns("errlo", &["--device", "tap:lo", "--ip", "10.1.1.2/24"]);
    assert_one_error_line(&out, &["lo", "not a TAP"]);
}

#[test]
fn unwritable_pcap_and_duplicate_port_fail_cleanly() {
    skip_unless!();
    let out = up_in_ns("errpcap", &["--device", "tap:e0", "--ip", "10.1.1.2/24", "--pcap", "/nonexistent-dir/x.pcap"]);
    assert_eq!(out.code(), Some(1), "{out}");
    let last = out.stderr.lines().last().unwrap_or("");
    assert!(last.starts_with("ustack: error: ") && last.contains("/nonexistent-dir/x.pcap"), "{out}");
    assert_no_panic(&out.stderr);
    let out = up_in_ns("errdup", &["--device", "tap:e0", "--ip", "10.1.1.2/24", "--udp-echo", "7", "--udp-echo", "7"]);
    assert_eq!(out.code(), Some(1), "{out}");
    let last = out.stderr.lines().last().unwrap_or("");
    assert!(last.starts_with("ustack: error: ") && last.contains("port 7"), "{out}");
    assert_no_panic(&out.stderr);
}

// Regressions for bugs these tests found (fixed in d20a313).

#[test]
fn startup_errors_do_not_claim_up_first() {
    skip_unless!();
    let out = up_in_ns("bugpcap", &["--device", "tap:e0", "--ip", "10.1.1.2/24", "--pcap", "/nonexistent-dir/x.pcap"]);
    assert_one_error_line(&out, &["/nonexistent-dir/x.pcap"]);
    let out = up_in_ns("bugdup", &["--device", "tap:e0", "--ip", "10.1.1.2/24", "--udp-echo", "7", "--udp-echo", "7"]);
    assert_one_error_line(&out, &["port 7"]);
}

#[test]
fn bad_mac_names_expected_form() {
    let out = ustack(&["up", "--device", "tap:e0", "--ip", "10.1.1.2/24", "--mac", "zz"]);
    assert_eq!(out.code(), Some(2), "{out}");
    assert!(!out.stderr.contains("malformed packet"), "{out}");
    assert!(out.stderr.contains("02:00:00:00:00:01") || out.stderr.contains("xx:xx"), "{out}");
}

#[test]
fn udp_echo_port_zero_is_rejected() {
    skip_unless!();
    let out = up_in_ns("bugport0", &["--device", "tap:e0", "--ip", "10.1.1.2/24", "--udp-echo", "0"]);
    assert!(!out.timed_out, "ustack accepted --udp-echo 0 and kept running: {out}");
    assert_ne!(out.code(), Some(0), "{out}");
    assert!(out.stderr.contains("port 0") || out.stderr.contains("--udp-echo"), "{out}");
}

/// Run the binary directly (no namespace), bounded.
fn ustack(args: &[&str]) -> Output {
    let mut c = std::process::Command::new(support::ustack_bin());
    c.args(args);
    support::run_bounded(c, None, SECS(10))
}

#[test]
fn unknown_flag_is_a_usage_error_not_a_panic() {
    let out = ustack(&["up", "--bogus"]);
    assert!(!out.success() && !out.timed_out, "{out}");
    assert_eq!(out.code(), Some(2), "clap usage errors exit 2: {out}");
    assert!(out.stderr.contains("--bogus"), "{out}");
    assert_no_panic(&out.stderr);
}

#[test]
fn bad_device_kind_is_one_line_naming_tap_form() {
    let out = ustack(&["up", "--device", "foo:bar", "--ip", "10.0.0.2/24"]);
    assert_eq!(out.code(), Some(1), "{out}");
    let lines: Vec<&str> = out.stderr.lines().collect();
    assert_eq!(lines.len(), 1, "expected exactly one stderr line: {out}");
    assert!(lines[0].starts_with("ustack: error: "), "{out}");
    assert!(lines[0].contains("tap:NAME"), "{out}");
    assert!(out.stdout.is_empty(), "{out}");
    assert_no_panic(&out.stderr);
    // Empty name and missing kind: the same error.
    for dev in ["tap:", "ust0", ""] {
        let out = ustack(&["up", "--device", dev, "--ip", "10.0.0.2/24"]);
        assert_eq!(out.code(), Some(1), "--device {dev:?}: {out}");
        assert_eq!(out.stderr.lines().count(), 1, "--device {dev:?}: {out}");
        assert!(out.stderr.contains("tap:NAME"), "--device {dev:?}: {out}");
        assert_no_panic(&out.stderr);
    }
}

#[test]
fn ip_without_prefix_names_expected_form() {
    let out = ustack(&["up", "--device", "tap:ust0", "--ip", "10.0.0.2"]);
    assert!(!out.success() && !out.timed_out, "{out}");
    assert!(out.stderr.contains("10.0.0.2"), "{out}");
    assert!(
        out.stderr.contains("prefix") && (out.stderr.contains("/24") || out.stderr.contains("A.B.C.D/N")),
        "error should say an A.B.C.D/N form is expected: {out}"
    );
    assert_no_panic(&out.stderr);
    for bad in ["10.0.0.2/33", "10.0.0/24", "not-an-ip", "10.0.0.2/"] {
        let out = ustack(&["up", "--device", "tap:ust0", "--ip", bad]);
        assert!(!out.success() && !out.timed_out, "--ip {bad}: {out}");
        assert_no_panic(&out.stderr);
    }
}

/// One stderr line, `ustack: error: ...`, saying what privilege is missing.
fn assert_privilege_error(out: &Output, how: &str) {
    assert_eq!(out.code(), Some(1), "{how}: {out}");
    let lines: Vec<&str> = out.stderr.lines().collect();
    assert_eq!(lines.len(), 1, "{how}: expected exactly one stderr line: {out}");
    assert!(lines[0].starts_with("ustack: error: "), "{how}: {out}");
    assert!(lines[0].contains("CAP_NET_ADMIN") || lines[0].contains("root"), "{how}: {out}");
    assert_no_panic(&out.stderr);
}

#[test]
fn tap_without_privilege_says_cap_net_admin() {
    skip_unless!("setpriv");
    let ns = Netns::new("nopriv");
    let tap = support::short_name("ut", 19);
    let dev = format!("tap:{tap}");
    // The binary must be reachable by uid 65534: copy it somewhere it can be.
    let dir = std::env::temp_dir().join(format!("ustack-nopriv-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let _cleanup = DirGuard(dir.clone());
    let bin = dir.join("ustack");
    std::fs::copy(support::ustack_bin(), &bin).unwrap();
    let bin = bin.to_str().unwrap();
    let mut perms = std::fs::metadata(&dir).unwrap().permissions();
    std::os::unix::fs::PermissionsExt::set_mode(&mut perms, 0o755);
    std::fs::set_permissions(&dir, perms).unwrap();

    let out = ns.exec(
        &[
            "setpriv",
            "--reuid=65534",
            "--regid=65534",
            "--clear-groups",
            "--inh-caps=-all",
            bin,
            "up",
            "--device",
            &dev,
            "--ip",
            "10.77.19.2/24",
        ],
        SECS(10),
    );
    assert_privilege_error(&out, "setpriv uid 65534");
    // No TAP was left behind.
    let links = ns.exec_ok(&["ip", "-o", "link"], SECS(5)).stdout_str();
    assert!(!links.contains(&tap), "TAP created without privilege? {links}");

    // Root, but without CAP_NET_ADMIN in the bounding set (if capsh exists).
    if support::skip_reason_with(&["capsh"]).is_none() {
        let cmd = format!("exec {bin} up --device {dev} --ip 10.77.19.2/24");
        let out = ns.exec(&["capsh", "--drop=cap_net_admin", "--", "-c", &cmd], SECS(10));
        assert_privilege_error(&out, "capsh --drop=cap_net_admin");
    }
    drop(ns);
}

struct DirGuard(std::path::PathBuf);

impl Drop for DirGuard {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}
