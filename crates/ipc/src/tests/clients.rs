//! Async tests of the service clients against fake Postfix servers on
//! UNIX sockets in a temporary directory.

use std::path::PathBuf;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Arc;
use std::time::Duration;

use crate::attr::ListDecoder;
use crate::bounce::{self, BounceRequest};
use crate::deliver::{AgentConnection, DeliveryRequest, DsnAttrs, RecipientOut};
use crate::error::IpcError;
use crate::error::ReadContext;
use crate::rewrite::{resolve_flags, RewriteClient, RESOLVE_CONNECTIONS};
use crate::stream::{AttrStream, BlockingAttrStream};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{UnixListener, UnixStream};

const T: Duration = Duration::from_secs(5);

fn socket(dir: &tempfile::TempDir, name: &str) -> (PathBuf, UnixListener) {
    let private = dir.path().join("private");
    std::fs::create_dir_all(&private).unwrap();
    let path = private.join(name);
    let listener = UnixListener::bind(&path).unwrap();
    (path, listener)
}

fn announce(protocol: &str) -> Vec<u8> {
    format!("protocol\0{protocol}\0\0").into_bytes()
}

/// Reads one complete list and returns its raw bytes (None on EOF).
async fn read_raw_list(s: &mut UnixStream, pending: &mut Vec<u8>) -> Option<Vec<u8>> {
    let mut dec = ListDecoder::new();
    loop {
        if let Some((_, used)) = dec.feed(pending, 0).unwrap() {
            return Some(pending.drain(..used).collect());
        }
        let mut buf = [0u8; 4096];
        let n = s.read(&mut buf).await.unwrap();
        if n == 0 {
            return None;
        }
        pending.extend_from_slice(&buf[..n]);
    }
}

fn request() -> DeliveryRequest {
    DeliveryRequest {
        flags: 3,
        queue_name: b"active".to_vec(),
        queue_id: b"ABC".to_vec(),
        recipients: vec![RecipientOut {
            address: b"a@example.com".to_vec(),
            ..RecipientOut::default()
        }],
        ..DeliveryRequest::default()
    }
}

#[tokio::test]
async fn agent_delivery_round_trip() {
    let dir = tempfile::tempdir().unwrap();
    let (path, listener) = socket(&dir, "smtp");
    let server = tokio::spawn(async move {
        let (mut s, _) = listener.accept().await.unwrap();
        s.write_all(&announce("delivery_request_protocol"))
            .await
            .unwrap();
        let mut pending = Vec::new();
        let head = read_raw_list(&mut s, &mut pending).await.unwrap();
        assert!(head.starts_with(b"flags\x003\0queue_name\0active\0queue_id\0ABC\0"));
        assert!(head.ends_with(b"recipient_count\x001\0\0"));
        let rcpt = read_raw_list(&mut s, &mut pending).await.unwrap();
        assert!(rcpt.starts_with(b"original_recipient\0\0recipient\0a@example.com\0"));
        s.write_all(b"status\x004.4.1\0diag_type\0\0diag_text\0\0mta_type\0\0mta_mname\0\0action\0\0reason\0refused\0status\x004294967295\0\0")
            .await
            .unwrap();
        // The agent waits for qmgr to close.
        let mut rest = Vec::new();
        s.read_to_end(&mut rest).await.unwrap();
        assert!(rest.is_empty());
    });
    let mut agent = AgentConnection::connect(&path, T).await.unwrap();
    assert_eq!(agent.service(), "private/smtp");
    agent.wait_ready().await.unwrap();
    let reply = agent.deliver(&request()).await.unwrap();
    assert_eq!(reply.status, -1);
    assert_eq!(reply.dsn.as_ref().unwrap().status, b"4.4.1");
    assert_eq!(reply.reason, b"refused");
    drop(agent);
    server.await.unwrap();
}

