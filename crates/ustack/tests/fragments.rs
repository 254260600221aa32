//! IPv4 reassembly against the Linux kernel: the kernel fragments, the stack
//! puts the datagrams back together and answers them.
//!
//! Topology: namespace `ust-frag-<pid>`; `ustack up` on TAP `uf30p<pid>` as
//! 10.77.30.2/24 with UDP echo on port 7, the kernel's side 10.77.30.1/24.
//! The stack reads the TAP's MTU (1500) when it opens it; the test then lowers
//! the kernel side to 576, so the kernel cuts everything bigger into
//! fragments of 552 data bytes while the stack's answers (up to 1500 bytes a
//! frame) still reach it: a TAP does not police the MTU of frames written
//! into it. An answer over 1500 bytes leaves in fragments of 1,480 bytes.
//!
//! What it shows: ping's 1,200-byte requests (3 fragments each) all get
//! their replies with ping's own data check passing; socat's 1,400-byte UDP
//! datagram comes back byte for byte; a 3,000-byte datagram to a closed port
//! (6 fragments) is refused with port unreachable, which the kernel turns
//! into ECONNREFUSED for socat; 3,000-byte pings are answered in fragments;
//! the capture holds exactly the fragments each side counted, and the
//! counters account for every datagram.
//!
//! The second test is fragmentation on transmit at the kernel's own MTU:
//! UDP echo through socat of datagrams from 1,473 bytes (one too many for
//! 1500) to 65,507 (the largest) comes back byte for byte, and `ping -s 4000`
//! is answered.
//!
//! Needs root (skips with a printed reason otherwise). Every tool run and wait
//! is bounded; the namespace and the ustack process are removed by guards, also
//! when a test fails.

#[macro_use]
mod support;

use std::collections::BTreeMap;
use std::time::Duration;
use support::{Netns, Output, TempPath, UpOpts, Ustack};

const SECS: fn(u64) -> Duration = Duration::from_secs;
const SUBNET: u8 = 30;
/// The kernel side's MTU during the test: 576 − 20 leaves 552 data bytes
/// (a multiple of 8) per fragment.
const KERNEL_MTU: usize = 576;
const FRAG_DATA: usize = 552;

fn counter(c: &BTreeMap<String, u64>, name: &str) -> u64 {
    c.get(name).copied().unwrap_or(0)
}

/// Fragments the kernel makes of an IP payload of `len` bytes.
fn fragments_of(len: usize) -> u64 {
    len.div_ceil(FRAG_DATA) as u64
}

/// `(transmitted, received)` from ping's summary line.
fn ping_summary(out: &Output) -> (u64, u64) {
    let text = out.stdout_str();
    let line =
        text.lines().find(|l| l.contains("packets transmitted")).unwrap_or_else(|| panic!("no ping summary: {out}"));
    let nums: Vec<u64> = line.split(',').filter_map(|part| part.split_whitespace().next()?.parse().ok()).collect();
    assert!(nums.len() >= 2, "cannot parse ping summary {line:?}");
    (nums[0], nums[1])
}

/// IPv4 frames from `src` in a pcap that are fragments (MF set or an offset).
fn fragments_in_pcap(bytes: &[u8], src: [u8; 4]) -> u64 {
    support::pcap_records(bytes)
        .iter()
        .filter(|(_, f)| f.len() >= 34 && f[12..14] == [0x08, 0x00] && f[26..30] == src)
        .filter(|(_, f)| u16::from_be_bytes([f[20], f[21]]) & 0x3fff != 0)
        .count() as u64
}

