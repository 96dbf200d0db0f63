//! The commit path: a coalescing queue and the one worker that commits.

pub(crate) mod idle;
pub(crate) mod queue;
pub(crate) mod worker;

pub use worker::CommittedOffset;
