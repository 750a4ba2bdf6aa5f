//! The record loop of `qmgr_message_read`, and the pre-2001 format scan.
//!
//! Job: one pass over the records from the current reader position until
//! `E`, the recipient limit, or an error, updating a [`State`].
//!
//! Invariants: every seek target comes from the file and is checked for
//! overflow; pointer jumps are counted so loops end; the loop reads at
//! least one record per iteration or moves forward by a positive data
//! size, and backward pointer jumps are capped, so it terminates.
//!
//! Failure: the first structural problem ends the pass with an [`Error`].
//!
//! Limits: Postfix shares its reverse-jump counter across reads of the
//! same file; here each pass counts from zero.

use std::io::{Read, Seek};

use super::{size_error, trace_flag, Opened, QueueMessage, Recipient, WarnRecord};
use crate::error::{Error, ReadWarning};
use crate::record::{rec_type as rt, RecordReader};
use crate::size::{self, alldig, atoi, atol, c_str, is_space, SizeParseError, SizeRecord};

/// Envelope and extracted record types, the set allowed outside content.
const ENV_TYPES: &[u8] = b"MCTcFILSDRO/WVA>K<ionEDRO/PreAFIL>Kon";
/// Postfix's `REVERSE_JUMP_LIMIT`.
const REVERSE_JUMP_LIMIT: u32 = 10000;

/// Envelope fields with Postfix's "not yet seen" distinction.
#[derive(Debug, Default)]
struct Envelope {
    arrival: (i64, i64),
    create_time: i64,
    sender: Option<Vec<u8>>,
    envelope_id: Option<Vec<u8>>,
    ret_flags: i32,
    encoding: Option<Vec<u8>>,
    verp_delims: Option<Vec<u8>>,
    filter: Option<Vec<u8>>,
    inspector: Option<Vec<u8>>,
    redirect: Option<Vec<u8>>,
    warn: Option<WarnRecord>,
    trace_flags: i32,
    trace_flags_offset: Option<u64>,
    client_name: Option<Vec<u8>>,
    client_addr: Option<Vec<u8>>,
    client_port: Option<Vec<u8>>,
    client_proto: Option<Vec<u8>>,
    client_helo: Option<Vec<u8>>,
    have_log_client_attr: bool,
    sasl_method: Option<Vec<u8>>,
    sasl_username: Option<Vec<u8>>,
    sasl_sender: Option<Vec<u8>>,
    log_ident: Option<Vec<u8>>,
    rewrite_context: Option<Vec<u8>>,
    single_rcpt: bool,
    opened: Option<Opened>,
}

/// Everything one read pass changes.
#[derive(Debug)]
pub(super) struct State {
    size: SizeRecord,
    seen_all: bool,
    /// Offset after the last collected `R` once the limit was hit; 0 before.
    rcpt_offset: u64,
    rcpt_unread: i64,
    recipients: Vec<Recipient>,
    warnings: Vec<ReadWarning>,
    orig_rcpt: Option<Vec<u8>>,
    dsn_orcpt: Option<Vec<u8>>,
    dsn_notify: i32,
    env: Envelope,
    saved_ptr: u64,
    reverse_jumps: u32,
}

impl State {
    pub(super) fn first() -> Self {
        State {
            size: SizeRecord {
                rflags: size::READ_FLAG_MIXED_RCPT_OTHER,
                ..SizeRecord::default()
            },
            seen_all: false,
            rcpt_offset: 0,
            rcpt_unread: 0,
            recipients: Vec::new(),
            warnings: Vec::new(),
            orig_rcpt: None,
            dsn_orcpt: None,
            dsn_notify: 0,
            env: Envelope::default(),
            saved_ptr: 0,
            reverse_jumps: 0,
        }
    }

    /// A refill: the first read saw every non-recipient record.
    pub(super) fn refill(size: SizeRecord, rcpt_unread: i64) -> Self {
        State {
            size,
            seen_all: true,
            rcpt_unread,
            ..State::first()
        }
    }

