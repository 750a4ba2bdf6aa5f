//! Scenario: next hops and recipients that are not UTF-8 reach the
//! delivery agent as the bytes they were, and name destinations byte for
//! byte (ASCII letters folded, nothing else).
//!
//! A transport map (a file, so it can hold any bytes) sends each of six
//! domains to transport `dump` with an 8-bit or mixed-case next hop, e.g.
//! `a.example` to `b\xe4d.example`; the recipients' local parts are 8-bit
//! too, which trivial-rewrite takes as they are with `smtputf8_enable =
//! no`. (An 8-bit domain in the address is no way in: trivial-rewrite
//! calls it bad address syntax, and the recipient goes to `error`.)
//!
//! `dump` is pipe(8) running touch(1) with `${nexthop}+${recipient}` as a
//! file name, one per recipient: file names are bytes, so the directory
//! shows exactly what each delivery request carried, and which recipients
//! shared one. The stock qmgr fixes the expectation: `b\xe4d` and
//! `b\xe5d` (Latin-1) are two destinations, so are `Äx` and `äx` (UTF-8),
//! while `AX` and `ax` share one, delivered to the next hop of the first.
//! The sender is 8-bit too: the queue manager's `(queue active)` line
//! shows its Latin-1 byte as Postfix's logging does, one `?`.

use std::ffi::OsStr;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::PermissionsExt;
use std::process::Command;

use crate::common::{ok, rqmgr, GUARD};
use rqmgr_harness::{cmd, poll, Instance, QueueManager, TMPDIR_ENV};

/// (recipient, its domain's next hop), recipients in queue-file order.
const ROUTES: [(&[u8], &[u8]); 6] = [
    (b"b\xe4d@a.example", b"b\xe4d.example"),
    (b"b\xe5d@b.example", b"b\xe5d.example"),
    ("Äx@c.example".as_bytes(), "Äx.example".as_bytes()),
    ("äx@d.example".as_bytes(), "äx.example".as_bytes()),
    (b"AX@e.example", b"AX.example"),
    (b"ax@f.example", b"ax.example"),
];

/// What the agent saw: `nexthop+recipient` per recipient, sorted.
fn expected() -> Vec<Vec<u8>> {
    let mut names: Vec<Vec<u8>> = [
        &b"b\xe4d.example+b\xe4d@a.example"[..],
        b"b\xe5d.example+b\xe5d@b.example",
        "Äx.example+Äx@c.example".as_bytes(),
        "äx.example+äx@d.example".as_bytes(),
        b"AX.example+AX@e.example",
        b"AX.example+ax@f.example",
    ]
    .iter()
    .map(|n| n.to_vec())
    .collect();
    names.sort();
    names
}

/// The file names in `dir`, as bytes, sorted.
fn names_in(dir: &std::path::Path) -> Vec<Vec<u8>> {
    let mut names: Vec<Vec<u8>> = std::fs::read_dir(dir)
        .map(|entries| {
            entries
                .filter_map(|e| e.ok())
                .map(|e| e.file_name().as_bytes().to_vec())
                .collect()
        })
        .unwrap_or_default();
    names.sort();
    names
}

fn scenario(qm: QueueManager) -> Vec<Vec<u8>> {
    let base = std::env::var_os(TMPDIR_ENV)
        .map(std::path::PathBuf::from)
        .unwrap_or_else(std::env::temp_dir);
    let dir = tempfile::Builder::new()
        .prefix("rqmgr-8bit-")
        .tempdir_in(base)
        .expect("a directory for the map and the agent's files");
    let map = dir.path().join("transport");
    let mut text = Vec::new();
    for (rcpt, nexthop) in ROUTES {
        let domain = &rcpt[rcpt.iter().position(|&b| b == b'@').expect("@") + 1..];
        text.extend_from_slice(&[domain, b" dump:", nexthop, b"\n"].concat());
    }
    std::fs::write(&map, text).expect("write the transport map");
    // trivial-rewrite reads the map as postfix; pipe(8) runs touch(1) as
    // nobody.
    let agent = dir.path().join("agent");
    std::fs::create_dir(&agent).expect("mkdir for the agent's files");
    for (path, mode) in [(dir.path(), 0o755), (&map, 0o644), (&agent, 0o777)] {
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)).expect("chmod");
    }
    let dump = format!(
        "dump unix - n n - - pipe user=nobody argv=/usr/bin/touch {}/${{nexthop}}+${{recipient}}",
        agent.display()
    );
    let inst = ok(Instance::builder()
        .queue_manager(qm)
        .main_cf("smtputf8_enable", "no")
        .main_cf("transport_maps", &format!("texthash:{}", map.display()))
        .master_cf_line(&dump)
        .start());
    let mut c = Command::new("sendmail");
    c.arg("-C")
        .arg(inst.config_dir())
        .arg("-f")
        .arg(OsStr::from_bytes(b"s\xe4nder@test.localdomain"))
        .arg("--")
        .args(ROUTES.iter().map(|(rcpt, _)| OsStr::from_bytes(rcpt)));
    ok(cmd::run_ok(c, Some(b"Subject: 8-bit\n\nhello\n"), GUARD));
    let names = ok(poll(GUARD, || {
        inst.check_qmgr_health()?;
        let names = names_in(&agent);
        Ok((names.len() >= ROUTES.len() && inst.queued_count() == 0).then_some(names))
    }));
    let qmgr = inst.queue_manager().log_program();
    ok(inst.wait_for_log(|l| l.matching(&qmgr, ": removed").len() == 1, GUARD));
    let log = inst.log();
    let sent = log.matching("postfix/pipe", "status=sent").len();
    assert_eq!(sent, ROUTES.len(), "{}", log.text());
    let active = log.matching(&qmgr, "(queue active)");
    assert!(
        active.len() == 1
            && active[0]
                .text
                .contains(": from=<s?nder@test.localdomain>, size="),
        "{}",
        log.text()
    );
    names
}

/// Shown with `\xNN` for every non-ASCII byte, so a failure says which.
fn show(names: &[Vec<u8>]) -> Vec<String> {
    names.iter().map(|n| n.escape_ascii().to_string()).collect()
}

#[test]
fn stock() {
    assert_eq!(show(&scenario(QueueManager::Stock)), show(&expected()));
}

#[test]
fn rqmgr_daemon() {
    assert_eq!(show(&scenario(rqmgr())), show(&expected()));
}
