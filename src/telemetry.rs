//! Metrics through the [`metrics`](https://docs.rs/metrics) facade (cargo
//! feature `metrics`); without the feature every call here compiles to
//! nothing.
//!
//! The commit worker owns the one [`Telemetry`]: it records commit latencies
//! as they happen and publishes the counters (from the [`Stats`] snapshot) and
//! the per-partition gauges after every commit cycle and at least every
//! [`PUBLISH_EVERY`]. Names follow Prometheus conventions; every series has a
//! `group` label, per-partition series also `topic` and `partition`. The list
//! is in the crate docs ("Metrics").

use std::time::Duration;

use crate::failure_log::LogStatus;
use crate::partition::TopicPartition;
use crate::stats::Stats;

/// How often the worker publishes when nothing else makes it.
pub(crate) const PUBLISH_EVERY: Duration = Duration::from_secs(1);

/// One owned partition's figures.
#[derive(Debug, Clone)]
#[cfg_attr(not(feature = "metrics"), allow(dead_code))]
pub(crate) struct PartitionFigures {
    pub tp: TopicPartition,
    pub committed: Option<i64>,
    pub commit_point: Option<i64>,
    pub outstanding: usize,
    /// The partition's high watermark as librdkafka last saw it in a fetch
    /// response (no broker request).
    pub log_end: Option<i64>,
}

#[cfg_attr(not(feature = "metrics"), allow(dead_code))]
impl PartitionFigures {
    /// Records between the committed offset and the log end.
    pub(crate) fn lag(&self) -> Option<i64> {
        lag(self.log_end, self.committed)
    }
}

/// `log_end - committed`, never negative; `None` unless both are known.
pub(crate) fn lag(log_end: Option<i64>, committed: Option<i64>) -> Option<i64> {
    Some((log_end? - committed?).max(0))
}

#[cfg(feature = "metrics")]
pub(crate) use enabled::Telemetry;

#[cfg(not(feature = "metrics"))]
pub(crate) use disabled::Telemetry;

#[cfg(not(feature = "metrics"))]
mod disabled {
    use super::*;

    /// Without the `metrics` feature: nothing.
    pub(crate) struct Telemetry;

    impl Telemetry {
        pub(crate) fn new(_group: &str) -> Self {
            Telemetry
        }
        #[inline]
        pub(crate) fn attempt(&self, _took: Duration) {}
        #[inline]
        pub(crate) fn landed(&self, _took: Duration) {}
        #[inline]
        pub(crate) fn publish(
            &mut self,
            _stats: &Stats,
            _parts: &[PartitionFigures],
            _log: Option<LogStatus>,
        ) {
        }
        pub(crate) fn enabled(&self) -> bool {
            false
        }
    }
}

#[cfg(feature = "metrics")]
mod enabled {
    use std::collections::HashMap;

    use metrics::{Counter, Gauge, Histogram, Unit};

    use super::*;

    type Get = fn(&Stats) -> u64;

