//! The fuzzers' sequence models (`fuzz/models/`), run by proptest in
//! `cargo test`: random action sequences against one TCP connection with a
//! peer model and against two stacks on an impaired in-memory link, with
//! every invariant checked after every step (see the models' docs). Inputs
//! the fuzzers once crashed on are replayed here as regression cases.

#[allow(dead_code)]
#[path = "../../../fuzz/models/conn_pair.rs"]
mod conn_pair;
#[allow(dead_code)]
#[path = "../../../fuzz/models/stack_pair.rs"]
mod stack_pair;

use proptest::prelude::*;

fn tcp(data: &[u8]) {
    let _ = conn_pair::Model::run(&mut arbitrary::Unstructured::new(data));
}

fn stacks(data: &[u8]) {
    let _ = stack_pair::Model::run(&mut arbitrary::Unstructured::new(data));
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, failure_persistence: None, ..ProptestConfig::default() })]

    #[test]
    fn tcp_connection_sequences_keep_their_invariants(data in proptest::collection::vec(any::<u8>(), 0..4096)) {
        tcp(&data);
    }

    #[test]
    fn two_stack_sequences_keep_their_invariants(data in proptest::collection::vec(any::<u8>(), 0..4096)) {
        stacks(&data);
    }
}

/// Regression inputs from `scripts/fuzz.sh` runs, each named for what it found.
#[test]
fn fuzzer_findings_stay_fixed() {
    for (name, data) in conn_pair_findings() {
        eprintln!("tcp_sequence: {name}");
        tcp(data);
    }
    for (name, data) in stack_pair_findings() {
        eprintln!("stack_sequence: {name}");
        stacks(data);
    }
}

