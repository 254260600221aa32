//! The memory link allocates nothing per frame once warmed up, faults included.
//! A counting global allocator of its own makes this a separate test binary.

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;
use std::sync::atomic::{AtomicU64, Ordering};

use ustack_core::phy::{Device, RxQueue, TxMeta, TxQueue};
use ustack_core::time::{Duration, Instant};
use ustack_device::{LinkConfig, MemoryLink, MemoryPort};

struct Counting;

static ALLOCATIONS: AtomicU64 = AtomicU64::new(0);

thread_local! {
    // Only the measuring thread counts, not the test harness around it.
    static COUNTING: Cell<bool> = const { Cell::new(false) };
}

fn counting() -> bool {
    COUNTING.try_with(Cell::get).unwrap_or(false)
}

// SAFETY: forwards to the system allocator unchanged.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        if counting() {
            ALLOCATIONS.fetch_add(1, Ordering::Relaxed);
        }
        unsafe { System.alloc(layout) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        unsafe { System.dealloc(ptr, layout) }
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        if counting() {
            ALLOCATIONS.fetch_add(1, Ordering::Relaxed);
        }
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

/// Send `n` frames a→b and b→a in bursts of 8, receiving everything; returns
/// the clock at the end.
fn exchange(a: &mut MemoryPort, b: &mut MemoryPort, n: u32, mut now: Instant) -> (Instant, u64) {
    let mut received = 0;
    for i in 0..n / 8 {
        for port in [&mut *a, &mut *b] {
            port.set_now(now);
            let (_, tx) = port.queues();
            for j in 0..8u32 {
                let seq = i * 8 + j;
                tx.send(1000, TxMeta::default(), |buf| {
                    buf.fill(0x5a);
                    buf[..4].copy_from_slice(&seq.to_be_bytes());
                })
                .unwrap();
            }
        }
        now += Duration::from_micros(50);
        for port in [&mut *a, &mut *b] {
            let (rx, _) = port.queues();
            while let Some((frame, _)) = rx.recv(now) {
                received += u64::from(frame[4] == 0x5a);
            }
        }
    }
    (now, received)
}

#[test]
fn steady_state_allocates_nothing_per_frame() {
    let configs = [
        LinkConfig::default(),
        LinkConfig {
            loss: 0.02,
            duplicate: 0.02,
            reorder: 0.05,
            corrupt: 0.0,
            delay: Duration::from_micros(200),
            jitter: Duration::from_micros(100),
            // Faults make the number of frames in flight wander; a lazily
            // grown pool would allocate one buffer at each new peak.
            preallocate: true,
            ..LinkConfig::default()
        },
    ];
    for config in configs {
        let (mut a, mut b) = MemoryLink::pair(config, 42);
        // Warm-up grows the pools to the most frames in flight at once (the
        // steady burst pattern here peaks early) and the queues' buffers.
        let (now, _) = exchange(&mut a, &mut b, 2_000, Instant::ZERO);
        let buffers = (a.buffers_allocated(), b.buffers_allocated());

        ALLOCATIONS.store(0, Ordering::Relaxed);
        COUNTING.with(|c| c.set(true));
        let (_, received) = exchange(&mut a, &mut b, 10_000, now);
        COUNTING.with(|c| c.set(false));

        assert!(received > 15_000, "traffic flowed: {received}");
        assert_eq!(buffers, (a.buffers_allocated(), b.buffers_allocated()));
        assert_eq!(ALLOCATIONS.load(Ordering::Relaxed), 0, "allocations after warm-up with {config:?}");
    }
}
