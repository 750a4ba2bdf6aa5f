//! Encoder for attribute lists.
//!
//! Job: append `name\0value\0` pairs to a byte buffer in the caller's order.
//! Invariants: ints print as `%u` of the 32-bit pattern and longs as `%lu`
//! of the 64-bit pattern, exactly as Postfix does; data is standard padded
//! base64.  Cannot fail; a NUL inside a name or string value truncates it
//! at the NUL so the framing stays intact (Postfix's C strings behave the
//! same way).

use base64::Engine as _;

/// Builds one or more attribute lists in memory.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct AttrWriter {
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
    pub fn new() -> Self {
        Self::default()
    }

    fn pair(&mut self, name: &str, value: &[u8]) -> &mut Self {
        self.buf.extend_from_slice(c_string(name.as_bytes()));
        self.buf.push(0);
        self.buf.extend_from_slice(c_string(value));
        self.buf.push(0);
        self
    }

    /// An int attribute, printed unsigned: `-1` becomes `4294967295`.
    pub fn int(&mut self, name: &str, v: i32) -> &mut Self {
        let text = (v as u32).to_string();
        self.pair(name, text.as_bytes())
    }

    /// A long attribute, printed unsigned like Postfix's `%lu` on LP64.
    pub fn long(&mut self, name: &str, v: i64) -> &mut Self {
        let text = (v as u64).to_string();
        self.pair(name, text.as_bytes())
    }

    /// A string attribute (raw bytes).
    pub fn str(&mut self, name: &str, v: &[u8]) -> &mut Self {
        self.pair(name, v)
    }

    /// A binary attribute, base64 encoded.
    pub fn data(&mut self, name: &str, v: &[u8]) -> &mut Self {
        let text = base64::engine::general_purpose::STANDARD.encode(v);
        self.pair(name, text.as_bytes())
    }

    /// Ends the current list (the extra NUL).
    pub fn end(&mut self) -> &mut Self {
        self.buf.push(0);
        self
    }

    /// The bytes written so far.
    pub fn as_bytes(&self) -> &[u8] {
        &self.buf
    }

    /// Takes the bytes.
    pub fn into_bytes(self) -> Vec<u8> {
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
    fn data_is_padded_base64_and_nul_truncates_strings() {
        let mut w = AttrWriter::new();
        w.data("time", b"ab").str("x", b"a\0b");
        assert_eq!(w.into_bytes(), b"time\0YWI=\0x\0a\0");
    }
}
