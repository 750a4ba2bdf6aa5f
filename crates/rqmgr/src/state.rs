//! What the queue manager knows between events: the configuration, the
//! scheduler, the active queue's messages and the clients it keeps open.
//!
//! [`Core`] is shared by the steps of a message's life, each in its own
//! module as an `impl Core` block: activate.rs brings a message in,
//! finish.rs finishes it, notify.rs speaks to the bounce, defer and trace
//! services. The event loop (runtime.rs) owns a `Core` and the things that
//! only the loop touches (scans, agent connections, channels).
//!
//! Invariants: a message is in [`Core::messages`] from the moment its file
//! is in `active/` and read, until the file leaves `active/`; the scheduler
//! knows a message exactly while it is there. [`Core::now`] is the time of
//! the event being handled (see clock.rs); the loop renews it.

use std::sync::Arc;

use rqmgr_ipc::rewrite::RewriteClient;
use rqmgr_sched::{FxHashMap, MessageId, Scheduler};
use tokio::sync::mpsc::UnboundedSender;

use crate::clock::Now;
use crate::logging::Logger;
use crate::message::ActiveMessage;
use crate::metrics::Metrics;
use crate::notify::NoticeDone;
use crate::operator::Control;
use crate::params::QmgrParams;
use crate::postfix_version::Compat;
use crate::spool::Spool;

/// The queue manager's state; see the module documentation.
#[derive(Debug)]
pub(crate) struct Core {
    /// The configuration, validated.
    pub(crate) p: QmgrParams,
    /// What differs with the Postfix release we serve.
    pub(crate) compat: Compat,
    /// Where log lines go (and fatal errors end).
    pub(crate) log: Arc<Logger>,
    /// The queue directory.
    pub(crate) spool: Spool,
    /// The scheduler: which recipients go where, and when.
    pub(crate) sched: Scheduler,
    /// The active queue: what the scheduler's message numbers stand for.
    /// Boxed: a message is some 750 bytes, and a hash table keeps up to
    /// twice as many slots as entries, so unboxed the empty slots alone
    /// would cost more than the messages in a full active queue.
    pub(crate) messages: FxHashMap<MessageId, Box<ActiveMessage>>,
    /// The number the next message gets.
    pub(crate) next_msg: u64,
    /// trivial-rewrite, for resolving recipients.
    pub(crate) rewrite: RewriteClient,
    /// The time of the event being handled.
    pub(crate) now: Now,
    /// Where notice tasks report their answers (notify.rs).
    pub(crate) notices: UnboundedSender<NoticeDone>,
    /// Counters for Prometheus (metrics.rs).
    pub(crate) metrics: Metrics,
    /// Operators' overrides, the deferred index, the state file
    /// (operator.rs).
    pub(crate) control: Control,
}

impl Core {
    /// Takes the next message number.
    pub(crate) fn new_message_id(&mut self) -> MessageId {
        let id = MessageId(self.next_msg);
        self.next_msg += 1;
        id
    }

    /// Frees in-core recipients the scheduler can no longer name.
    pub(crate) fn release(&mut self, msg: MessageId, rcpts: &[u32]) {
        if let Some(m) = self.messages.get_mut(&msg) {
            for &r in rcpts {
                m.rcpts.release(r as usize);
            }
        }
    }
}
