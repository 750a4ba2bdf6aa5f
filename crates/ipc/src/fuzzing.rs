//! The bodies of this crate's fuzz targets, shared by the cargo-fuzz crate
//! in `fuzz/` (nightly, instrumented) and the corpus replay test
//! `tests/fuzz_corpus.rs` (stable, run by CI), so that the committed seed
//! corpora are replayed through exactly the code the fuzzer runs.
//!
//! Not an API: hidden from the documentation, and unlike the rest of the
//! crate it asserts. A panic here is a finding: either a reader panicked
//! on its input, or one of the invariants below does not hold. Its fix
//! belongs in the reader, with a unit test there.
//!
//! * [`attr_reader`]: the attribute decoder, fed whole and in pieces.
//!   Both ways give the same lists and the same end; each list's items,
//!   framed again, are the bytes it used; a reply or statistics that parse
//!   encode back to what parses equal.
//! * [`agent_io`]: what peers send the daemon. Trigger bytes are read as
//!   the daemon reads them from a client's socket ([`read_trigger`]) and
//!   from a FIFO (1024 bytes a read), then interpreted
//!   ([`TriggerRequest::from_letters`]); their meaning depends only on
//!   which letters occur. A delivery agent's bytes go through the daemon's
//!   exchange on a real socket pair ([`AgentConnection`]: announcement,
//!   request in the chosen [`Dialect`], reply), and the reply read from the
//!   socket is the one the decoder reads from memory.
//!
//! Limits: the socket exchanges run on a current-thread tokio runtime kept
//! for the thread. The peer writes all its bytes before the daemon's side
//! runs, so inputs are capped at [`MAX_PEER_BYTES`] (well inside a socket
//! buffer), and nothing is ever written to a closed socket (a fuzz target
//! has no Rust runtime to ignore SIGPIPE). Reads therefore see the bytes
//! in the largest pieces the socket gives; small pieces are
//! [`attr_reader`]'s part.

use std::future::Future;
use std::io::Write;
use std::time::Duration;

use tokio::net::UnixStream;
use tokio::time::Instant;

use crate::attr::{decode_item, AttrList, AttrWriter, ListDecoder};
use crate::deliver::{
    parse_reply, AgentConnection, DeliveryReply, DeliveryRequestRef, DsnAttrs, MsgStats,
    RecipientRef,
};
use crate::dialect::Dialect;
use crate::error::{AttrError, ReadContext};
use crate::trigger::{read_trigger, ScanRequest, TriggerRequest, TRIGGER_BUF_SIZE};

/// Most bytes a peer sends in one exchange.
pub const MAX_PEER_BYTES: usize = 64 * 1024;

/// Far beyond any exchange here: the peer has always finished writing
/// and shut its side down before the daemon's side reads.
const WAIT: Duration = Duration::from_secs(30);

/// The first byte picks the feeding chunk size (0 is 1); the rest is a
/// stream of attribute lists.
pub fn attr_reader(data: &[u8]) {
    let Some((&first, input)) = data.split_first() else {
        return;
    };
    let _ = decode_item(input);
    let whole = decode_lists(input, input.len().max(1));
    let pieces = decode_lists(input, usize::from(first).max(1));
    assert_eq!(
        whole, pieces,
        "fed whole and in pieces, the decoder differs"
    );
    let mut start = 0;
    for (list, used) in &whole.lists {
        assert_eq!(
            framed(list),
            input[start..start + used],
            "a list's items, framed again, are not the bytes it used"
        );
        start += used;
        check_reply(list);
        let mut r = list.strict();
        let _ = r.expect_int("flags");
        let _ = r.expect_long("offset");
        if let Ok(t) = r.expect_data("time") {
            if let Some(stats) = MsgStats::from_bytes(&t) {
                // Not byte for byte: the four bytes of padding at the end
                // carry nothing and are written as zeros.
                assert_eq!(
                    MsgStats::from_bytes(&stats.to_bytes()),
                    Some(stats),
                    "statistics do not round-trip"
                );
            }
        }
        let _ = r.finish();
    }
}

/// What the decoder makes of a stream fed `chunk` bytes at a time.
#[derive(Debug, PartialEq, Eq)]
struct Decoded {
    /// Each complete list and the bytes it used.
    lists: Vec<(AttrList, usize)>,
    /// How the stream ended: an error, or where an incomplete list was at
    /// the end of input (`None` when it ended between lists).
    end: Result<Option<(ReadContext, bool)>, AttrError>,
}

