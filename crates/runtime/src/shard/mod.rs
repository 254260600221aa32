//! Shards: one stack per core, nothing shared on the packet path.
//!
//! [`run_shards`] starts one thread per shard, pinned to its core, each
//! with its own [`Stack`] (buffer pools, timer wheel, readiness lists,
//! neighbour cache), its own device queue and its own apps, driven by its
//! own [`EventLoop`]. A flow belongs to the shard its symmetric Toeplitz
//! hash names (`ustack_core::rss`): devices that steer by that hash (the
//! multi-queue in-memory link, AF_PACKET fan-out with ustack's BPF
//! program, a TAP with ustack's steering program) deliver every frame to
//! its owner; where a device steers otherwise, a frame that lands on the
//! wrong shard crosses once to its owner through a bounded ring and is
//! counted ([`steer`], [`handoff`]). Active opens pick ports that hash home
//! ([`Stack::set_shard`]), so their replies need no crossing.
//!
//! An app may hand a connection to another shard ([`moves::Mover`], given
//! to each shard's apps in [`ShardEnv::moves`]); the shards share one
//! clock, so a connection's timer deadlines mean the same on every shard.
//!
//! Listeners exist on every shard (each shard's apps listen on the same
//! ports, like `SO_REUSEPORT`). The control socket is served by a thread of
//! its own from snapshots each shard publishes a few times a second:
//! `ustack stats --json` shows their total and each shard
//! ([`stats::merge`]).

pub mod handoff;
pub mod moves;
pub mod stats;
pub mod steer;

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Condvar, Mutex};
use std::time::Duration as StdDuration;

use serde_json::Value;
use ustack_core::phy::Device;
use ustack_core::rss::{ShardHome, Toeplitz};
use ustack_core::{Duration, Stack};
use ustack_device::steer_bpf::FlowSteering;

use crate::{control, App, Clock, ControlSocket, EventLoop, RunEnd, StopSignal, Waitable};
pub use handoff::ShardCounters;
pub use moves::{AppState, MoveRefusal, Mover, Refused};
pub use steer::SteeredDevice;

/// How often each shard publishes its snapshot for the control socket.
const PUBLISH_EVERY: Duration = Duration::from_millis(250);

/// The CPUs this process may run on (its affinity mask), in order.
pub fn available_cores() -> Vec<usize> {
    // SAFETY: a zeroed cpu_set_t is a valid empty set; sched_getaffinity
    // fills it for the calling thread.
    let mut set: libc::cpu_set_t = unsafe { std::mem::zeroed() };
    let ok = unsafe { libc::sched_getaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &mut set) } == 0;
    let cores: Vec<usize> =
        (0..libc::CPU_SETSIZE as usize).filter(|&c| ok && unsafe { libc::CPU_ISSET(c, &set) }).collect();
    if cores.is_empty() {
        vec![0]
    } else {
        cores
    }
}

/// How many shards `--cores` asks for: a number from 1, or `all` (every
/// core the process may use).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Cores {
    /// This many shards.
    Count(usize),
    /// One shard per core in the affinity mask.
    All,
}

impl std::str::FromStr for Cores {
    type Err = String;
    fn from_str(s: &str) -> Result<Cores, String> {
        match s {
            "all" => Ok(Cores::All),
            n => match n.parse::<usize>() {
                Ok(n) if (1..=1024).contains(&n) => Ok(Cores::Count(n)),
                _ => Err(format!("'{s}': expected a number of cores from 1 to 1024, or all")),
            },
        }
    }
}

impl Cores {
    /// The cores the shards run on: the first `n` of [`available_cores`],
    /// wrapping round when more shards than cores are asked for.
    pub fn assign(self) -> Vec<usize> {
        let avail = available_cores();
        let n = match self {
            Cores::All => avail.len(),
            Cores::Count(n) => n,
        };
        (0..n).map(|k| avail[k % avail.len()]).collect()
    }
}

/// The first of `cpus` this process may not run on, with those it may.
pub fn not_allowed(cpus: &[usize]) -> Option<(usize, Vec<usize>)> {
    let allowed = available_cores();
    cpus.iter().find(|c| !allowed.contains(c)).map(|&c| (c, allowed))
}

/// Pin the calling thread to `core`.
pub fn pin(core: usize) -> std::io::Result<()> {
    pin_to(&[core])
}

/// Let the calling thread run on `cpus` only (those from
/// [`available_cores`] put it back).
pub fn pin_to(cpus: &[usize]) -> std::io::Result<()> {
    // SAFETY: as in `available_cores`.
    let mut set: libc::cpu_set_t = unsafe { std::mem::zeroed() };
    for &core in cpus {
        unsafe { libc::CPU_SET(core, &mut set) };
    }
    if unsafe { libc::sched_setaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &set) } != 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(())
}

