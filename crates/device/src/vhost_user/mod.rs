//! A vhost-user backend port, the device side of virtio-net (what DPDK's
//! `net_vhost` is): `vhost-user:PATH[,queues=N][,client]`.
//!
//! ustack listens on the Unix socket `PATH` (or, with `client`, connects to
//! it and retries every half second until a frontend listens there). A
//! frontend — QEMU for a guest, DPDK's `virtio_user`, ustack's own
//! `virtio-user:` — shares its memory (one file descriptor per region, mapped
//! here with `vm-memory`), and lays out its virtqueues in it; ustack then
//! reads the frames the guest transmits from each transmit ring and writes
//! frames into the buffers the guest posts on each receive ring, with no
//! system call per frame.
//!
//! * **Protocol**: the `vhost` crate's `BackendReqHandler` parses each
//!   message and calls [`control::Control`], which keeps the configuration;
//!   after each message the device rebuilds the rings it changed
//!   (`ring.rs`, split rings walked through host pointers into the
//!   mappings: `virtio-queue`'s accessors were about three quarters of the
//!   reflector's time). Features offered: `VERSION_1`, `MRG_RXBUF`,
//!   `EVENT_IDX`, `CSUM`, `GUEST_CSUM`, `GUEST_TSO4` (the stack's TCP
//!   super-segments go to such a guest whole, [`DeviceCaps::tso4_max`]),
//!   `MQ` (with `queues` > 1), `IN_ORDER` (each ring's used entries
//!   follow its avail entries, always: `pop` and `push_parts` take and
//!   hand back chains strictly in turn) and the
//!   `PROTOCOL_FEATURES` of vhost-user (`MQ`, `REPLY_ACK`). The rust-vmm
//!   `vhost-user-backend` crate is not used: it runs its own epoll threads
//!   per queue, while a ustack device is polled by the event loop that owns
//!   it; `vhost` + `vm-memory` are the parts that fit.
//! * **Waiting**: [`Waitable::wait_fd`] is the data path's epoll
//!   descriptor, holding each transmit ring's kick eventfd (edge-triggered,
//!   never read) and the control side's own epoll (the socket, listening or
//!   connected, and the reconnection timer); `queues()` services what it
//!   reports (control messages, kicks) with one `epoll_wait(0)`, and a
//!   second only when the control side has something. Once the loop calls [`Waitable::prepare_sleep`] before
//!   it sleeps, that happens there (and every `SERVICE_EVERY` turns), the
//!   transmit rings are armed for kicks only then and disarmed while the
//!   loop is awake. The guest's receive rings never ask for kicks: we write
//!   them when we have frames and never wait on them. A guest's
//!   `VRING_AVAIL_F_NO_INTERRUPT` is honoured, and with EVENT_IDX its
//!   `used_event`. Used entries are published every 8 and at the end of
//!   each receive pass and flush, the guest told at most once per pass.
//! * **Receive** (guest → ustack): a transmit ring's chain is checked and
//!   copied into one buffer; the virtio-net header becomes [`RxMeta`]
//!   (`vnet.rs`), so a guest's partial checksums pass as metadata. Queue
//!   pairs are read round-robin; the pair of the latest frame is where
//!   `send` answers, so a reflector answers on the queue it was asked on.
//! * **Transmit** (ustack → guest): the frame is written into the receive
//!   ring's buffers (several with `MRG_RXBUF`). Nothing is queued: when the
//!   guest has not posted enough buffers the frame is dropped and counted
//!   (`tx_no_buffers`), so a stalled guest holds nothing of ours.
//! * **Hostile frontends**: every descriptor is checked against the memory
//!   table (address and length), chains are bounded by the ring size, and a
//!   refused chain is handed back empty and counted by reason
//!   (`rx_bad_address`, `rx_bad_chain`, …); a ring whose available index
//!   jumps past its size is stopped (`rings_broken`); a memory table past
//!   the end of its file, a ring outside the memory, or a malformed message
//!   is refused (`refused`, `protocol_errors`). A frontend that goes away
//!   (or breaks the protocol) is forgotten and the next one is served.

mod control;
mod ring;

use std::cell::Cell;
use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::fs::FileTypeExt;
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use ustack_core::phy::{Device, DeviceCaps, GsoType, RxMeta, RxQueue, TxFull, TxMeta, TxQueue};
use ustack_core::time::Instant;
use vhost::vhost_user::{BackendReqHandler, Error as VuError};

use crate::spec::Options;
use crate::{DeviceError, Waitable};
use control::{feature, Control};
use ring::{ChainError, Vring};

/// How a `vhost-user` spec is written.
pub const SPEC_FORM: &str = "vhost-user:PATH[,queues=N][,client]";

/// Largest frame taken from or given to a guest (a 64 KiB super-segment
/// and its headers), plus the virtio-net header.
const MAX_FRAME: usize = 65_535 + 14 + 4 + 12;
/// Chains refused in one `recv` before it gives the loop back.
const MAX_BAD_PER_RECV: usize = 64;
/// Control messages handled per poll (the rest wait for the next).
const MAX_MESSAGES_PER_POLL: usize = 64;
/// Turns between looks at the eventfds and the socket when the loop re-arms
/// the device before it sleeps ([`Waitable::prepare_sleep`]).
const SERVICE_EVERY: u32 = 64;

const TAG_LISTENER: u64 = 1 << 40;
const TAG_CONN: u64 = 2 << 40;
const TAG_TIMER: u64 = 3 << 40;
const TAG_KICK: u64 = 4 << 40;
const TAG_WAKE: u64 = 5 << 40;
const TAG_CONTROL: u64 = 6 << 40;

