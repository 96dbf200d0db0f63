//! Reading the log back: a streaming reader over the rotated files, the
//! whole log in memory for small logs, damaged lines as issues, folding
//! resolutions (incrementally, with bounded memory), per-partition summaries.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::fmt;
use std::fs::File;
use std::io::{self, BufRead, BufReader, Read};
use std::path::{Path, PathBuf};
use std::time::SystemTime;

use super::record::{FailureRecord, LogEntry, ReadIssueKind, ResolutionKind};
use super::{LogError, MAX_ROTATED, beyond_rotation, rotated_siblings};
use crate::sink::FailureReason;
/// A line the reader could not use, and where it is.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct ReadIssue {
    /// The file it is in.
    pub file: PathBuf,
    /// Its 1-based line number in that file (0 for a whole-file problem).
    pub line: usize,
    /// What is wrong.
    pub kind: ReadIssueKind,
    /// The start of the line (at most 80 characters, lossily decoded).
    pub excerpt: String,
}

impl fmt::Display for ReadIssue {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}: {}", self.file.display(), self.line, self.kind)?;
        if !self.excerpt.is_empty() {
            write!(f, ": {}", self.excerpt)?;
        }
        Ok(())
    }
}

const EXCERPT_CHARS: usize = 80;

/// The start of a line, lossily decoded, control characters replaced (so it
/// is safe to print on a terminal).
fn excerpt(bytes: &[u8]) -> String {
    let s = String::from_utf8_lossy(bytes);
    let mut out: String = s
        .chars()
        .take(EXCERPT_CHARS)
        .map(|c| if c.is_control() { '\u{fffd}' } else { c })
        .collect();
    if s.chars().nth(EXCERPT_CHARS).is_some() {
        out.push('…');
    }
    out
}

/// The longest line the reader accepts, in bytes (1 MiB). A record is a few
/// hundred bytes; a longer line is reported as [`ReadIssueKind::LineTooLong`]
/// and skipped, so reading garbage without newlines keeps memory bounded.
pub const MAX_LINE_BYTES: usize = 1 << 20;

const BOM: &[u8] = b"\xef\xbb\xbf";

/// What a stream reads next.
enum Source {
    /// An open file (or other input) of the log.
    Open(PathBuf, Box<dyn BufRead + Send>),
    /// A file that could not be opened, or a missing rotated file.
    Issue(ReadIssue),
}

/// The file being read.
struct Current {
    file: PathBuf,
    input: Box<dyn BufRead + Send>,
    line: usize,
}

/// The log read line by line, with bounded memory: every readable entry in
/// log order, and each damaged line as an `Err(`[`ReadIssue`]`)` where it is.
///
/// [`open`](Self::open) reads the rotated set `path.N ... path.1, path`,
/// oldest first, like [`LogReader::open`]; it holds one line (at most
/// [`MAX_LINE_BYTES`]) and one read buffer at a time, so a log of any size
/// can be read. A UTF-8 byte order mark at the start of a file is skipped.
/// A stream never fails on the content of a file: torn, garbage, non-UTF-8
/// or newer-version lines, a missing rotated file between others
/// ([`ReadIssueKind::MissingFile`]) and read errors are issues, and reading
/// goes on. For a complete last line without its newline the entry is
/// yielded, then a [`ReadIssueKind::UnterminatedLine`] issue.
///
/// Every file is opened when the stream is opened, so a rotation while
/// reading does not make it skip or repeat a file (records appended
/// meanwhile may or may not be read).
///
/// ```
/// # fn main() -> Result<(), Box<dyn std::error::Error>> {
/// use offset_guard::failure_log::{LogEntry, LogStream, UnresolvedOffsets};
///
/// let log = concat!(
///     r#"{"v":1,"kind":"failure","time":"2026-11-23T14:30:36.123Z","group_id":"billing","member_id":null,"topic":"orders","partition":3,"offset":42,"reason":"retries_exhausted","error_code":null,"error_message":"timed out","attempts":5,"elapsed_ms":9120}"#, "\n",
///     "garbage\n",
/// );
/// let mut unresolved = UnresolvedOffsets::new();
/// let mut damaged = 0;
/// for item in LogStream::from_reader("example.jsonl", log.as_bytes()) {
///     match item {
///         Ok(entry) => unresolved.push(&entry),
///         Err(issue) => damaged += 1, // e.g. print `issue`
///     }
/// }
/// assert_eq!(damaged, 1);
/// assert_eq!(unresolved.offsets("billing", "orders", 3), [42]);
/// # Ok(())
/// # }
/// ```
pub struct LogStream {
    sources: VecDeque<Source>,
    current: Option<Current>,
    /// An issue that follows the entry just yielded (unterminated last line).
    queued: Option<ReadIssue>,
    buf: Vec<u8>,
    files: Vec<PathBuf>,
}

