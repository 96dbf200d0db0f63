//! The `ConsumerContext` the guard installs, and what it does at each
//! rebalance (described in the crate docs, section "Rebalances").

use std::fmt;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use rdkafka::client::{ClientContext, OAuthToken};
use rdkafka::config::RDKafkaLogLevel;
use rdkafka::consumer::{BaseConsumer, Consumer, ConsumerContext, RebalanceProtocol};
use rdkafka::error::{KafkaError, KafkaResult};
use rdkafka::types::RDKafkaRespErr;
use rdkafka::util::Timeout;
use rdkafka::{Offset, Statistics, TopicPartitionList};
use tracing::{debug, error, info, info_span, warn};

use crate::assignment::{Assignment, PartitionSlot};
use crate::commit::handle::{CommitHandle, RevokeOutcome};
use crate::config::Config;
use crate::deadline::Deadline;
use crate::failures::FailureRecorder;
use crate::partition::{CommittedOffset, DroppedOffset, TopicPartition};
use crate::progress::{PartitionProgress, ProgressError};
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
/// [`GuardBuilder::on_lost`](crate::GuardBuilder::on_lost)). Nothing was
/// committed, and nothing is while the partitions are not ours.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct Lost {
    /// The lost partitions.
    pub partitions: Vec<(String, i32)>,
    /// Acked offsets that were not committed. They are kept to the next
    /// assign: committed then for a partition assigned back to this member
    /// if still ahead of the group's committed offset (in
    /// [`Assigned::resumed`]); for the others recorded in the failure sink
    /// with reason `lost` (in [`Assigned::dropped`]), or when the consumer
    /// stops first.
    pub not_committed: Vec<CommittedOffset>,
}

type Hook<T> = Box<dyn Fn(&T) + Send + Sync>;

/// Reads the stored progress of an assigned partition (group, topic, partition).
pub(crate) type ProgressLoader =
    Box<dyn Fn(&str, &str, i32) -> Result<PartitionProgress, ProgressError> + Send + Sync>;

/// The user's rebalance hooks.
#[derive(Default)]
pub(crate) struct Hooks {
    pub on_assign: Option<Hook<Assigned>>,
    pub on_revoke: Option<Hook<Revoked>>,
    pub on_lost: Option<Hook<Lost>>,
    pub progress: Option<ProgressLoader>,
}

impl fmt::Debug for Hooks {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Hooks")
            .field("on_assign", &self.on_assign.is_some())
            .field("on_revoke", &self.on_revoke.is_some())
            .field("on_lost", &self.on_lost.is_some())
            .field("progress", &self.progress.is_some())
            .finish()
    }
}

/// The guard's consumer context, wrapping the user's context `C`.
///
/// Every `ClientContext` callback (logging, statistics, errors, OAuth) and the
/// consumer's `main_queue_min_poll_interval` go to `C` unchanged.
///
/// `C::commit_callback` is called by the guard, on its commit thread, once per
/// OffsetCommit attempt it sends (interval, count, `commit_now`, revoke,
/// re-commit of idle partitions, kept or replayed offsets at assign, shutdown),
/// right after the attempt returns: `Ok(())` when it landed, else the error,
/// with the offsets sent. A retried commit calls it once per attempt. (rdkafka
/// itself never calls it for the guard's synchronous commits; it still
/// forwards the callback for commits made outside the guard.) No guard lock is
/// held during the call; keep it short, since the next commit waits for it. A
/// panic in it is caught and logged. The rebalance callback is the guard's own (see the
/// [crate docs](crate#rebalances)). rdkafka's `pre_rebalance` / `post_rebalance` of `C`
/// take a `&BaseConsumer<C>`, which the guard's consumer (a
/// `BaseConsumer<GuardContext<C>>`) is not, so they cannot be called: move that
/// logic to [`GuardBuilder::on_assign`](crate::GuardBuilder::on_assign) /
/// [`on_revoke`](crate::GuardBuilder::on_revoke) /
/// [`on_lost`](crate::GuardBuilder::on_lost), which also say what was committed.
pub struct GuardContext<C = rdkafka::consumer::DefaultConsumerContext> {
    user: C,
    parts: ContextParts,
    hooks: Hooks,
    /// librdkafka's description of the last error event (code, text): rdkafka
    /// calls `error` with it just before the consumer's poll returns the error
    /// without it; the owned front-end's poll thread takes it (own lock).
    last_error: std::sync::Mutex<Option<(i32, String)>>,
}

/// What the rebalance callbacks work with.
pub(crate) struct ContextParts {
    pub config: Arc<Config>,
    pub assignment: Arc<Assignment>,
    pub commits: CommitHandle,
    pub recorder: Arc<FailureRecorder>,
    pub metrics: Arc<Metrics>,
}