    fn resume(&self) -> Option<u64> {
        (self.rcpt_offset != 0).then_some(self.rcpt_offset)
    }

    fn dangling_warnings(&mut self) {
        if let Some(o) = self.dsn_orcpt.take() {
            self.warnings.push(ReadWarning::DanglingDsnOrcpt(o));
        }
        if let Some(o) = self.orig_rcpt.take() {
            self.warnings.push(ReadWarning::OutOfOrderOrigRcpt(o));
        }
    }

    pub(super) fn finish_refill(mut self) -> (Vec<Recipient>, Option<u64>, i64, Vec<ReadWarning>) {
        self.dangling_warnings();
        let resume = self.resume();
        (self.recipients, resume, self.rcpt_unread, self.warnings)
    }

    pub(super) fn finish_first(mut self) -> Result<QueueMessage, Error> {
        self.dangling_warnings();
        let resume = self.resume();
        let unread = super::check_unread(self.rcpt_unread, resume, &mut self.warnings);
        let e = self.env;
        if e.arrival.0 == 0 {
            return Err(Error::MissingArrival);
        }
        let Some(sender) = e.sender else {
            return Err(Error::MissingSender);
        };
        if self.size.data_offset == 0 {
            return Err(Error::MissingSize);
        }
        Ok(QueueMessage {
            arrival: e.arrival,
            create_time: if e.create_time == 0 {
                e.arrival.0
            } else {
                e.create_time
            },
            sender: sender.into(),
            size: self.size,
            envelope_id: e.envelope_id.unwrap_or_default().into(),
            ret_flags: e.ret_flags,
            encoding: e.encoding.unwrap_or_default().into(),
            verp_delims: e.verp_delims.map(Into::into),
            filter: e.filter.map(Into::into),
            inspector: e.inspector.map(Into::into),
            redirect: e.redirect.map(Into::into),
            warn_time: e.warn,
            trace_flags: e.trace_flags,
            trace_flags_offset: e.trace_flags_offset,
            rewrite_context: e
                .rewrite_context
                .unwrap_or_else(|| b"local".to_vec())
                .into(),
            log_client_name: e.client_name.unwrap_or_default().into(),
            log_client_address: e.client_addr.unwrap_or_default().into(),
            log_client_port: e.client_port.unwrap_or_default().into(),
            log_protocol_name: e.client_proto.unwrap_or_default().into(),
            log_helo_name: e.client_helo.unwrap_or_default().into(),
            sasl_method: e.sasl_method.unwrap_or_default().into(),
            sasl_username: e.sasl_username.unwrap_or_default().into(),
            sasl_sender: e.sasl_sender.unwrap_or_default().into(),
            log_ident: e.log_ident.unwrap_or_default().into(),
            rcpt_unread: unread,
            recipients: self.recipients,
            resume_offset: resume,
            seen_all_non_rcpt: self.seen_all,
            single_rcpt: e.single_rcpt,
            opened: e.opened,
            warnings: self.warnings,
            // The caller sets what it read with.
            max_length_bytes: crate::record::LEGACY_LENGTH_BYTES,
        })
    }

    /// Follows a `p` record; `Ok(())` also for the no-op pointer 0.
    fn follow_pointer<R: Read + Seek>(
        &mut self,
        rr: &mut RecordReader<R>,
        offset: u64,
        payload: &[u8],
    ) -> Result<(), Error> {
        let text = c_str(payload);
        let text = &text[text.iter().take_while(|&&b| is_space(b)).count()..];
        let target = parse_offset(text).ok_or_else(|| Error::MalformedPointer {
            offset,
            text: text.to_vec(),
        })?;
        if target == 0 {
            return Ok(());
        }
        if target <= self.saved_ptr {
            self.reverse_jumps += 1;
            if self.reverse_jumps > REVERSE_JUMP_LIMIT {
                return Err(Error::TooManyReverseJumps { offset });
            }
        }
        rr.seek(target)?;
        self.saved_ptr = target;
        Ok(())
    }
}

