//! Building complete queue files the way cleanup(8) writes them.
//!
//! Job: produce byte-exact queue files for tests, benchmarks and fixtures,
//! and drop them into a queue directory under a fresh short queue ID.
//!
//! Invariants: the output has cleanup's record order (`C T A… F L I > S V
//! W`, per recipient `A notify_flags`, `A dsn_orig_rcpt`, `O`, `R`/`D`,
//! then `M`, content, `X`, extracted records, `E`), and its size record
//! holds the true data size, data offset, recipient count, read flags and
//! content length, so [`crate::message::read_message`] accepts it whenever
//! the content is non-empty.
//!
//! Failure: [`QueueFileBuilder::build`] cannot fail; writing into a queue
//! returns the `io::Error` of the failing step and removes its temporary
//! file.
//!
//! Limits: no `p` pointer records and no milter edits; an empty content
//! gives data size 0, which qmgr rejects (cleanup never writes that, as it
//! always adds headers). Files are not fsync'ed, for speed.

use std::fs::{self, DirBuilder, OpenOptions};
use std::io::{self, Write};
use std::os::unix::fs::{DirBuilderExt, MetadataExt, OpenOptionsExt};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};

use nix::sys::stat::{fchmod, Mode};

use crate::dirs::{QueueLayout, QueueName};
use crate::queue_id::QueueId;
use crate::record::{put_record, rec_type as rt};
use crate::size::SizeRecord;

/// One recipient to write.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RecipientSpec {
    /// The address.
    pub address: Vec<u8>,
    /// Original recipient (`O`).
    pub orig_rcpt: Option<Vec<u8>>,
    /// DSN original recipient (`A dsn_orig_rcpt=`).
    pub dsn_orig_rcpt: Option<Vec<u8>>,
    /// DSN NOTIFY flags (`A notify_flags=`), 0 for none.
    pub notify_flags: i32,
    /// Write `D` instead of `R`.
    pub done: bool,
}

/// Builder of one queue file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct QueueFileBuilder {
    arrival: (i64, i64),
    create_time: Option<i64>,
    sender: Vec<u8>,
    full_name: Option<Vec<u8>>,
    envelope_id: Option<Vec<u8>>,
    ret_flags: Option<i32>,
    rewrite_context: Option<Vec<u8>>,
    attrs: Vec<(Vec<u8>, Vec<u8>)>,
    filter: Option<Vec<u8>>,
    inspector: Option<Vec<u8>>,
    verp: Option<Vec<u8>>,
    redirect: Option<Vec<u8>>,
    warn_time: Option<i64>,
    recipients: Vec<RecipientSpec>,
    content: Vec<(u8, Vec<u8>)>,
    extracted: Vec<RecipientSpec>,
    extracted_attrs: Vec<(Vec<u8>, Vec<u8>)>,
    mixed: bool,
    sendopts: i32,
}

impl Default for QueueFileBuilder {
    fn default() -> Self {
        QueueFileBuilder::new(1_700_000_000, 0)
    }
}

impl QueueFileBuilder {
    /// A file that arrived at `sec`.`usec`, with a null sender and nothing else.
    pub fn new(sec: i64, usec: i64) -> Self {
        QueueFileBuilder {
            arrival: (sec, usec),
            create_time: None,
            sender: Vec::new(),
            full_name: None,
            envelope_id: None,
            ret_flags: None,
            rewrite_context: Some(b"local".to_vec()),
            attrs: Vec::new(),
            filter: None,
            inspector: None,
            verp: None,
            redirect: None,
            warn_time: None,
            recipients: Vec::new(),
            content: Vec::new(),
            extracted: Vec::new(),
            extracted_attrs: Vec::new(),
            mixed: false,
            sendopts: 0,
        }
    }

