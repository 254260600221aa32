//! Moving a connection between the shards of a running runtime: an app
//! hands a connection it holds to another shard ([`Mover::move_to`]), e.g.
//! to balance long-lived connections over the cores, and the app of the
//! same port there takes it in ([`Mover::take_arrivals`]).
//!
//! A move is one message through the target's bounded inbox, the one that
//! carries handed-over frames ([`super::handoff`]): the source exports the
//! connection from its stack ([`Stack::tcp_export`]: its state, its timer
//! deadlines, its buffered bytes) with whatever state the app keeps for it,
//! and the target imports it ([`Stack::tcp_import`]) before it looks at
//! anything that came into its inbox after it. The shards share one clock
//! (`run_shards` gives every loop the same one), so the deadlines a
//! connection carries mean the same on the target.
//!
//! A multi-queue TAP is told where the flow went ([`FlowSteering`]: its
//! steering program looks flows up in a map before it hashes), once the
//! connection is in; other devices (AF_PACKET's classic BPF fan-out has no
//! maps) keep steering the flow by its hash to its *home* shard. Frames of
//! a moved flow that reach a shard that does not hold it (all of them on
//! those devices, the few in flight during a move on a TAP) cross to the
//! one that does through the same bounded ring, and are counted as
//! handoffs. Where each shard sends such a flow's frames is a
//! small table of its own ([`Moves::owner`]), consulted only while it is
//! not empty, and changed only by messages in the same inboxes, so that a
//! frame never overtakes the connection it belongs to:
//!
//! - the source, on export, sends the flow's frames that still reach it to
//!   the target (a frame reaches a shard from its device queue, when it is
//!   the flow's home, or from the inbox, handed over before the home
//!   learned of the move);
//! - the target, on import, forgets its own entry and tells the home (a
//!   `Route` message) unless the home is the source or itself; the home
//!   then tells the source to forget its entry (`Forget`), after the last
//!   frame it sent there, in the same inbox;
//! - a shard that is not a flow's home, holds no connection of it and has
//!   no entry for it sends the frames that still reach it (relayed by a
//!   shard that learned late of a later move) to the home, which always
//!   knows where the flow is;
//! - the shard holding a moved connection looks every
//!   [`super::PUBLISH_EVERY`] whether its stack still has it, and once it
//!   has gone (closed, TIME-WAIT over) tells the home to forget the flow.
//!
//! Every change is bounded: a shard creates at most [`MAX_ROUTES`] table
//! entries (moves beyond are refused), a frame crosses at most
//! [`MAX_HOPS`] times, and a move that cannot be delivered (the target's
//! inbox full) or imported (the target's table or buffer pool full) leaves
//! the connection where it was (back, in the second case), counted in
//! `shard_moves_refused`.

use std::any::Any;
use std::cell::RefCell;
use std::collections::HashMap;
use std::net::{IpAddr, Ipv4Addr};
use std::rc::Rc;
use std::sync::Arc;

use ustack_core::rss::ShardHome;
use ustack_core::tcp::FourTuple;
use ustack_core::{Event, Instant, MoveError, MovedConnection, Stack, TcpHandle};

use super::handoff::{bump, Message, Poster};
use crate::App;
use ustack_device::steer_bpf::FlowSteering;

/// Route entries one shard holds at most before it refuses to move more
/// connections away (entries other shards' moves add come on top, one per
/// connection they move).
pub const MAX_ROUTES: usize = 65_536;

/// Times a frame crosses between shards at most; one that would cross
/// again is dropped (and counted in `shard_handoff_drops`).
pub const MAX_HOPS: u8 = 4;

/// A flow as a shard sees it: (local address, local port, remote address,
/// remote port).
pub(crate) type FlowKey = (Ipv4Addr, u16, Ipv4Addr, u16);

/// The state an app keeps for a connection, moving with it.
pub type AppState = Box<dyn Any + Send>;

/// A connection on its way to another shard.
pub(crate) struct Moving {
    conn: MovedConnection,
    state: AppState,
    from: usize,
    id: u64,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Route {
    to: usize,
    id: u64,
}

/// Why [`Mover::move_to`] did not move a connection.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum MoveRefusal {
    /// The target is this shard, or no shard has that number.
    NoSuchShard,
    /// The stack would not let the connection go ([`Stack::tcp_export`]).
    Export(MoveError),
    /// This shard has [`MAX_ROUTES`] moved flows already.
    TooManyMoved,
    /// The target's inbox is full (or it has stopped).
    InboxFull,
}

