//! Errors and warnings of queue-file reading.
//!
//! Job: give every way a queue file can be unreadable a typed value that
//! names where it went wrong (file offset, record type), and reproduce the
//! exact warning lines Postfix 3.7 logs for the same file, so a replacement
//! queue manager logs what operators and log parsers expect.
//!
//! Invariants: `Display` of a content error is Postfix's own warning text
//! without the `QUEUE_ID: ` prefix; [`Error::postfix_warnings`] gives the
//! complete lines, in the order Postfix logs them. Non-fatal oddities that
//! Postfix logs and then ignores are [`ReadWarning`]s, not errors.
//!
//! Limits: Postfix prints raw bytes with `%s`/`%c`; these texts are built
//! with lossy UTF-8 conversion, so bytes that are not UTF-8 differ in the
//! log line (never in behaviour).

use std::io;

/// What was wrong with one record's framing.
#[non_exhaustive]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RecordErrorKind {
    /// The length used more than five bytes.
    TooManyLengthBits,
    /// The file ended inside the length bytes.
    EofInLength,
    /// The length does not fit Postfix's 31-bit limit.
    IllegalLength {
        /// The decoded length.
        length: u64,
    },
    /// The file ended inside the payload.
    EofInData {
        /// The announced payload length.
        length: u64,
    },
}

impl std::fmt::Display for RecordErrorKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            RecordErrorKind::TooManyLengthBits => write!(f, "too many length bits"),
            RecordErrorKind::EofInLength => write!(f, "unexpected EOF reading length"),
            RecordErrorKind::IllegalLength { length } => write!(f, "illegal length {length}"),
            RecordErrorKind::EofInData { length } => {
                write!(f, "unexpected EOF in data, length {length}")
            }
        }
    }
}

/// A framing error found by [`crate::record::decode_header`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("record type {rec_type}: {kind}")]
pub struct RecordError {
    /// Type byte of the bad record.
    pub rec_type: u8,
    /// What was wrong.
    pub kind: RecordErrorKind,
}

/// Why a queue file could not be read.
#[non_exhaustive]
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The operating system failed us; the file itself may be fine.
    #[error("queue file I/O error: {0}")]
    Io(#[from] io::Error),
    /// A record's framing is broken (Postfix then reports a missing end record).
    #[error("bad record at offset {offset}, record type {rec_type}: {kind}")]
    Record {
        /// Offset of the record's type byte.
        offset: u64,
        /// Its type byte.
        rec_type: u8,
        /// What was wrong.
        kind: RecordErrorKind,
    },
    /// End of file (or a NUL type byte) before the `E` record.
    #[error("message rejected: missing end record")]
    MissingEnd {
        /// Offset where the end record was expected.
        offset: u64,
    },
    /// A record type that is not allowed at this place.
    #[error("Unexpected record type '{}' at offset {offset}", char::from(*rec_type))]
    UnexpectedRecord {
        /// The type byte.
        rec_type: u8,
        /// Offset of the record (after any content skip).
        offset: u64,
    },
    /// An `A` record that is not `name=value`.
    #[error("bad attribute record: {reason}: {}", trunc(text, 200))]
    BadAttribute {
        /// Offset of the record.
        offset: u64,
        /// Postfix's description of the problem.
        reason: &'static str,
        /// The payload.
        text: Vec<u8>,
    },
    /// A size record with non-positive offsets or a negative content length.
    #[error("invalid size record: {}", trunc(text, 100))]
    InvalidSizeRecord {
        /// Offset of the record.
        offset: u64,
        /// The payload.
        text: Vec<u8>,
    },
    /// A size record with flag bits qmgr does not know.
    #[error("invalid flags in size record: {}", trunc(text, 100))]
    InvalidSizeFlags {
        /// Offset of the record.
        offset: u64,
        /// The payload.
        text: Vec<u8>,
    },
    /// A size record with two or zero parsable fields.
    #[error("message rejected: weird size record")]
    WeirdSizeRecord {
        /// Offset of the record.
        offset: u64,
        /// The payload.
        text: Vec<u8>,
    },
    /// A `p` record whose value is not a decimal offset.
    #[error("malformed pointer record value: {}", String::from_utf8_lossy(text))]
    MalformedPointer {
        /// Offset of the record.
        offset: u64,
        /// The value after leading white space.
        text: Vec<u8>,
    },
    /// More than 10000 backward `p` jumps: a pointer loop.
    #[error("too many reverse jump records")]
    TooManyReverseJumps {
        /// Offset of the last pointer record.
        offset: u64,
    },
    /// An offset computed from the file does not fit a file offset.
    #[error("offset overflow at offset {offset}")]
    OffsetOverflow {
        /// Offset of the record whose data caused it.
        offset: u64,
    },
    /// Pre-2001 file whose `M` record points before its own end.
    #[error("bad extra offset {}", String::from_utf8_lossy(text))]
    OldStyleBadExtraOffset {
        /// The `M` payload.
        text: Vec<u8>,
    },
    /// Pre-2001 file without data segment or end record.
    #[error("envelope records out of order")]
    OldStyleOutOfOrder,
    /// No `T` record.
    #[error("message rejected: missing arrival time record")]
    MissingArrival,
    /// No `S` record.
    #[error("message rejected: missing sender record")]
    MissingSender,
    /// No valid `C` record.
    #[error("message rejected: missing size record")]
    MissingSize,
}

