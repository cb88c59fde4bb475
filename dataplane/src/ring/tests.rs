//! The ring against a model, under stress, and under every interleaving of its index
//! logic (a small deterministic scheduler in the style of CHESS/loom: every access to
//! an index or a slot is a scheduling point; runs are replayed depth-first until every
//! schedule was tried). The scheduler explores sequentially consistent executions: it
//! checks the index protocol (no lost, duplicated, reordered or torn message, full and
//! empty detected at every wrap), not weak-memory reorderings, which the Acquire/Release
//! pairs in `push`/`pop` are documented to cover.

use std::cell::RefCell;
use std::collections::VecDeque;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Condvar, Mutex};

use super::*;

/// xorshift64*: fixed seeds, no dependency.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }
}

#[test]
fn capacity_is_a_power_of_two_and_full_is_an_error() {
    let (mut p, mut c) = new::<u32>(3);
    assert_eq!(p.capacity(), 4);
    for i in 0..4 {
        p.push(i).unwrap();
    }
    assert_eq!(p.push(9), Err(9), "full ring gives the message back");
    assert_eq!((p.len(), c.len()), (4, 4));
    assert_eq!(c.pop(), Some(0));
    p.push(4).unwrap();
    assert_eq!(
        (1..=4).map(|_| c.pop().unwrap()).collect::<Vec<_>>(),
        [1, 2, 3, 4]
    );
    assert_eq!(c.pop(), None);
}

#[test]
fn undelivered_messages_are_dropped_with_the_ring() {
    let token = Arc::new(());
    let (mut p, mut c) = new(8);
    for _ in 0..5 {
        p.push(token.clone()).unwrap();
    }
    drop(c.pop());
    drop((p, c));
    assert_eq!(Arc::strong_count(&token), 1);
}

#[test]
fn matches_a_vecdeque_model() {
    for seed in 1..=20u64 {
        let mut rng = Rng(seed.wrapping_mul(0x9e37_79b9_7f4a_7c15));
        let capacity = 1 << (rng.next() % 5);
        // Half the runs start just below the wrap of the indices.
        let start = if seed % 2 == 0 { usize::MAX - 40 } else { 0 };
        let (mut p, mut c) = with_start::<u64, AtomicUsize>(capacity, start);
        let mut model = VecDeque::new();
        let mut next = 0u64;
        for _ in 0..20_000 {
            // Bias toward pushes or pops in phases, to reach both full and empty.
            let push_bias = if (rng.next() >> 40) % 1000 < 500 {
                3
            } else {
                1
            };
            if rng.next() % 4 < push_bias {
                let r = p.push(next);
                if model.len() < capacity {
                    assert_eq!(r, Ok(()));
                    model.push_back(next);
                } else {
                    assert_eq!(r, Err(next));
                }
                next += 1;
            } else {
                assert_eq!(c.pop(), model.pop_front(), "seed {seed}");
            }
            assert_eq!(p.len(), model.len());
            assert_eq!(c.len(), model.len());
        }
    }
}

#[test]
fn two_threads_keep_order_and_lose_nothing() {
    // Release builds (CI) move 10^8 messages; debug builds fewer.
    let total: u64 = if cfg!(debug_assertions) {
        2_000_000
    } else {
        100_000_000
    };
    let (mut p, mut c) = new::<u64>(1024);
    let started = std::time::Instant::now();
    let producer = std::thread::spawn(move || {
        let mut full = 0u64;
        for i in 0..total {
            let mut msg = i;
            while let Err(m) = p.push(msg) {
                msg = m;
                full += 1;
                if full.is_multiple_of(64) {
                    std::thread::yield_now();
                }
            }
        }
        full
    });
    let mut expect = 0u64;
    let mut empty = 0u64;
    while expect < total {
        match c.pop() {
            Some(v) => {
                assert_eq!(v, expect, "out of order or lost");
                expect += 1;
            }
            None => {
                empty += 1;
                if empty.is_multiple_of(64) {
                    std::thread::yield_now();
                }
            }
        }
    }
    let full = producer.join().unwrap();
    assert_eq!(c.pop(), None, "nothing extra");
    eprintln!(
        "{total} messages in {:?} ({full} full, {empty} empty polls)",
        started.elapsed()
    );
}

/// The deterministic scheduler: two threads, one runs at a time, and at every scheduling
/// point the next runner is taken from a recorded path (replay) or is the first choice
/// (extension). `path` holds `(choice, options)` for each point where both could run.
struct Sched {
    state: Mutex<State>,
    turn: Condvar,
}

struct State {
    running: usize,
    done: [bool; 2],
    path: Vec<(usize, usize)>,
    pos: usize,
}

thread_local! {
    static CURRENT: RefCell<Option<(Arc<Sched>, usize)>> = const { RefCell::new(None) };
}

