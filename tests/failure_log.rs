//! The durable failed-offset log: writer and reader (the `offset-guard`
//! command is tested in tests/cli.rs).

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use offset_guard::failure_log::{
    FailedOffsetLog, FailureRecord, FsyncPolicy, LogEntry, LogError, LogReader, LogStream,
    LogSummary, MAX_LINE_BYTES, ReadIssueKind, Resolution, ResolutionIndex, ResolutionKind,
    UnresolvedOffsets, resolution_status, summarize, unresolved,
};
use offset_guard::{FailedOffset, FailureReason, FailureSink};
use proptest::prelude::*;

#[path = "common/logs.rs"]
mod logs;
/// A fresh directory under the system temp dir, removed on drop.
#[path = "common/tempdir.rs"]
mod tempdir;
use logs::{T0_MS, at_ms, failure};
use tempdir::TempDir;

fn failure_entry(f: FailedOffset) -> LogEntry {
    LogEntry::Failure(f.into())
}

fn resolution_at(mut r: Resolution, ms: u64) -> Resolution {
    r.time = at_ms(ms);
    r
}

fn offsets(entries: &[LogEntry]) -> Vec<i64> {
    entries.iter().map(LogEntry::offset).collect()
}

/// A log file with `n` failures at offsets 0..n, flushed and closed.
fn write_log(path: &Path, n: i64) -> Vec<LogEntry> {
    let log = FailedOffsetLog::open(path).unwrap();
    let mut expected = Vec::new();
    for offset in 0..n {
        let f = failure("orders", 0, offset);
        expected.push(failure_entry(f.clone()));
        log.record(f);
    }
    log.close().unwrap();
    expected
}

#[test]
fn round_trip_failures_and_resolutions() {
    let dir = TempDir::new("round-trip");
    let path = dir.join("failed.jsonl");
    let log = FailedOffsetLog::open(&path).unwrap();
    assert_eq!(log.path(), path);
    let mut expected = Vec::new();
    for offset in 0..10 {
        let f = failure("orders", (offset % 3) as i32, offset);
        expected.push(failure_entry(f.clone()));
        log.record(f);
    }
    let r1 = resolution_at(
        Resolution::recommitted("billing", "orders", 0, 3),
        T0_MS + 100,
    );
    let r2 = resolution_at(
        Resolution::superseded("billing", "orders", 1, 4, 11),
        T0_MS + 200,
    );
    for r in [r1, r2] {
        expected.push(LogEntry::Resolved(r.clone()));
        log.resolve(r);
    }
    log.flush().unwrap();
    let status = log.status();
    assert_eq!(status.records_written, 10);
    assert_eq!(status.resolutions_written, 2);
    assert_eq!(status.write_errors, 0);
    assert_eq!(status.unwritten, 0);
    assert_eq!(status.last_error, None);

    let reader = LogReader::open(&path).unwrap();
    assert_eq!(reader.issues(), &[]);
    assert_eq!(reader.entries(), expected.as_slice());
    assert_eq!(reader.files(), std::slice::from_ref(&path));
    let LogEntry::Failure(first) = &reader.entries()[0] else {
        panic!("a failure")
    };
    assert_eq!(first.error_code.as_deref(), None);
    assert_eq!(
        reader.failures().nth(1).unwrap().error_code.as_deref(),
        Some("RequestTimedOut")
    );

    // Reopening appends.
    log.close().unwrap();
    let log = FailedOffsetLog::open(&path).unwrap();
    log.record(failure("orders", 0, 99));
    log.close().unwrap();
    let reader = LogReader::open(&path).unwrap();
    assert_eq!(reader.entries().len(), 13);
    assert_eq!(reader.entries()[12].offset(), 99);
}

#[test]
fn every_line_is_one_json_object_with_version() {
    let dir = TempDir::new("format");
    let path = dir.join("failed.jsonl");
    write_log(&path, 3);
    let text = std::fs::read_to_string(&path).unwrap();
    assert!(text.ends_with('\n'));
    for line in text.lines() {
        let v: serde_json::Value = serde_json::from_str(line).unwrap();
        assert_eq!(v["v"], 1);
        assert_eq!(v["kind"], "failure");
        assert_eq!(v["topic"], "orders");
        assert!(v["time"].as_str().unwrap().ends_with('Z'));
    }
    assert!(text.lines().next().unwrap().starts_with(
        r#"{"v":1,"kind":"failure","time":"2026-11-23T14:30:36.123Z","group_id":"billing","member_id":"member-0","#
    ));
}

/// Expected reading of `bytes[..cut]`: the complete records before the cut,
/// and the torn line (if any) reported with its line number.
fn check_cut(bytes: &[u8], cut: usize, expected: &[LogEntry], reader: &LogReader) {
    let head = &bytes[..cut];
    let complete = head.iter().filter(|&&b| b == b'\n').count();
    let ends_on_boundary = cut == 0 || head[cut - 1] == b'\n';
    let just_before_newline = !ends_on_boundary && bytes.get(cut) == Some(&b'\n');
    let mut want: Vec<LogEntry> = expected[..complete].to_vec();
    if just_before_newline {
        // The record is complete, only its newline is missing.
        want.push(expected[complete].clone());
    }
    assert_eq!(reader.entries(), want.as_slice(), "cut at {cut}");
    if ends_on_boundary {
        assert_eq!(reader.issues(), &[], "cut at {cut}");
    } else {
        assert_eq!(reader.issues().len(), 1, "cut at {cut}");
        let issue = &reader.issues()[0];
        assert_eq!(issue.line, complete + 1, "cut at {cut}");
        let kind = if just_before_newline {
            ReadIssueKind::UnterminatedLine
        } else {
            ReadIssueKind::TornLine
        };
        assert_eq!(issue.kind, kind, "cut at {cut}");
        let excerpt_start = String::from_utf8_lossy(
            &head[head
                .len()
                .min(head.iter().rposition(|&b| b == b'\n').map_or(0, |i| i + 1))..],
        );
        let prefix: String = excerpt_start.chars().take(20).collect();
        assert!(issue.excerpt.starts_with(&prefix), "cut at {cut}");
    }
}

#[test]
fn crash_mid_write_every_cut_position() {
    let dir = TempDir::new("torn");
    let path = dir.join("failed.jsonl");
    let expected = write_log(&path, 12);
    let bytes = std::fs::read(&path).unwrap();

    // Every cut position, in memory.
    for cut in 0..=bytes.len() {
        let reader = LogReader::from_bytes(&path, &bytes[..cut]);
        check_cut(&bytes, cut, &expected, &reader);
    }

    // Random cut positions on a truncated copy of the file, read from disk.
    let copy = dir.join("copy.jsonl");
    let mut rng = 0x2545_f491_4f6c_dd1d_u64;
    for _ in 0..200 {
        rng ^= rng << 13;
        rng ^= rng >> 7;
        rng ^= rng << 17;
        let cut = (rng % (bytes.len() as u64 + 1)) as usize;
        std::fs::copy(&path, &copy).unwrap();
        let f = std::fs::OpenOptions::new().write(true).open(&copy).unwrap();
        f.set_len(cut as u64).unwrap();
        drop(f);
        let reader = LogReader::open(&copy).unwrap();
        check_cut(&bytes, cut, &expected, &reader);
        for issue in reader.issues() {
            assert_eq!(issue.file, copy);
        }
    }
}

