//! The master(8) interface of a Postfix daemon.
//!
//! Job: command-line parsing ([`DaemonArgs`]), the inherited descriptors
//! (status channel, token pipe, listen sockets) and the generation number.
//! See the submodules for invariants and limits.

mod args;
mod fds;

pub use args::{generation_from_env, DaemonArgs};
pub use fds::{
    adopt_trigger_endpoint, close_on_exec, InFlowPipe, StatusChannel, TriggerEndpoint,
    MASTER_LISTEN_FD,
};
