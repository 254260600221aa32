//! The harness's own frame builder and parser: Ethernet, ARP, IPv4 (with
//! options), TCP (with raw option bytes, malformed on purpose when a case
//! wants), UDP and ICMP. Written apart from ustack's wire crate on purpose:
//! a conformance harness must not share the code it checks. The parser
//! verifies every checksum, so a reply with a bad one shows in the report.

pub const ETH_ARP: u16 = 0x0806;
pub const ETH_IPV4: u16 = 0x0800;
pub const PROTO_ICMP: u8 = 1;
pub const PROTO_TCP: u8 = 6;
pub const PROTO_UDP: u8 = 17;

pub const FIN: u8 = 0x01;
pub const SYN: u8 = 0x02;
pub const RST: u8 = 0x04;
pub const PSH: u8 = 0x08;
pub const ACK: u8 = 0x10;
pub const URG: u8 = 0x20;

pub type Mac = [u8; 6];
pub type Ip4 = [u8; 4];

/// The Internet checksum of `parts` concatenated, with `init` added.
pub fn checksum(parts: &[&[u8]], init: u32) -> u16 {
    let mut sum = init;
    let mut odd: Option<u8> = None;
    for p in parts {
        for &b in p.iter() {
            match odd.take() {
                Some(hi) => sum += u32::from(u16::from_be_bytes([hi, b])),
                None => odd = Some(b),
            }
        }
    }
    if let Some(hi) = odd {
        sum += u32::from(hi) << 8;
    }
    while sum > 0xffff {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    !(sum as u16)
}

fn pseudo(src: Ip4, dst: Ip4, proto: u8, len: usize) -> u32 {
    let w = |a: Ip4| u32::from(u16::from_be_bytes([a[0], a[1]])) + u32::from(u16::from_be_bytes([a[2], a[3]]));
    w(src) + w(dst) + u32::from(proto) + len as u32
}

/// An Ethernet frame, padded to the 60-byte minimum.
pub fn ethernet(dst: Mac, src: Mac, ethertype: u16, payload: &[u8]) -> Vec<u8> {
    let mut f = Vec::with_capacity(14 + payload.len().max(46));
    f.extend_from_slice(&dst);
    f.extend_from_slice(&src);
    f.extend_from_slice(&ethertype.to_be_bytes());
    f.extend_from_slice(payload);
    f.resize(f.len().max(60), 0);
    f
}

/// An ARP packet for IPv4 over Ethernet.
pub fn arp(op: u16, sha: Mac, spa: Ip4, tha: Mac, tpa: Ip4) -> Vec<u8> {
    let mut p = vec![0, 1, 8, 0, 6, 4];
    p.extend_from_slice(&op.to_be_bytes());
    p.extend_from_slice(&sha);
    p.extend_from_slice(&spa);
    p.extend_from_slice(&tha);
    p.extend_from_slice(&tpa);
    p
}

/// An IPv4 datagram (DF set, TTL 64); `options` is padded with EOL to a
/// multiple of four bytes.
pub fn ipv4(src: Ip4, dst: Ip4, proto: u8, id: u16, options: &[u8], payload: &[u8]) -> Vec<u8> {
    let mut opts = options.to_vec();
    opts.resize(opts.len().div_ceil(4) * 4, 0);
    let hlen = 20 + opts.len();
    let total = (hlen + payload.len()) as u16;
    let mut h = vec![0x40 | (hlen / 4) as u8, 0];
    h.extend_from_slice(&total.to_be_bytes());
    h.extend_from_slice(&id.to_be_bytes());
    h.extend_from_slice(&[0x40, 0, 64, proto, 0, 0]);
    h.extend_from_slice(&src);
    h.extend_from_slice(&dst);
    h.extend_from_slice(&opts);
    let c = checksum(&[&h], 0);
    h[10..12].copy_from_slice(&c.to_be_bytes());
    h.extend_from_slice(payload);
    h
}

/// The fields of a TCP segment to build.
pub struct TcpOut<'a> {
    pub sport: u16,
    pub dport: u16,
    pub seq: u32,
    pub ack: u32,
    pub flags: u8,
    pub win: u16,
    /// Raw option bytes, padded with EOL to a multiple of four.
    pub options: &'a [u8],
    pub payload: &'a [u8],
}

/// Recompute an IPv4 header's checksum after editing it.
pub fn ipv4_fix_checksum(ip: &mut [u8]) {
    let hlen = usize::from(ip[0] & 0x0f) * 4;
    ip[10..12].copy_from_slice(&[0, 0]);
    let c = checksum(&[&ip[..hlen]], 0);
    ip[10..12].copy_from_slice(&c.to_be_bytes());
}

/// The TCP or UDP checksum of `segment` (its checksum field zero).
pub fn transport_checksum(src: Ip4, dst: Ip4, proto: u8, segment: &[u8]) -> u16 {
    checksum(&[segment], pseudo(src, dst, proto, segment.len()))
}