fn decode_lists(input: &[u8], chunk: usize) -> Decoded {
    let mut dec = ListDecoder::new();
    let mut lists = Vec::new();
    let (mut start, mut end) = (0, 0);
    while end < input.len() {
        end = (end + chunk).min(input.len());
        loop {
            match dec.feed(&input[start..end], start) {
                Ok(Some((list, used))) => {
                    start += used;
                    lists.push((list, used));
                }
                Ok(None) => break,
                Err(e) => return Decoded { lists, end: Err(e) },
            }
        }
    }
    let rest = &input[start..];
    let end = (!rest.is_empty()).then(|| dec.eof_context(rest));
    Decoded {
        lists,
        end: Ok(end),
    }
}

/// A list framed again from its items, terminator included.
fn framed(list: &AttrList) -> Vec<u8> {
    let mut out = Vec::new();
    for (name, value) in list.items() {
        out.extend_from_slice(name);
        out.push(0);
        out.extend_from_slice(value);
        out.push(0);
    }
    out.push(0);
    out
}

/// An agent's reply that parses encodes back to one that parses equal.
fn check_reply(list: &AttrList) -> Option<DeliveryReply> {
    let reply = parse_reply(list).ok()?;
    let mut w = AttrWriter::new();
    let dsn = reply
        .dsn
        .clone()
        .unwrap_or_else(|| DsnAttrs::simple(b"", &reply.reason));
    dsn.encode(&mut w);
    w.int("status", reply.status).end();
    let again = ListDecoder::new()
        .feed(w.as_bytes(), 0)
        .ok()
        .flatten()
        .and_then(|(list, _)| parse_reply(&list).ok());
    assert_eq!(again.as_ref(), Some(&reply), "a reply does not round-trip");
    Some(reply)
}

/// The first byte picks the peer. Bit 0 clear: a trigger client, whose
/// bytes are the rest. Bit 0 set: a delivery agent; bits 1 and 2 pick the
/// dialect (3 wraps to 0), and with bit 3 set the agent's correct
/// announcement goes before the rest, so that the fuzzer spends its time
/// on replies.
pub fn agent_io(data: &[u8]) {
    let Some((&pick, bytes)) = data.split_first() else {
        return;
    };
    let bytes = &bytes[..bytes.len().min(MAX_PEER_BYTES)];
    if pick & 1 == 0 {
        trigger(bytes);
    } else {
        let dialect = match (pick >> 1) & 3 {
            1 => Dialect::Postfix310,
            2 => Dialect::Postfix311,
            _ => Dialect::Postfix37,
        };
        let mut agent_bytes = Vec::with_capacity(bytes.len() + ANNOUNCEMENT.len());
        if pick & 8 != 0 {
            agent_bytes.extend_from_slice(ANNOUNCEMENT);
        }
        agent_bytes.extend_from_slice(bytes);
        agent(&agent_bytes, dialect);
    }
}

/// What a delivery agent says first.
const ANNOUNCEMENT: &[u8] = b"protocol\0delivery_request_protocol\0\0";

/// A trigger client's bytes, read from a socket and from a FIFO.
fn trigger(bytes: &[u8]) {
    let (sent, read) = with_peer(bytes, |mut stream| async move {
        read_trigger(&mut stream).await
    });
    match read {
        Ok(letters) => {
            assert_eq!(
                letters[..],
                bytes[..sent.min(TRIGGER_BUF_SIZE)],
                "a trigger read is not what the client wrote, up to the limit"
            );
            check_letters(&letters);
        }
        Err(e) => panic!("a trigger read of bytes written in full fails: {e}"),
    }
    for letters in bytes.chunks(TRIGGER_BUF_SIZE) {
        check_letters(letters);
    }
}

/// The meaning of letters depends only on which of them occur.
fn check_letters(letters: &[u8]) {
    let req = TriggerRequest::from_letters(letters);
    let mut present = [false; 256];
    for &b in letters {
        present[usize::from(b)] = true;
    }
    let once: Vec<u8> = (0..=u8::MAX).filter(|&b| present[usize::from(b)]).collect();
    assert_eq!(
        TriggerRequest::from_letters(&once),
        req,
        "the meaning of trigger letters depends on their order or number"
    );
    let nothing = ScanRequest::default();
    if req.incoming == nothing && req.deferred == nothing {
        assert!(
            !letters.iter().any(|b| b"IWDAF".contains(b)),
            "trigger letters asked nothing"
        );
    }
}

