//! The poll thread of the owned front-end: polls the consumer (records,
//! rebalance callbacks, errors) and hands records over in batches. It never
//! blocks on the application: the hand-off is unbounded and kept small by
//! pausing partitions ([`crate::flow`]); this thread is the only one that
//! pauses and resumes the consumer's partitions.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use rdkafka::Message;
use rdkafka::consumer::{BaseConsumer, Consumer, ConsumerContext};
use rdkafka::error::KafkaError;
use rdkafka::message::BorrowedMessage;
use rdkafka::{Offset, TopicPartitionList};
use tokio::sync::{mpsc, oneshot};
use tracing::{debug, warn};

use crate::assignment::{AckToken, Assignment, PartitionSlot};
use crate::backlog::{BACKLOG_GRACE, Backlog};
use crate::commit::handle::{CommitHandle, RestartJob};
use crate::delivery::{BatchHold, Delivery, Native, Record};
use crate::error::Error;
use crate::flow::{FlowLimits, FlowState};
use crate::partition::TopicPartition;
use crate::rebalance::GuardContext;
use crate::stats::Metrics;
use crate::surface::ErrorPolicy;
use crate::threads::{self, GuardThread, Lifecycle};

/// A batch is never allocated larger than this up front, whatever `batch_size` says.
const MAX_PREALLOCATED: usize = 4096;

/// How often flow control looks at the partitions while records flow.
const REGULATE_EVERY: Duration = Duration::from_millis(5);

/// The longest poll while the guard holds partitions back, so they are
/// resumed soon after the application caught up.
const HELD_BACK_POLL: Duration = Duration::from_millis(5);

/// While records flow, the front-end's requests are looked at every this
/// many polls (and whenever the batch was just handed over).
const REQUESTS_EVERY: u32 = 64;

/// How long a seek waits for librdkafka.
pub(crate) const SEEK_TIMEOUT: Duration = Duration::from_secs(10);

/// What the front-end asks of the poll thread.
#[derive(Debug)]
pub(crate) enum PollRequest {
    /// Look at the partitions now (the application paused or resumed one).
    Regulate,
    /// Move a partition's read position (between two polls, so every
    /// record polled after it belongs to the new position).
    Seek {
        topic: String,
        partition: i32,
        offset: Offset,
        reply: oneshot::Sender<Result<(), Error>>,
    },
}

