//! The process's one stack: its thread, its lock, the descriptor flags and
//! the raw system calls the library makes for itself (never through symbols
//! an LD_PRELOAD library may have replaced).

use std::collections::{HashMap, HashSet, VecDeque};
use std::net::{Ipv4Addr, SocketAddrV4};
use std::os::fd::RawFd;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Mutex, MutexGuard, OnceLock};

use ustack_core::phy::{Device, TxMeta, TxQueue};
use ustack_core::stack::DEFAULT_RX_BURST;
use ustack_core::tcp::BufferSizes;
use ustack_core::{Event, Instant, Interest, Ipv4Cidr, Socket, Stack, StackConfig, TcpHandle, UdpHandle};
use ustack_device::{earliest, ChainSpec, DeviceChain, DeviceKind, DeviceSpec, Waitable};
use ustack_runtime::{os_seed, Clock};
use ustack_wire::{ArpOperation, ArpPacket, ArpRepr, EtherType, EthernetAddress, EthernetRepr, ETHERNET_HEADER_LEN};

use crate::errno::{Errno, EBADF};

/// Descriptors at or above this are never ustack sockets (`socket` fails
/// with `EMFILE` if the kernel hands out such a number for the eventfd).
pub const MAX_FDS: usize = 65536;

/// The high bits of the `epoll_data` under which a ustack socket's eventfd
/// sits in a real epoll set (the low 32 bits are its descriptor). No
/// user-space pointer has these bits set.
pub const EPOLL_TAG: u64 = 0xffff_5553_0000_0000;

/// One value for every descriptor number below [`MAX_FDS`], read without
/// the lock (the LD_PRELOAD library asks the flags on every `read`,
/// `write` and `close`). They only route a call: what it then touches is
/// under the lock, so no other write needs to be published with them.
pub(crate) struct PerFd<T>([T; MAX_FDS]);

/// A flag per descriptor.
pub(crate) type FdFlags = PerFd<AtomicBool>;

impl<T> PerFd<T> {
    /// `fd`'s value (none for a number out of range).
    pub(crate) fn slot(&self, fd: RawFd) -> Option<&T> {
        usize::try_from(fd).ok().and_then(|i| self.0.get(i))
    }
}

impl PerFd<AtomicU32> {
    pub(crate) const fn new() -> PerFd<AtomicU32> {
        PerFd([const { AtomicU32::new(0) }; MAX_FDS])
    }
}

impl FdFlags {
    pub(crate) const fn new() -> FdFlags {
        PerFd([const { AtomicBool::new(false) }; MAX_FDS])
    }

    /// Whether `fd`'s flag is up (never for a number out of range).
    pub(crate) fn get(&self, fd: RawFd) -> bool {
        self.slot(fd).is_some_and(|f| f.load(Ordering::Acquire))
    }

    /// Raise or lower `fd`'s flag (a number out of range has none). A flag
    /// already as asked is not written: the cache line stays shared.
    pub(crate) fn set(&self, fd: RawFd, on: bool) {
        if let Some(f) = self.slot(fd) {
            if f.load(Ordering::Relaxed) != on {
                f.store(on, Ordering::Release);
            }
        }
    }
}

static USTACK_FD: FdFlags = FdFlags::new();
static EPOLL_FD: FdFlags = FdFlags::new();
static WATCHED_FD: FdFlags = FdFlags::new();

/// Frames a call queued on the device without kicking the kernel (see
/// [`Inner::after_call`]); read lock-free before waits outside the library.
pub(crate) static UNKICKED: AtomicBool = AtomicBool::new(false);

/// The longest a frame a call queued waits for its kick when the calling
/// thread goes on without waiting in the library (it computes, or blocks in
/// a call the library does not see): the stack thread wakes this often
/// while calls defer kicks, and its turn kicks.
pub const KICK_DELAY: ustack_core::Duration = ustack_core::Duration::from_millis(1);
/// A call leaves its segments to the next wait (or the stack thread's turn,
/// within [`KICK_DELAY`]) while the calls since the last transmission queued
/// less than this; past it, they are built at once (bulk writes keep the
/// wire busy as before), only their kick waits.
pub const DEFER_BYTES: usize = 16 << 10;
/// The stack thread keeps its sleeps to [`KICK_DELAY`] for this long after
/// a call; a call defers its kick only while the stack thread is sure to
/// wake within [`KICK_DELAY`].
const KICK_WINDOW: ustack_core::Duration = ustack_core::Duration::from_millis(20);
/// An application thread that looked this recently, while none went to
/// sleep for as long, is taken to be at work between two waits: the stack
/// thread then leaves the device out of its sleep (it still wakes within
/// [`KICK_DELAY`]), so frames arriving meanwhile wait for that thread's
/// next look instead of waking the stack thread to take them. On a server
/// kept busy, those wake-ups cost a thread switch (and the lock) every few
/// frames on the application's own core. A thread that sleeps between
/// requests (one connection's round trips, about 100 µs here) keeps the
/// stack thread on the device, so its sleeps do not ring it.
const BUSY_WINDOW: ustack_core::Duration = ustack_core::Duration::from_micros(200);

/// Application threads sleeping in the kernel with the device's descriptor
/// in their set (see [`Inner::device_fd`]): while one does and the stack
/// thread sleeps at most [`KICK_DELAY`] anyway, the stack thread leaves the
/// device out of its own sleep, so a frame wakes the thread that waits for
/// it and nobody else.
pub(crate) static WATCHERS: AtomicUsize = AtomicUsize::new(0);

/// How many epoll sets have a bell of their own ([`EpollSet::bell`]): while
/// none has, a wait on kernel descriptors costs one load of this.
pub(crate) static BELLS: AtomicUsize = AtomicUsize::new(0);

/// Whether `fd` is a ustack socket of this process. Lock-free: the
/// LD_PRELOAD library asks it on every `read`, `write` and `close`.
pub fn is_ustack(fd: RawFd) -> bool {
    USTACK_FD.get(fd)
}

pub(crate) fn set_ustack(fd: RawFd, on: bool) {
    USTACK_FD.set(fd, on);
}

/// Whether `epfd` is an epoll set holding ustack sockets.
pub fn is_ustack_epoll(epfd: RawFd) -> bool {
    EPOLL_FD.get(epfd)
}

pub(crate) fn set_ustack_epoll(epfd: RawFd, on: bool) {
    EPOLL_FD.set(epfd, on);
}

/// Whether `fd` is an epoll set that is itself watched: a member of another
/// epoll set, or polled with poll/select: it then has a bell of its own
/// (see the nested sets in [`crate::wait`]).
pub fn is_watched_epoll(fd: RawFd) -> bool {
    WATCHED_FD.get(fd)
}

pub(crate) fn set_watched_epoll(fd: RawFd, on: bool) {
    WATCHED_FD.set(fd, on);
}

// ---- raw system calls -------------------------------------------------

pub(crate) fn raw_write(fd: RawFd, buf: &[u8]) -> isize {
    // SAFETY: writes from a valid buffer of its length.
    unsafe { libc::syscall(libc::SYS_write, fd, buf.as_ptr(), buf.len()) as isize }
}

