//! Delivery agent connections (`qmgr_transport_alloc()`, `qmgr_deliver()`).
//!
//! Each connection runs as one task for its whole life: connect to
//! `private/<transport>`, wait for the agent's announcement, and report
//! back. Only then does the scheduler pick an entry for it, because an
//! agent may take long to come free (master queues the connection until a
//! process is idle) and by then the best entry to send may be another. The
//! task then waits for the encoded request (or for the event loop to drop
//! the [`RequestSender`], which closes the connection unused), sends it,
//! reads the reply and closes the socket, which is the agent's signal
//! that the queue manager is done with it. One task rather than one per
//! phase saves a spawn and the hand-over of the socket per delivery.
//!
//! Connecting and the announcement share one `daemon_timeout` deadline,
//! and so do sending the request and reading the reply.
//!
//! A failure to connect or to send marks the transport unavailable; a
//! reply that cannot be read counts as a crash (retry, no feedback).

use std::ffi::OsString;
use std::os::unix::ffi::{OsStrExt, OsStringExt};
use std::path::PathBuf;
use std::time::Duration;

use rqmgr_ipc::deliver::{AgentConnection, DeliveryReply};
use rqmgr_ipc::error::IpcError;
use rqmgr_sched::{ConnId, Dsn, Outcome};
use tokio::sync::mpsc::UnboundedSender;
use tokio::sync::oneshot;
use tokio::time::Instant;

use crate::logging::os_error;

/// Hands a ready connection its encoded delivery request; dropping it
/// closes the connection without a delivery.
pub(crate) type RequestSender = oneshot::Sender<Vec<u8>>;

/// What a connection task reports to the event loop.
#[derive(Debug)]
pub(crate) enum AgentEvent {
    /// The agent announced itself and waits for a request.
    Ready(ConnId, RequestSender),
    /// The agent could not be reached or the request not sent; the
    /// warning names the transport by its bytes.
    Unavailable(ConnId, Vec<u8>),
    /// The reply to the request, or why there is none.
    Replied(ConnId, Result<DeliveryReply, IpcError>),
}

/// Starts a connection to a transport's delivery agent, which then
/// carries out at most one delivery.
pub(crate) fn spawn_connection(
    tx: UnboundedSender<AgentEvent>,
    conn: ConnId,
    transport: &[u8],
    timeout: Duration,
) {
    // The socket is named by the transport's bytes, whatever they are.
    let path = PathBuf::from(OsString::from_vec([b"private/", transport].concat()));
    let transport = transport.to_vec();
    tokio::task::spawn_local(async move {
        let shown = path.as_os_str().as_bytes();
        let warning = |parts: &[&[u8]]| AgentEvent::Unavailable(conn, parts.concat());
        let deadline = Instant::now() + timeout;
        let mut agent = match AgentConnection::connect_until(&path, deadline, timeout).await {
            Ok(agent) => agent,
            Err(e) => {
                // Postfix words it "connect to transport private/X: %m".
                let why = match &e {
                    IpcError::Connect { source, .. } => os_error(source),
                    other => other.to_string(),
                };
                let _ = tx.send(warning(&[
                    b"connect to transport ",
                    shown,
                    b": ",
                    why.as_bytes(),
                ]));
                return;
            }
        };
        agent.set_deadline(Some(deadline));
        if let Err(e) = agent.wait_ready().await {
            let _ = tx.send(warning(&[shown, b": ", e.to_string().as_bytes()]));
            return;
        }
        let (request_tx, request_rx) = oneshot::channel();
        if tx.send(AgentEvent::Ready(conn, request_tx)).is_err() {
            return;
        }
        // An error means the scheduler closed the connection unused.
        let Ok(request) = request_rx.await else {
            return;
        };
        agent.set_deadline(Some(Instant::now() + timeout));
        if let Err(e) = agent.send_encoded(&request).await {
            let _ = tx.send(warning(&[
                b"write to process (",
                &transport,
                b"): ",
                e.to_string().as_bytes(),
            ]));
            return;
        }
        let reply = agent.read_reply().await;
        // Closing is the agent's cue that we are done with it.
        drop(agent);
        let _ = tx.send(AgentEvent::Replied(conn, reply));
    });
}

