//! The instance's queue directory as tests look at it: which queue files
//! are where, and planting files for a test.

use super::*;

impl Instance {
    /// Queue ids of the files in `queue` (e.g. "deferred"), walking hash
    /// subdirectories; sorted.
    pub fn queue_ids(&self, queue: &str) -> Vec<String> {
        let mut ids = Vec::new();
        walk_queue(&self.queue_dir().join(queue), &mut ids);
        ids.sort();
        ids
    }

    /// The path of queue file `id` in `queue`, if present (searching hash
    /// subdirectories).
    pub fn queue_file_path(&self, queue: &str, id: &str) -> Option<PathBuf> {
        find_in_queue(&self.queue_dir().join(queue), id)
    }

    /// Number of messages in maildrop, incoming, active and deferred.
    pub fn queued_count(&self) -> usize {
        MAIL_QUEUES.iter().map(|q| self.queue_ids(q).len()).sum()
    }
}

/// Collects queue-id-named files below `dir` (descending into the
/// one-character hash subdirectories).
fn walk_queue(dir: &Path, out: &mut Vec<String>) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for e in entries.flatten() {
        let name = e.file_name().to_string_lossy().into_owned();
        match e.file_type() {
            Ok(t) if t.is_dir() && name.len() == 1 => walk_queue(&e.path(), out),
            Ok(t) if t.is_file() && valid_queue_file_name(&name) => out.push(name),
            _ => {}
        }
    }
}

/// Postfix's `mail_queue_id_ok`: 1–255 characters of `[A-Za-z0-9_]`.
fn valid_queue_file_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 255
        && name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_')
}

fn find_in_queue(dir: &Path, id: &str) -> Option<PathBuf> {
    let direct = dir.join(id);
    if direct.is_file() {
        return Some(direct);
    }
    let entries = std::fs::read_dir(dir).ok()?;
    entries.flatten().find_map(|e| {
        let name = e.file_name();
        (name.len() == 1 && e.path().is_dir())
            .then(|| find_in_queue(&e.path(), id))
            .flatten()
    })
}

impl Instance {
    /// Writes `content` as a ready queue file `queue/id` (mode 0700, owned by
    /// the mail owner), atomically via rename so the queue manager never sees
    /// a half-written file. For tests that plant files (e.g. a corrupt one).
    pub fn plant_queue_file(&self, queue: &str, id: &str, content: &[u8]) -> Result<PathBuf> {
        let inst = self;
        if !is_queue_id(id) {
            return Err(Error::new(format!("{id:?} is not shaped like a queue id")));
        }
        let tmp = inst.queue_dir().join(format!(".plant-{id}"));
        std::fs::write(&tmp, content).map_err(|e| Error::io(format!("write {tmp:?}"), e))?;
        crate::set_mode(&tmp, 0o700)?;
        crate::chown_to_user(&tmp, "postfix")?;
        let to = inst.queue_dir().join(queue).join(id);
        std::fs::rename(&tmp, &to).map_err(|e| Error::io(format!("rename to {to:?}"), e))?;
        Ok(to)
    }
}
