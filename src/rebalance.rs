//! The `ConsumerContext` the guard installs, and what it does at each rebalance.
//!
//! - **Assign**: every assigned partition starts a new epoch; acks and queued
//!   offsets of an earlier assignment of the same partition are stale. Offsets
//!   kept from the rebalance that just ended (see revoke) are committed if the
//!   partition came back and they are ahead of the group's committed offset;
//!   fetching then starts there, so those records are not delivered again.
//! - **Revoke** (eager `range`/`roundrobin`, and the revoked subset under
//!   `cooperative-sticky`): the callback hands the revoked partitions to the
//!   guard's one commit worker and waits. The worker waits up to
//!   [`revoke_grace`](crate::GuardBuilder::revoke_grace) for acks of records
//!   already handed to the application, then ends the assignment (later acks
//!   are stale), commits each partition's contiguous acked offset
//!   synchronously (retried within
//!   [`revoke_timeout`](crate::GuardBuilder::revoke_timeout)), and forgets the
//!   partitions. Records fetched but not yet handed out are not handed out.
//!   Under cooperative rebalancing the other partitions keep flowing.
//! - **REBALANCE_IN_PROGRESS** on a revoke's commit (MockCluster answers an
//!   eager revoke's commit so; a real broker usually accepts it): never retried
//!   inside the callback. The offsets are kept; at the assign that ends the
//!   rebalance they are committed for partitions assigned back to this member
//!   (when ahead of the group's committed offset) and dropped for the rest
//!   (counted in [`Stats::offsets_rebalance_dropped`](crate::Stats), recorded
//!   with reason `rebalance_dropped`). A stale generation
//!   (ILLEGAL_GENERATION, UNKNOWN_MEMBER_ID) on any commit is handled the same way.
//! - **Lost** (`assignment_lost()`: session timeout, max.poll exceeded, fenced):
//!   nothing is committed; acked offsets not committed go to the failure sink
//!   with reason `lost`; later acks of those assignments are stale.
//!
//! User hooks ([`GuardBuilder::on_assign`](crate::GuardBuilder::on_assign),
//! [`on_revoke`](crate::GuardBuilder::on_revoke),
//! [`on_lost`](crate::GuardBuilder::on_lost)) run in the rebalance callback,
//! after the guard's own work; keep them short.

use std::fmt;
use std::sync::Arc;
use std::time::{Duration, Instant};

use rdkafka::client::{ClientContext, OAuthToken};
use rdkafka::config::RDKafkaLogLevel;
use rdkafka::consumer::{BaseConsumer, Consumer, ConsumerContext, RebalanceProtocol};
use rdkafka::error::{KafkaError, KafkaResult};
use rdkafka::types::RDKafkaRespErr;
use rdkafka::util::Timeout;
use rdkafka::{Offset, Statistics, TopicPartitionList};
use tracing::{debug, error, info, info_span, warn};

use crate::assignment::PartitionSlot;
use crate::commit::queue::Offer;
use crate::commit::worker::{Carried, CommittedOffset, RevokeJob, RevokeOutcome};
use crate::consumer::Inner;
use crate::failure_log::Resolution;
use crate::sink::{FailedOffset, FailureReason};
use crate::stats::Metrics;

/// Partitions assigned to this consumer (hook argument of
/// [`GuardBuilder::on_assign`](crate::GuardBuilder::on_assign)).
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct Assigned {
    /// The partitions of this assign (under cooperative-sticky: the ones added).
    pub partitions: Vec<(String, i32)>,
    /// Offsets kept from the rebalance that just ended and committed now,
    /// because the partition came back and they were ahead of the group's
    /// committed offset; fetching starts at them.
    pub resumed: Vec<CommittedOffset>,
    /// Unresolved offsets of the failed-offset log (with
    /// [`replay_failed_offsets`](crate::GuardBuilder::replay_failed_offsets))
    /// that were ahead of the group's committed offset, so are committed again
    /// now; fetching starts at them.
    pub replayed: Vec<CommittedOffset>,
    /// Offsets kept from the rebalance that just ended whose partition went to
    /// another member: never committed (also in the failure sink, reason
    /// `rebalance_dropped`). The new owner processes again the records from
    /// `committed_before` up to `offset`.
    pub dropped: Vec<DroppedOffset>,
    /// The group uses the cooperative (incremental) protocol.
    pub cooperative: bool,
}

