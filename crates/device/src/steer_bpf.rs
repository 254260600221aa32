//! ustack's flow steering as BPF programs the kernel runs per frame, so
//! that a device with several queues delivers each flow to the queue (and
//! shard) ustack's own Toeplitz hash names: a classic BPF program for an
//! AF_PACKET fan-out group (`PACKET_FANOUT_CBPF`), and the same as an eBPF
//! socket filter for a multi-queue TAP (`TUNSETSTEERINGEBPF`).
//!
//! Both compute, for an unfragmented IPv4 TCP or UDP packet, the Toeplitz
//! hash of (source, destination, source port, destination port) with the
//! key unrolled into the program (one test and one XOR per input bit, 96
//! bits), and return `ustack_core::rss::queue_of(hash, queues)`; anything
//! else (ARP, ICMP, fragments) goes to queue 0, where the sharded runtime
//! deals with it. Loads are relative to the network header
//! (`SKF_NET_OFF`), so the programs read the same bytes whether the kernel
//! hands them the frame at its MAC header (TAP transmit) or past it
//! (packet receive).
//!
//! The TAP's program looks the flow up in a BPF hash map first
//! ([`FlowSteering`]): a flow whose connection moved to another shard is
//! steered to that shard's queue, the hash decides the rest. Classic BPF
//! has no maps, so AF_PACKET fan-out always steers by the hash.

use std::io;
use std::net::Ipv4Addr;
use std::os::fd::{AsRawFd, OwnedFd};
use std::sync::{Arc, Mutex};

use ustack_core::rss::{Toeplitz, INDIRECTION_ENTRIES};

use crate::af_xdp::bpf::{create_map, insn, load_insns, map_delete, map_update, BpfError, Insn, BPF_PSEUDO_MAP_FD};

/// `SKF_NET_OFF` from <linux/filter.h>: offsets from the network header.
const NET: i32 = -0x100000;

/// The key window for input bit `bit` (0 = the most significant bit of the
/// first byte): what the hash XORs in when that bit is set.
fn window(t: &Toeplitz, bit: usize) -> u32 {
    let mut input = [0u8; 12];
    input[bit / 8] = 0x80 >> (bit % 8);
    t.hash(&input)
}

/// Classic BPF (`struct sock_filter`).
pub type SockFilter = libc::sock_filter;

fn stmt(code: u16, k: i32) -> SockFilter {
    SockFilter { code, jt: 0, jf: 0, k: k as u32 }
}

fn jump(code: u16, k: u32, jt: u8, jf: u8) -> SockFilter {
    SockFilter { code, jt, jf, k }
}