    /// Every counter of [`Stats`], as `offset_guard_<field>_total`.
    pub(crate) const COUNTERS: &[(&str, &str, Get)] = &[
        (
            "offset_guard_delivered_total",
            "Records handed to the application.",
            |s| s.delivered,
        ),
        ("offset_guard_acked_total", "Acks recorded.", |s| s.acked),
        (
            "offset_guard_acks_stale_total",
            "Acks dropped: their assignment had ended.",
            |s| s.acks_stale,
        ),
        (
            "offset_guard_acks_duplicate_total",
            "Acks of an offset acked before.",
            |s| s.acks_duplicate,
        ),
        (
            "offset_guard_acks_unknown_total",
            "Acks of an offset never delivered.",
            |s| s.acks_unknown,
        ),
        (
            "offset_guard_skipped_revoked_total",
            "Fetched records of a revoked partition not handed out.",
            |s| s.skipped_revoked,
        ),
        (
            "offset_guard_commits_sent_total",
            "OffsetCommit attempts sent (retries included).",
            |s| s.commits_sent,
        ),
        (
            "offset_guard_commits_succeeded_total",
            "Commits that landed.",
            |s| s.commits_succeeded,
        ),
        (
            "offset_guard_commits_retried_total",
            "Attempts that failed with a retriable error and were retried.",
            |s| s.commits_retried,
        ),
        (
            "offset_guard_commits_failed_total",
            "Commits given up on.",
            |s| s.commits_failed,
        ),
        (
            "offset_guard_commits_noop_total",
            "Commits answered with _NO_OFFSET.",
            |s| s.commits_noop,
        ),
        (
            "offset_guard_commits_deferred_total",
            "Commits deferred while the group rebalanced.",
            |s| s.commits_deferred,
        ),
        (
            "offset_guard_idle_recommits_total",
            "Unchanged offsets of idle partitions committed again.",
            |s| s.idle_recommits,
        ),
        (
            "offset_guard_offsets_stale_dropped_total",
            "Offsets dropped as stale.",
            |s| s.offsets_stale_dropped,
        ),
        (
            "offset_guard_offsets_failed_total",
            "Offsets handed to the failure sink.",
            |s| s.offsets_failed,
        ),
        (
            "offset_guard_sink_errors_total",
            "Failure sink calls that panicked.",
            |s| s.sink_errors,
        ),
        (
            "offset_guard_assigns_total",
            "Assign rebalance callbacks.",
            |s| s.assigns,
        ),
        (
            "offset_guard_revokes_total",
            "Revoke rebalance callbacks.",
            |s| s.revokes,
        ),
        (
            "offset_guard_partitions_lost_total",
            "Partitions lost (never committed).",
            |s| s.partitions_lost,
        ),
        (
            "offset_guard_offsets_revoke_committed_total",
            "Offsets committed by a revoke before hand-off.",
            |s| s.offsets_revoke_committed,
        ),
        (
            "offset_guard_offsets_deferred_total",
            "Offsets kept across a rebalance.",
            |s| s.offsets_deferred,
        ),
        (
            "offset_guard_offsets_resumed_total",
            "Kept offsets committed when their partition came back.",
            |s| s.offsets_resumed,
        ),
        (
            "offset_guard_offsets_replayed_total",
            "Failed offsets from the log committed again at assign.",
            |s| s.offsets_replayed,
        ),
        (
            "offset_guard_offsets_rebalance_dropped_total",
            "Kept offsets dropped: the partition went to another member.",
            |s| s.offsets_rebalance_dropped,
        ),
        (
            "offset_guard_partitions_paused_total",
            "Partitions paused because the application fell behind.",
            |s| s.partitions_paused,
        ),
        (
            "offset_guard_records_abandoned_total",
            "Records dropped with every token without an ack.",
            |s| s.records_abandoned,
        ),
        (
            "offset_guard_records_stuck_total",
            "Records un-acked for stuck_after or longer.",
            |s| s.records_stuck,
        ),
        (
            "offset_guard_records_skipped_done_total",
            "Records skipped because the stored progress says they are done.",
            |s| s.records_skipped_done,
        ),
        (
            "offset_guard_progress_load_errors_total",
            "Assigned partitions whose stored progress could not be loaded.",
            |s| s.progress_load_errors,
        ),
        // Also LogStatus::dropped; exported from Stats, under the log's prefix.
        (
            "offset_guard_failed_log_dropped_total",
            "Records the failed-offset log refused and discarded (queue full while the disk fails, or closed).",
            |s| s.failed_log_dropped,
        ),
        (
            "offset_guard_consumer_errors_total",
            "Non-fatal consumer errors seen by the poll thread.",
            |s| s.consumer_errors,
        ),
        (
            "offset_guard_errors_surfaced_total",
            "Errors returned by recv() under the error policy.",
            |s| s.errors_surfaced,
        ),
    ];

    type LogGet = fn(&LogStatus) -> u64;

    /// The failed-offset log's status ([`LogStatus`]).
    pub(crate) const LOG_COUNTERS: &[(&str, &str, LogGet)] = &[
        (
            "offset_guard_failed_log_records_written_total",
            "Failure records written to the failed-offset log.",
            |s| s.records_written,
        ),
        (
            "offset_guard_failed_log_resolutions_written_total",
            "Resolution records written to the failed-offset log.",
            |s| s.resolutions_written,
        ),
        (
            "offset_guard_failed_log_write_errors_total",
            "Failed opens, writes, rotations or fsyncs of the failed-offset log.",
            |s| s.write_errors,
        ),
        (
            "offset_guard_failed_log_rotations_total",
            "Rotations of the failed-offset log.",
            |s| s.rotations,
        ),
    ];

    /// Per-partition gauges.
    pub(crate) const GAUGES: &[(&str, &str)] = &[
        (
            "offset_guard_committed_offset",
            "The offset this consumer last committed (the next record to read).",
        ),
        (
            "offset_guard_commit_point",
            "Where a commit would go now: every record before it is acked.",
        ),
        (
            "offset_guard_outstanding_records",
            "Delivered records not yet released by acks.",
        ),
        (
            "offset_guard_log_end_offset",
            "The partition's high watermark, as of the last fetch response.",
        ),
        (
            "offset_guard_lag_records",
            "Records between the committed offset and the log end.",
        ),
    ];

    struct PartitionGauges {
        committed: Gauge,
        commit_point: Gauge,
        outstanding: Gauge,
        log_end: Gauge,
        lag: Gauge,
    }

