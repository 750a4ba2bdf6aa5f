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

use std::io;
use std::path::PathBuf;
use std::time::Duration;

use rqmgr_ipc::bounce::{self, bounce_flags, BounceCommand, BounceRequest};
use rqmgr_ipc::error::IpcError;
use rqmgr_queue::dirs::QueueName;
use rqmgr_sched::retry::next_attempt;
use rqmgr_sched::MessageId;

use crate::activate::os_error;
use crate::message::{
    ActiveMessage, DEL_REQ_FLAG_RECORD, DEL_REQ_FLAG_REC_DLY_SENT, DEL_REQ_FLAG_USR_VRFY,
    READ_FLAG_NOTIFY_SUCCESS,
};
use crate::runtime::{now_secs, Runtime};
use crate::scan::FORCE_EXPIRE;

impl Runtime {
    /// Steps 1 to 3; `refill` says the scheduler wants more recipients.
    pub(crate) async fn message_done(&mut self, msg: MessageId, deferred: bool, refill: bool) {
        let Some(mut m) = self.messages.remove(&msg) else {
            return;
        };
        if deferred {
            m.status |= 1;
        }
        let id = m.queue_id.clone();
        match std::fs::metadata(self.layout.path(QueueName::Bounce, &id)) {
            Ok(md) if md.len() == 0 => {
                if let Err(e) = self.layout.remove(QueueName::Bounce, &id) {
                    self.fatal(&format!("remove bounce {}: {}", id, os_error(&e)));
                }
            }
            Ok(_) => {
                let command = BounceCommand::Flush;
                m.status |= self
                    .notify(&m, &self.p.bounce_service_name.clone(), command, 0, true)
                    .await;
            }
            Err(_) => {}
        }
        if m.status != 0 && !matches!(self.layout.open_ok(QueueName::Active, &id), Ok(Some(_))) {
            self.save_corrupt(&id);
            if refill {
                self.sched.handle(
                    rqmgr_sched::Event::MessageAbandoned { msg },
                    crate::runtime::sched_now(),
                );
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
            let status = self
                .notify(
                    &m,
                    &self.p.trace_service_name.clone(),
                    BounceCommand::Trace,
                    tflags,
                    false,
                )
                .await;
            if status == 0 {
                if let Some(offset) = m.env.trace_flags_offset {
                    self.update_file(&m, |f| rqmgr_queue::update::kill_record(f, offset));
                }
            }
            m.status |= status;
        }
        if m.status != 0 {
            let lifetime = if m.env.sender.is_empty() {
                self.p.bounce_queue_lifetime
            } else {
                self.p.maximal_queue_lifetime
            };
            let now = now_secs();
            let expired = if m.qflags & FORCE_EXPIRE != 0 {
                Some("force-expired")
            } else if now >= m.env.create_time.saturating_add(secs(lifetime)) {
                Some("expired")
            } else {
                None
            };
            if let Some(how) = expired {
                self.log.info(&format!(
                    "{}: from=<{}>, status={}, returned to sender",
                    id,
                    String::from_utf8_lossy(&m.env.sender),
                    how
                ));
                m.status = self
                    .notify(
                        &m,
                        &self.p.defer_service_name.clone(),
                        BounceCommand::Flush,
                        // The defer service marks the recipients it
                        // returns as done, as Postfix's adefer_flush() asks.
                        bounce_flags::DELRCPT,
                        true,
                    )
                    .await;
            } else if let Some(w) = m.env.warn_time.filter(|w| w.time > 0 && now >= w.time - 1) {
                let status = self
                    .notify(
                        &m,
                        &self.p.defer_service_name.clone(),
                        BounceCommand::Warn,
                        0,
                        false,
                    )
                    .await;
                if status == 0 {
                    self.update_file(&m, |f| rqmgr_queue::update::set_warn_time(f, w.offset, -1));
                }
            }
        }
        if m.status != 0 {
            let create = (m.env.create_time > 0).then_some(m.env.create_time);
            let now = now_secs();
            let when = next_attempt(
                now,
                create,
                self.p.minimal_backoff_time,
                self.p.maximal_backoff_time,
            );
            self.move_to(&id, QueueName::Deferred, when - now);
        } else {
            match self.layout.remove(QueueName::Active, &id) {
                Ok(()) => self.log.info(&format!("{id}: removed")),
                Err(e) => {
                    let text = format!(
                        "qmgr_active_done_3_generic: remove {} from active: {}",
                        id,
                        os_error(&e)
                    );
                    if e.kind() != io::ErrorKind::NotFound {
                        self.fatal(&text);
                    }
                    self.log.warning(&text);
                }
            }
        }
    }

    /// One request to bounce(8) in its bounce, defer or trace role. A
    /// request that cannot be made counts as a failure (-1), logged as
    /// Postfix's asynchronous bounce client logs it.
    async fn notify(
        &mut self,
        m: &ActiveMessage,
        service: &str,
        command: BounceCommand,
        flags: i32,
        verp_ok: bool,
    ) -> i32 {
        let env = &m.env;
        let req = BounceRequest {
            flags,
            queue_name: b"active".to_vec(),
            queue_id: m.queue_id.as_str().as_bytes().to_vec(),
            encoding: env.encoding.clone(),
            sendopts: env.size.sendopts,
            dialect: self.compat.dialect,
            sender: env.sender.clone(),
            envelope_id: env.envelope_id.clone(),
            ret_flags: env.ret_flags,
        };
        let verp = env
            .verp_delims
            .as_deref()
            .filter(|_| verp_ok && !self.p.disable_verp_bounces);
        let path = PathBuf::from(format!("private/{service}"));
        let timeout = Duration::from_secs(1000);
        let command = match (command, verp) {
            (BounceCommand::Flush, Some(_)) => BounceCommand::Verp,
            (c, _) => c,
        };
        // The bounce, defer and trace services log about this message too:
        // our lines go first.
        self.log.flush();
        match bounce::notify(&path, command, &req, verp, timeout).await {
            Ok(status) => status,
            Err(e) => {
                // Postfix's abounce client says nothing of its own: a
                // refused connection or a failed write is silent, and only
                // attr_scan's complaint about a bad reply is logged.
                let silent = matches!(e, IpcError::Connect { .. } | IpcError::Write { .. })
                    || e.scan_is_silent();
                if !silent {
                    self.log.warning(&e.to_string());
                }
                self.log.info(&format!(
                    "{}: status=deferred ({} failed)",
                    m.queue_id,
                    command.failure_label(self.compat.dialect)
                ));
                -1
            }
        }
    }

    /// An in-place update of the queue file; failure is fatal, as in
    /// Postfix, because the file's state would otherwise be unknown.
    fn update_file(&mut self, m: &ActiveMessage, f: impl FnOnce(&std::fs::File) -> io::Result<()>) {
        let path = self.layout.path(QueueName::Active, &m.queue_id);
        let result = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .open(&path)
            .and_then(|file| f(&file));
        if let Err(e) = result {
            self.fatal(&format!(
                "update queue file {}: {}",
                path.display(),
                os_error(&e)
            ));
        }
    }
}

fn secs(d: Duration) -> i64 {
    i64::try_from(d.as_secs()).unwrap_or(i64::MAX)
}
