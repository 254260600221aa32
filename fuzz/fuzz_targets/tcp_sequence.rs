//! Sequences of actions against one TCP connection (two `Connection`
//! engines on a wire the input controls): segments delivered, lost,
//! duplicated, reordered or forged; time passing; the application's calls.
//! The model and its invariants: `fuzz/models/conn_pair.rs`.
#![no_main]

#[path = "../models/conn_pair.rs"]
mod conn_pair;

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let mut u = arbitrary::Unstructured::new(data);
    let _ = conn_pair::Model::run(&mut u);
});
