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
    HttpClient, HttpClientError, HttpServer, HttpServerConfig, Site, TcpDiscard, TcpEcho, DEFAULT_MAX_CONNECTIONS,
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
    assert_eq!(srv.connections(), 2);
    let mut buf = [0u8; 8];
    assert!(matches!(p.a.tcp_recv(third, &mut buf), Err(RecvError::Connection(_))));
}
