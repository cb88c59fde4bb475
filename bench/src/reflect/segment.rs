//! The reflector's answer to one frame: a pure function of the frame, the reflector's
//! address and its key, so it is tested in memory and keeps no state between frames.
//!
//! | in | out |
//! |---|---|
//! | ARP request for our address | ARP reply (RFC 826) |
//! | SYN | SYN-ACK, ISN = the stack's SYN cookie of the 4-tuple ([`CookieKeys::cookie`]), MSS option only |
//! | segment with payload (ACK set) | one segment: the canned HTTP response per request in it, or the payload echoed; `seq` = its `ack`, `ack` = its `seq` + length |
//! | FIN (ACK set) | FIN-ACK (with the response too if the FIN carried data) |
//! | RST, pure ACK | nothing |
//! | anything else, or malformed, or a bad checksum, or not for our address and port | nothing, counted |
//!
//! Sequence numbers come from the incoming segment alone (RFC 9293 §3.4): our next
//! sequence number is what the peer acknowledges, and we acknowledge everything it sent.
//! That is right as long as the peer's segments arrive in order and each is answered,
//! which is what a benchmark's request/response traffic on a lossless link does; on loss
//! the peer retransmits and gets the same answer again. A request must fit one segment.
//! What this gives up — retransmission, windows, out-of-order data — is exactly the work
//! a real stack does, which is the point: it is the cheapest correct-looking answer, the
//! ceiling for a server on the same path.
//!
//! The SYN-ACK offers no window scaling, SACK or timestamps, so the peer uses none
//! (RFC 7323 §2.2): every segment then has the fixed 20-byte header built here. Frames
//! are built with `smoltcp::wire`'s `Repr::emit`, checksums computed, straight into the
//! transmit queue's frame (a UMEM frame on AF_XDP).

use std::net::Ipv4Addr;

use c10m_stack::{CookieKeys, FourTuple, TxQueue};
use smoltcp::phy::ChecksumCapabilities;
use smoltcp::wire::{
    ArpOperation, ArpPacket, ArpRepr, EthernetAddress, EthernetFrame, EthernetProtocol,
    EthernetRepr, IpAddress, IpProtocol, Ipv4Packet, Ipv4Repr, TcpControl, TcpPacket, TcpRepr,
    TcpSeqNumber,
};

/// Ethernet header bytes.
const ETH: usize = 14;
/// The MSS we announce: a 1500-byte MTU less the IPv4 and TCP headers.
pub(crate) const MSS: u16 = 1460;
/// The window we announce (no scaling).
const WINDOW: u16 = 65535;

/// What the reflector counted. Every frame in lands in exactly one of `arp_replies`,
/// `syn_acks`, `responses`, `fin_acks`, `resets`, `acks`, `ignored` and `dropped`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize)]
pub(crate) struct Counters {
    /// Frames looked at.
    pub(crate) frames: u64,
    /// ARP requests for our address answered.
    pub(crate) arp_replies: u64,
    /// SYNs answered with a SYN-ACK.
    pub(crate) syn_acks: u64,
    /// Data segments answered with one response segment.
    pub(crate) responses: u64,
    /// HTTP responses sent (a segment carrying pipelined requests gets one each).
    pub(crate) http_responses: u64,
    /// Payload bytes echoed.
    pub(crate) echoed_bytes: u64,
    /// FINs answered with a FIN-ACK.
    pub(crate) fin_acks: u64,
    /// RSTs received (not answered).
    pub(crate) resets: u64,
    /// Pure ACKs received (not answered).
    pub(crate) acks: u64,
    /// Well-formed frames for someone else, or of a kind not answered (ARP replies, other
    /// protocols, segments without ACK).
    pub(crate) ignored: u64,
    /// Malformed frames or bad checksums.
    pub(crate) dropped: u64,
    /// Pipelined HTTP requests left unanswered because their responses did not fit one
    /// segment.
    pub(crate) truncated: u64,
    /// Answers not sent because the transmit queue was full.
    pub(crate) no_room: u64,
}

/// A stateless reflector for one address and TCP port. See the module docs.
#[derive(Debug)]
pub(crate) struct Reflector {
    mac: EthernetAddress,
    addr: Ipv4Addr,
    port: u16,
    keys: CookieKeys,
    /// One canned HTTP response.
    http: Vec<u8>,
    /// Scratch for several canned responses in one segment.
    scratch: Vec<u8>,
    pub(crate) counters: Counters,
}

