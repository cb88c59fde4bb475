use std::collections::{BTreeMap, BTreeSet};

use proptest::prelude::*;

use super::*;

/// Checks the lists, the bitmaps and `len` against each other.
fn check(wheel: &Wheel) {
    let mut seen = 0;
    let mut walk = |head: u32, place: Place| {
        let (mut key, mut prev) = (head, NIL);
        while key != NIL {
            let node = wheel.nodes[key as usize];
            assert_eq!(node.prev, prev, "key {key}: prev link");
            assert_eq!(
                wheel.place(node.deadline),
                place,
                "key {key}: on the wrong list"
            );
            (prev, key) = (key, node.next);
            seen += 1;
        }
    };
    walk(wheel.due, None);
    for level in 0..LEVELS {
        for slot in 0..SLOTS {
            let head = wheel.heads[level][slot];
            assert_eq!(
                head != NIL,
                wheel.occupied[level] >> slot & 1 == 1,
                "bitmap {level}"
            );
            walk(head, Some((level, slot)));
        }
    }
    assert_eq!(seen, wheel.len);
    assert_eq!(
        wheel.nodes.iter().filter(|n| n.prev != IDLE).count(),
        wheel.len
    );
}

/// A deterministic xorshift generator for the bulk tests.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
}

fn expire(wheel: &mut Wheel, now: u64) -> Vec<u32> {
    let mut out = Vec::new();
    wheel.expire(now, &mut out);
    check(wheel);
    out
}

#[test]
fn fires_exactly_at_the_boundary_ms() {
    let mut wheel = Wheel::new(8, 0);
    for (key, deadline) in [(1, 100), (2, 64), (3, 63), (4, 4096), (5, 1)] {
        wheel.schedule(key, deadline);
    }
    check(&wheel);
    assert_eq!(expire(&mut wheel, 0), [] as [u32; 0]);
    assert_eq!(expire(&mut wheel, 1), [5]);
    assert_eq!(expire(&mut wheel, 62), [] as [u32; 0]);
    assert_eq!(expire(&mut wheel, 63), [3]);
    assert_eq!(wheel.next_expiry(), Some(64));
    assert_eq!(expire(&mut wheel, 64), [2]);
    assert_eq!(expire(&mut wheel, 99), [] as [u32; 0]);
    assert_eq!(wheel.next_expiry(), Some(100));
    assert_eq!(expire(&mut wheel, 100), [1]);
    assert_eq!(expire(&mut wheel, 4095), [] as [u32; 0]);
    assert_eq!(expire(&mut wheel, 4096), [4]);
    assert!(wheel.is_empty() && wheel.next_expiry().is_none());
}

#[test]
fn reschedules_from_the_results() {
    let mut wheel = Wheel::new(16, 1_000);
    for key in 0..10 {
        wheel.schedule(key, 1_005);
    }
    let mut out = Vec::new();
    for round in 1..=5 {
        let now = 1_000 + 5 * round;
        wheel.expire(now - 1, &mut out);
        assert!(out.is_empty());
        wheel.expire(now, &mut out);
        assert_eq!(out.len(), 10, "round {round}");
        for key in out.drain(..) {
            assert_eq!(wheel.deadline(key), None);
            wheel.schedule(key, now + 5);
        }
        check(&wheel);
        assert_eq!(wheel.len(), 10);
    }
    // Rescheduled into the past: fire at the next expire, even for the same time.
    let now = wheel.now();
    wheel.schedule(3, now - 50);
    assert_eq!(wheel.deadline(3), Some(now));
    assert_eq!(wheel.next_expiry(), Some(now));
    assert_eq!(expire(&mut wheel, now), [3]);
}