pub(crate) fn raw_close(fd: RawFd) {
    // SAFETY: closes a descriptor this library created.
    unsafe { libc::syscall(libc::SYS_close, fd) };
}

pub(crate) fn new_eventfd(cloexec: bool) -> Result<RawFd, Errno> {
    let flags = libc::EFD_NONBLOCK | if cloexec { libc::EFD_CLOEXEC } else { 0 };
    // SAFETY: eventfd2 takes an initial value and flags.
    let fd = unsafe { libc::syscall(libc::SYS_eventfd2, 0, flags) } as RawFd;
    if fd < 0 {
        return Err(Errno(last_errno()));
    }
    if fd as usize >= MAX_FDS {
        raw_close(fd);
        return Err(Errno(libc::EMFILE));
    }
    Ok(fd)
}

pub(crate) fn last_errno() -> i32 {
    // SAFETY: the calling thread's errno slot.
    unsafe { *libc::__errno_location() }
}

/// Ring a socket's doorbell (or the stack thread's waker).
pub(crate) fn ring(fd: RawFd) {
    raw_write(fd, &1u64.to_ne_bytes());
}

/// This thread's own eventfd for sleeping on ustack sockets: registered
/// in each socket's `waiters` while it sleeps, so several threads may wait
/// on one socket (a shared doorbell emptied by one would strand another).
pub(crate) fn thread_wait_fd() -> Result<RawFd, Errno> {
    WAIT_FD.with(|w| {
        if let Some(f) = w.get() {
            return Ok(f.0);
        }
        let fd = new_eventfd(true)?;
        let _ = w.set(WaitFd(fd));
        Ok(fd)
    })
}

struct WaitFd(RawFd);

impl Drop for WaitFd {
    fn drop(&mut self) {
        raw_close(self.0);
    }
}

thread_local! {
    static WAIT_FD: std::cell::OnceCell<WaitFd> = const { std::cell::OnceCell::new() };
}

thread_local! {
    /// This thread's wait eventfd may hold a ring: the thread registered it
    /// in a socket's `waiters` since it last emptied it ([`arm_wait`]).
    static WAIT_ARMED: std::cell::Cell<bool> = const { std::cell::Cell::new(false) };
}

/// This thread registered its wait eventfd in a socket's `waiters` (or
/// keeps it there) to sleep on it: the next [`drain_wait`] must empty it.
pub(crate) fn arm_wait() {
    WAIT_ARMED.with(|a| a.set(true));
}

/// Empty this thread's wait eventfd `fd` (under the lock, before looking at
/// the sockets it is about to sleep on) if it may hold a ring. Only sockets
/// whose `waiters` name it ring it, under the lock, and a thread is named
/// there only between [`arm_wait`] and the end of the call that armed it,
/// so a call that does not sleep (most, under load) makes no `read` here.
pub(crate) fn drain_wait(fd: RawFd) {
    if WAIT_ARMED.with(|a| a.replace(false)) {
        drain(fd);
    }
}

/// Empty a doorbell (it is non-blocking: an empty one answers EAGAIN).
pub(crate) fn drain(fd: RawFd) {
    let mut buf = [0u8; 8];
    // SAFETY: reads at most 8 bytes into a valid buffer.
    unsafe { libc::syscall(libc::SYS_read, fd, buf.as_mut_ptr(), 8) };
}

/// ppoll(2) without a signal mask; `timeout_ms < 0` waits forever. Returns
/// the raw result (-1 with errno on EINTR).
pub(crate) fn raw_poll(fds: &mut [libc::pollfd], timeout_ms: i64) -> i32 {
    let ts = (timeout_ms >= 0).then(|| libc::timespec {
        tv_sec: (timeout_ms / 1000) as libc::time_t,
        tv_nsec: ((timeout_ms % 1000) * 1_000_000) as libc::c_long,
    });
    let tsp = ts.as_ref().map_or(std::ptr::null(), |t| t as *const libc::timespec);
    // SAFETY: `fds` is valid for its length; the timespec outlives the call.
    unsafe { libc::syscall(libc::SYS_ppoll, fds.as_mut_ptr(), fds.len(), tsp, std::ptr::null::<u8>(), 0) as i32 }
}

// ---- the socket table -----------------------------------------------------

/// Hashes a descriptor (or port) by one multiplication: the tables keyed by
/// descriptor are looked up several times in every call, and the standard
/// library's SipHash was about a twentieth of redis-benchmark's CPU under
/// the library. Descriptors are the kernel's small numbers, not input an
/// attacker chooses.
#[derive(Default, Clone, Copy)]
pub(crate) struct FdHasher(u64);

impl std::hash::Hasher for FdHasher {
    fn finish(&self) -> u64 {
        // Fibonacci hashing: the high bits (hashbrown's control byte) vary too.
        self.0.wrapping_mul(0x9e37_79b9_7f4a_7c15)
    }
    fn write(&mut self, bytes: &[u8]) {
        for &b in bytes {
            self.0 = (self.0 << 8 | u64::from(b)).rotate_left(5);
        }
    }
    fn write_i32(&mut self, n: i32) {
        self.0 = u64::from(n as u32);
    }
}

/// [`FdHasher`]'s builder.
pub(crate) type FdHash = std::hash::BuildHasherDefault<FdHasher>;
/// A table keyed by descriptor.
pub(crate) type FdMap<V> = HashMap<RawFd, V, FdHash>;

/// What a ustack socket is.
#[derive(Debug)]
pub(crate) enum Kind {
    /// A TCP socket before `listen` or `connect`.
    TcpFresh,
    /// A listening TCP socket; connections taken from the stack before
    /// `accept` asked (to learn readiness) wait in `pending`.
    TcpListen { port: u16, pending: VecDeque<TcpHandle> },
    /// A connecting, connected or accepted TCP socket.
    TcpConn { h: TcpHandle },
    /// A UDP socket, bound once it has a port.
    Udp { h: Option<UdpHandle> },
}

/// One ustack socket; its descriptor is its eventfd.
#[derive(Debug)]
pub(crate) struct Sock {
    pub kind: Kind,
    pub nonblock: bool,
    /// `SOCK_CLOEXEC` or `FD_CLOEXEC` as the program set it, for `F_GETFD`:
    /// the eventfd itself is always close-on-exec (see `crate::spare`).
    pub cloexec: bool,
    /// `bind`'s address (TCP before listen; UDP's port is in its handle).
    pub bound: Option<SocketAddrV4>,
    /// `connect`'s address (UDP: the default destination and receive filter).
    pub peer: Option<SocketAddrV4>,
    /// The connection's error was returned once (by a call or SO_ERROR).
    pub err_reported: bool,
    pub shut_rd: bool,
    pub shut_wr: bool,
    /// Datagrams already taken from the stack for this socket: one taken by
    /// `MSG_PEEK`, or those of a port several sockets share (below).
    pub inbox: VecDeque<(Vec<u8>, SocketAddrV4)>,
    /// Bytes in `inbox`, bounded by the stack's `udp_rx_bytes`.
    pub inbox_bytes: usize,
    /// Bytes taken by `MSG_PEEK` on TCP, returned before the stream's.
    pub peeked_bytes: VecDeque<u8>,
    /// Readiness events seen (the doorbell's count).
    pub generation: u64,
    /// The epoll sets this socket is a member of (may name closed ones).
    pub epolls: Vec<RawFd>,
    /// Threads sleeping in a blocking call or poll on this socket: each
    /// thread's own eventfd, rung with the doorbell.
    pub waiters: Vec<RawFd>,
    /// `listen`'s backlog (to listen again in a forked shard).
    pub backlog: usize,
    pub opts: Opts,
}

