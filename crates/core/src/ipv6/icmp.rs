//! ICMPv6 (RFC 4443): echo replies, error messages under RFC 4443 §2.4's
//! rules and a token bucket, and Packet Too Big feeding a bounded path MTU
//! cache (RFC 8201) that never goes under the IPv6 minimum of 1280.
//!
//! No error is sent about an ICMPv6 error or a redirect, about a packet
//! from the unspecified or a multicast address, or about a packet sent to a
//! multicast address or as a link-layer multicast, except Packet Too Big
//! and a parameter problem for an unknown option whose action bits are `10`
//! (§2.4 (e.3)); the ones allowed are rate-limited (`icmp_error_rate`,
//! `icmp_error_burst`; `icmpv6_errors_rate_limited`). An error quotes as
//! much of the offending packet as fits in 1280 bytes.

use super::ext::Problem;
use super::{Ipv6Config, Ipv6Delivery, Ipv6Input, Ipv6Layer};
use crate::counters::Counters;
use crate::hash::{KeyedMap, KeyedState};
use crate::phy::TxQueue;
use crate::time::{Duration, Instant};
use std::net::Ipv6Addr;
use ustack_wire::{
    ChecksumMode, Error, Icmpv6DstUnreachable, Icmpv6Packet, Icmpv6Repr, Icmpv6TimeExceeded, IpProtocol, Ipv6ExtChain,
    Ipv6ExtLimits, Ipv6Packet, Ipv6Repr, ICMPV6_HEADER_LEN, IPV6_HEADER_LEN, IPV6_MIN_MTU,
};

/// The most of an offending packet an error quotes: the error fits in 1280 bytes.
pub(crate) const MAX_QUOTE: usize = IPV6_MIN_MTU - IPV6_HEADER_LEN - ICMPV6_HEADER_LEN;

/// Lowered MTUs by destination, bounded in entries and time.
#[derive(Debug)]
pub(crate) struct PathMtu6 {
    entries: KeyedMap<Ipv6Addr, (usize, Instant)>,
    capacity: usize,
    expiry: Duration,
}

impl PathMtu6 {
    pub(crate) fn new(cfg: &Ipv6Config, hash_key: u64) -> PathMtu6 {
        PathMtu6 {
            entries: KeyedMap::with_capacity_and_hasher(cfg.pmtu_cache_size, KeyedState::new(hash_key)),
            capacity: cfg.pmtu_cache_size,
            expiry: cfg.pmtu_expiry,
        }
    }

    pub(crate) fn get(&self, now: Instant, dst: Ipv6Addr) -> Option<usize> {
        if self.entries.is_empty() {
            return None;
        }
        self.entries.get(&dst).filter(|(_, t)| now < *t).map(|&(m, _)| m)
    }

    pub(crate) fn len(&self) -> usize {
        self.entries.len()
    }

    /// Remember `mtu` towards `dst`; a full cache drops the expired entries,
    /// then the one expiring first.
    fn lower(&mut self, now: Instant, dst: Ipv6Addr, mtu: usize) {
        if self.capacity == 0 {
            return;
        }
        if !self.entries.contains_key(&dst) && self.entries.len() >= self.capacity {
            self.entries.retain(|_, (_, t)| now < *t);
            if self.entries.len() >= self.capacity {
                let first = self.entries.iter().min_by_key(|(_, (_, t))| *t).map(|(&k, _)| k);
                if let Some(k) = first {
                    self.entries.remove(&k);
                }
            }
        }
        self.entries.insert(dst, (mtu, now + self.expiry));
    }
}

/// An error message to send, without its quote.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum ErrorKind {
    Unreachable(Icmpv6DstUnreachable),
    TimeExceeded(Icmpv6TimeExceeded),
    Problem(Problem),
}

/// Whether `packet` carries an ICMPv6 error or a redirect (never answered
/// with an error, RFC 4443 §2.4 (e.1)).
fn carries_error(ip: &Ipv6Repr, packet: &[u8]) -> bool {
    let payload = packet.get(IPV6_HEADER_LEN..).unwrap_or(&[]);
    let Ok(chain) = Ipv6ExtChain::walk(ip.next_header, payload, &Ipv6ExtLimits::default()) else { return false };
    if chain.upper_layer != IpProtocol::Icmpv6 || chain.fragment.is_some_and(|f| f.frag_offset != 0) {
        return false;
    }
    payload.get(chain.upper_offset).is_some_and(|&t| t < 128 || t == 137)
}

