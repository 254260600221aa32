//! IPv6 for one Ethernet interface, sans-IO: [`Ipv6Layer`].
//!
//! The layer takes in IPv6 packets (the Ethernet payload), answers what
//! belongs to the network layer itself and hands the rest up; it sends what
//! upper layers give it, resolving next hops and fragmenting. It makes no
//! system call and reads no clock: every entry point takes `now`, and the
//! randomness it needs (DAD and report delays, reachable-time jitter,
//! fragment identifications) comes from the seed given to [`Ipv6Layer::new`].
//!
//! # What it does, by RFC
//!
//! - RFC 8200: the header, the extension header chain within
//!   [`Ipv6Config::ext_limits`] ([`ext`] says what each refusal costs),
//!   fragmentation on output and bounded reassembly on input ([`reassembly`]:
//!   overlaps drop the datagram, RFC 5722; atomic fragments are delivered
//!   directly, RFC 6946; first fragments without the whole header chain are
//!   dropped, RFC 7112).
//! - RFC 4443 ([`icmp`]): echo replies; errors rate-limited by a token bucket
//!   and never sent about an error, to a multicast destination (but Packet
//!   Too Big and unknown-option problems), from an unspecified or multicast
//!   source; Packet Too Big delivered up, for the upper layer that matches
//!   its quote to a socket to lower a bounded path MTU cache
//!   ([`Ipv6Layer::lower_path_mtu`]), never under 1280.
//! - RFC 4861 ([`ndp`], [`discovery`]): neighbour solicitation and
//!   advertisement with all validity checks, neighbour unreachability
//!   detection, router solicitation, router advertisements into a bounded
//!   default router list and prefix list, next-hop determination.
//! - RFC 4862 ([`addrs`]): a link-local address from the MAC (modified
//!   EUI-64), static addresses, and with [`Ipv6Config::autoconf`] addresses
//!   from advertised prefixes whose interface identifier is RFC 7217's
//!   stable, opaque one (a keyed hash of the prefix, the MAC and a DAD
//!   counter under [`Ipv6Config::secret`]); duplicate address detection for
//!   each, the 2-hour rule on valid lifetimes.
//! - RFC 3810: MLDv2 reports joining the solicited-node groups of our
//!   addresses, when they change and in answer to queries.
//!
//! # Wiring it into a stack
//!
//! ```text
//! EtherType 0x86dd, frame for us or for a group [`Ipv6Layer::accepts_mac`] says we joined:
//!     match ipv6.receive(now, &mut counters, payload, link_multicast, tx) {
//!         Ipv6Input::Done => {}                          // used or dropped here, counted
//!         Ipv6Input::Deliver(d) if !d.reassembled => upper(&d, &payload[d.payload.clone()]),
//!         Ipv6Input::Deliver(d) => {                     // a reassembled datagram
//!             let buf = ipv6.take_reassembled();
//!             upper(&d, &buf[d.payload.clone()]);
//!             ipv6.restore_reassembled(buf);
//!         }
//!     }
//! sending:  ipv6.select_source(dst), then ipv6.send(now, &mut counters, tx, src, dst, protocol, len, fill)
//! timers:   ipv6.poll_timeout() / ipv6.handle_timeout(now, &mut counters, tx)
//! errors:   ipv6.send_unreachable(...) for a port nobody listens on
//! ```
//!
//! Every packet [`Ipv6Layer::receive`] returns `Done` for has had its outcome
//! counted (`rx_consumed` or one `drop_` counter); a `Deliver` is the
//! caller's to count, as the IPv4 path counts what it delivers.

pub mod addrs;
pub mod discovery;
pub(crate) mod ext;
pub mod icmp;
pub mod ndp;
mod output;
pub(crate) mod reassembly;
#[cfg(test)]
mod tests;

use crate::counters::Counters;
use crate::icmp::TokenBucket;
use crate::phy::TxQueue;
use crate::rand::Rng;
use crate::time::{Duration, Instant};
use core::ops::Range;
use std::net::Ipv6Addr;
use ustack_wire::{EthernetAddress, IpProtocol, Ipv6Cidr, Ipv6ExtLimits, Ipv6Packet, Ipv6Repr, IPV6_HEADER_LEN};

use addrs::{AddressTable, Prefixes, Routers};
use ext::{Start, Walk};
use icmp::PathMtu6;
use ndp::NdpCache;
use reassembly::{Fragment, Ipv6Reassembly, Outcome};

