//! A record as the owned front-end hands it out: the message and its ack token.

use std::fmt;
use std::sync::{Arc, OnceLock};

use rdkafka::Message;
use rdkafka::message::{OwnedMessage, Timestamp};

use crate::assignment::{AckStatus, AckToken, Ticket};
use crate::error::Error;

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
pub struct Record {
    pub(crate) message: OwnedMessage,
    pub(crate) token: AckToken,
    /// Created by the first `ack_token`: then the tokens report the drop.
    ticket: OnceLock<Arc<Ticket>>,
    /// Acked or split: nothing to report on drop.
    settled: bool,
    /// Handed to the application (a record never handed out is not its to ack).
    pub(crate) handed: bool,
}

impl Record {
    pub(crate) fn new(message: OwnedMessage, token: AckToken) -> Record {
        Record {
            message,
            token,
            ticket: OnceLock::new(),
            settled: false,
            handed: false,
        }
    }
    /// The Kafka message (implements [`rdkafka::Message`]).
    pub fn message(&self) -> &OwnedMessage {
        &self.message
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
    pub fn into_parts(mut self) -> (OwnedMessage, AckToken) {
        let token = self.ack_token();
        self.settled = true;
        let empty = OwnedMessage::new(
            None,
            None,
            String::new(),
            Timestamp::NotAvailable,
            0,
            0,
            None,
        );
        (std::mem::replace(&mut self.message, empty), token)
    }
    /// Topic.
    pub fn topic(&self) -> &str {
        self.message.topic()
    }
    /// Partition.
    pub fn partition(&self) -> i32 {
        self.message.partition()
    }
    /// Offset.
    pub fn offset(&self) -> i64 {
        self.message.offset()
    }
    /// Payload bytes, if any.
    pub fn payload(&self) -> Option<&[u8]> {
        self.message.payload()
    }
    /// Key bytes, if any.
    pub fn key(&self) -> Option<&[u8]> {
        self.message.key()
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