impl Error {
    /// True when the file content is at fault, so qmgr moves the file to
    /// the `corrupt` queue; false for operating-system failures.
    ///
    /// Postfix treats the two pre-2001 format errors as fatal (the daemon
    /// exits and retries forever); we class them as corrupt instead.
    #[cfg(test)]
    fn is_corrupt(&self) -> bool {
        !matches!(self, Error::Io(_))
    }

    /// The warning lines Postfix 3.7 logs for this error, in order, without
    /// the `warning: ` severity. `path` is the queue file path as Postfix
    /// names it (e.g. `active/154E7990181`).
    pub fn postfix_warnings(&self, queue_id: &str, path: &str) -> Vec<String> {
        let missing_end = format!("{queue_id}: message rejected: missing end record");
        match self {
            Error::Io(_) => Vec::new(),
            Error::Record { rec_type, kind, .. } => {
                let first = match kind {
                    RecordErrorKind::TooManyLengthBits => {
                        format!("{path}: too many length bits, record type {rec_type}")
                    }
                    RecordErrorKind::EofInLength => {
                        format!("{path}: unexpected EOF reading length, record type {rec_type}")
                    }
                    RecordErrorKind::IllegalLength { length } => {
                        format!("{path}: illegal length {length}, record type {rec_type}")
                    }
                    RecordErrorKind::EofInData { length } => format!(
                        "{path}: unexpected EOF in data, record type {rec_type} length {length}"
                    ),
                };
                vec![first, missing_end]
            }
            Error::MissingEnd { .. } => vec![missing_end],
            // Postfix logs this one without the queue id.
            Error::UnexpectedRecord { .. } => vec![self.to_string()],
            Error::MalformedPointer { .. } | Error::TooManyReverseJumps { .. } => {
                vec![format!("{path}: {self}")]
            }
            Error::OldStyleBadExtraOffset { text } => vec![format!(
                "bad extra offset {} file {path}",
                String::from_utf8_lossy(text)
            )],
            Error::OffsetOverflow { .. } => vec![format!("seek file {path}: Invalid argument")],
            _ => vec![format!("{queue_id}: {self}")],
        }
    }
}

