//! Error types of the crate.
//!
//! Job: give every failure a typed value so the daemon can decide what to do
//! (retry, throttle a transport, exit) and log it.  This crate never logs.
//!
//! Invariants: the `Display` texts follow the wording Postfix uses for the
//! same condition (so existing log watchers keep working); values quoted from
//! the wire are shown lossily as UTF-8 and cut at 100 bytes like Postfix's
//! `%.100s`.  [`AttrError`] knows nothing about the peer; [`IpcError`] adds
//! the peer name ("private/smtp") and renders the Postfix sentence.
//!
//! Limits: the enums are `#[non_exhaustive]`; match with a wildcard arm.

use std::fmt::Write as _;
use std::io;

/// Renders wire bytes for a message: lossy UTF-8, cut at `max` bytes.
pub(crate) fn show(bytes: &[u8], max: usize) -> String {
    let cut = &bytes[..bytes.len().min(max)];
    String::from_utf8_lossy(cut).into_owned()
}

/// What the decoder was reading when input ran out or went bad; the words
/// are the ones Postfix uses in its warnings.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReadContext {
    /// Between attributes: the next thing is a name (or the list end).
    Name,
    /// After a name: the next thing is its value.
    Value,
}

impl ReadContext {
    /// The Postfix wording, e.g. "input attribute name".
    fn as_str(self) -> &'static str {
        match self {
            ReadContext::Name => "input attribute name",
            ReadContext::Value => "input attribute value",
        }
    }
}

/// A malformed or unexpected attribute list.  Offsets count bytes from the
/// start of the buffer (or stream) that was being decoded.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum AttrError {
    /// An attribute name longer than `attr::MAX_NAME_LEN`.
    #[error("attribute name at offset {offset} exceeds {limit} bytes")]
    NameTooLong {
        /// Where the name starts.
        offset: usize,
        /// The limit that was exceeded.
        limit: usize,
    },
    /// An attribute value longer than `attr::MAX_VALUE_LEN`.
    #[error("attribute value at offset {offset} exceeds {limit} bytes")]
    ValueTooLong {
        /// Where the value starts.
        offset: usize,
        /// The limit that was exceeded.
        limit: usize,
    },
    /// More attributes in one list than `attr::MAX_LIST_ATTRS`.
    #[error("attribute count exceeds limit {limit} at offset {offset}")]
    TooManyAttributes {
        /// Where the attribute over the limit starts.
        offset: usize,
        /// The limit that was exceeded.
        limit: usize,
    },
    /// A list bigger than `attr::MAX_LIST_BYTES`.
    #[error("attribute list at offset {offset} exceeds {limit} bytes")]
    ListTooLong {
        /// Where the list starts.
        offset: usize,
        /// The limit that was exceeded.
        limit: usize,
    },
    /// Strict order violated: another name arrived where `expecting` was due.
    #[error("unexpected attribute {} (expecting: {expecting})", show(.got, 100))]
    Unexpected {
        /// The name that arrived.
        got: Vec<u8>,
        /// The name that was due, or "(list terminator)".
        expecting: &'static str,
    },
    /// The list ended before a required attribute.
    #[error("missing attribute {name}")]
    Missing {
        /// The attribute that was due.
        name: &'static str,
    },
    /// An int/long value that is not plain unsigned decimal in range.
    #[error("malformed numerical data while reading input attribute value: {}", show(.value, 100))]
    MalformedNumber {
        /// The attribute name.
        name: &'static str,
        /// The offending value.
        value: Vec<u8>,
    },
    /// A data value that is not valid padded base64.
    #[error("malformed base64 data while reading input attribute value: {}", show(.value, 100))]
    MalformedBase64 {
        /// The attribute name.
        name: &'static str,
        /// The offending value.
        value: Vec<u8>,
    },
    /// A handshake value that differs from the required one.
    #[error("unexpected {name} {} (expected: {expected})", show(.got, 100))]
    ValueMismatch {
        /// The attribute name.
        name: &'static str,
        /// The value that arrived.
        got: Vec<u8>,
        /// The value that was required.
        expected: String,
    },
    /// A data value with the wrong decoded length (e.g. the 88-byte stats).
    #[error("attribute {name} has length {got} (expected {expected})")]
    BadLength {
        /// The attribute name.
        name: &'static str,
        /// Decoded length that arrived.
        got: usize,
        /// Required decoded length.
        expected: usize,
    },
}

impl AttrError {
    /// The Postfix warning sentence for this error seen on `peer`
    /// (e.g. "private/smtp socket").
    pub(crate) fn describe(&self, peer: &str) -> String {
        let mut s = String::new();
        // Writing into a String cannot fail; the results are ignored.
        let _ = match self {
            AttrError::Unexpected { got, expecting } => write!(
                s,
                "unexpected attribute {} from {peer} (expecting: {expecting})",
                show(got, 100)
            ),
            AttrError::Missing { name } => {
                write!(s, "missing attribute {name} in input from {peer}")
            }
            AttrError::MalformedNumber { value, .. } => write!(
                s,
                "malformed numerical data from {peer} while reading input attribute value: {}",
                show(value, 100)
            ),
            AttrError::MalformedBase64 { value, .. } => write!(
                s,
                "malformed base64 data from {peer} while reading input attribute value: {}",
                show(value, 100)
            ),
            AttrError::ValueMismatch {
                name,
                got,
                expected,
            } => write!(
                s,
                "unexpected {name} {} from {peer} (expected: {expected})",
                show(got, 100)
            ),
            AttrError::TooManyAttributes { limit, .. } => write!(
                s,
                "attribute count exceeds limit {limit} in input from {peer}"
            ),
            other => write!(s, "{other} in input from {peer}"),
        };
        s
    }
}

