//! The failed-offset log in a PostgreSQL database (cargo feature
//! `postgres`): the table, its migration and schema check, the writer's
//! insert, and the reader's row stream. See the
//! [module docs](super#in-postgresql).
//!
//! The guard's threads are synchronous and may run where blocking on a
//! future panics (inside a tokio runtime), so every connection here lives on
//! a thread of its own with a single-threaded tokio runtime: the writer's on
//! the log's writer thread, a reader's on a reader thread that sends rows
//! through a bounded channel.

use std::future::Future;
use std::io;
use std::path::PathBuf;
use std::sync::mpsc;
use std::time::Duration;

use tokio_postgres::types::Type;
use tokio_postgres::{Client, Config, NoTls};

use super::LogError;
use super::rows::RowSource;

/// The schema version of the failed-offset log's tables in PostgreSQL that
/// this build creates and reads (table `offset_guard_log_schema`, see
/// [In PostgreSQL](super#in-postgresql)).
pub const PG_LOG_SCHEMA_VERSION: i64 = 1;

/// The one migration: version 1. Also in the [module docs](super#in-postgresql).
const MIGRATION_1: &str = "
CREATE TABLE offset_guard_log_schema (
    version BIGINT NOT NULL
);
INSERT INTO offset_guard_log_schema (version) VALUES (1);
CREATE TABLE offset_guard_failed_offsets (
    id            BIGINT  GENERATED ALWAYS AS IDENTITY (CACHE 1) PRIMARY KEY,
    kind          TEXT    NOT NULL,
    time          TEXT    NOT NULL,
    group_id      TEXT    NOT NULL,
    topic         TEXT    NOT NULL,
    partition_id  INTEGER NOT NULL,
    commit_offset BIGINT  NOT NULL,
    reason        TEXT,
    resolution    TEXT,
    line          TEXT    NOT NULL
);
CREATE INDEX offset_guard_failed_offsets_group ON offset_guard_failed_offsets (group_id, id);
";

const SCHEMA_TABLE: &str = "offset_guard_log_schema";
const LOG_TABLE: &str = "offset_guard_failed_offsets";
const LOG_COLUMNS: &[(&str, &str)] = &[
    ("id", "bigint"),
    ("kind", "text"),
    ("time", "text"),
    ("group_id", "text"),
    ("topic", "text"),
    ("partition_id", "integer"),
    ("commit_offset", "bigint"),
    ("reason", "text"),
    ("resolution", "text"),
    ("line", "text"),
];

/// The key of the transaction-level advisory lock that serializes the log's
/// migration across processes ("oglogmig" in ASCII).
const MIGRATE_LOCK: i64 = 0x6f67_6c6f_676d_6967;
/// The first key of the per-group advisory lock taken around each insert
/// (the second is `hashtext(group_id)`): "oglg" in ASCII.
const INSERT_LOCK_CLASS: i32 = 0x6f67_6c67;

/// How long connecting may take (when the connection string sets no
/// `connect_timeout`), and how long one statement or one insert may take
/// before the writer gives up on the connection and keeps the record.
pub(super) const PG_TIMEOUT: Duration = Duration::from_secs(5);
/// Server-side wait for a lock (the per-group insert lock) before the insert
/// fails and the record is kept for a retry.
const LOCK_TIMEOUT_MS: u32 = 2000;
/// Rows fetched per query while streaming.
const PAGE_ROWS: i64 = 512;

/// The connection string of a log in PostgreSQL, and its name in errors and
/// issues (the string with any password replaced by `***`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct PgTarget {
    pub(super) conn: String,
    pub(super) name: PathBuf,
}

impl PgTarget {
    pub(super) fn new(conn: &str) -> PgTarget {
        PgTarget {
            conn: conn.to_string(),
            name: PathBuf::from(super::redact_password(conn)),
        }
    }

