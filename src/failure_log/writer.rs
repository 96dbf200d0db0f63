//! The writer: a handle that queues records, and a thread that owns the file.

use std::collections::VecDeque;
use std::fs::{File, OpenOptions, TryLockError};
use std::io::{self, Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{self, Receiver, RecvTimeoutError, Sender};
use std::sync::{Arc, Mutex, MutexGuard};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use tracing::{debug, info, warn};

use super::file_kind::{refuse_non_file, special_kind};
use super::record::{LogEntry, Resolution};
use super::{LogError, rotated_siblings};
use crate::sink::{FailedOffset, FailureSink};

/// When the writer `fsync`s the log file.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[non_exhaustive]
pub enum FsyncPolicy {
    /// `fsync` after every record. A record is on disk before the next one is
    /// written. The default.
    #[default]
    EveryRecord,
    /// `fsync` once `max_records` records were written since the last
    /// `fsync`, or `max_delay` after the first of them, whichever comes first
    /// (and on [`flush`](FailedOffsetLog::flush), rotation and close).
    ///
    /// Crash bound: an operating-system crash or power loss may lose the
    /// records written but not yet synced: at most `max_records - 1` of
    /// them, all written within the last `max_delay` (plus the time an
    /// `fsync` takes). A process crash loses none of those (they are in the
    /// kernel's page cache). With either policy, records still queued for the
    /// writer thread when the process dies are lost; [`FailedOffsetLog::flush`]
    /// waits until they are written and synced.
    Batched {
        /// Records per `fsync` (at least 1).
        max_records: usize,
        /// The longest a written record waits for its `fsync`.
        max_delay: Duration,
    },
}

/// A snapshot of the writer's counters ([`FailedOffsetLog::status`]).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct LogStatus {
    /// Failure records written to the file.
    pub records_written: u64,
    /// Resolution records written to the file.
    pub resolutions_written: u64,
    /// Failed attempts to open, write, rotate or `fsync` the file.
    pub write_errors: u64,
    /// Records accepted but not written yet (queued, or kept after a failed
    /// write and waiting for a retry).
    pub unwritten: u64,
    /// Records refused and discarded: the file could not be written and the
    /// in-memory queue of unwritten records was full
    /// ([`LogBuilder::max_unwritten`]; warning with `reason="queue_full"`,
    /// the last write `error` and the record), or a record arrived after
    /// [`FailedOffsetLog::close`] (warning with `reason="closed"` and the
    /// record). Each one is logged with `tracing::warn!`. A guard's log also
    /// reports it as [`Stats::failed_log_dropped`](crate::Stats::failed_log_dropped).
    pub dropped: u64,
    /// Times the file was rotated.
    pub rotations: u64,
    /// The last write error, as text; `None` once a write succeeds again.
    pub last_error: Option<String>,
}

/// Builds a [`FailedOffsetLog`]; from [`FailedOffsetLog::builder`].
#[derive(Debug, Clone)]
#[must_use]
pub struct LogBuilder {
    path: PathBuf,
    /// In a SQLite database at `path` rather than a file (feature `sqlite`).
    database: bool,
    /// In PostgreSQL (feature `postgres`): the connection string; `path` is
    /// then its name in errors (the password replaced by `***`).
    #[cfg(feature = "postgres")]
    postgres: Option<super::pg::PgTarget>,
    fsync: FsyncPolicy,
    max_file_bytes: u64,
    max_files: usize,
    max_unwritten: usize,
}

/// A path is a log with the default settings, so
/// [`GuardBuilder::failed_offset_log`](crate::GuardBuilder::failed_offset_log)
/// takes either a path or a [`LogBuilder`].
impl<P: AsRef<std::ffi::OsStr> + ?Sized> From<&P> for LogBuilder {
    fn from(path: &P) -> Self {
        FailedOffsetLog::builder(Path::new(path))
    }
}

impl From<PathBuf> for LogBuilder {
    fn from(path: PathBuf) -> Self {
        FailedOffsetLog::builder(path)
    }
}

impl From<String> for LogBuilder {
    fn from(path: String) -> Self {
        FailedOffsetLog::builder(path)
    }
}

impl From<std::ffi::OsString> for LogBuilder {
    fn from(path: std::ffi::OsString) -> Self {
        FailedOffsetLog::builder(path)
    }
}

impl From<Box<Path>> for LogBuilder {
    fn from(path: Box<Path>) -> Self {
        FailedOffsetLog::builder(path)
    }
}

impl From<std::borrow::Cow<'_, Path>> for LogBuilder {
    fn from(path: std::borrow::Cow<'_, Path>) -> Self {
        FailedOffsetLog::builder(path)
    }
}

impl LogBuilder {
    /// When to `fsync`. Default: [`FsyncPolicy::EveryRecord`].
    pub fn fsync(mut self, policy: FsyncPolicy) -> Self {
        self.fsync = policy;
        self
    }

    /// Rotate before a line would take the file past this size; a single
    /// larger line gets a file of its own. Must be at least 1.
    /// Default: 64 MiB.
    pub fn max_file_bytes(mut self, bytes: u64) -> Self {
        self.max_file_bytes = bytes;
        self
    }

