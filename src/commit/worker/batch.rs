//! Commit cycles: the batch, its attempts, and what follows each.

use std::sync::atomic::Ordering::Relaxed;
use std::time::{Instant, SystemTime};

use rdkafka::error::KafkaError;
use rdkafka::{Offset, TopicPartitionList};
use tracing::{debug, info, info_span, warn};

use super::Worker;
use crate::commit::attempt::{self, Attempt, Mode, Next};
use crate::commit::idle::IdleInput;
use crate::commit::kept::KeptOffset;
use crate::commit::queue::{Entry, Offer};
use crate::deadline::Deadline;
use crate::error::Error;
use crate::failure_log::Resolution;
use crate::partition::CommittedOffset;
use crate::retry::{ErrorClass, classify};
use crate::sink::FailureReason;
use crate::stats::Metrics;

/// A failed attempt, as [`Worker::follow`] needs it.
pub(super) struct FailedAttempt {
    err: KafkaError,
    class: ErrorClass,
    attempt: u32,
    mode: Mode,
    started: Instant,
}

/// How a batch ended.
pub(super) enum BatchEnd {
    Committed,
    Failed(Error),
    /// Refused until the rebalance ends (revoke) or by a stale generation:
    /// the offsets are to be kept to the next assign.
    Deferred(KafkaError),
    /// A revoke (or, for a normal commit, the finish) came first: the batch
    /// went back to the queue.
    Interrupted,
}

impl Worker {
    // ----- commit cycles -----

    pub(super) fn cycle(&mut self) {
        self.asked = false;
        let waiters = std::mem::take(&mut self.waiters);
        self.schedule.reset(Instant::now());
        // An explicit `commit_now` sends again an offset given up earlier
        // (not one refused for good); a periodic cycle does not, so a broker
        // that keeps failing does not record the same offset every interval.
        let explicit = !waiters.is_empty();
        match self.commit_cycle(Mode::Normal, Deadline::NEVER, explicit) {
            Some(result) => {
                self.publish();
                for w in waiters {
                    let _ = w.send(result.clone());
                }
                self.recommit_idle();
            }
            None => {
                // Interrupted: the next cycle (after the revoke) serves them.
                self.asked = true;
                self.waiters.extend(waiters);
            }
        }
    }

    pub(in crate::commit) fn bench_cycle(&mut self) -> usize {
        self.commit_cycle(Mode::Normal, Deadline::NEVER, false)
            .and_then(|r| r.ok())
            .map_or(0, |v| v.len())
    }

    /// Offers every owned partition's commit point and commits what moved;
    /// `explicit` (a `commit_now`) offers again offsets given up earlier.
    /// `None` if a revoke (or the finish) interrupted it.
    pub(super) fn commit_cycle(
        &mut self,
        mode: Mode,
        deadline: Deadline,
        explicit: bool,
    ) -> Option<Result<Vec<CommittedOffset>, Error>> {
        self.assignment.signal().reset();
        let force = explicit || mode == Mode::Final;
        for slot in self.assignment.all() {
            if let Some(cp) = slot.commit_point()
                && self.queue.offer(&slot.tp, slot.epoch, cp, force) == Offer::Stale
            {
                Metrics::inc(&self.metrics.offsets_stale_dropped);
            }
        }
        let assignment = &self.assignment;
        let (batch, stale) = self.queue.take(|tp, e| assignment.epoch(tp) == Some(e));
        self.metrics.offsets_stale_dropped.fetch_add(stale, Relaxed);
        if batch.is_empty() {
            return Some(Ok(Vec::new()));
        }
        let reason = FailureReason::ShutdownDeadline;
        match self.commit_batch(&batch, mode, deadline, reason) {
            BatchEnd::Committed => Some(Ok(batch.iter().map(Entry::committed).collect())),
            BatchEnd::Failed(e) => Some(Err(e)),
            BatchEnd::Deferred(e) => {
                self.keep(&batch, &e, true);
                Some(Err(Error::Kafka(e)))
            }
            BatchEnd::Interrupted => None,
        }
    }

