//! The vhost-user control plane of the backend: what the frontend tells us
//! over the socket (features, the memory table, each ring's size, addresses,
//! position and eventfds), kept as plain configuration. The `vhost` crate's
//! `BackendReqHandler` parses the messages and calls these methods; the
//! device applies the result to its data path after each message
//! ([`Control::dirty`]), so the rings themselves are never behind a lock.

use std::fs::File;
use std::sync::Arc;

use vhost::vhost_user::message::{
    VhostTransferStateDirection, VhostTransferStatePhase, VhostUserConfigFlags, VhostUserInflight, VhostUserLog,
    VhostUserMemoryRegion, VhostUserProtocolFeatures, VhostUserShMemConfig, VhostUserSharedMsg,
    VhostUserSingleMemoryRegion, VhostUserVringAddrFlags, VhostUserVringState,
};
use vhost::vhost_user::{Error as VuError, GpuBackend, Result as VuResult, VhostUserBackendReqHandlerMut};
use vhost::VhostUserMemoryRegionBase;
use vm_memory::{FileOffset, GuestAddress, GuestMemoryMmap, GuestRegionMmap, MmapRegion};

/// virtio-net and virtio feature bits the backend offers.
pub(crate) mod feature {
    /// The device completes partial checksums of what the guest sends.
    pub const CSUM: u64 = 1 << 0;
    /// The guest takes partial checksums (and DATA_VALID) from the device.
    pub const GUEST_CSUM: u64 = 1 << 1;
    /// The guest takes TCP/IPv4 super-segments (up to 64 KiB) from the
    /// device, their checksums partial (needs GUEST_CSUM).
    pub const GUEST_TSO4: u64 = 1 << 7;
    /// The device takes TCP/IPv4 super-segments from the guest, checksums
    /// partial (needs CSUM), and cuts them where it must.
    pub const HOST_TSO4: u64 = 1 << 11;
    /// A received frame may span several receive buffers (`num_buffers`).
    pub const MRG_RXBUF: u64 = 1 << 15;
    /// Several queue pairs.
    pub const MQ: u64 = 1 << 22;
    /// `used_event`/`avail_event` notification suppression.
    pub const EVENT_IDX: u64 = 1 << 29;
    /// vhost-user's own protocol feature negotiation.
    pub const PROTOCOL_FEATURES: u64 = 1 << 30;
    /// Virtio 1.0 (little-endian, 12-byte header).
    pub const VERSION_1: u64 = 1 << 32;
    /// The device uses buffers in the order they were made available.
    pub const IN_ORDER: u64 = 1 << 35;
}

/// Largest ring the backend accepts (virtio's limit for split rings).
pub(crate) const MAX_RING: u16 = 32768;
/// Most memory regions in a table (vhost-user's own limit is 8 per message).
const MAX_REGIONS: usize = 8;

/// One ring as the frontend configured it.
#[derive(Default)]
pub(crate) struct VringConfig {
    pub size: u16,
    /// Descriptor table, available and used ring, as the frontend's virtual
    /// addresses (translated through the memory table when the ring starts).
    pub desc: u64,
    pub avail: u64,
    pub used: u64,
    /// Where the ring starts (SET_VRING_BASE).
    pub base: u16,
    pub kick: Option<File>,
    pub call: Option<File>,
    /// Started by SET_VRING_KICK, stopped by GET_VRING_BASE.
    pub started: bool,
    /// SET_VRING_ENABLE (enabled on start when protocol features are off).
    pub enabled: bool,
    /// The data path's position, written back before each message so
    /// GET_VRING_BASE can answer it.
    pub next_avail: u16,
}

/// One region of the memory table.
#[derive(Clone, Copy)]
pub(crate) struct Region {
    pub gpa: u64,
    pub size: u64,
    pub uva: u64,
}

/// The backend's view of the frontend's configuration.
pub(crate) struct Control {
    pub queue_pairs: u16,
    pub offered: u64,
    pub acked: u64,
    pub protocol: u64,
    pub regions: Vec<Region>,
    pub mem: Option<Arc<GuestMemoryMmap>>,
    pub vrings: Vec<VringConfig>,
    /// Something the data path depends on changed.
    pub dirty: bool,
    /// Requests refused (bad index, bad memory table, unsupported).
    pub refused: u64,
    /// Why the latest request was refused, for the one line in `stats`.
    pub last_refusal: Option<&'static str>,
}

impl Control {
    pub fn new(queue_pairs: u16) -> Control {
        let offered = feature::CSUM
            | feature::GUEST_CSUM
            | feature::GUEST_TSO4
            | feature::HOST_TSO4
            | feature::MRG_RXBUF
            | feature::EVENT_IDX
            | feature::PROTOCOL_FEATURES
            | feature::VERSION_1
            | feature::IN_ORDER
            | if queue_pairs > 1 { feature::MQ } else { 0 };
        let mut c = Control {
            queue_pairs,
            offered,
            acked: 0,
            protocol: 0,
            regions: Vec::new(),
            mem: None,
            vrings: Vec::new(),
            dirty: true,
            refused: 0,
            last_refusal: None,
        };
        c.reset();
        c
    }

