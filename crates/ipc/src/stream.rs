//! Framed, deadline-bounded attribute stream over a UNIX-domain socket.
//!
//! Job: what Postfix's `mail_connect` + `attr_scan`/`attr_print` give a
//! client: connect to `private/<service>`, read whole attribute lists, check
//! a server's `protocol` announcement, write requests.
//!
//! Invariants: every operation (connect, one `read_list`, one `send`) is
//! bounded by the stream's timeout as a whole, not per system call, or,
//! after [`AttrStream::set_deadline`], by one deadline shared by all the
//! operations of a phase (connect and announcement, request and reply); at most
//! one list is decoded per call and bytes after it stay buffered for the
//! next call.  Errors name the service ("private/smtp") and use Postfix's
//! wording.
//!
//! [`BlockingAttrStream`] does the same on a blocking socket, for a
//! request the caller cannot go on without (trivial-rewrite's answers).
//!
//! How it fails: after any error the stream's state is unspecified (a list
//! may be half consumed); callers drop the stream, as Postfix closes it.
//! Limits: lists are capped by [`crate::attr::MAX_LIST_BYTES`].

mod blocking;

use std::io;
use std::path::Path;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::UnixStream;
use tokio::time::{timeout_at, Instant};

use crate::attr::{AttrList, ListDecoder};
use crate::error::{AttrError, IpcError};

pub(crate) use blocking::BlockingAttrStream;

/// Attribute name of a server's protocol announcement.
const ATTR_PROTOCOL: &str = "protocol";

/// Read buffer growth step; also the compaction threshold.
const READ_CHUNK: usize = 8192;
/// The first read buffer of a stream. Most streams live for one
/// announcement and one short reply (a delivery agent's), so the buffer
/// starts small enough for the allocator's per-thread cache; a long list
/// grows it by [`READ_CHUNK`].
const FIRST_READ: usize = 512;
/// Less room than this left in the buffer before a read: grow it first.
const MIN_READ: usize = 256;

/// The short service name Postfix logs for a socket path: its last two
/// components ("private/smtp"), or the whole path when shorter.
pub(crate) fn service_name(path: &Path) -> String {
    use std::os::unix::ffi::OsStrExt;
    let bytes = path.as_os_str().as_bytes();
    let bytes = bytes.strip_suffix(b"/").unwrap_or(bytes);
    // Called per agent connection: find the cut without building paths.
    let start = bytes
        .iter()
        .rposition(|&b| b == b'/')
        .and_then(|last| bytes[..last].iter().rposition(|&b| b == b'/'))
        .map_or(0, |i| i + 1);
    String::from_utf8_lossy(&bytes[start..]).into_owned()
}

/// Connects a non-blocking UNIX stream socket to `path` at once. On Linux
/// such a connect completes or fails immediately (a full listen queue is
/// `EAGAIN`, a failure for Postfix's clients too), so there is no need to
/// wait for writability and ask for `SO_ERROR` as a general connect does:
/// that costs an extra turn of the event loop per agent connection.
/// `Ok(None)`: the connect is in progress after all; the caller waits.
fn connect_now(path: &Path) -> io::Result<Option<UnixStream>> {
    use nix::errno::Errno;
    use nix::sys::socket::{connect, socket, AddressFamily, SockFlag, SockType, UnixAddr};
    use std::os::fd::AsRawFd;
    let fd = socket(
        AddressFamily::Unix,
        SockType::Stream,
        SockFlag::SOCK_NONBLOCK | SockFlag::SOCK_CLOEXEC,
        None,
    )?;
    let addr = UnixAddr::new(path)?;
    match connect(fd.as_raw_fd(), &addr) {
        Ok(()) => {}
        Err(Errno::EINPROGRESS) => return Ok(None),
        Err(e) => return Err(e.into()),
    }
    UnixStream::from_std(std::os::unix::net::UnixStream::from(fd)).map(Some)
}

