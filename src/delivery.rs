//! A record as the owned front-end hands it out: librdkafka's own message,
//! read in place, and its ack token.

use std::fmt;
use std::sync::{Arc, OnceLock};

use rdkafka::Message;
use rdkafka::message::{BorrowedHeaders, BorrowedMessage, OwnedMessage, Timestamp};

use crate::assignment::{AckStatus, AckToken, Ticket};
use crate::error::Error;

/// Keeps librdkafka's client alive while records hold its messages. The poll
/// thread makes one per batch and every record of the batch clones it: the
/// consumer's own reference count (shared with every thread) moves once per
/// batch, the batch's count only on the threads that hold its records.
pub(crate) struct BatchHold {
    client: Option<Arc<dyn Send + Sync>>,
}

impl BatchHold {
    /// A hold on `client` (the guard's consumer).
    pub(crate) fn new(client: Arc<dyn Send + Sync>) -> Arc<BatchHold> {
        Arc::new(BatchHold {
            client: Some(client),
        })
    }
}

impl Drop for BatchHold {
    fn drop(&mut self) {
        let Some(client) = self.client.take() else {
            return;
        };
        if Arc::strong_count(&client) > 1 {
            return;
        }
        // The last reference to the consumer (records kept after the guard
        // was shut down or dropped): its drop closes the consumer if it is
        // not closed yet and destroys librdkafka's client, which blocks
        // (joins librdkafka's threads). Not on the application's thread, an
        // async executor's maybe. (Two holds dropped at the same moment may
        // both see 2; then the drop happens here.) If the thread cannot be
        // started, the closure and the client are dropped here.
        let _ = std::thread::Builder::new()
            .name("offset-guard-close".into())
            .spawn(move || drop(client));
    }
}

/// librdkafka's message of a record, read in place: nothing is copied on the
/// poll thread, and the message is destroyed where the record is dropped.
pub(crate) struct Native {
    /// Declared before `_hold`: fields are dropped in declaration order, so
    /// the message is destroyed while `_hold` still keeps the client alive.
    msg: BorrowedMessage<'static>,
    /// Whether the record's headers are read at all (`read_headers`).
    read_headers: bool,
    /// Whether librdkafka parsed headers for the message (done once, see
    /// [`Native::headers`]).
    parsed: OnceLock<bool>,
    _hold: Arc<BatchHold>,
}

impl Native {
    /// Wraps a message the poll thread got from the consumer that `hold`
    /// keeps alive.
    ///
    /// # Safety
    ///
    /// `msg` must come from the consumer `hold` holds (a clone of the
    /// guard's `Arc` of it).
    pub(crate) unsafe fn new(
        msg: BorrowedMessage<'_>,
        hold: Arc<BatchHold>,
        read_headers: bool,
    ) -> Native {
        // SAFETY: `BorrowedMessage`'s lifetime only ties it to the client
        // it came from (rdkafka keeps a `PhantomData<&'a _>`; nothing in the
        // message points into the `BaseConsumer` value). The message itself
        // is librdkafka's, kept by the fetch event inside the
        // `BorrowedMessage` and destroyed by its drop, which librdkafka
        // requires to happen before the client (`rd_kafka_t`) is destroyed.
        // That is what `hold` ensures in place of the borrow: it keeps an
        // `Arc` of the consumer whose poll returned `msg` (the caller's
        // promise); rdkafka destroys the `rd_kafka_t` only in the drop of
        // that `BaseConsumer`, after the last `Arc`; and `Native`'s fields
        // are dropped in declaration order, `msg` before `hold`. `Native`
        // never hands out the `BorrowedMessage<'static>` itself, only
        // references bounded by `&self`.
        let msg =
            unsafe { std::mem::transmute::<BorrowedMessage<'_>, BorrowedMessage<'static>>(msg) };
        Native {
            msg,
            read_headers,
            parsed: OnceLock::new(),
            _hold: hold,
        }
    }

