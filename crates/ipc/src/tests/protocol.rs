//! Byte-level tests of the attribute codec and the message formats:
//! golden requests as Postfix 3.7 writes them, captured replies, a
//! writer→decoder round trip, and byte-at-a-time incremental decoding.

use crate::attr::{decode_item, AttrList, AttrWriter, Item, ListDecoder};
use crate::bounce::{encode_append, BounceCommand, BounceRequest};
use crate::deliver::{
    flags, parse_reply, DeliveryRequest, DsnAttrs, MsgStats, RecipientOut, MSG_STATS_LEN,
};
use crate::dialect::Dialect;
use crate::error::AttrError;
use proptest::prelude::*;

fn sample_request() -> DeliveryRequest {
    DeliveryRequest {
        flags: flags::DEFAULT,
        queue_name: b"active".to_vec(),
        queue_id: b"154E7990181".to_vec(),
        data_offset: 402,
        data_size: 320,
        nexthop: b"[127.0.0.1]:2527".to_vec(),
        encoding: Vec::new(),
        sendopts: 0,
        dialect: Dialect::Postfix37,
        sender: b"sender@example.com".to_vec(),
        envelope_id: Vec::new(),
        ret_flags: 0,
        stats: MsgStats {
            incoming_arrival: (0x6b0c_302c, 123_456),
            active_arrival: (0x6b0c_302d, 654_321),
            ..MsgStats::default()
        },
        log_client_name: b"localhost".to_vec(),
        log_client_address: b"127.0.0.1".to_vec(),
        log_client_port: b"40000".to_vec(),
        log_protocol_name: b"ESMTP".to_vec(),
        log_helo_name: b"client.example".to_vec(),
        sasl_method: Vec::new(),
        sasl_username: Vec::new(),
        sasl_sender: Vec::new(),
        log_ident: b"154E7990181".to_vec(),
        rewrite_context: b"remote".to_vec(),
        recipients: vec![
            RecipientOut {
                orig_rcpt: b"rcpt1@example.com".to_vec(),
                address: b"rcpt1@example.com".to_vec(),
                offset: 286,
                dsn_orig_rcpt: b"rfc822;rcpt1@example.com".to_vec(),
                notify_flags: 10,
            },
            RecipientOut {
                orig_rcpt: Vec::new(),
                address: b"rcpt2@example.com".to_vec(),
                offset: 331,
                dsn_orig_rcpt: Vec::new(),
                notify_flags: 0,
            },
        ],
    }
}

/// The request bytes written out by hand from Postfix 3.7's order.
const GOLDEN_REQUEST: &[u8] = b"flags\x003\0\
queue_name\0active\0\
queue_id\x00154E7990181\0\
offset\x00402\0\
size\x00320\0\
nexthop\0[127.0.0.1]:2527\0\
encoding\0\0\
smtputf8\x000\0\
sender\0sender@example.com\0\
envelope_id\0\0\
ret_flags\x000\0\
time\0LDAMawAAAABA4gEAAAAAAC0wDGsAAAAA8fsJAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA==\0\
log_client_name\0localhost\0\
log_client_address\x00127.0.0.1\0\
log_client_port\x0040000\0\
log_protocol_name\0ESMTP\0\
log_helo_name\0client.example\0\
sasl_method\0\0\
sasl_username\0\0\
sasl_sender\0\0\
log_ident\x00154E7990181\0\
rewrite_context\0remote\0\
recipient_count\x002\0\
\0\
original_recipient\0rcpt1@example.com\0\
recipient\0rcpt1@example.com\0\
offset\x00286\0\
dsn_orig_rcpt\0rfc822;rcpt1@example.com\0\
notify_flags\x0010\0\
\0\
original_recipient\0\0\
recipient\0rcpt2@example.com\0\
offset\x00331\0\
dsn_orig_rcpt\0\0\
notify_flags\x000\0\
\0";

#[test]
#[cfg(all(target_endian = "little", target_pointer_width = "64"))]
fn delivery_request_matches_golden_bytes() {
    let mut w = AttrWriter::new();
    sample_request().encode(&mut w);
    assert_eq!(
        String::from_utf8_lossy(w.as_bytes()),
        String::from_utf8_lossy(GOLDEN_REQUEST)
    );
    assert_eq!(w.as_bytes(), GOLDEN_REQUEST);
    // The observed strace capture started its time value with this prefix.
    assert!(String::from_utf8_lossy(GOLDEN_REQUEST).contains("time\0LDAMawAA"));
}

