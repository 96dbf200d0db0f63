//! Hot-path benchmarks: acks (pure tracker and the real `AckToken::ack` path)
//! and coalescing acks into commits. Run: `cargo bench --bench ack`.

use std::hint::black_box;
use std::time::{Duration, Instant};

use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use offset_guard::bench_support::{AckBench, PartitionTracker};

/// Offsets `0..n` in an order that is random within consecutive windows of `w`.
fn windowed_shuffle(n: usize, w: usize, seed: u64) -> Vec<usize> {
    let mut rng = fastrand::Rng::with_seed(seed);
    let mut v: Vec<usize> = (0..n).collect();
    for chunk in v.chunks_mut(w) {
        rng.shuffle(chunk);
    }
    v
}

/// `n` acks spread round-robin over `parts` partitions: (partition, offset) pairs.
fn round_robin(n: usize, parts: usize) -> Vec<(usize, i64)> {
    (0..n).map(|i| (i % parts, (i / parts) as i64)).collect()
}

fn tracker(c: &mut Criterion) {
    let mut g = c.benchmark_group("tracker");
    g.throughput(Throughput::Elements(1));
    g.bench_function("ack_in_order", |b| {
        b.iter_custom(|iters| {
            let mut t = PartitionTracker::new();
            for o in 0..iters as i64 {
                t.deliver(o);
            }
            let start = Instant::now();
            for o in 0..iters as i64 {
                black_box(t.ack(black_box(o)));
            }
            let e = start.elapsed();
            assert_eq!(t.commit_point(), Some(iters as i64));
            e
        })
    });
    g.bench_function("ack_out_of_order_window_1000", |b| {
        b.iter_custom(|iters| {
            let n = iters as usize;
            let order = windowed_shuffle(n, 1000, n as u64);
            let mut t = PartitionTracker::new();
            for o in 0..n as i64 {
                t.deliver(o);
            }
            let start = Instant::now();
            for &o in &order {
                black_box(t.ack(black_box(o as i64)));
            }
            let e = start.elapsed();
            assert_eq!(t.commit_point(), Some(n as i64));
            e
        })
    });
    for parts in [1usize, 10, 100, 1000] {
        g.bench_with_input(
            BenchmarkId::new("ack_round_robin_partitions", parts),
            &parts,
            |b, &parts| {
                b.iter_custom(|iters| {
                    let acks = round_robin(iters as usize, parts);
                    let mut ts: Vec<PartitionTracker> =
                        (0..parts).map(|_| PartitionTracker::new()).collect();
                    for &(p, o) in &acks {
                        ts[p].deliver(o);
                    }
                    let start = Instant::now();
                    for &(p, o) in &acks {
                        black_box(ts[p].ack(black_box(o)));
                    }
                    start.elapsed()
                })
            },
        );
    }
    g.finish();
}

fn token(c: &mut Criterion) {
    let mut g = c.benchmark_group("token");
    g.throughput(Throughput::Elements(1));
    g.bench_function("ack_in_order", |b| {
        b.iter_custom(|iters| {
            let mut bench = AckBench::new(1, None);
            let tokens = bench.deliver(0, iters as usize);
            let start = Instant::now();
            for t in tokens {
                black_box(t.ack());
            }
            let e = start.elapsed();
            assert_eq!(bench.commit_point(0), Some(iters as i64));
            e
        })
    });
    g.bench_function("ack_out_of_order_window_1000", |b| {
        b.iter_custom(|iters| {
            let n = iters as usize;
            let mut bench = AckBench::new(1, None);
            let mut tokens: Vec<Option<_>> = bench.deliver(0, n).into_iter().map(Some).collect();
            let shuffled: Vec<_> = windowed_shuffle(n, 1000, n as u64)
                .into_iter()
                .map(|i| tokens[i].take().unwrap())
                .collect();
            drop(tokens);
            let start = Instant::now();
            for t in shuffled {
                black_box(t.ack());
            }
            let e = start.elapsed();
            assert_eq!(bench.commit_point(0), Some(n as i64));
            e
        })
    });
    for parts in [1usize, 10, 100, 1000] {
        g.bench_with_input(
            BenchmarkId::new("ack_round_robin_partitions", parts),
            &parts,
            |b, &parts| {
                b.iter_custom(|iters| {
                    let n = iters as usize;
                    let mut bench = AckBench::new(parts, None);
                    let per = n.div_ceil(parts);
                    let mut per_part: Vec<std::vec::IntoIter<_>> = (0..parts)
                        .map(|p| bench.deliver(p, per).into_iter())
                        .collect();
                    // interleave: one ack per partition in turn
                    let tokens: Vec<_> = (0..n)
                        .map(|i| per_part[i % parts].next().unwrap())
                        .collect();
                    drop(per_part);
                    let start = Instant::now();
                    for t in tokens {
                        black_box(t.ack());
                    }
                    start.elapsed()
                })
            },
        );
    }
    g.finish();
}

/// 1M acks through the real token path, with the commit worker's real commit
/// cycle run every 1,000 acks (as `commit_every(1000)` asks for), against a
/// committer that sends nothing: 1,000 commits.
fn coalesce(c: &mut Criterion) {
    const N: usize = 1_000_000;
    const EVERY: usize = 1_000;
    let mut g = c.benchmark_group("coalesce");
    g.throughput(Throughput::Elements(N as u64));
    g.sample_size(10);
    g.measurement_time(Duration::from_secs(5));
    for parts in [1usize, 8] {
        g.bench_with_input(
            BenchmarkId::new("1M_acks_commit_every_1000", parts),
            &parts,
            |b, &parts| {
                b.iter_custom(|iters| {
                    let mut total = Duration::ZERO;
                    for _ in 0..iters {
                        let mut bench = AckBench::new(parts, Some(EVERY as u64));
                        let per = N / parts;
                        let mut per_part: Vec<std::vec::IntoIter<_>> = (0..parts)
                            .map(|p| bench.deliver(p, per).into_iter())
                            .collect();
                        let tokens: Vec<_> = (0..N)
                            .map(|i| per_part[i % parts].next().unwrap())
                            .collect();
                        drop(per_part);
                        let start = Instant::now();
                        let mut committed = 0;
                        for (i, t) in tokens.into_iter().enumerate() {
                            t.ack();
                            if (i + 1) % EVERY == 0 {
                                committed += bench.commit_cycle();
                            }
                        }
                        total += start.elapsed();
                        assert_eq!(committed, (N / EVERY) * parts);
                        assert_eq!(bench.stats().commits_sent, (N / EVERY) as u64);
                    }
                    total
                })
            },
        );
    }
    g.finish();
}

criterion_group! {
    name = benches;
    config = Criterion::default()
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(3));
    targets = tracker, token, coalesce
}
criterion_main!(benches);
