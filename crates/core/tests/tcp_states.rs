//! Per-state tests of the RFC 9293 state machine, RFC 5961 hardening and
//! the FreeBSD tcp-testsuite matrix: every synchronized state × {RST, SYN,
//! ACK, data, FIN} × {left of window, left edge, inside, right edge, right of
//! window}.

#[macro_use]
#[path = "tcp_harness.rs"]
mod harness;
use harness::*;

// ---- SYN-SENT ----------------------------------------------------------

#[test]
fn syn_sent_to_established() {
    let mut s = socket_syn_sent();
    let out = send!(s, time = 20, seg! { seq: REMOTE, ack: LOCAL + 1, flags: SYN, window: 5000 });
    assert!(out.established);
    assert_eq!(s.state(), State::Established);
    recv!(s, seg! { seq: LOCAL + 1, ack: REMOTE + 1 });
    assert_eq!(s.conn.srtt(), Some(Duration::from_millis(20)));
    assert_eq!(s.conn.send_window(), 5000);
}

#[test]
fn syn_sent_data_in_syn_ack_is_delivered() {
    let mut s = socket_syn_sent();
    send!(s, seg! { seq: REMOTE, ack: LOCAL + 1, flags: SYN, payload: b"hi" });
    recv!(s, seg! { seq: LOCAL + 1, ack: REMOTE + 3 });
    let mut buf = [0u8; 8];
    assert_eq!(s.read(&mut buf), Ok(2));
}

#[test]
fn syn_sent_bad_ack_is_answered_with_rst() {
    let mut s = socket_syn_sent();
    let out = send!(s, seg! { seq: REMOTE, ack: LOCAL + 5, flags: SYN });
    assert_eq!(out.reply.map(|r| (r.seq, r.flags)), Some((SeqNumber(LOCAL + 5), RST)));
    assert_eq!(s.state(), State::SynSent);
    let out = send!(s, seg! { seq: REMOTE, ack: LOCAL, flags: SYN });
    assert!(out.reply.is_some(), "SEG.ACK =< ISS is unacceptable");
}

#[test]
fn syn_sent_rst_with_acceptable_ack_refuses() {
    let mut s = socket_syn_sent();
    let out = send!(s, seg! { seq: 0, ack: LOCAL + 1, flags: RST });
    assert!(out.reset && out.closed);
    assert_eq!(s.conn.error(), Some(ConnError::Refused));
    recv_nothing!(s);
}

#[test]
fn syn_sent_rst_without_ack_is_ignored() {
    let mut s = socket_syn_sent();
    let out = send!(s, seg! { seq: REMOTE, flags: RST });
    assert_eq!(out.dropped, Some(DropReason::Rst));
    assert_eq!(s.state(), State::SynSent);
}

#[test]
fn syn_sent_retransmits_syn_then_gives_up() {
    let mut s = socket_syn_sent();
    recv_nothing!(s, time = 999);
    recv!(s, time = 1000, seg! { seq: LOCAL, flags: SYN });
    recv_nothing!(s, time = 2999);
    recv!(s, time = 3000, seg! { seq: LOCAL, flags: SYN });
    let mut t = 3000;
    for i in 2..=5u64 {
        t += 1000 << i;
        recv!(s, time = t, seg! { seq: LOCAL, flags: SYN });
    }
    t += 1000 << 6;
    recv_nothing!(s, time = t);
    assert_eq!(s.conn.error(), Some(ConnError::TimedOut));
    assert!(s.conn.is_closed());
}

#[test]
fn simultaneous_open() {
    let mut s = socket_syn_sent();
    send!(s, seg! { seq: REMOTE, flags: SYN });
    assert_eq!(s.state(), State::SynReceived);
    recv!(s, seg! { seq: LOCAL, ack: REMOTE + 1, flags: SYN });
    // The peer's SYN,ACK (Figure 8, line 5) completes the handshake.
    let out = send!(s, seg! { seq: REMOTE, ack: LOCAL + 1, flags: SYN });
    assert!(out.established);
    assert_eq!(s.state(), State::Established);
    recv_nothing!(s);
}

