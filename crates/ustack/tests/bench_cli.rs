//! `ustack bench --json` prints one object with the keys tools read; every
//! figure is measured, so the test checks shape and sanity, never speed.

use std::process::Command;

fn bench_json(workload: &str) -> serde_json::Value {
    let out = Command::new(env!("CARGO_BIN_EXE_ustack"))
        .args(["bench", workload, "--seconds", "0.2", "--json"])
        .output()
        .expect("run ustack bench");
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    serde_json::from_slice(&out.stdout).expect("one JSON object")
}

#[test]
fn bench_json_has_both_sides_and_the_ratio() {
    for workload in ["rr", "crr", "stream"] {
        let v = bench_json(workload);
        assert_eq!(v["workload"], workload);
        for side in ["ustack", "linux"] {
            let s = &v[side];
            assert!(s["count"].as_u64().unwrap() > 0, "{workload}/{side}: {v}");
            assert!(s["per_second"].as_f64().unwrap() > 0.0);
            assert!(s["cpu_ns_per_op"].as_f64().is_some());
            if workload != "stream" {
                assert!(s["p50_ns"].as_u64().unwrap() <= s["p99_ns"].as_u64().unwrap());
            }
        }
        let ratio = v["ratio"].as_f64().unwrap();
        let expect = v["ustack"]["per_second"].as_f64().unwrap() / v["linux"]["per_second"].as_f64().unwrap();
        assert!((ratio - expect).abs() / expect < 0.01, "ratio is ustack over linux: {v}");
    }
}

#[test]
fn bench_rejects_bad_flags_in_one_line() {
    let out = Command::new(env!("CARGO_BIN_EXE_ustack")).args(["bench", "rr", "--mtu", "10"]).output().unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(err.lines().count(), 1, "{err}");
    assert!(err.contains("--mtu"), "{err}");
}
