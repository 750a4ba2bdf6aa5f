//! Splitting an address into local part and domain, as Postfix does: at
//! the last `@` (a quoted local part may hold one too); no `@` means a bare
//! local part. Bytes, not text: addresses may carry any 8-bit byte.

/// `(local part, domain)`; the domain is `None` without an `@` and may be
/// empty (`user@`).
pub(crate) fn split(address: &[u8]) -> (&[u8], Option<&[u8]>) {
    match address.iter().rposition(|&b| b == b'@') {
        Some(at) => (&address[..at], Some(&address[at + 1..])),
        None => (address, None),
    }
}

/// The local part: everything before the last `@`, or all of it.
pub(crate) fn local_part(address: &[u8]) -> &[u8] {
    split(address).0
}

/// The domain after the last `@`, if there is a non-empty one.
pub(crate) fn domain(address: &[u8]) -> Option<&[u8]> {
    split(address).1.filter(|d| !d.is_empty())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn split_at_the_last_at_sign() {
        // (address, local part, domain as split, domain if non-empty)
        let rows: &[(&str, &str, Option<&str>, Option<&str>)] = &[
            (
                "joe@example.com",
                "joe",
                Some("example.com"),
                Some("example.com"),
            ),
            (
                "\"a@b\"@example.com",
                "\"a@b\"",
                Some("example.com"),
                Some("example.com"),
            ),
            ("joe", "joe", None, None),
            ("joe@", "joe", Some(""), None),
            ("", "", None, None),
            ("@example.com", "", Some("example.com"), Some("example.com")),
        ];
        for &(address, local, split_domain, nonempty) in rows {
            let a = address.as_bytes();
            assert_eq!(
                split(a),
                (local.as_bytes(), split_domain.map(str::as_bytes)),
                "{address}"
            );
            assert_eq!(local_part(a), local.as_bytes(), "{address}");
            assert_eq!(domain(a), nonempty.map(str::as_bytes), "{address}");
        }
    }
}
