//! The task that drives a [`Net`]'s stack.

use crate::Net;
use std::future::Future;
use std::io;
use std::os::fd::{AsRawFd, RawFd};
use std::pin::Pin;
use std::task::{Context, Poll};
use tokio::io::unix::AsyncFd;
use tokio::io::Interest;
use tokio::time::Sleep;
use ustack_core::phy::Device;
use ustack_core::Instant;
use ustack_device::MemoryPort;
use ustack_runtime::Waitable;

/// Frames one turn takes from a device before the driver yields to the
/// tasks it woke.
pub const MAX_BURST: usize = 64;

/// How often a device without a descriptor is looked at.
const NO_FD_TICK: std::time::Duration = std::time::Duration::from_millis(1);

/// The device's descriptor, borrowed for `AsyncFd` (the device outlives it).
struct Fd(RawFd);

impl AsRawFd for Fd {
    fn as_raw_fd(&self) -> RawFd {
        self.0
    }
}

impl Net {
    /// Drive the stack over `device` for as long as the task runs: receive,
    /// fire timers, transmit, and wake the tasks whose sockets became ready.
    /// Between turns it sleeps until the device's descriptor is readable,
    /// the stack's next deadline, or a socket call leaves work. Spawn it on
    /// the same thread as the sockets (`tokio::task::spawn_local`); it ends
    /// only with an error from the descriptor's registration.
    pub async fn drive<D: Device + Waitable>(self, mut device: D) -> io::Result<()> {
        let fd = match device.wait_fd() {
            // SAFETY: the descriptor belongs to `device`, which this future
            // owns and drops after `fd` (locals go before arguments).
            Some(raw) => Some(unsafe { AsyncFd::register_with_interest(Fd(raw), Interest::READABLE) }?),
            None => None,
        };
        let mut timer = Timer::new(&self);
        loop {
            let (received, wake) = self.turn(&mut device, self.now());
            let wake = earliest(wake, device.next_deadline());
            if received == MAX_BURST || self.state().stack.has_events() {
                requeue().await; // more frames wait; let the woken tasks run
                continue;
            }
            timer.set(wake);
            tokio::select! {
                biased;
                () = self.shared.kick.notified() => {}
                r = readable(fd.as_ref()) => r?,
                () = timer.expired() => {}
            }
        }
    }

    /// Drive two stacks joined by the in-memory link in one task (tests,
    /// benchmarks, doc examples): no descriptor to sleep on, so the driver
    /// turns both until no frame is in flight, then sleeps until a deadline
    /// or a socket call on either.
    pub async fn drive_pair(a: Net, mut pa: MemoryPort, b: Net, mut pb: MemoryPort) {
        let mut timer = Timer::new(&a);
        loop {
            // One clock read a turn for both stacks (they share the epoch).
            let now = a.now();
            let (ra, wa) = a.turn(&mut pa, now);
            let (rb, wb) = b.turn(&mut pb, now);
            let wake = [wa, wb, pa.next_delivery(), pb.next_delivery()].into_iter().flatten().min();
            let due = wake.is_some_and(|w| w <= now);
            let events = a.state().stack.has_events() || b.state().stack.has_events();
            if ra > 0 || rb > 0 || due || events {
                requeue().await;
                continue;
            }
            timer.set(wake);
            tokio::select! {
                biased;
                () = a.shared.kick.notified() => {}
                () = b.shared.kick.notified() => {}
                () = timer.expired() => {}
            }
        }
    }

    /// One poll of the stack at `now` and one round of wakeups. Returns the
    /// frames received and the stack's next deadline.
    fn turn<D: Device>(&self, device: &mut D, now: Instant) -> (usize, Option<Instant>) {
        let mut st = self.state();
        let received = st.stack.poll(now, device, MAX_BURST);
        Net::dispatch(&mut st);
        (received, st.stack.poll_timeout())
    }

    /// The clock reading at the stack's time `t`.
    fn when(&self, t: Instant) -> tokio::time::Instant {
        self.shared.start + std::time::Duration::from_micros(t.total_micros())
    }
}

/// The driver's one timer, kept across turns and moved only when the
/// stack's deadline changes: a new `tokio::time::Sleep` per turn would
/// register and cancel an entry in tokio's timer wheel every time.
struct Timer<'a> {
    net: &'a Net,
    sleep: Pin<Box<Sleep>>,
    armed: Option<Instant>,
}

impl<'a> Timer<'a> {
    fn new(net: &'a Net) -> Timer<'a> {
        // Allocated once per driver; parked until the first deadline.
        Timer { net, sleep: Box::pin(tokio::time::sleep_until(net.shared.start)), armed: None }
    }

    /// Fire at `t` (the stack's time); `None`: never.
    fn set(&mut self, t: Option<Instant>) {
        if t != self.armed {
            if let Some(t) = t {
                self.sleep.as_mut().reset(self.net.when(t));
            }
            self.armed = t;
        }
    }

    /// Until the deadline set (forever when none is).
    async fn expired(&mut self) {
        match self.armed {
            Some(_) => {
                self.sleep.as_mut().await;
                // Fired: the next `set` must re-arm, even to the same time.
                self.armed = None;
            }
            None => std::future::pending().await,
        }
    }
}

/// Let the tasks a turn woke run, then come back: the driver puts itself at
/// the back of the `LocalSet`'s queue. `tokio::task::yield_now` would defer
/// it to the runtime instead, which polls its I/O driver (an `epoll_wait`
/// and clock reads) before every return: most of a request's cost here.
fn requeue() -> impl Future<Output = ()> {
    let mut queued = false;
    std::future::poll_fn(move |cx: &mut Context<'_>| {
        if queued {
            return Poll::Ready(());
        }
        queued = true;
        cx.waker().wake_by_ref();
        Poll::Pending
    })
}

async fn readable(fd: Option<&AsyncFd<Fd>>) -> io::Result<()> {
    match fd {
        Some(fd) => {
            // The turn that follows reads the device until it is empty (or
            // yields at a full burst and comes back), so the edge is consumed.
            fd.readable().await?.clear_ready();
            Ok(())
        }
        None => {
            tokio::time::sleep(NO_FD_TICK).await;
            Ok(())
        }
    }
}

fn earliest(a: Option<Instant>, b: Option<Instant>) -> Option<Instant> {
    match (a, b) {
        (Some(a), Some(b)) => Some(a.min(b)),
        (a, b) => a.or(b),
    }
}
