//! hyper on ustack against hyper on tokio's kernel sockets, in one run:
//! client and server in one process, on one current-thread tokio runtime,
//! over ustack's in-memory link versus over the kernel's loopback.
//! Requests/s for 1 KiB responses, with keep-alive and with a new
//! connection per request (`Connection: close`), each for a fixed time,
//! reported as a ratio. Without keep-alive the time is spent in rounds of
//! at most 10,000 connections, each against a fresh server (a new pair of
//! stacks; a new listening port on the kernel), so no client reuses a
//! 4-tuple a server still holds in TIME-WAIT (ustack has 16,384 ephemeral
//! ports). One untimed request first resolves the server's address on ustack.
//!
//! `cargo bench -p ustack --bench hyper [-- SECONDS CLIENTS] [ustack|kernel]`
//! (naming one side runs only that side, for a profiler).

use bytes::Bytes;
use http_body_util::{BodyExt, Empty, Full};
use hyper::body::Incoming;
use hyper::{Request, Response};
use hyper_util::rt::TokioIo;
use std::cell::Cell;
use std::convert::Infallible;
use std::future::Future;
use std::net::SocketAddrV4;
use std::rc::Rc;
use std::time::{Duration, Instant};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::task::spawn_local;
use ustack::net::{Net, TcpListener, TcpStream};
use ustack::{EthernetAddress, Ipv4Cidr, LinkConfig, MemoryLink, Stack, StackConfig};

const BODY: [u8; 1024] = [b'x'; 1024];
const PORT: u16 = 8080;

async fn serve_one<S: AsyncRead + AsyncWrite + Unpin + 'static>(io: S) {
    let service = hyper::service::service_fn(|_req: Request<Incoming>| async {
        Ok::<_, Infallible>(Response::new(Full::new(Bytes::from_static(&BODY))))
    });
    let _ = hyper::server::conn::http1::Builder::new().serve_connection(TokioIo::new(io), service).await;
}

/// Connections one round opens at most, when not keeping alive.
const CONNECTIONS: u64 = 10_000;

/// One request on a connection of its own, untimed: it resolves the
/// server's address (ARP, on ustack) before the clients start together, so
/// no SYN waits behind the resolution and a 1 s retransmission.
async fn warm_up<S: AsyncRead + AsyncWrite + Unpin + 'static>(io: S) {
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(io)).await.expect("handshake");
    spawn_local(conn);
    let req = Request::get("/").header("host", "bench").header("connection", "close");
    let resp = sender.send_request(req.body(Empty::<Bytes>::new()).unwrap()).await.expect("request");
    resp.into_body().collect().await.expect("body");
}

/// Requests answered to `clients` tasks, each opening connections with
/// `connect`, for `secs`, and the seconds they took; without keep-alive,
/// one request per connection and [`CONNECTIONS`] connections at most.
async fn load<S, F, Fut>(connect: F, clients: usize, secs: f64, keep_alive: bool) -> (u64, f64)
where
    S: AsyncRead + AsyncWrite + Unpin + 'static,
    F: Fn() -> Fut + Clone + 'static,
    Fut: Future<Output = S> + 'static,
{
    warm_up(connect().await).await;
    let done = Rc::new(Cell::new(0u64));
    let end = Instant::now() + Duration::from_secs_f64(secs);
    let tasks: Vec<_> = (0..clients)
        .map(|_| {
            let (connect, done) = (connect.clone(), done.clone());
            spawn_local(async move {
                while Instant::now() < end && (keep_alive || done.get() + clients as u64 <= CONNECTIONS) {
                    let io = TokioIo::new(connect().await);
                    let (mut sender, conn) = hyper::client::conn::http1::handshake(io).await.expect("handshake");
                    spawn_local(conn);
                    loop {
                        let mut req = Request::get("/").header("host", "bench");
                        if !keep_alive {
                            req = req.header("connection", "close");
                        }
                        let resp = sender.send_request(req.body(Empty::<Bytes>::new()).unwrap()).await.expect("request");
                        let body = resp.into_body().collect().await.expect("body").to_bytes();
                        assert_eq!(body.len(), BODY.len());
                        done.set(done.get() + 1);
                        if !keep_alive || Instant::now() >= end {
                            break;
                        }
                    }
                }
            })
        })
        .collect();
    let start = Instant::now();
    for t in tasks {
        t.await.unwrap();
    }
    (done.get(), start.elapsed().as_secs_f64())
}