    /// How many files to keep, the current one included (so `path.1` ...
    /// `path.{max_files - 1}` plus `path`); the oldest is deleted on rotation.
    /// At most [`MAX_ROTATED`](super::MAX_ROTATED) + 1 are kept, whatever
    /// larger value is given; files numbered above that are never touched.
    /// With 1, rotation starts the file afresh. Must be at least 1. Default: 8.
    pub fn max_files(mut self, files: usize) -> Self {
        self.max_files = files;
        self
    }

    /// How many records to keep in memory while the file cannot be written;
    /// beyond that the oldest is dropped (counted in [`LogStatus::dropped`],
    /// logged with `tracing::warn!` with `reason="queue_full"`, the write
    /// error and the record). The bound applies only to records waiting for
    /// a failing disk: a burst on a healthy disk is written whole. Must be at
    /// least 1. Default: 10 000.
    pub fn max_unwritten(mut self, records: usize) -> Self {
        self.max_unwritten = records;
        self
    }

    /// The log file's path.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Checks every setting; the error names the setting at fault.
    fn validate(&self) -> Result<(), LogError> {
        let what = if self.max_file_bytes == 0 {
            "max_file_bytes must be at least 1"
        } else if self.max_files == 0 {
            "max_files must be at least 1"
        } else if self.max_unwritten == 0 {
            "max_unwritten must be at least 1"
        } else if let FsyncPolicy::Batched { max_records: 0, .. } = self.fsync {
            "FsyncPolicy::Batched max_records must be at least 1"
        } else {
            return Ok(());
        };
        Err(LogError::InvalidConfig { what })
    }

    /// Takes the log's writer lock, opens (creates, or appends to) the file
    /// and starts the writer thread. For a log in a database
    /// (`FailedOffsetLog::sqlite`, `FailedOffsetLog::postgres`): opens it,
    /// creates or checks the log's tables, and starts the writer thread (the
    /// errors: see those functions).
    ///
    /// # Errors
    ///
    /// A [`LogError`] naming the path: [`InvalidConfig`](LogError::InvalidConfig)
    /// (naming the setting), [`InUse`](LogError::InUse) when another writer,
    /// in this process or another, has the log open (see the
    /// [module docs](super#one-writer-per-log)),
    /// [`NotAFile`](LogError::NotAFile) when the path is a directory, FIFO,
    /// device or socket, [`NotFound`](LogError::NotFound) when the directory
    /// does not exist, [`PermissionDenied`](LogError::PermissionDenied),
    /// [`NotADirectory`](LogError::NotADirectory) when a parent is not a
    /// directory, or [`Io`](LogError::Io).
    pub fn open(self) -> Result<FailedOffsetLog, LogError> {
        self.validate()?;
        let path = self.path.clone();
        #[cfg(feature = "postgres")]
        if let Some(target) = self.postgres.clone() {
            let writer = super::pg::PgWriter::open(target)?;
            return self.start(None, None, Some(DbConn::Postgres(Box::new(writer))));
        }
        if self.database {
            #[cfg(feature = "sqlite")]
            {
                let conn = super::db::open_writer(&path)?;
                return self.start(None, None, Some(DbConn::Sqlite(conn)));
            }
        }
        refuse_non_file(&path)?;
        let lock = take_lock(&path)?;
        // Re-checked on failure: the path may have been replaced meanwhile.
        let opened = open_file(&path).map_err(|(op, e)| {
            refuse_non_file(&path)
                .err()
                .unwrap_or_else(|| LogError::from_io(&path, op, e))
        })?;
        self.start(Some(lock), Some(opened), None)
    }

    /// Starts the writer thread on an opened file or database.
    fn start(
        self,
        lock: Option<File>,
        file: Option<OpenFile>,
        db: Option<DbConn>,
    ) -> Result<FailedOffsetLog, LogError> {
        let path = self.path.clone();
        let shared = Arc::new(Shared::default());
        let (tx, rx) = mpsc::channel();
        let mut writer = Writer {
            _lock: lock,
            cfg: self,
            shared: Arc::clone(&shared),
            file,
            db,
            pending: VecDeque::new(),
            unsynced: 0,
            first_unsynced: None,
            sync_error: None,
            error_streak: 0,
            retry_at: None,
            rotate_retry_at: None,
        };
        let thread = std::thread::Builder::new()
            .name("offset-guard-failure-log".into())
            .spawn(move || writer.run(rx))
            .map_err(|e| LogError::Io {
                path: path.clone(),
                op: "spawn writer thread",
                source: e,
            })?;
        Ok(FailedOffsetLog {
            inner: Arc::new(Inner {
                path,
                shared,
                tx: Mutex::new(Some(tx)),
                thread: Mutex::new(Some(thread)),
            }),
        })
    }

    /// Reads this log (for replay), the file or the database; `group`
    /// limits a database read to that group's rows.
    pub(crate) fn stream(&self, group: Option<&str>) -> Result<super::LogStream, LogError> {
        #[cfg(feature = "postgres")]
        if let Some(target) = &self.postgres {
            return super::LogStream::open_pg_target(target.clone(), group);
        }
        if self.database {
            #[cfg(feature = "sqlite")]
            return super::LogStream::open_sqlite_group(&self.path, group);
        }
        let _ = group;
        super::LogStream::open(&self.path)
    }
}

