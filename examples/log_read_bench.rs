//! Time and peak memory of reading a 1,000,000-line failed-offset log: the
//! `offset-guard failures` command (summary, unresolved, full table) and the
//! replay read (what `replay_failed_offsets` does on the commit thread).
//!
//! ```text
//! cargo build --release --bin offset-guard --example log_read_bench
//! target/release/examples/log_read_bench [--lines N] [--dir DIR] [--cli BIN]... [--replay-bin BIN]...
//! ```
//!
//! Generates the log in DIR (default: a fresh directory under the system
//! temp dir, removed at the end; a log already in DIR is reused), then runs
//! each command as a child under `/usr/bin/time -v` with stdout to
//! /dev/null, and prints wall time and peak resident memory (VmHWM, "Maximum
//! resident set size"). `--cli BIN` (repeatable) measures other builds of the
//! command the same way (default: target/release/offset-guard). The replay
//! read runs as a child of this program (`--replay PATH`); `--replay-bin BIN`
//! (repeatable) measures another program taking `--replay PATH` as well.
//! Last, `--build PATH` builds a guard with `replay_failed_offsets` on the
//! log against an embedded MockCluster and prints how long `build()` took
//! and how long until `shutdown()` returned (after the commit thread read
//! the log).
//!
//! The log: 2 groups x 8 topics x 32 partitions (512 partitions), offsets
//! growing per partition; about 89.5% failure lines and 10.5% resolution
//! lines (`superseded`, each covering the failures of its partition so far);
//! the partitions of one topic per group are never resolved, so about 1/7 of
//! the failures stay unresolved. About 284 bytes per line (284 MB).

use std::fs::File;
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant, SystemTime};

use offset_guard::failure_log::{LogEntry, LogStream, Resolution, UnresolvedOffsets};
use offset_guard::{FailedOffset, FailureReason};

const GROUPS: [&str; 2] = ["billing", "shipping"];
const TOPICS: usize = 8;
const PARTITIONS: i32 = 32;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    if let [flag, path] = args.as_slice()
        && flag == "--replay"
    {
        return replay(Path::new(path));
    }
    if let [flag, path] = args.as_slice()
        && flag == "--build"
    {
        return build_with_replay(Path::new(path));
    }
    let mut lines = 1_000_000u64;
    let mut dir: Option<PathBuf> = None;
    let mut clis: Vec<PathBuf> = Vec::new();
    let mut replays: Vec<PathBuf> = vec![std::env::current_exe()?];
    let mut it = args.iter();
    while let Some(a) = it.next() {
        let mut value = || it.next().ok_or(format!("{a} needs a value"));
        match a.as_str() {
            "--lines" => lines = value()?.parse()?,
            "--dir" => dir = Some(PathBuf::from(value()?)),
            "--cli" => clis.push(PathBuf::from(value()?)),
            "--replay-bin" => replays.push(PathBuf::from(value()?)),
            other => return Err(format!("unknown argument {other:?}").into()),
        }
    }
    if clis.is_empty() {
        clis.push(Path::new(env!("CARGO_MANIFEST_DIR")).join("target/release/offset-guard"));
    }
    let (dir, remove) = match dir {
        Some(d) => (d, false),
        None => {
            let d = std::env::temp_dir()
                .join(format!("offset-guard-read-bench-{}", std::process::id()));
            (d, true)
        }
    };
    std::fs::create_dir_all(&dir)?;
    let path = dir.join("failed-offsets.jsonl");
    if !path.exists() {
        let started = Instant::now();
        generate(&path, lines)?;
        eprintln!("generated {lines} lines in {:?}", started.elapsed());
    }
    let bytes = std::fs::metadata(&path)?.len();
    println!(
        "log: {} ({} lines, {:.1} MB)",
        path.display(),
        lines,
        bytes as f64 / 1e6
    );
    let p = path.to_str().ok_or("temp path is not UTF-8")?;
    for cli in &clis {
        for args in [
            vec!["failures", p, "--summary"],
            vec!["failures", p, "--unresolved"],
            vec!["failures", p],
        ] {
            let m = measure(cli, &args)?;
            println!(
                "{:<60} {m}",
                format!("{} {}", cli.display(), args.join(" "))
            );
        }
    }
    for bin in &replays {
        let m = measure(bin, &["--replay", p])?;
        println!("{:<60} {m}", format!("{} --replay {p}", bin.display()));
    }
    let me = std::env::current_exe()?;
    let m = measure_verbose(&me, &["--build", p])?;
    println!("{:<60} {m}", format!("{} --build {p}", me.display()));
    if remove {
        std::fs::remove_dir_all(&dir)?;
    }
    Ok(())
}

/// Wall time and peak RSS of one child run.
struct Measured {
    wall: Duration,
    max_rss_kib: u64,
    code: Option<i32>,
}

impl std::fmt::Display for Measured {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "wall {:>6.2} s  peak RSS {:>7.1} MiB  exit {:?}",
            self.wall.as_secs_f64(),
            self.max_rss_kib as f64 / 1024.0,
            self.code
        )
    }
}

/// Runs `bin args` under `/usr/bin/time -v`, stdout to /dev/null.
fn measure(bin: &Path, args: &[&str]) -> Result<Measured, Box<dyn std::error::Error>> {
    measure_to(bin, args, Stdio::null())
}