#[tokio::test]
async fn agent_wrong_announcement() {
    let dir = tempfile::tempdir().unwrap();
    let (path, listener) = socket(&dir, "smtp");
    tokio::spawn(async move {
        let (mut s, _) = listener.accept().await.unwrap();
        s.write_all(&announce("cleanup_protocol")).await.unwrap();
        let _ = s.read(&mut [0u8; 16]).await;
    });
    let mut agent = AgentConnection::connect(&path, T).await.unwrap();
    let e = agent.wait_ready().await.unwrap_err();
    assert_eq!(
        e.to_string(),
        "unexpected protocol cleanup_protocol from private/smtp socket (expected: delivery_request_protocol)"
    );
}

#[tokio::test]
async fn agent_disconnects_and_timeouts() {
    let dir = tempfile::tempdir().unwrap();
    let (path, listener) = socket(&dir, "smtp");
    tokio::spawn(async move {
        // 1: closes right after the request; 2: dies mid-value; 3: silent.
        for case in 0..3 {
            let (mut s, _) = listener.accept().await.unwrap();
            s.write_all(&announce("delivery_request_protocol"))
                .await
                .unwrap();
            let mut pending = Vec::new();
            read_raw_list(&mut s, &mut pending).await.unwrap();
            read_raw_list(&mut s, &mut pending).await.unwrap();
            match case {
                0 => drop(s),
                1 => {
                    s.write_all(b"status\x004.4").await.unwrap();
                    drop(s);
                }
                _ => {
                    tokio::time::sleep(Duration::from_secs(3)).await;
                }
            }
        }
    });
    let mut agent = AgentConnection::connect(&path, T).await.unwrap();
    agent.wait_ready().await.unwrap();
    let e = agent.deliver(&request()).await.unwrap_err();
    assert!(matches!(
        e,
        IpcError::PrematureDisconnect {
            context: ReadContext::Name,
            ..
        }
    ));
    assert_eq!(
        e.to_string(),
        "premature end-of-input on private/smtp socket while reading input attribute name"
    );
    assert!(e.quiet_on_first_attempt());
    // Nothing of the reply arrived: Postfix's attr_scan() says nothing.
    assert!(e.scan_is_silent());

    let mut agent = AgentConnection::connect(&path, T).await.unwrap();
    agent.wait_ready().await.unwrap();
    let e = agent.deliver(&request()).await.unwrap_err();
    assert_eq!(
        e.to_string(),
        "unexpected end-of-input from private/smtp socket while reading input attribute value"
    );

    let mut agent = AgentConnection::connect(&path, T).await.unwrap();
    agent.wait_ready().await.unwrap();
    agent.send_request(&request()).await.unwrap();
    agent.set_timeout(Duration::from_millis(100));
    let e = agent.read_reply().await.unwrap_err();
    assert_eq!(
        e.to_string(),
        "timeout on private/smtp socket while reading input attribute name"
    );
    assert!(!e.quiet_on_first_attempt());
}

#[tokio::test]
async fn connect_failure_names_the_service() {
    let dir = tempfile::tempdir().unwrap();
    let e = AgentConnection::connect(&dir.path().join("private/none"), T)
        .await
        .unwrap_err();
    assert!(matches!(e, IpcError::Connect { .. }));
    assert!(e.to_string().starts_with("connect to private/none: "));
    assert!(e.quiet_on_first_attempt(), "ENOENT is quiet");
}

