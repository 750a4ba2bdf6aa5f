//! Client side of the delivery agent protocol (`private/<transport>`).
//!
//! Job: encode qmgr's delivery request exactly as Postfix 3.7 to 3.11 do
//! (in the request's [`Dialect`]), read the
//! agent's reply, and hold the connection for one delivery.
//!
//! Invariants: the request is one list (message attributes, then
//! `recipient_count`) followed by one list per recipient, in Postfix 3.7's
//! order; the statistics travel as the 88-byte native `MSG_STATS` in base64
//! under `time`.  The reply is read STRICT: the DSN's seven strings, then the
//! int `status` (so `status` appears twice), then the terminator.
//!
//! How it fails: every malformed reply or disconnect is an
//! [`IpcError`]; qmgr treats those as an agent crash.  Failures while
//! connecting or sending surface from [`AgentConnection::wait_ready`] or
//! [`AgentConnection::send_encoded`] so the caller can tell "transport
//! unavailable" from "crash".
//! Limits: the `MSG_STATS` layout is the LP64 Linux one (timeval = two
//! 64-bit words).

use std::path::Path;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use crate::attr::{AttrList, AttrWriter};
use crate::dialect::Dialect;
use crate::error::{AttrError, IpcError};
use crate::stream::AttrStream;
use tokio::time::Instant;

/// Protocol a delivery agent announces.
const PROTOCOL: &str = "delivery_request_protocol";

/// Request flags (`DEL_REQ_FLAG_*`) the tests' requests use.
#[cfg(test)]
pub(crate) mod flags {
    /// Mark delivered recipients done.
    const SUCCESS: i32 = 1 << 0;
    /// Mark bounced recipients done.
    const BOUNCE: i32 = 1 << 1;
    /// The default: SUCCESS | BOUNCE.
    pub(crate) const DEFAULT: i32 = SUCCESS | BOUNCE;
    /// Record and deliver (sendmail -v).
    pub(crate) const RECORD: i32 = 1 << 10;
}

/// Size of the native `MSG_STATS` structure sent under `time`.
pub(crate) const MSG_STATS_LEN: usize = 88;

/// Postfix's `MSG_STATS`: timestamps as (seconds, microseconds).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct MsgStats {
    /// When the message entered the incoming queue.
    pub incoming_arrival: (i64, i64),
    /// When the message entered the active queue.
    pub active_arrival: (i64, i64),
    /// Agent hand-off (filled by agents).
    pub agent_handoff: (i64, i64),
    /// Connection set-up done (filled by agents).
    pub conn_setup_done: (i64, i64),
    /// Transmission done (filled by agents).
    pub deliver_done: (i64, i64),
    /// Connection reuse count (filled by agents).
    pub reuse_count: i32,
}

/// A `struct timeval` for a wall-clock time (zero before the epoch).
pub fn timeval(t: SystemTime) -> (i64, i64) {
    match t.duration_since(UNIX_EPOCH) {
        Ok(d) => (
            i64::try_from(d.as_secs()).unwrap_or(i64::MAX),
            i64::from(d.subsec_micros()),
        ),
        Err(_) => (0, 0),
    }
}

impl MsgStats {
    /// The native 88-byte image: five timevals, the reuse count, 4 pad bytes.
    pub(crate) fn to_bytes(self) -> [u8; MSG_STATS_LEN] {
        let mut out = [0u8; MSG_STATS_LEN];
        let tvs = [
            self.incoming_arrival,
            self.active_arrival,
            self.agent_handoff,
            self.conn_setup_done,
            self.deliver_done,
        ];
        for (i, (sec, usec)) in tvs.iter().enumerate() {
            out[i * 16..i * 16 + 8].copy_from_slice(&sec.to_ne_bytes());
            out[i * 16 + 8..i * 16 + 16].copy_from_slice(&usec.to_ne_bytes());
        }
        out[80..84].copy_from_slice(&self.reuse_count.to_ne_bytes());
        out
    }

    /// Parses the native image; `None` unless exactly 88 bytes.
    pub fn from_bytes(b: &[u8]) -> Option<MsgStats> {
        let b: &[u8; MSG_STATS_LEN] = b.try_into().ok()?;
        let word = |at: usize| {
            let mut w = [0u8; 8];
            w.copy_from_slice(&b[at..at + 8]);
            i64::from_ne_bytes(w)
        };
        let tv = |i: usize| (word(i * 16), word(i * 16 + 8));
        let mut rc = [0u8; 4];
        rc.copy_from_slice(&b[80..84]);
        Some(MsgStats {
            incoming_arrival: tv(0),
            active_arrival: tv(1),
            agent_handoff: tv(2),
            conn_setup_done: tv(3),
            deliver_done: tv(4),
            reuse_count: i32::from_ne_bytes(rc),
        })
    }
}

