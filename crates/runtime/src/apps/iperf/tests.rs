//! The client against the server: two stacks on the in-memory link, in
//! virtual time (time jumps to the next frame, timer or app wake), every run
//! bounded by a step count. The real-iperf3 tests live in
//! crates/ustack/tests/perf_iperf3.rs; these pin the protocol logic without
//! privileges.
//!
//! The apps get a turn only when their stack has readiness events or one of
//! their deadlines passed ([`turn_apps`]), so every test here also checks
//! that they register each socket they use and name every deadline: an app
//! that looked at its sockets each turn instead would stall.

use super::*;
use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr};
use ustack_core::ipv6::Ipv6Config;
use ustack_core::{Ipv4Cidr, StackConfig};
use ustack_device::{LinkConfig, MemoryLink, MemoryPort};
use ustack_wire::EthernetAddress;

const CLIENT_IP: Ipv4Addr = Ipv4Addr::new(10, 0, 0, 1);
const SERVER_IP: Ipv4Addr = Ipv4Addr::new(10, 0, 0, 2);
const CLIENT_IP6: Ipv6Addr = Ipv6Addr::new(0xfd00, 0x5201, 0, 0, 0, 0, 0, 1);
const SERVER_IP6: Ipv6Addr = Ipv6Addr::new(0xfd00, 0x5201, 0, 0, 0, 0, 0, 2);
const MAX_STEPS: u64 = 2_000_000;

struct Sim {
    client: Stack,
    pc: MemoryPort,
    server: Stack,
    ps: MemoryPort,
    now: Instant,
    events: Vec<Event>,
}

impl Sim {
    fn new() -> Sim {
        Sim::with_loss(0.0)
    }

    fn with_loss(loss: f64) -> Sim {
        // A little delay, so time moves while data flows.
        let link = LinkConfig { delay: Duration::from_millis(1), loss, ..LinkConfig::default() };
        let (pc, ps) = MemoryLink::pair(link, 7);
        let cfg = |mac: u8, ip| StackConfig::new(EthernetAddress([2, 0, 0, 0, 0, mac]), Ipv4Cidr::new(ip, 24).unwrap());
        Sim {
            client: Stack::new(cfg(1, CLIENT_IP), 1),
            pc,
            server: Stack::new(cfg(2, SERVER_IP), 2),
            ps,
            now: Instant::ZERO,
            events: Vec::new(),
        }
    }

    /// [`Sim::new`] with IPv6 on both stacks too (`fd00:5201::1` and `::2`).
    /// Their duplicate address detection takes the first second: the client
    /// must wait for its source address before it connects.
    fn with_ipv6() -> Sim {
        let mut sim = Sim::new();
        for (stack, addr) in [(&mut sim.client, CLIENT_IP6), (&mut sim.server, SERVER_IP6)] {
            let mut cfg = Ipv6Config::new(stack.config().mac);
            cfg.addresses.push(ustack_wire::Ipv6Cidr { addr, prefix_len: 64 });
            stack.enable_ipv6(cfg, Instant::ZERO);
        }
        sim
    }

    /// Turn both stacks until every client finished and the server is done
    /// with the test; returns the server's events.
    fn run(&mut self, clients: &mut [&mut IperfClient], server: &mut IperfServer) -> Vec<PerfEvent> {
        let mut events = Vec::new();
        for _ in 0..MAX_STEPS {
            if clients.iter().all(|c| c.finished()) && !server.busy() {
                return events;
            }
            self.step(clients, server, &mut events);
        }
        panic!("the test did not finish in {MAX_STEPS} steps (at {:?})", self.now);
    }