/// A fake trivial-rewrite: answers resolve/verify/rewrite requests; the
/// reply's server flags come from the address ("bye@" asks to reconnect).
async fn fake_rewrite(listener: UnixListener, counts: Counts) {
    loop {
        let (mut s, _) = listener.accept().await.unwrap();
        counts.accepts.fetch_add(1, Ordering::SeqCst);
        let requests = Arc::clone(&counts.requests);
        tokio::task::spawn_local(async move {
            s.write_all(&announce("trivial_rewrite_protocol"))
                .await
                .unwrap();
            let mut pending = Vec::new();
            while let Some(raw) = read_raw_list(&mut s, &mut pending).await {
                requests.fetch_add(1, Ordering::SeqCst);
                let (list, _) = crate::attr::AttrList::decode(&raw).unwrap().unwrap();
                let req = list.get("request").unwrap().to_vec();
                let addr = list.get("address").unwrap().to_vec();
                let mut out = Vec::new();
                if req == b"rewrite" {
                    out.extend_from_slice(b"flags\x000\0address\0");
                    out.extend_from_slice(&addr);
                    out.extend_from_slice(b"@rewritten\0\0");
                } else {
                    let server_flags: &[u8] = if addr.starts_with(b"bye@") {
                        b"1"
                    } else {
                        b"0"
                    };
                    let transport: &[u8] = if addr.starts_with(b"null@") {
                        b""
                    } else if req == b"verify" {
                        b"verify"
                    } else {
                        b"smtp"
                    };
                    out.extend_from_slice(b"flags\0");
                    out.extend_from_slice(server_flags);
                    out.extend_from_slice(b"\0transport\0");
                    out.extend_from_slice(transport);
                    out.extend_from_slice(b"\0nexthop\0[127.0.0.1]:2527\0recipient\0");
                    out.extend_from_slice(&addr);
                    out.extend_from_slice(b"\0flags\x004096\0\0");
                }
                s.write_all(&out).await.unwrap();
            }
        });
    }
}

/// A fake server's connections and requests so far.
#[derive(Clone, Default)]
struct Counts {
    accepts: Arc<AtomicU32>,
    requests: Arc<AtomicU32>,
}

impl Counts {
    fn now(&self) -> (u32, u32) {
        (
            self.accepts.load(Ordering::SeqCst),
            self.requests.load(Ordering::SeqCst),
        )
    }
}

/// Serves `socket name` in `dir` with `serve` on a thread of its own, with
/// a runtime of its own: the rewrite client sleeps in `read` until it has
/// its answer, so its server cannot share its thread. The thread ends
/// with the test program.
fn serve_on_own_thread<F, Fut>(dir: &tempfile::TempDir, name: &str, serve: F) -> PathBuf
where
    F: FnOnce(UnixListener) -> Fut + Send + 'static,
    Fut: std::future::Future<Output = ()> + 'static,
{
    let private = dir.path().join("private");
    std::fs::create_dir_all(&private).unwrap();
    let path = private.join(name);
    let listener = std::os::unix::net::UnixListener::bind(&path).unwrap();
    listener.set_nonblocking(true).unwrap();
    std::thread::spawn(move || {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        let local = tokio::task::LocalSet::new();
        local.block_on(&rt, async move {
            serve(UnixListener::from_std(listener).unwrap()).await;
        });
    });
    path
}

/// Starts [`fake_rewrite`] on `private/rewrite` in a fresh directory;
/// returns the directory (keep it alive), the socket path, and its
/// counters.
fn start_fake_rewrite() -> (tempfile::TempDir, PathBuf, Counts) {
    let dir = tempfile::tempdir().unwrap();
    let counts = Counts::default();
    let served = counts.clone();
    let path = serve_on_own_thread(&dir, "rewrite", move |l| fake_rewrite(l, served));
    (dir, path, counts)
}

#[test]
fn rewrite_client_connection_reuse_cache_and_reconnects() {
    let (_dir, path, counts) = start_fake_rewrite();
    let mut c = RewriteClient::new(
        path,
        T,
        Duration::from_millis(300),
        Duration::from_secs(1000),
    );

    let r = c.resolve(false, b"s@x", b"a@example.com").unwrap();
    assert_eq!(r.transport, b"smtp");
    assert_eq!(r.nexthop, b"[127.0.0.1]:2527");
    assert_eq!(r.recipient, b"a@example.com");
    assert_eq!(r.flags, resolve_flags::CLASS_DEFAULT);
    // Same key: served from the cache.
    c.resolve(false, b"s@x", b"a@example.com").unwrap();
    assert_eq!(counts.now().1, 1);
    // Verify is a different key and request word.
    let v = c.resolve(true, b"s@x", b"a@example.com").unwrap();
    assert_eq!(v.transport, b"verify");
    assert_eq!(counts.now(), (1, 2));
    assert_eq!(c.rewrite("local", b"user").unwrap(), b"user@rewritten");
    assert_eq!(counts.now(), (1, 3));

    // Server-requested disconnect.
    c.resolve(false, b"", b"bye@example.com").unwrap();
    assert!(!c.is_connected());
    c.resolve(false, b"", b"b@example.com").unwrap();
    assert_eq!(counts.now().0, 2);

    // Idle limit.
    std::thread::sleep(Duration::from_millis(400));
    c.resolve(false, b"", b"c@example.com").unwrap();
    assert_eq!(counts.now().0, 3);

    // Null transport is an error and drops the connection.
    let e = c.resolve(false, b"", b"null@example.com").unwrap_err();
    assert_eq!(
        e.to_string(),
        "resolve_clnt: null transport result for: <null@example.com>"
    );
    assert!(!c.is_connected());
}