    fn error(
        &self,
        op: &'static str,
        e: impl Into<Box<dyn std::error::Error + Send + Sync>>,
    ) -> LogError {
        LogError::Database {
            path: self.name.clone(),
            op,
            source: e.into(),
        }
    }

    fn config(&self) -> Result<Config, LogError> {
        let mut config: Config = self
            .conn
            .parse()
            .map_err(|e| self.error("parse the connection string", e))?;
        if config.get_connect_timeout().is_none() {
            config.connect_timeout(PG_TIMEOUT);
        }
        Ok(config)
    }
}

/// What a statement's failure says about the connection: `true` when it is
/// closed (or timed out) and must be opened again.
fn lost(e: &Option<tokio_postgres::Error>) -> bool {
    e.as_ref().is_none_or(tokio_postgres::Error::is_closed)
}

/// Runs `fut` on `runtime`, at most [`PG_TIMEOUT`]. The error is `None` on a
/// timeout.
fn block<T>(
    runtime: &tokio::runtime::Runtime,
    fut: impl Future<Output = Result<T, tokio_postgres::Error>>,
) -> Result<T, Option<tokio_postgres::Error>> {
    match runtime.block_on(async { tokio::time::timeout(PG_TIMEOUT, fut).await }) {
        Ok(Ok(v)) => Ok(v),
        Ok(Err(e)) => Err(Some(e)),
        Err(_) => Err(None),
    }
}

/// A connection with its own single-threaded runtime, used from one thread.
pub(super) struct PgSession {
    target: PgTarget,
    config: Config,
    runtime: tokio::runtime::Runtime,
    client: Option<Client>,
}

impl PgSession {
    /// Builds the runtime and connects (never inside an async context: call
    /// it on a thread of its own).
    fn open(target: PgTarget) -> Result<PgSession, LogError> {
        let config = target.config()?;
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(|e| target.error("start the database runtime", e))?;
        let mut session = PgSession {
            target,
            config,
            runtime,
            client: None,
        };
        session.connect()?;
        Ok(session)
    }

    /// The connection, opened (again) when there is none or it closed.
    fn connect(&mut self) -> Result<&mut Client, LogError> {
        if self.client.as_ref().is_some_and(Client::is_closed) {
            self.client = None;
        }
        if self.client.is_none() {
            let config = self.config.clone();
            let client = block(&self.runtime, async move {
                let (client, connection) = config.connect(NoTls).await?;
                tokio::spawn(async move {
                    if let Err(e) = connection.await {
                        tracing::warn!(error = %e, "failed-offset log: PostgreSQL connection ended");
                    }
                });
                client
                    .batch_execute(&format!("SET lock_timeout = {LOCK_TIMEOUT_MS}"))
                    .await?;
                Ok(client)
            })
            .map_err(|e| self.target.error("connect", timeout_text(e)))?;
            self.client = Some(client);
        }
        let target = &self.target;
        self.client
            .as_mut()
            .ok_or_else(|| target.error("connect", "no connection"))
    }

