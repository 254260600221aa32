//! A hostile guest against the backend's ring code, as a property test.
//!
//! The guest owns every byte the ring code reads: the descriptor table, the
//! avail ring and its index, `used_event`. Here proptest plays that guest.
//! It writes arbitrary descriptors (addresses past, between and across the
//! memory regions, huge lengths, loops, indirect and wrong-direction flags),
//! posts arbitrary heads, and moves the avail index back and forth, while
//! the backend takes and writes frames. After every step it checks what a
//! guest must be able to rely on, whatever it wrote:
//!
//! - the backend wrote no byte outside the used ring, except, when it
//!   wrote a frame, inside a buffer the guest marked writable;
//! - every chain taken from the avail ring is handed back exactly once (a
//!   head past the table excepted, which cannot be), in the order taken
//!   (the `IN_ORDER` the backend offers), with the frame's
//!   length when the frame was written and 0 when the chain was refused;
//! - a frame taken is the bytes of its chain, and a frame written is read
//!   back whole from the chains handed back;
//! - `notify` publishes every used entry.
//!
//! `PROPTEST_CASES=100000 cargo test -p ustack-device --lib hostile` explores
//! longer than CI does.

use super::*;
use proptest::prelude::*;

const SIZE: u16 = 8;
const DESC: u64 = 0x0;
const AVAIL: u64 = 0x1000;
const USED: u64 = 0x2000;
/// Two adjacent regions (a buffer may straddle them) and one after a gap.
const REGIONS: [(u64, usize); 3] = [(0, 0x8000), (0x8000, 0x8000), (0x20000, 0x1000)];
/// The used ring and `avail_event` after it: the backend's to write.
const USED_END: u64 = USED + 4 + 8 * SIZE as u64 + 2;

#[derive(Clone, Copy, Debug)]
struct GuestDesc {
    addr: u64,
    len: u32,
    flags: u16,
    next: u16,
}

#[derive(Clone, Debug)]
enum Step {
    Write(u16, GuestDesc),
    Post(u16),
    MoveAvailIdx(i16),
    SetUsedEvent(u16),
    Pop(usize),
    Push { hdr: usize, frame: usize, split: usize, mrg: bool },
    Notify,
    Arm,
    Disarm,
}

fn addr() -> impl Strategy<Value = u64> {
    prop_oneof![
        // Buffers, both regions' ends, the gap, the far region and past it;
        // now and then the rings themselves (see `self_harm`).
        8 => 0x3000u64..0x22000,
        1 => DESC..USED_END,
        2 => prop::sample::select(vec![0x7ff8, 0x7fff, 0xfff0, 0x10000, 0x1ff00, 0x20ff0, 0x21000, u64::MAX - 8]),
        1 => any::<u64>(),
    ]
}

fn desc() -> impl Strategy<Value = GuestDesc> {
    let len = prop_oneof![4 => 0u32..2100, 1 => prop::sample::select(vec![0, 1, 4095, 65536, u32::MAX])];
    // Mostly the shapes guests post (transmit, receive, chained), now and
    // then any flags at all.
    let flags = prop_oneof![
        8 => prop::sample::select(vec![0, DESC_NEXT, DESC_WRITE, DESC_WRITE | DESC_NEXT]),
        2 => 0u16..8,
        1 => any::<u16>()
    ];
    (addr(), len, flags, 0u16..SIZE + 2).prop_map(|(addr, len, flags, next)| GuestDesc { addr, len, flags, next })
}

fn step() -> impl Strategy<Value = Step> {
    prop_oneof![
        4 => (0..SIZE, desc()).prop_map(|(i, d)| Step::Write(i, d)),
        6 => prop_oneof![8 => 0..SIZE, 1 => any::<u16>()].prop_map(Step::Post),
        1 => (-3i16..20).prop_map(Step::MoveAvailIdx),
        1 => any::<u16>().prop_map(Step::SetUsedEvent),
        3 => (0usize..3000).prop_map(Step::Pop),
        3 => (any::<bool>(), prop_oneof![4 => 0usize..1600, 1 => 0usize..3000], 0usize..3000, any::<bool>()).prop_map(|(long, frame, split, mrg)| {
            // A 12-byte header whenever MRG_RXBUF is on, as negotiation makes it.
            Step::Push { hdr: if long || mrg { 12 } else { 10 }, frame, split: split.min(frame), mrg }
        }),
        1 => Just(Step::Notify),
        1 => Just(Step::Arm),
        1 => Just(Step::Disarm),
    ]
}

