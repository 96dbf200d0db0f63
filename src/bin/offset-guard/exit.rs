//! Exit codes and the typed errors of the operator commands.

use std::fmt;
use std::io;

use offset_guard::failure_log::LogError;

use crate::text::escape;

/// Success.
pub const OK: u8 = 0;
/// The log had damaged lines; what was readable was used and the command
/// finished. The damaged lines are listed on stderr.
pub const DAMAGED: u8 = 1;
/// Usage error (clap's code): unknown option, missing or invalid value.
pub const USAGE: u8 = 2;
/// The log could not be opened, read or written.
pub const LOG: u8 = 3;
/// The cluster could not be reached in time, or a request to it failed.
pub const KAFKA: u8 = 4;
/// `recommit` refused: the group has active members.
pub const ACTIVE_MEMBERS: u8 = 5;
/// Nothing matched: no such failure (or topic) to act on.
pub const NOT_FOUND: u8 = 6;
/// The log is in use: a running writer holds its lock.
pub const LOG_IN_USE: u8 = 7;
/// Writing the output failed (other than a closed pipe, which is not an error).
pub const OUTPUT: u8 = 8;

/// How a command that ran to its end finished.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Done {
    /// Everything read and done.
    Ok,
    /// Done, but the log had this many damaged lines (listed on stderr).
    Damaged(usize),
}

impl Done {
    /// The process exit code.
    pub fn code(self) -> u8 {
        match self {
            Done::Ok => OK,
            Done::Damaged(_) => DAMAGED,
        }
    }
}

/// Why an operator command stopped.
#[derive(Debug)]
pub enum CliError {
    /// Arguments that parse but do not fit together.
    Usage(String),
    /// Opening, reading or writing the failed-offset log.
    Log(LogError),
    /// A Kafka request failed or timed out. `what` says which.
    Kafka {
        /// What was being done.
        what: String,
        /// The error (from librdkafka or the broker).
        error: String,
    },
    /// The group has active members: an outsider's commit would be refused
    /// (`members: None`: the broker refused it).
    ActiveMembers {
        /// The group.
        group: String,
        /// How many members, when the broker said.
        members: Option<usize>,
    },
    /// Nothing matched the selection.
    NotFound(String),
    /// Writing stdout failed.
    Output(io::Error),
}

impl CliError {
    /// The process exit code.
    pub fn code(&self) -> u8 {
        match self {
            CliError::Usage(_) => USAGE,
            CliError::Log(e) => log_error_code(e),
            CliError::Kafka { .. } => KAFKA,
            CliError::ActiveMembers { .. } => ACTIVE_MEMBERS,
            CliError::NotFound(_) => NOT_FOUND,
            CliError::Output(_) => OUTPUT,
        }
    }

    pub fn kafka(what: impl Into<String>, error: impl fmt::Display) -> CliError {
        CliError::Kafka {
            what: what.into(),
            error: error.to_string(),
        }
    }
}

/// The exit code of a log error: [`USAGE`] for a URL this build cannot
/// use, [`LOG_IN_USE`] for a held lock, else [`LOG`].
pub fn log_error_code(e: &LogError) -> u8 {
    match e {
        LogError::UnsupportedUrl { .. } => USAGE,
        e if log_in_use(e) => LOG_IN_USE,
        _ => LOG,
    }
}

/// Whether opening the log failed because another writer holds its lock.
pub fn log_in_use(e: &LogError) -> bool {
    e.is_in_use()
}

impl fmt::Display for CliError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            CliError::Usage(m) => write!(f, "{}", escape(m)),
            CliError::Log(e) if log_in_use(e) => write!(
                f,
                "{}: the log is in use by a running writer (stop the service, or wait for it to close the log)",
                escape(&e.to_string())
            ),
            CliError::Log(e) => write!(f, "{}", escape(&e.to_string())),
            CliError::Kafka { what, error } => {
                write!(f, "{}: {}", escape(what), escape(error))
            }
            CliError::ActiveMembers { group, members } => {
                write!(f, "group {} has ", escape(group))?;
                match members {
                    Some(n) => write!(f, "{n} active member(s)")?,
                    None => write!(f, "active members (the broker refused the commit)")?,
                }
                write!(
                    f,
                    "; stop its consumers first: the broker refuses commits from outside a group that has members"
                )
            }
            CliError::NotFound(m) => write!(f, "{}", escape(m)),
            CliError::Output(e) => write!(f, "writing the output: {e}"),
        }
    }
}

impl From<LogError> for CliError {
    fn from(e: LogError) -> Self {
        CliError::Log(e)
    }
}

impl From<io::Error> for CliError {
    fn from(e: io::Error) -> Self {
        CliError::Output(e)
    }
}
