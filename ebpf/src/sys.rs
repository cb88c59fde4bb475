//! Everything here talks to libbpf or libc directly; it is the crate's only `unsafe`.
//!
//! - [`load`] opens and loads the generated skeleton, then keeps only kernel handles
//!   (program and map file descriptors), so nothing borrows the skeleton's storage.
//! - [`link_xdp`] attaches with `bpf_link_create(BPF_XDP)` and explicit mode flags:
//!   libbpf-rs 0.27's `Program::attach_xdp` takes no flags and lets the kernel pick.
//! - [`ifindex`] resolves an interface name in the calling thread's network namespace.
//! - [`load_impair`], [`tc_attach`], [`tc_query`] and [`tc_detach`]: the impairment
//!   program and its tc filters (libbpf-rs 0.27's `TcHook` wants a program descriptor
//!   even to query or detach, which these calls do not need).
#![allow(unsafe_code)]

use std::ffi::CString;
use std::io;
use std::mem::MaybeUninit;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, FromRawFd, OwnedFd};

use libbpf_rs::libbpf_sys;
use libbpf_rs::skel::{OpenSkel, SkelBuilder};
use libbpf_rs::{MapCore, MapHandle};

/// A skeleton that `build.rs` generated from `src/bpf/<name>.bpf.c`, as module `$module`;
/// generated code, so the crate's lints are off inside.
macro_rules! skeleton {
    ($module:ident, $file:literal) => {
        #[allow(
            unsafe_code,
            unreachable_pub,
            missing_debug_implementations,
            missing_docs,
            clippy::all,
            clippy::undocumented_unsafe_blocks
        )]
        mod $module {
            include!(concat!(env!("OUT_DIR"), "/", $file));
        }
    };
}

skeleton!(skel, "steer.skel.rs");
skeleton!(impair_skel, "impair.skel.rs");

// The Rust side builds keys and reads values as bytes (`maps.rs`); keep it in step with C.
const _: () = assert!(size_of::<skel::types::service_key>() == crate::maps::SERVICE_KEY_LEN);
const _: () = assert!(size_of::<skel::types::prefix_key>() == crate::maps::PREFIX_KEY_LEN);
const _: () = assert!(size_of::<skel::types::counters>() == crate::maps::COUNTERS_LEN);
const _: () = assert!(size_of::<skel::types::service_value>() == crate::maps::SERVICE_VALUE_LEN);
const _: () = assert!(size_of::<skel::types::cookie_keys>() == crate::maps::COOKIE_KEYS_LEN);
const _: () = assert!(size_of::<impair_skel::types::impair_config>() == 4);
const _: () = assert!(size_of::<impair_skel::types::impair_counters>() == 16);

/// `XDP_FLAGS_SKB_MODE`: generic XDP, run on the `sk_buff` after the driver.
pub(crate) const XDP_FLAGS_SKB_MODE: u32 = libbpf_sys::XDP_FLAGS_SKB_MODE;
/// `XDP_FLAGS_DRV_MODE`: native XDP, run by the driver before any `sk_buff` exists.
pub(crate) const XDP_FLAGS_DRV_MODE: u32 = libbpf_sys::XDP_FLAGS_DRV_MODE;

/// The loaded program and its maps, held by file descriptor.
///
/// The kernel keeps a program and its maps alive while any descriptor or link refers
/// to them, so the libbpf object can be closed once these are duplicated.
#[derive(Debug)]
pub(crate) struct Loaded {
    pub(crate) prog: OwnedFd,
    pub(crate) xsks: MapHandle,
    pub(crate) services: MapHandle,
    pub(crate) services6: MapHandle,
    pub(crate) addrs: MapHandle,
    pub(crate) addrs6: MapHandle,
    pub(crate) prefixes: MapHandle,
    pub(crate) counters: MapHandle,
    pub(crate) cookie_keys: MapHandle,
}

