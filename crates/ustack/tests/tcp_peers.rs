//! TCP of the `ustack` binary against Linux over a TAP: curl downloads from
//! the stack's HTTP server, `ustack get` downloads from python's http.server,
//! 32 MiB through the stack's TCP echo, and the options of the stack's SYN
//! and SYN-ACK on the wire. Every transfer is checked by SHA-256.
//!
//! Topology per test: namespace `ust-<tag>-<pid>` with kernel IPv6 off; a
//! TAP `tp<N>p<pid>` made by the test before the stack opens it, with TSO,
//! GSO and GRO off on the kernel's side; the stack is 10.66.N.2/24 and the
//! kernel 10.66.N.1/24 (`--host-ip`).
//!
//! Needs root and curl, python3, ethtool, tshark, tcpdump, sha256sum (skips
//! with a printed reason otherwise). Every process and wait is bounded; the
//! namespace, processes and temp files are removed by guards.

#[macro_use]
mod support;

use std::time::{Duration, Instant};
use support::tcp::*;
use support::Netns;

const MIB: usize = 1 << 20;
/// Generous bound for one transfer on an unimpaired TAP.
const TRANSFER_LIMIT: Duration = Duration::from_secs(300);

/// A namespace with IPv6 off and a pre-made TAP (offloads off) for subnet N.
fn link(tag: &str, n: u8, kernel_addr: bool) -> (Netns, StackOpts) {
    let ns = Netns::new(tag);
    quiet_namespace(&ns);
    let tap = support::short_name("tp", n);
    let opts = StackOpts::on_link(&tap, n);
    precreate_tap(&ns, &tap, if kernel_addr { opts.host_ip.as_deref() } else { None });
    (ns, opts)
}

fn assert_sane_clean_counters(c: &std::collections::BTreeMap<String, u64>, stdout: &str, connections: u64) {
    assert!(counter(c, "tcp_established") >= connections, "tcp_established < {connections}; counters:\n{stdout}");
    for name in ["drop_tcp_checksum", "drop_tcp_malformed", "drop_tcp_rfc5961", "drop_tcp_table_full"] {
        assert_eq!(counter(c, name), 0, "{name} on a clean link; counters:\n{stdout}");
    }
}

#[test]
fn curl_downloads_64_mib_from_stack_and_head_and_404() {
    skip_unless!("curl", "ethtool", "sha256sum", "ss");
    let dir = TempDir::new("tcpcurl");
    std::fs::create_dir_all(dir.path("www")).unwrap();
    let big = dir.path("www").join("big.bin");
    write_random_file(&big, 64 * MIB, 0x6464_0001);
    std::fs::write(dir.path("www").join("hello.txt"), b"hello from ustack\n").unwrap();
    let want = sha256_file(&big);

    let (ns, opts) = link("tcpcurl", 1, false);
    let u = start_tcp_stack(&ns, &opts, &dir.file("www"));
    let base = format!("http://{}:{HTTP_PORT}", opts.stack_ip());

    let t = Instant::now();
    let out = curl_get(&ns, &format!("{base}/big.bin"), &dir.file("got.bin"), TRANSFER_LIMIT);
    let took = t.elapsed();
    assert!(out.success(), "curl 64 MiB from the stack: {out}\n{}\n{}", stats_json(&ns, &opts.tap), diagnostics(&ns, &opts.tap));
    eprintln!("curl 64 MiB from the stack: {took:?} ({})", out.stdout_str().trim());
    assert_eq!(file_len(&dir.path("got.bin")), (64 * MIB) as u64, "{out}");
    assert_eq!(sha256_file(&dir.path("got.bin")), want, "64 MiB body differs from the file served");

    // HEAD: status line and headers, Content-Length of the file, no body.
    let url = format!("{base}/big.bin");
    let out = ns.exec(&["curl", "-sS", "--max-time", "20", "-I", &url], Duration::from_secs(30));
    assert!(out.success(), "curl -I: {out}");
    let head = out.stdout_str().to_ascii_lowercase();
    assert!(head.starts_with("http/1.1 200"), "HEAD status: {out}");
    assert!(head.contains(&format!("content-length: {}", 64 * MIB)), "HEAD Content-Length: {out}");
    // A small file's body, exactly.
    let out = ns.exec(&["curl", "-sS", "--fail", "--max-time", "20", &format!("{base}/hello.txt")], Duration::from_secs(30));
    assert!(out.success(), "curl hello.txt: {out}");
    assert_eq!(out.stdout, b"hello from ustack\n", "{out}");
    // 404 for a missing file.
    let out = ns.exec(
        &["curl", "-sS", "--max-time", "20", "-o", "/dev/null", "-w", "%{http_code}", &format!("{base}/missing")],
        Duration::from_secs(30),
    );
    assert!(out.success(), "curl missing: {out}");
    assert_eq!(out.stdout_str().trim(), "404", "GET /missing: {out}");

    let (s, c) = stop_stack(u);
    eprintln!("{}", s.stdout);
    assert_sane_clean_counters(&c, &s.stdout, 4);
    assert!(counter(&c, "tcp_tx") > (64 * MIB / 1460) as u64, "tcp_tx too small for 64 MiB; counters:\n{}", s.stdout);
    drop(ns);
}

