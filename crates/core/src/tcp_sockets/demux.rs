//! Demultiplexing: an arriving segment to its connection, TIME-WAIT record
//! or listener (or a RST), and an ICMP "fragmentation needed" to its
//! connection.

use super::stats::count_drop;
use super::TcpSockets;
use super::{Child, TCP_HEADER_LEN};
use crate::hash::{KeyedMap, KeyedState};
use crate::ip::Iface;
use crate::phy::{RxMeta, TxQueue};
use crate::tcp::{self, Flags, FourTuple, ListenOutcome, Options, Segment, SeqNumber, TimeWaitOutcome};
use crate::time::Instant;
use std::net::{IpAddr, Ipv4Addr};
use ustack_wire::{ChecksumMode, TcpPacket, TcpRepr, IPV4_HEADER_LEN, IPV6_HEADER_LEN};

/// The connection table's 4-tuple index, remembering its last hit: a flow
/// sends segment after segment to one connection, and comparing 12 bytes
/// costs less than hashing them and probing. Any removal forgets the hit.
#[derive(Debug)]
pub(super) struct Demux {
    map: KeyedMap<FourTuple, u32>,
    last: Option<(FourTuple, u32)>,
}

impl Demux {
    pub(super) fn new(hash_key: u64) -> Demux {
        Demux { map: KeyedMap::with_hasher(KeyedState::new(hash_key)), last: None }
    }
    pub(super) fn lookup(&mut self, tuple: &FourTuple) -> Option<u32> {
        if let Some((last, index)) = self.last {
            if last == *tuple {
                return Some(index);
            }
        }
        let index = *self.map.get(tuple)?;
        self.last = Some((*tuple, index));
        Some(index)
    }
    pub(super) fn contains_key(&self, tuple: &FourTuple) -> bool {
        self.map.contains_key(tuple)
    }
    pub(super) fn insert(&mut self, tuple: FourTuple, index: u32) {
        self.last = None;
        self.map.insert(tuple, index);
    }
    pub(super) fn remove(&mut self, tuple: &FourTuple) {
        self.last = None;
        self.map.remove(tuple);
    }
}

/// The segment's checksum over the pseudo header of its IP version.
#[inline]
fn verify_checksum(packet: &TcpPacket<&[u8]>, src: IpAddr, dst: IpAddr) -> bool {
    match (src, dst) {
        (IpAddr::V4(s), IpAddr::V4(d)) => packet.verify_checksum(s, d),
        (IpAddr::V6(s), IpAddr::V6(d)) => packet.verify_checksum(s, d),
        _ => false,
    }
}

fn segment_from(repr: &TcpRepr<'_>) -> Segment {
    Segment {
        seq: repr.seq_number,
        ack: repr.ack_number,
        // ACK is said by `ack`; urgent data is not supported.
        flags: repr.flags.without(Flags::ACK | Flags::URG),
        window: repr.window_len,
        options: Options {
            mss: repr.max_seg_size,
            window_scale: repr.window_scale,
            sack_permitted: repr.sack_permitted,
            sack_blocks: repr.sack_ranges,
            timestamp: repr.timestamp,
        },
        payload_len: repr.payload.len(),
    }
}

impl TcpSockets {
    /// A believable "fragmentation needed" must quote a segment of a
    /// connection within its window (see `path_mtu`); if so, and `mtu` is
    /// below `current`, the connection shrinks its segments and resends.
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn path_mtu<T: TxQueue>(
        &mut self,
        iface: &mut Iface,
        now: Instant,
        tuple: &FourTuple,
        seq: SeqNumber,
        current: usize,
        mtu: usize,
        tx: &mut T,
    ) -> crate::path_mtu::PathMtuOutcome {
        use crate::path_mtu::PathMtuOutcome;
        let tcp = self;
        let Some(index) = tcp.by_tuple.lookup(tuple) else { return PathMtuOutcome::NoConnection };
        let slot = tcp.slots[index as usize].as_mut().expect("the table points at live slots");
        if !slot.conn.icmp_seq_acceptable(seq) {
            return PathMtuOutcome::BadSequence;
        }
        if mtu >= current {
            return PathMtuOutcome::NotLower;
        }
        let ip_header = if tuple.remote_addr.is_ipv4() { IPV4_HEADER_LEN } else { IPV6_HEADER_LEN };
        slot.conn.on_path_mtu(mtu - ip_header - TCP_HEADER_LEN);
        // Record the new MTU before the resend reads it.
        match tuple.remote_addr {
            IpAddr::V4(remote) => iface.path_mtus_lower(now, remote, mtu),
            IpAddr::V6(remote) => iface.lower_path_mtu6(now, remote, mtu),
        }
        iface.flush_connection(now, tx, &mut slot.conn, &tcp.pool);
        tcp.settle(index);
        PathMtuOutcome::Lowered
    }

