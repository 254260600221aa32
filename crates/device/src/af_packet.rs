//! An AF_PACKET socket with mmap'd rings: what libpcap uses underneath,
//! done the fast way (`--device af_packet:IFACE[,options]`).
//!
//! * **Receive**: a ring shared with the kernel, read in place:
//!   [`RxQueue::recv`] lends each frame straight from the ring and gives its
//!   block back (`TP_STATUS_KERNEL`) on the call after its last frame, when
//!   the stack is done with it. No system call and no copy per frame. Two
//!   layouts ([`RingVersion`]): `TPACKET_V3` packs frames into blocks the
//!   kernel hands over (`TP_STATUS_USER`) when full or when the block timeout
//!   passes, a wake-up per block; `TPACKET_V2` (the default) hands over each
//!   68 KiB slot as soon as its frame is written, so nothing waits for a
//!   timer.
//! * **Transmit**: a `PACKET_TX_RING` of fixed slots, on a second socket
//!   bound to the interface for sending only (protocol 0) that no thread
//!   sleeps on: freeing each sent frame wakes its socket's waiters
//!   (`sock_def_write_space`), which on the receiving socket took the wait
//!   queue's lock once per frame. `send` writes the frame
//!   into the next free slot and marks it `TP_STATUS_SEND_REQUEST`; `flush`
//!   (or a `send` that has queued [`AfPacketConfig::burst`] frames) kicks the
//!   kernel with one `sendto`, which sends every requested slot. With
//!   `PACKET_QDISC_BYPASS` the frames go straight to the driver. Each slot
//!   starts with a `virtio_net_hdr` whose `hdr_len` covers the whole frame, so
//!   the kernel copies the frame into its buffer instead of pointing at the
//!   slot: a slot we reuse can never change a frame a kernel peer still
//!   holds (veth hands our buffer to the peer's socket otherwise).
//! * **Offloads** through the virtio-net header ([`crate::vnet`]) in front of
//!   every frame, both ways: a kernel sender on a veth leaves TCP/UDP
//!   checksums partial (`CHECKSUM_PARTIAL`) and its TSO super-segments whole
//!   (up to 64 KiB); both arrive marked in [`RxMeta`] and the stack takes them
//!   as they are. On transmit the stack leaves checksums partial and, with
//!   `tso=on`, hands over TCP super-segments the kernel cuts (or a kernel
//!   peer takes whole).
//! * **Our own frames** are not looped back (`PACKET_IGNORE_OUTGOING`).
//! * **Addressing**: the stack has its own MAC, so the interface is put in
//!   promiscuous mode through a packet-socket membership, which the kernel
//!   drops with the socket (`promisc=off` to keep it out, when the stack
//!   runs with the interface's own MAC).
//! * **Fan-out** (`fanout=ID`): sockets that name the same group on one
//!   interface share its traffic by flow hash, one per core.
//! * **Failures**: the interface deleted under the stack (`ip link del`)
//!   ends it through [`Waitable::failure`] with [`DeviceError::Vanished`].
//!
//! Every drop has a counter: frames the kernel could not fit in the ring
//! (`rx_kernel_drops`, from `PACKET_STATISTICS`), frames longer than a block
//! (`rx_truncated`), frames tagged for a VLAN (`rx_vlan`), oversized sends
//! (`tx_oversize`).

use std::cell::{Cell, OnceCell};
use std::ffi::CString;
use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::ptr::NonNull;
use std::sync::atomic::{AtomicU32, Ordering};

use ustack_core::phy::{Device, DeviceCaps, GsoType, RxMeta, RxQueue, TxFull, TxMeta, TxQueue};
use ustack_core::time::Instant;

use crate::vnet::{self, VNET_HDR_LEN};
use crate::{DeviceError, Options, Waitable};

/// The options of `af_packet:IFACE[,options]`, for `--help` and errors.
pub const SPEC_FORM: &str = "af_packet:IFACE[,blocks=N][,block_size=BYTES][,block_timeout=MS]\
[,tx_frames=N][,burst=N][,tso=on|off][,promisc=on|off][,fanout=ID][,ring=v2|v3][,steer=ustack|kernel]";

/// Ring sizes and behaviour of an [`AfPacketDevice`]; each is a spec option
/// of the same name.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct AfPacketConfig {
    /// Receive blocks in the ring (`blocks`, default 64).
    pub blocks: usize,
    /// Bytes per receive block (`block_size`, default 256 KiB, a multiple of
    /// 4096). A frame must fit in one block: a 64 KiB super-packet from a
    /// kernel sender with TSO fits the default.
    pub block_size: usize,
    /// Milliseconds after which the kernel hands over a block that is not
    /// full (`block_timeout`, default 1, the least the kernel allows): the
    /// receive latency when traffic is light.
    pub block_timeout_ms: u32,
    /// Transmit slots (`tx_frames`, default 256).
    pub tx_frames: usize,
    /// Frames `send` queues before it kicks the kernel without waiting for
    /// `flush` (`burst`, default 64).
    pub burst: usize,
    /// Take TCP super-segments of up to 64 KiB for the kernel to cut
    /// (`tso`, default on): transmit slots are then 64 KiB each instead of
    /// one MTU.
    pub tso: bool,
    /// Put the interface in promiscuous mode while the socket is open
    /// (`promisc`, default on): the stack's MAC is its own, not the
    /// interface's.
    pub promisc: bool,
    /// Join fan-out group `ID` (hash by flow) to share the interface with
    /// other sockets in the group (`fanout`, default none).
    pub fanout: Option<u16>,
    /// With `fanout`: steer the group by ustack's Toeplitz hash with this
    /// key over this many sockets (`PACKET_FANOUT_CBPF`, see
    /// `crate::steer_bpf`) instead of the kernel's flow hash. Set by the
    /// sharded runtime, not by a spec option. Default none.
    pub fanout_steer: Option<(u32, [u8; ustack_core::rss::KEY_LEN])>,
    /// The receive ring's layout (`ring=v2|v3`, default v2): see [`RingVersion`].
    pub ring: RingVersion,
}