#[test]
fn msg_stats_round_trip_and_length() {
    let s = sample_request().stats;
    let b = s.to_bytes();
    assert_eq!(b.len(), MSG_STATS_LEN);
    assert_eq!(MsgStats::from_bytes(&b), Some(s));
    assert_eq!(MsgStats::from_bytes(&b[..87]), None);
}

#[test]
fn success_reply_has_status_twice() {
    let bytes = b"status\0\0diag_type\0\0diag_text\0\0mta_type\0\0mta_mname\0\0action\0\0reason\0\0status\x000\0\0";
    let (list, used) = AttrList::decode(bytes).unwrap().unwrap();
    assert_eq!(used, bytes.len());
    let reply = parse_reply(&list).unwrap();
    assert_eq!(reply.status, 0);
    assert_eq!(reply.dsn, None);
    assert!(reply.reason.is_empty());
}

#[test]
fn site_failure_reply_with_unsigned_minus_one() {
    let bytes = b"status\x004.4.1\0diag_type\0\0diag_text\0\0mta_type\0\0mta_mname\0\0action\0\0\
reason\0connect to 127.0.0.1[127.0.0.1]:2599: Connection refused\0status\x004294967295\0\0";
    let (list, _) = AttrList::decode(bytes).unwrap().unwrap();
    let reply = parse_reply(&list).unwrap();
    assert_eq!(reply.status, -1);
    let dsn = reply.dsn.unwrap();
    assert_eq!(dsn.status, b"4.4.1");
    assert_eq!(
        dsn.reason,
        b"connect to 127.0.0.1[127.0.0.1]:2599: Connection refused"
    );
}

#[test]
fn reply_strictness() {
    // Missing the int status.
    let (list, _) = AttrList::decode(
        b"status\0\0diag_type\0\0diag_text\0\0mta_type\0\0mta_mname\0\0action\0\0reason\0\0\0",
    )
    .unwrap()
    .unwrap();
    assert_eq!(
        parse_reply(&list),
        Err(AttrError::Missing { name: "status" })
    );
    // Out of order.
    let (list, _) = AttrList::decode(b"status\0\0diag_text\0\0\0")
        .unwrap()
        .unwrap();
    let e = parse_reply(&list).unwrap_err();
    assert_eq!(
        e.describe("private/smtp socket"),
        "unexpected attribute diag_text from private/smtp socket (expecting: diag_type)"
    );
}

#[test]
fn bounce_requests_match_postfix_order() {
    let req = BounceRequest {
        flags: 0,
        queue_name: b"active".to_vec(),
        queue_id: b"154E7990181".to_vec(),
        encoding: Vec::new(),
        sendopts: 0,
        dialect: Dialect::Postfix37,
        sender: b"s@example.com".to_vec(),
        envelope_id: b"ENVID123".to_vec(),
        ret_flags: 0,
    };
    assert_eq!(
        req.encode(BounceCommand::Trace, None),
        b"nrequest\x005\0flags\x000\0queue_name\0active\0queue_id\x00154E7990181\0encoding\0\0\
smtputf8\x000\0sender\0s@example.com\0envelope_id\0ENVID123\0ret_flags\x000\0\0"
    );
    // Postfix 3.10's name for the same attribute, in the same place.
    let req310 = BounceRequest {
        dialect: Dialect::Postfix310,
        ..req.clone()
    };
    assert_eq!(
        req310.encode(BounceCommand::Trace, None),
        b"nrequest\x005\0flags\x000\0queue_name\0active\0queue_id\x00154E7990181\0encoding\0\0\
sendopts\x000\0sender\0s@example.com\0envelope_id\0ENVID123\0ret_flags\x000\0\0"
    );
    let verp = req.encode(BounceCommand::Verp, Some(b"+="));
    assert!(verp.starts_with(b"nrequest\x003\0"));
    assert!(verp.ends_with(b"ret_flags\x000\0verp_delimiters\0+=\0\0"));

    let rcpt = RecipientOut {
        orig_rcpt: b"o@x".to_vec(),
        address: b"a@x".to_vec(),
        offset: 7,
        dsn_orig_rcpt: Vec::new(),
        notify_flags: 0,
    };
    let dsn = DsnAttrs {
        action: b"delayed".to_vec(),
        ..DsnAttrs::simple(b"4.3.0", b"mail transport unavailable")
    };
    assert_eq!(
        encode_append(0, b"Q1", &rcpt, &dsn),
        b"nrequest\x000\0flags\x000\0queue_id\0Q1\0original_recipient\0o@x\0recipient\0a@x\0\
offset\x007\0dsn_orig_rcpt\0\0notify_flags\x000\0status\x004.3.0\0diag_type\0\0diag_text\0\0\
mta_type\0\0mta_mname\0\0action\0delayed\0reason\0mail transport unavailable\0\0"
    );
}

