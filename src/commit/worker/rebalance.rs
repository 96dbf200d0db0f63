//! Rebalance commands: revoke (commit before hand-off), assign (settle kept
//! and replayed offsets), lost (record, never commit).

use std::sync::atomic::Ordering::Relaxed;
use std::time::Instant;

use tracing::{debug, info, info_span, warn};

use super::Worker;
use super::batch::BatchEnd;
use crate::commit::attempt::Mode;
use crate::commit::command::{
    AssignJob, AssignOutcome, LostJob, RestartJob, RevokeJob, RevokeOutcome,
};
use crate::commit::kept::{self, Candidate, KeptOffset, Source, Verdict};
use crate::commit::queue::{Entry, Offer};
use crate::deadline::Deadline;
use crate::deadline::kafka_timeout;
use crate::failure_log::Resolution;
use crate::partition::{CommittedOffset, DroppedOffset, TopicPartition};
use crate::sink::{FailedOffset, FailureReason};
use crate::stats::Metrics;

impl Worker {
    // ----- rebalance commands -----

    /// Commits a revoke's partitions synchronously, after waiting up to the
    /// grace period for acks of records already handed out.
    pub(super) fn revoke(&mut self, job: RevokeJob) {
        let span = info_span!("offset_revoke", group = %self.config.group_id, partitions = job.slots.len());
        let _enter = span.enter();
        let started = Instant::now();
        while !job.reply.abandoned() && !job.slots.iter().all(|s| s.drained()) {
            if job.grace.is_past(Instant::now()) {
                debug!(
                    "revoke grace period over with acks outstanding; committing what is contiguous"
                );
                break;
            }
            self.receive(job.grace);
        }
        let mut outcome = RevokeOutcome {
            waited: started.elapsed(),
            ..Default::default()
        };
        // From here on acks of these assignments are stale.
        let mut keys = Vec::with_capacity(job.slots.len());
        for s in &job.slots {
            let cp = self.assignment.revoke_slot(s);
            debug!(topic = %s.tp.topic, partition = s.tp.partition, epoch = s.epoch, commit_point = ?cp, committed = ?self.queue.committed_offset(&s.tp), "revoking");
            if let Some(cp) = cp {
                // The revoke settles what was kept of this assignment.
                self.kept.remove_covered(&s.tp, s.epoch, cp);
                if self.queue.offer(&s.tp, s.epoch, cp, true) == Offer::Stale {
                    Metrics::inc(&self.metrics.offsets_stale_dropped);
                }
            }
            keys.push((s.tp.clone(), s.epoch));
        }
        let batch = self.queue.take_only(&keys);
        if !batch.is_empty() {
            self.commit_revoked(&batch, &job, &mut outcome);
        }
        for (tp, _) in &keys {
            self.queue.forget(tp);
        }
        let _ = job.reply.send(outcome);
    }

    pub(super) fn commit_revoked(
        &mut self,
        batch: &[Entry],
        job: &RevokeJob,
        outcome: &mut RevokeOutcome,
    ) {
        let offsets = || batch.iter().map(Entry::committed).collect::<Vec<_>>();
        if job.reply.abandoned() {
            // The callback stopped waiting: the partitions may be someone
            // else's already. Nothing is sent; what was acked is recorded.
            self.queue.failed(batch, false);
            warn!(
                group = %self.config.group_id,
                partitions = batch.len(),
                "revoke timeout passed before the commit was sent"
            );
            for e in batch {
                let f = self.recorder.failure(
                    &e.tp,
                    e.offset,
                    FailureReason::RebalanceDropped,
                    "revoke timeout passed before the commit was sent",
                );
                self.recorder.record(f);
            }
            outcome.failed = offsets();
            return;
        }
        let reason = FailureReason::RebalanceDropped;
        match self.commit_batch(batch, Mode::Revoke, job.deadline, reason) {
            BatchEnd::Committed => {
                self.metrics
                    .offsets_revoke_committed
                    .fetch_add(batch.len() as u64, Relaxed);
                outcome.committed = offsets();
            }
            BatchEnd::Deferred(e) => {
                // The slots were ended by this revoke: keep regardless.
                self.keep(batch, &e, false);
                outcome.deferred = offsets();
            }
            BatchEnd::Failed(_) | BatchEnd::Interrupted => outcome.failed = offsets(),
        }
    }

