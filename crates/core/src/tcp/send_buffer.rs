//! The send buffer: bytes the application has written and the peer has not
//! yet acknowledged, in one fixed-capacity ring.
//!
//! Byte 0 of the buffer is the oldest unacknowledged byte; the connection
//! maps sequence numbers onto offsets. The storage is allocated on the first
//! write (an idle connection costs nothing) and never grows.

#[derive(Debug)]
pub(crate) struct SendBuffer {
    storage: Box<[u8]>,
    capacity: usize,
    head: usize,
    len: usize,
}

impl SendBuffer {
    pub(crate) fn new(capacity: usize) -> SendBuffer {
        SendBuffer { storage: Box::default(), capacity, head: 0, len: 0 }
    }

    pub(crate) fn len(&self) -> usize {
        self.len
    }

    pub(crate) fn free(&self) -> usize {
        self.capacity - self.len
    }

    /// Appends as much of `data` as fits; returns how much that was.
    pub(crate) fn push(&mut self, data: &[u8]) -> usize {
        let n = data.len().min(self.free());
        if n == 0 {
            return 0;
        }
        if self.storage.is_empty() {
            self.storage = vec![0u8; self.capacity].into_boxed_slice();
        }
        let start = (self.head + self.len) % self.capacity;
        let first = n.min(self.capacity - start);
        self.storage[start..start + first].copy_from_slice(&data[..first]);
        self.storage[..n - first].copy_from_slice(&data[first..n]);
        self.len += n;
        n
    }

    /// Drops the oldest `n` bytes (they were acknowledged).
    pub(crate) fn consume(&mut self, n: usize) {
        let n = n.min(self.len);
        if n == 0 {
            return;
        }
        self.head = (self.head + n) % self.capacity;
        self.len -= n;
    }

    /// Copies bytes `offset..offset + dst.len()` into `dst`; bytes past the end
    /// of the buffer are left untouched. Returns how many were copied.
    pub(crate) fn copy_out(&self, offset: usize, dst: &mut [u8]) -> usize {
        if offset >= self.len {
            return 0;
        }
        let n = dst.len().min(self.len - offset);
        let start = (self.head + offset) % self.capacity;
        let first = n.min(self.capacity - start);
        dst[..first].copy_from_slice(&self.storage[start..start + first]);
        dst[first..n].copy_from_slice(&self.storage[..n - first]);
        n
    }
}

#[cfg(test)]
mod tests {
    use super::SendBuffer;

    #[test]
    fn wraps_around() {
        let mut b = SendBuffer::new(8);
        assert_eq!(b.push(b"abcdef"), 6);
        b.consume(4);
        assert_eq!(b.push(b"ghijklmn"), 6);
        assert_eq!(b.len(), 8);
        let mut out = [0u8; 8];
        assert_eq!(b.copy_out(0, &mut out), 8);
        assert_eq!(&out, b"efghijkl");
        let mut out = [0u8; 4];
        assert_eq!(b.copy_out(6, &mut out), 2);
        assert_eq!(&out[..2], b"kl");
    }
}
