//! The body of the `record_reader` fuzz target, shared by the cargo-fuzz
//! crate in `fuzz/` (nightly, instrumented) and the corpus replay test
//! `tests/fuzz_corpus.rs` (stable, run by CI), so that the committed seed
//! corpus is replayed through exactly the code the fuzzer runs.
//!
//! Not an API: hidden from the documentation, and unlike the rest of the
//! crate it asserts. A panic here is a finding: either the reader panicked
//! on its input, or one of the invariants below does not hold. Its fix
//! belongs in the reader, with a unit test there.
//!
//! Invariants checked, beyond "no panic, no hang":
//! * the header decoder and the streaming reader agree on the first record;
//! * the records read, written again with the crate's own encoder (which
//!   uses the fewest length bytes), read back the same;
//! * no read returns more recipients than its limit;
//! * a file that reads without error when record headers may have only
//!   four length bytes (Postfix's August 2026 patch releases) reads the
//!   same when they may have five (the releases before), refills included.

use std::io::Cursor;

use crate::error::Error;
use crate::message::{read_message_from, QueueMessage, ReadLimits};
use crate::record::{decode_header, put_record, RecordReader, LEGACY_LENGTH_BYTES, LENGTH_BYTES};

/// Refills followed per read; each one normally consumes a recipient
/// record, but pointer records can lead a read back over old ones.
const MAX_REFILLS: usize = 1000;

/// Queue ID and path the warnings are formatted with, as the daemon does.
const QUEUE_ID: &str = "4F2A81E0C3";
const PATH: &str = "active/4F2A81E0C3";

/// Arbitrary bytes as a queue file. The first byte picks the recipient
/// limit (1 to 8), so refills are explored as well as whole reads; the
/// rest is the file.
pub fn record_reader(data: &[u8]) {
    let Some((&pick, file)) = data.split_first() else {
        return;
    };
    let limit = usize::from(pick % 8) + 1;
    framing(file);
    let legacy = read_all(file, limit, LEGACY_LENGTH_BYTES);
    let current = read_all(file, limit, LENGTH_BYTES);
    if let Ok(current) = current {
        match legacy {
            Ok(legacy) => assert_eq!(
                current.iter().map(without_length_bytes).collect::<Vec<_>>(),
                legacy.iter().map(without_length_bytes).collect::<Vec<_>>(),
                "the five-length-byte reader reads a four-length-byte file differently"
            ),
            Err(e) => panic!("read with four length bytes, not with five: {e}"),
        }
    }
}

/// The record framing alone.
fn framing(file: &[u8]) {
    let mut reader = RecordReader::new(Cursor::new(file));
    let first = reader.next();
    match decode_header(file) {
        Ok(Some((rec_type, header, payload))) if header + payload <= file.len() => match &first {
            Ok(Some(record)) => assert_eq!(
                (record.rec_type, record.offset, &record.data[..]),
                (rec_type, 0, &file[header..header + payload]),
                "decode_header and the reader disagree"
            ),
            other => panic!("decode_header reads a record, the reader {other:?}"),
        },
        Ok(_) => {}
        Err(e) => assert!(
            first.is_err(),
            "decode_header fails ({e}), the reader does not"
        ),
    }

    // Every record up to the first error or the end, then the same
    // written again with the fewest length bytes.
    let mut records = Vec::new();
    if let Ok(Some(record)) = first {
        records.push(record);
        while let Ok(Some(record)) = reader.next() {
            records.push(record);
        }
    }
    let mut again = Vec::new();
    for r in &records {
        put_record(&mut again, r.rec_type, &r.data);
    }
    let mut reread = RecordReader::new(Cursor::new(&again[..]));
    for r in &records {
        match reread.next() {
            Ok(Some(back)) => assert_eq!(
                (back.rec_type, &back.data),
                (r.rec_type, &r.data),
                "a record written again reads back differently"
            ),
            other => panic!("a record written again does not read back: {other:?}"),
        }
    }
    assert!(
        matches!(reread.next(), Ok(None)),
        "records written again read back with more after them"
    );
}

/// A first read and its refills as the daemon makes them, each result
/// formatted as the daemon logs it; the state after each read, or the
/// first error.
fn read_all(file: &[u8], limit: usize, length_bytes: u32) -> Result<Vec<QueueMessage>, Error> {
    let limits = ReadLimits {
        max_recipients: limit,
        max_length_bytes: length_bytes,
        ..ReadLimits::default()
    };
    let mut msg = read_message_from(Cursor::new(file), &limits).map_err(logged)?;
    let mut reads = Vec::new();
    loop {
        assert!(
            msg.recipients.len() <= limit,
            "{} recipients read with a limit of {limit}",
            msg.recipients.len()
        );
        for w in &msg.warnings {
            let _ = w.postfix_line(QUEUE_ID);
        }
        reads.push(msg.clone());
        if msg.resume_offset.is_none() || reads.len() > MAX_REFILLS {
            return Ok(reads);
        }
        msg.refill(Cursor::new(file), limit).map_err(logged)?;
    }
}

