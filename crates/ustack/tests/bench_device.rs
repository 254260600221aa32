//! `ustack bench --device tap:NAME`: ustack on a TAP against the kernel's TCP,
//! and Linux on a veth pair, in one run. Run inside a namespace this test
//! makes; the bench makes its own private namespaces under it. Checks the
//! JSON's shape and that every figure is positive, never a speed.

#[macro_use]
mod support;

use std::time::Duration;
use support::{ustack_bin, Netns};

/// Generous: each side measures 0.3 s, plus namespace and link setup.
const LIMIT: Duration = Duration::from_secs(60);

fn bench_json(ns: &Netns, workload: &str, tap: &str) -> serde_json::Value {
    let device = format!("tap:{tap}");
    let argv = [ustack_bin(), "bench", workload, "--device", &device, "--seconds", "0.3", "--json"];
    let out = ns.exec(&argv, LIMIT);
    assert!(out.success(), "{workload}: {out}");
    serde_json::from_slice(&out.stdout).unwrap_or_else(|e| panic!("{workload}: not one JSON object ({e}): {out}"))
}

#[test]
fn bench_on_a_tap_reports_ustack_and_linux_over_the_device_path() {
    skip_unless!("ethtool");
    let ns = Netns::new("bdev");
    for (i, workload) in ["rr", "crr", "stream"].into_iter().enumerate() {
        let tap = support::short_name("ubd", i as u8);
        let v = bench_json(&ns, workload, &tap);
        assert_eq!(v["workload"], workload, "{v}");
        assert_eq!(v["path"], "tap", "{v}");
        assert_eq!(v["linux_path"], "veth", "{v}");
        assert_eq!(v["device"], format!("tap:{tap}"), "{v}");
        assert!(v["mtu"].as_u64().unwrap() >= 576, "the TAP's MTU: {v}");
        // What else the run saw: the client's retransmissions on each path,
        // and ustack's and its TAP's counters (it took in every segment).
        for path in ["ustack", "linux"] {
            assert!(v["client_retransmits"][path].is_u64(), "{v}");
        }
        assert!(v["ustack_counters"]["tcp_rx"].as_u64().unwrap() > 0, "{v}");
        assert!(v["device_counters"]["rx_frames"].as_u64().unwrap() > 0, "{v}");
        for side in ["ustack", "linux"] {
            let s = &v[side];
            assert!(s["count"].as_u64().unwrap() > 0, "{workload}/{side}: {v}");
            assert!(s["per_second"].as_f64().unwrap() > 0.0, "{workload}/{side}: {v}");
            assert!(s["cpu_ns_per_op"].as_f64().unwrap() > 0.0, "{workload}/{side}: {v}");
            if workload == "stream" {
                assert!(s["bits_per_second"].as_f64().unwrap() > 0.0, "{v}");
            } else {
                let (p50, p99, p999) =
                    (s["p50_ns"].as_u64().unwrap(), s["p99_ns"].as_u64().unwrap(), s["p999_ns"].as_u64().unwrap());
                assert!(0 < p50 && p50 <= p99 && p99 <= p999, "{workload}/{side}: {v}");
            }
        }
        let ratio = v["ratio"].as_f64().unwrap();
        let expect = v["ustack"]["per_second"].as_f64().unwrap() / v["linux"]["per_second"].as_f64().unwrap();
        assert!((ratio - expect).abs() / expect < 0.01, "ratio is ustack over linux: {v}");
    }
    // The bench's namespaces vanish with it: nothing is left in ours.
    let links = ns.exec_ok(&["ip", "-o", "link"], Duration::from_secs(5)).stdout_str();
    assert_eq!(links.lines().count(), 1, "only loopback remains: {links}");
}

