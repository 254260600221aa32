//! The XDP program that hands an interface's receive queue to our socket,
//! loaded and attached by ustack itself through the `bpf(2)` system call: no
//! compiler, no ELF object, no external tool.
//!
//! The program is five instructions, the equivalent of
//!
//! ```c
//! int ustack_xsk(struct xdp_md *ctx) {
//!     return bpf_redirect_map(&xsks, ctx->rx_queue_index, XDP_PASS);
//! }
//! ```
//!
//! `bpf_redirect_map` returns its last argument when the map has no socket
//! for the queue, so frames of other queues (and of ours before the socket
//! is in the map) go on to the kernel as if no program were attached.
//!
//! It is attached with a BPF link (`BPF_LINK_CREATE`), not the older netlink
//! attach: the link lives as long as its file descriptor, so the program
//! leaves the interface when the process exits, however it exits (SIGKILL
//! included), and nothing is left behind for `ip link set xdp off` to clean.

use std::io;
use std::mem::size_of;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};

// bpf(2) commands and constants from <linux/bpf.h> and <linux/if_link.h>.
const BPF_MAP_CREATE: libc::c_long = 0;
const BPF_MAP_UPDATE_ELEM: libc::c_long = 2;
const BPF_MAP_DELETE_ELEM: libc::c_long = 3;
const BPF_PROG_LOAD: libc::c_long = 5;
#[cfg(test)]
const BPF_PROG_TEST_RUN: libc::c_long = 10;
const BPF_LINK_CREATE: libc::c_long = 28;
const BPF_MAP_TYPE_XSKMAP: u32 = 17;
const BPF_PROG_TYPE_XDP: u32 = 6;
const BPF_XDP: u32 = 37;
pub(crate) const BPF_PSEUDO_MAP_FD: u8 = 1;
const BPF_FUNC_REDIRECT_MAP: i32 = 51;
const XDP_PASS: i32 = 2;
const XDP_FLAGS_SKB_MODE: u32 = 1 << 1;
const XDP_FLAGS_DRV_MODE: u32 = 1 << 2;

/// Where the XDP program runs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum XdpMode {
    /// In the driver, before any socket buffer exists (`mode=drv`).
    Driver,
    /// Generic XDP, after the kernel built a socket buffer; works on any
    /// interface (`mode=skb`).
    Generic,
}

impl XdpMode {
    /// The spelling used in specs.
    pub fn as_str(self) -> &'static str {
        match self {
            XdpMode::Driver => "drv",
            XdpMode::Generic => "skb",
        }
    }

    fn flags(self) -> u32 {
        match self {
            XdpMode::Driver => XDP_FLAGS_DRV_MODE,
            XdpMode::Generic => XDP_FLAGS_SKB_MODE,
        }
    }
}

/// One eBPF instruction (`struct bpf_insn`).
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Insn {
    code: u8,
    /// dst_reg in the low nibble, src_reg in the high one (little endian).
    regs: u8,
    pub(crate) off: i16,
    imm: i32,
}

pub(crate) const fn insn(code: u8, dst: u8, src: u8, off: i16, imm: i32) -> Insn {
    Insn { code, regs: if cfg!(target_endian = "little") { dst | (src << 4) } else { (dst << 4) | src }, off, imm }
}

