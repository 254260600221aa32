//! The event loop sleeps with no deadline and is woken from outside: by a
//! [`Waker`] from another thread, or by a descriptor of the embedder's own.
//! The loop runs on its own thread; the test waits for it, bounded, and
//! counts its turns to show it slept rather than spun.

use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant as WallInstant};
use ustack_core::phy::{Device, DeviceCaps, RxMeta, RxQueue, TxFull, TxMeta, TxQueue};
use ustack_core::{Event, Instant, Ipv4Cidr, Stack, StackConfig};
use ustack_runtime::{App, EventLoop, RunEnd, StopSignal, Waitable};
use ustack_wire::EthernetAddress;

/// A device that never receives: its descriptor is a pipe nobody writes.
struct Quiet {
    read: OwnedFd,
    _write: OwnedFd,
}

struct NoRx;
struct NoTx;

impl RxQueue for NoRx {
    fn recv(&mut self, _now: Instant) -> Option<(&[u8], RxMeta)> {
        None
    }
}

impl TxQueue for NoTx {
    fn send<F: FnOnce(&mut [u8])>(&mut self, _len: usize, _meta: TxMeta, _fill: F) -> Result<(), TxFull> {
        Ok(())
    }
}

impl Device for Quiet {
    type Rx<'a> = NoRx;
    type Tx<'a> = NoTx;
    fn queues(&mut self) -> (NoRx, NoTx) {
        (NoRx, NoTx)
    }
    fn caps(&self) -> DeviceCaps {
        DeviceCaps { mtu: 1500, ..Default::default() }
    }
}

impl Waitable for Quiet {
    fn wait_fd(&self) -> Option<RawFd> {
        Some(self.read.as_raw_fd())
    }
}

fn pipe() -> (OwnedFd, OwnedFd) {
    let mut fds = [0; 2];
    // SAFETY: a valid two-int array; on success both are ours.
    assert_eq!(unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_NONBLOCK | libc::O_CLOEXEC) }, 0);
    // SAFETY: fresh descriptors from pipe2.
    unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) }
}

/// An idle loop: no connections, no deadlines, and it may sleep an hour.
fn idle_loop() -> EventLoop<Quiet> {
    let (read, write) = pipe();
    let cfg = StackConfig::new(EthernetAddress([2, 0, 0, 0, 0, 9]), Ipv4Cidr::new([10, 9, 9, 2].into(), 24).unwrap());
    let mut lp = EventLoop::new(Stack::new(cfg, 1), Quiet { read, _write: write });
    lp.set_max_sleep(Duration::from_secs(3600));
    lp
}

/// Finishes once `done` says so (or, with a descriptor, once it read a byte
/// from it); counts its turns.
struct Until {
    done: Arc<AtomicBool>,
    fd: Option<RawFd>,
    turns: u32,
}

impl App for Until {
    fn poll(&mut self, _stack: &mut Stack, _now: Instant, _events: &[Event]) {
        self.turns += 1;
        if let Some(fd) = self.fd {
            let mut b = [0u8; 1];
            // SAFETY: reads one byte into a valid buffer; EAGAIN is fine.
            if unsafe { libc::read(fd, b.as_mut_ptr().cast(), 1) } == 1 {
                self.done.store(true, Ordering::SeqCst);
            }
        }
    }
    fn finished(&self) -> bool {
        self.done.load(Ordering::SeqCst)
    }
}

/// Run `lp` with `app` on a thread; wait at most 20 s for it to end.
fn run_bounded(mut lp: EventLoop<Quiet>, mut app: Until, poke: impl FnOnce()) -> Until {
    let thread = std::thread::spawn(move || {
        let end = lp.run_until(&mut [&mut app], &StopSignal::unarmed(), None);
        assert_eq!(end, RunEnd::Finished);
        app
    });
    // Let it fall asleep first.
    std::thread::sleep(Duration::from_millis(300));
    poke();
    let deadline = WallInstant::now() + Duration::from_secs(20);
    while !thread.is_finished() {
        assert!(WallInstant::now() < deadline, "the loop was not woken");
        std::thread::sleep(Duration::from_millis(10));
    }
    thread.join().expect("the loop thread")
}

#[test]
fn a_waker_from_another_thread_wakes_a_loop_with_no_deadline() {
    let mut lp = idle_loop();
    let waker = lp.waker().unwrap();
    let done = Arc::new(AtomicBool::new(false));
    let flag = done.clone();
    let app = run_bounded(lp, Until { done, fd: None, turns: 0 }, move || {
        flag.store(true, Ordering::SeqCst);
        waker.clone().wake().unwrap();
    });
    // One turn before sleeping, maybe one for the neighbour cache's start,
    // one after the wake: it slept, it did not spin.
    assert!(app.turns <= 4, "{} turns", app.turns);
}

#[test]
fn a_watched_descriptor_wakes_the_loop_and_its_app_reads_it() {
    let mut lp = idle_loop();
    let (read, write) = pipe();
    lp.watch_fd(read.as_raw_fd());
    let app = Until { done: Arc::new(AtomicBool::new(false)), fd: Some(read.as_raw_fd()), turns: 0 };
    let app = run_bounded(lp, app, move || {
        // SAFETY: writes one byte from a valid buffer to our pipe.
        assert_eq!(unsafe { libc::write(write.as_raw_fd(), b"x".as_ptr().cast(), 1) }, 1);
    });
    assert!(app.turns <= 4, "{} turns", app.turns);
    drop(read);
}