/// The TCP answer to build.
struct Answer {
    control: TcpControl,
    seq: u32,
    ack: u32,
    mss: Option<u16>,
    body: Body,
}

/// What an answer carries.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Body {
    Empty,
    /// The request's own payload.
    Echo,
    /// This many canned HTTP responses.
    Http(usize),
}

impl Reflector {
    /// A reflector answering at `mac`, `addr:port`, with `http` as the response to each
    /// HTTP request and SYN-ACK sequence numbers keyed by `keys`.
    pub(crate) fn new(
        mac: [u8; 6],
        addr: Ipv4Addr,
        port: u16,
        keys: CookieKeys,
        http: Vec<u8>,
    ) -> Reflector {
        Reflector {
            mac: EthernetAddress(mac),
            addr,
            port,
            keys,
            http,
            scratch: Vec::with_capacity(usize::from(MSS)),
            counters: Counters::default(),
        }
    }

    /// Answers one frame into `tx` (at most one frame out).
    pub(crate) fn answer<T: TxQueue>(&mut self, frame: &[u8], tx: &mut T) {
        self.counters.frames += 1;
        let Ok(eth) = EthernetFrame::new_checked(frame) else {
            self.counters.dropped += 1;
            return;
        };
        match eth.ethertype() {
            EthernetProtocol::Arp => self.arp(&eth, tx),
            EthernetProtocol::Ipv4 => self.ipv4(&eth, tx),
            _ => self.counters.ignored += 1,
        }
    }

    fn arp<T: TxQueue>(&mut self, eth: &EthernetFrame<&[u8]>, tx: &mut T) {
        let parsed = ArpPacket::new_checked(eth.payload()).and_then(|p| ArpRepr::parse(&p));
        let Ok(ArpRepr::EthernetIpv4 {
            operation,
            source_hardware_addr,
            source_protocol_addr,
            target_protocol_addr,
            ..
        }) = parsed
        else {
            self.counters.dropped += 1;
            return;
        };
        if operation != ArpOperation::Request || target_protocol_addr != self.addr {
            self.counters.ignored += 1;
            return;
        }
        let reply = ArpRepr::EthernetIpv4 {
            operation: ArpOperation::Reply,
            source_hardware_addr: self.mac,
            source_protocol_addr: self.addr,
            target_hardware_addr: source_hardware_addr,
            target_protocol_addr: source_protocol_addr,
        };
        if !tx.has_room() {
            self.counters.no_room += 1;
            return;
        }
        let head = EthernetRepr {
            src_addr: self.mac,
            dst_addr: source_hardware_addr,
            ethertype: EthernetProtocol::Arp,
        };
        tx.transmit(ETH + reply.buffer_len(), |buf| {
            let mut f = EthernetFrame::new_unchecked(buf);
            head.emit(&mut f);
            reply.emit(&mut ArpPacket::new_unchecked(f.payload_mut()));
        });
        self.counters.arp_replies += 1;
    }