#[test]
fn writer_starts_a_fresh_line_after_a_torn_tail() {
    let dir = TempDir::new("resume");
    let path = dir.join("failed.jsonl");
    let mut expected = write_log(&path, 3);
    let len = std::fs::metadata(&path).unwrap().len();
    let f = std::fs::OpenOptions::new().write(true).open(&path).unwrap();
    f.set_len(len - 30).unwrap(); // tear the third record
    drop(f);
    expected.truncate(2);

    let log = FailedOffsetLog::open(&path).unwrap();
    let f = failure("orders", 0, 100);
    expected.push(failure_entry(f.clone()));
    log.record(f);
    log.close().unwrap();

    let reader = LogReader::open(&path).unwrap();
    assert_eq!(reader.entries(), expected.as_slice());
    assert_eq!(reader.issues().len(), 1);
    assert_eq!(reader.issues()[0].line, 3);
    assert!(matches!(reader.issues()[0].kind, ReadIssueKind::Garbage(_)));
}

#[test]
fn corrupt_lines_are_skipped_and_reported() {
    let dir = TempDir::new("corrupt");
    let path = dir.join("failed.jsonl");
    let good = write_log(&path, 2);
    let lines: Vec<String> = good.iter().map(LogEntry::to_json_line).collect();
    let future = lines[0].replace(r#""v":1"#, r#""v":7"#);
    let mut bytes = Vec::new();
    bytes.extend_from_slice(lines[0].as_bytes()); // 1
    bytes.extend_from_slice(b"this is not json\n"); // 2
    bytes.extend_from_slice(b"\xff\xfe\x00garbage\n"); // 3
    bytes.extend_from_slice(future.as_bytes()); // 4
    bytes.extend_from_slice(b"\n"); // 5: blank, ignored
    bytes.extend_from_slice(b"{\"v\":1,\"kind\":\"failure\"}\n"); // 6
    bytes.extend_from_slice(b"42\n"); // 7
    bytes.extend_from_slice(lines[1].as_bytes()); // 8
    std::fs::write(&path, &bytes).unwrap();

    let reader = LogReader::open(&path).unwrap();
    assert_eq!(reader.entries(), good.as_slice());
    let found: Vec<(usize, &ReadIssueKind)> =
        reader.issues().iter().map(|i| (i.line, &i.kind)).collect();
    assert_eq!(found.len(), 5, "{found:?}");
    assert!(matches!(found[0], (2, ReadIssueKind::Garbage(_))));
    assert!(matches!(found[1], (3, ReadIssueKind::Garbage(_))));
    assert_eq!(found[2], (4, &ReadIssueKind::UnsupportedVersion(7)));
    assert!(matches!(found[3], (6, ReadIssueKind::Invalid(_))));
    assert!(matches!(found[4], (7, ReadIssueKind::Garbage(_))));
    assert_eq!(reader.issues()[0].excerpt, "this is not json");
    assert_eq!(reader.issues()[0].file, path);
    let shown = reader.issues()[2].to_string();
    assert!(shown.contains("failed.jsonl:4"), "{shown}");
    assert!(shown.contains("version 7"), "{shown}");
}

#[test]
fn empty_file_has_no_records() {
    let dir = TempDir::new("empty");
    let path = dir.join("failed.jsonl");
    std::fs::write(&path, b"").unwrap();
    let reader = LogReader::open(&path).unwrap();
    assert!(reader.entries().is_empty());
    assert!(reader.issues().is_empty());
    assert!(reader.unresolved().is_empty());
    assert!(reader.summary().is_empty());

    // A writer opened and closed without records leaves an empty file.
    let path = dir.join("fresh.jsonl");
    FailedOffsetLog::open(&path).unwrap().close().unwrap();
    assert_eq!(std::fs::metadata(&path).unwrap().len(), 0);
    assert!(LogReader::open(&path).unwrap().entries().is_empty());
}

#[test]
fn missing_file_is_a_typed_error() {
    let dir = TempDir::new("missing");
    let path = dir.join("nope.jsonl");
    let err = LogReader::open(&path).unwrap_err();
    assert!(err.is_not_found(), "{err:?}");
    assert!(matches!(err, LogError::NotFound { .. }));
    assert_eq!(err.path(), Some(path.as_path()));
    let shown = err.to_string();
    assert!(shown.contains("nope.jsonl"), "{shown}");
    assert!(shown.contains("no such file"), "{shown}");
}

#[test]
fn opening_in_a_missing_directory_is_a_typed_error() {
    let dir = TempDir::new("nodir");
    let path = dir.join("no/such/dir/failed.jsonl");
    let err = FailedOffsetLog::open(&path).unwrap_err();
    assert!(err.is_not_found(), "{err:?}");
    assert!(
        err.to_string().contains("no/such/dir/failed.jsonl"),
        "{err}"
    );
}

/// Whether this process can write into a directory whose mode forbids it (root can).
#[cfg(unix)]
fn ignores_permissions(dir: &Path) -> bool {
    let probe = dir.join("probe");
    let ok = std::fs::write(&probe, b"x").is_ok();
    let _ = std::fs::remove_file(&probe);
    ok
}

#[test]
fn opening_where_writing_is_refused_is_a_typed_error() {
    let dir = TempDir::new("denied");
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let ro = dir.join("read-only");
        std::fs::create_dir(&ro).unwrap();
        std::fs::set_permissions(&ro, std::fs::Permissions::from_mode(0o555)).unwrap();
        let can_write_anyway = ignores_permissions(&ro);
        if !can_write_anyway {
            let path = ro.join("failed.jsonl");
            let err = FailedOffsetLog::open(&path).unwrap_err();
            assert!(err.is_permission_denied(), "{err:?}");
            let shown = err.to_string();
            assert!(shown.contains("read-only/failed.jsonl"), "{shown}");
            assert!(shown.contains("permission denied"), "{shown}");
        }
        std::fs::set_permissions(&ro, std::fs::Permissions::from_mode(0o755)).unwrap();
    }
    // A parent that is a regular file fails for root too.
    let file = dir.join("plain-file");
    std::fs::write(&file, b"").unwrap();
    let path = file.join("failed.jsonl");
    let err = FailedOffsetLog::open(&path).unwrap_err();
    assert!(matches!(err, LogError::NotADirectory { .. }), "{err:?}");
    assert!(err.to_string().contains("plain-file/failed.jsonl"), "{err}");
    // A directory where the file should be.
    let err = FailedOffsetLog::open(dir.join("")).unwrap_err();
    assert!(err.path().is_some(), "{err:?}");
}

#[test]
fn invalid_settings_are_rejected() {
    let dir = TempDir::new("config");
    let path = dir.join("failed.jsonl");
    for builder in [
        FailedOffsetLog::builder(&path).max_file_bytes(0),
        FailedOffsetLog::builder(&path).max_files(0),
        FailedOffsetLog::builder(&path).max_unwritten(0),
        FailedOffsetLog::builder(&path).fsync(FsyncPolicy::Batched {
            max_records: 0,
            max_delay: Duration::from_millis(10),
        }),
    ] {
        let err = builder.open().unwrap_err();
        assert!(matches!(err, LogError::InvalidConfig { .. }), "{err:?}");
    }
    assert!(!path.exists());
}