    fn step(&mut self, clients: &mut [&mut IperfClient], server: &mut IperfServer, events: &mut Vec<PerfEvent>) {
        let now = self.now;
        self.client.poll(now, &mut self.pc, 64);
        let mut apps: Vec<&mut dyn App> = clients.iter_mut().map(|c| &mut **c as &mut dyn App).collect();
        turn_apps(&mut self.client, now, &mut apps, &mut self.events);
        self.client.poll(now, &mut self.pc, 0);
        self.server.poll(now, &mut self.ps, 64);
        turn_apps(&mut self.server, now, &mut [server as &mut dyn App], &mut self.events);
        self.server.poll(now, &mut self.ps, 0);
        events.extend(std::iter::from_fn(|| server.next_event()));
        let wakes = clients.iter().map(|c| c.next_deadline()).chain([
            server.next_deadline(),
            // What the apps did made sockets ready: another turn now.
            (self.client.has_events() || self.server.has_events()).then_some(now),
            self.pc.next_delivery(),
            self.ps.next_delivery(),
            self.client.poll_timeout(),
            self.server.poll_timeout(),
        ]);
        if let Some(t) = wakes.flatten().min() {
            self.now = self.now.max(t);
        }
    }
}

/// One app turn, given only when `stack` has readiness events or an app's
/// deadline ([`App::next_deadline`]) has passed.
fn turn_apps(stack: &mut Stack, now: Instant, apps: &mut [&mut dyn App], events: &mut Vec<Event>) {
    events.clear();
    stack.poll_events(events, crate::MAX_EVENTS);
    let due = crate::apps_deadline(apps).is_some_and(|t| now >= t);
    if events.is_empty() && !due {
        return;
    }
    for app in apps.iter_mut() {
        app.poll(stack, now, events);
    }
}

fn server_addr() -> SocketAddr {
    SocketAddr::new(SERVER_IP.into(), DEFAULT_PORT)
}

/// The client's finished report (its events drained).
fn client_report(c: &mut IperfClient) -> TestReport {
    std::iter::from_fn(|| c.next_event())
        .find_map(|e| match e {
            PerfEvent::Finished(r) => Some(r),
            _ => None,
        })
        .unwrap_or_else(|| panic!("the client finished without a report: {:?}", c.error()))
}

fn server_report(events: Vec<PerfEvent>) -> TestReport {
    let mut reports = events.into_iter().filter_map(|e| match e {
        PerfEvent::Finished(r) => Some(r),
        _ => None,
    });
    reports.next().expect("the server finished a test")
}

/// Run one test; the client's and the server's reports.
fn test(params: TestParams) -> (TestReport, TestReport) {
    test_with_loss(params, 0.0)
}

fn test_with_loss(params: TestParams, loss: f64) -> (TestReport, TestReport) {
    test_on(Sim::with_loss(loss), server_addr(), params)
}

/// Run one test on `sim` against the server at `server`.
fn test_on(mut sim: Sim, addr: SocketAddr, params: TestParams) -> (TestReport, TestReport) {
    let mut server = IperfServer::listen(&mut sim.server, addr.port(), false).unwrap();
    let mut client = IperfClient::new(addr, params, 42);
    let events = sim.run(&mut [&mut client], &mut server);
    assert_eq!(client.error(), None, "server: {events:?}");
    (client_report(&mut client), server_report(events))
}

/// Each side's own count reached the other side unchanged, stream by stream,
/// and no receiver counted more than its sender sent.
fn assert_counts_agree(client: &TestReport, server: &TestReport, streams: usize) {
    assert_eq!(client.streams.len(), streams);
    assert_eq!(server.streams.len(), streams);
    for c in &client.streams {
        let s = server.streams.iter().find(|s| s.id == c.id).expect("same stream ids");
        assert_ne!(c.sender, s.sender, "stream {}: one side sends, the other receives", c.id);
        assert_eq!(c.peer.as_ref().map(|p| p.bytes), Some(s.bytes), "stream {}", c.id);
        assert_eq!(s.peer.as_ref().map(|p| p.bytes), Some(c.bytes), "stream {}", c.id);
        let (sent, received) = if c.sender { (c.bytes, s.bytes) } else { (s.bytes, c.bytes) };
        assert!(received > 0 && received <= sent, "stream {}: sent {sent}, received {received}", c.id);
    }
}

