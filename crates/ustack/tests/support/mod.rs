//! Helpers for running the `ustack` binary against Linux peers inside network
//! namespaces this test creates.
//!
//! Ground rules (see /work/shared/TESTING.md): traffic stays inside a
//! namespace the test made; every process and wait is bounded in time; every
//! namespace and process is cleaned up by a guard's `Drop`, also when the test
//! panics; names carry the test's tag and the pid so tests run in parallel.

#![allow(dead_code)]

/// TCP helpers (tcp_peers.rs, tcp_netem.rs).
pub mod tcp;
/// A veth pair between two namespaces (af_xdp.rs).
pub mod veth;

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// Path of the binary under test.
pub fn ustack_bin() -> &'static str {
    env!("CARGO_BIN_EXE_ustack")
}

/// Why these tests cannot run here, if they cannot.
pub fn skip_reason() -> Option<String> {
    let uid = Command::new("id").arg("-u").output().ok().map(|o| String::from_utf8_lossy(&o.stdout).trim().to_owned());
    if uid.as_deref() != Some("0") {
        return Some(format!("not root (uid {})", uid.unwrap_or_else(|| "unknown".into())));
    }
    if !std::path::Path::new("/dev/net/tun").exists() {
        return Some("/dev/net/tun missing".into());
    }
    if Command::new("ip").arg("-V").stdout(Stdio::null()).stderr(Stdio::null()).status().is_err() {
        return Some("`ip` (iproute2) missing".into());
    }
    None
}

/// Like `skip_reason`, and also requires each tool in `tools` to be on PATH.
pub fn skip_reason_with(tools: &[&str]) -> Option<String> {
    if let Some(r) = skip_reason() {
        return Some(r);
    }
    for t in tools {
        let found = Command::new("sh")
            .args(["-c", &format!("command -v {t}")])
            .stdout(Stdio::null())
            .status()
            .map(|s| s.success())
            .unwrap_or(false);
        if !found {
            return Some(format!("`{t}` not installed"));
        }
    }
    None
}

macro_rules! skip_unless {
    ($($tool:expr),* $(,)?) => {
        if let Some(reason) = support::skip_reason_with(&[$($tool),*]) {
            eprintln!("SKIPPED: {reason}");
            return;
        }
    };
}

/// A short unique name: the interface name limit is 15 bytes.
pub fn short_name(prefix: &str, idx: u8) -> String {
    let name = format!("{prefix}{idx}p{}", std::process::id() % 100_000);
    assert!(name.len() <= 15, "interface name {name} too long");
    name
}

/// A network namespace deleted when the guard drops.
pub struct Netns {
    pub name: String,
}

impl Netns {
    pub fn new(tag: &str) -> Netns {
        let name = format!("ust-{tag}-{}", std::process::id());
        // A leftover from a crashed run with the same pid would make `add` fail.
        let _ = Command::new("ip").args(["netns", "del", &name]).stderr(Stdio::null()).status();
        let out = Command::new("ip").args(["netns", "add", &name]).output().expect("run ip netns add");
        assert!(out.status.success(), "ip netns add {name}: {}", String::from_utf8_lossy(&out.stderr));
        let ns = Netns { name };
        // Loopback up: harmless, and some tools expect it.
        ns.exec_ok(&["ip", "link", "set", "lo", "up"], Duration::from_secs(5));
        ns
    }

    /// A `Command` running `argv` inside this namespace.
    pub fn command(&self, argv: &[&str]) -> Command {
        let mut c = Command::new("ip");
        c.args(["netns", "exec", &self.name]).args(argv);
        c
    }

    /// Run `argv` in the namespace, bounded by `limit`.
    pub fn exec(&self, argv: &[&str], limit: Duration) -> Output {
        run_bounded(self.command(argv), None, limit)
    }

    /// Run `argv` in the namespace; panic unless it exits 0.
    pub fn exec_ok(&self, argv: &[&str], limit: Duration) -> Output {
        let out = self.exec(argv, limit);
        assert!(out.success(), "{argv:?} in {} failed: {out}", self.name);
        out
    }

    /// Run `argv` in the namespace with `input` on stdin, bounded by `limit`.
    pub fn exec_stdin(&self, argv: &[&str], input: &[u8], limit: Duration) -> Output {
        run_bounded(self.command(argv), Some(input), limit)
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        let _ = Command::new("ip").args(["netns", "del", &self.name]).stderr(Stdio::null()).status();
    }
}

