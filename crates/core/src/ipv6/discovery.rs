//! Neighbour discovery messages (RFC 4861), duplicate address detection and
//! SLAAC (RFC 4862), and MLDv2 reports (RFC 3810) for one interface.
//!
//! Validity checks on receipt (RFC 4861 §6.1, §7.1), each failure counted
//! as `drop_ndp_invalid`: hop limit 255 (the sender is on the link); ICMP
//! code 0 and options of non-zero length (the wire parser); a target that is
//! not multicast; a solicitation from the unspecified address only to a
//! solicited-node group and without a link-layer address option; a
//! solicited advertisement never to a multicast destination; a router
//! advertisement only from a link-local address. Router solicitations
//! (we are not a router) and redirects are ignored (`drop_icmpv6_ignored`).
//!
//! MLD queries must come from a link-local address with hop limit 1 (RFC
//! 3810 §5.1.14, §6.2); a report answers a general query or one for a group
//! we joined, after a random delay within the query's maximum response
//! delay. Reports join the solicited-node group of every address (the
//! all-nodes group is never reported, §6).

use super::addrs::{lifetime_end, slaac_address, AddrOrigin, AddrState, AddressTable, Ipv6Address};
use super::ndp::{AdvertOutcome, NdpTimer};
use super::output::{is_link_local, pick_source};
use super::Ipv6Layer;
use crate::counters::Counters;
use crate::ip::write_frame;
use crate::phy::{TxMeta, TxQueue};
use crate::time::{Duration, Instant};
use std::net::Ipv6Addr;
use ustack_wire::{
    ipv6_solicited_node, ChecksumMode, EtherType, EthernetAddress, Icmpv6Packet, Icmpv6Repr, IpProtocol, Ipv6Cidr,
    Ipv6Option, Ipv6OptionsRepr, Ipv6Packet, Ipv6Repr, MldAddressRecordRepr, MldRecordType, MldRecords, MldRepr,
    NdiscNeighborFlags, NdiscPrefixInfo, NdiscRepr, IPV6_ALL_MLDV2_ROUTERS, IPV6_ALL_NODES, IPV6_ALL_ROUTERS,
    IPV6_HEADER_LEN, IPV6_ROUTER_ALERT_MLD,
};

/// Hop limit of every neighbour discovery message (RFC 4861 §6.1, §7.1).
const ND_HOP_LIMIT: u8 = 255;
/// RFC 4862 §5.5.3 (e): a valid lifetime under two hours from an
/// unauthenticated advertisement shortens an address no further than this.
const TWO_HOURS: Duration = Duration::from_secs(2 * 3600);
/// RFC 7217 §6: identifiers tried after a duplicate, at most.
const IDGEN_RETRIES: u8 = 3;
/// RFC 3810 §9.2: unsolicited reports are repeated once (robustness 2), a
/// second apart (§9.11).
const MLD_REPEAT: Duration = Duration::from_secs(1);
/// The most reports' records: one per address.
const MLD_MAX_WAIT: Duration = Duration::from_secs(10);

/// Whether `a` is a solicited-node group, `ff02::1:ffXX:XXXX`.
fn is_solicited_node(a: Ipv6Addr) -> bool {
    let s = a.segments();
    s[..5] == [0xff02, 0, 0, 0, 0] && s[5] == 1 && s[6] & 0xff00 == 0xff00
}

/// Write one ICMPv6 message straight to the link (neighbour discovery and
/// MLD messages go to a known link address: a group, or a resolved neighbour).
#[allow(clippy::too_many_arguments)]
fn write_icmp<T: TxQueue>(
    counters: &mut Counters,
    tx: &mut T,
    our_mac: EthernetAddress,
    dst_mac: EthernetAddress,
    src: Ipv6Addr,
    dst: Ipv6Addr,
    hop_limit: u8,
    repr: &Icmpv6Repr<'_>,
) -> bool {
    let len = repr.buffer_len();
    let ip = Ipv6Repr {
        src_addr: src,
        dst_addr: dst,
        next_header: IpProtocol::Icmpv6,
        payload_len: len,
        hop_limit,
        traffic_class: 0,
        flow_label: 0,
    };
    write_frame(counters, tx, TxMeta::default(), our_mac, dst_mac, EtherType::Ipv6, IPV6_HEADER_LEN + len, |b| {
        ip.emit(&mut Ipv6Packet::new_unchecked(&mut b[..IPV6_HEADER_LEN]));
        repr.emit(&mut Icmpv6Packet::new_unchecked(&mut b[IPV6_HEADER_LEN..]), src, dst, ChecksumMode::Verify);
    })
}

