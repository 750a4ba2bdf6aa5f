//! The `C` size record and the C-library number parsing Postfix applies to
//! record payloads.
//!
//! Job: turn payload bytes into numbers exactly as Postfix's `atol`,
//! `atoi`, `alldig` and `sscanf("%ld %ld %d %d %ld %d")` calls would, so
//! odd files are accepted or rejected the same way.
//!
//! Invariants: payloads are first cut at the first NUL byte (Postfix reads
//! them as C strings); white space is the ASCII set `isspace` accepts;
//! `long` values saturate on overflow as glibc's `strtol` does, and `int`
//! conversions then truncate to 32 bits as the C assignment does.
//!
//! Failure: `SizeRecord::parse` names which of qmgr's checks failed.
//!
//! Limits: behaviour for numbers that overflow an `int` follows glibc on
//! LP64; other C libraries may differ (Postfix's behaviour is then
//! undefined anyway).

/// The qmgr read flag "recipients are mixed with other records" (also the
/// value assumed when the size record has no flags field).
pub(crate) const READ_FLAG_MIXED_RCPT_OTHER: i32 = 1;
/// All read flags a size record may carry: MIXED plus the DSN NOTIFY
/// union shifted left by one.
const READ_FLAG_USER: i32 = 0x1f;

/// Fields of the `C` record (six `%15ld` numbers in current files).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct SizeRecord {
    /// Bytes from the data offset to the `X` record.
    pub data_size: i64,
    /// Offset of the first content record after `M`.
    pub data_offset: i64,
    /// Recipient count at creation (field 3).
    pub rcpt_count: i64,
    /// qmgr read flags (field 4; `READ_FLAG_MIXED_RCPT_OTHER` if absent).
    pub rflags: i32,
    /// Content length (field 5; equals `data_size` when absent or 0).
    pub content_length: i64,
    /// Send options (field 6): SMTPUTF8 bits, and from Postfix 3.10
    /// REQUIRETLS bits, as written; qmgr masks them by release when it reads.
    pub sendopts: i32,
}

/// Why a `C` payload is not acceptable to qmgr.
#[non_exhaustive]
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub(crate) enum SizeParseError {
    /// Data size or offset not positive, or negative content length.
    #[error("invalid size record")]
    Invalid,
    /// Flag bits outside [`READ_FLAG_USER`].
    #[error("invalid flags in size record")]
    InvalidFlags,
    /// Two fields, or none.
    #[error("weird size record")]
    Weird,
    /// Exactly one field: a pre-2001 queue file, which needs a full scan
    /// to find its data segment.
    #[error("old-style size record")]
    OldStyle {
        /// The single field.
        data_size: i64,
    },
}

impl SizeRecord {
    /// Parses and checks a `C` payload the way `qmgr_message_read` does.
    pub(crate) fn parse(payload: &[u8]) -> Result<SizeRecord, SizeParseError> {
        let (count, v) = scan_longs::<6>(c_str(payload));
        let rec = SizeRecord {
            data_size: v[0],
            data_offset: v[1],
            rcpt_count: i64::from(v[2] as i32),
            rflags: if count >= 4 {
                v[3] as i32
            } else {
                READ_FLAG_MIXED_RCPT_OTHER
            },
            content_length: v[4],
            sendopts: v[5] as i32,
        };
        match count {
            1 => return Err(SizeParseError::OldStyle { data_size: v[0] }),
            0 | 2 => return Err(SizeParseError::Weird),
            _ => {}
        }
        if rec.data_offset <= 0 || rec.data_size <= 0 {
            return Err(SizeParseError::Invalid);
        }
        if rec.rflags & !READ_FLAG_USER != 0 {
            return Err(SizeParseError::InvalidFlags);
        }
        rec.with_content_default()
    }

    /// Applies the Postfix < 2.4 rule: content length 0 means data size.
    pub(crate) fn with_content_default(mut self) -> Result<SizeRecord, SizeParseError> {
        if self.content_length == 0 {
            self.content_length = self.data_size;
        } else if self.content_length < 0 {
            return Err(SizeParseError::Invalid);
        }
        Ok(self)
    }

    /// The payload cleanup writes: six right-aligned 15-wide fields.
    #[cfg(any(test, feature = "writer"))]
    pub(crate) fn format(&self) -> Vec<u8> {
        format!(
            "{:15} {:15} {:15} {:15} {:15} {:15}",
            self.data_size,
            self.data_offset,
            self.rcpt_count,
            self.rflags,
            self.content_length,
            self.sendopts
        )
        .into_bytes()
    }
}

/// The payload as a C string: everything before the first NUL.
pub(crate) fn c_str(data: &[u8]) -> &[u8] {
    match data.iter().position(|&b| b == 0) {
        Some(n) => &data[..n],
        None => data,
    }
}

/// `isspace` in the C locale.
pub(crate) fn is_space(b: u8) -> bool {
    matches!(b, b' ' | b'\t' | b'\n' | 0x0b | 0x0c | b'\r')
}

