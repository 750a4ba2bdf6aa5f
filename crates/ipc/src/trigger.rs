//! Trigger requests on `public/qmgr`.
//!
//! Job: read what a client wrote on an accepted trigger connection
//! ([`read_trigger`]), and say what its letters ask of the incoming and
//! deferred scans ([`TriggerRequest::from_letters`]); the daemon turns that
//! into its scan flags.
//!
//! Invariants: like Postfix's trigger server, one read of at most 1024
//! bytes after waiting at most 10 s for data; the bytes are returned as
//! read, the client's NUL included; no reply is ever sent. Interpreting
//! letters is total: any bytes are a request, unknown ones ask nothing,
//! and neither order nor repetition matters.
//! How it fails: `io::Error` (kind `TimedOut` when no data came); the caller
//! just closes the connection.

use std::io;
use std::time::Duration;

use tokio::io::AsyncReadExt;
use tokio::net::UnixStream;

/// Most bytes taken from one trigger connection.
pub const TRIGGER_BUF_SIZE: usize = 1024;
/// How long to wait for a client's data.
const TRIGGER_READ_WAIT: Duration = Duration::from_secs(10);

/// What one trigger asks of one queue's scan.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ScanRequest {
    /// Start a scan (`I` or `W` for incoming, `D` for deferred).
    pub start: bool,
    /// Ignore the files' time stamps (`A`, Postfix's `QMGR_SCAN_ALL`),
    /// also in a scan already running.
    pub scan_all: bool,
    /// Revive dead transports and destinations and override
    /// `defer_transports` (`F`, Postfix's `QMGR_REQ_FLUSH_DEAD`).
    pub flush_dead: bool,
}

/// What the letters of one trigger read ask of the two scans.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct TriggerRequest {
    /// The incoming queue's scan.
    pub incoming: ScanRequest,
    /// The deferred queue's scan.
    pub deferred: ScanRequest,
}

impl TriggerRequest {
    /// Interprets the letters of one read, as `qmgr_trigger_event()` does:
    /// `I` and `W` (cleanup's wake-up) start the incoming scan, `D` the
    /// deferred one, `A` and `F` apply to both. Every other byte, the NUL
    /// clients end with included, asks nothing.
    pub fn from_letters(letters: &[u8]) -> TriggerRequest {
        let mut req = TriggerRequest::default();
        for b in letters {
            match b {
                b'W' | b'I' => req.incoming.start = true,
                b'D' => req.deferred.start = true,
                b'F' => {
                    req.incoming.flush_dead = true;
                    req.deferred.flush_dead = true;
                }
                b'A' => {
                    req.incoming.scan_all = true;
                    req.deferred.scan_all = true;
                }
                _ => {}
            }
        }
        req
    }
}

/// One read of at most 1024 bytes, waiting at most 10 s.
pub async fn read_trigger(stream: &mut UnixStream) -> io::Result<Vec<u8>> {
    read_trigger_within(stream, TRIGGER_READ_WAIT).await
}

/// [`read_trigger`] with a chosen wait.
async fn read_trigger_within(stream: &mut UnixStream, wait: Duration) -> io::Result<Vec<u8>> {
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

    fn scan(start: bool, scan_all: bool, flush_dead: bool) -> ScanRequest {
        ScanRequest {
            start,
            scan_all,
            flush_dead,
        }
    }

    #[test]
    fn trigger_letters_combine() {
        let none = ScanRequest::default();
        let req = TriggerRequest::from_letters;
        assert_eq!(
            req(b"W\0"),
            TriggerRequest {
                incoming: scan(true, false, false),
                deferred: none
            }
        );
        let every = scan(true, true, true);
        assert_eq!(
            req(b"FADI"),
            TriggerRequest {
                incoming: every,
                deferred: every
            }
        );
        assert_eq!(
            req(b"DDDxyz"),
            TriggerRequest {
                incoming: none,
                deferred: scan(true, false, false)
            }
        );
        let all = scan(false, true, false);
        assert_eq!(
            req(b"A"),
            TriggerRequest {
                incoming: all,
                deferred: all
            }
        );
        assert_eq!(req(b""), TriggerRequest::default());
        assert_eq!(req(b"iwdaf\0\xff"), TriggerRequest::default());
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
