//! The bounded rings that carry a frame from the shard whose device queue
//! received it to the shard that owns its flow, and the counters of what
//! crossed.
//!
//! Every shard has one inbox (a bounded channel all other shards send
//! into) and one channel on which its own frame buffers come back once the
//! receiving shard has passed the frame to its stack. The inbox also
//! carries the messages of connection moves ([`super::moves`]): a moved
//! connection, and the changes to where a moved flow's frames go. One
//! inbox for both keeps them in order: a frame handed over after a
//! connection moves arrives after the connection. Buffers are recycled,
//! so a handoff allocates nothing once a shard has made its first
//! [`BUFFERS`]; when the owner's inbox is full, or every buffer is out, the
//! frame is dropped and counted (`handoff_drops`), never queued without
//! bound.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::mpsc::{sync_channel, Receiver, SyncSender, TrySendError};
use std::sync::{Arc, OnceLock};

use ustack_core::phy::RxMeta;

use super::moves::{FlowKey, Moving};
use crate::Waker;

/// Frames one shard's inbox holds.
pub const INBOX_FRAMES: usize = 1024;
/// Frame buffers one shard lends to handoffs at most.
pub const BUFFERS: usize = INBOX_FRAMES + 64;

/// A frame on its way to its owner.
pub(crate) struct Handoff {
    /// The shard whose buffer this is (it goes back there).
    pub(crate) from: usize,
    pub(crate) buf: Vec<u8>,
    pub(crate) meta: RxMeta,
    /// Times it crossed already (a frame of a flow that moved while it
    /// was on its way crosses again).
    pub(crate) hops: u8,
}

/// What one shard's inbox carries.
pub(crate) enum Message {
    /// A frame for a flow the receiving shard holds.
    Frame(Handoff),
    /// A connection moving to the receiving shard.
    Move(Box<Moving>),
    /// To a flow's home shard: the flow now lives on `to` (move `id`),
    /// and shard `old`, which had it, may forget where it sent it.
    Route { flow: FlowKey, to: usize, id: u64, old: usize },
    /// Forget where the frames of `flow` go, if move `id` set it.
    Forget { flow: FlowKey, id: u64 },
}

/// What crossed between shards, per shard; written by the shard's own
/// thread, read by the stats thread.
#[derive(Debug, Default)]
pub struct ShardCounters {
    /// Frames this shard's queue received for another shard, handed over.
    pub handoffs_out: AtomicU64,
    /// Frames other shards handed to this one.
    pub handoffs_in: AtomicU64,
    /// Frames for another shard dropped: its inbox was full or this shard
    /// had no free buffer.
    pub handoff_drops: AtomicU64,
    /// ARP replies copied to every other shard, so each resolves its
    /// neighbours (counted once per reply, on the shard that received it).
    pub arp_copies: AtomicU64,
    /// Frames this shard's device queue received (its own and others').
    pub rx_frames: AtomicU64,
    /// Connections this shard handed to another.
    pub moves_out: AtomicU64,
    /// Connections other shards handed to this one.
    pub moves_in: AtomicU64,
    /// Moves refused: here (the target's inbox full, the connection not
    /// movable, too many moved flows) or on arrival (the table or the
    /// buffer pool full; the connection went back).
    pub moves_refused: AtomicU64,
    /// Moved connections lost: refused on arrival with no way back, or
    /// taken by no app (each was reset).
    pub moves_lost: AtomicU64,
    /// Times this shard told the device where a moved flow goes now.
    pub moves_steered: AtomicU64,
    /// Times the device could not be told (its flow map full).
    pub steer_failures: AtomicU64,
}

impl ShardCounters {
    /// The counters by name, for snapshots.
    pub fn pairs(&self) -> [(&'static str, u64); 11] {
        let r = |a: &AtomicU64| a.load(Ordering::Relaxed);
        [
            ("shard_handoffs", r(&self.handoffs_out)),
            ("shard_handoffs_in", r(&self.handoffs_in)),
            ("shard_handoff_drops", r(&self.handoff_drops)),
            ("shard_arp_copies", r(&self.arp_copies)),
            ("shard_rx_frames", r(&self.rx_frames)),
            ("shard_moves_out", r(&self.moves_out)),
            ("shard_moves_in", r(&self.moves_in)),
            ("shard_moves_refused", r(&self.moves_refused)),
            ("shard_moves_lost", r(&self.moves_lost)),
            ("shard_moves_steered", r(&self.moves_steered)),
            ("shard_steer_failures", r(&self.steer_failures)),
        ]
    }
}

pub(crate) fn bump(a: &AtomicU64) {
    // Only the owning thread writes: a load and a store, no locked add.
    a.store(a.load(Ordering::Relaxed) + 1, Ordering::Relaxed);
}

/// What every shard shares: the wakers, the counters, the inbox flags.
pub(crate) struct Shared {
    pub(crate) wakers: Vec<OnceLock<Waker>>,
    pub(crate) counters: Vec<ShardCounters>,
    /// `signalled[j]`: shard `j` has been woken and has not yet found its
    /// inbox empty, so senders need not wake it again.
    signalled: Vec<AtomicBool>,
}

/// Posts messages into shards' inboxes (a clone per user on one shard).
#[derive(Clone)]
pub(crate) struct Poster {
    pub(crate) me: usize,
    to: Vec<SyncSender<Message>>,
    pub(crate) shared: Arc<Shared>,
}

impl Poster {
    /// Put `m` in shard `to`'s inbox and wake it; the message back when
    /// the inbox is full (`Err(.., true)`) or the shard has ended.
    pub(crate) fn post(&self, to: usize, m: Message) -> Result<(), (Message, bool)> {
        match self.to[to].try_send(m) {
            Ok(()) => {
                if !self.shared.signalled[to].swap(true, Ordering::AcqRel) {
                    if let Some(w) = self.shared.wakers[to].get() {
                        let _ = w.wake();
                    }
                }
                Ok(())
            }
            Err(TrySendError::Full(m)) => Err((m, true)),
            Err(TrySendError::Disconnected(m)) => Err((m, false)),
        }
    }