/// Options kept for `getsockopt` (and applied where the stack has them).
#[derive(Clone, Copy, Debug, Default)]
pub(crate) struct Opts {
    pub reuseaddr: bool,
    pub reuseport: bool,
    pub keepalive: bool,
    pub nodelay: bool,
    pub broadcast: bool,
    /// SO_RCVBUF/SO_SNDBUF as stored and reported, Linux's way: twice the
    /// buffer's bytes (0: not set). See `socket::stored_buffer_size`.
    pub rcvbuf: i32,
    pub sndbuf: i32,
    /// SO_LINGER: `Some(0)` resets on close.
    pub linger: Option<i32>,
}

impl Opts {
    /// The buffer sizes a connection opened with these options gets: half
    /// of the stored SO_SNDBUF/SO_RCVBUF, as Linux's data room is; the
    /// stack's own where none was set.
    pub fn buffer_sizes(&self) -> BufferSizes {
        let half = |stored: i32| (stored > 0).then_some(stored as usize / 2);
        BufferSizes { send: half(self.sndbuf), recv: half(self.rcvbuf) }
    }
}

impl Sock {
    pub fn new(kind: Kind, nonblock: bool) -> Sock {
        Sock {
            kind,
            nonblock,
            cloexec: false,
            bound: None,
            peer: None,
            err_reported: false,
            shut_rd: false,
            shut_wr: false,
            inbox: VecDeque::new(),
            inbox_bytes: 0,
            peeked_bytes: VecDeque::new(),
            generation: 0,
            epolls: Vec::new(),
            waiters: Vec::new(),
            backlog: 0,
            opts: Opts::default(),
        }
    }

    /// The stack's socket behind this one, as registered.
    pub fn core_socket(&self) -> Option<Socket> {
        match &self.kind {
            Kind::TcpFresh => None,
            Kind::TcpListen { port, .. } => Some(Socket::Listener(*port)),
            Kind::TcpConn { h } => Some(Socket::Tcp(*h)),
            Kind::Udp { h } => h.map(Socket::Udp),
        }
    }
}

/// One epoll registration of a ustack socket.
#[derive(Clone, Copy, Debug)]
pub(crate) struct EpollEntry {
    pub events: u32,
    pub data: u64,
    /// On its set's ready list.
    pub queued: bool,
    /// EPOLLONESHOT fired: silent until EPOLL_CTL_MOD.
    pub disabled: bool,
}

/// The ustack members of one epoll set, as Linux's epoll keeps them: a
/// ready list of the members that had an event (and of level-triggered
/// members reported last time), so a wait looks at those only, and a count
/// of threads sleeping on the set, so a doorbell is rung only when one is.
#[derive(Debug, Default)]
pub(crate) struct EpollSet {
    pub members: FdMap<EpollEntry>,
    pub ready: Vec<RawFd>,
    /// Threads in `epoll_wait` sleeping in the kernel on this set.
    pub sleepers: u32,
    /// A doorbell of this set was rung since its sleepers went to sleep.
    pub rung: bool,
    /// For a set inside another epoll set (or polled): an eventfd of ours in
    /// the set's kernel set, level-triggered, readable exactly while a
    /// ustack member is ready (`raised`), so the kernel reports the set
    /// readable to whoever watches it. The sockets' own doorbells cannot
    /// do that: they ring only for a thread sleeping on this set.
    pub bell: Option<RawFd>,
    pub raised: bool,
    /// Members and former members whose eventfd is in the set's kernel
    /// set: added at a socket's first `EPOLL_CTL_ADD` and left there by
    /// `EPOLL_CTL_DEL` (the kernel drops it when the socket closes), so a
    /// DEL and ADD again, which redis-benchmark makes around every request,
    /// cost no system call. A former member's doorbell may wake a sleeper
    /// on this set for nothing; the sleeper looks and sleeps again.
    pub in_kernel: HashSet<RawFd, FdHash>,
}

impl EpollSet {
    /// Put `fd` on the ready list (once).
    pub fn queue(&mut self, fd: RawFd) {
        if let Some(e) = self.members.get_mut(&fd) {
            if !e.queued {
                e.queued = true;
                self.ready.push(fd);
            }
        }
    }

    /// Make the bell readable (the set has a ready ustack member).
    pub fn raise(&mut self) {
        if let (Some(b), false) = (self.bell, self.raised) {
            ring(b);
            self.raised = true;
        }
    }

    /// Make the bell unreadable (no ustack member is ready).
    pub fn lower(&mut self) {
        if let (Some(b), true) = (self.bell, self.raised) {
            drain(b);
            self.raised = false;
        }
    }
}

/// Everything behind the lock.
pub(crate) struct Inner {
    pub stack: Stack,
    /// `None` in a process whose stack went to its children (shard mode).
    pub device: SendDevice,
    /// Every ARP frame of the interface, for a shard (see [`crate::shard`]).
    pub(crate) arp: Option<crate::shard::ArpSide>,
    pub clock: Clock,
    pub socks: FdMap<Sock>,
    /// epoll descriptor → its ustack members.
    pub epolls: FdMap<EpollSet>,
    /// UDP port → the sockets bound to it. The stack has one socket per
    /// port; sockets sharing it (SO_REUSEADDR, e.g. a connected one beside
    /// a fresh listener, as iperf3 does) get their datagrams by peer here.
    pub udp_members: HashMap<u16, Vec<RawFd>>,
    events: Vec<Event>,
    /// When the stack thread will next wake by itself.
    planned: Option<Instant>,
    waker: RawFd,
    /// Gratuitous ARPs still to send, and when the next is due.
    announce: (u8, Instant),
    /// When a call last sent (see [`Inner::after_call`]).
    last_call: Option<Instant>,
    /// The stack thread sleeps without the device's descriptor because an
    /// application thread is at work and will take the frames at its next
    /// wait (see [`BUSY_WINDOW`]); a thread that goes to sleep on an epoll
    /// set while this holds wakes it first ([`Inner::sleeping`]).
    blind: bool,
    /// When an application thread last went to sleep on an epoll set.
    last_sleep: Option<Instant>,
    /// Frames are queued on the device and not kicked, or calls left
    /// segments to build (`untransmitted`); mirrored in [`UNKICKED`].
    unkicked: bool,
    /// Calls queued data that the stack has not made into segments yet
    /// (see [`Inner::after_call`]); implies `unkicked`.
    untransmitted: bool,
    /// Bytes calls queued since the stack last transmitted.
    pub(crate) deferred_bytes: usize,
    /// Closed sockets' eventfds kept for the next sockets (`crate::spare`).
    pub(crate) spare: Vec<RawFd>,
}

