//! Counters: every packet the stack handles or drops is counted, and every
//! drop has a reason of its own, so `ustack stats` can say why traffic died.
//!
//! # Accounting
//!
//! Every frame the device hands to [`crate::Stack::receive`] ends in exactly
//! one outcome: used (`rx_consumed`) or dropped, with one `drop_` counter
//! naming why. A datagram put back together from fragments counts as one
//! more frame (`ipv4_reassembled`): its fragments were used when held, and
//! the whole then has an outcome of its own. So, between calls:
//!
//! ```text
//! rx_frames + ipv4_reassembled + ipv6_reassembled == rx_consumed + rx_drops()
//! ```
//!
//! where `rx_drops()` sums every `drop_` counter except
//! [`NOT_PER_RECEIVED_FRAME`]: the egress drops (packets the stack
//! originated and could not send: `drop_tx_full`, `drop_no_route`,
//! `drop_too_big`, the neighbour-queue drops), `drop_ipv4_reasm_timeout`
//! and `drop_ipv6_reasm_timeout` (datagrams whose held fragments time out)
//! and `drop_udp_ipv6_to_ipv4_reader` (datagrams already queued, discarded
//! when read). [`Counters::unaccounted_frames`]
//! is the difference; the fuzzers and `tests/drop_accounting.rs` hold it at
//! zero. A segment that is partly used (a TCP segment whose ACK is taken but
//! whose text finds no buffer) counts once, as its drop.

/// Drop counters that do not count received frames: packets the stack
/// itself originated and could not send, and datagrams abandoned in
/// reassembly whose fragments were already counted as held (consumed).
pub const NOT_PER_RECEIVED_FRAME: [&str; 9] = [
    "drop_tx_full",
    "drop_neighbor_pending_full",
    "drop_neighbor_incomplete_full",
    "drop_neighbor_unreachable",
    "drop_no_route",
    "drop_too_big",
    "drop_ipv4_reasm_timeout",
    "drop_ipv6_reasm_timeout",
    "drop_udp_ipv6_to_ipv4_reader",
];

