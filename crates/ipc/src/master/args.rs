//! master(8) command line of a daemon.
//!
//! Job: parse the arguments master passes (`-l -t unix -u`, `-n name`,
//! `-o name=value`, ...) with POSIX getopt semantics for the option string
//! `cdDi:lm:n:o:s:St:uvVz`: clustered flags (`-lu`), attached or separate
//! option values (`-oa=b`, `-o a=b`), `--` ends the options, the first
//! non-option word ends them too (Postfix asks glibc for "+" behaviour).
//!
//! How it fails: an [`ArgsError`] whose text is Postfix's fatal message;
//! leftover words are an error because qmgr takes no arguments.
//! Limits: the `-i`/`-m` values are kept as text (they are configuration
//! overrides; qmgr forces both to 0 anyway); the transport type is not
//! validated here beyond being present.

use crate::error::ArgsError;

/// What master told the daemon on its command line.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct DaemonArgs {
    /// argv\[0\].
    pub program: String,
    /// `-n`: service name when it differs from the program's basename.
    pub service: Option<String>,
    /// `-t`: `unix`, `fifo`, `pass`, ... (empty with `-S`).
    pub transport_type: String,
    /// `-l`: master runs at most one process (process limit 1).
    pub solitary: bool,
    /// `-c`: chroot to the queue directory.
    pub chroot: bool,
    /// `-u`: drop privileges to mail_owner.
    pub unprivileged: bool,
    /// `-v` count.
    pub verbose: u32,
    /// `-D`: run under a debugger.
    pub debug: bool,
    /// `-d`: master runs in the foreground (skip the tty check).
    pub no_daemon_mode: bool,
    /// `-V`: also log to stderr.
    pub stderr_log: bool,
    /// `-o name=value`, in order, name and value trimmed.
    pub overrides: Vec<(String, String)>,
    /// `-s`: number of listen descriptors from fd 6 on (default 1).
    pub listen_fds: usize,
    /// `-i`: max_idle override.
    pub max_idle: Option<String>,
    /// `-m`: max_use override.
    pub max_use: Option<String>,
    /// `-z`: process limit 0.
    pub zero_process_limit: bool,
    /// `-S`: serve one request on stdin.
    pub one_shot: bool,
}

/// Postfix's `split_nameval`: `name = value` with blanks trimmed.
fn split_nameval(arg: &str) -> Result<(String, String), &'static str> {
    let is_space = |c: char| matches!(c, ' ' | '\t' | '\n' | '\x0b' | '\x0c' | '\r');
    let s = arg.trim_start_matches(is_space);
    if s.is_empty() || s.starts_with('=') {
        return Err("missing attribute name");
    }
    let name_end = s.find(|c: char| is_space(c) || c == '=').unwrap_or(s.len());
    let (name, rest) = s.split_at(name_end);
    let rest = rest.trim_start_matches(is_space);
    let Some(value) = rest.strip_prefix('=') else {
        return Err("missing '=' after attribute name");
    };
    Ok((name.to_owned(), value.trim_matches(is_space).to_owned()))
}

impl DaemonArgs {
    /// Parses a full argv (first item is the program name).
    pub fn parse(args: impl IntoIterator<Item = String>) -> Result<DaemonArgs, ArgsError> {
        let mut it = args.into_iter();
        let mut out = DaemonArgs {
            program: it.next().unwrap_or_default(),
            listen_fds: 1,
            ..DaemonArgs::default()
        };
        let words: Vec<String> = it.collect();
        let mut transport = None;
        let mut i = 0;
        while i < words.len() {
            let word = &words[i];
            if word == "--" {
                i += 1;
                break;
            }
            let Some(cluster) = word.strip_prefix('-').filter(|c| !c.is_empty()) else {
                break;
            };
            let chars: Vec<char> = cluster.chars().collect();
            let mut j = 0;
            while j < chars.len() {
                let c = chars[j];
                j += 1;
                match c {
                    'c' => out.chroot = true,
                    'd' => out.no_daemon_mode = true,
                    'D' => out.debug = true,
                    'l' => out.solitary = true,
                    'S' => out.one_shot = true,
                    'u' => out.unprivileged = true,
                    'v' => out.verbose = out.verbose.saturating_add(1),
                    'V' => out.stderr_log = true,
                    'z' => out.zero_process_limit = true,
                    'i' | 'm' | 'n' | 'o' | 's' | 't' => {
                        let value: String = if j < chars.len() {
                            chars[j..].iter().collect()
                        } else {
                            i += 1;
                            words.get(i).cloned().ok_or(ArgsError::MissingArgument(c))?
                        };
                        j = chars.len();
                        match c {
                            'i' => out.max_idle = Some(value),
                            'm' => out.max_use = Some(value),
                            'n' => out.service = Some(value),
                            't' => transport = Some(value),
                            's' => match value.parse::<usize>() {
                                Ok(n) if n > 0 => out.listen_fds = n,
                                _ => return Err(ArgsError::InvalidSocketCount(value)),
                            },
                            _ => {
                                let pair = split_nameval(&value).map_err(|reason| {
                                    ArgsError::InvalidNameValue {
                                        arg: value.clone(),
                                        reason,
                                    }
                                })?;
                                out.overrides.push(pair);
                            }
                        }
                    }
                    other => return Err(ArgsError::InvalidOption(other)),
                }
            }
            i += 1;
        }
        if let Some(extra) = words.get(i) {
            return Err(ArgsError::UnexpectedArgument(extra.clone()));
        }
        match transport {
            Some(t) => out.transport_type = t,
            None if out.one_shot => {}
            None => return Err(ArgsError::NoTransport),
        }
        Ok(out)
    }

