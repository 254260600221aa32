//! The monotonic clock and the OS random seed the core is given.

use ustack_core::Instant;

/// Microseconds since the clock was made, as the core's [`Instant`].
#[derive(Clone, Copy, Debug)]
pub struct Clock {
    start: std::time::Instant,
}

impl Clock {
    /// A clock that reads zero now.
    pub fn new() -> Clock {
        Clock { start: std::time::Instant::now() }
    }
    /// Time since [`Clock::new`], in the core's microseconds.
    pub fn now(&self) -> Instant {
        Instant::from_micros(self.start.elapsed().as_micros() as u64)
    }
}

impl Default for Clock {
    fn default() -> Self {
        Clock::new()
    }
}

/// 64 random bits from the kernel (getrandom(2)), for the stack's seed.
pub fn os_seed() -> u64 {
    let mut buf = [0u8; 8];
    // SAFETY: buf is valid for 8 bytes.
    let n = unsafe { libc::getrandom(buf.as_mut_ptr().cast(), buf.len(), 0) };
    if n != 8 {
        // getrandom cannot fail for 8 bytes once the pool is up; fall back to
        // the clock rather than refuse to start.
        let t = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap_or_default();
        return t.as_nanos() as u64 ^ u64::from(std::process::id()).rotate_left(32);
    }
    u64::from_le_bytes(buf)
}
