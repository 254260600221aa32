//! Property tests of the whole receive path: arbitrary bytes, and mutations
//! of real frames, never panic the stack, and whatever it sends back parses.

mod common;

use common::*;
use proptest::prelude::*;
use ustack_core::phy::RxMeta;
use ustack_core::{Duration, Instant, Stack};
use ustack_wire::{EthernetFrame, Ipv4Packet};

fn stack() -> Stack {
    let mut s = Stack::new(config(B_MAC, B_IP), 3);
    s.udp_bind(7).unwrap();
    s.ping_open(1).unwrap();
    s
}

fn valid_frames() -> Vec<Vec<u8>> {
    // ARP first, so the answers to the rest need no resolution.
    vec![
        arp_request_frame(),
        udp_frame(A_IP, B_IP, 1234, 7, &[1; 20]),
        udp_frame(A_IP, B_IP, 1234, 9999, &[1; 20]),
        echo_request_frame(1, 1, &[2; 32]),
    ]
}

fn check_output(frames: &[Vec<u8>]) {
    for f in frames {
        let eth = EthernetFrame::new_checked(&f[..]).expect("emitted Ethernet parses");
        if eth.ethertype() == ustack_wire::EtherType::Ipv4 {
            let ip = Ipv4Packet::new_checked(eth.payload()).expect("emitted IPv4 parses");
            assert!(ip.verify_checksum());
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 2000, ..ProptestConfig::default() })]

    #[test]
    fn random_bytes_never_panic(frames in prop::collection::vec(prop::collection::vec(any::<u8>(), 0..1600), 1..20)) {
        let mut s = stack();
        let mut tx = Capture::default();
        let mut now = Instant::ZERO;
        for f in &frames {
            s.receive(now, f, RxMeta::default(), &mut tx);
            now += Duration::from_millis(300);
            s.handle_timeout(now, &mut tx);
            s.transmit(now, &mut tx);
        }
        check_output(&tx.frames);
    }

    #[test]
    fn mutated_frames_never_panic(which in 0usize..4, flips in prop::collection::vec((any::<usize>(), any::<u8>()), 1..8),
                                  truncate in any::<Option<usize>>(), trusted in any::<bool>()) {
        let mut f = valid_frames().swap_remove(which);
        for (at, x) in flips {
            let n = f.len();
            f[at % n] ^= x;
        }
        if let Some(t) = truncate {
            let n = f.len();
            f.truncate(t % (n + 1));
        }
        let mut s = stack();
        let mut tx = Capture::default();
        let meta = RxMeta { csum_verified: trusted, ..Default::default() };
        s.receive(Instant::ZERO, &f, meta, &mut tx);
        s.transmit(Instant::ZERO, &mut tx);
        check_output(&tx.frames);
    }
}

#[test]
fn valid_frames_get_their_answers() {
    let mut s = stack();
    let mut tx = Capture::default();
    for f in valid_frames() {
        s.receive(Instant::ZERO, &f, RxMeta::default(), &mut tx);
    }
    let c = s.counters();
    assert_eq!(c.total_drops(), 1, "only the datagram to the closed port is dropped");
    assert_eq!(c.icmp_errors_sent, 1);
    assert_eq!(c.icmp_echo_replies_sent, 1);
    assert_eq!(c.arp_replies_sent, 1);
    assert_eq!(tx.frames.len(), 3);
    check_output(&tx.frames);
}
