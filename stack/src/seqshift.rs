//! Moving the sequence and acknowledgement numbers of Ethernet/IPv4/TCP frames in place:
//! how a connection born from a SYN cookie lives in smoltcp's sequence space while its
//! peer stays in the cookie's (see `cookie`). Outgoing frames are fixed up by the device
//! port as they leave, received ones by the stack before smoltcp sees them.

/// Ethernet header bytes.
pub(crate) const ETH: usize = 14;

/// Where the TCP header of an Ethernet/IPv4/TCP or Ethernet/IPv6/TCP frame (no extension
/// header) starts, if it is one.
pub(crate) fn tcp_at(frame: &[u8]) -> Option<usize> {
    let at = match frame.get(12..14)? {
        [0x08, 0x00] if *frame.get(ETH + 9)? == 6 => ETH + usize::from(frame.get(ETH)? & 0x0f) * 4,
        [0x86, 0xdd] if *frame.get(ETH + 6)? == 6 => ETH + 40,
        _ => return None,
    };
    (frame.len() >= at + 20).then_some(at)
}

pub(crate) fn read_u32(frame: &[u8], at: usize) -> u32 {
    u32::from_be_bytes([frame[at], frame[at + 1], frame[at + 2], frame[at + 3]])
}

/// RFC 1624 eq. 3: the ones'-complement checksum `hc` after a 32-bit field changed from
/// `old` to `new`: HC' = ~(~HC + ~m + m'), word by word.
pub(crate) fn checksum_update(hc: u16, old: u32, new: u32) -> u16 {
    let mut sum = u32::from(!hc) + (!old >> 16) + (!old & 0xffff) + (new >> 16) + (new & 0xffff);
    while sum >> 16 != 0 {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    !(sum as u16)
}

/// Moves the sequence number of a transmitted TCP frame from smoltcp's space into the
/// peer's (`-delta`), fixing the TCP checksum incrementally. Other frames pass untouched.
pub(crate) fn shift_seq(frame: &mut [u8], delta: u32) {
    let Some(at) = tcp_at(frame) else {
        return;
    };
    let old = read_u32(frame, at + 4);
    let new = old.wrapping_sub(delta);
    frame[at + 4..at + 8].copy_from_slice(&new.to_be_bytes());
    let hc = u16::from_be_bytes([frame[at + 16], frame[at + 17]]);
    frame[at + 16..at + 18].copy_from_slice(&checksum_update(hc, old, new).to_be_bytes());
}

/// Moves the acknowledgement number of a received TCP frame from the peer's space into
/// smoltcp's (`+delta`). The checksum is not fixed: smoltcp does not verify it on receive
/// (`device::capabilities`); the stack did, before.
pub(crate) fn shift_ack(frame: &mut [u8], delta: u32) {
    let Some(at) = tcp_at(frame) else {
        return;
    };
    let new = read_u32(frame, at + 8).wrapping_add(delta);
    frame[at + 8..at + 12].copy_from_slice(&new.to_be_bytes());
}

/// Moves the sequence number of a received TCP frame `by` bytes forward. As for
/// [`shift_ack`], the checksum is not fixed.
pub(crate) fn shift_rx_seq(frame: &mut [u8], by: u32) {
    let Some(at) = tcp_at(frame) else {
        return;
    };
    let new = read_u32(frame, at + 4).wrapping_add(by);
    frame[at + 4..at + 8].copy_from_slice(&new.to_be_bytes());
}

/// The sequence number of a TCP frame (`None` for anything shorter than its headers:
/// never the case for a frame `parse::classify` found to be TCP).
pub(crate) fn seq(frame: &[u8]) -> Option<u32> {
    tcp_at(frame).map(|at| read_u32(frame, at + 4))
}

/// What a TCP frame that carries a SACK option (RFC 2018, kind 5) says: its
/// acknowledgement number, raw window, and the bytes its SACK blocks cover beyond the
/// acknowledgement number. `None` for any other frame, or one whose options do not parse.
pub(crate) fn sack_ack(frame: &[u8]) -> Option<Sacked> {
    let at = tcp_at(frame)?;
    let end = at + usize::from(frame[at + 12] >> 4) * 4;
    let mut opt = at + 20;
    while opt < end {
        match *frame.get(opt)? {
            0 => return None,
            1 => opt += 1,
            kind => {
                let len = usize::from(*frame.get(opt + 1)?);
                if len < 2 {
                    return None;
                }
                if kind == 5 {
                    let ack = read_u32(frame, at + 8);
                    let blocks = frame.get(opt + 2..(opt + len).min(end))?;
                    let bytes = blocks
                        .chunks_exact(8)
                        .map(|b| {
                            let (left, right) = (read_u32(b, 0), read_u32(b, 4));
                            // Only what lies beyond the acknowledgement number (a D-SACK
                            // block below it, RFC 2883, counts nothing).
                            let beyond = |x: u32| x.wrapping_sub(ack) < 1 << 31;
                            if beyond(left) && beyond(right) {
                                right.wrapping_sub(left).min(1 << 30)
                            } else {
                                0
                            }
                        })
                        .fold(0u32, u32::saturating_add);
                    let window = u16::from_be_bytes([frame[at + 14], frame[at + 15]]);
                    return Some(Sacked { ack, window, bytes });
                }
                opt += len;
            }
        }
    }
    None
}

/// What [`sack_ack`] finds in a segment.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Sacked {
    /// The acknowledgement number.
    pub(crate) ack: u32,
    /// The window field, unscaled.
    pub(crate) window: u16,
    /// Bytes the SACK blocks cover beyond `ack`.
    pub(crate) bytes: u32,
}

