//! Postfix queue files and queue directories, as Postfix 3.7's queue
//! manager sees them.
//!
//! Job: everything a queue manager does with the spool except scheduling:
//! record framing ([`record`]), queue IDs ([`queue_id`]), the directory
//! layout with hashing, moves and readiness checks ([`dirs`]), streaming
//! directory scans ([`scan`]), reading a queue file exactly like
//! `qmgr_message_read` ([`message`]), in-place updates ([`update`]), locks
//! ([`lock`]) and, with the `writer` feature, a cleanup-compatible writer
//! for tests, benchmarks and fixtures (`writer`). The hidden `fuzzing`
//! module holds the body of the `record_reader` fuzz target, which the
//! corpus replay test runs too.
//!
//! Invariants: no `unsafe`; no input file can make this crate panic; file
//! content problems are typed [`error::Error`]s that name offset and
//! record, and reproduce Postfix's warning lines.
//!
//! Failure: see [`error`]. Operating-system errors are passed through.
//!
//! Limits: Linux semantics (`flock`, `utimes`). The record format is the
//! same in Postfix 3.7 to 3.11; what differs is how qmgr masks the size
//! record's send options, which the daemon applies by release.

#![forbid(unsafe_code)]

pub mod dirs;
pub mod error;
#[doc(hidden)]
pub mod fuzzing;
pub mod lock;
pub mod message;
pub mod queue_id;
pub mod record;
pub mod scan;
pub mod size;
pub mod update;
#[cfg(any(test, feature = "writer"))]
pub mod writer;
