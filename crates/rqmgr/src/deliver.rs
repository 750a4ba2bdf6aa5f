//! Delivery agent connections (`qmgr_transport_alloc()`, `qmgr_deliver()`).
//!
//! Each connection runs as its own task: connect to `private/<transport>`,
//! wait for the agent's announcement, and report back. Only then does the
//! scheduler pick an entry for it, because an agent may take long to come
//! free (master queues the connection until a process is idle) and by
//! then the best entry to send may be another. The request and reply run
//! in a second task; the socket is closed after the reply, which is the
//! agent's signal that the queue manager is done with it.
//!
//! A failure to connect or to send marks the transport unavailable; a
//! reply that cannot be read counts as a crash (retry, no feedback).

use std::path::PathBuf;
use std::time::Duration;

use rqmgr_ipc::deliver::{AgentConnection, DeliveryReply, DeliveryRequest};
use rqmgr_ipc::error::IpcError;
use rqmgr_sched::{ConnId, Dsn, Outcome};
use tokio::sync::mpsc::UnboundedSender;

/// What a connection task reports to the event loop.
#[derive(Debug)]
pub enum AgentEvent {
    /// The agent announced itself and waits for a request.
    Ready(ConnId, AgentConnection),
    /// The agent could not be reached or the request not sent.
    Unavailable(ConnId, String),
    /// The reply to the request, or why there is none.
    Replied(ConnId, Result<DeliveryReply, IpcError>),
    /// A trigger connection delivered these bytes.
    Trigger(Vec<u8>),
}

/// Starts connecting to a transport's delivery agent.
pub fn spawn_connect(
    tx: UnboundedSender<AgentEvent>,
    conn: ConnId,
    transport: &str,
    timeout: Duration,
) {
    let path = PathBuf::from(format!("private/{transport}"));
    tokio::task::spawn_local(async move {
        let event = match AgentConnection::connect(&path, timeout).await {
            Ok(mut agent) => match agent.wait_ready().await {
                Ok(()) => AgentEvent::Ready(conn, agent),
                Err(e) => AgentEvent::Unavailable(conn, format!("{}: {}", path.display(), e)),
            },
            Err(e) => {
                // Postfix words it "connect to transport private/X: %m".
                let why = match &e {
                    IpcError::Connect { source, .. } => crate::activate::os_error(source),
                    other => other.to_string(),
                };
                AgentEvent::Unavailable(
                    conn,
                    format!("connect to transport {}: {}", path.display(), why),
                )
            }
        };
        let _ = tx.send(event);
    });
}

/// Sends a request on a ready connection and waits for the reply.
pub fn spawn_deliver(
    tx: UnboundedSender<AgentEvent>,
    conn: ConnId,
    mut agent: AgentConnection,
    request: DeliveryRequest,
    transport: String,
) {
    tokio::task::spawn_local(async move {
        if let Err(e) = agent.send_request(&request).await {
            let _ = tx.send(AgentEvent::Unavailable(
                conn,
                format!("write to process ({transport}): {e}"),
            ));
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

/// What a reply means for scheduling (`qmgr_deliver_update()`).
pub fn outcome(reply: &DeliveryReply) -> Outcome {
    match &reply.dsn {
        Some(dsn) if reply.status != 0 => {
            let status = String::from_utf8_lossy(&dsn.status);
            let status = if dsn_valid(&status) {
                status.into_owned()
            } else {
                "4.0.0".to_owned()
            };
            let reason = if dsn.reason.is_empty() {
                "unknown error".to_owned()
            } else {
                String::from_utf8_lossy(&dsn.reason).into_owned()
            };
            Outcome::Deferred {
                site: Some(Dsn::new(status, format!("{SUSPENDED}{reason}"))),
            }
        }
        _ if reply.status != 0 => Outcome::Deferred { site: None },
        _ => Outcome::Final,
    }
}

/// An RFC 3463 status: class 2, 4 or 5, then two numbers of 1 to 3 digits.
pub fn dsn_valid(s: &str) -> bool {
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
    use rqmgr_ipc::deliver::DsnFailure;

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
            dsn: Some(DsnFailure::simple(b"4.4.1", b"connect to x: refused")),
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
        let bad = DeliveryReply {
            status: -1,
            dsn: Some(DsnFailure::simple(b"x", b"")),
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
