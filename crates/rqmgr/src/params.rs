//! Configuration: raw `postconf` output, then validated queue manager settings.
//!
//! Job: obtain every parameter Postfix 3.7's `qmgr`/`oqmgr` read, with the
//! same defaults, unit rules, range checks and fatal message texts, so that a
//! configuration Postfix accepts is accepted here and one it rejects is
//! rejected with the same words.
//!
//! Design (two layers, like ripgrep's low/high-level arguments):
//! * [`RawParams`]: name → value strings. [`RawParams::load`] runs
//!   `postconf -c DIR -x -o k=v ...` before any chroot, so values arrive with
//!   `$name` expansion and compatibility-level defaults already applied. Names
//!   `postconf` does not know (per-transport settings for transports absent
//!   from `master.cf`, retired names) are read from `main.cf` and the `-o`
//!   overrides directly and expanded here.
//! * [`QmgrParams`]: typed values. [`QmgrParams::from_raw`] applies Postfix's
//!   conversions in table order and the post-init adjustments, returning the
//!   warnings Postfix would log. Per-transport values come from
//!   [`QmgrParams::transport`] (see `params/transport.rs`).
//!
//! Invariants: a name missing from the raw table takes the built-in Postfix
//! default, so tests can start from an empty table. Time values are whole
//! seconds held in [`Duration`]. Integer values keep Postfix's `int` meaning:
//! where Postfix declares a minimum of 0 it checks nothing, so such values may
//! be negative exactly as Postfix would accept them.
//!
//! Failure: every problem Postfix treats as fatal is a [`ParamError`] whose
//! `Display` is Postfix's message text; the caller logs it as `fatal:` and
//! exits 1.
//!
//! Limits: when the raw table lacks `myhostname`, `syslog_name` or
//! `smtputf8_enable`, simple fallbacks stand in for Postfix's computed
//! defaults (real runs always get them from `postconf`). The lazy check of
//! `info_log_address_format` happens here, at start-up.

mod maincf;
mod settings;
mod transport;

use std::collections::HashMap;
use std::io;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

pub(crate) use settings::QmgrParams;

/// Where `postconf` lives when it is not on `PATH` (master scrubs `PATH`).
const POSTCONF_FALLBACK: &str = "/usr/sbin/postconf";