/// One recipient as sent to agents and bounce(8) (Postfix's `rcpt_print`).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RecipientOut {
    /// `original_recipient`.
    pub orig_rcpt: Vec<u8>,
    /// `recipient`.
    pub address: Vec<u8>,
    /// `offset` of the recipient record in the queue file.
    pub offset: i64,
    /// `dsn_orig_rcpt`.
    pub dsn_orig_rcpt: Vec<u8>,
    /// `notify_flags`.
    pub notify_flags: i32,
}

impl RecipientOut {
    /// Appends the five recipient attributes (no terminator).
    pub(crate) fn encode(&self, out: &mut AttrWriter) {
        out.str("original_recipient", &self.orig_rcpt)
            .str("recipient", &self.address)
            .long("offset", self.offset)
            .str("dsn_orig_rcpt", &self.dsn_orig_rcpt)
            .int("notify_flags", self.notify_flags);
    }
}

/// A delivery status notification as its seven attributes travel in
/// Postfix's protocols (Postfix's `DSN`): what an agent replies, and what
/// an APPEND request carries. The scheduler's own `rqmgr_sched::Dsn` keeps
/// only the status and the reason it logs.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct DsnAttrs {
    /// RFC 3463 status, e.g. `4.4.1`.
    pub status: Vec<u8>,
    /// Diagnostic type, e.g. `SMTP`.
    pub diag_type: Vec<u8>,
    /// Diagnostic text.
    pub diag_text: Vec<u8>,
    /// Remote MTA type, e.g. `dns`.
    pub mta_type: Vec<u8>,
    /// Remote MTA name.
    pub mta_mname: Vec<u8>,
    /// DSN action, e.g. `delayed`.
    pub action: Vec<u8>,
    /// Free text reason.
    pub reason: Vec<u8>,
}

impl DsnAttrs {
    /// A DSN with only status and reason, like Postfix's `DSN_SIMPLE`.
    pub fn simple(status: &[u8], reason: &[u8]) -> DsnAttrs {
        DsnAttrs {
            status: status.to_vec(),
            reason: reason.to_vec(),
            ..DsnAttrs::default()
        }
    }

    /// Appends the seven DSN attributes (no terminator).
    pub(crate) fn encode(&self, out: &mut AttrWriter) {
        out.str("status", &self.status)
            .str("diag_type", &self.diag_type)
            .str("diag_text", &self.diag_text)
            .str("mta_type", &self.mta_type)
            .str("mta_mname", &self.mta_mname)
            .str("action", &self.action)
            .str("reason", &self.reason);
    }
}

/// qmgr's request to a delivery agent (Postfix's field order, the same in
/// every supported release), owning its fields: the tests' form of
/// [`DeliveryRequestRef`].
#[cfg(test)]
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct DeliveryRequest {
    /// [`flags`] bits.
    pub flags: i32,
    /// Queue name, normally `active`.
    pub queue_name: Vec<u8>,
    /// Queue ID.
    pub queue_id: Vec<u8>,
    /// Offset of the message content (`offset`).
    pub data_offset: i64,
    /// Content length (`size`).
    pub data_size: i64,
    /// Next-hop destination.
    pub nexthop: Vec<u8>,
    /// Content encoding: empty, `7bit` or `8bit`.
    pub encoding: Vec<u8>,
    /// Send options (SMTPUTF8 and, from Postfix 3.10, REQUIRETLS bits).
    pub sendopts: i32,
    /// The protocol dialect: names the send-options attribute.
    pub dialect: Dialect,
    /// Envelope sender (VERP already applied).
    pub sender: Vec<u8>,
    /// DSN envelope ID.
    pub envelope_id: Vec<u8>,
    /// DSN RET flags.
    pub ret_flags: i32,
    /// Timing statistics.
    pub stats: MsgStats,
    /// Client host name.
    pub log_client_name: Vec<u8>,
    /// Client address.
    pub log_client_address: Vec<u8>,
    /// Client port.
    pub log_client_port: Vec<u8>,
    /// Client protocol (SMTP/ESMTP).
    pub log_protocol_name: Vec<u8>,
    /// Client HELO name.
    pub log_helo_name: Vec<u8>,
    /// SASL method.
    pub sasl_method: Vec<u8>,
    /// SASL user name.
    pub sasl_username: Vec<u8>,
    /// SASL sender.
    pub sasl_sender: Vec<u8>,
    /// Log identifier.
    pub log_ident: Vec<u8>,
    /// Rewrite context (`local`/`remote`).
    pub rewrite_context: Vec<u8>,
    /// The recipients (at least one).
    pub recipients: Vec<RecipientOut>,
}