fn conn_pair_findings() -> Vec<(&'static str, &'static [u8])> {
    vec![
        // Both ends' 16 KiB pools filled with queued sends: both advertised
        // a zero window forever (fixed: sends leave an eighth of the pool
        // for receiving, BufferPool::send_reserve).
        // An out-of-order island held the pool's last chunk while the bytes
        // at RCV.NXT found none: both directions stalled for good (fixed:
        // the receiver reneges on its islands, RFC 2018 §8).
        // The receiver reneged on an island (pool dry), the sender's
        // scoreboard still had it SACKed, and with no time passing (RACK.rtt
        // 0) every duplicate ACK marked the resends lost again and resent
        // them, forever (fixed: RACK does not judge a resend lost in the
        // instant it left).
        ("resends lost on every duplicate ACK", &[140, 140, 140, 26, 140, 43, 189, 33, 8, 0, 0, 0, 255, 223, 97, 148, 104, 146, 146, 146, 146, 146, 207, 7, 146, 104, 104, 255, 255, 97, 148, 73, 73, 73, 73, 73, 255, 73, 255, 104, 104, 83, 104, 48, 104, 140]),
        ("islands held the last chunk", &[8, 38, 104, 27, 141, 141, 141, 141, 141, 141, 141, 141, 141, 233, 11, 255, 255, 3, 187, 0, 0, 0, 48, 0, 20, 250, 255, 250, 255, 255, 72, 72, 96, 96, 96, 96, 96, 255, 72, 72, 96, 96, 96, 96, 96, 16, 16, 16, 255, 146, 146, 255, 127, 120, 255, 146, 146, 250, 146, 255, 127]),
        ("pools full of sends deadlocked", &[122, 157, 10, 255, 61, 10, 0, 127, 0, 138, 0, 78, 0, 0, 4, 0, 16, 63, 0, 0, 0, 0, 0, 251, 1, 0, 0, 1, 251, 251, 251, 255, 255, 55, 10, 255, 33, 156]),
        // B's data went unacknowledged through 15 timeouts; in the drain A's
        // acknowledgement rode on a go-back-N retransmission B already held,
        // which B dropped whole (as Linux does), and B's next timeout was past
        // its limit. Not a stack bug: the drain now allows an end at its
        // retransmission limit to time out (Connection::timeouts_in_row).
        // Both ends' windows shrank under pool pressure below data the other
        // end already held; each sent its bare ACKs at the shrunk right edge,
        // below the other's RCV.NXT, so each dropped the other's ACK and
        // answered it with another, forever (fixed: the right edge only for
        // a zero window, then only after a probe: the next input).
        ("bare ACKs below RCV.NXT answered each other forever", &[89, 206, 28, 170, 89, 255, 89, 126, 191, 255, 255, 58, 255, 0, 227, 91, 89, 255, 89, 221, 221, 221, 221, 126, 0, 0, 241, 0, 0, 0, 0, 0, 0, 0, 0, 255, 223, 39, 255, 255, 255, 255, 255, 255, 255, 255, 255, 255, 255, 255, 0, 216, 225, 0, 157]),
        // The same with both windows zero: ACKs at SND.UNA, below the peers'
        // RCV.NXT, dropped and answered forever (fixed: SND.NXT only right
        // after a zero-window probe).
        ("zero windows, bare ACKs at SND.UNA answered each other forever", &[44, 65, 0, 58, 213, 213, 120, 213, 213, 213, 213, 213, 213, 0, 213, 213, 213, 213, 213, 213, 213, 44, 255, 0, 0, 255, 255, 255, 46, 213, 213, 213, 213, 255, 255, 15, 0, 252, 69, 247, 255, 0, 213, 213, 0, 0, 0, 0, 255, 255, 15, 0, 252, 69, 253, 0, 255, 42, 255, 235, 235, 235, 65, 235, 235, 235, 235, 235, 235, 235, 235, 235, 235, 235, 235, 235, 235, 235, 70, 235, 235, 235, 235, 235, 235, 0, 0, 0, 0, 0, 7, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 235, 235, 235, 235, 235, 235, 235, 235, 235, 235, 235, 235, 235, 235, 235, 235, 235, 235, 235, 239, 239, 239, 239, 239, 239, 239, 239, 239, 239, 239, 239, 239, 239, 239, 239, 235, 239, 239, 239, 239, 239, 239, 239, 239, 96, 239, 239, 239, 239, 239, 239, 239, 239, 239, 239, 239, 239, 239, 239, 239, 6, 235, 235, 235, 235, 255, 255, 15, 0, 252, 69, 253, 0, 255, 42, 255, 255, 255, 255, 255, 255, 1, 255, 255, 0, 255, 15, 0, 252, 69, 1, 255, 0, 44, 0, 213, 0, 0, 0, 0, 0, 0, 47, 231, 213, 213, 213, 213, 213, 213, 44, 213, 213, 0, 213, 44, 0]),
        // SACK recovery (no RACK) chose a FIN-only retransmission; HighRxt was
        // moved to the FIN's sequence number, not past it, so the same FIN
        // was chosen again at once: poll_transmit never ran dry (fixed: the
        // FIN counts in HighRxt).
        ("a FIN-only SACK retransmission chosen forever", &[5, 2, 0, 93, 91, 1, 0, 252, 255, 255, 255, 0, 0, 0, 12, 89, 255, 89, 0, 167, 0, 0, 0, 113, 227, 91, 89, 255, 0, 113, 227, 7, 0, 0, 0, 70, 70, 70, 70, 70, 70, 70, 70, 70, 70, 70, 70, 70, 70, 70, 70, 70, 70, 70, 70, 70, 70, 89, 39, 255, 255, 5, 2, 0, 93, 91, 1, 0, 252, 255, 255, 255, 0, 0, 0, 70, 70, 70, 70, 70, 70, 70, 70, 70, 70, 190, 70, 70, 70, 70, 70, 70, 70, 70, 70, 70, 70, 70, 70, 70, 255, 255, 216, 225, 0, 0, 0, 0, 12, 89, 255, 89, 0, 89, 39, 255, 255, 0, 255, 167, 0, 0, 18, 113, 227, 91, 89, 255, 0, 113, 227, 91, 89, 255, 177, 89, 126, 191, 0, 0, 0, 227, 0, 80, 0, 0, 7, 7, 7, 7, 39, 7, 7, 7, 7, 56, 0, 0, 121, 7, 0, 0, 0, 0, 252, 255, 255, 70, 70, 70, 70, 70, 70, 70, 70, 70, 102, 190, 70, 70, 70, 70, 70, 0, 113, 227, 7, 0, 0, 0, 70, 70, 70, 70, 70, 70, 70, 70, 70, 70, 61, 139, 203, 132, 200, 197, 59, 244, 244, 3, 0, 194, 194, 194, 194, 194, 194, 194, 0, 0, 8, 1, 0, 12, 0, 0, 0, 21, 0, 0, 0, 39, 1, 45, 0, 200, 0, 0, 0, 255, 255, 246, 255, 0, 0, 43, 0, 0, 17, 17, 17, 17, 17, 19, 17, 1, 0, 36, 0, 0, 12, 89, 255, 89, 70, 70, 70, 70, 47, 70, 70, 70, 70, 70, 70, 70, 255, 255, 0, 0, 0, 0, 152, 225, 0, 96, 0, 0, 0, 0, 0, 0, 255, 0, 0, 0, 12, 89, 255, 0, 0, 3, 0, 255, 0, 0, 0, 96, 3, 255]),
        // Both ends had a zero-window probe out and the other had taken it;
        // each sent its ACKs at SND.NXT, below the other's RCV.NXT, dropped
        // and answered forever (fixed: after a probe, bare ACKs alternate
        // between SND.NXT and SND.MAX).
        ("both ends probed, ACKs at SND.NXT answered each other forever", &[197, 255, 0, 48, 255, 197, 1, 13, 63, 0, 0, 197, 104, 197, 40, 197, 244, 154, 154, 154, 154, 244, 61, 244, 244, 255, 255, 73, 73, 73, 255, 233, 0, 197, 197, 0, 16, 2, 255, 14, 14, 14, 73, 73, 73, 255, 201, 201, 233, 254, 255, 255, 255, 255, 255, 255, 255, 255, 255, 255, 255, 255, 255, 255, 255, 255, 255, 255, 255, 255, 197, 197, 254, 5, 1, 5, 73, 255, 201, 201, 233, 0, 14, 14, 14, 124, 0, 124, 4, 0, 0, 0, 0, 0, 0, 0, 14, 14, 124, 0, 85, 85, 85, 85, 85, 85, 85, 85, 85, 85, 85, 85, 85, 85, 85, 249, 249, 249, 249, 249, 149, 149, 149, 149, 149, 149, 149, 249, 249, 249, 249, 249, 249, 85, 85, 85, 85, 85, 85, 85, 85, 85, 85, 85, 85, 85, 85, 85, 39, 126, 126, 39, 126, 126, 126, 126, 126, 126, 126, 126, 126, 126, 126, 126, 126, 126, 126, 126, 126, 126, 126, 126, 126, 126, 39, 39, 244, 46, 244, 244, 244, 244, 244, 124, 0, 85, 85, 85, 85, 85, 85, 85, 85, 85, 85, 85, 85, 85, 85, 85, 85, 85, 85, 85, 85, 85, 85, 124, 124, 124, 124, 124, 124, 241]),
        ("ack on a dropped retransmission, retries at their limit", &[0, 255, 255, 12, 10, 255, 98, 21, 0, 0, 0, 0, 0, 0, 0, 0, 174, 174, 54, 54, 136, 136, 136, 54, 54, 54, 3, 0, 0, 0, 0, 0, 0, 0, 15, 15, 182, 112, 54, 54, 43, 47, 80, 54, 10, 248, 10, 163, 163, 163, 176, 122, 122, 122, 163, 163, 163, 163, 163, 163, 163, 163, 163, 163, 163, 163, 163, 163, 163, 163, 163, 55, 163, 163, 163, 163, 163, 163, 163, 163, 163, 255, 122, 123, 176]),
        // A's data exactly filled B's window and its FIN went one past it, to
        // a B still in SYN-RECEIVED: B refused it, and every ACK A sent after
        // it was out of B's window too; B answered each with its SYN-ACK,
        // which A answered, forever (fixed: a FIN waits for room in the
        // window; replies to out-of-window ACKs and SYNs are rate-limited).
        ("a FIN past the window, then ACKs and SYN-ACKs forever", &[255, 255, 0, 0, 255, 255, 255, 3, 0, 0, 0, 0, 255, 255, 255, 3, 3, 3, 3, 0, 0, 0, 0, 0, 0, 0, 255, 0, 255, 255, 255, 0, 124, 255, 0, 124, 124, 124, 4, 4, 4, 4, 4, 4, 4, 4, 4, 4, 4, 4, 4, 4, 4, 4, 4, 4, 4, 4, 4, 4, 4, 4, 4, 4, 4, 4, 4, 44, 4, 4, 4, 4, 4, 4, 4, 4, 4, 4, 4, 4, 4, 4, 4, 4, 4, 4, 4, 4, 4, 4, 4, 4, 4, 4, 4, 4, 4, 4, 4, 4, 4, 4, 4, 4, 4, 4, 4, 4, 4, 4, 4, 4, 4, 4, 4, 4, 4, 4, 4, 4, 4, 4, 4, 4, 4, 0, 4, 4, 4, 4, 4, 4, 4, 4, 4, 4, 4, 4, 4, 4, 4, 4, 4, 46, 244]),
    ]
}

