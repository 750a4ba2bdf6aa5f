//! Reading a queue file the way Postfix's `qmgr_message_read` does.
//!
//! Job: extract the envelope (arrival, sender, DSN, filters, logging
//! attributes, trace flags, warning time) and up to a limit of recipients
//! from a queue file, enforcing the same record order rules and producing
//! the same verdicts as Postfix 3.7's queue manager.
//!
//! Invariants:
//! * Allowed records: envelope and extracted sets everywhere, except that
//!   at the data offset the content is skipped and only `X` may follow;
//!   `p` pointers are followed anywhere (more than 10000 backward jumps
//!   is a loop); `E` ends the read.
//! * `A` records named `create_time`, `envelope_id`, `ret_flags`,
//!   `notify_flags`, `dsn_orig_rcpt` act as the records `c i < n o`.
//! * `R`, `D` and `/` consume one unread recipient; `O`, `o`, `n` attach
//!   to the next `R`. Once the limit is reached, the resume offset is the
//!   offset just past the last collected `R`, and reading continues only
//!   for the non-recipient records still unseen (all of them if the size
//!   record says recipients are mixed in, else only the extracted segment).
//! * Payloads are used up to their first NUL byte, as Postfix's C strings.
//!
//! Failure: a malformed file yields an [`Error`] that names offset and
//! record; [`Error::postfix_warnings`] gives the log lines. Anomalies that
//! Postfix only warns about are collected in [`QueueMessage::warnings`].
//! No input can make the reader panic or loop forever.
//!
//! Limits: logging (`opened`), locking and the `dsn_delay_cleared` policy
//! are the caller's job; see [`QueueMessage::opened`]. A rcpt-count
//! mismatch warning is lost when the same read also fails.

use std::io::{Read, Seek};

use crate::error::{Error, ReadWarning};
use crate::record::{rec_type as rt, RecordReader, LEGACY_LENGTH_BYTES};
use crate::size::{self, SizeParseError, SizeRecord};

mod walk;

/// Per-read limits and settings.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReadLimits {
    /// `None`: first read from the start. `Some(off)`: a refill without
    /// the earlier result (see [`read_message_from`]); prefer
    /// [`QueueMessage::refill`].
    pub resume_offset: Option<u64>,
    /// Recipients to collect in this read; Postfix caps it at 5000 and a
    /// value of 0 is treated as 1.
    pub max_recipients: usize,
    /// The `verp_delimiter_filter` parameter (default `-=+`).
    pub verp_delimiter_filter: Vec<u8>,
    /// Length bytes a record header may have (see
    /// `RecordReader::max_length_bytes`); kept for refills.
    pub max_length_bytes: u32,
}

impl Default for ReadLimits {
    fn default() -> Self {
        ReadLimits {
            resume_offset: None,
            max_recipients: 20000,
            verp_delimiter_filter: b"-=+".to_vec(),
            max_length_bytes: LEGACY_LENGTH_BYTES,
        }
    }
}

/// Postfix's per-read recipient cap ("keep interrupt latency in check").
const READ_RECIPIENT_CAP: usize = 5000;

/// Trace flag bits qmgr keeps from `trace_flags`.
mod trace_flag {
    /// MTA-requested address probe.
    const MTA_VRFY: i32 = 1 << 8;
    /// User-requested address probe.
    const USR_VRFY: i32 = 1 << 9;
    /// Record and deliver.
    pub(crate) const RECORD: i32 = 1 << 10;
    /// Record delayed delivery.
    const REC_DLY_SENT: i32 = 1 << 13;
    /// All of the above.
    pub(crate) const MASK: i32 = MTA_VRFY | USR_VRFY | RECORD | REC_DLY_SENT;
}

/// One recipient to deliver.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Recipient {
    /// Offset of the `R` record (where an agent writes `D`).
    pub offset: u64,
    /// The recipient address.
    pub address: Vec<u8>,
    /// Original recipient (`O`), or empty.
    pub orig_rcpt: Vec<u8>,
    /// DSN original recipient (`o`), or empty.
    pub dsn_orig_rcpt: Vec<u8>,
    /// DSN NOTIFY flags (`n`), or 0.
    pub notify_flags: i32,
}

/// The `W` record: where it is and what it says.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct WarnRecord {
    /// Offset of the record (for the in-place rewrite).
    pub offset: u64,
    /// Next warning time; -1 after the warning was sent.
    pub time: i64,
}

/// What Postfix logs when it first reads the sender:
/// `QID: from=<sender>, size=SIZE, nrcpt=NRCPT (queue active)`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Opened {
    /// Content length known at that point.
    pub size: i64,
    /// Unread recipient count at that point.
    pub nrcpt: i64,
}