/// The classic BPF program: returns the queue of `queues` for the frame.
pub fn classic_program(t: &Toeplitz, queues: u32) -> Vec<SockFilter> {
    // <linux/bpf_common.h> and <linux/filter.h>.
    const LD_B_ABS: u16 = 0x30; // BPF_LD | BPF_B | BPF_ABS
    const LD_H_ABS: u16 = 0x28; // BPF_LD | BPF_H | BPF_ABS
    const LD_B_IND: u16 = 0x50; // BPF_LD | BPF_B | BPF_IND
    const LD_IMM: u16 = 0x00; // BPF_LD | BPF_W | BPF_IMM
    const LD_MEM: u16 = 0x60; // BPF_LD | BPF_MEM
    const ST: u16 = 0x02; // BPF_ST
    const RSH_K: u16 = 0x74;
    const AND_K: u16 = 0x54;
    const LSH_K: u16 = 0x64;
    const XOR_K: u16 = 0xa4;
    const MOD_K: u16 = 0x94;
    const TAX: u16 = 0x07; // BPF_MISC | BPF_TAX
    const JEQ_K: u16 = 0x15;
    const JSET_K: u16 = 0x45;
    const RET_K: u16 = 0x06;
    const RET_A: u16 = 0x16;
    let mut p = vec![
        stmt(LD_B_ABS, NET),        // 0: A = version/IHL
        stmt(RSH_K, 4),             // 1
        jump(JEQ_K, 4, 1, 0),       // 2: IPv4? to 4
        stmt(RET_K, 0),             // 3
        stmt(LD_B_ABS, NET + 9),    // 4: protocol
        jump(JEQ_K, 6, 2, 0),       // 5: TCP: to 8
        jump(JEQ_K, 17, 1, 0),      // 6: UDP: to 8
        stmt(RET_K, 0),             // 7
        stmt(LD_H_ABS, NET + 6),    // 8: flags and fragment offset
        jump(JSET_K, 0x3fff, 0, 1), // 9: a fragment: 10, else 11
        stmt(RET_K, 0),             // 10
        stmt(LD_B_ABS, NET),        // 11: X = IHL * 4
        stmt(AND_K, 0x0f),
        stmt(LSH_K, 2),
        stmt(TAX, 0),
        stmt(LD_IMM, 0), // M[0] = hash = 0
        stmt(ST, 0),
    ];
    for byte in 0..12 {
        p.push(if byte < 8 { stmt(LD_B_ABS, NET + 12 + byte as i32) } else { stmt(LD_B_IND, NET + byte as i32 - 8) });
        p.push(stmt(ST, 1)); // M[1] = the byte
        for bit in 0..8 {
            if bit > 0 {
                p.push(stmt(LD_MEM, 1));
            }
            p.push(jump(JSET_K, 0x80 >> bit, 0, 3));
            p.push(stmt(LD_MEM, 0));
            p.push(stmt(XOR_K, window(t, byte * 8 + bit) as i32));
            p.push(stmt(ST, 0));
        }
    }
    p.extend([
        stmt(LD_MEM, 0),
        stmt(AND_K, (INDIRECTION_ENTRIES - 1) as i32),
        stmt(MOD_K, queues.max(1) as i32),
        stmt(RET_A, 0),
    ]);
    p
}