/// The program, redirecting to the XSKMAP whose descriptor is `map_fd`.
fn program(map_fd: i32) -> [Insn; 6] {
    const LDX_W: u8 = 0x61; // BPF_LDX | BPF_MEM | BPF_W
    const LD_IMM64: u8 = 0x18; // BPF_LD | BPF_DW | BPF_IMM
    const MOV64_K: u8 = 0xb7; // BPF_ALU64 | BPF_MOV | BPF_K
    const CALL: u8 = 0x85; // BPF_JMP | BPF_CALL
    const EXIT: u8 = 0x95; // BPF_JMP | BPF_EXIT
    /// `offsetof(struct xdp_md, rx_queue_index)`.
    const RX_QUEUE_INDEX: i16 = 16;
    [
        insn(LDX_W, 2, 1, RX_QUEUE_INDEX, 0),            // r2 = ctx->rx_queue_index
        insn(LD_IMM64, 1, BPF_PSEUDO_MAP_FD, 0, map_fd), // r1 = &xsks (two slots)
        insn(0, 0, 0, 0, 0),
        insn(MOV64_K, 3, 0, 0, XDP_PASS),           // r3 = XDP_PASS
        insn(CALL, 0, 0, 0, BPF_FUNC_REDIRECT_MAP), // r0 = bpf_redirect_map(r1, r2, r3)
        insn(EXIT, 0, 0, 0, 0),                     // return r0
    ]
}

#[repr(C)]
#[derive(Default)]
struct MapCreateAttr {
    map_type: u32,
    key_size: u32,
    value_size: u32,
    max_entries: u32,
    map_flags: u32,
    inner_map_fd: u32,
    numa_node: u32,
    map_name: [u8; 16],
}

#[repr(C)]
#[derive(Default)]
struct ProgLoadAttr {
    prog_type: u32,
    insn_cnt: u32,
    insns: u64,
    license: u64,
    log_level: u32,
    log_size: u32,
    log_buf: u64,
    kern_version: u32,
    prog_flags: u32,
    prog_name: [u8; 16],
    prog_ifindex: u32,
    expected_attach_type: u32,
}

#[repr(C)]
#[derive(Default)]
struct MapElemAttr {
    map_fd: u32,
    _pad: u32,
    key: u64,
    value: u64,
    flags: u64,
}

#[repr(C)]
#[derive(Default)]
struct LinkCreateAttr {
    prog_fd: u32,
    target_ifindex: u32,
    attach_type: u32,
    flags: u32,
}

/// `bpf(cmd, attr)`: a new descriptor for the commands that make one.
fn bpf<A>(cmd: libc::c_long, attr: &mut A) -> io::Result<i64> {
    // SAFETY: `attr` is a `repr(C)` prefix of `union bpf_attr` with no
    // uninitialised padding; the kernel reads (and may write) `size_of::<A>()`
    // bytes of it and zero-extends the rest.
    let r = unsafe { libc::syscall(libc::SYS_bpf, cmd, attr as *mut A, size_of::<A>() as libc::c_uint) };
    if r < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(r)
}

fn owned(fd: i64) -> OwnedFd {
    // SAFETY: a descriptor the kernel just created for us alone.
    unsafe { OwnedFd::from_raw_fd(fd as i32) }
}

fn name16(s: &str) -> [u8; 16] {
    let mut n = [0u8; 16];
    for (d, b) in n.iter_mut().zip(s.bytes().take(15)) {
        *d = b;
    }
    n
}

/// Which step of loading failed, and the system's answer.
#[derive(Debug)]
pub struct BpfError {
    pub step: BpfStep,
    pub source: io::Error,
    /// The verifier's last line, when the program was refused.
    pub verifier: Option<String>,
}

/// The steps of [`XdpProgram::attach`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BpfStep {
    CreateMap,
    LoadProgram,
    Attach,
    InsertSocket,
}

/// The XSKMAP, the program and the link attaching it; dropping it detaches
/// the program (so does the process's exit).
#[derive(Debug)]
pub struct XdpProgram {
    // Field order is drop order: the link (detach) first.
    _link: OwnedFd,
    _prog: OwnedFd,
    map: OwnedFd,
    mode: XdpMode,
}

