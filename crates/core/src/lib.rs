//! The ustack protocol engine, sans-IO.
//!
//! Nothing in this crate makes a system call, reads a clock or draws a random
//! number by itself: time comes in as [`time::Instant`] arguments, randomness
//! as a seed at construction, and frames through the [`phy`] traits.
//!
//! Layout, bottom up: `ip` is the IP layer of one interface (Ethernet, ARP
//! with the [`neighbor`] cache, IPv4 input and output, reassembly, the ICMP
//! the network layer answers); [`ipv6`] is IPv6's network layer (reassembly,
//! ICMPv6, NDP, SLAAC, MLD); [`icmp`] (ping sockets), [`udp`] and [`tcp`]
//! are the protocols above it; [`stack`] owns them all, hands what the IP
//! layer delivers to the protocol tables and gives them the IP layer as
//! their output; [`queue`] is the bounded
//! packet queue the sockets use; [`counters`] counts every packet handled and
//! every drop by reason.

#![deny(missing_docs)]

pub mod config;
pub mod counters;
mod hash;
pub mod icmp;
mod ip;
pub mod ipv6;
pub mod neighbor;
mod path_mtu;
pub mod phy;
pub mod queue;
pub mod rand;
pub mod readiness;
pub mod rss;
pub mod stack;
pub mod tcp;
mod tcp_sockets;
pub mod time;
pub mod timer;
pub mod udp;

pub use config::{Ipv4Cidr, StackConfig};
pub use counters::Counters;
pub use icmp::{EchoReply, PingError, PingHandle};
pub use readiness::{Event, Interest, NoSuchSocket, Readiness, Socket};
pub use stack::Stack;
pub use tcp_sockets::{ConnectError, ListenError, MoveError, MovedConnection, TcpHandle};
pub use time::{Duration, Instant};
pub use udp::{BindError, UdpHandle, UdpPeer, UdpSendError, MAX_UDP4_PAYLOAD, MAX_UDP6_PAYLOAD};
