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

use rqmgr_ipc::bounce::{self, flush_status, BounceCommand, BounceRequest};
use rqmgr_ipc::deliver::DsnAttrs;
use rqmgr_ipc::error::IpcError;
use rqmgr_sched::{Dsn, MessageId};

use crate::address;
use crate::adhoc;
use crate::clock;
use crate::message::{DEL_REQ_FLAG_MTA_VRFY, DEL_REQ_FLAG_RECORD, DEL_REQ_FLAG_USR_VRFY};
use crate::state::Core;

/// `DEL_RCPT_STAT_DEFER`: the verify(8) status of a deferred address.
const DEL_RCPT_STAT_DEFER: i32 = 1;
/// `VRFY_STAT_OK`: verify(8) took the update.
const VRFY_STAT_OK: i32 = 0;

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
            encoding: env.encoding.to_vec(),
            sendopts: env.size.sendopts,
            dialect: self.compat.dialect,
            sender: env.sender.to_vec(),
            envelope_id: env.envelope_id.to_vec(),
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

    /// Defers recipient `rcpt` of `msg` on the spot, because even the
    /// `retry` transport is down (`qmgr_defer_recipient()`), as Postfix's
    /// `defer_append()` does: an address probe's result goes to verify(8)
    /// (MTA probes) or to the trace service (`sendmail -bv`); normal mail
    /// goes to the defer log, is logged `status=deferred` whether or not
    /// that worked, gets a trace record when the sender asked for one
    /// (`sendmail -v`), and its destination is registered with flush(8)
    /// for fast flush. These requests are synchronous, as in Postfix. The
    /// outcome goes into the message's status as Postfix's does: failed
    /// (deferred) for normal mail, failed for a probe only when its result
    /// could not be recorded.
    pub(crate) async fn defer_recipient(&mut self, msg: MessageId, rcpt: u32, dsn: &Dsn) {
        let status = self.defer_append(msg, rcpt, dsn).await;
        if let Some(m) = self.messages.get_mut(&msg) {
            m.status |= status;
            m.mark_deferred(&[rcpt]);
        }
    }

    /// Postfix's `defer_append()` for one recipient; 0 or -1.
    async fn defer_append(&mut self, msg: MessageId, rcpt: u32, dsn: &Dsn) -> i32 {
        let Some(m) = self.messages.get(&msg) else {
            return -1;
        };
        let Some(r) = m.recipient_out(rcpt as usize) else {
            return -1;
        };
        let queue_id = m.queue_id.as_str().to_owned();
        let stamps = adhoc::Stamps {
            incoming_arrival: m.env.arrival,
            active_arrival: rqmgr_ipc::deliver::timeval(m.active_arrival),
        };
        let flags = m.tflags();
        let timeout = self.p.qmgr_ipc_timeout;
        let private = |service: &str| PathBuf::from(format!("private/{service}"));
        let failure = |service: &str| format!("{queue_id}: {service} service failure");
        let logged = |action: &str| {
            adhoc::status_line(
                &queue_id,
                &r.address,
                &r.orig_rcpt,
                stamps,
                clock::precise(),
                &dsn.status,
                action,
                &dsn.reason,
                u32::try_from(self.p.delay_logging_resolution_limit).unwrap_or(2),
            )
        };
        let attrs = |action: &str, reason: Vec<u8>| DsnAttrs {
            action: action.as_bytes().to_vec(),
            reason,
            ..DsnAttrs::simple(dsn.status.as_bytes(), b"")
        };
        // The services asked below log about this message too: ours first.
        self.log.flush();
        if flags & DEL_REQ_FLAG_MTA_VRFY != 0 {
            let action = if self.p.address_verify_negative_cache {
                let verify = private(&self.p.address_verify_service_name);
                let update = |address: Vec<u8>| {
                    let verify = verify.clone();
                    async move {
                        bounce::verify_update(
                            &verify,
                            &address,
                            DEL_RCPT_STAT_DEFER,
                            &dsn.reason,
                            timeout,
                        )
                        .await
                    }
                };
                let mut ok = true;
                if !r.orig_rcpt.is_empty() {
                    ok = update(r.orig_rcpt.clone()).await.ok() == Some(VRFY_STAT_OK);
                }
                if ok && r.address != r.orig_rcpt {
                    ok = update(r.address.clone()).await.ok() == Some(VRFY_STAT_OK);
                }
                if !ok {
                    self.log
                        .warning(&failure(&self.p.address_verify_service_name));
                    return -1;
                }
                "undeliverable"
            } else {
                "undeliverable-but-not-cached"
            };
            self.log.info(&logged(action));
            return 0;
        }
        let trace = private(&self.p.trace_service_name);
        let trace_reason = bounce::trace_reason(b"none", &dsn.reason);
        if flags & DEL_REQ_FLAG_USR_VRFY != 0 {
            let report = attrs("undeliverable", trace_reason);
            let appended =
                bounce::trace_append(&trace, flags, queue_id.as_bytes(), &r, &report, timeout)
                    .await;
            if appended.ok() == Some(0) {
                self.log.info(&logged("undeliverable"));
                return 0;
            }
            self.log.warning(&failure(&self.p.trace_service_name));
            return -1;
        }
        let defer = private(&self.p.defer_service_name);
        let wire = DsnAttrs::simple(dsn.status.as_bytes(), &dsn.reason);
        let appended =
            bounce::defer_append(&defer, flags, queue_id.as_bytes(), &r, &wire, timeout).await;
        if appended.ok() != Some(0) {
            self.log.warning(&failure(&self.p.defer_service_name));
        }
        self.log.info(&logged("deferred"));
        if flags & DEL_REQ_FLAG_RECORD != 0 {
            let record = attrs("delayed", trace_reason);
            let appended =
                bounce::trace_append(&trace, flags, queue_id.as_bytes(), &r, &record, timeout)
                    .await;
            if appended.ok() != Some(0) {
                self.log.warning(&failure(&self.p.trace_service_name));
            }
        }
        // Postfix's flush client asks only when fast_flush_domains is set;
        // flush(8) itself decides whether the domain is eligible.
        if let Some(domain) = address::domain(&r.address) {
            if !self.p.fast_flush_domains.trim().is_empty() {
                // flush(8) is a public service.
                let flush = PathBuf::from(format!("public/{}", self.p.flush_service_name));
                match bounce::flush_add(&flush, domain, queue_id.as_bytes(), timeout).await {
                    // Taken, or the domain is not eligible: both fine.
                    Ok(flush_status::OK | flush_status::DENY) => {}
                    _ => self.log.warning(&failure(&self.p.flush_service_name)),
                }
            }
        }
        -1
    }
}