fn stack_pair_findings() -> Vec<(&'static str, &'static [u8])> {
    vec![
        // Unlistening reset four connections A had sent on (acknowledged,
        // never accepted) and a full link queue dropped their RSTs: A's ends
        // stayed open, idle, forever, as after any lost RST. A model bug:
        // those ends are no longer the drain's business.
        ("RSTs of an unlisten lost to a full link", &[0, 10, 161, 49, 0, 0, 0, 0, 49, 49, 0, 0, 0, 251, 255, 0, 49, 49, 49, 49, 49, 49, 103, 103, 103, 103, 103, 103, 103, 103, 103, 103, 103, 103, 103, 103, 103, 103, 103, 103, 103, 103, 10, 161, 171, 0, 64, 0, 0, 90, 255, 135, 186, 186, 186, 102, 102, 102, 112, 9, 0, 0, 2, 0, 0, 0, 103, 103, 103, 103, 103, 0, 0, 0, 0, 0, 0, 15, 243, 103, 103, 103, 103, 103, 103, 103, 103, 103, 103, 103, 10, 161, 171, 187, 0, 64, 0, 0, 90, 255, 135, 186, 186, 186, 102, 102, 102, 102, 102, 102, 102, 102, 102, 102, 102, 103, 102, 0, 228, 7]),
    ]
}
