//! The case language and its interpreter. A case is data: a list of steps,
//! each "send this" or "expect this within T" or "expect nothing within T".
//! Sequence and acknowledgment numbers are written relative to the
//! connection the case opened (`Ours(d)` is the tester's SND.NXT plus d,
//! `Theirs(d)` the tester's RCV.NXT, the device's next sequence number,
//! plus d), so one script runs unchanged against any stack: ISNs, IP IDs
//! and timestamp values differ, the relations between them must not.

use super::net::PacketSocket;
use super::wire::{self, Ip4, Mac, Pkt, TcpOut, ACK, FIN, L4, RST, SYN};
use std::time::{Duration, Instant};

/// How long an expected reply may take (generous: CI machines are loaded).
pub const EXPECT_WITHIN: Duration = Duration::from_millis(2_000);
/// How long the device must stay silent for "nothing".
pub const NOTHING_WITHIN: Duration = Duration::from_millis(500);

/// The wire both backends share: the tester's and the device's addresses
/// and the ports the device serves.
pub struct Env<'a> {
    pub sock: &'a PacketSocket,
    pub my_mac: Mac,
    pub my_ip: Ip4,
    pub dut_mac: Mac,
    pub dut_ip: Ip4,
    /// A port with a listener (a discard service).
    pub listen_port: u16,
    /// A port nothing listens on.
    pub closed_port: u16,
    /// An HTTP/1.0 server that answers one request and closes.
    pub http_port: u16,
}

/// One conformance case.
pub struct Case {
    /// Unique, stable: the known-differences list refers to it.
    pub name: &'static str,
    /// What is checked and which RFC (or Linux behaviour) says so.
    pub why: &'static str,
    pub steps: Vec<Step>,
}

pub enum Step {
    /// SYN with Linux's options (MSS, SACK permitted, timestamps, window
    /// scale) to the listener, expect the SYN-ACK, send the ACK: ESTABLISHED.
    Handshake,
    Tcp(Seg),
    Icmp(IcmpOut),
    Udp(UdpOut),
    Arp(ArpOut),
    /// The next frame from the device for this case must match, within
    /// `EXPECT_WITHIN`.
    Expect(Want),
    /// No frame from the device for this case within `NOTHING_WITHIN`.
    Nothing,
    /// Unless the device's FIN already came (with an earlier ACK), expect it
    /// now: a FIN|ACK at RCV.NXT acknowledging SND.NXT.
    AwaitFin,
    /// Connect to the HTTP port (handshake as `Handshake`), send
    /// `GET / HTTP/1.0`; from here on segments to `Port::Listen` go to the
    /// HTTP port.
    HttpGet,
    /// Take the device's in-order segments up to and including its FIN,
    /// then acknowledge them all with one ACK: the device is in FIN-WAIT-2.
    ReadToFin,
    /// As `ReadToFin`, but acknowledge only the data, not the FIN: the
    /// device stays in FIN-WAIT-1.
    ReadToFinAckData,
}

/// Which port a segment goes to.
#[derive(Clone, Copy)]
pub enum Port {
    /// The case's connection port: the discard listener, or the HTTP
    /// server after `HttpGet`.
    Listen,
    Closed,
}

/// A sequence number to send.
#[derive(Clone, Copy)]
pub enum Seq {
    /// The tester's SND.NXT + d.
    Ours(i64),
    /// The device's next sequence number (tester's RCV.NXT) + d.
    Theirs(i64),
    Abs(u32),
}

/// TCP options to send.
#[derive(Clone)]
pub enum Opts {
    /// A timestamp option when the connection negotiated timestamps.
    Auto,
    /// Linux's SYN options: MSS 1460, SACK permitted, timestamps, NOP, WS 7.
    Syn,
    None,
    /// These bytes (padded with EOL to a multiple of four).
    Raw(Vec<u8>),
    /// A timestamp option whose TSval is older than any sent before (PAWS).
    OldTs,
}

