//! The Postfix release rqmgr serves, and what differs with it.
//!
//! Job: decide once, at start-up, which Postfix release the other daemons
//! are, from the installed Postfix's `mail_version` (or from
//! `rqmgr_postfix_dialect` when an operator forces one), and derive from it
//! everything rqmgr does differently per release:
//! * the protocol [`Dialect`] (the send-options attribute name, a log word);
//! * the mask qmgr applies to the size record's send-options field when it
//!   reads a queue file: none before 3.7.13, 3.8.8 and 3.9.2; the four
//!   SMTPUTF8 bits (0x0f) from those patch levels on; from 3.10 the SMTPUTF8
//!   and REQUIRETLS bits (0x3f: 0x10 is "TLS-Required: no", 0x20 is
//!   REQUIRETLS). Masking a 3.10+ message to 0x0f would drop REQUIRETLS.
//! * how many length bytes a queue-file record header may have: five
//!   before the August 2026 patch releases (3.7.22, 3.8.20, 3.9.14,
//!   3.10.13, 3.11.6), four from them on, so that a file with an overlong
//!   header is quarantined with the same warning as that release's qmgr.
//!
//! Invariants: a release older than 3.7 is refused (its protocols predate
//! what rqmgr speaks); one newer than the newest known speaks the newest
//! dialect and is reported as a warning, because Postfix has so far kept
//! its internal protocols stable within a release line and changed them
//! only in new ones, where the change is then announced. Nothing here does
//! I/O: the caller passes the parameter values and logs what comes back.

use std::fmt;

use rqmgr_ipc::dialect::Dialect;
use rqmgr_queue::record::{LEGACY_LENGTH_BYTES, LENGTH_BYTES};

/// The parameter that forces a release: `auto` (the default) or a Postfix
/// version such as `3.10` or `3.7.13`.
pub(crate) const DIALECT_PARAM: &str = "rqmgr_postfix_dialect";

/// The oldest release rqmgr speaks to.
const OLDEST: Release = Release::new(3, 7, 0);
/// The newest release whose changes rqmgr knows; a newer release line
/// gets its rules.
const NEWEST: Release = Release::new(3, 11, 7);

/// A Postfix version number, `major.minor.patch`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub(crate) struct Release {
    major: u32,
    minor: u32,
    patch: u32,
}

impl Release {
    const fn new(major: u32, minor: u32, patch: u32) -> Release {
        Release {
            major,
            minor,
            patch,
        }
    }

    /// Parses `mail_version` forms: `3.10.13`, `3.10` (patch 0), and
    /// snapshot or candidate suffixes (`3.12-20260821`, `3.11.0-RC1`),
    /// which count as the release they lead to.
    fn parse(text: &str) -> Option<Release> {
        let text = text.trim();
        let numbers = text.split_once('-').map_or(text, |(n, _)| n);
        let mut parts = numbers.split('.');
        let mut next = || -> Option<Option<u32>> {
            match parts.next() {
                None => Some(None),
                Some(p) if !p.is_empty() && p.bytes().all(|b| b.is_ascii_digit()) => {
                    p.parse().ok().map(Some)
                }
                Some(_) => None,
            }
        };
        let major = next()??;
        let minor = next()??;
        let patch = next()?.unwrap_or(0);
        if parts.next().is_some() {
            return None;
        }
        Some(Release::new(major, minor, patch))
    }

    /// The release line, for messages: `3.10`.
    fn line(self) -> String {
        format!("{}.{}", self.major, self.minor)
    }
}

impl fmt::Display for Release {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}.{}.{}", self.major, self.minor, self.patch)
    }
}

/// What rqmgr does differently for the Postfix release it serves.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Compat {
    /// The release whose rules apply (the newest known for newer ones).
    pub release: Release,
    /// The protocol dialect spoken to the other daemons.
    pub dialect: Dialect,
    /// What qmgr of that release keeps of the size record's send options.
    sendopts_mask: Option<i32>,
    /// Length bytes a queue-file record header may have.
    pub record_length_bytes: u32,
}

impl Default for Compat {
    /// Postfix 3.7.11, Debian 12's, for code paths tested without a
    /// configuration.
    fn default() -> Compat {
        Compat::of(Release::new(3, 7, 11))
    }
}

impl Compat {
    /// The rules of `release`, which must be known (3.7 to 3.11).
    fn of(release: Release) -> Compat {
        let at_least = |major, minor, patch| release >= Release::new(major, minor, patch);
        let dialect = if at_least(3, 11, 0) {
            Dialect::Postfix311
        } else if at_least(3, 10, 0) {
            Dialect::Postfix310
        } else {
            Dialect::Postfix37
        };
        let masks_smtputf8 = match (release.major, release.minor) {
            (3, 7) => release.patch >= 13,
            (3, 8) => release.patch >= 8,
            (3, 9) => release.patch >= 2,
            _ => false,
        };
        let sendopts_mask = if at_least(3, 10, 0) {
            Some(0x3f)
        } else if masks_smtputf8 {
            Some(0x0f)
        } else {
            None
        };
        let fixed_length_parser = match (release.major, release.minor) {
            (3, 7) => release.patch >= 22,
            (3, 8) => release.patch >= 20,
            (3, 9) => release.patch >= 14,
            (3, 10) => release.patch >= 13,
            (3, 11) => release.patch >= 6,
            _ => release > Release::new(3, 11, 0),
        };
        Compat {
            release,
            dialect,
            sendopts_mask,
            record_length_bytes: if fixed_length_parser {
                LENGTH_BYTES
            } else {
                LEGACY_LENGTH_BYTES
            },
        }
    }