/// Opens the embedded BPF object, loads it through the verifier and returns its handles.
pub(crate) fn load() -> libbpf_rs::Result<Loaded> {
    let mut storage = MaybeUninit::uninit();
    let open = skel::SteerSkelBuilder::default().open(&mut storage)?;
    let skel = open.load()?;
    debug_assert_eq!(skel.maps.xsks.max_entries(), crate::MAX_QUEUES);
    debug_assert_eq!(skel.maps.services.max_entries(), crate::MAX_SERVICES);
    debug_assert_eq!(skel.maps.services6.max_entries(), crate::MAX_SERVICES);
    debug_assert_eq!(skel.maps.addrs.max_entries(), crate::MAX_ADDRESSES);
    debug_assert_eq!(skel.maps.addrs6.max_entries(), crate::MAX_ADDRESSES);
    Ok(Loaded {
        prog: skel.progs.steer.as_fd().try_clone_to_owned()?,
        xsks: MapHandle::try_from(&skel.maps.xsks)?,
        services: MapHandle::try_from(&skel.maps.services)?,
        services6: MapHandle::try_from(&skel.maps.services6)?,
        addrs: MapHandle::try_from(&skel.maps.addrs)?,
        addrs6: MapHandle::try_from(&skel.maps.addrs6)?,
        prefixes: MapHandle::try_from(&skel.maps.prefixes)?,
        counters: MapHandle::try_from(&skel.maps.counters)?,
        cookie_keys: MapHandle::try_from(&skel.maps.cookie_keys)?,
    })
    // `skel` drops here: libbpf closes its own descriptors; ours stay valid.
}

/// Opens and loads the impairment program; returns its descriptor (its maps live as
/// long as the program does).
pub(crate) fn load_impair() -> libbpf_rs::Result<OwnedFd> {
    let mut storage = MaybeUninit::uninit();
    let open = impair_skel::ImpairSkelBuilder::default().open(&mut storage)?;
    let skel = open.load()?;
    Ok(skel.progs.impair.as_fd().try_clone_to_owned()?)
}

/// `hook` of `ifindex` at the impairment filter's handle and priority.
fn tc_hook(
    ifindex: u32,
    hook: crate::impair::Hook,
) -> (libbpf_sys::bpf_tc_hook, libbpf_sys::bpf_tc_opts) {
    let hook = libbpf_sys::bpf_tc_hook {
        sz: size_of::<libbpf_sys::bpf_tc_hook>() as libbpf_sys::size_t,
        ifindex: ifindex as i32,
        attach_point: match hook {
            crate::impair::Hook::Egress => libbpf_sys::BPF_TC_EGRESS,
            crate::impair::Hook::Ingress => libbpf_sys::BPF_TC_INGRESS,
        },
        ..Default::default()
    };
    let opts = libbpf_sys::bpf_tc_opts {
        sz: size_of::<libbpf_sys::bpf_tc_opts>() as libbpf_sys::size_t,
        handle: crate::impair::TC_HANDLE,
        priority: crate::impair::TC_PRIORITY,
        ..Default::default()
    };
    (hook, opts)
}

/// Creates `ifindex`'s clsact qdisc if it has none and attaches `prog` as the filter on
/// `hook` at the impairment's handle and priority, replacing what is there.
pub(crate) fn tc_attach(
    prog: BorrowedFd<'_>,
    ifindex: u32,
    hook: crate::impair::Hook,
) -> io::Result<()> {
    let (mut hook, mut opts) = tc_hook(ifindex, hook);
    // SAFETY: `hook` is a fully initialised `bpf_tc_hook` whose `sz` is its own size and
    // which outlives the call.
    let rc = unsafe { libbpf_sys::bpf_tc_hook_create(&mut hook) };
    if rc < 0 && rc != -libc::EEXIST {
        return Err(io::Error::from_raw_os_error(-rc));
    }
    opts.prog_fd = prog.as_raw_fd();
    opts.flags = libbpf_sys::BPF_TC_F_REPLACE;
    // SAFETY: `hook` and `opts` are initialised with their own sizes and outlive the
    // call; `opts.prog_fd` is a live program descriptor; libbpf writes `opts.prog_id`.
    let rc = unsafe { libbpf_sys::bpf_tc_attach(&hook, &mut opts) };
    if rc < 0 {
        return Err(io::Error::from_raw_os_error(-rc));
    }
    Ok(())
}

/// The id of the program in `ifindex`'s impairment filter on `hook`, `None` if there is
/// none.
pub(crate) fn tc_query(ifindex: u32, hook: crate::impair::Hook) -> io::Result<Option<u32>> {
    let (hook, mut opts) = tc_hook(ifindex, hook);
    // SAFETY: `hook` and `opts` are initialised with their own sizes, outlive the call,
    // and have no program set, as a query requires; libbpf writes `opts.prog_id`.
    let rc = unsafe { libbpf_sys::bpf_tc_query(&hook, &mut opts) };
    match -rc {
        0 => Ok(Some(opts.prog_id)),
        libc::ENOENT | libc::EINVAL => Ok(None),
        e => Err(io::Error::from_raw_os_error(e)),
    }
}

