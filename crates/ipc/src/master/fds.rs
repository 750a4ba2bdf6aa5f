//! Descriptors master(8) hands a daemon: flow-control pipe (3, 4), status
//! channel (5), listen sockets (6 and up).
//!
//! Job: adopt those descriptors safely and speak master's status protocol:
//! a 12-byte native `{int pid; unsigned generation; int avail}` record per
//! state change, and "fd 5 readable" meaning master went away.
//!
//! Invariants: each descriptor number is adopted at most once per process
//! (a second attempt is an error, never a double close); adopted
//! descriptors are made close-on-exec, and non-blocking where tokio or
//! the token pipe needs it.  The only `unsafe` in the crate lives here:
//! taking ownership of an inherited descriptor number and one FIONREAD.
//!
//! How it fails: plain `io::Error`s; the daemon decides (Postfix exits when
//! the AVAIL status cannot be written).
//! Limits: the status channel must be a UNIX stream socket (Linux master
//! uses a socketpair); only `unix` listeners are adopted, not FIFOs.

use std::io;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, FromRawFd, OwnedFd, RawFd};
use std::sync::atomic::{AtomicU64, Ordering};

use nix::fcntl::{fcntl, FcntlArg, FdFlag, OFlag};

/// Flow-control pipe, read end.
const MASTER_FLOW_READ: RawFd = 3;
/// Flow-control pipe, write end.
const MASTER_FLOW_WRITE: RawFd = 4;
/// Status channel to master.
const MASTER_STATUS_FD: RawFd = 5;
/// First listen socket.
pub const MASTER_LISTEN_FD: RawFd = 6;

/// Status value: busy with a request.
const MASTER_STAT_TAKEN: i32 = 0;
/// Status value: idle, ready for the next request.
const MASTER_STAT_AVAIL: i32 = 1;

/// Bit n set = descriptor n already adopted.
static ADOPTED: AtomicU64 = AtomicU64::new(0);

