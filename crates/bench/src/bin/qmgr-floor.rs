//! `qmgr-floor`: the least a queue manager must do per message, for the
//! "Floor" measurement in docs/benchmarks.md. Not a queue manager.
//!
//! Job: installed as the `qmgr` of a private instance (`rqmgr-bench
//! --rqmgr PATH --qm rqmgr`, discard workloads only), it drains
//! `incoming/` once, one message at a time, with blocking I/O and no
//! event loop: lstat, rename to `active/`, open, lock, read, unlink
//! `defer/ID`, log `(queue active)`, close; one resolve per recipient on
//! one kept trivial-rewrite connection; one delivery request per
//! (transport, next hop) and up to 50 recipients (connect, announcement,
//! request, reply, close); stat `bounce/ID`, unlink, log `removed`. Then
//! it sleeps until `postfix stop` ends it.
//!
//! Limits, on purpose: no scheduling, no concurrency (so every round trip
//! sleeps: the wake-ups here are an upper bound of the floor's), no
//! deferred queue, no triggers, no retries, no in-flow tokens, a fixed
//! log prefix with the time in UTC. A message whose delivery does not
//! succeed stays in `active/`; any other failure ends the process.

use std::io::{Read, Write};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::PermissionsExt;
use std::os::unix::net::{UnixDatagram, UnixStream};
use std::path::Path;
use std::time::{SystemTime, UNIX_EPOCH};

use rqmgr_ipc::attr::ListDecoder;
use rqmgr_ipc::deliver::{parse_reply, timeval, DeliveryRequestRef, MsgStats, RecipientRef};
use rqmgr_ipc::dialect::Dialect;
use rqmgr_queue::dirs::{QueueLayout, QueueName};
use rqmgr_queue::message::{read_opened_message, ReadLimits};
use rqmgr_queue::queue_id::QueueId;

/// `DEL_REQ_FLAG_DEFLT`.
const FLAGS: i32 = 3;
/// `default_destination_recipient_limit`.
const RCPT_LIMIT: usize = 50;

type Res<T> = Result<T, Box<dyn std::error::Error>>;

fn main() {
    if let Err(e) = run() {
        eprintln!("qmgr-floor: {e}");
        std::process::exit(1);
    }
}

/// Reads one attribute list (blocking); returns it and its raw bytes.
fn read_list(s: &mut UnixStream, buf: &mut Vec<u8>) -> Res<rqmgr_ipc::attr::AttrList> {
    buf.clear();
    let mut dec = ListDecoder::new();
    let mut chunk = [0u8; 4096];
    loop {
        if let Some((list, _)) = dec.feed(buf, 0)? {
            return Ok(list);
        }
        let n = s.read(&mut chunk)?;
        if n == 0 {
            return Err("premature end of stream".into());
        }
        buf.extend_from_slice(&chunk[..n]);
    }
}

/// `name\0value\0` pairs of a list without empty names, by name.
fn field<'a>(raw: &'a [u8], name: &[u8]) -> &'a [u8] {
    let mut it = raw.split(|&b| b == 0);
    while let (Some(n), Some(v)) = (it.next(), it.next()) {
        if n == name {
            return v;
        }
    }
    b""
}

/// `Mon DD HH:MM:SS` in UTC.
fn stamp(t: i64) -> String {
    const MON: [&str; 12] = [
        "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec",
    ];
    let (days, secs) = (t.div_euclid(86_400), t.rem_euclid(86_400));
    // Civil date from days since 1970-01-01 (H. Hinnant's algorithm).
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    format!(
        "{} {d:2} {:02}:{:02}:{:02}",
        MON[(m - 1) as usize],
        secs / 3600,
        secs / 60 % 60,
        secs % 60
    )
}

struct Log {
    sock: UnixDatagram,
    pid: u32,
}

impl Log {
    fn info(&self, text: &str) {
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_secs());
        let line = format!(
            "{} floor postfix/qmgr[{}]: {text}",
            stamp(i64::try_from(now).unwrap_or(0)),
            self.pid
        );
        let _ = self.sock.send(line.as_bytes());
    }
}

