//! Reader tests: golden fixtures from the interop notes, every rejection
//! path, recipient limits and refills, pointers, and round trips.

use super::*;
use crate::record::put_record;
use crate::writer::{QueueFileBuilder, RecipientSpec};
use proptest::prelude::*;
use std::io::Cursor;

const WORKED: &[u8] = include_bytes!("../../testdata/worked_example.qf");
const DELIVERED: &[u8] = include_bytes!("../../testdata/worked_example_delivered.qf");

fn limits(max: usize) -> ReadLimits {
    ReadLimits {
        max_recipients: max,
        ..ReadLimits::default()
    }
}

fn read(bytes: &[u8]) -> Result<QueueMessage, Error> {
    read_message_from(Cursor::new(bytes), &limits(20000))
}

fn warnings(bytes: &[u8]) -> Vec<String> {
    match read(bytes) {
        Ok(_) => Vec::new(),
        Err(e) => e.postfix_warnings("154E7990181", "active/154E7990181"),
    }
}

fn worked_builder() -> QueueFileBuilder {
    let mut b = QueueFileBuilder::new(1_795_960_876, 80_096);
    b.create_time(1_795_960_877)
        .envelope_id("ENVID123")
        .full_name("root")
        .sender("sender@example.org");
    for r in ["rcpt1@example.com", "rcpt2@example.net"] {
        b.recipient_spec(RecipientSpec {
            address: r.into(),
            orig_rcpt: Some(r.into()),
            dsn_orig_rcpt: Some(format!("rfc822;{r}").into_bytes()),
            notify_flags: 10,
            done: false,
        });
    }
    let lines = include_str!("../../testdata/worked_example.lines");
    b.body(lines.lines());
    b
}

#[test]
fn golden_worked_example() -> Result<(), Error> {
    let m = read(WORKED)?;
    assert_eq!(m.arrival, (1_795_960_876, 80_096));
    assert_eq!(m.create_time, 1_795_960_877);
    assert_eq!(&*m.sender, b"sender@example.org");
    assert_eq!(
        m.size,
        SizeRecord {
            data_size: 320,
            data_offset: 402,
            rcpt_count: 2,
            rflags: 20,
            content_length: 320,
            sendopts: 0
        }
    );
    assert_eq!(&*m.envelope_id, b"ENVID123");
    assert_eq!(&*m.rewrite_context, b"local");
    assert_eq!(m.ret_flags, 0);
    assert_eq!(&*m.encoding, b"");
    assert_eq!(
        m.opened,
        Some(Opened {
            size: 320,
            nrcpt: 2
        })
    );
    assert_eq!(m.rcpt_unread, 0);
    assert_eq!(m.resume_offset, None);
    assert!(m.seen_all_non_rcpt);
    assert!(m.warnings.is_empty());
    assert_eq!(m.warn_time, None);
    let want: Vec<(u64, &[u8], i32)> = vec![
        (286, b"rcpt1@example.com", 10),
        (381, b"rcpt2@example.net", 10),
    ];
    let got: Vec<(u64, &[u8], i32)> = m
        .recipients
        .iter()
        .map(|r| (r.offset, &r.address[..], r.notify_flags))
        .collect();
    assert_eq!(got, want);
    assert_eq!(m.recipients[0].orig_rcpt, b"rcpt1@example.com");
    assert_eq!(m.recipients[1].dsn_orig_rcpt, b"rfc822;rcpt2@example.net");
    Ok(())
}

#[test]
fn builder_reproduces_the_fixture_byte_for_byte() {
    assert_eq!(worked_builder().build(), WORKED);
}

#[test]
fn delivered_recipients_are_skipped() -> Result<(), Error> {
    let m = read(DELIVERED)?;
    assert!(m.recipients.is_empty());
    assert_eq!(m.rcpt_unread, 0);
    assert!(m.warnings.is_empty());
    Ok(())
}

