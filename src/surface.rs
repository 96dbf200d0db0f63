//! The owned front-end's error policy (crate docs, section "Errors"): which
//! consumer errors the poll thread hands to `recv()`, and when.
//!
//! The poll thread owns an [`ErrorPolicy`] (no lock); the errors it surfaces
//! wait in an [`Outbox`] shared with the consumer handle, so the poll thread
//! never waits for the application and an error is not lost when nobody is in
//! `recv()`. [`kind_of`] and [`Outage`] are pure.

use std::collections::{HashMap, VecDeque};
use std::sync::atomic::AtomicUsize;
use std::sync::atomic::Ordering::{Relaxed, SeqCst};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use rdkafka::consumer::{BaseConsumer, Consumer, ConsumerContext};
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use tracing::{debug, info, warn};

use crate::error::Error;
use crate::rebalance::GuardContext;
use crate::stats::Metrics;

/// At most this many surfaced errors wait for `recv()`; more are dropped
/// (logged). The repeat limit keeps the count far below in practice.
const OUTBOX_CAP: usize = 64;

/// The longest the poll thread waits for one metadata request (the outage
/// check, naming the topics of an error).
const METADATA_WAIT: Duration = Duration::from_secs(1);

/// While an outage lasts, it is checked again at most this often, however
/// short the period (each check may hold the poll thread for `METADATA_WAIT`).
pub(crate) const MIN_RECHECK: Duration = Duration::from_secs(1);

/// How the policy treats a consumer error.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Kind {
    /// Authentication or authorization: surfaced at once, consumer keeps retrying.
    Auth,
    /// A subscribed topic does not exist: surfaced at once, consumer keeps running.
    UnknownTopic,
    /// librdkafka reports every broker down: starts (or continues) an outage.
    AllDown,
    /// One connection or request failed: retried silently by librdkafka.
    Transport,
    /// Anything else: a warning and a count.
    Other,
}

pub(crate) fn kind_of(code: RDKafkaErrorCode) -> Kind {
    use RDKafkaErrorCode as C;
    match code {
        C::Authentication
        | C::SaslAuthenticationFailed
        | C::TopicAuthorizationFailed
        | C::GroupAuthorizationFailed
        | C::ClusterAuthorizationFailed => Kind::Auth,
        C::UnknownTopicOrPartition | C::UnknownTopic => Kind::UnknownTopic,
        C::AllBrokersDown => Kind::AllDown,
        C::Resolve
        | C::BrokerTransportFailure
        | C::OperationTimedOut
        | C::RequestTimedOut
        | C::NetworkException
        | C::TimedOutQueue => Kind::Transport,
        _ => Kind::Other,
    }
}

/// Errors surfaced by the poll thread, waiting for `recv()`.
///
/// `recv` looks at `len` (no lock) before every record: the queue is locked
/// only when an error waits. `put` raises `len` under the queue's lock, right
/// after the push, and before it takes the waker; a waiting `recv` stores its
/// waker before it looks again, so an error put is never missed.
#[derive(Debug, Default)]
pub(crate) struct Outbox {
    queue: Mutex<VecDeque<Error>>,
    /// Errors in `queue`; changed only with the queue locked.
    len: AtomicUsize,
    /// The `recv` waiting, woken by `put`.
    waker: Mutex<Option<std::task::Waker>>,
}

impl Outbox {
    /// Queues an error for `recv()`; false when the outbox is full (dropped).
    pub(crate) fn put(&self, e: Error) -> bool {
        {
            let mut q = self.queue.lock().unwrap_or_else(PoisonError::into_inner);
            if q.len() >= OUTBOX_CAP {
                return false;
            }
            q.push_back(e);
            self.len.store(q.len(), SeqCst);
        }
        let waker = self
            .waker
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .take();
        if let Some(w) = waker {
            w.wake();
        }
        true
    }

