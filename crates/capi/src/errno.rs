//! Linux `errno` values and the one-time warnings for what is not supported.

use std::sync::Mutex;

/// A Linux `errno` value.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Errno(pub i32);

impl Errno {
    /// Set the calling thread's `errno` to this value.
    pub fn set(self) {
        // SAFETY: __errno_location returns the calling thread's errno slot.
        unsafe { *libc::__errno_location() = self.0 };
    }
}

/// `Ok(v)` as `v`, `Err(e)` as `-1` with `errno = e`: the C convention.
pub(crate) fn ret<T: From<i8>>(r: Result<T, Errno>) -> T {
    match r {
        Ok(v) => v,
        Err(e) => {
            e.set();
            T::from(-1)
        }
    }
}

static WARNED: Mutex<Vec<&'static str>> = Mutex::new(Vec::new());

/// Print `ustack: <what> is not supported (<errno>)` on stderr the first
/// time `what` happens in this process.
pub fn unsupported(what: &'static str, e: Errno) -> Errno {
    warn_once(what, || format!("ustack: not supported on ustack sockets: {what} (errno {})\n", e.0));
    e
}

/// Print `ustack: stored, not applied, on ustack sockets: <what>` on stderr
/// the first time `what` happens in this process: a call that succeeds, as
/// on Linux, without the effect it has there.
pub(crate) fn ignored(what: &'static str) {
    warn_once(what, || format!("ustack: stored, not applied, on ustack sockets: {what}\n"));
}

fn warn_once(what: &'static str, msg: impl FnOnce() -> String) {
    let mut warned = WARNED.lock().unwrap_or_else(|p| p.into_inner());
    if !warned.contains(&what) {
        warned.push(what);
        crate::sys::raw_write(2, msg().as_bytes());
    }
}

pub(crate) const EAGAIN: Errno = Errno(libc::EAGAIN);
pub(crate) const EBADF: Errno = Errno(libc::EBADF);
pub(crate) const EINVAL: Errno = Errno(libc::EINVAL);
pub(crate) const ENOTCONN: Errno = Errno(libc::ENOTCONN);
pub(crate) const EFAULT: Errno = Errno(libc::EFAULT);
