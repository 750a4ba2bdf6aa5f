//! rqmgr-ipc: Postfix's attribute protocol and the client side of every
//! service a queue manager talks to, plus the master(8) interface.
//!
//! Job: byte-exact interoperation with Postfix 3.7 to 3.11 daemons (the
//! few differences on the wire are one [`dialect::Dialect`]) —
//! trivial-rewrite ([`rewrite`]), delivery agents ([`deliver`]),
//! bounce/defer/trace/verify/flush ([`bounce`]), master ([`master`]) and
//! trigger clients ([`trigger`]) — over framed streams (the internal
//! `stream` module) built on the attribute codec ([`attr`]). The hidden
//! `fuzzing` module holds the bodies of the `attr_reader` and `agent_io`
//! fuzz targets, which the corpus replay tests run too.
//!
//! Invariants: no panics on bytes from sockets (malformed input is a typed
//! [`error`]); every length is bounded; this crate never logs — errors carry
//! Postfix's warning wording and the daemon logs them.  `unsafe` is denied
//! except where inherited descriptors are adopted (see [`master`]).
//! Limits: async I/O assumes a tokio runtime (current-thread is fine);
//! nothing here is `Send`-dependent.

#![deny(unsafe_code)]

pub mod attr;
pub mod bounce;
pub mod deliver;
pub mod dialect;
pub mod error;
#[doc(hidden)]
pub mod fuzzing;
pub mod master;
pub mod rewrite;
mod stream;
pub mod trigger;

#[cfg(test)]
mod tests;