// ---- SYN-RECEIVED ------------------------------------------------------

#[test]
fn syn_received_bad_ack_is_reset() {
    let mut s = socket_syn_received();
    let out = send!(s, seg! { seq: REMOTE + 1, ack: LOCAL + 100 });
    assert_eq!(out.reply.map(|r| (r.seq, r.flags)), Some((SeqNumber(LOCAL + 100), RST)));
    assert_eq!(s.state(), State::SynReceived);
}

#[test]
fn syn_received_retransmitted_syn_resends_syn_ack() {
    let mut s = socket_syn_received();
    send!(s, seg! { seq: REMOTE, flags: SYN });
    recv!(s, seg! { seq: LOCAL, ack: REMOTE + 1, flags: SYN });
    recv_nothing!(s);
}

#[test]
fn syn_received_rst_closes_quietly() {
    let mut s = socket_syn_received();
    let out = send!(s, seg! { seq: REMOTE + 1, flags: RST });
    assert!(out.closed);
    assert_eq!(s.conn.error(), None, "a passive open just goes back to LISTEN");
}

#[test]
fn syn_received_retransmits_syn_ack() {
    let mut s = socket_syn_received();
    recv!(s, time = 1000, seg! { seq: LOCAL, ack: REMOTE + 1, flags: SYN });
    recv!(s, time = 3000, seg! { seq: LOCAL, ack: REMOTE + 1, flags: SYN });
}

#[test]
fn syn_received_data_with_handshake_ack() {
    let mut s = socket_syn_received();
    let out = send!(s, seg! { seq: REMOTE + 1, ack: LOCAL + 1, payload: b"hello" });
    assert!(out.established);
    let mut buf = [0u8; 16];
    assert_eq!(s.read(&mut buf), Ok(5));
    assert_eq!(&buf[..5], b"hello");
}

// ---- Closing sequences -------------------------------------------------

#[test]
fn active_close_through_time_wait() {
    let mut s = socket_time_wait();
    recv_nothing!(s, time = 59_999);
    assert_eq!(s.state(), State::TimeWait);
    s.at(60_000);
    assert!(s.conn.is_closed());
    assert_eq!(s.conn.error(), None);
}

#[test]
fn time_wait_acks_retransmitted_fin_and_restarts() {
    let mut s = socket_time_wait();
    send!(s, time = 30_000, seg! { seq: REMOTE + 1, ack: LOCAL + 2, flags: FIN });
    recv!(s, seg! { seq: LOCAL + 2, ack: REMOTE + 2 });
    s.at(60_000);
    assert_eq!(s.state(), State::TimeWait, "2MSL restarted at 30 s");
    s.at(90_000);
    assert!(s.conn.is_closed());
}

#[test]
fn simultaneous_close() {
    let mut s = socket_closing();
    let out = send!(s, seg! { seq: REMOTE + 2, ack: LOCAL + 2 });
    assert!(!out.closed);
    assert_eq!(s.state(), State::TimeWait);
    recv_nothing!(s);
}

#[test]
fn fin_and_ack_together_go_to_time_wait() {
    let mut s = socket_fin_wait_1();
    send!(s, seg! { seq: REMOTE + 1, ack: LOCAL + 2, flags: FIN });
    assert_eq!(s.state(), State::TimeWait);
    recv!(s, seg! { seq: LOCAL + 2, ack: REMOTE + 2 });
}

#[test]
fn passive_close_through_last_ack() {
    let mut s = socket_last_ack();
    let out = send!(s, seg! { seq: REMOTE + 2, ack: LOCAL + 2 });
    assert!(out.closed);
    assert!(s.conn.is_closed());
    assert_eq!(s.conn.error(), None);
}

#[test]
fn half_close_keeps_sending() {
    let mut s = socket_close_wait();
    let mut buf = [0u8; 4];
    assert_eq!(s.read(&mut buf), Ok(0), "EOF");
    assert_eq!(s.write(b"late"), Ok(4));
    recv!(s, seg! { seq: LOCAL + 1, ack: REMOTE + 2, flags: PSH, payload: b"late" });
    s.conn.shutdown_write().unwrap();
    recv!(s, seg! { seq: LOCAL + 5, ack: REMOTE + 2, flags: FIN });
    send!(s, seg! { seq: REMOTE + 2, ack: LOCAL + 6 });
    assert!(s.conn.is_closed());
}

