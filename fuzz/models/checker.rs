//! A transmit queue for the receive-path fuzz targets: every frame the
//! stack emits must itself parse, with correct checksums and within the
//! MTU; then it is forgotten. Shared by `receive` and `ipv6_receive`
//! (included by path).

use ustack_core::phy::{TxFull, TxMeta, TxQueue};
use ustack_wire::{
    ChecksumMode, EtherType, EthernetFrame, Icmpv6Packet, IpProtocol, Ipv4Packet, Ipv4Repr, Ipv6Packet, Ipv6Repr,
    IPV6_HEADER_LEN,
};

pub struct Checker {
    buf: Vec<u8>,
    /// Only IPv6 may come out (the IPv6 layer alone is under test).
    ipv6_only: bool,
}

impl Checker {
    pub fn new(ipv6_only: bool) -> Checker {
        Checker { buf: Vec::new(), ipv6_only }
    }
}

impl TxQueue for Checker {
    fn send<F: FnOnce(&mut [u8])>(&mut self, len: usize, _meta: TxMeta, fill: F) -> Result<(), TxFull> {
        self.buf.clear();
        self.buf.resize(len, 0);
        fill(&mut self.buf);
        let eth = EthernetFrame::new_checked(&self.buf[..]).expect("we emit whole Ethernet headers");
        assert!(!self.ipv6_only || eth.ethertype() == EtherType::Ipv6, "the IPv6 layer emits IPv6 only");
        if eth.ethertype() == EtherType::Ipv4 {
            let ip = Ipv4Packet::new_checked(eth.payload()).expect("we emit valid IPv4");
            assert!(ip.verify_checksum(), "we emit correct IPv4 checksums");
            Ipv4Repr::parse(&ip, ChecksumMode::Verify).expect("we emit parseable IPv4");
        }
        if eth.ethertype() == EtherType::Ipv6 {
            let p = Ipv6Packet::new_checked(eth.payload()).expect("we emit valid IPv6");
            let ip = Ipv6Repr::parse(&p).expect("we emit parseable IPv6");
            assert!(IPV6_HEADER_LEN + ip.payload_len <= 1500, "we never exceed the MTU");
            if ip.next_header == IpProtocol::Icmpv6 {
                let icmp = Icmpv6Packet::new_checked(p.payload()).expect("whole ICMPv6 headers");
                assert!(icmp.verify_checksum(ip.src_addr, ip.dst_addr), "we emit correct ICMPv6 checksums");
            }
        }
        Ok(())
    }
}
