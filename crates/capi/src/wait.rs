//! Waiting on any mix of kernel and ustack descriptors: `poll`, `select`
//! (through `poll`) and epoll, all sleeping in the kernel on the sockets'
//! doorbells (see the crate docs).
//!
//! Kernel descriptors go to the kernel calls unchanged (by raw system
//! call); a set with no ustack descriptor costs one flag lookup each.

use std::os::fd::RawFd;
use std::time::{Duration, Instant};

use ustack_core::stack::DEFAULT_RX_BURST;

use crate::errno::{Errno, EBADF, EFAULT, EINVAL};
use crate::socket::poll_bits;
use crate::sys::{
    self, is_ustack, is_ustack_epoll, is_watched_epoll, lock, raw_poll, set_ustack_epoll, set_watched_epoll, EpollEntry,
    Inner, PerFd, BELLS, EPOLL_TAG,
};
use std::sync::atomic::{AtomicU32, Ordering};

/// Milliseconds left until `deadline` (`None`: forever, as -1).
fn remaining(deadline: Option<Instant>) -> i64 {
    deadline.map_or(-1, |d| d.saturating_duration_since(Instant::now()).as_micros().div_ceil(1000).min(i32::MAX as u128) as i64)
}

fn deadline_of(timeout_ms: i64) -> Option<Instant> {
    (timeout_ms >= 0).then(|| Instant::now() + Duration::from_millis(timeout_ms as u64))
}

/// poll(2) over any mix of descriptors; `timeout_ms < 0` waits forever.
/// Returns how many entries have events.
pub fn poll(fds: &mut [libc::pollfd], timeout_ms: i64) -> Result<usize, Errno> {
    for p in fds.iter() {
        polled(p.fd);
    }
    before_kernel_wait();
    let ours: Vec<usize> = (0..fds.len()).filter(|&i| is_ustack(fds[i].fd)).collect();
    if ours.is_empty() {
        let n = raw_poll(fds, timeout_ms);
        return if n < 0 { Err(Errno(sys::last_errno())) } else { Ok(n as usize) };
    }
    let deadline = deadline_of(timeout_ms);
    let wait = sys::thread_wait_fd()?;
    // The kernel sleeps on the kernel descriptors and on this thread's wait
    // eventfd (last), which every ustack socket in the set rings.
    let mut kernel: Vec<libc::pollfd> = fds.to_vec();
    for &i in &ours {
        kernel[i].fd = -1; // ignored by poll(2)
    }
    kernel.push(libc::pollfd { fd: wait, events: libc::POLLIN, revents: 0 });
    // And the device's descriptor: frames wake this thread, which takes them.
    kernel.push(libc::pollfd { fd: -1, events: libc::POLLIN, revents: 0 });
    let nk = fds.len();
    let always = libc::POLLHUP | libc::POLLERR | libc::POLLNVAL;
    let spin = Spin::new(timeout_ms, deadline);
    let mut bits = vec![0i16; fds.len()];
    let result = loop {
        let spinning = spin.on();
        // Under the lock: take what arrived (a wait: what calls queued
        // leaves too), empty the wait eventfd, then read the sockets, so
        // any change from here on rings it again.
        let mut ready = 0;
        let device;
        {
            let mut g = lock()?;
            g.after_call_receiving(DEFAULT_RX_BURST);
            device = g.device_fd();
            sys::drain_wait(wait);
            sys::arm_wait();
            for &i in &ours {
                let want = fds[i].events | always;
                bits[i] = poll_bits(&mut g, fds[i].fd, fds[i].events & libc::POLLOUT != 0) & want;
                if bits[i] != 0 {
                    ready += 1;
                }
                if let Some(s) = g.socks.get_mut(&fds[i].fd) {
                    if !s.waiters.contains(&wait) {
                        s.waiters.push(wait);
                    }
                }
            }
            // What the look queued leaves now.
            g.after_call_receiving(0);
        }
        let t = if ready > 0 || spinning { 0 } else { remaining(deadline) };
        for k in kernel.iter_mut() {
            k.revents = 0;
        }
        kernel[nk + 1].fd = if t == 0 { -1 } else { device.unwrap_or(-1) };
        let watching = kernel[nk + 1].fd >= 0;
        if watching {
            sys::WATCHERS.fetch_add(1, Ordering::AcqRel);
        }
        let n = raw_poll(&mut kernel, t);
        if watching {
            sys::WATCHERS.fetch_sub(1, Ordering::AcqRel);
        }
        if n < 0 {
            break Err(Errno(sys::last_errno()));
        }
        let mut total = 0;
        for (i, f) in fds.iter_mut().enumerate() {
            // Ours: the kernel was given -1 in its place (a caller's own
            // negative descriptor stays negative and gets no events either).
            let ustack = kernel[i].fd == -1 && f.fd >= 0;
            f.revents = if ustack { bits[i] } else { kernel[i].revents };
            if f.revents != 0 {
                total += 1;
            }
        }
        let woke = kernel[nk].revents != 0 || kernel[nk + 1].revents != 0;
        if total == 0 && spinning {
            std::thread::yield_now();
            continue;
        }
        if total > 0 || t == 0 && !woke || deadline.is_some_and(|d| Instant::now() >= d) {
            break Ok(total);
        }
    };
    if let Ok(mut g) = lock() {
        for &i in &ours {
            if let Some(s) = g.socks.get_mut(&fds[i].fd) {
                s.waiters.retain(|&w| w != wait);
            }
        }
    }
    result
}

