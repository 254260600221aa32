//! TAP against the Linux kernel, inside network namespaces this test creates.
//!
//! Needs root and /dev/net/tun; skips with a message otherwise. Every test
//! makes its own namespace (named after the pid and the test) and deletes it
//! through a guard, also when the test fails. The TAP is created inside the
//! namespace by a thread that entered it with setns(2), so nothing appears in
//! the host's namespace. Traffic is bounded: a handful of ARP frames and one
//! ping.

use std::net::Ipv4Addr;
use std::os::fd::AsRawFd;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant as WallInstant};

use ustack_core::phy::{Device, RxQueue, TxMeta, TxQueue};
use ustack_core::time::Instant;
use ustack_device::{DeviceError, TapDevice};

fn skip_reason() -> Option<&'static str> {
    // SAFETY: no arguments, cannot fail.
    if unsafe { libc::geteuid() } != 0 {
        return Some("not root");
    }
    if !std::path::Path::new("/dev/net/tun").exists() {
        return Some("/dev/net/tun missing");
    }
    if Command::new("ip").arg("-V").output().is_err() {
        return Some("`ip` (iproute2) missing");
    }
    None
}

macro_rules! skip_unless_root {
    () => {
        if let Some(reason) = skip_reason() {
            eprintln!("skipping TAP test: {reason}");
            return;
        }
    };
}