    pub(crate) fn counters(&self) -> &ShardCounters {
        &self.shared.counters[self.me]
    }

    pub(crate) fn shards(&self) -> usize {
        self.to.len()
    }
}

/// One shard's end of the handoff mesh.
pub(crate) struct Endpoint {
    pub(crate) me: usize,
    post: Poster,
    inbox: Receiver<Message>,
    back: Vec<SyncSender<Vec<u8>>>,
    returned: Receiver<Vec<u8>>,
    spare: Vec<Vec<u8>>,
    made: usize,
    pub(crate) shared: Arc<Shared>,
}

/// The endpoints of `n` shards, fully connected.
pub(crate) fn mesh(n: usize) -> (Arc<Shared>, Vec<Endpoint>) {
    let shared = Arc::new(Shared {
        wakers: (0..n).map(|_| OnceLock::new()).collect(),
        counters: (0..n).map(|_| ShardCounters::default()).collect(),
        signalled: (0..n).map(|_| AtomicBool::new(false)).collect(),
    });
    let (to, inboxes): (Vec<_>, Vec<_>) = (0..n).map(|_| sync_channel(INBOX_FRAMES)).unzip();
    let (back, returns): (Vec<_>, Vec<_>) = (0..n).map(|_| sync_channel(BUFFERS)).unzip();
    let endpoints = inboxes
        .into_iter()
        .zip(returns)
        .enumerate()
        .map(|(me, (inbox, returned))| Endpoint {
            me,
            post: Poster { me, to: to.clone(), shared: Arc::clone(&shared) },
            inbox,
            back: back.clone(),
            returned,
            spare: Vec::new(),
            made: 0,
            shared: Arc::clone(&shared),
        })
        .collect();
    (shared, endpoints)
}

impl Endpoint {
    pub(crate) fn counters(&self) -> &ShardCounters {
        &self.shared.counters[self.me]
    }

    /// A poster for this shard's moves.
    pub(crate) fn poster(&self) -> Poster {
        self.post.clone()
    }

    /// A buffer for a handoff: a spare one, one come back, or a new one
    /// while fewer than [`BUFFERS`] exist.
    fn buffer(&mut self) -> Option<Vec<u8>> {
        if let Some(b) = self.spare.pop() {
            return Some(b);
        }
        if let Ok(b) = self.returned.try_recv() {
            return Some(b);
        }
        (self.made < BUFFERS).then(|| {
            self.made += 1;
            Vec::with_capacity(2048)
        })
    }

    /// Copy `frame` to shard `to`; false (and counted) when it had to be dropped.
    pub(crate) fn send(&mut self, to: usize, frame: &[u8], meta: RxMeta) -> bool {
        let Some(mut buf) = self.buffer() else {
            bump(&self.counters().handoff_drops);
            return false;
        };
        buf.clear();
        buf.extend_from_slice(frame);
        self.pass(to, Handoff { from: self.me, buf, meta, hops: 0 })
    }

    /// Pass a frame handed to this shard on to shard `to` (its flow moved
    /// meanwhile); false (and counted) when it had to be dropped.
    pub(crate) fn forward(&mut self, to: usize, mut h: Handoff) -> bool {
        h.hops = h.hops.saturating_add(1);
        let sent = self.pass(to, h);
        self.note_handoff(sent);
        sent
    }

    /// Drop a handed-over frame that has crossed too often (counted).
    pub(crate) fn drop_handoff(&mut self, h: Handoff) {
        self.release(h);
        bump(&self.counters().handoff_drops);
    }

    fn pass(&mut self, to: usize, h: Handoff) -> bool {
        match self.post.post(to, Message::Frame(h)) {
            Ok(()) => true,
            Err((Message::Frame(h), full)) => {
                self.release(h);
                // When not full, the owner has stopped (the shards are
                // ending): nothing is lost that anyone waits for.
                if full {
                    bump(&self.counters().handoff_drops);
                }
                false
            }
            Err(_) => unreachable!("post gives back what it was given"),
        }
    }

    /// The next message another shard sent this one.
    pub(crate) fn receive(&mut self) -> Option<Message> {
        if let Ok(h) = self.inbox.try_recv() {
            return Some(h);
        }
        // Empty: the next handoff must wake this shard again. Look once
        // more, for one that came between the look and the flag.
        self.shared.signalled[self.me].store(false, Ordering::Release);
        self.inbox.try_recv().ok()
    }

    /// Give a received frame's buffer back to the shard it came from.
    pub(crate) fn release(&mut self, h: Handoff) {
        if h.from == self.me {
            self.spare.push(h.buf);
        } else if let Err(TrySendError::Full(buf) | TrySendError::Disconnected(buf)) = self.back[h.from].try_send(h.buf)
        {
            // Cannot happen while the owner lends at most BUFFERS; if it
            // did, the buffer is simply freed.
            drop(buf);
        }
    }

    pub(crate) fn note_received(&self) {
        bump(&self.counters().rx_frames);
    }

    pub(crate) fn note_handoff(&self, delivered: bool) {
        if delivered {
            bump(&self.counters().handoffs_out);
        }
    }

    pub(crate) fn note_handoff_in(&self) {
        bump(&self.counters().handoffs_in);
    }

    pub(crate) fn note_arp_copy(&self) {
        bump(&self.counters().arp_copies);
    }

    pub(crate) fn shards(&self) -> usize {
        self.post.to.len()
    }
}
