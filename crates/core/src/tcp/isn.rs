//! Unpredictable numbers an off-path attacker must not guess: initial
//! sequence numbers (RFC 6528), ephemeral ports (RFC 6056) and SYN cookies.
//!
//! All are keyed SipHash-2-4 over the connection's addresses; the key is the
//! caller's secret (drawn once from the OS RNG by whoever owns the stack).

use super::segment::FourTuple;
use super::seq::SeqNumber;
use crate::time::Instant;
use std::net::IpAddr;

/// SipHash-2-4 (Aumasson & Bernstein, 2012) of `data` under a 128-bit key.
pub fn siphash24(key: &[u8; 16], data: &[u8]) -> u64 {
    let k0 = u64::from_le_bytes([key[0], key[1], key[2], key[3], key[4], key[5], key[6], key[7]]);
    let k1 = u64::from_le_bytes([key[8], key[9], key[10], key[11], key[12], key[13], key[14], key[15]]);
    let mut v = [
        k0 ^ 0x736f_6d65_7073_6575,
        k1 ^ 0x646f_7261_6e64_6f6d,
        k0 ^ 0x6c79_6765_6e65_7261,
        k1 ^ 0x7465_6462_7974_6573,
    ];
    let mut chunks = data.chunks_exact(8);
    for chunk in &mut chunks {
        let mut word = [0u8; 8];
        word.copy_from_slice(chunk);
        compress(&mut v, u64::from_le_bytes(word), 2);
    }
    // The last word holds the leftover bytes and the length's low byte.
    let mut last = [0u8; 8];
    let rest = chunks.remainder();
    last[..rest.len()].copy_from_slice(rest);
    last[7] = data.len() as u8;
    compress(&mut v, u64::from_le_bytes(last), 2);
    v[2] ^= 0xff;
    for _ in 0..4 {
        sip_round(&mut v);
    }
    v[0] ^ v[1] ^ v[2] ^ v[3]
}

fn compress(v: &mut [u64; 4], m: u64, rounds: usize) {
    v[3] ^= m;
    for _ in 0..rounds {
        sip_round(v);
    }
    v[0] ^= m;
}

fn sip_round(v: &mut [u64; 4]) {
    v[0] = v[0].wrapping_add(v[1]);
    v[1] = v[1].rotate_left(13) ^ v[0];
    v[0] = v[0].rotate_left(32);
    v[2] = v[2].wrapping_add(v[3]);
    v[3] = v[3].rotate_left(16) ^ v[2];
    v[0] = v[0].wrapping_add(v[3]);
    v[3] = v[3].rotate_left(21) ^ v[0];
    v[2] = v[2].wrapping_add(v[1]);
    v[1] = v[1].rotate_left(17) ^ v[2];
    v[2] = v[2].rotate_left(32);
}

/// The longest input any hash below takes: an IPv6 4-tuple (36 bytes) and 8 more.
const MAX_INPUT: usize = 44;

/// Bytes to hash, built on the stack: IPv4 addresses as their 4 octets (so an
/// IPv4 connection's ISN, port and cookie are what they were before the
/// tuple learned IPv6), IPv6 addresses as their 16.
struct HashInput {
    buf: [u8; MAX_INPUT],
    len: usize,
}

impl HashInput {
    fn new() -> HashInput {
        HashInput { buf: [0; MAX_INPUT], len: 0 }
    }
    #[inline]
    fn push(&mut self, bytes: &[u8]) -> &mut HashInput {
        self.buf[self.len..self.len + bytes.len()].copy_from_slice(bytes);
        self.len += bytes.len();
        self
    }
    #[inline]
    fn addr(&mut self, a: IpAddr) -> &mut HashInput {
        match a {
            IpAddr::V4(a) => self.push(&a.octets()),
            IpAddr::V6(a) => self.push(&a.octets()),
        }
    }
    #[inline]
    fn tuple(&mut self, t: &FourTuple) -> &mut HashInput {
        self.addr(t.local_addr).push(&t.local_port.to_be_bytes()).addr(t.remote_addr).push(&t.remote_port.to_be_bytes())
    }
    fn hash(&self, secret: &[u8; 16]) -> u64 {
        siphash24(secret, &self.buf[..self.len])
    }
}