/// Sets the raw window of a received TCP frame. As for [`shift_ack`], the checksum is
/// not fixed.
pub(crate) fn set_window(frame: &mut [u8], window: u16) {
    let Some(at) = tcp_at(frame) else {
        return;
    };
    frame[at + 14..at + 16].copy_from_slice(&window.to_be_bytes());
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use smoltcp::phy::ChecksumCapabilities;
    use smoltcp::wire::{
        EthernetFrame, EthernetProtocol, IpAddress, IpProtocol, Ipv4Packet, Ipv4Repr, TcpControl,
        TcpPacket, TcpRepr, TcpSeqNumber,
    };
    use std::net::Ipv4Addr;

    const IP: usize = 20;

    fn segment(seq: u32, payload: &[u8], ports: (u16, u16)) -> Vec<u8> {
        let mut buf = vec![0u8; ETH + IP + 20 + payload.len()];
        let tcp = TcpRepr {
            src_port: ports.0,
            dst_port: ports.1,
            control: TcpControl::Psh,
            seq_number: TcpSeqNumber(seq as i32),
            ack_number: Some(TcpSeqNumber(77)),
            window_len: 512,
            window_scale: None,
            max_seg_size: None,
            sack_permitted: false,
            sack_ranges: [None; 3],
            timestamp: None,
            payload,
        };
        let (src, dst) = (Ipv4Addr::new(198, 18, 0, 10), Ipv4Addr::new(198, 19, 1, 2));
        let ip = Ipv4Repr {
            src_addr: src,
            dst_addr: dst,
            next_header: IpProtocol::Tcp,
            payload_len: tcp.buffer_len(),
            hop_limit: 64,
        };
        let caps = ChecksumCapabilities::default();
        let mut f = EthernetFrame::new_unchecked(&mut buf[..]);
        f.set_ethertype(EthernetProtocol::Ipv4);
        let mut p = Ipv4Packet::new_unchecked(f.payload_mut());
        ip.emit(&mut p, &caps);
        let mut t = TcpPacket::new_unchecked(p.payload_mut());
        tcp.emit(&mut t, &IpAddress::Ipv4(src), &IpAddress::Ipv4(dst), &caps);
        buf
    }

    proptest! {
        #[test]
        fn incremental_checksum_matches_a_full_recompute(
            seq: u32,
            delta: u32,
            ports: (u16, u16),
            payload in proptest::collection::vec(any::<u8>(), 0..64),
        ) {
            let mut shifted = segment(seq, &payload, ports);
            shift_seq(&mut shifted, delta);
            let full = segment(seq.wrapping_sub(delta), &payload, ports);
            prop_assert_eq!(shifted, full);
        }

        #[test]
        fn checksum_update_is_rfc_1624(hc: u16, old: u32, new: u32) {
            // Adding the change to the sum and back gives the original (ones' complement).
            let there = checksum_update(hc, old, new);
            let back = checksum_update(there, new, old);
            // +0 and -0 are the same number in ones' complement.
            prop_assert!(back == hc || (back, hc) == (0, 0xffff) || (back, hc) == (0xffff, 0));
        }
    }

    #[test]
    fn only_tcp_frames_are_shifted() {
        let mut arp = [0u8; 42];
        arp[12] = 0x08;
        arp[13] = 0x06;
        let before = arp;
        shift_seq(&mut arp, 5);
        assert_eq!(arp, before);
        let mut short = segment(1, b"", (1, 2));
        short.truncate(ETH + IP + 10);
        let before = short.clone();
        shift_seq(&mut short, 5);
        assert_eq!(short, before, "a truncated frame is left alone");
    }

    #[test]
    fn sack_blocks_are_found_among_other_options_and_the_window_set() {
        let mut f = segment(1, &[], (80, 9000));
        assert_eq!(sack_ack(&f), None, "no options");
        // Rebuild with options: NOP, NOP, timestamps (10), NOP, NOP, SACK of one block.
        let at = tcp_at(&f).unwrap();
        let mut opts = vec![1, 1, 8, 10, 0, 0, 0, 1, 0, 0, 0, 2, 1, 1, 5, 10];
        opts.extend_from_slice(&[0, 0, 0, 100, 0, 0, 0, 200]);
        f.splice(at + 20..at + 20, opts.iter().copied());
        f[at + 12] = ((20 + opts.len()) as u8 / 4) << 4;
        let sacked = |window| Sacked {
            ack: 77,
            window,
            bytes: 100,
        };
        assert_eq!(sack_ack(&f), Some(sacked(512)));
        set_window(&mut f, 300);
        assert_eq!(sack_ack(&f), Some(sacked(300)));
        // Timestamps alone, or a truncated option list, are not SACK.
        f[at + 12] = 8 << 4;
        assert_eq!(sack_ack(&f), None);
        f[at + 12] = 15 << 4;
        f[at + 20 + 14 + 1] = 0;
        assert_eq!(sack_ack(&f), None, "an option of length 0");
    }
}