/// Busy polling (`USTACK_BUSY_POLL`, [`sys::busy_poll_until`]) for one
/// wait: until when it looks again instead of sleeping. A wait that would
/// not sleep (timeout 0) does not spin; one with a timeout spins within its
/// `deadline` (that of `timeout_ms`).
pub(crate) struct Spin(Option<Instant>);

impl Spin {
    pub(crate) fn new(timeout_ms: i64, deadline: Option<Instant>) -> Spin {
        let until = if timeout_ms == 0 { None } else { sys::busy_poll_until() };
        let until = until.map(|u| deadline.map_or(u, |d| u.min(d)));
        if until.is_some() {
            // The stack thread leaves the device to this thread meanwhile.
            sys::WATCHERS.fetch_add(1, Ordering::AcqRel);
        }
        Spin(until)
    }

    /// Still spinning: look again rather than sleep (yielding the CPU
    /// between looks to whatever else runs on it).
    pub(crate) fn on(&self) -> bool {
        self.0.is_some_and(|u| Instant::now() < u)
    }
}

impl Drop for Spin {
    fn drop(&mut self) {
        if self.0.is_some() {
            sys::WATCHERS.fetch_sub(1, Ordering::AcqRel);
        }
    }
}

/// select(2) through [`poll`]: the sets are updated in place, the count of
/// bits set is returned.
///
/// # Safety
/// Each set pointer is null or points to an `fd_set` covering `nfds`.
pub unsafe fn select(
    nfds: i32,
    rd: *mut libc::fd_set,
    wr: *mut libc::fd_set,
    ex: *mut libc::fd_set,
    timeout_ms: i64,
) -> Result<usize, Errno> {
    if !(0..=libc::FD_SETSIZE as i32).contains(&nfds) {
        return Err(EINVAL);
    }
    let isset = |set: *mut libc::fd_set, fd: i32| !set.is_null() && libc::FD_ISSET(fd, set);
    let mut pfds = Vec::new();
    for fd in 0..nfds {
        let mut events = 0;
        if isset(rd, fd) {
            events |= libc::POLLIN;
        }
        if isset(wr, fd) {
            events |= libc::POLLOUT;
        }
        if isset(ex, fd) {
            events |= libc::POLLPRI;
        }
        if events != 0 {
            pfds.push(libc::pollfd { fd, events, revents: 0 });
        }
    }
    poll(&mut pfds, timeout_ms)?;
    if pfds.iter().any(|p| p.revents & libc::POLLNVAL != 0) {
        return Err(EBADF);
    }
    for set in [rd, wr, ex] {
        if !set.is_null() {
            libc::FD_ZERO(set);
        }
    }
    let mut n = 0;
    for p in &pfds {
        let r = p.revents;
        let mut mark = |set: *mut libc::fd_set, asked: i16, hit: i16| {
            if !set.is_null() && p.events & asked != 0 && r & hit != 0 {
                libc::FD_SET(p.fd, set);
                n += 1;
            }
        };
        mark(rd, libc::POLLIN, libc::POLLIN | libc::POLLHUP | libc::POLLERR);
        mark(wr, libc::POLLOUT, libc::POLLOUT | libc::POLLERR);
        mark(ex, libc::POLLPRI, libc::POLLPRI);
    }
    Ok(n)
}

