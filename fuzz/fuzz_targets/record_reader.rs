//! Fuzz target: arbitrary bytes as a queue file must never panic or hang
//! the record and queue-file readers, on the first read or on refills, and
//! the invariants of `rqmgr_queue::fuzzing::record_reader` must hold. The
//! body lives there so that the corpus replay test runs the same code.

#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| rqmgr_queue::fuzzing::record_reader(data));
