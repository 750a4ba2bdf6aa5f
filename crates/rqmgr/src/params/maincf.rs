//! Reading `main.cf` directly, for the few names `postconf -x` will not print.
//!
//! Job: `postconf` prints every parameter it knows, fully expanded, but it
//! stays silent about names it does not know: per-transport settings for
//! transports that have no `master.cf` entry (`foo_destination_rate_delay`),
//! and retired names such as `qmgr_site_hog_factor`. Postfix's own daemons
//! still see those names, because they consult the `main.cf` dictionary
//! directly. This module reproduces the part of that dictionary the queue
//! manager needs: the logical-line syntax of `main.cf` and the classic
//! `$name` expansion forms.
//!
//! Invariants: values taken from `postconf` output are final and are never
//! expanded again (a `$` there is literal); only values read here are expanded.
//!
//! Failure: malformed macro references and runaway recursion are reported as
//! [`ParamError::Macro`], which Postfix also treats as fatal.
//!
//! Limits: the 3.x relational forms (`${{$a} == {b} ? {x} : {y}}`) are not
//! implemented and are reported as errors; `main.cf` lines without `=` are
//! skipped (Postfix would already have failed in `postconf`).

use std::collections::HashMap;

use super::ParamError;

/// Deepest nesting of macro evaluation accepted, as in Postfix's expander.
const MAX_NESTING: usize = 100;

/// Split `main.cf` text into `(name, raw value)` pairs, last definition last.
///
/// A line that starts with whitespace continues the previous logical line;
/// blank lines and lines whose first non-blank character is `#` are dropped
/// before continuation is considered, as Postfix's line reader does.
pub(super) fn parse_main_cf(text: &str) -> Vec<(String, String)> {
    let mut logical: Vec<String> = Vec::new();
    for line in text.lines() {
        let trimmed = line.trim_start();
        if trimmed.is_empty() || trimmed.starts_with('#') {
            continue;
        }
        let continues = trimmed.len() != line.len();
        match logical.last_mut() {
            Some(prev) if continues => {
                prev.push(' ');
                prev.push_str(trimmed.trim_end());
            }
            _ => logical.push(line.trim_end().to_string()),
        }
    }
    logical
        .into_iter()
        .filter_map(|l| {
            let (name, value) = l.split_once('=')?;
            let name = name.trim();
            if name.is_empty() {
                return None;
            }
            Some((name.to_string(), value.trim().to_string()))
        })
        .collect()
}

/// Two-level view of the configuration used during expansion.
pub(super) struct Expander<'a> {
    /// Final values (from `postconf`): returned verbatim.
    pub(super) fixed: &'a HashMap<String, String>,
    /// Raw values (from `main.cf` or `-o`): expanded on use.
    pub(super) raw: &'a HashMap<String, String>,
}

impl Expander<'_> {
    /// The value of `name`, expanded, or `None` when it is not defined.
    pub(super) fn lookup(&self, name: &str, depth: usize) -> Result<Option<String>, ParamError> {
        if let Some(v) = self.fixed.get(name) {
            return Ok(Some(v.clone()));
        }
        match self.raw.get(name) {
            Some(v) => self.expand(v, depth + 1).map(Some),
            None => Ok(None),
        }
    }

    /// Expand `$name`, `${name}`, `$(name)`, `${name?text}`, `${name:text}`
    /// and `$$` in `value`; undefined names expand to the empty string.
    pub(super) fn expand(&self, value: &str, depth: usize) -> Result<String, ParamError> {
        if depth > MAX_NESTING {
            return Err(macro_error(value, "unreasonable macro call nesting"));
        }
        let bytes = value.as_bytes();
        let mut out = String::with_capacity(value.len());
        let mut i = 0;
        while i < bytes.len() {
            if bytes[i] != b'$' {
                // Copy a run of ordinary text; `$` is ASCII so slicing at it is safe.
                let next = value[i..].find('$').map_or(bytes.len(), |n| i + n);
                out.push_str(&value[i..next]);
                i = next;
                continue;
            }
            match bytes.get(i + 1) {
                Some(b'$') => {
                    out.push('$');
                    i += 2;
                }
                Some(&open @ (b'{' | b'(')) => {
                    let close = if open == b'{' { b'}' } else { b')' };
                    let start = i + 2;
                    let mut level = 1;
                    let mut j = start;
                    while j < bytes.len() {
                        if bytes[j] == open {
                            level += 1;
                        } else if bytes[j] == close {
                            level -= 1;
                            if level == 0 {
                                break;
                            }
                        }
                        j += 1;
                    }
                    if level != 0 {
                        return Err(macro_error(value, "truncated macro reference"));
                    }
                    out.push_str(&self.expand_expr(value, &value[start..j], depth)?);
                    i = j + 1;
                }
                _ => {
                    let start = i + 1;
                    let len = value[start..]
                        .bytes()
                        .take_while(|b| b.is_ascii_alphanumeric() || *b == b'_')
                        .count();
                    if len == 0 {
                        return Err(macro_error(value, "empty macro name"));
                    }
                    let name = &value[start..start + len];
                    out.push_str(&self.lookup(name, depth)?.unwrap_or_default());
                    i = start + len;
                }
            }
        }
        Ok(out)
    }

    /// Evaluate the inside of `${...}`: a name, optionally followed by a
    /// `?` or `:` conditional whose text may itself be wrapped in braces.
    fn expand_expr(&self, whole: &str, expr: &str, depth: usize) -> Result<String, ParamError> {
        let len = expr
            .bytes()
            .take_while(|b| b.is_ascii_alphanumeric() || *b == b'_')
            .count();
        if len == 0 {
            let reason = if expr.starts_with('{') {
                "relational expressions are not supported"
            } else {
                "empty macro name"
            };
            return Err(macro_error(whole, reason));
        }
        let (name, rest) = expr.split_at(len);
        let value = self.lookup(name, depth)?;
        let non_empty = value.as_deref().is_some_and(|v| !v.is_empty());
        let Some(op) = rest.chars().next() else {
            return Ok(value.unwrap_or_default());
        };
        let text = &rest[1..];
        let (when_set, when_unset) = match op {
            '?' => split_braced_alternatives(text),
            ':' => (None, Some(unbrace(text))),
            _ => return Err(macro_error(whole, "bad macro operator")),
        };
        let chosen = if non_empty { when_set } else { when_unset };
        match chosen {
            Some(t) => self.expand(t, depth + 1),
            None => Ok(String::new()),
        }
    }
}

