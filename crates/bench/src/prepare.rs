//! Filling the queue of a stopped instance with prepared queue files.
//!
//! Job: put thousands of messages into `incoming/` or `deferred/` in
//! seconds, bypassing smtpd and cleanup (which would take minutes and
//! measure cleanup, not the queue manager). Files are written with
//! [`QueueFileBuilder`], which produces cleanup's record layout, so the
//! stock queue managers and delivery agents (discard, smtp) accept them.
//!
//! Invariants: every file and every hash directory created is owned by the
//! mail owner (`postfix`) — delivery agents run as that user and open the
//! queue file read-write — and files are mode 0700 ("ready"). Deferred files
//! get atime = mtime = their next attempt time, as qmgr sets them; they
//! live in hash subdirectories per the instance's `hash_queue_names` and
//! `hash_queue_depth`. The instance must be stopped while this runs, or its
//! queue manager would race the writer.
//!
//! Limits: single-threaded; one recipient list per file; content is a small
//! fixed message (about 600 bytes), like a short notification.

use rqmgr_harness::cmd;
use rqmgr_harness::Instance;
use rqmgr_queue::dirs::{QueueLayout, QueueName};
use rqmgr_queue::writer::QueueFileBuilder;
use std::fs::{FileTimes, OpenOptions};
use std::os::unix::fs::MetadataExt;
use std::path::Path;
use std::process::Command;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use crate::BenchResult;

/// The sender of every prepared message.
const SENDER: &str = "bench@test.localdomain";

/// Where a prepared message goes and when it is due.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Placement {
    /// `incoming/`, mtime now.
    Incoming,
    /// `deferred/`, with next-attempt time (atime = mtime) at this many
    /// seconds from now (negative: already due).
    Deferred(i64),
}

/// Writes queue files into a stopped instance.
#[derive(Debug)]
pub(crate) struct Filler {
    layout: QueueLayout,
    uid: nix::unistd::Uid,
    gid: nix::unistd::Gid,
    now: i64,
}

impl Filler {
    /// A filler for `inst`, reading its hashing parameters with `postconf`.
    pub(crate) fn new(inst: &Instance) -> BenchResult<Filler> {
        let mut c = Command::new("postconf");
        c.arg("-c")
            .arg(inst.config_dir())
            .args(["-h", "hash_queue_names", "hash_queue_depth"]);
        let out = cmd::run_ok(c, None, Duration::from_secs(30))?;
        let v: Vec<&str> = out.stdout.lines().collect();
        let names = v.first().copied().unwrap_or("deferred, defer");
        let depth = v.get(1).and_then(|d| d.trim().parse().ok()).unwrap_or(1);
        let user = nix::unistd::User::from_name("postfix")?.ok_or("no postfix user")?;
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_secs() as i64)
            .unwrap_or(0);
        Ok(Filler {
            layout: QueueLayout::new(inst.queue_dir(), names, depth),
            uid: user.uid,
            gid: user.gid,
            now,
        })
    }

    /// Writes one message with `recipients`, placed as `place`.
    pub(crate) fn write<S: AsRef<str>>(
        &self,
        recipients: &[S],
        place: Placement,
    ) -> BenchResult<()> {
        self.write_id(recipients, place).map(|_| ())
    }

    /// [`Filler::write`], returning the queue ID.
    pub(crate) fn write_id<S: AsRef<str>>(
        &self,
        recipients: &[S],
        place: Placement,
    ) -> BenchResult<String> {
        let arrival = match place {
            Placement::Incoming => self.now,
            // A message that has been deferred for an hour.
            Placement::Deferred(_) => self.now - 3600,
        };
        let mut b = QueueFileBuilder::new(arrival, 0);
        b.sender(SENDER).full_name("Benchmark");
        for r in recipients {
            b.recipient(r.as_ref());
        }
        let first = recipients.first().map(|r| r.as_ref()).unwrap_or("");
        b.body(content(first, arrival).iter());
        let q = match place {
            Placement::Incoming => QueueName::Incoming,
            Placement::Deferred(_) => QueueName::Deferred,
        };
        let id = b.write_queue_file(&self.layout, q)?;
        let path = self.layout.path(q, &id);
        std::os::unix::fs::chown(&path, Some(self.uid.as_raw()), Some(self.gid.as_raw()))?;
        if let Placement::Deferred(delta) = place {
            let when = UNIX_EPOCH + Duration::from_secs((self.now + delta).max(0) as u64);
            let f = OpenOptions::new().write(true).open(&path)?;
            f.set_times(FileTimes::new().set_accessed(when).set_modified(when))?;
        }
        Ok(id.as_str().to_owned())
    }

    /// Gives every directory below the queue directory that the writer
    /// created (hash levels) to the mail owner.
    pub(crate) fn finish(&self) -> BenchResult<()> {
        for q in [QueueName::Incoming, QueueName::Deferred] {
            if self.layout.is_hashed(q) {
                chown_dirs(
                    &self.layout.queue_dir(q),
                    self.uid.as_raw(),
                    self.gid.as_raw(),
                )?;
            }
        }
        Ok(())
    }
}

/// Recursively chowns the subdirectories of `dir` not yet owned by `uid`.
fn chown_dirs(dir: &Path, uid: u32, gid: u32) -> BenchResult<()> {
    for e in std::fs::read_dir(dir)? {
        let e = e?;
        if e.file_type()?.is_dir() {
            if e.metadata()?.uid() != uid {
                std::os::unix::fs::chown(e.path(), Some(uid), Some(gid))?;
            }
            chown_dirs(&e.path(), uid, gid)?;
        }
    }
    Ok(())
}

/// Header and body lines shaped like what cleanup writes for a small
/// message submitted over SMTP.
fn content(to: &str, arrival: i64) -> Vec<String> {
    vec![
        "Received: from bench.localdomain (localhost [127.0.0.1])".to_string(),
        "\tby test.localdomain (Postfix) with ESMTP id BENCH".to_string(),
        format!("\tfor <{to}>; {arrival}"),
        format!("Message-Id: <{arrival}.bench@test.localdomain>"),
        "Date: Mon, 1 Jan 2024 00:00:00 +0000".to_string(),
        format!("From: Benchmark <{SENDER}>"),
        format!("To: <{to}>"),
        "Subject: rqmgr benchmark message".to_string(),
        String::new(),
        "This message was written straight into the queue by rqmgr-bench.".to_string(),
        "It has a few lines of body text so that delivery agents copy".to_string(),
        "something realistic, but it is small on purpose: the benchmark".to_string(),
        "measures the queue manager, not the disk bandwidth.".to_string(),
    ]
}
