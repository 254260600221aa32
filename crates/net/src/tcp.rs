//! TCP: a listener and a stream, like `tokio::net`'s.

use crate::{conn_error, Dir, Net};
use std::future::poll_fn;
use std::io;
use std::net::{SocketAddr, SocketAddrV4};
use std::pin::Pin;
use std::task::{ready, Context, Poll};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use ustack_core::tcp::{RecvError, SendError, State};
use ustack_core::{Interest, Socket, TcpHandle};

/// Connections waiting to be accepted, at most (the listen backlog).
const BACKLOG: usize = 1024;

/// A TCP socket listening on a port of the stack.
pub struct TcpListener {
    net: Net,
    port: u16,
    token: usize,
}

impl TcpListener {
    /// Listen on `port` of the stack's address.
    pub fn bind(net: &Net, port: u16) -> io::Result<TcpListener> {
        net.with_stack(|s| s.tcp_listen(port, BACKLOG)).map_err(|e| io::Error::new(io::ErrorKind::AddrInUse, e))?;
        match net.register(Socket::Listener(port), Interest::READABLE) {
            Ok(token) => Ok(TcpListener { net: net.clone(), port, token }),
            Err(e) => {
                net.with_stack(|s| s.tcp_unlisten(port));
                Err(e)
            }
        }
    }

    /// The next connection and its peer's address. Cancellation-safe: a
    /// connection is taken only when it is returned.
    pub async fn accept(&self) -> io::Result<(TcpStream, SocketAddr)> {
        poll_fn(|cx| self.poll_accept(cx)).await
    }

    /// Poll for the next connection (see [`TcpListener::accept`]).
    pub fn poll_accept(&self, cx: &mut Context<'_>) -> Poll<io::Result<(TcpStream, SocketAddr)>> {
        let mut st = self.net.state();
        let Some(h) = st.stack.tcp_accept(self.port) else {
            st.wait(self.token, Dir::Read, cx);
            return Poll::Pending;
        };
        drop(st);
        let stream = TcpStream::new(&self.net, h)?;
        let peer = stream.peer_addr()?;
        Poll::Ready(Ok((stream, peer)))
    }

    /// The address it listens on.
    pub fn local_addr(&self) -> io::Result<SocketAddr> {
        let ip = self.net.with_stack(|s| s.config().ipv4.addr);
        Ok(SocketAddr::V4(SocketAddrV4::new(ip, self.port)))
    }
}

impl Drop for TcpListener {
    /// Stop listening; connections not yet accepted are reset.
    fn drop(&mut self) {
        let mut st = self.net.state();
        st.stack.tcp_unlisten(self.port);
        self.net.release(&mut st, self.token);
        drop(st);
        self.net.kick();
    }
}

/// A TCP connection on the stack. Reading and writing go through tokio's
/// `AsyncRead`/`AsyncWrite` (`tokio::io::AsyncReadExt` and friends).
/// Dropping it closes the connection gracefully.
pub struct TcpStream {
    net: Net,
    handle: TcpHandle,
    token: usize,
}

impl TcpStream {
    fn new(net: &Net, handle: TcpHandle) -> io::Result<TcpStream> {
        let token = match net.register(Socket::Tcp(handle), Interest::READABLE | Interest::WRITABLE) {
            Ok(t) => t,
            Err(e) => {
                net.with_stack(|s| s.tcp_abort(handle));
                return Err(e);
            }
        };
        Ok(TcpStream { net: net.clone(), handle, token })
    }

    /// Open a connection to `addr` (from an ephemeral port) and wait until it
    /// is established, refused or timed out. Cancelling the wait resets the
    /// connection attempt.
    pub async fn connect(net: &Net, addr: SocketAddrV4) -> io::Result<TcpStream> {
        let now = net.now();
        let h = net.with_stack(|s| s.tcp_connect(now, addr)).map_err(io::Error::other)?;
        let stream = TcpStream::new(net, h)?;
        net.kick();
        poll_fn(|cx| stream.poll_connected(cx)).await?;
        Ok(stream)
    }

    fn poll_connected(&self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let mut st = self.net.state();
        let Some(conn) = st.stack.tcp_connection(self.handle) else { return Poll::Ready(Err(conn_error(None))) };
        if let Some(e) = conn.error() {
            return Poll::Ready(Err(conn_error(Some(e))));
        }
        match conn.state() {
            State::SynSent | State::SynReceived => {
                st.wait(self.token, Dir::Write, cx);
                Poll::Pending
            }
            State::Closed => Poll::Ready(Err(conn_error(None))),
            _ => Poll::Ready(Ok(())),
        }
    }

    /// The peer's address.
    pub fn peer_addr(&self) -> io::Result<SocketAddr> {
        let t = self.four_tuple()?;
        Ok(SocketAddr::new(t.remote_addr, t.remote_port))
    }

    /// The local address.
    pub fn local_addr(&self) -> io::Result<SocketAddr> {
        let t = self.four_tuple()?;
        Ok(SocketAddr::new(t.local_addr, t.local_port))
    }