/// A TCP segment to send; start from a template below and change fields
/// with struct-update syntax.
#[derive(Clone)]
pub struct Seg {
    pub to: Port,
    pub flags: u8,
    pub seq: Seq,
    /// The acknowledgment number (sent as is; only meaningful with ACK).
    pub ack: Seq,
    pub win: u16,
    pub opts: Opts,
    pub len: usize,
    /// Advance SND.NXT by the sequence space this segment uses.
    pub advance: bool,
    /// Something wrong with it on purpose.
    pub fault: Fault,
    /// The payload, when not `len` filler bytes.
    pub text: &'static [u8],
}

/// A deliberate defect in a sent datagram.
#[derive(Clone, Copy, PartialEq, Eq)]
pub enum Fault {
    None,
    /// The transport (TCP, UDP, ICMP) checksum is wrong.
    BadChecksum,
    /// The IPv4 header checksum is wrong.
    BadIpChecksum,
    /// The IPv4 total length claims 100 bytes more than the frame holds.
    LongTotalLength,
    /// TCP data offset below 5 words.
    ShortDataOffset,
    /// UDP checksum 0 (none, allowed over IPv4).
    ZeroChecksum,
    /// Sent to the subnet's broadcast address.
    Broadcast,
    /// Sent as two IP fragments (the first with 32 bytes of payload).
    Fragmented,
    /// IPv4 TTL 0.
    TtlZero,
}

/// SYN to the listener with Linux's options.
pub fn syn() -> Seg {
    Seg {
        to: Port::Listen,
        flags: SYN,
        seq: Seq::Ours(0),
        ack: Seq::Abs(0),
        win: 64_240,
        opts: Opts::Syn,
        len: 0,
        advance: true,
        fault: Fault::None,
        text: b"",
    }
}

/// A bare ACK at SND.NXT acknowledging RCV.NXT.
pub fn ack() -> Seg {
    Seg { flags: ACK, ack: Seq::Theirs(0), opts: Opts::Auto, advance: false, ..syn() }
}

/// `n` bytes of data (PSH, ACK) at SND.NXT.
pub fn data(n: usize) -> Seg {
    Seg { flags: ACK | wire::PSH, len: n, advance: true, ..ack() }
}

/// RST (no ACK) at SND.NXT.
pub fn rst() -> Seg {
    Seg { flags: RST, ack: Seq::Abs(0), ..ack() }
}

/// An ICMP message to send.
#[derive(Clone)]
pub struct IcmpOut {
    pub ty: u8,
    pub code: u8,
    /// IP options on the datagram.
    pub ip_opts: Vec<u8>,
    pub payload: usize,
    pub fault: Fault,
}

/// An echo request with 56 bytes of data, like `ping`.
pub fn echo() -> IcmpOut {
    IcmpOut { ty: 8, code: 0, ip_opts: vec![], payload: 56, fault: Fault::None }
}

#[derive(Clone)]
pub struct UdpOut {
    pub to: Port,
    pub len: usize,
    pub fault: Fault,
}

/// An ARP packet to send (Ethernet broadcast).
#[derive(Clone)]
pub struct ArpOut {
    pub op: u16,
    /// Sender protocol address; `None`: the tester's.
    pub spa: Option<Ip4>,
    /// Target protocol address; `None`: the device's.
    pub tpa: Option<Ip4>,
}

/// A check on a sequence or acknowledgment number.
#[derive(Clone, Copy, Debug)]
pub enum Check {
    Any,
    Ours(i64),
    Theirs(i64),
    Abs(u32),
    /// After (in sequence space) the tester's RCV.NXT: a new connection's
    /// ISN above everything the old one on the same ports used.
    AfterTheirs,
}

/// What an expected frame must be.
pub enum Want {
    Tcp(WantTcp),
    Icmp(WantIcmp),
    Arp(WantArp),
}

/// An expected TCP segment: flags in `set` present, in `clear` absent, the
/// others (PSH, URG, ECE, CWR) free.
#[derive(Clone)]
pub struct WantTcp {
    pub set: u8,
    pub clear: u8,
    pub seq: Check,
    pub ack: Check,
    /// Payload length; `None`: any.
    pub len: Option<usize>,
    /// Option kinds that must be present.
    pub has: Vec<u8>,
    /// Option kinds that must be absent.
    pub lacks: Vec<u8>,
    /// TSecr must echo the last TSval the tester sent.
    pub echo_ts: bool,
}

