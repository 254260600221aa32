//! The BSD socket calls over ustack, for C programs (`libustack_capi.so`
//! with `include/ustack.h`) and for the LD_PRELOAD library (`crates/preload`)
//! that gives unmodified programs ustack sockets.
//!
//! # How the stack runs inside a foreign process
//!
//! One stack, one device, one process. [`start`] opens the device from a spec
//! (`tap:NAME`, `af_packet:IFACE`, `af_xdp:IFACE`, the same
//! [`ustack_device::DeviceSpec`] every `ustack` command takes), builds the
//! [`Stack`](ustack_core::Stack) and starts one **stack thread**. The stack,
//! the device and the socket table live behind one mutex:
//!
//! - the stack thread locks it, receives what the device holds, fires due
//!   timers, transmits, hands each readiness event to its socket (below),
//!   unlocks, and sleeps in `ppoll` on the device's descriptor and a waker
//!   eventfd until the stack's next deadline;
//! - an application thread's socket call locks it, works on the socket
//!   (`tcp_send`, `udp_recv_from`, …), puts what the call sent on the device
//!   (`Stack::poll` with a zero receive budget, so a request leaves without a
//!   thread switch), and wakes the stack thread only when the call made the
//!   stack's next deadline earlier than the one it sleeps towards. The
//!   device's kick (AF_PACKET's or AF_XDP's `sendto`) waits for the thread's
//!   next wait while the stack thread will turn within
//!   [`KICK_DELAY`](sys::KICK_DELAY) anyway, so a burst of writes between
//!   two waits costs one kick (see `Inner::after_call`).
//!
//! No queue sits between the threads, so there is nothing to size or to
//! overflow; a call never waits for the stack thread, only for the lock.
//!
//! A thread that must sleep in a blocking call or in `poll`/`select` sleeps
//! on the device's descriptor too and takes the frames that wake it itself,
//! under the lock: the frames that make its socket ready cost it one thread
//! switch instead of two (the stack thread's, then the doorbell's). While
//! such a thread sleeps and the stack thread would wake within `KICK_DELAY`
//! anyway, the stack thread leaves the device out of its own sleep
//! (`sys::WATCHERS`), so a frame wakes one thread; what nobody takes waits
//! at most `KICK_DELAY`. `epoll_wait` does not do this: with the device in
//! the set (level- or edge-triggered, exclusive or not) nginx under
//! `wrk -H 'Connection: close'` spent about a fifth more CPU per request,
//! woken for every pure ACK and FIN that the stack thread absorbs without
//! ringing anyone.
//!
//! **Busy polling** ([`StartConfig::busy_poll`], `USTACK_BUSY_POLL`): a
//! wait that would sleep first keeps looking for that many microseconds —
//! taking the device's frames itself, its kernel descriptors asked without
//! a timeout, the CPU yielded between looks — and sleeps as above only
//! then (`wait::Spin`). Off by default: it spends a core to spare the
//! wake-ups.
//!
//! # Descriptors: one kernel eventfd per ustack socket
//!
//! `socket()` creates an eventfd and returns **its number** as the socket's
//! descriptor, so a ustack socket holds a real kernel descriptor: no number
//! can clash with a file, a pipe or a kernel socket, and the kernel's limits
//! apply. A table of flags indexed by descriptor ([`is_ustack`], lock-free)
//! says which numbers are ours. `close` keeps up to [`SPARE_FDS`] of the
//! eventfds for the next sockets, still in the kernel epoll sets they were
//! in, so accepting, adding to an epoll set and closing cost no system
//! call for the descriptor ([`is_spare`]; see the `spare` module).
//!
//! The eventfd is the socket's **doorbell**: the stack registers every socket
//! ([`Stack::register`](ustack_core::Stack::register), token = descriptor) and
//! the stack thread writes 1 to its eventfd for every readiness event
//! (edge-triggered: data arrived, room to write returned, connection
//! established, end of stream, error). A thread that must wait:
//!
//! 1. under the lock, empties its own thread's wait eventfd (if it may hold
//!    a ring: it is rung only while registered, so most calls skip the
//!    `read`), asks the socket
//!    for its real readiness (a failed call re-arms the stack's edge for what
//!    it lacked) and, if it must wait, adds that eventfd to the socket's
//!    waiters, which are rung with the doorbell;
//! 2. sleeps in the kernel on it together with any kernel descriptors, then
//!    goes to 1. (A per-thread eventfd, so several threads may wait on one
//!    socket without emptying each other's wakeups.)
//!
//! Every change after step 1 rings the doorbell, so no wakeup is lost and
//! nothing spins: blocking calls, [`poll`](wait::poll), `select` and
//! [`epoll`](wait::epoll_wait) over any mix of kernel and ustack descriptors
//! sleep in the kernel. Readiness reported to the caller is always computed
//! from the socket, never read from the eventfd, so a stale ring costs a
//! recheck, not a wrong answer. For epoll the eventfd is added to the
//! caller's real epoll set (`EPOLLIN|EPOLLET`, data tagged [`EPOLL_TAG`]; an
//! `EPOLL_CTL_DEL` leaves it there until the socket closes, so a DEL and ADD
//! again cost no system call); the
//! caller's events and data for it are kept here, in a set with a ready list
//! as Linux's epoll keeps one (`EpollSet`: members with news, and
//! level-triggered members reported last time), and reported with
//! `EPOLLET`/`EPOLLONESHOT` semantics. An event queues the socket on its
//! sets' ready lists and writes the eventfd only when a thread sleeps on one
//! of them (once per sleep): a thread that is busy finds the list at its
//! next wait, so under load most events cost no system call. A set that is
//! watched from outside (inside another epoll set, or polled) also gets a
//! bell of its own, readable while a ustack member is ready, so the kernel
//! reports the set to whoever watches it (see [`wait`]).
//!
//! # Errors
//!
//! Every call returns `-1` and sets `errno` to the value Linux gives in the
//! same case: `EAGAIN` for a call that would block on a non-blocking socket,
//! `EINPROGRESS` for a non-blocking connect, `ECONNREFUSED`/`ECONNRESET`/
//! `ETIMEDOUT` from the connection's error (once, then end of stream or
//! `EPIPE`, as Linux), `EPIPE` (with `SIGPIPE` unless `MSG_NOSIGNAL`) for a
//! send after shutdown, `EADDRINUSE`, `EADDRNOTAVAIL` (an address that is not
//! the stack's), `ENOTCONN`, `EISCONN`, `EALREADY`, `EDESTADDRREQ`,
//! `EMSGSIZE`, `EAFNOSUPPORT`/`EPROTONOSUPPORT`/`ESOCKTNOSUPPORT` for what is
//! not IPv4 TCP or UDP, `ENOPROTOOPT` for an option not handled, `EBADF` for
//! a descriptor that is not a ustack socket, `ENETDOWN` before [`start`].
//! Anything unsupported also prints one warning line per kind on stderr, as
//! does an option that is stored without its effect (SO_RCVBUF on a
//! connection).
//!
//! # Socket buffer sizes
//!
//! `setsockopt(SO_RCVBUF or SO_SNDBUF, n)` stores what Linux stores:
//! [`stored_buffer_size`], `n` capped at the largest buffer the stack's
//! pool can back
//! ([`Stack::tcp_largest_buffer`](ustack_core::Stack::tcp_largest_buffer):
//! `USTACK_TCP_BUFFER` rounded up to a power of two, at least 32 KiB, in
//! the role of `net.core.rmem_max`/`wmem_max`), doubled, at least
//! [`MIN_SOCKET_BUFFER`]; `getsockopt` reports it (without one: twice the
//! connection's or the stack's size). A TCP buffer gets half of the stored
//! value, the bytes asked for, which is about the data room Linux gives:
//!
//! - before `connect` or `listen`: the connection's send and receive
//!   buffers (`Stack::tcp_connect_with`, `tcp_listen_with`); the receive
//!   size bounds the window and chooses the window scale the SYN or
//!   SYN-ACK offers. Accepted connections inherit their listener's;
//! - on a listening socket: the connections accepted after
//!   (`Stack::tcp_set_listen_buffers`; nginx sets them after `listen`);
//! - SO_SNDBUF on a connection: applied while none of its data is
//!   unacknowledged (`Stack::tcp_set_send_buffer_size`), as when set right
//!   after `connect` or `accept`; with data in flight, stored and reported
//!   only, with one warning line;
//! - SO_RCVBUF on a connection: stored and reported only, with one warning
//!   line (the window is advertised already, and a buffer's storage is
//!   sized when the connection opens);
//! - UDP sockets: stored and reported only.
//!
//! # Exit
//!
//! The stack lives in the process, so what a program wrote but the peer has
//! not acknowledged would die with it. At exit (a `.fini_array` entry) the
//! library closes every open socket, gracefully as the kernel does, and
//! waits at most [`sys::EXIT_LINGER`] (5 s) until no TCP connection has data
//! or a FIN unacknowledged. `_exit` and signals skip this.
//!
//! # Limits of this slice
//!
//! - **fork**: by default the stack stays with the parent and a child's
//!   calls on inherited ustack descriptors fail with `EBADF` (closing them
//!   works). With [`StartConfig::follow_fork`] the first fork hands the
//!   stack to the child instead: a `pthread_atfork` handler holds the lock
//!   across the fork, the child starts a stack thread on its copy (the
//!   device's descriptors are inherited), and the parent's thread ends.
//!   That is nginx's master with one worker. With
//!   [`StartConfig::shard_fork`] (`af_packet:` only) every forked child
//!   builds a stack of its own in a fan-out group instead, with the
//!   parent's listeners: nginx's `worker_processes N` (see the `shard`
//!   module).
//! - **exec**: ustack sockets close (their eventfds are always
//!   close-on-exec; `F_GETFD` reports the flag as the program set it).
//! - **dup/dup2** of a ustack descriptor is refused (`EOPNOTSUPP`).
//! - One local address (the stack's); loopback addresses are not served.
//! - `bind` before `connect` does not choose the local port (the stack picks
//!   an RFC 6056 ephemeral port).
//! - Threads: any thread may call anything, on any socket; one thread may
//!   send on a TCP socket while another receives on it
//!   (`crates/preload/tests/duplex.py`). That once stalled: not a lost
//!   wakeup, but the stack's ACKs after a zero-window probe carried a
//!   sequence number past the peer's zero window, so Linux dropped them and
//!   the window updates in them (fixed in the core's `ack_segment`).

#![warn(missing_docs)]

mod errno;
mod shard;
mod spare;
pub mod ffi;
mod socket;
pub mod sys;
pub mod wait;

pub use errno::{unsupported, Errno};
pub use socket::*;
pub use spare::{is_spare, replacing, SPARE_FDS};
pub use sys::{is_ustack, is_ustack_epoll, opening_device, start, started, StartConfig, DEFAULT_TCP_BUFFER, EPOLL_TAG};
