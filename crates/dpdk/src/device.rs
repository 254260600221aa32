//! [`DpdkDevice`]: one port of a DPDK poll-mode driver, one queue pair.

use std::ffi::CString;
use std::os::fd::RawFd;
use std::os::raw::{c_char, c_int};
use std::sync::atomic::{AtomicBool, Ordering};

use ustack_core::phy::{Device, DeviceCaps, RxMeta, RxQueue, TxFull, TxMeta, TxQueue};
use ustack_core::time::Instant;

use crate::ffi::{self, RteMbuf, RteMempool, RxDesc};
use crate::{finish_checksum, DpdkConfig, DpdkError};

/// Frames taken from the port per receive call.
pub const BURST: usize = 32;
/// Frames queued for transmission before a flush is forced.
const TX_QUEUE: usize = 64;

/// DPDK's environment starts once per process.
static EAL_STARTED: AtomicBool = AtomicBool::new(false);

/// Mbufs owned in a fixed array: `[head, len)` are live and go back to
/// their pool when the batch is cleared or dropped.
struct Batch<const N: usize> {
    bufs: [*mut RteMbuf; N],
    head: usize,
    len: usize,
}

impl<const N: usize> Batch<N> {
    fn new() -> Self {
        Batch { bufs: [std::ptr::null_mut(); N], head: 0, len: 0 }
    }

    fn clear(&mut self) {
        let live = self.len - self.head;
        if live > 0 {
            // SAFETY: the live entries are mbufs this batch owns; they are
            // forgotten here as they are freed.
            unsafe { ffi::ustack_dpdk_free(self.bufs[self.head..].as_mut_ptr(), live as u32) };
        }
        self.head = 0;
        self.len = 0;
    }
}

impl<const N: usize> Drop for Batch<N> {
    fn drop(&mut self) {
        self.clear();
    }
}

/// One mbuf, freed when dropped: the received frame the stack holds.
struct Mbuf(*mut RteMbuf);

impl Drop for Mbuf {
    fn drop(&mut self) {
        // SAFETY: we own the mbuf and nothing refers to it after this.
        unsafe { ffi::ustack_dpdk_free(&mut self.0, 1) };
    }
}

/// The device's own counters (the port's are in `DpdkDevice::port_stats`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct DpdkStats {
    /// Frames handed to the stack.
    pub rx_frames: u64,
    /// Their bytes.
    pub rx_bytes: u64,
    /// Frames in more than one mbuf (larger than the pool's buffers), dropped.
    pub rx_dropped_segmented: u64,
    /// Frames the port took for transmission.
    pub tx_frames: u64,
    /// Their bytes.
    pub tx_bytes: u64,
    /// Sends refused because the transmit queue stayed full.
    pub tx_full: u64,
    /// Sends refused because the pool had no free mbuf.
    pub tx_no_mbuf: u64,
    /// Frames longer than a pool buffer, dropped.
    pub tx_dropped_oversize: u64,
}

/// Receive queue of a [`DpdkDevice`].
pub struct DpdkRx {
    port: u16,
    rx_csum: bool,
    burst: Batch<BURST>,
    descs: [RxDesc; BURST],
    /// The frame lent to the stack by the last `recv`.
    held: Option<Mbuf>,
    stats: DpdkStats,
}

