use std::collections::{BTreeMap, BTreeSet};

use proptest::prelude::*;

use super::*;

/// Checks the lists, the bitmaps, the nodes and `len` against each other: every linked
/// node is on the list it names, every slot list comes due after `now`, and every scheduled
/// key is linked on a list that comes due no later than it wants, within range. Cancelled
/// keys may stay linked; unlinked nodes are idle.
fn check(wheel: &Wheel) {
    let (now, mut linked) = (wheel.timers.now, 0);
    for list in 0..=DUE {
        let head = wheel.timers.heads[list];
        if list != DUE {
            let bit = wheel.timers.occupied[list / SLOTS] >> (list % SLOTS) & 1 == 1;
            assert_eq!(head != NIL, bit, "bitmap of list {list}");
            let overdue = head != NIL && wheel.timers.visit(list) <= now;
            assert!(!overdue, "list {list} overdue");
        }
        let (mut key, mut prev) = (head, NIL);
        while key != NIL {
            let node = wheel.nodes[key as usize];
            assert_eq!((node.prev, node.list()), (prev, list), "key {key}: links");
            if node.scheduled() {
                let (wanted, end) = (wheel.timers.wanted(node), now.saturating_add(MAX_DELAY));
                let ok = wheel.timers.visit(list) <= wanted && wanted <= end;
                assert!(ok, "key {key}: {wanted} on {list}");
            }
            (prev, key, linked) = (key, node.next, linked + 1);
        }
    }
    let idle = wheel.nodes.iter().filter(|n| n.list() == UNLINKED);
    assert!(idle.clone().all(|n| n.state == IDLE), "unlinked, scheduled");
    // Nodes past the written ones are idle by definition.
    assert!(wheel.nodes.len() <= wheel.capacity());
    assert_eq!(linked + idle.count(), wheel.nodes.len());
    let scheduled = wheel.nodes.iter().filter(|n| n.scheduled()).count();
    assert_eq!(scheduled, wheel.timers.len);
}

