//! `build()` refuses bad configuration with a typed error naming the setting.

use std::time::Duration;

use offset_guard::{BuildError, OffsetGuard, RetryPolicy};
use rdkafka::ClientConfig;

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
