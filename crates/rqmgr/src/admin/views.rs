//! What the admin endpoints answer: requests parsed from a URL, and JSON
//! built from the scheduler's bounded views (`rqmgr_sched::snapshot`).
//!
//! Names (transports, next hops) are bytes to Postfix; JSON shows them as
//! UTF-8, with invalid bytes replaced, which is for reading only. Times
//! are seconds relative to now. Every list is capped: a queue with 10,000
//! destinations answers with the top ones.

use rqmgr_sched::{DestinationSelect, Dsn, LiveLimit};
use serde_json::{json, Value};

use super::{AdminAnswer, AdminRequest};
use crate::state::Core;

/// Destinations shown when the client names no number.
const DEFAULT_TOP: usize = 100;
/// Most destinations or jobs one answer holds.
const MAX_ROWS: usize = 10_000;
const JSON: &str = "application/json";
/// Prometheus' text exposition format.
const METRICS_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";

/// `/destinations`' selection.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct DestinationQuery {
    /// Only this transport.
    pub transport: Option<Vec<u8>>,
    /// Only this next hop (with `transport`).
    pub nexthop: Option<Vec<u8>>,
    /// At most this many, those with most waiting recipients first.
    pub top: usize,
}

/// Parses a request's method (POST or GET), path and query string.
pub(crate) fn parse(post: bool, path: &str, query: &str) -> Result<AdminRequest, String> {
    let arg = |name: &str| {
        query.split('&').find_map(|kv| {
            let (k, v) = kv.split_once('=').unwrap_or((kv, ""));
            (k == name).then(|| percent_decode(v))
        })
    };
    let number = |name: &str, default: usize| -> Result<usize, String> {
        match arg(name) {
            None => Ok(default),
            Some(v) => String::from_utf8_lossy(&v)
                .parse::<usize>()
                .map(|n| n.min(MAX_ROWS))
                .map_err(|_| format!("{name} must be a number")),
        }
    };
    let path = path.trim_end_matches('/');
    if post {
        return match (path, arg("transport")) {
            ("/unthrottle", Some(transport)) => Ok(AdminRequest::Unthrottle {
                transport,
                nexthop: arg("nexthop"),
            }),
            ("/unthrottle", None) => Err("unthrottle needs a transport".into()),
            ("/set", Some(transport)) => {
                let limit = match (arg("concurrency"), arg("recipient_limit")) {
                    (Some(n), None) => LiveLimit::Concurrency(limit_value(&n)?),
                    (None, Some(n)) => LiveLimit::RecipientLimit(limit_value(&n)?),
                    _ => return Err("set needs one of concurrency=N or recipient_limit=N".into()),
                };
                Ok(AdminRequest::Set { transport, limit })
            }
            ("/set", None) => Err("set needs a transport".into()),
            (other, _) => Err(format!("no such action: {other}")),
        };
    }
    match path {
        "" | "/status" => Ok(AdminRequest::Status),
        "/transports" => Ok(AdminRequest::Transports),
        "/destinations" => Ok(AdminRequest::Destinations(DestinationQuery {
            transport: arg("transport"),
            nexthop: arg("nexthop"),
            top: number("top", DEFAULT_TOP)?,
        })),
        "/jobs" => Ok(AdminRequest::Jobs {
            transport: arg("transport"),
            limit: number("limit", DEFAULT_TOP)?,
        }),
        "/metrics" => Ok(AdminRequest::Metrics),
        other => Err(format!("no such endpoint: {other}")),
    }
}

/// `%XX` and `+` decoding of a query value, to bytes.
fn percent_decode(s: &str) -> Vec<u8> {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        let hex = |c: u8| (c as char).to_digit(16);
        match b[i] {
            b'%' if i + 2 < b.len() => match (hex(b[i + 1]), hex(b[i + 2])) {
                (Some(h), Some(l)) => {
                    out.push(u8::try_from(h * 16 + l).unwrap_or(b'?'));
                    i += 3;
                    continue;
                }
                _ => out.push(b'%'),
            },
            b'+' => out.push(b' '),
            c => out.push(c),
        }
        i += 1;
    }
    out
}

