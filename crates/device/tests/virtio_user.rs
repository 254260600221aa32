//! ustack's virtio-user frontend on ustack's vhost-user backend, in one
//! process (the backend on a thread of its own): the features they agree
//! on, frames both ways with the loop re-arming the device before it sleeps
//! and without, and which notifications they spare each other.

use std::os::fd::RawFd;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant as StdInstant};

use ustack_core::phy::{Device, GsoType, RxQueue, TxMeta, TxQueue};
use ustack_core::time::Instant;
use ustack_device::{VhostUserConfig, VhostUserDevice, VirtioUserConfig, VirtioUserDevice, Waitable};

fn sock(tag: &str) -> std::path::PathBuf {
    std::env::temp_dir().join(format!("ustack-vu-dev-{tag}-{}", std::process::id()))
}

fn stat(dev: &impl Waitable, key: &str) -> u64 {
    let stats = dev.device_stats();
    stats.iter().find(|(k, _)| *k == key).unwrap_or_else(|| panic!("no {key} in {stats:?}")).1
}

/// Sleep on `fd` for at most `ms`; whether it woke before that.
fn wait(fd: Option<RawFd>, ms: i32) -> bool {
    let mut p = libc::pollfd { fd: fd.unwrap_or(-1), events: libc::POLLIN, revents: 0 };
    // SAFETY: poll reads and writes one pollfd.
    unsafe { libc::poll(&mut p, 1, ms) > 0 }
}

/// A backend on `path` that sends every frame back, as a switch's
/// `--reflect` does, re-arming before each sleep; until `stop`.
fn reflector(path: std::path::PathBuf, stop: Arc<AtomicBool>) -> std::thread::JoinHandle<VhostUserDevice> {
    let mut dev = VhostUserDevice::open(&path, VhostUserConfig::default()).expect("open the backend");
    std::thread::spawn(move || {
        let mut frame = vec![0u8; 70_000];
        while !stop.load(Ordering::Relaxed) {
            let mut moved = 0;
            let (mut rx, mut tx) = dev.queues();
            while let Some((f, meta)) = rx.recv(Instant::from_micros(0)) {
                let len = f.len();
                frame[..len].copy_from_slice(f);
                let meta = ustack_device::vnet::forwarded(&meta);
                let _ = tx.send(len, meta, |b| b.copy_from_slice(&frame[..len]));
                moved += 1;
            }
            tx.flush();
            drop((rx, tx));
            if moved == 0 && dev.prepare_sleep() {
                wait(dev.wait_fd(), 10);
            }
        }
        dev
    })
}

/// Send `want` (with `meta`) and wait (bounded) for it to come back; what
/// came back and its metadata.
fn round_trip(fe: &mut VirtioUserDevice, want: &[u8], meta: TxMeta) -> (Vec<u8>, ustack_core::phy::RxMeta) {
    {
        let (_, mut tx) = fe.queues();
        tx.send(want.len(), meta, |b| b.copy_from_slice(want)).expect("room to send");
        tx.flush();
    }
    let deadline = StdInstant::now() + Duration::from_secs(10);
    loop {
        {
            let (mut rx, _) = fe.queues();
            if let Some((f, meta)) = rx.recv(Instant::from_micros(0)) {
                return (f.to_vec(), meta);
            }
        }
        assert!(StdInstant::now() < deadline, "nothing came back: {:?}", fe.device_stats());
        if fe.prepare_sleep() {
            wait(fe.wait_fd(), 100);
        }
    }
}

fn frame(len: usize, seed: u8) -> Vec<u8> {
    let mut f: Vec<u8> = (0..len).map(|i| (i as u8).wrapping_mul(31).wrapping_add(seed)).collect();
    f[..12].copy_from_slice(&[2, 0, 0, 0, 0, 2, 2, 0, 0, 0, 0, 1]);
    f[12..14].copy_from_slice(&[0x88, 0xb5]); // local experimental EtherType
    f
}

