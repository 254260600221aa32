//! One data stream of a test, on either side: what it carries (a TCP
//! connection, or UDP datagrams to and from one peer) and what it counted.

use super::{StreamReport, TestParams, MAX_UDP_LEN};
use std::net::SocketAddr;
use ustack_core::tcp::{RecvError, SendError};
use ustack_core::{Instant, Socket, Stack, TcpHandle, UdpHandle, UdpSendError};

/// How a stream's bytes travel.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Transport {
    Tcp(TcpHandle),
    /// Datagrams on `socket` to and from `peer` (the server shares one
    /// socket among its UDP streams and tells them apart by peer).
    Udp {
        socket: UdpHandle,
        peer: SocketAddr,
    },
}

/// Where UDP send timestamps come from: the wall clock at one loop instant,
/// so the datagram header carries Unix time as iperf3's does (the receiver
/// only uses differences, for jitter).
#[derive(Clone, Copy, Debug)]
pub struct WallClock {
    /// Microseconds since the Unix epoch at `at`.
    pub unix_micros: u64,
    /// The loop's time at which `unix_micros` was read.
    pub at: Instant,
}

impl WallClock {
    /// The OS wall clock now, paired with the loop's `at`.
    pub fn now(at: Instant) -> WallClock {
        let unix = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap_or_default();
        WallClock { unix_micros: u64::try_from(unix.as_micros()).unwrap_or(0), at }
    }

    fn micros_at(&self, now: Instant) -> u64 {
        self.unix_micros.saturating_add(now.saturating_since(self.at).as_micros() as u64)
    }
}

/// Bytes a sender at `rate` bits per second may have sent from `start` to
/// `now` (u128: a long test at a high rate cannot overflow).
pub(super) fn paced_bytes(rate: u64, start: Instant, now: Instant) -> u64 {
    let elapsed = now.saturating_since(start).as_micros();
    u64::try_from(u128::from(rate) * elapsed / 8_000_000).unwrap_or(u64::MAX)
}

/// Our end of TCP connection `h` (IPv4 or IPv6).
pub(super) fn tcp_local(stack: &Stack, h: TcpHandle) -> Option<SocketAddr> {
    let t = stack.tcp_connection(h)?.four_tuple();
    Some(SocketAddr::new(t.local_addr, t.local_port))
}

/// The peer's end of TCP connection `h`.
pub(super) fn tcp_remote(stack: &Stack, h: TcpHandle) -> Option<SocketAddr> {
    let t = stack.tcp_connection(h)?.four_tuple();
    Some(SocketAddr::new(t.remote_addr, t.remote_port))
}

/// What a stream was told to stop by.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Flow {
    /// Keep going.
    More,
    /// The connection ended or failed: no more data this way.
    Ended,
}

pub(super) struct Stream {
    pub id: u32,
    /// We send on it (else we receive).
    pub sender: bool,
    pub transport: Transport,
    pub local: Option<SocketAddr>,
    pub remote: Option<SocketAddr>,
    /// Bytes and datagrams over the whole test, and since the last interval.
    pub bytes: u64,
    pub packets: u64,
    pub interval_bytes: u64,
    pub interval_packets: u64,
    /// UDP receiver: highest sequence number seen, datagrams missing by
    /// sequence (iperf3's `cnt_error`), arrivals behind the highest, and
    /// the RFC 1889 jitter estimate in seconds.
    pub last_seq: u64,
    pub lost: u64,
    pub out_of_order: u64,
    pub jitter: f64,
    prev_transit: Option<f64>,
    /// UDP receiver: the counts when counting (re)started, left out of the
    /// report (iperf3's omitted seconds).
    seq_base: u64,
    lost_base: u64,
    out_of_order_base: u64,
    /// UDP sender: the next sequence number (iperf3 starts at 1).
    next_seq: u64,
    /// The connection ended (EOF, reset, or the app closed it).
    pub ended: bool,
    /// The handle was given back to the stack (it may be reused: never touch it again).
    released: bool,
    pub end: f64,
    /// On the data plane's ready list (an event named its socket).
    pub marked: bool,
}

