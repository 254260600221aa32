//! TCP echo (RFC 862): every byte back to the sender, with backpressure.

use super::{Phase, Server};
use crate::shard::Mover;
use crate::App;
use ustack_core::tcp::{RecvError, SendError};
use ustack_core::{Event, Instant, ListenError, Stack, TcpHandle};

/// Bytes read from a connection at a time, through one scratch buffer shared
/// by all connections: an idle connection holds no echo buffer at all, so
/// 100,000 idle clients cost the app nothing but their table slots.
const ECHO_BUFFER: usize = 16 * 1024;

/// Echoes every byte of every connection on a port; closes a connection once
/// the peer's FIN has arrived and everything before it has been echoed.
pub struct TcpEcho {
    server: Server<EchoConn>,
    scratch: Box<[u8]>,
    /// Bytes echoed (accepted by the send buffer).
    pub echoed: u64,
    /// Connections that ended with an error (reset, timeout).
    pub failed: u64,
    /// With [`TcpEcho::move_every`]: the shards' moves, the bytes between
    /// two moves of a connection, and the connections due to move now.
    moving: Option<(Mover, u64, Vec<TcpHandle>)>,
    /// Connections handed to another shard, and moves refused.
    pub moved: (u64, u64),
}

/// When the send buffer takes less than was read, the rest waits in
/// `pending` (taken only then, at most `ECHO_BUFFER` bytes, and given back
/// once drained) and the connection is not read again until it has drained,
/// so a peer that does not read its echo is slowed down by TCP flow control
/// instead of growing our memory.
#[derive(Default)]
struct EchoConn {
    /// `pending[start..]` was received and not yet taken by the send buffer.
    pending: Vec<u8>,
    start: usize,
    /// Bytes echoed since the connection last moved (or was accepted).
    since_move: u64,
}

impl TcpEcho {
    /// Listen on `port`, holding at most `max_connections` at once.
    pub fn listen(stack: &mut Stack, port: u16, max_connections: usize) -> Result<TcpEcho, ListenError> {
        Ok(TcpEcho {
            server: Server::listen(stack, port, max_connections)?,
            scratch: vec![0; ECHO_BUFFER].into_boxed_slice(),
            echoed: 0,
            failed: 0,
            moving: None,
            moved: (0, 0),
        })
    }

    /// Hand each connection to the next shard (`mover`'s shard + 1, round
    /// the shards) every `bytes` bytes it echoes, with what it still has to
    /// echo; take in those the other shards hand here. A demonstration and
    /// test of moving connections under load (`ustack up --move-every`):
    /// the byte stream goes on from the shard it moved to.
    pub fn move_every(mut self, mover: Mover, bytes: u64) -> TcpEcho {
        self.moving = Some((mover, bytes.max(1), Vec::new()));
        self
    }

    /// Whether it moves its connections ([`TcpEcho::move_every`]).
    pub fn is_moving(&self) -> bool {
        self.moving.is_some()
    }

    /// The port it listens on.
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
    fn poll(&mut self, stack: &mut Stack, now: Instant, events: &[Event]) {
        self.server.accept(stack, now, events, true, EchoConn::default);
        if let Some((mover, _, _)) = &self.moving {
            let server = &mut self.server;
            mover.take_arrivals(server.port, |h, state| {
                let conn = state.downcast::<EchoConn>().map_or_else(|_| EchoConn::default(), |c| *c);
                server.adopt(stack, h, conn);
            });
        }
        let (scratch, echoed, failed) = (&mut self.scratch, &mut self.echoed, &mut self.failed);
        let mut due = self.moving.as_mut().map(|(_, every, due)| (*every, due));
        self.server.drive(stack, now, events, |stack, h, c| {
            let before = *echoed;
            match echo(stack, h, c, scratch, echoed) {
                Ok(true) => {
                    c.since_move += *echoed - before;
                    if let Some((every, due)) = &mut due {
                        if c.since_move >= *every {
                            due.push(h);
                        }
                    }
                    Some(Phase::Busy)
                }
                Ok(false) => {
                    stack.tcp_close(h);
                    None
                }
                Err(()) => {
                    *failed += 1;
                    stack.tcp_abort(h);
                    None
                }
            }
        });
        self.move_due(stack);
    }
}

impl TcpEcho {
    /// Hand the connections due to move to the next shard.
    fn move_due(&mut self, stack: &mut Stack) {
        let Some((mover, _, due)) = &mut self.moving else { return };
        let to = (mover.shard() + 1) % mover.shards();
        for h in due.drain(..) {
            let Some(mut c) = self.server.release(h) else { continue };
            c.since_move = 0;
            match mover.move_to(stack, h, to, Box::new(c)) {
                Ok(()) => self.moved.0 += 1,
                Err(refused) => {
                    self.moved.1 += 1;
                    let c = refused.state.downcast::<EchoConn>().map_or_else(|_| EchoConn::default(), |c| *c);
                    match refused.handle {
                        Some(back) if back == h => {
                            self.server.conns.insert(h, c);
                        }
                        Some(back) => self.server.adopt(stack, back, c),
                        None => {}
                    }
                }
            }
        }
    }
}

/// Move bytes from receive to send until one side blocks. `Ok(false)` when
/// the peer has finished and all of it was echoed; `Err` when the
/// connection failed.
fn echo(stack: &mut Stack, h: TcpHandle, c: &mut EchoConn, scratch: &mut [u8], echoed: &mut u64) -> Result<bool, ()> {
    if !c.pending.is_empty() {
        c.start += send_some(stack, h, &c.pending[c.start..], echoed)?;
        if c.start < c.pending.len() {
            // Backpressure: wait for space; the stack reports it ready then.
            return Ok(true);
        }
        c.pending = Vec::new();
        c.start = 0;
    }
    loop {
        let n = match stack.tcp_recv(h, scratch) {
            Ok(0) => return Ok(false),
            Ok(n) => n,
            Err(RecvError::WouldBlock) => return Ok(true),
            Err(_) => return Err(()),
        };
        let sent = send_some(stack, h, &scratch[..n], echoed)?;
        if sent < n {
            c.pending.extend_from_slice(&scratch[sent..n]);
            return Ok(true);
        }
    }
}

/// Offers `data` to the send buffer; how much it took (0 when full).
fn send_some(stack: &mut Stack, h: TcpHandle, data: &[u8], echoed: &mut u64) -> Result<usize, ()> {
    let mut sent = 0;
    while sent < data.len() {
        match stack.tcp_send(h, &data[sent..]) {
            Ok(n) => sent += n,
            Err(SendError::Full) => break,
            Err(_) => return Err(()),
        }
    }
    *echoed += sent as u64;
    Ok(sent)
}
