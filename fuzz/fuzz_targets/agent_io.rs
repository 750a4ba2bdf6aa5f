//! Fuzz target: what peers send the daemon. Bytes from a trigger client
//! (read and interpreted as the daemon does) and from a delivery agent
//! (announcement and reply, read through the daemon's agent connection
//! in each Postfix dialect) must never panic or hang it, and the
//! invariants of `rqmgr_ipc::fuzzing::agent_io` must hold. The body lives
//! there so that the corpus replay test runs the same code.

#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| rqmgr_ipc::fuzzing::agent_io(data));