/// The guest: its memory, and where it posts next.
struct Guest {
    mem: Arc<GuestMemoryMmap>,
    avail_idx: u16,
}

impl Guest {
    fn snapshot(&self) -> Vec<Vec<u8>> {
        REGIONS
            .iter()
            .map(|&(start, len)| {
                let mut v = vec![0; len];
                self.mem.read_slice(&mut v, GuestAddress(start)).unwrap();
                v
            })
            .collect()
    }

    fn desc(&self, i: u16) -> GuestDesc {
        let at = |off| GuestAddress(DESC + 16 * u64::from(i) + off);
        GuestDesc {
            addr: self.mem.read_obj(at(0)).unwrap(),
            len: self.mem.read_obj(at(8)).unwrap(),
            flags: self.mem.read_obj(at(12)).unwrap(),
            next: self.mem.read_obj(at(14)).unwrap(),
        }
    }

    fn avail_entry(&self, idx: u16) -> u16 {
        self.mem.read_obj(GuestAddress(AVAIL + 4 + 2 * u64::from(idx % SIZE))).unwrap()
    }

    fn used_entry(&self, idx: u16) -> (u32, u32) {
        let at = USED + 4 + 8 * u64::from(idx % SIZE);
        (self.mem.read_obj(GuestAddress(at)).unwrap(), self.mem.read_obj(GuestAddress(at + 4)).unwrap())
    }

    /// The descriptors of the chain from `head` as the backend may walk it
    /// (at most a table's worth; none if `head` is past the table).
    fn chain(&self, head: u16) -> Vec<GuestDesc> {
        let mut out = Vec::new();
        let mut at = head;
        while at < SIZE && out.len() < usize::from(SIZE) {
            let d = self.desc(at);
            out.push(d);
            if d.flags & DESC_NEXT == 0 {
                break;
            }
            at = d.next;
        }
        out
    }

    fn read(&self, addr: u64, len: usize) -> Option<Vec<u8>> {
        let mut v = vec![0; len];
        self.mem.read_slice(&mut v, GuestAddress(addr)).ok().map(|()| v)
    }
}

/// Whether a writable buffer overlaps the rings. Writing a frame there
/// rewrites the descriptors and heads the step goes on to read, so only
/// "no panic, no hang" can be checked; the guest harms only itself.
fn self_harm(writable: &[(u64, u64)]) -> bool {
    writable.iter().any(|&(a, l)| l > 0 && a < USED_END && DESC < a.saturating_add(l))
}

/// Whether the byte at `gpa` may change in a step: the used ring always, a
/// writable buffer when a frame is written.
fn allowed(gpa: u64, writable: &[(u64, u64)]) -> bool {
    (USED..USED_END).contains(&gpa) || writable.iter().any(|&(a, l)| gpa >= a && gpa - a < l)
}

