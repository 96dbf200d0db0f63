//! The only door into the commit worker: commands, each with its reply.
//!
//! The worker owns the coalescing queue, the schedule, the idle re-commit
//! state, the kept and replayed offsets and the batch in flight, and serves one
//! mailbox (the shape of tower's buffer worker). Everything else sends it a
//! command: commit now, revoke (served before anything else), rebalance ended
//! (assign), lost, finish with a deadline. Callers that wait do so with a
//! deadline; a caller that stops waiting says so (see [`Reply`]), and the
//! worker then records what it could not hand back.

use std::sync::Arc;
use std::sync::mpsc::{self, Receiver, Sender};
use std::thread::JoinHandle;

use tokio::sync::oneshot;

pub(crate) use super::command::RestartJob;
use super::command::{
    AssignJob, Command, FinishJob, LostJob, Pending, Reply, RevokeJob, reply_pair,
};
pub(crate) use super::command::{AssignOutcome, Committer, RevokeOutcome, WorkerParts};
use super::view::CommitView;
use super::worker::Worker;
use crate::assignment::{AckSignal, Assignment, PartitionSlot, Ring};
use crate::config::Config;
use crate::deadline::Deadline;
use crate::error::Error;
use crate::partition::{CommittedOffset, TopicPartition};
use crate::stats::Metrics;
use crate::threads::{self, GuardThread, Lifecycle};

/// A handle on the worker: cheap to clone.
#[derive(Clone)]
pub(crate) struct CommitHandle {
    tx: Sender<Command>,
    view: Arc<CommitView>,
    life: Arc<Lifecycle>,
}

/// The worker's inbox, before it starts.
pub(crate) struct Mailbox {
    rx: Receiver<Command>,
    view: Arc<CommitView>,
}

/// A mailbox and its handle. The handle exists before the worker so that the
/// acks' ring and the rebalance context can be built first.
fn mailbox(life: Arc<Lifecycle>) -> (CommitHandle, Mailbox) {
    let (tx, rx) = mpsc::channel();
    let view = Arc::new(CommitView::default());
    (
        CommitHandle {
            tx,
            view: view.clone(),
            life,
        },
        Mailbox { rx, view },
    )
}

/// A mailbox, its handle, and the assignment whose acks ring the worker
/// (with `config`'s commit triggers: `async_commits`, `commit_every`).
pub(crate) fn wire(
    config: &Config,
    metrics: &Arc<Metrics>,
    life: Arc<Lifecycle>,
) -> (CommitHandle, Mailbox, Arc<Assignment>) {
    let (commits, mailbox) = mailbox(life);
    let ring = commits.clone();
    let signal = AckSignal::new(
        metrics.clone(),
        config.async_commits,
        config.commit_every,
        Box::new(move |r| ring.ring(r)),
    );
    let assignment = Arc::new(Assignment::new(Arc::new(signal)));
    (commits, mailbox, assignment)
}

/// Starts the worker on its own thread.
pub(crate) fn start(
    parts: WorkerParts,
    committer: Arc<dyn Committer>,
    mailbox: Mailbox,
    life: Arc<Lifecycle>,
) -> std::io::Result<JoinHandle<()>> {
    threads::spawn(GuardThread::Commit, move || {
        let exit = life.exit_guard(GuardThread::Commit);
        Worker::new(parts, committer, mailbox.rx, mailbox.view).run(exit);
    })
}

/// A worker that runs on the caller's thread, for the benchmarks.
pub(crate) fn bench_worker(
    parts: WorkerParts,
    committer: Arc<dyn Committer>,
    mailbox: Mailbox,
) -> BenchWorker {
    BenchWorker(Worker::new(parts, committer, mailbox.rx, mailbox.view))
}

/// See [`bench_worker`].
pub(crate) struct BenchWorker(Worker);

impl BenchWorker {
    /// One normal commit cycle; how many partition offsets it committed.
    pub(crate) fn cycle(&mut self) -> usize {
        self.0.bench_cycle()
    }
}

impl CommitHandle {
    /// Sends a command; false if the worker is gone.
    fn send(&self, c: Command) -> bool {
        self.tx.send(c).is_ok()
    }