/// A neighbour solicitation for `target`: multicast to its solicited-node
/// group, or unicast to `unicast` (a NUD probe), from an address of ours
/// with our link-layer address. Nothing while all our addresses are tentative.
fn solicit<T: TxQueue>(
    counters: &mut Counters,
    tx: &mut T,
    addrs: &AddressTable,
    our_mac: EthernetAddress,
    target: Ipv6Addr,
    unicast: Option<EthernetAddress>,
) {
    let Some(src) = pick_source(addrs, target) else { return };
    let (dst, dst_mac) = match unicast {
        Some(mac) => (target, mac),
        None => {
            let group = ipv6_solicited_node(target);
            (group, EthernetAddress::from_ipv6_multicast(group))
        }
    };
    let ns = Icmpv6Repr::Ndisc(NdiscRepr::NeighborSolicit { target_addr: target, lladdr: Some(our_mac) });
    if write_icmp(counters, tx, our_mac, dst_mac, src, dst, ND_HOP_LIMIT, &ns) {
        counters.ndp_solicitations_sent += 1;
    }
}

impl Ipv6Layer {
    /// A neighbour solicitation for `target` (see [`solicit`]).
    pub(crate) fn send_solicit<T: TxQueue>(
        &mut self,
        _now: Instant,
        counters: &mut Counters,
        tx: &mut T,
        target: Ipv6Addr,
        unicast: Option<EthernetAddress>,
    ) {
        solicit(counters, tx, &self.addrs, self.cfg.mac, target, unicast);
    }

    /// A neighbour discovery message, checksum verified.
    pub(crate) fn receive_ndisc<T: TxQueue>(
        &mut self,
        now: Instant,
        counters: &mut Counters,
        ip: &Ipv6Repr,
        repr: NdiscRepr<'_>,
        tx: &mut T,
    ) {
        if ip.hop_limit != ND_HOP_LIMIT {
            counters.drop_ndp_invalid += 1;
            return;
        }
        match repr {
            NdiscRepr::NeighborSolicit { target_addr, lladdr } => {
                self.receive_ns(now, counters, ip, target_addr, lladdr, tx)
            }
            NdiscRepr::NeighborAdvert { flags, target_addr, lladdr } => {
                self.receive_na(now, counters, ip, flags, target_addr, lladdr, tx)
            }
            NdiscRepr::RouterAdvert { .. } => self.receive_ra(now, counters, ip, &repr, tx),
            NdiscRepr::RouterSolicit { .. } | NdiscRepr::Redirect { .. } => counters.drop_icmpv6_ignored += 1,
        }
    }

    fn receive_ns<T: TxQueue>(
        &mut self,
        now: Instant,
        counters: &mut Counters,
        ip: &Ipv6Repr,
        target: Ipv6Addr,
        lladdr: Option<EthernetAddress>,
        tx: &mut T,
    ) {
        let from_nobody = ip.src_addr.is_unspecified();
        if target.is_multicast() || (from_nobody && (!is_solicited_node(ip.dst_addr) || lladdr.is_some())) {
            counters.drop_ndp_invalid += 1;
            return;
        }
        let Some(ours) = self.addrs.get(target).copied() else {
            counters.drop_ndp_not_our_target += 1;
            return;
        };
        counters.rx_consumed += 1;
        if ours.state == AddrState::Tentative {
            // RFC 4862 §5.4.3: another node probing for the same address
            // means it is a duplicate; a resolution for it is not answered.
            if from_nobody {
                self.dad_failed(now, counters, target);
            }
            return;
        }
        if let (false, Some(mac)) = (from_nobody, lladdr) {
            let Ipv6Layer { neighbors, cfg, .. } = self;
            neighbors.learn(now, ip.src_addr, mac, true, |m, p| {
                write_frame(counters, tx, TxMeta::default(), cfg.mac, m, EtherType::Ipv6, p.len(), |b| {
                    b.copy_from_slice(p)
                });
            });
            counters.ndp_neighbor_evicted += self.neighbors.take_evicted();
        }
        // RFC 4861 §7.2.4: solicited, overriding, to the solicitor; to all
        // nodes, unsolicited, when it probed from the unspecified address.
        let dst = if from_nobody { IPV6_ALL_NODES } else { ip.src_addr };
        let flags = NdiscNeighborFlags { router: false, solicited: !from_nobody, override_: true };
        let na =
            Icmpv6Repr::Ndisc(NdiscRepr::NeighborAdvert { flags, target_addr: target, lladdr: Some(self.cfg.mac) });
        let header = Ipv6Repr {
            src_addr: target,
            dst_addr: dst,
            next_header: IpProtocol::Icmpv6,
            payload_len: na.buffer_len(),
            hop_limit: ND_HOP_LIMIT,
            traffic_class: 0,
            flow_label: 0,
        };
        let sent = self.send_with(now, counters, tx, header, |b| {
            na.emit(&mut Icmpv6Packet::new_unchecked(b), target, dst, ChecksumMode::Verify)
        });
        if sent.is_ok() {
            counters.ndp_advertisements_sent += 1;
        }
    }

