//! What the daemon keeps of each message in the active queue.
//!
//! The scheduler knows messages by a number and recipients by their index
//! in the message's in-core recipients ([`InCore`]); this is where the
//! numbers lead back to the envelope, the recipients and the queue file.
//! A refill while deliveries are under way (early refill) appends, so an
//! index stays valid as long as the scheduler may name it; indexes start
//! afresh only at a refill with nothing left in core. Like Postfix, which
//! frees each recipient with its delivery, a recipient is released once
//! the scheduler can no longer name it (its delivery replied, it was
//! deferred on the spot, or it was never routed): its strings go at once,
//! and its slot, 8 bytes, once every earlier one is released too. The
//! file is not kept open between reads (Postfix closes it too): delivery
//! agents need to lock it shared, and a refill simply reopens it.

use std::collections::VecDeque;
use std::time::SystemTime;

use rqmgr_ipc::deliver::{DeliveryRequestRef, MsgStats, RecipientOut, RecipientRef};
use rqmgr_ipc::dialect::Dialect;
use rqmgr_queue::message::{QueueMessage, Recipient};
use rqmgr_queue::queue_id::QueueId;
use rqmgr_sched::Route;

use crate::address;

/// `DEL_REQ_FLAG_DEFLT`: bounce and report success (3).
const DEL_REQ_FLAG_DEFLT: i32 = 3;
/// `DEL_REQ_FLAG_BOUNCE`.
const DEL_REQ_FLAG_BOUNCE: i32 = 2;
/// `DEL_REQ_FLAG_MTA_VRFY`.
pub(crate) const DEL_REQ_FLAG_MTA_VRFY: i32 = 256;
/// `DEL_REQ_FLAG_USR_VRFY`.
pub(crate) const DEL_REQ_FLAG_USR_VRFY: i32 = 512;
/// `DEL_REQ_FLAG_RECORD`.
pub(crate) const DEL_REQ_FLAG_RECORD: i32 = 1024;
/// `DEL_REQ_FLAG_REC_DLY_SENT`.
pub(crate) const DEL_REQ_FLAG_REC_DLY_SENT: i32 = 8192;
/// The trace flags qmgr takes from the queue file.
const DEL_REQ_TRACE_FLAGS_MASK: i32 =
    DEL_REQ_FLAG_MTA_VRFY | DEL_REQ_FLAG_USR_VRFY | DEL_REQ_FLAG_RECORD | DEL_REQ_FLAG_REC_DLY_SENT;
/// Probes that only trace and never deliver.
pub(crate) const DEL_REQ_TRACE_ONLY_MASK: i32 = DEL_REQ_FLAG_MTA_VRFY | DEL_REQ_FLAG_USR_VRFY;
/// `QMGR_READ_FLAG_NOTIFY_SUCCESS`: some recipient asked for DSN SUCCESS.
pub(crate) const READ_FLAG_NOTIFY_SUCCESS: i32 = 4;
/// `SMTPUTF8_FLAG_RECIPIENT`.
const SMTPUTF8_FLAG_RECIPIENT: i32 = 8;
/// `SMTPUTF8_FLAG_SENDER`.
const SMTPUTF8_FLAG_SENDER: i32 = 4;

/// One message in the active queue.
#[derive(Debug)]
pub(crate) struct ActiveMessage {
    /// Its queue ID (file name).
    pub queue_id: QueueId,
    /// Scan and mode flags (`scan::FLUSH_EACH` and the rest).
    pub qflags: u32,
    /// Envelope; its `recipients` are moved to `rcpts` as they are read.
    pub env: QueueMessage,
    /// When it entered the active queue.
    pub active_arrival: SystemTime,
    /// Something was deferred or failed: Postfix's `message->flags`.
    pub status: i32,
    /// The recipients in core, by index.
    pub rcpts: InCore,
    /// A read of more recipients failed while deliveries were under way:
    /// no more are read until those are done, then the read is tried once
    /// more (Postfix's `rcpt_offset` stays set), and the file goes to
    /// `corrupt/` if it fails again.
    pub reread_at_end: bool,
    /// The destinations of its recipients in core, and whether one of
    /// them was deferred (for the deferred index, control.rs).
    pub dests: Dests,
}

