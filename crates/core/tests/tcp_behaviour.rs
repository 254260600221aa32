//! Per-feature tests in the same small language: retransmission and RTO
//! backoff, Nagle, delayed ACK, zero-window probes, keepalive, options (MSS,
//! window scale, timestamps/PAWS, SACK), loss recovery and the listener.

#[macro_use]
#[path = "tcp_harness.rs"]
mod harness;
use harness::*;

fn established_with(cfg: &TcpConfig, mut syn_options: Options) -> Sock {
    syn_options.mss = syn_options.mss.or(Some(1460));
    let syn = seg! { seq: REMOTE, flags: SYN, options: syn_options };
    let conn = Connection::accept(tuple(), &syn.to_segment(), *cfg, SeqNumber(LOCAL), Instant::ZERO).unwrap();
    let mut s = Sock::new(conn, cfg);
    let synack = s.poll().expect("SYN-ACK");
    // Echo the SYN-ACK's timestamp, as a real peer would.
    let echo = synack.options.unwrap().timestamp.map(|t| (syn_options.timestamp.unwrap().0 + 1, t.0));
    send!(s, seg! { seq: REMOTE + 1, ack: LOCAL + 1, options: Options { timestamp: echo, ..Options::default() } });
    assert_eq!(s.state(), State::Established);
    s
}

// ---- Retransmission ----------------------------------------------------------

#[test]
fn rto_backs_off_exponentially_and_resets_on_ack() {
    let mut s = socket_syn_received();
    // The handshake takes 100 ms: SRTT 100 ms, RTO 100 + 4 * 50 = 300 ms.
    send!(s, time = 100, seg! { seq: REMOTE + 1, ack: LOCAL + 1 });
    assert_eq!(s.conn.rto(), Duration::from_millis(300));
    s.write(b"abc").unwrap();
    recv!(s, seg! { seq: LOCAL + 1, ack: REMOTE + 1, flags: PSH, payload: b"abc" });
    recv_nothing!(s, time = 399);
    recv!(s, time = 400, seg! { seq: LOCAL + 1, ack: REMOTE + 1, flags: PSH, payload: b"abc" });
    recv_nothing!(s, time = 999);
    recv!(s, time = 1000, seg! { seq: LOCAL + 1, ack: REMOTE + 1, flags: PSH, payload: b"abc" });
    recv!(s, time = 2200, seg! { seq: LOCAL + 1, ack: REMOTE + 1, flags: PSH, payload: b"abc" });
    assert_eq!(s.conn.stats().retransmits, 3);
    assert_eq!(s.conn.rto(), Duration::from_millis(2400));
    send!(s, time = 2300, seg! { seq: REMOTE + 1, ack: LOCAL + 4 });
    // Karn: the ACK of a retransmission is no RTT sample; the backoff stays
    // until new data is timed.
    assert_eq!(s.conn.srtt(), Some(Duration::from_millis(100)));
    assert_eq!(s.conn.rto(), Duration::from_millis(2400));
    s.write(b"d").unwrap();
    recv!(s, seg! { seq: LOCAL + 4, ack: REMOTE + 1, flags: PSH, payload: b"d" });
    send!(s, time = 2350, seg! { seq: REMOTE + 1, ack: LOCAL + 5 });
    // SRTT 7/8 * 100 + 1/8 * 50, RTTVAR 3/4 * 50 + 1/4 * 50.
    assert_eq!(s.conn.srtt(), Some(Duration::from_micros(93_750)));
    assert_eq!(s.conn.rto(), Duration::from_micros(293_750));
    recv_nothing!(s, time = 20_000);
}

#[test]
fn gives_up_after_max_retransmits() {
    let cfg = TcpConfig { max_retransmits: 3, ..config() };
    let mut s = socket_syn_received_with(&cfg, seg! { seq: REMOTE, flags: SYN });
    send!(s, seg! { seq: REMOTE + 1, ack: LOCAL + 1 });
    s.write(b"x").unwrap();
    recv!(s, seg! { seq: LOCAL + 1, ack: REMOTE + 1, flags: PSH, payload: b"x" });
    for t in [1000, 3000, 7000] {
        recv!(s, time = t, seg! { seq: LOCAL + 1, ack: REMOTE + 1, flags: PSH, payload: b"x" });
    }
    recv_nothing!(s, time = 15_000);
    assert_eq!(s.conn.error(), Some(ConnError::TimedOut));
    assert_eq!(s.write(b"y"), Err(SendError::Closed(Some(ConnError::TimedOut))));
}

#[test]
fn newreno_fast_retransmit_on_three_dup_acks() {
    let mut s = socket_established();
    let data = [7u8; 5 * 1460];
    s.write(&data).unwrap();
    for i in 0..5u32 {
        let seg = s.poll().expect("segment");
        assert_eq!((seg.seq, seg.payload.len()), (LOCAL + 1 + i * 1460, 1460));
    }
    for _ in 0..2 {
        send!(s, time = 10, seg! { seq: REMOTE + 1, ack: LOCAL + 1 });
        recv_nothing!(s);
    }
    send!(s, seg! { seq: REMOTE + 1, ack: LOCAL + 1 });
    let rexmit = s.poll().expect("fast retransmit");
    assert_eq!((rexmit.seq, rexmit.payload.len()), (LOCAL + 1, 1460));
    assert_eq!(s.conn.stats().fast_recoveries, 1);
    // Partial ACK: the next hole goes out at once (RFC 6582).
    send!(s, seg! { seq: REMOTE + 1, ack: LOCAL + 1 + 1460 });
    let next = s.poll().expect("partial-ack retransmit");
    assert_eq!(next.seq, LOCAL + 1 + 1460);
}

// ---- Nagle and delayed ACK ----------------------------------------------------

#[test]
fn nagle_holds_small_segments_while_one_is_unacked() {
    let mut s = socket_established();
    s.write(b"a").unwrap();
    recv!(s, seg! { seq: LOCAL + 1, ack: REMOTE + 1, flags: PSH, payload: b"a" });
    s.write(b"b").unwrap();
    recv_nothing!(s);
    s.write(b"c").unwrap();
    recv_nothing!(s);
    send!(s, time = 10, seg! { seq: REMOTE + 1, ack: LOCAL + 2 });
    recv!(s, seg! { seq: LOCAL + 2, ack: REMOTE + 1, flags: PSH, payload: b"bc" });
}