pub use addrs::{AddrOrigin, AddrState, Ipv6Address};
pub use output::Ipv6SendError;

/// The tunables of one interface's IPv6, each with its documented default.
#[derive(Clone, Debug)]
pub struct Ipv6Config {
    /// Our link-layer address: the link-local address and SLAAC's identifier derive from it.
    pub mac: EthernetAddress,
    /// Static addresses (`--ip6 ADDR/N`); each prefix is on-link. Default none.
    pub addresses: Vec<Ipv6Cidr>,
    /// Form addresses from the prefixes routers advertise (SLAAC, `--ip6
    /// auto`). Default false. Router solicitations are sent either way.
    pub autoconf: bool,
    /// The secret key of RFC 7217's stable identifiers; the caller draws it
    /// once from its RNG (and keeps it, for addresses stable across restarts).
    pub secret: [u8; 16],
    /// Largest IPv6 packet the link carries (at least 1280). Default 1500.
    pub mtu: usize,
    /// Hop limit of the packets we originate, until a router says otherwise. Default 64.
    pub hop_limit: u8,
    /// Bounds on the extension header chain of one packet.
    pub ext_limits: Ipv6ExtLimits,
    /// Datagrams being reassembled at once; 0 turns reassembly off. Default 16.
    pub reassembly_max_datagrams: usize,
    /// Bytes of fragment data held for reassembly, in all. Default 256 KiB.
    pub reassembly_memory: usize,
    /// How long a datagram may take to arrive from its first fragment. Default 60 s (RFC 8200).
    pub reassembly_timeout: Duration,
    /// ICMPv6 errors per second, sustained. Default 1000.
    pub icmp_error_rate: u32,
    /// ICMPv6 errors back to back before the rate applies. Default 50.
    pub icmp_error_burst: u32,
    /// Neighbour cache entries of any state. Default 1024.
    pub neighbor_cache_size: usize,
    /// Neighbours being resolved at once. Default 256.
    pub neighbor_max_incomplete: usize,
    /// Packets waiting per unresolved neighbour (at most 8). Default 3.
    pub neighbor_pending_per_entry: usize,
    /// Packets waiting for resolution in all. Default 64.
    pub neighbor_pending_total: usize,
    /// BaseReachableTime (RFC 4861 §10): how long a confirmation holds, until
    /// a router advertises another; the time used is drawn between 0.5 and
    /// 1.5 times it. Default 30 s.
    pub reachable_time: Duration,
    /// RetransTimer: between solicitations. Default 1 s.
    pub retrans_timer: Duration,
    /// DELAY_FIRST_PROBE_TIME. Default 5 s.
    pub delay_first_probe: Duration,
    /// MAX_MULTICAST_SOLICIT: solicitations before resolution fails. Default 3.
    pub max_multicast_solicit: u8,
    /// MAX_UNICAST_SOLICIT: probes before a neighbour is unreachable. Default 3.
    pub max_unicast_solicit: u8,
    /// DupAddrDetectTransmits (RFC 4862): solicitations before an address is
    /// used; 0 uses addresses at once. Default 1.
    pub dad_transmits: u8,
    /// Default routers remembered. Default 8.
    pub max_routers: usize,
    /// On-link prefixes remembered. Default 16.
    pub max_prefixes: usize,
    /// Addresses of the interface in all (link-local and static included). Default 16.
    pub max_addresses: usize,
    /// MAX_RTR_SOLICITATIONS. Default 3.
    pub router_solicitations: u8,
    /// RTR_SOLICITATION_INTERVAL. Default 4 s.
    pub router_solicitation_interval: Duration,
    /// Destinations whose path MTU was lowered, at most. Default 256.
    pub pmtu_cache_size: usize,
    /// How long a lowered path MTU is kept. Default 10 min.
    pub pmtu_expiry: Duration,
    /// A static default router (on-link: link-local, or inside one of our
    /// prefixes), used beside the routers advertisements teach, after them.
    /// Default none.
    pub gateway: Option<Ipv6Addr>,
}

