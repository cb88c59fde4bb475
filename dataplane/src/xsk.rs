//! One AF_XDP socket bound to one (interface, queue), with its four rings.
//!
//! This module is the only user of `xdpilone` (EUPL-1.2, used unmodified): everything it
//! exposes is in our own terms (addresses, lengths, `io::Error`), so a libc-only
//! implementation of the same few calls could replace it.
//!
//! Each socket registers its own UMEM ([`Memory`]) and owns its fill and completion
//! rings: share-nothing, one socket per worker. The rings are single-producer
//! single-consumer rings shared with the kernel; every batch is reserved, written and
//! committed with one release store (`xdpilone` does the index arithmetic). Sockets are
//! bound with `XDP_USE_NEED_WAKEUP`: the kernel says when it needs a syscall to make
//! progress (fill ring ran empty, tx ring has work), and otherwise none is made.
//!
//! Zero-copy (`XDP_ZEROCOPY`) lets the NIC DMA straight into UMEM; it needs driver
//! support (see HARDWARE.md). In copy mode (`XDP_COPY`, e.g. veth) the kernel copies
//! each frame between its own buffers and UMEM, and transmission happens inside the
//! `sendto` kick.

use std::ffi::CString;
use std::io;
use std::num::NonZeroU32;
use std::os::fd::{BorrowedFd, RawFd};
use std::sync::Arc;

use xdpilone::{
    DeviceQueue, IfInfo, RingRx, RingTx, Socket as XSocket, SocketConfig, Umem, UmemConfig,
};

use c10m_stack::Region;

use crate::umem::Memory;

/// Copy or zero-copy, as asked on the command line.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum ZeroCopy {
    /// Try zero-copy; fall back to copy mode with a log line.
    #[default]
    Auto,
    /// Zero-copy or fail.
    On,
    /// Copy mode.
    Off,
}

/// Ring sizes (powers of two) of one socket.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Rings {
    pub(crate) fill: u32,
    pub(crate) completion: u32,
    pub(crate) rx: u32,
    pub(crate) tx: u32,
}

/// Kernel-side counters of one socket (`XDP_STATISTICS`).
#[derive(Debug, Clone, Copy, Default, serde::Serialize)]
pub struct KernelStats {
    /// Frames dropped for reasons other than below (e.g. too big for a frame).
    pub rx_dropped: u64,
    /// Invalid descriptors on the fill ring.
    pub rx_invalid_descs: u64,
    /// Invalid descriptors on the tx ring.
    pub tx_invalid_descs: u64,
    /// Frames dropped because the rx ring was full (we were too slow).
    pub rx_ring_full: u64,
    /// Times the kernel found the fill ring empty.
    pub rx_fill_ring_empty: u64,
    /// Times the kernel found the tx ring empty when woken.
    pub tx_ring_empty: u64,
}

/// An AF_XDP socket and its rings. Not `Send` (the UMEM handle is not): build it on the
/// thread that uses it. Keeps the mapping of the [`Memory`] it was opened over.
pub(crate) struct Socket {
    fq: DeviceQueue,
    rx: RingRx,
    tx: RingTx,
    fd: RawFd,
    zero_copy: bool,
    // After the rings: the registration's descriptor is shared with them.
    _umem: Umem,
    // The mapping registered as the UMEM: kept while the socket lives.
    _area: Arc<Region<u8>>,
}

impl std::fmt::Debug for Socket {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Socket")
            .field("fd", &self.fd)
            .field("zero_copy", &self.zero_copy)
            .finish_non_exhaustive()
    }
}

fn errno(what: impl std::fmt::Display, e: xdpilone::Errno) -> io::Error {
    let raw = io::Error::from_raw_os_error(e.get_raw().abs());
    io::Error::new(raw.kind(), format!("{what}: {raw}"))
}

const XDP_OPTIONS: libc::c_int = 8;
const XDP_OPTIONS_ZEROCOPY: u32 = 1;
const SOL_XDP: libc::c_int = 283;

