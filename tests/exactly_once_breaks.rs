//! Breaks found by a review of issue 16's follow-up (exactly-once into a database):
//! the PostgreSQL mark function and `mark_tokens` against the SQLite store
//! and the docs, concurrency, migrate. PostgreSQL is the server of
//! `OFFSET_GUARD_POSTGRES` (without it the PostgreSQL tests print "skipped").

mod common;
#[path = "common/logdb.rs"]
mod logdb;
#[path = "common/logs.rs"]
mod logs;
#[path = "common/pg.rs"]
mod pg;
#[path = "common/tempdir.rs"]
mod tempdir;

use std::time::Duration;

use common::{Fixture, exactly_once, unique};
use offset_guard::failure_log::{FailedOffsetLog, LogLocation};
use offset_guard::progress::{ProgressError, postgres, sqlite};
use offset_guard::{AckToken, GuardContext, GuardHandle};
use rdkafka::consumer::StreamConsumer;
use tokio_postgres::Client;

/// (watermark, done offsets) of a partition.
type Stored = (Option<i64>, Vec<i64>);

async fn pg_stored(
    c: &impl tokio_postgres::GenericClient,
    group: &str,
    topic: &str,
    p: i32,
) -> Stored {
    let pr = postgres::load(c, group, topic, p).await.unwrap();
    (pr.watermark(), pr.done_above().collect())
}

fn sqlite_stored(c: &rusqlite::Connection, group: &str, topic: &str, p: i32) -> Stored {
    let pr = sqlite::load(c, group, topic, p).unwrap();
    (pr.watermark(), pr.done_above().collect())
}

/// `n` tokens per partition of a fresh topic of `partitions` partitions,
/// from a real own-loop consumer, sorted by (partition, offset).
async fn tokens(
    fx: &Fixture,
    db: &pg::Db,
    partitions: i32,
    n: usize,
) -> (String, String, Vec<AckToken>, Holder) {
    let (topic, group) = (unique("r16c"), unique("g-r16c"));
    fx.create_topic(&topic, partitions);
    fx.produce(&topic, partitions, n, 0);
    let loader = db.loader();
    let (consumer, guard) = exactly_once::own_loop(
        exactly_once::builder(exactly_once::config(fx, &group), move |g, t, p| {
            loader.load(g, t, p)
        }),
        &topic,
    );
    let mut tokens = exactly_once::track_new(&consumer, &guard, n * partitions as usize).await;
    tokens.sort_by_key(|t| (t.partition(), t.offset()));
    (topic, group, tokens, Holder(Some((consumer, guard))))
}

/// The consumer and its guard, dropped on another thread at the end.
struct Holder(Option<(std::sync::Arc<StreamConsumer<GuardContext>>, GuardHandle)>);
impl Drop for Holder {
    fn drop(&mut self) {
        if let Some(v) = self.0.take() {
            common::drop_elsewhere(v, "consumer");
        }
    }
}

fn sqlite_db() -> rusqlite::Connection {
    let c = rusqlite::Connection::open_in_memory().unwrap();
    sqlite::migrate(&c).unwrap();
    c
}

/// `mark_tokens` documents, for both stores: "The tokens before [the one
/// that fails] are marked in your transaction and the ones after it are
/// not". SQLite does that (it is `mark_token` in a loop). PostgreSQL's
/// function returns early on the refusal, before it writes the watermarks
/// it kept: tokens before the failing one whose marks folded the watermark
/// are not marked in the transaction (their done rows, if any, are).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mark_tokens_error_leaves_the_earlier_tokens_marked_in_both_stores() {
    let Some(db) = pg::db("r16c_partial").await else {
        return;
    };
    let fx = Fixture::any();
    let mut c = db.open().await;
    let (topic, group, t, _consumer) = tokens(&fx, &db, 1, 4).await;
    // t0, t1 fold the watermark to 2; t3 is a done row; then t0 again.
    let batch = vec![t[0].clone(), t[1].clone(), t[3].clone(), t[0].clone()];

    let s = sqlite_db();
    let stx = s.unchecked_transaction().unwrap();
    let e = sqlite::mark_tokens(&stx, &group, &batch).unwrap_err();
    assert!(
        matches!(e, ProgressError::AlreadyDone { offset: 0, .. }),
        "{e}"
    );
    let sqlite_state = sqlite_stored(&stx, &group, &topic, 0);
    assert_eq!(
        sqlite_state,
        (Some(2), vec![3]),
        "SQLite: t0, t1, t3 marked"
    );

    let tx = c.transaction().await.unwrap();
    let e = postgres::mark_tokens(&tx, &group, &batch)
        .await
        .unwrap_err();
    assert!(
        matches!(e, ProgressError::AlreadyDone { offset: 0, .. }),
        "{e}"
    );
    let pg_state = pg_stored(&tx, &group, &topic, 0).await;
    tx.rollback().await.unwrap();
    assert_eq!(
        pg_state, sqlite_state,
        "PostgreSQL after the same refused batch (docs: the tokens before it are marked)"
    );
}