/// What a bounded run produced.
pub struct Output {
    /// `None` when it was killed at the deadline.
    pub status: Option<ExitStatus>,
    pub stdout: Vec<u8>,
    pub stderr: String,
    pub timed_out: bool,
}

impl Output {
    pub fn success(&self) -> bool {
        self.status.map(|s| s.success()).unwrap_or(false)
    }
    pub fn code(&self) -> Option<i32> {
        self.status.and_then(|s| s.code())
    }
    pub fn stdout_str(&self) -> String {
        String::from_utf8_lossy(&self.stdout).into_owned()
    }
}

impl std::fmt::Display for Output {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "status {:?}{}\n--- stdout ---\n{}\n--- stderr ---\n{}",
            self.status,
            if self.timed_out { " (killed at deadline)" } else { "" },
            String::from_utf8_lossy(&self.stdout),
            self.stderr
        )
    }
}

/// Spawn a thread that drains `r` into a shared buffer.
fn drain<R: Read + Send + 'static>(mut r: R, buf: Arc<Mutex<Vec<u8>>>) -> JoinHandle<()> {
    std::thread::spawn(move || {
        let mut chunk = [0u8; 4096];
        loop {
            match r.read(&mut chunk) {
                Ok(0) | Err(_) => break,
                Ok(n) => buf.lock().unwrap().extend_from_slice(&chunk[..n]),
            }
        }
    })
}

/// Kills and reaps the child when dropped (unless it was already reaped).
struct KillOnDrop(Option<Child>);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        if let Some(mut c) = self.0.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

/// Run `cmd` to completion or until `limit`, then kill it. Never hangs.
pub fn run_bounded(mut cmd: Command, input: Option<&[u8]>, limit: Duration) -> Output {
    cmd.stdin(if input.is_some() { Stdio::piped() } else { Stdio::null() })
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut child = cmd.spawn().unwrap_or_else(|e| panic!("spawn {cmd:?}: {e}"));
    let out_buf = Arc::new(Mutex::new(Vec::new()));
    let err_buf = Arc::new(Mutex::new(Vec::new()));
    let t_out = drain(child.stdout.take().unwrap(), out_buf.clone());
    let t_err = drain(child.stderr.take().unwrap(), err_buf.clone());
    let mut guard = KillOnDrop(Some(child));
    if let Some(data) = input {
        let mut stdin = guard.0.as_mut().unwrap().stdin.take().unwrap();
        let data = data.to_vec();
        // Writing from a thread: a child that does not read must not block us.
        std::thread::spawn(move || {
            let _ = stdin.write_all(&data);
            // stdin dropped here: EOF.
        });
    }
    let deadline = Instant::now() + limit;
    let mut status = None;
    let mut timed_out = false;
    loop {
        match guard.0.as_mut().unwrap().try_wait() {
            Ok(Some(s)) => {
                status = Some(s);
                guard.0 = None;
                break;
            }
            Ok(None) if Instant::now() >= deadline => {
                timed_out = true;
                drop(guard); // kill + reap
                break;
            }
            Ok(None) => std::thread::sleep(Duration::from_millis(10)),
            Err(e) => panic!("wait for {cmd:?}: {e}"),
        }
    }
    // The pipes close when the child is gone (grandchildren aside; they are
    // killed with the namespace's processes or die on their own bounds).
    let join_deadline = Instant::now() + Duration::from_secs(5);
    while !(t_out.is_finished() && t_err.is_finished()) && Instant::now() < join_deadline {
        std::thread::sleep(Duration::from_millis(5));
    }
    let stdout = out_buf.lock().unwrap().clone();
    let stderr = String::from_utf8_lossy(&err_buf.lock().unwrap()).into_owned();
    Output { status, stdout, stderr, timed_out }
}

/// Options for one `ustack up` run.
pub struct UpOpts {
    pub tap: String,
    /// Third octet N of 10.77.N.0/24.
    pub subnet: u8,
    pub pcap: Option<String>,
    pub udp_echo: Vec<u16>,
}

impl UpOpts {
    pub fn stack_ip(&self) -> String {
        format!("10.77.{}.2", self.subnet)
    }
    pub fn host_ip(&self) -> String {
        format!("10.77.{}.1", self.subnet)
    }
}

/// A running `ustack up` inside a namespace. Killed (SIGKILL) and reaped on
/// drop if the test did not stop it.
pub struct Ustack {
    child: Option<Child>,
    stdout: Arc<Mutex<Vec<u8>>>,
    stderr: Arc<Mutex<Vec<u8>>>,
    readers: Vec<JoinHandle<()>>,
    pub opts: UpOpts,
    pub ns: String,
}

