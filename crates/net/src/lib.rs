//! Async Rust on ustack: [`TcpListener`], [`TcpStream`] and [`UdpSocket`]
//! shaped like `tokio::net`'s, implementing tokio's `AsyncRead`/`AsyncWrite`
//! (and the `futures-io` traits with the `futures-io` feature), so async
//! programs — hyper among them — run on ustack unchanged but for their
//! socket types.
//!
//! A [`Net`] holds one [`Stack`]; it is `!Send` and lives on one thread, in
//! a current-thread tokio runtime with a [`tokio::task::LocalSet`]. One task
//! drives it ([`Net::drive`]): it sleeps on the device's descriptor
//! (`AsyncFd`) until frames arrive, the stack's next deadline passes, or a
//! socket call left something to send; then it polls the stack and wakes
//! exactly the tasks whose sockets the readiness events name (each socket
//! registers with [`Stack::register`] under a token that indexes its wakers).
//!
//! - Reads and accepts are cancellation-safe: a read or accept that returns
//!   `Pending` has taken nothing.
//! - Dropping a [`TcpStream`] closes it gracefully (FIN after the data
//!   already written); the stack finishes the close in the background.
//! - Writes see backpressure: `poll_write` is `Pending` while the send
//!   buffer is full and wakes when the peer's ACKs make room.
//!
//! ```no_run
//! # async fn echo(net: ustack_net::Net) -> std::io::Result<()> {
//! use tokio::io::{AsyncReadExt, AsyncWriteExt};
//! let listener = ustack_net::TcpListener::bind(&net, 7)?;
//! loop {
//!     let (mut stream, _peer) = listener.accept().await?;
//!     tokio::task::spawn_local(async move {
//!         let mut buf = [0u8; 4096];
//!         while let Ok(n @ 1..) = stream.read(&mut buf).await {
//!             if stream.write_all(&buf[..n]).await.is_err() {
//!                 break;
//!             }
//!         }
//!     });
//! }
//! # }
//! ```

#![deny(missing_docs)]

mod driver;
#[cfg(feature = "hyper")]
mod local_exec;
mod tcp;
mod udp;

pub use driver::MAX_BURST;
#[cfg(feature = "hyper")]
pub use local_exec::LocalExec;
pub use tcp::{TcpListener, TcpStream};
pub use udp::UdpSocket;

use std::cell::{RefCell, RefMut};
use std::rc::Rc;
use std::task::{Context, Waker};
use tokio::sync::Notify;
use ustack_core::{Event, Instant, Interest, Socket, Stack};

/// One stack for async code: a cheap handle ([`Clone`]) shared by the
/// driver task and every socket made on it.
#[derive(Clone)]
pub struct Net {
    shared: Rc<Shared>,
}

struct Shared {
    state: RefCell<State>,
    /// Raised by socket calls that left work for the stack (data to send, a
    /// window to open, a FIN): the driver polls at its next turn.
    kick: Notify,
    /// The stack's time zero: [`epoch`], the same for every `Net`.
    start: tokio::time::Instant,
}

/// Time zero of every `Net`'s stack in the process: stacks joined by the
/// in-memory link stamp frames with their own time, so they must agree on
/// it (with a zero each, a frame from the older stack was not yet due at
/// the younger one, by the milliseconds between their creations).
fn epoch() -> tokio::time::Instant {
    static EPOCH: std::sync::OnceLock<tokio::time::Instant> = std::sync::OnceLock::new();
    *EPOCH.get_or_init(tokio::time::Instant::now)
}

struct State {
    stack: Stack,
    /// Wakers by token: a socket's token is its index here.
    slots: Vec<Slot>,
    free: Vec<usize>,
    events: Vec<Event>,
}

#[derive(Default)]
struct Slot {
    socket: Option<Socket>,
    read: Option<Waker>,
    write: Option<Waker>,
}