/// Something Postfix logs while reading a queue file and then ignores.
#[non_exhaustive]
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ReadWarning {
    /// A second DSN original recipient before a recipient.
    #[error("ignoring out-of-order DSN original recipient address <{}>", trunc(.0, 200))]
    OutOfOrderDsnOrcpt(Vec<u8>),
    /// A DSN original recipient with no recipient after it.
    #[error("ignoring out-of-order DSN original recipient <{}>", trunc(.0, 200))]
    DanglingDsnOrcpt(Vec<u8>),
    /// A second DSN NOTIFY before a recipient.
    #[error("ignoring out-of-order DSN notify flags <{0}>")]
    OutOfOrderDsnNotify(i32),
    /// DSN NOTIFY that is not a valid flag combination.
    #[error("ignoring malformed DSN notify flags <{}>", trunc(.0, 200))]
    MalformedDsnNotify(Vec<u8>),
    /// A second original recipient before a recipient, or one left dangling.
    #[error("ignoring out-of-order original recipient <{}>", trunc(.0, 200))]
    OutOfOrderOrigRcpt(Vec<u8>),
    /// DSN RET that is neither 1 nor 2.
    #[error("ignoring malformed DSN RET flags in queue file record:{}", trunc(.0, 100))]
    MalformedDsnRet(Vec<u8>),
    /// A repeated single-valued attribute; the first one wins.
    #[error(
        "ignoring multiple {name} attribute: {}",
        String::from_utf8_lossy(value)
    )]
    MultipleAttribute {
        /// Attribute name.
        name: &'static str,
        /// The ignored value.
        value: Vec<u8>,
    },
    /// VERP requested for the null sender.
    #[error("ignoring VERP request for null sender")]
    VerpNullSender,
    /// VERP delimiters not allowed by `verp_delimiter_filter`.
    #[error("ignoring bad VERP request: \"{}\"", trunc(.0, 100))]
    BadVerp(Vec<u8>),
    /// Unread-recipient count disagrees with the size record; reset to 0.
    #[error("rcpt count mismatch ({0})")]
    RcptCountMismatch(i64),
}

impl ReadWarning {
    /// The complete line Postfix logs, without the `warning: ` severity.
    pub fn postfix_line(&self, queue_id: &str) -> String {
        format!("{queue_id}: {self}")
    }
}

/// Lossy text of at most `max` bytes, as `%.Ns` prints it.
pub(crate) fn trunc(bytes: &[u8], max: usize) -> String {
    String::from_utf8_lossy(&bytes[..bytes.len().min(max)]).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn texts_match_postfix() {
        let e = Error::UnexpectedRecord {
            rec_type: b'x',
            offset: 42,
        };
        assert_eq!(e.to_string(), "Unexpected record type 'x' at offset 42");
        assert_eq!(
            e.postfix_warnings("Q1", "active/Q1"),
            vec!["Unexpected record type 'x' at offset 42".to_string()]
        );
        let e = Error::MissingSender;
        assert_eq!(
            e.postfix_warnings("Q1", "active/Q1"),
            vec!["Q1: message rejected: missing sender record".to_string()]
        );
        let e = Error::Record {
            offset: 5,
            rec_type: b'N',
            kind: RecordErrorKind::EofInData { length: 9 },
        };
        assert_eq!(
            e.postfix_warnings("Q1", "active/Q1"),
            vec![
                "active/Q1: unexpected EOF in data, record type 78 length 9".to_string(),
                "Q1: message rejected: missing end record".to_string()
            ]
        );
        assert!(e.is_corrupt());
        assert!(!Error::Io(io::Error::other("x")).is_corrupt());
        let w = ReadWarning::RcptCountMismatch(-1);
        assert_eq!(w.postfix_line("Q1"), "Q1: rcpt count mismatch (-1)");
    }

    #[test]
    fn truncation_is_byte_based() {
        let e = Error::InvalidSizeRecord {
            offset: 0,
            text: vec![b'9'; 150],
        };
        assert_eq!(e.to_string().len(), "invalid size record: ".len() + 100);
    }
}