impl<C> GuardContext<C> {
    pub(crate) fn new(user: C, parts: ContextParts, hooks: Hooks) -> Self {
        GuardContext {
            user,
            parts,
            hooks,
            last_error: std::sync::Mutex::new(None),
        }
    }

    /// librdkafka's description of the last error event, if it had `code`.
    pub(crate) fn take_error_reason(
        &self,
        code: rdkafka::error::RDKafkaErrorCode,
    ) -> Option<String> {
        let mut slot = self
            .last_error
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        match slot.take() {
            Some((c, reason)) if c == code as i32 => Some(reason),
            _ => None,
        }
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
        if let Some(code) = error.rdkafka_error_code() {
            *self
                .last_error
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner) =
                Some((code as i32, reason.to_string()));
        }
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
                log_result(&self.parts.config.group_id, "unassign", res);
            }
            other => {
                let code: rdkafka::error::RDKafkaErrorCode = other.into();
                error!(group = %self.parts.config.group_id, error_code = ?code, "rebalance error");
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

/// A callback may answer a little after its own deadline: a request in flight
/// at the deadline still ends by itself.
const REPLY_SLACK: Duration = Duration::from_secs(1);

impl<C: ConsumerContext> GuardContext<C> {
    /// Every assigned partition starts a new epoch; the commit worker settles
    /// kept and replayed offsets, and fetching starts where it committed them.
    fn on_assign(
        &self,
        base_consumer: &BaseConsumer<Self>,
        tpl: &mut TopicPartitionList,
        cooperative: bool,
    ) {
        let p = &self.parts;
        let parts = partitions(tpl);
        let span = info_span!("offset_guard_assign", group = %p.config.group_id, partitions = parts.len(), cooperative);
        let _enter = span.enter();
        Metrics::inc(&p.metrics.assigns);
        // Offsets acked under a manual `assign` that the group's assignment
        // replaces (or, at the group's first assign, does not confirm) are
        // settled like offsets kept across a rebalance: committed if the
        // partition is ours and they are ahead, else recorded.
        let mut replaced = Vec::new();
        if p.assignment.set_group_managed() {
            replaced = p.assignment.end_except(&parts);
        }
        let slots: Vec<Arc<PartitionSlot>> = parts
            .iter()
            .map(|(t, part)| {
                let (slot, old) = p.assignment.assign_replacing(t, *part);
                if let Some((epoch, cp)) = old {
                    replaced.push((slot.tp.clone(), epoch, cp));
                }
                debug!(topic = %t, partition = part, epoch = slot.epoch, "partition assigned");
                slot
            })
            .collect();
        let replaced: Vec<_> = replaced
            .into_iter()
            .filter_map(|(tp, epoch, cp)| Some((tp, epoch, cp?)))
            .collect();
        p.recorder.set_member_id(member_id(base_consumer));
        // Loaded first: the worker's reply deadline starts after the loader.
        let stored = self.load_progress(&slots);
        let wait = Deadline::after(p.config.revoke_timeout.saturating_add(REPLY_SLACK));
        let settled = p
            .commits
            .assigned(slots, replaced, stored, wait)
            .unwrap_or_default();
        for (tp, offset) in &settled.start_at {
            let _ = tpl.set_partition_offset(&tp.topic, tp.partition, Offset::Offset(*offset));
        }
        let res = if cooperative {
            base_consumer.incremental_assign(tpl)
        } else {
            base_consumer.assign(tpl)
        };
        log_result(&p.config.group_id, "assign", res);
        info!(
            partitions = parts.len(),
            resumed = settled.resumed.len(),
            cooperative,
            "partitions assigned"
        );
        if let Some(hook) = &self.hooks.on_assign {
            let arg = Assigned {
                partitions: parts,
                resumed: settled.resumed,
                replayed: settled.replayed,
                dropped: settled.dropped,
                cooperative,
            };
            run_hook("on_assign", || hook(&arg));
        }
    }

    /// With [`stored_progress`](crate::GuardBuilder::stored_progress): reads
    /// each assigned partition's stored progress onto its slot (records done
    /// are skipped by `track_or_skip`); returns the stored watermarks, which
    /// the commit worker commits where they are ahead of the group's
    /// committed offset (fetching then starts there).
    fn load_progress(&self, slots: &[Arc<PartitionSlot>]) -> Vec<(TopicPartition, i64)> {
        let Some(loader) = &self.hooks.progress else {
            return Vec::new();
        };
        let mut stored = Vec::new();
        let group = self.parts.config.group_id.as_str();
        let budget = Deadline::after(self.parts.config.progress_load_timeout);
        for (n, slot) in slots.iter().enumerate() {
            let (topic, partition) = (&*slot.tp.topic, slot.tp.partition);
            if budget.is_past(Instant::now()) {
                let left = slots.len() - n;
                self.parts
                    .metrics
                    .progress_load_errors
                    .fetch_add(left as u64, Ordering::Relaxed);
                warn!(
                    partitions = left,
                    timeout_ms = self.parts.config.progress_load_timeout.as_millis() as u64,
                    "stored progress not loaded: the loads of this assign took progress_load_timeout; these partitions' records are all handed out"
                );
                break;
            }
            let loaded = catch_unwind(AssertUnwindSafe(|| loader(group, topic, partition)));
            let progress = match loaded {
                Ok(Ok(p)) => p,
                Ok(Err(e)) => {
                    Metrics::inc(&self.parts.metrics.progress_load_errors);
                    warn!(topic, partition, error = %e, "stored progress not loaded; the partition's records are all handed out");
                    continue;
                }
                Err(_) => {
                    Metrics::inc(&self.parts.metrics.progress_load_errors);
                    error!(
                        topic,
                        partition,
                        "the stored-progress loader panicked; the partition's records are all handed out"
                    );
                    continue;
                }
            };
            if let Some(w) = progress.watermark() {
                stored.push((slot.tp.clone(), w));
            }
            slot.set_progress(progress);
        }
        stored
    }

    fn on_revoke(&self, tpl: &TopicPartitionList, cooperative: bool) {
        let p = &self.parts;
        let parts = partitions(tpl);
        let started = Instant::now();
        Metrics::inc(&p.metrics.revokes);
        let slots: Vec<Arc<PartitionSlot>> = parts
            .iter()
            .filter_map(|(t, part)| p.assignment.get(t, *part))
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
            let arg = Revoked {
                partitions: parts,
                committed: outcome.committed,
                deferred: outcome.deferred,
                failed: outcome.failed,
                cooperative,
                elapsed: started.elapsed(),
            };
            run_hook("on_revoke", || hook(&arg));
        }
    }

    /// Hands the revoke to the commit worker and waits for it (bounded by the
    /// revoke timeout). If the worker does not answer in time, the
    /// assignments end here (later acks are stale) and the worker records
    /// what it could not commit.
    fn commit_revoked(&self, slots: Vec<Arc<PartitionSlot>>) -> RevokeOutcome {
        let p = &self.parts;
        if slots.is_empty() {
            return RevokeOutcome::default();
        }
        let now = Instant::now();
        let grace = Deadline::after_from(now, p.config.revoke_grace);
        let deadline = Deadline::after_from(now, p.config.revoke_timeout);
        let wait = Deadline::after_from(now, p.config.revoke_timeout.saturating_add(REPLY_SLACK));
        if let Some(outcome) = p.commits.revoke(slots.clone(), grace, deadline, wait) {
            return outcome;
        }
        let tps: Vec<String> = slots.iter().map(|s| s.tp.to_string()).collect();
        warn!(
            group = %p.config.group_id,
            partitions = ?tps,
            "revoke timeout passed before the revoked partitions were committed (or the commit thread is gone)"
        );
        for s in &slots {
            p.assignment.revoke_slot(s);
        }
        RevokeOutcome::default()
    }

    /// A lost assignment: nothing is committed; acked offsets not committed
    /// (and offsets kept from an earlier rebalance) are kept to the next
    /// assign (committed if the partition comes back, else recorded as `lost`).
    fn on_lost(&self, tpl: &TopicPartitionList) {
        let p = &self.parts;
        let parts = partitions(tpl);
        // End the assignments first: later acks are stale, and the worker
        // keeps nothing of them for later.
        let ended: Vec<_> = parts
            .iter()
            .filter_map(|(t, part)| p.assignment.revoke(t, *part))
            .collect();
        let not_committed = if ended.is_empty() {
            Vec::new()
        } else {
            let wait = Deadline::after(p.config.revoke_timeout);
            p.commits.lost(ended, wait).unwrap_or_default()
        };
        warn!(
            group = %p.config.group_id,
            partitions = ?parts,
            not_committed = ?not_committed,
            "partitions lost; nothing committed for them"
        );
        if let Some(hook) = &self.hooks.on_lost {
            let arg = Lost {
                partitions: parts,
                not_committed,
            };
            run_hook("on_lost", || hook(&arg));
        }
    }
}

/// Runs a user hook inside librdkafka's callback, where a panic would abort
/// the process: the panic is caught and reported instead.
fn run_hook(name: &'static str, hook: impl FnOnce()) {
    if catch_unwind(AssertUnwindSafe(hook)).is_err() {
        error!(
            hook = name,
            "a rebalance hook panicked; the guard carries on"
        );
    }
}

fn partitions(tpl: &TopicPartitionList) -> Vec<(String, i32)> {
    tpl.elements()
        .iter()
        .map(|e| (e.topic().to_string(), e.partition()))
        .collect()
}

fn log_result(group: &str, what: &str, res: KafkaResult<()>) {
    if let Err(e) = res {
        warn!(group, error_code = ?e.rdkafka_error_code(), error = %e, "{what} failed");
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
