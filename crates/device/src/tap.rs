//! A Linux TAP device driven through `/dev/net/tun`, with our own ioctls.
//!
//! [`TapDevice::open`] attaches to (creating if needed) a TAP interface in the
//! calling thread's network namespace, non-blocking, without packet-info
//! header (`IFF_TAP | IFF_NO_PI`), and brings the link up. The kernel side is
//! an ordinary Ethernet interface: give it an address with
//! [`TapDevice::set_host_addr`] (or `ip addr add`) and Linux tools talk to the
//! stack through it.
//!
//! * **Receive**: one `read(2)` per frame (a TAP hands out exactly one frame per
//!   read, so reading ahead into a ring would not save system calls) into one
//!   buffer large enough for any frame; `None` on `EAGAIN`, `EINTR` retried,
//!   other errors counted in [`TapStats::rx_errors`].
//! * **Transmit**: `send` writes the frame into a ring of [`TX_QUEUE_FRAMES`]
//!   preallocated slots; `flush` (or a `send` that finds the ring full) writes
//!   the queued frames, one `write(2)` each. `EAGAIN`/`ENOBUFS` leave the frames
//!   queued; while the ring stays full, `send` refuses with [`TxFull`] without
//!   calling `fill`, as the trait requires. Frames the kernel rejects are
//!   dropped and counted. Nothing is allocated per packet.
//!
//! * **Offloads** (on unless [`TapConfig::offload`] is false): the TAP is
//!   opened with `IFF_VNET_HDR`, so every read and write starts with a
//!   10-byte `virtio_net_hdr`, and `TUNSETOFFLOAD` tells the kernel we take
//!   partial checksums and TCP/IPv4 super-segments (`TUN_F_CSUM |
//!   TUN_F_TSO4`). The kernel then hands the stack GRO'd segments of up to
//!   64 KiB with their checksums left partial, and takes 64 KiB TSO segments
//!   and partial checksums from it, segmenting and summing only if they
//!   leave through a device that cannot. `recv` parses the header into
//!   [`RxMeta`]; `flush` writes one from the [`TxMeta`] kept next to each
//!   queued frame. [`DeviceCaps`] says so: checksums both ways, `tso4_max`
//!   65,535, coalesced receive.

use std::ffi::c_short;
use std::fmt;
use std::io;
use std::net::Ipv4Addr;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, FromRawFd, OwnedFd, RawFd};

pub use crate::error::DeviceError;
use ustack_core::phy::{Device, DeviceCaps, GsoType, RxMeta, RxQueue, TxFull, TxMeta, TxQueue};
use ustack_core::time::Instant;

/// Frames `send` can queue before a `flush` must write them.
pub const TX_QUEUE_FRAMES: usize = 32;

/// Largest frame a TAP can carry: a 65535-byte MTU plus an Ethernet header and
/// a VLAN tag.
const MAX_FRAME: usize = 65535 + 14 + 4;

/// `struct virtio_net_hdr` (without `num_buffers`): flags, gso_type,
/// hdr_len, gso_size, csum_start, csum_offset; little-endian here (the
/// kernel's native order on the machines we run on; `TUNSETVNETLE` is not
/// needed there).
const VNET_HDR_LEN: usize = 10;
const VIRTIO_NET_HDR_F_NEEDS_CSUM: u8 = 1;
const VIRTIO_NET_HDR_F_DATA_VALID: u8 = 2;
const VIRTIO_NET_HDR_GSO_NONE: u8 = 0;
const VIRTIO_NET_HDR_GSO_TCPV4: u8 = 1;
const VIRTIO_NET_HDR_GSO_TCPV6: u8 = 4;
const VIRTIO_NET_HDR_GSO_ECN: u8 = 0x80;
/// `<linux/if_tun.h>`: `_IOW('T', 208, unsigned int)`, `_IOW('T', 216, int)`.
const TUNSETOFFLOAD: libc::c_ulong = 0x4004_54d0;
const TUNSETVNETHDRSZ: libc::c_ulong = 0x4004_54d8;
const TUN_F_CSUM: libc::c_uint = 0x01;
const TUN_F_TSO4: libc::c_uint = 0x02;

