//! `offset-guard failures`: read the failed-offset log.
//!
//! ```text
//! offset-guard failures PATH [--json] [--topic T] [--partition N]
//!                            [--since TIME] [--unresolved] [--summary]
//! ```
//!
//! Reads `PATH` and its rotated files (`PATH.N ... PATH.1, PATH`, oldest
//! first) and prints the failed offsets as an aligned table, one row per
//! failure with whether it was resolved since. Damaged lines are skipped and
//! listed on stderr after the output.
//!
//! - `--json`: JSON Lines instead of a table. Entries are printed in the log's
//!   own format (failures and the resolutions that match the filters), so the
//!   output is itself a readable log; with `--summary`, one JSON object per
//!   partition.
//! - `--topic T`, `--partition N`: only that topic / partition.
//! - `--since TIME`: only failures at or after TIME (RFC 3339, e.g.
//!   `2026-11-23T14:30:00Z`, or a date `2026-11-23` meaning its midnight UTC).
//!   Resolutions are kept whatever their time, as they may resolve later failures.
//! - `--unresolved`: only failures not resolved later in the log.
//! - `--summary`: one row per group/topic/partition: failures, unresolved,
//!   offset range, first/last time, count per reason.
//!
//! Exit codes: 0 success; 1 the log had damaged lines (what was readable was
//! still printed); 2 usage error; 3 the log could not be opened.

use std::io::{self, BufWriter, Write};
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::SystemTime;

use offset_guard::failure_log::{
    LogEntry, LogReader, PartitionSummary, resolution_status, summarize,
};

// The library's RFC 3339 code, compiled into the command as well: the library
// does not export date helpers.
#[path = "../../failure_log/rfc3339.rs"]
mod rfc3339;
use rfc3339::{format_rfc3339, parse_rfc3339};

const USAGE: &str = "\
usage: offset-guard failures PATH [--json] [--topic T] [--partition N]
                                  [--since TIME] [--unresolved] [--summary]
       offset-guard --help | --version";

const HELP: &str = "\
offset-guard: read the failed-offset log written by offset_guard::failure_log::FailedOffsetLog

usage: offset-guard failures PATH [OPTIONS]

Reads PATH and its rotated files (PATH.N ... PATH.1, PATH; oldest first) and
prints one row per failed offset, with whether a later commit resolved it.
Damaged lines (torn by a crash, garbage, newer format) are skipped and listed
on stderr after the output.

options:
  --json           JSON Lines output: entries in the log's own format
                   (failures and matching resolutions); with --summary,
                   one JSON object per partition
  --topic T        only topic T
  --partition N    only partition N
  --since TIME     only failures at or after TIME (RFC 3339, e.g.
                   2026-11-23T14:30:00Z, or a date 2026-11-23 = midnight UTC)
  --unresolved     only failures not resolved later in the log
  --summary        one row per group/topic/partition instead of per failure
  -h, --help       this help
  -V, --version    the version

exit codes:
  0  success
  1  the log had damaged lines (what was readable was still printed)
  2  usage error
  3  the log could not be opened (missing, unreadable)";

const EXIT_DAMAGED: u8 = 1;
const EXIT_USAGE: u8 = 2;
const EXIT_OPEN: u8 = 3;

#[derive(Debug, Default)]
struct Args {
    path: Option<PathBuf>,
    json: bool,
    topic: Option<String>,
    partition: Option<i32>,
    since: Option<SystemTime>,
    unresolved: bool,
    summary: bool,
}

enum Parsed {
    Run(Args),
    Help,
    Version,
}

fn parse_since(s: &str) -> Result<SystemTime, String> {
    let full = if s.len() == 10 {
        format!("{s}T00:00:00Z")
    } else {
        s.to_owned()
    };
    parse_rfc3339(&full).map_err(|e| format!("--since: {e}"))
}

