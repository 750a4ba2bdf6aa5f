//! Clients of bounce(8) (`private/bounce`, `private/defer`,
//! `private/trace`), verify(8) updates and flush(8) (`public/flush`).
//!
//! Job: the requests qmgr makes when a message finishes or a recipient must
//! be deferred without a delivery agent: flush/VERP/warn/trace notices
//! (Postfix's abounce), `defer_append`/`trace_append`, verify updates and
//! fast-flush `add`.
//!
//! Invariants: each call uses a fresh connection, checks the server's
//! announcement, sends one list and reads one STRICT reply `status`, then
//! closes.  Attribute order follows Postfix 3.7 exactly.
//!
//! How it fails: any connect, I/O, timeout or protocol problem is an
//! [`IpcError`]; the caller turns it into status -1 and logs
//! "status=deferred (bounce failed)" etc. (see [`BounceCommand::failure_label`]).
//! Limits: no retries here; verify updates read `status` strictly too
//! (Postfix skips unknown extras there, which verify(8) never sends).

use std::path::Path;
use std::time::Duration;

use crate::attr::AttrWriter;
use crate::deliver::{DsnAttrs, RecipientOut};
use crate::dialect::Dialect;
use crate::error::IpcError;
use crate::stream::AttrStream;

/// Protocol bounce(8) announces (for the bounce, defer and trace services).
const PROTOCOL: &str = "delivery_status_protocol";
/// Protocol flush(8) announces.
const FLUSH_PROTOCOL: &str = "queue_flush_protocol";
/// Protocol verify(8) announces (the misspelling is Postfix's).
const VERIFY_PROTOCOL: &str = "address_verification_prrotocol";

/// bounce(8) request codes (`nrequest`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum BounceCommand {
    /// Append a recipient record to a log.
    Append = 0,
    /// Send the notice and delete the log.
    Flush = 1,
    /// Send a delay warning, keep the log.
    Warn = 2,
    /// Flush, one notice per recipient with VERP.
    Verp = 3,
    /// One-recipient notice.
    One = 4,
    /// Send a delivery record.
    Trace = 5,
}

impl BounceCommand {
    /// The word qmgr logs in `QID: status=deferred (<word> failed)`.
    pub fn failure_label(self, dialect: Dialect) -> &'static str {
        match self {
            BounceCommand::Flush => "bounce",
            BounceCommand::Warn => "delay warning",
            BounceCommand::Verp if dialect >= Dialect::Postfix311 => "verp-bounce",
            BounceCommand::Verp => "verp",
            BounceCommand::Trace => "trace",
            _ => "whatever",
        }
    }
}

/// bounce(8) request flags.
pub mod bounce_flags {
    /// bounce(8) marks the recipients done in the queue file.
    pub const DELRCPT: i32 = 1 << 1;
}

/// flush(8) reply codes.
pub mod flush_status {
    /// Request taken.
    pub const OK: i32 = 0;
    /// Site not eligible.
    pub const DENY: i32 = 4;
}

/// Message-level fields of an asynchronous bounce/defer/trace request.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct BounceRequest {
    /// [`bounce_flags`] (or delivery trace flags for trace requests).
    pub flags: i32,
    /// Queue name, normally `active`.
    pub queue_name: Vec<u8>,
    /// Queue ID.
    pub queue_id: Vec<u8>,
    /// Content encoding.
    pub encoding: Vec<u8>,
    /// Send options (SMTPUTF8 and, from Postfix 3.10, REQUIRETLS bits).
    pub sendopts: i32,
    /// The protocol dialect: names the send-options attribute.
    pub dialect: Dialect,
    /// Envelope sender.
    pub sender: Vec<u8>,
    /// DSN envelope ID.
    pub envelope_id: Vec<u8>,
    /// DSN RET flags.
    pub ret_flags: i32,
}

impl BounceRequest {
    /// The request bytes for `command`, with `verp_delimiters` when given.
    pub(crate) fn encode(&self, command: BounceCommand, verp: Option<&[u8]>) -> Vec<u8> {
        let mut w = AttrWriter::new();
        w.int("nrequest", command as i32)
            .int("flags", self.flags)
            .str("queue_name", &self.queue_name)
            .str("queue_id", &self.queue_id)
            .str("encoding", &self.encoding)
            .int(self.dialect.sendopts_attr(), self.sendopts)
            .str("sender", &self.sender)
            .str("envelope_id", &self.envelope_id)
            .int("ret_flags", self.ret_flags);
        if let Some(v) = verp {
            w.str("verp_delimiters", v);
        }
        w.end();
        w.into_bytes()
    }
}

