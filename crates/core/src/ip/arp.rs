//! ARP (RFC 826): answering requests for our address, learning
//! neighbours into the cache, and the requests the cache asks for.

use super::{write_frame, Iface};
use crate::neighbor::NeighborTimer;
use crate::phy::{TxMeta, TxQueue};
use crate::time::Instant;
use std::net::Ipv4Addr;
use ustack_wire::{ArpOperation, ArpPacket, ArpRepr, EtherType, EthernetAddress};

impl Iface {
    pub(super) fn receive_arp<T: TxQueue>(&mut self, now: Instant, payload: &[u8], eth_broadcast: bool, tx: &mut T) {
        self.counters.arp_rx += 1;
        let Ok(repr) = ArpPacket::new_checked(payload).and_then(|p| ArpRepr::parse(&p)) else {
            self.counters.drop_arp_malformed += 1;
            return;
        };
        let (smac, sip) = (repr.source_hardware_addr, repr.source_protocol_addr);
        let ours = self.cfg.ipv4.addr;
        if !smac.is_unicast() || sip == ours || sip.is_broadcast() || sip.is_multicast() {
            self.counters.drop_arp_bogus_sender += 1;
            return;
        }
        // From here on the packet is used (learned, answered or deliberately
        // left unlearned); nothing below drops it.
        self.counters.rx_consumed += 1;
        let for_us = repr.target_protocol_addr == ours;
        // A probe (RFC 5227) has sender 0.0.0.0: answer it, learn nothing.
        // A sender outside our subnet is never a next hop: an entry for it
        // would only be a cache slot an attacker can fill (Linux learns it
        // as STALE; see docs/conformance-differences.md).
        if !sip.is_unspecified() && !self.cfg.ipv4.contains(sip) {
            self.counters.arp_sender_off_subnet += 1;
        } else if !sip.is_unspecified() {
            // Linux: "Broadcast replies and request packets do not assert
            // neighbour reachability."
            let reachable = repr.operation == ArpOperation::Reply && !eth_broadcast;
            let Iface { neighbors, counters, cfg, .. } = self;
            let accepted = neighbors.confirm(now, sip, smac, for_us, reachable, |mac, packet| {
                let meta = TxMeta::default();
                write_frame(counters, tx, meta, cfg.mac, mac, EtherType::Ipv4, packet.len(), |b| {
                    b.copy_from_slice(packet)
                });
            });
            if !accepted {
                counters.arp_update_locked += 1;
            }
        }
        if for_us && repr.operation == ArpOperation::Request {
            self.send_arp(tx, ArpOperation::Reply, smac, smac, sip);
            self.counters.arp_replies_sent += 1;
        }
    }

    /// Send one ARP packet from our addresses.
    pub(crate) fn send_arp<T: TxQueue>(
        &mut self,
        tx: &mut T,
        operation: ArpOperation,
        eth_dst: EthernetAddress,
        target_mac: EthernetAddress,
        target_ip: Ipv4Addr,
    ) {
        let repr = ArpRepr {
            operation,
            source_hardware_addr: self.cfg.mac,
            source_protocol_addr: self.cfg.ipv4.addr,
            target_hardware_addr: target_mac,
            target_protocol_addr: target_ip,
        };
        if operation == ArpOperation::Request {
            self.counters.arp_requests_sent += 1;
        }
        write_frame(
            &mut self.counters,
            tx,
            TxMeta::default(),
            self.cfg.mac,
            eth_dst,
            EtherType::Arp,
            repr.buffer_len(),
            |b| repr.emit(&mut ArpPacket::new_unchecked(b)),
        );
    }

    /// Requests the neighbour cache's timers ask for, and the packets of
    /// neighbours given up on (dropped, counted).
    pub(super) fn handle_arp_timeout<T: TxQueue>(&mut self, now: Instant, tx: &mut T) {
        if !self.neighbors.resolving() {
            return; // the common case: spare the batch set-up below on every poll
        }
        let mut requests = [Ipv4Addr::UNSPECIFIED; 16];
        loop {
            // Collect in small batches: the cache cannot be borrowed while we send.
            let mut n = 0;
            let mut dropped = 0;
            self.neighbors.handle_timeout(now, |t| match t {
                NeighborTimer::Request(ip) if n < requests.len() => {
                    requests[n] = ip;
                    n += 1;
                }
                NeighborTimer::Request(_) => {}
                NeighborTimer::Unreachable { dropped: d } => dropped += d,
            });
            self.counters.drop_neighbor_unreachable += dropped as u64;
            for &ip in &requests[..n] {
                self.send_arp(tx, ArpOperation::Request, EthernetAddress::BROADCAST, EthernetAddress([0; 6]), ip);
            }
            if n < requests.len() {
                break;
            }
        }
    }
}
