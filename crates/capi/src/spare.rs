//! Descriptors of closed sockets, kept open for the next socket.
//!
//! A ustack socket's descriptor is an eventfd (see the crate docs). Making
//! one, adding it to the caller's epoll set and closing it again are three
//! system calls per connection, about a third of what nginx's thread makes
//! per request under `wrk -H 'Connection: close'`. `close` keeps the eventfd
//! instead (up to [`SPARE_FDS`]) and the next `socket` or `accept4` hands out
//! the same number: it is still in the kernel epoll sets it was in
//! (`EpollSet::in_kernel`), so a server that adds every accepted socket to
//! the same set pays for none of the three. A stale ring on it, or its
//! registration in a set the new socket never joins, costs a spurious
//! wakeup and a recheck, as any stale ring does.
//!
//! Every socket's eventfd is `EFD_CLOEXEC` (the `SOCK_CLOEXEC` the program
//! asked for is kept as the socket's `cloexec` and reported by
//! `F_GETFD`), so no spare one leaks into a program run by `exec`.
//!
//! While a number is spare the program has closed it: [`is_spare`] lets the
//! LD_PRELOAD library answer a second `close` with `EBADF` as Linux does,
//! and `dup2` onto it takes it out of the pool first ([`Inner::unspare`]).
//! `close_range` bypasses the library and would close spare eventfds behind
//! its back; programs call it before `exec`, in a child that does not use
//! the stack.

use std::os::fd::RawFd;

use crate::errno::Errno;
use crate::sys::{is_watched_epoll, new_eventfd, raw_close, FdFlags, Inner};

/// The most eventfds kept for reuse: a server's closes and accepts come in
/// turns, so a few dozen cover a burst; the bound keeps a program that
/// closed many sockets from holding their descriptors.
pub const SPARE_FDS: usize = 128;

static SPARE_FD: FdFlags = FdFlags::new();

/// Whether `fd` is a closed socket's eventfd kept for reuse (lock-free).
pub fn is_spare(fd: RawFd) -> bool {
    SPARE_FD.get(fd)
}

fn set_spare(fd: RawFd, on: bool) {
    SPARE_FD.set(fd, on);
}

impl Inner {
    /// A descriptor for a new socket: a spare one, or a fresh eventfd.
    pub(crate) fn socket_fd(&mut self) -> Result<RawFd, Errno> {
        match self.spare.pop() {
            Some(fd) => {
                set_spare(fd, false);
                Ok(fd)
            }
            None => new_eventfd(true),
        }
    }

    /// Whether the eventfd of socket `fd`, being closed, will be kept: then
    /// it is marked spare now, before the caller clears its ustack flag, so
    /// no moment exists where a second `close` would reach the kernel.
    pub(crate) fn keep_fd(&mut self, fd: RawFd) -> bool {
        // A set watched from outside must not keep a former member's
        // doorbell: it would make the set look readable.
        let watched = self.epolls.iter().any(|(&ep, set)| set.in_kernel.contains(&fd) && is_watched_epoll(ep));
        if self.spare.len() >= SPARE_FDS || watched {
            return false;
        }
        set_spare(fd, true);
        self.spare.push(fd);
        true
    }

    /// The eventfd of closed socket `fd`, not kept: closed, which takes it
    /// out of the kernel sets.
    pub(crate) fn drop_fd(&mut self, fd: RawFd) {
        self.out_of_kernel_sets(fd);
        raw_close(fd);
    }

    /// The eventfd `fd` is about to leave every kernel set it is in.
    fn out_of_kernel_sets(&mut self, fd: RawFd) {
        for set in self.epolls.values_mut() {
            set.in_kernel.remove(&fd);
        }
    }

    /// `fd` stops being spare without being closed here (`dup2` is about to
    /// replace it, which closes the eventfd and takes it out of its sets).
    pub(crate) fn unspare(&mut self, fd: RawFd) {
        if let Some(i) = self.spare.iter().position(|&s| s == fd) {
            self.spare.swap_remove(i);
            set_spare(fd, false);
            self.out_of_kernel_sets(fd);
        }
    }

    /// Close every spare eventfd (a forked shard's are its parent's files).
    pub(crate) fn close_spares(&mut self) {
        for fd in std::mem::take(&mut self.spare) {
            set_spare(fd, false);
            self.drop_fd(fd);
        }
    }
}

/// `dup2(_, fd)` or `dup3(_, fd, _)` is about to replace `fd`: if it is
/// spare, it leaves the pool (the kernel closes it).
pub fn replacing(fd: RawFd) {
    if is_spare(fd) {
        if let Ok(mut g) = crate::sys::lock() {
            g.unspare(fd);
        }
    }
}