/// How the kernel hands received frames over. V2 is the default because a
/// V3 block waits for its timer whenever traffic is not heavy enough to fill
/// it, and TCP's ACK clock and any request/response make that the common
/// case: over a veth (05:23 UTC, loaded 2-core VM) ping RTT to the stack was
/// 1.7 ms on V3 and 62 µs on V2, and bulk TCP from the stack to a kernel
/// peer 1.6 Gbit/s on V3 (waiting for the peer's ACKs) and 9.5 on V2.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RingVersion {
    /// `TPACKET_V3`: frames packed into blocks, a block handed over when it
    /// is full or `block_timeout` has passed: one wake-up per block, so the
    /// least work per frame under load, but a lone frame waits for the
    /// block's timer (the kernel's jiffies: 1 to 4 ms here).
    V3,
    /// `TPACKET_V2`: fixed 68 KiB slots, each handed over as soon as it is
    /// written: no added latency, a wake-up per frame when idle (what
    /// libpcap's immediate mode does for the same reason). The ring's memory
    /// is `blocks × block_size`, cut into slots.
    V2,
}

impl Default for AfPacketConfig {
    fn default() -> Self {
        AfPacketConfig {
            blocks: 64,
            block_size: 256 * 1024,
            block_timeout_ms: 1,
            tx_frames: 256,
            burst: 64,
            tso: true,
            promisc: true,
            fanout: None,
            fanout_steer: None,
            ring: RingVersion::V2,
        }
    }
}

impl AfPacketConfig {
    /// Take this kind's options from a spec; the caller refuses the rest.
    pub fn from_options(opts: &mut Options<'_>) -> Result<AfPacketConfig, DeviceError> {
        let d = AfPacketConfig::default();
        let block_size = opts.number("block_size", d.block_size as u64, 4096..=1 << 26)? as usize;
        if !block_size.is_multiple_of(4096) {
            return Err(opts.error(format!("block_size={block_size}: use a multiple of 4096 bytes, like 262144")));
        }
        Ok(AfPacketConfig {
            blocks: opts.number("blocks", d.blocks as u64, 2..=4096)? as usize,
            block_size,
            block_timeout_ms: opts.number("block_timeout", u64::from(d.block_timeout_ms), 1..=1000)? as u32,
            tx_frames: opts.number("tx_frames", d.tx_frames as u64, 8..=65536)? as usize,
            burst: opts.number("burst", d.burst as u64, 1..=65536)? as usize,
            tso: opts.switch("tso", d.tso)?,
            promisc: opts.switch("promisc", d.promisc)?,
            fanout: match opts.take("fanout") {
                None => None,
                Some(v) => Some(v.parse::<u16>().map_err(|_| opts.error(format!("fanout={v}: expected a group id from 0 to 65535")))?),
            },
            ring: match opts.take("ring") {
                None | Some("v2") => RingVersion::V2,
                Some("v3") => RingVersion::V3,
                Some(v) => return Err(opts.error(format!("ring={v}: expected v3 or v2"))),
            },
            fanout_steer: None,
        })
    }
}

/// Counters of an [`AfPacketDevice`].
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct AfPacketStats {
    /// Frames handed to the stack.
    pub rx_frames: u64,
    /// Bytes handed to the stack.
    pub rx_bytes: u64,
    /// Blocks taken from the kernel (one wake-up each at most).
    pub rx_blocks: u64,
    /// Frames that arrived with a partial checksum (CHECKSUM_PARTIAL).
    pub rx_csum_partial: u64,
    /// Frames longer than a block can hold, dropped (raise `block_size`).
    pub rx_truncated: u64,
    /// Frames tagged for a VLAN, dropped (the stack has none).
    pub rx_vlan: u64,
    /// Super-segments of a kind the stack cannot take (UDP), dropped.
    pub rx_gso_unsupported: u64,
    /// Coalesced TCP super-segments handed over whole.
    pub rx_coalesced: u64,
    /// Frame headers pointing outside their block, dropped with the rest of
    /// the block (never seen from a sane kernel).
    pub rx_malformed: u64,
    /// Frames the kernel dropped because the ring was full
    /// (`PACKET_STATISTICS`).
    pub rx_kernel_drops: u64,
    /// Times the kernel found every block in use and stopped filling.
    pub rx_ring_frozen: u64,
    /// Frames queued for the kernel.
    pub tx_frames: u64,
    /// Bytes queued for the kernel.
    pub tx_bytes: u64,
    /// `sendto` kicks.
    pub tx_kicks: u64,
    /// `send` refused with [`TxFull`]: every slot still with the kernel.
    pub tx_full: u64,
    /// Kicks the kernel answered `EAGAIN`/`ENOBUFS`; the frames stay queued.
    pub tx_blocked: u64,
    /// Frames larger than a slot, dropped.
    pub tx_oversize: u64,
    /// Other `sendto` failures.
    pub tx_errors: u64,
    /// The last errno from a failed kick.
    pub last_errno: i32,
}

/// An interface's traffic through a receive ring and a transmit ring, each
/// on a packet socket of its own. Open with [`AfPacketDevice::open`].
pub struct AfPacketDevice {
    rx: AfPacketRx,
    tx: AfPacketTx,
    name: String,
    ifindex: i32,
    mtu: usize,
    config: AfPacketConfig,
    /// Kernel drop counters accumulate here (the kernel resets on read).
    kernel_drops: Cell<(u64, u64)>,
    /// When the socket's error was last looked at.
    last_check: Cell<Option<std::time::Instant>>,
    fatal: OnceCell<DeviceError>,
    /// Held for their `Drop`: unmapped after the rings are gone.
    _maps: [Mapping; 2],
    /// The receiving socket (the one to sleep on).
    fd: OwnedFd,
    /// The sending socket (see `open_with`).
    _tx_fd: OwnedFd,
}

/// The rings' shared memory, unmapped on drop (after the rings that point
/// into it, by field order).
struct Mapping {
    ptr: NonNull<u8>,
    len: usize,
}

