//! The commit path: one worker that owns every OffsetCommit, behind a mailbox.
//!
//! Outside this module only [`handle`] is named: it is the only door into the
//! worker. Inside, the decisions are pure functions with table tests
//! ([`attempt`]: what follows a failed attempt; [`kept`]: offsets kept across a
//! rebalance and what becomes of them at assign; [`schedule`]: when the next
//! cycle is due; [`idle`]: which idle offsets are due; [`queue`]: coalescing),
//! and [`worker`] does the I/O.

mod attempt;
mod command;
pub(crate) mod handle;
mod idle;
mod kept;
mod queue;
mod schedule;
mod stuck;
mod view;
mod worker;
#[cfg(test)]
mod worker_tests;