/// Removes `ifindex`'s impairment filter on `hook` (the clsact qdisc and the other
/// hook's filter stay); false if there was none.
pub(crate) fn tc_detach(ifindex: u32, hook: crate::impair::Hook) -> io::Result<bool> {
    let (hook, opts) = tc_hook(ifindex, hook);
    // SAFETY: as in `tc_query`; libbpf only reads both.
    let rc = unsafe { libbpf_sys::bpf_tc_detach(&hook, &opts) };
    match -rc {
        0 => Ok(true),
        libc::ENOENT | libc::EINVAL => Ok(false),
        e => Err(io::Error::from_raw_os_error(e)),
    }
}

/// Attaches `prog` to `ifindex` as an XDP bpf_link with `flags` (one mode flag).
///
/// The returned descriptor is the link: closing it (explicitly, or by the process
/// exiting for any reason) detaches the program.
pub(crate) fn link_xdp(prog: BorrowedFd<'_>, ifindex: u32, flags: u32) -> io::Result<OwnedFd> {
    let target = i32::try_from(ifindex).map_err(|_| io::Error::from_raw_os_error(libc::ENODEV))?;
    let opts = libbpf_sys::bpf_link_create_opts {
        sz: size_of::<libbpf_sys::bpf_link_create_opts>() as libbpf_sys::size_t,
        flags,
        ..Default::default()
    };
    // SAFETY: `opts` is a fully initialised `bpf_link_create_opts` whose `sz` is its own
    // size, it outlives the call, and libbpf only reads it. `prog` is a live descriptor.
    let fd = unsafe {
        libbpf_sys::bpf_link_create(prog.as_raw_fd(), target, libbpf_sys::BPF_XDP, &opts)
    };
    if fd < 0 {
        // libbpf returns `-errno` (and sets errno) on failure.
        return Err(io::Error::from_raw_os_error(-fd));
    }
    // SAFETY: on success `bpf_link_create` returns a new descriptor that nothing else
    // owns; the `OwnedFd` becomes its only owner and closes it on drop.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

/// The XDP features the driver of `ifindex` reports (`NETDEV_XDP_ACT_*` bits, from
/// Linux 6.3 and libbpf 1.2); `None` where they are not reported.
pub(crate) fn xdp_features(ifindex: u32) -> Option<u64> {
    let target = i32::try_from(ifindex).ok()?;
    let mut opts = libbpf_sys::bpf_xdp_query_opts {
        sz: size_of::<libbpf_sys::bpf_xdp_query_opts>() as libbpf_sys::size_t,
        ..Default::default()
    };
    // SAFETY: `opts` is a fully initialised `bpf_xdp_query_opts` whose `sz` is its own
    // size; it outlives the call, and libbpf writes only inside it.
    let r = unsafe { libbpf_sys::bpf_xdp_query(target, 0, &mut opts) };
    (r == 0 && opts.feature_flags != 0).then_some(opts.feature_flags)
}

/// The index of the interface `name` in the calling thread's network namespace.
pub(crate) fn ifindex(name: &str) -> Option<u32> {
    let name = CString::new(name).ok()?;
    // SAFETY: `name` is a valid NUL-terminated string that outlives the call;
    // `if_nametoindex` only reads it.
    let index = unsafe { libc::if_nametoindex(name.as_ptr()) };
    (index != 0).then_some(index)
}

/// Runs the program `repeat` times over `frame` with `BPF_PROG_TEST_RUN` (rx queue 0)
/// and returns its XDP action, the mean run time in nanoseconds and the frame as the
/// program left it (after the last run). The crate's tests use it to exercise the
/// parser and the SYN-cookie answer without a network.
#[cfg(test)]
pub(crate) fn test_run(
    prog: BorrowedFd<'_>,
    frame: &[u8],
    repeat: i32,
) -> io::Result<(u32, u32, Vec<u8>)> {
    let mut out = vec![0u8; frame.len() + 256];
    let mut opts = libbpf_sys::bpf_test_run_opts {
        sz: size_of::<libbpf_sys::bpf_test_run_opts>() as libbpf_sys::size_t,
        data_in: frame.as_ptr().cast(),
        data_size_in: u32::try_from(frame.len()).map_err(|_| io::ErrorKind::InvalidInput)?,
        data_out: out.as_mut_ptr().cast(),
        data_size_out: out.len() as u32,
        repeat,
        ..Default::default()
    };
    // SAFETY: `opts` is initialised with its own size; `data_in` points to `frame`, which
    // outlives the call and which the kernel copies, never writes; `data_out` points to
    // `out`, whose length is `data_size_out`, the most the kernel writes there.
    let ret = unsafe { libbpf_sys::bpf_prog_test_run_opts(prog.as_raw_fd(), &mut opts) };
    if ret < 0 {
        return Err(io::Error::from_raw_os_error(-ret));
    }
    out.truncate(opts.data_size_out as usize);
    Ok((opts.retval, opts.duration, out))
}
