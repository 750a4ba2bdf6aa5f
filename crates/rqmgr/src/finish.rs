//! Finishing a message whose deliveries are all done (`qmgr_active_done()`).
//!
//! The steps and their order are Postfix's, because each one's outcome
//! feeds the next and the tools that read the queue see the intermediate
//! states:
//! 1. a non-empty `bounce/` log is flushed to the sender as a
//!    non-delivery notice (an empty one is removed);
//! 2. a failed message whose file is no longer mode 0700 (an agent marked
//!    it corrupt) goes to `corrupt/`;
//! 3. recipients still unread are read now, and the message goes on (a
//!    file that still cannot be read goes to `corrupt/`);
//! 4. success notices and trace reports are flushed where asked for;
//! 5. a failed message past its lifetime bounces with the `defer/` log
//!    ("expired, returned to sender"); otherwise a due delay warning goes
//!    out once and the `W` record is set to -1;
//! 6. a failed message moves to `deferred/` with its next attempt as file
//!    time; a successful one is unlinked and logged `removed`.
//!
//! Notices (steps 1, 4 and 5) are asynchronous, as in Postfix: each is sent
//! by a task (notify.rs), and [`Core::notice_answered`] goes on from the
//! step it belongs to when the answer arrives, so a slow bounce service
//! holds up only the messages that wait for it. What to do in steps 5 and
//! 6 is decided by disposition.rs. The message leaves [`Core::messages`] at
//! the end, or when it goes to `corrupt/`.

use rqmgr_ipc::bounce::{bounce_flags, BounceCommand};
use rqmgr_queue::dirs::QueueName;
use rqmgr_sched::{Event, MessageId};

use crate::disposition::{self, FinalStep, Finished, Lifetimes, Notice};
use crate::message::{
    DEL_REQ_FLAG_RECORD, DEL_REQ_FLAG_REC_DLY_SENT, DEL_REQ_FLAG_USR_VRFY, DEL_REQ_TRACE_ONLY_MASK,
    READ_FLAG_NOTIFY_SUCCESS,
};
use crate::notify::{NoticeDone, NoticeStep};
use crate::scan::FORCE_EXPIRE;
use crate::state::Core;

impl Core {
    /// Step 1; `refill` says the scheduler wants more recipients.
    pub(crate) async fn message_done(&mut self, msg: MessageId, deferred: bool, refill: bool) {
        let Some(m) = self.messages.get_mut(&msg) else {
            return;
        };
        // The scheduler counts every recipient deferred on the spot; Postfix
        // counts what defer_append() returned, which is success for an
        // address probe whose result was recorded. For probes `status`
        // already holds what the daemon saw (replies, deferrals on the
        // spot).
        if deferred && m.tflags() & DEL_REQ_TRACE_ONLY_MASK == 0 {
            m.status |= 1;
        }
        let id = m.queue_id.clone();
        match self.spool.log_size(QueueName::Bounce, &id) {
            Some(0) => self.spool.remove_empty_bounce_log(&id),
            Some(_) => {
                let service = self.p.bounce_service_name.clone();
                let step = NoticeStep::BounceFlush { refill };
                self.start_notice(msg, step, &service, BounceCommand::Flush, 0, true);
                return;
            }
            None => {}
        }
        self.after_bounce_flush(msg, refill).await;
    }

    /// Goes on with finishing a message once its notice was answered.
    pub(crate) async fn notice_answered(&mut self, done: NoticeDone) {
        let status = self.notice_status(&done);
        let msg = done.msg;
        let Some(m) = self.messages.get_mut(&msg) else {
            return;
        };
        match done.step {
            NoticeStep::BounceFlush { refill } => {
                m.status |= status;
                self.after_bounce_flush(msg, refill).await;
            }
            NoticeStep::Trace => {
                m.status |= status;
                let (id, offset) = (m.queue_id.clone(), m.env.trace_flags_offset);
                if let (0, Some(offset)) = (status, offset) {
                    self.spool
                        .update(&id, |f| rqmgr_queue::update::kill_record(f, offset));
                }
                self.after_trace(msg);
            }
            NoticeStep::Expire => {
                m.status = status;
                self.final_step(msg);
            }
            NoticeStep::Warn => {
                let (id, warn) = (m.queue_id.clone(), m.env.warn_time);
                if let (0, Some(w)) = (status, warn) {
                    self.spool
                        .update(&id, |f| rqmgr_queue::update::set_warn_time(f, w.offset, -1));
                }
                self.final_step(msg);
            }
        }
    }

    /// Steps 2 and 3, then 4.
    async fn after_bounce_flush(&mut self, msg: MessageId, refill: bool) {
        let Some(m) = self.messages.get(&msg) else {
            return;
        };
        let id = m.queue_id.clone();
        if m.status != 0 && self.spool.ready(QueueName::Active, &id).is_none() {
            self.messages.remove(&msg);
            self.spool.save_corrupt(&id);
            if refill {
                self.sched
                    .handle(Event::MessageAbandoned { msg }, self.now.sched());
            }
            return;
        }
        if refill || m.reread_at_end {
            self.refill(msg, false).await;
            return;
        }
        let tflags = m.tflags();
        if tflags & (DEL_REQ_FLAG_USR_VRFY | DEL_REQ_FLAG_RECORD | DEL_REQ_FLAG_REC_DLY_SENT) != 0
            || m.env.size.rflags & READ_FLAG_NOTIFY_SUCCESS != 0
        {
            let service = self.p.trace_service_name.clone();
            self.start_notice(
                msg,
                NoticeStep::Trace,
                &service,
                BounceCommand::Trace,
                tflags,
                false,
            );
            return;
        }
        self.after_trace(msg);
    }

    /// Step 5: the expiry notice or a delay warning, if one is due.
    fn after_trace(&mut self, msg: MessageId) {
        let Some(m) = self.messages.get(&msg) else {
            return;
        };
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
        let notice = disposition::notice(&finished, self.now.secs(), lifetimes);
        let service = self.p.defer_service_name.clone();
        match notice {
            Notice::None => self.final_step(msg),
            Notice::Expire(how) => {
                self.metrics.expired();
                // The sender as it is: the logger makes it printable.
                let line = [
                    m.queue_id.as_str().as_bytes(),
                    b": from=<",
                    &m.env.sender,
                    b">, status=",
                    how.as_str().as_bytes(),
                    b", returned to sender",
                ]
                .concat();
                self.log.info(&line);
                // The defer service marks the recipients it returns as
                // done, as Postfix's adefer_flush() asks.
                let flags = bounce_flags::DELRCPT;
                let command = BounceCommand::Flush;
                self.start_notice(msg, NoticeStep::Expire, &service, command, flags, true);
            }
            Notice::Warn => {
                let command = BounceCommand::Warn;
                self.start_notice(msg, NoticeStep::Warn, &service, command, 0, false);
            }
        }
    }

    /// Step 6: to `deferred/` or removed; the message leaves the active
    /// queue.
    fn final_step(&mut self, msg: MessageId) {
        let Some(m) = self.messages.remove(&msg) else {
            return;
        };
        let step = disposition::final_step(
            m.status != 0,
            self.now.secs(),
            m.env.create_time,
            self.p.minimal_backoff_time,
            self.p.maximal_backoff_time,
        );
        match step {
            FinalStep::Defer { until } => self.defer_message(&m, until),
            FinalStep::Remove => {
                self.control.release_when_done.remove(&m.queue_id);
                self.metrics.removed();
                self.spool.remove_done(&m.queue_id);
            }
        }
    }
}