    fn four_tuple(&self) -> io::Result<ustack_core::tcp::FourTuple> {
        self.net.with_stack(|s| s.tcp_connection(self.handle).map(|c| c.four_tuple())).ok_or_else(|| conn_error(None))
    }

    /// Turn Nagle's algorithm off (`true`, like `TCP_NODELAY`) or on.
    pub fn set_nodelay(&self, nodelay: bool) -> io::Result<()> {
        self.net.with_stack(|s| s.tcp_set_nodelay(self.handle, nodelay));
        self.net.kick();
        Ok(())
    }

    /// The stack's handle of this connection, for calls on [`Net::with_stack`].
    pub fn handle(&self) -> TcpHandle {
        self.handle
    }

    fn read_into(&mut self, cx: &mut Context<'_>, buf: &mut [u8]) -> Poll<io::Result<usize>> {
        let mut st = self.net.state();
        match st.stack.tcp_recv(self.handle, buf) {
            Ok(n) => {
                drop(st);
                // Reading may open the window: let the driver say so.
                self.net.kick();
                Poll::Ready(Ok(n))
            }
            Err(RecvError::WouldBlock) => {
                st.wait(self.token, Dir::Read, cx);
                Poll::Pending
            }
            Err(RecvError::Connection(e)) => Poll::Ready(Err(conn_error(Some(e)))),
            Err(RecvError::Closed) => Poll::Ready(Err(conn_error(None))),
        }
    }

    fn write_from(&mut self, cx: &mut Context<'_>, data: &[u8]) -> Poll<io::Result<usize>> {
        let mut st = self.net.state();
        match st.stack.tcp_send(self.handle, data) {
            Ok(n) => {
                drop(st);
                self.net.kick();
                Poll::Ready(Ok(n))
            }
            Err(SendError::Full) => {
                st.wait(self.token, Dir::Write, cx);
                Poll::Pending
            }
            Err(SendError::Closing) => Poll::Ready(Err(io::ErrorKind::BrokenPipe.into())),
            Err(SendError::Closed(e)) => Poll::Ready(Err(e.map_or(io::ErrorKind::BrokenPipe.into(), |e| conn_error(Some(e))))),
        }
    }

    fn shutdown_write(&mut self) -> io::Result<()> {
        let r = self.net.with_stack(|s| s.tcp_shutdown(self.handle));
        self.net.kick();
        match r {
            Ok(()) | Err(SendError::Closing) => Ok(()),
            Err(SendError::Closed(e)) => Err(conn_error(e)),
            Err(SendError::Full) => Ok(()),
        }
    }
}

impl Drop for TcpStream {
    /// Close gracefully: a FIN follows the data already written.
    fn drop(&mut self) {
        let mut st = self.net.state();
        st.stack.tcp_close(self.handle);
        self.net.release(&mut st, self.token);
        drop(st);
        self.net.kick();
    }
}

impl AsyncRead for TcpStream {
    fn poll_read(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        if buf.remaining() == 0 {
            return Poll::Ready(Ok(()));
        }
        // Initialize only what the stack holds for us, not the whole buffer:
        // hyper hands over a fresh uninitialized one of 8 KiB or more on
        // every read, and zeroing it all cost more than the read.
        let ready_bytes = self.net.with_stack(|s| s.tcp_connection(self.handle).map_or(0, |c| c.recv_queue()));
        if ready_bytes == 0 {
            // Nothing to copy: this learns the end of the stream, an error,
            // or that it would block (which re-arms the event).
            let mut probe = [0u8; 1];
            let n = ready!(self.read_into(cx, &mut probe))?;
            buf.put_slice(&probe[..n]);
            return Poll::Ready(Ok(()));
        }
        let n = ready!(self.read_into(cx, buf.initialize_unfilled_to(ready_bytes.min(buf.remaining()))))?;
        buf.advance(n);
        Poll::Ready(Ok(()))
    }
}

impl AsyncWrite for TcpStream {
    fn poll_write(mut self: Pin<&mut Self>, cx: &mut Context<'_>, data: &[u8]) -> Poll<io::Result<usize>> {
        self.write_from(cx, data)
    }

    /// The data is in the stack's send buffer already; TCP sends it.
    fn poll_flush(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }

    /// Send a FIN after the data written; reading goes on.
    fn poll_shutdown(mut self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(self.shutdown_write())
    }
}

#[cfg(feature = "futures-io")]
impl futures_io::AsyncRead for TcpStream {
    fn poll_read(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut [u8]) -> Poll<io::Result<usize>> {
        self.read_into(cx, buf)
    }
}

#[cfg(feature = "futures-io")]
impl futures_io::AsyncWrite for TcpStream {
    fn poll_write(mut self: Pin<&mut Self>, cx: &mut Context<'_>, data: &[u8]) -> Poll<io::Result<usize>> {
        self.write_from(cx, data)
    }

    fn poll_flush(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }

    fn poll_close(mut self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(self.shutdown_write())
    }
}
