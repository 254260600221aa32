//! UDP, like `tokio::net::UdpSocket` (unconnected: `send_to`/`recv_from`).

use crate::{Dir, Net};
use std::future::poll_fn;
use std::io;
use std::net::{SocketAddr, SocketAddrV4};
use std::task::{Context, Poll};
use ustack_core::{Interest, Socket, UdpHandle, UdpSendError};

/// A UDP socket bound to a port of the stack.
pub struct UdpSocket {
    net: Net,
    handle: UdpHandle,
    token: usize,
}

impl UdpSocket {
    /// Bind to `port` (0 picks a free ephemeral port).
    pub fn bind(net: &Net, port: u16) -> io::Result<UdpSocket> {
        let handle = net.with_stack(|s| s.udp_bind(port)).map_err(|e| io::Error::new(io::ErrorKind::AddrInUse, e))?;
        match net.register(Socket::Udp(handle), Interest::READABLE | Interest::WRITABLE) {
            Ok(token) => Ok(UdpSocket { net: net.clone(), handle, token }),
            Err(e) => {
                net.with_stack(|s| s.udp_close(handle));
                Err(e)
            }
        }
    }

    /// The address it is bound to.
    pub fn local_addr(&self) -> io::Result<SocketAddr> {
        let (ip, port) = self.net.with_stack(|s| (s.config().ipv4.addr, s.udp_local_port(self.handle)));
        let port = port.ok_or_else(|| io::Error::from(io::ErrorKind::NotConnected))?;
        Ok(SocketAddr::V4(SocketAddrV4::new(ip, port)))
    }

    /// Send one datagram to `target`, waiting while the send queue is full.
    pub async fn send_to(&self, data: &[u8], target: SocketAddrV4) -> io::Result<usize> {
        poll_fn(|cx| self.poll_send_to(cx, data, target)).await
    }

    /// Poll to send one datagram (see [`UdpSocket::send_to`]).
    pub fn poll_send_to(&self, cx: &mut Context<'_>, data: &[u8], target: SocketAddrV4) -> Poll<io::Result<usize>> {
        let mut st = self.net.state();
        match st.stack.udp_send_to(self.handle, target, data) {
            Ok(()) => {
                drop(st);
                self.net.kick();
                Poll::Ready(Ok(data.len()))
            }
            Err(UdpSendError::WouldBlock) => {
                st.wait(self.token, Dir::Write, cx);
                Poll::Pending
            }
            Err(e @ UdpSendError::TooBig { .. }) => Poll::Ready(Err(io::Error::new(io::ErrorKind::InvalidInput, e))),
            Err(e) => Poll::Ready(Err(io::Error::new(io::ErrorKind::NotConnected, e))),
        }
    }

    /// The next datagram, copied into `buf` (truncated if it does not fit),
    /// with its length and sender. Cancellation-safe.
    pub async fn recv_from(&self, buf: &mut [u8]) -> io::Result<(usize, SocketAddr)> {
        poll_fn(|cx| self.poll_recv_from(cx, buf)).await
    }

    /// Poll for the next datagram (see [`UdpSocket::recv_from`]).
    pub fn poll_recv_from(&self, cx: &mut Context<'_>, buf: &mut [u8]) -> Poll<io::Result<(usize, SocketAddr)>> {
        let mut st = self.net.state();
        match st.stack.udp_recv_from(self.handle, buf) {
            Some((n, from)) => Poll::Ready(Ok((n.min(buf.len()), from))),
            None => {
                st.wait(self.token, Dir::Read, cx);
                Poll::Pending
            }
        }
    }
}

impl Drop for UdpSocket {
    fn drop(&mut self) {
        let mut st = self.net.state();
        st.stack.udp_close(self.handle);
        self.net.release(&mut st, self.token);
    }
}