/// A device whose transmit queue is not flushed at the end of a poll: the
/// frames wait in the device (its ring) for the next kick. Counts what it
/// queued.
struct NoKick<'a, D> {
    dev: &'a mut D,
    queued: usize,
}

struct NoKickTx<'a, T> {
    tx: T,
    queued: &'a mut usize,
}

impl<T: TxQueue> TxQueue for NoKickTx<'_, T> {
    fn send<F: FnOnce(&mut [u8])>(&mut self, len: usize, meta: TxMeta, fill: F) -> Result<(), ustack_core::phy::TxFull> {
        let r = self.tx.send(len, meta, fill);
        *self.queued += usize::from(r.is_ok());
        r
    }
}

impl<D: Device> Device for NoKick<'_, D> {
    type Rx<'b>
        = D::Rx<'b>
    where
        Self: 'b;
    type Tx<'b>
        = NoKickTx<'b, D::Tx<'b>>
    where
        Self: 'b;

    fn queues(&mut self) -> (Self::Rx<'_>, Self::Tx<'_>) {
        let (rx, tx) = self.dev.queues();
        (rx, NoKickTx { tx, queued: &mut self.queued })
    }

    fn caps(&self) -> ustack_core::phy::DeviceCaps {
        self.dev.caps()
    }
}

/// The device chain, moved to the stack thread and used under the lock.
pub(crate) struct SendDevice(pub Option<DeviceChain>);

// SAFETY: the device (descriptors and mmap'd rings owned by this process) is
// only touched with the global lock held, by one thread at a time.
unsafe impl Send for SendDevice {}

impl Inner {
    pub fn now(&self) -> Instant {
        self.clock.now()
    }

    pub fn sock(&mut self, fd: RawFd) -> Result<&mut Sock, Errno> {
        self.socks.get_mut(&fd).ok_or(EBADF)
    }

    /// Socket `fd` has news: wake every thread waiting on it (its own
    /// eventfd each), queue it on its epoll sets' ready lists, and ring its
    /// doorbell if a thread sleeps on one of them and none was rung yet (a
    /// thread that is not sleeping finds the ready list at its next wait,
    /// so most events under load cost no system call).
    pub fn notify(&mut self, fd: RawFd) {
        let Some(s) = self.socks.get_mut(&fd) else { return };
        s.generation += 1;
        for &w in &s.waiters {
            ring(w);
        }
        let mut bell = false;
        let epolls = &mut self.epolls;
        s.epolls.retain(|ep| {
            let Some(set) = epolls.get_mut(ep) else { return false };
            if !set.members.contains_key(&fd) {
                return false;
            }
            set.queue(fd);
            if set.sleepers > 0 && !set.rung {
                set.rung = true;
                bell = true;
            }
            true
        });
        if bell {
            ring(fd);
        }
        if BELLS.load(Ordering::Relaxed) > 0 {
            // Sets that are watched from outside: raise each one's bell if
            // this socket now has an event its entry there asks for.
            let Some(s) = self.socks.get(&fd) else { return };
            let sets: Vec<RawFd> = s.epolls.clone();
            for ep in sets {
                let Some(set) = self.epolls.get(&ep) else { continue };
                let Some(&e) = set.members.get(&fd) else { continue };
                if set.bell.is_none() || set.raised || e.disabled {
                    continue;
                }
                if crate::wait::member_ready(self, fd, e.events) {
                    if let Some(set) = self.epolls.get_mut(&ep) {
                        set.raise();
                    }
                }
            }
        }
    }

    /// Hand this turn's readiness events to their sockets' doorbells.
    fn dispatch_events(&mut self) {
        loop {
            self.events.clear();
            if self.stack.poll_events(&mut self.events, 1024) == 0 {
                return;
            }
            let events = std::mem::take(&mut self.events);
            for ev in &events {
                let fd = ev.token as RawFd;
                let Some(s) = self.socks.get(&fd) else { continue };
                if s.core_socket() != Some(ev.socket) {
                    continue;
                }
                self.notify(fd);
                // A shared UDP port: every member may have news.
                if let Socket::Udp(h) = ev.socket {
                    let port = self.stack.udp_local_port(h).unwrap_or(0);
                    let n = self.udp_members.get(&port).map_or(0, Vec::len);
                    for i in 0..n {
                        let m = self.udp_members[&port][i];
                        if m != fd {
                            self.notify(m);
                        }
                    }
                }
            }
            self.events = events;
        }
    }

    /// After a call: queue what it sent on the device, ring the doorbells it
    /// caused, and wake the stack thread if the stack's next deadline moved
    /// earlier.
    ///
    /// The kernel is not kicked yet when the stack thread will wake within
    /// [`KICK_DELAY`] anyway (it does while calls come, see
    /// [`stack_thread`]): the frames wait in the device's ring until the
    /// calling thread waits (every wait in the library, and the LD_PRELOAD
    /// library's waits on kernel descriptors, kick first: [`Inner::kick`]),
    /// another call kicks, or the stack thread's next turn, so a burst of
    /// small writes between two waits costs one kick (on AF_PACKET over a
    /// veth, a `sendto` that runs the peer's whole receive path). While
    /// the calls since the last transmission queued less than
    /// [`DEFER_BYTES`], not even their segments are built until then, so
    /// small writes between two waits share segments (nginx's header and
    /// body leave in one, Linux sends two) and a call costs no pass over
    /// the stack.
    pub fn after_call(&mut self) {
        let now = self.clock.now();
        let defer = self.planned.is_some_and(|p| p <= now + KICK_DELAY);
        self.last_call = Some(now);
        if !defer {
            self.after_call_receiving(0);
            return;
        }
        let Some(device) = self.device.0.as_mut() else { return };
        if self.deferred_bytes < DEFER_BYTES {
            // Not even the segments: the wait (or turn) that kicks builds
            // them, so the writes between two waits leave in as few segments
            // as the stack can make (nginx's header and body, one each call).
            if !self.unkicked {
                UNKICKED.store(true, Ordering::Release);
            }
            self.unkicked = true;
            self.untransmitted = true;
        } else {
            let mut dev = NoKick { dev: device, queued: 0 };
            self.stack.poll(now, &mut dev, 0);
            self.untransmitted = false;
            self.deferred_bytes = 0;
            if dev.queued > 0 && !self.unkicked {
                self.unkicked = true;
                UNKICKED.store(true, Ordering::Release);
            }
        }
        let device_due = device.next_deadline();
        self.dispatch_events();
        self.plan(earliest(self.stack.poll_timeout(), device_due));
    }

    /// The device's descriptor that becomes readable when frames arrive, for
    /// a thread about to sleep: it wakes for frames itself and takes them
    /// ([`Inner::after_call_receiving`]) instead of waiting for the stack
    /// thread to take them and ring its doorbell (two thread switches).
    pub fn device_fd(&self) -> Option<RawFd> {
        self.device.0.as_ref().filter(|d| d.failure().is_none()).and_then(|d| d.wait_fd())
    }

    /// Send what calls left unsent: build the segments they left to build
    /// and kick the frames queued without a kick, if any.
    pub fn kick(&mut self) {
        if self.untransmitted {
            self.after_call_receiving(0);
            return;
        }
        if !self.unkicked {
            return;
        }
        if let Some(device) = self.device.0.as_mut() {
            device.queues().1.flush();
        }
        self.kicked();
    }