/// The durable [`FailureSink`]: appends failures (and [`Resolution`]s) to a
/// JSON Lines file from a writer thread of its own. See the
/// [module docs](super) for the format, durability and rotation.
///
/// Cloning is cheap and shares the writer. When the last clone is dropped the
/// writer writes and syncs what is queued, and the drop waits for it.
#[derive(Debug, Clone)]
pub struct FailedOffsetLog {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    path: PathBuf,
    shared: Arc<Shared>,
    tx: Mutex<Option<Sender<Command>>>,
    thread: Mutex<Option<JoinHandle<Result<(), LogError>>>>,
}

/// Counters shared by the handles and the writer thread.
#[derive(Debug, Default)]
struct Shared {
    records_written: AtomicU64,
    resolutions_written: AtomicU64,
    write_errors: AtomicU64,
    unwritten: AtomicU64,
    dropped: AtomicU64,
    rotations: AtomicU64,
    last_error: Mutex<Option<String>>,
}

impl Shared {
    fn last_error(&self) -> MutexGuard<'_, Option<String>> {
        self.last_error.lock().unwrap_or_else(|e| e.into_inner())
    }
}

enum Command {
    Append(LogEntry),
    Flush(mpsc::SyncSender<Result<(), LogError>>),
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

impl FailedOffsetLog {
    /// Opens the log at `path` with the default settings (see [`LogBuilder`]).
    pub fn open(path: impl AsRef<Path>) -> Result<FailedOffsetLog, LogError> {
        FailedOffsetLog::builder(path).open()
    }

    /// A builder for a log kept in the SQLite database at `path` (created if
    /// missing, its directory must exist): one row per entry in the table
    /// `offset_guard_failed_offsets`, which `open` creates (see the
    /// [module docs](super#in-a-database)). Several writers, in this process
    /// or others, may share one database: there is no writer lock.
    /// [`max_unwritten`](LogBuilder::max_unwritten) applies; the `fsync`
    /// policy, `max_file_bytes` and `max_files` have no effect (each row is
    /// committed on its own, with `synchronous=FULL`; the table is not
    /// rotated).
    ///
    /// ```
    /// use offset_guard::failure_log::{FailedOffsetLog, LogReader, Resolution};
    /// use offset_guard::{FailedOffset, FailureReason, FailureSink};
    ///
    /// # fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// # let unique = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH)?.as_nanos();
    /// # let dir = std::env::temp_dir().join(format!("offset-guard-doc-db-{}-{unique}", std::process::id()));
    /// # std::fs::create_dir_all(&dir)?;
    /// let db = dir.join("app.db");
    /// let log = FailedOffsetLog::sqlite(&db).open()?;
    /// log.record(FailedOffset::new("billing", "orders", 3, 42, FailureReason::Fatal));
    /// log.resolve(Resolution::recommitted("billing", "orders", 3, 42));
    /// log.close()?; // inserted and committed
    ///
    /// let reader = LogReader::open_sqlite(&db)?;
    /// assert_eq!(reader.entries().len(), 2);
    /// assert!(reader.unresolved().is_empty());
    /// # std::fs::remove_dir_all(&dir)?;
    /// # Ok(())
    /// # }
    /// ```
    #[cfg(feature = "sqlite")]
    pub fn sqlite(path: impl AsRef<Path>) -> LogBuilder {
        LogBuilder {
            database: true,
            ..FailedOffsetLog::builder(path)
        }
    }

    /// A builder for a log kept in PostgreSQL: one row per entry in the
    /// table `offset_guard_failed_offsets` of the current schema (the first
    /// of the connection's `search_path`), which `open` creates (see
    /// [In PostgreSQL](super#in-postgresql)). `conn` is a connection string
    /// as [`tokio_postgres::Config`] parses it (`postgresql://user@host/db`,
    /// `host=... user=...`); connected without TLS; a `connect_timeout` of
    /// 5 s unless it sets one. Errors and [`path`](LogBuilder::path) name it
    /// with its password replaced by `***`. Several writers, in this process
    /// or others, may share one table: there is no writer lock.
    /// [`max_unwritten`](LogBuilder::max_unwritten) applies; the `fsync`
    /// policy, `max_file_bytes` and `max_files` have no effect (each row is
    /// committed on its own; the table is not rotated).
    ///
    /// `open` connects (on a thread of its own, so it may be called from any
    /// thread, also inside a tokio runtime) and fails with
    /// [`LogError::Database`] when the string does not parse or the server
    /// cannot be reached, [`LogError::SchemaTooNew`] /
    /// [`LogError::ForeignSchema`] when the log's tables are not this
    /// build's. Once open, an unreachable or busy server delays records (kept
    /// in memory, retried every second, counted and warned) and loses none
    /// up to `max_unwritten`.
    ///
    /// (The example runs where the tests' server is named by
    /// `OFFSET_GUARD_POSTGRES`, in a schema of its own; elsewhere it returns
    /// at once.)
    ///
    /// ```
    /// # fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// use offset_guard::failure_log::{FailedOffsetLog, LogReader, Resolution};
    /// use offset_guard::{FailedOffset, FailureReason, FailureSink};
    ///
    /// # let Ok(base) = std::env::var("OFFSET_GUARD_POSTGRES") else { return Ok(()) };
    /// # let schema = format!("doc_log_{}", std::process::id());
    /// # let rt = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
    /// # let sql = |q: String| rt.block_on(async {
    /// #     let (c, conn) = tokio_postgres::connect(&base, tokio_postgres::NoTls).await?;
    /// #     tokio::spawn(conn);
    /// #     c.batch_execute(&q).await
    /// # });
    /// # sql(format!("CREATE SCHEMA {schema}"))?;
    /// # let url = format!("{base}?options=-csearch_path%3D{schema}");
    /// // e.g. url = "postgresql://app@db.example/app"
    /// let log = FailedOffsetLog::postgres(&url).open()?;
    /// log.record(FailedOffset::new("billing", "orders", 3, 42, FailureReason::Fatal));
    /// log.resolve(Resolution::recommitted("billing", "orders", 3, 42));
    /// log.close()?; // both rows inserted and committed
    ///
    /// let reader = LogReader::open_postgres(&url)?;
    /// assert_eq!(reader.entries().len(), 2);
    /// assert!(reader.unresolved().is_empty());
    /// # sql(format!("DROP SCHEMA {schema} CASCADE"))?;
    /// # Ok(())
    /// # }
    /// ```
    #[cfg(feature = "postgres")]
    pub fn postgres(conn: &str) -> LogBuilder {
        let target = super::pg::PgTarget::new(conn);
        LogBuilder {
            postgres: Some(target.clone()),
            ..FailedOffsetLog::builder(&target.name)
        }
    }