/// `off_cvt_string`: only digits (none means 0), no overflow past `off_t`.
fn parse_offset(s: &[u8]) -> Option<u64> {
    s.iter().try_fold(0u64, |acc, &b| {
        if !b.is_ascii_digit() {
            return None;
        }
        acc.checked_mul(10)
            .and_then(|a| a.checked_add(u64::from(b - b'0')))
            .filter(|&a| a <= i64::MAX as u64)
    })
}

/// Postfix's `split_nameval`: name up to blanks or `=`, value trimmed.
fn split_nameval(s: &[u8]) -> Result<(&[u8], &[u8]), &'static str> {
    let np = s.iter().take_while(|&&b| is_space(b)).count();
    let s = &s[np..];
    if matches!(s.first(), None | Some(b'=')) {
        return Err("missing attribute name");
    }
    let name_len = s.iter().take_while(|&&b| !is_space(b) && b != b'=').count();
    let (name, rest) = s.split_at(name_len);
    let rest = &rest[rest.iter().take_while(|&&b| is_space(b)).count()..];
    let Some((b'=', value)) = rest.split_first() else {
        return Err("missing '=' after attribute name");
    };
    let value = &value[value.iter().take_while(|&&b| is_space(b)).count()..];
    let keep = value.len() - value.iter().rev().take_while(|&&b| is_space(b)).count();
    Ok((name, &value[..keep]))
}

/// `rec_attr_map`: attribute names that stand for record types.
fn rec_attr_map(name: &[u8]) -> Option<u8> {
    Some(match name {
        b"dsn_orig_rcpt" => rt::DSN_ORCPT,
        b"notify_flags" => rt::DSN_NOTIFY,
        b"envelope_id" => rt::DSN_ENVID,
        b"ret_flags" => rt::DSN_RET,
        b"create_time" => rt::CTIME,
        _ => return None,
    })
}

fn dsn_notify_ok(v: i32) -> bool {
    v == 1 || v == (v & (2 | 4 | 8))
}