/// Options of a vhost-user port.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct VhostUserConfig {
    /// Queue pairs offered (`queues=N`, 1 to 16; `MQ` when above 1).
    pub queues: u16,
    /// Connect to the socket (the frontend listens) instead of listening.
    pub client: bool,
}

impl Default for VhostUserConfig {
    fn default() -> Self {
        VhostUserConfig { queues: 1, client: false }
    }
}

impl VhostUserConfig {
    /// The options of a `vhost-user:` spec.
    pub fn from_options(opts: &mut Options<'_>) -> Result<VhostUserConfig, DeviceError> {
        let queues = opts.number("queues", 1, 1..=16)? as u16;
        let client = opts.switch("client", false)?;
        Ok(VhostUserConfig { queues, client })
    }
}

/// Descriptor chains refused, by reason (one set per direction).
#[derive(Clone, Copy, Debug, Default)]
struct Refused {
    bad_address: u64,
    bad_chain: u64,
    bad_direction: u64,
    too_long: u64,
}

impl Refused {
    fn count(&mut self, e: ChainError) {
        match e {
            ChainError::BadAddress => self.bad_address += 1,
            ChainError::BadChain => self.bad_chain += 1,
            ChainError::BadDirection => self.bad_direction += 1,
            ChainError::TooLong => self.too_long += 1,
        }
    }
}

/// Counters of the receive side (frames the guest sent).
#[derive(Clone, Copy, Debug, Default)]
struct RxStats {
    frames: u64,
    bytes: u64,
    refused: Refused,
    bad_header: u64,
    rings_broken: u64,
}

/// Counters of the transmit side (frames for the guest).
#[derive(Clone, Copy, Debug, Default)]
struct TxStats {
    frames: u64,
    bytes: u64,
    /// Super-segments cut into wire segments here.
    segmented: u64,
    no_buffers: u64,
    no_ring: u64,
    refused: Refused,
}

/// One direction's rings; each holds the frontend's memory it reads or
/// writes (a ring exists only while there is memory).
struct RxSide {
    /// Transmit ring of each queue pair (odd virtqueues).
    rings: Vec<Option<Vring>>,
    buf: Box<[u8]>,
    hdr_len: usize,
    next: usize,
    /// The loop re-arms the rings before it sleeps: never arm them here.
    lazy: bool,
    stats: RxStats,
}

struct TxSide {
    /// Receive ring of each queue pair (even virtqueues).
    rings: Vec<Option<Vring>>,
    scratch: Box<[u8]>,
    /// One wire segment of a super-segment cut here (a guest without GUEST_TSO4).
    segment: Box<[u8]>,
    hdr_len: usize,
    mrg: bool,
    stats: TxStats,
}

/// What the control side shares with the data path (which may run in
/// other threads, one per queue pair).
struct Shared {
    /// Bumped after every change the data path must apply.
    generation: AtomicU64,
    /// Each ring's position as the data path last left it: `LIVE |
    /// next_avail` while it runs the ring, 0 otherwise (GET_VRING_BASE).
    positions: Vec<AtomicU32>,
}

const LIVE: u32 = 1 << 16;

/// The control side of a vhost-user port: the socket, the protocol
/// messages, reconnection. Serve it ([`VhostUserControl::service`]) when
/// its [`wait_fd`](VhostUserControl::wait_fd) is readable; the data path
/// ([`VhostUserQueues`]) picks up what changed at its next poll.
pub struct VhostUserControl {
    path: PathBuf,
    config: VhostUserConfig,
    listener: Option<UnixListener>,
    conn: Option<BackendReqHandler<Mutex<Control>>>,
    control: Arc<Mutex<Control>>,
    shared: Arc<Shared>,
    epoll: OwnedFd,
    timer: OwnedFd,
    /// Wake eventfds of the data paths (duplicates, so a write never
    /// reaches a reused descriptor).
    wakes: Vec<OwnedFd>,
    connects: u64,
    disconnects: u64,
    protocol_errors: u64,
}

/// The data path of one or more queue pairs of a vhost-user port.
/// Implements [`Device`]; sleep on its [`Waitable::wait_fd`] (its rings'
/// kick eventfds and a wake-up from the control side).
pub struct VhostUserQueues {
    control: Arc<Mutex<Control>>,
    shared: Arc<Shared>,
    /// The first queue pair this handle serves.
    first: usize,
    epoll: OwnedFd,
    wake: OwnedFd,
    kicks: Vec<RawFd>,
    seen: u64,
    /// Turns since the last look at the epoll set (lazy mode).
    turns: u32,
    /// The guest's transmit rings ask for kicks (the loop is asleep, or not lazy).
    armed: bool,
    /// The control side's epoll (nested in ours in a [`VhostUserDevice`])
    /// has something: serve it.
    control_ready: bool,
    rx: RxSide,
    tx: TxSide,
    /// Queue pair (of this handle) of the latest frame received: where
    /// `send` answers.
    cur: Cell<usize>,
    guest_csum: bool,
    /// The guest took GUEST_TSO4 (with GUEST_CSUM): super-segments go to it as they are.
    guest_tso4: bool,
    /// The guest took HOST_TSO4: it may send us super-segments.
    host_tso4: bool,
}

/// A vhost-user backend port: its control side and the data path of every
/// queue pair, in one thread. Implements [`Device`]; sleep on its
/// [`Waitable::wait_fd`]. [`VhostUserDevice::split`] gives one data path
/// per queue pair for one thread each.
pub struct VhostUserDevice {
    control: VhostUserControl,
    queues: VhostUserQueues,
}

fn io_err(action: &'static str) -> impl FnOnce(io::Error) -> DeviceError {
    move |source| DeviceError::Io { action, source }
}

