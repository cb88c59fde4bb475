//! The generator's connections on the wire: which 4-tuple and initial sequence number
//! connection `i` has, and its segments built and parsed with `smoltcp::wire` in place
//! in UMEM frames.

use std::collections::hash_map::RandomState;
use std::hash::BuildHasher;
use std::net::Ipv4Addr;

use c10m_stack::TxQueue;
use smoltcp::phy::ChecksumCapabilities;
use smoltcp::wire::{
    EthernetAddress, EthernetFrame, EthernetProtocol, EthernetRepr, IpAddress, IpProtocol,
    Ipv4Packet, Ipv4Repr, TcpControl, TcpPacket, TcpRepr, TcpSeqNumber,
};

/// Lowest source port.
pub(super) const PORT_LO: u16 = 1024;
/// Source ports per source address.
pub(super) const PORTS: u32 = 65536 - PORT_LO as u32;

/// The segment kinds the generator sends.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Flags {
    Syn,
    /// A pure ACK, or data with PSH when it carries some.
    Ack,
    Rst,
}

/// A segment from the server to one of our connections.
#[derive(Debug, Clone, Copy)]
pub(super) struct Segment<'a> {
    pub(super) i: u32,
    pub(super) seq: u32,
    pub(super) ack: u32,
    pub(super) syn: bool,
    pub(super) ack_flag: bool,
    pub(super) fin: bool,
    pub(super) rst: bool,
    pub(super) data: &'a [u8],
}

/// The addresses, ports and keys of one run.
pub(super) struct Plan {
    pub(super) src_mac: [u8; 6],
    pub(super) dst_mac: [u8; 6],
    pub(super) net: u32,
    pub(super) target: Ipv4Addr,
    pub(super) tport: u16,
    pub(super) count: u32,
    pub(super) hasher: RandomState,
}

impl Plan {
    pub(super) fn tuple(&self, i: u32) -> (Ipv4Addr, u16) {
        let addr = Ipv4Addr::from(self.net + 1 + i / PORTS);
        (addr, PORT_LO + (i % PORTS) as u16)
    }

    pub(super) fn index(&self, addr: Ipv4Addr, port: u16) -> Option<u32> {
        let a = u32::from(addr).checked_sub(self.net + 1)?;
        let p = u32::from(port.checked_sub(PORT_LO)?);
        let i = a.checked_mul(PORTS)?.checked_add(p)?;
        (i < self.count).then_some(i)
    }

    pub(super) fn isn(&self, i: u32) -> u32 {
        let (a, p) = self.tuple(i);
        let t = (u32::from(a), p, u32::from(self.target), self.tport);
        self.hasher.hash_one(t) as u32
    }

    /// Builds and queues one segment of connection `i` (`ack` is sent with every kind
    /// but a SYN); false if the queue was full.
    pub(super) fn send(
        &self,
        tx: &mut impl TxQueue,
        i: u32,
        seq: u32,
        ack: u32,
        flags: Flags,
        data: &[u8],
    ) -> bool {
        if !tx.has_room() {
            return false;
        }
        let (src, sport) = self.tuple(i);
        let (control, ack_number) = match flags {
            Flags::Syn => (TcpControl::Syn, None),
            Flags::Rst => (TcpControl::Rst, None),
            Flags::Ack if data.is_empty() => (TcpControl::None, Some(ack)),
            Flags::Ack => (TcpControl::Psh, Some(ack)),
        };
        let tcp = TcpRepr {
            src_port: sport,
            dst_port: self.tport,
            control,
            seq_number: TcpSeqNumber(seq as i32),
            ack_number: ack_number.map(|a| TcpSeqNumber(a as i32)),
            window_len: 65535,
            window_scale: None,
            max_seg_size: None,
            sack_permitted: false,
            sack_ranges: [None; 3],
            timestamp: None,
            payload: data,
        };
        let ip = Ipv4Repr {
            src_addr: src,
            dst_addr: self.target,
            next_header: IpProtocol::Tcp,
            payload_len: tcp.buffer_len(),
            hop_limit: 64,
        };
        let eth = EthernetRepr {
            src_addr: EthernetAddress(self.src_mac),
            dst_addr: EthernetAddress(self.dst_mac),
            ethertype: EthernetProtocol::Ipv4,
        };
        let len = eth.buffer_len() + ip.buffer_len() + tcp.buffer_len();
        tx.transmit(len, |f| {
            let caps = ChecksumCapabilities::default();
            let mut frame = EthernetFrame::new_unchecked(f);
            eth.emit(&mut frame);
            let mut packet = Ipv4Packet::new_unchecked(frame.payload_mut());
            ip.emit(&mut packet, &caps);
            let (s, d) = (IpAddress::Ipv4(src), IpAddress::Ipv4(self.target));
            let mut segment = TcpPacket::new_unchecked(packet.payload_mut());
            tcp.emit(&mut segment, &s, &d, &caps);
        });
        true
    }

    /// The segment in `frame` if it is TCP from the target to one of our connections.
    /// Lengths are checked (`new_checked`); checksums are not (the bed's veth pair does
    /// not corrupt, and the kernel checked nothing for us either way).
    pub(super) fn parse<'a>(&self, frame: &'a [u8]) -> Option<Segment<'a>> {
        let eth = EthernetFrame::new_checked(frame).ok()?;
        if eth.ethertype() != EthernetProtocol::Ipv4 {
            return None;
        }
        let ip = Ipv4Packet::new_checked(eth.payload()).ok()?;
        if ip.next_header() != IpProtocol::Tcp || ip.src_addr() != self.target {
            return None;
        }
        let tcp = TcpPacket::new_checked(ip.payload()).ok()?;
        if tcp.src_port() != self.tport {
            return None;
        }
        let i = self.index(ip.dst_addr(), tcp.dst_port())?;
        Some(Segment {
            i,
            seq: tcp.seq_number().0 as u32,
            ack: tcp.ack_number().0 as u32,
            syn: tcp.syn(),
            ack_flag: tcp.ack(),
            fin: tcp.fin(),
            rst: tcp.rst(),
            data: tcp.payload(),
        })
    }
}

/// A bitmap of `n` bits.
pub(super) struct Bits(Vec<u64>);

impl Bits {
    pub(super) fn new(n: u32) -> Bits {
        Bits(vec![0; (n as usize).div_ceil(64)])
    }
    pub(super) fn get(&self, i: u32) -> bool {
        self.0[(i / 64) as usize] & (1 << (i % 64)) != 0
    }
    /// Sets bit `i`; true if it was clear.
    pub(super) fn set(&mut self, i: u32) -> bool {
        let w = &mut self.0[(i / 64) as usize];
        let was = *w & (1 << (i % 64)) != 0;
        *w |= 1 << (i % 64);
        !was
    }
    #[cfg(test)]
    pub(super) fn clone_bits(&self) -> Bits {
        Bits(self.0.clone())
    }

    /// Bytes held.
    pub(super) fn bytes(&self) -> usize {
        self.0.capacity() * 8
    }
}
