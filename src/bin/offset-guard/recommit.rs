//! `offset-guard recommit`: commit a group's unresolved failed offsets that
//! are still ahead of its committed offset, and record the resolutions.

use std::collections::{BTreeMap, BTreeSet};
use std::io::Write;

use clap::builder::NonEmptyStringValueParser;
use std::path::PathBuf;

use offset_guard::failure_log::Resolution;

use crate::cluster::{Cluster, ClusterArgs, Committed, tp_label};
use crate::exit::{CliError, Done};
use crate::logfile::{append, open_for_append, read_group};
use crate::text::{escape, table};

/// Commit the group's unresolved failed offsets that are ahead of its
/// committed offset, and append the resolutions to the log.
///
/// Per partition the highest unresolved failed offset is committed if it is
/// ahead of the group's committed offset (or nothing is committed); the
/// committed offset never goes backwards: a failure at or below it is
/// recorded as superseded by it. Refused (exit code 5) while the group has
/// active members: stop its consumers first. The committed offsets are read
/// back before the resolutions are written.
#[derive(Debug, Clone, clap::Args)]
pub struct RecommitArgs {
    #[command(flatten)]
    pub cluster: ClusterArgs,
    /// The consumer group.
    #[arg(short, long, value_parser = NonEmptyStringValueParser::new())]
    pub group: String,
    /// The failed-offset log: a file (and its rotated files), or a database
    /// URL sqlite:///ABS/PATH.db, sqlite:REL/PATH.db or
    /// postgresql://USER@HOST:PORT/DB.
    #[arg(short, long, value_name = "PATH|URL")]
    pub log: PathBuf,
    /// Only these topics (repeatable, or a comma-separated list). Default: all
    /// of the group's topics with unresolved failures.
    #[arg(short, long = "topic", value_name = "TOPIC", value_delimiter = ',', value_parser = NonEmptyStringValueParser::new())]
    pub topics: Vec<String>,
    /// Print the plan only: nothing is committed, nothing is written.
    #[arg(long)]
    pub dry_run: bool,
}

/// What to do for one partition.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Action {
    /// Commit the highest failed offset: it is ahead of the committed offset.
    Commit(i64),
    /// The committed offset already covers every unresolved failure.
    Covered(i64),
}

#[derive(Debug)]
struct Step {
    topic: String,
    partition: i32,
    /// Unresolved failed offsets, ascending (never empty).
    failed: BTreeSet<i64>,
    committed: Option<i64>,
    action: Action,
}

pub fn run(args: &RecommitArgs, out: &mut dyn Write) -> Result<Done, CliError> {
    // Lock the log first (a running writer makes this fail), then read it.
    let writer = if args.dry_run {
        None
    } else {
        Some(open_for_append(&args.log)?)
    };
    let log = read_group(&args.log, &args.group, None)?;
    let done = if log.issues.is_empty() {
        Done::Ok
    } else {
        Done::Damaged(log.issue_count)
    };
    let mut failed: BTreeMap<(String, i32), BTreeSet<i64>> = log.unresolved_by_partition();
    if !args.topics.is_empty() {
        failed.retain(|(t, _), _| args.topics.contains(t));
    }
    if failed.is_empty() {
        writeln!(
            out,
            "nothing to recommit: no unresolved failed offsets of group {} in the log",
            escape(&args.group)
        )?;
        log.report_issues();
        return Ok(done);
    }
    let cluster = Cluster::connect(&args.cluster, &args.group)?;
    let members = cluster.members()?;
    if let Some(n) = members.filter(|n| *n > 0) {
        return Err(CliError::ActiveMembers {
            group: args.group.clone(),
            members: Some(n),
        });
    }
    let keys: Vec<(String, i32)> = failed.keys().cloned().collect();
    let steps = plan(failed, &cluster.committed(&keys)?);
    print_plan(out, &steps)?;
    let Some(writer) = writer else {
        if members.is_none() {
            writeln!(
                out,
                "note: the broker cannot list group members; a group with members would refuse the commit"
            )?;
        }
        writeln!(
            out,
            "dry run: nothing committed, nothing written to the log"
        )?;
        log.report_issues();
        return Ok(done);
    };
    let committed = commit_and_verify(&cluster, &steps)?;
    let resolutions = resolutions(&args.group, &steps);
    let written = resolutions.len();
    if let Err(e) = append(writer, resolutions) {
        let _ = writeln!(
            std::io::stderr(),
            "offset-guard: the offsets were committed, but the resolutions could not be written; \
             mark them with `offset-guard resolve`"
        );
        return Err(e);
    }
    writeln!(
        out,
        "committed {committed} partition(s); appended {written} resolution(s) to {}",
        escape(&args.log.display().to_string())
    )?;
    log.report_issues();
    Ok(done)
}

