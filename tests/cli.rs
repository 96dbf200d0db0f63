//! The `offset-guard` command, run as a process: output, filters, exit
//! codes, argument errors, closed pipes, escaping and alignment.

use std::ffi::OsStr;
use std::io::{Read, Write};
use std::os::unix::ffi::OsStrExt;
use std::path::PathBuf;
use std::process::{Command, Output, Stdio};

use offset_guard::failure_log::{FailedOffsetLog, LogEntry, LogReader, Resolution};
use offset_guard::{FailedOffset, FailureReason, FailureSink};

#[path = "common/logs.rs"]
mod logs;
/// A fresh directory under the system temp dir, removed on drop.
#[path = "common/tempdir.rs"]
mod tempdir;
use logs::{T0_MS, at_ms, failure};
use tempdir::TempDir;

fn resolution_at(mut r: Resolution, ms: u64) -> Resolution {
    r.time = at_ms(ms);
    r
}

fn offsets(entries: &[LogEntry]) -> Vec<i64> {
    entries.iter().map(LogEntry::offset).collect()
}

// ---------------------------------------------------------------- CLI

fn cli(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_offset-guard"))
        .args(args)
        .output()
        .unwrap()
}

fn text(b: &[u8]) -> String {
    String::from_utf8(b.to_vec()).unwrap()
}

/// A sample log: two partitions of `orders`, one of `payments`, one resolution.
fn sample_log(dir: &TempDir) -> PathBuf {
    let path = dir.join("failed.jsonl");
    let log = FailedOffsetLog::open(&path).unwrap();
    log.record(failure("orders", 0, 10));
    log.record(failure("orders", 0, 11));
    log.record(failure("orders", 1, 12));
    log.record(failure("payments", 0, 13));
    log.resolve(resolution_at(
        Resolution::superseded("billing", "orders", 0, 10, 15),
        T0_MS + 500,
    ));
    log.close().unwrap();
    path
}

