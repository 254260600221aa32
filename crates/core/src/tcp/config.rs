//! Every TCP tunable, with its default and where the default comes from.

use crate::time::Duration;

/// Which congestion controller a connection runs.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum CongestionAlgorithm {
    /// CUBIC (RFC 9438), Linux's default.
    #[default]
    Cubic,
    /// NewReno (RFC 5681 + RFC 6582).
    NewReno,
}

/// One socket's own buffer sizes in place of the stack's
/// [`TcpConfig::send_buffer_size`] and [`TcpConfig::recv_buffer_size`]:
/// what Linux's `SO_SNDBUF` and `SO_RCVBUF` set. Given to
/// `Stack::tcp_connect_with` and `Stack::tcp_listen_with` (a listener's
/// children inherit them). `None` keeps the stack's size.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct BufferSizes {
    /// Send buffer capacity in bytes.
    pub send: Option<usize>,
    /// Receive buffer capacity in bytes; it bounds the advertised window and
    /// chooses the window scale the SYN or SYN-ACK offers.
    pub recv: Option<usize>,
}

/// Tunables of one TCP connection (and of a listener's children).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TcpConfig {
    /// Send buffer capacity in bytes: the most unacknowledged data a
    /// connection holds. Its storage is chunks of the stack's buffer pool,
    /// taken as data is queued and given back as it is acknowledged.
    /// Default 256 KiB.
    pub send_buffer_size: usize,
    /// Receive buffer capacity in bytes; bounds the advertised window. Its
    /// storage is pool chunks taken as data arrives and given back as the
    /// application reads. Default 256 KiB.
    pub recv_buffer_size: usize,
    /// The most bytes the stack's buffer pool lends to all send and receive
    /// buffers together. When it is exhausted, `send` accepts less, the
    /// receive window shrinks to what the pool can still give, and arriving
    /// bytes that find no room are dropped (the peer retransmits). Idle
    /// connections hold nothing. Default 1 GiB.
    pub buffer_pool_limit: usize,
    /// Bytes of chunk storage the pool keeps when idle. Above it, spare
    /// chunks are freed once a load has passed (a second below their recent
    /// peak; see `tcp::pool`), so memory goes back after a burst.
    /// Default 1 MiB.
    pub buffer_pool_floor: usize,
    /// The MSS we advertise and the largest payload we send: our MTU less 40
    /// bytes of IPv4 and TCP header. Default 1460 (Ethernet).
    pub mss: u16,
    /// Peer MSS assumed when its SYN carries no MSS option. RFC 9293 §3.7.1:
    /// "it MUST assume a default send MSS of 536". Default 536.
    pub default_peer_mss: u16,
    /// Floor applied to the peer's advertised MSS, so a tiny MSS cannot make
    /// us burn a segment per byte. Linux's `min_snd_mss`. Default 48.
    pub min_peer_mss: u16,
    /// RTO before any RTT sample. RFC 6298 §2.1: "Until a round-trip time
    /// (RTT) measurement has been made ... the sender SHOULD set RTO <- 1
    /// second". Default 1 s.
    pub initial_rto: Duration,
    /// Lower bound on the RTO. RFC 6298 §2.4 says 1 s; Linux uses 200 ms
    /// (`TCP_RTO_MIN`), which is what peers on today's networks expect.
    /// Default 200 ms.
    pub min_rto: Duration,
    /// Upper bound on the (backed-off) RTO. RFC 6298 §2.5: "A maximum value
    /// MAY be placed on RTO provided it is at least 60 seconds." Linux uses
    /// 120 s (`TCP_RTO_MAX`). Default 60 s.
    pub max_rto: Duration,
    /// Delayed-ACK timeout. RFC 9293 §3.8.6.3: "the delay MUST be less than
    /// 0.5 seconds"; Linux's minimum is 40 ms. Default 40 ms.
    pub delayed_ack: Duration,
    /// ACK at least every this many full-sized segments. RFC 5681 §4.2:
    /// "an ACK SHOULD be generated for at least every second full-sized
    /// segment". Counted in bytes, as Linux does: an ACK leaves once more
    /// than `ack_every - 1` full segments' worth waits. Default 2.
    pub ack_every: u32,
    /// TIME-WAIT duration, 2*MSL. Linux: 60 s (`TCP_TIMEWAIT_LEN`).
    /// Default 60 s.
    pub time_wait: Duration,
    /// How long a connection closed by the application may sit in FIN-WAIT-2
    /// waiting for the peer's FIN. Linux's `tcp_fin_timeout`. Default 60 s.
    pub fin_wait_2_timeout: Duration,
    /// SYN retransmissions before `connect` fails. Linux `tcp_syn_retries`.
    /// Default 6.
    pub syn_retries: u32,
    /// SYN-ACK retransmissions before a half-open connection is dropped.
    /// Linux `tcp_synack_retries`. Default 5.
    pub synack_retries: u32,
    /// Consecutive RTO expiries on data before the connection is aborted.
    /// Linux `tcp_retries2`. Default 15.
    pub max_retransmits: u32,
    /// Keepalive on for new connections (`set_keepalive` overrides).
    /// RFC 9293 §3.8.4: keep-alives "MUST default to off". Default false.
    pub keepalive: bool,
    /// Idle time before the first keepalive probe. RFC 9293 §3.8.4: "MUST
    /// be configurable and MUST default to no less than two hours".
    /// Default 7200 s.
    pub keepalive_idle: Duration,
    /// Interval between unanswered keepalive probes. Linux: 75 s.
    pub keepalive_interval: Duration,
    /// Unanswered probes before the connection is declared dead. Linux: 9.
    pub keepalive_count: u32,
    /// Nagle's algorithm off (`TCP_NODELAY`) for new connections. Default
    /// false: RFC 9293 §3.7.4 "A TCP implementation SHOULD implement the
    /// Nagle algorithm".
    pub nodelay: bool,
    /// Congestion controller. Default CUBIC.
    pub congestion: CongestionAlgorithm,
    /// Initial congestion window in segments (RFC 6928). Default 10.
    pub initial_cwnd_segments: u32,
    /// Offer and use SACK (RFC 2018, RFC 6675). Default true.
    pub sack: bool,
    /// RACK-TLP loss detection (RFC 8985) when the peer SACKs: tail loss
    /// probes (§7) and time-based loss marking (§6). Off, SACK recovery uses
    /// RFC 6675's DupThresh alone and a lost tail waits for the RTO. Linux's
    /// `tcp_recovery` and `tcp_early_retrans` turn these on by default.
    /// Default true.
    pub rack_tlp: bool,
    /// Offer and use timestamps (RFC 7323 RTTM and PAWS). Default true.
    pub timestamps: bool,
    /// Offer and use window scaling (RFC 7323 §2). Default true.
    pub window_scaling: bool,
    /// Out-of-order islands kept in the receive buffer; a segment that would
    /// open island number `max_ooo_ranges + 1` is dropped. Per-segment work
    /// is O(this), independent of what the peer sends. Clamped to 1..=32.
    /// Default 8.
    pub max_ooo_ranges: usize,
    /// SACKed ranges remembered on the sender side (the RFC 6675
    /// scoreboard). Clamped to 1..=32. Default 8.
    pub max_sack_ranges: usize,
    /// Challenge ACKs (RFC 5961) sent per connection per second; the rest
    /// are suppressed. Linux has a per-host limit of 1000/s; ours is per
    /// connection so one victim cannot exhaust it for all. Default 10.
    pub challenge_ack_limit: u32,
    /// Least time between two ACKs sent in reply to out-of-window (or PAWS-
    /// rejected) pure ACKs and SYNs; the ones between are suppressed and
    /// counted. Two ends that each find the other's ACKs unacceptable would
    /// otherwise answer each other at wire speed, forever (an "ACK loop",
    /// RFC 9293 §3.10.7.4 taken literally); Linux's `tcp_invalid_ratelimit`
    /// does the same, with the same default. Segments with data or a FIN are
    /// always answered. Zero turns the limit off. Default 500 ms.
    pub invalid_ack_interval: Duration,
}

