//! The runtime's apps against each other: two stacks on the in-memory link,
//! turned in virtual time (time jumps to the next frame or timer), every
//! loop bounded by a step count.

use std::io::Write;
use std::net::{Ipv4Addr, SocketAddrV4};
use std::sync::Arc;
use ustack_core::tcp::RecvError;
use ustack_core::{Duration, Event, Instant, Ipv4Cidr, Stack, StackConfig, TcpHandle};
use ustack_device::{LinkConfig, MemoryLink, MemoryPort};
use ustack_runtime::apps::{
    FairnessConfig, HttpClient, HttpClientError, HttpServer, HttpServerConfig, Site, TcpDiscard, TcpEcho,
    DEFAULT_MAX_CONNECTIONS,
};
use ustack_runtime::{poll_apps, App};
use ustack_wire::EthernetAddress;

const A_IP: Ipv4Addr = Ipv4Addr::new(10, 0, 0, 1);
const B_IP: Ipv4Addr = Ipv4Addr::new(10, 0, 0, 2);
const MAX_STEPS: u64 = 5_000_000;

/// Client stack A and server stack B.
struct Pair {
    a: Stack,
    pa: MemoryPort,
    b: Stack,
    pb: MemoryPort,
    now: Instant,
    events_a: Vec<Event>,
    events_b: Vec<Event>,
}

impl Pair {
    fn new(link: LinkConfig) -> Pair {
        let (pa, pb) = MemoryLink::pair(link, 7);
        let cfg = |mac: u8, ip| StackConfig::new(EthernetAddress([2, 0, 0, 0, 0, mac]), Ipv4Cidr::new(ip, 24).unwrap());
        Pair {
            a: Stack::new(cfg(1, A_IP), 1),
            pa,
            b: Stack::new(cfg(2, B_IP), 2),
            pb,
            now: Instant::ZERO,
            events_a: Vec::new(),
            events_b: Vec::new(),
        }
    }

    /// One turn of both stacks with their apps, then time jumps to the next event.
    fn step(&mut self, a_apps: &mut [&mut dyn App], b_apps: &mut [&mut dyn App]) {
        let now = self.now;
        self.a.poll(now, &mut self.pa, 64);
        poll_apps(&mut self.a, now, a_apps, &mut self.events_a);
        self.a.poll(now, &mut self.pa, 0);
        self.b.poll(now, &mut self.pb, 64);
        poll_apps(&mut self.b, now, b_apps, &mut self.events_b);
        self.b.poll(now, &mut self.pb, 0);
        let next = [self.pa.next_delivery(), self.pb.next_delivery(), self.a.poll_timeout(), self.b.poll_timeout()]
            .into_iter()
            .flatten()
            .min();
        if let Some(t) = next {
            if t > self.now {
                self.now = t;
            }
        }
    }

    /// Run a client app on A against servers on B until it finishes.
    fn run_client(&mut self, client: &mut dyn App, servers: &mut [&mut dyn App]) {
        for _ in 0..MAX_STEPS {
            if client.finished() {
                return;
            }
            self.step(&mut [&mut *client], servers);
        }
        panic!("client did not finish in {MAX_STEPS} steps");
    }

    fn connect(&mut self, port: u16, servers: &mut [&mut dyn App]) -> TcpHandle {
        let h = self.a.tcp_connect(self.now, SocketAddrV4::new(B_IP, port)).unwrap();
        for _ in 0..1000 {
            self.step(&mut [], servers);
            if self.a.tcp_connection(h).is_some_and(|c| c.state() == ustack_core::tcp::State::Established) {
                return h;
            }
        }
        panic!("no connection to port {port}");
    }
}

/// A keyed pseudorandom byte at `offset`, so every byte can be checked.
fn byte_at(offset: u64) -> u8 {
    let mut z = offset.wrapping_mul(0x9E37_79B9_7F4A_7C15);
    z ^= z >> 29;
    (z.wrapping_mul(0xBF58_476D_1CE4_E5B9) >> 56) as u8
}

