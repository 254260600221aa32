//! An AF_XDP socket on one receive queue of an existing interface:
//! `af_xdp:IFACE[,queue=N][,mode=drv|skb][,copy|zerocopy][,rx_ring=N][,tx_ring=N][,frame=N][,batch=N][,gso=on|off][,gro=on|off]`.
//!
//! * **Memory**: one UMEM (an anonymous mapping registered with the socket)
//!   cut into `rx_ring + tx_ring` frames of `frame` bytes. The first
//!   `rx_ring` frames cycle between the fill ring, the kernel and the RX
//!   ring; the others between a free list, the TX ring and the completion
//!   ring. Each ring is as large as its share of frames, so no ring can
//!   overflow and no frame can be lost between them — except the fill ring,
//!   which is twice that: the kernel publishes how far it has consumed the
//!   fill ring lazily (when its cached view runs dry), so a frame can come
//!   back on the RX ring while its old fill slot still reads as occupied.
//!   At most every receive frame can be in that state at once, so twice the
//!   frames never reads as full.
//! * **Receive**: `recv` takes up to `batch` descriptors from the RX ring at
//!   once (one release store), lends each frame to the stack in place, in
//!   the UMEM, and puts it back on the fill ring on the next `recv`, when the
//!   stack is done with it; the fill ring is published once per batch. No
//!   system call, unless the kernel asks for a wakeup (`need_wakeup`).
//! * **Transmit**: `send` writes the frame straight into a free UMEM frame
//!   and its descriptor into the TX ring; `flush` (or every `batch` frames)
//!   publishes them and, when the kernel asks for it (always in copy mode),
//!   kicks it with one `sendto`. The kernel sends at most a few dozen frames
//!   per kick in copy mode and answers `EAGAIN` while more wait, so a burst
//!   takes one kick per few dozen frames. Sent frames come back through the
//!   completion ring, reclaimed in batches.
//! * **Program**: [`bpf::XdpProgram`] — five instructions that redirect the
//!   queue to the socket, loaded and attached (BPF link, so it goes away
//!   with the process) by ustack itself.
//! * **Software GSO and GRO** (`gso=`, `gro=`; see [`AfXdpConfig`] for the
//!   defaults): with GSO the device offers TSO and transmit checksum offload
//!   to the stack, takes 64 KiB TCP super-segments and cuts them into wire
//!   segments in one go, each written straight into its UMEM frame from the
//!   headers the stack built once (`crate::soft_offload`); with GRO, the
//!   consecutive in-order segments of one flow within one RX batch are glued
//!   into one frame (copied into a buffer the device owns) before the stack
//!   sees them, their checksums verified. Both use one buffer made at open;
//!   nothing is allocated per segment.
//! * **Checksums**: XDP carries no checksum metadata. A kernel sender on a
//!   veth leaves TCP/UDP checksums partial (CHECKSUM_PARTIAL); the stack
//!   would drop those frames as corrupt, so turn transmit checksum offload
//!   off on the kernel's side (`ethtool -K PEER tx off`).
//! * **Failure**: an interface deleted under the socket unbinds it; `recv`
//!   notices (a `SO_ERROR` look every [`HEALTH_CHECK`] while idle, or the
//!   `ENXIO` of a kick) and [`Waitable::failure`] reports
//!   [`DeviceError::Vanished`].

pub(crate) mod bpf;
mod ring;
mod socket;

use std::fmt;
use std::io;
use std::mem::size_of;
use std::os::fd::{AsRawFd, OwnedFd, RawFd};
use std::time::Duration;

pub use bpf::XdpMode;
use bpf::{BpfError, BpfStep, XdpProgram};
use ring::{ConsumerRing, Mmap, ProducerRing};
use socket::{
    bind, interface_index, is_zerocopy, kernel_stats, mmap_offsets, register_umem, rx_queue_count, setsockopt,
    xdp_socket,
};

use crate::soft_offload::{self, Gro};
use crate::{DeviceError, Options, Waitable};
use ustack_core::phy::{Device, DeviceCaps, GsoType, RxMeta, RxQueue, TxFull, TxMeta, TxQueue};
use ustack_core::time::Instant;

/// How often an idle receive queue checks that its interface still exists.
pub const HEALTH_CHECK: Duration = Duration::from_millis(250);

/// The kernel keeps this much of each frame in front of a received packet
/// (`XDP_PACKET_HEADROOM`), in copy mode and zero-copy alike.
const XDP_PACKET_HEADROOM: u32 = 256;

/// Room a frame needs beyond the MTU: an Ethernet header and a VLAN tag.
const L2_OVERHEAD: u32 = 14 + 4;

/// How the socket binds to the queue.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BindMode {
    /// Zero-copy where the driver supports it, copy otherwise.
    Auto,
    /// The kernel copies frames in and out of the UMEM (`copy`).
    Copy,
    /// The driver reads and writes the UMEM itself (`zerocopy`); refused
    /// where the driver cannot.
    ZeroCopy,
}

/// What an `af_xdp:` spec asks for, with the defaults documented in README.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct AfXdpConfig {
    /// The receive queue to take (`queue=`, default 0).
    pub queue: u32,
    /// Where the program runs (`mode=drv|skb`); `None`: in the driver if it
    /// has native XDP, generic otherwise.
    pub mode: Option<XdpMode>,
    /// Copy or zero-copy (`copy`, `zerocopy`; default: the driver's best).
    pub bind: BindMode,
    /// RX and fill ring size, and the frames for receiving (`rx_ring=`).
    pub rx_ring: u32,
    /// TX and completion ring size, and the frames for sending (`tx_ring=`).
    pub tx_ring: u32,
    /// Bytes per UMEM frame (`frame=`, 2048 or 4096).
    pub frame_size: u32,
    /// Descriptors taken or published per ring operation (`batch=`).
    pub batch: u32,
    /// Software GSO (`gso=on|off`, default off): offer TSO to the stack and
    /// cut its super-segments here. Off by default: over a veth in copy mode
    /// it moved the sender's CPU per byte by nothing measurable (the
    /// kernel's copies dominate; README, "Process to process").
    pub gso: bool,
    /// Software GRO (`gro=on|off`, default on): glue consecutive segments
    /// of a flow within one RX batch before the stack sees them. On by
    /// default: it cut the CPU per byte of ustack ↔ ustack stream by about a
    /// fifth in the same benchmark.
    pub gro: bool,
}

impl Default for AfXdpConfig {
    fn default() -> Self {
        AfXdpConfig {
            queue: 0,
            mode: None,
            bind: BindMode::Auto,
            rx_ring: 2048,
            tx_ring: 2048,
            frame_size: 2048,
            batch: 64,
            gso: false,
            gro: true,
        }
    }
}