/// A kept offset dropped at an assign (see [`Assigned::dropped`]).
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct DroppedOffset {
    /// Topic.
    pub topic: String,
    /// Partition.
    pub partition: i32,
    /// The acked offset whose commit the broker refused.
    pub offset: i64,
    /// The last offset this consumer committed for the partition, if any.
    pub committed_before: Option<i64>,
}

/// Partitions revoked from this consumer, after the guard's commit (hook
/// argument of [`GuardBuilder::on_revoke`](crate::GuardBuilder::on_revoke)).
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct Revoked {
    /// The revoked partitions.
    pub partitions: Vec<(String, i32)>,
    /// Offsets committed before hand-off.
    pub committed: Vec<CommittedOffset>,
    /// Offsets whose commit the broker refused until the rebalance ends; kept
    /// and committed at the next assign if the partition comes back.
    pub deferred: Vec<CommittedOffset>,
    /// Offsets given up on (in the failure sink).
    pub failed: Vec<CommittedOffset>,
    /// The group uses the cooperative (incremental) protocol.
    pub cooperative: bool,
    /// Time the guard spent in the revoke (grace period and commit).
    pub elapsed: Duration,
}

/// Partitions lost by this consumer (hook argument of
/// [`GuardBuilder::on_lost`](crate::GuardBuilder::on_lost)). Nothing was committed.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct Lost {
    /// The lost partitions.
    pub partitions: Vec<(String, i32)>,
    /// Acked offsets that were not committed (also in the failure sink, reason `lost`).
    pub not_committed: Vec<CommittedOffset>,
}

type Hook<T> = Box<dyn Fn(&T) + Send + Sync>;

/// The user's rebalance hooks.
#[derive(Default)]
pub(crate) struct Hooks {
    pub on_assign: Option<Hook<Assigned>>,
    pub on_revoke: Option<Hook<Revoked>>,
    pub on_lost: Option<Hook<Lost>>,
}

impl fmt::Debug for Hooks {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Hooks")
            .field("on_assign", &self.on_assign.is_some())
            .field("on_revoke", &self.on_revoke.is_some())
            .field("on_lost", &self.on_lost.is_some())
            .finish()
    }
}

/// The guard's consumer context, wrapping the user's context `C`.
///
/// Every `ClientContext` callback (logging, statistics, errors, OAuth) and the
/// consumer's `commit_callback` and `main_queue_min_poll_interval` go to `C`
/// unchanged. The rebalance callback is the guard's own (see the
/// [module docs](self)). rdkafka's `pre_rebalance` / `post_rebalance` of `C`
/// take a `&BaseConsumer<C>`, which the guard's consumer (a
/// `BaseConsumer<GuardContext<C>>`) is not, so they cannot be called: move that
/// logic to [`GuardBuilder::on_assign`](crate::GuardBuilder::on_assign) /
/// [`on_revoke`](crate::GuardBuilder::on_revoke) /
/// [`on_lost`](crate::GuardBuilder::on_lost), which also say what was committed.
pub struct GuardContext<C> {
    user: C,
    pub(crate) inner: Arc<Inner>,
    hooks: Hooks,
}

impl<C> GuardContext<C> {
    pub(crate) fn new(user: C, inner: Arc<Inner>, hooks: Hooks) -> Self {
        GuardContext { user, inner, hooks }
    }

    /// The wrapped user context.
    pub fn user_context(&self) -> &C {
        &self.user
    }
}

impl<C: ClientContext> ClientContext for GuardContext<C> {
    const ENABLE_REFRESH_OAUTH_TOKEN: bool = C::ENABLE_REFRESH_OAUTH_TOKEN;

    fn log(&self, level: RDKafkaLogLevel, fac: &str, log_message: &str) {
        self.user.log(level, fac, log_message)
    }

    fn stats(&self, statistics: Statistics) {
        self.user.stats(statistics)
    }

    fn stats_raw(&self, statistics: &[u8]) {
        self.user.stats_raw(statistics)
    }

    fn error(&self, error: KafkaError, reason: &str) {
        self.user.error(error, reason)
    }

