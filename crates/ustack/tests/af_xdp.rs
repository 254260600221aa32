//! ustack on `af_xdp:` against real peers, in both XDP attach modes (`skb`,
//! generic; `drv`, native in veth), over a veth pair between two namespaces
//! (support/veth.rs: the stack's end bare, the kernel's end with its address
//! and transmit checksum offload off, since XDP carries no checksum
//! metadata).
//!
//! One setup per mode serves every check against the kernel: iputils ping
//! (200 echoes, small and 1400-byte), arping, UDP echo through socat, curl of
//! a 64 MiB file with its SHA-256, iperf3 -c against `ustack perf -s`; a
//! second socket on the same queue refused in one line; no XDP program left
//! on the interface after SIGINT and after SIGKILL; the interface deleted
//! under a running stack ends it with one line and exit 1. Then ustack ↔
//! ustack across two processes, and the errors a person meets before
//! anything runs. No speed is asserted.
//!
//! Every stack here runs with software GSO and GRO on (`gso=on,gro=on`), so
//! every transfer above checks them end to end; the curl leg and an 8 MiB
//! TCP echo also read the device's counters to show that super-segments
//! were cut and segments glued.

#[macro_use]
mod support;

use serde_json::Value;
use std::time::Duration;
use support::tcp::{curl_get, echo_client, sha256_file, write_random_file, TempDir};
use support::veth::{Peer, VethPair};
use support::{run_bounded, UpOpts, Ustack};

const SECS: fn(u64) -> Duration = Duration::from_secs;
const MIB: usize = 1 << 20;

/// `ustack CMD --device af_xdp:IF,mode=MODE --ip ADDR/24 EXTRA...` on the
/// stack's end of `pair`, once it printed `ready`.
fn start(pair: &VethPair, mode: &str, cmd: &[&str], extra: &[&str], ready: &str) -> Ustack {
    start_on(pair, false, mode, cmd, extra, ready)
}

/// As [`start`], on the peer's end when `peer` (ustack ↔ ustack).
fn start_on(pair: &VethPair, peer: bool, mode: &str, cmd: &[&str], extra: &[&str], ready: &str) -> Ustack {
    let (ns, iface, ip) = if peer {
        (&pair.peer_ns, &pair.peer_if, pair.peer_ip())
    } else {
        (&pair.stack_ns, &pair.stack_if, pair.stack_ip())
    };
    let device = format!("af_xdp:{iface},mode={mode},gso=on,gro=on");
    let ip = format!("{ip}/24");
    // One MAC per end for every run, so the peer's neighbour entry from an
    // earlier run stays right.
    let mac = format!("02:00:00:77:{:02x}:{:02x}", pair.subnet, if peer { 1 } else { 2 });
    let mut argv = vec![support::ustack_bin()];
    argv.extend(cmd);
    argv.extend(["--device", &device, "--ip", &ip, "--mac", &mac]);
    argv.extend(extra);
    let opts = UpOpts { tap: iface.clone(), subnet: pair.subnet, pcap: None, udp_echo: vec![] };
    Ustack::spawn(ns, &argv, opts, ready, |e| e.contains(ready))
}

fn assert_one_line(stderr: &str, says: &str) {
    let lines: Vec<&str> = stderr.trim().lines().filter(|l| l.starts_with("ustack: error")).collect();
    assert_eq!(lines.len(), 1, "one error line:\n{stderr}");
    assert!(lines[0].contains(says), "expected {says:?} in:\n{stderr}");
    assert!(!stderr.contains("panicked"), "{stderr}");
}

/// Replies that arping 2.x printed: "... bytes from MAC (IP): index=N time=...".
fn arping_replies(out: &support::Output, ip: &str) -> usize {
    out.stdout_str()
        .lines()
        .filter(|l| l.contains("bytes from") && l.contains(&format!("({ip})")) && l.contains("index="))
        .count()
}

