//! A virtio-user frontend, the driver side of virtio-net (what DPDK's
//! `virtio_user` is): `virtio-user:PATH[,ring=N][,tso=on|off][,busy_poll=USEC]` puts a ustack stack on a
//! vhost-user backend — `ustack switch`, DPDK's `net_vhost`, any vSwitch —
//! with no kernel on the data path.
//!
//! ustack makes a memfd, lays out one queue pair of split rings and their
//! buffers in it, and hands it to the backend at `PATH` with rust-vmm's
//! `vhost` frontend. Features: VERSION_1 and EVENT_IDX, and with `tso=on`
//! (the default) CSUM, GUEST_CSUM, HOST_TSO4, GUEST_TSO4 and MRG_RXBUF where
//! offered (`negotiate`): 64 KiB super-segments both ways. Then:
//!
//! * **Receive** (queue 0): every descriptor is posted at start with a 2 KiB
//!   write-only buffer; `recv` takes the backend's used entries in order,
//!   checks them (an id past the ring, a length past the buffer or under
//!   the header is counted in `rx_bad_used` and reposted), copies the frame
//!   out (with MRG_RXBUF from as many buffers as its header's `num_buffers`
//!   says, once all of them are back) and reposts the buffers at once. New buffers are published, and the
//!   backend kicked, once per poll.
//! * **Transmit** (queue 1): `send` writes the header and the frame straight
//!   into a free buffer of the shared memory (68 KiB each with HOST_TSO4,
//!   so a super-segment is one descriptor); `flush` publishes the burst
//!   with one available-index store and one kick. Buffers come back through
//!   the used ring; when none is free, `send` refuses (`tx_ring_full`).
//! * **Waiting**: [`Waitable::wait_fd`] is an epoll descriptor holding both
//!   rings' call eventfds (edge-triggered, never read) and the socket; a
//!   backend that closes the socket is a [`failure`](Waitable::failure) that
//!   ends the command with one line. Sent buffers raise no notification
//!   (they are taken back when the ring runs out; only then is one asked
//!   for). Once the loop calls [`Waitable::prepare_sleep`] before its
//!   sleeps, received frames raise none while it is awake either, and the
//!   epoll set is looked at there (and every `SERVICE_EVERY` turns), not
//!   in each turn; `busy_poll=USEC` asks the loop to poll that long first.

use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::sync::atomic::{fence, Ordering};

use ustack_core::phy::{Device, DeviceCaps, RxMeta, RxQueue, TxFull, TxMeta, TxQueue};
use ustack_core::time::Instant;
use vhost::vhost_user::Frontend;
use vhost::{VhostBackend, VhostUserMemoryRegionInfo, VringConfigData};
use vmm_sys_util::eventfd::{EventFd, EFD_NONBLOCK};

use crate::spec::Options;
use crate::{DeviceError, Waitable};

/// How a `virtio-user` spec is written.
pub const SPEC_FORM: &str = "virtio-user:PATH[,ring=N][,tso=on|off][,busy_poll=USEC]";

const VERSION_1: u64 = 1 << 32;
const EVENT_IDX: u64 = 1 << 29;
const CSUM: u64 = 1 << 0;
const GUEST_CSUM: u64 = 1 << 1;
const GUEST_TSO4: u64 = 1 << 7;
const HOST_TSO4: u64 = 1 << 11;
const MRG_RXBUF: u64 = 1 << 15;
/// The virtio-net header with VERSION_1 (`num_buffers` included).
const HDR: usize = 12;
/// Each receive buffer (and each transmit buffer without HOST_TSO4): a
/// 1514-byte frame (and a VLAN tag) with its header fits.
const BUF: usize = 2048;
/// Each transmit buffer with HOST_TSO4: a 64 KiB super-segment, its
/// Ethernet header and the virtio-net header fit.
const TSO_BUF: usize = 68 * 1024;
/// The largest frame received: a 64 KiB IPv4 packet, its Ethernet header
/// and the virtio-net header.
const MAX_RX: usize = 65_535 + 14 + HDR;
const F_WRITE: u16 = 2;
const USED_F_NO_NOTIFY: u16 = 1;
const AVAIL_F_NO_INTERRUPT: u16 = 1;
/// Turns between looks at the socket and eventfds when the loop re-arms
/// the device before it sleeps ([`Waitable::prepare_sleep`]).
const SERVICE_EVERY: u32 = 64;