/// A queue file's envelope as qmgr sees it after one read.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct QueueMessage {
    /// Arrival time from `T` (seconds, microseconds).
    pub arrival: (i64, i64),
    /// Creation time (`create_time`), or the arrival seconds.
    pub create_time: i64,
    /// Envelope sender; empty for the null sender.
    pub sender: Box<[u8]>,
    /// The size record.
    pub size: SizeRecord,
    /// DSN envelope id, or empty.
    pub envelope_id: Box<[u8]>,
    /// DSN RET flags (1 full, 2 headers), or 0.
    pub ret_flags: i32,
    /// Content encoding (`7bit`, `8bit`) or empty.
    pub encoding: Box<[u8]>,
    /// VERP delimiters when VERP is on (then one recipient per delivery).
    pub verp_delims: Option<Box<[u8]>>,
    /// Content filter (`L`), last one wins.
    pub filter: Option<Box<[u8]>>,
    /// Content inspector (`I`), last one wins.
    pub inspector: Option<Box<[u8]>>,
    /// Redirect address (`>`), last one wins.
    pub redirect: Option<Box<[u8]>>,
    /// The first `W` record.
    pub warn_time: Option<WarnRecord>,
    /// Trace flags, masked to `trace_flag::MASK`.
    pub trace_flags: i32,
    /// Offset of the `trace_flags` record when the flags are exactly RECORD
    /// (qmgr kills that record after a trace report).
    pub trace_flags_offset: Option<u64>,
    /// Address rewriting context, default `local`.
    pub rewrite_context: Box<[u8]>,
    /// Client name for logging.
    pub log_client_name: Box<[u8]>,
    /// Client address for logging.
    pub log_client_address: Box<[u8]>,
    /// Client port for logging.
    pub log_client_port: Box<[u8]>,
    /// Protocol name for logging.
    pub log_protocol_name: Box<[u8]>,
    /// HELO name for logging.
    pub log_helo_name: Box<[u8]>,
    /// SASL method.
    pub sasl_method: Box<[u8]>,
    /// SASL user name.
    pub sasl_username: Box<[u8]>,
    /// SASL sender.
    pub sasl_sender: Box<[u8]>,
    /// Log identifier.
    pub log_ident: Box<[u8]>,
    /// Recipients not yet read (size-record count minus `R`/`D`/`/` seen).
    pub rcpt_unread: i64,
    /// Recipients collected by this read.
    pub recipients: Vec<Recipient>,
    /// `Some`: more recipients remain; refill from this offset.
    pub resume_offset: Option<u64>,
    /// True once every non-recipient record was examined.
    pub seen_all_non_rcpt: bool,
    /// True when VERP forces one recipient per delivery.
    pub single_rcpt: bool,
    /// Sender log data, set when the first `S` was read in this read.
    pub opened: Option<Opened>,
    /// Things Postfix warns about and then ignores, in log order.
    pub warnings: Vec<ReadWarning>,
    /// Length bytes a record header may have, from the first read's
    /// [`ReadLimits`], for refills.
    pub max_length_bytes: u32,
}

impl QueueMessage {
    fn empty() -> Self {
        QueueMessage {
            arrival: (0, 0),
            create_time: 0,
            sender: Box::default(),
            size: SizeRecord {
                rflags: size::READ_FLAG_MIXED_RCPT_OTHER,
                ..SizeRecord::default()
            },
            envelope_id: Box::default(),
            ret_flags: 0,
            encoding: Box::default(),
            verp_delims: None,
            filter: None,
            inspector: None,
            redirect: None,
            warn_time: None,
            trace_flags: 0,
            trace_flags_offset: None,
            rewrite_context: b"local"[..].into(),
            log_client_name: Box::default(),
            log_client_address: Box::default(),
            log_client_port: Box::default(),
            log_protocol_name: Box::default(),
            log_helo_name: Box::default(),
            sasl_method: Box::default(),
            sasl_username: Box::default(),
            sasl_sender: Box::default(),
            log_ident: Box::default(),
            rcpt_unread: 0,
            recipients: Vec::new(),
            resume_offset: None,
            seen_all_non_rcpt: false,
            single_rcpt: false,
            opened: None,
            warnings: Vec::new(),
            max_length_bytes: LEGACY_LENGTH_BYTES,
        }
    }