/// Which task a socket call would wait for.
#[derive(Clone, Copy)]
enum Dir {
    Read,
    Write,
}

impl Net {
    /// Async sockets on `stack`. Drive it with [`Net::drive`] (or
    /// [`Net::drive_pair`] for two stacks on the in-memory link).
    pub fn new(stack: Stack) -> Net {
        Net {
            shared: Rc::new(Shared {
                state: RefCell::new(State { stack, slots: Vec::new(), free: Vec::new(), events: Vec::new() }),
                kick: Notify::new(),
                start: epoch(),
            }),
        }
    }

    /// Work on the stack itself (counters, configuration, sockets of your
    /// own). Do not hold on across an `.await`.
    pub fn with_stack<R>(&self, f: impl FnOnce(&mut Stack) -> R) -> R {
        f(&mut self.state().stack)
    }

    /// The stack's clock: time since the first `Net` of the process was made.
    pub fn now(&self) -> Instant {
        Instant::from_micros(self.shared.start.elapsed().as_micros() as u64)
    }

    fn state(&self) -> RefMut<'_, State> {
        self.shared.state.borrow_mut()
    }

    /// Tell the driver a socket call left work for the stack.
    fn kick(&self) {
        self.shared.kick.notify_one();
    }

    /// A token for `socket`, registered with `interest`.
    fn register(&self, socket: Socket, interest: Interest) -> std::io::Result<usize> {
        let mut st = self.state();
        let token = match st.free.pop() {
            Some(t) => t,
            None => {
                st.slots.push(Slot::default());
                st.slots.len() - 1
            }
        };
        st.slots[token] = Slot { socket: Some(socket), read: None, write: None };
        if let Err(e) = st.stack.register(socket, token as u64, interest) {
            st.slots[token].socket = None;
            st.free.push(token);
            return Err(std::io::Error::new(std::io::ErrorKind::NotFound, e));
        }
        Ok(token)
    }

    /// Forget a socket's token (its wakers go with it).
    fn release(&self, st: &mut State, token: usize) {
        st.slots[token] = Slot::default();
        st.free.push(token);
    }

    /// Wake the tasks the stack's events name.
    fn dispatch(st: &mut State) {
        let State { stack, slots, events, .. } = st;
        events.clear();
        stack.poll_events(events, usize::MAX);
        for e in events.iter() {
            let Some(slot) = slots.get_mut(e.token as usize) else { continue };
            if slot.socket != Some(e.socket) {
                continue; // the token was released and reused
            }
            let r = e.readiness;
            let failed = r.is_error() || r.is_read_closed();
            if r.is_readable() || failed {
                if let Some(w) = slot.read.take() {
                    w.wake();
                }
            }
            if r.is_writable() || failed {
                if let Some(w) = slot.write.take() {
                    w.wake();
                }
            }
        }
    }
}

impl State {
    /// Remember `cx`'s task as the one waiting on `token` in `dir`.
    fn wait(&mut self, token: usize, dir: Dir, cx: &Context<'_>) {
        let slot = &mut self.slots[token];
        let w = match dir {
            Dir::Read => &mut slot.read,
            Dir::Write => &mut slot.write,
        };
        match w {
            Some(w) if w.will_wake(cx.waker()) => {}
            _ => *w = Some(cx.waker().clone()),
        }
    }
}

fn conn_error(e: Option<ustack_core::tcp::ConnError>) -> std::io::Error {
    use std::io::ErrorKind;
    use ustack_core::tcp::ConnError;
    let kind = match e {
        Some(ConnError::Refused) => ErrorKind::ConnectionRefused,
        Some(ConnError::Reset) => ErrorKind::ConnectionReset,
        Some(ConnError::TimedOut) => ErrorKind::TimedOut,
        Some(ConnError::Aborted) => ErrorKind::ConnectionAborted,
        None => ErrorKind::NotConnected,
    };
    std::io::Error::from(kind)
}