impl std::fmt::Display for MoveRefusal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            MoveRefusal::NoSuchShard => f.write_str("no other shard has that number"),
            MoveRefusal::Export(e) => e.fmt(f),
            MoveRefusal::TooManyMoved => write!(f, "this shard has {MAX_ROUTES} moved flows already"),
            MoveRefusal::InboxFull => f.write_str("the target shard's inbox is full"),
        }
    }
}

/// A move that did not happen: why, and the connection (under the handle
/// it has now; `None` only when it could not even be taken back, and was
/// reset) with the app's state for it.
pub struct Refused {
    /// Why.
    pub reason: MoveRefusal,
    /// The connection's handle on this shard now: the same one, or a new
    /// one when it was taken out and put back.
    pub handle: Option<TcpHandle>,
    /// The app's state, given back.
    pub state: AppState,
}

impl std::fmt::Debug for Refused {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Refused").field("reason", &self.reason).field("handle", &self.handle).finish()
    }
}

/// One shard's side of the moves: where moved flows' frames go, the move
/// being imported, the connections imported for the apps.
pub(crate) struct Moves {
    home: ShardHome,
    post: Poster,
    /// Where this shard sends the frames of flows it does not hold.
    routes: HashMap<FlowKey, Route>,
    /// A move taken from the inbox, to import before anything behind it.
    pending: Option<Box<Moving>>,
    /// Connections imported this turn: (local port, handle, app state).
    arrivals: Vec<(u16, TcpHandle, AppState)>,
    /// Moved connections this shard holds, with the move that brought each.
    held: HashMap<FlowKey, (FourTuple, u64)>,
    next_id: u64,
    /// The device's flow map, where it has one (shard `k`'s queue is `k`).
    steering: Option<Arc<FlowSteering>>,
}

fn key(t: &FourTuple) -> Option<FlowKey> {
    match (t.local_addr, t.remote_addr) {
        (IpAddr::V4(l), IpAddr::V4(r)) => Some((l, t.local_port, r, t.remote_port)),
        _ => None,
    }
}

impl Moves {
    pub(crate) fn new(home: ShardHome, post: Poster) -> Moves {
        Moves {
            home,
            post,
            routes: HashMap::new(),
            pending: None,
            arrivals: Vec::new(),
            held: HashMap::new(),
            next_id: 0,
            steering: None,
        }
    }

    pub(crate) fn set_steering(&mut self, steering: Option<Arc<FlowSteering>>) {
        self.steering = steering;
    }

    /// Tell the device that the flow's frames go to `shard` (`None`: to
    /// its home, by the hash), where it can be told.
    fn steer(&self, f: &FlowKey, shard: Option<usize>) {
        let Some(s) = &self.steering else { return };
        let told = match shard {
            Some(k) => s.steer(f.0, f.1, f.2, f.3, k as u32),
            None => s.forget(f.0, f.1, f.2, f.3),
        };
        match told {
            Ok(()) => bump(&self.post.counters().moves_steered),
            // The map is full (or the kernel short of memory): the frames
            // cross between shards instead, as on any other device.
            Err(_) => bump(&self.post.counters().steer_failures),
        }
    }

    fn me(&self) -> usize {
        self.home.shard()
    }

    fn home_of(&self, f: &FlowKey) -> usize {
        self.home.shard_of(f.0, f.1, f.2, f.3)
    }

    /// Who has the flow (`local`, `local_port`, `remote`, `remote_port`),
    /// when a move says otherwise than its hash: this shard (it holds the
    /// connection, moved in), or the shard this one last knew it went to.
    /// `None`: the hash's shard, its home, has it or knows where it is.
    #[inline]
    pub(crate) fn owner(&self, flow: FlowKey) -> Option<usize> {
        if self.routes.is_empty() && self.held.is_empty() {
            return None;
        }
        if self.held.contains_key(&flow) {
            return Some(self.me());
        }
        self.routes.get(&flow).map(|r| r.to)
    }

