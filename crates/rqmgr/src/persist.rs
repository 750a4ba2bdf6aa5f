//! The state files: overrides, the deferred index and (unless turned off)
//! what the scheduler learned, kept across `postfix reload`, restarts and
//! crashes in `data_directory/rqmgr/state/` (`overrides`, `deferred`,
//! `learned`; one format, each file using its part).
//!
//! The directory is made and opened before the chroot (data_directory is
//! outside the queue directory), owned by mail_owner and mode 0700; the
//! files are only ever reached through that open directory. A save writes
//! `NAME.tmp`, fsyncs it, renames it over `NAME` and fsyncs the
//! directory, so a crash leaves either the old file or the new one.
//!
//! Loading never fails the daemon: a file that is missing starts afresh,
//! and one that does not parse, is of another format or version, or names
//! nonsense is logged with a warning and ignored (the next save replaces
//! it). Names are bytes; the file writes them as text with `%XX` for
//! every byte that is not printable ASCII, and for `%` itself.

use std::collections::BTreeSet;
use std::fs::File;
use std::io::{Read, Write};
use std::os::fd::AsFd;
use std::path::Path;
use std::time::Duration;

use nix::fcntl::{openat, renameat, OFlag};
use nix::sys::stat::Mode;
use rqmgr_queue::queue_id::QueueId;
use rqmgr_sched::{ByteString, Dsn, LearnedDestination, LiveLimit, Target};
use serde::{Deserialize, Serialize};

use crate::control::{Override, OverrideKind};

/// What the file says it is.
const FORMAT: &str = "rqmgr-state";
const VERSION: u32 = 1;
/// The file of overrides, saved at each operator's change.
pub(crate) const OVERRIDES: &str = "overrides";
/// The file of the deferred index, saved every few seconds while it
/// changes.
pub(crate) const DEFERRED: &str = "deferred";
/// The file of learned state, saved every few seconds while it changes.
pub(crate) const LEARNED: &str = "learned";

/// Everything a file holds, decoded.
#[derive(Debug, Default, PartialEq)]
pub(crate) struct Saved {
    /// When it was written (seconds since the epoch).
    pub saved_at: i64,
    pub overrides: Vec<Override>,
    /// Learned destinations, each with the time (seconds since the epoch)
    /// its revival or pause ends.
    pub learned: Vec<(LearnedDestination, Option<i64>)>,
    pub deferred: Vec<(Target, Vec<QueueId>)>,
}

#[derive(Serialize, Deserialize)]
struct FileV1 {
    format: String,
    version: u32,
    saved_at: i64,
    overrides: Vec<OverrideV1>,
    learned: Vec<LearnedV1>,
    deferred: Vec<DeferredV1>,
}

#[derive(Serialize, Deserialize)]
struct OverrideV1 {
    id: u64,
    transport: String,
    nexthop: Option<String>,
    /// `suspend`, `concurrency`, `rate_delay` or `recipient_limit`.
    kind: String,
    /// The limit (rate delay: milliseconds).
    value: Option<u64>,
    reason: String,
    uid: Option<u32>,
    since: i64,
    until: Option<i64>,
    held: Vec<String>,
}

#[derive(Serialize, Deserialize)]
struct LearnedV1 {
    transport: String,
    queue: String,
    nexthop: String,
    window: u32,
    dead_status: Option<String>,
    dead_reason: Option<String>,
    wake_at: Option<i64>,
}

#[derive(Serialize, Deserialize)]
struct DeferredV1 {
    transport: String,
    nexthop: String,
    ids: Vec<String>,
}

/// The index's file as written: borrowed, so that a save of a large
/// index copies no queue ID.
#[derive(Serialize)]
struct IndexFileOut<'a> {
    format: &'static str,
    version: u32,
    saved_at: i64,
    overrides: [(); 0],
    learned: [(); 0],
    deferred: Vec<DeferredOut<'a>>,
}

#[derive(Serialize)]
struct DeferredOut<'a> {
    transport: String,
    nexthop: String,
    ids: Vec<&'a str>,
}

/// The file's bytes for a deferred index (read back by [`from_bytes`]).
pub(crate) fn index_bytes<'a>(
    saved_at: i64,
    index: impl Iterator<Item = (&'a Target, &'a BTreeSet<QueueId>)>,
) -> Vec<u8> {
    let deferred = index
        .map(|(t, ids)| DeferredOut {
            transport: encode(&t.transport),
            nexthop: t.nexthop.as_deref().map(encode).unwrap_or_default(),
            ids: ids.iter().map(QueueId::as_str).collect(),
        })
        .collect();
    let file = IndexFileOut {
        format: FORMAT,
        version: VERSION,
        saved_at,
        overrides: [],
        learned: [],
        deferred,
    };
    serde_json::to_vec(&file).unwrap_or_default()
}