/// Runs the record loop until `E`, the recipient limit, or an error.
pub(super) fn run<R: Read + Seek>(
    rr: &mut RecordReader<R>,
    st: &mut State,
    limit: usize,
    verp_filter: &[u8],
) -> Result<(), Error> {
    let mut buf = Vec::new();
    loop {
        let mut expected = ENV_TYPES;
        let mut curr = rr.offset();
        let data_offset = st.size.data_offset;
        if data_offset > 0 && curr == data_offset as u64 {
            // Sizes were checked positive when the size record was accepted.
            curr = curr
                .checked_add(st.size.data_size as u64)
                .filter(|&o| o <= i64::MAX as u64)
                .ok_or(Error::OffsetOverflow { offset: curr })?;
            rr.seek(curr)?;
            expected = b"X";
        }
        let Some((rec, _)) = rr.next_into(&mut buf)? else {
            return Err(Error::MissingEnd { offset: curr });
        };
        if rec == rt::PTR {
            st.follow_pointer(rr, curr, &buf)?;
            continue;
        }
        if rec == 0 {
            // Postfix's reader returns type 0 as "no record".
            return Err(Error::MissingEnd { offset: curr });
        }
        if !expected.contains(&rec) {
            return Err(Error::UnexpectedRecord {
                rec_type: rec,
                offset: curr,
            });
        }
        if rec == rt::END {
            st.seen_all = true;
            return Ok(());
        }
        let payload = c_str(&buf);
        let mut kind = rec;
        let mut start = payload;
        let mut attr: (&[u8], &[u8]) = (b"", b"");
        if rec == rt::ATTR {
            attr = split_nameval(payload).map_err(|reason| Error::BadAttribute {
                offset: curr,
                reason,
                text: payload.to_vec(),
            })?;
            if let Some(mapped) = rec_attr_map(attr.0) {
                kind = mapped;
                start = attr.1;
            }
        }
        match kind {
            rt::RCPT => {
                if st.rcpt_offset == 0 {
                    st.rcpt_unread -= 1;
                    st.recipients.push(Recipient {
                        offset: curr,
                        address: start.to_vec(),
                        orig_rcpt: st.orig_rcpt.take().unwrap_or_default(),
                        dsn_orig_rcpt: st.dsn_orcpt.take().unwrap_or_default(),
                        notify_flags: std::mem::take(&mut st.dsn_notify),
                    });
                    if st.recipients.len() >= limit {
                        st.rcpt_offset = rr.offset();
                        if st.seen_all {
                            return Ok(());
                        }
                        if st.size.rflags & size::READ_FLAG_MIXED_RCPT_OTHER != 0 {
                            continue;
                        }
                        if curr as i128 > i128::from(data_offset) {
                            st.seen_all = true;
                            return Ok(());
                        }
                        // Pure recipient tail: the rest of the envelope is
                        // recipients, so jump to the content (then `X`).
                        rr.seek(data_offset.max(0) as u64)?;
                    }
                }
                continue;
            }
            rt::DONE | rt::DRCP => {
                if st.rcpt_offset == 0 {
                    st.rcpt_unread -= 1;
                    st.dsn_orcpt = None;
                    st.orig_rcpt = None;
                    st.dsn_notify = 0;
                }
                continue;
            }
            rt::DSN_ORCPT => {
                if let Some(old) = st.dsn_orcpt.take() {
                    st.warnings.push(ReadWarning::OutOfOrderDsnOrcpt(old));
                }
                if st.rcpt_offset == 0 {
                    st.dsn_orcpt = Some(start.to_vec());
                }
                continue;
            }
            rt::DSN_NOTIFY => {
                if st.dsn_notify != 0 {
                    st.warnings
                        .push(ReadWarning::OutOfOrderDsnNotify(st.dsn_notify));
                    st.dsn_notify = 0;
                }
                if st.rcpt_offset == 0 {
                    let n = atoi(start);
                    if !alldig(start) || n == 0 || !dsn_notify_ok(n) {
                        st.warnings
                            .push(ReadWarning::MalformedDsnNotify(start.to_vec()));
                    } else {
                        st.dsn_notify = n;
                    }
                }
                continue;
            }
            rt::ORCP => {
                if let Some(old) = st.orig_rcpt.take() {
                    st.warnings.push(ReadWarning::OutOfOrderOrigRcpt(old));
                }
                if st.rcpt_offset == 0 {
                    st.orig_rcpt = Some(start.to_vec());
                }
                continue;
            }
            _ => {}
        }
        if st.seen_all {
            continue;
        }
        non_recipient(rr, st, kind, start, attr, curr, verp_filter)?;
    }
}