impl fmt::Debug for LogStream {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("LogStream")
            .field("files", &self.files)
            .field("current", &self.current.as_ref().map(|c| (&c.file, c.line)))
            .finish_non_exhaustive()
    }
}

impl LogStream {
    /// Opens the log at `path` and its rotated files (`path.N`, ...,
    /// `path.1`, `path`; read oldest first).
    ///
    /// # Errors
    ///
    /// [`LogError::NotFound`] when neither `path` nor any rotated file
    /// exists; [`LogError::PermissionDenied`] or another [`LogError`] when
    /// `path` exists but cannot be opened. A rotated file that cannot be
    /// opened is a [`ReadIssueKind::Io`] issue, one missing between others a
    /// [`ReadIssueKind::MissingFile`] issue, both yielded where its records
    /// would be.
    pub fn open(path: impl AsRef<Path>) -> Result<LogStream, LogError> {
        let path = path.as_ref();
        let siblings = rotated_siblings(path);
        let mut sources = VecDeque::new();
        let mut expected = siblings.last().map_or(0, |(n, _)| *n);
        for (n, file) in siblings.iter().rev() {
            // Gaps between the numbers found: files missing in the middle.
            if expected > *n {
                sources.push_back(Source::Issue(gap_issue(path, n + 1, expected)));
            }
            expected = n - 1;
            sources.push_back(match open_readable(file) {
                Ok(f) => Source::Open(file.clone(), Box::new(BufReader::with_capacity(1 << 16, f))),
                Err(e) => Source::Issue(whole_file_issue(
                    file.clone(),
                    ReadIssueKind::Io(e.to_string()),
                )),
            });
        }
        if expected >= 1 {
            // `path.1` .. below the lowest found are missing too.
            sources.push_back(Source::Issue(gap_issue(path, 1, expected)));
        }
        let beyond = beyond_rotation(path);
        if let Some(first) = beyond.first() {
            sources.push_front(Source::Issue(ReadIssue {
                file: first.clone(),
                line: 0,
                kind: ReadIssueKind::NotRotated,
                excerpt: format!(
                    "{} such file(s), numbered above {MAX_ROTATED}",
                    beyond.len()
                ),
            }));
        }
        match open_readable(path) {
            Ok(f) => sources.push_back(Source::Open(
                path.to_path_buf(),
                Box::new(BufReader::with_capacity(1 << 16, f)),
            )),
            // Between a rotation's rename and the new file, or all rotated away.
            Err(e) if e.kind() == io::ErrorKind::NotFound && !siblings.is_empty() => {}
            Err(e) => return Err(LogError::from_io(path, "read", e)),
        }
        Ok(LogStream::with_sources(sources))
    }

    /// Reads the log kept in the SQLite database at `path` (see the
    /// [module docs](super#in-a-database)), oldest row first, a page of rows
    /// at a time (bounded memory). Issues name the database file and the
    /// row's `id` as the line number; a row whose `line` is not a valid log
    /// line is an issue like a damaged line of a file. Rows written while
    /// the stream runs may or may not be seen.
    ///
    /// # Errors
    ///
    /// [`LogError::NotFound`] when the file does not exist,
    /// [`LogError::NotAFile`] when the path is a directory, a device or
    /// another special file, [`LogError::NoLogTable`] when the database has
    /// no log,
    /// [`LogError::SchemaTooNew`] / [`LogError::ForeignSchema`] when its log
    /// tables are not this build's, [`LogError::Database`] when it cannot be
    /// opened or read. A read that fails later is a [`ReadIssueKind::Io`]
    /// issue, and the stream ends.
    #[cfg(feature = "sqlite")]
    pub fn open_sqlite(path: impl AsRef<Path>) -> Result<LogStream, LogError> {
        LogStream::open_sqlite_group(path.as_ref(), None)
    }

    /// [`open_sqlite`](Self::open_sqlite), only the rows of `group` when given.
    #[cfg(feature = "sqlite")]
    pub(crate) fn open_sqlite_group(
        path: &Path,
        group: Option<&str>,
    ) -> Result<LogStream, LogError> {
        let conn = super::db::open_reader(path)?;
        let rows = super::db::DbLines::new(conn, path.to_path_buf(), group.map(str::to_owned));
        Ok(LogStream::from_reader(
            path,
            super::rows::RowLines::new(rows),
        ))
    }

