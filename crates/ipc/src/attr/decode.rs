//! Decoder for attribute lists.
//!
//! Job: split bytes into `name\0value\0` items and whole lists, then let the
//! caller pull attributes in the exact order Postfix's STRICT scans demand.
//!
//! Invariants: decoding never panics on any input; every name, value, list
//! size and attribute count is capped (see the constants in the parent
//! module).  "Need more bytes" is `Ok(None)`; anything malformed is an
//! [`AttrError`] naming the offset.  The decoder borrows nothing between
//! calls except its own progress counter, so it can be fed a growing buffer.
//!
//! Limits: numbers must be plain unsigned decimal (no sign, no blanks), a
//! little stricter than Postfix's `sscanf("%u")`, which no Postfix sender
//! ever needs.

use base64::Engine as _;

use super::{MAX_LIST_ATTRS, MAX_LIST_BYTES, MAX_NAME_LEN, MAX_VALUE_LEN};
use crate::error::{AttrError, ReadContext};

/// One decoded item.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Item<'a> {
    /// A `name\0value\0` pair.
    Attr {
        /// The name, without NUL.
        name: &'a [u8],
        /// The value, without NUL.
        value: &'a [u8],
    },
    /// The list terminator (an empty name).
    End,
}

/// Finds the NUL ending a string that starts at `buf[0]`, honouring `limit`.
/// `Ok(None)` means the string is incomplete but may still become valid.
fn find_nul(buf: &[u8], limit: usize) -> Result<Option<usize>, ()> {
    let window = &buf[..buf.len().min(limit + 1)];
    match window.iter().position(|&b| b == 0) {
        Some(n) => Ok(Some(n)),
        None if buf.len() > limit => Err(()),
        None => Ok(None),
    }
}

/// Decodes one item at the start of `buf`; offsets in errors are relative
/// to `base`.
fn decode_item_at(buf: &[u8], base: usize) -> Result<Option<(Item<'_>, usize)>, AttrError> {
    let name_len = match find_nul(buf, MAX_NAME_LEN) {
        Ok(Some(n)) => n,
        Ok(None) => return Ok(None),
        Err(()) => {
            return Err(AttrError::NameTooLong {
                offset: base,
                limit: MAX_NAME_LEN,
            })
        }
    };
    if name_len == 0 {
        return Ok(Some((Item::End, 1)));
    }
    let value_start = name_len + 1;
    let value_len = match find_nul(&buf[value_start..], MAX_VALUE_LEN) {
        Ok(Some(n)) => n,
        Ok(None) => return Ok(None),
        Err(()) => {
            return Err(AttrError::ValueTooLong {
                offset: base + value_start,
                limit: MAX_VALUE_LEN,
            })
        }
    };
    let item = Item::Attr {
        name: &buf[..name_len],
        value: &buf[value_start..value_start + value_len],
    };
    Ok(Some((item, value_start + value_len + 1)))
}

/// Decodes one item at the start of `buf`.  Returns the item and the number
/// of bytes it used, `Ok(None)` when more input is needed.
pub fn decode_item(buf: &[u8]) -> Result<Option<(Item<'_>, usize)>, AttrError> {
    decode_item_at(buf, 0)
}

/// Spans a new list makes room for at its first attribute.
const SPANS_AT_ONCE: usize = 16;

/// Incremental decoder for one list at a time.  Feed it the unconsumed
/// input (starting where the current list starts) each time more arrives;
/// it remembers how far it got so total work stays linear.
#[derive(Debug, Default, Clone)]
pub struct ListDecoder {
    pos: usize,
    /// Where each name and value of the list so far lies in the input.
    spans: Vec<Span>,
}

/// Byte ranges of one attribute's name and value in [`AttrList::bytes`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Span {
    name: (u32, u32),
    value: (u32, u32),
}

impl Span {
    fn name<'a>(&self, bytes: &'a [u8]) -> &'a [u8] {
        &bytes[self.name.0 as usize..self.name.1 as usize]
    }

    fn value<'a>(&self, bytes: &'a [u8]) -> &'a [u8] {
        &bytes[self.value.0 as usize..self.value.1 as usize]
    }
}

impl ListDecoder {
    /// A decoder at the start of a list.
    pub fn new() -> Self {
        Self::default()
    }