/// How to open a TAP.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TapConfig {
    /// Checksum offload and TCP/IPv4 segmentation both ways through the
    /// virtio-net header (see the module docs). Default true; off, the TAP
    /// carries only frames of its MTU with complete checksums.
    pub offload: bool,
    /// Open one queue of a multi-queue TAP (`IFF_MULTI_QUEUE`): each open
    /// of the same name adds a queue, numbered in the order of opening, and
    /// the kernel spreads the frames it sends over them by flow (see
    /// `crate::steer_bpf` for steering by ustack's hash). Default false.
    pub multi_queue: bool,
}

impl Default for TapConfig {
    fn default() -> Self {
        TapConfig { offload: true, multi_queue: false }
    }
}

/// Counters of a [`TapDevice`].
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct TapStats {
    /// Frames read.
    pub rx_frames: u64,
    /// Bytes read.
    pub rx_bytes: u64,
    /// `read(2)` failures other than `EAGAIN`/`EINTR`.
    pub rx_errors: u64,
    /// Frames written.
    pub tx_frames: u64,
    /// Bytes written.
    pub tx_bytes: u64,
    /// `send` calls refused with [`TxFull`] (ring full, kernel not accepting).
    pub tx_full: u64,
    /// `write(2)` calls that found the kernel not accepting (`EAGAIN`,
    /// `ENOBUFS`); the frame stayed queued.
    pub tx_blocked: u64,
    /// Frames dropped: longer than a TAP can carry, or rejected by `write(2)`.
    pub tx_dropped: u64,
    /// The errno of the latest counted error, 0 if none.
    pub last_errno: i32,
}

/// A TAP interface. Implements [`Device`]; poll its [`AsRawFd`] for readability.
pub struct TapDevice {
    rx: TapRx,
    tx: TapTx,
    name: String,
    mtu: usize,
    offload: bool,
    /// Declared last so it closes after the queues are done with it.
    fd: OwnedFd,
}

impl TapDevice {
    /// Attach to TAP `name`, creating it if it does not exist, in the calling
    /// thread's network namespace; set it non-blocking, bring it up and read
    /// its MTU. A name with `%d` (e.g. `"ust%d"`) lets the kernel pick a free
    /// number; [`name`](Self::name) tells which.
    pub fn open(name: &str) -> Result<TapDevice, DeviceError> {
        TapDevice::open_with(name, TapConfig::default())
    }

    /// As [`TapDevice::open`], with the offloads `config` asks for.
    pub fn open_with(name: &str, config: TapConfig) -> Result<TapDevice, DeviceError> {
        validate_name(name)?;
        let fd = open_tun()?;

        let mut ifr = ifreq_for(name);
        let vnet = if config.offload { libc::IFF_VNET_HDR } else { 0 };
        let multi = if config.multi_queue { libc::IFF_MULTI_QUEUE } else { 0 };
        ifr.ifr_ifru.ifru_flags = (libc::IFF_TAP | libc::IFF_NO_PI | vnet | multi) as c_short;
        // SAFETY: TUNSETIFF reads and writes one `struct ifreq`, which `ifr` is.
        if unsafe { libc::ioctl(fd.as_raw_fd(), libc::TUNSETIFF as _, &mut ifr) } < 0 {
            let err = io::Error::last_os_error();
            return Err(match err.raw_os_error() {
                Some(libc::EPERM | libc::EACCES) => {
                    DeviceError::PermissionDenied { action: "creating a TAP", source: err }
                }
                Some(libc::EBUSY) => DeviceError::Busy { name: name.to_owned() },
                // Names were checked above, so the kernel's EINVAL means the name
                // belongs to an interface of another kind.
                Some(libc::EINVAL) => DeviceError::NotTap { name: name.to_owned() },
                _ => DeviceError::Io { action: "TUNSETIFF", source: err },
            });
        }
        let name = name_of(&ifr);
        if config.offload {
            let hdr_len = VNET_HDR_LEN as libc::c_int;
            // SAFETY: TUNSETVNETHDRSZ reads one int through the pointer.
            if unsafe { libc::ioctl(fd.as_raw_fd(), TUNSETVNETHDRSZ as _, &hdr_len) } < 0 {
                let source = io::Error::last_os_error();
                return Err(DeviceError::Io { action: "TUNSETVNETHDRSZ (the virtio-net header size)", source });
            }
            // SAFETY: TUNSETOFFLOAD takes its flags by value.
            if unsafe { libc::ioctl(fd.as_raw_fd(), TUNSETOFFLOAD as _, TUN_F_CSUM | TUN_F_TSO4) } < 0 {
                let source = io::Error::last_os_error();
                return Err(DeviceError::Io { action: "TUNSETOFFLOAD (checksum and TSO4 offload)", source });
            }
        }

        let mtu = bring_up(&name)?;
        wait_running(&name)?;

        let raw = fd.as_raw_fd();
        let offload = config.offload;
        let (rx, tx) = (TapRx::new(raw, &name, offload), TapTx::new(raw, mtu, &name, offload));
        Ok(TapDevice { rx, tx, name, mtu, offload, fd })
    }