#[test]
fn tcp_byte_bound_forward() {
    let n = 2 << 20;
    let (c, s) = test(TestParams { time: 0, bytes: n, ..TestParams::default() });
    assert_counts_agree(&c, &s, 1);
    // -n is exact: the client writes just that many bytes.
    assert_eq!(c.our_bytes(true), n);
}

#[test]
fn tcp_byte_bound_over_a_lossy_link_counts_every_byte_on_the_server() {
    // The server reports at TEST_END: the client sends it only when every
    // byte is acknowledged, so the lost ones resent at the end still count.
    let n = 4 << 20;
    let (c, s) = test_with_loss(TestParams { time: 0, bytes: n, parallel: 2, ..TestParams::default() }, 0.02);
    assert_counts_agree(&c, &s, 2);
    assert_eq!(c.our_bytes(true), n);
    assert_eq!(s.streams.iter().map(|s| s.bytes).sum::<u64>(), n, "the server counted every byte sent");
}

#[test]
fn tcp_timed_reverse_and_bidir_with_parallel_streams() {
    let (c, s) = test(TestParams { time: 1, reverse: true, parallel: 2, ..TestParams::default() });
    assert_counts_agree(&c, &s, 2);
    assert_eq!(c.our_bytes(true), 0, "-R: the client only receives");
    let ids: Vec<u32> = c.streams.iter().map(|s| s.id).collect();
    assert_eq!(ids, [1, 3], "iperf3's stream ids");
    let (c, s) = test(TestParams { time: 1, bidir: true, parallel: 2, ..TestParams::default() });
    assert_counts_agree(&c, &s, 4);
    let senders: Vec<bool> = c.streams.iter().map(|s| s.sender).collect();
    assert_eq!(senders, [true, true, false, false], "--bidir opens the client's sending streams first");
}

#[test]
fn udp_paced_both_ways() {
    for reverse in [false, true] {
        let params =
            TestParams { udp: true, time: 1, len: 1200, bandwidth: 10_000_000, reverse, ..TestParams::default() };
        let (c, s) = test(params);
        assert_counts_agree(&c, &s, 1);
        let (tx, rx) = if reverse { (&s.streams[0], &c.streams[0]) } else { (&c.streams[0], &s.streams[0]) };
        // 10 Mbit/s for a second, give or take the last pacing tick.
        assert!((1_200_000..=1_300_000).contains(&tx.bytes), "sent {} bytes", tx.bytes);
        assert_eq!(rx.lost, 0, "a clean link loses nothing");
        // Only what was still on the 1 ms link at TEST_END is missing.
        assert!(
            rx.packets <= tx.packets && tx.packets - rx.packets <= 5,
            "sent {}, received {}",
            tx.packets,
            rx.packets
        );
    }
}

#[test]
fn tcp_and_udp_over_ipv6_name_ipv6_endpoints() {
    let server6 = SocketAddr::new(SERVER_IP6.into(), DEFAULT_PORT);
    let udp = TestParams { udp: true, time: 1, len: 1200, bandwidth: 10_000_000, ..TestParams::default() };
    let modes = [
        (TestParams { time: 1, parallel: 2, ..TestParams::default() }, 2),
        (TestParams { time: 1, parallel: 2, reverse: true, ..TestParams::default() }, 2),
        (udp.clone(), 1),
        (TestParams { reverse: true, ..udp }, 1),
    ];
    for (params, streams) in modes {
        let (c, s) = test_on(Sim::with_ipv6(), server6, params.clone());
        assert_counts_agree(&c, &s, streams);
        assert_eq!(s.peer.map(|p| p.ip()), Some(CLIENT_IP6.into()), "{params:?}: the server's peer");
        for (ours, theirs) in [(&c, SERVER_IP6), (&s, CLIENT_IP6)] {
            for st in &ours.streams {
                assert_eq!(st.remote.map(|a| a.ip()), Some(theirs.into()), "{params:?}: stream {}", st.id);
                assert!(st.local.is_some_and(|a| a.is_ipv6()), "{params:?}: stream {} local {:?}", st.id, st.local);
            }
        }
    }
}