fn run(steps: &[Step]) -> Result<(), TestCaseError> {
    let ranges: Vec<_> = REGIONS.iter().map(|&(s, l)| (GuestAddress(s), l)).collect();
    let mem = Arc::new(GuestMemoryMmap::<()>::from_ranges(&ranges).unwrap());
    // Recognisable buffer contents, so a frame taken is checked byte by byte.
    for &(start, len) in &REGIONS {
        let fill: Vec<u8> = (0..len).map(|i| (i as u64 ^ (start >> 8)) as u8).collect();
        mem.write_slice(&fill, GuestAddress(start)).unwrap();
    }
    for i in 0..SIZE {
        mem.write_slice(&[0; 16], GuestAddress(DESC + 16 * u64::from(i))).unwrap();
    }
    mem.write_slice(&[0; 6 + 2 * SIZE as usize], GuestAddress(AVAIL)).unwrap();
    mem.write_slice(&[0; (USED_END - USED) as usize], GuestAddress(USED)).unwrap();
    let mut g = Guest { mem: Arc::clone(&mem), avail_idx: 0 };
    let mut ring = Vring::new(GuestMap::new(Arc::clone(&mem)), SIZE, [DESC, AVAIL, USED], true, 0, None).unwrap();
    let mut buf = vec![0u8; 3000];
    let mut harmed = false;
    for step in steps {
        let before = g.snapshot();
        let (next_avail, next_used) = (ring.next_avail, ring.next_used);
        // The heads the backend may take this step, as posted now.
        let posted: Vec<u16> = (0..SIZE).map(|k| g.avail_entry(next_avail.wrapping_add(k))).collect();
        let mut writable = Vec::new();
        let mut frame_written = None;
        match *step {
            Step::Write(i, d) => {
                let mut b = [0u8; 16];
                b[..8].copy_from_slice(&d.addr.to_le_bytes());
                b[8..12].copy_from_slice(&d.len.to_le_bytes());
                b[12..14].copy_from_slice(&d.flags.to_le_bytes());
                b[14..].copy_from_slice(&d.next.to_le_bytes());
                mem.write_slice(&b, GuestAddress(DESC + 16 * u64::from(i))).unwrap();
                continue;
            }
            Step::Post(head) => {
                mem.write_obj(head.to_le(), GuestAddress(AVAIL + 4 + 2 * u64::from(g.avail_idx % SIZE))).unwrap();
                g.avail_idx = g.avail_idx.wrapping_add(1);
                mem.write_obj(g.avail_idx.to_le(), GuestAddress(AVAIL + 2)).unwrap();
                continue;
            }
            Step::MoveAvailIdx(d) => {
                g.avail_idx = g.avail_idx.wrapping_add_signed(d);
                mem.write_obj(g.avail_idx.to_le(), GuestAddress(AVAIL + 2)).unwrap();
                continue;
            }
            Step::SetUsedEvent(e) => {
                mem.write_obj(e.to_le(), GuestAddress(AVAIL + 4 + 2 * u64::from(SIZE))).unwrap();
                continue;
            }
            Step::Pop(len) => {
                let got = ring.pop(&mut buf[..len]);
                let taken = ring.next_avail.wrapping_sub(next_avail);
                let handed = ring.next_used.wrapping_sub(next_used);
                match got {
                    Ok(None) => prop_assert_eq!((taken, handed), (0, 0)),
                    _ => {
                        prop_assert_eq!(taken, 1);
                        prop_assert_eq!(handed, u16::from(posted[0] < SIZE), "head {}", posted[0]);
                    }
                }
                if let Ok(Some(n)) = got {
                    let mut want = Vec::new();
                    for d in g.chain(posted[0]) {
                        prop_assert_eq!(d.flags & (DESC_WRITE | DESC_INDIRECT), 0, "took a chain it must refuse");
                        // As it was before the step: the buffer may hold the
                        // used entry the step wrote.
                        let bytes = read_snapshot(&before, d.addr, d.len as usize);
                        prop_assert!(bytes.is_some(), "took a buffer outside the memory");
                        want.extend(bytes.unwrap());
                    }
                    prop_assert!(n <= len);
                    prop_assert_eq!(&buf[..n], &want[..], "the frame taken is not its chain's bytes");
                }
                if handed == 1 {
                    prop_assert_eq!(g.used_entry(next_used), (u32::from(posted[0]), 0));
                }
            }
            Step::Push { hdr, frame, split, mrg } => {
                for i in 0..SIZE {
                    let d = g.desc(i);
                    if d.flags & DESC_WRITE != 0 {
                        writable.push((d.addr, u64::from(d.len)));
                    }
                }
                let h: Vec<u8> = (0..hdr as u8).map(|b| 0xa0 | b).collect();
                let f: Vec<u8> = (0..frame).map(|i| (i * 7 + 3) as u8).collect();
                let got = ring.push_parts(&h, &[&f[..split], &f[split..]], mrg);
                if self_harm(&writable) {
                    harmed = true;
                    continue;
                }
                let taken = ring.next_avail.wrapping_sub(next_avail);
                let handed = ring.next_used.wrapping_sub(next_used);
                prop_assert!(taken <= SIZE);
                let heads = &posted[..usize::from(taken)];
                prop_assert_eq!(usize::from(handed), heads.iter().filter(|&&h| h < SIZE).count());
                let entries: Vec<(u32, u32)> = (0..handed).map(|k| g.used_entry(next_used.wrapping_add(k))).collect();
                let ids: Vec<u32> = heads.iter().filter(|&&h| h < SIZE).map(|&h| u32::from(h)).collect();
                prop_assert_eq!(entries.iter().map(|e| e.0).collect::<Vec<_>>(), ids, "handed back out of order");
                match got {
                    Ok(false) => prop_assert_eq!(taken, 0),
                    Err(_) => prop_assert!(entries.iter().all(|e| e.1 == 0), "a refused chain came back with bytes"),
                    Ok(true) => {
                        let total = (hdr + frame) as u32;
                        prop_assert_eq!(entries.iter().map(|e| e.1).sum::<u32>(), total);
                        prop_assert!(mrg || entries.len() == 1);
                        frame_written = Some((entries, h, f, mrg));
                    }
                }
            }
            Step::Notify => {
                ring.notify();
                // (Unless a frame was written over the used ring, index too.)
                if !harmed {
                    prop_assert_eq!(g.mem.read_obj::<u16>(GuestAddress(USED + 2)).unwrap(), ring.next_used);
                }
            }
            Step::Arm => {
                ring.arm();
            }
            Step::Disarm => ring.disarm(),
        }
        let after = g.snapshot();
        for (r, (b, a)) in before.iter().zip(&after).enumerate() {
            for (j, _) in b.iter().zip(a).enumerate().filter(|(_, (x, y))| x != y) {
                let gpa = REGIONS[r].0 + j as u64;
                prop_assert!(allowed(gpa, &writable), "{:?} wrote {:#x}", step, gpa);
            }
        }
        if let Some((entries, h, f, mrg)) = frame_written {
            check_written(&g, &entries, &h, &f, mrg)?;
        }
    }
    Ok(())
}

