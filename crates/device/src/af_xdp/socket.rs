//! The AF_XDP socket's system calls: opening it, registering the UMEM,
//! sizing and locating the rings, binding to a queue, reading its options and
//! statistics. Each failure becomes a [`DeviceError`] that says what to do.

use std::io;
use std::mem::size_of;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::time::Duration;

use super::ring::Mmap;
use super::BindMode;
use crate::DeviceError;

/// Binds retried, 20 ms apart, while the queue reads busy (see [`bind`]).
const BIND_BUSY_RETRIES: u32 = 50;

pub(super) fn interface_index(name: &str) -> Result<u32, DeviceError> {
    let cname = std::ffi::CString::new(name)
        .map_err(|_| DeviceError::InvalidName { name: name.to_owned(), reason: "the name contains NUL" })?;
    // SAFETY: a NUL-terminated name.
    let index = unsafe { libc::if_nametoindex(cname.as_ptr()) };
    if index == 0 {
        return Err(DeviceError::NoSuchInterface { name: name.to_owned() });
    }
    Ok(index)
}

/// Receive queues of `name` (`ethtool -l`), if the driver says.
pub(super) fn rx_queue_count(name: &str) -> Option<u32> {
    #[repr(C)]
    #[derive(Default)]
    struct EthtoolChannels {
        cmd: u32,
        max_rx: u32,
        max_tx: u32,
        max_other: u32,
        max_combined: u32,
        rx_count: u32,
        tx_count: u32,
        other_count: u32,
        combined_count: u32,
    }
    const ETHTOOL_GCHANNELS: u32 = 0x3c;
    let sock = crate::tap::control_socket().ok()?;
    let mut ch = EthtoolChannels { cmd: ETHTOOL_GCHANNELS, ..Default::default() };
    let mut ifr = crate::tap::ifreq_for(name);
    ifr.ifr_ifru.ifru_data = (&mut ch as *mut EthtoolChannels).cast();
    // SAFETY: SIOCETHTOOL with ETHTOOL_GCHANNELS fills one `ethtool_channels`.
    if unsafe { libc::ioctl(sock.as_raw_fd(), libc::SIOCETHTOOL as _, &mut ifr as *mut libc::ifreq) } < 0 {
        return None;
    }
    let n = ch.rx_count + ch.combined_count;
    (n > 0).then_some(n)
}

