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
use std::sync::mpsc::{Receiver, RecvTimeoutError, TryRecvError};
use std::time::Instant;

use tracing::{debug, warn};

use super::attempt::Mode;
use super::command::{
    AssignOutcome, Command, Committer, FinishJob, RevokeOutcome, Waiter, WorkerParts,
};
use super::idle::IdleRecommit;
use super::kept::Kept;
use super::queue::{CommitQueue, Entry};
use super::schedule::{Schedule, Step};
use super::view::CommitView;
use crate::assignment::{Assignment, Ring};
use crate::config::Config;
use crate::deadline::Deadline;
use crate::error::Error;
use crate::failures::FailureRecorder;
use crate::partition::TopicPartition;
use crate::stats::Metrics;
use crate::telemetry::{PUBLISH_EVERY, PartitionFigures, Telemetry};
use crate::threads::ExitGuard;

/// How often the stuck signal samples the partitions.
const STUCK_SAMPLE_EVERY: std::time::Duration = std::time::Duration::from_secs(1);

mod batch;
mod rebalance;

pub(super) struct Worker {
    /// First, so dropped first: once the worker is gone, commands fail at
    /// once (the committer's drop may close the consumer, whose rebalance
    /// callbacks then must not wait for an answer).
    mailbox: Receiver<Command>,
    config: Arc<Config>,
    committer: Arc<dyn Committer>,
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
    telemetry: Telemetry,
    /// When the metrics are published next (never without the `metrics` feature).
    next_publish: Deadline,
    /// When to sample for the stuck signal next.
    next_watch: Deadline,
    stuck: super::stuck::StuckWatch,
}

