//! Fuzz target: arbitrary bytes as a queue file must never panic or hang
//! the reader, neither on the first read nor on refills.
//!
//! The first input byte picks the recipient limit, so the limit and resume
//! paths are explored as well as full reads.

#![no_main]

use std::io::Cursor;

use libfuzzer_sys::fuzz_target;
use rqmgr_queue::message::{read_message_from, ReadLimits};
use rqmgr_queue::record::{decode_header, RecordReader};

fuzz_target!(|data: &[u8]| {
    let Some((&pick, file)) = data.split_first() else {
        return;
    };
    let limit = usize::from(pick % 8) + 1;

    // Framing alone: the header decoder and the streaming reader agree.
    let _ = decode_header(file);
    let mut rr = RecordReader::new(Cursor::new(file));
    while let Ok(Some(_)) = rr.next() {}

    let limits = ReadLimits {
        max_recipients: limit,
        ..ReadLimits::default()
    };
    if let Ok(mut msg) = read_message_from(Cursor::new(file), &limits) {
        // Each refill consumes at least one recipient record, so this is
        // bounded by the file size; the cap only keeps runs short.
        let mut rounds = 0;
        while msg.resume_offset.is_some() && rounds < 1000 {
            if msg.refill(Cursor::new(file), limit).is_err() {
                break;
            }
            rounds += 1;
        }
    }
});