impl RxQueue for DpdkRx {
    fn recv(&mut self, _now: Instant) -> Option<(&[u8], RxMeta)> {
        self.held = None;
        let mut refilled = false;
        loop {
            if self.burst.head == self.burst.len {
                // One burst per call at most, so a flood of unusable frames
                // cannot hold the loop here.
                if refilled {
                    return None;
                }
                refilled = true;
                self.burst.head = 0;
                // SAFETY: both arrays have room for BURST entries; the mbufs
                // written are ours from here on.
                self.burst.len = usize::from(unsafe {
                    ffi::ustack_dpdk_rx_burst(
                        self.port,
                        self.burst.bufs.as_mut_ptr(),
                        self.descs.as_mut_ptr(),
                        BURST as u16,
                    )
                });
                if self.burst.len == 0 {
                    return None;
                }
            }
            let i = self.burst.head;
            self.burst.head += 1;
            let mbuf = Mbuf(self.burst.bufs[i]);
            let d = self.descs[i];
            if d.flags & ffi::RX_SEGMENTED != 0 {
                self.stats.rx_dropped_segmented += 1;
                continue;
            }
            self.stats.rx_frames += 1;
            self.stats.rx_bytes += u64::from(d.len);
            self.held = Some(mbuf);
            // SAFETY: the first segment's data, `len` bytes, lives in the
            // mbuf now in `held`, which is freed only by the next call (or
            // the queue's drop), both needing `&mut self`.
            let frame = unsafe { std::slice::from_raw_parts(d.data, d.len as usize) };
            let meta = RxMeta { csum_verified: self.rx_csum && d.flags & ffi::RX_CSUM_GOOD != 0, ..Default::default() };
            return Some((frame, meta));
        }
    }
}

/// Transmit queue of a [`DpdkDevice`].
pub struct DpdkTx {
    port: u16,
    pool: *mut RteMempool,
    /// Bytes one mbuf holds.
    room: usize,
    tx_csum: bool,
    queue: Batch<TX_QUEUE>,
    lens: [u16; TX_QUEUE],
    stats: DpdkStats,
}

impl TxQueue for DpdkTx {
    fn send<F: FnOnce(&mut [u8])>(&mut self, len: usize, meta: TxMeta, fill: F) -> Result<(), TxFull> {
        if len > self.room {
            self.stats.tx_dropped_oversize += 1;
            return Ok(());
        }
        if self.queue.len == TX_QUEUE {
            self.flush();
            if self.queue.len == TX_QUEUE {
                self.stats.tx_full += 1;
                return Err(TxFull);
            }
        }
        let mut data: *mut u8 = std::ptr::null_mut();
        // SAFETY: the pool is alive while the device is; `len` fits one
        // mbuf (checked above), so the data pointer covers `len` bytes.
        let m = unsafe { ffi::ustack_dpdk_tx_alloc(self.pool, len as u16, &mut data) };
        if m.is_null() {
            self.stats.tx_no_mbuf += 1;
            return Err(TxFull);
        }
        // Owned from here: queued below, before anything can fail.
        let slot = self.queue.len;
        self.queue.bufs[slot] = m;
        self.lens[slot] = len as u16;
        self.queue.len += 1;
        // SAFETY: `data` points at `len` writable bytes of the mbuf, which
        // nothing else reads until it is transmitted.
        let frame = unsafe { std::slice::from_raw_parts_mut(data, len) };
        fill(frame);
        if meta.csum_partial {
            let start = usize::from(meta.csum_start);
            let tcp = meta.csum_offset == 16;
            let ipv6 = frame.get(12..14) == Some(&[0x86, 0xdd]);
            if self.tx_csum && (tcp || meta.csum_offset == 6) && (14..len).contains(&start) {
                // SAFETY: `m` is the mbuf just queued, not yet handed over.
                unsafe { ffi::ustack_dpdk_tx_csum(m, 14, meta.csum_start - 14, c_int::from(ipv6), c_int::from(tcp)) };
            } else {
                finish_checksum(frame, start, usize::from(meta.csum_offset));
            }
        }
        Ok(())
    }

    fn flush(&mut self) {
        let n = self.queue.len;
        if n == 0 {
            return;
        }
        // SAFETY: the first `n` entries are mbufs we own; the port takes
        // the first `sent` of them.
        let sent = usize::from(unsafe { ffi::ustack_dpdk_tx_burst(self.port, self.queue.bufs.as_mut_ptr(), n as u16) });
        self.stats.tx_frames += sent as u64;
        self.stats.tx_bytes += self.lens[..sent].iter().map(|&l| u64::from(l)).sum::<u64>();
        // What the port did not take waits for the next flush.
        self.queue.bufs.copy_within(sent..n, 0);
        self.lens.copy_within(sent..n, 0);
        self.queue.len = n - sent;
    }
}