impl XdpProgram {
    /// Create the map (room for queues `0..=queue`), load the program and
    /// attach it to interface `ifindex` in `mode`.
    pub fn attach(ifindex: u32, queue: u32, mode: XdpMode) -> Result<XdpProgram, BpfError> {
        let fail = |step, source| BpfError { step, source, verifier: None };
        let mut map_attr = MapCreateAttr {
            map_type: BPF_MAP_TYPE_XSKMAP,
            key_size: 4,
            value_size: 4,
            max_entries: queue + 1,
            map_name: name16("ustack_xsks"),
            ..Default::default()
        };
        let map = owned(bpf(BPF_MAP_CREATE, &mut map_attr).map_err(|e| fail(BpfStep::CreateMap, e))?);
        let prog = load(map.as_raw_fd())?;
        let mut link_attr = LinkCreateAttr {
            prog_fd: prog.as_raw_fd() as u32,
            target_ifindex: ifindex,
            attach_type: BPF_XDP,
            flags: mode.flags(),
        };
        let link = owned(bpf(BPF_LINK_CREATE, &mut link_attr).map_err(|e| fail(BpfStep::Attach, e))?);
        Ok(XdpProgram { _link: link, _prog: prog, map, mode })
    }

    /// Send queue `queue`'s frames to socket `xsk_fd`.
    pub fn insert(&self, queue: u32, xsk_fd: i32) -> Result<(), BpfError> {
        let key = queue;
        let value = xsk_fd as u32;
        let mut attr = MapElemAttr {
            map_fd: self.map.as_raw_fd() as u32,
            key: &key as *const u32 as u64,
            value: &value as *const u32 as u64,
            ..Default::default()
        };
        bpf(BPF_MAP_UPDATE_ELEM, &mut attr).map(drop).map_err(|source| BpfError {
            step: BpfStep::InsertSocket,
            source,
            verifier: None,
        })
    }

    pub fn mode(&self) -> XdpMode {
        self.mode
    }
}

/// A map of `map_type` (room for `max_entries` of `key_size` and
/// `value_size` bytes, `map_flags`), named `name`.
pub(crate) fn create_map(
    map_type: u32,
    (key_size, value_size): (u32, u32),
    max_entries: u32,
    map_flags: u32,
    name: &str,
) -> io::Result<OwnedFd> {
    let mut attr = MapCreateAttr {
        map_type,
        key_size,
        value_size,
        max_entries,
        map_flags,
        map_name: name16(name),
        ..Default::default()
    };
    bpf(BPF_MAP_CREATE, &mut attr).map(owned)
}

/// Set `key` to `value` in map `map` (sizes as the map was made with).
pub(crate) fn map_update(map: &OwnedFd, key: &[u8], value: &[u8]) -> io::Result<()> {
    let mut attr = MapElemAttr {
        map_fd: map.as_raw_fd() as u32,
        key: key.as_ptr() as u64,
        value: value.as_ptr() as u64,
        ..Default::default()
    };
    bpf(BPF_MAP_UPDATE_ELEM, &mut attr).map(drop)
}

/// Remove `key` from map `map`; a key that is not there is no error.
pub(crate) fn map_delete(map: &OwnedFd, key: &[u8]) -> io::Result<()> {
    let mut attr = MapElemAttr { map_fd: map.as_raw_fd() as u32, key: key.as_ptr() as u64, ..Default::default() };
    match bpf(BPF_MAP_DELETE_ELEM, &mut attr) {
        Err(e) if e.raw_os_error() == Some(libc::ENOENT) => Ok(()),
        r => r.map(drop),
    }
}

/// Run program `prog` once over `data` (a frame, from its Ethernet
/// header) in the kernel (`BPF_PROG_TEST_RUN`); what it returned.
#[cfg(test)]
pub(crate) fn test_run(prog: &OwnedFd, data: &[u8]) -> io::Result<u32> {
    #[repr(C)]
    #[derive(Default)]
    struct TestRunAttr {
        prog_fd: u32,
        retval: u32,
        data_size_in: u32,
        data_size_out: u32,
        data_in: u64,
        data_out: u64,
        repeat: u32,
        duration: u32,
    }
    let mut attr = TestRunAttr {
        prog_fd: prog.as_raw_fd() as u32,
        data_size_in: data.len() as u32,
        data_in: data.as_ptr() as u64,
        repeat: 1,
        ..Default::default()
    };
    bpf(BPF_PROG_TEST_RUN, &mut attr)?;
    Ok(attr.retval)
}