/// What a shard is told when it is opened.
#[derive(Clone, Debug)]
pub struct ShardEnv {
    /// This shard's index, from 0.
    pub index: usize,
    /// How many shards there are.
    pub count: usize,
    /// The core it runs on.
    pub core: usize,
    /// Which flows are its own; the runner gives it to the stack
    /// ([`Stack::set_shard`]) as soon as [`ShardSetup::open`] returns.
    pub home: ShardHome,
    /// Hands this shard's connections to other shards and takes theirs in
    /// (for the shard's apps; used on the shard's thread).
    pub moves: Mover,
}

/// How a command makes its shards: each shard's stack, device queue and
/// apps, opened on the shard's own thread (so a device need not be `Send`)
/// and in shard order (device queues are numbered in the order they are
/// opened: a multi-queue TAP's, a fan-out group's members).
pub trait ShardSetup: Sync {
    /// A shard's device queue.
    type Device: Device + Waitable;
    /// A shard's apps.
    type Apps;
    /// What a shard reports when it ends.
    type Summary: Send;
    /// Open shard `env.index`: its stack, its device queue, its apps
    /// (listening already). Errors are one line for people.
    fn open(&self, env: &ShardEnv) -> Result<(Stack, Self::Device, Self::Apps), String>;
    /// The apps, as the loop polls them.
    fn apps<'a>(&self, apps: &'a mut Self::Apps) -> Vec<&'a mut dyn App>;
    /// What the shard reports once it has stopped.
    fn finish(&self, env: &ShardEnv, stack: &Stack, apps: Self::Apps) -> Self::Summary;
    /// Called once every shard is open (before any has stopped), on the
    /// thread that called [`run_shards`]: where a command says it is up.
    fn ready(&self) {}
    /// Where the device can be told which shard's queue one flow goes to
    /// (a multi-queue TAP's flow map), so that a moved connection's frames
    /// follow it; `None` (the default): they cross between shards.
    fn flow_steering(&self, _device: &Self::Device) -> Option<std::sync::Arc<FlowSteering>> {
        None
    }
}

