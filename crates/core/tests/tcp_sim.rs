//! Deterministic simulated transfers: two `Connection`s joined by a lossy,
//! reordering, duplicating link in virtual time.
//!
//! The link has a bottleneck (rate and a drop-tail queue), a propagation
//! delay with jitter (which reorders), random loss (corruption is modelled as
//! loss: the stack's checksum drops corrupted frames) and duplication, all
//! driven by a seeded SplitMix64. Time jumps to the next deadline (a delivery
//! or a connection timer); a step bound fails the test on livelock. Each side
//! streams a keyed pseudorandom byte sequence indexed by offset and the other
//! checks every byte on arrival.
//!
//! With TSO on, the senders hand out super-segments of up to 64 KiB; the
//! link either cuts them into MSS-sized segments before the faults (a NIC's
//! TSO) or carries them whole to the receiver (virtio between two VMs, where
//! the receiver takes the coalesced segment).

use std::net::Ipv4Addr;
use ustack_core::tcp::{
    BufferPool, CongestionAlgorithm, Connection, FourTuple, Flags, Segment, SeqNumber, State, TcpConfig,
};
use ustack_core::time::{Duration, Instant};

struct Rng(u64);
impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }
    /// True with probability `per_mille / 1000`.
    fn chance(&mut self, per_mille: u64) -> bool {
        self.next() % 1000 < per_mille
    }
}

fn mix(x: u64) -> u64 {
    Rng(x).next()
}

/// The byte at `offset` of side `side`'s stream.
fn stream_byte(side: usize, offset: u64) -> u8 {
    (mix((side as u64) << 56 ^ (offset >> 3)) >> ((offset & 7) * 8)) as u8
}

#[derive(Clone, Copy, Debug)]
struct Params {
    seed: u64,
    bytes: u64,
    loss_per_mille: u64,
    dup_per_mille: u64,
    cfg: TcpConfig,
    /// Bottleneck rate in bytes per second.
    rate: u64,
    delay: Duration,
    jitter: Duration,
    /// Frames sent without the propagation delay, overtaking the others
    /// (netem's `reorder`).
    reorder_per_mille: u64,
    queue: Duration,
    tso: Tso,
}

/// What the link does with TCP segmentation offload.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Tso {
    /// Senders send MSS-sized segments only.
    Off,
    /// Super-segments, cut into MSS-sized segments before the faults.
    Cut,
    /// Super-segments, delivered whole (each fault hits the whole of one).
    Whole,
}

/// The TSO limit after the IPv4 and TCP headers, like a 64 KiB device.
const TSO_PAYLOAD: usize = 65_535 - 40;

impl Params {
    fn new(seed: u64, bytes: u64, loss_per_mille: u64) -> Params {
        Params {
            seed,
            bytes,
            loss_per_mille,
            dup_per_mille: if loss_per_mille > 0 { 5 } else { 0 },
            cfg: TcpConfig::default(),
            rate: 12_500_000, // 100 Mbit/s
            delay: Duration::from_millis(10),
            jitter: Duration::from_millis(if loss_per_mille > 0 { 2 } else { 0 }),
            reorder_per_mille: 0,
            queue: Duration::from_millis(30),
            tso: Tso::Off,
        }
    }
}

struct InFlight {
    at: Instant,
    order: u64,
    to: usize,
    seg: Segment,
    payload: Vec<u8>,
}

#[derive(Debug, PartialEq, Eq)]
struct Summary {
    end: Instant,
    retransmits: [u64; 2],
    segments: [u64; 2],
    rtos: [u64; 2],
    /// Tail loss probes sent (RFC 8985 §7).
    probes: [u64; 2],
    /// The largest payload a sender handed out in one segment.
    largest: usize,
}

const MTU_PAYLOAD: usize = 1460;

fn tuple(side: usize) -> FourTuple {
    let a = (Ipv4Addr::new(10, 0, 0, 1), 40000);
    let b = (Ipv4Addr::new(10, 0, 0, 2), 80);
    let (l, r) = if side == 0 { (a, b) } else { (b, a) };
    FourTuple { local_addr: l.0.into(), local_port: l.1, remote_addr: r.0.into(), remote_port: r.1 }
}