    /// Give the kernel side of the TAP the address `addr/prefix`
    /// (`SIOCSIFADDR` + `SIOCSIFNETMASK`), in the calling thread's namespace.
    pub fn set_host_addr(&self, addr: Ipv4Addr, prefix: u8) -> Result<(), DeviceError> {
        if prefix > 32 {
            return Err(DeviceError::InvalidPrefix { prefix });
        }
        let mask = u32::MAX.checked_shl(32 - u32::from(prefix)).unwrap_or(0);
        let sock = control_socket()?;
        let mut ifr = ifreq_for(&self.name);
        set_sockaddr_in(&mut ifr, addr);
        if_ioctl(&sock, libc::SIOCSIFADDR, &mut ifr, &self.name, "assigning the address")?;
        let mut ifr = ifreq_for(&self.name);
        set_sockaddr_in(&mut ifr, Ipv4Addr::from(mask));
        if_ioctl(&sock, libc::SIOCSIFNETMASK, &mut ifr, &self.name, "setting the netmask")
    }

    /// The interface name (as the kernel chose it, for `%d` templates).
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The MTU read at open.
    pub fn mtu(&self) -> usize {
        self.mtu
    }

    /// Whether the TAP was opened with offloads ([`TapConfig::offload`]).
    pub fn offload(&self) -> bool {
        self.offload
    }

    /// Frames waiting in the transmit ring, of [`TX_QUEUE_FRAMES`]: more
    /// than zero between polls only while the kernel pushes back.
    pub fn tx_queued(&self) -> usize {
        self.tx.queued
    }

    /// Why the TAP stopped working, if it did: the interface was deleted
    /// under us (reads and writes then fail with `EBADFD`).
    pub fn failure(&self) -> Option<&DeviceError> {
        self.rx.fatal.as_ref().or(self.tx.fatal.as_ref())
    }

    /// Counters so far.
    pub fn stats(&self) -> TapStats {
        let (rx, tx) = (&self.rx.stats, &self.tx.stats);
        TapStats {
            rx_frames: rx.rx_frames,
            rx_bytes: rx.rx_bytes,
            rx_errors: rx.rx_errors,
            last_errno: if tx.last_errno != 0 { tx.last_errno } else { rx.last_errno },
            ..*tx
        }
    }
}

impl Device for TapDevice {
    type Rx<'a> = &'a mut TapRx;
    type Tx<'a> = &'a mut TapTx;

    fn queues(&mut self) -> (&mut TapRx, &mut TapTx) {
        (&mut self.rx, &mut self.tx)
    }

    fn caps(&self) -> DeviceCaps {
        if !self.offload {
            return DeviceCaps { mtu: self.mtu, ..Default::default() };
        }
        DeviceCaps {
            mtu: self.mtu,
            rx_checksum: true,
            tx_checksum: true,
            tso4_max: usize::from(u16::MAX),
            // The kernel takes IPv6 super-segments from us whatever
            // TUNSETOFFLOAD says (that names what it may send us).
            tso6: true,
            rx_coalesced: true,
        }
    }
}

impl AsRawFd for TapDevice {
    fn as_raw_fd(&self) -> RawFd {
        self.fd.as_raw_fd()
    }
}

impl AsFd for TapDevice {
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.fd.as_fd()
    }
}

impl Drop for TapDevice {
    fn drop(&mut self) {
        // Best effort: frames queued but never flushed still go out.
        self.tx.write_queued();
    }
}