/// Duplicates inside one batch, tokens of several partitions in one batch,
/// out of order: the batch gives the same stored state as the same tokens
/// one by one, in PostgreSQL and in SQLite.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_batch_equals_its_tokens_one_by_one_in_both_stores() {
    let Some(db) = pg::db("r16c_batch").await else {
        return;
    };
    let fx = Fixture::any();
    let mut c = db.open().await;
    let (topic, group, t, _consumer) = tokens(&fx, &db, 2, 5).await;
    // p0: 0..5 at t[0..5], p1: 0..5 at t[5..10].
    let order = [6, 2, 0, 8, 5, 1, 9, 3];
    let batch: Vec<AckToken> = order.iter().map(|&i| t[i].clone()).collect();
    let other = format!("{group}-one-by-one");

    let tx = c.transaction().await.unwrap();
    postgres::mark_tokens(&tx, &group, &batch).await.unwrap();
    for token in &batch {
        postgres::mark_token(&tx, &other, token).await.unwrap();
    }
    tx.commit().await.unwrap();
    let s = sqlite_db();
    let stx = s.unchecked_transaction().unwrap();
    sqlite::mark_tokens(&stx, &group, &batch).unwrap();
    stx.commit().unwrap();
    for p in 0..2 {
        let batched = pg_stored(&c, &group, &topic, p).await;
        assert_eq!(batched, pg_stored(&c, &other, &topic, p).await, "p{p}");
        assert_eq!(batched, sqlite_stored(&s, &group, &topic, p), "p{p}");
    }
    // A duplicate inside one batch, and one of a token marked before: both
    // refused naming the offset, in both stores.
    for dup in [
        vec![t[4].clone(), t[7].clone(), t[4].clone()],
        vec![t[4].clone(), t[9].clone()],
    ] {
        let tx = c.transaction().await.unwrap();
        let e = postgres::mark_tokens(&tx, &group, &dup).await.unwrap_err();
        tx.rollback().await.unwrap();
        let se = {
            let stx = s.unchecked_transaction().unwrap();
            sqlite::mark_tokens(&stx, &group, &dup).unwrap_err()
        };
        assert_eq!(format!("{e}"), format!("{se}"));
        assert!(e.is_already_done(), "{e}");
    }
    for p in 0..2 {
        assert_eq!(
            pg_stored(&c, &group, &topic, p).await,
            sqlite_stored(&s, &group, &topic, p),
            "rolled back: unchanged, p{p}"
        );
    }
}

async fn backend_pid(c: &Client) -> i32 {
    c.query_one("SELECT pg_backend_pid()", &[])
        .await
        .unwrap()
        .get(0)
}

async fn wait_for_lock_wait(observer: &Client, pid: i32) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        let row = observer
            .query_one(
                "SELECT COALESCE(wait_event_type, '') FROM pg_stat_activity WHERE pid = $1",
                &[&pid],
            )
            .await
            .unwrap();
        if row.get::<_, String>(0) == "Lock" {
            return;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "backend {pid} never waited for the lock"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// Two transactions marking batches of the same two partitions, given in
/// opposite orders: the second waits for the first (no deadlock), then
/// goes on; both batches are stored.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn batches_in_opposite_partition_orders_wait_instead_of_deadlocking() {
    let Some(db) = pg::db("r16c_order").await else {
        return;
    };
    let fx = Fixture::any();
    let mut a = db.open().await;
    let observer = db.connect().await;
    let (topic, group, t, _consumer) = tokens(&fx, &db, 2, 4).await;
    let first = vec![t[0].clone(), t[1].clone(), t[4].clone(), t[5].clone()];
    let second = vec![t[7].clone(), t[6].clone(), t[3].clone(), t[2].clone()];
    let ta = a.transaction().await.unwrap();
    postgres::mark_tokens(&ta, &group, &first).await.unwrap();
    let mut b = db.connect().await;
    let pid = backend_pid(&b).await;
    let g = group.clone();
    let run = tokio::spawn(async move {
        let tb = b.transaction().await.unwrap();
        postgres::mark_tokens(&tb, &g, &second).await?;
        tb.commit().await.unwrap();
        Ok::<_, ProgressError>(())
    });
    wait_for_lock_wait(&observer, pid).await;
    assert!(!run.is_finished());
    ta.commit().await.unwrap();
    tokio::time::timeout(Duration::from_secs(10), run)
        .await
        .expect("the second batch ends once the first committed")
        .unwrap()
        .unwrap();
    for p in 0..2 {
        assert_eq!(pg_stored(&a, &group, &topic, p).await, (Some(4), vec![]));
    }
}