impl Ipv6Layer {
    /// An ICMPv6 message for us (its chain walked): answer, act, or deliver.
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn receive_icmp<T: TxQueue>(
        &mut self,
        now: Instant,
        counters: &mut Counters,
        ip: &Ipv6Repr,
        packet: &[u8],
        delivery: Ipv6Delivery,
        tx: &mut T,
    ) -> Ipv6Input {
        counters.icmpv6_rx += 1;
        let msg = &packet[delivery.payload.clone()];
        let Ok(p) = Icmpv6Packet::new_checked(msg) else {
            counters.drop_icmpv6_malformed += 1;
            return Ipv6Input::Done;
        };
        let repr = match Icmpv6Repr::parse(&p, ip.src_addr, ip.dst_addr, ChecksumMode::Verify) {
            Ok(repr) => repr,
            Err(Error::Checksum) => {
                counters.drop_icmpv6_checksum += 1;
                return Ipv6Input::Done;
            }
            Err(_) if (133..=137).contains(&p.msg_type()) => {
                counters.drop_ndp_invalid += 1;
                return Ipv6Input::Done;
            }
            Err(_) => {
                counters.drop_icmpv6_malformed += 1;
                return Ipv6Input::Done;
            }
        };
        let from_nobody_ok = matches!(repr, Icmpv6Repr::Ndisc(_) | Icmpv6Repr::Mld(_));
        if ip.src_addr.is_unspecified() && !from_nobody_ok {
            counters.drop_ipv6_martian += 1;
            return Ipv6Input::Done;
        }
        match repr {
            Icmpv6Repr::EchoRequest { ident, seq_no, data } => {
                self.answer_echo(now, counters, ip, ident, seq_no, data, tx);
                Ipv6Input::Done
            }
            // Believed only if it quotes a packet of a socket we have: the
            // upper layers check (RFC 8201 §4, RFC 5927 §4.1), then call
            // `lower_path_mtu`.
            Icmpv6Repr::PacketTooBig { .. } => {
                counters.icmpv6_ptb_rx += 1;
                Ipv6Input::Deliver(delivery)
            }
            Icmpv6Repr::EchoReply { .. }
            | Icmpv6Repr::DstUnreachable { .. }
            | Icmpv6Repr::TimeExceeded { .. }
            | Icmpv6Repr::ParamProblem { .. } => Ipv6Input::Deliver(delivery),
            Icmpv6Repr::Ndisc(n) => {
                self.receive_ndisc(now, counters, ip, n, tx);
                Ipv6Input::Done
            }
            Icmpv6Repr::Mld(m) => {
                self.receive_mld(now, counters, ip, m);
                Ipv6Input::Done
            }
            Icmpv6Repr::Other { .. } => {
                counters.drop_icmpv6_ignored += 1;
                Ipv6Input::Done
            }
        }
    }

    /// Echo reply (RFC 4443 §4.2), from the address the request was sent
    /// to, or for a multicast request from a unicast address of ours.
    #[allow(clippy::too_many_arguments)]
    fn answer_echo<T: TxQueue>(
        &mut self,
        now: Instant,
        counters: &mut Counters,
        ip: &Ipv6Repr,
        ident: u16,
        seq_no: u16,
        data: &[u8],
        tx: &mut T,
    ) {
        // Used either way: answered, or its reply counted as an egress drop.
        counters.rx_consumed += 1;
        let src = if ip.dst_addr.is_multicast() { self.select_source(ip.src_addr) } else { Some(ip.dst_addr) };
        let Some(src) = src else {
            counters.drop_no_route += 1; // every address still tentative
            return;
        };
        let reply = Icmpv6Repr::EchoReply { ident, seq_no, data };
        let dst = ip.src_addr;
        let sent = self.send(now, counters, tx, src, dst, IpProtocol::Icmpv6, reply.buffer_len(), |b| {
            reply.emit(&mut Icmpv6Packet::new_unchecked(b), src, dst, ChecksumMode::Verify)
        });
        if sent.is_ok() {
            counters.icmpv6_echo_replies_sent += 1;
        }
    }