/// One DPDK port with one receive and one transmit queue, on its own mbuf
/// pool. Opening it starts DPDK's environment (once per process); dropping
/// it closes the port and ends the environment.
pub struct DpdkDevice {
    name: String,
    port: u16,
    pool: *mut RteMempool,
    info: ffi::PortInfo,
    driver: String,
    // Boxed: their burst arrays would make every device enum as large.
    rx: Box<DpdkRx>,
    tx: Box<DpdkTx>,
    /// The EAL's runtime directory, removed after cleanup.
    runtime_dir: Option<std::path::PathBuf>,
}

// SAFETY: the device's pointers (pool, mbufs) are owned by it alone, and its
// queues are used by one thread at a time; DPDK's ethdev and mempool calls
// work from any thread (a thread outside the EAL's lcores just uses the
// pool without a per-core cache).
unsafe impl Send for DpdkDevice {}

/// Ends the EAL (and removes its runtime directory) unless disarmed.
struct EalGuard(Option<std::path::PathBuf>);

impl EalGuard {
    /// Keep the EAL running: the device ends it when dropped.
    fn disarm(mut self) -> Option<std::path::PathBuf> {
        let dir = self.0.take();
        std::mem::forget(self);
        dir
    }
}

impl Drop for EalGuard {
    fn drop(&mut self) {
        // SAFETY: the EAL was started and nothing of it is used after this.
        unsafe { ffi::ustack_dpdk_eal_cleanup() };
        if let Some(dir) = self.0.take() {
            let _ = std::fs::remove_dir_all(dir);
        }
    }
}

