//! The async sockets over two stacks on the in-memory link, in one tokio
//! current-thread runtime: echo among many tasks, backpressure, cancelled
//! accepts, refused connects, graceful close on drop, UDP. Every test is
//! bounded by a timeout.

use std::future::Future;
use std::net::{Ipv4Addr, SocketAddrV4};
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::task::spawn_local;
use ustack_core::{Ipv4Cidr, Stack, StackConfig};
use ustack_device::{LinkConfig, MemoryLink};
use ustack_net::{Net, TcpListener, TcpStream, UdpSocket};
use ustack_wire::EthernetAddress;

const A_IP: Ipv4Addr = Ipv4Addr::new(10, 0, 0, 1);
const B_IP: Ipv4Addr = Ipv4Addr::new(10, 0, 0, 2);

/// Client stack A and server stack B, driven by a spawned task.
fn pair() -> (Net, Net) {
    let cfg = |m, ip| StackConfig::new(EthernetAddress([2, 0, 0, 0, 0, m]), Ipv4Cidr::new(ip, 24).unwrap());
    let (pa, pb) = MemoryLink::pair(LinkConfig::default(), 1);
    let a = Net::new(Stack::new(cfg(1, A_IP), 1));
    let b = Net::new(Stack::new(cfg(2, B_IP), 2));
    spawn_local(Net::drive_pair(a.clone(), pa, b.clone(), pb));
    (a, b)
}

/// Run `f` on a current-thread runtime, bounded in time.
fn run<F: Future>(f: F) -> F::Output {
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    let local = tokio::task::LocalSet::new();
    local.block_on(&rt, async { tokio::time::timeout(Duration::from_secs(60), f).await.expect("test timed out") })
}

fn pattern(len: usize, seed: u64) -> Vec<u8> {
    (0..len as u64).map(|i| (i.wrapping_mul(0x9E37_79B9_7F4A_7C15) ^ seed).rotate_left(17) as u8).collect()
}

#[test]
fn echo_for_many_concurrent_tasks() {
    run(async {
        let (a, b) = pair();
        let listener = TcpListener::bind(&b, 7).unwrap();
        spawn_local(async move {
            loop {
                let (mut s, _) = listener.accept().await.unwrap();
                spawn_local(async move {
                    let mut buf = vec![0u8; 8192];
                    loop {
                        let n = s.read(&mut buf).await.unwrap();
                        if n == 0 {
                            break; // dropping `s` closes it
                        }
                        s.write_all(&buf[..n]).await.unwrap();
                    }
                });
            }
        });
        let clients: Vec<_> = (0..64u64)
            .map(|i| {
                let a = a.clone();
                spawn_local(async move {
                    let msg = pattern(20_000 + i as usize * 100, i);
                    let mut s = TcpStream::connect(&a, SocketAddrV4::new(B_IP, 7)).await.unwrap();
                    let (mut r, mut w) = tokio::io::split(&mut s);
                    let (_, back) = tokio::join!(async { w.write_all(&msg).await.unwrap() }, async {
                        let mut back = vec![0u8; msg.len()];
                        r.read_exact(&mut back).await.unwrap();
                        back
                    });
                    assert!(back == msg, "client {i} got its own bytes back");
                    s.shutdown().await.unwrap();
                    assert_eq!(s.read(&mut [0u8; 16]).await.unwrap(), 0, "the server closes after our FIN");
                })
            })
            .collect();
        for c in clients {
            c.await.unwrap();
        }
    });
}

#[test]
fn a_writer_waits_for_a_slow_reader_and_every_byte_arrives() {
    run(async {
        let (a, b) = pair();
        let listener = TcpListener::bind(&b, 9).unwrap();
        let data = pattern(4 << 20, 3);
        let sent = data.clone();
        let writer = spawn_local(async move {
            let mut s = TcpStream::connect(&a, SocketAddrV4::new(B_IP, 9)).await.unwrap();
            s.write_all(&sent).await.unwrap();
            // Dropped here: the FIN follows every byte.
        });
        let (mut s, _) = listener.accept().await.unwrap();
        // Nobody reads for a while: the writer must be held back, not fail.
        tokio::time::sleep(Duration::from_millis(200)).await;
        assert!(!writer.is_finished(), "4 MiB cannot fit the buffers: poll_write waits");
        let mut got = Vec::new();
        s.read_to_end(&mut got).await.unwrap();
        writer.await.unwrap();
        assert!(got == data, "{} bytes of {} arrived intact", got.len(), data.len());
    });
}