#[test]
fn nodelay_sends_small_segments_at_once() {
    let mut s = socket_established();
    s.conn.set_nodelay(true);
    s.write(b"a").unwrap();
    recv!(s, seg! { seq: LOCAL + 1, ack: REMOTE + 1, flags: PSH, payload: b"a" });
    s.write(b"b").unwrap();
    recv!(s, seg! { seq: LOCAL + 2, ack: REMOTE + 1, flags: PSH, payload: b"b" });
}

#[test]
fn nagle_lets_full_segments_through() {
    let mut s = socket_established();
    s.write(b"a").unwrap();
    recv!(s, seg! { seq: LOCAL + 1, ack: REMOTE + 1, flags: PSH, payload: b"a" });
    s.write(&[1u8; 1460]).unwrap();
    let full = s.poll().expect("full segment");
    assert_eq!((full.seq, full.payload.len()), (LOCAL + 2, 1460));
}

#[test]
fn delayed_ack_fires_after_timeout() {
    let mut s = socket_established();
    send!(s, time = 100, seg! { seq: REMOTE + 1, ack: LOCAL + 1, payload: b"x" });
    recv_nothing!(s, time = 139);
    recv!(s, time = 140, seg! { seq: LOCAL + 1, ack: REMOTE + 2 });
}

#[test]
fn every_second_full_segment_is_acked_at_once() {
    let mut s = socket_established();
    let full = [0u8; 1460];
    send!(s, seg! { seq: REMOTE + 1, ack: LOCAL + 1, payload: full });
    recv_nothing!(s);
    send!(s, seg! { seq: REMOTE + 1461, ack: LOCAL + 1, payload: full });
    recv!(s, seg! { seq: LOCAL + 1, ack: REMOTE + 2921 });
}

#[test]
fn out_of_order_and_hole_fill_are_acked_at_once() {
    let mut s = socket_established();
    send!(s, seg! { seq: REMOTE + 4, ack: LOCAL + 1, payload: b"def" });
    recv!(s, seg! { seq: LOCAL + 1, ack: REMOTE + 1 });
    send!(s, seg! { seq: REMOTE + 1, ack: LOCAL + 1, payload: b"abc" });
    recv!(s, seg! { seq: LOCAL + 1, ack: REMOTE + 7 });
    let mut buf = [0u8; 8];
    assert_eq!(s.read(&mut buf), Ok(6));
    assert_eq!(&buf[..6], b"abcdef");
}

#[test]
fn piggybacked_ack_cancels_delayed_ack() {
    let mut s = socket_established();
    send!(s, seg! { seq: REMOTE + 1, ack: LOCAL + 1, payload: b"ping" });
    s.write(b"pong").unwrap();
    recv!(s, seg! { seq: LOCAL + 1, ack: REMOTE + 5, flags: PSH, payload: b"pong" });
    assert_eq!(s.conn.poll_timeout(), Some(Instant::from_millis(200)), "only the RTO is left");
}

// ---- Windows -----------------------------------------------------------------

#[test]
fn zero_window_probe_with_backoff() {
    let mut s = socket_established();
    send!(s, seg! { seq: REMOTE + 1, ack: LOCAL + 1, window: 0 });
    s.write(b"hello").unwrap();
    recv_nothing!(s);
    // The handshake ACK came at once: RTO is the 200 ms minimum.
    recv_nothing!(s, time = 199);
    recv!(s, time = 200, seg! { seq: LOCAL + 1, ack: REMOTE + 1, payload: b"h" });
    send!(s, seg! { seq: REMOTE + 1, ack: LOCAL + 1, window: 0 });
    recv_nothing!(s, time = 599);
    recv!(s, time = 600, seg! { seq: LOCAL + 1, ack: REMOTE + 1, payload: b"h" });
    recv_nothing!(s, time = 1399);
    recv!(s, time = 1400, seg! { seq: LOCAL + 1, ack: REMOTE + 1, payload: b"h" });
    assert_eq!(s.conn.stats().zero_window_probes, 3);
    assert_eq!(s.state(), State::Established, "answered probes never time out");
    // The window opens (and the probe byte was taken).
    send!(s, time = 1410, seg! { seq: REMOTE + 1, ack: LOCAL + 2, window: 1000 });
    recv!(s, seg! { seq: LOCAL + 2, ack: REMOTE + 1, flags: PSH, payload: b"ello" });
    assert_eq!(s.state(), State::Established);
}

#[test]
fn acks_after_a_refused_probe_stay_inside_the_peers_zero_window() {
    // The probe byte the peer refused is past its window: an ACK at SND.MAX
    // (one beyond it) is unacceptable to a zero-window receiver, which
    // accepts only SEG.SEQ = RCV.NXT (RFC 9293 §3.10.7.4) and would drop the
    // window update in it. Both ends then wait for each other (two threads
    // sending and receiving on one socket under the LD_PRELOAD library hit
    // it against a Linux echo server whose buffers were full).
    let mut s = socket_established();
    send!(s, seg! { seq: REMOTE + 1, ack: LOCAL + 1, window: 0 });
    s.write(b"hello").unwrap();
    recv_nothing!(s);
    recv!(s, time = 200, seg! { seq: LOCAL + 1, ack: REMOTE + 1, payload: b"h" });
    // Refused: the peer's window is still zero at LOCAL + 1.
    send!(s, time = 201, seg! { seq: REMOTE + 1, ack: LOCAL + 1, window: 0, payload: b"data" });
    recv!(s, time = 300, seg! { seq: LOCAL + 1, ack: REMOTE + 5 });
    // Once the window opens, the probe byte counts again.
    send!(s, time = 320, seg! { seq: REMOTE + 5, ack: LOCAL + 2, window: 1000 });
    recv!(s, seg! { seq: LOCAL + 2, ack: REMOTE + 5, flags: PSH, payload: b"ello" });
}

