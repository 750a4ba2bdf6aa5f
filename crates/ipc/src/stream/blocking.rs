//! The attribute stream for a request whose answer the caller waits for
//! and cannot go on without: a blocking socket, as Postfix's own clients
//! of trivial-rewrite use.
//!
//! Job: the same connect, announcement check, request and reply as
//! [`AttrStream`](super::AttrStream), with the thread asleep in `read(2)`
//! until the server answers. In an event loop, an awaited reply would wake
//! the loop for every other socket that became ready meanwhile (a delivery
//! agent's reply), only to find the awaited reply not there yet; asleep in
//! `read`, only the reply wakes it, and whatever else happened meanwhile
//! is taken together at the loop's next wait. It also spares the readiness
//! wait's own system call per reply.
//!
//! Invariants: connecting waits at most the timeout (`SO_SNDTIMEO`, which
//! bounds a UNIX-domain connect to a full listen queue); one `read_list`
//! takes at most the timeout as a whole (`SO_RCVTIMEO`, shortened for a
//! list that arrives in pieces); a write waits at most the timeout per
//! system call (a request is a few hundred bytes, one call). Errors are
//! those of the async stream, with the same wording.
//!
//! How it fails: as the async stream; after any error the caller drops
//! the stream.

use std::io::{self, Read, Write};
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::time::{Duration, Instant};

use nix::sys::socket::{setsockopt, sockopt, UnixAddr};
use nix::sys::time::{TimeVal, TimeValLike};

use super::{check_announcement, service_name, ListBuffer};
use crate::attr::AttrList;
use crate::error::IpcError;

/// A connected, blocking client stream speaking the attribute protocol.
#[derive(Debug)]
pub(crate) struct BlockingAttrStream {
    stream: UnixStream,
    service: String,
    timeout: Duration,
    /// The receive timeout set on the socket now.
    recv_timeout: Duration,
    lists: ListBuffer,
}

/// A socket timeout: zero would mean "none" to the kernel, and one
/// beyond a 32-bit `time_t` cannot be set (nor waited for).
fn timeval(d: Duration) -> TimeVal {
    let d = d.clamp(Duration::from_millis(1), Duration::from_secs(100_000_000));
    TimeVal::microseconds(i64::try_from(d.as_micros()).unwrap_or(i64::MAX))
}

/// True for the error a socket timeout gives.
fn timed_out(e: &io::Error) -> bool {
    matches!(
        e.kind(),
        io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
    )
}

impl BlockingAttrStream {
    /// Connects to the socket at `path`; every operation then waits at
    /// most `timeout`.
    pub(crate) fn connect(path: &Path, timeout: Duration) -> Result<Self, IpcError> {
        use nix::sys::socket::{connect, socket, AddressFamily, SockFlag, SockType};
        use std::os::fd::AsRawFd;
        let service = service_name(path);
        let failed = |source: io::Error| IpcError::Connect {
            service: service.clone(),
            source,
        };
        let fd = socket(
            AddressFamily::Unix,
            SockType::Stream,
            SockFlag::SOCK_CLOEXEC,
            None,
        )
        .map_err(|e| failed(e.into()))?;
        setsockopt(&fd, sockopt::SendTimeout, &timeval(timeout)).map_err(|e| failed(e.into()))?;
        setsockopt(&fd, sockopt::ReceiveTimeout, &timeval(timeout))
            .map_err(|e| failed(e.into()))?;
        let addr = UnixAddr::new(path).map_err(|e| failed(e.into()))?;
        match connect(fd.as_raw_fd(), &addr) {
            Ok(()) => {}
            Err(nix::errno::Errno::EAGAIN) => {
                return Err(IpcError::Timeout {
                    service,
                    doing: "connecting",
                })
            }
            Err(e) => return Err(failed(e.into())),
        }
        Ok(BlockingAttrStream {
            stream: UnixStream::from(fd),
            service,
            timeout,
            recv_timeout: timeout,
            lists: ListBuffer::default(),
        })
    }

    /// Sets the socket's receive timeout, unless it is set so already.
    fn set_recv_timeout(&mut self, d: Duration) -> Result<(), IpcError> {
        if d != self.recv_timeout {
            setsockopt(&self.stream, sockopt::ReceiveTimeout, &timeval(d)).map_err(|e| {
                IpcError::Read {
                    service: self.service.clone(),
                    source: e.into(),
                }
            })?;
            self.recv_timeout = d;
        }
        Ok(())
    }

    /// Reads one complete attribute list.
    pub(crate) fn read_list(&mut self) -> Result<AttrList, IpcError> {
        let started = Instant::now();
        self.set_recv_timeout(self.timeout)?;
        loop {
            match self.lists.next_list() {
                Err(error) => {
                    return Err(IpcError::Attr {
                        service: self.service.clone(),
                        error,
                    })
                }
                Ok(Some(list)) => return Ok(list),
                Ok(None) => {}
            }
            // A list in pieces: what is left of the timeout bounds the
            // next read, so the whole list takes at most the timeout.
            if !self.lists.buf[self.lists.start..].is_empty() {
                let left = self.timeout.saturating_sub(started.elapsed());
                if left.is_zero() {
                    return Err(self.lists.timeout(&self.service));
                }
                self.set_recv_timeout(left)?;
            }
            let n = match self.read_some() {
                Ok(n) => n,
                Err(e) if timed_out(&e) => return Err(self.lists.timeout(&self.service)),
                Err(source) => {
                    return Err(IpcError::Read {
                        service: self.service.clone(),
                        source,
                    })
                }
            };
            if n == 0 {
                return Err(self.lists.eof(&self.service));
            }
        }
    }

    /// One `read(2)` into the buffer's spare room; returns the bytes read.
    fn read_some(&mut self) -> io::Result<usize> {
        let buf = self.lists.room();
        let filled = buf.len();
        // std's `read` wants initialised bytes; the room is at most a few
        // kilobytes, zeroed once per read.
        buf.resize(buf.capacity(), 0);
        let result = loop {
            match self.stream.read(&mut buf[filled..]) {
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                other => break other,
            }
        };
        let n = *result.as_ref().unwrap_or(&0);
        buf.truncate(filled + n);
        result
    }

    /// Reads a server's announcement and checks the protocol name.
    pub(crate) fn expect_announcement(&mut self, protocol: &str) -> Result<(), IpcError> {
        let list = self.read_list()?;
        check_announcement(&list, protocol, &self.service)
    }

    /// Writes `bytes` completely.
    pub(crate) fn send(&mut self, bytes: &[u8]) -> Result<(), IpcError> {
        self.stream.write_all(bytes).map_err(|source| {
            if timed_out(&source) {
                IpcError::Timeout {
                    service: self.service.clone(),
                    doing: "writing",
                }
            } else {
                IpcError::Write {
                    service: self.service.clone(),
                    source,
                }
            }
        })
    }

    /// Sends a request and reads one reply list.
    pub(crate) fn request(&mut self, bytes: &[u8]) -> Result<AttrList, IpcError> {
        self.send(bytes)?;
        self.read_list()
    }
}