fn raw_epoll_ctl(epfd: RawFd, op: i32, fd: RawFd, ev: Option<libc::epoll_event>) -> Result<(), Errno> {
    let mut ev = ev;
    let p = ev.as_mut().map_or(std::ptr::null_mut(), |e| e as *mut libc::epoll_event);
    // SAFETY: the event (or null) is valid for the call.
    let r = unsafe { libc::syscall(libc::SYS_epoll_ctl, epfd, op, fd, p) };
    if r < 0 {
        Err(Errno(sys::last_errno()))
    } else {
        Ok(())
    }
}

/// epoll_ctl(2). A ustack socket joins the real set as its doorbell; its
/// events and data are kept here. Kernel descriptors go to the kernel.
///
/// # Safety
/// `ev` is null or valid.
pub unsafe fn epoll_ctl(epfd: RawFd, op: i32, fd: RawFd, ev: *mut libc::epoll_event) -> Result<(), Errno> {
    if !is_ustack(fd) {
        let e = if ev.is_null() { None } else { Some(*ev) };
        raw_epoll_ctl(epfd, op, fd, e)?;
        kernel_member(epfd, op);
        if op == libc::EPOLL_CTL_ADD {
            watched_by_epoll(fd);
        }
        return Ok(());
    }
    let mut g = lock()?;
    g.sock(fd)?;
    let entry = |ev: *mut libc::epoll_event| -> Result<EpollEntry, Errno> {
        if ev.is_null() {
            return Err(EFAULT);
        }
        let ev = *ev;
        Ok(EpollEntry { events: ev.events, data: ev.u64, queued: false, disabled: false })
    };
    match op {
        libc::EPOLL_CTL_ADD => {
            let e = entry(ev)?;
            if g.epolls.get(&epfd).is_some_and(|m| m.members.contains_key(&fd)) {
                return Err(Errno(libc::EEXIST));
            }
            let set = g.epolls.entry(epfd).or_default();
            if !set.in_kernel.contains(&fd) {
                let bell = libc::epoll_event { events: (libc::EPOLLIN | libc::EPOLLET) as u32, u64: EPOLL_TAG | fd as u64 };
                raw_epoll_ctl(epfd, libc::EPOLL_CTL_ADD, fd, Some(bell))?;
                set.in_kernel.insert(fd);
            }
            set.members.insert(fd, e);
            let s = g.sock(fd)?;
            if !s.epolls.contains(&epfd) {
                s.epolls.push(epfd);
            }
            set_ustack_epoll(epfd, true);
            if is_watched_epoll(epfd) {
                ensure_bell(&mut g, epfd)?;
            }
            // The socket may be ready now: make the next wait look.
            g.notify(fd);
        }
        libc::EPOLL_CTL_MOD => {
            let e = entry(ev)?;
            let slot = g.epolls.get_mut(&epfd).and_then(|m| m.members.get_mut(&fd)).ok_or(Errno(libc::ENOENT))?;
            *slot = EpollEntry { queued: slot.queued, ..e };
            g.notify(fd);
        }
        libc::EPOLL_CTL_DEL => {
            g.epolls.get_mut(&epfd).and_then(|m| m.members.remove(&fd)).ok_or(Errno(libc::ENOENT))?;
            g.sock(fd)?.epolls.retain(|&ep| ep != epfd);
            // The eventfd stays in the kernel set (`EpollSet::in_kernel`),
            // unless the set is watched from outside, where a former
            // member's doorbell would make the set look readable.
            if is_watched_epoll(epfd) {
                if let Some(set) = g.epolls.get_mut(&epfd) {
                    set.in_kernel.remove(&fd);
                }
                raw_epoll_ctl(epfd, libc::EPOLL_CTL_DEL, fd, None)?;
            }
        }
        _ => return Err(EINVAL),
    }
    Ok(())
}