#[test]
fn golden_rejections_log_postfix_lines() {
    let cases: [(&[u8], &str); 5] = [
        (
            include_bytes!("../../testdata/missing_end.qf"),
            "154E7990181: message rejected: missing end record",
        ),
        (
            include_bytes!("../../testdata/unexpected_record.qf"),
            "Unexpected record type 'x' at offset 184",
        ),
        (
            include_bytes!("../../testdata/missing_sender.qf"),
            "154E7990181: message rejected: missing sender record",
        ),
        (
            include_bytes!("../../testdata/missing_arrival.qf"),
            "154E7990181: message rejected: missing arrival time record",
        ),
        (
            include_bytes!("../../testdata/bad_size_flags.qf"),
            "154E7990181: invalid flags in size record:             320             402               2              52             320               0",
        ),
    ];
    for (bytes, line) in cases {
        assert_eq!(warnings(bytes), vec![line.to_string()]);
    }
    assert!(matches!(
        read(include_bytes!("../../testdata/missing_end.qf")),
        Err(Error::MissingEnd { offset: 724 })
    ));
}

#[test]
fn truncated_record_and_nul_type() {
    // Content is skipped, so a cut inside it surfaces at the `X` record.
    assert!(matches!(
        read(&WORKED[..715]),
        Err(Error::MissingEnd { offset: 722 })
    ));
    let e = read(&WORKED[..723]);
    assert!(matches!(
        e,
        Err(Error::Record {
            offset: 722,
            rec_type: b'X',
            kind: crate::error::RecordErrorKind::EofInLength,
        })
    ));
    let mut long = WORKED[..200].to_vec();
    long[191] = 0x7f; // sender length beyond the end of the file
    assert!(matches!(
        read(&long),
        Err(Error::Record {
            offset: 190,
            rec_type: b'S',
            kind: crate::error::RecordErrorKind::EofInData { length: 127 },
        })
    ));
    let mut nul = WORKED.to_vec();
    nul[724] = 0;
    assert!(matches!(read(&nul), Err(Error::MissingEnd { offset: 724 })));
}

#[test]
fn wrong_data_offset_exposes_content() {
    let mut b = worked_builder().build();
    // Point the data offset one record too early (at the `M` record).
    let size = SizeRecord::parse(&b[2..97]).map(|s| SizeRecord {
        data_offset: 400,
        ..s
    });
    let Ok(size) = size else { return };
    b[2..97].copy_from_slice(&size.format());
    // From 400, skipping 320 bytes lands inside "second line".
    assert!(matches!(
        read(&b),
        Err(Error::Record { .. }) | Err(Error::UnexpectedRecord { .. })
    ));
}

fn many(n: usize, mixed: bool) -> QueueFileBuilder {
    let mut b = QueueFileBuilder::new(1_700_000_000, 1);
    b.sender("s@x")
        .mixed_rcpt_other(mixed)
        .body(["Subject: x", "", "body"]);
    for i in 0..n {
        b.recipient(format!("r{i}@example.com"));
    }
    b
}

fn all_recipients(bytes: &[u8], limit: usize) -> Result<(QueueMessage, Vec<Vec<u8>>), Error> {
    let mut m = read_message_from(Cursor::new(bytes), &limits(limit))?;
    let first = m.clone();
    let mut got: Vec<Vec<u8>> = m.recipients.iter().map(|r| r.address.clone()).collect();
    let mut rounds = 0;
    while m.resume_offset.is_some() {
        m.refill(Cursor::new(bytes), limit)?;
        assert!(m.warnings.is_empty(), "{:?}", m.warnings);
        got.extend(m.recipients.iter().map(|r| r.address.clone()));
        rounds += 1;
        assert!(rounds < 10_000);
    }
    assert_eq!(m.rcpt_unread, 0);
    Ok((first, got))
}

