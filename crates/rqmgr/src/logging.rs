//! Postfix-format logging: syslog(3)-style datagrams or postlog records.
//!
//! Job: write each message the way a Postfix 3.7 daemon would, so that log
//! readers (pflogsumm, exporters, `postfix/qmgr` greps) cannot tell the
//! difference. Two transports, chosen once at start-up:
//! * postlog (when `maillog_file` is non-empty): one datagram per record to
//!   `$queue_directory/public/$postlog_service_name`, formatted as
//!   `Mon DD HH:MM:SS host tag[pid]: [severity: ]text` (zero-padded day,
//!   first label of `myhostname`, no newline), as Postfix's msg_logger does;
//! * syslog (otherwise): one datagram to `/dev/log` formatted as glibc's
//!   `syslog(3)` writes it: `<PRI>Mon DD HH:MM:SS tag[pid]: [severity: ]text`
//!   with a blank-padded day, PRI = facility | level (info 6, warning 4,
//!   error 3, fatal and panic 2).
//!
//! Optionally every record is also written to stderr as
//! `tag: [severity: ]text\n` (Postfix's `-V`).
//!
//! Invariants: one [`Logger`] per process, created before chroot (the socket
//! path is absolute and the time zone is loaded then) and passed by
//! reference; no global state. Text is bytes, as Postfix's (addresses and
//! next hops need not be UTF-8), and is made printable first, as Postfix's
//! `printable()` does: control characters become `?`, and so does every
//! non-ASCII byte, except, when SMTPUTF8 is enabled, a byte from 0xc2 to
//! 0xfe followed by continuation bytes, which stay as they are with them;
//! text stops at a NUL byte. The text part is cut at 2000 bytes, which may
//! split a UTF-8 sequence exactly as Postfix does, because records are
//! bytes.
//!
//! Failure: logging never fails and never panics. With no connection, each
//! record retries the connect (as Postfix and glibc do) and is otherwise
//! dropped; a syslog send error reconnects once and retries once (glibc);
//! postlog send errors are ignored (Postfix daemons have no fallback file
//! writer). `fatal` and `panic` only log: the caller exits or aborts.
//!
//! Holding: the event loop may ask the logger to [`Logger::hold`] records
//! and send them together ([`Logger::flush`]) with one `sendmmsg(2)`. Each
//! record is still its own datagram with the time stamp of the moment it
//! was logged, so readers see the same bytes; what changes is that the
//! reader (postlogd or syslogd) is woken once per batch instead of once per
//! record. The caller flushes before it waits and before it asks another
//! Postfix daemon to log about the same message, so the order of lines
//! about one message across daemons is unchanged. `fatal` and `panic`
//! flush and are sent at once; a batch is also sent when it reaches
//! [`HELD_MAX`] records.
//!
//! Limits: only datagram sockets (glibc's stream fallback for `/dev/log` is
//! not implemented); sends block like Postfix's, so a stuck reader stalls the
//! caller.

use std::io::{self, Write};
use std::os::unix::net::UnixDatagram;
use std::path::PathBuf;
use std::sync::{Mutex, PoisonError};
use std::time::{SystemTime, UNIX_EPOCH};

mod config;

pub(crate) use config::{facility_code, LogConfig};

/// The syslog socket glibc uses.
const DEFAULT_SYSLOG_SOCKET: &str = "/dev/log";

/// Longest text part of a record, in bytes (Postfix's record limit).
const MAX_TEXT: usize = 2000;

/// Held records are sent when this many are waiting. Linux queues at most
/// `net.unix.max_dgram_qlen` (10 by default) datagrams per receiving
/// socket; staying below it means a batch never blocks on a reader that
/// had caught up.
const HELD_MAX: usize = 8;

/// Message severity, as Postfix names it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
enum Severity {
    /// No prefix.
    Info,
    /// `warning: `.
    Warning,
    /// `error: `.
    Error,
    /// `fatal: `.
    Fatal,
    /// `panic: `.
    Panic,
}

