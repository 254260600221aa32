//! `ustack perf` against the real iperf3 3.12 over TAP, inside namespaces
//! this test creates: iperf3 -c against `ustack perf -s` (TCP, -R, -P 4,
//! --bidir, UDP at 50 Mbit/s), a second client refused while a test runs,
//! and `ustack perf -c` against `iperf3 -s` both ways.
//!
//! Byte counts: each side counts its own bytes and learns the other's in
//! the results exchange, so iperf3's `end.sum_sent`/`sum_received` must equal
//! what `ustack perf -J` printed, byte for byte. No speed is asserted.

#[macro_use]
mod support;

use serde_json::Value;
use std::fs::File;
use std::process::{Child, Stdio};
use std::time::{Duration, Instant};
use support::{end_bytes, json_documents, run_bounded, Netns, TempPath};

const SECS: fn(u64) -> Duration = Duration::from_secs;

/// A background process in a namespace, its output in files; killed on drop.
struct Background {
    child: Option<Child>,
    out: TempPath,
    err: TempPath,
}

impl Background {
    fn start(ns: &Netns, tag: &str, argv: &[&str]) -> Background {
        let out = TempPath::new(&format!("{tag}-out"), "txt");
        let err = TempPath::new(&format!("{tag}-err"), "txt");
        let mut cmd = ns.command(argv);
        cmd.stdin(Stdio::null())
            .stdout(File::create(&out.0).expect("create stdout file"))
            .stderr(File::create(&err.0).expect("create stderr file"));
        let child = cmd.spawn().unwrap_or_else(|e| panic!("spawn {argv:?}: {e}"));
        Background { child: Some(child), out, err }
    }

    fn stdout(&self) -> String {
        std::fs::read_to_string(&self.out.0).unwrap_or_default()
    }

    fn stderr(&self) -> String {
        std::fs::read_to_string(&self.err.0).unwrap_or_default()
    }