    /// Reads the log kept in PostgreSQL (see
    /// [`FailedOffsetLog::postgres`](super::FailedOffsetLog::postgres) for
    /// `conn` and the [module docs](super#in-postgresql)), oldest row first
    /// (by id: in write order within each group), a page of rows at a time
    /// (bounded memory) from a thread of its own with its own connection, so
    /// it may be called from any thread. Issues name the connection string
    /// (password as `***`) and the row's `id` as the line number; a row whose
    /// `line` is not a valid log line is an issue like a damaged line of a
    /// file. Rows written while the stream runs may or may not be seen.
    ///
    /// # Errors
    ///
    /// [`LogError::Database`] when the string does not parse or the server
    /// cannot be reached (within its `connect_timeout`, default 5 s),
    /// [`LogError::NoLogTable`] when the schema has no log,
    /// [`LogError::SchemaTooNew`] / [`LogError::ForeignSchema`] when its log
    /// tables are not this build's. A read that fails later is a
    /// [`ReadIssueKind::Io`] issue, and the stream ends.
    #[cfg(feature = "postgres")]
    pub fn open_postgres(conn: &str) -> Result<LogStream, LogError> {
        LogStream::open_pg_target(super::pg::PgTarget::new(conn), None)
    }

    /// [`open_postgres`](Self::open_postgres), only the rows of `group` when given.
    #[cfg(feature = "postgres")]
    pub(crate) fn open_pg_target(
        target: super::pg::PgTarget,
        group: Option<&str>,
    ) -> Result<LogStream, LogError> {
        let name = target.name.clone();
        let rows = super::pg::PgLines::open(target, group.map(str::to_owned))?;
        Ok(LogStream::from_reader(
            name,
            super::rows::RowLines::new(rows),
        ))
    }

    /// Reads log content from any reader (a file, stdin, a buffer); `name`
    /// names it in issues.
    pub fn from_reader(name: impl Into<PathBuf>, input: impl Read + Send + 'static) -> LogStream {
        let input: Box<dyn BufRead + Send> = Box::new(BufReader::with_capacity(1 << 16, input));
        LogStream::with_sources(VecDeque::from([Source::Open(name.into(), input)]))
    }

    fn with_sources(sources: VecDeque<Source>) -> LogStream {
        LogStream {
            sources,
            current: None,
            queued: None,
            buf: Vec::new(),
            files: Vec::new(),
        }
    }

    /// The files opened so far, oldest first.
    pub fn files(&self) -> &[PathBuf] {
        &self.files
    }

    /// The next line of the current file, as an item; `None` at its end.
    fn next_in_file(&mut self) -> Option<Result<LogEntry, ReadIssue>> {
        let cur = self.current.as_mut()?;
        loop {
            let read = read_line(&mut *cur.input, &mut self.buf);
            cur.line += 1;
            let end = match read {
                Ok(Some(end)) => end,
                Ok(None) => return None,
                Err(e) => {
                    let issue = line_issue(cur, ReadIssueKind::Io(e.to_string()), &[]);
                    self.current = None;
                    return Some(Err(issue));
                }
            };
            let mut line = self.buf.as_slice();
            if cur.line == 1 {
                line = line.strip_prefix(BOM).unwrap_or(line);
            }
            if end.overlong {
                return Some(Err(line_issue(cur, ReadIssueKind::LineTooLong, line)));
            }
            // The writer never writes blank lines; a stray one is harmless.
            if line.iter().all(u8::is_ascii_whitespace) {
                continue;
            }
            let parsed = match std::str::from_utf8(line) {
                Ok(s) => LogEntry::parse_line(s),
                Err(e) => Err(ReadIssueKind::Garbage(format!("not UTF-8: {e}"))),
            };
            return Some(match (parsed, end.terminated) {
                (Ok(entry), true) => Ok(entry),
                (Ok(entry), false) => {
                    self.queued = Some(line_issue(cur, ReadIssueKind::UnterminatedLine, line));
                    Ok(entry)
                }
                (Err(_), false) => Err(line_issue(cur, ReadIssueKind::TornLine, line)),
                (Err(kind), true) => Err(line_issue(cur, kind, line)),
            });
        }
    }
}

impl Iterator for LogStream {
    type Item = Result<LogEntry, ReadIssue>;

    fn next(&mut self) -> Option<Self::Item> {
        if let Some(issue) = self.queued.take() {
            return Some(Err(issue));
        }
        loop {
            if let Some(item) = self.next_in_file() {
                return Some(item);
            }
            self.current = None;
            match self.sources.pop_front()? {
                Source::Open(file, input) => {
                    self.files.push(file.clone());
                    self.current = Some(Current {
                        file,
                        input,
                        line: 0,
                    });
                }
                Source::Issue(issue) => return Some(Err(issue)),
            }
        }
    }
}

/// How a line read ended.
struct LineEnd {
    /// It ended with a newline (else at the end of the input).
    terminated: bool,
    /// It was longer than [`MAX_LINE_BYTES`]; `buf` holds its start only.
    overlong: bool,
}