impl Stream {
    pub fn new(
        id: u32,
        sender: bool,
        transport: Transport,
        local: Option<SocketAddr>,
        remote: Option<SocketAddr>,
    ) -> Stream {
        Stream {
            id,
            sender,
            transport,
            local,
            remote,
            bytes: 0,
            packets: 0,
            interval_bytes: 0,
            interval_packets: 0,
            last_seq: 0,
            lost: 0,
            out_of_order: 0,
            jitter: 0.0,
            prev_transit: None,
            seq_base: 0,
            lost_base: 0,
            out_of_order_base: 0,
            next_seq: 1,
            ended: false,
            released: false,
            end: 0.0,
            marked: false,
        }
    }

    /// The id iperf3 gives the `n`th stream of a test (0-based): 1, 3, 4, 5, …
    /// (its `iperf_add_stream` counts from 2 for the second).
    pub fn id_for(n: usize) -> u32 {
        if n == 0 {
            1
        } else {
            n as u32 + 2
        }
    }

    /// Counting (re)starts: what came before is left out.
    pub fn restart_counts(&mut self) {
        (self.bytes, self.packets, self.interval_bytes, self.interval_packets) = (0, 0, 0, 0);
        (self.seq_base, self.lost_base, self.out_of_order_base) = (self.last_seq, self.lost, self.out_of_order);
    }

    /// The socket the stream's data travels on, as events name it.
    pub fn socket(&self) -> Socket {
        match self.transport {
            Transport::Tcp(h) => Socket::Tcp(h),
            Transport::Udp { socket, .. } => Socket::Udp(socket),
        }
    }

    pub fn tcp(&self) -> Option<TcpHandle> {
        match self.transport {
            Transport::Tcp(h) => Some(h),
            Transport::Udp { .. } => None,
        }
    }

    fn count(&mut self, bytes: usize) {
        self.bytes += bytes as u64;
        self.interval_bytes += bytes as u64;
        self.packets += 1;
        self.interval_packets += 1;
    }

    /// TCP sender: write blocks of `block` until the send buffer is full
    /// or `budget` bytes went out (or the connection failed, which ends the
    /// stream); returns the bytes written.
    pub fn send_tcp(&mut self, stack: &mut Stack, block: &[u8], budget: u64) -> u64 {
        let Transport::Tcp(h) = self.transport else { return 0 };
        let mut written = 0u64;
        while written < budget {
            // Each write starts where the last partial one stopped in the block,
            // so the byte stream is the block repeated, as iperf3 sends it.
            let off = (self.bytes % block.len().max(1) as u64) as usize;
            let want = ((block.len() - off) as u64).min(budget - written) as usize;
            match stack.tcp_send(h, &block[off..off + want]) {
                Ok(0) | Err(SendError::Full) => break,
                Ok(n) => {
                    written += n as u64;
                    self.bytes += n as u64;
                    self.interval_bytes += n as u64;
                }
                Err(_) => {
                    // Reset or closed: this stream sends no more.
                    self.ended = true;
                    break;
                }
            }
        }
        written
    }

    /// TCP receiver: read and count everything waiting. With `counting`
    /// false (before the test runs or after it ended) the bytes are dropped
    /// uncounted, as iperf3 counts only while TEST_RUNNING.
    pub fn recv_tcp(&mut self, stack: &mut Stack, scratch: &mut [u8], counting: bool) -> Flow {
        let Transport::Tcp(h) = self.transport else { return Flow::More };
        loop {
            match stack.tcp_recv(h, scratch) {
                Ok(0) => {
                    self.ended = true;
                    return Flow::Ended;
                }
                Ok(n) if counting => {
                    self.bytes += n as u64;
                    self.interval_bytes += n as u64;
                }
                Ok(_) => {}
                Err(RecvError::WouldBlock) => return Flow::More,
                Err(_) => {
                    self.ended = true;
                    return Flow::Ended;
                }
            }
        }
    }