    fn generate_oauth_token(
        &self,
        oauthbearer_config: Option<&str>,
    ) -> Result<OAuthToken, Box<dyn std::error::Error>> {
        self.user.generate_oauth_token(oauthbearer_config)
    }
}

impl<C: ConsumerContext> ConsumerContext for GuardContext<C> {
    fn rebalance(
        &self,
        base_consumer: &BaseConsumer<Self>,
        err: RDKafkaRespErr,
        tpl: &mut TopicPartitionList,
    ) {
        let cooperative = matches!(
            base_consumer.rebalance_protocol(),
            RebalanceProtocol::Cooperative
        );
        match err {
            RDKafkaRespErr::RD_KAFKA_RESP_ERR__ASSIGN_PARTITIONS => {
                self.on_assign(base_consumer, tpl, cooperative)
            }
            RDKafkaRespErr::RD_KAFKA_RESP_ERR__REVOKE_PARTITIONS => {
                if base_consumer.assignment_lost() {
                    self.on_lost(tpl);
                } else {
                    self.on_revoke(tpl, cooperative);
                }
                let res = if cooperative {
                    base_consumer.incremental_unassign(tpl)
                } else {
                    base_consumer.unassign()
                };
                log_result("unassign", res);
            }
            other => {
                let code: rdkafka::error::RDKafkaErrorCode = other.into();
                error!(error_code = ?code, "rebalance error");
                let _ = base_consumer.unassign();
            }
        }
    }

    fn commit_callback(&self, result: KafkaResult<()>, offsets: &TopicPartitionList) {
        self.user.commit_callback(result, offsets)
    }

    fn main_queue_min_poll_interval(&self) -> Timeout {
        self.user.main_queue_min_poll_interval()
    }
}

impl<C: ConsumerContext> GuardContext<C> {
    fn on_assign(
        &self,
        base_consumer: &BaseConsumer<Self>,
        tpl: &mut TopicPartitionList,
        cooperative: bool,
    ) {
        let inner = &self.inner;
        let parts = partitions(tpl);
        let span = info_span!("offset_guard_assign", group = %inner.config.group_id, partitions = parts.len(), cooperative);
        let _enter = span.enter();
        Metrics::inc(&inner.metrics.assigns);
        let slots: Vec<Arc<PartitionSlot>> = parts
            .iter()
            .map(|(t, p)| {
                let slot = inner.assignment.assign(inner, t, *p);
                debug!(topic = %t, partition = p, epoch = slot.epoch, "partition assigned");
                slot
            })
            .collect();
        let (resumed, replayed, dropped) = self.resolve_carry(base_consumer, tpl, &slots);
        let res = if cooperative {
            base_consumer.incremental_assign(tpl)
        } else {
            base_consumer.assign(tpl)
        };
        log_result("assign", res);
        inner.set_member_id(member_id(base_consumer));
        info!(
            partitions = parts.len(),
            resumed = resumed.len(),
            cooperative,
            "partitions assigned"
        );
        {
            let mut core = inner.lock_core();
            core.rebalance_gen += 1;
            if !resumed.is_empty() || !replayed.is_empty() {
                core.trigger = true;
            }
        }
        inner.notify();
        if let Some(hook) = &self.hooks.on_assign {
            hook(&Assigned {
                partitions: parts,
                resumed,
                replayed,
                dropped,
                cooperative,
            });
        }
    }