#[test]
fn recipient_limit_and_refill() -> Result<(), Error> {
    for mixed in [false, true] {
        let bytes = many(10, mixed).build();
        let (first, got) = all_recipients(&bytes, 3)?;
        assert_eq!(first.recipients.len(), 3);
        assert_eq!(first.rcpt_unread, 7);
        assert!(first.seen_all_non_rcpt);
        let third = first.recipients[2].offset;
        let resume = first.resume_offset;
        assert_eq!(resume, Some(third + 2 + b"r2@example.com".len() as u64));
        let want: Vec<Vec<u8>> = (0..10)
            .map(|i| format!("r{i}@example.com").into_bytes())
            .collect();
        assert_eq!(got, want);
        // The stateless refill sees the same next batch.
        let l = ReadLimits {
            resume_offset: resume,
            ..limits(3)
        };
        let m = read_message_from(Cursor::new(&bytes), &l)?;
        assert_eq!(m.recipients.len(), 3);
        assert_eq!(m.recipients[0].address, b"r3@example.com");
        assert_eq!(m.rcpt_unread, -3);
    }
    Ok(())
}

#[test]
fn limit_keeps_reading_extracted_segment_for_envelope_data() -> Result<(), Error> {
    let mut b = many(5, false);
    b.extracted_attr("encoding", "8bit");
    b.extracted_recipient(RecipientSpec {
        address: b"x@y".to_vec(),
        ..RecipientSpec::default()
    });
    let bytes = b.build();
    let m = read_message_from(Cursor::new(&bytes), &limits(2))?;
    // The pure-recipient jump still reaches the extracted `encoding`.
    assert_eq!(&*m.encoding, b"8bit");
    assert_eq!(m.recipients.len(), 2);
    let (_, got) = all_recipients(&bytes, 2)?;
    assert_eq!(got.len(), 6);
    assert_eq!(got[5], b"x@y");
    Ok(())
}

#[test]
fn limit_reached_in_extracted_segment() -> Result<(), Error> {
    let mut b = many(1, false);
    for i in 0..4 {
        b.extracted_recipient(RecipientSpec {
            address: format!("e{i}@y").into_bytes(),
            ..RecipientSpec::default()
        });
    }
    let bytes = b.build();
    let m = read_message_from(Cursor::new(&bytes), &limits(3))?;
    assert_eq!(m.recipients.len(), 3);
    assert!(m.seen_all_non_rcpt);
    assert_eq!(m.rcpt_unread, 2);
    Ok(())
}

#[test]
fn rcpt_count_mismatch_warns_and_resets() -> Result<(), Error> {
    let mut bytes = many(2, false).build();
    let Ok(size) = SizeRecord::parse(&bytes[2..97]) else {
        return Ok(());
    };
    bytes[2..97].copy_from_slice(
        &SizeRecord {
            rcpt_count: 3,
            ..size
        }
        .format(),
    );
    let m = read(&bytes)?;
    assert_eq!(m.rcpt_unread, 0);
    assert_eq!(m.warnings, vec![ReadWarning::RcptCountMismatch(1)]);
    assert_eq!(
        m.warnings[0].postfix_line("Q"),
        "Q: rcpt count mismatch (1)"
    );
    Ok(())
}