    /// Continues decoding.  `buf` must begin at the same byte as on the
    /// previous calls for this list and may only have grown; `base` is the
    /// stream offset of `buf[0]`, used in error offsets.  Returns the list
    /// and the bytes it used once its terminator has arrived.
    pub fn feed(
        &mut self,
        buf: &[u8],
        base: usize,
    ) -> Result<Option<(AttrList, usize)>, AttrError> {
        loop {
            let rest = buf.get(self.pos..).unwrap_or_default();
            let Some((item, used)) = decode_item_at(rest, base + self.pos)? else {
                return Ok(None);
            };
            if self.pos + used > MAX_LIST_BYTES {
                return Err(AttrError::ListTooLong {
                    offset: base,
                    limit: MAX_LIST_BYTES,
                });
            }
            match item {
                Item::End => {
                    let consumed = self.pos + used;
                    // One copy of the whole list; names and values are
                    // spans of it (a reply has a dozen attributes, and two
                    // allocations each showed up in profiles).
                    let bytes = buf[..self.pos].to_vec();
                    self.pos = 0;
                    let spans = std::mem::take(&mut self.spans);
                    return Ok(Some((AttrList { bytes, spans }, consumed)));
                }
                Item::Attr { name, value } => {
                    if self.spans.len() >= MAX_LIST_ATTRS {
                        return Err(AttrError::TooManyAttributes {
                            offset: base + self.pos,
                            limit: MAX_LIST_ATTRS,
                        });
                    }
                    // The list is capped at MAX_LIST_BYTES, far below
                    // u32::MAX, so the offsets fit.
                    let at = |off: usize| u32::try_from(self.pos + off).unwrap_or(u32::MAX);
                    let value_start = name.len() + 1;
                    if self.spans.capacity() == 0 {
                        // Room for a delivery reply's dozen attributes at
                        // once, rather than growing through 4 and 8.
                        self.spans.reserve_exact(SPANS_AT_ONCE);
                    }
                    self.spans.push(Span {
                        name: (at(0), at(name.len())),
                        value: (at(value_start), at(value_start + value.len())),
                    });
                    self.pos += used;
                }
            }
        }
    }

    /// After EOF: what was due, and whether part of it had arrived.  Tells
    /// "premature end-of-input" (nothing of the string) from "unexpected
    /// end-of-input" (a truncated string), as Postfix does.
    pub fn eof_context(&self, buf: &[u8]) -> (ReadContext, bool) {
        let rest = buf.get(self.pos..).unwrap_or_default();
        match rest.iter().position(|&b| b == 0) {
            None => (ReadContext::Name, !rest.is_empty()),
            Some(n) => (ReadContext::Value, rest.len() > n + 1),
        }
    }

    /// True when nothing of the current list has been decoded yet.
    pub(crate) fn at_list_start(&self) -> bool {
        self.pos == 0
    }
}

/// One received attribute list, up to (not including) its terminator.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct AttrList {
    /// The list's bytes as received (`name\0value\0` items).
    bytes: Vec<u8>,
    spans: Vec<Span>,
}

impl AttrList {
    /// Builds a list from pairs (for tests and fakes).
    #[cfg(test)]
    fn new(items: Vec<(Vec<u8>, Vec<u8>)>) -> Self {
        let mut bytes = Vec::new();
        let mut spans = Vec::with_capacity(items.len());
        let at = |n: usize| u32::try_from(n).unwrap_or(u32::MAX);
        for (name, value) in items {
            let n0 = bytes.len();
            bytes.extend_from_slice(&name);
            let n1 = bytes.len();
            bytes.push(0);
            let v0 = bytes.len();
            bytes.extend_from_slice(&value);
            let v1 = bytes.len();
            bytes.push(0);
            spans.push(Span {
                name: (at(n0), at(n1)),
                value: (at(v0), at(v1)),
            });
        }
        Self { bytes, spans }
    }

    /// Decodes exactly one complete list from `buf`; `Ok(None)` if it is
    /// not complete yet.
    #[cfg(test)]
    pub(crate) fn decode(buf: &[u8]) -> Result<Option<(AttrList, usize)>, AttrError> {
        ListDecoder::new().feed(buf, 0)
    }

