//! Reading and appending to the failed-offset log for the operator commands.
//! All reading goes through [`read_group`], which streams the log.

use std::collections::{BTreeMap, BTreeSet};
use std::io::Write;
use std::path::Path;

use offset_guard::failure_log::{
    FailedOffsetLog, LogEntry, LogError, LogLocation, Resolution, UnresolvedOffsets,
};

use crate::exit::CliError;
use crate::text::escape;

/// The most damaged lines listed one by one (all are counted).
const MAX_LISTED_ISSUES: usize = 100;

/// What the log says about one group. Read streaming: memory grows with the
/// group's unresolved failures, not with the log.
#[derive(Debug, Default)]
pub struct GroupLog {
    /// The group's unresolved failed offsets per (topic, partition), ascending.
    unresolved: BTreeMap<(String, i32), BTreeSet<i64>>,
    /// Every failed offset of the one partition asked for (`read_group`'s
    /// `failed_of`), resolved or not.
    pub failed: BTreeSet<i64>,
    /// The topics the group has entries for.
    pub topics: BTreeSet<String>,
    /// Damaged lines (the first [`MAX_LISTED_ISSUES`]), already escaped for printing.
    pub issues: Vec<String>,
    /// Damaged lines in all.
    pub issue_count: usize,
}

impl GroupLog {
    /// Unresolved failed offsets per (topic, partition), ascending.
    pub fn unresolved_by_partition(&self) -> BTreeMap<(String, i32), BTreeSet<i64>> {
        self.unresolved.clone()
    }

    /// Lists the damaged lines on stderr (never fails: a closed stderr is ignored).
    pub fn report_issues(&self) {
        let mut err = std::io::stderr().lock();
        for issue in &self.issues {
            let _ = writeln!(err, "offset-guard: warning: {issue}");
        }
        if self.issue_count > 0 {
            let _ = writeln!(
                err,
                "offset-guard: {} damaged line(s) in the log skipped",
                self.issue_count
            );
        }
    }
}

/// Where the log is: a database URL (`sqlite:PATH`, `postgresql://...`),
/// else a file path.
pub fn location(path: &Path) -> Result<LogLocation, CliError> {
    Ok(LogLocation::parse(path)?)
}

/// Reads the log at `path` (a file with its rotated files, or a database
/// URL) entry by entry and keeps
/// what concerns `group`; `failed_of` also collects every failed offset of
/// that (topic, partition).
pub fn read_group(
    path: &Path,
    group: &str,
    failed_of: Option<(&str, i32)>,
) -> Result<GroupLog, CliError> {
    let mut out = GroupLog::default();
    let mut open = UnresolvedOffsets::new();
    let mut partitions: BTreeSet<(String, i32)> = BTreeSet::new();
    for item in location(path)?.stream()? {
        let entry = match item {
            Ok(entry) => entry,
            Err(issue) => {
                out.issue_count += 1;
                if out.issues.len() < MAX_LISTED_ISSUES {
                    out.issues.push(escape(&issue.to_string()));
                }
                continue;
            }
        };
        if entry.group_id() != group {
            continue;
        }
        if !out.topics.contains(entry.topic()) {
            out.topics.insert(entry.topic().to_owned());
        }
        if let LogEntry::Failure(f) = &entry {
            if failed_of == Some((f.topic.as_str(), f.partition)) {
                out.failed.insert(f.offset);
            }
            partitions.insert((f.topic.clone(), f.partition));
        }
        open.push(&entry);
    }
    for (topic, partition) in partitions {
        let offsets = open.offsets(group, &topic, partition);
        if !offsets.is_empty() {
            out.unresolved
                .insert((topic, partition), offsets.into_iter().collect());
        }
    }
    Ok(out)
}

/// Opens the log at `path` for appending, before it is read: once the
/// writer takes a lock at open, a running service holding the log makes this
/// fail (`CliError::Log`, exit code `LOG_IN_USE`) before anything is done.
/// A log that does not exist is an error (the writer would create it): a
/// missing file, and a database (SQLite or PostgreSQL) without the log's
/// tables, which are refused by the reader before the writer could create
/// them. A database log takes no lock: the service may keep writing
/// meanwhile.
pub fn open_for_append(path: &Path) -> Result<FailedOffsetLog, CliError> {
    let location = location(path)?;
    match &location {
        LogLocation::File(file) if !file.exists() => {
            return Err(CliError::Log(LogError::NotFound { path: file.clone() }));
        }
        LogLocation::File(_) => {}
        // A database without the log is refused as a missing file is (the
        // reader says so: a missing SQLite file, no log tables).
        _ => drop(location.stream()?),
    }
    Ok(location.builder().open()?)
}

/// Appends `resolutions` to `log`, waits until they are written (and
/// synced) and closes it.
pub fn append(log: FailedOffsetLog, resolutions: Vec<Resolution>) -> Result<(), CliError> {
    for r in resolutions {
        log.resolve(r);
    }
    log.flush()?;
    log.close()?;
    Ok(())
}