#[test]
fn half_closed_peer_still_receives_in_fin_wait_2() {
    let mut s = socket_fin_wait_2();
    send!(s, seg! { seq: REMOTE + 1, ack: LOCAL + 2, payload: b"more" });
    let mut buf = [0u8; 8];
    assert_eq!(s.read(&mut buf), Ok(4));
}

#[test]
fn fin_queued_behind_data() {
    let mut s = socket_established();
    s.write(b"abc").unwrap();
    s.conn.shutdown_write().unwrap();
    recv!(s, seg! { seq: LOCAL + 1, ack: REMOTE + 1, flags: PSH | FIN, payload: b"abc" });
    assert_eq!(s.write(b"x"), Err(SendError::Closing));
}

#[test]
fn close_with_unread_data_resets() {
    let mut s = socket_established();
    send!(s, seg! { seq: REMOTE + 1, ack: LOCAL + 1, payload: b"unread" });
    s.conn.close();
    recv!(s, seg! { seq: LOCAL + 1, flags: RST });
    assert!(s.conn.is_closed());
}

#[test]
fn data_after_close_resets() {
    let mut s = socket_established();
    s.conn.close();
    recv!(s, seg! { seq: LOCAL + 1, ack: REMOTE + 1, flags: FIN });
    send!(s, seg! { seq: REMOTE + 1, ack: LOCAL + 2 });
    assert_eq!(s.state(), State::FinWait2);
    let out = send!(s, seg! { seq: REMOTE + 1, ack: LOCAL + 2, payload: b"x" });
    assert_eq!(out.reply.map(|r| (r.seq, r.flags)), Some((SeqNumber(LOCAL + 2), RST)));
    assert!(s.conn.is_closed());
}

#[test]
fn orphaned_fin_wait_2_times_out() {
    let mut s = socket_established();
    s.conn.close();
    recv!(s, seg! { seq: LOCAL + 1, ack: REMOTE + 1, flags: FIN });
    send!(s, seg! { seq: REMOTE + 1, ack: LOCAL + 2 });
    s.at(60_000);
    assert!(s.conn.is_closed());
}

#[test]
fn close_in_fin_wait_2_arms_the_orphan_timeout() {
    let mut s = socket_fin_wait_2();
    s.conn.close();
    recv_nothing!(s, time = 100);
    s.at(60_099);
    assert_eq!(s.state(), State::FinWait2);
    s.at(60_100);
    assert!(s.conn.is_closed());
}

#[test]
fn abort_sends_rst() {
    let mut s = socket_established();
    s.conn.abort();
    recv!(s, seg! { seq: LOCAL + 1, flags: RST });
    recv_nothing!(s);
    assert_eq!(s.conn.error(), Some(ConnError::Aborted));
}

// ---- The matrix ----------------------------------------------------------

/// What the socket does in reply.
#[derive(Clone, Copy, Debug, PartialEq)]
enum Reply {
    Nothing,
    /// An ACK `<SEQ=SND.NXT><ACK=RCV.NXT>`.
    Ack,
    /// The connection is reset (closed).
    Reset,
}
use Reply::*;

#[derive(Clone, Copy, Debug)]
enum Pos {
    LeftOf,
    LeftEdge,
    Inside,
    RightEdge,
    RightOf,
}
use Pos::*;
const POSITIONS: [Pos; 5] = [LeftOf, LeftEdge, Inside, RightEdge, RightOf];

struct Fixture {
    make: fn() -> Sock,
    /// RCV.NXT, SND.UNA and SND.NXT in this state.
    rcv_nxt: u32,
    snd_una: u32,
    snd_nxt: u32,
    /// The receive window: the peer's FIN took one sequence number of it.
    wnd: u32,
    accepts_data: bool,
}

