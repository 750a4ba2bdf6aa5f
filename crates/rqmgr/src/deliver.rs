//! Delivery agent connections (`qmgr_transport_alloc()`, `qmgr_deliver()`).
//!
//! A connection goes through two phases, each a future that the event
//! loop polls itself ([`Agents`]), with no task, channel or wake-up of
//! its own: stock qmgr likewise handles each agent's socket in its one
//! event loop.
//! 1. Connect to `private/<transport>` and wait for the agent's
//!    announcement ([`AgentEvent::Ready`] hands the loop the open
//!    connection). Only then does the scheduler pick an entry for it,
//!    because an agent may take long to come free (master queues the
//!    connection until a process is idle) and by then the best entry to
//!    send may be another. The loop drops the connection unused if the
//!    scheduler closes it.
//! 2. Send the encoded request, read the reply, close the socket (the
//!    agent's signal that the queue manager is done with it) and report
//!    [`AgentEvent::Replied`].
//!
//! Each phase has one `daemon_timeout` deadline for all its steps.
//!
//! A failure to connect or to send marks the transport unavailable; a
//! reply that cannot be read counts as a crash (retry, no feedback).

use std::ffi::OsString;
use std::os::unix::ffi::{OsStrExt, OsStringExt};
use std::path::PathBuf;
use std::time::Duration;

use futures_util::future::{FutureExt, LocalBoxFuture};
use futures_util::stream::{FuturesUnordered, StreamExt};
use rqmgr_ipc::deliver::{AgentConnection, DeliveryReply};
use rqmgr_ipc::error::IpcError;
use rqmgr_sched::{ConnId, Dsn, Outcome};
use tokio::time::Instant;

use crate::logging::os_error;

/// What a connection's phase ends with.
#[derive(Debug)]
pub(crate) enum AgentEvent {
    /// The agent announced itself and waits for a request.
    Ready(ConnId, AgentConnection),
    /// The agent could not be reached; the warning names the socket by
    /// its bytes.
    Unreachable(ConnId, Vec<u8>),
    /// The request could not be sent, and why.
    NotSent(ConnId, IpcError),
    /// The reply to the request, or why there is none.
    Replied(ConnId, Result<DeliveryReply, IpcError>),
}

/// Request buffers kept for the next requests: as many as deliveries are
/// commonly in flight at once.
const SPARE_BUFFERS: usize = 16;
/// A buffer larger than this (a request of very many recipients) is freed
/// rather than kept.
const SPARE_BUFFER_MAX: usize = 64 * 1024;

/// The phases in progress, polled by the event loop.
pub(crate) struct Agents {
    /// Each phase ends with its event and, after a request was sent, the
    /// request's buffer.
    phases: FuturesUnordered<LocalBoxFuture<'static, (AgentEvent, Option<Vec<u8>>)>>,
    /// `daemon_timeout`: the limit of each phase.
    timeout: Duration,
    /// Buffers of requests sent, for the next ones (a request is often
    /// too large for the allocator's per-thread cache, and there is one
    /// per delivery).
    spare: Vec<Vec<u8>>,
}

impl Agents {
    pub(crate) fn new(timeout: Duration) -> Agents {
        Agents {
            phases: FuturesUnordered::new(),
            timeout,
            spare: Vec::new(),
        }
    }

    /// A buffer to encode the next request into.
    pub(crate) fn request_buffer(&mut self) -> Vec<u8> {
        self.spare.pop().unwrap_or_default()
    }

    /// Takes a phase's end: keeps its buffer, returns its event.
    fn ended(&mut self, (event, buf): (AgentEvent, Option<Vec<u8>>)) -> AgentEvent {
        if let Some(buf) = buf {
            if self.spare.len() < SPARE_BUFFERS && buf.capacity() <= SPARE_BUFFER_MAX {
                self.spare.push(buf);
            }
        }
        event
    }

    /// Starts a connection to a transport's delivery agent (phase 1).
    pub(crate) fn connect(&mut self, conn: ConnId, transport: &[u8]) {
        // The socket is named by the transport's bytes, whatever they are.
        let path = PathBuf::from(OsString::from_vec([b"private/", transport].concat()));
        let timeout = self.timeout;
        self.phases.push(
            async move {
                let deadline = Instant::now() + timeout;
                let shown = path.as_os_str().as_bytes();
                let unreachable = |parts: &[&[u8]]| AgentEvent::Unreachable(conn, parts.concat());
                let mut agent = match AgentConnection::connect_until(&path, deadline, timeout).await
                {
                    Ok(agent) => agent,
                    Err(e) => {
                        // Postfix words it "connect to transport private/X: %m".
                        let why = match &e {
                            IpcError::Connect { source, .. } => os_error(source),
                            other => other.to_string(),
                        };
                        return unreachable(&[
                            b"connect to transport ",
                            shown,
                            b": ",
                            why.as_bytes(),
                        ]);
                    }
                };
                agent.set_deadline(Some(deadline));
                match agent.wait_ready().await {
                    Ok(()) => AgentEvent::Ready(conn, agent),
                    Err(e) => unreachable(&[shown, b": ", e.to_string().as_bytes()]),
                }
            }
            .map(|event| (event, None))
            .boxed_local(),
        );
    }

    /// Sends a request on a ready connection and reads the reply (phase 2).
    pub(crate) fn deliver(&mut self, conn: ConnId, mut agent: AgentConnection, request: Vec<u8>) {
        let timeout = self.timeout;
        self.phases.push(
            async move {
                agent.set_deadline(Some(Instant::now() + timeout));
                if let Err(e) = agent.send_encoded(&request).await {
                    return (AgentEvent::NotSent(conn, e), Some(request));
                }
                let reply = agent.read_reply().await;
                // Closing is the agent's cue that we are done with it.
                drop(agent);
                (AgentEvent::Replied(conn, reply), Some(request))
            }
            .boxed_local(),
        );
    }

    /// The next phase to end; never, while none is in progress.
    pub(crate) async fn next(&mut self) -> AgentEvent {
        match self.phases.next().await {
            Some(end) => self.ended(end),
            None => std::future::pending().await,
        }
    }

    /// A phase that has ended already, without waiting for one.
    pub(crate) fn next_now(&mut self) -> Option<AgentEvent> {
        let end = self.phases.next().now_or_never().flatten()?;
        Some(self.ended(end))
    }
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
    fn request_buffers_are_kept_for_the_next_requests() {
        let mut agents = Agents::new(Duration::from_secs(1));
        let unreachable = |n| AgentEvent::Unreachable(ConnId(n), Vec::new());
        agents.ended((unreachable(1), None));
        assert_eq!(agents.request_buffer().capacity(), 0);
        let event = agents.ended((unreachable(2), Some(Vec::with_capacity(1500))));
        assert!(matches!(event, AgentEvent::Unreachable(ConnId(2), _)));
        assert_eq!(agents.request_buffer().capacity(), 1500);
        // A huge one is not kept, and only so many are.
        let huge = Vec::with_capacity(SPARE_BUFFER_MAX + 1);
        agents.ended((unreachable(3), Some(huge)));
        assert_eq!(agents.request_buffer().capacity(), 0);
        for n in 0..SPARE_BUFFERS + 4 {
            agents.ended((unreachable(n as u64), Some(Vec::with_capacity(100))));
        }
        assert_eq!(agents.spare.len(), SPARE_BUFFERS);
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