impl Worker {
    pub(in crate::commit) fn new(
        parts: WorkerParts,
        committer: Arc<dyn Committer>,
        mailbox: Receiver<Command>,
        view: Arc<CommitView>,
    ) -> Self {
        let now = Instant::now();
        let telemetry = Telemetry::new(&parts.config.group_id);
        let next_publish = if telemetry.enabled() {
            Deadline::at(now)
        } else {
            Deadline::NEVER
        };
        let next_watch = if parts.config.stuck_after.is_some() {
            Deadline::after(STUCK_SAMPLE_EVERY)
        } else {
            Deadline::NEVER
        };
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
            next_publish,
            next_watch,
            stuck: super::stuck::StuckWatch::default(),
            telemetry,
        }
    }

    /// Publishes the metrics (`metrics` feature): counters, per-partition
    /// gauges, the failed-offset log's status.
    pub(super) fn publish(&mut self) {
        if !self.telemetry.enabled() {
            return;
        }
        let parts: Vec<PartitionFigures> = self
            .assignment
            .all()
            .iter()
            .map(|s| {
                let v = s.view();
                PartitionFigures {
                    tp: s.tp.clone(),
                    committed: self.queue.committed_offset(&s.tp),
                    commit_point: v.commit_point,
                    outstanding: v.outstanding,
                    log_end: self.committer.log_end(&s.tp),
                }
            })
            .collect();
        let log = self.recorder.log().map(|l| l.status());
        self.telemetry.publish(&self.recorder.stats(), &parts, log);
        self.next_publish = Deadline::after(PUBLISH_EVERY);
    }

    /// Samples the first un-acked record of every partition: reports those
    /// un-acked for `stuck_after` (once each) and publishes the ages.
    fn watch_stuck(&mut self, now: Instant) {
        self.next_watch = Deadline::after(STUCK_SAMPLE_EVERY);
        let Some(after) = self.config.stuck_after else {
            return;
        };
        let sample: Vec<_> = self
            .assignment
            .all()
            .iter()
            // Records held back by the application's own pause are not stuck.
            .filter(|s| !s.is_user_paused())
            .map(|s| (s.tp.clone(), s.epoch, s.view().first_unacked))
            .collect();
        for s in self.stuck.observe(now, after, sample) {
            Metrics::inc(&self.metrics.records_stuck);
            warn!(group = %self.config.group_id, topic = %s.tp.topic, partition = s.tp.partition, offset = s.offset, age_ms = s.age.as_millis() as u64, "record un-acked for stuck_after or longer: the partition's commits wait for it");
        }
        self.view.set_unacked_since(self.stuck.since());
    }

    /// Serves the mailbox until the finish command is done. `exit` notes how
    /// the thread ended; as the first local it is dropped before the worker,
    /// so a death is visible before any waiter learns the worker is gone.
    pub(in crate::commit) fn run(mut self, exit: ExitGuard) {
        let _exit = exit;
        #[cfg(test)]
        if self.config.panic_in == Some(crate::threads::GuardThread::Commit) {
            panic!("injected: the commit thread dies");
        }
        self.load_replay();
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
            let now = Instant::now();
            if self.next_publish.is_past(now) {
                self.publish();
            }
            if self.next_watch.is_past(now) {
                self.watch_stuck(now);
            }
            let step = self.schedule.step(
                now,
                self.asked || !self.waiters.is_empty(),
                self.idle.due_at(),
            );
            match step {
                Step::Cycle => self.cycle(),
                Step::Wait(until) => {
                    self.receive(until.min(self.next_publish).min(self.next_watch))
                }
            }
        }
        self.close();
    }

    /// Reads the failed-offset log's unresolved offsets to replay
    /// (`replay_failed_offsets`), here on the commit thread so that `build()`
    /// does not wait for it; assigns are served after it.
    fn load_replay(&mut self) {
        if !self.config.replay_failed_offsets {
            return;
        }
        let Some(log) = self.config.failed_offset_log.as_ref() else {
            return;
        };
        for (tp, offset) in crate::failures::replay_entries(log, &self.config.group_id) {
            let e = self.replay.entry(tp).or_insert(offset);
            *e = (*e).max(offset);
        }
    }

    // ----- the mailbox -----

    /// Takes the commands that arrive until `until` (only those already queued
    /// once `until` is past). Those that only set state are absorbed at once;
    /// revokes, assigns and losts are stashed in order.
    pub(super) fn receive(&mut self, until: Deadline) {
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

    pub(super) fn absorb(&mut self, c: Command) {
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

    pub(super) fn serve(&mut self, c: Command) {
        match c {
            Command::Revoke(job) => self.revoke(job),
            Command::Assigned(job) => self.assigned(job),
            Command::Lost(job) => self.lost(job),
            Command::Restart(job) => self.restart(job),
            other => self.absorb(other),
        }
    }

    pub(super) fn revoke_waiting(&self) -> bool {
        self.stash.iter().any(|c| matches!(c, Command::Revoke(_)))
    }

    /// Shutdown gave up waiting for the final commit (and recorded what was
    /// not committed).
    pub(super) fn abandoned(&self) -> bool {
        self.finish.as_ref().is_some_and(|f| f.reply.abandoned())
    }

    /// Waits until `until` or until `done` holds, serving assigns and losts as
    /// they come. A batch that is not a revoke's yields to a revoke (and a
    /// normal batch to the finish): it goes back to the queue and `false` is
    /// returned.
    pub(super) fn pause(
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

    // ----- the end -----

    /// The final commit. A rebalance may be under way (a rolling restart stops
    /// members one after another): the poll thread still serves its callbacks,
    /// so revokes are committed here as they come, and offsets refused until
    /// the rebalance ends are committed once the assign settled them, all
    /// within the shutdown deadline.
    pub(super) fn finish(&mut self) {
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
            let Some(result) = self.commit_cycle(Mode::Final, deadline, true) else {
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
        self.publish();
        if let Some(job) = self.finish.take() {
            let _ = job.reply.send(());
        }
    }

    /// Kept offsets nobody resolved are recorded as given up.
    pub(super) fn record_unresolved_kept(&mut self) {
        let queue = &self.queue;
        for (tp, k) in self.kept.drain_ahead(|tp| queue.committed_offset(tp)) {
            warn!(group = %self.config.group_id, topic = %tp.topic, partition = tp.partition, offset = k.offset, "offset kept across a rebalance was never committed");
            self.record_kept(
                &tp,
                &k,
                "kept across a rebalance and never re-owned before the consumer stopped",
            );
        }
    }

    /// The worker stops: every command still queued gets its answer, and every
    /// assignment ends (late acks are stale).
    pub(super) fn close(&mut self) {
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
                Command::Ring(_) | Command::Restart(_) => {}
            }
        }
        for w in self.waiters.drain(..) {
            let _ = w.send(Err(Error::ShutDown));
        }
        self.assignment.revoke_all();
    }
}