    #[allow(clippy::too_many_arguments)]
    fn receive_na<T: TxQueue>(
        &mut self,
        now: Instant,
        counters: &mut Counters,
        ip: &Ipv6Repr,
        flags: NdiscNeighborFlags,
        target: Ipv6Addr,
        lladdr: Option<EthernetAddress>,
        tx: &mut T,
    ) {
        if target.is_multicast() || (ip.dst_addr.is_multicast() && flags.solicited) {
            counters.drop_ndp_invalid += 1;
            return;
        }
        if let Some(ours) = self.addrs.get(target).copied() {
            // Someone else has (or claims) our address.
            counters.rx_consumed += 1;
            if ours.state == AddrState::Tentative {
                self.dad_failed(now, counters, target);
            }
            return;
        }
        let Ipv6Layer { neighbors, cfg, routers, .. } = self;
        let outcome = neighbors.advert(now, target, lladdr, flags, |m, p| {
            write_frame(counters, tx, TxMeta::default(), cfg.mac, m, EtherType::Ipv6, p.len(), |b| {
                b.copy_from_slice(p)
            });
        });
        match outcome {
            AdvertOutcome::NoEntry => counters.drop_ndp_unsolicited_na += 1,
            AdvertOutcome::Ignored => counters.rx_consumed += 1,
            AdvertOutcome::Updated { router_lost } => {
                counters.rx_consumed += 1;
                if router_lost {
                    routers.remove(target);
                }
            }
        }
    }

    fn receive_ra<T: TxQueue>(
        &mut self,
        now: Instant,
        counters: &mut Counters,
        ip: &Ipv6Repr,
        repr: &NdiscRepr<'_>,
        tx: &mut T,
    ) {
        let NdiscRepr::RouterAdvert {
            hop_limit,
            router_lifetime,
            reachable_time,
            retrans_time,
            lladdr,
            mtu,
            prefixes,
            ..
        } = *repr
        else {
            return;
        };
        if !is_link_local(ip.src_addr) {
            counters.drop_ndp_invalid += 1;
            return;
        }
        counters.rx_consumed += 1;
        counters.ndp_router_advertisements_rx += 1;
        let router = ip.src_addr;
        if hop_limit != 0 {
            self.hop_limit = hop_limit;
        }
        // RFC 4861 §6.2.1: at most an hour.
        if reachable_time != 0 {
            let base = Duration::from_millis(u64::from(reachable_time.min(3_600_000)));
            if base != self.base_reachable {
                self.set_reachable_time(base);
            }
        }
        if retrans_time != 0 {
            self.neighbors.set_times(None, Some(Duration::from_millis(u64::from(retrans_time))));
        }
        if let Some(m) = mtu.and_then(|m| usize::try_from(m).ok()) {
            if (ustack_wire::IPV6_MIN_MTU..=self.cfg.mtu).contains(&m) {
                self.mtu = m;
            }
        }
        if let Some(mac) = lladdr {
            let Ipv6Layer { neighbors, cfg, .. } = self;
            neighbors.learn(now, router, mac, true, |m, p| {
                write_frame(counters, tx, TxMeta::default(), cfg.mac, m, EtherType::Ipv6, p.len(), |b| {
                    b.copy_from_slice(p)
                });
            });
            counters.ndp_neighbor_evicted += self.neighbors.take_evicted();
        }
        self.neighbors.set_router(router);
        if !self.routers.update(now, router, Duration::from_secs(u64::from(router_lifetime))) {
            counters.ndp_router_list_full += 1;
        }
        for p in prefixes.iter() {
            self.receive_prefix(now, counters, &p);
        }
        // Heard from a router: stop soliciting.
        self.schedule.rs_next = None;
    }