    /// The oldest error waiting, if any; no lock when none waits (the
    /// common case: `recv` calls this before every record).
    pub(crate) fn take(&self) -> Option<Error> {
        if self.len.load(SeqCst) == 0 {
            return None;
        }
        let mut q = self.queue.lock().unwrap_or_else(PoisonError::into_inner);
        let e = q.pop_front();
        self.len.store(q.len(), SeqCst);
        e
    }

    /// Ready when an error waits; otherwise the task is woken by the next
    /// `put`.
    pub(crate) fn poll_ready(&self, cx: &mut std::task::Context<'_>) -> std::task::Poll<()> {
        *self.waker.lock().unwrap_or_else(PoisonError::into_inner) = Some(cx.waker().clone());
        // After the waker is stored: a `put` that has not taken it yet has
        // raised `len` already, or will find the waker and wake this task.
        if self.len.load(SeqCst) > 0 {
            std::task::Poll::Ready(())
        } else {
            std::task::Poll::Pending
        }
    }

    /// Resolves when an error waits.
    #[cfg(test)]
    pub(crate) async fn ready(&self) {
        std::future::poll_fn(|cx| self.poll_ready(cx)).await
    }
}

/// No broker reachable since `since`, as far as the guard can tell.
#[derive(Debug, Clone)]
pub(crate) struct Outage {
    pub since: Instant,
    /// When to check (and surface if still down); `None`: never.
    pub check_at: Option<Instant>,
}

impl Outage {
    pub(crate) fn start(now: Instant, period: Duration) -> Self {
        Outage {
            since: now,
            check_at: now.checked_add(period),
        }
    }

    pub(crate) fn due(&self, now: Instant) -> bool {
        self.check_at.is_some_and(|t| now >= t)
    }

    /// Still down at `now`: the next check is one period later (at least
    /// [`MIN_RECHECK`]).
    pub(crate) fn still_down(&mut self, now: Instant, period: Duration) -> Duration {
        self.check_at = now.checked_add(period.max(MIN_RECHECK));
        now.saturating_duration_since(self.since)
    }
}

/// The poll thread's side of the policy.
pub(crate) struct ErrorPolicy {
    pub period: Duration,
    pub outbox: Arc<Outbox>,
    pub metrics: Arc<Metrics>,
    pub group: String,
    outage: Option<Outage>,
    last_transport: Option<KafkaError>,
    /// When each (code, topics) was last surfaced: repeats wait a period.
    surfaced: HashMap<(i32, Vec<String>), Instant>,
}

impl ErrorPolicy {
    pub(crate) fn new(
        period: Duration,
        outbox: Arc<Outbox>,
        metrics: Arc<Metrics>,
        group: String,
    ) -> Self {
        ErrorPolicy {
            period,
            outbox,
            metrics,
            group,
            outage: None,
            last_transport: None,
            surfaced: HashMap::new(),
        }
    }

    /// A non-fatal error from the consumer's poll.
    pub(crate) fn on_error<C: ConsumerContext>(
        &mut self,
        e: &KafkaError,
        consumer: &BaseConsumer<GuardContext<C>>,
    ) {
        Metrics::inc(&self.metrics.consumer_errors);
        let group = &self.group;
        let Some(code) = e.rdkafka_error_code() else {
            warn!(%group, error = %e, "consumer error");
            return;
        };
        let kind = kind_of(code);
        let reason = match kind {
            Kind::Auth | Kind::UnknownTopic => consumer.context().take_error_reason(code),
            _ => None,
        };
        match kind {
            Kind::Auth => {
                let topics = if code == RDKafkaErrorCode::TopicAuthorizationFailed {
                    topics_of(consumer, code, reason.as_deref())
                } else {
                    Vec::new()
                };
                warn!(%group, error_code = ?code, ?topics, ?reason, "authentication or authorization failed; librdkafka keeps retrying");
                let e = Error::AuthFailed {
                    code,
                    topics: topics.clone(),
                    reason,
                };
                self.surface(code, topics, e);
            }
            Kind::UnknownTopic => {
                let topics = topics_of(consumer, code, reason.as_deref());
                warn!(%group, error_code = ?code, ?topics, ?reason, "a subscribed topic does not exist; assigned once it is created");
                let e = Error::UnknownTopic {
                    code,
                    topics: topics.clone(),
                    reason,
                };
                self.surface(code, topics, e);
            }
            Kind::AllDown => {
                if self.outage.is_none() {
                    warn!(%group, error = %e, "no broker reachable; librdkafka keeps reconnecting");
                    self.outage = Some(Outage::start(Instant::now(), self.period));
                }
                self.last_transport.get_or_insert_with(|| e.clone());
            }
            Kind::Transport => {
                debug!(%group, error_code = ?code, error = %e, "transport error; retried by librdkafka");
                self.last_transport = Some(e.clone());
            }
            Kind::Other => warn!(%group, error_code = ?code, error = %e, "consumer error"),
        }
    }

