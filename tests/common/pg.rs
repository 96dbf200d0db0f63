//! PostgreSQL for the `postgres` feature's tests: the server named by
//! `OFFSET_GUARD_POSTGRES` (a connection string; `scripts/postgres.sh start`
//! prints it, `.ci/run` sets it). Nothing is started here: when the variable
//! is unset, a test prints "OFFSET_GUARD_POSTGRES not set: skipped" and
//! returns. Each test works in a schema of its own (`search_path`), so tests
//! run in parallel in one database.
#![allow(dead_code)]

use std::sync::atomic::{AtomicU64, Ordering};

use offset_guard::progress::postgres;
use tokio_postgres::{Client, Config, NoTls};

/// The environment variable naming the PostgreSQL server.
pub const POSTGRES_ENV: &str = "OFFSET_GUARD_POSTGRES";

static SCHEMAS: AtomicU64 = AtomicU64::new(0);

/// A schema of this test's own, on the server of `OFFSET_GUARD_POSTGRES`.
#[derive(Clone)]
pub struct Db {
    /// Connects with `search_path` set to [`Db::schema`].
    pub config: Config,
    pub schema: String,
}

/// The test's database, or `None` (printed: skipped) without
/// `OFFSET_GUARD_POSTGRES`.
pub async fn db(test: &str) -> Option<Db> {
    let url = match std::env::var(POSTGRES_ENV) {
        Ok(u) if !u.trim().is_empty() => u,
        _ => {
            println!("{POSTGRES_ENV} not set: skipped ({test})");
            return None;
        }
    };
    let base: Config = url
        .parse()
        .unwrap_or_else(|e| panic!("{POSTGRES_ENV}={url}: {e}"));
    let schema = format!(
        "og_{}_{}_{}",
        std::process::id(),
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_millis(),
        SCHEMAS.fetch_add(1, Ordering::Relaxed)
    );
    let admin = connect_config(&base).await;
    admin
        .batch_execute(&format!("CREATE SCHEMA {schema}"))
        .await
        .unwrap();
    let mut config = base.clone();
    config.options(format!("-c search_path={schema}"));
    Some(Db { config, schema })
}

async fn connect_config(config: &Config) -> Client {
    let (client, connection) = config.connect(NoTls).await.expect("connect to PostgreSQL");
    tokio::spawn(async move {
        let _ = connection.await;
    });
    client
}

impl Db {
    /// A new connection in the test's schema.
    pub async fn connect(&self) -> Client {
        connect_config(&self.config).await
    }

    /// A new connection, with the store migrated and the effects tables
    /// created: `effects` (one row per processing of a record) and `totals`
    /// (the business row: one counter per partition).
    pub async fn open(&self) -> Client {
        let mut client = self.connect().await;
        postgres::migrate(&mut client).await.unwrap();
        client
            .batch_execute(
                "CREATE TABLE IF NOT EXISTS effects (
                     partition_id INTEGER NOT NULL, record_offset BIGINT NOT NULL);
                 CREATE TABLE IF NOT EXISTS totals (
                     partition_id INTEGER PRIMARY KEY, records BIGINT NOT NULL)",
            )
            .await
            .unwrap();
        client
    }

    /// The guard's loader on a connection of its own.
    pub fn loader(&self) -> postgres::Loader {
        postgres::Loader::connect_with(self.config.clone(), NoTls).expect("loader")
    }
}

/// One number from a query.
pub async fn count(client: &Client, sql: &str) -> i64 {
    client.query_one(sql, &[]).await.unwrap().get(0)
}

/// The effect of processing one record, in `tx`: one `effects` row and the
/// partition's `totals` counter up by one.
pub async fn effect(tx: &tokio_postgres::Transaction<'_>, partition: i32, offset: i64) {
    tx.execute(
        "INSERT INTO effects (partition_id, record_offset) VALUES ($1, $2)",
        &[&partition, &offset],
    )
    .await
    .unwrap();
    tx.execute(
        "INSERT INTO totals (partition_id, records) VALUES ($1, 1)
         ON CONFLICT (partition_id) DO UPDATE SET records = totals.records + 1",
        &[&partition],
    )
    .await
    .unwrap();
}

/// Effects: (rows, distinct records, sum of the business counters).
pub async fn effects(client: &Client) -> (i64, i64, i64) {
    (
        count(client, "SELECT COUNT(*) FROM effects").await,
        count(
            client,
            "SELECT COUNT(*) FROM (SELECT DISTINCT partition_id, record_offset FROM effects) d",
        )
        .await,
        count(
            client,
            "SELECT COALESCE(SUM(records), 0)::BIGINT FROM totals",
        )
        .await,
    )
}