impl Sched {
    fn pick(st: &mut State) -> Option<usize> {
        let runnable: Vec<usize> = (0..2).filter(|&t| !st.done[t]).collect();
        match runnable.len() {
            0 => None,
            1 => Some(runnable[0]),
            n => {
                if st.pos == st.path.len() {
                    st.path.push((0, n));
                }
                let choice = st.path[st.pos].0;
                st.pos += 1;
                Some(runnable[choice])
            }
        }
    }

    fn wait_turn(&self, mut st: std::sync::MutexGuard<'_, State>, me: usize) {
        while st.running != me {
            st = self.turn.wait(st).unwrap();
        }
    }

    fn switch(&self, me: usize) {
        let mut st = self.state.lock().unwrap();
        st.running = Sched::pick(&mut st).unwrap();
        self.turn.notify_all();
        self.wait_turn(st, me);
    }

    fn finish(&self, me: usize) {
        let mut st = self.state.lock().unwrap();
        st.done[me] = true;
        if let Some(next) = Sched::pick(&mut st) {
            st.running = next;
        }
        self.turn.notify_all();
    }
}

fn schedule_point() {
    CURRENT.with(|c| {
        if let Some((sched, me)) = &*c.borrow() {
            sched.switch(*me);
        }
    });
}

/// An index cell whose every access is a scheduling point.
struct Traced(AtomicUsize);

impl Index for Traced {
    fn new(v: usize) -> Self {
        Traced(AtomicUsize::new(v))
    }
    fn load(&self, order: Ordering) -> usize {
        schedule_point();
        self.0.load(order)
    }
    fn store(&self, v: usize, order: Ordering) {
        schedule_point();
        self.0.store(v, order)
    }
    fn slot_access() {
        schedule_point();
    }
}

/// One schedule: a producer making `attempts` pushes of 0, 1, … (retrying a value the
/// ring refused) and a consumer making `attempts` pops; then the rest is drained.
fn run_once(capacity: usize, start: usize, attempts: usize, path: &mut Vec<(usize, usize)>) {
    let (mut p, mut c) = with_start::<Box<usize>, Traced>(capacity, start);
    let mut st = State {
        running: 0,
        done: [false; 2],
        path: std::mem::take(path),
        pos: 0,
    };
    st.running = Sched::pick(&mut st).unwrap();
    let sched = Arc::new(Sched {
        state: Mutex::new(st),
        turn: Condvar::new(),
    });
    let enter = |me: usize, sched: &Arc<Sched>| {
        CURRENT.with(|c| *c.borrow_mut() = Some((sched.clone(), me)));
        sched.wait_turn(sched.state.lock().unwrap(), me);
    };
    let (pushed, popped, c) = std::thread::scope(|s| {
        let producer = s.spawn(|| {
            enter(0, &sched);
            let mut next = 0;
            for _ in 0..attempts {
                if p.push(Box::new(next)).is_ok() {
                    next += 1;
                }
            }
            drop(p);
            sched.finish(0);
            next
        });
        let consumer = s.spawn(|| {
            enter(1, &sched);
            let mut got = Vec::new();
            for _ in 0..attempts {
                if let Some(v) = c.pop() {
                    got.push(*v);
                }
            }
            sched.finish(1);
            (got, c)
        });
        let pushed = producer.join().unwrap();
        let (popped, c) = consumer.join().unwrap();
        (pushed, popped, c)
    });
    let mut all = popped;
    let mut c = c;
    while let Some(v) = c.pop() {
        all.push(*v);
    }
    assert_eq!(
        all,
        (0..pushed).collect::<Vec<_>>(),
        "path {:?}",
        sched.state.lock().unwrap().path
    );
    assert!(
        pushed >= attempts.min(capacity),
        "a push was refused with room free"
    );
    *path = std::mem::take(&mut sched.state.lock().unwrap().path);
}

/// Explores every schedule; returns how many there were.
fn explore(capacity: usize, start: usize, attempts: usize) -> usize {
    let mut path = Vec::new();
    let mut runs = 0;
    loop {
        run_once(capacity, start, attempts, &mut path);
        runs += 1;
        while let Some(&(choice, options)) = path.last() {
            if choice + 1 < options {
                path.last_mut().unwrap().0 += 1;
                break;
            }
            path.pop();
        }
        if path.is_empty() {
            return runs;
        }
    }
}

#[test]
fn every_interleaving_of_the_index_logic() {
    for (capacity, start, attempts) in [
        (1, 0, 3),
        (2, 0, 3),
        (1, usize::MAX - 1, 3),
        (2, usize::MAX, 3),
    ] {
        let runs = explore(capacity, start, attempts);
        eprintln!("capacity {capacity}, start {start}: {runs} schedules");
        assert!(runs > 100, "the scheduler explored too little: {runs}");
    }
}