    /// Sets `A create_time=` (default: the arrival seconds).
    pub fn create_time(&mut self, t: i64) -> &mut Self {
        self.create_time = Some(t);
        self
    }
    /// Sets the envelope sender (empty = null sender).
    pub fn sender(&mut self, s: impl AsRef<[u8]>) -> &mut Self {
        self.sender = s.as_ref().to_vec();
        self
    }
    /// Sets the `F` full name.
    pub fn full_name(&mut self, s: impl AsRef<[u8]>) -> &mut Self {
        self.full_name = Some(s.as_ref().to_vec());
        self
    }
    /// Sets `A envelope_id=`.
    pub fn envelope_id(&mut self, s: impl AsRef<[u8]>) -> &mut Self {
        self.envelope_id = Some(s.as_ref().to_vec());
        self
    }
    /// Sets `A ret_flags=`.
    pub fn ret_flags(&mut self, f: i32) -> &mut Self {
        self.ret_flags = Some(f);
        self
    }
    /// Sets or removes `A rewrite_context=` (default `local`).
    pub fn rewrite_context(&mut self, s: Option<&[u8]>) -> &mut Self {
        self.rewrite_context = s.map(<[u8]>::to_vec);
        self
    }
    /// Adds an envelope `A name=value` record (before the sender).
    pub fn attr(&mut self, name: impl AsRef<[u8]>, value: impl AsRef<[u8]>) -> &mut Self {
        self.attrs
            .push((name.as_ref().to_vec(), value.as_ref().to_vec()));
        self
    }
    /// Adds an `A name=value` record to the extracted segment.
    pub fn extracted_attr(&mut self, name: impl AsRef<[u8]>, value: impl AsRef<[u8]>) -> &mut Self {
        self.extracted_attrs
            .push((name.as_ref().to_vec(), value.as_ref().to_vec()));
        self
    }
    /// Sets the `L` content filter.
    pub fn filter(&mut self, s: impl AsRef<[u8]>) -> &mut Self {
        self.filter = Some(s.as_ref().to_vec());
        self
    }
    /// Sets the `I` content inspector.
    pub fn inspector(&mut self, s: impl AsRef<[u8]>) -> &mut Self {
        self.inspector = Some(s.as_ref().to_vec());
        self
    }
    /// Sets the `V` VERP delimiters.
    pub fn verp(&mut self, s: impl AsRef<[u8]>) -> &mut Self {
        self.verp = Some(s.as_ref().to_vec());
        self
    }
    /// Sets the `>` redirect address.
    pub fn redirect(&mut self, s: impl AsRef<[u8]>) -> &mut Self {
        self.redirect = Some(s.as_ref().to_vec());
        self
    }
    /// Writes a `W` record with this next-warning time.
    pub fn warn_time(&mut self, t: i64) -> &mut Self {
        self.warn_time = Some(t);
        self
    }
    /// Sets the send-options field of the size record.
    pub fn sendopts(&mut self, f: i32) -> &mut Self {
        self.sendopts = f;
        self
    }
    /// Sets the MIXED_RCPT_OTHER read flag.
    pub fn mixed_rcpt_other(&mut self, on: bool) -> &mut Self {
        self.mixed = on;
        self
    }
    /// Adds a plain envelope recipient.
    pub fn recipient(&mut self, addr: impl AsRef<[u8]>) -> &mut Self {
        self.recipients.push(RecipientSpec {
            address: addr.as_ref().to_vec(),
            ..RecipientSpec::default()
        });
        self
    }
    /// Adds a fully specified envelope recipient.
    pub fn recipient_spec(&mut self, r: RecipientSpec) -> &mut Self {
        self.recipients.push(r);
        self
    }
    /// Adds a recipient to the extracted segment (after the content).
    pub fn extracted_recipient(&mut self, r: RecipientSpec) -> &mut Self {
        self.extracted.push(r);
        self
    }
    /// Appends content lines, each as one `N` record.
    pub fn body<I, L>(&mut self, lines: I) -> &mut Self
    where
        I: IntoIterator<Item = L>,
        L: AsRef<[u8]>,
    {
        self.content
            .extend(lines.into_iter().map(|l| (rt::NORM, l.as_ref().to_vec())));
        self
    }
    /// Appends one raw content record (`N`, `L` or `w`).
    pub fn content_record(&mut self, rec_type: u8, data: impl AsRef<[u8]>) -> &mut Self {
        self.content.push((rec_type, data.as_ref().to_vec()));
        self
    }

    /// Number of recipients the size record will announce.
    pub fn recipient_count(&self) -> usize {
        self.recipients.len() + self.extracted.len()
    }

    /// The complete file.
    pub fn build(&self) -> Vec<u8> {
        let mut out =
            Vec::with_capacity(512 + self.content.iter().map(|c| c.1.len() + 3).sum::<usize>());
        let placeholder = SizeRecord::default().format();
        put_record(&mut out, rt::SIZE, &placeholder);
        let time = format!("{} {}", self.arrival.0, self.arrival.1);
        put_record(&mut out, rt::TIME, time.as_bytes());
        let ctime = self.create_time.unwrap_or(self.arrival.0);
        put_attr(&mut out, b"create_time", ctime.to_string().as_bytes());
        if let Some(v) = &self.envelope_id {
            put_attr(&mut out, b"envelope_id", v);
        }
        if let Some(v) = self.ret_flags {
            put_attr(&mut out, b"ret_flags", v.to_string().as_bytes());
        }
        if let Some(v) = &self.rewrite_context {
            put_attr(&mut out, b"rewrite_context", v);
        }
        for (n, v) in &self.attrs {
            put_attr(&mut out, n, v);
        }
        let optional = [
            (rt::FULL, &self.full_name),
            (rt::FILT, &self.filter),
            (rt::INSP, &self.inspector),
            (rt::RDR, &self.redirect),
        ];
        for (t, v) in optional {
            if let Some(v) = v {
                put_record(&mut out, t, v);
            }
        }
        put_record(&mut out, rt::FROM, &self.sender);
        // After the sender, as smtpd and sendmail send it: qmgr honours
        // VERP only when it already knows a non-null sender.
        if let Some(v) = &self.verp {
            put_record(&mut out, rt::VERP, v);
        }
        if let Some(w) = self.warn_time {
            put_record(&mut out, rt::WARN, format!("{w:15}").as_bytes());
        }
        for r in &self.recipients {
            put_recipient(&mut out, r);
        }
        put_record(&mut out, rt::MESG, b"");
        let data_offset = out.len();
        for (t, line) in &self.content {
            put_record(&mut out, *t, line);
        }
        let xtra_offset = out.len();
        put_record(&mut out, rt::XTRA, b"");
        for (n, v) in &self.extracted_attrs {
            put_attr(&mut out, n, v);
        }
        for r in &self.extracted {
            put_recipient(&mut out, r);
        }
        put_record(&mut out, rt::END, b"");

        let notify = self
            .recipients
            .iter()
            .chain(&self.extracted)
            .fold(0, |acc, r| acc | r.notify_flags);
        let data_size = (xtra_offset - data_offset) as i64;
        let size = SizeRecord {
            data_size,
            data_offset: data_offset as i64,
            rcpt_count: self.recipient_count() as i64,
            rflags: i32::from(self.mixed) | (notify << 1),
            content_length: data_size,
            sendopts: self.sendopts,
        };
        // Same width as the placeholder, so no offset moves.
        let payload = size.format();
        out[2..2 + payload.len()].copy_from_slice(&payload);
        out
    }