fn run(p: Params) -> Summary {
    let mut rng = Rng(p.seed);
    let mut now = Instant::from_secs(1);
    let client = Connection::connect(tuple(0), p.cfg, SeqNumber(rng.next() as u32), now);
    let mut pools = [BufferPool::for_config(&p.cfg), BufferPool::for_config(&p.cfg)];
    let mut conns: [Option<Connection>; 2] = [Some(client), None];
    let server_iss = SeqNumber(rng.next() as u32);
    let mut queue: Vec<InFlight> = Vec::new();
    let mut order = 0u64;
    let mut link_free = [now; 2];
    let mut written = [0u64; 2];
    let mut read = [0u64; 2];
    let mut eof = [false; 2];
    let mut shut = [false; 2];
    let mut buf = vec![0u8; 64 * 1024];
    let mut frame = vec![0u8; TSO_PAYLOAD];
    let mut largest = 0;
    let mut steps = 0u64;
    loop {
        steps += 1;
        assert!(steps < 3_000_000, "livelock at {now}: {:?}", conns.each_ref().map(|c| c.as_ref().map(|c| c.state())));
        // Applications: write the stream, read and verify the peer's.
        for side in 0..2 {
            let Some(c) = conns[side].as_mut() else { continue };
            while written[side] < p.bytes {
                let room = p.cfg.send_buffer_size - c.send_queue();
                let n = ((p.bytes - written[side]) as usize).min(buf.len()).min(room);
                if n == 0 {
                    break;
                }
                for (i, b) in buf[..n].iter_mut().enumerate() {
                    *b = stream_byte(side, written[side] + i as u64);
                }
                match c.send(&buf[..n], &mut pools[side]) {
                    Ok(k) => written[side] += k as u64,
                    Err(_) => break,
                }
            }
            if written[side] == p.bytes && !shut[side] && c.state() != State::SynSent {
                c.shutdown_write().unwrap();
                shut[side] = true;
            }
            loop {
                match c.recv(&mut buf, &mut pools[side]) {
                    Ok(0) => {
                        eof[side] = true;
                        break;
                    }
                    Ok(n) => {
                        for (i, &b) in buf[..n].iter().enumerate() {
                            let off = read[side] + i as u64;
                            assert_eq!(b, stream_byte(1 - side, off), "side {side} byte {off} corrupted");
                        }
                        read[side] += n as u64;
                    }
                    Err(_) => break,
                }
            }
        }
        // Transmit onto the link.
        for side in 0..2 {
            let Some(c) = conns[side].as_mut() else { continue };
            let tso_payload = if p.tso == Tso::Off { 0 } else { TSO_PAYLOAD };
            while let Some(seg) = c.poll_transmit_tso(now, MTU_PAYLOAD, tso_payload, &pools[side]) {
                let per_segment = c.mss().min(MTU_PAYLOAD - seg.options.wire_len());
                if seg.payload_len > per_segment {
                    // A super-segment: whole segments only, within the limit.
                    assert!(p.tso != Tso::Off, "a {}-byte segment without TSO", seg.payload_len);
                    assert_eq!(seg.payload_len % per_segment, 0, "super-segment of {} by {per_segment}", seg.payload_len);
                    assert!(seg.options.wire_len() + seg.payload_len <= TSO_PAYLOAD);
                }
                largest = largest.max(seg.payload_len);
                c.read_payload(&seg, &mut frame[..seg.payload_len], &pools[side]);
                // What crosses the link: the segment, or the segments a NIC cuts it into.
                let cut = if p.tso == Tso::Cut { per_segment } else { usize::MAX };
                let mut pieces = Vec::new();
                let mut offset = 0;
                loop {
                    let n = cut.min(seg.payload_len - offset);
                    let last = offset + n == seg.payload_len;
                    // The FIN and PSH go on the last piece only (as Linux's TSO does).
                    let flags = if last { seg.flags } else { seg.flags.without(Flags::FIN).without(Flags::PSH) };
                    pieces.push((Segment { seq: seg.seq + offset, payload_len: n, flags, ..seg }, offset));
                    offset += n;
                    if last {
                        break;
                    }
                }
                for (seg, offset) in pieces {
                let payload = &frame[offset..offset + seg.payload_len];
                if rng.chance(p.loss_per_mille) {
                    continue;
                }
                let copies = if rng.chance(p.dup_per_mille) { 2 } else { 1 };
                for _ in 0..copies {
                    let wire = (seg.payload_len + 40) as u64;
                    let start = link_free[side].max(now);
                    if start.saturating_since(now) > p.queue {
                        continue; // drop-tail
                    }
                    let done = start + Duration::from_nanos(wire * 1_000_000_000 / p.rate);
                    link_free[side] = done;
                    let jitter = if p.jitter.is_zero() {
                        Duration::ZERO
                    } else {
                        Duration::from_micros(rng.next() % p.jitter.as_micros() as u64)
                    };
                    // (No draw when off, so the other runs' random streams stay as they were.)
                    let overtakes = p.reorder_per_mille > 0 && rng.chance(p.reorder_per_mille);
                    let delay = if overtakes { Duration::ZERO } else { p.delay + jitter };
                    order += 1;
                    queue.push(InFlight {
                        at: done + delay,
                        order,
                        to: 1 - side,
                        seg,
                        payload: payload.to_vec(),
                    });
                }
                }
            }
        }
        let done =
            |c: &Option<Connection>| c.as_ref().is_some_and(|c| matches!(c.state(), State::Closed | State::TimeWait));
        if read == [p.bytes; 2] && eof == [true; 2] && done(&conns[0]) && done(&conns[1]) {
            break;
        }
        // Jump to the next event.
        let next_packet = queue.iter().map(|f| (f.at, f.order)).min();
        let next_timer = conns.iter().flatten().filter_map(|c| c.poll_timeout()).min();
        let next = match (next_packet.map(|p| p.0), next_timer) {
            (Some(a), Some(b)) => a.min(b),
            (Some(a), None) | (None, Some(a)) => a,
            (None, None) => panic!("stalled at {now}: read {read:?} eof {eof:?}\n{:#?}", conns),
        };
        now = now.max(next);
        // Deliver everything due, in arrival order.
        queue.sort_by_key(|f| std::cmp::Reverse((f.at, f.order)));
        while queue.last().is_some_and(|f| f.at <= now) {
            let f = queue.pop().unwrap();
            if f.to == 1 && conns[1].is_none() {
                if !f.seg.syn() || f.seg.ack.is_some() {
                    continue;
                }
                conns[1] = Some(Connection::accept(tuple(1), &f.seg, p.cfg, server_iss, now).unwrap());
                continue;
            }
            let Some(c) = conns[f.to].as_mut() else { continue };
            let out = c.on_segment(now, &f.seg, &f.payload, &mut pools[f.to]);
            assert!(out.reply.is_none() || c.state() == State::Closed, "unexpected RST reply {out:?}");
        }
        for c in conns.iter_mut().flatten() {
            c.handle_timeout(now);
        }
    }
    let stats = conns.each_ref().map(|c| c.as_ref().unwrap().stats());
    if std::env::var_os("TCP_SIM_VERBOSE").is_some() {
        for st in &stats {
            eprintln!(
                "  rto {} fast {} rexmit {} dupacks {}",
                st.rto_expirations, st.fast_recoveries, st.retransmits, st.dup_acks_in
            );
        }
    }
    Summary {
        end: now,
        retransmits: [stats[0].retransmits, stats[1].retransmits],
        segments: [stats[0].segments_out, stats[1].segments_out],
        rtos: stats.map(|s| s.rto_expirations),
        probes: stats.map(|s| s.loss_probes),
        largest,
    }
}