/// Bytes read from a stream and not yet taken as lists: what both
/// streams (this async one and [`blocking::BlockingAttrStream`]) keep
/// between reads.
#[derive(Debug, Default)]
struct ListBuffer {
    buf: Vec<u8>,
    /// Index in `buf` of the first unconsumed byte.
    start: usize,
    /// Stream offset of `buf[start]`, for error messages.
    offset: usize,
    decoder: ListDecoder,
}

impl ListBuffer {
    /// Takes the next complete list out of the buffer, if one is there.
    fn next_list(&mut self) -> Result<Option<AttrList>, AttrError> {
        let Some((list, used)) = self.decoder.feed(&self.buf[self.start..], self.offset)? else {
            return Ok(None);
        };
        self.start += used;
        self.offset += used;
        self.compact();
        Ok(Some(list))
    }

    /// The buffer to read into, with room for at least [`MIN_READ`] bytes
    /// after its contents.
    fn room(&mut self) -> &mut Vec<u8> {
        if self.buf.capacity() - self.buf.len() < MIN_READ {
            let grow = if self.buf.capacity() == 0 {
                FIRST_READ
            } else {
                READ_CHUNK
            };
            self.buf.reserve(grow);
        }
        &mut self.buf
    }

    /// Drops consumed bytes once they dominate the buffer.
    fn compact(&mut self) {
        if self.start == self.buf.len() {
            self.buf.clear();
            self.start = 0;
        } else if self.start >= READ_CHUNK {
            self.buf.drain(..self.start);
            self.start = 0;
        }
    }

    /// The error for a read that timed out, naming where in a list it was.
    fn timeout(&self, service: &str) -> IpcError {
        let (context, _) = self.decoder.eof_context(&self.buf[self.start..]);
        let doing = match context {
            crate::error::ReadContext::Name => "reading input attribute name",
            crate::error::ReadContext::Value => "reading input attribute value",
        };
        IpcError::Timeout {
            service: service.to_owned(),
            doing,
        }
    }

    /// The error for the end of input before a list was complete.
    fn eof(&self, service: &str) -> IpcError {
        let rest = &self.buf[self.start..];
        let (context, partial) = self.decoder.eof_context(rest);
        let list_start = rest.is_empty() && self.decoder.at_list_start();
        let service = service.to_owned();
        if partial {
            IpcError::UnexpectedEof { service, context }
        } else {
            IpcError::PrematureDisconnect {
                service,
                context,
                list_start,
            }
        }
    }
}

/// Checks a server's `protocol\0<name>\0\0` announcement, as Postfix
/// clients do before sending a request.
fn check_announcement(list: &AttrList, protocol: &str, service: &str) -> Result<(), IpcError> {
    let attr_error = |error| IpcError::Attr {
        service: service.to_owned(),
        error,
    };
    let mut r = list.strict();
    match r.expect_streq(ATTR_PROTOCOL, protocol) {
        Ok(()) => {}
        Err(AttrError::ValueMismatch { got, expected, .. }) => {
            return Err(IpcError::Announcement {
                service: service.to_owned(),
                expected,
                got,
            })
        }
        Err(e) => return Err(attr_error(e)),
    }
    r.finish().map_err(attr_error)
}

/// A connected client stream speaking the attribute protocol.
#[derive(Debug)]
pub(crate) struct AttrStream {
    stream: UnixStream,
    service: String,
    timeout: Duration,
    /// When set, bounds every operation instead of `timeout`.
    deadline: Option<Instant>,
    lists: ListBuffer,
}

impl AttrStream {
    /// Connects to the socket at `path` within `timeout`.
    pub(crate) async fn connect(path: &Path, timeout: Duration) -> Result<AttrStream, IpcError> {
        Self::connect_until(path, Instant::now() + timeout, timeout).await
    }

    /// Connects to the socket at `path` by `deadline`; later operations
    /// are bounded by `timeout` each (see [`set_deadline`](Self::set_deadline)).
    pub(crate) async fn connect_until(
        path: &Path,
        deadline: Instant,
        timeout: Duration,
    ) -> Result<AttrStream, IpcError> {
        let service = service_name(path);
        match connect_now(path) {
            Ok(Some(stream)) => return Ok(Self::from_stream_named(stream, service, timeout)),
            Ok(None) => {}
            Err(source) => return Err(IpcError::Connect { service, source }),
        }
        match timeout_at(deadline, UnixStream::connect(path)).await {
            Err(_) => Err(IpcError::Timeout {
                service,
                doing: "connecting",
            }),
            Ok(Err(source)) => Err(IpcError::Connect { service, source }),
            Ok(Ok(stream)) => Ok(Self::from_stream_named(stream, service, timeout)),
        }
    }