    /// Forget the frontend (it disconnected or reset us).
    pub fn reset(&mut self) {
        self.acked = 0;
        self.protocol = 0;
        self.regions.clear();
        self.mem = None;
        self.vrings = (0..usize::from(self.queue_pairs) * 2).map(|_| VringConfig::default()).collect();
        self.dirty = true;
    }

    /// The header before each frame: 12 bytes with VERSION_1 or MRG_RXBUF, else 10.
    pub fn hdr_len(&self) -> usize {
        if self.acked & (feature::VERSION_1 | feature::MRG_RXBUF) != 0 {
            12
        } else {
            10
        }
    }

    /// A frontend virtual address as a guest physical one, if a region holds
    /// `len` bytes from it.
    pub fn va_to_gpa(&self, va: u64, len: u64) -> Option<u64> {
        self.regions.iter().find_map(|r| {
            let off = va.checked_sub(r.uva)?;
            (off.checked_add(len)? <= r.size).then(|| r.gpa + off)
        })
    }

    fn refuse<T>(&mut self, why: &'static str) -> VuResult<T> {
        self.refused += 1;
        self.last_refusal = Some(why);
        Err(VuError::InvalidParam)
    }

    fn vring(&mut self, index: u32) -> VuResult<&mut VringConfig> {
        if (index as usize) < self.vrings.len() {
            self.dirty = true;
            Ok(&mut self.vrings[index as usize])
        } else {
            self.refuse("ring index past the queues offered")
        }
    }

    /// SET_VRING_ENABLE taken before the features are set (see
    /// `take_early_vring_enable`); refused like any other bad request.
    pub fn early_vring_enable(&mut self, index: u32, num: u32) {
        match num {
            0 | 1 => {
                if let Ok(v) = self.vring(index) {
                    v.enabled = num == 1;
                }
            }
            _ => {
                let _: VuResult<()> = self.refuse("SET_VRING_ENABLE with a value other than 0 or 1");
            }
        }
    }

    fn map_regions(&mut self, ctx: &[VhostUserMemoryRegion], files: Vec<File>) -> Result<(), &'static str> {
        if ctx.len() > MAX_REGIONS || ctx.len() != files.len() {
            return Err("memory table: region count and descriptors disagree");
        }
        let mut regions = Vec::with_capacity(ctx.len());
        let mut mapped = Vec::with_capacity(ctx.len());
        for (r, file) in ctx.iter().zip(files) {
            let size = r.memory_size;
            if size == 0 || size > isize::MAX as u64 || r.guest_phys_addr.checked_add(size).is_none() {
                return Err("memory table: a region of size 0 or past the address space");
            }
            if r.mmap_offset % 4096 != 0 {
                return Err("memory table: an mmap offset not on a page boundary");
            }
            // A mapping past the end of the file would fault (SIGBUS) on
            // first touch: refuse it here.
            let file_len = file.metadata().map(|m| m.len()).unwrap_or(0);
            if r.mmap_offset.checked_add(size).is_none_or(|end| end > file_len) {
                return Err("memory table: a region past the end of its file");
            }
            let region = MmapRegion::from_file(FileOffset::new(file, r.mmap_offset), size as usize)
                .map_err(|_| "memory table: mmap failed")?;
            let region = GuestRegionMmap::new(region, GuestAddress(r.guest_phys_addr))
                .ok_or("memory table: a region past the address space")?;
            mapped.push(region);
            regions.push(Region { gpa: r.guest_phys_addr, size, uva: r.user_addr });
        }
        let mem = GuestMemoryMmap::from_regions(mapped).map_err(|_| "memory table: overlapping regions")?;
        self.regions = regions;
        self.mem = Some(Arc::new(mem));
        Ok(())
    }
}

const UNSUPPORTED: VuError = VuError::InvalidOperation("not supported by ustack's vhost-user backend");