/// The options of an `af_xdp:` spec, for `--help` and errors.
pub const SPEC_FORM: &str =
    "af_xdp:IFACE[,queue=N][,mode=drv|skb][,copy|zerocopy][,rx_ring=N][,tx_ring=N][,frame=2048|4096][,batch=N][,gso=on|off][,gro=on|off]";

impl AfXdpConfig {
    /// Take the `af_xdp` options from `opts` (the caller then `finish`es them).
    pub fn from_options(opts: &mut Options<'_>) -> Result<AfXdpConfig, DeviceError> {
        let d = AfXdpConfig::default();
        let queue = opts.number("queue", u64::from(d.queue), 0..=4095)? as u32;
        let mode = match opts.take("mode") {
            None => None,
            Some("drv" | "native") => Some(XdpMode::Driver),
            Some("skb" | "generic") => Some(XdpMode::Generic),
            Some(v) => return Err(opts.error(format!("mode={v}: expected mode=drv or mode=skb"))),
        };
        let bind = match (opts.switch("copy", false)?, opts.switch("zerocopy", false)?) {
            (false, false) => BindMode::Auto,
            (true, false) => BindMode::Copy,
            (false, true) => BindMode::ZeroCopy,
            (true, true) => return Err(opts.error("copy and zerocopy exclude each other: give one".into())),
        };
        let mut ring = |key: &str, default: u32| -> Result<u32, DeviceError> {
            let n = opts.number(key, u64::from(default), 64..=16384)? as u32;
            if !n.is_power_of_two() {
                return Err(opts.error(format!("{key}={n}: a ring size must be a power of two (64 to 16384)")));
            }
            Ok(n)
        };
        let rx_ring = ring("rx_ring", d.rx_ring)?;
        let tx_ring = ring("tx_ring", d.tx_ring)?;
        let frame_size = match opts.number("frame", u64::from(d.frame_size), 2048..=4096)? {
            n @ (2048 | 4096) => n as u32,
            n => return Err(opts.error(format!("frame={n}: expected 2048 or 4096"))),
        };
        let batch = opts.number("batch", u64::from(d.batch), 1..=1024)? as u32;
        let (gso, gro) = (opts.switch("gso", d.gso)?, opts.switch("gro", d.gro)?);
        Ok(AfXdpConfig { queue, mode, bind, rx_ring, tx_ring, frame_size, batch, gso, gro })
    }
}

/// Counters of an [`AfXdpDevice`].
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct AfXdpStats {
    /// Frames handed to the stack.
    pub rx_frames: u64,
    /// Bytes handed to the stack.
    pub rx_bytes: u64,
    /// Descriptors from the kernel that point outside the UMEM (never
    /// expected; dropped).
    pub rx_invalid: u64,
    /// `recvfrom` calls made because the kernel asked for a fill-ring wakeup.
    pub rx_wakeups: u64,
    /// Frames queued on the TX ring.
    pub tx_frames: u64,
    /// Bytes queued on the TX ring.
    pub tx_bytes: u64,
    /// `send` calls refused with [`TxFull`]: every TX frame in flight.
    pub tx_full: u64,
    /// Frames dropped: empty, longer than a UMEM frame (and not a
    /// super-segment GSO can cut), or a partial checksum outside the frame.
    pub tx_dropped: u64,
    /// Super-segments cut by software GSO.
    pub tx_gso_super_segments: u64,
    /// Glued frames handed to the stack by software GRO.
    pub rx_gro_frames: u64,
    /// Received segments glued into them.
    pub rx_gro_segments: u64,
    /// `sendto` kicks.
    pub tx_kicks: u64,
    /// Kicks the kernel answered with "busy, try again" (`EAGAIN`, `EBUSY`,
    /// `ENOBUFS`); the frames stay queued for the next kick.
    pub tx_kick_busy: u64,
    /// Kicks that failed otherwise (the link down, say).
    pub tx_kick_errors: u64,
    /// The errno of the latest failed kick, 0 if none.
    pub last_errno: i32,
}

/// An AF_XDP socket on one queue of an interface, with its UMEM, rings and
/// XDP program. Implements [`Device`] and [`Waitable`].
pub struct AfXdpDevice {
    rx: AfXdpRx,
    tx: AfXdpTx,
    name: String,
    mtu: usize,
    config: AfXdpConfig,
    zerocopy: bool,
    // Drop order: rings (above), then the program (detached), the socket,
    // and last the UMEM the rings and the socket point into.
    program: XdpProgram,
    fd: OwnedFd,
    _umem: Mmap,
}