impl Mapping {
    /// Map the ring set up on `fd`, `len` bytes.
    fn of(fd: &OwnedFd, len: usize) -> Result<Mapping, DeviceError> {
        // SAFETY: maps the socket's ring, as packet(7) describes; the result
        // is checked.
        let ptr = unsafe {
            libc::mmap(std::ptr::null_mut(), len, libc::PROT_READ | libc::PROT_WRITE, libc::MAP_SHARED | libc::MAP_POPULATE, fd.as_raw_fd(), 0)
        };
        if ptr == libc::MAP_FAILED {
            let source = io::Error::last_os_error();
            return Err(DeviceError::Io { action: "mapping the AF_PACKET rings", source });
        }
        Ok(Mapping { ptr: NonNull::new(ptr.cast()).expect("mmap returned NULL"), len })
    }
}

impl Drop for Mapping {
    fn drop(&mut self) {
        // SAFETY: the region came from mmap with this length, and nothing
        // points into it once the device (its only user) is dropped.
        unsafe { libc::munmap(self.ptr.as_ptr().cast(), self.len) };
    }
}

/// Largest TCP/IPv4 super-segment taken with `tso=on`: with its Ethernet
/// header it still fits the virtio-net header's 16-bit `hdr_len`, which must
/// cover the whole frame (see the module comment).
const TSO_MAX: usize = u16::MAX as usize - 14;
/// A `ring=v2` receive slot: a 64 KiB super-segment, its Ethernet and
/// virtio-net headers and the kernel's frame header, in whole pages.
const V2_SLOT: usize = 68 * 1024;

/// Where a transmit slot's fields are, per ring version: the status word,
/// the length, and the frame data (after the aligned frame header, the
/// kernel's `tp_hdrlen - sizeof(sockaddr_ll)`).
#[derive(Clone, Copy)]
struct SlotLayout {
    status: usize,
    len: usize,
    data: usize,
    v3: bool,
}

impl SlotLayout {
    const V3: SlotLayout = SlotLayout {
        status: std::mem::offset_of!(libc::tpacket3_hdr, tp_status),
        len: std::mem::offset_of!(libc::tpacket3_hdr, tp_len),
        data: (std::mem::size_of::<libc::tpacket3_hdr>() + 15) & !15,
        v3: true,
    };
    const V2: SlotLayout = SlotLayout {
        status: std::mem::offset_of!(libc::tpacket2_hdr, tp_status),
        len: std::mem::offset_of!(libc::tpacket2_hdr, tp_len),
        data: (std::mem::size_of::<libc::tpacket2_hdr>() + 15) & !15,
        v3: false,
    };
}
/// How often, at most, `failure` asks the socket for a pending error.
const CHECK_EVERY: std::time::Duration = std::time::Duration::from_millis(50);

impl AfPacketDevice {
    /// Open `ifname` in the calling thread's network namespace, with the
    /// default rings.
    pub fn open(ifname: &str) -> Result<AfPacketDevice, DeviceError> {
        AfPacketDevice::open_with(ifname, AfPacketConfig::default())
    }