/// A FIN takes a sequence number, so it waits for room in the peer's window
/// as data does (Linux's tcp_snd_wnd_test counts it too). Sent one past the
/// edge, it was refused, and every ACK after it carried a sequence number the
/// peer found out of window: a peer in SYN-RECEIVED answered each with its
/// SYN-ACK, and ours answered that, forever (tcp_sequence fuzz target).
#[test]
fn fin_waits_for_room_in_the_peers_window() {
    let mut s = socket_established();
    send!(s, seg! { seq: REMOTE + 1, ack: LOCAL + 1, window: 5 });
    s.write(b"hello").unwrap();
    s.conn.shutdown_write().unwrap();
    recv!(s, seg! { seq: LOCAL + 1, ack: REMOTE + 1, flags: PSH, payload: b"hello" });
    recv_nothing!(s);
    // The data is acknowledged but the window stays shut: nothing is in
    // flight to bring an update, so the persist timer asks for one with a
    // bare ACK below SND.UNA, which the peer must answer.
    send!(s, time = 10, seg! { seq: REMOTE + 1, ack: LOCAL + 6, window: 0 });
    recv_nothing!(s);
    recv_nothing!(s, time = 209);
    recv!(s, time = 210, seg! { seq: LOCAL + 5, ack: REMOTE + 1 });
    assert_eq!(s.conn.stats().zero_window_probes, 1);
    // Room: the FIN goes.
    send!(s, time = 220, seg! { seq: REMOTE + 1, ack: LOCAL + 6, window: 100 });
    recv!(s, seg! { seq: LOCAL + 6, ack: REMOTE + 1, flags: FIN });
    send!(s, time = 230, seg! { seq: REMOTE + 1, ack: LOCAL + 7, window: 100 });
    assert_eq!(s.state(), State::FinWait2);
}

/// "If an incoming segment is not acceptable, an acknowledgment should be
/// sent in reply": for a pure ACK or a SYN, at most once per
/// `invalid_ack_interval` (500 ms), as Linux's tcp_oow_rate_limited. Two
/// ends that each find the other's ACKs unacceptable would otherwise answer
/// each other at wire speed forever. Data is always answered.
#[test]
fn replies_to_out_of_window_pure_acks_are_rate_limited() {
    let mut s = socket_established();
    let far = REMOTE + 100_000;
    send!(s, seg! { seq: far, ack: LOCAL + 1 });
    recv!(s, seg! { seq: LOCAL + 1, ack: REMOTE + 1 });
    send!(s, time = 100, seg! { seq: far, ack: LOCAL + 1 });
    recv_nothing!(s);
    send!(s, time = 200, seg! { seq: far, ack: LOCAL + 1, payload: b"x" });
    recv!(s, seg! { seq: LOCAL + 1, ack: REMOTE + 1 });
    send!(s, time = 499, seg! { seq: far, ack: LOCAL + 1 });
    recv_nothing!(s);
    send!(s, time = 500, seg! { seq: far, ack: LOCAL + 1 });
    recv!(s, seg! { seq: LOCAL + 1, ack: REMOTE + 1 });
    assert_eq!(s.conn.stats().invalid_acks_suppressed, 2);
    // Zero turns the limit off.
    let cfg = TcpConfig { invalid_ack_interval: Duration::ZERO, ..config() };
    let mut s = socket_syn_received_with(&cfg, seg! { seq: REMOTE, flags: SYN });
    send!(s, seg! { seq: REMOTE + 1, ack: LOCAL + 1 });
    for _ in 0..3 {
        send!(s, seg! { seq: far, ack: LOCAL + 1 });
        recv!(s, seg! { seq: LOCAL + 1, ack: REMOTE + 1 });
    }
}

#[test]
fn receiver_window_shrinks_with_unread_data_and_reopens_with_an_update() {
    let cfg = TcpConfig { recv_buffer_size: 4000, ..config() };
    let mut s = socket_syn_received_with(&cfg, seg! { seq: REMOTE, flags: SYN });
    send!(s, seg! { seq: REMOTE + 1, ack: LOCAL + 1 });
    send!(s, seg! { seq: REMOTE + 1, ack: LOCAL + 1, payload: [0u8; 1460] });
    send!(s, seg! { seq: REMOTE + 1461, ack: LOCAL + 1, payload: [0u8; 1460] });
    recv!(s, seg! { seq: LOCAL + 1, ack: REMOTE + 2921, window: 1080 });
    send!(s, seg! { seq: REMOTE + 2921, ack: LOCAL + 1, payload: [0u8; 1080] });
    recv!(s, time = 40, seg! { seq: LOCAL + 1, ack: REMOTE + 4001, window: 0 });
    // Reading 100 bytes is not worth a window update (receiver SWS avoidance).
    let mut buf = [0u8; 4000];
    assert_eq!(s.read(&mut buf[..100]), Ok(100));
    recv_nothing!(s);
    assert_eq!(s.read(&mut buf), Ok(3900));
    recv!(s, seg! { seq: LOCAL + 1, ack: REMOTE + 4001, window: 4000 });
}

#[test]
fn data_beyond_the_window_is_trimmed() {
    let cfg = TcpConfig { recv_buffer_size: 10, ..config() };
    let mut s = socket_syn_received_with(&cfg, seg! { seq: REMOTE, flags: SYN });
    send!(s, seg! { seq: REMOTE + 1, ack: LOCAL + 1, payload: b"0123456789abcdef" });
    recv!(s, seg! { seq: LOCAL + 1, ack: REMOTE + 11, window: 0 });
    assert_eq!(s.conn.recv_queue(), 10);
}

/// A peer that filled our window sends its pure ACKs at its SND.NXT, our
/// right window edge, while its data is lost or still on its way. RFC 9293's
/// table calls a zero-length segment there unacceptable, which would throw
/// its ACK away; Linux (`tcp_sequence`) and the BSDs accept it. Found by the
/// netem echo run: the dropped ACKs left SND.UNA behind and the RTO resent
/// data Linux had acknowledged (it D-SACKed it).
#[test]
fn pure_ack_at_the_right_window_edge_is_accepted() {
    let cfg = TcpConfig { recv_buffer_size: 4000, ..config() };
    let mut s = socket_syn_received_with(&cfg, seg! { seq: REMOTE, flags: SYN });
    send!(s, seg! { seq: REMOTE + 1, ack: LOCAL + 1 });
    s.write(b"hello").unwrap();
    recv!(s, seg! { seq: LOCAL + 1, ack: REMOTE + 1, flags: PSH, payload: b"hello" });
    // The peer sent our whole 4000-byte window, all of it lost so far.
    let out = send!(s, time = 10, seg! { seq: REMOTE + 4001, ack: LOCAL + 6 });
    assert_eq!(out.dropped, None);
    assert_eq!(s.conn.send_queue(), 0, "\"hello\" is acknowledged");
    assert_eq!(s.conn.poll_timeout(), None, "nothing outstanding: RFC 6298 (5.2) stops the timer");
    recv_nothing!(s, time = 10_000);
    // One octet further is still out of the window: dropped with an ACK.
    let out = send!(s, seg! { seq: REMOTE + 4002, ack: LOCAL + 6 });
    assert_eq!(out.dropped, Some(DropReason::OutOfWindow));
    recv!(s, seg! { seq: LOCAL + 6, ack: REMOTE + 1 });
}