impl AfXdpDevice {
    /// Open an AF_XDP socket on queue `config.queue` of interface `name` in
    /// the calling thread's namespace, bring the interface up, and attach
    /// the program that sends that queue's frames to the socket.
    pub fn open(name: &str, config: AfXdpConfig) -> Result<AfXdpDevice, DeviceError> {
        crate::tap::validate_name(name)?;
        let ifindex = interface_index(name)?;
        let mtu = crate::tap::bring_up(name)?;
        if mtu as u32 + L2_OVERHEAD > config.frame_size - XDP_PACKET_HEADROOM {
            return Err(DeviceError::Unsupported {
                what: format!(
                    "{name} has MTU {mtu}, more than a {} byte AF_XDP frame holds ({} after the kernel's headroom)",
                    config.frame_size,
                    config.frame_size - XDP_PACKET_HEADROOM - L2_OVERHEAD
                ),
                hint: "use frame=4096, or lower the MTU (ip link set IFACE mtu 1500)",
            });
        }
        if let Some(count) = rx_queue_count(name) {
            if config.queue >= count {
                return Err(DeviceError::NoSuchQueue {
                    name: name.to_owned(),
                    queue: config.queue,
                    count: Some(count),
                });
            }
        }

        let fd = xdp_socket()?;
        let raw = fd.as_raw_fd();
        let frames = config.rx_ring + config.tx_ring;
        // Twice the receive frames: see the module docs (lazy consumer).
        let fill_size = 2 * config.rx_ring;
        let umem_len = frames as usize * config.frame_size as usize;
        let umem =
            Mmap::anonymous(umem_len).map_err(|source| DeviceError::Io { action: "mapping the UMEM", source })?;
        register_umem(raw, &umem, config.frame_size)?;
        for (opt, size) in [
            (libc::XDP_UMEM_FILL_RING, fill_size),
            (libc::XDP_UMEM_COMPLETION_RING, config.tx_ring),
            (libc::XDP_RX_RING, config.rx_ring),
            (libc::XDP_TX_RING, config.tx_ring),
        ] {
            setsockopt(raw, libc::SOL_XDP, opt, &size)
                .map_err(|source| DeviceError::Io { action: "sizing the AF_XDP rings", source })?;
        }
        let off = mmap_offsets(raw)?;
        let map_ring = |len: usize, pgoff: u64| {
            Mmap::ring(raw, len, pgoff).map_err(|source| DeviceError::Io { action: "mapping an AF_XDP ring", source })
        };
        let desc = size_of::<libc::xdp_desc>();
        let fill_map = map_ring(off.fr.desc as usize + fill_size as usize * 8, libc::XDP_UMEM_PGOFF_FILL_RING)?;
        let comp_map =
            map_ring(off.cr.desc as usize + config.tx_ring as usize * 8, libc::XDP_UMEM_PGOFF_COMPLETION_RING)?;
        let rx_map = map_ring(off.rx.desc as usize + config.rx_ring as usize * desc, libc::XDP_PGOFF_RX_RING as u64)?;
        let tx_map = map_ring(off.tx.desc as usize + config.tx_ring as usize * desc, libc::XDP_PGOFF_TX_RING as u64)?;
        // SAFETY: each mapping is the kernel's ring of that size, laid out as
        // XDP_MMAP_OFFSETS said, and each ring keeps its mapping alive.
        let (fill, comp, rx_ring, tx_ring) = unsafe {
            (
                ProducerRing::<u64>::in_mapping(fill_map, off.fr.into(), fill_size),
                ConsumerRing::<u64>::in_mapping(comp_map, off.cr.into(), config.tx_ring),
                ConsumerRing::<libc::xdp_desc>::in_mapping(rx_map, off.rx.into(), config.rx_ring),
                ProducerRing::<libc::xdp_desc>::in_mapping(tx_map, off.tx.into(), config.tx_ring),
            )
        };

        bind(raw, name, ifindex, config.queue, config.bind)?;
        let zerocopy = is_zerocopy(raw);

        let frame = FrameArea { base: umem.as_ptr(), len: umem.len(), frame_size: config.frame_size };
        let mut rx = AfXdpRx::new(raw, frame, rx_ring, fill, config.batch, name);
        rx.gro = config.gro.then(|| Box::new(Gro::new()));
        // Every receive frame goes on the fill ring before frames can arrive.
        for i in 0..config.rx_ring {
            rx.fill.push(u64::from(i) * u64::from(config.frame_size));
        }
        rx.fill.submit();
        let tx_frames = (config.rx_ring..frames).map(|i| u64::from(i) * u64::from(config.frame_size)).collect();
        let mut tx = AfXdpTx::new(raw, frame, tx_ring, comp, tx_frames, config.batch, name);
        tx.gso = config.gso.then(|| vec![0; soft_offload::MAX_FRAME].into_boxed_slice());

        let program = attach(name, ifindex, config.queue, config.mode)?;
        program.insert(config.queue, raw).map_err(|e| bpf_error(name, e))?;
        Ok(AfXdpDevice { rx, tx, name: name.to_owned(), mtu, config, zerocopy, program, fd, _umem: umem })
    }

    /// The interface name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Where the program runs (the kernel's choice when the spec gave none).
    pub fn mode(&self) -> XdpMode {
        self.program.mode()
    }

    /// The driver reads and writes the UMEM itself.
    pub fn is_zerocopy(&self) -> bool {
        self.zerocopy
    }

    /// The configuration it was opened with.
    pub fn config(&self) -> &AfXdpConfig {
        &self.config
    }

    /// Counters so far.
    pub fn stats(&self) -> AfXdpStats {
        let (rx, tx) = (&self.rx.stats, &self.tx.stats);
        AfXdpStats {
            rx_frames: rx.rx_frames,
            rx_bytes: rx.rx_bytes,
            rx_invalid: rx.rx_invalid,
            rx_wakeups: rx.rx_wakeups,
            rx_gro_frames: rx.rx_gro_frames,
            rx_gro_segments: rx.rx_gro_segments,
            ..*tx
        }
    }

    /// Why the device stopped working, if it did.
    pub fn failure(&self) -> Option<&DeviceError> {
        self.rx.fatal.as_ref().or(self.tx.fatal.as_ref())
    }
}

impl Device for AfXdpDevice {
    type Rx<'a> = &'a mut AfXdpRx;
    type Tx<'a> = &'a mut AfXdpTx;

    fn queues(&mut self) -> (&mut AfXdpRx, &mut AfXdpTx) {
        (&mut self.rx, &mut self.tx)
    }

    /// With software GSO: transmit checksums and TSO up to 64 KiB (done
    /// here, in `send`); with software GRO: coalesced, verified receive.
    fn caps(&self) -> DeviceCaps {
        let (gso, gro) = (self.config.gso, self.config.gro);
        DeviceCaps {
            mtu: self.mtu,
            tx_checksum: gso,
            tso4_max: if gso { soft_offload::MAX_IP } else { 0 },
            rx_checksum: gro,
            rx_coalesced: gro,
            ..Default::default()
        }
    }
}

impl Waitable for AfXdpDevice {
    fn wait_fd(&self) -> Option<RawFd> {
        Some(self.fd.as_raw_fd())
    }

    /// Now, while frames the kernel pushed back wait for another kick.
    fn next_deadline(&self) -> Option<Instant> {
        self.tx.retry.then_some(Instant::ZERO)
    }

    fn device_stats(&self) -> Vec<(&'static str, u64)> {
        let s = self.stats();
        // SAFETY: plain old data; zeros are valid.
        let k = kernel_stats(self.fd.as_raw_fd()).unwrap_or(unsafe { std::mem::zeroed() });
        vec![
            ("rx_frames", s.rx_frames),
            ("rx_bytes", s.rx_bytes),
            ("rx_invalid", s.rx_invalid),
            ("rx_wakeups", s.rx_wakeups),
            ("tx_frames", s.tx_frames),
            ("tx_bytes", s.tx_bytes),
            ("tx_full", s.tx_full),
            ("tx_dropped", s.tx_dropped),
            ("tx_gso_super_segments", s.tx_gso_super_segments),
            ("rx_gro_frames", s.rx_gro_frames),
            ("rx_gro_segments", s.rx_gro_segments),
            ("tx_kicks", s.tx_kicks),
            ("tx_kick_busy", s.tx_kick_busy),
            ("tx_kick_errors", s.tx_kick_errors),
            ("tx_frames_free", self.tx.free.len() as u64),
            ("xdp_rx_dropped", k.rx_dropped),
            ("xdp_rx_invalid_descs", k.rx_invalid_descs),
            ("xdp_tx_invalid_descs", k.tx_invalid_descs),
            ("xdp_rx_ring_full", k.rx_ring_full),
            ("xdp_rx_fill_ring_empty", k.rx_fill_ring_empty_descs),
            ("xdp_tx_ring_empty", k.tx_ring_empty_descs),
            ("xdp_native", u64::from(self.mode() == XdpMode::Driver)),
            ("xdp_zerocopy", u64::from(self.zerocopy)),
        ]
    }

