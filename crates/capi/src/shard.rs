//! One stack per forked process ([`StartConfig::shard_fork`], the preload
//! library's `USTACK_FORK=shard`): how nginx's `worker_processes N` runs on
//! ustack.
//!
//! The stack (its connections, its timers, its buffers) is process memory
//! and cannot be shared between processes, so every forked child builds a
//! stack of its own on its own `af_packet:` socket, and the kernel divides
//! the interface's traffic between the children:
//!
//! - **Flows**: every child's socket joins one `PACKET_FANOUT_HASH` group
//!   (the `fanout=ID` option, ID from the parent's pid). The kernel hashes
//!   each frame's flow symmetrically, so all segments of a connection reach
//!   the one child that owns it, and a child's listener sees the SYNs of its
//!   share of the connections. The parent closes its own socket at its
//!   first fork (a socket outside the group would get a copy of
//!   everything): from then on its ustack sockets fail with `EBADF`, as in
//!   `follow` mode (nginx's master does not touch its listeners).
//! - **Address**: every child's stack has the parent's MAC and IP, so a peer
//!   sees one host.
//! - **ARP**: the fan-out hash of an ARP frame has no ports or addresses in
//!   it, so every ARP frame would land in one child, and the others could
//!   neither answer for the address nor learn a peer's reply. Each child
//!   therefore also opens an [`ArpSide`], a packet socket for `ETH_P_ARP`
//!   outside the group, whose frames its stack receives before the ring's
//!   ([`WithArp`]): every child answers requests (the peer takes any of the
//!   identical replies) and hears every reply.
//! - **Sockets**: in the child, each listening TCP socket and each bound
//!   UDP port of the parent is opened again on the new stack under the same
//!   descriptor; the parent's connections are not the child's (their
//!   descriptors answer `EBADF`; `close` works). Every inherited eventfd
//!   (doorbells, this thread's wait eventfd) is replaced by a fresh one
//!   under the same number, so one process's wakeups never reach another.
//!
//! Connections a child opens (`connect`) leave from a port the kernel's
//! hash may send back to another child: shard mode is for servers.
//!
//! [`StartConfig::shard_fork`]: crate::StartConfig::shard_fork

use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};

use ustack_core::phy::{Device, DeviceCaps, RxMeta, RxQueue};
use ustack_core::Instant;
use ustack_device::{ChainRx, ChainTx, DeviceChain};

/// The largest ARP frame kept (an Ethernet ARP for IPv4 is 42 bytes; VLAN
/// tags and padding fit too).
const ARP_FRAME_MAX: usize = 128;

/// A packet socket receiving every ARP frame of one interface, outside the
/// fan-out group (our own transmissions excluded).
pub(crate) struct ArpSide {
    fd: OwnedFd,
    buf: [u8; ARP_FRAME_MAX],
}

impl ArpSide {
    /// Open it on `ifname`; errors say which step failed.
    pub(crate) fn open(ifname: &str) -> io::Result<ArpSide> {
        let name = std::ffi::CString::new(ifname).map_err(|_| io::Error::from(io::ErrorKind::InvalidInput))?;
        // SAFETY: a NUL-terminated name.
        let ifindex = unsafe { libc::if_nametoindex(name.as_ptr()) };
        if ifindex == 0 {
            return Err(io::Error::last_os_error());
        }
        let proto = (libc::ETH_P_ARP as u16).to_be();
        // SAFETY: plain socket creation; the descriptor is owned at once.
        let raw = unsafe {
            libc::socket(libc::AF_PACKET, libc::SOCK_RAW | libc::SOCK_NONBLOCK | libc::SOCK_CLOEXEC, i32::from(proto))
        };
        if raw < 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: `raw` is a descriptor we just created and own.
        let fd = unsafe { OwnedFd::from_raw_fd(raw) };
        let one: libc::c_int = 1;
        // SAFETY: an int option of the right size. Best effort: without it
        // our own ARP frames come back and are dropped as ours by the stack.
        unsafe {
            libc::setsockopt(
                raw,
                libc::SOL_PACKET,
                libc::PACKET_IGNORE_OUTGOING,
                (&one as *const libc::c_int).cast(),
                std::mem::size_of::<libc::c_int>() as libc::socklen_t,
            )
        };
        // SAFETY: sockaddr_ll is plain integers; all-zero is valid.
        let mut sll: libc::sockaddr_ll = unsafe { std::mem::zeroed() };
        sll.sll_family = libc::AF_PACKET as u16;
        sll.sll_protocol = proto;
        sll.sll_ifindex = ifindex as i32;
        // SAFETY: binds to a valid sockaddr_ll of its size.
        let r = unsafe {
            libc::bind(
                raw,
                (&sll as *const libc::sockaddr_ll).cast(),
                std::mem::size_of::<libc::sockaddr_ll>() as libc::socklen_t,
            )
        };
        if r < 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(ArpSide { fd, buf: [0; ARP_FRAME_MAX] })
    }

