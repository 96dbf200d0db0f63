//! The `ConsumerContext` the guard installs: it tracks assignments (one epoch
//! per assignment of a partition) and delegates everything else to the user's
//! own context.

use std::sync::Arc;

use rdkafka::client::{ClientContext, OAuthToken};
use rdkafka::config::RDKafkaLogLevel;
use rdkafka::consumer::{BaseConsumer, Consumer, ConsumerContext, RebalanceProtocol};
use rdkafka::error::{KafkaError, KafkaResult};
use rdkafka::types::RDKafkaRespErr;
use rdkafka::util::Timeout;
use rdkafka::{Statistics, TopicPartitionList};
use tracing::{debug, error, info, warn};

use crate::consumer::Inner;
use crate::sink::FailureReason;

/// The guard's consumer context, wrapping the user's context `C`.
///
/// Every `ClientContext` callback (logging, statistics, errors, OAuth) and the
/// consumer's `commit_callback` go to `C` unchanged. The rebalance callback is
/// the guard's own.
pub struct GuardContext<C> {
    user: C,
    pub(crate) inner: Arc<Inner>,
}

impl<C> GuardContext<C> {
    pub(crate) fn new(user: C, inner: Arc<Inner>) -> Self {
        GuardContext { user, inner }
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
                let parts = partitions(tpl);
                for (t, p) in &parts {
                    let slot = self.inner.assignment.assign(&self.inner, t, *p);
                    debug!(topic = %t, partition = p, epoch = slot.epoch, "partition assigned");
                }
                let res = if cooperative {
                    base_consumer.incremental_assign(tpl)
                } else {
                    base_consumer.assign(tpl)
                };
                log_result("assign", res);
                self.inner.set_member_id(member_id(base_consumer));
                info!(partitions = parts.len(), cooperative, "partitions assigned");
                let mut core = self.inner.lock_core();
                core.rebalance_gen += 1;
                drop(core);
                self.inner.notify();
            }
            RDKafkaRespErr::RD_KAFKA_RESP_ERR__REVOKE_PARTITIONS => {
                let lost = base_consumer.assignment_lost();
                let parts = partitions(tpl);
                for (t, p) in &parts {
                    self.on_partition_end(t, *p, lost);
                }
                let res = if cooperative {
                    base_consumer.incremental_unassign(tpl)
                } else {
                    base_consumer.unassign()
                };
                log_result("unassign", res);
                info!(
                    partitions = parts.len(),
                    lost, cooperative, "partitions revoked"
                );
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

impl<C> GuardContext<C> {
    /// A partition's assignment ends. A lost partition is never committed: its
    /// acked but uncommitted offset is recorded as failed with reason `lost`.
    fn on_partition_end(&self, topic: &str, partition: i32, lost: bool) {
        let Some(slot) = self.inner.assignment.revoke(topic, partition) else {
            return;
        };
        let cp = slot.commit_point();
        let pending = self.inner.lock_core().queue.forget(&slot.key());
        let committed = self.inner.lock_core().queue.committed_offset(&slot.key());
        let uncommitted = cp.max(pending).filter(|o| Some(*o) > committed);
        if let Some(offset) = uncommitted {
            if lost {
                warn!(
                    topic,
                    partition, offset, "partition lost with acked offsets not committed"
                );
                self.inner.record_failure(self.inner.failure(
                    topic,
                    partition,
                    offset,
                    FailureReason::Lost,
                    "partition lost before the offset was committed".into(),
                ));
            } else {
                debug!(
                    topic,
                    partition, offset, "partition revoked with acked offsets not committed"
                );
            }
        }
    }
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