#[test]
fn attributes_map_like_qmgr() -> Result<(), Error> {
    let mut b = QueueFileBuilder::new(1_700_000_000, 0);
    b.attr("client_name", "legacy.example")
        .attr("log_client_address", "192.0.2.1")
        .attr("client_address", "203.0.113.9")
        .attr("log_helo_name", "helo.example")
        .attr("sasl_method", "PLAIN")
        .attr("sasl_method", "LOGIN")
        .attr("trace_flags", "1024")
        .attr("ret_flags", "2")
        .attr("encoding", "7bit")
        .filter("smtp:[127.0.0.1]:10025")
        .redirect("other@example")
        .verp("+=")
        .sender("s@example.org")
        .warn_time(1_700_014_400)
        .recipient("r@example.com")
        .body(["x"]);
    b.extracted_attr("encoding", "8bit");
    let bytes = b.build();
    let m = read(&bytes)?;
    // Once a log_* attribute was seen, client_* no longer fills in.
    assert_eq!(&*m.log_client_name, b"legacy.example");
    assert_eq!(&*m.log_client_address, b"192.0.2.1");
    assert_eq!(&*m.log_helo_name, b"helo.example");
    assert_eq!(&*m.sasl_method, b"PLAIN");
    assert_eq!(m.trace_flags, trace_flag::RECORD);
    assert!(m.trace_flags_offset.is_some());
    assert_eq!(m.ret_flags, 2);
    assert_eq!(&*m.encoding, b"8bit");
    assert_eq!(m.filter.as_deref(), Some(&b"smtp:[127.0.0.1]:10025"[..]));
    assert_eq!(m.redirect.as_deref(), Some(&b"other@example"[..]));
    assert_eq!(m.verp_delims.as_deref(), Some(&b"+="[..]));
    assert!(m.single_rcpt);
    assert_eq!(m.create_time, 1_700_000_000);
    let w = m.warn_time.map(|w| w.time);
    assert_eq!(w, Some(1_700_014_400));
    if let (Some(wr), Some(off)) = (m.warn_time, m.trace_flags_offset) {
        assert_eq!(&bytes[wr.offset as usize..wr.offset as usize + 2], b"W\x0f");
        assert_eq!(bytes[off as usize], b'A');
    }
    let lines: Vec<String> = m.warnings.iter().map(|w| w.postfix_line("Q")).collect();
    assert_eq!(
        lines,
        vec!["Q: ignoring multiple sasl_method attribute: LOGIN".to_string()]
    );
    Ok(())
}

/// A minimal file assembled record by record, for layouts the builder
/// does not produce. `env` goes between `S` and `M`; returns the bytes.
fn raw_file(env: &[(u8, Vec<u8>)], rcpt_count: i64) -> Vec<u8> {
    let mut out = Vec::new();
    put_record(&mut out, b'C', &SizeRecord::default().format());
    put_record(&mut out, b'T', b"1700000000 0");
    put_record(&mut out, b'S', b"s@x");
    for (t, d) in env {
        put_record(&mut out, *t, d);
    }
    put_record(&mut out, b'M', b"");
    let data_offset = out.len();
    put_record(&mut out, b'N', b"body");
    let xtra = out.len();
    put_record(&mut out, b'X', b"");
    put_record(&mut out, b'E', b"");
    let size = SizeRecord {
        data_size: (xtra - data_offset) as i64,
        data_offset: data_offset as i64,
        rcpt_count,
        rflags: 0,
        content_length: 0,
        sendopts: 0,
    };
    out[2..97].copy_from_slice(&size.format());
    out
}

#[test]
fn verp_and_dsn_warnings() -> Result<(), Error> {
    let env = vec![
        (b'V', b"+=".to_vec()),
        (b'A', b"ret_flags=3".to_vec()),
        (b'A', b"notify_flags=16".to_vec()),
        (b'O', b"o1".to_vec()),
        (b'O', b"o2".to_vec()),
        (b'R', b"a@x".to_vec()),
        (b'A', b"dsn_orig_rcpt=rfc822;z".to_vec()),
    ];
    let m = read(&raw_file(&env, 1))?;
    assert_eq!(m.verp_delims.as_deref(), Some(&b"+="[..]));
    assert!(m.single_rcpt);
    assert_eq!(m.recipients[0].orig_rcpt, b"o2");
    assert_eq!(m.size.content_length, m.size.data_size);
    let lines: Vec<String> = m.warnings.iter().map(|w| w.postfix_line("Q")).collect();
    assert_eq!(
        lines,
        vec![
            "Q: ignoring malformed DSN RET flags in queue file record:3",
            "Q: ignoring malformed DSN notify flags <16>",
            "Q: ignoring out-of-order original recipient <o1>",
            "Q: ignoring out-of-order DSN original recipient <rfc822;z>",
        ]
    );
    let bad = read(&raw_file(
        &[(b'V', b"+x".to_vec()), (b'R', b"a".to_vec())],
        1,
    ))?;
    assert_eq!(bad.warnings, vec![ReadWarning::BadVerp(b"+x".to_vec())]);
    let mut b = QueueFileBuilder::new(1, 0);
    b.verp("+=").recipient("a").body(["x"]);
    let null = read(&b.build())?;
    assert_eq!(null.warnings, vec![ReadWarning::VerpNullSender]);
    Ok(())
}