/// A destination a message has recipients for: transport and next hop
/// in one allocation (neither can hold a NUL: Postfix passes them as C
/// strings).
#[derive(Debug)]
pub(crate) struct DeferDest {
    name: Box<[u8]>,
    split: usize,
    /// A recipient for it was deferred in this attempt.
    pub deferred: bool,
}

impl DeferDest {
    fn new(transport: &[u8], nexthop: &[u8]) -> DeferDest {
        DeferDest {
            name: [transport, b"\0", nexthop].concat().into_boxed_slice(),
            split: transport.len(),
            deferred: false,
        }
    }

    pub(crate) fn transport(&self) -> &[u8] {
        &self.name[..self.split]
    }

    pub(crate) fn nexthop(&self) -> &[u8] {
        &self.name[self.split + 1..]
    }

    fn is(&self, route: &Route) -> bool {
        self.transport() == &route.transport[..] && self.nexthop() == &route.nexthop[..]
    }
}

/// A message's destinations, by index; most messages have one, which
/// then costs no list.
#[derive(Debug, Default)]
pub(crate) struct Dests {
    first: Option<DeferDest>,
    more: Vec<DeferDest>,
}

impl Dests {
    fn get(&self, i: usize) -> Option<&DeferDest> {
        match i {
            0 => self.first.as_ref(),
            _ => self.more.get(i - 1),
        }
    }

    fn get_mut(&mut self, i: usize) -> Option<&mut DeferDest> {
        match i {
            0 => self.first.as_mut(),
            _ => self.more.get_mut(i - 1),
        }
    }

    /// The index of `route`'s destination, added if new.
    fn index_of(&mut self, route: &Route) -> usize {
        if self.first.as_ref().is_some_and(|d| d.is(route)) {
            return 0;
        }
        if let Some(k) = self.more.iter().position(|d| d.is(route)) {
            return k + 1;
        }
        let d = DeferDest::new(&route.transport, &route.nexthop);
        if self.first.is_none() {
            self.first = Some(d);
            return 0;
        }
        self.more.push(d);
        self.more.len()
    }

    /// Those with a deferred recipient.
    pub(crate) fn deferred(&self) -> impl Iterator<Item = &DeferDest> {
        self.first.iter().chain(&self.more).filter(|d| d.deferred)
    }
}

/// [`Held::dest`] of a recipient not routed (yet).
pub(crate) const NO_DEST: u32 = u32::MAX;

/// One recipient in core.
#[derive(Debug)]
pub(crate) struct Held {
    /// As read from the queue file.
    pub rcpt: Recipient,
    /// The address as resolved, when trivial-rewrite changed it.
    pub rewritten: Option<Vec<u8>>,
    /// Its destination: an index into [`ActiveMessage::dests`], or
    /// [`NO_DEST`].
    pub dest: u32,
}

impl Held {
    /// The address as resolved.
    fn address(&self) -> &[u8] {
        self.rewritten.as_deref().unwrap_or(&self.rcpt.address)
    }

    /// The recipient as sent to an agent, borrowed.
    fn recipient_ref(&self) -> RecipientRef<'_> {
        let r = &self.rcpt;
        RecipientRef {
            orig_rcpt: &r.orig_rcpt,
            address: self.address(),
            offset: i64::try_from(r.offset).unwrap_or(i64::MAX),
            dsn_orig_rcpt: &r.dsn_orig_rcpt,
            notify_flags: r.notify_flags,
        }
    }
}

/// A message's recipients in core, by index (see the module doc).
/// Invariant: slot `k` holds index `base + k`; the first slot, if any,
/// is held (released ones at the front are dropped at once).
#[derive(Debug, Default)]
pub(crate) struct InCore {
    base: usize,
    slots: VecDeque<Option<Box<Held>>>,
}

impl InCore {
    /// The index the next recipient will get.
    pub(crate) fn end(&self) -> usize {
        self.base + self.slots.len()
    }

