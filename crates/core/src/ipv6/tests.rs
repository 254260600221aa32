//! The layer end to end: packets in, frames out, counters.

use super::*;
use crate::phy::{TxFull, TxMeta};
use ustack_wire::{
    ipv6_solicited_node, ChecksumMode, EthernetFrame, Icmpv6DstUnreachable, Icmpv6Packet, Icmpv6Repr, Ipv6ExtChain,
    Ipv6FragmentRepr, Ipv6Option, Ipv6OptionsRepr, Ipv6RoutingRepr, MldRepr, NdiscNeighborFlags, NdiscPrefixInfo,
    NdiscPrefixes, NdiscRepr, ETHERNET_HEADER_LEN,
};

const OUR_MAC: EthernetAddress = EthernetAddress([2, 0, 0, 0, 0, 1]);
const PEER_MAC: EthernetAddress = EthernetAddress([2, 0, 0, 0, 0, 2]);
const ROUTER_MAC: EthernetAddress = EthernetAddress([2, 0, 0, 0, 0, 3]);

fn a(s: &str) -> Ipv6Addr {
    s.parse().unwrap()
}

fn ours() -> Ipv6Addr {
    a("2001:db8::2")
}

fn peer() -> Ipv6Addr {
    a("2001:db8::1")
}

#[derive(Default)]
struct Frames(Vec<Vec<u8>>);

impl TxQueue for Frames {
    fn send<F: FnOnce(&mut [u8])>(&mut self, len: usize, _meta: TxMeta, fill: F) -> Result<(), TxFull> {
        let mut b = vec![0xee; len];
        fill(&mut b);
        self.0.push(b);
        Ok(())
    }
}

struct Host {
    ip6: Ipv6Layer,
    c: Counters,
    tx: Frames,
    now: Instant,
}

impl Host {
    fn new(cfg: Ipv6Config) -> Host {
        let now = Instant::from_secs(1);
        Host { ip6: Ipv6Layer::new(cfg, 42, now), c: Counters::default(), tx: Frames::default(), now }
    }

    /// Ours at 2001:db8::2/64, no DAD delay.
    fn ready() -> Host {
        let mut cfg = Ipv6Config::new(OUR_MAC);
        cfg.addresses = vec!["2001:db8::2/64".parse().unwrap()];
        cfg.dad_transmits = 0;
        cfg.icmp_error_burst = 5;
        Host::new(cfg)
    }

    /// Receive a packet as the stack would: one frame, counted.
    fn recv(&mut self, packet: &[u8]) -> Ipv6Input {
        self.c.rx_frames += 1;
        let out = self.ip6.receive(self.now, &mut self.c, packet, false, &mut self.tx);
        if let Ipv6Input::Deliver(_) = out {
            self.c.rx_consumed += 1;
        }
        assert_eq!(self.c.unaccounted_frames(), 0, "{:?}", self.c);
        out
    }

    fn run_until(&mut self, t: Instant) {
        while let Some(due) = self.ip6.poll_timeout().filter(|&d| d <= t) {
            self.now = self.now.max(due);
            self.ip6.handle_timeout(self.now, &mut self.c, &mut self.tx);
        }
        self.now = t;
    }

    fn take(&mut self) -> Vec<Vec<u8>> {
        core::mem::take(&mut self.tx.0)
    }

    /// Teach the layer the peer's address the way a solicitation does.
    fn learn_peer(&mut self) {
        let ns = NdiscRepr::NeighborSolicit { target_addr: ours(), lladdr: Some(PEER_MAC) };
        self.recv(&icmp(peer(), ipv6_solicited_node(ours()), 255, &Icmpv6Repr::Ndisc(ns)));
        self.take();
    }
}

fn ipv6(src: Ipv6Addr, dst: Ipv6Addr, next: IpProtocol, hop_limit: u8, payload: &[u8]) -> Vec<u8> {
    let repr = Ipv6Repr {
        src_addr: src,
        dst_addr: dst,
        next_header: next,
        payload_len: payload.len(),
        hop_limit,
        traffic_class: 0,
        flow_label: 0,
    };
    let mut b = vec![0u8; IPV6_HEADER_LEN + payload.len()];
    repr.emit(&mut Ipv6Packet::new_unchecked(&mut b[..]));
    b[IPV6_HEADER_LEN..].copy_from_slice(payload);
    b
}

fn icmp_bytes(src: Ipv6Addr, dst: Ipv6Addr, repr: &Icmpv6Repr<'_>) -> Vec<u8> {
    let mut b = vec![0u8; repr.buffer_len()];
    repr.emit(&mut Icmpv6Packet::new_unchecked(&mut b[..]), src, dst, ChecksumMode::Verify);
    b
}

fn icmp(src: Ipv6Addr, dst: Ipv6Addr, hop_limit: u8, repr: &Icmpv6Repr<'_>) -> Vec<u8> {
    ipv6(src, dst, IpProtocol::Icmpv6, hop_limit, &icmp_bytes(src, dst, repr))
}

