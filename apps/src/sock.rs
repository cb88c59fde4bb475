//! One kernel TCP socket as the runtime sees it: non-blocking reads through a worker-wide
//! scratch buffer, and a bounded userspace transmit buffer for what the kernel's socket
//! buffer did not take, so `send` means the same as on the userspace stack.

use std::io::{self, Read, Write};

use mio::net::TcpStream;

use crate::slot::Error;

/// Bytes one readable dispatch may read before the connection goes to the back of the
/// line (fairness under edge-triggered epoll: it is dispatched again, without a new
/// edge, in the next loop iteration).
pub(crate) const READ_BUDGET: usize = 256 * 1024;

/// A connection's kernel socket and its userspace buffers.
#[derive(Debug)]
pub(crate) struct Sock {
    pub(crate) stream: TcpStream,
    /// Bytes read but not consumed by the service (allocated only when that happens).
    inbuf: Vec<u8>,
    in_pos: usize,
    /// Bytes taken by `send` that the kernel has not taken yet.
    out: Vec<u8>,
    out_pos: usize,
    /// A send came up short: report writable once `out` drains.
    pub(crate) want_write: bool,
    /// The peer's FIN was read.
    pub(crate) eof: bool,
    /// The socket failed (reset, error): drop it.
    pub(crate) dead: bool,
    /// The service closed its side: shut down writing once `out` drains.
    pub(crate) close_req: bool,
    /// `shutdown(Write)` was done.
    pub(crate) shut: bool,
    /// The service aborted: reset.
    pub(crate) abort: bool,
    /// Read budget left in this dispatch.
    pub(crate) budget: usize,
    /// The budget ran out with bytes possibly left: dispatch again.
    pub(crate) again: bool,
}

impl Sock {
    pub(crate) fn new(stream: TcpStream) -> Self {
        Sock {
            stream,
            inbuf: Vec::new(),
            in_pos: 0,
            out: Vec::new(),
            out_pos: 0,
            want_write: false,
            eof: false,
            dead: false,
            close_req: false,
            shut: false,
            abort: false,
            budget: READ_BUDGET,
            again: false,
        }
    }

    /// Bytes waiting in the userspace transmit buffer.
    pub(crate) fn pending(&self) -> usize {
        self.out.len() - self.out_pos
    }

    /// Writes what the kernel takes of `data`, keeps up to `cap` pending bytes of the rest,
    /// and returns how much was taken.
    fn write_out(&mut self, data: &[u8], cap: usize) -> Result<usize, Error> {
        if self.dead {
            return Err(Error::Closed);
        }
        let mut taken = 0;
        while self.pending() == 0 && taken < data.len() {
            match self.stream.write(&data[taken..]) {
                Ok(0) => break,
                Ok(n) => taken += n,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(_) => {
                    self.dead = true;
                    return Err(Error::Closed);
                }
            }
        }
        let rest = &data[taken..];
        if !rest.is_empty() {
            if self.out_pos > 0 {
                self.out.drain(..self.out_pos);
                self.out_pos = 0;
            }
            let k = rest.len().min(cap.saturating_sub(self.out.len()));
            self.out.extend_from_slice(&rest[..k]);
            taken += k;
        }
        if taken < data.len() {
            self.want_write = true;
        }
        Ok(taken)
    }

    /// Writes pending bytes; returns whether none are left.
    pub(crate) fn flush(&mut self) -> bool {
        while self.pending() > 0 && !self.dead {
            match self.stream.write(&self.out[self.out_pos..]) {
                Ok(0) => break,
                Ok(n) => self.out_pos += n,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(_) => self.dead = true,
            }
        }
        if self.pending() == 0 {
            self.out.clear();
            self.out_pos = 0;
            // Give a burst's memory back rather than holding it per idle connection.
            if self.out.capacity() > 64 * 1024 {
                self.out = Vec::new();
            }
            return true;
        }
        false
    }
}

/// A connection's I/O for one handler call.
#[derive(Debug)]
pub(crate) struct KIo<'a> {
    pub(crate) sock: &'a mut Sock,
    pub(crate) scratch: &'a mut [u8],
    pub(crate) tx_cap: usize,
}