/// Reads one line (without its newline) into `buf`, keeping at most
/// [`MAX_LINE_BYTES`] of it; `None` at the end of the input.
fn read_line(input: &mut dyn BufRead, buf: &mut Vec<u8>) -> io::Result<Option<LineEnd>> {
    buf.clear();
    let mut seen = 0usize;
    loop {
        let available = match input.fill_buf() {
            Ok(b) => b,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        };
        if available.is_empty() {
            return Ok((seen > 0).then_some(LineEnd {
                terminated: false,
                overlong: seen > MAX_LINE_BYTES,
            }));
        }
        let (chunk, used, terminated) = match available.iter().position(|&b| b == b'\n') {
            Some(i) => (&available[..i], i + 1, true),
            None => (available, available.len(), false),
        };
        let room = MAX_LINE_BYTES.saturating_sub(buf.len());
        buf.extend_from_slice(&chunk[..chunk.len().min(room)]);
        seen = seen.saturating_add(chunk.len());
        input.consume(used);
        if terminated {
            return Ok(Some(LineEnd {
                terminated,
                overlong: seen > MAX_LINE_BYTES,
            }));
        }
    }
}

/// `path.n`.
fn rotated_name(path: &Path, n: u64) -> PathBuf {
    let mut name = path.as_os_str().to_owned();
    name.push(format!(".{n}"));
    PathBuf::from(name)
}

/// A directory opens on Linux but cannot be read as a log.
/// Opens a log file for reading, non-blocking so that a FIFO or device put
/// there never blocks the open, and refuses anything but a regular file.
fn open_readable(path: &Path) -> io::Result<File> {
    let mut options = std::fs::OpenOptions::new();
    options.read(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        options.custom_flags(libc::O_NONBLOCK);
    }
    let f = options.open(path)?;
    let ft = f.metadata()?.file_type();
    if ft.is_dir() {
        return Err(io::Error::new(
            io::ErrorKind::IsADirectory,
            format!("{} is a directory", path.display()),
        ));
    }
    if let Some(kind) = super::file_kind::special_kind(&ft) {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("{} is a {kind}, not a regular file", path.display()),
        ));
    }
    Ok(f)
}

/// Rotated files `path.lo` ..= `path.hi` are missing: one issue, naming the
/// newest, however many.
fn gap_issue(path: &Path, lo: u64, hi: u64) -> ReadIssue {
    let mut issue = whole_file_issue(rotated_name(path, lo), ReadIssueKind::MissingFile);
    if hi > lo {
        issue.excerpt = format!("{} files missing, .{lo} to .{hi}", hi - lo + 1);
    }
    issue
}

fn whole_file_issue(file: PathBuf, kind: ReadIssueKind) -> ReadIssue {
    ReadIssue {
        file,
        line: 0,
        kind,
        excerpt: String::new(),
    }
}

fn line_issue(cur: &Current, kind: ReadIssueKind, line: &[u8]) -> ReadIssue {
    ReadIssue {
        file: cur.file.clone(),
        line: cur.line,
        kind,
        excerpt: excerpt(line),
    }
}

/// The whole log read into memory: every readable entry in log order, and the
/// lines that were skipped. For small logs and tests; a log of any size can
/// be read with [`LogStream`] (and folded with [`UnresolvedOffsets`] or
/// [`LogSummary`]) in bounded memory.
///
/// A reader never fails on the content of a file: torn, garbage or
/// newer-version lines become [`ReadIssue`]s. Reading a log that is being
/// written is safe but may miss records appended meanwhile.
#[derive(Debug, Clone, Default)]
pub struct LogReader {
    files: Vec<PathBuf>,
    entries: Vec<LogEntry>,
    issues: Vec<ReadIssue>,
}

impl LogReader {
    /// Reads the log at `path` together with its rotated files, oldest first:
    /// `path.N`, ..., `path.2`, `path.1`, `path` (see [`LogStream::open`]).
    ///
    /// An empty file holds zero records. It is an error ([`LogError::NotFound`])
    /// when neither `path` nor any rotated file exists, or when `path` cannot
    /// be read; a rotated file that cannot be read becomes a
    /// [`ReadIssueKind::Io`] issue, one missing between others a
    /// [`ReadIssueKind::MissingFile`] issue.
    pub fn open(path: impl AsRef<Path>) -> Result<LogReader, LogError> {
        Ok(LogReader::collect(LogStream::open(path)?))
    }

    /// Reads the log kept in the SQLite database at `path` into memory (see
    /// [`LogStream::open_sqlite`], errors as there).
    #[cfg(feature = "sqlite")]
    pub fn open_sqlite(path: impl AsRef<Path>) -> Result<LogReader, LogError> {
        Ok(LogReader::collect(LogStream::open_sqlite(path)?))
    }

    /// Reads the log kept in PostgreSQL into memory (see
    /// [`LogStream::open_postgres`], errors as there).
    #[cfg(feature = "postgres")]
    pub fn open_postgres(conn: &str) -> Result<LogReader, LogError> {
        Ok(LogReader::collect(LogStream::open_postgres(conn)?))
    }