fn fixtures() -> Vec<(&'static str, Fixture)> {
    let f = |make, rcv_nxt, snd_una, snd_nxt, accepts_data| {
        let wnd = if accepts_data { WINDOW } else { WINDOW - 1 };
        Fixture { make, rcv_nxt, snd_una, snd_nxt, wnd, accepts_data }
    };
    vec![
        ("ESTABLISHED", f(socket_established, REMOTE + 1, LOCAL + 1, LOCAL + 1, true)),
        ("FIN-WAIT-1", f(socket_fin_wait_1, REMOTE + 1, LOCAL + 1, LOCAL + 2, true)),
        ("FIN-WAIT-2", f(socket_fin_wait_2, REMOTE + 1, LOCAL + 2, LOCAL + 2, true)),
        ("CLOSE-WAIT", f(socket_close_wait, REMOTE + 2, LOCAL + 1, LOCAL + 1, false)),
        ("CLOSING", f(socket_closing, REMOTE + 2, LOCAL + 1, LOCAL + 2, false)),
        ("LAST-ACK", f(socket_last_ack, REMOTE + 2, LOCAL + 1, LOCAL + 2, false)),
        ("TIME-WAIT", f(socket_time_wait, REMOTE + 2, LOCAL + 2, LOCAL + 2, false)),
    ]
}

fn seq_at(pos: Pos, fx: &Fixture, len: u32) -> u32 {
    match pos {
        LeftOf => fx.rcv_nxt - len.max(1) - 10,
        LeftEdge => fx.rcv_nxt,
        Inside => fx.rcv_nxt + 100,
        RightEdge => fx.rcv_nxt + fx.wnd - 1,
        RightOf => fx.rcv_nxt + fx.wnd,
    }
}

/// Delivers `seg` and checks the reply, leaving the state unchanged unless
/// the expectation is `Reset`.
fn check(name: &str, event: &str, pos: Pos, fx: &Fixture, seg: TestSegment, want: Reply) {
    let mut s = (fx.make)();
    let before = s.state();
    let out = s.send(&seg);
    let ctx = format!("{event} {pos:?} in {name}");
    match want {
        Reset => {
            assert!(out.reset && s.conn.is_closed(), "{ctx}: expected a reset, got {out:?}");
            recv_nothing!(s);
            return;
        }
        Ack => {
            let got = s.poll().unwrap_or_else(|| panic!("{ctx}: expected an ACK"));
            assert_eq!((got.seq, got.ack, got.flags, got.payload.len()), (fx.snd_nxt, Some(fx.rcv_nxt), ACK, 0), "{ctx}");
        }
        Nothing => {}
    }
    assert!(s.poll().is_none(), "{ctx}: unexpected segment");
    assert_eq!(s.state(), before, "{ctx}: state changed");
    assert!(!out.reset, "{ctx}");
}

#[test]
fn matrix_rst() {
    // RFC 5961 §3.2: exactly RCV.NXT resets, elsewhere in the window draws a
    // challenge ACK, outside the window is dropped silently.
    let want = [Nothing, Reset, Ack, Ack, Nothing];
    for (name, fx) in fixtures() {
        for (pos, want) in POSITIONS.into_iter().zip(want) {
            let seq = seq_at(pos, &fx, 0);
            check(name, "RST", pos, &fx, seg! { seq: seq, ack: fx.snd_una, flags: RST }, want);
        }
    }
}

#[test]
fn matrix_syn() {
    // RFC 5961 §4.2: a SYN in a synchronized state, wherever it lies, is
    // answered with a (challenge) ACK and changes nothing.
    for (name, fx) in fixtures() {
        for pos in POSITIONS {
            let seq = seq_at(pos, &fx, 1);
            check(name, "SYN", pos, &fx, seg! { seq: seq, flags: SYN }, Ack);
        }
    }
}