    /// The stack transmitted what it had and the device was flushed.
    fn kicked(&mut self) {
        self.untransmitted = false;
        self.deferred_bytes = 0;
        if self.unkicked {
            self.unkicked = false;
            UNKICKED.store(false, Ordering::Release);
        }
    }

    /// Wake the stack thread if `due` is earlier than its planned wake.
    fn plan(&mut self, due: Option<Instant>) {
        if due.is_some_and(|d| self.planned.is_none_or(|p| d < p)) {
            self.planned = due;
            ring(self.waker);
        }
    }

    /// [`Inner::after_call`], first taking up to `budget` received frames:
    /// a thread about to wait takes what arrived while it worked, so its
    /// events are on the ready lists without a turn of the stack thread.
    pub fn after_call_receiving(&mut self, budget: usize) {
        let now = self.clock.now();
        self.after_call_receiving_at(now, budget);
    }

    /// [`Inner::after_call_receiving`] at `now` (a clock read saved where
    /// the caller has one).
    pub fn after_call_receiving_at(&mut self, now: Instant, budget: usize) {
        let Some(device) = self.device.0.as_mut() else { return };
        // The poll flushes the device: what earlier calls queued leaves too.
        self.stack.poll(now, device, budget);
        let device_due = device.next_deadline();
        self.kicked();
        self.dispatch_events();
        self.plan(earliest(self.stack.poll_timeout(), device_due));
    }

    /// After a look that took frames and transmitted
    /// ([`Inner::after_call_receiving_at`]) and then only read readiness:
    /// note the call (see [`KICK_WINDOW`]) and ring what the look raised.
    /// Nothing was queued since that pass, so none is made again
    /// ([`Inner::after_call`] would make one, or leave one to the next kick).
    pub fn after_look(&mut self, now: Instant) {
        self.last_call = Some(now);
        self.dispatch_events();
    }

    /// Send the gratuitous ARPs that are due (see [`ANNOUNCEMENTS`]); the
    /// time of the next one, if any is left.
    fn announce(&mut self, now: Instant) -> Option<Instant> {
        let (left, due) = self.announce;
        if left == 0 {
            return None;
        }
        if now < due {
            return Some(due);
        }
        if let Some(device) = self.device.0.as_mut() {
            send_gratuitous_arp(device, self.stack.config().mac, self.stack.config().ipv4.addr);
        }
        self.announce = (left - 1, now + ANNOUNCE_INTERVAL);
        (left > 1).then_some(now + ANNOUNCE_INTERVAL)
    }

    /// An application thread is about to sleep on an epoll set: the stack
    /// thread must watch the device again if it left it out.
    pub fn sleeping(&mut self, now: Instant) {
        self.last_sleep = Some(now);
        self.watch_device();
    }

    /// Have the stack thread watch the device again if it left it out.
    pub fn watch_device(&mut self) {
        if self.blind {
            self.blind = false;
            ring(self.waker);
        }
    }

    /// Register a new socket of the stack under descriptor `fd`.
    pub fn register(&mut self, socket: Socket, fd: RawFd) {
        // The socket was just made: it exists, so this cannot fail.
        let _ = self.stack.register(socket, fd as u64, Interest::READABLE | Interest::WRITABLE);
    }
}

struct Global {
    inner: Mutex<Inner>,
}

static GLOBAL: OnceLock<Global> = OnceLock::new();

/// This process has no stack of its own: it is a forked child (the stack
/// stayed with the parent), or a parent whose stack followed its child.
static FORKED: AtomicBool = AtomicBool::new(false);
/// [`StartConfig::follow_fork`]: the stack moves to the first forked child.
static FOLLOW_FORK: AtomicBool = AtomicBool::new(false);
/// [`StartConfig::shard_fork`]: how every forked child opens its own device.
static SHARD: OnceLock<ShardPlan> = OnceLock::new();

/// What a forked shard opens (see [`crate::shard`]).
struct ShardPlan {
    /// The parent's device spec with `fanout=ID` added.
    spec: DeviceSpec,
}

thread_local! {
    /// The lock, held across a fork by the forking thread so the child's
    /// copy of the stack is consistent.
    static FORK_GUARD: std::cell::RefCell<Option<MutexGuard<'static, Inner>>> = const { std::cell::RefCell::new(None) };
}

extern "C" fn fork_prepare() {
    let follow = FOLLOW_FORK.load(Ordering::Acquire) && !FORKED.load(Ordering::Acquire);
    if follow || SHARD.get().is_some() {
        if let Some(g) = GLOBAL.get() {
            let mut guard = g.inner.lock().unwrap_or_else(|p| p.into_inner());
            guard.kick();
            FORK_GUARD.with(|f| *f.borrow_mut() = Some(guard));
        }
    }
}

extern "C" fn fork_parent() {
    let guard = FORK_GUARD.with(|f| f.borrow_mut().take());
    if let Some(mut g) = guard {
        if SHARD.get().is_some() {
            // The children share the interface through the fan-out group;
            // a socket of ours outside it would take a copy of everything.
            g.device.0 = None;
            g.arp = None;
        }
        // The stack is the child's (or each child has its own) now: this
        // process's thread ends at its next turn and its calls fail.
        FORKED.store(true, Ordering::Release);
        ring(g.waker);
    }
}

extern "C" fn fork_child() {
    let guard = FORK_GUARD.with(|f| f.borrow_mut().take());
    match guard {
        Some(mut g) => {
            if let Some(plan) = SHARD.get() {
                if let Err(e) = become_shard(&mut g, plan) {
                    raw_write(2, format!("ustack: this forked process has no stack: {e}\n").as_bytes());
                    g.device.0 = None;
                    FORKED.store(true, Ordering::Release);
                    return;
                }
                FORKED.store(false, Ordering::Release);
            }
            // Our copy of the stack, its device and its sockets (or, as a
            // shard, our own): drive them.
            let waker = g.waker;
            drop(g);
            if std::thread::Builder::new().name("ustack".into()).spawn(move || stack_thread(waker)).is_err() {
                FORKED.store(true, Ordering::Release);
            }
        }
        None => FORKED.store(true, Ordering::Release),
    }
}

thread_local! {
    static OPENING_DEVICE: std::cell::Cell<bool> = const { std::cell::Cell::new(false) };
}

/// Whether this thread is opening a device for a forked shard: the
/// sockets that takes (an ioctl socket for the interface's offloads) are
/// the kernel's, not ustack's (the LD_PRELOAD library asks).
pub fn opening_device() -> bool {
    OPENING_DEVICE.with(|o| o.get())
}