    /// Runs what `f` makes of the connection, at most [`PG_TIMEOUT`]; a
    /// closed connection or a timeout drops it (the server then ends its
    /// transaction) and the next call opens a new one.
    fn run<T, F>(&mut self, op: &'static str, f: F) -> Result<T, LogError>
    where
        F: AsyncFnOnce(&mut Client) -> Result<T, tokio_postgres::Error>,
    {
        self.connect()?;
        let PgSession {
            target,
            runtime,
            client,
            ..
        } = self;
        let Some(c) = client.as_mut() else {
            return Err(target.error(op, "no connection"));
        };
        match block(runtime, f(c)) {
            Ok(v) => Ok(v),
            Err(e) => {
                if lost(&e) {
                    *client = None;
                }
                Err(target.error(op, timeout_text(e)))
            }
        }
    }
}

fn timeout_text(e: Option<tokio_postgres::Error>) -> Box<dyn std::error::Error + Send + Sync> {
    match e {
        Some(e) => Box::new(e),
        None => format!("no answer within {PG_TIMEOUT:?}").into(),
    }
}

/// Runs `f` on a thread of its own (it may block on a runtime there) and
/// returns its result: for opening from any thread, also a tokio worker.
fn on_own_thread<T: Send>(
    target: &PgTarget,
    f: impl FnOnce() -> Result<T, LogError> + Send,
) -> Result<T, LogError> {
    std::thread::scope(|s| {
        std::thread::Builder::new()
            .name("offset-guard-pg-log-open".into())
            .spawn_scoped(s, f)
            .map_err(|e| target.error("start a thread", e))?
            .join()
            .unwrap_or_else(|_| Err(target.error("open", "the opening thread panicked")))
    })
}

/// The writer's side: a session on which the log's tables were created or
/// checked. Moved to the writer thread.
pub(super) struct PgWriter {
    session: PgSession,
}

impl std::fmt::Debug for PgWriter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "PgWriter({})", self.session.target.name.display())
    }
}

impl PgWriter {
    /// Connects and creates the log's tables when missing (several
    /// processes at once: one creates them), then checks them.
    pub(super) fn open(target: PgTarget) -> Result<PgWriter, LogError> {
        on_own_thread(&target.clone(), move || {
            let mut session = PgSession::open(target)?;
            migrate(&mut session)?;
            Ok(PgWriter { session })
        })
    }

    /// Inserts one log line as one row, in a transaction of its own that
    /// first takes the group's advisory lock, so the group's rows get their
    /// ids in commit order (see [Order](super#order-of-rows-in-postgresql)).
    /// A connection found closed is opened again.
    pub(super) fn insert(&mut self, line: &str) -> Result<(), LogError> {
        let line = line.trim_end_matches('\n').to_string();
        self.session.run("insert", async move |c: &mut Client| {
            let tx = c.transaction().await?;
            tx.query_typed(
                "SELECT pg_advisory_xact_lock($1, hashtext(($2::text)::jsonb ->> 'group_id'))",
                &[(&INSERT_LOCK_CLASS, Type::INT4), (&line, Type::TEXT)],
            )
            .await?;
            tx.execute_typed(
                "INSERT INTO offset_guard_failed_offsets
                   (kind, time, group_id, topic, partition_id, commit_offset, reason, resolution, line)
                 SELECT j ->> 'kind', j ->> 'time', j ->> 'group_id', j ->> 'topic',
                        (j ->> 'partition')::integer, (j ->> 'offset')::bigint,
                        j ->> 'reason', j ->> 'resolution', $1
                 FROM (SELECT ($1::text)::jsonb AS j) AS l",
                &[(&line, Type::TEXT)],
            )
            .await?;
            tx.commit().await
        })
    }
}

/// Creates the log's tables when neither exists, in one transaction holding
/// an advisory lock (processes starting at once create them once), then
/// checks them.
fn migrate(session: &mut PgSession) -> Result<(), LogError> {
    let state = session.run("create tables", async |c: &mut Client| {
        let tx = c.transaction().await?;
        tx.query_typed(
            "SELECT pg_advisory_xact_lock($1)",
            &[(&MIGRATE_LOCK, Type::INT8)],
        )
        .await?;
        let schema = table_columns(&tx, SCHEMA_TABLE).await?;
        let log = table_columns(&tx, LOG_TABLE).await?;
        if schema.is_empty() && log.is_empty() {
            tx.batch_execute(MIGRATION_1).await?;
        }
        let state = read_state(&tx).await?;
        tx.commit().await?;
        Ok(state)
    })?;
    state.check(&session.target)
}

/// What the schema check looks at, read in one go.
struct SchemaState {
    schema_columns: Vec<(String, String)>,
    log_columns: Vec<(String, String)>,
    /// The version rows, as text (`None` when the table is missing or unreadable).
    versions: Option<Vec<Option<String>>>,
}

