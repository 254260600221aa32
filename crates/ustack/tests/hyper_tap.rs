//! hyper 1.x and tokio on ustack against Linux peers over TAP.
//!
//! The stack runs in this process, on a thread that entered the test's
//! namespace (setns), in a current-thread tokio runtime: hyper's server on
//! `ustack::net` serves `curl` (HTTP/1.1 and `--http2-prior-knowledge`) and
//! `wrk`; hyper's client on it downloads from nginx; a tokio echo server on
//! it serves 1,000 concurrent kernel clients. Every body is checked by
//! SHA-256 or byte for byte.
//!
//! Needs root, curl (with HTTP/2), nginx, wrk, python3; skips with a printed
//! reason otherwise. Bounded: each transfer and each process has a time
//! limit, the stack thread is stopped and joined (bounded), and the
//! namespace guard deletes everything, also on failure.

#[macro_use]
mod support;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::body::{Body, Frame, Incoming};
use hyper::{Request, Response};
use hyper_util::rt::TokioIo;
use sha2::{Digest, Sha256};
use std::convert::Infallible;
use std::future::Future;
use std::net::{Ipv4Addr, SocketAddrV4};
use std::os::fd::AsRawFd;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::{Duration, Instant as WallInstant};
use support::tcp::{wait_listening, Bg};
use support::{short_name, wait_tap_up, Netns};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::sync::oneshot;
use ustack::net::{LocalExec, Net, TcpListener, TcpStream};
use ustack::{EthernetAddress, Ipv4Cidr, Stack, StackConfig, TapDevice};

const HTTP_PORT: u16 = 8080;

fn stack_ip(subnet: u8) -> Ipv4Addr {
    Ipv4Addr::new(10, 88, subnet, 2)
}

fn host_ip(subnet: u8) -> Ipv4Addr {
    Ipv4Addr::new(10, 88, subnet, 1)
}

/// An async program running on ustack over a TAP in a namespace, on its own
/// thread; stopped (and joined, bounded) on drop or by [`OnTap::finish`].
struct OnTap<T> {
    stop: Option<oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<Option<T>>>,
}

impl<T: Send + 'static> OnTap<T> {
    /// Open TAP `tap` in `ns` (kernel side 10.88.`subnet`.1/24, the stack .2)
    /// and run `app` on a [`Net`] driven over it.
    fn start<F, Fut>(ns: &Netns, tap: &str, subnet: u8, app: F) -> OnTap<T>
    where
        F: FnOnce(Net) -> Fut + Send + 'static,
        Fut: Future<Output = T> + 'static,
    {
        let path = format!("/run/netns/{}", ns.name);
        let tap_name = tap.to_string();
        let (stop, stopped) = oneshot::channel::<()>();
        let thread = std::thread::spawn(move || {
            let nsf = std::fs::File::open(&path).expect("open the namespace");
            // SAFETY: a valid namespace descriptor; it moves only this thread.
            assert_eq!(unsafe { libc::setns(nsf.as_raw_fd(), libc::CLONE_NEWNET) }, 0, "setns");
            let tap = TapDevice::open(&tap_name).expect("open the TAP");
            tap.set_host_addr(host_ip(subnet), 24).expect("address the kernel's side");
            let ip = Ipv4Cidr::new(stack_ip(subnet), 24).unwrap();
            let cfg = StackConfig::new(EthernetAddress([2, 0, 0, 0x88, subnet, 2]), ip);
            let net = Net::new(Stack::new(cfg, ustack::os_seed()));
            let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
            tokio::task::LocalSet::new().block_on(&rt, async move {
                tokio::task::spawn_local(net.clone().drive(tap));
                tokio::select! {
                    out = app(net) => Some(out),
                    _ = stopped => None,
                }
            })
        });
        wait_tap_up(ns, tap, &format!("{}/24", host_ip(subnet)), Duration::from_secs(10))
            .unwrap_or_else(|out| panic!("TAP {tap} not up: {out}"));
        OnTap { stop: Some(stop), thread: Some(thread) }
    }

    /// Wait (at most `limit`) for the program to end by itself; its result.
    fn finish(mut self, limit: Duration) -> T {
        let thread = self.thread.take().unwrap();
        let deadline = WallInstant::now() + limit;
        while !thread.is_finished() {
            assert!(WallInstant::now() < deadline, "the program on ustack did not finish in {limit:?}");
            std::thread::sleep(Duration::from_millis(20));
        }
        match thread.join() {
            Ok(out) => out.expect("it ran to its end"),
            Err(panic) => std::panic::resume_unwind(panic),
        }
    }
}

impl<T> Drop for OnTap<T> {
    fn drop(&mut self) {
        drop(self.stop.take()); // ends the program at its next await
        if let Some(thread) = self.thread.take() {
            let deadline = WallInstant::now() + Duration::from_secs(10);
            while !thread.is_finished() && WallInstant::now() < deadline {
                std::thread::sleep(Duration::from_millis(20));
            }
            if thread.is_finished() {
                if let Err(panic) = thread.join() {
                    if !std::thread::panicking() {
                        std::panic::resume_unwind(panic);
                    }
                }
            }
        }
    }
}