/// What `ustack up` left behind after it stopped.
pub struct Stopped {
    pub status: ExitStatus,
    pub stdout: String,
    pub stderr: String,
    pub elapsed: Duration,
}

impl Stopped {
    /// The counters block of stdout, name → value (absent means zero).
    pub fn counters(&self) -> BTreeMap<String, u64> {
        parse_counters(&self.stdout).unwrap_or_else(|| {
            panic!("no `counters:` block in ustack's stdout:\n{}\nstderr:\n{}", self.stdout, self.stderr)
        })
    }
}

/// Parse the `counters:` block; `None` if stdout has none.
pub fn parse_counters(stdout: &str) -> Option<BTreeMap<String, u64>> {
    let mut lines = stdout.lines().skip_while(|l| l.trim() != "counters:");
    lines.next()?;
    let mut map = BTreeMap::new();
    for line in lines {
        let mut parts = line.split_whitespace();
        let (Some(name), Some(value), None) = (parts.next(), parts.next(), parts.next()) else {
            break;
        };
        let Ok(value) = value.parse::<u64>() else { break };
        map.insert(name.to_owned(), value);
    }
    Some(map)
}

impl Ustack {
    /// Start `ustack up` in `ns` and wait (bounded) until it is serving: the
    /// startup line, one "UDP echo on port" line per echo port, and the TAP
    /// present and up with the host address on it.
    pub fn start(ns: &Netns, opts: UpOpts) -> Ustack {
        let device = format!("tap:{}", opts.tap);
        let ip = format!("{}/24", opts.stack_ip());
        let host = format!("{}/24", opts.host_ip());
        let mut argv: Vec<String> = vec![
            ustack_bin().into(),
            "up".into(),
            "--device".into(),
            device,
            "--ip".into(),
            ip,
            "--host-ip".into(),
            host,
        ];
        if let Some(p) = &opts.pcap {
            argv.push("--pcap".into());
            argv.push(p.clone());
        }
        for port in &opts.udp_echo {
            argv.push("--udp-echo".into());
            argv.push(port.to_string());
        }
        let argv_ref: Vec<&str> = argv.iter().map(String::as_str).collect();
        let want_echo = opts.udp_echo.len();
        let up_line = format!("ustack: up on tap:{}", opts.tap);
        let u = Ustack::spawn(ns, &argv_ref, opts, "the startup line and UDP echo lines", |err| {
            err.contains(&up_line) && err.matches("UDP echo on port").count() >= want_echo
        });
        // The kernel side: wait for the TAP to be up with its address.
        let tap = u.opts.tap.clone();
        let host_ip = u.opts.host_ip();
        let deadline = Instant::now() + Duration::from_secs(5);
        loop {
            let out = ns.exec(&["ip", "-4", "addr", "show", "dev", &tap], Duration::from_secs(5));
            let text = out.stdout_str();
            if out.success() && text.contains(&format!("inet {host_ip}/24")) && text.contains(",UP") {
                break;
            }
            if Instant::now() >= deadline {
                panic!("TAP {tap} not up with {host_ip}/24 within 5 s: {out}\nustack stderr:\n{}", u.stderr_now());
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        u
    }

    /// Start the command line `argv` (ustack and its arguments) in `ns` and
    /// wait (bounded) until its stderr satisfies `ready`.
    pub fn spawn(ns: &Netns, argv: &[&str], opts: UpOpts, what: &str, ready: impl Fn(&str) -> bool) -> Ustack {
        let mut cmd = ns.command(argv);
        cmd.stdin(Stdio::null()).stdout(Stdio::piped()).stderr(Stdio::piped());
        let mut child = cmd.spawn().unwrap_or_else(|e| panic!("spawn {cmd:?}: {e}"));
        let stdout = Arc::new(Mutex::new(Vec::new()));
        let stderr = Arc::new(Mutex::new(Vec::new()));
        let readers = vec![
            drain(child.stdout.take().unwrap(), stdout.clone()),
            drain(child.stderr.take().unwrap(), stderr.clone()),
        ];
        let mut u = Ustack { child: Some(child), stdout, stderr, readers, opts, ns: ns.name.clone() };
        u.wait_for(what, Duration::from_secs(10), ready);
        u
    }

    pub fn pid(&self) -> u32 {
        self.child.as_ref().expect("ustack already stopped").id()
    }

    pub fn stderr_now(&self) -> String {
        String::from_utf8_lossy(&self.stderr.lock().unwrap()).into_owned()
    }

    /// Poll stderr until `pred` holds; fail with stderr after `limit` or if
    /// the process exits first.
    fn wait_for(&mut self, what: &str, limit: Duration, pred: impl Fn(&str) -> bool) {
        let deadline = Instant::now() + limit;
        loop {
            let err = self.stderr_now();
            if pred(&err) {
                return;
            }
            if let Ok(Some(status)) = self.child.as_mut().unwrap().try_wait() {
                std::thread::sleep(Duration::from_millis(50)); // let the readers catch up
                panic!("ustack exited ({status}) before {what}; stderr:\n{}", self.stderr_now());
            }
            if Instant::now() >= deadline {
                panic!("ustack: no {what} within {limit:?}; stderr so far:\n{err}");
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    /// Wait up to `limit` for ustack to exit by itself (no signal); panics
    /// (after a SIGKILL from the guard) if it does not.
    pub fn wait_exit(mut self, limit: Duration) -> Stopped {
        let start = Instant::now();
        let status = loop {
            match self.child.as_mut().unwrap().try_wait() {
                Ok(Some(s)) => break s,
                Ok(None) if start.elapsed() >= limit => {
                    panic!("ustack did not exit within {limit:?}; stderr:\n{}", self.stderr_now());
                }
                Ok(None) => std::thread::sleep(Duration::from_millis(10)),
                Err(e) => panic!("wait for ustack: {e}"),
            }
        };
        self.finish(status, start)
    }

    /// Send SIGTERM and wait up to `limit` for the exit; panics (after a
    /// SIGKILL from the guard) if it does not exit in time.
    pub fn stop(self, limit: Duration) -> Stopped {
        self.stop_with("TERM", limit)
    }

    /// Send SIG`signal` (e.g. "TERM", "INT") and wait up to `limit` for the exit.
    pub fn stop_with(mut self, signal: &str, limit: Duration) -> Stopped {
        let pid = self.pid().to_string();
        let start = Instant::now();
        // `ip netns exec` execs the command, so this pid is ustack itself.
        let st = Command::new("kill").args([&format!("-{signal}"), &pid]).status().expect("run kill");
        assert!(st.success(), "kill -{signal} {pid} failed");
        let deadline = start + limit;
        let status = loop {
            match self.child.as_mut().unwrap().try_wait() {
                Ok(Some(s)) => break s,
                Ok(None) if Instant::now() >= deadline => {
                    panic!("ustack did not exit within {limit:?} of SIG{signal}; stderr:\n{}", self.stderr_now());
                }
                Ok(None) => std::thread::sleep(Duration::from_millis(10)),
                Err(e) => panic!("wait for ustack: {e}"),
            }
        };
        self.finish(status, start)
    }

    fn finish(&mut self, status: ExitStatus, start: Instant) -> Stopped {
        let elapsed = start.elapsed();
        self.child = None;
        for r in self.readers.drain(..) {
            let d = Instant::now() + Duration::from_secs(5);
            while !r.is_finished() && Instant::now() < d {
                std::thread::sleep(Duration::from_millis(5));
            }
        }
        Stopped {
            status,
            stdout: String::from_utf8_lossy(&self.stdout.lock().unwrap()).into_owned(),
            stderr: self.stderr_now(),
            elapsed,
        }
    }
}

impl Drop for Ustack {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
            if std::thread::panicking() {
                eprintln!("ustack stderr at failure:\n{}", self.stderr_now());
            }
        }
    }
}

/// A file path unique to this test and process, removed on drop.
pub struct TempPath(pub std::path::PathBuf);

impl TempPath {
    pub fn new(tag: &str, ext: &str) -> TempPath {
        TempPath(std::env::temp_dir().join(format!("ustack-test-{tag}-{}.{ext}", std::process::id())))
    }
    pub fn as_str(&self) -> &str {
        self.0.to_str().unwrap()
    }
}

impl Drop for TempPath {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

/// Deterministic pseudorandom bytes (xorshift64*), so a failure reproduces.
pub fn pseudo_random(len: usize, seed: u64) -> Vec<u8> {
    let mut x = seed | 1;
    (0..len)
        .map(|_| {
            x ^= x >> 12;
            x ^= x << 25;
            x ^= x >> 27;
            (x.wrapping_mul(0x2545_F491_4F6C_DD1D) >> 56) as u8
        })
        .collect()
}

/// Wait (bounded) until `tap` in `ns` is up with `host` (A.B.C.D/N) on the
/// kernel's side; after `limit`, `Err` with `ip addr`'s last answer.
pub fn wait_tap_up(ns: &Netns, tap: &str, host: &str, limit: Duration) -> Result<(), Output> {
    let deadline = Instant::now() + limit;
    loop {
        let out = ns.exec(&["ip", "-4", "addr", "show", "dev", tap], Duration::from_secs(5));
        let text = out.stdout_str();
        if out.success() && text.contains(&format!("inet {host}")) && text.contains(",UP") {
            return Ok(());
        }
        if Instant::now() >= deadline {
            return Err(out);
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// The records of a classic pcap file of Ethernet frames, as (original
/// length, captured bytes); panics on anything else or a truncated file.
pub fn pcap_records(bytes: &[u8]) -> Vec<(u64, &[u8])> {
    assert!(bytes.len() >= 24, "pcap file shorter than its header ({} bytes)", bytes.len());
    let le = match bytes[..4] {
        [0xd4, 0xc3, 0xb2, 0xa1] | [0x4d, 0x3c, 0xb2, 0xa1] => true,
        [0xa1, 0xb2, 0xc3, 0xd4] | [0xa1, 0xb2, 0x3c, 0x4d] => false,
        _ => panic!("not a classic pcap file: magic {:02x?}", &bytes[..4]),
    };
    let u32_at = |at: usize| {
        let b: [u8; 4] = bytes[at..at + 4].try_into().unwrap();
        u64::from(if le { u32::from_le_bytes(b) } else { u32::from_be_bytes(b) })
    };
    assert_eq!(u32_at(20), 1, "pcap link type should be Ethernet (1)");
    let mut records = Vec::new();
    let mut at = 24;
    while at < bytes.len() {
        assert!(at + 16 <= bytes.len(), "truncated pcap record header at offset {at}");
        let (incl, orig) = (u32_at(at + 8) as usize, u32_at(at + 12));
        assert!(at + 16 + incl <= bytes.len(), "truncated pcap record (frame {})", records.len());
        records.push((orig, &bytes[at + 16..at + 16 + incl]));
        at += 16 + incl;
    }
    records
}

/// Stderr must never show a panic or a backtrace hint.
pub fn assert_no_panic(stderr: &str) {
    assert!(
        !stderr.contains("panicked") && !stderr.contains("RUST_BACKTRACE"),
        "ustack panicked; stderr:\n{stderr}"
    );
}

/// Exit 1 and exactly one stderr line `ustack: error: ...` containing each of `needles`.
pub fn assert_one_error_line(out: &Output, needles: &[&str]) {
    assert_eq!(out.code(), Some(1), "{out}");
    let lines: Vec<&str> = out.stderr.lines().collect();
    assert_eq!(lines.len(), 1, "expected exactly one stderr line: {out}");
    assert!(lines[0].starts_with("ustack: error: "), "{out}");
    for n in needles {
        assert!(lines[0].contains(n), "error should mention {n:?}: {out}");
    }
    assert_no_panic(&out.stderr);
}

/// The JSON documents in `text`, one after another (iperf3 -J output).
pub fn json_documents(text: &str) -> Vec<serde_json::Value> {
    serde_json::Deserializer::from_str(text).into_iter::<serde_json::Value>().map_while(Result::ok).collect()
}

/// The `RESULT {json}` line a client script of `tests/scripts/` prints,
/// parsed; panics with the script's output and `context` (the stack's
/// stderr, say) when there is none, or when `ok` is not `want` or `bad`
/// is not zero.
pub fn client_result(out: &Output, want: usize, context: &str) -> serde_json::Value {
    let result: serde_json::Value = out
        .stdout_str()
        .lines()
        .find_map(|l| l.strip_prefix("RESULT "))
        .and_then(|j| serde_json::from_str(j).ok())
        .unwrap_or_else(|| panic!("no RESULT from the clients: {out}\n{context}"));
    assert_eq!(
        (result["ok"].as_u64(), result["bad"].as_u64()),
        (Some(want as u64), Some(0)),
        "errors: {}\n{context}",
        result["errors"]
    );
    result
}

/// `end.SUM.bytes` of an iperf3 JSON result.
pub fn end_bytes(doc: &serde_json::Value, sum: &str) -> u64 {
    doc["end"][sum]["bytes"].as_u64().unwrap_or_else(|| panic!("no end.{sum}.bytes in {doc}"))
}