/// `strtol(s, &end, 10)`: value (saturated) and bytes consumed, or `None`
/// when no digits were found.
pub(crate) fn strtol(s: &[u8]) -> Option<(i64, usize)> {
    let mut i = s.iter().take_while(|&&b| is_space(b)).count();
    let neg = match s.get(i) {
        Some(b'-') => {
            i += 1;
            true
        }
        Some(b'+') => {
            i += 1;
            false
        }
        _ => false,
    };
    let digits_start = i;
    let mut acc: i64 = 0;
    let mut overflow = false;
    while let Some(&b) = s.get(i).filter(|b| b.is_ascii_digit()) {
        let d = i64::from(b - b'0');
        // Accumulate negatively so that i64::MIN is reachable.
        match acc.checked_mul(10).and_then(|a| a.checked_sub(d)) {
            Some(a) => acc = a,
            None => overflow = true,
        }
        i += 1;
    }
    if i == digits_start {
        return None;
    }
    let val = match (overflow, neg) {
        (true, true) => i64::MIN,
        (true, false) => i64::MAX,
        (false, true) => acc,
        (false, false) => acc.checked_neg().unwrap_or(i64::MAX),
    };
    Some((val, i))
}

/// `atol`: 0 when there is no number.
pub(crate) fn atol(s: &[u8]) -> i64 {
    strtol(s).map_or(0, |(v, _)| v)
}

/// `atoi`: `strtol` truncated to an `int`.
pub(crate) fn atoi(s: &[u8]) -> i32 {
    atol(s) as i32
}

/// `alldig`: non-empty and only decimal digits.
pub(crate) fn alldig(s: &[u8]) -> bool {
    !s.is_empty() && s.iter().all(u8::is_ascii_digit)
}

/// `sscanf` with N integer conversions separated by spaces: how many
/// converted, and their values (unconverted ones are 0).
fn scan_longs<const N: usize>(s: &[u8]) -> (usize, [i64; N]) {
    let mut out = [0i64; N];
    let mut rest = s;
    for (n, slot) in out.iter_mut().enumerate() {
        match strtol(rest) {
            Some((v, used)) => {
                *slot = v;
                rest = &rest[used..];
            }
            None => return (n, out),
        }
    }
    (N, out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_the_worked_example() {
        let p = b"            320             402               2              20             320               0";
        assert_eq!(p.len(), 95);
        let r = SizeRecord::parse(p);
        assert_eq!(
            r,
            Ok(SizeRecord {
                data_size: 320,
                data_offset: 402,
                rcpt_count: 2,
                rflags: 20,
                content_length: 320,
                sendopts: 0
            })
        );
        assert_eq!(r.map(|r| r.format()).as_deref(), Ok(&p[..]));
    }

    #[test]
    fn short_and_odd_size_records() {
        let r = SizeRecord::parse(b"10 20 3");
        assert_eq!(r.map(|r| (r.rflags, r.content_length)), Ok((1, 10)));
        assert_eq!(SizeRecord::parse(b"10 20"), Err(SizeParseError::Weird));
        assert_eq!(SizeRecord::parse(b""), Err(SizeParseError::Weird));
        assert_eq!(SizeRecord::parse(b"x"), Err(SizeParseError::Weird));
        assert_eq!(
            SizeRecord::parse(b"55"),
            Err(SizeParseError::OldStyle { data_size: 55 })
        );
        assert_eq!(SizeRecord::parse(b"0 20 3"), Err(SizeParseError::Invalid));
        assert_eq!(
            SizeRecord::parse(b"10 20 3 32"),
            Err(SizeParseError::InvalidFlags)
        );
        assert_eq!(
            SizeRecord::parse(b"10 20 3 -1"),
            Err(SizeParseError::InvalidFlags)
        );
        assert_eq!(
            SizeRecord::parse(b"10 20 3 0 -5"),
            Err(SizeParseError::Invalid)
        );
        assert_eq!(
            SizeRecord::parse(b"10 20 3 0 7 4").map(|r| r.content_length),
            Ok(7)
        );
        // Text after a NUL is invisible to C.
        assert_eq!(SizeRecord::parse(b"10 20\0 3"), Err(SizeParseError::Weird));
    }

    #[test]
    fn c_number_parsing() {
        assert_eq!(strtol(b"  -12x"), Some((-12, 5)));
        assert_eq!(strtol(b"+7"), Some((7, 2)));
        assert_eq!(strtol(b"-"), None);
        assert_eq!(atol(b"99999999999999999999999"), i64::MAX);
        assert_eq!(atol(b"-99999999999999999999999"), i64::MIN);
        assert_eq!(atol(b"-9223372036854775808"), i64::MIN);
        assert_eq!(atoi(b"4294967297"), 1);
        assert!(alldig(b"0123"));
        assert!(!alldig(b""));
        assert!(!alldig(b"1 "));
    }
}