/// `--ip6` on a TAP: ustack at fd00:0:0:5001::2 against the kernel client
/// at ::1 over the TAP, Linux on a veth pair with the same addresses. A
/// smoke test: both sides finish and report, over IPv6; no speed asserted.
#[test]
fn bench_ip6_on_a_tap_reports_both_sides_over_ipv6() {
    skip_unless!("ethtool");
    let ns = Netns::new("bdev6");
    for (i, workload) in ["rr", "crr", "stream"].into_iter().enumerate() {
        let device = format!("tap:{}", support::short_name("ub6", i as u8));
        let argv = [ustack_bin(), "bench", workload, "--ip6", "--device", &device, "--seconds", "0.3", "--json"];
        let out = ns.exec(&argv, LIMIT);
        assert!(out.success(), "{workload} --ip6: {out}");
        let v: serde_json::Value = serde_json::from_slice(&out.stdout)
            .unwrap_or_else(|e| panic!("{workload}: not one JSON object ({e}): {out}"));
        assert_eq!((&v["path"], &v["linux_path"], &v["ip_version"]), (&"tap".into(), &"veth".into(), &6.into()), "{v}");
        for side in ["ustack", "linux"] {
            assert!(v[side]["count"].as_u64().unwrap() > 0, "{workload}/{side}: {v}");
            assert!(v[side]["per_second"].as_f64().unwrap() > 0.0, "{workload}/{side}: {v}");
        }
        // ustack's traffic was IPv6: its TCP segments all came over it.
        let c = &v["ustack_counters"];
        let (tcp, ip6) = (c["tcp_rx"].as_u64().unwrap(), c["ipv6_rx"].as_u64().unwrap_or(0));
        assert!(tcp > 0 && ip6 >= tcp, "{workload}: tcp_rx {tcp}, ipv6_rx {ip6}: {v}");
        assert_eq!(c["ipv4_rx"].as_u64().unwrap_or(0), 0, "{workload}: IPv4 on an IPv6 run: {v}");
    }
}

/// `--cores 1,2 --device tap:NAME`: ustack as one, then two shards on a
/// multi-queue TAP (a queue each), beside Linux with one, then two
/// `SO_REUSEPORT` servers on a veth pair. Both sides report at each count;
/// each shard carried flows of its own (rr's and stream's clients pick
/// ports that hash one to each shard: exactly one connection each) and no
/// frame crossed between shards (the TAP steers by ustack's hash). No
/// speed asserted.
#[test]
fn bench_cores_on_a_multi_queue_tap_reports_both_sides_and_both_shards() {
    skip_unless!("ethtool");
    let ns = Netns::new("bdcor");
    for (i, workload) in ["crr", "rr", "stream"].into_iter().enumerate() {
        let device = format!("tap:{}", support::short_name("ubc", i as u8));
        let argv =
            [ustack_bin(), "bench", workload, "--cores", "1,2", "--device", &device, "--seconds", "0.3", "--json"];
        let out = ns.exec(&argv, LIMIT);
        assert!(out.success(), "{workload}: {out}");
        let v: serde_json::Value = serde_json::from_slice(&out.stdout)
            .unwrap_or_else(|e| panic!("{workload}: not one JSON object ({e}): {out}"));
        assert_eq!((&v["workload"], &v["path"], &v["linux_path"]), (&workload.into(), &"tap".into(), &"veth".into()));
        assert_eq!(v["device"], device.as_str(), "{v}");
        let points = v["points"].as_array().expect("points");
        assert_eq!(points.iter().map(|p| p["cores"].as_u64()).collect::<Vec<_>>(), [Some(1), Some(2)], "{v}");
        for p in points {
            for key in ["ustack", "linux", "ratio", "ustack_scaling", "linux_scaling"] {
                assert!(p[key].as_f64().is_some_and(|x| x > 0.0), "{workload}: {key} in {p}");
            }
            for key in ["ustack_cpu_ns_per_op", "linux_cpu_ns_per_op"] {
                assert!(p[key].as_f64().is_some_and(|x| x > 0.0), "{workload}: {key} in {p}");
            }
            let shards = p["ustack_shards"].as_array().expect("ustack_shards");
            assert_eq!(shards.len() as u64, p["cores"].as_u64().unwrap(), "{workload}: a share per shard: {p}");
            for (k, s) in shards.iter().enumerate() {
                let connections = s["connections"].as_u64().unwrap();
                match workload {
                    "crr" => assert!(connections > 0, "{workload}: shard {k} carried no connection: {p}"),
                    _ => assert_eq!(connections, 1, "{workload}: shard {k}: one client's connection: {p}"),
                }
                assert!(s["segments"].as_u64().unwrap() > 0, "{workload}: shard {k}: {p}");
                assert_eq!(s["handoffs"].as_u64(), Some(0), "{workload}: shard {k}: frames crossed: {p}");
            }
        }
        assert_eq!(points[0]["ustack_scaling"].as_f64(), Some(1.0), "{v}");
    }
    let links = ns.exec_ok(&["ip", "-o", "link"], Duration::from_secs(5)).stdout_str();
    assert_eq!(links.lines().count(), 1, "only loopback remains: {links}");
}