    /// Reads log content already in memory (a file, stdin, a test buffer);
    /// `file` names it in issues.
    pub fn from_bytes(file: impl Into<PathBuf>, bytes: &[u8]) -> LogReader {
        LogReader::collect(LogStream::from_reader(
            file,
            io::Cursor::new(bytes.to_vec()),
        ))
    }

    fn collect(mut stream: LogStream) -> LogReader {
        let mut reader = LogReader::default();
        for item in stream.by_ref() {
            match item {
                Ok(entry) => reader.entries.push(entry),
                Err(issue) => reader.issues.push(issue),
            }
        }
        reader.files = stream.files;
        reader
    }

    /// The files read, oldest first.
    pub fn files(&self) -> &[PathBuf] {
        &self.files
    }

    /// Every readable entry, in log order (oldest first).
    pub fn entries(&self) -> &[LogEntry] {
        &self.entries
    }

    /// The entries, by value.
    pub fn into_entries(self) -> Vec<LogEntry> {
        self.entries
    }

    /// The failure records, in log order.
    pub fn failures(&self) -> impl Iterator<Item = &FailureRecord> {
        self.entries.iter().filter_map(|e| match e {
            LogEntry::Failure(f) => Some(f),
            _ => None,
        })
    }

    /// The lines that were skipped (or, for
    /// [`ReadIssueKind::UnterminatedLine`], read despite damage), in file order.
    pub fn issues(&self) -> &[ReadIssue] {
        &self.issues
    }

    /// The failures not resolved, in log order. See [`unresolved`].
    pub fn unresolved(&self) -> Vec<FailureRecord> {
        unresolved(&self.entries)
    }

    /// A summary per group/topic/partition. See [`summarize`].
    pub fn summary(&self) -> Vec<PartitionSummary> {
        summarize(&self.entries)
    }
}

type Key<'a> = (&'a str, &'a str, i32);

fn key(e: &LogEntry) -> Key<'_> {
    (e.group_id(), e.topic(), e.partition())
}

/// Marks which failures in `entries` are resolved: a failure is resolved by a
/// later resolution for the same group, topic and partition that
/// [resolves](super::Resolution::resolves) its offset (`covers() >= offset`;
/// for a manual resolution, the same offset).
/// A resolution only applies to failures before it in the log, so a failure
/// logged again after being resolved counts as unresolved.
fn resolved_flags(entries: &[LogEntry]) -> Vec<bool> {
    let mut resolved = vec![false; entries.len()];
    // Per partition, the indexes of failures not yet resolved.
    let mut open: HashMap<Key<'_>, Vec<usize>> = HashMap::new();
    for (i, e) in entries.iter().enumerate() {
        match e {
            LogEntry::Failure(_) => open.entry(key(e)).or_default().push(i),
            LogEntry::Resolved(r) => {
                if let Some(idxs) = open.get_mut(&key(e)) {
                    idxs.retain(|&j| {
                        let done = r.resolves(entries[j].offset());
                        resolved[j] |= done;
                        !done
                    });
                }
            }
        }
    }
    resolved
}

/// The failures in `entries` not resolved by a later resolution for the same
/// group, topic and partition with [`covers()`](super::Resolution::covers)
/// `>=` their offset (a manual resolution: the same offset), in log order.
pub fn unresolved(entries: &[LogEntry]) -> Vec<FailureRecord> {
    let resolved = resolved_flags(entries);
    entries
        .iter()
        .zip(resolved)
        .filter_map(|(e, done)| match e {
            LogEntry::Failure(f) if !done => Some(f.clone()),
            _ => None,
        })
        .collect()
}

/// Whether each entry is a resolved failure (`true`) or not (`false`,
/// including for resolutions themselves); same order as `entries`.
pub fn resolution_status(entries: &[LogEntry]) -> Vec<bool> {
    resolved_flags(entries)
}

/// The failures of one group/topic/partition.
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub struct PartitionSummary {
    /// The consumer group.
    pub group_id: String,
    /// Topic.
    pub topic: String,
    /// Partition.
    pub partition: i32,
    /// Failure records.
    pub count: usize,
    /// Failure records per reason, ordered by reason name.
    pub by_reason: Vec<(FailureReason, usize)>,
    /// Lowest failed offset.
    pub min_offset: i64,
    /// Highest failed offset.
    pub max_offset: i64,
    /// Failures not resolved (see [`unresolved`]).
    pub unresolved: usize,
    /// Time of the first failure.
    pub first_time: SystemTime,
    /// Time of the last failure.
    pub last_time: SystemTime,
}

