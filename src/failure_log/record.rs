//! The records of the failed-offset log and their JSON Lines form.

use std::borrow::Cow;
use std::fmt;
use std::time::SystemTime;

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::sink::{FailedOffset, FailureReason};

/// The format version written in every line (`"v":1`). A reader skips lines
/// with a higher version and reports them as [`ReadIssueKind::UnsupportedVersion`].
pub const FORMAT_VERSION: u64 = 1;

/// One offset the guard gave up on (a `"kind":"failure"` line).
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub struct FailureRecord {
    /// When the guard gave up (stored with millisecond precision).
    pub time: SystemTime,
    /// The consumer group.
    pub group_id: String,
    /// The group member id, when known.
    pub member_id: Option<String>,
    /// Topic.
    pub topic: String,
    /// Partition.
    pub partition: i32,
    /// The commit offset that was not committed (the next record to read).
    pub offset: i64,
    /// Why it was given up on.
    pub reason: FailureReason,
    /// The name of the Kafka error of the last attempt, when there was one:
    /// the name of the `rdkafka::error::RDKafkaErrorCode` variant, e.g.
    /// `"RequestTimedOut"` or `"GroupAuthorizationFailed"`.
    pub error_code: Option<String>,
    /// A readable error message.
    pub error_message: String,
    /// Commit attempts made.
    pub attempts: u32,
    /// Milliseconds from the first attempt until giving up.
    pub elapsed_ms: u64,
}

impl From<FailedOffset> for FailureRecord {
    fn from(f: FailedOffset) -> Self {
        FailureRecord {
            time: f.time,
            group_id: f.group_id,
            member_id: f.member_id,
            topic: f.topic,
            partition: f.partition,
            offset: f.offset,
            reason: f.reason,
            error_code: f.error_code.map(|c| format!("{c:?}")),
            error_message: f.error_message,
            attempts: f.attempts,
            elapsed_ms: u64::try_from(f.elapsed.as_millis()).unwrap_or(u64::MAX),
        }
    }
}

/// How a failed offset was resolved.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum ResolutionKind {
    /// The offset itself was committed later (e.g. replayed on assignment).
    Recommitted,
    /// A higher offset was committed, which covers this one.
    Superseded {
        /// The committed offset that covers it.
        committed_offset: i64,
    },
    /// Marked resolved by hand (`offset-guard resolve`), nothing committed;
    /// [`Resolution::note`] says why.
    Manual,
}

impl ResolutionKind {
    /// The snake_case name written in the log: `recommitted`, `superseded`
    /// or `manual`.
    pub fn as_str(&self) -> &'static str {
        match self {
            ResolutionKind::Recommitted => "recommitted",
            ResolutionKind::Superseded { .. } => "superseded",
            ResolutionKind::Manual => "manual",
        }
    }
}

/// A failed offset that was committed after all (a `"kind":"resolved"` line).
/// The log stays append-only: resolutions are new lines, failures are never
/// rewritten.
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub struct Resolution {
    /// When it was resolved.
    pub time: SystemTime,
    /// The consumer group.
    pub group_id: String,
    /// Topic.
    pub topic: String,
    /// Partition.
    pub partition: i32,
    /// The failed offset being resolved.
    pub offset: i64,
    /// How it was resolved.
    pub how: ResolutionKind,
    /// Why, in words (written as `"note"` when present; set for
    /// [`ResolutionKind::Manual`]).
    pub note: Option<String>,
    /// Who resolved it (written as `"by"` when present), e.g. the operator's
    /// user name for a manual resolution.
    pub by: Option<String>,
}

impl Resolution {
    /// `offset` was committed after all; time is now.
    pub fn recommitted(
        group_id: impl Into<String>,
        topic: impl Into<String>,
        partition: i32,
        offset: i64,
    ) -> Self {
        Resolution {
            time: SystemTime::now(),
            group_id: group_id.into(),
            topic: topic.into(),
            partition,
            offset,
            how: ResolutionKind::Recommitted,
            note: None,
            by: None,
        }
    }

