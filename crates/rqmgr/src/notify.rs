//! Requests to bounce(8) in its three roles, as qmgr makes them: a
//! notice for a finished message (bounce flush, expiry, delay warning,
//! trace and success reports: Postfix's `abounce_flush()`,
//! `adefer_flush()`, `adefer_warn()`, `atrace_flush()`), and the deferral
//! of one recipient when even the `retry` transport is down
//! (`qmgr_defer_recipient()`).
//!
//! Notices go out in tasks of their own and their answers come back to the
//! event loop, which hands them to finish.rs, so a hung bounce service
//! delays only the messages waiting for it. A request that cannot be made
//! counts as a failed one (status -1), so the message stays queued; the
//! failure is logged as Postfix's asynchronous client logs it. The deferral
//! of one recipient is synchronous, as Postfix's `defer_append()` is.

use std::path::PathBuf;
use std::time::Duration;

use rqmgr_ipc::bounce::{self, BounceCommand, BounceRequest};
use rqmgr_ipc::error::IpcError;
use rqmgr_sched::{Dsn, MessageId};

use crate::adhoc;
use crate::clock;
use crate::state::Core;

/// Which step of finishing a message a notice belongs to (finish.rs goes
/// on from there when it is answered).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum NoticeStep {
    /// The bounce log's flush (`abounce_flush()`); then the message is
    /// refilled when `refill`, else finished.
    BounceFlush {
        /// The scheduler asked for more recipients.
        refill: bool,
    },
    /// Trace or success reports (`atrace_flush()`).
    Trace,
    /// The expiry notice (`adefer_flush()`).
    Expire,
    /// A delay warning (`adefer_warn()`).
    Warn,
}

/// An answered (or failed) notice, as the event loop receives it.
#[derive(Debug)]
pub(crate) struct NoticeDone {
    /// The message it is about.
    pub(crate) msg: MessageId,
    /// Where finishing it goes on.
    pub(crate) step: NoticeStep,
    /// The request made (after VERP), for the failure line.
    command: BounceCommand,
    /// The service's status, or why there is none.
    result: Result<i32, IpcError>,
}

impl Core {
    /// Sends a notice about `msg` to the bounce service `service` in the
    /// role `command`, in a task of its own, as Postfix's asynchronous
    /// bounce client does: a slow or hung service delays this message
    /// only, never the loop. VERP messages get per-recipient notices where
    /// `verp_ok` allows. The answer comes back as a [`NoticeDone`].
    pub(crate) fn start_notice(
        &mut self,
        msg: MessageId,
        step: NoticeStep,
        service: &str,
        command: BounceCommand,
        flags: i32,
        verp_ok: bool,
    ) {
        let Some(m) = self.messages.get(&msg) else {
            return;
        };
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
            .clone()
            .filter(|_| verp_ok && !self.p.disable_verp_bounces);
        let path = PathBuf::from(format!("private/{service}"));
        let command = match (command, &verp) {
            (BounceCommand::Flush, Some(_)) => BounceCommand::Verp,
            (c, _) => c,
        };
        // The bounce, defer and trace services log about this message too:
        // our lines go first.
        self.log.flush();
        let tx = self.notices.clone();
        tokio::task::spawn_local(async move {
            let timeout = Duration::from_secs(1000);
            let result = bounce::notify(&path, command, &req, verp.as_deref(), timeout).await;
            let _ = tx.send(NoticeDone {
                msg,
                step,
                command,
                result,
            });
        });
    }

    /// The status of an answered notice; a request that could not be made
    /// counts as failed (-1), logged as Postfix's asynchronous client logs
    /// it.
    pub(crate) fn notice_status(&self, done: &NoticeDone) -> i32 {
        match &done.result {
            Ok(status) => *status,
            Err(e) => {
                // Postfix's abounce client says nothing of its own: a
                // refused connection or a failed write is silent, and only
                // attr_scan's complaint about a bad reply is logged.
                let silent = matches!(e, IpcError::Connect { .. } | IpcError::Write { .. })
                    || e.scan_is_silent();
                if !silent {
                    self.log.warning(&e.to_string());
                }
                if let Some(m) = self.messages.get(&done.msg) {
                    self.log.info(&format!(
                        "{}: status=deferred ({} failed)",
                        m.queue_id,
                        done.command.failure_label(self.compat.dialect)
                    ));
                }
                -1
            }
        }
    }

    /// Defers recipient `rcpt` of `msg` through the defer service, because
    /// even the `retry` transport is down (`qmgr_defer_recipient()`), and
    /// logs its `status=deferred` line when the service took it.
    pub(crate) async fn defer_recipient(&mut self, msg: MessageId, rcpt: u32, dsn: &Dsn) {
        let Some(m) = self.messages.get(&msg) else {
            return;
        };
        let Some(rcpt_out) = m.recipient_out(rcpt as usize) else {
            return;
        };
        let queue_id = m.queue_id.clone();
        let stamps = adhoc::Stamps {
            incoming_arrival: m.env.arrival,
            active_arrival: rqmgr_ipc::deliver::timeval(m.active_arrival),
        };
        let flags = m.tflags();
        let wire_dsn =
            rqmgr_ipc::deliver::DsnAttrs::simple(dsn.status.as_bytes(), dsn.reason.as_bytes());
        let path = PathBuf::from(format!("private/{}", self.p.defer_service_name));
        // The defer service logs about this message too: ours first.
        self.log.flush();
        let status = bounce::defer_append(
            &path,
            flags,
            queue_id.as_str().as_bytes(),
            &rcpt_out,
            &wire_dsn,
            self.p.qmgr_ipc_timeout,
        )
        .await
        .unwrap_or(-1);
        if status == 0 {
            let line = adhoc::status_line(
                queue_id.as_str(),
                &rcpt_out.address,
                &rcpt_out.orig_rcpt,
                stamps,
                clock::precise(),
                &dsn.status,
                "deferred",
                &dsn.reason,
                u32::try_from(self.p.delay_logging_resolution_limit).unwrap_or(2),
            );
            self.log.info(&line);
        }
    }
}
