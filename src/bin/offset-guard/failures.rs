//! `offset-guard failures`: print the failed offsets of a log.
//!
//! Memory stays bounded whatever the size of the log: the files are read
//! line by line ([`LogStream`]). The summary is one pass folding per-partition
//! state ([`LogSummary`]); plain JSON Lines is one pass. The table (and
//! `--json --unresolved`) needs, for each failure, whether a *later* line
//! resolves it, and the table's column widths before its first row: it reads
//! the log twice. The first pass builds a [`ResolutionIndex`] (per partition
//! only the resolutions not followed by one covering more) and measures the
//! columns; the second prints each failure with its status from a
//! [`ResolutionCursor`]. Issues are reported from the pass that prints.

use std::borrow::Cow;
use std::io::{self, BufWriter, Write};
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::SystemTime;

use clap::Args;
use offset_guard::failure_log::{
    FailureRecord, LogEntry, LogLocation, LogStream, LogSummary, PartitionSummary, ReadIssue,
    ResolutionIndex,
};

use crate::output::{Stop, Table, clean, format_time};
use crate::{exit, warn};

pub(crate) const AFTER_HELP: &str = "\
PATH and its rotated files (PATH.N ... PATH.1, PATH) are read oldest first,
line by line; a database log (sqlite:PATH.db, postgresql://...) row by row, in
id order (issues
name the row id as the line). The table has one row per failure; RESOLVED says whether a later
resolution in the log covers it. To know that and to align the columns the
table reads the log twice; a summary reads it once. Text from the log is
printed with control characters escaped (\\n, \\u{1b}, ...).

Exit codes:
  0  success (a closed output pipe ends the output quietly)
  1  the log is damaged or incomplete (damaged lines, unreadable or missing
     rotated files); what was readable was printed
  2  usage error, or a URL this build cannot read (its scheme is named)
  3  the log could not be opened (missing, unreadable, a directory, a
     database without the log's tables or with another schema, a database
     server that cannot be reached)
  8  the output could not be written (the other codes: `offset-guard --help`)";

/// The options of `offset-guard failures`.
#[derive(Debug, Args)]
pub(crate) struct FailuresArgs {
    /// The log file (its rotated files PATH.N ... PATH.1 are read too), or a
    /// database log: sqlite:///ABS/PATH.db or sqlite:REL/PATH.db (needs the
    /// `sqlite` cargo feature), postgresql://USER@HOST:PORT/DB (needs the
    /// `postgres` cargo feature)
    #[arg(value_name = "PATH|URL")]
    path: PathBuf,
    /// JSON Lines output: entries in the log's own format (failures and the
    /// resolutions that match the filters); with --summary, one JSON object
    /// per partition
    #[arg(long)]
    json: bool,
    /// Only topic T
    #[arg(long, value_name = "T")]
    topic: Option<String>,
    /// Only partition N
    #[arg(long, value_name = "N")]
    partition: Option<i32>,
    /// Only failures at or after TIME: RFC 3339 (2026-11-23T14:30:00Z) or a
    /// date (2026-11-23 = its midnight UTC). Resolutions are kept whatever
    /// their time
    #[arg(long, value_name = "TIME", value_parser = parse_since)]
    since: Option<SystemTime>,
    /// Only failures not resolved later in the log
    #[arg(long)]
    unresolved: bool,
    /// One row per group/topic/partition: failures, unresolved, offset
    /// range, first/last time, count per reason
    #[arg(long)]
    summary: bool,
}

/// `--since`: an RFC 3339 time, or a date meaning its midnight UTC.
fn parse_since(s: &str) -> Result<SystemTime, String> {
    let ts = match s.parse::<jiff::Timestamp>() {
        Ok(ts) => ts,
        Err(e) => match s.parse::<jiff::civil::Date>() {
            Ok(date) => format!("{date}T00:00:00Z")
                .parse::<jiff::Timestamp>()
                .map_err(|e| e.to_string())?,
            Err(_) => {
                return Err(format!(
                    "expected an RFC 3339 time such as 2026-11-23T14:30:00Z or a date such as 2026-11-23 ({e})"
                ));
            }
        },
    };
    Ok(SystemTime::from(ts))
}

/// Runs the command; returns the exit code.
pub(crate) fn run(args: &FailuresArgs) -> ExitCode {
    let stdout = io::stdout();
    let mut out = BufWriter::with_capacity(1 << 16, stdout.lock());
    let mut issues = Issues::default();
    let result = if args.summary {
        summary(args, &mut out, &mut issues)
    } else if args.json && !args.unresolved {
        json(args, &mut out, &mut issues)
    } else {
        two_passes(args, &mut out, &mut issues)
    };
    let result = result.and_then(|()| out.flush().map_err(Fail::from));
    match result {
        Ok(()) => issues.report(),
        Err(Fail::Open(e)) => {
            warn(&format!("error: {e}"));
            ExitCode::from(exit::log_error_code(&e))
        }
        Err(Fail::Out(Stop::Closed)) => ExitCode::SUCCESS,
        Err(Fail::Out(Stop::Failed(e))) => {
            warn(&format!("error: writing the output: {e}"));
            ExitCode::from(exit::OUTPUT)
        }
    }
}

/// Why a run stopped before the end.
enum Fail {
    Open(offset_guard::failure_log::LogError),
    Out(Stop),
}

impl From<io::Error> for Fail {
    fn from(e: io::Error) -> Self {
        Fail::Out(Stop::from(e))
    }
}

fn open(path: &Path) -> Result<LogStream, Fail> {
    LogLocation::parse(path)
        .and_then(|l| l.stream())
        .map_err(Fail::Open)
}

/// The issues of the pass that prints: the first [`Issues::SHOWN`] kept to
/// print after the output, the rest counted.
#[derive(Default)]
struct Issues {
    shown: Vec<ReadIssue>,
    total: u64,
}

impl Issues {
    const SHOWN: usize = 100;

    fn push(&mut self, issue: ReadIssue) {
        self.total += 1;
        if self.shown.len() < Self::SHOWN {
            self.shown.push(issue);
        }
    }

    /// Lists them on stderr; the exit code.
    fn report(&self) -> ExitCode {
        for issue in &self.shown {
            warn(&format!("warning: {issue}"));
        }
        if self.total == 0 {
            return ExitCode::SUCCESS;
        }
        let more = self.total - self.shown.len() as u64;
        if more > 0 {
            warn(&format!("... and {more} more"));
        }
        warn(&format!(
            "{} damaged line(s) or unreadable/missing file(s) skipped",
            self.total
        ));
        ExitCode::from(exit::DAMAGED)
    }
}

/// Whether `e` passes `--topic`, `--partition` and (for failures) `--since`.
fn matches(args: &FailuresArgs, e: &LogEntry) -> bool {
    args.topic.as_deref().is_none_or(|t| e.topic() == t)
        && args.partition.is_none_or(|p| e.partition() == p)
        && match e {
            LogEntry::Failure(f) => args.since.is_none_or(|since| f.time >= since),
            _ => true,
        }
}

/// `--json` without `--unresolved`: one pass.
fn json(args: &FailuresArgs, out: &mut impl Write, issues: &mut Issues) -> Result<(), Fail> {
    for item in open(&args.path)? {
        match item {
            Ok(e) if matches(args, &e) => out.write_all(e.to_json_line().as_bytes())?,
            Ok(_) => {}
            Err(issue) => issues.push(issue),
        }
    }
    Ok(())
}

const FAILURE_HEADER: [&str; 11] = [
    "TIME",
    "GROUP",
    "TOPIC",
    "PARTITION",
    "OFFSET",
    "REASON",
    "ERROR",
    "ATTEMPTS",
    "ELAPSED_MS",
    "RESOLVED",
    "MESSAGE",
];

/// A failure as escaped table cells.
fn failure_row(f: &FailureRecord, resolved: bool) -> [Cow<'_, str>; 11] {
    [
        Cow::Owned(format_time(f.time)),
        clean(&f.group_id),
        clean(&f.topic),
        Cow::Owned(f.partition.to_string()),
        Cow::Owned(f.offset.to_string()),
        Cow::Borrowed(f.reason.as_str()),
        f.error_code.as_deref().map_or(Cow::Borrowed("-"), clean),
        Cow::Owned(f.attempts.to_string()),
        Cow::Owned(f.elapsed_ms.to_string()),
        Cow::Borrowed(if resolved { "yes" } else { "no" }),
        clean(&f.error_message),
    ]
}

/// The table, or `--json --unresolved`: pass 1 indexes resolutions (and
/// measures the columns), pass 2 prints.
fn two_passes(args: &FailuresArgs, out: &mut impl Write, issues: &mut Issues) -> Result<(), Fail> {
    let mut index = ResolutionIndex::new();
    let mut table = Table::new(&FAILURE_HEADER);
    for e in open(&args.path)?.flatten() {
        index.push(&e);
        // Widths of every row that may be printed (`--unresolved` can only
        // drop rows, so columns are never too narrow).
        if let LogEntry::Failure(f) = &e
            && !args.json
            && matches(args, &e)
        {
            table.fit(&failure_row(f, false));
        }
    }
    if !args.json {
        table.write_row(out, &FAILURE_HEADER)?;
    }
    let mut cursor = index.cursor();
    for item in open(&args.path)? {
        let e = match item {
            Ok(e) => e,
            Err(issue) => {
                issues.push(issue);
                continue;
            }
        };
        let resolved = cursor.resolved(&e);
        if !matches(args, &e)
            || (args.unresolved && (resolved || !matches!(e, LogEntry::Failure(_))))
        {
            continue;
        }
        match (&e, args.json) {
            (_, true) => out.write_all(e.to_json_line().as_bytes())?,
            (LogEntry::Failure(f), false) => table.write_row(out, &failure_row(f, resolved))?,
            _ => {}
        }
    }
    Ok(())
}

/// `--summary`: one pass folding per-partition state.
fn summary(args: &FailuresArgs, out: &mut impl Write, issues: &mut Issues) -> Result<(), Fail> {
    let mut folded = LogSummary::new();
    for item in open(&args.path)? {
        match item {
            Ok(e) if matches(args, &e) => folded.push(&e),
            Ok(_) => {}
            Err(issue) => issues.push(issue),
        }
    }
    let mut rows = folded.finish();
    if args.unresolved {
        rows.retain(|s| s.unresolved > 0);
    }
    if args.json {
        for s in &rows {
            out.write_all(summary_json(s).as_bytes())?;
            out.write_all(b"\n")?;
        }
        return Ok(());
    }
    print_summary_table(out, &rows)?;
    Ok(())
}

/// A summary row in `--json --summary` output.
#[derive(serde::Serialize)]
struct SummaryJson<'a> {
    group_id: &'a str,
    topic: &'a str,
    partition: i32,
    count: usize,
    unresolved: usize,
    min_offset: i64,
    max_offset: i64,
    first_time: String,
    last_time: String,
    /// Reason name -> count, ordered by name.
    by_reason: std::collections::BTreeMap<&'static str, usize>,
}

