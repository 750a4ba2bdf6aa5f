//! The admin socket: a read-only view of the queue manager for operators
//! (`rqmgrctl`), and Prometheus metrics.
//!
//! HTTP/1.1 (hyper) on a UNIX socket in the queue directory's `private/`
//! (`rqmgr_admin_socket`, default `private/rqmgr`; empty turns it off),
//! and, when `rqmgr_metrics_listen` names an address, `/metrics` on TCP.
//! Endpoints: `/status`, `/transports`, `/destinations` (`?transport=`,
//! `&nexthop=`, `&top=`), `/jobs` (`?transport=`, `&limit=`), `/metrics`
//! and `/overrides` (GET); the changes `/suspend`, `/resume`, `/flush`,
//! `/unthrottle`, `/set` (each `?transport=` and optionally `&nexthop=`;
//! `/suspend` also `&reason=` and `&for=SECONDS`, `/set` one of
//! `&concurrency=`, `&rate_delay=SECONDS`, `&recipient_limit=` and
//! `&for=`) and `/clear` (`?id=`) (POST), carried out by operator.rs and
//! logged with the caller's uid.
//!
//! Invariants:
//! - The event loop owns all state. A request becomes an [`AdminQuery`]
//!   sent to the loop, which answers from the scheduler's bounded views
//!   (views.rs) between two events; nothing here touches queue files or
//!   agents, and a query never waits for mail.
//! - Only root and mail_owner get answers on the socket: the socket file
//!   is mode 0600 and owned by mail_owner, and the peer's credentials are
//!   checked as well. The TCP listener serves `/metrics` only.
//! - A client cannot hold resources: at most [`MAX_CLIENTS`] connections
//!   at once, headers within [`HEADER_WAIT`], the whole exchange within
//!   [`EXCHANGE_WAIT`], one request per connection.
//! - Nothing here can stop mail: a socket that cannot be made is a
//!   warning, not a fatal error.

mod views;

pub(crate) use views::{answer, DestinationQuery};

use std::cell::Cell;
use std::convert::Infallible;
use std::os::unix::fs::{FileTypeExt, PermissionsExt};
use std::rc::Rc;
use std::sync::Arc;
use std::time::Duration;

use http_body_util::Full;
use hyper::body::{Bytes, Incoming};
use hyper::{Request, Response, StatusCode};
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::{TcpListener, UnixListener};
use tokio::sync::{mpsc, oneshot};

use crate::logging::Logger;

/// Connections served at once (socket and TCP together).
const MAX_CLIENTS: usize = 8;
/// How long a client may take to send its request's headers.
const HEADER_WAIT: Duration = Duration::from_secs(5);
/// How long one exchange may take in all.
const EXCHANGE_WAIT: Duration = Duration::from_secs(10);

/// What a client asked for.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum AdminRequest {
    /// `/status`: totals against limits, versions.
    Status,
    /// `/transports`.
    Transports,
    /// `/destinations`.
    Destinations(DestinationQuery),
    /// `/jobs`.
    Jobs {
        /// Only this transport's jobs.
        transport: Option<Vec<u8>>,
        /// At most this many.
        limit: usize,
    },
    /// `/metrics`, Prometheus text format.
    Metrics,
    /// POST `/unthrottle`: a dead transport, or one of its destinations,
    /// comes back now.
    Unthrottle {
        /// The transport.
        transport: Vec<u8>,
        /// Its destination, or all of them.
        nexthop: Option<Vec<u8>>,
    },
    /// POST `/set`: a limit of a transport or one destination, live.
    Set {
        /// The transport or destination.
        target: rqmgr_sched::Target,
        /// The new limit.
        limit: rqmgr_sched::LiveLimit,
        /// Seconds until it ends by itself.
        for_secs: Option<u64>,
    },
    /// POST `/suspend`: no deliveries to a transport or destination.
    Suspend {
        /// The transport or destination.
        target: rqmgr_sched::Target,
        /// Why, in the operator's words.
        reason: String,
        /// Seconds until it ends by itself.
        for_secs: Option<u64>,
    },
    /// POST `/resume`: every suspension of the target ends.
    Resume(rqmgr_sched::Target),
    /// POST `/clear`: one override ends.
    Clear(u64),
    /// POST `/flush`: the target's deferred mail goes out now.
    Flush(rqmgr_sched::Target),
    /// `/overrides`: what operators changed, in force.
    Overrides,
}

