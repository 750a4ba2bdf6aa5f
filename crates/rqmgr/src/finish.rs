//! Finishing a message whose deliveries are all done (`qmgr_active_done()`).
//!
//! The steps and their order are Postfix's, because each one's outcome
//! feeds the next and the tools that read the queue see the intermediate
//! states:
//! 1. a non-empty `bounce/` log is flushed to the sender as a
//!    non-delivery notice (an empty one is removed);
//! 2. a failed message whose file is no longer mode 0700 (an agent marked
//!    it corrupt) goes to `corrupt/`;
//! 3. recipients still unread are read now, and the message goes on;
//! 4. success notices and trace reports are flushed where asked for;
//! 5. a failed message past its lifetime bounces with the `defer/` log
//!    ("expired, returned to sender"); otherwise a due delay warning goes
//!    out once and the `W` record is set to -1;
//! 6. a failed message moves to `deferred/` with its next attempt as file
//!    time; a successful one is unlinked and logged `removed`.
//!
//! What to do in steps 5 and 6 is decided by disposition.rs; this module
//! carries it out. The message leaves [`Core::messages`] here, except when
//! step 3 reads more of it.

use rqmgr_ipc::bounce::{bounce_flags, BounceCommand};
use rqmgr_queue::dirs::QueueName;
use rqmgr_sched::{Event, MessageId};

use crate::disposition::{self, FinalStep, Finished, Lifetimes, Notice};
use crate::message::{
    ActiveMessage, DEL_REQ_FLAG_RECORD, DEL_REQ_FLAG_REC_DLY_SENT, DEL_REQ_FLAG_USR_VRFY,
    READ_FLAG_NOTIFY_SUCCESS,
};
use crate::scan::FORCE_EXPIRE;
use crate::state::Core;

impl Core {
    /// Steps 1 to 3; `refill` says the scheduler wants more recipients.
    pub(crate) async fn message_done(&mut self, msg: MessageId, deferred: bool, refill: bool) {
        let Some(mut m) = self.messages.remove(&msg) else {
            return;
        };
        if deferred {
            m.status |= 1;
        }
        let id = m.queue_id.clone();
        match self.spool.log_size(QueueName::Bounce, &id) {
            Some(0) => self.spool.remove_empty_bounce_log(&id),
            Some(_) => {
                let service = self.p.bounce_service_name.clone();
                m.status |= self
                    .notify(&m, &service, BounceCommand::Flush, 0, true)
                    .await;
            }
            None => {}
        }
        if m.status != 0 && self.spool.ready(QueueName::Active, &id).is_none() {
            self.spool.save_corrupt(&id);
            if refill {
                self.sched
                    .handle(Event::MessageAbandoned { msg }, self.now.sched());
            }
            return;
        }
        if refill {
            self.messages.insert(msg, m);
            self.refill(msg, false).await;
            return;
        }
        self.message_final(m).await;
    }

    /// Steps 4 to 6.
    async fn message_final(&mut self, mut m: ActiveMessage) {
        let id = m.queue_id.clone();
        let tflags = m.tflags();
        if tflags & (DEL_REQ_FLAG_USR_VRFY | DEL_REQ_FLAG_RECORD | DEL_REQ_FLAG_REC_DLY_SENT) != 0
            || m.env.size.rflags & READ_FLAG_NOTIFY_SUCCESS != 0
        {
            let service = self.p.trace_service_name.clone();
            let status = self
                .notify(&m, &service, BounceCommand::Trace, tflags, false)
                .await;
            if let (0, Some(offset)) = (status, m.env.trace_flags_offset) {
                self.spool
                    .update(&id, |f| rqmgr_queue::update::kill_record(f, offset));
            }
            m.status |= status;
        }
        let finished = Finished {
            failed: m.status != 0,
            force_expire: m.qflags & FORCE_EXPIRE != 0,
            null_sender: m.env.sender.is_empty(),
            create_time: m.env.create_time,
            warn_time: m.env.warn_time.map(|w| w.time),
        };
        let lifetimes = Lifetimes {
            mail: self.p.maximal_queue_lifetime,
            bounce: self.p.bounce_queue_lifetime,
        };
        let service = self.p.defer_service_name.clone();
        match disposition::notice(&finished, self.now.secs(), lifetimes) {
            Notice::None => {}
            Notice::Expire(how) => {
                self.log.info(&format!(
                    "{}: from=<{}>, status={}, returned to sender",
                    id,
                    String::from_utf8_lossy(&m.env.sender),
                    how.as_str()
                ));
                // The defer service marks the recipients it returns as
                // done, as Postfix's adefer_flush() asks.
                let flags = bounce_flags::DELRCPT;
                m.status = self
                    .notify(&m, &service, BounceCommand::Flush, flags, true)
                    .await;
            }
            Notice::Warn => {
                let status = self
                    .notify(&m, &service, BounceCommand::Warn, 0, false)
                    .await;
                if let (0, Some(w)) = (status, m.env.warn_time) {
                    self.spool
                        .update(&id, |f| rqmgr_queue::update::set_warn_time(f, w.offset, -1));
                }
            }
        }
        let step = disposition::final_step(
            m.status != 0,
            self.now.secs(),
            m.env.create_time,
            self.p.minimal_backoff_time,
            self.p.maximal_backoff_time,
        );
        match step {
            FinalStep::Defer { until } => self.spool.defer(&id, QueueName::Deferred, until),
            FinalStep::Remove => self.spool.remove_done(&id),
        }
    }
}
