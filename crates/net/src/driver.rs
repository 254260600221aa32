//! The task that drives a [`Net`]'s stack.

use crate::Net;
use std::io;
use std::os::fd::{AsRawFd, RawFd};
use tokio::io::unix::AsyncFd;
use tokio::io::Interest;
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
        loop {
            let (received, wake) = self.turn(&mut device);
            let wake = earliest(wake, device.next_deadline());
            if received == MAX_BURST || self.state().stack.has_events() {
                tokio::task::yield_now().await; // more frames wait; let the woken tasks run
                continue;
            }
            tokio::select! {
                biased;
                () = self.shared.kick.notified() => {}
                r = readable(fd.as_ref()) => r?,
                () = self.sleep_until(wake) => {}
            }
        }
    }

    /// Drive two stacks joined by the in-memory link in one task (tests,
    /// benchmarks, doc examples): no descriptor to sleep on, so the driver
    /// turns both until no frame is in flight, then sleeps until a deadline
    /// or a socket call on either.
    pub async fn drive_pair(a: Net, mut pa: MemoryPort, b: Net, mut pb: MemoryPort) {
        loop {
            let (ra, wa) = a.turn(&mut pa);
            let (rb, wb) = b.turn(&mut pb);
            let wake = [wa, wb, pa.next_delivery(), pb.next_delivery()].into_iter().flatten().min();
            let due = wake.is_some_and(|t| t <= a.now().max(b.now()));
            let events = a.state().stack.has_events() || b.state().stack.has_events();
            if ra > 0 || rb > 0 || due || events {
                tokio::task::yield_now().await;
                continue;
            }
            tokio::select! {
                biased;
                () = a.shared.kick.notified() => {}
                () = b.shared.kick.notified() => {}
                () = a.sleep_until(wake) => {}
            }
        }
    }

    /// One poll of the stack and one round of wakeups. Returns the frames
    /// received and the stack's next deadline.
    fn turn<D: Device>(&self, device: &mut D) -> (usize, Option<Instant>) {
        let now = self.now();
        let mut st = self.state();
        let received = st.stack.poll(now, device, MAX_BURST);
        Net::dispatch(&mut st);
        (received, st.stack.poll_timeout())
    }

    async fn sleep_until(&self, t: Option<Instant>) {
        match t {
            Some(t) => {
                let at = self.shared.start + std::time::Duration::from_micros(t.total_micros());
                tokio::time::sleep_until(at).await;
            }
            None => std::future::pending().await,
        }
    }
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
