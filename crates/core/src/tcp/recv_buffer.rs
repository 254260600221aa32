//! The receive buffer: a ring holding in-order bytes the application has not
//! read yet, followed by free space into which out-of-order bytes are
//! written at their final position (so reassembly never copies twice).
//!
//! Its pages are chunks of the stack's [`BufferPool`], taken when a byte
//! (in order or not) lands in them and given back once the application has
//! read past them, so half-open and idle connections (a SYN flood's worth of
//! them) hold no buffer memory.

use super::pool::{BufferPool, ChunkRing};

#[derive(Debug)]
pub(crate) struct RecvBuffer {
    ring: ChunkRing,
    /// In-order bytes ready for the application.
    len: u32,
    /// End of the furthest byte written (in order or not), from offset 0;
    /// pages up to here are live.
    extent: u32,
}

impl RecvBuffer {
    pub(crate) fn new(capacity: usize) -> RecvBuffer {
        RecvBuffer { ring: ChunkRing::new(capacity), len: 0, extent: 0 }
    }

    pub(crate) fn capacity(&self) -> usize {
        self.ring.capacity()
    }

    pub(crate) fn readable(&self) -> usize {
        self.len as usize
    }

    /// Room after the readable bytes; the receive window can be no larger.
    pub(crate) fn free(&self) -> usize {
        self.capacity() - self.readable()
    }

    /// Of `free()`, the bytes already backed by chunks this buffer holds.
    pub(crate) fn backed_free(&self, chunk_size: usize) -> usize {
        (self.ring.chunks_held() * chunk_size).saturating_sub(self.readable())
    }

    pub(crate) fn chunks_held(&self) -> usize {
        self.ring.chunks_held()
    }

    /// Writes `data` at `offset` bytes past the readable bytes, clipped to the
    /// free space and to what the pool can give. Returns how many leading
    /// bytes were written. Does not make them readable; see
    /// [`RecvBuffer::commit`].
    pub(crate) fn write_at(&mut self, offset: usize, data: &[u8], pool: &mut BufferPool) -> usize {
        let free = self.free();
        if offset >= free {
            return 0;
        }
        let n = data.len().min(free - offset);
        let n = self.ring.write(self.readable() + offset, &data[..n], pool, 0);
        if n > 0 {
            self.extent = self.extent.max((self.readable() + offset + n) as u32);
        }
        n
    }

    /// Makes the next `n` written bytes readable.
    pub(crate) fn commit(&mut self, n: usize) {
        self.len = (self.readable() + n).min(self.capacity()) as u32;
        self.extent = self.extent.max(self.len);
    }

    /// Reads into `dst`; returns how many bytes were read. Chunks read past
    /// go back to the pool.
    pub(crate) fn read(&mut self, dst: &mut [u8], pool: &mut BufferPool) -> usize {
        let n = dst.len().min(self.readable());
        if n == 0 {
            return 0;
        }
        self.ring.read(0, &mut dst[..n], pool);
        self.len -= n as u32;
        self.extent -= n as u32;
        self.ring.advance(n, self.extent as usize, pool);
        n
    }

    /// Forgets every byte written beyond the readable ones (out-of-order
    /// islands) and gives back the chunks only they held.
    pub(crate) fn drop_out_of_order(&mut self, pool: &mut BufferPool) {
        self.ring.trim(self.readable(), pool);
        self.extent = self.len;
    }

    pub(crate) fn release(&mut self, pool: &mut BufferPool) {
        self.ring.release(pool);
        self.len = 0;
        self.extent = 0;
    }
}

impl RecvBuffer {
    /// Its bytes out of `pool`, to move with its connection (see `ChunkRing::detach`).
    pub(crate) fn detach(&mut self, pool: &mut BufferPool) -> super::pool::DetachedPages {
        self.ring.detach(pool)
    }

    /// Its bytes back, into chunks of `pool` (see `ChunkRing::attach`).
    pub(crate) fn attach(
        &mut self,
        d: super::pool::DetachedPages,
        pool: &mut BufferPool,
    ) -> Result<(), super::pool::DetachedPages> {
        self.ring.attach(d, pool)
    }
}

#[cfg(test)]
mod tests {
    use super::RecvBuffer;
    use crate::tcp::pool::BufferPool;

    #[test]
    fn out_of_order_bytes_land_in_place() {
        let mut pool = BufferPool::new(1024, 1 << 20);
        let mut b = RecvBuffer::new(8);
        assert_eq!(b.write_at(3, b"def", &mut pool), 3);
        assert_eq!(b.write_at(0, b"abc", &mut pool), 3);
        b.commit(6);
        let mut out = [0u8; 4];
        assert_eq!(b.read(&mut out, &mut pool), 4);
        assert_eq!(&out, b"abcd");
        assert_eq!(b.write_at(0, b"ghijklmn", &mut pool), 6);
        b.commit(6);
        let mut out = [0u8; 8];
        assert_eq!(b.read(&mut out, &mut pool), 8);
        assert_eq!(&out, b"efghijkl");
        assert_eq!(pool.in_use(), 0);
    }

    #[test]
    fn dropping_out_of_order_bytes_gives_their_chunks_back() {
        let mut pool = BufferPool::new(1024, 2 * 1024);
        let mut b = RecvBuffer::new(8192);
        assert_eq!(b.write_at(3000, b"island", &mut pool), 6);
        assert_eq!(b.write_at(0, &[1u8; 1500], &mut pool), 1024, "the island holds the other chunk");
        // Nothing was committed: every chunk goes back, and the write that
        // found no room is made again.
        b.drop_out_of_order(&mut pool);
        assert_eq!(pool.in_use(), 0, "the island's chunk is back");
        assert_eq!(b.write_at(0, &[1u8; 1500], &mut pool), 1500);
        b.commit(1500);
        assert_eq!(b.write_at(100, b"island", &mut pool), 6);
        b.drop_out_of_order(&mut pool);
        assert_eq!(pool.in_use(), 2, "committed bytes keep their chunks");
    }

    #[test]
    fn an_island_keeps_its_chunk_until_read_past() {
        let mut pool = BufferPool::new(1024, 1 << 20);
        let mut b = RecvBuffer::new(8192);
        assert_eq!(b.write_at(3000, b"xyz", &mut pool), 3);
        assert_eq!(pool.in_use(), 1);
        assert_eq!(b.write_at(0, &[1u8; 10], &mut pool), 10);
        b.commit(10);
        let mut out = [0u8; 10];
        b.read(&mut out, &mut pool);
        assert_eq!(pool.in_use(), 2, "the island's chunk stays");
        b.release(&mut pool);
        assert_eq!(pool.in_use(), 0);
    }
}