const MIB: u64 = 1024 * 1024;

macro_rules! transfer_tests {
    ($($name:ident: loss $loss:expr, sack $sack:expr, ts $ts:expr, $cc:ident;)*) => {$(
        #[test]
        fn $name() {
            let mut p = Params::new(0x5eed ^ $loss, 3 * MIB, $loss);
            p.cfg.sack = $sack;
            p.cfg.timestamps = $ts;
            p.cfg.congestion = CongestionAlgorithm::$cc;
            let s = run(p);
            // Figures to compare runs by (never asserted: speed is not a test).
            eprintln!(
                "{}: {:.3} s simulated (from 1 s), retransmits {:?}, RTOs {:?}, probes {:?}, segments {:?}",
                stringify!($name),
                s.end.total_micros() as f64 / 1e6,
                s.retransmits,
                s.rtos,
                s.probes,
                s.segments
            );
        }
    )*};
}

transfer_tests! {
    clean_cubic: loss 0, sack true, ts true, Cubic;
    clean_newreno_plain: loss 0, sack false, ts false, NewReno;
    loss1_cubic_sack_ts: loss 10, sack true, ts true, Cubic;
    loss1_cubic_sack: loss 10, sack true, ts false, Cubic;
    loss1_cubic_ts: loss 10, sack false, ts true, Cubic;
    loss1_cubic_plain: loss 10, sack false, ts false, Cubic;
    loss1_newreno_sack_ts: loss 10, sack true, ts true, NewReno;
    loss1_newreno_sack: loss 10, sack true, ts false, NewReno;
    loss1_newreno_ts: loss 10, sack false, ts true, NewReno;
    loss1_newreno_plain: loss 10, sack false, ts false, NewReno;
    loss5_cubic_sack_ts: loss 50, sack true, ts true, Cubic;
    loss5_cubic_sack: loss 50, sack true, ts false, Cubic;
    loss5_cubic_ts: loss 50, sack false, ts true, Cubic;
    loss5_cubic_plain: loss 50, sack false, ts false, Cubic;
    loss5_newreno_sack_ts: loss 50, sack true, ts true, NewReno;
    loss5_newreno_sack: loss 50, sack true, ts false, NewReno;
    loss5_newreno_ts: loss 50, sack false, ts true, NewReno;
    loss5_newreno_plain: loss 50, sack false, ts false, NewReno;
}