/// As [`measure`], the child's stdout shown.
fn measure_verbose(bin: &Path, args: &[&str]) -> Result<Measured, Box<dyn std::error::Error>> {
    measure_to(bin, args, Stdio::inherit())
}

fn measure_to(
    bin: &Path,
    args: &[&str],
    stdout: Stdio,
) -> Result<Measured, Box<dyn std::error::Error>> {
    let started = Instant::now();
    let out = Command::new("/usr/bin/time")
        .arg("-v")
        .arg(bin)
        .args(args)
        .stdout(stdout)
        .stderr(Stdio::piped())
        .output()?;
    let wall = started.elapsed();
    let stderr = String::from_utf8_lossy(&out.stderr);
    let max_rss_kib = stderr
        .lines()
        .find_map(|l| {
            l.trim()
                .strip_prefix("Maximum resident set size (kbytes): ")
        })
        .ok_or_else(|| format!("no RSS in /usr/bin/time output: {stderr}"))?
        .parse()?;
    Ok(Measured {
        wall,
        max_rss_kib,
        code: out.status.code(),
    })
}

/// The replay read, as `replay_failed_offsets` does it on the commit thread:
/// one streaming pass keeping the unresolved offsets of one group.
fn replay(path: &Path) -> Result<(), Box<dyn std::error::Error>> {
    let started = Instant::now();
    let mut open = UnresolvedOffsets::new();
    let mut issues = 0u64;
    for item in LogStream::open(path)? {
        match item {
            Ok(e) if e.group_id() == GROUPS[0] => open.push(&e),
            Ok(_) => {}
            Err(_) => issues += 1,
        }
    }
    let partitions = open.highest().count();
    println!(
        "replay read: {partitions} partitions to replay, {} unresolved, {issues} issues, {:?}",
        open.len(),
        started.elapsed()
    );
    Ok(())
}

/// `build()` with `replay_failed_offsets` on the log, against an embedded
/// MockCluster: how long `build()` takes (the log is read on the commit
/// thread), then how long until `shutdown()` returns (the commit thread
/// reads the whole log before it serves the shutdown).
fn build_with_replay(path: &Path) -> Result<(), Box<dyn std::error::Error>> {
    let cluster = rdkafka::mocking::MockCluster::new(1)?;
    let mut config = rdkafka::ClientConfig::new();
    config
        .set("bootstrap.servers", cluster.bootstrap_servers())
        .set("group.id", GROUPS[0]);
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    runtime.block_on(async {
        let started = Instant::now();
        let consumer = offset_guard::OffsetGuard::builder(config)
            .failed_offset_log(path)
            .replay_failed_offsets()
            .shutdown_timeout(Duration::from_secs(120))
            .build()?;
        let built = started.elapsed();
        consumer.shutdown().await?;
        println!(
            "build() returned after {built:?}; shutdown() (after the commit thread read the log) after {:?}",
            started.elapsed()
        );
        Ok::<(), Box<dyn std::error::Error>>(())
    })
}

/// Writes `lines` lines of a realistic log (see the module docs).
fn generate(path: &Path, lines: u64) -> std::io::Result<()> {
    let mut out = BufWriter::with_capacity(1 << 20, File::create(path)?);
    let topics: Vec<String> = (0..TOPICS).map(|t| format!("orders-{t}")).collect();
    let keys = GROUPS.len() * TOPICS * PARTITIONS as usize;
    let mut next_offset = vec![1_000_000i64; keys];
    let t0 = SystemTime::UNIX_EPOCH + Duration::from_millis(1_795_444_236_123);
    let mut rng = 0x2545_f491_4f6c_dd1du64;
    for i in 0..lines {
        // xorshift: deterministic, no dependency.
        rng ^= rng << 13;
        rng ^= rng >> 7;
        rng ^= rng << 17;
        let k = (rng % keys as u64) as usize;
        let (g, t, p) = (k / (TOPICS * 32), (k / 32) % TOPICS, (k % 32) as i32);
        let time = t0 + Duration::from_millis(i * 37);
        let entry: LogEntry = if rng % 100 < 12 && t != 7 {
            let mut r = Resolution::superseded(
                GROUPS[g],
                &topics[t],
                p,
                next_offset[k] - 1,
                next_offset[k] + 5,
            );
            r.time = time;
            r.into()
        } else {
            next_offset[k] += 1 + (rng >> 40) as i64 % 50;
            let reason = [
                FailureReason::RetriesExhausted,
                FailureReason::ShutdownDeadline,
                FailureReason::Lost,
            ][(rng >> 20) as usize % 3];
            let mut f = FailedOffset::new(GROUPS[g], &topics[t], p, next_offset[k], reason)
                .with_time(time)
                .with_error_message("Broker: Request timed out")
                .with_attempts(5)
                .with_elapsed(Duration::from_millis(9_000 + (rng >> 30) % 1000));
            f.member_id = Some(format!("rdkafka-{:08x}-{g}{t}", rng >> 32));
            f.error_code = Some(rdkafka::error::RDKafkaErrorCode::RequestTimedOut);
            LogEntry::Failure(f.into())
        };
        out.write_all(entry.to_json_line().as_bytes())?;
    }
    out.flush()
}