#[test]
fn bench_device_table_names_both_paths() {
    skip_unless!("ethtool");
    let ns = Netns::new("bdtab");
    let device = format!("tap:{}", support::short_name("ubt", 0));
    let argv = [ustack_bin(), "bench", "rr", "--device", &device, "--seconds", "0.2"];
    let out = ns.exec(&argv, LIMIT);
    assert!(out.success(), "{out}");
    let table = out.stdout_str();
    assert!(table.contains(&format!("ustack on {device}")) && table.contains("veth"), "{table}");
    assert!(table.contains("ratio ustack/linux"), "{table}");
    assert!(table.contains("kernel client retransmitted"), "{table}");
}

#[test]
fn bench_device_rejects_bad_flags_in_one_line() {
    // No root needed: each is refused before any namespace or device is made.
    for (args, needle) in [
        (&["rr", "--device", "eth0"][..], "--device"),
        (&["idle", "--device", "tap:x"][..], "--device"),
        (&["rr", "--device", "tap:x", "--mtu", "9000"][..], "--mtu"),
        (&["rr", "--device", "tap:x", "--ip", "10.0.0.2/24", "--host-ip", "10.1.0.1/24"][..], "--host-ip"),
        (&["rr", "--ip6", "--cores", "1"][..], "--ip6"),
        (&["rr", "--ip6", "--device", "af_packet:x"][..], "--ip6"),
        (&["idle", "--ip6"][..], "--ip6"),
        (&["rr", "--cores", "1,2", "--device", "af_packet:x"][..], "--cores"),
        (&["crr", "--cores", "1,2", "--device", "tap:x", "--plot", "x.svg"][..], "--cores"),
    ] {
        let out = std::process::Command::new(ustack_bin()).arg("bench").args(args).output().unwrap();
        assert!(!out.status.success(), "{args:?}");
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(err.lines().count(), 1, "{args:?}: {err}");
        assert!(err.contains(needle), "{args:?}: {err}");
    }
    // clap's own refusal (with its usage lines) names the missing flag.
    let out = std::process::Command::new(ustack_bin()).args(["bench", "rr", "--ip", "10.0.0.2/24"]).output().unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("--device"));
}

/// Link devices: the bench makes a veth pair and runs each end as its own
/// process, ustack↔ustack beside Linux↔Linux, then the kernel's client
/// against ustack's server: two JSON objects, one a line.
#[test]
fn bench_on_link_devices_runs_process_to_process() {
    skip_unless!("ethtool");
    let ns = Netns::new("bp2p");
    for (workload, device) in [("rr", "af_xdp:x"), ("crr", "af_xdp:x"), ("stream", "af_packet:x")] {
        let argv = [ustack_bin(), "bench", workload, "--device", device, "--seconds", "0.3", "--json"];
        let out = ns.exec(&argv, LIMIT);
        assert!(out.success(), "{workload} on {device}: {out}");
        let reports: Vec<serde_json::Value> = out
            .stdout_str()
            .lines()
            .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("not JSON ({e}): {l}\n{out}")))
            .collect();
        assert_eq!(reports.len(), 2, "process to process, then kernel client: {out}");
        assert_eq!(reports[0]["processes"], 2, "{}", reports[0]);
        let kind = device.split(':').next().unwrap();
        for v in &reports {
            assert_eq!(v["workload"], workload, "{v}");
            assert_eq!(v["path"], kind, "{v}");
            for side in ["ustack", "linux"] {
                assert!(v[side]["count"].as_u64().unwrap() > 0, "{workload}/{side}: {v}");
                assert!(v[side]["cpu_ns_per_op"].as_f64().unwrap() > 0.0, "{workload}/{side}: {v}");
            }
        }
    }
    let links = ns.exec_ok(&["ip", "-o", "link"], Duration::from_secs(5)).stdout_str();
    assert!(!links.contains("upc0") && !links.contains("ups0"), "the bench's veth ends vanish with it: {links}");
}