#[test]
fn same_seed_same_run() {
    let p = Params::new(42, MIB, 30);
    assert_eq!(run(p), run(p));
}

#[test]
fn small_buffers_and_window_scaling_off() {
    let mut p = Params::new(7, MIB, 20);
    p.cfg.window_scaling = false;
    p.cfg.send_buffer_size = 20_000;
    p.cfg.recv_buffer_size = 9_000;
    run(p);
}

/// The impairment of the netem tests (`ustack` crate, `support::tcp::NETEM`:
/// "loss 2% delay 5ms 1ms reorder 5% 50% duplicate 1%" both ways), with
/// RACK-TLP on and off in the same run. Prints the figures; asserts only
/// that both transfers complete intact.
#[test]
fn netem_like_path_rack_tlp_on_and_off() {
    for rack_tlp in [false, true] {
        for seed in 1..=3u64 {
            let mut p = Params::new(0x4e7e ^ seed, 3 * MIB, 20);
            p.dup_per_mille = 10;
            p.delay = Duration::from_millis(5);
            p.jitter = Duration::from_millis(1);
            p.reorder_per_mille = 50;
            p.cfg.rack_tlp = rack_tlp;
            let s = run(p);
            eprintln!(
                "netem-like seed {seed} rack_tlp {rack_tlp}: {:.3} s simulated (from 1 s), retransmits {:?}, RTOs {:?}, \
                 probes {:?}",
                s.end.total_micros() as f64 / 1e6,
                s.retransmits,
                s.rtos,
                s.probes
            );
        }
    }
}

/// TSO on, both ways the link can treat it, at 0, 1 and 5% loss with
/// duplication, jitter and reordering: every byte arrives once and in order
/// (checked byte by byte in `run`), and the senders did send super-segments.
#[test]
fn tso_transfers_deliver_every_byte_at_0_1_5_percent_loss() {
    for tso in [Tso::Cut, Tso::Whole] {
        for loss in [0, 10, 50] {
            for (sack, cc) in [(true, CongestionAlgorithm::Cubic), (false, CongestionAlgorithm::NewReno)] {
                let mut p = Params::new(0x7500 ^ loss, 3 * MIB, loss);
                p.tso = tso;
                p.reorder_per_mille = if loss > 0 { 20 } else { 0 };
                p.cfg.sack = sack;
                p.cfg.congestion = cc;
                let s = run(p);
                eprintln!(
                    "tso {tso:?} loss {loss}‰ sack {sack}: {:.3} s simulated (from 1 s), retransmits {:?}, RTOs {:?}, \
                     largest segment {}",
                    s.end.total_micros() as f64 / 1e6,
                    s.retransmits,
                    s.rtos,
                    s.largest
                );
                assert!(s.largest > MTU_PAYLOAD, "tso {tso:?} loss {loss}: no super-segment was sent");
            }
        }
    }
}
