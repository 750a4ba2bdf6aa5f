//! trivial-rewrite client (`private/rewrite`): resolve and rewrite.
//!
//! Job: ask trivial-rewrite(8) where a recipient goes (transport, nexthop,
//! rewritten recipient, flags), or to rewrite an address under a rule.
//!
//! Invariants: like Postfix's clnt_stream, persistent connections are
//! kept and each one's announcement checked once; a connection is closed
//! when the server's leading `flags` is non-zero, after `idle` without use,
//! after `ttl` of age, and after any error.  Single requests use the first
//! connection only.  One-entry caches (30 s, keyed on request kind +
//! sender + address, resp. rule + address) spare repeated lookups; an
//! empty address is never served from the resolve cache.
//!
//! Batches ([`RewriteClient::resolve_several`]) put one request on each of
//! up to [`RESOLVE_CONNECTIONS`] connections before reading the replies in
//! order.  trivial-rewrite serves one request per readable connection and
//! turn of its event loop (a second request queued behind the first on one
//! stream would wait for more input that never comes, so requests are
//! never pipelined on one connection); several connections let one of its
//! turns answer several recipients, where one connection costs a pair of
//! process wake-ups per recipient.  Resolving is a pure query, so the
//! order in which trivial-rewrite answers changes nothing.
//!
//! The client blocks, as Postfix's resolve client does: a queue manager
//! can do nothing with a message until its recipients are resolved, and
//! asleep in `read(2)` on the reply (see `stream/blocking.rs`) it is
//! woken by that reply alone, not by every delivery agent that answers
//! meanwhile; those answers are taken together at the event loop's next
//! wait.
//!
//! How it fails: one attempt per call.  Errors drop the connection; the
//! caller retries forever with a one-second pause, warning "problem talking
//! to service rewrite" (see [`IpcError::quiet_on_first_attempt`]).  An empty
//! transport, or an empty recipient for a non-empty address, is an error
//! too, because Postfix retries those as well.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use crate::attr::{AttrList, AttrWriter};
use crate::error::IpcError;
use crate::stream::BlockingAttrStream;

/// Protocol trivial-rewrite announces.
const PROTOCOL: &str = "trivial_rewrite_protocol";

/// How long a cached answer stays valid.
const CACHE_TTL: Duration = Duration::from_secs(30);

/// Connections (hence requests in flight) of a batch of resolves.
pub const RESOLVE_CONNECTIONS: usize = 4;

/// Resolve reply flags and address classes (`RESOLVE_FLAG_*`, `RESOLVE_CLASS_*`).
pub mod resolve_flags {
    /// Bad destination syntax.
    pub const ERROR: i32 = 1 << 2;
    /// The lookup failed (try again later).
    pub const FAIL: i32 = 1 << 3;
    /// mydestination / inet_interfaces.
    pub const CLASS_LOCAL: i32 = 1 << 8;
    /// Everything else.
    #[cfg(test)]
    pub(crate) const CLASS_DEFAULT: i32 = 1 << 12;
}

/// trivial-rewrite's answer to a resolve request.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ResolveReply {
    /// Delivery transport.
    pub transport: Vec<u8>,
    /// Next-hop destination.
    pub nexthop: Vec<u8>,
    /// Rewritten recipient.
    pub recipient: Vec<u8>,
    /// [`resolve_flags`] bits.
    pub flags: i32,
}

#[derive(Debug)]
struct Conn {
    stream: BlockingAttrStream,
    created: Instant,
    last_used: Instant,
}

#[derive(Debug)]
struct Cached<K, V> {
    key: K,
    value: V,
    expires: Instant,
}

/// The last resolve's question and answer, kept as Postfix's
/// resolve_clnt keeps them. It is overwritten in place, so that in the
/// usual case (no hit: each recipient differs) keeping it costs no
/// allocation.
#[derive(Debug, Default)]
struct LastResolve {
    verify: bool,
    sender: Vec<u8>,
    address: Vec<u8>,
    reply: ResolveReply,
    /// `None` until the first answer.
    expires: Option<Instant>,
}

impl LastResolve {
    /// The kept answer, if it is to this question and still fresh.
    fn answer(
        &self,
        verify: bool,
        sender: &[u8],
        address: &[u8],
        now: Instant,
    ) -> Option<ResolveReply> {
        let same = !address.is_empty()
            && self.verify == verify
            && self.address == address
            && self.sender == sender;
        let fresh = || self.expires.is_some_and(|at| now < at);
        (same && fresh()).then(|| self.reply.clone())
    }