    /// The service name: `-n`, else the basename of argv\[0\].
    pub fn service_name(&self) -> &str {
        match &self.service {
            Some(s) => s,
            None => self.program.rsplit('/').next().unwrap_or(&self.program),
        }
    }
}

/// Parses master's `GENERATION` value: digits read as octal, as Postfix
/// does (it accepts 8 and 9 too and lets them carry).
fn parse_generation(text: &str) -> Result<u32, ArgsError> {
    if text.is_empty() || !text.bytes().all(|b| b.is_ascii_digit()) {
        return Err(ArgsError::BadGeneration(text.to_owned()));
    }
    Ok(text.bytes().fold(0u32, |acc, b| {
        acc.wrapping_mul(8).wrapping_add(u32::from(b - b'0'))
    }))
}

/// The generation from the environment; 0 when `GENERATION` is unset.
pub fn generation_from_env() -> Result<u32, ArgsError> {
    match std::env::var_os("GENERATION") {
        None => Ok(0),
        Some(v) => parse_generation(&v.to_string_lossy()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn argv(words: &[&str]) -> Vec<String> {
        words.iter().map(|w| (*w).to_owned()).collect()
    }

    #[test]
    fn observed_qmgr_command_line() {
        let a = DaemonArgs::parse(argv(&["qmgr", "-l", "-t", "unix", "-u"])).unwrap();
        assert!(a.solitary && a.unprivileged && !a.chroot);
        assert_eq!(a.transport_type, "unix");
        assert_eq!(a.service_name(), "qmgr");
        assert_eq!(a.listen_fds, 1);
    }

    #[test]
    fn clusters_attached_values_and_overrides() {
        let a = DaemonArgs::parse(argv(&[
            "libexec/rqmgr",
            "-luvv",
            "-nqmgr",
            "-tunix",
            "-o",
            " qmgr_message_active_limit = 100 ",
            "-oa=",
            "-s2",
            "-i",
            "5",
            "-m100",
            "-cDdVz",
        ]))
        .unwrap();
        assert!(a.solitary && a.unprivileged && a.chroot && a.debug);
        assert!(a.no_daemon_mode && a.stderr_log && a.zero_process_limit);
        assert_eq!(a.verbose, 2);
        assert_eq!(a.service_name(), "qmgr");
        assert_eq!(
            a.overrides,
            vec![
                ("qmgr_message_active_limit".into(), "100".into()),
                ("a".into(), String::new())
            ]
        );
        assert_eq!(a.listen_fds, 2);
        assert_eq!(a.max_idle.as_deref(), Some("5"));
        assert_eq!(a.max_use.as_deref(), Some("100"));
    }

    #[test]
    fn errors_use_postfix_wording() {
        let e = DaemonArgs::parse(argv(&["q", "-t", "unix", "extra"])).unwrap_err();
        assert_eq!(e.to_string(), "unexpected command-line argument: extra");
        let e = DaemonArgs::parse(argv(&["q", "-x"])).unwrap_err();
        assert_eq!(e.to_string(), "invalid option: x");
        assert_eq!(
            DaemonArgs::parse(argv(&["q", "-t"])),
            Err(ArgsError::MissingArgument('t'))
        );
        let e = DaemonArgs::parse(argv(&["q", "-t", "unix", "-o", "novalue"])).unwrap_err();
        assert_eq!(
            e.to_string(),
            "invalid \"-o novalue\" option value: missing '=' after attribute name"
        );
        let e = DaemonArgs::parse(argv(&["q", "-t", "unix", "-o", "=x"])).unwrap_err();
        assert!(e.to_string().ends_with("missing attribute name"));
        assert_eq!(
            DaemonArgs::parse(argv(&["q", "-t", "unix", "-s", "0"])),
            Err(ArgsError::InvalidSocketCount("0".into()))
        );
        assert_eq!(DaemonArgs::parse(argv(&["q"])), Err(ArgsError::NoTransport));
        assert!(DaemonArgs::parse(argv(&["q", "-S"])).is_ok());
        // "--" ends options; what follows is still a leftover argument.
        assert_eq!(
            DaemonArgs::parse(argv(&["q", "-t", "unix", "--", "-l"])),
            Err(ArgsError::UnexpectedArgument("-l".into()))
        );
    }

    #[test]
    fn generation_is_octal() {
        assert_eq!(parse_generation("13"), Ok(0o13));
        assert_eq!(parse_generation("0"), Ok(0));
        assert!(parse_generation("").is_err());
        assert!(parse_generation("1a").is_err());
    }
}
