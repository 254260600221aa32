//! `AfPacketDevice` on both ends of a veth pair inside a namespace this test
//! creates: frames cross both ways through the rings with their bytes
//! intact, in order, with none lost, many times round each ring; the stats
//! count them. Needs root (skips with a printed reason otherwise).

use std::process::Command;
use std::time::{Duration, Instant as StdInstant};

use ustack_core::phy::{Device, RxQueue, TxMeta, TxQueue};
use ustack_core::time::Instant;
use ustack_device::{AfPacketConfig, AfPacketDevice, RingVersion, Waitable};

fn ip(args: &[&str]) -> bool {
    Command::new("ip").args(args).status().map(|s| s.success()).unwrap_or(false)
}

/// A namespace with a veth pair in it, deleted on drop.
struct Ns(String);

impl Drop for Ns {
    fn drop(&mut self) {
        ip(&["netns", "del", &self.0]);
    }
}

fn is_root() -> bool {
    // SAFETY: no arguments.
    unsafe { libc::geteuid() == 0 }
}

/// Move the calling thread into namespace `name`.
fn enter(name: &str) {
    let path = std::ffi::CString::new(format!("/run/netns/{name}")).unwrap();
    // SAFETY: a NUL-terminated path; the descriptor is closed below.
    let fd = unsafe { libc::open(path.as_ptr(), libc::O_RDONLY | libc::O_CLOEXEC) };
    assert!(fd >= 0, "open /run/netns/{name}");
    // SAFETY: a namespace descriptor, for this thread only.
    let r = unsafe { libc::setns(fd, libc::CLONE_NEWNET) };
    // SAFETY: our own descriptor.
    unsafe { libc::close(fd) };
    assert_eq!(r, 0, "setns {name}");
}

/// An Ethernet frame of `len` bytes: broadcast, a local experimental
/// EtherType, then `seq` and bytes derived from it.
fn frame(buf: &mut [u8], seq: u32) {
    buf[..6].fill(0xff);
    buf[6..12].copy_from_slice(&[0x02, 0, 0, 0, 0, 1]);
    buf[12..14].copy_from_slice(&0x88b5u16.to_be_bytes());
    buf[14..18].copy_from_slice(&seq.to_be_bytes());
    for (i, b) in buf[18..].iter_mut().enumerate() {
        *b = (seq as usize).wrapping_mul(31).wrapping_add(i) as u8;
    }
}

fn len_of(seq: u32) -> usize {
    60 + (seq as usize * 97) % 1400
}

/// Send `count` frames from `a` to `b` in bursts, draining `b` as they come;
/// returns how many `b` received (all checked).
fn send_and_check(a: &mut AfPacketDevice, b: &mut AfPacketDevice, count: u32) -> u32 {
    let now = Instant::ZERO;
    let (mut sent, mut got) = (0u32, 0u32);
    let deadline = StdInstant::now() + Duration::from_secs(30);
    while got < count {
        assert!(StdInstant::now() < deadline, "only {got} of {count} frames arrived ({sent} sent)");
        {
            let (_, tx) = a.queues();
            for _ in 0..64 {
                if sent == count {
                    break;
                }
                let seq = sent;
                if tx.send(len_of(seq), TxMeta::default(), |buf| frame(buf, seq)).is_err() {
                    break;
                }
                sent += 1;
            }
            tx.flush();
        }
        let (rx, _) = b.queues();
        while let Some((f, _meta)) = rx.recv(now) {
            if f.len() < 18 || f[12..14] != 0x88b5u16.to_be_bytes() {
                continue; // not ours (nothing else should be on this veth)
            }
            let seq = u32::from_be_bytes(f[14..18].try_into().unwrap());
            assert_eq!(seq, got, "frames out of order or lost");
            let mut want = vec![0u8; len_of(seq)];
            frame(&mut want, seq);
            assert!(f == &want[..], "frame {seq} altered");
            got += 1;
        }
    }
    got
}

#[test]
fn frames_cross_both_rings_intact_in_order_many_times_round() {
    if !is_root() {
        eprintln!("SKIPPED: not root");
        return;
    }
    let ns = Ns(format!("ust-apring-{}", std::process::id()));
    let _ = Command::new("ip").args(["netns", "del", &ns.0]).stderr(std::process::Stdio::null()).status();
    assert!(ip(&["netns", "add", &ns.0]), "ip netns add");
    let name = ns.0.clone();
    std::thread::spawn(move || {
        enter(&name);
        assert!(ip(&["link", "add", "apa", "type", "veth", "peer", "name", "apb"]), "ip link add");
        for dev in ["apa", "apb"] {
            let _ = Command::new("sysctl").args(["-qw", &format!("net.ipv6.conf.{dev}.disable_ipv6=1")]).status();
        }
        let stats = |d: &AfPacketDevice| d.device_stats().into_iter().collect::<std::collections::BTreeMap<_, _>>();
        let n = 5000;
        let mut last = None;
        for ring in [RingVersion::V3, RingVersion::V2] {
            // Small rings, so the test goes round each many times (V2: 80
            // slots, more than a burst of 64).
            let blocks = if ring == RingVersion::V2 { 88 } else { 4 };
            let cfg = AfPacketConfig { blocks, block_size: 64 * 1024, tx_frames: 32, tso: false, ring, ..Default::default() };
            drop(last.take());
            let mut a = AfPacketDevice::open_with("apa", cfg).unwrap_or_else(|e| panic!("open apa: {e}"));
            let mut b = AfPacketDevice::open_with("apb", cfg).unwrap_or_else(|e| panic!("open apb: {e}"));
            // Let both links come up (veth needs both ends up).
            std::thread::sleep(Duration::from_millis(200));
            assert_eq!(send_and_check(&mut a, &mut b, n), n, "{ring:?}");
            assert_eq!(send_and_check(&mut b, &mut a, n), n, "{ring:?}");
            let (sa, sb) = (stats(&a), stats(&b));
            eprintln!("{ring:?} a: {sa:?}\n{ring:?} b: {sb:?}");
            assert_eq!(sa["tx_frames"], u64::from(n));
            assert!(sb["rx_frames"] >= u64::from(n));
            assert!(sb["rx_blocks"] > 2 * blocks as u64, "{ring:?}: ring not gone round: {sb:?}");
            assert_eq!(sb["rx_kernel_drops"], 0, "{ring:?}: {sb:?}");
            assert!(a.failure().is_none() && b.failure().is_none());
            last = Some((a, b));
        }
        let (mut a, _b) = last.unwrap();
        // Deleting the pair: the failure is reported, in bounded time.
        assert!(ip(&["link", "del", "apa"]));
        let t = StdInstant::now();
        loop {
            {
                let (_, tx) = a.queues();
                let _ = tx.send(60, TxMeta::default(), |buf| frame(buf, 0));
                tx.flush();
            }
            if let Some(e) = a.failure() {
                let msg = e.to_string();
                assert!(msg.contains("apa") && msg.contains("went away"), "{msg}");
                break;
            }
            assert!(t.elapsed() < Duration::from_secs(5), "no failure reported after ip link del");
            std::thread::sleep(Duration::from_millis(10));
        }
    })
    .join()
    .expect("the test thread failed");
}
