//! Addresses over both IP versions: subnets ([`Ipv4Cidr`], [`Ipv6Cidr`],
//! [`IpCidr`]) and the IPv6 addresses a host derives for itself (link-local
//! from its MAC, RFC 4291 Appendix A; solicited-node multicast, RFC 4291
//! §2.7.1; the Ethernet group address of an IPv6 multicast, RFC 2464 §7).
//!
//! A single address over both versions is [`std::net::IpAddr`]: the standard
//! type already is the `IpAddress` a dual-stack caller needs.

use core::fmt;
use core::str::FromStr;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use crate::EthernetAddress;

/// An IPv4 address with its prefix length, e.g. `10.0.0.2/24`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Ipv4Cidr {
    /// The address itself (the host's own address when it configures an interface).
    pub addr: Ipv4Addr,
    /// Leading bits that name the subnet, 0 to 32 ([`Ipv4Cidr::new`] checks).
    pub prefix_len: u8,
}

impl Ipv4Cidr {
    /// `None` when the prefix is longer than 32.
    pub fn new(addr: Ipv4Addr, prefix_len: u8) -> Option<Ipv4Cidr> {
        (prefix_len <= 32).then_some(Ipv4Cidr { addr, prefix_len })
    }
    /// The subnet mask, e.g. 255.255.255.0 for /24 (0.0.0.0 for /0).
    pub fn netmask(&self) -> Ipv4Addr {
        let bits = if self.prefix_len == 0 { 0 } else { u32::MAX << (32 - u32::from(self.prefix_len)) };
        Ipv4Addr::from(bits)
    }
    /// Whether `ip` is on this subnet (on-link, reached without a gateway).
    pub fn contains(&self, ip: Ipv4Addr) -> bool {
        let mask = u32::from(self.netmask());
        u32::from(ip) & mask == u32::from(self.addr) & mask
    }
    /// The subnet's directed broadcast address (none for /31 and /32).
    pub fn broadcast(&self) -> Option<Ipv4Addr> {
        (self.prefix_len < 31).then(|| Ipv4Addr::from(u32::from(self.addr) | !u32::from(self.netmask())))
    }
}

impl fmt::Display for Ipv4Cidr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.addr, self.prefix_len)
    }
}

impl FromStr for Ipv4Cidr {
    type Err = CidrParseError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let (addr, len) = split_cidr(s).ok_or(CidrParseError::Ipv4)?;
        let addr = addr.parse().map_err(|_| CidrParseError::Ipv4)?;
        Ipv4Cidr::new(addr, len).ok_or(CidrParseError::Ipv4)
    }
}

/// An IPv6 address with its prefix length, e.g. `2001:db8::2/64`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Ipv6Cidr {
    /// The address itself.
    pub addr: Ipv6Addr,
    /// Leading bits that name the subnet, 0 to 128 ([`Ipv6Cidr::new`] checks).
    pub prefix_len: u8,
}

impl Ipv6Cidr {
    /// `None` when the prefix is longer than 128.
    pub fn new(addr: Ipv6Addr, prefix_len: u8) -> Option<Ipv6Cidr> {
        (prefix_len <= 128).then_some(Ipv6Cidr { addr, prefix_len })
    }
    /// The mask of the prefix, e.g. `ffff:ffff:ffff:ffff::` for /64.
    pub fn netmask(&self) -> Ipv6Addr {
        let bits = if self.prefix_len == 0 { 0 } else { u128::MAX << (128 - u32::from(self.prefix_len)) };
        Ipv6Addr::from(bits)
    }
    /// The prefix itself: the address with the host bits cleared.
    pub fn network(&self) -> Ipv6Addr {
        Ipv6Addr::from(u128::from(self.addr) & u128::from(self.netmask()))
    }
    /// Whether `ip` shares this prefix (on-link when the prefix is).
    pub fn contains(&self, ip: Ipv6Addr) -> bool {
        let mask = u128::from(self.netmask());
        u128::from(ip) & mask == u128::from(self.addr) & mask
    }
}

impl fmt::Display for Ipv6Cidr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.addr, self.prefix_len)
    }
}

impl FromStr for Ipv6Cidr {
    type Err = CidrParseError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let (addr, len) = split_cidr(s).ok_or(CidrParseError::Ipv6)?;
        let addr = addr.parse().map_err(|_| CidrParseError::Ipv6)?;
        Ipv6Cidr::new(addr, len).ok_or(CidrParseError::Ipv6)
    }
}

/// A subnet of either IP version.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum IpCidr {
    /// An IPv4 subnet.
    V4(Ipv4Cidr),
    /// An IPv6 subnet.
    V6(Ipv6Cidr),
}