pub(super) fn xdp_socket() -> Result<OwnedFd, DeviceError> {
    // SAFETY: plain arguments.
    let fd = unsafe { libc::socket(libc::AF_XDP, libc::SOCK_RAW | libc::SOCK_CLOEXEC, 0) };
    if fd < 0 {
        let source = io::Error::last_os_error();
        return Err(match source.raw_os_error() {
            Some(libc::EPERM | libc::EACCES) => {
                DeviceError::NeedsCapability { action: "opening an AF_XDP socket", caps: "CAP_NET_RAW", source }
            }
            Some(libc::EAFNOSUPPORT | libc::EINVAL) => DeviceError::Unsupported {
                what: format!("this kernel has no AF_XDP sockets ({source})"),
                hint: "use a kernel built with CONFIG_XDP_SOCKETS (Linux 5.4 or later), or af_packet:IFACE",
            },
            _ => DeviceError::Io { action: "opening an AF_XDP socket", source },
        });
    }
    // SAFETY: a fresh descriptor nothing else owns.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

pub(super) fn setsockopt<T>(fd: RawFd, level: i32, opt: i32, value: &T) -> io::Result<()> {
    // SAFETY: the kernel reads `size_of::<T>()` bytes of `value`.
    let r = unsafe { libc::setsockopt(fd, level, opt, (value as *const T).cast(), size_of::<T>() as libc::socklen_t) };
    if r < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

pub(super) fn register_umem(fd: RawFd, umem: &Mmap, frame_size: u32) -> Result<(), DeviceError> {
    let reg = libc::xdp_umem_reg {
        addr: umem.as_ptr() as u64,
        len: umem.len() as u64,
        chunk_size: frame_size,
        headroom: 0,
        flags: 0,
        tx_metadata_len: 0,
    };
    setsockopt(fd, libc::SOL_XDP, libc::XDP_UMEM_REG, &reg).map_err(|source| match source.raw_os_error() {
        Some(libc::ENOBUFS | libc::ENOMEM | libc::EPERM) => DeviceError::Unsupported {
            what: format!("registering the {} KiB UMEM failed ({source})", umem.len() / 1024),
            hint: "raise the locked-memory limit (ulimit -l unlimited) or grant CAP_IPC_LOCK, or use smaller rx_ring/tx_ring",
        },
        _ => DeviceError::Io { action: "registering the UMEM", source },
    })
}

pub(super) fn mmap_offsets(fd: RawFd) -> Result<libc::xdp_mmap_offsets, DeviceError> {
    // SAFETY: plain old data; zeros are valid.
    let mut off: libc::xdp_mmap_offsets = unsafe { std::mem::zeroed() };
    let mut len = size_of::<libc::xdp_mmap_offsets>() as libc::socklen_t;
    // SAFETY: the kernel writes at most `len` bytes.
    let r = unsafe {
        libc::getsockopt(
            fd,
            libc::SOL_XDP,
            libc::XDP_MMAP_OFFSETS,
            (&mut off as *mut libc::xdp_mmap_offsets).cast(),
            &mut len,
        )
    };
    if r < 0 {
        return Err(DeviceError::Io { action: "reading the AF_XDP ring offsets", source: io::Error::last_os_error() });
    }
    if len as usize != size_of::<libc::xdp_mmap_offsets>() {
        return Err(DeviceError::Unsupported {
            what: "this kernel's AF_XDP rings have no flags word (need_wakeup)".into(),
            hint: "use Linux 5.4 or later, or af_packet:IFACE",
        });
    }
    Ok(off)
}

pub(super) fn bind(fd: RawFd, name: &str, ifindex: u32, queue: u32, mode: BindMode) -> Result<(), DeviceError> {
    let flags = libc::XDP_USE_NEED_WAKEUP
        | match mode {
            BindMode::Auto => 0,
            BindMode::Copy => libc::XDP_COPY,
            BindMode::ZeroCopy => libc::XDP_ZEROCOPY,
        };
    let addr = libc::sockaddr_xdp {
        sxdp_family: libc::AF_XDP as u16,
        sxdp_flags: flags,
        sxdp_ifindex: ifindex,
        sxdp_queue_id: queue,
        sxdp_shared_umem_fd: 0,
    };
    // The kernel lets go of a closed socket's queue in deferred work, so a
    // queue whose last owner just exited (a restart) reads busy for a few
    // milliseconds: retry a while before calling it taken.
    let mut busy_retries = BIND_BUSY_RETRIES;
    let source = loop {
        // SAFETY: a complete sockaddr_xdp of the size given.
        let r = unsafe {
            libc::bind(
                fd,
                (&addr as *const libc::sockaddr_xdp).cast(),
                size_of::<libc::sockaddr_xdp>() as libc::socklen_t,
            )
        };
        if r == 0 {
            return Ok(());
        }
        let source = io::Error::last_os_error();
        if source.raw_os_error() != Some(libc::EBUSY) || busy_retries == 0 {
            break source;
        }
        busy_retries -= 1;
        std::thread::sleep(Duration::from_millis(20));
    };
    Err(match source.raw_os_error() {
        Some(libc::EOPNOTSUPP) if mode == BindMode::ZeroCopy => DeviceError::Unsupported {
            what: format!("the driver of {name} cannot do AF_XDP zero-copy ({source})"),
            hint: "use copy (or leave both out: zero-copy where the driver can, copy otherwise)",
        },
        Some(libc::EBUSY) => DeviceError::QueueBusy { name: name.to_owned(), queue },
        Some(libc::EINVAL) => DeviceError::NoSuchQueue { name: name.to_owned(), queue, count: rx_queue_count(name) },
        Some(libc::ENODEV | libc::ENXIO) => DeviceError::NoSuchInterface { name: name.to_owned() },
        _ => DeviceError::Io { action: "binding the AF_XDP socket", source },
    })
}

pub(super) fn is_zerocopy(fd: RawFd) -> bool {
    let mut opts = libc::xdp_options { flags: 0 };
    let mut len = size_of::<libc::xdp_options>() as libc::socklen_t;
    // SAFETY: the kernel writes one `xdp_options`.
    let r = unsafe {
        libc::getsockopt(fd, libc::SOL_XDP, libc::XDP_OPTIONS, (&mut opts as *mut libc::xdp_options).cast(), &mut len)
    };
    r == 0 && opts.flags & libc::XDP_OPTIONS_ZEROCOPY != 0
}

pub(super) fn kernel_stats(fd: RawFd) -> Option<libc::xdp_statistics> {
    // SAFETY: plain old data; zeros are valid.
    let mut st: libc::xdp_statistics = unsafe { std::mem::zeroed() };
    let mut len = size_of::<libc::xdp_statistics>() as libc::socklen_t;
    // SAFETY: the kernel writes at most `len` bytes.
    let r = unsafe {
        libc::getsockopt(
            fd,
            libc::SOL_XDP,
            libc::XDP_STATISTICS,
            (&mut st as *mut libc::xdp_statistics).cast(),
            &mut len,
        )
    };
    (r == 0).then_some(st)
}
