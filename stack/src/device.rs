//! Frames in and out: the small trait a transmit queue implements, and the one-frame
//! smoltcp device the stack builds around it for each poll.
//!
//! Frames come *in* as plain `&[u8]` handed to [`Stack::ingress`](crate::Stack::ingress)
//! (on the dataplane, a view into the UMEM frame the NIC wrote: no copy). Frames go *out*
//! through a [`TxQueue`], which lends the stack a buffer to build each frame in place (on the
//! dataplane, a free UMEM frame).

use smoltcp::phy::{self, Checksum, ChecksumCapabilities, DeviceCapabilities, Medium};
use smoltcp::time::Instant;

/// The largest Ethernet frame the stack builds (1500-byte MTU, no FCS).
pub const MAX_FRAME: usize = 1514;

/// Somewhere the stack can send Ethernet frames: a NIC transmit ring, an in-memory wire.
pub trait TxQueue {
    /// Whether one more frame fits now. The stack asks before building each frame and
    /// leaves work for a later poll when the answer is no.
    fn has_room(&self) -> bool;

    /// Sends one frame of exactly `len` bytes (at most [`MAX_FRAME`]), built in place by
    /// `fill`. Called only after [`has_room`](Self::has_room) returned `true`. An
    /// implementation that is full anyway must still call `fill` (on scratch memory) and
    /// drop the frame: smoltcp has already committed to sending it.
    fn transmit<R>(&mut self, len: usize, fill: impl FnOnce(&mut [u8]) -> R) -> R;
}

/// What the stack saw of the frames it transmitted.
#[derive(Debug, Default, Clone, Copy)]
pub(crate) struct TxTally {
    pub(crate) frames: u64,
    pub(crate) bytes: u64,
    pub(crate) resets: u64,
    /// The address the last ARP request or neighbour solicitation asked for (see
    /// `neighbour`); whoever wants to know takes it.
    pub(crate) asked: Option<std::net::IpAddr>,
}

impl TxTally {
    pub(crate) fn count(&mut self, frame: &[u8]) {
        self.frames += 1;
        self.bytes += frame.len() as u64;
        if is_tcp_rst(frame) {
            self.resets += 1;
        } else if let Some(addr) = crate::neighbour::solicited(frame) {
            self.asked = Some(addr);
        }
    }
}

/// Ethernet/IPv4/TCP or Ethernet/IPv6/TCP with RST set: read straight from the header
/// bytes.
fn is_tcp_rst(frame: &[u8]) -> bool {
    if let Some(&[0x86, 0xdd]) = frame.get(12..14) {
        return frame.get(20) == Some(&6) && frame.get(14 + 40 + 13).is_some_and(|f| f & 0x04 != 0);
    }
    let Some(&[0x08, 0x00]) = frame.get(12..14) else {
        return false;
    };
    let Some(&vihl) = frame.get(14) else {
        return false;
    };
    if frame.get(23) != Some(&6) {
        return false;
    }
    let flags_at = 14 + usize::from(vihl & 0x0f) * 4 + 13;
    frame.get(flags_at).is_some_and(|f| f & 0x04 != 0)
}

/// The capabilities every stack port reports: Ethernet, 1500-byte MTU, checksums computed
/// on transmit and not verified on receive (the stack verified them already, so that it can
/// count bad ones — see `parse`).
pub(crate) fn capabilities() -> DeviceCapabilities {
    let mut checksum = ChecksumCapabilities::default();
    checksum.ipv4 = Checksum::Tx;
    checksum.tcp = Checksum::Tx;
    checksum.udp = Checksum::Tx;
    checksum.icmpv4 = Checksum::Both;
    let mut caps = DeviceCapabilities::default();
    caps.medium = Medium::Ethernet;
    caps.max_transmission_unit = MAX_FRAME;
    caps.checksum = checksum;
    caps
}

/// A smoltcp device that yields at most one received frame and transmits into a
/// [`TxQueue`]: what `poll_ingress_single` and `poll_egress` see.
pub(crate) struct Port<'a, T: TxQueue> {
    pub(crate) rx: Option<&'a [u8]>,
    pub(crate) tx: &'a mut T,
    pub(crate) tally: &'a mut TxTally,
    pub(crate) caps: &'a DeviceCapabilities,
    /// For a connection born from a SYN cookie: what to subtract from the sequence number
    /// of every TCP frame transmitted (see `cookie`). 0 for every other connection.
    pub(crate) seq_delta: u32,
}

impl<T: TxQueue> phy::Device for Port<'_, T> {
    type RxToken<'b>
        = Rx<'b>
    where
        Self: 'b;
    type TxToken<'b>
        = Tx<'b, T>
    where
        Self: 'b;

    fn receive(&mut self, _: Instant) -> Option<(Rx<'_>, Tx<'_, T>)> {
        let frame = self.rx.take()?;
        Some((
            Rx(frame),
            Tx {
                queue: self.tx,
                tally: self.tally,
                seq_delta: self.seq_delta,
            },
        ))
    }

    fn transmit(&mut self, _: Instant) -> Option<Tx<'_, T>> {
        self.tx.has_room().then_some(Tx {
            queue: self.tx,
            tally: self.tally,
            seq_delta: self.seq_delta,
        })
    }

    fn capabilities(&self) -> DeviceCapabilities {
        self.caps.clone()
    }
}

pub(crate) struct Rx<'a>(&'a [u8]);

impl phy::RxToken for Rx<'_> {
    fn consume<R, F: FnOnce(&[u8]) -> R>(self, f: F) -> R {
        f(self.0)
    }
}

pub(crate) struct Tx<'a, T: TxQueue> {
    queue: &'a mut T,
    tally: &'a mut TxTally,
    seq_delta: u32,
}

impl<T: TxQueue> phy::TxToken for Tx<'_, T> {
    fn consume<R, F: FnOnce(&mut [u8]) -> R>(self, len: usize, f: F) -> R {
        let (tally, seq_delta) = (self.tally, self.seq_delta);
        self.queue.transmit(len, |buf| {
            let r = f(buf);
            if seq_delta != 0 {
                crate::seqshift::shift_seq(buf, seq_delta);
            }
            tally.count(buf);
            r
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rst_is_read_from_the_header() {
        let mut f = [0u8; 54];
        f[12] = 0x08;
        f[14] = 0x45;
        f[23] = 6;
        assert!(!is_tcp_rst(&f));
        f[14 + 20 + 13] = 0x14; // RST|ACK
        assert!(is_tcp_rst(&f));
        assert!(!is_tcp_rst(&f[..40]), "a short frame is not a reset");
    }
}