#[test]
fn cli_prints_an_aligned_table() {
    let dir = TempDir::new("cli-table");
    let path = sample_log(&dir);
    let out = cli(&["failures", path.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(0), "{out:?}");
    assert_eq!(text(&out.stderr), "");
    let stdout = text(&out.stdout);
    let lines: Vec<&str> = stdout.lines().collect();
    assert_eq!(lines.len(), 5, "{stdout}");
    assert!(lines[0].starts_with("TIME "), "{stdout}");
    for col in [
        "TOPIC",
        "PARTITION",
        "OFFSET",
        "REASON",
        "ERROR",
        "RESOLVED",
    ] {
        assert!(lines[0].contains(col), "{stdout}");
    }
    // Aligned: every column starts at the same place in every row.
    let offset_col = lines[0].find("OFFSET").unwrap();
    let offsets: Vec<&str> = lines[1..]
        .iter()
        .map(|l| l[offset_col..].split_whitespace().next().unwrap())
        .collect();
    assert_eq!(offsets, ["10", "11", "12", "13"]);
    assert!(lines[1].starts_with("2026-11-23T14:30:36.133Z  billing  orders "));
    let resolved_col = lines[0].find("RESOLVED").unwrap();
    let resolved: Vec<&str> = lines[1..]
        .iter()
        .map(|l| l[resolved_col..].split_whitespace().next().unwrap())
        .collect();
    assert_eq!(resolved, ["yes", "yes", "no", "no"]);
    assert!(lines[4].contains("payments"));
}

#[test]
fn cli_filters_and_json() {
    let dir = TempDir::new("cli-json");
    let path = sample_log(&dir);
    let p = path.to_str().unwrap();

    // --json prints the log's own lines; the output reads back as a log.
    let out = cli(&["failures", p, "--json"]);
    assert_eq!(out.status.code(), Some(0));
    let back = LogReader::from_bytes("stdout", &out.stdout);
    assert!(back.issues().is_empty());
    assert_eq!(back.entries(), LogReader::open(&path).unwrap().entries());

    let out = cli(&["failures", p, "--json", "--unresolved"]);
    let back = LogReader::from_bytes("stdout", &out.stdout);
    assert_eq!(offsets(back.entries()), [12, 13]);

    let out = cli(&[
        "failures",
        p,
        "--json",
        "--topic",
        "orders",
        "--partition=0",
    ]);
    let back = LogReader::from_bytes("stdout", &out.stdout);
    assert_eq!(offsets(back.entries()), [10, 11, 10]); // two failures, one resolution

    let out = cli(&[
        "failures",
        p,
        "--json",
        "--since",
        "2026-11-23T14:30:36.135Z",
    ]);
    let back = LogReader::from_bytes("stdout", &out.stdout);
    assert_eq!(offsets(back.entries()), [12, 13, 10]); // resolutions ignore --since

    let out = cli(&["failures", p, "--since", "2026-11-24", "--unresolved"]);
    assert_eq!(out.status.code(), Some(0));
    assert_eq!(text(&out.stdout).lines().count(), 1); // the header only
}

#[test]
fn cli_summary() {
    let dir = TempDir::new("cli-summary");
    let path = sample_log(&dir);
    let p = path.to_str().unwrap();
    let out = cli(&["failures", p, "--summary"]);
    assert_eq!(out.status.code(), Some(0));
    let stdout = text(&out.stdout);
    let lines: Vec<&str> = stdout.lines().collect();
    assert_eq!(lines.len(), 4, "{stdout}");
    assert!(lines[0].contains("UNRESOLVED"));
    let cells: Vec<&str> = lines[1].split_whitespace().collect();
    assert_eq!(
        &cells[..7],
        ["billing", "orders", "0", "2", "0", "10", "11"]
    );

    let out = cli(&["failures", p, "--summary", "--json", "--unresolved"]);
    let rows: Vec<serde_json::Value> = text(&out.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(rows.len(), 2);
    assert_eq!(rows[0]["topic"], "orders");
    assert_eq!(rows[0]["partition"], 1);
    assert_eq!(rows[0]["unresolved"], 1);
    assert_eq!(rows[1]["topic"], "payments");
    assert_eq!(rows[1]["by_reason"]["shutdown_deadline"], 1);
}

#[test]
fn cli_exit_codes() {
    let dir = TempDir::new("cli-exit");
    let path = sample_log(&dir);
    let p = path.to_str().unwrap();

    // 1: damaged lines; what was readable is still printed, issues on stderr.
    let mut bytes = std::fs::read(&path).unwrap();
    bytes.extend_from_slice(b"garbage\n{\"v\":1,\"kind\":\"fail");
    let damaged = dir.join("damaged.jsonl");
    std::fs::write(&damaged, &bytes).unwrap();
    let out = cli(&["failures", damaged.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(1));
    assert_eq!(text(&out.stdout).lines().count(), 5);
    let stderr = text(&out.stderr);
    assert!(stderr.contains("damaged.jsonl:6:"), "{stderr}");
    assert!(
        stderr.contains("damaged.jsonl:7: torn last line"),
        "{stderr}"
    );

    // 2: usage errors.
    for args in [
        &[][..],
        &["failures"],
        &["frobnicate", p],
        &["failures", p, "--bogus"],
        &["failures", p, "--partition", "x"],
        &["failures", p, "--since", "yesterday"],
        &["failures", p, "--topic"],
        &["failures", p, p],
    ] {
        let out = cli(args);
        assert_eq!(out.status.code(), Some(2), "{args:?}");
        let stderr = text(&out.stderr);
        assert!(
            stderr.contains("error:") || stderr.contains("Usage:"),
            "{args:?}: {stderr}"
        );
        assert!(out.stdout.is_empty());
    }

    // 3: the file cannot be opened.
    let out = cli(&["failures", dir.join("missing.jsonl").to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(3));
    assert!(text(&out.stderr).contains("missing.jsonl"));

    // 0: help documents the exit codes.
    let out = cli(&["--help"]);
    assert_eq!(out.status.code(), Some(0));
    let help = text(&out.stdout);
    assert!(help.contains("Exit codes"), "{help}");
    assert!(help.contains("3  the log could not be opened"), "{help}");
    let out = cli(&["failures", "--help"]);
    assert_eq!(out.status.code(), Some(0));
    assert!(text(&out.stdout).contains("8  the output could not be written"));
}

// ------------------------------------------------- arguments, pipes, escaping

fn cli_os(args: &[&OsStr]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_offset-guard"))
        .args(args)
        .output()
        .unwrap()
}

/// No panic (exit 101, "panicked" on stderr) whatever the arguments.
fn assert_no_panic(out: &Output) {
    assert_ne!(out.status.code(), Some(101), "{out:?}");
    assert!(!text_lossy(&out.stderr).contains("panicked"), "{out:?}");
}

fn text_lossy(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

#[test]
fn non_utf8_arguments_are_read_or_refused_without_panic() {
    let dir = TempDir::new("cli-nonutf8");
    let path = sample_log(&dir);
    // A path need not be UTF-8: it is read.
    let mut name = dir.0.clone().into_os_string();
    name.push("/log-");
    name.push(OsStr::from_bytes(b"\xff\xfe.jsonl"));
    std::fs::copy(&path, &name).unwrap();
    let out = cli_os(&[OsStr::new("failures"), &name]);
    assert_no_panic(&out);
    assert_eq!(out.status.code(), Some(0), "{out:?}");
    assert_eq!(text(&out.stdout).lines().count(), 5);

    // Text options must be UTF-8: a usage error naming the option.
    let bad = OsStr::from_bytes(b"or\xffders");
    let p = path.as_os_str();
    for args in [
        vec![OsStr::new("failures"), p, OsStr::new("--topic"), bad],
        vec![OsStr::new("failures"), p, OsStr::new("--since"), bad],
        vec![OsStr::new("failures"), p, OsStr::from_bytes(b"--\xff")],
        vec![OsStr::from_bytes(b"fail\xffures"), p],
    ] {
        let out = cli_os(&args);
        assert_no_panic(&out);
        assert_eq!(out.status.code(), Some(2), "{args:?}: {out:?}");
        assert!(out.stdout.is_empty());
    }
}

#[test]
fn missing_values_and_repeated_options_are_usage_errors() {
    let dir = TempDir::new("cli-usage");
    let path = sample_log(&dir);
    let p = path.to_str().unwrap();
    for args in [
        &["failures", p, "--topic", "--json"][..],
        &["failures", p, "--topic", "a", "--topic", "b"],
        &["failures", p, "--partition", "1", "--partition=2"],
        &["failures", p, "--json", "--json"],
        &["failures", p, "--summary", "--summary"],
        &[
            "failures",
            p,
            "--since",
            "2026-11-23",
            "--since",
            "2026-11-24",
        ],
    ] {
        let out = cli(args);
        assert_eq!(out.status.code(), Some(2), "{args:?}: {out:?}");
        assert!(out.stdout.is_empty(), "{args:?}");
        let stderr = text(&out.stderr);
        assert!(
            stderr.contains("--topic") || stderr.contains("cannot be used multiple times"),
            "{args:?}: {stderr}"
        );
    }
}

/// Runs the command with stdout a pipe whose reader is closed at once.
fn run_into_closed_pipe(args: &[&str]) -> Output {
    let mut child = Command::new(env!("CARGO_BIN_EXE_offset-guard"))
        .args(args)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    drop(child.stdout.take());
    let mut stderr = Vec::new();
    child
        .stderr
        .take()
        .unwrap()
        .read_to_end(&mut stderr)
        .unwrap();
    let status = child.wait().unwrap();
    Output {
        status,
        stdout: Vec::new(),
        stderr,
    }
}

#[test]
fn a_closed_output_pipe_ends_quietly() {
    let dir = TempDir::new("cli-pipe");
    // Big enough that the table does not fit in the pipe's buffer.
    let path = dir.join("big.jsonl");
    let entries: Vec<LogEntry> = (0..3_000)
        .map(|offset| LogEntry::Failure(failure("orders", 0, offset).into()))
        .collect();
    write_lines(&path, &entries);
    let p = path.to_str().unwrap();
    for i in 0..30 {
        for args in [&["--help"][..], &["failures", p]] {
            let out = run_into_closed_pipe(args);
            assert_no_panic(&out);
            assert_eq!(out.status.code(), Some(0), "run {i} {args:?}: {out:?}");
        }
    }
}

#[test]
fn a_write_error_on_stdout_has_its_own_exit_code() {
    let dir = TempDir::new("cli-full");
    let path = sample_log(&dir);
    let full = std::fs::OpenOptions::new()
        .write(true)
        .open("/dev/full")
        .unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_offset-guard"))
        .args(["failures", path.to_str().unwrap()])
        .stdout(full)
        .output()
        .unwrap();
    assert_no_panic(&out);
    assert_eq!(out.status.code(), Some(8), "{out:?}");
    assert!(text(&out.stderr).contains("writing the output"), "{out:?}");

    // Help and version too.
    for args in [&["--help"][..], &["--version"], &["failures", "--help"]] {
        let full = std::fs::OpenOptions::new()
            .write(true)
            .open("/dev/full")
            .unwrap();
        let out = Command::new(env!("CARGO_BIN_EXE_offset-guard"))
            .args(args)
            .stdout(full)
            .output()
            .unwrap();
        assert_no_panic(&out);
        assert_eq!(out.status.code(), Some(8), "{args:?}: {out:?}");
        assert!(text(&out.stderr).contains("writing the output"), "{out:?}");
    }
}

/// A log with hostile and wide text, written as JSON Lines by hand.
fn write_lines(path: &std::path::Path, entries: &[LogEntry]) {
    let mut f = std::fs::File::create(path).unwrap();
    for e in entries {
        f.write_all(e.to_json_line().as_bytes()).unwrap();
    }
}

#[test]
fn text_from_the_log_is_escaped_and_aligned_by_display_width() {
    let dir = TempDir::new("cli-escape");
    let path = dir.join("log.jsonl");
    let evil = FailedOffset::new(
        "billing\u{1b}]0;pwned\u{7}",
        "orders\nfake row",
        0,
        1,
        FailureReason::Fatal,
    )
    .with_time(at_ms(T0_MS))
    .with_error_message("\u{1b}[2Jcleared\r\u{202e}txt");
    let wide =
        FailedOffset::new("billing", "注文🦀", 1, 2, FailureReason::Fatal).with_time(at_ms(T0_MS));
    let plain =
        FailedOffset::new("billing", "orders", 2, 3, FailureReason::Fatal).with_time(at_ms(T0_MS));
    write_lines(
        &path,
        &[evil.into(), wide.into(), plain.into()]
            .map(|f: offset_guard::failure_log::FailureRecord| LogEntry::Failure(f)),
    );
    for args in [
        &["failures", path.to_str().unwrap()][..],
        &["failures", path.to_str().unwrap(), "--summary"],
    ] {
        let out = cli(args);
        assert_eq!(out.status.code(), Some(0), "{out:?}");
        let stdout = text(&out.stdout);
        assert!(
            !stdout.contains('\u{1b}') && !stdout.contains('\u{7}') && !stdout.contains('\r'),
            "{stdout:?}"
        );
        assert!(!stdout.contains('\u{202e}'), "{stdout:?}");
        assert!(stdout.contains("billing\\e]0;pwned\\x07"), "{stdout}");
        assert!(stdout.contains("orders\\nfake row"), "{stdout}");
        assert_eq!(stdout.lines().count(), 4, "one line per row: {stdout}");
        // The PARTITION column starts at the same display column in every
        // row: 注 文 🦀 are two columns wide each.
        let display = |s: &str| -> usize {
            s.chars()
                .map(|c| {
                    if matches!(c, '注' | '文' | '🦀') {
                        2
                    } else {
                        1
                    }
                })
                .sum()
        };
        let lines: Vec<&str> = stdout.lines().collect();
        let col = display(&lines[0][..lines[0].find("PARTITION").unwrap()]);
        for line in &lines[1..] {
            let at = ["0", "1", "2"]
                .iter()
                .filter_map(|p| line.find(&format!("  {p}  ")))
                .min()
                .unwrap()
                + 2;
            assert_eq!(display(&line[..at]), col, "{stdout}");
        }
    }
    // Warnings about damaged lines are escaped too.
    std::fs::write(&path, b"\x1b[2J garbage\n").unwrap();
    let out = cli(&["failures", path.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(1));
    assert!(!out.stderr.contains(&0x1b), "{out:?}");
}

#[test]
fn a_missing_rotated_file_is_reported() {
    let dir = TempDir::new("cli-gap");
    let path = sample_log(&dir);
    let p = path.to_str().unwrap();
    std::fs::copy(&path, dir.join("failed.jsonl.1")).unwrap();
    std::fs::copy(&path, dir.join("failed.jsonl.3")).unwrap();
    let out = cli(&["failures", p, "--summary"]);
    assert_eq!(out.status.code(), Some(1), "{out:?}");
    let stderr = text(&out.stderr);
    assert!(
        stderr.contains("failed.jsonl.2:0: rotated file missing"),
        "{stderr}"
    );
    // What was there is still summarized: three copies of the sample.
    let stdout = text(&out.stdout);
    let cells: Vec<&str> = stdout.lines().nth(1).unwrap().split_whitespace().collect();
    assert_eq!(&cells[..4], ["billing", "orders", "0", "6"], "{stdout}");
}
