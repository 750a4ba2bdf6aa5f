//! Where one recipient goes: Postfix's routing decisions of
//! `qmgr_message_resolve()` and `qmgr_resolve_one()` (qmgr_message.c), as
//! pure functions of the resolver's answer, the message's state and the
//! configuration.
//!
//! The async code in activate.rs asks trivial-rewrite (or not, for a
//! content filter) and carries out what these functions decide; nothing
//! here does I/O, so every rule has a table test naming the Postfix line it
//! mirrors (v3.7.11 numbering; the rules are the same in 3.10 and 3.11).
//!
//! Invariant: the rules apply in Postfix's order, and a later rule sees what
//! an earlier one made of the reply. In particular a redirect to a
//! pseudo-transport clears the resolver's flags, so a force-expired
//! message's recipient is never taken for the local double-bounce address.

use rqmgr_ipc::rewrite::{resolve_flags, ResolveReply};

/// Where a recipient's route comes from, in Postfix's order of precedence.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Source<'a> {
    /// A `>` redirect record: only the message's first recipient survives,
    /// sent to this address after canonical rewriting.
    Redirect(&'a [u8]),
    /// A content filter (`transport:nexthop`): the resolver is not asked.
    Filter(&'a [u8]),
    /// trivial-rewrite's resolve answer.
    Resolver,
}

/// The source of every recipient of a message (qmgr_message.c 1090,
/// 1122): a redirect overrides everything; a content filter overrides the
/// resolver, except for address probes (trace-only deliveries).
pub(crate) fn source<'a>(
    redirect: Option<&'a [u8]>,
    filter: Option<&'a [u8]>,
    trace_only: bool,
) -> Source<'a> {
    match (redirect, filter) {
        (Some(r), _) => Source::Redirect(r),
        (None, Some(f)) if !trace_only => Source::Filter(f),
        _ => Source::Resolver,
    }
}

/// `QMGR_REDIRECT()`: the recipient goes to a pseudo-transport whose next
/// hop carries the status and text it will be deferred or bounced with.
fn redirect(reply: &mut ResolveReply, transport: &str, nexthop: &str) {
    reply.flags = 0;
    reply.transport = transport.as_bytes().to_vec();
    reply.nexthop = nexthop.as_bytes().to_vec();
}

/// The resolver's own failures (`qmgr_resolve_one()`, qmgr_message.c
/// 1044-1050): a resolver failure is retried later, a syntax error
/// bounces.
pub(crate) fn resolver_verdict(mut reply: ResolveReply) -> ResolveReply {
    if reply.flags & resolve_flags::FAIL != 0 {
        redirect(&mut reply, "retry", "4.3.0 address resolver failure");
    } else if reply.flags & resolve_flags::ERROR != 0 {
        redirect(&mut reply, "error", "5.1.3 bad address syntax");
    }
    reply
}

/// The route of a recipient under a content filter (qmgr_message.c
/// 1122-1131): the filter's transport, its next hop if it names one, else
/// `default_filter_nexthop`, else the recipient's domain, else
/// `myhostname`.
pub(crate) fn filter_route(
    filter: &[u8],
    recipient: &[u8],
    default_filter_nexthop: &str,
    myhostname: &str,
) -> ResolveReply {
    let (transport, nexthop) = match filter.iter().position(|&b| b == b':') {
        Some(i) => (
            &filter[..i],
            Some(&filter[i + 1..]).filter(|n| !n.is_empty()),
        ),
        None => (filter, None),
    };
    let nexthop = match nexthop {
        Some(n) => n.to_vec(),
        None if !default_filter_nexthop.is_empty() => default_filter_nexthop.as_bytes().to_vec(),
        None => match crate::address::domain(recipient) {
            Some(d) => d.to_vec(),
            None => myhostname.as_bytes().to_vec(),
        },
    };
    ResolveReply {
        transport: transport.to_vec(),
        nexthop,
        recipient: recipient.to_vec(),
        flags: 0,
    }
}

/// What the message's state says about routing.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct MessageState {
    /// `postsuper -f`/`-e` force-expired the message (`QMGR_FORCE_EXPIRE`).
    pub force_expire: bool,
    /// A flush lifted `defer_transports` for it (`QMGR_FLUSH_DFXP`).
    pub defer_transports_lifted: bool,
}

/// The configuration routing reads.
#[derive(Debug, Clone, Copy)]
pub(crate) struct RoutingConfig<'a> {
    /// `double_bounce_sender`.
    pub double_bounce_sender: &'a str,
    /// `defer_transports`, split.
    pub defer_transports: &'a [String],
}