/// Kernel descriptors in each epoll set (ADDs less DELs, by the set's
/// number): while a set holds none, a wait that found ustack events
/// returns them without asking the kernel for more. A kernel descriptor
/// closed while in a set keeps its count (the kernel drops it silently),
/// which costs that set only the extra look.
static KERNEL_MEMBERS: PerFd<AtomicU32> = PerFd::<AtomicU32>::new();

/// A successful `epoll_ctl(epfd, op, fd)` on a kernel descriptor `fd`.
pub fn kernel_member(epfd: RawFd, op: i32) {
    let Some(c) = KERNEL_MEMBERS.slot(epfd) else { return };
    match op {
        libc::EPOLL_CTL_ADD => {
            c.fetch_add(1, Ordering::Relaxed);
        }
        libc::EPOLL_CTL_DEL => {
            let _ = c.fetch_update(Ordering::Relaxed, Ordering::Relaxed, |n| n.checked_sub(1));
        }
        _ => {}
    }
}

/// Whether epoll set `epfd` may hold kernel descriptors.
fn has_kernel_members(epfd: RawFd) -> bool {
    KERNEL_MEMBERS.slot(epfd).is_none_or(|c| c.load(Ordering::Relaxed) > 0)
}

/// Forget an epoll set's ustack members (it is being closed).
pub fn epoll_forget(epfd: RawFd) {
    if let Some(c) = KERNEL_MEMBERS.slot(epfd) {
        if c.load(Ordering::Relaxed) != 0 {
            c.store(0, Ordering::Relaxed);
        }
    }
    set_watched_epoll(epfd, false);
    if is_ustack_epoll(epfd) {
        set_ustack_epoll(epfd, false);
        if let Ok(mut g) = lock() {
            if let Some(bell) = g.epolls.remove(&epfd).and_then(|set| set.bell) {
                sys::raw_close(bell);
                BELLS.fetch_sub(1, Ordering::Relaxed);
            }
        }
    }
}

// ---- epoll sets inside epoll sets (and polled epoll sets) -------------
//
// The kernel reports an epoll set readable while its own ready list holds a
// member with events. A ustack socket's doorbell rings only for a thread
// sleeping on its set, so a set watched from outside (a member of another
// epoll set, or in a poll/select) gets a bell of its own (`EpollSet::bell`)
// in its kernel set: raised when a member gets an event it asks for, and
// checked against the members' real readiness before every wait on kernel
// descriptors (lowered when none is ready), so a set whose data was read
// meanwhile is not reported.

/// Whether ustack socket `fd` has an event that an epoll entry asking for
/// `events` reports.
pub(crate) fn member_ready(g: &mut Inner, fd: RawFd, events: u32) -> bool {
    let want = events | (libc::EPOLLHUP | libc::EPOLLERR) as u32;
    to_epoll(poll_bits(g, fd, events & libc::EPOLLOUT as u32 != 0)) & want != 0
}

/// Whether a wait on `epfd` now would report a ustack member: one on its
/// ready list with an event its entry asks for.
fn set_ready(g: &mut Inner, epfd: RawFd) -> bool {
    let Some(set) = g.epolls.get(&epfd) else { return false };
    let candidates: Vec<(RawFd, u32)> = set
        .ready
        .iter()
        .filter_map(|fd| set.members.get(fd).filter(|e| e.queued && !e.disabled).map(|e| (*fd, e.events)))
        .collect();
    candidates.into_iter().any(|(fd, events)| member_ready(g, fd, events))
}

