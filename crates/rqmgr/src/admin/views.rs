//! What the admin endpoints answer: requests parsed from a URL, and JSON
//! built from the scheduler's bounded views (`rqmgr_sched::snapshot`).
//!
//! Names (transports, next hops) are bytes to Postfix; JSON shows them as
//! UTF-8, with invalid bytes replaced, which is for reading only. Times
//! are seconds relative to now. Every list is capped: a queue with 10,000
//! destinations answers with the top ones.

use std::time::Duration;

use rqmgr_sched::{DestinationSelect, Dsn, LiveLimit, Target};
use serde_json::{json, Value};

use super::{AdminAnswer, AdminRequest};
use crate::control::OverrideKind;
use crate::operator::{limit_words, Done};
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
        return parse_change(path, &arg);
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
        "/overrides" => Ok(AdminRequest::Overrides),
        other => Err(format!("no such endpoint: {other}")),
    }
}

/// A POST: a change, named by its path.
fn parse_change(path: &str, arg: &dyn Fn(&str) -> Option<Vec<u8>>) -> Result<AdminRequest, String> {
    let text = |name: &str| arg(name).map(|v| String::from_utf8_lossy(&v).into_owned());
    let seconds = |name: &str| -> Result<Option<f64>, String> {
        text(name)
            .map(|v| match v.trim().parse::<f64>() {
                Ok(s) if (0.0..1e9).contains(&s) => Ok(s),
                _ => Err(format!("{name} must be a number of seconds")),
            })
            .transpose()
    };
    let for_secs = || seconds("for").map(|s| s.map(|s| s.ceil() as u64));
    if path == "/clear" {
        let id = text("id").and_then(|v| v.trim().parse().ok());
        return id
            .map(AdminRequest::Clear)
            .ok_or_else(|| "clear needs an override id".into());
    }
    let Some(transport) = arg("transport").filter(|t| !t.is_empty()) else {
        return match path {
            "/unthrottle" | "/set" | "/suspend" | "/resume" | "/flush" => {
                Err(format!("{} needs a transport", &path[1..]))
            }
            other => Err(format!("no such action: {other}")),
        };
    };
    let nexthop = arg("nexthop").filter(|n| !n.is_empty());
    let target = Target::new(&transport, nexthop.as_deref());
    match path {
        "/unthrottle" => Ok(AdminRequest::Unthrottle { transport, nexthop }),
        "/suspend" => Ok(AdminRequest::Suspend {
            target,
            reason: text("reason").unwrap_or_default(),
            for_secs: for_secs()?,
        }),
        "/resume" => Ok(AdminRequest::Resume(target)),
        "/flush" => Ok(AdminRequest::Flush(target)),
        "/set" => {
            let limit =
                match (
                    arg("concurrency"),
                    arg("recipient_limit"),
                    seconds("rate_delay")?,
                ) {
                    (Some(n), None, None) => LiveLimit::Concurrency(limit_value(&n)?),
                    (None, Some(n), None) => LiveLimit::RecipientLimit(limit_value(&n)?),
                    (None, None, Some(d)) => LiveLimit::RateDelay(Duration::from_secs_f64(d)),
                    _ => return Err(
                        "set needs one of concurrency=N, rate_delay=SECONDS or recipient_limit=N"
                            .into(),
                    ),
                };
            Ok(AdminRequest::Set {
                target,
                limit,
                for_secs: for_secs()?,
            })
        }
        other => Err(format!("no such action: {other}")),
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
            body: core.metrics.encode(&core.sched, core.control_counts()),
        },
        AdminRequest::Unthrottle { transport, nexthop } => {
            json_answer(unthrottle(core, transport, nexthop.as_deref(), uid))
        }
        AdminRequest::Set {
            target,
            limit,
            for_secs,
        } => json_answer(
            match core.set_limit(target.clone(), *limit, *for_secs, uid) {
                Ok(done) => done_json(&done),
                Err(e) => json!({ "error": e }),
            },
        ),
        AdminRequest::Suspend {
            target,
            reason,
            for_secs,
        } => json_answer(
            match core.suspend(target.clone(), reason.clone(), *for_secs, uid) {
                Ok(done) => done_json(&done),
                Err(e) => json!({ "error": e }),
            },
        ),
        AdminRequest::Resume(target) => json_answer(done_json(&core.resume(target, uid))),
        AdminRequest::Clear(id) => json_answer(match core.clear(*id, uid) {
            Some(done) => done_json(&done),
            None => json!({ "error": format!("no override {id}") }),
        }),
        AdminRequest::Flush(target) => json_answer(done_json(&core.flush(target, uid))),
        AdminRequest::Overrides => json_answer(overrides(core)),
    }
}

/// A limit's value from a query: a number, capped as request numbers are.
fn limit_value(v: &[u8]) -> Result<u32, String> {
    String::from_utf8_lossy(v)
        .parse::<usize>()
        .map(|n| u32::try_from(n.min(MAX_ROWS)).unwrap_or(u32::MAX))
        .map_err(|_| "a limit must be a number".to_owned())
}

/// The answer to a change.
fn done_json(done: &Done) -> Value {
    match done {
        Done::Added { id, deferred } => json!({ "id": id, "deferred": deferred }),
        Done::Ended { ids, released } => json!({ "ended": ids, "released": released }),
        Done::Released(n) => json!({ "released": n }),
    }
}

/// `/overrides`: every override in force, oldest first.
fn overrides(core: &Core) -> Value {
    let now = core.now.secs();
    let rows: Vec<Value> = core
        .control
        .overrides
        .iter()
        .map(|o| {
            let value = match &o.kind {
                OverrideKind::Suspend => None,
                OverrideKind::Limit(l) => Some(limit_words(*l).1),
            };
            json!({
                "id": o.id,
                "target": o.target.name().to_string(),
                "transport": o.target.transport.to_string(),
                "nexthop": o.target.nexthop.as_ref().map(ToString::to_string),
                "kind": o.kind.name(),
                "value": value,
                "reason": o.reason,
                "uid": o.uid,
                "since": o.since,
                "age_seconds": now.saturating_sub(o.since),
                "until": o.until,
                "remaining_seconds": o.until.map(|t| t.saturating_sub(now).max(0)),
                "held_messages": o.held.len(),
            })
        })
        .collect();
    Value::Array(rows)
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
    core.operator_change("unthrottle", &what, &result, uid);
    json!({ "revived": revived })
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
        "ready_entries": core.sched.ready_backlog(),
        "intake_held": core.sched.ready_work_suffices(core.now.sched()),
        "overrides": core.control.overrides.len(),
        "deferred_indexed": core.control.deferred.len(),
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
