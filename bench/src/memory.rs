//! `c10m-bench memory`: what one cold cache line costs on this host, and how many the core
//! keeps in flight.
//!
//! A connection the stack has not touched for a while is a handful of cache lines in DRAM
//! (its demux bucket, its slot, a line of each buffer ring), and with a million
//! connections nearly every segment visits such a connection. How much that costs
//! depends on the host, not on the stack: the latency of one miss and the number of misses
//! one core overlaps. This measures both over a region as large as the stack's slabs at a
//! million connections, the way the stack maps them (anonymous pages advised with
//! `MADV_HUGEPAGE`) and, for comparison, with ordinary 4 KiB pages:
//!
//! - `dependent_ns`: a random walk in which each read's address comes from the previous
//!   read (a pointer chase), so that no two misses overlap: the latency of one miss,
//!   TLB walk included.
//! - `independent_ns`: random reads whose addresses are known in advance, which the core
//!   overlaps as far as it can: the cost of a miss when a core streams them, as the
//!   stack's prefetching of a batch of frames does.
//! - `in_flight`: their ratio, about how many misses the core (and the memory behind it)
//!   keeps going at once.
//! - `streamed_slot_ns`: independent random visits that each read `--slot-lines`
//!   consecutive lines, as a visit to a connection's slot does (480 bytes, 8 lines): the
//!   lines of one run share a DRAM row and the hardware's adjacent-line prefetch, so they
//!   cost less each than isolated ones.
//!
//! Run it pinned to the core the dataplane would use (`taskset -c 1 c10m-bench memory`);
//! nothing else should run.

use std::hint::black_box;
use std::time::Instant;

use anyhow::{Context, bail};
use c10m_stack::{HugePages, Region};
use serde::Serialize;

use crate::measure::{XorShift, median};

/// Arguments of `c10m-bench memory`.
#[derive(clap::Args, Debug)]
pub(crate) struct Args {
    /// Size of the region read at random, in MiB (a power of two). The default is about
    /// what the in-memory benchmark's two stacks hold at a million connections.
    #[arg(long, default_value_t = 2048)]
    mib: usize,
    /// Bytes from one line read to the next possible one (a power of two, 64 to 4096).
    #[arg(long, default_value_t = 512)]
    stride: usize,
    /// Consecutive lines read per visit for `streamed_slot_ns` (at most a stride's).
    #[arg(long, default_value_t = 8)]
    slot_lines: usize,
    /// Reads (visits) per measurement.
    #[arg(long, default_value_t = 2_000_000)]
    reads: usize,
    /// Rounds, the two page sizes alternated; medians reported.
    #[arg(long, default_value_t = 5)]
    rounds: usize,
    /// Print one JSON object instead of a table.
    #[arg(long)]
    json: bool,
}

#[derive(Serialize, Debug)]
struct Report {
    mib: usize,
    stride: usize,
    slot_lines: usize,
    reads: usize,
    rounds: usize,
    /// Anonymous pages advised with `MADV_HUGEPAGE`, as the stack maps its memory.
    transparent_hugepages: Backed,
    /// The same with no advice: 4 KiB pages unless the kernel's THP mode is `always`.
    plain: Backed,
}

#[derive(Serialize, Debug)]
struct Backed {
    dependent_ns: f64,
    independent_ns: f64,
    in_flight: f64,
    streamed_slot_ns: f64,
    /// Bytes of the region the kernel backed with transparent hugepages.
    huge_bytes: u64,
}

pub(crate) fn run(args: &Args) -> anyhow::Result<()> {
    if !args.mib.is_power_of_two() {
        bail!("--mib must be a power of two, e.g. 2048");
    }
    if !args.stride.is_power_of_two() || !(64..=4096).contains(&args.stride) {
        bail!("--stride must be a power of two from 64 to 4096, e.g. 512");
    }
    if args.slot_lines == 0 || args.slot_lines * 64 > args.stride {
        bail!("--slot-lines must be from 1 to --stride / 64");
    }
    if args.reads == 0 || args.rounds == 0 {
        bail!("--reads and --rounds must be at least 1");
    }
    let words = args
        .mib
        .checked_mul(1 << 20)
        .context("--mib is too large")?
        / 8;
    let stride = args.stride / 8;
    if words < 2 * stride {
        bail!("--mib must hold at least two strides");
    }
    let huge0 = anon_huge_bytes();
    let mut advised = Region::<u64>::new_zeroed(words, HugePages::Off)
        .with_context(|| format!("cannot map {} MiB: free some memory", args.mib))?;
    link_cycle(&mut advised, stride);
    let huge1 = anon_huge_bytes();
    let mut plain = vec![0u64; words];
    link_cycle(&mut plain, stride);
    let huge2 = anon_huge_bytes();

    let mut rows: [Vec<[f64; 3]>; 2] = [Vec::new(), Vec::new()];
    for _ in 0..args.rounds {
        rows[0].push(measure(&advised, stride, args.slot_lines, args.reads));
        rows[1].push(measure(&plain, stride, args.slot_lines, args.reads));
    }
    let backed = |rows: &[[f64; 3]], huge_bytes: u64| {
        let of = |k: usize| median(rows.iter().map(|r| r[k]).collect());
        Backed {
            dependent_ns: of(0),
            independent_ns: of(1),
            in_flight: of(0) / of(1),
            streamed_slot_ns: of(2),
            huge_bytes,
        }
    };
    let report = Report {
        mib: args.mib,
        stride: args.stride,
        slot_lines: args.slot_lines,
        reads: args.reads,
        rounds: args.rounds,
        transparent_hugepages: backed(&rows[0], huge1.saturating_sub(huge0)),
        plain: backed(&rows[1], huge2.saturating_sub(huge1)),
    };
    if args.json {
        println!("{}", serde_json::to_string(&report)?);
    } else {
        println!(
            "random reads over {} MiB, one line per {} bytes, medians of {} rounds:",
            report.mib, report.stride, report.rounds
        );
        println!(
            "  {:<26}{:>12}{:>16}{:>12}{:>14}{:>13}",
            "pages",
            "miss latency",
            "streamed miss",
            "in flight",
            format!("{}-line run", report.slot_lines),
            "THP-backed"
        );
        for (name, b) in [
            ("MADV_HUGEPAGE (the stack)", &report.transparent_hugepages),
            ("no advice", &report.plain),
        ] {
            println!(
                "  {name:<26}{:>9.1} ns{:>13.1} ns{:>12.1}{:>11.1} ns{:>9} MiB",
                b.dependent_ns,
                b.independent_ns,
                b.in_flight,
                b.streamed_slot_ns,
                b.huge_bytes >> 20
            );
        }
    }
    Ok(())
}