/// Takes ownership of inherited descriptor `fd` (once) and marks it
/// close-on-exec.
#[allow(unsafe_code)]
fn adopt_fd(fd: RawFd) -> io::Result<OwnedFd> {
    let bit = u32::try_from(fd)
        .ok()
        .filter(|&n| n < 64)
        .map(|n| 1u64 << n)
        .ok_or_else(|| io::Error::from_raw_os_error(libc::EBADF))?;
    if ADOPTED.fetch_or(bit, Ordering::SeqCst) & bit != 0 {
        return Err(io::Error::new(
            io::ErrorKind::AlreadyExists,
            format!("descriptor {fd} already adopted"),
        ));
    }
    // SAFETY: F_GETFD only inspects the descriptor table; on a closed
    // number it fails with EBADF and touches nothing.
    let open = unsafe { libc::fcntl(fd, libc::F_GETFD) } >= 0;
    if !open {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: the descriptor is open (checked above), was inherited from
    // master for this process, and ADOPTED guarantees nobody else in this
    // process owns it, so exclusive ownership is sound.
    let owned = unsafe { OwnedFd::from_raw_fd(fd) };
    fcntl(&owned, FcntlArg::F_SETFD(FdFlag::FD_CLOEXEC))?;
    Ok(owned)
}

/// Sets O_NONBLOCK on a descriptor.
fn set_nonblocking(fd: BorrowedFd<'_>) -> io::Result<()> {
    let flags = OFlag::from_bits_retain(fcntl(fd, FcntlArg::F_GETFL)?);
    fcntl(fd, FcntlArg::F_SETFL(flags | OFlag::O_NONBLOCK))?;
    Ok(())
}

/// The 12-byte status record.
fn status_record(pid: i32, generation: u32, avail: i32) -> [u8; 12] {
    let mut rec = [0u8; 12];
    rec[0..4].copy_from_slice(&pid.to_ne_bytes());
    rec[4..8].copy_from_slice(&generation.to_ne_bytes());
    rec[8..12].copy_from_slice(&avail.to_ne_bytes());
    rec
}

/// The status channel to master (fd 5).
#[derive(Debug)]
pub struct StatusChannel {
    stream: tokio::net::UnixStream,
    pid: i32,
    generation: u32,
}

impl StatusChannel {
    /// Adopts fd 5; needs a running tokio runtime.
    pub fn adopt(generation: u32) -> io::Result<StatusChannel> {
        let fd = adopt_fd(MASTER_STATUS_FD)?;
        Self::from_std(std::os::unix::net::UnixStream::from(fd), generation)
    }

    /// Wraps a connected stream (tests).
    fn from_std(
        stream: std::os::unix::net::UnixStream,
        generation: u32,
    ) -> io::Result<StatusChannel> {
        stream.set_nonblocking(true)?;
        Ok(StatusChannel {
            stream: tokio::net::UnixStream::from_std(stream)?,
            pid: std::process::id() as i32,
            generation,
        })
    }

    /// Sends AVAIL (`true`) or TAKEN (`false`). Postfix writes these on a
    /// blocking descriptor: when master falls behind (a flood of trigger
    /// connections sends two records per connection), the write waits for
    /// room rather than failing, and failure means master is gone. Our end
    /// is non-blocking for the reactor, so a full buffer is waited out
    /// here the same way; only a short write or another error is an error.
    pub fn send(&self, avail: bool) -> io::Result<()> {
        let status = if avail {
            MASTER_STAT_AVAIL
        } else {
            MASTER_STAT_TAKEN
        };
        let rec = status_record(self.pid, self.generation, status);
        // Written directly rather than with tokio's try_write, which
        // refuses until the reactor has reported write readiness once.
        let n = loop {
            match nix::unistd::write(&self.stream, &rec) {
                Err(nix::errno::Errno::EINTR) => continue,
                Err(nix::errno::Errno::EAGAIN) => self.wait_writable()?,
                other => break other?,
            }
        };
        if n != rec.len() {
            return Err(io::Error::new(
                io::ErrorKind::WriteZero,
                "short write on master status channel",
            ));
        }
        Ok(())
    }

    /// Blocks until the status socket has room (or an error/hang-up, which
    /// the next write then reports).
    #[allow(unsafe_code)]
    fn wait_writable(&self) -> io::Result<()> {
        let mut pfd = libc::pollfd {
            fd: self.stream.as_raw_fd(),
            events: libc::POLLOUT,
            revents: 0,
        };
        // SAFETY: one pollfd on the stack, count 1; the descriptor is owned
        // by `self` and stays open for the call.
        let rc = unsafe { libc::poll(&mut pfd, 1, -1) };
        if rc < 0 {
            let e = io::Error::last_os_error();
            if e.kind() != io::ErrorKind::Interrupted {
                return Err(e);
            }
        }
        Ok(())
    }

    /// Resolves when fd 5 becomes readable: master closed its end (EOF),
    /// errored, or sent anything at all — all mean "exit now".
    pub async fn closed(&self) {
        let mut buf = [0u8; 64];
        loop {
            if self.stream.readable().await.is_err() {
                return;
            }
            match self.stream.try_read(&mut buf) {
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => continue,
                _ => return,
            }
        }
    }
}

/// The in-flow token pipe (fds 3 and 4), both ends non-blocking.
#[derive(Debug)]
pub struct InFlowPipe {
    read: OwnedFd,
    write: OwnedFd,
}

/// Largest chunk moved per system call.
const FLOW_CHUNK: usize = 1024;

impl InFlowPipe {
    /// Adopts fds 3 and 4.
    pub fn adopt() -> io::Result<InFlowPipe> {
        let read = adopt_fd(MASTER_FLOW_READ)?;
        let write = adopt_fd(MASTER_FLOW_WRITE)?;
        Self::from_fds(read, write)
    }

    /// Wraps a pipe (tests); makes both ends non-blocking.
    fn from_fds(read: OwnedFd, write: OwnedFd) -> io::Result<InFlowPipe> {
        set_nonblocking(read.as_fd())?;
        set_nonblocking(write.as_fd())?;
        Ok(InFlowPipe { read, write })
    }

    /// Tokens in the pipe (FIONREAD on the read end).
    #[allow(unsafe_code)]
    pub fn pending(&self) -> io::Result<usize> {
        let mut count: libc::c_int = 0;
        // SAFETY: FIONREAD stores one c_int through the pointer, which
        // refers to a live local; the descriptor is owned by `self`.
        let rc = unsafe { libc::ioctl(self.read.as_raw_fd(), libc::FIONREAD, &mut count) };
        if rc < 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(usize::try_from(count).unwrap_or(0))
    }

    /// Writes up to `n` tokens (NUL bytes); a full pipe just stops early.
    /// Returns how many went in.
    pub fn put(&self, n: usize) -> io::Result<usize> {
        let zeros = [0u8; FLOW_CHUNK];
        let mut done = 0;
        while done < n {
            let want = (n - done).min(FLOW_CHUNK);
            match nix::unistd::write(&self.write, &zeros[..want]) {
                Ok(0) => break,
                Ok(k) => done += k,
                Err(nix::errno::Errno::EAGAIN) => break,
                Err(nix::errno::Errno::EINTR) => continue,
                Err(e) => return Err(e.into()),
            }
        }
        Ok(done)
    }

    /// Reads and discards up to `n` tokens; an empty pipe just stops early.
    /// Returns how many came out.
    pub fn take(&self, n: usize) -> io::Result<usize> {
        let mut buf = [0u8; FLOW_CHUNK];
        let mut done = 0;
        while done < n {
            let want = (n - done).min(FLOW_CHUNK);
            match nix::unistd::read(&self.read, &mut buf[..want]) {
                Ok(0) => break,
                Ok(k) => done += k,
                Err(nix::errno::Errno::EAGAIN) => break,
                Err(nix::errno::Errno::EINTR) => continue,
                Err(e) => return Err(e.into()),
            }
        }
        Ok(done)
    }
}

/// Marks the descriptors `fds` close-on-exec where they are open, so that
/// a program the daemon runs (postconf) does not inherit master's
/// descriptors (3 to 6, and further listeners) and, for one, keep master's
/// status pipe open after the daemon is gone. Numbers that are not open
/// are skipped.
#[allow(unsafe_code)]
pub fn close_on_exec(fds: impl IntoIterator<Item = RawFd>) {
    for fd in fds {
        // SAFETY: F_GETFD and F_SETFD only read and set the descriptor's
        // close-on-exec flag; on a number that is not open they fail with
        // EBADF and change nothing.
        unsafe {
            let flags = libc::fcntl(fd, libc::F_GETFD);
            if flags >= 0 {
                libc::fcntl(fd, libc::F_SETFD, flags | libc::FD_CLOEXEC);
            }
        }
    }
}

/// The trigger endpoint master hands a service on fd 6: a listening UNIX
/// socket for a `unix` service, a FIFO for a `fifo` service (qmgr's type up
/// to Postfix 2.11, still valid).
#[derive(Debug)]
pub enum TriggerEndpoint {
    /// Clients connect, write their letters and disconnect.
    Socket(tokio::net::UnixListener),
    /// Clients write their letters into the FIFO; master keeps it open for
    /// writing, so reading never sees end of file.
    Fifo(tokio::net::unix::pipe::Receiver),
}

/// Adopts `fd` (6, or 6+i with `-s`) as the endpoint its file type says;
/// needs a running tokio runtime.
pub fn adopt_trigger_endpoint(fd: RawFd) -> io::Result<TriggerEndpoint> {
    use std::os::unix::fs::FileTypeExt;
    let file = std::fs::File::from(adopt_fd(fd)?);
    if file.metadata()?.file_type().is_fifo() {
        let fifo = tokio::net::unix::pipe::Receiver::from_owned_fd(file.into())?;
        return Ok(TriggerEndpoint::Fifo(fifo));
    }
    let std_listener = std::os::unix::net::UnixListener::from(OwnedFd::from(file));
    std_listener.set_nonblocking(true)?;
    tokio::net::UnixListener::from_std(std_listener).map(TriggerEndpoint::Socket)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn status_record_matches_observed_bytes() {
        // strace showed pid 0x2318, generation 5, TAKEN.
        assert_eq!(
            status_record(0x2318, 5, MASTER_STAT_TAKEN),
            *b"\x18\x23\0\0\x05\0\0\0\0\0\0\0"
        );
    }

    #[test]
    fn inherited_descriptors_are_closed_on_exec() {
        let (r, w) = nix::unistd::pipe().unwrap();
        let cloexec = |fd: &OwnedFd| {
            FdFlag::from_bits_retain(fcntl(fd, FcntlArg::F_GETFD).unwrap())
                .contains(FdFlag::FD_CLOEXEC)
        };
        fcntl(&r, FcntlArg::F_SETFD(FdFlag::empty())).unwrap();
        assert!(!cloexec(&r));
        close_on_exec([r.as_raw_fd(), w.as_raw_fd(), 100_000]);
        assert!(cloexec(&r) && cloexec(&w));
    }

    #[test]
    fn token_pipe_put_pending_take() {
        let (r, w) = nix::unistd::pipe().unwrap();
        let pipe = InFlowPipe::from_fds(r, w).unwrap();
        assert_eq!(pipe.pending().unwrap(), 0);
        assert_eq!(pipe.put(100).unwrap(), 100);
        assert_eq!(pipe.pending().unwrap(), 100);
        assert_eq!(pipe.take(30).unwrap(), 30);
        assert_eq!(pipe.pending().unwrap(), 70);
        assert_eq!(pipe.take(1000).unwrap(), 70);
        // A full pipe is not an error.
        let put = pipe.put(10 << 20).unwrap();
        assert!(put > 0 && put < 10 << 20);
        assert_eq!(pipe.pending().unwrap(), put);
    }

    #[test]
    fn adopting_twice_or_closed_fails() {
        // Descriptor 63 is almost certainly closed in the test process.
        assert!(adopt_fd(63).is_err());
        assert!(adopt_fd(63).is_err());
        assert!(adopt_fd(-1).is_err());
    }

    #[tokio::test]
    async fn status_channel_sends_and_sees_close() {
        let (ours, theirs) = std::os::unix::net::UnixStream::pair().unwrap();
        let ch = StatusChannel::from_std(ours, 0o13).unwrap();
        ch.send(false).unwrap();
        ch.send(true).unwrap();
        let mut got = [0u8; 24];
        std::io::Read::read_exact(&mut &theirs, &mut got).unwrap();
        let pid = std::process::id() as i32;
        assert_eq!(&got[..12], &status_record(pid, 0o13, 0));
        assert_eq!(&got[12..], &status_record(pid, 0o13, 1));
        drop(theirs);
        tokio::time::timeout(std::time::Duration::from_secs(5), ch.closed())
            .await
            .unwrap();
    }
}
