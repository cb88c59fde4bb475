//! The tests' only `unsafe`: entering a network namespace, and a bare AF_XDP socket
//! (UMEM, fill ring, RX ring, copy mode) that is just enough to see frames arrive.
//! The dataplane's real sockets live in `dataplane/`; this one exists so the steering
//! program can be tested end to end without depending on that crate.

use std::fs::File;
use std::io;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, FromRawFd, OwnedFd};
use std::path::Path;
use std::ptr::NonNull;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

/// Moves the calling thread (only) into the named network namespace.
pub(crate) fn enter_netns(name: &str) -> io::Result<()> {
    let file = File::open(Path::new("/var/run/netns").join(name))?;
    // SAFETY: `setns` reads the descriptor, which `file` keeps open for the call, and
    // changes the network namespace of the calling thread only; no memory is shared.
    let rc = unsafe { libc::setns(file.as_raw_fd(), libc::CLONE_NEWNET) };
    if rc != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// Ring entries and UMEM frames: a handful of frames is all a test sends.
const ENTRIES: u32 = 64;
const FRAME: u32 = 2048;

fn check(rc: libc::c_int) -> io::Result<()> {
    if rc < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(())
    }
}

/// An anonymous or socket-backed shared mapping, unmapped on drop.
struct Mapping {
    ptr: NonNull<u8>,
    len: usize,
}

// SAFETY: a `Mapping` owns its region exclusively and nothing in it is tied to a
// thread, so it may move to another thread (it is not `Sync`: no shared access).
unsafe impl Send for Mapping {}

impl Mapping {
    fn new(len: usize, fd: Option<BorrowedFd<'_>>, offset: u64) -> io::Result<Mapping> {
        let (flags, raw) = match fd {
            Some(fd) => (libc::MAP_SHARED | libc::MAP_POPULATE, fd.as_raw_fd()),
            None => (libc::MAP_PRIVATE | libc::MAP_ANONYMOUS, -1),
        };
        let offset = libc::off_t::try_from(offset).map_err(|_| io::ErrorKind::InvalidInput)?;
        // SAFETY: a fresh mapping chosen by the kernel (address NULL) aliases no Rust
        // object; the result is checked before use and unmapped exactly once in `drop`.
        let ptr = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                len,
                libc::PROT_READ | libc::PROT_WRITE,
                flags,
                raw,
                offset,
            )
        };
        if ptr == libc::MAP_FAILED {
            return Err(io::Error::last_os_error());
        }
        Ok(Mapping {
            ptr: NonNull::new(ptr.cast()).expect("mmap succeeded"),
            len,
        })
    }
}

impl Drop for Mapping {
    fn drop(&mut self) {
        // SAFETY: `ptr`/`len` are exactly what `mmap` returned, and nothing borrows the
        // mapping beyond `self` (rings and frames are read through `&self` methods).
        unsafe { libc::munmap(self.ptr.as_ptr().cast(), self.len) };
    }
}

/// A single-producer/single-consumer ring shared with the kernel.
struct Ring {
    map: Mapping,
    offsets: libc::xdp_ring_offset,
    /// Bytes per descriptor: 8 (a UMEM address) in the fill ring, 16 (`xdp_desc`) in RX.
    desc_len: usize,
}

impl Ring {
    fn map(
        fd: BorrowedFd<'_>,
        offsets: libc::xdp_ring_offset,
        desc_len: usize,
        pgoff: u64,
    ) -> io::Result<Ring> {
        let len = offsets.desc as usize + ENTRIES as usize * desc_len;
        Ok(Ring {
            map: Mapping::new(len, Some(fd), pgoff)?,
            offsets,
            desc_len,
        })
    }

    fn index(&self, offset: u64) -> &AtomicU32 {
        // SAFETY: the kernel's offsets point at 4-byte aligned `u32` indexes inside the
        // mapping, which lives as long as `self`; the kernel updates them atomically.
        unsafe { AtomicU32::from_ptr(self.map.ptr.as_ptr().add(offset as usize).cast()) }
    }

    fn desc(&self, i: u32) -> *mut u8 {
        let slot = (i & (ENTRIES - 1)) as usize;
        // SAFETY: `slot` is below ENTRIES, so the descriptor lies inside the mapping,
        // whose length was computed from ENTRIES and `desc_len`.
        unsafe {
            self.map
                .ptr
                .as_ptr()
                .add(self.offsets.desc as usize + slot * self.desc_len)
        }
    }
}

/// An AF_XDP socket bound in copy mode to one rx queue, its fill ring full.
pub(crate) struct Xsk {
    fd: OwnedFd,
    rx: Ring,
    _fill: Ring,
    umem: Mapping,
}