    /// Writes the file into queue `q` of `layout` like cleanup does
    /// (created 0600, complete, then 0700) under a fresh short queue ID.
    pub fn write_queue_file(&self, layout: &QueueLayout, q: QueueName) -> io::Result<QueueId> {
        let bytes = self.build();
        let dir = layout.queue_dir(q);
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap_or_default();
        // The sequence number keeps concurrent writers of one process apart;
        // the dots keep scanners from mistaking the file for a queue file.
        let seq = TEMP_SEQ.fetch_add(1, Ordering::Relaxed);
        let temp = dir.join(format!(
            "{}.{}.{seq}",
            now.subsec_micros(),
            std::process::id()
        ));
        let result = write_then_link(&temp, &bytes, layout, q, now.subsec_micros());
        let _ = fs::remove_file(&temp);
        result
    }
}

static TEMP_SEQ: AtomicU64 = AtomicU64::new(0);

fn write_then_link(
    temp: &std::path::Path,
    bytes: &[u8],
    layout: &QueueLayout,
    q: QueueName,
    mut usec: u32,
) -> io::Result<QueueId> {
    let mut f = OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(temp)?;
    f.write_all(bytes)?;
    set_mode(&f, 0o700)?;
    let inode = f.metadata()?.ino();
    drop(f);
    for _ in 0..1000 {
        let id = QueueId::short(usec % 0x10_0000, inode);
        let path = layout.path(q, &id);
        if let Some(parent) = path.parent() {
            DirBuilder::new()
                .recursive(true)
                .mode(0o700)
                .create(parent)?;
        }
        // A hard link fails instead of replacing an existing file.
        match fs::hard_link(temp, &path) {
            Ok(()) => return Ok(id),
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => usec = usec.wrapping_add(1),
            Err(e) => return Err(e),
        }
    }
    Err(io::Error::new(
        io::ErrorKind::AlreadyExists,
        "no free queue id",
    ))
}

/// Sets the permission bits of an open queue file.
fn set_mode(file: &fs::File, mode: u32) -> io::Result<()> {
    let mode = Mode::from_bits_truncate(mode as libc::mode_t);
    fchmod(file, mode).map_err(io::Error::from)
}

fn put_attr(out: &mut Vec<u8>, name: &[u8], value: &[u8]) {
    let mut payload = Vec::with_capacity(name.len() + 1 + value.len());
    payload.extend_from_slice(name);
    payload.push(b'=');
    payload.extend_from_slice(value);
    put_record(out, rt::ATTR, &payload);
}

fn put_recipient(out: &mut Vec<u8>, r: &RecipientSpec) {
    if r.notify_flags != 0 {
        put_attr(out, b"notify_flags", r.notify_flags.to_string().as_bytes());
    }
    if let Some(v) = &r.dsn_orig_rcpt {
        put_attr(out, b"dsn_orig_rcpt", v);
    }
    if let Some(v) = &r.orig_rcpt {
        put_record(out, rt::ORCP, v);
    }
    let t = if r.done { rt::DONE } else { rt::RCPT };
    put_record(out, t, &r.address);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn writes_into_a_queue_with_mode_0700() -> io::Result<()> {
        let tmp = tempfile::tempdir()?;
        let layout = QueueLayout::new(tmp.path(), "deferred", 1);
        fs::create_dir(layout.queue_dir(QueueName::Deferred))?;
        let mut b = QueueFileBuilder::new(1_700_000_000, 5);
        b.sender("s@example.org")
            .recipient("r@example.com")
            .body(["x"]);
        let id = b.write_queue_file(&layout, QueueName::Deferred)?;
        let id2 = b.write_queue_file(&layout, QueueName::Deferred)?;
        assert_ne!(id, id2);
        let md = layout.open_ok(QueueName::Deferred, &id)?;
        assert!(md.is_some());
        assert_eq!(fs::read(layout.path(QueueName::Deferred, &id))?, b.build());
        // Only the two queue files remain: temporaries are gone.
        let n = crate::scan::Scanner::new(&layout, QueueName::Deferred)?.count();
        assert_eq!(n, 2);
        Ok(())
    }
}