    /// `committed_offset` (>= `offset`) was committed, which covers the failed
    /// `offset`; time is now.
    pub fn superseded(
        group_id: impl Into<String>,
        topic: impl Into<String>,
        partition: i32,
        offset: i64,
        committed_offset: i64,
    ) -> Self {
        Resolution {
            time: SystemTime::now(),
            group_id: group_id.into(),
            topic: topic.into(),
            partition,
            offset,
            how: ResolutionKind::Superseded { committed_offset },
            note: None,
            by: None,
        }
    }

    /// `offset` was marked resolved by hand, with a `note` saying why
    /// (nothing was committed); time is now. Covers failures up to `offset`
    /// like a recommit does.
    pub fn manual(
        group_id: impl Into<String>,
        topic: impl Into<String>,
        partition: i32,
        offset: i64,
        note: impl Into<String>,
    ) -> Self {
        Resolution {
            time: SystemTime::now(),
            group_id: group_id.into(),
            topic: topic.into(),
            partition,
            offset,
            how: ResolutionKind::Manual,
            note: Some(note.into()),
            by: None,
        }
    }

    /// Sets who resolved it (the `"by"` field).
    pub fn with_by(mut self, by: impl Into<String>) -> Self {
        self.by = Some(by.into());
        self
    }

    /// Whether this resolution resolves an earlier failure of the same
    /// group, topic and partition at `failed_offset`: a manual resolution
    /// resolves exactly its own offset (nothing was committed); the others
    /// every failed offset up to [`covers`](Self::covers).
    pub fn resolves(&self, failed_offset: i64) -> bool {
        match self.how {
            ResolutionKind::Manual => failed_offset == self.offset,
            _ => failed_offset <= self.covers(),
        }
    }

    /// The highest failed offset this resolution covers: a committed offset
    /// `c` means every record below `c` is done, so failures at offsets `<= c`
    /// are resolved. That is `offset`, or `committed_offset` for a
    /// supersession when it is higher.
    pub fn covers(&self) -> i64 {
        match self.how {
            ResolutionKind::Recommitted | ResolutionKind::Manual => self.offset,
            ResolutionKind::Superseded { committed_offset } => committed_offset.max(self.offset),
        }
    }
}

/// One line of the log.
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub enum LogEntry {
    /// An offset given up on.
    Failure(FailureRecord),
    /// A failed offset committed after all.
    Resolved(Resolution),
}

impl LogEntry {
    /// When it happened.
    pub fn time(&self) -> SystemTime {
        match self {
            LogEntry::Failure(f) => f.time,
            LogEntry::Resolved(r) => r.time,
        }
    }

    /// The consumer group.
    pub fn group_id(&self) -> &str {
        match self {
            LogEntry::Failure(f) => &f.group_id,
            LogEntry::Resolved(r) => &r.group_id,
        }
    }

    /// Topic.
    pub fn topic(&self) -> &str {
        match self {
            LogEntry::Failure(f) => &f.topic,
            LogEntry::Resolved(r) => &r.topic,
        }
    }

    /// Partition.
    pub fn partition(&self) -> i32 {
        match self {
            LogEntry::Failure(f) => f.partition,
            LogEntry::Resolved(r) => r.partition,
        }
    }

    /// The failed offset (of the failure, or the one being resolved).
    pub fn offset(&self) -> i64 {
        match self {
            LogEntry::Failure(f) => f.offset,
            LogEntry::Resolved(r) => r.offset,
        }
    }

