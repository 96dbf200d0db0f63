//! Reading the log back: typed entries, damaged lines as issues, folding
//! resolutions, per-partition summaries.

use std::collections::{BTreeMap, HashMap};
use std::fmt;
use std::io;
use std::path::{Path, PathBuf};
use std::time::SystemTime;

use super::record::{FailureRecord, LogEntry, ReadIssueKind};
use super::{LogError, rotated_siblings};
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

/// The whole log read into memory: every readable entry in log order, and the
/// lines that were skipped.
///
/// A reader never fails on the content of a file: torn, garbage or
/// newer-version lines become [`ReadIssue`]s. Reading a log that is being
/// written is safe but may miss a rotation that happens meanwhile.
#[derive(Debug, Clone, Default)]
pub struct LogReader {
    files: Vec<PathBuf>,
    entries: Vec<LogEntry>,
    issues: Vec<ReadIssue>,
}

impl LogReader {
    /// Reads the log at `path` together with its rotated files, oldest first:
    /// `path.N`, ..., `path.2`, `path.1`, `path`.
    ///
    /// An empty file holds zero records. It is an error ([`LogError::NotFound`])
    /// when neither `path` nor any rotated file exists, or when `path` cannot
    /// be read; a rotated file that cannot be read becomes a
    /// [`ReadIssueKind::Io`] issue.
    pub fn open(path: impl AsRef<Path>) -> Result<LogReader, LogError> {
        let path = path.as_ref();
        let mut reader = LogReader::default();
        let siblings = rotated_siblings(path);
        for (_, file) in siblings.iter().rev() {
            match std::fs::read(file) {
                Ok(bytes) => reader.push_bytes(file.clone(), &bytes),
                Err(e) => reader.issues.push(ReadIssue {
                    file: file.clone(),
                    line: 0,
                    kind: ReadIssueKind::Io(e.to_string()),
                    excerpt: String::new(),
                }),
            }
        }
        match std::fs::read(path) {
            Ok(bytes) => reader.push_bytes(path.to_path_buf(), &bytes),
            Err(e) if e.kind() == io::ErrorKind::NotFound && !siblings.is_empty() => {}
            Err(e) => return Err(LogError::from_io(path, "read", e)),
        }
        Ok(reader)
    }

    /// Reads log content already in memory (a file, stdin, a test buffer);
    /// `file` names it in issues.
    pub fn from_bytes(file: impl Into<PathBuf>, bytes: &[u8]) -> LogReader {
        let mut reader = LogReader::default();
        reader.push_bytes(file.into(), bytes);
        reader
    }

    fn push_bytes(&mut self, file: PathBuf, bytes: &[u8]) {
        let mut rest = bytes;
        let mut line_no = 0;
        while !rest.is_empty() {
            line_no += 1;
            let (line, terminated) = match rest.iter().position(|&b| b == b'\n') {
                Some(i) => {
                    let line = &rest[..i];
                    rest = &rest[i + 1..];
                    (line, true)
                }
                None => {
                    let line = rest;
                    rest = &[];
                    (line, false)
                }
            };
            // The writer never writes blank lines; a stray one is harmless.
            if line.iter().all(u8::is_ascii_whitespace) {
                continue;
            }
            let parsed = match std::str::from_utf8(line) {
                Ok(s) => LogEntry::parse_line(s),
                Err(e) => Err(ReadIssueKind::Garbage(format!("not UTF-8: {e}"))),
            };
            let issue = match (parsed, terminated) {
                (Ok(entry), true) => {
                    self.entries.push(entry);
                    None
                }
                (Ok(entry), false) => {
                    self.entries.push(entry);
                    Some(ReadIssueKind::UnterminatedLine)
                }
                (Err(_), false) => Some(ReadIssueKind::TornLine),
                (Err(kind), true) => Some(kind),
            };
            if let Some(kind) = issue {
                self.issues.push(ReadIssue {
                    file: file.clone(),
                    line: line_no,
                    kind,
                    excerpt: excerpt(line),
                });
            }
        }
        self.files.push(file);
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