    /// The descriptor to wait on.
    pub(crate) fn wait_fd(&self) -> RawFd {
        self.fd.as_raw_fd()
    }

    /// The next ARP frame, if one is waiting.
    fn next(&mut self) -> Option<&[u8]> {
        // SAFETY: reads at most the buffer's length into it.
        let n = unsafe {
            libc::recv(
                self.fd.as_raw_fd(),
                self.buf.as_mut_ptr().cast(),
                self.buf.len(),
                libc::MSG_DONTWAIT | libc::MSG_TRUNC,
            )
        };
        if n <= 0 || n as usize > self.buf.len() {
            return None; // nothing waiting (or an oversized frame, which no ARP is)
        }
        Some(&self.buf[..n as usize])
    }
}

/// The device with an [`ArpSide`]'s frames received first.
pub(crate) struct WithArp<'a> {
    pub(crate) dev: &'a mut DeviceChain,
    pub(crate) arp: Option<&'a mut ArpSide>,
}

/// [`WithArp`]'s receive queue.
pub(crate) struct WithArpRx<'a> {
    arp: Option<&'a mut ArpSide>,
    rx: ChainRx<'a>,
}

impl RxQueue for WithArpRx<'_> {
    fn recv(&mut self, now: Instant) -> Option<(&[u8], RxMeta)> {
        if let Some(frame) = self.arp.as_deref_mut().and_then(ArpSide::next) {
            return Some((frame, RxMeta::default()));
        }
        self.rx.recv(now)
    }
}

impl Device for WithArp<'_> {
    type Rx<'b>
        = WithArpRx<'b>
    where
        Self: 'b;
    type Tx<'b>
        = ChainTx<'b>
    where
        Self: 'b;

    fn queues(&mut self) -> (Self::Rx<'_>, Self::Tx<'_>) {
        let (rx, tx) = self.dev.queues();
        (WithArpRx { arp: self.arp.as_deref_mut(), rx }, tx)
    }

    fn caps(&self) -> DeviceCaps {
        self.dev.caps()
    }
}

/// Replace the open file behind descriptor `fd` with a fresh non-blocking
/// eventfd under the same number, keeping its close-on-exec flag. Raw
/// system calls: `dup3` and `close` may be the LD_PRELOAD library's, which
/// would treat `fd` as a ustack socket being replaced.
pub(crate) fn renew_eventfd(fd: RawFd) {
    // SAFETY: F_GETFD on a descriptor of ours.
    let cloexec = unsafe { libc::syscall(libc::SYS_fcntl, fd, libc::F_GETFD) } as i32 & libc::FD_CLOEXEC != 0;
    // SAFETY: eventfd2 takes an initial value and flags.
    let fresh = unsafe { libc::syscall(libc::SYS_eventfd2, 0, libc::EFD_NONBLOCK) };
    if fresh < 0 {
        return;
    }
    // SAFETY: dup3 onto a descriptor of ours (atomically replacing it),
    // then the spare number is closed.
    unsafe {
        libc::syscall(libc::SYS_dup3, fresh, fd, if cloexec { libc::O_CLOEXEC } else { 0 });
        libc::syscall(libc::SYS_close, fresh);
    }
}
