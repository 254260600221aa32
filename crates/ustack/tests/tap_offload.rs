//! The TAP's offloads against the Linux kernel: with `IFF_VNET_HDR` and
//! `TUNSETOFFLOAD` (checksum + TSO4, on by default) the kernel hands the
//! stack GRO'd segments of up to 64 KiB and takes 64 KiB TSO segments from
//! it; `tap:NAME,offload=off` turns that off.
//!
//! Topology per test: namespace `ust-<tag>-<pid>` with kernel IPv6 off; the
//! stack makes TAP `to<N>p<pid>` itself (so the kernel side keeps the
//! features the stack asked for) as 10.66.N.2/24, the kernel 10.66.N.1/24.
//!
//! What it shows: `ethtool -k` on the TAP says checksumming and TCP
//! segmentation offload are on; curl of a 64 MiB file from the stack and
//! 32 MiB through its TCP echo come back with equal SHA-256; a capture on
//! the TAP holds TCP segments larger than the MTU in both directions; with
//! `offload=off` the same curl works with every frame within the MTU.
//! (`perf_iperf3.rs` runs iperf3 both ways against the stack on a TAP with
//! its default offloads.)
//!
//! Needs root and curl, ethtool, tcpdump, sha256sum (skips with a printed
//! reason otherwise). Every process and wait is bounded; the namespace,
//! processes and temp files are removed by guards.

#[macro_use]
mod support;

use std::time::Duration;
use support::tcp::*;
use support::Netns;

const MIB: usize = 1 << 20;
const TRANSFER_LIMIT: Duration = Duration::from_secs(300);
/// An Ethernet frame of a 1500-byte MTU.
const MAX_WIRE_FRAME: usize = 1514;

fn link(tag: &str, n: u8, offload: bool) -> (Netns, StackOpts) {
    let ns = Netns::new(tag);
    quiet_namespace(&ns);
    let tap = support::short_name("to", n);
    let opts = StackOpts { offload, ..StackOpts::on_link(&tap, n) };
    (ns, opts)
}

/// `ethtool -k`'s line for `feature`, e.g. "tcp-segmentation-offload: on".
fn feature(ns: &Netns, tap: &str, feature: &str) -> String {
    let k = ns.exec_ok(&["ethtool", "-k", tap], SECS(5)).stdout_str();
    k.lines().find(|l| l.starts_with(&format!("{feature}:"))).unwrap_or("(missing)").trim().to_owned()
}

/// TCP frames in a pcap from `src` (IPv4), and the largest of them.
fn tcp_frames_from(pcap: &str, src: [u8; 4]) -> (usize, usize) {
    let bytes = std::fs::read(pcap).unwrap_or_else(|e| panic!("read {pcap}: {e}"));
    let sizes: Vec<usize> = support::pcap_records(&bytes)
        .iter()
        .filter(|(_, f)| f.len() >= 34 && f[12..14] == [0x08, 0x00] && f[23] == 6 && f[26..30] == src)
        // The frame's length as sent: Ethernet header + IPv4 total length
        // (a capture may cut the bytes at its snap length).
        .map(|(_, f)| 14 + usize::from(u16::from_be_bytes([f[16], f[17]])))
        .collect();
    (sizes.len(), sizes.iter().copied().max().unwrap_or(0))
}