#[test]
fn cancels_a_cascaded_entry() {
    let mut wheel = Wheel::new(4, 0);
    wheel.schedule(1, 10_000);
    wheel.schedule(2, 10_001);
    assert_eq!(wheel.place(10_000), Some((2, 2)));
    assert_eq!(wheel.next_expiry(), Some(8_192));
    assert_eq!(expire(&mut wheel, 9_000), [] as [u32; 0]);
    // The level-2 slot starting at 8192 came due: both moved down to level 1.
    assert_eq!(wheel.place(10_000), Some((1, 28)));
    assert_eq!(wheel.next_expiry(), Some(9_984));
    assert!(wheel.cancel(1));
    assert!(!wheel.cancel(1));
    check(&wheel);
    assert_eq!(expire(&mut wheel, 10_000), [] as [u32; 0]);
    assert_eq!(expire(&mut wheel, 20_000), [2]);
    assert!(wheel.is_empty() && wheel.next_expiry().is_none());
    assert!(wheel.occupied.iter().all(|&bits| bits == 0));
}

#[test]
fn moves_within_a_slot() {
    let mut wheel = Wheel::new(4, 0);
    wheel.schedule(1, 5_000);
    wheel.schedule(1, 4_200); // same level-2 slot: only the deadline changes
    assert_eq!(wheel.deadline(1), Some(4_200));
    assert_eq!(wheel.len(), 1);
    check(&wheel);
    assert_eq!(expire(&mut wheel, 4_199), [] as [u32; 0]);
    assert_eq!(expire(&mut wheel, 4_200), [1]);
}

#[test]
fn clamps_far_deadlines() {
    let start = 12_345_678_901;
    let mut wheel = Wheel::new(4, start);
    wheel.schedule(1, u64::MAX);
    wheel.schedule(2, start + MAX_DELAY);
    assert_eq!(wheel.deadline(1), Some(start + MAX_DELAY));
    assert!(wheel.next_expiry().unwrap() <= start + MAX_DELAY);
    check(&wheel);
    assert_eq!(expire(&mut wheel, start + MAX_DELAY - 1), [] as [u32; 0]);
    assert_eq!(wheel.len(), 2);
    assert_eq!(wheel.next_expiry(), Some(start + MAX_DELAY));
    assert_eq!(expire(&mut wheel, start + MAX_DELAY).len(), 2);
    // At the end of time the range saturates instead of overflowing.
    let mut wheel = Wheel::new(2, u64::MAX - 10);
    wheel.schedule(0, u64::MAX);
    wheel.schedule(1, 5);
    assert_eq!(expire(&mut wheel, u64::MAX), [1, 0]);
}

#[test]
fn ignores_time_going_backwards_and_bad_keys() {
    let mut wheel = Wheel::new(4, 500);
    wheel.schedule(0, 600);
    assert_eq!(expire(&mut wheel, 400), [] as [u32; 0]);
    assert_eq!(wheel.now(), 500);
    for key in [4, 5, IDLE, NIL] {
        wheel.schedule(key, 550);
        assert!(!wheel.cancel(key));
        assert_eq!(wheel.deadline(key), None);
    }
    assert_eq!(wheel.len(), 1);
    assert_eq!(expire(&mut wheel, 600), [0]);
}

#[test]
fn accounts_memory() {
    let wheel = Wheel::new(1_000, 0);
    assert_eq!(wheel.capacity(), 1_000);
    assert_eq!(wheel.memory_bytes(), 16 * 1_000 + size_of::<Wheel>());
    assert!(size_of::<Wheel>() < 1_700, "{}", size_of::<Wheel>());
}

#[test]
fn expires_half_a_million_keys_in_order() {
    const KEYS: u32 = 500_000;
    let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
    let start = 1 << 40;
    let mut wheel = Wheel::new(KEYS as usize, start);
    let mut deadlines = Vec::with_capacity(KEYS as usize);
    for key in 0..KEYS {
        // Spread over all six levels, with one key in 64 beyond the range.
        let span = if key % 64 == 0 {
            1 << 40
        } else {
            1 << (rng.next() % 36)
        };
        wheel.schedule(key, start + rng.next() % span);
        deadlines.push(wheel.deadline(key).unwrap());
    }
    assert_eq!(wheel.len(), KEYS as usize);
    let (mut now, mut fired, mut last) = (start, Vec::new(), 0);
    while !wheel.is_empty() {
        let from = fired.len();
        now += 1 + rng.next() % (1 << (rng.next() % 34));
        wheel.expire(now, &mut fired);
        for &key in &fired[from..] {
            let deadline = deadlines[key as usize];
            assert!(last <= deadline && deadline <= now, "key {key}: {deadline}");
            last = deadline;
        }
    }
    assert_eq!(fired.len(), KEYS as usize);
    fired.sort_unstable();
    assert!(fired.iter().copied().eq(0..KEYS));
}

