//! RACK-TLP (RFC 8985) in the small test language: what leaves when, after
//! tail losses, lost retransmissions and reordering. Every socket here has
//! SACK on (RACK-TLP needs it) and no timestamps, so RTT samples come from the
//! one timed segment.

#[macro_use]
#[path = "tcp_harness.rs"]
mod harness;
use harness::*;

const MSS: u32 = 1460;
const DATA: [u8; 8 * MSS as usize] = [7u8; 8 * MSS as usize];

/// SACK on, handshake completing at `rtt_ms`: SRTT = `rtt_ms`, RTTVAR half
/// of it (RFC 6298 §2.2).
fn sack_established(rtt_ms: u64) -> Sock {
    let cfg = TcpConfig { sack: true, ..config() };
    let syn_options = Options { mss: Some(1460), sack_permitted: true, ..Options::default() };
    let mut s = socket_syn_received_with(&cfg, seg! { seq: REMOTE, flags: SYN, options: syn_options });
    send!(s, time = rtt_ms, seg! { seq: REMOTE + 1, ack: LOCAL + 1 });
    assert!(s.conn.sack_enabled());
    assert_eq!(s.conn.srtt(), Some(Duration::from_millis(rtt_ms)));
    s
}

/// Sequence number of the first byte of our segment `i` (0-based).
fn at(i: u32) -> u32 {
    LOCAL + 1 + i * MSS
}

/// Our full-sized data segment `i`.
fn data(i: u32) -> TestSegment {
    seg! { seq: at(i), ack: REMOTE + 1, payload: &DATA[..MSS as usize] }
}

/// The peer's ACK of everything below segment `i`, with SACK blocks given as
/// half-open ranges of segment numbers.
fn ack_of(i: u32, sacked: &[(u32, u32)]) -> TestSegment {
    let mut options = Options::default();
    for (k, &(from, to)) in sacked.iter().enumerate() {
        options.sack_blocks[k] = Some((SeqNumber(at(from)), SeqNumber(at(to))));
    }
    seg! { seq: REMOTE + 1, ack: at(i), options: options }
}

/// Sends `n` full segments now and checks they all leave.
fn write_segments(s: &mut Sock, first: u32, n: u32) {
    s.write(&DATA[..(n * MSS) as usize]).unwrap();
    for i in first..first + n {
        let mut want = data(i);
        if i == first + n - 1 {
            want.flags = PSH;
        }
        recv!(s, want);
    }
    recv_nothing!(s);
}

// ---- Tail loss probe (RFC 8985 §7) ---------------------------------------------

#[test]
fn tail_loss_is_repaired_by_a_probe_not_the_rto() {
    let mut s = sack_established(100);
    write_segments(&mut s, 0, 3);
    // At 200 the first two arrive and are ACKed (SRTT 100 ms, RTTVAR 37.5
    // ms: RTO 250 ms). The third is lost: nothing more comes back.
    send!(s, time = 200, ack_of(2, &[]));
    recv_nothing!(s);
    let cwnd = s.conn.cwnd();
    // One segment in flight: PTO = 2 * SRTT + WCDelAckT = 400 ms, capped by
    // the RTO deadline (450). The probe resends the highest segment.
    recv_nothing!(s, time = 449);
    recv!(s, time = 450, seg! { seq: at(2), ack: REMOTE + 1, flags: PSH, payload: &DATA[..MSS as usize] });
    recv_nothing!(s);
    let st = s.conn.stats();
    assert_eq!((st.loss_probes, st.rto_expirations), (1, 0));
    assert_eq!(s.conn.cwnd(), cwnd, "a probe is not a timeout");
    // The probe filled the hole: the ACK covers it, with no D-SACK.
    send!(s, time = 550, ack_of(3, &[]));
    recv_nothing!(s);
    // Only an ACK beyond the probe's episode tells a repair from a spurious
    // probe (§7.4.2), so the next data settles it: cwnd and ssthresh drop.
    s.write(&DATA[..MSS as usize]).unwrap();
    recv!(s, seg! { seq: at(3), ack: REMOTE + 1, flags: PSH, payload: &DATA[..MSS as usize] });
    send!(s, time = 650, ack_of(4, &[]));
    assert_eq!(s.conn.stats().loss_probe_repairs, 1);
    assert!(s.conn.cwnd() < cwnd, "cwnd {} not reduced from {cwnd}", s.conn.cwnd());
    assert!(s.conn.ssthresh() < usize::MAX);
}

