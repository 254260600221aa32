//! Debian's unmodified binaries under `libustack_preload.so`, on a TAP in a
//! namespace, against kernel peers: socat as a TCP and a UDP echo server,
//! curl downloading 64 MiB from kernel nginx, `iperf3 -s` serving kernel
//! `iperf3 -c` (plain, `-R`, `-P 4`). Each test has its own namespace, TAP
//! and subnet, bounds every process, and cleans up on drop.

#[path = "../../capi/tests/support/mod.rs"]
mod support;

use std::time::{Duration, Instant};
use support::{Bg, Netns};

const SECS: fn(u64) -> Duration = Duration::from_secs;

/// A namespace with the preload settings for one TAP.
struct Site {
    ns: Netns,
    tap: String,
    stack_ip: String,
    host_ip: String,
    lib: String,
}

impl Site {
    fn new(tag: &str, idx: u8) -> Site {
        let lib = support::cdylib("ustack-preload", "ustack_preload").to_string_lossy().into_owned();
        let subnet = 10 + idx * 20 + (std::process::id() % 20) as u8;
        Site {
            ns: Netns::new(tag),
            tap: support::short_name("up", idx),
            stack_ip: format!("10.81.{subnet}.2"),
            host_ip: format!("10.81.{subnet}.1"),
            lib,
        }
    }

    /// `argv` under the library (only that program gets LD_PRELOAD).
    fn preloaded(&self, argv: &[&str]) -> Vec<String> {
        let mut v: Vec<String> = vec![
            "env".into(),
            format!("LD_PRELOAD={}", self.lib),
            format!("USTACK_DEVICE=tap:{}", self.tap),
            format!("USTACK_IP={}/24", self.stack_ip),
            format!("USTACK_HOST_IP={}/24", self.host_ip),
        ];
        v.extend(argv.iter().map(|s| s.to_string()));
        v
    }

    fn spawn_preloaded(&self, argv: &[&str]) -> Bg {
        let v = self.preloaded(argv);
        let v: Vec<&str> = v.iter().map(String::as_str).collect();
        self.ns.spawn(&v, &[])
    }