fn plan(failed: BTreeMap<(String, i32), BTreeSet<i64>>, committed: &Committed) -> Vec<Step> {
    failed
        .into_iter()
        .map(|((topic, partition), failed)| {
            let highest = failed.last().copied().unwrap_or_default();
            let committed = committed
                .get(&(topic.clone(), partition))
                .copied()
                .flatten();
            let action = match committed {
                Some(c) if c >= highest => Action::Covered(c),
                _ => Action::Commit(highest),
            };
            Step {
                topic,
                partition,
                failed,
                committed,
                action,
            }
        })
        .collect()
}

fn print_plan(out: &mut dyn Write, steps: &[Step]) -> Result<(), CliError> {
    let rows: Vec<Vec<String>> = steps
        .iter()
        .map(|s| {
            let failed: Vec<String> = s.failed.iter().map(i64::to_string).collect();
            vec![
                escape(&s.topic),
                s.partition.to_string(),
                failed.join(","),
                s.committed
                    .map_or_else(|| "-".to_owned(), |c| c.to_string()),
                match s.action {
                    Action::Commit(o) => format!("commit {o}"),
                    Action::Covered(c) => format!("none: covered by committed {c}"),
                },
            ]
        })
        .collect();
    table(
        out,
        &["TOPIC", "PARTITION", "UNRESOLVED", "COMMITTED", "ACTION"],
        &rows,
    )?;
    Ok(())
}

/// Commits the `Commit` steps in one request and reads the offsets back;
/// returns how many partitions were committed.
fn commit_and_verify(cluster: &Cluster, steps: &[Step]) -> Result<usize, CliError> {
    let to_commit: Vec<(String, i32, i64)> = steps
        .iter()
        .filter_map(|s| match s.action {
            Action::Commit(o) => Some((s.topic.clone(), s.partition, o)),
            Action::Covered(_) => None,
        })
        .collect();
    if to_commit.is_empty() {
        return Ok(0);
    }
    cluster.commit(&to_commit)?;
    let keys: Vec<(String, i32)> = to_commit.iter().map(|(t, p, _)| (t.clone(), *p)).collect();
    let now = cluster.committed(&keys)?;
    for (t, p, o) in &to_commit {
        let got = now.get(&(t.clone(), *p)).copied().flatten();
        if got != Some(*o) {
            return Err(CliError::kafka(
                format!("checking the commit of {}", tp_label(t, *p)),
                format!(
                    "committed offset read back is {}, not {o}; nothing was written to the log",
                    got.map_or_else(|| "none".to_owned(), |c| c.to_string())
                ),
            ));
        }
    }
    Ok(to_commit.len())
}

/// One resolution per unresolved failed offset: the committed one as
/// `recommitted`, the others as `superseded` by the offset now committed.
fn resolutions(group: &str, steps: &[Step]) -> Vec<Resolution> {
    let mut out = Vec::new();
    for s in steps {
        let covering = match s.action {
            Action::Commit(o) | Action::Covered(o) => o,
        };
        for &offset in &s.failed {
            out.push(match s.action {
                Action::Commit(o) if o == offset => {
                    Resolution::recommitted(group, &s.topic, s.partition, offset)
                }
                _ => Resolution::superseded(group, &s.topic, s.partition, offset, covering),
            });
        }
    }
    out
}
