//! The instance's queue directory as tests look at it: which queue files
//! are where, planting files for a test, and (when the builder asked for
//! it) the tmpfs under it, which a test may fill to make the disk full.
//! Invariant: a tmpfs mounted here is unmounted before the instance's
//! directory is removed, or the directory is left in place.

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

impl Instance {
    /// Mounts a tmpfs of `bytes` on the queue directory (before Postfix
    /// creates anything in it).
    pub(super) fn mount_queue_tmpfs(&mut self, bytes: u64) -> Result<()> {
        use nix::mount::{mount, MsFlags};
        let at = self.queue_dir();
        std::fs::create_dir_all(&at).map_err(|e| Error::io(format!("mkdir {at:?}"), e))?;
        let options = format!("size={bytes},mode=0755");
        mount(
            Some("tmpfs"),
            &at,
            Some("tmpfs"),
            MsFlags::MS_NOSUID | MsFlags::MS_NODEV,
            Some(options.as_str()),
        )
        .map_err(|e| Error::io(format!("mount a tmpfs on {at:?}"), e))?;
        self.queue_tmpfs = true;
        Ok(())
    }

    /// Unmounts the queue tmpfs; false if it is still mounted.
    pub(super) fn unmount_queue_tmpfs(&mut self) -> bool {
        let at = self.queue_dir();
        match nix::mount::umount(&at) {
            Ok(()) => {
                self.queue_tmpfs = false;
                true
            }
            Err(e) => {
                eprintln!("rqmgr-harness: umount {at:?}: {e}");
                false
            }
        }
    }

    /// Fills the queue directory's file system (see
    /// [`crate::InstanceBuilder::queue_on_tmpfs`]) and keeps it full, as a
    /// runaway writer would: whatever space Postfix frees is taken again
    /// within a few milliseconds. The shortage ends when the returned guard
    /// is dropped (its file is removed then).
    pub fn fill_queue_filesystem(&self) -> Result<QueueFiller> {
        let path = self.queue_dir().join("filler");
        let file =
            std::fs::File::create(&path).map_err(|e| Error::io(format!("create {path:?}"), e))?;
        fill(&file).map_err(|e| Error::io(format!("fill {path:?}"), e))?;
        let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let flag = std::sync::Arc::clone(&stop);
        let thread = std::thread::spawn(move || {
            while !flag.load(std::sync::atomic::Ordering::Relaxed) {
                let _ = fill(&file);
                std::thread::sleep(Duration::from_millis(5));
            }
        });
        Ok(QueueFiller {
            path,
            stop,
            thread: Some(thread),
        })
    }
}

/// Keeps the queue file system full until dropped; see
/// [`Instance::fill_queue_filesystem`].
#[derive(Debug)]
pub struct QueueFiller {
    path: PathBuf,
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Drop for QueueFiller {
    fn drop(&mut self) {
        self.stop.store(true, std::sync::atomic::Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
        let _ = std::fs::remove_file(&self.path);
    }
}

/// Appends zeros to `file` until the file system has no room left.
fn fill(mut file: &std::fs::File) -> std::io::Result<()> {
    use std::io::Write;
    let chunk = [0u8; 4096];
    loop {
        match file.write(&chunk) {
            Ok(0) => return Ok(()),
            Ok(_) => {}
            Err(e) if e.raw_os_error() == Some(nix::libc::ENOSPC) => return Ok(()),
            Err(e) => return Err(e),
        }
    }
}
