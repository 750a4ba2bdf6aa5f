//! The changes an operator makes to a running rqmgr: `suspend`, `resume`,
//! `flush`, `unthrottle`, `set`, `clear`, and the list of `overrides` in
//! force. Each is one POST (GET for the list) on the admin socket; rqmgr
//! does the work, logs it with the caller's uid and saves it.
//!
//! DEST is a transport (`smtp`) or one destination as `rqmgrctl
//! destinations` shows it (`smtp:example.com`, `smtp:[192.0.2.1]:25`): the
//! transport ends at the first colon. Durations take Postfix's time units
//! (`90`, `90s`, `15m`, `2h`, `1d`, `1w`).

use std::io::Write;

use serde_json::Value;

use crate::client;
use crate::instance::Instance;

/// `transport=...[&nexthop=...]` for DEST.
fn target_query(dest: &str) -> Result<String, String> {
    let (transport, nexthop) = match dest.split_once(':') {
        Some((t, n)) => (t, Some(n)),
        None => (dest, None),
    };
    if transport.is_empty() || nexthop == Some("") {
        return Err(format!("{dest:?}: use TRANSPORT or TRANSPORT:NEXTHOP"));
    }
    let mut q = format!("transport={}", client::encode(transport));
    if let Some(n) = nexthop {
        q += &format!("&nexthop={}", client::encode(n));
    }
    Ok(q)
}

/// Seconds in a duration written as Postfix writes times.
pub(crate) fn seconds(text: &str) -> Result<u64, String> {
    let t = text.trim();
    let (number, unit) = match t.find(|c: char| !c.is_ascii_digit()) {
        Some(i) => t.split_at(i),
        None => (t, "s"),
    };
    let scale = match unit {
        "s" => 1,
        "m" => 60,
        "h" => 3600,
        "d" => 86_400,
        "w" => 604_800,
        _ => return Err(format!("{text:?}: use a number with s, m, h, d or w")),
    };
    number
        .parse::<u64>()
        .ok()
        .and_then(|n| n.checked_mul(scale))
        .ok_or_else(|| format!("{text:?}: use a number with s, m, h, d or w"))
}

/// POSTs `path` and returns rqmgr's JSON answer, or its error.
fn change(inst: &Instance, what: &str, path: &str) -> Result<Value, String> {
    let body = client::post(inst, path)?;
    let v: Value =
        serde_json::from_str(&body).map_err(|e| format!("rqmgr's answer is not JSON: {e}"))?;
    match v.get("error").and_then(Value::as_str) {
        Some(e) => Err(format!("{what}: {e}")),
        None => Ok(v),
    }
}

fn say(json: bool, v: &Value, line: String) {
    let mut out = std::io::stdout().lock();
    let _ = if json {
        writeln!(out, "{v}")
    } else {
        writeln!(out, "{line}")
    };
}

fn count(v: &Value, key: &str) -> u64 {
    v[key].as_u64().unwrap_or(0)
}

/// `rqmgrctl suspend DEST [--for D] [--reason TEXT]`.
pub(crate) fn suspend(
    inst: &Instance,
    dest: &str,
    for_: Option<&str>,
    reason: Option<&str>,
    json: bool,
) -> Result<(), String> {
    let mut path = format!("/suspend?{}", target_query(dest)?);
    if let Some(d) = for_ {
        path += &format!("&for={}", seconds(d)?);
    }
    if let Some(r) = reason {
        path += &format!("&reason={}", client::encode(r));
    }
    let v = change(inst, dest, &path)?;
    let line = format!(
        "{dest}: suspended, override {}, {} recipients deferred",
        count(&v, "id"),
        count(&v, "deferred")
    );
    say(json, &v, line);
    Ok(())
}

/// `rqmgrctl resume DEST`.
pub(crate) fn resume(inst: &Instance, dest: &str, json: bool) -> Result<(), String> {
    let v = change(inst, dest, &format!("/resume?{}", target_query(dest)?))?;
    let ended = v["ended"].as_array().map_or(0, Vec::len);
    if ended == 0 && !json {
        return Err(format!("{dest}: not suspended"));
    }
    let line = format!(
        "{dest}: resumed, {ended} overrides ended, {} messages released",
        count(&v, "released")
    );
    say(json, &v, line);
    Ok(())
}

/// `rqmgrctl flush DEST`.
pub(crate) fn flush(inst: &Instance, dest: &str, json: bool) -> Result<(), String> {
    let v = change(inst, dest, &format!("/flush?{}", target_query(dest)?))?;
    let line = format!("{dest}: {} messages released", count(&v, "released"));
    say(json, &v, line);
    Ok(())
}

/// `rqmgrctl unthrottle DEST`.
pub(crate) fn unthrottle(inst: &Instance, dest: &str, json: bool) -> Result<(), String> {
    let v = change(inst, dest, &format!("/unthrottle?{}", target_query(dest)?))?;
    let line = format!("{dest}: {} revived", count(&v, "revived"));
    say(json, &v, line);
    Ok(())
}

/// `rqmgrctl set DEST NAME=VALUE [--for D]`.
pub(crate) fn set(
    inst: &Instance,
    dest: &str,
    setting: &str,
    for_: Option<&str>,
    json: bool,
) -> Result<(), String> {
    let usage = || format!("{setting:?}: use concurrency=N, rate_delay=TIME or recipient_limit=N");
    let (name, value) = setting.split_once('=').ok_or_else(usage)?;
    let value = match name {
        "concurrency" | "recipient_limit" => value
            .trim()
            .parse::<u32>()
            .map_err(|_| usage())?
            .to_string(),
        "rate_delay" => seconds(value)?.to_string(),
        _ => return Err(usage()),
    };
    let mut path = format!("/set?{}&{name}={value}", target_query(dest)?);
    if let Some(d) = for_ {
        path += &format!("&for={}", seconds(d)?);
    }
    let v = change(inst, dest, &path)?;
    let line = format!("{dest}: {setting}, override {}", count(&v, "id"));
    say(json, &v, line);
    Ok(())
}

/// `rqmgrctl clear ID`.
pub(crate) fn clear(inst: &Instance, id: u64, json: bool) -> Result<(), String> {
    let v = change(inst, &format!("override {id}"), &format!("/clear?id={id}"))?;
    let line = format!(
        "override {id}: cleared, {} messages released",
        count(&v, "released")
    );
    say(json, &v, line);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_in_postfix_units() {
        assert_eq!(seconds("90"), Ok(90));
        assert_eq!(seconds("15m"), Ok(900));
        assert_eq!(seconds("2h"), Ok(7200));
        assert_eq!(seconds("1w"), Ok(604_800));
        assert!(seconds("1y").is_err());
        assert!(seconds("m").is_err());
        assert!(seconds("99999999999999999999d").is_err());
    }

    #[test]
    fn destinations_split_at_the_first_colon() {
        assert_eq!(target_query("smtp"), Ok("transport=smtp".to_owned()));
        assert_eq!(
            target_query("smtp:[192.0.2.1]:25"),
            Ok("transport=smtp&nexthop=%5B192.0.2.1%5D%3A25".to_owned())
        );
        assert!(target_query(":x").is_err());
        assert!(target_query("smtp:").is_err());
    }
}