#[test]
fn ustack_get_downloads_64_mib_from_linux_and_pipelines_three() {
    skip_unless!("ethtool", "sha256sum", "ss", "tcpdump", "tshark");
    let dir = TempDir::new("tcpget");
    let www = dir.path("www");
    std::fs::create_dir_all(&www).unwrap();
    write_random_file(&www.join("big.bin"), 64 * MIB, 0x6464_0002);
    // Sizes chosen to end mid-segment and to cross several windows.
    let parts = [("a.bin", 1_000_003usize), ("b.bin", 7usize), ("c.bin", 3 * MIB + 1)];
    for (i, (name, len)) in parts.iter().enumerate() {
        write_random_file(&www.join(name), *len, 0xabc0 + i as u64);
    }

    let (ns, opts) = link("tcpget", 2, true);
    let host = "10.66.2.1";
    let server = http_server(&ns, host, 8000, www.to_str().unwrap());

    let t = Instant::now();
    let url = format!("http://{host}:8000/big.bin");
    let out = ustack_get(&ns, &opts, &[url], &dir.file("got.bin"), TRANSFER_LIMIT);
    let took = t.elapsed();
    assert!(
        out.success(),
        "ustack get 64 MiB: {out}\nhttp.server:\n{}\n{}",
        server.stderr_now(),
        diagnostics(&ns, &opts.tap)
    );
    eprintln!("ustack get 64 MiB from python http.server: {took:?}");
    assert_eq!(file_len(&dir.path("got.bin")), (64 * MIB) as u64, "{out}");
    assert_eq!(sha256_file(&dir.path("got.bin")), sha256_file(&www.join("big.bin")), "64 MiB body differs");

    // Pipelined: three URLs, one connection, bodies concatenated in order.
    let pcap = dir.file("pipe.pcap");
    let dump = tcpdump(&ns, &opts.tap, &pcap, "tcp");
    let urls: Vec<String> = parts.iter().map(|(n, _)| format!("http://{host}:8000/{n}")).collect();
    let out = ustack_get(&ns, &opts, &urls, &dir.file("pipe.out"), Duration::from_secs(120));
    let dump_err = dump.stop("INT", Duration::from_secs(10));
    assert!(out.success(), "ustack get (3 URLs): {out}\nhttp.server:\n{}", server.stderr_now());
    let expect = dir.path("pipe.expect");
    concat_files(&parts.iter().map(|(n, _)| www.join(n)).collect::<Vec<_>>(), &expect);
    assert_eq!(file_len(&dir.path("pipe.out")), file_len(&expect), "pipelined output length; {out}");
    assert_eq!(sha256_file(&dir.path("pipe.out")), sha256_file(&expect), "pipelined output is not a‖b‖c");
    let stack_syns: Vec<_> = syns(&pcap).into_iter().filter(|s| s.src == opts.stack_ip() && !s.ack).collect();
    assert_eq!(stack_syns.len(), 1, "three URLs to one host should use one connection: {stack_syns:?}\ntcpdump: {dump_err}");
    let log = server.stderr_now();
    for (n, _) in &parts {
        assert!(log.contains(&format!("\"GET /{n} HTTP/1.1\" 200")), "http.server log lacks GET /{n}:\n{log}");
    }
    drop(server);
    drop(ns);
}

#[test]
fn tcp_echo_returns_32_mib_unchanged() {
    skip_unless!("ethtool", "sha256sum", "ss");
    let dir = TempDir::new("tcpecho");
    std::fs::create_dir_all(dir.path("www")).unwrap();
    let input = dir.path("in.bin");
    write_random_file(&input, 32 * MIB, 0x3232_0003);

    let (ns, opts) = link("tcpecho", 3, false);
    let u = start_tcp_stack(&ns, &opts, &dir.file("www"));
    let t = Instant::now();
    let out = echo_client(&ns, opts.stack_ip(), ECHO_PORT, &dir.file("in.bin"), &dir.file("out.bin"), TRANSFER_LIMIT);
    let took = t.elapsed();
    assert!(out.success(), "echo client: {out}\n{}\n{}", stats_json(&ns, &opts.tap), diagnostics(&ns, &opts.tap));
    eprintln!("32 MiB through TCP echo: {took:?} ({})", out.stdout_str().trim());
    assert_eq!(file_len(&dir.path("out.bin")), (32 * MIB) as u64, "{out}");
    assert_eq!(sha256_file(&dir.path("out.bin")), sha256_file(&input), "echoed bytes differ");

    let (s, c) = stop_stack(u);
    eprintln!("{}", s.stdout);
    assert_sane_clean_counters(&c, &s.stdout, 1);
    assert!(counter(&c, "tcp_rx") > (32 * MIB / 1460) as u64, "counters:\n{}", s.stdout);
    drop(ns);
}