/// Connects, checks the announcement, sends `request`, returns the reply's
/// `status` (the only attribute allowed).
async fn status_command(
    path: &Path,
    protocol: &str,
    request: &[u8],
    timeout: Duration,
) -> Result<i32, IpcError> {
    let mut stream = AttrStream::connect(path, timeout).await?;
    stream.expect_announcement(protocol).await?;
    let reply = stream.request(request).await?;
    let mut r = reply.strict();
    let status = r.expect_int("status").map_err(|e| stream.attr_error(e))?;
    r.finish().map_err(|e| stream.attr_error(e))?;
    Ok(status)
}

/// Sends an asynchronous-style notice request (Postfix's abounce family):
/// FLUSH or VERP to the bounce service (non-delivery notice) or to the
/// defer service (expiry notice, with [`bounce_flags::DELRCPT`] as
/// `adefer_flush()` sets it), WARN to the defer service (delay warning),
/// TRACE to the trace service (delivery record, flags = trace flags). The
/// caller picks the service, the command and the flags.
pub async fn notify(
    path: &Path,
    command: BounceCommand,
    req: &BounceRequest,
    verp: Option<&[u8]>,
    timeout: Duration,
) -> Result<i32, IpcError> {
    status_command(path, PROTOCOL, &req.encode(command, verp), timeout).await
}

/// The bytes of an APPEND request for one recipient.
pub(crate) fn encode_append(
    flags: i32,
    queue_id: &[u8],
    rcpt: &RecipientOut,
    dsn: &DsnAttrs,
) -> Vec<u8> {
    let mut w = AttrWriter::new();
    w.int("nrequest", BounceCommand::Append as i32)
        .int("flags", flags)
        .str("queue_id", queue_id);
    rcpt.encode(&mut w);
    dsn.encode(&mut w);
    w.end();
    w.into_bytes()
}

/// APPEND one recipient record to the log kept by the service at `path`,
/// with `dsn` sent as given.
async fn append(
    path: &Path,
    flags: i32,
    queue_id: &[u8],
    rcpt: &RecipientOut,
    dsn: &DsnAttrs,
    timeout: Duration,
) -> Result<i32, IpcError> {
    status_command(
        path,
        PROTOCOL,
        &encode_append(flags, queue_id, rcpt, dsn),
        timeout,
    )
    .await
}

/// Postfix's `defer_append` for normal mail: APPEND to `private/defer` with
/// the action forced to `delayed`.  Probes go elsewhere: MTA probes to
/// [`verify_update`] (action `undeliverable`), user probes to
/// [`trace_append`]; the caller also logs the `status=deferred` line, sends
/// a [`trace_append`] when RECORD is set, and calls [`flush_add`].
pub async fn defer_append(
    path: &Path,
    flags: i32,
    queue_id: &[u8],
    rcpt: &RecipientOut,
    dsn: &DsnAttrs,
    timeout: Duration,
) -> Result<i32, IpcError> {
    let dsn = DsnAttrs {
        action: b"delayed".to_vec(),
        ..dsn.clone()
    };
    append(path, flags, queue_id, rcpt, &dsn, timeout).await
}

/// The reason Postfix's `trace_append` sends: "delivery via RELAY: " in
/// front unless the relay is `none`.
pub fn trace_reason(relay: &[u8], reason: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    if relay != b"none" {
        out.extend_from_slice(b"delivery via ");
        out.extend_from_slice(relay);
        out.extend_from_slice(b": ");
    }
    out.extend_from_slice(reason);
    out
}

/// Postfix's `trace_append`: APPEND to `private/trace`; build the reason
/// with [`trace_reason`] first.
pub async fn trace_append(
    path: &Path,
    flags: i32,
    queue_id: &[u8],
    rcpt: &RecipientOut,
    dsn: &DsnAttrs,
    timeout: Duration,
) -> Result<i32, IpcError> {
    append(path, flags, queue_id, rcpt, dsn, timeout).await
}

/// verify(8) `update` for one address (Postfix's `verify_clnt_update`);
/// `addr_status` is a DEL_RCPT_STAT value (DEFER = 1).
pub async fn verify_update(
    path: &Path,
    address: &[u8],
    addr_status: i32,
    reason: &[u8],
    timeout: Duration,
) -> Result<i32, IpcError> {
    let mut w = AttrWriter::new();
    w.str("request", b"update")
        .str("address", address)
        .int("recipient_status", addr_status)
        .str("reason", reason)
        .end();
    status_command(path, VERIFY_PROTOCOL, w.as_bytes(), timeout).await
}

/// flush(8) `add`: remember that `queue_id` has mail for `site`.  The
/// caller checks fast_flush_domains first.
pub async fn flush_add(
    path: &Path,
    site: &[u8],
    queue_id: &[u8],
    timeout: Duration,
) -> Result<i32, IpcError> {
    let mut w = AttrWriter::new();
    w.str("request", b"add")
        .str("site", site)
        .str("queue_id", queue_id)
        .end();
    status_command(path, FLUSH_PROTOCOL, w.as_bytes(), timeout).await
}