// ---- Keepalive ---------------------------------------------------------------

#[test]
fn keepalive_probes_then_gives_up() {
    let cfg = TcpConfig {
        keepalive: true,
        keepalive_idle: Duration::from_secs(10),
        keepalive_interval: Duration::from_secs(1),
        keepalive_count: 2,
        ..config()
    };
    let mut s = socket_syn_received_with(&cfg, seg! { seq: REMOTE, flags: SYN });
    send!(s, seg! { seq: REMOTE + 1, ack: LOCAL + 1 });
    recv_nothing!(s, time = 9_999);
    recv!(s, time = 10_000, seg! { seq: LOCAL, ack: REMOTE + 1 });
    // An answer resets the count and the idle timer.
    send!(s, time = 10_010, seg! { seq: REMOTE + 1, ack: LOCAL + 1 });
    recv_nothing!(s, time = 20_009);
    recv!(s, time = 20_010, seg! { seq: LOCAL, ack: REMOTE + 1 });
    recv!(s, time = 21_010, seg! { seq: LOCAL, ack: REMOTE + 1 });
    recv_nothing!(s, time = 22_010);
    assert_eq!(s.conn.error(), Some(ConnError::TimedOut));
}

// ---- Options -----------------------------------------------------------------

#[test]
fn mss_is_clamped_and_defaults_to_536() {
    let tiny = socket_syn_received_with(
        &config(),
        seg! { seq: REMOTE, flags: SYN, options: Options { mss: Some(1), ..Options::default() } },
    );
    assert_eq!(tiny.conn.mss(), 48);
    let none = socket_syn_received_with(&config(), seg! { seq: REMOTE, flags: SYN });
    assert_eq!(none.conn.mss(), 536);
    let huge = socket_syn_received_with(
        &config(),
        seg! { seq: REMOTE, flags: SYN, options: Options { mss: Some(9000), ..Options::default() } },
    );
    assert_eq!(huge.conn.mss(), 1460);
}

#[test]
fn window_scale_negotiation_and_clamp() {
    let cfg = TcpConfig { window_scaling: true, recv_buffer_size: 1 << 20, ..config() };
    let s = socket_syn_received_with(
        &cfg,
        seg! { seq: REMOTE, flags: SYN, options: Options { window_scale: Some(20), ..Options::default() } },
    );
    assert_eq!(s.conn.window_scales(), (14, 5));
    let s = socket_syn_received_with(&cfg, seg! { seq: REMOTE, flags: SYN });
    assert_eq!(s.conn.window_scales(), (0, 0), "only used if both sides offer it");
}

#[test]
fn syn_ack_offers_only_what_the_peer_offered() {
    let cfg = TcpConfig { window_scaling: true, sack: true, timestamps: true, ..config() };
    let mut s = Sock::new(
        Connection::accept(
            tuple(),
            &seg! { seq: REMOTE, flags: SYN, options: Options { sack_permitted: true, ..Options::default() } }
                .to_segment(),
            cfg,
            SeqNumber(LOCAL),
            Instant::ZERO,
        )
        .unwrap(),
        &cfg,
    );
    let synack = s.poll().unwrap();
    assert_eq!(synack.options, Some(Options { mss: Some(1460), sack_permitted: true, ..Options::default() }));
}

fn ts_config() -> TcpConfig {
    TcpConfig { timestamps: true, ..config() }
}

fn ts(val: u32, ecr: u32) -> Options {
    Options { timestamp: Some((val, ecr)), ..Options::default() }
}

#[test]
fn paws_drops_old_timestamps() {
    let mut s = established_with(&ts_config(), ts(100, 0));
    let tsnow = s.poll_timestamp();
    send!(s, seg! { seq: REMOTE + 1, ack: LOCAL + 1, options: ts(200, tsnow), payload: b"new" });
    let out = send!(s, seg! { seq: REMOTE + 4, ack: LOCAL + 1, options: ts(150, tsnow), payload: b"old" });
    assert_eq!(out.dropped, Some(DropReason::Paws));
    let ack = s.poll().expect("ACK for the PAWS reject");
    assert_eq!((ack.ack, ack.options.unwrap().timestamp.unwrap().1), (Some(REMOTE + 4), 200));
    assert_eq!(s.conn.recv_queue(), 3);
    // RST is exempt from PAWS.
    let out = send!(s, seg! { seq: REMOTE + 4, flags: RST, options: ts(1, 0) });
    assert!(out.reset);
}

#[test]
fn missing_timestamp_is_dropped_once_negotiated() {
    let mut s = established_with(&ts_config(), ts(100, 0));
    let out = send!(s, seg! { seq: REMOTE + 1, ack: LOCAL + 1, payload: b"x" });
    assert_eq!(out.dropped, Some(DropReason::MissingTimestamp));
}

#[test]
fn syn_without_timestamp_draws_a_challenge_ack_once_negotiated() {
    // RFC 5961 §4.2 over RFC 7323 §3.2, as Linux does: a SYN is answered even
    // without a TSopt, so a peer that rebooted learns our state and resets it.
    let mut s = established_with(&ts_config(), ts(100, 0));
    let out = send!(s, seg! { seq: REMOTE + 500, flags: SYN });
    assert_eq!(out.dropped, Some(DropReason::Syn));
    let ack = s.poll().expect("challenge ACK for the SYN");
    assert_eq!((ack.seq, ack.ack, ack.flags), (LOCAL + 1, Some(REMOTE + 1), ACK));
    assert_eq!(s.conn.stats().challenge_acks, 1);
    assert_eq!(s.state(), State::Established);
}

#[test]
fn timestamps_measure_rtt_even_for_retransmissions() {
    let mut s = established_with(&ts_config(), ts(100, 0));
    s.write(b"abc").unwrap();
    let first = s.poll().unwrap();
    let tsval = first.options.unwrap().timestamp.unwrap().0;
    s.at(200);
    let _rexmit = s.poll().expect("retransmission");
    send!(s, time = 1030, seg! { seq: REMOTE + 1, ack: LOCAL + 4, options: ts(101, tsval + 200) });
    // One 830 ms sample on top of the 0 ms handshake: 1/8 * 830.
    assert_eq!(s.conn.srtt(), Some(Duration::from_micros(103_750)));
}

fn sack_config() -> TcpConfig {
    TcpConfig { sack: true, ..config() }
}

