//! Preallocated memory: the only module of this crate with `unsafe` code.
//!
//! Everything big in a [`Stack`](crate::Stack) — the connection slab, the demux table and
//! the socket buffers — is allocated once, at start-up, from a [`Region`] (the slab from
//! a `Strided` region, whose slots may carry their buffers beside them): 2 MiB hugepages
//! when the host has them reserved (through `hugepage-rs`), otherwise ordinary anonymous
//! pages advised with `MADV_HUGEPAGE` so that transparent hugepages can back them. The
//! fallback is logged once per process. Untouched pages of a region cost no RSS, so a pool
//! sized for `max_connections` costs memory only as connections use it.
//!
//! [`BufferPool`] carves a region into fixed-size chunks and hands them out as
//! `&'static mut [u8]`, which is what `smoltcp::socket::tcp::SocketBuffer` takes. The
//! `'static` is a promise kept by this crate, not by the type system: a chunk must be
//! dropped before it is [released](BufferPool::release) and before its pool is dropped.
//! The stack keeps both rules by owning the sockets and the pools together and by
//! dropping the sockets first (see `conn::Slab`). A slot's own buffer bytes (a
//! `Strided` element's tail) follow the same rules with the slot as their pool.

use std::alloc::Layout;
use std::fmt;
use std::marker::PhantomData;
use std::ops::{Deref, DerefMut, Index, IndexMut};
use std::ptr::NonNull;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, Once, PoisonError, Weak};

use smoltcp::iface::{SocketSet, SocketStorage};
use smoltcp::socket::tcp;

/// Where a region's memory came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backing {
    /// Reserved 2 MiB hugepages (`MAP_HUGETLB`).
    HugePages,
    /// Anonymous 4 KiB pages with `MADV_HUGEPAGE` (transparent hugepages where enabled).
    Pages,
}

/// How a [`Region`] should be backed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum HugePages {
    /// Hugepages when reserved, else 4 KiB pages with one logged warning.
    #[default]
    Auto,
    /// Never try hugepages (tests, or hosts where hugepages are kept for other uses).
    Off,
}

static FALLBACK_WARNING: Once = Once::new();

/// An array of `T` in memory of its own (hugepages or anonymous pages), mapped once for
/// its capacity.
///
/// Like a `Vec<T>` that never reallocates (so elements never move), and that reports its
/// size for accounting. A region made [`with_capacity`](Self::with_capacity) grows by
/// [`push`](Self::push): memory beyond its length is never written, so the kernel faults
/// it in (and zeroes it) only as elements are added.
pub struct Region<T> {
    ptr: NonNull<T>,
    len: usize,
    cap: usize,
    map: Arc<Mapping>,
}

/// A region's mapping as another thread may see it: its address range, for `madvise`
/// only, and how far its owner has used it. Unmapped when the last holder drops it (the
/// region, or a [`Warmer`] in the middle of a call).
struct Mapping {
    base: NonNull<u8>,
    bytes: usize,
    backing: Backing,
    /// Bytes from the start that the owner has written or lent out, at least.
    used: AtomicUsize,
}

// SAFETY: a `Mapping` gives no access to the memory's contents: holders only read its
// address and size (to advise the kernel about the pages) and unmap it when the last one
// drops it, which `Arc` makes happen once.
unsafe impl Send for Mapping {}
// SAFETY: as for `Send`; `used` is atomic.
unsafe impl Sync for Mapping {}

impl Mapping {
    fn new(bytes: usize, hugepages: HugePages) -> Option<Arc<Mapping>> {
        let (base, backing) = map(bytes, hugepages)?;
        Some(Arc::new(Mapping {
            base,
            bytes: rounded(bytes, backing),
            backing,
            used: AtomicUsize::new(0),
        }))
    }

    /// Records that the owner has used the first `bytes` bytes.
    fn used_up_to(&self, bytes: usize) {
        self.used.store(bytes, Ordering::Relaxed);
    }
}

impl Drop for Mapping {
    fn drop(&mut self) {
        unmap(self.base, self.bytes, self.backing);
    }
}

// SAFETY: a `Region<T>` owns its elements exactly like a `Box<[T]>` does; sending it to
// another thread sends the elements, which is sound when `T: Send`.
unsafe impl<T: Send> Send for Region<T> {}
// SAFETY: shared access only hands out `&T`, sound when `T: Sync`.
unsafe impl<T: Sync> Sync for Region<T> {}

impl<T> Region<T> {
    /// Allocates `len` elements, each initialised by `init(index)`.
    ///
    /// Returns `None` when the memory cannot be mapped (the caller turns that into an
    /// error that names the size).
    pub fn new(len: usize, hugepages: HugePages, mut init: impl FnMut(usize) -> T) -> Option<Self> {
        let mut region = Self::with_capacity(len, hugepages)?;
        for i in 0..len {
            // Cannot fail: the region has room for `len` elements.
            let _ = region.push(init(i));
        }
        Some(region)
    }

    /// Maps room for `cap` elements and initialises none: the region is empty.
    ///
    /// Returns `None` when the memory cannot be mapped.
    pub fn with_capacity(cap: usize, hugepages: HugePages) -> Option<Self> {
        let elem = size_of::<T>().max(1);
        let bytes = cap.checked_mul(elem)?.max(1);
        let page = 4096;
        debug_assert!(align_of::<T>() <= page);
        let map = Mapping::new(bytes, hugepages)?;
        Some(Region {
            ptr: map.base.cast::<T>(),
            len: 0,
            cap,
            map,
        })
    }

    /// Faults the whole mapping in now (`MADV_POPULATE_WRITE`, which changes no byte);
    /// `false` where the kernel will not (before Linux 5.14): pages then fault in at
    /// first use.
    pub(crate) fn fault_in(&self) -> bool {
        populate(&self.map, 0, self.map.bytes)
    }