    fn failure(&self) -> Option<&DeviceError> {
        self.failure()
    }
}

impl fmt::Debug for AfXdpDevice {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AfXdpDevice")
            .field("name", &self.name)
            .field("mtu", &self.mtu)
            .field("mode", &self.mode())
            .field("zerocopy", &self.zerocopy)
            .field("config", &self.config)
            .finish_non_exhaustive()
    }
}

/// The UMEM as the queues see it: a base pointer they never free (the
/// device owns the mapping and drops it after them).
#[derive(Clone, Copy)]
struct FrameArea {
    base: *mut u8,
    len: usize,
    frame_size: u32,
}

impl FrameArea {
    /// The frame holding UMEM offset `addr`, from `addr` on, `len` bytes; `None`
    /// when that leaves the frame.
    fn slice(&self, addr: u64, len: usize) -> Option<*mut u8> {
        let frame_end = (addr | (u64::from(self.frame_size) - 1)).checked_add(1)?;
        let end = addr.checked_add(len as u64)?;
        (end <= frame_end && frame_end as usize <= self.len).then(|| {
            // SAFETY: inside the mapping, as just checked.
            unsafe { self.base.add(addr as usize) }
        })
    }

    /// The start of the frame holding `addr`.
    fn frame_of(&self, addr: u64) -> u64 {
        addr & !(u64::from(self.frame_size) - 1)
    }
}

/// Receive side of an [`AfXdpDevice`].
pub struct AfXdpRx {
    fd: RawFd,
    umem: FrameArea,
    ring: ConsumerRing<libc::xdp_desc>,
    fill: ProducerRing<u64>,
    /// Descriptors taken from the RX ring, `next..len` not yet lent.
    batch: Box<[libc::xdp_desc]>,
    next: usize,
    len: usize,
    /// The frame the last `recv` lent, back to the fill ring on the next.
    lent: Option<u64>,
    next_health_check: Instant,
    stats: AfXdpStats,
    name: String,
    fatal: Option<DeviceError>,
    /// Software GRO's buffer, when on.
    gro: Option<Box<Gro>>,
}

// SAFETY: the raw UMEM pointer is owned by the device, which moves with its
// queues; nothing else touches the frames they hold.
unsafe impl Send for AfXdpRx {}
unsafe impl Send for AfXdpTx {}

impl AfXdpRx {
    fn new(
        fd: RawFd,
        umem: FrameArea,
        ring: ConsumerRing<libc::xdp_desc>,
        fill: ProducerRing<u64>,
        batch: u32,
        name: &str,
    ) -> AfXdpRx {
        let empty = libc::xdp_desc { addr: 0, len: 0, options: 0 };
        AfXdpRx {
            fd,
            umem,
            ring,
            fill,
            batch: vec![empty; batch as usize].into_boxed_slice(),
            next: 0,
            len: 0,
            lent: None,
            next_health_check: Instant::ZERO,
            stats: AfXdpStats::default(),
            name: name.to_owned(),
            fatal: None,
            gro: None,
        }
    }

    /// With GRO: glue the segments after `frame` (batch entries from
    /// `self.next` on) that continue its flow; their frames go back to the
    /// fill ring at once. Returns how many were glued (0: `frame` is handed
    /// over as it is, with `verified` saying whether its checksums checked).
    fn glue(&mut self, frame: &[u8]) -> (usize, bool) {
        let Some(gro) = self.gro.as_deref_mut() else { return (0, false) };
        let Some(seg) = soft_offload::parse(frame) else { return (0, false) };
        if !Gro::can_start(&seg) || self.next == self.len {
            return (0, true);
        }
        let mut glued = 0;
        while self.next < self.len {
            let d = self.batch[self.next];
            let Some(ptr) = self.umem.slice(d.addr, d.len as usize) else { break };
            // SAFETY: as in `recv`: a frame taken off the RX ring, ours until
            // it goes back on the fill ring below.
            let next = unsafe { std::slice::from_raw_parts(ptr, d.len as usize) };
            let Some(next_seg) = soft_offload::parse(next) else { break };
            if glued == 0 {
                gro.start(frame, &seg);
            }
            if !gro.push(next, &next_seg) {
                break;
            }
            glued += 1;
            self.next += 1;
            self.stats.rx_frames += 1;
            self.stats.rx_bytes += u64::from(d.len);
            self.fill.push(self.umem.frame_of(d.addr));
        }
        (glued, true)
    }

    /// Publish the frames given back since the last time, waking the
    /// kernel if it asks to be.
    fn refill(&mut self) {
        if self.fill.unsubmitted() == 0 {
            return;
        }
        self.fill.submit();
        if self.fill.needs_wakeup() {
            self.stats.rx_wakeups += 1;
            // SAFETY: a zero-length receive with no buffers: only a wakeup.
            unsafe {
                libc::recvfrom(
                    self.fd,
                    std::ptr::null_mut(),
                    0,
                    libc::MSG_DONTWAIT,
                    std::ptr::null_mut(),
                    std::ptr::null_mut(),
                )
            };
        }
    }

    /// Take up to a batch of descriptors off the RX ring.
    fn take_batch(&mut self) {
        self.next = 0;
        self.len = 0;
        while self.len < self.batch.len() {
            let Some(d) = self.ring.pop() else { break };
            self.batch[self.len] = d;
            self.len += 1;
        }
        if self.len > 0 {
            self.ring.release();
        }
    }

    /// While idle, now and then: has the interface gone (the kernel unbinds
    /// the socket and leaves `ENETDOWN` in its error)?
    fn check_health(&mut self, now: Instant) {
        if now < self.next_health_check || self.fatal.is_some() {
            return;
        }
        self.next_health_check = now + HEALTH_CHECK;
        let mut err: libc::c_int = 0;
        let mut len = size_of::<libc::c_int>() as libc::socklen_t;
        // SAFETY: SO_ERROR writes one int.
        let r = unsafe {
            libc::getsockopt(self.fd, libc::SOL_SOCKET, libc::SO_ERROR, (&mut err as *mut libc::c_int).cast(), &mut len)
        };
        if r == 0 && err == libc::ENETDOWN {
            self.fatal =
                Some(DeviceError::Vanished { name: self.name.clone(), source: io::Error::from_raw_os_error(err) });
        }
    }
}

