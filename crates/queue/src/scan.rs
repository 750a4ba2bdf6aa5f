//! Streaming walk over one queue, as Postfix's `mail_scan_dir_next` does.
//!
//! Job: yield the queue IDs found in a queue directory and in its hash
//! subdirectories, one at a time, holding at most one open directory per
//! level so a queue of millions of files costs no memory.
//!
//! Invariants: one-character entries are treated as hash subdirectories
//! and descended into (no `stat` per file, like Postfix); every other name
//! is returned only if it is a valid queue ID. Order is the file system's
//! directory order, depth first.
//!
//! Failure: failing to open the queue directory itself is an error; a
//! subdirectory that vanished or is not a directory is skipped silently,
//! because postsuper may remove or rearrange hash directories at any time.
//! Read errors on an open directory are returned.
//!
//! Limits: files whose names are not UTF-8 are skipped, as they cannot be
//! queue IDs. The scan reports names, not paths: a file sitting in the
//! wrong hash directory is reported by ID and then found missing by the
//! caller, exactly as with Postfix.

use std::fs::{self, ReadDir};
use std::io;
use std::path::PathBuf;

use crate::dirs::{QueueLayout, QueueName};
use crate::queue_id::QueueId;

/// A directory walk in progress.
#[derive(Debug)]
pub struct Scanner {
    /// Open directories, innermost last.
    stack: Vec<(PathBuf, ReadDir)>,
}

impl Scanner {
    /// Starts scanning queue `q` of `layout`.
    pub fn new(layout: &QueueLayout, q: QueueName) -> io::Result<Scanner> {
        let dir = layout.queue_dir(q);
        let rd = fs::read_dir(&dir)?;
        Ok(Scanner {
            stack: vec![(dir, rd)],
        })
    }

    /// The next queue ID, or `None` when the walk is complete.
    pub fn next_id(&mut self) -> io::Result<Option<QueueId>> {
        loop {
            let Some((dir, rd)) = self.stack.last_mut() else {
                return Ok(None);
            };
            let entry = match rd.next() {
                None => {
                    self.stack.pop();
                    continue;
                }
                Some(Err(e)) if e.kind() == io::ErrorKind::NotFound => {
                    // The directory itself went away under us.
                    self.stack.pop();
                    continue;
                }
                Some(Err(e)) => return Err(e),
                Some(Ok(entry)) => entry,
            };
            let name = entry.file_name();
            let Some(name) = name.to_str() else {
                continue;
            };
            if name.len() == 1 {
                let sub = dir.join(name);
                match fs::read_dir(&sub) {
                    Ok(rd) => self.stack.push((sub, rd)),
                    Err(e) if is_vanished(&e) => {}
                    Err(e) => return Err(e),
                }
                continue;
            }
            if let Some(id) = QueueId::parse(name) {
                return Ok(Some(id));
            }
        }
    }
}

fn is_vanished(e: &io::Error) -> bool {
    e.kind() == io::ErrorKind::NotFound || e.raw_os_error() == Some(libc::ENOTDIR)
}

impl Iterator for Scanner {
    type Item = io::Result<QueueId>;

    fn next(&mut self) -> Option<Self::Item> {
        self.next_id().transpose()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn walks_hash_dirs_and_skips_junk() -> io::Result<()> {
        let tmp = tempfile::tempdir()?;
        let l = QueueLayout::new(tmp.path(), "deferred", 2);
        fs::create_dir(l.queue_dir(QueueName::Deferred))?;
        let ids = ["ABCDEF1", "ABXYZ22", "1234567", "ZZ"];
        for s in ids {
            let id = QueueId::parse(s).ok_or_else(|| io::Error::other("bad id"))?;
            let p = l.path(QueueName::Deferred, &id);
            if let Some(parent) = p.parent() {
                fs::create_dir_all(parent)?;
            }
            fs::write(p, b"")?;
        }
        let d = l.queue_dir(QueueName::Deferred);
        fs::write(d.join("bad.name"), b"")?;
        fs::write(d.join("Q"), b"")?; // one-char file: not a directory
        fs::create_dir_all(d.join("E"))?; // empty hash dir
        let mut got: Vec<String> = Scanner::new(&l, QueueName::Deferred)?
            .map(|r| r.map(|id| id.as_str().to_owned()))
            .collect::<io::Result<_>>()?;
        got.sort();
        let mut want: Vec<String> = ids.iter().map(|s| s.to_string()).collect();
        want.sort();
        assert_eq!(got, want);
        Ok(())
    }

    #[test]
    fn missing_queue_is_an_error() {
        let l = QueueLayout::new("/nonexistent-rqmgr-test", "", 1);
        assert!(Scanner::new(&l, QueueName::Incoming).is_err());
    }
}