    /// Commits one batch with the retry policy.
    pub(super) fn commit_batch(
        &mut self,
        batch: &[Entry],
        mode: Mode,
        deadline: Deadline,
        deadline_reason: FailureReason,
    ) -> BatchEnd {
        let span =
            info_span!("offset_commit", group = %self.config.group_id, partitions = batch.len());
        let _enter = span.enter();
        let mut batch = batch.to_vec();
        let mut retry = self.config.retry.start();
        let started = Instant::now();
        let mut unknown_partition_attempts = 0;
        let mut seen_rebalance = self.rebalance_gen;
        loop {
            if self.abandoned() {
                // shutdown gave up on this commit and recorded its offsets
                self.queue.failed(&batch, false);
                self.view.settled(&[]);
                return BatchEnd::Failed(Error::ShutDown);
            }
            let attempt_no = retry.attempt();
            let err = match self.send(&batch) {
                Ok(()) => {
                    self.telemetry.landed(started.elapsed());
                    self.landed(&batch);
                    return BatchEnd::Committed;
                }
                Err(e) => e,
            };
            let class = classify(&err);
            if class == ErrorClass::UnknownPartition {
                unknown_partition_attempts += 1;
            }
            let delay = attempt::backs_off(class, unknown_partition_attempts)
                .then(|| retry.next_delay())
                .flatten();
            let next = attempt::decide(&Attempt {
                class,
                mode,
                unknown_partition_attempts,
                delay,
                time_bound: retry.time_bound(),
                deadline,
                deadline_reason,
                now: Instant::now(),
            });
            if matches!(next, Next::AwaitRebalance(_)) {
                retry.forgive(); // a deferral is not an attempt against the budget
            }
            let failed = FailedAttempt {
                err,
                class,
                attempt: attempt_no,
                mode,
                started,
            };
            if let Some(end) = self.follow(next, failed, &batch, &mut seen_rebalance) {
                return end;
            }
            if mode != Mode::Revoke {
                batch = self.still_owned(batch);
                if batch.is_empty() {
                    self.view.settled(&[]);
                    return BatchEnd::Committed;
                }
            }
        }
    }

    /// Carries out what [`attempt::decide`] said. `None`: send the batch again.
    pub(super) fn follow(
        &mut self,
        next: Next,
        f: FailedAttempt,
        batch: &[Entry],
        seen_rebalance: &mut u64,
    ) -> Option<BatchEnd> {
        let (attempt, code, err) = (f.attempt, f.err.rdkafka_error_code(), &f.err);
        match next {
            Next::Done => {
                Metrics::inc(&self.metrics.commits_noop);
                debug!(attempt, "nothing to commit (_NO_OFFSET)");
                self.landed_quietly(batch);
                Some(BatchEnd::Committed)
            }
            Next::Keep => {
                if f.class == ErrorClass::Stale {
                    Metrics::inc(&self.metrics.commits_failed);
                    warn!(group = %self.config.group_id, attempt, error_code = ?code, error = %err, "commit rejected: stale generation; offsets kept until the rebalance ends");
                } else {
                    Metrics::inc(&self.metrics.commits_deferred);
                    debug!(
                        attempt,
                        "revoke commit refused with REBALANCE_IN_PROGRESS; offsets kept until the rebalance ends"
                    );
                }
                self.view.settled(&[]);
                Some(BatchEnd::Deferred(f.err))
            }
            Next::GiveUp(reason) => Some(self.give_up(batch, reason, err, attempt, f.started)),
            Next::RetryAt(at) => {
                Metrics::inc(&self.metrics.commits_retried);
                let delay_ms = at
                    .remaining(Instant::now())
                    .map_or(u64::MAX, |d| d.as_millis() as u64);
                warn!(group = %self.config.group_id, attempt, error_code = ?code, error = %err, delay_ms, "commit failed; retrying");
                (!self.pause(at, f.mode, batch, |_| false)).then_some(BatchEnd::Interrupted)
            }
            Next::AwaitRebalance(until) => {
                Metrics::inc(&self.metrics.commits_deferred);
                debug!(
                    attempt,
                    "commit refused while the group rebalances; waiting for the rebalance to end"
                );
                let seen = *seen_rebalance;
                let waited = self.pause(until, f.mode, batch, |w| w.rebalance_gen != seen);
                *seen_rebalance = self.rebalance_gen;
                (!waited).then_some(BatchEnd::Interrupted)
            }
        }
    }