impl Ipv6Config {
    /// Defaults for the interface at `mac`: link-local address only, no SLAAC.
    pub fn new(mac: EthernetAddress) -> Ipv6Config {
        Ipv6Config {
            mac,
            addresses: Vec::new(),
            autoconf: false,
            secret: [0; 16],
            mtu: 1500,
            hop_limit: 64,
            ext_limits: Ipv6ExtLimits::default(),
            reassembly_max_datagrams: 16,
            reassembly_memory: 256 * 1024,
            reassembly_timeout: Duration::from_secs(60),
            icmp_error_rate: 1000,
            icmp_error_burst: 50,
            neighbor_cache_size: 1024,
            neighbor_max_incomplete: 256,
            neighbor_pending_per_entry: 3,
            neighbor_pending_total: 64,
            reachable_time: Duration::from_secs(30),
            retrans_timer: Duration::from_secs(1),
            delay_first_probe: Duration::from_secs(5),
            max_multicast_solicit: 3,
            max_unicast_solicit: 3,
            dad_transmits: 1,
            max_routers: 8,
            max_prefixes: 16,
            max_addresses: 16,
            router_solicitations: 3,
            router_solicitation_interval: Duration::from_secs(4),
            pmtu_cache_size: 256,
            pmtu_expiry: Duration::from_secs(600),
            gateway: None,
        }
    }
}

/// A packet for an upper layer (TCP, UDP, or an ICMPv6 message the layer
/// does not consume: echo replies and errors other than Packet Too Big).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Ipv6Delivery {
    /// Source address.
    pub src: Ipv6Addr,
    /// Destination address (ours, or a group we joined).
    pub dst: Ipv6Addr,
    /// The upper-layer protocol.
    pub protocol: IpProtocol,
    /// Hop limit as received.
    pub hop_limit: u8,
    /// Traffic class as received.
    pub traffic_class: u8,
    /// Flow label as received.
    pub flow_label: u32,
    /// Where the upper-layer message lies in the packet (or, when
    /// `reassembled`, in [`Ipv6Layer::take_reassembled`]'s buffer).
    pub payload: Range<usize>,
    /// The whole packet's length there: `..packet_len` is what an ICMPv6
    /// error about it quotes from.
    pub packet_len: usize,
    /// The packet was reassembled from fragments: read it from the layer's buffer.
    pub reassembled: bool,
    /// The destination is multicast (no errors about it, no TCP).
    pub multicast: bool,
}

/// What [`Ipv6Layer::receive`] made of a packet.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Ipv6Input {
    /// For an upper layer; the caller counts its outcome.
    Deliver(Ipv6Delivery),
    /// Used or dropped here, and counted.
    Done,
}

/// The scheduled transmissions of the layer itself.
#[derive(Clone, Copy, Debug, Default)]
struct Schedule {
    /// Router solicitations sent, and when the next is due.
    rs_sent: u8,
    rs_next: Option<Instant>,
    /// When an MLD report is due, and how many unsolicited repeats remain.
    mld_next: Option<Instant>,
    mld_repeats: u8,
    /// The due report answers a query (current-state records) rather than
    /// announcing a change.
    mld_current_state: bool,
}

/// IPv6 on one interface. See the module docs for what it does and how a
/// stack calls it.
pub struct Ipv6Layer {
    cfg: Ipv6Config,
    addrs: AddressTable,
    routers: Routers,
    prefixes: Prefixes,
    neighbors: NdpCache,
    reassembly: Ipv6Reassembly,
    path_mtus: PathMtu6,
    errors: TokenBucket,
    rng: Rng,
    /// The hop limit in use (a router advertisement may change it).
    hop_limit: u8,
    /// The link MTU in use (a router advertisement may lower it).
    mtu: usize,
    base_reachable: Duration,
    frag_ident: u32,
    schedule: Schedule,
    /// Where a packet larger than the MTU is written before it is cut into
    /// fragments; allocated on the first such packet, never grown.
    scratch: Vec<u8>,
    /// Where expired reassembly quotes are copied for time exceeded.
    quote: Vec<u8>,
}

impl core::fmt::Debug for Ipv6Layer {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("Ipv6Layer").field("addresses", &self.addrs).field("neighbors", &self.neighbors.len()).finish()
    }
}