    /// The entry as one line of JSON, with its trailing newline.
    ///
    /// ```
    /// use std::time::{Duration, UNIX_EPOCH};
    /// use offset_guard::failure_log::{LogEntry, Resolution};
    ///
    /// let mut r = Resolution::superseded("billing", "orders", 3, 42, 50);
    /// r.time = UNIX_EPOCH + Duration::from_millis(1_795_444_236_123);
    /// assert_eq!(
    ///     LogEntry::Resolved(r).to_json_line(),
    ///     r#"{"v":1,"kind":"resolved","time":"2026-11-23T14:30:36.123Z","group_id":"billing","topic":"orders","partition":3,"offset":42,"resolution":"superseded","committed_offset":50}"#
    ///         .to_owned() + "\n"
    /// );
    /// ```
    pub fn to_json_line(&self) -> String {
        let mut line = match self {
            LogEntry::Failure(f) => serde_json::to_string(&WireFailure {
                v: FORMAT_VERSION,
                kind: KIND_FAILURE.into(),
                time: format_time(f.time),
                group_id: f.group_id.clone(),
                member_id: f.member_id.clone(),
                topic: f.topic.clone(),
                partition: f.partition,
                offset: f.offset,
                reason: f.reason.as_str().into(),
                error_code: f.error_code.clone(),
                error_message: f.error_message.clone(),
                attempts: f.attempts,
                elapsed_ms: f.elapsed_ms,
            }),
            LogEntry::Resolved(r) => serde_json::to_string(&WireResolved {
                v: FORMAT_VERSION,
                kind: KIND_RESOLVED.into(),
                time: format_time(r.time),
                group_id: r.group_id.clone(),
                topic: r.topic.clone(),
                partition: r.partition,
                offset: r.offset,
                resolution: r.how.as_str().into(),
                committed_offset: match r.how {
                    ResolutionKind::Superseded { committed_offset } => Some(committed_offset),
                    ResolutionKind::Recommitted | ResolutionKind::Manual => None,
                },
                note: r.note.clone(),
                by: r.by.clone(),
            }),
        }
        // Serializing plain strings and integers cannot fail.
        .unwrap_or_default();
        line.push('\n');
        line
    }

    /// Parses one line (without its newline). Unknown fields are ignored, so
    /// later version-1 writers may add fields; a line whose `v` is above
    /// [`FORMAT_VERSION`] is rejected as [`ReadIssueKind::UnsupportedVersion`].
    pub fn parse_line(line: &str) -> Result<LogEntry, ReadIssueKind> {
        // The fast path borrows from the line; anything it does not accept
        // goes through the slow path, which names what is wrong.
        if let Some(entry) = parse_fast(line) {
            return Ok(entry);
        }
        parse_slow(line)
    }
}

/// One line, every field optional and borrowed where no unescaping is needed.
#[derive(Deserialize)]
struct AnyLine<'a> {
    v: Option<u64>,
    #[serde(borrow)]
    kind: Option<Cow<'a, str>>,
    #[serde(borrow)]
    time: Option<Cow<'a, str>>,
    group_id: Option<String>,
    member_id: Option<String>,
    topic: Option<String>,
    partition: Option<i32>,
    offset: Option<i64>,
    #[serde(borrow)]
    reason: Option<Cow<'a, str>>,
    error_code: Option<String>,
    error_message: Option<String>,
    attempts: Option<u32>,
    elapsed_ms: Option<u64>,
    #[serde(borrow)]
    resolution: Option<Cow<'a, str>>,
    committed_offset: Option<i64>,
    note: Option<String>,
    by: Option<String>,
}

/// A well-formed version-1 line in one typed deserialization; `None` for
/// anything else (the slow path then says what is wrong).
fn parse_fast(line: &str) -> Option<LogEntry> {
    let w: AnyLine<'_> = serde_json::from_str(line).ok()?;
    if w.v? != FORMAT_VERSION {
        return None;
    }
    let time = parse_time(w.time.as_deref()?).ok()?;
    match w.kind.as_deref()? {
        KIND_FAILURE => Some(LogEntry::Failure(FailureRecord {
            time,
            group_id: w.group_id?,
            member_id: w.member_id,
            topic: w.topic?,
            partition: w.partition?,
            offset: w.offset?,
            reason: w.reason?.parse().ok()?,
            error_code: w.error_code,
            error_message: w.error_message?,
            attempts: w.attempts?,
            elapsed_ms: w.elapsed_ms?,
        })),
        KIND_RESOLVED => {
            let how = match (w.resolution.as_deref()?, w.committed_offset) {
                ("recommitted", _) => ResolutionKind::Recommitted,
                ("manual", _) => ResolutionKind::Manual,
                ("superseded", Some(committed_offset)) => {
                    ResolutionKind::Superseded { committed_offset }
                }
                _ => return None,
            };
            Some(LogEntry::Resolved(Resolution {
                time,
                group_id: w.group_id?,
                topic: w.topic?,
                partition: w.partition?,
                offset: w.offset?,
                how,
                note: w.note,
                by: w.by,
            }))
        }
        _ => None,
    }
}

