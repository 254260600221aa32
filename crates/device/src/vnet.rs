//! The virtio-net header (`struct virtio_net_hdr`, 10 bytes, little-endian
//! as Linux uses it on packet sockets and TAPs): how the kernel and a device
//! tell each other about partial checksums and segmentation. It carries
//! exactly what [`RxMeta`] and [`TxMeta`] mean, so these two functions are
//! the whole translation, shared by every device that speaks it.

use ustack_core::phy::{GsoType, RxMeta, TxMeta};

/// Length of `struct virtio_net_hdr`.
pub const VNET_HDR_LEN: usize = 10;

const F_NEEDS_CSUM: u8 = 1;
const F_DATA_VALID: u8 = 2;
const GSO_NONE: u8 = 0;
const GSO_TCPV4: u8 = 1;
const GSO_TCPV6: u8 = 4;
/// Set with a GSO type when the segments carry ECN's CWR.
const GSO_ECN: u8 = 0x80;

/// What a received header says about its frame; `None` for a segmentation
/// the caller does not take (UDP segments; IPv6 ones here, where the frame
/// may be forwarded to a port that never agreed to them), which it drops.
pub fn rx_meta(h: &[u8; VNET_HDR_LEN]) -> Option<RxMeta> {
    rx_meta_for(h, false)
}

/// [`rx_meta`] for a frame that goes to the stack only, which takes TCP
/// super-segments over IPv6 as well (AF_PACKET: a kernel peer's GSO).
pub fn rx_meta_to_stack(h: &[u8; VNET_HDR_LEN]) -> Option<RxMeta> {
    rx_meta_for(h, true)
}

fn rx_meta_for(h: &[u8; VNET_HDR_LEN], tcpv6: bool) -> Option<RxMeta> {
    let u16_at = |i: usize| u16::from_le_bytes([h[i], h[i + 1]]);
    let gso_type = match h[1] & !GSO_ECN {
        GSO_NONE => GsoType::None,
        GSO_TCPV4 => GsoType::TcpV4,
        GSO_TCPV6 if tcpv6 => GsoType::TcpV6,
        _ => return None,
    };
    let partial = h[0] & F_NEEDS_CSUM != 0;
    Some(RxMeta {
        csum_verified: h[0] & F_DATA_VALID != 0,
        csum_partial: partial,
        csum_start: if partial { u16_at(6) } else { 0 },
        csum_offset: if partial { u16_at(8) } else { 0 },
        gso_type,
        gso_size: if gso_type == GsoType::None { 0 } else { u16_at(4) },
        hdr_len: u16_at(2),
    })
}

/// The header for a frame of `len` bytes sent with `meta`. `hdr_len` is
/// `linear`: the bytes the kernel copies into its own buffer before it
/// points at the rest (a device whose buffers get reused names the whole
/// frame).
pub fn tx_header(meta: &TxMeta, linear: u16) -> [u8; VNET_HDR_LEN] {
    let mut h = [0u8; VNET_HDR_LEN];
    if meta.csum_partial {
        h[0] = F_NEEDS_CSUM;
        h[6..8].copy_from_slice(&meta.csum_start.to_le_bytes());
        h[8..10].copy_from_slice(&meta.csum_offset.to_le_bytes());
    }
    if meta.gso_type != GsoType::None {
        h[1] = if meta.gso_type == GsoType::TcpV6 { GSO_TCPV6 } else { GSO_TCPV4 };
        h[4..6].copy_from_slice(&meta.gso_size.to_le_bytes());
    }
    h[2..4].copy_from_slice(&linear.max(meta.hdr_len).to_le_bytes());
    h
}

/// The transmit metadata that sends a received frame on unchanged (a
/// switch's or a reflector's): its checksum left partial where it was, its
/// super-segment still one.
pub fn forwarded(meta: &RxMeta) -> TxMeta {
    TxMeta {
        csum_partial: meta.csum_partial,
        csum_start: meta.csum_start,
        csum_offset: meta.csum_offset,
        gso_type: meta.gso_type,
        gso_size: meta.gso_size,
        hdr_len: meta.hdr_len,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tx_header_reads_back_as_the_same_facts() {
        let meta = TxMeta {
            csum_partial: true,
            csum_start: 34,
            csum_offset: 16,
            gso_type: GsoType::TcpV4,
            gso_size: 1448,
            hdr_len: 66,
        };
        let h = tx_header(&meta, 9000);
        let rx = rx_meta(&h).unwrap();
        assert_eq!((rx.csum_partial, rx.csum_start, rx.csum_offset), (true, 34, 16));
        assert_eq!((rx.gso_type, rx.gso_size, rx.hdr_len), (GsoType::TcpV4, 1448, 9000));
        let plain = rx_meta(&tx_header(&TxMeta::default(), 60)).unwrap();
        assert_eq!(plain, RxMeta { hdr_len: 60, ..Default::default() });
    }

    #[test]
    fn rx_meta_takes_data_valid_and_ecn_and_refuses_other_segmentation() {
        let mut h = [0u8; VNET_HDR_LEN];
        h[0] = F_DATA_VALID;
        h[1] = GSO_TCPV4 | GSO_ECN;
        let m = rx_meta(&h).unwrap();
        assert!(m.csum_verified && m.gso_type == GsoType::TcpV4);
        h[1] = 3; // GSO_UDP
        assert_eq!(rx_meta(&h), None);
        h[1] = 4; // GSO_TCPV6
        assert_eq!(rx_meta(&h), None);
        assert_eq!(rx_meta_to_stack(&h).map(|m| m.gso_type), Some(GsoType::TcpV6));
        h[1] = 3;
        assert_eq!(rx_meta_to_stack(&h), None);
    }
}