/// Options of a virtio-user port.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct VirtioUserConfig {
    /// Entries per ring (a power of two, 64 to 4096; default 256).
    pub ring: u16,
    /// Ask the backend for checksum and TCP segmentation offload both ways
    /// (`tso=on|off`, default on): 64 KiB super-segments instead of
    /// Ethernet-sized frames where the backend takes them.
    pub tso: bool,
    /// Microseconds the loop keeps polling the rings after the last frame
    /// before it sleeps (`busy_poll=USEC`, 0 to 100000; default 0: sleep at once).
    pub busy_poll_us: u32,
}

impl Default for VirtioUserConfig {
    fn default() -> Self {
        VirtioUserConfig { ring: 256, tso: true, busy_poll_us: 0 }
    }
}

impl VirtioUserConfig {
    /// The options of a `virtio-user:` spec.
    pub fn from_options(opts: &mut Options<'_>) -> Result<VirtioUserConfig, DeviceError> {
        let ring = opts.number("ring", 256, 64..=4096)?;
        if !ring.is_power_of_two() {
            return Err(opts.error(format!("ring={ring}: use a power of two, like 256")));
        }
        let tso = opts.switch("tso", true)?;
        let busy_poll_us = opts.number("busy_poll", 0, 0..=100_000)? as u32;
        Ok(VirtioUserConfig { ring: ring as u16, tso, busy_poll_us })
    }
}

/// The shared memory: a memfd mapped here and in the backend.
struct Shm {
    fd: OwnedFd,
    ptr: *mut u8,
    len: usize,
}

impl Shm {
    fn new(len: usize) -> Result<Shm, DeviceError> {
        let err = |action| move |source| DeviceError::Io { action, source };
        // SAFETY: memfd_create with a NUL-terminated name; the fd is ours.
        let fd = unsafe { libc::memfd_create(c"ustack-virtio-user".as_ptr(), libc::MFD_CLOEXEC) };
        if fd < 0 {
            return Err(err("memfd_create (the virtio-user shared memory)")(io::Error::last_os_error()));
        }
        // SAFETY: `fd` was just created and is owned by nothing else.
        let fd = unsafe { OwnedFd::from_raw_fd(fd) };
        // SAFETY: ftruncate and mmap on our own descriptor.
        let ptr = unsafe {
            if libc::ftruncate(fd.as_raw_fd(), len as libc::off_t) != 0 {
                return Err(err("sizing the virtio-user shared memory")(io::Error::last_os_error()));
            }
            let p = libc::mmap(
                std::ptr::null_mut(),
                len,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_SHARED | libc::MAP_POPULATE,
                fd.as_raw_fd(),
                0,
            );
            if p == libc::MAP_FAILED {
                return Err(err("mapping the virtio-user shared memory")(io::Error::last_os_error()));
            }
            p.cast::<u8>()
        };
        Ok(Shm { fd, ptr, len })
    }