/// Summarizes the failures in `entries` per group/topic/partition, sorted by
/// group, topic, partition. Partitions with only resolutions are left out.
pub fn summarize(entries: &[LogEntry]) -> Vec<PartitionSummary> {
    let resolved = resolved_flags(entries);
    let mut by_key: BTreeMap<Key<'_>, PartitionSummary> = BTreeMap::new();
    for (e, done) in entries.iter().zip(resolved) {
        let LogEntry::Failure(f) = e else { continue };
        let s = by_key.entry(key(e)).or_insert_with(|| PartitionSummary {
            group_id: f.group_id.clone(),
            topic: f.topic.clone(),
            partition: f.partition,
            count: 0,
            by_reason: Vec::new(),
            min_offset: f.offset,
            max_offset: f.offset,
            unresolved: 0,
            first_time: f.time,
            last_time: f.time,
        });
        s.count += 1;
        match s.by_reason.iter_mut().find(|(r, _)| *r == f.reason) {
            Some((_, n)) => *n += 1,
            None => s.by_reason.push((f.reason, 1)),
        }
        s.min_offset = s.min_offset.min(f.offset);
        s.max_offset = s.max_offset.max(f.offset);
        s.unresolved += usize::from(!done);
        s.first_time = s.first_time.min(f.time);
        s.last_time = s.last_time.max(f.time);
    }
    by_key
        .into_values()
        .map(|mut s| {
            s.by_reason.sort_by_key(|(r, _)| r.as_str());
            s
        })
        .collect()
}

/// Values per group, topic and partition, looked up by `&str` without
/// allocating.
#[derive(Debug, Clone)]
struct PartitionMap<T>(HashMap<String, HashMap<String, HashMap<i32, T>>>);

impl<T> Default for PartitionMap<T> {
    fn default() -> Self {
        PartitionMap(HashMap::new())
    }
}

impl<T> PartitionMap<T> {
    fn get(&self, group: &str, topic: &str, partition: i32) -> Option<&T> {
        self.0.get(group)?.get(topic)?.get(&partition)
    }

    fn get_mut(&mut self, group: &str, topic: &str, partition: i32) -> Option<&mut T> {
        self.0.get_mut(group)?.get_mut(topic)?.get_mut(&partition)
    }

    fn get_or_insert_with(
        &mut self,
        group: &str,
        topic: &str,
        partition: i32,
        new: impl FnOnce() -> T,
    ) -> &mut T {
        // Look up by `&str`; allocate the key only when it is new.
        if !self.0.contains_key(group) {
            self.0.insert(group.to_owned(), HashMap::new());
        }
        let topics = self.0.get_mut(group).expect("inserted above");
        if !topics.contains_key(topic) {
            topics.insert(topic.to_owned(), HashMap::new());
        }
        topics
            .get_mut(topic)
            .expect("inserted above")
            .entry(partition)
            .or_insert_with(new)
    }

    fn iter(&self) -> impl Iterator<Item = (&str, &str, i32, &T)> {
        self.0.iter().flat_map(|(g, topics)| {
            topics.iter().flat_map(move |(t, parts)| {
                parts
                    .iter()
                    .map(move |(p, v)| (g.as_str(), t.as_str(), *p, v))
            })
        })
    }
}

/// The unresolved failed offsets of a log, folded in entry by entry: per
/// group, topic and partition it keeps only the offsets of failures not
/// resolved yet (with how many failures are at each), so memory grows with
/// the unresolved failures, not with the log.
///
/// A resolution resolves every earlier failure of its partition whose offset
/// is `<=` its [`covers()`](super::Resolution::covers); a failure logged
/// again later is unresolved again. Feed entries in log order (e.g. from a
/// [`LogStream`]); the result is the same as [`unresolved`] over the whole log.
#[derive(Debug, Clone, Default)]
pub struct UnresolvedOffsets {
    parts: PartitionMap<BTreeMap<i64, u64>>,
    count: u64,
}

impl UnresolvedOffsets {
    /// An empty tracker.
    pub fn new() -> Self {
        UnresolvedOffsets::default()
    }

    /// Folds in the next entry of the log.
    pub fn push(&mut self, entry: &LogEntry) {
        self.push_counted(entry);
    }

    /// Folds in `entry`; returns how many failures it resolved.
    fn push_counted(&mut self, entry: &LogEntry) -> u64 {
        match entry {
            LogEntry::Failure(f) => {
                let open = self.parts.get_or_insert_with(
                    &f.group_id,
                    &f.topic,
                    f.partition,
                    BTreeMap::new,
                );
                *open.entry(f.offset).or_default() += 1;
                self.count += 1;
                0
            }
            LogEntry::Resolved(r) => {
                let Some(open) = self.parts.get_mut(&r.group_id, &r.topic, r.partition) else {
                    return 0;
                };
                if r.how == ResolutionKind::Manual {
                    // By hand: exactly its own offset.
                    let n = open.remove(&r.offset).unwrap_or(0);
                    self.count -= n;
                    return n;
                }
                let covers = r.covers();
                let resolved = match covers.checked_add(1) {
                    Some(above) => {
                        let rest = open.split_off(&above);
                        std::mem::replace(open, rest)
                    }
                    None => std::mem::take(open),
                };
                let n: u64 = resolved.values().sum();
                self.count -= n;
                n
            }
        }
    }