/// The daemon's side of one delivery, against an agent that sends
/// `bytes` (then waits for the daemon to close, as agents do).
fn agent(bytes: &[u8], dialect: Dialect) {
    let request = request(dialect);
    let (sent, from_socket) = with_peer(bytes, |stream| async move {
        let mut agent = AgentConnection::from_stream(stream, "private/smtp", WAIT);
        agent.set_deadline(Some(Instant::now() + WAIT));
        if let Err(e) = agent.wait_ready().await {
            let _ = (e.to_string(), e.scan_is_silent());
            return None;
        }
        agent.set_deadline(Some(Instant::now() + WAIT));
        if let Err(e) = agent.send_encoded(&request).await {
            panic!("the request could not be sent to an agent still connected: {e}");
        }
        let reply = agent.read_reply().await;
        if let Err(e) = &reply {
            // What the daemon logs of a reply it cannot read.
            let _ = (e.to_string(), e.scan_is_silent());
        }
        Some(reply.ok())
    });
    assert_eq!(
        from_socket,
        from_memory(&bytes[..sent]),
        "the reply read from the socket is not the one decoded from memory"
    );
}

/// What the daemon's side reads from `bytes`, decoded without a socket:
/// `None` if the announcement is wrong, else the reply if it parses.
fn from_memory(bytes: &[u8]) -> Option<Option<DeliveryReply>> {
    let mut start = 0;
    let mut next_list = || {
        let (list, used) = ListDecoder::new().feed(&bytes[start..], start).ok()??;
        start += used;
        Some(list)
    };
    let announcement = next_list()?;
    let mut r = announcement.strict();
    r.expect_streq("protocol", "delivery_request_protocol")
        .and_then(|()| r.finish())
        .ok()?;
    Some(next_list().and_then(|reply| check_reply(&reply)))
}

/// A delivery request as the daemon sends it, in `dialect`.
fn request(dialect: Dialect) -> Vec<u8> {
    DeliveryRequestRef {
        flags: 3,
        queue_name: b"active",
        queue_id: b"4F2A81E0C3",
        data_offset: 602,
        data_size: 320,
        nexthop: b"example.com",
        encoding: b"7bit",
        sendopts: 0,
        dialect,
        sender: b"sender@example.org",
        rewrite_context: b"local",
        recipients: vec![RecipientRef {
            address: b"rcpt@example.com",
            offset: 410,
            ..RecipientRef::default()
        }],
        ..DeliveryRequestRef::default()
    }
    .to_bytes()
}

/// Runs `daemon_side` on one end of a socket pair whose other end has
/// already sent `bytes` (as many as fit in the socket buffer: all of them
/// on Linux's defaults) and shut down its sending side; that end stays
/// open until `daemon_side` is done. Returns how many bytes were sent.
fn with_peer<F, Fut, T>(bytes: &[u8], daemon_side: F) -> (usize, T)
where
    F: FnOnce(UnixStream) -> Fut,
    Fut: Future<Output = T>,
{
    let (ours, mut theirs) =
        std::os::unix::net::UnixStream::pair().expect("a socket pair for the fuzz exchange");
    // Non-blocking, so that a small socket buffer cuts the input short
    // instead of hanging the run.
    theirs
        .set_nonblocking(true)
        .expect("a non-blocking socket for the peer");
    let mut sent = 0;
    while sent < bytes.len() {
        match theirs.write(&bytes[sent..]) {
            Ok(0) => break,
            Ok(n) => sent += n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(_) => break,
        }
    }
    theirs
        .shutdown(std::net::Shutdown::Write)
        .expect("shutting down the peer's side");
    ours.set_nonblocking(true)
        .expect("a non-blocking socket for tokio");
    let out = RUNTIME.with(|rt| {
        rt.block_on(async {
            let ours = UnixStream::from_std(ours).expect("the socket registered with tokio");
            daemon_side(ours).await
        })
    });
    drop(theirs);
    (sent, out)
}