fn cvt(r: libc::c_int, action: &'static str) -> Result<libc::c_int, DeviceError> {
    if r < 0 {
        Err(DeviceError::Io { action, source: io::Error::last_os_error() })
    } else {
        Ok(r)
    }
}

fn new_epoll() -> Result<OwnedFd, DeviceError> {
    // SAFETY: creates a new descriptor we own.
    Ok(unsafe { OwnedFd::from_raw_fd(cvt(libc::epoll_create1(libc::EPOLL_CLOEXEC), "epoll_create1")?) })
}

fn epoll_add(epoll: &OwnedFd, fd: RawFd, tag: u64) -> Result<(), DeviceError> {
    let mut ev = libc::epoll_event { events: libc::EPOLLIN as u32, u64: tag };
    // SAFETY: epoll_ctl reads one epoll_event.
    cvt(unsafe { libc::epoll_ctl(epoll.as_raw_fd(), libc::EPOLL_CTL_ADD, fd, &mut ev) }, "epoll_ctl").map(|_| ())
}

/// Add `fd` edge-triggered: one event per write to the eventfd, which is
/// never read.
fn epoll_add_edge(epoll: &OwnedFd, fd: RawFd, tag: u64) -> Result<(), DeviceError> {
    let mut ev = libc::epoll_event { events: (libc::EPOLLIN | libc::EPOLLET) as u32, u64: tag };
    // SAFETY: epoll_ctl reads one epoll_event.
    cvt(unsafe { libc::epoll_ctl(epoll.as_raw_fd(), libc::EPOLL_CTL_ADD, fd, &mut ev) }, "epoll_ctl").map(|_| ())
}

fn epoll_del(epoll: &OwnedFd, fd: RawFd) {
    // SAFETY: EPOLL_CTL_DEL ignores the event pointer (the fd may be closed already; EBADF is fine).
    unsafe { libc::epoll_ctl(epoll.as_raw_fd(), libc::EPOLL_CTL_DEL, fd, std::ptr::null_mut()) };
}

/// Read (and so clear) an eventfd or timerfd epoll found readable.
fn drain(fd: RawFd) {
    let mut b = [0u8; 8];
    // SAFETY: reads 8 bytes into `b`.
    unsafe { libc::read(fd, b.as_mut_ptr().cast(), 8) };
}

impl VhostUserControl {
    /// Listen on (or with `config.client`, connect to) the socket at `path`.
    /// A listening port opens at once, before any frontend connects; a
    /// stale socket file at `path` is replaced.
    pub fn open(path: &Path, config: VhostUserConfig) -> Result<VhostUserControl, DeviceError> {
        let epoll = new_epoll()?;
        // SAFETY: creates a new descriptor we own.
        let timer = unsafe {
            OwnedFd::from_raw_fd(cvt(
                libc::timerfd_create(libc::CLOCK_MONOTONIC, libc::TFD_CLOEXEC | libc::TFD_NONBLOCK),
                "timerfd_create",
            )?)
        };
        let rings = usize::from(config.queues) * 2;
        let mut c = VhostUserControl {
            path: path.to_owned(),
            config,
            listener: None,
            conn: None,
            control: Arc::new(Mutex::new(Control::new(config.queues))),
            shared: Arc::new(Shared {
                generation: AtomicU64::new(1),
                positions: (0..rings).map(|_| AtomicU32::new(0)).collect(),
            }),
            epoll,
            timer,
            wakes: Vec::new(),
            connects: 0,
            disconnects: 0,
            protocol_errors: 0,
        };
        epoll_add(&c.epoll, c.timer.as_raw_fd(), TAG_TIMER)?;
        if config.client {
            if !c.connect() {
                c.arm_timer(500);
            }
        } else {
            if let Ok(meta) = std::fs::symlink_metadata(path) {
                if !meta.file_type().is_socket() {
                    return Err(DeviceError::Io {
                        action: "creating the vhost-user socket (a file that is not a socket is in the way)",
                        source: io::Error::from(io::ErrorKind::AlreadyExists),
                    });
                }
                let _ = std::fs::remove_file(path);
            }
            let listener = UnixListener::bind(path).map_err(io_err("binding the vhost-user socket"))?;
            listener.set_nonblocking(true).map_err(io_err("setting the vhost-user socket non-blocking"))?;
            epoll_add(&c.epoll, listener.as_raw_fd(), TAG_LISTENER)?;
            c.listener = Some(listener);
        }
        Ok(c)
    }

    /// The data path of queue pairs `pairs` (for one thread). The control
    /// side wakes it when the frontend changes its rings.
    pub fn queues(&mut self, pairs: std::ops::Range<usize>) -> Result<VhostUserQueues, DeviceError> {
        assert!(pairs.end <= usize::from(self.config.queues) && !pairs.is_empty(), "queue pairs {pairs:?}");
        let epoll = new_epoll()?;
        // SAFETY: creates a new descriptor we own.
        let wake =
            unsafe { OwnedFd::from_raw_fd(cvt(libc::eventfd(0, libc::EFD_CLOEXEC | libc::EFD_NONBLOCK), "eventfd")?) };
        epoll_add(&epoll, wake.as_raw_fd(), TAG_WAKE)?;
        self.wakes.push(wake.try_clone().map_err(io_err("dup"))?);
        let n = pairs.len();
        let mut q = VhostUserQueues {
            control: Arc::clone(&self.control),
            shared: Arc::clone(&self.shared),
            first: pairs.start,
            epoll,
            wake,
            kicks: Vec::new(),
            seen: 0,
            turns: 0,
            armed: true,
            control_ready: false,
            rx: RxSide {
                rings: (0..n).map(|_| None).collect(),
                buf: vec![0u8; MAX_FRAME].into_boxed_slice(),
                hdr_len: 12,
                next: 0,
                lazy: false,
                stats: RxStats::default(),
            },
            tx: TxSide {
                rings: (0..n).map(|_| None).collect(),
                scratch: vec![0u8; MAX_FRAME].into_boxed_slice(),
                segment: vec![0u8; MAX_FRAME].into_boxed_slice(),
                hdr_len: 12,
                mrg: false,
                stats: TxStats::default(),
            },
            cur: Cell::new(0),
            guest_csum: false,
            guest_tso4: false,
            host_tso4: false,
        };
        q.refresh();
        Ok(q)
    }