/// Whether no node is lazy: every linked node is scheduled and on the list of the deadline
/// it wants, as if `cancel` and `schedule` always unlinked.
fn settled(wheel: &Wheel) -> bool {
    wheel.nodes.iter().all(|&node| {
        node.list() == UNLINKED
            || node.scheduled() && node.list() == wheel.timers.place(wheel.timers.wanted(node))
    })
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

/// Expires at each time in turn, expecting the keys given to fire.
fn fires(wheel: &mut Wheel, steps: &[(u64, &[u32])]) {
    for &(now, keys) in steps {
        assert_eq!(expire(wheel, now), keys, "at {now}");
    }
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
    assert_eq!(wheel.timers.place(10_000), 2 * SLOTS + 2);
    assert_eq!(wheel.next_expiry(), Some(8_192));
    assert_eq!(expire(&mut wheel, 9_000), [] as [u32; 0]);
    // The level-2 slot starting at 8192 came due: both moved down to level 1.
    assert_eq!(wheel.timers.place(10_000), SLOTS + 28);
    assert_eq!(wheel.next_expiry(), Some(9_984));
    assert!(wheel.cancel(1));
    assert!(!wheel.cancel(1));
    check(&wheel);
    assert_eq!(wheel.next_expiry(), Some(9_984)); // key 1 still occupies the slot
    assert_eq!(expire(&mut wheel, 10_000), [] as [u32; 0]);
    assert_eq!(expire(&mut wheel, 20_000), [2]);
    assert!(wheel.is_empty() && wheel.next_expiry().is_none());
    assert!(wheel.timers.occupied.iter().all(|&bits| bits == 0));
}

#[test]
fn moves_within_a_slot() {
    let mut wheel = Wheel::new(4, 0);
    wheel.schedule(1, 5_000);
    wheel.schedule(1, 4_200); // the level-2 slot comes due at 4096: only the node changes
    assert_eq!(wheel.deadline(1), Some(4_200));
    assert_eq!(wheel.nodes[1].list(), wheel.timers.place(5_000));
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
    for key in [4, 5, NIL - 1, NIL] {
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
    // 16 bytes a node, in whole 4 KiB pages.
    let nodes = (16 * 1_000usize).div_ceil(4096) * 4096;
    assert_eq!(wheel.memory_bytes(), nodes + size_of::<Wheel>());
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

#[test]
fn cancel_then_reschedule_fires_once_at_the_new_deadline() {
    let mut wheel = Wheel::new(4, 0);
    wheel.schedule(1, 100); // level 1: the slot comes due at 64
    wheel.schedule(2, 10); // level 0
    assert!(wheel.cancel(1) && wheel.cancel(2));
    assert_eq!((wheel.deadline(1), wheel.len()), (None, 0));
    assert_eq!(wheel.next_expiry(), None);
    wheel.schedule(1, 150);
    wheel.schedule(2, 10);
    let lists = (wheel.nodes[1].list(), wheel.nodes[2].list());
    assert_eq!(
        lists,
        (wheel.timers.place(100), wheel.timers.place(10)),
        "moved"
    );
    assert_eq!((wheel.deadline(1), wheel.len()), (Some(150), 2));
    fires(&mut wheel, &[(9, &[]), (10, &[2])]);
    assert_eq!(wheel.next_expiry(), Some(64)); // early: key 1 waits there for 150
    fires(&mut wheel, &[(100, &[]), (149, &[]), (150, &[1])]);
    fires(&mut wheel, &[(100_000, &[])]);
    assert!(wheel.is_empty() && wheel.next_expiry().is_none());
}

#[test]
fn postpones_repeatedly_and_fires_once_at_the_last_deadline() {
    let mut wheel = Wheel::new(4, 0);
    wheel.schedule(3, 5_000); // a bystander
    for deadline in (20..=1_000).step_by(10) {
        wheel.schedule(0, deadline); // stays on the list of 20
    }
    assert_eq!(
        (wheel.nodes[0].list(), wheel.len()),
        (wheel.timers.place(20), 2)
    );
    fires(&mut wheel, &[(999, &[]), (1_000, &[0])]);
    // Postponed while time passes, each time shortly before it is due.
    for now in (1_000..4_900).step_by(7) {
        fires(&mut wheel, &[(now, &[])]);
        wheel.schedule(1, now + 10);
        assert_eq!(wheel.deadline(1), Some(now + 10));
    }
    let last = wheel.now() + 10;
    fires(&mut wheel, &[(last - 1, &[]), (last, &[1]), (10_000, &[3])]);
}

#[test]
fn moves_when_scheduled_earlier_than_its_list() {
    let mut wheel = Wheel::new(4, 0);
    for (key, deadline) in [(2, 5_001), (1, 5_000), (3, 4_999), (0, 4_500)] {
        wheel.schedule(key, deadline); // one level-2 list, due at 4096: 0, 3, 1, 2
    }
    wheel.schedule(1, 100); // from the middle of the list
    wheel.schedule(0, 4_095); // from its head, one tick before it comes due
    assert!(wheel.cancel(3));
    wheel.schedule(3, 4_000); // cancelled, then earlier than its list
    for (key, deadline) in [(1, 100), (0, 4_095), (3, 4_000), (2, 5_001)] {
        assert_eq!(
            wheel.nodes[key].list(),
            wheel.timers.place(deadline),
            "key {key}"
        );
    }
    assert_eq!(wheel.next_expiry(), Some(64));
    fires(&mut wheel, &[(99, &[]), (100, &[1]), (4_000, &[3])]);
    fires(&mut wheel, &[(4_095, &[0]), (5_000, &[]), (5_001, &[2])]);
    assert!(wheel.is_empty() && wheel.next_expiry().is_none());
}

#[test]
fn cancelling_every_key_fires_nothing() {
    const KEYS: u32 = 20_000;
    let (mut rng, start) = (Rng(0x0123_4567_89ab_cdef), 77_777);
    let mut wheel = Wheel::new(KEYS as usize, start);
    for key in 0..KEYS {
        wheel.schedule(key, start + rng.next() % (1 << (rng.next() % 38)));
    }
    assert!((0..KEYS).all(|key| wheel.cancel(key)));
    assert!(wheel.is_empty() && wheel.next_expiry().is_none());
    let (soon, end) = (start + (1 << 20), start + MAX_DELAY);
    fires(&mut wheel, &[(soon, &[]), (end, &[])]);
    assert!(wheel.timers.heads.iter().all(|&head| head == NIL));
    assert_eq!(wheel.timers.occupied, [0; LEVELS]);
    assert!(wheel.nodes.iter().all(|node| node.state == IDLE));
    assert!(wheel.is_empty() && wheel.next_expiry().is_none());
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
        2 => (0..CAP).prop_map(Op::Cancel),
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
                // A cancelled or postponed node may hold an earlier slot, on any level; with
                // none, a due or level-0 deadline is the first occupied list's first tick.
                if settled(&wheel) && earliest ^ now < 64 {
                    prop_assert_eq!(next, earliest);
                }
            }
        }
    }
}

/// A wheel writes its nodes as keys are first scheduled, never ahead: one sized for
/// millions of keys touches no page at start-up, and keys never scheduled read as idle.
#[test]
fn writes_nodes_only_up_to_the_highest_key_scheduled() {
    let mut wheel = Wheel::new(4_000_000, 0);
    assert_eq!((wheel.capacity(), wheel.nodes.len()), (4_000_000, 0));
    assert!(!wheel.cancel(3_999_999));
    assert_eq!(wheel.deadline(7), None);
    wheel.schedule(5, 10);
    assert_eq!(wheel.nodes.len(), 6);
    wheel.schedule(2, 3);
    assert_eq!(wheel.nodes.len(), 6);
    assert!(!wheel.cancel(9), "never scheduled");
    wheel.schedule(3_999_999, 20);
    assert_eq!(wheel.nodes.len(), 4_000_000);
    wheel.schedule(4_000_000, 1);
    assert_eq!(wheel.len(), 3, "a key out of range is ignored");
    check(&wheel);
    let mut out = Vec::new();
    wheel.expire(20, &mut out);
    assert_eq!(out, [2, 5, 3_999_999]);
}
