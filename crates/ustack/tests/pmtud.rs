//! Path MTU discovery against a Linux router: the stack serves a 64 MiB file
//! to a peer two hops away whose path is narrower than the stack's link.
//!
//! Topology (N = 1): namespace R holds the stack's TAP (`pm1p<pid>`; the
//! stack 10.69.1.2/24, R's side 10.69.1.1/24 and the stack's gateway; TAP
//! opened with `offload=off`, so every segment on it is a wire-sized one)
//! and forwards to namespace P over a veth whose R end has MTU 1280 (the
//! router's far link) and whose P end keeps 1500, so P offers an MSS of
//! 1460 and only the router knows the path is narrower:
//!
//! ```text
//!  ustack ─TAP (1500)─ [R: 10.69.1.1 fwd, 10.70.1.1 MTU 1280] ─veth─ [P: 10.70.1.2 MTU 1500]
//! ```
//!
//! The stack's first full-sized segments carry DF; R cannot forward them and
//! answers "fragmentation needed" with MTU 1280. What it shows: curl in P
//! gets the 64 MiB with SHA-256 equal; the stack believed the message
//! (`pmtu_lowered`) and counted no forged ones; a capture on the TAP shows
//! the stack resending in 1280-byte packets sooner after the ICMP than any
//! retransmission timer could fire (200 ms, the RTO's floor): no RTO-length
//! stall. Forged messages (no connection, a sequence number outside the
//! window, floods) are covered in the core's `tests/path_mtu.rs`.
//!
//! Needs root, curl, ethtool, tcpdump, sha256sum (skips otherwise). Bounded
//! in time; namespaces, processes and files are removed by guards.

#[macro_use]
mod support;

use std::time::Duration;
use support::tcp::*;
use support::Netns;

const MIB: usize = 1 << 20;
const FAR_MTU: usize = 1280;

/// `(seconds, frame)` of each record of a classic little-endian pcap file.
fn records(bytes: &[u8]) -> Vec<(f64, &[u8])> {
    assert!(bytes.len() >= 24 && bytes[..4] == [0xd4, 0xc3, 0xb2, 0xa1], "not a little-endian µs pcap");
    let u32_at = |at: usize| u32::from_le_bytes(bytes[at..at + 4].try_into().unwrap());
    let mut out = Vec::new();
    let mut at = 24;
    while at + 16 <= bytes.len() {
        let incl = u32_at(at + 8) as usize;
        if at + 16 + incl > bytes.len() {
            break; // the last record, cut short when the capture stopped
        }
        let t = f64::from(u32_at(at)) + f64::from(u32_at(at + 4)) / 1e6;
        out.push((t, &bytes[at + 16..at + 16 + incl]));
        at += 16 + incl;
    }
    out
}

