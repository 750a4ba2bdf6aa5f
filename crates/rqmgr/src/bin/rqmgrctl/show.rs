//! `status`, `transports`, `destinations`, `jobs`, `overrides` and `metrics`: what a
//! running rqmgr says about itself, as aligned tables (like qshape) or,
//! with `--json`, as the JSON it answered.

use std::io::Write;

use serde_json::Value;

use crate::client;
use crate::instance::Instance;

/// One view to show.
pub(crate) enum View {
    /// Active-queue totals.
    Status,
    /// Every transport.
    Transports,
    /// Destinations: one transport, one destination, or the top ones.
    Destinations {
        transport: Option<String>,
        nexthop: Option<String>,
        top: usize,
    },
    /// Jobs, of one transport or all.
    Jobs {
        transport: Option<String>,
        limit: usize,
    },
    /// The Prometheus text.
    Metrics,
    /// Operators' overrides in force.
    Overrides,
}

/// Asks rqmgr for `view` and prints it.
pub(crate) fn show(inst: &Instance, view: &View, json: bool) -> Result<(), String> {
    let path = match view {
        View::Status => "/status".to_owned(),
        View::Transports => "/transports".to_owned(),
        View::Destinations {
            transport,
            nexthop,
            top,
        } => {
            let mut q = format!("/destinations?top={top}");
            if let Some(t) = transport {
                q += &format!("&transport={}", client::encode(t));
            }
            if let Some(n) = nexthop {
                q += &format!("&nexthop={}", client::encode(n));
            }
            q
        }
        View::Jobs { transport, limit } => {
            let mut q = format!("/jobs?limit={limit}");
            if let Some(t) = transport {
                q += &format!("&transport={}", client::encode(t));
            }
            q
        }
        View::Metrics => "/metrics".to_owned(),
        View::Overrides => "/overrides".to_owned(),
    };
    let body = client::get(inst, &path)?;
    let mut out = std::io::stdout().lock();
    if json || matches!(view, View::Metrics) {
        let _ = writeln!(out, "{}", body.trim_end());
        return Ok(());
    }
    let value: Value =
        serde_json::from_str(&body).map_err(|e| format!("rqmgr's answer is not JSON: {e}"))?;
    let text = match view {
        View::Status => status_text(&value),
        View::Transports => table(
            &value,
            &[
                ("TRANSPORT", "name"),
                ("DEAD", "dead"),
                ("BUSY", "busy"),
                ("PENDING", "pending"),
                ("DESTS", "destinations"),
                ("CONC", "concurrency_limit"),
                ("RCPTS", "recipient_limit"),
                ("RATE", "rate_delay_seconds"),
                ("THROTTLES", "throttles"),
            ],
        ),
        View::Destinations { .. } => table(
            &value,
            &[
                ("TRANSPORT", "transport"),
                ("NEXTHOP", "nexthop"),
                ("STATE", "state"),
                ("WINDOW", "window"),
                ("LIMIT", "window_limit"),
                ("TODO", "todo_recipients"),
                ("BUSY", "busy"),
                ("RETRY", "next_retry_seconds"),
                ("REASON", "reason"),
            ],
        ),
        View::Jobs { .. } => table(
            &value,
            &[
                ("QUEUE_ID", "queue_id"),
                ("TRANSPORT", "transport"),
                ("IN_CORE", "recipients_in_core"),
                ("UNREAD", "unread"),
                ("SELECTED", "selected_entries"),
                ("SLOTS", "slots_used"),
                ("FREE", "slots_available"),
                ("BLOCKER", "blocker"),
            ],
        ),
        View::Overrides => table(
            &value,
            &[
                ("ID", "id"),
                ("TARGET", "target"),
                ("KIND", "kind"),
                ("VALUE", "value"),
                ("UID", "uid"),
                ("AGE", "age_seconds"),
                ("LEFT", "remaining_seconds"),
                ("HELD", "held_messages"),
                ("REASON", "reason"),
            ],
        ),
        View::Metrics => String::new(),
    };
    let _ = write!(out, "{text}");
    Ok(())
}