fn pattern(len: usize) -> Vec<u8> {
    (0..len as u64).map(byte_at).collect()
}

#[test]
fn echo_one_mib_comes_back_intact_and_the_server_closes_after_fin() {
    for link in
        [LinkConfig::default(), LinkConfig { loss: 0.01, delay: Duration::from_millis(1), ..LinkConfig::default() }]
    {
        let mut p = Pair::new(link);
        let mut echo = TcpEcho::listen(&mut p.b, 7, DEFAULT_MAX_CONNECTIONS).unwrap();
        let h = p.connect(7, &mut [&mut echo]);
        let total = 1u64 << 20;
        let (mut sent, mut received, mut eof) = (0u64, 0u64, false);
        let mut chunk = vec![0u8; 32 * 1024];
        let mut buf = vec![0u8; 32 * 1024];
        let mut steps = 0u64;
        while !eof {
            while sent < total {
                let n = (total - sent).min(chunk.len() as u64) as usize;
                for (i, b) in chunk[..n].iter_mut().enumerate() {
                    *b = byte_at(sent + i as u64);
                }
                match p.a.tcp_send(h, &chunk[..n]) {
                    Ok(k) => sent += k as u64,
                    Err(_) => break,
                }
                if sent == total {
                    p.a.tcp_shutdown(h).unwrap();
                }
            }
            loop {
                match p.a.tcp_recv(h, &mut buf) {
                    Ok(0) => {
                        eof = true;
                        break;
                    }
                    Ok(n) => {
                        for (i, &b) in buf[..n].iter().enumerate() {
                            assert_eq!(b, byte_at(received + i as u64), "echoed byte {} wrong", received + i as u64);
                        }
                        received += n as u64;
                    }
                    Err(RecvError::WouldBlock) => break,
                    Err(e) => panic!("echo connection failed: {e:?}"),
                }
            }
            p.step(&mut [], &mut [&mut echo]);
            steps += 1;
            assert!(steps < MAX_STEPS, "echo stalled at {received} of {total}");
        }
        assert_eq!(received, total);
        assert_eq!(echo.echoed, total);
        assert_eq!(echo.connections(), 0, "the server let go of the connection after the FIN");
        p.a.tcp_close(h);
    }
}

#[test]
fn echo_holds_back_when_the_peer_does_not_read() {
    let mut p = Pair::new(LinkConfig::default());
    let mut echo = TcpEcho::listen(&mut p.b, 7, DEFAULT_MAX_CONNECTIONS).unwrap();
    let h = p.connect(7, &mut [&mut echo]);
    let chunk = vec![0x5au8; 64 * 1024];
    let mut sent = 0u64;
    // The client never reads: its receive window closes, the echo's send
    // buffer fills, the echo stops reading, and then our sends stop fitting.
    for _ in 0..20_000 {
        if let Ok(n) = p.a.tcp_send(h, &chunk) {
            sent += n as u64;
        }
        p.step(&mut [], &mut [&mut echo]);
    }
    assert!(sent < 4 << 20, "flow control must stop the sender; sent {sent}");
    assert!(echo.echoed < sent, "the echo is held back by the unread replies");
    let mut buf = vec![0u8; 64 * 1024];
    let mut got = 0u64;
    for _ in 0..100_000 {
        while let Ok(n) = p.a.tcp_recv(h, &mut buf) {
            assert!(buf[..n].iter().all(|&b| b == 0x5a));
            got += n as u64;
        }
        if got == sent {
            break;
        }
        p.step(&mut [], &mut [&mut echo]);
    }
    assert_eq!(got, sent, "once the client reads, everything comes back");
}

