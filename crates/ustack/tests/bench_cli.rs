//! `ustack bench --json` prints one object with the keys tools read; every
//! figure is measured, so the test checks shape and sanity, never speed.

use std::process::Command;

fn bench_json(workload: &str) -> serde_json::Value {
    bench_json_with(&[workload])
}

fn bench_json_with(args: &[&str]) -> serde_json::Value {
    let out = Command::new(env!("CARGO_BIN_EXE_ustack"))
        .arg("bench")
        .args(args)
        .args(["--seconds", "0.2", "--json"])
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
        assert_eq!((&v["path"], &v["linux_path"]), (&"memory".into(), &"loopback".into()), "{v}");
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

/// `--ip6` in memory: ustack's pair over IPv6 beside Linux on `::1`. A smoke
/// test: both sides finish and report; no speed asserted.
#[test]
fn bench_ip6_json_has_both_sides_over_ipv6() {
    for workload in ["rr", "crr", "stream"] {
        let v = bench_json_with(&[workload, "--ip6"]);
        assert_eq!((&v["workload"], &v["ip_version"]), (&workload.into(), &6.into()), "{v}");
        for side in ["ustack", "linux"] {
            assert!(v[side]["count"].as_u64().unwrap() > 0, "{workload}/{side}: {v}");
            assert!(v[side]["per_second"].as_f64().unwrap() > 0.0, "{workload}/{side}: {v}");
        }
        assert!(v["ratio"].as_f64().unwrap() > 0.0, "{v}");
    }
    assert_eq!(bench_json("rr")["ip_version"], 4);
}

/// Positive figures of one stack's idle run, with `asked` connections or
/// (Linux, under a low descriptor limit) fewer.
fn check_idle_figures(name: &str, s: &serde_json::Value, asked: u64, v: &serde_json::Value) {
    let n = s["connections"].as_u64().unwrap_or_else(|| panic!("{name}: no connections: {v}"));
    assert!(n > 0 && n <= asked, "{name}: {n} connections: {v}");
    assert!(s["open_seconds"].as_f64().unwrap() > 0.0, "{name}: {v}");
    let (rr, zero) = (s["rr_ns"].as_u64().unwrap(), s["rr_ns_zero"].as_u64().unwrap());
    assert!(rr > 0 && zero > 0, "{name}: {v}");
    assert!(s["rr_samples"].as_u64().unwrap() > 0 && s["rr_samples_zero"].as_u64().unwrap() > 0, "{name}: {v}");
    let ratio = s["rr_ratio"].as_f64().unwrap();
    assert!((ratio - rr as f64 / zero as f64).abs() < 0.001 * ratio, "{name}: rr_ratio is rr_ns over rr_ns_zero: {v}");
    assert!(s["bytes_per_connection"].as_f64().is_some(), "{name}: {v}");
    assert!(!s["memory_method"].as_str().unwrap().is_empty(), "{name}: {v}");
}

#[test]
fn bench_idle_json_reports_ustack_and_the_baselines() {
    let v = bench_json_with(&["idle", "--connections", "2000"]);
    assert_eq!(v["workload"], "idle");
    assert_eq!(v["connections"], 2000, "ustack opens exactly the connections asked for: {v}");
    check_idle_figures("ustack", &v, 2000, &v);
    // Both ends of 2,000 connections live in this process: they cost
    // something, and the whole process holds more than that.
    let per = v["bytes_per_connection"].as_f64().unwrap();
    assert!(per > 0.0, "{v}");
    assert!(v["peak_rss_bytes"].as_u64().unwrap() as f64 > per * 4000.0, "{v}");
    assert_eq!(v["smoltcp"]["connections"], 2000, "{v}");
    check_idle_figures("smoltcp", &v["smoltcp"], 2000, &v);
    assert!(v["smoltcp"]["bytes_per_connection"].as_f64().unwrap() > 0.0, "{v}");
    // Linux: the kernel's memory figure is a system-wide delta, which other
    // activity can push anywhere; only its presence is checked.
    check_idle_figures("linux", &v["linux"], 2000, &v);
}

#[test]
fn bench_idle_without_baselines_says_so() {
    let v = bench_json_with(&["idle", "--connections", "100", "--no-baselines"]);
    assert_eq!(v["connections"], 100, "{v}");
    assert!(v["smoltcp"]["skipped"].is_string() && v["linux"]["skipped"].is_string(), "{v}");
}

#[test]
fn bench_idle_rejects_zero_connections_in_one_line() {
    let out =
        Command::new(env!("CARGO_BIN_EXE_ustack")).args(["bench", "idle", "--connections", "0"]).output().unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(err.lines().count(), 1, "{err}");
    assert!(err.contains("--connections"), "{err}");
}

#[test]
fn bench_rejects_bad_flags_in_one_line() {
    let out = Command::new(env!("CARGO_BIN_EXE_ustack")).args(["bench", "rr", "--mtu", "10"]).output().unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(err.lines().count(), 1, "{err}");
    assert!(err.contains("--mtu"), "{err}");
}

/// `rsvg-convert` (Debian librsvg2-bin), if installed.
fn rsvg_convert() -> Option<&'static str> {
    let found = Command::new("rsvg-convert").arg("--version").output().map(|o| o.status.success()).unwrap_or(false);
    found.then_some("rsvg-convert")
}