impl AdminRequest {
    /// The endpoint's name, for metrics.
    pub(crate) fn endpoint(&self) -> &'static str {
        match self {
            AdminRequest::Status => "status",
            AdminRequest::Transports => "transports",
            AdminRequest::Destinations(_) => "destinations",
            AdminRequest::Jobs { .. } => "jobs",
            AdminRequest::Metrics => "metrics",
            AdminRequest::Unthrottle { .. } => "unthrottle",
            AdminRequest::Set { .. } => "set",
            AdminRequest::Suspend { .. } => "suspend",
            AdminRequest::Resume(_) => "resume",
            AdminRequest::Clear(_) => "clear",
            AdminRequest::Flush(_) => "flush",
            AdminRequest::Overrides => "overrides",
        }
    }
}

/// The loop's answer: a content type and a body.
#[derive(Debug)]
pub(crate) struct AdminAnswer {
    /// `application/json` or Prometheus' text type.
    pub content_type: &'static str,
    /// The body.
    pub body: String,
}

/// A request on its way to the event loop, with where the answer goes.
pub(crate) struct AdminQuery {
    pub request: AdminRequest,
    /// Who asked (the socket's peer; none over TCP), for the log.
    pub uid: Option<u32>,
    pub reply: oneshot::Sender<AdminAnswer>,
}

/// Where the admin endpoints listen.
#[derive(Debug, Clone)]
pub(crate) struct AdminConfig {
    /// The socket's path, relative to the queue directory; empty: none.
    pub socket: String,
    /// `host:port` for `/metrics` over TCP; empty: none.
    pub metrics_listen: String,
    /// The uid of mail_owner (root is always allowed).
    pub owner_uid: u32,
}

/// Opens the endpoints and serves them on the current `LocalSet`; queries
/// arrive on the returned channel.
pub(crate) fn start(cfg: &AdminConfig, log: &Arc<Logger>) -> mpsc::UnboundedReceiver<AdminQuery> {
    let (tx, rx) = mpsc::unbounded_channel();
    let clients = Rc::new(Cell::new(0usize));
    if !cfg.socket.is_empty() {
        match bind_socket(&cfg.socket) {
            Ok(listener) => {
                let (tx, clients, owner) = (tx.clone(), Rc::clone(&clients), cfg.owner_uid);
                tokio::task::spawn_local(serve_socket(listener, tx, clients, owner));
            }
            Err(e) => log.warning(&format!("admin socket {}: {e}", cfg.socket)),
        }
    }
    if !cfg.metrics_listen.is_empty() {
        match std::net::TcpListener::bind(&cfg.metrics_listen)
            .and_then(|l| l.set_nonblocking(true).map(|()| l))
            .and_then(TcpListener::from_std)
        {
            Ok(listener) => {
                tokio::task::spawn_local(serve_tcp(listener, tx, clients));
            }
            Err(e) => log.warning(&format!("metrics listener {}: {e}", cfg.metrics_listen)),
        }
    }
    rx
}

/// Binds the socket, replacing one an earlier queue manager left; mode
/// 0600, so only its owner (mail_owner, whom we run as) and root connect.
fn bind_socket(path: &str) -> std::io::Result<UnixListener> {
    if let Ok(md) = std::fs::symlink_metadata(path) {
        if md.file_type().is_socket() {
            std::fs::remove_file(path)?;
        }
    }
    let listener = UnixListener::bind(path)?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600))?;
    Ok(listener)
}

async fn serve_socket(
    listener: UnixListener,
    tx: mpsc::UnboundedSender<AdminQuery>,
    clients: Rc<Cell<usize>>,
    owner_uid: u32,
) {
    loop {
        let Ok((stream, _)) = listener.accept().await else {
            tokio::time::sleep(Duration::from_millis(100)).await;
            continue;
        };
        let caller = match stream.peer_cred().map(|c| c.uid()) {
            Ok(uid) if uid == 0 || uid == owner_uid => Caller::Uid(uid),
            _ => Caller::Refused,
        };
        serve(stream, tx.clone(), Rc::clone(&clients), caller);
    }
}