/// Raise or lower `epfd`'s bell to match its members' readiness.
fn check_bell(g: &mut Inner, epfd: RawFd) {
    let ready = set_ready(g, epfd);
    if let Some(set) = g.epolls.get_mut(&epfd) {
        if ready {
            set.raise();
        } else {
            set.lower();
        }
    }
}

/// Give the set `epfd` (which holds ustack sockets and is watched) its
/// bell, in the state its members' readiness asks for.
fn ensure_bell(g: &mut Inner, epfd: RawFd) -> Result<(), Errno> {
    let Some(set) = g.epolls.get_mut(&epfd) else { return Ok(()) };
    let new_bell = set.bell.is_none();
    if new_bell {
        let bell = sys::new_eventfd(true)?;
        let ev = libc::epoll_event { events: libc::EPOLLIN as u32, u64: EPOLL_TAG | bell as u64 };
        if let Err(e) = raw_epoll_ctl(epfd, libc::EPOLL_CTL_ADD, bell, Some(ev)) {
            sys::raw_close(bell);
            return Err(e);
        }
        set.bell = Some(bell);
        set.raised = false;
        BELLS.fetch_add(1, Ordering::Relaxed);
        // Former members' doorbells left in the kernel set would make it
        // look readable to its watchers: take them out now.
        let members = &set.members;
        let former: Vec<RawFd> = set.in_kernel.iter().copied().filter(|fd| !members.contains_key(fd)).collect();
        for fd in former {
            set.in_kernel.remove(&fd);
            let _ = raw_epoll_ctl(epfd, libc::EPOLL_CTL_DEL, fd, None);
        }
    }
    if new_bell {
        // Its watchers sleep where `Inner::sleeping` does not see them.
        g.watch_device();
    }
    check_bell(g, epfd);
    Ok(())
}

/// Mark `fd` watched and, if it holds ustack sockets, give it its bell.
fn watch(fd: RawFd) {
    set_watched_epoll(fd, true);
    if is_ustack_epoll(fd) {
        if let Ok(mut g) = lock() {
            // Without a descriptor for the bell, the set still works for
            // threads waiting on it directly.
            let _ = ensure_bell(&mut g, fd);
        }
    }
}

/// Kernel descriptor `fd` joined an epoll set: if it is an epoll set
/// itself (one holding ustack sockets, or any epoll instance, which may
/// get some later), it is watched from now on.
pub fn watched_by_epoll(fd: RawFd) {
    if is_watched_epoll(fd) {
        return;
    }
    let is_epoll = is_ustack_epoll(fd)
        || std::fs::read_link(format!("/proc/self/fd/{fd}")).is_ok_and(|l| l.as_os_str() == "anon_inode:[eventpoll]");
    if is_epoll {
        watch(fd);
    }
}

/// `fd` is in a poll or select: an epoll set holding ustack sockets is
/// watched from now on.
pub fn polled(fd: RawFd) {
    if is_ustack_epoll(fd) && !is_watched_epoll(fd) {
        watch(fd);
    }
}

/// Before a wait in the kernel (or a call that may block there): kick what
/// calls queued on the device (see `Inner::after_call`), and bring every
/// bell to its members' readiness if the wait may include a watched set.
/// Two atomic loads when there is nothing to do.
pub fn before_kernel_wait() {
    let unkicked = sys::UNKICKED.load(Ordering::Acquire);
    if BELLS.load(Ordering::Relaxed) == 0 && !unkicked {
        return;
    }
    // Not when the lock is held: by this thread, this is a kernel call the
    // library makes itself (a TAP's read); by another, that thread's call
    // ends by kicking or leaves it to the stack thread (within KICK_DELAY),
    // and a bell it did not lower costs a spurious wakeup at worst.
    if let Some(mut g) = sys::try_lock() {
        g.kick();
        let sets: Vec<RawFd> = g.epolls.iter().filter(|(_, s)| s.bell.is_some()).map(|(&ep, _)| ep).collect();
        for ep in sets {
            check_bell(&mut g, ep);
        }
    }
}