    /// The socket path.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Whether a frontend is connected now.
    pub fn connected(&self) -> bool {
        self.conn.is_some()
    }

    /// Queue pairs offered.
    pub fn queue_pairs(&self) -> usize {
        usize::from(self.config.queues)
    }

    /// The descriptor to poll: readable when there is something to serve.
    pub fn wait_fd(&self) -> RawFd {
        self.epoll.as_raw_fd()
    }

    /// The control side's counters.
    pub fn stats(&self) -> Vec<(&'static str, u64)> {
        let refused = self.control.lock().unwrap_or_else(|e| e.into_inner()).refused;
        vec![
            ("connected", u64::from(self.conn.is_some())),
            ("connects", self.connects),
            ("disconnects", self.disconnects),
            ("refused", refused),
            ("protocol_errors", self.protocol_errors),
        ]
    }

    fn arm_timer(&self, ms: i64) {
        let spec = libc::itimerspec {
            it_interval: libc::timespec { tv_sec: 0, tv_nsec: 0 },
            it_value: libc::timespec { tv_sec: ms / 1000, tv_nsec: (ms % 1000) * 1_000_000 },
        };
        // SAFETY: timerfd_settime reads one itimerspec.
        unsafe { libc::timerfd_settime(self.timer.as_raw_fd(), 0, &spec, std::ptr::null_mut()) };
    }

    fn connect(&mut self) -> bool {
        match UnixStream::connect(&self.path) {
            Ok(s) => {
                self.attach(s);
                true
            }
            Err(_) => false,
        }
    }

    fn attach(&mut self, stream: UnixStream) {
        // Messages are read whole (blocking) once poll says the socket is readable.
        let _ = stream.set_nonblocking(false);
        self.control.lock().unwrap_or_else(|e| e.into_inner()).reset();
        let conn = BackendReqHandler::from_stream(stream, Arc::clone(&self.control));
        if epoll_add(&self.epoll, conn.as_raw_fd(), TAG_CONN).is_err() {
            return;
        }
        if let Some(l) = &self.listener {
            epoll_del(&self.epoll, l.as_raw_fd());
        }
        self.conn = Some(conn);
        self.connects += 1;
        self.changed();
    }

    fn detach(&mut self) {
        let Some(conn) = self.conn.take() else { return };
        epoll_del(&self.epoll, conn.as_raw_fd());
        drop(conn);
        self.disconnects += 1;
        self.control.lock().unwrap_or_else(|e| e.into_inner()).reset();
        self.changed();
        if let Some(l) = &self.listener {
            let _ = epoll_add(&self.epoll, l.as_raw_fd(), TAG_LISTENER);
        } else {
            self.arm_timer(500);
        }
    }

    /// Tell the data paths to reload their rings.
    fn changed(&mut self) {
        self.control.lock().unwrap_or_else(|e| e.into_inner()).dirty = false;
        self.shared.generation.fetch_add(1, Ordering::Release);
        for w in &self.wakes {
            // SAFETY: writes 8 bytes to an eventfd we hold.
            unsafe { libc::write(w.as_raw_fd(), 1u64.to_ne_bytes().as_ptr().cast(), 8) };
        }
    }

    /// Handle what the epoll set reports: a connection, control messages,
    /// the reconnection timer. One `epoll_wait(0)`.
    pub fn service(&mut self) {
        let mut evs = [libc::epoll_event { events: 0, u64: 0 }; 8];
        // SAFETY: epoll_wait writes at most 8 events into `evs`.
        let n = unsafe { libc::epoll_wait(self.epoll.as_raw_fd(), evs.as_mut_ptr(), 8, 0) };
        for ev in evs.iter().take(n.max(0) as usize) {
            match ev.u64 {
                TAG_LISTENER => {
                    if let Some(Ok((s, _))) = self.listener.as_ref().map(|l| l.accept()) {
                        if self.conn.is_none() {
                            self.attach(s);
                        }
                    }
                }
                TAG_CONN => self.messages(),
                TAG_TIMER => {
                    drain(self.timer.as_raw_fd());
                    if self.conn.is_none() && self.config.client && !self.connect() {
                        self.arm_timer(500);
                    }
                }
                _ => {} // the data path's own descriptors (nested): served there
            }
        }
    }

