//! What goes into the scheduler ([`Event`]) and what comes out ([`Action`]).
//!
//! Identifiers are small integers. [`MessageId`] is chosen by the caller
//! (the daemon keeps the message's envelope and recipient list under it);
//! [`ConnId`] is chosen by the scheduler when it asks for a connection.
//! Recipients are named by their index in the caller's recipient list, so
//! the core holds four bytes per recipient instead of an address.
//! Transport names, next hops, addresses and reasons are bytes
//! ([`ByteString`]), passed on exactly as they came.

use std::fmt;

use crate::bytestring::ByteString;

/// A message in the active queue, named by the caller.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct MessageId(pub u64);

/// A connection to a delivery agent, named by the scheduler.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ConnId(pub u64);

impl fmt::Display for MessageId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "message #{}", self.0)
    }
}

/// A delivery status: an RFC 3463 code and its text, as Postfix's DSN.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Dsn {
    /// Enhanced status code, e.g. `4.4.1`.
    pub status: String,
    /// Human-readable reason, as the agent gave it (it may quote an 8-bit
    /// next hop).
    pub reason: ByteString,
}

impl Dsn {
    /// A status with its reason.
    pub fn new(status: impl Into<String>, reason: impl Into<ByteString>) -> Dsn {
        Dsn {
            status: status.into(),
            reason: reason.into(),
        }
    }

    /// The pseudo next-hop under which the `retry` transport groups
    /// recipients deferred for this reason (`qmgr_error_nexthop()`); the
    /// error(8) agent turns it back into the recipient's status.
    pub fn error_nexthop(&self) -> ByteString {
        let mut nexthop = Vec::with_capacity(self.status.len() + 1 + self.reason.len());
        nexthop.extend_from_slice(self.status.as_bytes());
        nexthop.push(b' ');
        nexthop.extend_from_slice(&self.reason);
        nexthop.into()
    }
}

/// Where trivial-rewrite (or a redirect) sent one recipient.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Route {
    /// Index of the recipient in the caller's list for this message.
    pub rcpt: u32,
    /// The transport (master.cf service) name.
    pub transport: ByteString,
    /// The next hop, as the delivery agent will see it.
    pub nexthop: ByteString,
    /// The resolved recipient address, used to name per-recipient queues.
    pub address: ByteString,
}

/// How a delivery attempt ended, as the agent's reply says.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Outcome {
    /// Status 0: every recipient of the request is done.
    Final,
    /// Non-zero status. With `site` set, the agent blamed the destination
    /// (its DSN status was non-empty): negative feedback. Without it, the
    /// destination is fine (positive feedback) though some recipients wait.
    Deferred {
        /// The destination's problem, already prefixed with
        /// "delivery temporarily suspended: " by the caller.
        site: Option<Dsn>,
    },
    /// No usable reply (malformed or premature disconnect): the message is
    /// retried, and no feedback is given either way.
    Crashed,
}

/// Something that happened, fed to [`crate::Scheduler::handle`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Event {
    /// A message entered the active queue (or a refill read more of its
    /// recipients). `routes` holds the recipients still to be delivered.
    Message {
        /// The caller's name for the message.
        msg: MessageId,
        /// Recipients, resolved.
        routes: Vec<Route>,
        /// The file holds more recipients than were read this time.
        more: bool,
        /// The message is being flushed (fast flush / group-read bit):
        /// dead destinations it needs come back to life.
        flush_each: bool,
        /// One recipient per delivery, whatever the transport allows:
        /// VERP mail, whose sender is rewritten per recipient.
        single_rcpt: bool,
    },
    /// The caller could not read the rest of the message (its file went
    /// to `corrupt/` or vanished): forget it without an
    /// [`Action::MessageDone`]. Deliveries still busy finish normally.
    MessageAbandoned {
        /// The message.
        msg: MessageId,
    },
    /// Optional, after an [`Event::Message`] whose `more` was set: how
    /// many recipients the message's file still holds beyond those read so
    /// far (from its size record). qmgr's preemption uses it to judge how
    /// big a job will get (`rcpt_unread`); without it only in-core
    /// recipients count. Ignored for unknown or fully read messages.
    MessageInfo {
        /// The message.
        msg: MessageId,
        /// Recipients not yet read.
        unread: u32,
    },
    /// The delivery agent behind `conn` announced itself: it wants work.
    AgentReady {
        /// The connection.
        conn: ConnId,
    },
    /// Connecting to the agent, or sending it the request, failed: the
    /// transport is unusable for `transport_retry_time`.
    AgentUnavailable {
        /// The connection.
        conn: ConnId,
        /// Why, e.g. `4.3.0 mail transport unavailable`.
        dsn: Dsn,
    },
    /// The agent replied (or failed to) to the request sent on `conn`.
    Delivered {
        /// The connection.
        conn: ConnId,
        /// What the reply said.
        outcome: Outcome,
    },
    /// The `F` trigger: revive every dead transport and destination.
    FlushDead,
}

/// Something the caller must do, taken from [`crate::Scheduler::poll_action`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Action {
    /// Connect to the transport's delivery agent; report
    /// [`Event::AgentReady`] or [`Event::AgentUnavailable`] for `conn`.
    Connect {
        /// The connection's name.
        conn: ConnId,
        /// The transport.
        transport: ByteString,
    },
    /// Send this delivery request on `conn`, then report [`Event::Delivered`].
    Deliver {
        /// The connection.
        conn: ConnId,
        /// The message.
        msg: MessageId,
        /// The next hop for the request, byte for byte as routed.
        nexthop: ByteString,
        /// Recipient indexes.
        rcpts: Vec<u32>,
        /// Destination flags (session caching hints, `DEL_REQ_FLAG_CONN_*`).
        dest_flags: u32,
    },
    /// Close `conn`: there is nothing for it to do.
    Close {
        /// The connection.
        conn: ConnId,
    },
    /// Defer one recipient synchronously through the defer service,
    /// because even the `retry` transport is dead.
    DeferRecipient {
        /// The message.
        msg: MessageId,
        /// Recipient index.
        rcpt: u32,
        /// Why.
        dsn: Dsn,
    },
    /// Read more recipients of `msg` and report them with [`Event::Message`].
    Refill {
        /// The message.
        msg: MessageId,
    },
    /// Log this warning line as the queue manager's own
    /// (`warning: ...`): Postfix's advice when one destination clogs the
    /// active queue (`qmgr_clog_warn_time`).
    Warning {
        /// The text after `warning: `; it may name a next hop, whose bytes
        /// it keeps.
        text: ByteString,
    },
    /// Every recipient of `msg` has been handed out and every delivery has
    /// finished: finish the message (bounce/trace flush, defer or remove).
    MessageDone {
        /// The message.
        msg: MessageId,
        /// Some delivery was deferred (or crashed, or a recipient was
        /// deferred by the scheduler itself).
        deferred: bool,
    },
}

/// `DEL_REQ_FLAG_CONN_LOAD`: the agent may reuse a cached session.
pub(crate) const DEST_FLAG_CONN_LOAD: u32 = 2048;
/// `DEL_REQ_FLAG_CONN_STORE`: the agent may cache its session.
pub(crate) const DEST_FLAG_CONN_STORE: u32 = 4096;