/// The decision for one recipient.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Routing {
    /// Hand it to the scheduler with this route (possibly a
    /// pseudo-transport: `retry` or `error` with the reason as next hop).
    Deliver(ResolveReply),
    /// Local mail to the double-bounce address: logged as sent
    /// ("undeliverable postmaster notification discarded") and marked done.
    DiscardDoubleBounce,
}

/// The rules that follow the resolve (qmgr_message.c 1151-1217), applied to
/// `reply`, whose `recipient` is the address as the recipient now has it.
pub(crate) fn route(
    mut reply: ResolveReply,
    state: MessageState,
    config: &RoutingConfig<'_>,
) -> Routing {
    if reply.recipient.is_empty() {
        redirect(&mut reply, "error", "5.1.3 null recipient address");
    }
    if state.force_expire {
        redirect(
            &mut reply,
            "retry",
            "4.7.0 message is administratively expired",
        );
    }
    if reply.flags & resolve_flags::CLASS_LOCAL != 0
        && is_double_bounce(&reply.recipient, config.double_bounce_sender)
    {
        return Routing::DiscardDoubleBounce;
    }
    if !state.defer_transports_lifted
        && config
            .defer_transports
            .iter()
            .any(|t| t.as_bytes() == reply.transport.as_slice())
    {
        redirect(&mut reply, "retry", "4.3.2 deferred transport");
    }
    Routing::Deliver(reply)
}