    /// Takes in a batch; returns the index of its first recipient.
    pub(crate) fn extend(&mut self, batch: Vec<Recipient>) -> usize {
        let first = self.end();
        self.slots.extend(batch.into_iter().map(|rcpt| {
            Some(Box::new(Held {
                rcpt,
                rewritten: None,
                dest: NO_DEST,
            }))
        }));
        first
    }

    /// Forgets everything; indexes start at 0 again.
    pub(crate) fn restart(&mut self) {
        self.base = 0;
        self.slots.clear();
    }

    /// Recipient `i`, unless released.
    pub(crate) fn get(&self, i: usize) -> Option<&Held> {
        self.slots.get(i.checked_sub(self.base)?)?.as_deref()
    }

    /// Recipient `i` to change, unless released.
    pub(crate) fn get_mut(&mut self, i: usize) -> Option<&mut Held> {
        self.slots
            .get_mut(i.checked_sub(self.base)?)?
            .as_deref_mut()
    }

    /// Frees recipient `i`; releasing one twice, or one not held, is a
    /// no-op.
    pub(crate) fn release(&mut self, i: usize) {
        if let Some(slot) = i.checked_sub(self.base).and_then(|k| self.slots.get_mut(k)) {
            *slot = None;
        }
        while let Some(None) = self.slots.front() {
            self.slots.pop_front();
            self.base += 1;
        }
    }

    /// How many recipients are held.
    #[cfg(test)]
    fn held(&self) -> usize {
        self.slots.iter().filter(|s| s.is_some()).count()
    }

    /// How many slots are kept (held, or released behind a held one).
    #[cfg(test)]
    fn slots(&self) -> usize {
        self.slots.len()
    }
}

impl ActiveMessage {
    /// Notes each routed recipient's destination.
    pub(crate) fn tag_destinations(&mut self, routes: &[Route]) {
        let mut last = usize::MAX;
        for route in routes {
            if !self.dests.get(last).is_some_and(|d| d.is(route)) {
                last = self.dests.index_of(route);
            }
            if let Some(h) = self.rcpts.get_mut(route.rcpt as usize) {
                h.dest = u32::try_from(last).unwrap_or(NO_DEST);
            }
        }
    }

    /// Notes that these recipients were deferred (or may have been).
    pub(crate) fn mark_deferred(&mut self, rcpts: &[u32]) {
        for &r in rcpts {
            let dest = self.rcpts.get(r as usize).map_or(NO_DEST, |h| h.dest);
            if let Some(d) = self.dests.get_mut(dest as usize) {
                d.deferred = true;
            }
        }
    }

    /// Trace flags from the file, masked as qmgr masks them.
    pub(crate) fn tflags(&self) -> i32 {
        self.env.trace_flags & DEL_REQ_TRACE_FLAGS_MASK
    }

    /// The recipient's address as resolved (trivial-rewrite may rewrite);
    /// empty for a released recipient.
    pub(crate) fn address(&self, i: usize) -> &[u8] {
        self.rcpts.get(i).map_or(&[], Held::address)
    }

    /// Delivery statistics as qmgr fills them in: arrival and activation.
    fn stats(&self) -> MsgStats {
        MsgStats {
            incoming_arrival: self.env.arrival,
            active_arrival: rqmgr_ipc::deliver::timeval(self.active_arrival),
            ..MsgStats::default()
        }
    }

    /// The wire form of recipient `i`, unless released.
    pub(crate) fn recipient_out(&self, i: usize) -> Option<RecipientOut> {
        let h = self.rcpts.get(i)?;
        let r = &h.rcpt;
        Some(RecipientOut {
            orig_rcpt: r.orig_rcpt.clone(),
            address: h.address().to_vec(),
            offset: i64::try_from(r.offset).unwrap_or(i64::MAX),
            dsn_orig_rcpt: r.dsn_orig_rcpt.clone(),
            notify_flags: r.notify_flags,
        })
    }