    /// The (name, value) pairs in arrival order.
    pub(crate) fn items(&self) -> impl Iterator<Item = (&[u8], &[u8])> + '_ {
        self.spans
            .iter()
            .map(|s| (s.name(&self.bytes), s.value(&self.bytes)))
    }

    /// The first value named `name`, for non-strict readers.
    #[cfg(test)]
    pub(crate) fn get(&self, name: &str) -> Option<&[u8]> {
        self.items()
            .find(|(n, _)| *n == name.as_bytes())
            .map(|(_, v)| v)
    }

    /// The `i`th pair.
    fn pair(&self, i: usize) -> Option<(&[u8], &[u8])> {
        self.spans
            .get(i)
            .map(|s| (s.name(&self.bytes), s.value(&self.bytes)))
    }

    /// A reader enforcing Postfix's STRICT order (no missing, no extra).
    pub fn strict(&self) -> StrictReader<'_> {
        StrictReader {
            list: self,
            next: 0,
        }
    }
}

/// Parses plain unsigned decimal no larger than `max`.
fn parse_unsigned(value: &[u8], max: u64) -> Option<u64> {
    if value.is_empty() || value.len() > 20 {
        return None;
    }
    let mut n: u64 = 0;
    for &b in value {
        if !b.is_ascii_digit() {
            return None;
        }
        n = n.checked_mul(10)?.checked_add(u64::from(b - b'0'))?;
    }
    (n <= max).then_some(n)
}

/// Pulls attributes from an [`AttrList`] in a fixed order.
#[derive(Debug, Clone)]
pub struct StrictReader<'a> {
    list: &'a AttrList,
    next: usize,
}