impl RxQueue for AfXdpRx {
    fn recv(&mut self, now: Instant) -> Option<(&[u8], RxMeta)> {
        if let Some(addr) = self.lent.take() {
            // Cannot fail: the fill ring has two slots for every receive
            // frame (one may still read as occupied; see the module docs).
            let pushed = self.fill.push(self.umem.frame_of(addr));
            debug_assert!(pushed, "fill ring full");
        }
        loop {
            if self.next == self.len {
                self.refill();
                self.take_batch();
                if self.len == 0 {
                    self.check_health(now);
                    return None;
                }
            }
            let d = self.batch[self.next];
            self.next += 1;
            let Some(ptr) = self.umem.slice(d.addr, d.len as usize) else {
                self.stats.rx_invalid += 1;
                if d.addr < self.umem.len as u64 {
                    self.fill.push(self.umem.frame_of(d.addr));
                }
                continue;
            };
            self.stats.rx_frames += 1;
            self.stats.rx_bytes += u64::from(d.len);
            // SAFETY: `slice` checked the range lies in the UMEM; the frame
            // is ours (taken off the RX ring, not on the fill ring) until the
            // next `recv`, which the borrow of `self` orders after this one.
            let frame = unsafe { std::slice::from_raw_parts(ptr, d.len as usize) };
            let (glued, verified) = self.glue(frame);
            if glued > 0 {
                // Copied out: the first frame goes back now too.
                self.fill.push(self.umem.frame_of(d.addr));
                let gro = self.gro.as_deref_mut().expect("glued with GRO on");
                self.stats.rx_gro_frames += 1;
                self.stats.rx_gro_segments += gro.segments() as u64;
                return Some(gro.finish());
            }
            self.lent = Some(d.addr);
            return Some((frame, RxMeta { csum_verified: verified, ..Default::default() }));
        }
    }
}

/// Transmit side of an [`AfXdpDevice`].
pub struct AfXdpTx {
    fd: RawFd,
    umem: FrameArea,
    ring: ProducerRing<libc::xdp_desc>,
    completion: ConsumerRing<u64>,
    /// UMEM offsets of TX frames not in flight.
    free: Vec<u64>,
    /// TX frames in all.
    frames: usize,
    batch: u32,
    /// The kernel pushed back with frames still on the ring: kick again on
    /// the next turn rather than after a sleep.
    retry: bool,
    stats: AfXdpStats,
    name: String,
    fatal: Option<DeviceError>,
    /// Software GSO's buffer (one super-segment), when on.
    gso: Option<Box<[u8]>>,
}

impl AfXdpTx {
    fn new(
        fd: RawFd,
        umem: FrameArea,
        ring: ProducerRing<libc::xdp_desc>,
        completion: ConsumerRing<u64>,
        free: Vec<u64>,
        batch: u32,
        name: &str,
    ) -> AfXdpTx {
        AfXdpTx {
            fd,
            umem,
            ring,
            completion,
            frames: free.len(),
            free,
            batch,
            retry: false,
            stats: AfXdpStats::default(),
            name: name.to_owned(),
            fatal: None,
            gso: None,
        }
    }

    /// Make sure `n` TX frames and ring slots are free, reclaiming and
    /// kicking as needed; false (counted in `tx_full`) when they are not.
    fn room_for(&mut self, n: usize) -> bool {
        if self.free.len() < n {
            self.reclaim();
            if self.free.len() < n {
                self.publish();
            }
        }
        if self.free.len() < n || (self.ring.free(n as u32) as usize) < n {
            self.stats.tx_full += 1;
            return false;
        }
        true
    }

    /// Put a written frame on the TX ring.
    fn queue(&mut self, addr: u64, len: usize) {
        let pushed = self.ring.push(libc::xdp_desc { addr, len: len as u32, options: 0 });
        debug_assert!(pushed, "the TX ring has a slot for every TX frame");
        self.stats.tx_frames += 1;
        self.stats.tx_bytes += len as u64;
        if self.ring.unsubmitted() >= self.batch {
            self.publish();
        }
    }

    /// Software GSO: the super-segment written into the device's buffer,
    /// then cut into wire segments, each straight into a free TX frame.
    fn send_super<F: FnOnce(&mut [u8])>(&mut self, len: usize, meta: TxMeta, fill: F) -> Result<(), TxFull> {
        let mss = usize::from(meta.gso_size);
        let hdr = usize::from(meta.hdr_len);
        let frame_size = self.umem.frame_size as usize;
        if len > soft_offload::MAX_FRAME || mss == 0 || hdr >= len || hdr + mss > frame_size {
            self.stats.tx_dropped += 1;
            return Ok(());
        }
        if !self.room_for((len - hdr).div_ceil(mss)) {
            return Err(TxFull);
        }
        let mut buf = self.gso.take().expect("GSO on");
        fill(&mut buf[..len]);
        let sup = &buf[..len];
        match soft_offload::segment_count(sup, &meta) {
            None => self.stats.tx_dropped += 1,
            Some(n) => {
                self.stats.tx_gso_super_segments += 1;
                for i in 0..n {
                    let seg_len = soft_offload::segment_len(sup, &meta, i);
                    let addr = self.free.pop().expect("room_for kept the frames");
                    let ptr = self.umem.slice(addr, seg_len).expect("a segment fits a TX frame");
                    // SAFETY: a free TX frame, as in `send`; `slice` checked the range.
                    let out = unsafe { std::slice::from_raw_parts_mut(ptr, seg_len) };
                    soft_offload::write_segment(sup, &meta, i, out);
                    self.queue(addr, seg_len);
                }
            }
        }
        self.gso = Some(buf);
        Ok(())
    }

    /// Take back the frames the kernel has sent.
    fn reclaim(&mut self) {
        let mut any = false;
        while let Some(addr) = self.completion.pop() {
            // The kernel never completes more than it was given; a bogus
            // completion must not grow the list past its frames.
            if self.free.len() < self.frames {
                self.free.push(self.umem.frame_of(addr));
            }
            any = true;
        }
        if any {
            self.completion.release();
        }
    }

