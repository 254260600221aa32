//! Two namespaces joined by a veth pair, for the devices that take an
//! existing interface (`af_xdp:`): the topology of ../../../../shared
//! TESTING.md. The stack's end has no kernel address and kernel IPv6 off, so
//! the kernel never answers for it; the peer's end has the kernel's address
//! (or, for ustack↔ustack, is bare too) and transmit checksum offload off,
//! because XDP hands frames over without checksum metadata and a kernel
//! sender would leave its TCP/UDP checksums partial.

use super::{short_name, Netns};
use std::time::{Duration, Instant};

/// Who holds the peer's end of a [`VethPair`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Peer {
    /// The kernel, with address 10.77.N.1/24.
    Kernel,
    /// Another stack: a bare end like the stack's.
    Stack,
}

/// A veth pair between two fresh namespaces; deleted with them on drop.
pub struct VethPair {
    /// Holds `stack_if`.
    pub stack_ns: Netns,
    /// Holds `peer_if`.
    pub peer_ns: Netns,
    pub stack_if: String,
    pub peer_if: String,
    /// Third octet N of 10.77.N.0/24.
    pub subnet: u8,
}

impl VethPair {
    /// Make the pair; `tag` names the namespaces and interfaces (a few letters).
    pub fn new(tag: &str, subnet: u8, peer: Peer) -> VethPair {
        let stack_ns = Netns::new(&format!("{tag}-s"));
        let peer_ns = Netns::new(&format!("{tag}-p"));
        let stack_if = short_name(&format!("{tag}s"), 0);
        let peer_if = short_name(&format!("{tag}p"), 0);
        let limit = Duration::from_secs(5);
        let out = super::run_bounded(
            {
                let mut c = std::process::Command::new("ip");
                c.args(["link", "add", &stack_if, "netns", &stack_ns.name, "type", "veth"]);
                c.args(["peer", "name", &peer_if, "netns", &peer_ns.name]);
                c
            },
            None,
            limit,
        );
        assert!(out.success(), "ip link add veth: {out}");
        let pair = VethPair { stack_ns, peer_ns, stack_if, peer_if, subnet };
        pair.bare(&pair.stack_ns, &pair.stack_if);
        match peer {
            Peer::Kernel => {
                let addr = format!("{}/24", pair.peer_ip());
                pair.peer_ns.exec_ok(&["ip", "addr", "add", &addr, "dev", &pair.peer_if], limit);
            }
            Peer::Stack => pair.bare(&pair.peer_ns, &pair.peer_if),
        }
        pair.peer_ns.exec_ok(&["ip", "link", "set", &pair.peer_if, "up"], limit);
        if peer == Peer::Kernel {
            pair.peer_ns.exec_ok(&["ethtool", "-K", &pair.peer_if, "tx", "off"], limit);
        }
        pair
    }

    /// An end the stack owns: no kernel IPv6 (no ND, no DAD), up.
    fn bare(&self, ns: &Netns, iface: &str) {
        let limit = Duration::from_secs(5);
        ns.exec_ok(&["sysctl", "-qw", &format!("net.ipv6.conf.{iface}.disable_ipv6=1")], limit);
        ns.exec_ok(&["ip", "link", "set", iface, "up"], limit);
    }

    /// The stack's address on the stack's end.
    pub fn stack_ip(&self) -> String {
        format!("10.77.{}.2", self.subnet)
    }

    /// The address on the peer's end (the kernel's, or the second stack's).
    pub fn peer_ip(&self) -> String {
        format!("10.77.{}.1", self.subnet)
    }

    /// Whether `ip link show` reports an XDP program on the stack's end.
    pub fn xdp_attached(&self) -> bool {
        let out = self.stack_ns.exec_ok(&["ip", "link", "show", "dev", &self.stack_if], Duration::from_secs(5));
        out.stdout_str().contains("prog/xdp")
    }

    /// Ping the stack from the peer's namespace until it answers (ARP
    /// resolved), within `limit`.
    pub fn wait_reachable(&self, limit: Duration) -> Result<(), super::Output> {
        let deadline = Instant::now() + limit;
        loop {
            let out = self.peer_ns.exec(&["ping", "-c", "1", "-W", "1", &self.stack_ip()], Duration::from_secs(3));
            if out.success() {
                return Ok(());
            }
            if Instant::now() >= deadline {
                return Err(out);
            }
        }
    }
}
