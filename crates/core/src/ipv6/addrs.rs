//! The interface's addresses (RFC 4862), default routers and on-link
//! prefixes (RFC 4861 §5.1, §6.3.4), each in a bounded list, and RFC 7217's
//! stable interface identifiers.
//!
//! A list at its bound takes nothing more until an entry expires (a flood of
//! router advertisements with random prefixes costs a counter, not memory):
//! `ndp_router_list_full`, `ndp_prefix_list_full`, `ndp_address_table_full`.

use super::Ipv6Config;
use crate::tcp::siphash24;
use crate::time::{Duration, Instant};
use std::net::Ipv6Addr;
use ustack_wire::{ipv6_solicited_node, EthernetAddress, Ipv6Cidr};

/// Where an address came from.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AddrOrigin {
    /// `fe80::/64` and the modified EUI-64 of the MAC.
    LinkLocal,
    /// Configured (`--ip6 ADDR/N`).
    Static,
    /// Formed from an advertised prefix (SLAAC) with RFC 7217's identifier.
    Slaac {
        /// RFC 7217's DAD_Counter: how many identifiers were found in use before this one.
        dad_counter: u8,
    },
}

/// An address's state (RFC 4862 §2).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AddrState {
    /// Duplicate address detection is running: not used, not answered.
    Tentative,
    /// In use.
    Preferred,
    /// Still valid, not chosen for new communication.
    Deprecated,
}

/// One address of the interface.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Ipv6Address {
    /// The address and its prefix length.
    pub cidr: Ipv6Cidr,
    /// Its state.
    pub state: AddrState,
    /// Where it came from.
    pub origin: AddrOrigin,
    /// When it becomes deprecated ([`Instant::NEVER`]: never).
    pub preferred_until: Instant,
    /// When it is removed ([`Instant::NEVER`]: never).
    pub valid_until: Instant,
    /// Tentative: DAD solicitations still to send.
    pub(crate) dad_left: u8,
    /// Tentative: when the next DAD step is due.
    pub(crate) dad_next: Instant,
}

impl Ipv6Address {
    /// Its solicited-node multicast group.
    pub fn solicited_node(&self) -> Ipv6Addr {
        ipv6_solicited_node(self.cidr.addr)
    }

    /// Whether it may be used as a source or accepted as a destination.
    pub fn is_usable(&self) -> bool {
        self.state != AddrState::Tentative
    }

    fn next_event(&self) -> Instant {
        match self.state {
            AddrState::Tentative => self.dad_next,
            AddrState::Preferred => self.preferred_until.min(self.valid_until),
            AddrState::Deprecated => self.valid_until,
        }
    }
}

/// The interface's addresses, bounded.
#[derive(Debug)]
pub(crate) struct AddressTable {
    list: Vec<Ipv6Address>,
    capacity: usize,
}

impl AddressTable {
    pub(crate) fn new(cfg: &Ipv6Config) -> AddressTable {
        let capacity = cfg.max_addresses.max(1 + cfg.addresses.len());
        AddressTable { list: Vec::with_capacity(capacity), capacity }
    }