/// The initial send sequence number for `four_tuple` at `now`.
///
/// RFC 6528 §3: "ISN = M + F(localip, localport, remoteip, remoteport,
/// secretkey) where M is the 4 microsecond timer, and F() is a pseudorandom
/// function (PRF) of the connection-id."
pub fn isn(secret: &[u8; 16], four_tuple: &FourTuple, now: Instant) -> SeqNumber {
    let m = (now.total_micros() / 4) as u32;
    let f = HashInput::new().tuple(four_tuple).hash(secret) as u32;
    SeqNumber(m.wrapping_add(f))
}

/// The offset added to the millisecond clock for the TCP timestamps of every
/// connection between `local` and `remote` (RFC 7323 §5.4 suggests a random
/// offset per connection to hide the clock). Keyed by the address pair only,
/// like Linux's `secure_tcp_ts_off`: connections between two hosts share
/// one timestamp clock, so a new connection's SYN always carries a later
/// TSval than the last segment of an earlier one on the same ports, and a
/// peer still holding that one in TIME-WAIT takes the SYN (RFC 6191) instead
/// of refusing it by PAWS, which a fresh random offset made it do about
/// half the time.
pub fn ts_offset(secret: &[u8; 16], local: IpAddr, remote: IpAddr) -> u32 {
    HashInput::new().push(b"ts").addr(local).addr(remote).hash(secret) as u32
}

/// Chooses an ephemeral local port for a connection to `remote_addr:remote_port`,
/// or `None` when every port in `range` is taken.
///
/// RFC 6056 §3.3.3, Algorithm 3 (Simple Hash-Based): "offset =
/// F(local_IP, remote_IP, remote_port, secret_key) ... port = min_ephemeral +
/// (offset + next_ephemeral) % num_ephemeral; next_ephemeral++; if
/// (check_suitable_port(port)) return port;" `next_ephemeral` is the stack's
/// single counter, kept between calls; `is_free` says whether a port can be
/// used for this destination (the 4-tuple is not in use).
pub fn ephemeral_port(
    secret: &[u8; 16],
    local_addr: IpAddr,
    remote_addr: IpAddr,
    remote_port: u16,
    range: core::ops::RangeInclusive<u16>,
    next_ephemeral: &mut u32,
    mut is_free: impl FnMut(u16) -> bool,
) -> Option<u16> {
    let (min, max) = (u32::from(*range.start()), u32::from(*range.end()));
    if min > max {
        return None;
    }
    let num = max - min + 1;
    let offset =
        HashInput::new().addr(local_addr).addr(remote_addr).push(&remote_port.to_be_bytes()).hash(secret) as u32;
    for _ in 0..num {
        let port = min + offset.wrapping_add(*next_ephemeral) % num;
        *next_ephemeral = next_ephemeral.wrapping_add(1);
        let port = port as u16;
        if is_free(port) {
            return Some(port);
        }
    }
    None
}

/// The MSS values a SYN cookie can carry (3 bits); a peer's MSS is rounded
/// down to the nearest entry.
const COOKIE_MSS: [u16; 8] = [216, 536, 1024, 1220, 1300, 1400, 1440, 1460];
/// The cookie clock ticks every 64 s; cookies from this and the previous tick
/// are accepted, so a cookie lives between 64 and 128 s.
const COOKIE_TICK_MICROS: u64 = 64_000_000;

fn cookie_hash(secret: &[u8; 16], t: &FourTuple, peer_isn: SeqNumber, tick: u32) -> u32 {
    let hash = HashInput::new().tuple(t).push(&peer_isn.0.to_be_bytes()).push(&tick.to_be_bytes()).hash(secret);
    (hash as u32) & 0x00ff_ffff
}