#[test]
fn bad_attribute_is_corrupt() {
    let bytes = raw_file(&[(b'A', b"novalue".to_vec())], 0);
    assert_eq!(
        warnings(&bytes),
        vec!["154E7990181: bad attribute record: missing '=' after attribute name: novalue"]
    );
}

/// Appends a `p` record with a %15ld target to `out`.
fn put_ptr(out: &mut Vec<u8>, target: u64) {
    put_record(out, b'p', format!("{target:15}").as_bytes());
}

#[test]
fn pointers_are_followed() -> Result<(), Error> {
    // Envelope: ... S, p -> heap; heap (after E): R, p -> back to M.
    let base = raw_file(&[(b'p', format!("{:15}", 0).into_bytes())], 1);
    let ptr_at = base.iter().rposition(|&b| b == b'p').unwrap_or(0);
    let m_at = ptr_at + 17;
    let mut f = base.clone();
    let heap = f.len() as u64;
    put_record(&mut f, b'R', b"heap@x");
    put_ptr(&mut f, m_at as u64);
    f[ptr_at + 2..ptr_at + 17].copy_from_slice(format!("{heap:15}").as_bytes());
    let m = read(&f)?;
    assert_eq!(m.recipients.len(), 1);
    assert_eq!(m.recipients[0].address, b"heap@x");
    assert_eq!(m.recipients[0].offset, heap);
    assert!(m.warnings.is_empty());

    // A pointer to itself loops until the reverse-jump guard stops it.
    let mut l = base.clone();
    l[ptr_at + 2..ptr_at + 17].copy_from_slice(format!("{ptr_at:15}").as_bytes());
    assert!(matches!(read(&l), Err(Error::TooManyReverseJumps { .. })));

    let mut bad = base;
    bad[ptr_at + 2..ptr_at + 17].copy_from_slice(b"   12x         ");
    assert_eq!(
        warnings(&bad),
        vec!["active/154E7990181: malformed pointer record value: 12x         "]
    );
    Ok(())
}

#[test]
fn old_style_size_record() -> Result<(), Error> {
    let mut out = Vec::new();
    put_record(&mut out, b'C', b"0");
    put_record(&mut out, b'T', b"1700000000 0");
    put_record(&mut out, b'S', b"s@x");
    put_record(&mut out, b'R', b"a@x");
    let m_at = out.len();
    put_record(&mut out, b'M', format!("{:15}", 0).as_bytes());
    let data_offset = out.len();
    put_record(&mut out, b'N', b"line");
    let xtra = out.len();
    put_record(&mut out, b'X', b"");
    put_record(&mut out, b'R', b"b@x");
    put_record(&mut out, b'E', b"");
    out[m_at + 2..m_at + 17].copy_from_slice(format!("{xtra:15}").as_bytes());
    let m = read(&out)?;
    assert_eq!(m.size.data_offset, data_offset as i64);
    assert_eq!(m.size.data_size, (xtra - data_offset) as i64);
    assert_eq!(m.recipients.len(), 2);
    assert_eq!(m.rcpt_unread, 0);
    assert!(m.warnings.is_empty());
    out[m_at + 2..m_at + 17].copy_from_slice(format!("{:15}", 3).as_bytes());
    assert!(matches!(
        read(&out),
        Err(Error::OldStyleBadExtraOffset { .. })
    ));
    Ok(())
}