    /// Unresolved failures in all partitions (a failure logged twice counts twice).
    pub fn len(&self) -> u64 {
        self.count
    }

    /// No failure is unresolved.
    pub fn is_empty(&self) -> bool {
        self.count == 0
    }

    /// The unresolved offsets of one partition, ascending (an offset that
    /// failed `n` times appears `n` times).
    pub fn offsets(&self, group_id: &str, topic: &str, partition: i32) -> Vec<i64> {
        self.parts
            .get(group_id, topic, partition)
            .into_iter()
            .flatten()
            .flat_map(|(&o, &n)| std::iter::repeat_n(o, usize::try_from(n).unwrap_or(usize::MAX)))
            .collect()
    }

    /// Unresolved failures of one partition.
    pub fn count(&self, group_id: &str, topic: &str, partition: i32) -> u64 {
        self.parts
            .get(group_id, topic, partition)
            .map_or(0, |open| open.values().sum())
    }

    /// `(group_id, topic, partition, highest unresolved offset)` for every
    /// partition with an unresolved failure, in no particular order.
    pub fn highest(&self) -> impl Iterator<Item = (&str, &str, i32, i64)> {
        self.parts
            .iter()
            .filter_map(|(g, t, p, open)| Some((g, t, p, *open.last_key_value()?.0)))
    }
}

/// Per-partition summaries folded in entry by entry ([`summarize`] for a log
/// of any size). Memory: one summary per partition plus an
/// [`UnresolvedOffsets`].
#[derive(Debug, Clone, Default)]
pub struct LogSummary {
    parts: PartitionMap<PartitionSummary>,
    unresolved: UnresolvedOffsets,
}

impl LogSummary {
    /// An empty summary.
    pub fn new() -> Self {
        LogSummary::default()
    }

    /// Folds in the next entry of the log.
    pub fn push(&mut self, entry: &LogEntry) {
        let resolved = self.unresolved.push_counted(entry);
        match entry {
            LogEntry::Failure(f) => {
                let s = self
                    .parts
                    .get_or_insert_with(&f.group_id, &f.topic, f.partition, || {
                        PartitionSummary::first(f)
                    });
                s.count += 1;
                match s.by_reason.iter_mut().find(|(r, _)| *r == f.reason) {
                    Some((_, n)) => *n += 1,
                    None => s.by_reason.push((f.reason, 1)),
                }
                s.min_offset = s.min_offset.min(f.offset);
                s.max_offset = s.max_offset.max(f.offset);
                s.unresolved += 1;
                s.first_time = s.first_time.min(f.time);
                s.last_time = s.last_time.max(f.time);
            }
            LogEntry::Resolved(r) => {
                if let Some(s) = self.parts.get_mut(&r.group_id, &r.topic, r.partition) {
                    s.unresolved -= usize::try_from(resolved).unwrap_or(s.unresolved);
                }
            }
        }
    }

    /// The summaries, sorted by group, topic, partition; partitions with only
    /// resolutions are left out.
    pub fn finish(self) -> Vec<PartitionSummary> {
        let mut out: Vec<PartitionSummary> = self
            .parts
            .iter()
            .map(|(_, _, _, s)| {
                let mut s = s.clone();
                s.by_reason.sort_by_key(|(r, _)| r.as_str());
                s
            })
            .collect();
        out.sort_by(|a, b| {
            (&a.group_id, &a.topic, a.partition).cmp(&(&b.group_id, &b.topic, b.partition))
        });
        out
    }
}

impl PartitionSummary {
    fn first(f: &FailureRecord) -> Self {
        PartitionSummary {
            group_id: f.group_id.clone(),
            topic: f.topic.clone(),
            partition: f.partition,
            count: 0,
            by_reason: Vec::new(),
            min_offset: f.offset,
            max_offset: f.offset,
            unresolved: 0,
            first_time: f.time,
            last_time: f.time,
        }
    }
}