/// Names as file text: printable ASCII but `%` as is, the rest `%XX`.
pub(crate) fn encode(bytes: &[u8]) -> String {
    let mut s = String::with_capacity(bytes.len());
    for &b in bytes {
        if (b.is_ascii_graphic() && b != b'%') || b == b' ' {
            s.push(char::from(b));
        } else {
            s.push_str(&format!("%{b:02X}"));
        }
    }
    s
}

/// The bytes of [`encode`]'s text; None if it is not such text.
pub(crate) fn decode(s: &str) -> Option<Vec<u8>> {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'%' {
            let hex = s.get(i + 1..i + 3)?;
            out.push(u8::from_str_radix(hex, 16).ok()?);
            i += 3;
        } else {
            out.push(b[i]);
            i += 1;
        }
    }
    Some(out)
}

/// A limit's value as the file keeps it (a rate delay in milliseconds).
fn limit_number(limit: LiveLimit) -> u64 {
    match limit {
        LiveLimit::Concurrency(n) | LiveLimit::RecipientLimit(n) => u64::from(n),
        LiveLimit::RateDelay(d) => u64::try_from(d.as_millis()).unwrap_or(0),
    }
}

/// The file's bytes for `saved`.
pub(crate) fn to_bytes(saved: &Saved) -> Vec<u8> {
    let overrides = saved
        .overrides
        .iter()
        .map(|o| {
            let value = match &o.kind {
                OverrideKind::Suspend => None,
                OverrideKind::Limit(l) => Some(limit_number(*l)),
            };
            OverrideV1 {
                id: o.id,
                transport: encode(&o.target.transport),
                nexthop: o.target.nexthop.as_deref().map(encode),
                kind: o.kind.name().to_owned(),
                value,
                reason: o.reason.clone(),
                uid: o.uid,
                since: o.since,
                until: o.until,
                held: o.held.iter().map(|i| i.as_str().to_owned()).collect(),
            }
        })
        .collect();
    let learned = saved
        .learned
        .iter()
        .map(|(d, wake_at)| LearnedV1 {
            transport: encode(&d.transport),
            queue: encode(&d.queue),
            nexthop: encode(&d.nexthop),
            window: d.window,
            dead_status: d.dead.as_ref().map(|x| x.status.clone()),
            dead_reason: d.dead.as_ref().map(|x| encode(&x.reason)),
            wake_at: *wake_at,
        })
        .collect();
    let deferred = saved
        .deferred
        .iter()
        .map(|(t, ids)| DeferredV1 {
            transport: encode(&t.transport),
            nexthop: t.nexthop.as_deref().map(encode).unwrap_or_default(),
            ids: ids.iter().map(|i| i.as_str().to_owned()).collect(),
        })
        .collect();
    let file = FileV1 {
        format: FORMAT.to_owned(),
        version: VERSION,
        saved_at: saved.saved_at,
        overrides,
        learned,
        deferred,
    };
    // Serializing plain data to memory cannot fail.
    serde_json::to_vec(&file).unwrap_or_default()
}