#[test]
fn rotation_keeps_a_bounded_number_of_files_read_in_order() {
    let dir = TempDir::new("rotate");
    let path = dir.join("failed.jsonl");
    let line_len = failure_entry(failure("orders", 0, 10)).to_json_line().len() as u64;
    let max_file_bytes = line_len * 4 + 10; // four records per file
    let log = FailedOffsetLog::builder(&path)
        .max_file_bytes(max_file_bytes)
        .max_files(3)
        .open()
        .unwrap();
    for offset in 10..60 {
        log.record(failure("orders", 0, offset));
    }
    log.flush().unwrap();
    let status = log.status();
    assert_eq!(status.records_written, 50);
    assert!(status.rotations >= 10, "{status:?}");
    log.close().unwrap();

    let mut names: Vec<String> = std::fs::read_dir(&dir.0)
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    names.sort();
    // The writer lock file stays; it is not a rotated file.
    assert_eq!(
        names,
        [
            "failed.jsonl",
            "failed.jsonl.1",
            "failed.jsonl.2",
            "failed.jsonl.lock"
        ]
    );
    for name in &names[..3] {
        assert!(std::fs::metadata(dir.join(name)).unwrap().len() <= max_file_bytes);
    }

    let reader = LogReader::open(&path).unwrap();
    assert!(reader.issues().is_empty());
    assert_eq!(
        reader.files(),
        &[
            dir.join("failed.jsonl.2"),
            dir.join("failed.jsonl.1"),
            dir.join("failed.jsonl")
        ]
    );
    // The newest records, oldest first, none missing in between.
    let got = offsets(reader.entries());
    assert_eq!(*got.last().unwrap(), 59);
    assert!(got.len() >= 7, "{got:?}");
    assert!(got.windows(2).all(|w| w[1] == w[0] + 1), "{got:?}");

    // With the current file gone (a crash mid-rotation), the rotated files are still read.
    std::fs::remove_file(&path).unwrap();
    let reader = LogReader::open(&path).unwrap();
    assert!(!reader.entries().is_empty());
}

/// `max_files` at its maximum: rotation does work bounded by the files on
/// disk, never by the setting (it used to walk every number below it).
#[test]
fn rotation_with_max_files_at_its_maximum_keeps_everything() {
    let dir = TempDir::new("rotate-max");
    let path = dir.join("failed.jsonl");
    let log = FailedOffsetLog::builder(&path)
        .max_file_bytes(1) // every record gets a file of its own
        .max_files(usize::MAX)
        .open()
        .unwrap();
    for offset in 0..6 {
        log.record(failure("orders", 0, offset));
    }
    log.flush_timeout(Duration::from_secs(10)).unwrap();
    log.close().unwrap();
    assert_eq!(std::fs::read_dir(&dir.0).unwrap().count(), 6 + 1); // + the lock file
    assert_eq!(
        offsets(LogReader::open(&path).unwrap().entries()),
        [0, 1, 2, 3, 4, 5]
    );
}

#[test]
fn rotation_with_one_file_starts_afresh() {
    let dir = TempDir::new("rotate-one");
    let path = dir.join("failed.jsonl");
    let log = FailedOffsetLog::builder(&path)
        .max_file_bytes(1) // every record gets a file of its own
        .max_files(1)
        .open()
        .unwrap();
    for offset in 0..5 {
        log.record(failure("orders", 0, offset));
    }
    log.close().unwrap();
    assert_eq!(std::fs::read_dir(&dir.0).unwrap().count(), 1 + 1); // + the lock file
    assert_eq!(offsets(LogReader::open(&path).unwrap().entries()), [4]);
}

#[test]
fn concurrent_appends_from_several_threads() {
    let dir = TempDir::new("concurrent");
    let path = dir.join("failed.jsonl");
    let log = FailedOffsetLog::open(&path).unwrap();
    const THREADS: i32 = 8;
    const PER_THREAD: i64 = 150;
    std::thread::scope(|s| {
        for t in 0..THREADS {
            let log = log.clone();
            s.spawn(move || {
                for offset in 0..PER_THREAD {
                    let mut f = failure("orders", t, offset);
                    f.error_message = "x".repeat(200 + offset as usize); // long lines
                    log.record(f);
                }
            });
        }
    });
    log.flush().unwrap();
    assert_eq!(
        log.status().records_written,
        (THREADS as u64) * PER_THREAD as u64
    );

    let reader = LogReader::open(&path).unwrap();
    assert_eq!(reader.issues(), &[]);
    for t in 0..THREADS {
        let got: Vec<i64> = reader
            .failures()
            .filter(|f| f.partition == t)
            .map(|f| f.offset)
            .collect();
        assert_eq!(got, (0..PER_THREAD).collect::<Vec<_>>(), "partition {t}");
    }
}

#[test]
fn a_vanished_directory_is_counted_and_records_are_kept() {
    let dir = TempDir::new("vanish");
    let sub = dir.join("logs");
    std::fs::create_dir(&sub).unwrap();
    let path = sub.join("failed.jsonl");
    let log = FailedOffsetLog::open(&path).unwrap();
    log.record(failure("orders", 0, 1));
    log.flush().unwrap();

    std::fs::remove_dir_all(&sub).unwrap();
    log.record(failure("orders", 0, 2));
    log.record(failure("orders", 0, 3));
    let err = log.flush().unwrap_err();
    assert!(
        matches!(err, LogError::Write { unwritten: 2, .. }),
        "{err:?}"
    );
    assert!(err.to_string().contains("failed.jsonl"), "{err}");
    let status = log.status();
    assert!(status.write_errors >= 1, "{status:?}");
    assert_eq!(status.unwritten, 2);
    assert_eq!(status.records_written, 1);
    assert!(status.last_error.is_some());

    // The directory comes back: the kept records are written on the next attempt.
    std::fs::create_dir(&sub).unwrap();
    log.record(failure("orders", 0, 4));
    log.flush().unwrap();
    let status = log.status();
    assert_eq!(status.unwritten, 0);
    assert_eq!(status.records_written, 4);
    assert_eq!(status.dropped, 0);
    assert_eq!(status.last_error, None);
    assert_eq!(
        offsets(LogReader::open(&path).unwrap().entries()),
        [2, 3, 4]
    );
}

/// Captures what every thread logs (the writer thread included) once a
/// global subscriber is installed; tests look for their own path in it.
#[derive(Clone, Default)]
struct Captured(std::sync::Arc<std::sync::Mutex<Vec<u8>>>);

impl std::io::Write for Captured {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

fn captured_logs() -> &'static Captured {
    static CAPTURED: std::sync::OnceLock<Captured> = std::sync::OnceLock::new();
    CAPTURED.get_or_init(|| {
        let captured = Captured::default();
        let writer = captured.clone();
        tracing_subscriber::fmt()
            .with_max_level(tracing::Level::INFO)
            .with_ansi(false)
            .with_writer(move || writer.clone())
            .try_init()
            .expect("the only subscriber in this test binary");
        captured
    })
}