    /// Keeps `reply` as the answer to this question.
    fn remember(
        &mut self,
        (verify, sender, address): (bool, &[u8], &[u8]),
        reply: &ResolveReply,
        now: Instant,
    ) {
        fn refill(to: &mut Vec<u8>, from: &[u8]) {
            to.clear();
            to.extend_from_slice(from);
        }
        self.verify = verify;
        refill(&mut self.sender, sender);
        refill(&mut self.address, address);
        refill(&mut self.reply.transport, &reply.transport);
        refill(&mut self.reply.nexthop, &reply.nexthop);
        refill(&mut self.reply.recipient, &reply.recipient);
        self.reply.flags = reply.flags;
        self.expires = Some(now + CACHE_TTL);
    }
}

type RewriteKey = (String, Vec<u8>);

/// A persistent client of `private/rewrite`.
#[derive(Debug)]
pub struct RewriteClient {
    path: PathBuf,
    io_timeout: Duration,
    idle: Duration,
    ttl: Duration,
    /// `conns[0]` serves single requests; the others only batches.
    conns: [Option<Conn>; RESOLVE_CONNECTIONS],
    last_resolve: LastResolve,
    rewrite_cache: Option<Cached<RewriteKey, Vec<u8>>>,
}

impl RewriteClient {
    /// A client for the socket at `path`; `idle` and `ttl` are ipc_idle
    /// and ipc_ttl.  Connects lazily.
    pub fn new(path: PathBuf, io_timeout: Duration, idle: Duration, ttl: Duration) -> Self {
        RewriteClient {
            path,
            io_timeout,
            idle,
            ttl,
            conns: Default::default(),
            last_resolve: LastResolve::default(),
            rewrite_cache: None,
        }
    }

    /// True while a connection is held.
    #[cfg(test)]
    pub(crate) fn is_connected(&self) -> bool {
        self.conns.iter().any(Option::is_some)
    }

    /// Takes connection `slot` out for a request, reconnecting first when
    /// it is missing, idle or old. The caller puts it back after a good
    /// reply; after an error it is simply dropped.
    /// `now` is the time the request began: a batch reads the clock once.
    fn checkout(&mut self, slot: usize, now: Instant) -> Result<Conn, IpcError> {
        if let Some(c) = self.conns[slot].take() {
            if now.duration_since(c.last_used) < self.idle
                && now.duration_since(c.created) < self.ttl
            {
                return Ok(c);
            }
        }
        let mut stream = BlockingAttrStream::connect(&self.path, self.io_timeout)?;
        stream.expect_announcement(PROTOCOL)?;
        Ok(Conn {
            stream,
            created: now,
            last_used: now,
        })
    }

    /// One request/reply on the first connection.
    fn exchange(&mut self, request: &[u8]) -> Result<AttrList, IpcError> {
        let mut conn = self.checkout(0, Instant::now())?;
        let list = conn.stream.request(request)?;
        conn.last_used = Instant::now();
        self.conns[0] = Some(conn);
        Ok(list)
    }

    /// Wraps a reply-decoding error (the connection is already dropped).
    fn bad_reply(&self, error: crate::error::AttrError) -> IpcError {
        let service = crate::stream::service_name(&self.path);
        IpcError::Attr { service, error }
    }

    fn resolve_request(verify: bool, sender: &[u8], address: &[u8]) -> AttrWriter {
        // The names, values and NULs come to 40 bytes besides the two
        // addresses; room for all at once spares the buffer's regrowth.
        let mut w = AttrWriter::with_capacity(48 + sender.len() + address.len());
        w.str("request", if verify { b"verify" } else { b"resolve" })
            .str("sender", sender)
            .str("address", address)
            .end();
        w
    }

    /// Checks and caches the reply to a resolve sent on connection `slot`
    /// (already taken out), putting the connection back when the server
    /// wants it kept and the reply is good. `now` is when the request
    /// began.
    fn finish_resolve(
        &mut self,
        slot: usize,
        mut conn: Conn,
        question: (bool, &[u8], &[u8]),
        list: &AttrList,
        now: Instant,
    ) -> Result<ResolveReply, IpcError> {
        let address = question.2;
        let mut r = list.strict();
        let parsed = (|| {
            let server_flags = r.expect_int("flags")?;
            let reply = ResolveReply {
                transport: r.expect_str("transport")?.to_vec(),
                nexthop: r.expect_str("nexthop")?.to_vec(),
                recipient: r.expect_str("recipient")?.to_vec(),
                flags: r.expect_int("flags")?,
            };
            r.finish()?;
            Ok((server_flags, reply))
        })();
        let (server_flags, reply) = parsed.map_err(|e| self.bad_reply(e))?;
        if reply.transport.is_empty() {
            return Err(IpcError::NullTransport {
                address: address.to_vec(),
            });
        }
        if reply.recipient.is_empty() && !address.is_empty() {
            return Err(IpcError::NullRecipient {
                address: address.to_vec(),
            });
        }
        if server_flags == 0 {
            conn.last_used = now;
            self.conns[slot] = Some(conn);
        }
        self.last_resolve.remember(question, &reply, now);
        Ok(reply)
    }