/// A failed exchange with a Postfix service.  `service` is the socket name
/// relative to the queue directory, e.g. "private/smtp".
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum IpcError {
    /// connect(2) failed.
    #[error("connect to {service}: {source}")]
    Connect {
        /// Socket name.
        service: String,
        /// The OS error.
        #[source]
        source: io::Error,
    },
    /// read(2) failed.
    #[error("read {service} socket: {source}")]
    Read {
        /// Socket name.
        service: String,
        /// The OS error.
        #[source]
        source: io::Error,
    },
    /// write(2) failed (EPIPE when the peer went away).
    #[error("write {service} socket: {source}")]
    Write {
        /// Socket name.
        service: String,
        /// The OS error.
        #[source]
        source: io::Error,
    },
    /// The I/O deadline passed.
    #[error("timeout on {service} socket while {doing}")]
    Timeout {
        /// Socket name.
        service: String,
        /// What was under way, e.g. "reading input attribute name".
        doing: &'static str,
    },
    /// EOF at a string boundary before the list ended.
    #[error("premature end-of-input on {service} socket while reading {}", .context.as_str())]
    PrematureDisconnect {
        /// Socket name.
        service: String,
        /// What was due.
        context: ReadContext,
        /// Nothing of the list had arrived: Postfix's `attr_scan()` then
        /// fails without a warning of its own (see [`IpcError::scan_is_silent`]).
        list_start: bool,
    },
    /// EOF in the middle of a name or value.
    #[error("unexpected end-of-input from {service} socket while reading {}", .context.as_str())]
    UnexpectedEof {
        /// Socket name.
        service: String,
        /// What was being read.
        context: ReadContext,
    },
    /// The server's `protocol` announcement names another protocol.
    #[error("unexpected protocol {} from {service} socket (expected: {expected})", show(.got, 100))]
    Announcement {
        /// Socket name.
        service: String,
        /// The protocol this client speaks.
        expected: String,
        /// What the server announced.
        got: Vec<u8>,
    },
    /// Malformed or unexpected attributes.
    #[error("{}", .error.describe(&format!("{} socket", .service)))]
    Attr {
        /// Socket name.
        service: String,
        /// The decoding error.
        #[source]
        error: AttrError,
    },
    /// trivial-rewrite answered with an empty transport.
    #[error("resolve_clnt: null transport result for: <{}>", show(.address, 1000))]
    NullTransport {
        /// The address that was resolved.
        address: Vec<u8>,
    },
    /// trivial-rewrite answered with an empty recipient for a non-empty address.
    #[error("resolve_clnt: null recipient result for: <{}>", show(.address, 1000))]
    NullRecipient {
        /// The address that was resolved.
        address: Vec<u8>,
    },
}

impl IpcError {
    /// True when Postfix's `attr_scan()` would fail without logging
    /// anything itself: the peer closed before sending a byte of the list.
    /// Callers that add their own sentence (qmgr's "malformed response")
    /// then log only that.
    pub fn scan_is_silent(&self) -> bool {
        matches!(
            self,
            IpcError::PrematureDisconnect {
                list_start: true,
                ..
            }
        )
    }

    /// True when Postfix would stay silent about this failure on a first
    /// attempt: its clients warn on a first failure only when errno is set
    /// to something other than EPIPE or ENOENT (EOF and malformed input
    /// leave errno at 0).  Later attempts always warn.
    pub fn quiet_on_first_attempt(&self) -> bool {
        let quiet_errno = |e: &io::Error| {
            matches!(
                e.raw_os_error(),
                None | Some(0) | Some(libc::EPIPE) | Some(libc::ENOENT)
            )
        };
        match self {
            IpcError::Connect { source, .. }
            | IpcError::Read { source, .. }
            | IpcError::Write { source, .. } => quiet_errno(source),
            IpcError::Timeout { .. } => false,
            _ => true,
        }
    }
}

/// A bad master(8) command line or environment.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ArgsError {
    /// A letter outside `cdDi:lm:n:o:s:St:uvVz`.
    #[error("invalid option: {0}")]
    InvalidOption(char),
    /// An option that takes a value came last.
    #[error("option requires an argument: {0}")]
    MissingArgument(char),
    /// `-o` without a usable `name=value`.
    #[error("invalid \"-o {arg}\" option value: {reason}")]
    InvalidNameValue {
        /// The `-o` argument as given.
        arg: String,
        /// Postfix's reason text.
        reason: &'static str,
    },
    /// `-s` not a positive number.
    #[error("invalid socket_count: {0}")]
    InvalidSocketCount(String),
    /// Non-option words after the options.
    #[error("unexpected command-line argument: {0}")]
    UnexpectedArgument(String),
    /// Neither `-t` nor `-S`.
    #[error("no transport type specified")]
    NoTransport,
    /// `GENERATION` not made of digits.
    #[error("bad generation: {0}")]
    BadGeneration(String),
}
