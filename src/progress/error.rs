//! What can go wrong storing progress.

use std::fmt;

/// Why a progress store call failed. Each variant names what is wrong; the
/// user's transaction is left as it was (roll it back on an error: nothing
/// of the call is applied until you commit, and after an error you should not).
#[derive(Debug)]
#[non_exhaustive]
pub enum ProgressError {
    /// The record is done already: it was processed twice. Roll the
    /// transaction back so its effects are not applied twice.
    AlreadyDone {
        /// The topic.
        topic: String,
        /// The partition.
        partition: i32,
        /// The offset marked a second time.
        offset: i64,
        /// The partition's stored watermark (next offset to process), if started.
        watermark: Option<i64>,
    },
    /// An argument cannot be a Kafka coordinate: an empty group id or topic,
    /// a group id or topic with a NUL byte (both stores refuse it before any
    /// statement: PostgreSQL's `TEXT` cannot hold one), a negative partition
    /// or offset.
    InvalidArgument {
        /// The argument, e.g. `offset`.
        name: &'static str,
        /// The value given.
        value: String,
    },
    /// A writing call got a connection outside a transaction: progress must be
    /// written in the same transaction as the record's effects.
    NotInTransaction {
        /// The call, e.g. `mark_done`.
        call: &'static str,
    },
    /// The progress tables do not exist: call `migrate` first.
    NotMigrated {
        /// The database's message.
        detail: String,
    },
    /// The database holds the progress schema in a newer version than this
    /// build knows: a newer offset-guard migrated it. Nothing is changed.
    SchemaTooNew {
        /// The version found.
        found: i64,
        /// The newest version this build knows.
        supported: i64,
    },
    /// A table with one of the progress store's names exists but is not the
    /// store's (other columns, no version row): nothing is changed.
    ForeignSchema {
        /// The table.
        table: String,
        /// What does not match.
        detail: String,
    },
    /// Stored progress contradicts itself (a negative watermark, a done row
    /// below the watermark): the rows were edited by hand or damaged.
    Damaged {
        /// The topic.
        topic: String,
        /// The partition.
        partition: i32,
        /// What is wrong.
        detail: String,
    },
    /// `postgres::Loader`: an earlier load got no answer within the loader's
    /// timeout and the loader's connection is still busy with it, so this
    /// load fails at once instead of waiting its full timeout behind it
    /// (the loader runs inside the rebalance callback, once per assigned
    /// partition). Loads wait again as soon as the loader answered.
    LoaderStalled {
        /// The unanswered load, e.g. `orders[3] of group billing`.
        pending: String,
        /// The loader's timeout it exceeded.
        timeout: std::time::Duration,
    },
    /// The database failed a statement.
    Database {
        /// What the store was doing, e.g. `insert done row`.
        action: &'static str,
        /// The driver's error.
        source: Box<dyn std::error::Error + Send + Sync>,
    },
}

impl ProgressError {
    /// The record was done already ([`ProgressError::AlreadyDone`]).
    pub fn is_already_done(&self) -> bool {
        matches!(self, ProgressError::AlreadyDone { .. })
    }
}

impl fmt::Display for ProgressError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ProgressError::AlreadyDone {
                topic,
                partition,
                offset,
                watermark,
            } => {
                write!(
                    f,
                    "record {topic}[{partition}]@{offset} is already done (processed twice)"
                )?;
                match watermark {
                    Some(w) => write!(f, "; stored watermark {w}"),
                    None => Ok(()),
                }
            }
            ProgressError::InvalidArgument { name, value } => {
                write!(f, "invalid {name}: {value:?}")
            }
            ProgressError::NotInTransaction { call } => write!(
                f,
                "{call} needs a connection inside a transaction (progress is written with the record's effects)"
            ),
            ProgressError::NotMigrated { detail } => write!(
                f,
                "the progress tables are missing; call migrate first ({detail})"
            ),
            ProgressError::SchemaTooNew { found, supported } => write!(
                f,
                "progress schema version {found} is newer than this build supports ({supported})"
            ),
            ProgressError::ForeignSchema { table, detail } => {
                write!(f, "table {table} is not offset-guard's: {detail}")
            }
            ProgressError::Damaged {
                topic,
                partition,
                detail,
            } => write!(
                f,
                "stored progress of {topic}[{partition}] is damaged: {detail}"
            ),
            ProgressError::LoaderStalled { pending, timeout } => write!(
                f,
                "progress loader: the load of {pending} got no answer within {timeout:?} and \
                 is still running; failing at once until the loader answers"
            ),
            ProgressError::Database { action, source } => {
                write!(
                    f,
                    "progress store: {action}: {}",
                    with_causes(source.as_ref())
                )
            }
        }
    }
}

impl std::error::Error for ProgressError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            ProgressError::Database { source, .. } => Some(source.as_ref()),
            _ => None,
        }
    }
}

/// An error's text with its causes (`source()` chain) appended, `: `
/// separated: drivers such as tokio-postgres put the server's message
/// ("FATAL: role \"x\" does not exist") in a cause and say only "db error"
/// themselves. A cause whose text is already in the message is left out.
pub(crate) fn with_causes(e: &(dyn std::error::Error + 'static)) -> String {
    let mut text = e.to_string();
    let mut cause = e.source();
    while let Some(c) = cause {
        let s = c.to_string();
        if !text.contains(&s) {
            text.push_str(": ");
            text.push_str(&s);
        }
        cause = c.source();
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug)]
    struct Layer(&'static str, Option<Box<Layer>>);

    impl fmt::Display for Layer {
        fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.write_str(self.0)
        }
    }

    impl std::error::Error for Layer {
        fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
            self.1.as_deref().map(|l| l as _)
        }
    }

    #[test]
    fn a_database_error_shows_its_causes() {
        let e = ProgressError::Database {
            action: "load",
            source: Box::new(Layer(
                "db error",
                Some(Box::new(Layer(
                    "FATAL: role \"nobody\" does not exist",
                    None,
                ))),
            )),
        };
        assert_eq!(
            e.to_string(),
            "progress store: load: db error: FATAL: role \"nobody\" does not exist"
        );
        // A cause already in the message is not repeated.
        let e = Layer("connect: refused", Some(Box::new(Layer("refused", None))));
        assert_eq!(with_causes(&e), "connect: refused");
    }
}
