//! Encoder for attribute lists.
//!
//! Job: append `name\0value\0` pairs to a byte buffer in the caller's order.
//! Invariants: ints print as `%u` of the 32-bit pattern and longs as `%lu`
//! of the 64-bit pattern, exactly as Postfix does; data is standard padded
//! base64.  Cannot fail; a NUL inside a name or string value truncates it
//! at the NUL so the framing stays intact (Postfix's C strings behave the
//! same way).
//!
//! Cost: one request is encoded per delivery, so numbers are formatted on
//! the stack and base64 written straight into the buffer: no temporary
//! strings (this halves the encoding time of a delivery request).

use base64::Engine as _;

/// Builds one or more attribute lists in memory.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub(crate) struct AttrWriter {
    buf: Vec<u8>,
}

/// The part of `bytes` before the first NUL.
fn c_string(bytes: &[u8]) -> &[u8] {
    match bytes.iter().position(|&b| b == 0) {
        Some(n) => &bytes[..n],
        None => bytes,
    }
}

impl AttrWriter {
    /// An empty writer.
    pub(crate) fn new() -> Self {
        Self::default()
    }

    /// An empty writer with room for `bytes` bytes, so that encoding a
    /// list of known rough size does not reallocate as it grows.
    pub(crate) fn with_capacity(bytes: usize) -> Self {
        AttrWriter {
            buf: Vec::with_capacity(bytes),
        }
    }

    /// An empty writer over `buf`'s memory (its bytes are dropped), with
    /// room for `bytes` bytes: a buffer used again spares an allocation.
    pub(crate) fn reuse(mut buf: Vec<u8>, bytes: usize) -> Self {
        buf.clear();
        buf.reserve(bytes);
        AttrWriter { buf }
    }

    fn name(&mut self, name: &str) {
        self.buf.extend_from_slice(c_string(name.as_bytes()));
        self.buf.push(0);
    }

    fn pair(&mut self, name: &str, value: &[u8]) -> &mut Self {
        self.name(name);
        self.buf.extend_from_slice(c_string(value));
        self.buf.push(0);
        self
    }

    /// An unsigned decimal value, formatted without a temporary string.
    fn unsigned(&mut self, name: &str, mut v: u64) -> &mut Self {
        // u64::MAX has 20 digits.
        let mut digits = [0u8; 20];
        let mut at = digits.len();
        loop {
            at -= 1;
            // `v % 10` < 10, so the cast cannot truncate.
            digits[at] = b'0' + (v % 10) as u8;
            v /= 10;
            if v == 0 {
                break;
            }
        }
        self.pair(name, &digits[at..])
    }

    /// An int attribute, printed unsigned: `-1` becomes `4294967295`.
    pub(crate) fn int(&mut self, name: &str, v: i32) -> &mut Self {
        self.unsigned(name, u64::from(v as u32))
    }

    /// A long attribute, printed unsigned like Postfix's `%lu` on LP64.
    pub(crate) fn long(&mut self, name: &str, v: i64) -> &mut Self {
        self.unsigned(name, v as u64)
    }

    /// A string attribute (raw bytes).
    pub(crate) fn str(&mut self, name: &str, v: &[u8]) -> &mut Self {
        self.pair(name, v)
    }

    /// A binary attribute, base64 encoded.
    pub(crate) fn data(&mut self, name: &str, v: &[u8]) -> &mut Self {
        let engine = &base64::engine::general_purpose::STANDARD;
        self.name(name);
        let start = self.buf.len();
        // Base64 of any slice that fits in memory has a length that fits
        // too (4/3 of it); should the sum ever overflow, fall back to the
        // allocating encoder, which then reports it.
        match base64::encoded_len(v.len(), true) {
            Some(len) => {
                self.buf.resize(start + len, 0);
                let written = engine.encode_slice(v, &mut self.buf[start..]).unwrap_or(0);
                self.buf.truncate(start + written);
            }
            None => self.buf.extend_from_slice(engine.encode(v).as_bytes()),
        }
        self.buf.push(0);
        self
    }

    /// Ends the current list (the extra NUL).
    pub(crate) fn end(&mut self) -> &mut Self {
        self.buf.push(0);
        self
    }

    /// The bytes written so far.
    pub(crate) fn as_bytes(&self) -> &[u8] {
        &self.buf
    }

    /// Takes the bytes.
    pub(crate) fn into_bytes(self) -> Vec<u8> {
        self.buf
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn numbers_print_unsigned() {
        let mut w = AttrWriter::new();
        w.int("status", -1).long("offset", -1).int("flags", 3).end();
        assert_eq!(
            w.as_bytes(),
            b"status\x004294967295\0offset\x0018446744073709551615\0flags\x003\0\0"
        );
    }

    #[test]
    fn a_reused_buffer_starts_empty() {
        let mut old = AttrWriter::new();
        old.str("stale", b"bytes").end();
        let buf = old.into_bytes();
        let mut w = AttrWriter::reuse(buf, 64);
        w.str("a", b"1").end();
        assert_eq!(w.as_bytes(), b"a\x001\0\0");
        assert!(w.into_bytes().capacity() >= 64);
    }

    #[test]
    fn number_edges() {
        let mut w = AttrWriter::with_capacity(8);
        w.int("a", 0)
            .int("b", i32::MIN)
            .long("c", i64::MAX)
            .long("d", 10)
            .end();
        assert_eq!(
            w.as_bytes(),
            b"a\x000\0b\x002147483648\0c\x009223372036854775807\0d\x0010\0\0"
        );
    }

    #[test]
    fn data_lengths() {
        for n in 0..10usize {
            let v: Vec<u8> = (0..n as u8).collect();
            let mut w = AttrWriter::new();
            w.data("d", &v);
            let want = base64::engine::general_purpose::STANDARD.encode(&v);
            let mut expect = b"d\0".to_vec();
            expect.extend_from_slice(want.as_bytes());
            expect.push(0);
            assert_eq!(w.as_bytes(), &expect[..], "length {n}");
        }
    }

    #[test]
    fn data_is_padded_base64_and_nul_truncates_strings() {
        let mut w = AttrWriter::new();
        w.data("time", b"ab").str("x", b"a\0b");
        assert_eq!(w.into_bytes(), b"time\0YWI=\0x\0a\0");
    }
}