/// Parses a line through a JSON value, naming the first thing wrong.
fn parse_slow(line: &str) -> Result<LogEntry, ReadIssueKind> {
    {
        let value: Value =
            serde_json::from_str(line).map_err(|e| ReadIssueKind::Garbage(e.to_string()))?;
        let Value::Object(map) = &value else {
            return Err(ReadIssueKind::Garbage("not a JSON object".into()));
        };
        match map.get("v").and_then(Value::as_u64) {
            Some(FORMAT_VERSION) => {}
            Some(v) if v > FORMAT_VERSION => return Err(ReadIssueKind::UnsupportedVersion(v)),
            _ => {
                return Err(ReadIssueKind::Invalid(
                    "missing or invalid format version \"v\"".into(),
                ));
            }
        }
        let invalid = |e: serde_json::Error| ReadIssueKind::Invalid(e.to_string());
        match map.get("kind").and_then(Value::as_str) {
            Some(KIND_FAILURE) => {
                let w: WireFailure = serde_json::from_value(value).map_err(invalid)?;
                Ok(LogEntry::Failure(FailureRecord {
                    time: parse_time(&w.time)?,
                    reason: w
                        .reason
                        .parse()
                        .map_err(|e| ReadIssueKind::Invalid(format!("{e}")))?,
                    group_id: w.group_id,
                    member_id: w.member_id,
                    topic: w.topic,
                    partition: w.partition,
                    offset: w.offset,
                    error_code: w.error_code,
                    error_message: w.error_message,
                    attempts: w.attempts,
                    elapsed_ms: w.elapsed_ms,
                }))
            }
            Some(KIND_RESOLVED) => {
                let w: WireResolved = serde_json::from_value(value).map_err(invalid)?;
                let how = match (w.resolution.as_str(), w.committed_offset) {
                    ("recommitted", _) => ResolutionKind::Recommitted,
                    ("manual", _) => ResolutionKind::Manual,
                    ("superseded", Some(committed_offset)) => {
                        ResolutionKind::Superseded { committed_offset }
                    }
                    ("superseded", None) => {
                        return Err(ReadIssueKind::Invalid(
                            "superseded resolution without committed_offset".into(),
                        ));
                    }
                    (other, _) => {
                        return Err(ReadIssueKind::Invalid(format!(
                            "unknown resolution {other:?}"
                        )));
                    }
                };
                Ok(LogEntry::Resolved(Resolution {
                    time: parse_time(&w.time)?,
                    group_id: w.group_id,
                    topic: w.topic,
                    partition: w.partition,
                    offset: w.offset,
                    how,
                    note: w.note,
                    by: w.by,
                }))
            }
            Some(other) => Err(ReadIssueKind::Invalid(format!("unknown kind {other:?}"))),
            None => Err(ReadIssueKind::Invalid("missing \"kind\"".into())),
        }
    }
}

impl From<FailureRecord> for LogEntry {
    fn from(f: FailureRecord) -> Self {
        LogEntry::Failure(f)
    }
}

impl From<Resolution> for LogEntry {
    fn from(r: Resolution) -> Self {
        LogEntry::Resolved(r)
    }
}

fn parse_time(s: &str) -> Result<SystemTime, ReadIssueKind> {
    let ts: jiff::Timestamp = s
        .parse()
        .map_err(|e| ReadIssueKind::Invalid(format!("time {s:?}: {e}")))?;
    Ok(SystemTime::from(ts))
}