/// Makes the first word of every stride the index of the next stride to visit, in one
/// random cycle through all of them (Sattolo's shuffle), writing every page on the way.
fn link_cycle(words: &mut [u64], stride: usize) {
    let slots = words.len() / stride;
    for (i, w) in words.iter_mut().step_by(stride).take(slots).enumerate() {
        *w = i as u64;
    }
    let mut rng = XorShift(0x2545_f491_4f6c_dd1d);
    for i in (1..slots).rev() {
        let j = (rng.next() % i as u64) as usize;
        words.swap(i * stride, j * stride);
    }
}

/// One round: ns per read of the dependent walk, of independent random reads, and per
/// independent visit to a run of `lines` consecutive lines.
fn measure(words: &[u64], stride: usize, lines: usize, reads: usize) -> [f64; 3] {
    let t = Instant::now();
    let at = chase(words, stride, 0, reads);
    let dependent = t.elapsed().as_nanos() as f64 / reads as f64;
    black_box(at);

    // The region holds a power of two of strides, so a mask picks one.
    let mask = words.len() / stride - 1;
    let mut rng = XorShift(0x9e37_79b9_7f4a_7c15);
    let mut sum = 0u64;
    let t = Instant::now();
    for _ in 0..reads {
        sum = sum.wrapping_add(words[(rng.next() as usize & mask) * stride]);
    }
    let independent = t.elapsed().as_nanos() as f64 / reads as f64;

    let t = Instant::now();
    for _ in 0..reads {
        let run = (rng.next() as usize & mask) * stride;
        for line in 0..lines {
            sum = sum.wrapping_add(words[run + line * 8]);
        }
    }
    let slot = t.elapsed().as_nanos() as f64 / reads as f64;
    black_box(sum);
    [dependent, independent, slot]
}

/// Follows the cycle `steps` times from stride `from`; returns where it ends.
fn chase(words: &[u64], stride: usize, from: u64, steps: usize) -> u64 {
    let mut at = from;
    for _ in 0..steps {
        at = words[at as usize * stride];
    }
    at
}

/// `AnonHugePages` of this process, in bytes.
fn anon_huge_bytes() -> u64 {
    std::fs::read_to_string("/proc/self/smaps_rollup")
        .unwrap_or_default()
        .lines()
        .find_map(|l| l.strip_prefix("AnonHugePages:"))
        .and_then(|v| v.split_whitespace().next()?.parse::<u64>().ok())
        .map_or(0, |kb| kb * 1024)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_walk_visits_every_stride_once_per_lap() {
        let stride = 8;
        let slots = 4096;
        let mut words = vec![0u64; slots * stride];
        link_cycle(&mut words, stride);
        let mut seen = vec![false; slots];
        let mut at = 0;
        for _ in 0..slots {
            assert!(!seen[at as usize], "stride {at} visited twice in one lap");
            seen[at as usize] = true;
            at = chase(&words, stride, at, 1);
        }
        assert_eq!(at, 0, "one lap ends where it began");
        assert!(seen.iter().all(|&s| s));
        // Not the identity order: a walk in address order would let the hardware
        // prefetcher hide the misses it is meant to measure.
        let in_order = (0..slots as u64).filter(|&i| words[i as usize * stride] == i + 1);
        assert!(in_order.count() < slots / 100);
    }

    #[test]
    fn bad_arguments_are_refused_in_one_line() {
        let args = |mib, stride| Args {
            mib,
            stride,
            slot_lines: 1,
            reads: 10,
            rounds: 1,
            json: true,
        };
        let e = run(&args(1000, 512)).unwrap_err().to_string();
        assert_eq!(e, "--mib must be a power of two, e.g. 2048");
        let e = run(&args(1, 48)).unwrap_err().to_string();
        assert!(e.starts_with("--stride must be a power of two"), "{e}");
    }
}
