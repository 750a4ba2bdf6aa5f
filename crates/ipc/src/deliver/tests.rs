//! Tests of the parent module.

use super::*;

/// Every field distinct and non-empty, so a swapped or missing field
/// changes the bytes.
fn full_request() -> DeliveryRequest {
    let s = |v: &str| v.as_bytes().to_vec();
    DeliveryRequest {
        flags: 3 | flags::RECORD,
        queue_name: s("active"),
        queue_id: s("4ABCDEF0123"),
        data_offset: 612,
        data_size: 123_456,
        nexthop: s("example.com"),
        encoding: s("8bit"),
        sendopts: 12,
        dialect: Dialect::Postfix37,
        sender: s("list+joe=example.com@origin.org"),
        envelope_id: s("env-id"),
        ret_flags: 2,
        stats: MsgStats {
            incoming_arrival: (1_700_000_000, 123_456),
            active_arrival: (1_700_000_001, 654_321),
            ..MsgStats::default()
        },
        log_client_name: s("client.example"),
        log_client_address: s("192.0.2.1"),
        log_client_port: s("2525"),
        log_protocol_name: s("ESMTP"),
        log_helo_name: s("helo.example"),
        sasl_method: s("PLAIN"),
        sasl_username: s("joe"),
        sasl_sender: s("joe@origin.org"),
        log_ident: s("4ABCDEF0123"),
        rewrite_context: s("remote"),
        recipients: vec![
            RecipientOut {
                orig_rcpt: s("Joe@Example.com"),
                address: s("joe@example.com"),
                offset: 345,
                dsn_orig_rcpt: s("rfc822;joe@example.com"),
                notify_flags: 9,
            },
            RecipientOut {
                orig_rcpt: Vec::new(),
                address: s("ann@example.com"),
                offset: 400,
                dsn_orig_rcpt: Vec::new(),
                notify_flags: 0,
            },
        ],
    }
}

fn borrowed(r: &DeliveryRequest) -> DeliveryRequestRef<'_> {
    DeliveryRequestRef {
        flags: r.flags,
        queue_name: &r.queue_name,
        queue_id: &r.queue_id,
        data_offset: r.data_offset,
        data_size: r.data_size,
        nexthop: &r.nexthop,
        encoding: &r.encoding,
        sendopts: r.sendopts,
        dialect: r.dialect,
        sender: &r.sender,
        envelope_id: &r.envelope_id,
        ret_flags: r.ret_flags,
        stats: r.stats,
        log_client_name: &r.log_client_name,
        log_client_address: &r.log_client_address,
        log_client_port: &r.log_client_port,
        log_protocol_name: &r.log_protocol_name,
        log_helo_name: &r.log_helo_name,
        sasl_method: &r.sasl_method,
        sasl_username: &r.sasl_username,
        sasl_sender: &r.sasl_sender,
        log_ident: &r.log_ident,
        rewrite_context: &r.rewrite_context,
        recipients: r
            .recipients
            .iter()
            .map(|o| RecipientRef {
                orig_rcpt: &o.orig_rcpt,
                address: &o.address,
                offset: o.offset,
                dsn_orig_rcpt: &o.dsn_orig_rcpt,
                notify_flags: o.notify_flags,
            })
            .collect(),
    }
}

#[test]
fn borrowed_request_encodes_identically() {
    for req in [full_request(), DeliveryRequest::default()] {
        let owned = req.to_bytes();
        let by_ref = borrowed(&req).to_bytes();
        assert_eq!(owned, by_ref);
        let mut w = AttrWriter::new();
        borrowed(&req).encode(&mut w);
        assert_eq!(w.as_bytes(), &owned[..]);
    }
    // Golden start of the owned encoding, so both cannot drift
    // together unnoticed.
    let owned = full_request().to_bytes();
    assert!(owned.starts_with(
        b"flags\x001027\0queue_name\0active\0queue_id\x004ABCDEF0123\0offset\x00612\0"
    ));
}

/// Postfix 3.10 renamed the attribute and nothing else: the two
/// dialects' bytes differ exactly in that name.
#[test]
fn dialects_differ_only_in_the_send_options_name() {
    let old = full_request().to_bytes();
    let new = DeliveryRequest {
        dialect: Dialect::Postfix310,
        ..full_request()
    }
    .to_bytes();
    let tail = b"\0encoding\08bit\0";
    let at = old.windows(tail.len()).position(|w| w == tail).unwrap() + tail.len();
    assert_eq!(&old[at..at + 12], b"smtputf8\x0012\0");
    assert_eq!(&new[at..at + 12], b"sendopts\x0012\0");
    assert_eq!(old[..at], new[..at]);
    assert_eq!(old[at + 8..], new[at + 8..]);
}
