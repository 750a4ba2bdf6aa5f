//! Trigger requests on `public/qmgr`.
//!
//! Job: read what a client wrote on an accepted trigger connection and
//! turn the letters into one request.
//!
//! Invariants: like Postfix's trigger server, one read of at most 1024
//! bytes after waiting at most 10 s for data; every letter of that read is
//! OR-ed in, unknown bytes (including the client's NUL) are ignored; no
//! reply is ever sent.
//! How it fails: `io::Error` (kind `TimedOut` when no data came); the caller
//! just closes the connection.

use std::io;
use std::time::Duration;

use tokio::io::AsyncReadExt;
use tokio::net::UnixStream;

/// Most bytes taken from one trigger connection.
pub const TRIGGER_BUF_SIZE: usize = 1024;
/// How long to wait for a client's data.
pub const TRIGGER_READ_WAIT: Duration = Duration::from_secs(10);

/// `W`: generic wakeup.
pub const TRIGGER_REQ_WAKEUP: u8 = b'W';
/// `I`: scan the incoming queue.
pub const QMGR_REQ_SCAN_INCOMING: u8 = b'I';
/// `D`: scan the deferred queue.
pub const QMGR_REQ_SCAN_DEFERRED: u8 = b'D';
/// `A`: ignore file time stamps.
pub const QMGR_REQ_SCAN_ALL: u8 = b'A';
/// `F`: flush dead transports and destinations.
pub const QMGR_REQ_FLUSH_DEAD: u8 = b'F';

/// The letters of one trigger, OR-ed.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct TriggerRequest {
    /// `W` seen.
    pub wakeup: bool,
    /// `I` seen.
    pub scan_incoming: bool,
    /// `D` seen.
    pub scan_deferred: bool,
    /// `A` seen.
    pub scan_all: bool,
    /// `F` seen.
    pub flush_dead: bool,
}

/// Interprets the bytes of one read.
pub fn parse(bytes: &[u8]) -> TriggerRequest {
    let mut req = TriggerRequest::default();
    for &b in bytes {
        match b {
            TRIGGER_REQ_WAKEUP => req.wakeup = true,
            QMGR_REQ_SCAN_INCOMING => req.scan_incoming = true,
            QMGR_REQ_SCAN_DEFERRED => req.scan_deferred = true,
            QMGR_REQ_SCAN_ALL => req.scan_all = true,
            QMGR_REQ_FLUSH_DEAD => req.flush_dead = true,
            _ => {}
        }
    }
    req
}

/// One read of at most 1024 bytes, waiting at most 10 s.
pub async fn read_trigger(stream: &mut UnixStream) -> io::Result<Vec<u8>> {
    read_trigger_within(stream, TRIGGER_READ_WAIT).await
}

/// [`read_trigger`] with a chosen wait.
pub async fn read_trigger_within(stream: &mut UnixStream, wait: Duration) -> io::Result<Vec<u8>> {
    let mut buf = vec![0u8; TRIGGER_BUF_SIZE];
    match tokio::time::timeout(wait, stream.read(&mut buf)).await {
        Err(_) => Err(io::Error::new(
            io::ErrorKind::TimedOut,
            "no trigger data within the wait time",
        )),
        Ok(Err(e)) => Err(e),
        Ok(Ok(n)) => {
            buf.truncate(n);
            Ok(buf)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn letters_are_ored_and_others_ignored() {
        assert_eq!(
            parse(b"FADI\0"),
            TriggerRequest {
                wakeup: false,
                scan_incoming: true,
                scan_deferred: true,
                scan_all: true,
                flush_dead: true
            }
        );
        assert_eq!(
            parse(b"W\0xyzW"),
            TriggerRequest {
                wakeup: true,
                ..Default::default()
            }
        );
        assert_eq!(parse(b""), TriggerRequest::default());
    }

    #[tokio::test]
    async fn one_bounded_read_with_deadline() {
        let (mut a, mut b) = UnixStream::pair().unwrap();
        tokio::io::AsyncWriteExt::write_all(&mut b, &[b'W'; 3000])
            .await
            .unwrap();
        let got = read_trigger(&mut a).await.unwrap();
        assert_eq!(got.len(), TRIGGER_BUF_SIZE);
        let (mut c, _d) = UnixStream::pair().unwrap();
        let e = read_trigger_within(&mut c, Duration::from_millis(20))
            .await
            .unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::TimedOut);
    }
}
