//! Differential tests: each scenario runs on a private Postfix instance
//! with the stock qmgr and again with rqmgr, and the outcomes must match
//! (see `compare`). Where the stock qmgr's own behaviour is not
//! deterministic, the scenario says what it compares instead.
//!
//! Requires root and Postfix (scripts/test.sh installs it); a missing
//! Postfix fails the tests, never skips them.

#[path = "../e2e/common.rs"]
#[allow(dead_code)]
mod common;
#[allow(dead_code)]
mod compare;

mod big_recipient_list;
mod broken_transport;
mod chroot;
mod dead_destination;
mod defer_transports;
mod delay_warning;
mod double_bounce;
mod expire_partly_read;
mod expiry;
mod flow_tokens;
mod hold_release;
mod kick;
mod lines;
mod mixed_workload;
mod probes;
mod reload;
mod relocated;
mod reports;
mod retry_unavailable;
mod send_options;
mod service_outage;
mod support;
mod triggers;