fn echo(src: Ipv6Addr, dst: Ipv6Addr, data: &[u8]) -> Vec<u8> {
    icmp(src, dst, 64, &Icmpv6Repr::EchoRequest { ident: 7, seq_no: 1, data })
}

/// Cut an IPv6 packet's payload into fragments of at most `per` bytes (a multiple of 8).
fn fragments(packet: &[u8], per: usize, ident: u32) -> Vec<Vec<u8>> {
    let ip = Ipv6Repr::parse(&Ipv6Packet::new_checked(packet).unwrap()).unwrap();
    let payload = &packet[IPV6_HEADER_LEN..];
    payload
        .chunks(per)
        .enumerate()
        .map(|(i, chunk)| {
            let frag = Ipv6FragmentRepr {
                next_header: ip.next_header,
                frag_offset: (i * per) as u16,
                more_frags: (i + 1) * per < payload.len(),
                ident,
            };
            let mut p = vec![0u8; 8];
            frag.emit(&mut p);
            p.extend_from_slice(chunk);
            ipv6(ip.src_addr, ip.dst_addr, IpProtocol::Ipv6Frag, ip.hop_limit, &p)
        })
        .collect()
}

/// A frame the layer sent: its destination MAC and IPv6 packet.
fn split(frame: &[u8]) -> (EthernetAddress, Ipv6Repr, Vec<u8>) {
    let eth = EthernetFrame::new_checked(frame).unwrap();
    let packet = frame[ETHERNET_HEADER_LEN..].to_vec();
    let ip = Ipv6Repr::parse(&Ipv6Packet::new_checked(&packet[..]).unwrap()).unwrap();
    (eth.dst_addr(), ip, packet)
}

/// The ICMPv6 message of a frame the layer sent, walked past any
/// extension headers: (type, code, bytes of the message).
fn icmp_of(frame: &[u8]) -> (u8, u8, Vec<u8>) {
    let (_, ip, packet) = split(frame);
    let payload = &packet[IPV6_HEADER_LEN..];
    let chain = Ipv6ExtChain::walk(ip.next_header, payload, &Default::default()).unwrap();
    assert_eq!(chain.upper_layer, IpProtocol::Icmpv6);
    let msg = &payload[chain.upper_offset..];
    assert!(Icmpv6Packet::new_checked(msg).unwrap().verify_checksum(ip.src_addr, ip.dst_addr));
    (msg[0], msg[1], msg.to_vec())
}

#[test]
fn solicitation_is_answered_and_teaches_the_solicitor() {
    let mut h = Host::ready();
    h.take();
    let ns = NdiscRepr::NeighborSolicit { target_addr: ours(), lladdr: Some(PEER_MAC) };
    assert_eq!(h.recv(&icmp(peer(), ipv6_solicited_node(ours()), 255, &Icmpv6Repr::Ndisc(ns))), Ipv6Input::Done);
    let frames = h.take();
    assert_eq!(frames.len(), 1);
    let (mac, ip, packet) = split(&frames[0]);
    assert_eq!((mac, ip.src_addr, ip.dst_addr, ip.hop_limit), (PEER_MAC, ours(), peer(), 255));
    let msg = &packet[IPV6_HEADER_LEN..];
    let na = NdiscRepr::parse(msg).unwrap();
    let flags = NdiscNeighborFlags { router: false, solicited: true, override_: true };
    assert_eq!(na, NdiscRepr::NeighborAdvert { flags, target_addr: ours(), lladdr: Some(OUR_MAC) });
    // Learned STALE, then DELAY as the advertisement went to it (RFC 4861 §7.3.3).
    assert_eq!(h.ip6.neighbors().get(h.now, peer()), Some((ndp::NudState::Delay, Some(PEER_MAC))));
    assert_eq!((h.c.ndp_advertisements_sent, h.c.rx_consumed), (1, 1));
}

