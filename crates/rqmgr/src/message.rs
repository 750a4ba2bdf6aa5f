//! What the daemon keeps of each message in the active queue.
//!
//! The scheduler knows messages by a number and recipients by their index
//! in the message's in-core recipient list; this is where the numbers lead
//! back to the envelope, the recipients and the queue file. A refill while
//! deliveries are under way (early refill) appends to that list, so an
//! index stays valid as long as the scheduler may name it; the list starts
//! afresh only at a refill with nothing left in core. Until then it holds
//! every recipient read since (about 150 bytes each), where Postfix frees
//! each recipient as its delivery ends. The file is not kept open
//! between reads (Postfix closes it too): delivery agents need to lock it
//! shared, and a refill simply reopens it.

use std::time::SystemTime;

use rqmgr_ipc::deliver::{DeliveryRequestRef, MsgStats, RecipientOut, RecipientRef};
use rqmgr_queue::message::{QueueMessage, Recipient};
use rqmgr_queue::queue_id::QueueId;

/// `DEL_REQ_FLAG_DEFLT`: bounce and report success (3).
pub const DEL_REQ_FLAG_DEFLT: i32 = 3;
/// `DEL_REQ_FLAG_BOUNCE`.
pub const DEL_REQ_FLAG_BOUNCE: i32 = 2;
/// `DEL_REQ_FLAG_MTA_VRFY`.
pub const DEL_REQ_FLAG_MTA_VRFY: i32 = 256;
/// `DEL_REQ_FLAG_USR_VRFY`.
pub const DEL_REQ_FLAG_USR_VRFY: i32 = 512;
/// `DEL_REQ_FLAG_RECORD`.
pub const DEL_REQ_FLAG_RECORD: i32 = 1024;
/// `DEL_REQ_FLAG_REC_DLY_SENT`.
pub const DEL_REQ_FLAG_REC_DLY_SENT: i32 = 8192;
/// The trace flags qmgr takes from the queue file.
pub const DEL_REQ_TRACE_FLAGS_MASK: i32 =
    DEL_REQ_FLAG_MTA_VRFY | DEL_REQ_FLAG_USR_VRFY | DEL_REQ_FLAG_RECORD | DEL_REQ_FLAG_REC_DLY_SENT;
/// Probes that only trace and never deliver.
pub const DEL_REQ_TRACE_ONLY_MASK: i32 = DEL_REQ_FLAG_MTA_VRFY | DEL_REQ_FLAG_USR_VRFY;
/// `QMGR_READ_FLAG_NOTIFY_SUCCESS`: some recipient asked for DSN SUCCESS.
pub const READ_FLAG_NOTIFY_SUCCESS: i32 = 4;
/// `SMTPUTF8_FLAG_RECIPIENT`.
pub const SMTPUTF8_FLAG_RECIPIENT: i32 = 8;
/// `SMTPUTF8_FLAG_SENDER`.
pub const SMTPUTF8_FLAG_SENDER: i32 = 4;

/// One message in the active queue.
#[derive(Debug)]
pub struct ActiveMessage {
    /// Its queue ID (file name).
    pub queue_id: QueueId,
    /// Scan and mode flags (`scan::FLUSH_EACH` and the rest).
    pub qflags: u32,
    /// Envelope and the current batch of recipients.
    pub env: QueueMessage,
    /// When it entered the active queue.
    pub active_arrival: SystemTime,
    /// Something was deferred or failed: Postfix's `message->flags`.
    pub status: i32,
    /// Recipients resolved to a different address than the file holds.
    pub rewritten: Vec<Option<Vec<u8>>>,
}

impl ActiveMessage {
    /// Trace flags from the file, masked as qmgr masks them.
    pub fn tflags(&self) -> i32 {
        self.env.trace_flags & DEL_REQ_TRACE_FLAGS_MASK
    }

    /// The recipient's address as resolved (trivial-rewrite may rewrite).
    pub fn address(&self, i: usize) -> &[u8] {
        match self.rewritten.get(i) {
            Some(Some(a)) => a,
            _ => &self.env.recipients[i].address,
        }
    }

    /// Delivery statistics as qmgr fills them in: arrival and activation.
    pub fn stats(&self) -> MsgStats {
        MsgStats {
            incoming_arrival: self.env.arrival,
            active_arrival: rqmgr_ipc::deliver::timeval(self.active_arrival),
            ..MsgStats::default()
        }
    }

    /// The wire form of recipient `i`.
    pub fn recipient_out(&self, i: usize) -> RecipientOut {
        let r: &Recipient = &self.env.recipients[i];
        RecipientOut {
            orig_rcpt: r.orig_rcpt.clone(),
            address: self.address(i).to_vec(),
            offset: i64::try_from(r.offset).unwrap_or(i64::MAX),
            dsn_orig_rcpt: r.dsn_orig_rcpt.clone(),
            notify_flags: r.notify_flags,
        }
    }

