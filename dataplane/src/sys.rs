//! Thread placement: keeps the control thread off the workers' cores.

/// Restricts the calling thread to the online cores not in `avoid` (all of them if that
/// leaves none). Logs, never fails: placement is an optimisation.
pub(crate) fn avoid_cores(avoid: &[usize]) {
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    let allowed: Vec<usize> = (0..cores.max(1)).filter(|c| !avoid.contains(c)).collect();
    if allowed.is_empty() {
        tracing::warn!("every core runs a worker: the control thread shares one");
        return;
    }
    // SAFETY: a zeroed cpu_set_t is the empty set; CPU_SET writes inside it for indices
    // below CPU_SETSIZE (checked), and sched_setaffinity reads `size_of` bytes of it for
    // the calling thread (pid 0).
    let r = unsafe {
        let mut set: libc::cpu_set_t = std::mem::zeroed();
        for &c in allowed.iter().filter(|&&c| c < libc::CPU_SETSIZE as usize) {
            libc::CPU_SET(c, &mut set);
        }
        libc::sched_setaffinity(0, size_of::<libc::cpu_set_t>(), &set)
    };
    if r != 0 {
        tracing::warn!(
            "could not keep the control thread off the workers' cores: {}",
            std::io::Error::last_os_error()
        );
    }
}