impl Ipv6Layer {
    /// IPv6 on the interface `cfg` describes, starting at `now`: the
    /// link-local and static addresses begin duplicate address detection,
    /// and a router solicitation and an MLD report are scheduled after a
    /// random delay of up to a second (RFC 4861 §6.3.7, RFC 3810 §6.1).
    pub fn new(cfg: Ipv6Config, seed: u64, now: Instant) -> Ipv6Layer {
        let mut rng = Rng::new(seed);
        let hash_key = rng.next_u64();
        let mut cfg = cfg;
        cfg.mtu = cfg.mtu.max(ustack_wire::IPV6_MIN_MTU);
        let mut layer = Ipv6Layer {
            addrs: AddressTable::new(&cfg),
            routers: Routers::new(cfg.max_routers),
            prefixes: Prefixes::new(cfg.max_prefixes),
            neighbors: NdpCache::new(&cfg, hash_key),
            reassembly: Ipv6Reassembly::new(&cfg, hash_key.rotate_left(17)),
            path_mtus: PathMtu6::new(&cfg, hash_key.rotate_left(33)),
            errors: TokenBucket::new(cfg.icmp_error_rate, cfg.icmp_error_burst),
            hop_limit: cfg.hop_limit,
            mtu: cfg.mtu,
            base_reachable: cfg.reachable_time,
            frag_ident: rng.next_u32(),
            schedule: Schedule::default(),
            scratch: Vec::new(),
            quote: Vec::new(),
            rng,
            cfg,
        };
        layer.set_reachable_time(layer.base_reachable);
        let link_local = Ipv6Cidr { addr: ustack_wire::ipv6_link_local(layer.cfg.mac), prefix_len: 64 };
        let mut counters = Counters::default();
        layer.add_address(now, link_local, AddrOrigin::LinkLocal, &mut counters);
        for a in layer.cfg.addresses.clone() {
            layer.add_address(now, a, AddrOrigin::Static, &mut counters);
        }
        let delay = layer.random_delay(Duration::from_secs(1));
        layer.schedule.rs_next = Some(now + delay);
        layer
    }

    /// The configuration in use.
    pub fn config(&self) -> &Ipv6Config {
        &self.cfg
    }