/// The same program in eBPF, as a socket filter (`BPF_PROG_TYPE_SOCKET_FILTER`);
/// with `flows` (a [`FlowSteering`] map's descriptor), a flow found there
/// goes to the queue it names.
pub(crate) fn ebpf_program(t: &Toeplitz, queues: u32, flows: Option<i32>) -> Vec<Insn> {
    const MOV64_X: u8 = 0xbf;
    const MOV64_K: u8 = 0xb7;
    const LD_ABS_B: u8 = 0x30;
    const LD_ABS_H: u8 = 0x28;
    const LD_IND_B: u8 = 0x50;
    const RSH64_K: u8 = 0x77;
    const AND64_K: u8 = 0x57;
    const LSH64_K: u8 = 0x67;
    const XOR32_K: u8 = 0xa4;
    const MOD64_K: u8 = 0x97;
    const JNE_K: u8 = 0x55;
    const JEQ_K: u8 = 0x15;
    const JSET_K: u8 = 0x45;
    const JA: u8 = 0x05;
    const EXIT: u8 = 0x95;
    let mut p = vec![
        insn(MOV64_X, 6, 1, 0, 0),    // r6 = skb (LD_ABS reads it)
        insn(LD_ABS_B, 0, 0, 0, NET), // r0 = version/IHL
        insn(RSH64_K, 0, 0, 0, 4),
        insn(JNE_K, 0, 0, -1, 4), // not IPv4: to the end (patched)
        insn(LD_ABS_B, 0, 0, 0, NET + 9),
        insn(JEQ_K, 0, 0, 1, 6),   // TCP
        insn(JNE_K, 0, 0, -1, 17), // neither TCP nor UDP: to the end
        insn(LD_ABS_H, 0, 0, 0, NET + 6),
        insn(JSET_K, 0, 0, -1, 0x3fff), // a fragment: to the end
        insn(LD_ABS_B, 0, 0, 0, NET),
        insn(AND64_K, 0, 0, 0, 0x0f),
        insn(LSH64_K, 0, 0, 0, 2),
        insn(MOV64_X, 9, 0, 0, 0), // r9 = IHL * 4
    ];
    if let Some(map) = flows {
        const LD_ABS_W: u8 = 0x20;
        const LD_IND_H: u8 = 0x48;
        const STX_W: u8 = 0x63;
        const STX_H: u8 = 0x6b;
        const LDX_W: u8 = 0x61;
        const LD_IMM64: u8 = 0x18;
        const ADD64_K: u8 = 0x07;
        const CALL: u8 = 0x85;
        const MAP_LOOKUP_ELEM: i32 = 1;
        // The key at r10 - 16: source, destination (host order, as the
        // loads give them), source port, destination port ([`flow_key`]).
        p.extend([
            insn(LD_ABS_W, 0, 0, 0, NET + 12),
            insn(STX_W, 10, 0, -16, 0),
            insn(LD_ABS_W, 0, 0, 0, NET + 16),
            insn(STX_W, 10, 0, -12, 0),
            insn(LD_IND_H, 0, 9, 0, NET),
            insn(STX_H, 10, 0, -8, 0),
            insn(LD_IND_H, 0, 9, 0, NET + 2),
            insn(STX_H, 10, 0, -6, 0),
            insn(LD_IMM64, 1, BPF_PSEUDO_MAP_FD, 0, map), // r1 = the map (two slots)
            insn(0, 0, 0, 0, 0),
            insn(MOV64_X, 2, 10, 0, 0),
            insn(ADD64_K, 2, 0, 0, -16),
            insn(CALL, 0, 0, 0, MAP_LOOKUP_ELEM), // r0 = the queue's address, or null
            insn(JEQ_K, 0, 0, 2, 0),
            insn(LDX_W, 0, 0, 0, 0),
            insn(EXIT, 0, 0, 0, 0),
        ]);
    }
    p.push(insn(MOV64_K, 7, 0, 0, 0)); // r7 = hash
    for byte in 0..12 {
        p.push(if byte < 8 {
            insn(LD_ABS_B, 0, 0, 0, NET + 12 + byte as i32)
        } else {
            insn(LD_IND_B, 0, 9, 0, NET + byte as i32 - 8)
        });
        p.push(insn(MOV64_X, 8, 0, 0, 0)); // r8 = the byte
        for bit in 0..8 {
            p.push(insn(JSET_K, 8, 0, 1, 0x80 >> bit));
            p.push(insn(JA, 0, 0, 1, 0));
            p.push(insn(XOR32_K, 7, 0, 0, window(t, byte * 8 + bit) as i32));
        }
    }
    p.extend([
        insn(MOV64_X, 0, 7, 0, 0),
        insn(AND64_K, 0, 0, 0, (INDIRECTION_ENTRIES - 1) as i32),
        insn(MOD64_K, 0, 0, 0, queues.max(1) as i32),
        insn(EXIT, 0, 0, 0, 0),
    ]);
    let ret0 = p.len();
    p.extend([insn(MOV64_K, 0, 0, 0, 0), insn(EXIT, 0, 0, 0, 0)]);
    // The early exits jump to `ret0`.
    for i in [3usize, 6, 8] {
        p[i].off = (ret0 - i - 1) as i16;
    }
    p
}

/// Join `fd` (an AF_PACKET socket) to fan-out group `group` in
/// `PACKET_FANOUT_CBPF` mode with the steering program for `queues`.
pub fn join_fanout(fd: &OwnedFd, group: u16, t: &Toeplitz, queues: u32) -> io::Result<()> {
    const PACKET_FANOUT_CBPF: libc::c_int = 6;
    const PACKET_FANOUT_DATA: libc::c_int = 22;
    let arg = libc::c_int::from(group) | (PACKET_FANOUT_CBPF << 16);
    setsockopt(fd, libc::PACKET_FANOUT, &arg)?;
    let mut prog = classic_program(t, queues);
    let fprog = libc::sock_fprog { len: prog.len() as u16, filter: prog.as_mut_ptr() };
    setsockopt(fd, PACKET_FANOUT_DATA, &fprog)
}