    /// Wait (bounded) until `pred` holds on stderr; panic with both outputs if not.
    fn wait_stderr(&mut self, what: &str, limit: Duration, pred: impl Fn(&str) -> bool) {
        let deadline = Instant::now() + limit;
        while !pred(&self.stderr()) {
            if let Ok(Some(st)) = self.child.as_mut().unwrap().try_wait() {
                panic!("exited ({st}) before {what}:\n{}\n{}", self.stdout(), self.stderr());
            }
            assert!(Instant::now() < deadline, "no {what} within {limit:?}:\n{}\n{}", self.stdout(), self.stderr());
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Wait (bounded) for the exit.
    fn wait_exit(&mut self, limit: Duration) -> std::process::ExitStatus {
        let deadline = Instant::now() + limit;
        loop {
            if let Ok(Some(st)) = self.child.as_mut().unwrap().try_wait() {
                self.child = None;
                return st;
            }
            assert!(Instant::now() < deadline, "no exit within {limit:?}:\n{}\n{}", self.stdout(), self.stderr());
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for Background {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
            if std::thread::panicking() {
                eprintln!("background process output:\n{}\n{}", self.stdout(), self.stderr());
            }
        }
    }
}

/// The device flags for a stack at 10.55.`subnet`.2 on TAP `tap`.
fn dev_args(tap: &str, subnet: u8) -> Vec<String> {
    vec![
        "--device".into(),
        format!("tap:{tap}"),
        "--ip".into(),
        format!("10.55.{subnet}.2/24"),
        "--host-ip".into(),
        format!("10.55.{subnet}.1/24"),
    ]
}

/// `ustack perf -s -J` in `ns`, serving once it prints its banner and answers ping.
fn perf_server(ns: &Netns, tag: &str, tap: &str, subnet: u8) -> Background {
    let mut argv: Vec<String> = vec![support::ustack_bin().into(), "perf".into(), "-s".into(), "-J".into()];
    argv.extend(dev_args(tap, subnet));
    let argv: Vec<&str> = argv.iter().map(String::as_str).collect();
    let mut server = Background::start(ns, tag, &argv);
    server.wait_stderr("the perf server banner", SECS(10), |e| e.contains("perf server on"));
    let ip = format!("10.55.{subnet}.2");
    let deadline = Instant::now() + SECS(10);
    while !ns.exec(&["ping", "-c", "1", "-W", "1", &ip], SECS(5)).success() {
        assert!(Instant::now() < deadline, "ustack perf does not answer ping:\n{}", server.stderr());
    }
    server
}

/// Wait (bounded) until something in `ns` listens on TCP `port` (iperf3 -s starting up).
fn wait_listening(ns: &Netns, port: u16) {
    let filter = format!("sport = :{port}");
    let deadline = Instant::now() + SECS(10);
    loop {
        let out = ns.exec(&["ss", "-Hltn", &filter], SECS(5));
        if out.success() && !out.stdout.is_empty() {
            return;
        }
        assert!(Instant::now() < deadline, "nothing listens on port {port} in {}", ns.name);
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Run iperf3 -c with `extra` flags against the stack; its JSON.
fn iperf3_client(ns: &Netns, subnet: u8, extra: &[&str]) -> Value {
    let ip = format!("10.55.{subnet}.2");
    let mut argv = vec!["iperf3", "-c", &ip, "-J", "-t", "2"];
    argv.extend_from_slice(extra);
    let out = ns.exec(&argv, SECS(40));
    let doc: Value =
        serde_json::from_slice(&out.stdout).unwrap_or_else(|e| panic!("iperf3 {extra:?}: not JSON ({e}): {out}"));
    assert!(out.success() && doc.get("error").is_none(), "iperf3 {extra:?} failed: {out}");
    doc
}

/// Wait (bounded) until the server has printed `n` JSON documents.
fn server_documents(server: &Background, n: usize) -> Vec<Value> {
    let deadline = Instant::now() + SECS(10);
    loop {
        let docs = json_documents(&server.stdout());
        if docs.len() >= n {
            return docs;
        }
        assert!(Instant::now() < deadline, "ustack printed {} of {n} results:\n{}", docs.len(), server.stderr());
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn iperf3_client_against_ustack_perf_server() {
    skip_unless!("iperf3", "ping", "ethtool");
    let ns = Netns::new("perfsrv");
    let tap = support::short_name("upf", 0);
    let server = perf_server(&ns, "perfsrv", &tap, 1);
    // The TAP's default: TSO/GRO and checksums through the virtio-net
    // header, so both directions below move 64 KiB super-segments.
    let k = ns.exec_ok(&["ethtool", "-k", &tap], SECS(5)).stdout_str();
    assert!(k.lines().any(|l| l == "tcp-segmentation-offload: on"), "{tap} offloads:\n{k}");
    let modes: [&[&str]; 5] = [&[], &["-R"], &["-P", "4"], &["--bidir"], &["-u", "-b", "50M"]];
    for (i, mode) in modes.iter().enumerate() {
        let theirs = iperf3_client(&ns, 1, mode);
        let ours = server_documents(&server, i + 1).swap_remove(i);
        let mut sums = vec!["sum_sent", "sum_received"];
        if mode.contains(&"--bidir") {
            sums.extend(["sum_sent_bidir_reverse", "sum_received_bidir_reverse"]);
        }
        for sum in sums {
            let (t, o) = (end_bytes(&theirs, sum), end_bytes(&ours, sum));
            eprintln!("iperf3 {mode:?}: end.{sum}.bytes iperf3 {t}, ustack {o}");
            assert!(t > 0, "iperf3 {mode:?}: no bytes in end.{sum}");
            assert_eq!(t, o, "iperf3 {mode:?}: end.{sum}.bytes differ");
            assert!(ours["end"][sum]["bits_per_second"].as_f64().is_some(), "no bits_per_second in {sum}");
        }
        // The receiving side never counts more than the sending side wrote.
        assert!(end_bytes(&theirs, "sum_received") <= end_bytes(&theirs, "sum_sent"), "{mode:?}");
        if mode.contains(&"-u") {
            let streams = theirs["end"]["streams"].as_array().expect("streams");
            assert!(streams.iter().all(|s| s["udp"]["packets"].as_u64().unwrap_or(0) > 0), "UDP packets: {theirs}");
        }
    }
}

#[test]
fn second_client_is_refused_while_a_test_runs() {
    skip_unless!("iperf3", "ping");
    let ns = Netns::new("perfbusy");
    let tap = support::short_name("upf", 1);
    let mut server = perf_server(&ns, "perfbusy", &tap, 2);
    let mut first = Background::start(&ns, "perfbusy1", &["iperf3", "-c", "10.55.2.2", "-t", "3", "-J"]);
    // Let the first test get going.
    std::thread::sleep(Duration::from_millis(1000));
    let second = ns.exec(&["iperf3", "-c", "10.55.2.2", "-t", "1"], SECS(20));
    let said = format!("{}{}", second.stdout_str(), second.stderr);
    assert!(!second.success(), "the second client was not refused: {second}");
    assert!(said.contains("the server is busy running a test"), "iperf3 did not report a busy server: {second}");
    assert!(first.wait_exit(SECS(30)).success(), "the first test failed:\n{}\n{}", first.stdout(), first.stderr());
    let doc: Value = serde_json::from_str(&first.stdout()).expect("first client's JSON");
    assert!(end_bytes(&doc, "sum_received") > 0);
    server.wait_stderr("the refusal", SECS(5), |e| e.contains("refused"));
    // Still serving: a third client gets a whole test.
    let third = iperf3_client(&ns, 2, &[]);
    assert!(end_bytes(&third, "sum_received") > 0);
    let docs = server_documents(&server, 2);
    assert_eq!(docs.len(), 2, "the refused client must not count as a test");
}

#[test]
fn ustack_perf_client_against_iperf3_server() {
    skip_unless!("iperf3", "ss");
    let ns = Netns::new("perfcli");
    let tap = support::short_name("upf", 2);
    for (i, mode) in [&[][..], &["-R"][..], &["-u", "-b", "50M"][..]].iter().enumerate() {
        let mut iperf3 = Background::start(&ns, &format!("perfcli-srv{i}"), &["iperf3", "-s", "-1", "-J"]);
        wait_listening(&ns, 5201);
        let mut argv: Vec<String> =
            ["perf", "-c", "10.55.3.1", "-t", "2", "-J"].iter().map(|s| s.to_string()).collect();
        argv.extend(mode.iter().map(|s| s.to_string()));
        argv.extend(dev_args(&tap, 3));
        let mut cmd = ns.command(&[support::ustack_bin()]);
        cmd.args(&argv);
        let out = run_bounded(cmd, None, SECS(60));
        assert!(out.success(), "ustack perf -c {mode:?}: {out}");
        let ours: Value = serde_json::from_slice(&out.stdout).unwrap_or_else(|e| panic!("not JSON ({e}): {out}"));
        assert!(iperf3.wait_exit(SECS(10)).success(), "iperf3 -s: {}", iperf3.stderr());
        let theirs: Value = serde_json::from_str(&iperf3.stdout()).expect("iperf3 -s JSON");
        // iperf3 -s fills in only the side it counted itself (the other
        // reads 0): that count, reached us in the results exchange, must match.
        let (theirs_sum, ours_sum) =
            if mode.contains(&"-R") { ("sum_sent", "sum_received") } else { ("sum_received", "sum_sent") };
        let (o, t) = (end_bytes(&ours, theirs_sum), end_bytes(&theirs, theirs_sum));
        eprintln!("ustack perf -c {mode:?}: end.{theirs_sum}.bytes ustack {o}, iperf3 {t}");
        assert_eq!(o, t, "{mode:?}: end.{theirs_sum}.bytes differ");
        let own = end_bytes(&ours, ours_sum);
        eprintln!("ustack perf -c {mode:?}: end.{ours_sum}.bytes ustack {own} (its own count)");
        assert!(t > 0 && own > 0, "{mode:?}: no bytes moved: {ours}");
        assert!(end_bytes(&ours, "sum_received") <= end_bytes(&ours, "sum_sent"), "{mode:?}: received more than sent");
        for sum in ["sum_sent", "sum_received"] {
            assert!(ours["end"][sum]["bits_per_second"].as_f64().is_some_and(|b| b > 0.0), "{sum}: {ours}");
        }
    }
}

#[test]
fn ustack_perf_client_is_refused_by_a_busy_iperf3() {
    skip_unless!("iperf3", "ss");
    let ns = Netns::new("perfcbusy");
    let tap = support::short_name("upf", 3);
    let _iperf3 = Background::start(&ns, "perfcbusy-srv", &["iperf3", "-s"]);
    wait_listening(&ns, 5201);
    // A kernel client keeps the server busy over the namespace's loopback.
    let mut first = Background::start(&ns, "perfcbusy-cli", &["iperf3", "-c", "127.0.0.1", "-t", "4"]);
    std::thread::sleep(Duration::from_millis(1000));
    let mut argv: Vec<String> = ["perf", "-c", "10.55.4.1", "-t", "1"].iter().map(|s| s.to_string()).collect();
    argv.extend(dev_args(&tap, 4));
    let mut cmd = ns.command(&[support::ustack_bin()]);
    cmd.args(&argv);
    let out = run_bounded(cmd, None, SECS(30));
    assert_eq!(out.code(), Some(1), "ustack perf -c against a busy server: {out}");
    let lines: Vec<&str> = out.stderr.lines().collect();
    assert_eq!(lines, ["ustack: error: perf: the server is busy running a test. try again later"], "{out}");
    assert!(first.wait_exit(SECS(20)).success(), "the first test failed:\n{}", first.stderr());
}