fn kernel_peers(mode: &str, tag: &str, subnet: u8) {
    skip_unless!("ping", "arping", "socat", "curl", "iperf3", "ethtool", "sha256sum");
    let pair = VethPair::new(tag, subnet, Peer::Kernel);
    let (peer, ip) = (&pair.peer_ns, pair.stack_ip());
    let dir = TempDir::new(&format!("afxdp-{mode}"));
    std::fs::create_dir_all(dir.path("www")).unwrap();
    let file = dir.path("www").join("big.bin");
    write_random_file(&file, 64 * MIB, 0x0af0_0000 + u64::from(subnet));

    let www = dir.file("www");
    let extra = ["--udp-echo", "7", "--tcp-echo", "7", "--http-root", &www];
    let u = start(&pair, mode, &["up"], &extra, "ustack: up on af_xdp:");
    assert!(pair.xdp_attached(), "no XDP program on {} while ustack runs", pair.stack_if);
    pair.wait_reachable(SECS(10))
        .unwrap_or_else(|out| panic!("{mode}: the stack never answered ping: {out}\n{}", u.stderr_now()));

    for size in ["56", "1400"] {
        let out = peer.exec(&["ping", "-q", "-c", "200", "-i", "0.002", "-W", "2", "-s", size, &ip], SECS(30));
        assert!(out.success() && out.stdout_str().contains(" 0% packet loss"), "{mode}: ping -s {size}: {out}");
    }

    let out = peer.exec(&["arping", "-c", "3", "-w", "5", "-W", "0.2", "-I", &pair.peer_if, &ip], SECS(15));
    assert_eq!(arping_replies(&out, &ip), 3, "{mode}: arping: {out}");

    let payload = b"af_xdp says hello\n";
    let out = peer.exec_stdin(&["socat", "-T", "3", "-t", "2", "-", &format!("UDP:{ip}:7")], payload, SECS(15));
    assert!(out.success() && out.stdout == payload, "{mode}: socat UDP echo: {out}");

    let got = dir.file("got.bin");
    let out = curl_get(peer, &format!("http://{ip}/big.bin"), &got, SECS(60));
    assert!(out.success(), "{mode}: curl 64 MiB: {out}\n{}", u.stderr_now());
    assert_eq!(
        sha256_file(std::path::Path::new(&got)),
        sha256_file(&file),
        "{mode}: body differs from the file served"
    );
    // 8 MiB through TCP echo: the kernel's 1,500-byte segments are glued on
    // the way in and the echo cut on the way out; every byte comes back.
    let echo_in = dir.path("www").join("echo.bin");
    write_random_file(&echo_in, 8 * MIB, 0x0ec0_0000 + u64::from(subnet));
    let echo_out = dir.file("echo.out");
    let out = echo_client(peer, &ip, 7, echo_in.to_str().unwrap(), &echo_out, SECS(60));
    assert!(out.success(), "{mode}: TCP echo of 8 MiB: {out}\n{}", u.stderr_now());
    assert_eq!(sha256_file(std::path::Path::new(&echo_out)), sha256_file(&echo_in), "{mode}: echoed bytes differ");
    let dev = format!("af_xdp:{}", pair.stack_if);
    let out = pair.stack_ns.exec(&[support::ustack_bin(), "stats", "--device", &dev, "--json"], SECS(10));
    let snap: Value = serde_json::from_slice(&out.stdout).unwrap_or_else(|e| panic!("ustack stats --json ({e}): {out}"));
    let dc = &snap["interfaces"][0]["device_counters"];
    let n = |k: &str| dc[k].as_u64().unwrap_or(0);
    eprintln!(
        "{mode}: {} super-segments cut; {} glued frames of {} segments",
        n("tx_gso_super_segments"),
        n("rx_gro_frames"),
        n("rx_gro_segments")
    );
    assert!(n("tx_gso_super_segments") > 0, "{mode}: GSO cut nothing: {dc}");
    assert!(n("rx_gro_frames") > 0 && n("rx_gro_segments") > n("rx_gro_frames"), "{mode}: GRO glued nothing: {dc}");
    assert_eq!(n("tx_dropped"), 0, "{mode}: {dc}");

    // A second socket on the same queue is refused, in one line, and leaves
    // the first one working.
    let mut second = pair.stack_ns.command(&[support::ustack_bin(), "up", "--device"]);
    second.args([format!("af_xdp:{},mode={mode}", pair.stack_if), "--ip".into(), format!("{ip}/24")]);
    let out = run_bounded(second, None, SECS(10));
    assert_eq!(out.code(), Some(1), "{mode}: a second ustack on the same queue: {out}");
    assert_one_line(&out.stderr, "is taken by another AF_XDP socket");

    let stopped = u.stop_with("INT", SECS(10));
    assert!(stopped.status.success(), "{mode}: ustack up after SIGINT: {}\n{}", stopped.status, stopped.stderr);
    assert!(!pair.xdp_attached(), "{mode}: an XDP program is left on {} after SIGINT", pair.stack_if);

    let server = start(&pair, mode, &["perf", "-s"], &[], "perf server on");
    assert!(pair.xdp_attached(), "no XDP program on {} while ustack perf runs", pair.stack_if);
    let out = peer.exec(&["iperf3", "-c", &ip, "-t", "2", "-J"], SECS(40));
    assert!(out.success(), "{mode}: iperf3 -c against ustack perf -s: {out}\n{}", server.stderr_now());
    let doc: Value = serde_json::from_slice(&out.stdout).unwrap_or_else(|e| panic!("iperf3 JSON ({e}): {out}"));
    let received = doc["end"]["sum_received"]["bytes"].as_u64().unwrap_or(0);
    assert!(received > 0, "{mode}: iperf3 moved nothing: {doc}");
    eprintln!("{mode}: iperf3 -c → ustack perf -s: {received} bytes");
    // SIGKILL: the kernel drops the BPF link with the process.
    let pid = server.pid().to_string();
    assert!(run_bounded(
        {
            let mut c = std::process::Command::new("kill");
            c.args(["-KILL", &pid]);
            c
        },
        None,
        SECS(5)
    )
    .success());
    drop(server); // reaps it
    let deadline = std::time::Instant::now() + SECS(5);
    while pair.xdp_attached() {
        assert!(
            std::time::Instant::now() < deadline,
            "{mode}: an XDP program is left on {} after SIGKILL",
            pair.stack_if
        );
        std::thread::sleep(Duration::from_millis(20));
    }

    // The interface deleted under a running stack: one line, exit 1.
    let u = start(&pair, mode, &["up"], &[], "ustack: up on af_xdp:");
    pair.stack_ns.exec_ok(&["ip", "link", "del", &pair.stack_if], SECS(5));
    let stopped = u.wait_exit(SECS(5));
    assert_eq!(stopped.status.code(), Some(1), "{mode}: exit after the interface went: {}", stopped.stderr);
    assert_one_line(&stopped.stderr, &format!("interface {} went away", pair.stack_if));
}

