//! Tests of the parent module.

use super::*;
use std::path::Path;
use std::time::Duration;

/// A scratch directory under the system temp dir, removed on drop.
struct TempDir(PathBuf);

impl TempDir {
    fn new(tag: &str) -> TempDir {
        let nanos = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.subsec_nanos());
        let p =
            std::env::temp_dir().join(format!("rqmgr-log-{tag}-{}-{nanos}", std::process::id()));
        std::fs::create_dir_all(&p).expect("create temp dir");
        TempDir(p)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn config(maillog: &str, sock: &Path) -> LogConfig {
    LogConfig {
        syslog_name: "postfix".into(),
        process_name: "qmgr".into(),
        facility: facility_code("mail").unwrap_or(16),
        maillog_file: maillog.into(),
        postlog_socket: sock.to_path_buf(),
        syslog_socket: sock.to_path_buf(),
        hostname: "test.localdomain".into(),
        utf8: false,
        also_stderr: false,
    }
}

fn receiver(dir: &TempDir) -> (UnixDatagram, PathBuf) {
    let path = dir.0.join("sock");
    let rx = UnixDatagram::bind(&path).expect("bind");
    rx.set_read_timeout(Some(Duration::from_secs(5)))
        .expect("timeout");
    (rx, path)
}

fn recv(rx: &UnixDatagram) -> Vec<u8> {
    let mut buf = vec![0u8; 8192];
    let n = rx.recv(&mut buf).expect("datagram");
    buf.truncate(n);
    buf
}

const STAMP: Stamp = Stamp {
    month: 10,
    day: 5,
    hour: 4,
    min: 1,
    sec: 56,
};

#[test]
fn postlog_record_bytes() {
    let dir = TempDir::new("postlog");
    let (rx, path) = receiver(&dir);
    let logger = Logger::new(&config("/var/log/postfix.log", &path)).expect("logger");
    let pid = std::process::id();
    logger.emit(Severity::Info, "154E7990181: removed", &STAMP);
    let want = format!("Nov 05 04:01:56 test postfix/qmgr[{pid}]: 154E7990181: removed");
    assert_eq!(String::from_utf8_lossy(&recv(&rx)), want);
    logger.emit(Severity::Warning, "tab\there é", &STAMP);
    let want = format!("Nov 05 04:01:56 test postfix/qmgr[{pid}]: warning: tab?here ??");
    assert_eq!(String::from_utf8_lossy(&recv(&rx)), want);
    // Through the public API with the real clock: check all but the stamp.
    logger.error("x");
    let got = recv(&rx);
    let tail = format!(" test postfix/qmgr[{pid}]: error: x");
    assert_eq!(got.len(), 15 + tail.len());
    assert_eq!(&got[15..], tail.as_bytes());
    assert!(MONTHS.iter().any(|m| got.starts_with(m.as_bytes())));
}

#[test]
fn syslog_record_bytes_and_truncation() {
    let dir = TempDir::new("syslog");
    let (rx, path) = receiver(&dir);
    let mut cfg = config("", &path);
    cfg.utf8 = true;
    cfg.hostname = String::new();
    let logger = Logger::new(&cfg).expect("logger");
    let pid = std::process::id();
    logger.emit(Severity::Warning, "hello é", &STAMP);
    let want = format!("<20>Nov  5 04:01:56 postfix/qmgr[{pid}]: warning: hello é");
    assert_eq!(String::from_utf8_lossy(&recv(&rx)), want);
    logger.emit(Severity::Fatal, &"y".repeat(3000), &STAMP);
    let got = recv(&rx);
    let head = format!("<18>Nov  5 04:01:56 postfix/qmgr[{pid}]: fatal: ");
    assert_eq!(got.len(), head.len() + MAX_TEXT);
    assert!(got.starts_with(head.as_bytes()));
    logger.emit(Severity::Panic, "a\0b", &STAMP);
    assert!(recv(&rx).ends_with(b"panic: a"));
}

#[test]
fn held_records_arrive_in_order_on_flush() {
    let dir = TempDir::new("hold");
    let (rx, path) = receiver(&dir);
    rx.set_nonblocking(true).expect("nonblocking");
    let logger = Logger::new(&config("/var/log/x", &path)).expect("logger");
    logger.hold();
    logger.emit(Severity::Info, "one", &STAMP);
    logger.emit(Severity::Warning, "two", &STAMP);
    let mut buf = [0u8; 64];
    assert!(rx.recv(&mut buf).is_err(), "held records must wait");
    logger.flush();
    rx.set_nonblocking(false).expect("blocking");
    assert!(recv(&rx).ends_with(b"]: one"));
    assert!(recv(&rx).ends_with(b"]: warning: two"));
    // A fatal record goes out at once, after what was held.
    logger.emit(Severity::Info, "three", &STAMP);
    logger.emit(Severity::Fatal, "four", &STAMP);
    assert!(recv(&rx).ends_with(b"]: three"));
    assert!(recv(&rx).ends_with(b"]: fatal: four"));
    // A full batch goes out without a flush.
    for i in 0..HELD_MAX {
        logger.emit(Severity::Info, &format!("n{i}"), &STAMP);
    }
    for i in 0..HELD_MAX {
        assert!(recv(&rx).ends_with(format!("]: n{i}").as_bytes()));
    }
}

#[test]
fn missing_socket_is_tolerated_and_retried() {
    let dir = TempDir::new("retry");
    let path = dir.0.join("later");
    let logger = Logger::new(&config("/var/log/x", &path)).expect("logger");
    logger.info("dropped, nobody listens");
    let rx = UnixDatagram::bind(&path).expect("bind");
    rx.set_read_timeout(Some(Duration::from_secs(5)))
        .expect("timeout");
    logger.emit(Severity::Info, "now delivered", &STAMP);
    assert!(recv(&rx).ends_with(b"]: now delivered"));
    assert!(logger.host_label == "test");
}

/// Postfix's printable() on bytes that are not UTF-8: a Latin-1 byte is
/// `?` either way; with SMTPUTF8 on, what looks like UTF-8 (a lead byte
/// and continuation bytes) stays as it is, valid or not.
#[test]
fn printable_bytes_as_postfix() {
    assert_eq!(printable(b"to=<b\xe4d@x>", false), b"to=<b?d@x>".to_vec());
    assert_eq!(printable(b"to=<b\xe4d@x>", true), b"to=<b?d@x>".to_vec());
    let umlaut = "j\u{fc}rgen \u{20ac}".as_bytes();
    assert_eq!(printable(umlaut, true), umlaut.to_vec());
    assert_eq!(printable(umlaut, false), b"j??rgen ???".to_vec());
    // A truncated three-byte sequence, and one with too many
    // continuation bytes: not UTF-8, but Postfix lets both through.
    assert_eq!(printable(b"\xe4\xa4d", true), b"\xe4\xa4d".to_vec());
    assert_eq!(
        printable(b"\xc3\xa4\xa4\xa4.", true),
        b"\xc3\xa4\xa4\xa4.".to_vec()
    );
    assert_eq!(
        printable(b"\xc1\xa4 \xff\x80 \xe4\n", true),
        b"?? ?? ??".to_vec()
    );
}

#[test]
fn helpers() {
    assert_eq!(facility_code("mail"), Some(16));
    assert_eq!(facility_code("local7"), Some(23 << 3));
    assert_eq!(facility_code("Mail"), None);
    assert_eq!(printable(b"a\r\nb\x7f", false), b"a??b?".to_vec());
    let logger = Logger::new(&config("", Path::new("/nonexistent/sock"))).expect("logger");
    assert_eq!(
        logger.stderr_line(Severity::Warning, b"t"),
        b"postfix/qmgr: warning: t\n".to_vec()
    );
    assert_eq!(logger.tag(), "postfix/qmgr");
    // 2026-11-29 14:01:16 UTC.
    let s = utc_stamp(1_795_960_876);
    assert_eq!(
        s,
        Stamp {
            month: 10,
            day: 29,
            hour: 14,
            min: 1,
            sec: 16
        }
    );
    assert_eq!(
        utc_stamp(0),
        Stamp {
            month: 0,
            day: 1,
            hour: 0,
            min: 0,
            sec: 0
        }
    );
    assert!(local_stamp(now_secs()).is_some());
}

#[test]
fn config_from_params() {
    let raw = crate::params::RawParams::parse(
        "queue_directory = /q\nmaillog_file = /var/log/m\nmyhostname = h.example\n",
    );
    let (p, _) = crate::params::QmgrParams::from_raw(&raw).expect("valid");
    let cfg = LogConfig::from_params(&p, true);
    assert_eq!(cfg.postlog_socket, PathBuf::from("/q/public/postlog"));
    assert_eq!((cfg.facility, cfg.also_stderr), (16, true));
    assert_eq!(cfg.process_name, "qmgr");
}