#[test]
fn kernel_fragments_are_reassembled_and_answered() {
    skip_unless!("ping", "socat");
    let pcap = TempPath::new("frag", "pcap");
    let ns = Netns::new("frag");
    ns.exec_ok(&["sysctl", "-qw", "net.ipv6.conf.default.disable_ipv6=1"], SECS(5));
    ns.exec_ok(&["sysctl", "-qw", "net.ipv6.conf.all.disable_ipv6=1"], SECS(5));
    let opts = UpOpts {
        tap: support::short_name("uf", SUBNET),
        subnet: SUBNET,
        pcap: Some(pcap.as_str().to_owned()),
        udp_echo: vec![7],
    };
    let u = Ustack::start(&ns, opts);
    let (dst, tap) = (u.opts.stack_ip(), u.opts.tap.clone());
    ns.exec_ok(&["ip", "link", "set", "dev", &tap, "mtu", &KERNEL_MTU.to_string()], SECS(5));

    // 20 echo requests of 1,208 ICMP bytes: 3 fragments each. `-M dont`: the
    // kernel fragments instead of refusing; ping checks the echoed data.
    let pings = 20;
    let out = ns.exec(
        &["ping", "-n", "-c", &pings.to_string(), "-i", "0.05", "-W", "2", "-M", "dont", "-s", "1200", &dst],
        SECS(30),
    );
    assert_eq!(ping_summary(&out), (pings, pings), "ping -s 1200 through a 576-byte MTU: {out}");
    assert!(!out.stdout_str().contains("wrong data"), "ping saw altered data: {out}");

    // A 1,400-byte UDP datagram (1,408 UDP bytes: 3 fragments), echoed whole.
    let payload = support::pseudo_random(1400, 0xf7a6);
    let out = ns.exec_stdin(
        &["socat", "-T", "3", "-t", "2", "-b", "65536", "-", &format!("UDP:{dst}:7")],
        &payload,
        SECS(15),
    );
    assert!(out.success(), "socat UDP echo of 1400 bytes: {out}");
    assert!(out.stdout == payload, "UDP echo of 1400 fragmented bytes came back as {} bytes", out.stdout.len());

    // 3,000 bytes to a closed port (6 fragments): the stack sees the whole
    // datagram, finds no socket, and socat hears "Connection refused".
    let big = support::pseudo_random(3000, 0xf7a7);
    let out = ns.exec_stdin(&["socat", "-T", "2", "-t", "1", "-", &format!("UDP:{dst}:9")], &big, SECS(15));
    assert!(out.stderr.contains("Connection refused"), "3000-byte UDP to closed port 9: {out}");

    // 3,000-byte echo requests are reassembled too, and the replies leave
    // in fragments of the stack's own MTU.
    let out = ns.exec(&["ping", "-n", "-c", "3", "-i", "0.05", "-W", "2", "-M", "dont", "-s", "3000", &dst], SECS(20));
    assert_eq!(ping_summary(&out), (3, 3), "ping -s 3000: {out}");
    assert!(!out.stdout_str().contains("wrong data"), "ping saw altered data: {out}");

    let s = u.stop(SECS(5));
    assert!(!s.stderr.contains("panicked"), "ustack panicked:\n{}", s.stderr);
    assert!(s.status.success(), "ustack exited with {}; stderr:\n{}", s.status, s.stderr);
    let c = s.counters();
    let expected_frags = pings * fragments_of(1208) + fragments_of(1408) + fragments_of(3008) + 3 * fragments_of(3008);
    assert_eq!(counter(&c, "ipv4_frag_rx"), expected_frags, "counters:\n{}", s.stdout);
    assert_eq!(counter(&c, "ipv4_reassembled"), pings + 1 + 1 + 3, "counters:\n{}", s.stdout);
    assert_eq!(counter(&c, "icmp_echo_replies_sent"), pings + 3, "counters:\n{}", s.stdout);
    // Each 3,008-byte reply: 1,480 + 1,480 + 48 bytes.
    let stack_frags = 3 * 3008u64.div_ceil(1480);
    assert_eq!(counter(&c, "ipv4_fragmented"), 3, "counters:\n{}", s.stdout);
    assert_eq!(counter(&c, "ipv4_frag_tx"), stack_frags, "counters:\n{}", s.stdout);
    assert_eq!(counter(&c, "drop_too_big"), 0, "counters:\n{}", s.stdout);
    assert_eq!(counter(&c, "drop_udp_no_socket"), 1, "counters:\n{}", s.stdout);
    assert_eq!(counter(&c, "icmp_errors_sent"), 1, "counters:\n{}", s.stdout);
    for (name, v) in &c {
        assert!(
            !(name.starts_with("drop_ipv4_reasm") || name.starts_with("drop_ipv4_frag")),
            "{name} = {v}:\n{}",
            s.stdout
        );
    }
    // The capture holds exactly the fragments counted, each way.
    let bytes = std::fs::read(&pcap.0).unwrap_or_else(|e| panic!("read {}: {e}", pcap.as_str()));
    assert_eq!(fragments_in_pcap(&bytes, [10, 77, SUBNET, 1]), expected_frags, "fragments in {}", pcap.as_str());
    assert_eq!(fragments_in_pcap(&bytes, [10, 77, SUBNET, 2]), stack_frags, "the stack's fragments");
    drop(ns);
}