    /// Between attempts: only partitions still owned in the same assignment
    /// are sent again (a revoke committed the others; lost ones never are).
    pub(super) fn still_owned(&mut self, batch: Vec<Entry>) -> Vec<Entry> {
        let (owned, gone): (Vec<Entry>, Vec<Entry>) = batch
            .into_iter()
            .partition(|e| self.assignment.epoch(&e.tp) == Some(e.epoch));
        if !gone.is_empty() {
            self.queue.failed(&gone, false);
            self.metrics
                .offsets_stale_dropped
                .fetch_add(gone.len() as u64, Relaxed);
            for e in &gone {
                debug!(topic = %e.tp.topic, partition = e.tp.partition, offset = e.offset, "offset not sent again: partition no longer owned");
            }
        }
        owned
    }

    pub(super) fn send(&mut self, batch: &[Entry]) -> rdkafka::error::KafkaResult<()> {
        let mut tpl = TopicPartitionList::with_capacity(batch.len());
        for e in batch {
            // Adding a partition of a valid topic name cannot fail.
            let _ = tpl.add_partition_offset(&e.tp.topic, e.tp.partition, Offset::Offset(e.offset));
        }
        self.view.sending(batch);
        Metrics::inc(&self.metrics.commits_sent);
        let t0 = Instant::now();
        let res = self.committer.commit(&tpl);
        self.metrics.record_latency(t0.elapsed());
        self.telemetry.attempt(t0.elapsed());
        res
    }

    pub(super) fn landed(&mut self, batch: &[Entry]) {
        Metrics::inc(&self.metrics.commits_succeeded);
        for e in batch {
            debug!(topic = %e.tp.topic, partition = e.tp.partition, offset = e.offset, "offset committed");
        }
        self.landed_quietly(batch);
        self.resolve_covered(batch);
    }

    pub(super) fn landed_quietly(&mut self, batch: &[Entry]) {
        self.queue.committed(batch);
        self.view.settled(batch);
    }

    /// A batch landed: appends to the log one resolution per partition for
    /// the failed offsets it covers, replayed from the log or given up in
    /// this run (`recommitted` when the commit is that very offset,
    /// `superseded` by the commit otherwise).
    pub(super) fn resolve_covered(&mut self, batch: &[Entry]) {
        for e in batch {
            let replayed = match self.replay_pending.get(&e.tp) {
                Some(&k) if k <= e.offset => self.replay_pending.remove(&e.tp),
                _ => None,
            };
            let failed = self.recorder.take_covered(&e.tp, e.offset);
            let Some(k) = replayed.max(failed) else {
                continue;
            };
            if replayed.is_some() {
                info!(topic = %e.tp.topic, partition = e.tp.partition, offset = k, committed = e.offset, "failed offset from the log committed again");
            } else {
                info!(topic = %e.tp.topic, partition = e.tp.partition, offset = k, committed = e.offset, "failed offsets covered by a later commit: resolved in the log");
            }
            let (g, t, p) = (
                self.config.group_id.clone(),
                e.tp.topic.to_string(),
                e.tp.partition,
            );
            self.recorder.resolve(if e.offset == k {
                Resolution::recommitted(g, t, p, k)
            } else {
                Resolution::superseded(g, t, p, k, e.offset)
            });
        }
    }