/// The body byte at `offset`: a keyed pseudorandom sequence.
fn byte_at(offset: u64) -> u8 {
    let mut z = offset.wrapping_mul(0x9E37_79B9_7F4A_7C15);
    z ^= z >> 29;
    (z.wrapping_mul(0xBF58_476D_1CE4_E5B9) >> 56) as u8
}

/// `len` bytes of the sequence, as 64 KiB frames, generated as sent.
struct PatternBody {
    offset: u64,
    len: u64,
}

impl Body for PatternBody {
    type Data = Bytes;
    type Error = Infallible;
    fn poll_frame(mut self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, Infallible>>> {
        if self.offset == self.len {
            return Poll::Ready(None);
        }
        let end = (self.offset + 65536).min(self.len);
        let chunk: Vec<u8> = (self.offset..end).map(byte_at).collect();
        self.offset = end;
        Poll::Ready(Some(Ok(Frame::data(Bytes::from(chunk)))))
    }
    fn size_hint(&self) -> hyper::body::SizeHint {
        hyper::body::SizeHint::with_exact(self.len - self.offset)
    }
}

fn sha256_of_pattern(len: u64) -> String {
    let mut h = Sha256::new();
    let mut buf = Vec::with_capacity(1 << 16);
    let mut at = 0;
    while at < len {
        let end = (at + 65536).min(len);
        buf.clear();
        buf.extend((at..end).map(byte_at));
        h.update(&buf);
        at = end;
    }
    hex(&h.finalize())
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// GET /bytes/N answers N bytes of the pattern; anything else a short text.
async fn pattern_service(req: Request<Incoming>) -> Result<Response<http_body_util::Either<PatternBody, Full<Bytes>>>, Infallible> {
    use http_body_util::Either;
    let len = req.uri().path().strip_prefix("/bytes/").and_then(|n| n.parse::<u64>().ok());
    Ok(match len {
        Some(len) => Response::new(Either::Left(PatternBody { offset: 0, len })),
        None => Response::new(Either::Right(Full::new(Bytes::from_static(b"hello from hyper on ustack\n")))),
    })
}

/// hyper's server (HTTP/1.1 and HTTP/2 with prior knowledge, one port) on `net`.
async fn hyper_server(net: Net) {
    let listener = TcpListener::bind(&net, HTTP_PORT).expect("listen");
    loop {
        let (stream, _) = listener.accept().await.expect("accept");
        stream.set_nodelay(true).unwrap();
        tokio::task::spawn_local(async move {
            let builder = hyper_util::server::conn::auto::Builder::new(LocalExec);
            let _ = builder.serve_connection(TokioIo::new(stream), hyper::service::service_fn(pattern_service)).await;
        });
    }
}

#[test]
fn hyper_server_on_ustack_serves_curl_64_mib_over_http1_and_h2c() {
    skip_unless!("curl", "sha256sum");
    let subnet = 1;
    let ns = Netns::new("hyper1");
    let tap = short_name("hyt", subnet);
    let _server = OnTap::start(&ns, &tap, subnet, hyper_server);
    let len: u64 = 64 << 20;
    let want = sha256_of_pattern(len);
    let url = format!("http://{}:{HTTP_PORT}/bytes/{len}", stack_ip(subnet));
    let dir = std::env::temp_dir().join(format!("ustack-hyper-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    for (what, flag) in [("HTTP/1.1", "--http1.1"), ("HTTP/2", "--http2-prior-knowledge")] {
        let file = dir.join("body");
        let file = file.to_str().unwrap();
        let out = ns.exec(
            &["curl", "-sS", flag, "--max-time", "120", "-o", file, "-w", "%{http_version} %{http_code}", &url],
            Duration::from_secs(130),
        );
        assert!(out.success(), "curl {what}: {out}");
        let version = if flag == "--http1.1" { "1.1 200" } else { "2 200" };
        assert_eq!(out.stdout_str().trim(), version, "curl {what} spoke the protocol asked for");
        let sum = ns.exec(&["sha256sum", file], Duration::from_secs(60));
        let got = sum.stdout_str().split_whitespace().next().unwrap_or("").to_string();
        assert_eq!(got, want, "{what}: the 64 MiB body's SHA-256");
    }
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn wrk_runs_against_hyper_on_ustack_without_errors() {
    skip_unless!("wrk");
    let subnet = 2;
    let ns = Netns::new("hyper2");
    let tap = short_name("hyt", subnet);
    let _server = OnTap::start(&ns, &tap, subnet, hyper_server);
    let url = format!("http://{}:{HTTP_PORT}/bytes/1024", stack_ip(subnet));
    let out = ns.exec(&["wrk", "-t2", "-c32", "-d3s", "--timeout", "5s", &url], Duration::from_secs(30));
    assert!(out.success(), "wrk: {out}");
    let text = out.stdout_str();
    assert!(!text.contains("Socket errors"), "wrk saw socket errors:\n{text}");
    assert!(!text.contains("Non-2xx"), "wrk saw failed responses:\n{text}");
    let requests: u64 = text
        .lines()
        .find_map(|l| l.trim().split_once(" requests in ").and_then(|(n, _)| n.trim().parse().ok()))
        .unwrap_or_else(|| panic!("no request count in wrk's output:\n{text}"));
    assert!(requests > 0, "{text}");
    eprintln!("{text}");
}

#[test]
fn hyper_client_on_ustack_downloads_from_nginx() {
    skip_unless!("nginx");
    let subnet = 3;
    let ns = Netns::new("hyper3");
    let tap = short_name("hyt", subnet);
    let dir = std::env::temp_dir().join(format!("ustack-nginx-{}", std::process::id()));
    std::fs::create_dir_all(dir.join("www")).unwrap();
    let len: u64 = 16 << 20;
    let body: Vec<u8> = (0..len).map(byte_at).collect();
    std::fs::write(dir.join("www/f.bin"), &body).unwrap();
    let d = dir.to_str().unwrap();
    let conf = format!(
        "daemon off; master_process off; worker_processes 1; pid {d}/nginx.pid; error_log {d}/error.log;
         events {{ worker_connections 64; }}
         http {{ access_log off; client_body_temp_path {d}; proxy_temp_path {d}; fastcgi_temp_path {d};
                 uwsgi_temp_path {d}; scgi_temp_path {d};
                 server {{ listen {}:{HTTP_PORT}; root {d}/www; }} }}",
        host_ip(subnet)
    );
    std::fs::write(dir.join("nginx.conf"), conf).unwrap();
    let url: hyper::Uri = format!("http://{}:{HTTP_PORT}/f.bin", host_ip(subnet)).parse().unwrap();
    let server = SocketAddrV4::new(host_ip(subnet), HTTP_PORT);
    // The stack first (the TAP and its address), then nginx on that address.
    let (go, ready) = oneshot::channel::<()>();
    let client = OnTap::start(&ns, &tap, subnet, move |net| async move {
        let _ = ready.await;
        let stream = TcpStream::connect(&net, server).await.expect("connect to nginx");
        let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream)).await.expect("handshake");
        tokio::task::spawn_local(conn);
        let req = Request::get(url).header("host", "nginx").body(http_body_util::Empty::<Bytes>::new()).unwrap();
        let resp = sender.send_request(req).await.expect("response");
        let status = resp.status();
        let got = resp.into_body().collect().await.expect("body").to_bytes();
        (status, got)
    });
    let conf_path = dir.join("nginx.conf");
    let mut nginx = Bg::spawn(&ns, &["nginx", "-c", conf_path.to_str().unwrap()]);
    wait_listening(&ns, HTTP_PORT, Duration::from_secs(10));
    nginx.assert_running();
    go.send(()).unwrap();
    let (status, got) = client.finish(Duration::from_secs(120));
    assert_eq!(status, 200);
    assert_eq!(got.len() as u64, len);
    assert_eq!(hex(&Sha256::digest(&got)), hex(&Sha256::digest(&body)), "the 16 MiB file's SHA-256");
    drop(nginx);
    let _ = std::fs::remove_dir_all(&dir);
}

/// 1,000 kernel clients at once, each sending its own message and checking
/// its echo; prints how many were right.
const ECHO_CLIENTS: &str = r#"
import asyncio, resource, sys
resource.setrlimit(resource.RLIMIT_NOFILE, (4096, 4096))
host, port, n = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
async def one(i):
    msg = (f"client {i} says " + "%08x" % (i * 2654435761 % 2**32) * (1 + i % 7) + "\n").encode()
    for attempt in range(5):
        try:
            r, w = await asyncio.open_connection(host, port)
            break
        except OSError:
            await asyncio.sleep(0.2 * (attempt + 1))
    else:
        return False
    w.write(msg)
    await w.drain()
    back = await r.readexactly(len(msg))
    w.close()
    return back == msg
async def main():
    results = await asyncio.wait_for(asyncio.gather(*(one(i) for i in range(n))), 90)
    print(sum(results), "of", n, "echoed")
asyncio.run(main())
"#;

#[test]
fn tokio_echo_on_ustack_serves_1000_concurrent_kernel_clients() {
    skip_unless!("python3");
    let subnet = 4;
    let ns = Netns::new("hyper4");
    let tap = short_name("hyt", subnet);
    let _server = OnTap::start(&ns, &tap, subnet, |net| async move {
        let listener = TcpListener::bind(&net, 7).expect("listen");
        loop {
            let (mut conn, _) = listener.accept().await.expect("accept");
            tokio::task::spawn_local(async move {
                let mut buf = [0u8; 4096];
                while let Ok(n @ 1..) = conn.read(&mut buf).await {
                    if conn.write_all(&buf[..n]).await.is_err() {
                        break;
                    }
                }
            });
        }
    });
    let host = stack_ip(subnet).to_string();
    let out = ns.exec(&[support::tcp::python(), "-c", ECHO_CLIENTS, &host, "7", "1000"], Duration::from_secs(120));
    assert!(out.success(), "python clients: {out}");
    assert_eq!(out.stdout_str().trim(), "1000 of 1000 echoed", "{out}");
}