    /// Whether a move waits to be imported (nothing behind it in the inbox
    /// may pass it).
    pub(crate) fn blocked(&self) -> bool {
        self.pending.is_some()
    }

    /// A message from the inbox other than a frame.
    pub(crate) fn message(&mut self, m: Message) {
        match m {
            Message::Frame(_) => unreachable!("frames are the device's"),
            Message::Move(m) => self.pending = Some(m),
            Message::Route { flow, to, id, old } => {
                self.routes.insert(flow, Route { to, id });
                if old != self.me() {
                    // After every frame this shard sent `old` for the flow.
                    let _ = self.post.post(old, Message::Forget { flow, id });
                }
            }
            Message::Forget { flow, id } => {
                if self.routes.get(&flow).is_some_and(|r| r.id == id) {
                    self.routes.remove(&flow);
                }
            }
        }
    }

    /// Send `conn` to shard `to`; from now on its flow's frames that reach
    /// this shard go there too. The move back when the inbox is full.
    fn send(&mut self, conn: MovedConnection, state: AppState, to: usize) -> Result<(), Box<Moving>> {
        let Some(flow) = key(&conn.four_tuple()) else {
            return Err(Box::new(Moving { conn, state, from: self.me(), id: 0 }));
        };
        self.next_id += 1;
        let id = self.next_id << 16 | self.me() as u64;
        let before = self.routes.insert(flow, Route { to, id });
        match self.post.post(to, Message::Move(Box::new(Moving { conn, state, from: self.me(), id }))) {
            Ok(()) => {
                bump(&self.post.counters().moves_out);
                Ok(())
            }
            Err((Message::Move(m), _)) => {
                match before {
                    Some(r) => self.routes.insert(flow, r),
                    None => self.routes.remove(&flow),
                };
                Err(m)
            }
            Err(_) => unreachable!("post gives back what it was given"),
        }
    }

    /// Import the move waiting, if any; true when there was one.
    fn import(&mut self, stack: &mut Stack) -> bool {
        let Some(m) = self.pending.take() else { return false };
        let Moving { conn, state, from, id } = *m;
        let tuple = conn.four_tuple();
        let flow = key(&tuple).expect("only IPv4 flows are sent");
        match stack.tcp_import(conn) {
            Ok(h) => {
                bump(&self.post.counters().moves_in);
                self.routes.remove(&flow);
                let (me, home) = (self.me(), self.home_of(&flow));
                self.steer(&flow, (home != me).then_some(me));
                if home == me {
                    let _ = self.post.post(from, Message::Forget { flow, id });
                } else if home != from {
                    let _ = self.post.post(home, Message::Route { flow, to: me, id, old: from });
                }
                self.held.insert(flow, (tuple, id));
                self.arrivals.push((tuple.local_port, h, state));
            }
            Err((_, conn)) => {
                // No room here: back where it came from, as a move of its own.
                bump(&self.post.counters().moves_refused);
                if self.send(conn, state, from).is_err() {
                    bump(&self.post.counters().moves_lost);
                }
            }
        }
        true
    }

    /// Forget the moved connections the stack no longer has, and tell
    /// their homes to stop sending their frames here.
    pub(crate) fn sweep(&mut self, stack: &Stack) {
        if self.held.is_empty() {
            return;
        }
        let me = self.me();
        let mut gone = Vec::new();
        self.held.retain(|flow, (tuple, id)| {
            let keep = stack.tcp_holds(tuple);
            if !keep {
                gone.push((*flow, *id));
            }
            keep
        });
        for (flow, id) in gone {
            let home = self.home_of(&flow);
            if home != me {
                self.steer(&flow, None);
                let _ = self.post.post(home, Message::Forget { flow, id });
            }
        }
    }
}

/// An app's handle on its shard's moves (every app of a shard may hold a
/// clone; it is the shard's own, used on the shard's thread only).
#[derive(Clone)]
pub struct Mover {
    moves: Rc<RefCell<Moves>>,
}

impl std::fmt::Debug for Mover {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let m = self.moves.borrow();
        f.debug_struct("Mover").field("shard", &m.me()).field("routes", &m.routes.len()).finish()
    }
}

impl Mover {
    pub(crate) fn new(moves: Moves) -> Mover {
        Mover { moves: Rc::new(RefCell::new(moves)) }
    }

