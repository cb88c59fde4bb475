//! Timing wheel costs with a million keys waiting.
//!
//! - `schedule_cancel`: schedule a spare key at a random deadline, then cancel it (one
//!   element = the pair).
//! - `reschedule`: move a random scheduled key to a new random deadline.
//! - `cancel_rearm`: the TCP request/response pattern: cancel a random scheduled key (its
//!   ACK arrived), then schedule it again at `now + 200` (the retransmission timeout of the
//!   next response). One element = the pair. The clock stands still, so after its first
//!   visit a key waits in the `now + 200` slot, as every connection's timer does in steady
//!   state; the work a lazy wheel defers to `expire` is not counted here.
//! - `expire/K`: advance one tick at which K of the 1M keys fire, including the cascades
//!   that steady state brings (fired keys are rescheduled, untimed, one full round later);
//!   one element = one fired key.

use std::hint::black_box;
use std::time::{Duration, Instant};

use c10m_stack::wheel::Wheel;
use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};

const KEYS: u32 = 1_000_000;
const SPARE: u32 = 1_024;
/// Deadlines spread over about 70 minutes: every level up to the fourth is populated.
const SPREAD: u64 = 1 << 22;
const START: u64 = 1 << 30;

/// A deterministic xorshift generator.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
}

/// A wheel holding `KEYS` keys at random deadlines, with `SPARE` unscheduled keys above.
fn full_wheel(rng: &mut Rng) -> Wheel {
    let mut wheel = Wheel::new((KEYS + SPARE) as usize, START);
    for key in 0..KEYS {
        wheel.schedule(key, START + 1 + rng.next() % SPREAD);
    }
    wheel
}

/// `n` random (key, deadline) pairs, keys from `keys`, precomputed so the RNG stays out of
/// the timed loop.
fn plan(rng: &mut Rng, keys: std::ops::Range<u32>, n: usize) -> Vec<(u32, u64)> {
    let span = u64::from(keys.end - keys.start);
    (0..n)
        .map(|_| {
            let key = keys.start + (rng.next() % span) as u32;
            (key, START + 1 + rng.next() % SPREAD)
        })
        .collect()
}

fn schedule_cancel(c: &mut Criterion) {
    let mut rng = Rng(0x2545_f491_4f6c_dd1d);
    let mut wheel = full_wheel(&mut rng);
    let plan = plan(&mut rng, KEYS..KEYS + SPARE, 1 << 16);
    let mut group = c.benchmark_group("wheel");
    group.throughput(Throughput::Elements(1));
    let mut i = 0;
    group.bench_function("schedule_cancel/1M", |b| {
        b.iter(|| {
            let (key, deadline) = plan[i & (plan.len() - 1)];
            i += 1;
            wheel.schedule(key, deadline);
            black_box(wheel.cancel(key))
        })
    });
    group.finish();
}

fn reschedule(c: &mut Criterion) {
    let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
    let mut wheel = full_wheel(&mut rng);
    let plan = plan(&mut rng, 0..KEYS, 1 << 20);
    let mut group = c.benchmark_group("wheel");
    group.throughput(Throughput::Elements(1));
    let mut i = 0;
    group.bench_function("reschedule/1M", |b| {
        b.iter(|| {
            let (key, deadline) = plan[i & (plan.len() - 1)];
            i += 1;
            wheel.schedule(black_box(key), deadline);
        })
    });
    group.finish();
}

fn cancel_rearm(c: &mut Criterion) {
    /// The retransmission timeout re-armed by every response.
    const RTO: u64 = 200;
    let mut rng = Rng(0x1405_7b7e_f767_814f);
    let mut wheel = full_wheel(&mut rng);
    let keys: Vec<u32> = plan(&mut rng, 0..KEYS, 1 << 20)
        .into_iter()
        .map(|(key, _)| key)
        .collect();
    let mut group = c.benchmark_group("wheel");
    group.throughput(Throughput::Elements(1));
    let mut i = 0;
    group.bench_function("cancel_rearm/1M", |b| {
        b.iter(|| {
            let key = keys[i & (keys.len() - 1)];
            i += 1;
            let cancelled = wheel.cancel(black_box(key));
            wheel.schedule(key, wheel.now() + RTO);
            black_box(cancelled)
        })
    });
    group.finish();
}

fn expire(c: &mut Criterion) {
    let mut group = c.benchmark_group("wheel/expire");
    for fire in [1u32, 16, 256, 4_096] {
        // K keys per tick: key i fires at tick i / K, and once fired comes back a full
        // round (KEYS / K ticks) later, so every tick fires exactly K keys.
        let round = u64::from(KEYS / fire);
        let keys = round as u32 * fire; // a whole number of ticks, about 1M keys
        let mut wheel = Wheel::new(keys as usize, START);
        for key in 0..keys {
            wheel.schedule(key, START + 1 + u64::from(key / fire));
        }
        let mut out = Vec::with_capacity(fire as usize);
        group.throughput(Throughput::Elements(u64::from(fire)));
        group.bench_function(BenchmarkId::from_parameter(fire), |b| {
            b.iter_custom(|iters| {
                let mut timed = Duration::ZERO;
                for _ in 0..iters {
                    let now = wheel.now() + 1;
                    let begin = Instant::now();
                    wheel.expire(now, &mut out);
                    timed += begin.elapsed();
                    assert_eq!(out.len(), fire as usize);
                    for key in out.drain(..) {
                        wheel.schedule(key, now + round);
                    }
                }
                timed
            })
        });
    }
    group.finish();
}

criterion_group!(benches, schedule_cancel, reschedule, cancel_rearm, expire);
criterion_main!(benches);