#[test]
fn matrix_ack() {
    // A bare ACK is acceptable anywhere in the window and also exactly at
    // RCV.NXT+RCV.WND (where a peer that filled the window sends its ACKs; see
    // `Connection::on_segment_synchronized`); left of it or one octet farther
    // right it draws an ACK.
    let want = [Ack, Nothing, Nothing, Nothing, Nothing];
    for (name, fx) in fixtures() {
        for (pos, want) in POSITIONS.into_iter().zip(want) {
            let seq = seq_at(pos, &fx, 0);
            check(name, "ACK", pos, &fx, seg! { seq: seq, ack: fx.snd_una }, want);
        }
        let beyond = seq_at(RightOf, &fx, 0) + 1;
        check(name, "ACK one past", RightOf, &fx, seg! { seq: beyond, ack: fx.snd_una }, Ack);
    }
}

#[test]
fn matrix_data() {
    for (name, fx) in fixtures() {
        // At the left edge data is accepted (ACK delayed) where data is still
        // delivered; inside the window it is out of order (immediate duplicate
        // ACK); at the right edge it is trimmed to the window (ACK). After the
        // peer's FIN, text is ignored.
        let want = if fx.accepts_data {
            [Ack, Nothing, Ack, Ack, Ack]
        } else {
            [Ack, Nothing, Nothing, Nothing, Ack]
        };
        for (pos, want) in POSITIONS.into_iter().zip(want) {
            let seq = seq_at(pos, &fx, 5);
            check(name, "data", pos, &fx, seg! { seq: seq, ack: fx.snd_una, payload: b"hello" }, want);
        }
    }
}

#[test]
fn matrix_data_at_left_edge_is_delivered_and_acked_later() {
    for (name, fx) in fixtures().into_iter().filter(|f| f.1.accepts_data) {
        let mut s = (fx.make)();
        send!(s, seg! { seq: fx.rcv_nxt, ack: fx.snd_una, payload: b"hello" });
        recv_nothing!(s);
        recv!(s, time = 40, seg! { seq: fx.snd_nxt, ack: fx.rcv_nxt + 5 });
        let mut buf = [0u8; 8];
        assert_eq!(s.read(&mut buf), Ok(5), "{name}");
    }
}

#[test]
fn matrix_fin() {
    for (name, fx) in fixtures() {
        // TIME-WAIT: "The only thing that can arrive in this state is a
        // retransmission of the remote FIN. Acknowledge it, and restart the 2
        // MSL timeout" — any acceptable FIN is acknowledged.
        let want_edge = if fx.accepts_data || name == "TIME-WAIT" { Ack } else { Nothing };
        // Only a FIN at the left edge is processed (state changes, tested
        // above); inside the window it waits for the hole (ACK now); at the
        // right edge it is out of order too; outside, an ACK.
        let want = [Ack, want_edge, want_edge, want_edge, Ack];
        for (pos, want) in POSITIONS.into_iter().zip(want) {
            if matches!(pos, LeftEdge) {
                continue;
            }
            let seq = seq_at(pos, &fx, 1);
            check(name, "FIN", pos, &fx, seg! { seq: seq, ack: fx.snd_una, flags: FIN }, want);
        }
    }
}

// ---- RFC 5961 details ------------------------------------------------------

#[test]
fn challenge_acks_are_rate_limited_per_connection() {
    let mut s = socket_established();
    for _ in 0..10 {
        send!(s, seg! { seq: REMOTE + 50, flags: RST });
        recv!(s, seg! { seq: LOCAL + 1, ack: REMOTE + 1 });
    }
    send!(s, seg! { seq: REMOTE + 50, flags: RST });
    recv_nothing!(s);
    assert_eq!(s.conn.stats().challenge_acks_suppressed, 1);
    send!(s, time = 1000, seg! { seq: REMOTE + 50, flags: RST });
    recv!(s, seg! { seq: LOCAL + 1, ack: REMOTE + 1 });
    assert_eq!(s.state(), State::Established);
}

#[test]
fn ack_for_unsent_data_is_dropped_and_acked() {
    let mut s = socket_established();
    let out = send!(s, seg! { seq: REMOTE + 1, ack: LOCAL + 100, payload: b"evil" });
    assert_eq!(out.dropped, Some(DropReason::BadAck));
    recv!(s, seg! { seq: LOCAL + 1, ack: REMOTE + 1 });
    assert_eq!(s.conn.recv_queue(), 0, "data of the bad segment is not accepted");
}