/// A configuration problem that Postfix treats as fatal.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub(crate) enum ParamError {
    /// `postconf` could not be started.
    #[error("run {program}: {source}")]
    PostconfSpawn {
        /// The program that failed to start.
        program: PathBuf,
        /// Why.
        source: io::Error,
    },
    /// `postconf` ran but failed.
    #[error("postconf failed ({status}): {stderr}")]
    PostconfFailed {
        /// Exit status description.
        status: String,
        /// What it wrote to stderr, trimmed.
        stderr: String,
    },
    /// `main.cf` exists but could not be read.
    #[error("open {}: {source}", path.display())]
    ReadMainCf {
        /// The file.
        path: PathBuf,
        /// Why.
        source: io::Error,
    },
    /// A value used a `$name` form that could not be evaluated.
    #[error("{reason}: \"{value}\"")]
    Macro {
        /// The value being expanded.
        value: String,
        /// What went wrong.
        reason: &'static str,
    },
    /// An integer parameter is not a decimal `int`.
    #[error("bad numerical configuration: {name} = {value}")]
    BadInteger {
        /// Parameter name.
        name: String,
        /// Offending value.
        value: String,
    },
    /// An integer parameter is below its minimum.
    #[error("invalid {name} parameter value {value} < {min}")]
    IntegerTooSmall {
        /// Parameter name.
        name: String,
        /// Value given.
        value: i32,
        /// Minimum allowed.
        min: i32,
    },
    /// An integer parameter is above its maximum.
    #[error("invalid {name} parameter value {value} > {max}")]
    IntegerTooLarge {
        /// Parameter name.
        name: String,
        /// Value given.
        value: i32,
        /// Maximum allowed.
        max: i32,
    },
    /// A time parameter has a bad number or unit.
    #[error("parameter {name}: bad time value or unit: {value}")]
    BadTime {
        /// Parameter name.
        name: String,
        /// Offending value.
        value: String,
    },
    /// A time parameter is below its minimum (seconds).
    #[error("invalid {name}: {value} (min {min})")]
    TimeTooSmall {
        /// Parameter name.
        name: String,
        /// Value in seconds.
        value: u64,
        /// Minimum in seconds.
        min: u64,
    },
    /// A time parameter is above its maximum (seconds).
    #[error("invalid {name}: {value} (max {max})")]
    TimeTooLarge {
        /// Parameter name.
        name: String,
        /// Value in seconds.
        value: u64,
        /// Maximum in seconds.
        max: u64,
    },
    /// A boolean parameter is neither `yes` nor `no`.
    #[error("bad boolean configuration: {name} = {value}")]
    BadBoolean {
        /// Parameter name.
        name: String,
        /// Offending value.
        value: String,
    },
    /// A string parameter is shorter than required (usually empty).
    #[error("bad string length {len} < {min}: {name} = {value}")]
    StringTooShort {
        /// Parameter name.
        name: String,
        /// Offending value.
        value: String,
        /// Its length in bytes.
        len: usize,
        /// Minimum length.
        min: usize,
    },
    /// A parameter has a value outside its fixed vocabulary, reported with
    /// the `main.cf` location as Postfix does (`syslog_facility`).
    #[error("file {config_dir}/main.cf: parameter {name}: unrecognized value: {value}")]
    Unrecognized {
        /// `config_directory`.
        config_dir: String,
        /// Parameter name.
        name: String,
        /// Offending value.
        value: String,
    },
    /// `myhostname` is not a valid host name.
    #[error("file {config_dir}/main.cf: parameter myhostname: bad parameter value: {value}")]
    BadHostname {
        /// `config_directory`.
        config_dir: String,
        /// Offending value.
        value: String,
    },
    /// A parameter with a fixed vocabulary has another value
    /// (`info_log_address_format`).
    #[error("invalid parameter setting \"{name} = {value}\"")]
    InvalidSetting {
        /// Parameter name.
        name: String,
        /// Offending value.
        value: String,
    },
    /// `maillog_file` is outside every `maillog_file_prefixes` entry.
    #[error("maillog_file value '{file}' does not match any prefix in maillog_file_prefixes")]
    MaillogPrefix {
        /// The configured file.
        file: String,
    },
}

/// Parameter values as strings, before any conversion.
#[derive(Debug, Clone, Default)]
pub(crate) struct RawParams {
    values: HashMap<String, String>,
}

impl RawParams {
    /// Read the configuration in `config_dir` with `-o` style `overrides`.
    ///
    /// Runs `postconf` (from `PATH`, else `/usr/sbin/postconf`); must run
    /// before chroot. `process_name` from `postconf`'s output describes
    /// postconf itself and is dropped; the caller sets it with [`RawParams::set`].
    ///
    /// # Errors
    ///
    /// `postconf` cannot be run or fails, `main.cf` is unreadable, or a
    /// value `postconf` does not know has a bad `$name` expression.
    pub(crate) fn load(
        config_dir: &Path,
        overrides: &[(String, String)],
    ) -> Result<RawParams, ParamError> {
        let output = run_postconf(config_dir, overrides)?;
        let mut raw = RawParams::parse(&output);
        raw.values.remove("process_name");
        let text = read_main_cf(&config_dir.join("main.cf"))?;
        raw.add_unknown(&text, overrides)?;
        Ok(raw)
    }

    /// Parse `postconf` output: one `name = value` per line, split at the
    /// first ` = `; `name =` means empty. Other lines are ignored.
    pub(crate) fn parse(text: &str) -> RawParams {
        let mut values = HashMap::new();
        for line in text.lines() {
            let parsed = match line.split_once(" = ") {
                Some((n, v)) => Some((n, v)),
                None => line.strip_suffix(" =").map(|n| (n, "")),
            };
            if let Some((name, value)) = parsed {
                let name = name.trim();
                if !name.is_empty() && !name.contains(char::is_whitespace) {
                    values.insert(name.to_string(), value.to_string());
                }
            }
        }
        RawParams { values }
    }

