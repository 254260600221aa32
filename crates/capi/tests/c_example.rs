//! `examples/echo.c`, compiled against `include/ustack.h` and
//! libustack_capi.so, talks to Linux over a TAP inside a namespace: it is a
//! TCP client of a kernel echo server, a UDP client of a kernel echo
//! server, and an epoll-driven TCP echo server for a kernel client
//! (256 KiB, compared byte for byte).

mod support;

use std::process::Command;
use std::time::Duration;

const SECS: fn(u64) -> Duration = Duration::from_secs;

#[test]
fn c_example_talks_to_kernel_peers_over_tap() {
    skip_unless!("cc", "socat");
    let lib = support::cdylib("ustack-capi", "ustack_capi");
    let dir = env!("CARGO_MANIFEST_DIR");
    let tmp = support::TempDir::new("cexample");
    let exe = tmp.path("echo");
    let out = Command::new("cc")
        .args(["-std=gnu11", "-Wall", "-Wextra", "-Werror", "-O1"])
        .arg(format!("-I{dir}/include"))
        .arg(format!("{dir}/examples/echo.c"))
        .arg("-o")
        .arg(&exe)
        .arg(&lib)
        .arg(format!("-Wl,-rpath,{}", lib.parent().unwrap().display()))
        .output()
        .expect("run cc");
    assert!(out.status.success(), "cc: {}", String::from_utf8_lossy(&out.stderr));

    let ns = support::Netns::new("cex");
    let tap = support::short_name("uc", 0);
    let subnet = 100 + (std::process::id() % 100) as u8;
    let (stack_ip, host_ip) = (format!("10.79.{subnet}.2"), format!("10.79.{subnet}.1"));
    // Kernel echo servers (one connection, one peer each, bounded by -T).
    let tcp_echo = ns.spawn(&["socat", "-T", "20", "TCP-LISTEN:7000,reuseaddr", "PIPE"], &[]);
    let udp_echo = ns.spawn(&["socat", "-T", "20", "UDP-LISTEN:7001", "PIPE"], &[]);
    std::thread::sleep(Duration::from_millis(200));

    let exe_s = exe.to_string_lossy().into_owned();
    let mut prog = ns.spawn(
        &[&exe_s, &tap, &format!("{stack_ip}/24"), &format!("{host_ip}/24"), &host_ip, "7000", "7001", "7002"],
        &[],
    );
    assert!(prog.wait_for("listening on 7002", SECS(30)), "echo did not reach its server step:\n{}\n{}", prog.stdout(), prog.stderr());
    let data = support::pseudo_random(256 * 1024, 14);
    let client = support::run_bounded(
        ns.command(&["socat", "-t", "10", "-T", "20", "-", &format!("TCP:{stack_ip}:7002")]),
        Some(&data),
        SECS(40),
    );
    let out = prog.finish(SECS(20));
    assert!(client.ok(), "kernel client: {client}\nprogram: {out}");
    assert!(client.stdout == data, "echo differs: sent {} bytes, got {}\nprogram: {out}", data.len(), client.stdout.len());
    assert!(out.ok(), "program: {out}");
    let text = out.stdout_str();
    for line in ["tcp client ok", "udp ok", &format!("tcp server ok: echoed {} bytes", data.len())] {
        assert!(text.contains(line), "missing '{line}': {out}");
    }
    drop((tcp_echo, udp_echo));
}

#[test]
fn start_refuses_bad_settings_in_one_line() {
    // No privileges needed: the settings are checked before anything opens.
    for (dev, ip, needle) in [
        ("nosuch:x", "10.0.0.2/24", "unknown kind"),
        ("tap:x", "10.0.0.2", "A.B.C.D/N"),
        ("tap:x", "10.0.0.2/24", ""),
    ] {
        let cfg = ustack_capi::StartConfig { device: dev.into(), ip: ip.into(), gateway: Some("10.9.9.9".into()), host_ip: None, follow_fork: false, shard_fork: false, tcp_buffer: None, busy_poll: None };
        let err = cfg.check().unwrap_err();
        assert!(!err.contains('\n'), "{err}");
        assert!(err.contains(if needle.is_empty() { "outside" } else { needle }), "{dev} {ip}: {err}");
    }
}