    fn messages(&mut self) {
        for _ in 0..MAX_MESSAGES_PER_POLL {
            let Some(conn) = self.conn.as_mut() else { return };
            let fd = conn.as_raw_fd();
            {
                // GET_VRING_BASE answers where the data path is.
                let mut ctl = self.control.lock().unwrap_or_else(|e| e.into_inner());
                for (v, p) in ctl.vrings.iter_mut().zip(&self.shared.positions) {
                    let p = p.load(Ordering::Acquire);
                    if p & LIVE != 0 {
                        v.next_avail = p as u16;
                    }
                }
            }
            let handled = match take_early_vring_enable(fd, &self.control) {
                Early::NotIt => conn.handle_request(),
                Early::Taken => Ok(()),
                Early::Broken => Err(VuError::PartialMessage),
            };
            match handled {
                Ok(()) => {}
                Err(
                    VuError::InvalidParam
                    | VuError::InvalidOperation(_)
                    | VuError::InactiveFeature(_)
                    | VuError::InactiveOperation(_),
                ) => {
                    // Refused with a negative acknowledgement; the stream is intact.
                    self.protocol_errors += 1;
                }
                Err(VuError::Disconnected | VuError::PartialMessage | VuError::SocketBroken(_)) => {
                    self.detach();
                    return;
                }
                Err(_) => {
                    self.protocol_errors += 1;
                    self.detach();
                    return;
                }
            }
            if self.control.lock().unwrap_or_else(|e| e.into_inner()).dirty {
                self.changed();
            }
            let mut pfd = libc::pollfd { fd, events: libc::POLLIN, revents: 0 };
            // SAFETY: poll reads and writes one pollfd.
            if unsafe { libc::poll(&mut pfd, 1, 0) } <= 0 {
                return;
            }
        }
    }
}

/// SET_VRING_ENABLE before SET_FEATURES has acknowledged
/// `PROTOCOL_FEATURES`: QEMU sends it so when its vhost-user netdev starts
/// (and DPDK's `net_vhost` takes it), while the `vhost` crate refuses it
/// there, which would leave the rings disabled and the guest unserved.
/// If the next message is that one, read it off the socket and apply it;
/// no reply is due (REPLY_ACK needs the acknowledged feature too).
fn take_early_vring_enable(fd: RawFd, control: &Mutex<Control>) -> Early {
    const SET_VRING_ENABLE: u32 = 18;
    let mut msg = [0u8; 20];
    // SAFETY: recv writes at most 12 bytes into `msg`.
    let n = unsafe { libc::recv(fd, msg.as_mut_ptr().cast(), 12, libc::MSG_PEEK | libc::MSG_DONTWAIT) };
    let word = |m: &[u8], i: usize| u32::from_le_bytes(m[i..i + 4].try_into().expect("4 bytes"));
    if n != 12 || word(&msg, 0) != SET_VRING_ENABLE || word(&msg, 8) != 8 {
        return Early::NotIt;
    }
    let mut ctl = control.lock().unwrap_or_else(|e| e.into_inner());
    if ctl.acked & feature::PROTOCOL_FEATURES != 0 {
        return Early::NotIt; // the crate's handler takes it
    }
    // SAFETY: recv writes at most 20 bytes into `msg`.
    let n = unsafe { libc::recv(fd, msg.as_mut_ptr().cast(), 20, libc::MSG_WAITALL) };
    if n != 20 {
        return Early::Broken;
    }
    ctl.early_vring_enable(word(&msg, 12), word(&msg, 16));
    Early::Taken
}

/// What [`take_early_vring_enable`] found.
enum Early {
    /// Another message (or a later SET_VRING_ENABLE): the crate handles it.
    NotIt,
    /// An early SET_VRING_ENABLE, applied.
    Taken,
    /// A SET_VRING_ENABLE cut short: the stream is broken.
    Broken,
}

impl Drop for VhostUserControl {
    fn drop(&mut self) {
        if self.listener.is_some() {
            let _ = std::fs::remove_file(&self.path);
        }
    }
}

impl VhostUserQueues {
    /// Queue pairs of this handle with both rings running.
    pub fn active_queue_pairs(&self) -> usize {
        self.rx.rings.iter().zip(&self.tx.rings).filter(|(a, b)| a.is_some() && b.is_some()).count()
    }

    /// Clear the kicks and wake-ups epoll reports, and apply what the
    /// control side changed. One `epoll_wait(0)` (the kick eventfds are
    /// edge-triggered, so they are never read).
    fn service(&mut self) {
        let mut evs = [libc::epoll_event { events: 0, u64: 0 }; 8];
        // SAFETY: epoll_wait writes at most 8 events into `evs`.
        let n = unsafe { libc::epoll_wait(self.epoll.as_raw_fd(), evs.as_mut_ptr(), 8, 0) };
        for ev in evs.iter().take(n.max(0) as usize) {
            match ev.u64 {
                TAG_WAKE => drain(self.wake.as_raw_fd()),
                TAG_CONTROL => self.control_ready = true,
                _ => {} // kicks: edge-triggered, nothing to clear
            }
        }
        self.refresh();
    }

    /// The loop is awake and polls the rings: no kicks meanwhile; look at
    /// the epoll set now and then only (lazy mode).
    fn poll_quietly(&mut self) {
        if self.armed {
            self.armed = false;
            for ring in self.rx.rings.iter_mut().flatten() {
                ring.disarm();
            }
        }
        self.turns += 1;
        if self.turns.is_multiple_of(SERVICE_EVERY) {
            self.service();
        } else {
            self.refresh();
        }
    }

    /// Before the loop sleeps: clear what woke it, ask the guest to kick
    /// us again; `false` if frames came in meanwhile.
    fn rearm(&mut self) -> bool {
        self.rx.lazy = true;
        self.service();
        self.armed = true;
        let mut more = false;
        for ring in self.rx.rings.iter_mut().flatten() {
            more |= ring.arm();
        }
        !more
    }