async fn serve_tcp(
    listener: TcpListener,
    tx: mpsc::UnboundedSender<AdminQuery>,
    clients: Rc<Cell<usize>>,
) {
    loop {
        let Ok((stream, _)) = listener.accept().await else {
            tokio::time::sleep(Duration::from_millis(100)).await;
            continue;
        };
        serve(stream, tx.clone(), Rc::clone(&clients), Caller::Network);
    }
}

/// Who is on the other end of a connection.
#[derive(Debug, Clone, Copy)]
enum Caller {
    /// On the socket, neither root nor mail_owner.
    Refused,
    /// On the socket: root or mail_owner, by uid.
    Uid(u32),
    /// On the TCP listener: anyone who can reach it, for `/metrics` only.
    Network,
}

/// Serves one connection in a task of its own, if there is room.
fn serve<S>(
    stream: S,
    tx: mpsc::UnboundedSender<AdminQuery>,
    clients: Rc<Cell<usize>>,
    caller: Caller,
) where
    S: AsyncRead + AsyncWrite + Unpin + 'static,
{
    if clients.get() >= MAX_CLIENTS {
        return;
    }
    clients.set(clients.get() + 1);
    tokio::task::spawn_local(async move {
        let service = hyper::service::service_fn(move |req: Request<Incoming>| {
            let tx = tx.clone();
            async move { Ok::<_, Infallible>(respond(&req, &tx, caller).await) }
        });
        let exchange = hyper::server::conn::http1::Builder::new()
            .timer(TokioTimer::new())
            .header_read_timeout(HEADER_WAIT)
            .keep_alive(false)
            .serve_connection(TokioIo::new(stream), service);
        let _ = tokio::time::timeout(EXCHANGE_WAIT, exchange).await;
        clients.set(clients.get() - 1);
    });
}

async fn respond(
    req: &Request<Incoming>,
    tx: &mpsc::UnboundedSender<AdminQuery>,
    caller: Caller,
) -> Response<Full<Bytes>> {
    let (uid, metrics_only) = match caller {
        Caller::Refused => return error(StatusCode::FORBIDDEN, "only root and mail_owner may ask"),
        Caller::Uid(uid) => (Some(uid), false),
        Caller::Network => (None, true),
    };
    let post = req.method() == hyper::Method::POST;
    if !post && req.method() != hyper::Method::GET {
        return error(StatusCode::METHOD_NOT_ALLOWED, "only GET and POST");
    }
    let request = match views::parse(post, req.uri().path(), req.uri().query().unwrap_or("")) {
        Ok(r) if metrics_only && r != AdminRequest::Metrics => {
            return error(StatusCode::NOT_FOUND, "only /metrics here")
        }
        Ok(r) => r,
        Err(e) => return error(StatusCode::NOT_FOUND, &e),
    };
    let (reply, answer) = oneshot::channel();
    if tx
        .send(AdminQuery {
            request,
            uid,
            reply,
        })
        .is_err()
    {
        return error(
            StatusCode::SERVICE_UNAVAILABLE,
            "the queue manager is stopping",
        );
    }
    match answer.await {
        Ok(a) => Response::builder()
            .header("content-type", a.content_type)
            .body(Full::new(Bytes::from(a.body)))
            .unwrap_or_else(|_| Response::new(Full::new(Bytes::new()))),
        Err(_) => error(
            StatusCode::SERVICE_UNAVAILABLE,
            "the queue manager is stopping",
        ),
    }
}

fn error(status: StatusCode, text: &str) -> Response<Full<Bytes>> {
    let body = serde_json::json!({ "error": text }).to_string();
    let mut r = Response::new(Full::new(Bytes::from(body)));
    *r.status_mut() = status;
    r.headers_mut().insert(
        "content-type",
        hyper::header::HeaderValue::from_static("application/json"),
    );
    r
}