    fn w16(&self, off: usize, v: u16) {
        assert!(off + 2 <= self.len);
        // SAFETY: inside the mapping (checked), naturally aligned by the layout.
        unsafe { std::ptr::write_volatile(self.ptr.add(off).cast::<u16>(), v.to_le()) }
    }
    fn w32(&self, off: usize, v: u32) {
        assert!(off + 4 <= self.len);
        // SAFETY: as in w16.
        unsafe { std::ptr::write_volatile(self.ptr.add(off).cast::<u32>(), v.to_le()) }
    }
    fn w64(&self, off: usize, v: u64) {
        assert!(off + 8 <= self.len);
        // SAFETY: as in w16.
        unsafe { std::ptr::write_volatile(self.ptr.add(off).cast::<u64>(), v.to_le()) }
    }
    fn r16(&self, off: usize) -> u16 {
        assert!(off + 2 <= self.len);
        // SAFETY: as in w16.
        u16::from_le(unsafe { std::ptr::read_volatile(self.ptr.add(off).cast::<u16>()) })
    }
    fn r32(&self, off: usize) -> u32 {
        assert!(off + 4 <= self.len);
        // SAFETY: as in w16.
        u32::from_le(unsafe { std::ptr::read_volatile(self.ptr.add(off).cast::<u32>()) })
    }
    /// Copy `out.len()` bytes from `off`.
    fn read(&self, off: usize, out: &mut [u8]) {
        assert!(off + out.len() <= self.len);
        // SAFETY: inside the mapping (checked); `out` is ours and does not overlap it.
        unsafe { std::ptr::copy_nonoverlapping(self.ptr.add(off), out.as_mut_ptr(), out.len()) }
    }
    /// The bytes `[off, off + len)` to write into (a transmit buffer not
    /// published to the backend).
    #[allow(clippy::mut_from_ref)]
    fn slice_mut(&self, off: usize, len: usize) -> &mut [u8] {
        assert!(off + len <= self.len);
        // SAFETY: inside the mapping (checked); the buffer is not published,
        // so the backend does not read it, and one `send` writes it at a time.
        unsafe { std::slice::from_raw_parts_mut(self.ptr.add(off), len) }
    }
}

impl Drop for Shm {
    fn drop(&mut self) {
        // SAFETY: unmaps our own mapping.
        unsafe { libc::munmap(self.ptr.cast(), self.len) };
    }
}

/// Offsets of one split ring in the shared memory.
#[derive(Clone, Copy)]
struct Layout {
    desc: usize,
    avail: usize,
    used: usize,
    bufs: usize,
    /// Bytes of each descriptor's buffer.
    buf: usize,
}

/// The driver's side of one split ring.
struct DriverRing {
    at: Layout,
    size: u16,
    /// Our next available index (published on flush).
    avail_idx: u16,
    published: u16,
    last_used: u16,
    /// EVENT_IDX negotiated: `used_event`/`avail_event` rather than flags.
    event_idx: bool,
}

/// Whether moving an index from `old` to `new` passes `event` (virtio's
/// `vring_need_event`).
fn need_event(event: u16, new: u16, old: u16) -> bool {
    new.wrapping_sub(event).wrapping_sub(1) < new.wrapping_sub(old)
}

impl DriverRing {
    fn set_desc(&self, shm: &Shm, i: u16, len: u32, flags: u16) {
        let d = self.at.desc + 16 * usize::from(i);
        shm.w64(d, self.buf_at(i) as u64);
        shm.w32(d + 8, len);
        shm.w16(d + 12, flags);
        shm.w16(d + 14, 0);
    }

    /// Where descriptor `i`'s buffer is.
    fn buf_at(&self, i: u16) -> usize {
        self.at.bufs + self.at.buf * usize::from(i)
    }

    fn make_avail(&mut self, shm: &Shm, id: u16) {
        shm.w16(self.at.avail + 4 + 2 * usize::from(self.avail_idx % self.size), id);
        self.avail_idx = self.avail_idx.wrapping_add(1);
    }

    /// Publish new available entries; whether the backend wants a kick.
    fn publish(&mut self, shm: &Shm) -> bool {
        if self.published == self.avail_idx {
            return false;
        }
        let old = self.published;
        fence(Ordering::Release);
        shm.w16(self.at.avail + 2, self.avail_idx);
        self.published = self.avail_idx;
        fence(Ordering::SeqCst);
        if self.event_idx {
            // The backend's `avail_event`, after the used ring.
            let event = shm.r16(self.at.used + 4 + 8 * usize::from(self.size));
            need_event(event, self.avail_idx, old)
        } else {
            shm.r16(self.at.used) & USED_F_NO_NOTIFY == 0
        }
    }

    /// Ask the backend to notify us of its next used entry; `true` if one
    /// is there already (it may not notify for that one).
    fn enable_interrupts(&mut self, shm: &Shm) -> bool {
        shm.w16(self.at.avail, 0);
        if self.event_idx {
            // `used_event`, after the available ring.
            shm.w16(self.at.avail + 4 + 2 * usize::from(self.size), self.last_used);
        }
        fence(Ordering::SeqCst);
        shm.r16(self.at.used + 2) != self.last_used
    }