    /// Rebuild the rings from the control state if it changed.
    fn refresh(&mut self) {
        let generation = self.shared.generation.load(Ordering::Acquire);
        if generation == self.seen {
            return;
        }
        self.seen = generation;
        let mut ctl = self.control.lock().unwrap_or_else(|e| e.into_inner());
        for fd in self.kicks.drain(..) {
            epoll_del(&self.epoll, fd);
        }
        let hdr_len = ctl.hdr_len();
        self.rx.hdr_len = hdr_len;
        self.tx.hdr_len = hdr_len;
        self.tx.mrg = ctl.acked & feature::MRG_RXBUF != 0;
        self.guest_csum = ctl.acked & feature::GUEST_CSUM != 0;
        self.guest_tso4 = self.guest_csum && ctl.acked & feature::GUEST_TSO4 != 0;
        self.host_tso4 = ctl.acked & feature::HOST_TSO4 != 0;
        for i in 0..self.rx.rings.len() {
            let pair = self.first + i;
            for (index, slot) in [(2 * pair, &mut self.tx.rings[i]), (2 * pair + 1, &mut self.rx.rings[i])] {
                *slot = match Vring::load(&ctl, index) {
                    Ok(v) => v,
                    Err(why) => {
                        ctl.refused += 1;
                        ctl.last_refusal = Some(why);
                        None
                    }
                };
                let pos = slot.as_ref().map_or(0, |v| LIVE | u32::from(v.next_avail()));
                self.shared.positions[index].store(pos, Ordering::Release);
            }
            // Kicks matter on the rings we read (the guest's transmit rings).
            if self.rx.rings[i].is_some() {
                if let Some(kick) = &ctl.vrings[2 * pair + 1].kick {
                    self.kicks.push(kick.as_raw_fd());
                }
            }
        }
        drop(ctl);
        // We write the guest's receive rings when we have frames and never
        // wait on them: no kick for the buffers it posts.
        for ring in self.tx.rings.iter_mut().flatten() {
            ring.disarm();
        }
        // A new ring asks for kicks until the loop says otherwise.
        self.armed = true;
        for &fd in &self.kicks {
            let _ = epoll_add_edge(&self.epoll, fd, TAG_KICK | fd as u64);
        }
    }

    /// What every `queues()` does first: the epoll look (every turn, or
    /// now and then once the loop re-arms before it sleeps).
    fn look(&mut self) {
        if self.rx.lazy {
            self.poll_quietly();
        } else {
            self.service();
        }
    }

    fn device_queues(&mut self) -> (VhostUserRx<'_>, VhostUserTx<'_>) {
        let (guest_csum, guest_tso4) = (self.guest_csum, self.guest_tso4);
        let (shared, first) = (&*self.shared, self.first);
        (
            VhostUserRx { side: &mut self.rx, cur: &self.cur, shared, first },
            VhostUserTx { side: &mut self.tx, cur: &self.cur, guest_csum, guest_tso4, shared, first },
        )
    }

    fn queue_stats(&self) -> Vec<(&'static str, u64)> {
        let (r, t) = (self.rx.stats, self.tx.stats);
        vec![
            ("queue_pairs_active", self.active_queue_pairs() as u64),
            ("rx_frames", r.frames),
            ("rx_bytes", r.bytes),
            ("rx_bad_address", r.refused.bad_address),
            ("rx_bad_chain", r.refused.bad_chain),
            ("rx_bad_direction", r.refused.bad_direction),
            ("rx_too_long", r.refused.too_long),
            ("rx_bad_header", r.bad_header),
            ("rings_broken", r.rings_broken),
            ("tx_frames", t.frames),
            ("tx_bytes", t.bytes),
            ("tx_segmented", t.segmented),
            ("tx_no_buffers", t.no_buffers),
            ("tx_no_ring", t.no_ring),
            ("tx_bad_address", t.refused.bad_address),
            ("tx_bad_chain", t.refused.bad_chain),
            ("tx_bad_direction", t.refused.bad_direction),
            ("tx_too_long", t.refused.too_long),
        ]
    }
}

impl Device for VhostUserQueues {
    type Rx<'a> = VhostUserRx<'a>;
    type Tx<'a> = VhostUserTx<'a>;

    fn queues(&mut self) -> (VhostUserRx<'_>, VhostUserTx<'_>) {
        self.look();
        self.device_queues()
    }

    fn caps(&self) -> DeviceCaps {
        // A guest with GUEST_TSO4 takes 64 KiB super-segments (its receive
        // buffers merged, or big ones posted), checksums left partial.
        let tso4_max = if self.guest_tso4 { usize::from(u16::MAX) } else { 0 };
        DeviceCaps { tx_checksum: self.guest_csum, tso4_max, rx_coalesced: self.host_tso4, ..Default::default() }
    }
}

impl Waitable for VhostUserQueues {
    fn wait_fd(&self) -> Option<RawFd> {
        Some(self.epoll.as_raw_fd())
    }

    fn device_stats(&self) -> Vec<(&'static str, u64)> {
        self.queue_stats()
    }

    fn prepare_sleep(&mut self) -> bool {
        self.rearm()
    }
}

impl VhostUserDevice {
    /// Listen on (or with `config.client`, connect to) the socket at `path`.
    /// A listening port opens at once, before any frontend connects; a
    /// stale socket file at `path` is replaced.
    pub fn open(path: &Path, config: VhostUserConfig) -> Result<VhostUserDevice, DeviceError> {
        let mut control = VhostUserControl::open(path, config)?;
        let queues = control.queues(0..usize::from(config.queues))?;
        // One descriptor to sleep on: the control's epoll inside the data
        // path's, so one epoll_wait looks at both.
        epoll_add(&queues.epoll, control.epoll.as_raw_fd(), TAG_CONTROL)?;
        Ok(VhostUserDevice { control, queues })
    }

    /// The control side and one data path per queue pair, for one thread each.
    pub fn split(self) -> Result<(VhostUserControl, Vec<VhostUserQueues>), DeviceError> {
        let VhostUserDevice { mut control, queues } = self;
        drop(queues);
        control.wakes.clear();
        let per_pair = (0..control.queue_pairs()).map(|p| control.queues(p..p + 1)).collect::<Result<Vec<_>, _>>()?;
        Ok((control, per_pair))
    }