impl IpCidr {
    /// `None` when the prefix is longer than the address (32 or 128 bits).
    pub fn new(addr: IpAddr, prefix_len: u8) -> Option<IpCidr> {
        match addr {
            IpAddr::V4(a) => Ipv4Cidr::new(a, prefix_len).map(IpCidr::V4),
            IpAddr::V6(a) => Ipv6Cidr::new(a, prefix_len).map(IpCidr::V6),
        }
    }
    /// The address.
    pub fn addr(&self) -> IpAddr {
        match self {
            IpCidr::V4(c) => IpAddr::V4(c.addr),
            IpCidr::V6(c) => IpAddr::V6(c.addr),
        }
    }
    /// The prefix length.
    pub fn prefix_len(&self) -> u8 {
        match self {
            IpCidr::V4(c) => c.prefix_len,
            IpCidr::V6(c) => c.prefix_len,
        }
    }
    /// Whether `ip` is on this subnet; an address of the other version never is.
    pub fn contains(&self, ip: IpAddr) -> bool {
        match (self, ip) {
            (IpCidr::V4(c), IpAddr::V4(a)) => c.contains(a),
            (IpCidr::V6(c), IpAddr::V6(a)) => c.contains(a),
            _ => false,
        }
    }
}

impl From<Ipv4Cidr> for IpCidr {
    fn from(c: Ipv4Cidr) -> Self {
        IpCidr::V4(c)
    }
}

impl From<Ipv6Cidr> for IpCidr {
    fn from(c: Ipv6Cidr) -> Self {
        IpCidr::V6(c)
    }
}

impl fmt::Display for IpCidr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            IpCidr::V4(c) => c.fmt(f),
            IpCidr::V6(c) => c.fmt(f),
        }
    }
}

impl FromStr for IpCidr {
    type Err = CidrParseError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let (addr, len) = split_cidr(s).ok_or(CidrParseError::Ip)?;
        let addr: IpAddr = addr.parse().map_err(|_| CidrParseError::Ip)?;
        IpCidr::new(addr, len).ok_or(CidrParseError::Ip)
    }
}

/// `ADDR/N` split, with `N` a decimal byte.
fn split_cidr(s: &str) -> Option<(&str, u8)> {
    let (addr, len) = s.split_once('/')?;
    Some((addr, len.parse().ok()?))
}

/// Why a string is not an address with a prefix length.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CidrParseError {
    /// Not `A.B.C.D/N` with `N` ≤ 32.
    Ipv4,
    /// Not an IPv6 address, `/`, and `N` ≤ 128.
    Ipv6,
    /// Neither of the two.
    Ip,
}

impl fmt::Display for CidrParseError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            CidrParseError::Ipv4 => "expected an IPv4 address with prefix length, like 10.0.0.2/24",
            CidrParseError::Ipv6 => "expected an IPv6 address with prefix length, like 2001:db8::2/64",
            CidrParseError::Ip => "expected an IP address with prefix length, like 10.0.0.2/24 or 2001:db8::2/64",
        })
    }
}

impl std::error::Error for CidrParseError {}

/// All nodes on the link, `ff02::1` (RFC 4291 §2.7.1).
pub const IPV6_ALL_NODES: Ipv6Addr = Ipv6Addr::new(0xff02, 0, 0, 0, 0, 0, 0, 1);
/// All routers on the link, `ff02::2` (RFC 4291 §2.7.1): router solicitations go here.
pub const IPV6_ALL_ROUTERS: Ipv6Addr = Ipv6Addr::new(0xff02, 0, 0, 0, 0, 0, 0, 2);
/// All MLDv2-capable routers, `ff02::16` (RFC 3810 §5.2.14): MLDv2 reports go here.
pub const IPV6_ALL_MLDV2_ROUTERS: Ipv6Addr = Ipv6Addr::new(0xff02, 0, 0, 0, 0, 0, 0, 0x16);

/// The solicited-node multicast address of `addr`, `ff02::1:ffXX:XXXX` with the
/// address's low 24 bits (RFC 4291 §2.7.1): neighbour solicitations for `addr`
/// are sent there, so a host joins it for each of its addresses.
pub fn ipv6_solicited_node(addr: Ipv6Addr) -> Ipv6Addr {
    let low24 = u128::from(addr) & 0x00ff_ffff;
    Ipv6Addr::from(u128::from(Ipv6Addr::new(0xff02, 0, 0, 0, 0, 1, 0xff00, 0)) | low24)
}