#[test]
fn too_old_ack_is_dropped_and_acked() {
    let mut s = socket_established();
    let out = send!(s, seg! { seq: REMOTE + 1, ack: LOCAL.wrapping_sub(100_000), payload: b"evil" });
    assert_eq!(out.dropped, Some(DropReason::BadAck));
    recv!(s, seg! { seq: LOCAL + 1, ack: REMOTE + 1 });
}

#[test]
fn segment_without_ack_is_dropped() {
    let mut s = socket_established();
    let out = send!(s, seg! { seq: REMOTE + 1, payload: b"noack" });
    assert_eq!(out.dropped, Some(DropReason::NoAck));
    recv_nothing!(s);
}

#[test]
fn reset_for_closed_port() {
    let syn = seg! { seq: 7, flags: SYN, payload: b"ab" }.to_segment();
    let rst = reset_for(&syn).unwrap();
    assert_eq!((rst.seq, rst.ack, rst.flags), (SeqNumber(0), Some(SeqNumber(10)), RST));
}

// ---- A RST at the peer's FIN (Linux's tcp_reset_check) -------------------

/// Data reaching a Linux socket that was closed (its FIN sent, our ACK of
/// that FIN not yet in) draws a RST whose sequence number is the ACK field
/// of that data: the FIN's own, RCV.NXT - 1 here. `wrk` closing its
/// connections at the end of a run produced exactly this (and our LAST-ACK
/// counted it out of window, then resent its FIN into more RSTs). Linux
/// accepts it in CLOSE-WAIT, LAST-ACK and CLOSING; so do we.
#[test]
fn rst_at_the_peers_fin_closes_last_ack_and_close_wait() {
    let mut s = socket_last_ack();
    let out = send!(s, seg! { seq: REMOTE + 1, flags: RST });
    assert!(out.reset && out.closed, "{:?}", *out);
    assert_eq!(out.dropped, None);
    assert_eq!(s.conn.error(), None);

    let mut s = socket_close_wait();
    let out = send!(s, seg! { seq: REMOTE + 1, flags: RST });
    assert!(out.reset && out.closed);
    assert_eq!(s.conn.error(), Some(ConnError::Reset));
}

/// Only there: one further left is out of window, and before the peer's FIN
/// (ESTABLISHED) RCV.NXT - 1 is just out of window as before.
#[test]
fn rst_left_of_the_peers_fin_is_still_refused() {
    let mut s = socket_last_ack();
    let out = send!(s, seg! { seq: REMOTE, flags: RST });
    assert_eq!(out.dropped, Some(DropReason::OutOfWindow));
    assert_eq!(s.state(), State::LastAck);

    let mut s = socket_established();
    let out = send!(s, seg! { seq: REMOTE, flags: RST });
    assert_eq!(out.dropped, Some(DropReason::OutOfWindow));
    assert_eq!(s.state(), State::Established);
}

/// A retransmission of bytes already received (the peer's timer beat our
/// ACK, or the network duplicated a frame) is old news from an honest peer:
/// answered with an ACK and counted as a duplicate, apart from segments
/// beyond the window, which an honest peer never sends.
#[test]
fn data_wholly_left_of_the_window_is_a_duplicate_beyond_it_out_of_window() {
    let mut s = socket_established();
    send!(s, seg! { seq: REMOTE + 1, ack: LOCAL + 1, payload: b"hello" });
    let _ = s.poll();
    let out = send!(s, seg! { seq: REMOTE + 1, ack: LOCAL + 1, payload: b"hello" });
    assert_eq!(out.dropped, Some(DropReason::Duplicate));
    recv!(s, seg! { seq: LOCAL + 1, ack: REMOTE + 6 });
    let out = send!(s, seg! { seq: REMOTE + 6 + WINDOW + 10, ack: LOCAL + 1, payload: b"far" });
    assert_eq!(out.dropped, Some(DropReason::OutOfWindow));
    // A RST left of the window stays out of window (RFC 5961 §3.2).
    let out = send!(s, seg! { seq: REMOTE + 1, flags: RST });
    assert_eq!(out.dropped, Some(DropReason::OutOfWindow));
}