    /// The error for a worker that is gone: it died, or it finished.
    pub(crate) fn gone(&self) -> Error {
        match self.life.died() {
            Some(thread) => Error::ThreadDied { thread },
            None => Error::ShutDown,
        }
    }

    /// The guard stopped (shut down, or a thread died): the error saying so.
    pub(crate) fn stopped(&self) -> Option<Error> {
        (self.life.is_stopped() || self.life.died().is_some()).then(|| self.gone())
    }

    /// For the acks' [`Ring`].
    pub(crate) fn ring(&self, r: Ring) {
        let _ = self.send(Command::Ring(r));
    }

    pub(crate) fn view(&self) -> &CommitView {
        &self.view
    }

    /// Commits everything acked so far; resolves when that commit landed or
    /// was given up.
    pub(crate) async fn commit_now(&self) -> Result<Vec<CommittedOffset>, Error> {
        if let Some(thread) = self.life.died() {
            return Err(Error::ThreadDied { thread });
        }
        let (tx, rx) = oneshot::channel();
        if !self.send(Command::CommitNow(tx)) {
            return Err(self.gone());
        }
        match rx.await {
            Ok(result) => result,
            Err(_) => {
                // The worker answers every caller before it returns, so an
                // unanswered call means it is unwinding: let it finish
                // marking itself dead (bounded), then say which thread died.
                let since = std::time::Instant::now();
                while !self.life.has_ended(GuardThread::Commit)
                    && since.elapsed() < std::time::Duration::from_millis(500)
                {
                    tokio::task::yield_now().await;
                }
                Err(self.gone())
            }
        }
    }

    /// Hands a revoke to the worker and waits for it until `wait_until`.
    /// `None`: the worker is gone or did not answer in time.
    pub(crate) fn revoke(
        &self,
        slots: Vec<Arc<PartitionSlot>>,
        grace: Deadline,
        deadline: Deadline,
        wait_until: Deadline,
    ) -> Option<RevokeOutcome> {
        let (reply, pending) = reply_pair();
        let job = RevokeJob {
            slots,
            grace,
            deadline,
            reply,
        };
        if !self.send(Command::Revoke(job)) {
            return None;
        }
        pending.wait(wait_until)
    }

    /// Tells the worker a rebalance ended with these slots assigned.
    pub(crate) fn assigned(
        &self,
        slots: Vec<Arc<PartitionSlot>>,
        replaced: Vec<(TopicPartition, u64, i64)>,
        stored: Vec<(TopicPartition, i64)>,
        wait_until: Deadline,
    ) -> Option<AssignOutcome> {
        let (reply, pending) = reply_pair();
        let job = AssignJob {
            slots,
            replaced,
            stored,
            reply,
        };
        if !self.send(Command::Assigned(job)) {
            return None;
        }
        pending.wait(wait_until)
    }

    /// Tells the worker a partition's read position jumped (no reply).
    pub(crate) fn restart(&self, job: RestartJob) {
        let _ = self.send(Command::Restart(job));
    }

    /// Tells the worker these assignments were lost (already ended).
    pub(crate) fn lost(
        &self,
        ended: Vec<(Arc<PartitionSlot>, Option<i64>)>,
        wait_until: Deadline,
    ) -> Option<Vec<CommittedOffset>> {
        let (reply, pending) = reply_pair();
        if !self.send(Command::Lost(LostJob { ended, reply })) {
            return None;
        }
        pending.wait(wait_until)
    }

    /// Asks for the final commit within `deadline`; the worker stops after it.
    /// `None`: the worker is gone already.
    pub(crate) fn finish(&self, deadline: Deadline) -> Option<Pending<()>> {
        let (reply, pending) = reply_pair();
        self.send(Command::Finish(FinishJob { deadline, reply }))
            .then_some(pending)
    }

    /// The same, with nobody waiting (the handle was dropped).
    pub(crate) fn finish_detached(&self, deadline: Deadline) {
        let _ = self.send(Command::Finish(FinishJob {
            deadline,
            reply: Reply::detached(),
        }));
    }
}