/// Decodes the file's bytes; the error says what is wrong with them.
pub(crate) fn from_bytes(bytes: &[u8]) -> Result<Saved, String> {
    let file: FileV1 =
        serde_json::from_slice(bytes).map_err(|e| format!("not a state file: {e}"))?;
    if file.format != FORMAT || file.version != VERSION {
        return Err(format!(
            "format \"{}\" version {}, expected \"{FORMAT}\" version {VERSION}",
            file.format, file.version
        ));
    }
    let name = |s: &str| decode(s).ok_or_else(|| format!("bad name \"{s}\""));
    let qid = |s: &String| QueueId::parse(s).ok_or_else(|| format!("bad queue ID \"{s}\""));
    let mut saved = Saved {
        saved_at: file.saved_at,
        ..Saved::default()
    };
    for o in file.overrides {
        let value = || {
            o.value
                .ok_or_else(|| format!("override {}: no value", o.id))
        };
        let count = |v: u64| u32::try_from(v).map_err(|_| format!("override {}: too big", o.id));
        let kind = match o.kind.as_str() {
            "suspend" => OverrideKind::Suspend,
            "concurrency" => OverrideKind::Limit(LiveLimit::Concurrency(count(value()?)?)),
            "recipient_limit" => OverrideKind::Limit(LiveLimit::RecipientLimit(count(value()?)?)),
            "rate_delay" => {
                OverrideKind::Limit(LiveLimit::RateDelay(Duration::from_millis(value()?)))
            }
            other => return Err(format!("override {}: unknown kind \"{other}\"", o.id)),
        };
        let nexthop = o.nexthop.as_deref().map(name).transpose()?;
        saved.overrides.push(Override {
            id: o.id,
            target: Target::new(&name(&o.transport)?, nexthop.as_deref()),
            kind,
            reason: o.reason,
            uid: o.uid,
            since: o.since,
            until: o.until,
            held: o.held.iter().map(qid).collect::<Result<BTreeSet<_>, _>>()?,
        });
    }
    for d in file.learned {
        let dead = match (d.dead_status, d.dead_reason) {
            (Some(status), Some(reason)) => Some(Dsn::new(status, name(&reason)?)),
            (None, None) => None,
            _ => return Err("a dead destination without its reason".to_owned()),
        };
        let learned = LearnedDestination {
            transport: ByteString::from(name(&d.transport)?),
            queue: ByteString::from(name(&d.queue)?),
            nexthop: ByteString::from(name(&d.nexthop)?),
            window: d.window,
            dead,
            wake_in: None,
        };
        saved.learned.push((learned, d.wake_at));
    }
    for d in file.deferred {
        let target = Target::new(&name(&d.transport)?, Some(&name(&d.nexthop)?));
        let ids = d.ids.iter().map(qid).collect::<Result<Vec<_>, _>>()?;
        saved.deferred.push((target, ids));
    }
    Ok(saved)
}

/// Makes directory `path` with `mode` unless it exists, and gives it to
/// `owner` unless it has it.
fn make_owned(path: &Path, mode: u32, owner: Option<(u32, u32)>) -> Result<(), String> {
    use std::os::unix::fs::{DirBuilderExt, MetadataExt};
    let show = |e: std::io::Error| format!("{}: {e}", path.display());
    match std::fs::DirBuilder::new().mode(mode).create(path) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {}
        Err(e) => return Err(show(e)),
    }
    if let Some((uid, gid)) = owner {
        let meta = std::fs::metadata(path).map_err(show)?;
        if meta.uid() != uid || meta.gid() != gid {
            std::os::unix::fs::chown(path, Some(uid), Some(gid)).map_err(show)?;
        }
    }
    Ok(())
}

/// The open state directory.
#[derive(Debug)]
pub(crate) struct StateDir {
    dir: File,
    path: std::path::PathBuf,
}

impl StateDir {
    /// Makes (as root, before chroot) and opens `data_directory/rqmgr/state`.
    /// Both it (mode 0700) and `data_directory/rqmgr` (0755) belong to
    /// `owner`, as `postfix check` wants everything under data_directory
    /// to belong to mail_owner.
    pub(crate) fn open(
        data_directory: &str,
        owner: Option<(u32, u32)>,
    ) -> Result<StateDir, String> {
        let parent = Path::new(data_directory).join("rqmgr");
        let path = parent.join("state");
        make_owned(&parent, 0o755, owner)?;
        make_owned(&path, 0o700, owner)?;
        let dir = File::open(&path).map_err(|e| format!("{}: {e}", path.display()))?;
        Ok(StateDir { dir, path })
    }

    /// The path of file `name`, for messages.
    pub(crate) fn show(&self, name: &str) -> String {
        self.path.join(name).display().to_string()
    }

    /// File `name`'s bytes; None if there is none.
    pub(crate) fn load(&self, name: &str) -> std::io::Result<Option<Vec<u8>>> {
        let flags = OFlag::O_RDONLY | OFlag::O_CLOEXEC;
        let fd = match openat(self.dir.as_fd(), name, flags, Mode::empty()) {
            Ok(fd) => fd,
            Err(nix::errno::Errno::ENOENT) => return Ok(None),
            Err(e) => return Err(e.into()),
        };
        let mut bytes = Vec::new();
        File::from(fd).read_to_end(&mut bytes)?;
        Ok(Some(bytes))
    }

