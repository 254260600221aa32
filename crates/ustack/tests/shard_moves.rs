//! Connections moved between shards mid-stream keep their byte streams:
//! `ustack up --cores 2 --tcp-echo 7 --move-every 65536` on a multi-queue
//! TAP (the kernel steers its queues by ustack's hash) hands every echo
//! connection to the other shard each time it has echoed 64 KiB, while
//! Linux clients stream 2 MiB each through it at once and check that the
//! echo is exactly what they sent (SHA-256). The shard a connection moves
//! to tells the TAP's steering program (its flow map) to send the flow's
//! frames to its queue; frames in flight during a move cross to the shard
//! that holds the connection through the bounded handoff ring.
//!
//! What must hold: every byte echoed, in order, and every connection
//! closed by both sides in the usual way (a frame that reached a shard
//! without its connection while it was open would have drawn a reset, and
//! the client would have seen it); the shards' counters show moves in
//! every direction, as many received as sent, none lost, and the TAP told
//! of each shard's arrivals (the frames in flight during a move, handed
//! over, are shown, not asserted). Not asserted: resets and handoff drops, which
//! a loaded machine can draw without harm to any stream (a duplicate ACK
//! of our FIN that comes late, through a handoff, after the connection has
//! ended draws a reset, as it would from Linux; a frame handed round
//! shards that learned late of a move is dropped after `MAX_HOPS` crossings,
//! and TCP sends it again).
//!
//! Topology: a namespace of its own, the TAP's kernel side 10.23.9.1/24
//! (`--host-ip`), the stack 10.23.9.2. The clients are
//! `tests/scripts/shard_stream.py` (asyncio, their own 60 s deadline,
//! killed at 90 s). Needs root and python3; skips otherwise.

#[macro_use]
mod support;

use support::tcp::{python, Bg, SECS};
use support::veth::{Peer, VethPair};
use support::{run_bounded, ustack_bin, Netns};

const CONNECTIONS: usize = 24;
const BYTES: usize = 2 << 20;
const MOVE_EVERY: usize = 64 << 10;

fn script() -> &'static str {
    concat!(env!("CARGO_MANIFEST_DIR"), "/tests/scripts/shard_stream.py")
}

fn snapshot(ns: &Netns, dev: &str) -> serde_json::Value {
    let out = ns.exec(&[ustack_bin(), "stats", "--device", dev, "--json"], SECS(10));
    assert!(out.success(), "ustack stats: {out}");
    serde_json::from_slice(&out.stdout).expect("stats --json is JSON")
}

/// The snapshot once the shards have published what the clients did (they
/// publish four times a second): as many moves received as sent, the same
/// in two snapshots half a second apart (or after 20 s).
fn settled(ns: &Netns, dev: &str) -> serde_json::Value {
    let deadline = std::time::Instant::now() + SECS(20);
    let mut last = None;
    loop {
        let snap = snapshot(ns, dev);
        let sum = |name: &str| -> u64 {
            let shards = snap["shards"].as_array().map(Vec::as_slice).unwrap_or_default();
            shards.iter().filter_map(|s| s["interfaces"][0]["device_counters"][name].as_u64()).sum()
        };
        let moves = (sum("shard_moves_out"), sum("shard_moves_in"));
        if (moves.0 == moves.1 && last == Some(moves)) || std::time::Instant::now() > deadline {
            return snap;
        }
        last = Some(moves);
        std::thread::sleep(std::time::Duration::from_millis(500));
    }
}

/// Two shards on a TAP: each connection goes back and forth between them.
#[test]
fn connections_moved_between_two_shards_mid_stream_keep_their_bytes() {
    moved_mid_stream(2, Link::Tap(9));
}

/// Three shards (on two cores): each connection goes round all three, so
/// a flow lives on a shard that is neither its home nor the shard it came
/// from, and the home is told where its frames go now.
#[test]
fn connections_moved_round_three_shards_mid_stream_keep_their_bytes() {
    moved_mid_stream(3, Link::Tap(10));
}

/// Two shards on a veth through AF_PACKET fan-out, which cannot be told
/// about one flow: every frame of a moved flow reaches its home shard and
/// crosses to the shard that holds the connection.
#[test]
fn connections_moved_on_af_packet_keep_their_bytes_through_handoffs() {
    skip_unless!("ethtool");
    moved_mid_stream(2, Link::AfPacket(63));
}

/// The tests here each load both cores: one at a time.
static ONE_AT_A_TIME: std::sync::Mutex<()> = std::sync::Mutex::new(());

/// Where the stack runs: a multi-queue TAP with the kernel's side at
/// 10.23.N.1 (its steering program has a flow map), or a veth whose other
/// end has the kernel's 10.77.N.1 (AF_PACKET fan-out, no map).
enum Link {
    Tap(u8),
    AfPacket(u8),
}