#[test]
fn write_failures_are_logged_with_structured_fields() {
    let logs = captured_logs();
    let dir = TempDir::new("warn");
    let sub = dir.join("logs");
    std::fs::create_dir(&sub).unwrap();
    let path = sub.join("failed.jsonl");
    let log = FailedOffsetLog::open(&path).unwrap();
    std::fs::remove_dir_all(&sub).unwrap();
    log.record(failure("orders", 0, 1));
    assert!(log.flush().is_err());
    std::fs::create_dir(&sub).unwrap();
    log.flush().unwrap();

    let text = String::from_utf8(logs.0.lock().unwrap().clone()).unwrap();
    let path_field = format!("path={}", path.display());
    let ours: Vec<&str> = text.lines().filter(|l| l.contains(&path_field)).collect();
    let warn = ours
        .iter()
        .find(|l| l.contains("WARN"))
        .unwrap_or_else(|| panic!("no warning in {text}"));
    assert!(warn.contains("failed-offset log write failed"), "{warn}");
    assert!(warn.contains("op=\"open\""), "{warn}");
    assert!(warn.contains("error="), "{warn}");
    assert!(warn.contains("unwritten=1"), "{warn}");
    assert!(
        ours.iter()
            .any(|l| l.contains("INFO") && l.contains("writable again")),
        "{text}"
    );
}

#[test]
fn the_unwritten_queue_is_bounded_and_overflow_is_counted() {
    let dir = TempDir::new("overflow");
    let sub = dir.join("logs");
    std::fs::create_dir(&sub).unwrap();
    let path = sub.join("failed.jsonl");
    let log = FailedOffsetLog::builder(&path)
        .max_unwritten(2)
        .open()
        .unwrap();
    std::fs::remove_dir_all(&sub).unwrap();
    for offset in 0..5 {
        log.record(failure("orders", 0, offset));
    }
    assert!(log.flush().is_err());
    let status = log.status();
    assert_eq!((status.unwritten, status.dropped), (2, 3), "{status:?}");

    std::fs::create_dir(&sub).unwrap();
    log.flush().unwrap();
    assert_eq!(offsets(LogReader::open(&path).unwrap().entries()), [3, 4]);
}

/// The bound applies to what waits for a failing disk, not to a burst that a
/// healthy disk takes: 15,000 records recorded at once with a queue bound of
/// 100 are all written.
#[test]
fn a_burst_larger_than_the_queue_bound_is_written_whole_on_a_healthy_disk() {
    let dir = TempDir::new("burst");
    let path = dir.join("failed.jsonl");
    let log = FailedOffsetLog::builder(&path)
        .max_unwritten(100)
        .fsync(FsyncPolicy::Batched {
            max_records: 1000,
            max_delay: Duration::from_millis(50),
        })
        .open()
        .unwrap();
    for offset in 0..15_000 {
        log.record(failure("orders", 0, offset));
    }
    log.flush().unwrap();
    let status = log.status();
    assert_eq!(
        (status.records_written, status.dropped),
        (15_000, 0),
        "{status:?}"
    );
    log.close().unwrap();
    let read = offsets(LogReader::open(&path).unwrap().entries());
    assert_eq!(read.len(), 15_000);
    assert!(read.windows(2).all(|w| w[1] == w[0] + 1));
}

/// Refused records are warned about with the reason: `queue_full` (with the
/// write error) while the disk fails, `closed` after close.
#[test]
fn refused_records_are_warned_with_the_reason() {
    let logs = captured_logs();
    let dir = TempDir::new("refused-warn");
    let sub = dir.join("logs");
    std::fs::create_dir(&sub).unwrap();
    let path = sub.join("failed.jsonl");
    let log = FailedOffsetLog::builder(&path)
        .max_unwritten(1)
        .open()
        .unwrap();
    std::fs::remove_dir_all(&sub).unwrap();
    log.record(failure("orders", 0, 1));
    log.record(failure("orders", 0, 2));
    assert!(log.flush().is_err());
    assert_eq!(log.status().dropped, 1);
    drop(log.close());
    log.record(failure("orders", 0, 3));
    assert_eq!(log.status().dropped, 2);

    let text = String::from_utf8(logs.0.lock().unwrap().clone()).unwrap();
    let path_field = format!("path={}", path.display());
    let warnings: Vec<&str> = text
        .lines()
        .filter(|l| l.contains(&path_field) && l.contains("WARN"))
        .collect();
    let full = warnings
        .iter()
        .find(|l| l.contains("reason=\"queue_full\""))
        .unwrap_or_else(|| panic!("no queue_full warning in {text}"));
    assert!(full.contains("oldest record dropped"), "{full}");
    assert!(full.contains("error=open:"), "{full}");
    assert!(full.contains("\"offset\":1,"), "{full}");
    let closed = warnings
        .iter()
        .find(|l| l.contains("reason=\"closed\""))
        .unwrap_or_else(|| panic!("no closed warning in {text}"));
    assert!(closed.contains("offset=3"), "{closed}");
}

/// One writer per log in a process: a second open is refused with a typed
/// error, also after the first one rotated the file (the lock is on
/// `path.lock`, which rotation does not touch); once the first is closed, or
/// its last handle dropped, a new writer opens.
#[test]
fn a_second_writer_in_this_process_is_refused_until_the_first_closes() {
    let dir = TempDir::new("lock");
    let path = dir.join("failed.jsonl");
    let first = FailedOffsetLog::builder(&path)
        .max_file_bytes(1024)
        .open()
        .unwrap();
    let in_use = |err: LogError| {
        assert!(err.is_in_use(), "{err:?}");
        assert!(
            matches!(&err, LogError::InUse { path: p, lock_path }
                if *p == path && *lock_path == dir.join("failed.jsonl.lock")),
            "{err:?}"
        );
        let text = err.to_string();
        assert!(text.contains("in use by another writer"), "{text}");
        assert!(text.contains("failed.jsonl"), "{text}");
    };
    in_use(FailedOffsetLog::open(&path).unwrap_err());

    for offset in 0..20 {
        first.record(failure("orders", 0, offset));
    }
    first.flush().unwrap();
    assert!(first.status().rotations >= 2, "{:?}", first.status());
    in_use(FailedOffsetLog::builder(&path).open().unwrap_err());

    first.close().unwrap();
    let second = FailedOffsetLog::open(&path).unwrap();
    second.record(failure("orders", 0, 20));
    drop(second); // the last handle: closes and releases the lock
    let third = FailedOffsetLog::open(&path).unwrap();
    third.close().unwrap();
    let read = offsets(LogReader::open(&path).unwrap().entries());
    assert_eq!(read, (0..=20).collect::<Vec<_>>());
}

