//! Reading and appending to the failed-offset log for the operator commands.
//! All reading goes through [`read_group`], so a streaming reader can
//! replace the whole-file one in one place.

use std::collections::{BTreeMap, BTreeSet};
use std::io::Write;
use std::path::Path;

use offset_guard::failure_log::{FailedOffsetLog, FailureRecord, LogError, LogReader, Resolution};

use crate::exit::CliError;
use crate::text::escape;

/// What the log says about one group.
#[derive(Debug, Default)]
pub struct GroupLog {
    /// The group's failures not resolved later in the log, in log order.
    pub unresolved: Vec<FailureRecord>,
    /// Every failure of the group: (topic, partition) -> offsets.
    pub failed: BTreeMap<(String, i32), BTreeSet<i64>>,
    /// The topics the group has entries for.
    pub topics: BTreeSet<String>,
    /// Damaged lines, already escaped for printing.
    pub issues: Vec<String>,
}

impl GroupLog {
    /// Unresolved failed offsets per (topic, partition), ascending.
    pub fn unresolved_by_partition(&self) -> BTreeMap<(String, i32), BTreeSet<i64>> {
        let mut out: BTreeMap<(String, i32), BTreeSet<i64>> = BTreeMap::new();
        for f in &self.unresolved {
            out.entry((f.topic.clone(), f.partition))
                .or_default()
                .insert(f.offset);
        }
        out
    }

    /// Lists the damaged lines on stderr (never fails: a closed stderr is ignored).
    pub fn report_issues(&self) {
        let mut err = std::io::stderr().lock();
        for issue in &self.issues {
            let _ = writeln!(err, "offset-guard: warning: {issue}");
        }
        if !self.issues.is_empty() {
            let _ = writeln!(
                err,
                "offset-guard: {} damaged line(s) in the log skipped",
                self.issues.len()
            );
        }
    }
}

/// Reads the log at `path` (with its rotated files) and keeps what concerns `group`.
pub fn read_group(path: &Path, group: &str) -> Result<GroupLog, CliError> {
    let reader = LogReader::open(path)?;
    let mut out = GroupLog {
        issues: reader
            .issues()
            .iter()
            .map(|i| escape(&i.to_string()))
            .collect(),
        ..GroupLog::default()
    };
    for e in reader.entries().iter().filter(|e| e.group_id() == group) {
        out.topics.insert(e.topic().to_owned());
    }
    for f in reader.failures().filter(|f| f.group_id == group) {
        out.failed
            .entry((f.topic.clone(), f.partition))
            .or_default()
            .insert(f.offset);
    }
    out.unresolved = reader
        .unresolved()
        .into_iter()
        .filter(|f| f.group_id == group)
        .collect();
    Ok(out)
}

/// Opens the log at `path` for appending, before it is read: once the
/// writer takes a lock at open, a running service holding the log makes this
/// fail (`CliError::Log`, exit code `LOG_IN_USE`) before anything is done.
/// A log that does not exist is an error (the writer would create it).
pub fn open_for_append(path: &Path) -> Result<FailedOffsetLog, CliError> {
    if !path.exists() {
        return Err(CliError::Log(LogError::NotFound {
            path: path.to_path_buf(),
        }));
    }
    Ok(FailedOffsetLog::open(path)?)
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