impl DpdkDevice {
    /// Start DPDK's environment with `config`'s arguments, find the port it
    /// names and start one queue pair on it.
    pub fn open(config: &DpdkConfig) -> Result<DpdkDevice, DpdkError> {
        if EAL_STARTED.swap(true, Ordering::SeqCst) {
            return Err(DpdkError::AlreadyStarted);
        }
        // The EAL pins the calling thread to its lcore's CPU: the first CPU
        // this thread may use, and the thread's own set back afterwards.
        // SAFETY: a zeroed cpu_set_t is a valid empty set.
        let mut cpus: libc::cpu_set_t = unsafe { std::mem::zeroed() };
        // SAFETY: `cpus` is a valid cpu_set_t of the size given.
        let have_cpus = unsafe { libc::sched_getaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &mut cpus) } == 0;
        let cpu = (0..libc::CPU_SETSIZE as usize)
            // SAFETY: `i` is below CPU_SETSIZE.
            .find(|&i| have_cpus && unsafe { libc::CPU_ISSET(i, &cpus) })
            .unwrap_or(0);
        let prefix = format!("ustack-{}", std::process::id());
        let args = config.eal_args(cpu, &prefix);
        let shown = args[1..].join(" ");
        let eal_error = |reason: String| DpdkError::Eal { args: shown.clone(), reason };
        // The EAL may keep pointers into argv: leaked, once per process.
        let mut argv: Vec<*mut c_char> = Vec::with_capacity(args.len() + 1);
        for a in &args {
            let c = CString::new(a.as_str()).map_err(|_| eal_error(format!("argument {a:?} holds a NUL byte")))?;
            argv.push(c.into_raw());
        }
        let argc = argv.len() as c_int;
        argv.push(std::ptr::null_mut());
        let argv = Box::leak(argv.into_boxed_slice());
        // SAFETY: argv is argc NUL-terminated strings and a null, alive forever.
        let r = unsafe { ffi::ustack_dpdk_eal_init(argc, argv.as_mut_ptr()) };
        if have_cpus {
            // SAFETY: restoring the set read above.
            unsafe { libc::sched_setaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &cpus) };
        }
        // SAFETY: the EAL's own string (empty before it made the
        // directory), copied at once.
        let dir = unsafe { std::ffi::CStr::from_ptr(ffi::ustack_dpdk_runtime_dir()) }.to_string_lossy().into_owned();
        // Only a directory of our own naming is ever removed.
        let dir = dir.ends_with(&prefix).then(|| std::path::PathBuf::from(dir));
        if r < 0 {
            if let Some(dir) = dir {
                let _ = std::fs::remove_dir_all(dir);
            }
            return Err(eal_error(ffi::strerror(-r)));
        }
        let guard = EalGuard(dir);

        let name = config.device.clone();
        let cname = CString::new(name.as_str()).map_err(|_| DpdkError::NoPort { name: name.clone(), ports: vec![] })?;
        // SAFETY: a NUL-terminated name.
        let port = unsafe { ffi::ustack_dpdk_port_by_name(cname.as_ptr()) };
        let Ok(port) = u16::try_from(port) else {
            return Err(DpdkError::NoPort { name, ports: port_names() });
        };
        let setup = |reason: String| DpdkError::Setup { name: name.clone(), reason };
        let pool_name = CString::new(format!("ustack_pool_{port}")).expect("no NUL");
        // SAFETY: a NUL-terminated name; the EAL is up.
        let pool = unsafe { ffi::ustack_dpdk_pool_create(pool_name.as_ptr(), config.mbufs, c_int::from(port)) };
        if pool.is_null() {
            // SAFETY: reads the calling thread's rte_errno.
            let err = unsafe { ffi::ustack_dpdk_errno() };
            return Err(setup(format!("creating a pool of {} mbufs: {}", config.mbufs, ffi::strerror(err))));
        }
        let mut info = std::mem::MaybeUninit::<ffi::PortInfo>::zeroed();
        let mut err = [0 as c_char; 256];
        // SAFETY: `info` and `err` are writable for their sizes; the pool is alive.
        let r = unsafe {
            ffi::ustack_dpdk_port_start(
                port,
                pool,
                config.rxd,
                config.txd,
                c_int::from(config.promisc),
                1,
                info.as_mut_ptr(),
                err.as_mut_ptr(),
                err.len(),
            )
        };
        if r != 0 {
            // SAFETY: the port may be half set up; closing it is allowed then.
            unsafe {
                ffi::ustack_dpdk_port_close(port);
                ffi::ustack_dpdk_pool_free(pool);
            }
            return Err(setup(ffi::c_buf(&err)));
        }
        // SAFETY: port_start filled it (it zeroes it first).
        let info = unsafe { info.assume_init() };
        // SAFETY: the pool is alive.
        let room = unsafe { ffi::ustack_dpdk_pool_room(pool) } as usize;
        let driver = ffi::c_buf(&info.driver);
        let stats = DpdkStats::default();
        let rx = Box::new(DpdkRx {
            port,
            rx_csum: info.rx_csum != 0,
            burst: Batch::new(),
            descs: [RxDesc::EMPTY; BURST],
            held: None,
            stats,
        });
        let tx = Box::new(DpdkTx {
            port,
            pool,
            room: room.min(usize::from(u16::MAX)),
            tx_csum: info.tx_csum != 0,
            queue: Batch::new(),
            lens: [0; TX_QUEUE],
            stats,
        });
        let runtime_dir = guard.disarm();
        Ok(DpdkDevice { name, port, pool, info, driver, rx, tx, runtime_dir })
    }

    /// The port's name as given (`net_tap0`, a PCI address).
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The driver behind the port (`net_tap`, …).
    pub fn driver(&self) -> &str {
        &self.driver
    }

    /// The port's own MAC address.
    pub fn port_mac(&self) -> [u8; 6] {
        self.info.mac
    }

    /// The descriptor that becomes readable when frames arrive, where the
    /// driver's receive interrupt is a plain level-triggered descriptor
    /// (`net_tap`: the TAP itself); `None` otherwise, and the loop polls.
    pub fn wait_fd(&self) -> Option<RawFd> {
        (self.driver == "net_tap" && self.info.intr_fd >= 0).then_some(self.info.intr_fd)
    }

    /// The device's counters, receive and transmit sides together.
    pub fn stats(&self) -> DpdkStats {
        let (r, t) = (&self.rx.stats, &self.tx.stats);
        DpdkStats {
            rx_frames: r.rx_frames,
            rx_bytes: r.rx_bytes,
            rx_dropped_segmented: r.rx_dropped_segmented,
            tx_frames: t.tx_frames,
            tx_bytes: t.tx_bytes,
            tx_full: t.tx_full,
            tx_no_mbuf: t.tx_no_mbuf,
            tx_dropped_oversize: t.tx_dropped_oversize,
        }
    }

    /// The port's counters as DPDK keeps them, by name: frames the port
    /// missed for want of room (`port_imissed`), receive and transmit
    /// errors, receive failures for want of mbufs.
    pub fn port_stats(&self) -> Vec<(&'static str, u64)> {
        let mut s = ffi::PortStats::default();
        // SAFETY: `s` is writable; the port is started.
        if unsafe { ffi::ustack_dpdk_port_stats(self.port, &mut s) } != 0 {
            return Vec::new();
        }
        vec![
            ("port_ipackets", s.ipackets),
            ("port_opackets", s.opackets),
            ("port_imissed", s.imissed),
            ("port_ierrors", s.ierrors),
            ("port_oerrors", s.oerrors),
            ("port_rx_nombuf", s.rx_nombuf),
        ]
    }

    /// Transmit queue entries waiting for the port.
    pub fn tx_queued(&self) -> usize {
        self.tx.queue.len
    }
}