impl Default for TcpConfig {
    fn default() -> Self {
        TcpConfig {
            send_buffer_size: 256 * 1024,
            recv_buffer_size: 256 * 1024,
            buffer_pool_limit: 1 << 30,
            buffer_pool_floor: 1 << 20,
            mss: 1460,
            default_peer_mss: 536,
            min_peer_mss: 48,
            initial_rto: Duration::from_secs(1),
            min_rto: Duration::from_millis(200),
            max_rto: Duration::from_secs(60),
            delayed_ack: Duration::from_millis(40),
            ack_every: 2,
            time_wait: Duration::from_secs(60),
            fin_wait_2_timeout: Duration::from_secs(60),
            syn_retries: 6,
            synack_retries: 5,
            max_retransmits: 15,
            keepalive: false,
            keepalive_idle: Duration::from_secs(7200),
            keepalive_interval: Duration::from_secs(75),
            keepalive_count: 9,
            nodelay: false,
            congestion: CongestionAlgorithm::Cubic,
            initial_cwnd_segments: 10,
            sack: true,
            rack_tlp: true,
            timestamps: true,
            window_scaling: true,
            max_ooo_ranges: 8,
            max_sack_ranges: 8,
            challenge_ack_limit: 10,
            invalid_ack_interval: Duration::from_millis(500),
        }
    }
}

impl TcpConfig {
    /// The pool's chunk size: the smallest power of two, at least 2 KiB,
    /// such that 16 chunks hold the larger of the two buffers (16 KiB for
    /// the 256 KiB defaults). A buffer is a ring of at most 16 chunks.
    pub fn buffer_chunk_size(&self) -> usize {
        let largest = self.send_buffer_size.max(self.recv_buffer_size).max(1);
        largest.div_ceil(super::pool::PAGES).next_power_of_two().max(2048)
    }

    /// This configuration with `sizes` in place of its buffer sizes, each
    /// clamped to `1..=max` (`max`: the largest buffer the pool's chunks can
    /// back, `BufferPool::largest_buffer`). `None` when that changes nothing,
    /// so a socket without an override keeps sharing the stack's
    /// configuration.
    pub fn with_buffer_sizes(&self, sizes: BufferSizes, max: usize) -> Option<TcpConfig> {
        let send = sizes.send.map_or(self.send_buffer_size, |n| n.clamp(1, max.max(1)));
        let recv = sizes.recv.map_or(self.recv_buffer_size, |n| n.clamp(1, max.max(1)));
        if (send, recv) == (self.send_buffer_size, self.recv_buffer_size) {
            return None;
        }
        Some(TcpConfig { send_buffer_size: send, recv_buffer_size: recv, ..*self })
    }

    /// The window scale we offer: the smallest shift that lets the whole
    /// receive buffer be advertised, at most 14 (RFC 7323 §2.3).
    pub fn our_window_scale(&self) -> u8 {
        let mut shift = 0u8;
        while shift < 14 && (self.recv_buffer_size >> shift) > 65535 {
            shift += 1;
        }
        shift
    }
}