/// The answer to `request`, from the state of the moment; `uid` asked.
pub(crate) fn answer(core: &mut Core, request: &AdminRequest, uid: Option<u32>) -> AdminAnswer {
    let json_answer = |v: Value| AdminAnswer {
        content_type: JSON,
        body: v.to_string(),
    };
    match request {
        AdminRequest::Status => json_answer(status(core)),
        AdminRequest::Transports => json_answer(transports(core)),
        AdminRequest::Destinations(q) => json_answer(destinations(core, q)),
        AdminRequest::Jobs { transport, limit } => {
            json_answer(jobs(core, transport.as_deref(), *limit))
        }
        AdminRequest::Metrics => AdminAnswer {
            content_type: METRICS_TYPE,
            body: core.metrics.encode(&core.sched),
        },
        AdminRequest::Unthrottle { transport, nexthop } => {
            json_answer(unthrottle(core, transport, nexthop.as_deref(), uid))
        }
        AdminRequest::Set { transport, limit } => json_answer(set(core, transport, *limit, uid)),
    }
}

/// A limit's value from a query: a number, capped as request numbers are.
fn limit_value(v: &[u8]) -> Result<u32, String> {
    String::from_utf8_lossy(v)
        .parse::<usize>()
        .map(|n| u32::try_from(n.min(MAX_ROWS)).unwrap_or(u32::MAX))
        .map_err(|_| "a limit must be a number".to_owned())
}

/// `rqmgrctl set TRANSPORT NAME=N`: the scheduler takes the limit at once;
/// the change is logged with who made it and counted.
fn set(core: &mut Core, transport: &[u8], limit: LiveLimit, uid: Option<u32>) -> Value {
    let now = core.now.sched();
    let (name, value) = match limit {
        LiveLimit::Concurrency(n) => ("concurrency", n),
        LiveLimit::RecipientLimit(n) => ("recipient_limit", n),
    };
    match core.sched.set_transport_limit(transport, limit, now) {
        Ok(()) => {
            let what = [&b"transport "[..], transport].concat();
            operator_change(core, "set", &what, &format!(" {name}={value}"), uid);
            json!({ "set": name, "value": value })
        }
        Err(e) => json!({ "error": e }),
    }
}

/// `rqmgrctl unthrottle`: revive, log who did it, count it.
fn unthrottle(
    core: &mut Core,
    transport: &[u8],
    nexthop: Option<&[u8]>,
    uid: Option<u32>,
) -> Value {
    let now = core.now.sched();
    let revived = core.sched.unthrottle(transport, nexthop, now);
    let what = match nexthop {
        Some(hop) => [b"destination ", transport, b":", hop].concat(),
        None => [b"transport ", transport].concat(),
    };
    let result = format!(": {revived} revived");
    operator_change(core, "unthrottle", &what, &result, uid);
    json!({ "revived": revived })
}

/// Logs an operator's change in one line (`ACTION WHAT RESULT, by uid
/// U`) and counts it.
fn operator_change(core: &Core, action: &str, what: &[u8], result: &str, uid: Option<u32>) {
    let who = uid.map_or_else(|| "unknown".to_owned(), |u| u.to_string());
    let line = [
        format!("{action} ").as_bytes(),
        what,
        format!("{result}, by uid {who}").as_bytes(),
    ]
    .concat();
    core.log.info(&line);
    core.metrics.operator_change(action);
}

fn dsn(d: Option<&Dsn>) -> Value {
    d.map_or(
        Value::Null,
        |d| json!({ "status": d.status, "text": d.reason.to_string() }),
    )
}

fn status(core: &Core) -> Value {
    let t = core.sched.totals();
    json!({
        "rqmgr_version": env!("CARGO_PKG_VERSION"),
        "postfix_version": core.metrics.postfix_version(),
        "role": core.metrics.role(),
        "active_messages": t.messages,
        "active_messages_limit": t.message_limit,
        "active_recipients": t.recipients,
        "active_recipients_limit": t.recipient_limit,
        "transports": t.transports,
        "destinations": t.destinations,
    })
}