    /// Open `ifname` with the rings `config` describes.
    pub fn open_with(ifname: &str, mut config: AfPacketConfig) -> Result<AfPacketDevice, DeviceError> {
        let name = ifname.to_owned();
        // Super-segments only where the interface itself takes them: with
        // TSO off (e.g. `ethtool -K IF tx off` on a veth), a super-segment
        // from a packet socket stalls the connection rather than being cut
        // in software (seen on this kernel), so we cut them ourselves then.
        if config.tso && interface_tso(ifname) == Some(false) {
            config.tso = false;
        }
        let cname = CString::new(ifname).map_err(|_| DeviceError::InvalidName { name: name.clone(), reason: "the name contains NUL" })?;
        if ifname.is_empty() || ifname.len() >= libc::IFNAMSIZ {
            return Err(DeviceError::InvalidName { name, reason: "the name is empty or longer than 15 bytes" });
        }
        // SAFETY: a NUL-terminated name.
        let ifindex = unsafe { libc::if_nametoindex(cname.as_ptr()) } as i32;
        if ifindex == 0 {
            return Err(DeviceError::NoSuchInterface { name });
        }
        let fd = packet_socket()?;
        let mtu = interface_mtu(&fd, &name)?;
        bring_up(&fd, &name)?;

        let v2 = config.ring == RingVersion::V2;
        let version = if v2 { libc::tpacket_versions::TPACKET_V2 } else { libc::tpacket_versions::TPACKET_V3 };
        // The transmit ring lives on a socket of its own that nobody polls.
        // The kernel wakes a socket's waiters as each frame sent from it is
        // freed (sock_wfree, sock_def_write_space), and the stack's thread
        // sleeps on the receiving socket: with one socket for both, every
        // frame sent took the wait queue's lock (4% of redis-server's samples
        // under the LD_PRELOAD library).
        let tx_fd = packet_socket()?;
        for fd in [&fd, &tx_fd] {
            setsockopt(fd, libc::PACKET_VERSION, version as libc::c_int, "selecting the ring version")?;
            setsockopt(fd, libc::PACKET_VNET_HDR, 1, "enabling the virtio-net header")?;
        }
        setsockopt(&tx_fd, libc::PACKET_QDISC_BYPASS, 1, "bypassing the qdisc")?;
        setsockopt(&fd, libc::PACKET_IGNORE_OUTGOING, 1, "ignoring our own frames")?;
        // A malformed slot is skipped instead of stopping the ring.
        setsockopt(&fd, libc::PACKET_LOSS, 1, "setting PACKET_LOSS")?;

        // V2: one slot per block, each holding a 64 KiB super-segment with
        // the headers before it; V3: blocks that hold frames of any size.
        let (rx_block, rx_blocks) = if v2 {
            (V2_SLOT, (config.blocks * config.block_size / V2_SLOT).max(8))
        } else {
            (config.block_size, config.blocks)
        };
        let rx_req = libc::tpacket_req3 {
            tp_block_size: rx_block as u32,
            tp_block_nr: rx_blocks as u32,
            // V3 packs frames of any size; this only has to pass the checks.
            tp_frame_size: if v2 { V2_SLOT as u32 } else { 2048 },
            tp_frame_nr: if v2 { rx_blocks as u32 } else { (rx_block / 2048 * rx_blocks) as u32 },
            tp_retire_blk_tov: if v2 { 0 } else { config.block_timeout_ms },
            tp_sizeof_priv: 0,
            tp_feature_req_word: 0,
        };
        set_ring(&fd, libc::PACKET_RX_RING, &rx_req, "setting up the receive ring")?;
        // A slot: header, virtio-net header, the largest frame (a TSO
        // super-segment, or the MTU with an Ethernet header and a VLAN tag),
        // rounded to the kernel's 16-byte alignment.
        let largest = if config.tso { (TSO_MAX + 14).max(mtu + 18) } else { mtu + 18 };
        let tx_layout = if v2 { SlotLayout::V2 } else { SlotLayout::V3 };
        let frame_size = (tx_layout.data + VNET_HDR_LEN + largest + 15) & !15;
        let tx_block = frame_size.max(4096).next_multiple_of(4096);
        let per_block = tx_block / frame_size;
        let tx_blocks = config.tx_frames.div_ceil(per_block);
        let tx_req = libc::tpacket_req3 {
            tp_block_size: tx_block as u32,
            tp_block_nr: tx_blocks as u32,
            tp_frame_size: frame_size as u32,
            tp_frame_nr: (tx_blocks * per_block) as u32,
            tp_retire_blk_tov: 0,
            tp_sizeof_priv: 0,
            tp_feature_req_word: 0,
        };
        set_ring(&tx_fd, libc::PACKET_TX_RING, &tx_req, "setting up the transmit ring")?;
        // The kernel charges each frame in flight to the send buffer; let a
        // whole ring be in flight.
        let sndbuf = (tx_blocks * tx_block * 2).min(i32::MAX as usize) as libc::c_int;
        if setsockopt_raw(&tx_fd, libc::SOL_SOCKET, libc::SO_SNDBUFFORCE, sndbuf).is_err() {
            let _ = setsockopt_raw(&tx_fd, libc::SOL_SOCKET, libc::SO_SNDBUF, sndbuf);
        }

        let rx_map = Mapping::of(&fd, rx_blocks * rx_block)?;
        let tx_map = Mapping::of(&tx_fd, tx_blocks * tx_block)?;

        // Receive every protocol; send only (protocol 0 takes no frames).
        bind(&fd, ifindex, libc::ETH_P_ALL as u16, &name)?;
        bind(&tx_fd, ifindex, 0, &name)?;
        if config.promisc {
            let mreq = libc::packet_mreq { mr_ifindex: ifindex, mr_type: libc::PACKET_MR_PROMISC as u16, mr_alen: 0, mr_address: [0; 8] };
            // SAFETY: a valid packet_mreq and its length.
            let r = unsafe {
                libc::setsockopt(
                    fd.as_raw_fd(),
                    libc::SOL_PACKET,
                    libc::PACKET_ADD_MEMBERSHIP,
                    (&mreq as *const libc::packet_mreq).cast(),
                    std::mem::size_of::<libc::packet_mreq>() as u32,
                )
            };
            if r < 0 {
                let source = io::Error::last_os_error();
                return Err(DeviceError::Io { action: "putting the interface in promiscuous mode", source });
            }
        }
        if let (Some(id), Some((queues, key))) = (config.fanout, config.fanout_steer) {
            let t = ustack_core::rss::Toeplitz::new(&key);
            crate::steer_bpf::join_fanout(&fd, id, &t, queues)
                .map_err(|source| DeviceError::Io { action: "joining the fan-out group (steered by ustack's hash)", source })?;
        } else if let Some(id) = config.fanout {
            let arg = libc::c_int::from(id) | ((libc::PACKET_FANOUT_HASH as libc::c_int) << 16);
            setsockopt(&fd, libc::PACKET_FANOUT, arg, "joining the fan-out group")?;
        }

        let rx = AfPacketRx {
            base: rx_map.ptr.as_ptr(),
            v2,
            block_size: rx_block,
            blocks: rx_blocks,
            cur: 0,
            held: false,
            left: 0,
            next: 0,
            stats: AfPacketStats::default(),
        };
        let tx = AfPacketTx {
            fd: tx_fd.as_raw_fd(),
            base: tx_map.ptr.as_ptr(),
            block_size: tx_block,
            per_block,
            frames: tx_blocks * per_block,
            frame_size,
            layout: tx_layout,
            head: 0,
            unkicked: 0,
            burst: config.burst,
            stats: AfPacketStats::default(),
            gone: false,
        };
        Ok(AfPacketDevice {
            rx,
            tx,
            name,
            ifindex,
            mtu,
            config,
            kernel_drops: Cell::new((0, 0)),
            last_check: Cell::new(None),
            fatal: OnceCell::new(),
            _maps: [rx_map, tx_map],
            fd,
            _tx_fd: tx_fd,
        })
    }

    /// The interface's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The rings' configuration.
    pub fn config(&self) -> AfPacketConfig {
        self.config
    }

    /// Counters so far (the kernel's ring drops as of the last look, which
    /// `device_stats` takes about once a second).
    pub fn stats(&self) -> AfPacketStats {
        let (rx, tx) = (&self.rx.stats, &self.tx.stats);
        let (drops, frozen) = self.kernel_drops.get();
        AfPacketStats {
            rx_kernel_drops: drops,
            rx_ring_frozen: frozen,
            tx_frames: tx.tx_frames,
            tx_bytes: tx.tx_bytes,
            tx_kicks: tx.tx_kicks,
            tx_full: tx.tx_full,
            tx_blocked: tx.tx_blocked,
            tx_oversize: tx.tx_oversize,
            tx_errors: tx.tx_errors,
            last_errno: tx.last_errno,
            ..*rx
        }
    }

    /// Read (and so reset) the kernel's counters into our running totals.
    fn take_kernel_stats(&self) {
        let mut st = libc::tpacket_stats_v3 { tp_packets: 0, tp_drops: 0, tp_freeze_q_cnt: 0 };
        let mut len = std::mem::size_of::<libc::tpacket_stats_v3>() as libc::socklen_t;
        // SAFETY: a buffer of the size the kernel is told.
        let r = unsafe {
            libc::getsockopt(self.fd.as_raw_fd(), libc::SOL_PACKET, libc::PACKET_STATISTICS, (&mut st as *mut libc::tpacket_stats_v3).cast(), &mut len)
        };
        if r == 0 {
            let (d, f) = self.kernel_drops.get();
            self.kernel_drops.set((d + u64::from(st.tp_drops), f + u64::from(st.tp_freeze_q_cnt)));
        }
    }

