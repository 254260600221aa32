//! A connection's buffered bytes out of one stack's pool and into
//! another's, for moving it between shards (`Stack::tcp_export`,
//! `Stack::tcp_import`). Everything else of a connection is plain data
//! (its timers are deadlines; its transmit log is a box it owns) and moves
//! with it as it is.

use super::Connection;
use crate::tcp::pool::{BufferPool, DetachedPages};

/// A connection's send and receive bytes, out of any pool.
#[derive(Debug, Default)]
pub(crate) struct DetachedBuffers {
    send: DetachedPages,
    recv: DetachedPages,
}

impl DetachedBuffers {
    /// Pool chunks the bytes need on arrival.
    pub(crate) fn chunks(&self) -> usize {
        self.send.len() + self.recv.len()
    }
}

impl Connection {
    /// Copy the send and receive buffers' bytes (unacknowledged, unread,
    /// and out-of-order ones) out of `pool`, giving its chunks back.
    pub(crate) fn detach_buffers(&mut self, pool: &mut BufferPool) -> DetachedBuffers {
        DetachedBuffers { send: self.send_buf.detach(pool), recv: self.recv_buf.detach(pool) }
    }

    /// Put detached bytes back, into chunks of `pool`; gives them back
    /// unchanged (and the connection's buffers untouched) when the pool
    /// cannot take them all.
    pub(crate) fn attach_buffers(&mut self, d: DetachedBuffers, pool: &mut BufferPool) -> Result<(), DetachedBuffers> {
        if pool.available() < d.chunks() {
            return Err(d);
        }
        let DetachedBuffers { send, recv } = d;
        if let Err(send) = self.send_buf.attach(send, pool) {
            return Err(DetachedBuffers { send, recv });
        }
        if let Err(recv) = self.recv_buf.attach(recv, pool) {
            let send = self.send_buf.detach(pool);
            return Err(DetachedBuffers { send, recv });
        }
        Ok(())
    }
}