async fn table_columns(
    c: &impl tokio_postgres::GenericClient,
    table: &str,
) -> Result<Vec<(String, String)>, tokio_postgres::Error> {
    let table = table.to_string();
    Ok(c.query_typed(
        "SELECT a.attname::text, format_type(a.atttypid, a.atttypmod)
         FROM pg_attribute a JOIN pg_class c ON c.oid = a.attrelid
         WHERE c.relname = $1 AND c.relnamespace = current_schema()::regnamespace
           AND c.relkind IN ('r', 'p', 'v') AND a.attnum > 0 AND NOT a.attisdropped
         ORDER BY a.attnum",
        &[(&table, Type::TEXT)],
    )
    .await?
    .iter()
    .map(|r| (r.get(0), r.get(1)))
    .collect())
}

async fn read_state(
    c: &impl tokio_postgres::GenericClient,
) -> Result<SchemaState, tokio_postgres::Error> {
    let schema_columns = table_columns(c, SCHEMA_TABLE).await?;
    let log_columns = table_columns(c, LOG_TABLE).await?;
    let versions = if schema_columns.iter().any(|(n, _)| n == "version") {
        let rows = c
            .query_typed("SELECT version::text FROM offset_guard_log_schema", &[])
            .await?;
        Some(rows.iter().map(|r| r.get(0)).collect())
    } else {
        None
    };
    Ok(SchemaState {
        schema_columns,
        log_columns,
        versions,
    })
}

impl SchemaState {
    /// Checks that the log's tables exist, in the version this build knows,
    /// with the expected columns and types.
    fn check(&self, target: &PgTarget) -> Result<(), LogError> {
        let path = target.name.clone();
        let foreign = |table: &str, detail: String| LogError::ForeignSchema {
            path: path.clone(),
            table: table.to_string(),
            detail,
        };
        match (self.schema_columns.is_empty(), self.log_columns.is_empty()) {
            (true, true) => return Err(LogError::NoLogTable { path }),
            (true, false) => {
                return Err(foreign(
                    LOG_TABLE,
                    format!("exists without {SCHEMA_TABLE} (not created by offset-guard)"),
                ));
            }
            _ => {}
        }
        let versions = self.versions.as_deref().unwrap_or_default();
        match versions {
            [Some(v)] => match v.parse::<i64>() {
                Ok(v) if v == PG_LOG_SCHEMA_VERSION => {}
                Ok(v) if v > PG_LOG_SCHEMA_VERSION => {
                    return Err(LogError::SchemaTooNew {
                        path,
                        found: v,
                        supported: PG_LOG_SCHEMA_VERSION,
                    });
                }
                _ => return Err(foreign(SCHEMA_TABLE, format!("version {v}"))),
            },
            [None] => return Err(foreign(SCHEMA_TABLE, "version NULL".into())),
            rows => {
                return Err(foreign(
                    SCHEMA_TABLE,
                    format!("{} version rows, expected 1", rows.len()),
                ));
            }
        }
        let expected: Vec<(String, String)> = LOG_COLUMNS
            .iter()
            .map(|(n, t)| (n.to_string(), t.to_string()))
            .collect();
        if self.log_columns != expected {
            return Err(foreign(
                LOG_TABLE,
                format!("columns {:?}, expected {LOG_COLUMNS:?}", self.log_columns),
            ));
        }
        Ok(())
    }
}

/// One row for the reader: its id and its line, or a read error.
type RowMsg = Result<(i64, Vec<u8>), String>;

/// The log's rows as JSON Lines text for the line reader, as the SQLite
/// reader does: the row with id `N` is line `N` (ids not read, of other
/// groups, rolled back or deleted, are blank lines, which readers skip). A
/// reader thread with its own connection fetches pages of rows in id order
/// and sends them through a bounded channel; it ends when this is dropped.
pub(crate) struct PgLines {
    rows: mpsc::Receiver<RowMsg>,
    name: PathBuf,
}

