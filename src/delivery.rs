//! A record as the owned front-end hands it out: the message and its ack token.

use std::fmt;

use rdkafka::Message;
use rdkafka::message::OwnedMessage;

use crate::assignment::{AckStatus, AckToken};
use crate::error::Error;

/// A record handed out by [`GuardedConsumer::recv`](crate::GuardedConsumer::recv),
/// with the token that acks it.
pub struct Record {
    pub(crate) message: OwnedMessage,
    pub(crate) token: AckToken,
}

impl Record {
    /// The Kafka message (implements [`rdkafka::Message`]).
    pub fn message(&self) -> &OwnedMessage {
        &self.message
    }
    /// A token to ack this record from any task, once it is processed.
    pub fn ack_token(&self) -> AckToken {
        self.token.clone()
    }
    /// Acks the record now.
    pub fn ack(self) -> AckStatus {
        self.token.ack()
    }
    /// Splits the record into its message and its token.
    pub fn into_parts(self) -> (OwnedMessage, AckToken) {
        (self.message, self.token)
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
