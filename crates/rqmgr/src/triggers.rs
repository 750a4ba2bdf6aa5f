//! Triggers on `public/qmgr`, as Postfix's trigger server takes them.
//!
//! master hands us the service's endpoint on fd 6: a listening socket
//! (`unix` in master.cf) or a FIFO (`fifo`, qmgr's type up to Postfix 2.11).
//! From a socket, each accepted client is read by a task of its own
//! ([`spawn_reader`]), so a slow or silent client never stalls deliveries;
//! its letters come back on the trigger channel, which is separate from the
//! agents' channel because they are a different kind of event. From a FIFO
//! the letters are read as they arrive, at most 1024 bytes a read.
//!
//! A read that fails or times out counts as no letters: the loop still
//! tells master we are done, as Postfix's trigger server does. An endpoint
//! that keeps failing (no descriptors left, EMFILE) must not become a busy
//! loop: after a failure the loop stops taking triggers for a while that
//! doubles with each failure in a row ([`Backoff`]).

use std::io;
use std::time::Duration;

use rqmgr_ipc::master::TriggerEndpoint;
use rqmgr_ipc::trigger::TRIGGER_BUF_SIZE;
use tokio::net::UnixStream;
use tokio::sync::mpsc::UnboundedSender;

/// What the endpoint produced.
#[derive(Debug)]
pub(crate) enum Arrival {
    /// A client connected to the socket.
    Connection(io::Result<UnixStream>),
    /// Letters read from the FIFO.
    Letters(io::Result<Vec<u8>>),
}

/// Waits for the next client or letters.
pub(crate) async fn next(endpoint: &TriggerEndpoint) -> Arrival {
    match endpoint {
        TriggerEndpoint::Socket(listener) => {
            Arrival::Connection(listener.accept().await.map(|(stream, _)| stream))
        }
        TriggerEndpoint::Fifo(fifo) => loop {
            if let Err(e) = fifo.readable().await {
                return Arrival::Letters(Err(e));
            }
            let mut buf = [0u8; TRIGGER_BUF_SIZE];
            match fifo.try_read(&mut buf) {
                // End of file: no writer holds the FIFO, which master never
                // lets happen; taken as a failure so it cannot spin.
                Ok(0) => return Arrival::Letters(Err(io::ErrorKind::UnexpectedEof.into())),
                Ok(n) => return Arrival::Letters(Ok(buf[..n].to_vec())),
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => continue,
                Err(e) => return Arrival::Letters(Err(e)),
            }
        },
    }
}

/// Reads one trigger from `stream` in a task and sends its letters to `tx`.
pub(crate) fn spawn_reader(mut stream: UnixStream, tx: UnboundedSender<Vec<u8>>) {
    tokio::task::spawn_local(async move {
        let letters = rqmgr_ipc::trigger::read_trigger(&mut stream)
            .await
            .unwrap_or_default();
        let _ = tx.send(letters);
    });
}

/// The pause after failures of the trigger endpoint: 10 ms after the
/// first, doubling with each failure in a row up to 5 s; a success ends it.
#[derive(Debug, Default)]
pub(crate) struct Backoff {
    failures: u32,
}

impl Backoff {
    const FIRST: Duration = Duration::from_millis(10);
    const MAX: Duration = Duration::from_secs(5);

    /// A failure: how long to stop taking triggers.
    pub(crate) fn failed(&mut self) -> Duration {
        let pause = Self::FIRST
            .saturating_mul(1u32 << self.failures.min(20))
            .min(Self::MAX);
        self.failures = self.failures.saturating_add(1);
        pause
    }

    /// A success: the next failure starts over.
    pub(crate) fn succeeded(&mut self) {
        self.failures = 0;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pauses_double_up_to_a_limit_and_start_over_after_a_success() {
        let mut b = Backoff::default();
        let ms = |d: Duration| d.as_millis();
        let first: Vec<u128> = (0..4).map(|_| ms(b.failed())).collect();
        assert_eq!(first, [10, 20, 40, 80]);
        for _ in 0..100 {
            b.failed();
        }
        assert_eq!(b.failed(), Duration::from_secs(5));
        b.succeeded();
        assert_eq!(ms(b.failed()), 10);
    }
}
