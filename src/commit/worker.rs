//! The one serialized committer.
//!
//! A single thread owns every OffsetCommit this consumer sends: at most one is
//! in flight, it is never cancelled, and whatever is acked meanwhile coalesces
//! into the next one. rdkafka's synchronous commit blocks its thread, so the
//! worker runs on a thread of its own, never on the async executor. It waits
//! for the next command or the next due time, and serves revokes before
//! anything else, also between the attempts of a batch.

use std::collections::{HashMap, VecDeque};
use std::sync::Arc;
use std::sync::atomic::Ordering::Relaxed;
use std::sync::mpsc::{Receiver, RecvTimeoutError, TryRecvError};
use std::time::{Instant, SystemTime};

use rdkafka::error::KafkaError;
use rdkafka::{Offset, TopicPartitionList};
use tracing::{debug, info, info_span, warn};

use super::attempt::{self, Attempt, Mode, Next};
use super::command::{
    AssignJob, AssignOutcome, Command, Committer, FinishJob, LostJob, RevokeJob, RevokeOutcome,
    Waiter, WorkerParts,
};
use super::idle::{IdleInput, IdleRecommit};
use super::kept::{self, Candidate, Kept, KeptOffset, Source, Verdict};
use super::queue::{CommitQueue, Entry, Offer};
use super::schedule::{Schedule, Step};
use super::view::CommitView;
use crate::assignment::{Assignment, Ring};
use crate::config::Config;
use crate::deadline::{Deadline, kafka_timeout};
use crate::error::Error;
use crate::failure_log::Resolution;
use crate::failures::FailureRecorder;
use crate::partition::{CommittedOffset, DroppedOffset, TopicPartition};
use crate::retry::{ErrorClass, classify};
use crate::sink::{FailedOffset, FailureReason};
use crate::stats::Metrics;
use crate::threads::ExitGuard;

/// A failed attempt, as [`Worker::follow`] needs it.
struct FailedAttempt {
    err: KafkaError,
    class: ErrorClass,
    attempt: u32,
    mode: Mode,
    started: Instant,
}

/// How a batch ended.
enum BatchEnd {
    Committed,
    Failed(Error),
    /// Refused until the rebalance ends (revoke) or by a stale generation:
    /// the offsets are to be kept to the next assign.
    Deferred(KafkaError),
    /// A revoke (or, for a normal commit, the finish) came first: the batch
    /// went back to the queue.
    Interrupted,
}

pub(super) struct Worker {
    config: Arc<Config>,
    committer: Arc<dyn Committer>,
    mailbox: Receiver<Command>,
    assignment: Arc<Assignment>,
    recorder: Arc<FailureRecorder>,
    metrics: Arc<Metrics>,
    view: Arc<CommitView>,
    queue: CommitQueue,
    kept: Kept,
    replay: HashMap<TopicPartition, i64>,
    /// Replayed offsets whose commit is queued: resolved in the log once it lands.
    replay_pending: HashMap<TopicPartition, i64>,
    schedule: Schedule,
    idle: IdleRecommit,
    /// Revokes, assigns and losts, in arrival order, waiting their turn.
    stash: VecDeque<Command>,
    /// A cycle was asked for.
    asked: bool,
    waiters: Vec<Waiter>,
    finish: Option<FinishJob>,
    /// Bumped at every assign (a rebalance ended).
    rebalance_gen: u64,
}

impl Worker {
    pub(super) fn new(
        parts: WorkerParts,
        committer: Arc<dyn Committer>,
        mailbox: Receiver<Command>,
        view: Arc<CommitView>,
    ) -> Self {
        let now = Instant::now();
        Worker {
            schedule: Schedule::new(parts.config.commit_interval, now),
            idle: IdleRecommit::new(parts.config.recommit_idle_every),
            config: parts.config,
            committer,
            mailbox,
            assignment: parts.assignment,
            recorder: parts.recorder,
            metrics: parts.metrics,
            view,
            queue: CommitQueue::default(),
            kept: Kept::default(),
            replay: parts.replay,
            replay_pending: HashMap::new(),
            stash: VecDeque::new(),
            asked: false,
            waiters: Vec::new(),
            finish: None,
            rebalance_gen: 0,
        }
    }

