//! Segments out: one segment into the device's queue, everything a
//! connection wants to send, the timers that fire and the transmit list.

use super::TcpSockets;
use super::TCP_HEADER_LEN;
use crate::ip::Iface;
use crate::phy::TxQueue;
use crate::tcp::{BufferPool, Connection, FourTuple, Segment};
use crate::time::Instant;
use std::net::{IpAddr, Ipv6Addr};
use ustack_wire::{checksum, IpProtocol, TcpPacket, TcpRepr};

fn repr_from(seg: &Segment, tuple: &FourTuple) -> TcpRepr<'static> {
    TcpRepr {
        src_port: tuple.local_port,
        dst_port: tuple.remote_port,
        seq_number: seg.seq,
        ack_number: seg.ack,
        // `emit_header` sets ACK from `ack_number`.
        flags: seg.flags,
        window_len: seg.window,
        max_seg_size: seg.options.mss,
        window_scale: seg.options.window_scale,
        sack_permitted: seg.options.sack_permitted,
        sack_ranges: seg.options.sack_blocks,
        timestamp: seg.options.timestamp,
        payload: &[],
    }
}

impl Iface {
    /// Send one TCP segment; its payload (if any) is copied in place by
    /// `payload`. `gso_size` is the payload per segment when `seg` may be a
    /// super-segment for the device to cut.
    pub(super) fn send_tcp<T: TxQueue>(
        &mut self,
        now: Instant,
        tx: &mut T,
        tuple: &FourTuple,
        seg: &Segment,
        gso_size: Option<usize>,
        payload: impl FnOnce(&mut [u8]),
    ) -> bool {
        let repr = repr_from(seg, tuple);
        let header_len = repr.header_len();
        self.counters.tcp_tx += 1;
        if seg.flags.rst() {
            self.counters.tcp_rst_sent += 1;
        }
        let l4_len = header_len + seg.payload_len;
        let gso = gso_size.filter(|&size| seg.payload_len > size).map(|size| (size, header_len));
        let (src, dst) = match (tuple.local_addr, tuple.remote_addr) {
            (IpAddr::V4(src), IpAddr::V4(dst)) => (src, dst),
            (IpAddr::V6(src), IpAddr::V6(dst)) => {
                return self.send_tcp_v6(now, tx, tuple, src, dst, &repr, seg.payload_len, gso, payload);
            }
            _ => {
                self.counters.drop_no_route += 1;
                return false;
            }
        };
        self.send_ipv4_offload(now, tx, dst, IpProtocol::Tcp, l4_len, gso, |b, partial| {
            repr.emit_header(&mut TcpPacket::new_unchecked(&mut *b), seg.payload_len);
            payload(&mut b[header_len..]);
            let mut packet = TcpPacket::new_unchecked(&mut *b);
            if partial {
                // The device sums the segment; we give it the pseudo header.
                let pseudo = checksum::fold(checksum::pseudo_header_v4(src, dst, 6, l4_len as u32));
                packet.set_checksum(pseudo);
            } else {
                packet.fill_checksum(src, dst);
            }
        })
        .is_ok()
    }

    /// [`Iface::send_tcp`] over IPv6, out of line so the IPv4 path stays as
    /// small as it was. A device that completes checksums completes theirs,
    /// and one that cuts IPv6 super-segments (`DeviceCaps::tso6`) cuts them.
    #[inline(never)]
    #[allow(clippy::too_many_arguments)]
    fn send_tcp_v6<T: TxQueue>(
        &mut self,
        now: Instant,
        tx: &mut T,
        tuple: &FourTuple,
        src: Ipv6Addr,
        dst: Ipv6Addr,
        repr: &TcpRepr<'_>,
        payload_len: usize,
        gso: Option<(usize, usize)>,
        payload: impl FnOnce(&mut [u8]),
    ) -> bool {
        let header_len = repr.header_len();
        let flow_label = self.flow_label(tuple);
        let l4_len = header_len + payload_len;
        self.send_ipv6_offload(now, tx, src, dst, IpProtocol::Tcp, flow_label, l4_len, true, gso, |b, partial| {
            repr.emit_header(&mut TcpPacket::new_unchecked(&mut *b), payload_len);
            payload(&mut b[header_len..]);
            let mut packet = TcpPacket::new_unchecked(&mut *b);
            if partial {
                // The device sums the segment; we give it the pseudo header.
                packet.set_checksum(checksum::fold(checksum::pseudo_header_v6(src, dst, 6, l4_len as u32)));
            } else {
                packet.fill_checksum(src, dst);
            }
        })
        .is_ok()
    }

    /// Write everything a connection wants to send now.
    pub(super) fn flush_connection<T: TxQueue>(
        &mut self,
        now: Instant,
        tx: &mut T,
        conn: &mut Connection,
        pool: &BufferPool,
    ) {
        let tuple = conn.four_tuple();
        let (mtu, ip_header_len) = self.path_mtu_to(now, tuple.remote_addr);
        let max_payload = mtu - ip_header_len - TCP_HEADER_LEN;
        let tso_max = if tuple.remote_addr.is_ipv4() { self.tso_max } else { self.tso6_max };
        let tso_payload = tso_max.saturating_sub(ip_header_len + TCP_HEADER_LEN);
        while let Some(seg) = conn.poll_transmit_tso(now, max_payload, tso_payload, pool) {
            let conn = &*conn;
            // The segment size the connection cut by (see `poll_transmit_tso`).
            let gso_size = conn.mss().min(max_payload.saturating_sub(seg.options.wire_len()));
            self.send_tcp(now, tx, &tuple, &seg, Some(gso_size), |b| conn.read_payload(&seg, b, pool));
        }
    }
}

impl TcpSockets {
    /// Fire the connections' and TIME-WAIT records' due timers.
    pub(crate) fn handle_timeouts<T: TxQueue>(&mut self, iface: &mut Iface, now: Instant, tx: &mut T) {
        let tcp = self;
        // Most polls have no timer due: leave before borrowing `fired`
        // (`&`, not `&&`: both wheels move their time to `now`).
        if tcp.tw_timers.idle_until(now) & tcp.timers.idle_until(now) {
            return;
        }
        let mut fired = core::mem::take(&mut tcp.fired);
        fired.clear();
        tcp.tw_timers.expire(now, &mut fired);
        for &index in &fired {
            match tcp.time_wait[index as usize].map(|tw| tw.expires()) {
                // "When the time-wait timeout expires, ... delete the TCB".
                Some(at) if at <= now => tcp.remove_time_wait(index),
                Some(at) => tcp.tw_timers.set(index, Some(at)),
                None => {}
            }
        }
        fired.clear();
        tcp.timers.expire(now, &mut fired);
        for &index in &fired {
            let Some(slot) = tcp.slots[index as usize].as_mut() else { continue };
            slot.conn.handle_timeout(now);
            iface.flush_connection(now, tx, &mut slot.conn, &tcp.pool);
            tcp.mark_ready(index);
            tcp.settle(index);
        }
        tcp.fired = fired;
    }

    /// Send what the connections on the transmit list have queued.
    pub(crate) fn transmit<T: TxQueue>(&mut self, iface: &mut Iface, now: Instant, tx: &mut T) {
        let tcp = self;
        while let Some(index) = tcp.tx_list.pop_front() {
            let Some(slot) = tcp.slots[index as usize].as_mut() else { continue };
            slot.on_tx_list = false;
            iface.flush_connection(now, tx, &mut slot.conn, &tcp.pool);
            tcp.settle(index);
        }
    }
}
