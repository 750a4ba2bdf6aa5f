//! Queue IDs: validation, short/long forms, and the key for hash directories.
//!
//! Job: hold a file name that Postfix accepts as a queue file name
//! (`mail_queue_id_ok`: 1 to 255 characters of `[A-Za-z0-9_]`), tell short
//! IDs (`%05X` microseconds + hex inode) from long ones (base-52 seconds,
//! four base-52 microsecond characters, `z`, base-51 inode), and derive the
//! string whose first characters name the hash subdirectories.
//!
//! Invariant: a [`QueueId`] always satisfies `mail_queue_id_ok`, so it is
//! safe as a single path component and as a `dir_forest` input.
//!
//! Failure: [`QueueId::parse`] returns `None` for anything else; nothing
//! here can fail after construction. A long ID whose microsecond field does
//! not decode hashes as microsecond 0, as Postfix does.
//!
//! Limits: the fast-flush log names that share this name space (domain
//! names with `_`) are valid IDs too; they are simply never `is_long`.

use std::borrow::Cow;
use std::fmt;

/// Postfix's "safe" alphabet: digits and consonants, so IDs spell no words.
const SAFE_CHARS: &[u8; 52] = b"0123456789BCDFGHJKLMNPQRSTVWXYZbcdfghjklmnpqrstvwxyz";

/// Maximum queue ID length (Postfix's `VALID_HOSTNAME_LEN`).
const MAX_LEN: usize = 255;

/// Number of time characters before the `z` in a long ID.
const LONG_TIME_PAD: usize = 10;

/// A validated queue ID (also a valid queue file name).
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct QueueId(String);

impl QueueId {
    /// Accepts `s` if Postfix's `mail_queue_id_ok` would.
    pub fn parse(s: &str) -> Option<QueueId> {
        if s.is_empty()
            || s.len() > MAX_LEN
            || !s.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_')
        {
            return None;
        }
        Some(QueueId(s.to_owned()))
    }

    /// Builds a short ID the way `mail_queue_enter` does: `%05X` of the
    /// microseconds followed by the inode number in upper-case hex.
    #[cfg(any(test, feature = "writer"))]
    pub(crate) fn short(usec: u32, inode: u64) -> QueueId {
        QueueId(format!("{usec:05X}{inode:X}"))
    }

    /// Builds a long ID: base-52 seconds (at least six characters), exactly
    /// four base-52 microsecond characters, `z`, base-51 inode.
    #[cfg(test)]
    pub(crate) fn long(sec: u64, usec: u32, inode: u64) -> QueueId {
        let mut s = safe_encode(sec, 52, 6);
        s.push_str(&safe_encode(u64::from(usec), 52, 4));
        s.push('z');
        s.push_str(&safe_encode(inode, 51, 0));
        QueueId(s)
    }

    /// The ID text.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// True for the long form: the last `z` follows at least ten characters.
    #[cfg(test)]
    fn is_long(&self) -> bool {
        self.long_separator().is_some()
    }

    fn long_separator(&self) -> Option<usize> {
        self.0.rfind('z').filter(|&i| i >= LONG_TIME_PAD)
    }

    /// The string whose leading characters name the hash directories: the
    /// ID itself when short; for a long ID, its microseconds re-encoded as
    /// `%05X`, so both forms of an ID created in the same microsecond land
    /// in the same directory.
    #[cfg(test)]
    fn hash_key(&self) -> String {
        self.hash_key_cow().into_owned()
    }

    /// [`Self::hash_key`] without copying a short ID.
    pub(crate) fn hash_key_cow(&self) -> Cow<'_, str> {
        match self.long_separator() {
            None => Cow::Borrowed(&self.0),
            Some(z) => {
                let usec = safe_decode(&self.0.as_bytes()[z - 4..z], 52).unwrap_or(0);
                // Postfix formats through an `int`; the value is < 52^4.
                Cow::Owned(format!("{:05X}", usec as u32))
            }
        }
    }
}

impl fmt::Display for QueueId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl AsRef<str> for QueueId {
    fn as_ref(&self) -> &str {
        &self.0
    }
}

#[cfg(test)]
fn safe_encode(mut val: u64, base: u64, pad: usize) -> String {
    let mut rev = Vec::new();
    while val != 0 {
        // `val % base` < 52, a valid index.
        rev.push(SAFE_CHARS[(val % base) as usize]);
        val /= base;
    }
    while rev.len() < pad {
        rev.push(b'0');
    }
    rev.iter().rev().map(|&b| char::from(b)).collect()
}

/// Decodes a whole string in the safe alphabet; `None` if any character is
/// outside the first `base` symbols or the value overflows.
fn safe_decode(s: &[u8], base: u64) -> Option<u64> {
    if s.is_empty() {
        return None;
    }
    s.iter().try_fold(0u64, |acc, &c| {
        let digit = SAFE_CHARS.iter().position(|&x| x == c)? as u64;
        if digit >= base {
            return None;
        }
        acc.checked_mul(base)?.checked_add(digit)
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn validity() {
        assert!(QueueId::parse("154E7990181").is_some());
        assert!(QueueId::parse("example_com").is_some());
        assert!(QueueId::parse("").is_none());
        assert!(QueueId::parse("a.b").is_none());
        assert!(QueueId::parse("../x").is_none());
        assert!(QueueId::parse(&"A".repeat(255)).is_some());
        assert!(QueueId::parse(&"A".repeat(256)).is_none());
    }

    #[test]
    fn short_ids_hash_on_themselves() {
        let id = QueueId::short(0x154E7, 0x990181);
        assert_eq!(id.as_str(), "154E7990181");
        assert!(!id.is_long());
        assert_eq!(id.hash_key(), "154E7990181");
    }

    #[test]
    fn long_ids_hash_on_microseconds() {
        let id = QueueId::long(1_795_960_876, 80_096, 12345);
        assert!(id.is_long());
        assert_eq!(id.hash_key(), "138E0");
        // A 'z' too early is not a separator.
        let id = QueueId::parse("ABCzDEF").map(|i| i.is_long());
        assert_eq!(id, Some(false));
        // Undecodable microseconds (vowels) hash as 0.
        let id = QueueId::parse("4BbcdfAAAAzX").map(|i| i.hash_key());
        assert_eq!(id.as_deref(), Some("00000"));
    }

    proptest! {
        #[test]
        fn long_id_round_trip(sec in 0u64..(1u64 << 40), usec in 0u32..1_000_000, ino in any::<u64>()) {
            let id = QueueId::long(sec, usec, ino);
            prop_assert!(QueueId::parse(id.as_str()).is_some());
            prop_assert!(id.is_long());
            prop_assert_eq!(id.hash_key(), format!("{usec:05X}"));
            let z = id.as_str().rfind('z').unwrap_or(0);
            prop_assert_eq!(safe_decode(&id.as_str().as_bytes()[z + 1..], 51), Some(ino).filter(|&i| i != 0));
        }
    }
}