fn cell(v: &Value) -> String {
    match v {
        Value::Null => "-".to_owned(),
        Value::String(s) => s.clone(),
        Value::Bool(b) => if *b { "yes" } else { "no" }.to_owned(),
        Value::Number(n) => match n.as_f64() {
            Some(f) if n.is_f64() => format!("{f:.1}"),
            _ => n.to_string(),
        },
        other => other.to_string(),
    }
}

/// Rows of `value` (an array of objects) as aligned columns.
fn table(value: &Value, columns: &[(&str, &str)]) -> String {
    let rows: Vec<Vec<String>> = value
        .as_array()
        .map(|a| {
            a.iter()
                .map(|row| columns.iter().map(|(_, k)| cell(&row[*k])).collect())
                .collect()
        })
        .unwrap_or_default();
    let mut widths: Vec<usize> = columns.iter().map(|(h, _)| h.len()).collect();
    for row in &rows {
        for (w, c) in widths.iter_mut().zip(row) {
            *w = (*w).max(c.chars().count());
        }
    }
    let line = |cells: Vec<String>| {
        let last = cells.len().saturating_sub(1);
        let mut s = String::new();
        for (i, (c, w)) in cells.iter().zip(&widths).enumerate() {
            if i == last {
                s += c;
            } else {
                s += &format!("{c:<w$}  ");
            }
        }
        s.trim_end().to_owned() + "\n"
    };
    let mut out = line(columns.iter().map(|(h, _)| (*h).to_owned()).collect());
    for row in rows {
        out += &line(row);
    }
    out
}

fn status_text(v: &Value) -> String {
    let pair = |a: &str, b: &str| format!("{}/{}", cell(&v[a]), cell(&v[b]));
    format!(
        "rqmgr {} ({}) for Postfix {}\nactive messages   {}\nactive recipients {}\nready for agents  {}{}\ntransports        {}\ndestinations      {}\noverrides         {}\ndeferred indexed  {}\n",
        cell(&v["rqmgr_version"]),
        cell(&v["role"]),
        cell(&v["postfix_version"]),
        pair("active_messages", "active_messages_limit"),
        pair("active_recipients", "active_recipients_limit"),
        cell(&v["ready_entries"]),
        if v["intake_held"] == true {
            " (reading waits)"
        } else {
            ""
        },
        cell(&v["transports"]),
        cell(&v["destinations"]),
        cell(&v["overrides"]),
        cell(&v["deferred_indexed"]),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tables_are_aligned() {
        let v: Value = serde_json::json!([
            { "transport": "smtp", "nexthop": "[127.0.0.1]:25", "state": "throttled", "reason": "connect refused" },
            { "transport": "local", "nexthop": "x", "state": "ready", "reason": null },
        ]);
        let t = table(
            &v,
            &[
                ("TRANSPORT", "transport"),
                ("NEXTHOP", "nexthop"),
                ("STATE", "state"),
                ("REASON", "reason"),
            ],
        );
        assert_eq!(
            t,
            "TRANSPORT  NEXTHOP         STATE      REASON\n\
             smtp       [127.0.0.1]:25  throttled  connect refused\n\
             local      x               ready      -\n"
        );
    }

    #[test]
    fn status_says_when_reading_waits() {
        let mut v: Value = serde_json::json!({
            "rqmgr_version": "0.1.0", "role": "qmgr", "postfix_version": "3.7.11",
            "active_messages": 700, "active_messages_limit": 20000,
            "active_recipients": 700, "active_recipients_limit": 20000,
            "ready_entries": 650, "intake_held": true,
            "transports": 1, "destinations": 1, "overrides": 0, "deferred_indexed": 0,
        });
        let text = status_text(&v);
        assert!(
            text.contains("\nready for agents  650 (reading waits)\n"),
            "{text}"
        );
        v["intake_held"] = Value::Bool(false);
        let text = status_text(&v);
        assert!(text.contains("\nready for agents  650\n"), "{text}");
    }
}