    /// The value of `name`, if the configuration defines it.
    pub(crate) fn get(&self, name: &str) -> Option<&str> {
        self.values.get(name).map(String::as_str)
    }

    /// Define or replace `name` (e.g. `process_name` from argv\[0\]).
    pub(crate) fn set(&mut self, name: &str, value: &str) {
        self.values.insert(name.to_string(), value.to_string());
    }

    /// Add names that `postconf` left out: `main.cf` definitions, then `-o`
    /// overrides (later wins), each expanded against the whole table.
    fn add_unknown(
        &mut self,
        main_cf: &str,
        overrides: &[(String, String)],
    ) -> Result<(), ParamError> {
        let mut unknown: HashMap<String, String> = HashMap::new();
        let entries = maincf::parse_main_cf(main_cf);
        let all = entries.iter().chain(overrides.iter());
        for (name, value) in all {
            if !self.values.contains_key(name) {
                unknown.insert(name.clone(), value.clone());
            }
        }
        let expander = maincf::Expander {
            fixed: &self.values,
            raw: &unknown,
        };
        let mut resolved = Vec::with_capacity(unknown.len());
        for name in unknown.keys() {
            if let Some(v) = expander.lookup(name, 0)? {
                resolved.push((name.clone(), v));
            }
        }
        self.values.extend(resolved);
        Ok(())
    }
}

/// The text of `main.cf` (empty if there is none). main.cf is bytes to
/// Postfix: a byte that is not UTF-8 (in a comment, or in a value qmgr
/// never reads) must not stop us, so such bytes read as U+FFFD.
fn read_main_cf(path: &Path) -> Result<String, ParamError> {
    match std::fs::read(path) {
        Ok(bytes) => Ok(String::from_utf8_lossy(&bytes).into_owned()),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(String::new()),
        Err(source) => Err(ParamError::ReadMainCf {
            path: path.to_path_buf(),
            source,
        }),
    }
}

/// Run `postconf -c DIR -x -o k=v ...`, trying `PATH` first.
fn run_postconf(config_dir: &Path, overrides: &[(String, String)]) -> Result<String, ParamError> {
    let mut last_err = None;
    for program in [Path::new("postconf"), Path::new(POSTCONF_FALLBACK)] {
        let mut cmd = Command::new(program);
        cmd.arg("-c").arg(config_dir).arg("-x");
        for (k, v) in overrides {
            cmd.arg("-o").arg(format!("{k}={v}"));
        }
        match cmd.output() {
            Ok(out) if out.status.success() => {
                return Ok(String::from_utf8_lossy(&out.stdout).into_owned());
            }
            Ok(out) => {
                return Err(ParamError::PostconfFailed {
                    status: out.status.to_string(),
                    stderr: String::from_utf8_lossy(&out.stderr).trim().to_string(),
                });
            }
            // Only a missing program justifies trying the fallback path.
            Err(e) if e.kind() == io::ErrorKind::NotFound => last_err = Some((program, e)),
            Err(source) => {
                return Err(ParamError::PostconfSpawn {
                    program: program.to_path_buf(),
                    source,
                })
            }
        }
    }
    let (program, source) =
        last_err.unwrap_or_else(|| (Path::new(POSTCONF_FALLBACK), io::ErrorKind::NotFound.into()));
    Err(ParamError::PostconfSpawn {
        program: program.to_path_buf(),
        source,
    })
}

/// Parse like C `strtol(s, &end, 10)` requiring `*end == 0`, into an `int`.
fn parse_c_int(s: &str) -> Option<i32> {
    let t = s.trim_start_matches([' ', '\t', '\n', '\x0b', '\x0c', '\r']);
    let digits = t.strip_prefix(['+', '-']).unwrap_or(t);
    if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    // Rust's parser rejects a leading '+' only on old toolchains; strip it.
    let t = t.strip_prefix('+').unwrap_or(t);
    t.parse::<i64>().ok().and_then(|v| i32::try_from(v).ok())
}