/// A lock seen taken a moment after its writer closed (a child process
/// forked meanwhile shares the lock file until it calls `exec`; simulated
/// here by a second open of `path.lock` holding the lock) is waited for: the
/// open succeeds once it is released within 250 ms, and a lock held longer
/// is `InUse`.
#[test]
fn a_lock_released_a_moment_later_is_waited_for() {
    let dir = TempDir::new("lockwait");
    let path = dir.join("failed.jsonl");
    FailedOffsetLog::open(&path).unwrap().close().unwrap();
    let lock_path = dir.join("failed.jsonl.lock");
    let hold = || {
        let f = std::fs::File::open(&lock_path).unwrap();
        f.try_lock().unwrap();
        f
    };

    let held = hold();
    let (go, wait) = std::sync::mpsc::channel::<()>();
    let releaser = std::thread::spawn(move || {
        wait.recv().unwrap();
        std::thread::sleep(Duration::from_millis(20));
        drop(held);
    });
    go.send(()).unwrap();
    let log = FailedOffsetLog::open(&path).expect("released within the wait");
    releaser.join().unwrap();
    log.close().unwrap();

    let _held = hold();
    let started = std::time::Instant::now();
    let err = FailedOffsetLog::open(&path).unwrap_err();
    assert!(err.is_in_use(), "{err:?}");
    assert!(
        started.elapsed() >= Duration::from_millis(250),
        "{:?}",
        started.elapsed()
    );
}

/// Runs `f` on a thread of its own and fails the test if it does not return
/// within 10 s (instead of hanging the test binary).
fn within_10s<T: Send + 'static>(f: impl FnOnce() -> T + Send + 'static) -> T {
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let _ = tx.send(f());
    });
    rx.recv_timeout(Duration::from_secs(10))
        .expect("did not return within 10 s")
}

fn mkfifo(path: &Path) {
    let status = Command::new("mkfifo").arg(path).status().unwrap();
    assert!(status.success(), "mkfifo {}", path.display());
}

/// Readers never block on a FIFO either: as the log it is an error, as a
/// rotated file an issue; the regular files are still read.
#[test]
fn readers_refuse_a_fifo_without_blocking() {
    let dir = TempDir::new("read-fifo");
    let fifo = dir.join("fifo.jsonl");
    mkfifo(&fifo);
    let p = fifo.clone();
    let err = within_10s(move || LogReader::open(&p).map(drop)).unwrap_err();
    assert!(err.to_string().contains("FIFO"), "{err}");

    let path = dir.join("log.jsonl");
    std::fs::write(&path, log_bytes(&[failure_entry(failure("orders", 0, 7))])).unwrap();
    mkfifo(&dir.join("log.jsonl.1"));
    let p = path.clone();
    let reader = within_10s(move || LogReader::open(&p)).unwrap();
    assert_eq!(offsets(reader.entries()), [7]);
    assert_eq!(reader.issues().len(), 1, "{:?}", reader.issues());
    assert!(
        matches!(&reader.issues()[0].kind, ReadIssueKind::Io(m) if m.contains("FIFO")),
        "{:?}",
        reader.issues()
    );
}

/// A log path that is a FIFO, a character device or a directory is refused
/// with a typed error naming it, at once (a FIFO used to block the open).
#[test]
fn a_path_that_is_not_a_regular_file_is_refused_without_blocking() {
    let dir = TempDir::new("not-a-file");
    let fifo = dir.join("fifo.jsonl");
    mkfifo(&fifo);
    let subdir = dir.join("a-directory");
    std::fs::create_dir(&subdir).unwrap();
    for (path, kind) in [
        (fifo.clone(), "FIFO"),
        (PathBuf::from("/dev/null"), "character device"),
        (subdir.clone(), "directory"),
    ] {
        let p = path.clone();
        let err = within_10s(move || FailedOffsetLog::open(&p).map(drop)).unwrap_err();
        assert!(
            matches!(&err, LogError::NotAFile { path: p, kind: k } if *p == path && *k == kind),
            "{err:?}"
        );
        let text = err.to_string();
        assert!(text.contains(&path.display().to_string()), "{text}");
        assert!(
            text.contains(&format!("is a {kind}, not a regular file")),
            "{text}"
        );
        assert!(!PathBuf::from(format!("{}.lock", path.display())).exists());
    }
    assert!(!Path::new("/dev/null.lock").exists());
    // A FIFO where the lock file goes is refused too.
    let path = dir.join("locked-by-fifo.jsonl");
    mkfifo(&dir.join("locked-by-fifo.jsonl.lock"));
    let p = path.clone();
    let err = within_10s(move || FailedOffsetLog::open(&p).map(drop)).unwrap_err();
    assert!(
        matches!(&err, LogError::NotAFile { kind: "FIFO", path: p } if p.ends_with("locked-by-fifo.jsonl.lock")),
        "{err:?}"
    );
}

/// Rotation with a FIFO named like a rotated file (`path.1`, the oldest one
/// kept with `max_files(2)`) removes it and does not hang.
#[test]
fn rotation_onto_a_fifo_does_not_hang() {
    let dir = TempDir::new("rotate-fifo");
    let path = dir.join("failed.jsonl");
    mkfifo(&dir.join("failed.jsonl.1"));
    let p = path.clone();
    let status = within_10s(move || {
        let log = FailedOffsetLog::builder(&p)
            .max_file_bytes(1)
            .max_files(2)
            .open()
            .unwrap();
        for offset in 0..3 {
            log.record(failure("orders", 0, offset));
        }
        log.flush().unwrap();
        let status = log.status();
        log.close().unwrap();
        status
    });
    assert_eq!(
        (status.records_written, status.rotations),
        (3, 2),
        "{status:?}"
    );
    assert!(
        std::fs::metadata(dir.join("failed.jsonl.1"))
            .unwrap()
            .is_file()
    );
    let p = path.clone();
    let read = within_10s(move || offsets(LogReader::open(&p).unwrap().entries()));
    assert_eq!(read, [1, 2]);
}

const WRITER_CHILD_ENV: &str = "OFFSET_GUARD_TEST_LOG_WRITER";
const CHILD_RECORDS: i64 = 2_000;

/// The child side of [`a_second_writer_process_is_refused`]: `first:PATH`
/// opens the log, says `LOCKED`, writes its records, says `WRITTEN n` and
/// closes when its stdin ends; `second:PATH` tries to open it and says what
/// happened.
fn writer_child(spec: &str) {
    let (role, path) = spec.split_once(':').unwrap();
    let builder = FailedOffsetLog::builder(path)
        .max_file_bytes(64 * 1024)
        .max_files(1_000);
    if role == "second" {
        match builder.open() {
            Err(e) if e.is_in_use() => println!("CHILD IN_USE {e}"),
            Err(e) => println!("CHILD ERROR {e:?}"),
            Ok(_) => println!("CHILD OPENED"),
        }
        return;
    }
    let log = builder.open().unwrap();
    println!("CHILD LOCKED");
    for offset in 0..CHILD_RECORDS {
        log.record(failure("orders", 0, offset));
    }
    log.flush().unwrap();
    let status = log.status();
    println!(
        "CHILD WRITTEN {} {}",
        status.records_written, status.rotations
    );
    std::io::Read::read_to_end(&mut std::io::stdin(), &mut Vec::new()).unwrap();
    log.close().unwrap();
}