    /// A builder for the log at `path`.
    pub fn builder(path: impl AsRef<Path>) -> LogBuilder {
        LogBuilder {
            path: path.as_ref().to_path_buf(),
            database: false,
            #[cfg(feature = "postgres")]
            postgres: None,
            fsync: FsyncPolicy::default(),
            max_file_bytes: 64 * 1024 * 1024,
            max_files: 8,
            max_unwritten: 10_000,
        }
    }

    /// The log file's path.
    pub fn path(&self) -> &Path {
        &self.inner.path
    }

    /// Appends a resolution record (a failed offset was committed after all).
    /// Queued like [`record`](FailureSink::record); never blocks on I/O.
    pub fn resolve(&self, resolution: Resolution) {
        self.append(LogEntry::Resolved(resolution));
    }

    /// Appends any entry. Never blocks on I/O.
    pub fn append(&self, entry: LogEntry) {
        let shared = &self.inner.shared;
        shared.unwritten.fetch_add(1, Ordering::Relaxed);
        let sent = match lock(&self.inner.tx).as_ref() {
            Some(tx) => tx.send(Command::Append(entry)).map_err(|e| e.0),
            None => Err(Command::Append(entry)),
        };
        if let Err(Command::Append(entry)) = sent {
            shared.unwritten.fetch_sub(1, Ordering::Relaxed);
            let dropped = shared.dropped.fetch_add(1, Ordering::Relaxed) + 1;
            warn!(
                path = %self.inner.path.display(),
                reason = "closed",
                dropped,
                topic = entry.topic(),
                partition = entry.partition(),
                offset = entry.offset(),
                record = %entry.to_json_line().trim_end(),
                "failed-offset log is closed; record dropped"
            );
        }
    }

    /// Waits until everything queued before this call is written and synced
    /// to disk. Fails when records could not be written (they stay queued for
    /// a retry) or the `fsync` failed.
    pub fn flush(&self) -> Result<(), LogError> {
        self.flush_inner(None)
    }

    /// Like [`flush`](Self::flush), giving up with [`LogError::Timeout`] after
    /// `timeout` (the flush still completes in the background).
    pub fn flush_timeout(&self, timeout: Duration) -> Result<(), LogError> {
        self.flush_inner(Some(timeout))
    }

    fn flush_inner(&self, timeout: Option<Duration>) -> Result<(), LogError> {
        let path = || self.inner.path.clone();
        let (reply_tx, reply_rx) = mpsc::sync_channel(1);
        lock(&self.inner.tx)
            .as_ref()
            .ok_or_else(|| LogError::Closed { path: path() })?
            .send(Command::Flush(reply_tx))
            .map_err(|_| LogError::Closed { path: path() })?;
        match timeout {
            None => reply_rx
                .recv()
                .map_err(|_| LogError::Closed { path: path() })?,
            Some(after) => match reply_rx.recv_timeout(after) {
                Ok(r) => r,
                Err(RecvTimeoutError::Timeout) => Err(LogError::Timeout {
                    path: path(),
                    after,
                }),
                Err(RecvTimeoutError::Disconnected) => Err(LogError::Closed { path: path() }),
            },
        }
    }

    /// Writes and syncs what is queued, then stops the writer thread, for
    /// every clone of this handle. Records appended afterwards are dropped
    /// (and counted). Closing twice is fine; the second close returns `Ok`.
    pub fn close(&self) -> Result<(), LogError> {
        self.inner.close()
    }

    /// [`LogStatus::dropped`], without the rest of the snapshot.
    pub(crate) fn dropped(&self) -> u64 {
        self.inner.shared.dropped.load(Ordering::Relaxed)
    }