    /// The encoded delivery request for these recipients
    /// (`qmgr_deliver_send_request()`). It is encoded straight from the
    /// message's fields rather than from an owned copy of them, because
    /// this runs once per delivery. It is written into `buf`'s memory.
    pub(crate) fn request_bytes(
        &self,
        buf: Vec<u8>,
        rcpts: &[u32],
        nexthop: &[u8],
        dest_flags: u32,
        smtputf8_enable: bool,
        dialect: Dialect,
    ) -> Vec<u8> {
        let env = &self.env;
        // The scheduler names only recipients it holds, so none is missing.
        let recipients: Vec<RecipientRef<'_>> = rcpts
            .iter()
            .filter_map(|&i| self.rcpts.get(i as usize))
            .map(Held::recipient_ref)
            .collect();
        let mut sendopts = env.size.sendopts;
        if smtputf8_enable {
            for r in &recipients {
                if !r.address.is_empty()
                    && !r.address.is_ascii()
                    && std::str::from_utf8(r.address).is_ok()
                {
                    sendopts |= SMTPUTF8_FLAG_RECIPIENT;
                    if env.verp_delims.is_some() {
                        sendopts |= SMTPUTF8_FLAG_SENDER;
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
            nexthop,
            encoding: &env.encoding,
            sendopts,
            dialect,
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
        .encode_into(buf)
    }
}

/// VERP: `prefix@origin` becomes `prefix+user=domain@origin`, from the
/// original recipient when there is one (what VERP consumers expect).
fn verp_sender(sender: &[u8], delims: &[u8], rcpt: &RecipientRef<'_>) -> Vec<u8> {
    let (s_local, s_domain) = address::split(sender);
    let recipient = if rcpt.orig_rcpt.is_empty() {
        rcpt.address
    } else {
        rcpt.orig_rcpt
    };
    let (r_local, r_domain) = address::split(recipient);
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

#[cfg(test)]
mod tests {
    use super::*;

    fn batch(names: &[&str]) -> Vec<Recipient> {
        names
            .iter()
            .enumerate()
            .map(|(k, n)| Recipient {
                offset: k as u64,
                address: n.as_bytes().to_vec(),
                ..Recipient::default()
            })
            .collect()
    }

    #[test]
    fn in_core_indexes_survive_releases_and_appends() {
        let mut c = InCore::default();
        assert_eq!(c.extend(batch(&["a", "b", "c"])), 0);
        c.get_mut(1).unwrap().rewritten = Some(b"B".to_vec());
        assert_eq!(c.get(1).unwrap().address(), b"B");
        // Released out of order: the strings go, the slots stay until the
        // front is released.
        c.release(1);
        assert!(c.get(1).is_none());
        assert_eq!((c.held(), c.slots()), (2, 3));
        c.release(0);
        assert_eq!((c.held(), c.slots()), (1, 1));
        // An early refill appends after the highest index ever given.
        assert_eq!(c.extend(batch(&["d", "e"])), 3);
        assert_eq!(c.get(2).unwrap().rcpt.address, b"c");
        assert_eq!(c.get(4).unwrap().rcpt.address, b"e");
        // Releasing twice, or what was never there, changes nothing.
        c.release(1);
        c.release(99);
        assert_eq!((c.held(), c.slots()), (3, 3));
        for i in 2..5 {
            c.release(i);
        }
        assert_eq!((c.held(), c.slots(), c.end()), (0, 0, 5));
        assert!(c.get(4).is_none());
        // A refill with nothing in core starts again at 0.
        c.restart();
        assert_eq!(c.extend(batch(&["f"])), 0);
        assert_eq!(c.get(0).unwrap().rcpt.address, b"f");
    }

    /// An active message with an empty envelope and no recipients.
    fn message() -> ActiveMessage {
        ActiveMessage {
            queue_id: QueueId::parse("ABCDEF123").unwrap(),
            qflags: 0,
            env: QueueMessage::default(),
            active_arrival: SystemTime::UNIX_EPOCH,
            status: 0,
            rcpts: InCore::default(),
            reread_at_end: false,
            dests: Dests::default(),
        }
    }

    #[test]
    fn deferred_recipients_mark_their_destinations() {
        let route = |rcpt: u32, transport: &str, nexthop: &str| Route {
            rcpt,
            transport: transport.into(),
            nexthop: nexthop.into(),
            address: "u@x".into(),
        };
        let mut m = message();
        m.rcpts.extend(batch(&["a@x", "b@x", "c@y", "d@x"]));
        m.tag_destinations(&[
            route(0, "smtp", "x"),
            route(1, "smtp", "x"),
            route(2, "relay", "y"),
            route(3, "smtp", "x"),
        ]);
        assert_eq!(m.dests.deferred().count(), 0);
        m.mark_deferred(&[3]);
        let names: Vec<(&[u8], &[u8])> = m
            .dests
            .deferred()
            .map(|d| (d.transport(), d.nexthop()))
            .collect();
        assert_eq!(names, vec![(&b"smtp"[..], &b"x"[..])]);
        m.mark_deferred(&[2, 99]);
        assert_eq!(m.dests.deferred().count(), 2);
    }

    #[test]
    fn requests_and_defers_name_only_held_recipients() {
        let mut m = message();
        m.rcpts.extend(batch(&["a@x", "b@x"]));
        m.rcpts.release(0);
        assert!(m.recipient_out(0).is_none());
        assert_eq!(m.recipient_out(1).unwrap().address, b"b@x");
        assert_eq!(m.address(0), b"");
        let request = m.request_bytes(Vec::new(), &[0, 1], b"x", 0, false, Dialect::Postfix37);
        let text = String::from_utf8_lossy(&request);
        assert!(text.contains("b@x") && !text.contains("a@x"), "{text:?}");
    }

    /// qmgr_deliver.c: the send options go to the agent as read, plus the
    /// SMTPUTF8 recipient bit (0x08) for a non-ASCII recipient when
    /// smtputf8_enable is on, under the release's attribute name.
    #[test]
    fn send_options_reach_the_request_unchanged() {
        let mut m = message();
        m.env.size.sendopts = 0x30;
        m.rcpts.extend(batch(&["a@x", "j\u{f6}rg@x"]));
        let attr = |request: &[u8], name: &str| {
            let text = String::from_utf8_lossy(request).into_owned();
            let at = text.find(&format!("\0{name}\0")).expect(name) + name.len() + 2;
            text[at..].split('\0').next().unwrap().to_owned()
        };
        let ascii = m.request_bytes(Vec::new(), &[0], b"x", 0, true, Dialect::Postfix311);
        assert_eq!(attr(&ascii, "sendopts"), "48");
        let utf8 = m.request_bytes(Vec::new(), &[1], b"x", 0, true, Dialect::Postfix310);
        assert_eq!(attr(&utf8, "sendopts"), "56");
        let off = m.request_bytes(Vec::new(), &[1], b"x", 0, false, Dialect::Postfix37);
        assert_eq!(attr(&off, "smtputf8"), "48");
    }

    /// Postfix passes next hops and addresses on as bytes: a Latin-1
    /// next hop and recipient reach the agent exactly, and a recipient
    /// that is not UTF-8 does not ask for SMTPUTF8.
    #[test]
    fn requests_carry_8bit_bytes_exactly() {
        let mut m = message();
        m.rcpts.extend(batch(&["x"]));
        let held = m.rcpts.get_mut(0).unwrap();
        held.rcpt.address = b"j\xfcrgen@b\xe4d.example".to_vec();
        held.rcpt.orig_rcpt = b"J\xfcrgen@B\xe4d.example".to_vec();
        let request = m.request_bytes(
            Vec::new(),
            &[0],
            b"b\xe4d.example",
            0,
            true,
            Dialect::Postfix37,
        );
        for attr in [
            &b"\0nexthop\0b\xe4d.example\0"[..],
            b"\0smtputf8\x000\0",
            b"\0original_recipient\0J\xfcrgen@B\xe4d.example\0",
            b"\0recipient\0j\xfcrgen@b\xe4d.example\0",
        ] {
            assert!(
                request.windows(attr.len()).any(|w| w == attr),
                "{} not in {}",
                attr.escape_ascii(),
                request.escape_ascii()
            );
        }
        let replacement = "\u{fffd}".as_bytes();
        assert!(!request.windows(3).any(|w| w == replacement));
    }

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