    /// Appends `value`; gives it back when the region is full.
    pub fn push(&mut self, value: T) -> Result<(), T> {
        if self.len == self.cap {
            return Err(value);
        }
        // SAFETY: `ptr` points to a mapping of at least `cap * size_of::<T>()` bytes,
        // page-aligned (so aligned for `T`), and `len < cap`: the slot is inside it and
        // not yet initialised (nothing reads past `len`), so writing it overwrites nothing.
        unsafe { self.ptr.as_ptr().add(self.len).write(value) };
        self.len += 1;
        self.map.used_up_to(self.len * size_of::<T>());
        Ok(())
    }

    /// How many elements the region has room for.
    pub fn capacity(&self) -> usize {
        self.cap
    }

    /// Bytes of address space this region holds (rounded up to its page size).
    pub fn bytes(&self) -> usize {
        self.map.bytes
    }

    /// What backs this region.
    pub fn backing(&self) -> Backing {
        self.map.backing
    }
}

impl<T> Deref for Region<T> {
    type Target = [T];
    fn deref(&self) -> &[T] {
        // SAFETY: `ptr` is valid for `len` initialised elements for as long as `self` lives.
        unsafe { std::slice::from_raw_parts(self.ptr.as_ptr(), self.len) }
    }
}

impl<T> DerefMut for Region<T> {
    fn deref_mut(&mut self) -> &mut [T] {
        // SAFETY: as in `deref`, and `&mut self` guarantees exclusive access.
        unsafe { std::slice::from_raw_parts_mut(self.ptr.as_ptr(), self.len) }
    }
}

impl<T> Drop for Region<T> {
    fn drop(&mut self) {
        // SAFETY: the first `len` elements were initialised (by `push`) and are dropped
        // exactly once here; nothing can observe them afterwards. The memory itself goes
        // with the last holder of `map`.
        unsafe {
            std::ptr::drop_in_place(std::ptr::slice_from_raw_parts_mut(
                self.ptr.as_ptr(),
                self.len,
            ))
        };
    }
}

impl<T> fmt::Debug for Region<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Region")
            .field("len", &self.len)
            .field("bytes", &self.map.bytes)
            .field("backing", &self.map.backing)
            .finish()
    }
}

/// Elements of `T` a fixed stride apart in one mapping, each followed by `tail` bytes of
/// its own: the connection slab, whose slots may carry their sockets' buffers beside them
/// so that reaching a connection touches one run of memory (see `Config::buffers_in_slot`).
///
/// Like [`Region`], mapped once for `cap` elements and filled from the start by
/// [`push`](Self::push); untouched elements cost no memory. A reference to an element
/// never covers its tail, so the tail can be lent out ([`tail`](Self::tail)) while the
/// element is in use.
pub(crate) struct Strided<T> {
    ptr: NonNull<u8>,
    stride: usize,
    tail: usize,
    len: usize,
    cap: usize,
    map: Arc<Mapping>,
    _owns: PhantomData<T>,
}

// SAFETY: as for `Region<T>`: a `Strided<T>` owns its elements; the tails are plain bytes.
unsafe impl<T: Send> Send for Strided<T> {}
// SAFETY: shared access only hands out `&T` (and raw tail addresses).
unsafe impl<T: Sync> Sync for Strided<T> {}

impl<T> Strided<T> {
    /// Maps room for `cap` elements, each followed by `tail` bytes, and makes none.
    /// `None` when the memory cannot be mapped or the size overflows.
    pub(crate) fn with_capacity(cap: usize, tail: usize, hugepages: HugePages) -> Option<Self> {
        let stride = size_of::<T>()
            .checked_add(tail)?
            .checked_next_multiple_of(align_of::<T>())?;
        debug_assert!(align_of::<T>() <= 4096);
        let map = Mapping::new(cap.checked_mul(stride)?.max(1), hugepages)?;
        Some(Strided {
            ptr: map.base,
            stride,
            tail,
            len: 0,
            cap,
            map,
            _owns: PhantomData,
        })
    }

    fn at(&self, i: usize) -> *mut T {
        self.ptr.as_ptr().wrapping_add(i * self.stride).cast()
    }

    /// Appends `value`; gives it back when full.
    pub(crate) fn push(&mut self, value: T) -> Result<(), T> {
        if self.len == self.cap {
            return Err(value);
        }
        // SAFETY: `len < cap`, so element `len` lies inside the mapping (`cap * stride`
        // bytes, page-aligned; `stride` is a multiple of `T`'s alignment) and is not
        // initialised yet: the write overwrites nothing.
        unsafe { self.at(self.len).write(value) };
        self.len += 1;
        self.map.used_up_to(self.len * self.stride);
        Ok(())
    }

    pub(crate) fn get(&self, i: usize) -> Option<&T> {
        // SAFETY: elements below `len` are initialised; `&self` keeps them alive and
        // shared. The reference covers `size_of::<T>()` bytes, never the tail.
        (i < self.len).then(|| unsafe { &*self.at(i) })
    }

    pub(crate) fn get_mut(&mut self, i: usize) -> Option<&mut T> {
        // SAFETY: as in `get`, and `&mut self` makes the access exclusive.
        (i < self.len).then(|| unsafe { &mut *self.at(i) })
    }

    /// Elements made.
    pub(crate) fn len(&self) -> usize {
        self.len
    }

    pub(crate) fn capacity(&self) -> usize {
        self.cap
    }

    /// Bytes after each element that are its own.
    pub(crate) fn tail_len(&self) -> usize {
        self.tail
    }

    /// The address of element `i`'s tail, for prefetching (never dereferenced here).
    pub(crate) fn tail_addr(&self, i: usize) -> *const u8 {
        self.ptr
            .as_ptr()
            .wrapping_add(i * self.stride + size_of::<T>())
            .cast_const()
    }

