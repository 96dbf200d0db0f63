//! The operator commands `offsets`, `recommit` and `resolve` run as processes
//! against a broker (MockCluster, or the broker named by
//! `OFFSET_GUARD_BOOTSTRAP`): exit codes, output, the broker's committed
//! offsets read back by a separate client, and the log.

mod common;
#[path = "common/logs.rs"]
mod logs;

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use common::{Fixture, unique, wait_until};
use offset_guard::failure_log::{FailedOffsetLog, LogEntry, LogReader, Resolution, ResolutionKind};
use offset_guard::{FailedOffset, FailureReason, FailureSink};
use rdkafka::consumer::{BaseConsumer, CommitMode, Consumer};
use rdkafka::{ClientConfig, Offset, TopicPartitionList};

const BIN: &str = env!("CARGO_BIN_EXE_offset-guard");

struct Run {
    code: i32,
    stdout: String,
    stderr: String,
}

fn run(args: &[&str]) -> Run {
    let out = Command::new(BIN)
        .args(args)
        .env_remove("USER")
        .output()
        .expect("run offset-guard");
    let r = Run {
        code: out.status.code().expect("exited, not killed by a signal"),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    };
    assert!(!r.stderr.contains("panicked"), "{}", r.stderr);
    r
}

fn log_path(name: &str) -> PathBuf {
    let path = std::env::temp_dir().join(format!("{}.jsonl", unique(name)));
    let _ = std::fs::remove_file(&path);
    path
}

/// Writes failures `(topic, partition, offset)` and then resolutions to a new log.
fn write_log(
    path: &Path,
    group: &str,
    failures: &[(&str, i32, i64)],
    resolutions: Vec<Resolution>,
) {
    let log = FailedOffsetLog::open(path).unwrap();
    for &(t, p, o) in failures {
        log.record(
            FailedOffset::new(group, t, p, o, FailureReason::RetriesExhausted)
                .with_error_message("Broker: Request timed out"),
        );
    }
    for r in resolutions {
        log.resolve(r);
    }
    log.close().unwrap();
}

/// Commits offsets for `group` from a client that never joins it.
fn commit_outside(f: &Fixture, group: &str, topic: &str, offsets: &[(i32, i64)]) {
    let c: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", f.bootstrap())
        .set("group.id", group)
        .set("enable.auto.commit", "false")
        .create()
        .unwrap();
    let mut tpl = TopicPartitionList::new();
    for &(p, o) in offsets {
        tpl.add_partition_offset(topic, p, Offset::Offset(o))
            .unwrap();
    }
    c.commit(&tpl, CommitMode::Sync)
        .expect("commit from outside the group");
}

/// A topic of `partitions` partitions with 10 records each.
fn topic(f: &Fixture, name: &str, partitions: i32) -> String {
    let topic = unique(name);
    f.create_topic(&topic, partitions);
    f.produce(&topic, partitions, 10, 0);
    topic
}

fn json_lines(s: &str) -> Vec<serde_json::Value> {
    s.lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{l}: {e}")))
        .collect()
}