#[cfg(test)]
impl DeliveryRequest {
    /// The same request with borrowed fields: the one encoder both share.
    fn as_ref(&self) -> DeliveryRequestRef<'_> {
        DeliveryRequestRef {
            flags: self.flags,
            queue_name: &self.queue_name,
            queue_id: &self.queue_id,
            data_offset: self.data_offset,
            data_size: self.data_size,
            nexthop: &self.nexthop,
            encoding: &self.encoding,
            sendopts: self.sendopts,
            dialect: self.dialect,
            sender: &self.sender,
            envelope_id: &self.envelope_id,
            ret_flags: self.ret_flags,
            stats: self.stats,
            log_client_name: &self.log_client_name,
            log_client_address: &self.log_client_address,
            log_client_port: &self.log_client_port,
            log_protocol_name: &self.log_protocol_name,
            log_helo_name: &self.log_helo_name,
            sasl_method: &self.sasl_method,
            sasl_username: &self.sasl_username,
            sasl_sender: &self.sasl_sender,
            log_ident: &self.log_ident,
            rewrite_context: &self.rewrite_context,
            recipients: self
                .recipients
                .iter()
                .map(|r| RecipientRef {
                    orig_rcpt: &r.orig_rcpt,
                    address: &r.address,
                    offset: r.offset,
                    dsn_orig_rcpt: &r.dsn_orig_rcpt,
                    notify_flags: r.notify_flags,
                })
                .collect(),
        }
    }

    /// The whole request encoded, in a buffer sized for it.
    fn to_bytes(&self) -> Vec<u8> {
        self.as_ref().to_bytes()
    }

    /// Appends the whole request: the message list, then one list per
    /// recipient.
    pub(crate) fn encode(&self, out: &mut AttrWriter) {
        self.as_ref().encode(out);
    }
}

/// One recipient of a [`DeliveryRequestRef`], borrowed from where the
/// caller keeps it; encodes like [`RecipientOut`].
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct RecipientRef<'a> {
    /// `original_recipient`.
    pub orig_rcpt: &'a [u8],
    /// `recipient`.
    pub address: &'a [u8],
    /// `offset` of the recipient record in the queue file.
    pub offset: i64,
    /// `dsn_orig_rcpt`.
    pub dsn_orig_rcpt: &'a [u8],
    /// `notify_flags`.
    pub notify_flags: i32,
}

impl RecipientRef<'_> {
    /// Appends the five recipient attributes (no terminator).
    fn encode(&self, out: &mut AttrWriter) {
        out.str("original_recipient", self.orig_rcpt)
            .str("recipient", self.address)
            .long("offset", self.offset)
            .str("dsn_orig_rcpt", self.dsn_orig_rcpt)
            .int("notify_flags", self.notify_flags);
    }
}

/// qmgr's request to a delivery agent (Postfix's field order, the same in
/// every supported release), with borrowed strings: qmgr builds one per
/// delivery from the message it holds, and copying some fifteen strings
/// into an owned request only to encode it would be wasted work. (The
/// tests' owned form encodes to exactly the same bytes.)
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct DeliveryRequestRef<'a> {
    /// `DEL_REQ_FLAG_*` bits.
    pub flags: i32,
    /// Queue name, normally `active`.
    pub queue_name: &'a [u8],
    /// Queue ID.
    pub queue_id: &'a [u8],
    /// Offset of the message content (`offset`).
    pub data_offset: i64,
    /// Content length (`size`).
    pub data_size: i64,
    /// Next-hop destination.
    pub nexthop: &'a [u8],
    /// Content encoding: empty, `7bit` or `8bit`.
    pub encoding: &'a [u8],
    /// Send options (SMTPUTF8 and, from Postfix 3.10, REQUIRETLS bits).
    pub sendopts: i32,
    /// The protocol dialect: names the send-options attribute.
    pub dialect: Dialect,
    /// Envelope sender (VERP already applied).
    pub sender: &'a [u8],
    /// DSN envelope ID.
    pub envelope_id: &'a [u8],
    /// DSN RET flags.
    pub ret_flags: i32,
    /// Timing statistics.
    pub stats: MsgStats,
    /// Client host name.
    pub log_client_name: &'a [u8],
    /// Client address.
    pub log_client_address: &'a [u8],
    /// Client port.
    pub log_client_port: &'a [u8],
    /// Client protocol (SMTP/ESMTP).
    pub log_protocol_name: &'a [u8],
    /// Client HELO name.
    pub log_helo_name: &'a [u8],
    /// SASL method.
    pub sasl_method: &'a [u8],
    /// SASL user name.
    pub sasl_username: &'a [u8],
    /// SASL sender.
    pub sasl_sender: &'a [u8],
    /// Log identifier.
    pub log_ident: &'a [u8],
    /// Rewrite context (`local`/`remote`).
    pub rewrite_context: &'a [u8],
    /// The recipients (at least one).
    pub recipients: Vec<RecipientRef<'a>>,
}