    /// Whether the interface we are bound to still exists.
    fn interface_exists(&self) -> bool {
        let mut buf = [0 as libc::c_char; libc::IFNAMSIZ];
        // SAFETY: a buffer of IFNAMSIZ bytes, as if_indextoname requires.
        !unsafe { libc::if_indextoname(self.ifindex as u32, buf.as_mut_ptr()) }.is_null()
    }

    fn vanished(&self, errno: i32) -> Option<&DeviceError> {
        if !self.interface_exists() {
            let _ = self.fatal.set(DeviceError::Vanished { name: self.name.clone(), source: io::Error::from_raw_os_error(errno) });
        }
        self.fatal.get()
    }
}

impl AsRawFd for AfPacketDevice {
    fn as_raw_fd(&self) -> RawFd {
        self.fd.as_raw_fd()
    }
}

impl Device for AfPacketDevice {
    type Rx<'a> = &'a mut AfPacketRx;
    type Tx<'a> = &'a mut AfPacketTx;

    fn queues(&mut self) -> (&mut AfPacketRx, &mut AfPacketTx) {
        (&mut self.rx, &mut self.tx)
    }

    /// The kernel completes partial checksums and cuts super-segments on
    /// transmit, vouches for checksums it verified, and hands over a kernel
    /// sender's super-segments whole.
    fn caps(&self) -> DeviceCaps {
        DeviceCaps {
            mtu: self.mtu,
            rx_checksum: true,
            tx_checksum: true,
            tso4_max: if self.config.tso { TSO_MAX } else { 0 },
            // The kernel cuts GSO_TCPV6 as it cuts TCPV4.
            tso6: self.config.tso,
            rx_coalesced: true,
        }
    }
}

impl Waitable for AfPacketDevice {
    fn wait_fd(&self) -> Option<RawFd> {
        Some(self.fd.as_raw_fd())
    }

    fn device_stats(&self) -> Vec<(&'static str, u64)> {
        self.take_kernel_stats();
        let s = self.stats();
        vec![
            ("rx_frames", s.rx_frames),
            ("rx_bytes", s.rx_bytes),
            ("rx_blocks", s.rx_blocks),
            ("rx_csum_partial", s.rx_csum_partial),
            ("rx_truncated", s.rx_truncated),
            ("rx_vlan", s.rx_vlan),
            ("rx_malformed", s.rx_malformed),
            ("rx_gso_unsupported", s.rx_gso_unsupported),
            ("rx_coalesced", s.rx_coalesced),
            ("rx_kernel_drops", s.rx_kernel_drops),
            ("rx_ring_frozen", s.rx_ring_frozen),
            ("tx_frames", s.tx_frames),
            ("tx_bytes", s.tx_bytes),
            ("tx_kicks", s.tx_kicks),
            ("tx_full", s.tx_full),
            ("tx_blocked", s.tx_blocked),
            ("tx_oversize", s.tx_oversize),
            ("tx_errors", s.tx_errors),
        ]
    }

    /// The ring itself never fails, so the socket is asked: the kernel
    /// reports `ENETDOWN` when the interface goes down or away (and poll(2)
    /// then wakes the loop), and a kick fails with `ENXIO` once it is gone.
    /// Down is not fatal (the stack waits for it to come back); gone is.
    fn failure(&self) -> Option<&DeviceError> {
        if let Some(f) = self.fatal.get() {
            return Some(f);
        }
        if self.tx.gone {
            return self.vanished(libc::ENXIO);
        }
        let now = std::time::Instant::now();
        if self.last_check.get().is_some_and(|t| now.duration_since(t) < CHECK_EVERY) {
            return None;
        }
        self.last_check.set(Some(now));
        let mut err: libc::c_int = 0;
        let mut len = std::mem::size_of::<libc::c_int>() as libc::socklen_t;
        // SAFETY: an int-sized buffer, as SO_ERROR needs.
        let r = unsafe { libc::getsockopt(self.fd.as_raw_fd(), libc::SOL_SOCKET, libc::SO_ERROR, (&mut err as *mut libc::c_int).cast(), &mut len) };
        if r == 0 && err != 0 {
            return self.vanished(err);
        }
        None
    }
}

/// The receive ring: blocks the kernel fills and hands over in turn.
pub struct AfPacketRx {
    base: *mut u8,
    /// `ring=v2`: each block is one frame slot, its status the frame's.
    v2: bool,
    block_size: usize,
    blocks: usize,
    /// The block to read (or being read).
    cur: usize,
    /// Block `cur` is ours: the kernel handed it over.
    held: bool,
    /// Frames not yet lent from the held block.
    left: u32,
    /// Offset of the next frame in the held block.
    next: usize,
    stats: AfPacketStats,
}

// SAFETY: the raw pointers point into the device's own mapping, which moves
// with the device; nothing else in this process touches it.
unsafe impl Send for AfPacketRx {}
// SAFETY: as above.
unsafe impl Send for AfPacketTx {}

impl AfPacketRx {
    fn block(&self, i: usize) -> *mut u8 {
        // SAFETY: i < blocks, inside the receive ring.
        unsafe { self.base.add(i * self.block_size) }
    }

    /// The status of block `i` (V3) or slot `i` (V2), read with acquire
    /// ordering so the frames the kernel wrote before handing it over are
    /// visible.
    fn block_status(&self, i: usize) -> &AtomicU32 {
        let at = if self.v2 {
            std::mem::offset_of!(libc::tpacket2_hdr, tp_status)
        } else {
            std::mem::offset_of!(libc::tpacket_block_desc, hdr)
                + std::mem::offset_of!(libc::tpacket_hdr_v1, block_status)
        };
        // SAFETY: the block descriptor (V3) or frame header (V2) starts each
        // block; its status is an aligned u32 the kernel also accesses
        // atomically.
        unsafe { AtomicU32::from_ptr(self.block(i).add(at).cast::<u32>()) }
    }

