//! Reading Postfix's mail log (`maillog_file`, written by postlogd).
//!
//! Job: split the log into lines, pick out the lines of one queue id or of
//! the queue manager, and normalise lines (queue ids, pids, times, ports,
//! delays) so that logs of two runs, e.g. stock qmgr vs rqmgr, can be compared.
//! Line format (syslog style, as postlogd writes it):
//! `Mon DD HH:MM:SS host program[pid]: text`. Lines that do not parse are kept
//! as text but have no program/pid.
//! Limits: queue ids are recognised by shape (short hex ids, or long ids with
//! a `z`), at the start of a message text; ids only mentioned elsewhere are
//! replaced during normalisation only if they also appear in that position.

use std::collections::HashMap;

/// One parsed log line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LogLine<'a> {
    /// The whole line.
    pub raw: &'a str,
    /// The program tag, e.g. `postfix/qmgr`; empty if the line did not parse.
    pub program: &'a str,
    /// The process id, if any.
    pub pid: Option<u32>,
    /// The text after `program[pid]: `.
    pub text: &'a str,
}

impl<'a> LogLine<'a> {
    /// Parses a line; unparsable lines get an empty program and the whole
    /// line as text.
    pub fn parse(raw: &'a str) -> LogLine<'a> {
        let fallback = LogLine {
            raw,
            program: "",
            pid: None,
            text: raw,
        };
        // Skip "Mon DD HH:MM:SS host " = 4 space-separated fields (the day
        // may be padded with an extra space, so split on runs of spaces).
        let mut rest = raw;
        for _ in 0..4 {
            rest = rest.trim_start_matches(' ');
            match rest.find(' ') {
                Some(i) => rest = &rest[i..],
                None => return fallback,
            }
        }
        let rest = rest.trim_start_matches(' ');
        let Some(colon) = rest.find(": ") else {
            return fallback;
        };
        let tag = &rest[..colon];
        let text = &rest[colon + 2..];
        let (program, pid) = match tag.find('[') {
            Some(b) if tag.ends_with(']') => (&tag[..b], tag[b + 1..tag.len() - 1].parse().ok()),
            _ => (tag, None),
        };
        LogLine {
            raw,
            program,
            pid,
            text,
        }
    }

    /// The queue id this line is about (`ID: ...` at the start of the text).
    pub fn queue_id(&self) -> Option<&'a str> {
        let (id, _) = self.text.split_once(": ")?;
        is_queue_id(id).then_some(id)
    }
}

/// True for strings shaped like a Postfix queue id: a short id (upper-case
/// hex, at least 6 characters: µs + inode) or a long id (base-52/51
/// characters with the `z` separator at index ≥ 10).
pub fn is_queue_id(s: &str) -> bool {
    let short = s.len() >= 6
        && s.bytes()
            .all(|b| b.is_ascii_digit() || (b'A'..=b'F').contains(&b));
    let long =
        s.bytes().all(|b| b.is_ascii_alphanumeric()) && s.rfind('z').is_some_and(|i| i >= 10);
    short || long
}

/// A snapshot of a mail log.
#[derive(Debug, Clone, Default)]
pub struct Maillog {
    text: String,
}

impl Maillog {
    /// Wraps the text of a mail log.
    pub fn new(text: String) -> Maillog {
        Maillog { text }
    }

    /// The whole text.
    pub fn text(&self) -> &str {
        &self.text
    }

    /// All lines, parsed.
    pub fn lines(&self) -> Vec<LogLine<'_>> {
        self.text.lines().map(LogLine::parse).collect()
    }

    /// Lines about queue id `id`.
    pub fn for_queue_id(&self, id: &str) -> Vec<LogLine<'_>> {
        self.lines()
            .into_iter()
            .filter(|l| l.queue_id() == Some(id))
            .collect()
    }

    /// Lines of program `program` (e.g. `postfix/qmgr`), any pid.
    pub fn of_program(&self, program: &str) -> Vec<LogLine<'_>> {
        self.lines()
            .into_iter()
            .filter(|l| l.program == program)
            .collect()
    }

    /// Lines of program `program` whose text contains `needle`.
    pub fn matching(&self, program: &str, needle: &str) -> Vec<LogLine<'_>> {
        self.lines()
            .into_iter()
            .filter(|l| l.program == program && l.text.contains(needle))
            .collect()
    }

    /// Number of lines whose raw text contains `needle`.
    pub fn count(&self, needle: &str) -> usize {
        self.text.lines().filter(|l| l.contains(needle)).count()
    }

    /// Queue ids (in order of first appearance) that program `program`
    /// logged a line for whose text after the id starts with `prefix`; e.g.
    /// `("postfix/smtpd", "client=")` gives every message smtpd received.
    pub fn queue_ids_logged(&self, program: &str, prefix: &str) -> Vec<String> {
        let mut seen = Vec::new();
        for l in self.lines() {
            if l.program != program {
                continue;
            }
            if let Some(id) = l.queue_id() {
                let after = &l.text[id.len() + 2..];
                if after.starts_with(prefix) && !seen.iter().any(|s: &String| s == id) {
                    seen.push(id.to_string());
                }
            }
        }
        seen
    }

    /// The log normalised for comparisons between runs: see [`normalize`].
    pub fn normalized(&self) -> Vec<String> {
        normalize(&self.text)
    }
}