    /// Wait until the program under the library brought its TAP up with
    /// the host address (the stack starts at its first socket).
    fn wait_tap(&self, server: &mut Bg) {
        let deadline = Instant::now() + SECS(20);
        loop {
            let out = self.ns.run(&["ip", "-4", "addr", "show", "dev", &self.tap], SECS(5));
            if out.is_ok_and(|o| o.stdout_str().contains(&format!("inet {}/24", self.host_ip))) {
                // The program listens right after its stack starts.
                std::thread::sleep(Duration::from_millis(300));
                return;
            }
            assert!(Instant::now() < deadline, "TAP {} never came up: {}\n{}", self.tap, server.stdout(), server.stderr());
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

#[test]
fn socat_tcp_echo_under_the_library_serves_a_kernel_client() {
    skip_unless!("socat");
    socat_tcp_echo_serves_a_kernel_client("ptcp", &[], 7);
}

#[test]
fn socat_tcp_echo_with_busy_polling_waits_serves_a_kernel_client() {
    // USTACK_BUSY_POLL: socat's poll(2) keeps looking (taking frames) for
    // 200 µs before it sleeps; a 1 MiB echo must come back whole all the same.
    skip_unless!("socat");
    socat_tcp_echo_serves_a_kernel_client("ptcpb", &["USTACK_BUSY_POLL=200"], 8);
}

/// socat under the library (`env`, `K=V`, given to it) echoes 1 MiB of
/// `seed`'s bytes back to a kernel socat, whole.
fn socat_tcp_echo_serves_a_kernel_client(tag: &str, env: &[&str], seed: u64) {
    let site = Site::new(tag, 0);
    let mut argv = env.to_vec();
    argv.extend(["socat", "-T", "20", "TCP4-LISTEN:7000,reuseaddr", "PIPE"]);
    let mut server = site.spawn_preloaded(&argv);
    site.wait_tap(&mut server);
    let data = support::pseudo_random(1 << 20, seed);
    let client = support::run_bounded(
        site.ns.command(&["socat", "-t", "10", "-T", "20", "-", &format!("TCP:{}:7000", site.stack_ip)]),
        Some(&data),
        SECS(40),
    );
    let out = server.finish(SECS(15));
    assert!(client.ok(), "kernel client: {client}\nserver: {out}");
    assert!(client.stdout == data, "echo differs: {} bytes sent, {} back\nserver: {out}", data.len(), client.stdout.len());
    assert!(out.ok(), "socat under the library: {out}");
}

#[test]
fn socat_udp_echo_under_the_library_serves_a_kernel_client() {
    skip_unless!("socat");
    let site = Site::new("pudp", 1);
    let mut server = site.spawn_preloaded(&["socat", "-T", "5", "UDP4-LISTEN:7001", "PIPE"]);
    site.wait_tap(&mut server);
    let lines = b"one datagram\nanother datagram\n".to_vec();
    // Each line is one datagram each way; -t waits for the echoes.
    let client = support::run_bounded(
        site.ns.command(&["socat", "-t", "3", "-", &format!("UDP:{}:7001", site.stack_ip)]),
        Some(&lines),
        SECS(20),
    );
    let out = server.finish(SECS(15));
    assert!(client.ok(), "kernel client: {client}\nserver: {out}");
    assert_eq!(client.stdout_str(), String::from_utf8_lossy(&lines), "server: {out}");
    assert!(!out.stderr.contains("panicked"), "{out}");
}

#[test]
fn curl_under_the_library_downloads_64_mib_from_kernel_nginx() {
    skip_unless!("curl", "nginx", "sha256sum");
    let site = Site::new("pcurl", 2);
    let dir = support::TempDir::new("pcurl");
    let html = dir.path("html");
    std::fs::create_dir_all(&html).unwrap();
    let body = support::pseudo_random(64 << 20, 9);
    std::fs::write(html.join("blob"), &body).unwrap();
    let d = dir.0.to_string_lossy().into_owned();
    // Debian's nginx on the kernel stack, one process, everything it
    // writes in the temp dir.
    let conf = format!(
        "daemon off;\nmaster_process off;\nerror_log {d}/error.log info;\npid {d}/nginx.pid;\n\
         events {{ worker_connections 64; }}\n\
         http {{\n  access_log {d}/access.log;\n  sendfile on;\n  client_body_temp_path {d}/body;\n  proxy_temp_path {d}/proxy;\n\
         fastcgi_temp_path {d}/fcgi;\n  uwsgi_temp_path {d}/uwsgi;\n  scgi_temp_path {d}/scgi;\n\
         server {{\n    listen 8080;\n    root {d}/html;\n  }}\n}}\n"
    );
    std::fs::write(dir.path("nginx.conf"), conf).unwrap();
    let conf = dir.path("nginx.conf").to_string_lossy().into_owned();
    let nginx = site.ns.spawn(&["timeout", "90", "nginx", "-c", &conf, "-p", &d], &[]);
    let deadline = Instant::now() + SECS(15);
    while !dir.path("nginx.pid").exists() {
        assert!(Instant::now() < deadline, "kernel nginx did not start: {}", nginx.stderr());
        std::thread::sleep(Duration::from_millis(50));
    }
    let got = dir.path("got");
    let got_s = got.to_string_lossy().into_owned();
    let url = format!("http://{}:8080/blob", site.host_ip);
    // The TAP (and so the route) appears when curl opens its socket:
    // a refused first try is retried.
    let argv = site.preloaded(&[
        "curl", "-sS", "--fail", "--max-time", "60", "--retry", "5", "--retry-connrefused", "--retry-delay", "1", "-o",
        &got_s, &url,
    ]);
    let argv: Vec<&str> = argv.iter().map(String::as_str).collect();
    let out = support::run_bounded(site.ns.command(&argv), None, SECS(90));
    let errors = std::fs::read_to_string(dir.path("error.log")).unwrap_or_default();
    assert!(out.ok(), "curl under the library: {out}\nnginx: {}\n{errors}", nginx.stderr());
    let sha256 = |path: &std::path::Path| {
        let mut c = std::process::Command::new("sha256sum");
        c.arg(path);
        let out = support::run_bounded(c, None, SECS(30));
        assert!(out.ok(), "sha256sum: {out}");
        out.stdout_str().split_whitespace().next().unwrap_or_default().to_string()
    };
    let (sent, received) = (sha256(&html.join("blob")), sha256(&got));
    let len = std::fs::metadata(&got).map_or(0, |m| m.len());
    assert_eq!(received, sent, "SHA-256 of the download ({len} of {} bytes) differs", body.len());
    let access = std::fs::read_to_string(dir.path("access.log")).unwrap_or_default();
    assert!(access.contains(&format!("\"GET /blob HTTP/1.1\" 200 {}", body.len())), "nginx's log: {access}");
    eprintln!("curl under the library: 64 MiB from kernel nginx, SHA-256 {received}");
}

fn iperf3_json(text: &str) -> serde_json::Value {
    serde_json::from_str(text).unwrap_or_else(|e| panic!("iperf3 -J output is not JSON ({e}): {text}"))
}

#[test]
fn iperf3_server_under_the_library_serves_kernel_clients() {
    skip_unless!("iperf3");
    let site = Site::new("piperf", 3);
    for extra in [&[][..], &["-R"], &["-P", "4"], &["-u", "-b", "20M"]] {
        let mut server = site.spawn_preloaded(&["iperf3", "-s", "-4", "-1"]);
        site.wait_tap(&mut server);
        let mut argv = vec!["iperf3", "-c", site.stack_ip.as_str(), "-t", "2", "-J", "--connect-timeout", "5000"];
        argv.extend(extra);
        let client = support::run_bounded(site.ns.command(&argv), None, SECS(30));
        let out = server.finish(SECS(15));
        let doc = iperf3_json(&client.stdout_str());
        assert!(doc.get("error").is_none(), "iperf3 -c {extra:?}: {}\nserver: {out}", doc["error"]);
        assert!(client.ok(), "iperf3 -c {extra:?}: {client}\nserver: {out}");
        // TCP reports sum_sent/sum_received; UDP one sum (bytes the client sent).
        let end = &doc["end"];
        let sent = end["sum_sent"]["bytes"].as_u64().or(end["sum"]["bytes"].as_u64()).unwrap_or(0);
        let received = end["sum_received"]["bytes"].as_u64().or(end["sum"]["bytes"].as_u64()).unwrap_or(0);
        assert!(sent > 0 && received > 0, "{extra:?}: sent {sent}, received {received}\nserver: {out}");
        assert!(out.ok(), "iperf3 -s under the library {extra:?}: {out}");
        let streams = doc["end"]["streams"].as_array().map_or(0, Vec::len);
        let want = if extra.contains(&"-P") { 4 } else { 1 };
        assert_eq!(streams, want, "{extra:?}: {streams} streams");
        if extra.contains(&"-u") {
            // The server's own count of what arrived, through its results.
            let lost = end["sum"]["lost_packets"].as_u64();
            let packets = end["sum"]["packets"].as_u64().unwrap_or(0);
            assert!(packets > 0 && lost.is_some(), "{extra:?}: {}", end["sum"]);
        }
    }
}

#[test]
fn iperf3_client_under_the_library_against_a_kernel_server() {
    skip_unless!("iperf3");
    let site = Site::new("picli", 5);
    let _server = site.ns.spawn(&["timeout", "40", "iperf3", "-s"], &[]);
    std::thread::sleep(Duration::from_millis(300));
    for extra in [&[][..], &["-R"]] {
        // The TAP appears with the client's first socket: the control
        // connection's SYN may wait for the link; iperf3 retries nothing,
        // so allow a few tries.
        let mut last = None;
        for _ in 0..3 {
            let mut argv = vec!["iperf3", "-c", site.host_ip.as_str(), "-t", "2", "-J", "--connect-timeout", "5000"];
            argv.extend(extra);
            let argv = site.preloaded(&argv);
            let argv: Vec<&str> = argv.iter().map(String::as_str).collect();
            let out = support::run_bounded(site.ns.command(&argv), None, SECS(30));
            let ok = out.ok();
            last = Some(out);
            if ok {
                break;
            }
            std::thread::sleep(Duration::from_millis(500));
        }
        let out = last.unwrap();
        assert!(out.ok(), "iperf3 -c under the library {extra:?}: {out}");
        let doc = iperf3_json(&out.stdout_str());
        let received = doc["end"]["sum_received"]["bytes"].as_u64().unwrap_or(0);
        assert!(received > 0, "{extra:?}: {}", doc["end"]);
    }
}

/// A veth pair between two namespaces whose kernels stay off the wire (no
/// addresses, no IPv6): programs under the library on `af_packet:` at
/// either end, or a kernel address on one end (`kernel_ip`).
struct Veth {
    a: Netns,
    b: Netns,
    va: String,
    vb: String,
    /// `A.B.C` of the pair's /24.
    net: String,
    lib: String,
}

impl Veth {
    fn new(tag_a: &str, tag_b: &str, idx: u8, second_octet: u8) -> Veth {
        let lib = support::cdylib("ustack-preload", "ustack_preload").to_string_lossy().into_owned();
        let (a, b) = (Netns::new(tag_a), Netns::new(tag_b));
        let (va, vb) = (support::short_name("va", idx), support::short_name("vb", idx));
        a.run(&["ip", "link", "add", &va, "type", "veth", "peer", "name", &vb, "netns", &b.name], SECS(10))
            .unwrap_or_else(|o| panic!("veth: {o}"));
        for (ns, dev) in [(&a, &va), (&b, &vb)] {
            ns.run(&["sysctl", "-qw", &format!("net.ipv6.conf.{dev}.disable_ipv6=1")], SECS(5)).expect("sysctl");
            ns.run(&["ip", "link", "set", dev, "up"], SECS(5)).expect("link up");
        }
        let net = format!("10.{second_octet}.{}", 10 + std::process::id() % 200);
        Veth { a, b, va, vb, net, lib }
    }

    /// The `env` prefix that runs a program under the library on `dev`
    /// with address `{net}.{host}`.
    fn env(&self, dev: &str, host: &str) -> Vec<String> {
        vec![
            "env".to_string(),
            format!("LD_PRELOAD={}", self.lib),
            format!("USTACK_DEVICE=af_packet:{dev}"),
            format!("USTACK_IP={}.{host}/24", self.net),
        ]
    }

    /// Give namespace b's end the kernel address `{net}.{host}`.
    fn kernel_ip(&self, host: &str) {
        self.b.run(&["ip", "addr", "add", &format!("{}.{host}/24", self.net), "dev", &self.vb], SECS(5)).expect("ip addr");
    }
}

#[test]
fn iperf3_on_both_ends_under_the_library_over_a_veth_pair() {
    skip_unless!("iperf3");
    let v = Veth::new("pva", "pvb", 6, 83);
    let (a, b, va, vb, net) = (&v.a, &v.b, &v.va, &v.vb, &v.net);
    let env = |dev: &str, ip: &str| v.env(dev, ip);
    let dst = format!("{net}.2");
    for extra in [&[][..], &["-P", "4"], &["-R"], &["-u", "-b", "50M"]] {
        let mut server_argv = env(va, "2");
        server_argv.extend(["iperf3", "-s", "-4", "-1", "--forceflush"].map(String::from));
        let server_argv: Vec<&str> = server_argv.iter().map(String::as_str).collect();
        let mut server = a.spawn(&server_argv, &[]);
        assert!(server.wait_for("Server listening", SECS(20)), "{extra:?}: {}\n{}", server.stdout(), server.stderr());
        let mut client_argv = env(vb, "3");
        client_argv.extend(["iperf3", "-c", &dst, "-t", "2", "-J", "--connect-timeout", "5000"].map(String::from));
        client_argv.extend(extra.iter().map(|s| s.to_string()));
        let client_argv: Vec<&str> = client_argv.iter().map(String::as_str).collect();
        let client = b.run(&client_argv, SECS(30)).unwrap_or_else(|o| panic!("iperf3 -c {extra:?} under the library: {o}"));
        let out = server.finish(SECS(15));
        assert!(out.ok(), "iperf3 -s under the library {extra:?}: {out}");
        let doc = iperf3_json(&client.stdout_str());
        assert!(doc.get("error").is_none(), "iperf3 -c {extra:?}: {}\nserver: {out}", doc["error"]);
        let end = &doc["end"];
        // TCP reports sum_sent/sum_received; UDP one sum, with the server's
        // count of what arrived.
        let sent = end["sum_sent"]["bytes"].as_u64().or(end["sum"]["bytes"].as_u64()).unwrap_or(0);
        let received = end["sum_received"]["bytes"].as_u64().or(end["sum"]["bytes"].as_u64()).unwrap_or(0);
        assert!(sent > 0 && received > 0, "{extra:?}: {end}");
        let streams = end["streams"].as_array().map_or(0, Vec::len);
        assert_eq!(streams, if extra.contains(&"-P") { 4 } else { 1 }, "{extra:?}: {streams} streams");
        if extra.contains(&"-u") {
            let packets = end["sum"]["packets"].as_u64().unwrap_or(0);
            assert!(packets > 0 && end["sum"]["lost_packets"].as_u64().is_some(), "{extra:?}: {}", end["sum"]);
        }
        eprintln!("iperf3 {extra:?}, both ends under the library: {sent} bytes sent, {received} received");
    }
}

#[test]
fn bad_settings_are_one_line_and_exit_2_and_no_device_passes_through() {
    let lib = support::cdylib("ustack-preload", "ustack_preload").to_string_lossy().into_owned();
    let run = |env: &[(&str, &str)], argv: &[&str]| {
        let mut c = std::process::Command::new(argv[0]);
        c.args(&argv[1..]).env("LD_PRELOAD", &lib).env_remove("USTACK_DEVICE");
        for (k, v) in env {
            c.env(k, v);
        }
        support::run_bounded(c, None, SECS(10))
    };
    for (env, needle) in [
        (&[("USTACK_DEVICE", "tap:x"), ("USTACK_IP", "bad")][..], "USTACK_IP"),
        (&[("USTACK_DEVICE", "nosuch:x"), ("USTACK_IP", "10.0.0.2/24")][..], "USTACK_DEVICE"),
        (&[("USTACK_DEVICE", "tap:x")][..], "USTACK_IP"),
        (&[("USTACK_DEVICE", "tap:x"), ("USTACK_IP", "10.0.0.2/24"), ("USTACK_GATEWAY", "10.9.9.9")][..], "USTACK_GATEWAY"),
        (&[("USTACK_DEVICE", "tap:x"), ("USTACK_IP", "10.0.0.2/24"), ("USTACK_CORES", "4")][..], "USTACK_CORES"),
        (&[("USTACK_DEVICE", "tap:x"), ("USTACK_IP", "10.0.0.2/24"), ("USTACK_FORK", "shard")][..], "USTACK_FORK"),
        (&[("USTACK_DEVICE", "af_packet:x,fanout=3"), ("USTACK_IP", "10.0.0.2/24"), ("USTACK_FORK", "shard")][..], "USTACK_FORK"),
        (&[("USTACK_DEVICE", "tap:x"), ("USTACK_IP", "10.0.0.2/24"), ("USTACK_FORK", "both")][..], "USTACK_FORK"),
        (&[("USTACK_DEVICE", "tap:x"), ("USTACK_IP", "10.0.0.2/24"), ("USTACK_TCP_BUFFER", "1G")][..], "USTACK_TCP_BUFFER"),
        (&[("USTACK_DEVICE", "tap:x"), ("USTACK_IP", "10.0.0.2/24"), ("USTACK_TCP_BUFFER", "lots")][..], "USTACK_TCP_BUFFER"),
        (&[("USTACK_DEVICE", "tap:x"), ("USTACK_IP", "10.0.0.2/24"), ("USTACK_BUSY_POLL", "lots")][..], "USTACK_BUSY_POLL"),
        (&[("USTACK_DEVICE", "tap:x"), ("USTACK_IP", "10.0.0.2/24"), ("USTACK_BUSY_POLL", "200000")][..], "USTACK_BUSY_POLL"),
    ] {
        let out = run(env, &["/bin/echo", "main ran"]);
        assert_eq!(out.status.and_then(|s| s.code()), Some(2), "{env:?}: {out}");
        assert!(out.stdout.is_empty(), "{env:?}: main must not run: {out}");
        let lines: Vec<&str> = out.stderr.lines().collect();
        assert_eq!(lines.len(), 1, "{env:?}: {out}");
        assert!(lines[0].starts_with("ustack: ") && lines[0].contains(needle), "{env:?}: {out}");
    }
    // Without USTACK_DEVICE everything goes to libc: files, pipes, sockets.
    let out = run(&[], &["sh", "-c", "echo passthrough | cat"]);
    assert!(out.ok() && out.stdout_str() == "passthrough\n", "{out}");
}

#[test]
fn one_epoll_set_mixes_a_pipe_a_unix_socket_a_file_and_ustack_sockets() {
    skip_unless!("cc", "socat");
    c_program_against_kernel_echo_servers("pmix", 4, &[], "mixed_epoll", "mixed epoll ok");
}

#[test]
fn one_epoll_set_mixing_kernel_and_ustack_descriptors_while_busy_polling() {
    // USTACK_BUSY_POLL: epoll_wait looks again (kernel members included)
    // for 200 µs before it sleeps; the events must be the same.
    skip_unless!("cc", "socat");
    c_program_against_kernel_echo_servers("pmixb", 4, &["USTACK_BUSY_POLL=200"], "mixed_epoll", "mixed epoll ok");
}

#[test]
fn an_epoll_set_inside_an_epoll_set_wakes_for_ustack_sockets() {
    skip_unless!("cc", "socat");
    c_program_against_kernel_echo_servers("pnest", 6, &[], "nested_epoll", "nested epoll ok");
}

#[test]
fn a_closed_sockets_number_is_reused_as_the_kernel_would_and_never_leaks() {
    // The library keeps closed sockets' eventfds for the next sockets
    // (`capi::spare`): close twice, dup, dup2, epoll and exec must not see it.
    skip_unless!("cc", "socat");
    c_program_against_kernel_echo_servers("pspare", 4, &[], "spare_fds", "spare fds ok");
}

#[test]
fn epoll_level_edge_and_one_shot_over_ustack_sockets_as_on_linux() {
    // Level-triggered members come round in turn when maxevents is smaller
    // than the ready list; edge-triggered and one-shot report once.
    skip_unless!("cc", "socat");
    c_program_against_kernel_echo_servers("psem", 7, &[], "epoll_semantics", "epoll semantics ok");
}

/// Compile `tests/{name}.c` and run it under the library on a TAP site
/// against kernel TCP (7000, a process per connection) and UDP (7001) echo
/// servers; it must print `ok_line`. `env` (`K=V`) goes to the program too.
fn c_program_against_kernel_echo_servers(tag: &str, idx: u8, env: &[&str], name: &str, ok_line: &str) {
    let site = Site::new(tag, idx);
    let tmp = support::TempDir::new(tag);
    let exe = tmp.path(name);
    let src = format!("{}/tests/{name}.c", env!("CARGO_MANIFEST_DIR"));
    let cc = std::process::Command::new("cc").args(["-std=gnu11", "-Wall", "-Werror", "-O1", &src, "-o"]).arg(&exe).output().unwrap();
    assert!(cc.status.success(), "cc: {}", String::from_utf8_lossy(&cc.stderr));
    // Kernel echo servers for the program's ustack sockets.
    let _tcp = site.ns.spawn(&["socat", "-T", "20", "TCP4-LISTEN:7000,reuseaddr,fork", "PIPE"], &[]);
    let _udp = site.ns.spawn(&["socat", "-T", "20", "UDP4-LISTEN:7001", "PIPE"], &[]);
    std::thread::sleep(Duration::from_millis(200));
    let exe = exe.to_string_lossy().into_owned();
    let mut args = env.to_vec();
    args.extend([exe.as_str(), &site.host_ip, "7000", "7001"]);
    let argv = site.preloaded(&args);
    let argv: Vec<&str> = argv.iter().map(String::as_str).collect();
    let out = support::run_bounded(site.ns.command(&argv), None, SECS(40));
    assert!(out.ok() && out.stdout_str().contains(ok_line), "{out}");
}

#[test]
fn nginx_single_process_under_the_library_serves_curl_and_wrk() {
    skip_unless!("nginx", "curl", "wrk");
    let site = Site::new("pngx", 7);
    let spawn = |conf: &str, d: &str| site.spawn_preloaded(&["USTACK_FORK=stay", "timeout", "60", "nginx", "-c", conf, "-p", d]);
    nginx_serves_curl_and_wrk("pngx", 0, &site.ns, &site.stack_ip, spawn, |s| site.wait_tap(s));
}

#[test]
fn nginx_master_and_one_worker_under_the_library_serve_curl_and_wrk() {
    skip_unless!("nginx", "curl", "wrk");
    let site = Site::new("pngw", 8);
    let spawn = |conf: &str, d: &str| site.spawn_preloaded(&["USTACK_FORK=follow", "timeout", "60", "nginx", "-c", conf, "-p", d]);
    nginx_serves_curl_and_wrk("pngw", 1, &site.ns, &site.stack_ip, spawn, |s| site.wait_tap(s));
}

#[test]
fn nginx_master_and_two_workers_each_with_its_own_stack_serve_curl_and_wrk() {
    skip_unless!("nginx", "curl", "wrk");
    // USTACK_FORK=shard: each worker a stack of its own in the veth's
    // af_packet fan-out group; the kernel's curl and wrk in the other
    // namespace.
    let v = Veth::new("pn2a", "pn2b", 13, 85);
    v.kernel_ip("1");
    let spawn = |conf: &str, d: &str| {
        let mut argv = v.env(&v.va, "2");
        argv.extend(["USTACK_FORK=shard", "timeout", "60", "nginx", "-c", conf, "-p", d].map(String::from));
        let argv: Vec<&str> = argv.iter().map(String::as_str).collect();
        v.a.spawn(&argv, &[])
    };
    let stack_ip = format!("{}.2", v.net);
    nginx_serves_curl_and_wrk("pn2", 2, &v.b, &stack_ip, spawn, |_| {});
}

/// nginx under the library, started by `spawn(conf, dir)`: `workers` 0
/// runs one process (`master_process off`), else a master forking that
/// many workers. `ready` waits for the stack to be up; the kernel's curl
/// (64 MiB, byte-equal) and `wrk -c 100` (no error) run in `client`; with
/// several workers, each must have served some of wrk's requests.
fn nginx_serves_curl_and_wrk(
    tag: &str,
    workers: u8,
    client: &Netns,
    stack_ip: &str,
    spawn: impl FnOnce(&str, &str) -> Bg,
    ready: impl FnOnce(&mut Bg),
) {
    let dir = support::TempDir::new(tag);
    let html = dir.path("html");
    std::fs::create_dir_all(&html).unwrap();
    let body = support::pseudo_random(64 << 20, 11);
    std::fs::write(html.join("big"), &body).unwrap();
    std::fs::write(html.join("small"), b"hello from nginx on ustack\n").unwrap();
    let d = dir.0.to_string_lossy().into_owned();
    let master_process = if workers > 0 { "on" } else { "off" };
    let conf = format!(
        "daemon off;\nmaster_process {master_process};\nworker_processes {};\nerror_log {d}/error.log info;\npid {d}/nginx.pid;\n\
         events {{ worker_connections 1024; }}\n\
         http {{\n  log_format withpid '$remote_addr - - [$time_local] \"$request\" $status $body_bytes_sent pid=$pid';\n\
         access_log {d}/access.log withpid;\n  sendfile on;\n  client_body_temp_path {d}/body;\n  proxy_temp_path {d}/proxy;\n\
         fastcgi_temp_path {d}/fcgi;\n  uwsgi_temp_path {d}/uwsgi;\n  scgi_temp_path {d}/scgi;\n\
         server {{\n    listen 8081;\n    root {d}/html;\n  }}\n}}\n",
        workers.max(1)
    );
    std::fs::write(dir.path("nginx.conf"), conf).unwrap();
    let conf = dir.path("nginx.conf").to_string_lossy().into_owned();
    let mut server = spawn(&conf, &d);
    ready(&mut server);
    if workers > 1 {
        // Every worker built its stack when it was forked; give them a moment.
        let deadline = Instant::now() + SECS(20);
        while std::fs::read_to_string(dir.path("error.log")).unwrap_or_default().matches("start worker process ").count() < workers as usize {
            assert!(Instant::now() < deadline, "nginx did not start {workers} workers: {}", server.stderr());
            std::thread::sleep(Duration::from_millis(50));
        }
        std::thread::sleep(Duration::from_millis(500));
    }
    let site_ns = client;
    let got = dir.path("got").to_string_lossy().into_owned();
    let url = format!("http://{stack_ip}:8081/big");
    let curl = site_ns
        .run(&["curl", "-sS", "--fail", "--max-time", "60", "--retry", "5", "--retry-connrefused", "--retry-delay", "1", "-o", &got, &url], SECS(70))
        .unwrap_or_else(|o| panic!("curl from nginx under the library: {o}\nnginx: {}", server.stderr()));
    drop(curl);
    let downloaded = std::fs::read(&got).unwrap();
    assert!(downloaded == body, "64 MiB differs: got {} bytes", downloaded.len());

    let url = format!("http://{stack_ip}:8081/small");
    let wrk = site_ns.run(&["wrk", "-t", "2", "-c", "100", "-d", "2", "--timeout", "5", &url], SECS(30));
    let wrk = wrk.unwrap_or_else(|o| panic!("wrk: {o}\nnginx: {}", server.stderr()));
    let text = wrk.stdout_str();
    let requests: u64 = text
        .lines()
        .find_map(|l| l.trim().split_once(" requests in ").and_then(|(n, _)| n.trim().parse().ok()))
        .unwrap_or_else(|| panic!("no request count in wrk's output: {text}"));
    assert!(requests > 0, "{text}");
    let statuses = |log: &str| {
        let mut tally = std::collections::BTreeMap::new();
        for l in log.lines() {
            *tally.entry(l.split('"').nth(2).and_then(|r| r.split_whitespace().next()).unwrap_or("?").to_string()).or_insert(0) += 1;
        }
        tally
    };
    let access = std::fs::read_to_string(dir.path("access.log")).unwrap_or_default();
    let errors = std::fs::read_to_string(dir.path("error.log")).unwrap_or_default();
    let errors: Vec<&str> = errors.lines().filter(|l| !l.contains("[info]") && !l.contains("[notice]")).collect();
    assert!(
        !text.contains("Socket errors") && !text.contains("Non-2xx"),
        "wrk saw errors: {text}\nnginx's statuses: {:?}\nerror log: {errors:#?}",
        statuses(&access)
    );
    let pids: std::collections::BTreeSet<&str> = access.lines().filter_map(|l| l.rsplit_once("pid=").map(|(_, p)| p)).collect();
    if workers > 1 {
        assert_eq!(pids.len(), workers as usize, "each worker serves a share of the connections: {pids:?}");
    }
    eprintln!("nginx ({workers} workers) under the library: wrk -c 100, {requests} requests in 2 s without errors, served by {pids:?}");
    let log = std::fs::read_to_string(dir.path("error.log")).unwrap_or_default();
    assert!(!log.contains("[alert]") && !log.contains("[crit]") && !log.contains("[emerg]"), "{log}");
}

#[test]
fn redis_server_under_the_library_serves_redis_benchmark() {
    skip_unless!("redis-server", "redis-benchmark");
    let site = Site::new("predis", 9);
    let dir = support::TempDir::new("predis");
    let d = dir.0.to_string_lossy().into_owned();
    let mut server = site.spawn_preloaded(&[
        "timeout", "420", "redis-server", "--bind", "0.0.0.0", "--port", "6379", "--save", "", "--appendonly", "no",
        "--protected-mode", "no", "--dir", &d,
    ]);
    site.wait_tap(&mut server);
    // Every default test, 100,000 requests each, 50 connections.
    let bench = site
        .ns
        .run(&["redis-benchmark", "-h", &site.stack_ip, "-q", "-n", "100000"], SECS(400))
        .unwrap_or_else(|o| panic!("redis-benchmark: {o}\nredis: {}", server.stdout()));
    let text = bench.stdout_str();
    // `-q` ends each test with "NAME: N requests per second, p50=…".
    let done: Vec<&str> = text.split(['\r', '\n']).filter(|l| l.contains("requests per second")).collect();
    for name in ["PING_INLINE", "PING_MBULK", "SET", "GET", "INCR", "LPUSH", "RPUSH", "LPOP", "RPOP", "SADD", "HSET", "SPOP",
        "ZADD", "ZPOPMIN", "LRANGE_100", "LRANGE_600", "MSET"]
    {
        let finished = |l: &&str| l.trim().strip_prefix(name).is_some_and(|r| r.starts_with([':', ' ']));
        assert!(done.iter().any(finished), "{name} did not finish: {text}");
    }
    let check = site.ns.run(&["redis-cli", "-h", &site.stack_ip, "dbsize"], SECS(10));
    if let Ok(out) = check {
        assert!(out.stdout_str().trim().parse::<u64>().is_ok_and(|n| n >= 1), "SET and the lists wrote keys: {}", out.stdout_str());
    }
    assert!(!server.stderr().contains("panicked"), "{}", server.stderr());
    for l in done {
        eprintln!("redis-server under the library: {}", l.trim());
    }
}

#[test]
fn python_threads_share_ustack_sockets() {
    skip_unless!("python3", "socat");
    let site = Site::new("pthr", 10);
    // Kernel echo servers: TCP (one process per connection) and UDP.
    let _tcp = site.ns.spawn(&["socat", "-T", "30", "TCP4-LISTEN:7000,reuseaddr,fork", "PIPE"], &[]);
    let _udp = site.ns.spawn(&["socat", "-T", "30", "UDP4-RECVFROM:7001,fork", "PIPE"], &[]);
    std::thread::sleep(Duration::from_millis(200));
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/threads.py");
    // Debian's interpreter, not a wrapper script in front of it.
    let python = if std::path::Path::new("/usr/bin/python3").exists() { "/usr/bin/python3" } else { "python3" };
    let argv = site.preloaded(&[python, script, &site.host_ip, "7000", "7001"]);
    let argv: Vec<&str> = argv.iter().map(String::as_str).collect();
    let out = support::run_bounded(site.ns.command(&argv), None, SECS(60));
    assert!(out.ok() && out.stdout_str().contains("threads ok"), "{out}");
}

#[test]
fn two_threads_send_and_receive_on_one_socket_at_once() {
    skip_unless!("python3");
    let site = Site::new("pdup", 11);
    let python = if std::path::Path::new("/usr/bin/python3").exists() { "/usr/bin/python3" } else { "python3" };
    // A kernel echo server that never wedges itself (socat's PIPE can, when
    // both of its directions fill at once).
    let echo = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/echo_server.py");
    let mut server = site.ns.spawn(&["timeout", "90", python, echo, "7000"], &[]);
    assert!(server.wait_for("listening", SECS(15)), "echo server: {}", server.stderr());
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/duplex.py");
    let argv = site.preloaded(&[python, script, &site.host_ip, "7000", "16"]);
    let argv: Vec<&str> = argv.iter().map(String::as_str).collect();
    let out = support::run_bounded(site.ns.command(&argv), None, SECS(80));
    assert!(out.ok() && out.stdout_str().contains("duplex ok"), "{out}");
}

#[test]
fn a_new_stack_announces_its_mac_so_a_kernel_peer_drops_the_old_one() {
    skip_unless!("socat");
    // Two programs in turn on one address, each with its own stack and so
    // its own random MAC. The kernel peer learned the first MAC and holds
    // it as REACHABLE for 15-45 s; only the second stack's gratuitous ARP
    // makes it switch at once.
    let v = Veth::new("pga", "pgb", 12, 84);
    v.kernel_ip("1");
    let stack_ip = format!("{}.2", v.net);
    let neigh = || {
        let out = v.b.run(&["ip", "neigh", "show", &stack_ip, "dev", &v.vb], SECS(5)).expect("ip neigh");
        out.stdout_str().split_whitespace().skip_while(|w| *w != "lladdr").nth(1).map(str::to_string)
    };
    // One UDP echo through a program under the library, within `limit`.
    let echo_within = |limit: Duration| {
        let deadline = Instant::now() + limit;
        loop {
            let client = support::run_bounded(
                // One source port: the server's socket is connected to it.
                v.b.command(&["socat", "-t", "1", "-", &format!("UDP:{stack_ip}:7001,sourceport=7002")]),
                Some(b"ping\n"),
                SECS(5),
            );
            if client.ok() && client.stdout_str() == "ping\n" {
                return true;
            }
            if Instant::now() >= deadline {
                return false;
            }
        }
    };
    let mut argv = v.env(&v.va, "2");
    argv.extend(["socat", "-T", "30", "UDP4-LISTEN:7001", "PIPE"].map(String::from));
    let argv: Vec<&str> = argv.iter().map(String::as_str).collect();
    let first = v.a.spawn(&argv, &[]);
    assert!(echo_within(SECS(10)), "no echo from the first program: {}", first.stderr());
    let first_mac = neigh().expect("the kernel learned the first stack's MAC");
    drop(first); // killed: its stack goes without a word
    let second = v.a.spawn(&argv, &[]);
    // Three announcements, 1 s apart (Linux ignores the first if it comes
    // within its 1 s locktime of the last confirmation).
    assert!(echo_within(SECS(6)), "no echo from the second program: the kernel still sends to {first_mac:?} ({:?}): {}", neigh(), second.stderr());
    let second_mac = neigh().expect("an entry for the second stack");
    assert_ne!(first_mac, second_mac, "each stack has its own MAC");
}

#[test]
fn iperf3_server_under_the_library_on_af_xdp_serves_a_kernel_client() {
    skip_unless!("iperf3", "ethtool");
    // USTACK_DEVICE=af_xdp: the library's stack on an AF_XDP socket (generic
    // XDP on a veth), the kernel's iperf3 -c in the other namespace. XDP
    // carries no checksum metadata: the kernel sender completes its
    // checksums (tx off).
    let v = Veth::new("pxa", "pxb", 14, 86);
    v.kernel_ip("1");
    v.b.run(&["ethtool", "-K", &v.vb, "tx", "off"], SECS(5)).expect("ethtool");
    let stack_ip = format!("{}.2", v.net);
    for extra in [&[][..], &["-R"]] {
        let mut argv = v.env(&v.va, "2");
        argv[2] = format!("USTACK_DEVICE=af_xdp:{},mode=skb", v.va);
        argv.extend(["iperf3", "-s", "-4", "-1", "--forceflush"].map(String::from));
        let argv: Vec<&str> = argv.iter().map(String::as_str).collect();
        let mut server = v.a.spawn(&argv, &[]);
        assert!(server.wait_for("Server listening", SECS(20)), "{extra:?}: {}\n{}", server.stdout(), server.stderr());
        let mut cargv = vec!["iperf3", "-c", stack_ip.as_str(), "-t", "2", "-J", "--connect-timeout", "5000"];
        cargv.extend(extra);
        let client = support::run_bounded(v.b.command(&cargv), None, SECS(30));
        let out = server.finish(SECS(15));
        assert!(client.ok(), "iperf3 -c {extra:?} against af_xdp: {client}\nserver: {out}");
        let doc = iperf3_json(&client.stdout_str());
        let received = doc["end"]["sum_received"]["bytes"].as_u64().unwrap_or(0);
        assert!(received > 0, "{extra:?}: {}", doc["end"]);
        assert!(out.ok(), "iperf3 -s on af_xdp under the library {extra:?}: {out}");
        eprintln!("iperf3 -s under the library on af_xdp {extra:?}: {received} bytes received");
    }
}

/// `key=N` from the line of `out` that starts with `prefix`.
fn field(out: &str, prefix: &str, key: &str) -> u64 {
    let line = out.lines().find(|l| l.starts_with(prefix)).unwrap_or_else(|| panic!("no line {prefix:?} in {out:?}"));
    let value = line.split_whitespace().find_map(|w| w.strip_prefix(key).and_then(|w| w.strip_prefix('=')));
    value.and_then(|v| v.parse().ok()).unwrap_or_else(|| panic!("no {key}= in {line:?}"))
}

#[test]
fn so_sndbuf_and_so_rcvbuf_bound_what_a_connection_queues_against_kernel_peers() {
    skip_unless!("python3");
    // af_packet on a veth, kernel peers in the other namespace.
    // tests/socket_buffers.py plays each role; see its header.
    let v = Veth::new("psba", "psbb", 16, 88);
    v.kernel_ip("1");
    let (kernel_ip, stack_ip) = (format!("{}.1", v.net), format!("{}.2", v.net));
    let python = if std::path::Path::new("/usr/bin/python3").exists() { "/usr/bin/python3" } else { "python3" };
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/socket_buffers.py");
    let preloaded = |args: &[&str]| {
        let mut argv = v.env(&v.va, "2");
        argv.extend([python, script].iter().chain(args).map(|s| s.to_string()));
        argv
    };

    // SO_SNDBUF 16 KiB (a 16 KiB send buffer, reported as 32 KiB): a
    // non-blocking sender into a kernel peer that never reads (a window of
    // a few KiB) gets EAGAIN after about 16 KiB; without it, after the
    // stack's 1 MiB.
    let mut sink = v.b.spawn(&["timeout", "60", python, script, "sink", "7100"], &[]);
    assert!(sink.wait_for("listening", SECS(15)), "kernel sink: {}", sink.stderr());
    let argv = preloaded(&["fill", &kernel_ip, "7100"]);
    let argv: Vec<&str> = argv.iter().map(String::as_str).collect();
    let fill = support::run_bounded(v.a.command(&argv), None, SECS(90));
    assert!(fill.ok(), "fill under the library: {fill}");
    let out = fill.stdout_str();
    eprint!("{out}");
    let small = field(&out, "fill sndbuf=16384 ", "accepted");
    let default = field(&out, "fill sndbuf=0 ", "accepted");
    eprintln!("send() took {small} bytes with SO_SNDBUF 16384, {default} without");
    assert!((16384..64 * 1024).contains(&small), "SO_SNDBUF 16384: send() took {small} bytes");
    assert!(default > 512 * 1024, "no SO_SNDBUF: send() took only {default} bytes");
    drop(sink);

    // SO_RCVBUF 8 KiB on a listener that never reads, set before listen
    // (port 7200) or after (7202, as nginx does): its connections' SYN-ACK
    // offers window scale 0 and the kernel sender gets at most 8 KiB
    // acknowledged; without it (7201), scale 5 for the stack's 1 MiB and
    // far more acknowledged.
    let argv = preloaded(&["hold", "7200"]);
    let mut argv: Vec<&str> = argv.iter().map(String::as_str).collect();
    argv.splice(0..0, ["timeout", "60"]);
    let mut hold = v.a.spawn(&argv, &[]);
    assert!(hold.wait_for("listening", SECS(20)), "hold under the library: {}\n{}", hold.stdout(), hold.stderr());
    for (port, wscale) in [(7200, 0), (7201, 5), (7202, 0)] {
        let port = port.to_string();
        let push = support::run_bounded(v.b.command(&[python, script, "push", &stack_ip, &port]), None, SECS(40));
        assert!(push.ok(), "kernel sender to port {port}: {push}\nhold: {}", hold.stderr());
        let out = push.stdout_str();
        let (got_wscale, acked) = (field(&out, "push ", "wscale"), field(&out, "push ", "acked"));
        eprintln!("port {port}: the SYN-ACK offered window scale {got_wscale}; {acked} bytes acknowledged");
        assert_eq!(got_wscale, wscale, "port {port}: window scale");
        if wscale == 0 {
            assert!((1..=8192).contains(&acked), "port {port}, SO_RCVBUF 8192: {acked} bytes acknowledged");
        } else {
            assert!(acked > 512 * 1024, "port {port}, no SO_RCVBUF: only {acked} bytes acknowledged");
        }
    }
    // An accepted connection reports its listener's SO_RCVBUF.
    assert!(hold.wait_for("accepted port=7202", SECS(5)), "{}", hold.stdout());
    let held = hold.stdout();
    assert_eq!(field(&held, "accepted port=7200 ", "rcvbuf"), 16384, "{held}");
    assert_eq!(field(&held, "accepted port=7201 ", "rcvbuf"), 2 << 20, "{held}");
    assert_eq!(field(&held, "accepted port=7202 ", "rcvbuf"), 16384, "{held}");
}
