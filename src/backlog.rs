//! The owned front-end's hand-off backlog: records the poll thread sent and
//! [`recv`](crate::GuardedConsumer::recv) has not taken yet, and the short
//! wait of the poll thread for the application to catch up before flow
//! control pauses partitions.
//!
//! Why wait at all: pausing a partition makes librdkafka drop what it
//! prefetched for it and fetch it again after the resume (a fetch round trip,
//! up to about a second here; BENCHMARKS.md, sections 7 and 10). An
//! application that is only a little slower than the poll thread (a burst of
//! records already fetched) catches up within milliseconds; pausing it would
//! cost more than the burst. So when the backlog reaches its limit, the poll
//! thread first waits up to [`BACKLOG_GRACE`] for `recv` to bring it down to
//! half, and pauses only if it did not. The wait is bounded: the poll thread
//! never waits longer than that for the application, so heartbeats
//! (librdkafka's own thread), `max.poll.interval.ms` and rebalance callbacks
//! are served at most that much later.

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Condvar, Mutex, PoisonError};
use std::time::{Duration, Instant};

/// How long the poll thread waits for the application to bring a full
/// backlog down to half before pausing partitions: 100 ms.
pub(crate) const BACKLOG_GRACE: Duration = Duration::from_millis(100);

/// Records sent to the front-end and not yet received, with a wake-up for a
/// poll thread waiting for them to drain.
#[derive(Debug)]
pub(crate) struct Backlog {
    count: AtomicUsize,
    /// The count at or under which a waiting poll thread is woken (half the
    /// backlog limit).
    low: usize,
    /// The poll thread waits in [`Backlog::wait_drained`].
    waiting: AtomicBool,
    lock: Mutex<()>,
    drained: Condvar,
}

impl Backlog {
    /// An empty backlog whose limit is `limit` records.
    pub(crate) fn new(limit: usize) -> Backlog {
        Backlog {
            count: AtomicUsize::new(0),
            low: limit / 2,
            waiting: AtomicBool::new(false),
            lock: Mutex::new(()),
            drained: Condvar::new(),
        }
    }

    /// Records waiting now.
    pub(crate) fn get(&self) -> usize {
        self.count.load(Ordering::Relaxed)
    }

    /// The poll thread sent `n` records; returns the backlog after that.
    pub(crate) fn add(&self, n: usize) -> usize {
        self.count.fetch_add(n, Ordering::Relaxed) + n
    }

    /// `recv` took `n` records; wakes the poll thread if it waits and the
    /// backlog is down to half.
    pub(crate) fn take(&self, n: usize) {
        if n == 0 {
            return;
        }
        // SeqCst with the poll thread's `waiting` store and count load: either
        // it sees this decrement, or this sees it waiting (and wakes it under
        // the lock it checks the count under: no wake-up is lost).
        let after = self.count.fetch_sub(n, Ordering::SeqCst) - n;
        if after <= self.low && self.waiting.load(Ordering::SeqCst) {
            self.wake();
        }
    }

    /// Wakes a waiting poll thread (for shutdown, whatever the count).
    pub(crate) fn wake(&self) {
        let _g = self.lock.lock().unwrap_or_else(PoisonError::into_inner);
        self.drained.notify_all();
    }

    /// The poll thread: waits until the backlog is down to half, `stop()`
    /// says to stop waiting, or `timeout` passed. True if it is down to half.
    pub(crate) fn wait_drained(&self, timeout: Duration, stop: impl Fn() -> bool) -> bool {
        let deadline = Instant::now().checked_add(timeout);
        self.waiting.store(true, Ordering::SeqCst);
        let mut g = self.lock.lock().unwrap_or_else(PoisonError::into_inner);
        let drained = loop {
            if self.count.load(Ordering::SeqCst) <= self.low {
                break true;
            }
            if stop() {
                break false;
            }
            let left = match deadline {
                Some(d) => d.saturating_duration_since(Instant::now()),
                None => Duration::from_secs(1),
            };
            if left.is_zero() {
                break false;
            }
            g = self
                .drained
                .wait_timeout(g, left)
                .unwrap_or_else(PoisonError::into_inner)
                .0;
        };
        drop(g);
        self.waiting.store(false, Ordering::SeqCst);
        drained
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    #[test]
    fn a_wait_ends_when_recv_brings_the_backlog_to_half() {
        let b = Arc::new(Backlog::new(100));
        assert_eq!(b.add(100), 100);
        let taker = {
            let b = b.clone();
            std::thread::spawn(move || {
                // Take one at a time, so the wake comes at exactly half.
                for _ in 0..50 {
                    b.take(1);
                }
            })
        };
        // A long timeout: only the wake-up ends this wait in time.
        let started = Instant::now();
        assert!(b.wait_drained(Duration::from_secs(60), || false));
        assert!(started.elapsed() < Duration::from_secs(30));
        taker.join().unwrap();
        assert_eq!(b.get(), 50);
    }

    #[test]
    fn a_wait_gives_up_after_the_timeout_when_nothing_is_received() {
        let b = Backlog::new(100);
        b.add(100);
        let started = Instant::now();
        assert!(!b.wait_drained(Duration::from_millis(20), || false));
        assert!(started.elapsed() >= Duration::from_millis(20));
    }

    #[test]
    fn a_wait_ends_at_stop_and_at_any_timeout() {
        let b = Backlog::new(100);
        b.add(100);
        assert!(!b.wait_drained(Duration::MAX, || true));
        assert!(!b.wait_drained(Duration::ZERO, || false));
        // Already down to half: no wait.
        b.take(60);
        assert!(b.wait_drained(Duration::ZERO, || false));
    }

    #[test]
    fn no_wake_up_is_lost_between_the_check_and_the_wait() {
        // Many rounds of a taker racing the waiter's check: every wait ends
        // by the wake-up (a lost one would hold the waiter for the minute).
        for _ in 0..500 {
            let b = Arc::new(Backlog::new(2));
            b.add(2);
            let taker = {
                let b = b.clone();
                std::thread::spawn(move || b.take(1))
            };
            assert!(b.wait_drained(Duration::from_secs(60), || false));
            taker.join().unwrap();
        }
    }
}