#[test]
fn neighbour_discovery_validity_checks() {
    let mut h = Host::ready();
    h.take();
    let group = ipv6_solicited_node(ours());
    let ns = |target, lladdr| Icmpv6Repr::Ndisc(NdiscRepr::NeighborSolicit { target_addr: target, lladdr });
    // Hop limit not 255: from off the link.
    h.recv(&icmp(peer(), group, 254, &ns(ours(), Some(PEER_MAC))));
    // Multicast target.
    h.recv(&icmp(peer(), group, 255, &ns(ustack_wire::IPV6_ALL_NODES, Some(PEER_MAC))));
    // From nobody with a link-layer address; from nobody to a unicast address.
    h.recv(&icmp(Ipv6Addr::UNSPECIFIED, group, 255, &ns(ours(), Some(PEER_MAC))));
    h.recv(&icmp(Ipv6Addr::UNSPECIFIED, ours(), 255, &ns(ours(), None)));
    // A solicited advertisement to a multicast address.
    let flags = NdiscNeighborFlags { router: false, solicited: true, override_: true };
    let na = Icmpv6Repr::Ndisc(NdiscRepr::NeighborAdvert { flags, target_addr: peer(), lladdr: Some(PEER_MAC) });
    h.recv(&icmp(peer(), ustack_wire::IPV6_ALL_NODES, 255, &na));
    // A router advertisement from a global address.
    let ra = ra(0, &[]);
    h.recv(&icmp(peer(), ustack_wire::IPV6_ALL_NODES, 255, &ra));
    assert_eq!(h.c.drop_ndp_invalid, 6, "{:?}", h.c);
    // Code not 0 (the wire parser refuses it).
    let mut bad = icmp_bytes(peer(), group, &ns(ours(), Some(PEER_MAC)));
    bad[1] = 1;
    Icmpv6Packet::new_unchecked(&mut bad[..]).fill_checksum(peer(), group);
    h.recv(&ipv6(peer(), group, IpProtocol::Icmpv6, 255, &bad));
    assert_eq!(h.c.drop_ndp_invalid, 7);
    // Somebody else's address.
    h.recv(&icmp(peer(), ipv6_solicited_node(a("2001:db8::99")), 255, &ns(a("2001:db8::99"), None)));
    assert_eq!(h.c.drop_ipv6_other_host, 1, "not our group");
    assert!(h.take().is_empty());
    assert_eq!(h.ip6.neighbors().len(), 0);
}

#[test]
fn echo_is_answered_from_the_address_it_was_sent_to() {
    let mut h = Host::ready();
    h.learn_peer();
    h.recv(&echo(peer(), ours(), b"hello"));
    let frames = h.take();
    assert_eq!(frames.len(), 1);
    let (mac, ip, _) = split(&frames[0]);
    assert_eq!((mac, ip.src_addr, ip.dst_addr), (PEER_MAC, ours(), peer()));
    let (t, code, msg) = icmp_of(&frames[0]);
    assert_eq!((t, code, &msg[4..8], &msg[8..]), (129, 0, &[0, 7, 0, 1][..], &b"hello"[..]));
    assert_eq!(h.c.icmpv6_echo_replies_sent, 1);
}

#[test]
fn fragmented_echo_is_reassembled_and_its_reply_fragmented() {
    let mut h = Host::ready();
    h.learn_peer();
    let data: Vec<u8> = (0..4000u32).map(|i| (i * 7) as u8).collect();
    let request = echo(peer(), ours(), &data);
    let mut frags = fragments(&request, 1448, 0x1234);
    assert_eq!(frags.len(), 3);
    frags.reverse();
    for f in &frags {
        assert_eq!(h.recv(f), Ipv6Input::Done);
    }
    assert_eq!((h.c.ipv6_frag_rx, h.c.ipv6_reassembled, h.c.total_drops()), (3, 1, 0));
    let replies = h.take();
    assert_eq!(replies.len(), 3, "4,048 bytes over a 1,500-byte link");
    assert!(replies.iter().all(|f| f.len() <= ETHERNET_HEADER_LEN + 1500));
    assert_eq!(h.c.ipv6_frag_tx, 3);
    // The peer puts them back together.
    let mut cfg = Ipv6Config::new(PEER_MAC);
    cfg.addresses = vec!["2001:db8::1/64".parse().unwrap()];
    cfg.dad_transmits = 0;
    let mut p = Host::new(cfg);
    let mut delivered = None;
    for f in &replies {
        if let Ipv6Input::Deliver(d) = p.recv(&f[ETHERNET_HEADER_LEN..]) {
            delivered = Some(d);
        }
    }
    let d = delivered.expect("the reply reassembles");
    assert!(d.reassembled);
    assert_eq!(d.protocol, IpProtocol::Icmpv6);
    let buf = p.ip6.take_reassembled();
    let msg = &buf[d.payload.clone()];
    assert_eq!((msg[0], &msg[8..]), (129, &data[..]));
    p.ip6.restore_reassembled(buf);
}

#[test]
fn overlapping_and_tiny_fragments_are_dropped_and_counted() {
    let mut h = Host::ready();
    h.learn_peer();
    let request = echo(peer(), ours(), &[9u8; 64]);
    let frags = fragments(&request, 32, 1);
    // A second fragment that overlaps the first (teardrop).
    let mut overlap = frags[1].clone();
    overlap[IPV6_HEADER_LEN + 3] = 24; // offset 24 instead of 32 (low bits: M flag)
    h.recv(&frags[0]);
    h.recv(&overlap);
    assert_eq!((h.c.drop_ipv6_reasm_overlap, h.ip6.reassembly_held().0), (1, 0));
    for f in &frags[1..] {
        h.recv(f);
    }
    assert_eq!(h.c.ipv6_reassembled, 0, "the datagram is gone for good");
    // Not a multiple of 8: parameter problem at the payload length.
    let mut odd = fragments(&echo(peer(), ours(), &[1u8; 40]), 16, 2).remove(0);
    odd.pop();
    let len = odd.len() - IPV6_HEADER_LEN;
    odd[4..6].copy_from_slice(&(len as u16).to_be_bytes());
    h.recv(&odd);
    assert_eq!(h.c.drop_ipv6_frag_malformed, 1);
    let frames = h.take();
    let (t, code, msg) = icmp_of(frames.last().unwrap());
    assert_eq!((t, code, &msg[4..8]), (4, 0, &[0, 0, 0, 4][..]));
}