#[test]
fn offsets_shows_committed_log_end_lag_and_unresolved_failures() {
    let f = Fixture::any();
    let (t, group) = (topic(&f, "offsets", 2), unique("g-offsets"));
    commit_outside(&f, &group, &t, &[(0, 4)]);
    let path = log_path("offsets");
    // 2 is resolved; 3 is at or below the committed offset but unresolved in the log.
    write_log(
        &path,
        &group,
        &[(&t, 0, 2), (&t, 0, 7), (&t, 0, 3), (&t, 1, 5)],
        vec![Resolution::superseded(&group, &t, 0, 2, 2)],
    );
    let p = path.to_str().unwrap();
    let b = f.bootstrap();
    // Topics from the log.
    let r = run(&["offsets", "-b", b, "-g", &group, "--log", p, "--json"]);
    assert_eq!(r.code, 0, "{}", r.stderr);
    let rows = json_lines(&r.stdout);
    assert_eq!(rows.len(), 2, "{}", r.stdout);
    // Read by a separate client (Tansu's can trail the last batch: TESTING.md, 11).
    let hw = f.high_watermarks(&t, 2);
    let expect = [
        (0, Some(4), serde_json::json!([3, 7])),
        (1, None, serde_json::json!([5])),
    ];
    for (row, (part, committed, unresolved)) in rows.iter().zip(expect) {
        let end = hw[part as usize];
        let lag = committed.map(|c| (end - c).max(0));
        assert_eq!(row["topic"], t.as_str());
        assert_eq!(row["group"], group.as_str());
        assert_eq!(row["partition"], part);
        assert_eq!(row["committed"], serde_json::json!(committed), "{row}");
        assert_eq!(row["log_end"], end, "{row}");
        assert_eq!(row["lag"], serde_json::json!(lag), "{row}");
        assert_eq!(row["unresolved"], unresolved, "{row}");
    }
    // A table, topics named explicitly, no log.
    let r = run(&["offsets", "-b", b, "-g", &group, "-t", &t]);
    assert_eq!(r.code, 0, "{}", r.stderr);
    let lines: Vec<&str> = r.stdout.lines().collect();
    assert_eq!(lines.len(), 3, "{}", r.stdout);
    let header: Vec<&str> = lines[0].split_whitespace().collect();
    assert_eq!(
        header,
        [
            "GROUP",
            "TOPIC",
            "PARTITION",
            "COMMITTED",
            "LOG_END",
            "LAG",
            "UNRESOLVED",
            "FAILED_OFFSETS"
        ]
    );
    let (end0, end1) = (hw[0].to_string(), hw[1].to_string());
    let lag0 = (hw[0] - 4).max(0).to_string();
    let row0: Vec<&str> = lines[1].split_whitespace().collect();
    assert_eq!(
        row0[2..],
        ["0", "4", &end0, &lag0, "0", "-"],
        "{}",
        r.stdout
    );
    let row1: Vec<&str> = lines[2].split_whitespace().collect();
    assert_eq!(row1[2..], ["1", "-", &end1, "-", "0", "-"], "{}", r.stdout);
    // Columns line up.
    let col = lines[0].find("COMMITTED").unwrap();
    assert_eq!(&lines[1][col..col + 2], "4 ", "{}", r.stdout);
    assert_eq!(&lines[2][col..col + 2], "- ", "{}", r.stdout);

    // A group name with terminal controls is printed escaped, in the table and in JSON.
    let evil = format!("{group}\u{1b}[2J\u{202e}\n");
    let r = run(&["offsets", "-b", b, "-g", &evil, "-t", &t]);
    assert_eq!(r.code, 0, "{}", r.stderr);
    assert!(
        r.stdout.contains(&format!("{group}\\e[2J\\u{{202e}}\\n ")),
        "{}",
        r.stdout
    );
    let r2 = run(&["offsets", "-b", b, "-g", &evil, "-t", &t, "--json"]);
    assert_eq!(r2.code, 0, "{}", r2.stderr);
    for out in [&r.stdout, &r2.stdout] {
        assert!(!out.contains(['\u{1b}', '\u{202e}']), "{out}");
    }
    assert_eq!(json_lines(&r2.stdout)[0]["group"], evil.as_str());

    // A topic the cluster does not have.
    let r = run(&["offsets", "-b", b, "-g", &group, "-t", &unique("missing")]);
    assert_eq!(r.code, 6, "{}", r.stderr);
    assert!(r.stderr.contains("is not in the cluster"), "{}", r.stderr);
    // No topics anywhere.
    let r = run(&["offsets", "-b", b, "-g", "no-such-group", "--log", p]);
    assert_eq!(r.code, 6, "{}", r.stderr);
    let r = run(&["offsets", "-b", b, "-g", &group]);
    assert_eq!(r.code, 2, "{}", r.stderr);
    let _ = std::fs::remove_file(&path);
}