    /// The send options a message carries, from its size record's field,
    /// as qmgr of this release reads them.
    pub(crate) fn sendopts(&self, size_record_field: i32) -> i32 {
        self.sendopts_mask
            .map_or(size_record_field, |mask| size_record_field & mask)
    }
}

/// The outcome of [`choose`]: the rules, and what to log about them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Choice {
    /// The rules that apply.
    pub compat: Compat,
    /// A warning for the operator (a release newer than known).
    pub warning: Option<String>,
    /// The start-up line for verbose logging.
    pub info: String,
}

/// Why rqmgr cannot serve the configured Postfix; the text is logged as
/// `fatal:`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub(crate) enum VersionError {
    /// A version number that does not parse.
    #[error("bad {name} value: \"{value}\" (expected a Postfix version such as 3.10.13)")]
    Unparsable {
        /// `mail_version` or [`DIALECT_PARAM`].
        name: &'static str,
        /// What it said.
        value: String,
    },
    /// A release older than 3.7.
    #[error("Postfix {version} is not supported: rqmgr needs Postfix 3.7 or later")]
    TooOld {
        /// The version given.
        version: String,
    },
}

/// Chooses the rules from `mail_version` (the installed Postfix's, as
/// `postconf` reports it) unless `forced` (the value of
/// [`DIALECT_PARAM`], `auto` or empty when not set) names a release.
pub(crate) fn choose(
    mail_version: Option<&str>,
    forced: Option<&str>,
) -> Result<Choice, VersionError> {
    let forced = forced
        .map(str::trim)
        .filter(|v| !v.is_empty() && *v != "auto");
    let (name, text) = match forced {
        Some(v) => (DIALECT_PARAM, v),
        None => ("mail_version", mail_version.unwrap_or("")),
    };
    let release = Release::parse(text).ok_or_else(|| VersionError::Unparsable {
        name,
        value: text.to_owned(),
    })?;
    if release < OLDEST {
        return Err(VersionError::TooOld {
            version: text.trim().to_owned(),
        });
    }
    let source = match forced {
        Some(_) => format!("{DIALECT_PARAM} = {}", text.trim()),
        None => format!("mail_version = {}", text.trim()),
    };
    if release.major > NEWEST.major
        || (release.major == NEWEST.major && release.minor > NEWEST.minor)
    {
        let compat = Compat::of(NEWEST);
        return Ok(Choice {
            compat,
            warning: Some(format!(
                "Postfix {} is newer than the newest release rqmgr knows ({}): using the \
                 Postfix {} protocol dialect; set {DIALECT_PARAM} to choose another",
                text.trim(),
                NEWEST.line(),
                NEWEST.line()
            )),
            info: format!("{source}: Postfix {} protocol dialect", NEWEST.line()),
        });
    }
    let compat = Compat::of(release);
    Ok(Choice {
        compat,
        warning: None,
        info: format!(
            "{source}: Postfix {} protocol dialect",
            dialect_line(compat.dialect)
        ),
    })
}