#[test]
fn curl_through_a_narrower_path_completes_with_pmtud() {
    skip_unless!("curl", "ethtool", "sha256sum", "ss", "tcpdump");
    let dir = TempDir::new("pmtud");
    std::fs::create_dir_all(dir.path("www")).unwrap();
    let big = dir.path("www").join("big.bin");
    write_random_file(&big, 64 * MIB, 0x6464_0020);

    let r = Netns::new("pmtud-r");
    let p = Netns::new("pmtud-p");
    quiet_namespace(&r);
    quiet_namespace(&p);
    let (rc, pd) = (support::short_name("prc", 1), support::short_name("ppd", 1));
    r.exec_ok(&["ip", "link", "add", &rc, "mtu", &FAR_MTU.to_string(), "type", "veth", "peer", "name", &pd, "netns", &p.name], SECS(5));
    r.exec_ok(&["sysctl", "-qw", "net.ipv4.ip_forward=1"], SECS(5));
    r.exec_ok(&["ip", "addr", "add", "10.70.1.1/24", "dev", &rc], SECS(5));
    r.exec_ok(&["ip", "link", "set", &rc, "up"], SECS(5));
    p.exec_ok(&["ip", "link", "set", &pd, "mtu", "1500"], SECS(5));
    p.exec_ok(&["ip", "addr", "add", "10.70.1.2/24", "dev", &pd], SECS(5));
    p.exec_ok(&["ip", "link", "set", &pd, "up"], SECS(5));
    p.exec_ok(&["ip", "route", "add", "10.69.1.0/24", "via", "10.70.1.1"], SECS(5));

    let tap = support::short_name("pm", 1);
    let opts = StackOpts {
        tap: tap.clone(),
        ip: "10.69.1.2/24".into(),
        gateway: Some("10.69.1.1".into()),
        host_ip: Some("10.69.1.1/24".into()),
        pcap: None,
        offload: false,
    };
    let u = start_tcp_stack(&r, &opts, &dir.file("www"));

    // The start of the transfer, where discovery happens: headers only.
    let pcap = dir.file("pmtud.pcap");
    let mut dump = Bg::spawn(
        &r,
        &["tcpdump", "-i", &tap, "-n", "-s", "96", "-c", "4000", "--immediate-mode", "-U", "-w", &pcap, "icmp", "or", "tcp"],
    );
    dump.wait_ready("listening", SECS(10), |e| e.contains("listening on"));

    let url = format!("http://10.69.1.2:{HTTP_PORT}/big.bin");
    let out = curl_get(&p, &url, &dir.file("got.bin"), Duration::from_secs(300));
    assert!(out.success(), "curl 64 MiB across the narrower path: {out}\n{}", diagnostics(&r, &tap));
    assert_eq!(file_len(&dir.path("got.bin")), (64 * MIB) as u64, "{out}");
    assert_eq!(sha256_file(&dir.path("got.bin")), sha256_file(&big), "64 MiB body differs from the file served");
    dump.stop("INT", SECS(10));

    let (s, c) = stop_stack(u);
    eprintln!("{}", s.stdout);
    assert!(counter(&c, "icmp_frag_needed_rx") >= 1, "no fragmentation-needed reached the stack:\n{}", s.stdout);
    assert!(counter(&c, "pmtu_lowered") >= 1, "the path MTU was never lowered:\n{}", s.stdout);
    for name in ["drop_icmp_pmtu_unmatched", "drop_icmp_pmtu_bad_seq", "pmtu_floor_applied"] {
        assert_eq!(counter(&c, name), 0, "{name}; counters:\n{}", s.stdout);
    }

    // In the capture: R's first "fragmentation needed" (type 3 code 4,
    // next-hop MTU 1280), then the stack's first segment of at most 1280
    // bytes carrying data.
    let bytes = std::fs::read(&pcap).unwrap_or_else(|e| panic!("read {pcap}: {e}"));
    let recs = records(&bytes);
    let ipv4 = |f: &[u8]| f.len() >= 34 && f[12..14] == [0x08, 0x00];
    let icmp_at = recs
        .iter()
        .find(|(_, f)| ipv4(f) && f[23] == 1 && f.len() >= 42 && f[34] == 3 && f[35] == 4)
        .map(|(t, f)| (*t, u16::from_be_bytes([f[40], f[41]])))
        .unwrap_or_else(|| panic!("no fragmentation-needed in the first {} frames", recs.len()));
    assert_eq!(usize::from(icmp_at.1), FAR_MTU, "next-hop MTU in R's message");
    let resend_at = recs
        .iter()
        .filter(|(t, f)| *t >= icmp_at.0 && ipv4(f) && f[23] == 6 && f[26..30] == [10, 69, 1, 2])
        .find(|(_, f)| {
            let total = usize::from(u16::from_be_bytes([f[16], f[17]]));
            let tcp_header = usize::from(f.get(46).copied().unwrap_or(0) >> 4) * 4;
            total <= FAR_MTU && total > 20 + tcp_header
        })
        .map(|(t, _)| *t)
        .expect("no data segment of the new size after the ICMP message");
    let gap = resend_at - icmp_at.0;
    eprintln!("fragmentation needed at {:.6}, first 1280-byte segment {:.3} ms later", icmp_at.0, gap * 1e3);
    assert!(gap < 0.2, "the stack waited {gap:.3} s after the ICMP message: that is an RTO, not PMTUD");
    drop(p);
    drop(r);
}
