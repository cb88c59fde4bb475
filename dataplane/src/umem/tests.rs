//! The frame book and memory views, on anonymous memory: no kernel rings involved.

use super::*;

fn memory(count: u32) -> (Memory, Book) {
    Memory::new(count, 2048, HugePages::Off).expect("anonymous memory")
}

fn assert_conserved(book: &Book) {
    let sum: u32 = [Place::Free, Place::Held, Place::Fill, Place::Tx]
        .iter()
        .map(|&p| book.count(p))
        .sum();
    assert_eq!(sum, book.total(), "every frame is in exactly one place");
    assert_eq!(book.free.len() as u32, book.count(Place::Free));
}

#[test]
fn a_frame_travels_the_whole_cycle() {
    let (mem, mut book) = memory(4);
    let frame = book.alloc().unwrap();
    let addr = book.give_fill(frame);
    assert_eq!(book.count(Place::Fill), 1);
    // Copy mode: the kernel puts the data after its 256-byte headroom.
    let rx = book.take_rx(addr + 256, 60).unwrap();
    assert_eq!(rx.desc(), (addr + 256, 60));
    assert_eq!(mem.bytes(&rx).len(), 60);
    let mut tx = rx;
    mem.bytes_mut(&mut tx, 100).fill(0xab);
    assert_eq!(mem.bytes(&tx), &[0xab; 100][..]);
    let (taddr, tlen) = book.give_tx(tx);
    assert_eq!((taddr, tlen), (addr, 100));
    let done = book.take_completion(taddr).unwrap();
    book.free(done);
    assert_eq!(book.count(Place::Free), 4);
    assert_conserved(&book);
}

#[test]
fn bad_addresses_are_refused_and_change_nothing() {
    let (_mem, mut book) = memory(4);
    let frame = book.alloc().unwrap();
    let addr = book.give_fill(frame);
    assert_eq!(book.take_rx(4 * 2048, 10), Err(BadAddr::OutOfRange));
    assert_eq!(book.take_rx(addr + 2000, 100), Err(BadAddr::OutOfRange));
    assert_eq!(
        book.take_rx(2048, 10),
        Err(BadAddr::WrongPlace(Place::Free))
    );
    assert_eq!(
        book.take_completion(addr),
        Err(BadAddr::WrongPlace(Place::Fill)),
        "a fill frame is not a tx completion"
    );
    let rx = book.take_rx(addr, 10).unwrap();
    assert_eq!(
        book.take_rx(addr, 10),
        Err(BadAddr::WrongPlace(Place::Held)),
        "a duplicate descriptor does not hand the frame out twice"
    );
    book.free(rx);
    assert_conserved(&book);
}

#[test]
fn the_pool_runs_dry_without_panicking() {
    let (_mem, mut book) = memory(2);
    let a = book.alloc().unwrap();
    let b = book.alloc().unwrap();
    assert!(book.alloc().is_none());
    book.free(a);
    book.free(b);
    assert_eq!(book.count(Place::Free), 2);
}

#[test]
fn closing_the_socket_returns_the_kernels_frames() {
    let (_mem, mut book) = memory(8);
    for _ in 0..3 {
        let f = book.alloc().unwrap();
        book.give_fill(f);
    }
    for _ in 0..2 {
        let f = book.alloc().unwrap();
        book.give_tx(f);
    }
    assert_eq!(book.reclaim_after_close(), (3, 2));
    assert_eq!(book.count(Place::Free), 8);
    assert_conserved(&book);
}

#[test]
fn random_operations_conserve_frames() {
    // A small deterministic walk (xorshift) over every transition.
    let (_mem, mut book) = memory(16);
    let mut held = Vec::new();
    let mut fill = Vec::new();
    let mut tx = Vec::new();
    let mut x = 0x2545_f491_4f6c_dd1du64;
    for _ in 0..10_000 {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        match x % 6 {
            0 => held.extend(book.alloc()),
            1 if !held.is_empty() => fill.push(book.give_fill(held.swap_remove(0))),
            2 if !fill.is_empty() => held.push(book.take_rx(fill.swap_remove(0), 64).unwrap()),
            3 if !held.is_empty() => tx.push(book.give_tx(held.swap_remove(0)).0),
            4 if !tx.is_empty() => held.push(book.take_completion(tx.swap_remove(0)).unwrap()),
            5 if !held.is_empty() => book.free(held.swap_remove(0)),
            _ => {}
        }
        assert_conserved(&book);
    }
}
