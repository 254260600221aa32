//! Helpers for the TCP tests against Linux (`tcp_peers.rs`, `tcp_netem.rs`):
//! `ustack up` with its TCP services, `ustack get`, background helper
//! processes (python http.server, tcpdump), pre-created TAPs with the
//! kernel's offloads off, the routed netem topology, SHA-256 of files, and
//! the pcap analyses (SYN options, SACK blocks, retransmissions vs SACK).
//!
//! The same ground rules as `mod.rs`: everything bounded in time, everything
//! removed by guards, names unique per test and process.

use super::{drain, run_bounded, ustack_bin, KillOnDrop, Netns, Output, Stopped, UpOpts, Ustack};
use std::collections::BTreeMap;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

pub const SECS: fn(u64) -> Duration = Duration::from_secs;

/// Python to run helpers with: the system one (a pyenv shim is a shell
/// script that would sit between `kill` and python).
pub fn python() -> &'static str {
    if Path::new("/usr/bin/python3").exists() {
        "/usr/bin/python3"
    } else {
        "python3"
    }
}

// ---------------------------------------------------------------- files ---

/// A directory unique to this test and process, removed (recursively) on drop.
pub struct TempDir(pub PathBuf);

impl TempDir {
    pub fn new(tag: &str) -> TempDir {
        let p = std::env::temp_dir().join(format!("ustack-test-{tag}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&p);
        std::fs::create_dir_all(&p).unwrap_or_else(|e| panic!("mkdir {}: {e}", p.display()));
        TempDir(p)
    }
    pub fn path(&self, name: &str) -> PathBuf {
        self.0.join(name)
    }
    /// `path(name)` as a `String` (these paths are ASCII).
    pub fn file(&self, name: &str) -> String {
        self.path(name).to_str().unwrap().to_owned()
    }
    pub fn as_str(&self) -> &str {
        self.0.to_str().unwrap()
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        // USTACK_TEST_KEEP=1 keeps files (pcaps) for a post-mortem.
        if std::env::var_os("USTACK_TEST_KEEP").is_some() {
            eprintln!("kept {}", self.0.display());
            return;
        }
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// Write `len` pseudorandom bytes (xorshift64*, 8 bytes a step) to `path`.
/// Deterministic per seed, so a failure reproduces.
pub fn write_random_file(path: &Path, len: usize, seed: u64) {
    let mut f = std::io::BufWriter::with_capacity(1 << 20, std::fs::File::create(path).unwrap());
    let mut x = seed | 1;
    let mut chunk = vec![0u8; 1 << 16];
    let mut left = len;
    while left > 0 {
        let n = left.min(chunk.len());
        for word in chunk.chunks_mut(8) {
            x ^= x >> 12;
            x ^= x << 25;
            x ^= x >> 27;
            let v = x.wrapping_mul(0x2545_F491_4F6C_DD1D).to_le_bytes();
            word.copy_from_slice(&v[..word.len()]);
        }
        f.write_all(&chunk[..n]).unwrap();
        left -= n;
    }
    f.flush().unwrap();
}

/// SHA-256 of a file, hex, via coreutils' `sha256sum`.
pub fn sha256_file(path: &Path) -> String {
    let mut c = Command::new("sha256sum");
    c.arg(path);
    let out = run_bounded(c, None, SECS(120));
    assert!(out.success(), "sha256sum {}: {out}", path.display());
    out.stdout_str().split_whitespace().next().unwrap_or_default().to_owned()
}

pub fn file_len(path: &Path) -> u64 {
    std::fs::metadata(path).map(|m| m.len()).unwrap_or(0)
}

/// Concatenate `parts` into `dst`.
pub fn concat_files(parts: &[PathBuf], dst: &Path) {
    let mut out = std::fs::File::create(dst).unwrap();
    for p in parts {
        let mut f = std::fs::File::open(p).unwrap();
        std::io::copy(&mut f, &mut out).unwrap();
    }
}

// ---------------------------------------------------- background process ---

/// A helper process in a namespace (http.server, tcpdump), its output
/// captured; killed and reaped on drop unless stopped.
pub struct Bg {
    what: String,
    child: Option<Child>,
    stdout: Arc<Mutex<Vec<u8>>>,
    stderr: Arc<Mutex<Vec<u8>>>,
    readers: Vec<JoinHandle<()>>,
}

impl Bg {
    pub fn spawn(ns: &Netns, argv: &[&str]) -> Bg {
        let mut cmd = ns.command(argv);
        cmd.stdin(Stdio::null()).stdout(Stdio::piped()).stderr(Stdio::piped());
        let mut child = cmd.spawn().unwrap_or_else(|e| panic!("spawn {cmd:?}: {e}"));
        let stdout = Arc::new(Mutex::new(Vec::new()));
        let stderr = Arc::new(Mutex::new(Vec::new()));
        let readers = vec![
            drain(child.stdout.take().unwrap(), stdout.clone()),
            drain(child.stderr.take().unwrap(), stderr.clone()),
        ];
        Bg { what: argv.join(" "), child: Some(child), stdout, stderr, readers }
    }

    pub fn stderr_now(&self) -> String {
        String::from_utf8_lossy(&self.stderr.lock().unwrap()).into_owned()
    }

    /// Panics if the process already exited.
    pub fn assert_running(&mut self) {
        if let Some(st) = self.child.as_mut().unwrap().try_wait().ok().flatten() {
            std::thread::sleep(Duration::from_millis(50));
            panic!("`{}` exited early ({st}); stderr:\n{}", self.what, self.stderr_now());
        }
    }

    /// Poll `ready` (bounded); fail with this process's stderr.
    pub fn wait_ready(&mut self, what: &str, limit: Duration, mut ready: impl FnMut(&str) -> bool) {
        let deadline = Instant::now() + limit;
        loop {
            if ready(&self.stderr_now()) {
                return;
            }
            self.assert_running();
            if Instant::now() >= deadline {
                panic!("`{}`: not {what} within {limit:?}; stderr:\n{}", self.what, self.stderr_now());
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// SIG`signal`, then wait up to `limit` (SIGKILL after); returns stderr.
    pub fn stop(self, signal: &str, limit: Duration) -> String {
        self.stop_both(signal, limit).1
    }

    /// SIG`signal`, then wait up to `limit` (SIGKILL after); (stdout, stderr).
    pub fn stop_both(self, signal: &str, limit: Duration) -> (String, String) {
        let (_, out, err) = self.stop_with_status(signal, limit);
        (out, err)
    }

    /// SIG`signal`, then wait up to `limit` (SIGKILL after); (exit status
    /// if it exited in time, stdout, stderr).
    pub fn stop_with_status(mut self, signal: &str, limit: Duration) -> (Option<ExitStatus>, String, String) {
        let mut status = None;
        if let Some(mut c) = self.child.take() {
            let _ = Command::new("kill").args([&format!("-{signal}"), &c.id().to_string()]).status();
            let deadline = Instant::now() + limit;
            loop {
                status = c.try_wait().ok().flatten();
                if status.is_some() || Instant::now() >= deadline {
                    break;
                }
                std::thread::sleep(Duration::from_millis(10));
            }
            drop(KillOnDrop(Some(c)));
        }
        self.drain_readers();
        (status, self.stdout_now(), self.stderr_now())
    }

    /// Once the process is gone: wait (bounded) until the reader threads
    /// have taken the last of its output, so `stdout_now`/`stderr_now` see
    /// its final lines (an exit can be observed before they are read).
    fn drain_readers(&mut self) {
        for r in self.readers.drain(..) {
            let d = Instant::now() + SECS(5);
            while !r.is_finished() && Instant::now() < d {
                std::thread::sleep(Duration::from_millis(5));
            }
        }
    }

    pub fn stdout_now(&self) -> String {
        String::from_utf8_lossy(&self.stdout.lock().unwrap()).into_owned()
    }

    /// Wait up to `limit` for the process to exit by itself; panics if not.
    pub fn wait_exit(&mut self, limit: Duration) -> ExitStatus {
        let deadline = Instant::now() + limit;
        loop {
            if let Some(st) = self.child.as_mut().unwrap().try_wait().ok().flatten() {
                self.drain_readers();
                return st;
            }
            if Instant::now() >= deadline {
                panic!("`{}` did not exit within {limit:?}; stderr:\n{}", self.what, self.stderr_now());
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    }
}

impl Drop for Bg {
    fn drop(&mut self) {
        drop(KillOnDrop(self.child.take()));
    }
}

/// Wait (bounded) until something listens on TCP `port` in `ns`.
pub fn wait_listening(ns: &Netns, port: u16, limit: Duration) {
    let deadline = Instant::now() + limit;
    loop {
        let out = ns.exec(&["ss", "-Hltn", &format!("sport = :{port}")], SECS(5));
        if out.success() && !out.stdout_str().trim().is_empty() {
            return;
        }
        assert!(Instant::now() < deadline, "nothing listens on TCP port {port} in {} after {limit:?}", ns.name);
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// `python3 -m http.server` (HTTP/1.1, keep-alive) on `bind:port` serving `dir`.
pub fn http_server(ns: &Netns, bind: &str, port: u16, dir: &str) -> Bg {
    let port_s = port.to_string();
    let mut bg =
        Bg::spawn(ns, &[python(), "-m", "http.server", "--bind", bind, "--directory", dir, "-p", "HTTP/1.1", &port_s]);
    let deadline = Instant::now() + SECS(15);
    loop {
        bg.assert_running();
        let out = ns.exec(&["ss", "-Hltn", &format!("sport = :{port}")], SECS(5));
        if out.success() && out.stdout_str().contains(&format!("{bind}:{port}")) {
            return bg;
        }
        assert!(Instant::now() < deadline, "http.server not listening on {bind}:{port}: {}", bg.stderr_now());
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// tcpdump on `iface` in `ns` writing `file` (headers only: `-s 128`),
/// started and ready ("listening on" printed). Stop with `stop("INT", ..)`
/// so the file is flushed.
pub fn tcpdump(ns: &Netns, iface: &str, file: &str, filter: &str) -> Bg {
    let mut argv = vec!["tcpdump", "-i", iface, "-n", "-s", "128", "--immediate-mode", "-U", "-w", file];
    argv.extend(filter.split_whitespace());
    let mut bg = Bg::spawn(ns, &argv);
    bg.wait_ready("listening", SECS(10), |e| e.contains("listening on"));
    bg
}

// ------------------------------------------------------------- topology ---

/// Turn IPv6 off in `ns` (and on interfaces made later), and reverse-path
/// filtering off (the router forwards between two subnets).
pub fn quiet_namespace(ns: &Netns) {
    for kv in [
        "net.ipv6.conf.default.disable_ipv6=1",
        "net.ipv6.conf.all.disable_ipv6=1",
        "net.ipv4.conf.all.rp_filter=0",
        "net.ipv4.conf.default.rp_filter=0",
    ] {
        ns.exec_ok(&["sysctl", "-qw", kv], SECS(5));
    }
}

/// TSO/GSO/GRO off on `iface` (a TAP allows all three), and check it took.
pub fn offloads_off(ns: &Netns, iface: &str) {
    ns.exec_ok(&["ethtool", "-K", iface, "tso", "off", "gso", "off", "gro", "off"], SECS(5));
    let k = ns.exec_ok(&["ethtool", "-k", iface], SECS(5)).stdout_str();
    for f in ["tcp-segmentation-offload: off", "generic-segmentation-offload: off", "generic-receive-offload: off"] {
        assert!(k.lines().any(|l| l.starts_with(f)), "{iface}: want {f:?}:\n{k}");
    }
}

/// A persistent TAP made before the stack opens it, so its offloads are off
/// (and any qdisc is in place) before the first frame; `addr` (A.B.C.D/N)
/// goes on the kernel's side now when given (so a server can bind to it).
pub fn precreate_tap(ns: &Netns, tap: &str, addr: Option<&str>) {
    ns.exec_ok(&["ip", "tuntap", "add", "dev", tap, "mode", "tap"], SECS(5));
    ns.exec_ok(&["sysctl", "-qw", &format!("net.ipv6.conf.{tap}.disable_ipv6=1")], SECS(5));
    offloads_off(ns, tap);
    if let Some(a) = addr {
        ns.exec_ok(&["ip", "addr", "add", a, "dev", tap], SECS(5));
    }
    ns.exec_ok(&["ip", "link", "set", tap, "up"], SECS(5));
}

/// The impairment both directions get in `tcp_netem.rs`, in netem's words.
/// This kernel has no `sch_netem` (CONFIG_NET_SCH_NETEM is not set; `tc
/// qdisc add ... netem` says "Specified qdisc kind is unknown"), so
/// `IMPAIR_RELAY` applies it in user space, between the TAP and the router.
pub const NETEM: &str = "loss 2% delay 5ms 1ms reorder 5% 50% duplicate 1% corrupt 0.5% limit 10000";

/// Whether this kernel has netem (`tc qdisc add ... netem` works).
pub fn kernel_has_netem() -> bool {
    let ns = Netns::new("netemprobe");
    let _ = ns.exec(&["ip", "link", "add", "nmprobe0", "type", "veth", "peer", "name", "nmprobe1"], SECS(5));
    ns.exec(&["tc", "qdisc", "add", "dev", "nmprobe0", "root", "netem", "delay", "1ms"], SECS(5)).success()
}

/// A user-space netem: an L2 relay between two interfaces (AF_PACKET), each
/// direction impaired like `tc qdisc ... netem loss L delay D J reorder R C
/// duplicate U corrupt X limit N`: a frame is lost with probability L; else
/// it is corrupted (one random bit of the frame flipped, after the sender
/// completed its checksums) with probability X; it is released at once with
/// probability R (with probability C the previous frame's decision is
/// repeated; these overtake the delayed ones) or after D ± J (uniform, so jitter reorders
/// too); with probability U a second copy is queued; at most N frames wait
/// per direction. argv: IF_A IF_B seed. On SIGTERM prints what it did.
pub const IMPAIR_RELAY: &str = r#"
import heapq, os, random, select, signal, socket, sys, time
LOSS, DELAY, JITTER, REORDER, CORR, DUP, CORRUPT, LIMIT = 0.02, 0.005, 0.001, 0.05, 0.5, 0.01, 0.005, 10000
ifs = sys.argv[1:3]
rnd = random.Random(int(sys.argv[3]))
socks = []
for name in ifs:
    s = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, socket.htons(3))
    s.setsockopt(socket.SOL_SOCKET, 33, 8 << 20)  # SO_RCVBUFFORCE
    s.setsockopt(socket.SOL_SOCKET, 32, 8 << 20)  # SO_SNDBUFFORCE
    s.bind((name, 0))
    s.setblocking(False)
    socks.append(s)
names = ["to_" + ifs[1], "to_" + ifs[0]]
st = {n: dict(frames=0, lost=0, corrupted=0, reordered=0, duplicated=0, overlimit=0, send_errors=0) for n in names}
queue = []  # (release, seq, out_index, frame)
queued = [0, 0]
last_r = [False, False]
seq = 0
stop = []
signal.signal(signal.SIGTERM, lambda *a: stop.append(1))
signal.signal(signal.SIGINT, lambda *a: stop.append(1))
print("relay ready", file=sys.stderr, flush=True)
try:
    while not stop:
        now = time.monotonic()
        while queue and queue[0][0] <= now:
            _, _, out, frame = heapq.heappop(queue)
            queued[out] -= 1
            try:
                socks[out].send(frame)
            except OSError:
                st[names[1 - out]]["send_errors"] += 1
        timeout = max(0.0, queue[0][0] - time.monotonic()) if queue else 0.2
        try:
            ready, _, _ = select.select(socks, [], [], timeout)
        except InterruptedError:
            continue
        for i in (0, 1):
            if socks[i] not in ready:
                continue
            out = 1 - i
            d = st[names[i]]
            for _ in range(64):
                try:
                    frame, addr = socks[i].recvfrom(65536)
                except BlockingIOError:
                    break
                if addr[2] == socket.PACKET_OUTGOING:
                    continue
                d["frames"] += 1
                if rnd.random() < LOSS:
                    d["lost"] += 1
                    continue
                copies = 2 if rnd.random() < DUP else 1
                if copies == 2:
                    d["duplicated"] += 1
                now = time.monotonic()
                for c in range(copies):
                    f = frame
                    if rnd.random() < CORRUPT:
                        b = bytearray(f)
                        k = rnd.randrange(len(b))
                        b[k] ^= 1 << rnd.randrange(8)
                        f = bytes(b)
                        d["corrupted"] += 1
                    # Correlated: repeat the previous decision with probability CORR.
                    if rnd.random() >= CORR:
                        last_r[out] = rnd.random() < REORDER
                    if last_r[out]:
                        release = now
                        d["reordered"] += 1
                    else:
                        release = now + DELAY + rnd.uniform(-JITTER, JITTER)
                    if queued[out] >= LIMIT:
                        d["overlimit"] += 1
                        continue
                    seq += 1
                    queued[out] += 1
                    heapq.heappush(queue, (release, seq, out, f))
finally:
    for n in names:
        print(n, " ".join("%s=%d" % kv for kv in st[n].items()), flush=True)
"#;

/// Stack namespace S holds only the stack's TAP and one end of a veth, no
/// addresses, and `IMPAIR_RELAY` between the two; router namespace R has the
/// other end (10.67.N.1/24, the stack's gateway), IP forwarding, and a veth
/// to peer namespace P (R 10.68.N.1/24, P 10.68.N.2/24; P reaches
/// 10.67.N.0/24 via R). The stack is 10.67.N.2/24. Offloads (TSO/GSO/GRO and
/// TX checksum, so the relay sees complete frames with complete checksums)
/// are off on the TAP and every veth end.
///
/// ```text
///  ustack ─TAP─ [S: relay, impaired both ways] ─veth─ [R: 10.67.N.1 fwd 10.68.N.1] ─veth─ [P: 10.68.N.2]
/// ```
pub struct Routed {
    pub s: Netns,
    pub r: Netns,
    pub p: Netns,
    pub tap: String,
    pub veth_p: String,
    pub n: u8,
    relay: Option<Bg>,
}

impl Routed {
    pub fn new(tag: &str, n: u8, impaired: bool) -> Routed {
        let s = Netns::new(&format!("{tag}-s"));
        let r = Netns::new(&format!("{tag}-r"));
        let p = Netns::new(&format!("{tag}-p"));
        for ns in [&s, &r, &p] {
            quiet_namespace(ns);
        }
        let tap = super::short_name("tn", n);
        let (sa, rb) = (super::short_name("sa", n), super::short_name("rb", n));
        let (rc, pd) = (super::short_name("rc", n), super::short_name("pd", n));
        precreate_tap(&s, &tap, None);
        s.exec_ok(&["ip", "link", "add", &sa, "type", "veth", "peer", "name", &rb, "netns", &r.name], SECS(5));
        r.exec_ok(&["ip", "link", "add", &rc, "type", "veth", "peer", "name", &pd, "netns", &p.name], SECS(5));
        let csum_off = |ns: &Netns, i: &str| {
            offloads_off(ns, i);
            ns.exec_ok(&["ethtool", "-K", i, "tx", "off"], SECS(5));
        };
        csum_off(&s, &sa);
        csum_off(&r, &rb);
        csum_off(&r, &rc);
        csum_off(&p, &pd);
        r.exec_ok(&["sysctl", "-qw", "net.ipv4.ip_forward=1"], SECS(5));
        r.exec_ok(&["ip", "addr", "add", &format!("10.67.{n}.1/24"), "dev", &rb], SECS(5));
        r.exec_ok(&["ip", "addr", "add", &format!("10.68.{n}.1/24"), "dev", &rc], SECS(5));
        p.exec_ok(&["ip", "addr", "add", &format!("10.68.{n}.2/24"), "dev", &pd], SECS(5));
        s.exec_ok(&["ip", "link", "set", &sa, "up"], SECS(5));
        for i in [&rb, &rc] {
            r.exec_ok(&["ip", "link", "set", i, "up"], SECS(5));
        }
        p.exec_ok(&["ip", "link", "set", &pd, "up"], SECS(5));
        p.exec_ok(&["ip", "route", "add", &format!("10.67.{n}.0/24"), "via", &format!("10.68.{n}.1")], SECS(5));
        let mut net = Routed { s, r, p, tap, veth_p: pd, n, relay: None };
        let seed = (std::process::id() as u64) << 8 | n as u64;
        eprintln!("impairment relay seed {seed}");
        let script = if impaired {
            IMPAIR_RELAY.to_owned()
        } else {
            IMPAIR_RELAY.replacen("0.02, 0.005, 0.001, 0.05, 0.5, 0.01, 0.005", "0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0", 1)
        };
        let mut relay = Bg::spawn(&net.s, &[python(), "-c", &script, &net.tap, &sa, &seed.to_string()]);
        relay.wait_ready("ready", SECS(10), |e| e.contains("relay ready"));
        net.relay = Some(relay);
        net
    }
    pub fn stack_ip(&self) -> String {
        format!("10.67.{}.2", self.n)
    }
    pub fn gateway(&self) -> String {
        format!("10.67.{}.1", self.n)
    }
    pub fn peer_ip(&self) -> String {
        format!("10.68.{}.2", self.n)
    }
    /// `ustack` options for the stack's side (no host address: the TAP's
    /// kernel side belongs to the relay).
    pub fn stack_opts(&self) -> StackOpts {
        StackOpts {
            tap: self.tap.clone(),
            ip: format!("{}/24", self.stack_ip()),
            gateway: Some(self.gateway()),
            host_ip: None,
            pcap: None,
            offload: false,
        }
    }
    /// Stop the relay; what it did per direction (its stdout).
    pub fn relay_report(&mut self) -> String {
        self.relay.take().map(|r| r.stop_both("TERM", SECS(5)).0).unwrap_or_default()
    }
    /// What the namespaces say about TCP, for failure messages.
    pub fn diagnostics(&self) -> String {
        let mut s = diagnostics(&self.p, &self.veth_p);
        if let Some(r) = &self.relay {
            s.push_str(&format!("relay stderr:\n{}\n", r.stderr_now()));
        }
        s
    }
}

// ---------------------------------------------------------------- ustack ---

/// Device and addresses for `ustack up` / `ustack get`.
#[derive(Clone, Debug)]
pub struct StackOpts {
    pub tap: String,
    /// A.B.C.D/N
    pub ip: String,
    pub gateway: Option<String>,
    /// A.B.C.D/N for the kernel's side.
    pub host_ip: Option<String>,
    pub pcap: Option<String>,
    /// Open the TAP with its offloads (TSO/GRO and checksums through the
    /// virtio-net header); false passes `tap:NAME,offload=off`, for the
    /// tests that compare segment by segment with offloads off on both sides.
    pub offload: bool,
}

impl StackOpts {
    /// One TAP in one namespace: stack 10.66.N.2/24, kernel 10.66.N.1/24.
    pub fn on_link(tap: &str, n: u8) -> StackOpts {
        StackOpts {
            tap: tap.to_owned(),
            ip: format!("10.66.{n}.2/24"),
            gateway: None,
            host_ip: Some(format!("10.66.{n}.1/24")),
            pcap: None,
            offload: false,
        }
    }
    pub fn stack_ip(&self) -> &str {
        self.ip.split('/').next().unwrap()
    }
    fn device_args(&self) -> Vec<String> {
        let off = if self.offload { "" } else { ",offload=off" };
        let mut v = vec!["--device".into(), format!("tap:{}{off}", self.tap), "--ip".into(), self.ip.clone()];
        if let Some(g) = &self.gateway {
            v.extend(["--gateway".into(), g.clone()]);
        }
        if let Some(h) = &self.host_ip {
            v.extend(["--host-ip".into(), h.clone()]);
        }
        v
    }
}

/// TCP services of `ustack up`.
pub const ECHO_PORT: u16 = 7;
pub const DISCARD_PORT: u16 = 9;
pub const HTTP_PORT: u16 = 8080;

/// `ustack up` with TCP echo (7), discard (9) and HTTP on 8080 serving
/// `http_root`, started and ready: the startup line printed and, if a host
/// address was asked for, the TAP up with it.
pub fn start_tcp_stack(ns: &Netns, opts: &StackOpts, http_root: &str) -> Ustack {
    let mut argv: Vec<String> = vec![ustack_bin().into(), "up".into()];
    argv.extend(opts.device_args());
    if let Some(p) = &opts.pcap {
        argv.extend(["--pcap".into(), p.clone()]);
    }
    argv.extend([
        "--tcp-echo".into(),
        ECHO_PORT.to_string(),
        "--tcp-discard".into(),
        DISCARD_PORT.to_string(),
        "--http-root".into(),
        http_root.into(),
        "--http-port".into(),
        HTTP_PORT.to_string(),
    ]);
    let argv_ref: Vec<&str> = argv.iter().map(String::as_str).collect();
    let mut cmd = ns.command(&argv_ref);
    cmd.stdin(Stdio::null()).stdout(Stdio::piped()).stderr(Stdio::piped());
    let mut child = cmd.spawn().unwrap_or_else(|e| panic!("spawn {cmd:?}: {e}"));
    let stdout = Arc::new(Mutex::new(Vec::new()));
    let stderr = Arc::new(Mutex::new(Vec::new()));
    let readers =
        vec![drain(child.stdout.take().unwrap(), stdout.clone()), drain(child.stderr.take().unwrap(), stderr.clone())];
    // `subnet` and `udp_echo` of UpOpts are unused here (StackOpts has the addresses).
    let up = UpOpts { tap: opts.tap.clone(), subnet: 0, pcap: opts.pcap.clone(), udp_echo: vec![] };
    let mut u = Ustack { child: Some(child), stdout, stderr, readers, opts: up, ns: ns.name.clone() };
    let up_line = format!("ustack: up on tap:{}", opts.tap);
    u.wait_for("the startup line", SECS(10), |err| err.contains(&up_line));
    if let Some(host) = &opts.host_ip {
        let deadline = Instant::now() + SECS(5);
        loop {
            let out = ns.exec(&["ip", "-4", "addr", "show", "dev", &opts.tap], SECS(5));
            let text = out.stdout_str();
            if out.success() && text.contains(&format!("inet {host}")) && text.contains(",UP") {
                break;
            }
            assert!(
                Instant::now() < deadline,
                "TAP {} not up with {host}: {out}\nustack stderr:\n{}",
                opts.tap,
                u.stderr_now()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }
    // The stack opened the TAP: unless it was asked for its offloads, the
    // kernel's must be off.
    if !opts.offload {
        offloads_off(ns, &opts.tap);
    }
    u
}

/// `ustack get URLS -o out` in `ns`, bounded by `limit`.
pub fn ustack_get(ns: &Netns, opts: &StackOpts, urls: &[String], out: &str, limit: Duration) -> Output {
    let mut argv: Vec<String> = vec![ustack_bin().into(), "get".into()];
    argv.extend(urls.iter().cloned());
    argv.extend(opts.device_args());
    argv.extend(["-o".into(), out.into()]);
    let argv_ref: Vec<&str> = argv.iter().map(String::as_str).collect();
    run_bounded(ns.command(&argv_ref), None, limit)
}

/// The running stack's counters over its control socket (`ustack stats --json`).
pub fn stats_json(ns: &Netns, tap: &str) -> String {
    let dev = format!("tap:{tap}");
    let out = ns.exec(&[ustack_bin(), "stats", "--device", &dev, "--json"], SECS(5));
    format!("ustack stats --json: {}{}", out.stdout_str(), out.stderr)
}

/// Socket, qdisc and link state in `ns`, for failure messages.
pub fn diagnostics(ns: &Netns, iface: &str) -> String {
    let mut s = format!("==== diagnostics in {} ====\n", ns.name);
    for argv in [
        vec!["ss", "-tnoi"],
        vec!["tc", "-s", "qdisc", "show", "dev", iface],
        vec!["ip", "-s", "link", "show", "dev", iface],
        vec!["nstat", "-az", "TcpExt*Retrans*", "Tcp*Csum*", "TcpRetransSegs", "TcpExtTCPSACK*"],
    ] {
        let out = ns.exec(&argv, SECS(5));
        s.push_str(&format!("$ {}\n{}{}\n", argv.join(" "), out.stdout_str(), out.stderr));
    }
    s
}

/// The counters, as `Stopped::counters`, with a readable failure.
pub fn counter(c: &BTreeMap<String, u64>, name: &str) -> u64 {
    c.get(name).copied().unwrap_or(0)
}

/// Stop with SIGTERM: exit 0 within 10 s, no panic; the counters.
pub fn stop_stack(u: Ustack) -> (Stopped, BTreeMap<String, u64>) {
    let s = u.stop(SECS(10));
    assert!(
        !s.stderr.contains("panicked") && !s.stderr.contains("RUST_BACKTRACE"),
        "ustack panicked; stderr:\n{}",
        s.stderr
    );
    assert!(s.status.success(), "ustack exited with {} after SIGTERM; stderr:\n{}", s.status, s.stderr);
    let c = s.counters();
    (s, c)
}

// ------------------------------------------------------------ transfers ---

/// A TCP client in python: connects to `host:port`, sends the file `input`
/// while reading everything back into `output` in parallel, half-closes
/// after the last byte, and reads to EOF. Any 60 s stall raises. Prints
/// the byte counts "sent N received M" on stdout.
pub const ECHO_CLIENT: &str = r#"
import socket, sys, threading
host, port, inp, outp = sys.argv[1], int(sys.argv[2]), sys.argv[3], sys.argv[4]
s = socket.create_connection((host, port), timeout=30)
s.settimeout(60)
sent = [0]
err = []
def send():
    try:
        with open(inp, 'rb') as f:
            while True:
                b = f.read(65536)
                if not b:
                    break
                s.sendall(b)
                sent[0] += len(b)
        s.shutdown(socket.SHUT_WR)
    except Exception as e:
        err.append(repr(e))
t = threading.Thread(target=send, daemon=True)
t.start()
n = 0
try:
    with open(outp, 'wb') as o:
        while True:
            b = s.recv(262144)
            if not b:
                break
            o.write(b)
            n += len(b)
finally:
    print("sent %d received %d" % (sent[0], n), flush=True)
t.join(5)
s.close()
if err:
    print("send failed: " + err[0], file=sys.stderr)
    sys.exit(1)
"#;

/// Run `ECHO_CLIENT` in `ns` against `host:port`, bounded.
pub fn echo_client(ns: &Netns, host: &str, port: u16, input: &str, output: &str, limit: Duration) -> Output {
    let port_s = port.to_string();
    ns.exec(&[python(), "-c", ECHO_CLIENT, host, &port_s, input, output], limit)
}

/// `curl` GET of `url` into `out` in `ns`, bounded; fails on HTTP errors.
pub fn curl_get(ns: &Netns, url: &str, out: &str, limit: Duration) -> Output {
    let max = limit.as_secs().saturating_sub(5).max(1).to_string();
    ns.exec(
        &["curl", "-sS", "--fail", "--max-time", &max, "-o", out, "-w", "%{http_code} %{size_download}\n", url],
        limit,
    )
}

// ------------------------------------------------------------ pcap: tshark ---

fn tshark(args: &[&str], limit: Duration) -> String {
    let mut c = Command::new("tshark");
    c.args(args);
    let out = run_bounded(c, None, limit);
    assert!(out.success(), "tshark {args:?}: {out}");
    out.stdout_str()
}

/// One SYN or SYN-ACK: options and values as tshark reads them.
#[derive(Debug)]
pub struct SynInfo {
    pub frame: u64,
    pub src: String,
    pub ack: bool,
    pub kinds: Vec<u8>,
    pub mss: Option<u32>,
    pub wscale: Option<u32>,
}

/// Every SYN and SYN-ACK in `pcap`.
pub fn syns(pcap: &str) -> Vec<SynInfo> {
    let text = tshark(
        &[
            "-r",
            pcap,
            "-n",
            "-Y",
            "tcp.flags.syn == 1",
            "-T",
            "fields",
            "-e",
            "frame.number",
            "-e",
            "ip.src",
            "-e",
            "tcp.flags.ack",
            "-e",
            "tcp.option_kind",
            "-e",
            "tcp.options.mss_val",
            "-e",
            "tcp.options.wscale.shift",
        ],
        SECS(120),
    );
    text.lines()
        .map(|l| {
            let f: Vec<&str> = l.split('\t').collect();
            let get = |i: usize| f.get(i).copied().unwrap_or("");
            SynInfo {
                frame: get(0).parse().unwrap_or(0),
                src: get(1).to_owned(),
                ack: matches!(get(2), "1" | "True"),
                kinds: get(3).split(',').filter_map(|k| k.parse().ok()).collect(),
                mss: get(4).parse().ok(),
                wscale: get(5).parse().ok(),
            }
        })
        .collect()
}

/// The TCP segments of a capture, in file order, as the SACK analyses need
/// them (relative sequence numbers, per tshark).
#[derive(Debug, Clone)]
pub struct Seg {
    pub frame: u64,
    pub time: f64,
    pub src: String,
    pub stream: u32,
    pub seq: u64,
    pub len: u64,
    pub ack: Option<u64>,
    pub sack: Vec<(u64, u64)>,
    /// tshark's `tcp.analysis.retransmission` / fast / spurious flags.
    pub retrans: bool,
    /// Some checksum (IP or TCP) is bad: netem corrupted it, the stack dropped it.
    pub bad_csum: bool,
    pub syn: bool,
    pub rst: bool,
    pub eth_dst: String,
    pub has_ts: bool,
    pub tsval: Option<u64>,
}

pub fn segments(pcap: &str) -> Vec<Seg> {
    let fields = [
        "frame.number",
        "frame.time_relative",
        "ip.src",
        "tcp.stream",
        "tcp.seq",
        "tcp.len",
        "tcp.ack",
        "tcp.flags.ack",
        "tcp.options.sack_le",
        "tcp.options.sack_re",
        "tcp.analysis.retransmission",
        "tcp.analysis.fast_retransmission",
        "tcp.analysis.spurious_retransmission",
        "ip.checksum.status",
        "tcp.checksum.status",
        "tcp.flags.syn",
        "tcp.flags.reset",
        "eth.dst",
        "tcp.options.timestamp.tsval",
    ];
    let mut args = vec![
        "-r",
        pcap,
        "-n",
        "-o",
        "ip.check_checksum:TRUE",
        "-o",
        "tcp.check_checksum:TRUE",
        "-o",
        "tcp.relative_sequence_numbers:TRUE",
        "-o",
        "tcp.analyze_sequence_numbers:TRUE",
        "-Y",
        "tcp",
        "-T",
        "fields",
        "-E",
        "aggregator=,",
    ];
    for f in &fields {
        args.push("-e");
        args.push(f);
    }
    let text = tshark(&args, SECS(300));
    let nums = |s: &str| -> Vec<u64> { s.split(',').filter_map(|x| x.trim().parse().ok()).collect() };
    text.lines()
        .map(|l| {
            let f: Vec<&str> = l.split('\t').collect();
            let get = |i: usize| f.get(i).copied().unwrap_or("");
            let le = nums(get(8));
            let re = nums(get(9));
            Seg {
                frame: get(0).parse().unwrap_or(0),
                time: get(1).parse().unwrap_or(0.0),
                src: get(2).to_owned(),
                stream: get(3).parse().unwrap_or(0),
                seq: get(4).parse().unwrap_or(0),
                len: get(5).parse().unwrap_or(0),
                ack: if matches!(get(7), "1" | "True") { get(6).parse().ok() } else { None },
                sack: le.into_iter().zip(re).collect(),
                retrans: !get(10).is_empty() || !get(11).is_empty() || !get(12).is_empty(),
                // Wireshark's checksum status: 0 bad, 1 good, 2 unverified.
                bad_csum: get(13).split(',').any(|s| s == "0") || get(14).split(',').any(|s| s == "0"),
                syn: matches!(get(15), "1" | "True"),
                rst: matches!(get(16), "1" | "True"),
                eth_dst: get(17).to_owned(),
                has_ts: !get(18).is_empty(),
                tsval: get(18).parse().ok(),
            }
        })
        .collect()
}

/// What the "retransmit only the holes" check found for one sender.
#[derive(Debug, Default)]
pub struct HoleReport {
    pub data_segments: u64,
    pub retransmissions: u64,
    /// Retransmissions taken for RTO ones (scoreboard cleared before them).
    pub rto_retransmissions: u64,
    /// Peer ACKs that carried SACK blocks (accepted ones only).
    pub peer_sack_acks: u64,
    /// Peer segments left out because PAWS may have discarded them.
    pub paws_ignored: u64,
    /// Peer segments left out as unacceptable (old: below RCV.NXT).
    pub unacceptable_ignored: u64,
    /// Retransmissions entirely inside data the peer had SACKed (violations).
    pub fully_sacked: Vec<String>,
    /// The same, but during recovery from an RTO (until everything sent
    /// before the timer fired is ACKed), inside ranges the peer SACKed after
    /// the RTO. RFC 6675 §5.1: the sender "SHOULD utilize all SACK
    /// information made available during the slow start phase of loss
    /// recovery following an RTO"; a SHOULD, reported separately.
    pub after_rto_sacked: Vec<String>,
    /// Retransmissions partly inside SACKed data (reported, not failed).
    pub partly_sacked: Vec<String>,
    /// Retransmissions of data already cumulatively ACKed.
    pub below_ack: Vec<String>,
}

/// An RTO retransmission is told apart from a SACK/dupACK-driven one by the
/// time gap: the stack's RTO is at least 200 ms (TcpConfig::min_rto) after
/// the last ACK that advanced SND.UNA (RFC 6298 (5.3) restarts the timer
/// there), while fast retransmit of SND.UNA follows the third duplicate ACK,
/// within about one RTT of that advance. So a retransmission at SND.UNA
/// at least `RTO_GAP` after the last cumulative-ACK advance is taken for an
/// RTO one. (Duplicate ACKs may keep arriving until the timer fires, so the
/// gap since the peer's last frame says nothing.)
pub const RTO_GAP: f64 = 0.150;

/// Replays `segs` as `sender` sees them: the peer's cumulative ACK and SACK
/// blocks build a scoreboard (only frames that reached the sender intact:
/// good checksums, addressed to its MAC `sender_mac`, and not older by
/// timestamp than one seen before, which PAWS may discard, nor old by
/// sequence number, which RFC 9293 drops unprocessed), and each of the
/// sender's data segments that tshark marks as a retransmission is checked
/// against it. RFC 6675 §5.1 / RFC 2018 §8: after a retransmission timeout
/// the sender SHOULD clear its SACK scoreboard and may resend SACKed data,
/// so the scoreboard is cleared at each RTO retransmission (see `RTO_GAP`)
/// and rebuilt from later SACKs.
///
/// `lag`: a peer ACK counts only for retransmissions at least `lag` seconds
/// after it. 0 for the stack's own pcap (it records a frame when it reads
/// it and handles it before it sends anything more); a kernel sender seen
/// by tcpdump may handle an ACK well after the capture saw it (socket
/// backlog), so checking Linux needs a few milliseconds.
pub fn check_retransmissions(segs: &[Seg], sender: &str, sender_mac: &str, lag: f64) -> HoleReport {
    let mut flows: BTreeMap<u32, Flow> = BTreeMap::new();
    let mut r = HoleReport::default();
    let mut pending: std::collections::VecDeque<&Seg> = std::collections::VecDeque::new();
    for s in segs {
        if s.src != sender {
            // Only what reached the sender intact counts.
            if !s.bad_csum && (sender_mac.is_empty() || s.eth_dst == sender_mac) && !s.rst {
                pending.push_back(s);
            }
            continue;
        }
        while pending.front().is_some_and(|p| p.time + lag <= s.time) {
            let p = pending.pop_front().unwrap();
            flows.entry(p.stream).or_default().peer_ack(p, &mut r);
        }
        flows.entry(s.stream).or_default().sender_segment(s, &mut r);
    }
    r
}

/// One connection's scoreboard as the sender builds it.
#[derive(Default)]
struct Flow {
    una: u64,
    /// SACKed ranges above `una`, sorted and merged.
    board: Vec<(u64, u64)>,
    last_advance: f64,
    last_peer: f64,
    ts_recent: Option<u64>,
    /// Highest sequence number sent so far (end of the highest segment).
    snd_max: u64,
    /// While recovering from an RTO: SND.MAX when the timer fired.
    rto_recovery_point: Option<u64>,
    /// The sender's RCV.NXT: the highest ACK it sent.
    rcv_nxt: u64,
    /// The sender's TSval on its first segment after SND.UNA last moved:
    /// its own clock at about that moment. (Capture times of frames the
    /// stack sends from a timer are stale: nothing calls
    /// `PcapDevice::set_now`, so they carry the time of the last frame
    /// received.)
    advance_ts: Option<u64>,
    advance_pending: bool,
}

impl Flow {
    fn peer_ack(&mut self, s: &Seg, r: &mut HoleReport) {
        // PAWS (RFC 7323 §5): a segment whose TSval is older than the newest
        // one seen may be discarded with its ACK and SACK blocks (reordering
        // makes such ACKs); count nothing from it.
        if let Some(ts) = s.tsval {
            if self.ts_recent.is_some_and(|recent| ts < recent) {
                r.paws_ignored += 1;
                return;
            }
            self.ts_recent = Some(ts);
        }
        // RFC 9293 §3.10.7.4: an unacceptable segment (all of its data, or
        // a bare ACK's sequence number, below RCV.NXT: a duplicate or
        // reordered old one) is dropped, ACK field and all.
        if (s.len > 0 && s.seq + s.len <= self.rcv_nxt) || (s.len == 0 && s.seq < self.rcv_nxt) {
            r.unacceptable_ignored += 1;
            return;
        }
        self.last_peer = s.time;
        let Some(ack) = s.ack else { return };
        if ack > self.una {
            self.una = ack;
            self.last_advance = s.time;
            self.advance_pending = true;
        }
        if !s.sack.is_empty() {
            r.peer_sack_acks += 1;
        }
        // D-SACKs (below the cumulative ACK) say nothing about holes.
        let una = self.una;
        self.board.extend(s.sack.iter().copied().filter(|&(le, re)| re > le && le >= una));
        self.board.retain(|&(_, re)| re > una);
        self.board.sort_unstable();
        let mut merged: Vec<(u64, u64)> = Vec::new();
        for &(le, re) in &self.board {
            match merged.last_mut() {
                Some(last) if le <= last.1 => last.1 = last.1.max(re),
                _ => merged.push((le.max(una), re)),
            }
        }
        self.board = merged;
    }

    fn sender_segment(&mut self, s: &Seg, r: &mut HoleReport) {
        if let Some(ack) = s.ack {
            self.rcv_nxt = self.rcv_nxt.max(ack);
        }
        if self.advance_pending {
            self.advance_pending = false;
            self.advance_ts = s.tsval;
        }
        if s.len == 0 || s.syn {
            return;
        }
        r.data_segments += 1;
        // tshark's flags, or data at or below what was already sent (tshark
        // leaves some unmarked, e.g. an RTO retransmission of SND.UNA).
        let resent = s.retrans || s.seq < self.snd_max;
        self.snd_max = self.snd_max.max(s.seq + s.len);
        if !resent {
            return;
        }
        r.retransmissions += 1;
        let (start, end) = (s.seq, s.seq + s.len);
        let desc = format!(
            "frame {} t={:.6} stream {} seq {start}..{end} una {} sacked {:?}",
            s.frame,
            s.time,
            s.stream,
            self.una,
            &self.board[..self.board.len().min(12)]
        );
        // A second retransmission of SND.UNA with no ACK advance in between
        // is not taken for the timer's: RACK (RFC 8985 §6) resends a lost
        // retransmission within about an RTT, so only the gap tells.
        // The gap on the sender's own clock (its TSval, ms) when it sends
        // timestamps: `ustack up --pcap` stamps a frame sent from a timer
        // with the time of the last frame received (see `Flow::advance_ts`).
        let gap = match (s.tsval, self.advance_ts) {
            (Some(now), Some(then)) => now.wrapping_sub(then) as u32 as f64 / 1000.0,
            _ => s.time - self.last_advance,
        };
        if start == self.una && gap >= RTO_GAP {
            r.rto_retransmissions += 1;
            self.board.clear();
            self.rto_recovery_point = Some(self.snd_max);
            return;
        }
        // RTO recovery lasts until everything sent before the timer fired is
        // cumulatively ACKed.
        if self.rto_recovery_point.is_some_and(|p| self.una >= p) {
            self.rto_recovery_point = None;
        }
        if end <= self.una {
            r.below_ack.push(desc);
            return;
        }
        let covered: u64 = self.board.iter().map(|&(le, re)| re.min(end).saturating_sub(le.max(start))).sum();
        if covered == end - start && self.rto_recovery_point.is_some() {
            r.after_rto_sacked.push(desc);
        } else if covered == end - start {
            r.fully_sacked.push(desc);
        } else if covered > 0 {
            r.partly_sacked.push(desc);
        }
    }
}

/// The pid of the `ustack up` serving `tap` (for its RSS): `Bg` does not
/// expose its child, so find it by its command line among this namespace's
/// processes (`ip netns pids`).
pub fn stack_pid(ns: &Netns, tap: &str) -> u32 {
    let out = Command::new("ip").args(["netns", "pids", &ns.name]).output().expect("ip netns pids");
    let want = format!("tap:{tap}");
    for pid in String::from_utf8_lossy(&out.stdout).split_whitespace() {
        let Ok(cmdline) = std::fs::read(format!("/proc/{pid}/cmdline")) else { continue };
        let args: Vec<&[u8]> = cmdline.split(|&b| b == 0).collect();
        if args.contains(&b"up".as_slice()) && args.contains(&want.as_bytes()) {
            return pid.parse().unwrap_or(0);
        }
    }
    0
}