/// Convert a time value as Postfix's `conv_time` does: a decimal count
/// followed by an optional unit letter (anything after the letter is
/// ignored, as in Postfix); no letter means `def_unit`.
fn conv_time(s: &str, def_unit: u8) -> Option<u64> {
    let t = s.trim_start_matches([' ', '\t', '\n', '\x0b', '\x0c', '\r']);
    if s.is_empty() {
        return None;
    }
    let sign_len = usize::from(t.starts_with(['+', '-']));
    let ndigits = t[sign_len..].bytes().take_while(u8::is_ascii_digit).count();
    // strtol with no digits yields 0 and leaves the string untouched.
    let (value, rest) = if ndigits == 0 {
        (0i64, s)
    } else {
        let num = &t[..sign_len + ndigits];
        let num = num.strip_prefix('+').unwrap_or(num);
        (num.parse::<i64>().ok()?, &t[sign_len + ndigits..])
    };
    let value = i32::try_from(value).ok().filter(|v| *v >= 0)?;
    let unit = rest.bytes().next().unwrap_or(def_unit);
    let scale: i32 = match unit {
        b'w' => 7 * 86400,
        b'd' => 86400,
        b'h' => 3600,
        b'm' => 60,
        b's' => return Some(u64::from(value.unsigned_abs())),
        _ => return None,
    };
    // Postfix insists on a strict margin below INT_MAX.
    if value < i32::MAX / scale {
        Some(u64::from((value * scale).unsigned_abs()))
    } else {
        None
    }
}

/// Integer parameter with Postfix's checks (`min`/`max` of 0 = unchecked).
pub(crate) fn get_int(
    raw: &RawParams,
    name: &str,
    default: i32,
    min: i32,
    max: i32,
) -> Result<i32, ParamError> {
    let value = match raw.get(name) {
        None => default,
        Some(s) => parse_c_int(s).ok_or_else(|| ParamError::BadInteger {
            name: name.to_string(),
            value: s.to_string(),
        })?,
    };
    if min != 0 && value < min {
        return Err(ParamError::IntegerTooSmall {
            name: name.to_string(),
            value,
            min,
        });
    }
    if max != 0 && value > max {
        return Err(ParamError::IntegerTooLarge {
            name: name.to_string(),
            value,
            max,
        });
    }
    Ok(value)
}

/// Time parameter; `default` is Postfix's default text, whose unit letter
/// is also the unit of a bare number.
pub(crate) fn get_time(
    raw: &RawParams,
    name: &str,
    default: &str,
    min: u64,
    max: u64,
) -> Result<Duration, ParamError> {
    let def_unit = default
        .bytes()
        .find(u8::is_ascii_alphabetic)
        .unwrap_or(b's');
    let text = raw.get(name).unwrap_or(default);
    let secs = conv_time(text, def_unit).ok_or_else(|| ParamError::BadTime {
        name: name.to_string(),
        value: text.to_string(),
    })?;
    if min != 0 && secs < min {
        return Err(ParamError::TimeTooSmall {
            name: name.to_string(),
            value: secs,
            min,
        });
    }
    if max != 0 && secs > max {
        return Err(ParamError::TimeTooLarge {
            name: name.to_string(),
            value: secs,
            max,
        });
    }
    Ok(Duration::from_secs(secs))
}

/// Boolean parameter: `yes`/`no` in any case.
pub(crate) fn get_bool(raw: &RawParams, name: &str, default: bool) -> Result<bool, ParamError> {
    match raw.get(name) {
        None => Ok(default),
        Some(s) if s.eq_ignore_ascii_case("yes") => Ok(true),
        Some(s) if s.eq_ignore_ascii_case("no") => Ok(false),
        Some(s) => Err(ParamError::BadBoolean {
            name: name.to_string(),
            value: s.to_string(),
        }),
    }
}