/// The modified EUI-64 interface identifier of a MAC (RFC 4291 Appendix A):
/// `ff:fe` inserted in the middle and the universal/local bit inverted.
pub fn eui64_interface_id(mac: EthernetAddress) -> [u8; 8] {
    let m = mac.0;
    [m[0] ^ 0x02, m[1], m[2], 0xff, 0xfe, m[3], m[4], m[5]]
}

/// The address formed from a /64 prefix and a MAC's modified EUI-64 (the
/// link-local address with `fe80::/64`, a SLAAC address with an advertised
/// prefix, RFC 4862 §5.3 and §5.5.3). Only the first 64 bits of `prefix` count.
pub fn ipv6_from_prefix_and_mac(prefix: Ipv6Addr, mac: EthernetAddress) -> Ipv6Addr {
    let mut b = prefix.octets();
    b[8..].copy_from_slice(&eui64_interface_id(mac));
    Ipv6Addr::from(b)
}

/// The link-local address of an interface with this MAC, `fe80::/64` plus the
/// modified EUI-64 (RFC 4862 §5.3).
pub fn ipv6_link_local(mac: EthernetAddress) -> Ipv6Addr {
    ipv6_from_prefix_and_mac(Ipv6Addr::new(0xfe80, 0, 0, 0, 0, 0, 0, 0), mac)
}

impl EthernetAddress {
    /// The Ethernet group address an IPv6 multicast is sent to: `33:33` and the
    /// address's low 32 bits (RFC 2464 §7). Meaningful for multicast `addr` only.
    pub fn from_ipv6_multicast(addr: Ipv6Addr) -> EthernetAddress {
        let o = addr.octets();
        EthernetAddress([0x33, 0x33, o[12], o[13], o[14], o[15]])
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn derived_addresses_match_rfc_examples() {
        // RFC 4291 Appendix A's example MAC 34-56-78-9A-BC-DE.
        let mac = EthernetAddress([0x34, 0x56, 0x78, 0x9a, 0xbc, 0xde]);
        assert_eq!(eui64_interface_id(mac), [0x36, 0x56, 0x78, 0xff, 0xfe, 0x9a, 0xbc, 0xde]);
        assert_eq!(ipv6_link_local(mac), "fe80::3656:78ff:fe9a:bcde".parse::<Ipv6Addr>().unwrap());
        let slaac = ipv6_from_prefix_and_mac("2001:db8:1:2::".parse().unwrap(), mac);
        assert_eq!(slaac, "2001:db8:1:2:3656:78ff:fe9a:bcde".parse::<Ipv6Addr>().unwrap());
        // RFC 4291 §2.7.1: 4037::01:800:200E:8C6C -> FF02::1:FF0E:8C6C.
        let a: Ipv6Addr = "4037::1:800:200e:8c6c".parse().unwrap();
        assert_eq!(ipv6_solicited_node(a), "ff02::1:ff0e:8c6c".parse::<Ipv6Addr>().unwrap());
        assert_eq!(
            EthernetAddress::from_ipv6_multicast(ipv6_solicited_node(a)),
            EthernetAddress([0x33, 0x33, 0xff, 0x0e, 0x8c, 0x6c])
        );
    }

    #[test]
    fn cidrs_parse_and_contain() {
        let c: Ipv6Cidr = "2001:db8::2/64".parse().unwrap();
        assert!(c.contains("2001:db8::ffff".parse().unwrap()));
        assert!(!c.contains("2001:db9::2".parse().unwrap()));
        assert_eq!(c.network(), "2001:db8::".parse::<Ipv6Addr>().unwrap());
        assert_eq!(c.to_string(), "2001:db8::2/64");
        assert_eq!("2001:db8::2/129".parse::<Ipv6Cidr>(), Err(CidrParseError::Ipv6));
        assert_eq!(Ipv6Cidr::new(Ipv6Addr::LOCALHOST, 0).unwrap().netmask(), Ipv6Addr::UNSPECIFIED);
        let any: IpCidr = "10.0.0.2/24".parse().unwrap();
        assert!(any.contains("10.0.0.9".parse().unwrap()));
        assert!(!any.contains("::ffff:10.0.0.9".parse().unwrap()));
        let any6: IpCidr = "fe80::1/10".parse().unwrap();
        assert_eq!(any6.prefix_len(), 10);
        assert!(any6.contains("febf::1".parse().unwrap()));
        assert_eq!("10.0.0.2".parse::<IpCidr>(), Err(CidrParseError::Ip));
        assert_eq!("10.0.0.2/33".parse::<Ipv4Cidr>(), Err(CidrParseError::Ipv4));
    }
}