/// Requests/s over `secs`, spent in rounds (`round` gets the seconds left).
async fn rounds<F: FnMut(f64) -> Fut, Fut: Future<Output = (u64, f64)>>(secs: f64, mut round: F) -> f64 {
    let (mut done, mut spent) = (0, 0.0);
    while spent < secs {
        let (n, took) = round(secs - spent).await;
        done += n;
        spent += took;
    }
    done as f64 / spent
}

fn run<F: Future>(f: F) -> F::Output {
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    tokio::task::LocalSet::new().block_on(&rt, f)
}

fn ustack_rate(clients: usize, secs: f64, keep_alive: bool) -> f64 {
    run(rounds(secs, |left| ustack_round(clients, left, keep_alive)))
}

/// One round on a fresh pair of stacks.
async fn ustack_round(clients: usize, secs: f64, keep_alive: bool) -> (u64, f64) {
    let stack = |last: u8| {
        let ip = Ipv4Cidr::new([10, 0, 0, last].into(), 24).unwrap();
        let mut cfg = StackConfig::new(EthernetAddress([2, 0, 0, 0, 0, last]), ip);
        cfg.mtu = 1500;
        Stack::new(cfg, u64::from(last))
    };
    let (a, b) = (Net::new(stack(1)), Net::new(stack(2)));
    // Checksum offload, as the kernel's loopback has: neither side sums.
    let link = LinkConfig { capacity: 4096, checksum_offload: true, ..LinkConfig::default() };
    let (pa, pb) = MemoryLink::pair(link, 1);
    let driver = spawn_local(Net::drive_pair(a.clone(), pa, b.clone(), pb));
    let listener = TcpListener::bind(&b, PORT).unwrap();
    let server = spawn_local(async move {
        loop {
            let (s, _) = listener.accept().await.unwrap();
            s.set_nodelay(true).unwrap();
            spawn_local(serve_one(s));
        }
    });
    let connect = move || {
        let a = a.clone();
        async move {
            let s = TcpStream::connect(&a, SocketAddrV4::new([10, 0, 0, 2].into(), PORT)).await.unwrap();
            s.set_nodelay(true).unwrap();
            s
        }
    };
    let r = load(connect, clients, secs, keep_alive).await;
    driver.abort();
    server.abort();
    r
}

fn kernel_rate(clients: usize, secs: f64, keep_alive: bool) -> f64 {
    run(rounds(secs, |left| kernel_round(clients, left, keep_alive)))
}

/// One round against a fresh listener.
async fn kernel_round(clients: usize, secs: f64, keep_alive: bool) -> (u64, f64) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let server = spawn_local(async move {
        loop {
            let (s, _) = listener.accept().await.unwrap();
            s.set_nodelay(true).unwrap();
            spawn_local(serve_one(s));
        }
    });
    let connect = move || async move {
        let s = tokio::net::TcpStream::connect(addr).await.unwrap();
        s.set_nodelay(true).unwrap();
        s
    };
    let r = load(connect, clients, secs, keep_alive).await;
    server.abort();
    r
}

fn main() {
    // `cargo bench` passes `--bench`; positional numbers override the defaults.
    let nums: Vec<f64> = std::env::args().skip(1).filter_map(|a| a.parse().ok()).collect();
    let secs = nums.first().copied().unwrap_or(2.0);
    let clients = nums.get(1).copied().unwrap_or(16.0) as usize;
    let only = |side: &str| std::env::args().any(|a| a == side);
    let (kernel_side, ustack_side) = (!only("ustack"), !only("kernel"));
    println!("hyper 1.x, 1 KiB responses, {clients} client tasks, {secs} s each, one current-thread tokio runtime");
    for (what, keep_alive) in [("keep-alive", true), ("connection per request", false)] {
        let kernel = if kernel_side { kernel_rate(clients, secs, keep_alive) } else { f64::NAN };
        let ours = if ustack_side { ustack_rate(clients, secs, keep_alive) } else { f64::NAN };
        println!(
            "{what:>24}: ustack (in-memory link) {ours:>9.0} req/s, kernel (loopback) {kernel:>9.0} req/s, ratio {:.2}x",
            ours / kernel
        );
    }
}