    /// Publish what `send` wrote and kick the kernel until it has taken the
    /// ring's frames or pushes back.
    fn publish(&mut self) {
        if self.ring.unsubmitted() > 0 {
            self.ring.submit();
        }
        self.retry = false;
        // Copy mode sends a few dozen frames per kick and answers EAGAIN
        // while more wait; bound the kicks by what one burst can need.
        let mut kicks = self.ring.size() / 16 + 2;
        while self.ring.in_flight() > 0 && self.ring.needs_wakeup() && self.fatal.is_none() {
            if kicks == 0 {
                self.retry = true;
                break;
            }
            kicks -= 1;
            self.stats.tx_kicks += 1;
            // SAFETY: a zero-length send with no buffers: only a kick.
            let r = unsafe { libc::sendto(self.fd, std::ptr::null(), 0, libc::MSG_DONTWAIT, std::ptr::null(), 0) };
            if r >= 0 {
                // Copy mode: the ring is drained. Zero-copy: the driver is awake.
                break;
            }
            let e = errno();
            self.stats.last_errno = e;
            match e {
                libc::EINTR => {}
                // More frames than one kick sends, the device's queue full
                // (EAGAIN), or a frame it dropped (EBUSY): kick on.
                libc::EAGAIN | libc::EBUSY => {
                    self.stats.tx_kick_busy += 1;
                    self.reclaim();
                }
                // Out of socket buffers: the next turn tries again.
                libc::ENOBUFS => {
                    self.stats.tx_kick_busy += 1;
                    self.retry = true;
                    break;
                }
                libc::ENXIO => {
                    // The socket was unbound: its interface is gone.
                    self.fatal = Some(DeviceError::Vanished {
                        name: self.name.clone(),
                        source: io::Error::from_raw_os_error(e),
                    });
                    break;
                }
                // ENETDOWN (the link is down) and the like: the frames wait
                // for the next flush.
                _ => {
                    self.stats.tx_kick_errors += 1;
                    break;
                }
            }
        }
        self.reclaim();
    }
}

impl TxQueue for AfXdpTx {
    fn send<F: FnOnce(&mut [u8])>(&mut self, len: usize, meta: TxMeta, fill: F) -> Result<(), TxFull> {
        if meta.gso_type == GsoType::TcpV4 && self.gso.is_some() {
            return self.send_super(len, meta, fill);
        }
        if len == 0 || len > self.umem.frame_size as usize {
            self.stats.tx_dropped += 1;
            return Ok(());
        }
        if !self.room_for(1) {
            return Err(TxFull);
        }
        let Some(addr) = self.free.pop() else { return Err(TxFull) };
        let Some(ptr) = self.umem.slice(addr, len) else {
            // Cannot happen: TX frames are whole frames inside the UMEM.
            self.free.push(addr);
            self.stats.tx_dropped += 1;
            return Ok(());
        };
        // SAFETY: a free TX frame: not in any ring, so neither the kernel
        // nor another borrow touches it; `slice` checked the range.
        let frame = unsafe { std::slice::from_raw_parts_mut(ptr, len) };
        fill(frame);
        // A checksum left partial (GSO offered the offload): finish it here.
        if meta.csum_partial && !soft_offload::complete_checksum(frame, &meta) {
            self.free.push(addr);
            self.stats.tx_dropped += 1;
            return Ok(());
        }
        self.queue(addr, len);
        Ok(())
    }

    fn flush(&mut self) {
        if self.ring.unsubmitted() > 0 || self.ring.in_flight() > 0 {
            self.publish();
        }
    }
}

fn errno() -> i32 {
    io::Error::last_os_error().raw_os_error().unwrap_or(0)
}

/// Attach the program in `mode`, or when none was asked for, in the driver
/// if it has native XDP and generically otherwise.
fn attach(name: &str, ifindex: u32, queue: u32, mode: Option<XdpMode>) -> Result<XdpProgram, DeviceError> {
    match mode {
        Some(mode) => XdpProgram::attach(ifindex, queue, mode).map_err(|e| bpf_error(name, e)),
        None => match XdpProgram::attach(ifindex, queue, XdpMode::Driver) {
            Err(e)
                if e.step == BpfStep::Attach
                    && matches!(e.source.raw_os_error(), Some(libc::EOPNOTSUPP | libc::EINVAL)) =>
            {
                XdpProgram::attach(ifindex, queue, XdpMode::Generic).map_err(|e| bpf_error(name, e))
            }
            r => r.map_err(|e| bpf_error(name, e)),
        },
    }
}

fn bpf_error(name: &str, e: BpfError) -> DeviceError {
    let BpfError { step, source, verifier } = e;
    let errno = source.raw_os_error();
    if matches!(errno, Some(libc::EPERM | libc::EACCES)) && step != BpfStep::LoadProgram || errno == Some(libc::EPERM) {
        return DeviceError::NeedsCapability {
            action: "loading the XDP program",
            caps: "CAP_BPF and CAP_NET_ADMIN",
            source,
        };
    }
    if errno == Some(libc::ENOSYS) {
        return DeviceError::Unsupported {
            what: format!("this kernel has no bpf(2) system call ({source})"),
            hint: "use a kernel built with CONFIG_BPF_SYSCALL and CONFIG_XDP_SOCKETS, or af_packet:IFACE",
        };
    }
    match step {
        BpfStep::CreateMap => DeviceError::Unsupported {
            what: format!("this kernel cannot create an XSKMAP ({source})"),
            hint: "use a kernel built with CONFIG_XDP_SOCKETS (Linux 5.4 or later), or af_packet:IFACE",
        },
        BpfStep::LoadProgram => DeviceError::Unsupported {
            what: format!(
                "the kernel refused ustack's XDP program ({source}{})",
                verifier.map(|v| format!("; verifier: {v}")).unwrap_or_default()
            ),
            hint: "this kernel's XDP is too old or restricted: use Linux 5.9 or later, or af_packet:IFACE",
        },
        BpfStep::Attach => match errno {
            Some(libc::EBUSY | libc::EEXIST) => DeviceError::XdpBusy { name: name.to_owned() },
            Some(libc::EOPNOTSUPP | libc::EINVAL) => DeviceError::Unsupported {
                what: format!("the driver of {name} has no native XDP ({source})"),
                hint: "use mode=skb (generic XDP works on every interface)",
            },
            _ => DeviceError::Io { action: "attaching the XDP program (BPF_LINK_CREATE)", source },
        },
        BpfStep::InsertSocket => DeviceError::Io { action: "putting the socket in the XSKMAP", source },
    }
}

#[cfg(test)]
mod tests {
    use super::ring::fake::FakeRing;
    use super::*;
    use crate::DeviceSpec;

    fn config(spec: &str) -> Result<AfXdpConfig, DeviceError> {
        let spec: DeviceSpec = spec.parse().unwrap();
        let mut opts = Options::new(&spec);
        let c = AfXdpConfig::from_options(&mut opts)?;
        opts.finish()?;
        Ok(c)
    }

    #[test]
    fn options_parse_with_defaults() {
        assert_eq!(config("af_xdp:veth0").unwrap(), AfXdpConfig::default());
        let c = config("af_xdp:veth0,queue=3,mode=skb,copy,rx_ring=4096,tx_ring=512,frame=4096,batch=32,gso=on,gro=off")
            .unwrap();
        assert_eq!(
            c,
            AfXdpConfig {
                queue: 3,
                mode: Some(XdpMode::Generic),
                bind: BindMode::Copy,
                rx_ring: 4096,
                tx_ring: 512,
                frame_size: 4096,
                batch: 32,
                gso: true,
                gro: false,
            }
        );
        assert_eq!(config("af_xdp:e,mode=drv,zerocopy").unwrap().bind, BindMode::ZeroCopy);
    }