    /// One prefix information option (RFC 4861 §6.3.4, RFC 4862 §5.5.3).
    fn receive_prefix(&mut self, now: Instant, counters: &mut Counters, p: &NdiscPrefixInfo) {
        let Some(cidr) = Ipv6Cidr::new(p.prefix, p.prefix_len) else { return };
        let cidr = Ipv6Cidr { addr: cidr.network(), ..cidr };
        if is_link_local(cidr.addr) || cidr.addr.is_multicast() {
            return;
        }
        let valid_end = lifetime_end(now, p.valid_lifetime);
        if p.on_link && !self.prefixes.update(now, cidr, valid_end) {
            counters.ndp_prefix_list_full += 1;
        }
        // SLAAC: a /64 (Ethernet's identifiers are 64 bits), preferred
        // lifetime no longer than the valid one.
        if !p.autonomous || !self.cfg.autoconf || p.preferred_lifetime > p.valid_lifetime || cidr.prefix_len != 64 {
            return;
        }
        let preferred_end = lifetime_end(now, p.preferred_lifetime);
        if let Some(a) = self.addrs.slaac_for(cidr) {
            // The two-hour rule (RFC 4862 §5.5.3 (e)).
            let remaining = a.valid_until.saturating_since(now);
            if valid_end > now + TWO_HOURS || valid_end > a.valid_until {
                a.valid_until = valid_end;
            } else if remaining > TWO_HOURS {
                a.valid_until = now + TWO_HOURS;
            }
            a.preferred_until = preferred_end;
            if a.state == AddrState::Deprecated && preferred_end > now {
                a.state = AddrState::Preferred;
            }
            return;
        }
        if p.valid_lifetime == 0 {
            return;
        }
        let addr = slaac_address(&self.cfg.secret, cidr.addr, self.cfg.mac, 0);
        let origin = AddrOrigin::Slaac { dad_counter: 0 };
        self.insert_address(now, Ipv6Cidr { addr, prefix_len: 64 }, origin, preferred_end, valid_end, counters);
    }

    /// Add an address without lifetimes (link-local and static ones).
    pub(crate) fn add_address(&mut self, now: Instant, cidr: Ipv6Cidr, origin: AddrOrigin, counters: &mut Counters) {
        self.insert_address(now, cidr, origin, Instant::NEVER, Instant::NEVER, counters);
    }

    /// Add an address: tentative while duplicate address detection runs
    /// (its first solicitation after a random delay of up to a second, RFC
    /// 4862 §5.4.2), with an MLD report joining its solicited-node group.
    fn insert_address(
        &mut self,
        now: Instant,
        cidr: Ipv6Cidr,
        origin: AddrOrigin,
        preferred_until: Instant,
        valid_until: Instant,
        counters: &mut Counters,
    ) {
        let dad = self.cfg.dad_transmits;
        let delay = self.random_delay(Duration::from_secs(1));
        let a = Ipv6Address {
            cidr,
            state: if dad == 0 { AddrState::Preferred } else { AddrState::Tentative },
            origin,
            preferred_until,
            valid_until,
            dad_left: dad,
            dad_next: now + delay,
        };
        if !self.addrs.insert(a) {
            counters.ndp_address_table_full += 1;
            return;
        }
        self.groups_changed(now);
    }

    /// Our solicited-node groups changed: report them (and once more).
    fn groups_changed(&mut self, now: Instant) {
        let delay = self.random_delay(Duration::from_secs(1));
        let due = now + delay;
        self.schedule.mld_next = Some(self.schedule.mld_next.map_or(due, |t| t.min(due)));
        self.schedule.mld_repeats = 1;
        self.schedule.mld_current_state = false;
    }