    /// The worker's metric handles.
    pub(crate) struct Telemetry {
        group: String,
        attempt: Histogram,
        landed: Histogram,
        counters: Vec<(Get, Counter)>,
        log: Vec<(LogGet, Counter)>,
        unwritten: Gauge,
        partitions: HashMap<TopicPartition, PartitionGauges>,
    }

    fn describe() {
        for (name, help, _) in COUNTERS {
            metrics::describe_counter!(*name, Unit::Count, *help);
        }
        for (name, help, _) in LOG_COUNTERS {
            metrics::describe_counter!(*name, Unit::Count, *help);
        }
        for (name, help) in GAUGES {
            metrics::describe_gauge!(*name, *help);
        }
        metrics::describe_gauge!(
            "offset_guard_failed_log_unwritten_records",
            Unit::Count,
            "Records accepted by the failed-offset log and not written yet."
        );
        metrics::describe_histogram!(
            "offset_guard_commit_attempt_duration_seconds",
            Unit::Seconds,
            "Duration of each OffsetCommit attempt."
        );
        metrics::describe_histogram!(
            "offset_guard_commit_duration_seconds",
            Unit::Seconds,
            "From the first attempt of a commit to the attempt that landed it."
        );
    }

    impl Telemetry {
        pub(crate) fn new(group: &str) -> Self {
            describe();
            let g = group.to_string();
            let counter = |name: &'static str| metrics::counter!(name, "group" => g.clone());
            Telemetry {
                attempt: metrics::histogram!("offset_guard_commit_attempt_duration_seconds", "group" => g.clone()),
                landed: metrics::histogram!("offset_guard_commit_duration_seconds", "group" => g.clone()),
                counters: COUNTERS
                    .iter()
                    .map(|(n, _, get)| (*get, counter(n)))
                    .collect(),
                log: LOG_COUNTERS
                    .iter()
                    .map(|(n, _, get)| (*get, counter(n)))
                    .collect(),
                unwritten: metrics::gauge!("offset_guard_failed_log_unwritten_records", "group" => g.clone()),
                partitions: HashMap::new(),
                group: g,
            }
        }

        pub(crate) fn enabled(&self) -> bool {
            true
        }

        /// One OffsetCommit attempt took `took`.
        pub(crate) fn attempt(&self, took: Duration) {
            self.attempt.record(took.as_secs_f64());
        }

        /// A commit landed `took` after its first attempt.
        pub(crate) fn landed(&self, took: Duration) {
            self.landed.record(took.as_secs_f64());
        }

        pub(crate) fn publish(
            &mut self,
            stats: &Stats,
            parts: &[PartitionFigures],
            log: Option<LogStatus>,
        ) {
            for (get, c) in &self.counters {
                c.absolute(get(stats));
            }
            if let Some(status) = log {
                for (get, c) in &self.log {
                    c.absolute(get(&status));
                }
                self.unwritten.set(status.unwritten as f64);
            }
            // Partitions no longer owned: their outstanding records and lag
            // are no longer this member's; report 0 once and stop updating
            // them (the facade cannot remove a series; exporters can expire
            // idle ones).
            self.partitions.retain(|tp, g| {
                let owned = parts.iter().any(|p| p.tp == *tp);
                if !owned {
                    g.outstanding.set(0.0);
                    g.lag.set(0.0);
                }
                owned
            });
            for p in parts {
                let group = &self.group;
                let g = self.partitions.entry(p.tp.clone()).or_insert_with(|| {
                    let labels = [
                        ("group", group.clone()),
                        ("topic", p.tp.topic.to_string()),
                        ("partition", p.tp.partition.to_string()),
                    ];
                    PartitionGauges {
                        committed: metrics::gauge!("offset_guard_committed_offset", &labels),
                        commit_point: metrics::gauge!("offset_guard_commit_point", &labels),
                        outstanding: metrics::gauge!("offset_guard_outstanding_records", &labels),
                        log_end: metrics::gauge!("offset_guard_log_end_offset", &labels),
                        lag: metrics::gauge!("offset_guard_lag_records", &labels),
                    }
                });
                let set = |gauge: &Gauge, v: Option<i64>| {
                    if let Some(v) = v {
                        gauge.set(v as f64);
                    }
                };
                set(&g.committed, p.committed);
                set(&g.commit_point, p.commit_point);
                g.outstanding.set(p.outstanding as f64);
                set(&g.log_end, p.log_end);
                set(&g.lag, p.lag());
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lag_needs_both_ends_and_is_never_negative() {
        assert_eq!(lag(Some(100), Some(40)), Some(60));
        assert_eq!(lag(Some(100), Some(100)), Some(0));
        assert_eq!(lag(Some(10), Some(40)), Some(0), "a stale watermark");
        assert_eq!(lag(None, Some(40)), None);
        assert_eq!(lag(Some(10), None), None);
    }
}