    /// The header of the frame at `at` in the held block: (offset of the
    /// next frame, of the data, snapshot length, wire length, status, VLAN
    /// TCI).
    fn frame_header(&self, at: usize) -> (usize, usize, usize, usize, u32, u32) {
        // SAFETY: the caller checked that a V3 header fits at `at`, which is
        // 16-byte aligned by the kernel (TPACKET_ALIGN); a V2 header is
        // smaller; the block is ours until released.
        unsafe {
            let p = self.block(self.cur).add(at);
            if self.v2 {
                let h = &*p.cast::<libc::tpacket2_hdr>();
                (0, usize::from(h.tp_mac), h.tp_snaplen as usize, h.tp_len as usize, h.tp_status, u32::from(h.tp_vlan_tci))
            } else {
                let h = &*p.cast::<libc::tpacket3_hdr>();
                let next = h.tp_next_offset as usize;
                (next, usize::from(h.tp_mac), h.tp_snaplen as usize, h.tp_len as usize, h.tp_status, h.hv1.tp_vlan_tci)
            }
        }
    }

    /// Give the held block back to the kernel and move to the next.
    fn release(&mut self) {
        self.block_status(self.cur).store(libc::TP_STATUS_KERNEL, Ordering::Release);
        self.cur = (self.cur + 1) % self.blocks;
        self.held = false;
    }
}

impl RxQueue for AfPacketRx {
    fn recv(&mut self, _now: Instant) -> Option<(&[u8], RxMeta)> {
        loop {
            if self.held && self.left == 0 {
                // The last frame lent from it is no longer borrowed.
                self.release();
            }
            if !self.held {
                if self.block_status(self.cur).load(Ordering::Acquire) & libc::TP_STATUS_USER == 0 {
                    return None;
                }
                self.held = true;
                if self.v2 {
                    (self.left, self.next) = (1, 0);
                } else {
                    let desc = self.block(self.cur).cast::<libc::tpacket_block_desc>();
                    // SAFETY: the kernel handed this block over; its header is ours to read.
                    let h = unsafe { &(*desc).hdr.bh1 };
                    (self.left, self.next) = (h.num_pkts, h.offset_to_first_pkt as usize);
                }
                self.stats.rx_blocks += 1;
                continue;
            }
            let at = self.next;
            if at + std::mem::size_of::<libc::tpacket3_hdr>() > self.block_size {
                self.stats.rx_malformed += u64::from(self.left);
                self.left = 0;
                continue;
            }
            let (next, mac, snap, len, status, vlan_tci) = self.frame_header(at);
            self.left -= 1;
            self.next = at + next;
            let start = at + mac;
            if start < at + VNET_HDR_LEN || start + snap > self.block_size {
                self.stats.rx_malformed += 1;
                continue;
            }
            if snap < len {
                self.stats.rx_truncated += 1;
                continue;
            }
            // A tag the kernel took off; priority tags (VLAN 0) are fine.
            if status & libc::TP_STATUS_VLAN_VALID != 0 && vlan_tci & 0x0fff != 0 {
                self.stats.rx_vlan += 1;
                continue;
            }
            // SAFETY: in bounds (checked above): the kernel writes the
            // virtio-net header just before the frame.
            let vnet = unsafe { &*self.block(self.cur).add(start - VNET_HDR_LEN).cast::<[u8; VNET_HDR_LEN]>() };
            let Some(mut meta) = vnet::rx_meta_to_stack(vnet) else {
                self.stats.rx_gso_unsupported += 1;
                continue;
            };
            meta.csum_verified |= status & libc::TP_STATUS_CSUM_VALID != 0;
            self.stats.rx_frames += 1;
            self.stats.rx_bytes += snap as u64;
            self.stats.rx_csum_partial += u64::from(meta.csum_partial);
            self.stats.rx_coalesced += u64::from(meta.gso_type != GsoType::None);
            // SAFETY: in bounds (checked above); the block stays ours, and
            // unchanged, until the next call releases it.
            let frame = unsafe { std::slice::from_raw_parts(self.block(self.cur).add(start), snap) };
            return Some((frame, meta));
        }
    }
}

/// The transmit ring: fixed slots the kernel sends when kicked.
pub struct AfPacketTx {
    fd: RawFd,
    base: *mut u8,
    block_size: usize,
    per_block: usize,
    frames: usize,
    frame_size: usize,
    layout: SlotLayout,
    /// The next slot to fill.
    head: usize,
    /// Slots requested since the last successful kick.
    unkicked: usize,
    burst: usize,
    stats: AfPacketStats,
    /// A kick found the interface gone (`ENXIO`, `ENODEV`, `ENETDOWN`).
    gone: bool,
}

impl AfPacketTx {
    fn slot(&self, i: usize) -> *mut u8 {
        // SAFETY: i < frames, inside the transmit ring.
        unsafe { self.base.add(i / self.per_block * self.block_size + i % self.per_block * self.frame_size) }
    }

    fn slot_status(&self, i: usize) -> &AtomicU32 {
        // SAFETY: each slot starts with an aligned frame header whose status
        // the kernel also accesses atomically.
        unsafe { AtomicU32::from_ptr(self.slot(i).add(self.layout.status).cast::<u32>()) }
    }

    /// Ask the kernel to send every requested slot: one system call.
    fn kick(&mut self) {
        if self.unkicked == 0 {
            return;
        }
        self.stats.tx_kicks += 1;
        // SAFETY: no buffer: the kernel reads the ring.
        let r = unsafe { libc::sendto(self.fd, std::ptr::null(), 0, libc::MSG_DONTWAIT, std::ptr::null(), 0) };
        if r >= 0 {
            self.unkicked = 0;
            return;
        }
        let e = io::Error::last_os_error().raw_os_error().unwrap_or(0);
        self.stats.last_errno = e;
        match e {
            // The slots stay requested; the next kick sends them.
            libc::EAGAIN | libc::ENOBUFS | libc::EINTR => self.stats.tx_blocked += 1,
            libc::ENXIO | libc::ENODEV | libc::ENETDOWN => {
                self.stats.tx_errors += 1;
                self.gone = true;
            }
            _ => {
                self.stats.tx_errors += 1;
                self.unkicked = 0;
            }
        }
    }
}

