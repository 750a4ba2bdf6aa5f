//! The admin socket and metrics of a running rqmgr, asked with rqmgrctl and
//! over TCP: a dead destination (a port that refuses) shows as throttled
//! with the connection error as its reason, a slow one (its agent still in
//! DATA) as ready and busy; the delivery counters match the mail log;
//! `/metrics` is also served on TCP (and nothing else there); a caller
//! other than root or mail_owner is refused; `rqmgrctl unthrottle` revives
//! the dead destination, and `rqmgrctl set` a transport's concurrency, and
//! both say who did it in the log (operator_control.rs has the rest).

use std::io::{Read, Write};
use std::net::TcpStream;
use std::os::unix::process::CommandExt;
use std::process::Command;

use crate::common::{ok, rqmgr, rqmgrctl, stdout_of, GUARD};
use rqmgr_harness::ports::PortLease;
use rqmgr_harness::{Instance, SinkMode, SmtpSink};
use serde_json::Value;

/// The value of the metric line `name{labels}` (labels as printed).
fn metric(text: &str, series: &str) -> Option<f64> {
    text.lines()
        .find_map(|l| l.strip_prefix(series)?.trim().parse().ok())
}

fn http_get(port: u16, path: &str) -> String {
    let mut s = TcpStream::connect(("127.0.0.1", port)).expect("connect to the metrics port");
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    let mut out = String::new();
    s.read_to_string(&mut out).unwrap();
    out
}