#[test]
fn accept_is_cancellation_safe_and_refused_connects_fail() {
    run(async {
        let (a, b) = pair();
        let listener = TcpListener::bind(&b, 80).unwrap();
        // A cancelled accept takes nothing.
        tokio::select! {
            _ = listener.accept() => panic!("nobody connected"),
            () = tokio::time::sleep(Duration::from_millis(50)) => {}
        }
        let client = TcpStream::connect(&a, SocketAddrV4::new(B_IP, 80)).await.unwrap();
        let (server, peer) = listener.accept().await.unwrap();
        assert_eq!(peer, client.local_addr().unwrap());
        assert_eq!(server.peer_addr().unwrap(), client.local_addr().unwrap());
        let refused = TcpStream::connect(&a, SocketAddrV4::new(B_IP, 81)).await.err().map(|e| e.kind());
        assert_eq!(refused, Some(std::io::ErrorKind::ConnectionRefused));
        assert_eq!(
            TcpListener::bind(&b, 80).err().map(|e| e.kind()),
            Some(std::io::ErrorKind::AddrInUse),
            "one listener per port"
        );
    });
}

#[test]
fn dropping_a_stream_sends_its_data_then_fin() {
    run(async {
        let (a, b) = pair();
        let listener = TcpListener::bind(&b, 5000).unwrap();
        let body = pattern(300_000, 9);
        let expect = body.clone();
        spawn_local(async move {
            let (mut s, _) = listener.accept().await.unwrap();
            s.write_all(&body).await.unwrap();
        });
        let mut c = TcpStream::connect(&a, SocketAddrV4::new(B_IP, 5000)).await.unwrap();
        let mut got = Vec::new();
        c.read_to_end(&mut got).await.unwrap();
        assert!(got == expect, "all {} bytes, then end of stream", expect.len());
    });
}

#[test]
fn udp_datagrams_both_ways() {
    run(async {
        let (a, b) = pair();
        let server = UdpSocket::bind(&b, 53).unwrap();
        spawn_local(async move {
            let mut buf = [0u8; 2048];
            loop {
                let (n, from) = server.recv_from(&mut buf).await.unwrap();
                let std::net::SocketAddr::V4(from) = from else { unreachable!() };
                server.send_to(&buf[..n], from).await.unwrap();
            }
        });
        let client = UdpSocket::bind(&a, 0).unwrap();
        let mut buf = [0u8; 2048];
        for i in 0..200u32 {
            let msg = pattern(1 + (i as usize * 7) % 1400, u64::from(i));
            client.send_to(&msg, SocketAddrV4::new(B_IP, 53)).await.unwrap();
            let (n, from) = client.recv_from(&mut buf).await.unwrap();
            assert_eq!(from, std::net::SocketAddr::V4(SocketAddrV4::new(B_IP, 53)));
            assert_eq!(&buf[..n], &msg[..]);
        }
    });
}

#[test]
fn short_connections_one_after_another() {
    run(async {
        let (a, b) = pair();
        let listener = TcpListener::bind(&b, 8000).unwrap();
        spawn_local(async move {
            loop {
                let (mut s, _) = listener.accept().await.unwrap();
                spawn_local(async move {
                    let mut req = [0u8; 64];
                    s.read_exact(&mut req).await.unwrap();
                    s.write_all(&req).await.unwrap();
                    // Dropped: the server closes first, as HTTP/1.0 does.
                });
            }
        });
        // More connections than a listener's backlog, each closed by the
        // server first, one after another.
        for i in 0..300u64 {
            let mut c = TcpStream::connect(&a, SocketAddrV4::new(B_IP, 8000)).await.unwrap();
            let msg = pattern(64, i);
            c.write_all(&msg).await.unwrap();
            let mut back = Vec::new();
            c.read_to_end(&mut back).await.unwrap();
            assert_eq!(back, msg, "connection {i}");
        }
    });
}
