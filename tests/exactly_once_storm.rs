//! Exactly-once into SQLite under a rebalance storm and a commit-failure
//! burst (issue 16, item 6; feature `sqlite`).
//!
//! Storm: members of one group join and leave repeatedly while records keep
//! flowing, some killed (dropped without shutdown, the record tasks in
//! flight aborted: one past its database commit never acks), some shut down
//! cleanly; eager (`range`, `roundrobin`) and cooperative
//! (`cooperative-sticky`); the own-loop front-end and the owned one; records
//! processed out of order, each in a task of its own. Every processing writes
//! one effect row and bumps a business row in the same SQLite transaction as
//! `mark_token`; the members share one database file (WAL, busy timeout,
//! `IMMEDIATE` transactions). At the end the database itself is counted:
//! every produced record has exactly one effect. Throughout, Kafka's
//! committed offset is never seen past the database's watermark. The broker
//! comes from tests/common (MockCluster, or a real one with
//! `OFFSET_GUARD_BOOTSTRAP`); the burst injects errors, so MockCluster only.
//! The scenarios themselves are in tests/common/storm.rs, shared with the
//! PostgreSQL file (tests/exactly_once_storm_postgres.rs).

mod common;
#[path = "common/storm.rs"]
mod storm;

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use offset_guard::AckToken;
use offset_guard::progress::sqlite;
use rusqlite::{Connection, TransactionBehavior, params};
use storm::{Apply, Front, Load, Store};

/// Opens the shared database: WAL (readers do not block the writer), a
/// busy timeout (writers wait for the lock), the store and the test's tables.
fn open(path: &Path) -> Connection {
    let conn = Connection::open(path).unwrap();
    conn.busy_timeout(Duration::from_secs(20)).unwrap();
    conn.execute_batch("PRAGMA journal_mode = WAL; PRAGMA synchronous = NORMAL;")
        .unwrap();
    sqlite::migrate(&conn).unwrap();
    conn.execute_batch(
        "CREATE TABLE IF NOT EXISTS effects (
             partition_id INTEGER NOT NULL, record_offset INTEGER NOT NULL, member TEXT NOT NULL);
         CREATE TABLE IF NOT EXISTS totals (
             partition_id INTEGER PRIMARY KEY, records INTEGER NOT NULL);",
    )
    .unwrap();
    conn
}

/// The record's effects (one effect row, the business row bumped) and its
/// mark in one transaction. False: refused as done already (rolled back).
fn process(conn: &mut Connection, group: &str, member: &str, token: &AckToken) -> bool {
    let tx = conn
        .transaction_with_behavior(TransactionBehavior::Immediate)
        .unwrap();
    tx.execute(
        "INSERT INTO effects (partition_id, record_offset, member) VALUES (?1, ?2, ?3)",
        params![token.partition(), token.offset(), member],
    )
    .unwrap();
    tx.execute(
        "INSERT INTO totals (partition_id, records) VALUES (?1, 1)
         ON CONFLICT (partition_id) DO UPDATE SET records = records + 1",
        params![token.partition()],
    )
    .unwrap();
    match sqlite::mark_token(&tx, group, token) {
        Ok(()) => {
            tx.commit().unwrap();
            true
        }
        Err(e) => {
            assert!(e.is_already_done(), "{member}: {e}");
            false // dropped: rolled back
        }
    }
}

/// One database file in a temporary directory, shared by the members, each
/// on connections of its own.
struct Sqlite {
    _dir: tempfile::TempDir,
    path: PathBuf,
    /// The test's own connection, for counting.
    conn: Mutex<Connection>,
}

impl Sqlite {
    fn new() -> Sqlite {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("effects.db");
        let conn = Mutex::new(open(&path));
        Sqlite {
            _dir: dir,
            path,
            conn,
        }
    }
}

impl Store for Sqlite {
    async fn member(&self, group: &str, name: &str) -> Apply {
        let conn = Arc::new(Mutex::new(open(&self.path)));
        let (group, name) = (group.to_string(), name.to_string());
        Arc::new(move |token| {
            let (conn, group, name) = (conn.clone(), group.clone(), name.clone());
            Box::pin(async move {
                tokio::task::spawn_blocking(move || {
                    let applied = process(&mut conn.lock().unwrap(), &group, &name, &token);
                    (token, applied)
                })
                .await
                .unwrap()
            })
        })
    }

    fn loader(&self) -> Load {
        let conn = Mutex::new(open(&self.path));
        Box::new(move |group, topic, partition| {
            sqlite::load(&conn.lock().unwrap(), group, topic, partition)
        })
    }

    async fn count(&self, sql: &str) -> i64 {
        self.conn
            .lock()
            .unwrap()
            .query_row(sql, [], |r| r.get(0))
            .unwrap()
    }

    async fn watermarks(&self, group: &str, topic: &str, partitions: i32) -> Vec<Option<i64>> {
        let conn = self.conn.lock().unwrap();
        (0..partitions)
            .map(|p| sqlite::load(&conn, group, topic, p).unwrap().watermark())
            .collect()
    }

    fn watermark_reader(
        &self,
        group: &str,
        topic: &str,
    ) -> Box<dyn FnMut(i32) -> Option<i64> + Send> {
        let conn = open(&self.path);
        let (group, topic) = (group.to_string(), topic.to_string());
        Box::new(move |p| sqlite::load(&conn, &group, &topic, p).unwrap().watermark())
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 6)]
async fn storm_own_loop_range() {
    storm::storm(&Sqlite::new(), Front::OwnLoop, "range").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 6)]
async fn storm_own_loop_roundrobin() {
    storm::storm(&Sqlite::new(), Front::OwnLoop, "roundrobin").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 6)]
async fn storm_own_loop_cooperative_sticky() {
    storm::storm(&Sqlite::new(), Front::OwnLoop, "cooperative-sticky").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 6)]
async fn storm_owned_range() {
    storm::storm(&Sqlite::new(), Front::Owned, "range").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 6)]
async fn storm_owned_cooperative_sticky() {
    storm::storm(&Sqlite::new(), Front::Owned, "cooperative-sticky").await;
}

/// A commit failure burst (issue 16, item 6), MockCluster only: see
/// `storm::burst`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn commit_failure_burst_then_kill_and_restart_applies_each_record_once() {
    storm::burst(&Sqlite::new()).await;
}