/// RST|ACK answering a segment without ACK: seq 0, ack = what it used.
pub fn want_rst_ack() -> WantTcp {
    WantTcp {
        set: RST | ACK,
        clear: SYN | FIN,
        seq: Check::Abs(0),
        ack: Check::Ours(0),
        len: Some(0),
        has: vec![],
        lacks: vec![],
        echo_ts: false,
    }
}

/// RST (no ACK) answering a segment with ACK: seq = its ack.
pub fn want_rst() -> WantTcp {
    WantTcp { set: RST, clear: SYN | FIN | ACK, seq: Check::Theirs(0), ack: Check::Any, ..want_rst_ack() }
}

/// A pure ACK at their SND.NXT acknowledging the tester's SND.NXT (also
/// the shape of a challenge ACK and of a duplicate ACK).
pub fn want_ack() -> WantTcp {
    WantTcp { set: ACK, clear: SYN | FIN | RST, seq: Check::Theirs(0), ack: Check::Ours(0), ..want_rst_ack() }
}

/// SYN-ACK acknowledging the SYN.
pub fn want_syn_ack() -> WantTcp {
    WantTcp { set: SYN | ACK, clear: FIN | RST, seq: Check::Any, ..want_ack() }
}

pub struct WantIcmp {
    pub ty: u8,
    pub code: u8,
    /// Echo reply: identifier, sequence number and data of the last request.
    pub echo: bool,
    /// Error: quotes the last datagram's IP header and first 8 bytes.
    pub quote: bool,
    /// IP options on the reply: `Some(true)` present, `Some(false)` absent.
    pub ip_opts: Option<bool>,
    /// The four bytes after the checksum (a parameter problem's pointer).
    pub rest: Option<[u8; 4]>,
}

pub fn want_echo_reply() -> WantIcmp {
    WantIcmp { ty: 0, code: 0, echo: true, quote: false, ip_opts: Some(false), rest: None }
}

/// An ARP reply from the device to the last request's sender.
pub struct WantArp;

/// Interprets one case against one device.
pub struct Run<'a> {
    env: &'a Env<'a>,
    sport: u16,
    snd_nxt: u32,
    rcv_nxt: Option<u32>,
    /// The device's FIN was received.
    their_fin: bool,
    /// `Port::Listen` means the HTTP port (after `HttpGet`).
    http: bool,
    /// The tester acknowledged the device's SYN-ACK.
    established: bool,
    /// The sequence number of the last SYN-ACK taken.
    their_isn: Option<u32>,
    ts_on: bool,
    my_ts: u32,
    my_ts_first: u32,
    their_ts_val: u32,
    ip_id: u16,
    last_echo: Option<([u8; 4], Vec<u8>)>,
    last_dgram: Vec<u8>,
    last_arp: Option<ArpOut>,
    /// What the device sent, step by step, for the report.
    pub trace: Vec<String>,
}