/// The names of the ports the EAL has (the first 32).
fn port_names() -> Vec<String> {
    let mut names = Vec::new();
    let mut from = 0u32;
    while names.len() < 32 {
        // SAFETY: any `from` is accepted; -1 ends the ports.
        let Ok(port) = u16::try_from(unsafe { ffi::ustack_dpdk_next_port(from) }) else { break };
        let mut buf = [0 as c_char; 64];
        // SAFETY: `buf` is writable for its length; `port` is a valid port.
        if unsafe { ffi::ustack_dpdk_port_name(port, buf.as_mut_ptr(), buf.len()) } == 0 {
            names.push(ffi::c_buf(&buf));
        }
        from = u32::from(port) + 1;
    }
    names
}

impl Device for DpdkDevice {
    type Rx<'a> = &'a mut DpdkRx;
    type Tx<'a> = &'a mut DpdkTx;

    fn queues(&mut self) -> (&mut DpdkRx, &mut DpdkTx) {
        (&mut *self.rx, &mut *self.tx)
    }

    fn caps(&self) -> DeviceCaps {
        let room_mtu = self.tx.room.saturating_sub(18);
        DeviceCaps {
            mtu: usize::from(self.info.mtu).min(room_mtu),
            rx_checksum: self.rx.rx_csum,
            tx_checksum: self.tx.tx_csum,
            ..Default::default()
        }
    }
}

impl Drop for DpdkDevice {
    fn drop(&mut self) {
        // Every mbuf back to the pool before the port and the pool go.
        self.rx.held = None;
        self.rx.burst.clear();
        self.tx.queue.clear();
        // SAFETY: nothing refers to the port or the pool after this.
        unsafe {
            ffi::ustack_dpdk_port_close(self.port);
            ffi::ustack_dpdk_pool_free(self.pool);
        }
        drop(EalGuard(self.runtime_dir.take()));
    }
}
