//! TCP discard (RFC 863): read and drop, counting bytes.

use super::{Phase, Server};
use crate::App;
use ustack_core::tcp::RecvError;
use ustack_core::{Event, Instant, ListenError, Stack};

/// Reads every connection on a port to its end and throws the bytes away.
pub struct TcpDiscard {
    /// Connections need no state of their own: one scratch buffer serves all.
    server: Server<()>,
    scratch: Box<[u8]>,
    /// Bytes read and dropped.
    pub discarded: u64,
    /// Connections that ended with an error (reset, timeout).
    pub failed: u64,
}

impl TcpDiscard {
    /// Listen on `port`, holding at most `max_connections` at once.
    pub fn listen(stack: &mut Stack, port: u16, max_connections: usize) -> Result<TcpDiscard, ListenError> {
        Ok(TcpDiscard {
            server: Server::listen(stack, port, max_connections)?,
            scratch: vec![0; 64 * 1024].into_boxed_slice(),
            discarded: 0,
            failed: 0,
        })
    }

    /// The port it listens on.
    pub fn port(&self) -> u16 {
        self.server.port
    }

    /// Connections open now.
    pub fn connections(&self) -> usize {
        self.server.conns.len()
    }
}

impl App for TcpDiscard {
    fn poll(&mut self, stack: &mut Stack, now: Instant, events: &[Event]) {
        self.server.accept(stack, now, events, false, || ());
        let (scratch, discarded, failed) = (&mut self.scratch, &mut self.discarded, &mut self.failed);
        self.server.drive(stack, now, events, |stack, h, ()| loop {
            match stack.tcp_recv(h, scratch) {
                Ok(0) => {
                    stack.tcp_close(h);
                    return None;
                }
                Ok(n) => *discarded += n as u64,
                Err(RecvError::WouldBlock) => return Some(Phase::Busy),
                Err(_) => {
                    *failed += 1;
                    stack.tcp_abort(h);
                    return None;
                }
            }
        });
    }
}
