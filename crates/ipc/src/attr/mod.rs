//! Postfix's default attribute protocol ("attr_print0"/"attr_scan0").
//!
//! Job: frame requests and replies as `name\0value\0` pairs, a list ending
//! in one extra `\0` (an empty name).  Numbers travel as unsigned decimal
//! (`-1` is `4294967295`), binary data as padded base64.
//!
//! Invariants: names never contain NUL; string values the encoder writes
//! must not contain NUL either (Postfix strings cannot) — an embedded NUL is
//! cut off there rather than corrupting the framing.  The decoder is strict,
//! incremental and bounded: short input is `Ok(None)`, bad input is an
//! [`AttrError`](crate::error::AttrError) naming the offset.
//!
//! Only the decoder is public (the fuzz target drives it); the encoder
//! serves this crate's clients.
//!
//! Limits: hash tables (`{`/`}` groups) are not given special meaning; no
//! service qmgr talks to sends them.  Postfix documents 4 × line_limit for
//! strings but does not enforce it; the caps below are ours.

mod decode;
mod encode;

pub use decode::{decode_item, AttrList, Item, ListDecoder, StrictReader};
pub(crate) use encode::AttrWriter;

/// Longest accepted attribute name (bytes, without the NUL).
const MAX_NAME_LEN: usize = 4096;
/// Longest accepted attribute value (bytes, without the NUL).
const MAX_VALUE_LEN: usize = 1 << 20;
/// Most attributes accepted in one list (Postfix's hash limit is 1024 too).
const MAX_LIST_ATTRS: usize = 1024;
/// Largest accepted list, all framing included.
const MAX_LIST_BYTES: usize = 4 << 20;