    /// Resolves `address` for `sender`; `verify` sends request `verify`
    /// (address probes) instead of `resolve`.
    pub fn resolve(
        &mut self,
        verify: bool,
        sender: &[u8],
        address: &[u8],
    ) -> Result<ResolveReply, IpcError> {
        let now = Instant::now();
        if let Some(reply) = self.last_resolve.answer(verify, sender, address, now) {
            return Ok(reply);
        }
        let request = Self::resolve_request(verify, sender, address);
        let mut conn = self.checkout(0, now)?;
        let list = conn.stream.request(request.as_bytes())?;
        self.finish_resolve(0, conn, (verify, sender, address), &list, now)
    }

    /// Resolves up to [`RESOLVE_CONNECTIONS`] addresses at once, one
    /// request per connection (see the module documentation). Answers come
    /// in the order of `addresses`; `None` where that resolve failed or was
    /// not tried because an earlier one failed: the caller resolves those
    /// one at a time, with [`resolve`](Self::resolve)'s errors and retries.
    pub fn resolve_several(
        &mut self,
        verify: bool,
        sender: &[u8],
        addresses: &[&[u8]],
    ) -> Vec<Option<ResolveReply>> {
        enum Pending {
            Answered(ResolveReply),
            Sent(usize, Conn),
        }
        let now = Instant::now();
        let mut pending = Vec::with_capacity(addresses.len());
        for (slot, address) in addresses.iter().take(RESOLVE_CONNECTIONS).enumerate() {
            if let Some(reply) = self.last_resolve.answer(verify, sender, address, now) {
                pending.push(Pending::Answered(reply));
                continue;
            }
            let Ok(mut conn) = self.checkout(slot, now) else {
                break;
            };
            let request = Self::resolve_request(verify, sender, address);
            if conn.stream.send(request.as_bytes()).is_err() {
                break;
            }
            pending.push(Pending::Sent(slot, conn));
        }
        let mut answers = Vec::with_capacity(addresses.len());
        let mut failed = false;
        for p in pending {
            let answer = match p {
                Pending::Answered(reply) => Some(reply),
                // After a failure the rest is read anyway (so no reply is
                // left unread on a kept connection) but not trusted: the
                // caller retries from the first failure on, in order.
                Pending::Sent(slot, mut conn) => match conn.stream.read_list() {
                    Ok(list) => {
                        let question = (verify, sender, addresses[slot]);
                        self.finish_resolve(slot, conn, question, &list, now).ok()
                    }
                    Err(_) => None,
                },
            };
            failed |= answer.is_none();
            answers.push(if failed { None } else { answer });
        }
        answers.resize(addresses.len(), None);
        answers
    }

    /// Rewrites `address` under `rule` (`local` or `remote`).
    pub fn rewrite(&mut self, rule: &str, address: &[u8]) -> Result<Vec<u8>, IpcError> {
        let key: RewriteKey = (rule.to_owned(), address.to_vec());
        if let Some(c) = &self.rewrite_cache {
            if c.key == key && Instant::now() < c.expires {
                return Ok(c.value.clone());
            }
        }
        let mut w = AttrWriter::new();
        w.str("request", b"rewrite")
            .str("rule", rule.as_bytes())
            .str("address", address)
            .end();
        let list = self.exchange(w.as_bytes())?;
        let mut r = list.strict();
        let parsed = (|| {
            let server_flags = r.expect_int("flags")?;
            let result = r.expect_str("address")?.to_vec();
            r.finish()?;
            Ok((server_flags, result))
        })();
        let (server_flags, result) = parsed.map_err(|e| {
            self.conns[0] = None;
            self.bad_reply(e)
        })?;
        if server_flags != 0 {
            self.conns[0] = None;
        }
        self.rewrite_cache = Some(Cached {
            key,
            value: result.clone(),
            expires: Instant::now() + CACHE_TTL,
        });
        Ok(result)
    }
}
