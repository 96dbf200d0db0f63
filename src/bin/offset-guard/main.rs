//! `offset-guard`: read the failed-offset log and act on it.
//!
//! ```text
//! offset-guard failures PATH [--json] [--topic T] [--partition N]
//!                            [--since TIME] [--unresolved] [--summary]
//! offset-guard offsets  -b SERVERS -g GROUP [-t TOPIC]... [-l PATH] [--json] [--timeout D]
//! offset-guard recommit -b SERVERS -g GROUP -l PATH [-t TOPIC]... [--dry-run] [--timeout D]
//! offset-guard resolve  -l PATH -g GROUP -t TOPIC -p PARTITION
//!                       (-o OFFSET... | --all-unresolved) -n NOTE [--by NAME]
//! ```
//!
//! PATH is a log file (with its rotated files), or a log kept in a SQLite
//! database, given as a URL: `sqlite:///abs/path.db` or
//! `sqlite:relative/path.db` (builds with the `sqlite` cargo feature), or a
//! log kept in PostgreSQL: `postgresql://user@host:port/db` or `postgres://...`
//! (builds with the `postgres` cargo feature; another scheme, or a scheme
//! without its feature, is a usage error naming it).
//!
//! - `failures`: prints the log (see `offset-guard failures --help`).
//! - `offsets`: connects to the cluster and shows, per partition of the
//!   group's topics (`--topic`, default: the group's topics in `--log`), the
//!   committed offset, the log-end offset, the lag and the group's unresolved
//!   failed offsets from the log. Reads only; the group is not joined.
//! - `recommit`: per partition, commits the group's highest unresolved failed
//!   offset when it is ahead of the committed offset (or nothing is
//!   committed) and appends `recommitted` / `superseded` resolutions; never
//!   commits backwards. Refused while the group has active members (the
//!   broker refuses commits from outside a group with members). `--dry-run`
//!   prints the plan only.
//! - `resolve`: appends `manual` resolutions with a note for the chosen
//!   unresolved failures; nothing is committed.
//!
//! Broker options: `--timeout` (all requests together, default 10 s) and
//! `-X KEY=VALUE` (librdkafka properties, e.g. security settings).
//! Names and messages from the log or the broker are printed with control
//! and bidi characters escaped (`\n`, `\e`, `\u{202e}`, ...).
//!
//! Exit codes (distinct per cause):
//! 0 success; 1 the log had damaged lines (what was readable was used; they
//! are listed on stderr); 2 usage error; 3 the log could not be opened, read
//! or written; 4 the cluster could not be reached in time or a request
//! failed; 5 `recommit` refused: the group has active members; 6 nothing
//! matched (no such unresolved failure, or topic); 7 the log is in use by a
//! running writer; 8 writing the output failed. A closed output pipe is not
//! an error.

use std::io::{self, BufWriter, Write};
use std::process::ExitCode;

use clap::{Parser, Subcommand};

mod cluster;
mod exit;
mod failures;
mod logfile;
mod offsets;
mod output;
mod recommit;
mod resolve;
mod text;

use exit::{CliError, Done};

const EXIT_CODES: &str = "\
Exit codes:
  0  success
  1  the log had damaged lines (what was readable was used; listed on stderr)
  2  usage error
  3  the log could not be opened, read or written
  4  the cluster could not be reached in time, or a request to it failed
  5  recommit refused: the group has active members
  6  nothing matched (no such unresolved failure, or topic)
  7  the log is in use by a running writer
  8  writing the output failed";

/// Read the failed-offset log written by offset_guard::failure_log::FailedOffsetLog,
/// and act on it: show a group's offsets, recommit failed offsets, resolve them by hand.
#[derive(Debug, Parser)]
#[command(name = "offset-guard", version, after_help = EXIT_CODES)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Print the failed offsets of a log (table, JSON Lines or per-partition summary)
    #[command(after_help = failures::AFTER_HELP)]
    Failures(failures::FailuresArgs),
    #[command(after_help = EXIT_CODES)]
    Offsets(offsets::OffsetsArgs),
    #[command(after_help = EXIT_CODES)]
    Recommit(recommit::RecommitArgs),
    #[command(after_help = EXIT_CODES)]
    Resolve(resolve::ResolveArgs),
}

fn main() -> ExitCode {
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) => {
            // Help and version go to stdout (code 0), errors to stderr (code 2);
            // a closed pipe is ignored, another failed write of help or version
            // (a full disk) is the output's exit code.
            let code = u8::try_from(e.exit_code()).unwrap_or(exit::USAGE);
            return match e.print() {
                Err(err) if code == exit::OK && err.kind() != io::ErrorKind::BrokenPipe => {
                    let _ = writeln!(
                        io::stderr(),
                        "offset-guard: error: writing the output: {err}"
                    );
                    ExitCode::from(exit::OUTPUT)
                }
                _ => ExitCode::from(code),
            };
        }
    };
    let stdout = io::stdout();
    let mut out = text::PipeSafe::new(BufWriter::new(stdout.lock()));
    let result = match &cli.command {
        Command::Failures(args) => return failures::run(args),
        Command::Offsets(a) => offsets::run(a, &mut out),
        Command::Recommit(a) => recommit::run(a, &mut out),
        Command::Resolve(a) => resolve::run(a, &mut out),
    };
    let result = result.and_then(|done| out.flush().map(|()| done).map_err(CliError::from));
    finish(result)
}

/// The exit code; the error on stderr (a closed stderr is ignored).
fn finish(result: Result<Done, CliError>) -> ExitCode {
    match result {
        Ok(done) => ExitCode::from(done.code()),
        Err(e) => {
            let _ = writeln!(io::stderr(), "offset-guard: error: {e}");
            ExitCode::from(e.code())
        }
    }
}

/// Writes one message line to stderr (escaped); never panics.
pub(crate) fn warn(message: &str) {
    let mut err = io::stderr().lock();
    let _ = writeln!(err, "offset-guard: {}", output::clean(message));
}