#[test]
fn datagrams_over_the_mtu_are_sent_as_fragments() {
    skip_unless!("ping", "socat");
    const SUBNET: u8 = 31;
    let ns = Netns::new("fragtx");
    ns.exec_ok(&["sysctl", "-qw", "net.ipv6.conf.default.disable_ipv6=1"], SECS(5));
    ns.exec_ok(&["sysctl", "-qw", "net.ipv6.conf.all.disable_ipv6=1"], SECS(5));
    let opts = UpOpts { tap: support::short_name("uf", SUBNET), subnet: SUBNET, pcap: None, udp_echo: vec![7] };
    let u = Ustack::start(&ns, opts);
    let dst = u.opts.stack_ip();

    // One socat per datagram, each read and written whole (-b 65536).
    let sizes = [1473usize, 4000, 8000, 65_507];
    for (i, &len) in sizes.iter().enumerate() {
        let payload = support::pseudo_random(len, 0xf7b0 + i as u64);
        let out = ns.exec_stdin(
            &["socat", "-T", "3", "-t", "2", "-b", "65536", "-", &format!("UDP:{dst}:7")],
            &payload,
            SECS(15),
        );
        assert!(out.success(), "socat UDP echo of {len} bytes: {out}");
        assert!(out.stdout == payload, "UDP echo of {len} bytes came back as {} bytes", out.stdout.len());
    }

    let out = ns.exec(&["ping", "-n", "-c", "3", "-i", "0.1", "-W", "2", "-s", "4000", &dst], SECS(20));
    assert_eq!(ping_summary(&out), (3, 3), "ping -s 4000: {out}");
    assert!(!out.stdout_str().contains("wrong data"), "ping saw altered data: {out}");

    let s = u.stop(SECS(5));
    assert!(!s.stderr.contains("panicked"), "ustack panicked:\n{}", s.stderr);
    assert!(s.status.success(), "ustack exited with {}; stderr:\n{}", s.status, s.stderr);
    let c = s.counters();
    // What the stack sent in fragments is what the kernel sent it: the same
    // sizes, cut at 1,480 data bytes.
    let frags: u64 = sizes.iter().map(|&n| (n as u64 + 8).div_ceil(1480)).sum::<u64>() + 3 * 4008u64.div_ceil(1480);
    assert_eq!(counter(&c, "ipv4_fragmented"), sizes.len() as u64 + 3, "counters:\n{}", s.stdout);
    assert_eq!(counter(&c, "ipv4_frag_tx"), frags, "counters:\n{}", s.stdout);
    assert_eq!(counter(&c, "ipv4_frag_rx"), frags, "counters:\n{}", s.stdout);
    assert_eq!(counter(&c, "drop_too_big"), 0, "counters:\n{}", s.stdout);
    drop(ns);
}