    /// Wraps an already connected stream under a given service name.
    pub(crate) fn from_stream_named(
        stream: UnixStream,
        service: String,
        timeout: Duration,
    ) -> AttrStream {
        AttrStream {
            stream,
            service,
            timeout,
            deadline: None,
            lists: ListBuffer::default(),
        }
    }

    /// The service name used in errors ("private/smtp").
    #[cfg(test)]
    pub(crate) fn service(&self) -> &str {
        &self.service
    }

    /// Changes the per-operation deadline (qmgr waits much longer for a
    /// delivery reply than for other I/O).
    #[cfg(test)]
    pub(crate) fn set_timeout(&mut self, timeout: Duration) {
        self.timeout = timeout;
    }

    /// Bounds every following operation by `deadline` as a whole phase
    /// (`None`: each operation by the timeout again). A phase of several
    /// reads and writes then reads the clock once rather than per
    /// operation, and cannot take longer than the deadline in total.
    pub(crate) fn set_deadline(&mut self, deadline: Option<Instant>) {
        self.deadline = deadline;
    }

    /// When the next operation must be done.
    fn op_deadline(&self) -> Instant {
        self.deadline
            .unwrap_or_else(|| Instant::now() + self.timeout)
    }

    /// Wraps a decoding error with this stream's service name.
    pub(crate) fn attr_error(&self, error: AttrError) -> IpcError {
        IpcError::Attr {
            service: self.service.clone(),
            error,
        }
    }

    /// Reads one complete attribute list.
    pub(crate) async fn read_list(&mut self) -> Result<AttrList, IpcError> {
        let deadline = self.op_deadline();
        loop {
            match self.lists.next_list() {
                Err(e) => return Err(self.attr_error(e)),
                Ok(Some(list)) => return Ok(list),
                Ok(None) => {}
            }
            let room = self.lists.room();
            let n = match timeout_at(deadline, self.stream.read_buf(room)).await {
                Err(_) => return Err(self.lists.timeout(&self.service)),
                Ok(Err(source)) => {
                    return Err(IpcError::Read {
                        service: self.service.clone(),
                        source,
                    })
                }
                Ok(Ok(n)) => n,
            };
            if n == 0 {
                return Err(self.lists.eof(&self.service));
            }
        }
    }

    /// Reads a server's announcement and checks the protocol name.
    pub(crate) async fn expect_announcement(&mut self, protocol: &str) -> Result<(), IpcError> {
        let list = self.read_list().await?;
        check_announcement(&list, protocol, &self.service)
    }

    /// Writes `bytes` completely.
    pub(crate) async fn send(&mut self, bytes: &[u8]) -> Result<(), IpcError> {
        let deadline = self.op_deadline();
        let write = async {
            self.stream.write_all(bytes).await?;
            self.stream.flush().await
        };
        match timeout_at(deadline, write).await {
            Err(_) => Err(IpcError::Timeout {
                service: self.service.clone(),
                doing: "writing",
            }),
            Ok(Err(source)) => Err(IpcError::Write {
                service: self.service.clone(),
                source,
            }),
            Ok(Ok(())) => Ok(()),
        }
    }

    /// Sends a request and reads one reply list.
    pub(crate) async fn request(&mut self, bytes: &[u8]) -> Result<AttrList, IpcError> {
        self.send(bytes).await?;
        self.read_list().await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn service_names() {
        assert_eq!(service_name(Path::new("private/smtp")), "private/smtp");
        assert_eq!(
            service_name(Path::new("/q/dir/public/flush")),
            "public/flush"
        );
        assert_eq!(service_name(Path::new("sock")), "sock");
    }
}