fn moved_mid_stream(shards: usize, link: Link) {
    let tap = matches!(link, Link::Tap(_));
    let _serial = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    skip_unless!(python());
    let (mut tap_ns, mut pair): (Option<Netns>, Option<VethPair>) = (None, None);
    let (stack_ns, client_ns, dev, stack_ip, mut argv) = match link {
        Link::Tap(subnet) => {
            let ns = tap_ns.insert(Netns::new(&format!("shmove{shards}")));
            ns.exec_ok(&["sysctl", "-qw", "net.ipv6.conf.default.disable_ipv6=1"], SECS(5));
            let dev = format!("tap:{}", support::short_name("shm", shards as u8));
            let host_ip = format!("10.23.{subnet}.1/24");
            (&*ns, &*ns, dev, format!("10.23.{subnet}.2"), vec!["--host-ip".to_string(), host_ip])
        }
        Link::AfPacket(subnet) => {
            let p = pair.insert(VethPair::new("shmv", subnet, Peer::Kernel));
            (&p.stack_ns, &p.peer_ns, format!("af_packet:{}", p.stack_if), p.stack_ip(), Vec::new())
        }
    };
    let ip = format!("{stack_ip}/24");
    let (every, cores) = (MOVE_EVERY.to_string(), shards.to_string());
    argv.extend(["--tcp-echo", "7", "--cores", &cores, "--move-every", &every].map(String::from));
    let mut argv: Vec<&str> = argv.iter().map(String::as_str).collect();
    argv.splice(0..0, [ustack_bin(), "up", "--device", &dev, "--ip", &ip]);
    let mut stack = Bg::spawn(stack_ns, &argv);
    let banner = format!("with {shards} shards");
    stack.wait_ready(&banner, SECS(15), |e| e.contains(&banner) && e.contains("TCP echo on port 7"));

    let (n, size) = (CONNECTIONS.to_string(), BYTES.to_string());
    let t = std::time::Instant::now();
    let clients = client_ns.command(&[python(), script(), &stack_ip, "7", &n, &size, "60"]);
    let out = run_bounded(clients, None, SECS(90));
    eprintln!("clients took {:.1} s; stderr: {}", t.elapsed().as_secs_f64(), out.stderr);
    let result = support::client_result(&out, CONNECTIONS, &stack.stderr_now());
    assert_eq!(result["bytes"].as_u64(), Some((CONNECTIONS * BYTES) as u64));

    let snap = settled(stack_ns, &dev);
    eprintln!("sharding: {}", snap["sharding"]);
    let per_shard = snap["shards"].as_array().expect("per-shard snapshots");
    assert_eq!(per_shard.len(), shards);
    let mut moved_out = 0;
    for (k, s) in per_shard.iter().enumerate() {
        let d = &s["interfaces"][0]["device_counters"];
        let c = &s["counters"];
        // Each connection moves on every 64 KiB it echoes, from whichever
        // shard holds it to the next: every shard sends and receives moves.
        assert!(d["shard_moves_out"].as_u64() > Some(0) && d["shard_moves_in"].as_u64() > Some(0), "shard {k}: {d}");
        assert_eq!(d["shard_moves_lost"].as_u64(), Some(0), "shard {k}: {d}");
        if tap {
            // Each shard told the TAP where the flows it took in go.
            assert!(d["shard_moves_steered"].as_u64() > Some(0), "shard {k}: {d}");
            assert_eq!(d["shard_steer_failures"].as_u64(), Some(0), "shard {k}: {d}");
        } else {
            // AF_PACKET cannot be told: a moved flow's frames reach its
            // home and cross to the shard holding the connection.
            assert_eq!(d["shard_moves_steered"].as_u64(), Some(0), "shard {k}: {d}");
            assert!(d["shard_handoffs_in"].as_u64() > Some(0), "shard {k}: {d}");
        }
        eprintln!("shard {k}: resets sent {}, handoff drops {}", c["tcp_rst_sent"], d["shard_handoff_drops"]);
        moved_out += d["shard_moves_out"].as_u64().unwrap_or(0);
    }
    let sharding = &snap["sharding"];
    assert_eq!(sharding["moves"].as_u64(), Some(moved_out), "every move sent was received: {sharding}");
    // A connection moves at most BYTES / MOVE_EVERY times (fewer: the echo
    // reads what its receive buffer holds before it looks), and every one
    // moves at least once.
    assert!(moved_out >= CONNECTIONS as u64, "{moved_out} moves for {CONNECTIONS} connections: {sharding}");
    assert_eq!(sharding["moves_lost"].as_u64(), Some(0), "{sharding}");

    let (out, err) = stack.stop_both("INT", SECS(10));
    assert!(out.contains("tcp_echo_7_moved"), "the echo's moves on exit: {out}\n{err}");
    assert!(out.contains("shard_moves_out"), "per-shard move counters on exit: {out}\n{err}");
}
