//! Path MTU discovery against a Linux router: the stack serves a 64 MiB file
//! to a peer two hops away whose path is narrower than the stack's link.
//!
//! Topology (N = 1): namespace R holds the stack's TAP (`pm1p<pid>`; the
//! stack 10.69.1.2/24, R's side 10.69.1.1/24 and the stack's gateway; TAP
//! opened with `offload=off`, so every segment on it is a wire-sized one)
//! and forwards to namespace P over a veth whose R end has MTU 1280 (the
//! router's far link) and whose P end keeps 1500, so P offers an MSS of
//! 1460 and only the router knows the path is narrower:
//!
//! ```text
//!  ustack ─TAP (1500)─ [R: 10.69.1.1 fwd, 10.70.1.1 MTU 1280] ─veth─ [P: 10.70.1.2 MTU 1500]
//! ```
//!
//! The stack's first full-sized segments carry DF; R cannot forward them and
//! answers "fragmentation needed" with MTU 1280. What it shows: curl in P
//! gets the 64 MiB with SHA-256 equal; the stack believed the message
//! (`pmtu_lowered`) and counted no forged ones; a capture on the TAP shows
//! the stack resending in 1280-byte packets sooner after the ICMP than any
//! retransmission timer could fire (200 ms, the RTO's floor): no RTO-length
//! stall. The second test forges messages from R during such a download
//! (a sequence number outside the window, no connection, a flood of
//! 3,400) and shows they change nothing and are each counted; the core's
//! `tests/path_mtu.rs` covers the floor and the cache's bound for believed
//! messages.
//!
//! Needs root, curl, ethtool, tcpdump, sha256sum (skips otherwise). Bounded
//! in time; namespaces, processes and files are removed by guards.

#[macro_use]
mod support;

use std::time::Duration;
use support::tcp::*;
use support::Netns;

const MIB: usize = 1 << 20;
const FAR_MTU: usize = 1280;

/// `(seconds, frame)` of each record of a classic little-endian pcap file.
fn records(bytes: &[u8]) -> Vec<(f64, &[u8])> {
    assert!(bytes.len() >= 24 && bytes[..4] == [0xd4, 0xc3, 0xb2, 0xa1], "not a little-endian µs pcap");
    let u32_at = |at: usize| u32::from_le_bytes(bytes[at..at + 4].try_into().unwrap());
    let mut out = Vec::new();
    let mut at = 24;
    while at + 16 <= bytes.len() {
        let incl = u32_at(at + 8) as usize;
        if at + 16 + incl > bytes.len() {
            break; // the last record, cut short when the capture stopped
        }
        let t = f64::from(u32_at(at)) + f64::from(u32_at(at + 4)) / 1e6;
        out.push((t, &bytes[at + 16..at + 16 + incl]));
        at += 16 + incl;
    }
    out
}

/// The topology above, test `idx` of this file: (R, P, the TAP's name).
fn topology(tag: &str, idx: u8) -> (Netns, Netns, String) {
    let r = Netns::new(&format!("{tag}-r"));
    let p = Netns::new(&format!("{tag}-p"));
    quiet_namespace(&r);
    quiet_namespace(&p);
    let (rc, pd) = (support::short_name("prc", idx), support::short_name("ppd", idx));
    r.exec_ok(&["ip", "link", "add", &rc, "mtu", &FAR_MTU.to_string(), "type", "veth", "peer", "name", &pd, "netns", &p.name], SECS(5));
    r.exec_ok(&["sysctl", "-qw", "net.ipv4.ip_forward=1"], SECS(5));
    r.exec_ok(&["ip", "addr", "add", "10.70.1.1/24", "dev", &rc], SECS(5));
    r.exec_ok(&["ip", "link", "set", &rc, "up"], SECS(5));
    p.exec_ok(&["ip", "link", "set", &pd, "mtu", "1500"], SECS(5));
    p.exec_ok(&["ip", "addr", "add", "10.70.1.2/24", "dev", &pd], SECS(5));
    p.exec_ok(&["ip", "link", "set", &pd, "up"], SECS(5));
    p.exec_ok(&["ip", "route", "add", "10.69.1.0/24", "via", "10.70.1.1"], SECS(5));
    (r, p, support::short_name("pm", idx))
}

/// The stack on `tap`, behind R, with the kernel's offloads off.
fn opts(tap: &str) -> StackOpts {
    StackOpts {
        tap: tap.to_owned(),
        ip: "10.69.1.2/24".into(),
        gateway: Some("10.69.1.1".into()),
        host_ip: Some("10.69.1.1/24".into()),
        pcap: None,
        offload: false,
    }
}