    /// The message's headers. librdkafka parses them at the first ask and
    /// keeps the result in the message (`rd_kafka_message_headers` writes
    /// the message: not safe from two threads at once), so the first ask is
    /// made once, under the `OnceLock`; once it found headers, later asks
    /// only read what librdkafka kept. When it found none (none in the
    /// record, or a malformed header block), librdkafka kept nothing and
    /// is not asked again.
    fn headers(&self) -> Option<&BorrowedHeaders> {
        if !self.read_headers {
            return None;
        }
        if *self.parsed.get_or_init(|| self.msg.headers().is_some()) {
            self.msg.headers()
        } else {
            None
        }
    }

    /// A copy as rdkafka's `OwnedMessage` (what `detach` makes), topic given.
    fn to_owned(&self, topic: &str) -> OwnedMessage {
        OwnedMessage::new(
            self.msg.payload().map(<[u8]>::to_vec),
            self.msg.key().map(<[u8]>::to_vec),
            topic.to_owned(),
            self.msg.timestamp(),
            self.msg.partition(),
            self.msg.offset(),
            self.headers().map(BorrowedHeaders::detach),
        )
    }
}

/// A `Drop` of its own, so that no code can move `msg` out of a `Native`
/// (and keep it past `hold`): the fields are dropped after this, in
/// declaration order.
impl Drop for Native {
    fn drop(&mut self) {}
}

/// A record handed out by [`GuardedConsumer::recv`](crate::GuardedConsumer::recv),
/// with the token that acks it.
///
/// A record dropped without an ack, with every token taken from it
/// ([`ack_token`](Self::ack_token), [`into_parts`](Self::into_parts)) (a task
/// that panicked, a forgotten branch), would hold its partition's commit
/// point for good without a sign: it is reported instead, with a `tracing`
/// warning naming topic, partition and offset, counted in
/// [`Stats::records_abandoned`](crate::Stats::records_abandoned), listed in
/// [`PartitionStatus::abandoned`](crate::PartitionStatus::abandoned) and the
/// shutdown report. Ack it later with
/// [`ack_offset`](crate::GuardedConsumer::ack_offset) to release the partition.
///
/// A record is librdkafka's own message, not a copy: [`key`](Self::key),
/// [`payload`](Self::payload) and [`headers`](Self::headers) point into the
/// fetch response it came in, which stays in memory while any record of it
/// is kept (up to `max.partition.fetch.bytes` per partition and fetch,
/// 1 MiB by default); [`message`](Self::message) and
/// [`into_parts`](Self::into_parts) make a copy. A record also keeps
/// librdkafka's client alive: one kept after
/// [`shutdown`](crate::GuardedConsumer::shutdown) still reads whole (the
/// consumer has left its group all the same), and the client is destroyed,
/// on a thread of its own, when the last such record is dropped.
pub struct Record {
    native: Native,
    /// A copy for [`message`](Self::message), made at its first call.
    owned: OnceLock<OwnedMessage>,
    pub(crate) token: AckToken,
    /// Created by the first `ack_token`: then the tokens report the drop.
    ticket: OnceLock<Arc<Ticket>>,
    /// Acked or split: nothing to report on drop.
    settled: bool,
    /// Handed to the application (a record never handed out is not its to ack).
    pub(crate) handed: bool,
}

