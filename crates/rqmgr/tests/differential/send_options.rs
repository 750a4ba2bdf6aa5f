//! Send options: bits of the queue file's size record that the queue
//! manager hands to the delivery agent without acting on them, and that
//! change what the agent does. Postfix 3.10's cleanup sets 0x10 for a
//! `TLS-Required: no` header (RFC 8689): the smtp client then caps its TLS
//! level at `may`, so the message goes out in plaintext where policy says
//! `encrypt`. Postfix 3.11 sets 0x20 for REQUIRETLS (`sendmail -O
//! requiretls=yes`, the local form of `MAIL FROM ... REQUIRETLS`, which
//! smtpd takes only over TLS): with `smtp_requiretls_policy = enforce` the
//! smtp client refuses to send it under a TLS level without certificate
//! matching ("Sender requested REQUIRETLS, but my configured TLS security
//! level 'encrypt' disables certificate matching", a 4.3.5 deferral, as
//! observed with 3.11.7).
//!
//! The instance relays to an smtp-sink without STARTTLS under
//! `smtp_tls_security_level = encrypt`, so plain mail is deferred. Three
//! messages: plain, `TLS-Required: no`, REQUIRETLS. What happens to each
//! depends on the release, and is asserted per release; it also proves the
//! bits reached the agent as cleanup wrote them (a queue manager that drops
//! 0x10 leaves the second deferred; one that masks 0x20 away, as a 3.7-style
//! 0x0f mask would, gets the third deferred as plain mail is). Then the
//! whole outcome is compared with the stock qmgr of the same Postfix.

use crate::common::{instance_with_sink, ok, rqmgr, GUARD};
use crate::compare::{assert_same, snapshot, Outcome};
use crate::kick::{no_retries, settle, submitted};
use rqmgr_harness::{require_postfix, Instance, QueueManager, SinkMode};

/// How each message ended, from the smtp client's log line.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Fate {
    Sent,
    /// Deferred; `requiretls` when the reason is the REQUIRETLS request.
    Deferred {
        requiretls: bool,
    },
    Bounced,
}

fn fate(inst: &Instance, id: &str) -> Option<Fate> {
    let log = inst.log();
    let lines = log.for_queue_id(id);
    lines
        .iter()
        .filter(|l| l.program == "postfix/smtp")
        .find_map(|l| {
            if l.text.contains("status=sent") {
                Some(Fate::Sent)
            } else if l.text.contains("status=bounced") {
                Some(Fate::Bounced)
            } else if l.text.contains("status=deferred") {
                Some(Fate::Deferred {
                    requiretls: l.text.contains("Sender requested REQUIRETLS"),
                })
            } else {
                None
            }
        })
}

fn scenario(qm: QueueManager) -> Outcome {
    let install = ok(require_postfix());
    let (v310, v311) = (install.at_least(3, 10), install.at_least(3, 11));
    let (sink, inst) = instance_with_sink(qm, SinkMode::Accept, |b| {
        let b = no_retries(b).main_cf("smtp_tls_security_level", "encrypt");
        if v311 {
            b.main_cf("smtp_requiretls_policy", "enforce")
        } else {
            b
        }
    });
    let from = inst.local_address("sender");
    let send = |options: &[&str], to: &str, extra_header: &str, n: usize| {
        let text = format!("Subject: m{n}\n{extra_header}\nmessage {n}\n");
        ok(inst.sendmail_with(options, &from, &[to], &text));
        ok(inst.wait_until(|i| submitted(i).len() >= n, GUARD));
    };
    send(&[], "plain@remote.example", "", 1);
    send(&[], "optout@remote.example", "TLS-Required: no\n", 2);
    let requiretls: &[&str] = if v311 { &["-O", "requiretls=yes"] } else { &[] };
    send(requiretls, "strict@remote.example", "", 3);
    let ids = submitted(&inst);
    ok(inst.wait_until(|i| ids.iter().all(|id| fate(i, id).is_some()), GUARD));
    let fates: Vec<Fate> = ids.iter().filter_map(|id| fate(&inst, id)).collect();
    let plain = Fate::Deferred { requiretls: false };
    let expected = [
        plain,
        if v310 { Fate::Sent } else { plain },
        Fate::Deferred { requiretls: v311 },
    ];
    assert_eq!(
        fates,
        expected,
        "Postfix {} ({}): plain, TLS-Required: no, REQUIRETLS\n{}",
        install.version,
        inst.queue_manager().log_program(),
        inst.maillog()
    );
    // Removed: the sent message (3.10 and later).
    let qmgr = inst.queue_manager().log_program();
    let finished = usize::from(v310);
    ok(inst.wait_for_log(|l| l.matching(&qmgr, ": removed").len() >= finished, GUARD));
    settle();
    snapshot(&inst, &[&sink], &["sender"])
}

#[test]
fn send_options_reach_the_agent_as_postfix_passes_them() {
    let stock = scenario(QueueManager::Stock);
    let ours = scenario(rqmgr());
    assert_same("send options", &stock, &ours);
}