fn run() -> Res<()> {
    if !Path::new("incoming").is_dir() {
        return Err("not started in a queue directory".into());
    }
    let layout = QueueLayout::new(".", "deferred,defer", 1);
    let sock = UnixDatagram::unbound()?;
    sock.connect("public/postlog")?;
    let log = Log {
        sock,
        pid: std::process::id(),
    };
    let mut rewrite = UnixStream::connect("private/rewrite")?;
    let mut buf = Vec::new();
    read_list(&mut rewrite, &mut buf)?; // the announcement
    let limits = ReadLimits {
        resume_offset: None,
        max_recipients: 20_000,
        verp_delimiter_filter: b"-=+".to_vec(),
        max_length_bytes: 4,
    };
    let mut names: Vec<_> = std::fs::read_dir("incoming")?
        .filter_map(|e| e.ok()?.file_name().into_string().ok())
        .collect();
    names.sort();
    for name in names {
        let Some(id) = QueueId::parse(&name) else {
            continue;
        };
        let incoming = layout.path(QueueName::Incoming, &id);
        let md = std::fs::symlink_metadata(&incoming)?;
        if md.permissions().mode() & 0o700 != 0o700 {
            continue;
        }
        let active = layout.path(QueueName::Active, &id);
        std::fs::rename(&incoming, &active)?;
        let mut file = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .open(&active)?;
        if !rqmgr_queue::lock::lock_exclusive_nb(&file)? {
            return Err(format!("{id}: locked").into());
        }
        let env = read_opened_message(&mut file, &limits)?;
        drop(file);
        let _ = std::fs::remove_file(layout.path(QueueName::Defer, &id));
        log.info(&format!(
            "{id}: from=<{}>, size={}, nrcpt={} (queue active)",
            String::from_utf8_lossy(&env.sender),
            env.size.content_length,
            env.recipients.len()
        ));
        let active_arrival = timeval(SystemTime::now());
        // Resolve each recipient; group by (transport, next hop), in order.
        let mut groups: Vec<(Vec<u8>, Vec<u8>, Vec<usize>)> = Vec::new();
        let mut resolved = Vec::with_capacity(env.recipients.len());
        for (i, r) in env.recipients.iter().enumerate() {
            let request = [
                &b"request\0resolve\0sender\0"[..],
                &env.sender,
                b"\0address\0",
                &r.address,
                b"\0\0",
            ]
            .concat();
            rewrite.write_all(&request)?;
            read_list(&mut rewrite, &mut buf)?;
            let (transport, nexthop) = (field(&buf, b"transport"), field(&buf, b"nexthop"));
            resolved.push(field(&buf, b"recipient").to_vec());
            match groups
                .iter_mut()
                .find(|g| g.0 == transport && g.1 == nexthop && g.2.len() < RCPT_LIMIT)
            {
                Some(g) => g.2.push(i),
                None => groups.push((transport.to_vec(), nexthop.to_vec(), vec![i])),
            }
        }
        let mut all_ok = true;
        for (transport, nexthop, rcpts) in &groups {
            let path = [&b"private/"[..], transport].concat();
            let mut agent = UnixStream::connect(std::ffi::OsStr::from_bytes(&path))?;
            read_list(&mut agent, &mut buf)?; // the announcement
            let recipients = rcpts
                .iter()
                .map(|&i| {
                    let r = &env.recipients[i];
                    RecipientRef {
                        orig_rcpt: &r.orig_rcpt,
                        address: &resolved[i],
                        offset: i64::try_from(r.offset).unwrap_or(i64::MAX),
                        dsn_orig_rcpt: &r.dsn_orig_rcpt,
                        notify_flags: r.notify_flags,
                    }
                })
                .collect();
            let request = DeliveryRequestRef {
                flags: FLAGS,
                queue_name: b"active",
                queue_id: id.as_str().as_bytes(),
                data_offset: env.size.data_offset,
                data_size: env.size.content_length,
                nexthop,
                encoding: &env.encoding,
                sendopts: env.size.sendopts,
                dialect: Dialect::Postfix37,
                sender: &env.sender,
                envelope_id: &env.envelope_id,
                ret_flags: env.ret_flags,
                stats: MsgStats {
                    incoming_arrival: env.arrival,
                    active_arrival,
                    ..MsgStats::default()
                },
                log_client_name: &env.log_client_name,
                log_client_address: &env.log_client_address,
                log_client_port: &env.log_client_port,
                log_protocol_name: &env.log_protocol_name,
                log_helo_name: &env.log_helo_name,
                sasl_method: &env.sasl_method,
                sasl_username: &env.sasl_username,
                sasl_sender: &env.sasl_sender,
                log_ident: &env.log_ident,
                rewrite_context: &env.rewrite_context,
                recipients,
            }
            .to_bytes();
            agent.write_all(&request)?;
            let reply = parse_reply(&read_list(&mut agent, &mut buf)?)?;
            all_ok &= reply.status == 0;
        }
        if !all_ok {
            continue;
        }
        match std::fs::metadata(layout.path(QueueName::Bounce, &id)) {
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            _ => continue,
        }
        std::fs::remove_file(&active)?;
        log.info(&format!("{id}: removed"));
    }
    // Until `postfix stop` (master's SIGTERM).
    loop {
        std::thread::sleep(std::time::Duration::from_secs(3600));
    }
}