fn ip(args: &[&str]) -> String {
    let out = Command::new("ip").args(args).output().expect("run ip");
    assert!(out.status.success(), "ip {args:?}: {}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// A network namespace that is deleted when the guard drops.
struct Netns {
    name: String,
}

impl Netns {
    fn new(tag: &str) -> Netns {
        let name = format!("ustd-{}-{tag}", std::process::id());
        // A leftover from a crashed run with the same pid would make `add` fail.
        let _ = Command::new("ip").args(["netns", "del", &name]).stderr(Stdio::null()).status();
        ip(&["netns", "add", &name]);
        Netns { name }
    }

    /// Run `f` on a thread that has entered this namespace; panics propagate.
    fn run<T: Send>(&self, f: impl FnOnce() -> T + Send) -> T {
        let path = format!("/run/netns/{}", self.name);
        std::thread::scope(|s| {
            let thread = s.spawn(|| {
                let ns = std::fs::File::open(&path).expect("open netns");
                // SAFETY: a valid namespace fd; affects only this thread.
                let rc = unsafe { libc::setns(ns.as_raw_fd(), libc::CLONE_NEWNET) };
                assert_eq!(rc, 0, "setns: {}", std::io::Error::last_os_error());
                f()
            });
            match thread.join() {
                Ok(v) => v,
                Err(panic) => std::panic::resume_unwind(panic),
            }
        })
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        let _ = Command::new("ip").args(["netns", "del", &self.name]).status();
    }
}

/// A child process killed and reaped when the guard drops.
struct ChildGuard(Child);

impl Drop for ChildGuard {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

const STACK_MAC: [u8; 6] = [0x02, 0, 0, 0, 0, 0x02];

fn arp(op: u16, src_mac: [u8; 6], dst_mac: [u8; 6], sender: Ipv4Addr, target: Ipv4Addr) -> Vec<u8> {
    let mut f = Vec::with_capacity(42);
    f.extend_from_slice(&dst_mac);
    f.extend_from_slice(&src_mac);
    f.extend_from_slice(&[0x08, 0x06, 0, 1, 0x08, 0x00, 6, 4]);
    f.extend_from_slice(&op.to_be_bytes());
    f.extend_from_slice(&src_mac);
    f.extend_from_slice(&sender.octets());
    f.extend_from_slice(&if op == 1 { [0; 6] } else { dst_mac });
    f.extend_from_slice(&target.octets());
    f
}

struct Arp {
    op: u16,
    sender_mac: [u8; 6],
    sender: Ipv4Addr,
    target: Ipv4Addr,
}

fn parse_arp(f: &[u8]) -> Option<Arp> {
    if f.len() < 42 || f[12..14] != [0x08, 0x06] {
        return None;
    }
    Some(Arp {
        op: u16::from_be_bytes([f[20], f[21]]),
        sender_mac: f[22..28].try_into().unwrap(),
        sender: Ipv4Addr::new(f[28], f[29], f[30], f[31]),
        target: Ipv4Addr::new(f[38], f[39], f[40], f[41]),
    })
}

fn send(tap: &mut TapDevice, frame: &[u8]) {
    let (_, tx) = tap.queues();
    tx.send(frame.len(), TxMeta::default(), |buf| buf.copy_from_slice(frame)).unwrap();
    tx.flush();
}

/// Receive until `want` accepts a frame, polling the fd, for at most `limit`.
fn wait_for<T>(tap: &mut TapDevice, limit: Duration, mut want: impl FnMut(&[u8]) -> Option<T>) -> Option<T> {
    let start = WallInstant::now();
    let mut seen = 0;
    while start.elapsed() < limit {
        let mut pfd = libc::pollfd { fd: tap.as_raw_fd(), events: libc::POLLIN, revents: 0 };
        // SAFETY: one valid pollfd.
        unsafe { libc::poll(&mut pfd, 1, 50) };
        let now = Instant::from_micros(start.elapsed().as_micros() as u64);
        let (rx, _) = tap.queues();
        while let Some((frame, _)) = rx.recv(now) {
            seen += 1;
            assert!(seen < 1000, "unbounded traffic on the TAP");
            if let Some(v) = want(frame) {
                return Some(v);
            }
        }
    }
    None
}

#[test]
fn kernel_answers_arp_and_resolves_through_tap() {
    skip_unless_root!();
    let ns = Netns::new("arp");
    let host = Ipv4Addr::new(10, 77, 1, 1);
    let stack = Ipv4Addr::new(10, 77, 1, 2);
    let fake = Ipv4Addr::new(10, 77, 1, 3);
    let ns_name = ns.name.clone();
    ns.run(move || {
        let mut tap = TapDevice::open("ustarp0").expect("open TAP in namespace");
        assert_eq!(tap.name(), "ustarp0");
        assert_eq!(tap.mtu(), 1500);
        tap.set_host_addr(host, 24).expect("set host address");
        let shown = ip(&["-n", &ns_name, "-4", "addr", "show", "dev", "ustarp0"]);
        assert!(shown.contains("10.77.1.1/24"), "{shown}");
        assert!(shown.contains("UP"), "{shown}");

        // 1. We ask, the kernel answers.
        send(&mut tap, &arp(1, STACK_MAC, [0xff; 6], stack, host));
        let reply = wait_for(&mut tap, Duration::from_secs(3), |f| {
            let a = parse_arp(f)?;
            (a.op == 2 && a.sender == host && a.target == stack && f[..6] == STACK_MAC).then_some(a)
        })
        .expect("the kernel's ARP reply arrives on the TAP");
        let kernel_mac = reply.sender_mac;
        assert_ne!(kernel_mac, [0; 6]);

        // 2. The kernel pings an address only the TAP could have: it asks for
        // it by ARP, we answer, and the echo request comes to our MAC.
        let ping = Command::new("ip")
            .args(["netns", "exec", &ns_name, "ping", "-n", "-c", "1", "-W", "2", &fake.to_string()])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("spawn ping");
        let _ping = ChildGuard(ping);
        let request = wait_for(&mut tap, Duration::from_secs(3), |f| {
            let a = parse_arp(f)?;
            (a.op == 1 && a.target == fake).then_some(a)
        })
        .expect("the kernel's ARP request for the pinged address");
        assert_eq!(request.sender, host);
        assert_eq!(request.sender_mac, kernel_mac);

        send(&mut tap, &arp(2, STACK_MAC, kernel_mac, fake, host));
        let echo = wait_for(&mut tap, Duration::from_secs(3), |f| {
            let is_echo = f.len() >= 42
                && f[..6] == STACK_MAC
                && f[12..14] == [0x08, 0x00]
                && f[23] == 1 // ICMP
                && f[26..30] == host.octets()
                && f[30..34] == fake.octets()
                && f[34] == 8; // echo request
            is_echo.then_some(f.len())
        });
        assert!(echo.is_some(), "the ICMP echo request is sent to the resolved MAC");

        let stats = tap.stats();
        assert_eq!(stats.tx_frames, 2);
        assert_eq!(stats.tx_dropped + stats.tx_full + stats.rx_errors, 0);
        assert!(stats.rx_frames >= 3, "{stats:?}");
    });
}

#[test]
fn open_errors_say_what_is_wrong() {
    skip_unless_root!();
    // Rejected before any system call.
    let err = TapDevice::open("a-name-far-too-long").unwrap_err();
    assert!(matches!(err, DeviceError::InvalidName { .. }), "{err:?}");
    assert!(err.to_string().contains("longer than 15 bytes"), "{err}");
    let err = TapDevice::open("bad/name").unwrap_err();
    assert!(matches!(err, DeviceError::InvalidName { .. }), "{err:?}");

    let ns = Netns::new("err");
    ns.run(|| {
        // Another fd holds the TAP: busy.
        let first = TapDevice::open("ustbusy0").expect("first open");
        let err = TapDevice::open("ustbusy0").unwrap_err();
        assert!(matches!(err, DeviceError::Busy { .. }), "{err:?}");
        assert!(err.to_string().contains("busy"), "{err}");
        drop(first);
        // Closing the fd deletes a non-persistent TAP, so the name is free
        // again: soon, not at once, because a test running in parallel may be
        // between fork and exec with a copy of our (close-on-exec) fd.
        let start = WallInstant::now();
        let reopened = loop {
            match TapDevice::open("ustbusy0") {
                Err(DeviceError::Busy { .. }) if start.elapsed() < Duration::from_secs(2) => {
                    std::thread::sleep(Duration::from_millis(10))
                }
                other => break other,
            }
        };
        drop(reopened.expect("reopen after close"));

        // `lo` exists in every namespace and is not a TAP.
        let err = TapDevice::open("lo").unwrap_err();
        assert!(matches!(err, DeviceError::NotTap { .. }), "{err:?}");
        assert!(err.to_string().contains("is not a TAP"), "{err}");

        // Kernel-chosen names.
        let tap = TapDevice::open("ustk%d").expect("template name");
        assert!(tap.name().starts_with("ustk") && !tap.name().contains('%'), "{}", tap.name());
        let err = tap.set_host_addr(Ipv4Addr::new(10, 0, 0, 1), 33).unwrap_err();
        assert!(matches!(err, DeviceError::InvalidPrefix { prefix: 33 }));
    });
}

#[test]
fn tap_moved_to_another_namespace_keeps_working() {
    skip_unless_root!();
    let home = Netns::new("home");
    let away = Netns::new("away");
    let away_name = away.name.clone();
    home.run(|| {
        let mut tap = TapDevice::open("ustmove0").expect("open");
        ip(&["link", "set", "ustmove0", "netns", &away_name]);
        // The interface left this namespace; configuring it here says so.
        let err = tap.set_host_addr(Ipv4Addr::new(10, 78, 0, 1), 24).unwrap_err();
        assert!(matches!(err, DeviceError::NoSuchInterface { .. }), "{err:?}");
        assert!(err.to_string().contains("ip -n"), "{err}");
        ip(&["-n", &away_name, "addr", "add", "10.78.0.1/24", "dev", "ustmove0"]);
        ip(&["-n", &away_name, "link", "set", "ustmove0", "up"]);

        let (host, stack) = (Ipv4Addr::new(10, 78, 0, 1), Ipv4Addr::new(10, 78, 0, 2));
        send(&mut tap, &arp(1, STACK_MAC, [0xff; 6], stack, host));
        let reply = wait_for(&mut tap, Duration::from_secs(3), |f| {
            let a = parse_arp(f)?;
            (a.op == 2 && a.sender == host).then_some(())
        });
        assert!(reply.is_some(), "the fd still works after the move");
    });
}