    /// The socket path.
    pub fn path(&self) -> &Path {
        self.control.path()
    }

    /// Whether a frontend is connected now.
    pub fn connected(&self) -> bool {
        self.control.connected()
    }

    /// Queue pairs with both rings running.
    pub fn active_queue_pairs(&self) -> usize {
        self.queues.active_queue_pairs()
    }

    /// Queue pairs offered.
    pub fn queue_pairs(&self) -> usize {
        self.control.queue_pairs()
    }

    /// Serve the control side if the data path's epoll look saw it ready,
    /// and apply what it changed; whether it did.
    fn serve_control(&mut self) -> bool {
        if !std::mem::take(&mut self.queues.control_ready) {
            return false;
        }
        self.control.service();
        self.queues.refresh();
        true
    }
}

impl Device for VhostUserDevice {
    type Rx<'a> = VhostUserRx<'a>;
    type Tx<'a> = VhostUserTx<'a>;

    fn queues(&mut self) -> (VhostUserRx<'_>, VhostUserTx<'_>) {
        self.queues.look();
        self.serve_control();
        self.queues.device_queues()
    }

    fn caps(&self) -> DeviceCaps {
        self.queues.caps()
    }
}

/// Receive queue of a [`VhostUserDevice`]: the guest's transmit rings.
pub struct VhostUserRx<'a> {
    side: &'a mut RxSide,
    cur: &'a Cell<usize>,
    shared: &'a Shared,
    first: usize,
}

/// Transmit queue of a [`VhostUserDevice`]: the guest's receive rings.
pub struct VhostUserTx<'a> {
    side: &'a mut TxSide,
    cur: &'a Cell<usize>,
    guest_csum: bool,
    guest_tso4: bool,
    shared: &'a Shared,
    first: usize,
}

impl RxSide {
    /// The next good frame's ring and length; bad chains are counted on the way.
    fn next_frame(&mut self) -> Option<(usize, usize, RxMeta)> {
        let n = self.rings.len();
        let mut bad = 0;
        let mut rearmed = false;
        loop {
            let mut all_empty = true;
            for i in 0..n {
                let k = nth_after(self.next, i, n);
                let Some(ring) = self.rings[k].as_mut() else { continue };
                match ring.pop(&mut self.buf) {
                    Ok(Some(len)) => {
                        self.next = k;
                        let hdr_len = self.hdr_len;
                        let meta = (len >= hdr_len + 14)
                            .then(|| {
                                let h: &[u8; 10] = self.buf[..10].try_into().ok()?;
                                crate::vnet::rx_meta(h)
                            })
                            .flatten();
                        let Some(meta) = meta else {
                            self.stats.bad_header += 1;
                            all_empty = false;
                            continue;
                        };
                        self.stats.frames += 1;
                        self.stats.bytes += (len - hdr_len) as u64;
                        return Some((k, len, meta));
                    }
                    Ok(None) => {
                        if ring.broken() {
                            self.stats.rings_broken += 1;
                            self.rings[k] = None;
                        }
                    }
                    Err(e) => {
                        self.stats.refused.count(e);
                        bad += 1;
                        all_empty = false;
                        if bad >= MAX_BAD_PER_RECV {
                            return None;
                        }
                    }
                }
            }
            if all_empty {
                if rearmed || self.lazy {
                    return None;
                }
                // Ask for a kick before sleeping; look once more in case
                // frames came in between.
                rearmed = true;
                let mut more = false;
                for ring in self.rings.iter_mut().flatten() {
                    more |= ring.arm();
                }
                if !more {
                    return None;
                }
            }
        }
    }
}

impl RxQueue for VhostUserRx<'_> {
    fn recv(&mut self, _now: Instant) -> Option<(&[u8], RxMeta)> {
        let (k, len, meta) = self.side.next_frame()?;
        self.cur.set(k);
        Some((&self.side.buf[self.side.hdr_len..len], meta))
    }
}

impl Drop for VhostUserRx<'_> {
    fn drop(&mut self) {
        // Hand the transmitted buffers back (one eventfd write at most per ring).
        for ring in self.side.rings.iter_mut().flatten() {
            ring.notify();
        }
        publish_positions(self.shared, &self.side.rings, self.first, 1);
    }
}

/// The ring `i` places after `start` among `n`, counting round (`start <
/// n`: both sides hold `n` rings for good, and `start` is one of their
/// indices): a subtraction, where `%` cost two divisions a frame.
#[inline]
fn nth_after(start: usize, i: usize, n: usize) -> usize {
    let k = start + i;
    if k >= n {
        k - n
    } else {
        k
    }
}

/// Where each running ring is, for GET_VRING_BASE (one store per ring).
fn publish_positions(shared: &Shared, rings: &[Option<Vring>], first: usize, parity: usize) {
    for (i, ring) in rings.iter().enumerate() {
        if let Some(r) = ring {
            let pos = LIVE | u32::from(r.next_avail());
            shared.positions[2 * (first + i) + parity].store(pos, Ordering::Release);
        }
    }
}

