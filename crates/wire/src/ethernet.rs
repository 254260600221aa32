//! Ethernet II frames, recognising one 802.1Q VLAN tag.
//!
//! After [`EthernetFrame::new_checked`] returns `Ok`, no accessor panics.

use core::fmt;
use core::str::FromStr;

use crate::bytes::{get_u16, set_u16};
use crate::{Error, Result};

/// Length of an untagged Ethernet II header.
pub const ETHERNET_HEADER_LEN: usize = 14;
/// Length of an 802.1Q tag (TPID + TCI).
pub const VLAN_TAG_LEN: usize = 4;

const TPID_8021Q: u16 = 0x8100;

/// A 48-bit MAC address.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct EthernetAddress(pub [u8; 6]);

impl EthernetAddress {
    /// The broadcast address `ff:ff:ff:ff:ff:ff`.
    pub const BROADCAST: EthernetAddress = EthernetAddress([0xff; 6]);

    /// Builds an address from a slice; `None` unless it is exactly 6 bytes.
    pub fn from_bytes(b: &[u8]) -> Option<EthernetAddress> {
        <[u8; 6]>::try_from(b).ok().map(EthernetAddress)
    }
    /// The six octets.
    pub fn as_bytes(&self) -> &[u8] {
        &self.0
    }
    /// Whether this is the broadcast address.
    pub fn is_broadcast(&self) -> bool {
        *self == Self::BROADCAST
    }
    /// Whether the group bit is set (broadcast is also multicast).
    pub fn is_multicast(&self) -> bool {
        self.0[0] & 0x01 != 0
    }
    /// Whether this is an individual (unicast) address.
    pub fn is_unicast(&self) -> bool {
        !self.is_multicast()
    }
}

impl fmt::Display for EthernetAddress {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let b = &self.0;
        write!(f, "{:02x}:{:02x}:{:02x}:{:02x}:{:02x}:{:02x}", b[0], b[1], b[2], b[3], b[4], b[5])
    }
}

impl FromStr for EthernetAddress {
    type Err = Error;
    /// Parses `aa:bb:cc:dd:ee:ff` (also accepts `-` as separator).
    fn from_str(s: &str) -> Result<Self> {
        let mut out = [0u8; 6];
        let mut parts = s.split([':', '-']);
        for byte in out.iter_mut() {
            let p = parts.next().ok_or(Error::Malformed)?;
            if p.is_empty() || p.len() > 2 {
                return Err(Error::Malformed);
            }
            *byte = u8::from_str_radix(p, 16).map_err(|_| Error::Malformed)?;
        }
        if parts.next().is_some() {
            return Err(Error::Malformed);
        }
        Ok(EthernetAddress(out))
    }
}

/// The EtherType field.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum EtherType {
    /// 0x0800
    Ipv4,
    /// 0x0806
    Arp,
    /// 0x86dd
    Ipv6,
    /// 0x8100 (802.1Q tag)
    Vlan,
    /// Any other value.
    Unknown(u16),
}

impl From<u16> for EtherType {
    fn from(v: u16) -> Self {
        match v {
            0x0800 => EtherType::Ipv4,
            0x0806 => EtherType::Arp,
            0x86dd => EtherType::Ipv6,
            0x8100 => EtherType::Vlan,
            other => EtherType::Unknown(other),
        }
    }
}

impl From<EtherType> for u16 {
    fn from(t: EtherType) -> u16 {
        match t {
            EtherType::Ipv4 => 0x0800,
            EtherType::Arp => 0x0806,
            EtherType::Ipv6 => 0x86dd,
            EtherType::Vlan => 0x8100,
            EtherType::Unknown(v) => v,
        }
    }
}

/// The address in `b[at..at + 6]`: one range check, not one per byte.
fn mac_at(b: &[u8], at: usize) -> EthernetAddress {
    let mut a = [0u8; 6];
    a.copy_from_slice(&b[at..at + 6]);
    EthernetAddress(a)
}

/// A zero-copy view of an Ethernet II frame.
///
/// After [`new_checked`](Self::new_checked) returns `Ok`, no accessor panics.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct EthernetFrame<T: AsRef<[u8]>> {
    buffer: T,
}

