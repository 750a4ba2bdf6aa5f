//! Requests to bounce(8) in its three roles, as qmgr makes them: a
//! notice for a finished message (bounce flush, expiry, delay warning,
//! trace and success reports: Postfix's `abounce_flush()`,
//! `adefer_flush()`, `adefer_warn()`, `atrace_flush()`), and the deferral
//! of one recipient when even the `retry` transport is down
//! (`qmgr_defer_recipient()`).
//!
//! A request that cannot be made counts as a failed one (status -1), so
//! the message stays queued; the failure is logged as Postfix's
//! asynchronous client logs it.

use std::path::PathBuf;
use std::time::Duration;

use rqmgr_ipc::bounce::{self, BounceCommand, BounceRequest};
use rqmgr_ipc::error::IpcError;
use rqmgr_sched::{Dsn, MessageId};

use crate::adhoc;
use crate::clock;
use crate::message::ActiveMessage;
use crate::state::Core;

impl Core {
    /// One request for message `m` to the bounce service `service` in the
    /// role `command`; VERP messages get per-recipient notices where
    /// `verp_ok` allows. Returns the service's status, -1 on failure.
    pub(crate) async fn notify(
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
        let result = bounce::notify(&path, command, &req, verp, timeout).await;
        // Postfix carries on when the service answers, in a later event:
        // what follows sees the time of that answer.
        self.now = clock::Now::read();
        match result {
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