/// `len` bytes at `gpa` in a [`Guest::snapshot`], if all are mapped.
fn read_snapshot(snap: &[Vec<u8>], gpa: u64, len: usize) -> Option<Vec<u8>> {
    let mut out = Vec::with_capacity(len);
    while out.len() < len {
        let at = gpa.checked_add(out.len() as u64)?;
        let (r, &(start, size)) = REGIONS.iter().enumerate().find(|(_, &(s, l))| at >= s && at - s < l as u64)?;
        let off = (at - start) as usize;
        let n = (size - off).min(len - out.len());
        out.extend_from_slice(&snap[r][off..off + n]);
    }
    Some(out)
}

/// Read a written frame back from the chains handed back, when its buffers
/// overlap neither each other nor the rings (a guest may give the same
/// buffer twice; then the later bytes win and nothing can be read back).
fn check_written(g: &Guest, entries: &[(u32, u32)], h: &[u8], f: &[u8], mrg: bool) -> Result<(), TestCaseError> {
    let mut spans = Vec::new();
    for &(id, len) in entries {
        let mut left = u64::from(len);
        for d in g.chain(id as u16) {
            if left == 0 {
                break;
            }
            let take = left.min(u64::from(d.len));
            spans.push((d.addr, take));
            left -= take;
        }
        prop_assert_eq!(left, 0, "chain {} holds less than the {} bytes handed back", id, len);
    }
    let overlap = |&(a, l): &(u64, u64), &(b, m): &(u64, u64)| {
        l > 0 && m > 0 && a < b.saturating_add(m) && b < a.saturating_add(l)
    };
    let rings = (DESC, USED_END - DESC);
    for (i, s) in spans.iter().enumerate() {
        if overlap(s, &rings) || spans[..i].iter().any(|t| overlap(s, t)) {
            return Ok(());
        }
    }
    let mut got = Vec::new();
    for &(addr, len) in &spans {
        got.extend(g.read(addr, len as usize).expect("written, so mapped"));
    }
    let mut want = [h, f].concat();
    if mrg {
        want[10..12].copy_from_slice(&(entries.len() as u16).to_le_bytes());
    }
    prop_assert_eq!(got, want, "the frame read back differs");
    Ok(())
}

proptest! {
    // 2,000 cases unless PROPTEST_CASES asks for another number.
    #![proptest_config(ProptestConfig {
        cases: std::env::var("PROPTEST_CASES").ok().and_then(|v| v.parse().ok()).unwrap_or(2000),
        failure_persistence: None,
        ..ProptestConfig::default()
    })]

    #[test]
    fn hostile_guest_rings_keep_the_backend_within_its_rights(
        table in prop::collection::vec(desc(), SIZE as usize),
        steps in prop::collection::vec(step(), 1..80),
    ) {
        let table = table.into_iter().enumerate().map(|(i, d)| Step::Write(i as u16, d));
        run(&table.chain(steps).collect::<Vec<_>>())?;
    }
}