fn setsockopt<T>(fd: &OwnedFd, opt: libc::c_int, value: &T) -> io::Result<()> {
    // SAFETY: `value` is a valid `T` for the size given; the kernel copies it.
    let r = unsafe {
        libc::setsockopt(
            fd.as_raw_fd(),
            libc::SOL_PACKET,
            opt,
            (value as *const T).cast(),
            std::mem::size_of::<T>() as libc::socklen_t,
        )
    };
    if r < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// Load the eBPF steering program for a TAP with `queues` queues (looking
/// flows up in `flows` first, when given); the descriptor goes to
/// `TUNSETSTEERINGEBPF`.
pub fn load_tap_steering(t: &Toeplitz, queues: u32, flows: Option<&FlowSteering>) -> Result<OwnedFd, BpfError> {
    const BPF_PROG_TYPE_SOCKET_FILTER: u32 = 1;
    let map = flows.map(|f| f.map.as_raw_fd());
    load_insns(BPF_PROG_TYPE_SOCKET_FILTER, 0, "ustack_steer", &ebpf_program(t, queues, map))
}

/// Flows a multi-queue TAP's steering program sends to a queue of ours
/// rather than the one their hash names: the flows of connections moved
/// between shards. One map per TAP, shared by its shards (each tells it
/// about the connections it takes in); a flow the map cannot take (full)
/// is steered by its hash, and its frames cross between shards.
#[derive(Debug)]
pub struct FlowSteering {
    map: OwnedFd,
}

/// Flows one TAP's map holds at most.
pub const STEERED_FLOWS: u32 = 65_536;

/// The map's key for a frame from `remote`:`remote_port` to
/// `local`:`local_port`: the fields as the program loads them (in host
/// order), in the order of the IPv4 and TCP/UDP headers.
fn flow_key(local: Ipv4Addr, local_port: u16, remote: Ipv4Addr, remote_port: u16) -> [u8; 12] {
    let mut k = [0u8; 12];
    k[0..4].copy_from_slice(&u32::from(remote).to_ne_bytes());
    k[4..8].copy_from_slice(&u32::from(local).to_ne_bytes());
    k[8..10].copy_from_slice(&remote_port.to_ne_bytes());
    k[10..12].copy_from_slice(&local_port.to_ne_bytes());
    k
}

impl FlowSteering {
    fn new() -> io::Result<FlowSteering> {
        const BPF_MAP_TYPE_HASH: u32 = 1;
        const BPF_F_NO_PREALLOC: u32 = 1;
        let map = create_map(BPF_MAP_TYPE_HASH, (12, 4), STEERED_FLOWS, BPF_F_NO_PREALLOC, "ustack_flows")?;
        Ok(FlowSteering { map })
    }

    /// Send the frames of the flow (`local`, `local_port`, `remote`,
    /// `remote_port`) to `queue`.
    pub fn steer(
        &self,
        local: Ipv4Addr,
        local_port: u16,
        remote: Ipv4Addr,
        remote_port: u16,
        queue: u32,
    ) -> io::Result<()> {
        map_update(&self.map, &flow_key(local, local_port, remote, remote_port), &queue.to_ne_bytes())
    }

    /// Steer the flow by its hash again.
    pub fn forget(&self, local: Ipv4Addr, local_port: u16, remote: Ipv4Addr, remote_port: u16) -> io::Result<()> {
        map_delete(&self.map, &flow_key(local, local_port, remote, remote_port))
    }
}

/// The flow maps of this process's multi-queue TAPs, by TAP name: made
/// with the steering program (by the first shard to open the TAP), found
/// by every shard ([`tap_flow_steering`]).
static TAP_FLOWS: Mutex<Vec<(String, Arc<FlowSteering>)>> = Mutex::new(Vec::new());

/// The flow map of multi-queue TAP `name`'s steering program, if this
/// process installed one.
pub fn tap_flow_steering(name: &str) -> Option<Arc<FlowSteering>> {
    let maps = TAP_FLOWS.lock().unwrap_or_else(|e| e.into_inner());
    maps.iter().find(|(n, _)| n == name).map(|(_, f)| Arc::clone(f))
}

/// `TUNSETSTEERINGEBPF`: `_IOR('T', 224, int)`.
const TUNSETSTEERINGEBPF: libc::c_ulong = 0x8004_54e0;

/// Install the steering program for `q.count` queues on the multi-queue
/// TAP `tap` belongs to (the kernel keeps the program; the descriptor may
/// close).
pub fn steer_tap(tap: &crate::TapDevice, q: &crate::spec::ShardQueue) -> Result<(), crate::DeviceError> {
    let t = Toeplitz::new(&q.key);
    // Without a map (the kernel refuses one: memory limits), flows are
    // steered by their hash alone.
    let flows = FlowSteering::new().ok();
    let prog = load_tap_steering(&t, q.count as u32, flows.as_ref()).map_err(|e| crate::DeviceError::Io {
        action: "loading the TAP's steering program (BPF)",
        source: io::Error::new(
            e.source.kind(),
            format!("{}{}", e.source, e.verifier.map(|v| format!(": {v}")).unwrap_or_default()),
        ),
    })?;
    let fd: libc::c_int = prog.as_raw_fd();
    // SAFETY: TUNSETSTEERINGEBPF reads one int (the program's descriptor).
    if unsafe { libc::ioctl(tap.as_raw_fd(), TUNSETSTEERINGEBPF as _, &fd) } < 0 {
        let source = io::Error::last_os_error();
        return Err(crate::DeviceError::Io { action: "TUNSETSTEERINGEBPF (steering the TAP's queues)", source });
    }
    let mut maps = TAP_FLOWS.lock().unwrap_or_else(|e| e.into_inner());
    maps.retain(|(n, _)| n != tap.name());
    if let Some(f) = flows {
        maps.push((tap.name().to_owned(), Arc::new(f)));
    }
    Ok(())
}

/// Make an AF_PACKET config one member of the shards' fan-out group: the
/// group given by `fanout=ID`, or one named after this process, steered by
/// ustack's hash.
pub fn shard_fanout(config: &mut crate::AfPacketConfig, q: &crate::spec::ShardQueue) {
    let group = config.fanout.unwrap_or_else(|| (std::process::id() & 0xffff) as u16);
    config.fanout = Some(group);
    config.fanout_steer = Some((q.count as u32, q.key));
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Run the classic program over an IPv4 packet (no Ethernet header,
    /// as fan-out sees it), interpreting the few instructions it uses.
    fn run_classic(prog: &[SockFilter], ip: &[u8]) -> u32 {
        let (mut a, mut x, mut m) = (0u32, 0u32, [0u32; 16]);
        let mut pc = 0;
        let load = |at: i64, size: usize| -> u32 {
            let at = (at - i64::from(NET)) as usize;
            ip[at..at + size].iter().fold(0u32, |v, &b| (v << 8) | u32::from(b))
        };
        loop {
            let i = prog[pc];
            pc += 1;
            match i.code {
                0x30 => a = load(i64::from(i.k as i32), 1),
                0x28 => a = load(i64::from(i.k as i32), 2),
                0x50 => a = load(i64::from(x) + i64::from(i.k as i32), 1),
                0x00 => a = i.k,
                0x60 => a = m[i.k as usize],
                0x02 => m[i.k as usize] = a,
                0x74 => a >>= i.k,
                0x54 => a &= i.k,
                0x64 => a <<= i.k,
                0xa4 => a ^= i.k,
                0x94 => a %= i.k,
                0x07 => x = a,
                0x15 => pc += usize::from(if a == i.k { i.jt } else { i.jf }),
                0x45 => pc += usize::from(if a & i.k != 0 { i.jt } else { i.jf }),
                0x06 => return i.k,
                0x16 => return a,
                c => panic!("unexpected opcode {c:#x}"),
            }
        }
    }

    fn packet(protocol: u8, frag: u16, ihl: u8, sport: u16, dport: u16) -> Vec<u8> {
        let hl = usize::from(ihl) * 4;
        let mut p = vec![0u8; hl + 8];
        p[0] = 0x40 | ihl;
        p[6..8].copy_from_slice(&frag.to_be_bytes());
        p[9] = protocol;
        p[12..16].copy_from_slice(&[10, 0, 0, 1]);
        p[16..20].copy_from_slice(&[10, 0, 0, 2]);
        p[hl..hl + 2].copy_from_slice(&sport.to_be_bytes());
        p[hl + 2..hl + 4].copy_from_slice(&dport.to_be_bytes());
        p
    }

    /// The TAP's program, run by the kernel (`BPF_PROG_TEST_RUN`, root
    /// only): the hash's queue for a flow not in the map, the map's for
    /// one in it, the hash's again once it is forgotten.
    #[test]
    fn the_tap_program_steers_a_flow_in_its_map_to_the_map_s_queue() {
        // SAFETY: geteuid has no preconditions.
        if unsafe { libc::geteuid() } != 0 {
            eprintln!("SKIPPED: loading BPF needs root");
            return;
        }
        let t = Toeplitz::default();
        let flows = FlowSteering::new().expect("a BPF hash map");
        let prog = load_tap_steering(&t, 4, Some(&flows)).expect("the steering program loads");
        let (remote, local) = (Ipv4Addr::new(10, 0, 0, 1), Ipv4Addr::new(10, 0, 0, 2));
        let run = |sport: u16| {
            let mut frame = vec![0u8; 14];
            frame[12..14].copy_from_slice(&[0x08, 0x00]);
            frame.extend(packet(6, 0x4000, 5, sport, 80));
            crate::af_xdp::bpf::test_run(&prog, &frame).expect("BPF_PROG_TEST_RUN")
        };
        for sport in 40000..40064u16 {
            let hashed = ustack_core::rss::queue_of(t.hash_v4(remote, local, sport, 80), 4) as u32;
            assert_eq!(run(sport), hashed, "port {sport}, not in the map");
            let moved = (hashed + 1 + u32::from(sport % 3)) % 4;
            flows.steer(local, 80, remote, sport, moved).unwrap();
            assert_eq!(run(sport), moved, "port {sport}, in the map");
            // Only that flow: its neighbour still goes by the hash.
            let next = ustack_core::rss::queue_of(t.hash_v4(remote, local, sport + 1, 80), 4) as u32;
            assert_eq!(run(sport + 1), next, "port {}", sport + 1);
            flows.forget(local, 80, remote, sport).unwrap();
            assert_eq!(run(sport), hashed, "port {sport}, forgotten");
        }
    }

    #[test]
    fn classic_program_picks_the_queue_the_hash_names() {
        let t = Toeplitz::default();
        for queues in [1u32, 2, 3, 4] {
            let prog = classic_program(&t, queues);
            assert!(prog.len() < 4096, "BPF_MAXINSNS");
            for port in (40000..40200).chain([0, 65535]) {
                for (proto, ihl) in [(6, 5), (17, 5), (6, 7)] {
                    let p = packet(proto, 0x4000, ihl, port, 80);
                    let want = ustack_core::rss::queue_of(
                        t.hash_v4([10, 0, 0, 1].into(), [10, 0, 0, 2].into(), port, 80),
                        queues as usize,
                    );
                    assert_eq!(run_classic(&prog, &p) as usize, want, "port {port} proto {proto} ihl {ihl}");
                }
            }
            // Not TCP/UDP, a fragment, not IPv4: queue 0.
            assert_eq!(run_classic(&prog, &packet(1, 0, 5, 1, 2)), 0);
            assert_eq!(run_classic(&prog, &packet(6, 0x2000, 5, 1, 2)), 0);
            let mut arp = packet(6, 0, 5, 1, 2);
            arp[0] = 0x00;
            assert_eq!(run_classic(&prog, &arp), 0);
        }
    }

    #[test]
    fn ebpf_early_exits_land_on_return_zero() {
        for (flows, lookup) in [(None, 0), (Some(3), 16)] {
            let p = ebpf_program(&Toeplitz::default(), 2, flows);
            let ret0 = p.len() - 2;
            for i in [3usize, 6, 8] {
                assert_eq!(i + 1 + p[i].off as usize, ret0);
            }
            assert_eq!(p.len(), 14 + lookup + 12 * 26 + 4 + 2);
            if lookup > 0 {
                // A flow not in the map goes on to the hash.
                let miss = 13 + 13;
                assert_eq!(miss + 1 + p[miss].off as usize, 13 + 16);
            }
        }
    }
}