/// First sequence number of the `i`th full-sized segment we send.
fn seg_start(i: u32) -> u32 {
    LOCAL + 1 + i * 1460
}

/// SACK blocks covering the segments `[a, b)` of each pair.
fn sack(blocks: &[(u32, u32)]) -> Options {
    let mut o = Options::default();
    for (slot, &(a, b)) in o.sack_blocks.iter_mut().zip(blocks) {
        *slot = Some((SeqNumber(seg_start(a)), SeqNumber(seg_start(b))));
    }
    o
}

/// A SACK connection that has sent `n` full-sized segments, none ACKed yet.
/// RACK-TLP is off: these tests are about what follows an RTO, and a tail
/// loss probe would come first (`tcp_rack.rs` covers that).
fn sack_socket_with_flight(n: u32) -> Sock {
    let cfg = TcpConfig { rack_tlp: false, ..sack_config() };
    let mut s = established_with(&cfg, Options { sack_permitted: true, ..Options::default() });
    s.write(&vec![9u8; n as usize * 1460]).unwrap();
    for i in 0..n {
        let seg = s.poll().expect("segment");
        assert_eq!((seg.seq, seg.payload.len()), (seg_start(i), 1460));
    }
    s
}

#[test]
fn sack_blocks_report_the_latest_island_first() {
    let mut s = established_with(&sack_config(), Options { sack_permitted: true, ..Options::default() });
    let block = |a: u32, b: u32| Some((SeqNumber(a), SeqNumber(b)));
    send!(s, seg! { seq: REMOTE + 11, ack: LOCAL + 1, payload: b"bb" });
    let a = s.poll().unwrap();
    assert_eq!(a.options.unwrap().sack_blocks, [block(REMOTE + 11, REMOTE + 13), None, None, None]);
    send!(s, seg! { seq: REMOTE + 21, ack: LOCAL + 1, payload: b"cc" });
    let a = s.poll().unwrap();
    assert_eq!(
        a.options.unwrap().sack_blocks,
        [block(REMOTE + 21, REMOTE + 23), block(REMOTE + 11, REMOTE + 13), None, None]
    );
    send!(s, seg! { seq: REMOTE + 13, ack: LOCAL + 1, payload: b"x" });
    let a = s.poll().unwrap();
    assert_eq!(
        a.options.unwrap().sack_blocks,
        [block(REMOTE + 11, REMOTE + 14), block(REMOTE + 21, REMOTE + 23), None, None]
    );
    send!(s, seg! { seq: REMOTE + 1, ack: LOCAL + 1, payload: b"0123456789" });
    let a = s.poll().unwrap();
    assert_eq!(a.ack, Some(REMOTE + 14));
    assert_eq!(a.options.unwrap().sack_blocks, [block(REMOTE + 21, REMOTE + 23), None, None, None]);
}

#[test]
fn duplicates_are_reported_once_in_a_dsack_block() {
    let mut s = established_with(&sack_config(), Options { sack_permitted: true, ..Options::default() });
    let block = |a: u32, b: u32| Some((SeqNumber(a), SeqNumber(b)));
    send!(s, seg! { seq: REMOTE + 1, ack: LOCAL + 1, payload: b"0123456789" });
    s.at(200); // the delayed ACK goes
    assert_eq!(s.poll().unwrap().ack, Some(REMOTE + 11));
    // RFC 2883 §4 (1): a whole duplicate below RCV.NXT.
    send!(s, seg! { seq: REMOTE + 1, ack: LOCAL + 1, payload: b"0123456789" });
    let a = s.poll().expect("a duplicate is answered at once");
    assert_eq!(a.ack, Some(REMOTE + 11));
    assert_eq!(a.options.unwrap().sack_blocks, [block(REMOTE + 1, REMOTE + 11), None, None, None]);
    // A segment that starts with old bytes: only those are duplicates.
    send!(s, seg! { seq: REMOTE + 6, ack: LOCAL + 1, payload: b"56789ab" });
    s.at(400);
    let a = s.poll().unwrap();
    assert_eq!(a.ack, Some(REMOTE + 13));
    assert_eq!(a.options.unwrap().sack_blocks, [block(REMOTE + 6, REMOTE + 11), None, None, None]);
    // §4 (2): a duplicate of data held out of order; the next block is the
    // island that holds it.
    send!(s, seg! { seq: REMOTE + 21, ack: LOCAL + 1, payload: b"kkkk" });
    let a = s.poll().unwrap();
    assert_eq!(a.options.unwrap().sack_blocks, [block(REMOTE + 21, REMOTE + 25), None, None, None]);
    send!(s, seg! { seq: REMOTE + 22, ack: LOCAL + 1, payload: b"kk" });
    let a = s.poll().unwrap();
    assert_eq!(
        a.options.unwrap().sack_blocks,
        [block(REMOTE + 22, REMOTE + 24), block(REMOTE + 21, REMOTE + 25), None, None]
    );
    // Each duplicate is reported once: the next ACK has the island alone.
    send!(s, seg! { seq: REMOTE + 31, ack: LOCAL + 1, payload: b"m" });
    let a = s.poll().unwrap();
    assert_eq!(
        a.options.unwrap().sack_blocks,
        [block(REMOTE + 31, REMOTE + 32), block(REMOTE + 21, REMOTE + 25), None, None]
    );
    assert_eq!(s.conn.stats().dsacks_sent, 3);
}

#[test]
fn no_dsack_without_sack() {
    let mut s = established_with(&config(), Options::default());
    send!(s, seg! { seq: REMOTE + 1, ack: LOCAL + 1, payload: b"0123456789" });
    send!(s, seg! { seq: REMOTE + 1, ack: LOCAL + 1, payload: b"0123456789" });
    let a = s.poll().unwrap();
    assert_eq!(a.ack, Some(REMOTE + 11));
    assert_eq!(a.options.unwrap().sack_blocks, [None; 4]);
    assert_eq!(s.conn.stats().dsacks_sent, 0);
}