    pub(crate) fn iter(&self) -> impl Iterator<Item = &Ipv6Address> + '_ {
        self.list.iter()
    }

    pub(crate) fn get(&self, addr: Ipv6Addr) -> Option<&Ipv6Address> {
        self.list.iter().find(|a| a.cidr.addr == addr)
    }

    pub(crate) fn get_mut(&mut self, addr: Ipv6Addr) -> Option<&mut Ipv6Address> {
        self.list.iter_mut().find(|a| a.cidr.addr == addr)
    }

    /// Whether `addr` is one of ours and not tentative.
    pub(crate) fn is_usable(&self, addr: Ipv6Addr) -> bool {
        self.get(addr).is_some_and(Ipv6Address::is_usable)
    }

    /// False when the table is full or holds the address already.
    pub(crate) fn insert(&mut self, a: Ipv6Address) -> bool {
        if self.list.len() >= self.capacity || self.get(a.cidr.addr).is_some() {
            return false;
        }
        self.list.push(a);
        true
    }

    pub(crate) fn remove(&mut self, addr: Ipv6Addr) -> Option<Ipv6Address> {
        let i = self.list.iter().position(|a| a.cidr.addr == addr)?;
        Some(self.list.swap_remove(i))
    }

    /// The SLAAC address formed from `prefix`, if any.
    pub(crate) fn slaac_for(&mut self, prefix: Ipv6Cidr) -> Option<&mut Ipv6Address> {
        self.list.iter_mut().find(|a| {
            matches!(a.origin, AddrOrigin::Slaac { .. })
                && a.cidr.prefix_len == prefix.prefix_len
                && prefix.contains(a.cidr.addr)
        })
    }

    pub(crate) fn poll_timeout(&self) -> Option<Instant> {
        self.list.iter().map(Ipv6Address::next_event).filter(|&t| t < Instant::NEVER).min()
    }

    /// Whether `dst` is on-link by one of our prefixes (link-local included).
    pub(crate) fn on_link(&self, dst: Ipv6Addr) -> bool {
        self.list.iter().any(|a| a.cidr.contains(dst))
    }
}

/// Default routers with their expiry, bounded.
#[derive(Debug)]
pub(crate) struct Routers {
    list: Vec<(Ipv6Addr, Instant)>,
    capacity: usize,
}

impl Routers {
    pub(crate) fn new(capacity: usize) -> Routers {
        Routers { list: Vec::with_capacity(capacity), capacity }
    }

    pub(crate) fn iter(&self) -> impl Iterator<Item = Ipv6Addr> + '_ {
        self.list.iter().map(|&(a, _)| a)
    }

    /// Add, refresh, or (lifetime 0) remove. False when the list is full.
    pub(crate) fn update(&mut self, now: Instant, router: Ipv6Addr, lifetime: Duration) -> bool {
        let at = self.list.iter().position(|&(a, _)| a == router);
        match at {
            Some(i) if lifetime.is_zero() => {
                self.list.remove(i);
            }
            Some(i) => self.list[i].1 = now + lifetime,
            None if lifetime.is_zero() => {}
            None if self.list.len() >= self.capacity => return false,
            None => self.list.push((router, now + lifetime)),
        }
        true
    }

    pub(crate) fn remove(&mut self, router: Ipv6Addr) {
        self.list.retain(|&(a, _)| a != router);
    }

    pub(crate) fn poll_timeout(&self) -> Option<Instant> {
        self.list.iter().map(|&(_, t)| t).min()
    }

    pub(crate) fn expire(&mut self, now: Instant) {
        self.list.retain(|&(_, t)| t > now);
    }
}

/// On-link prefixes with their expiry, bounded.
#[derive(Debug)]
pub(crate) struct Prefixes {
    list: Vec<(Ipv6Cidr, Instant)>,
    capacity: usize,
}

impl Prefixes {
    pub(crate) fn new(capacity: usize) -> Prefixes {
        Prefixes { list: Vec::with_capacity(capacity), capacity }
    }

    pub(crate) fn iter(&self) -> impl Iterator<Item = Ipv6Cidr> + '_ {
        self.list.iter().map(|&(p, _)| p)
    }

    /// Add, refresh, or (lifetime 0) remove. False when the list is full.
    pub(crate) fn update(&mut self, now: Instant, prefix: Ipv6Cidr, lifetime: Instant) -> bool {
        let at = self.list.iter().position(|&(p, _)| p == prefix);
        match at {
            Some(i) if lifetime <= now => {
                self.list.remove(i);
            }
            Some(i) => self.list[i].1 = lifetime,
            None if lifetime <= now => {}
            None if self.list.len() >= self.capacity => return false,
            None => self.list.push((prefix, lifetime)),
        }
        true
    }

    pub(crate) fn contains(&self, dst: Ipv6Addr) -> bool {
        self.list.iter().any(|(p, _)| p.contains(dst))
    }

    pub(crate) fn poll_timeout(&self) -> Option<Instant> {
        self.list.iter().map(|&(_, t)| t).filter(|&t| t < Instant::NEVER).min()
    }

    pub(crate) fn expire(&mut self, now: Instant) {
        self.list.retain(|&(_, t)| t > now);
    }
}