    /// Element `i`'s tail bytes, not tied to `self`'s lifetime.
    ///
    /// # Safety
    /// `i < len`, and no other slice of this tail may be alive: the caller lends it to
    /// one user at a time and must drop that slice before lending it again and before
    /// `self` drops.
    unsafe fn tail(&mut self, i: usize) -> &'static mut [u8] {
        debug_assert!(i < self.len);
        // SAFETY: the tail lies inside the mapping, outside every element reference;
        // the caller promised it is not lent out already and outlives its use.
        unsafe { std::slice::from_raw_parts_mut(self.tail_addr(i).cast_mut(), self.tail) }
    }

    /// Bytes of address space held (rounded up to the page size).
    pub(crate) fn bytes(&self) -> usize {
        self.map.bytes
    }

    /// See [`Region::fault_in`]: the tails too, which making the elements alone would
    /// leave untouched wherever a tail fills a page of its own.
    pub(crate) fn fault_in(&self) -> bool {
        populate(&self.map, 0, self.map.bytes)
    }
}

impl<T> Index<usize> for Strided<T> {
    type Output = T;
    fn index(&self, i: usize) -> &T {
        match self.get(i) {
            Some(t) => t,
            None => panic!("index {i} out of range for {} elements", self.len),
        }
    }
}

impl<T> IndexMut<usize> for Strided<T> {
    fn index_mut(&mut self, i: usize) -> &mut T {
        let len = self.len;
        match self.get_mut(i) {
            Some(t) => t,
            None => panic!("index {i} out of range for {len} elements"),
        }
    }
}

impl<T> Drop for Strided<T> {
    fn drop(&mut self) {
        for i in 0..self.len {
            // SAFETY: each of the first `len` elements was initialised by `push` and is
            // dropped exactly once, here. The mapping goes after, with `map`.
            unsafe { std::ptr::drop_in_place(self.at(i)) };
        }
    }
}

impl<T> fmt::Debug for Strided<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Strided")
            .field("len", &self.len)
            .field("stride", &self.stride)
            .field("bytes", &self.map.bytes)
            .finish()
    }
}

const HUGE: usize = 2 << 20;

fn rounded(bytes: usize, backing: Backing) -> usize {
    let page = match backing {
        Backing::HugePages => HUGE,
        Backing::Pages => 4096,
    };
    bytes.div_ceil(page) * page
}

fn map(bytes: usize, hugepages: HugePages) -> Option<(NonNull<u8>, Backing)> {
    if hugepages == HugePages::Auto && bytes >= HUGE / 2 {
        let layout = Layout::from_size_align(bytes, 4096).ok()?;
        // SAFETY: `layout` has a non-zero size; hugepage-rs returns null on failure.
        let p = unsafe { hugepage_rs::alloc(layout) };
        if let Some(p) = NonNull::new(p) {
            return Some((p, Backing::HugePages));
        }
        FALLBACK_WARNING.call_once(|| {
            tracing::warn!(
                "no 2 MiB hugepages reserved: using 4 KiB pages with MADV_HUGEPAGE \
                 (reserve some with `scripts/hugepages N` for fewer TLB misses)"
            );
        });
    }
    let len = rounded(bytes, Backing::Pages);
    // SAFETY: an anonymous private mapping with no address hint has no preconditions; the
    // result is checked against MAP_FAILED.
    let p = unsafe {
        libc::mmap(
            std::ptr::null_mut(),
            len,
            libc::PROT_READ | libc::PROT_WRITE,
            libc::MAP_PRIVATE | libc::MAP_ANONYMOUS | libc::MAP_NORESERVE,
            -1,
            0,
        )
    };
    if p == libc::MAP_FAILED {
        return None;
    }
    // SAFETY: `p..p+len` is the mapping just created; madvise only changes paging advice
    // and its failure (THP disabled) is harmless.
    unsafe { libc::madvise(p, len, libc::MADV_HUGEPAGE) };
    NonNull::new(p.cast()).map(|p| (p, Backing::Pages))
}

fn unmap(ptr: NonNull<u8>, bytes: usize, backing: Backing) {
    match backing {
        Backing::HugePages => {
            let Ok(layout) = Layout::from_size_align(bytes, 4096) else {
                return;
            };
            // SAFETY: `ptr` came from `hugepage_rs::alloc` with a layout of the same size
            // (hugepage-rs rounds both to its page size), and is not used afterwards.
            unsafe { hugepage_rs::dealloc(ptr.as_ptr(), layout) };
        }
        Backing::Pages => {
            // SAFETY: `ptr..ptr+bytes` is exactly one mapping made by `map`, not used
            // afterwards.
            unsafe { libc::munmap(ptr.as_ptr().cast(), bytes) };
        }
    }
}

/// Faults in bytes `from..from + len` of `map` (`MADV_POPULATE_WRITE`, Linux 5.14),
/// whatever its owner does meanwhile: the advice changes no contents, and a page the
/// owner has written already stays as it is. Returns whether the kernel did it.
fn populate(map: &Mapping, from: usize, len: usize) -> bool {
    let len = len.min(map.bytes.saturating_sub(from));
    if len == 0 {
        return true;
    }
    // SAFETY: `from..from + len` lies inside the mapping, which `map` keeps mapped; the
    // advice only faults pages in and changes no byte, so it races with nothing the
    // owner does.
    let r = unsafe {
        libc::madvise(
            map.base.as_ptr().add(from).cast(),
            len,
            libc::MADV_POPULATE_WRITE,
        )
    };
    r == 0
}

/// Faults in the pages of growing regions ahead of their use, from a thread off the
/// packet path.
///
/// The connection slab and the socket buffers are mapped for `max_connections` and fault
/// in as connections first use them, so a stack is ready at once at any size. The cost
/// moves, it does not vanish: the kernel zeroes each fresh page on the faulting thread,
/// which during a fast ramp of new connections is the worker (on the reference VM, where
/// zeroing runs at 0.2-0.4 GB/s, 43% of its core at 100,000 connections a second, and
/// its rx ring overflowed). A `Warmer` holds a stack's growing regions; a thread that
/// calls [`warm`](Self::warm) keeps each one faulted in some way ahead of what the
/// stack has used, so the worker finds its pages ready. Cloning shares the list. It
/// keeps no region alive: a dropped stack's regions drop out of it.
#[derive(Clone, Default)]
pub struct Warmer {
    regions: Arc<Mutex<Vec<Warming>>>,
}