#[test]
fn sack_recovery_retransmits_only_the_holes() {
    let mut s = sack_socket_with_flight(8);
    // Segments 0 and 3 are lost; 1-2 and 4-7 arrive.
    send!(s, time = 10, seg! { seq: REMOTE + 1, ack: LOCAL + 1, options: sack(&[(1, 2)]) });
    send!(s, seg! { seq: REMOTE + 1, ack: LOCAL + 1, options: sack(&[(1, 3)]) });
    send!(s, seg! { seq: REMOTE + 1, ack: LOCAL + 1, options: sack(&[(4, 5), (1, 3)]) });
    let r1 = s.poll().expect("first hole");
    assert_eq!((r1.seq, r1.payload.len()), (seg_start(0), 1460));
    send!(s, seg! { seq: REMOTE + 1, ack: LOCAL + 1, options: sack(&[(4, 8), (1, 3)]) });
    let r2 = s.poll().expect("second hole");
    assert_eq!((r2.seq, r2.payload.len()), (seg_start(3), 1460));
    recv_nothing!(s);
    assert_eq!(s.conn.stats().retransmits, 2);
    send!(s, seg! { seq: REMOTE + 1, ack: seg_start(8) });
    recv_nothing!(s);
}

/// RFC 6675 §5.1: "a SACK TCP sender SHOULD utilize all SACK information
/// made available during the slow start phase of loss recovery following an
/// RTO". The scoreboard is cleared by the timeout (RFC 2018 §8) and learnt
/// again from the ACKs that follow; go-back-N skips what they SACK.
#[test]
fn prr_spreads_the_window_reduction_over_the_recovery() {
    // A 20-segment flight (CUBIC, RFC 6675 loss detection) whose first
    // segment is lost: the peer SACKs segments 1..=19 one ACK at a time.
    let cfg = TcpConfig { rack_tlp: false, initial_cwnd_segments: 20, ..sack_config() };
    let mut s = established_with(&cfg, Options { sack_permitted: true, ..Options::default() });
    s.write(&vec![9u8; 60 * 1460]).unwrap();
    for i in 0..20 {
        assert_eq!(s.poll().expect("segment").seq, seg_start(i));
    }
    assert!(s.poll().is_none(), "the initial window is 20 segments");
    let mut sent = Vec::new();
    for k in 1..20 {
        send!(s, seg! { seq: REMOTE + 1, ack: LOCAL + 1, options: sack(&[(1, k + 1)]) });
        while let Some(seg) = s.poll() {
            sent.push((k, seg.seq));
        }
    }
    assert_eq!(s.conn.stats().fast_recoveries, 1);
    // The first two SACKs shrink the pipe and let two new segments go; the
    // third duplicate ACK starts recovery with the fast retransmit.
    assert_eq!(sent[..3], [(1, seg_start(20)), (2, seg_start(21)), (3, seg_start(0))]);
    // ssthresh = 0.7 × 20 segments = 20,440 octets, RecoverFS = the 22
    // segments outstanding. While the pipe is above ssthresh each ACK earns
    // ssthresh/RecoverFS (0.64) of the segment it delivered: ACK k may send
    // CEIL((k-2) × 1460 × 20440 / 32120) − prr_out octets, whole segments
    // only: new data goes on ACKs 6, 7, 9 and 10 (a window that drops to
    // ssthresh at once would send nothing until the pipe had drained below
    // it, ACK 9). From ACK 12 the pipe is at ssthresh and PRR-SSRB keeps it
    // there, one segment per segment delivered.
    let new: Vec<u32> = sent[3..].iter().map(|&(k, _)| k).collect();
    assert_eq!(new, [6, 7, 9, 10, 13, 14, 15, 16, 17, 18, 19]);
    for (i, &(_, seq)) in sent[3..].iter().enumerate() {
        assert_eq!(seq, seg_start(22 + i as u32), "new data, in order");
    }
    assert_eq!(s.conn.cwnd(), 20440, "the window ends the episode at ssthresh");
}

/// Segment 0 of eight is overtaken by 1-3 (reordering): the third SACK
/// starts a fast recovery that resends it, then the original arrives and
/// everything is acknowledged. Returns the socket with the recovery over.
fn recovery_for_a_reordered_segment() -> Sock {
    let mut s = sack_socket_with_flight(8);
    for k in 1..4 {
        send!(s, seg! { seq: REMOTE + 1, ack: LOCAL + 1, options: sack(&[(1, k + 1)]) });
    }
    assert_eq!(s.conn.stats().fast_recoveries, 1);
    assert_eq!(s.poll().expect("the fast retransmit").seq, seg_start(0));
    while s.poll().is_some() {}
    send!(s, seg! { seq: REMOTE + 1, ack: seg_start(8) });
    s
}

#[test]
fn a_recovery_whose_resends_were_all_duplicates_is_undone() {
    let mut s = recovery_for_a_reordered_segment();
    let (reduced, prior) = (s.conn.cwnd(), 10 * 1460);
    assert!(reduced < prior, "recovery cut the window to {reduced}");
    // The resent copy reaches the peer after the original: its D-SACK says
    // the retransmission was for nothing (RFC 3708).
    send!(s, seg! { seq: REMOTE + 1, ack: seg_start(8), options: sack(&[(0, 1)]) });
    assert_eq!(s.conn.stats().recoveries_undone, 1);
    assert_eq!(s.conn.cwnd(), prior);
    assert_eq!(s.conn.ssthresh(), usize::MAX, "back in slow start, where the episode found it");
    // Once only: another D-SACK changes nothing.
    send!(s, seg! { seq: REMOTE + 1, ack: seg_start(8), options: sack(&[(0, 1)]) });
    assert_eq!(s.conn.stats().recoveries_undone, 1);
}

#[test]
fn a_recovery_stays_when_its_resend_was_needed() {
    let mut s = recovery_for_a_reordered_segment();
    let reduced = s.conn.cwnd();
    // No D-SACK: the retransmission repaired a loss. A D-SACK for other
    // data (below the episode's start) does not count either.
    let mut older = Options::default();
    older.sack_blocks[0] = Some((SeqNumber(seg_start(0) - 100), SeqNumber(seg_start(0))));
    send!(s, seg! { seq: REMOTE + 1, ack: seg_start(8), options: older });
    assert_eq!(s.conn.stats().recoveries_undone, 0);
    assert_eq!(s.conn.cwnd(), reduced);
}