#[test]
fn first_fragment_without_the_whole_header_chain_is_refused() {
    let mut h = Host::ready();
    h.learn_peer();
    // A UDP header cut after 4 bytes.
    let udp = ipv6(peer(), ours(), IpProtocol::Udp, 64, &[0u8; 24]);
    let first = fragments(&udp, 8, 5).remove(0);
    let mut cut = first[..IPV6_HEADER_LEN + 8 + 4].to_vec();
    cut[4..6].copy_from_slice(&12u16.to_be_bytes());
    h.recv(&cut);
    assert_eq!(h.c.drop_ipv6_frag_incomplete_chain, 0, "4 bytes is not a multiple of 8: malformed first");
    let first = fragments(&udp, 16, 6).remove(0);
    let mut p = first.clone();
    p.truncate(IPV6_HEADER_LEN + 8 + 16);
    // A whole 16-byte first fragment holds the UDP header: accepted.
    h.recv(&p);
    assert_eq!(h.c.drop_ipv6_frag_incomplete_chain, 0);
    // A destination options header that runs past the first fragment.
    let mut chain = vec![17u8, 2]; // 24 bytes of options
    chain.extend_from_slice(&[1, 20]);
    chain.extend_from_slice(&[0; 20]);
    chain.extend_from_slice(&[0; 8]);
    let long = ipv6(peer(), ours(), IpProtocol::Ipv6Opts, 64, &chain);
    let first = fragments(&long, 16, 7).remove(0);
    h.recv(&first);
    assert_eq!(h.c.drop_ipv6_frag_incomplete_chain, 1);
    let (t, code, _) = icmp_of(h.take().last().unwrap());
    assert_eq!((t, code), (4, 3));
}

#[test]
fn atomic_fragments_are_delivered_without_reassembly() {
    let mut h = Host::ready();
    let udp = ipv6(peer(), ours(), IpProtocol::Udp, 64, &[7u8; 16]);
    let atomic = fragments(&udp, 64, 9).remove(0);
    let Ipv6Input::Deliver(d) = h.recv(&atomic) else { panic!("not delivered") };
    assert_eq!((d.protocol, d.payload.clone(), d.reassembled), (IpProtocol::Udp, 48..64, false));
    assert_eq!((h.c.ipv6_atomic_frag_rx, h.ip6.reassembly_held()), (1, (0, 0)));
}

#[test]
fn reassembly_timeout_answers_time_exceeded_quoting_the_first_fragment() {
    let mut h = Host::ready();
    h.learn_peer();
    let frags = fragments(&echo(peer(), ours(), &[3u8; 100]), 48, 3);
    h.recv(&frags[0]);
    let t = h.now + Duration::from_secs(61);
    h.run_until(t);
    assert_eq!(h.c.drop_ipv6_reasm_timeout, 1);
    // The peer stopped answering probes long ago: the error waits for it
    // to resolve again.
    let flags = NdiscNeighborFlags { router: false, solicited: true, override_: true };
    let na = Icmpv6Repr::Ndisc(NdiscRepr::NeighborAdvert { flags, target_addr: peer(), lladdr: Some(PEER_MAC) });
    h.recv(&icmp(peer(), ours(), 255, &na));
    let frames = h.take();
    let exceeded = frames.iter().find(|f| icmp_of(f).0 == 3).expect("time exceeded");
    let (t, code, msg) = icmp_of(exceeded);
    assert_eq!((t, code), (3, 1));
    assert_eq!(&msg[8..], &frags[0][..], "the first fragment, as sent");
}

fn options(next: IpProtocol, opts: &[u8]) -> Vec<u8> {
    let repr = Ipv6OptionsRepr { next_header: next, options: opts };
    let mut b = vec![0u8; repr.buffer_len()];
    repr.emit(&mut b);
    b
}