#[test]
fn rewrite_client_resolves_several_over_parallel_connections() {
    let (_dir, path, counts) = start_fake_rewrite();
    let mut c = RewriteClient::new(path, T, T, T);
    let names: Vec<Vec<u8>> = (0..RESOLVE_CONNECTIONS + 2)
        .map(|i| format!("u{i}@example.com").into_bytes())
        .collect();
    let addresses: Vec<&[u8]> = names.iter().map(Vec::as_slice).collect();

    // One request per connection; answers in the order asked; what
    // does not fit is left to the caller.
    let answers = c.resolve_several(false, b"s@x", &addresses);
    assert_eq!(answers.len(), addresses.len());
    for (i, a) in answers.iter().enumerate() {
        match a {
            Some(r) if i < RESOLVE_CONNECTIONS => {
                assert_eq!(r.recipient, addresses[i]);
                assert_eq!(r.transport, b"smtp");
            }
            None if i >= RESOLVE_CONNECTIONS => {}
            other => panic!("answer {i}: {other:?}"),
        }
    }
    let n = u32::try_from(RESOLVE_CONNECTIONS).unwrap();
    assert_eq!(counts.now(), (n, n));

    // The connections are kept; the last answer is cached.
    let again = c.resolve_several(true, b"s@x", &addresses[..2]);
    assert!(again
        .iter()
        .all(|a| a.as_ref().unwrap().transport == b"verify"));
    assert_eq!(counts.now(), (n, n + 2));
    c.resolve(true, b"s@x", addresses[1]).unwrap();
    assert_eq!(counts.now().1, n + 2);

    // From the first failure on, nothing is trusted, and the failed
    // connection is dropped (and made again next time).
    let bad: [&[u8]; 3] = [b"a@example.com", b"null@example.com", b"c@example.com"];
    let answers = c.resolve_several(false, b"", &bad);
    assert!(answers[0].is_some());
    assert_eq!(&answers[1..], &[None, None]);
    assert_eq!(counts.now().0, n);
    c.resolve_several(false, b"", &bad[..2]);
    assert_eq!(counts.now().0, n + 1);
}

#[test]
fn rewrite_client_rejects_malformed_reply() {
    let dir = tempfile::tempdir().unwrap();
    let path = serve_on_own_thread(&dir, "rewrite", |listener| async move {
        let (mut s, _) = listener.accept().await.unwrap();
        s.write_all(&announce("trivial_rewrite_protocol"))
            .await
            .unwrap();
        let mut pending = Vec::new();
        read_raw_list(&mut s, &mut pending).await.unwrap();
        s.write_all(b"flags\x000\0nexthop\0x\0\0").await.unwrap();
        let _ = s.read(&mut [0u8; 16]).await;
    });
    let mut c = RewriteClient::new(path, T, T, T);
    let e = c.resolve(false, b"", b"a@b").unwrap_err();
    assert_eq!(
        e.to_string(),
        "unexpected attribute nexthop from private/rewrite socket (expecting: transport)"
    );
    assert!(!c.is_connected());
}

