//! `build()` refuses bad configuration with a typed error naming the setting.

use std::path::{Path, PathBuf};
use std::time::Duration;

use offset_guard::failure_log::{FailedOffsetLog, LogError};
use offset_guard::{BuildError, GuardContext, OffsetGuard, RetryPolicy};
use rdkafka::ClientConfig;
use rdkafka::consumer::BaseConsumer;

fn config() -> ClientConfig {
    let mut c = ClientConfig::new();
    c.set("bootstrap.servers", "127.0.0.1:1")
        .set("group.id", "g");
    c
}

fn setting(r: Result<offset_guard::GuardedConsumer, BuildError>) -> (&'static str, String) {
    match r {
        Ok(_) => panic!("build() accepted a bad configuration"),
        Err(e) => (e.setting().expect("names a setting"), e.to_string()),
    }
}

#[test]
fn missing_group_id() {
    let mut c = ClientConfig::new();
    c.set("bootstrap.servers", "127.0.0.1:1");
    let (s, msg) = setting(OffsetGuard::builder(c).build());
    assert_eq!(s, "group.id");
    assert!(msg.contains("group.id"), "{msg}");
    let mut c = config();
    c.set("group.id", "  ");
    assert_eq!(setting(OffsetGuard::builder(c).build()).0, "group.id");
}

#[test]
fn auto_commit_and_auto_store_contradict_the_guard() {
    for key in ["enable.auto.commit", "enable.auto.offset.store"] {
        let mut c = config();
        c.set(key, "true");
        let (s, msg) = setting(OffsetGuard::builder(c).build());
        assert_eq!(s, key);
        assert!(msg.contains(key) && msg.contains("true"), "{msg}");
    }
    // explicitly false is fine
    let mut c = config();
    c.set("enable.auto.commit", "false");
    assert!(OffsetGuard::builder(c).build().is_ok());
}

#[test]
fn zero_durations_and_counts() {
    let cases: Vec<(&str, Result<_, _>)> = vec![
        (
            "commit_interval",
            OffsetGuard::builder(config())
                .commit_interval(Duration::ZERO)
                .build(),
        ),
        (
            "shutdown_timeout",
            OffsetGuard::builder(config())
                .shutdown_timeout(Duration::ZERO)
                .build(),
        ),
        (
            "commit_every",
            OffsetGuard::builder(config()).commit_every(0).build(),
        ),
        (
            "batch_size",
            OffsetGuard::builder(config()).batch_size(0).build(),
        ),
        (
            "prefetch_batches",
            OffsetGuard::builder(config()).prefetch_batches(0).build(),
        ),
    ];
    for (want, r) in cases {
        assert_eq!(setting(r).0, want);
    }
}

#[test]
fn inconsistent_retry_policy() {
    let bad = [
        (
            "max_interval",
            RetryPolicy::exponential()
                .initial_interval(Duration::from_secs(2))
                .max_interval(Duration::from_secs(1)),
        ),
        (
            "initial_interval",
            RetryPolicy::exponential().initial_interval(Duration::ZERO),
        ),
        ("max_attempts", RetryPolicy::exponential().max_attempts(0)),
        (
            "max_elapsed",
            RetryPolicy::exponential().max_elapsed(Duration::ZERO),
        ),
        ("multiplier", RetryPolicy::exponential().multiplier(0.5)),
        ("jitter", RetryPolicy::exponential().jitter(1.0)),
    ];
    for (want, p) in bad {
        let (s, msg) = setting(OffsetGuard::builder(config()).retry(p).build());
        assert_eq!(s, want, "{msg}");
    }
}

#[test]
fn unopenable_failed_offset_log() {
    // A path below a regular file fails for every user, root included.
    let file = std::env::temp_dir().join(format!("og-not-a-dir-{}", std::process::id()));
    std::fs::write(&file, b"x").unwrap();
    let (s, msg) = setting(
        OffsetGuard::builder(config())
            .failed_offset_log(file.join("log.jsonl"))
            .build(),
    );
    std::fs::remove_file(&file).unwrap();
    assert_eq!(s, "failed_offset_log");
    assert!(msg.contains("log.jsonl"), "{msg}");
}

#[test]
fn zero_idle_recommit_period() {
    let (s, msg) = setting(
        OffsetGuard::builder(config())
            .recommit_idle_every(Duration::ZERO)
            .build(),
    );
    assert_eq!(s, "recommit_idle_every");
    assert!(msg.contains("recommit_idle_every"), "{msg}");
    // off by default, and any non-zero period is accepted
    assert!(
        OffsetGuard::builder(config())
            .recommit_idle_every(Duration::from_millis(1))
            .build()
            .is_ok()
    );
}