    /// Serves the mailbox until the finish command is done. `exit` notes how
    /// the thread ended; as the first local it is dropped before the worker,
    /// so a death is visible before any waiter learns the worker is gone.
    pub(super) fn run(mut self, exit: ExitGuard) {
        let _exit = exit;
        #[cfg(test)]
        if self.config.panic_in == Some(crate::threads::GuardThread::Commit) {
            panic!("injected: the commit thread dies");
        }
        loop {
            self.receive(Deadline::at(Instant::now()));
            if let Some(c) = self.stash.pop_front() {
                self.serve(c);
                continue;
            }
            if self.finish.is_some() {
                self.finish();
                break;
            }
            let step = self.schedule.step(
                Instant::now(),
                self.asked || !self.waiters.is_empty(),
                self.idle.due_at(),
            );
            match step {
                Step::Cycle => self.cycle(),
                Step::Wait(until) => self.receive(until),
            }
        }
        self.close();
    }

    // ----- the mailbox -----

    /// Takes the commands that arrive until `until` (only those already queued
    /// once `until` is past). Those that only set state are absorbed at once;
    /// revokes, assigns and losts are stashed in order.
    fn receive(&mut self, until: Deadline) {
        let first = match until.remaining(Instant::now()) {
            Some(d) if d.is_zero() => self.mailbox.try_recv().map_err(|e| match e {
                TryRecvError::Empty => RecvTimeoutError::Timeout,
                TryRecvError::Disconnected => RecvTimeoutError::Disconnected,
            }),
            Some(d) => self.mailbox.recv_timeout(d),
            None => self
                .mailbox
                .recv()
                .map_err(|_| RecvTimeoutError::Disconnected),
        };
        match first {
            Ok(c) => self.absorb(c),
            Err(RecvTimeoutError::Timeout) => return,
            Err(RecvTimeoutError::Disconnected) => {
                // Every handle is gone: finish on our own.
                if self.finish.is_none() {
                    self.finish = Some(FinishJob {
                        deadline: Deadline::after(self.config.shutdown_timeout),
                        reply: super::command::Reply::detached(),
                    });
                }
                return;
            }
        }
        while let Ok(c) = self.mailbox.try_recv() {
            self.absorb(c);
        }
    }

    fn absorb(&mut self, c: Command) {
        match c {
            Command::CommitNow(w) => self.waiters.push(w),
            Command::Ring(Ring::CommitDue) => self.asked = true,
            Command::Ring(Ring::Acked) => {}
            Command::Finish(job) => match self.finish {
                None => self.finish = Some(job),
                Some(_) => {
                    let _ = job.reply.send(());
                }
            },
            other => self.stash.push_back(other),
        }
    }

    fn serve(&mut self, c: Command) {
        match c {
            Command::Revoke(job) => self.revoke(job),
            Command::Assigned(job) => self.assigned(job),
            Command::Lost(job) => self.lost(job),
            other => self.absorb(other),
        }
    }

    fn revoke_waiting(&self) -> bool {
        self.stash.iter().any(|c| matches!(c, Command::Revoke(_)))
    }

    /// Shutdown gave up waiting for the final commit (and recorded what was
    /// not committed).
    fn abandoned(&self) -> bool {
        self.finish.as_ref().is_some_and(|f| f.reply.abandoned())
    }

    /// Waits until `until` or until `done` holds, serving assigns and losts as
    /// they come. A batch that is not a revoke's yields to a revoke (and a
    /// normal batch to the finish): it goes back to the queue and `false` is
    /// returned.
    fn pause(
        &mut self,
        until: Deadline,
        mode: Mode,
        batch: &[Entry],
        done: impl Fn(&Self) -> bool,
    ) -> bool {
        loop {
            while let Some(c) = self.stash.pop_front() {
                if matches!(c, Command::Revoke(_)) {
                    self.stash.push_front(c);
                    break;
                }
                self.serve(c);
            }
            let yields = match mode {
                Mode::Revoke => false,
                Mode::Final => self.revoke_waiting(),
                Mode::Normal => self.revoke_waiting() || self.finish.is_some(),
            };
            if yields {
                self.queue.failed(batch, true);
                self.view.settled(&[]);
                return false;
            }
            if done(self) || self.abandoned() || until.is_past(Instant::now()) {
                return true;
            }
            self.receive(until);
        }
    }