fn transports(core: &Core) -> Value {
    let rows: Vec<Value> = core
        .sched
        .transport_views()
        .iter()
        .map(|t| {
            json!({
                "name": t.name.to_string(),
                "dead": t.dead,
                "reason": dsn(t.dead_reason.as_ref()),
                "pending": t.pending,
                "busy": t.busy,
                "destinations": t.destinations,
                "concurrency_limit": t.dest_concurrency_limit,
                "initial_concurrency": t.initial_concurrency,
                "recipient_limit": t.recipient_limit,
                "rate_delay_seconds": t.rate_delay.as_secs_f64(),
                "feedback": t.feedback,
                "throttles": t.throttles,
            })
        })
        .collect();
    Value::Array(rows)
}

fn destinations(core: &Core, q: &DestinationQuery) -> Value {
    let select = match (&q.transport, &q.nexthop) {
        (Some(t), Some(n)) => DestinationSelect::One {
            transport: t,
            nexthop: n,
        },
        (Some(t), None) => DestinationSelect::Transport(t),
        _ => DestinationSelect::TopByTodo(q.top),
    };
    let now = core.now.sched();
    let rows: Vec<Value> = core
        .sched
        .destination_views(select, q.top.max(1))
        .iter()
        .map(|d| {
            json!({
                "transport": d.transport.to_string(),
                "nexthop": d.nexthop.to_string(),
                "queue": d.name.to_string(),
                "state": d.state.as_str(),
                "window": d.window,
                "window_limit": d.window_limit,
                "todo": d.todo,
                "todo_recipients": d.todo_recipients,
                "busy": d.busy,
                "successes": d.successes,
                "failures": d.failures,
                "failed_cohorts": d.failed_cohorts,
                "reason": d.last_failure.as_ref().map(|f| f.reason.to_string()),
                "status": d.last_failure.as_ref().map(|f| f.status.clone()),
                "throttled_seconds": d.throttled_since.map(|t| now.saturating_since(t).as_secs_f64()),
                "next_retry_seconds": d.next_retry.map(|t| t.saturating_since(now).as_secs_f64()),
            })
        })
        .collect();
    Value::Array(rows)
}

fn jobs(core: &Core, transport: Option<&[u8]>, limit: usize) -> Value {
    let rows: Vec<Value> = core
        .sched
        .job_views(transport, limit.max(1))
        .iter()
        .map(|j| {
            let queue_id = core.messages.get(&j.msg).map(|m| m.queue_id.to_string());
            json!({
                "queue_id": queue_id,
                "transport": j.transport.to_string(),
                "recipients_in_core": j.recipients_in_core,
                "unread": j.unread,
                "selected_entries": j.selected_entries,
                "slots_used": j.slots_used,
                "slots_available": j.slots_available,
                "blocker": j.blocker,
            })
        })
        .collect();
    Value::Array(rows)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn requests_from_urls() {
        assert_eq!(
            parse(true, "/unthrottle", "transport=smtp&nexthop=x.example"),
            Ok(AdminRequest::Unthrottle {
                transport: b"smtp".to_vec(),
                nexthop: Some(b"x.example".to_vec()),
            })
        );
        assert!(parse(true, "/unthrottle", "").is_err());
        assert!(parse(true, "/status", "").is_err());
        assert!(parse(false, "/unthrottle", "transport=smtp").is_err());
        assert_eq!(parse(false, "/status", ""), Ok(AdminRequest::Status));
        assert_eq!(parse(false, "/", ""), Ok(AdminRequest::Status));
        assert_eq!(parse(false, "/metrics", ""), Ok(AdminRequest::Metrics));
        assert_eq!(
            parse(
                false,
                "/destinations",
                "transport=smtp&nexthop=%5B127.0.0.1%5D%3A25&top=5"
            ),
            Ok(AdminRequest::Destinations(DestinationQuery {
                transport: Some(b"smtp".to_vec()),
                nexthop: Some(b"[127.0.0.1]:25".to_vec()),
                top: 5,
            }))
        );
        assert_eq!(
            parse(false, "/jobs", "limit=999999"),
            Ok(AdminRequest::Jobs {
                transport: None,
                limit: MAX_ROWS
            })
        );
        assert!(parse(false, "/jobs", "limit=x").is_err());
        assert!(parse(false, "/etc/passwd", "").is_err());
    }

    #[test]
    fn percent_decoding_keeps_bytes() {
        assert_eq!(percent_decode("b%E4d.example"), b"b\xe4d.example");
        assert_eq!(percent_decode("a+b%2"), b"a b%2");
        assert_eq!(percent_decode("%zz"), b"%zz");
    }
}