    /// A snapshot of the counters.
    pub fn status(&self) -> LogStatus {
        let s = &self.inner.shared;
        LogStatus {
            records_written: s.records_written.load(Ordering::Relaxed),
            resolutions_written: s.resolutions_written.load(Ordering::Relaxed),
            write_errors: s.write_errors.load(Ordering::Relaxed),
            unwritten: s.unwritten.load(Ordering::Relaxed),
            dropped: s.dropped.load(Ordering::Relaxed),
            rotations: s.rotations.load(Ordering::Relaxed),
            last_error: s.last_error().clone(),
        }
    }
}

impl Inner {
    fn close(&self) -> Result<(), LogError> {
        // Dropping the sender ends the writer's loop after the queue drains.
        drop(lock(&self.tx).take());
        let Some(thread) = lock(&self.thread).take() else {
            return Ok(());
        };
        thread.join().unwrap_or(Err(LogError::Closed {
            path: self.path.clone(),
        }))
    }
}

impl Drop for Inner {
    fn drop(&mut self) {
        if let Err(e) = self.close() {
            warn!(path = %self.path.display(), error = %e, "failed-offset log closed with unwritten records");
        }
    }
}

impl FailureSink for FailedOffsetLog {
    fn record(&self, failure: FailedOffset) {
        self.append(LogEntry::Failure(failure.into()));
    }
}

/// An open log file and what the writer knows about it.
struct OpenFile {
    file: File,
    size: u64,
    /// The file does not end with a newline (a torn line from a crash, or a
    /// short write we could not undo): start the next write with one.
    needs_newline: bool,
}

/// Opens (or creates) `path` for reading and appending, non-blocking so that
/// a FIFO or device put there never blocks the open, and refuses anything but
/// a regular file (`O_NONBLOCK` has no effect on regular files).
fn open_regular(path: &Path) -> io::Result<File> {
    let mut options = OpenOptions::new();
    options.read(true).append(true).create(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        options.custom_flags(libc::O_NONBLOCK);
    }
    let file = options.open(path)?;
    match special_kind(&file.metadata()?.file_type()) {
        Some(kind) => Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("a {kind}, not a regular file"),
        )),
        None => Ok(file),
    }
}

/// The lock file of the log at `path`: its real path (symlinks, `.` and
/// `..` resolved, so that two spellings of one log share one lock) +
/// `.lock`. A directory that does not exist is an error naming the log.
fn lock_path(path: &Path) -> Result<PathBuf, LogError> {
    let real = match std::fs::canonicalize(path) {
        Ok(real) => real,
        // Not there yet: the real directory, and the name as given.
        Err(_) => {
            let dir = match path.parent() {
                Some(p) if !p.as_os_str().is_empty() => p,
                _ => Path::new("."),
            };
            let name = path.file_name().ok_or(LogError::InvalidConfig {
                what: "the log path must name a file",
            })?;
            std::fs::canonicalize(dir)
                .map_err(|e| LogError::from_io(path, "open", e))?
                .join(name)
        }
    };
    let mut s = real.into_os_string();
    s.push(".lock");
    Ok(PathBuf::from(s))
}

/// How long [`take_lock`] keeps trying a lock that is taken before it
/// reports [`LogError::InUse`]. A `flock` lock belongs to the open file, which
/// a child process forked (by any thread of the process) while a writer held
/// the lock shares until it calls `exec`: a writer that closed a moment ago
/// may still be seen holding it for that long.
const LOCK_WAIT: Duration = Duration::from_millis(250);

/// How often [`take_lock`] tries again within [`LOCK_WAIT`].
const LOCK_RETRY: Duration = Duration::from_millis(5);

/// Takes the exclusive writer lock of the log at `path`, trying for at most
/// [`LOCK_WAIT`]; the returned file holds it until dropped. The lock is on a
/// file of its own that is never renamed, so rotation does not affect it.
fn take_lock(path: &Path) -> Result<File, LogError> {
    let lock_path = lock_path(path)?;
    let file = open_regular(&lock_path).map_err(|e| {
        refuse_non_file(&lock_path)
            .err()
            .unwrap_or_else(|| LogError::from_io(&lock_path, "open lock file", e))
    })?;
    let started = Instant::now();
    loop {
        match file.try_lock() {
            Ok(()) => return Ok(file),
            Err(TryLockError::WouldBlock) if started.elapsed() < LOCK_WAIT => {
                std::thread::sleep(LOCK_RETRY);
            }
            Err(TryLockError::WouldBlock) => {
                return Err(LogError::InUse {
                    path: path.to_path_buf(),
                    lock_path,
                });
            }
            Err(TryLockError::Error(e)) => {
                return Err(LogError::from_io(&lock_path, "lock", e));
            }
        }
    }
}

fn open_file(path: &Path) -> Result<OpenFile, (&'static str, io::Error)> {
    let mut file = open_regular(path).map_err(|e| ("open", e))?;
    let size = file.metadata().map_err(|e| ("stat", e))?.len();
    let mut needs_newline = false;
    if size > 0 {
        let mut last = [0u8];
        file.seek(SeekFrom::Start(size - 1))
            .and_then(|_| file.read_exact(&mut last))
            .map_err(|e| ("read", e))?;
        needs_newline = last[0] != b'\n';
    }
    Ok(OpenFile {
        file,
        size,
        needs_newline,
    })
}