/// A SYN cookie: our ISS for a SYN we keep no state for.
///
/// Layout: 5 bits of the 64-second clock, 3 bits of MSS index, and 24 bits of
/// a keyed hash over the 4-tuple, the peer's ISN and the clock. Window scale
/// and SACK do not fit; when the SYN has timestamps they ride in our TSval
/// instead ([`cookie_timestamp`]), as Linux does, and without timestamps a
/// cookie connection runs without all three.
pub fn syn_cookie(secret: &[u8; 16], t: &FourTuple, peer_isn: SeqNumber, peer_mss: u16, now: Instant) -> SeqNumber {
    let tick = (now.total_micros() / COOKIE_TICK_MICROS) as u32;
    let mss_index = COOKIE_MSS.iter().rposition(|&m| m <= peer_mss).unwrap_or(0) as u32;
    SeqNumber(((tick & 31) << 27) | (mss_index << 24) | cookie_hash(secret, t, peer_isn, tick))
}

/// Checks the cookie echoed in a handshake-completing ACK (`ack - 1`) for the
/// peer's ISN (`seq - 1`); returns the encoded MSS when it is genuine and at
/// most one clock tick old.
pub fn check_syn_cookie(
    secret: &[u8; 16],
    t: &FourTuple,
    peer_isn: SeqNumber,
    cookie: SeqNumber,
    now: Instant,
) -> Option<u16> {
    let now_tick = (now.total_micros() / COOKIE_TICK_MICROS) as u32;
    let tick_bits = cookie.0 >> 27;
    let mss_index = ((cookie.0 >> 24) & 7) as usize;
    [now_tick, now_tick.wrapping_sub(1)]
        .into_iter()
        .find(|&tick| tick & 31 == tick_bits && cookie_hash(secret, t, peer_isn, tick) == cookie.0 & 0x00ff_ffff)
        .map(|_| COOKIE_MSS[mss_index])
}

/// Low bits of a cookie SYN-ACK's TSval that carry the peer's SYN options:
/// its window scale (4 bits, 15 for none) and SACK-permitted (1 bit).
const COOKIE_TS_BITS: u32 = 5;
const COOKIE_TS_MASK: u32 = (1 << COOKIE_TS_BITS) - 1;
const COOKIE_TS_NO_WSCALE: u32 = 15;

/// Our TSval for a cookie SYN-ACK at timestamp clock `ts_now`, carrying the
/// peer's window scale (at most 14) and SACK-permitted. The peer echoes it in
/// the ACK that completes the handshake, and [`cookie_options`] reads them
/// back. The value is never ahead of `ts_now` (at most 31 ms behind it), so
/// the clock the peer sees stays monotonic.
pub fn cookie_timestamp(ts_now: u32, peer_wscale: Option<u8>, sack: bool) -> u32 {
    let wscale = peer_wscale.map_or(COOKIE_TS_NO_WSCALE, |s| u32::from(s.min(14)));
    let bits = wscale | (u32::from(sack) << 4);
    let ts = (ts_now & !COOKIE_TS_MASK) | bits;
    if ts > ts_now {
        ts.wrapping_sub(1 << COOKIE_TS_BITS)
    } else {
        ts
    }
}