/// Partition 0: failures 3 and 7, committed 4 -> commit 7.
/// Partition 1: failure 5, nothing committed -> commit 5.
/// Partition 2: failure 6, committed 9 -> nothing committed (never backwards).
#[test]
fn recommit_dry_run_changes_nothing_then_commits_forward_only() {
    let f = Fixture::any();
    let (t, group) = (topic(&f, "recommit", 3), unique("g-recommit"));
    commit_outside(&f, &group, &t, &[(0, 4), (2, 9)]);
    let path = log_path("recommit");
    write_log(
        &path,
        &group,
        &[(&t, 0, 3), (&t, 0, 7), (&t, 1, 5), (&t, 2, 6)],
        vec![],
    );
    // Another group's failure is not touched.
    write_log(&path, "other", &[(&t, 0, 8)], vec![]);
    let before = std::fs::read(&path).unwrap();
    let (b, p) = (f.bootstrap(), path.to_str().unwrap());

    let r = run(&["recommit", "-b", b, "-g", &group, "--log", p, "--dry-run"]);
    assert_eq!(r.code, 0, "{}", r.stderr);
    let plan: Vec<Vec<&str>> = r
        .stdout
        .lines()
        .map(|l| l.split_whitespace().collect())
        .collect();
    assert_eq!(
        plan[1][1..],
        ["0", "3,7", "4", "commit", "7"],
        "{}",
        r.stdout
    );
    assert_eq!(plan[2][1..], ["1", "5", "-", "commit", "5"], "{}", r.stdout);
    assert_eq!(plan[3][1..5], ["2", "6", "9", "none:"], "{}", r.stdout);
    assert!(
        r.stdout.contains("dry run: nothing committed"),
        "{}",
        r.stdout
    );
    assert_eq!(f.committed(&group, &t, 3), [Some(4), None, Some(9)]);
    assert_eq!(
        std::fs::read(&path).unwrap(),
        before,
        "dry run wrote the log"
    );

    let r = run(&["recommit", "-b", b, "-g", &group, "--log", p]);
    assert_eq!(r.code, 0, "{}\n{}", r.stdout, r.stderr);
    assert!(
        r.stdout
            .contains("committed 2 partition(s); appended 4 resolution(s)"),
        "{}",
        r.stdout
    );
    assert_eq!(f.committed(&group, &t, 3), [Some(7), Some(5), Some(9)]);

    let reader = LogReader::open(&path).unwrap();
    let resolved = logs::resolutions(&reader);
    assert_eq!(
        resolved,
        [
            (
                0,
                3,
                ResolutionKind::Superseded {
                    committed_offset: 7
                }
            ),
            (0, 7, ResolutionKind::Recommitted),
            (1, 5, ResolutionKind::Recommitted),
            (
                2,
                6,
                ResolutionKind::Superseded {
                    committed_offset: 9
                }
            ),
        ]
    );
    let left: Vec<_> = reader
        .unresolved()
        .into_iter()
        .map(|f| f.group_id)
        .collect();
    assert_eq!(left, ["other"]);
    let r = run(&["failures", p, "--unresolved", "--json", "--topic", &t]);
    assert_eq!(r.code, 0, "{}", r.stderr);
    assert!(
        !r.stdout.contains(&format!("\"group_id\":\"{group}\"")),
        "{}",
        r.stdout
    );

    // Again: nothing left to do.
    let r = run(&["recommit", "-b", b, "-g", &group, "--log", p]);
    assert_eq!(r.code, 0, "{}", r.stderr);
    assert!(r.stdout.starts_with("nothing to recommit"), "{}", r.stdout);
    let _ = std::fs::remove_file(&path);
}