impl TxQueue for AfPacketTx {
    fn send<F: FnOnce(&mut [u8])>(&mut self, len: usize, meta: TxMeta, fill: F) -> Result<(), TxFull> {
        if self.layout.data + VNET_HDR_LEN + len > self.frame_size || len < 14 || len > usize::from(u16::MAX) {
            self.stats.tx_oversize += 1;
            return Ok(());
        }
        let slot = self.head;
        let busy = libc::TP_STATUS_SEND_REQUEST | libc::TP_STATUS_SENDING;
        if self.slot_status(slot).load(Ordering::Acquire) & busy != 0 {
            self.kick();
            if self.slot_status(slot).load(Ordering::Acquire) & busy != 0 {
                self.stats.tx_full += 1;
                return Err(TxFull);
            }
        }
        let p = self.slot(slot);
        // SAFETY: the slot is ours (not requested, not being sent) and holds
        // the header, the virtio-net header and `len` bytes (checked above).
        unsafe {
            let data = p.add(self.layout.data);
            // hdr_len = the whole frame, so the kernel copies it (see the
            // module comment); `len` fits 16 bits (checked above).
            let vnet = vnet::tx_header(&meta, len as u16);
            std::ptr::copy_nonoverlapping(vnet.as_ptr(), data, VNET_HDR_LEN);
            fill(std::slice::from_raw_parts_mut(data.add(VNET_HDR_LEN), len));
            p.add(self.layout.len).cast::<u32>().write((VNET_HDR_LEN + len) as u32);
            if self.layout.v3 {
                // The kernel refuses variable-sized transmit slots.
                (*p.cast::<libc::tpacket3_hdr>()).tp_next_offset = 0;
            }
        }
        self.slot_status(slot).store(libc::TP_STATUS_SEND_REQUEST, Ordering::Release);
        self.head = (slot + 1) % self.frames;
        self.unkicked += 1;
        self.stats.tx_frames += 1;
        self.stats.tx_bytes += len as u64;
        if self.unkicked >= self.burst {
            self.kick();
        }
        Ok(())
    }

    fn flush(&mut self) {
        self.kick();
    }
}

/// Whether `ifname` has TCP segmentation offload on (`ETHTOOL_GTSO`);
/// `None` when the kernel will not say.
fn interface_tso(ifname: &str) -> Option<bool> {
    const ETHTOOL_GTSO: u32 = 0x1e;
    #[repr(C)]
    struct EthtoolValue {
        cmd: u32,
        data: u32,
    }
    let mut value = EthtoolValue { cmd: ETHTOOL_GTSO, data: 0 };
    // SAFETY: plain arguments; the socket is closed by OwnedFd.
    let raw = unsafe { libc::socket(libc::AF_INET, libc::SOCK_DGRAM | libc::SOCK_CLOEXEC, 0) };
    if raw < 0 {
        return None;
    }
    // SAFETY: `raw` is a descriptor we own from here on.
    let sock = unsafe { OwnedFd::from_raw_fd(raw) };
    // SAFETY: a zeroed ifreq is valid; the name fits (checked by the caller's
    // IFNAMSIZ test) and ifr_data points at `value`, which outlives the call.
    let mut ifr: libc::ifreq = unsafe { std::mem::zeroed() };
    for (dst, src) in ifr.ifr_name.iter_mut().zip(ifname.bytes().take(libc::IFNAMSIZ - 1)) {
        *dst = src as libc::c_char;
    }
    ifr.ifr_ifru.ifru_data = (&mut value as *mut EthtoolValue).cast();
    // SAFETY: SIOCETHTOOL reads the command from and writes the answer to `value`.
    let r = unsafe { libc::ioctl(sock.as_raw_fd(), libc::SIOCETHTOOL as _, &mut ifr) };
    (r == 0).then_some(value.data != 0)
}

/// A packet socket that takes no frames until `bind` names the interface
/// and a protocol (protocol 0 here).
fn packet_socket() -> Result<OwnedFd, DeviceError> {
    // SAFETY: plain arguments.
    let raw = unsafe { libc::socket(libc::AF_PACKET, libc::SOCK_RAW | libc::SOCK_CLOEXEC | libc::SOCK_NONBLOCK, 0) };
    if raw < 0 {
        let source = io::Error::last_os_error();
        return Err(match source.raw_os_error() {
            Some(libc::EPERM | libc::EACCES) => DeviceError::NeedsCapability {
                action: "opening an AF_PACKET socket",
                caps: "CAP_NET_RAW",
                source,
            },
            Some(libc::EAFNOSUPPORT) => DeviceError::Unsupported {
                what: format!("this kernel has no AF_PACKET sockets ({source})"),
                hint: "load the af_packet module (modprobe af_packet) or use tap:NAME",
            },
            _ => DeviceError::Io { action: "opening an AF_PACKET socket", source },
        });
    }
    // SAFETY: a fresh descriptor that nothing else owns.
    Ok(unsafe { OwnedFd::from_raw_fd(raw) })
}

/// Bind `fd` to interface `ifindex` for `protocol` (host order; 0: send only).
fn bind(fd: &OwnedFd, ifindex: i32, protocol: u16, name: &str) -> Result<(), DeviceError> {
    let sll = libc::sockaddr_ll {
        sll_family: libc::AF_PACKET as u16,
        sll_protocol: protocol.to_be(),
        sll_ifindex: ifindex,
        sll_hatype: 0,
        sll_pkttype: 0,
        sll_halen: 0,
        sll_addr: [0; 8],
    };
    // SAFETY: a valid sockaddr_ll and its length.
    let r = unsafe { libc::bind(fd.as_raw_fd(), (&sll as *const libc::sockaddr_ll).cast(), std::mem::size_of::<libc::sockaddr_ll>() as u32) };
    if r < 0 {
        let source = io::Error::last_os_error();
        return Err(match source.raw_os_error() {
            Some(libc::ENODEV | libc::ENXIO) => DeviceError::NoSuchInterface { name: name.to_owned() },
            _ => DeviceError::Io { action: "binding the AF_PACKET socket to the interface", source },
        });
    }
    Ok(())
}

