//! UDP echo (RFC 862): every datagram back to its sender, over IPv4 and
//! IPv6 (the socket is dual-stack).

use super::APP_TOKEN;
use crate::App;
use ustack_core::{BindError, Event, Instant, Interest, Socket, Stack, UdpHandle};

/// Echoes every UDP datagram back to its sender.
pub struct UdpEcho {
    socket: UdpHandle,
    port: u16,
    /// Datagrams echoed.
    pub echoed: u64,
    /// Datagrams not echoed because the send queue was full.
    pub dropped: u64,
    /// Room for the largest datagram (65,527 bytes over IPv6), allocated once at bind.
    buf: Box<[u8]>,
    /// The last turn stopped at [`ECHO_BURST`] with datagrams left: go on
    /// next turn, as no new event will say so.
    more: bool,
}

/// Datagrams echoed per turn at most, so one busy port cannot starve the loop.
const ECHO_BURST: usize = 256;

impl UdpEcho {
    /// Bind `port` on `stack` and echo what arrives there; fails when the port
    /// is taken.
    pub fn bind(stack: &mut Stack, port: u16) -> Result<UdpEcho, BindError> {
        let socket = stack.udp_bind(port)?;
        stack.register(socket, APP_TOKEN, Interest::READABLE).expect("the socket was just bound");
        Ok(UdpEcho {
            socket,
            port: stack.udp_local_port(socket).unwrap_or(port),
            echoed: 0,
            dropped: 0,
            buf: vec![0; 65_536].into_boxed_slice(),
            more: false,
        })
    }

    /// The port it serves.
    pub fn port(&self) -> u16 {
        self.port
    }
}

impl App for UdpEcho {
    fn poll(&mut self, stack: &mut Stack, _now: Instant, events: &[Event]) {
        if !self.more && !events.iter().any(|e| e.socket == Socket::Udp(self.socket)) {
            return;
        }
        let buf = &mut self.buf[..];
        self.more = true;
        for _ in 0..ECHO_BURST {
            let Some((len, from)) = stack.udp_recv_from(self.socket, buf) else {
                self.more = false;
                break;
            };
            let len = len.min(buf.len());
            match stack.udp_send_to(self.socket, from, &buf[..len]) {
                Ok(()) => self.echoed += 1,
                Err(_) => self.dropped += 1,
            }
        }
    }

    fn next_deadline(&self) -> Option<Instant> {
        self.more.then_some(Instant::ZERO)
    }
}