#[test]
fn kernel_peers_over_generic_xdp() {
    kernel_peers("skb", "xg", 81);
}

#[test]
fn kernel_peers_over_native_xdp() {
    kernel_peers("drv", "xn", 82);
}

/// Two ustack processes, one on each end of a veth pair, both on af_xdp:
/// `ustack perf -c` against `ustack perf -s` (each side's count of the
/// other's bytes, learnt in the results exchange, equals the other's own
/// count), and `ustack get` of a 16 MiB file from `ustack up --http-root`
/// (SHA-256 equal).
#[test]
fn ustack_to_ustack_across_processes() {
    skip_unless!("sha256sum");
    let pair = VethPair::new("xu", 83, Peer::Stack);
    let dir = TempDir::new("afxdp-u2u");
    std::fs::create_dir_all(dir.path("www")).unwrap();
    let file = dir.path("www").join("f.bin");
    write_random_file(&file, 16 * MIB, 0x0af0_0083);
    let target = pair.stack_ip();
    for mode in ["skb", "drv"] {
        let server = start(&pair, mode, &["perf", "-s", "-1", "-J"], &[], "perf server on");
        let client = start_on(&pair, true, mode, &["perf", "-c", &target, "-n", "32M", "-J"], &[], "");
        let done = client.wait_exit(SECS(60));
        assert!(done.status.success(), "{mode}: ustack perf -c: {}\n{}", done.status, done.stderr);
        let served = server.wait_exit(SECS(10));
        assert!(served.status.success(), "{mode}: ustack perf -s -1: {}\n{}", served.status, served.stderr);
        let json = |text: &str| -> Value {
            serde_json::from_str(text).unwrap_or_else(|e| panic!("{mode}: JSON ({e}): {text}"))
        };
        let (client_doc, server_doc) = (json(&done.stdout), json(&served.stdout));
        let bytes = |doc: &Value, sum: &str| doc["end"][sum]["bytes"].as_u64().unwrap_or(0);
        let (sent, received) = (bytes(&client_doc, "sum_sent"), bytes(&server_doc, "sum_received"));
        eprintln!("{mode}: ustack perf -c sent {sent} bytes, ustack perf -s received {received}");
        assert_eq!(sent, 32 * MIB as u64, "{mode}: -n 32M");
        assert!(received > 0 && received <= sent, "{mode}: received {received} of {sent}");
        for sum in ["sum_sent", "sum_received"] {
            assert_eq!(
                bytes(&client_doc, sum),
                bytes(&server_doc, sum),
                "{mode}: end.{sum}.bytes differ between the two"
            );
        }
        assert!(!pair.xdp_attached(), "{mode}: XDP program left after ustack perf -s exited");

        let www = dir.file("www");
        let up = start(&pair, mode, &["up"], &["--http-root", &www], "ustack: up on af_xdp:");
        let got = dir.file("got.bin");
        let url = format!("http://{target}/f.bin");
        let get = start_on(&pair, true, mode, &["get", &url, "-o", &got], &[], "");
        let fetched = get.wait_exit(SECS(60));
        assert!(fetched.status.success(), "{mode}: ustack get: {}\n{}", fetched.status, fetched.stderr);
        assert_eq!(sha256_file(std::path::Path::new(&got)), sha256_file(&file), "{mode}: ustack get's body differs");
        let stopped = up.stop_with("INT", SECS(10));
        assert!(stopped.status.success(), "{mode}: {}", stopped.stderr);
    }
}