    /// Replaces file `name` with `bytes`, atomically and durably.
    pub(crate) fn save(&self, name: &str, bytes: &[u8]) -> std::io::Result<()> {
        let flags = OFlag::O_WRONLY | OFlag::O_CREAT | OFlag::O_TRUNC | OFlag::O_CLOEXEC;
        let temp = format!("{name}.tmp");
        let fd = openat(
            self.dir.as_fd(),
            temp.as_str(),
            flags,
            Mode::from_bits_truncate(0o600),
        )?;
        let mut f = File::from(fd);
        f.write_all(bytes)?;
        f.sync_all()?;
        drop(f);
        renameat(self.dir.as_fd(), temp.as_str(), self.dir.as_fd(), name)?;
        self.dir.sync_all()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_survive_encoding() {
        for name in [
            &b"smtp"[..],
            b"[127.0.0.1]:25",
            b"b\xe4d 100%.example",
            b"a\nb",
        ] {
            assert_eq!(decode(&encode(name)).as_deref(), Some(name));
        }
        assert_eq!(encode(b"b\xe4d%"), "b%E4d%25");
        assert_eq!(decode("%4"), None);
        assert_eq!(decode("%zz"), None);
    }

    fn sample() -> Saved {
        let id = |s: &str| QueueId::parse(s).unwrap_or_else(|| panic!("{s}"));
        let target = Target::new(b"smtp", Some(b"D\xe4.example"));
        Saved {
            saved_at: 1_700_000_000,
            overrides: vec![
                Override {
                    id: 4,
                    target: target.clone(),
                    kind: OverrideKind::Suspend,
                    reason: "maintenance \"window\"".into(),
                    uid: Some(0),
                    since: 1_700_000_000,
                    until: Some(1_700_003_600),
                    held: [id("4ABC1"), id("4ABC2")].into_iter().collect(),
                },
                Override {
                    id: 5,
                    target: Target::new(b"smtp", None),
                    kind: OverrideKind::Limit(LiveLimit::RateDelay(Duration::from_millis(1500))),
                    reason: String::new(),
                    uid: None,
                    since: 1_700_000_001,
                    until: None,
                    held: BTreeSet::new(),
                },
            ],
            learned: vec![(
                LearnedDestination {
                    transport: "smtp".into(),
                    queue: "down.example".into(),
                    nexthop: "Down.example".into(),
                    window: 0,
                    dead: Some(Dsn::new("4.4.1", "connect to down.example: refused")),
                    wake_in: None,
                },
                Some(1_700_000_300),
            )],
            deferred: vec![(target, vec![id("4ABC1")])],
        }
    }

    #[test]
    fn a_saved_state_reads_back_the_same() {
        let saved = sample();
        assert_eq!(from_bytes(&to_bytes(&saved)), Ok(saved));
    }

    #[test]
    fn damaged_or_foreign_files_are_refused_with_a_reason() {
        let good = to_bytes(&sample());
        let cut = from_bytes(&good[..good.len() / 2]);
        assert!(cut.is_err_and(|e| e.starts_with("not a state file")));
        let other = String::from_utf8_lossy(&good).replace("\"version\":1", "\"version\":9");
        assert!(from_bytes(other.as_bytes()).is_err_and(|e| e.contains("version 9")));
        let bad_id = String::from_utf8_lossy(&good).replace("4ABC1", "../../etc");
        assert!(from_bytes(bad_id.as_bytes()).is_err_and(|e| e.contains("bad queue ID")));
        assert!(from_bytes(b"").is_err());
    }

    #[test]
    fn saves_replace_the_file_atomically() {
        let tmp = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
        let data = tmp.path().to_string_lossy().into_owned();
        let dir = StateDir::open(&data, None).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(dir.load(OVERRIDES).ok(), Some(None));
        dir.save(OVERRIDES, b"one")
            .unwrap_or_else(|e| panic!("{e}"));
        dir.save(OVERRIDES, b"two")
            .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(dir.load(OVERRIDES).ok(), Some(Some(b"two".to_vec())));
        let files: Vec<_> = std::fs::read_dir(tmp.path().join("rqmgr/state"))
            .unwrap_or_else(|e| panic!("{e}"))
            .map(|e| e.map(|e| e.file_name()))
            .collect::<Result<_, _>>()
            .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(files, vec![std::ffi::OsString::from("overrides")]);
    }

    #[test]
    fn an_index_written_borrowed_reads_back() {
        let saved = sample();
        let index: Vec<(Target, BTreeSet<QueueId>)> = saved
            .deferred
            .iter()
            .map(|(t, ids)| (t.clone(), ids.iter().cloned().collect()))
            .collect();
        let bytes = index_bytes(7, index.iter().map(|(t, ids)| (t, ids)));
        let back = from_bytes(&bytes).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!((back.saved_at, back.deferred), (7, saved.deferred));
    }
}