#[test]
fn udp_over_a_lossy_link_counts_the_loss() {
    // 10% loss both ways: hellos and answers get lost too, and are resent.
    let params =
        TestParams { udp: true, time: 1, len: 1000, bandwidth: 4_000_000, parallel: 3, ..TestParams::default() };
    let (c, s) = test_with_loss(params, 0.1);
    assert_counts_agree(&c, &s, 3);
    for (tx, rx) in c.streams.iter().zip(&s.streams) {
        assert!(rx.lost > 0 && rx.lost < tx.packets / 4, "lost {} of {}", rx.lost, tx.packets);
        assert_eq!(rx.packets - rx.lost, rx.bytes / 1000, "every datagram is lost or counted");
    }
}

#[test]
fn omitted_seconds_are_left_out_on_both_sides() {
    let params = TestParams { time: 1, omit: 1, bandwidth: 8_000_000, ..TestParams::default() };
    let (c, s) = test(params);
    // Each side restarts its counts when its own omit timer ends, a link
    // delay apart (as iperf3's do), so only the exchange is exact here.
    assert_eq!(c.streams[0].peer.as_ref().map(|p| p.bytes), Some(s.streams[0].bytes));
    assert_eq!(s.streams[0].peer.as_ref().map(|p| p.bytes), Some(c.streams[0].bytes));
    // Two seconds at 8 Mbit/s, of which the first is omitted: one megabyte counted.
    let sent = c.our_bytes(true);
    assert!((950_000..=1_050_000).contains(&sent), "sent {sent} bytes");
    assert!((c.duration - 1.0).abs() < 0.01 && (s.duration - 1.0).abs() < 0.01, "{} {}", c.duration, s.duration);
}

#[test]
fn tcp_bitrate_paces_the_sender() {
    let (c, s) = test(TestParams { time: 1, bandwidth: 8_000_000, ..TestParams::default() });
    assert_counts_agree(&c, &s, 1);
    // 8 Mbit/s for a second: a megabyte, give or take a pacing tick.
    let sent = c.our_bytes(true);
    assert!((950_000..=1_050_000).contains(&sent), "sent {sent} bytes");
}

#[test]
fn a_second_client_during_a_test_is_refused() {
    let mut sim = Sim::new();
    let mut server = IperfServer::listen(&mut sim.server, DEFAULT_PORT, false).unwrap();
    let mut first = IperfClient::new(server_addr(), TestParams { time: 1, ..TestParams::default() }, 1);
    let mut events = Vec::new();
    for _ in 0..MAX_STEPS {
        if events.iter().any(|e| matches!(e, PerfEvent::Started { .. })) {
            break;
        }
        sim.step(&mut [&mut first], &mut server, &mut events);
    }
    let mut second = IperfClient::new(server_addr(), TestParams::default(), 2);
    events.extend(sim.run(&mut [&mut first, &mut second], &mut server));
    assert_eq!(second.error(), Some("the server is busy running a test. try again later"));
    assert_eq!(first.error(), None);
    assert!(events.iter().any(|e| matches!(e, PerfEvent::Refused(_))));
    assert!(events.iter().any(|e| matches!(e, PerfEvent::Finished(_))));
    // And it serves the next one.
    let mut third = IperfClient::new(server_addr(), TestParams { time: 0, bytes: 1 << 20, ..TestParams::default() }, 3);
    sim.run(&mut [&mut third], &mut server);
    assert_eq!(third.error(), None);
}

#[test]
fn parameters_it_cannot_run_get_a_server_error() {
    let mut sim = Sim::new();
    let mut server = IperfServer::listen(&mut sim.server, DEFAULT_PORT, false).unwrap();
    let mut client = IperfClient::new(server_addr(), TestParams { parallel: 500, ..TestParams::default() }, 1);
    let events = sim.run(&mut [&mut client], &mut server);
    let err = client.error().expect("refused");
    assert!(err.contains("iperf3 error 6,"), "{err}");
    assert!(events.iter().any(|e| matches!(e, PerfEvent::Aborted(_))));
}