fn to_epoll(bits: i16) -> u32 {
    let mut e = 0;
    for (p, q) in [
        (libc::POLLIN, libc::EPOLLIN),
        (libc::POLLOUT, libc::EPOLLOUT),
        (libc::POLLHUP, libc::EPOLLHUP),
        (libc::POLLERR, libc::EPOLLERR),
        (libc::POLLRDHUP, libc::EPOLLRDHUP),
        (libc::POLLPRI, libc::EPOLLPRI),
    ] {
        if bits & p != 0 {
            e |= q as u32;
        }
    }
    e
}

/// The ustack members of `epfd` with events, written to `out`: those on
/// the set's ready list (see [`sys::EpollSet`]). A level-triggered member
/// with events goes back on the list for the next wait, as in Linux.
fn ustack_ready(g: &mut Inner, epfd: RawFd, out: &mut [libc::epoll_event]) -> usize {
    let Some(set) = g.epolls.get_mut(&epfd) else { return 0 };
    let mut ready = std::mem::take(&mut set.ready);
    // Level-triggered members reported go on the end of `ready` (past
    // `listed`, so not looked at again in this call): no list of their own
    // is allocated per wait.
    let listed = ready.len();
    let mut n = 0;
    let mut i = 0;
    while i < listed && n < out.len() {
        let fd = ready[i];
        i += 1;
        let Some(e) = g.epolls.get_mut(&epfd).and_then(|m| m.members.get_mut(&fd)) else { continue };
        if !e.queued {
            // A second entry for one member (its descriptor was closed and
            // reused while queued): it was looked at already.
            continue;
        }
        e.queued = false;
        let e = *e;
        if e.disabled {
            continue;
        }
        let want = e.events | (libc::EPOLLHUP | libc::EPOLLERR) as u32;
        let got = to_epoll(poll_bits(g, fd, e.events & libc::EPOLLOUT as u32 != 0)) & want;
        if got == 0 {
            continue;
        }
        let Some(slot) = g.epolls.get_mut(&epfd).and_then(|m| m.members.get_mut(&fd)) else { continue };
        if e.events & libc::EPOLLONESHOT as u32 != 0 {
            slot.disabled = true;
        } else if e.events & libc::EPOLLET as u32 == 0 {
            ready.push(fd);
        }
        out[n] = libc::epoll_event { events: got, u64: e.data };
        n += 1;
    }
    let Some(set) = g.epolls.get_mut(&epfd) else { return n };
    // Queued again only now, so none is reported twice in one call.
    for &fd in &ready[listed..] {
        if let Some(e) = set.members.get_mut(&fd) {
            e.queued = true;
        }
    }
    // What `out` had no room for waits for the next call, before what
    // arrived meanwhile, and the level-triggered members reported last.
    ready.drain(..i);
    let at = listed - i;
    ready.splice(at..at, set.ready.drain(..));
    set.ready = ready;
    n
}

/// Under the lock: the set's ready members into `out`; with `sleep`, when
/// there are none, count this thread as sleeping on the set (so the next
/// event rings a doorbell). Returns how many were written.
fn look_or_sleep(epfd: RawFd, out: &mut [libc::epoll_event], slept: bool, sleep: bool) -> Result<usize, Errno> {
    let mut g = lock()?;
    let g = &mut *g;
    if slept {
        if let Some(set) = g.epolls.get_mut(&epfd) {
            // Any sleeper left is woken by the next event.
            set.sleepers = set.sleepers.saturating_sub(1);
            set.rung = false;
        }
    }
    let now = g.clock.now();
    g.after_call_receiving_at(now, DEFAULT_RX_BURST);
    let n = ustack_ready(g, epfd, out);
    // That pass also sent and kicked what calls had queued: this wait
    // leaves nothing behind.
    g.after_look(now);
    if n == 0 && sleep {
        if let Some(set) = g.epolls.get_mut(&epfd) {
            if set.ready.is_empty() {
                // Nothing ready: a raised bell would end the sleep at once.
                set.lower();
                if set.sleepers == 0 {
                    set.rung = false;
                }
                set.sleepers += 1;
                g.sleeping(now);
                return Ok(0);
            }
            // Events arrived during the call: look again, without sleeping.
            return Ok(ustack_ready(g, epfd, out));
        }
    }
    Ok(n)
}