impl Socket {
    /// Opens a socket on `ifname` rx/tx queue `queue` over `mem`, in the mode `zc` asks
    /// for (`Auto`: copy mode when the driver says it does no zero-copy, else zero-copy if
    /// the bind takes it, else copy).
    pub(crate) fn open(
        ifname: &str,
        queue: u32,
        mem: &Memory,
        frame_size: u32,
        rings: Rings,
        zc: ZeroCopy,
    ) -> io::Result<Socket> {
        match zc {
            ZeroCopy::Off => Self::open_mode(ifname, queue, mem, frame_size, rings, false),
            ZeroCopy::On => Self::open_mode(ifname, queue, mem, frame_size, rings, true)
                .map_err(|e| {
                    io::Error::new(
                        e.kind(),
                        format!(
                            "{e}: the driver of {ifname} does not do AF_XDP zero-copy on queue {queue}: use --zero-copy auto or off"
                        ),
                    )
                }),
            ZeroCopy::Auto if c10m_ebpf::xsk_zero_copy(ifname) == Some(false) => {
                tracing::info!("{ifname}: its driver does no AF_XDP zero-copy; using copy mode");
                Self::open_mode(ifname, queue, mem, frame_size, rings, false)
            }
            ZeroCopy::Auto => Self::open_mode(ifname, queue, mem, frame_size, rings, true)
                .or_else(|e| {
                    tracing::info!("{ifname} queue {queue}: zero-copy refused ({e}); using copy mode");
                    Self::open_mode(ifname, queue, mem, frame_size, rings, false)
                }),
        }
    }