#[test]
fn discard_counts_every_byte_of_several_connections() {
    let mut p = Pair::new(LinkConfig::default());
    let mut discard = TcpDiscard::listen(&mut p.b, 9, DEFAULT_MAX_CONNECTIONS).unwrap();
    let handles: Vec<_> = (0..3).map(|_| p.connect(9, &mut [&mut discard])).collect();
    let per = 300_000u64;
    let mut sent = [0u64; 3];
    let chunk = vec![1u8; 16 * 1024];
    for _ in 0..100_000 {
        for (i, &h) in handles.iter().enumerate() {
            if sent[i] < per {
                let n = (per - sent[i]).min(chunk.len() as u64) as usize;
                if let Ok(k) = p.a.tcp_send(h, &chunk[..n]) {
                    sent[i] += k as u64;
                    if sent[i] == per {
                        p.a.tcp_shutdown(h).unwrap();
                    }
                }
            }
        }
        p.step(&mut [], &mut [&mut discard]);
        if discard.discarded == 3 * per && discard.connections() == 0 {
            break;
        }
    }
    assert_eq!(discard.discarded, 3 * per);
    assert_eq!(discard.connections(), 0, "each connection closed at its end of stream");
}

/// A web root in a temporary directory, removed on drop.
struct TempRoot(std::path::PathBuf);