/// Envelope records other than recipients; only seen on a first read.
fn non_recipient<R: Read + Seek>(
    rr: &mut RecordReader<R>,
    st: &mut State,
    kind: u8,
    start: &[u8],
    (name, value): (&[u8], &[u8]),
    curr: u64,
    verp_filter: &[u8],
) -> Result<(), Error> {
    let e = &mut st.env;
    match kind {
        rt::SIZE => {
            if st.size.data_offset == 0 {
                match SizeRecord::parse(start) {
                    Ok(s) => {
                        st.size = s;
                        st.rcpt_unread = s.rcpt_count;
                    }
                    Err(SizeParseError::OldStyle { .. }) => old_style_scan(rr, st)?,
                    Err(err) => return Err(size_error(err, curr, start)),
                }
            }
            st.size = st
                .size
                .with_content_default()
                .map_err(|err| size_error(err, curr, start))?;
        }
        rt::TIME if e.arrival.0 == 0 => e.arrival = parse_time(start),
        rt::CTIME if e.create_time == 0 => e.create_time = atol(start),
        rt::FILT => e.filter = Some(start.to_vec()),
        rt::INSP => e.inspector = Some(start.to_vec()),
        rt::RDR => e.redirect = Some(start.to_vec()),
        rt::FROM if e.sender.is_none() => {
            e.sender = Some(start.to_vec());
            e.opened = Some(Opened {
                size: st.size.content_length,
                nrcpt: st.rcpt_unread,
            });
        }
        rt::DSN_ENVID => e.envelope_id = Some(start.to_vec()),
        rt::DSN_RET => {
            let n = atoi(start);
            if !alldig(start) || !(n == 1 || n == 2) {
                st.warnings
                    .push(ReadWarning::MalformedDsnRet(start.to_vec()));
            } else {
                e.ret_flags = n;
            }
        }
        rt::ATTR => attribute(st, name, value, curr),
        rt::WARN => {
            // Postfix uses offset 0 as "unset", so a `W` at offset 0 can be
            // overridden by a later one.
            if matches!(e.warn, None | Some(WarnRecord { offset: 0, .. })) {
                e.warn = Some(WarnRecord {
                    offset: curr,
                    time: atol(start),
                });
            }
        }
        rt::VERP if e.verp_delims.is_none() => {
            if matches!(e.sender.as_deref(), None | Some(b"")) {
                st.warnings.push(ReadWarning::VerpNullSender);
            } else if start.len() != 2 || !start.iter().all(|c| verp_filter.contains(c)) {
                st.warnings.push(ReadWarning::BadVerp(start.to_vec()));
            } else {
                e.single_rcpt = true;
                e.verp_delims = Some(start.to_vec());
            }
        }
        _ => {}
    }
    Ok(())
}

/// `REC_TYPE_TIME_SCAN`: seconds, then whatever follows the digits.
fn parse_time(s: &[u8]) -> (i64, i64) {
    let sec = atol(s);
    let digits = s.iter().take_while(|b| b.is_ascii_digit()).count();
    (sec, atol(&s[digits..]))
}

fn first_only(
    slot: &mut Option<Vec<u8>>,
    name: &'static str,
    value: &[u8],
    w: &mut Vec<ReadWarning>,
) {
    if slot.is_none() {
        *slot = Some(value.to_vec());
    } else {
        w.push(ReadWarning::MultipleAttribute {
            name,
            value: value.to_vec(),
        });
    }
}

/// Named attributes that are not mapped to record types.
fn attribute(st: &mut State, name: &[u8], value: &[u8], curr: u64) {
    let e = &mut st.env;
    let legacy = |slot: &mut Option<Vec<u8>>, have_log: bool| {
        if !have_log && slot.is_none() {
            *slot = Some(value.to_vec());
        }
    };
    let have = e.have_log_client_attr;
    match name {
        b"encoding" => e.encoding = Some(value.to_vec()),
        b"client_name" => legacy(&mut e.client_name, have),
        b"client_address" => legacy(&mut e.client_addr, have),
        b"client_port" => legacy(&mut e.client_port, have),
        b"protocol_name" => legacy(&mut e.client_proto, have),
        b"helo_name" => legacy(&mut e.client_helo, have),
        b"log_client_name"
        | b"log_client_address"
        | b"log_client_port"
        | b"log_protocol_name"
        | b"log_helo_name" => {
            let slot = match name {
                b"log_client_name" => &mut e.client_name,
                b"log_client_address" => &mut e.client_addr,
                b"log_client_port" => &mut e.client_port,
                b"log_protocol_name" => &mut e.client_proto,
                _ => &mut e.client_helo,
            };
            *slot = Some(value.to_vec());
            e.have_log_client_attr = true;
        }
        b"sasl_method" => first_only(&mut e.sasl_method, "sasl_method", value, &mut st.warnings),
        b"sasl_username" => first_only(
            &mut e.sasl_username,
            "sasl_username",
            value,
            &mut st.warnings,
        ),
        b"sasl_sender" => first_only(&mut e.sasl_sender, "sasl_sender", value, &mut st.warnings),
        b"log_ident" => first_only(&mut e.log_ident, "log_ident", value, &mut st.warnings),
        b"rewrite_context" => first_only(
            &mut e.rewrite_context,
            "rewrite_context",
            value,
            &mut st.warnings,
        ),
        b"trace_flags" if e.trace_flags == 0 => {
            e.trace_flags = atoi(value) & trace_flag::MASK;
            e.trace_flags_offset = (e.trace_flags == trace_flag::RECORD).then_some(curr);
        }
        _ => {}
    }
}