impl<'a> Run<'a> {
    /// `n`: the case's index (it picks the source port and ISN).
    pub fn new(env: &'a Env<'a>, n: usize) -> Run<'a> {
        let n = n as u32;
        Run {
            env,
            sport: 40_000 + n as u16,
            snd_nxt: 0x1000_0000u32.wrapping_mul(n + 1).wrapping_add(12_345),
            rcv_nxt: None,
            their_fin: false,
            http: false,
            established: false,
            their_isn: None,
            ts_on: false,
            my_ts: 100_000 + n * 1000,
            my_ts_first: 100_000 + n * 1000,
            their_ts_val: 0,
            ip_id: n as u16 * 100,
            last_echo: None,
            last_dgram: vec![],
            last_arp: None,
            trace: vec![],
        }
    }

    /// Run every step; `Err` names the first step that failed and why.
    pub fn run(&mut self, case: &Case) -> Result<(), String> {
        self.env.sock.drain();
        for (i, step) in case.steps.iter().enumerate() {
            self.step(step).map_err(|e| format!("step {}: {e}", i + 1))?;
        }
        Ok(())
    }

    fn step(&mut self, step: &Step) -> Result<(), String> {
        match step {
            Step::Handshake => {
                self.send_tcp(&syn());
                self.expect(&Want::Tcp(WantTcp { has: vec![2, 4, 8, 3], ..want_syn_ack() }))
                    .map_err(|e| format!("handshake: {e}"))?;
                self.send_tcp(&ack());
                self.established = true;
                Ok(())
            }
            Step::Tcp(s) => {
                self.send_tcp(s);
                Ok(())
            }
            Step::Icmp(m) => {
                self.send_icmp(m);
                Ok(())
            }
            Step::Udp(u) => {
                self.send_udp(u);
                Ok(())
            }
            Step::Arp(a) => {
                self.send_arp(a);
                Ok(())
            }
            Step::Expect(w) => self.expect(w),
            Step::HttpGet => {
                self.http = true;
                self.step(&Step::Handshake)?;
                self.send_tcp(&Seg { text: b"GET / HTTP/1.0\r\n\r\n", ..data(0) });
                Ok(())
            }
            Step::ReadToFin => self.read_to_fin(true),
            Step::ReadToFinAckData => self.read_to_fin(false),
            Step::AwaitFin if self.their_fin => Ok(()),
            Step::AwaitFin => self.expect(&Want::Tcp(WantTcp { set: FIN | ACK, clear: SYN | RST, ..want_ack() })),
            Step::Nothing => match self.next_frame(NOTHING_WITHIN) {
                None => {
                    self.trace.push("-".into());
                    Ok(())
                }
                Some(p) => {
                    let d = self.describe(&p);
                    self.trace.push(d.clone());
                    Err(format!("expected nothing, got {d}"))
                }
            },
        }
    }

    fn read_to_fin(&mut self, ack_fin: bool) -> Result<(), String> {
        let mut bytes = 0;
        for _ in 0..100 {
            let Some(p) = self.next_frame(EXPECT_WITHIN) else {
                self.trace.push(format!("read {bytes}B, no FIN"));
                return Err(format!("read {bytes} bytes, then nothing within {EXPECT_WITHIN:?}; expected the device's FIN"));
            };
            let t = match &p {
                Pkt::Ip(ip) => match &ip.l4 {
                    L4::Tcp(t) if t.flags & (ACK | RST | SYN) == ACK => t.clone(),
                    _ => return Err(format!("expected the device's data and FIN, got {}", self.describe(&p))),
                },
                _ => return Err(format!("expected the device's data and FIN, got {}", self.describe(&p))),
            };
            if self.rcv_nxt != Some(t.seq) {
                continue; // a retransmission
            }
            bytes += t.payload_len;
            let fin = t.flags & FIN != 0;
            self.rcv_nxt = Some(t.seq.wrapping_add(t.payload_len as u32 + u32::from(fin)));
            if let Some((val, _)) = t.timestamps() {
                self.their_ts_val = val;
            }
            if fin {
                self.their_fin = true;
                self.trace.push(format!("{bytes}B+FIN"));
                self.send_tcp(&Seg { ack: Seq::Theirs(if ack_fin { 0 } else { -1 }), ..ack() });
                return Ok(());
            }
        }
        Err("more than 100 segments without a FIN".into())
    }

    fn seq(&self, s: Seq) -> u32 {
        match s {
            Seq::Ours(d) => self.snd_nxt.wrapping_add(d as u32),
            Seq::Theirs(d) => self.rcv_nxt.unwrap_or(0).wrapping_add(d as u32),
            Seq::Abs(v) => v,
        }
    }

    fn ts_opt(&self, tsval: u32) -> Vec<u8> {
        let mut o = vec![1, 1, 8, 10];
        o.extend_from_slice(&tsval.to_be_bytes());
        o.extend_from_slice(&self.their_ts().to_be_bytes());
        o
    }

    fn their_ts(&self) -> u32 {
        self.their_ts_val
    }

    /// The address a datagram with `fault` goes to.
    fn dst(&self, fault: Fault) -> Ip4 {
        let d = self.env.dut_ip;
        if fault == Fault::Broadcast {
            [d[0], d[1], d[2], 255]
        } else {
            d
        }
    }

    fn send_ip(&mut self, dst: Ip4, proto: u8, ip_opts: &[u8], payload: &[u8], fault: Fault) {
        self.ip_id = self.ip_id.wrapping_add(1);
        let mut ip = wire::ipv4(self.env.my_ip, dst, proto, self.ip_id, ip_opts, payload);
        self.last_dgram = ip.clone();
        let dst_mac = if dst == self.env.dut_ip { self.env.dut_mac } else { [0xff; 6] };
        let hlen = usize::from(ip[0] & 0x0f) * 4;
        match fault {
            Fault::BadIpChecksum => ip[10] ^= 0x55,
            Fault::TtlZero => {
                ip[8] = 0;
                wire::ipv4_fix_checksum(&mut ip);
            }
            Fault::LongTotalLength => {
                let total = u16::from_be_bytes([ip[2], ip[3]]) + 100;
                ip[2..4].copy_from_slice(&total.to_be_bytes());
                wire::ipv4_fix_checksum(&mut ip);
            }
            Fault::Fragmented => {
                // Two fragments: 32 bytes at offset 0 (MF), the rest at 32.
                let mut first = ip[..hlen + 32].to_vec();
                first[2..4].copy_from_slice(&((hlen + 32) as u16).to_be_bytes());
                first[6..8].copy_from_slice(&0x2000u16.to_be_bytes());
                wire::ipv4_fix_checksum(&mut first);
                let mut second = ip[..hlen].to_vec();
                second.extend_from_slice(&ip[hlen + 32..]);
                let total = second.len() as u16;
                second[2..4].copy_from_slice(&total.to_be_bytes());
                second[6..8].copy_from_slice(&4u16.to_be_bytes());
                wire::ipv4_fix_checksum(&mut second);
                self.env.sock.send(&wire::ethernet(dst_mac, self.env.my_mac, wire::ETH_IPV4, &first));
                self.env.sock.send(&wire::ethernet(dst_mac, self.env.my_mac, wire::ETH_IPV4, &second));
                return;
            }
            _ => {}
        }
        self.env.sock.send(&wire::ethernet(dst_mac, self.env.my_mac, wire::ETH_IPV4, &ip));
    }

    fn send_tcp(&mut self, s: &Seg) {
        self.my_ts = self.my_ts.wrapping_add(1);
        let opts = match &s.opts {
            Opts::Auto if self.ts_on => self.ts_opt(self.my_ts),
            Opts::Auto | Opts::None => vec![],
            Opts::Syn => {
                let mut o = vec![2, 4, 0x05, 0xb4, 4, 2, 8, 10];
                o.extend_from_slice(&self.my_ts.to_be_bytes());
                o.extend_from_slice(&[0, 0, 0, 0, 1, 3, 3, 7]);
                o
            }
            Opts::Raw(b) => b.clone(),
            Opts::OldTs => self.ts_opt(self.my_ts_first.wrapping_sub(1_000)),
        };
        let payload = if s.text.is_empty() { vec![b'x'; s.len] } else { s.text.to_vec() };
        let t = TcpOut {
            sport: self.sport,
            dport: match s.to {
                Port::Listen if self.http => self.env.http_port,
                Port::Listen => self.env.listen_port,
                Port::Closed => self.env.closed_port,
            },
            seq: self.seq(s.seq),
            ack: self.seq(s.ack),
            flags: s.flags,
            win: s.win,
            options: &opts,
            payload: &payload,
        };
        let dst = self.dst(s.fault);
        let mut seg = wire::tcp(self.env.my_ip, dst, &t);
        match s.fault {
            Fault::BadChecksum => seg[16] ^= 0x55,
            Fault::ShortDataOffset => {
                seg[12] = 4 << 4;
                seg[16..18].copy_from_slice(&[0, 0]);
                let c = wire::transport_checksum(self.env.my_ip, dst, wire::PROTO_TCP, &seg);
                seg[16..18].copy_from_slice(&c.to_be_bytes());
            }
            _ => {}
        }
        if s.advance {
            let used = payload.len() as u32 + u32::from(s.flags & SYN != 0) + u32::from(s.flags & FIN != 0);
            self.snd_nxt = t.seq.wrapping_add(used);
        }
        self.send_ip(dst, wire::PROTO_TCP, &[], &seg, s.fault);
    }

    fn send_icmp(&mut self, m: &IcmpOut) {
        let rest = [0x12, 0x34, 0, 1];
        let data: Vec<u8> = (0..m.payload).map(|i| i as u8).collect();
        self.last_echo = Some((rest, data.clone()));
        let mut msg = wire::icmp(m.ty, m.code, rest, &data);
        if m.fault == Fault::BadChecksum {
            msg[2] ^= 0x55;
        }
        self.send_ip(self.dst(m.fault), wire::PROTO_ICMP, &m.ip_opts, &msg, m.fault);
    }

    fn send_udp(&mut self, u: &UdpOut) {
        let port = match u.to {
            Port::Listen => self.env.listen_port,
            Port::Closed => self.env.closed_port,
        };
        let dst = self.dst(u.fault);
        let mut d = wire::udp(self.env.my_ip, dst, self.sport, port, &vec![b'u'; u.len]);
        match u.fault {
            Fault::BadChecksum => d[6] ^= 0x55,
            Fault::ZeroChecksum => d[6..8].copy_from_slice(&[0, 0]),
            _ => {}
        }
        self.send_ip(dst, wire::PROTO_UDP, &[], &d, u.fault);
    }

    fn send_arp(&mut self, a: &ArpOut) {
        let spa = a.spa.unwrap_or(self.env.my_ip);
        let tpa = a.tpa.unwrap_or(self.env.dut_ip);
        let p = wire::arp(a.op, self.env.my_mac, spa, [0; 6], tpa);
        self.last_arp = Some(ArpOut { spa: Some(spa), tpa: Some(tpa), ..a.clone() });
        self.env.sock.send(&wire::ethernet([0xff; 6], self.env.my_mac, wire::ETH_ARP, &p));
    }

    /// The next frame from the device that belongs to this case, answering
    /// the device's ARP requests for the tester on the way.
    fn next_frame(&mut self, within: Duration) -> Option<Pkt> {
        let deadline = Instant::now() + within;
        loop {
            let f = self.env.sock.recv_until(deadline)?;
            let p = wire::parse(&f);
            match &p {
                Pkt::Arp(a) if a.op == 1 && a.tpa == self.env.my_ip => {
                    let r = wire::arp(2, self.env.my_mac, self.env.my_ip, a.sha, a.spa);
                    self.env.sock.send(&wire::ethernet(a.sha, self.env.my_mac, wire::ETH_ARP, &r));
                }
                Pkt::Arp(_) => return Some(p),
                Pkt::Ip(ip) if ip.src != self.env.dut_ip => {}
                Pkt::Ip(ip) => match &ip.l4 {
                    L4::Tcp(t) if t.dport != self.sport => {}
                    // A retransmission of what the tester already took (its
                    // ACK was slow on a loaded machine) answers no step.
                    L4::Tcp(t) if self.is_retransmission(t) => {}
                    L4::Tcp(_) | L4::Icmp(_) | L4::Udp { .. } => return Some(p),
                    L4::Other => {}
                },
                Pkt::Other => {}
            }
        }
    }

    /// Whether `t` repeats the device's data, FIN, or (once the handshake
    /// is done) SYN-ACK, all of which the tester already received.
    fn is_retransmission(&self, t: &wire::TcpIn) -> bool {
        let Some(rcv_nxt) = self.rcv_nxt else { return false };
        if t.flags & RST != 0 {
            return false;
        }
        let used = t.payload_len as u32 + u32::from(t.flags & FIN != 0) + u32::from(t.flags & SYN != 0);
        let end = t.seq.wrapping_add(used);
        let old = used > 0 && (rcv_nxt.wrapping_sub(end) as i32) >= 0;
        // A SYN-ACK only when it repeats the one the handshake took (a new
        // connection on the same ports has a SYN-ACK of its own).
        old && (t.flags & SYN == 0 || (self.established && Some(t.seq) == self.their_isn))
    }

    fn rel(&self, v: u32, against: Option<u32>, tag: &str) -> String {
        match against {
            Some(b) => {
                let d = v.wrapping_sub(b) as i32;
                if d == 0 {
                    tag.to_owned()
                } else {
                    format!("{tag}{d:+}")
                }
            }
            None => v.to_string(),
        }
    }

    /// A short description of a frame, numbers relative to the connection.
    fn describe(&self, p: &Pkt) -> String {
        match p {
            Pkt::Arp(a) => format!("arp op {} {}->{}", a.op, ip_str(a.spa), ip_str(a.tpa)),
            Pkt::Other => "other".into(),
            Pkt::Ip(ip) => {
                let bad = if ip.csum_ok { "" } else { " BAD-IP-CSUM" };
                let opts = if ip.options.is_empty() { String::new() } else { format!(" ipopts={}B", ip.options.len()) };
                match &ip.l4 {
                    L4::Tcp(t) => {
                        let names: Vec<String> = t.options.iter().map(|(k, _)| wire::option_name(*k)).collect();
                        let seq = match self.rcv_nxt {
                            Some(r) if t.flags & SYN != 0 && Some(t.seq) != self.their_isn => {
                                format!("isn({})", self.rel(t.seq, Some(r), "T"))
                            }
                            _ if t.flags & SYN != 0 => "isn".to_owned(),
                            None => t.seq.to_string(),
                            r => self.rel(t.seq, r, "T"),
                        };
                        let ack = if t.flags & ACK != 0 {
                            self.rel(t.ack, Some(self.snd_nxt), " ack=S")
                        } else {
                            String::new()
                        };
                        format!(
                            "{} seq={seq}{ack} len={}{}{}{}{}",
                            wire::flag_str(t.flags),
                            t.payload_len,
                            if names.is_empty() { String::new() } else { format!(" <{}>", names.join(",")) },
                            if t.csum_ok { "" } else { " BAD-CSUM" },
                            bad,
                            opts,
                        )
                    }
                    L4::Icmp(m) => {
                        format!("icmp {}/{}{}{}{}", m.ty, m.code, if m.csum_ok { "" } else { " BAD-CSUM" }, bad, opts)
                    }
                    L4::Udp { dport, payload, .. } => format!("udp to {dport} len={}{bad}", payload.len()),
                    L4::Other => format!("ip proto {}", ip.proto),
                }
            }
        }
    }

    fn check(&self, c: Check, v: u32) -> bool {
        match c {
            Check::Any => true,
            Check::Abs(x) => v == x,
            Check::Ours(d) => v == self.snd_nxt.wrapping_add(d as u32),
            Check::Theirs(d) => self.rcv_nxt.is_some_and(|r| v == r.wrapping_add(d as u32)),
            Check::AfterTheirs => self.rcv_nxt.is_some_and(|r| (v.wrapping_sub(r) as i32) > 0),
        }
    }

    fn expect(&mut self, w: &Want) -> Result<(), String> {
        let Some(p) = self.next_frame(EXPECT_WITHIN) else {
            self.trace.push("-".into());
            return Err(format!("expected {}, got nothing within {:?}", want_str(w), EXPECT_WITHIN));
        };
        let d = self.describe(&p);
        self.trace.push(d.clone());
        let mismatch = |why: &str| Err(format!("expected {} ({why}), got {d}", want_str(w)));
        match (w, &p) {
            (Want::Tcp(w), Pkt::Ip(ip)) => {
                let L4::Tcp(t) = &ip.l4 else { return mismatch("not TCP") };
                if !ip.csum_ok || !t.csum_ok {
                    return mismatch("bad checksum");
                }
                if t.flags & w.set != w.set || t.flags & w.clear != 0 {
                    return mismatch("flags");
                }
                if !self.check(w.seq, t.seq) {
                    return mismatch("seq");
                }
                if !self.check(w.ack, t.ack) {
                    return mismatch("ack");
                }
                if w.len.is_some_and(|l| l != t.payload_len) {
                    return mismatch("length");
                }
                if let Some(k) = w.has.iter().find(|k| t.option(**k).is_none()) {
                    return mismatch(&format!("no {} option", wire::option_name(*k)));
                }
                if let Some(k) = w.lacks.iter().find(|k| t.option(**k).is_some()) {
                    return mismatch(&format!("unexpected {} option", wire::option_name(*k)));
                }
                if w.echo_ts && t.timestamps().map(|(_, ecr)| ecr) != Some(self.my_ts) {
                    return mismatch("TSecr is not the last TSval sent");
                }
                // Follow the device's sequence space.
                if t.flags & SYN != 0 {
                    self.their_isn = Some(t.seq);
                    self.rcv_nxt = Some(t.seq.wrapping_add(1));
                    self.ts_on = t.timestamps().is_some();
                } else if self.rcv_nxt == Some(t.seq) {
                    self.their_fin |= t.flags & FIN != 0;
                    let used = t.payload_len as u32 + u32::from(t.flags & FIN != 0);
                    self.rcv_nxt = Some(t.seq.wrapping_add(used));
                }
                if let Some((val, _)) = t.timestamps() {
                    self.their_ts_val = val;
                }
                Ok(())
            }
            (Want::Icmp(w), Pkt::Ip(ip)) => {
                let L4::Icmp(m) = &ip.l4 else { return mismatch("not ICMP") };
                if !ip.csum_ok || !m.csum_ok {
                    return mismatch("bad checksum");
                }
                if (m.ty, m.code) != (w.ty, w.code) {
                    return mismatch("type/code");
                }
                if w.echo && self.last_echo.as_ref() != Some(&(m.rest, m.data.clone())) {
                    return mismatch("identifier, sequence or data differ from the request");
                }
                if w.quote {
                    let n = (usize::from(self.last_dgram[0] & 0x0f) * 4 + 8).min(self.last_dgram.len());
                    if m.data.len() < n || m.data[..n] != self.last_dgram[..n] {
                        return mismatch("does not quote the datagram's header and first 8 bytes");
                    }
                }
                if w.rest.is_some_and(|r| r != m.rest) {
                    return mismatch("pointer (bytes 4-7)");
                }
                if w.ip_opts.is_some_and(|want| want == ip.options.is_empty()) {
                    return mismatch("IP options");
                }
                Ok(())
            }
            (Want::Arp(_), Pkt::Arp(a)) => {
                let req = self.last_arp.clone().expect("a WantArp step follows an Arp step");
                let ok = a.op == 2
                    && a.spa == req.tpa.unwrap()
                    && a.sha == a.src_mac
                    && a.tpa == req.spa.unwrap()
                    && a.tha == self.env.my_mac;
                if ok {
                    Ok(())
                } else {
                    mismatch("fields")
                }
            }
            _ => mismatch("kind"),
        }
    }
}

fn ip_str(a: Ip4) -> String {
    format!("{}.{}.{}.{}", a[0], a[1], a[2], a[3])
}

fn want_str(w: &Want) -> String {
    match w {
        Want::Tcp(t) => {
            let mut s = wire::flag_str(t.set);
            if !matches!(t.seq, Check::Any) {
                s.push_str(&format!(" seq={:?}", t.seq));
            }
            if !matches!(t.ack, Check::Any) {
                s.push_str(&format!(" ack={:?}", t.ack));
            }
            s
        }
        Want::Icmp(m) => format!("icmp {}/{}", m.ty, m.code),
        Want::Arp(_) => "arp reply".into(),
    }
}
