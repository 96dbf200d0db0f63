//! No setting, at any value, panics, aborts, kills a guard thread or makes a
//! call hang: a consumer runs the whole path (commit, revoke, shutdown, and a
//! drop without shutdown) with every duration at `Duration::MAX` and every
//! count at its maximum, then with every duration at its smallest accepted
//! value and every count at 1.

mod common;

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use common::{Fixture, recv_n, unique, wait_until};
use offset_guard::{GuardBuilder, MAX_PREFETCH_BATCHES, MemorySink, RetryPolicy};

fn at_max(b: GuardBuilder) -> GuardBuilder {
    b.retry(
        RetryPolicy::exponential()
            .initial_interval(Duration::MAX)
            .max_interval(Duration::MAX)
            .max_elapsed(Duration::MAX)
            .max_attempts(u32::MAX),
    )
    .commit_interval(Duration::MAX)
    .recommit_idle_every(Duration::MAX)
    .shutdown_timeout(Duration::MAX)
    .revoke_timeout(Duration::MAX)
    .revoke_grace(Duration::MAX)
    .brokers_unreachable_after(Duration::MAX)
    .commit_every(u64::MAX)
    .batch_size(usize::MAX)
    .prefetch_batches(MAX_PREFETCH_BATCHES)
}

fn at_min(b: GuardBuilder) -> GuardBuilder {
    let tiny = Duration::from_nanos(1);
    b.retry(
        RetryPolicy::exponential()
            .initial_interval(tiny)
            .max_interval(tiny)
            .max_elapsed(tiny)
            .max_attempts(1),
    )
    .commit_interval(Duration::from_millis(1))
    .recommit_idle_every(Duration::from_millis(1))
    .shutdown_timeout(tiny)
    .revoke_timeout(tiny)
    .revoke_grace(Duration::ZERO)
    .brokers_unreachable_after(tiny)
    .commit_every(1)
    .batch_size(1)
    .prefetch_batches(1)
}

/// Commit, revoke (unsubscribe), shutdown; then a second consumer dropped
/// without shutdown. Returns the group's committed offsets at the end.
async fn run(settings: fn(GuardBuilder) -> GuardBuilder, name: &str) -> Vec<Option<i64>> {
    let fx = Fixture::mock();
    let (topic, group) = (unique(name), unique(name));
    fx.create_topic(&topic, 2);
    fx.produce(&topic, 2, 10, 0);
    let revokes = Arc::new(AtomicUsize::new(0));
    let r = revokes.clone();
    let sink = MemorySink::new();
    let mut c = settings(fx.guard(&group))
        .failure_sink(sink.clone())
        .on_revoke(move |_| {
            r.fetch_add(1, Ordering::SeqCst);
        })
        .build()
        .unwrap_or_else(|e| panic!("{name}: build: {e}"));
    c.subscribe(&[&topic]).unwrap();
    let records = recv_n(&mut c, 20, Duration::from_secs(30)).await;
    for r in &records {
        r.ack_token().ack();
    }
    // With the shortest periods the commits may all have landed already
    // (commit_now then has nothing to send): read the broker.
    c.commit_now().await.expect("commit_now");
    assert_eq!(
        fx.committed(&group, &topic, 2),
        vec![Some(10); 2],
        "{name}: committed after commit_now"
    );
    c.unsubscribe();
    wait_until(Duration::from_secs(30), "the revoke", || {
        revokes.load(Ordering::SeqCst) >= 1
    });
    let report = c.shutdown().await.expect("shutdown");
    for f in &report.not_committed {
        assert!(f.offset <= 10, "{name}: {f:?}");
    }
    // A second consumer of the group, dropped without shutdown.
    fx.produce(&topic, 2, 5, 10);
    let mut d = settings(fx.guard(&group)).build().unwrap();
    d.subscribe(&[&topic]).unwrap();
    let more = recv_n(&mut d, 10, Duration::from_secs(30)).await;
    assert!(
        more.iter().all(|r| r.offset() >= 10),
        "{name}: resumed at the commit"
    );
    for r in &more {
        r.ack_token().ack();
    }
    drop(d);
    fx.committed(&group, &topic, 2)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_duration_at_max_and_every_count_at_its_maximum() {
    let end = tokio::time::timeout(Duration::from_secs(120), run(at_max, "max"))
        .await
        .expect("no call hangs");
    // The dropped consumer's background final commit has no deadline and lands.
    assert!(end.iter().all(|o| o.is_some_and(|o| o >= 10)), "{end:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_duration_at_its_minimum_and_every_count_at_one() {
    let end = tokio::time::timeout(Duration::from_secs(120), run(at_min, "min"))
        .await
        .expect("no call hangs");
    assert!(end.iter().all(|o| o.is_some_and(|o| o >= 10)), "{end:?}");
}
