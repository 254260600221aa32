//! `ustack switch` on vhost-user ports against real frontends.
//!
//! * DPDK's `dpdk-testpmd` as the guest-side generator (its `virtio_user`
//!   driver on the switch's socket, no hugepages, no NIC): bounded bursts
//!   of every classic frame size go to `ustack switch --reflect` and every
//!   one comes back, counted by testpmd's port statistics and by the
//!   switch's own counters (`ustack stats --json`).
//!
//! Needs root and `dpdk-testpmd` (package `dpdk-dev`, see
//! scripts/packages.d/vhost.txt); skips with a printed reason otherwise.
//! Every process is killed by a guard, every wait is bounded, and each test
//! has its own socket paths and DPDK file prefix.

#[macro_use]
mod support;

use std::io::{Read, Write};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

const SIZES: [usize; 6] = [64, 128, 256, 512, 1024, 1518];
/// `start tx_first BURSTS` sends BURSTS bursts of 32 frames; ROUNDS of them
/// per size. 128 frames at a time stay well inside the 256-buffer rings.
const BURSTS: usize = 4;
const ROUNDS: usize = 4;

/// A child process killed (and reaped) on drop, its output collected.
struct Proc {
    what: String,
    child: Child,
    /// Everything it printed, both streams as they came.
    out: Arc<Mutex<String>>,
    /// Its standard output alone.
    stdout: Arc<Mutex<String>>,
    readers: Vec<std::thread::JoinHandle<()>>,
}

impl Proc {
    fn spawn(what: &str, cmd: &mut Command) -> Proc {
        cmd.stdout(Stdio::piped()).stderr(Stdio::piped());
        let mut child = cmd.spawn().unwrap_or_else(|e| panic!("spawn {what}: {e}"));
        let out = Arc::new(Mutex::new(String::new()));
        let stdout = Arc::new(Mutex::new(String::new()));
        let mut readers = Vec::new();
        for (pipe, only) in [
            (Box::new(child.stdout.take().unwrap()) as Box<dyn std::io::Read + Send>, Some(Arc::clone(&stdout))),
            (Box::new(child.stderr.take().unwrap()), None),
        ] {
            let out = Arc::clone(&out);
            // Raw reads, not lines: testpmd's prompt ends no line.
            readers.push(std::thread::spawn(move || {
                let mut pipe = pipe;
                let mut buf = [0u8; 4096];
                while let Ok(n @ 1..) = pipe.read(&mut buf) {
                    let text = String::from_utf8_lossy(&buf[..n]);
                    out.lock().unwrap().push_str(&text);
                    if let Some(o) = &only {
                        o.lock().unwrap().push_str(&text);
                    }
                }
            }));
        }
        Proc { what: what.into(), child, out, stdout, readers }
    }

    fn output(&self) -> String {
        self.out.lock().unwrap().clone()
    }

    fn assert_running(&mut self) {
        if let Ok(Some(st)) = self.child.try_wait() {
            panic!("{} exited early ({st}):\n{}", self.what, self.output());
        }
    }

    /// Wait until `pred` holds on the output so far, or panic after `limit`.
    fn wait_for(&mut self, limit: Duration, what: &str, pred: impl Fn(&str) -> bool) {
        let both = Arc::clone(&self.out);
        self.wait_on(&both, limit, what, pred)
    }

    /// As `wait_for`, on standard output alone: a line on standard error can
    /// land in the middle of a prompt in the merged text (testpmd's
    /// "t" + "Error during enabling promiscuous mode" + "estpmd> ").
    fn wait_for_stdout(&mut self, limit: Duration, what: &str, pred: impl Fn(&str) -> bool) {
        let stdout = Arc::clone(&self.stdout);
        self.wait_on(&stdout, limit, what, pred)
    }