/// `migrate` is "safe to call at every start, also from several processes
/// at once". A database whose default isolation level is REPEATABLE READ
/// (`default_transaction_isolation`, set by some shops for every session):
/// four connections migrating a fresh schema at once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_migrate_with_a_repeatable_read_default() {
    let Some(db) = pg::db("r16c_migrate_rr").await else {
        return;
    };
    let mut tasks = Vec::new();
    for _ in 0..4 {
        let db = db.clone();
        tasks.push(tokio::spawn(async move {
            let mut c = db.connect().await;
            c.batch_execute("SET default_transaction_isolation = 'repeatable read'")
                .await
                .unwrap();
            postgres::migrate(&mut c).await
        }));
    }
    let mut errors = Vec::new();
    for t in tasks {
        if let Err(e) = t.await.unwrap() {
            errors.push(e.to_string());
        }
    }
    assert!(errors.is_empty(), "{errors:?}");
    // Inside the user's own REPEATABLE READ transaction (a savepoint, the
    // level is the user's): after a query of the user's, on a migrated and
    // on a fresh schema.
    for fresh in [false, true] {
        let db = match fresh {
            false => db.clone(),
            true => pg::db("r16c_migrate_rr_fresh").await.unwrap(),
        };
        let mut c = db.connect().await;
        let mut tx = c
            .build_transaction()
            .isolation_level(tokio_postgres::IsolationLevel::RepeatableRead)
            .start()
            .await
            .unwrap();
        tx.query_one("SELECT 1", &[]).await.unwrap();
        postgres::migrate(&mut tx).await.unwrap();
        tx.commit().await.unwrap();
        postgres::check_schema(&c).await.unwrap();
    }
}

/// Applies `batch` in one transaction (each record's effect, then one
/// `mark_tokens`), following the docs on an error: roll back, ack the token
/// found done, process the others again. Returns the tokens found done.
async fn apply_batch(c: &mut Client, group: &str, mut batch: Vec<AckToken>) -> Vec<AckToken> {
    let mut found_done = Vec::new();
    loop {
        if batch.is_empty() {
            return found_done;
        }
        let tx = c.transaction().await.unwrap();
        for t in &batch {
            pg::effect(&tx, t.partition(), t.offset()).await;
        }
        match postgres::mark_tokens(&tx, group, &batch).await {
            Ok(()) => {
                tx.commit().await.unwrap();
                return found_done;
            }
            Err(ProgressError::AlreadyDone {
                partition, offset, ..
            }) => {
                tx.rollback().await.unwrap();
                let i = batch
                    .iter()
                    .position(|t| (t.partition(), t.offset()) == (partition, offset))
                    .expect("the refused token is in the batch");
                found_done.push(batch.remove(i));
            }
            Err(e) => panic!("{e}"),
        }
    }
}