#[test]
fn extension_header_refusals_answer_as_rfc_8200_says() {
    let mut h = Host::ready();
    h.learn_peer();
    // Routing header type 0 with segments left.
    let rh = Ipv6RoutingRepr { next_header: IpProtocol::Udp, routing_type: 0, segments_left: 1, data: &[0; 20] };
    let mut b = vec![0u8; rh.buffer_len()];
    rh.emit(&mut b);
    b.extend_from_slice(&[0; 8]);
    h.recv(&ipv6(peer(), ours(), IpProtocol::Ipv6Route, 64, &b));
    let (t, code, msg) = icmp_of(&h.take()[0]);
    assert_eq!((t, code, &msg[4..8]), (4, 0, &[0, 0, 0, 42][..]));
    assert_eq!(h.c.drop_ipv6_routing_header, 1);
    // Unknown option, action 11, to all nodes: dropped silently.
    let mut opt = vec![0u8; 4];
    Ipv6Option::Unknown { option_type: 0xc2, data: &[0, 0] }.emit(&mut opt);
    let mut p = options(IpProtocol::Udp, &opt);
    p.extend_from_slice(&[0; 8]);
    h.recv(&ipv6(peer(), ustack_wire::IPV6_ALL_NODES, IpProtocol::Ipv6Opts, 64, &p));
    assert!(h.take().is_empty());
    // Action 10: answered even to a group.
    p[2] = 0x82;
    h.recv(&ipv6(peer(), ustack_wire::IPV6_ALL_NODES, IpProtocol::Ipv6Opts, 64, &p));
    let (t, code, msg) = icmp_of(&h.take()[0]);
    assert_eq!((t, code, &msg[4..8]), (4, 2, &[0, 0, 0, 42][..]));
    assert_eq!(h.c.drop_ipv6_ext_unknown_option, 2);
    // A chain longer than the bounds.
    let mut long = Vec::new();
    for _ in 0..12 {
        long.extend(options(IpProtocol::Ipv6Opts, &[]));
    }
    h.recv(&ipv6(peer(), ours(), IpProtocol::Ipv6Opts, 64, &long));
    assert_eq!(h.c.drop_ipv6_ext_limit, 1);
    // An upper layer we do not speak: parameter problem 1 at the naming field.
    h.recv(&ipv6(peer(), ours(), IpProtocol::from(99), 64, &[0; 8]));
    let (t, code, msg) = icmp_of(&h.take()[0]);
    assert_eq!((t, code, &msg[4..8]), (4, 1, &[0, 0, 0, 6][..]));
}

#[test]
fn errors_are_rate_limited_and_never_about_errors() {
    let mut h = Host::ready();
    h.learn_peer();
    for _ in 0..20 {
        h.recv(&ipv6(peer(), ours(), IpProtocol::from(99), 64, &[0; 8]));
    }
    assert_eq!((h.c.icmpv6_errors_sent, h.c.icmpv6_errors_rate_limited), (5, 15));
    h.take();
    // Later the bucket has refilled; an error inside a refused packet is not answered.
    h.now += Duration::from_secs(10);
    let quoted = ipv6(ours(), peer(), IpProtocol::Udp, 64, &[0; 8]);
    let header = Ipv6Repr::parse(&Ipv6Packet::new_checked(&quoted[..]).unwrap()).unwrap();
    let err = Icmpv6Repr::DstUnreachable { reason: Icmpv6DstUnreachable::PortUnreachable, header, data: &[0; 8] };
    let rh = Ipv6RoutingRepr { next_header: IpProtocol::Icmpv6, routing_type: 0, segments_left: 1, data: &[0; 4] };
    let mut b = vec![0u8; rh.buffer_len()];
    rh.emit(&mut b);
    b.extend(icmp_bytes(peer(), ours(), &err));
    h.recv(&ipv6(peer(), ours(), IpProtocol::Ipv6Route, 64, &b));
    assert_eq!(h.c.drop_ipv6_routing_header, 1);
    assert!(h.take().is_empty(), "no error about an error");
    assert_eq!(h.c.icmpv6_errors_sent, 5);
}

#[test]
fn packet_too_big_goes_up_and_lowers_the_path_mtu_to_no_less_than_1280() {
    let mut h = Host::ready();
    h.learn_peer();
    let sent = ipv6(ours(), peer(), IpProtocol::Udp, 64, &[0; 1400]);
    let header = Ipv6Repr::parse(&Ipv6Packet::new_checked(&sent[..]).unwrap()).unwrap();
    let ptb = Icmpv6Repr::PacketTooBig { mtu: 1000, header, data: &sent[40..100] };
    // The layer cannot tell whose packet the quote is: the upper layer
    // matches it to a socket, then lowers the MTU.
    assert!(matches!(h.recv(&icmp(peer(), ours(), 64, &ptb)), Ipv6Input::Deliver(_)));
    assert_eq!((h.c.icmpv6_ptb_rx, h.ip6.path_mtu(h.now, peer())), (1, 1500));
    assert!(h.ip6.lower_path_mtu(h.now, peer(), 1000));
    assert_eq!(h.ip6.path_mtu(h.now, peer()), 1280, "never under 1280");
    assert!(!h.ip6.lower_path_mtu(h.now, peer(), 1400), "only lower");
    // A 1,400-byte echo is answered in fragments of at most 1,280 bytes.
    h.recv(&echo(peer(), ours(), &[5u8; 1400]));
    let frames = h.take();
    assert_eq!(frames.len(), 2);
    assert!(frames.iter().all(|f| f.len() - ETHERNET_HEADER_LEN <= 1280));
}

fn ra(router_lifetime: u16, prefixes: &[NdiscPrefixInfo]) -> Icmpv6Repr<'_> {
    Icmpv6Repr::Ndisc(NdiscRepr::RouterAdvert {
        hop_limit: 60,
        managed: false,
        other_config: false,
        router_lifetime,
        reachable_time: 0,
        retrans_time: 0,
        lladdr: Some(ROUTER_MAC),
        mtu: None,
        prefixes: NdiscPrefixes::List(prefixes),
    })
}