impl Record {
    pub(crate) fn new(native: Native, token: AckToken) -> Record {
        Record {
            native,
            owned: OnceLock::new(),
            token,
            ticket: OnceLock::new(),
            settled: false,
            handed: false,
        }
    }
    /// The Kafka message as rdkafka's [`OwnedMessage`] (implements
    /// [`rdkafka::Message`]): a copy of key, payload, topic and headers,
    /// made at the first call and kept with the record. The other
    /// accessors ([`key`](Self::key), [`payload`](Self::payload),
    /// [`headers`](Self::headers), ...) read librdkafka's message in place
    /// and copy nothing.
    pub fn message(&self) -> &OwnedMessage {
        self.owned
            .get_or_init(|| self.native.to_owned(self.topic()))
    }
    /// A token to ack this record from any task, once it is processed.
    /// Tokens of one record share its fate: when the record and all its
    /// tokens are dropped without an ack, the record is reported (see above).
    pub fn ack_token(&self) -> AckToken {
        let ticket = self
            .ticket
            .get_or_init(|| Ticket::new(self.token.slot.clone(), self.token.offset));
        AckToken {
            ticket: Some(ticket.clone()),
            ..self.token.clone()
        }
    }
    /// Acks the record now.
    pub fn ack(mut self) -> AckStatus {
        self.settled = true;
        if let Some(t) = self.ticket.get() {
            t.settle();
        }
        self.token.ack_ref()
    }
    /// Splits the record into its message and its token (which reports the
    /// record if dropped without an ack).
    ///
    /// The message is a copy (the one [`message`](Self::message) made, if
    /// it was called); librdkafka's own is released with the record.
    pub fn into_parts(mut self) -> (OwnedMessage, AckToken) {
        let token = self.ack_token();
        self.settled = true;
        let message = match self.owned.take() {
            Some(m) => m,
            None => self.native.to_owned(self.topic()),
        };
        (message, token)
    }
    /// Topic.
    pub fn topic(&self) -> &str {
        &self.token.slot.tp.topic
    }
    /// Partition.
    pub fn partition(&self) -> i32 {
        self.native.msg.partition()
    }
    /// Offset.
    pub fn offset(&self) -> i64 {
        self.native.msg.offset()
    }
    /// Payload bytes, if any (librdkafka's, not copied).
    pub fn payload(&self) -> Option<&[u8]> {
        self.native.msg.payload()
    }
    /// Key bytes, if any (librdkafka's, not copied).
    pub fn key(&self) -> Option<&[u8]> {
        self.native.msg.key()
    }
    /// Timestamp.
    pub fn timestamp(&self) -> Timestamp {
        self.native.msg.timestamp()
    }
    /// Headers, if the record has any and
    /// [`read_headers`](crate::GuardBuilder::read_headers) is on (the
    /// default). librdkafka parses them at the first call (from any thread;
    /// once per record), not on the poll thread.
    pub fn headers(&self) -> Option<&BorrowedHeaders> {
        self.native.headers()
    }
}

impl Drop for Record {
    fn drop(&mut self) {
        // With tokens taken, the last of them (or of this record's hold on
        // the ticket) reports.
        if self.handed
            && !self.settled
            && self.ticket.get().is_none()
            && !self.token.slot.is_revoked()
        {
            self.token.slot.abandon(self.token.offset);
        }
    }
}

impl fmt::Debug for Record {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Record")
            .field("topic", &self.topic())
            .field("partition", &self.partition())
            .field("offset", &self.offset())
            .field("epoch", &self.token.epoch())
            .finish()
    }
}

/// What the poll thread sends to the front-end.
pub(crate) enum Delivery {
    Batch(Vec<Record>),
    Error(Error),
    /// Wakes a waiting `recv` ([`ConsumerHandle::stop`](crate::ConsumerHandle::stop)).
    Wake,
}

// A record goes to other tasks and threads, and is shared by reference.
// `BorrowedMessage` is `Send + Sync` by rdkafka's own declaration; what makes
// that hold for a record: librdkafka destroys a message from any thread
// (its references to the fetch buffer and partition are atomic counts), the
// accessors read fields librdkafka no longer writes once the message was
// handed out (`rd_kafka_message_timestamp` included), and the one call that
// writes the message, the first ask for headers, runs once under a
// `OnceLock` ([`Native::headers`]).
const _: fn() = || {
    fn send_sync<T: Send + Sync>() {}
    send_sync::<Record>();
};