/// One region of a [`Warmer`]: its mapping, how far the warmer has faulted it in, and
/// whether it is used at random (faulted in whole, after every growing region).
#[derive(Clone)]
struct Warming {
    map: Weak<Mapping>,
    warmed: Arc<AtomicUsize>,
    whole: bool,
}

static POPULATE_WARNING: Once = Once::new();

impl Warmer {
    fn add(&self, map: &Arc<Mapping>, whole: bool) {
        let mut regions = self.regions.lock().unwrap_or_else(PoisonError::into_inner);
        regions.push(Warming {
            map: Arc::downgrade(map),
            warmed: Arc::new(AtomicUsize::new(0)),
            whole,
        });
        // Growing regions first: their next pages are needed soonest.
        regions.sort_by_key(|w| w.whole);
    }

    /// Adds `region`, which grows from its start.
    pub(crate) fn add_region<T>(&self, region: &Region<T>) {
        self.add(&region.map, false);
    }

    /// Adds `slots`, which grow from their start.
    pub(crate) fn add_strided<T>(&self, slots: &Strided<T>) {
        self.add(&slots.map, false);
    }

    /// Adds `region`, whose elements are used at random from the start (a hash table's
    /// buckets): it is faulted in whole, after the growing regions are far enough ahead.
    pub(crate) fn add_whole<T>(&self, region: &Region<T>) {
        self.add(&region.map, true);
    }

    /// Adds `pool`, whose never-used chunks are handed out from its start.
    pub(crate) fn add_pool(&self, pool: &BufferPool) {
        self.add(&pool.region.map, false);
    }

    /// Faults in each region up to `lead` bytes beyond what its owner has used, at most
    /// `max` bytes in all this call (in 2 MiB steps, so a caller can look at its stop
    /// flag in between). Returns the bytes faulted in: 0 when every region is far enough
    /// ahead. A region the kernel will not populate (before Linux 5.14) is left to fault
    /// on demand, with one logged warning a process.
    pub fn warm(&self, lead: usize, max: usize) -> usize {
        let regions = {
            let mut regions = self.regions.lock().unwrap_or_else(PoisonError::into_inner);
            regions.retain(|w| w.map.strong_count() > 0);
            regions.clone()
        };
        let mut done = 0;
        for w in regions {
            let Some(map) = w.map.upgrade() else {
                continue;
            };
            let from = w.warmed.load(Ordering::Relaxed);
            let want = if w.whole {
                map.bytes
            } else {
                map.used.load(Ordering::Relaxed).saturating_add(lead)
            };
            let to = want
                .min(from.saturating_add(max - done))
                .next_multiple_of(HUGE)
                .min(map.bytes);
            if to <= from {
                continue;
            }
            if populate(&map, from, to - from) {
                done += to - from;
                w.warmed.store(to, Ordering::Relaxed);
            } else {
                w.warmed.store(map.bytes, Ordering::Relaxed);
                POPULATE_WARNING.call_once(|| {
                    tracing::warn!(
                        "the kernel does not populate pages ahead (MADV_POPULATE_WRITE, \
                         Linux 5.14): connections fault their memory in themselves"
                    );
                });
            }
            if done >= max {
                break;
            }
        }
        done
    }
}

impl fmt::Debug for Warmer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let regions = self.regions.lock().unwrap_or_else(PoisonError::into_inner);
        f.debug_struct("Warmer")
            .field("regions", &regions.len())
            .finish()
    }
}

/// Fixed-size byte chunks carved from one [`Region`], handed out as `&'static mut [u8]`.
///
/// Allocation is O(1): a bump index over never-used chunks, then an intrusive free list
/// threaded through the first four bytes of released chunks (so the list costs no memory
/// of its own and never touches a page that was never used).
pub struct BufferPool {
    region: Region<u8>,
    chunk: usize,
    capacity: u32,
    bumped: u32,
    free_head: u32,
    in_use: u32,
}

const NIL: u32 = u32::MAX;

impl BufferPool {
    /// A pool of `capacity` chunks of `chunk` bytes each (`chunk` >= 4).
    pub fn new(chunk: usize, capacity: usize, hugepages: HugePages) -> Option<Self> {
        let chunk = chunk.max(4);
        let capacity = u32::try_from(capacity).ok().filter(|&c| c < NIL)?;
        let bytes = chunk.checked_mul(capacity as usize)?;
        let region = Region::<u8>::new_zeroed(bytes, hugepages)?;
        Some(BufferPool {
            region,
            chunk,
            capacity,
            bumped: 0,
            free_head: NIL,
            in_use: 0,
        })
    }

    /// Faults in every page of the pool now, so that using a chunk later never takes a
    /// page fault and the process's memory does not grow as chunks are first used (by
    /// connections, or by a flood's half-open ones). Called on a fresh pool only.
    pub(crate) fn prefault(&mut self) {
        if self.bumped == 0 {
            // SAFETY: no chunk was ever handed out, so the region is untouched.
            unsafe { self.region.populate() };
        }
    }

    /// Takes a chunk: its index (to give back with [`release`](Self::release)) and its bytes.
    ///
    /// `None` when every chunk is in use.
    ///
    /// # Safety
    /// The slice borrows the pool's memory but is not tied to the pool's lifetime: the
    /// caller must drop it before the pool is dropped and before it releases `idx`.
    pub unsafe fn take(&mut self) -> Option<(u32, &'static mut [u8])> {
        let idx = if self.free_head != NIL {
            let idx = self.free_head;
            self.free_head = self.link(idx);
            idx
        } else if self.bumped < self.capacity {
            self.bumped += 1;
            self.region
                .map
                .used_up_to(self.bumped as usize * self.chunk);
            self.bumped - 1
        } else {
            return None;
        };
        self.in_use += 1;
        let at = idx as usize * self.chunk;
        debug_assert!(at + self.chunk <= self.region.len());
        // SAFETY: `idx` was free (never handed out, or released — the caller of `release`
        // promised its previous slice is gone), so no other reference to these bytes
        // exists. The bytes live until the pool is dropped, and our caller promised to
        // drop the slice before that. `at + chunk <= region.len()`.
        let bytes =
            unsafe { std::slice::from_raw_parts_mut(self.region.ptr.as_ptr().add(at), self.chunk) };
        Some((idx, bytes))
    }