    /// Ask the backend not to notify us. With EVENT_IDX the `used_event`
    /// left behind does it (at most one notification per 65536 entries).
    fn disable_interrupts(&mut self, shm: &Shm) {
        shm.w16(self.at.avail, AVAIL_F_NO_INTERRUPT);
    }

    /// The next used entry (id, len), if the backend returned one.
    fn next_used(&mut self, shm: &Shm) -> Option<(u32, u32)> {
        if self.used_pending(shm) == 0 {
            return None;
        }
        let e = self.peek_used(shm, 0);
        self.last_used = self.last_used.wrapping_add(1);
        Some(e)
    }

    /// Used entries the backend returned that we have not taken.
    fn used_pending(&self, shm: &Shm) -> u16 {
        let idx = shm.r16(self.at.used + 2);
        fence(Ordering::Acquire);
        idx.wrapping_sub(self.last_used)
    }

    /// The used entry (id, len) `k` places after the next one (not taken).
    fn peek_used(&self, shm: &Shm, k: u16) -> (u32, u32) {
        let e = self.at.used + 4 + 8 * usize::from(self.last_used.wrapping_add(k) % self.size);
        (shm.r32(e), shm.r32(e + 4))
    }
}

#[derive(Clone, Copy, Debug, Default)]
struct RxStats {
    frames: u64,
    bytes: u64,
    bad_used: u64,
    bad_header: u64,
    kicks: u64,
}

#[derive(Clone, Copy, Debug, Default)]
struct TxStats {
    frames: u64,
    bytes: u64,
    ring_full: u64,
    too_long: u64,
    bad_used: u64,
    kicks: u64,
}

struct RxSide {
    ring: DriverRing,
    /// MRG_RXBUF: a frame may span several buffers (`num_buffers`).
    mrg: bool,
    kick: EventFd,
    /// Our own receive notification eventfd, to wake the loop ourselves.
    call_self: EventFd,
    buf: Box<[u8]>,
    stats: RxStats,
}

struct TxSide {
    ring: DriverRing,
    kick: EventFd,
    /// Descriptors (= buffers) not lent to the backend.
    free: Vec<u16>,
    lent: Vec<bool>,
    /// Notifications of sent buffers asked for (the ring ran out).
    irq: bool,
    stats: TxStats,
}

/// A virtio-user port. Implements [`Device`]; sleep on its [`Waitable::wait_fd`].
pub struct VirtioUserDevice {
    path: PathBuf,
    /// The virtio features agreed with the backend.
    features: u64,
    /// The loop re-arms the device before each sleep: no epoll look per turn.
    lazy: bool,
    /// Turns since the last look at the epoll set.
    turns: u32,
    /// The backend notifies us of received frames (the loop is asleep or not lazy).
    rx_irq: bool,
    busy_poll: Option<std::time::Duration>,
    shm: Shm,
    rx: RxSide,
    tx: TxSide,
    _calls: [EventFd; 2],
    epoll: OwnedFd,
    sock: UnixStream,
    failure: Option<DeviceError>,
    _frontend: Frontend,
}

fn vhost_err(action: &'static str) -> impl Fn(vhost::Error) -> DeviceError {
    move |e| DeviceError::Io { action, source: io::Error::other(e.to_string()) }
}