impl KIo<'_> {
    pub(crate) fn recv_with<R>(&mut self, f: impl FnOnce(&[u8]) -> (usize, R)) -> Result<R, Error> {
        let s = &mut *self.sock;
        if s.in_pos < s.inbuf.len() {
            let (n, r) = f(&s.inbuf[s.in_pos..]);
            s.in_pos += n.min(s.inbuf.len() - s.in_pos);
            if s.in_pos == s.inbuf.len() {
                s.inbuf.clear();
                s.in_pos = 0;
            }
            return Ok(r);
        }
        if s.eof {
            return Err(Error::Finished);
        }
        if s.dead {
            return Err(Error::Closed);
        }
        if s.budget == 0 {
            s.again = true;
            return Ok(f(&[]).1);
        }
        loop {
            match s.stream.read(self.scratch) {
                Ok(0) => {
                    s.eof = true;
                    return Err(Error::Finished);
                }
                Ok(n) => {
                    s.budget = s.budget.saturating_sub(n);
                    let (used, r) = f(&self.scratch[..n]);
                    if used < n {
                        s.inbuf.extend_from_slice(&self.scratch[used..n]);
                    }
                    return Ok(r);
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(f(&[]).1),
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(_) => {
                    s.dead = true;
                    return Err(Error::Closed);
                }
            }
        }
    }

    pub(crate) fn send(&mut self, data: &[u8]) -> Result<usize, Error> {
        self.sock.write_out(data, self.tx_cap)
    }

    pub(crate) fn send_with(
        &mut self,
        want: usize,
        f: impl FnOnce(&mut [u8]) -> usize,
    ) -> Result<usize, Error> {
        let room = self.send_room()?;
        let n = want.min(room).min(self.scratch.len());
        let w = f(&mut self.scratch[..n]).min(n);
        let taken = self.sock.write_out(&self.scratch[..w], self.tx_cap)?;
        if n < want {
            self.sock.want_write = true;
        }
        Ok(taken)
    }

    pub(crate) fn send_room(&mut self) -> Result<usize, Error> {
        if self.sock.dead {
            return Err(Error::Closed);
        }
        Ok(self.tx_cap - self.sock.pending().min(self.tx_cap))
    }

    pub(crate) fn close(&mut self) {
        self.sock.close_req = true;
    }

    pub(crate) fn abort(&mut self) {
        self.sock.abort = true;
    }
}

/// A worker's sockets by slot, with a free list.
#[derive(Debug)]
pub(crate) struct Socks {
    socks: Vec<Option<Sock>>,
    free: Vec<u32>,
    scratch: Vec<u8>,
    tx_cap: usize,
    /// Slots handed out through [`io`](Self::io) since the last [`take_touched`].
    touched: Vec<u32>,
}

impl Socks {
    pub(crate) fn new(capacity: usize, tx_cap: usize, scratch: usize) -> Self {
        Socks {
            socks: (0..capacity).map(|_| None).collect(),
            free: (0..capacity as u32).rev().collect(),
            scratch: vec![0; scratch],
            tx_cap,
            touched: Vec::new(),
        }
    }

    pub(crate) fn insert(&mut self, sock: Sock) -> Result<u32, Sock> {
        match self.free.pop() {
            Some(slot) => {
                self.socks[slot as usize] = Some(sock);
                Ok(slot)
            }
            None => Err(sock),
        }
    }

    /// The slot the next [`insert`](Self::insert) will use.
    pub(crate) fn peek_free(&self) -> Option<u32> {
        self.free.last().copied()
    }

    pub(crate) fn remove(&mut self, slot: u32) -> Option<Sock> {
        let s = self.socks.get_mut(slot as usize)?.take()?;
        self.free.push(slot);
        Some(s)
    }

    pub(crate) fn get_mut(&mut self, slot: u32) -> Option<&mut Sock> {
        self.socks.get_mut(slot as usize)?.as_mut()
    }

    pub(crate) fn io(&mut self, slot: u32) -> Option<KIo<'_>> {
        let sock = self.socks.get_mut(slot as usize)?.as_mut()?;
        self.touched.push(slot);
        Some(KIo {
            sock,
            scratch: &mut self.scratch,
            tx_cap: self.tx_cap,
        })
    }

    pub(crate) fn take_touched(&mut self) -> Vec<u32> {
        std::mem::take(&mut self.touched)
    }

    pub(crate) fn live(&self) -> impl Iterator<Item = u32> + '_ {
        self.socks
            .iter()
            .enumerate()
            .filter(|(_, s)| s.is_some())
            .map(|(i, _)| i as u32)
    }
}
