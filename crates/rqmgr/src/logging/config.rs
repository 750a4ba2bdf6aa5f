//! Where log records go, from the configuration: [`LogConfig`], and the
//! syslog facility codes Postfix accepts.

use std::path::PathBuf;

use super::DEFAULT_SYSLOG_SOCKET;

/// Start-up settings for a [`Logger`].
#[derive(Debug, Clone)]
pub(crate) struct LogConfig {
    /// `syslog_name` (or `MAIL_LOGTAG` from the environment), e.g. `postfix`.
    pub syslog_name: String,
    /// Basename of argv\[0\], e.g. `qmgr`.
    pub process_name: String,
    /// Syslog facility code, see [`facility_code`].
    pub facility: i32,
    /// `maillog_file`; non-empty selects postlog mode.
    pub maillog_file: String,
    /// Absolute path of the postlog socket (`$queue_directory/public/postlog`).
    pub postlog_socket: PathBuf,
    /// Path of the syslog socket, normally [`DEFAULT_SYSLOG_SOCKET`].
    pub syslog_socket: PathBuf,
    /// `myhostname`; its first label appears in postlog records.
    pub hostname: String,
    /// `smtputf8_enable`: keep non-ASCII UTF-8 text instead of `?`.
    pub utf8: bool,
    /// Also write every record to stderr (`-V`).
    pub also_stderr: bool,
}

impl LogConfig {
    /// The configuration Postfix derives from `main.cf`: tag
    /// `syslog_name/process_name` (Postfix exports `syslog_name` as
    /// `MAIL_LOGTAG`, so the configured name wins), postlog socket
    /// `$queue_directory/public/$postlog_service_name`, syslog at `/dev/log`.
    pub(crate) fn from_params(p: &crate::params::QmgrParams, also_stderr: bool) -> LogConfig {
        LogConfig {
            syslog_name: p.syslog_name.clone(),
            process_name: p.process_name.clone(),
            facility: p.syslog_facility,
            maillog_file: p.maillog_file.clone(),
            postlog_socket: p.postlog_socket(),
            syslog_socket: PathBuf::from(DEFAULT_SYSLOG_SOCKET),
            hostname: p.myhostname.clone(),
            utf8: p.smtputf8_enable,
            also_stderr,
        }
    }
}

impl LogConfig {
    /// Logging before the configuration is validated, so that every fatal
    /// error of start-up reaches the mail log, as in Postfix (which sets up
    /// syslog first, then the mail log once main.cf is read): the values
    /// from the raw table where they are there, Postfix's defaults
    /// elsewhere; with no table, syslog with facility mail.
    pub(crate) fn early(
        raw: Option<&crate::params::RawParams>,
        process_name: &str,
        also_stderr: bool,
    ) -> LogConfig {
        let get = |name: &str, default: &str| {
            raw.and_then(|r| r.get(name))
                .filter(|v| !v.is_empty())
                .unwrap_or(default)
                .to_owned()
        };
        let queue_directory = get("queue_directory", "/var/spool/postfix");
        LogConfig {
            syslog_name: get("syslog_name", "postfix"),
            process_name: process_name.to_owned(),
            facility: facility_code(&get("syslog_facility", "mail"))
                .or_else(|| facility_code("mail"))
                .unwrap_or(2 << 3),
            maillog_file: raw
                .and_then(|r| r.get("maillog_file"))
                .unwrap_or("")
                .to_owned(),
            postlog_socket: PathBuf::from(queue_directory)
                .join("public")
                .join(get("postlog_service_name", "postlog")),
            syslog_socket: PathBuf::from(DEFAULT_SYSLOG_SOCKET),
            hostname: get("myhostname", "localhost"),
            utf8: false,
            also_stderr,
        }
    }
}

/// The syslog facility code for a Postfix `syslog_facility` name (Linux
/// values, already shifted left by 3), or `None` if Postfix rejects it.
pub(crate) fn facility_code(name: &str) -> Option<i32> {
    let n = match name {
        "kern" => 0,
        "user" => 1,
        "mail" => 2,
        "daemon" => 3,
        "auth" => 4,
        "syslog" => 5,
        "lpr" => 6,
        "news" => 7,
        "uucp" => 8,
        "cron" => 9,
        "authpriv" => 10,
        "ftp" => 11,
        "local0" => 16,
        "local1" => 17,
        "local2" => 18,
        "local3" => 19,
        "local4" => 20,
        "local5" => 21,
        "local6" => 22,
        "local7" => 23,
        _ => return None,
    };
    Some(n << 3)
}