impl Severity {
    /// The prefix word, or `None` for info.
    fn word(self) -> Option<&'static str> {
        match self {
            Severity::Info => None,
            Severity::Warning => Some("warning"),
            Severity::Error => Some("error"),
            Severity::Fatal => Some("fatal"),
            Severity::Panic => Some("panic"),
        }
    }

    /// The syslog level Postfix maps this severity to.
    fn syslog_level(self) -> i32 {
        match self {
            Severity::Info => 6,
            Severity::Warning => 4,
            Severity::Error => 3,
            Severity::Fatal | Severity::Panic => 2,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Mode {
    Syslog,
    Postlog,
}

/// Broken-down local time, enough for a log time stamp.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Stamp {
    /// 0..=11.
    month: usize,
    day: u32,
    hour: u32,
    min: u32,
    sec: u32,
}

const MONTHS: [&str; 12] = [
    "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec",
];

/// A Postfix-compatible log writer; see the module documentation.
#[derive(Debug)]
pub(crate) struct Logger {
    mode: Mode,
    tag: String,
    facility: i32,
    host_label: String,
    path: PathBuf,
    utf8: bool,
    also_stderr: bool,
    /// `tag[pid]: `, built once (the pid cannot change: we never fork).
    tag_pid: String,
    state: Mutex<State>,
}

/// What records share: the socket, the time-stamp part of the prefix
/// (rebuilt only when the second changes) and one reused record buffer.
#[derive(Debug)]
struct State {
    socket: Option<UnixDatagram>,
    /// The second `head` was built for; `i64::MIN` when it is stale.
    head_secs: i64,
    /// `Mon DD HH:MM:SS host ` (postlog) or `Mon  D HH:MM:SS ` (syslog).
    head: Vec<u8>,
    buf: Vec<u8>,
    /// Records are held until [`Logger::flush`].
    holding: bool,
    /// Held records, back to back; `held_ends[i]` is where record i ends.
    held: Vec<u8>,
    held_ends: Vec<usize>,
}

impl Logger {
    /// Create the logger and connect its socket; call before chroot.
    ///
    /// A failed connect is not an error (Postfix carries on and retries per
    /// record).
    ///
    /// # Errors
    ///
    /// Only when no socket can be created at all (descriptor exhaustion).
    pub(crate) fn new(cfg: &LogConfig) -> io::Result<Logger> {
        let mode = if cfg.maillog_file.is_empty() {
            Mode::Syslog
        } else {
            Mode::Postlog
        };
        let path = match mode {
            Mode::Syslog => cfg.syslog_socket.clone(),
            Mode::Postlog => cfg.postlog_socket.clone(),
        };
        let label = cfg.hostname.split('.').next().unwrap_or("");
        let host_label = if label.is_empty() { "amnesiac" } else { label };
        let socket = UnixDatagram::unbound()?;
        let connected = socket.connect(&path).is_ok().then_some(socket);
        let tag = format!("{}/{}", cfg.syslog_name, cfg.process_name);
        let tag_pid = format!("{tag}[{}]: ", std::process::id());
        let logger = Logger {
            mode,
            tag,
            tag_pid,
            facility: cfg.facility,
            host_label: host_label.to_string(),
            path,
            utf8: cfg.utf8,
            also_stderr: cfg.also_stderr,
            state: Mutex::new(State {
                socket: connected,
                head_secs: i64::MIN,
                head: Vec::with_capacity(64),
                buf: Vec::with_capacity(512),
                holding: false,
                held: Vec::new(),
                held_ends: Vec::new(),
            }),
        };
        // Converting a time once loads the time zone before any chroot hides
        // the zone files; later conversions reuse it.
        let _ = local_stamp(now_secs());
        Ok(logger)
    }

    /// The program tag, e.g. `postfix/qmgr`.
    #[cfg(test)]
    fn tag(&self) -> &str {
        &self.tag
    }

    /// Log an informational message.
    pub(crate) fn info(&self, text: &(impl AsRef<[u8]> + ?Sized)) {
        self.log(Severity::Info, text.as_ref());
    }

    /// Log `warning: text`.
    pub(crate) fn warning(&self, text: &(impl AsRef<[u8]> + ?Sized)) {
        self.log(Severity::Warning, text.as_ref());
    }

    /// Log `error: text`.
    pub(crate) fn error(&self, text: &(impl AsRef<[u8]> + ?Sized)) {
        self.log(Severity::Error, text.as_ref());
    }

    /// Log `fatal: text`; the caller then exits with status 1.
    pub(crate) fn fatal(&self, text: &(impl AsRef<[u8]> + ?Sized)) {
        self.log(Severity::Fatal, text.as_ref());
    }

    /// Postfix's `msg_fatal()`: log `fatal: text` and exit with status 1,
    /// so that master(8) restarts us after its throttle delay.
    pub(crate) fn die(&self, text: &(impl AsRef<[u8]> + ?Sized)) -> ! {
        self.fatal(text);
        std::process::exit(1);
    }

    /// Log `panic: text`; the caller then aborts.
    pub(crate) fn panic(&self, text: &(impl AsRef<[u8]> + ?Sized)) {
        self.log(Severity::Panic, text.as_ref());
    }

    /// From now on, hold records until [`Logger::flush`] (see the module
    /// documentation).
    pub(crate) fn hold(&self) {
        self.lock().holding = true;
    }

    /// Send every held record.
    pub(crate) fn flush(&self) {
        let mut state = self.lock();
        self.flush_locked(&mut state);
    }

    /// Log `text` at `severity` with the current local time.
    fn log(&self, severity: Severity, text: &[u8]) {
        let secs = now_secs();
        let mut state = self.lock();
        if state.head_secs != secs {
            let stamp = local_stamp(secs).unwrap_or_else(|| utc_stamp(secs));
            self.write_head(&mut state.head, &stamp);
            state.head_secs = secs;
        }
        self.emit_locked(&mut state, severity, text);
    }

    /// Logs with a given time stamp (tests).
    #[cfg(test)]
    fn emit(&self, severity: Severity, text: &(impl AsRef<[u8]> + ?Sized), stamp: &Stamp) {
        let mut state = self.lock();
        self.write_head(&mut state.head, stamp);
        state.head_secs = i64::MIN;
        self.emit_locked(&mut state, severity, text.as_ref());
    }

    /// The time-stamp part of the prefix: `Mon DD HH:MM:SS host ` for
    /// postlog, `Mon  D HH:MM:SS ` for syslog (its `<pri>` goes before).
    fn write_head(&self, head: &mut Vec<u8>, stamp: &Stamp) {
        use std::fmt::Write as _;
        let month = MONTHS.get(stamp.month).copied().unwrap_or("Jan");
        let mut text = String::with_capacity(64);
        let _ = match self.mode {
            Mode::Postlog => write!(
                text,
                "{month} {:02} {:02}:{:02}:{:02} {} ",
                stamp.day, stamp.hour, stamp.min, stamp.sec, self.host_label
            ),
            Mode::Syslog => write!(
                text,
                "{month} {:>2} {:02}:{:02}:{:02} ",
                stamp.day, stamp.hour, stamp.min, stamp.sec
            ),
        };
        head.clear();
        head.extend_from_slice(text.as_bytes());
    }

    fn emit_locked(&self, state: &mut State, severity: Severity, text: &[u8]) {
        if self.also_stderr {
            let clean = printable(text, self.utf8);
            let line = self.stderr_line(severity, &clean);
            let _ = io::stderr().lock().write_all(&line);
        }
        let urgent = matches!(severity, Severity::Fatal | Severity::Panic);
        if urgent {
            self.flush_locked(state);
        }
        let State {
            socket,
            head,
            buf,
            holding,
            held,
            held_ends,
            ..
        } = state;
        buf.clear();
        if self.mode == Mode::Syslog {
            let pri = self.facility | severity.syslog_level();
            let _ = write!(buf, "<{pri}>");
        }
        buf.extend_from_slice(head);
        buf.extend_from_slice(self.tag_pid.as_bytes());
        if let Some(word) = severity.word() {
            buf.extend_from_slice(word.as_bytes());
            buf.extend_from_slice(b": ");
        }
        let start = buf.len();
        printable_into(buf, text, self.utf8);
        buf.truncate(start + MAX_TEXT);
        if *holding && !urgent {
            held.extend_from_slice(buf);
            held_ends.push(held.len());
            if held_ends.len() >= HELD_MAX {
                self.flush_locked(state);
            }
        } else {
            self.send(socket, buf);
        }
    }

    /// Sends the held records, as many per `sendmmsg` as the kernel takes;
    /// whatever it refuses goes through [`Logger::send`] one by one, which
    /// applies the reconnect rules of a single record.
    fn flush_locked(&self, state: &mut State) {
        if state.held_ends.is_empty() {
            return;
        }
        let State {
            socket,
            held,
            held_ends,
            ..
        } = state;
        if socket.is_none() {
            *socket = self.connect();
        }
        // At most HELD_MAX records are held (`log` sends them then), so
        // they fit in arrays on the stack; a flush allocates nothing but
        // what `sendmmsg`'s headers need.
        let mut records: [&[u8]; HELD_MAX] = [&[]; HELD_MAX];
        let mut start = 0;
        for ends in held_ends.chunks(HELD_MAX) {
            for (slot, &end) in records.iter_mut().zip(ends) {
                *slot = &held[start..end];
                start = end;
            }
            let records = &records[..ends.len()];
            let mut sent = 0;
            if let Some(sock) = socket.as_ref() {
                while sent < records.len() {
                    match send_many(sock, &records[sent..]) {
                        Ok(0) | Err(_) => break,
                        Ok(n) => sent += n,
                    }
                }
            }
            for r in &records[sent..] {
                self.send(socket, r);
            }
        }
        held.clear();
        held_ends.clear();
    }

    /// The stderr line (`-V`): not truncated, newline-terminated.
    fn stderr_line(&self, severity: Severity, clean: &[u8]) -> Vec<u8> {
        let mut out = format!("{}: ", self.tag).into_bytes();
        if let Some(word) = severity.word() {
            out.extend_from_slice(word.as_bytes());
            out.extend_from_slice(b": ");
        }
        out.extend_from_slice(clean);
        out.push(b'\n');
        out
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        // A panic elsewhere while holding the lock leaves only a socket
        // and buffers behind, which are still usable.
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn connect(&self) -> Option<UnixDatagram> {
        let sock = UnixDatagram::unbound().ok()?;
        sock.connect(&self.path).ok()?;
        Some(sock)
    }

    fn send(&self, guard: &mut Option<UnixDatagram>, record: &[u8]) {
        if guard.is_none() {
            *guard = self.connect();
        }
        let Some(sock) = guard.as_ref() else {
            return;
        };
        if sock.send(record).is_ok() || self.mode == Mode::Postlog {
            return;
        }
        // glibc: the daemon may have restarted; reconnect and try once more.
        *guard = self.connect();
        if let Some(sock) = guard.as_ref() {
            let _ = sock.send(record);
        }
    }
}

/// One `sendmmsg(2)` of the first [`HELD_MAX`] of `records` on a
/// connected datagram socket; returns how many the kernel took.
fn send_many(sock: &UnixDatagram, records: &[&[u8]]) -> nix::Result<usize> {
    use nix::sys::socket::{sendmmsg, MsgFlags, MultiHeaders, UnixAddr};
    use std::io::IoSlice;
    use std::os::fd::AsRawFd;
    let records = &records[..records.len().min(HELD_MAX)];
    let mut slices = [[IoSlice::new(&[])]; HELD_MAX];
    for (slice, record) in slices.iter_mut().zip(records) {
        *slice = [IoSlice::new(record)];
    }
    let addrs: [Option<UnixAddr>; HELD_MAX] = [None; HELD_MAX];
    let mut headers = MultiHeaders::<UnixAddr>::preallocate(records.len(), None);
    let results = sendmmsg(
        sock.as_raw_fd(),
        &mut headers,
        &slices[..records.len()],
        &addrs[..records.len()],
        [],
        MsgFlags::empty(),
    )?;
    Ok(results.count())
}

/// Postfix's `printable()` applied to a message, cut at the first NUL.
fn printable(text: &[u8], utf8: bool) -> Vec<u8> {
    let mut out = Vec::with_capacity(text.len());
    printable_into(&mut out, text, utf8);
    out
}

/// [`printable`], appending to `out`. With `utf8`, Postfix does not check
/// that a sequence is valid UTF-8, only that it looks like one: a lead
/// byte and at least one continuation byte, which keep every
/// continuation byte after them. Valid UTF-8 therefore passes whole, and
/// a stray 8-bit byte (Latin-1) becomes `?`.
fn printable_into(out: &mut Vec<u8>, text: &[u8], utf8: bool) {
    let text = text.split(|&b| b == 0).next().unwrap_or_default();
    if text.iter().all(|&b| b.is_ascii_graphic() || b == b' ') {
        out.extend_from_slice(text);
        return;
    }
    let continuation = |b: u8| (0x80..0xc0).contains(&b);
    let mut i = 0;
    while let Some(&b) = text.get(i) {
        if b.is_ascii_graphic() || b == b' ' {
            out.push(b);
        } else if utf8
            && (0xc2..=0xfe).contains(&b)
            && text.get(i + 1).is_some_and(|&n| continuation(n))
        {
            let end = text[i + 1..]
                .iter()
                .position(|&n| !continuation(n))
                .map_or(text.len(), |k| i + 1 + k);
            out.extend_from_slice(&text[i..end]);
            i = end;
            continue;
        } else {
            out.push(b'?');
        }
        i += 1;
    }
}

fn now_secs() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX))
}

