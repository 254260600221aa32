//! The conformance harness (packetimpact-style): scripted exchanges — send
//! this frame, expect this reply (or nothing) within T — run unchanged
//! against the Linux kernel and against ustack on the same kind of wire, so
//! every expectation is checked against Linux too.
//!
//! Topology, once per device under test: a tester namespace holding one end
//! of a veth pair with no address and IPv6 off (its kernel never answers
//! anything; the harness speaks through an AF_PACKET socket and answers ARP
//! for its own address 10.96.0.1 itself), and a device namespace holding the
//! other end as 10.96.0.2/24: either the Linux kernel (a discard listener on
//! port 9 in this process) or `ustack up --device af_packet:IF --tcp-discard
//! 9`. Transmit checksum offload is off on the device's end, so captured
//! frames carry real checksums.
//!
//! The test fails when Linux does not meet an expectation (the expectation is
//! wrong), when ustack differs from Linux in a case not listed in
//! docs/conformance-differences.md, and when a listed case no longer differs
//! (so the list stays true). It prints the report table either way.
//!
//! Needs root (skips with a printed reason otherwise); bounded in time (each
//! step waits at most 2 s); namespaces, links and processes go with guards.

#[macro_use]
mod support;

#[path = "conformance/cases.rs"]
mod cases;
#[path = "conformance/net.rs"]
mod net;
#[path = "conformance/script.rs"]
mod script;
#[path = "conformance/wire.rs"]
mod wire;

use std::collections::BTreeSet;
use std::time::{Duration, Instant};
use support::tcp::{Bg, TempDir};
use support::Netns;

const SECS: fn(u64) -> Duration = Duration::from_secs;
const MY_IP: wire::Ip4 = [10, 96, 0, 1];
const DUT_IP: wire::Ip4 = [10, 96, 0, 2];
const DUT_CIDR: &str = "10.96.0.2/24";
const LISTEN_PORT: u16 = 9;
const CLOSED_PORT: u16 = 1999;
const HTTP_PORT: u16 = 80;

/// Which stack answers on the device's end.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Dut {
    Linux,
    Ustack,
}

/// A tester namespace and a device namespace joined by a veth pair.
struct Wire {
    tester: Netns,
    dut: Netns,
    tester_if: String,
    dut_if: String,
}

impl Wire {
    fn new(tag: &str, n: u8) -> Wire {
        let tester = Netns::new(&format!("{tag}-t"));
        let dut = Netns::new(&format!("{tag}-d"));
        for ns in [&tester, &dut] {
            ns.exec_ok(&["sysctl", "-qw", "net.ipv6.conf.default.disable_ipv6=1"], SECS(5));
            ns.exec_ok(&["sysctl", "-qw", "net.ipv6.conf.all.disable_ipv6=1"], SECS(5));
        }
        let tester_if = support::short_name("cft", n);
        let dut_if = support::short_name("cfd", n);
        let out = tester.exec(
            &["ip", "link", "add", &tester_if, "type", "veth", "peer", "name", &dut_if, "netns", &dut.name],
            SECS(5),
        );
        assert!(out.success(), "ip link add veth: {out}");
        for (ns, iface) in [(&tester, &tester_if), (&dut, &dut_if)] {
            ns.exec_ok(&["sysctl", "-qw", &format!("net.ipv6.conf.{iface}.disable_ipv6=1")], SECS(5));
            ns.exec_ok(&["ethtool", "-K", iface, "tx", "off", "tso", "off", "gso", "off"], SECS(5));
            ns.exec_ok(&["ip", "link", "set", iface, "up"], SECS(5));
        }
        Wire { tester, dut, tester_if, dut_if }
    }