fn parse_args(mut argv: impl Iterator<Item = String>) -> Result<Parsed, String> {
    let mut args = Args::default();
    match argv.next().as_deref() {
        Some("failures") => {}
        Some("-h" | "--help" | "help") => return Ok(Parsed::Help),
        Some("-V" | "--version") => return Ok(Parsed::Version),
        Some(other) => return Err(format!("unknown command {other:?}")),
        None => return Err("missing command".into()),
    }
    while let Some(arg) = argv.next() {
        // `--flag=value` or `--flag value`.
        let (flag, inline) = match arg.split_once('=') {
            Some((f, v)) if f.starts_with("--") => (f.to_owned(), Some(v.to_owned())),
            _ => (arg.clone(), None),
        };
        let mut value = |name: &str| -> Result<String, String> {
            inline
                .clone()
                .or_else(|| argv.next())
                .ok_or_else(|| format!("{name} needs a value"))
        };
        match flag.as_str() {
            "-h" | "--help" => return Ok(Parsed::Help),
            "-V" | "--version" => return Ok(Parsed::Version),
            "--json" => args.json = true,
            "--unresolved" => args.unresolved = true,
            "--summary" => args.summary = true,
            "--topic" => args.topic = Some(value("--topic")?),
            "--partition" => {
                let v = value("--partition")?;
                args.partition = Some(
                    v.parse()
                        .map_err(|_| format!("--partition: {v:?} is not a partition number"))?,
                );
            }
            "--since" => args.since = Some(parse_since(&value("--since")?)?),
            f if f.starts_with('-') && f.len() > 1 => return Err(format!("unknown option {f}")),
            _ if args.path.is_some() => return Err(format!("unexpected argument {arg:?}")),
            _ => args.path = Some(PathBuf::from(arg)),
        }
        if inline.is_some() && matches!(flag.as_str(), "--json" | "--unresolved" | "--summary") {
            return Err(format!("{flag} takes no value"));
        }
    }
    if args.path.is_none() {
        return Err("missing PATH".into());
    }
    Ok(Parsed::Run(args))
}

/// Runs `offset-guard failures ARGS...` (`argv`: the arguments after `failures`).
pub fn run(argv: Vec<String>) -> ExitCode {
    let argv = std::iter::once("failures".to_owned()).chain(argv);
    let args = match parse_args(argv) {
        Ok(Parsed::Run(args)) => args,
        Ok(Parsed::Help) => {
            println!("{HELP}");
            return ExitCode::SUCCESS;
        }
        Ok(Parsed::Version) => {
            println!("offset-guard {}", env!("CARGO_PKG_VERSION"));
            return ExitCode::SUCCESS;
        }
        Err(e) => {
            eprintln!("offset-guard: {e}\n{USAGE}");
            return ExitCode::from(EXIT_USAGE);
        }
    };
    let path = args.path.clone().unwrap_or_default();
    let reader = match LogReader::open(&path) {
        Ok(r) => r,
        Err(e) => {
            eprintln!("offset-guard: {e}");
            return ExitCode::from(EXIT_OPEN);
        }
    };

    let stdout = io::stdout();
    let mut out = BufWriter::new(stdout.lock());
    let printed = print(&mut out, &args, reader.entries()).and_then(|()| out.flush());
    match printed {
        Err(e) if e.kind() == io::ErrorKind::BrokenPipe => {}
        Err(e) => {
            eprintln!("offset-guard: writing the output: {e}");
            return ExitCode::FAILURE;
        }
        Ok(()) => {}
    }

    for issue in reader.issues() {
        eprintln!("offset-guard: warning: {issue}");
    }
    if reader.issues().is_empty() {
        ExitCode::SUCCESS
    } else {
        eprintln!(
            "offset-guard: {} damaged line(s) skipped",
            reader.issues().len()
        );
        ExitCode::from(EXIT_DAMAGED)
    }
}

/// The entries the filters keep; resolutions ignore `--since` (they may
/// resolve failures at any time) and `--unresolved` keeps only open failures.
fn select<'a>(args: &Args, entries: &'a [LogEntry]) -> Vec<(&'a LogEntry, bool)> {
    let resolved = resolution_status(entries);
    entries
        .iter()
        .zip(resolved)
        .filter(|(e, _)| args.topic.as_deref().is_none_or(|t| e.topic() == t))
        .filter(|(e, _)| args.partition.is_none_or(|p| e.partition() == p))
        .filter(|(e, done)| match e {
            LogEntry::Failure(f) => {
                args.since.is_none_or(|since| f.time >= since) && !(args.unresolved && *done)
            }
            _ => !args.unresolved,
        })
        .collect()
}