#[test]
fn incremental_decoding_one_byte_at_a_time() {
    let mut w = AttrWriter::new();
    sample_request().encode(&mut w);
    let bytes = w.into_bytes();
    let mut dec = ListDecoder::new();
    let mut lists = Vec::new();
    let mut start = 0;
    for end in 1..=bytes.len() {
        if let Some((list, used)) = dec.feed(&bytes[start..end], start).unwrap() {
            assert_eq!(start + used, end, "a list ends exactly at its terminator");
            start = end;
            lists.push(list);
        }
    }
    assert_eq!(start, bytes.len());
    assert_eq!(lists.len(), 3);
    let mut r = lists[0].strict();
    assert_eq!(r.expect_int("flags"), Ok(3));
    assert_eq!(lists[0].get("recipient_count"), Some(&b"2"[..]));
    assert_eq!(lists[2].get("recipient"), Some(&b"rcpt2@example.com"[..]));
}

#[test]
fn decode_item_reports_end() {
    assert_eq!(decode_item(b"\0").unwrap(), Some((Item::End, 1)));
}

#[derive(Debug, Clone)]
enum Val {
    Int(i32),
    Long(i64),
    Str(Vec<u8>),
    Data(Vec<u8>),
}

fn val() -> impl Strategy<Value = Val> {
    prop_oneof![
        any::<i32>().prop_map(Val::Int),
        any::<i64>().prop_map(Val::Long),
        proptest::collection::vec(1u8..=255, 0..40).prop_map(Val::Str),
        proptest::collection::vec(any::<u8>(), 0..100).prop_map(Val::Data),
    ]
}

proptest! {
    #[test]
    fn writer_decoder_round_trip(
        lists in proptest::collection::vec(
            proptest::collection::vec(("[a-z_]{1,12}", val()), 0..8), 1..4),
        chunk in 1usize..64,
    ) {
        let mut w = AttrWriter::new();
        for list in &lists {
            for (name, v) in list {
                match v {
                    Val::Int(i) => w.int(name, *i),
                    Val::Long(l) => w.long(name, *l),
                    Val::Str(s) => w.str(name, s),
                    Val::Data(d) => w.data(name, d),
                };
            }
            w.end();
        }
        let bytes = w.into_bytes();
        let mut dec = ListDecoder::new();
        let mut got = Vec::new();
        let (mut start, mut end) = (0, 0);
        while end < bytes.len() {
            end = (end + chunk).min(bytes.len());
            while let Some((list, used)) = dec.feed(&bytes[start..end], start).unwrap() {
                start += used;
                got.push(list);
            }
        }
        prop_assert_eq!(start, bytes.len());
        prop_assert_eq!(got.len(), lists.len());
        for (list, want) in got.iter().zip(&lists) {
            let mut r = list.strict();
            for (name, v) in want {
                let name: &'static str = Box::leak(name.clone().into_boxed_str());
                match v {
                    Val::Int(i) => prop_assert_eq!(r.expect_int(name), Ok(*i)),
                    Val::Long(l) => prop_assert_eq!(r.expect_long(name), Ok(*l)),
                    Val::Str(s) => prop_assert_eq!(r.expect_str(name), Ok(&s[..])),
                    Val::Data(d) => prop_assert_eq!(r.expect_data(name), Ok(d.clone())),
                }
            }
            prop_assert_eq!(r.finish(), Ok(()));
        }
    }

    #[test]
    fn decoder_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..300)) {
        let mut dec = ListDecoder::new();
        let mut start = 0;
        while let Ok(Some((list, used))) = dec.feed(&bytes[start..], start) {
            start += used;
            let mut r = list.strict();
            let _ = r.expect_int("status");
            let _ = r.expect_data("time");
            let _ = parse_reply(&list);
        }
    }
}