fn prefix(p: &str) -> NdiscPrefixInfo {
    NdiscPrefixInfo {
        prefix_len: 64,
        on_link: true,
        autonomous: true,
        valid_lifetime: 86400,
        preferred_lifetime: 14400,
        prefix: a(p),
    }
}

fn auto() -> Host {
    let mut cfg = Ipv6Config::new(OUR_MAC);
    cfg.autoconf = true;
    cfg.secret = [5; 16];
    cfg.max_prefixes = 4;
    cfg.max_addresses = 4;
    cfg.max_routers = 2;
    Host::new(cfg)
}

#[test]
fn slaac_from_a_router_advertisement_with_dad_and_a_default_route() {
    let mut h = auto();
    let router = a("fe80::1");
    // Start: the link-local address goes through DAD, a router
    // solicitation and an MLD report go out.
    let t = h.now + Duration::from_secs(3);
    h.run_until(t);
    let kinds: Vec<u8> = h.take().iter().map(|f| icmp_of(f).0).collect();
    assert!(kinds.contains(&135) && kinds.contains(&133) && kinds.contains(&143), "{kinds:?}");
    let ll = ustack_wire::ipv6_link_local(OUR_MAC);
    assert_eq!(h.ip6.select_source(router), Some(ll));
    let p = [prefix("2001:db8:1::")];
    h.recv(&icmp(router, ustack_wire::IPV6_ALL_NODES, 255, &ra(1800, &p)));
    assert_eq!(h.c.ndp_router_advertisements_rx, 1);
    assert_eq!(h.ip6.default_routers().collect::<Vec<_>>(), vec![router]);
    assert_eq!(h.ip6.prefixes().collect::<Vec<_>>(), vec!["2001:db8:1::/64".parse().unwrap()]);
    assert_eq!(h.ip6.hop_limit(), 60);
    let slaac = h.ip6.addresses().find(|x| matches!(x.origin, AddrOrigin::Slaac { .. })).copied().unwrap();
    let expected = addrs::slaac_address(&[5; 16], a("2001:db8:1::"), OUR_MAC, 0);
    assert_eq!((slaac.cidr.addr, slaac.state), (expected, AddrState::Tentative));
    // While it is tentative an off-link peer could get the link-local
    // source; the settled source is the new address, so none is offered yet.
    assert_eq!(h.ip6.select_source(a("2001:db8:9::1")), Some(ll));
    assert_eq!(h.ip6.settled_source(a("2001:db8:9::1")), None);
    assert_eq!(h.ip6.settled_source(router), Some(ll));
    // DAD: one solicitation from nobody for it, then it is preferred.
    let t = h.now + Duration::from_secs(3);
    h.run_until(t);
    let frames = h.take();
    let dad = frames.iter().find(|f| icmp_of(f).0 == 135).expect("a DAD probe");
    let (_, ip, _) = split(dad);
    assert_eq!((ip.src_addr, ip.dst_addr), (Ipv6Addr::UNSPECIFIED, ipv6_solicited_node(expected)));
    assert_eq!(h.ip6.addresses().find(|x| x.cidr.addr == expected).unwrap().state, AddrState::Preferred);
    // Off-link traffic goes through the router, whose address we learned.
    assert_eq!(h.ip6.select_source(a("2001:db8:9::1")), Some(expected));
    assert_eq!(h.ip6.settled_source(a("2001:db8:9::1")), Some(expected));
    let r = h.ip6.send(h.now, &mut h.c, &mut h.tx, expected, a("2001:db8:9::1"), IpProtocol::Udp, 8, |b| b.fill(0));
    assert_eq!(r, Ok(()));
    let (mac, _, _) = split(&h.take()[0]);
    assert_eq!(mac, ROUTER_MAC);
    // A router lifetime of 0 removes the router.
    h.recv(&icmp(router, ustack_wire::IPV6_ALL_NODES, 255, &ra(0, &[])));
    assert_eq!(h.ip6.default_routers().count(), 0);
    let r = h.ip6.send(h.now, &mut h.c, &mut h.tx, expected, a("2001:db8:9::1"), IpProtocol::Udp, 8, |b| b.fill(0));
    assert_eq!((r, h.c.drop_no_route), (Err(Ipv6SendError::NoRoute), 1));
}

