//! End-to-end tests: stock Postfix daemons with a chosen queue manager in
//! private instances (see the `rqmgr-harness` crate).
//!
//! Each scenario is a function taking a [`QueueManager`], run once with the
//! stock qmgr (the reference: these must always pass, they validate the
//! scenario and the harness) and once with rqmgr (the daemon under test).
//! Instances run in parallel, each in its own directory on its own ports.
//! Timeouts in these tests only guard against hangs; nothing asserts speed.
//! Requires root and Postfix installed (`scripts/test.sh` provides both); a
//! missing Postfix fails the tests with a message saying so.

mod common;

mod admin_view;
mod bulk_smtp_to_sink;
mod corrupt_queue_file;
mod disk_full;
mod eight_bit_next_hops;
mod fifo_trigger;
mod hung_bounce_service;
mod idle_trigger_clients;
mod local_delivery;
mod operator_control;
mod permanent_failure;
mod postfix_release;
mod pulled_mid_list;
mod qmgr_crash_recovery;
mod reload_and_stop;
mod rqmgrctl_switch;
mod sigkill_soak;
mod startup_fatal;
mod temporary_failure;
mod unreadable_queue_file;