impl TempRoot {
    fn new(tag: &str) -> TempRoot {
        let dir = std::env::temp_dir().join(format!("ustack-apps-{tag}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(dir.join("sub")).unwrap();
        std::fs::write(dir.join("index.html"), b"<h1>hello</h1>\n").unwrap();
        std::fs::write(dir.join("sub/a.txt"), b"alpha\n").unwrap();
        std::fs::write(dir.join("sub/b.txt"), b"beta\n").unwrap();
        TempRoot(dir)
    }
}

impl Drop for TempRoot {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn server(p: &mut Pair, root: &TempRoot) -> HttpServer {
    HttpServer::listen(&mut p.b, 80, Site::dir(&root.0).unwrap(), HttpServerConfig::default()).unwrap()
}

fn get(p: &mut Pair, server: &mut HttpServer, paths: &[&str]) -> (Result<(), HttpClientError>, Vec<u8>, Vec<u16>, u32) {
    let paths = paths.iter().map(|s| s.to_string()).collect();
    let mut client = HttpClient::new(SocketAddrV4::new(B_IP, 80), paths, Vec::new());
    p.run_client(&mut client, &mut [server]);
    let statuses = client.responses.iter().map(|r| r.status).collect();
    let connections = client.connections;
    let (outcome, body) = client.into_result();
    (outcome.unwrap(), body, statuses, connections)
}

#[test]
fn http_pipelined_gets_over_one_connection_in_order() {
    let root = TempRoot::new("pipe");
    let mut p = Pair::new(LinkConfig::default());
    let mut srv = server(&mut p, &root);
    let (r, body, statuses, conns) =
        get(&mut p, &mut srv, &["/", "/sub/a.txt", "/sub/b.txt", "/sub/a.txt", "/index.html"]);
    r.unwrap();
    assert_eq!(body, b"<h1>hello</h1>\nalpha\nbeta\nalpha\n<h1>hello</h1>\n");
    assert_eq!(statuses, [200; 5]);
    assert_eq!(conns, 1, "pipelined on one connection, kept alive across requests");
    assert_eq!(srv.stats.requests, 5);
}

#[test]
fn http_missing_file_is_404_and_the_client_names_the_url() {
    let root = TempRoot::new("404");
    let mut p = Pair::new(LinkConfig::default());
    let mut srv = server(&mut p, &root);
    let (r, body, _, _) = get(&mut p, &mut srv, &["/sub/a.txt", "/nope.txt", "/index.html"]);
    let e = r.unwrap_err();
    assert!(matches!(&e, HttpClientError::Status { status: 404, .. }), "{e}");
    assert_eq!(e.to_string(), "http://10.0.0.2/nope.txt: HTTP 404 Not Found");
    assert_eq!(body, b"alpha\n", "bodies before the failure were written");
}

#[test]
fn http_traversal_is_refused() {
    let root = TempRoot::new("trav");
    std::fs::write(root.0.with_extension("secret"), b"secret").unwrap();
    let mut p = Pair::new(LinkConfig::default());
    let mut srv = server(&mut p, &root);
    for path in ["/../ustack-apps-trav.secret", "/sub/../../x", "/%2e%2e/x"] {
        let (r, _, _, _) = get(&mut p, &mut srv, &[path]);
        assert!(matches!(r, Err(HttpClientError::Status { status: 400, .. })), "{path}: {r:?}");
    }
    let _ = std::fs::remove_file(root.0.with_extension("secret"));
}

/// Send raw bytes to the server and read its whole answer until it closes
/// (or until `until` bytes came back, when it keeps the connection).
fn raw(p: &mut Pair, server: &mut HttpServer, request: &[u8], shutdown: bool) -> String {
    let h = p.connect(80, &mut [&mut *server]);
    assert_eq!(p.a.tcp_send(h, request), Ok(request.len()));
    if shutdown {
        p.a.tcp_shutdown(h).unwrap();
    }
    let mut out = Vec::new();
    let mut buf = [0u8; 4096];
    for _ in 0..100_000 {
        match p.a.tcp_recv(h, &mut buf) {
            Ok(0) => break,
            Ok(n) => out.extend_from_slice(&buf[..n]),
            Err(RecvError::WouldBlock) => p.step(&mut [], &mut [&mut *server]),
            Err(e) => panic!("raw connection failed: {e:?}"),
        }
    }
    p.a.tcp_close(h);
    String::from_utf8(out).unwrap()
}

#[test]
fn http_head_405_400_431_and_http10() {
    let root = TempRoot::new("raw");
    let mut p = Pair::new(LinkConfig::default());
    let mut srv = server(&mut p, &root);

    let head = raw(&mut p, &mut srv, b"HEAD /sub/a.txt HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n", false);
    assert!(head.starts_with("HTTP/1.1 200 OK\r\n"), "{head}");
    assert!(head.contains("Content-Length: 6\r\n") && head.contains("Content-Type: text/plain"), "{head}");
    assert!(head.ends_with("\r\n\r\n"), "HEAD has no body: {head:?}");

    let post = raw(&mut p, &mut srv, b"POST / HTTP/1.1\r\nHost: x\r\n\r\n", false);
    assert!(post.starts_with("HTTP/1.1 405 Method Not Allowed\r\n") && post.contains("Allow: GET, HEAD\r\n"), "{post}");

    let bad = raw(&mut p, &mut srv, b"GET / HTTP/1.1\r\nHost x\r\n\r\n", false);
    assert!(bad.starts_with("HTTP/1.1 400 Bad Request\r\n") && bad.contains("Connection: close"), "{bad}");

    let mut huge = b"GET / HTTP/1.1\r\nHost: x\r\nX-Pad: ".to_vec();
    huge.extend(std::iter::repeat_n(b'a', 9000));
    huge.extend_from_slice(b"\r\n\r\n");
    let big = raw(&mut p, &mut srv, &huge, false);
    assert!(big.starts_with("HTTP/1.1 431 "), "{big}");

    // HTTP/1.0 closes after one response unless asked to keep the connection.
    let old = raw(&mut p, &mut srv, b"GET /sub/b.txt HTTP/1.0\r\n\r\n", false);
    assert!(old.contains("Connection: close\r\n") && old.ends_with("\r\n\r\nbeta\n"), "{old}");

    // Keep-alive: two requests, the connection stays until the client ends it.
    let two = raw(
        &mut p,
        &mut srv,
        b"GET /sub/a.txt HTTP/1.1\r\nHost: x\r\n\r\nGET /sub/b.txt HTTP/1.1\r\nHost: x\r\n\r\n",
        true,
    );
    assert_eq!(two.matches("HTTP/1.1 200 OK").count(), 2, "{two}");
    assert!(two.contains("Connection: keep-alive") && two.ends_with("beta\n"), "{two}");
    assert_eq!(srv.stats.failed, 0);
    assert_eq!(srv.connections(), 0, "every connection was let go");
}

#[test]
fn http_streams_an_8_mib_file() {
    let root = TempRoot::new("big");
    let data = pattern(8 << 20);
    std::fs::write(root.0.join("big.bin"), &data).unwrap();
    let mut p = Pair::new(LinkConfig::default());
    let mut srv = server(&mut p, &root);
    let (r, body, _, _) = get(&mut p, &mut srv, &["/big.bin", "/sub/a.txt"]);
    r.unwrap();
    assert_eq!(body.len(), data.len() + 6);
    assert!(body[..data.len()] == data[..], "the file arrived intact");
    assert_eq!(&body[data.len()..], b"alpha\n");
}

#[test]
fn http_memory_site_serves_objects() {
    let mut p = Pair::new(LinkConfig::default());
    let mut site = Site::memory();
    site.insert("/obj", Arc::from(pattern(100_000)));
    let mut srv = HttpServer::listen(&mut p.b, 80, site, HttpServerConfig::default()).unwrap();
    let (r, body, _, _) = get(&mut p, &mut srv, &["/obj", "/obj"]);
    r.unwrap();
    assert_eq!(body.len(), 200_000);
    assert!(body[..100_000] == pattern(100_000)[..] && body[100_000..] == pattern(100_000)[..]);
}

/// A server that answers each connection with fixed bytes and closes.
struct Canned {
    reply: &'static [u8],
    conns: Vec<TcpHandle>,
}

impl App for Canned {
    fn poll(&mut self, stack: &mut Stack, _now: Instant, _events: &[Event]) {
        while let Some(h) = stack.tcp_accept(80) {
            stack.tcp_send(h, self.reply).unwrap();
            stack.tcp_shutdown(h).unwrap();
            self.conns.push(h);
        }
    }
}

fn against_canned(reply: &'static [u8]) -> (Result<(), HttpClientError>, Vec<u8>) {
    let mut p = Pair::new(LinkConfig::default());
    p.b.tcp_listen(80, 4).unwrap();
    let mut canned = Canned { reply, conns: Vec::new() };
    let mut client = HttpClient::new(SocketAddrV4::new(B_IP, 80), vec!["/x".into()], Vec::new());
    p.run_client(&mut client, &mut [&mut canned]);
    let (outcome, body) = client.into_result();
    (outcome.unwrap(), body)
}

#[test]
fn client_reads_chunked_and_close_delimited_bodies() {
    let (r, body) = against_canned(
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5;ext=1\r\nhello\r\n6\r\n world\r\n0\r\nX-T: 1\r\n\r\n",
    );
    r.unwrap();
    assert_eq!(body, b"hello world");
    let (r, body) = against_canned(b"HTTP/1.0 200 OK\r\n\r\nuntil the end");
    r.unwrap();
    assert_eq!(body, b"until the end");
}

#[test]
fn client_fails_cleanly_on_malformed_and_short_responses() {
    let (r, _) = against_canned(b"HELLO THERE\r\n\r\n");
    let e = r.unwrap_err();
    assert!(matches!(e, HttpClientError::Malformed { .. }), "{e}");
    assert!(e.to_string().starts_with("http://10.0.0.2/x: malformed response"), "{e}");

    let (r, _) = against_canned(b"HTTP/1.1 200 OK\r\nContent-Length: 12x\r\n\r\n");
    assert!(matches!(r, Err(HttpClientError::Malformed { .. })), "{r:?}");

    let (r, _) = against_canned(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n");
    assert!(matches!(r, Err(HttpClientError::Malformed { .. })), "{r:?}");

    let (r, body) = against_canned(b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\nonly this");
    assert!(matches!(r, Err(HttpClientError::EarlyClose { body_bytes: 9, .. })), "{r:?}");
    assert_eq!(body, b"only this");
}

#[test]
fn client_reports_a_refused_connection() {
    let mut p = Pair::new(LinkConfig::default());
    let mut client = HttpClient::new(SocketAddrV4::new(B_IP, 81), vec!["/".into()], std::io::sink());
    p.run_client(&mut client, &mut []);
    let (r, mut sink) = client.into_result();
    sink.flush().unwrap();
    let e = r.unwrap().unwrap_err();
    assert_eq!(e.to_string(), "connection to 10.0.0.2:81 refused");
}

#[test]
fn server_resets_connections_over_its_bound() {
    let root = TempRoot::new("bound");
    let mut p = Pair::new(LinkConfig::default());
    let cfg = HttpServerConfig { max_connections: 2, ..HttpServerConfig::default() };
    let mut srv = HttpServer::listen(&mut p.b, 80, Site::dir(&root.0).unwrap(), cfg).unwrap();
    let _held: Vec<_> = (0..2).map(|_| p.connect(80, &mut [&mut srv])).collect();
    let third = p.connect(80, &mut [&mut srv]);
    for _ in 0..100 {
        p.step(&mut [], &mut [&mut srv]);
    }
    // The bound holds; the newcomer took the place of the connection that
    // had waited longest for a request (see the fairness tests below).
    assert_eq!(srv.connections(), 2);
    assert!(is_reset(&mut p, _held[0]) && !is_reset(&mut p, third));
}

#[test]
fn http_get_with_a_body_is_served_and_so_is_the_next_request() {
    let root = TempRoot::new("body");
    let mut p = Pair::new(LinkConfig::default());
    let mut srv = server(&mut p, &root);
    // A Content-Length body, then a chunked one (with an extension and a
    // trailer), each followed by a pipelined request: all three answered.
    let two = raw(
        &mut p,
        &mut srv,
        b"GET /sub/a.txt HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\n\r\nhello\
GET /sub/b.txt HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n5;x=1\r\nhello\r\n10\r\n0123456789abcdef\r\n0\r\nT: 1\r\n\r\n\
GET /sub/a.txt HTTP/1.1\r\nHost: x\r\n\r\n",
        true,
    );
    assert_eq!(two.matches("HTTP/1.1 200 OK").count(), 3, "{two}");
    assert!(two.contains("\r\n\r\nalpha\nHTTP/1.1 200 OK") && two.contains("\r\n\r\nbeta\nHTTP/1.1") && two.ends_with("alpha\n"), "{two}");
    // A body split over several segments is skipped as it comes.
    let h = p.connect(80, &mut [&mut srv]);
    p.a.tcp_send(h, b"GET /sub/a.txt HTTP/1.1\r\nHost: x\r\nContent-Length: 10\r\n\r\n01234").unwrap();
    for _ in 0..50 {
        p.step(&mut [], &mut [&mut srv]);
    }
    p.a.tcp_send(h, b"56789GET /sub/b.txt HTTP/1.1\r\nHost: x\r\n\r\n").unwrap();
    p.a.tcp_shutdown(h).unwrap();
    let mut out = Vec::new();
    let mut buf = [0u8; 4096];
    for _ in 0..10_000 {
        match p.a.tcp_recv(h, &mut buf) {
            Ok(0) => break,
            Ok(n) => out.extend_from_slice(&buf[..n]),
            Err(_) => p.step(&mut [], &mut [&mut srv]),
        }
    }
    let out = String::from_utf8(out).unwrap();
    assert_eq!(out.matches("HTTP/1.1 200 OK").count(), 2, "{out}");
    assert!(out.ends_with("beta\n"), "{out}");
    // Both framings at once, or a coding other than chunked: 400 and close.
    for bad in [
        &b"GET / HTTP/1.1\r\nContent-Length: 3\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n"[..],
        b"GET / HTTP/1.1\r\nTransfer-Encoding: gzip\r\n\r\n",
        b"GET / HTTP/1.1\r\nContent-Length: 3x\r\n\r\n",
    ] {
        let r = raw(&mut p, &mut srv, bad, false);
        assert!(r.starts_with("HTTP/1.1 400 ") && r.contains("Connection: close"), "{r}");
    }
    // A chunked body that turns out malformed: the request before it was
    // answered, then 400 and close (where the next request starts is lost).
    let r = raw(&mut p, &mut srv, b"GET / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n", false);
    assert!(r.starts_with("HTTP/1.1 200 OK\r\n") && r.contains("HTTP/1.1 400 ") && r.ends_with("bad request\n"), "{r}");
    assert_eq!(srv.stats.failed, 0);
}

#[test]
fn http_single_ranges_get_206_and_unsatisfiable_ones_416() {
    let mut p = Pair::new(LinkConfig::default());
    let data = pattern(1000);
    let mut site = Site::memory();
    site.insert("/obj", Arc::from(data.clone()));
    let mut srv = HttpServer::listen(&mut p.b, 80, site, HttpServerConfig::default()).unwrap();
    let range = |p: &mut Pair, srv: &mut HttpServer, r: &str| {
        let req = format!("GET /obj HTTP/1.1\r\nHost: x\r\nRange: {r}\r\nConnection: close\r\n\r\n");
        let h = p.connect(80, &mut [&mut *srv]);
        p.a.tcp_send(h, req.as_bytes()).unwrap();
        let mut out = Vec::new();
        let mut buf = [0u8; 4096];
        for _ in 0..10_000 {
            match p.a.tcp_recv(h, &mut buf) {
                Ok(0) => break,
                Ok(n) => out.extend_from_slice(&buf[..n]),
                Err(_) => p.step(&mut [], &mut [&mut *srv]),
            }
        }
        p.a.tcp_close(h);
        let split = out.windows(4).position(|w| w == b"\r\n\r\n").unwrap() + 4;
        (String::from_utf8(out[..split].to_vec()).unwrap(), out[split..].to_vec())
    };
    let (head, body) = range(&mut p, &mut srv, "bytes=10-19");
    assert!(head.starts_with("HTTP/1.1 206 Partial Content\r\n"), "{head}");
    assert!(head.contains("Content-Range: bytes 10-19/1000\r\n") && head.contains("Content-Length: 10\r\n"), "{head}");
    assert_eq!(body, data[10..20]);
    let (head, body) = range(&mut p, &mut srv, "bytes=990-");
    assert!(head.contains("Content-Range: bytes 990-999/1000\r\n"), "{head}");
    assert_eq!(body, data[990..]);
    let (head, body) = range(&mut p, &mut srv, "bytes=-5");
    assert!(head.contains("Content-Range: bytes 995-999/1000\r\n"), "{head}");
    assert_eq!(body, data[995..]);
    let (head, _) = range(&mut p, &mut srv, "bytes=1000-");
    assert!(head.starts_with("HTTP/1.1 416 ") && head.contains("Content-Range: bytes */1000\r\n"), "{head}");
    // Several ranges, or a unit we do not know: the whole body (RFC 9110 allows it).
    for r in ["bytes=0-1,5-6", "items=0-1", "bytes=5-1"] {
        let (head, body) = range(&mut p, &mut srv, r);
        assert!(head.starts_with("HTTP/1.1 200 OK\r\n"), "{r}: {head}");
        assert_eq!(body, data, "{r}");
    }
    // A file body too.
    let root = TempRoot::new("range");
    let mut p = Pair::new(LinkConfig::default());
    let mut files = server(&mut p, &root);
    let req = b"GET /sub/a.txt HTTP/1.1\r\nRange: bytes=1-3\r\nConnection: close\r\n\r\n";
    let r = raw(&mut p, &mut files, req, false);
    assert!(r.starts_with("HTTP/1.1 206 ") && r.contains("Content-Range: bytes 1-3/6\r\n") && r.ends_with("\r\n\r\nlph"), "{r}");
}

fn fair_server(p: &mut Pair, max_connections: usize, fairness: FairnessConfig) -> HttpServer {
    let mut site = Site::memory();
    site.insert("/x", Arc::from(&b"x\n"[..]));
    let cfg = HttpServerConfig { max_connections, fairness, ..HttpServerConfig::default() };
    HttpServer::listen(&mut p.b, 80, site, cfg).unwrap()
}

fn is_reset(p: &mut Pair, h: TcpHandle) -> bool {
    let mut buf = [0u8; 64];
    matches!(p.a.tcp_recv(h, &mut buf), Err(RecvError::Connection(_)))
}

#[test]
fn http_slow_request_heads_time_out_and_idle_connections_close() {
    let mut p = Pair::new(LinkConfig::default());
    let fairness =
        FairnessConfig { request_timeout: Duration::from_secs(5), idle_timeout: Duration::from_secs(3), ..Default::default() };
    let mut srv = fair_server(&mut p, 16, fairness);
    // A slowloris connection: a header line every second, never the end.
    let slow = p.connect(80, &mut [&mut srv]);
    // A keep-alive client: one request, then idle.
    let idle = p.connect(80, &mut [&mut srv]);
    p.a.tcp_send(idle, b"GET /x HTTP/1.1\r\nHost: x\r\n\r\n").unwrap();
    p.a.tcp_send(slow, b"GET /x HTTP/1.1\r\n").unwrap();
    let start = p.now;
    for i in 0..8u64 {
        p.now = p.now.max(start + Duration::from_secs(i));
        p.a.tcp_send(slow, b"X-a: b\r\n").ok();
        for _ in 0..20 {
            p.step(&mut [], &mut [&mut srv]);
        }
    }
    assert!(is_reset(&mut p, slow), "the trickled head ran out of time");
    assert_eq!(srv.fairness().request_timeouts, 1);
    assert_eq!(srv.fairness().idle_timeouts, 1, "the idle keep-alive connection was closed");
    let mut buf = [0u8; 256];
    let n = p.a.tcp_recv(idle, &mut buf).unwrap();
    assert!(buf[..n].starts_with(b"HTTP/1.1 200 OK"));
    assert_eq!(p.a.tcp_recv(idle, &mut buf), Ok(0), "closed gracefully after its response");
    assert_eq!(srv.connections(), 0);
}

#[test]
fn http_full_table_makes_room_by_closing_the_longest_waiting() {
    let mut p = Pair::new(LinkConfig::default());
    let mut srv = fair_server(&mut p, 3, FairnessConfig::default());
    let held: Vec<_> = (0..3)
        .map(|_| {
            let h = p.connect(80, &mut [&mut srv]);
            p.now += Duration::from_millis(100);
            h
        })
        .collect();
    // A real client arrives while the table is full of connections that
    // never sent a request: it is served, and the oldest waiter goes.
    let mut client = HttpClient::new(SocketAddrV4::new(B_IP, 80), vec!["/x".into()], Vec::new());
    p.run_client(&mut client, &mut [&mut srv]);
    let (r, body) = client.into_result();
    r.unwrap().unwrap();
    assert_eq!(body, b"x\n");
    assert!(is_reset(&mut p, held[0]), "the longest waiting was evicted");
    assert!(!is_reset(&mut p, held[1]) && !is_reset(&mut p, held[2]));
    assert_eq!(srv.fairness().evicted, 1);
}

#[test]
fn http_one_source_holds_at_most_its_share() {
    let mut p = Pair::new(LinkConfig::default());
    let mut srv = fair_server(&mut p, 16, FairnessConfig { max_per_source: 2, ..Default::default() });
    let first: Vec<_> = (0..2).map(|_| p.connect(80, &mut [&mut srv])).collect();
    let third = p.connect(80, &mut [&mut srv]);
    for _ in 0..50 {
        p.step(&mut [], &mut [&mut srv]);
    }
    assert!(is_reset(&mut p, third));
    assert!(first.iter().all(|&h| !is_reset(&mut p, h)));
    assert_eq!(srv.fairness().refused_per_source, 1);
    // When one of them goes, the source may connect again.
    p.a.tcp_close(first[0]);
    for _ in 0..50 {
        p.step(&mut [], &mut [&mut srv]);
    }
    let again = p.connect(80, &mut [&mut srv]);
    for _ in 0..50 {
        p.step(&mut [], &mut [&mut srv]);
    }
    assert!(!is_reset(&mut p, again));
}