    /// Called at every turn of the poll loop: cheap unless an outage is
    /// under way and its check is due. Then one metadata request tells
    /// whether a broker answers: if so the outage is over, else it is surfaced.
    pub(crate) fn tick<C: ConsumerContext>(&mut self, consumer: &BaseConsumer<GuardContext<C>>) {
        let Some(outage) = &self.outage else {
            return;
        };
        let now = Instant::now();
        if !outage.due(now) {
            return;
        }
        if broker_answers(consumer, METADATA_WAIT) {
            info!(group = %self.group, down_for_ms = now.saturating_duration_since(outage.since).as_millis() as u64, "a broker is reachable again");
            self.outage = None;
            self.last_transport = None;
            return;
        }
        let now = Instant::now();
        let down_for = self
            .outage
            .as_mut()
            .map_or(Duration::ZERO, |o| o.still_down(now, self.period));
        let last_error = self
            .last_transport
            .clone()
            .unwrap_or(KafkaError::MessageConsumption(
                RDKafkaErrorCode::AllBrokersDown,
            ));
        warn!(group = %self.group, down_for_ms = down_for.as_millis() as u64, error = %last_error, "no broker reachable; surfaced to recv()");
        self.put(Error::BrokersUnreachable {
            down_for,
            last_error,
        });
    }

    /// Surfaces `e` unless the same error was surfaced less than a period ago.
    fn surface(&mut self, code: RDKafkaErrorCode, topics: Vec<String>, e: Error) {
        let now = Instant::now();
        let key = (code as i32, topics);
        if let Some(at) = self.surfaced.get(&key)
            && now.saturating_duration_since(*at) < self.period
        {
            debug!(group = %self.group, error_code = ?code, "same error surfaced less than a period ago; not again");
            return;
        }
        self.surfaced.insert(key, now);
        self.put(e);
    }

    fn put(&self, e: Error) {
        // Counted before `recv` can see it.
        self.metrics.errors_surfaced.fetch_add(1, Relaxed);
        if !self.outbox.put(e) {
            self.metrics.errors_surfaced.fetch_sub(1, Relaxed);
            warn!(group = %self.group, "{OUTBOX_CAP} surfaced errors wait for recv(); this one is dropped");
        }
    }
}

/// One metadata request for the topics librdkafka knows locally (none asked
/// by name): true when a broker answered within `wait`.
fn broker_answers<C: ConsumerContext>(
    consumer: &BaseConsumer<GuardContext<C>>,
    wait: Duration,
) -> bool {
    let ms = wait.as_millis().min(i32::MAX as u128) as i32;
    let rk = consumer.client().native_ptr();
    // SAFETY: `rk` is the live client of the consumer the caller holds; the
    // metadata returned (if any) is destroyed before returning.
    unsafe {
        let mut md = std::ptr::null();
        let err = rdkafka::bindings::rd_kafka_metadata(rk, 0, std::ptr::null_mut(), &mut md, ms);
        if !md.is_null() {
            rdkafka::bindings::rd_kafka_metadata_destroy(md);
        }
        err == rdkafka::types::RDKafkaRespErr::RD_KAFKA_RESP_ERR_NO_ERROR
    }
}

