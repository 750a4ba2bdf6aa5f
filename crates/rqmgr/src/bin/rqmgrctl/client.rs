//! Asking a running rqmgr: one HTTP/1.1 request on its admin socket (see
//! the daemon's admin.rs): GET for views, POST for changes, answered with
//! JSON or Prometheus text.
//!
//! The socket is `rqmgr_admin_socket` (default `private/rqmgr`) under the
//! instance's queue directory; only root and mail_owner may connect.

use std::io::{Read, Write};
use std::os::unix::net::UnixStream;
use std::time::Duration;

use crate::instance::Instance;

/// How long rqmgr may take to answer.
const WAIT: Duration = Duration::from_secs(10);

/// GETs `path` (with its query) and returns the body of a 200 answer.
pub(crate) fn get(inst: &Instance, path: &str) -> Result<String, String> {
    request(inst, "GET", path)
}

/// POSTs to `path` (an action; its arguments in the query).
pub(crate) fn post(inst: &Instance, path: &str) -> Result<String, String> {
    request(inst, "POST", path)
}

fn request(inst: &Instance, method: &str, path: &str) -> Result<String, String> {
    let at = inst
        .admin_socket()
        .ok_or("rqmgr's admin socket is turned off (rqmgr_admin_socket is empty)")?;
    let mut stream = UnixStream::connect(at).map_err(|e| match e.kind() {
        std::io::ErrorKind::PermissionDenied => format!(
            "{}: permission denied: only root and mail_owner may ask rqmgr",
            at.display()
        ),
        _ => format!(
            "rqmgr is not running, or not enabled ({}: {e})",
            at.display()
        ),
    })?;
    stream.set_read_timeout(Some(WAIT)).ok();
    stream.set_write_timeout(Some(WAIT)).ok();
    let request = format!(
        "{method} {path} HTTP/1.1\r\nHost: rqmgr\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
    );
    stream
        .write_all(request.as_bytes())
        .map_err(|e| format!("{}: {e}", at.display()))?;
    let mut raw = Vec::new();
    stream
        .read_to_end(&mut raw)
        .map_err(|e| format!("{}: {e}", at.display()))?;
    let text = String::from_utf8_lossy(&raw);
    let (head, body) = text
        .split_once("\r\n\r\n")
        .ok_or_else(|| format!("{}: no answer", at.display()))?;
    let code = head.split_whitespace().nth(1).unwrap_or("");
    if code == "200" {
        return Ok(body.to_owned());
    }
    let reason = serde_json::from_str::<serde_json::Value>(body)
        .ok()
        .and_then(|v| v.get("error").and_then(|e| e.as_str()).map(str::to_owned))
        .unwrap_or_else(|| body.trim().to_owned());
    Err(format!("rqmgr answered {code}: {reason}"))
}

/// `%XX` for everything but unreserved characters, for a query value.
pub(crate) fn encode(value: &str) -> String {
    value
        .bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'.' | b'_' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn query_values_are_percent_encoded() {
        assert_eq!(encode("[127.0.0.1]:25"), "%5B127.0.0.1%5D%3A25");
        assert_eq!(encode("smtp"), "smtp");
    }
}