fn spawn_writer_child(role: &str, path: &Path) -> std::process::Child {
    Command::new(std::env::current_exe().unwrap())
        .args([
            "--exact",
            "a_second_writer_process_is_refused",
            "--nocapture",
            "--test-threads=1",
        ])
        .env(WRITER_CHILD_ENV, format!("{role}:{}", path.display()))
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap()
}

/// What the child says after `CHILD ` (the test harness prints its own text
/// around it, `test NAME ... ` on the same line).
fn child_lines(out: impl std::io::Read) -> impl Iterator<Item = String> {
    std::io::BufRead::lines(std::io::BufReader::new(out))
        .map(Result::unwrap)
        .filter_map(|l| l.split_once("CHILD ").map(|(_, said)| said.to_owned()))
}

/// One writer per log across processes: while one process writes (rotating
/// at 64 KiB), three more processes and this one are refused with
/// [`LogError::InUse`]; every record of the first reads back.
#[test]
fn a_second_writer_process_is_refused() {
    if let Ok(spec) = std::env::var(WRITER_CHILD_ENV) {
        return writer_child(&spec);
    }
    let dir = TempDir::new("lock-processes");
    let path = dir.join("failed.jsonl");
    let mut first = spawn_writer_child("first", &path);
    let mut lines = child_lines(first.stdout.take().unwrap());
    assert_eq!(lines.next().as_deref(), Some("LOCKED"));

    // Started while the first writes.
    let seconds: Vec<_> = (0..3)
        .map(|_| spawn_writer_child("second", &path))
        .collect();
    for mut child in seconds {
        drop(child.stdin.take());
        let said: Vec<String> = child_lines(child.stdout.take().unwrap()).collect();
        assert!(child.wait().unwrap().success());
        assert_eq!(said.len(), 1, "{said:?}");
        assert!(said[0].starts_with("IN_USE "), "{said:?}");
        assert!(said[0].contains("in use by another writer"), "{said:?}");
    }
    assert!(FailedOffsetLog::open(&path).unwrap_err().is_in_use());

    let written = lines.next().unwrap();
    let mut figures = written.strip_prefix("WRITTEN ").unwrap().split(' ');
    assert_eq!(figures.next(), Some(CHILD_RECORDS.to_string().as_str()));
    let rotations: u64 = figures.next().unwrap().parse().unwrap();
    assert!(rotations >= 2, "{written}");
    drop(first.stdin.take());
    assert!(first.wait().unwrap().success());

    let reader = LogReader::open(&path).unwrap();
    assert!(reader.issues().is_empty(), "{:?}", reader.issues());
    assert_eq!(
        offsets(reader.entries()),
        (0..CHILD_RECORDS).collect::<Vec<_>>()
    );
    // The first process is gone: its lock went with it.
    FailedOffsetLog::open(&path).unwrap().close().unwrap();
}

#[test]
fn records_after_close_are_dropped_and_counted() {
    let dir = TempDir::new("closed");
    let path = dir.join("failed.jsonl");
    let log = FailedOffsetLog::open(&path).unwrap();
    let other = log.clone();
    log.record(failure("orders", 0, 1));
    other.close().unwrap();
    log.close().unwrap(); // twice is fine
    log.record(failure("orders", 0, 2));
    assert_eq!(log.status().dropped, 1);
    assert!(matches!(log.flush(), Err(LogError::Closed { .. })));
    assert_eq!(offsets(LogReader::open(&path).unwrap().entries()), [1]);
}

#[test]
fn dropping_the_last_handle_writes_what_is_queued() {
    let dir = TempDir::new("drop");
    let path = dir.join("failed.jsonl");
    let log = FailedOffsetLog::open(&path).unwrap();
    for offset in 0..20 {
        log.record(failure("orders", 0, offset));
    }
    drop(log);
    assert_eq!(LogReader::open(&path).unwrap().entries().len(), 20);
}

#[test]
fn batched_fsync_writes_everything() {
    let dir = TempDir::new("batched");
    let path = dir.join("failed.jsonl");
    let log = FailedOffsetLog::builder(&path)
        .fsync(FsyncPolicy::Batched {
            max_records: 4,
            max_delay: Duration::from_millis(20),
        })
        .open()
        .unwrap();
    for offset in 0..10 {
        log.record(failure("orders", 0, offset));
    }
    // Written without an explicit flush (the writer does not wait for one)...
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    while log.status().records_written < 10 {
        assert!(std::time::Instant::now() < deadline, "{:?}", log.status());
        std::thread::sleep(Duration::from_millis(5));
    }
    // ... and the flush makes it durable.
    log.flush_timeout(Duration::from_secs(5)).unwrap();
    assert_eq!(LogReader::open(&path).unwrap().entries().len(), 10);
}

#[test]
fn unresolved_folds_in_later_resolutions() {
    let dir = TempDir::new("unresolved");
    let path = dir.join("failed.jsonl");
    let log = FailedOffsetLog::open(&path).unwrap();
    for (p, offset) in [(0, 10), (0, 16), (0, 30), (1, 5), (2, 7)] {
        log.record(failure("orders", p, offset));
    }
    let mut other_group = failure("orders", 2, 7);
    other_group.group_id = "audit".into();
    log.record(other_group);
    // Partition 0: a recommit of 20 covers 10 and 16, not 30.
    log.resolve(Resolution::recommitted("billing", "orders", 0, 20));
    // Partition 1: 5 superseded by a commit of 8.
    log.resolve(Resolution::superseded("billing", "orders", 1, 5, 8));
    // Partition 2: resolved for billing only, not for the audit group.
    log.resolve(Resolution::superseded("billing", "orders", 2, 3, 7));
    // Another topic's resolution does not count.
    log.resolve(Resolution::recommitted("billing", "payments", 0, 100));
    // A failure logged after a resolution covering its offset is open again.
    log.record(failure("orders", 1, 6));
    log.close().unwrap();

    let reader = LogReader::open(&path).unwrap();
    let open: Vec<(String, i32, i64)> = reader
        .unresolved()
        .into_iter()
        .map(|f: FailureRecord| (f.group_id, f.partition, f.offset))
        .collect();
    assert_eq!(
        open,
        [
            ("billing".into(), 0, 30),
            ("audit".into(), 2, 7),
            ("billing".into(), 1, 6)
        ]
    );
    let resolved_kinds: Vec<ResolutionKind> = reader
        .entries()
        .iter()
        .filter_map(|e| match e {
            LogEntry::Resolved(r) => Some(r.how),
            _ => None,
        })
        .collect();
    assert_eq!(resolved_kinds[0], ResolutionKind::Recommitted);
    assert_eq!(
        resolved_kinds[1],
        ResolutionKind::Superseded {
            committed_offset: 8
        }
    );

    let summary = reader.summary();
    let rows: Vec<(&str, i32, usize, usize, i64, i64)> = summary
        .iter()
        .map(|s| {
            (
                s.group_id.as_str(),
                s.partition,
                s.count,
                s.unresolved,
                s.min_offset,
                s.max_offset,
            )
        })
        .collect();
    assert_eq!(
        rows,
        [
            ("audit", 2, 1, 1, 7, 7),
            ("billing", 0, 3, 1, 10, 30),
            ("billing", 1, 2, 1, 5, 6),
            ("billing", 2, 1, 0, 7, 7),
        ]
    );
    let p0 = &summary[1];
    assert_eq!(p0.first_time, at_ms(T0_MS + 10));
    assert_eq!(p0.last_time, at_ms(T0_MS + 30));
    assert_eq!(
        p0.by_reason,
        [
            (FailureReason::Fatal, 1),
            (FailureReason::RetriesExhausted, 2)
        ]
    );
}