#[test]
fn destinations_metrics_and_permissions() {
    let live = ok(SmtpSink::start(SinkMode::Accept));
    let slow = ok(SmtpSink::start(SinkMode::SlowData(20)));
    let closed = PortLease::new().expect("a port nobody listens on");
    let metrics_port = PortLease::new().expect("a port for metrics");
    let dead_hop = format!("[127.0.0.1]:{}", closed.port());
    let slow_hop = format!("[127.0.0.1]:{}", slow.port());
    let maps = format!("inline:{{ dead.example=smtp:{dead_hop}, slow.example=smtp:{slow_hop} }}");
    let inst = ok(Instance::builder()
        .queue_manager(rqmgr())
        .relay_to_port(live.port())
        .main_cf("transport_maps", &maps)
        // One failed delivery is then a whole failed cohort: the
        // destination dies at once, as a dead site does.
        .main_cf("smtp_initial_destination_concurrency", "1")
        .main_cf(
            "rqmgr_metrics_listen",
            &format!("127.0.0.1:{}", metrics_port.port()),
        )
        .start());
    let from = inst.local_address("sender");
    for to in [
        "a@example.com",
        "b@example.com",
        "c@dead.example",
        "d@slow.example",
    ] {
        ok(inst.sendmail(&from, &[to], "Subject: x\n\nx\n"));
    }
    ok(live.wait_received(2, GUARD));
    ok(inst.wait_for_log(|l| l.count("Connection refused") >= 1, GUARD));

    // Destinations: the dead one throttled with its reason, the slow one
    // ready with a delivery in flight.
    let mut dests = Value::Null;
    let found = inst.wait_until(
        |i| {
            let out = stdout_of(i, &["destinations", "--json"]);
            dests = serde_json::from_str(&out).expect("JSON");
            let find = |hop: &str| {
                dests
                    .as_array()
                    .and_then(|a| a.iter().find(|d| d["nexthop"] == hop).cloned())
            };
            matches!(
                (find(&dead_hop), find(&slow_hop)),
                (Some(d), Some(s)) if d["state"] == "throttled" && s["state"] == "ready" && s["busy"] == 1
            )
        },
        GUARD,
    );
    if let Err(e) = found {
        let now = stdout_of(&inst, &["destinations", "--json"]);
        let tr = stdout_of(&inst, &["transports", "--json"]);
        let st = stdout_of(&inst, &["status", "--json"]);
        panic!("{e}\ndestinations now: {now}\ntransports: {tr}\nstatus: {st}");
    }
    let dead = dests
        .as_array()
        .unwrap()
        .iter()
        .find(|d| d["nexthop"] == dead_hop.as_str())
        .unwrap();
    for key in [
        "transport",
        "nexthop",
        "state",
        "window",
        "window_limit",
        "todo",
        "busy",
        "reason",
    ] {
        assert!(dead.get(key).is_some(), "key {key} in {dead}");
    }
    assert_eq!(dead["transport"], "smtp");
    let reason = dead["reason"].as_str().unwrap_or("");
    assert!(reason.contains("Connection refused"), "{reason}");
    let table = stdout_of(&inst, &["destinations"]);
    assert!(table.starts_with("TRANSPORT"), "{table}");
    assert!(table.contains("throttled"), "{table}");
    let status = stdout_of(&inst, &["status"]);
    assert!(status.contains("active messages"), "{status}");

    // Metrics match the log once the slow delivery is done.
    ok(slow.wait_received(1, GUARD));
    let smtp_lines = |status: &str| inst.log().matching("postfix/smtp", status).len() as f64;
    ok(inst.wait_for_log(
        |l| l.matching("postfix/smtp", "status=sent").len() == 3,
        GUARD,
    ));
    let text = stdout_of(&inst, &["metrics"]);
    let sent = metric(
        &text,
        "rqmgr_deliveries_total{transport=\"smtp\",status=\"sent\"}",
    );
    assert_eq!(sent, Some(smtp_lines("status=sent")), "{text}");
    let deferred = metric(
        &text,
        "rqmgr_deliveries_total{transport=\"smtp\",status=\"deferred\"}",
    );
    assert_eq!(deferred, Some(smtp_lines("status=deferred")), "{text}");
    assert!(text.contains("rqmgr_build_info{"), "{text}");
    assert_eq!(
        metric(&text, "rqmgr_active_messages_limit"),
        Some(20000.0),
        "{text}"
    );

    // The same over TCP; nothing else there.
    let over_tcp = http_get(metrics_port.port(), "/metrics");
    assert!(over_tcp.starts_with("HTTP/1.1 200"), "{over_tcp}");
    assert!(over_tcp.contains("rqmgr_deliveries_total{transport=\"smtp\",status=\"sent\"} 3"));
    assert!(http_get(metrics_port.port(), "/destinations").starts_with("HTTP/1.1 404"));

    // Neither root nor mail_owner: refused.
    let nobody = nix::unistd::User::from_name("nobody")
        .unwrap()
        .expect("user nobody");
    let out = Command::new(env!("CARGO_BIN_EXE_rqmgrctl"))
        .arg("-c")
        .arg(inst.config_dir())
        .arg("destinations")
        .uid(nobody.uid.as_raw())
        .gid(nobody.gid.as_raw())
        .output()
        .expect("run rqmgrctl as nobody");
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("permission denied"), "{err}");

    // An operator revives the dead destination; the log says who.
    let out = stdout_of(&inst, &["unthrottle", &format!("smtp:{dead_hop}")]);
    assert_eq!(out, format!("smtp:{dead_hop}: 1 revived\n"));
    let line = format!("unthrottle destination smtp:{dead_hop}: 1 revived, by uid 0");
    ok(inst.wait_for_log(|l| l.count(&line) == 1, GUARD));
    let dests: Value =
        serde_json::from_str(&stdout_of(&inst, &["destinations", "--json"])).expect("JSON");
    let still_dead = dests
        .as_array()
        .unwrap()
        .iter()
        .any(|d| d["nexthop"] == dead_hop.as_str() && d["state"] == "throttled");
    assert!(!still_dead, "{dests}");
    let text = stdout_of(&inst, &["metrics"]);
    let changes = metric(&text, "rqmgr_operator_changes_total{action=\"unthrottle\"}");
    assert_eq!(changes, Some(1.0), "{text}");

    // A transport's limit, live.
    let out = stdout_of(&inst, &["set", "smtp", "concurrency=3"]);
    assert_eq!(out, "smtp: concurrency=3, override 1\n");
    let line = "set smtp concurrency=3: id 1, by uid 0";
    ok(inst.wait_for_log(|l| l.count(line) == 1, GUARD));
    let transports: Value =
        serde_json::from_str(&stdout_of(&inst, &["transports", "--json"])).expect("JSON");
    let smtp = transports
        .as_array()
        .unwrap()
        .iter()
        .find(|t| t["name"] == "smtp")
        .expect("smtp");
    assert_eq!(smtp["concurrency_limit"], 3, "{transports}");
    for bad in [
        ["smtp", "recipient_limit=1"],
        ["nosuch", "concurrency=1"],
        ["smtp", "speed=9"],
    ] {
        let out = rqmgrctl(&inst, &["set", bad[0], bad[1]]);
        assert!(!out.status.success(), "set {bad:?} succeeded");
    }
}
