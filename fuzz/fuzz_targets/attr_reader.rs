//! Fuzz target: the attribute-list decoder and the strict readers built on
//! it must never panic on arbitrary bytes, whole or fed in pieces.
//! The first input byte picks the feeding chunk size.

#![no_main]

use libfuzzer_sys::fuzz_target;
use rqmgr_ipc::attr::{decode_item, ListDecoder};
use rqmgr_ipc::deliver::{parse_reply, MsgStats};

fuzz_target!(|data: &[u8]| {
    let Some((&first, input)) = data.split_first() else {
        return;
    };
    let _ = decode_item(input);
    let chunk = usize::from(first).max(1);
    let mut dec = ListDecoder::new();
    let (mut start, mut end) = (0, 0);
    while end < input.len() {
        end = (end + chunk).min(input.len());
        loop {
            match dec.feed(&input[start..end], start) {
                Ok(Some((list, used))) => {
                    start += used;
                    let _ = parse_reply(&list);
                    let mut r = list.strict();
                    let _ = r.expect_int("flags");
                    let _ = r.expect_long("offset");
                    if let Ok(t) = r.expect_data("time") {
                        let _ = MsgStats::from_bytes(&t);
                    }
                    let _ = r.finish();
                }
                Ok(None) => break,
                Err(_) => return,
            }
        }
    }
    let _ = dec.eof_context(&input[start..]);
});
