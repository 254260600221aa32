//! Sequences of actions against two whole stacks on an impaired in-memory
//! link: polls, time, application calls, and forged or raw frames. The
//! model and its invariants: `fuzz/models/stack_pair.rs`.
#![no_main]

#[path = "../models/stack_pair.rs"]
mod stack_pair;

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let mut u = arbitrary::Unstructured::new(data);
    let _ = stack_pair::Model::run(&mut u);
});