/// The error, after formatting its log lines as the daemon does.
fn logged(e: Error) -> Error {
    let _ = e.postfix_warnings(QUEUE_ID, PATH);
    let _ = e.to_string();
    e
}

/// The result without the setting it was read with.
fn without_length_bytes(m: &QueueMessage) -> QueueMessage {
    QueueMessage {
        max_length_bytes: 0,
        ..m.clone()
    }
}

/// The seed corpus of `record_reader`, made with this crate's writer:
/// `cargo test -p rqmgr-queue --lib write_seed_corpus -- --ignored`
/// writes it to `fuzz/corpus/record_reader/` (files of other names there,
/// such as minimized findings, are left alone).
#[cfg(test)]
mod seeds {
    use crate::record::{put_record, rec_type as rt};
    use crate::size::SizeRecord;
    use crate::writer::{QueueFileBuilder, RecipientSpec};

    const BODY: [&str; 6] = [
        "Received: by mail.example.org (Postfix, from userid 1000)",
        "From: Sender <sender@example.org>",
        "To: rcpt@example.com",
        "Subject: seed",
        "",
        "Hello.",
    ];

    fn message(sender: &str) -> QueueFileBuilder {
        let mut b = QueueFileBuilder::new(1_795_960_876, 80_096);
        b.sender(sender).body(BODY);
        b
    }

    fn dsn(address: &str, done: bool) -> RecipientSpec {
        RecipientSpec {
            address: address.into(),
            orig_rcpt: Some(address.into()),
            dsn_orig_rcpt: Some(format!("rfc822;{address}").into_bytes()),
            notify_flags: 10,
            done,
        }
    }

    /// A file of `records`, its size record made true (data offset after
    /// `M`, data size up to `X`) without moving any record.
    fn assembled(records: &[(u8, &[u8])], rcpt_count: i64) -> Vec<u8> {
        let mut out = Vec::new();
        let placeholder = SizeRecord::default().format();
        put_record(&mut out, rt::SIZE, &placeholder);
        let (mut data_offset, mut xtra) = (0, 0);
        for &(t, d) in records {
            if t == rt::XTRA {
                xtra = out.len();
            }
            put_record(&mut out, t, d);
            if t == rt::MESG {
                data_offset = out.len();
            }
        }
        let size = SizeRecord {
            data_size: (xtra - data_offset) as i64,
            data_offset: data_offset as i64,
            rcpt_count,
            ..SizeRecord::default()
        };
        let payload = size.format();
        out[2..2 + payload.len()].copy_from_slice(&payload);
        out
    }

    /// The `p` payload pointing at `target`, as `%15ld`.
    fn ptr(target: usize) -> Vec<u8> {
        format!("{target:15}").into_bytes()
    }

    /// Cleanup's layout for recipients added later: the recipient list
    /// ends in a pointer to records after `E`, which point back.
    fn pointer_to_heap() -> Vec<u8> {
        let records = |heap: usize, back: usize| {
            let mut out = assembled(
                &[
                    (rt::TIME, b"1795960876 80096"),
                    (rt::FROM, b"sender@example.org"),
                    (rt::RCPT, b"first@example.com"),
                    (rt::PTR, &ptr(heap)),
                    (rt::MESG, b""),
                    (b'N', b"Subject: seed"),
                    (rt::XTRA, b""),
                    (rt::END, b""),
                ],
                2,
            );
            put_record(&mut out, rt::RCPT, b"added@example.com");
            put_record(&mut out, rt::PTR, &ptr(back));
            out
        };
        // Lay it out once to learn the offsets, then point for real.
        let draft = records(0, 0);
        let heap = draft.len() - 2 - b"added@example.com".len() - 2 - 15;
        let mesg = draft
            .windows(2)
            .position(|w| w == [rt::MESG, 0])
            .unwrap_or(0);
        records(heap, mesg)
    }

    /// A pointer to itself: the reverse-jump guard must end the read.
    fn pointer_loop() -> Vec<u8> {
        let mut out = assembled(
            &[
                (rt::TIME, b"1795960876 80096"),
                (rt::FROM, b"sender@example.org"),
                (rt::PTR, &ptr(0)),
                (rt::MESG, b""),
                (b'N', b"x"),
                (rt::XTRA, b""),
                (rt::END, b""),
            ],
            0,
        );
        let at = out.windows(2).position(|w| w == [rt::PTR, 15]).unwrap_or(0);
        out[at + 2..at + 17].copy_from_slice(&ptr(at));
        out
    }