fn summary_json(s: &PartitionSummary) -> String {
    serde_json::to_string(&SummaryJson {
        group_id: &s.group_id,
        topic: &s.topic,
        partition: s.partition,
        count: s.count,
        unresolved: s.unresolved,
        min_offset: s.min_offset,
        max_offset: s.max_offset,
        first_time: format_time(s.first_time),
        last_time: format_time(s.last_time),
        by_reason: s.by_reason.iter().map(|(r, n)| (r.as_str(), *n)).collect(),
    })
    .unwrap_or_default()
}

const SUMMARY_HEADER: [&str; 10] = [
    "GROUP",
    "TOPIC",
    "PARTITION",
    "FAILURES",
    "UNRESOLVED",
    "MIN_OFFSET",
    "MAX_OFFSET",
    "FIRST",
    "LAST",
    "REASONS",
];

fn print_summary_table(out: &mut impl Write, rows: &[PartitionSummary]) -> io::Result<()> {
    let rows: Vec<[Cow<'_, str>; 10]> = rows
        .iter()
        .map(|s| {
            [
                clean(&s.group_id),
                clean(&s.topic),
                Cow::Owned(s.partition.to_string()),
                Cow::Owned(s.count.to_string()),
                Cow::Owned(s.unresolved.to_string()),
                Cow::Owned(s.min_offset.to_string()),
                Cow::Owned(s.max_offset.to_string()),
                Cow::Owned(format_time(s.first_time)),
                Cow::Owned(format_time(s.last_time)),
                Cow::Owned(
                    s.by_reason
                        .iter()
                        .map(|(r, n)| format!("{r}={n}"))
                        .collect::<Vec<_>>()
                        .join(","),
                ),
            ]
        })
        .collect();
    let mut table = Table::new(&SUMMARY_HEADER);
    for row in &rows {
        table.fit(row);
    }
    table.write_row(out, &SUMMARY_HEADER)?;
    for row in &rows {
        table.write_row(out, row)?;
    }
    Ok(())
}