/// Whether `path` still names the file we have open (it may have been
/// deleted, or its directory removed, under us).
fn still_linked(path: &Path, file: &File) -> bool {
    #[cfg(unix)]
    {
        use std::os::unix::fs::MetadataExt;
        match (std::fs::metadata(path), file.metadata()) {
            (Ok(a), Ok(b)) => a.dev() == b.dev() && a.ino() == b.ino(),
            _ => false,
        }
    }
    #[cfg(not(unix))]
    {
        let _ = file;
        path.exists()
    }
}

fn sync_dir(path: &Path) {
    #[cfg(unix)]
    if let Some(dir) = path.parent() {
        let dir = if dir.as_os_str().is_empty() {
            Path::new(".")
        } else {
            dir
        };
        if let Ok(d) = File::open(dir) {
            let _ = d.sync_all();
        }
    }
    #[cfg(not(unix))]
    let _ = path;
}

fn numbered(path: &Path, n: u64) -> PathBuf {
    let mut s = path.as_os_str().to_owned();
    s.push(format!(".{n}"));
    PathBuf::from(s)
}

/// How long to wait before retrying a failed write when nothing else comes.
const RETRY_INTERVAL: Duration = Duration::from_secs(1);

/// How long to keep writing to an oversized file after a failed rotation.
const ROTATE_RETRY_INTERVAL: Duration = Duration::from_secs(60);

/// The connection of a log kept in a database.
enum DbConn {
    #[cfg(feature = "sqlite")]
    Sqlite(rusqlite::Connection),
    #[cfg(feature = "postgres")]
    Postgres(Box<super::pg::PgWriter>),
    /// No database backend in this build (keeps the enum usable without one).
    #[allow(dead_code)]
    None(std::convert::Infallible),
}

impl DbConn {
    /// Inserts one line as one row, committed on its own: nothing is left to
    /// sync afterwards (SQLite with synchronous=FULL; PostgreSQL's commit).
    fn insert(&mut self, line: &str) -> Result<(), (&'static str, io::Error)> {
        let _ = line; // unused in a build without a database backend
        match self {
            #[cfg(feature = "sqlite")]
            DbConn::Sqlite(conn) => {
                super::db::insert(conn, line).map_err(|e| ("insert", io::Error::other(e)))
            }
            #[cfg(feature = "postgres")]
            DbConn::Postgres(w) => w.insert(line).map_err(|e| {
                let text = match e {
                    LogError::Database {
                        op: "insert",
                        source,
                        ..
                    } => source.to_string(),
                    LogError::Database { op, source, .. } => format!("{op}: {source}"),
                    other => other.to_string(),
                };
                ("insert", io::Error::other(text))
            }),
            DbConn::None(never) => match *never {},
        }
    }
}

/// The writer thread's state; it alone touches the file.
struct Writer {
    /// The writer lock (`path.lock`), held until the thread ends: dropped
    /// with the writer, after the log file was synced and closed.
    /// The file's writer lock (none for a database).
    _lock: Option<File>,
    cfg: LogBuilder,
    /// The database connection of a log kept in a database (then `file` is `None`).
    db: Option<DbConn>,
    shared: Arc<Shared>,
    file: Option<OpenFile>,
    /// Lines accepted but not written, oldest first, with whether each is a failure.
    pending: VecDeque<(String, bool)>,
    /// Records written since the last fsync.
    unsynced: usize,
    first_unsynced: Option<Instant>,
    /// An fsync failed since the last successful one.
    sync_error: Option<String>,
    /// Consecutive failed attempts.
    error_streak: u64,
    retry_at: Option<Instant>,
    /// After a failed rotation, when to try rotating again.
    rotate_retry_at: Option<Instant>,
}

impl Writer {
    fn run(&mut self, rx: Receiver<Command>) -> Result<(), LogError> {
        loop {
            let deadline = [self.sync_deadline(), self.retry_at]
                .into_iter()
                .flatten()
                .min();
            let cmd = match deadline {
                None => rx.recv().map_err(|_| RecvTimeoutError::Disconnected),
                Some(d) => rx.recv_timeout(d.saturating_duration_since(Instant::now())),
            };
            match cmd {
                Ok(Command::Append(entry)) => {
                    self.enqueue(entry);
                    // Take whatever else is queued, then write it all.
                    let mut flushes = Vec::new();
                    while let Ok(cmd) = rx.try_recv() {
                        match cmd {
                            Command::Append(entry) => self.enqueue(entry),
                            Command::Flush(reply) => {
                                self.write_pending();
                                flushes.push(reply);
                            }
                        }
                    }
                    self.write_pending();
                    if flushes.is_empty() {
                        self.sync_if_due();
                    } else {
                        let r = self.flush_now();
                        for reply in flushes {
                            let _ = reply.send(self.clone_result(&r));
                        }
                    }
                }
                Ok(Command::Flush(reply)) => {
                    let _ = reply.send(self.flush_now());
                }
                Err(RecvTimeoutError::Timeout) => {
                    self.write_pending();
                    self.sync_if_due();
                }
                Err(RecvTimeoutError::Disconnected) => {
                    let r = self.flush_now();
                    if let Some(f) = self.file.take() {
                        drop(f.file);
                    }
                    return r;
                }
            }
        }
    }

