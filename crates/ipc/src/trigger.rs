//! Trigger requests on `public/qmgr`.
//!
//! Job: read what a client wrote on an accepted trigger connection; the
//! caller interprets the letters (`I`, `D`, `A`, `F`, `W`).
//!
//! Invariants: like Postfix's trigger server, one read of at most 1024
//! bytes after waiting at most 10 s for data; the bytes are returned as
//! read, the client's NUL included; no reply is ever sent.
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