impl fmt::Debug for TapDevice {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TapDevice")
            .field("name", &self.name)
            .field("mtu", &self.mtu)
            .field("fd", &self.fd.as_raw_fd())
            .finish_non_exhaustive()
    }
}

/// Receive side of a [`TapDevice`].
pub struct TapRx {
    /// Borrowed from the owning `TapDevice`, which closes it after us.
    fd: RawFd,
    /// A virtio-net header (when `vnet`) and the frame.
    buf: Box<[u8]>,
    vnet: bool,
    stats: TapStats,
    name: String,
    /// Set once the interface is gone; the device reports it through `failure`.
    fatal: Option<DeviceError>,
}

impl TapRx {
    fn new(fd: RawFd, name: &str, vnet: bool) -> TapRx {
        let buf = vec![0; VNET_HDR_LEN + MAX_FRAME].into_boxed_slice();
        TapRx { fd, buf, vnet, stats: TapStats::default(), name: name.to_owned(), fatal: None }
    }
}

/// `EBADFD` is what a TAP's descriptor answers once its interface was
/// deleted; nothing will ever come through it again.
fn vanished(fatal: &mut Option<DeviceError>, name: &str, errno: i32) {
    if errno == libc::EBADFD && fatal.is_none() {
        *fatal = Some(DeviceError::Vanished { name: name.to_owned(), source: io::Error::from_raw_os_error(errno) });
    }
}

/// What a received virtio-net header says about its frame.
fn rx_meta(h: &[u8]) -> RxMeta {
    let u16_at = |i: usize| u16::from_le_bytes([h[i], h[i + 1]]);
    let gso_type = match h[1] & !VIRTIO_NET_HDR_GSO_ECN {
        VIRTIO_NET_HDR_GSO_TCPV4 => GsoType::TcpV4,
        // We offered only TSO4; anything else is handed on as a plain
        // frame, and the stack judges it by its headers.
        _ => GsoType::None,
    };
    RxMeta {
        csum_verified: h[0] & VIRTIO_NET_HDR_F_DATA_VALID != 0,
        csum_partial: h[0] & VIRTIO_NET_HDR_F_NEEDS_CSUM != 0,
        csum_start: u16_at(6),
        csum_offset: u16_at(8),
        gso_type,
        gso_size: u16_at(4),
        hdr_len: u16_at(2),
    }
}

/// The virtio-net header for a frame sent with `meta`.
fn tx_header(meta: &TxMeta) -> [u8; VNET_HDR_LEN] {
    let mut h = [0u8; VNET_HDR_LEN];
    if meta.csum_partial {
        h[0] = VIRTIO_NET_HDR_F_NEEDS_CSUM;
        h[6..8].copy_from_slice(&meta.csum_start.to_le_bytes());
        h[8..10].copy_from_slice(&meta.csum_offset.to_le_bytes());
    }
    h[1] = match meta.gso_type {
        GsoType::None => VIRTIO_NET_HDR_GSO_NONE,
        GsoType::TcpV4 => VIRTIO_NET_HDR_GSO_TCPV4,
        GsoType::TcpV6 => VIRTIO_NET_HDR_GSO_TCPV6,
    };
    if meta.gso_type != GsoType::None {
        h[2..4].copy_from_slice(&meta.hdr_len.to_le_bytes());
        h[4..6].copy_from_slice(&meta.gso_size.to_le_bytes());
    }
    h
}

impl RxQueue for TapRx {
    fn recv(&mut self, _now: Instant) -> Option<(&[u8], RxMeta)> {
        loop {
            // SAFETY: reads at most `buf.len()` bytes into `buf`.
            let n = unsafe { libc::read(self.fd, self.buf.as_mut_ptr().cast(), self.buf.len()) };
            if n > 0 {
                let n = n as usize;
                if !self.vnet {
                    self.stats.rx_frames += 1;
                    self.stats.rx_bytes += n as u64;
                    return Some((&self.buf[..n], RxMeta::default()));
                }
                if n < VNET_HDR_LEN {
                    self.stats.rx_errors += 1;
                    continue;
                }
                self.stats.rx_frames += 1;
                self.stats.rx_bytes += (n - VNET_HDR_LEN) as u64;
                let meta = rx_meta(&self.buf[..VNET_HDR_LEN]);
                return Some((&self.buf[VNET_HDR_LEN..n], meta));
            }
            if n == 0 {
                return None;
            }
            match errno() {
                libc::EINTR => continue,
                libc::EAGAIN => return None,
                e => {
                    self.stats.rx_errors += 1;
                    self.stats.last_errno = e;
                    vanished(&mut self.fatal, &self.name, e);
                    return None;
                }
            }
        }
    }
}