#[test]
fn go_back_n_after_rto_skips_data_sacked_since() {
    let mut s = sack_socket_with_flight(8);
    // No ACK at all: the timer fires and segment 0 is resent.
    let r0 = recv!(s, time = 200, seg! { seq: seg_start(0), ack: REMOTE + 1, payload: [9u8; 1460] });
    assert_eq!(r0.seq, seg_start(0));
    recv_nothing!(s);
    // Segments 1 and 5 were lost, the others arrived: the ACK of the
    // retransmission says so. Slow start allows two segments: the holes.
    send!(s, time = 210, seg! { seq: REMOTE + 1, ack: seg_start(1), options: sack(&[(6, 8), (2, 5)]) });
    let r1 = s.poll().expect("segment 1");
    assert_eq!((r1.seq, r1.payload.len()), (seg_start(1), 1460));
    let r5 = s.poll().expect("segment 5");
    assert_eq!((r5.seq, r5.payload.len()), (seg_start(5), 1460));
    recv_nothing!(s);
    assert_eq!(s.conn.stats().retransmits, 3);
    send!(s, time = 220, seg! { seq: REMOTE + 1, ack: seg_start(8) });
    assert_eq!(s.conn.send_queue(), 0);
    assert_eq!(s.conn.poll_timeout(), None);
    recv_nothing!(s, time = 10_000);
}

/// A SACKed range that starts inside a segment: the go-back-N resend stops
/// where it begins and resumes after it.
#[test]
fn go_back_n_after_rto_trims_resends_at_sacked_edges() {
    let mut s = sack_socket_with_flight(4);
    let at = |off: u32| LOCAL + 1 + off;
    recv!(s, time = 200, seg! { seq: at(0), ack: REMOTE + 1, payload: [9u8; 1460] });
    let mut o = Options::default();
    o.sack_blocks[0] = Some((SeqNumber(at(2000)), SeqNumber(at(3000))));
    send!(s, time = 210, seg! { seq: REMOTE + 1, ack: at(1460), options: o });
    let a = s.poll().expect("up to the SACKed range");
    assert_eq!((a.seq, a.payload.len()), (at(1460), 540));
    let b = s.poll().expect("after the SACKed range");
    assert_eq!((b.seq, b.payload.len()), (at(3000), 1460));
    recv_nothing!(s);
}

#[test]
fn bogus_sack_blocks_are_ignored() {
    let mut s = established_with(&sack_config(), Options { sack_permitted: true, ..Options::default() });
    s.write(&[1u8; 2920]).unwrap();
    s.poll().unwrap();
    s.poll().unwrap();
    let mut o = Options::default();
    o.sack_blocks[0] = Some((SeqNumber(LOCAL + 100_000), SeqNumber(LOCAL + 200_000)));
    o.sack_blocks[1] = Some((SeqNumber(LOCAL - 50), SeqNumber(LOCAL)));
    o.sack_blocks[2] = Some((SeqNumber(LOCAL + 500), SeqNumber(LOCAL + 100)));
    for _ in 0..2 {
        send!(s, seg! { seq: REMOTE + 1, ack: LOCAL + 1, options: o });
    }
    recv_nothing!(s);
}

// ---- Listener ------------------------------------------------------------------

const SECRET: [u8; 16] = *b"0123456789abcdef";

#[test]
fn listener_handles_syn_ack_and_rst() {
    let mut l = Listener::new(config(), 2, SECRET, false);
    let mut pool = BufferPool::for_config(&config());
    let now = Instant::from_secs(5);
    assert!(matches!(
        l.on_segment(now, tuple(), &seg! { seq: 1, flags: RST }.to_segment(), &[], &mut pool),
        ListenOutcome::Drop(_)
    ));
    match l.on_segment(now, tuple(), &seg! { seq: 1, ack: 77 }.to_segment(), &[], &mut pool) {
        ListenOutcome::Reply(rst) => assert_eq!((rst.seq, rst.flags), (SeqNumber(77), RST)),
        other => panic!("{other:?}"),
    }
    let ListenOutcome::HalfOpen(mut c) =
        l.on_segment(now, tuple(), &seg! { seq: REMOTE, flags: SYN }.to_segment(), &[], &mut pool)
    else {
        panic!("expected a half-open connection")
    };
    assert_eq!(c.poll_transmit(now, MAX_PAYLOAD, &pool).unwrap().seq, isn(&SECRET, &tuple(), now));
    assert_eq!(l.half_open(), 1);
    assert!(matches!(
        l.on_segment(now, tuple(), &seg! { seq: REMOTE, flags: SYN }.to_segment(), &[], &mut pool),
        ListenOutcome::HalfOpen(_)
    ));
    assert!(
        matches!(
            l.on_segment(now, tuple(), &seg! { seq: REMOTE, flags: SYN }.to_segment(), &[], &mut pool),
            ListenOutcome::Drop(_)
        ),
        "SYN queue full"
    );
    l.child_established();
    assert_eq!((l.half_open(), l.accept_queue_len()), (1, 1));
}

#[test]
fn listener_drops_syn_fin() {
    // Linux discards SYN|FIN in LISTEN; the conformance harness checks that
    // ustack does the same (tcp_synfin_to_listen).
    let mut l = Listener::new(config(), 2, SECRET, false);
    let mut pool = BufferPool::for_config(&config());
    let now = Instant::from_secs(5);
    assert!(matches!(
        l.on_segment(now, tuple(), &seg! { seq: REMOTE, flags: SYN | FIN }.to_segment(), &[], &mut pool),
        ListenOutcome::Drop(_)
    ));
    assert_eq!(l.half_open(), 0);
    assert!(matches!(
        l.on_segment(now, tuple(), &seg! { seq: REMOTE, flags: SYN }.to_segment(), &[], &mut pool),
        ListenOutcome::HalfOpen(_)
    ));
}

#[test]
fn listener_reopening_syn_starts_above_the_old_connection() {
    // RFC 6191 / Linux: a SYN that took over a TIME-WAIT 4-tuple gets a
    // connection whose ISS is the old SND.NXT + 65537, above anything the old
    // one sent (the conformance harness checks it: tcp_time_wait_syn_new).
    let mut l = Listener::new(config(), 2, SECRET, false);
    let mut pool = BufferPool::for_config(&config());
    let now = Instant::from_secs(5);
    let old = SeqNumber(u32::MAX - 10); // the gap wraps
    let syn = seg! { seq: REMOTE, flags: SYN }.to_segment();
    let ListenOutcome::HalfOpen(mut c) = l.on_reopening_syn(now, tuple(), &syn, &[], &mut pool, old) else {
        panic!("expected a half-open connection")
    };
    let synack = c.poll_transmit(now, MAX_PAYLOAD, &pool).unwrap();
    assert_eq!(synack.seq, SeqNumber(old.0.wrapping_add(65_537)));
    // A plain SYN still draws its ISN from the RFC 6528 function.
    let ListenOutcome::HalfOpen(mut c) = l.on_segment(now, tuple(), &syn, &[], &mut pool) else {
        panic!("expected a half-open connection")
    };
    assert_eq!(c.poll_transmit(now, MAX_PAYLOAD, &pool).unwrap().seq, isn(&SECRET, &tuple(), now));
}