    /// Settles the offsets kept from the rebalance that just ended. Partitions
    /// assigned back: commit the kept offset if it is ahead of the group's
    /// committed offset, and start fetching there. Partitions still owned in
    /// the same assignment (cooperative): offer the offset again. The rest:
    /// dropped, counted and recorded.
    fn resolve_carry(
        &self,
        base_consumer: &BaseConsumer<Self>,
        tpl: &mut TopicPartitionList,
        slots: &[Arc<PartitionSlot>],
    ) -> (
        Vec<CommittedOffset>,
        Vec<CommittedOffset>,
        Vec<DroppedOffset>,
    ) {
        let inner = &self.inner;
        let carry: Vec<_> = {
            let mut core = inner.lock_core();
            let all: Vec<_> = core.carry.drain().collect();
            // A later commit (e.g. the revoke's) already covered some.
            all.into_iter()
                .filter_map(|(tp, c)| {
                    let committed = core.queue.committed_offset(&tp);
                    (committed < Some(c.offset)).then_some((tp, c, committed))
                })
                .collect()
        };
        // Unresolved entries of the failed-offset log for the assigned
        // partitions (with `replay_failed_offsets`).
        let replay: Vec<(Arc<PartitionSlot>, i64)> = {
            let mut core = inner.lock_core();
            slots
                .iter()
                .filter_map(|s| core.replay.remove(&s.key()).map(|o| (s.clone(), o)))
                .collect()
        };
        if carry.is_empty() && replay.is_empty() {
            return (Vec::new(), Vec::new(), Vec::new());
        }
        let mut back: Vec<(Arc<PartitionSlot>, Carried, bool)> = replay
            .into_iter()
            .map(|(s, offset)| {
                let c = Carried {
                    epoch: s.epoch,
                    offset,
                    code: None,
                    message: "unresolved in the failed-offset log".into(),
                };
                (s, c, true)
            })
            .collect();
        let mut dropped = Vec::new();
        for (tp, c, committed) in carry {
            if let Some(slot) = slots.iter().find(|s| s.key() == tp) {
                back.push((slot.clone(), c, false));
            } else if inner.assignment.epoch(&tp.0, tp.1) == Some(c.epoch) {
                // Still ours, same assignment: the next commit covers it.
                let mut core = inner.lock_core();
                core.queue.offer(&tp, c.epoch, c.offset, true);
                core.trigger = true;
            } else {
                dropped.push((tp, c, committed));
            }
        }
        let mut dropped_offsets = Vec::with_capacity(dropped.len());
        for (tp, c, committed_before) in dropped {
            Metrics::inc(&inner.metrics.offsets_rebalance_dropped);
            debug!(topic = %tp.0, partition = tp.1, offset = c.offset, "kept offset dropped: the partition went to another member");
            inner.record_failure(c.dropped(
                inner,
                &tp,
                "commit refused during a rebalance; the partition was not assigned back",
            ));
            dropped_offsets.push(DroppedOffset {
                topic: tp.0.to_string(),
                partition: tp.1,
                offset: c.offset,
                committed_before,
            });
        }
        if back.is_empty() {
            return (Vec::new(), Vec::new(), dropped_offsets);
        }
        // Highest first: the offer of a lower one for the same partition is
        // then stale, and fetching starts at the highest.
        back.sort_by_key(|b| std::cmp::Reverse(b.1.offset));
        // Never move the group's offset backwards: read it first.
        let mut query = TopicPartitionList::with_capacity(back.len());
        for (s, _, _) in &back {
            let _ = query.add_partition(&s.topic, s.partition);
        }
        let timeout = inner.config.revoke_timeout;
        let committed = base_consumer.committed_offsets(query, timeout);
        let mut resumed = Vec::new();
        let mut replayed = Vec::new();
        for (slot, c, from_log) in back {
            let group = match &committed {
                Ok(list) => match list
                    .find_partition(&slot.topic, slot.partition)
                    .map(|e| e.offset())
                {
                    Some(Offset::Offset(o)) => Ok(Some(o)),
                    Some(_) | None => Ok(None),
                },
                Err(e) => Err(e.clone()),
            };
            match group {
                Ok(g) if g.is_none_or(|g| g < c.offset) => {
                    let offer =
                        inner
                            .lock_core()
                            .queue
                            .offer(&slot.key(), slot.epoch, c.offset, true);
                    if offer == Offer::Queued {
                        let _ = tpl.set_partition_offset(
                            &slot.topic,
                            slot.partition,
                            Offset::Offset(c.offset),
                        );
                    }
                    let co = CommittedOffset {
                        topic: slot.topic.to_string(),
                        partition: slot.partition,
                        offset: c.offset,
                    };
                    if from_log {
                        // Resolved in the log once the commit lands (worker).
                        inner
                            .lock_core()
                            .replay_pending
                            .insert(slot.key(), c.offset);
                        Metrics::inc(&inner.metrics.offsets_replayed);
                        info!(topic = %slot.topic, partition = slot.partition, offset = c.offset, group_offset = ?g, "failed offset from the log is ahead of the group's: committing it again; fetching starts there");
                        replayed.push(co);
                    } else if offer == Offer::Queued {
                        Metrics::inc(&inner.metrics.offsets_resumed);
                        debug!(topic = %slot.topic, partition = slot.partition, offset = c.offset, group_offset = ?g, "kept offset committed again; fetching starts there");
                        resumed.push(co);
                    }
                }
                Ok(g) => {
                    if from_log {
                        let committed = g.unwrap_or(c.offset);
                        info!(topic = %slot.topic, partition = slot.partition, offset = c.offset, group_offset = committed, "failed offset from the log is not ahead of the group's: resolved as superseded");
                        inner.resolve_logged(Resolution::superseded(
                            inner.config.group_id.clone(),
                            slot.topic.to_string(),
                            slot.partition,
                            c.offset,
                            committed,
                        ));
                    } else {
                        debug!(topic = %slot.topic, partition = slot.partition, offset = c.offset, group_offset = ?g, "kept offset superseded by the group's committed offset");
                    }
                }
                Err(e) if from_log => {
                    warn!(topic = %slot.topic, partition = slot.partition, offset = c.offset, error = %e, "could not read the group's committed offset; the logged offset is tried again at the next assign");
                    inner.lock_core().replay.insert(slot.key(), c.offset);
                }
                Err(e) => {
                    warn!(topic = %slot.topic, partition = slot.partition, offset = c.offset, error = %e, "could not read the group's committed offset; kept offset not committed");
                    Metrics::inc(&inner.metrics.offsets_rebalance_dropped);
                    let mut f = inner.failure(
                        &slot.topic,
                        slot.partition,
                        c.offset,
                        FailureReason::RebalanceDropped,
                        format!("the group's committed offset could not be read to check the kept offset: {e}"),
                    );
                    f.error_code = e.rdkafka_error_code();
                    inner.record_failure(f);
                }
            }
        }
        (resumed, replayed, dropped_offsets)
    }