/// Local time via the C library, which honours `TZ` as Postfix does.
#[allow(unsafe_code)]
fn local_stamp(secs: i64) -> Option<Stamp> {
    let t = libc::time_t::try_from(secs).ok()?;
    // SAFETY: `tm` is plain old data, so all-zero is a valid value;
    // localtime_r only reads `t` and writes `tm`, both live locals, and is
    // thread-safe. A null return (conversion failure) is checked.
    let tm = unsafe {
        let mut tm: libc::tm = std::mem::zeroed();
        if libc::localtime_r(&t, &mut tm).is_null() {
            return None;
        }
        tm
    };
    Some(Stamp {
        month: usize::try_from(tm.tm_mon).ok()?,
        day: u32::try_from(tm.tm_mday).ok()?,
        hour: u32::try_from(tm.tm_hour).ok()?,
        min: u32::try_from(tm.tm_min).ok()?,
        sec: u32::try_from(tm.tm_sec).ok()?,
    })
}

/// UTC fallback when the C library cannot convert the time.
fn utc_stamp(secs: i64) -> Stamp {
    let days = secs.div_euclid(86400);
    let rem = secs.rem_euclid(86400);
    // Civil-from-days (proleptic Gregorian), with March-based years.
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 2 } else { mp - 10 };
    let to_u32 = |v: i64| u32::try_from(v).unwrap_or(0);
    Stamp {
        month: usize::try_from(month).unwrap_or(0),
        day: to_u32(day),
        hour: to_u32(rem / 3600),
        min: to_u32(rem / 60 % 60),
        sec: to_u32(rem % 60),
    }
}

/// An operating-system error as Postfix's `%m` prints it: the C library's
/// text, without Rust's "(os error N)".
pub(crate) fn os_error(e: &std::io::Error) -> String {
    match e.raw_os_error() {
        Some(code) => nix::errno::Errno::from_raw(code).desc().to_string(),
        None => e.to_string(),
    }
}

#[cfg(test)]
mod tests;