/// In a forked child, shard mode: a stack of our own on our own socket in
/// the fan-out group, with the parent's listeners and UDP ports opened
/// again under the same descriptors (see [`crate::shard`]).
fn become_shard(g: &mut Inner, plan: &ShardPlan) -> Result<(), String> {
    // The inherited device and ARP socket are the parent's (or closed):
    // drop our references to them.
    g.device.0 = None;
    g.arp = None;
    OPENING_DEVICE.with(|o| o.set(true));
    let device = ChainSpec { device: plan.spec.clone(), impair: None, pcap: None }.open().map_err(|e| e.to_string());
    OPENING_DEVICE.with(|o| o.set(false));
    let device = device?;
    let arp = crate::shard::ArpSide::open(&plan.spec.name)
        .map_err(|e| format!("cannot open an ARP packet socket on {}: {e}", plan.spec.name))?;
    let mut stack = Stack::new(g.stack.config().clone(), os_seed());
    // UDP ports, looked up in the parent's stack before it goes.
    let mut udp: Vec<(u16, Vec<RawFd>)> = Vec::new();
    for (&port, members) in &g.udp_members {
        udp.push((port, members.clone()));
    }
    let fds: Vec<RawFd> = g.socks.keys().copied().collect();
    let mut listeners = Vec::new();
    for fd in fds {
        let Some(s) = g.socks.get_mut(&fd) else { continue };
        s.waiters.clear();
        match &mut s.kind {
            Kind::TcpFresh | Kind::Udp { .. } => {}
            Kind::TcpListen { port, pending } => {
                pending.clear();
                if stack.tcp_listen_with(*port, s.backlog.max(1), s.opts.buffer_sizes()).is_ok() {
                    listeners.push((*port, fd));
                } else {
                    g.socks.remove(&fd);
                }
            }
            // The parent's connection: not ours (calls answer EBADF, close works).
            Kind::TcpConn { .. } => {
                g.socks.remove(&fd);
            }
        }
        crate::shard::renew_eventfd(fd);
    }
    g.udp_members.clear();
    for (port, members) in udp {
        match stack.udp_bind(port) {
            Ok(h) => {
                for &m in &members {
                    if let Some(s) = g.socks.get_mut(&m) {
                        s.kind = Kind::Udp { h: Some(h) };
                    }
                }
                let _ = stack.register(Socket::Udp(h), members[0] as u64, Interest::READABLE | Interest::WRITABLE);
                g.udp_members.insert(port, members);
            }
            Err(_) => {
                for m in members {
                    g.socks.remove(&m);
                }
            }
        }
    }
    g.close_spares();
    let socks = &g.socks;
    for set in g.epolls.values_mut() {
        set.members.retain(|fd, _| socks.contains_key(fd));
        set.sleepers = 0;
        // The sockets' eventfds are fresh files (renew_eventfd): none is in a kernel set yet.
        set.in_kernel.clear();
    }
    g.stack = stack;
    for (port, fd) in listeners {
        g.register(Socket::Listener(port), fd);
    }
    g.device.0 = Some(device);
    g.arp = Some(arp);
    g.events.clear();
    g.planned = None;
    g.announce = (ANNOUNCEMENTS, Instant::ZERO);
    crate::shard::renew_eventfd(g.waker);
    WAIT_FD.with(|w| {
        if let Some(f) = w.get() {
            crate::shard::renew_eventfd(f.0);
        }
    });
    Ok(())
}

/// The lock, for a call in the process that owns the stack.
pub(crate) fn lock() -> Result<MutexGuard<'static, Inner>, Errno> {
    let g = GLOBAL.get().ok_or(Errno(libc::ENETDOWN))?;
    if FORKED.load(Ordering::Acquire) {
        return Err(unsupported_fork());
    }
    Ok(g.inner.lock().unwrap_or_else(|p| p.into_inner()))
}

/// The lock if no thread holds it, this one included: for work on the way
/// into a kernel call the library's own code also makes under the lock (a
/// TAP device's `read`, an AF_XDP `recvfrom` go through the LD_PRELOAD
/// library's symbols).
pub(crate) fn try_lock() -> Option<MutexGuard<'static, Inner>> {
    let g = GLOBAL.get()?;
    if FORKED.load(Ordering::Acquire) {
        return None;
    }
    match g.inner.try_lock() {
        Ok(g) => Some(g),
        Err(std::sync::TryLockError::Poisoned(p)) => Some(p.into_inner()),
        Err(std::sync::TryLockError::WouldBlock) => None,
    }
}

/// Whether this process has a stack it may use (false in a forked child,
/// or a parent whose stack followed its child).
pub(crate) fn owns_stack() -> bool {
    GLOBAL.get().is_some() && !FORKED.load(Ordering::Acquire)
}

fn unsupported_fork() -> Errno {
    crate::errno::unsupported("a call in a process without the stack (a forked child, or a parent whose stack followed its child: USTACK_FORK)", EBADF)
}

/// The most a process's exit waits for its TCP connections to deliver what
/// was written to them (the kernel would go on sending after the process
/// is gone; here the stack goes with it).
pub const EXIT_LINGER: std::time::Duration = std::time::Duration::from_secs(5);

/// At exit: close every socket still open (gracefully, as the kernel does
/// when a process ends) and wait, at most [`EXIT_LINGER`], until every TCP
/// connection has delivered its data and its FIN has been acknowledged.
pub fn finish_at_exit() {
    if GLOBAL.get().is_none() || FORKED.load(Ordering::Acquire) {
        return;
    }
    let fds: Vec<RawFd> = match lock() {
        Ok(g) => g.socks.keys().copied().collect(),
        Err(_) => return,
    };
    for fd in fds {
        let _ = crate::socket::close(fd);
    }
    let deadline = std::time::Instant::now() + EXIT_LINGER;
    while std::time::Instant::now() < deadline {
        {
            let Ok(mut g) = lock() else { return };
            let st = g.stack.tcp_states();
            use ustack_core::tcp::State::*;
            let busy: usize = [SynSent, SynReceived, Established, CloseWait, FinWait1, Closing, LastAck]
                .iter()
                .map(|&s| st.count(s))
                .sum();
            if busy == 0 {
                g.kick(); // the last ACKs
                return;
            }
            g.after_call_receiving(0);
        }
        std::thread::sleep(std::time::Duration::from_millis(2));
    }
}

#[used]
#[link_section = ".fini_array"]
static FINI: extern "C" fn() = {
    extern "C" fn fini() {
        finish_at_exit();
    }
    fini
};

/// Whether [`start`] has run in this process.
pub fn started() -> bool {
    GLOBAL.get().is_some()
}

/// How to start the stack.
#[derive(Clone, Debug)]
pub struct StartConfig {
    /// The device spec: `tap:NAME`, `af_packet:IFACE[,…]`, `af_xdp:IFACE[,…]`.
    pub device: String,
    /// The stack's address and prefix, `A.B.C.D/N`.
    pub ip: String,
    /// The default gateway, if any.
    pub gateway: Option<String>,
    /// For `tap:` only: give the kernel's side of the TAP this `A.B.C.D/N`.
    pub host_ip: Option<String>,
    /// At the first `fork`, the stack (device, sockets, connections) moves to
    /// the child and this process's ustack sockets stop working: for servers
    /// whose master forks one worker (nginx). Without it, the child's calls
    /// on inherited ustack sockets fail and the parent keeps its stack.
    pub follow_fork: bool,
    /// Every forked child gets a stack of its own, on its own socket in an
    /// `af_packet:` fan-out group, with the parent's listeners (see
    /// [`crate::shard`]); the parent's stack stops at its first fork. For
    /// servers whose master forks several workers (nginx).
    pub shard_fork: bool,
    /// Each TCP connection's send and receive buffer, in bytes, with an
    /// optional `K` or `M` suffix (`None`: [`DEFAULT_TCP_BUFFER`]). The
    /// receive buffer bounds the window the peer may fill before we read.
    pub tcp_buffer: Option<String>,
    /// How long a wait keeps looking (taking frames, yielding the CPU
    /// between looks) before it sleeps in the kernel, in microseconds,
    /// `0` to `100000` (`None` or `0`: it sleeps at once).
    pub busy_poll: Option<String>,
}