    fn open_mode(
        ifname: &str,
        queue: u32,
        mem: &Memory,
        frame_size: u32,
        rings: Rings,
        zero_copy: bool,
    ) -> io::Result<Socket> {
        let name = CString::new(ifname)
            .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "interface name has a NUL"))?;
        let mut info = IfInfo::invalid();
        info.from_name(&name)
            .map_err(|e| errno(format_args!("looking up {ifname}"), e))?;
        info.set_queue(queue);
        let config = UmemConfig {
            fill_size: rings.fill,
            complete_size: rings.completion,
            frame_size,
            headroom: 0,
            flags: 0,
        };
        // SAFETY: `mem.area()` is a page-aligned mapping of `count * frame_size` bytes;
        // the socket keeps a share of it (`_area`), so it stays mapped as long as the
        // socket whatever becomes of `mem`, and the area is only accessed through `Frame`
        // tokens, which keep us off frames the kernel owns.
        let umem = unsafe { Umem::new(config, mem.area()) }
            .map_err(|e| errno("registering the UMEM (AF_XDP needs Linux 5.4+ and root)", e))?;
        let sock =
            XSocket::with_shared(&info, &umem).map_err(|e| errno("creating the socket", e))?;
        let fq = umem
            .fq_cq(&sock)
            .map_err(|e| errno("creating the fill and completion rings", e))?;
        let mode = if zero_copy {
            SocketConfig::XDP_BIND_ZEROCOPY
        } else {
            SocketConfig::XDP_BIND_COPY
        };
        let user = umem
            .rx_tx(
                &sock,
                &SocketConfig {
                    rx_size: NonZeroU32::new(rings.rx),
                    tx_size: NonZeroU32::new(rings.tx),
                    bind_flags: mode | SocketConfig::XDP_BIND_NEED_WAKEUP,
                },
            )
            .map_err(|e| errno("creating the rx and tx rings", e))?;
        let rx = user.map_rx().map_err(|e| errno("mapping the rx ring", e))?;
        let tx = user.map_tx().map_err(|e| errno("mapping the tx ring", e))?;
        umem.bind(&user).map_err(|e| {
            errno(
                format_args!(
                    "binding to {ifname} queue {queue} in {} mode",
                    if zero_copy { "zero-copy" } else { "copy" }
                ),
                e,
            )
        })?;
        let fd = fq.as_raw_fd();
        let mut socket = Socket {
            fq,
            rx,
            tx,
            fd,
            zero_copy: false,
            _umem: umem,
            _area: mem.share(),
        };
        socket.zero_copy = socket.query_zero_copy().unwrap_or(zero_copy);
        Ok(socket)
    }

    fn query_zero_copy(&self) -> io::Result<bool> {
        let mut flags: u32 = 0;
        let mut len = size_of::<u32>() as libc::socklen_t;
        // SAFETY: `fd` is our open AF_XDP socket; the kernel writes at most `len` bytes
        // (struct xdp_options is one u32) into `flags`, which lives for the call.
        let r = unsafe {
            libc::getsockopt(
                self.fd,
                SOL_XDP,
                XDP_OPTIONS,
                (&raw mut flags).cast(),
                &mut len,
            )
        };
        if r != 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(flags & XDP_OPTIONS_ZEROCOPY != 0)
    }

    /// Whether the kernel runs this socket in zero-copy mode.
    pub(crate) fn zero_copy(&self) -> bool {
        self.zero_copy
    }

    /// The socket, for the XSKMAP.
    pub(crate) fn fd(&self) -> BorrowedFd<'_> {
        // SAFETY: `fd` is open for as long as `self` (the rings hold it).
        unsafe { BorrowedFd::borrow_raw(self.fd) }
    }

    /// Puts up to `max` addresses from `next` on the fill ring; `next` is called only
    /// for slots that are free, so nothing it hands out is lost. Returns the count.
    pub(crate) fn fill(&mut self, max: u32, next: impl FnMut() -> Option<u64>) -> u32 {
        let mut w = self.fq.fill(max);
        let n = w.insert(std::iter::from_fn(next).take(w.capacity() as usize));
        w.commit();
        n
    }

    /// Reads up to `max` rx descriptors, calling `f(addr, len)` for each.
    pub(crate) fn receive(&mut self, max: u32, mut f: impl FnMut(u64, u32)) -> u32 {
        let mut r = self.rx.receive(max);
        let mut n = 0;
        while let Some(d) = r.read() {
            f(d.addr, d.len);
            n += 1;
        }
        r.release();
        n
    }

    /// Puts up to `max` descriptors from `next` on the tx ring (called only for free
    /// slots). Returns the count.
    pub(crate) fn transmit(
        &mut self,
        max: u32,
        mut next: impl FnMut() -> Option<(u64, u32)>,
    ) -> u32 {
        let mut w = self.tx.transmit(max);
        let cap = w.capacity() as usize;
        let descs = std::iter::from_fn(|| {
            next().map(|(addr, len)| xdpilone::xdp::XdpDesc {
                addr,
                len,
                options: 0,
            })
        });
        let n = w.insert(descs.take(cap));
        w.commit();
        n
    }

    /// Reads up to `max` completed tx addresses.
    pub(crate) fn complete(&mut self, max: u32, mut f: impl FnMut(u64)) -> u32 {
        let mut r = self.fq.complete(max);
        let mut n = 0;
        while let Some(addr) = r.read() {
            f(addr);
            n += 1;
        }
        r.release();
        n
    }

    /// Whether the kernel wants a `sendto` to process the tx ring.
    pub(crate) fn tx_needs_wakeup(&self) -> bool {
        self.tx.needs_wakeup()
    }

    /// Whether the driver wants a syscall to pick up new fill ring entries.
    pub(crate) fn fill_needs_wakeup(&self) -> bool {
        self.fq.needs_wakeup()
    }

    /// Kicks transmission (`sendto`, non-blocking). `Err` only for errors other than the
    /// transient ones (`EAGAIN`, `EBUSY`, `ENOBUFS`, `ENETDOWN`), which are retried by
    /// the next kick.
    pub(crate) fn kick_tx(&self) -> io::Result<()> {
        // SAFETY: a zero-length sendto on our own socket with no buffer and no address,
        // which AF_XDP defines as "process the tx ring".
        let r = unsafe {
            libc::sendto(
                self.fd,
                std::ptr::null(),
                0,
                libc::MSG_DONTWAIT,
                std::ptr::null(),
                0,
            )
        };
        if r >= 0 {
            return Ok(());
        }
        let e = io::Error::last_os_error();
        match e.raw_os_error() {
            Some(libc::EAGAIN | libc::EBUSY | libc::ENOBUFS | libc::ENETDOWN) => Ok(()),
            _ => Err(e),
        }
    }

    /// Sleeps until a frame arrives or `timeout_ms` passes (`poll(2)`, which also wakes
    /// the driver's fill processing in zero-copy mode).
    pub(crate) fn wait(&self, timeout_ms: i32) {
        let mut pfd = libc::pollfd {
            fd: self.fd,
            events: libc::POLLIN,
            revents: 0,
        };
        // SAFETY: one valid pollfd that lives for the call.
        let _ = unsafe { libc::poll(&mut pfd, 1, timeout_ms) };
    }

    /// Wakes the driver's fill ring processing without sleeping.
    pub(crate) fn wake_fill(&self) {
        self.wait(0);
    }

    /// The kernel's counters for this socket.
    pub(crate) fn kernel_stats(&self) -> KernelStats {
        match self.fq.statistics_v2() {
            Ok(s) => KernelStats {
                rx_dropped: s.rx_dropped,
                rx_invalid_descs: s.rx_invalid_descs,
                tx_invalid_descs: s.tx_invalid_descs,
                rx_ring_full: s.rx_ring_full,
                rx_fill_ring_empty: s.rx_fill_ring_empty_descs,
                tx_ring_empty: s.tx_ring_empty_descs,
            },
            Err(_) => KernelStats::default(),
        }
    }
}