// ------------------------------------------------------------ streaming

/// The lines of `entries` as one file's bytes.
fn log_bytes(entries: &[LogEntry]) -> Vec<u8> {
    entries
        .iter()
        .flat_map(|e| e.to_json_line().into_bytes())
        .collect()
}

#[test]
fn stream_reads_the_rotated_set_oldest_first_and_reports_a_missing_file() {
    let dir = TempDir::new("stream-gap");
    let path = dir.join("log.jsonl");
    let e = |offset| failure_entry(failure("orders", 0, offset));
    // path.3 (with a BOM), path.2 missing, path.1, path.
    let mut oldest = b"\xef\xbb\xbf".to_vec();
    oldest.extend(log_bytes(&[e(1), e(2)]));
    std::fs::write(dir.join("log.jsonl.3"), oldest).unwrap();
    std::fs::write(dir.join("log.jsonl.1"), log_bytes(&[e(3)])).unwrap();
    std::fs::write(&path, log_bytes(&[e(4)])).unwrap();

    let items: Vec<_> = LogStream::open(&path).unwrap().collect();
    assert_eq!(items.len(), 5, "{items:?}");
    let read: Vec<i64> = items
        .iter()
        .filter_map(|i| i.as_ref().ok())
        .map(LogEntry::offset)
        .collect();
    assert_eq!(read, [1, 2, 3, 4], "the BOM does not hide the first record");
    let issue = items[2].as_ref().unwrap_err();
    assert_eq!(issue.kind, ReadIssueKind::MissingFile);
    assert_eq!(issue.file, dir.join("log.jsonl.2"));
    assert_eq!(issue.line, 0);

    let reader = LogReader::open(&path).unwrap();
    assert_eq!(offsets(reader.entries()), [1, 2, 3, 4]);
    assert_eq!(reader.issues().len(), 1);
    assert_eq!(reader.files().len(), 3);

    // path.1 missing below path.2: reported too.
    std::fs::rename(dir.join("log.jsonl.1"), dir.join("log.jsonl.2")).unwrap();
    let reader = LogReader::open(&path).unwrap();
    assert_eq!(offsets(reader.entries()), [1, 2, 3, 4]);
    let missing: Vec<_> = reader
        .issues()
        .iter()
        .map(|i| (i.file.clone(), i.kind.clone()))
        .collect();
    assert_eq!(
        missing,
        [(dir.join("log.jsonl.1"), ReadIssueKind::MissingFile)]
    );
}

#[test]
fn non_utf8_and_overlong_lines_are_issues_and_reading_goes_on() {
    let e = |offset| failure_entry(failure("orders", 0, offset));
    let mut bytes = log_bytes(&[e(1)]);
    bytes.extend_from_slice(b"{\"v\":1,\xff\xfe}\n");
    bytes.extend(std::iter::repeat_n(b'x', MAX_LINE_BYTES + 10));
    bytes.push(b'\n');
    bytes.extend(log_bytes(&[e(2)]));
    // A BOM is only skipped at the start of a file.
    bytes.extend_from_slice(b"\xef\xbb\xbf");
    bytes.extend(log_bytes(&[e(3)]));
    let reader = LogReader::from_bytes("mixed", &bytes);
    assert_eq!(offsets(reader.entries()), [1, 2]);
    let kinds: Vec<_> = reader
        .issues()
        .iter()
        .map(|i| (i.line, i.kind.clone()))
        .collect();
    assert!(
        matches!(&kinds[0], (2, ReadIssueKind::Garbage(m)) if m.contains("UTF-8")),
        "{kinds:?}"
    );
    assert_eq!(kinds[1], (3, ReadIssueKind::LineTooLong));
    assert!(
        matches!(&kinds[2], (5, ReadIssueKind::Garbage(_))),
        "{kinds:?}"
    );
    assert_eq!(kinds.len(), 3);
}

#[test]
fn a_directory_is_not_a_log() {
    let dir = TempDir::new("stream-dir");
    let err = LogStream::open(&dir.0).unwrap_err();
    assert!(matches!(err, LogError::NotADirectory { .. }), "{err}");
}

/// Entries over several groups, topics and partitions with resolutions that
/// cover some failures, refail resolved offsets and go backwards.
fn mixed_entries(ops: &[(u8, u8, i64)]) -> Vec<LogEntry> {
    ops.iter()
        .map(|&(kind, part, offset)| {
            let (group, topic, p) = (
                ["a", "b"][(part % 2) as usize],
                ["t", "u"][(part / 2 % 2) as usize],
                i32::from(part % 3),
            );
            match kind % 5 {
                4 => LogEntry::Resolved(Resolution::manual(group, topic, p, offset, "by hand")),
                0 => LogEntry::Resolved(Resolution::superseded(
                    group,
                    topic,
                    p,
                    offset,
                    offset + i64::from(kind % 7),
                )),
                1 => LogEntry::Resolved(Resolution::recommitted(group, topic, p, offset)),
                _ => failure_entry(FailedOffset::new(
                    group,
                    topic,
                    p,
                    offset,
                    FailureReason::Fatal,
                )),
            }
        })
        .collect()
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    /// The incremental folds give what the whole-log functions give.
    #[test]
    fn incremental_folds_match_the_whole_log(ops in proptest::collection::vec((any::<u8>(), any::<u8>(), 0i64..40), 0..120)) {
        let entries = mixed_entries(&ops);

        let mut open = UnresolvedOffsets::new();
        let mut summary = LogSummary::new();
        let mut index = ResolutionIndex::new();
        for e in &entries {
            open.push(e);
            summary.push(e);
            index.push(e);
        }
        let expected = unresolved(&entries);
        prop_assert_eq!(open.len(), expected.len() as u64);
        for (g, t, p) in [("a", "t", 0), ("b", "u", 1), ("a", "u", 2), ("b", "t", 0)] {
            let mut want: Vec<i64> = expected
                .iter()
                .filter(|f| (f.group_id.as_str(), f.topic.as_str(), f.partition) == (g, t, p))
                .map(|f| f.offset)
                .collect();
            want.sort();
            prop_assert_eq!(open.offsets(g, t, p), want);
        }
        prop_assert_eq!(summary.finish(), summarize(&entries));

        let mut cursor = index.cursor();
        let status: Vec<bool> = entries.iter().map(|e| cursor.resolved(e)).collect();
        prop_assert_eq!(status, resolution_status(&entries));
    }
}

// ----------------------------------------------------------- proptest

fn sample_lines(n: i64) -> Vec<String> {
    (0..n)
        .map(|offset| {
            if offset % 4 == 3 {
                LogEntry::Resolved(resolution_at(
                    Resolution::superseded("billing", "orders", 0, offset - 1, offset + 5),
                    T0_MS,
                ))
                .to_json_line()
            } else {
                failure_entry(failure("orders", (offset % 3) as i32, offset)).to_json_line()
            }
        })
        .collect()
}