#[test]
fn curl_through_a_narrower_path_completes_with_pmtud() {
    skip_unless!("curl", "ethtool", "sha256sum", "ss", "tcpdump");
    let dir = TempDir::new("pmtud");
    std::fs::create_dir_all(dir.path("www")).unwrap();
    let big = dir.path("www").join("big.bin");
    write_random_file(&big, 64 * MIB, 0x6464_0020);

    let (r, p, tap) = topology("pmtud", 1);
    let u = start_tcp_stack(&r, &opts(&tap), &dir.file("www"));

    // The start of the transfer, where discovery happens: headers only.
    let pcap = dir.file("pmtud.pcap");
    let mut dump = Bg::spawn(
        &r,
        &["tcpdump", "-i", &tap, "-n", "-s", "96", "-c", "4000", "--immediate-mode", "-U", "-w", &pcap, "icmp", "or", "tcp"],
    );
    dump.wait_ready("listening", SECS(10), |e| e.contains("listening on"));

    let url = format!("http://10.69.1.2:{HTTP_PORT}/big.bin");
    let out = curl_get(&p, &url, &dir.file("got.bin"), Duration::from_secs(300));
    assert!(out.success(), "curl 64 MiB across the narrower path: {out}\n{}", diagnostics(&r, &tap));
    assert_eq!(file_len(&dir.path("got.bin")), (64 * MIB) as u64, "{out}");
    assert_eq!(sha256_file(&dir.path("got.bin")), sha256_file(&big), "64 MiB body differs from the file served");
    dump.stop("INT", SECS(10));

    let (s, c) = stop_stack(u);
    eprintln!("{}", s.stdout);
    assert!(counter(&c, "icmp_frag_needed_rx") >= 1, "no fragmentation-needed reached the stack:\n{}", s.stdout);
    assert!(counter(&c, "pmtu_lowered") >= 1, "the path MTU was never lowered:\n{}", s.stdout);
    for name in ["drop_icmp_pmtu_unmatched", "drop_icmp_pmtu_bad_seq", "pmtu_floor_applied"] {
        assert_eq!(counter(&c, name), 0, "{name}; counters:\n{}", s.stdout);
    }

    // In the capture: R's first "fragmentation needed" (type 3 code 4,
    // next-hop MTU 1280), then the stack's first segment of at most 1280
    // bytes carrying data.
    let bytes = std::fs::read(&pcap).unwrap_or_else(|e| panic!("read {pcap}: {e}"));
    let recs = records(&bytes);
    let ipv4 = |f: &[u8]| f.len() >= 34 && f[12..14] == [0x08, 0x00];
    let icmp_at = recs
        .iter()
        .find(|(_, f)| ipv4(f) && f[23] == 1 && f.len() >= 42 && f[34] == 3 && f[35] == 4)
        .map(|(t, f)| (*t, u16::from_be_bytes([f[40], f[41]])))
        .unwrap_or_else(|| panic!("no fragmentation-needed in the first {} frames", recs.len()));
    assert_eq!(usize::from(icmp_at.1), FAR_MTU, "next-hop MTU in R's message");
    let resend_at = recs
        .iter()
        .filter(|(t, f)| *t >= icmp_at.0 && ipv4(f) && f[23] == 6 && f[26..30] == [10, 69, 1, 2])
        .find(|(_, f)| {
            let total = usize::from(u16::from_be_bytes([f[16], f[17]]));
            let tcp_header = usize::from(f.get(46).copied().unwrap_or(0) >> 4) * 4;
            total <= FAR_MTU && total > 20 + tcp_header
        })
        .map(|(t, _)| *t)
        .expect("no data segment of the new size after the ICMP message");
    let gap = resend_at - icmp_at.0;
    eprintln!("fragmentation needed at {:.6}, first 1280-byte segment {:.3} ms later", icmp_at.0, gap * 1e3);
    assert!(gap < 0.2, "the stack waited {gap:.3} s after the ICMP message: that is an RTO, not PMTUD");
    drop(p);
    drop(r);
}