impl TxSide {
    /// Write the super-segment in `scratch[..len]` into ring `k` as wire
    /// segments, checksums complete; what does not fit is dropped and counted.
    fn send_segments(&mut self, k: usize, len: usize, meta: &TxMeta) {
        let TxSide { rings, scratch, segment, hdr_len, mrg, stats, .. } = self;
        let Some(ring) = rings[k].as_mut() else { return };
        let frame = &scratch[..len];
        let Some(count) = crate::soft_offload::segment_count(frame, meta) else {
            stats.refused.too_long += 1;
            return;
        };
        stats.segmented += 1;
        let hdr = [0u8; 12];
        for i in 0..count {
            let seg_len = crate::soft_offload::segment_len(frame, meta, i);
            let out = &mut segment[..seg_len];
            crate::soft_offload::write_segment(frame, meta, i, out);
            match ring.push(&hdr[..*hdr_len], out, *mrg) {
                Ok(true) => {
                    stats.frames += 1;
                    stats.bytes += seg_len as u64;
                }
                Ok(false) => stats.no_buffers += 1,
                Err(e) => stats.refused.count(e),
            }
        }
    }
}

/// Write the virtio-net header for `meta`, then `parts`, into the guest's
/// receive `ring`, counting what came of it. False when the guest had not
/// posted enough buffers (nothing taken); a refused chain counts and drops
/// the frame.
fn push_counted(
    ring: &mut Vring,
    stats: &mut TxStats,
    hdr_len: usize,
    mrg: bool,
    parts: &[&[u8]],
    len: usize,
    meta: &TxMeta,
) -> bool {
    let mut hdr = [0u8; 12];
    hdr[..10].copy_from_slice(&crate::vnet::tx_header(meta, 0));
    match ring.push_parts(&hdr[..hdr_len], parts, mrg) {
        Ok(true) => {
            stats.frames += 1;
            stats.bytes += len as u64;
            true
        }
        Ok(false) => {
            stats.no_buffers += 1;
            false
        }
        Err(e) => {
            stats.refused.count(e);
            true
        }
    }
}

impl VhostUserTx<'_> {
    /// The running ring a frame of `len` bytes goes to (the one the last
    /// frame came in on, else the next running one); `Ok(None)`: too long,
    /// dropped and counted; `Err`: no ring runs.
    fn ring_for(&mut self, len: usize) -> Result<Option<usize>, TxFull> {
        let side = &mut *self.side;
        let n = side.rings.len();
        // The ring the last frame came in on, else the next running one.
        let cur = self.cur.get();
        let found = (0..n).map(|i| nth_after(cur, i, n)).find(|&k| side.rings[k].is_some());
        let Some(k) = found else {
            side.stats.no_ring += 1;
            return Err(TxFull);
        };
        if len + side.hdr_len > side.scratch.len() {
            side.stats.refused.too_long += 1;
            return Ok(None);
        }
        Ok(Some(k))
    }
}

impl TxQueue for VhostUserTx<'_> {
    fn send<F: FnOnce(&mut [u8])>(&mut self, len: usize, meta: TxMeta, fill: F) -> Result<(), TxFull> {
        let Some(k) = self.ring_for(len)? else { return Ok(()) };
        let side = &mut *self.side;
        let ring = side.rings[k].as_mut().expect("ring_for found it");
        if !ring.has_avail() {
            // The guest has not refilled its ring: refuse before `fill`, as
            // the trait asks, and count it. Nothing is queued.
            side.stats.no_buffers += 1;
            return Err(TxFull);
        }
        let frame = &mut side.scratch[..len];
        fill(frame);
        if meta.gso_type != GsoType::None && !self.guest_tso4 {
            // A super-segment (forwarded by a switch from a guest that sent
            // it) for a guest that did not take GUEST_TSO4: cut it here.
            side.send_segments(k, len, &meta);
            return Ok(());
        }
        let mut meta = meta;
        if meta.csum_partial && !self.guest_csum {
            // The guest did not take GUEST_CSUM: finish the checksum here.
            crate::soft_offload::complete_checksum(frame, &meta);
            meta.csum_partial = false;
        }
        // Buffers were checked above; a frame longer than those posted can
        // still miss (counted), and is dropped.
        push_counted(ring, &mut side.stats, side.hdr_len, side.mrg, &[&side.scratch[..len]], len, &meta);
        Ok(())
    }

    /// A frame the guest takes as it is goes from the slices straight into
    /// the guest's buffers; one that needs cutting or a checksum finished
    /// goes through the staging buffer, as `send`.
    fn send_parts(&mut self, parts: &[&[u8]], meta: TxMeta) -> Result<(), TxFull> {
        let len: usize = parts.iter().map(|p| p.len()).sum();
        let needs_work =
            (meta.gso_type != GsoType::None && !self.guest_tso4) || (meta.csum_partial && !self.guest_csum);
        if needs_work {
            return self.send(len, meta, |buf| ustack_core::phy::gather(parts, buf));
        }
        let Some(k) = self.ring_for(len)? else { return Ok(()) };
        let side = &mut *self.side;
        let ring = side.rings[k].as_mut().expect("ring_for found it");
        // The guest has not refilled its ring: nothing was taken.
        if push_counted(ring, &mut side.stats, side.hdr_len, side.mrg, parts, len, &meta) {
            Ok(())
        } else {
            Err(TxFull)
        }
    }

    fn flush(&mut self) {
        for ring in self.side.rings.iter_mut().flatten() {
            ring.notify();
        }
        publish_positions(self.shared, &self.side.rings, self.first, 0);
    }
}

impl Waitable for VhostUserDevice {
    fn wait_fd(&self) -> Option<RawFd> {
        Some(self.queues.epoll.as_raw_fd())
    }

    fn device_stats(&self) -> Vec<(&'static str, u64)> {
        let mut v = self.control.stats();
        v.extend(self.queues.queue_stats());
        v
    }

    fn prepare_sleep(&mut self) -> bool {
        let quiet = self.queues.rearm();
        // Control messages served: turn once more before sleeping.
        !self.serve_control() && quiet
    }
}