/// A fake bounce/flush server: announces `protocol`, checks the request
/// bytes, replies `reply`.
fn fake_status_server(
    listener: UnixListener,
    protocol: &'static str,
    expect: Vec<u8>,
    reply: &'static [u8],
) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let (mut s, _) = listener.accept().await.unwrap();
        s.write_all(&announce(protocol)).await.unwrap();
        let mut pending = Vec::new();
        let got = read_raw_list(&mut s, &mut pending).await.unwrap();
        assert_eq!(
            String::from_utf8_lossy(&got),
            String::from_utf8_lossy(&expect)
        );
        s.write_all(reply).await.unwrap();
    })
}

fn breq() -> BounceRequest {
    BounceRequest {
        flags: 2,
        queue_name: b"active".to_vec(),
        queue_id: b"Q1".to_vec(),
        sender: b"s@x".to_vec(),
        ..BounceRequest::default()
    }
}

async fn in_dir<F, Fut>(name: &str, f: F)
where
    F: FnOnce(PathBuf, UnixListener) -> Fut,
    Fut: std::future::Future<Output = ()>,
{
    let dir = tempfile::tempdir().unwrap();
    let (path, listener) = socket(&dir, name);
    f(path, listener).await;
}

#[tokio::test]
async fn bounce_family_requests() {
    in_dir("defer", |path: PathBuf, l| async move {
        let srv = fake_status_server(
            l,
            "delivery_status_protocol",
            bounce::BounceRequest {
                flags: breq().flags | bounce::bounce_flags::DELRCPT,
                ..breq()
            }
            .encode(bounce::BounceCommand::Verp, Some(b"+=")),
            b"status\x000\0\0",
        );
        assert_eq!(
            bounce::notify(
                &path,
                bounce::BounceCommand::Verp,
                &bounce::BounceRequest {
                    flags: breq().flags | bounce::bounce_flags::DELRCPT,
                    ..breq()
                },
                Some(b"+="),
                T
            )
            .await
            .unwrap(),
            0
        );
        srv.await.unwrap();
    })
    .await;

    in_dir("defer", |path: PathBuf, l| async move {
        let rcpt = RecipientOut {
            address: b"a@x".to_vec(),
            ..RecipientOut::default()
        };
        let dsn = DsnAttrs::simple(b"4.3.0", b"mail transport unavailable");
        let mut want = dsn.clone();
        want.action = b"delayed".to_vec();
        let srv = fake_status_server(
            l,
            "delivery_status_protocol",
            bounce::encode_append(0, b"Q1", &rcpt, &want),
            b"status\x004294967295\0\0",
        );
        assert_eq!(
            bounce::defer_append(&path, 0, b"Q1", &rcpt, &dsn, T)
                .await
                .unwrap(),
            -1
        );
        srv.await.unwrap();
    })
    .await;

    in_dir("flush", |path: PathBuf, l| async move {
        let srv = fake_status_server(
            l,
            "queue_flush_protocol",
            b"request\0add\0site\0example.com\0queue_id\0Q1\0\0".to_vec(),
            b"status\x004\0\0",
        );
        assert_eq!(
            bounce::flush_add(&path, b"example.com", b"Q1", T)
                .await
                .unwrap(),
            bounce::flush_status::DENY
        );
        srv.await.unwrap();
    })
    .await;

    in_dir("bounce", |path: PathBuf, l| async move {
        let srv = fake_status_server(
            l,
            "delivery_status_protocol",
            breq().encode(bounce::BounceCommand::Flush, None),
            b"status\x000\0extra\x001\0\0",
        );
        let e = bounce::notify(&path, bounce::BounceCommand::Flush, &breq(), None, T)
            .await
            .unwrap_err();
        assert_eq!(
            e.to_string(),
            "unexpected attribute extra from private/bounce socket (expecting: (list terminator))"
        );
        srv.await.unwrap();
    })
    .await;
}

#[tokio::test]
async fn stream_keeps_bytes_after_a_list() {
    let (a, mut b) = UnixStream::pair().unwrap();
    b.write_all(b"a\x001\0\0b\x002\0\0c").await.unwrap();
    let mut s = AttrStream::from_stream_named(a, "private/x".into(), T);
    assert_eq!(s.read_list().await.unwrap().get("a"), Some(&b"1"[..]));
    assert_eq!(s.read_list().await.unwrap().get("b"), Some(&b"2"[..]));
    drop(b);
    let e = s.read_list().await.unwrap_err();
    assert!(matches!(e, IpcError::UnexpectedEof { .. }));
}