/// A TCP segment with its checksum over the pseudo-header.
pub fn tcp(src: Ip4, dst: Ip4, t: &TcpOut) -> Vec<u8> {
    let mut opts = t.options.to_vec();
    opts.resize(opts.len().div_ceil(4) * 4, 0);
    let hlen = 20 + opts.len();
    let mut s = Vec::with_capacity(hlen + t.payload.len());
    s.extend_from_slice(&t.sport.to_be_bytes());
    s.extend_from_slice(&t.dport.to_be_bytes());
    s.extend_from_slice(&t.seq.to_be_bytes());
    s.extend_from_slice(&t.ack.to_be_bytes());
    s.push(((hlen / 4) as u8) << 4);
    s.push(t.flags);
    s.extend_from_slice(&t.win.to_be_bytes());
    s.extend_from_slice(&[0, 0, 0, 0]);
    s.extend_from_slice(&opts);
    s.extend_from_slice(t.payload);
    let c = checksum(&[&s], pseudo(src, dst, PROTO_TCP, s.len()));
    s[16..18].copy_from_slice(&c.to_be_bytes());
    s
}

/// A UDP datagram with its checksum.
pub fn udp(src: Ip4, dst: Ip4, sport: u16, dport: u16, payload: &[u8]) -> Vec<u8> {
    let len = 8 + payload.len();
    let mut d = Vec::with_capacity(len);
    d.extend_from_slice(&sport.to_be_bytes());
    d.extend_from_slice(&dport.to_be_bytes());
    d.extend_from_slice(&(len as u16).to_be_bytes());
    d.extend_from_slice(&[0, 0]);
    d.extend_from_slice(payload);
    let c = match checksum(&[&d], pseudo(src, dst, PROTO_UDP, len)) {
        0 => 0xffff,
        c => c,
    };
    d[6..8].copy_from_slice(&c.to_be_bytes());
    d
}

/// An ICMP message: type, code, the four "rest of header" bytes, data.
pub fn icmp(ty: u8, code: u8, rest: [u8; 4], data: &[u8]) -> Vec<u8> {
    let mut m = vec![ty, code, 0, 0];
    m.extend_from_slice(&rest);
    m.extend_from_slice(data);
    let c = checksum(&[&m], 0);
    m[2..4].copy_from_slice(&c.to_be_bytes());
    m
}

// ------------------------------------------------------------- parsing ---

/// A parsed frame.
#[derive(Debug, Clone)]
pub enum Pkt {
    Arp(ArpIn),
    Ip(IpIn),
    /// Anything else (other EtherTypes, runts).
    Other,
}

#[derive(Debug, Clone)]
pub struct ArpIn {
    pub src_mac: Mac,
    pub op: u16,
    pub sha: Mac,
    pub spa: Ip4,
    pub tha: Mac,
    pub tpa: Ip4,
}

#[derive(Debug, Clone)]
#[allow(dead_code)] // parsed for completeness; not every field is checked
pub struct IpIn {
    pub src: Ip4,
    pub dst: Ip4,
    pub proto: u8,
    pub options: Vec<u8>,
    pub csum_ok: bool,
    pub l4: L4,
}

#[derive(Debug, Clone)]
#[allow(dead_code)] // parsed for completeness; not every field is checked
pub enum L4 {
    Tcp(TcpIn),
    Icmp(IcmpIn),
    Udp { sport: u16, dport: u16, csum_ok: bool, payload: Vec<u8> },
    Other,
}

#[derive(Debug, Clone)]
#[allow(dead_code)] // parsed for completeness; not every field is checked
pub struct TcpIn {
    pub sport: u16,
    pub dport: u16,
    pub seq: u32,
    pub ack: u32,
    pub flags: u8,
    pub win: u16,
    /// Options as (kind, data), parsed the lenient way Linux does: EOL,
    /// a length below 2 or past the header ends the list.
    pub options: Vec<(u8, Vec<u8>)>,
    pub payload_len: usize,
    pub csum_ok: bool,
}

impl TcpIn {
    pub fn option(&self, kind: u8) -> Option<&[u8]> {
        self.options.iter().find(|(k, _)| *k == kind).map(|(_, d)| d.as_slice())
    }

    /// (TSval, TSecr) when the segment carries a timestamp option.
    pub fn timestamps(&self) -> Option<(u32, u32)> {
        let d = self.option(8)?;
        (d.len() == 8)
            .then(|| (u32::from_be_bytes(d[..4].try_into().unwrap()), u32::from_be_bytes(d[4..].try_into().unwrap())))
    }
}

#[derive(Debug, Clone)]
pub struct IcmpIn {
    pub ty: u8,
    pub code: u8,
    pub rest: [u8; 4],
    pub data: Vec<u8>,
    pub csum_ok: bool,
}

fn be16(b: &[u8], at: usize) -> u16 {
    u16::from_be_bytes([b[at], b[at + 1]])
}

fn be32(b: &[u8], at: usize) -> u32 {
    u32::from_be_bytes(b[at..at + 4].try_into().unwrap())
}