    /// The tester end's MAC address.
    fn tester_mac(&self) -> wire::Mac {
        let out = self.tester.exec_ok(&["ip", "-o", "link", "show", "dev", &self.tester_if], SECS(5)).stdout_str();
        let mac =
            out.split("link/ether ").nth(1).and_then(|r| r.split_whitespace().next()).expect("a link/ether address");
        let bytes: Vec<u8> = mac.split(':').map(|h| u8::from_str_radix(h, 16).unwrap()).collect();
        bytes.try_into().unwrap()
    }
}

/// Learn the device's MAC by ARP (bounded), answering nothing else.
fn resolve(sock: &net::PacketSocket, my_mac: wire::Mac) -> Result<wire::Mac, String> {
    let req = wire::arp(1, my_mac, MY_IP, [0; 6], DUT_IP);
    let deadline = Instant::now() + SECS(10);
    while Instant::now() < deadline {
        sock.send(&wire::ethernet([0xff; 6], my_mac, wire::ETH_ARP, &req));
        let round = Instant::now() + Duration::from_millis(300);
        while let Some(f) = sock.recv_until(round) {
            if let wire::Pkt::Arp(a) = wire::parse(&f) {
                if a.op == 2 && a.spa == DUT_IP {
                    return Ok(a.sha);
                }
            }
        }
    }
    Err("the device did not answer ARP for 10.96.0.2 within 10 s".into())
}

/// Each case's outcome against one device: `Ok` or the first failed step;
/// and what the device sent, step by step.
type Outcome = (Result<(), String>, String);

/// Run every case against one device on its own wire.
fn run_all(dut: Dut, n: u8) -> Result<Vec<Outcome>, String> {
    let tag = match dut {
        Dut::Linux => "cfl",
        Dut::Ustack => "cfu",
    };
    let w = Wire::new(tag, n);
    // The device: keep its guard alive for the whole run.
    let mut _linux = None;
    let mut _ustack = None;
    let root = TempDir::new(&format!("{tag}-root"));
    std::fs::write(root.path("index.html"), "hello\n").unwrap();
    match dut {
        Dut::Linux => {
            w.dut.exec_ok(&["ip", "addr", "add", DUT_CIDR, "dev", &w.dut_if], SECS(5));
            _linux = Some((
                net::Discard::start(&w.dut.name, format!("10.96.0.2:{LISTEN_PORT}").parse().unwrap()),
                net::Responder::start(&w.dut.name, format!("10.96.0.2:{HTTP_PORT}").parse().unwrap()),
            ));
        }
        Dut::Ustack => {
            let device = format!("af_packet:{}", w.dut_if);
            let port = LISTEN_PORT.to_string();
            let http = HTTP_PORT.to_string();
            let argv = [
                support::ustack_bin(),
                "up",
                "--device",
                &device,
                "--ip",
                DUT_CIDR,
                "--tcp-discard",
                &port,
                "--http-root",
                root.as_str(),
                "--http-port",
                &http,
            ];
            let mut b = Bg::spawn(&w.dut, &argv);
            b.wait_ready("up", SECS(10), |e| e.contains("ustack: up on"));
            _ustack = Some(b);
        }
    }
    let sock = net::PacketSocket::open(&w.tester.name, &w.tester_if);
    let my_mac = w.tester_mac();
    let dut_mac = resolve(&sock, my_mac)?;
    let env = script::Env {
        sock: &sock,
        my_mac,
        my_ip: MY_IP,
        dut_mac,
        dut_ip: DUT_IP,
        listen_port: LISTEN_PORT,
        closed_port: CLOSED_PORT,
        http_port: HTTP_PORT,
    };
    let mut outcomes = Vec::new();
    for (i, case) in cases::all().iter().enumerate() {
        if !selected(case.name) {
            outcomes.push((Ok(()), "not run".into()));
            continue;
        }
        let mut run = script::Run::new(&env, i);
        let r = run.run(case);
        outcomes.push((r, run.trace.join(" ; ")));
    }
    if let Some(mut b) = _ustack.take() {
        b.assert_running();
        let (_, out, err) = b.stop_with_status("TERM", SECS(5));
        if std::env::var_os("CONFORMANCE_DEBUG").is_some() {
            eprintln!("ustack stdout:\n{out}\nustack stderr:\n{err}");
        }
        support::assert_no_panic(&err);
    }
    Ok(outcomes)
}

