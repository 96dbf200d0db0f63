//! `offset-guard resolve`: mark chosen failed offsets resolved by hand.

use std::collections::BTreeSet;
use std::io::Write;

use clap::builder::NonEmptyStringValueParser;
use std::path::PathBuf;

use offset_guard::failure_log::Resolution;

use crate::exit::{CliError, Done};
use crate::logfile::{append, open_for_append, read_group};
use crate::text::{escape, table};

/// Mark failed offsets resolved by hand, with a note; nothing is committed.
///
/// Appends one `"resolution":"manual"` line per chosen failure. A manual
/// resolution resolves exactly its offset (not the ones below it). Every
/// chosen offset must be an unresolved failure of the group in the log, or
/// nothing is written (exit code 6).
#[derive(Debug, Clone, clap::Args)]
#[command(group = clap::ArgGroup::new("which").required(true).multiple(false).args(["offsets", "all_unresolved"]))]
pub struct ResolveArgs {
    /// The failed-offset log: a file (and its rotated files), or a database
    /// URL sqlite:///ABS/PATH.db, sqlite:REL/PATH.db or
    /// postgresql://USER@HOST:PORT/DB.
    #[arg(short, long, value_name = "PATH|URL")]
    pub log: PathBuf,
    /// The consumer group.
    #[arg(short, long, value_parser = NonEmptyStringValueParser::new())]
    pub group: String,
    /// The topic.
    #[arg(short, long, value_parser = NonEmptyStringValueParser::new())]
    pub topic: String,
    /// The partition.
    #[arg(short, long)]
    pub partition: i32,
    /// A failed offset to resolve (repeatable, or a comma-separated list).
    #[arg(short, long = "offset", value_name = "OFFSET", value_delimiter = ',')]
    pub offsets: Vec<i64>,
    /// Every unresolved failed offset of the partition.
    #[arg(long)]
    pub all_unresolved: bool,
    /// Why (written in the log with each resolution); required.
    #[arg(short, long, value_parser = parse_note)]
    pub note: String,
    /// Who resolves them (written as "by"). Default: $USER, when set.
    #[arg(long, value_parser = NonEmptyStringValueParser::new())]
    pub by: Option<String>,
}

fn parse_note(s: &str) -> Result<String, String> {
    if s.trim().is_empty() {
        return Err("the note is empty; say why these offsets need no commit".into());
    }
    Ok(s.to_owned())
}

pub fn run(args: &ResolveArgs, out: &mut dyn Write) -> Result<Done, CliError> {
    let writer = open_for_append(&args.log)?;
    let log = read_group(&args.log, &args.group, Some((&args.topic, args.partition)))?;
    let key = (args.topic.clone(), args.partition);
    let unresolved = log
        .unresolved_by_partition()
        .remove(&key)
        .unwrap_or_default();
    let failed = &log.failed;
    let label = format!(
        "group {} topic {} partition {}",
        args.group, args.topic, args.partition
    );
    let mut chosen: BTreeSet<i64> = BTreeSet::new();
    for &o in &args.offsets {
        if !unresolved.contains(&o) {
            let why = if failed.contains(&o) {
                "is resolved already"
            } else {
                "is not a failure in the log"
            };
            return Err(CliError::NotFound(format!(
                "offset {o} of {label} {why}; nothing written"
            )));
        }
        chosen.insert(o);
    }
    if args.all_unresolved {
        if unresolved.is_empty() {
            return Err(CliError::NotFound(format!(
                "{label} has no unresolved failures in the log; nothing written"
            )));
        }
        chosen.extend(unresolved.iter().copied());
    }
    let by = args
        .by
        .clone()
        .or_else(|| std::env::var("USER").ok())
        .filter(|b| !b.trim().is_empty());
    let resolutions: Vec<Resolution> = chosen
        .iter()
        .map(|&o| {
            let r = Resolution::manual(&args.group, &args.topic, args.partition, o, &args.note);
            match &by {
                Some(b) => r.with_by(b),
                None => r,
            }
        })
        .collect();
    append(writer, resolutions)?;
    let rows: Vec<Vec<String>> = chosen
        .iter()
        .map(|o| {
            vec![
                escape(&args.topic),
                args.partition.to_string(),
                o.to_string(),
                escape(&args.note),
            ]
        })
        .collect();
    table(out, &["TOPIC", "PARTITION", "OFFSET", "NOTE"], &rows)?;
    writeln!(
        out,
        "resolved {} failed offset(s) by hand in {}",
        chosen.len(),
        escape(&args.log.display().to_string())
    )?;
    log.report_issues();
    Ok(if log.issues.is_empty() {
        Done::Ok
    } else {
        Done::Damaged(log.issue_count)
    })
}
