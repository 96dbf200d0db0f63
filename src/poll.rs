//! The poll thread of the owned front-end: polls the consumer (records,
//! rebalance callbacks, errors) and hands records over in batches.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::thread::JoinHandle;
use std::time::Duration;

use rdkafka::Message;
use rdkafka::consumer::{BaseConsumer, Consumer, ConsumerContext};
use rdkafka::error::KafkaError;
use rdkafka::message::BorrowedMessage;
use tokio::sync::{mpsc, oneshot};
use tracing::warn;

use crate::assignment::{AckToken, Assignment, PartitionSlot};
use crate::delivery::{Delivery, Record};
use crate::error::Error;
use crate::rebalance::GuardContext;
use crate::stats::Metrics;
use crate::surface::ErrorPolicy;
use crate::threads::{self, GuardThread, Lifecycle};

/// A batch is never allocated larger than this up front, whatever `batch_size` says.
const MAX_PREALLOCATED: usize = 4096;

/// What the poll thread works with.
pub(crate) struct Poller<C: ConsumerContext + 'static> {
    pub consumer: Arc<BaseConsumer<GuardContext<C>>>,
    pub assignment: Arc<Assignment>,
    pub metrics: Arc<Metrics>,
    pub life: Arc<Lifecycle>,
    pub tx: mpsc::Sender<Delivery>,
    pub done: oneshot::Sender<()>,
    pub poll_timeout: Duration,
    pub batch_size: usize,
    /// For the events.
    pub group: String,
    /// The error policy: what reaches `recv()` besides records.
    pub errors: ErrorPolicy,
    /// Unit tests only: the thread panics once it runs.
    #[cfg(test)]
    pub panics: bool,
}

impl<C: ConsumerContext + 'static> Poller<C> {
    /// Starts the poll thread.
    pub(crate) fn start(self) -> std::io::Result<JoinHandle<()>> {
        threads::spawn(GuardThread::Poll, move || self.run())
    }

    fn new_batch(&self) -> Vec<Record> {
        Vec::with_capacity(self.batch_size.min(MAX_PREALLOCATED))
    }

    fn run(mut self) {
        // A local, so dropped before `self` (and its sender): a death is
        // visible before `recv` sees the channel close.
        let _exit = self.life.exit_guard(GuardThread::Poll);
        #[cfg(test)]
        if self.panics {
            panic!("injected: the poll thread dies");
        }
        let mut batch = self.new_batch();
        let mut last: Option<Arc<PartitionSlot>> = None;
        while !self.life.is_stopped() {
            if self.life.is_draining() {
                // Serve callbacks only; fetched records are not handed out (nor
                // registered, so they never count for a commit).
                batch.clear();
                last = None;
                let _ = self.consumer.poll(self.poll_timeout);
                continue;
            }
            self.errors.tick(&self.consumer);
            let timeout = if batch.is_empty() {
                self.poll_timeout
            } else {
                Duration::ZERO
            };
            match self.consumer.poll(timeout) {
                None => {
                    if !batch.is_empty() {
                        self.hand_over(&mut batch);
                    }
                }
                Some(Ok(m)) => {
                    batch.push(self.to_record(&mut last, &m));
                    if batch.len() >= self.batch_size {
                        self.hand_over(&mut batch);
                    }
                }
                Some(Err(KafkaError::PartitionEOF(_))) => {}
                Some(Err(e)) => {
                    if let Some((code, reason)) = self.consumer.client().fatal_error() {
                        warn!(group = %self.group, error_code = ?code, %reason, "fatal consumer error; polling stops");
                        let _ = self.tx.blocking_send(Delivery::Error(Error::Fatal(e)));
                        break;
                    }
                    self.errors.on_error(&e, &self.consumer);
                }
            }
        }
        drop(last);
        let _ = self.done.send(());
    }

    /// Registers a batch's offsets with their slots (one lock per run of
    /// records of the same slot), drops records refused (revoked slot, offset
    /// not increasing), and sends the rest. When the receiver is gone, stops
    /// handing out.
    fn hand_over(&self, batch: &mut Vec<Record>) {
        let mut refused: Vec<usize> = Vec::new();
        let mut start = 0;
        while start < batch.len() {
            let slot = batch[start].token.slot.clone();
            let run = batch[start..]
                .iter()
                .take_while(|r| Arc::ptr_eq(&r.token.slot, &slot))
                .count();
            slot.deliver_run(
                batch[start..start + run].iter().map(|r| r.token.offset),
                |i| refused.push(start + i),
            );
            start += run;
        }
        if !refused.is_empty() {
            let mut i = 0;
            batch.retain(|_| {
                i += 1;
                refused.binary_search(&(i - 1)).is_err()
            });
            self.metrics
                .skipped_revoked
                .fetch_add(refused.len() as u64, Ordering::Relaxed);
        }
        self.metrics
            .delivered
            .fetch_add(batch.len() as u64, Ordering::Relaxed);
        if batch.is_empty() {
            return;
        }
        let full = std::mem::replace(batch, self.new_batch());
        if self.tx.blocking_send(Delivery::Batch(full)).is_err() {
            self.life.drain();
        }
    }

    /// A record for a polled message; [`Self::hand_over`] registers its offset
    /// with its slot before the application can see it.
    #[inline]
    fn to_record(&self, last: &mut Option<Arc<PartitionSlot>>, m: &BorrowedMessage<'_>) -> Record {
        let (topic, partition, offset) = (m.topic(), m.partition(), m.offset());
        let slot = match last {
            Some(s) if s.tp.partition == partition && &*s.tp.topic == topic && !s.is_revoked() => {
                s.clone()
            }
            _ => {
                let s = self.assignment.get_or_assign(topic, partition);
                *last = Some(s.clone());
                s
            }
        };
        Record {
            message: m.detach(),
            token: AckToken::new(slot, offset),
        }
    }
}