impl VirtioUserDevice {
    /// Connect to the vhost-user backend listening at `path`, share the
    /// memory and start both rings.
    pub fn open(path: &Path, config: VirtioUserConfig) -> Result<VirtioUserDevice, DeviceError> {
        let sock = UnixStream::connect(path).map_err(|source| DeviceError::Io {
            action: "connecting to the vhost-user backend (start `ustack switch --port vhost-user:PATH` first)",
            source,
        })?;
        let monitor = sock.try_clone().map_err(|source| DeviceError::Io { action: "dup", source })?;
        let fe = Frontend::from_stream(sock, 2);
        let setup = vhost_err("setting up the vhost-user session");
        fe.set_owner().map_err(&setup)?;
        let offered = fe.get_features().map_err(&setup)?;
        if offered & VERSION_1 == 0 {
            return Err(DeviceError::Io {
                action: "negotiating virtio features",
                source: io::Error::other("the backend does not offer VIRTIO_F_VERSION_1"),
            });
        }
        let features = negotiate(offered, config.tso);
        fe.set_features(features).map_err(&setup)?;
        let event_idx = features & EVENT_IDX != 0;

        let n = usize::from(config.ring);
        let page = |x: usize| x.div_ceil(4096) * 4096;
        let ring_bytes = page(16 * n) + page(6 + 2 * n) + page(6 + 8 * n);
        let tx_buf = if features & HOST_TSO4 != 0 { TSO_BUF } else { BUF };
        let layout = |base: usize, bufs: usize, buf: usize| Layout {
            desc: base,
            avail: base + page(16 * n),
            used: base + page(16 * n) + page(6 + 2 * n),
            bufs,
            buf,
        };
        let rx_at = layout(0, 2 * ring_bytes, BUF);
        let tx_at = layout(ring_bytes, 2 * ring_bytes + BUF * n, tx_buf);
        let len = page(2 * ring_bytes + (BUF + tx_buf) * n);
        let shm = Shm::new(len)?;
        // The vhost crate's `xen` feature adds fields: the update fills them.
        #[allow(clippy::needless_update)]
        let region = VhostUserMemoryRegionInfo {
            guest_phys_addr: 0,
            memory_size: len as u64,
            userspace_addr: shm.ptr as u64,
            mmap_offset: 0,
            mmap_handle: shm.fd.as_raw_fd(),
            ..Default::default()
        };
        fe.set_mem_table(&[region]).map_err(&setup)?;
        let eventfd = || EventFd::new(EFD_NONBLOCK).map_err(|source| DeviceError::Io { action: "eventfd", source });
        let calls = [eventfd()?, eventfd()?];
        let kicks = [eventfd()?, eventfd()?];
        for (q, at) in [rx_at, tx_at].into_iter().enumerate() {
            fe.set_vring_num(q, config.ring).map_err(&setup)?;
            let uva = |off: usize| shm.ptr as u64 + off as u64;
            let addrs = VringConfigData {
                queue_max_size: config.ring,
                queue_size: config.ring,
                flags: 0,
                desc_table_addr: uva(at.desc),
                used_ring_addr: uva(at.used),
                avail_ring_addr: uva(at.avail),
                log_addr: None,
            };
            fe.set_vring_addr(q, &addrs).map_err(&setup)?;
            fe.set_vring_base(q, 0).map_err(&setup)?;
            fe.set_vring_call(q, &calls[q]).map_err(&setup)?;
        }
        let ring = |at| DriverRing { at, size: config.ring, avail_idx: 0, published: 0, last_used: 0, event_idx };
        let dup = |e: &EventFd| e.try_clone().map_err(|source| DeviceError::Io { action: "eventfd", source });
        let mrg = features & MRG_RXBUF != 0;
        let rx_buf = if features & GUEST_TSO4 != 0 { MAX_RX } else { BUF };
        let mut rx = RxSide {
            ring: ring(rx_at),
            mrg,
            kick: dup(&kicks[0])?,
            call_self: dup(&calls[0])?,
            buf: vec![0u8; rx_buf].into_boxed_slice(),
            stats: RxStats::default(),
        };
        for i in 0..config.ring {
            rx.ring.set_desc(&shm, i, BUF as u32, F_WRITE);
            rx.ring.make_avail(&shm, i);
        }
        rx.ring.publish(&shm);
        let [k0, k1] = kicks;
        rx.kick = k0;
        fe.set_vring_kick(0, &rx.kick).map_err(&setup)?;
        fe.set_vring_kick(1, &k1).map_err(&setup)?;
        let mut tx = TxSide { ring: ring(tx_at), kick: k1, free: (0..config.ring).rev().collect(), lent: vec![false; n], irq: false, stats: TxStats::default() };
        // Sent buffers are taken back when the ring runs out, not on a
        // notification per frame.
        tx.ring.disable_interrupts(&shm);
        rx.ring.enable_interrupts(&shm);

        // SAFETY: a new epoll descriptor we own.
        let epoll = unsafe { libc::epoll_create1(libc::EPOLL_CLOEXEC) };
        if epoll < 0 {
            return Err(DeviceError::Io { action: "epoll_create1", source: io::Error::last_os_error() });
        }
        // SAFETY: `epoll` was just created.
        let epoll = unsafe { OwnedFd::from_raw_fd(epoll) };
        // The call eventfds edge-triggered: a notification is seen once by
        // epoll_wait, and the eventfd itself is never read.
        for (fd, events) in [
            (calls[0].as_raw_fd(), libc::EPOLLIN | libc::EPOLLET),
            (calls[1].as_raw_fd(), libc::EPOLLIN | libc::EPOLLET),
            (monitor.as_raw_fd(), libc::EPOLLIN | libc::EPOLLRDHUP),
        ] {
            let mut ev = libc::epoll_event { events: events as u32, u64: fd as u64 };
            // SAFETY: epoll_ctl reads one epoll_event.
            if unsafe { libc::epoll_ctl(epoll.as_raw_fd(), libc::EPOLL_CTL_ADD, fd, &mut ev) } < 0 {
                return Err(DeviceError::Io { action: "epoll_ctl", source: io::Error::last_os_error() });
            }
        }
        Ok(VirtioUserDevice {
            path: path.to_owned(),
            features,
            lazy: false,
            turns: 0,
            rx_irq: true,
            busy_poll: (config.busy_poll_us > 0).then(|| std::time::Duration::from_micros(config.busy_poll_us.into())),
            shm,
            rx,
            tx,
            _calls: calls,
            epoll,
            sock: monitor,
            failure: None,
            _frontend: fe,
        })
    }