    #[test]
    fn bad_options_say_what_is_wrong() {
        for (spec, says) in [
            ("af_xdp:e,mode=fast", "mode=drv or mode=skb"),
            ("af_xdp:e,copy,zerocopy", "exclude each other"),
            ("af_xdp:e,rx_ring=1000", "power of two"),
            ("af_xdp:e,tx_ring=32", "64 to 16384"),
            ("af_xdp:e,frame=3000", "2048 or 4096"),
            ("af_xdp:e,batch=0", "1 to 1024"),
            ("af_xdp:e,ring=64", "no option ring"),
            ("af_xdp:e,gso=maybe", "gso=maybe: expected on or off"),
        ] {
            let err = config(spec).unwrap_err().to_string();
            assert!(err.contains(says), "{spec}: {err}");
        }
    }

    #[test]
    fn frame_slices_stay_inside_one_frame() {
        let mut mem = vec![0u8; 4 * 2048];
        let area = FrameArea { base: mem.as_mut_ptr(), len: mem.len(), frame_size: 2048 };
        assert!(area.slice(0, 2048).is_some());
        assert!(area.slice(256, 1792).is_some());
        assert!(area.slice(256, 1793).is_none(), "crosses into the next frame");
        assert!(area.slice(3 * 2048 + 100, 100).is_some());
        assert!(area.slice(4 * 2048, 1).is_none(), "past the UMEM");
        assert!(area.slice(u64::MAX - 10, 100).is_none(), "overflow");
        assert_eq!(area.frame_of(2048 + 256), 2048);
    }

    /// The queues over fake rings and a UMEM in ordinary memory: frames
    /// 0..4 receive, 4..8 transmit. No socket (fd -1): the kernel's side is
    /// played by the test through the rings.
    struct Fake {
        fill: FakeRing<u64>,
        rx_ring: FakeRing<libc::xdp_desc>,
        tx_ring: FakeRing<libc::xdp_desc>,
        comp: FakeRing<u64>,
        umem: Vec<u8>,
    }

    const FRAME: u32 = 2048;

    impl Fake {
        fn new() -> Fake {
            Fake {
                fill: FakeRing::new(4),
                rx_ring: FakeRing::new(4),
                tx_ring: FakeRing::new(4),
                comp: FakeRing::new(4),
                umem: vec![0; 8 * FRAME as usize],
            }
        }

        /// Queues over the fake rings; drop them before `self`.
        fn queues(&mut self) -> (AfXdpRx, AfXdpTx) {
            let area = FrameArea { base: self.umem.as_mut_ptr(), len: self.umem.len(), frame_size: FRAME };
            let mut rx = AfXdpRx::new(-1, area, self.rx_ring.consumer(), self.fill.producer(), 2, "fake0");
            for i in 0..4 {
                assert!(rx.fill.push(u64::from(i * FRAME)));
            }
            rx.fill.submit();
            let free = (4..8).map(|i| u64::from(i * FRAME)).collect();
            let tx = AfXdpTx::new(-1, area, self.tx_ring.producer(), self.comp.consumer(), free, 2, "fake0");
            (rx, tx)
        }

        /// The kernel receives `data` into the next fill-ring frame, after
        /// its headroom, and posts it on the RX ring.
        fn kernel_receive(&mut self, data: &[u8]) -> u64 {
            let frame = self.fill.kernel_consume().expect("a frame on the fill ring");
            let addr = frame + u64::from(XDP_PACKET_HEADROOM);
            self.umem[addr as usize..addr as usize + data.len()].copy_from_slice(data);
            assert!(self.rx_ring.kernel_produce(libc::xdp_desc { addr, len: data.len() as u32, options: 0 }));
            addr
        }
    }

    #[test]
    fn received_frames_are_lent_in_place_and_refilled_when_done() {
        let mut fake = Fake::new();
        let (mut rx, _tx) = fake.queues();
        let now = Instant::ZERO;
        assert!(rx.recv(now).is_none());
        let umem = fake.umem.as_ptr() as usize;
        let a = fake.kernel_receive(b"first");
        let b = fake.kernel_receive(b"second");
        let (frame, _) = rx.recv(now).unwrap();
        assert_eq!((frame, frame.as_ptr() as usize), (&b"first"[..], umem + a as usize), "read in place");
        assert_eq!(fake.fill.kernel_consume(), Some(2 * u64::from(FRAME)), "only the two untouched frames");
        assert_eq!(fake.fill.kernel_consume(), Some(3 * u64::from(FRAME)));
        assert_eq!(fake.fill.kernel_consume(), None, "the lent frames are not back yet");
        let (frame, _) = rx.recv(now).unwrap();
        assert_eq!((frame, frame.as_ptr() as usize), (&b"second"[..], umem + b as usize));
        assert!(rx.recv(now).is_none());
        // Done with both: back on the fill ring, as whole frames.
        assert_eq!(fake.fill.kernel_consume(), Some(0));
        assert_eq!(fake.fill.kernel_consume(), Some(u64::from(FRAME)));
        assert_eq!(rx.stats.rx_frames, 2);
        // A descriptor pointing outside the UMEM is dropped and counted.
        assert!(fake.rx_ring.kernel_produce(libc::xdp_desc { addr: 1 << 40, len: 60, options: 0 }));
        assert!(rx.recv(now).is_none());
        assert_eq!(rx.stats.rx_invalid, 1);
        drop(rx);
    }

    #[test]
    fn transmit_writes_into_the_umem_and_reclaims_completions() {
        let mut fake = Fake::new();
        let (_rx, mut tx) = fake.queues();
        for i in 0..4u8 {
            assert!(tx.send(60, TxMeta::default(), |b| b.fill(i)).is_ok());
        }
        // Every TX frame is in flight: refused without calling `fill`.
        assert!(tx.send(60, TxMeta::default(), |_| panic!("filled a frame it does not have")).is_err());
        assert_eq!(tx.stats.tx_full, 1);
        tx.flush();
        let sent: Vec<_> = std::iter::from_fn(|| fake.tx_ring.kernel_consume()).collect();
        assert_eq!(sent.len(), 4, "published on flush (and every `batch`)");
        for (i, d) in sent.iter().enumerate() {
            assert_eq!(d.len, 60);
            assert!(fake.umem[d.addr as usize..][..60].iter().all(|&x| x == i as u8), "frame {i} written in place");
        }
        // The kernel completes two; the next send takes one of them.
        assert!(fake.comp.kernel_produce(sent[0].addr) && fake.comp.kernel_produce(sent[1].addr));
        assert!(tx.send(100, TxMeta::default(), |b| b.fill(9)).is_ok());
        assert_eq!(tx.free.len(), 1);
        // Oversized or empty frames are dropped and counted, never sent.
        assert!(tx.send(FRAME as usize + 1, TxMeta::default(), |_| panic!()).is_ok());
        assert!(tx.send(0, TxMeta::default(), |_| panic!()).is_ok());
        assert_eq!(tx.stats.tx_dropped, 2);
        // A kick the kernel asks for goes out; on this fake socket it fails
        // and is counted, without looping.
        fake.tx_ring.set_need_wakeup(true);
        tx.flush();
        assert_eq!((tx.stats.tx_kicks, tx.stats.tx_kick_errors), (1, 1));
        drop(tx);
    }