    /// A rebalance ended: settles kept offsets and log entries to replay for
    /// the assigned partitions.
    pub(super) fn assigned(&mut self, job: AssignJob) {
        self.rebalance_gen += 1;
        for (tp, epoch, offset) in &job.replaced {
            if self.queue.committed_offset(tp) < Some(*offset) {
                let k = KeptOffset {
                    epoch: *epoch,
                    offset: *offset,
                    code: None,
                    message: "acked under a manual assignment that the group's assignment replaced"
                        .into(),
                    reason: FailureReason::RebalanceDropped,
                };
                self.kept.keep(tp, k);
            }
        }
        let assigned: Vec<(TopicPartition, u64)> =
            job.slots.iter().map(|s| (s.tp.clone(), s.epoch)).collect();
        let (assignment, queue) = (&self.assignment, &self.queue);
        let mut plan = kept::plan_assign(
            &mut self.kept,
            &mut self.replay,
            &assigned,
            |tp| assignment.epoch(tp),
            |tp| queue.committed_offset(tp),
        );
        kept::add_stored(&mut plan.back, &job.stored, &assigned);
        for (tp, epoch, offset) in &plan.reoffer {
            self.queue.offer(tp, *epoch, *offset, true);
            self.asked = true;
        }
        let mut out = AssignOutcome::default();
        for (tp, k, committed_before) in plan.dropped {
            Metrics::inc(&self.metrics.offsets_rebalance_dropped);
            debug!(topic = %tp.topic, partition = tp.partition, offset = k.offset, "kept offset dropped: the partition went to another member");
            let why = if k.reason == FailureReason::Lost {
                "the partition was not assigned back"
            } else {
                "commit refused during a rebalance; the partition was not assigned back"
            };
            self.record_kept(&tp, &k, why);
            out.dropped.push(DroppedOffset {
                topic: tp.topic.to_string(),
                partition: tp.partition,
                offset: k.offset,
                committed_before,
            });
        }
        if !plan.back.is_empty() {
            self.settle_back(plan.back, &mut out);
        }
        let _ = job.reply.send(out);
    }

    /// Reads the group's committed offsets of the candidates and commits each
    /// one that is ahead (never backwards).
    pub(super) fn settle_back(&mut self, back: Vec<Candidate>, out: &mut AssignOutcome) {
        let tps: Vec<TopicPartition> = back.iter().map(|c| c.tp.clone()).collect();
        let group = self
            .committer
            .committed(&tps, kafka_timeout(self.config.revoke_timeout));
        for (i, c) in back.into_iter().enumerate() {
            let g = match &group {
                Ok(v) => Ok(v.get(i).copied().flatten()),
                Err(_) => Err(()),
            };
            match kept::judge(&c, g) {
                Verdict::Commit => self.commit_at_assign(c, g.ok().flatten(), out),
                Verdict::Superseded { group } => {
                    if c.source == Source::Log {
                        info!(topic = %c.tp.topic, partition = c.tp.partition, offset = c.offset, group_offset = group, "failed offset from the log is not ahead of the group's: resolved as superseded");
                        self.recorder.resolve(Resolution::superseded(
                            self.config.group_id.clone(),
                            c.tp.topic.to_string(),
                            c.tp.partition,
                            c.offset,
                            group,
                        ));
                    } else {
                        debug!(topic = %c.tp.topic, partition = c.tp.partition, offset = c.offset, group_offset = group, source = ?c.source, "kept or stored offset not ahead of the group's committed offset");
                    }
                }
                Verdict::ReplayLater => {
                    warn!(group = %self.config.group_id, topic = %c.tp.topic, partition = c.tp.partition, offset = c.offset, "could not read the group's committed offset; the logged offset is tried again at the next assign");
                    self.replay.insert(c.tp, c.offset);
                }
                Verdict::GiveUp if c.source == Source::Stored => {
                    warn!(group = %self.config.group_id, topic = %c.tp.topic, partition = c.tp.partition, watermark = c.offset, "could not read the group's committed offset; the stored watermark is not committed now (records done are still skipped)");
                }
                Verdict::GiveUp => {
                    let e = group.as_ref().err();
                    warn!(group = %self.config.group_id, topic = %c.tp.topic, partition = c.tp.partition, offset = c.offset, error = ?e, "could not read the group's committed offset; kept offset not committed");
                    Metrics::inc(&self.metrics.offsets_rebalance_dropped);
                    let reason = match &c.source {
                        Source::Kept(k) => k.reason,
                        Source::Log | Source::Stored => FailureReason::RebalanceDropped,
                    };
                    let mut f = self.recorder.failure(
                        &c.tp,
                        c.offset,
                        reason,
                        format!("the group's committed offset could not be read to check the kept offset: {}", e.map_or(String::new(), |e| e.to_string())),
                    );
                    f.error_code = e.and_then(|e| e.rdkafka_error_code());
                    self.recorder.record(f);
                }
            }
        }
    }