impl VhostUserBackendReqHandlerMut for Control {
    fn set_owner(&mut self) -> VuResult<()> {
        Ok(())
    }
    fn reset_owner(&mut self) -> VuResult<()> {
        self.reset();
        Ok(())
    }
    fn reset_device(&mut self) -> VuResult<()> {
        self.reset();
        Ok(())
    }
    fn get_features(&mut self) -> VuResult<u64> {
        Ok(self.offered)
    }
    fn set_features(&mut self, features: u64) -> VuResult<()> {
        if features & !self.offered != 0 {
            return self.refuse("features acknowledged that were not offered");
        }
        self.acked = features;
        self.dirty = true;
        Ok(())
    }
    fn set_mem_table(
        &mut self,
        ctx: &[VhostUserMemoryRegion],
        files: Vec<File>,
        _postcopy: Option<bool>,
    ) -> VuResult<Option<Vec<VhostUserMemoryRegionBase>>> {
        self.dirty = true;
        self.mem = None;
        self.regions.clear();
        match self.map_regions(ctx, files) {
            Ok(()) => Ok(None),
            Err(why) => self.refuse(why),
        }
    }
    fn set_vring_num(&mut self, index: u32, num: u32) -> VuResult<()> {
        if num == 0 || num > u32::from(MAX_RING) || !num.is_power_of_two() {
            return self.refuse("ring size not a power of two up to 32768");
        }
        self.vring(index)?.size = num as u16;
        Ok(())
    }
    fn set_vring_addr(
        &mut self,
        index: u32,
        _flags: VhostUserVringAddrFlags,
        descriptor: u64,
        used: u64,
        available: u64,
        _log: u64,
    ) -> VuResult<()> {
        let v = self.vring(index)?;
        (v.desc, v.used, v.avail) = (descriptor, used, available);
        Ok(())
    }
    fn set_vring_base(&mut self, index: u32, base: u32) -> VuResult<()> {
        let v = self.vring(index)?;
        v.base = base as u16;
        v.next_avail = base as u16;
        Ok(())
    }
    fn get_vring_base(&mut self, index: u32) -> VuResult<VhostUserVringState> {
        let v = self.vring(index)?;
        v.started = false;
        Ok(VhostUserVringState::new(index, u32::from(v.next_avail)))
    }
    fn set_vring_kick(&mut self, index: u8, fd: Option<File>) -> VuResult<()> {
        let auto_enable = self.acked & feature::PROTOCOL_FEATURES == 0;
        let v = self.vring(u32::from(index))?;
        v.kick = fd;
        v.started = true;
        v.enabled |= auto_enable;
        Ok(())
    }
    fn set_vring_call(&mut self, index: u8, fd: Option<File>) -> VuResult<()> {
        self.vring(u32::from(index))?.call = fd;
        Ok(())
    }
    fn set_vring_err(&mut self, index: u8, _fd: Option<File>) -> VuResult<()> {
        self.vring(u32::from(index)).map(|_| ())
    }
    fn get_protocol_features(&mut self) -> VuResult<VhostUserProtocolFeatures> {
        Ok(VhostUserProtocolFeatures::MQ)
    }
    fn set_protocol_features(&mut self, features: u64) -> VuResult<()> {
        self.protocol = features;
        Ok(())
    }
    fn get_queue_num(&mut self) -> VuResult<u64> {
        Ok(u64::from(self.queue_pairs))
    }
    fn set_vring_enable(&mut self, index: u32, enable: bool) -> VuResult<()> {
        self.vring(index)?.enabled = enable;
        Ok(())
    }
    fn get_config(&mut self, _offset: u32, _size: u32, _flags: VhostUserConfigFlags) -> VuResult<Vec<u8>> {
        Err(UNSUPPORTED)
    }
    fn set_config(&mut self, _offset: u32, _buf: &[u8], _flags: VhostUserConfigFlags) -> VuResult<()> {
        Err(UNSUPPORTED)
    }
    fn set_gpu_socket(&mut self, _gpu_backend: GpuBackend) -> VuResult<()> {
        Err(UNSUPPORTED)
    }
    fn get_shared_object(&mut self, _uuid: VhostUserSharedMsg) -> VuResult<File> {
        Err(UNSUPPORTED)
    }
    fn get_inflight_fd(&mut self, _inflight: &VhostUserInflight) -> VuResult<(VhostUserInflight, File)> {
        Err(UNSUPPORTED)
    }
    fn set_inflight_fd(&mut self, _inflight: &VhostUserInflight, _file: File) -> VuResult<()> {
        Err(UNSUPPORTED)
    }
    fn get_max_mem_slots(&mut self) -> VuResult<u64> {
        Err(UNSUPPORTED)
    }
    fn add_mem_region(
        &mut self,
        _region: &VhostUserSingleMemoryRegion,
        _fd: File,
        _postcopy: Option<bool>,
    ) -> VuResult<Option<VhostUserMemoryRegionBase>> {
        Err(UNSUPPORTED)
    }
    fn remove_mem_region(&mut self, _region: &VhostUserSingleMemoryRegion) -> VuResult<()> {
        Err(UNSUPPORTED)
    }
    fn set_device_state_fd(
        &mut self,
        _direction: VhostTransferStateDirection,
        _phase: VhostTransferStatePhase,
        _fd: File,
    ) -> VuResult<Option<File>> {
        Err(UNSUPPORTED)
    }
    fn check_device_state(&mut self) -> VuResult<()> {
        Err(UNSUPPORTED)
    }
    fn get_shmem_config(&mut self) -> VuResult<VhostUserShMemConfig> {
        Err(UNSUPPORTED)
    }
    fn set_log_base(&mut self, _log: &VhostUserLog, _file: File) -> VuResult<()> {
        Err(UNSUPPORTED)
    }
}