/// The end-to-end guarantee with `mark_tokens` batches on PostgreSQL: run 1
/// applies batches of 7 (each in reverse order, across both partitions),
/// acks some, leaves some batches unapplied, then is killed (dropped); run
/// 2 resumes and applies the rest in batches of 5, one of them holding a
/// token applied before (refused, rolled back, the rest applied again, as
/// the docs say). Every record's effect exactly once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killed_and_restarted_with_mark_tokens_batches_zero_lost_zero_duplicates() {
    let Some(db) = pg::db("r16c_e2e").await else {
        return;
    };
    let fx = Fixture::any();
    let (topic, group) = (unique("r16c-e2e"), unique("g-r16c-e2e"));
    fx.create_topic(&topic, 2);
    fx.produce(&topic, 2, 40, 0);
    let mut c = db.open().await;
    let member = || {
        let loader = db.loader();
        exactly_once::own_loop(
            exactly_once::builder(exactly_once::config(&fx, &group), move |g, t, p| {
                loader.load(g, t, p)
            }),
            &topic,
        )
    };

    let (consumer, guard) = member();
    let tracked = exactly_once::track_new(&consumer, &guard, 80).await;
    let mut done = std::collections::BTreeSet::new();
    for (n, chunk) in tracked.chunks(7).enumerate() {
        if n % 4 == 2 {
            continue; // never applied: the crash came first
        }
        let batch: Vec<AckToken> = chunk.iter().rev().cloned().collect();
        assert!(apply_batch(&mut c, &group, batch).await.is_empty());
        done.extend(chunk.iter().map(|t| (t.partition(), t.offset())));
        if n % 3 != 0 {
            for t in chunk {
                t.clone().ack();
            }
        }
    }
    // A token of a record applied in run 1, kept (an application bug).
    let applied_before = tracked
        .iter()
        .find(|t| done.contains(&(t.partition(), t.offset())))
        .unwrap()
        .clone();
    drop(tracked);
    drop(guard);
    common::drop_elsewhere(consumer, "run 1's consumer");

    // Where run 2 starts fetching: the stored watermark, or Kafka's commit
    // if that is ahead.
    let committed = fx.committed(&group, &topic, 2);
    let mut expected = 0;
    for p in 0..2 {
        let w = pg_stored(&c, &group, &topic, p).await.0.unwrap_or(0);
        let k = committed[p as usize].unwrap_or(0);
        assert!(k <= w, "Kafka's commit {k} never passes the database's {w}");
        expected += (40 - w.max(k)) as usize;
    }
    let (consumer, guard) = member();
    let mut handed = Vec::new();
    let (handed_out, skipped) = exactly_once::resume(
        &consumer,
        &guard,
        &done,
        expected,
        |_, _| {},
        async |token| handed.push(token),
    )
    .await;
    assert_eq!(handed_out.len() + skipped, expected);
    // A token applied in run 1 slipped into the first batch (a bug of the
    // application, say): refused, rolled back, the rest applied again.
    let mut batches: Vec<Vec<AckToken>> = handed.chunks(5).map(|c| c.to_vec()).collect();
    if let Some(first) = batches.first_mut() {
        first.insert(2, applied_before.clone());
    }
    let mut refused_total = 0;
    for batch in batches {
        let acked: Vec<AckToken> = batch.clone();
        let refused = apply_batch(&mut c, &group, batch).await;
        refused_total += refused.len();
        assert!(
            refused
                .iter()
                .all(|t| t.offset() == applied_before.offset())
        );
        for t in acked {
            t.ack();
        }
    }
    assert_eq!(refused_total, 1, "the token applied before was refused");
    let report = guard.shutdown(&*consumer).await.unwrap();
    assert!(report.not_committed.is_empty(), "{report:?}");
    common::drop_elsewhere(consumer, "run 2's consumer");
    assert_eq!(pg::effects(&c).await, (80, 80, 80), "0 lost, 0 duplicates");
    for p in 0..2 {
        assert_eq!(pg_stored(&c, &group, &topic, p).await, (Some(40), vec![]));
    }
}

/// A failed-offset log in a SQLite file of an odd name, named by the URL
/// `LogLocation`'s `Display` writes (absolute) and by the relative one.
struct OddSqlite {
    dir: tempdir::TempDir,
    rel: std::path::PathBuf,
}

impl logdb::LogDb for OddSqlite {
    fn url(&self) -> String {
        LogLocation::Sqlite(self.dir.0.join(&self.rel)).to_string()
    }
    fn cli_url(&self) -> String {
        LogLocation::Sqlite(self.rel.clone()).to_string()
    }
    fn builder(&self) -> offset_guard::failure_log::LogBuilder {
        FailedOffsetLog::sqlite(self.dir.0.join(&self.rel))
    }
    fn reader(&self) -> offset_guard::failure_log::LogReader {
        offset_guard::failure_log::LogReader::open_sqlite(self.dir.0.join(&self.rel)).unwrap()
    }
    fn cli(&self, args: &[&str]) -> std::process::Output {
        logdb::cli_in(Some(&self.dir.0), args)
    }
}

