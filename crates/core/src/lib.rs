//! The ustack protocol engine, sans-IO.
//!
//! Nothing in this crate makes a system call, reads a clock or draws a random
//! number by itself: time comes in as [`time::Instant`] arguments, randomness
//! as a seed at construction, and frames through the [`phy`] traits.

pub mod phy;
pub mod tcp;
pub mod time;