#[test]
fn offloads_on_64_kib_segments_both_ways_curl_and_echo_intact() {
    skip_unless!("curl", "ethtool", "sha256sum", "ss", "tcpdump");
    let dir = TempDir::new("tapoff");
    std::fs::create_dir_all(dir.path("www")).unwrap();
    let big = dir.path("www").join("big.bin");
    write_random_file(&big, 64 * MIB, 0x6464_0010);
    let input = dir.path("in.bin");
    write_random_file(&input, 32 * MIB, 0x3232_0010);

    let (ns, opts) = link("tapoff", 1, true);
    let u = start_tcp_stack(&ns, &opts, &dir.file("www"));
    for (f, want) in [
        ("tx-checksumming", "on"),
        ("tcp-segmentation-offload", "on"),
        ("generic-segmentation-offload", "on"),
    ] {
        assert_eq!(feature(&ns, &opts.tap, f), format!("{f}: {want}"), "ethtool -k {}", opts.tap);
    }

    let pcap = dir.file("tso.pcap");
    let dump = tcpdump(&ns, &opts.tap, &pcap, "tcp");
    let base = format!("http://{}:{HTTP_PORT}", opts.stack_ip());
    let out = curl_get(&ns, &format!("{base}/big.bin"), &dir.file("got.bin"), TRANSFER_LIMIT);
    assert!(out.success(), "curl 64 MiB: {out}\n{}\n{}", stats_json(&ns, &opts.tap), diagnostics(&ns, &opts.tap));
    assert_eq!(file_len(&dir.path("got.bin")), (64 * MIB) as u64, "{out}");
    assert_eq!(sha256_file(&dir.path("got.bin")), sha256_file(&big), "64 MiB body differs from the file served");

    let out = echo_client(&ns, opts.stack_ip(), ECHO_PORT, &dir.file("in.bin"), &dir.file("out.bin"), TRANSFER_LIMIT);
    assert!(out.success(), "echo client: {out}\n{}\n{}", stats_json(&ns, &opts.tap), diagnostics(&ns, &opts.tap));
    assert_eq!(file_len(&dir.path("out.bin")), (32 * MIB) as u64, "{out}");
    assert_eq!(sha256_file(&dir.path("out.bin")), sha256_file(&input), "echoed bytes differ");
    dump.stop("INT", SECS(10));

    let (stack_frames, stack_largest) = tcp_frames_from(&pcap, [10, 66, 1, 2]);
    let (kernel_frames, kernel_largest) = tcp_frames_from(&pcap, [10, 66, 1, 1]);
    eprintln!(
        "capture: stack sent {stack_frames} TCP frames (largest {stack_largest} bytes), \
         the kernel {kernel_frames} (largest {kernel_largest})"
    );
    assert!(stack_largest > MAX_WIRE_FRAME, "the stack sent no segment larger than the MTU");
    assert!(kernel_largest > MAX_WIRE_FRAME, "the kernel handed the stack no segment larger than the MTU");

    let (s, c) = stop_stack(u);
    eprintln!("{}", s.stdout);
    for name in ["drop_tcp_checksum", "drop_tcp_malformed", "drop_too_big", "drop_tx_full"] {
        assert_eq!(counter(&c, name), 0, "{name}; counters:\n{}", s.stdout);
    }
    // 96 MiB moved in far fewer frames than 1,448-byte segments would need.
    let frames = counter(&c, "tcp_rx") + counter(&c, "tcp_tx");
    assert!(frames < (96 * MIB / 1448) as u64, "{frames} TCP frames for 96 MiB; counters:\n{}", s.stdout);
    drop(ns);
}

#[test]
fn offload_off_keeps_every_frame_within_the_mtu() {
    skip_unless!("curl", "ethtool", "sha256sum", "ss", "tcpdump");
    let dir = TempDir::new("tapnooff");
    std::fs::create_dir_all(dir.path("www")).unwrap();
    let big = dir.path("www").join("big.bin");
    write_random_file(&big, 8 * MIB, 0x6464_0011);

    let (ns, opts) = link("tapnooff", 2, false);
    let u = start_tcp_stack(&ns, &opts, &dir.file("www"));
    assert_eq!(feature(&ns, &opts.tap, "tx-checksumming"), "tx-checksumming: off");
    let pcap = dir.file("plain.pcap");
    let dump = tcpdump(&ns, &opts.tap, &pcap, "tcp");
    let base = format!("http://{}:{HTTP_PORT}", opts.stack_ip());
    let out = curl_get(&ns, &format!("{base}/big.bin"), &dir.file("got.bin"), TRANSFER_LIMIT);
    assert!(out.success(), "curl 8 MiB: {out}\n{}", diagnostics(&ns, &opts.tap));
    assert_eq!(sha256_file(&dir.path("got.bin")), sha256_file(&big), "8 MiB body differs");
    dump.stop("INT", SECS(10));
    let (n, stack_largest) = tcp_frames_from(&pcap, [10, 66, 2, 2]);
    let (_, kernel_largest) = tcp_frames_from(&pcap, [10, 66, 2, 1]);
    assert!(n > 0 && stack_largest <= MAX_WIRE_FRAME, "{n} frames, largest {stack_largest}");
    assert!(kernel_largest <= MAX_WIRE_FRAME, "the kernel sent a {kernel_largest}-byte frame with offloads off");
    let (s, c) = stop_stack(u);
    assert_eq!(counter(&c, "drop_tcp_checksum"), 0, "counters:\n{}", s.stdout);
    drop(ns);
}