/// `sqlite:` URLs of odd paths (spaces, `%`, `#`, `?`, unicode, `..`): the
/// Display form parses back to the same path, and the CLI reads and
/// resolves the log through it (absolute and relative).
#[test]
fn the_cli_reads_and_resolves_sqlite_logs_of_odd_names() {
    for (i, name) in [
        "my log 50%.db",
        "a#b?c&d=e.db",
        "ünï cødé 日本.db",
        "sub dir/../up%41.db",
        "x:y.db",
    ]
    .iter()
    .enumerate()
    {
        let dir = tempdir::TempDir::new(&format!("r16c-odd-{i}"));
        std::fs::create_dir_all(dir.join("sub dir")).unwrap();
        let log = OddSqlite {
            dir,
            rel: name.into(),
        };
        for url in [logdb::LogDb::url(&log), logdb::LogDb::cli_url(&log)] {
            let back = LogLocation::parse(&url).unwrap();
            assert_eq!(back.to_string(), url, "{name}");
        }
        logdb::cli_reads_and_resolves(&log);
        // Exactly one database file, of that name.
        assert!(log.dir.join(name).is_file(), "{name}");
    }
}

/// Bad `sqlite:` paths on the CLI: a directory, a trailing slash, a NUL
/// byte: a clear error (exit 3, naming the path), no panic, nothing created.
#[test]
fn the_cli_refuses_a_directory_or_a_nul_byte_as_a_sqlite_log() {
    let dir = tempdir::TempDir::new("r16c-bad-sqlite");
    std::fs::create_dir_all(dir.join("adir")).unwrap();
    for url in [
        "sqlite:adir",
        "sqlite:adir/",
        "sqlite:nodir/",
        "sqlite:a%00b.db",
    ] {
        for args in [
            vec!["failures", url],
            vec![
                "resolve", "-l", url, "-g", "g", "-t", "t", "-p", "0", "-o", "1", "-n", "x",
            ],
        ] {
            let out = logdb::cli_in(Some(&dir.0), &args);
            let err = logdb::text(&out.stderr);
            assert!(
                matches!(out.status.code(), Some(2 | 3)),
                "{args:?}: exit {:?}: {err}",
                out.status.code()
            );
            assert!(!err.contains("panicked"), "{args:?}: {err}");
        }
    }
    let mut left: Vec<_> = std::fs::read_dir(&dir.0)
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    left.sort();
    assert_eq!(left, ["adir"], "nothing created");
    assert_eq!(std::fs::read_dir(dir.join("adir")).unwrap().count(), 0);
}

/// Owned front-end: both partitions paused by the application with records
/// held back, then a second member joins (eager: both revoked from the
/// first). The held records are dropped by the first member and handed out
/// by their next owner: every record handed out exactly once over both
/// members (the first acked and committed all it got before the pause).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn paused_then_revoked_records_go_to_the_next_owner_once() {
    const N: i64 = 300;
    let fx = Fixture::mock();
    let (topic, group) = (unique("r16c-pause"), unique("g-r16c-pause"));
    fx.create_topic(&topic, 2);
    fx.produce(&topic, 2, N as usize, 0);
    let member = || {
        offset_guard::OffsetGuard::builder(exactly_once::config(&fx, &group))
            .retry(common::fast_retry(5))
            .build()
            .unwrap()
    };
    let mut a = member();
    a.subscribe(&[&topic]).unwrap();
    let mut seen: std::collections::BTreeMap<(i32, i64), u32> = Default::default();
    while a.partitions().len() < 2 {
        for r in common::recv_n(&mut a, 1, Duration::from_secs(30)).await {
            *seen.entry((r.partition(), r.offset())).or_default() += 1;
            r.ack();
        }
    }
    a.pause(&[(topic.as_str(), 0), (topic.as_str(), 1)])
        .unwrap();
    a.commit_now().await.unwrap();
    let before = a.stats().skipped_revoked;
    let mut b = member();
    b.subscribe(&[&topic]).unwrap();
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    while seen.len() < 2 * N as usize {
        assert!(
            std::time::Instant::now() < deadline,
            "{} of {} records handed out; a {:?}, b {:?}",
            seen.len(),
            2 * N,
            a.stats(),
            b.stats()
        );
        let r = tokio::select! {
            r = a.recv() => r.unwrap(),
            r = b.recv() => r.unwrap(),
            _ = tokio::time::sleep(Duration::from_millis(200)) => None,
        };
        if let Some(r) = r {
            *seen.entry((r.partition(), r.offset())).or_default() += 1;
            r.ack();
        }
    }
    let twice: Vec<_> = seen.iter().filter(|(_, n)| **n > 1).collect();
    assert!(twice.is_empty(), "handed out more than once: {twice:?}");
    assert!(
        a.stats().skipped_revoked > before,
        "records were held: {:?}",
        a.stats()
    );
    a.shutdown().await.unwrap();
    b.shutdown().await.unwrap();
}