/// A member polling in its own thread until stopped.
struct Member {
    stop: Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Member {
    fn join(f: &Fixture, group: &str, topic: &str) -> Member {
        let consumer: BaseConsumer = f
            .config(group)
            .set("enable.auto.commit", "false")
            .create()
            .unwrap();
        consumer.subscribe(&[topic]).unwrap();
        let stop = Arc::new(AtomicBool::new(false));
        let assigned = Arc::new(AtomicBool::new(false));
        let (s, a) = (stop.clone(), assigned.clone());
        let thread = std::thread::spawn(move || {
            while !s.load(Ordering::Relaxed) {
                let _ = consumer.poll(Duration::from_millis(50));
                let n = consumer.assignment().map(|l| l.count()).unwrap_or(0);
                a.store(n > 0, Ordering::Relaxed);
            }
            consumer.unsubscribe();
        });
        wait_until(Duration::from_secs(30), "the member is assigned", || {
            assigned.load(Ordering::Relaxed)
        });
        Member {
            stop,
            thread: Some(thread),
        }
    }
}

impl Drop for Member {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

#[test]
fn recommit_refuses_while_the_group_has_active_members() {
    let f = Fixture::any();
    let (t, group) = (topic(&f, "members", 1), unique("g-members"));
    commit_outside(&f, &group, &t, &[(0, 2)]);
    let path = log_path("members");
    write_log(&path, &group, &[(&t, 0, 6)], vec![]);
    let before = std::fs::read(&path).unwrap();
    let member = Member::join(&f, &group, &t);
    let r = run(&[
        "recommit",
        "-b",
        f.bootstrap(),
        "-g",
        &group,
        "--log",
        path.to_str().unwrap(),
    ]);
    drop(member);
    assert_eq!(r.code, 5, "{}\n{}", r.stdout, r.stderr);
    assert!(r.stderr.contains("active member"), "{}", r.stderr);
    assert_eq!(f.committed(&group, &t, 1), [Some(2)]);
    assert_eq!(std::fs::read(&path).unwrap(), before, "the log was written");
    let _ = std::fs::remove_file(&path);
}

#[test]
fn a_broker_that_is_gone_is_a_typed_error_within_the_timeout() {
    // A port nothing listens on.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let b = format!("127.0.0.1:{port}");
    let path = log_path("gone");
    write_log(&path, "g", &[("orders", 0, 6)], vec![]);
    let before = std::fs::read(&path).unwrap();
    let p = path.to_str().unwrap();
    for args in [
        vec![
            "offsets",
            "-b",
            &b,
            "-g",
            "g",
            "-t",
            "orders",
            "--timeout",
            "1s",
        ],
        vec![
            "recommit",
            "-b",
            &b,
            "-g",
            "g",
            "--log",
            p,
            "--timeout",
            "1500ms",
        ],
    ] {
        let started = Instant::now();
        let r = run(&args);
        assert_eq!(r.code, 4, "{args:?}: {}", r.stderr);
        assert!(
            started.elapsed() < Duration::from_secs(5),
            "{:?}",
            started.elapsed()
        );
        assert!(
            r.stderr.starts_with("offset-guard: error: "),
            "{}",
            r.stderr
        );
    }
    assert_eq!(std::fs::read(&path).unwrap(), before);
    let _ = std::fs::remove_file(&path);
}

/// A log held open by a running writer (a guard) is refused with its own
/// exit code, and nothing is written to it.
#[test]
fn a_log_in_use_by_a_running_writer_is_refused() {
    let path = log_path("inuse");
    write_log(&path, "billing", &[("orders", 0, 3)], vec![]);
    let before = std::fs::read(&path).unwrap();
    let writer = offset_guard::failure_log::FailedOffsetLog::open(&path).unwrap();
    let p = path.to_str().unwrap();
    let r = run(&[
        "resolve", "--log", p, "-g", "billing", "-t", "orders", "-p", "0", "-o", "3", "--note", "x",
    ]);
    assert_eq!(r.code, 7, "{}", r.stderr);
    assert!(r.stderr.contains("in use"), "{}", r.stderr);
    assert_eq!(std::fs::read(&path).unwrap(), before, "nothing written");
    writer.close().unwrap();
    drop(writer);
    let r = run(&[
        "resolve", "--log", p, "-g", "billing", "-t", "orders", "-p", "0", "-o", "3", "--note", "x",
    ]);
    assert_eq!(r.code, 0, "once the writer closed: {}", r.stderr);
}

#[test]
fn resolve_marks_chosen_failures_with_a_note_and_refuses_unknown_ones() {
    let path = log_path("resolve");
    let group = "billing\u{1b}[2J";
    write_log(
        &path,
        group,
        &[("orders", 0, 3), ("orders", 0, 7), ("orders", 1, 4)],
        vec![],
    );
    let p = path.to_str().unwrap();
    let base = [
        "resolve", "--log", p, "-g", group, "-t", "orders", "-p", "0",
    ];
    let with = |extra: &[&str]| run(&[&base[..], extra].concat());

    // 7 only: a manual resolution does not cover 3 below it.
    let r = with(&[
        "-o",
        "7",
        "--note",
        "skipped\n\u{1b}[31mpoison",
        "--by",
        "ops",
    ]);
    assert_eq!(r.code, 0, "{}", r.stderr);
    assert!(r.stdout.contains("skipped\\n\\e[31mpoison"), "{}", r.stdout);
    assert!(!r.stdout.contains('\u{1b}'), "{}", r.stdout);
    assert!(
        r.stdout.contains("resolved 1 failed offset(s)"),
        "{}",
        r.stdout
    );
    let open: Vec<(i32, i64)> = LogReader::open(&path)
        .unwrap()
        .unresolved()
        .iter()
        .map(|f| (f.partition, f.offset))
        .collect();
    assert_eq!(open, [(0, 3), (1, 4)]);
    let last = LogReader::open(&path)
        .unwrap()
        .into_entries()
        .pop()
        .unwrap();
    let LogEntry::Resolved(last) = last else {
        panic!("{last:?}")
    };
    assert_eq!(
        (last.how, last.note.as_deref(), last.by.as_deref()),
        (
            ResolutionKind::Manual,
            Some("skipped\n\u{1b}[31mpoison"),
            Some("ops")
        )
    );

    let size = std::fs::metadata(&path).unwrap().len();
    for (extra, msg) in [
        (vec!["-o", "7"], "is resolved already"),
        (vec!["-o", "3,99"], "is not a failure in the log"),
    ] {
        let r = with(&[&extra[..], &["-n", "x"]].concat());
        assert_eq!(r.code, 6, "{extra:?}: {}", r.stderr);
        assert!(r.stderr.contains(msg), "{}", r.stderr);
        assert!(!r.stderr.contains('\u{1b}'), "{}", r.stderr);
    }
    assert_eq!(
        std::fs::metadata(&path).unwrap().len(),
        size,
        "a refused resolve wrote"
    );

    // Either chosen offsets or all of them, not both.
    let r = with(&["-o", "3", "--all-unresolved", "-n", "x"]);
    assert_eq!(r.code, 2, "{}", r.stderr);
    let r = with(&["--all-unresolved", "-n", "replayed by hand"]);
    assert_eq!(r.code, 0, "{}", r.stderr);
    let r = with(&["--all-unresolved", "-n", "again"]);
    assert_eq!(r.code, 6, "{}", r.stderr);
    let r = run(&["failures", p, "--unresolved", "--json"]);
    assert_eq!(json_lines(&r.stdout).len(), 1, "{}", r.stdout);

    // Usage errors: no offsets chosen, no or empty note, not a number.
    for extra in [
        vec!["-n", "x"],
        vec!["-o", "3"],
        vec!["-o", "3", "-n", " "],
        vec!["-o", "x", "-n", "y"],
    ] {
        let r = with(&extra);
        assert_eq!(r.code, 2, "{extra:?}: {}", r.stderr);
        assert!(r.stderr.contains("error:"), "{}", r.stderr);
    }
    let r = run(&[
        "resolve",
        "--log",
        "/nonexistent/dir/log.jsonl",
        "-g",
        "g",
        "-t",
        "t",
        "-p",
        "0",
        "-o",
        "1",
        "-n",
        "x",
    ]);
    assert_eq!(r.code, 3, "{}", r.stderr);
    // A log that does not exist is not created.
    let missing = log_path("missing");
    let m = missing.to_str().unwrap();
    for args in [
        vec![
            "resolve", "--log", m, "-g", "g", "-t", "t", "-p", "0", "-o", "1", "-n", "x",
        ],
        vec!["recommit", "-b", "127.0.0.1:1", "-g", "g", "--log", m],
    ] {
        let r = run(&args);
        assert_eq!(r.code, 3, "{args:?}: {}", r.stderr);
        assert!(r.stderr.contains("no such file"), "{}", r.stderr);
        assert!(!missing.exists(), "{args:?} created the log");
    }
    let _ = std::fs::remove_file(&path);
}

#[test]
fn usage_errors_help_and_closed_pipes() {
    for (args, code) in [
        (vec!["bogus"], 2),
        (vec![], 2),
        (
            vec![
                "offsets",
                "-b",
                "x:1",
                "-g",
                "g",
                "-t",
                "t",
                "--timeout",
                "abc",
            ],
            2,
        ),
        (
            vec![
                "offsets",
                "-b",
                "x:1",
                "-g",
                "g",
                "-t",
                "t",
                "--timeout",
                "-1",
            ],
            2,
        ),
        (
            vec![
                "offsets",
                "-b",
                "x:1",
                "-g",
                "g",
                "-t",
                "t",
                "-X",
                "no.such.property=1",
            ],
            2,
        ),
        (vec!["recommit", "-b", "x:1", "-g", "g"], 2),
        (vec!["recommit", "-b", "x:1", "-g", "", "--log", "l"], 2),
        (vec!["offsets", "-b", "", "-g", "g", "-t", "t"], 2),
        (
            vec![
                "resolve",
                "--log",
                "l",
                "-g",
                "g",
                "-t",
                "t",
                "-p",
                "99999999999",
                "-o",
                "1",
                "-n",
                "x",
            ],
            2,
        ),
        (vec!["--help"], 0),
        (vec!["recommit", "--help"], 0),
        (vec!["--version"], 0),
    ] {
        let r = run(&args);
        assert_eq!(r.code, code, "{args:?}: {}", r.stderr);
        if code == 2 {
            assert!(!r.stderr.is_empty() && r.stdout.is_empty(), "{args:?}");
        } else {
            assert!(!r.stdout.is_empty(), "{args:?}");
        }
    }
    let help = run(&["offsets", "--help"]).stdout;
    for needle in [
        "--bootstrap-servers",
        "--timeout",
        "Exit codes:",
        "5  recommit refused",
    ] {
        assert!(help.contains(needle), "{needle}: {help}");
    }
    // Output to a pipe nobody reads: no panic, the command still finishes.
    let path = log_path("pipe");
    let failures: Vec<(&str, i32, i64)> = (0..400).map(|o| ("orders", 0, o)).collect();
    write_log(&path, "g", &failures, vec![]);
    let p = path.to_str().unwrap();
    for args in [
        vec!["failures", p],
        vec![
            "resolve",
            "--log",
            p,
            "-g",
            "g",
            "-t",
            "orders",
            "-p",
            "0",
            "--all-unresolved",
            "-n",
            "x",
        ],
    ] {
        let mut child = Command::new(BIN)
            .args(&args)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        drop(child.stdout.take()); // closed before the command writes
        let out = child.wait_with_output().unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(0), "{args:?}: {stderr}");
        assert!(!stderr.contains("panicked"), "{stderr}");
    }
    // The resolve went through although nobody read its output.
    assert!(LogReader::open(&path).unwrap().unresolved().is_empty());
    let _ = std::fs::remove_file(&path);
}

#[test]
fn damaged_log_lines_are_reported_and_the_rest_is_used() {
    let path = log_path("damaged");
    write_log(&path, "g", &[("orders", 0, 3)], vec![]);
    let mut bytes = std::fs::read(&path).unwrap();
    bytes.extend_from_slice(b"garbage \x1b[2J\n");
    std::fs::write(&path, &bytes).unwrap();
    let p = path.to_str().unwrap();
    let r = run(&[
        "resolve", "--log", p, "-g", "g", "-t", "orders", "-p", "0", "-o", "3", "-n", "x",
    ]);
    assert_eq!(r.code, 1, "{}", r.stderr);
    assert!(
        r.stdout.contains("resolved 1 failed offset(s)"),
        "{}",
        r.stdout
    );
    assert!(r.stderr.contains("1 damaged line(s)"), "{}", r.stderr);
    assert!(!r.stderr.contains('\u{1b}'), "{}", r.stderr);
    assert!(LogReader::open(&path).unwrap().unresolved().is_empty());
    let _ = std::fs::remove_file(&path);
}