#[tokio::test]
async fn stream_reads_a_list_longer_than_its_first_buffer() {
    // The first read buffer is small (most lists are); a long list, sent
    // in pieces, grows it and arrives whole, and the next list after it too.
    let (a, mut b) = UnixStream::pair().unwrap();
    let long = vec![b'x'; 20_000];
    let mut bytes = b"a\0".to_vec();
    bytes.extend_from_slice(&long);
    bytes.extend_from_slice(b"\0\0b\x002\0\0");
    let writer = tokio::spawn(async move {
        for piece in bytes.chunks(700) {
            b.write_all(piece).await.unwrap();
            tokio::task::yield_now().await;
        }
        b
    });
    let mut s = AttrStream::from_stream_named(a, "private/x".into(), T);
    assert_eq!(s.read_list().await.unwrap().get("a"), Some(&long[..]));
    assert_eq!(s.read_list().await.unwrap().get("b"), Some(&b"2"[..]));
    drop(writer.await.unwrap());
}

/// Writes `pieces` to the first client of `private/rewrite`, pausing
/// `pause` before each, then keeps the connection open without a word
/// until the client goes away.
fn trickling_rewrite(
    dir: &tempfile::TempDir,
    pieces: Vec<&'static [u8]>,
    pause: Duration,
) -> PathBuf {
    serve_on_own_thread(dir, "rewrite", move |listener| async move {
        let (mut s, _) = listener.accept().await.unwrap();
        for piece in pieces {
            tokio::time::sleep(pause).await;
            s.write_all(piece).await.unwrap();
        }
        let _ = s.read(&mut [0u8; 16]).await;
    })
}

#[test]
fn blocking_stream_reads_lists_in_pieces_and_times_out() {
    // The announcement in three pieces, each well within the timeout and
    // all together too: read whole. Then silence: a timeout, worded as
    // Postfix words it, at the start of a list.
    let dir = tempfile::tempdir().unwrap();
    let pieces: Vec<&'static [u8]> = vec![b"proto", b"col\0trivial_rew", b"rite_protocol\0\0"];
    let path = trickling_rewrite(&dir, pieces, Duration::from_millis(30));
    let mut s = BlockingAttrStream::connect(&path, Duration::from_millis(400)).unwrap();
    s.expect_announcement("trivial_rewrite_protocol").unwrap();
    let e = s.read_list().unwrap_err();
    assert_eq!(
        e.to_string(),
        "timeout on private/rewrite socket while reading input attribute name"
    );
}

#[test]
fn blocking_stream_bounds_a_whole_list_by_the_timeout() {
    // Each piece comes within the timeout, but the list as a whole does
    // not: the read times out in the middle of a value rather than
    // waiting a timeout per piece.
    let dir = tempfile::tempdir().unwrap();
    let pieces: Vec<&'static [u8]> = vec![b"protocol\0triv", b"ial", b"_rewrite", b"_protocol\0\0"];
    let path = trickling_rewrite(&dir, pieces, Duration::from_millis(150));
    let mut s = BlockingAttrStream::connect(&path, Duration::from_millis(400)).unwrap();
    let e = s
        .expect_announcement("trivial_rewrite_protocol")
        .unwrap_err();
    assert_eq!(
        e.to_string(),
        "timeout on private/rewrite socket while reading input attribute value"
    );
}

#[test]
fn blocking_stream_connect_failure_names_the_service() {
    let dir = tempfile::tempdir().unwrap();
    let e = BlockingAttrStream::connect(&dir.path().join("private/rewrite"), T).unwrap_err();
    assert!(matches!(e, IpcError::Connect { .. }));
    assert!(e.to_string().starts_with("connect to private/rewrite: "));
    assert!(e.quiet_on_first_attempt(), "ENOENT is quiet");
}
