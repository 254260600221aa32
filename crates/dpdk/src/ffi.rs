//! The C shim's functions (src/shim.c), over DPDK's opaque types.

use std::os::raw::{c_char, c_int, c_uint};

/// `struct rte_mbuf`, only ever behind a pointer.
#[repr(C)]
pub struct RteMbuf {
    _private: [u8; 0],
}

/// `struct rte_mempool`, only ever behind a pointer.
#[repr(C)]
pub struct RteMempool {
    _private: [u8; 0],
}

/// `struct ustack_dpdk_port`.
#[repr(C)]
#[derive(Clone, Copy)]
pub struct PortInfo {
    pub mac: [u8; 6],
    pub mtu: u16,
    pub rx_csum: u8,
    pub tx_csum: u8,
    pub intr_fd: i32,
    pub rxd: u16,
    pub txd: u16,
    pub driver: [c_char; 32],
}

/// `struct ustack_dpdk_rx`: one received frame.
#[repr(C)]
#[derive(Clone, Copy)]
pub struct RxDesc {
    pub data: *const u8,
    pub len: u32,
    pub flags: u32,
}

impl RxDesc {
    pub const EMPTY: RxDesc = RxDesc { data: std::ptr::null(), len: 0, flags: 0 };
}

pub const RX_SEGMENTED: u32 = 1;
pub const RX_CSUM_GOOD: u32 = 2;

/// `struct ustack_dpdk_stats`.
#[repr(C)]
#[derive(Clone, Copy, Default)]
pub struct PortStats {
    pub ipackets: u64,
    pub opackets: u64,
    pub ibytes: u64,
    pub obytes: u64,
    pub imissed: u64,
    pub ierrors: u64,
    pub oerrors: u64,
    pub rx_nombuf: u64,
}

extern "C" {
    pub fn ustack_dpdk_eal_init(argc: c_int, argv: *mut *mut c_char) -> c_int;
    pub fn ustack_dpdk_eal_cleanup() -> c_int;
    pub fn ustack_dpdk_runtime_dir() -> *const c_char;
    pub fn ustack_dpdk_strerror(err: c_int) -> *const c_char;
    pub fn ustack_dpdk_errno() -> c_int;
    pub fn ustack_dpdk_port_by_name(name: *const c_char) -> c_int;
    pub fn ustack_dpdk_next_port(from: u32) -> c_int;
    pub fn ustack_dpdk_port_name(port: u16, buf: *mut c_char, len: usize) -> c_int;
    #[allow(clippy::too_many_arguments)]
    pub fn ustack_dpdk_port_start(
        port: u16,
        pool: *mut RteMempool,
        rxd: u16,
        txd: u16,
        promisc: c_int,
        intr: c_int,
        out: *mut PortInfo,
        err: *mut c_char,
        errlen: usize,
    ) -> c_int;
    pub fn ustack_dpdk_port_close(port: u16);
    pub fn ustack_dpdk_pool_create(name: *const c_char, n: c_uint, port: c_int) -> *mut RteMempool;
    pub fn ustack_dpdk_pool_free(pool: *mut RteMempool);
    pub fn ustack_dpdk_pool_room(pool: *mut RteMempool) -> u32;
    pub fn ustack_dpdk_rx_burst(port: u16, pkts: *mut *mut RteMbuf, descs: *mut RxDesc, n: u16) -> u16;
    pub fn ustack_dpdk_tx_alloc(pool: *mut RteMempool, len: u16, data: *mut *mut u8) -> *mut RteMbuf;
    pub fn ustack_dpdk_tx_csum(m: *mut RteMbuf, l2_len: u16, l3_len: u16, ipv6: c_int, tcp: c_int);
    pub fn ustack_dpdk_tx_burst(port: u16, pkts: *mut *mut RteMbuf, n: u16) -> u16;
    pub fn ustack_dpdk_free(pkts: *mut *mut RteMbuf, n: c_uint);
    pub fn ustack_dpdk_port_stats(port: u16, out: *mut PortStats) -> c_int;
}

/// DPDK's words for an errno (positive).
pub fn strerror(err: c_int) -> String {
    // SAFETY: rte_strerror returns a pointer to a NUL-terminated string
    // (static or thread-local) valid until the next call on this thread.
    unsafe { std::ffi::CStr::from_ptr(ustack_dpdk_strerror(err)) }.to_string_lossy().into_owned()
}

/// A C string buffer's contents up to its NUL.
pub fn c_buf(buf: &[c_char]) -> String {
    let bytes: Vec<u8> = buf.iter().take_while(|&&c| c != 0).map(|&c| c as u8).collect();
    String::from_utf8_lossy(&bytes).into_owned()
}