/// Formats `t` as RFC 3339 in UTC with millisecond precision (truncated),
/// e.g. `2026-11-23T14:30:36.123Z`. Times outside the years -9999 to 9999
/// are clamped to them.
pub(crate) fn format_time(t: SystemTime) -> String {
    let ts = jiff::Timestamp::try_from(t).unwrap_or_else(|_| {
        if t < SystemTime::UNIX_EPOCH {
            jiff::Timestamp::MIN
        } else {
            jiff::Timestamp::MAX
        }
    });
    // Truncated to the millisecond, always three digits.
    let ms = jiff::Timestamp::from_millisecond(ts.as_millisecond()).unwrap_or(ts);
    format!("{ms:.3}")
}

const KIND_FAILURE: &str = "failure";
const KIND_RESOLVED: &str = "resolved";

#[derive(Serialize, Deserialize)]
struct WireFailure {
    v: u64,
    kind: String,
    time: String,
    group_id: String,
    member_id: Option<String>,
    topic: String,
    partition: i32,
    offset: i64,
    reason: String,
    error_code: Option<String>,
    error_message: String,
    attempts: u32,
    elapsed_ms: u64,
}

#[derive(Serialize, Deserialize)]
struct WireResolved {
    v: u64,
    kind: String,
    time: String,
    group_id: String,
    topic: String,
    partition: i32,
    offset: i64,
    resolution: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    committed_offset: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    note: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    by: Option<String>,
}

/// What is wrong with a line the reader skipped.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum ReadIssueKind {
    /// The last line of a file is cut short: no newline and not a complete
    /// record (a write interrupted by a crash). Skipped.
    TornLine,
    /// The last line of a file is a complete record but lacks its newline
    /// (a crash right before it was written). The record **is** returned; the
    /// issue says the file was not closed cleanly.
    UnterminatedLine,
    /// Not JSON, not UTF-8, or not a JSON object. Skipped.
    Garbage(String),
    /// Written by a newer format version than this reader knows. Skipped.
    UnsupportedVersion(u64),
    /// JSON of the right version with missing or invalid fields. Skipped.
    Invalid(String),
    /// A file of the log could not be read (line 0 when it could not be
    /// opened, else the line where reading failed). Its (remaining) records
    /// are missing.
    Io(String),
    /// A rotated file is missing between others (`path.3` and `path.1`
    /// exist, `path.2` does not; line 0): its records are not in the log
    /// that was read.
    MissingFile,
    /// A file named like a rotated file but numbered above
    /// [`MAX_ROTATED`](super::MAX_ROTATED) (a dated backup such as
    /// `path.20261129`; line 0): not part of the log, not read.
    NotRotated,
    /// A line longer than [`MAX_LINE_BYTES`](super::MAX_LINE_BYTES) (no
    /// record is that long). Skipped.
    LineTooLong,
}