#[test]
fn a_probe_that_was_d_sacked_repaired_nothing() {
    let mut s = sack_established(100);
    write_segments(&mut s, 0, 3);
    send!(s, time = 200, ack_of(2, &[]));
    recv!(s, time = 450, seg! { seq: at(2), ack: REMOTE + 1, flags: PSH, payload: &DATA[..MSS as usize] });
    // The original arrived after all (only its ACK was slow): the peer
    // reports the probe as a duplicate (RFC 2883 D-SACK below the ACK).
    send!(s, time = 550, ack_of(3, &[(2, 3)]));
    s.write(&DATA[..MSS as usize]).unwrap();
    recv!(s, seg! { seq: at(3), ack: REMOTE + 1, flags: PSH, payload: &DATA[..MSS as usize] });
    send!(s, time = 650, ack_of(4, &[]));
    let st = s.conn.stats();
    assert_eq!((st.loss_probes, st.loss_probe_repairs, st.rto_expirations), (1, 0, 0));
    assert_eq!(s.conn.ssthresh(), usize::MAX, "no congestion response");
}

#[test]
fn probe_sends_new_data_beyond_cwnd_once_per_episode() {
    let mut s = sack_established(100);
    // The initial window is 10 segments; the application queued 12.
    s.write(&DATA[..(4 * MSS) as usize]).unwrap();
    s.write(&DATA[..(4 * MSS) as usize]).unwrap();
    s.write(&DATA[..(4 * MSS) as usize]).unwrap();
    for i in 0..10 {
        recv!(s, data(i));
    }
    recv_nothing!(s);
    // No ACK ever comes. Ten segments in flight: PTO = 2 * SRTT = 200 ms
    // (the RTO, 300 ms, would fire at 400). An unsent segment exists and the
    // receive window has room: the probe is new data, cwnd notwithstanding.
    recv_nothing!(s, time = 299);
    recv!(s, time = 300, data(10));
    recv_nothing!(s);
    assert_eq!(s.conn.stats().loss_probes, 1);
    // One probe per episode: the RTO, re-armed at the probe, comes next.
    recv_nothing!(s, time = 599);
    recv!(s, time = 600, data(0));
    assert_eq!(s.conn.stats().rto_expirations, 1);
}

#[test]
fn no_probe_without_sack() {
    // Handshake at 0: SRTT 0, RTO at its 200 ms floor.
    let mut s = socket_established();
    s.at(100);
    s.write(&DATA[..(2 * MSS) as usize]).unwrap();
    recv!(s, data(0));
    recv!(s, seg! { seq: at(1), ack: REMOTE + 1, flags: PSH, payload: &DATA[..MSS as usize] });
    // Only the RTO resends.
    recv_nothing!(s, time = 299);
    recv!(s, time = 300, data(0));
    assert_eq!(s.conn.stats().loss_probes, 0);
}

// ---- RACK (RFC 8985 §6) -----------------------------------------------------------

/// Everything the socket sends now, as (segment number, payload length).
fn drain(s: &mut Sock) -> Vec<(u32, usize)> {
    std::iter::from_fn(|| s.poll()).map(|seg| ((seg.seq - LOCAL - 1) / MSS, seg.payload.len())).collect()
}

#[test]
fn two_segment_tail_loss_is_repaired_by_probe_and_rack() {
    let mut s = sack_established(100);
    write_segments(&mut s, 0, 4);
    // Segments 0 and 1 arrive; 2 and 3 are lost. SRTT 100 ms, two segments
    // outstanding: PTO = 2 * SRTT, at 400 (the RTO would fire at 450).
    send!(s, time = 200, ack_of(2, &[]));
    recv_nothing!(s, time = 399);
    recv!(s, time = 400, seg! { seq: at(3), ack: REMOTE + 1, flags: PSH, payload: &DATA[..MSS as usize] });
    // The probe is SACKed. It was sent after segment 2, and segment 2 is
    // older than RACK.rtt (100 ms) plus the reordering window (min_RTT / 4):
    // RACK marks it lost, recovery starts and resends it at once.
    send!(s, time = 500, ack_of(2, &[(3, 4)]));
    recv!(s, data(2));
    recv_nothing!(s);
    send!(s, time = 600, ack_of(4, &[]));
    let st = s.conn.stats();
    assert_eq!((st.loss_probes, st.fast_recoveries, st.rto_expirations), (1, 1, 0));
}