/// Send `count` frames one at a time and wait (bounded) for each to come
/// back, sleeping on the device between; `rearm`: call `prepare_sleep`
/// before each sleep, as the event loop does.
fn ping_pong(fe: &mut VirtioUserDevice, count: usize, rearm: bool) {
    for n in 0..count {
        let want = frame(60 + n % 1400, n as u8);
        {
            let (_, mut tx) = fe.queues();
            tx.send(want.len(), TxMeta::default(), |b| b.copy_from_slice(&want)).expect("room to send");
            tx.flush();
        }
        let deadline = StdInstant::now() + Duration::from_secs(10);
        let mut slept_through = false;
        loop {
            let got = {
                let (mut rx, _) = fe.queues();
                rx.recv(Instant::from_micros(0)).map(|(f, _)| f.to_vec())
            };
            if let Some(got) = got {
                assert!(!slept_through, "frame {n} was there but nothing woke the loop (rearm {rearm})");
                assert_eq!(got, want, "frame {n} came back changed");
                break;
            }
            assert!(
                StdInstant::now() < deadline,
                "frame {n} did not come back (rearm {rearm}): {:?}",
                fe.device_stats()
            );
            if !rearm || fe.prepare_sleep() {
                // Long enough that only a missed notification times out.
                slept_through = !wait(fe.wait_fd(), 3_000);
            }
        }
    }
}

#[test]
fn frontend_and_backend_agree_on_event_idx_and_tso_and_spare_needless_notifications() {
    let path = sock("event-idx");
    let stop = Arc::new(AtomicBool::new(false));
    let backend = reflector(path.clone(), Arc::clone(&stop));

    // A loop that never re-arms the device (the device looks at its
    // eventfds every turn), then one that does.
    for rearm in [false, true] {
        let mut fe = VirtioUserDevice::open(&path, VirtioUserConfig::default()).expect("connect the frontend");
        assert_eq!(stat(&fe, "event_idx"), 1, "EVENT_IDX negotiated: {:?}", fe.device_stats());
        ping_pong(&mut fe, 600, rearm);
        assert_eq!((stat(&fe, "tx_frames"), stat(&fe, "rx_frames")), (600, 600), "{:?}", fe.device_stats());
        // The backend never waits on its transmit side: reposting receive
        // buffers costs the frontend no kick.
        assert_eq!(stat(&fe, "rx_kicks"), 0, "{:?}", fe.device_stats());
        // At most one kick per frame sent (the backend sleeps between frames).
        assert!(stat(&fe, "tx_kicks") <= 600, "{:?}", fe.device_stats());
        assert_eq!((stat(&fe, "rx_bad_used"), stat(&fe, "tx_bad_used")), (0, 0), "{:?}", fe.device_stats());
    }
    // TSO both ways: a 64 KiB super-segment goes to the backend and comes
    // back whole (through 33 merged receive buffers), its metadata intact;
    // with tso=off none of it is negotiated and the frames stay small.
    let mut fe = VirtioUserDevice::open(&path, VirtioUserConfig::default()).expect("connect the frontend");
    for key in ["host_tso4", "guest_tso4"] {
        assert_eq!(stat(&fe, key), 1, "{key}: {:?}", fe.device_stats());
    }
    let caps = fe.caps();
    assert!(caps.tx_checksum && caps.rx_coalesced && caps.tso4_limit() == 65_535, "{caps:?}");
    let big = frame(65_535 + 14, 7);
    let meta = TxMeta {
        csum_partial: true,
        csum_start: 34,
        csum_offset: 16,
        gso_type: GsoType::TcpV4,
        gso_size: 1448,
        hdr_len: 54,
    };
    let (got, rx_meta) = round_trip(&mut fe, &big, meta);
    assert!(got == big, "the super-segment came back changed ({} bytes of {})", got.len(), big.len());
    assert_eq!((rx_meta.gso_type, rx_meta.gso_size, rx_meta.csum_partial), (GsoType::TcpV4, 1448, true));
    assert_eq!((rx_meta.csum_start, rx_meta.csum_offset, rx_meta.hdr_len), (34, 16, 54));
    drop(fe);
    let plain = VirtioUserConfig { tso: false, ..Default::default() };
    let mut fe = VirtioUserDevice::open(&path, plain).expect("connect the frontend");
    assert_eq!((stat(&fe, "host_tso4"), stat(&fe, "guest_tso4")), (0, 0), "{:?}", fe.device_stats());
    assert_eq!(fe.caps().tso4_limit(), 0);
    let small = frame(1514, 9);
    assert_eq!(round_trip(&mut fe, &small, TxMeta::default()).0, small);
    drop(fe);

    stop.store(true, Ordering::Relaxed);
    let backend = backend.join().expect("the backend thread");
    assert_eq!(
        (stat(&backend, "rx_frames"), stat(&backend, "tx_frames")),
        (1202, 1202),
        "{:?}",
        backend.device_stats()
    );
    assert_eq!(stat(&backend, "tx_no_buffers"), 0, "{:?}", backend.device_stats());
}