/// The loader stuck behind a lock; its backend is then terminated (an
/// operator kills the stuck query) while the lock is still held, then the
/// lock is released: the loader connects again and answers, and loads work
/// again; while it is stuck the next loads fail at once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stuck_loader_whose_backend_is_terminated_recovers() {
    let Some(db) = pg::db("r16c_loader").await else {
        return;
    };
    let mut c = db.open().await;
    let tx = c.transaction().await.unwrap();
    postgres::advance(&tx, "g", "t", 0, 42).await.unwrap();
    tx.commit().await.unwrap();
    let loader = std::sync::Arc::new(db.loader().timeout(Duration::from_millis(200)));
    let mut holder = db.connect().await;
    let lock = holder.transaction().await.unwrap();
    lock.batch_execute("LOCK TABLE offset_guard_progress IN ACCESS EXCLUSIVE MODE")
        .await
        .unwrap();
    let l = loader.clone();
    let first = tokio::task::spawn_blocking(move || (l.load("g", "t", 0), l.load("g", "t", 0)))
        .await
        .unwrap();
    assert!(
        matches!(first.0, Err(ProgressError::Database { .. })),
        "{:?}",
        first.0
    );
    assert!(
        matches!(first.1, Err(ProgressError::LoaderStalled { .. })),
        "{:?}",
        first.1
    );
    // Terminate the loader's stuck backend (the one waiting for the lock).
    let killed: i64 = c
        .query_one(
            "SELECT COUNT(pg_terminate_backend(pid)) FROM pg_stat_activity
             WHERE wait_event_type = 'Lock' AND query LIKE '%offset_guard_progress%'
               AND pid <> pg_backend_pid()",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(killed, 1);
    lock.rollback().await.unwrap();
    let l = loader.clone();
    let progress = tokio::task::spawn_blocking(move || {
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        loop {
            match l.load("g", "t", 0) {
                Err(ProgressError::LoaderStalled { .. }) | Err(ProgressError::Database { .. })
                    if std::time::Instant::now() < deadline =>
                {
                    std::thread::sleep(Duration::from_millis(20))
                }
                other => return other,
            }
        }
    })
    .await
    .unwrap()
    .unwrap();
    assert_eq!(progress.watermark(), Some(42));
}

/// The version table dropped: `migrate` cannot tell the version, and
/// refuses (typed, nothing changed) in both stores; the progress rows stay.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn migrate_after_the_version_table_was_dropped() {
    let Some(db) = pg::db("r16c_noversion").await else {
        return;
    };
    let mut c = db.open().await;
    let tx = c.transaction().await.unwrap();
    postgres::advance(&tx, "g", "t", 0, 7).await.unwrap();
    tx.commit().await.unwrap();
    c.batch_execute("DROP TABLE offset_guard_schema")
        .await
        .unwrap();
    let e = postgres::migrate(&mut c).await.unwrap_err();
    assert!(matches!(e, ProgressError::ForeignSchema { .. }), "{e}");
    let n: i64 = c
        .query_one("SELECT watermark FROM offset_guard_progress", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(n, 7);

    let s = sqlite_db();
    let tx = s.unchecked_transaction().unwrap();
    sqlite::advance(&tx, "g", "t", 0, 7).unwrap();
    tx.commit().unwrap();
    s.execute_batch("DROP TABLE offset_guard_schema").unwrap();
    let e = sqlite::migrate(&s).unwrap_err();
    assert!(matches!(e, ProgressError::ForeignSchema { .. }), "{e}");
    let w: i64 = s
        .query_row("SELECT watermark FROM offset_guard_progress", [], |r| {
            r.get(0)
        })
        .unwrap();
    assert_eq!(w, 7);
}
