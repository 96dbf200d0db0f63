//! What the SQL stores share apart from their SQL: argument checks, the
//! mapping of the model's refusals to errors, the checks of loaded rows and
//! the key retention clock. Each store keeps its own SQL text.

use std::time::{Duration, SystemTime};

use super::error::ProgressError;
use super::model::{MarkRefused, PartitionProgress};

pub(crate) fn check_coordinates(
    group: &str,
    topic: &str,
    partition: i32,
) -> Result<(), ProgressError> {
    let invalid = |name, value: String| Err(ProgressError::InvalidArgument { name, value });
    check_group(group)?;
    if topic.is_empty() {
        return invalid("topic", topic.into());
    }
    check_no_nul("topic", topic)?;
    if partition < 0 {
        return invalid("partition", partition.to_string());
    }
    Ok(())
}

/// `mark_done`'s offset: `i64::MAX` is refused before any statement (its
/// watermark, offset + 1, would not fit in an i64).
pub(crate) fn check_mark_offset(offset: i64) -> Result<(), ProgressError> {
    if offset == i64::MAX {
        return Err(ProgressError::InvalidArgument {
            name: "offset",
            value: offset.to_string(),
        });
    }
    Ok(())
}

pub(crate) fn check_floor(floor: i64) -> Result<(), ProgressError> {
    if floor < 0 {
        return Err(ProgressError::InvalidArgument {
            name: "floor",
            value: floor.to_string(),
        });
    }
    Ok(())
}

pub(crate) fn check_group(group: &str) -> Result<(), ProgressError> {
    if group.is_empty() {
        return Err(ProgressError::InvalidArgument {
            name: "group",
            value: String::new(),
        });
    }
    check_no_nul("group", group)
}

/// A group or topic with a NUL byte is refused in both stores: PostgreSQL's
/// `TEXT` cannot hold one (and Kafka names never do).
fn check_no_nul(name: &'static str, value: &str) -> Result<(), ProgressError> {
    if let Some(at) = value.find('\0') {
        return Err(ProgressError::InvalidArgument {
            name,
            value: format!("contains a NUL byte (at byte {at})"),
        });
    }
    Ok(())
}

pub(crate) fn already_done(
    topic: &str,
    partition: i32,
    offset: i64,
    watermark: Option<i64>,
) -> ProgressError {
    ProgressError::AlreadyDone {
        topic: topic.into(),
        partition,
        offset,
        watermark,
    }
}

/// The error for a mark the model refused.
pub(crate) fn refused(
    r: MarkRefused,
    topic: &str,
    partition: i32,
    offset: i64,
    watermark: Option<i64>,
) -> ProgressError {
    match r {
        MarkRefused::AlreadyDone => already_done(topic, partition, offset, watermark),
        MarkRefused::Negative | MarkRefused::TooLarge => ProgressError::InvalidArgument {
            name: "offset",
            value: offset.to_string(),
        },
    }
}

/// A partition's progress from its stored rows (`done` ascending), after
/// checking that they do not contradict themselves.
pub(crate) fn loaded(
    topic: &str,
    partition: i32,
    watermark: Option<i64>,
    done: Vec<i64>,
) -> Result<PartitionProgress, ProgressError> {
    let damaged = |detail: String| ProgressError::Damaged {
        topic: topic.into(),
        partition,
        detail,
    };
    if let Some(w) = watermark.filter(|w| *w < 0) {
        return Err(damaged(format!("negative watermark {w}")));
    }
    if let Some(&o) = done.first().filter(|o| **o < 0) {
        return Err(damaged(format!("negative done offset {o}")));
    }
    if let (Some(w), Some(&o)) = (watermark, done.first())
        && o < w
    {
        return Err(damaged(format!(
            "done offset {o} below the watermark {w} (it should have been folded)"
        )));
    }
    Ok(PartitionProgress::from_parts(watermark, done))
}

/// `(now, cutoff)` in milliseconds since the Unix epoch: a key processed
/// before `cutoff` is out of `retention`.
pub(crate) fn key_clock(retention: Duration, now: SystemTime) -> (i64, i64) {
    let millis = |d: Duration| i64::try_from(d.as_millis()).unwrap_or(i64::MAX);
    let now_ms = match now.duration_since(SystemTime::UNIX_EPOCH) {
        Ok(d) => millis(d),
        Err(e) => -millis(e.duration()),
    };
    (now_ms, now_ms.saturating_sub(millis(retention)))
}

/// A key retention of zero would never recognize a key.
pub(crate) fn check_retention(retention: Duration) -> Result<(), ProgressError> {
    if retention.is_zero() {
        return Err(ProgressError::InvalidArgument {
            name: "retention",
            value: "0s (a key would never be recognized)".into(),
        });
    }
    Ok(())
}

/// The stored schema versions (one row expected) against this build's.
pub(crate) fn check_version(
    table: &str,
    versions: &[i64],
    supported: i64,
) -> Result<(), ProgressError> {
    let foreign = |detail: String| ProgressError::ForeignSchema {
        table: table.into(),
        detail,
    };
    match versions {
        [v] if *v == supported => Ok(()),
        [v] if *v > supported => Err(ProgressError::SchemaTooNew {
            found: *v,
            supported,
        }),
        [v] => Err(foreign(format!(
            "version {v} is not one offset-guard wrote"
        ))),
        rows => Err(foreign(format!("{} version rows, expected 1", rows.len()))),
    }
}