/// What [`run_shards`] returns per shard.
#[derive(Debug)]
pub struct ShardEnd<S> {
    /// The shard's report ([`ShardSetup::finish`]).
    pub summary: S,
    /// How its loop ended.
    pub end: RunEnd,
    /// The device's failure, when `end` is [`RunEnd::DeviceFailed`].
    pub failure: Option<String>,
    /// Its handoff and move counters by name.
    pub handoffs: [(&'static str, u64); 11],
}

/// Run `cores.len()` shards, shard `k` pinned to `cores[k]`, until `stop`
/// is raised, a device fails (every shard then stops), or every shard's
/// apps have finished. `control` (with the device name its snapshots
/// report) is served from a thread of its own. Returns each shard's end,
/// or the first error opening one (the others are then stopped).
pub fn run_shards<S: ShardSetup>(
    setup: &S,
    cores: &[usize],
    toeplitz: &Toeplitz,
    control: Option<(ControlSocket, String)>,
    stop: &StopSignal,
) -> Result<Vec<ShardEnd<S::Summary>>, String> {
    let n = cores.len().max(1);
    let (shared, endpoints) = handoff::mesh(n);
    let turn = (Mutex::new(0usize), Condvar::new());
    let abort = AtomicBool::new(false);
    let finished = AtomicUsize::new(0);
    let ended = AtomicUsize::new(0);
    // One clock for every shard: a moved connection's deadlines hold on
    // the shard it moves to.
    let clock = Clock::new();
    let snapshots: Vec<Mutex<Value>> = (0..n).map(|_| Mutex::new(Value::Null)).collect();
    let (device_name, control) = match control {
        Some((c, name)) => (name, Some(c)),
        None => (String::new(), None),
    };
    std::thread::scope(|scope| {
        let shard_threads: Vec<_> = endpoints
            .into_iter()
            .enumerate()
            .map(|(k, endpoint)| {
                let (turn, abort, finished, ended, snapshots, shared, device_name) =
                    (&turn, &abort, &finished, &ended, &snapshots, &shared, &device_name);
                std::thread::Builder::new()
                    .name(format!("ustack-shard-{k}"))
                    .spawn_scoped(scope, move || {
                        let home = ShardHome::new(toeplitz.clone(), k, n);
                        let moves = Mover::new(moves::Moves::new(home.clone(), endpoint.poster()));
                        let env = ShardEnv { index: k, count: n, core: cores[k], home, moves };
                        let shard = Shared { turn, abort, finished, snapshots, handoff: shared, device_name, clock };
                        let result = run_one(setup, &env, endpoint, &shard, stop);
                        if result.is_err() {
                            abort.store(true, Ordering::SeqCst);
                        }
                        ended.fetch_add(1, Ordering::SeqCst);
                        result
                    })
                    .expect("spawning a shard thread")
            })
            .collect();
        {
            let (lock, cv) = &turn;
            let mut next = lock.lock().expect("turnstile lock");
            while *next < n && !abort.load(Ordering::SeqCst) {
                next = cv.wait_timeout(next, StdDuration::from_millis(100)).expect("turnstile lock").0;
            }
            if *next == n && !abort.load(Ordering::SeqCst) {
                setup.ready();
            }
        }
        if let Some(control) = &control {
            let mut pfd = libc::pollfd { fd: control.fd(), events: libc::POLLIN, revents: 0 };
            while ended.load(Ordering::SeqCst) < n {
                // SAFETY: one valid pollfd; a timeout bounds the wait.
                unsafe { libc::poll(&mut pfd, 1, 100) };
                if pfd.revents & libc::POLLIN != 0 {
                    control.serve(|| {
                        let shards: Vec<Value> =
                            snapshots.iter().map(|s| s.lock().expect("snapshot lock").clone()).collect();
                        stats::merge(&shards, cores)
                    });
                }
            }
        }
        let mut ends = Vec::with_capacity(n);
        let mut first_error = None;
        for t in shard_threads {
            match t.join() {
                Ok(Ok(end)) => ends.push(end),
                Ok(Err(e)) => {
                    first_error.get_or_insert(e);
                }
                Err(_) => {
                    first_error.get_or_insert_with(|| "a shard thread panicked".to_string());
                }
            }
        }
        match first_error {
            Some(e) => Err(e),
            None => Ok(ends),
        }
    })
}

/// What the shards of one [`run_shards`] share.
struct Shared<'a> {
    turn: &'a (Mutex<usize>, Condvar),
    abort: &'a AtomicBool,
    finished: &'a AtomicUsize,
    snapshots: &'a [Mutex<Value>],
    handoff: &'a handoff::Shared,
    device_name: &'a str,
    clock: Clock,
}

fn run_one<S: ShardSetup>(
    setup: &S,
    env: &ShardEnv,
    endpoint: handoff::Endpoint,
    shard: &Shared<'_>,
    stop: &StopSignal,
) -> Result<ShardEnd<S::Summary>, String> {
    let Shared { turn, abort, finished, snapshots, handoff: shared, device_name, clock } = *shard;
    pin(env.core).map_err(|e| format!("cannot pin shard {} to core {}: {e}", env.index, env.core))?;
    // Open in shard order: queue numbers follow the order of opening.
    let opened = {
        let (lock, cv) = turn;
        let mut next = lock.lock().expect("turnstile lock");
        while *next != env.index && !abort.load(Ordering::SeqCst) {
            next = cv.wait_timeout(next, StdDuration::from_millis(100)).expect("turnstile lock").0;
        }
        if abort.load(Ordering::SeqCst) {
            return Err(String::new());
        }
        let opened = setup.open(env);
        *next += 1;
        cv.notify_all();
        opened
    };
    let (mut stack, device, mut apps) =
        opened.map_err(|e| if env.count > 1 { format!("shard {}: {e}", env.index) } else { e })?;
    stack.set_shard(Some(env.home.clone()));
    env.moves.moves().borrow_mut().set_steering(setup.flow_steering(&device));
    let moves = std::rc::Rc::clone(env.moves.moves());
    let mut lp = EventLoop::new(stack, SteeredDevice::new(device, endpoint, env.home.clone(), moves));
    lp.clock = clock;
    if let Ok(w) = lp.waker() {
        let _ = shared.wakers[env.index].set(w);
    }
    let mut desk = moves::MoveDesk::new(&env.moves);
    let mut done = false;
    let end = loop {
        let deadline = lp.clock.now() + PUBLISH_EVERY;
        let end = if done {
            lp.run_until(&mut [&mut desk], stop, Some(deadline))
        } else {
            let mut list = setup.apps(&mut apps);
            list.insert(0, &mut desk);
            lp.run_until(&mut list, stop, Some(deadline))
        };
        env.moves.moves().borrow_mut().sweep(&lp.stack);
        let uptime = lp.clock.now().total_micros();
        *snapshots[env.index].lock().expect("snapshot lock") =
            control::snapshot_json(&lp.stack, device_name, uptime, &lp.device.device_stats());
        match end {
            RunEnd::TimedOut => {}
            RunEnd::Finished if !done => {
                done = true;
                finished.fetch_add(1, Ordering::SeqCst);
            }
            RunEnd::Finished => {}
            other => {
                abort.store(true, Ordering::SeqCst);
                break other;
            }
        }
        if abort.load(Ordering::SeqCst) {
            break RunEnd::Stopped;
        }
        if finished.load(Ordering::SeqCst) == env.count {
            break RunEnd::Finished;
        }
    };
    let failure = lp.device.failure().map(|e| e.to_string());
    let handoffs = shared.counters[env.index].pairs();
    let summary = setup.finish(env, &lp.stack, apps);
    Ok(ShardEnd { summary, end, failure, handoffs })
}