/// The peer's window scale and SACK-permitted from the TSecr of the ACK that
/// completes a cookie handshake, or `None` when that TSecr cannot be one of
/// our cookie timestamps (ahead of `ts_now`, or older than a cookie lives).
pub fn cookie_options(tsecr: u32, ts_now: u32) -> Option<(Option<u8>, bool)> {
    let age_ms = ts_now.wrapping_sub(tsecr);
    if u64::from(age_ms) > 2 * COOKIE_TICK_MICROS / 1000 {
        return None;
    }
    let wscale = tsecr & 0xf;
    Some(((wscale != COOKIE_TS_NO_WSCALE).then_some(wscale.min(14) as u8), tsecr & 0x10 != 0))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::Ipv4Addr;

    fn key() -> [u8; 16] {
        core::array::from_fn(|i| i as u8)
    }

    #[test]
    fn siphash_reference_vectors() {
        // From the SipHash paper's test vectors (key 00..0f, message 00..len-1).
        assert_eq!(siphash24(&key(), &[]), 0x726f_db47_dd0e_0e31);
        let msg: [u8; 15] = core::array::from_fn(|i| i as u8);
        assert_eq!(siphash24(&key(), &msg), 0xa129_ca61_49be_45e5);
    }

    fn tuple() -> FourTuple {
        FourTuple {
            local_addr: Ipv4Addr::new(10, 0, 0, 1).into(),
            local_port: 80,
            remote_addr: Ipv4Addr::new(10, 0, 0, 2).into(),
            remote_port: 40000,
        }
    }

    #[test]
    fn isn_advances_with_the_clock_and_depends_on_the_tuple() {
        let a = isn(&key(), &tuple(), Instant::from_micros(0));
        let b = isn(&key(), &tuple(), Instant::from_micros(400));
        assert_eq!(b.diff(a), 100);
        let other = FourTuple { remote_port: 40001, ..tuple() };
        assert_ne!(isn(&key(), &other, Instant::ZERO), a);
    }

    #[test]
    fn ephemeral_ports_skip_busy_ones() {
        let mut next = 0;
        let t = tuple();
        let first =
            ephemeral_port(&key(), t.local_addr, t.remote_addr, 80, 49152..=65535, &mut next, |_| true).unwrap();
        let second =
            ephemeral_port(&key(), t.local_addr, t.remote_addr, 80, 49152..=65535, &mut next, |p| p != first).unwrap();
        assert_ne!(first, second);
        assert!(ephemeral_port(&key(), t.local_addr, t.remote_addr, 80, 1000..=1003, &mut next, |_| false).is_none());
    }

    #[test]
    fn cookies_round_trip_and_expire() {
        let now = Instant::from_secs(1000);
        let c = syn_cookie(&key(), &tuple(), SeqNumber(5), 1460, now);
        assert_eq!(check_syn_cookie(&key(), &tuple(), SeqNumber(5), c, now), Some(1460));
        assert_eq!(
            check_syn_cookie(&key(), &tuple(), SeqNumber(5), c, now + crate::time::Duration::from_secs(64)),
            Some(1460)
        );
        assert_eq!(
            check_syn_cookie(&key(), &tuple(), SeqNumber(5), c, now + crate::time::Duration::from_secs(200)),
            None
        );
        assert_eq!(check_syn_cookie(&key(), &tuple(), SeqNumber(6), c, now), None);
        let small = syn_cookie(&key(), &tuple(), SeqNumber(5), 600, now);
        assert_eq!(check_syn_cookie(&key(), &tuple(), SeqNumber(5), small, now), Some(536));
    }

    #[test]
    fn cookie_timestamps_carry_window_scale_and_sack() {
        for ts_now in [0u32, 5, 31, 32, 1_000_003, u32::MAX] {
            for (wscale, sack) in [(None, false), (Some(0), true), (Some(7), false), (Some(14), true), (Some(20), true)] {
                let ts = cookie_timestamp(ts_now, wscale, sack);
                assert!(ts_now.wrapping_sub(ts) < 32, "{ts} is at most 31 ms behind {ts_now}");
                let later = ts_now.wrapping_add(40);
                assert_eq!(cookie_options(ts, later), Some((wscale.map(|s| s.min(14)), sack)));
            }
        }
        // A TSecr from the future, or older than a cookie lives, is no cookie's.
        assert_eq!(cookie_options(1_000, 900), None);
        assert_eq!(cookie_options(1_000, 1_000 + 129_000), None);
    }
}