/// Split `{a}:{b}` (the 3.x two-way form) or plain `a` after a `?`.
fn split_braced_alternatives(text: &str) -> (Option<&str>, Option<&str>) {
    let t = text.trim();
    if let Some(inner) = t.strip_prefix('{') {
        let mut level = 1;
        for (pos, ch) in inner.char_indices() {
            match ch {
                '{' => level += 1,
                '}' => {
                    level -= 1;
                    if level == 0 {
                        let first = &inner[..pos];
                        let rest = inner[pos + 1..].trim_start();
                        let second = rest.strip_prefix(':').map(unbrace);
                        return (Some(first), second);
                    }
                }
                _ => {}
            }
        }
    }
    (Some(text), None)
}

/// Strip one pair of surrounding braces, if present.
fn unbrace(text: &str) -> &str {
    let t = text.trim();
    t.strip_prefix('{')
        .and_then(|s| s.strip_suffix('}'))
        .unwrap_or(text)
}

fn macro_error(value: &str, reason: &'static str) -> ParamError {
    ParamError::Macro {
        value: value.to_string(),
        reason,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn logical_lines_follow_postfix_rules() {
        let text = "a = 1\n# c\nb = x,\n   y\n  # comment inside\n\tz\n\nc=\nd = p = q\n a_cont\n";
        let got = parse_main_cf(text);
        assert_eq!(
            got,
            vec![
                ("a".into(), "1".into()),
                ("b".into(), "x, y z".into()),
                ("c".into(), "".into()),
                ("d".into(), "p = q a_cont".into()),
            ]
        );
    }

    #[test]
    fn expansion_forms() {
        let fixed: HashMap<String, String> = [
            ("x".to_string(), "X".to_string()),
            ("e".to_string(), String::new()),
        ]
        .into();
        let raw: HashMap<String, String> = [
            ("r".to_string(), "<$x>".to_string()),
            ("loop".to_string(), "$loop".to_string()),
        ]
        .into();
        let ex = Expander {
            fixed: &fixed,
            raw: &raw,
        };
        let cases = [
            ("$x ${x} $(x) $$x", "X X X $x"),
            ("$r", "<X>"),
            ("${x?yes}|${e?yes}|${nope?yes}", "yes||"),
            ("${x:no}|${e:no}|${nope:no}", "|no|no"),
            ("${x?{a}:{b}} ${e?{a}:{b}}", "a b"),
            ("$undefined.", "."),
        ];
        for (input, want) in cases {
            assert_eq!(ex.expand(input, 0).ok().as_deref(), Some(want), "{input}");
        }
        assert!(matches!(
            ex.expand("$loop", 0),
            Err(ParamError::Macro { .. })
        ));
        assert!(matches!(ex.expand("${x", 0), Err(ParamError::Macro { .. })));
        assert!(matches!(ex.expand("$ x", 0), Err(ParamError::Macro { .. })));
        assert!(matches!(
            ex.expand("${{$x} == {X} ? {a}}", 0),
            Err(ParamError::Macro { .. })
        ));
    }
}