    /// Duplicate address detection found `addr` in use: give it up, and
    /// for a SLAAC address try the next RFC 7217 identifier.
    fn dad_failed(&mut self, now: Instant, counters: &mut Counters, addr: Ipv6Addr) {
        counters.ndp_dad_failed += 1;
        let Some(a) = self.addrs.remove(addr) else { return };
        self.groups_changed(now);
        if let AddrOrigin::Slaac { dad_counter } = a.origin {
            if dad_counter < IDGEN_RETRIES {
                let prefix = a.cidr.network();
                let next = slaac_address(&self.cfg.secret, prefix, self.cfg.mac, dad_counter + 1);
                let origin = AddrOrigin::Slaac { dad_counter: dad_counter + 1 };
                let cidr = Ipv6Cidr { addr: next, prefix_len: a.cidr.prefix_len };
                self.insert_address(now, cidr, origin, a.preferred_until, a.valid_until, counters);
            }
        }
    }

    /// Duplicate address detection steps and address lifetimes.
    pub(crate) fn address_timers<T: TxQueue>(&mut self, now: Instant, counters: &mut Counters, tx: &mut T) {
        let mut i = 0;
        loop {
            let Some(a) = self.addrs.iter().nth(i).copied() else { break };
            i += 1;
            if a.valid_until <= now {
                self.addrs.remove(a.cidr.addr);
                self.groups_changed(now);
                i -= 1;
                continue;
            }
            let Some(entry) = self.addrs.get_mut(a.cidr.addr) else { continue };
            match a.state {
                AddrState::Tentative if a.dad_next <= now => {
                    if a.dad_left == 0 {
                        entry.state =
                            if a.preferred_until <= now { AddrState::Deprecated } else { AddrState::Preferred };
                        continue;
                    }
                    entry.dad_left -= 1;
                    entry.dad_next = now + self.neighbors.retrans_timer();
                    // RFC 4862 §5.4.2: from the unspecified address, no
                    // link-layer address, to the solicited-node group.
                    let group = a.solicited_node();
                    let ns = Icmpv6Repr::Ndisc(NdiscRepr::NeighborSolicit { target_addr: a.cidr.addr, lladdr: None });
                    let mac = EthernetAddress::from_ipv6_multicast(group);
                    if write_icmp(counters, tx, self.cfg.mac, mac, Ipv6Addr::UNSPECIFIED, group, ND_HOP_LIMIT, &ns) {
                        counters.ndp_solicitations_sent += 1;
                    }
                }
                AddrState::Preferred if a.preferred_until <= now => entry.state = AddrState::Deprecated,
                _ => {}
            }
        }
    }

    /// Neighbour solicitations and probes that are due; neighbours given up.
    pub(crate) fn neighbor_timers<T: TxQueue>(&mut self, now: Instant, counters: &mut Counters, tx: &mut T) {
        if self.neighbors.poll_timeout().is_none_or(|t| t > now) {
            return;
        }
        let Ipv6Layer { neighbors, addrs, cfg, routers, .. } = self;
        neighbors.handle_timeout(now, |step| match step {
            NdpTimer::Solicit { target, unicast } => solicit(counters, tx, addrs, cfg.mac, target, unicast),
            NdpTimer::Unreachable { target, dropped, was_router } => {
                counters.drop_neighbor_unreachable += dropped as u64;
                if was_router {
                    routers.remove(target);
                }
            }
        });
    }

    /// A router solicitation (RFC 4861 §6.3.7): from the link-local address
    /// with our link-layer address once it is usable, from the unspecified
    /// address without one before.
    pub(crate) fn router_solicit_due<T: TxQueue>(&mut self, now: Instant, counters: &mut Counters, tx: &mut T) {
        if self.schedule.rs_sent >= self.cfg.router_solicitations {
            self.schedule.rs_next = None;
            return;
        }
        let src = pick_source(&self.addrs, IPV6_ALL_ROUTERS).unwrap_or(Ipv6Addr::UNSPECIFIED);
        let lladdr = (!src.is_unspecified()).then_some(self.cfg.mac);
        let rs = Icmpv6Repr::Ndisc(NdiscRepr::RouterSolicit { lladdr });
        let mac = EthernetAddress::from_ipv6_multicast(IPV6_ALL_ROUTERS);
        if write_icmp(counters, tx, self.cfg.mac, mac, src, IPV6_ALL_ROUTERS, ND_HOP_LIMIT, &rs) {
            counters.ndp_router_solicitations_sent += 1;
        }
        self.schedule.rs_sent += 1;
        self.schedule.rs_next = (self.schedule.rs_sent < self.cfg.router_solicitations)
            .then(|| now + self.cfg.router_solicitation_interval);
    }

