//! Every IPv6-family parser over arbitrary bytes: none panics, none loops,
//! and whatever parses emits back to bytes that parse to the same value.
//! Shared by the `ipv6_malformed` proptests and the `ipv6_parse` fuzz target
//! (`fuzz/fuzz_targets/ipv6_parse.rs` includes this file by path).

use std::net::Ipv6Addr;
use ustack_wire::*;

const SRC: Ipv6Addr = Ipv6Addr::new(0xfe80, 0, 0, 0, 0, 0, 0, 1);
const DST: Ipv6Addr = Ipv6Addr::new(0xff02, 0, 0, 0, 0, 1, 0xff00, 2);

/// Runs `data` through every parser as if it started each kind of header.
pub fn check_ipv6_bytes(data: &[u8]) {
    ipv6_packet(data);
    for first in [IpProtocol::HopByHop, IpProtocol::Ipv6Opts, IpProtocol::Ipv6Route, IpProtocol::Ipv6Frag] {
        walk(first, data);
    }
    ext_headers(data);
    options_loop(data);
    icmpv6(data, SRC, DST);
    ndisc_and_mld(data);
}

/// An IPv6 packet: header round trip, then its chain and upper layer.
fn ipv6_packet(data: &[u8]) {
    let _ = Ipv6Repr::parse(&Ipv6Packet::new_unchecked(data));
    let Ok(p) = Ipv6Packet::new_checked(data) else { return };
    let _ = (p.version(), p.traffic_class(), p.flow_label(), p.payload_len(), p.hop_limit(), p.payload());
    let repr = Ipv6Repr::parse(&p).expect("a checked packet parses");
    let mut out = [0u8; IPV6_HEADER_LEN];
    repr.emit(&mut Ipv6Packet::new_unchecked(&mut out[..]));
    assert_eq!(Ipv6Repr::parse(&Ipv6Packet::new_unchecked(&out[..])).unwrap(), repr);
    assert_eq!(out[..], data[..IPV6_HEADER_LEN], "the fixed header holds no bits we drop");
    let payload = p.into_payload();
    let Some(chain) = walk(repr.next_header, payload) else { return };
    let upper = &payload[chain.upper_offset..];
    if chain.fragment.is_some() {
        return;
    }
    match chain.upper_layer {
        IpProtocol::Icmpv6 => icmpv6(upper, repr.src_addr, repr.dst_addr),
        IpProtocol::Udp => {
            if let Ok(u) = UdpPacket::new_checked(upper) {
                let _ = UdpRepr::parse(&u, repr.src_addr, repr.dst_addr, ChecksumMode::Verify);
            }
        }
        IpProtocol::Tcp => {
            if let Ok(t) = TcpPacket::new_checked(upper) {
                let _ = TcpRepr::parse(&t, repr.src_addr, repr.dst_addr, ChecksumMode::Verify);
            }
        }
        _ => {}
    }
}

/// The walker stays within its bounds and the payload.
fn walk(first: IpProtocol, payload: &[u8]) -> Option<Ipv6ExtChain<'_>> {
    let limits = Ipv6ExtLimits::default();
    let chain = Ipv6ExtChain::walk(first, payload, &limits).ok()?;
    assert!(chain.upper_offset <= payload.len());
    assert!(chain.upper_offset <= limits.max_len);
    assert!(chain.header_count <= limits.max_headers);
    assert!(chain.upper_named_at < IPV6_HEADER_LEN + chain.upper_offset.max(1));
    if let Some(r) = chain.routing {
        assert_ne!(r.segments_left, 0, "only routing headers with segments left are reported");
        assert!(chain.routing_at >= IPV6_HEADER_LEN);
    }
    if chain.fragment.is_some() {
        assert_eq!(chain.fragment_at + IPV6_FRAGMENT_HEADER_LEN, chain.upper_offset);
    }
    Some(chain)
}

/// Each extension header parsed alone emits back to itself.
fn ext_headers(data: &[u8]) {
    if let Ok(r) = Ipv6OptionsRepr::parse(data) {
        let mut out = vec![0u8; r.buffer_len()];
        r.emit(&mut out);
        assert_eq!(out[..], data[..out.len()]);
        assert_eq!(Ipv6OptionsRepr::parse(&out).unwrap(), r);
        for o in r.iter() {
            assert!(o.buffer_len() <= r.options.len());
        }
    }
    if let Ok(r) = Ipv6RoutingRepr::parse(data) {
        let mut out = vec![0u8; r.buffer_len()];
        r.emit(&mut out);
        assert_eq!(out[..], data[..out.len()]);
        assert_eq!(Ipv6RoutingRepr::parse(&out).unwrap(), r);
    }
    if let Ok(r) = Ipv6FragmentRepr::parse(data) {
        let mut out = [0u8; IPV6_FRAGMENT_HEADER_LEN];
        r.emit(&mut out);
        assert_eq!(Ipv6FragmentRepr::parse(&out).unwrap(), r);
    }
}

/// Option parsing always consumes input, so a loop over it ends.
fn options_loop(mut b: &[u8]) {
    while let Ok((opt, rest)) = Ipv6Option::parse(b) {
        assert_eq!(rest.len() + opt.buffer_len(), b.len());
        b = rest;
    }
}

/// An ICMPv6 message: parse (checksum ignored), emit with a checksum, parse
/// again with the checksum verified: the same message.
fn icmpv6(data: &[u8], src: Ipv6Addr, dst: Ipv6Addr) {
    let Ok(p) = Icmpv6Packet::new_checked(data) else { return };
    let _ = (p.msg_type(), p.msg_code(), p.checksum(), p.echo_ident(), p.echo_seq_no(), p.mtu(), p.pointer());
    let _ = (p.data(), p.is_error(), p.verify_checksum(src, dst));
    let _ = Icmpv6Repr::parse(&p, src, dst, ChecksumMode::Verify);
    let Ok(repr) = Icmpv6Repr::parse(&p, src, dst, ChecksumMode::Ignore) else { return };
    let mut out = vec![0u8; repr.buffer_len()];
    repr.emit(&mut Icmpv6Packet::new_unchecked(&mut out[..]), src, dst, ChecksumMode::Verify);
    let again = Icmpv6Packet::new_checked(&out[..]).expect("we emit at least a header");
    assert!(again.verify_checksum(src, dst));
    assert_eq!(Icmpv6Repr::parse(&again, src, dst, ChecksumMode::Verify).unwrap(), repr);
}

/// Neighbour discovery and MLD parsed directly, whatever the type byte says.
fn ndisc_and_mld(data: &[u8]) {
    if let Ok(n) = NdiscRepr::parse(data) {
        let mut out = vec![0u8; n.buffer_len()];
        n.emit(&mut out);
        assert_eq!(NdiscRepr::parse(&out).unwrap(), n);
    }
    if let Ok(m) = MldRepr::parse(data) {
        let mut out = vec![0u8; m.buffer_len()];
        m.emit(&mut out);
        assert_eq!(MldRepr::parse(&out).unwrap(), m);
        let _ = m.source_addrs().count();
    }
}