    /// The interface's addresses, tentative ones included, with their state.
    pub fn addresses(&self) -> impl Iterator<Item = &Ipv6Address> + '_ {
        self.addrs.iter()
    }

    /// The neighbour cache.
    pub fn neighbors(&self) -> &NdpCache {
        &self.neighbors
    }

    /// Default routers advertisements taught, preferred first (the static
    /// one is [`Ipv6Config::gateway`]).
    pub fn default_routers(&self) -> impl Iterator<Item = Ipv6Addr> + '_ {
        self.routers.iter()
    }

    /// On-link prefixes learned from router advertisements.
    pub fn prefixes(&self) -> impl Iterator<Item = Ipv6Cidr> + '_ {
        self.prefixes.iter()
    }

    /// Datagrams in reassembly, and the bytes of fragment data they hold.
    pub fn reassembly_held(&self) -> (usize, usize) {
        (self.reassembly.datagrams(), self.reassembly.bytes_held())
    }

    /// Destinations in the path MTU cache.
    pub fn path_mtu_entries(&self) -> usize {
        self.path_mtus.len()
    }

    /// The largest packet to send towards `dst` now.
    pub fn path_mtu(&self, now: Instant, dst: Ipv6Addr) -> usize {
        self.path_mtus.get(now, dst).map_or(self.mtu, |m| m.min(self.mtu))
    }

    /// The hop limit for packets we originate.
    pub fn hop_limit(&self) -> u8 {
        self.hop_limit
    }

    /// An upper layer saw forward progress with `neighbor` (a TCP ACK of
    /// new data): its cache entry is REACHABLE again without probing.
    pub fn confirm_reachable(&mut self, now: Instant, neighbor: Ipv6Addr) {
        self.neighbors.confirm_reachable(now, neighbor);
    }

    /// Whether a frame sent to `mac` is for us: ours, or the group address
    /// of all-nodes or of a solicited-node group we joined (RFC 2464 §7).
    pub fn accepts_mac(&self, mac: EthernetAddress) -> bool {
        if mac == self.cfg.mac {
            return true;
        }
        let all_nodes = EthernetAddress::from_ipv6_multicast(ustack_wire::IPV6_ALL_NODES);
        mac == all_nodes || self.addrs.iter().any(|a| EthernetAddress::from_ipv6_multicast(a.solicited_node()) == mac)
    }

    /// Whether `dst` is for us: a usable unicast address of ours, all-nodes,
    /// or a solicited-node group of any of our addresses (tentative ones too:
    /// duplicate address detection listens there).
    pub fn accepts(&self, dst: Ipv6Addr) -> bool {
        if dst.is_multicast() {
            return dst == ustack_wire::IPV6_ALL_NODES || self.addrs.iter().any(|a| a.solicited_node() == dst);
        }
        self.addrs.is_usable(dst)
    }

    fn random_delay(&mut self, max: Duration) -> Duration {
        let micros = u64::try_from(max.as_micros()).unwrap_or(u64::MAX).max(1);
        Duration::from_micros(self.rng.next_u64() % micros)
    }

    /// ReachableTime: the base, times a random factor in [0.5, 1.5) (RFC 4861 §6.3.2).
    fn set_reachable_time(&mut self, base: Duration) {
        self.base_reachable = base;
        let micros = u64::try_from(base.as_micros()).unwrap_or(u64::MAX / 2);
        let jittered = micros / 2 + self.rng.next_u64() % micros.max(1);
        self.neighbors.set_times(Some(Duration::from_micros(jittered)), None);
    }

    /// Handle one IPv6 packet (the Ethernet payload, padding allowed).
    /// `link_multicast` says the frame was sent to a group or broadcast MAC.
    /// Replies (echo, neighbour advertisements, errors) go to `tx`.
    pub fn receive<T: TxQueue>(
        &mut self,
        now: Instant,
        counters: &mut Counters,
        packet: &[u8],
        link_multicast: bool,
        tx: &mut T,
    ) -> Ipv6Input {
        counters.ipv6_rx += 1;
        let parsed = Ipv6Packet::new_checked(packet).and_then(|p| Ipv6Repr::parse(&p));
        let Ok(ip) = parsed else {
            counters.drop_ipv6_malformed += 1;
            return Ipv6Input::Done;
        };
        let packet = &packet[..IPV6_HEADER_LEN + ip.payload_len];
        let (src, dst) = (ip.src_addr, ip.dst_addr);
        if !self.accepts(dst) {
            counters.drop_ipv6_other_host += 1;
            return Ipv6Input::Done;
        }
        // RFC 4291 §2.5.2-3, §2.7: never from a group, the loopback, or
        // ourselves; from nobody (::) only for neighbour discovery and MLD,
        // whose checks come later.
        let unspecified_ok =
            src.is_unspecified() && ip.next_header != IpProtocol::Tcp && ip.next_header != IpProtocol::Udp;
        if src.is_multicast()
            || src.is_loopback()
            || (src.is_unspecified() && !unspecified_ok)
            || self.addrs.is_usable(src)
        {
            counters.drop_ipv6_martian += 1;
            return Ipv6Input::Done;
        }
        self.expire_fragments(now, counters, tx);
        self.process(now, counters, &ip, packet, false, link_multicast, tx)
    }

    /// Everything after the header checks: the extension headers, then
    /// reassembly or the upper layer. `packet` is trimmed to its length.
    #[allow(clippy::too_many_arguments)]
    fn process<T: TxQueue>(
        &mut self,
        now: Instant,
        counters: &mut Counters,
        ip: &Ipv6Repr,
        packet: &[u8],
        reassembled: bool,
        link_multicast: bool,
        tx: &mut T,
    ) -> Ipv6Input {
        let payload = &packet[IPV6_HEADER_LEN..];
        let multicast = ip.dst_addr.is_multicast();
        let limits = self.cfg.ext_limits;
        let chain = match ext::walk(ip.next_header, payload, Start::PAYLOAD, multicast, &limits, counters) {
            Walk::Accept(chain) => chain,
            Walk::Refuse(problem) => {
                if let Some(p) = problem {
                    self.send_param_problem(now, counters, tx, packet, p, link_multicast);
                }
                return Ipv6Input::Done;
            }
        };
        let (mut upper, mut offset, mut named_at) = (chain.upper_layer, chain.upper_offset, chain.upper_named_at);
        if let Some(frag) = chain.fragment {
            counters.ipv6_frag_rx += 1;
            if reassembled {
                // A fragment header inside a reassembled datagram.
                counters.drop_ipv6_frag_malformed += 1;
                return Ipv6Input::Done;
            }
            let data = &payload[chain.upper_offset..];
            let start = Start {
                base: chain.upper_offset,
                headers: chain.header_count,
                named_at: IPV6_HEADER_LEN + chain.fragment_at,
            };
            if !frag.is_atomic() {
                return self.receive_fragment(now, counters, ip, packet, &chain, data, link_multicast, tx);
            }
            // RFC 6946: an atomic fragment is a whole packet; what follows
            // the fragment header is walked on and delivered.
            counters.ipv6_atomic_frag_rx += 1;
            let rest = match ext::walk(frag.next_header, data, start, multicast, &limits, counters) {
                Walk::Accept(rest) => rest,
                Walk::Refuse(problem) => {
                    if let Some(p) = problem {
                        self.send_param_problem(now, counters, tx, packet, p, link_multicast);
                    }
                    return Ipv6Input::Done;
                }
            };
            if rest.fragment.is_some() {
                counters.drop_ipv6_frag_malformed += 1;
                return Ipv6Input::Done;
            }
            upper = rest.upper_layer;
            offset = start.base + rest.upper_offset;
            named_at = if rest.header_count == 0 { start.named_at } else { start.base + rest.upper_named_at };
        }
        let delivery = Ipv6Delivery {
            src: ip.src_addr,
            dst: ip.dst_addr,
            protocol: upper,
            hop_limit: ip.hop_limit,
            traffic_class: ip.traffic_class,
            flow_label: ip.flow_label,
            payload: IPV6_HEADER_LEN + offset..packet.len(),
            packet_len: packet.len(),
            reassembled,
            multicast,
        };
        match upper {
            IpProtocol::Tcp | IpProtocol::Udp => Ipv6Input::Deliver(delivery),
            IpProtocol::Icmpv6 => self.receive_icmp(now, counters, ip, packet, delivery, tx),
            IpProtocol::Ipv6NoNxt => {
                counters.drop_ipv6_unknown_next_header += 1;
                Ipv6Input::Done
            }
            _ => {
                counters.drop_ipv6_unknown_next_header += 1;
                let p = ext::Problem {
                    code: ustack_wire::Icmpv6ParamProblem::UnrecognizedNextHeader,
                    pointer: u32::try_from(named_at).unwrap_or(u32::MAX),
                    multicast_ok: false,
                };
                self.send_param_problem(now, counters, tx, packet, p, link_multicast);
                Ipv6Input::Done
            }
        }
    }

    /// A fragment that is not atomic: check it, hold it, and process the
    /// datagram it completes.
    #[allow(clippy::too_many_arguments)]
    fn receive_fragment<T: TxQueue>(
        &mut self,
        now: Instant,
        counters: &mut Counters,
        ip: &Ipv6Repr,
        packet: &[u8],
        chain: &ustack_wire::Ipv6ExtChain<'_>,
        data: &[u8],
        link_multicast: bool,
        tx: &mut T,
    ) -> Ipv6Input {
        use ustack_wire::Icmpv6ParamProblem as Pp;
        let Some(frag) = chain.fragment else { return Ipv6Input::Done };
        let problem = |code, pointer: usize| ext::Problem {
            code,
            pointer: u32::try_from(pointer).unwrap_or(u32::MAX),
            multicast_ok: false,
        };
        // RFC 8200 §4.5: all but the last carry a multiple of 8 bytes
        // (parameter problem at the payload length field); nothing may
        // reach past 65,535 bytes (at the fragment offset field).
        if frag.more_frags && (data.is_empty() || !data.len().is_multiple_of(8)) {
            counters.drop_ipv6_frag_malformed += 1;
            self.send_param_problem(now, counters, tx, packet, problem(Pp::ErroneousHeaderField, 4), link_multicast);
            return Ipv6Input::Done;
        }
        let offset = usize::from(frag.frag_offset);
        if offset + data.len() > usize::from(u16::MAX) {
            counters.drop_ipv6_reasm_too_big += 1;
            let at = IPV6_HEADER_LEN + chain.fragment_at + 2;
            self.send_param_problem(now, counters, tx, packet, problem(Pp::ErroneousHeaderField, at), link_multicast);
            return Ipv6Input::Done;
        }
        // RFC 7112: the first fragment holds the whole header chain and the
        // upper-layer header.
        if offset == 0 && !complete_chain(frag.next_header, data, &self.cfg.ext_limits) {
            counters.drop_ipv6_frag_incomplete_chain += 1;
            self.send_param_problem(now, counters, tx, packet, problem(Pp::IncompleteHeaderChain, 0), link_multicast);
            return Ipv6Input::Done;
        }
        let f = Fragment {
            src: ip.src_addr,
            dst: ip.dst_addr,
            ident: frag.ident,
            offset,
            more: frag.more_frags,
            unfragmentable: &packet[..IPV6_HEADER_LEN + chain.fragment_at],
            named_at: ext::field_naming(&packet[IPV6_HEADER_LEN..], chain.fragment_at),
            next_header: frag.next_header.into(),
            data,
        };
        let Outcome::Complete { len } = self.reassembly.insert(now, &f, counters) else { return Ipv6Input::Done };
        let buffer = self.reassembly.take_assembled();
        let whole = &buffer[..len];
        let result = match Ipv6Packet::new_checked(whole).and_then(|p| Ipv6Repr::parse(&p)) {
            Ok(repr) => self.process(now, counters, &repr, whole, true, link_multicast, tx),
            Err(_) => {
                counters.drop_ipv6_malformed += 1;
                Ipv6Input::Done
            }
        };
        self.reassembly.restore_assembled(buffer);
        result
    }

    /// The buffer a reassembled datagram ([`Ipv6Delivery::reassembled`]) is
    /// in, lent out while it is delivered; give it back with
    /// [`Ipv6Layer::restore_reassembled`] before the next `receive`.
    pub fn take_reassembled(&mut self) -> Vec<u8> {
        self.reassembly.take_assembled()
    }

    /// Return the buffer [`Ipv6Layer::take_reassembled`] lent.
    pub fn restore_reassembled(&mut self, buffer: Vec<u8>) {
        self.reassembly.restore_assembled(buffer);
    }

    /// Abandon the datagrams whose time is up, with ICMPv6 time exceeded
    /// (code 1) for those whose first fragment came. Cheap when nothing is due.
    fn expire_fragments<T: TxQueue>(&mut self, now: Instant, counters: &mut Counters, tx: &mut T) {
        if self.reassembly.poll_timeout().is_none_or(|t| t > now) {
            return;
        }
        if self.quote.is_empty() {
            self.quote = vec![0; icmp::MAX_QUOTE];
        }
        let mut quote = core::mem::take(&mut self.quote);
        // Each expired datagram's quote overwrites the last: one time
        // exceeded per pass answers for the latest (errors are rate-limited
        // anyway); every one is counted.
        let mut last = None;
        self.reassembly.expire(now, &mut quote, |q| {
            counters.drop_ipv6_reasm_timeout += 1;
            if let Some(q) = q {
                last = Some(q.len());
            }
        });
        if let Some(len) = last {
            self.send_time_exceeded_reassembly(now, counters, tx, &quote[..len]);
        }
        self.quote = quote;
    }

    /// When [`Ipv6Layer::handle_timeout`] next has work.
    pub fn poll_timeout(&self) -> Option<Instant> {
        [
            self.reassembly.poll_timeout(),
            self.neighbors.poll_timeout(),
            self.addrs.poll_timeout(),
            self.routers.poll_timeout(),
            self.prefixes.poll_timeout(),
            self.schedule.rs_next,
            self.schedule.mld_next,
        ]
        .into_iter()
        .flatten()
        .min()
    }

    /// Do what is due at `now`: reassembly expiry, neighbour solicitations
    /// and probes, duplicate address detection, address, router and prefix
    /// lifetimes, router solicitations, MLD reports.
    pub fn handle_timeout<T: TxQueue>(&mut self, now: Instant, counters: &mut Counters, tx: &mut T) {
        self.expire_fragments(now, counters, tx);
        self.neighbor_timers(now, counters, tx);
        self.address_timers(now, counters, tx);
        self.routers.expire(now);
        self.prefixes.expire(now);
        if self.schedule.rs_next.is_some_and(|t| t <= now) {
            self.router_solicit_due(now, counters, tx);
        }
        if self.schedule.mld_next.is_some_and(|t| t <= now) {
            self.mld_report_due(now, counters, tx);
        }
    }
}

/// RFC 7112: whether a first fragment's data holds the rest of the header
/// chain and the start of the upper-layer header (TCP's 20 bytes, UDP's 8,
/// ICMPv6's 4).
fn complete_chain(first: IpProtocol, data: &[u8], limits: &Ipv6ExtLimits) -> bool {
    match ustack_wire::Ipv6ExtChain::walk(first, data, limits) {
        Err(ustack_wire::Ipv6ExtError::Truncated) => false,
        Err(_) => true, // refused after reassembly, with its own counter
        Ok(chain) => {
            let need = match chain.upper_layer {
                IpProtocol::Tcp => 20,
                IpProtocol::Udp => 8,
                IpProtocol::Icmpv6 => 4,
                _ => 0,
            };
            data.len() >= chain.upper_offset + need
        }
    }
}