    /// The backend's socket path.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Clear what the epoll set reports; notice a backend that went away.
    fn service(&mut self) {
        let mut evs = [libc::epoll_event { events: 0, u64: 0 }; 4];
        // SAFETY: epoll_wait writes at most 4 events into `evs`.
        let n = unsafe { libc::epoll_wait(self.epoll.as_raw_fd(), evs.as_mut_ptr(), 4, 0) };
        for ev in evs.iter().take(n.max(0) as usize) {
            let fd = ev.u64 as RawFd;
            if fd == self.sock.as_raw_fd() {
                if self.failure.is_none() {
                    self.failure = Some(DeviceError::Vanished {
                        name: self.path.display().to_string(),
                        source: io::Error::new(io::ErrorKind::ConnectionReset, "the vhost-user backend closed the socket"),
                    });
                }
                self.epoll_del(fd);
            }
        }
    }

    fn epoll_del(&self, fd: RawFd) {
        // SAFETY: EPOLL_CTL_DEL ignores the event pointer.
        unsafe { libc::epoll_ctl(self.epoll.as_raw_fd(), libc::EPOLL_CTL_DEL, fd, std::ptr::null_mut()) };
    }
}

impl Device for VirtioUserDevice {
    type Rx<'a> = VirtioUserRx<'a>;
    type Tx<'a> = VirtioUserTx<'a>;

    fn queues(&mut self) -> (VirtioUserRx<'_>, VirtioUserTx<'_>) {
        if self.lazy {
            // The loop is awake and polls us: no notifications meanwhile.
            if self.rx_irq {
                self.rx.ring.disable_interrupts(&self.shm);
                self.rx_irq = false;
            }
            self.turns += 1;
            if self.turns.is_multiple_of(SERVICE_EVERY) {
                self.service();
            }
        } else {
            self.service();
        }
        let lazy = self.lazy;
        let Self { shm, rx, tx, .. } = self;
        (VirtioUserRx { shm, side: rx, lazy }, VirtioUserTx { shm, side: tx })
    }

    fn caps(&self) -> DeviceCaps {
        let f = |bit: u64| self.features & bit != 0;
        DeviceCaps {
            rx_checksum: f(GUEST_CSUM),
            tx_checksum: f(CSUM),
            tso4_max: if f(HOST_TSO4) { usize::from(u16::MAX) } else { 0 },
            rx_coalesced: f(GUEST_TSO4),
            ..Default::default()
        }
    }
}