    pub(crate) fn moves(&self) -> &Rc<RefCell<Moves>> {
        &self.moves
    }

    /// This shard's number.
    pub fn shard(&self) -> usize {
        self.moves.borrow().me()
    }

    /// How many shards there are.
    pub fn shards(&self) -> usize {
        self.moves.borrow().post.shards()
    }

    /// Hand connection `h` of `stack` (this shard's) to shard `to`, with
    /// `state`, what the app keeps for it; the app of the same local port
    /// there gets both from [`Mover::take_arrivals`]. On success `h` is no
    /// longer valid here (forget it, and its registration); a refusal gives
    /// the connection back (see [`Refused`]).
    pub fn move_to(&self, stack: &mut Stack, h: TcpHandle, to: usize, state: AppState) -> Result<(), Refused> {
        let mut m = self.moves.borrow_mut();
        let refuse = |m: &Moves, reason, handle, state| {
            bump(&m.post.counters().moves_refused);
            Err(Refused { reason, handle, state })
        };
        if to == m.me() || to >= m.post.shards() {
            return refuse(&m, MoveRefusal::NoSuchShard, Some(h), state);
        }
        if m.routes.len() >= MAX_ROUTES {
            return refuse(&m, MoveRefusal::TooManyMoved, Some(h), state);
        }
        match stack.tcp_connection(h).map(|c| key(&c.four_tuple())) {
            Some(None) => return refuse(&m, MoveRefusal::Export(MoveError::NotMovable), Some(h), state),
            None => return refuse(&m, MoveRefusal::Export(MoveError::NoSuchConnection), Some(h), state),
            Some(Some(_)) => {}
        }
        let conn = match stack.tcp_export(h) {
            Ok(c) => c,
            Err(e) => return refuse(&m, MoveRefusal::Export(e), Some(h), state),
        };
        let flow = key(&conn.four_tuple()).expect("checked: IPv4");
        let held = m.held.remove(&flow);
        match m.send(conn, state, to) {
            Ok(()) => Ok(()),
            Err(back) => {
                let Moving { conn, state, .. } = *back;
                match stack.tcp_import(conn) {
                    Ok(h) => {
                        if let Some(held) = held {
                            m.held.insert(flow, held);
                        }
                        refuse(&m, MoveRefusal::InboxFull, Some(h), state)
                    }
                    Err(_) => {
                        bump(&m.post.counters().moves_lost);
                        refuse(&m, MoveRefusal::InboxFull, None, state)
                    }
                }
            }
        }
    }

    /// Connections moved to this shard for local port `port`, each with
    /// the state its app sent along. Take them in the turn they arrive
    /// (register each for events: registrations do not move); those no app
    /// takes are reset at the next turn and counted in `shard_moves_lost`.
    pub fn take_arrivals(&self, port: u16, mut take: impl FnMut(TcpHandle, AppState)) {
        let mut m = self.moves.borrow_mut();
        if m.arrivals.is_empty() {
            return;
        }
        let mut i = 0;
        while i < m.arrivals.len() {
            if m.arrivals[i].0 == port {
                let (_, h, state) = m.arrivals.swap_remove(i);
                take(h, state);
            } else {
                i += 1;
            }
        }
    }
}

/// The runtime's own app, polled before a shard's apps: imports the move
/// waiting in the inbox, so the apps take it in this turn, and resets the
/// moved connections no app took in the turn before.
pub(crate) struct MoveDesk {
    moves: Rc<RefCell<Moves>>,
    again: bool,
}

impl MoveDesk {
    pub(crate) fn new(mover: &Mover) -> MoveDesk {
        MoveDesk { moves: Rc::clone(mover.moves()), again: false }
    }
}

impl App for MoveDesk {
    fn poll(&mut self, stack: &mut Stack, _now: Instant, _events: &[Event]) {
        let mut m = self.moves.borrow_mut();
        while let Some((_, h, _)) = m.arrivals.pop() {
            stack.tcp_abort(h);
            bump(&m.post.counters().moves_lost);
        }
        self.again = m.import(stack);
    }

    fn next_deadline(&self) -> Option<Instant> {
        // After an import, what followed it in the inbox is read at once.
        self.again.then_some(Instant::ZERO)
    }
}