impl DeliveryRequestRef<'_> {
    /// The variable-length part of the encoded request (strings and
    /// per-recipient attributes), for sizing the output buffer.
    fn approx_len(&self) -> usize {
        let strings = [
            self.queue_name,
            self.queue_id,
            self.nexthop,
            self.encoding,
            self.sender,
            self.envelope_id,
            self.log_client_name,
            self.log_client_address,
            self.log_client_port,
            self.log_protocol_name,
            self.log_helo_name,
            self.sasl_method,
            self.sasl_username,
            self.sasl_sender,
            self.log_ident,
            self.rewrite_context,
        ];
        let rcpts: usize = self
            .recipients
            .iter()
            .map(|r| 96 + r.orig_rcpt.len() + r.address.len() + r.dsn_orig_rcpt.len())
            .sum();
        strings.iter().map(|s| s.len()).sum::<usize>() + rcpts
    }

    /// The whole request encoded, in a buffer sized for it.
    pub fn to_bytes(&self) -> Vec<u8> {
        self.encode_into(Vec::new())
    }

    /// The whole request encoded into `buf`'s memory (its bytes are
    /// dropped): the daemon passes the buffer of an earlier request, as a
    /// request is often too large for the allocator's per-thread cache.
    pub fn encode_into(&self, buf: Vec<u8>) -> Vec<u8> {
        // The fixed part (names, numbers, statistics) is about 450 bytes;
        // sizing the buffer up front avoids regrowing it.
        let mut w = AttrWriter::reuse(buf, 512 + self.approx_len());
        self.encode(&mut w);
        w.into_bytes()
    }

    /// Appends the whole request: the message list, then one list per
    /// recipient.
    fn encode(&self, out: &mut AttrWriter) {
        let count = i32::try_from(self.recipients.len()).unwrap_or(i32::MAX);
        out.int("flags", self.flags)
            .str("queue_name", self.queue_name)
            .str("queue_id", self.queue_id)
            .long("offset", self.data_offset)
            .long("size", self.data_size)
            .str("nexthop", self.nexthop)
            .str("encoding", self.encoding)
            .int(self.dialect.sendopts_attr(), self.sendopts)
            .str("sender", self.sender)
            .str("envelope_id", self.envelope_id)
            .int("ret_flags", self.ret_flags)
            .data("time", &self.stats.to_bytes())
            .str("log_client_name", self.log_client_name)
            .str("log_client_address", self.log_client_address)
            .str("log_client_port", self.log_client_port)
            .str("log_protocol_name", self.log_protocol_name)
            .str("log_helo_name", self.log_helo_name)
            .str("sasl_method", self.sasl_method)
            .str("sasl_username", self.sasl_username)
            .str("sasl_sender", self.sasl_sender)
            .str("log_ident", self.log_ident)
            .str("rewrite_context", self.rewrite_context)
            .int("recipient_count", count)
            .end();
        for rcpt in &self.recipients {
            rcpt.encode(out);
            out.end();
        }
    }
}

/// An agent's reply.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct DeliveryReply {
    /// The DSN, present when its status string is non-empty (a
    /// destination-level problem qmgr feeds back into scheduling).
    pub dsn: Option<DsnAttrs>,
    /// The DSN reason as sent, even when the status is empty: qmgr gives
    /// positive feedback only when this is empty.
    pub reason: Vec<u8>,
    /// 0 (every recipient is final, Postfix's `DEL_STAT_FINAL`) or
    /// non-zero (something was deferred).
    pub status: i32,
}

