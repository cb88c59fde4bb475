//! Criterion benchmarks of the stack's hot structures and of the per-segment path:
//! `cargo bench -p c10m-stack --bench stack`.

use std::hint::black_box;
use std::net::{Ipv4Addr, SocketAddrV4};

use c10m_stack::bench_support::{BufferPool, Table};
use c10m_stack::wire::{Impairments, Pair, Side};
use c10m_stack::{
    ConnId, ConnectOptions, Event, FourTuple, HugePages, ListenOptions, SocketOptions, addr_v4,
};
use criterion::{BatchSize, Criterion, Throughput, criterion_group, criterion_main};

fn tuple(n: u32) -> FourTuple {
    FourTuple {
        remote_addr: addr_v4(Ipv4Addr::from(0xc613_0000 | (n >> 15))),
        local_addr: addr_v4(Ipv4Addr::new(198, 18, 0, 10)),
        remote_port: 32768 + (n & 0x7fff) as u16,
        local_port: 80,
    }
}

fn demux(c: &mut Criterion) {
    const N: u32 = 1_000_000;
    let keys: Vec<FourTuple> = (0..N).map(tuple).collect();
    let mut table = Table::new(N as usize, (7, 9), HugePages::Auto).unwrap();
    for (slot, key) in keys.iter().enumerate() {
        assert!(table.insert(key, slot as u32));
    }
    let mut g = c.benchmark_group("demux");
    g.throughput(Throughput::Elements(1));
    let mut i = 0u32;
    g.bench_function("find_hit/1M", |b| {
        b.iter(|| {
            i = i.wrapping_mul(1_664_525).wrapping_add(1_013_904_223) % N;
            black_box(table.find(&keys[i as usize], |s| keys[s as usize]))
        })
    });
    g.bench_function("find_miss/1M", |b| {
        let stranger = tuple(N + 5);
        b.iter(|| black_box(table.find(black_box(&stranger), |s| keys[s as usize])))
    });
    g.bench_function("remove_insert/1M", |b| {
        b.iter(|| {
            i = i.wrapping_mul(1_664_525).wrapping_add(1_013_904_223) % N;
            let k = keys[i as usize];
            let slot = table.remove(&k, |s| keys[s as usize]).unwrap();
            table.insert(&k, slot);
        })
    });
    g.finish();
}

fn pools(c: &mut Criterion) {
    let mut pool = BufferPool::new(512, 1 << 20, HugePages::Auto).unwrap();
    // Touch every chunk first, so that the timed loop measures the pool, not page faults.
    let all: Vec<u32> = (0..(1 << 20))
        .map(|_| {
            // SAFETY: the slice is dropped at once, before the pool and before a release.
            let (idx, bytes) = unsafe { pool.take() }.unwrap();
            bytes[0] = 1;
            idx
        })
        .collect();
    for &idx in &all[1 << 19..] {
        // SAFETY: the slices `take` returned were dropped; each index is released once.
        unsafe { pool.release(idx) };
    }
    let mut held = all[..1 << 19].to_vec();
    let mut g = c.benchmark_group("pool");
    g.throughput(Throughput::Elements(1));
    let mut i = 0usize;
    g.bench_function("release_take/512B", |b| {
        b.iter(|| {
            i = (i + 7919) % held.len();
            // SAFETY: the slices `take` returned were dropped right away; each index is
            // released once and taken again at once.
            unsafe { pool.release(held[i]) };
            // SAFETY: as above: only the index is kept.
            held[i] = unsafe { pool.take() }.unwrap().0;
        })
    });
    g.finish();
}

/// Request/response exchanges on the in-memory wire with `n` connections: every
/// exchange is three segments (request, response, ACK) through both stacks.
fn segments(c: &mut Criterion) {
    let mut g = c.benchmark_group("segment");
    for n in [1_000usize, 100_000] {
        let (mut pair, conns) = established(n);
        const BATCH: usize = 256;
        g.throughput(Throughput::Elements(3 * BATCH as u64));
        let mut rng = 0x9e37_79b9_7f4a_7c15u64;
        g.bench_function(format!("exchange_x256/{n}"), |b| {
            b.iter_batched(
                || {
                    (0..BATCH)
                        .map(|_| {
                            rng ^= rng << 13;
                            rng ^= rng >> 7;
                            rng ^= rng << 17;
                            conns[(rng % n as u64) as usize]
                        })
                        .collect::<Vec<_>>()
                },
                |ids| exchange(&mut pair, &ids),
                BatchSize::SmallInput,
            )
        });
    }
    g.finish();
}

fn established(n: usize) -> (Pair, Vec<ConnId>) {
    let mut pair = Pair::new(
        &Pair::client_config(n),
        &Pair::server_config(n),
        Impairments::none(),
    );
    let socket = SocketOptions {
        rx_buf: 256,
        tx_buf: 256,
        ..SocketOptions::default()
    };
    pair.b
        .listen(
            80,
            ListenOptions {
                socket,
                backlog: u32::MAX,
                ..ListenOptions::default()
            },
        )
        .unwrap();
    let to = SocketAddrV4::new(Pair::SERVER, 80);
    let conns: Vec<ConnId> = (0..n)
        .map(|i| {
            let opts = ConnectOptions {
                socket,
                local_addr: Some(std::net::Ipv4Addr::from(0xc613_0000 + (i / 25_000) as u32)),
                local_port: Some(30_000 + (i % 25_000) as u16),
            };
            pair.a.connect(to, opts).unwrap()
        })
        .collect();
    let mut up = 0;
    pair.run_until(600_000, |side, s| {
        while let Some(ev) = s.next_event() {
            match ev {
                Event::Connected(_) => up += 1,
                Event::Acceptable(l) => while s.accept(l).is_some() {},
                _ => {}
            }
        }
        side == Side::B && up == n
    });
    assert_eq!(up, n);
    (pair, conns)
}

fn exchange(pair: &mut Pair, ids: &[ConnId]) {
    pair.a.prefetch(ids);
    for &c in ids {
        pair.a.send(c, b"0123456789abcdef0123456789abcdef").unwrap();
    }
    let mut left = ids.len();
    let mut buf = [0u8; 64];
    while left > 0 {
        pair.step(&mut |side, s| {
            while let Some(ev) = s.next_event() {
                if let Event::Readable(c) = ev {
                    while let Ok(n @ 1..) = s.recv(c, &mut buf) {
                        match side {
                            Side::B => {
                                s.send(c, &buf[..n]).unwrap();
                            }
                            Side::A => left -= n / 32,
                        }
                    }
                }
            }
        });
        pair.advance();
    }
}

criterion_group!(benches, demux, pools, segments);
criterion_main!(benches);
