//! `--device KIND:NAME[,options]` as a person meets it: malformed specs and
//! unknown options get one line saying what is wrong, and a device that goes
//! away under a running stack ends it with one line and a non-zero exit.

#[macro_use]
mod support;

use std::process::Command;
use std::time::Duration;
use support::{Netns, UpOpts, Ustack};

/// `ustack ARGS` (no namespace, nothing opened): its exit code and stderr.
fn ustack(args: &[&str]) -> (Option<i32>, String) {
    let out = Command::new(support::ustack_bin()).args(args).output().expect("run ustack");
    (out.status.code(), String::from_utf8_lossy(&out.stderr).into_owned())
}

#[test]
fn malformed_specs_say_what_is_wrong() {
    for (spec, says) in [
        ("nosuch:x", "unknown kind 'nosuch'"),
        ("ust0", "expected KIND:NAME"),
        ("tap:", "no name after 'tap:'"),
        ("tap:a,x=1,x=2", "given twice"),
    ] {
        let (code, err) = ustack(&["up", "--device", spec, "--ip", "10.9.9.2/24"]);
        assert_eq!(code, Some(1), "{spec}: stderr:\n{err}");
        assert_eq!(err.trim().lines().count(), 1, "one line:\n{err}");
        assert!(err.contains(says), "{spec}: expected {says:?} in:\n{err}");
        assert!(!err.contains("panicked"), "{err}");
    }
}

#[test]
fn unknown_options_are_refused_before_anything_opens() {
    // The kind parses; its opener refuses the option it does not know, before
    // creating the TAP (so this runs without privileges too).
    let (code, err) = ustack(&["up", "--device", "tap:ustspec0,bogus=1", "--ip", "10.9.9.2/24"]);
    assert_eq!(code, Some(1), "{err}");
    assert_eq!(err.trim().lines().count(), 1, "one line:\n{err}");
    assert!(err.contains("tap has no option bogus"), "{err}");
    // The control socket name follows the spec too.
    let (code, err) = ustack(&["stats", "--device", "nosuch:x"]);
    assert_eq!(code, Some(1), "{err}");
    assert!(err.contains("unknown kind"), "{err}");
}

#[test]
fn a_deleted_interface_ends_the_stack_with_one_line() {
    skip_unless!();
    let ns = Netns::new("devdel");
    let opts = UpOpts { tap: support::short_name("ud", 1), subnet: 61, pcap: None, udp_echo: vec![] };
    let tap = opts.tap.clone();
    let u = Ustack::start(&ns, opts);
    ns.exec_ok(&["ip", "link", "del", &tap], Duration::from_secs(5));
    let stopped = u.wait_exit(Duration::from_secs(5));
    assert!(!stopped.status.success(), "exit status {}; stderr:\n{}", stopped.status, stopped.stderr);
    let last = stopped.stderr.trim().lines().last().unwrap_or_default().to_string();
    assert!(last.contains(&format!("interface {tap} went away")), "last line: {last}\nstderr:\n{}", stopped.stderr);
    assert!(!stopped.stderr.contains("panicked"), "{}", stopped.stderr);
}
