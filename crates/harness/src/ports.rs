//! Free TCP ports on 127.0.0.1, leased so that parallel tests never clash.
//!
//! Job: hand each smtpd and smtp-sink its own port, also across test binaries
//! running at the same time. A lease is an exclusive `flock` on
//! `$TMPDIR/rqmgr-harness-ports/PORT.lock`, held for the lease's lifetime, so
//! two harness users never pick the same port, and the port must also be
//! bindable when picked. Ports are drawn below Linux's default ephemeral range
//! (32768–60999) so that outgoing connections of the machine do not take a
//! leased port between its lease and its bind. Limits: a foreign program may
//! still bind the port in between; the bind check makes that unlikely.

use crate::error::{Error, Result};
use nix::fcntl::{Flock, FlockArg};
use std::collections::hash_map::RandomState;
use std::fs::File;
use std::hash::{BuildHasher, Hasher};
use std::net::{Ipv4Addr, TcpListener};

const LOW: u16 = 20000;
const HIGH: u16 = 32000;

/// An exclusively held TCP port number; the lease ends on drop.
#[derive(Debug)]
pub struct PortLease {
    port: u16,
    _lock: Flock<File>,
}

impl PortLease {
    /// Leases a free port.
    pub fn new() -> Result<PortLease> {
        let dir = std::env::temp_dir().join("rqmgr-harness-ports");
        std::fs::create_dir_all(&dir).map_err(|e| Error::io(format!("mkdir {dir:?}"), e))?;
        // RandomState is seeded randomly per instance: a cheap source of
        // randomness without a global counter or an extra dependency.
        let seed = RandomState::new();
        for attempt in 0u64..2000 {
            let mut h = seed.build_hasher();
            h.write_u64(attempt);
            let port = LOW + (h.finish() % u64::from(HIGH - LOW)) as u16;
            let path = dir.join(format!("{port}.lock"));
            let Ok(file) = File::create(&path) else {
                continue;
            };
            let Ok(lock) = Flock::lock(file, FlockArg::LockExclusiveNonblock) else {
                continue;
            };
            if TcpListener::bind((Ipv4Addr::LOCALHOST, port)).is_ok() {
                return Ok(PortLease { port, _lock: lock });
            }
        }
        Err(Error::new("no free TCP port found on 127.0.0.1"))
    }

    /// The port number.
    pub fn port(&self) -> u16 {
        self.port
    }
}
