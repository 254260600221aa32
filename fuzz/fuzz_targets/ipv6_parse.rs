//! Every IPv6-family parser of the wire crate over arbitrary bytes: the IPv6
//! header and its extension header walk, each extension header alone, IPv6
//! options, ICMPv6 (errors, echo), neighbour discovery and MLDv2. None may
//! panic or loop, and whatever parses must emit back to bytes that parse to
//! the same value. The checks are the `ipv6_malformed` tests' own, shared by
//! path so the two cannot drift apart.
#![no_main]

use libfuzzer_sys::fuzz_target;

#[path = "../../crates/wire/tests/common/ipv6_check.rs"]
mod ipv6_check;

fuzz_target!(|data: &[u8]| ipv6_check::check_ipv6_bytes(data));
