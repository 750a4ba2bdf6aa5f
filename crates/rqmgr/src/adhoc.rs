//! Recipient status lines the queue manager writes itself
//! (`QID: to=<...>, relay=none, delay=..., delays=a/b/c/d, dsn=..., status=...`).
//!
//! Delivery agents log almost every such line; qmgr logs only the ones it
//! decides on its own: discarded mail to the double-bounce address, and
//! recipients it defers through the defer service when even the `retry`
//! transport is dead. Log parsers (pflogsumm, exporters) read the delay
//! fields, so they are formatted exactly as Postfix's `format_tv()` does:
//! two significant digits for small values, whole seconds for large ones,
//! never finer than `delay_logging_resolution_limit` decimals.

use std::time::SystemTime;

const MILLION: i64 = 1_000_000;

/// The timestamps a status line measures delays between.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Stamps {
    /// When the message arrived (`T` record).
    pub incoming_arrival: (i64, i64),
    /// When it entered the active queue.
    pub active_arrival: (i64, i64),
}

/// One recipient's status line, as `log_adhoc()` formats it, with no
/// delivery agent involved (so the last two delays are zero). Bytes, as
/// the addresses and the reason are: the logger makes them printable.
#[allow(clippy::too_many_arguments)]
pub(crate) fn status_line(
    queue_id: &str,
    recipient: &[u8],
    orig_recipient: &[u8],
    stamps: Stamps,
    now: SystemTime,
    dsn_status: &str,
    status: &str,
    reason: &[u8],
    max_decimals: u32,
) -> Vec<u8> {
    let now = rqmgr_ipc::deliver::timeval(now);
    let mut head = [queue_id.as_bytes(), b": to=<", recipient, b">"].concat();
    if !orig_recipient.is_empty() && !orig_recipient.eq_ignore_ascii_case(recipient) {
        head.extend_from_slice(&[&b", orig_to=<"[..], orig_recipient, b">"].concat());
    }
    let mut line = String::from(", relay=none");
    let delay = delta(now, stamps.incoming_arrival);
    let (pdelay, adelay) = if stamps.active_arrival.0 > 0 {
        (
            delta(stamps.active_arrival, stamps.incoming_arrival),
            delta(now, stamps.active_arrival),
        )
    } else {
        (delta(now, stamps.incoming_arrival), (0, 0))
    };
    line.push_str(", delay=");
    format_tv(&mut line, delay, max_decimals);
    line.push_str(", delays=");
    format_tv(&mut line, pdelay, max_decimals);
    line.push('/');
    format_tv(&mut line, adelay, max_decimals);
    line.push_str("/0/0");
    line.push_str(&format!(", dsn={dsn_status}, status={status} ("));
    [&head[..], line.as_bytes(), reason, b")"].concat()
}

fn delta(later: (i64, i64), earlier: (i64, i64)) -> (i64, i64) {
    let mut sec = later.0 - earlier.0;
    let mut usec = later.1 - earlier.1;
    while usec < 0 {
        usec += MILLION;
        sec -= 1;
    }
    while usec >= MILLION {
        usec -= MILLION;
        sec += 1;
    }
    if sec < 0 {
        (0, 0)
    } else {
        (sec, usec)
    }
}

/// Appends a time interval with two significant digits, at most
/// `max_decimals` (0..=6) decimals, as Postfix's `format_tv()` does.
fn format_tv(out: &mut String, (mut sec, mut usec): (i64, i64), max_decimals: u32) {
    const SIG_DIGITS: u32 = 2;
    let max_decimals = max_decimals.min(6);
    let mut resolution = MILLION / 10_i64.pow(max_decimals);
    let width = 10_i64.pow(SIG_DIGITS);
    if resolution < MILLION {
        if sec > 0 {
            let mut n = 1;
            while sec >= n && n <= width / 10 {
                n *= 10;
            }
            resolution = (MILLION / width) * n;
        } else {
            while usec >= width * resolution {
                resolution *= 10;
            }
        }
    }
    if resolution > 1 {
        usec += resolution / 2;
        if usec >= MILLION {
            sec += 1;
            usec -= MILLION;
        }
    }
    out.push_str(&sec.to_string());
    if usec >= resolution {
        out.push('.');
        let mut rem = usec;
        let mut n = MILLION / 10;
        while rem >= resolution && n > 0 {
            let digit = u8::try_from(rem / n).unwrap_or(0);
            out.push(char::from(b'0' + digit));
            rem %= n;
            n /= 10;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::{Duration, UNIX_EPOCH};

    fn f(sec: i64, usec: i64) -> String {
        let mut s = String::new();
        format_tv(&mut s, (sec, usec), 2);
        s
    }

    #[test]
    fn formats_like_postfix() {
        // Values as Postfix logs them with delay_logging_resolution_limit=2.
        assert_eq!(f(0, 0), "0");
        assert_eq!(f(0, 4000), "0");
        assert_eq!(f(0, 5000), "0.01");
        assert_eq!(f(0, 123_456), "0.12");
        assert_eq!(f(1, 234_567), "1.2");
        assert_eq!(f(12, 345_678), "12");
        assert_eq!(f(123, 0), "123");
        assert_eq!(f(0, 996_000), "1");
    }

    #[test]
    fn status_line_shape() {
        let t = UNIX_EPOCH + Duration::from_secs(1000) + Duration::from_millis(250);
        let line = status_line(
            "ABC123",
            b"double-bounce@host",
            b"",
            Stamps {
                incoming_arrival: (999, 0),
                active_arrival: (1000, 0),
            },
            t,
            "2.0.0",
            "sent",
            b"undeliverable postmaster notification discarded",
            2,
        );
        assert_eq!(
            String::from_utf8_lossy(&line),
            "ABC123: to=<double-bounce@host>, relay=none, delay=1.3, delays=1/0.25/0/0, dsn=2.0.0, status=sent (undeliverable postmaster notification discarded)"
        );
        // Addresses and reason go to the logger as the bytes they are.
        let line = status_line(
            "ABC123",
            b"j\xfcrgen@b\xe4d.example",
            b"alt\xfc@b\xe4d.example",
            Stamps {
                incoming_arrival: (999, 0),
                active_arrival: (1000, 0),
            },
            t,
            "4.4.1",
            "deferred",
            b"delivery temporarily suspended: connect to b\xe4d.example: refused",
            2,
        );
        assert_eq!(
            line.escape_ascii().to_string(),
            [
                &b"ABC123: to=<j\xfcrgen@b\xe4d.example>, orig_to=<alt\xfc@b\xe4d.example>, "[..],
                b"relay=none, delay=1.3, delays=1/0.25/0/0, dsn=4.4.1, status=deferred ",
                b"(delivery temporarily suspended: connect to b\xe4d.example: refused)"
            ]
            .concat()
            .escape_ascii()
            .to_string()
        );
    }
}