/// Pre-2001 files have a one-field size record: find the data segment by
/// scanning the whole file (following pointers), then return to `orig`.
fn old_style_scan<R: Read + Seek>(rr: &mut RecordReader<R>, st: &mut State) -> Result<(), Error> {
    let orig = rr.offset();
    rr.seek(0)?;
    let mut ptr_state = State::first();
    let mut buf = Vec::new();
    let mut unread = 0i64;
    let mut data_offset = 0i64;
    let mut data_size = 0i64;
    let last = loop {
        let curr = rr.offset();
        let rec = match rr.next_into(&mut buf) {
            Ok(Some((rec, _))) => rec,
            // Errors and end of file are reported as "out of order" below.
            Ok(None) | Err(Error::Record { .. }) => 0,
            Err(e) => return Err(e),
        };
        if rec == rt::PTR {
            if ptr_state.follow_pointer(rr, curr, &buf).is_err() {
                break 0;
            }
            continue;
        }
        match rec {
            0 | rt::END => break rec,
            rt::DONE | rt::RCPT | rt::DRCP => unread += 1,
            rt::MESG if data_offset == 0 => {
                let here = rr.offset();
                data_offset =
                    i64::try_from(here).map_err(|_| Error::OffsetOverflow { offset: curr })?;
                let extra = atol(c_str(&buf));
                if extra <= data_offset {
                    return Err(Error::OldStyleBadExtraOffset {
                        text: c_str(&buf).to_vec(),
                    });
                }
                rr.seek(extra as u64)?;
                data_size = extra - data_offset;
            }
            _ => {}
        }
    };
    rr.seek(orig)?;
    if data_offset == 0 || last != rt::END {
        return Err(Error::OldStyleOutOfOrder);
    }
    st.rcpt_unread = unread;
    st.size.data_offset = data_offset;
    st.size.data_size = data_size;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nameval_splitting() {
        assert_eq!(split_nameval(b" a = b c "), Ok((&b"a"[..], &b"b c"[..])));
        assert_eq!(split_nameval(b"a="), Ok((&b"a"[..], &b""[..])));
        assert_eq!(split_nameval(b"=x"), Err("missing attribute name"));
        assert_eq!(split_nameval(b"   "), Err("missing attribute name"));
        assert_eq!(
            split_nameval(b"a b=c"),
            Err("missing '=' after attribute name")
        );
    }

    #[test]
    fn pointer_values() {
        assert_eq!(parse_offset(b""), Some(0));
        assert_eq!(parse_offset(b"123"), Some(123));
        assert_eq!(parse_offset(b"12 "), None);
        assert_eq!(parse_offset(b"-1"), None);
        assert_eq!(parse_offset(b"99999999999999999999"), None);
    }

    #[test]
    fn time_and_notify() {
        assert_eq!(parse_time(b"1795960876 80096"), (1_795_960_876, 80096));
        assert_eq!(parse_time(b"-5 3"), (-5, -5));
        assert!(dsn_notify_ok(1) && dsn_notify_ok(10) && !dsn_notify_ok(3) && !dsn_notify_ok(16));
    }
}
