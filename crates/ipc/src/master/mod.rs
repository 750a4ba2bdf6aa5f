//! The master(8) interface of a Postfix daemon.
//!
//! Job: command-line parsing ([`DaemonArgs`]), the inherited descriptors
//! (status channel, token pipe, listen sockets) and the generation number.
//! See the submodules for invariants and limits.

mod args;
mod fds;

pub use args::{generation_from_env, parse_generation, DaemonArgs};
pub use fds::{
    adopt_listener, status_record, InFlowPipe, StatusChannel, MASTER_FLOW_READ, MASTER_FLOW_WRITE,
    MASTER_LISTEN_FD, MASTER_STATUS_FD, MASTER_STAT_AVAIL, MASTER_STAT_TAKEN,
};