    fn on_revoke(&self, tpl: &TopicPartitionList, cooperative: bool) {
        let inner = &self.inner;
        let parts = partitions(tpl);
        let started = Instant::now();
        Metrics::inc(&inner.metrics.revokes);
        let slots: Vec<Arc<PartitionSlot>> = parts
            .iter()
            .filter_map(|(t, p)| inner.assignment.get(t, *p))
            .collect();
        // No more records of these assignments are handed out.
        for s in &slots {
            s.begin_close();
        }
        let outcome = self.commit_revoked(slots);
        info!(
            partitions = parts.len(),
            committed = outcome.committed.len(),
            deferred = outcome.deferred.len(),
            failed = outcome.failed.len(),
            waited_ms = outcome.waited.as_millis() as u64,
            cooperative,
            "partitions revoked"
        );
        if let Some(hook) = &self.hooks.on_revoke {
            hook(&Revoked {
                partitions: parts,
                committed: outcome.committed,
                deferred: outcome.deferred,
                failed: outcome.failed,
                cooperative,
                elapsed: started.elapsed(),
            });
        }
    }

    /// Hands the revoke to the worker and waits for it (bounded by the revoke
    /// timeout). Without a worker (shutting down) the partitions are just ended.
    fn commit_revoked(&self, slots: Vec<Arc<PartitionSlot>>) -> RevokeOutcome {
        let inner = &self.inner;
        if slots.is_empty() {
            return RevokeOutcome::default();
        }
        let job = Arc::new(RevokeJob::new(
            slots.clone(),
            inner.config.revoke_grace,
            inner.config.revoke_timeout,
        ));
        // Wait a little past the job's deadline: a request in flight at the
        // deadline still ends by itself.
        let wait_until = job.deadline + Duration::from_secs(1);
        let mut core = inner.lock_core();
        if core.stop {
            // The worker is done (the consumer is closing): its final commit
            // already ran for these partitions.
            drop(core);
            for s in &slots {
                inner.assignment.revoke_slot(s);
                inner.lock_core().queue.forget(&s.key());
            }
            return RevokeOutcome::default();
        }
        core.revoke = Some(job.clone());
        drop(core);
        inner.notify();
        let mut core = inner.lock_core();
        loop {
            if job.is_done() {
                drop(core);
                return job.take_outcome().unwrap_or_default();
            }
            let now = Instant::now();
            if now >= wait_until || core.stop {
                break;
            }
            core = inner.wait_core_timeout(core, wait_until - now);
        }
        // The worker did not finish in time.
        job.cancelled
            .store(true, std::sync::atomic::Ordering::Release);
        let never_started = core.revoke.as_ref().is_some_and(|j| Arc::ptr_eq(j, &job));
        if never_started {
            core.revoke = None;
        }
        drop(core);
        warn!(
            never_started,
            "revoke timeout passed before the revoked partitions were committed"
        );
        let mut outcome = RevokeOutcome::default();
        for s in &slots {
            let cp = inner.assignment.revoke_slot(s);
            let (pending, committed) = {
                let mut core = inner.lock_core();
                (
                    core.queue.forget(&s.key()),
                    core.queue.committed_offset(&s.key()),
                )
            };
            if !never_started {
                continue; // the worker records whatever it gives up on
            }
            if let Some(offset) = cp.max(pending).filter(|o| Some(*o) > committed) {
                outcome.failed.push(CommittedOffset {
                    topic: s.topic.to_string(),
                    partition: s.partition,
                    offset,
                });
                inner.record_failure(inner.failure(
                    &s.topic,
                    s.partition,
                    offset,
                    FailureReason::RebalanceDropped,
                    "revoke timeout passed before the commit was sent".into(),
                ));
            }
        }
        outcome
    }