    pub(super) fn give_up(
        &mut self,
        batch: &[Entry],
        reason: FailureReason,
        err: &KafkaError,
        attempts: u32,
        started: Instant,
    ) -> BatchEnd {
        let code = err.rdkafka_error_code();
        if reason == FailureReason::Fatal {
            self.queue.failed_fatally(batch);
        } else {
            self.queue.failed(batch, false);
        }
        self.view.settled(&[]);
        Metrics::inc(&self.metrics.commits_failed);
        let elapsed = started.elapsed();
        // Once shutdown stopped waiting it records what is left itself.
        let shutdown_records = self.abandoned();
        for e in batch {
            warn!(group = %self.config.group_id, topic = %e.tp.topic, partition = e.tp.partition, offset = e.offset, attempts, error_code = ?code, reason = %reason, "giving up on offset commit");
            if shutdown_records {
                continue;
            }
            let mut f = self
                .recorder
                .failure(&e.tp, e.offset, reason, err.to_string());
            f.error_code = code;
            f.attempts = attempts;
            f.elapsed = elapsed;
            f.time = SystemTime::now();
            self.recorder.record(f);
        }
        BatchEnd::Failed(Error::CommitFailed { code, attempts })
    }

    /// Keeps refused offsets to the next assign. With `owned_only`, an offset
    /// whose assignment ended meanwhile (lost while the commit was in flight)
    /// is kept like a lost partition's offset: committed at the next assign
    /// only if the partition is assigned back (never while it is not ours),
    /// else recorded as `lost`. A revoke of the same assignment supersedes it
    /// ([`Kept::remove_covered`](crate::commit::kept::Kept::remove_covered)).
    pub(super) fn keep(&mut self, batch: &[Entry], err: &KafkaError, owned_only: bool) {
        self.queue.failed(batch, false);
        for e in batch {
            if owned_only && self.assignment.epoch(&e.tp) != Some(e.epoch) {
                debug!(topic = %e.tp.topic, partition = e.tp.partition, offset = e.offset, "refused offset of an assignment that ended meanwhile: kept as lost");
                let k = KeptOffset {
                    reason: FailureReason::Lost,
                    ..KeptOffset::refused(e.epoch, e.offset, err)
                };
                self.kept.keep(&e.tp, k);
                continue;
            }
            debug!(topic = %e.tp.topic, partition = e.tp.partition, offset = e.offset, error = %err, "offset kept until the rebalance ends");
            self.kept
                .keep(&e.tp, KeptOffset::refused(e.epoch, e.offset, err));
        }
        self.metrics
            .offsets_deferred
            .fetch_add(batch.len() as u64, Relaxed);
    }

    /// Re-sends unchanged offsets of idle partitions (one attempt).
    pub(super) fn recommit_idle(&mut self) {
        if !self.idle.is_on() {
            return;
        }
        let owned: Vec<IdleInput> = self
            .assignment
            .all()
            .iter()
            .map(|s| IdleInput {
                tp: s.tp.clone(),
                committed: self.queue.committed_offset(&s.tp),
                commit_point: s.commit_point(),
                settled: !self.queue.is_unsettled(&s.tp),
            })
            .collect();
        let due = self.idle.plan(Instant::now(), &owned);
        if due.is_empty() {
            return;
        }
        let entries: Vec<Entry> = due
            .iter()
            .map(|(tp, o)| Entry {
                tp: tp.clone(),
                epoch: 0,
                offset: *o,
            })
            .collect();
        let res = self.send(&entries);
        self.view.settled(&[]);
        match res {
            Ok(()) => {
                Metrics::inc(&self.metrics.commits_succeeded);
                self.metrics
                    .idle_recommits
                    .fetch_add(due.len() as u64, Relaxed);
                for (tp, offset) in &due {
                    debug!(topic = %tp.topic, partition = tp.partition, offset, "idle offset re-committed");
                }
            }
            // The offset is still committed on the broker: nothing is lost
            // now, so this is not a failed offset; it is tried again after
            // another period.
            Err(e) => {
                warn!(group = %self.config.group_id, partitions = due.len(), error_code = ?e.rdkafka_error_code(), error = %e, "re-commit of idle offsets failed; trying again after another period")
            }
        }
    }
}

impl Entry {
    pub(super) fn committed(&self) -> CommittedOffset {
        CommittedOffset::of(&self.tp, self.offset)
    }
}