/// What a person meets before anything runs: one line each, exit 1.
#[test]
fn errors_say_what_to_do() {
    skip_unless!("setpriv");
    let pair = VethPair::new("xe", 84, Peer::Kernel);
    let ns = &pair.stack_ns;
    ns.exec_ok(&["ip", "link", "add", "xebr0", "type", "bridge"], SECS(5));
    let iface = pair.stack_if.as_str();
    let bin = support::ustack_bin();
    let ip = format!("{}/24", pair.stack_ip());
    for (prefix, device, says) in [
        (&[][..], "af_xdp:xenosuch0".to_string(), "interface xenosuch0 is not in this network namespace"),
        (&[], format!("af_xdp:{iface},queue=3"), "has no receive queue 3 (it has 1"),
        (&[], format!("af_xdp:{iface},zerocopy"), "cannot do AF_XDP zero-copy"),
        (&[], "af_xdp:xebr0,mode=drv".into(), "has no native XDP"),
        (
            &["setpriv", "--bounding-set", "-net_raw,-net_admin,-bpf,-sys_admin"],
            format!("af_xdp:{iface}"),
            "needs CAP_NET_RAW",
        ),
        (&["setpriv", "--bounding-set", "-bpf,-sys_admin"], format!("af_xdp:{iface}"), "needs CAP_BPF"),
    ] {
        let mut argv: Vec<&str> = prefix.to_vec();
        argv.extend([bin, "up", "--device", &device, "--ip", &ip]);
        let out = ns.exec(&argv, SECS(10));
        assert_eq!(out.code(), Some(1), "{device}: {out}");
        assert_one_line(&out.stderr, says);
        assert!(!pair.xdp_attached(), "{device}: XDP program left after a failed start");
    }
    // One ustack per interface: a second one, on another queue, finds the
    // first one's program attached.
    ns.exec_ok(&["ip", "link", "add", "xeq0", "numtxqueues", "2", "numrxqueues", "2", "type", "veth"], SECS(5));
    let first = Ustack::spawn(
        ns,
        &[bin, "up", "--device", "af_xdp:xeq0,queue=0", "--ip", &ip],
        UpOpts { tap: "xeq0".into(), subnet: pair.subnet, pcap: None, udp_echo: vec![] },
        "startup line",
        |e| e.contains("ustack: up on af_xdp:xeq0"),
    );
    let out = ns.exec(&[bin, "up", "--device", "af_xdp:xeq0,queue=1", "--ip", &ip], SECS(10));
    assert_eq!(out.code(), Some(1), "a second ustack on xeq0: {out}");
    assert_one_line(&out.stderr, "xeq0 already has an XDP program attached");
    drop(first);
    // Generic XDP works on an interface whose driver has none.
    let u = Ustack::spawn(
        ns,
        &[bin, "up", "--device", "af_xdp:xebr0,mode=skb", "--ip", &ip],
        UpOpts { tap: "xebr0".into(), subnet: pair.subnet, pcap: None, udp_echo: vec![] },
        "startup line",
        |e| e.contains("ustack: up on af_xdp:xebr0"),
    );
    let stopped = u.stop_with("INT", SECS(10));
    assert!(stopped.status.success(), "{}", stopped.stderr);
}