    /// Gives chunk `idx` back.
    ///
    /// # Safety
    /// The slice that [`take`](Self::take) returned with `idx` must have been dropped, and
    /// `idx` must not be released twice.
    pub unsafe fn release(&mut self, idx: u32) {
        debug_assert!(idx < self.bumped);
        let at = idx as usize * self.chunk;
        debug_assert!(at + 4 <= self.region.len);
        // SAFETY: in bounds (above); the chunk is free, so no live slice covers these bytes.
        // Raw pointer access: a `&[u8]` over the whole region would alias live chunks.
        unsafe {
            self.region
                .ptr
                .as_ptr()
                .add(at)
                .cast::<u32>()
                .write_unaligned(self.free_head)
        };
        self.free_head = idx;
        self.in_use -= 1;
    }

    /// Starts loading bytes `offset..offset + len` of chunk `idx` (clipped to the chunk)
    /// into the cache.
    pub(crate) fn prefetch(&self, idx: u32, offset: usize, len: usize) {
        let chunk = self.region.ptr.as_ptr().cast_const();
        prefetch_bytes(
            chunk.wrapping_add(idx as usize * self.chunk),
            offset,
            len,
            self.chunk,
        );
    }

    /// The address of chunk `idx` (tests compare smoltcp's ring positions with it).
    #[cfg(test)]
    pub(crate) fn chunk_addr(&self, idx: u32) -> usize {
        self.region.ptr.as_ptr() as usize + idx as usize * self.chunk
    }

    /// The free-list link stored in free chunk `idx`.
    fn link(&self, idx: u32) -> u32 {
        let at = idx as usize * self.chunk;
        debug_assert!(at + 4 <= self.region.len);
        // SAFETY: in bounds (above); chunk `idx` is on the free list, so no live slice
        // covers these bytes.
        unsafe {
            self.region
                .ptr
                .as_ptr()
                .add(at)
                .cast::<u32>()
                .read_unaligned()
        }
    }

    /// Chunks handed out and not released.
    pub(crate) fn in_use(&self) -> usize {
        self.in_use as usize
    }

    /// The size of one chunk.
    pub(crate) fn chunk_size(&self) -> usize {
        self.chunk
    }

    /// Bytes of memory this pool reserved.
    pub(crate) fn bytes(&self) -> usize {
        self.region.bytes()
    }
}

/// Asks the CPU to start loading the cache line holding `*p` (a hint: no effect on
/// program semantics). Used to overlap the cache misses of a batch of frames.
#[inline(always)]
pub(crate) fn prefetch<T>(p: *const T) {
    #[cfg(target_arch = "x86_64")]
    // SAFETY: `_mm_prefetch` needs SSE, which every x86_64 CPU has; a prefetch never
    // faults and never reads or writes program-visible memory, whatever the address.
    unsafe {
        use std::arch::x86_64::{_MM_HINT_T0, _mm_prefetch};
        _mm_prefetch::<_MM_HINT_T0>(p.cast());
    }
    #[cfg(not(target_arch = "x86_64"))]
    let _ = p;
}

/// Starts loading the lines of bytes `offset..offset + len` (clipped to `limit`) from
/// `base`: a connection's buffer chunk, in a pool or beside its slot.
pub(crate) fn prefetch_bytes(base: *const u8, offset: usize, len: usize, limit: usize) {
    let (start, end) = line_span(base, offset, len, limit);
    let mut line = start;
    while line < end {
        // `line` may lie before `base` (the first line's start when `base` is not
        // line-aligned, as a slot's buffers are not): wrapping arithmetic keeps it an
        // address without a subtraction that could overflow.
        prefetch(base.wrapping_add(line.wrapping_sub(base as usize)));
        line += 64;
    }
}

/// The addresses from the start of the cache line holding byte `offset` of `base` to the
/// end of `base[..min(offset + len, limit)]`; empty when that range is.
fn line_span(base: *const u8, offset: usize, len: usize, limit: usize) -> (usize, usize) {
    let start = base as usize;
    let end = offset.saturating_add(len).min(limit);
    if offset < end {
        (start.wrapping_add(offset) & !63, start.wrapping_add(end))
    } else {
        (0, 0)
    }
}