/// String parameter with a minimum length (0 = unchecked).
pub(crate) fn get_str(
    raw: &RawParams,
    name: &str,
    default: &str,
    min: usize,
) -> Result<String, ParamError> {
    let value = raw.get(name).unwrap_or(default);
    if min != 0 && value.len() < min {
        return Err(ParamError::StringTooShort {
            name: name.to_string(),
            value: value.to_string(),
            len: value.len(),
            min,
        });
    }
    Ok(value.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parse_postconf_lines() {
        let raw = RawParams::parse("a = 1\nb =\nc = x = y\nnot a line\nd = $literal\n");
        assert_eq!(raw.get("a"), Some("1"));
        assert_eq!(raw.get("b"), Some(""));
        assert_eq!(raw.get("c"), Some("x = y"));
        assert_eq!(raw.get("d"), Some("$literal"));
        assert_eq!(raw.get("not"), None);
    }

    #[test]
    fn unknown_names_come_from_main_cf_and_overrides() {
        let mut raw = RawParams::parse("default_destination_rate_delay = 0s\nknown = k\n");
        let main_cf =
            "known = ignored\nfoo_destination_rate_delay = ${default_destination_rate_delay}\n\
                       bar_x = $foo_destination_rate_delay/$known\nqmgr_site_hog_factor = 50\n";
        let overrides = [("bar_y".to_string(), "$bar_x!".to_string())];
        raw.add_unknown(main_cf, &overrides).expect("expands");
        assert_eq!(raw.get("known"), Some("k"));
        assert_eq!(raw.get("foo_destination_rate_delay"), Some("0s"));
        assert_eq!(raw.get("bar_x"), Some("0s/k"));
        assert_eq!(raw.get("bar_y"), Some("0s/k!"));
        assert_eq!(raw.get("qmgr_site_hog_factor"), Some("50"));
    }

    #[test]
    fn c_number_conversions() {
        assert_eq!(parse_c_int(" 42"), Some(42));
        assert_eq!(parse_c_int("-3"), Some(-3));
        assert_eq!(parse_c_int(""), None);
        assert_eq!(parse_c_int("4 "), None);
        assert_eq!(parse_c_int("2147483648"), None);
        assert_eq!(conv_time("5", b'd'), Some(5 * 86400));
        assert_eq!(conv_time("1w", b's'), Some(7 * 86400));
        assert_eq!(conv_time("", b's'), None);
        assert_eq!(conv_time("5 s", b's'), None);
        assert_eq!(conv_time("3550w", b's'), None);
    }

    /// Runs the installed `postconf` against a scratch configuration. The
    /// test command installs Postfix; without it this fails, never skips.
    #[test]
    fn load_through_postconf() {
        assert!(
            Path::new(POSTCONF_FALLBACK).exists(),
            "Postfix is not installed: run the tests through scripts/test.sh"
        );
        let dir = std::env::temp_dir().join(format!("rqmgr-params-{}", std::process::id()));
        let _ = std::fs::create_dir_all(&dir);
        // A byte that is not UTF-8, in a comment, changes nothing.
        let main_cf = b"# caf\xe9\nmaximal_queue_lifetime = 3\nfoo_destination_concurrency_limit = $maximal_queue_lifetime\n";
        std::fs::write(dir.join("main.cf"), main_cf).expect("write main.cf");
        let overrides = [
            ("queue_run_delay".to_string(), "7m".to_string()),
            ("baz_recipient_limit".to_string(), "9".to_string()),
        ];
        let raw = RawParams::load(&dir, &overrides);
        let _ = std::fs::remove_dir_all(&dir);
        let raw = raw.expect("postconf runs");
        assert_eq!(raw.get("maximal_queue_lifetime"), Some("3"));
        assert_eq!(raw.get("foo_destination_concurrency_limit"), Some("3"));
        assert_eq!(raw.get("queue_run_delay"), Some("7m"));
        assert_eq!(raw.get("baz_recipient_limit"), Some("9"));
        assert_eq!(raw.get("process_name"), None);
        let (p, _) = QmgrParams::from_raw(&raw).expect("valid");
        assert_eq!(p.maximal_queue_lifetime, Duration::from_secs(3 * 86400));
        let (t, _) = p.transport(&raw, "foo").expect("valid");
        assert_eq!(t.dest_concurrency_limit, 3);
        assert_eq!(t.recipient_limit, 20000);
        let (t, _) = p.transport(&raw, "baz").expect("valid");
        assert_eq!(t.recipient_limit, 9);
    }
}