// The model-based test.

const CAP: u32 = 40;

#[derive(Debug, Clone)]
enum Op {
    Schedule(u32, When),
    Cancel(u32),
    Expire(When),
}

/// A time relative to the wheel's current tick.
#[derive(Debug, Clone)]
enum When {
    Before(u64),
    After(u64),
    Never,
    NextExpiry,
}

impl When {
    fn at(&self, wheel: &Wheel) -> u64 {
        let now = wheel.now();
        match *self {
            When::Before(ms) => now.saturating_sub(ms),
            When::After(ms) => now.saturating_add(ms),
            When::Never => u64::MAX,
            When::NextExpiry => wheel.next_expiry().unwrap_or(now),
        }
    }
}

fn when() -> impl Strategy<Value = When> {
    prop_oneof![
        1 => (0..200u64).prop_map(When::Before),
        4 => (0..130u64).prop_map(When::After),
        3 => (0..1u64 << 20).prop_map(When::After),
        3 => (0..38u32).prop_flat_map(|bits| 0..1u64 << bits).prop_map(When::After),
        1 => (MAX_DELAY - 2..MAX_DELAY + 3).prop_map(When::After),
        1 => Just(When::Never),
        2 => Just(When::NextExpiry),
    ]
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        5 => (0..CAP, when()).prop_map(|(key, when)| Op::Schedule(key, when)),
        1 => (0..CAP).prop_map(Op::Cancel),
        3 => when().prop_map(Op::Expire),
    ]
}

fn start() -> impl Strategy<Value = u64> {
    prop_oneof![Just(0), 0..u64::MAX / 2, u64::MAX - (1 << 38)..=u64::MAX]
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    #[test]
    fn matches_a_model(start in start(), ops in prop::collection::vec(op(), 1..200)) {
        let mut wheel = Wheel::new(CAP as usize, start);
        let mut model = BTreeMap::<u32, u64>::new();
        let mut out = Vec::new();
        for op in ops {
            let now = wheel.now();
            match op {
                Op::Schedule(key, when) => {
                    let deadline = when.at(&wheel);
                    wheel.schedule(key, deadline);
                    let clamped = deadline.clamp(now, now.saturating_add(MAX_DELAY));
                    model.insert(key, clamped);
                }
                Op::Cancel(key) => {
                    prop_assert_eq!(wheel.cancel(key), model.remove(&key).is_some());
                }
                Op::Expire(when) => {
                    let to = when.at(&wheel);
                    out.clear();
                    wheel.expire(to, &mut out);
                    prop_assert_eq!(wheel.now(), to.max(now));
                    let due: BTreeSet<u32> = if to < now {
                        BTreeSet::new()
                    } else {
                        model.iter().filter(|&(_, &d)| d <= to).map(|(&k, _)| k).collect()
                    };
                    prop_assert_eq!(&out.iter().copied().collect::<BTreeSet<_>>(), &due);
                    prop_assert_eq!(out.len(), due.len(), "a key fired twice");
                    let order: Vec<u64> = out.iter().map(|k| model[k]).collect();
                    prop_assert!(order.is_sorted(), "out of order: {:?}", order);
                    model.retain(|key, _| !due.contains(key));
                }
            }
            check(&wheel);
            prop_assert_eq!(wheel.len(), model.len());
            for key in 0..CAP {
                prop_assert_eq!(wheel.deadline(key), model.get(&key).copied());
            }
            let earliest = model.values().min().copied();
            let next = wheel.next_expiry();
            prop_assert_eq!(next.is_some(), earliest.is_some());
            if let (Some(next), Some(earliest)) = (next, earliest) {
                let now = wheel.now();
                prop_assert!(now <= next && next <= earliest, "{} {} {}", now, next, earliest);
                if earliest ^ now < 64 {
                    prop_assert_eq!(next, earliest);
                }
            }
        }
    }
}
