//! Drives one core's stack over a device: the event loop, the clock, the OS
//! random seed, and signals.
//!
//! This is where the sans-IO core meets the operating system. One
//! [`EventLoop`] owns one [`Stack`] and one device and runs on one thread;
//! later, shards run one loop per core.

pub mod apps;
mod clock;
pub mod control;
mod signals;

pub use clock::{os_seed, Clock};
pub use control::{ControlAddr, ControlSocket};
pub use signals::StopSignal;
pub use ustack_device::Waitable;

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

/// The longest the loop sleeps without looking at the stop flag; signals
/// also interrupt the sleep, so this only bounds a missed wakeup.
const MAX_SLEEP_MS: u64 = 200;

pub struct EventLoop<D> {
    pub stack: Stack,
    pub device: D,
    pub clock: Clock,
    /// Where `ustack stats` reads counters from, with the device name it reports.
    pub control: Option<(ControlSocket, String)>,
    /// The stack's events, drained once per turn for all apps.
    events: Vec<Event>,
}

/// Frames one turn receives at most before the apps run, so a flood cannot
/// starve them.
pub const MAX_RX_PER_TURN: usize = 8 * DEFAULT_RX_BURST;

/// Busy turns between looks at the control socket when the loop never sleeps.
const CONTROL_EVERY: u32 = 4096;

impl<D: Device + Waitable> EventLoop<D> {
    pub fn new(stack: Stack, device: D) -> EventLoop<D> {
        EventLoop { stack, device, clock: Clock::new(), control: None, events: Vec::new() }
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
            if self.turn(apps) >= MAX_RX_PER_TURN {
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
            let wake = earliest(earliest(self.stack.poll_timeout(), deadline), self.device.next_deadline());
            let wake = earliest(wake, apps_deadline(apps));
            // Rounded up: a sub-millisecond wait sleeps 1 ms rather than spin.
            let sleep_ms = wake.map_or(MAX_SLEEP_MS, |t| {
                (t.saturating_since(now).as_micros().div_ceil(1000)).min(u128::from(MAX_SLEEP_MS)) as u64
            });
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

    /// Sleep until the device is readable, the timeout passes or a signal
    /// arrives. Returns true when the control socket has a client.
    fn wait(&self, timeout_ms: u64) -> bool {
        let Some(fd) = self.device.wait_fd() else {
            std::thread::sleep(std::time::Duration::from_millis(timeout_ms.min(1)));
            return false;
        };
        let control_fd = self.control.as_ref().map_or(-1, |(c, _)| c.fd());
        let mut pfds = [
            libc::pollfd { fd, events: libc::POLLIN, revents: 0 },
            // poll(2) ignores entries with a negative fd.
            libc::pollfd { fd: control_fd, events: libc::POLLIN, revents: 0 },
        ];
        // SAFETY: two valid pollfds; EINTR (a signal) just ends the sleep.
        unsafe { libc::poll(pfds.as_mut_ptr(), 2, timeout_ms as libc::c_int) };
        pfds[1].revents & libc::POLLIN != 0
    }
}