fn load(map_fd: i32) -> Result<OwnedFd, BpfError> {
    load_insns(BPF_PROG_TYPE_XDP, BPF_XDP, "ustack_xsk", &program(map_fd))
}

/// Load `insns` as a program of `prog_type` named `name`; a refusal by the
/// verifier carries its last line.
pub(crate) fn load_insns(prog_type: u32, attach_type: u32, name: &str, insns: &[Insn]) -> Result<OwnedFd, BpfError> {
    let license = c"Dual MIT/GPL";
    let mut attr = ProgLoadAttr {
        prog_type,
        insn_cnt: insns.len() as u32,
        insns: insns.as_ptr() as u64,
        license: license.as_ptr() as u64,
        prog_name: name16(name),
        expected_attach_type: attach_type,
        ..Default::default()
    };
    match bpf(BPF_PROG_LOAD, &mut attr) {
        Ok(fd) => Ok(owned(fd)),
        Err(source) if source.raw_os_error() == Some(libc::EACCES) || source.raw_os_error() == Some(libc::EINVAL) => {
            // Refused by the verifier: load again with its log, for the message.
            let mut log = vec![0u8; 4096];
            attr.log_level = 1;
            attr.log_size = log.len() as u32;
            attr.log_buf = log.as_mut_ptr() as u64;
            let _ = bpf(BPF_PROG_LOAD, &mut attr).map(owned);
            let text = String::from_utf8_lossy(&log[..log.iter().position(|&b| b == 0).unwrap_or(0)]).into_owned();
            let verifier = text.lines().rev().find(|l| !l.trim().is_empty()).map(str::to_owned);
            Err(BpfError { step: BpfStep::LoadProgram, source, verifier })
        }
        Err(source) => Err(BpfError { step: BpfStep::LoadProgram, source, verifier: None }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_program_encodes_as_the_kernel_expects() {
        // The bytes clang emits for the C above (llvm-objdump -d), with the
        // map relocation resolved to fd 7.
        let bytes: Vec<u8> = program(7)
            .iter()
            .flat_map(|i| {
                let mut b = vec![i.code, i.regs];
                b.extend(i.off.to_le_bytes());
                b.extend(i.imm.to_le_bytes());
                b
            })
            .collect();
        #[rustfmt::skip]
        let want: [u8; 48] = [
            0x61, 0x12, 0x10, 0x00, 0x00, 0x00, 0x00, 0x00, // r2 = *(u32 *)(r1 + 16)
            0x18, 0x11, 0x00, 0x00, 0x07, 0x00, 0x00, 0x00, // r1 = map fd 7 ll
            0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00,
            0xb7, 0x03, 0x00, 0x00, 0x02, 0x00, 0x00, 0x00, // r3 = 2
            0x85, 0x00, 0x00, 0x00, 0x33, 0x00, 0x00, 0x00, // call 51
            0x95, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, // exit
        ];
        if cfg!(target_endian = "little") {
            assert_eq!(bytes, want);
        }
        assert_eq!(size_of::<Insn>(), 8);
    }

    #[test]
    fn attrs_have_the_kernels_layout() {
        assert_eq!(size_of::<MapCreateAttr>(), 44);
        assert_eq!(size_of::<ProgLoadAttr>(), 72);
        assert_eq!(size_of::<MapElemAttr>(), 32);
        assert_eq!(size_of::<LinkCreateAttr>(), 16);
        assert_eq!(name16("a_name_longer_than_sixteen"), *b"a_name_longer_t\0");
    }
}