/// Longest [`StartConfig::busy_poll`], in microseconds.
pub const MAX_BUSY_POLL_US: u64 = 100_000;

/// [`StartConfig::busy_poll`] of the running stack, in microseconds.
static BUSY_POLL_US: AtomicU64 = AtomicU64::new(0);

/// Until when a wait that would sleep now keeps looking instead, if the
/// stack was started with a busy-poll time.
pub(crate) fn busy_poll_until() -> Option<std::time::Instant> {
    match BUSY_POLL_US.load(Ordering::Relaxed) {
        0 => None,
        us => Some(std::time::Instant::now() + std::time::Duration::from_micros(us)),
    }
}

/// The TCP send and receive buffer of each connection, unless
/// [`StartConfig::tcp_buffer`] says otherwise: 1 MiB, four times the stack's
/// own default (its `TcpConfig`). A bulk transfer between two processes on
/// a loaded machine keeps a window in flight for as long as a thread takes
/// to be scheduled; 256 KiB allowed about a third of what Linux moves
/// (whose buffers grow to 4–6 MiB). Memory is taken as data arrives
/// (16 chunks of 64 KiB at most per buffer), not when a connection opens.
pub const DEFAULT_TCP_BUFFER: usize = 1 << 20;

/// Bounds of [`StartConfig::tcp_buffer`].
const TCP_BUFFER_RANGE: std::ops::RangeInclusive<usize> = (16 << 10)..=(64 << 20);

/// Parse `A.B.C.D/N`.
pub fn parse_cidr(s: &str) -> Option<Ipv4Cidr> {
    let (a, p) = s.split_once('/')?;
    Ipv4Cidr::new(a.parse().ok()?, p.parse().ok()?)
}

impl StartConfig {
    /// [`StartConfig::busy_poll`] in microseconds.
    pub fn busy_poll_us(&self) -> Result<u64, String> {
        let Some(v) = &self.busy_poll else { return Ok(0) };
        match v.parse::<u64>() {
            Ok(us) if us <= MAX_BUSY_POLL_US => Ok(us),
            _ => {
                Err(format!("busy poll {v:?}: give microseconds from 0 (sleep at once) to {MAX_BUSY_POLL_US}, e.g. 50"))
            }
        }
    }

    /// [`StartConfig::tcp_buffer`] in bytes.
    pub fn tcp_buffer_bytes(&self) -> Result<usize, String> {
        let Some(v) = &self.tcp_buffer else { return Ok(DEFAULT_TCP_BUFFER) };
        let (digits, unit) = match v.strip_suffix(['K', 'k']) {
            Some(d) => (d, 1 << 10),
            None => v.strip_suffix(['M', 'm']).map_or((v.as_str(), 1), |d| (d, 1 << 20)),
        };
        digits
            .parse::<usize>()
            .ok()
            .and_then(|n| n.checked_mul(unit))
            .filter(|n| TCP_BUFFER_RANGE.contains(n))
            .ok_or_else(|| format!("tcp buffer '{v}': give bytes from 16K to 64M (e.g. 1M, 262144)"))
    }

    /// Check every setting without touching the system; the error is one
    /// line naming the setting and what is allowed.
    pub fn check(&self) -> Result<(DeviceSpec, Ipv4Cidr, Option<Ipv4Addr>, Option<Ipv4Cidr>), String> {
        let spec: DeviceSpec = self.device.parse().map_err(|e| format!("device '{}': {e}", self.device))?;
        let ip = parse_cidr(&self.ip)
            .ok_or_else(|| format!("IP address '{}' is not A.B.C.D/N (the stack's address and prefix)", self.ip))?;
        let gateway = match &self.gateway {
            None => None,
            Some(g) => {
                let g: Ipv4Addr = g.parse().map_err(|_| format!("gateway '{g}' is not an IPv4 address A.B.C.D"))?;
                if !ip.contains(g) {
                    return Err(format!("gateway {g} is outside the stack's subnet {}/{}", ip.addr, ip.prefix_len));
                }
                Some(g)
            }
        };
        let host = match &self.host_ip {
            None => None,
            Some(h) => Some(parse_cidr(h).ok_or_else(|| format!("host IP '{h}' is not A.B.C.D/N"))?),
        };
        if self.shard_fork && self.follow_fork {
            return Err("fork: choose one of following the first child and a stack per child".into());
        }
        if self.shard_fork && spec.kind != DeviceKind::AfPacket {
            return Err(format!(
                "fork: a stack per forked process needs an af_packet: device (the processes share it through a fan-out group), not {}:",
                spec.kind.as_str()
            ));
        }
        if self.shard_fork && spec.options.iter().any(|(k, _)| k == "fanout") {
            return Err("fork: a stack per forked process chooses the fan-out group itself: drop fanout= from the device".into());
        }
        self.tcp_buffer_bytes()?;
        self.busy_poll_us()?;
        Ok((spec, ip, gateway, host))
    }
}

/// Open the device, build the stack and start its thread. Fails (one line)
/// on a bad setting, a device that cannot be opened, or a second start.
pub fn start(cfg: &StartConfig) -> Result<(), String> {
    let (spec, ip, gateway, host) = cfg.check()?;
    if GLOBAL.get().is_some() {
        return Err("the stack is already started in this process".into());
    }
    let shard_spec = cfg.shard_fork.then(|| spec.clone());
    let device = ChainSpec { device: spec, impair: None, pcap: None }.open().map_err(|e| e.to_string())?;
    if let (Some(host), Some(tap)) = (host, device.device().as_tap()) {
        tap.set_host_addr(host.addr, host.prefix_len).map_err(|e| e.to_string())?;
    }
    let seed = os_seed();
    let b = seed.to_le_bytes();
    let mac = EthernetAddress([0x02, b[1], b[2], b[3], b[4], b[5]]);
    let mut sc = StackConfig::new(mac, ip);
    sc.gateway = gateway;
    sc.mtu = device.caps().mtu;
    sc.tcp.mss = sc.tcp.mss.min(sc.mtu.saturating_sub(40) as u16);
    let buffer = cfg.tcp_buffer_bytes()?;
    BUSY_POLL_US.store(cfg.busy_poll_us()?, Ordering::Relaxed);
    sc.tcp.recv_buffer_size = buffer;
    sc.tcp.send_buffer_size = buffer;
    let stack = Stack::new(sc, seed);
    let waker = new_eventfd(true).map_err(|e| format!("cannot create an eventfd: errno {}", e.0))?;
    let inner = Inner {
        stack,
        device: SendDevice(Some(device)),
        arp: None,
        clock: Clock::new(),
        socks: FdMap::default(),
        epolls: FdMap::default(),
        udp_members: HashMap::new(),
        events: Vec::new(),
        planned: None,
        waker,
        announce: (ANNOUNCEMENTS, Instant::ZERO),
        last_call: None,
        blind: false,
        last_sleep: None,
        unkicked: false,
        untransmitted: false,
        deferred_bytes: 0,
        spare: Vec::new(),
    };
    let global = Global { inner: Mutex::new(inner) };
    GLOBAL.set(global).map_err(|_| "the stack is already started in this process".to_string())?;
    // SAFETY: registers a handler that only stores to an atomic.
    FOLLOW_FORK.store(cfg.follow_fork, Ordering::Release);
    if let Some(mut spec) = shard_spec {
        // SAFETY: getpid has no preconditions.
        let group = (unsafe { libc::getpid() } as u32 & 0xffff) as u16;
        spec.options.push(("fanout".into(), group.to_string()));
        let _ = SHARD.set(ShardPlan { spec });
    }
    // SAFETY: registers handlers that take the lock (prepare), then release
    // it and set flags or start a thread (parent, child).
    unsafe { libc::pthread_atfork(Some(fork_prepare), Some(fork_parent), Some(fork_child)) };
    std::thread::Builder::new()
        .name("ustack".into())
        .spawn(move || stack_thread(waker))
        .map_err(|e| format!("cannot start the stack thread: {e}"))?;
    Ok(())
}