    /// Lower the path MTU towards `dst` to `mtu`, never under 1280 (RFC
    /// 8201 §4), for a Packet Too Big whose quote the caller matched to one
    /// of its sockets. False (nothing changed) when it would not lower it.
    pub fn lower_path_mtu(&mut self, now: Instant, dst: Ipv6Addr, mtu: usize) -> bool {
        let mtu = mtu.max(IPV6_MIN_MTU);
        if mtu >= self.path_mtu(now, dst) {
            return false;
        }
        self.path_mtus.lower(now, dst, mtu);
        true
    }

    /// Send an error about `packet` (the offending packet from its IPv6
    /// header, trimmed to its length) if RFC 4443 §2.4 and the rate limit
    /// allow. `link_multicast`: it came in a link-layer multicast frame.
    pub(crate) fn send_error<T: TxQueue>(
        &mut self,
        now: Instant,
        counters: &mut Counters,
        tx: &mut T,
        kind: ErrorKind,
        packet: &[u8],
        link_multicast: bool,
    ) {
        let Ok(ip) = Ipv6Packet::new_checked_header(packet).and_then(|p| Ipv6Repr::parse(&p)) else { return };
        if ip.src_addr.is_unspecified() || ip.src_addr.is_multicast() || carries_error(&ip, packet) {
            return;
        }
        let multicast_ok = matches!(kind, ErrorKind::Problem(Problem { multicast_ok: true, .. }));
        if (ip.dst_addr.is_multicast() || link_multicast) && !multicast_ok {
            return;
        }
        if !self.errors.take(now) {
            counters.icmpv6_errors_rate_limited += 1;
            return;
        }
        let src = if self.addrs.is_usable(ip.dst_addr) { Some(ip.dst_addr) } else { self.select_source(ip.src_addr) };
        let Some(src) = src else { return };
        let data = &packet[IPV6_HEADER_LEN..packet.len().min(MAX_QUOTE)];
        let header = ip;
        let repr = match kind {
            ErrorKind::Unreachable(reason) => Icmpv6Repr::DstUnreachable { reason, header, data },
            ErrorKind::TimeExceeded(reason) => Icmpv6Repr::TimeExceeded { reason, header, data },
            ErrorKind::Problem(p) => Icmpv6Repr::ParamProblem { reason: p.code, pointer: p.pointer, header, data },
        };
        let dst = ip.src_addr;
        let sent = self.send(now, counters, tx, src, dst, IpProtocol::Icmpv6, repr.buffer_len(), |b| {
            repr.emit(&mut Icmpv6Packet::new_unchecked(b), src, dst, ChecksumMode::Verify)
        });
        if sent.is_ok() {
            counters.icmpv6_errors_sent += 1;
        }
    }

    pub(crate) fn send_param_problem<T: TxQueue>(
        &mut self,
        now: Instant,
        counters: &mut Counters,
        tx: &mut T,
        packet: &[u8],
        problem: Problem,
        link_multicast: bool,
    ) {
        self.send_error(now, counters, tx, ErrorKind::Problem(problem), packet, link_multicast);
    }

    pub(crate) fn send_time_exceeded_reassembly<T: TxQueue>(
        &mut self,
        now: Instant,
        counters: &mut Counters,
        tx: &mut T,
        quote: &[u8],
    ) {
        let kind = ErrorKind::TimeExceeded(Icmpv6TimeExceeded::FragReassembly);
        self.send_error(now, counters, tx, kind, quote, false);
    }

    /// Destination unreachable about a packet an upper layer could not take
    /// (`reason` [`Icmpv6DstUnreachable::PortUnreachable`] for a UDP port
    /// nobody is bound to). `packet` is the whole offending packet
    /// (`..delivery.packet_len` of what was delivered). Sent only where RFC
    /// 4443 §2.4 and the rate limit allow.
    pub fn send_unreachable<T: TxQueue>(
        &mut self,
        now: Instant,
        counters: &mut Counters,
        tx: &mut T,
        delivery: &Ipv6Delivery,
        packet: &[u8],
        reason: Icmpv6DstUnreachable,
    ) {
        let packet = &packet[..delivery.packet_len.min(packet.len())];
        self.send_error(now, counters, tx, ErrorKind::Unreachable(reason), packet, delivery.multicast);
    }
}
