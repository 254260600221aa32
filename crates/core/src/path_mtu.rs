//! Path MTU discovery (RFC 1191) with RFC 5927's checks: ICMP
//! "fragmentation needed" lowers the MTU towards one destination in a
//! bounded cache whose entries expire, and TCP's segment size follows.
//!
//! An ICMP error is believed only when it quotes a TCP segment of one of our
//! connections whose sequence number lies in SND.UNA..SND.NXT
//! (`Connection::icmp_seq_acceptable`); anything else changes nothing and is
//! counted (`drop_icmp_pmtu_unmatched`, `drop_icmp_pmtu_bad_seq`). A believed
//! one can lower the MTU to no less than `StackConfig::pmtu_min` (552 by
//! default, Linux's `min_pmtu`), and only for destinations we have
//! connections to, in at most `pmtu_cache_size` entries: a flood of forged
//! messages can neither push segments below the floor nor grow the cache.
//! Entries expire after `pmtu_expiry` (10 minutes, Linux's `mtu_expires`),
//! and the path is tried at the link's MTU again (RFC 1191 §6.3).

use crate::config::StackConfig;
use crate::hash::{KeyedMap, KeyedState};
use crate::phy::TxQueue;
use crate::ip::Iface;
use crate::stack::Stack;
use crate::tcp::{FourTuple, SeqNumber};
use crate::time::{Duration, Instant};
use std::net::{IpAddr, Ipv4Addr};
use ustack_wire::{IpProtocol, Ipv4Repr, Ipv6Repr, IPV6_MIN_MTU};

/// RFC 1191 §7's plateau table, for routers that send no next-hop MTU.
const PLATEAUS: [usize; 9] = [32_000, 17_914, 8166, 4352, 2002, 1492, 1006, 508, 296];

#[derive(Clone, Copy, Debug)]
struct Entry {
    mtu: usize,
    expires: Instant,
}

/// Lowered MTUs by destination, bounded in entries and time.
#[derive(Debug)]
pub(crate) struct PathMtuCache {
    entries: KeyedMap<Ipv4Addr, Entry>,
    capacity: usize,
    expiry: Duration,
}

impl PathMtuCache {
    pub(crate) fn new(cfg: &StackConfig, hash_key: u64) -> PathMtuCache {
        PathMtuCache {
            entries: KeyedMap::with_capacity_and_hasher(cfg.pmtu_cache_size, KeyedState::new(hash_key)),
            capacity: cfg.pmtu_cache_size,
            expiry: cfg.pmtu_expiry,
        }
    }

    /// The MTU towards `dst` if it was lowered and has not expired.
    #[inline]
    pub(crate) fn get(&self, now: Instant, dst: Ipv4Addr) -> Option<usize> {
        if self.entries.is_empty() {
            return None; // the common case: no lookup at all
        }
        self.entries.get(&dst).filter(|e| now < e.expires).map(|e| e.mtu)
    }

    /// Destinations held (expired ones included until they are replaced).
    pub(crate) fn len(&self) -> usize {
        self.entries.len()
    }

    /// Record that the path to `dst` carries `mtu` (already at or above the
    /// floor and below the current value). A full cache drops its expired
    /// entries, then the one that would expire first.
    fn lower(&mut self, now: Instant, dst: Ipv4Addr, mtu: usize) {
        if self.capacity == 0 {
            return;
        }
        if !self.entries.contains_key(&dst) && self.entries.len() >= self.capacity {
            self.entries.retain(|_, e| now < e.expires);
            if self.entries.len() >= self.capacity {
                let oldest = self.entries.iter().min_by_key(|(_, e)| e.expires).map(|(&k, _)| k);
                if let Some(k) = oldest {
                    self.entries.remove(&k);
                }
            }
        }
        self.entries.insert(dst, Entry { mtu, expires: now + self.expiry });
    }
}

impl Iface {
    /// The largest IP packet to send towards `dst`: the link's MTU, or less
    /// where path MTU discovery found less.
    #[inline]
    pub(crate) fn path_mtu(&self, now: Instant, dst: Ipv4Addr) -> usize {
        self.path_mtus.get(now, dst).map_or(self.cfg.mtu, |m| m.min(self.cfg.mtu))
    }

    pub(crate) fn path_mtus_lower(&mut self, now: Instant, dst: Ipv4Addr, mtu: usize) {
        self.path_mtus.lower(now, dst, mtu);
    }
}