#[test]
fn duplicate_address_detection_gives_up_a_taken_address_and_tries_the_next_identifier() {
    let mut h = auto();
    let router = a("fe80::1");
    h.run_until(h.now + Duration::from_secs(3));
    h.recv(&icmp(router, ustack_wire::IPV6_ALL_NODES, 255, &ra(1800, &[prefix("2001:db8:1::")])));
    let first = addrs::slaac_address(&[5; 16], a("2001:db8:1::"), OUR_MAC, 0);
    // Another node probes for the same address while ours is tentative.
    let probe = Icmpv6Repr::Ndisc(NdiscRepr::NeighborSolicit { target_addr: first, lladdr: None });
    h.recv(&icmp(Ipv6Addr::UNSPECIFIED, ipv6_solicited_node(first), 255, &probe));
    assert_eq!(h.c.ndp_dad_failed, 1);
    let second = addrs::slaac_address(&[5; 16], a("2001:db8:1::"), OUR_MAC, 1);
    let addrs: Vec<_> = h.ip6.addresses().map(|x| x.cidr.addr).collect();
    assert!(!addrs.contains(&first) && addrs.contains(&second), "{addrs:?}");
    // An advertisement for the new tentative one: given up too.
    let flags = NdiscNeighborFlags { router: false, solicited: false, override_: true };
    let na = Icmpv6Repr::Ndisc(NdiscRepr::NeighborAdvert { flags, target_addr: second, lladdr: Some(PEER_MAC) });
    h.recv(&icmp(a("fe80::9"), ustack_wire::IPV6_ALL_NODES, 255, &na));
    assert_eq!(h.c.ndp_dad_failed, 2);
}

#[test]
fn floods_of_advertisements_and_solicitations_stay_bounded() {
    let mut h = auto();
    h.run_until(h.now + Duration::from_secs(3));
    // 200 advertisements from 200 routers, each with a new prefix.
    for i in 0..200u16 {
        let p = [prefix(&format!("2001:db8:{i:x}::"))];
        let src = Ipv6Addr::new(0xfe80, 0, 0, 0, 0, 0, 1, i);
        h.recv(&icmp(src, ustack_wire::IPV6_ALL_NODES, 255, &ra(600, &p)));
    }
    assert_eq!(h.ip6.default_routers().count(), 2);
    assert_eq!(h.ip6.prefixes().count(), 4);
    assert_eq!(h.ip6.addresses().count(), 4, "link-local and three SLAAC addresses");
    assert_eq!((h.c.ndp_router_list_full, h.c.ndp_prefix_list_full, h.c.ndp_address_table_full), (198, 196, 197));
    // 5,000 solicitations from random sources for our link-local address.
    let ll = ustack_wire::ipv6_link_local(OUR_MAC);
    let mut rng = crate::rand::Rng::new(3);
    for _ in 0..5000 {
        let src = Ipv6Addr::from((0xfe80u128 << 112) | u128::from(rng.next_u64()));
        let mac = EthernetAddress([2, 1, 2, 3, 4, rng.next_u32() as u8]);
        let ns = Icmpv6Repr::Ndisc(NdiscRepr::NeighborSolicit { target_addr: ll, lladdr: Some(mac) });
        h.recv(&icmp(src, ipv6_solicited_node(ll), 255, &ns));
        h.take();
    }
    assert_eq!(h.ip6.neighbors().len(), h.ip6.config().neighbor_cache_size);
    assert!(h.c.ndp_neighbor_evicted >= 5000 - 1024, "{}", h.c.ndp_neighbor_evicted);
    assert_eq!(h.c.unaccounted_frames(), 0);
}

#[test]
fn packets_wait_for_resolution_and_leave_when_it_answers() {
    let mut h = Host::ready();
    h.take();
    let r =
        h.ip6.send(h.now, &mut h.c, &mut h.tx, ours(), peer(), IpProtocol::Udp, 8, |b| b.copy_from_slice(b"12345678"));
    assert_eq!(r, Ok(()));
    let frames = h.take();
    assert_eq!(frames.len(), 1);
    let (mac, ip, _) = split(&frames[0]);
    assert_eq!((icmp_of(&frames[0]).0, ip.dst_addr), (135, ipv6_solicited_node(peer())));
    assert_eq!(mac, EthernetAddress::from_ipv6_multicast(ipv6_solicited_node(peer())));
    let flags = NdiscNeighborFlags { router: false, solicited: true, override_: true };
    let na = Icmpv6Repr::Ndisc(NdiscRepr::NeighborAdvert { flags, target_addr: peer(), lladdr: Some(PEER_MAC) });
    h.recv(&icmp(peer(), ours(), 255, &na));
    let frames = h.take();
    assert_eq!(frames.len(), 1);
    let (mac, ip, packet) = split(&frames[0]);
    assert_eq!((mac, ip.next_header, &packet[40..]), (PEER_MAC, IpProtocol::Udp, &b"12345678"[..]));
    assert_eq!(h.ip6.neighbors().get(h.now, peer()).unwrap().0, ndp::NudState::Reachable);
}