/// Forges "fragmentation needed" from R towards the stack (a raw ICMP
/// socket: the kernel adds the outer IPv4 header, R's address). It first
/// reads, off the TAP, the sequence number of a data segment the stack sends
/// to PEER, then sends:
/// - N_BAD messages quoting that connection with the sequence number half the
///   space away (outside SND.UNA..SND.NXT whatever the window), next-hop
///   MTUs 600 and 68 in turn (68: below the stack's floor);
/// - N_FLOOD messages quoting no connection: the same peer on a port that is
///   not the connection's, and random destinations, ports and sequence
///   numbers, next-hop MTUs 0 (an old router), 68, 296, 576 and 1000.
///
/// Prints `port SEQ bad N_BAD unmatched N_FLOOD`.
const FORGE: &str = r#"
import random, socket, struct, sys, time
tap, stack, peer, sport, n_bad, n_flood = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4]), int(sys.argv[5]), int(sys.argv[6])
def csum(b):
    if len(b) % 2:
        b += b'\0'
    s = sum(struct.unpack('!%dH' % (len(b) // 2), b))
    while s >> 16:
        s = (s & 0xffff) + (s >> 16)
    return ~s & 0xffff
ip4 = socket.inet_aton
sn = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, socket.htons(0x0800))
sn.bind((tap, 0))
sn.settimeout(1)
deadline = time.time() + 15
while True:
    if time.time() > deadline:
        sys.exit('no data segment from the stack on ' + tap)
    try:
        f = sn.recv(2048)
    except socket.timeout:
        continue
    if len(f) < 54 or f[12:14] != b'\x08\x00' or f[23] != 6 or f[26:30] != ip4(stack) or f[30:34] != ip4(peer):
        continue
    ihl = (f[14] & 15) * 4
    t = 14 + ihl
    total = struct.unpack('!H', f[16:18])[0]
    sp, dp, seq = struct.unpack('!HHI', f[t:t + 8])
    if sp == sport and total > ihl + (f[t + 12] >> 4) * 4:
        break
sn.close()
def forge(src, dst, sp, dp, seq, mtu):
    q = struct.pack('!BBHHHBBH4s4s', 0x45, 0, 1280, random.getrandbits(16), 0x4000, 64, 6, 0, ip4(src), ip4(dst))
    q = q[:10] + struct.pack('!H', csum(q)) + q[12:]
    q += struct.pack('!HHIIBBHHH', sp, dp, seq, 0, 0x50, 0x10, 65535, 0, 0)
    m = struct.pack('!BBHHH', 3, 4, 0, 0, mtu) + q
    return m[:2] + struct.pack('!H', csum(m)) + m[4:]
bad_seq = (seq + 0x80000000) & 0xffffffff
msgs = [forge(stack, peer, sport, dp, bad_seq, (600, 68)[i % 2]) for i in range(n_bad)]
rnd = random.Random(seq)
other = lambda: dp + 1 + rnd.randrange(60000)
for i in range(n_flood):
    mtu = (0, 68, 296, 576, 1000)[i % 5]
    if i % 4 == 0:
        msgs.append(forge(stack, peer, sport, other() % 65536 or 1, rnd.getrandbits(32), mtu))
    else:
        dst = '10.%d.%d.%d' % (rnd.randrange(71, 250), rnd.randrange(256), rnd.randrange(1, 255))
        msgs.append(forge(stack, dst, rnd.randrange(1, 65536), rnd.randrange(1, 65536), rnd.getrandbits(32), mtu))
s = socket.socket(socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_ICMP)
for m in msgs:
    s.sendto(m, (stack, 0))
print('port', dp, 'seq', seq, 'bad', n_bad, 'unmatched', n_flood)
"#;

/// `ustack stats --json` of the stack on `tap` in `ns`.
fn stats(ns: &Netns, tap: &str) -> serde_json::Value {
    let out = ns.exec(&[support::ustack_bin(), "stats", "--device", &format!("tap:{tap}"), "--json"], SECS(10));
    assert!(out.success(), "ustack stats --json: {out}");
    serde_json::from_slice(&out.stdout).unwrap_or_else(|e| panic!("ustack stats --json ({e}): {out}"))
}

fn stat(snap: &serde_json::Value, name: &str) -> u64 {
    snap["counters"][name].as_u64().unwrap_or_else(|| panic!("no counter {name} in {snap}"))
}

/// RFC 5927 against the real stack: while curl in P downloads through R
/// (the path already discovered at 1280), R forges "fragmentation needed"
/// for that connection with a sequence number outside its window, and
/// floods more for no connection at all. None is believed: the path MTU
/// cache holds the one real destination, no MTU is lowered further (a
/// capture after the forgeries still shows 1280-byte packets, none below
/// the floor), and each forged message is counted exactly once, as
/// `drop_icmp_pmtu_bad_seq` or `drop_icmp_pmtu_unmatched`. The download
/// still completes with SHA-256 equal.
#[test]
fn forged_fragmentation_needed_changes_nothing_and_is_counted() {
    skip_unless!("curl", "ethtool", "sha256sum", "tcpdump", "python3");
    const N_BAD: u64 = 400;
    const N_FLOOD: u64 = 3000;
    let dir = TempDir::new("pmtud-forged");
    std::fs::create_dir_all(dir.path("www")).unwrap();
    let big = dir.path("www").join("big.bin");
    write_random_file(&big, 16 * MIB, 0x6464_0021);
    let forge = dir.path("forge.py");
    std::fs::write(&forge, FORGE).unwrap();

    let (r, p, tap) = topology("pmtuf", 2);
    let u = start_tcp_stack(&r, &opts(&tap), &dir.file("www"));
    // The flood is queued in front of the TAP at once: room for all of it,
    // so every forged message reaches the stack and the counts are exact.
    r.exec_ok(&["ip", "link", "set", &tap, "txqueuelen", "10000"], SECS(5));

    // A download slow enough (4 MiB/s: 4 s) to forge during it.
    let url = format!("http://10.69.1.2:{HTTP_PORT}/big.bin");
    let got = dir.file("got.bin");
    std::thread::scope(|scope| {
        let curl = scope.spawn(|| {
            p.exec(&["curl", "-sS", "--fail", "--max-time", "60", "--limit-rate", "4M", "-o", &got, &url], SECS(70))
        });
        // Discovery first: the real message from R, believed.
        let deadline = std::time::Instant::now() + SECS(20);
        let before = loop {
            let snap = stats(&r, &tap);
            if stat(&snap, "pmtu_lowered") >= 1 {
                break snap;
            }
            assert!(std::time::Instant::now() < deadline, "the path MTU was never lowered: {snap}");
            std::thread::sleep(Duration::from_millis(50));
        };
        assert_eq!(before["path_mtu_entries"], 1, "{before}");

        let forge = dir.file("forge.py");
        let argv = [python(), &forge, &tap, "10.69.1.2", "10.70.1.2", &HTTP_PORT.to_string(), &N_BAD.to_string(), &N_FLOOD.to_string()];
        let out = r.exec(&argv, SECS(30));
        assert!(out.success(), "forging: {out}");
        eprintln!("forged: {}", out.stdout_str().trim());

        // Every forged message reaches the stack and is counted, once.
        let sent = N_BAD + N_FLOOD;
        let rx = |s: &serde_json::Value| stat(s, "icmp_frag_needed_rx");
        let deadline = std::time::Instant::now() + SECS(20);
        let after = loop {
            let snap = stats(&r, &tap);
            if rx(&snap) >= rx(&before) + sent || std::time::Instant::now() >= deadline {
                break snap;
            }
            std::thread::sleep(Duration::from_millis(50));
        };
        let delta = |name: &str| stat(&after, name) - stat(&before, name);
        let link = r.exec(&["ip", "-s", "link", "show", "dev", &tap], SECS(5)).stdout_str();
        assert_eq!(delta("icmp_frag_needed_rx"), sent, "not every forged message reached the stack:\n{link}\n{after}");
        assert_eq!(delta("drop_icmp_pmtu_bad_seq"), N_BAD, "{after}");
        assert_eq!(delta("drop_icmp_pmtu_unmatched"), N_FLOOD, "{after}");
        for name in ["pmtu_lowered", "pmtu_floor_applied", "drop_icmp_pmtu_not_lower", "drop_icmp_checksum", "drop_icmp_malformed"] {
            assert_eq!(delta(name), 0, "{name} moved: {after}");
        }
        assert_eq!(after["path_mtu_entries"], 1, "the cache grew: {after}");

        // The connection still sends 1280-byte packets: its MSS did not move.
        let pcap = dir.file("after.pcap");
        let out = r.exec(
            &["tcpdump", "-i", &tap, "-n", "-s", "64", "-c", "200", "-w", &pcap, "tcp", "and", "src", "host", "10.69.1.2"],
            SECS(20),
        );
        assert!(out.success(), "tcpdump after the forgeries: {out}");
        let bytes = std::fs::read(&pcap).unwrap_or_else(|e| panic!("read {pcap}: {e}"));
        let lens: Vec<usize> = records(&bytes)
            .iter()
            .filter(|(_, f)| f.len() >= 34 && f[12..14] == [0x08, 0x00])
            .map(|(_, f)| usize::from(u16::from_be_bytes([f[16], f[17]])))
            .collect();
        assert!(!lens.is_empty(), "no packet from the stack after the forgeries");
        assert_eq!(lens.iter().max(), Some(&FAR_MTU), "packet sizes after the forgeries: {lens:?}");

        let out = curl.join().unwrap();
        assert!(out.success(), "curl during the forgeries: {out}\n{}", diagnostics(&r, &tap));
    });
    assert_eq!(sha256_file(&dir.path("got.bin")), sha256_file(&big), "16 MiB body differs from the file served");

    let (s, c) = stop_stack(u);
    // One believed message (R's first); R's later ones found it lowered.
    assert_eq!(counter(&c, "pmtu_lowered"), 1, "{}", s.stdout);
    drop(p);
    drop(r);
}
