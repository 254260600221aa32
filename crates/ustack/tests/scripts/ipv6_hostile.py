#!/usr/bin/env python3
"""Hostile IPv6 for tests/ipv6_hostile.rs, crafted with scapy and sent on a TAP.

`flood`: long extension header chains, routing headers of type 0, overlapping
and tiny fragments to --dst; neighbour solicitations for --target from --ns
random link-local sources with random link-layer addresses; router
advertisements from --ra random link-local routers, each with a random /64
prefix (on-link, autonomous). `ra`: one router advertisement from --router
with --prefix, three times a second apart.

Everything goes to the stack's MAC (--mac) or to the group the message is
for. Prints one line: RESULT {json} with how many packets of each kind went.
"""
import argparse
import json
import random
import socket
import sys

from scapy.all import (
    IPv6,
    Ether,
    ICMPv6ND_NS,
    ICMPv6ND_RA,
    ICMPv6NDOptPrefixInfo,
    ICMPv6NDOptSrcLLAddr,
    IPv6ExtHdrDestOpt,
    IPv6ExtHdrFragment,
    IPv6ExtHdrRouting,
    Raw,
    UDP,
    conf,
    sendp,
)
from scapy.utils6 import in6_getnsma, in6_getnsmac

conf.verb = 0


def rand_mac(rng):
    return "02:%02x:%02x:%02x:%02x:%02x" % tuple(rng.randrange(256) for _ in range(5))


def rand_ll(rng):
    return "fe80::%x:%x:%x:%x" % tuple(rng.randrange(1, 0x10000) for _ in range(4))


def solicited_node(addr):
    nsma = in6_getnsma(socket.inet_pton(socket.AF_INET6, addr))
    return socket.inet_ntop(socket.AF_INET6, nsma), in6_getnsmac(nsma)


def flood(a):
    rng = random.Random(a.seed)
    eth = Ether(dst=a.mac)
    sent = {}
    frames = []

    # Chains of 20 destination options headers (the stack walks at most 8).
    chain = IPv6ExtHdrDestOpt()
    for _ in range(19):
        chain = chain / IPv6ExtHdrDestOpt()
    frames += [eth / IPv6(src=a.src, dst=a.dst) / chain / UDP(dport=9) / Raw(b"x" * 8) for _ in range(a.chains)]
    sent["long_chains"] = a.chains

    # Routing header type 0 with segments left (RFC 5095).
    rh0 = IPv6ExtHdrRouting(type=0, segleft=1, addresses=["2001:db8::dead"])
    frames += [eth / IPv6(src=a.src, dst=a.dst) / rh0 / UDP(dport=9) for _ in range(a.chains)]
    sent["routing_type0"] = a.chains

    # Overlapping fragments: the second starts inside the first (RFC 5722).
    for i in range(a.overlaps):
        ident = 0x10000 + i
        frames.append(eth / IPv6(src=a.src, dst=a.dst) / IPv6ExtHdrFragment(nh=58, offset=0, m=1, id=ident) / Raw(bytes(32)))
        frames.append(eth / IPv6(src=a.src, dst=a.dst) / IPv6ExtHdrFragment(nh=58, offset=2, m=0, id=ident) / Raw(bytes(32)))
    sent["overlapping_datagrams"] = a.overlaps

    # Tiny fragments: 8 bytes each, 80 per datagram, never completed.
    for i in range(a.tiny):
        ident = 0x20000 + i
        for k in range(80):
            frames.append(eth / IPv6(src=a.src, dst=a.dst) / IPv6ExtHdrFragment(nh=17, offset=2 * k, m=1, id=ident) / Raw(bytes(8)))
    sent["tiny_datagrams"] = a.tiny

    # Neighbour solicitations from random sources.
    group, group_mac = solicited_node(a.target)
    for _ in range(a.ns):
        mac = rand_mac(rng)
        frames.append(
            Ether(src=mac, dst=group_mac)
            / IPv6(src=rand_ll(rng), dst=group, hlim=255)
            / ICMPv6ND_NS(tgt=a.target)
            / ICMPv6NDOptSrcLLAddr(lladdr=mac)
        )
    sent["neighbor_solicitations"] = a.ns

    # Router advertisements from random routers with random prefixes.
    for _ in range(a.ra):
        mac = rand_mac(rng)
        prefix = "2001:db8:%x:%x::" % (rng.randrange(0x10000), rng.randrange(0x10000))
        frames.append(
            Ether(src=mac, dst="33:33:00:00:00:01")
            / IPv6(src=rand_ll(rng), dst="ff02::1", hlim=255)
            / ICMPv6ND_RA(routerlifetime=600)
            / ICMPv6NDOptSrcLLAddr(lladdr=mac)
            / ICMPv6NDOptPrefixInfo(prefix=prefix, prefixlen=64, L=1, A=1, validlifetime=3600, preferredlifetime=1800)
        )
    sent["router_advertisements"] = a.ra

    sendp(frames, iface=a.iface, inter=a.inter)
    sent["frames"] = len(frames)
    return sent


def one_ra(a):
    frame = (
        Ether(src=a.rmac, dst="33:33:00:00:00:01")
        / IPv6(src=a.router, dst="ff02::1", hlim=255)
        / ICMPv6ND_RA(routerlifetime=1800)
        / ICMPv6NDOptSrcLLAddr(lladdr=a.rmac)
        / ICMPv6NDOptPrefixInfo(prefix=a.prefix, prefixlen=64, L=1, A=1, validlifetime=86400, preferredlifetime=14400)
    )
    sendp([frame] * 3, iface=a.iface, inter=1.0)
    return {"router_advertisements": 3}


def main():
    ap = argparse.ArgumentParser()
    sub = ap.add_subparsers(dest="cmd", required=True)
    f = sub.add_parser("flood")
    f.add_argument("--iface", required=True)
    f.add_argument("--mac", required=True)
    f.add_argument("--src", required=True)
    f.add_argument("--dst", required=True)
    f.add_argument("--target", required=True)
    f.add_argument("--chains", type=int, default=20)
    f.add_argument("--overlaps", type=int, default=30)
    f.add_argument("--tiny", type=int, default=10)
    f.add_argument("--ns", type=int, default=3000)
    f.add_argument("--ra", type=int, default=300)
    f.add_argument("--inter", type=float, default=0.0)
    f.add_argument("--seed", type=int, default=1)
    r = sub.add_parser("ra")
    r.add_argument("--iface", required=True)
    r.add_argument("--router", required=True)
    r.add_argument("--rmac", required=True)
    r.add_argument("--prefix", required=True)
    a = ap.parse_args()
    result = flood(a) if a.cmd == "flood" else one_ra(a)
    print("RESULT " + json.dumps(result))
    sys.stdout.flush()


if __name__ == "__main__":
    main()
