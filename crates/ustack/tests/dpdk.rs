//! `ustack up --device dpdk:…` on DPDK's `net_tap`, against the kernel.
//!
//! With the `dpdk` feature (scripts/test.sh runs this file with
//! `--features dpdk`): ustack starts in a namespace of this test with
//! `dpdk:net_tap0,iface=NAME`; DPDK's `net_tap` makes the TAP `NAME` in
//! that namespace, the test gives its kernel side 10.89.1.1/24, and the
//! kernel pings the stack (10.89.1.2) and fetches a file from its HTTP
//! server with curl, SHA-256 equal. Needs root (skips with a printed
//! reason otherwise); bounded in packets and time, the namespace and the
//! process removed by guards also on failure.
//!
//! Without the feature: a `dpdk:` spec is one error line saying how to
//! rebuild (no root needed).

#[macro_use]
#[cfg_attr(not(feature = "dpdk"), allow(unused_macros))]
mod support;

use std::time::Duration;

const SECS: fn(u64) -> Duration = Duration::from_secs;

#[cfg(not(feature = "dpdk"))]
#[test]
fn without_the_feature_a_dpdk_device_says_how_to_rebuild() {
    let mut cmd = std::process::Command::new(support::ustack_bin());
    cmd.args(["up", "--device", "dpdk:net_tap0,iface=dtap0", "--ip", "10.89.0.2/24"]);
    let out = support::run_bounded(cmd, None, SECS(10));
    support::assert_one_error_line(&out, &["built without DPDK", "--features dpdk"]);
}

#[cfg(feature = "dpdk")]
mod with_dpdk {
    use super::*;
    use support::tcp::{counter, curl_get, sha256_file, write_random_file, Bg, TempDir};
    use support::{assert_no_panic, assert_one_error_line, parse_counters, Netns};

    #[test]
    fn kernel_pings_and_curls_ustack_on_net_tap() {
        skip_unless!("ping", "curl");
        let ns = Netns::new("dpdk");
        // No kernel IPv6 chatter on the TAP: the test counts what it sends.
        ns.exec_ok(&["sysctl", "-qw", "net.ipv6.conf.default.disable_ipv6=1"], SECS(5));
        let tap = support::short_name("dt", 1);
        let dir = TempDir::new("dpdk");
        std::fs::create_dir_all(dir.path("www")).unwrap();
        let file = dir.path("www").join("file.bin");
        write_random_file(&file, 8 << 20, 0xd9d4);

        let device = format!("dpdk:net_tap0,iface={tap}");
        let argv = [
            support::ustack_bin(),
            "up",
            "--device",
            &device,
            "--ip",
            "10.89.1.2/24",
            "--http-root",
            &dir.file("www"),
        ];
        let mut b = Bg::spawn(&ns, &argv);
        b.wait_ready("serving HTTP", SECS(30), |e| e.contains("HTTP on port 80"));
        // net_tap made the TAP in ustack's namespace, this test's.
        ns.exec_ok(&["ip", "addr", "add", "10.89.1.1/24", "dev", &tap], SECS(5));
        ns.exec_ok(&["ip", "link", "set", &tap, "up"], SECS(5));

        let ping = ns.exec(&["ping", "-c", "5", "-i", "0.2", "-W", "2", "10.89.1.2"], SECS(20));
        assert!(ping.success(), "ping: {ping}\nustack stderr:\n{}", b.stderr_now());
        assert!(ping.stdout_str().contains("5 received"), "ping: {ping}");

        let got = dir.file("got.bin");
        let url = "http://10.89.1.2/file.bin";
        let out = curl_get(&ns, url, &got, SECS(60));
        assert!(out.success(), "curl {url}: {out}\nustack stderr:\n{}", b.stderr_now());
        assert_eq!(sha256_file(std::path::Path::new(&got)), sha256_file(&file), "SHA-256 of the fetched file differs");

        let (status, stdout, stderr) = b.stop_with_status("INT", SECS(10));
        assert!(status.is_some_and(|s| s.success()), "ustack exit {status:?}; stderr:\n{stderr}");
        assert_no_panic(&stderr);
        let c = parse_counters(&stdout).unwrap_or_else(|| panic!("no counters:\n{stdout}\n{stderr}"));
        assert!(counter(&c, "icmp_echo_replies_sent") >= 5, "counters:\n{stdout}");
        for drop in ["drop_tcp_checksum", "drop_ipv4_checksum", "drop_icmp_checksum"] {
            assert_eq!(counter(&c, drop), 0, "{drop}; counters:\n{stdout}");
        }
        // Port closed, EAL ended: the TAP is gone with the process.
        let gone = ns.exec(&["ip", "link", "show", &tap], SECS(5));
        assert!(!gone.success(), "TAP {tap} outlived ustack: {gone}");
    }

    #[test]
    fn a_port_the_eal_does_not_have_is_one_line() {
        skip_unless!();
        // A PCI address with no device behind it: the EAL starts, finds no
        // port by that name, and ustack says so in one line.
        let mut cmd = std::process::Command::new(support::ustack_bin());
        cmd.args(["up", "--device", "dpdk:0000:ff:1f.7", "--ip", "10.89.2.2/24"]);
        let out = support::run_bounded(cmd, None, SECS(30));
        assert_one_error_line(&out, &["DPDK has no port 0000:ff:1f.7"]);
    }

    #[test]
    fn bad_eal_arguments_end_in_one_error_line() {
        skip_unless!();
        // The EAL prints its usage; ustack's own line comes last.
        let mut cmd = std::process::Command::new(support::ustack_bin());
        cmd.args(["up", "--device", "dpdk:net_tap0,eal=--no-such-eal-flag", "--ip", "10.89.3.2/24"]);
        let out = support::run_bounded(cmd, None, SECS(30));
        assert_eq!(out.code(), Some(1), "{out}");
        let errors: Vec<&str> = out.stderr.lines().filter(|l| l.starts_with("ustack: error: ")).collect();
        assert_eq!(errors.len(), 1, "{out}");
        assert!(errors[0].contains("DPDK's EAL did not start") && errors[0].contains("--no-such-eal-flag"), "{out}");
        assert_eq!(out.stderr.lines().last(), Some(errors[0]), "{out}");
        assert_no_panic(&out.stderr);
    }
}