/// A lifetime in seconds from a prefix option as an instant (0xffffffff: never).
pub(crate) fn lifetime_end(now: Instant, secs: u32) -> Instant {
    if secs == u32::MAX {
        Instant::NEVER
    } else {
        now + Duration::from_secs(u64::from(secs))
    }
}

/// RFC 7217's stable, opaque interface identifier: F(Prefix, Net_Iface,
/// DAD_Counter, secret_key), with SipHash-2-4 keyed by the secret as F (the one TCP's RFC 6528
/// ISNs use) (a
/// pseudorandom function, as §5 asks). The same secret, MAC and prefix
/// always give the same address; another prefix gives an unrelated one.
pub fn stable_interface_id(secret: &[u8; 16], prefix: Ipv6Addr, mac: EthernetAddress, dad_counter: u8) -> [u8; 8] {
    let mut msg = [0u8; 15];
    msg[..8].copy_from_slice(&prefix.octets()[..8]);
    msg[8..14].copy_from_slice(&mac.0);
    msg[14] = dad_counter;
    let mut id = siphash24(secret, &msg).to_be_bytes();
    if id == [0; 8] {
        id[7] = 1; // RFC 5453: the all-zero identifier is the subnet-router anycast
    }
    id
}

/// The SLAAC address from a /64 `prefix` with the stable identifier.
pub(crate) fn slaac_address(secret: &[u8; 16], prefix: Ipv6Addr, mac: EthernetAddress, dad_counter: u8) -> Ipv6Addr {
    let mut b = prefix.octets();
    b[8..].copy_from_slice(&stable_interface_id(secret, prefix, mac, dad_counter));
    Ipv6Addr::from(b)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stable_ids_are_stable_per_prefix_and_differ_across_prefixes_and_counters() {
        let secret = [7u8; 16];
        let mac = EthernetAddress([2, 0, 0, 0, 0, 1]);
        let p1: Ipv6Addr = "2001:db8:1::".parse().unwrap();
        let p2: Ipv6Addr = "2001:db8:2::".parse().unwrap();
        let a = slaac_address(&secret, p1, mac, 0);
        assert_eq!(a, slaac_address(&secret, p1, mac, 0));
        assert_eq!(&a.octets()[..8], &p1.octets()[..8]);
        assert_ne!(a.octets()[8..], slaac_address(&secret, p2, mac, 0).octets()[8..]);
        assert_ne!(a, slaac_address(&secret, p1, mac, 1));
        assert_ne!(a, slaac_address(&[8; 16], p1, mac, 0));
    }

    #[test]
    fn lists_are_bounded_and_expire() {
        let mut r = Routers::new(2);
        let t = Instant::from_secs(1);
        let a = |n| Ipv6Addr::new(0xfe80, 0, 0, 0, 0, 0, 0, n);
        assert!(r.update(t, a(1), Duration::from_secs(10)));
        assert!(r.update(t, a(2), Duration::from_secs(20)));
        assert!(!r.update(t, a(3), Duration::from_secs(10)));
        assert!(r.update(t, a(1), Duration::ZERO));
        assert_eq!(r.iter().collect::<Vec<_>>(), vec![a(2)]);
        r.expire(t + Duration::from_secs(20));
        assert_eq!(r.iter().count(), 0);
        let mut p = Prefixes::new(1);
        let c = |s: &str| s.parse::<Ipv6Cidr>().unwrap();
        assert!(p.update(t, c("2001:db8:1::/64"), lifetime_end(t, 5)));
        assert!(!p.update(t, c("2001:db8:2::/64"), lifetime_end(t, 5)));
        assert!(p.contains("2001:db8:1::9".parse().unwrap()));
        assert_eq!(p.poll_timeout(), Some(t + Duration::from_secs(5)));
        assert!(p.update(t, c("2001:db8:1::/64"), lifetime_end(t, u32::MAX)));
        assert_eq!(p.poll_timeout(), None);
    }
}
