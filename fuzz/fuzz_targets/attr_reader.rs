//! Fuzz target: the attribute-list decoder and the strict readers built on
//! it must never panic on arbitrary bytes, whole or fed in pieces, and the
//! invariants of `rqmgr_ipc::fuzzing::attr_reader` must hold. The body
//! lives there so that the corpus replay test runs the same code.

#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| rqmgr_ipc::fuzzing::attr_reader(data));