/// What the poll thread works with.
pub(crate) struct Poller<C: ConsumerContext + 'static> {
    pub consumer: Arc<BaseConsumer<GuardContext<C>>>,
    pub assignment: Arc<Assignment>,
    pub commits: CommitHandle,
    pub metrics: Arc<Metrics>,
    pub life: Arc<Lifecycle>,
    pub tx: mpsc::UnboundedSender<Delivery>,
    /// Records sent to the front-end and not yet received by the application.
    pub backlog: Arc<Backlog>,
    pub requests: std::sync::mpsc::Receiver<PollRequest>,
    pub limits: FlowLimits,
    pub done: oneshot::Sender<()>,
    /// Set when the front-end was dropped without `shutdown`: the poll
    /// thread closes the consumer at its end (records the application still
    /// holds keep it alive, see [`close`]).
    pub close_at_end: Arc<AtomicBool>,
    pub poll_timeout: Duration,
    pub batch_size: usize,
    /// Whether records give their headers (librdkafka parses them at the
    /// first ask, on the thread that asks).
    pub read_headers: bool,
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

    /// A hold on the consumer for the records of a batch ([`Native`]).
    fn new_hold(&self) -> Arc<BatchHold> {
        BatchHold::new(self.consumer.clone())
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
        let mut hold = self.new_hold();
        let mut last: Option<Arc<PartitionSlot>> = None;
        let mut turns: u32 = 0;
        let mut flow = Flow {
            state: FlowState::default(),
            checked: Instant::now(),
            tails_at: Instant::now(),
        };
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
            // Between batches, and at least every few polls inside a long one
            // (not at every record: a `try_recv` per record shows in profiles).
            turns = turns.wrapping_add(1);
            if batch.is_empty() || turns.is_multiple_of(REQUESTS_EVERY) {
                self.serve_requests(&mut batch, &mut flow);
            }
            let timeout = if !batch.is_empty() {
                Duration::ZERO
            } else if flow.state.holds_back() {
                self.poll_timeout.min(HELD_BACK_POLL)
            } else {
                self.poll_timeout
            };
            match self.consumer.poll(timeout) {
                None => self.idle(&mut batch, &mut flow),
                Some(Ok(m)) => {
                    if batch.is_empty() && Arc::strong_count(&hold) > 1 {
                        // The last batch's records are out: a new hold, so
                        // that they and these share no count.
                        hold = self.new_hold();
                    }
                    batch.push(self.to_record(&mut last, &hold, m));
                    if batch.len() >= self.batch_size {
                        let urgent = self.hand_over(&mut batch);
                        self.regulate(&mut flow, urgent);
                    }
                }
                Some(Err(KafkaError::PartitionEOF(_))) => {}
                Some(Err(e)) => {
                    if let Some((code, reason)) = self.consumer.client().fatal_error() {
                        warn!(group = %self.group, error_code = ?code, %reason, "fatal consumer error; polling stops");
                        let _ = self.tx.send(Delivery::Error(Error::Fatal(e)));
                        break;
                    }
                    self.errors.on_error(&e, &self.consumer);
                }
            }
        }
        drop(last);
        self.finish(batch, hold);
    }

    /// Nothing polled: hands the batch over, regulates, marks tails now and
    /// then.
    fn idle(&self, batch: &mut Vec<Record>, flow: &mut Flow) {
        let urgent = !batch.is_empty() && self.hand_over(batch);
        self.regulate(flow, urgent);
        if flow.tails_at.elapsed() >= TAILS_EVERY {
            flow.tails_at = Instant::now();
            self.mark_tails();
        }
    }

    /// The poll thread's end: says it is done, and closes the consumer when
    /// the front-end was dropped (records the application holds keep it).
    fn finish(self, batch: Vec<Record>, hold: Arc<BatchHold>) {
        let _ = self.done.send(());
        if self.close_at_end.load(Ordering::Acquire) {
            // This thread's records and hold first: what is left holding the
            // consumer is the application's records (or nothing).
            drop(batch);
            drop(hold);
            // And the hand-off and the requests: a `stop` or a `seek` from a
            // handle is answered at once, not after the close.
            let Poller {
                consumer,
                tx,
                requests,
                ..
            } = self;
            drop((tx, requests));
            close(consumer);
        }
    }

    /// Serves what the front-end asked since the last turn; a seek hands
    /// the batch over first, so that every record polled after it belongs
    /// to the new position.
    fn serve_requests(&self, batch: &mut Vec<Record>, flow: &mut Flow) {
        let mut asked = false;
        while let Ok(request) = self.requests.try_recv() {
            asked = true;
            if let PollRequest::Seek {
                topic,
                partition,
                offset,
                reply,
            } = request
            {
                if !batch.is_empty() {
                    self.hand_over(batch);
                }
                let _ = reply.send(self.seek(&topic, partition, offset));
            }
        }
        if asked {
            self.regulate(flow, true);
        }
    }

    /// The application's seek: librdkafka's, then a new assignment (epoch)
    /// of the partition for the new position, whose commits may go below
    /// what was committed (the application asked for it).
    fn seek(&self, topic: &str, partition: i32, offset: Offset) -> Result<(), Error> {
        let Some(slot) = self.assignment.get(topic, partition) else {
            return Err(Error::NotOwned {
                topic: topic.to_string(),
                partition,
            });
        };
        self.consumer
            .seek(topic, partition, offset, SEEK_TIMEOUT)
            .map_err(Error::Kafka)?;
        debug!(group = %self.group, topic, partition, ?offset, "seek");
        // Commits may go below the committed offset only down to where the
        // application asked to go (the start: anywhere); not for seeks to
        // the end or relative ones.
        let rewind_to = match offset {
            Offset::Offset(o) => Some(o),
            Offset::Beginning => Some(0),
            _ => None,
        };
        self.restart(&slot, rewind_to);
        Ok(())
    }

    /// Ends `old`'s assignment and starts a new one (a new epoch) for the
    /// partition's new read position; its pause carries over.
    fn restart(&self, old: &Arc<PartitionSlot>, rewind_to: Option<i64>) -> Arc<PartitionSlot> {
        let (slot, replaced) = self
            .assignment
            .assign_replacing(&old.tp.topic, old.tp.partition);
        slot.set_user_paused(old.is_user_paused());
        self.commits.restart(RestartJob {
            tp: slot.tp.clone(),
            old: replaced.and_then(|(epoch, cp)| cp.map(|cp| (epoch, cp))),
            new_epoch: slot.epoch,
            rewind_to,
        });
        slot
    }

    /// A record at or below one registered before for its slot means the
    /// read position jumped back (a seek through `consumer()`, an offset
    /// reset): its slot is restarted from it (a new epoch; never committed
    /// below what was committed), so the records are delivered again.
    fn follow_jumps(&self, batch: &mut [Record]) {
        let mut last: Vec<(*const PartitionSlot, i64)> = Vec::new();
        for i in 0..batch.len() {
            let (slot, offset) = (&batch[i].token.slot, batch[i].token.offset);
            if slot.is_revoked() {
                continue;
            }
            let key = Arc::as_ptr(slot);
            let prev = match last.iter_mut().find(|(k, _)| *k == key) {
                Some((_, o)) => std::mem::replace(o, offset),
                None => {
                    last.push((key, offset));
                    slot.last_registered()
                }
            };
            if offset > prev {
                continue;
            }
            let slot = slot.clone();
            warn!(group = %self.group, topic = %slot.tp.topic, partition = slot.tp.partition, offset, previous = prev, "read position jumped back (a seek through consumer(), or an offset reset): delivering from there again; nothing is committed below the committed offset");
            let new = self.restart(&slot, None);
            for r in batch[i..]
                .iter_mut()
                .filter(|r| Arc::ptr_eq(&r.token.slot, &slot))
            {
                r.token.slot = new.clone();
            }
            last.retain(|(k, _)| *k != key);
            last.push((Arc::as_ptr(&new), offset));
        }
    }

    /// Idle, with every polled record handed over: a partition whose
    /// records were all acked and whose position is past the last of them
    /// skipped records the consumer never returns (transaction markers,
    /// aborted transactions with `read_committed`); its commit may go to the
    /// position, so that lag reaches 0.
    fn mark_tails(&self) {
        let slots = self.assignment.all();
        if !slots
            .iter()
            .any(|s| s.outstanding_hint() == 0 && s.last_registered() >= 0)
        {
            return;
        }
        let Ok(positions) = self.consumer.position() else {
            return;
        };
        for e in positions.elements() {
            let rdkafka::Offset::Offset(position) = e.offset() else {
                continue;
            };
            if let Some(slot) = slots
                .iter()
                .find(|s| s.tp.partition == e.partition() && &*s.tp.topic == e.topic())
                && slot.outstanding_hint() == 0
            {
                slot.set_tail(position);
            }
        }
    }

    /// Flow control: pauses and resumes partitions as [`FlowState::decide`]
    /// says; at most every [`REGULATE_EVERY`] unless `now`.
    fn regulate(&self, flow: &mut Flow, now: bool) {
        if !now && flow.checked.elapsed() < REGULATE_EVERY {
            return;
        }
        flow.checked = Instant::now();
        let slots: Vec<_> = self.assignment.all().iter().map(|s| s.figures()).collect();
        let mut backlog = self.backlog.get();
        if backlog >= self.limits.backlog && !flow.state.is_backlogged() {
            // Full: give the application a moment to catch up before pausing
            // (a pause costs a refetch; see `backlog`).
            let life = &self.life;
            self.backlog
                .wait_drained(BACKLOG_GRACE, || life.is_stopped() || life.is_draining());
            backlog = self.backlog.get();
        }
        let d = flow.state.decide(self.limits, backlog, &slots);
        if !d.pause.is_empty() {
            let guard_paused = d
                .pause
                .iter()
                .filter(|tp| !slots.iter().any(|s| &s.tp == *tp && s.user_paused))
                .count();
            self.metrics
                .partitions_paused
                .fetch_add(guard_paused as u64, Ordering::Relaxed);
            debug!(group = %self.group, partitions = d.pause.len(), backlog, "pausing partitions");
            if let Err(e) = self.consumer.pause(&tpl(&d.pause)) {
                warn!(group = %self.group, error = %e, "could not pause partitions");
            }
        }
        if !d.resume.is_empty() {
            debug!(group = %self.group, partitions = d.resume.len(), backlog, "resuming partitions");
            if let Err(e) = self.consumer.resume(&tpl(&d.resume)) {
                warn!(group = %self.group, error = %e, "could not resume partitions");
            }
        }
    }

    /// Registers a batch's offsets with their slots (one lock per run of
    /// records of the same slot), drops records refused (revoked slot, offset
    /// not increasing), and sends the rest. When the receiver is gone, stops
    /// handing out. True if a flow-control limit was reached on the way (the
    /// backlog, or a partition's outstanding records): regulate now.
    /// With `stored_progress`: the records the stored progress has as done
    /// before this assignment are acked here and never handed out (counted
    /// in `Stats::records_skipped_done`), as `track_or_skip` does for the
    /// own-loop front-end.
    fn skip_done(&self, batch: &mut Vec<Record>) {
        let (done, keep): (Vec<Record>, Vec<Record>) = std::mem::take(batch)
            .into_iter()
            .partition(|r| r.token.slot.done_before(r.token.offset));
        *batch = keep;
        if done.is_empty() {
            return;
        }
        self.metrics
            .records_skipped_done
            .fetch_add(done.len() as u64, Ordering::Relaxed);
        for r in done {
            let _ = r.ack();
        }
    }

    fn hand_over(&self, batch: &mut Vec<Record>) -> bool {
        let mut urgent = false;
        self.follow_jumps(batch);
        let mut refused: Vec<usize> = Vec::new();
        let mut start = 0;
        let mut stored_progress = false;
        while start < batch.len() {
            let slot = batch[start].token.slot.clone();
            stored_progress |= slot.has_progress();
            let run = batch[start..]
                .iter()
                .take_while(|r| Arc::ptr_eq(&r.token.slot, &slot))
                .count();
            slot.deliver_run(
                batch[start..start + run].iter().map(|r| r.token.offset),
                |i| refused.push(start + i),
            );
            urgent |= slot.outstanding_hint() >= self.limits.outstanding_per_partition;
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
        if stored_progress {
            self.skip_done(batch);
        }
        self.metrics
            .delivered
            .fetch_add(batch.len() as u64, Ordering::Relaxed);
        if batch.is_empty() {
            return urgent;
        }
        let full = std::mem::replace(batch, self.new_batch());
        let backlog = self.backlog.add(full.len());
        if self.tx.send(Delivery::Batch(full)).is_err() {
            self.life.drain();
        }
        // Delivered and not acked, all partitions: at most the outstanding
        // total (acked records behind an un-acked one are outstanding too,
        // which `regulate` counts exactly). Records skipped as done are
        // acked by the guard without being delivered.
        let m = &self.metrics;
        let unacked = (m.delivered.load(Ordering::Relaxed)
            + m.records_skipped_done.load(Ordering::Relaxed))
        .saturating_sub(m.acked.load(Ordering::Relaxed));
        urgent || backlog >= self.limits.backlog || unacked >= self.limits.outstanding as u64
    }

    /// A record for a polled message, which it keeps (nothing is copied);
    /// [`Self::hand_over`] registers its offset with its slot before the
    /// application can see it.
    #[inline]
    fn to_record(
        &self,
        last: &mut Option<Arc<PartitionSlot>>,
        hold: &Arc<BatchHold>,
        m: BorrowedMessage<'_>,
    ) -> Record {
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
        // SAFETY: `m` was polled from `self.consumer`, and `hold` holds a
        // clone of that same `Arc` (`new_hold`).
        let native = unsafe { Native::new(m, hold.clone(), self.read_headers) };
        Record::new(native, AckToken::new(slot, offset))
    }
}