    /// UDP sender: send datagrams of `len` bytes while the stream is behind
    /// `rate` bits per second since `start` (and under `budget` bytes); stops
    /// early when the socket's queue is full. Returns the bytes sent.
    pub fn send_udp(
        &mut self,
        stack: &mut Stack,
        now: Instant,
        start: Instant,
        wall: &WallClock,
        params: &TestParams,
        budget: u64,
    ) -> u64 {
        let (len, rate, udp64) = (params.len, params.udp_rate(), params.udp64);
        let Transport::Udp { socket, peer } = self.transport else { return 0 };
        let len = len.clamp(16, MAX_UDP_LEN);
        let allowed = paced_bytes(rate, start, now);
        let mut sent = 0u64;
        let mut buf = [0u8; MAX_UDP_LEN];
        while self.bytes < allowed && sent < budget {
            let t = wall.micros_at(now);
            buf[0..4].copy_from_slice(&((t / 1_000_000) as u32).to_be_bytes());
            buf[4..8].copy_from_slice(&((t % 1_000_000) as u32).to_be_bytes());
            if udp64 {
                buf[8..16].copy_from_slice(&self.next_seq.to_be_bytes());
            } else {
                buf[8..12].copy_from_slice(&(self.next_seq as u32).to_be_bytes());
            }
            match stack.udp_send_to(socket, peer, &buf[..len]) {
                Ok(()) => {
                    self.next_seq += 1;
                    self.count(len);
                    sent += len as u64;
                }
                Err(UdpSendError::WouldBlock) => break,
                Err(_) => {
                    self.ended = true;
                    break;
                }
            }
        }
        sent
    }

    /// UDP receiver: account one datagram (iperf3's `iperf_udp_recv`): the
    /// sequence number finds losses and reordering, the send time feeds the
    /// jitter estimate.
    pub fn recv_udp(&mut self, data: &[u8], now: Instant, wall: &WallClock, udp64: bool) {
        self.count(data.len());
        if data.len() < if udp64 { 16 } else { 12 } {
            return;
        }
        let be32 = |i: usize| u32::from_be_bytes([data[i], data[i + 1], data[i + 2], data[i + 3]]);
        let sent = f64::from(be32(0)) + f64::from(be32(4)) / 1e6;
        let seq = if udp64 { (u64::from(be32(8)) << 32) | u64::from(be32(12)) } else { u64::from(be32(8)) };
        if seq > self.last_seq {
            self.lost = self.lost.saturating_add(seq - self.last_seq - 1);
            self.last_seq = seq;
        } else {
            // Late: it was counted lost when a later one came first.
            self.out_of_order += 1;
            self.lost = self.lost.saturating_sub(1);
        }
        // RFC 1889 A.8: J += (|D| - J) / 16, D the change in transit time.
        let transit = wall.micros_at(now) as f64 / 1e6 - sent;
        if let Some(prev) = self.prev_transit {
            self.jitter += ((transit - prev).abs() - self.jitter) / 16.0;
        }
        self.prev_transit = Some(transit);
    }

    /// The stream's figures for the report.
    pub fn report(&self, udp: bool, stack: &Stack) -> StreamReport {
        let retransmits = match self.transport {
            Transport::Tcp(h) if self.sender => stack.tcp_connection(h).map(|c| c.stats().retransmits),
            _ => None,
        };
        StreamReport {
            id: self.id,
            sender: self.sender,
            local: self.local,
            remote: self.remote,
            bytes: self.bytes,
            // iperf3's receiver reports the highest sequence number as its packet count.
            packets: if udp && !self.sender { self.last_seq - self.seq_base } else { self.packets },
            lost: self.lost.saturating_sub(self.lost_base),
            out_of_order: self.out_of_order - self.out_of_order_base,
            jitter: self.jitter,
            retransmits,
            end: self.end,
            peer: None,
        }
    }

    /// Let go of the transport. Closed, not reset, as iperf3's `close()`
    /// does: a reader still draining this stream sees the end of the data,
    /// where a reset would make it report an error.
    pub fn release(&mut self, stack: &mut Stack) {
        if let Transport::Tcp(h) = self.transport {
            if !self.released {
                stack.tcp_close(h);
            }
        }
        self.released = true;
        self.ended = true;
    }
}