/// The prefix qmgr puts on a destination's problem.
const SUSPENDED: &str = "delivery temporarily suspended: ";

/// What a reply means for scheduling (`qmgr_deliver_update()`). The
/// reason is kept byte for byte: it becomes the `retry` next hop and the
/// deferral reason of the recipients behind it.
pub(crate) fn outcome(reply: &DeliveryReply) -> Outcome {
    match &reply.dsn {
        Some(dsn) if reply.status != 0 => {
            let status = match std::str::from_utf8(&dsn.status) {
                Ok(s) if dsn_valid(s) => s.to_owned(),
                _ => "4.0.0".to_owned(),
            };
            let reason: &[u8] = if dsn.reason.is_empty() {
                b"unknown error"
            } else {
                &dsn.reason
            };
            Outcome::Deferred {
                site: Some(Dsn::new(status, [SUSPENDED.as_bytes(), reason].concat())),
            }
        }
        _ if reply.status != 0 => Outcome::Deferred { site: None },
        _ => Outcome::Final,
    }
}

/// An RFC 3463 status: class 2, 4 or 5, then two numbers of 1 to 3 digits.
fn dsn_valid(s: &str) -> bool {
    let mut parts = s.split('.');
    let (Some(class), Some(subject), Some(detail), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return false;
    };
    let digits = |p: &str| (1..=3).contains(&p.len()) && p.bytes().all(|b| b.is_ascii_digit());
    matches!(class, "2" | "4" | "5") && digits(subject) && digits(detail)
}

#[cfg(test)]
mod tests {
    use super::*;
    use rqmgr_ipc::deliver::DsnAttrs;

    #[test]
    fn reply_meanings() {
        let ok = DeliveryReply::default();
        assert_eq!(outcome(&ok), Outcome::Final);
        let deferred = DeliveryReply {
            status: -1,
            ..DeliveryReply::default()
        };
        assert_eq!(outcome(&deferred), Outcome::Deferred { site: None });
        let site = DeliveryReply {
            status: -1,
            dsn: Some(DsnAttrs::simple(b"4.4.1", b"connect to x: refused")),
            ..DeliveryReply::default()
        };
        assert_eq!(
            outcome(&site),
            Outcome::Deferred {
                site: Some(Dsn::new(
                    "4.4.1",
                    "delivery temporarily suspended: connect to x: refused"
                ))
            }
        );
        // An 8-bit reason (the agent quotes the next hop) stays as it
        // was: it becomes the retry next hop and the deferral reason.
        let latin1 = DeliveryReply {
            status: -1,
            dsn: Some(DsnAttrs::simple(
                b"4.4.1",
                b"connect to b\xe4d.example: refused",
            )),
            ..DeliveryReply::default()
        };
        assert_eq!(
            outcome(&latin1),
            Outcome::Deferred {
                site: Some(Dsn::new(
                    "4.4.1",
                    &b"delivery temporarily suspended: connect to b\xe4d.example: refused"[..]
                ))
            }
        );
        let bad = DeliveryReply {
            status: -1,
            dsn: Some(DsnAttrs::simple(b"x", b"")),
            ..DeliveryReply::default()
        };
        assert_eq!(
            outcome(&bad),
            Outcome::Deferred {
                site: Some(Dsn::new(
                    "4.0.0",
                    "delivery temporarily suspended: unknown error"
                ))
            }
        );
    }

    #[test]
    fn dsn_syntax() {
        assert!(dsn_valid("4.4.1"));
        assert!(dsn_valid("5.123.12"));
        assert!(!dsn_valid("3.0.0"));
        assert!(!dsn_valid("4.0"));
        assert!(!dsn_valid("4.0.1234"));
    }
}