/// The subscribed topics an unknown-topic or topic-authorization error is
/// about: those librdkafka's description of the error names, else those the
/// cluster's metadata does not list or lists with an error of the same kind
/// (a broker leaves topics the client may not describe out of the listing).
/// Subscribed by name only (patterns are skipped); empty when neither tells.
fn topics_of<C: ConsumerContext>(
    consumer: &BaseConsumer<GuardContext<C>>,
    code: RDKafkaErrorCode,
    reason: Option<&str>,
) -> Vec<String> {
    let subscribed = subscribed_topics(consumer);
    if let Some(reason) = reason {
        let named: Vec<String> = subscribed
            .iter()
            .filter(|t| names(reason, t))
            .cloned()
            .collect();
        if !named.is_empty() {
            return named;
        }
    }
    unlisted_topics(consumer, code, subscribed)
}

/// `text` names `topic` as a whole word (topic names are made of ASCII
/// letters, digits, `.`, `_` and `-`).
fn names(text: &str, topic: &str) -> bool {
    let part = |c: char| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-');
    text.match_indices(topic).any(|(i, _)| {
        let before = text[..i].chars().next_back();
        let after = text[i + topic.len()..].chars().next();
        // A trailing '.' or '-' ends a sentence or a clause, not the name.
        !before.is_some_and(part) && !after.is_some_and(|c| part(c) && c != '.')
    })
}

fn subscribed_topics<C: ConsumerContext>(consumer: &BaseConsumer<GuardContext<C>>) -> Vec<String> {
    // The list is dropped before returning (a live list blocks the consumer's close).
    match consumer.subscription() {
        Ok(list) => list
            .elements()
            .iter()
            .map(|e| e.topic().to_string())
            .filter(|t| !t.starts_with('^'))
            .collect(),
        Err(_) => Vec::new(),
    }
}

