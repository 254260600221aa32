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
    out: Arc<Mutex<String>>,
}

impl Proc {
    fn spawn(what: &str, cmd: &mut Command) -> Proc {
        cmd.stdout(Stdio::piped()).stderr(Stdio::piped());
        let mut child = cmd.spawn().unwrap_or_else(|e| panic!("spawn {what}: {e}"));
        let out = Arc::new(Mutex::new(String::new()));
        for pipe in [
            Box::new(child.stdout.take().unwrap()) as Box<dyn std::io::Read + Send>,
            Box::new(child.stderr.take().unwrap()),
        ] {
            let out = Arc::clone(&out);
            // Raw reads, not lines: testpmd's prompt ends no line.
            std::thread::spawn(move || {
                let mut pipe = pipe;
                let mut buf = [0u8; 4096];
                while let Ok(n @ 1..) = pipe.read(&mut buf) {
                    out.lock().unwrap().push_str(&String::from_utf8_lossy(&buf[..n]));
                }
            });
        }
        Proc { what: what.into(), child, out }
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
        let deadline = Instant::now() + limit;
        while !pred(&self.output()) {
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
    fn start(sock: &str, prefix: &str, mac: &str) -> Testpmd {
        let vdev = format!("net_virtio_user0,mac={mac},path={sock},queues=1");
        // testpmd prints with stdio: unbuffered, so each answer arrives when asked.
        let mut cmd = Command::new("stdbuf");
        cmd.args(["-o0", "dpdk-testpmd"]).args(["-l", "0-1", "--no-huge", "-m", "512", "--no-pci", "--file-prefix", prefix, "--vdev", &vdev])
            .args(["--", "--no-numa", "--total-num-mbufs=16384", "--forward-mode=rxonly", "-i"])
            .stdin(Stdio::piped());
        let mut proc = Proc::spawn("dpdk-testpmd", &mut cmd);
        let stdin = proc.child.stdin.take().unwrap();
        proc.wait_for(Duration::from_secs(60), "prompt", |o| o.contains("testpmd>"));
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
        self.proc.wait_for(Duration::from_secs(20), "port statistics", |o| {
            o.split(marker).nth(n).is_some_and(|b| b.contains("Tx-bps"))
        });
        let out = self.proc.output();
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
    let (sock, control) = (Tmp::new("reflect.sock"), Tmp::new("reflect.ctl"));
    let mut sw = switch(&[format!("vhost-user:{}", sock.s())], &control, &["--reflect"]);
    let prefix = format!("ustack-vu-reflect-{}", std::process::id());
    let mut pmd = Testpmd::start(sock.s(), &prefix, "02:00:00:00:00:01");

    let (mut rx0, mut tx0, mut rxb0, mut txb0) = pmd.port_stats();
    assert_eq!((rx0, tx0), (0, 0), "testpmd counted frames before the test");
    let snap = switch_stats(&control);
    let (mut sw_rx0, mut sw_tx0) = (port_counter(&snap, 0, "rx_frames"), port_counter(&snap, 0, "tx_frames"));
    for size in SIZES {
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
        assert_eq!(sent, (ROUNDS * BURSTS * 32) as u64, "{size} B: testpmd sent {sent} frames");
        assert_eq!(rx - rx0, sent, "{size} B: {sent} frames sent, {} came back", rx - rx0);
        assert_eq!(txb - txb0, sent * size as u64, "{size} B: bytes sent");
        assert_eq!(rxb - rxb0, txb - txb0, "{size} B: bytes back");
        let snap = switch_stats(&control);
        let (sw_rx, sw_tx) = (port_counter(&snap, 0, "rx_frames"), port_counter(&snap, 0, "tx_frames"));
        assert_eq!(sw_rx - sw_rx0, sent, "{size} B: the switch's rx_frames");
        assert_eq!(sw_tx - sw_tx0, sent, "{size} B: the switch's tx_frames");
        assert_eq!(port_counter(&snap, 0, "tx_dropped"), 0, "{snap}");
        (rx0, tx0, rxb0, txb0, sw_rx0, sw_tx0) = (rx, tx, rxb, txb, sw_rx, sw_tx);
    }
    let snap = switch_stats(&control);
    let dev = &snap["ports"][0]["device_counters"];
    assert_eq!(dev["connected"], 1, "{snap}");
    assert_eq!(dev["rx_frames"], (SIZES.len() * ROUNDS * BURSTS * 32) as u64, "{snap}");
    for bad in ["rx_bad_address", "rx_bad_chain", "rx_bad_direction", "rx_too_long", "tx_no_buffers", "refused"] {
        assert_eq!(dev[bad], 0, "{bad}: {snap}");
    }
    pmd.cmd("quit");
    sw.assert_running();
}