/// The features to acknowledge of those `offered`: VERSION_1 (required),
/// EVENT_IDX, and with `tso` the checksum and TCP segmentation offloads
/// both ways, each only with what it depends on (virtio 1.1, 5.1.3.1:
/// HOST_TSO4 needs CSUM; GUEST_TSO4 needs GUEST_CSUM, and here MRG_RXBUF
/// for its 64 KiB frames in 2 KiB buffers).
fn negotiate(offered: u64, tso: bool) -> u64 {
    let mut want = VERSION_1 | EVENT_IDX;
    if tso {
        want |= CSUM | GUEST_CSUM | HOST_TSO4 | GUEST_TSO4 | MRG_RXBUF;
    }
    let mut f = offered & want;
    if f & CSUM == 0 {
        f &= !HOST_TSO4;
    }
    if f & (GUEST_CSUM | MRG_RXBUF) != GUEST_CSUM | MRG_RXBUF {
        f &= !GUEST_TSO4;
    }
    f
}

/// Receive queue of a [`VirtioUserDevice`].
pub struct VirtioUserRx<'a> {
    shm: &'a Shm,
    side: &'a mut RxSide,
    lazy: bool,
}

/// Transmit queue of a [`VirtioUserDevice`].
pub struct VirtioUserTx<'a> {
    shm: &'a Shm,
    side: &'a mut TxSide,
}

impl RxQueue for VirtioUserRx<'_> {
    fn recv(&mut self, _now: Instant) -> Option<(&[u8], RxMeta)> {
        let (shm, side) = (self.shm, &mut *self.side);
        let (size, buf) = (side.ring.size, side.ring.at.buf);
        loop {
            let pending = side.ring.used_pending(shm);
            if pending == 0 {
                return None;
            }
            // The first buffer holds the header, and with MRG_RXBUF the
            // number of buffers the frame spans.
            let (id, len) = side.ring.peek_used(shm, 0);
            let first_ok = id < u32::from(size) && (HDR..=buf).contains(&(len as usize));
            let spans = if first_ok && side.mrg { shm.r16(side.ring.buf_at(id as u16) + 10) } else { 1 };
            if !first_ok || spans == 0 || usize::from(spans) > side.buf.len().div_ceil(buf) {
                side.ring.next_used(shm);
                if id < u32::from(size) {
                    side.ring.make_avail(shm, id as u16);
                }
                side.stats.bad_used += 1;
                continue;
            }
            if pending < spans {
                return None; // the rest of the frame is on its way
            }
            // Copy the frame out and repost each buffer at once.
            let (mut total, mut ok) = (0usize, true);
            for k in 0..spans {
                let (id, len) = side.ring.peek_used(shm, k);
                let len = len as usize;
                if id >= u32::from(size) {
                    ok = false; // not one of ours: nothing to repost
                    continue;
                }
                if ok && len <= buf && total + len <= side.buf.len() {
                    shm.read(side.ring.buf_at(id as u16), &mut side.buf[total..total + len]);
                    total += len;
                } else {
                    ok = false;
                }
                side.ring.make_avail(shm, id as u16);
            }
            for _ in 0..spans {
                side.ring.next_used(shm);
            }
            if !ok || total < HDR + 14 {
                side.stats.bad_used += 1;
                continue;
            }
            let h: &[u8; 10] = side.buf[..10].try_into().expect("10 bytes");
            let Some(meta) = crate::vnet::rx_meta(h) else {
                side.stats.bad_header += 1;
                continue;
            };
            side.stats.frames += 1;
            side.stats.bytes += (total - HDR) as u64;
            return Some((&side.buf[HDR..total], meta));
        }
    }
}