    /// An MLD query or report, checksum verified.
    pub(crate) fn receive_mld(&mut self, now: Instant, counters: &mut Counters, ip: &Ipv6Repr, repr: MldRepr<'_>) {
        counters.mld_rx += 1;
        let MldRepr::Query { max_resp_code, mcast_addr, .. } = repr else {
            counters.rx_consumed += 1; // another host's report: nothing to do
            return;
        };
        if !is_link_local(ip.src_addr) || ip.hop_limit != 1 {
            counters.drop_icmpv6_ignored += 1;
            return;
        }
        counters.rx_consumed += 1;
        let ours = mcast_addr.is_unspecified() || self.addrs.iter().any(|a| a.solicited_node() == mcast_addr);
        if !ours {
            return;
        }
        // RFC 3810 §5.1.3: the code is milliseconds, or a floating-point value.
        let code = u64::from(max_resp_code);
        let max_ms = if code < 32768 { code } else { ((code & 0x0fff) | 0x1000) << (((code >> 12) & 0x7) + 3) };
        let max = Duration::from_millis(max_ms).min(MLD_MAX_WAIT);
        let due = now + self.random_delay(max);
        if self.schedule.mld_next.is_none_or(|t| t > due) {
            self.schedule.mld_next = Some(due);
            self.schedule.mld_current_state = true;
        }
    }

    /// Send the MLDv2 report that is due: one record per solicited-node
    /// group, to all MLDv2 routers, hop limit 1, with a Router Alert.
    pub(crate) fn mld_report_due<T: TxQueue>(&mut self, now: Instant, counters: &mut Counters, tx: &mut T) {
        let record_type =
            if self.schedule.mld_current_state { MldRecordType::ModeIsExclude } else { MldRecordType::ChangeToExclude };
        let mut groups: Vec<Ipv6Addr> = self.addrs.iter().map(Ipv6Address::solicited_node).collect();
        groups.sort_unstable();
        groups.dedup();
        let records: Vec<MldAddressRecordRepr<'_>> =
            groups.iter().map(|&g| MldAddressRecordRepr { record_type, ..MldAddressRecordRepr::join(g) }).collect();
        let mld = Icmpv6Repr::Mld(MldRepr::Report { records: MldRecords::List(&records) });
        // RFC 3810 §5.2.13: from the link-local address, or the unspecified
        // one while it is tentative.
        let src = pick_source(&self.addrs, IPV6_ALL_MLDV2_ROUTERS).unwrap_or(Ipv6Addr::UNSPECIFIED);
        let dst = IPV6_ALL_MLDV2_ROUTERS;
        let alert = [Ipv6Option::RouterAlert(IPV6_ROUTER_ALERT_MLD)];
        let mut opts = [0u8; 4];
        alert[0].emit(&mut opts);
        let hbh = Ipv6OptionsRepr { next_header: IpProtocol::Icmpv6, options: &opts };
        let hbh_len = hbh.buffer_len();
        let ip = Ipv6Repr {
            src_addr: src,
            dst_addr: dst,
            next_header: IpProtocol::HopByHop,
            payload_len: hbh_len + mld.buffer_len(),
            hop_limit: 1,
            traffic_class: 0,
            flow_label: 0,
        };
        let mac = EthernetAddress::from_ipv6_multicast(dst);
        let sent =
            write_frame(counters, tx, TxMeta::default(), self.cfg.mac, mac, EtherType::Ipv6, ip.buffer_len(), |b| {
                ip.emit(&mut Ipv6Packet::new_unchecked(&mut b[..IPV6_HEADER_LEN]));
                hbh.emit(&mut b[IPV6_HEADER_LEN..IPV6_HEADER_LEN + hbh_len]);
                let icmp = &mut b[IPV6_HEADER_LEN + hbh_len..];
                mld.emit(&mut Icmpv6Packet::new_unchecked(icmp), src, dst, ChecksumMode::Verify);
            });
        if sent {
            counters.mld_reports_sent += 1;
        }
        if self.schedule.mld_repeats > 0 && !self.schedule.mld_current_state {
            self.schedule.mld_repeats -= 1;
            self.schedule.mld_next = Some(now + MLD_REPEAT);
        } else {
            self.schedule.mld_next = None;
        }
    }
}