    fn wait_on(&mut self, text: &Mutex<String>, limit: Duration, what: &str, pred: impl Fn(&str) -> bool) {
        let deadline = Instant::now() + limit;
        while !pred(&text.lock().unwrap()) {
            self.assert_running();
            assert!(Instant::now() < deadline, "{}: no {what} within {limit:?}:\n{}", self.what, self.output());
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A path under the temp dir unique to this test, removed on drop.
struct Tmp(std::path::PathBuf);

impl Tmp {
    fn new(tag: &str) -> Tmp {
        let p = std::env::temp_dir().join(format!("ustack-vu-{tag}-{}", std::process::id()));
        let _ = std::fs::remove_file(&p);
        Tmp(p)
    }
    fn s(&self) -> &str {
        self.0.to_str().unwrap()
    }
}

impl Drop for Tmp {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

fn switch(ports: &[String], control: &Tmp, extra: &[&str]) -> Proc {
    let mut cmd = Command::new(support::ustack_bin());
    cmd.arg("switch").args(["--control", control.s()]).args(extra);
    for p in ports {
        cmd.args(["--port", p]);
    }
    let mut p = Proc::spawn("ustack switch", &mut cmd);
    p.wait_for(Duration::from_secs(20), "start banner", |o| o.contains("ustack: switch"));
    p
}

/// The switch's snapshot (`ustack stats --json`).
fn switch_stats(control: &Tmp) -> serde_json::Value {
    let out = Command::new(support::ustack_bin())
        .args(["stats", "--json", "--control", control.s()])
        .output()
        .expect("run ustack stats");
    assert!(out.status.success(), "ustack stats: {}", String::from_utf8_lossy(&out.stderr));
    serde_json::from_slice(&out.stdout).expect("stats JSON")
}

fn port_counter(snap: &serde_json::Value, port: usize, key: &str) -> u64 {
    snap["ports"][port][key].as_u64().unwrap_or_else(|| panic!("no {key} in {snap}"))
}

/// dpdk-testpmd, interactive, as a virtio-user guest on `sock`.
struct Testpmd {
    proc: Proc,
    stdin: ChildStdin,
    blocks: usize,
}

impl Testpmd {
    fn start(sock: &str, prefix: &str, mac: &str, queues: usize) -> Testpmd {
        let vdev = format!("net_virtio_user0,mac={mac},path={sock},queues={queues}");
        let (rxq, txq) = (format!("--rxq={queues}"), format!("--txq={queues}"));
        // testpmd prints with stdio: unbuffered, so each answer arrives when asked.
        let mut cmd = Command::new("stdbuf");
        cmd.args(["-o0", "dpdk-testpmd"]).args(["-l", "0-1", "--no-huge", "-m", "512", "--no-pci", "--file-prefix", prefix, "--vdev", &vdev])
            .args(["--", "--no-numa", "--total-num-mbufs=16384", "--forward-mode=rxonly", &rxq, &txq, "-i"])
            .stdin(Stdio::piped());
        let mut proc = Proc::spawn("dpdk-testpmd", &mut cmd);
        let stdin = proc.child.stdin.take().unwrap();
        proc.wait_for_stdout(Duration::from_secs(60), "prompt", |o| o.contains("testpmd>"));
        Testpmd { proc, stdin, blocks: 0 }
    }

    fn cmd(&mut self, line: &str) {
        self.proc.assert_running();
        writeln!(self.stdin, "{line}").unwrap_or_else(|e| panic!("testpmd stdin: {e}\n{}", self.proc.output()));
    }

    /// Port 0's cumulative (RX-packets, TX-packets, RX-bytes, TX-bytes).
    fn port_stats(&mut self) -> (u64, u64, u64, u64) {
        self.cmd("show port stats all");
        self.blocks += 1;
        let n = self.blocks;
        let marker = "NIC statistics for port 0";
        self.proc.wait_for_stdout(Duration::from_secs(20), "port statistics", |o| {
            o.split(marker).nth(n).is_some_and(|b| b.contains("Tx-bps"))
        });
        let out = self.proc.stdout.lock().unwrap().clone();
        let block = out.split(marker).nth(n).unwrap().to_owned();
        let field = |name: &str| -> u64 {
            let at = block.find(name).unwrap_or_else(|| panic!("no {name} in {block}"));
            block[at + name.len()..].split_whitespace().next().unwrap().parse().unwrap()
        };
        (field("RX-packets:"), field("TX-packets:"), field("RX-bytes:"), field("TX-bytes:"))
    }
}

#[test]
fn testpmd_frames_of_every_size_come_back_from_the_reflector() {
    skip_unless!("dpdk-testpmd");
    reflect_every_size(1, 1, &SIZES);
}

#[test]
fn testpmd_on_two_queues_is_reflected_by_two_workers() {
    skip_unless!("dpdk-testpmd");
    reflect_every_size(2, 2, &[64, 1518]);
}

/// `--cores` with one CPU for two queue pairs: one worker serves both.
#[test]
fn testpmd_on_two_queues_is_reflected_by_one_worker_on_one_core() {
    skip_unless!("dpdk-testpmd");
    reflect_every_size(2, 1, &[64, 1518]);
}

/// `--cores` pins worker k to the k-th CPU given (threads `switch-wK`): one
/// worker per CPU, serving the queue pairs in turn when there are fewer
/// CPUs than pairs; and a CPU this process may not use is refused in one
/// line before anything opens.
#[test]
fn switch_workers_run_on_the_cores_given() {
    let allowed = |status: &str| {
        status.lines().find_map(|l| l.strip_prefix("Cpus_allowed_list:")).map(|v| v.trim().to_string()).unwrap()
    };
    // The last CPU we may use: not the default placement where there are two.
    let ours = allowed(&std::fs::read_to_string("/proc/self/status").unwrap());
    let cpu = ours.rsplit([',', '-']).next().unwrap().to_string();
    let (sock, control) = (Tmp::new("cores.sock"), Tmp::new("cores.ctl"));
    for (cores, want) in [(cpu.clone(), 1), (format!("{cpu},{cpu}"), 2)] {
        let sw = switch(&[format!("vhost-user:{}", sock.s())], &control, &["--queues", "2", "--cores", &cores]);
        let pid = sw.child.id();
        let mut workers = 0;
        for task in std::fs::read_dir(format!("/proc/{pid}/task")).unwrap() {
            let task = task.unwrap().path();
            let comm = std::fs::read_to_string(task.join("comm")).unwrap_or_default();
            if comm.trim().starts_with("switch-w") {
                workers += 1;
                assert_eq!(allowed(&std::fs::read_to_string(task.join("status")).unwrap()), cpu, "{}", comm.trim());
            }
        }
        assert_eq!(workers, want, "--queues 2 --cores {cores}: one worker per CPU given");
        drop(sw);
    }

    let out = Command::new(support::ustack_bin())
        .args(["switch", "--port", &format!("vhost-user:{}", sock.s()), "--cores", "4095"])
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert_eq!(err.trim().lines().count(), 1, "{err}");
    assert!(err.contains("--cores 4095"), "{err}");
}

/// testpmd with `queues` queue pairs against `ustack switch --reflect
/// --queues N` on `workers` threads (one per CPU of `--cores`, the last CPU
/// we may use given that many times): every frame of every size in `sizes`
/// comes back, counted on both sides, and each worker took its share.
fn reflect_every_size(queues: usize, workers: usize, sizes: &[usize]) {
    let tag = format!("reflect{queues}w{workers}");
    let (sock, control) = (Tmp::new(&format!("{tag}.sock")), Tmp::new(&format!("{tag}.ctl")));
    let q = queues.to_string();
    let mut args = vec!["--reflect".to_string(), "--queues".into(), q];
    if workers < queues {
        let status = std::fs::read_to_string("/proc/self/status").unwrap();
        let ours = status.lines().find_map(|l| l.strip_prefix("Cpus_allowed_list:")).unwrap().trim();
        let cpu = ours.rsplit([',', '-']).next().unwrap();
        args.extend(["--cores".into(), vec![cpu; workers].join(",")]);
    }
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let mut sw = switch(&[format!("vhost-user:{}", sock.s())], &control, &args);
    let prefix = format!("ustack-vu-{tag}-{}", std::process::id());
    let mut pmd = Testpmd::start(sock.s(), &prefix, "02:00:00:00:00:01", queues);
    // txonly's bursts go out on every queue: BURSTS × 32 frames per queue.
    let per_round = (BURSTS * 32 * queues) as u64;

    let (mut rx0, mut tx0, mut rxb0, mut txb0) = pmd.port_stats();
    assert_eq!((rx0, tx0), (0, 0), "testpmd counted frames before the test");
    let snap = switch_stats(&control);
    let (mut sw_rx0, mut sw_tx0) = (port_counter(&snap, 0, "rx_frames"), port_counter(&snap, 0, "tx_frames"));
    for &size in sizes {
        pmd.cmd(&format!("set txpkts {size}"));
        for _ in 0..ROUNDS {
            pmd.cmd(&format!("start tx_first {BURSTS}"));
            std::thread::sleep(Duration::from_millis(200));
            pmd.cmd("stop");
        }
        // Receive until every frame sent came back (bounded).
        let deadline = Instant::now() + Duration::from_secs(20);
        let (rx, tx, rxb, txb) = loop {
            let s = pmd.port_stats();
            if s.0 - rx0 >= s.1 - tx0 || Instant::now() >= deadline {
                break s;
            }
            pmd.cmd("start");
            std::thread::sleep(Duration::from_millis(200));
            pmd.cmd("stop");
        };
        let sent = tx - tx0;
        assert_eq!(sent, ROUNDS as u64 * per_round, "{size} B: testpmd sent {sent} frames");
        assert_eq!(rx - rx0, sent, "{size} B: {sent} frames sent, {} came back", rx - rx0);
        assert_eq!(txb - txb0, sent * size as u64, "{size} B: bytes sent");
        assert_eq!(rxb - rxb0, txb - txb0, "{size} B: bytes back");
        // The switch's workers report about every 100 ms.
        let deadline = Instant::now() + Duration::from_secs(5);
        let snap = loop {
            let snap = switch_stats(&control);
            if port_counter(&snap, 0, "tx_frames") - sw_tx0 >= sent || Instant::now() >= deadline {
                break snap;
            }
            std::thread::sleep(Duration::from_millis(50));
        };
        let (sw_rx, sw_tx) = (port_counter(&snap, 0, "rx_frames"), port_counter(&snap, 0, "tx_frames"));
        assert_eq!(sw_rx - sw_rx0, sent, "{size} B: the switch's rx_frames");
        assert_eq!(sw_tx - sw_tx0, sent, "{size} B: the switch's tx_frames");
        assert_eq!(port_counter(&snap, 0, "tx_dropped"), 0, "{snap}");
        (rx0, tx0, rxb0, txb0, sw_rx0, sw_tx0) = (rx, tx, rxb, txb, sw_rx, sw_tx);
    }
    let snap = switch_stats(&control);
    let dev = &snap["ports"][0]["device_counters"];
    assert_eq!(dev["connected"], 1, "{snap}");
    assert_eq!(dev["queue_pairs_active"], queues as u64, "{snap}");
    assert_eq!(dev["rx_frames"], sizes.len() as u64 * ROUNDS as u64 * per_round, "{snap}");
    for bad in ["rx_bad_address", "rx_bad_chain", "rx_bad_direction", "rx_too_long", "tx_no_buffers", "refused"] {
        assert_eq!(dev[bad], 0, "{bad}: {snap}");
    }
    let threads = snap["workers"].as_array().expect("workers");
    assert_eq!(threads.len(), workers, "{snap}");
    for (k, w) in threads.iter().enumerate() {
        let n = w["rx_frames"].as_u64().unwrap();
        let pairs = (queues / workers) as u64;
        assert_eq!(n, pairs * sizes.len() as u64 * ROUNDS as u64 * (BURSTS * 32) as u64, "worker {k} took its queues' frames: {snap}");
    }
    pmd.cmd("quit");
    sw.assert_running();
}

/// A minimal vhost-user frontend written here, byte by byte, so a test can
/// send what no real driver would: one queue pair of 16-entry split rings
/// in a memfd it shares, VERSION_1 only, no protocol features.
mod frontend {
    use std::io::{Read, Write};
    use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
    use std::os::unix::net::UnixStream;
    use std::sync::atomic::{fence, Ordering};

    pub const RING: u16 = 16;
    /// Guest physical address of the shared memory.
    pub const GPA: u64 = 0x10_0000;
    pub const MEM: usize = 1 << 20;
    /// Ring layout in the memory (offsets): queue 0 (receive), queue 1 (transmit).
    const DESC: [usize; 2] = [0x0000, 0x4000];
    const AVAIL: [usize; 2] = [0x1000, 0x5000];
    const USED: [usize; 2] = [0x2000, 0x6000];
    /// Receive buffers (2 KiB each) and transmit buffers.
    pub const RX_BUFS: usize = 0x1_0000;
    pub const TX_BUFS: usize = 0x2_0000;
    pub const F_NEXT: u16 = 1;
    pub const F_WRITE: u16 = 2;
    const VERSION_1: u64 = 1 << 32;

    pub struct Frontend {
        sock: UnixStream,
        memfd: OwnedFd,
        mem: *mut u8,
        kick: OwnedFd,
        _call: [OwnedFd; 2],
        /// Next avail index per queue.
        avail: [u16; 2],
        /// Next descriptor to hand out on the transmit queue.
        next_desc: u16,
    }

    fn eventfd() -> OwnedFd {
        // SAFETY: creates a new descriptor we own.
        unsafe { OwnedFd::from_raw_fd(libc::eventfd(0, libc::EFD_CLOEXEC | libc::EFD_NONBLOCK)) }
    }

    impl Frontend {
        pub fn connect(path: &str) -> Frontend {
            let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
            let sock = loop {
                match UnixStream::connect(path) {
                    Ok(s) => break s,
                    Err(e) if std::time::Instant::now() < deadline => {
                        let _ = e;
                        std::thread::sleep(std::time::Duration::from_millis(50));
                    }
                    Err(e) => panic!("connect {path}: {e}"),
                }
            };
            sock.set_read_timeout(Some(std::time::Duration::from_secs(10))).unwrap();
            // SAFETY: memfd_create, ftruncate and mmap on a descriptor we own.
            let (memfd, mem) = unsafe {
                let fd = libc::memfd_create(c"ustack-test-vhost".as_ptr(), libc::MFD_CLOEXEC);
                assert!(fd >= 0, "memfd_create");
                assert_eq!(libc::ftruncate(fd, MEM as i64), 0, "ftruncate");
                let p = libc::mmap(std::ptr::null_mut(), MEM, libc::PROT_READ | libc::PROT_WRITE, libc::MAP_SHARED, fd, 0);
                assert_ne!(p, libc::MAP_FAILED, "mmap");
                (OwnedFd::from_raw_fd(fd), p as *mut u8)
            };
            Frontend { sock, memfd, mem, kick: eventfd(), _call: [eventfd(), eventfd()], avail: [0; 2], next_desc: 0 }
        }

        fn send(&mut self, req: u32, body: &[u8], fd: Option<RawFd>) {
            let mut msg = Vec::with_capacity(12 + body.len());
            msg.extend_from_slice(&req.to_le_bytes());
            msg.extend_from_slice(&1u32.to_le_bytes()); // version 1
            msg.extend_from_slice(&(body.len() as u32).to_le_bytes());
            msg.extend_from_slice(body);
            let Some(fd) = fd else {
                self.sock.write_all(&msg).expect("send vhost-user message");
                return;
            };
            // One message with the descriptor attached (SCM_RIGHTS).
            let mut iov = libc::iovec { iov_base: msg.as_mut_ptr().cast(), iov_len: msg.len() };
            let mut cbuf = [0u64; 8];
            // SAFETY: a msghdr over our buffers; CMSG_* compute within `cbuf`.
            unsafe {
                let space = libc::CMSG_SPACE(std::mem::size_of::<RawFd>() as u32) as usize;
                let mut mh: libc::msghdr = std::mem::zeroed();
                mh.msg_iov = &mut iov;
                mh.msg_iovlen = 1;
                mh.msg_control = cbuf.as_mut_ptr().cast();
                mh.msg_controllen = space;
                let c = libc::CMSG_FIRSTHDR(&mh);
                (*c).cmsg_level = libc::SOL_SOCKET;
                (*c).cmsg_type = libc::SCM_RIGHTS;
                (*c).cmsg_len = libc::CMSG_LEN(std::mem::size_of::<RawFd>() as u32) as usize;
                std::ptr::write_unaligned(libc::CMSG_DATA(c).cast::<RawFd>(), fd);
                let n = libc::sendmsg(self.sock.as_raw_fd(), &mh, 0);
                assert_eq!(n, msg.len() as isize, "sendmsg: {}", std::io::Error::last_os_error());
            }
        }

        fn get_u64(&mut self, req: u32) -> u64 {
            self.send(req, &[], None);
            let mut reply = [0u8; 20];
            self.sock.read_exact(&mut reply).expect("vhost-user reply");
            u64::from_le_bytes(reply[12..20].try_into().unwrap())
        }

        fn vring_state(&mut self, req: u32, index: u32, num: u32) {
            let mut b = index.to_le_bytes().to_vec();
            b.extend_from_slice(&num.to_le_bytes());
            self.send(req, &b, None);
        }

        /// The memory table message for one region of `size` bytes.
        pub fn set_mem_table(&mut self, size: u64) {
            let mut b = Vec::new();
            b.extend_from_slice(&1u32.to_le_bytes());
            b.extend_from_slice(&0u32.to_le_bytes());
            for v in [GPA, size, self.mem as u64, 0] {
                b.extend_from_slice(&v.to_le_bytes());
            }
            let fd = self.memfd.as_raw_fd();
            self.send(5, &b, Some(fd));
        }

        /// Negotiate, share the memory, and start both rings with every
        /// receive buffer posted.
        pub fn setup(&mut self) {
            let offered = self.get_u64(1);
            assert!(offered & VERSION_1 != 0, "backend offers no VERSION_1: {offered:#x}");
            self.send(2, &VERSION_1.to_le_bytes(), None);
            self.send(3, &[], None);
            self.set_mem_table(MEM as u64);
            for q in 0..2usize {
                self.vring_state(8, q as u32, u32::from(RING));
                let mut b = (q as u32).to_le_bytes().to_vec();
                b.extend_from_slice(&0u32.to_le_bytes());
                for off in [DESC[q], USED[q], AVAIL[q]] {
                    b.extend_from_slice(&(self.mem as u64 + off as u64).to_le_bytes());
                }
                b.extend_from_slice(&0u64.to_le_bytes());
                self.send(9, &b, None);
                self.vring_state(10, q as u32, 0);
                let call = self._call[q].as_raw_fd();
                self.send(13, &(q as u64).to_le_bytes(), Some(call));
            }
            // Receive buffers: 2 KiB each, write-only, all posted.
            for i in 0..RING {
                self.set_desc(0, i, GPA + (RX_BUFS + 2048 * usize::from(i)) as u64, 2048, F_WRITE, 0);
                self.post(0, i);
            }
            let kick = self.kick.as_raw_fd();
            self.send(12, &0u64.to_le_bytes(), Some(kick));
            self.send(12, &1u64.to_le_bytes(), Some(kick));
        }

        fn write<T: Copy>(&self, off: usize, v: T) {
            assert!(off + std::mem::size_of::<T>() <= MEM);
            // SAFETY: inside our mapping (checked).
            unsafe { std::ptr::write_volatile(self.mem.add(off).cast::<T>(), v) }
        }

        fn read<T: Copy>(&self, off: usize) -> T {
            assert!(off + std::mem::size_of::<T>() <= MEM);
            // SAFETY: inside our mapping (checked).
            unsafe { std::ptr::read_volatile(self.mem.add(off).cast::<T>()) }
        }

        pub fn write_bytes(&self, off: usize, bytes: &[u8]) {
            for (i, b) in bytes.iter().enumerate() {
                self.write(off + i, *b);
            }
        }

        pub fn read_bytes(&self, off: usize, len: usize) -> Vec<u8> {
            (0..len).map(|i| self.read(off + i)).collect()
        }

        /// Descriptor `i` of queue `q`.
        pub fn set_desc(&self, q: usize, i: u16, addr: u64, len: u32, flags: u16, next: u16) {
            let at = DESC[q] + 16 * usize::from(i);
            self.write(at, addr.to_le());
            self.write(at + 8, len.to_le());
            self.write(at + 12, flags.to_le());
            self.write(at + 14, next.to_le());
        }

        /// Put `head` on queue `q`'s available ring (any value, even one
        /// past the table) and publish it.
        pub fn post(&mut self, q: usize, head: u16) {
            let slot = usize::from(self.avail[q] % RING);
            self.write(AVAIL[q] + 4 + 2 * slot, head.to_le());
            self.avail[q] = self.avail[q].wrapping_add(1);
            fence(Ordering::Release);
            self.write(AVAIL[q] + 2, self.avail[q].to_le());
        }

        /// Publish an available index of our choosing (a hostile jump).
        pub fn set_avail_idx(&mut self, q: usize, idx: u16) {
            self.avail[q] = idx;
            fence(Ordering::Release);
            self.write(AVAIL[q] + 2, idx.to_le());
        }

        pub fn kick(&self) {
            // SAFETY: writes 8 bytes to our eventfd.
            unsafe { libc::write(self.kick.as_raw_fd(), 1u64.to_ne_bytes().as_ptr().cast(), 8) };
        }

        pub fn used_idx(&self, q: usize) -> u16 {
            fence(Ordering::Acquire);
            u16::from_le(self.read(USED[q] + 2))
        }

        /// Used element `n` of queue `q`: (id, len).
        pub fn used(&self, q: usize, n: u16) -> (u32, u32) {
            let at = USED[q] + 4 + 8 * usize::from(n % RING);
            (u32::from_le(self.read(at)), u32::from_le(self.read(at + 4)))
        }

        /// A fresh transmit descriptor index (wrapping over the table).
        pub fn take_desc(&mut self) -> u16 {
            let i = self.next_desc;
            self.next_desc = (self.next_desc + 1) % RING;
            i
        }
    }

    impl Drop for Frontend {
        fn drop(&mut self) {
            // SAFETY: unmaps our own mapping.
            unsafe { libc::munmap(self.mem.cast(), MEM) };
        }
    }
}

/// An Ethernet frame of `len` bytes from `src` to `dst`, payload from `seed`.
fn eth_frame(dst: [u8; 6], src: [u8; 6], len: usize, seed: u8) -> Vec<u8> {
    let mut f = Vec::with_capacity(len);
    f.extend_from_slice(&dst);
    f.extend_from_slice(&src);
    f.extend_from_slice(&[0x88, 0xb5]); // local experimental EtherType
    f.extend((0..len - 14).map(|i| (i as u8).wrapping_mul(31).wrapping_add(seed)));
    f
}

/// Send one good frame through the transmit ring and wait (bounded) for it
/// to come back reflected on the receive ring; returns the frame received.
fn reflect_one(fe: &mut frontend::Frontend, seed: u8) -> Vec<u8> {
    use frontend::*;
    let frame = eth_frame([2, 0, 0, 0, 0, 0xbb], [2, 0, 0, 0, 0, 0xaa], 100, seed);
    let d = fe.take_desc();
    let buf = TX_BUFS + 256 * usize::from(d);
    fe.write_bytes(buf, &[0u8; 12]);
    fe.write_bytes(buf + 12, &frame);
    fe.set_desc(1, d, GPA + buf as u64, 12 + frame.len() as u32, 0, 0);
    let before = fe.used_idx(0);
    fe.post(1, d);
    fe.kick();
    let deadline = Instant::now() + Duration::from_secs(10);
    while fe.used_idx(0) == before {
        assert!(Instant::now() < deadline, "frame {seed} was not reflected within 10 s");
        std::thread::sleep(Duration::from_millis(5));
    }
    let (id, len) = fe.used(0, before);
    assert_eq!(len as usize, 12 + frame.len(), "reflected length");
    let back = fe.read_bytes(RX_BUFS + 2048 * id as usize + 12, frame.len());
    // Repost the receive buffer.
    fe.post(0, id as u16);
    back
}

#[test]
fn garbage_descriptors_are_refused_counted_and_the_switch_keeps_serving() {
    // Our own frontend: needs no DPDK, no root, no network.
    use frontend::*;
    let (sock, control) = (Tmp::new("garbage.sock"), Tmp::new("garbage.ctl"));
    let mut sw = switch(&[format!("vhost-user:{}", sock.s())], &control, &["--reflect"]);
    let mut fe = Frontend::connect(sock.s());
    fe.setup();

    // A good frame first: it comes back with its MACs swapped.
    let back = reflect_one(&mut fe, 1);
    let sent = eth_frame([2, 0, 0, 0, 0, 0xbb], [2, 0, 0, 0, 0, 0xaa], 100, 1);
    assert_eq!(&back[0..6], &sent[6..12], "destination is the sender");
    assert_eq!(&back[6..12], &sent[0..6], "source is the old destination");
    assert_eq!(&back[12..], &sent[12..], "payload intact");

    // Garbage, each in its own chain on the transmit ring:
    let d = fe.take_desc(); // an address nowhere in the shared memory
    fe.set_desc(1, d, 0xdead_0000_0000, 100, 0, 0);
    fe.post(1, d);
    let d = fe.take_desc(); // a length past the end of the region
    fe.set_desc(1, d, GPA + MEM as u64 - 10, 100, 0, 0);
    fe.post(1, d);
    let (a, b) = (fe.take_desc(), fe.take_desc()); // a loop: a -> b -> a -> ...
    fe.set_desc(1, a, GPA + TX_BUFS as u64, 20, F_NEXT, b);
    fe.set_desc(1, b, GPA + TX_BUFS as u64, 20, F_NEXT, a);
    fe.post(1, a);
    let d = fe.take_desc(); // `next` past the descriptor table
    fe.set_desc(1, d, GPA + TX_BUFS as u64, 20, F_NEXT, 999);
    fe.post(1, d);
    let d = fe.take_desc(); // a write-only descriptor in a transmit chain
    fe.set_desc(1, d, GPA + TX_BUFS as u64, 100, F_WRITE, 0);
    fe.post(1, d);
    fe.post(1, 999); // a head index past the table
    fe.kick();
    // The switch still serves: the next good frame comes back.
    let back = reflect_one(&mut fe, 2);
    assert_eq!(&back[12..], &eth_frame([0; 6], [0; 6], 100, 2)[12..]);

    let snap = switch_stats(&control);
    let dev = &snap["ports"][0]["device_counters"];
    assert_eq!(dev["rx_bad_address"], 2, "out-of-range address and length: {snap}");
    assert_eq!(dev["rx_bad_chain"], 3, "loop, next past the table, head past the table: {snap}");
    assert_eq!(dev["rx_bad_direction"], 1, "write-only in a transmit chain: {snap}");
    assert_eq!(dev["rx_frames"], 2, "{snap}");
    assert_eq!(snap["ports"][0]["tx_frames"], 2, "{snap}");

    // An available index that jumps past the ring: that ring is stopped and counted.
    let idx = fe.used_idx(1).wrapping_add(1000);
    fe.set_avail_idx(1, idx);
    fe.kick();
    wait_counter(&control, "rings_broken", 1);

    // A memory table past the end of its file is refused (mapping it would
    // fault on first touch); then the frontend goes away.
    fe.set_mem_table(4 * MEM as u64);
    wait_counter(&control, "refused", 1);
    drop(fe);
    sw.assert_running();

    // A new frontend on the same port is served from scratch.
    let mut fe = Frontend::connect(sock.s());
    fe.setup();
    let back = reflect_one(&mut fe, 3);
    assert_eq!(&back[12..], &eth_frame([0; 6], [0; 6], 100, 3)[12..]);
    let snap = switch_stats(&control);
    let dev = &snap["ports"][0]["device_counters"];
    assert_eq!((dev["connects"].as_u64(), dev["disconnects"].as_u64()), (Some(2), Some(1)), "{snap}");
    sw.assert_running();
}

/// Wait (bounded) until the first port's device counter `key` reaches `want`.
fn wait_counter(control: &Tmp, key: &str, want: u64) {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let snap = switch_stats(control);
        let v = snap["ports"][0]["device_counters"][key].as_u64().unwrap_or(0);
        if v >= want {
            assert_eq!(v, want, "{key}: {snap}");
            return;
        }
        assert!(Instant::now() < deadline, "{key} stayed {v}, want {want}: {snap}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// `ustack CMD ARGS… --device virtio-user:SOCK --ip IP/24` in the background.
fn stack(what: &str, sock: &Tmp, ip: &str, args: &[&str]) -> Proc {
    stack_with(what, sock, "", ip, args)
}

/// As [`stack`], the port's options `opts` (`,k=v…`) added.
fn stack_with(what: &str, sock: &Tmp, opts: &str, ip: &str, args: &[&str]) -> Proc {
    let mut cmd = Command::new(support::ustack_bin());
    cmd.args(args).args(["--device", &format!("virtio-user:{}{opts}", sock.s()), "--ip", &format!("{ip}/24")]);
    Proc::spawn(what, &mut cmd)
}

/// Wait (bounded) for a process to exit successfully; its standard output.
fn wait_exit(p: &mut Proc, limit: Duration) -> String {
    let deadline = Instant::now() + limit;
    loop {
        if let Ok(Some(st)) = p.child.try_wait() {
            // The pipes close with the process: read them to the end (bounded).
            let until = Instant::now() + Duration::from_secs(5);
            while !p.readers.iter().all(|r| r.is_finished()) && Instant::now() < until {
                std::thread::sleep(Duration::from_millis(10));
            }
            assert!(st.success(), "{} failed ({st}):\n{}", p.what, p.output());
            return p.stdout.lock().unwrap().clone();
        }
        assert!(Instant::now() < deadline, "{} still running after {limit:?}:\n{}", p.what, p.output());
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn two_stacks_on_virtio_user_through_the_switch() {
    two_stacks("two", "", &[]);
}

#[test]
fn two_stacks_on_virtio_user_through_a_busy_polling_switch() {
    // The same with every loop polling its rings for 50 µs before it
    // sleeps: the stacks' (`busy_poll=50`) and the switch's (`--busy-poll 50`).
    two_stacks("busy", ",busy_poll=50", &["--busy-poll", "50"]);
}

#[test]
fn the_switch_cuts_super_segments_for_a_stack_without_tso() {
    // The server takes TSO and sends 64 KiB super-segments; the client's
    // port has `tso=off`, so the switch's port cuts each into wire
    // segments in software (checksums complete), and the file arrives whole.
    use support::tcp::{sha256_file, write_random_file, TempDir};
    let (a, b, control) = (Tmp::new("cut-a.sock"), Tmp::new("cut-b.sock"), Tmp::new("cut.ctl"));
    let mut sw = switch(&[format!("vhost-user:{}", a.s()), format!("vhost-user:{}", b.s())], &control, &[]);
    let secs = Duration::from_secs;
    let dir = TempDir::new(&format!("vu-cut-{}", std::process::id()));
    write_random_file(&dir.path("big"), 64 << 20, 12);
    let want = sha256_file(&dir.path("big"));
    let mut web = stack("ustack up", &a, "10.68.0.1", &["up", "--http-root", dir.as_str(), "--control", &dir.file("up.ctl")]);
    web.wait_for(secs(20), "HTTP banner", |o| o.contains("HTTP on port"));
    let out = dir.file("got");
    let args = ["get", "http://10.68.0.1/big", "-o", &out, "--timeout", "60"];
    let mut g = stack_with("ustack get (tso=off)", &b, ",tso=off", "10.68.0.2", &args);
    wait_exit(&mut g, secs(90));
    assert_eq!(sha256_file(std::path::Path::new(&out)), want, "64 MiB cut by the switch");
    let snap = switch_stats(&control);
    let (frames, bytes) = (port_counter(&snap, 0, "rx_frames"), port_counter(&snap, 0, "rx_bytes"));
    assert!(bytes > 1514 * frames, "the server sent super-segments: {snap}");
    let dev_b = &snap["ports"][1]["device_counters"];
    assert!(dev_b["tx_segmented"].as_u64().is_some_and(|n| n > 0), "{snap}");
    // Wire segments only toward the client: more frames than came in.
    assert!(dev_b["tx_frames"].as_u64().is_some_and(|n| n > frames), "{snap}");
    assert_eq!(dev_b["tx_too_long"].as_u64(), Some(0), "{snap}");
    sw.assert_running();
    web.assert_running();
}

/// Two ustack processes, each a virtio-user driver (port options `opts`)
/// on a port of one switch (its own flags `extra`): no kernel between them,
/// no privileges needed.
fn two_stacks(tag: &str, opts: &str, extra: &[&str]) {
    use support::tcp::{sha256_file, write_random_file, TempDir};
    let (a, b) = (Tmp::new(&format!("{tag}-a.sock")), Tmp::new(&format!("{tag}-b.sock")));
    let control = Tmp::new(&format!("{tag}.ctl"));
    let mut sw = switch(&[format!("vhost-user:{}", a.s()), format!("vhost-user:{}", b.s())], &control, extra);
    let secs = Duration::from_secs;
    let stack = |what: &str, sock: &Tmp, ip: &str, args: &[&str]| stack_with(what, sock, opts, ip, args);

    // iperf: both sides count the same bytes.
    let mut server = stack("ustack perf -s", &a, "10.66.0.1", &["perf", "-s", "-1", "-J"]);
    server.wait_for(secs(20), "perf server banner", |o| o.contains("perf server on"));
    let mut client = stack("ustack perf -c", &b, "10.66.0.2", &["perf", "-c", "10.66.0.1", "-n", "16777216", "-J", "--timeout", "60"]);
    let c_out = wait_exit(&mut client, secs(90));
    let s_out = wait_exit(&mut server, secs(30));
    let doc = |out: &str| support::json_documents(out).into_iter().next().unwrap_or_else(|| panic!("no JSON in:\n{out}"));
    let (c, s) = (doc(&c_out), doc(&s_out));
    let sent = support::end_bytes(&c, "sum_sent");
    assert!(sent >= 16 << 20, "client sent {sent} bytes");
    assert_eq!(support::end_bytes(&c, "sum_received"), sent, "client's view of what arrived");
    assert_eq!(support::end_bytes(&s, "sum_received"), sent, "server's count");

    // HTTP: 64 MiB from one stack to the other, hashes equal.
    let dir = TempDir::new(&format!("vu-{tag}-{}", std::process::id()));
    write_random_file(&dir.path("big"), 64 << 20, 11);
    let want = sha256_file(&dir.path("big"));
    let mut web = stack("ustack up", &a, "10.66.0.1", &["up", "--http-root", dir.as_str(), "--control", &dir.file("up.ctl")]);
    web.wait_for(secs(20), "HTTP banner", |o| o.contains("HTTP on port"));
    let get = |n: u32| {
        let out = dir.file(&format!("got{n}"));
        let args = ["get", "http://10.66.0.1/big", "-o", &out, "--timeout", "60"];
        (stack(&format!("ustack get #{n}"), &b, "10.66.0.2", &args), out)
    };
    let (mut g, out) = get(1);
    wait_exit(&mut g, secs(90));
    assert_eq!(sha256_file(std::path::Path::new(&out)), want, "64 MiB over the switch");
    // Both stacks took TSO: the file crossed the switch in super-segments,
    // passed between the ports whole.
    let up = up_stats(&dir.file("up.ctl"));
    let dev = &up["interfaces"][0]["device_counters"];
    assert_eq!((dev["host_tso4"].as_u64(), dev["guest_tso4"].as_u64()), (Some(1), Some(1)), "{up}");
    let snap = switch_stats(&control);
    let (frames, bytes) = (port_counter(&snap, 0, "rx_frames"), port_counter(&snap, 0, "rx_bytes"));
    assert!(bytes > 1514 * frames, "{frames} frames for {bytes} bytes from the server: no super-segment? {snap}");
    assert_eq!(snap["ports"][1]["device_counters"]["tx_segmented"].as_u64(), Some(0), "{snap}");

    // Kill one stack mid-transfer and start another on its port: the
    // switch takes the new frontend and the server keeps serving.
    let (mut g, _) = get(2);
    std::thread::sleep(Duration::from_millis(300));
    let _ = g.child.kill();
    let _ = g.child.wait();
    drop(g);
    sw.assert_running();
    web.assert_running();
    let (mut g, out) = get(3);
    wait_exit(&mut g, secs(90));
    assert_eq!(sha256_file(std::path::Path::new(&out)), want, "64 MiB after the restart");

    let snap = switch_stats(&control);
    let dev_b = &snap["ports"][1]["device_counters"];
    assert_eq!(dev_b["connects"], 4, "perf, get, the killed get, get again on port b: {snap}");
    assert_eq!(dev_b["disconnects"], 4, "every one of them has gone: {snap}");
    for port in 0..2 {
        let dev = &snap["ports"][port]["device_counters"];
        for bad in ["rx_bad_address", "rx_bad_chain", "rx_bad_direction", "refused", "protocol_errors"] {
            assert_eq!(dev[bad], 0, "port {port} {bad}: {snap}");
        }
    }
    sw.assert_running();
}

/// A tiny Linux guest for QEMU: the host's Debian kernel, a busybox
/// initramfs built here (newc cpio), and the virtio-net modules it needs.
mod guest {
    use std::collections::BTreeMap;
    use std::path::{Path, PathBuf};

    /// What the guest boots from.
    pub struct Kernel {
        pub image: PathBuf,
        /// Modules to load, dependencies first (`.ko` paths on the host).
        pub modules: Vec<PathBuf>,
    }

    /// Why no guest can be built here, if none can.
    pub fn skip_reason() -> Option<String> {
        if which("qemu-system-x86_64").is_none() {
            return Some("`qemu-system-x86_64` not installed (package qemu-system-x86)".into());
        }
        match std::fs::read("/bin/busybox") {
            Err(_) => return Some("/bin/busybox missing (package busybox-static)".into()),
            Ok(elf) if has_interpreter(&elf) => {
                return Some("/bin/busybox is dynamically linked (install busybox-static)".into())
            }
            Ok(_) => {}
        }
        find_kernel().err()
    }

    fn which(tool: &str) -> Option<PathBuf> {
        let path = std::env::var_os("PATH")?;
        std::env::split_paths(&path).map(|d| d.join(tool)).find(|p| p.is_file())
    }

    /// Whether an ELF64 file names a program interpreter (is not static).
    fn has_interpreter(elf: &[u8]) -> bool {
        let u =
            |at: usize, n: usize| elf.get(at..at + n).map(|b| b.iter().rev().fold(0u64, |a, &x| a << 8 | u64::from(x)));
        let (Some(phoff), Some(phentsize), Some(phnum)) = (u(0x20, 8), u(0x36, 2), u(0x38, 2)) else { return true };
        (0..phnum).any(|i| u((phoff + i * phentsize) as usize, 4) == Some(3)) // PT_INTERP
    }

    /// The newest /boot/vmlinuz-* whose modules hold virtio-net (as
    /// modules or built in); `Err` says why there is none.
    pub fn find_kernel() -> Result<Kernel, String> {
        let mut images: Vec<PathBuf> = std::fs::read_dir("/boot")
            .map_err(|e| format!("/boot: {e}"))?
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| p.file_name().is_some_and(|n| n.to_string_lossy().starts_with("vmlinuz-")))
            .collect();
        images.sort();
        for image in images.into_iter().rev() {
            if std::fs::File::open(&image).is_err() {
                continue;
            }
            let version = image.file_name().unwrap().to_string_lossy()["vmlinuz-".len()..].to_owned();
            let dir = Path::new("/lib/modules").join(&version);
            let Ok(dep) = std::fs::read_to_string(dir.join("modules.dep")) else { continue };
            let builtin = std::fs::read_to_string(dir.join("modules.builtin")).unwrap_or_default();
            let deps: BTreeMap<&str, Vec<&str>> = dep
                .lines()
                .filter_map(|l| l.split_once(':'))
                .map(|(m, d)| (m, d.split_whitespace().collect()))
                .collect();
            let mut modules = Vec::new();
            let mut ok = true;
            for root in ["virtio_pci", "virtio_net"] {
                let file = format!("{root}.ko");
                let is = |m: &str| m.rsplit('/').next() == Some(file.as_str());
                if let Some(m) = deps.keys().find(|m| is(m)) {
                    visit(m, &deps, &mut modules);
                } else if !builtin.lines().any(is) {
                    ok = false;
                }
            }
            if !ok {
                continue;
            }
            if let Some(m) = modules.iter().find(|m| !m.ends_with(".ko")) {
                return Err(format!("{version}: module {m} is compressed; the guest loads plain .ko files"));
            }
            return Ok(Kernel { image, modules: modules.iter().map(|m| dir.join(m)).collect() });
        }
        Err("no readable /boot/vmlinuz-* with virtio_net (package linux-image-cloud-amd64)".into())
    }

    /// Dependencies first (post-order), each once.
    fn visit<'a>(m: &'a str, deps: &BTreeMap<&'a str, Vec<&'a str>>, out: &mut Vec<&'a str>) {
        if out.contains(&m) {
            return;
        }
        for d in deps.get(m).into_iter().flatten() {
            visit(d, deps, out);
        }
        out.push(m);
    }

    /// A newc cpio archive, built entry by entry.
    #[derive(Default)]
    pub struct Cpio {
        buf: Vec<u8>,
        ino: u32,
    }

    impl Cpio {
        fn entry(&mut self, name: &str, mode: u32, rdev: (u32, u32), data: &[u8]) {
            self.ino += 1;
            let fields =
                [self.ino, mode, 0, 0, 1, 0, data.len() as u32, 0, 0, rdev.0, rdev.1, name.len() as u32 + 1, 0];
            self.buf.extend_from_slice(b"070701");
            for f in fields {
                self.buf.extend_from_slice(format!("{f:08x}").as_bytes());
            }
            self.buf.extend_from_slice(name.as_bytes());
            self.buf.push(0);
            self.pad();
            self.buf.extend_from_slice(data);
            self.pad();
        }
        fn pad(&mut self) {
            while !self.buf.len().is_multiple_of(4) {
                self.buf.push(0);
            }
        }
        pub fn dir(&mut self, name: &str) {
            self.entry(name, 0o040755, (0, 0), b"");
        }
        pub fn file(&mut self, name: &str, mode: u32, data: &[u8]) {
            self.entry(name, 0o100000 | mode, (0, 0), data);
        }
        pub fn symlink(&mut self, name: &str, target: &str) {
            self.entry(name, 0o120777, (0, 0), target.as_bytes());
        }
        pub fn char_dev(&mut self, name: &str, major: u32, minor: u32) {
            self.entry(name, 0o020600, (major, minor), b"");
        }
        pub fn finish(mut self) -> Vec<u8> {
            self.entry("TRAILER!!!", 0, (0, 0), b"");
            self.buf
        }
    }

    /// The initramfs: busybox, the modules, and `init` (a shell script).
    pub fn initramfs(kernel: &Kernel, init: &str) -> Vec<u8> {
        let mut c = Cpio::default();
        for d in ["bin", "dev", "proc", "sys", "tmp", "lib", "lib/modules"] {
            c.dir(d);
        }
        c.char_dev("dev/console", 5, 1);
        c.file("bin/busybox", 0o755, &std::fs::read("/bin/busybox").expect("read /bin/busybox"));
        c.symlink("bin/sh", "busybox");
        for m in &kernel.modules {
            let name = m.file_name().unwrap().to_string_lossy();
            c.file(
                &format!("lib/modules/{name}"),
                0o644,
                &std::fs::read(m).unwrap_or_else(|e| panic!("{}: {e}", m.display())),
            );
        }
        c.file("init", 0o755, init.as_bytes());
        c.finish()
    }
}

/// Boot the guest (QEMU under TCG, its virtio-net device on the vhost-user
/// socket `vm_sock`) with eth0 up as 10.67.0.2/24, run `script` in its init
/// and return the serial console once the guest has said it is done (bounded).
fn run_guest(dir: &support::tcp::TempDir, vm_sock: &Tmp, script: &str) -> String {
    let kernel = guest::find_kernel().expect("checked by guest::skip_reason");
    let modules: Vec<String> =
        kernel.modules.iter().map(|m| m.file_name().unwrap().to_string_lossy().into_owned()).collect();
    let init = format!(
        "#!/bin/sh\n\
         export PATH=/bin\n\
         /bin/busybox --install -s /bin\n\
         mount -t proc proc /proc; mount -t sysfs sys /sys\n\
         for m in {mods}; do insmod /lib/modules/$m || echo \"USTACK-GUEST insmod $m failed\"; done\n\
         i=0; while [ ! -e /sys/class/net/eth0 ] && [ $i -lt 300 ]; do sleep 0.1; i=$((i+1)); done\n\
         ip link set lo up; ip link set eth0 up; ip addr add 10.67.0.2/24 dev eth0\n\
         {script}\
         echo USTACK-GUEST done\n\
         poweroff -f\n",
        mods = modules.join(" "),
    );
    std::fs::write(dir.path("initrd"), guest::initramfs(&kernel, &init)).expect("write the initramfs");
    // Debian 12's QEMU 7.2 crashes (SIGSEGV in msix_set_vector_notifiers,
    // from vhost_net_start, before it sends the backend anything) when the
    // guest turns MSI-X on for a vhost-user device under TCG: `vectors=0`
    // leaves the device on INTx. `romfile=` spares the iPXE option ROM.
    let mut cmd = Command::new("qemu-system-x86_64");
    cmd.args(["-machine", "q35", "-accel", "tcg", "-m", "256", "-smp", "1"])
        .args(["-object", "memory-backend-memfd,id=mem,size=256M,share=on", "-numa", "node,memdev=mem"])
        .args(["-chardev", &format!("socket,id=c0,path={}", vm_sock.s()), "-netdev", "vhost-user,id=n0,chardev=c0"])
        .args(["-device", "virtio-net-pci,netdev=n0,mac=52:54:00:67:00:02,romfile=,vectors=0"])
        .args(["-display", "none", "-serial", "stdio", "-monitor", "none", "-no-reboot", "-nodefaults"])
        .args(["-kernel", kernel.image.to_str().unwrap(), "-initrd", &dir.file("initrd")])
        .args(["-append", "console=ttyS0 quiet panic=-1"])
        .stdin(Stdio::null());
    let mut vm = Proc::spawn("qemu-system-x86_64", &mut cmd);
    // TCG boots in 5-20 s on an idle machine; a loaded 2-core CI VM is slower.
    vm.wait_for(Duration::from_secs(240), "the guest's last line", |o| o.contains("USTACK-GUEST done"));
    let console = vm.output();
    assert!(!console.contains("insmod"), "a module did not load:\n{console}");
    console
}

/// The guest's wget succeeded and its file hashes to `want`.
fn assert_fetched(console: &str, want: &str) {
    assert_eq!(console_value(console, "USTACK-GUEST wget-rc="), "0", "{console}");
    let got = console_value(console, "USTACK-GUEST sha256");
    assert_eq!(got.split_whitespace().next(), Some(want), "the file the guest fetched");
}

/// `ustack stats --json` of the stack with control socket `ctl`.
fn up_stats(ctl: &str) -> serde_json::Value {
    let out =
        Command::new(support::ustack_bin()).args(["stats", "--json", "--control", ctl]).output().expect("ustack stats");
    serde_json::from_slice(&out.stdout).expect("stats JSON")
}

/// The value after `key` on the first console line holding it.
fn console_value(console: &str, key: &str) -> String {
    console
        .lines()
        .find_map(|l| l.split_once(key).map(|(_, v)| v.trim().to_owned()))
        .unwrap_or_else(|| panic!("no {key} on the console:\n{console}"))
}

#[test]
fn qemu_guest_on_a_switch_port_pings_and_fetches_from_a_ustack_stack() {
    // A Linux guest under QEMU (TCG, no KVM needed) on one switch port,
    // its virtio-net device served by the switch over vhost-user; a ustack
    // stack (virtio-user) on the other port. The guest pings the stack and
    // fetches a file from its HTTP server; its init prints what it saw on
    // the serial console.
    use support::tcp::{sha256_file, write_random_file, TempDir};
    if let Some(reason) = guest::skip_reason() {
        eprintln!("SKIPPED: {reason}");
        return;
    }
    const PINGS: u32 = 5;
    let dir = TempDir::new("vu-qemu");
    write_random_file(&dir.path("file"), 300_000, 7);
    let want = sha256_file(&dir.path("file"));

    let (vm_sock, stack_sock, control) = (Tmp::new("qemu-vm.sock"), Tmp::new("qemu-stack.sock"), Tmp::new("qemu.ctl"));
    let mut sw =
        switch(&[format!("vhost-user:{}", vm_sock.s()), format!("vhost-user:{}", stack_sock.s())], &control, &[]);
    let up_ctl = dir.file("up.ctl");
    let mut web =
        stack("ustack up", &stack_sock, "10.67.0.1", &["up", "--http-root", dir.as_str(), "--control", &up_ctl]);
    web.wait_for(Duration::from_secs(20), "HTTP banner", |o| o.contains("HTTP on port"));

    let console = run_guest(
        &dir,
        &vm_sock,
        &format!(
            "ping -c {PINGS} -w 60 10.67.0.1; echo \"USTACK-GUEST ping-rc=$?\"\n\
             wget -q -O /tmp/file http://10.67.0.1/file; echo \"USTACK-GUEST wget-rc=$?\"\n\
             echo \"USTACK-GUEST sha256 $(sha256sum /tmp/file)\"\n"
        ),
    );
    assert!(
        console.contains(&format!("{PINGS} packets transmitted, {PINGS} packets received")),
        "every ping answered:\n{console}"
    );
    assert_eq!(console_value(&console, "USTACK-GUEST ping-rc="), "0", "{console}");
    assert_fetched(&console, &want);

    // Both sides counted it: the stack answered each echo request; the
    // switch took the guest's frames and refused nothing.
    let up = up_stats(&up_ctl);
    assert_eq!(up["counters"]["icmp_echo_replies_sent"], PINGS, "{up}");
    let snap = switch_stats(&control);
    assert!(port_counter(&snap, 0, "rx_frames") > u64::from(PINGS), "{snap}");
    let dev = &snap["ports"][0]["device_counters"];
    for bad in ["rx_bad_address", "rx_bad_chain", "rx_bad_direction", "rx_bad_header", "refused", "protocol_errors"] {
        assert_eq!(dev[bad].as_u64().unwrap_or(0), 0, "{bad}: {snap}");
    }
    sw.assert_running();
    web.assert_running();
}

#[test]
fn bench_through_the_switch_reports_both_stacks_process_to_process() {
    // `ustack bench --device virtio-user`: its own switch, two ustack
    // processes on it, two Linux processes over loopback; every workload
    // reports both sides and cleans up (no root, no figures asserted);
    // rr once more with every loop busy polling, and crr with the switch
    // and the ends pinned apart (`--pin`, reported in the JSON).
    let two_cpus = std::thread::available_parallelism().is_ok_and(|n| n.get() >= 2);
    let pin = if two_cpus { "0,1" } else { "0,0" };
    for (workload, device, pinned) in [
        ("stream", "virtio-user", false),
        ("rr", "virtio-user", false),
        ("crr", "virtio-user", false),
        ("rr", "virtio-user,busy_poll=50", false),
        ("crr", "virtio-user,busy_poll=50", true),
    ] {
        let mut cmd = Command::new(support::ustack_bin());
        cmd.args(["bench", workload, "--device", device, "--seconds", "0.3", "--json"]);
        if pinned {
            cmd.args(["--pin", pin]);
        }
        let mut p = Proc::spawn(&format!("ustack bench {workload}"), &mut cmd);
        let dir = std::env::temp_dir().join(format!("ustack-bench-switch-{}", p.child.id()));
        let out = wait_exit(&mut p, Duration::from_secs(60));
        assert!(!dir.exists(), "{} is removed", dir.display());
        let doc = support::json_documents(&out).into_iter().next().unwrap_or_else(|| panic!("no JSON in:\n{out}"));
        assert_eq!(doc["workload"], workload, "{doc}");
        assert_eq!((doc["path"].as_str(), doc["linux_path"].as_str()), (Some("virtio-user"), Some("loopback")));
        assert_eq!(doc["processes"], 3, "{doc}");
        if pinned {
            let (sw, ends) = pin.split_once(',').unwrap();
            assert_eq!(doc["pin"]["switch"].to_string(), sw, "{doc}");
            assert_eq!(doc["pin"]["ends"].to_string(), ends, "{doc}");
        } else {
            assert!(doc["pin"].is_null(), "{doc}");
        }
        for side in ["ustack", "linux"] {
            assert!(doc[side]["count"].as_u64().is_some_and(|n| n > 0), "{side} did nothing: {doc}");
            assert!(doc[side]["cpu_s"].as_f64().is_some_and(|s| s > 0.0), "{side}'s CPU time: {doc}");
        }
    }
}

#[test]
fn qemu_guest_takes_tcp_super_segments_from_a_stack_on_a_vhost_user_port() {
    // `ustack up` itself on the vhost-user port (no switch): the guest's
    // virtio-net driver takes GUEST_TSO4, so the stack hands it 64 KiB TCP
    // super-segments (checksums partial) through the merged receive
    // buffers. The file arrives whole, in frames larger than the MTU.
    use support::tcp::{sha256_file, write_random_file, TempDir};
    if let Some(reason) = guest::skip_reason() {
        eprintln!("SKIPPED: {reason}");
        return;
    }
    let dir = TempDir::new("vu-qemu-tso");
    write_random_file(&dir.path("file"), 4 << 20, 9);
    let want = sha256_file(&dir.path("file"));
    let vm_sock = Tmp::new("qemu-tso.sock");
    let up_ctl = dir.file("up.ctl");
    let mut cmd = Command::new(support::ustack_bin());
    cmd.args(["up", "--device", &format!("vhost-user:{}", vm_sock.s()), "--ip", "10.67.0.1/24"]).args([
        "--http-root",
        dir.as_str(),
        "--control",
        &up_ctl,
    ]);
    let mut web = Proc::spawn("ustack up (vhost-user)", &mut cmd);
    web.wait_for(Duration::from_secs(20), "HTTP banner", |o| o.contains("HTTP on port"));

    let console = run_guest(
        &dir,
        &vm_sock,
        "wget -q -O /tmp/file http://10.67.0.1/file; echo \"USTACK-GUEST wget-rc=$?\"\n\
         echo \"USTACK-GUEST sha256 $(sha256sum /tmp/file)\"\n",
    );
    assert_fetched(&console, &want);
    let snap = up_stats(&up_ctl);
    let dev = &snap["interfaces"][0]["device_counters"];
    let (frames, bytes) = (dev["tx_frames"].as_u64().unwrap_or(0), dev["tx_bytes"].as_u64().unwrap_or(0));
    assert!(bytes >= 4 << 20, "the file went through the port: {snap}");
    // Frames of at most 1514 bytes could not average more: some were super-segments.
    assert!(bytes > 1514 * frames, "{frames} frames for {bytes} bytes: no super-segment? {snap}");
    for bad in ["tx_too_long", "tx_bad_address", "tx_bad_chain", "tx_bad_direction", "refused", "protocol_errors"] {
        assert_eq!(dev[bad], 0, "{bad}: {snap}");
    }
    web.assert_running();
}