/// Transmit side of a [`TapDevice`]: a ring of queued frames written on `flush`.
pub struct TapTx {
    /// Borrowed from the owning `TapDevice`, which closes it after us.
    fd: RawFd,
    /// Frame buffers, each with room for a virtio-net header first (used
    /// when `vnet`); a slot grows (once) if a frame longer than the MTU comes.
    slots: Box<[Vec<u8>]>,
    vnet: bool,
    /// Length and metadata of the frame in each slot.
    lens: [usize; TX_QUEUE_FRAMES],
    metas: [TxMeta; TX_QUEUE_FRAMES],
    head: usize,
    queued: usize,
    stats: TapStats,
    name: String,
    fatal: Option<DeviceError>,
}

impl TapTx {
    fn new(fd: RawFd, mtu: usize, name: &str, vnet: bool) -> TapTx {
        let slot_len = VNET_HDR_LEN + (mtu + 14 + 4).min(MAX_FRAME);
        TapTx {
            fd,
            slots: (0..TX_QUEUE_FRAMES).map(|_| vec![0; slot_len]).collect(),
            vnet,
            lens: [0; TX_QUEUE_FRAMES],
            metas: [TxMeta::default(); TX_QUEUE_FRAMES],
            head: 0,
            queued: 0,
            stats: TapStats::default(),
            name: name.to_owned(),
            fatal: None,
        }
    }

    /// Write queued frames until the ring is empty or the kernel pushes back.
    fn write_queued(&mut self) {
        while self.queued > 0 {
            let len = self.lens[self.head];
            let slot = &mut self.slots[self.head];
            let frame = if self.vnet {
                slot[..VNET_HDR_LEN].copy_from_slice(&tx_header(&self.metas[self.head]));
                &slot[..VNET_HDR_LEN + len]
            } else {
                &slot[VNET_HDR_LEN..VNET_HDR_LEN + len]
            };
            // SAFETY: writes `frame.len()` bytes from `frame`.
            let n = unsafe { libc::write(self.fd, frame.as_ptr().cast(), frame.len()) };
            if n >= 0 {
                self.stats.tx_frames += 1;
                self.stats.tx_bytes += len as u64;
            } else {
                match errno() {
                    libc::EINTR => continue,
                    e @ (libc::EAGAIN | libc::ENOBUFS) => {
                        self.stats.tx_blocked += 1;
                        self.stats.last_errno = e;
                        return;
                    }
                    e => {
                        // The kernel rejected this frame (e.g. shorter than an
                        // Ethernet header); retrying would not help.
                        self.stats.tx_dropped += 1;
                        self.stats.last_errno = e;
                        vanished(&mut self.fatal, &self.name, e);
                    }
                }
            }
            self.head = (self.head + 1) % TX_QUEUE_FRAMES;
            self.queued -= 1;
        }
    }
}

impl TxQueue for TapTx {
    fn send<F: FnOnce(&mut [u8])>(&mut self, len: usize, meta: TxMeta, fill: F) -> Result<(), TxFull> {
        if len > MAX_FRAME {
            self.stats.tx_dropped += 1;
            return Ok(());
        }
        if self.queued == TX_QUEUE_FRAMES {
            self.write_queued();
            if self.queued == TX_QUEUE_FRAMES {
                self.stats.tx_full += 1;
                return Err(TxFull);
            }
        }
        let slot = (self.head + self.queued) % TX_QUEUE_FRAMES;
        let buf = &mut self.slots[slot];
        if buf.len() < VNET_HDR_LEN + len {
            buf.resize(VNET_HDR_LEN + len, 0);
        }
        fill(&mut buf[VNET_HDR_LEN..VNET_HDR_LEN + len]);
        self.lens[slot] = len;
        self.metas[slot] = meta;
        self.queued += 1;
        Ok(())
    }

    fn flush(&mut self) {
        self.write_queued();
    }
}