#[test]
fn udp_accounting_counts_loss_and_reordering() {
    let wall = WallClock { unix_micros: 1_700_000_000_000_000, at: Instant::ZERO };
    let mut sim = Sim::new();
    let socket = sim.server.udp_bind(DEFAULT_PORT).unwrap();
    let peer = SocketAddr::new(CLIENT_IP.into(), 40000);
    let mut s = stream::Stream::new(1, false, stream::Transport::Udp { socket, peer }, None, None);
    let datagram = |seq: u32| {
        let mut d = vec![0u8; 64];
        d[0..4].copy_from_slice(&1_700_000_000u32.to_be_bytes());
        d[8..12].copy_from_slice(&seq.to_be_bytes());
        d
    };
    for seq in [1, 2, 4, 3, 7] {
        s.recv_udp(&datagram(seq), Instant::from_millis(u64::from(seq)), &wall, false);
    }
    assert_eq!((s.last_seq, s.lost, s.out_of_order, s.packets), (7, 2, 1, 5));
    // Short and hostile datagrams are counted as bytes, never trusted further.
    s.recv_udp(&[1, 2, 3], Instant::from_millis(9), &wall, false);
    s.recv_udp(&[0xff; 16], Instant::from_millis(9), &wall, true);
    assert_eq!(s.packets, 7);
}

/// A peer that writes `bytes` on a control connection and then stays.
struct Raw {
    h: Option<TcpHandle>,
    bytes: Vec<u8>,
}

impl App for Raw {
    fn poll(&mut self, stack: &mut Stack, now: Instant, _events: &[Event]) {
        let h = *self.h.get_or_insert_with(|| stack.tcp_connect(now, server_addr()).unwrap());
        if stack.tcp_state(h) == Some(ustack_core::tcp::State::Established) && !self.bytes.is_empty() {
            let n = stack.tcp_send(h, &self.bytes).unwrap_or(0);
            self.bytes.drain(..n);
        }
    }
}

#[test]
fn hostile_control_messages_end_the_test_and_the_server_goes_on() {
    let cookie = [b'a'; COOKIE_LEN - 1];
    let oversized = [&cookie[..], &[0], &u32::MAX.to_be_bytes()].concat();
    let not_json = [&cookie[..], &[0], &4u32.to_be_bytes(), b"{{{{"].concat();
    let silent = [&cookie[..], &[0]].concat();
    for (bytes, why) in [(oversized, "over"), (not_json, "bad parameters"), (silent, "went quiet")] {
        let mut sim = Sim::new();
        let mut server = IperfServer::listen(&mut sim.server, DEFAULT_PORT, false).unwrap();
        let mut raw = Raw { h: None, bytes };
        let mut events = Vec::new();
        for _ in 0..100_000 {
            if events.iter().any(|e| matches!(e, PerfEvent::Aborted(_))) {
                break;
            }
            let now = sim.now;
            sim.client.poll(now, &mut sim.pc, 64);
            crate::poll_apps(&mut sim.client, now, &mut [&mut raw], &mut sim.events);
            sim.client.poll(now, &mut sim.pc, 0);
            sim.step(&mut [], &mut server, &mut events);
        }
        let aborted = events.iter().find_map(|e| match e {
            PerfEvent::Aborted(w) => Some(w.clone()),
            _ => None,
        });
        assert!(aborted.as_deref().is_some_and(|w| w.contains(why)), "{why}: {aborted:?}");
        assert!(!server.busy());
        let mut next =
            IperfClient::new(server_addr(), TestParams { time: 0, bytes: 1 << 16, ..TestParams::default() }, 9);
        sim.run(&mut [&mut next], &mut server);
        assert_eq!(next.error(), None, "after {why}");
    }
}