/// The first release line that speaks `dialect`.
fn dialect_line(dialect: Dialect) -> &'static str {
    match dialect {
        Dialect::Postfix37 => "3.7",
        Dialect::Postfix310 => "3.10",
        Dialect::Postfix311 => "3.11",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn compat(version: &str) -> Compat {
        choose(Some(version), None).unwrap().compat
    }

    #[test]
    fn versions_parse_as_postfix_writes_them() {
        assert_eq!(Release::parse("3.10.13"), Some(Release::new(3, 10, 13)));
        assert_eq!(Release::parse("3.7"), Some(Release::new(3, 7, 0)));
        assert_eq!(
            Release::parse("3.12-20260821"),
            Some(Release::new(3, 12, 0))
        );
        assert_eq!(Release::parse("3.11.0-RC1"), Some(Release::new(3, 11, 0)));
        assert_eq!(Release::parse(" 3.8.6\n"), Some(Release::new(3, 8, 6)));
        for bad in [
            "",
            "3",
            "3.",
            "x.y",
            "3.10.13.1",
            "3..1",
            "3.-1",
            "v3.10",
            "3.10.x",
        ] {
            assert_eq!(Release::parse(bad), None, "{bad:?}");
        }
    }

    /// One row per release Debian or Ubuntu ships, and the patch levels
    /// where qmgr_message.c started masking the size record's field
    /// (3.7.13, 3.8.8, 3.9.2: `&= SMTPUTF8_FLAG_ALL`; 3.10.0:
    /// `&= SOPT_FLAG_ALL`).
    #[test]
    fn each_release_gets_its_dialect_and_mask() {
        let rows: &[(&str, Dialect, Option<i32>)] = &[
            ("3.7.0", Dialect::Postfix37, None),
            ("3.7.11", Dialect::Postfix37, None),
            ("3.7.13", Dialect::Postfix37, Some(0x0f)),
            ("3.8.6", Dialect::Postfix37, None),
            ("3.8.8", Dialect::Postfix37, Some(0x0f)),
            ("3.9.1", Dialect::Postfix37, None),
            ("3.9.2", Dialect::Postfix37, Some(0x0f)),
            ("3.10.0", Dialect::Postfix310, Some(0x3f)),
            ("3.10.13", Dialect::Postfix310, Some(0x3f)),
            ("3.11.7", Dialect::Postfix311, Some(0x3f)),
        ];
        for &(version, dialect, mask) in rows {
            let c = compat(version);
            assert_eq!(c.dialect, dialect, "{version}");
            assert_eq!(c.sendopts_mask, mask, "{version}");
        }
    }

    #[test]
    fn record_headers_lose_their_fifth_length_byte_in_the_2026_patches() {
        let rows: &[(&str, u32)] = &[
            ("3.7.11", 5),
            ("3.7.21", 5),
            ("3.7.22", 4),
            ("3.8.19", 5),
            ("3.8.20", 4),
            ("3.9.13", 5),
            ("3.9.14", 4),
            ("3.10.12", 5),
            ("3.10.13", 4),
            ("3.11.5", 5),
            ("3.11.7", 4),
            ("3.12.0", 4),
        ];
        for &(version, n) in rows {
            assert_eq!(compat(version).record_length_bytes, n, "{version}");
        }
    }

    #[test]
    fn requiretls_survives_a_3_10_read_and_unknown_bits_do_not() {
        let field = 0x20 | 0x10 | 0x01 | 0x40;
        assert_eq!(compat("3.11.7").sendopts(field), 0x31);
        assert_eq!(compat("3.7.13").sendopts(field), 0x01);
        assert_eq!(compat("3.7.11").sendopts(field), field);
    }

    #[test]
    fn older_releases_and_garbage_are_fatal_with_a_clear_text() {
        let e = choose(Some("3.6.14"), None).unwrap_err();
        assert_eq!(
            e.to_string(),
            "Postfix 3.6.14 is not supported: rqmgr needs Postfix 3.7 or later"
        );
        let e = choose(Some("2.11.11"), None).unwrap_err();
        assert!(matches!(e, VersionError::TooOld { .. }));
        let e = choose(Some("snapshot"), None).unwrap_err();
        assert_eq!(
            e.to_string(),
            "bad mail_version value: \"snapshot\" (expected a Postfix version such as 3.10.13)"
        );
        let e = choose(None, None).unwrap_err();
        assert!(matches!(
            e,
            VersionError::Unparsable {
                name: "mail_version",
                ..
            }
        ));
        let e = choose(Some("3.10.13"), Some("3.x")).unwrap_err();
        assert!(matches!(
            e,
            VersionError::Unparsable {
                name: DIALECT_PARAM,
                ..
            }
        ));
    }

    #[test]
    fn newer_releases_use_the_newest_dialect_with_one_warning() {
        let c = choose(Some("3.12-20260821"), None).unwrap();
        assert_eq!(c.compat.dialect, Dialect::Postfix311);
        assert_eq!(c.compat.sendopts_mask, Some(0x3f));
        assert_eq!(
            c.warning.as_deref(),
            Some(
                "Postfix 3.12-20260821 is newer than the newest release rqmgr knows (3.11): \
                 using the Postfix 3.11 protocol dialect; set rqmgr_postfix_dialect to choose \
                 another"
            )
        );
        let c = choose(Some("4.0.1"), None).unwrap();
        assert_eq!(c.compat.dialect, Dialect::Postfix311);
        assert!(c.warning.is_some());
        // A later 3.11 patch is a known release line: no warning.
        assert_eq!(choose(Some("3.11.99"), None).unwrap().warning, None);
    }

    #[test]
    fn the_parameter_overrides_mail_version() {
        let c = choose(Some("3.12.0"), Some("3.10")).unwrap();
        assert_eq!(c.compat.dialect, Dialect::Postfix310);
        assert_eq!(c.warning, None);
        assert_eq!(
            c.info,
            "rqmgr_postfix_dialect = 3.10: Postfix 3.10 protocol dialect"
        );
        let c = choose(Some("3.10.13"), Some("auto")).unwrap();
        assert_eq!(
            c.info,
            "mail_version = 3.10.13: Postfix 3.10 protocol dialect"
        );
        assert_eq!(
            choose(Some("3.7.11"), Some("")).unwrap().compat.dialect,
            Dialect::Postfix37
        );
        assert_eq!(compat("3.9.4").dialect, Dialect::Postfix37);
        assert!(choose(Some("3.10.1"), Some("3.6")).is_err());
    }
}