/// Parse a received Ethernet frame; never panics.
pub fn parse(f: &[u8]) -> Pkt {
    if f.len() < 14 {
        return Pkt::Other;
    }
    let src_mac: Mac = f[6..12].try_into().unwrap();
    let body = &f[14..];
    match be16(f, 12) {
        ETH_ARP if body.len() >= 28 => Pkt::Arp(ArpIn {
            src_mac,
            op: be16(body, 6),
            sha: body[8..14].try_into().unwrap(),
            spa: body[14..18].try_into().unwrap(),
            tha: body[18..24].try_into().unwrap(),
            tpa: body[24..28].try_into().unwrap(),
        }),
        ETH_IPV4 => parse_ip(body).map(Pkt::Ip).unwrap_or(Pkt::Other),
        _ => Pkt::Other,
    }
}

fn parse_ip(b: &[u8]) -> Option<IpIn> {
    if b.len() < 20 || b[0] >> 4 != 4 {
        return None;
    }
    let hlen = usize::from(b[0] & 0x0f) * 4;
    let total = usize::from(be16(b, 2));
    if hlen < 20 || total < hlen || total > b.len() {
        return None;
    }
    let (src, dst): (Ip4, Ip4) = (b[12..16].try_into().unwrap(), b[16..20].try_into().unwrap());
    let proto = b[9];
    let payload = &b[hlen..total];
    let l4 = match proto {
        PROTO_TCP => parse_tcp(src, dst, payload).map(L4::Tcp).unwrap_or(L4::Other),
        PROTO_ICMP if payload.len() >= 8 => L4::Icmp(IcmpIn {
            ty: payload[0],
            code: payload[1],
            rest: payload[4..8].try_into().unwrap(),
            data: payload[8..].to_vec(),
            csum_ok: checksum(&[payload], 0) == 0,
        }),
        PROTO_UDP if payload.len() >= 8 => L4::Udp {
            sport: be16(payload, 0),
            dport: be16(payload, 2),
            csum_ok: be16(payload, 6) == 0 || checksum(&[payload], pseudo(src, dst, PROTO_UDP, payload.len())) == 0,
            payload: payload[8..].to_vec(),
        },
        _ => L4::Other,
    };
    Some(IpIn { src, dst, proto, options: b[20..hlen].to_vec(), csum_ok: checksum(&[&b[..hlen]], 0) == 0, l4 })
}

fn parse_tcp(src: Ip4, dst: Ip4, s: &[u8]) -> Option<TcpIn> {
    if s.len() < 20 {
        return None;
    }
    let hlen = usize::from(s[12] >> 4) * 4;
    if hlen < 20 || hlen > s.len() {
        return None;
    }
    let mut options = Vec::new();
    let opts = &s[20..hlen];
    let mut i = 0;
    while i < opts.len() {
        match opts[i] {
            0 => break,
            1 => i += 1,
            kind => {
                let Some(&len) = opts.get(i + 1) else { break };
                let len = usize::from(len);
                if len < 2 || i + len > opts.len() {
                    break;
                }
                options.push((kind, opts[i + 2..i + len].to_vec()));
                i += len;
            }
        }
    }
    Some(TcpIn {
        sport: be16(s, 0),
        dport: be16(s, 2),
        seq: be32(s, 4),
        ack: be32(s, 8),
        flags: s[13],
        win: be16(s, 14),
        options,
        payload_len: s.len() - hlen,
        csum_ok: checksum(&[s], pseudo(src, dst, PROTO_TCP, s.len())) == 0,
    })
}

/// "SA", "RA", "FPA", ... for a flags byte (FIN SYN RST PSH ACK order).
pub fn flag_str(flags: u8) -> String {
    let mut s = String::new();
    for (bit, c) in [(SYN, 'S'), (FIN, 'F'), (RST, 'R'), (PSH, 'P'), (ACK, 'A')] {
        if flags & bit != 0 {
            s.push(c);
        }
    }
    if s.is_empty() {
        s.push('-');
    }
    s
}

/// Short names of TCP option kinds, for the report.
pub fn option_name(kind: u8) -> String {
    match kind {
        2 => "mss".into(),
        3 => "ws".into(),
        4 => "sackok".into(),
        5 => "sack".into(),
        8 => "ts".into(),
        k => format!("opt{k}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn built_segments_parse_back_with_good_checksums() {
        let (a, b) = ([10, 0, 0, 1], [10, 0, 0, 2]);
        let opts = [2, 4, 5, 0xb4, 1, 3, 3, 7];
        let seg = tcp(
            a,
            b,
            &TcpOut { sport: 1, dport: 2, seq: 3, ack: 4, flags: SYN, win: 5, options: &opts, payload: b"x" },
        );
        let ip = ipv4(a, b, PROTO_TCP, 9, &[], &seg);
        let Pkt::Ip(p) = parse(&ethernet([1; 6], [2; 6], ETH_IPV4, &ip)) else { panic!("not IP") };
        assert!(p.csum_ok);
        let L4::Tcp(t) = p.l4 else { panic!("not TCP") };
        assert!(t.csum_ok);
        assert_eq!((t.seq, t.flags, t.payload_len), (3, SYN, 1));
        assert_eq!(t.option(2), Some(&[5, 0xb4][..]));
        assert_eq!(t.option(3), Some(&[7][..]));
    }
}