    /// A lost assignment: nothing is committed; acked offsets not committed
    /// (and offsets kept from an earlier rebalance) go to the sink as `lost`.
    fn on_lost(&self, tpl: &TopicPartitionList) {
        let inner = &self.inner;
        let parts = partitions(tpl);
        let mut not_committed = Vec::new();
        for (topic, partition) in &parts {
            // End the assignment under the shared lock, so the worker cannot
            // keep a refused offset of it for later (see worker::carry).
            let mut core = inner.lock_core();
            let Some(slot) = inner.assignment.revoke(topic, *partition) else {
                continue;
            };
            Metrics::inc(&inner.metrics.partitions_lost);
            let cp = slot.view().0;
            let key = slot.key();
            let (pending, committed, carried) = (
                core.queue.forget(&key),
                core.queue.committed_offset(&key),
                core.carry.remove(&key).map(|c| c.offset),
            );
            drop(core);
            let offset = cp.max(pending).max(carried);
            if let Some(offset) = offset.filter(|o| Some(*o) > committed) {
                warn!(
                    topic,
                    partition, offset, "partition lost with acked offsets not committed"
                );
                not_committed.push(CommittedOffset {
                    topic: topic.clone(),
                    partition: *partition,
                    offset,
                });
                inner.record_failure(lost_failure(inner, topic, *partition, offset));
            }
        }
        warn!(
            partitions = parts.len(),
            "partitions lost; nothing committed for them"
        );
        if let Some(hook) = &self.hooks.on_lost {
            hook(&Lost {
                partitions: parts,
                not_committed,
            });
        }
    }
}

fn lost_failure(inner: &Inner, topic: &str, partition: i32, offset: i64) -> FailedOffset {
    inner.failure(
        topic,
        partition,
        offset,
        FailureReason::Lost,
        "partition lost before the offset was committed".into(),
    )
}

fn partitions(tpl: &TopicPartitionList) -> Vec<(String, i32)> {
    tpl.elements()
        .iter()
        .map(|e| (e.topic().to_string(), e.partition()))
        .collect()
}

fn log_result(what: &str, res: KafkaResult<()>) {
    if let Err(e) = res {
        warn!(error = %e, "{what} failed");
    }
}

fn member_id<C: ConsumerContext>(c: &BaseConsumer<C>) -> Option<String> {
    // SAFETY: rd_kafka_memberid returns a string we own (or NULL); freed with rd_kafka_mem_free.
    unsafe {
        let rk = c.client().native_ptr();
        let p = rdkafka::bindings::rd_kafka_memberid(rk);
        if p.is_null() {
            return None;
        }
        let s = std::ffi::CStr::from_ptr(p).to_string_lossy().into_owned();
        rdkafka::bindings::rd_kafka_mem_free(rk, p as *mut std::ffi::c_void);
        if s.is_empty() { None } else { Some(s) }
    }
}
