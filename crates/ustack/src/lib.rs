//! ustack, a userspace TCP/IP stack, for your program: what an embedder
//! needs from the `ustack-*` crates, in one place.
//!
//! A [`Stack`] is the whole protocol engine (ARP, IPv4, ICMP, UDP, TCP) for
//! one interface; a device ([`TapDevice`], [`MemoryLink`], …) carries its
//! frames. Drive it one of two ways:
//! - **async**: [`net::Net`] and [`net::TcpListener`], [`net::TcpStream`],
//!   [`net::UdpSocket`], shaped like `tokio::net`'s, on a current-thread
//!   tokio runtime — hyper and other async code run on them;
//! - **event loop**: [`EventLoop`] polls the stack and your [`App`]s, which
//!   [register](Stack::register) their sockets and work on readiness
//!   [`Event`]s, like mio.
//!
//! # An echo server on a TAP device
//!
//! ```no_run
//! use tokio::io::{AsyncReadExt, AsyncWriteExt};
//! use ustack::net::{Net, TcpListener};
//! use ustack::{os_seed, EthernetAddress, Ipv4Cidr, Stack, StackConfig, TapDevice};
//!
//! async fn echo(net: Net, port: u16) -> std::io::Result<()> {
//!     let listener = TcpListener::bind(&net, port)?;
//!     loop {
//!         let (mut conn, _peer) = listener.accept().await?;
//!         tokio::task::spawn_local(async move {
//!             let mut buf = [0u8; 4096];
//!             while let Ok(n @ 1..) = conn.read(&mut buf).await {
//!                 if conn.write_all(&buf[..n]).await.is_err() {
//!                     break;
//!                 }
//!             } // dropping `conn` closes it
//!         });
//!     }
//! }
//!
//! fn main() -> Result<(), Box<dyn std::error::Error>> {
//!     let tap = TapDevice::open("ust0")?; // the kernel sees interface ust0 ...
//!     tap.set_host_addr("10.0.0.1".parse()?, 24)?; // ... as 10.0.0.1/24
//!     let ip = Ipv4Cidr::new("10.0.0.2".parse()?, 24).ok_or("bad prefix")?;
//!     let mac = EthernetAddress([0x02, 0, 0, 0, 0, 0x02]);
//!     let net = Net::new(Stack::new(StackConfig::new(mac, ip), os_seed()));
//!     let rt = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
//!     tokio::task::LocalSet::new().block_on(&rt, async {
//!         tokio::task::spawn_local(net.clone().drive(tap)); // frames in, frames out
//!         echo(net, 7).await
//!     })?;
//!     Ok(())
//! }
//! ```
//!
//! `nc 10.0.0.2 7` then echoes what you type. The same server on two stacks
//! joined by the in-memory link, with a client, needs no privileges:
//!
//! ```
//! # use tokio::io::{AsyncReadExt, AsyncWriteExt};
//! # use ustack::net::{Net, TcpListener, TcpStream};
//! # use ustack::{EthernetAddress, Ipv4Cidr, LinkConfig, MemoryLink, Stack, StackConfig};
//! # async fn echo(net: Net, port: u16) -> std::io::Result<()> {
//! #     let listener = TcpListener::bind(&net, port)?;
//! #     loop {
//! #         let (mut conn, _peer) = listener.accept().await?;
//! #         tokio::task::spawn_local(async move {
//! #             let mut buf = [0u8; 4096];
//! #             while let Ok(n @ 1..) = conn.read(&mut buf).await {
//! #                 if conn.write_all(&buf[..n]).await.is_err() {
//! #                     break;
//! #                 }
//! #             }
//! #         });
//! #     }
//! # }
//! let stack = |last: u8| {
//!     let ip = Ipv4Cidr::new([10, 0, 0, last].into(), 24).unwrap();
//!     Stack::new(StackConfig::new(EthernetAddress([2, 0, 0, 0, 0, last]), ip), u64::from(last))
//! };
//! let (client, server) = (Net::new(stack(1)), Net::new(stack(2)));
//! let (port_a, port_b) = MemoryLink::pair(LinkConfig::default(), 1);
//! let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
//! tokio::task::LocalSet::new().block_on(&rt, async {
//!     tokio::task::spawn_local(Net::drive_pair(client.clone(), port_a, server.clone(), port_b));
//!     tokio::task::spawn_local(echo(server, 7));
//!     let mut conn = TcpStream::connect(&client, "10.0.0.2:7".parse().unwrap()).await.unwrap();
//!     conn.write_all(b"hello").await.unwrap();
//!     let mut back = [0u8; 5];
//!     conn.read_exact(&mut back).await.unwrap();
//!     assert_eq!(&back, b"hello");
//! });
//! ```
//!
//! The crates behind it, for what this one does not re-export:
//! `ustack-core` (the sans-IO stack), `ustack-wire` (packet formats),
//! `ustack-device` (devices), `ustack-runtime` (the event loop and apps),
//! `ustack-net` (async sockets).

#![deny(missing_docs)]

pub use ustack_core::tcp::{self, ConnError, RecvError, SendError};
pub use ustack_core::{
    phy, BindError, ConnectError, Counters, Duration, EchoReply, Event, Instant, Interest, Ipv4Cidr, ListenError,
    NoSuchSocket, PingError, PingHandle, Readiness, Socket, Stack, StackConfig, TcpHandle, UdpHandle, UdpSendError,
};
pub use ustack_device::{
    DeviceError, FaultDevice, LinkConfig, MemoryLink, MemoryPort, PcapDevice, TapDevice, Waitable,
};
pub use ustack_runtime::{apps, os_seed, App, Clock, EventLoop, RunEnd, StopSignal, Waker};
pub use ustack_wire::EthernetAddress;

/// Async sockets on the stack, shaped like `tokio::net`'s (see `ustack-net`).
pub mod net {
    pub use ustack_net::{LocalExec, Net, TcpListener, TcpStream, UdpSocket};
}