    /// Reads the next batch of recipients from where the previous read
    /// stopped, as `qmgr_message_realloc` does. Replaces `recipients`,
    /// `resume_offset`, `rcpt_unread` and `warnings`; on error the message
    /// is left unchanged.
    pub fn refill<R: Read + Seek>(&mut self, r: R, max_recipients: usize) -> Result<(), Error> {
        let Some(start) = self.resume_offset else {
            self.recipients.clear();
            self.warnings.clear();
            return Ok(());
        };
        let mut st = walk::State::refill(self.size, self.rcpt_unread);
        let mut rr = RecordReader::new(r).max_length_bytes(self.max_length_bytes);
        rr.seek(start)?;
        walk::run(&mut rr, &mut st, effective_limit(max_recipients), b"")?;
        let (recipients, resume, unread, mut warnings) = st.finish_refill();
        let unread = check_unread(unread, resume, &mut warnings);
        self.recipients = recipients;
        self.resume_offset = resume;
        self.rcpt_unread = unread;
        self.warnings = warnings;
        self.opened = None;
        Ok(())
    }
}

fn effective_limit(max: usize) -> usize {
    max.clamp(1, READ_RECIPIENT_CAP)
}

/// Postfix resets a negative or (when complete) non-zero count with a warning.
fn check_unread(unread: i64, resume: Option<u64>, warnings: &mut Vec<ReadWarning>) -> i64 {
    if unread < 0 || (resume.is_none() && unread != 0) {
        warnings.push(ReadWarning::RcptCountMismatch(unread));
        0
    } else {
        unread
    }
}

/// Reads a queue file (first read, or a stateless refill; see
/// [`read_message_from`]).
pub fn read_message(file: &mut std::fs::File, limits: &ReadLimits) -> Result<QueueMessage, Error> {
    read_message_from(file, limits)
}

/// [`read_message`] of a file just opened, which is at offset 0 for
/// certain: the `lseek` to the start is left out (one system call per
/// message the daemon brings in).
pub fn read_opened_message(
    file: &mut std::fs::File,
    limits: &ReadLimits,
) -> Result<QueueMessage, Error> {
    read_with(RecordReader::at_start(file), limits)
}

/// [`read_message`] over any seekable reader positioned anywhere.
///
/// With `limits.resume_offset = Some(off)` this is a refill that does not
/// know the earlier read: data offset, data size and flags are taken from
/// the size record at offset 0, non-recipient records are skipped, the
/// envelope fields keep their defaults, and `rcpt_unread` counts down from
/// zero (add it to the count from the earlier read). The arrival, sender
/// and size checks are skipped because the first read made them.
pub fn read_message_from<R: Read + Seek>(r: R, limits: &ReadLimits) -> Result<QueueMessage, Error> {
    read_with(RecordReader::new(r), limits)
}

fn read_with<R: Read + Seek>(
    rr: RecordReader<R>,
    limits: &ReadLimits,
) -> Result<QueueMessage, Error> {
    let limit = effective_limit(limits.max_recipients);
    let mut rr = rr.max_length_bytes(limits.max_length_bytes);
    match limits.resume_offset {
        None => {
            rr.seek(0)?;
            let mut st = walk::State::first();
            walk::run(&mut rr, &mut st, limit, &limits.verp_delimiter_filter)?;
            let mut m = st.finish_first()?;
            m.max_length_bytes = limits.max_length_bytes;
            Ok(m)
        }
        Some(start) => {
            rr.seek(0)?;
            let mut buf = Vec::new();
            let size = match rr.next_into(&mut buf)? {
                Some((rt::SIZE, _)) => {
                    SizeRecord::parse(&buf).map_err(|e| size_error(e, 0, &buf))?
                }
                _ => return Err(Error::MissingSize),
            };
            let mut st = walk::State::refill(size, 0);
            rr.seek(start)?;
            walk::run(&mut rr, &mut st, limit, b"")?;
            let (recipients, resume, unread, warnings) = st.finish_refill();
            let mut m = QueueMessage::empty();
            m.max_length_bytes = limits.max_length_bytes;
            m.size = size;
            m.seen_all_non_rcpt = true;
            m.recipients = recipients;
            m.resume_offset = resume;
            m.rcpt_unread = unread;
            m.warnings = warnings;
            Ok(m)
        }
    }
}

pub(crate) fn size_error(e: SizeParseError, offset: u64, text: &[u8]) -> Error {
    let text = size::c_str(text).to_vec();
    match e {
        SizeParseError::InvalidFlags => Error::InvalidSizeFlags { offset, text },
        SizeParseError::Weird | SizeParseError::OldStyle { .. } => {
            Error::WeirdSizeRecord { offset, text }
        }
        _ => Error::InvalidSizeRecord { offset, text },
    }
}

#[cfg(test)]
mod tests;