impl fmt::Display for ReadIssueKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ReadIssueKind::TornLine => f.write_str("torn last line (incomplete write)"),
            ReadIssueKind::UnterminatedLine => {
                f.write_str("last line has no newline (read anyway)")
            }
            ReadIssueKind::Garbage(e) => write!(f, "not a log record: {e}"),
            ReadIssueKind::UnsupportedVersion(v) => {
                write!(f, "format version {v} is newer than this reader (1)")
            }
            ReadIssueKind::Invalid(e) => write!(f, "invalid record: {e}"),
            ReadIssueKind::Io(e) => write!(f, "could not read the file: {e}"),
            ReadIssueKind::MissingFile => {
                f.write_str("rotated file missing between others: its records were not read")
            }
            ReadIssueKind::NotRotated => f.write_str(
                "named like a rotated file but not part of the log (number too high): not read",
            ),
            ReadIssueKind::LineTooLong => write!(
                f,
                "line longer than {} bytes: not a log record",
                super::MAX_LINE_BYTES
            ),
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::{Duration, UNIX_EPOCH};

    use rdkafka::error::RDKafkaErrorCode;

    use super::*;

    fn t0() -> SystemTime {
        UNIX_EPOCH + Duration::from_millis(1_795_444_236_123)
    }

    fn failed() -> FailedOffset {
        FailedOffset {
            time: t0(),
            group_id: "billing".into(),
            member_id: Some("m-1".into()),
            topic: "orders".into(),
            partition: 3,
            offset: 42,
            reason: FailureReason::RetriesExhausted,
            error_code: Some(RDKafkaErrorCode::RequestTimedOut),
            error_message: "Broker: Request timed out \"quoted\"\n".into(),
            attempts: 5,
            elapsed: Duration::from_micros(1_234_567),
        }
    }

    #[test]
    fn failure_line_format() {
        let line = LogEntry::Failure(failed().into()).to_json_line();
        assert_eq!(
            line,
            concat!(
                r#"{"v":1,"kind":"failure","time":"2026-11-23T14:30:36.123Z","group_id":"billing","#,
                r#""member_id":"m-1","topic":"orders","partition":3,"offset":42,"reason":"retries_exhausted","#,
                r#""error_code":"RequestTimedOut","error_message":"Broker: Request timed out \"quoted\"\n","#,
                r#""attempts":5,"elapsed_ms":1234}"#,
                "\n"
            )
        );
        assert_eq!(line.matches('\n').count(), 1, "one line per record");
    }

    #[test]
    fn round_trips() {
        let f = LogEntry::Failure(failed().into());
        let r1 = LogEntry::Resolved(Resolution {
            time: t0(),
            ..Resolution::recommitted("billing", "orders", 3, 42)
        });
        let r2 = LogEntry::Resolved(Resolution {
            time: t0(),
            ..Resolution::superseded("billing", "orders", 3, 42, 77)
        });
        let r3 = LogEntry::Resolved(Resolution {
            time: t0(),
            ..Resolution::manual(
                "billing",
                "orders",
                3,
                42,
                "skipped: \"bad\" record\n\u{1b}[2J",
            )
            .with_by("ops")
        });
        let r4 = LogEntry::Resolved(Resolution {
            time: t0(),
            note: Some("why".into()),
            ..Resolution::recommitted("billing", "orders", 3, 42)
        });
        for e in [f, r1, r2, r3, r4] {
            let line = e.to_json_line();
            assert_eq!(LogEntry::parse_line(line.trim_end_matches('\n')), Ok(e));
        }
    }

    #[test]
    fn member_and_error_code_optional() {
        let mut rec: FailureRecord = failed().into();
        rec.member_id = None;
        rec.error_code = None;
        let line = LogEntry::Failure(rec.clone()).to_json_line();
        assert!(line.contains(r#""member_id":null"#));
        assert_eq!(
            LogEntry::parse_line(line.trim_end()),
            Ok(LogEntry::Failure(rec.clone()))
        );
        // Missing altogether is fine too; unknown fields are ignored.
        let line = line
            .replace(r#""member_id":null,"#, "")
            .replace(r#""error_code":null,"#, r#""future":[1,2],"#);
        assert_eq!(
            LogEntry::parse_line(line.trim_end()),
            Ok(LogEntry::Failure(rec))
        );
    }

    #[test]
    fn rejects_bad_lines() {
        let good = LogEntry::Failure(failed().into()).to_json_line();
        let good = good.trim_end();
        type Check = fn(&ReadIssueKind) -> bool;
        let cases: Vec<(String, Check)> = vec![
            ("not json".into(), |k| matches!(k, ReadIssueKind::Garbage(_))),
            ("[1,2]".into(), |k| matches!(k, ReadIssueKind::Garbage(_))),
            (good[..good.len() - 1].into(), |k| {
                matches!(k, ReadIssueKind::Garbage(_))
            }),
            (good.replace(r#""v":1"#, r#""v":2"#), |k| {
                *k == ReadIssueKind::UnsupportedVersion(2)
            }),
            (good.replace(r#""v":1"#, r#""v":0"#), |k| {
                matches!(k, ReadIssueKind::Invalid(_))
            }),
            (good.replace(r#""v":1,"#, ""), |k| {
                matches!(k, ReadIssueKind::Invalid(_))
            }),
            (good.replace("failure", "mystery"), |k| {
                matches!(k, ReadIssueKind::Invalid(_))
            }),
            (good.replace("retries_exhausted", "bored"), |k| {
                matches!(k, ReadIssueKind::Invalid(_))
            }),
            (good.replace("2026-11-23T", "2026-13-23T"), |k| {
                matches!(k, ReadIssueKind::Invalid(_))
            }),
            (good.replace(r#""partition":3"#, r#""partition":"3""#), |k| {
                matches!(k, ReadIssueKind::Invalid(_))
            }),
            (
                r#"{"v":1,"kind":"resolved","time":"2026-11-23T14:30:36.123Z","group_id":"g","topic":"t","partition":0,"offset":1,"resolution":"superseded"}"#.into(),
                |k| matches!(k, ReadIssueKind::Invalid(_)),
            ),
        ];
        for (line, ok) in cases {
            let e = LogEntry::parse_line(&line).expect_err(&line);
            assert!(ok(&e), "{line}: {e:?}");
        }
    }

    #[test]
    fn manual_line_format() {
        let r = Resolution {
            time: t0(),
            ..Resolution::manual("billing", "orders", 3, 42, "replayed by hand").with_by("ops")
        };
        assert_eq!(
            LogEntry::Resolved(r).to_json_line(),
            concat!(
                r#"{"v":1,"kind":"resolved","time":"2026-11-23T14:30:36.123Z","group_id":"billing","#,
                r#""topic":"orders","partition":3,"offset":42,"resolution":"manual","#,
                r#""note":"replayed by hand","by":"ops"}"#,
                "\n"
            )
        );
        // Without note and by (the fields are optional for every resolution).
        let line = r#"{"v":1,"kind":"resolved","time":"2026-11-23T14:30:36.123Z","group_id":"g","topic":"t","partition":0,"offset":7,"resolution":"manual"}"#;
        let Ok(LogEntry::Resolved(r)) = LogEntry::parse_line(line) else {
            panic!("{line}")
        };
        assert_eq!(
            (r.how, r.covers(), r.note, r.by),
            (ResolutionKind::Manual, 7, None, None)
        );
    }

    #[test]
    fn a_manual_resolution_resolves_exactly_its_offset() {
        let fail = |offset| {
            let mut f: FailureRecord = failed().into();
            f.offset = offset;
            LogEntry::Failure(f)
        };
        let open = |entries: &[LogEntry]| -> Vec<i64> {
            crate::failure_log::unresolved(entries)
                .iter()
                .map(|f| f.offset)
                .collect()
        };
        let manual = |o| LogEntry::Resolved(Resolution::manual("billing", "orders", 3, o, "n"));
        let mut entries = vec![fail(3), fail(7), fail(9), manual(7)];
        assert_eq!(open(&entries), [3, 9]);
        // Only failures before it: 7 logged again is open again.
        entries.push(fail(7));
        assert_eq!(open(&entries), [3, 9, 7]);
        entries.push(LogEntry::Resolved(Resolution::recommitted(
            "billing", "orders", 3, 9,
        )));
        assert!(open(&entries).is_empty());
    }

    #[test]
    fn covers() {
        let manual = Resolution::manual("g", "t", 0, 5, "n");
        assert_eq!(manual.covers(), 5);
        assert!(manual.resolves(5) && !manual.resolves(4) && !manual.resolves(6));
        let re = Resolution::recommitted("g", "t", 0, 5);
        assert!(re.resolves(5) && re.resolves(4) && !re.resolves(6));
        assert_eq!(Resolution::recommitted("g", "t", 0, 5).covers(), 5);
        assert_eq!(Resolution::superseded("g", "t", 0, 5, 9).covers(), 9);
        assert_eq!(Resolution::superseded("g", "t", 0, 5, 3).covers(), 5);
    }
}