impl<T: AsRef<[u8]>> EthernetFrame<T> {
    /// Wraps a buffer without validating it.
    pub const fn new_unchecked(buffer: T) -> Self {
        EthernetFrame { buffer }
    }

    /// Wraps a buffer, checking that it holds the whole header (including the
    /// 802.1Q tag when the frame is tagged).
    pub fn new_checked(buffer: T) -> Result<Self> {
        let frame = Self::new_unchecked(buffer);
        frame.check_len()?;
        Ok(frame)
    }

    /// Checks that the buffer holds the whole header.
    pub fn check_len(&self) -> Result<()> {
        let b = self.buffer.as_ref();
        if b.len() < ETHERNET_HEADER_LEN {
            return Err(Error::Truncated);
        }
        if get_u16(b, 12) == TPID_8021Q && b.len() < ETHERNET_HEADER_LEN + VLAN_TAG_LEN {
            return Err(Error::Truncated);
        }
        Ok(())
    }

    /// Returns the underlying buffer.
    pub fn into_inner(self) -> T {
        self.buffer
    }

    /// Destination address.
    pub fn dst_addr(&self) -> EthernetAddress {
        mac_at(self.buffer.as_ref(), 0)
    }

    /// Source address.
    pub fn src_addr(&self) -> EthernetAddress {
        mac_at(self.buffer.as_ref(), 6)
    }

    fn is_tagged(&self) -> bool {
        let b = self.buffer.as_ref();
        get_u16(b, 12) == TPID_8021Q && b.len() >= ETHERNET_HEADER_LEN + VLAN_TAG_LEN
    }

    /// The EtherType of the payload (the inner one when 802.1Q tagged).
    pub fn ethertype(&self) -> EtherType {
        let b = self.buffer.as_ref();
        if self.is_tagged() {
            EtherType::from(get_u16(b, 16))
        } else {
            EtherType::from(get_u16(b, 12))
        }
    }

    /// The 12-bit VLAN identifier when the frame carries an 802.1Q tag.
    pub fn vlan_id(&self) -> Option<u16> {
        self.is_tagged().then(|| get_u16(self.buffer.as_ref(), 14) & 0x0fff)
    }

    /// The 3-bit priority code point when the frame carries an 802.1Q tag.
    pub fn vlan_pcp(&self) -> Option<u8> {
        self.is_tagged().then(|| (get_u16(self.buffer.as_ref(), 14) >> 13) as u8)
    }

    /// Header length: 14, or 18 when tagged.
    pub fn header_len(&self) -> usize {
        if self.is_tagged() {
            ETHERNET_HEADER_LEN + VLAN_TAG_LEN
        } else {
            ETHERNET_HEADER_LEN
        }
    }

    /// The bytes after the header.
    pub fn payload(&self) -> &[u8] {
        self.buffer.as_ref().get(self.header_len()..).unwrap_or(&[])
    }
}

impl<'a, T: AsRef<[u8]> + ?Sized> EthernetFrame<&'a T> {
    /// The bytes after the header, borrowed for the buffer's lifetime (not the view's).
    pub fn into_payload(self) -> &'a [u8] {
        self.buffer.as_ref().get(self.header_len()..).unwrap_or(&[])
    }
}

impl<T: AsRef<[u8]> + AsMut<[u8]>> EthernetFrame<T> {
    /// Sets the destination address.
    pub fn set_dst_addr(&mut self, addr: EthernetAddress) {
        self.buffer.as_mut()[0..6].copy_from_slice(&addr.0);
    }

    /// Sets the source address.
    pub fn set_src_addr(&mut self, addr: EthernetAddress) {
        self.buffer.as_mut()[6..12].copy_from_slice(&addr.0);
    }

    /// Sets the EtherType that [`ethertype`](Self::ethertype) reads: the inner one
    /// if the frame is already tagged, otherwise the outer one.
    pub fn set_ethertype(&mut self, t: EtherType) {
        let at = if self.is_tagged() { 16 } else { 12 };
        set_u16(self.buffer.as_mut(), at, t.into());
    }

