//! Wire formats: zero-copy views and checked representations of Ethernet II
//! (with 802.1Q tags), ARP, IPv4, ICMPv4, UDP and TCP; IPv6 with its extension
//! headers, ICMPv6, neighbour discovery and MLDv2; subnets and addresses of
//! both IP versions.
//!
//! # Shape
//!
//! Every protocol has two types, in the manner of smoltcp's `wire` module:
//!
//! * a **view** (`EthernetFrame<T>`, `Ipv4Packet<T>`, `TcpPacket<T>`, ...) over any
//!   `T: AsRef<[u8]>`, with one accessor per header field. `new_checked` validates
//!   every length the accessors rely on *once*; after it has returned `Ok`, **no
//!   accessor of that view can panic** (variable-length regions such as payloads and
//!   options are additionally read with bounds-checked `get`, so even setters that
//!   change a length field cannot make a later accessor panic). `new_unchecked` skips
//!   the validation and is meant for emitting into a buffer the caller sized itself.
//! * a **representation** (`Ipv4Repr`, `TcpRepr`, ...) that `parse`s from a checked
//!   view into typed, validated fields (borrowing the payload) and `emit`s back into
//!   a view. Emitting into a buffer shorter than the repr's `buffer_len()` is a
//!   programming error and panics.
//!
//! # Guarantees
//!
//! * **Parsing is total**: any byte string yields a value or a typed [`Error`]; no
//!   panic, no arithmetic overflow, no endless option loop, no out-of-bounds read.
//! * **No allocation** anywhere, **no dependencies**.
//!
//! # Modules
//!
//! [`checksum`] holds the Internet checksum (RFC 1071), its incremental update
//! (RFC 1624) and both pseudo headers (TCP and UDP take either address family
//! through [`checksum::PseudoHeader`]). [`build`] writes whole Ethernet + IPv4 + {ICMP, UDP, TCP} frames in
//! one call (it is a library module; it has nothing to do with a Cargo build script).

#![forbid(unsafe_code)]
#![deny(missing_docs)]

use core::fmt;

pub mod build;
pub mod checksum;

mod arp;
mod ethernet;
mod icmp;
mod icmpv4;
mod icmpv6;
mod ip;
mod ipv4;
mod ipv6;
mod ipv6ext;
mod mld;
mod ndisc;
mod tcp;
mod udp;

pub use arp::{ArpOperation, ArpPacket, ArpRepr, ARP_ETHERNET_IPV4_LEN};
pub use ethernet::{EtherType, EthernetAddress, EthernetFrame, EthernetRepr, ETHERNET_HEADER_LEN, VLAN_TAG_LEN};
pub use icmpv4::{
    Icmpv4DstUnreachable, Icmpv4Packet, Icmpv4Repr, Icmpv4TimeExceeded, ICMPV4_ERROR_DATA_LEN, ICMPV4_HEADER_LEN,
};
pub use icmpv6::{
    Icmpv6DstUnreachable, Icmpv6Packet, Icmpv6ParamProblem, Icmpv6Repr, Icmpv6TimeExceeded, ICMPV6_HEADER_LEN,
};
pub use ip::{
    eui64_interface_id, ipv6_from_prefix_and_mac, ipv6_link_local, ipv6_solicited_node, CidrParseError, IpCidr,
    Ipv4Cidr, Ipv6Cidr, IPV6_ALL_MLDV2_ROUTERS, IPV6_ALL_NODES, IPV6_ALL_ROUTERS,
};
pub use ipv4::{IpProtocol, Ipv4Packet, Ipv4Repr, IPV4_HEADER_LEN};
pub use ipv6::{Ipv6Packet, Ipv6Repr, IPV6_HEADER_LEN, IPV6_MIN_MTU};
pub use ipv6ext::{
    Ipv6ExtChain, Ipv6ExtError, Ipv6ExtLimits, Ipv6FragmentRepr, Ipv6Option, Ipv6OptionAction, Ipv6Options,
    Ipv6OptionsRepr, Ipv6RoutingRepr, IPV6_FRAGMENT_HEADER_LEN, IPV6_ROUTER_ALERT_MLD, IPV6_ROUTING_TYPE0,
};
pub use mld::{MldAddressRecordRepr, MldRecordType, MldRecords, MldRepr};
pub use ndisc::{NdiscNeighborFlags, NdiscPrefixInfo, NdiscPrefixes, NdiscRepr};
pub use tcp::{TcpFlags, TcpOption, TcpPacket, TcpRepr, TcpSeqNumber, TCP_HEADER_LEN, TCP_MAX_HEADER_LEN};
pub use udp::{UdpPacket, UdpRepr, UDP_HEADER_LEN};

/// Why a byte string is not a valid packet.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Error {
    /// The buffer is shorter than a header or a length field says it must be.
    Truncated,
    /// A field holds a value the format forbids (bad version, bad option length, ...).
    Malformed,
    /// The checksum does not verify.
    Checksum,
    /// Well-formed, but a variant this crate does not handle (e.g. non-IPv4 ARP).
    Unsupported,
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Error::Truncated => "truncated packet",
            Error::Malformed => "malformed packet",
            Error::Checksum => "checksum mismatch",
            Error::Unsupported => "unsupported packet",
        })
    }
}

impl std::error::Error for Error {}

/// Result of a wire-format operation.
pub type Result<T> = core::result::Result<T, Error>;

/// Whether checksums are verified on parse and computed on emit.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ChecksumMode {
    /// Parse: check the checksum; emit: compute it.
    Verify,
    /// Parse: skip the check; emit: leave the field zero (for hardware offload).
    Ignore,
}

/// Big-endian field helpers. They index directly: callers guarantee the bounds
/// (a view's `new_checked` did), so every use sits behind a length check.
pub(crate) mod bytes {
    // One range check per field, then a plain load: indexing byte by byte
    // costs a check and a branch per byte on every header read.
    #[inline]
    pub fn get_u16(b: &[u8], at: usize) -> u16 {
        let mut w = [0u8; 2];
        w.copy_from_slice(&b[at..at + 2]);
        u16::from_be_bytes(w)
    }
    #[inline]
    pub fn get_u32(b: &[u8], at: usize) -> u32 {
        let mut w = [0u8; 4];
        w.copy_from_slice(&b[at..at + 4]);
        u32::from_be_bytes(w)
    }
    #[inline]
    pub fn set_u16(b: &mut [u8], at: usize, v: u16) {
        b[at..at + 2].copy_from_slice(&v.to_be_bytes());
    }
    #[inline]
    pub fn set_u32(b: &mut [u8], at: usize, v: u32) {
        b[at..at + 4].copy_from_slice(&v.to_be_bytes());
    }
    #[inline]
    pub fn get_ipv4(b: &[u8], at: usize) -> std::net::Ipv4Addr {
        let mut w = [0u8; 4];
        w.copy_from_slice(&b[at..at + 4]);
        std::net::Ipv4Addr::from(w)
    }
    #[inline]
    pub fn set_ipv4(b: &mut [u8], at: usize, a: std::net::Ipv4Addr) {
        b[at..at + 4].copy_from_slice(&a.octets());
    }
    #[inline]
    pub fn get_ipv6(b: &[u8], at: usize) -> std::net::Ipv6Addr {
        let mut w = [0u8; 16];
        w.copy_from_slice(&b[at..at + 16]);
        std::net::Ipv6Addr::from(w)
    }
    #[inline]
    pub fn set_ipv6(b: &mut [u8], at: usize, a: std::net::Ipv6Addr) {
        b[at..at + 16].copy_from_slice(&a.octets());
    }
}