#[test]
fn mld_report_joins_the_solicited_node_groups_with_a_router_alert() {
    let mut h = Host::ready();
    h.run_until(h.now + Duration::from_secs(2));
    let frames = h.take();
    let reports: Vec<_> = frames.iter().filter(|f| icmp_of(f).0 == 143).collect();
    assert_eq!(reports.len(), 2, "a report and its repeat");
    let (mac, ip, packet) = split(reports[0]);
    assert_eq!(
        (ip.dst_addr, ip.hop_limit, ip.next_header),
        (ustack_wire::IPV6_ALL_MLDV2_ROUTERS, 1, IpProtocol::HopByHop)
    );
    assert_eq!(mac, EthernetAddress::from_ipv6_multicast(ustack_wire::IPV6_ALL_MLDV2_ROUTERS));
    let hbh = Ipv6OptionsRepr::parse(&packet[40..]).unwrap();
    assert!(hbh.iter().any(|o| o == Ipv6Option::RouterAlert(0)));
    let (_, _, msg) = icmp_of(reports[0]);
    let MldRepr::Report { records } = MldRepr::parse(&msg).unwrap() else { panic!() };
    let mut groups: Vec<_> = records.iter().map(|r| r.mcast_addr).collect();
    groups.sort();
    let mut want = vec![ipv6_solicited_node(ours()), ipv6_solicited_node(ustack_wire::ipv6_link_local(OUR_MAC))];
    want.sort();
    assert_eq!(groups, want);
    assert!(h.ip6.accepts_mac(EthernetAddress::from_ipv6_multicast(ipv6_solicited_node(ours()))));
    // A general query is answered within its maximum response delay.
    let query = Icmpv6Repr::Mld(MldRepr::Query {
        max_resp_code: 1000,
        mcast_addr: Ipv6Addr::UNSPECIFIED,
        s_flag: false,
        qrv: 2,
        qqic: 125,
        sources: &[],
    });
    h.recv(&icmp(a("fe80::1"), ustack_wire::IPV6_ALL_NODES, 1, &query));
    h.run_until(h.now + Duration::from_secs(1));
    assert_eq!(h.take().iter().filter(|f| icmp_of(f).0 == 143).count(), 1);
    assert_eq!(h.c.mld_reports_sent, 3);
}

#[test]
fn martians_and_strangers_are_dropped() {
    let mut h = Host::ready();
    h.recv(&echo(a("ff02::1"), ours(), b"x"));
    h.recv(&echo(Ipv6Addr::LOCALHOST, ours(), b"x"));
    h.recv(&echo(ours(), ours(), b"x"));
    h.recv(&ipv6(Ipv6Addr::UNSPECIFIED, ours(), IpProtocol::Udp, 64, &[0; 8]));
    h.recv(&echo(Ipv6Addr::UNSPECIFIED, ours(), b"x"));
    assert_eq!(h.c.drop_ipv6_martian, 5);
    h.recv(&echo(peer(), a("2001:db8::3"), b"x"));
    assert_eq!(h.c.drop_ipv6_other_host, 1);
    h.recv(&[0x60, 0, 0, 0]);
    let mut bad = echo(peer(), ours(), b"x");
    bad[5] += 1; // payload length past the packet
    h.recv(&bad);
    assert_eq!(h.c.drop_ipv6_malformed, 2);
    let mut sum = echo(peer(), ours(), b"x");
    *sum.last_mut().unwrap() ^= 1;
    h.recv(&sum);
    assert_eq!(h.c.drop_icmpv6_checksum, 1);
}

mod props {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(64))]

        /// Any cut into fragments, in any order, with duplicates, gives back
        /// the datagram (once more if duplicates complete it again, as a
        /// duplicated datagram would); every fragment has its outcome counted.
        #[test]
        fn any_fragment_order_reassembles_the_same_datagram(
            len in 1usize..6000,
            per8 in 1usize..200,
            seed in any::<u64>(),
            dups in 0usize..4,
        ) {
            let mut h = Host::ready();
            let data: Vec<u8> = (0..len).map(|i| (i as u64 ^ seed) as u8).collect();
            let udp = ipv6(peer(), ours(), IpProtocol::Udp, 64, &data);
            // Within the 64 pieces one datagram may be held in.
            let per = (per8 * 8).max(len.div_ceil(reassembly::MAX_PIECES).next_multiple_of(8));
            let mut frags = fragments(&udp, per, seed as u32);
            let mut rng = crate::rand::Rng::new(seed);
            for i in (1..frags.len()).rev() {
                frags.swap(i, (rng.next_u64() % (i as u64 + 1)) as usize);
            }
            for _ in 0..dups {
                let i = (rng.next_u64() % frags.len() as u64) as usize;
                let dup = frags[i].clone();
                frags.insert(i, dup);
            }
            let mut delivered = 0;
            for f in &frags {
                if let Ipv6Input::Deliver(d) = h.recv(f) {
                    delivered += 1;
                    let whole = if d.reassembled {
                        let buf = h.ip6.take_reassembled();
                        let v = buf[d.payload.clone()].to_vec();
                        h.ip6.restore_reassembled(buf);
                        v
                    } else {
                        f[d.payload.clone()].to_vec()
                    };
                    prop_assert_eq!(&whole, &data);
                }
            }
            prop_assert!(delivered >= 1);
            prop_assert_eq!(h.c.drop_ipv6_reasm_overlap, 0);
        }
    }
}