/// Option kinds: 2 MSS, 3 window scale, 4 SACK permitted, 8 timestamps.
fn assert_full_options(what: &str, syn: &SynInfo) {
    for (kind, name) in [(2u8, "MSS"), (3, "window scale"), (4, "SACK-permitted"), (8, "timestamps")] {
        assert!(syn.kinds.contains(&kind), "{what} (frame {}) lacks {name} (kind {kind}): {syn:?}", syn.frame);
    }
    let mss = syn.mss.unwrap_or(0);
    assert!((536..=1460).contains(&mss), "{what}: MSS {mss} for a 1500-byte link: {syn:?}");
    assert!(syn.wscale.is_some_and(|w| w <= 14), "{what}: window scale: {syn:?}");
}

#[test]
fn stack_synack_carries_mss_wscale_sack_permitted_timestamps() {
    skip_unless!("curl", "ethtool", "tshark");
    let dir = TempDir::new("tcpsynack");
    std::fs::create_dir_all(dir.path("www")).unwrap();
    write_random_file(&dir.path("www").join("f.bin"), 200_000, 4);
    let (ns, mut opts) = link("tcpsynack", 4, false);
    opts.pcap = Some(dir.file("up.pcap"));
    let u = start_tcp_stack(&ns, &opts, &dir.file("www"));
    let out = curl_get(&ns, &format!("http://{}:{HTTP_PORT}/f.bin", opts.stack_ip()), &dir.file("f.out"), Duration::from_secs(60));
    assert!(out.success(), "curl: {out}");
    let (s, _c) = stop_stack(u);
    let all = syns(&dir.file("up.pcap"));
    let synack: Vec<_> = all.iter().filter(|s| s.src == opts.stack_ip() && s.ack).collect();
    assert_eq!(synack.len(), 1, "one SYN-ACK from the stack expected: {all:?}\ncounters:\n{}", s.stdout);
    assert_full_options("stack's SYN-ACK", synack[0]);
    // Linux offered all four; with timestamps agreed, every later segment
    // from the stack carries them (RFC 7323 §3.2).
    let segs = segments(&dir.file("up.pcap"));
    let without: Vec<_> = segs.iter().filter(|g| g.src == opts.stack_ip() && !g.syn && !g.rst && !g.has_ts).collect();
    assert!(without.is_empty(), "{} segments from the stack without timestamps, first: {:?}", without.len(), without.first());
    drop(ns);
}

#[test]
fn stack_syn_carries_mss_wscale_sack_permitted_timestamps() {
    skip_unless!("ethtool", "tshark", "tcpdump", "ss");
    let dir = TempDir::new("tcpsyn");
    std::fs::create_dir_all(dir.path("www")).unwrap();
    write_random_file(&dir.path("www").join("f.bin"), 200_000, 5);
    let (ns, opts) = link("tcpsyn", 5, true);
    let host = "10.66.5.1";
    let server = http_server(&ns, host, 8000, dir.path("www").to_str().unwrap());
    let pcap = dir.file("get.pcap");
    let dump = tcpdump(&ns, &opts.tap, &pcap, "tcp");
    let out = ustack_get(&ns, &opts, &[format!("http://{host}:8000/f.bin")], &dir.file("f.out"), Duration::from_secs(60));
    let dump_err = dump.stop("INT", Duration::from_secs(10));
    assert!(out.success(), "ustack get: {out}\nhttp.server: {}", server.stderr_now());
    assert_eq!(file_len(&dir.path("f.out")), 200_000);
    let all = syns(&pcap);
    let syn: Vec<_> = all.iter().filter(|s| s.src == opts.stack_ip() && !s.ack).collect();
    assert_eq!(syn.len(), 1, "one SYN from the stack expected: {all:?}\ntcpdump: {dump_err}");
    assert_full_options("stack's SYN", syn[0]);
    let segs = segments(&pcap);
    let without: Vec<_> = segs.iter().filter(|g| g.src == opts.stack_ip() && !g.syn && !g.rst && !g.has_ts).collect();
    assert!(without.is_empty(), "{} segments from the stack without timestamps, first: {:?}", without.len(), without.first());
    drop(server);
    drop(ns);
}
