//! TCP echo (RFC 862): every byte back to the sender, with backpressure.

use super::Server;
use crate::App;
use ustack_core::tcp::{RecvError, SendError};
use ustack_core::{Instant, ListenError, Stack, TcpHandle};

/// Bytes of one connection's echo buffer. When the send buffer takes less
/// than this holds, the rest waits here and the connection is not read again
/// until it has drained, so a peer that does not read its echo is slowed
/// down by TCP flow control instead of growing our memory.
const ECHO_BUFFER: usize = 16 * 1024;

/// Echoes every byte of every connection on a port; closes a connection once
/// the peer's FIN has arrived and everything before it has been echoed.
pub struct TcpEcho {
    server: Server<EchoConn>,
    /// Bytes echoed (accepted by the send buffer).
    pub echoed: u64,
    /// Connections that ended with an error (reset, timeout).
    pub failed: u64,
}

struct EchoConn {
    buf: Box<[u8]>,
    /// `buf[start..end]` was received and not yet taken by the send buffer.
    start: usize,
    end: usize,
}

impl TcpEcho {
    /// Listen on `port`, holding at most `max_connections` at once.
    pub fn listen(stack: &mut Stack, port: u16, max_connections: usize) -> Result<TcpEcho, ListenError> {
        Ok(TcpEcho { server: Server::listen(stack, port, max_connections)?, echoed: 0, failed: 0 })
    }

    pub fn port(&self) -> u16 {
        self.server.port
    }

    /// Connections open now.
    pub fn connections(&self) -> usize {
        self.server.conns.len()
    }

    /// Connections accepted so far, and those reset for going over the bound.
    pub fn accepted(&self) -> (u64, u64) {
        (self.server.accepted, self.server.refused)
    }
}

impl App for TcpEcho {
    fn poll(&mut self, stack: &mut Stack, _now: Instant, ready: &[TcpHandle]) {
        self.server.accept(stack, true, || EchoConn { buf: vec![0; ECHO_BUFFER].into_boxed_slice(), start: 0, end: 0 });
        let (echoed, failed) = (&mut self.echoed, &mut self.failed);
        self.server.drive(stack, ready, |stack, h, c| match echo(stack, h, c, echoed) {
            Ok(true) => true,
            Ok(false) => {
                stack.tcp_close(h);
                false
            }
            Err(()) => {
                *failed += 1;
                stack.tcp_abort(h);
                false
            }
        });
    }
}

/// Move bytes from receive to send until one side blocks. `Ok(false)` when
/// the peer has finished and all of it was echoed; `Err` when the
/// connection failed.
fn echo(stack: &mut Stack, h: TcpHandle, c: &mut EchoConn, echoed: &mut u64) -> Result<bool, ()> {
    loop {
        while c.start < c.end {
            match stack.tcp_send(h, &c.buf[c.start..c.end]) {
                Ok(n) => {
                    c.start += n;
                    *echoed += n as u64;
                }
                // Backpressure: wait for space; the stack reports it ready then.
                Err(SendError::Full) => return Ok(true),
                Err(_) => return Err(()),
            }
        }
        c.start = 0;
        c.end = 0;
        match stack.tcp_recv(h, &mut c.buf) {
            Ok(0) => return Ok(false),
            Ok(n) => c.end = n,
            Err(RecvError::WouldBlock) => return Ok(true),
            Err(_) => return Err(()),
        }
    }
}
