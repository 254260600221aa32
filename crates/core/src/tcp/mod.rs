//! TCP (RFC 9293 and friends), sans-IO.
//!
//! * [`Connection`] — one connection's engine: state machine, reliable
//!   delivery, options, loss recovery and congestion control. See its module
//!   docs for the order in which the stack calls it.
//! * [`Listener`] — a listening port: SYN handling with backlog accounting
//!   and SYN cookies.
//! * [`Segment`] — the wire-independent segment the stack parses into and
//!   emits from; [`reset_for`] computes the RST for segments that match no
//!   connection.
//! * [`isn()`], [`ephemeral_port`] — RFC 6528 initial sequence numbers and
//!   RFC 6056 port selection, keyed by the caller's secret.
//!
//! Layout: `segment`/`seq` (data types), `state` (the 11 states),
//! `connection/{input,output,timeout}` (the engine), `send_buffer`,
//! `recv_buffer` and `reassembly` (bounded storage), `rtt` (RFC 6298),
//! `recovery` (SACK scoreboard, RFC 6675, RFC 6582), `rack` and `tlp` (RFC
//! 8985 RACK-TLP), `congestion/` (CUBIC, NewReno), `timers`, `isn` (SipHash, ISNs, ports, cookies), `listener`.

mod config;
pub mod congestion;
mod connection;
mod isn;
mod listener;
mod pool;
mod rack;
mod reassembly;
mod recovery;
mod recv_buffer;
mod rtt;
mod segment;
mod send_buffer;
mod seq;
mod state;
mod time_wait;
mod timers;
mod tlp;

pub use config::{BufferSizes, CongestionAlgorithm, TcpConfig};
pub use connection::{
    AcceptError, ConnError, Connection, DropCounters, DropReason, RecvError, SegmentOutcome, SendError, Stats,
};
pub use isn::{
    check_syn_cookie, cookie_options, cookie_timestamp, ephemeral_port, isn, siphash24, syn_cookie, ts_offset,
};
pub use listener::{ListenOutcome, Listener, ListenerStats};
pub use pool::{BufferPool, PoolStats};
pub(crate) use connection::DetachedBuffers;
pub use reassembly::MAX_RANGES;
pub use segment::{reset_for, Flags, FourTuple, Options, SackBlock, Segment};
pub use seq::SeqNumber;
pub use state::State;
pub use time_wait::{TimeWait, TimeWaitOutcome};

// Known gaps, deliberately left out rather than half done:
// * States are an enum with one `match` arm per state (input.rs), not one
//   struct per state as in netstack3.
// * D-SACK (RFC 2883) is sent for duplicates and read by TLP, RACK's
//   reordering window and the undo of a fast recovery whose every
//   retransmission was a duplicate (RFC 3708); a spurious RTO is not undone
//   (no F-RTO or Eifel). PRR (RFC 6937) governs the window in SACK recovery
//   only; a peer without SACK gets RFC 6582's inflation. No limited
//   transmit (RFC 3042). RACK-TLP (RFC 8985)
//   needs SACK; without it, loss detection is NewReno's DupThresh of 3, and
//   RFC 6675's rescue retransmission is used only with RACK off. After an
//   RTO the stack resends go-back-N rather than RACK_mark_losses_on_RTO().
// * ECN (ECE/CWR are carried but ignored), urgent data, TCP Fast Open,
//   pacing and HyStart are not implemented.
// * SYN cookies carry window scale and SACK only when the SYN has
//   timestamps (they ride in our TSval, as in Linux).
// * A SYN in TIME-WAIT draws a challenge ACK while the application holds the
//   connection; once it lets go, the compact `TimeWait` record allows RFC
//   6191 reuse. The record sends no challenge-ACK rate limiting.
// * Text in a SYN received by a listener is dropped (the peer resends it).
