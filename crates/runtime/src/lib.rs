//! Drives one core's stack over a device: the event loop, the clock, the OS
//! random seed, and signals.
//!
//! This is where the sans-IO core meets the operating system. One
//! [`EventLoop`] owns one [`Stack`] and one device and runs on one thread;
//! [`shard`] runs one loop per core, each with its own stack.

#![deny(missing_docs)]

pub mod apps;
mod clock;
pub mod control;
pub mod shard;
mod signals;
mod waker;

pub use clock::{os_seed, Clock};
pub use control::{ControlAddr, ControlSocket};
pub use signals::StopSignal;
pub use waker::Waker;
pub use ustack_device::Waitable;

use std::os::fd::RawFd;
use ustack_core::phy::Device;
use ustack_device::earliest;
use ustack_core::stack::DEFAULT_RX_BURST;
use ustack_core::{Event, Instant, Stack};

/// Something that runs on the stack, polled once per loop turn after the
/// stack has received and before it transmits.
///
/// An app registers its sockets ([`Stack::register`]) and works on the
/// events the loop hands it; between events it sleeps, and
/// [`App::next_deadline`] says when it next needs a turn anyway.
pub trait App {
    /// `events` holds this turn's readiness events ([`Stack::poll_events`]).
    /// The stack has one event queue for all its sockets, so the loop drains
    /// it once and shows it to every app; each app picks out the sockets it
    /// owns by [`Event::socket`]. Called every turn, with or without events.
    fn poll(&mut self, stack: &mut Stack, now: Instant, events: &[Event]);

    /// When the app next needs a turn if no event comes first (a timeout, a
    /// paced send, a report); `None` when only events wake it. A time in the
    /// past means at once. Asked after every turn.
    fn next_deadline(&self) -> Option<Instant> {
        None
    }

    /// True once the app has nothing more to do (a client that got its
    /// answer); servers never finish. Ends [`EventLoop::run_until`].
    fn finished(&self) -> bool {
        false
    }
}

/// The most events one turn takes from the stack; the rest wait a turn.
pub const MAX_EVENTS: usize = 1024;

/// One app turn on a stack: drain its events into `events` (reused between
/// turns, so no allocation in steady state) and poll every app.
pub fn poll_apps(stack: &mut Stack, now: Instant, apps: &mut [&mut dyn App], events: &mut Vec<Event>) {
    events.clear();
    stack.poll_events(events, MAX_EVENTS);
    for app in apps.iter_mut() {
        app.poll(stack, now, events);
    }
}

/// The earliest deadline of `apps`.
pub fn apps_deadline(apps: &[&mut dyn App]) -> Option<Instant> {
    apps.iter().filter_map(|a| a.next_deadline()).min()
}

/// Why [`EventLoop::run_until`] returned.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RunEnd {
    /// An app said it had finished.
    Finished,
    /// SIGINT or SIGTERM.
    Stopped,
    /// The deadline passed first.
    TimedOut,
    /// The device failed for good (its interface was deleted, say);
    /// [`Waitable::failure`] says why.
    DeviceFailed,
}

/// The longest the loop sleeps without looking at the stop flag, unless told
/// otherwise ([`EventLoop::set_max_sleep`]); signals also interrupt the
/// sleep, so this only bounds a missed wakeup.
pub const MAX_SLEEP: std::time::Duration = std::time::Duration::from_millis(200);

/// One stack, one device, one thread: receives, runs the apps, transmits,
/// and sleeps until the device, a deadline, a descriptor of the embedder's
/// ([`EventLoop::watch_fd`]) or a [`Waker`] calls.
pub struct EventLoop<D> {
    /// The stack the loop drives; apps reach it through [`App::poll`].
    pub stack: Stack,
    /// The device that carries the stack's frames.
    pub device: D,
    /// The monotonic clock that gives the stack its `now`.
    pub clock: Clock,
    /// Where `ustack stats` reads counters from, with the device name it reports.
    pub control: Option<(ControlSocket, String)>,
    /// The stack's events, drained once per turn for all apps.
    events: Vec<Event>,
    waker: Option<Waker>,
    /// The embedder's descriptors that end a sleep when readable.
    watched: Vec<RawFd>,
    pollfds: Vec<libc::pollfd>,
    max_sleep_ms: u64,
}

/// Frames one turn receives at most before the apps run, so a flood cannot
/// starve them.
pub const MAX_RX_PER_TURN: usize = 8 * DEFAULT_RX_BURST;

/// Busy turns between looks at the control socket when the loop never sleeps.
const CONTROL_EVERY: u32 = 4096;

impl<D: Device + Waitable> EventLoop<D> {
    /// A loop for `stack` over `device`, with no control socket, no watched
    /// descriptor and the default [`MAX_SLEEP`].
    pub fn new(stack: Stack, device: D) -> EventLoop<D> {
        EventLoop {
            stack,
            device,
            clock: Clock::new(),
            control: None,
            events: Vec::new(),
            waker: None,
            watched: Vec::new(),
            pollfds: Vec::new(),
            max_sleep_ms: MAX_SLEEP.as_millis() as u64,
        }
    }

    /// A [`Waker`] for this loop, to wake it from another thread.
    pub fn waker(&mut self) -> std::io::Result<Waker> {
        if self.waker.is_none() {
            self.waker = Some(Waker::new()?);
        }
        Ok(self.waker.clone().expect("just made"))
    }

    /// Also end the loop's sleep when `fd` (the embedder's own: a socket, a
    /// pipe, a timerfd) is readable, so the apps take a turn. poll(2) is
    /// level-triggered: the app that owns `fd` must read it until it would
    /// block, or the loop keeps turning. `fd` must stay open until
    /// [`EventLoop::unwatch_fd`].
    pub fn watch_fd(&mut self, fd: RawFd) {
        if !self.watched.contains(&fd) {
            self.watched.push(fd);
        }
    }