/// A `SocketSet` over the one slot `slot`, for a single poll.
///
/// smoltcp's `SocketSet<'b>` wants `&'b mut [SocketStorage<'b>]`: the borrow and the
/// sockets' buffer lifetime must be the same, and `&mut` is invariant, so a short borrow of
/// a long-lived slab of `SocketStorage<'static>` does not type-check. Shortening the inner
/// lifetime is sound here because nothing ever stores a socket with non-`'static` buffers
/// through such a set: smoltcp's polls never add sockets, and the crate adds sockets only in
/// [`install_new`], with `'static` buffers. (Rule for the rest of the crate: never call
/// `SocketSet::add` outside this module.)
pub(crate) fn one_slot<'b>(slot: &'b mut SocketStorage<'static>) -> SocketSet<'b> {
    let ptr: *mut SocketStorage<'static> = slot;
    // SAFETY: same type but for a shorter lifetime parameter, so same layout; the pointer
    // comes from a live `&'b mut` and is used for exactly 'b. The one way the shorter
    // lifetime could be abused — storing a socket with `'b` buffers into a `'static` slot —
    // is ruled out by the crate rule in the doc comment above.
    let slot: &'b mut SocketStorage<'b> = unsafe { &mut *ptr.cast::<SocketStorage<'b>>() };
    SocketSet::new(std::slice::from_mut(slot))
}

/// Builds a socket for element `i` of `slots` on a chunk of `pool`, or, with no pool, on
/// the bytes beside the element (its tail), with `rx_len` bytes to receive and the rest
/// to send; lets `setup` configure it and puts it into the element's storage, which
/// must be empty. `storage` gives an element's one socket storage (crate rule: an
/// element type has exactly one; the slab's is `Slot::storage`), and what it gives must
/// lie inside the element. Returns the pool's chunk index (`i` for a tail), which
/// [`uninstall`] gives back; `None` (nothing installed) when the pool is dry, `i` is not
/// an element yet, or its storage holds a socket already or lies elsewhere.
///
/// The socket holds its bytes as `'static`: the storage must be emptied by [`uninstall`]
/// (never moved out: the socket holds the element's own tail) or dropped before `pool`
/// and `slots` are. `Stack` declares its slab, which holds every slot, before its pools,
/// so its fields drop in that order; `Strided` drops its elements before its memory.
pub(crate) fn install_new<T>(
    slots: &mut Strided<T>,
    i: usize,
    storage: impl Fn(&mut T) -> &mut SocketStorage<'static>,
    pool: Option<&mut BufferPool>,
    rx_len: usize,
    setup: impl FnOnce(&mut tcp::Socket<'static>),
) -> Option<u32> {
    let elem = slots.at(i) as usize..slots.at(i) as usize + size_of::<T>();
    let store = storage(slots.get_mut(i)?);
    let inside = elem.contains(&(std::ptr::from_mut(store) as usize));
    if !inside || one_slot(store).iter().next().is_some() {
        return None;
    }
    let (idx, bytes) = match pool {
        // SAFETY: the chunk's only slices become the socket's buffers, which live in the
        // element's storage; `uninstall` drops them before it releases the chunk, and the
        // owner of `slots` and `pool` drops the slots first (above).
        Some(pool) => unsafe { pool.take() }?,
        // SAFETY: `i` is an element (checked above) whose storage is empty, so no socket
        // holds its tail: the storage is only ever emptied by `uninstall`, which drops the
        // socket and with it the tail's slices. The new slices live in that same storage,
        // which `Strided` drops before its memory.
        None => (i as u32, unsafe { slots.tail(i) }),
    };
    let (rx, tx) = bytes.split_at_mut(rx_len.min(bytes.len()));
    let mut socket = tcp::Socket::new(tcp::SocketBuffer::new(rx), tcp::SocketBuffer::new(tx));
    setup(&mut socket);
    one_slot(storage(&mut slots[i])).add(socket);
    Some(idx)
}

/// Empties `slot`, dropping its socket, then gives the socket's buffer chunk `idx` back to
/// `pool` (none: the buffers were the slot's own).
pub(crate) fn uninstall(
    slot: &mut SocketStorage<'static>,
    pool: Option<&mut BufferPool>,
    idx: u32,
) {
    *slot = SocketStorage::EMPTY;
    if let Some(pool) = pool {
        // SAFETY: the only slices of chunk `idx` were the socket's rx and tx buffers,
        // dropped with the socket on the line above; each slot's chunk is released once,
        // when its socket is removed.
        unsafe { pool.release(idx) };
    }
}

impl Region<u8> {
    /// Faults in the whole mapping (`MADV_POPULATE_WRITE`, Linux 5.14; older kernels get
    /// a write of zero to each page).
    ///
    /// # Safety
    /// No part of the region may be in use (lent out, or written since it was mapped): the
    /// fallback writes the zero that a fresh mapping holds.
    unsafe fn populate(&mut self) {
        let base = self.ptr.as_ptr();
        if self.fault_in() {
            return;
        }
        for at in (0..self.map.bytes).step_by(4096) {
            // SAFETY: in bounds of the mapping; the caller guarantees that no element is
            // in use, so writing the zero that is already there races with nothing.
            unsafe { base.add(at).write_volatile(0) };
        }
    }
}

/// Element types whose all-zero bytes are a valid value, so that a [`Region`] of them can
/// start as a fresh anonymous mapping, unwritten: `u8` and `u64` (sealed).
pub trait Zeroed: sealed::Sealed {}
impl Zeroed for u8 {}
impl Zeroed for u64 {}

mod sealed {
    pub trait Sealed {}
    impl Sealed for u8 {}
    impl Sealed for u64 {}
}

impl<T: Zeroed> Region<T> {
    /// `len` zeros. Fresh anonymous mappings are zero already, so no page is touched here:
    /// each is faulted in, zeroed by the kernel, at its first use (or when the kernel pins
    /// it), and a large region costs nothing at start-up. `None` when the memory cannot be
    /// mapped.
    pub fn new_zeroed(len: usize, hugepages: HugePages) -> Option<Self> {
        let bytes = len.checked_mul(size_of::<T>())?.max(1);
        let map = Mapping::new(bytes, hugepages)?;
        Some(Region {
            // Page-aligned, so aligned for `T`; its `len` elements are zero bytes, a valid
            // `T` (`Zeroed`).
            ptr: map.base.cast::<T>(),
            len,
            cap: len,
            map,
        })
    }
}

impl fmt::Debug for BufferPool {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("BufferPool")
            .field("chunk", &self.chunk)
            .field("capacity", &self.capacity)
            .field("in_use", &self.in_use)
            .field("backing", &self.region.map.backing)
            .finish()
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// Pages of `len` bytes at `at` that are resident (`mincore`).
    pub(crate) fn resident(at: *const u8, len: usize) -> usize {
        let pages = len.div_ceil(4096);
        let mut vec = vec![0u8; pages];
        // SAFETY: `at..at+len` is one mapping of ours, page-aligned; `vec` has a byte per
        // page, as mincore writes.
        let r = unsafe { libc::mincore(at as *mut libc::c_void, len, vec.as_mut_ptr()) };
        assert_eq!(r, 0, "mincore: {}", std::io::Error::last_os_error());
        vec.iter().filter(|&&b| b & 1 != 0).count()
    }

    #[test]
    fn prefault_makes_every_page_of_a_pool_resident() {
        let chunk = 4096;
        let n = 64;
        let mut lazy = BufferPool::new(chunk, n, HugePages::Off).unwrap();
        let at = lazy.chunk_addr(0) as *const u8;
        assert_eq!(resident(at, chunk * n), 0, "a fresh pool touches no page");
        let mut eager = BufferPool::new(chunk, n, HugePages::Off).unwrap();
        eager.prefault();
        let at = eager.chunk_addr(0) as *const u8;
        assert_eq!(resident(at, chunk * n), n, "every page faulted in");
        // SAFETY: `bytes` is dropped before its release and before the pool.
        let (idx, bytes) = unsafe { eager.take() }.unwrap();
        assert!(bytes.iter().all(|&b| b == 0), "and still zero");
        // SAFETY: `bytes` is not used after this.
        unsafe { eager.release(idx) };
        // SAFETY: the slice is dropped at once.
        let (idx, _) = unsafe { lazy.take() }.unwrap();
        // SAFETY: the slice was dropped above.
        unsafe { lazy.release(idx) };
    }

    #[test]
    fn region_initialises_and_drops_every_element() {
        use std::rc::Rc;
        let marker = Rc::new(());
        let r = Region::new(1000, HugePages::Off, |_| Rc::clone(&marker)).unwrap();
        assert_eq!(Rc::strong_count(&marker), 1001);
        assert_eq!(r.len(), 1000);
        assert!(r.bytes() >= 1000 * size_of::<Rc<()>>());
        drop(r);
        assert_eq!(Rc::strong_count(&marker), 1);
    }

    #[test]
    fn strided_elements_and_their_tails_are_apart_and_dropped_once() {
        use std::rc::Rc;
        let marker = Rc::new(());
        let tail = 100;
        let mut s = Strided::<Rc<()>>::with_capacity(3, tail, HugePages::Off).unwrap();
        for _ in 0..3 {
            assert!(s.push(Rc::clone(&marker)).is_ok());
        }
        assert!(s.push(Rc::clone(&marker)).is_err(), "full at its capacity");
        assert_eq!((s.len(), s.capacity(), s.tail_len()), (3, 3, tail));
        assert!(s.get(3).is_none());
        // Each tail starts where its element ends and ends before the next element.
        let stride = (size_of::<Rc<()>>() + tail).next_multiple_of(align_of::<Rc<()>>());
        for i in 0..3 {
            let elem = &s[i] as *const Rc<()> as usize;
            let t = s.tail_addr(i) as usize;
            assert_eq!(t, elem + size_of::<Rc<()>>());
            if i + 1 < 3 {
                assert!(t + tail <= &s[i + 1] as *const Rc<()> as usize);
                assert_eq!(&s[i + 1] as *const Rc<()> as usize - elem, stride);
            }
        }
        // SAFETY: element 1's tail is lent once and dropped before `s`.
        let bytes = unsafe { s.tail(1) };
        bytes.fill(0xff);
        assert_eq!(bytes.len(), tail);
        assert_eq!(
            Rc::strong_count(&s[2]),
            4,
            "writing a tail leaves the next element be"
        );
        assert_eq!(Rc::strong_count(&marker), 4);
        drop(s);
        assert_eq!(Rc::strong_count(&marker), 1, "every element dropped once");
    }

    #[test]
    fn a_socket_goes_on_a_slot_tail_only_into_an_empty_storage() {
        let mut slots =
            Strided::<SocketStorage<'static>>::with_capacity(2, 64, HugePages::Off).unwrap();
        assert!(slots.push(SocketStorage::EMPTY).is_ok());
        let install = |slots: &mut Strided<SocketStorage<'static>>, i| {
            install_new(slots, i, |s| s, None, 16, |_| {})
        };
        assert_eq!(install(&mut slots, 1), None, "not an element yet");
        assert_eq!(install(&mut slots, 0), Some(0));
        assert_eq!(
            install(&mut slots, 0),
            None,
            "a socket holds that tail already"
        );
        uninstall(&mut slots[0], None, 0);
        assert_eq!(
            install(&mut slots, 0),
            Some(0),
            "free again after uninstall"
        );
        let mut set = one_slot(&mut slots[0]);
        let socket = set.get_mut::<tcp::Socket>(smoltcp::iface::SocketHandle::default());
        assert_eq!((socket.recv_capacity(), socket.send_capacity()), (16, 48));
    }

    #[test]
    fn prefetched_lines_are_those_the_bytes_lie_on_even_off_a_line_start() {
        let buf = [0u8; 1024];
        // A base 32 bytes past a line start, as a slot's buffers are.
        let skip = 64 - buf.as_ptr() as usize % 64 + 32;
        let base = buf.as_ptr().wrapping_add(skip);
        let b = base as usize;
        let line = b & !63;
        let got = |offset, len, limit| {
            let (start, end) = line_span(base, offset, len, limit);
            (start..end).step_by(64).collect::<Vec<_>>()
        };
        assert_eq!(got(0, 32, 512), [line], "the line the base is on");
        assert_eq!(got(0, 33, 512), [line, line + 64]);
        // Bytes 72..172 of the base's line: its second and third lines.
        assert_eq!(got(40, 100, 512), [line + 64, line + 128]);
        assert_eq!(
            got(500, 100, 512),
            [(b + 500) & !63],
            "clipped to the limit"
        );
        assert!(got(512, 64, 512).is_empty());
        assert!(got(10, 0, 512).is_empty());
    }

    #[test]
    fn a_growing_region_touches_only_what_it_holds() {
        use std::rc::Rc;
        let marker = Rc::new(());
        let elems = 100_000;
        let mut r = Region::<[Rc<()>; 64]>::with_capacity(elems, HugePages::Off).unwrap();
        let whole = elems * size_of::<[Rc<()>; 64]>();
        let at = r.as_ptr().cast::<u8>();
        assert_eq!((r.len(), r.capacity()), (0, elems));
        assert_eq!(resident(at, whole), 0, "nothing touched at first");
        for _ in 0..10 {
            assert!(r.push(std::array::from_fn(|_| Rc::clone(&marker))).is_ok());
        }
        assert_eq!(r.len(), 10);
        // Ten elements of 512 bytes: two pages and the kernel's fault-around, or one 2 MiB
        // transparent hugepage (`Off` still advises MADV_HUGEPAGE; whether the first fault
        // gets one depends on where the mapping landed), of 12,500 pages.
        assert!(resident(at, whole) <= 512, "{} pages", resident(at, whole));
        assert_eq!(Rc::strong_count(&marker), 1 + 640);
        drop(r);
        assert_eq!(Rc::strong_count(&marker), 1, "what was pushed is dropped");
        let mut full = Region::<u8>::with_capacity(2, HugePages::Off).unwrap();
        assert_eq!(
            (full.push(1), full.push(2), full.push(3)),
            (Ok(()), Ok(()), Err(3))
        );
        assert_eq!(&full[..], &[1, 2]);
    }

    #[test]
    fn a_warmer_faults_in_ahead_of_use_and_forgets_dropped_regions() {
        let mb = 1 << 20;
        // 32 MiB of 4 KiB pages (no THP: `Off` still advises MADV_HUGEPAGE, so count
        // whole 2 MiB steps).
        let mut r = Region::<[u8; 4096]>::with_capacity(8192, HugePages::Off).unwrap();
        let at = r.as_ptr().cast::<u8>();
        let whole = 8192 * 4096;
        let warmer = Warmer::default();
        warmer.add_region(&r);
        assert_eq!(resident(at, whole), 0);
        // Nothing used: 4 MiB ahead of 0, in two calls of at most 2 MiB.
        assert_eq!(warmer.warm(4 * mb, 2 * mb), 2 * mb);
        assert_eq!(warmer.warm(4 * mb, 2 * mb), 2 * mb);
        assert_eq!(warmer.warm(4 * mb, 2 * mb), 0, "far enough ahead");
        assert!(resident(at, 4 * mb) == 1024, "the first 4 MiB are in");
        assert_eq!(resident(at.wrapping_add(8 * mb), whole - 8 * mb), 0);
        // The owner uses 5 MiB: the warmer follows, 4 MiB ahead of it.
        for _ in 0..1280 {
            assert!(r.push([7; 4096]).is_ok());
        }
        assert_eq!(
            warmer.warm(4 * mb, usize::MAX),
            6 * mb,
            "from 4 MiB to 10 MiB"
        );
        assert_eq!(resident(at, 10 * mb), 2560);
        assert_eq!(resident(at.wrapping_add(10 * mb), whole - 10 * mb), 0);
        assert!(
            r.iter().all(|p| p.iter().all(|&b| b == 7)),
            "contents untouched"
        );
        drop(r);
        assert_eq!(
            warmer.warm(4 * mb, usize::MAX),
            0,
            "a dropped region is gone"
        );
        assert_eq!(format!("{warmer:?}"), "Warmer { regions: 0 }");
    }

    /// A region used at random (a hash table's buckets, zeroed) is faulted in whole,
    /// but only after the growing regions are far enough ahead of their owners.
    #[test]
    fn a_warmer_faults_a_random_region_in_whole_after_the_growing_ones() {
        let mb = 1 << 20;
        let table = Region::<u64>::new_zeroed(8 * mb / 8, HugePages::Off).unwrap();
        let grows = Region::<[u8; 4096]>::with_capacity(2048, HugePages::Off).unwrap();
        let (t, g) = (table.as_ptr().cast::<u8>(), grows.as_ptr().cast::<u8>());
        let warmer = Warmer::default();
        warmer.add_whole(&table);
        warmer.add_region(&grows);
        assert_eq!(resident(t, 8 * mb), 0);
        // The growing region first, 4 MiB ahead of nothing used; then the table.
        assert_eq!(warmer.warm(4 * mb, 4 * mb), 4 * mb);
        assert_eq!((resident(g, 4 * mb), resident(t, 8 * mb)), (1024, 0));
        assert_eq!(warmer.warm(4 * mb, usize::MAX), 8 * mb);
        assert_eq!(resident(t, 8 * mb), 2048, "all of it");
        assert_eq!(warmer.warm(4 * mb, usize::MAX), 0);
        assert!(table.iter().all(|&b| b == 0), "still zeros");
    }

    #[test]
    fn a_pool_warms_from_its_first_chunk() {
        let mut pool = BufferPool::new(512, 16_384, HugePages::Off).unwrap();
        let warmer = Warmer::default();
        warmer.add_pool(&pool);
        let at = pool.chunk_addr(0) as *const u8;
        assert_eq!(
            warmer.warm(1 << 20, usize::MAX),
            2 << 20,
            "rounded to 2 MiB"
        );
        assert_eq!(resident(at, 2 << 20), 512);
        // SAFETY: the slice is dropped at once.
        let (idx, _) = unsafe { pool.take() }.unwrap();
        // SAFETY: the slice was dropped above.
        unsafe { pool.release(idx) };
    }

    #[test]
    fn pool_hands_out_disjoint_chunks_and_refuses_when_dry() {
        let mut pool = BufferPool::new(64, 3, HugePages::Off).unwrap();
        // SAFETY: `ca` is dropped before the pool.
        let (a, ca) = unsafe { pool.take() }.unwrap();
        // SAFETY: `cb` is last used before `b` is released.
        let (b, cb) = unsafe { pool.take() }.unwrap();
        // SAFETY: `cc` is dropped before the pool.
        let (c, cc) = unsafe { pool.take() }.unwrap();
        // SAFETY: nothing is handed out.
        assert!(unsafe { pool.take() }.is_none(), "a dry pool refuses");
        assert_eq!(pool.in_use(), 3);
        ca.fill(1);
        cb.fill(2);
        cc.fill(3);
        assert!(ca.iter().all(|&x| x == 1) && cb.iter().all(|&x| x == 2));
        assert_ne!(a, b);
        let _ = (ca, cc);
        // SAFETY: the slice for `b` is not used again.
        unsafe { pool.release(b) };
        // SAFETY: `cb2` is dropped before the pool.
        let (b2, cb2) = unsafe { pool.take() }.unwrap();
        assert_eq!(b2, b, "a released chunk is reused first");
        assert_eq!(cb2.len(), 64);
        assert_eq!(pool.in_use(), 3);
        let _ = c;
    }
}