#[test]
fn listener_falls_back_to_syn_cookies() {
    let mut l = Listener::new(config(), 1, SECRET, true);
    let mut pool = BufferPool::for_config(&config());
    let now = Instant::from_secs(5);
    let syn = seg! { seq: REMOTE, flags: SYN, options: Options { mss: Some(1400), ..Options::default() } };
    assert!(matches!(l.on_segment(now, tuple(), &syn.to_segment(), &[], &mut pool), ListenOutcome::HalfOpen(_)));
    let ListenOutcome::Reply(synack) = l.on_segment(now, tuple(), &syn.to_segment(), &[], &mut pool) else {
        panic!("expected a cookie")
    };
    assert_eq!((synack.flags, synack.ack), (SYN, Some(SeqNumber(REMOTE + 1))));
    let cookie = synack.seq.0;
    // A forged ACK is answered with a RST; the genuine one establishes.
    assert!(matches!(
        l.on_segment(now, tuple(), &seg! { seq: REMOTE + 1, ack: cookie + 2 }.to_segment(), &[], &mut pool),
        ListenOutcome::Reply(_)
    ));
    let ack = seg! { seq: REMOTE + 1, ack: cookie + 1, payload: b"GET /" };
    let ListenOutcome::Established(mut c) = l.on_segment(now, tuple(), &ack.to_segment(), &ack.payload, &mut pool)
    else {
        panic!("cookie rejected")
    };
    assert_eq!(c.state(), State::Established);
    assert_eq!(c.mss(), 1400);
    let mut buf = [0u8; 8];
    assert_eq!(c.recv(&mut buf, &mut pool), Ok(5));
    assert_eq!(l.accept_queue_len(), 1);
    c.release_buffers(&mut pool);
    assert_eq!(pool.in_use(), 0);
}

#[test]
fn syn_cookies_keep_window_scale_sack_and_timestamps() {
    // What a Linux client offers: MSS, SACK-permitted, timestamps, wscale 7.
    let cfg = TcpConfig { recv_buffer_size: 1 << 20, ..TcpConfig::default() };
    let mut l = Listener::new(cfg, 1, SECRET, true);
    let mut pool = BufferPool::for_config(&cfg);
    let now = Instant::from_secs(5);
    let offered = Options {
        mss: Some(1460),
        sack_permitted: true,
        timestamp: Some((1000, 0)),
        window_scale: Some(7),
        ..Options::default()
    };
    let syn = seg! { seq: REMOTE, flags: SYN, options: offered };
    assert!(matches!(l.on_segment(now, tuple(), &syn.to_segment(), &[], &mut pool), ListenOutcome::HalfOpen(_)));
    let ListenOutcome::Reply(synack) = l.on_segment(now, tuple(), &syn.to_segment(), &[], &mut pool) else {
        panic!("expected a cookie")
    };
    // The cookie SYN-ACK answers every option, as a stateful one would.
    let o = synack.options;
    assert_eq!((o.window_scale, o.sack_permitted), (Some(cfg.our_window_scale()), true));
    let (tsval, tsecr) = o.timestamp.expect("a timestamp");
    assert_eq!(tsecr, 1000);
    // The completing ACK echoes our TSval; a second later, as a slow peer.
    let later = now + Duration::from_secs(1);
    let echo = Options { timestamp: Some((1001, tsval)), ..Options::default() };
    let ack = seg! { seq: REMOTE + 1, ack: synack.seq.0 + 1, window: 1000, options: echo };
    let ListenOutcome::Established(mut c) = l.on_segment(later, tuple(), &ack.to_segment(), &[], &mut pool) else {
        panic!("cookie rejected")
    };
    assert!(c.sack_enabled());
    // The peer's window is scaled by its shift (7), ours is offered scaled.
    assert_eq!(c.send_window(), 1000 << 7);
    let mut s = Sock { conn: c, now: later, pool };
    s.write(b"hello").unwrap();
    let data = s.poll().expect("data");
    let (ts, ecr) = data.options.unwrap().timestamp.expect("timestamps are on");
    assert_eq!(ecr, 1001);
    assert!(ts.wrapping_sub(tsval) >= 1000, "our clock went on from the cookie's TSval");
    assert_eq!(u32::from(data.window.unwrap()), (1 << 20) >> cfg.our_window_scale());
    c = s.conn;
    c.release_buffers(&mut s.pool);
}

#[test]
fn syn_cookies_without_timestamps_run_without_options() {
    let cfg = TcpConfig::default();
    let mut l = Listener::new(cfg, 1, SECRET, true);
    let mut pool = BufferPool::for_config(&cfg);
    let now = Instant::from_secs(5);
    let offered = Options { mss: Some(1460), sack_permitted: true, window_scale: Some(7), ..Options::default() };
    let syn = seg! { seq: REMOTE, flags: SYN, options: offered };
    let _ = l.on_segment(now, tuple(), &syn.to_segment(), &[], &mut pool);
    let ListenOutcome::Reply(synack) = l.on_segment(now, tuple(), &syn.to_segment(), &[], &mut pool) else {
        panic!("expected a cookie")
    };
    let o = synack.options;
    assert_eq!((o.window_scale, o.sack_permitted, o.timestamp), (None, false, None));
    let ack = seg! { seq: REMOTE + 1, ack: synack.seq.0 + 1, window: 1000 };
    let ListenOutcome::Established(mut c) = l.on_segment(now, tuple(), &ack.to_segment(), &[], &mut pool) else {
        panic!("cookie rejected")
    };
    assert!(!c.sack_enabled());
    assert_eq!(c.send_window(), 1000);
    c.release_buffers(&mut pool);
}

// ---- Resource bounds ------------------------------------------------------------

#[test]
fn one_byte_out_of_order_flood_stays_bounded() {
    let mut s = socket_established();
    for i in 0..100_000u32 {
        let seq = REMOTE + 3 + (i * 2) % (WINDOW - 4);
        let _ = s.send(&seg! { seq: seq, ack: LOCAL + 1, payload: b"x" });
        while s.poll().is_some() {}
        assert!(s.conn.ooo_islands() <= 8);
    }
    assert!(s.conn.stats().drops.reassembly_full > 90_000);
    // The connection still works: fill the first hole.
    send!(s, seg! { seq: REMOTE + 1, ack: LOCAL + 1, payload: b"ab" });
    assert!(s.conn.recv_queue() >= 3);
}