impl<'a> StrictReader<'a> {
    fn take(&mut self, name: &'static str) -> Result<&'a [u8], AttrError> {
        match self.list.pair(self.next) {
            None => Err(AttrError::Missing { name }),
            Some((n, v)) if n == name.as_bytes() => {
                self.next += 1;
                Ok(v)
            }
            Some((n, _)) => Err(AttrError::Unexpected {
                got: n.to_vec(),
                expecting: name,
            }),
        }
    }

    /// The next attribute, which must be `name`, as raw bytes.
    pub(crate) fn expect_str(&mut self, name: &'static str) -> Result<&'a [u8], AttrError> {
        self.take(name)
    }

    /// The next attribute as an int: unsigned decimal up to `u32::MAX`,
    /// reinterpreted as `i32` (so `4294967295` is `-1`).
    pub fn expect_int(&mut self, name: &'static str) -> Result<i32, AttrError> {
        let value = self.take(name)?;
        match parse_unsigned(value, u64::from(u32::MAX)) {
            Some(n) => Ok(n as u32 as i32),
            None => Err(AttrError::MalformedNumber {
                name,
                value: value.to_vec(),
            }),
        }
    }

    /// The next attribute as a long: unsigned decimal up to `u64::MAX`,
    /// reinterpreted as `i64`.
    pub fn expect_long(&mut self, name: &'static str) -> Result<i64, AttrError> {
        let value = self.take(name)?;
        match parse_unsigned(value, u64::MAX) {
            Some(n) => Ok(n as i64),
            None => Err(AttrError::MalformedNumber {
                name,
                value: value.to_vec(),
            }),
        }
    }

    /// The next attribute as base64-decoded data.
    pub fn expect_data(&mut self, name: &'static str) -> Result<Vec<u8>, AttrError> {
        let value = self.take(name)?;
        base64::engine::general_purpose::STANDARD
            .decode(value)
            .map_err(|_| AttrError::MalformedBase64 {
                name,
                value: value.to_vec(),
            })
    }

    /// The next attribute, whose value must equal `expected` (a handshake).
    pub(crate) fn expect_streq(
        &mut self,
        name: &'static str,
        expected: &str,
    ) -> Result<(), AttrError> {
        let value = self.take(name)?;
        if value == expected.as_bytes() {
            Ok(())
        } else {
            Err(AttrError::ValueMismatch {
                name,
                got: value.to_vec(),
                expected: expected.to_owned(),
            })
        }
    }

    /// Succeeds only when every attribute has been consumed.
    pub fn finish(&self) -> Result<(), AttrError> {
        match self.list.pair(self.next) {
            None => Ok(()),
            Some((n, _)) => Err(AttrError::Unexpected {
                got: n.to_vec(),
                expecting: "(list terminator)",
            }),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn item_needs_more_then_decodes() {
        assert_eq!(decode_item(b"").unwrap(), None);
        assert_eq!(decode_item(b"status").unwrap(), None);
        assert_eq!(decode_item(b"status\0").unwrap(), None);
        assert_eq!(decode_item(b"status\x000").unwrap(), None);
        let (item, used) = decode_item(b"status\x000\0rest").unwrap().unwrap();
        assert_eq!(
            item,
            Item::Attr {
                name: b"status",
                value: b"0"
            }
        );
        assert_eq!(used, 9);
        assert_eq!(decode_item(b"\0x").unwrap(), Some((Item::End, 1)));
    }

    #[test]
    fn overlong_name_and_value_are_errors_with_offsets() {
        let long = vec![b'a'; MAX_NAME_LEN + 1];
        assert_eq!(
            decode_item(&long),
            Err(AttrError::NameTooLong {
                offset: 0,
                limit: MAX_NAME_LEN
            })
        );
        let mut v = b"n\0".to_vec();
        v.extend(vec![b'x'; MAX_VALUE_LEN + 1]);
        assert_eq!(
            decode_item(&v),
            Err(AttrError::ValueTooLong {
                offset: 2,
                limit: MAX_VALUE_LEN
            })
        );
    }

    #[test]
    fn numbers_are_strict() {
        let list = AttrList::new(vec![
            (b"a".to_vec(), b"4294967295".to_vec()),
            (b"b".to_vec(), b"4294967296".to_vec()),
        ]);
        let mut r = list.strict();
        assert_eq!(r.expect_int("a"), Ok(-1));
        assert!(matches!(
            r.expect_int("b"),
            Err(AttrError::MalformedNumber { name: "b", .. })
        ));
        for bad in [&b""[..], b"-1", b" 1", b"1x", b"+1"] {
            let l = AttrList::new(vec![(b"n".to_vec(), bad.to_vec())]);
            assert!(l.strict().expect_long("n").is_err(), "{bad:?}");
        }
        let l = AttrList::new(vec![(b"n".to_vec(), b"18446744073709551615".to_vec())]);
        assert_eq!(l.strict().expect_long("n"), Ok(-1));
    }

    #[test]
    fn strict_order_missing_and_extra() {
        let (list, _) = AttrList::decode(b"status\x000\0extra\0x\0\0")
            .unwrap()
            .unwrap();
        let mut r = list.strict();
        assert_eq!(
            r.clone().expect_str("reason"),
            Err(AttrError::Unexpected {
                got: b"status".to_vec(),
                expecting: "reason"
            })
        );
        assert_eq!(r.expect_int("status"), Ok(0));
        let err = r.finish().unwrap_err();
        assert_eq!(
            err.describe("private/bounce socket"),
            "unexpected attribute extra from private/bounce socket (expecting: (list terminator))"
        );
        assert_eq!(r.expect_str("extra"), Ok(&b"x"[..]));
        assert_eq!(
            r.expect_str("more"),
            Err(AttrError::Missing { name: "more" })
        );
        r.finish().unwrap();
    }

    #[test]
    fn streq_and_base64() {
        let list = AttrList::new(vec![
            (b"protocol".to_vec(), b"other".to_vec()),
            (b"time".to_vec(), b"YWI".to_vec()),
        ]);
        let mut r = list.strict();
        let e = r
            .expect_streq("protocol", "delivery_request_protocol")
            .unwrap_err();
        assert_eq!(
            e.describe("private/smtp socket"),
            "unexpected protocol other from private/smtp socket (expected: delivery_request_protocol)"
        );
        assert!(matches!(
            r.expect_data("time"),
            Err(AttrError::MalformedBase64 { .. })
        ));
    }

    #[test]
    fn too_many_attributes() {
        let mut buf = Vec::new();
        for _ in 0..=MAX_LIST_ATTRS {
            buf.extend_from_slice(b"a\0b\0");
        }
        buf.push(0);
        assert!(matches!(
            AttrList::decode(&buf),
            Err(AttrError::TooManyAttributes { offset, .. }) if offset == 4 * MAX_LIST_ATTRS
        ));
    }

    #[test]
    fn eof_context_distinguishes_partial_strings() {
        let mut d = ListDecoder::new();
        let buf = b"status\x000\0rea";
        assert!(d.feed(buf, 0).unwrap().is_none());
        assert_eq!(d.eof_context(buf), (ReadContext::Name, true));
        assert_eq!(d.eof_context(b"status\x000\0"), (ReadContext::Name, false));
        assert_eq!(
            d.eof_context(b"status\x000\0reason\0"),
            (ReadContext::Value, false)
        );
        assert_eq!(
            d.eof_context(b"status\x000\0reason\0x"),
            (ReadContext::Value, true)
        );
    }
}