    pub(super) fn corpus() -> Vec<(&'static str, Vec<u8>)> {
        let mut seeds = Vec::new();
        let mut add = |name, pick: u8, file: Vec<u8>| {
            let mut data = vec![pick];
            data.extend(file);
            seeds.push((name, data));
        };

        let mut b = message("sender@example.org");
        b.recipient("rcpt@example.com");
        add("one_recipient", 7, b.build());

        let mut b = message("sender@example.org");
        b.create_time(1_795_960_877)
            .envelope_id("ENVID123")
            .ret_flags(2)
            .full_name("Sender");
        b.recipient_spec(dsn("rcpt1@example.com", false))
            .recipient_spec(dsn("rcpt2@example.net", false));
        add("dsn_two_recipients_limit_1", 0, b.build());

        let mut b = message("sender@example.org");
        for i in 0..10 {
            b.recipient(format!("r{i}@example.com"));
        }
        add("ten_recipients_limit_3", 2, b.build());

        let mut b = message("sender@example.org");
        b.mixed_rcpt_other(true)
            .recipient_spec(dsn("done@example.com", true))
            .recipient("rcpt@example.com")
            .extracted_attr("dsn_orig_rcpt", "rfc822;bcc@example.net")
            .extracted_recipient(dsn("bcc@example.net", false))
            .extracted_recipient(dsn("cc@example.net", false));
        add("mixed_done_and_extracted_limit_2", 1, b.build());

        let mut b = message("");
        b.verp("+=")
            .filter("smtp-amavis:[127.0.0.1]:10024")
            .inspector("inspect")
            .redirect("redirect@example.net")
            .warn_time(1_795_975_276)
            .sendopts(1)
            .rewrite_context(Some(b"remote"))
            .attr("log_client_name", "client.example.org")
            .attr("log_client_address", "192.0.2.1")
            .attr("log_client_port", "52148")
            .attr("log_protocol_name", "ESMTP")
            .attr("log_helo_name", "client.example.org")
            .attr("sasl_method", "PLAIN")
            .attr("sasl_username", "user")
            .attr("trace_flags", "1024")
            .recipient("postmaster@example.com");
        add("null_sender_verp_filter_logging", 7, b.build());

        let mut b = message("list-owner@example.org");
        b.verp("+=");
        for i in 0..3 {
            b.recipient(format!("member{i}@example.com"));
        }
        add("verp_one_per_delivery", 7, b.build());

        add("pointer_to_added_recipients", 0, pointer_to_heap());
        add("pointer_loop", 7, pointer_loop());

        // The end record's empty length in five bytes: legal before the
        // August 2026 patch releases, too many length bits after them.
        let mut b = message("sender@example.org");
        b.recipient("rcpt@example.com");
        let mut file = b.build();
        file.truncate(file.len() - 1);
        file.extend_from_slice(&[0x80, 0x80, 0x80, 0x80, 0x00]);
        add("end_record_five_length_bytes", 7, file);

        let mut b = message("sender@example.org");
        b.recipient("rcpt@example.com");
        let file = b.build();
        let cut = file.len() - 40;
        add("truncated_in_content", 7, file[..cut].to_vec());

        seeds
    }

    /// The committed seeds are what [`corpus`] makes; with
    /// `RQMGR_WRITE_SEEDS=1` the test writes them first.
    #[test]
    fn committed_seed_corpus_is_current() {
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../../fuzz/corpus/record_reader");
        let write = std::env::var_os("RQMGR_WRITE_SEEDS").is_some();
        for (name, data) in corpus() {
            let path = dir.join(name);
            if write {
                std::fs::create_dir_all(&dir).unwrap();
                std::fs::write(&path, &data).unwrap();
            }
            let committed = std::fs::read(&path).unwrap_or_default();
            assert!(committed == data, "{name}: run with RQMGR_WRITE_SEEDS=1");
        }
    }

    #[test]
    fn seeds_read_as_meant() {
        use crate::message::{read_message_from, ReadLimits};
        use std::io::Cursor;
        let read = |data: &[u8], length_bytes| {
            let limits = ReadLimits {
                max_length_bytes: length_bytes,
                ..ReadLimits::default()
            };
            read_message_from(Cursor::new(&data[1..]), &limits)
        };
        for (name, data) in corpus() {
            super::record_reader(&data);
            let ok = read(&data, crate::record::LEGACY_LENGTH_BYTES).is_ok();
            let broken = matches!(name, "pointer_loop" | "truncated_in_content");
            assert_eq!(ok, !broken, "{name}");
        }
        let seeds = corpus();
        let (_, five) = seeds
            .iter()
            .find(|(n, _)| *n == "end_record_five_length_bytes")
            .unwrap();
        assert!(read(five, crate::record::LENGTH_BYTES).is_err());
        let (_, heap) = seeds
            .iter()
            .find(|(n, _)| *n == "pointer_to_added_recipients")
            .unwrap();
        let m = read(heap, crate::record::LEGACY_LENGTH_BYTES).unwrap();
        let rcpts: Vec<&[u8]> = m.recipients.iter().map(|r| &r.address[..]).collect();
        assert_eq!(rcpts, [&b"first@example.com"[..], b"added@example.com"]);
    }
}