/// Normalises log text line by line: drops the time stamp and host name,
/// replaces pids by `PID`, queue ids by `QID1`, `QID2`, … in order of first
/// appearance (consistently across lines), `delay=`/`delays=` values by `D`,
/// `:port` after `]` by `:PORT` and `message-id=<…>` by `message-id=<MSGID>`.
pub fn normalize(text: &str) -> Vec<String> {
    let mut ids: HashMap<String, String> = HashMap::new();
    let mut out = Vec::new();
    for raw in text.lines() {
        let l = LogLine::parse(raw);
        let mut line = if l.program.is_empty() {
            raw.to_string()
        } else {
            let pid = if l.pid.is_some() { "[PID]" } else { "" };
            format!("{}{}: {}", l.program, pid, l.text)
        };
        if let Some(id) = l.queue_id() {
            let n = ids.len() + 1;
            ids.entry(id.to_string())
                .or_insert_with(|| format!("QID{n}"));
        }
        line = line
            .split(' ')
            .map(|w| normalize_word(w, &ids))
            .collect::<Vec<_>>()
            .join(" ");
        out.push(line);
    }
    out
}

/// Normalises one space-separated word of a log line.
fn normalize_word(word: &str, ids: &HashMap<String, String>) -> String {
    for key in ["delay=", "delays="] {
        if let Some(rest) = word.strip_prefix(key) {
            let comma = if rest.ends_with(',') { "," } else { "" };
            return format!("{key}D{comma}");
        }
    }
    if word.starts_with("message-id=<") {
        return "message-id=<MSGID>".to_string();
    }
    // Replace known queue ids wherever they occur as whole tokens, e.g.
    // "ID:", "(ID)", "\"ID\"".
    let core: &str = word.trim_matches(|c: char| !c.is_ascii_alphanumeric());
    let mut w = word.to_string();
    if let Some(rep) = ids.get(core) {
        w = w.replacen(core, rep, 1);
    }
    if let Some(i) = w.find("]:") {
        let digits = w[i + 2..].bytes().take_while(u8::is_ascii_digit).count();
        if digits > 0 {
            w = format!("{}]:PORT{}", &w[..i], &w[i + 2 + digits..]);
        }
    }
    w
}

#[cfg(test)]
mod tests {
    use super::*;

    const LOG: &str = "Nov 29 17:44:16 vm postfix/qmgr[5075]: E8E2798C23C: from=<a@b>, size=275, nrcpt=1 (queue active)\n\
Nov  9 17:44:16 vm postfix/smtp[5122]: E8E2798C23C: to=<x@y>, relay=127.0.0.1[127.0.0.1]:2525, delay=0.01, delays=0/0.01/0/0, dsn=2.0.0, status=sent (250 Ok)\n\
Nov 29 17:44:16 vm postfix/qmgr[5075]: E8E2798C23C: removed\n\
Nov 29 17:44:17 vm postfix/qmgr[5075]: warning: saving corrupt file \"ABCDEF12345\" from queue \"incoming\" to queue \"corrupt\"\n";

    #[test]
    fn parses_lines() {
        let l = LogLine::parse(LOG.lines().nth(1).unwrap());
        assert_eq!(l.program, "postfix/smtp");
        assert_eq!(l.pid, Some(5122));
        assert_eq!(l.queue_id(), Some("E8E2798C23C"));
        let w = LogLine::parse(LOG.lines().nth(3).unwrap());
        assert_eq!(w.queue_id(), None);
    }

    #[test]
    fn selects_lines() {
        let log = Maillog::new(LOG.to_string());
        assert_eq!(log.for_queue_id("E8E2798C23C").len(), 3);
        assert_eq!(log.of_program("postfix/qmgr").len(), 3);
        assert_eq!(log.matching("postfix/qmgr", "removed").len(), 1);
        assert_eq!(
            log.queue_ids_logged("postfix/qmgr", "removed"),
            ["E8E2798C23C"]
        );
    }

    #[test]
    fn normalizes() {
        let n = normalize(LOG);
        assert_eq!(
            n[0],
            "postfix/qmgr[PID]: QID1: from=<a@b>, size=275, nrcpt=1 (queue active)"
        );
        assert_eq!(
            n[1],
            "postfix/smtp[PID]: QID1: to=<x@y>, relay=127.0.0.1[127.0.0.1]:PORT, delay=D, delays=D, dsn=2.0.0, status=sent (250 Ok)"
        );
    }

    #[test]
    fn recognises_queue_ids() {
        assert!(is_queue_id("E8E2798C23C"));
        assert!(is_queue_id("4QxYzB1cDfz2Kq"));
        assert!(!is_queue_id("warning"));
        assert!(!is_queue_id("statistics"));
    }
}