/// The poll thread's flow-control state.
struct Flow {
    state: FlowState,
    checked: Instant,
    /// When the tails were last looked at ([`Poller::mark_tails`]).
    tails_at: Instant,
}

/// How often an idle poll thread looks for positions past the last record.
const TAILS_EVERY: Duration = Duration::from_millis(200);

/// Closes the consumer (leaves the group) now and drops this reference to
/// it. Records the application still holds keep librdkafka's client alive
/// (their messages must be destroyed before it, see `delivery::Native`):
/// with others holding it, the close is done here, and the last record's
/// drop only destroys the client (rdkafka then logs that the consumer was
/// already closed). Without others, dropping it closes it. (A guard thread
/// still busy past the shutdown deadline holds it too; it ends by itself.)
pub(crate) fn close<C: ConsumerContext + 'static>(consumer: Arc<BaseConsumer<GuardContext<C>>>) {
    if Arc::strong_count(&consumer) > 1 && !consumer.closed() && consumer.close_queue().is_ok() {
        while !consumer.closed() {
            let _ = consumer.poll(Duration::from_millis(100));
        }
    }
    drop(consumer);
}

fn tpl(tps: &[TopicPartition]) -> TopicPartitionList {
    let mut l = TopicPartitionList::with_capacity(tps.len());
    for tp in tps {
        l.add_partition(&tp.topic, tp.partition);
    }
    l
}