    /// A TCP segment for us, to its connection, TIME-WAIT record or
    /// listener; a segment for none of them gets a RST.
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn receive<T: TxQueue>(
        &mut self,
        iface: &mut Iface,
        now: Instant,
        src: IpAddr,
        dst: IpAddr,
        l4: &[u8],
        meta: RxMeta,
        tx: &mut T,
    ) {
        let c = &mut iface.counters;
        c.tcp_rx += 1;
        let Ok(packet) = TcpPacket::new_checked(l4) else {
            c.drop_tcp_malformed += 1;
            return;
        };
        let trusted = (meta.csum_verified || meta.csum_partial) && iface.cfg.use_device_checksums;
        if !trusted && !verify_checksum(&packet, src, dst) {
            c.drop_tcp_checksum += 1;
            return;
        }
        // The checksum is settled above; the parser needs no addresses.
        let unused = Ipv4Addr::UNSPECIFIED;
        let Ok(repr) = TcpRepr::parse(&packet, unused, unused, ChecksumMode::Ignore) else {
            c.drop_tcp_malformed += 1;
            return;
        };
        let seg = segment_from(&repr);
        let tuple =
            FourTuple { local_addr: dst, local_port: repr.dst_port, remote_addr: src, remote_port: repr.src_port };
        let tcp = self;
        if let Some(index) = tcp.by_tuple.lookup(&tuple) {
            let slot = tcp.slots[index as usize].as_mut().expect("the table points at live slots");
            let queued_before = slot.conn.recv_queue();
            let outcome = slot.conn.on_segment(now, &seg, repr.payload, &mut tcp.pool);
            let new_data = slot.conn.recv_queue() > queued_before;
            match outcome.dropped {
                Some(reason) => count_drop(&mut iface.counters, reason),
                None => iface.counters.rx_consumed += 1,
            }
            if let Some(rst) = outcome.reply {
                iface.send_tcp(now, tx, &tuple, &rst, None, |_| {});
            }
            iface.flush_connection(now, tx, &mut slot.conn, &tcp.pool);
            if outcome.established {
                iface.counters.tcp_established += 1;
                if let Child::HalfOpen(port) = slot.child {
                    slot.child = Child::Queued(port);
                    match tcp.listeners.get_mut(&port) {
                        Some(l) => {
                            l.listener.child_established();
                            l.accept_queue.push_back(index);
                            tcp.mark_listener(port);
                        }
                        // The listener went away: nobody will accept this.
                        None => {
                            slot.child = Child::None;
                            slot.orphan = true;
                            slot.conn.abort();
                            iface.flush_connection(now, tx, &mut slot.conn, &tcp.pool);
                        }
                    }
                }
            }
            tcp.mark_ready_with(index, new_data);
            tcp.settle(index);
            return;
        }
        let mut reopened = None;
        if let Some(&index) = tcp.tw_by_tuple.get(&tuple) {
            let record = tcp.time_wait[index as usize].as_mut().expect("the table points at live records");
            match record.on_segment(now, &seg, tcp.cfg.time_wait) {
                TimeWaitOutcome::Ignore => {
                    iface.counters.drop_tcp_other += 1;
                    return;
                }
                TimeWaitOutcome::Ack(ack) => {
                    // Answered (a retransmitted FIN, an old SYN or duplicate).
                    iface.counters.rx_consumed += 1;
                    let expires = record.expires();
                    tcp.tw_timers.set(index, Some(expires));
                    iface.send_tcp(now, tx, &tuple, &ack, None, |_| {});
                    return;
                }
                // RFC 6191: a newer SYN takes the 4-tuple over.
                TimeWaitOutcome::Reopen => {
                    reopened = Some(record.snd_nxt);
                    tcp.remove_time_wait(index);
                }
            }
        }
        if let Some(entry) = tcp.listeners.get_mut(&tuple.local_port) {
            if iface.is_local(tuple.local_addr) {
                let outcome = match reopened {
                    Some(old) => entry.listener.on_reopening_syn(now, tuple, &seg, repr.payload, &mut tcp.pool, old),
                    None => entry.listener.on_segment(now, tuple, &seg, repr.payload, &mut tcp.pool),
                };
                match outcome {
                    ListenOutcome::Drop(reason) => count_drop(&mut iface.counters, reason),
                    ListenOutcome::Reply(reply) => {
                        iface.counters.rx_consumed += 1;
                        iface.send_tcp(now, tx, &tuple, &reply, None, |_| {});
                    }
                    ListenOutcome::HalfOpen(mut conn) => {
                        if tcp.live >= tcp.max_connections {
                            entry.listener.half_open_gone();
                            iface.counters.drop_tcp_table_full += 1;
                            return;
                        }
                        iface.counters.rx_consumed += 1;
                        iface.flush_connection(now, tx, &mut conn, &tcp.pool);
                        let port = tuple.local_port;
                        let index = tcp.insert(conn, Child::HalfOpen(port));
                        tcp.settle(index);
                    }
                    ListenOutcome::Established(mut conn) => {
                        if tcp.live >= tcp.max_connections {
                            conn.release_buffers(&mut tcp.pool);
                            entry.listener.accepted();
                            iface.counters.drop_tcp_table_full += 1;
                            return;
                        }
                        iface.counters.rx_consumed += 1;
                        iface.counters.tcp_established += 1;
                        iface.flush_connection(now, tx, &mut conn, &tcp.pool);
                        let port = tuple.local_port;
                        let index = tcp.insert(conn, Child::Queued(port));
                        if let Some(entry) = tcp.listeners.get_mut(&port) {
                            entry.accept_queue.push_back(index);
                        }
                        tcp.mark_listener(port);
                        tcp.settle(index);
                    }
                }
                return;
            }
        }
        // RFC 9293 §3.10.7.1: a segment for no connection gets a RST, unless
        // it is one.
        iface.counters.drop_tcp_no_socket += 1;
        if let Some(rst) = tcp::reset_for(&seg) {
            iface.send_tcp(now, tx, &tuple, &rst, None, |_| {});
        }
    }
}