thread_local! {
    /// One runtime for all exchanges of a thread, as the daemon has one.
    static RUNTIME: tokio::runtime::Runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("a tokio runtime for the fuzz exchanges");
}

/// The seed corpora of `attr_reader` and `agent_io`, made with this
/// crate's encoders: `cargo test -p rqmgr-ipc --lib write_seed_corpora --
/// --ignored` writes them to `fuzz/corpus/<target>/` (files of other
/// names there, such as minimized findings, are left alone).
#[cfg(test)]
mod seeds {
    use super::{request, ANNOUNCEMENT};
    use crate::attr::AttrWriter;
    use crate::deliver::{DsnAttrs, MsgStats};
    use crate::dialect::Dialect;
    use crate::error::AttrError;

    fn reply(dsn: &DsnAttrs, status: i32) -> Vec<u8> {
        let mut w = AttrWriter::new();
        dsn.encode(&mut w);
        w.int("status", status).end();
        w.into_bytes()
    }

    fn final_reply() -> Vec<u8> {
        reply(&DsnAttrs::default(), 0)
    }

    fn deferred_reply() -> Vec<u8> {
        reply(
            &DsnAttrs {
                status: b"4.4.1".to_vec(),
                diag_type: b"".to_vec(),
                diag_text: b"".to_vec(),
                mta_type: b"dns".to_vec(),
                mta_mname: b"mx.example.com".to_vec(),
                action: b"delayed".to_vec(),
                reason: b"connect to mx.example.com[192.0.2.25]:25: Connection refused".to_vec(),
            },
            -1,
        )
    }

    fn cat(parts: &[&[u8]]) -> Vec<u8> {
        parts.concat()
    }

    pub(super) fn attr_reader() -> Vec<(&'static str, Vec<u8>)> {
        let mut stats = AttrWriter::new();
        let times = MsgStats {
            incoming_arrival: (1_795_960_876, 80_096),
            active_arrival: (1_795_960_877, 1_024),
            ..MsgStats::default()
        };
        stats
            .int("flags", 3)
            .long("offset", 602)
            .data("time", &times.to_bytes())
            .end();
        let mut resolve = AttrWriter::new();
        resolve
            .int("flags", 0)
            .str("transport", b"smtp")
            .str("nexthop", b"example.com")
            .str("recipient", b"rcpt@example.com")
            .int("flags", 512)
            .end();
        let deferred = deferred_reply();
        // Just past the decoder's limits on names (4096 bytes) and
        // attributes per list (1024); their errors need inputs longer than
        // libFuzzer's default 4096 bytes, which these seeds also raise.
        let mut long_name = vec![b'a'; 4097];
        long_name.push(0);
        let mut many = b"a\0b\0".repeat(1025);
        many.push(0);
        vec![
            ("name_too_long", cat(&[&[255], &long_name])),
            ("too_many_attributes", cat(&[&[255], &many])),
            (
                "announcement_and_final_reply_bytewise",
                cat(&[&[1], ANNOUNCEMENT, &final_reply()]),
            ),
            ("deferred_reply_chunks_of_7", cat(&[&[7], &deferred])),
            (
                "delivery_request_3_7",
                cat(&[&[64], &request(Dialect::Postfix37)]),
            ),
            (
                "delivery_request_3_10",
                cat(&[&[255], &request(Dialect::Postfix310)]),
            ),
            ("flags_offset_statistics", cat(&[&[3], stats.as_bytes()])),
            ("resolve_reply", cat(&[&[16], resolve.as_bytes()])),
            (
                "reply_cut_in_a_value",
                cat(&[&[5], &deferred[..deferred.len() / 2]]),
            ),
            (
                "reply_status_not_a_number",
                cat(&[&[9], &final_reply()[..final_reply().len() - 4], b"-1\0\0"]),
            ),
        ]
    }

