//! `offset-guard`: the operator's command for the failed-offset log.
//!
//! ```text
//! offset-guard failures PATH [--json] [--topic T] [--partition N]
//!                            [--since TIME] [--unresolved] [--summary]
//! offset-guard --help | --version
//! ```
//!
//! `failures` reads `PATH` and its rotated files (`PATH.N ... PATH.1, PATH`,
//! oldest first) line by line, in bounded memory, and prints the failed
//! offsets as an aligned table, one row per failure with whether it was
//! resolved later in the log (see `failures --help` for the options and how
//! the table is made). Damaged lines, unreadable files and rotated files
//! missing between others are skipped and listed on stderr after the output.
//! Text read from the log (topics, group ids, error messages) is printed with
//! control characters escaped (`\n`, `\u{1b}`, ...), so it cannot break rows
//! or drive the terminal; table columns are aligned by display width.
//!
//! # Exit codes
//!
//! - 0: success (also when the reader of the output went away: a closed pipe
//!   ends the output quietly).
//! - 1: the log is damaged or incomplete (damaged lines, a file that could
//!   not be read, a missing rotated file); what was readable was printed.
//! - 2: usage error (unknown or repeated option, missing or invalid value,
//!   non-UTF-8 text where text is expected).
//! - 3: the log could not be opened (missing, permission denied, a directory).
//! - 4: the output could not be written (other than a closed pipe).
//!
//! Built with the `cli` feature (on by default).

use std::io::{self, Write};
use std::process::ExitCode;

use clap::{Parser, Subcommand};

mod failures;
mod output;

/// The exit codes, as documented above and in `--help`.
pub(crate) mod exit {
    /// The log is damaged or incomplete; what was readable was printed.
    pub const DAMAGED: u8 = 1;
    /// Usage error.
    pub const USAGE: u8 = 2;
    /// The log could not be opened.
    pub const OPEN: u8 = 3;
    /// The output could not be written.
    pub const OUTPUT: u8 = 4;
}

const EXIT_CODES_HELP: &str = "\
Exit codes:
  0  success (a closed output pipe ends the output quietly)
  1  the log is damaged or incomplete (damaged lines, unreadable or missing
     rotated files); what was readable was printed
  2  usage error
  3  the log could not be opened (missing, unreadable, a directory)
  4  the output could not be written";

/// Read the failed-offset log written by offset_guard::failure_log::FailedOffsetLog.
#[derive(Debug, Parser)]
#[command(name = "offset-guard", version, after_help = EXIT_CODES_HELP)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

/// The commands; each lives in its own module.
#[derive(Debug, Subcommand)]
enum Command {
    /// Print the failed offsets of a log (table, JSON Lines or per-partition summary)
    #[command(after_help = failures::AFTER_HELP)]
    Failures(failures::FailuresArgs),
}

fn main() -> ExitCode {
    let cli = match Cli::try_parse_from(std::env::args_os()) {
        Ok(cli) => cli,
        Err(e) => return clap_exit(&e),
    };
    match cli.command {
        Command::Failures(args) => failures::run(&args),
    }
}

/// Prints clap's help, version or usage error; a closed pipe is not an error.
fn clap_exit(e: &clap::Error) -> ExitCode {
    // `print` writes help/version to stdout and errors to stderr, and returns
    // write errors instead of panicking.
    let _ = e.print();
    if e.use_stderr() {
        ExitCode::from(exit::USAGE)
    } else {
        ExitCode::SUCCESS
    }
}

/// Writes one message line to stderr (escaped); never panics.
pub(crate) fn warn(message: &str) {
    let mut err = io::stderr().lock();
    let _ = writeln!(err, "offset-guard: {}", output::clean(message));
}