fn print(out: &mut impl Write, args: &Args, entries: &[LogEntry]) -> io::Result<()> {
    let selected = select(args, entries);
    if args.summary {
        // Summaries count resolutions for the failures kept.
        let kept: Vec<LogEntry> = entries
            .iter()
            .filter(|e| args.topic.as_deref().is_none_or(|t| e.topic() == t))
            .filter(|e| args.partition.is_none_or(|p| e.partition() == p))
            .filter(|e| match e {
                LogEntry::Failure(f) => args.since.is_none_or(|since| f.time >= since),
                _ => true,
            })
            .cloned()
            .collect();
        let mut rows = summarize(&kept);
        if args.unresolved {
            rows.retain(|s| s.unresolved > 0);
        }
        return if args.json {
            rows.iter()
                .try_for_each(|s| writeln!(out, "{}", summary_json(s)))
        } else {
            print_summary_table(out, &rows)
        };
    }
    if args.json {
        for (e, _) in &selected {
            out.write_all(e.to_json_line().as_bytes())?;
        }
        return Ok(());
    }
    print_failure_table(out, &selected)
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
        first_time: format_rfc3339(s.first_time),
        last_time: format_rfc3339(s.last_time),
        by_reason: s.by_reason.iter().map(|(r, n)| (r.as_str(), *n)).collect(),
    })
    .unwrap_or_default()
}

/// Prints rows as columns padded to the widest cell; the last column is not padded.
fn print_table(out: &mut impl Write, header: &[&str], rows: &[Vec<String>]) -> io::Result<()> {
    let mut widths: Vec<usize> = header.iter().map(|h| h.chars().count()).collect();
    for row in rows {
        for (w, cell) in widths.iter_mut().zip(row) {
            *w = (*w).max(cell.chars().count());
        }
    }
    let header: Vec<String> = header.iter().map(|h| h.to_string()).collect();
    for row in std::iter::once(&header).chain(rows) {
        let mut line = String::new();
        for (i, (cell, w)) in row.iter().zip(&widths).enumerate() {
            if i + 1 == row.len() {
                line.push_str(cell);
            } else {
                line.push_str(cell);
                line.extend(std::iter::repeat_n(' ', w - cell.chars().count() + 2));
            }
        }
        writeln!(out, "{}", line.trim_end())?;
    }
    Ok(())
}

fn print_failure_table(out: &mut impl Write, selected: &[(&LogEntry, bool)]) -> io::Result<()> {
    let rows: Vec<Vec<String>> = selected
        .iter()
        .filter_map(|(e, done)| match e {
            LogEntry::Failure(f) => Some(vec![
                format_rfc3339(f.time),
                f.group_id.clone(),
                f.topic.clone(),
                f.partition.to_string(),
                f.offset.to_string(),
                f.reason.to_string(),
                f.error_code.clone().unwrap_or_else(|| "-".into()),
                f.attempts.to_string(),
                f.elapsed_ms.to_string(),
                if *done { "yes" } else { "no" }.into(),
                f.error_message.replace(['\n', '\r'], " "),
            ]),
            _ => None,
        })
        .collect();
    print_table(
        out,
        &[
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
        ],
        &rows,
    )
}

fn print_summary_table(out: &mut impl Write, rows: &[PartitionSummary]) -> io::Result<()> {
    let rows: Vec<Vec<String>> = rows
        .iter()
        .map(|s| {
            vec![
                s.group_id.clone(),
                s.topic.clone(),
                s.partition.to_string(),
                s.count.to_string(),
                s.unresolved.to_string(),
                s.min_offset.to_string(),
                s.max_offset.to_string(),
                format_rfc3339(s.first_time),
                format_rfc3339(s.last_time),
                s.by_reason
                    .iter()
                    .map(|(r, n)| format!("{r}={n}"))
                    .collect::<Vec<_>>()
                    .join(","),
            ]
        })
        .collect();
    print_table(
        out,
        &[
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
        ],
        &rows,
    )
}