macro_rules! counters {
    ($( $(#[$doc:meta])* $name:ident ),* $(,)?) => {
        /// The stack's counters; `iter` lists them by name for tools.
        #[derive(Clone, Debug, Default, PartialEq, Eq)]
        pub struct Counters {
            $( $(#[$doc])* pub $name: u64, )*
        }

        impl Counters {
            /// Every counter as `(name, value)`, in declaration order.
            pub fn iter(&self) -> impl Iterator<Item = (&'static str, u64)> + '_ {
                [$( (stringify!($name), self.$name) ),*].into_iter()
            }
            /// The sum of every counter whose name starts with `drop_`.
            pub fn total_drops(&self) -> u64 {
                self.iter().filter(|(n, _)| n.starts_with("drop_")).map(|(_, v)| v).sum()
            }
            /// The sum of the drop counters that count received frames (or
            /// reassembled datagrams), each at most once: every `drop_`
            /// counter but those in [`NOT_PER_RECEIVED_FRAME`].
            pub fn rx_drops(&self) -> u64 {
                self.iter()
                    .filter(|(n, _)| n.starts_with("drop_") && !NOT_PER_RECEIVED_FRAME.contains(n))
                    .map(|(_, v)| v)
                    .sum()
            }
            /// Received frames with no outcome counted: `rx_frames +
            /// ipv4_reassembled + ipv6_reassembled - rx_consumed - rx_drops()`. Zero whenever
            /// the stack is between calls (see the module docs); anything
            /// else is a path that lost a frame silently, or counted it twice.
            pub fn unaccounted_frames(&self) -> i64 {
                (self.rx_frames + self.ipv4_reassembled + self.ipv6_reassembled) as i64
                    - (self.rx_consumed + self.rx_drops()) as i64
            }
        }
    };
}

counters! {
    /// Frames handed to the stack by the device.
    rx_frames,
    /// Received frames (and reassembled datagrams) used without a drop: an
    /// ARP packet processed, an ICMP message answered or acted on, a UDP
    /// datagram or echo reply queued on its socket, a TCP segment a
    /// connection, TIME-WAIT record or listener took or answered, a fragment
    /// held for reassembly.
    rx_consumed,
    /// Bytes in those frames.
    rx_bytes,
    /// Frames the stack queued on the device.
    tx_frames,
    /// Bytes in those frames.
    tx_bytes,
    /// Frames not sent because the device's transmit queue was full.
    drop_tx_full,
    /// Frames too short for an Ethernet header.
    drop_eth_truncated,
    /// Frames addressed to another station's MAC.
    drop_eth_other_host,
    /// Frames with an EtherType we do not speak (IPv6 included, for now).
    drop_eth_unknown_type,
    /// ARP packets received.
    arp_rx,
    /// ARP packets that are malformed or not Ethernet/IPv4.
    drop_arp_malformed,
    /// ARP packets whose sender is ours, broadcast, or otherwise bogus.
    drop_arp_bogus_sender,
    /// ARP requests we answered.
    arp_replies_sent,
    /// ARP requests we sent.
    arp_requests_sent,
    /// ARP packets from a sender outside our subnet: never learned (such a
    /// sender is never a next hop), answered if they ask for us.
    arp_sender_off_subnet,
    /// ARP packets that would have changed a neighbour's address within
    /// `neighbor_locktime` of its last confirmation: ignored, the first answer wins.
    arp_update_locked,
    /// IPv4 packets received.
    ipv4_rx,
    /// IPv4 packets with a bad version, header length, total length or options.
    drop_ipv4_malformed,
    /// IPv4 packets whose header checksum is wrong.
    drop_ipv4_checksum,
    /// IPv4 packets addressed to someone else (we do not forward).
    drop_ipv4_other_host,
    /// IPv4 packets from impossible sources (ours, broadcast, multicast, loopback, 0.0.0.0).
    drop_ipv4_martian,
    /// IPv4 datagrams with a source-route option (LSRR or SSRR), dropped as
    /// Linux does by default (`accept_source_route=0`).
    drop_ipv4_source_route,
    /// IPv4 fragments received (each goes to reassembly).
    ipv4_frag_rx,
    /// Datagrams reassembled from fragments and delivered like unfragmented ones.
    ipv4_reassembled,
    /// Fragments dropped as malformed: not the last, yet empty or not a
    /// multiple of 8 bytes long.
    drop_ipv4_frag_malformed,
    /// Fragments dropped as exact duplicates of data held (the datagram carries on).
    drop_ipv4_frag_duplicate,
    /// Datagrams abandoned because their time ran out (ICMP time exceeded
    /// goes back when fragment zero had come).
    drop_ipv4_reasm_timeout,
    /// Datagrams abandoned because fragments overlapped (other than an exact
    /// duplicate) or disagreed about where the datagram ends.
    drop_ipv4_reasm_overlap,
    /// Fragments of a new datagram dropped because the reassembly table was full.
    drop_ipv4_reasm_table_full,
    /// Datagrams abandoned (or fragments dropped) for reaching past 65,535 bytes.
    drop_ipv4_reasm_too_big,
    /// Datagrams abandoned because the reassembly memory was spent.
    drop_ipv4_reasm_memory,
    /// IPv4 packets for a protocol we do not speak.
    drop_ipv4_unknown_protocol,
    /// ICMP messages received.
    icmp_rx,
    /// ICMP messages that are malformed.
    drop_icmp_malformed,
    /// ICMP messages whose checksum is wrong.
    drop_icmp_checksum,
    /// ICMP messages of a type we ignore (including echo to broadcast).
    drop_icmp_ignored,
    /// ICMP "fragmentation needed" messages received (path MTU discovery).
    icmp_frag_needed_rx,
    /// Of those: path MTUs lowered (the quote matched a connection's window).
    pmtu_lowered,
    /// Of those lowered: the reported MTU was under `pmtu_min`, which was used.
    pmtu_floor_applied,
    /// "Fragmentation needed" quoting no connection of ours (or not TCP): ignored.
    drop_icmp_pmtu_unmatched,
    /// "Fragmentation needed" whose quoted sequence number is outside
    /// SND.UNA..SND.NXT (RFC 5927): ignored.
    drop_icmp_pmtu_bad_seq,
    /// "Fragmentation needed" that would not lower the path's MTU: ignored.
    drop_icmp_pmtu_not_lower,
    /// Echo replies we sent.
    icmp_echo_replies_sent,
    /// Echo replies that arrived for no ping socket or a full one.
    drop_icmp_echo_reply_unwanted,
    /// ICMP errors we sent.
    icmp_errors_sent,
    /// ICMP errors we did not send because of the rate limit.
    icmp_errors_rate_limited,
    // IPv6 (crates/core/src/ipv6): one block, kept together.
    /// IPv6 packets received.
    ipv6_rx,
    /// IPv6 packets with a bad header or a payload length past the frame.
    drop_ipv6_malformed,
    /// IPv6 packets addressed to someone else (we do not forward).
    drop_ipv6_other_host,
    /// IPv6 packets from impossible sources (multicast, loopback, ours,
    /// unspecified outside neighbour discovery and MLD).
    drop_ipv6_martian,
    /// Extension header chains that run past the packet or hold a malformed
    /// option, or a hop-by-hop header that is not first.
    drop_ipv6_ext_malformed,
    /// Extension header chains over the bounds (headers, bytes, options).
    drop_ipv6_ext_limit,
    /// Packets with an unrecognised option whose action bits say discard.
    drop_ipv6_ext_unknown_option,
    /// Packets with a routing header whose segments are not all visited
    /// (type 0 included, RFC 5095): a host forwards nothing.
    drop_ipv6_routing_header,
    /// Packets whose upper layer we do not speak (or No Next Header).
    drop_ipv6_unknown_next_header,
    /// IPv6 fragments received (atomic ones included).
    ipv6_frag_rx,
    /// Atomic fragments (RFC 6946) delivered without reassembly.
    ipv6_atomic_frag_rx,
    /// Datagrams reassembled from fragments and delivered like unfragmented ones.
    ipv6_reassembled,
    /// Fragments dropped as malformed: not the last, yet not a multiple of 8
    /// bytes; a fragment inside a reassembled datagram; an unfragmentable
    /// part too long to keep.
    drop_ipv6_frag_malformed,
    /// First fragments without the whole header chain (RFC 7112).
    drop_ipv6_frag_incomplete_chain,
    /// Fragments dropped as exact duplicates of data held (the datagram carries on).
    drop_ipv6_frag_duplicate,
    /// Datagrams abandoned because their time ran out (ICMPv6 time exceeded
    /// goes back when the first fragment had come).
    drop_ipv6_reasm_timeout,
    /// Datagrams abandoned because fragments overlapped (RFC 5722) or
    /// disagreed about where the datagram ends.
    drop_ipv6_reasm_overlap,
    /// Fragments of a new datagram dropped because the reassembly table was full.
    drop_ipv6_reasm_table_full,
    /// Datagrams abandoned (or fragments dropped) for reaching past 65,535 bytes.
    drop_ipv6_reasm_too_big,
    /// Datagrams abandoned because the reassembly memory was spent, or for
    /// arriving in more pieces than one datagram may be held in.
    drop_ipv6_reasm_memory,
    /// IPv6 fragments we sent (packets larger than the path MTU).
    ipv6_frag_tx,
    /// ICMPv6 messages received.
    icmpv6_rx,
    /// ICMPv6 messages that are malformed.
    drop_icmpv6_malformed,
    /// ICMPv6 messages whose checksum is wrong.
    drop_icmpv6_checksum,
    /// ICMPv6 messages of a type we ignore (redirects, router solicitations,
    /// unknown informational types).
    drop_icmpv6_ignored,
    /// ICMPv6 echo replies we sent.
    icmpv6_echo_replies_sent,
    /// ICMPv6 errors we sent.
    icmpv6_errors_sent,
    /// ICMPv6 errors we did not send because of the rate limit.
    icmpv6_errors_rate_limited,
    /// ICMPv6 Packet Too Big messages received.
    icmpv6_ptb_rx,
    /// Of those: path MTUs lowered (never under 1280).
    pmtu6_lowered,
    /// Packet Too Big not quoting a packet of a connection or UDP socket of
    /// ours, or not lowering the MTU: ignored.
    drop_icmpv6_ptb_ignored,
    /// Packet Too Big quoting a TCP segment of ours whose sequence number
    /// is outside SND.UNA..SND.NXT (RFC 5927 §4.1): ignored.
    drop_icmpv6_ptb_bad_seq,
    /// Neighbour discovery messages failing RFC 4861's validity checks (hop
    /// limit not 255, multicast target, unspecified source with a link-layer
    /// option, router advertisement from a non-link-local source, ...).
    drop_ndp_invalid,
    /// Neighbour solicitations for an address that is not ours.
    drop_ndp_not_our_target,
    /// Neighbour advertisements for an address with no cache entry (RFC
    /// 4861 §7.2.5: silently discarded).
    drop_ndp_unsolicited_na,
    /// Neighbour advertisements we sent (answers to solicitations).
    ndp_advertisements_sent,
    /// Neighbour solicitations we sent (resolution, probes, DAD).
    ndp_solicitations_sent,
    /// Router solicitations we sent.
    ndp_router_solicitations_sent,
    /// Router advertisements processed.
    ndp_router_advertisements_rx,
    /// Default routers not learned because the list was full.
    ndp_router_list_full,
    /// Prefixes not learned because the list was full.
    ndp_prefix_list_full,
    /// SLAAC addresses not formed because the address table was full.
    ndp_address_table_full,
    /// Addresses given up because duplicate address detection found them in use.
    ndp_dad_failed,
    /// Neighbour entries evicted to make room for new ones.
    ndp_neighbor_evicted,
    /// MLDv2 reports we sent.
    mld_reports_sent,
    /// MLD queries and reports received (answered or ignored).
    mld_rx,
    /// UDP datagrams received.
    udp_rx,
    /// UDP datagrams that are malformed.
    drop_udp_malformed,
    /// UDP datagrams whose checksum is wrong.
    drop_udp_checksum,
    /// UDP datagrams over IPv6 with a zero checksum (none): RFC 8200 §8.1
    /// says discard.
    drop_udp6_zero_checksum,
    /// UDP datagrams for a port nobody is bound to.
    drop_udp_no_socket,
    /// UDP datagrams dropped because the socket's receive queue was full.
    drop_udp_rx_queue_full,
    /// UDP datagrams from an IPv6 sender discarded when an IPv4-only reader
    /// (one taking `SocketAddrV4`) read a dual-stack socket.
    drop_udp_ipv6_to_ipv4_reader,
    /// UDP datagrams sent.
    udp_tx,
    /// Packets held waiting for a neighbour to resolve.
    neighbor_pending_queued,
    /// Packets dropped because the resolution queue was full.
    drop_neighbor_pending_full,
    /// Packets dropped because too many neighbours were unresolved.
    drop_neighbor_incomplete_full,
    /// Packets dropped because their neighbour never answered.
    drop_neighbor_unreachable,
    /// Packets dropped because no route reaches their destination.
    drop_no_route,
    /// Datagrams we sent as IPv4 fragments (larger than the MTU).
    ipv4_fragmented,
    /// IPv4 fragments we sent.
    ipv4_frag_tx,
    /// Packets dropped because they exceed the MTU and cannot be fragmented
    /// (TCP, which sizes its segments itself, or over 65,535 bytes).
    drop_too_big,
    /// TCP segments received.
    tcp_rx,
    /// TCP segments sent (RSTs included).
    tcp_tx,
    /// RSTs sent.
    tcp_rst_sent,
    /// Connections that completed the handshake.
    tcp_established,
    /// TCP segments that are malformed (header, options).
    drop_tcp_malformed,
    /// TCP segments whose checksum is wrong.
    drop_tcp_checksum,
    /// TCP segments for no connection and no listener (answered with RST
    /// unless they are one), RSTs reaching a listener, and segments for a
    /// connection that has ended while its application still holds it.
    drop_tcp_no_socket,
    /// TCP segments beyond the receive window, RSTs outside it, or segments
    /// failing PAWS or lacking negotiated timestamps.
    drop_tcp_out_of_window,
    /// TCP segments wholly left of the receive window: bytes (or an ACK)
    /// already received, as an honest peer's spurious retransmission or a
    /// duplicated frame brings them; each is answered with an ACK.
    drop_tcp_duplicate,
    /// RSTs, SYNs and ACKs refused by RFC 5961's checks (blind-attack defence).
    drop_tcp_rfc5961,
    /// Out-of-order segments beyond the reassembly limit.
    drop_tcp_reassembly_full,
    /// Received data dropped because the stack's TCP buffer pool was exhausted.
    drop_tcp_no_buffer,
    /// TCP segments dropped for other reasons (state, missing ACK, listener limits).
    drop_tcp_other,
    /// New connections refused because the table is at `tcp_max_connections`.
    drop_tcp_table_full,
    /// Sockets `poll_events` looked at.
    poll_visited,
    /// Events `poll_events` returned (equal to `poll_visited` when every
    /// socket on the ready list had news).
    poll_events,
}