    /// Recipient `i` as sent to an agent, borrowed from the message.
    fn recipient_ref(&self, i: usize) -> RecipientRef<'_> {
        let r: &Recipient = &self.env.recipients[i];
        RecipientRef {
            orig_rcpt: &r.orig_rcpt,
            address: self.address(i),
            offset: i64::try_from(r.offset).unwrap_or(i64::MAX),
            dsn_orig_rcpt: &r.dsn_orig_rcpt,
            notify_flags: r.notify_flags,
        }
    }

    /// The encoded delivery request for these recipients
    /// (`qmgr_deliver_send_request()`). It is encoded straight from the
    /// message's fields rather than from an owned copy of them, because
    /// this runs once per delivery.
    pub fn request_bytes(
        &self,
        rcpts: &[u32],
        nexthop: &str,
        dest_flags: u32,
        smtputf8_enable: bool,
    ) -> Vec<u8> {
        let env = &self.env;
        let recipients: Vec<RecipientRef<'_>> = rcpts
            .iter()
            .map(|&i| self.recipient_ref(i as usize))
            .collect();
        let mut smtputf8 = env.size.smtputf8;
        if smtputf8_enable {
            for r in &recipients {
                if !r.address.is_empty()
                    && !r.address.is_ascii()
                    && std::str::from_utf8(r.address).is_ok()
                {
                    smtputf8 |= SMTPUTF8_FLAG_RECIPIENT;
                    if env.verp_delims.is_some() {
                        smtputf8 |= SMTPUTF8_FLAG_SENDER;
                    }
                }
            }
        }
        let verp = match (&env.verp_delims, recipients.first()) {
            (Some(delims), Some(r)) => Some(verp_sender(&env.sender, delims, r)),
            _ => None,
        };
        let flags = self.tflags()
            | i32::try_from(dest_flags).unwrap_or(0)
            | if env.inspector.is_some() {
                DEL_REQ_FLAG_BOUNCE
            } else {
                DEL_REQ_FLAG_DEFLT
            };
        DeliveryRequestRef {
            flags,
            queue_name: b"active",
            queue_id: self.queue_id.as_str().as_bytes(),
            data_offset: env.size.data_offset,
            data_size: env.size.content_length,
            nexthop: nexthop.as_bytes(),
            encoding: &env.encoding,
            smtputf8,
            sender: verp.as_deref().unwrap_or(&env.sender),
            envelope_id: &env.envelope_id,
            ret_flags: env.ret_flags,
            stats: self.stats(),
            log_client_name: &env.log_client_name,
            log_client_address: &env.log_client_address,
            log_client_port: &env.log_client_port,
            log_protocol_name: &env.log_protocol_name,
            log_helo_name: &env.log_helo_name,
            sasl_method: &env.sasl_method,
            sasl_username: &env.sasl_username,
            sasl_sender: &env.sasl_sender,
            log_ident: &env.log_ident,
            rewrite_context: &env.rewrite_context,
            recipients,
        }
        .to_bytes()
    }
}

/// VERP: `prefix@origin` becomes `prefix+user=domain@origin`, from the
/// original recipient when there is one (what VERP consumers expect).
pub fn verp_sender(sender: &[u8], delims: &[u8], rcpt: &RecipientRef<'_>) -> Vec<u8> {
    let (s_local, s_domain) = split_at_last(sender, b'@');
    let recipient = if rcpt.orig_rcpt.is_empty() {
        rcpt.address
    } else {
        rcpt.orig_rcpt
    };
    let (r_local, r_domain) = split_at_last(recipient, b'@');
    let mut out = s_local.to_vec();
    out.push(delims.first().copied().unwrap_or(b'+'));
    out.extend_from_slice(r_local);
    if let Some(d) = r_domain.filter(|d| !d.is_empty()) {
        out.push(delims.get(1).copied().unwrap_or(b'='));
        out.extend_from_slice(d);
    }
    if let Some(d) = s_domain.filter(|d| !d.is_empty()) {
        out.push(b'@');
        out.extend_from_slice(d);
    }
    out
}

fn split_at_last(s: &[u8], c: u8) -> (&[u8], Option<&[u8]>) {
    match s.iter().rposition(|&b| b == c) {
        Some(i) => (&s[..i], Some(&s[i + 1..])),
        None => (s, None),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn verp_sender_encodes_recipient() {
        let r = RecipientRef {
            address: b"joe@example.com",
            ..RecipientRef::default()
        };
        assert_eq!(
            verp_sender(b"list@origin.org", b"+=", &r),
            b"list+joe=example.com@origin.org"
        );
        let r = RecipientRef {
            address: b"x@y",
            orig_rcpt: b"orig@z",
            ..RecipientRef::default()
        };
        assert_eq!(verp_sender(b"list", b"-=", &r), b"list-orig=z");
    }
}