impl Xsk {
    /// Binds to `queue` of `ifindex` in the calling thread's network namespace.
    pub(crate) fn bind(ifindex: u32, queue: u32) -> io::Result<Xsk> {
        // SAFETY: plain syscall; the result is checked and owned below.
        let raw = unsafe { libc::socket(libc::AF_XDP, libc::SOCK_RAW | libc::SOCK_CLOEXEC, 0) };
        check(raw)?;
        // SAFETY: `raw` is a new descriptor that nothing else owns.
        let fd = unsafe { OwnedFd::from_raw_fd(raw) };
        let umem = Mapping::new((ENTRIES * FRAME) as usize, None, 0)?;
        let reg = libc::xdp_umem_reg {
            addr: umem.ptr.as_ptr() as u64,
            len: umem.len as u64,
            chunk_size: FRAME,
            headroom: 0,
            flags: 0,
            tx_metadata_len: 0,
        };
        setsockopt(fd.as_fd(), libc::XDP_UMEM_REG, &reg)?;
        setsockopt(fd.as_fd(), libc::XDP_UMEM_FILL_RING, &ENTRIES)?;
        setsockopt(fd.as_fd(), libc::XDP_UMEM_COMPLETION_RING, &ENTRIES)?;
        setsockopt(fd.as_fd(), libc::XDP_RX_RING, &ENTRIES)?;
        let off: libc::xdp_mmap_offsets = getsockopt(fd.as_fd(), libc::XDP_MMAP_OFFSETS)?;
        let fill = Ring::map(fd.as_fd(), off.fr, 8, libc::XDP_UMEM_PGOFF_FILL_RING)?;
        let rx = Ring::map(fd.as_fd(), off.rx, 16, libc::XDP_PGOFF_RX_RING as u64)?;

        for i in 0..ENTRIES {
            let addr = u64::from(i * FRAME);
            // SAFETY: `desc(i)` is an 8-byte fill descriptor inside the ring that only
            // this side writes until the producer index below publishes it.
            unsafe { fill.desc(i).cast::<u64>().write_unaligned(addr) };
        }
        fill.index(off.fr.producer)
            .store(ENTRIES, Ordering::Release);

        let addr = libc::sockaddr_xdp {
            sxdp_family: libc::AF_XDP as u16,
            sxdp_flags: libc::XDP_COPY,
            sxdp_ifindex: ifindex,
            sxdp_queue_id: queue,
            sxdp_shared_umem_fd: 0,
        };
        // SAFETY: `addr` is a valid `sockaddr_xdp` of the stated length, read by the kernel.
        let rc = unsafe {
            libc::bind(
                fd.as_raw_fd(),
                (&raw const addr).cast(),
                size_of::<libc::sockaddr_xdp>() as libc::socklen_t,
            )
        };
        check(rc)?;
        Ok(Xsk {
            fd,
            rx,
            _fill: fill,
            umem,
        })
    }

    /// Waits up to `timeout` for the next received frame and returns a copy of it.
    pub(crate) fn recv(&self, timeout: Duration) -> Option<Vec<u8>> {
        let deadline = Instant::now() + timeout;
        let producer = self.rx.index(self.rx.offsets.producer);
        let consumer = self.rx.index(self.rx.offsets.consumer);
        loop {
            let cons = consumer.load(Ordering::Relaxed);
            if producer.load(Ordering::Acquire) != cons {
                let desc = self.rx.desc(cons);
                // SAFETY: the Acquire load above saw the kernel publish this descriptor
                // (addr: u64, len: u32, options: u32); it stays ours until `consumer` moves.
                let (addr, len) = unsafe {
                    (
                        desc.cast::<u64>().read_unaligned(),
                        desc.add(8).cast::<u32>().read_unaligned(),
                    )
                };
                let (addr, len) = (addr as usize, len as usize);
                assert!(addr + len <= self.umem.len, "descriptor outside the UMEM");
                // SAFETY: the range is inside the UMEM (checked above) and the kernel has
                // finished writing this frame before publishing its descriptor.
                let frame =
                    unsafe { std::slice::from_raw_parts(self.umem.ptr.as_ptr().add(addr), len) };
                let frame = frame.to_vec();
                consumer.store(cons.wrapping_add(1), Ordering::Release);
                return Some(frame);
            }
            if Instant::now() > deadline {
                return None;
            }
            std::thread::sleep(Duration::from_millis(5));
        }
    }

    /// The socket's `XDP_STATISTICS`.
    pub(crate) fn stats(&self) -> io::Result<libc::xdp_statistics> {
        getsockopt(self.fd.as_fd(), libc::XDP_STATISTICS)
    }
}

impl AsFd for Xsk {
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.fd.as_fd()
    }
}

fn setsockopt<T>(fd: BorrowedFd<'_>, name: libc::c_int, value: &T) -> io::Result<()> {
    // SAFETY: `value` points to a live `T` of the length passed; the kernel only reads it.
    let rc = unsafe {
        libc::setsockopt(
            fd.as_raw_fd(),
            libc::SOL_XDP,
            name,
            (value as *const T).cast(),
            size_of::<T>() as libc::socklen_t,
        )
    };
    check(rc)
}

/// `getsockopt` into a zeroed `T`; `T` must be a plain C struct (any bytes valid).
fn getsockopt<T: Copy>(fd: BorrowedFd<'_>, name: libc::c_int) -> io::Result<T> {
    let mut value = std::mem::MaybeUninit::<T>::zeroed();
    let mut len = size_of::<T>() as libc::socklen_t;
    // SAFETY: the kernel writes at most `len` bytes into `value`, which has that size.
    let rc = unsafe {
        libc::getsockopt(
            fd.as_raw_fd(),
            libc::SOL_XDP,
            name,
            value.as_mut_ptr().cast(),
            &mut len,
        )
    };
    check(rc)?;
    // SAFETY: `value` started zeroed and the callers' `T`s are C structs of integers, for
    // which every byte pattern (including a partly written one) is valid.
    Ok(unsafe { value.assume_init() })
}