    /// Writes an 802.1Q tag (TPID and VLAN id, priority 0) at bytes 12..16; the
    /// payload EtherType then goes at 16..18 (set it afterwards).
    pub fn set_vlan_tag(&mut self, vlan_id: u16) {
        let b = self.buffer.as_mut();
        set_u16(b, 12, TPID_8021Q);
        set_u16(b, 14, vlan_id & 0x0fff);
    }

    /// The bytes after the header, mutably.
    pub fn payload_mut(&mut self) -> &mut [u8] {
        let at = self.header_len();
        self.buffer.as_mut().get_mut(at..).unwrap_or(&mut [])
    }
}

/// A parsed Ethernet II header.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct EthernetRepr {
    /// Source address.
    pub src_addr: EthernetAddress,
    /// Destination address.
    pub dst_addr: EthernetAddress,
    /// Payload EtherType (inner type for tagged frames).
    pub ethertype: EtherType,
    /// 802.1Q VLAN id (12 bits), if tagged.
    pub vlan_id: Option<u16>,
}

impl EthernetRepr {
    /// Parses a checked frame.
    pub fn parse<T: AsRef<[u8]> + ?Sized>(frame: &EthernetFrame<&T>) -> Result<Self> {
        frame.check_len()?;
        Ok(EthernetRepr {
            src_addr: frame.src_addr(),
            dst_addr: frame.dst_addr(),
            ethertype: frame.ethertype(),
            vlan_id: frame.vlan_id(),
        })
    }

    /// Header length on the wire: 14, or 18 with a VLAN tag.
    pub fn header_len(&self) -> usize {
        if self.vlan_id.is_some() {
            ETHERNET_HEADER_LEN + VLAN_TAG_LEN
        } else {
            ETHERNET_HEADER_LEN
        }
    }

    /// Writes the header. Panics if the buffer is shorter than `header_len()`.
    pub fn emit<T: AsRef<[u8]> + AsMut<[u8]>>(&self, frame: &mut EthernetFrame<T>) {
        frame.set_dst_addr(self.dst_addr);
        frame.set_src_addr(self.src_addr);
        let b = frame.buffer.as_mut();
        match self.vlan_id {
            Some(id) => {
                set_u16(b, 12, TPID_8021Q);
                set_u16(b, 14, id & 0x0fff);
                set_u16(b, 16, self.ethertype.into());
            }
            None => set_u16(b, 12, self.ethertype.into()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn address_text() {
        let a: EthernetAddress = "02:00:5e:10:ab:FF".parse().unwrap();
        assert_eq!(a.0, [2, 0, 0x5e, 0x10, 0xab, 0xff]);
        assert_eq!(a.to_string(), "02:00:5e:10:ab:ff");
        assert!(a.is_unicast());
        assert!(EthernetAddress::BROADCAST.is_multicast());
        assert!(EthernetAddress::BROADCAST.is_broadcast());
        assert!("02:00:5e:10:ab".parse::<EthernetAddress>().is_err());
        assert!("02:00:5e:10:ab:ff:00".parse::<EthernetAddress>().is_err());
        assert!("02:00:5e:10:ab:fff".parse::<EthernetAddress>().is_err());
    }

    #[test]
    fn tagged_frame() {
        let mut b = [0u8; 20];
        let repr = EthernetRepr {
            src_addr: EthernetAddress([2, 0, 0, 0, 0, 1]),
            dst_addr: EthernetAddress::BROADCAST,
            ethertype: EtherType::Arp,
            vlan_id: Some(42),
        };
        repr.emit(&mut EthernetFrame::new_unchecked(&mut b[..]));
        let f = EthernetFrame::new_checked(&b[..]).unwrap();
        assert_eq!(f.header_len(), 18);
        assert_eq!(f.payload().len(), 2);
        assert_eq!(EthernetRepr::parse(&f).unwrap(), repr);
        // A tag without room for the inner EtherType is truncated.
        assert_eq!(EthernetFrame::new_checked(&b[..17]).unwrap_err(), Error::Truncated);
    }
}