/// Bring interface `name` up (in the calling thread's namespace) and
/// return its MTU. Shared by the devices that run on an interface.
pub(crate) fn bring_up(name: &str) -> Result<usize, DeviceError> {
    let sock = control_socket()?;
    let mut ifr = ifreq_for(name);
    if_ioctl(&sock, libc::SIOCGIFFLAGS, &mut ifr, name, "reading link flags")?;
    // SAFETY: SIOCGIFFLAGS filled the flags member of the union.
    let flags = unsafe { ifr.ifr_ifru.ifru_flags };
    if flags & libc::IFF_UP as c_short == 0 {
        ifr.ifr_ifru.ifru_flags = flags | libc::IFF_UP as c_short;
        if_ioctl(&sock, libc::SIOCSIFFLAGS, &mut ifr, name, "bringing the link up")?;
    }

    let mut ifr = ifreq_for(name);
    if_ioctl(&sock, libc::SIOCGIFMTU, &mut ifr, name, "reading the MTU")?;
    // SAFETY: SIOCGIFMTU filled the mtu member of the union.
    Ok(usize::try_from(unsafe { ifr.ifr_ifru.ifru_mtu }).unwrap_or(1500))
}

/// How long [`wait_running`] waits for the kernel to start a TAP's queue.
const RUNNING_WAIT: std::time::Duration = std::time::Duration::from_secs(2);

/// Wait (at most [`RUNNING_WAIT`]) until the kernel's side of TAP `name`
/// is running. Attaching turns the TAP's carrier on, but the kernel starts
/// the queue that carries its frames to us later, from its link-watch
/// work; until then everything it sends to the TAP is dropped. The stack's
/// first frame is an ARP request, and a reply lost that way cost a second
/// (the ARP retry) on a TAP made before the stack started.
fn wait_running(name: &str) -> Result<(), DeviceError> {
    let sock = control_socket()?;
    let start = std::time::Instant::now();
    loop {
        let mut ifr = ifreq_for(name);
        if_ioctl(&sock, libc::SIOCGIFFLAGS, &mut ifr, name, "reading link flags")?;
        // SAFETY: SIOCGIFFLAGS filled the flags member of the union.
        let flags = unsafe { ifr.ifr_ifru.ifru_flags };
        if flags & libc::IFF_RUNNING as c_short != 0 {
            return Ok(());
        }
        if start.elapsed() >= RUNNING_WAIT {
            // Not fatal: the stack's retries cover a queue that starts late.
            return Ok(());
        }
        std::thread::sleep(std::time::Duration::from_millis(1));
    }
}

fn errno() -> i32 {
    io::Error::last_os_error().raw_os_error().unwrap_or(0)
}

/// The kernel's `dev_valid_name`, so mistakes get a precise message.
pub(crate) fn validate_name(name: &str) -> Result<(), DeviceError> {
    let invalid = |reason| Err(DeviceError::InvalidName { name: name.to_owned(), reason });
    if name.is_empty() {
        return invalid("the name is empty");
    }
    if name.len() >= libc::IFNAMSIZ {
        return invalid("the name is longer than 15 bytes");
    }
    if name == "." || name == ".." {
        return invalid("\".\" and \"..\" are reserved");
    }
    if name.bytes().any(|b| b == b'/' || b == b':' || b == 0 || b.is_ascii_whitespace()) {
        return invalid("the name contains '/', ':', NUL or whitespace");
    }
    Ok(())
}

