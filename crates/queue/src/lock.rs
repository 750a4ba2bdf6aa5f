//! Queue file locks, as Postfix takes them on Linux (`flock`).
//!
//! Job: qmgr takes an exclusive non-blocking lock when it activates a
//! message; delivery agents hold a shared one while delivering. A failed
//! exclusive lock means "still being delivered".
//!
//! Invariants: locks belong to the open file description, so they are
//! released when every descriptor of it is closed (dropping the `File`),
//! exactly like Postfix's `INTERNAL_LOCK`; nothing here ever blocks.
//!
//! Failure: "held by someone else" is `Ok(false)`; every other error is
//! returned as `io::Error`.
//!
//! Limits: Linux/BSD `flock` semantics only; Postfix builds that use
//! `fcntl` locks for `INTERNAL_LOCK` would not see these locks.

use std::fs::File;
use std::io;
use std::os::fd::AsRawFd;

// nix's `Flock` guard takes ownership of the file, but the lock must stay
// tied to the caller's own `File`; the plain call keeps that contract.
#[allow(deprecated)]
fn flock(file: &File, arg: nix::fcntl::FlockArg) -> io::Result<bool> {
    match nix::fcntl::flock(file.as_raw_fd(), arg) {
        Ok(()) => Ok(true),
        Err(nix::errno::Errno::EWOULDBLOCK) => Ok(false),
        Err(e) => Err(io::Error::from(e)),
    }
}

/// Tries to take an exclusive lock; `Ok(false)` if someone else holds one.
pub fn lock_exclusive_nb(file: &File) -> io::Result<bool> {
    flock(file, nix::fcntl::FlockArg::LockExclusiveNonblock)
}

/// Tries to take a shared lock (what delivery agents do).
#[cfg(test)]
fn lock_shared_nb(file: &File) -> io::Result<bool> {
    flock(file, nix::fcntl::FlockArg::LockSharedNonblock)
}

/// Releases this description's lock.
#[cfg(test)]
fn unlock(file: &File) -> io::Result<()> {
    flock(file, nix::fcntl::FlockArg::Unlock).map(|_| ())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exclusive_conflicts_with_shared() -> io::Result<()> {
        let tmp = tempfile::NamedTempFile::new()?;
        let a = File::open(tmp.path())?;
        let b = File::open(tmp.path())?;
        assert!(lock_shared_nb(&a)?);
        assert!(!lock_exclusive_nb(&b)?);
        drop(a);
        assert!(lock_exclusive_nb(&b)?);
        let c = File::open(tmp.path())?;
        assert!(!lock_shared_nb(&c)?);
        unlock(&b)?;
        assert!(lock_shared_nb(&c)?);
        Ok(())
    }
}