#[test]
fn lost_retransmission_is_found_by_rack_without_rto() {
    let mut s = sack_established(100);
    // Twelve segments queued; the initial window lets 0..=9 go at 100.
    s.write(&DATA).unwrap();
    s.write(&DATA[..(4 * MSS) as usize]).unwrap();
    assert_eq!(drain(&mut s).len(), 10);
    // Segment 1 is lost; 0 is ACKed, 2..=4 SACKed. Three SACKed segments and
    // no reordering seen: the reordering window is 0, and segment 1 (sent
    // with them, RACK.rtt ago) is lost now. Recovery resends it, and new
    // data fills what the reduced window leaves.
    send!(s, time = 200, ack_of(1, &[(2, 5)]));
    let sent = drain(&mut s);
    assert_eq!(sent[0], (1, MSS as usize), "{sent:?}");
    assert_eq!(s.conn.stats().fast_recoveries, 1);
    let new_data: Vec<u32> = sent[1..].iter().map(|&(i, _)| i).collect();
    assert!(!new_data.is_empty() && new_data.iter().all(|&i| i >= 10), "{sent:?}");
    // 5..=9 arrive: nothing sent after the retransmission was delivered yet,
    // so RACK cannot judge it.
    send!(s, time = 210, ack_of(1, &[(2, 10)]));
    assert!(!drain(&mut s).contains(&(1, MSS as usize)));
    // The retransmission is lost too, but segment 10, sent with it, is
    // SACKed at 300: one RACK.rtt after the retransmission, so it is lost
    // again, and resent without waiting for the RTO.
    send!(s, time = 300, ack_of(1, &[(2, 11)]));
    let sent = drain(&mut s);
    assert_eq!(sent.first(), Some(&(1, MSS as usize)), "{sent:?}");
    send!(s, time = 400, ack_of(12, &[]));
    let st = s.conn.stats();
    assert_eq!((st.fast_recoveries, st.rto_expirations), (1, 0));
}

#[test]
fn a_hole_is_lost_once_the_reordering_window_passes() {
    let mut s = sack_established(100);
    write_segments(&mut s, 0, 4);
    // Segment 1 arrives first (RTT 100 ms, so min_RTT 100 ms). One SACKed
    // segment is not enough to call segment 0 lost at once: RACK waits
    // RACK.rtt + min_RTT / 4 after segment 0 was sent, until 225.
    send!(s, time = 200, ack_of(0, &[(1, 2)]));
    recv_nothing!(s, time = 224);
    recv!(s, time = 225, data(0));
    let st = s.conn.stats();
    assert_eq!((st.fast_recoveries, st.rto_expirations), (1, 0));
}

/// Eight segments sent at 100 (SRTT 100 ms); segment 1 overtakes segment
/// 0, then 3..=5 overtake segment 2.
fn reordered_arrivals(s: &mut Sock) {
    write_segments(s, 0, 8);
    send!(s, time = 200, ack_of(0, &[(1, 2)]));
    send!(s, time = 201, ack_of(2, &[]));
    recv_nothing!(s);
    send!(s, time = 202, ack_of(2, &[(3, 6)]));
}

#[test]
fn reordering_within_the_window_is_not_loss() {
    let mut s = sack_established(100);
    // Segment 1 overtaking segment 0 makes RACK note reordering (segment 0 is
    // delivered below RACK.fack and was never retransmitted). When 3..=5 then
    // arrive before 2, RFC 6675 would call 2 lost at once (three SACKed
    // segments above it); RACK, having seen reordering, waits a quarter of
    // min_RTT past RACK.rtt, and segment 2 arrives in that time.
    reordered_arrivals(&mut s);
    recv_nothing!(s);
    recv_nothing!(s, time = 220);
    send!(s, time = 220, ack_of(8, &[]));
    recv_nothing!(s, time = 1000);
    let st = s.conn.stats();
    assert_eq!((st.retransmits, st.fast_recoveries, st.rto_expirations), (0, 0, 0));
}

#[test]
fn without_rack_three_sacked_segments_above_a_late_one_are_a_spurious_loss() {
    // The same arrivals with RACK-TLP off: RFC 6675 retransmits segment 2.
    let cfg = TcpConfig { sack: true, rack_tlp: false, ..config() };
    let syn_options = Options { mss: Some(1460), sack_permitted: true, ..Options::default() };
    let mut s = socket_syn_received_with(&cfg, seg! { seq: REMOTE, flags: SYN, options: syn_options });
    send!(s, time = 100, seg! { seq: REMOTE + 1, ack: LOCAL + 1 });
    reordered_arrivals(&mut s);
    recv!(s, data(2));
    assert_eq!(s.conn.stats().fast_recoveries, 1);
}