fn open_tun() -> Result<OwnedFd, DeviceError> {
    // SAFETY: a NUL-terminated path and plain flags.
    let fd = unsafe { libc::open(c"/dev/net/tun".as_ptr(), libc::O_RDWR | libc::O_NONBLOCK | libc::O_CLOEXEC) };
    if fd < 0 {
        let err = io::Error::last_os_error();
        return Err(match err.raw_os_error() {
            Some(libc::ENOENT | libc::ENODEV | libc::ENXIO) => DeviceError::TunMissing { source: err },
            Some(libc::EACCES | libc::EPERM) => {
                DeviceError::PermissionDenied { action: "opening /dev/net/tun", source: err }
            }
            _ => DeviceError::Io { action: "opening /dev/net/tun", source: err },
        });
    }
    // SAFETY: `fd` is a fresh descriptor that nothing else owns.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

/// An AF_INET datagram socket: the handle for interface ioctls. It acts on
/// the namespace of the thread that creates it.
pub(crate) fn control_socket() -> Result<OwnedFd, DeviceError> {
    // SAFETY: plain arguments.
    let fd = unsafe { libc::socket(libc::AF_INET, libc::SOCK_DGRAM | libc::SOCK_CLOEXEC, 0) };
    if fd < 0 {
        let source = io::Error::last_os_error();
        return Err(DeviceError::Io { action: "creating a control socket", source });
    }
    // SAFETY: `fd` is a fresh descriptor that nothing else owns.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

fn if_ioctl(
    sock: &OwnedFd,
    request: libc::c_ulong,
    ifr: &mut libc::ifreq,
    name: &str,
    action: &'static str,
) -> Result<(), DeviceError> {
    // SAFETY: every request passed here reads or writes one `struct ifreq`.
    if unsafe { libc::ioctl(sock.as_raw_fd(), request as _, ifr as *mut libc::ifreq) } < 0 {
        let source = io::Error::last_os_error();
        return Err(match source.raw_os_error() {
            Some(libc::EPERM | libc::EACCES) => DeviceError::PermissionDenied { action, source },
            Some(libc::ENODEV) => DeviceError::NoSuchInterface { name: name.to_owned() },
            _ => DeviceError::Io { action, source },
        });
    }
    Ok(())
}

/// A zeroed `ifreq` naming `name` (already validated: shorter than IFNAMSIZ).
pub(crate) fn ifreq_for(name: &str) -> libc::ifreq {
    // SAFETY: `ifreq` is plain old data; all zeros is a valid value.
    let mut ifr: libc::ifreq = unsafe { std::mem::zeroed() };
    for (dst, &src) in ifr.ifr_name.iter_mut().zip(name.as_bytes().iter().take(libc::IFNAMSIZ - 1)) {
        *dst = src as libc::c_char;
    }
    ifr
}

fn name_of(ifr: &libc::ifreq) -> String {
    let bytes: Vec<u8> = ifr.ifr_name.iter().take_while(|&&c| c != 0).map(|&c| c as u8).collect();
    String::from_utf8_lossy(&bytes).into_owned()
}

fn set_sockaddr_in(ifr: &mut libc::ifreq, addr: Ipv4Addr) {
    let sin = libc::sockaddr_in {
        sin_family: libc::AF_INET as libc::sa_family_t,
        sin_port: 0,
        sin_addr: libc::in_addr { s_addr: u32::from(addr).to_be() },
        sin_zero: [0; 8],
    };
    // SAFETY: `sockaddr_in` and `sockaddr` are both 16 bytes; the kernel reads
    // the union member as a `sockaddr_in` because sin_family is AF_INET.
    unsafe {
        std::ptr::write_unaligned(std::ptr::addr_of_mut!(ifr.ifr_ifru.ifru_addr).cast::<libc::sockaddr_in>(), sin);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn name_validation() {
        for (name, reason) in [
            ("", "empty"),
            ("sixteen-chars-xx", "longer than 15"),
            ("a/b", "'/'"),
            ("a b", "whitespace"),
            ("a:0", "':'"),
            ("..", "reserved"),
        ] {
            let err = validate_name(name).unwrap_err();
            let msg = err.to_string();
            assert!(matches!(err, DeviceError::InvalidName { .. }), "{name}: {err:?}");
            assert!(msg.contains(reason), "{name}: {msg}");
        }
        validate_name("ust0").unwrap();
        validate_name("fifteen-chars-x").unwrap();
        validate_name("ust%d").unwrap();
    }

    #[test]
    fn messages_say_what_to_do() {
        let err = DeviceError::PermissionDenied {
            action: "opening /dev/net/tun",
            source: io::Error::from_raw_os_error(libc::EPERM),
        };
        assert!(err.to_string().starts_with("opening /dev/net/tun needs CAP_NET_ADMIN"));
        assert!(err.to_string().contains("run as root"));
        let err = DeviceError::TunMissing { source: io::Error::from_raw_os_error(libc::ENOENT) };
        assert!(err.to_string().contains("modprobe tun"));
        assert!(std::error::Error::source(&err).is_some());
        assert!(DeviceError::InvalidPrefix { prefix: 33 }.to_string().contains("0 to 32"));
    }
}