/// Render `svg` to PNG with librsvg: it must succeed and give a PNG.
fn renders_to_png(svg: &std::path::Path) {
    let Some(rsvg) = rsvg_convert() else {
        eprintln!("SKIPPED rendering: rsvg-convert (librsvg2-bin) not installed");
        return;
    };
    let png = svg.with_extension("png");
    let out = Command::new(rsvg).arg(svg).arg("-o").arg(&png).output().expect("run rsvg-convert");
    assert!(out.status.success(), "rsvg-convert {}: {}", svg.display(), String::from_utf8_lossy(&out.stderr));
    let bytes = std::fs::read(&png).expect("the PNG");
    assert!(bytes.len() > 1000 && bytes.starts_with(b"\x89PNG\r\n\x1a\n"), "{} is not a PNG", png.display());
}

fn temp_dir(tag: &str) -> std::path::PathBuf {
    let dir = std::env::temp_dir().join(format!("ustack-bench-{tag}-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

#[test]
fn bench_stream_sweeps_print_both_stacks_and_plot() {
    let dir = temp_dir("sweep");
    let svg = dir.join("write-size.svg");
    let out = Command::new(env!("CARGO_BIN_EXE_ustack"))
        .args(["bench", "stream", "--sweep", "write-size", "--seconds", "0.1", "--plot"])
        .arg(&svg)
        .output()
        .expect("run ustack bench");
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    // A header, a column line, then one row per write size: 64 B to 8 KiB.
    let text = String::from_utf8_lossy(&out.stdout);
    let rows: Vec<Vec<&str>> = text.lines().skip(2).map(|l| l.split_whitespace().collect()).collect();
    let sizes: Vec<&str> = rows.iter().map(|r| r[0]).collect();
    assert_eq!(sizes, ["64", "128", "256", "512", "1024", "2048", "4096", "8192"], "{text}");
    for r in &rows {
        let (u, no_tso, l): (f64, f64, f64) = (r[1].parse().unwrap(), r[2].parse().unwrap(), r[3].parse().unwrap());
        assert!(u > 0.0 && no_tso > 0.0 && l > 0.0 && r[4].ends_with('x'), "{text}");
    }
    let svg_text = std::fs::read_to_string(&svg).expect("--plot wrote the SVG");
    assert!(svg_text.contains("<svg") && svg_text.contains("ustack") && svg_text.contains("Linux"), "{svg_text}");
    renders_to_png(&svg);

    // The send-buffer sweep, as JSON: 2 KiB to 1 MiB, both stacks at each.
    let v = bench_json_with(&["stream", "--sweep", "send-buffer"]);
    assert_eq!(v["sweep"], "send_buffer");
    let points = v["points"].as_array().unwrap();
    let xs: Vec<u64> = points.iter().map(|p| p["x"].as_u64().unwrap()).collect();
    assert_eq!(xs, (11..=20).map(|s| 1u64 << s).collect::<Vec<_>>(), "{v}");
    for p in points {
        assert_eq!(p["send_buffer"], p["x"], "{v}");
        assert!(p["ustack"]["per_second"].as_f64().unwrap() > 0.0 && p["linux"]["per_second"].as_f64().unwrap() > 0.0);
    }
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn bench_plot_draws_one_run_as_bars() {
    let dir = temp_dir("bars");
    let svg = dir.join("rr.svg");
    let out = Command::new(env!("CARGO_BIN_EXE_ustack"))
        .args(["bench", "rr", "--seconds", "0.1", "--plot"])
        .arg(&svg)
        .output()
        .expect("run ustack bench");
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    renders_to_png(&svg);
    let _ = std::fs::remove_dir_all(&dir);
}