    fn clone_result(&self, r: &Result<(), LogError>) -> Result<(), LogError> {
        match r {
            Ok(()) => Ok(()),
            Err(_) => Err(self.write_error()),
        }
    }

    fn write_error(&self) -> LogError {
        LogError::Write {
            path: self.cfg.path.clone(),
            unwritten: self.pending.len() as u64,
            message: self
                .shared
                .last_error()
                .clone()
                .or_else(|| self.sync_error.clone())
                .unwrap_or_else(|| "unknown error".into()),
        }
    }

    fn enqueue(&mut self, entry: LogEntry) {
        // The bound is on what waits for the disk: with a full queue, write
        // it out first unless writes are failing (then wait for the retry).
        if self.pending.len() >= self.cfg.max_unwritten
            && self.retry_at.is_none_or(|t| Instant::now() >= t)
        {
            self.write_pending();
        }
        let is_failure = matches!(entry, LogEntry::Failure(_));
        self.pending.push_back((entry.to_json_line(), is_failure));
        while self.pending.len() > self.cfg.max_unwritten {
            let Some((line, _)) = self.pending.pop_front() else {
                break;
            };
            self.shared.unwritten.fetch_sub(1, Ordering::Relaxed);
            self.shared.dropped.fetch_add(1, Ordering::Relaxed);
            let error = self.shared.last_error().clone().unwrap_or_default();
            warn!(
                path = %self.cfg.path.display(),
                reason = "queue_full",
                error = %error,
                max_unwritten = self.cfg.max_unwritten,
                dropped = self.shared.dropped.load(Ordering::Relaxed),
                record = %line.trim_end(),
                "failed-offset log cannot be written and its in-memory queue is full; oldest record dropped"
            );
        }
    }

    fn sync_deadline(&self) -> Option<Instant> {
        match self.cfg.fsync {
            // No deadline when it is beyond what an Instant can hold
            // (`Duration::MAX`: only `max_records`, flush and close sync).
            FsyncPolicy::Batched { max_delay, .. } => {
                self.first_unsynced.and_then(|t| t.checked_add(max_delay))
            }
            FsyncPolicy::EveryRecord => None,
        }
    }

    fn sync_if_due(&mut self) {
        if self.unsynced == 0 {
            return;
        }
        let due = match self.cfg.fsync {
            FsyncPolicy::EveryRecord => true,
            FsyncPolicy::Batched {
                max_records,
                max_delay,
            } => {
                self.unsynced >= max_records
                    || self
                        .first_unsynced
                        .is_some_and(|t| t.elapsed() >= max_delay)
            }
        };
        if due {
            self.sync();
        }
    }

    fn sync(&mut self) {
        if self.unsynced == 0 {
            return;
        }
        if self.db.is_some() {
            // Every row was committed durably when it was inserted.
            self.unsynced = 0;
            self.first_unsynced = None;
            return;
        }
        let Some(f) = &self.file else { return };
        match f.file.sync_data() {
            Ok(()) => self.sync_error = None,
            Err(e) => {
                self.sync_error = Some(format!("fsync: {e}"));
                self.failed("fsync", &e);
            }
        }
        // A failed fsync is not retried: after one, Linux may already have
        // dropped the dirty pages, so a retry could falsely report success.
        self.unsynced = 0;
        self.first_unsynced = None;
    }

    fn flush_now(&mut self) -> Result<(), LogError> {
        self.write_pending();
        self.sync();
        if self.pending.is_empty() && self.sync_error.is_none() {
            Ok(())
        } else {
            let e = self.write_error();
            self.sync_error = None;
            Err(e)
        }
    }

    fn failed(&mut self, op: &'static str, e: &io::Error) {
        self.shared.write_errors.fetch_add(1, Ordering::Relaxed);
        *self.shared.last_error() = Some(format!("{op}: {e}"));
        self.error_streak += 1;
        // Warn on the first failure of a streak, then every 100th attempt.
        if self.error_streak == 1 || self.error_streak.is_multiple_of(100) {
            warn!(
                path = %self.cfg.path.display(),
                op,
                error = %e,
                failed_attempts = self.error_streak,
                unwritten = self.pending.len(),
                "failed-offset log write failed; records kept in memory and retried"
            );
        }
    }

    fn succeeded(&mut self) {
        if self.error_streak > 0 {
            info!(
                path = %self.cfg.path.display(),
                failed_attempts = self.error_streak,
                "failed-offset log writable again"
            );
            self.error_streak = 0;
            *self.shared.last_error() = None;
        }
        self.retry_at = None;
    }

    /// Writes every pending line, oldest first; stops at the first failure,
    /// keeping the rest for a retry.
    fn write_pending(&mut self) {
        while let Some((line, is_failure)) = self.pending.pop_front() {
            match self.write_line(&line) {
                Ok(()) => {
                    self.shared.unwritten.fetch_sub(1, Ordering::Relaxed);
                    let counter = if is_failure {
                        &self.shared.records_written
                    } else {
                        &self.shared.resolutions_written
                    };
                    counter.fetch_add(1, Ordering::Relaxed);
                    if self.unsynced == 0 {
                        self.first_unsynced = Some(Instant::now());
                    }
                    self.unsynced += 1;
                    self.succeeded();
                    // Checked per record, so a burst never leaves more than
                    // `max_records` written but not synced.
                    self.sync_if_due();
                }
                Err((op, e)) => {
                    self.pending.push_front((line, is_failure));
                    self.failed(op, &e);
                    self.retry_at = Some(Instant::now() + RETRY_INTERVAL);
                    return;
                }
            }
        }
    }