    /// Stop watching `fd`.
    pub fn unwatch_fd(&mut self, fd: RawFd) {
        self.watched.retain(|&w| w != fd);
    }

    /// The longest sleep between looks at the stop flag ([`MAX_SLEEP`] by
    /// default). A loop whose stop comes through a [`Waker`] can sleep for as
    /// long as nothing happens.
    pub fn set_max_sleep(&mut self, max: std::time::Duration) {
        self.max_sleep_ms = max.as_millis().min(i32::MAX as u128) as u64;
    }

    /// One turn: receive what the device holds (bursts until it is empty,
    /// at most [`MAX_RX_PER_TURN`] frames), let the apps work, send. Returns
    /// the number of frames received.
    ///
    /// Draining before the apps run keeps the kernel's side of the device
    /// (a TAP's queue, a ring) from overflowing while the apps do slower
    /// work, so under a flood the drops happen in the stack, where they are
    /// counted by reason, rather than in the kernel.
    pub fn turn(&mut self, apps: &mut [&mut dyn App]) -> usize {
        let now = self.clock.now();
        let mut n = 0;
        loop {
            let got = self.stack.poll(now, &mut self.device, DEFAULT_RX_BURST);
            n += got;
            if got < DEFAULT_RX_BURST || n >= MAX_RX_PER_TURN {
                break;
            }
        }
        poll_apps(&mut self.stack, now, apps, &mut self.events);
        // Send what the apps queued without waiting for the next frame.
        self.stack.poll(now, &mut self.device, 0);
        n
    }

    /// Run until `stop` is raised.
    pub fn run(&mut self, apps: &mut [&mut dyn App], stop: &StopSignal) {
        self.run_until(apps, stop, None);
    }

    /// Run until an app has [finished](App::finished), `stop` is raised, or
    /// the clock passes `deadline`, whichever comes first.
    pub fn run_until(&mut self, apps: &mut [&mut dyn App], stop: &StopSignal, deadline: Option<Instant>) -> RunEnd {
        let mut busy_turns = 0u32;
        // When a frame last came in, for the device's busy polling.
        let mut last_rx = self.clock.now();
        loop {
            if stop.raised() {
                return RunEnd::Stopped;
            }
            if apps.iter().any(|a| a.finished()) {
                return RunEnd::Finished;
            }
            if deadline.is_some_and(|d| self.clock.now() >= d) {
                return RunEnd::TimedOut;
            }
            let got = self.turn(apps);
            if got > 0 {
                last_rx = self.clock.now();
            }
            if got >= MAX_RX_PER_TURN {
                busy_turns += 1;
                if busy_turns.is_multiple_of(CONTROL_EVERY) {
                    self.serve_control();
                }
                continue; // more frames are likely waiting
            }
            if self.stack.has_events() {
                continue; // what the apps did this turn made sockets ready
            }
            let now = self.clock.now();
            if self.device.busy_poll().is_some_and(|window| now.saturating_since(last_rx) < window) {
                // Busy polling: look again rather than sleep; give the core to
                // whoever else wants it meanwhile (the peer may share it).
                std::thread::yield_now();
                busy_turns += 1;
                if busy_turns.is_multiple_of(CONTROL_EVERY) {
                    self.serve_control();
                }
                continue;
            }
            if !self.device.prepare_sleep() {
                continue; // frames came in while the device re-armed
            }
            let wake = earliest(earliest(self.stack.poll_timeout(), deadline), self.device.next_deadline());
            let wake = earliest(wake, apps_deadline(apps));
            // Rounded up: a sub-millisecond wait sleeps 1 ms rather than spin.
            let max = self.max_sleep_ms;
            let sleep_ms =
                wake.map_or(max, |t| (t.saturating_since(now).as_micros().div_ceil(1000)).min(u128::from(max)) as u64);
            if self.wait(sleep_ms) {
                self.serve_control();
            }
            if self.device.failure().is_some() {
                return RunEnd::DeviceFailed;
            }
        }
    }

    fn serve_control(&self) {
        if let Some((control, name)) = &self.control {
            let uptime = self.clock.now().total_micros();
            control.serve(|| control::snapshot_json(&self.stack, name, uptime, &self.device.device_stats()));
        }
    }

    /// Sleep until the device is readable, the timeout passes, a signal
    /// arrives, the waker is woken or a watched descriptor is readable.
    /// Returns true when the control socket has a client.
    fn wait(&mut self, timeout_ms: u64) -> bool {
        // A device without a descriptor (the in-memory link) is polled.
        let timeout_ms = if self.device.wait_fd().is_some() { timeout_ms } else { timeout_ms.min(1) };
        let entry = |fd: RawFd| libc::pollfd { fd, events: libc::POLLIN, revents: 0 };
        // poll(2) ignores entries with a negative fd.
        self.pollfds.clear();
        self.pollfds.extend([
            entry(self.device.wait_fd().unwrap_or(-1)),
            entry(self.control.as_ref().map_or(-1, |(c, _)| c.fd())),
            entry(self.waker.as_ref().map_or(-1, Waker::fd)),
        ]);
        self.pollfds.extend(self.watched.iter().map(|&fd| entry(fd)));
        // SAFETY: `pollfds` is a valid array of its length; EINTR (a signal)
        // just ends the sleep.
        unsafe { libc::poll(self.pollfds.as_mut_ptr(), self.pollfds.len() as libc::nfds_t, timeout_ms as libc::c_int) };
        if self.pollfds[2].revents & libc::POLLIN != 0 {
            if let Some(w) = &self.waker {
                w.drain();
            }
        }
        self.pollfds[1].revents & libc::POLLIN != 0
    }
}