/// A fresh directory for one test (removed by the test).
fn temp_dir(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("og-build-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// `build()` with the log at `path` and replay on, on a thread of its own: the
/// error's setting, text and log error, or a failure if it took over 10 s.
fn build_with_log(path: &Path) -> (Option<&'static str>, String, Option<LogError>) {
    let path = path.to_path_buf();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let r = OffsetGuard::builder(config())
            .failed_offset_log(&path)
            .replay_failed_offsets()
            .build();
        let _ = tx.send(match r {
            Ok(_) => (None, "built".to_string(), None),
            Err(e) => {
                let (s, text) = (e.setting(), e.to_string());
                match e {
                    BuildError::FailedOffsetLog(l) => (s, text, Some(l)),
                    _ => (s, text, None),
                }
            }
        });
    });
    rx.recv_timeout(Duration::from_secs(10))
        .expect("build() returned within 10 s")
}

/// A log path that is a FIFO, `/dev/null` or a directory is refused at
/// `build()`, with replay on, at once and with a typed error naming it (a FIFO
/// used to make `build()` hang).
#[test]
fn failed_offset_log_that_is_not_a_regular_file() {
    let dir = temp_dir("not-a-file");
    let fifo = dir.join("fifo.jsonl");
    assert!(
        std::process::Command::new("mkfifo")
            .arg(&fifo)
            .status()
            .unwrap()
            .success()
    );
    for (path, kind) in [
        (fifo, "FIFO"),
        (PathBuf::from("/dev/null"), "character device"),
        (dir.clone(), "directory"),
    ] {
        let (s, msg, err) = build_with_log(&path);
        assert_eq!(s, Some("failed_offset_log"), "{msg}");
        assert!(
            matches!(&err, Some(LogError::NotAFile { path: p, kind: k }) if *p == path && *k == kind),
            "{err:?}"
        );
        assert!(msg.contains(&path.display().to_string()), "{msg}");
        assert!(msg.contains(kind), "{msg}");
    }
    std::fs::remove_dir_all(&dir).unwrap();
}

/// Two guards on one log, with either front-end: the second `build()` is
/// refused with `LogError::InUse`; once the first is shut down and dropped,
/// the log opens again.
#[tokio::test]
async fn failed_offset_log_in_use_by_another_guard() {
    let dir = temp_dir("in-use");
    let path = dir.join("failed.jsonl");
    let first = OffsetGuard::builder(config())
        .failed_offset_log(&path)
        .build()
        .unwrap();
    let (s, msg, err) = build_with_log(&path);
    assert_eq!(s, Some("failed_offset_log"), "{msg}");
    assert!(err.as_ref().is_some_and(LogError::is_in_use), "{err:?}");
    assert!(msg.contains("in use by another writer"), "{msg}");
    let own_loop = OffsetGuard::builder(config())
        .failed_offset_log(FailedOffsetLog::builder(&path).max_files(2))
        .build_consumer::<BaseConsumer<GuardContext>>();
    match own_loop {
        Err(BuildError::FailedOffsetLog(e)) => assert!(e.is_in_use(), "{e:?}"),
        Err(e) => panic!("{e:?}"),
        Ok(_) => panic!("a second writer was accepted"),
    }

    first.shutdown().await.unwrap();
    let (s, msg, _) = build_with_log(&path);
    assert_eq!((s, msg.as_str()), (None, "built"));
    std::fs::remove_dir_all(&dir).unwrap();
}

/// The log's own settings are validated at `build()`, naming the setting.
#[test]
fn invalid_failed_offset_log_options() {
    let dir = temp_dir("options");
    let path = dir.join("failed.jsonl");
    for (builder, what) in [
        (FailedOffsetLog::builder(&path).max_files(0), "max_files"),
        (
            FailedOffsetLog::builder(&path).max_file_bytes(0),
            "max_file_bytes",
        ),
        (
            FailedOffsetLog::builder(&path).max_unwritten(0),
            "max_unwritten",
        ),
    ] {
        let (s, msg) = setting(
            OffsetGuard::builder(config())
                .failed_offset_log(builder)
                .build(),
        );
        assert_eq!(s, "failed_offset_log");
        assert!(msg.contains(what), "{msg}");
    }
    assert!(!path.exists());
    std::fs::remove_dir_all(&dir).unwrap();
}
