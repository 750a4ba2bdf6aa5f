//! Names and addresses as Postfix has them: bytes, not text.
//!
//! Transport names, next hops, queue names, addresses and the reasons
//! that become `retry` next hops come from trivial-rewrite, the queue
//! file or a delivery agent, and may hold any bytes: an 8-bit next hop
//! from a transport map, a Latin-1 local part. Postfix passes them on as
//! they are and names queues after them byte for byte, so the scheduler
//! does the same. [`ByteString`] keeps the bytes exactly; only its
//! `Debug` and `Display` render them as text, for people.
//!
//! Invariant: equality, ordering and hashing are those of the bytes, so
//! two names differing in one byte are two names.

use std::borrow::Borrow;
use std::fmt;
use std::ops::Deref;

/// Bytes that name something (see the module documentation).
#[derive(Clone, Default, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ByteString(Box<[u8]>);

impl Deref for ByteString {
    type Target = [u8];

    fn deref(&self) -> &[u8] {
        &self.0
    }
}

impl AsRef<[u8]> for ByteString {
    fn as_ref(&self) -> &[u8] {
        &self.0
    }
}

impl Borrow<[u8]> for ByteString {
    fn borrow(&self) -> &[u8] {
        &self.0
    }
}

impl From<&[u8]> for ByteString {
    fn from(bytes: &[u8]) -> Self {
        ByteString(bytes.into())
    }
}

impl From<Vec<u8>> for ByteString {
    fn from(bytes: Vec<u8>) -> Self {
        ByteString(bytes.into_boxed_slice())
    }
}

impl From<&str> for ByteString {
    fn from(text: &str) -> Self {
        ByteString::from(text.as_bytes())
    }
}

impl From<String> for ByteString {
    fn from(text: String) -> Self {
        ByteString::from(text.into_bytes())
    }
}

impl PartialEq<[u8]> for ByteString {
    fn eq(&self, other: &[u8]) -> bool {
        *self.0 == *other
    }
}

impl PartialEq<str> for ByteString {
    fn eq(&self, other: &str) -> bool {
        *self.0 == *other.as_bytes()
    }
}

impl PartialEq<&str> for ByteString {
    fn eq(&self, other: &&str) -> bool {
        *self.0 == *other.as_bytes()
    }
}

/// Quoted like a `str`, with each byte that is not part of valid UTF-8
/// shown as `\xNN`, so that different bytes never look alike.
impl fmt::Debug for ByteString {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("\"")?;
        for chunk in self.0.utf8_chunks() {
            for c in chunk.valid().chars() {
                write!(f, "{}", c.escape_debug())?;
            }
            for b in chunk.invalid() {
                write!(f, "\\x{b:02x}")?;
            }
        }
        f.write_str("\"")
    }
}

/// As text, with U+FFFD for bytes that are not valid UTF-8: for log
/// lines and messages only, never for what names or routes mail.
impl fmt::Display for ByteString {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for chunk in self.0.utf8_chunks() {
            f.write_str(chunk.valid())?;
            if !chunk.invalid().is_empty() {
                f.write_str("\u{fffd}")?;
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shows_bytes_apart_but_keeps_them_exact() {
        let latin1 = ByteString::from(&b"b\xe4d.example"[..]);
        let other = ByteString::from(&b"b\xe5d.example"[..]);
        assert_ne!(latin1, other);
        assert_eq!(&*latin1, b"b\xe4d.example");
        assert_eq!(format!("{latin1:?}"), r#""b\xe4d.example""#);
        assert_eq!(format!("{other:?}"), r#""b\xe5d.example""#);
        assert_eq!(latin1.to_string(), "b\u{fffd}d.example");
        let utf8 = ByteString::from("\u{c4}x \"q\"");
        assert_eq!(format!("{utf8:?}"), r#""Äx \"q\"""#);
        assert_eq!(utf8.to_string(), "\u{c4}x \"q\"");
        assert_eq!(ByteString::from("a"), "a");
    }
}
