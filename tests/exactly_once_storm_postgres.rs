//! Exactly-once into PostgreSQL under a rebalance storm and a commit-failure
//! burst (issue 16, item 6; feature `postgres`): the scenarios of
//! tests/exactly_once_storm.rs (in tests/common/storm.rs) with the effects,
//! the business rows and the progress in PostgreSQL. Each member processes
//! on a connection of its own (each record: one `effects` row, the
//! partition's `totals` row bumped and `postgres::mark_token`, in one
//! transaction; a refusal rolls back), and its guard loads through a
//! `postgres::Loader` of its own. Members: an eager (`range`) and a
//! cooperative (`cooperative-sticky`) own-loop storm and an owned one; the
//! burst injects errors, so it runs on MockCluster whatever the broker. The
//! broker is MockCluster by default, a real one with `OFFSET_GUARD_BOOTSTRAP`
//! (tests/common); PostgreSQL is the server of `OFFSET_GUARD_POSTGRES`
//! (without it each test prints "OFFSET_GUARD_POSTGRES not set: skipped"),
//! a schema per test.

mod common;
#[path = "common/pg.rs"]
mod pg;
#[path = "common/storm.rs"]
mod storm;

use std::sync::Arc;

use offset_guard::progress::postgres;
use pg::{Db, effect};
use storm::{Apply, Front, Load, Store};
use tokio_postgres::Client;

/// Connections per member.
const CONNECTIONS: usize = 3;

/// The test's schema; the members' connections and loaders are their own.
struct Postgres {
    db: Db,
    /// The test's own connection, for counting.
    client: Client,
}

impl Postgres {
    async fn new(test: &str) -> Option<Postgres> {
        let db = pg::db(test).await?;
        let client = db.open().await;
        Some(Postgres { db, client })
    }
}

impl Store for Postgres {
    /// Connections of the member's own, a record's transaction on the
    /// partition's (so a partition's transactions queue on the client, not
    /// on the row locks of its `totals` and progress rows).
    async fn member(&self, group: &str, _name: &str) -> Apply {
        let mut clients = Vec::new();
        for _ in 0..CONNECTIONS {
            clients.push(Arc::new(tokio::sync::Mutex::new(self.db.connect().await)));
        }
        let group = group.to_string();
        Arc::new(move |token| {
            let client = clients[token.partition() as usize % CONNECTIONS].clone();
            let group = group.clone();
            Box::pin(async move {
                let mut client = client.lock().await;
                let tx = client.transaction().await.unwrap();
                effect(&tx, token.partition(), token.offset()).await;
                let applied = match postgres::mark_token(&tx, &group, &token).await {
                    Ok(()) => {
                        tx.commit().await.unwrap();
                        true
                    }
                    Err(e) => {
                        assert!(e.is_already_done(), "{e}");
                        tx.rollback().await.unwrap();
                        false
                    }
                };
                (token, applied)
            })
        })
    }

    fn loader(&self) -> Load {
        let loader = self.db.loader();
        Box::new(move |group, topic, partition| loader.load(group, topic, partition))
    }

    async fn count(&self, sql: &str) -> i64 {
        pg::count(&self.client, sql).await
    }

    async fn watermarks(&self, group: &str, topic: &str, partitions: i32) -> Vec<Option<i64>> {
        let mut w = Vec::new();
        for p in 0..partitions {
            let pr = postgres::load(&self.client, group, topic, p).await.unwrap();
            w.push(pr.watermark());
        }
        w
    }

    fn watermark_reader(
        &self,
        group: &str,
        topic: &str,
    ) -> Box<dyn FnMut(i32) -> Option<i64> + Send> {
        let loader = self.db.loader();
        let (group, topic) = (group.to_string(), topic.to_string());
        Box::new(move |p| loader.load(&group, &topic, p).unwrap().watermark())
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 6)]
async fn storm_own_loop_range() {
    let Some(store) = Postgres::new("storm_own_loop_range").await else {
        return;
    };
    storm::storm(&store, Front::OwnLoop, "range").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 6)]
async fn storm_own_loop_cooperative_sticky() {
    let Some(store) = Postgres::new("storm_own_loop_cooperative_sticky").await else {
        return;
    };
    storm::storm(&store, Front::OwnLoop, "cooperative-sticky").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 6)]
async fn storm_owned_range() {
    let Some(store) = Postgres::new("storm_owned_range").await else {
        return;
    };
    storm::storm(&store, Front::Owned, "range").await;
}

/// A commit failure burst (issue 16, item 6), MockCluster only: see
/// `storm::burst`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn commit_failure_burst_then_kill_and_restart_applies_each_record_once() {
    let Some(store) = Postgres::new("burst").await else {
        return;
    };
    storm::burst(&store).await;
}
