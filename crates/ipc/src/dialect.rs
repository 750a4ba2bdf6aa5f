//! Which generation of Postfix's internal protocols to speak.
//!
//! Job: name the places where what a queue manager sends, or what Postfix's
//! client library would log for it, differs between the Postfix releases
//! rqmgr supports:
//! * Postfix 3.10 renamed the send-options attribute of delivery requests
//!   and of the bounce, defer and trace requests that carry it from
//!   `smtputf8` to `sendopts` (same position, same integer type). The
//!   receiving daemons read strictly and there is no negotiation, so the
//!   name must be right in the first request.
//! * Postfix 3.11 logs a failed VERP bounce request as `verp-bounce failed`
//!   where earlier releases log `verp failed`
//!   ([`crate::bounce::BounceCommand::failure_label`]).
//!
//! Postfix 3.8 and 3.9 speak 3.7's dialect.
//!
//! Invariant: the daemon picks the dialect once, at start-up, from the
//! installed Postfix's `mail_version`; every encoder here takes it from the
//! request it encodes.

/// A protocol dialect, named by the first Postfix release that speaks it.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Dialect {
    /// Postfix 3.7 to 3.9: the send options travel as `smtputf8`.
    #[default]
    Postfix37,
    /// Postfix 3.10: the send options travel as `sendopts`.
    Postfix310,
    /// Postfix 3.11 and later: as 3.10, and a failed VERP bounce request
    /// is a `verp-bounce` failure.
    Postfix311,
}

impl Dialect {
    /// The attribute name of the send-options integer.
    pub(crate) fn sendopts_attr(self) -> &'static str {
        match self {
            Dialect::Postfix37 => "smtputf8",
            Dialect::Postfix310 | Dialect::Postfix311 => "sendopts",
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn attribute_names_follow_the_3_10_rename() {
        assert_eq!(Dialect::Postfix37.sendopts_attr(), "smtputf8");
        assert_eq!(Dialect::Postfix310.sendopts_attr(), "sendopts");
        assert_eq!(Dialect::Postfix311.sendopts_attr(), "sendopts");
        assert_eq!(Dialect::default(), Dialect::Postfix37);
    }
}