/// Parses an agent's reply list (STRICT, `status` twice).
pub fn parse_reply(list: &AttrList) -> Result<DeliveryReply, AttrError> {
    let mut r = list.strict();
    let dsn = DsnAttrs {
        status: r.expect_str("status")?.to_vec(),
        diag_type: r.expect_str("diag_type")?.to_vec(),
        diag_text: r.expect_str("diag_text")?.to_vec(),
        mta_type: r.expect_str("mta_type")?.to_vec(),
        mta_mname: r.expect_str("mta_mname")?.to_vec(),
        action: r.expect_str("action")?.to_vec(),
        reason: r.expect_str("reason")?.to_vec(),
    };
    let status = r.expect_int("status")?;
    r.finish()?;
    let reason = dsn.reason.clone();
    Ok(DeliveryReply {
        dsn: (!dsn.status.is_empty()).then_some(dsn),
        reason,
        status,
    })
}

/// One connection to a delivery agent, for one delivery.  Dropping it
/// closes the socket, which the agent waits for after replying.
#[derive(Debug)]
pub struct AgentConnection {
    stream: AttrStream,
}

impl AgentConnection {
    /// Connects to `private/<transport>`; `timeout` bounds each I/O step.
    #[cfg(test)]
    pub(crate) async fn connect(
        path: &Path,
        timeout: Duration,
    ) -> Result<AgentConnection, IpcError> {
        Ok(AgentConnection {
            stream: AttrStream::connect(path, timeout).await?,
        })
    }

    /// Connects to `private/<transport>` by `deadline`; later I/O steps
    /// are bounded by `timeout` each unless [`set_deadline`](Self::set_deadline)
    /// gives them one deadline.
    pub async fn connect_until(
        path: &Path,
        deadline: Instant,
        timeout: Duration,
    ) -> Result<AgentConnection, IpcError> {
        Ok(AgentConnection {
            stream: AttrStream::connect_until(path, deadline, timeout).await?,
        })
    }

    /// Wraps a stream already connected to an agent, named `service`
    /// ("private/smtp") in errors: the fuzz target's way in.
    pub(crate) fn from_stream(
        stream: tokio::net::UnixStream,
        service: &str,
        timeout: Duration,
    ) -> AgentConnection {
        AgentConnection {
            stream: AttrStream::from_stream_named(stream, service.to_owned(), timeout),
        }
    }

    /// The service name, e.g. "private/smtp".
    #[cfg(test)]
    pub(crate) fn service(&self) -> &str {
        self.stream.service()
    }

    /// Changes the I/O deadline (e.g. daemon_timeout before the reply).
    #[cfg(test)]
    pub(crate) fn set_timeout(&mut self, timeout: Duration) {
        self.stream.set_timeout(timeout);
    }

    /// Bounds all following I/O steps together by `deadline` (`None`: each
    /// step by the timeout again).
    pub fn set_deadline(&mut self, deadline: Option<Instant>) {
        self.stream.set_deadline(deadline);
    }

    /// Waits for the agent's announcement; only then is it ready for a
    /// request.
    pub async fn wait_ready(&mut self) -> Result<(), IpcError> {
        self.stream.expect_announcement(PROTOCOL).await
    }

    /// Sends the request.  A failure here means "transport unavailable".
    #[cfg(test)]
    pub(crate) async fn send_request(&mut self, req: &DeliveryRequest) -> Result<(), IpcError> {
        self.stream.send(&req.to_bytes()).await
    }

    /// Sends a request already encoded with
    /// [`DeliveryRequestRef::to_bytes`].  A failure here means "transport
    /// unavailable".
    pub async fn send_encoded(&mut self, request: &[u8]) -> Result<(), IpcError> {
        self.stream.send(request).await
    }

    /// Reads and parses the reply.  A failure here means "agent crashed".
    pub async fn read_reply(&mut self) -> Result<DeliveryReply, IpcError> {
        let list = self.stream.read_list().await?;
        parse_reply(&list).map_err(|e| self.stream.attr_error(e))
    }

    /// [`send_request`](Self::send_request) then
    /// [`read_reply`](Self::read_reply).
    #[cfg(test)]
    pub(crate) async fn deliver(
        &mut self,
        req: &DeliveryRequest,
    ) -> Result<DeliveryReply, IpcError> {
        self.send_request(req).await?;
        self.read_reply().await
    }
}

#[cfg(test)]
mod tests;
