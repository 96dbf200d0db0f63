//! `offset-guard offsets`: committed offset, log-end offset and lag per
//! partition, beside the group's unresolved failed offsets from the log.

use std::collections::BTreeSet;
use std::io::Write;

use clap::builder::NonEmptyStringValueParser;
use std::path::PathBuf;

use crate::cluster::{Cluster, ClusterArgs};
use crate::exit::{CliError, Done};
use crate::logfile::{GroupLog, read_group};
use crate::text::{escape, json_safe, table};

/// At most this many failed offsets are listed in a table cell.
const LISTED: usize = 5;

/// Show a group's committed offsets, log-end offsets and lag per partition,
/// with the unresolved failed offsets of the group from the log.
///
/// Reads only: nothing is committed and the group is not joined.
#[derive(Debug, Clone, clap::Args)]
pub struct OffsetsArgs {
    #[command(flatten)]
    pub cluster: ClusterArgs,
    /// The consumer group.
    #[arg(short, long, value_parser = NonEmptyStringValueParser::new())]
    pub group: String,
    /// A topic to show (repeatable, or a comma-separated list). Default: the
    /// topics of the group in the log (then --log is required).
    #[arg(short, long = "topic", value_name = "TOPIC", value_delimiter = ',', value_parser = NonEmptyStringValueParser::new())]
    pub topics: Vec<String>,
    /// The failed-offset log (a file and its rotated files, or a database URL
    /// sqlite:PATH.db or postgresql://USER@HOST/DB), for the UNRESOLVED column.
    #[arg(short, long, value_name = "PATH|URL")]
    pub log: Option<PathBuf>,
    /// JSON Lines: one object per partition.
    #[arg(long)]
    pub json: bool,
}

/// One partition's row.
#[derive(Debug, serde::Serialize)]
struct Row {
    group: String,
    topic: String,
    partition: i32,
    /// `null`: nothing committed.
    committed: Option<i64>,
    log_start: i64,
    log_end: i64,
    /// log_end - committed; `null` when nothing is committed.
    lag: Option<i64>,
    /// Unresolved failed offsets of the group from the log, ascending.
    unresolved: Vec<i64>,
}

pub fn run(args: &OffsetsArgs, out: &mut dyn Write) -> Result<Done, CliError> {
    let log = match &args.log {
        Some(path) => Some(read_group(path, &args.group, None)?),
        None => None,
    };
    let topics: BTreeSet<String> = if !args.topics.is_empty() {
        args.topics.iter().cloned().collect()
    } else if let Some(log) = &log {
        log.topics.clone()
    } else {
        return Err(CliError::Usage(
            "give --topic, or --log to take the group's topics from the log".into(),
        ));
    };
    if topics.is_empty() {
        return Err(CliError::NotFound(format!(
            "the log has no entries for group {}; name the topics with --topic",
            args.group
        )));
    }
    let rows = collect(args, &topics, log.as_ref())?;
    print(args, out, &rows)?;
    Ok(match &log {
        Some(l) if !l.issues.is_empty() => {
            l.report_issues();
            Done::Damaged(l.issue_count)
        }
        _ => Done::Ok,
    })
}

fn collect(
    args: &OffsetsArgs,
    topics: &BTreeSet<String>,
    log: Option<&GroupLog>,
) -> Result<Vec<Row>, CliError> {
    let cluster = Cluster::connect(&args.cluster, &args.group)?;
    let mut partitions = Vec::new();
    // Topics taken from the log may be gone from the cluster: skipped with a
    // warning. A topic named with --topic must exist.
    let from_log = args.topics.is_empty();
    for t in topics {
        match cluster.partitions(t) {
            Ok(ps) => partitions.extend(ps.into_iter().map(|p| (t.clone(), p))),
            Err(CliError::NotFound(why)) if from_log => {
                let _ = writeln!(
                    std::io::stderr(),
                    "offset-guard: warning: {}; skipped",
                    escape(&why)
                );
            }
            Err(e) => return Err(e),
        }
    }
    if partitions.is_empty() {
        return Err(CliError::NotFound(format!(
            "none of the group's topics in the log is in the cluster: {}",
            escape(&topics.iter().cloned().collect::<Vec<_>>().join(", "))
        )));
    }
    let committed = cluster.committed(&partitions)?;
    let unresolved = log
        .map(GroupLog::unresolved_by_partition)
        .unwrap_or_default();
    let mut rows = Vec::with_capacity(partitions.len());
    for (topic, partition) in partitions {
        let (log_start, log_end) = cluster.watermarks(&topic, partition)?;
        let key = (topic, partition);
        let committed = committed.get(&key).copied().flatten();
        rows.push(Row {
            group: args.group.clone(),
            committed,
            log_start,
            log_end,
            lag: committed.map(|c| (log_end - c).max(0)),
            unresolved: unresolved
                .get(&key)
                .map(|s| s.iter().copied().collect())
                .unwrap_or_default(),
            topic: key.0,
            partition,
        });
    }
    Ok(rows)
}

fn print(args: &OffsetsArgs, out: &mut dyn Write, rows: &[Row]) -> Result<(), CliError> {
    if args.json {
        for r in rows {
            // Plain strings and integers: serializing cannot fail.
            let line = serde_json::to_string(r).unwrap_or_default();
            writeln!(out, "{}", json_safe(&line))?;
        }
        return Ok(());
    }
    let opt = |o: Option<i64>| o.map_or_else(|| "-".to_owned(), |v| v.to_string());
    let cells: Vec<Vec<String>> = rows
        .iter()
        .map(|r| {
            vec![
                escape(&r.group),
                escape(&r.topic),
                r.partition.to_string(),
                opt(r.committed),
                r.log_end.to_string(),
                opt(r.lag),
                r.unresolved.len().to_string(),
                list_offsets(&r.unresolved),
            ]
        })
        .collect();
    table(
        out,
        &[
            "GROUP",
            "TOPIC",
            "PARTITION",
            "COMMITTED",
            "LOG_END",
            "LAG",
            "UNRESOLVED",
            "FAILED_OFFSETS",
        ],
        &cells,
    )?;
    Ok(())
}

/// `42,57,60` (the first few, then `…(+N)`), or `-`.
fn list_offsets(offsets: &[i64]) -> String {
    if offsets.is_empty() {
        return "-".into();
    }
    let mut s: Vec<String> = offsets.iter().take(LISTED).map(i64::to_string).collect();
    if offsets.len() > LISTED {
        s.push(format!("…(+{})", offsets.len() - LISTED));
    }
    s.join(",")
}