/// Whether each failure of a log is resolved later in it, answered in a
/// second pass over the log with bounded memory.
///
/// First pass: [`push`](Self::push) every entry of the log in order. Second
/// pass: read the same log again and ask [`ResolutionCursor::resolved`] for
/// each entry in the same order. Per partition the index keeps only the
/// resolutions that are not followed by one covering at least as much (in a
/// log whose committed offsets grow, one per partition), and the cursor one
/// position per partition; failures are not kept at all. If the log changed
/// between the passes (records appended, a rotation), answers for the
/// changed part are best effort: a failure appended after the first pass
/// reads as unresolved.
#[derive(Debug, Clone, Default)]
pub struct ResolutionIndex {
    /// Per partition `(entry number, covers)`, entry numbers ascending and
    /// covers strictly descending: for any position, the first entry after
    /// it holds the highest offset covered by a later resolution.
    parts: PartitionMap<Vec<(u64, i64)>>,
    /// Per partition `(entry number, offset)` of manual resolutions, which
    /// resolve exactly their offset (rare: written by hand).
    manual: PartitionMap<Vec<(u64, i64)>>,
    seen: u64,
}

impl ResolutionIndex {
    /// An empty index.
    pub fn new() -> Self {
        ResolutionIndex::default()
    }

    /// Folds in the next entry of the log (first pass).
    pub fn push(&mut self, entry: &LogEntry) {
        let seq = self.seen;
        self.seen += 1;
        let LogEntry::Resolved(r) = entry else { return };
        if r.how == ResolutionKind::Manual {
            self.manual
                .get_or_insert_with(&r.group_id, &r.topic, r.partition, Vec::new)
                .push((seq, r.offset));
            return;
        }
        let covers = r.covers();
        let stairs = self
            .parts
            .get_or_insert_with(&r.group_id, &r.topic, r.partition, Vec::new);
        while stairs.last().is_some_and(|&(_, c)| c <= covers) {
            stairs.pop();
        }
        stairs.push((seq, covers));
    }

    /// Entries pushed.
    pub fn entries(&self) -> u64 {
        self.seen
    }

    /// A cursor for the second pass, at the first entry.
    pub fn cursor(&self) -> ResolutionCursor<'_> {
        ResolutionCursor {
            index: self,
            at: PartitionMap::default(),
            seq: 0,
        }
    }
}

/// The second pass over a log indexed by a [`ResolutionIndex`].
#[derive(Debug)]
pub struct ResolutionCursor<'a> {
    index: &'a ResolutionIndex,
    /// Per partition, the first step of the staircase not yet passed.
    at: PartitionMap<usize>,
    seq: u64,
}

impl ResolutionCursor<'_> {
    /// Whether `entry`, the next entry of the log, is a failure resolved by
    /// a later resolution (`false` for resolutions themselves).
    pub fn resolved(&mut self, entry: &LogEntry) -> bool {
        let seq = self.seq;
        self.seq += 1;
        let LogEntry::Failure(f) = entry else {
            return false;
        };
        let by_hand = self
            .index
            .manual
            .get(&f.group_id, &f.topic, f.partition)
            .is_some_and(|m| m.iter().any(|&(s, o)| s > seq && o == f.offset));
        if by_hand {
            return true;
        }
        let Some(stairs) = self.index.parts.get(&f.group_id, &f.topic, f.partition) else {
            return false;
        };
        let at = self
            .at
            .get_or_insert_with(&f.group_id, &f.topic, f.partition, || 0);
        while stairs.get(*at).is_some_and(|&(s, _)| s <= seq) {
            *at += 1;
        }
        stairs
            .get(*at)
            .is_some_and(|&(_, covers)| covers >= f.offset)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn excerpts_are_short_and_printable() {
        assert_eq!(excerpt(b"abc"), "abc");
        assert_eq!(excerpt(b"a\x1b[2Jb\r\xff"), "a\u{fffd}[2Jb\u{fffd}\u{fffd}");
        let long = "x".repeat(200);
        let e = excerpt(long.as_bytes());
        assert_eq!(e.chars().count(), EXCERPT_CHARS + 1);
        assert!(e.ends_with('…'));
    }

    #[test]
    fn rotated_siblings_are_numbered_files_only() {
        let dir =
            std::env::temp_dir().join(format!("offset-guard-siblings-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("log.jsonl");
        for name in [
            "log.jsonl",
            "log.jsonl.1",
            "log.jsonl.10",
            "log.jsonl.2",
            "log.jsonl.0",
            "log.jsonl.01",
            "log.jsonl.x",
            "log.jsonl.",
            "log.jsonl.1.bak",
            "other.jsonl.3",
        ] {
            std::fs::write(dir.join(name), b"").unwrap();
        }
        let found: Vec<u64> = rotated_siblings(&path)
            .into_iter()
            .map(|(n, _)| n)
            .collect();
        assert_eq!(found, [1, 2, 10]);
        let reader = LogReader::open(&path).unwrap();
        let names: Vec<_> = reader
            .files()
            .iter()
            .map(|f| f.file_name().unwrap().to_str().unwrap().to_owned())
            .collect();
        assert_eq!(
            names,
            ["log.jsonl.10", "log.jsonl.2", "log.jsonl.1", "log.jsonl"]
        );
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
