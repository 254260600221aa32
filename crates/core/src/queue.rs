//! A bounded queue of variable-length packets in one preallocated byte ring.
//!
//! Used for socket receive and send queues: both the number of packets and
//! the bytes they hold are capped, the storage is allocated once, and pushing
//! or popping never allocates. A push that does not fit fails and the caller
//! counts the drop.

use std::collections::VecDeque;

#[derive(Clone, Copy, Debug)]
struct Entry<M> {
    meta: M,
    offset: usize,
    len: usize,
}

/// The queue is full (packets or bytes); nothing was written.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct QueueFull;

/// A FIFO of packets, each with its metadata `M` (e.g. the UDP source
/// endpoint), capped in packets and in bytes.
#[derive(Debug)]
pub struct PacketQueue<M> {
    storage: Box<[u8]>,
    entries: VecDeque<Entry<M>>,
    max_packets: usize,
    /// Start of the oldest packet's bytes.
    head: usize,
    /// Where the next packet's bytes go.
    tail: usize,
    /// The write position has wrapped to the start while the read position
    /// has not: free space is `[tail, head)`. Otherwise it is `[tail, end)`
    /// and `[0, head)`.
    wrapped: bool,
}

impl<M: Copy> PacketQueue<M> {
    /// An empty queue holding at most `max_packets` packets and `max_bytes`
    /// payload bytes; the `max_bytes` of storage are allocated here, once.
    pub fn new(max_packets: usize, max_bytes: usize) -> PacketQueue<M> {
        PacketQueue {
            storage: vec![0; max_bytes].into_boxed_slice(),
            entries: VecDeque::with_capacity(max_packets),
            max_packets,
            head: 0,
            tail: 0,
            wrapped: false,
        }
    }

    /// Packets queued.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// Whether no packet is queued.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// Whether the packet cap is reached: the next push fails whatever its
    /// size (one may also fail earlier, when the bytes do not fit).
    pub fn is_full(&self) -> bool {
        self.entries.len() >= self.max_packets
    }

    /// Bytes of payload waiting (not counting space lost to wrapping).
    pub fn bytes(&self) -> usize {
        self.entries.iter().map(|e| e.len).sum()
    }

    fn alloc(&mut self, len: usize) -> Option<usize> {
        if self.entries.len() >= self.max_packets || len > self.storage.len() {
            return None;
        }
        if self.entries.is_empty() {
            self.head = 0;
            self.tail = 0;
            self.wrapped = false;
        }
        if self.wrapped {
            if self.head - self.tail >= len {
                let at = self.tail;
                self.tail += len;
                return Some(at);
            }
            return None;
        }
        if self.storage.len() - self.tail >= len {
            let at = self.tail;
            self.tail += len;
            Some(at)
        } else if self.head >= len {
            self.wrapped = true;
            self.tail = len;
            Some(0)
        } else {
            None
        }
    }

    /// Append a packet of `len` bytes written in place by `fill`.
    pub fn push_with(&mut self, meta: M, len: usize, fill: impl FnOnce(&mut [u8])) -> Result<(), QueueFull> {
        let offset = self.alloc(len).ok_or(QueueFull)?;
        fill(&mut self.storage[offset..offset + len]);
        self.entries.push_back(Entry { meta, offset, len });
        Ok(())
    }

    /// Append a copy of `data`.
    pub fn push(&mut self, meta: M, data: &[u8]) -> Result<(), QueueFull> {
        self.push_with(meta, data.len(), |buf| buf.copy_from_slice(data))
    }

    /// The oldest packet, without removing it.
    pub fn peek(&self) -> Option<(&M, &[u8])> {
        self.entries.front().map(|e| (&e.meta, &self.storage[e.offset..e.offset + e.len]))
    }

    /// Remove the oldest packet.
    pub fn pop(&mut self) -> Option<M> {
        let e = self.entries.pop_front()?;
        if self.wrapped && e.offset < self.head {
            // The reader followed the writer back to the start.
            self.wrapped = false;
        }
        self.head = e.offset + e.len;
        Some(e.meta)
    }
}

impl<M: Copy> Default for PacketQueue<M> {
    /// A queue that holds nothing; it allocates nothing either.
    fn default() -> Self {
        PacketQueue::new(0, 0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use std::collections::VecDeque;

    #[test]
    fn bounded_by_packets_and_bytes() {
        let mut q = PacketQueue::<u32>::new(2, 10);
        assert!(q.push(1, b"abcd").is_ok());
        assert!(q.push(2, b"efgh").is_ok());
        assert_eq!(q.push(3, b"x"), Err(QueueFull));
        assert_eq!(q.peek(), Some((&1, &b"abcd"[..])));
        q.pop();
        let mut q2 = PacketQueue::<u32>::new(8, 10);
        assert!(q2.push(1, b"abcdefgh").is_ok());
        assert_eq!(q2.push(2, b"xyz"), Err(QueueFull));
    }

    proptest! {
        /// The ring behaves like an unbounded FIFO model for every push it accepts,
        /// and accepts every push that fits in the bytes it has freed.
        #[test]
        fn matches_fifo_model(ops in prop::collection::vec((any::<bool>(), 0usize..40), 0..400)) {
            let mut q = PacketQueue::<usize>::new(16, 100);
            let mut model: VecDeque<(usize, Vec<u8>)> = VecDeque::new();
            for (i, (push, len)) in ops.into_iter().enumerate() {
                if push {
                    let data: Vec<u8> = (0..len).map(|j| (i + j) as u8).collect();
                    if q.push(i, &data).is_ok() {
                        model.push_back((i, data));
                    } else {
                        // An empty queue accepts anything that fits its storage.
                        prop_assert!(!model.is_empty());
                    }
                } else {
                    let got = q.peek().map(|(m, d)| (*m, d.to_vec()));
                    prop_assert_eq!(got, model.front().cloned());
                    q.pop();
                    model.pop_front();
                }
                prop_assert_eq!(q.len(), model.len());
            }
        }
    }
}