    fn ipv4<T: TxQueue>(&mut self, eth: &EthernetFrame<&[u8]>, tx: &mut T) {
        let caps = ChecksumCapabilities::default();
        let Ok(packet) = Ipv4Packet::new_checked(eth.payload()) else {
            self.counters.dropped += 1;
            return;
        };
        let Ok(ip) = Ipv4Repr::parse(&packet, &caps) else {
            self.counters.dropped += 1;
            return;
        };
        if ip.dst_addr != self.addr || ip.next_header != IpProtocol::Tcp {
            self.counters.ignored += 1;
            return;
        }
        let (src, dst) = (IpAddress::Ipv4(ip.src_addr), IpAddress::Ipv4(ip.dst_addr));
        let parsed = TcpPacket::new_checked(packet.payload())
            .and_then(|p| TcpRepr::parse(&p, &src, &dst, &caps));
        let Ok(seg) = parsed else {
            self.counters.dropped += 1;
            return;
        };
        if seg.dst_port != self.port {
            self.counters.ignored += 1;
            return;
        }
        let seq = seg.seq_number.0 as u32;
        let len = seg.payload.len() as u32;
        let answer = match (seg.control, seg.ack_number) {
            (TcpControl::Rst, _) => {
                self.counters.resets += 1;
                return;
            }
            (TcpControl::Syn, None) => {
                let t = FourTuple {
                    remote_addr: c10m_stack::addr_v4(ip.src_addr),
                    local_addr: c10m_stack::addr_v4(ip.dst_addr),
                    remote_port: seg.src_port,
                    local_port: seg.dst_port,
                };
                self.counters.syn_acks += 1;
                Answer {
                    control: TcpControl::Syn,
                    seq: self.keys.cookie(&t, seq, 3),
                    ack: seq.wrapping_add(1),
                    mss: Some(MSS),
                    body: Body::Empty,
                }
            }
            (TcpControl::Fin, Some(ack)) => {
                let body = self.body(seg.payload);
                self.counters.fin_acks += 1;
                Answer {
                    control: TcpControl::Fin,
                    seq: ack.0 as u32,
                    ack: seq.wrapping_add(len).wrapping_add(1),
                    mss: None,
                    body,
                }
            }
            (TcpControl::None | TcpControl::Psh, Some(ack)) if len > 0 => {
                let body = self.body(seg.payload);
                self.counters.responses += 1;
                Answer {
                    control: TcpControl::Psh,
                    seq: ack.0 as u32,
                    ack: seq.wrapping_add(len),
                    mss: None,
                    body,
                }
            }
            (TcpControl::None | TcpControl::Psh, Some(_)) => {
                self.counters.acks += 1;
                return;
            }
            _ => {
                self.counters.ignored += 1;
                return;
            }
        };
        if !tx.has_room() {
            self.counters.no_room += 1;
            return;
        }
        if let Body::Http(n @ 2..) = answer.body {
            self.scratch.clear();
            for _ in 0..n {
                self.scratch.extend_from_slice(&self.http);
            }
        }
        let payload: &[u8] = match answer.body {
            Body::Empty => &[],
            Body::Echo => seg.payload,
            Body::Http(1) => &self.http,
            Body::Http(_) => &self.scratch,
        };
        let tcp = TcpRepr {
            src_port: seg.dst_port,
            dst_port: seg.src_port,
            control: answer.control,
            seq_number: TcpSeqNumber(answer.seq as i32),
            ack_number: Some(TcpSeqNumber(answer.ack as i32)),
            window_len: WINDOW,
            window_scale: None,
            max_seg_size: answer.mss,
            sack_permitted: false,
            sack_ranges: [None; 3],
            timestamp: None,
            payload,
        };
        let out = Ipv4Repr {
            src_addr: ip.dst_addr,
            dst_addr: ip.src_addr,
            next_header: IpProtocol::Tcp,
            payload_len: tcp.buffer_len(),
            hop_limit: 64,
        };
        let head = EthernetRepr {
            src_addr: self.mac,
            dst_addr: eth.src_addr(),
            ethertype: EthernetProtocol::Ipv4,
        };
        tx.transmit(ETH + out.buffer_len() + tcp.buffer_len(), |buf| {
            let mut f = EthernetFrame::new_unchecked(buf);
            head.emit(&mut f);
            let mut p = Ipv4Packet::new_unchecked(f.payload_mut());
            out.emit(&mut p, &caps);
            let mut t = TcpPacket::new_unchecked(p.payload_mut());
            tcp.emit(&mut t, &dst, &src, &caps);
        });
    }

    /// What answers `request`: one canned HTTP response per request in it if it is HTTP
    /// (as many as fit one segment), otherwise `request` itself; counted.
    fn body(&mut self, request: &[u8]) -> Body {
        if request.is_empty() {
            return Body::Empty;
        }
        let Some(n) = http_requests(request) else {
            self.counters.echoed_bytes += request.len() as u64;
            return Body::Echo;
        };
        let fit = (usize::from(MSS) / self.http.len().max(1)).max(1);
        let sent = n.min(fit);
        self.counters.truncated += (n - sent) as u64;
        self.counters.http_responses += sent as u64;
        Body::Http(sent)
    }
}

/// How many HTTP/1.x request heads `payload` holds, if it starts like one (a method
/// token, a space, and ` HTTP/1.` on its first line); `None` for anything else (echoed).
fn http_requests(payload: &[u8]) -> Option<usize> {
    let method = payload.iter().position(|&b| b == b' ')?;
    if method == 0 || !payload[..method].iter().all(u8::is_ascii_uppercase) {
        return None;
    }
    let line = payload
        .iter()
        .position(|&b| b == b'\n')
        .unwrap_or(payload.len());
    if !payload[..line].windows(7).any(|w| w == b" HTTP/1") {
        return None;
    }
    let heads = payload.windows(4).filter(|w| *w == b"\r\n\r\n").count();
    Some(heads.max(1))
}

#[cfg(test)]
#[path = "segment_tests.rs"]
mod tests;
