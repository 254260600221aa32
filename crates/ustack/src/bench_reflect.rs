//! `ustack bench reflect`: the classic vhost-user measurement. One
//! generator — `dpdk-testpmd` as a virtio-user guest — against two
//! reflectors in turn on the same socket: `ustack switch --reflect` and
//! DPDK's own (`net_vhost` + testpmd `macswap`), at 64 to 1518 bytes on one
//! and two queue pairs. Each cell is the frames per second the generator
//! got back, measured over `--seconds` after a second of warm-up, and the
//! ratio ustack / DPDK. Needs `dpdk-testpmd` (package `dpdk-dev`) and runs
//! without hugepages or a NIC.
//!
//! The generator either builds every frame (`flowgen`, the default) or,
//! as DPDK's own loopback test plans do, sends 32 bursts once and then
//! forwards whatever comes back (`mac` forwarding after `start tx_first
//! 32`). Which side set the pace is in each cell: the share of the
//! generator's receive polls that found nothing (testpmd's burst
//! statistics); near none, the cell measures the generator.
//!
//! The generator gets an mbuf cache of 512 (`--mbcache`), not testpmd's
//! 250: with two in-order queues it frees up to two rings' worth of
//! buffers together, a cache of 250 spills them into the pool's shared
//! ring, and the generator then runs slower (64 bytes on two queues: 10.9
//! against 13.5 Mpps with ustack's reflector; DPDK's 12.6 against 12.4).

use crate::error::CliError;
use serde_json::json;
use std::io::{Read, Write};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

const SIZES: [usize; 6] = [64, 128, 256, 512, 1024, 1518];
const QUEUES: [usize; 2] = [1, 2];

/// A child process, killed on drop, its output collected: standard output
/// and standard error apart, since testpmd's prompt on one and a warning on
/// the other can interleave mid-word.
struct Proc {
    child: Child,
    stdin: Option<ChildStdin>,
    out: Arc<Mutex<String>>,
    err: Arc<Mutex<String>>,
}

impl Proc {
    fn spawn(cmd: &mut Command, what: &str) -> Result<Proc, CliError> {
        cmd.stdin(Stdio::piped()).stdout(Stdio::piped()).stderr(Stdio::piped());
        let mut child = cmd.spawn().map_err(|e| CliError::Bench(format!("reflect: cannot run {what}: {e}")))?;
        let (out, err) = (Arc::new(Mutex::new(String::new())), Arc::new(Mutex::new(String::new())));
        for (pipe, out) in [
            (Box::new(child.stdout.take().expect("piped")) as Box<dyn Read + Send>, Arc::clone(&out)),
            (Box::new(child.stderr.take().expect("piped")), Arc::clone(&err)),
        ] {
            std::thread::spawn(move || {
                let mut pipe = pipe;
                let mut buf = [0u8; 4096];
                while let Ok(n @ 1..) = pipe.read(&mut buf) {
                    out.lock().unwrap_or_else(|e| e.into_inner()).push_str(&String::from_utf8_lossy(&buf[..n]));
                }
            });
        }
        let stdin = child.stdin.take();
        Ok(Proc { child, stdin, out, err })
    }

    /// Standard output so far.
    fn output(&self) -> String {
        self.out.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }

    /// Both outputs, for an error message.
    fn both(&self) -> String {
        format!("{}{}", self.output(), self.err.lock().unwrap_or_else(|e| e.into_inner()))
    }

    fn wait_for(&mut self, what: &str, limit: Duration, pred: impl Fn(&str) -> bool) -> Result<(), CliError> {
        let deadline = Instant::now() + limit;
        while !(pred(&self.output()) || pred(&self.err.lock().unwrap_or_else(|e| e.into_inner()))) {
            if let Ok(Some(st)) = self.child.try_wait() {
                return Err(CliError::Bench(format!("reflect: {what} exited ({st}):\n{}", self.both())));
            }
            if Instant::now() >= deadline {
                return Err(CliError::Bench(format!("reflect: no {what} within {limit:?}:\n{}", self.both())));
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        Ok(())
    }

    fn cmd(&mut self, line: &str) {
        if let Some(s) = &mut self.stdin {
            let _ = writeln!(s, "{line}");
        }
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// How the generator makes its frames.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum Generator {
    /// testpmd `flowgen`: a new frame for every one sent, at full speed.
    Flowgen,
    /// testpmd `mac` forwarding after `start tx_first 32`: 32 bursts sent
    /// once, then every frame that comes back sent again.
    Loop,
}

impl Generator {
    fn forward_mode(self) -> &'static str {
        match self {
            Generator::Flowgen => "--forward-mode=flowgen",
            Generator::Loop => "--forward-mode=mac",
        }
    }

    fn start(self) -> &'static str {
        match self {
            Generator::Flowgen => "start",
            Generator::Loop => "start tx_first 32",
        }
    }

    fn describe(self) -> &'static str {
        match self {
            Generator::Flowgen => "testpmd flowgen (virtio-user) -> reflector -> back",
            Generator::Loop => "testpmd mac forwarding after tx_first 32 (virtio-user) -> reflector -> back, in a loop",
        }
    }
}

