//! The receive buffer: a fixed ring holding in-order bytes the application
//! has not read yet, followed by free space into which out-of-order bytes are
//! written at their final position (so reassembly never copies twice).
//!
//! The storage is allocated when the first byte arrives, so half-open and
//! idle connections (a SYN flood's worth of them) cost no buffer memory.

#[derive(Debug)]
pub(crate) struct RecvBuffer {
    storage: Box<[u8]>,
    capacity: usize,
    head: usize,
    /// In-order bytes ready for the application.
    len: usize,
}

impl RecvBuffer {
    pub(crate) fn new(capacity: usize) -> RecvBuffer {
        RecvBuffer { storage: Box::default(), capacity: capacity.max(1), head: 0, len: 0 }
    }

    pub(crate) fn capacity(&self) -> usize {
        self.capacity
    }

    pub(crate) fn readable(&self) -> usize {
        self.len
    }

    /// Room after the readable bytes; the receive window can be no larger.
    pub(crate) fn free(&self) -> usize {
        self.capacity() - self.len
    }

    /// Writes `data` at `offset` bytes past the readable bytes, clipped to the
    /// free space. Returns how many bytes were written. Does not make them
    /// readable; see [`RecvBuffer::commit`].
    pub(crate) fn write_at(&mut self, offset: usize, data: &[u8]) -> usize {
        let free = self.free();
        if offset >= free {
            return 0;
        }
        let n = data.len().min(free - offset);
        let cap = self.capacity();
        if self.storage.is_empty() {
            self.storage = vec![0u8; cap].into_boxed_slice();
        }
        let start = (self.head + self.len + offset) % cap;
        let first = n.min(cap - start);
        self.storage[start..start + first].copy_from_slice(&data[..first]);
        self.storage[..n - first].copy_from_slice(&data[first..n]);
        n
    }

    /// Makes the next `n` written bytes readable.
    pub(crate) fn commit(&mut self, n: usize) {
        self.len = (self.len + n).min(self.capacity());
    }

    /// Reads into `dst`; returns how many bytes were read.
    pub(crate) fn read(&mut self, dst: &mut [u8]) -> usize {
        let n = dst.len().min(self.len);
        if n == 0 {
            return 0;
        }
        let cap = self.capacity();
        let first = n.min(cap - self.head);
        dst[..first].copy_from_slice(&self.storage[self.head..self.head + first]);
        dst[first..n].copy_from_slice(&self.storage[..n - first]);
        self.head = (self.head + n) % cap;
        self.len -= n;
        n
    }
}

#[cfg(test)]
mod tests {
    use super::RecvBuffer;

    #[test]
    fn out_of_order_bytes_land_in_place() {
        let mut b = RecvBuffer::new(8);
        assert_eq!(b.write_at(3, b"def"), 3);
        assert_eq!(b.write_at(0, b"abc"), 3);
        b.commit(6);
        let mut out = [0u8; 4];
        assert_eq!(b.read(&mut out), 4);
        assert_eq!(&out, b"abcd");
        assert_eq!(b.write_at(0, b"ghijklmn"), 6);
        b.commit(6);
        let mut out = [0u8; 8];
        assert_eq!(b.read(&mut out), 8);
        assert_eq!(&out, b"efghijkl");
    }
}
