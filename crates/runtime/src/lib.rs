//! Runtime. Being written.