    // ----- commit cycles -----

    fn cycle(&mut self) {
        self.asked = false;
        let waiters = std::mem::take(&mut self.waiters);
        self.schedule.reset(Instant::now());
        match self.commit_cycle(Mode::Normal, Deadline::NEVER) {
            Some(result) => {
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

    pub(super) fn bench_cycle(&mut self) -> usize {
        self.commit_cycle(Mode::Normal, Deadline::NEVER)
            .and_then(|r| r.ok())
            .map_or(0, |v| v.len())
    }

    /// Offers every owned partition's commit point and commits what moved.
    /// `None` if a revoke (or the finish) interrupted it.
    fn commit_cycle(
        &mut self,
        mode: Mode,
        deadline: Deadline,
    ) -> Option<Result<Vec<CommittedOffset>, Error>> {
        self.assignment.signal().reset();
        let force = mode == Mode::Final;
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
    fn commit_batch(
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
    fn follow(
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
                    warn!(attempt, error_code = ?code, error = %err, "commit rejected: stale generation; offsets kept until the rebalance ends");
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
                warn!(attempt, error_code = ?code, error = %err, delay_ms, "commit failed; retrying");
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
    fn still_owned(&mut self, batch: Vec<Entry>) -> Vec<Entry> {
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

    fn send(&mut self, batch: &[Entry]) -> rdkafka::error::KafkaResult<()> {
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
        res
    }

    fn landed(&mut self, batch: &[Entry]) {
        Metrics::inc(&self.metrics.commits_succeeded);
        for e in batch {
            debug!(topic = %e.tp.topic, partition = e.tp.partition, offset = e.offset, "offset committed");
        }
        self.landed_quietly(batch);
        self.resolve_replayed(batch);
    }

    fn landed_quietly(&mut self, batch: &[Entry]) {
        self.queue.committed(batch);
        self.view.settled(batch);
    }

    /// A batch landed: resolves in the log the replayed offsets it covers.
    fn resolve_replayed(&mut self, batch: &[Entry]) {
        if self.replay_pending.is_empty() {
            return;
        }
        for e in batch {
            let Some(&k) = self.replay_pending.get(&e.tp) else {
                continue;
            };
            if e.offset < k {
                continue;
            }
            self.replay_pending.remove(&e.tp);
            info!(topic = %e.tp.topic, partition = e.tp.partition, offset = k, committed = e.offset, "failed offset from the log committed again");
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

    fn give_up(
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
            warn!(topic = %e.tp.topic, partition = e.tp.partition, offset = e.offset, attempts, error_code = ?code, reason = %reason, "giving up on offset commit");
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
    /// whose assignment ended meanwhile (lost) is not kept: lost partitions are
    /// never committed.
    fn keep(&mut self, batch: &[Entry], err: &KafkaError, owned_only: bool) {
        self.queue.failed(batch, false);
        for e in batch {
            if owned_only && self.assignment.epoch(&e.tp) != Some(e.epoch) {
                Metrics::inc(&self.metrics.offsets_stale_dropped);
                debug!(topic = %e.tp.topic, partition = e.tp.partition, offset = e.offset, "refused offset not kept: its assignment ended");
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
    fn recommit_idle(&mut self) {
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
                warn!(partitions = due.len(), error_code = ?e.rdkafka_error_code(), error = %e, "re-commit of idle offsets failed; trying again after another period")
            }
        }
    }

    // ----- rebalance commands -----

    /// Commits a revoke's partitions synchronously, after waiting up to the
    /// grace period for acks of records already handed out.
    fn revoke(&mut self, job: RevokeJob) {
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
            if let Some(cp) = cp
                && self.queue.offer(&s.tp, s.epoch, cp, true) == Offer::Stale
            {
                Metrics::inc(&self.metrics.offsets_stale_dropped);
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

    fn commit_revoked(&mut self, batch: &[Entry], job: &RevokeJob, outcome: &mut RevokeOutcome) {
        let offsets = || batch.iter().map(Entry::committed).collect::<Vec<_>>();
        if job.reply.abandoned() {
            // The callback stopped waiting: the partitions may be someone
            // else's already. Nothing is sent; what was acked is recorded.
            self.queue.failed(batch, false);
            warn!(
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
    fn assigned(&mut self, job: AssignJob) {
        self.rebalance_gen += 1;
        let assigned: Vec<(TopicPartition, u64)> =
            job.slots.iter().map(|s| (s.tp.clone(), s.epoch)).collect();
        let (assignment, queue) = (&self.assignment, &self.queue);
        let plan = kept::plan_assign(
            &mut self.kept,
            &mut self.replay,
            &assigned,
            |tp| assignment.epoch(tp),
            |tp| queue.committed_offset(tp),
        );
        for (tp, epoch, offset) in &plan.reoffer {
            self.queue.offer(tp, *epoch, *offset, true);
            self.asked = true;
        }
        let mut out = AssignOutcome::default();
        for (tp, k, committed_before) in plan.dropped {
            Metrics::inc(&self.metrics.offsets_rebalance_dropped);
            debug!(topic = %tp.topic, partition = tp.partition, offset = k.offset, "kept offset dropped: the partition went to another member");
            self.record_kept(
                &tp,
                &k,
                "commit refused during a rebalance; the partition was not assigned back",
            );
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
    fn settle_back(&mut self, back: Vec<Candidate>, out: &mut AssignOutcome) {
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
                        debug!(topic = %c.tp.topic, partition = c.tp.partition, offset = c.offset, group_offset = group, "kept offset superseded by the group's committed offset");
                    }
                }
                Verdict::ReplayLater => {
                    warn!(topic = %c.tp.topic, partition = c.tp.partition, offset = c.offset, "could not read the group's committed offset; the logged offset is tried again at the next assign");
                    self.replay.insert(c.tp, c.offset);
                }
                Verdict::GiveUp => {
                    let e = group.as_ref().err();
                    warn!(topic = %c.tp.topic, partition = c.tp.partition, offset = c.offset, error = ?e, "could not read the group's committed offset; kept offset not committed");
                    Metrics::inc(&self.metrics.offsets_rebalance_dropped);
                    let mut f = self.recorder.failure(
                        &c.tp,
                        c.offset,
                        FailureReason::RebalanceDropped,
                        format!("the group's committed offset could not be read to check the kept offset: {}", e.map_or(String::new(), |e| e.to_string())),
                    );
                    f.error_code = e.and_then(|e| e.rdkafka_error_code());
                    self.recorder.record(f);
                }
            }
        }
    }

    fn commit_at_assign(&mut self, c: Candidate, group: Option<i64>, out: &mut AssignOutcome) {
        let offer = self.queue.offer(&c.tp, c.epoch, c.offset, true);
        if offer == Offer::Queued {
            out.start_at.push((c.tp.clone(), c.offset));
            self.asked = true;
        }
        let co = CommittedOffset::new(&c.tp, c.offset);
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
            Source::Kept(_) => {}
        }
    }

    /// Partitions lost: nothing is committed for them; what was acked (or
    /// kept) and not committed is recorded as `lost`.
    fn lost(&mut self, job: LostJob) {
        let mut not_committed = Vec::new();
        for (slot, cp) in &job.ended {
            Metrics::inc(&self.metrics.partitions_lost);
            let tp = &slot.tp;
            let pending = self.queue.forget(tp);
            let kept = self.kept.remove(tp).map(|k| k.offset);
            let committed = self.queue.committed_offset(tp);
            let Some(offset) = (*cp)
                .max(pending)
                .max(kept)
                .filter(|o| Some(*o) > committed)
            else {
                continue;
            };
            warn!(topic = %tp.topic, partition = tp.partition, offset, "partition lost with acked offsets not committed");
            not_committed.push(CommittedOffset::new(tp, offset));
            let f = self.recorder.failure(
                tp,
                offset,
                FailureReason::Lost,
                "partition lost before the offset was committed",
            );
            self.recorder.record(f);
        }
        let _ = job.reply.send(not_committed);
    }

    fn record_kept(&self, tp: &TopicPartition, k: &KeptOffset, why: &str) {
        let mut f: FailedOffset = self.recorder.failure(
            tp,
            k.offset,
            FailureReason::RebalanceDropped,
            format!("{why} (refused with: {})", k.message),
        );
        f.error_code = k.code;
        self.recorder.record(f);
    }

    // ----- the end -----

    /// The final commit. A rebalance may be under way (a rolling restart stops
    /// members one after another): the poll thread still serves its callbacks,
    /// so revokes are committed here as they come, and offsets refused until
    /// the rebalance ends are committed once the assign settled them, all
    /// within the shutdown deadline.
    fn finish(&mut self) {
        let deadline = self.finish.as_ref().map_or(Deadline::NEVER, |f| f.deadline);
        loop {
            self.receive(Deadline::at(Instant::now()));
            if let Some(c) = self.stash.pop_front() {
                self.serve(c);
                continue;
            }
            if self.abandoned() {
                break;
            }
            let seen = self.rebalance_gen;
            let waiters = std::mem::take(&mut self.waiters);
            let Some(result) = self.commit_cycle(Mode::Final, deadline) else {
                self.waiters.extend(waiters);
                continue; // a revoke came first
            };
            for w in waiters {
                let _ = w.send(result.clone());
            }
            let queue = &self.queue;
            let waiting = self.kept.any_ahead(|tp| queue.committed_offset(tp));
            if !waiting || deadline.is_past(Instant::now()) || self.abandoned() {
                break;
            }
            debug!("final commit waits for the rebalance under way to end");
            // A rebalance ends with the assign after its revokes: waiting
            // longer than a revoke may take is pointless.
            let until = deadline.min(Deadline::after(self.config.revoke_timeout));
            let _ = self.pause(until, Mode::Revoke, &[], |w| {
                w.rebalance_gen != seen || w.revoke_waiting()
            });
            if until.is_past(Instant::now()) && self.rebalance_gen == seen {
                break;
            }
        }
        self.record_unresolved_kept();
        if let Some(job) = self.finish.take() {
            let _ = job.reply.send(());
        }
    }

    /// Kept offsets nobody resolved are recorded as given up.
    fn record_unresolved_kept(&mut self) {
        let queue = &self.queue;
        for (tp, k) in self.kept.drain_ahead(|tp| queue.committed_offset(tp)) {
            warn!(topic = %tp.topic, partition = tp.partition, offset = k.offset, "offset kept across a rebalance was never committed");
            self.record_kept(
                &tp,
                &k,
                "kept across a rebalance and never re-owned before the consumer stopped",
            );
        }
    }

    /// The worker stops: every command still queued gets its answer, and every
    /// assignment ends (late acks are stale).
    fn close(&mut self) {
        while let Ok(c) = self.mailbox.try_recv() {
            self.stash.push_back(c);
        }
        for c in std::mem::take(&mut self.stash) {
            match c {
                Command::CommitNow(w) => {
                    let _ = w.send(Err(Error::ShutDown));
                }
                Command::Revoke(job) => {
                    for s in &job.slots {
                        self.assignment.revoke_slot(s);
                    }
                    let _ = job.reply.send(RevokeOutcome::default());
                }
                Command::Assigned(job) => {
                    let _ = job.reply.send(AssignOutcome::default());
                }
                Command::Lost(job) => self.lost(job),
                Command::Finish(job) => {
                    let _ = job.reply.send(());
                }
                Command::Ring(_) => {}
            }
        }
        for w in self.waiters.drain(..) {
            let _ = w.send(Err(Error::ShutDown));
        }
        self.assignment.revoke_all();
    }
}

impl Entry {
    fn committed(&self) -> CommittedOffset {
        CommittedOffset::new(&self.tp, self.offset)
    }
}
