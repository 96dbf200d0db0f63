//! The guard's two threads (poll and commit): the run state both read (one
//! stop signal), and how each of them ended, so that a thread that died is
//! reported to the caller instead of leaving it waiting.

use std::fmt;
use std::sync::Arc;
use std::sync::atomic::{AtomicU8, Ordering};
use std::thread::JoinHandle;

/// One of the guard's own threads.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum GuardThread {
    /// The thread that polls the consumer (records, rebalance callbacks, errors).
    Poll,
    /// The thread that sends every OffsetCommit (the commit worker).
    Commit,
}

impl GuardThread {
    /// The thread's name (`offset-guard-poll`, `offset-guard-commit`).
    pub fn name(&self) -> &'static str {
        match self {
            GuardThread::Poll => "offset-guard-poll",
            GuardThread::Commit => "offset-guard-commit",
        }
    }
}

impl fmt::Display for GuardThread {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

const RUNNING: u8 = 0;
const DRAINING: u8 = 1;
const STOPPED: u8 = 2;

const ALIVE: u8 = 0;
const EXITED: u8 = 1;
const DIED: u8 = 2;

/// Run state shared by the handle and both threads.
///
/// `Running` -> `Draining` (shutdown or drop started: the poll thread hands
/// out no more records but keeps serving rebalance callbacks while the final
/// commit runs) -> `Stopped` (both threads exit). The state only moves forward.
#[derive(Debug)]
pub(crate) struct Lifecycle {
    state: AtomicU8,
    poll: AtomicU8,
    commit: AtomicU8,
}

impl Default for Lifecycle {
    fn default() -> Self {
        Lifecycle {
            state: AtomicU8::new(RUNNING),
            poll: AtomicU8::new(ALIVE),
            commit: AtomicU8::new(ALIVE),
        }
    }
}

impl Lifecycle {
    pub(crate) fn drain(&self) {
        self.state.fetch_max(DRAINING, Ordering::AcqRel);
    }

    /// The one stop signal: both threads exit.
    pub(crate) fn stop(&self) {
        self.state.store(STOPPED, Ordering::Release);
    }

    pub(crate) fn is_draining(&self) -> bool {
        self.state.load(Ordering::Acquire) >= DRAINING
    }

    pub(crate) fn is_stopped(&self) -> bool {
        self.state.load(Ordering::Acquire) == STOPPED
    }

    /// The first thread found dead (it panicked), if any.
    pub(crate) fn died(&self) -> Option<GuardThread> {
        if self.commit.load(Ordering::Acquire) == DIED {
            Some(GuardThread::Commit)
        } else if self.poll.load(Ordering::Acquire) == DIED {
            Some(GuardThread::Poll)
        } else {
            None
        }
    }

    /// The thread returned or died (false while it runs or unwinds).
    pub(crate) fn has_ended(&self, which: GuardThread) -> bool {
        self.cell(which).load(Ordering::Acquire) != ALIVE
    }

    fn cell(&self, which: GuardThread) -> &AtomicU8 {
        match which {
            GuardThread::Poll => &self.poll,
            GuardThread::Commit => &self.commit,
        }
    }

    /// Notes, when dropped, how the current thread ended. Create it first
    /// thing in the thread's body.
    pub(crate) fn exit_guard(self: &Arc<Self>, which: GuardThread) -> ExitGuard {
        ExitGuard {
            life: self.clone(),
            which,
        }
    }
}

/// Records at the end of a guard thread whether it returned or panicked.
/// The commit thread's end also stops the poll thread: without a committer
/// nothing it hands out could be committed.
pub(crate) struct ExitGuard {
    life: Arc<Lifecycle>,
    which: GuardThread,
}

impl Drop for ExitGuard {
    fn drop(&mut self) {
        let died = std::thread::panicking();
        let end = if died { DIED } else { EXITED };
        self.life.cell(self.which).store(end, Ordering::Release);
        if died {
            tracing::error!(thread = %self.which, "offset-guard thread panicked; the guard stops");
        }
        if died || self.which == GuardThread::Commit {
            self.life.stop();
        }
    }
}

/// Spawns one of the guard's threads.
pub(crate) fn spawn(
    which: GuardThread,
    body: impl FnOnce() + Send + 'static,
) -> std::io::Result<JoinHandle<()>> {
    std::thread::Builder::new()
        .name(which.name().into())
        .spawn(body)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_panicking_thread_is_reported_and_stops_the_guard() {
        let life = Arc::new(Lifecycle::default());
        let l = life.clone();
        let h = spawn(GuardThread::Commit, move || {
            let _g = l.exit_guard(GuardThread::Commit);
            panic!("boom");
        })
        .unwrap();
        assert!(h.join().is_err());
        assert_eq!(life.died(), Some(GuardThread::Commit));
        assert!(life.is_stopped());
    }

    #[test]
    fn state_only_moves_forward() {
        let life = Lifecycle::default();
        assert!(!life.is_draining());
        life.stop();
        life.drain();
        assert!(life.is_stopped() && life.is_draining());
        assert_eq!(life.died(), None);
    }
}