impl PgLines {
    /// Connects, checks the schema and starts the reader thread.
    ///
    /// # Errors
    ///
    /// As [`LogStream::open_postgres`](super::LogStream::open_postgres).
    pub(super) fn open(target: PgTarget, group: Option<String>) -> Result<PgLines, LogError> {
        let name = target.name.clone();
        let (ready_tx, ready) = mpsc::sync_channel::<Result<(), LogError>>(1);
        let (row_tx, rows) = mpsc::sync_channel::<RowMsg>(PAGE_ROWS as usize);
        let t = target.clone();
        std::thread::Builder::new()
            .name("offset-guard-pg-log-reader".into())
            .spawn(move || {
                let session = PgSession::open(t).and_then(|mut s| {
                    let state = s.run("check the schema", async |c: &mut Client| {
                        read_state(&*c).await
                    })?;
                    state.check(&s.target).map(|()| s)
                });
                match session {
                    Ok(s) => {
                        if ready_tx.send(Ok(())).is_ok() {
                            send_rows(s, group.as_deref(), &row_tx);
                        }
                    }
                    Err(e) => {
                        let _ = ready_tx.send(Err(e));
                    }
                }
            })
            .map_err(|e| target.error("start the reader thread", e))?;
        match ready.recv() {
            Ok(Ok(())) => Ok(PgLines { rows, name }),
            Ok(Err(e)) => Err(e),
            Err(_) => Err(target.error("open", "the reader thread ended")),
        }
    }
}

/// The reader thread's loop: pages of rows in id order (only `group`'s
/// when given) until the table is read or the receiver is gone.
fn send_rows(mut session: PgSession, group: Option<&str>, out: &mpsc::SyncSender<RowMsg>) {
    let mut last_id = 0_i64;
    loop {
        let group = group.map(str::to_owned);
        let page = session.run("read rows", async move |c: &mut Client| {
            let rows = c
                .query_typed(
                    "SELECT id, convert_to(line, 'UTF8') FROM offset_guard_failed_offsets
                     WHERE id > $1 AND ($2::text IS NULL OR group_id = $2)
                     ORDER BY id LIMIT $3",
                    &[
                        (&last_id, Type::INT8),
                        (&group, Type::TEXT),
                        (&PAGE_ROWS, Type::INT8),
                    ],
                )
                .await?;
            Ok(rows
                .iter()
                .map(|r| (r.get::<_, i64>(0), r.get::<_, Vec<u8>>(1)))
                .collect::<Vec<_>>())
        });
        let page = match page {
            Ok(p) => p,
            Err(e) => {
                let _ = out.send(Err(e.to_string()));
                return;
            }
        };
        let full = page.len() as i64 == PAGE_ROWS;
        for row in page {
            last_id = row.0;
            if out.send(Ok(row)).is_err() {
                return;
            }
        }
        if !full {
            return;
        }
    }
}

impl RowSource for PgLines {
    fn next_rows(&mut self) -> io::Result<Vec<(i64, Vec<u8>)>> {
        match self.rows.recv() {
            Ok(Ok(row)) => Ok(vec![row]),
            Ok(Err(e)) => Err(io::Error::other(format!(
                "{}: read rows: {e}",
                self.name.display()
            ))),
            // The reader thread is done: no more rows.
            Err(_) => Ok(Vec::new()),
        }
    }
}

#[cfg(test)]
mod tests {
    use crate::failure_log::redact_password as redact;

    #[test]
    fn passwords_are_redacted() {
        assert_eq!(
            redact("postgresql://app:s3cret@db:5432/app?sslmode=disable"),
            "postgresql://app:***@db:5432/app?sslmode=disable"
        );
        assert_eq!(redact("postgres://app@db/app"), "postgres://app@db/app");
        assert_eq!(
            redact("host=db user=app password=s3cret dbname=app"),
            "host=db user=app password=*** dbname=app"
        );
    }
}