    pub(super) fn commit_at_assign(
        &mut self,
        c: Candidate,
        group: Option<i64>,
        out: &mut AssignOutcome,
    ) {
        let offer = self.queue.offer(&c.tp, c.epoch, c.offset, true);
        if offer == Offer::Queued {
            out.start_at.push((c.tp.clone(), c.offset));
            self.asked = true;
        }
        let co = CommittedOffset::of(&c.tp, c.offset);
        match c.source {
            Source::Log => {
                // Resolved in the log once the commit lands.
                self.replay_pending.insert(c.tp.clone(), c.offset);
                self.asked = true;
                Metrics::inc(&self.metrics.offsets_replayed);
                info!(topic = %c.tp.topic, partition = c.tp.partition, offset = c.offset, group_offset = ?group, "failed offset from the log is ahead of the group's: committing it again; fetching starts there");
                out.replayed.push(co);
            }
            Source::Kept(_) if offer == Offer::Queued => {
                Metrics::inc(&self.metrics.offsets_resumed);
                debug!(topic = %c.tp.topic, partition = c.tp.partition, offset = c.offset, group_offset = ?group, "kept offset committed again; fetching starts there");
                out.resumed.push(co);
            }
            Source::Stored if offer == Offer::Queued => {
                debug!(topic = %c.tp.topic, partition = c.tp.partition, offset = c.offset, group_offset = ?group, "stored watermark ahead of the group's committed offset: committed; fetching starts there");
            }
            Source::Kept(_) | Source::Stored => {}
        }
    }

    /// A partition's read position jumped: the ended stretch's acked offset
    /// is committed now if ahead (never backwards), then, for a seek the
    /// application asked for, the new stretch's commits start afresh.
    pub(super) fn restart(&mut self, job: RestartJob) {
        if let Some((epoch, cp)) = job.old
            && self.queue.offer(&job.tp, epoch, cp, false) == Offer::Queued
        {
            let batch = self.queue.take_only(&[(job.tp.clone(), epoch)]);
            if !batch.is_empty() {
                let reason = FailureReason::RetriesExhausted;
                let end = self.commit_batch(&batch, Mode::Normal, Deadline::NEVER, reason);
                debug!(topic = %job.tp.topic, partition = job.tp.partition, offset = cp, committed = matches!(end, BatchEnd::Committed), "acked offset of the position left behind");
            }
        }
        if let Some(to) = job.rewind_to {
            self.queue.rewind(&job.tp, job.new_epoch, to);
        }
    }

    /// Partitions lost: nothing is committed for them now. What was acked
    /// (or kept) and not committed is kept to the next assign, like an offset
    /// refused during a rebalance: committed then if the partition is
    /// assigned back and it is still ahead of the group's committed offset,
    /// else recorded as `lost`.
    pub(super) fn lost(&mut self, job: LostJob) {
        let mut not_committed = Vec::new();
        for (slot, cp) in &job.ended {
            Metrics::inc(&self.metrics.partitions_lost);
            let tp = &slot.tp;
            let pending = self.queue.forget(tp);
            let kept = self.kept.remove(tp);
            let committed = self.queue.committed_offset(tp);
            let Some(offset) = (*cp)
                .max(pending)
                .max(kept.as_ref().map(|k| k.offset))
                .filter(|o| Some(*o) > committed)
            else {
                continue;
            };
            warn!(group = %self.config.group_id, topic = %tp.topic, partition = tp.partition, offset, "partition lost with acked offsets not committed; kept to the next assign");
            not_committed.push(CommittedOffset::of(tp, offset));
            let code = kept.and_then(|k| k.code);
            self.kept.keep(
                tp,
                KeptOffset {
                    epoch: slot.epoch,
                    offset,
                    code,
                    message: "partition lost before the offset was committed".into(),
                    reason: FailureReason::Lost,
                },
            );
        }
        let _ = job.reply.send(not_committed);
    }

    pub(super) fn record_kept(&self, tp: &TopicPartition, k: &KeptOffset, why: &str) {
        let mut f: FailedOffset = self.recorder.failure(
            tp,
            k.offset,
            k.reason,
            match k.reason {
                FailureReason::Lost => format!("{}; {why}", k.message),
                _ => format!("{why} (refused with: {})", k.message),
            },
        );
        f.error_code = k.code;
        self.recorder.record(f);
    }
}
