//! trivial-rewrite client (`private/rewrite`): resolve and rewrite.
//!
//! Job: ask trivial-rewrite(8) where a recipient goes (transport, nexthop,
//! rewritten recipient, flags), or to rewrite an address under a rule.
//!
//! Invariants: like Postfix's clnt_stream, one persistent connection is
//! kept and its announcement checked once; it is closed when the server's
//! leading `flags` is non-zero, after `idle` without use, after `ttl` of
//! age, and after any error.  One-entry caches (30 s, keyed on request
//! kind + sender + address, resp. rule + address) spare repeated lookups;
//! an empty address is never served from the resolve cache.
//!
//! How it fails: one attempt per call.  Errors drop the connection; the
//! caller retries forever with a one-second pause, warning "problem talking
//! to service rewrite" (see [`IpcError::quiet_on_first_attempt`]).  An empty
//! transport, or an empty recipient for a non-empty address, is an error
//! too, because Postfix retries those as well.

use std::path::PathBuf;
use std::time::Duration;

use tokio::time::Instant;

use crate::attr::{AttrList, AttrWriter};
use crate::error::IpcError;
use crate::stream::AttrStream;

/// Protocol trivial-rewrite announces.
pub const PROTOCOL: &str = "trivial_rewrite_protocol";

/// How long a cached answer stays valid.
const CACHE_TTL: Duration = Duration::from_secs(30);

/// Resolve reply flags and address classes (`RESOLVE_FLAG_*`, `RESOLVE_CLASS_*`).
pub mod resolve_flags {
    /// Final delivery.
    pub const FINAL: i32 = 1 << 0;
    /// Routed destination.
    pub const ROUTED: i32 = 1 << 1;
    /// Bad destination syntax.
    pub const ERROR: i32 = 1 << 2;
    /// The lookup failed (try again later).
    pub const FAIL: i32 = 1 << 3;
    /// mydestination / inet_interfaces.
    pub const CLASS_LOCAL: i32 = 1 << 8;
    /// virtual_alias_domains.
    pub const CLASS_ALIAS: i32 = 1 << 9;
    /// virtual_mailbox_domains.
    pub const CLASS_VIRTUAL: i32 = 1 << 10;
    /// relay_domains.
    pub const CLASS_RELAY: i32 = 1 << 11;
    /// Everything else.
    pub const CLASS_DEFAULT: i32 = 1 << 12;
    /// Classes with final delivery here.
    pub const CLASS_FINAL: i32 = CLASS_LOCAL | CLASS_ALIAS | CLASS_VIRTUAL;
    /// All class bits.
    pub const CLASS_MASK: i32 = CLASS_FINAL | CLASS_RELAY | CLASS_DEFAULT;
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
    stream: AttrStream,
    created: Instant,
    last_used: Instant,
}

#[derive(Debug)]
struct Cached<K, V> {
    key: K,
    value: V,
    expires: Instant,
}

type ResolveKey = (bool, Vec<u8>, Vec<u8>);
type RewriteKey = (String, Vec<u8>);

/// A persistent client of `private/rewrite`.
#[derive(Debug)]
pub struct RewriteClient {
    path: PathBuf,
    io_timeout: Duration,
    idle: Duration,
    ttl: Duration,
    conn: Option<Conn>,
    resolve_cache: Option<Cached<ResolveKey, ResolveReply>>,
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
            conn: None,
            resolve_cache: None,
            rewrite_cache: None,
        }
    }

    /// True while a connection is held.
    pub fn is_connected(&self) -> bool {
        self.conn.is_some()
    }

    /// Closes the connection (the next call reconnects).
    pub fn disconnect(&mut self) {
        self.conn = None;
    }

    /// Forgets cached answers.
    pub fn clear_cache(&mut self) {
        self.resolve_cache = None;
        self.rewrite_cache = None;
    }

    /// One request/reply on the persistent connection, reconnecting first
    /// when it is idle or old; any error drops the connection.
    async fn exchange(&mut self, request: &[u8]) -> Result<AttrList, IpcError> {
        let now = Instant::now();
        if let Some(c) = &self.conn {
            if now.duration_since(c.last_used) >= self.idle
                || now.duration_since(c.created) >= self.ttl
            {
                self.conn = None;
            }
        }
        let mut conn = match self.conn.take() {
            Some(c) => c,
            None => {
                let mut stream = AttrStream::connect(&self.path, self.io_timeout).await?;
                stream.expect_announcement(PROTOCOL).await?;
                Conn {
                    stream,
                    created: now,
                    last_used: now,
                }
            }
        };
        // On error the connection is simply not put back.
        let list = conn.stream.request(request).await?;
        conn.last_used = Instant::now();
        self.conn = Some(conn);
        Ok(list)
    }

    /// Wraps a reply-decoding error and drops the connection.
    fn bad_reply(&mut self, error: crate::error::AttrError) -> IpcError {
        let service = crate::stream::service_name(&self.path);
        self.conn = None;
        IpcError::Attr { service, error }
    }

    /// Resolves `address` for `sender`; `verify` sends request `verify`
    /// (address probes) instead of `resolve`.
    pub async fn resolve(
        &mut self,
        verify: bool,
        sender: &[u8],
        address: &[u8],
    ) -> Result<ResolveReply, IpcError> {
        let key: ResolveKey = (verify, sender.to_vec(), address.to_vec());
        if let Some(c) = &self.resolve_cache {
            if !address.is_empty() && c.key == key && Instant::now() < c.expires {
                return Ok(c.value.clone());
            }
        }
        let mut w = AttrWriter::new();
        w.str("request", if verify { b"verify" } else { b"resolve" })
            .str("sender", sender)
            .str("address", address)
            .end();
        let list = self.exchange(w.as_bytes()).await?;
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
        if server_flags != 0 {
            self.conn = None;
        }
        if reply.transport.is_empty() {
            self.conn = None;
            return Err(IpcError::NullTransport {
                address: address.to_vec(),
            });
        }
        if reply.recipient.is_empty() && !address.is_empty() {
            self.conn = None;
            return Err(IpcError::NullRecipient {
                address: address.to_vec(),
            });
        }
        self.resolve_cache = Some(Cached {
            key,
            value: reply.clone(),
            expires: Instant::now() + CACHE_TTL,
        });
        Ok(reply)
    }

    /// Rewrites `address` under `rule` (`local` or `remote`).
    pub async fn rewrite(&mut self, rule: &str, address: &[u8]) -> Result<Vec<u8>, IpcError> {
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
        let list = self.exchange(w.as_bytes()).await?;
        let mut r = list.strict();
        let parsed = (|| {
            let server_flags = r.expect_int("flags")?;
            let result = r.expect_str("address")?.to_vec();
            r.finish()?;
            Ok((server_flags, result))
        })();
        let (server_flags, result) = parsed.map_err(|e| self.bad_reply(e))?;
        if server_flags != 0 {
            self.conn = None;
        }
        self.rewrite_cache = Some(Cached {
            key,
            value: result.clone(),
            expires: Instant::now() + CACHE_TTL,
        });
        Ok(result)
    }
}