/// epoll_wait(2) over a set holding any mix of descriptors.
pub fn epoll_wait(epfd: RawFd, out: &mut [libc::epoll_event], timeout_ms: i64) -> Result<usize, Errno> {
    before_kernel_wait();
    let r = epoll_wait_any(epfd, out, timeout_ms);
    if is_watched_epoll(epfd) && is_ustack_epoll(epfd) {
        // What is left ready (a level-triggered member not read to the end)
        // keeps the set readable for whoever watches it.
        if let Ok(mut g) = lock() {
            check_bell(&mut g, epfd);
        }
    }
    r
}

fn epoll_wait_any(epfd: RawFd, out: &mut [libc::epoll_event], timeout_ms: i64) -> Result<usize, Errno> {
    if out.is_empty() {
        return Err(EINVAL);
    }
    let raw_wait = |buf: &mut [libc::epoll_event], t: i64| -> Result<usize, Errno> {
        // SAFETY: `buf` is valid for its length.
        let r = unsafe {
            libc::syscall(libc::SYS_epoll_pwait, epfd, buf.as_mut_ptr(), buf.len() as i32, t as i32, std::ptr::null::<u8>(), 8)
        };
        if r < 0 {
            Err(Errno(sys::last_errno()))
        } else {
            Ok(r as usize)
        }
    };
    if !is_ustack_epoll(epfd) {
        return raw_wait(out, timeout_ms);
    }
    let deadline = deadline_of(timeout_ms);
    let mut slept = false;
    let spin = Spin::new(timeout_ms, deadline);
    loop {
        // While busy polling (USTACK_BUSY_POLL) the look repeats without
        // sleeping, the kernel's members looked at without a wait too.
        let spinning = spin.on();
        let sleep = remaining(deadline) != 0 && !spinning;
        let mut n = look_or_sleep(epfd, out, slept, sleep)?;
        slept = n == 0 && sleep;
        // Full, or ustack events and no kernel member to ask about: a
        // system call saved per wait that finds work (doorbells left
        // rung in the kernel set cost one spurious wakeup later).
        if n == out.len() || (n > 0 && !has_kernel_members(epfd)) {
            return Ok(n);
        }
        let t = if n > 0 || spinning { 0 } else { remaining(deadline) };
        // The kernel writes after the ustack events in `out` itself; its
        // doorbells are taken out in place below. (A scratch array sized
        // to the caller's maxevents cost redis, whose maxevents is 10,128,
        // 120 KB of zeroing per wait.)
        let k = raw_wait(&mut out[n..], t);
        let k = match k {
            Ok(k) => k,
            Err(e) => {
                if slept {
                    look_or_sleep(epfd, &mut [], true, false)?;
                }
                return Err(e);
            }
        };
        let mut woke = false;
        let from = n;
        for i in from..from + k {
            let ev = out[i];
            let data = ev.u64;
            if data & 0xffff_ffff_0000_0000 == EPOLL_TAG {
                woke = true;
            } else {
                // `n <= i`: a kept event moves down over a doorbell's place.
                out[n] = ev;
                n += 1;
            }
        }
        if spinning && n == 0 {
            std::thread::yield_now();
            continue;
        }
        if n == 0 && t == 0 && !woke && !slept {
            // Nothing anywhere and no sleep to undo: the look before the
            // kernel's was this call's look.
            return Ok(0);
        }
        if n > 0 || (t == 0 && !woke) || deadline.is_some_and(|d| Instant::now() >= d) {
            if n == 0 {
                // Doorbells rang at the deadline: one last look (and this
                // thread no longer sleeps on the set).
                return look_or_sleep(epfd, out, slept, false);
            }
            if slept {
                look_or_sleep(epfd, &mut [], true, false)?;
            }
            return Ok(n);
        }
    }
}