fn unlisted_topics<C: ConsumerContext>(
    consumer: &BaseConsumer<GuardContext<C>>,
    code: RDKafkaErrorCode,
    subscribed: Vec<String>,
) -> Vec<String> {
    if subscribed.is_empty() {
        return Vec::new();
    }
    let Ok(md) = consumer.fetch_metadata(None, METADATA_WAIT) else {
        return Vec::new();
    };
    subscribed
        .into_iter()
        .filter(|t| match md.topics().iter().find(|m| m.name() == t) {
            None => true,
            Some(m) => m.error().is_some_and(|e| {
                let c = RDKafkaErrorCode::from(e);
                c == code || kind_of(c) == kind_of(code)
            }),
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kinds() {
        use RDKafkaErrorCode as C;
        let cases = [
            (C::Authentication, Kind::Auth),
            (C::SaslAuthenticationFailed, Kind::Auth),
            (C::TopicAuthorizationFailed, Kind::Auth),
            (C::GroupAuthorizationFailed, Kind::Auth),
            (C::ClusterAuthorizationFailed, Kind::Auth),
            (C::UnknownTopicOrPartition, Kind::UnknownTopic),
            (C::UnknownTopic, Kind::UnknownTopic),
            (C::AllBrokersDown, Kind::AllDown),
            (C::Resolve, Kind::Transport),
            (C::BrokerTransportFailure, Kind::Transport),
            (C::OperationTimedOut, Kind::Transport),
            (C::RequestTimedOut, Kind::Transport),
            (C::NetworkException, Kind::Transport),
            (C::OffsetOutOfRange, Kind::Other),
            (C::NotCoordinator, Kind::Other),
        ];
        for (code, want) in cases {
            assert_eq!(kind_of(code), want, "{code:?}");
        }
    }

    #[test]
    fn a_reason_names_a_topic_as_a_whole_word() {
        let r = "Failed to fetch committed offset for group \"g\" topic orders[0]: Broker: Topic authorization failed";
        assert!(names(r, "orders"));
        assert!(!names(r, "order"));
        assert!(!names(r, "rders"));
        assert!(names(
            "Subscribed topic not available: a.b-c: Broker: Unknown topic",
            "a.b-c"
        ));
        assert!(!names("topic a.b-c2", "a.b-c"));
        assert!(names("topic t.", "t"));
        assert!(!names("", "t"));
    }

    #[test]
    fn an_outage_is_checked_once_per_period() {
        let t0 = Instant::now();
        let p = Duration::from_secs(2);
        let mut o = Outage::start(t0, p);
        assert!(!o.due(t0));
        assert!(!o.due(t0 + Duration::from_millis(1999)));
        assert!(o.due(t0 + p));
        assert_eq!(o.still_down(t0 + p, p), p);
        assert!(!o.due(t0 + p + Duration::from_secs(1)));
        assert!(o.due(t0 + 2 * p));
        // Duration::MAX: never due.
        let never = Outage::start(t0, Duration::MAX);
        assert!(!never.due(t0 + Duration::from_secs(1_000_000)));
        let mut o = Outage::start(t0, p);
        o.still_down(t0 + p, Duration::MAX);
        assert!(!o.due(t0 + Duration::from_secs(1_000_000)));
        // A tiny period: the first check at once, then at most once a second.
        let tiny = Duration::from_nanos(1);
        let mut o = Outage::start(t0, tiny);
        assert!(o.due(t0 + tiny));
        o.still_down(t0 + tiny, tiny);
        assert!(!o.due(t0 + Duration::from_millis(999)));
        assert!(o.due(t0 + tiny + MIN_RECHECK));
    }

    #[tokio::test]
    async fn the_outbox_keeps_errors_until_taken_and_wakes_a_waiter() {
        let out = Arc::new(Outbox::default());
        assert!(out.take().is_none());
        assert!(out.put(Error::ShutDown));
        // Not lost while nobody waits: the wake-up is stored.
        out.ready().await;
        assert!(matches!(out.take(), Some(Error::ShutDown)));
        let waiter = {
            let out = out.clone();
            tokio::spawn(async move {
                out.ready().await;
                out.take()
            })
        };
        tokio::task::yield_now().await;
        out.put(Error::ShutDown);
        assert!(matches!(waiter.await.unwrap(), Some(Error::ShutDown)));
        for _ in 0..OUTBOX_CAP {
            assert!(out.put(Error::ShutDown));
        }
        assert!(!out.put(Error::ShutDown), "full: dropped, never blocks");
    }

    /// `recv`'s pattern (take without a lock, else wait and take again)
    /// against a `put` from another thread at any moment: no error is ever
    /// missed, nor taken twice.
    #[test]
    fn an_error_put_while_the_receiver_checks_is_never_missed() {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_time()
            .build()
            .unwrap();
        for round in 0..2_000u32 {
            let out = Arc::new(Outbox::default());
            let putter = {
                let out = out.clone();
                std::thread::spawn(move || {
                    for _ in 0..round % 50 {
                        std::hint::spin_loop();
                    }
                    assert!(out.put(Error::ShutDown));
                })
            };
            let got = rt.block_on(async {
                tokio::time::timeout(Duration::from_secs(5), async {
                    loop {
                        if let Some(e) = out.take() {
                            return e;
                        }
                        out.ready().await;
                    }
                })
                .await
            });
            putter.join().unwrap();
            assert!(
                matches!(got, Ok(Error::ShutDown)),
                "round {round}: an error put was missed"
            );
            assert!(out.take().is_none(), "round {round}: taken twice");
        }
    }
}