    #[test]
    fn software_gso_cuts_a_super_segment_into_tx_frames() {
        use crate::soft_offload::tests::{super_segment, ACK_ONLY};
        let mut fake = Fake::new();
        let (_rx, mut tx) = fake.queues();
        tx.gso = Some(vec![0; soft_offload::MAX_FRAME].into_boxed_slice());
        let (sup, meta) = super_segment(500, 1448 * 2 + 10, ACK_ONLY);
        assert!(tx.send(sup.len(), meta, |b| b.copy_from_slice(&sup)).is_ok());
        tx.flush();
        let sent: Vec<_> = std::iter::from_fn(|| fake.tx_ring.kernel_consume()).collect();
        assert_eq!(sent.iter().map(|d| d.len).collect::<Vec<_>>(), [66 + 1448, 66 + 1448, 66 + 10]);
        let mut payload = Vec::new();
        for (i, d) in sent.iter().enumerate() {
            let f = &fake.umem[d.addr as usize..][..d.len as usize];
            assert!(soft_offload::parse(f).is_some(), "segment {i}: checksums complete");
            payload.extend_from_slice(&f[66..]);
        }
        assert_eq!(payload, sup[66..]);
        assert_eq!((tx.stats.tx_gso_super_segments, tx.stats.tx_frames), (1, 3));
        // Four TX frames, one free: a super-segment of three is refused whole,
        // before `fill`.
        assert!(tx.send(sup.len(), meta, |_| panic!("filled without room")).is_err());
        // An ordinary frame with a partial checksum is completed.
        let (small, mut meta) = super_segment(9, 100, ACK_ONLY);
        meta.gso_type = GsoType::None;
        assert!(tx.send(small.len(), meta, |b| b.copy_from_slice(&small)).is_ok());
        tx.flush();
        let d = fake.tx_ring.kernel_consume().unwrap();
        assert!(soft_offload::parse(&fake.umem[d.addr as usize..][..d.len as usize]).is_some());
        drop(tx);
    }

    #[test]
    fn software_gro_glues_a_batch_and_refills_its_frames() {
        use crate::soft_offload::tests::{super_segment, ACK_ONLY};
        let mut fake = Fake::new();
        let (mut rx, _tx) = fake.queues();
        rx.gro = Some(Box::new(Gro::new()));
        let mut segs = Vec::new();
        for i in 0..3u32 {
            let (mut f, meta) = super_segment(1448 * i, 1448, ACK_ONLY);
            soft_offload::complete_checksum(&mut f, &meta);
            segs.push(f);
        }
        for f in &segs {
            fake.kernel_receive(f);
        }
        // The batch is two descriptors (Fake's `batch`): the first two glue,
        // the third comes alone in the next batch, its checksums verified.
        let (frame, meta) = rx.recv(Instant::ZERO).unwrap();
        assert_eq!((frame.len(), meta.gso_type, meta.gso_size, meta.csum_verified), (66 + 2896, GsoType::TcpV4, 1448, true));
        assert_eq!(&frame[66..66 + 1448], &segs[0][66..]);
        assert_eq!(&frame[66 + 1448..], &segs[1][66..]);
        let (frame, meta) = rx.recv(Instant::ZERO).unwrap();
        assert_eq!((frame, meta.gso_type, meta.csum_verified), (&segs[2][..], GsoType::None, true));
        assert!(rx.recv(Instant::ZERO).is_none());
        assert_eq!((rx.stats.rx_gro_frames, rx.stats.rx_gro_segments, rx.stats.rx_frames), (1, 2, 3));
        // Every frame went back to the fill ring.
        let refilled: Vec<_> = std::iter::from_fn(|| fake.fill.kernel_consume()).collect();
        assert_eq!(refilled.len(), 4, "{refilled:?}");
        drop(rx);
    }

    /// Software GSO and GRO allocate nothing per segment: 200 super-segments
    /// cut into three frames each, and 200 pairs of segments glued, once
    /// the buffers exist (made when the device opens).
    #[test]
    fn software_gso_and_gro_allocate_nothing_per_segment() {
        use crate::soft_offload::tests::{allocations_during, super_segment, ACK_ONLY};
        let mut fake = Fake::new();
        let (mut rx, mut tx) = fake.queues();
        tx.gso = Some(vec![0; soft_offload::MAX_FRAME].into_boxed_slice());
        rx.gro = Some(Box::new(Gro::new()));
        let (sup, meta) = super_segment(500, 1448 * 2 + 10, ACK_ONLY);
        let pair: Vec<Vec<u8>> = (0..2u32)
            .map(|i| {
                let (mut f, meta) = super_segment(1448 * i, 1448, ACK_ONLY);
                soft_offload::complete_checksum(&mut f, &meta);
                f
            })
            .collect();
        let mut glued = 0;
        let allocs = allocations_during(|| {
            for _ in 0..200 {
                tx.send(sup.len(), meta, |b| b.copy_from_slice(&sup)).unwrap();
                tx.flush();
                while let Some(d) = fake.tx_ring.kernel_consume() {
                    assert!(fake.comp.kernel_produce(d.addr));
                }
                for f in &pair {
                    fake.kernel_receive(f);
                }
                while let Some((_, m)) = rx.recv(Instant::ZERO) {
                    glued += usize::from(m.gso_type == GsoType::TcpV4);
                }
            }
        });
        assert_eq!((tx.stats.tx_gso_super_segments, tx.stats.tx_frames, glued), (200, 600, 200));
        assert_eq!(allocs, 0, "allocations in 200 rounds of GSO and GRO");
        assert_eq!(allocations_during(|| drop(std::hint::black_box(vec![0u8; 64]))), 1, "the counter counts");
        drop((rx, tx));
    }

    #[test]
    fn a_missing_interface_is_one_line() {
        let err = AfXdpDevice::open("ustnosuch0", AfXdpConfig::default()).unwrap_err();
        assert!(matches!(err, DeviceError::NoSuchInterface { .. }), "{err}");
    }
}