/// `CONFORMANCE_CASES=a,b` runs only the cases whose names contain one of
/// the comma-separated words (to chase one case); unset, all run.
fn selected(name: &str) -> bool {
    match std::env::var("CONFORMANCE_CASES") {
        Ok(words) if !words.trim().is_empty() => words.split(',').any(|w| name.contains(w.trim())),
        _ => true,
    }
}

/// The case names docs/conformance-differences.md lists as known
/// differences: the first cell of each table row that is a `name`.
fn known_differences() -> BTreeSet<String> {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../../docs/conformance-differences.md");
    let text = std::fs::read_to_string(path).unwrap_or_else(|e| panic!("read {path}: {e}"));
    text.lines().filter_map(|l| l.strip_prefix("| `")).filter_map(|l| l.split('`').next()).map(str::to_owned).collect()
}

fn cell(r: &Result<(), String>) -> String {
    match r {
        Ok(()) => "ok".into(),
        Err(e) => e.replace('|', "/"),
    }
}

#[test]
fn conformance_linux_vs_ustack() {
    skip_unless!("ethtool");
    let started = Instant::now();
    let cases = cases::all();
    let names: BTreeSet<&str> = cases.iter().map(|c| c.name).collect();
    assert_eq!(names.len(), cases.len(), "case names must be unique");
    let known = known_differences();

    // Both devices at once, each on its own wire.
    let (linux, ustack) = std::thread::scope(|s| {
        let l = s.spawn(|| run_all(Dut::Linux, 1));
        let u = s.spawn(|| run_all(Dut::Ustack, 2));
        (l.join().expect("linux run panicked"), u.join().expect("ustack run panicked"))
    });
    let linux = linux.unwrap_or_else(|e| panic!("Linux device: {e}"));
    let ustack = ustack.unwrap_or_else(|e| panic!("ustack device: {e}"));

    let mut report = String::from("| case | Linux | ustack | verdict |\n|---|---|---|---|\n");
    let mut problems = Vec::new();
    for (i, case) in cases.iter().enumerate() {
        if !selected(case.name) {
            continue;
        }
        let (l, lt) = &linux[i];
        let (u, ut) = &ustack[i];
        let listed = known.contains(case.name);
        let verdict = match (l.is_ok(), u.is_ok(), listed) {
            (false, _, _) => {
                problems.push(format!(
                    "{}: Linux does not meet the expectation (fix the case): {}",
                    case.name,
                    cell(l)
                ));
                "EXPECTATION WRONG"
            }
            (true, true, false) => "same",
            (true, true, true) => {
                problems.push(format!("{}: listed as a known difference but ustack now answers like Linux", case.name));
                "same (LISTED)"
            }
            (true, false, true) => "known difference",
            (true, false, false) => {
                problems.push(format!("{}: ustack differs from Linux: {}", case.name, cell(u)));
                "DIFFERS"
            }
        };
        let show = |r: &Result<(), String>, t: &str| if r.is_ok() { format!("ok: {t}") } else { cell(r) };
        report.push_str(&format!("| {} | {} | {} | {} |\n", case.name, show(l, lt), show(u, ut), verdict));
    }
    for k in known.iter().filter(|k| selected(k)) {
        if !names.contains(k.as_str()) {
            problems.push(format!("{k}: listed in docs/conformance-differences.md but no case has that name"));
        }
    }
    println!("conformance: {} cases in {:.1?}\n{report}", cases.len(), started.elapsed());
    for c in &cases {
        println!("{}: {}", c.name, c.why);
    }
    assert!(problems.is_empty(), "conformance problems:\n  {}\n\nreport:\n{report}", problems.join("\n  "));
}