#[test]
fn real_file_api() -> Result<(), Error> {
    let mut f = tempfile::tempfile()?;
    std::io::Write::write_all(&mut f, WORKED)?;
    let m = read_message(&mut f, &ReadLimits::default())?;
    assert_eq!(m.recipients.len(), 2);
    Ok(())
}

fn spec() -> impl Strategy<Value = RecipientSpec> {
    (
        "[a-z]{1,8}@[a-z]{1,8}\\.com",
        proptest::option::of("[a-z]{1,8}"),
        proptest::option::of("rfc822;[a-z]{1,8}"),
        prop_oneof![Just(0), Just(1), Just(2), Just(4), Just(8), Just(14)],
        any::<bool>(),
    )
        .prop_map(|(a, o, d, n, done)| RecipientSpec {
            address: a.into_bytes(),
            orig_rcpt: o.map(String::into_bytes),
            dsn_orig_rcpt: d.map(String::into_bytes),
            notify_flags: n,
            done,
        })
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(128))]

    #[test]
    fn builder_then_reader_round_trips(
        env in proptest::collection::vec(spec(), 0..30),
        ext in proptest::collection::vec(spec(), 0..10),
        body in proptest::collection::vec(proptest::collection::vec(any::<u8>(), 0..300), 1..20),
        mixed in any::<bool>(),
        limit in 1usize..12,
    ) {
        let mut b = QueueFileBuilder::new(1_700_000_000, 7);
        b.sender("s@example.org").mixed_rcpt_other(mixed).body(&body);
        for r in &env { b.recipient_spec(r.clone()); }
        for r in &ext { b.extracted_recipient(r.clone()); }
        let bytes = b.build();
        let mut m = read_message_from(Cursor::new(&bytes), &limits(limit))
            .map_err(|e| TestCaseError::fail(e.to_string()))?;
        prop_assert!(m.warnings.is_empty());
        let mut got = m.recipients.clone();
        while m.resume_offset.is_some() {
            m.refill(Cursor::new(&bytes), limit).map_err(|e| TestCaseError::fail(e.to_string()))?;
            prop_assert!(m.warnings.is_empty());
            got.extend(m.recipients.iter().cloned());
        }
        prop_assert_eq!(m.rcpt_unread, 0);
        let want: Vec<&RecipientSpec> = env.iter().chain(&ext).filter(|r| !r.done).collect();
        prop_assert_eq!(got.len(), want.len());
        for (g, w) in got.iter().zip(want) {
            prop_assert_eq!(&g.address, &w.address);
            prop_assert_eq!(&g.orig_rcpt, &w.orig_rcpt.clone().unwrap_or_default());
            prop_assert_eq!(&g.dsn_orig_rcpt, &w.dsn_orig_rcpt.clone().unwrap_or_default());
            prop_assert_eq!(g.notify_flags, w.notify_flags);
            prop_assert_eq!(bytes[g.offset as usize], b'R');
        }
    }

    #[test]
    fn mutated_files_never_panic(
        flips in proptest::collection::vec((0usize..726, any::<u8>()), 1..8),
        cut in 0usize..=726,
        limit in 1usize..4,
    ) {
        let mut bytes = WORKED.to_vec();
        for (i, v) in flips { bytes[i] = v; }
        bytes.truncate(cut);
        let l = limits(limit);
        if let Ok(mut m) = read_message_from(Cursor::new(&bytes), &l) {
            let mut rounds = 0;
            while m.resume_offset.is_some() && rounds < 100 {
                if m.refill(Cursor::new(&bytes), limit).is_err() { break; }
                rounds += 1;
            }
        }
    }
}