/// The local part of `recipient` is `double_bounce_sender`, ignoring case
/// (qmgr_message.c 1181-1186).
fn is_double_bounce(recipient: &[u8], double_bounce_sender: &str) -> bool {
    crate::address::local_part(recipient).eq_ignore_ascii_case(double_bounce_sender.as_bytes())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn reply(transport: &str, nexthop: &str, recipient: &str, flags: i32) -> ResolveReply {
        ResolveReply {
            transport: transport.into(),
            nexthop: nexthop.into(),
            recipient: recipient.into(),
            flags,
        }
    }

    fn deliver(transport: &str, nexthop: &str, recipient: &str, flags: i32) -> Routing {
        Routing::Deliver(reply(transport, nexthop, recipient, flags))
    }

    const LOCAL: i32 = resolve_flags::CLASS_LOCAL;

    /// (redirect, filter, trace-only, source, Postfix line)
    type SourceRow<'a> = (Option<&'a [u8]>, Option<&'a [u8]>, bool, Source<'a>, u32);

    #[test]
    fn sources_in_postfix_order() {
        let rows: &[SourceRow<'_>] = &[
            (None, None, false, Source::Resolver, 1136),
            (
                Some(b"r@x"),
                Some(b"f:h"),
                false,
                Source::Redirect(b"r@x"),
                1090,
            ),
            (Some(b"r@x"), None, true, Source::Redirect(b"r@x"), 1090),
            (None, Some(b"f:h"), false, Source::Filter(b"f:h"), 1122),
            (None, Some(b"f:h"), true, Source::Resolver, 1123),
        ];
        for &(redirect, filter, trace_only, want, line) in rows {
            assert_eq!(source(redirect, filter, trace_only), want, "line {line}");
        }
    }

    #[test]
    fn resolver_failures_become_pseudo_transports() {
        // (flags in, transport, next hop, Postfix line)
        let rows: &[(i32, &str, &str, u32)] = &[
            (0, "smtp", "example.com", 1051),
            (LOCAL, "smtp", "example.com", 1051),
            (
                resolve_flags::FAIL,
                "retry",
                "4.3.0 address resolver failure",
                1045,
            ),
            (
                resolve_flags::ERROR,
                "error",
                "5.1.3 bad address syntax",
                1049,
            ),
            (
                resolve_flags::FAIL | resolve_flags::ERROR,
                "retry",
                "4.3.0 address resolver failure",
                1044,
            ),
        ];
        for &(flags, transport, nexthop, line) in rows {
            let out = resolver_verdict(reply("smtp", "example.com", "a@example.com", flags));
            assert_eq!(
                (out.transport.as_slice(), out.nexthop.as_slice()),
                (transport.as_bytes(), nexthop.as_bytes()),
                "line {line}"
            );
            if transport != "smtp" {
                assert_eq!(out.flags, 0, "line {line}: QMGR_REDIRECT clears the flags");
            }
        }
    }

    #[test]
    fn filter_next_hops() {
        // (filter, recipient, default_filter_nexthop, transport, next hop,
        // Postfix line)
        let rows: &[(&str, &str, &str, &str, &str, u32)] = &[
            (
                "scan:[127.0.0.1]:10025",
                "a@x.example",
                "",
                "scan",
                "[127.0.0.1]:10025",
                1126,
            ),
            ("scan:", "a@x.example", "", "scan", "x.example", 1128),
            ("scan", "a@x.example", "", "scan", "x.example", 1128),
            (
                "scan",
                "a@x.example",
                "filter.example",
                "scan",
                "filter.example",
                1127,
            ),
            ("scan", "a", "", "scan", "myhost.example", 1129),
            ("scan", "a@", "", "scan", "myhost.example", 1129),
            ("scan:h", "", "", "scan", "h", 1126),
        ];
        for &(filter, rcpt, default_nexthop, transport, nexthop, line) in rows {
            let out = filter_route(
                filter.as_bytes(),
                rcpt.as_bytes(),
                default_nexthop,
                "myhost.example",
            );
            assert_eq!(out, reply(transport, nexthop, rcpt, 0), "line {line}");
        }
    }

    #[test]
    fn routing_rules_in_postfix_order() {
        let none: &[String] = &[];
        let smtp_deferred = ["smtp".to_string()];
        let plain = MessageState::default();
        let expired = MessageState {
            force_expire: true,
            ..MessageState::default()
        };
        let lifted = MessageState {
            defer_transports_lifted: true,
            ..MessageState::default()
        };
        // (reply in, state, defer_transports, decision, Postfix line)
        let rows: Vec<(ResolveReply, MessageState, &[String], Routing, u32)> = vec![
            (
                reply("smtp", "example.com", "a@example.com", 0),
                plain,
                none,
                deliver("smtp", "example.com", "a@example.com", 0),
                1230,
            ),
            (
                reply("smtp", "example.com", "", 0),
                plain,
                none,
                deliver("error", "5.1.3 null recipient address", "", 0),
                1152,
            ),
            (
                reply("smtp", "example.com", "a@example.com", 0),
                expired,
                none,
                deliver(
                    "retry",
                    "4.7.0 message is administratively expired",
                    "a@example.com",
                    0,
                ),
                1167,
            ),
            (
                reply("local", "here", "Double-Bounce@here", LOCAL),
                plain,
                none,
                Routing::DiscardDoubleBounce,
                1185,
            ),
            (
                reply("local", "here", "double-bounce", LOCAL),
                plain,
                none,
                Routing::DiscardDoubleBounce,
                1183,
            ),
            // Only local mail: a remote double-bounce address is delivered.
            (
                reply("smtp", "there", "double-bounce@there", 0),
                plain,
                none,
                deliver("smtp", "there", "double-bounce@there", 0),
                1180,
            ),
            // The whole local part must match.
            (
                reply("local", "here", "double-bounce-x@here", LOCAL),
                plain,
                none,
                deliver("local", "here", "double-bounce-x@here", LOCAL),
                1186,
            ),
            // Force-expire cleared the local flag first.
            (
                reply("local", "here", "double-bounce@here", LOCAL),
                expired,
                none,
                deliver(
                    "retry",
                    "4.7.0 message is administratively expired",
                    "double-bounce@here",
                    0,
                ),
                1167,
            ),
            (
                reply("smtp", "example.com", "a@example.com", 0),
                plain,
                &smtp_deferred,
                deliver("retry", "4.3.2 deferred transport", "a@example.com", 0),
                1215,
            ),
            (
                reply("smtp", "example.com", "a@example.com", 0),
                lifted,
                &smtp_deferred,
                deliver("smtp", "example.com", "a@example.com", 0),
                1208,
            ),
            (
                reply("local", "here", "a@here", LOCAL),
                plain,
                &smtp_deferred,
                deliver("local", "here", "a@here", LOCAL),
                1212,
            ),
            // A force-expired message goes to retry, never deferred as a
            // deferred transport: "retry" is not in defer_transports.
            (
                reply("smtp", "example.com", "a@example.com", 0),
                expired,
                &smtp_deferred,
                deliver(
                    "retry",
                    "4.7.0 message is administratively expired",
                    "a@example.com",
                    0,
                ),
                1167,
            ),
        ];
        for (input, state, defer_transports, want, line) in rows {
            let config = RoutingConfig {
                double_bounce_sender: "double-bounce",
                defer_transports,
            };
            assert_eq!(route(input, state, &config), want, "line {line}");
        }
    }
}