/// The generator as one run sets it up.
#[derive(Clone, Copy, Debug)]
pub struct Setup {
    pub generator: Generator,
    /// Its mbuf cache per lcore (testpmd `--mbcache`). The cache takes
    /// back what the generator frees; one too small for what it frees at
    /// once spills into the pool's shared ring, and the generator then
    /// takes colder mbufs from there (see README).
    pub mbuf_cache: u32,
}

/// One cell measured: frames per second back at the generator, and the
/// share of its receive polls that found nothing.
struct Measured {
    pps: f64,
    empty_polls: f64,
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Reflector {
    Ustack,
    Dpdk,
}

/// The generator's received frames so far (its `show port stats` RX-packets).
fn rx_packets(gen: &mut Proc, blocks: &mut usize) -> Result<u64, CliError> {
    gen.cmd("show port stats all");
    *blocks += 1;
    let n = *blocks;
    let marker = "NIC statistics for port 0";
    gen.wait_for("port statistics", Duration::from_secs(20), |o| {
        o.split(marker).nth(n).is_some_and(|b| b.contains("Tx-bps"))
    })?;
    let out = gen.output();
    let block = out.split(marker).nth(n).unwrap_or_default();
    let at = block
        .find("RX-packets:")
        .ok_or_else(|| CliError::Bench("reflect: no RX-packets in testpmd's statistics".into()))?;
    block[at + 11..]
        .split_whitespace()
        .next()
        .and_then(|v| v.parse().ok())
        .ok_or_else(|| CliError::Bench("reflect: unreadable RX-packets in testpmd's statistics".into()))
}

/// The share of the generator's receive polls since `start` that found
/// nothing: each stream's `RX-bursts : N [P% of 0 pkts + ...]` from `show
/// fwd stats all` (with `--record-burst-stats`), weighted by its N.
fn empty_polls(gen: &mut Proc) -> Result<f64, CliError> {
    let from = gen.output().len();
    gen.cmd("show fwd stats all");
    gen.wait_for("forward statistics", Duration::from_secs(20), |o| {
        o.get(from..).is_some_and(|o| o.contains("Accumulated forward statistics for all ports"))
    })?;
    empty_share(&gen.output()[from..])
        .ok_or_else(|| CliError::Bench("reflect: no RX-bursts in testpmd's forward statistics".into()))
}

/// The empty share of the `RX-bursts : N [P% of 0 pkts + ...]` lines in
/// `stats`, weighted by each line's N; `None` without any.
fn empty_share(stats: &str) -> Option<f64> {
    let (mut polls, mut empty) = (0f64, 0f64);
    for line in stats.lines().filter_map(|l| l.trim().strip_prefix("RX-bursts :")) {
        let n: f64 = line.split_whitespace().next().and_then(|v| v.parse().ok()).unwrap_or(0.0);
        // A share under 1% is left out of the list, as is one of no empty polls.
        let pct = line
            .split(['[', '+'])
            .find_map(|part| part.trim().trim_end_matches(']').strip_suffix("% of 0 pkts"))
            .and_then(|v| v.trim().parse::<f64>().ok())
            .unwrap_or(0.0);
        polls += n;
        empty += n * pct / 100.0;
    }
    (polls > 0.0).then(|| empty / polls)
}

/// Frames per second reflected back to the generator.
fn measure(
    which: Reflector,
    setup: Setup,
    queues: usize,
    size: usize,
    seconds: f64,
    cell: usize,
) -> Result<Measured, CliError> {
    let pid = std::process::id();
    let sock = std::env::temp_dir().join(format!("ustack-bench-reflect-{pid}-{cell}.sock"));
    let ctl = std::env::temp_dir().join(format!("ustack-bench-reflect-{pid}-{cell}.ctl"));
    let _ = std::fs::remove_file(&sock);
    let sock_s = sock.display().to_string();
    let q = queues.to_string();
    let (rxq, txq) = (format!("--rxq={queues}"), format!("--txq={queues}"));
    let eal = |prefix: &str| -> Vec<String> {
        ["-l", "0-1", "--no-huge", "-m", "512", "--no-pci", "--file-prefix", prefix]
            .iter()
            .map(|s| s.to_string())
            .collect()
    };
    let _reflector = match which {
        Reflector::Ustack => {
            let exe = std::env::current_exe().map_err(|e| CliError::Bench(format!("reflect: {e}")))?;
            let mut cmd = Command::new(exe);
            // Like DPDK's reflector below: busy-polling, on CPU 0, one
            // thread for every queue pair (one CPU given: one worker).
            cmd.args(["switch", "--reflect", "--queues", &q, "--port", &format!("vhost-user:{sock_s}")])
                .args(["--busy-poll", "100000", "--cores", "0"])
                .args(["--control", &ctl.display().to_string()]);
            let mut p = Proc::spawn(&mut cmd, "ustack switch")?;
            p.wait_for("switch banner", Duration::from_secs(20), |o| o.contains("ustack: switch"))?;
            p
        }
        Reflector::Dpdk => {
            // Its forwarding lcore on CPU 0, the generator's on CPU 1: on a
            // two-core machine the two busy-polling loops must not share one.
            let mut cmd = Command::new("dpdk-testpmd");
            cmd.args(eal(&format!("ustack-bench-vhost-{pid}-{cell}")))
                .args(["--main-lcore", "1"])
                .args(["--vdev", &format!("net_vhost0,iface={sock_s},queues={queues}")])
                .args(["--", "--no-numa", "--total-num-mbufs=16384", &rxq, &txq, "--forward-mode=macswap", "-a"]);
            let mut p = Proc::spawn(&mut cmd, "dpdk-testpmd (net_vhost)")?;
            p.wait_for("vhost socket", Duration::from_secs(30), |_| sock.exists())?;
            p
        }
    };
    let mut cmd = Command::new("stdbuf");
    cmd.args(["-o0", "dpdk-testpmd"])
        .args(eal(&format!("ustack-bench-gen-{pid}-{cell}")))
        .args(["--vdev", &format!("net_virtio_user0,mac=02:00:00:00:00:01,path={sock_s},queues={queues}")])
        .args(["--", "--no-numa", "--total-num-mbufs=16384", &rxq, &txq, setup.generator.forward_mode()])
        .arg(format!("--mbcache={}", setup.mbuf_cache))
        .args([&format!("--txpkts={size}"), "--record-burst-stats", "-i"]);
    let mut gen = Proc::spawn(&mut cmd, "dpdk-testpmd (generator)")?;
    gen.wait_for("testpmd prompt", Duration::from_secs(60), |o| o.contains("testpmd>"))?;
    let mut blocks = 0;
    gen.cmd(setup.generator.start());
    std::thread::sleep(Duration::from_secs(1));
    let r0 = rx_packets(&mut gen, &mut blocks)?;
    let t0 = Instant::now();
    std::thread::sleep(Duration::from_secs_f64(seconds));
    let r1 = rx_packets(&mut gen, &mut blocks)?;
    let secs = t0.elapsed().as_secs_f64();
    let empty_polls = empty_polls(&mut gen)?;
    gen.cmd("stop");
    gen.cmd("quit");
    drop(gen);
    let _ = std::fs::remove_file(&sock);
    let _ = std::fs::remove_file(&ctl);
    Ok(Measured { pps: r1.saturating_sub(r0) as f64 / secs, empty_polls })
}

/// Run the table and print it (or one JSON object with every cell).
pub fn run(setup: Setup, seconds: f64, rounds: u32, json_out: bool) -> Result<(), CliError> {
    let generator = setup.generator;
    let found = Command::new("sh").args(["-c", "command -v dpdk-testpmd"]).stdout(Stdio::null()).status();
    if !found.is_ok_and(|s| s.success()) {
        return Err(CliError::Bench("reflect needs dpdk-testpmd: apt-get install dpdk-dev".into()));
    }
    let mut cells = Vec::new();
    if !json_out {
        let best = if rounds > 1 {
            format!(", best of {rounds} alternating rounds (worst in brackets)")
        } else {
            String::new()
        };
        println!(
            "reflect: {}, generator's mbuf cache {}, {seconds} s per cell{best}, Mpps received by the generator",
            generator.describe(),
            setup.mbuf_cache
        );
        println!("  (idle: the share of the generator's receive polls that found nothing, mean over the rounds)");
        println!(
            "{:>6} {:>6} {:>20} {:>20} {:>8} {:>12} {:>12} {:>12} {:>12}",
            "size", "queues", "ustack Mpps", "DPDK Mpps", "ratio", "ustack Gb/s", "DPDK Gb/s", "idle ustack", "idle DPDK"
        );
    }
    let mut cell = 0;
    for queues in QUEUES {
        for size in SIZES {
            // ustack and DPDK take turns, so a disturbance of a few
            // seconds falls on both sides alike over the rounds.
            let (mut us, mut ds) = (Vec::new(), Vec::new());
            for _ in 0..rounds {
                cell += 1;
                us.push(measure(Reflector::Ustack, setup, queues, size, seconds, cell)?);
                cell += 1;
                ds.push(measure(Reflector::Dpdk, setup, queues, size, seconds, cell)?);
            }
            let mean_idle = |v: &[Measured]| v.iter().map(|m| m.empty_polls).sum::<f64>() / v.len() as f64;
            let (ui, di) = (mean_idle(&us), mean_idle(&ds));
            let (us, ds): (Vec<f64>, Vec<f64>) = (us.iter().map(|m| m.pps).collect(), ds.iter().map(|m| m.pps).collect());
            let best = |v: &[f64]| v.iter().copied().fold(0.0, f64::max);
            let worst = |v: &[f64]| v.iter().copied().fold(f64::INFINITY, f64::min);
            let (u, d) = (best(&us), best(&ds));
            let ratio = if d > 0.0 { u / d } else { f64::NAN };
            let gbps = |pps: f64| pps * size as f64 * 8.0 / 1e9;
            if !json_out {
                let mpps = |b: f64, w: f64| {
                    if rounds > 1 {
                        format!("{:.3} [{:.3}]", b / 1e6, w / 1e6)
                    } else {
                        format!("{:.3}", b / 1e6)
                    }
                };
                println!(
                    "{size:>6} {queues:>6} {:>20} {:>20} {ratio:>7.2}x {:>12.2} {:>12.2} {:>11.0}% {:>11.0}%",
                    mpps(u, worst(&us)),
                    mpps(d, worst(&ds)),
                    gbps(u),
                    gbps(d),
                    ui * 100.0,
                    di * 100.0
                );
            }
            cells.push(json!({
                "size": size, "queues": queues,
                "ustack_pps": u, "dpdk_pps": d, "ratio": ratio,
                "ustack_gbps": gbps(u), "dpdk_gbps": gbps(d),
                "ustack_rounds_pps": us, "dpdk_rounds_pps": ds,
                "ustack_generator_empty_polls": ui, "dpdk_generator_empty_polls": di,
            }));
        }
    }
    if json_out {
        let generator = format!("{generator:?}").to_lowercase();
        println!(
            "{}",
            json!({
                "workload": "reflect", "generator": generator, "generator_mbuf_cache": setup.mbuf_cache,
                "seconds": seconds, "rounds": rounds, "cells": cells,
            })
        );
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::empty_share;

    #[test]
    fn empty_polls_are_weighted_by_each_streams_polls() {
        // testpmd 22.11's `show fwd stats all` on two streams, abridged.
        let stats = "
  ------- Forward Stats for RX Port= 0/Queue= 0 -> TX Port= 0/Queue= 0 -------
  RX-packets: 100        TX-packets: 100        TX-dropped: 0
  RX-bursts : 300 [83% of 0 pkts + 15% of 8 pkts + 2% of other]
  TX-bursts : 30 [96% of 8 pkts + 4% of other]
  ------- Forward Stats for RX Port= 0/Queue= 1 -> TX Port= 0/Queue= 1 -------
  RX-bursts : 100 [99% of 32 pkts + 1% of other]
  +++++++++++++++ Accumulated forward statistics for all ports+++++++++++++++
";
        let share = empty_share(stats).expect("two lines");
        assert!((share - 300.0 * 0.83 / 400.0).abs() < 1e-9, "{share}");
        assert_eq!(empty_share("RX-packets: 5"), None);
        assert_eq!(empty_share("  RX-bursts : 7 [100% of 0 pkts]"), Some(1.0));
    }
}