    /// Writes one line (with its newline) in one `write` call: with
    /// `O_APPEND` it lands as a unit after whatever is in the file.
    fn write_line(&mut self, line: &str) -> Result<(), (&'static str, io::Error)> {
        if let Some(db) = self.db.as_mut() {
            return db.insert(line);
        }
        self.ensure_open(line.len() as u64)?;
        let Some(f) = self.file.as_mut() else {
            return Err(("open", io::Error::other("no open file")));
        };
        let mut buf = Vec::with_capacity(line.len() + 1);
        if f.needs_newline {
            buf.push(b'\n');
        }
        buf.extend_from_slice(line.as_bytes());
        loop {
            match f.file.write(&buf) {
                Ok(n) if n == buf.len() => {
                    f.size += n as u64;
                    f.needs_newline = false;
                    return Ok(());
                }
                Ok(n) => {
                    // A short write (disk full): cut the fragment off, or at
                    // least make the next record start on a line of its own.
                    let before = f.size;
                    f.size += n as u64;
                    if n > 0 {
                        match f.file.set_len(before) {
                            Ok(()) => f.size = before,
                            Err(_) => f.needs_newline = true,
                        }
                    }
                    return Err((
                        "write",
                        io::Error::new(
                            io::ErrorKind::WriteZero,
                            format!("short write ({n} of {} bytes)", buf.len()),
                        ),
                    ));
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => {
                    // Sync what this handle wrote, then reopen next time: the
                    // file may be gone or replaced.
                    self.sync();
                    self.file = None;
                    return Err(("write", e));
                }
            }
        }
    }

    /// Makes sure an open file, still at `path`, has room for `next` bytes
    /// (rotating if needed).
    fn ensure_open(&mut self, next: u64) -> Result<(), (&'static str, io::Error)> {
        if let Some(f) = &self.file
            && !still_linked(&self.cfg.path, &f.file)
        {
            debug!(path = %self.cfg.path.display(), "failed-offset log file vanished; reopening");
            self.sync();
            self.file = None;
        }
        if self.file.is_none() {
            self.file = Some(open_file(&self.cfg.path)?);
            sync_dir(&self.cfg.path);
        }
        let size = self.file.as_ref().map_or(0, |f| f.size);
        let rotation_blocked = self.rotate_retry_at.is_some_and(|t| Instant::now() < t);
        if size > 0 && size.saturating_add(next) > self.cfg.max_file_bytes && !rotation_blocked {
            if let Err(e) = self.rotate() {
                // Keep writing to the current (oversized) file rather than
                // hold records back; try rotating again later.
                self.failed("rotate", &e);
                self.rotate_retry_at = Some(Instant::now() + ROTATE_RETRY_INTERVAL);
                if self.file.is_none() {
                    self.file = Some(open_file(&self.cfg.path)?);
                }
            } else {
                self.rotate_retry_at = None;
            }
        }
        Ok(())
    }

    /// `path.{max_files-2}` -> `path.{max_files-1}`, ..., `path` -> `path.1`,
    /// dropping the oldest, then a new `path`.
    fn rotate(&mut self) -> io::Result<()> {
        self.sync();
        let path = self.cfg.path.clone();
        // Rotated files kept (never numbered above MAX_ROTATED).
        let keep = ((self.cfg.max_files - 1) as u64).min(super::MAX_ROTATED);
        let siblings = rotated_siblings(&path);
        for (n, old) in &siblings {
            if *n >= keep {
                remove_if_exists(old)?;
            }
        }
        if keep == 0 {
            remove_if_exists(&path)?;
        } else {
            // Only the files that exist are renamed, newest number first: the
            // work is bounded by the files on disk, whatever max_files says.
            for (n, old) in siblings.iter().rev().filter(|(n, _)| *n < keep) {
                rename_if_exists(old, &numbered(&path, n + 1))?;
            }
            rename_if_exists(&path, &numbered(&path, 1))?;
        }
        self.file = None;
        let opened = open_file(&path).map_err(|(_, e)| e)?;
        self.file = Some(opened);
        sync_dir(&path);
        self.shared.rotations.fetch_add(1, Ordering::Relaxed);
        debug!(path = %path.display(), "failed-offset log rotated");
        Ok(())
    }
}

fn remove_if_exists(p: &Path) -> io::Result<()> {
    match std::fs::remove_file(p) {
        Err(e) if e.kind() != io::ErrorKind::NotFound => Err(e),
        _ => Ok(()),
    }
}

fn rename_if_exists(from: &Path, to: &Path) -> io::Result<()> {
    match std::fs::rename(from, to) {
        Err(e) if e.kind() != io::ErrorKind::NotFound => Err(e),
        _ => Ok(()),
    }
}