impl Stack {
    /// ICMP destination unreachable, "fragmentation needed and DF set"
    /// (code 4), quoting `header` and the first bytes of its payload.
    pub(crate) fn receive_frag_needed<T: TxQueue>(
        &mut self,
        now: Instant,
        next_hop_mtu: u16,
        header: &Ipv4Repr,
        quoted: &[u8],
        tx: &mut T,
    ) {
        self.iface.counters.icmp_frag_needed_rx += 1;
        // Only TCP can be checked against its window (RFC 5927 §4.1); a
        // quote of anything else, or not from us, is believed by no one.
        let ours = header.src_addr == self.iface.cfg.ipv4.addr;
        if !ours || header.protocol != IpProtocol::Tcp || quoted.len() < 8 {
            self.iface.counters.drop_icmp_pmtu_unmatched += 1;
            return;
        }
        let tuple = FourTuple {
            local_addr: header.src_addr.into(),
            local_port: u16::from_be_bytes([quoted[0], quoted[1]]),
            remote_addr: header.dst_addr.into(),
            remote_port: u16::from_be_bytes([quoted[2], quoted[3]]),
        };
        let seq = SeqNumber(u32::from_be_bytes([quoted[4], quoted[5], quoted[6], quoted[7]]));
        let current = self.iface.path_mtu(now, header.dst_addr);
        // RFC 1191 §5: a router that predates it says 0; take the plateau
        // below the datagram it quotes.
        let quoted_len = header.payload_len + ustack_wire::IPV4_HEADER_LEN;
        let reported = match usize::from(next_hop_mtu) {
            0 => PLATEAUS.into_iter().find(|&p| p < quoted_len).unwrap_or(68),
            m => m,
        };
        let mtu = reported.max(self.iface.cfg.pmtu_min);
        match self.tcp.path_mtu(&mut self.iface, now, &tuple, seq, current, mtu, tx) {
            PathMtuOutcome::NoConnection => self.iface.counters.drop_icmp_pmtu_unmatched += 1,
            PathMtuOutcome::BadSequence => self.iface.counters.drop_icmp_pmtu_bad_seq += 1,
            PathMtuOutcome::NotLower => self.iface.counters.drop_icmp_pmtu_not_lower += 1,
            PathMtuOutcome::Lowered => {
                self.iface.counters.rx_consumed += 1;
                self.iface.counters.pmtu_lowered += 1;
                if reported < mtu {
                    self.iface.counters.pmtu_floor_applied += 1;
                }
            }
        }
    }

    /// ICMPv6 Packet Too Big (RFC 8201), believed under the same rules as
    /// IPv4's: its quote must be a packet we sent from a connection we have
    /// (for TCP with its sequence number in SND.UNA..SND.NXT) or from a UDP
    /// socket bound to its source; then the path MTU towards the quoted
    /// destination is lowered, never under 1280. Anything else is counted
    /// and changes nothing (`drop_icmpv6_ptb_ignored`, `drop_icmpv6_ptb_bad_seq`).
    pub(crate) fn receive_packet_too_big<T: TxQueue>(
        &mut self,
        now: Instant,
        mtu: u32,
        header: &Ipv6Repr,
        quoted: &[u8],
        tx: &mut T,
    ) {
        let (src, dst) = (IpAddr::V6(header.src_addr), IpAddr::V6(header.dst_addr));
        // Our fragmented datagrams quote a fragment header first; only the
        // first fragment carries the ports.
        let (protocol, l4) = match header.next_header {
            IpProtocol::Ipv6Frag if quoted.len() >= 8 && u16::from_be_bytes([quoted[2], quoted[3]]) >> 3 == 0 => {
                (IpProtocol::from(quoted[0]), &quoted[8..])
            }
            p => (p, quoted),
        };
        let mtu = usize::try_from(mtu).unwrap_or(usize::MAX).max(IPV6_MIN_MTU);
        let current = self.iface.path_mtu_to(now, dst).0;
        if !self.iface.is_local(src) || l4.len() < 8 {
            self.iface.counters.drop_icmpv6_ptb_ignored += 1;
            return;
        }
        let ports = (u16::from_be_bytes([l4[0], l4[1]]), u16::from_be_bytes([l4[2], l4[3]]));
        let lowered = match protocol {
            IpProtocol::Tcp => {
                let tuple = FourTuple { local_addr: src, local_port: ports.0, remote_addr: dst, remote_port: ports.1 };
                let seq = SeqNumber(u32::from_be_bytes([l4[4], l4[5], l4[6], l4[7]]));
                match self.tcp.path_mtu(&mut self.iface, now, &tuple, seq, current, mtu, tx) {
                    PathMtuOutcome::Lowered => true,
                    PathMtuOutcome::BadSequence => {
                        self.iface.counters.drop_icmpv6_ptb_bad_seq += 1;
                        return;
                    }
                    PathMtuOutcome::NoConnection | PathMtuOutcome::NotLower => false,
                }
            }
            IpProtocol::Udp if self.udp.sends_from(src, ports.0) && mtu < current => {
                self.iface.lower_path_mtu6(now, header.dst_addr, mtu);
                true
            }
            _ => false,
        };
        let c = &mut self.iface.counters;
        if lowered {
            c.pmtu6_lowered += 1;
            c.rx_consumed += 1;
        } else {
            c.drop_icmpv6_ptb_ignored += 1;
        }
    }

    /// Destinations in the path MTU cache (bounded by `pmtu_cache_size`).
    pub fn path_mtu_entries(&self) -> usize {
        self.iface.path_mtus.len()
    }

    /// The MTU the stack uses towards `dst` at `now`.
    pub fn path_mtu(&self, now: Instant, dst: Ipv4Addr) -> usize {
        self.iface.path_mtu(now, dst)
    }
}

/// What a connection made of a "fragmentation needed".
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum PathMtuOutcome {
    NoConnection,
    BadSequence,
    NotLower,
    Lowered,
}