fn setsockopt_raw(fd: &OwnedFd, level: libc::c_int, opt: libc::c_int, value: libc::c_int) -> io::Result<()> {
    // SAFETY: an int and its size.
    let r = unsafe {
        libc::setsockopt(fd.as_raw_fd(), level, opt, (&value as *const libc::c_int).cast(), std::mem::size_of::<libc::c_int>() as u32)
    };
    if r < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(())
    }
}

fn setsockopt(fd: &OwnedFd, opt: libc::c_int, value: libc::c_int, action: &'static str) -> Result<(), DeviceError> {
    setsockopt_raw(fd, libc::SOL_PACKET, opt, value).map_err(|source| match source.raw_os_error() {
        Some(libc::ENOPROTOOPT) => DeviceError::Unsupported {
            what: format!("{action}: this kernel lacks the option ({source})"),
            hint: "AF_PACKET rings need Linux 4.20 or newer; use tap:NAME on older kernels",
        },
        _ => DeviceError::Io { action, source },
    })
}

fn set_ring(fd: &OwnedFd, opt: libc::c_int, req: &libc::tpacket_req3, action: &'static str) -> Result<(), DeviceError> {
    // SAFETY: a tpacket_req3 and its size.
    let r = unsafe {
        libc::setsockopt(fd.as_raw_fd(), libc::SOL_PACKET, opt, (req as *const libc::tpacket_req3).cast(), std::mem::size_of::<libc::tpacket_req3>() as u32)
    };
    if r < 0 {
        let source = io::Error::last_os_error();
        return Err(match source.raw_os_error() {
            Some(libc::ENOMEM) => DeviceError::Unsupported {
                what: format!("{action}: the kernel could not allocate the ring ({source})"),
                hint: "use fewer or smaller blocks (blocks=N, block_size=BYTES, tx_frames=N)",
            },
            _ => DeviceError::Io { action, source },
        });
    }
    Ok(())
}

fn ifreq_for(name: &str) -> libc::ifreq {
    // SAFETY: ifreq is plain data; all zero is valid.
    let mut ifr: libc::ifreq = unsafe { std::mem::zeroed() };
    for (d, s) in ifr.ifr_name.iter_mut().zip(name.bytes()) {
        *d = s as libc::c_char;
    }
    ifr
}

fn interface_mtu(fd: &OwnedFd, name: &str) -> Result<usize, DeviceError> {
    let mut ifr = ifreq_for(name);
    // SAFETY: an ifreq with the name set, as SIOCGIFMTU needs.
    let r = unsafe { libc::ioctl(fd.as_raw_fd(), libc::SIOCGIFMTU, &mut ifr) };
    if r < 0 {
        let source = io::Error::last_os_error();
        return Err(match source.raw_os_error() {
            Some(libc::ENODEV | libc::ENXIO) => DeviceError::NoSuchInterface { name: name.to_owned() },
            _ => DeviceError::Io { action: "reading the interface's MTU", source },
        });
    }
    // SAFETY: SIOCGIFMTU filled the mtu member.
    Ok(usize::try_from(unsafe { ifr.ifr_ifru.ifru_mtu }).unwrap_or(1500))
}

/// Bring the interface up if it is down (as a TAP is brought up): frames
/// flow only on an interface that is up.
fn bring_up(fd: &OwnedFd, name: &str) -> Result<(), DeviceError> {
    let mut ifr = ifreq_for(name);
    // SAFETY: an ifreq with the name set.
    if unsafe { libc::ioctl(fd.as_raw_fd(), libc::SIOCGIFFLAGS, &mut ifr) } < 0 {
        let source = io::Error::last_os_error();
        return Err(DeviceError::Io { action: "reading the interface's flags", source });
    }
    // SAFETY: SIOCGIFFLAGS filled the flags member.
    let flags = unsafe { ifr.ifr_ifru.ifru_flags };
    if flags & libc::IFF_UP as libc::c_short != 0 {
        return Ok(());
    }
    ifr.ifr_ifru.ifru_flags = flags | libc::IFF_UP as libc::c_short;
    // SAFETY: as above, with the new flags.
    if unsafe { libc::ioctl(fd.as_raw_fd(), libc::SIOCSIFFLAGS, &ifr) } < 0 {
        let source = io::Error::last_os_error();
        return Err(match source.raw_os_error() {
            Some(libc::EPERM | libc::EACCES) => DeviceError::PermissionDenied { action: "bringing the interface up", source },
            _ => DeviceError::Io { action: "bringing the interface up", source },
        });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::DeviceSpec;

    fn config(spec: &str) -> Result<AfPacketConfig, DeviceError> {
        let spec: DeviceSpec = spec.parse()?;
        let mut opts = Options::new(&spec);
        let c = AfPacketConfig::from_options(&mut opts)?;
        opts.finish()?;
        Ok(c)
    }

    #[test]
    fn options_default_and_override() {
        assert_eq!(config("af_packet:veth0").unwrap(), AfPacketConfig::default());
        let c = config("af_packet:veth0,blocks=8,block_size=131072,block_timeout=4,tx_frames=64,burst=16,tso=off,promisc=off,fanout=7,ring=v3")
            .unwrap();
        let want = AfPacketConfig {
            blocks: 8,
            block_size: 131072,
            block_timeout_ms: 4,
            tx_frames: 64,
            burst: 16,
            tso: false,
            promisc: false,
            fanout: Some(7),
            ring: RingVersion::V3,
            ..AfPacketConfig::default()
        };
        assert_eq!(c, want);
    }

    #[test]
    fn bad_options_name_themselves() {
        for (spec, needle) in [
            ("af_packet:v,block_size=5000", "multiple of 4096"),
            ("af_packet:v,blocks=1", "blocks=1"),
            ("af_packet:v,fanout=x", "fanout=x"),
            ("af_packet:v,promisc=maybe", "promisc=maybe"),
            ("af_packet:v,ring=3", "ring=3"),
            ("af_packet:v,rings=v2", "rings"),
        ] {
            let err = config(spec).unwrap_err().to_string();
            assert!(err.contains(needle), "{spec}: {err}");
        }
    }

    #[test]
    fn missing_interface_is_named() {
        let err = AfPacketDevice::open("nosuchif0").err().expect("no such interface").to_string();
        assert!(err.contains("nosuchif0"), "{err}");
    }
}