/// Whether `sub` appears in `all` in order (not necessarily adjacent).
fn is_subsequence(sub: &[LogEntry], all: &[LogEntry]) -> bool {
    let mut it = all.iter();
    sub.iter().all(|s| it.any(|a| a == s))
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    #[test]
    fn reader_never_panics_on_arbitrary_bytes(bytes in proptest::collection::vec(any::<u8>(), 0..2048)) {
        let reader = LogReader::from_bytes("fuzz", &bytes);
        let lines = bytes.split(|&b| b == b'\n').filter(|l| !l.is_empty()).count();
        prop_assert!(reader.entries().len() + reader.issues().len() <= lines + 1);
        for issue in reader.issues() {
            prop_assert!(issue.line >= 1);
            prop_assert!(issue.excerpt.chars().count() <= 81);
        }
    }

    #[test]
    fn reader_returns_every_untouched_line(
        n in 1i64..24,
        mutations in proptest::collection::vec((any::<proptest::sample::Index>(), any::<u8>()), 0..6),
        cut in any::<proptest::sample::Index>(),
        truncate in any::<bool>(),
    ) {
        let lines = sample_lines(n);
        let mut bytes: Vec<u8> = lines.concat().into_bytes();
        for (at, byte) in &mutations {
            let i = at.index(bytes.len());
            bytes[i] = *byte;
        }
        if truncate {
            bytes.truncate(cut.index(bytes.len() + 1));
        }
        let reader = LogReader::from_bytes("mutated", &bytes);

        // Every complete line identical to a written one is read back, in order.
        let untouched: Vec<LogEntry> = bytes
            .split_inclusive(|&b| b == b'\n')
            .filter(|seg| seg.ends_with(b"\n"))
            .filter_map(|seg| {
                let seg = std::str::from_utf8(seg).ok()?;
                lines.iter().any(|l| l == seg).then(|| LogEntry::parse_line(seg.trim_end_matches('\n')).unwrap())
            })
            .collect();
        prop_assert!(is_subsequence(&untouched, reader.entries()), "{:?}", reader.issues());
        if mutations.is_empty() && !truncate {
            prop_assert!(reader.issues().is_empty());
            prop_assert_eq!(reader.entries().len(), n as usize);
        }
    }
}

/// Every path form `GuardBuilder::failed_offset_log` took before (anything
/// `Into<PathBuf>`) converts into a `LogBuilder` with that path.
#[test]
fn paths_convert_into_log_builders() {
    use offset_guard::failure_log::LogBuilder;
    use std::borrow::Cow;
    let p = Path::new("/var/log/failed.jsonl");
    let forms: Vec<LogBuilder> = vec![
        "/var/log/failed.jsonl".into(),
        String::from("/var/log/failed.jsonl").into(),
        (&String::from("/var/log/failed.jsonl")).into(),
        p.into(),
        p.to_path_buf().into(),
        (&p.to_path_buf()).into(),
        p.as_os_str().to_owned().into(),
        Box::<Path>::from(p).into(),
        Cow::Borrowed(p).into(),
    ];
    for b in forms {
        assert_eq!(b.path(), p);
    }
}

/// A file beside the log named like a rotated file but with a huge number (a
/// dated backup) is neither read nor counted as thousands of missing files,
/// and the writer never deletes it; a gap is one issue however wide.
#[test]
fn a_dated_backup_beside_the_log_is_skipped_not_read_nor_deleted() {
    let dir = TempDir::new("dated-backup");
    let path = dir.join("log.jsonl");
    let e = |offset| failure_entry(failure("orders", 0, offset));
    std::fs::write(&path, log_bytes(&[e(1)])).unwrap();
    let backup = dir.join("log.jsonl.20261129");
    std::fs::write(&backup, log_bytes(&[e(99)])).unwrap();
    std::fs::write(dir.join("log.jsonl.18446744073709551615"), b"x").unwrap();
    std::fs::write(dir.join("log.jsonl.500"), log_bytes(&[e(0)])).unwrap();
    let p = path.clone();
    let reader = within_10s(move || LogReader::open(&p).unwrap());
    assert_eq!(offsets(reader.entries()), [0, 1]);
    let kinds: Vec<_> = reader.issues().iter().map(|i| i.kind.clone()).collect();
    assert_eq!(
        kinds,
        [ReadIssueKind::NotRotated, ReadIssueKind::MissingFile],
        "{:?}",
        reader.issues()
    );
    assert!(
        reader.issues()[1].excerpt.contains("499 files"),
        "{:?}",
        reader.issues()
    );

    // The writer rotates (keeping 2 files) without touching the backup.
    let log = FailedOffsetLog::builder(&path)
        .max_file_bytes(1)
        .max_files(2)
        .open()
        .unwrap();
    for o in 0..5 {
        log.record(failure("orders", 0, o));
    }
    log.close().unwrap();
    assert!(backup.exists(), "the backup is not the writer's to delete");
}

/// `Duration::MAX` as the batched fsync delay means "no time limit", not a
/// dead writer thread: records are written and synced by flush and close.
#[test]
fn a_batched_fsync_delay_of_duration_max_never_kills_the_writer() {
    let dir = TempDir::new("fsync-max");
    let path = dir.join("log.jsonl");
    let log = FailedOffsetLog::builder(&path)
        .fsync(FsyncPolicy::Batched {
            max_records: usize::MAX,
            max_delay: Duration::MAX,
        })
        .open()
        .unwrap();
    for o in 0..5 {
        log.record(failure("orders", 0, o));
    }
    log.flush().expect("the writer is alive");
    log.close().unwrap();
    assert_eq!(log.status().records_written, 5);
    assert_eq!(
        offsets(LogReader::open(&path).unwrap().entries()),
        [0, 1, 2, 3, 4]
    );
}

/// Two spellings of one log (a symlink to it, `dir/../dir/log`) share one
/// lock: the second writer is refused.
#[test]
fn a_symlink_to_a_log_in_use_is_in_use_too() {
    let dir = TempDir::new("symlink-lock");
    let path = dir.join("log.jsonl");
    let first = FailedOffsetLog::open(&path).unwrap();
    let alias = dir.join("alias.jsonl");
    std::os::unix::fs::symlink(&path, &alias).unwrap();
    let err = FailedOffsetLog::open(&alias).unwrap_err();
    assert!(err.is_in_use(), "{err:?}");
    let dotted = dir
        .join("..")
        .join(dir.0.file_name().unwrap())
        .join("log.jsonl");
    let err = FailedOffsetLog::open(&dotted).unwrap_err();
    assert!(err.is_in_use(), "{err:?}");
    first.close().unwrap();
    drop(first);
    FailedOffsetLog::open(&alias).unwrap().close().unwrap();
    // A directory that does not exist names the log, not its lock file.
    let missing = dir.join("no-such-dir").join("log.jsonl");
    let err = FailedOffsetLog::open(&missing).unwrap_err();
    assert_eq!(err.path(), Some(missing.as_path()), "{err:?}");
}