    pub(super) fn agent_io() -> Vec<(&'static str, Vec<u8>)> {
        // The first byte: bit 0 agent, bits 1-2 dialect, bit 3 announced.
        const TRIGGER: u8 = 0;
        const AGENT_3_7: u8 = 1;
        const AGENT_3_10: u8 = 3;
        const AGENT_3_11: u8 = 5;
        const ANNOUNCED: u8 = 8;
        let mut noise = vec![b'x'; 1500];
        noise[1200] = b'D';
        let final_reply = final_reply();
        let deferred = deferred_reply();
        vec![
            ("trigger_W", cat(&[&[TRIGGER], b"W\0"])),
            ("trigger_I", cat(&[&[TRIGGER], b"I"])),
            ("trigger_D", cat(&[&[TRIGGER], b"D\0"])),
            ("trigger_A", cat(&[&[TRIGGER], b"A"])),
            ("trigger_FAD", cat(&[&[TRIGGER], b"FAD\0"])),
            (
                "trigger_every_letter_twice",
                cat(&[&[TRIGGER], b"WIDAFWIDAF"]),
            ),
            ("trigger_D_after_1024_bytes", cat(&[&[TRIGGER], &noise])),
            (
                "agent_final_3_7",
                cat(&[&[AGENT_3_7], ANNOUNCEMENT, &final_reply]),
            ),
            (
                "agent_deferred_3_10",
                cat(&[&[AGENT_3_10], ANNOUNCEMENT, &deferred]),
            ),
            (
                "agent_deferred_3_11_announced",
                cat(&[&[AGENT_3_11 | ANNOUNCED], &deferred]),
            ),
            (
                "agent_wrong_protocol",
                cat(&[&[AGENT_3_7], b"protocol\0bounce_protocol\0\0"]),
            ),
            (
                "agent_announcement_with_extra",
                cat(&[
                    &[AGENT_3_10],
                    b"protocol\0delivery_request_protocol\0x\0y\0\0",
                ]),
            ),
            ("agent_gone_after_announcing", vec![AGENT_3_7 | ANNOUNCED]),
            (
                "agent_reply_cut_in_a_value",
                cat(&[&[AGENT_3_11 | ANNOUNCED], &deferred[..40]]),
            ),
            (
                "agent_reply_with_extra_attribute",
                cat(&[
                    &[AGENT_3_7 | ANNOUNCED],
                    &final_reply[..final_reply.len() - 1],
                    b"extra\0x\0\0",
                ]),
            ),
        ]
    }

    /// Checks (with `RQMGR_WRITE_SEEDS=1`: first writes) the committed
    /// seeds of `target`.
    fn check_committed(target: &str, seeds: Vec<(&str, Vec<u8>)>) {
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../../fuzz/corpus")
            .join(target);
        let write = std::env::var_os("RQMGR_WRITE_SEEDS").is_some();
        for (name, data) in seeds {
            let path = dir.join(name);
            if write {
                std::fs::create_dir_all(&dir).unwrap();
                std::fs::write(&path, &data).unwrap();
            }
            let committed = std::fs::read(&path).unwrap_or_default();
            assert!(
                committed == data,
                "{target}/{name}: run with RQMGR_WRITE_SEEDS=1"
            );
        }
    }

    /// The committed seeds are what the generators here make.
    #[test]
    fn committed_seed_corpora_are_current() {
        check_committed("attr_reader", attr_reader());
        check_committed("agent_io", agent_io());
    }

    #[test]
    fn seeds_take_the_paths_they_are_named_for() {
        for (name, data) in attr_reader() {
            super::attr_reader(&data);
            let end = super::decode_lists(&data[1..], data.len()).end;
            match name {
                "name_too_long" => {
                    assert!(matches!(end, Err(AttrError::NameTooLong { .. })), "{end:?}");
                }
                "too_many_attributes" => {
                    assert!(
                        matches!(end, Err(AttrError::TooManyAttributes { .. })),
                        "{end:?}"
                    );
                }
                _ => assert!(end.is_ok(), "{name}: {end:?}"),
            }
        }
        for (name, data) in agent_io() {
            super::agent_io(&data);
            if name.starts_with("agent_") {
                let want = match name {
                    "agent_final_3_7" => Some(Some(0)),
                    "agent_deferred_3_10" | "agent_deferred_3_11_announced" => Some(Some(-1)),
                    "agent_wrong_protocol" | "agent_announcement_with_extra" => None,
                    _ => Some(None),
                };
                let mut bytes = Vec::new();
                if data[0] & 8 != 0 {
                    bytes.extend_from_slice(ANNOUNCEMENT);
                }
                bytes.extend_from_slice(&data[1..]);
                let got = super::from_memory(&bytes).map(|r| r.map(|r| r.status));
                assert_eq!(got, want, "{name}");
            }
        }
    }
}