/// Gratuitous ARPs a starting stack sends. Each process's stack takes a
/// fresh random MAC, so a peer that talked to the previous program on this
/// address holds a stale entry for up to a minute; an announcement (an ARP
/// request for our own address, RFC 5227 §3) makes Linux replace it. Linux
/// ignores a change within `locktime` (1 s) of the entry's last
/// confirmation, hence a few, [`ANNOUNCE_INTERVAL`] apart (as `arping -U
/// -c 3` or keepalived do).
pub const ANNOUNCEMENTS: u8 = 3;
/// Time between two gratuitous ARPs.
pub const ANNOUNCE_INTERVAL: ustack_core::Duration = ustack_core::Duration::from_millis(1000);

/// One gratuitous ARP: a broadcast request whose sender and target address
/// are both ours.
fn send_gratuitous_arp(device: &mut DeviceChain, mac: EthernetAddress, ip: Ipv4Addr) {
    let repr = ArpRepr {
        operation: ArpOperation::Request,
        source_hardware_addr: mac,
        source_protocol_addr: ip,
        target_hardware_addr: EthernetAddress([0; 6]),
        target_protocol_addr: ip,
    };
    let eth = EthernetRepr { src_addr: mac, dst_addr: EthernetAddress::BROADCAST, ethertype: EtherType::Arp, vlan_id: None };
    let (_, mut tx) = device.queues();
    // A full transmit ring drops it; the next announcement follows.
    let _ = tx.send(ETHERNET_HEADER_LEN + repr.buffer_len(), TxMeta::default(), |b| {
        repr.emit(&mut ArpPacket::new_unchecked(&mut b[ETHERNET_HEADER_LEN..]));
        eth.emit(&mut ustack_wire::EthernetFrame::new_unchecked(b));
    });
    tx.flush();
}

/// The longest the stack thread sleeps without a deadline (it is woken for
/// everything else; this only bounds a missed wakeup).
const MAX_SLEEP_MS: i64 = 1000;

fn stack_thread(waker: RawFd) {
    let Some(g) = GLOBAL.get() else { return };
    loop {
        let (wait_fd, arp_fd, sleep_ms) = {
            let mut inner = g.inner.lock().unwrap_or_else(|p| p.into_inner());
            if FORKED.load(Ordering::Acquire) {
                return; // the stack followed a forked child
            }
            let inner = &mut *inner;
            let Some(device) = inner.device.0.as_mut() else { return };
            let now = inner.clock.now();
            let mut got = 0;
            {
                let mut dev = crate::shard::WithArp { dev: &mut *device, arp: inner.arp.as_mut() };
                loop {
                    let n = inner.stack.poll(now, &mut dev, DEFAULT_RX_BURST);
                    got += n;
                    if n < DEFAULT_RX_BURST || got >= 8 * DEFAULT_RX_BURST {
                        break;
                    }
                }
            }
            inner.stack.poll(now, &mut *device, 0);
            // That poll transmitted and flushed the device.
            inner.untransmitted = false;
            inner.deferred_bytes = 0;
            if inner.unkicked {
                inner.unkicked = false;
                UNKICKED.store(false, Ordering::Release);
            }
            if let Some(e) = device.failure() {
                let msg = format!("ustack: the device failed: {e:?}; ustack sockets stop working\n");
                raw_write(2, msg.as_bytes());
                return;
            }
            let (device_due, wait_fd) = (device.next_deadline(), device.wait_fd());
            inner.dispatch_events();
            if got >= 8 * DEFAULT_RX_BURST {
                continue; // more frames are likely waiting
            }
            let next_announce = inner.announce(now);
            let mut wake = earliest(earliest(inner.stack.poll_timeout(), device_due), next_announce);
            if inner.last_call.is_some_and(|t| now.saturating_since(t) < KICK_WINDOW) {
                // Calls are coming: wake soon enough that their frames need
                // no kick of their own (see `Inner::after_call`).
                wake = earliest(wake, Some(now + KICK_DELAY));
            }
            inner.planned = wake;
            let ms = wake.map_or(MAX_SLEEP_MS, |t| {
                (t.saturating_since(now).as_micros().div_ceil(1000) as i64).min(MAX_SLEEP_MS)
            });
            let arp_fd = inner.arp.as_ref().map_or(-1, crate::shard::ArpSide::wait_fd);
            // A thread sleeping on the device takes its frames; this thread
            // wakes within KICK_DELAY anyway and takes what is left then.
            // So does one at work between two looks (no thread sleeps on an
            // epoll set): its next look takes them (see BUSY_WINDOW). Not
            // while a set has a bell: a thread may sleep in the kernel on a
            // set that holds it, unseen by `Inner::sleeping`.
            let at_work = inner.last_call.is_some_and(|t| now.saturating_since(t) < BUSY_WINDOW)
                && inner.last_sleep.is_none_or(|t| now.saturating_since(t) >= BUSY_WINDOW)
                && inner.epolls.values().all(|s| s.sleepers == 0)
                && BELLS.load(Ordering::Acquire) == 0;
            let blind = ms <= 1 && (at_work || WATCHERS.load(Ordering::Acquire) > 0);
            inner.blind = blind;
            (if blind { -1 } else { wait_fd.unwrap_or(-1) }, arp_fd, if wait_fd.is_some() { ms } else { ms.min(1) })
        };
        let mut fds = [
            libc::pollfd { fd: wait_fd, events: libc::POLLIN, revents: 0 },
            libc::pollfd { fd: waker, events: libc::POLLIN, revents: 0 },
            libc::pollfd { fd: arp_fd, events: libc::POLLIN, revents: 0 },
        ];
        raw_poll(&mut fds, sleep_ms);
        if fds[1].revents != 0 {
            drain(waker);
        }
    }
}