impl Drop for VirtioUserRx<'_> {
    fn drop(&mut self) {
        // Give the buffers taken this poll back in one store, one kick (if
        // the backend asked for kicks on its receive side at all).
        if self.side.ring.publish(self.shm) {
            let _ = self.side.kick.write(1);
            self.side.stats.kicks += 1;
        }
        if !self.lazy && self.side.ring.event_idx && self.side.ring.enable_interrupts(self.shm) {
            // A frame came in before `used_event` moved: the backend may not
            // have notified us, and this loop sleeps without asking first.
            let _ = self.side.call_self.write(1);
        }
    }
}

impl TxSide {
    /// Take back the buffers the backend has sent.
    fn reclaim(&mut self, shm: &Shm) {
        let size = self.ring.size;
        while let Some((id, _)) = self.ring.next_used(shm) {
            match self.lent.get_mut(id as usize) {
                Some(l) if *l && id < u32::from(size) => {
                    *l = false;
                    self.free.push(id as u16);
                }
                _ => self.stats.bad_used += 1,
            }
        }
        if self.irq && !self.free.is_empty() {
            self.ring.disable_interrupts(shm);
            self.irq = false;
        }
    }
}

impl TxQueue for VirtioUserTx<'_> {
    fn send<F: FnOnce(&mut [u8])>(&mut self, len: usize, meta: TxMeta, fill: F) -> Result<(), TxFull> {
        if len + HDR > self.side.ring.at.buf {
            self.side.stats.too_long += 1;
            return Ok(());
        }
        if self.side.free.is_empty() {
            self.side.reclaim(self.shm);
            if self.side.free.is_empty() && !self.side.irq {
                // Ask to be told when the backend has sent some (the loop
                // may sleep now), then look once more.
                self.side.irq = true;
                if self.side.ring.enable_interrupts(self.shm) {
                    self.side.reclaim(self.shm);
                }
            }
        }
        let Some(id) = self.side.free.pop() else {
            self.side.stats.ring_full += 1;
            return Err(TxFull);
        };
        self.side.lent[usize::from(id)] = true;
        let buf = self.shm.slice_mut(self.side.ring.buf_at(id), HDR + len);
        buf[..10].copy_from_slice(&crate::vnet::tx_header(&meta, 0));
        buf[10..12].copy_from_slice(&[0, 0]);
        fill(&mut buf[HDR..]);
        self.side.ring.set_desc(self.shm, id, (HDR + len) as u32, 0);
        self.side.ring.make_avail(self.shm, id);
        self.side.stats.frames += 1;
        self.side.stats.bytes += len as u64;
        Ok(())
    }

    fn flush(&mut self) {
        if self.side.ring.publish(self.shm) {
            let _ = self.side.kick.write(1);
            self.side.stats.kicks += 1;
        }
    }
}

impl Waitable for VirtioUserDevice {
    fn wait_fd(&self) -> Option<RawFd> {
        Some(self.epoll.as_raw_fd())
    }

    fn device_stats(&self) -> Vec<(&'static str, u64)> {
        let (r, t) = (self.rx.stats, self.tx.stats);
        vec![
            ("rx_frames", r.frames),
            ("rx_bytes", r.bytes),
            ("rx_bad_used", r.bad_used),
            ("rx_bad_header", r.bad_header),
            ("tx_frames", t.frames),
            ("tx_bytes", t.bytes),
            ("tx_ring_full", t.ring_full),
            ("tx_too_long", t.too_long),
            ("tx_bad_used", t.bad_used),
            ("rx_kicks", r.kicks),
            ("tx_kicks", t.kicks),
            ("event_idx", u64::from(self.rx.ring.event_idx)),
            ("host_tso4", u64::from(self.features & HOST_TSO4 != 0)),
            ("guest_tso4", u64::from(self.features & GUEST_TSO4 != 0)),
            ("tx_free", self.tx.free.len() as u64),
        ]
    }

    fn failure(&self) -> Option<&DeviceError> {
        self.failure.as_ref()
    }

    fn prepare_sleep(&mut self) -> bool {
        // From now on the loop tells us before it sleeps: the socket and
        // eventfds are looked at here, not in every turn.
        self.lazy = true;
        self.service();
        self.rx_irq = true;
        !self.rx.ring.enable_interrupts(&self.shm)
    }

    fn busy_poll(&self) -> Option<std::time::Duration> {
        self.busy_poll
    }
}
