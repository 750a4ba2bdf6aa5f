//! `enable`, `disable` and `status`: the master.cf change and its undoing.
//!
//! `enable` records, under `config_directory/rqmgr/`, the qmgr entry as
//! `postconf -M` shows it, master.cf as it was, and master.cf as the
//! change left it. `disable` writes the old master.cf back when master.cf
//! is still as `enable` left it (so it is byte-identical to before); when
//! someone edited master.cf since, it restores only the qmgr entry, with
//! `postconf -M`, and says so. The records go once `disable` succeeded.
//!
//! The records live with master.cf, owned by root, because `disable`
//! writes them into master.cf as root: under data_directory, which
//! `postfix check` wants owned by mail_owner, they would let mail_owner
//! write master.cf. Records an earlier rqmgrctl left in
//! `data_directory/rqmgr/` are still found.

use std::io::Write;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Command;

use crate::instance::Instance;

/// Prints a line on stdout. A reader that went away (`rqmgrctl status |
/// head -n 1`) is no error: the work is done either way.
macro_rules! say {
    ($($arg:tt)*) => {{
        let _ = writeln!(std::io::stdout().lock(), $($arg)*);
    }};
}

/// The service rqmgrctl switches.
const SERVICE: &str = "qmgr/unix";
/// rqmgr's file name in daemon_directory.
const RQMGR: &str = "rqmgr";
/// The oldest Postfix rqmgr serves.
const OLDEST: (u32, u32) = (3, 7);

/// Where the records of one instance live.
struct Records {
    dir: PathBuf,
}

impl Records {
    fn of(inst: &Instance) -> Records {
        Records {
            dir: inst.config_dir.join("rqmgr"),
        }
    }

    /// The records `disable` reads: these, or those of an earlier
    /// rqmgrctl in data_directory if only they exist.
    fn found(inst: &Instance) -> Records {
        let new = Records::of(inst);
        let old = Records {
            dir: inst.data_dir.join("rqmgr"),
        };
        if !new.entry().exists() && old.entry().exists() {
            return old;
        }
        new
    }
    fn entry(&self) -> PathBuf {
        self.dir.join("qmgr-service.saved")
    }
    fn before(&self) -> PathBuf {
        self.dir.join("master.cf.saved")
    }
    fn after(&self) -> PathBuf {
        self.dir.join("master.cf.enabled")
    }
}

/// Makes rqmgr the queue manager.
pub(crate) fn enable(inst: &Instance, dry_run: bool) -> Result<(), String> {
    if inst.release()? < OLDEST {
        return Err(format!(
            "Postfix {} is not supported: rqmgr needs Postfix 3.7 or later",
            inst.mail_version
        ));
    }
    let command = current_command(inst)?;
    if program_of(&command) == RQMGR {
        say!("rqmgr is already the queue manager ({SERVICE}: {command})");
        return Ok(());
    }
    let new = rqmgr_command(&command)?;
    let master_cf = inst.master_cf();
    if dry_run {
        say!(
            "{}: {SERVICE} command: {command} -> {new}",
            master_cf.display()
        );
        return Ok(());
    }
    let binary = inst.daemon_dir.join(RQMGR);
    if !binary.is_file() {
        return Err(format!(
            "{} does not exist: install rqmgr first",
            binary.display()
        ));
    }
    let entry = inst.postconf(&["-M", SERVICE])?;
    let before = read(&master_cf)?;
    let records = Records::of(inst);
    std::fs::create_dir_all(&records.dir)
        .map_err(|e| format!("mkdir {}: {e}", records.dir.display()))?;
    write_atomic(&records.entry(), entry.as_bytes(), 0o600)?;
    write_atomic(&records.before(), &before, 0o600)?;
    inst.postconf(&["-F", &format!("{SERVICE}/command={new}")])?;
    write_atomic(&records.after(), &read(&master_cf)?, 0o600)?;
    say!(
        "{}: {SERVICE} command: {command} -> {new}",
        master_cf.display()
    );
    take_effect(inst, RQMGR)
}

/// Puts back the queue manager `enable` replaced.
pub(crate) fn disable(inst: &Instance, dry_run: bool) -> Result<(), String> {
    let command = current_command(inst)?;
    if program_of(&command) != RQMGR {
        say!("rqmgr is not the queue manager ({SERVICE}: {command})");
        return Ok(());
    }
    let records = Records::found(inst);
    let entry = std::fs::read_to_string(records.entry()).map_err(|e| {
        format!(
            "no record of the entry rqmgr replaced ({}: {e}); restore master.cf's qmgr entry by hand",
            records.entry().display()
        )
    })?;
    let entry = entry.trim_end();
    let old_program = entry_program(entry)
        .ok_or_else(|| format!("cannot read the saved entry {entry:?}"))?
        .to_owned();
    let master_cf = inst.master_cf();
    if dry_run {
        say!("{}: {SERVICE} entry: -> {entry}", master_cf.display());
        return Ok(());
    }
    let now = read(&master_cf)?;
    let unchanged = std::fs::read(records.after()).is_ok_and(|after| after == now);
    let before = std::fs::read(records.before()).ok();
    match before {
        Some(before) if unchanged => write_atomic(&master_cf, &before, mode_of(&master_cf))?,
        _ => {
            eprintln!(
                "rqmgrctl: warning: {} changed since rqmgrctl enable; restoring only the {SERVICE} entry",
                master_cf.display()
            );
            inst.postconf(&["-M", &format!("{SERVICE}={entry}")])?;
        }
    }
    for f in [records.entry(), records.before(), records.after()] {
        let _ = std::fs::remove_file(f);
    }
    let _ = std::fs::remove_dir(&records.dir);
    say!("{}: {SERVICE} entry restored: {entry}", master_cf.display());
    take_effect(inst, &old_program)
}

/// Prints whether master.cf runs rqmgr and the entry, then what a running
/// rqmgr says of its active queue.
pub(crate) fn status(inst: &Instance, json: bool) -> Result<(), String> {
    let command = current_command(inst)?;
    let enabled = program_of(&command) == RQMGR;
    let entry = inst.postconf(&["-M", SERVICE])?;
    if json {
        let live = crate::client::get(inst, "/status")
            .ok()
            .and_then(|b| serde_json::from_str::<serde_json::Value>(&b).ok());
        let v = serde_json::json!({
            "enabled": enabled,
            "master_cf_entry": entry.trim_end(),
            "rqmgr": live,
        });
        say!("{v}");
        return Ok(());
    }
    say!("{}", if enabled { "enabled" } else { "disabled" });
    say!("{}", entry.trim_end());
    // rqmgr may also run under the name qmgr (a copy, as in tests): ask
    // whatever answers on the socket.
    if let Err(e) = crate::show::show(inst, &crate::show::View::Status, false) {
        if enabled {
            say!("({e})");
        }
    }
    Ok(())
}

/// Reloads a running Postfix and waits for the new queue manager; a
/// stopped one takes the change at its next start.
fn take_effect(inst: &Instance, program: &str) -> Result<(), String> {
    let Some(master) = inst.master_pid() else {
        say!("Postfix is not running: the change takes effect when it starts");
        return Ok(());
    };
    inst.reload()?;
    // master starts the queue manager on its first wake-up call; ask for
    // it now rather than at the next timer.
    let _ = Command::new("postkick")
        .arg("-c")
        .arg(&inst.config_dir)
        .args(["public", "qmgr", "I"])
        .output();
    let pid = inst.wait_for_child(master, program)?;
    if program == RQMGR {
        answered(inst, pid)?;
        say!("Postfix reloaded: rqmgr runs as pid {pid} and answers on its admin socket");
    } else {
        say!("Postfix reloaded: {program} runs as pid {pid}");
    }
    Ok(())
}

/// Waits until rqmgr (pid `pid`) answers `/status` on its admin socket,
/// unless the socket is turned off.
fn answered(inst: &Instance, pid: i32) -> Result<(), String> {
    if inst.admin_socket().is_none() {
        return Ok(());
    }
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    loop {
        match crate::client::get(inst, "/status") {
            Ok(_) => return Ok(()),
            Err(e) if std::time::Instant::now() >= deadline => {
                return Err(format!("rqmgr (pid {pid}) runs but does not answer: {e}"))
            }
            Err(_) => std::thread::sleep(std::time::Duration::from_millis(100)),
        }
    }
}

/// The qmgr service's command and arguments, as postconf shows them.
fn current_command(inst: &Instance) -> Result<String, String> {
    let out = inst.postconf(&["-F", &format!("{SERVICE}/command")])?;
    let value = out
        .lines()
        .next()
        .and_then(|l| l.split_once(" = "))
        .map(|(_, v)| v.trim().to_owned());
    value.ok_or_else(|| format!("master.cf has no {SERVICE} service"))
}

/// The program a command field runs.
fn program_of(command: &str) -> &str {
    command.split_whitespace().next().unwrap_or("")
}

/// The command field that runs rqmgr in the role of `command`'s program.
fn rqmgr_command(command: &str) -> Result<String, String> {
    let (program, args) = command
        .trim()
        .split_once(char::is_whitespace)
        .map_or((command.trim(), ""), |(p, a)| (p, a.trim()));
    let mut new = match program {
        "qmgr" => RQMGR.to_owned(),
        "oqmgr" => format!("{RQMGR} -o rqmgr_scheduler=oqmgr"),
        other => {
            return Err(format!(
                "the {SERVICE} service runs {other:?}, not qmgr or oqmgr: not switching it"
            ))
        }
    };
    if !args.is_empty() {
        new.push(' ');
        new.push_str(args);
    }
    Ok(new)
}

/// The program of a master.cf entry as `postconf -M` prints it: the
/// eighth field.
fn entry_program(entry: &str) -> Option<&str> {
    entry.split_whitespace().nth(7)
}

fn read(path: &Path) -> Result<Vec<u8>, String> {
    std::fs::read(path).map_err(|e| format!("read {}: {e}", path.display()))
}

fn mode_of(path: &Path) -> u32 {
    std::fs::metadata(path).map_or(0o644, |m| m.permissions().mode() & 0o7777)
}

/// Replaces `path` with `bytes` atomically: a temporary file beside it,
/// fsync'ed, renamed over it, and the directory fsync'ed.
fn write_atomic(path: &Path, bytes: &[u8], mode: u32) -> Result<(), String> {
    let dir = path.parent().unwrap_or(Path::new("."));
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy())
        .unwrap_or_default();
    let tmp = dir.join(format!(".{name}.rqmgrctl.{}", std::process::id()));
    let fail = |what: &str, e: std::io::Error| format!("{what} {}: {e}", tmp.display());
    let mut f = std::fs::File::create(&tmp).map_err(|e| fail("create", e))?;
    f.write_all(bytes).map_err(|e| fail("write", e))?;
    f.set_permissions(std::fs::Permissions::from_mode(mode))
        .map_err(|e| fail("chmod", e))?;
    f.sync_all().map_err(|e| fail("fsync", e))?;
    drop(f);
    if let Err(e) = std::fs::rename(&tmp, path) {
        let _ = std::fs::remove_file(&tmp);
        return Err(format!("rename to {}: {e}", path.display()));
    }
    if let Ok(d) = std::fs::File::open(dir) {
        let _ = d.sync_all();
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn qmgr_and_oqmgr_become_rqmgr_in_their_role() {
        assert_eq!(rqmgr_command("qmgr").unwrap(), "rqmgr");
        assert_eq!(
            rqmgr_command("oqmgr").unwrap(),
            "rqmgr -o rqmgr_scheduler=oqmgr"
        );
        assert_eq!(
            rqmgr_command("qmgr -o qmgr_message_active_limit=100").unwrap(),
            "rqmgr -o qmgr_message_active_limit=100"
        );
        assert_eq!(
            rqmgr_command("oqmgr -v").unwrap(),
            "rqmgr -o rqmgr_scheduler=oqmgr -v"
        );
        assert!(rqmgr_command("local").is_err());
    }

    #[test]
    fn the_program_of_an_entry_is_its_eighth_field() {
        let entry = "qmgr       unix  n       -       n       300     1       oqmgr -v";
        assert_eq!(entry_program(entry), Some("oqmgr"));
        assert_eq!(program_of("rqmgr -o rqmgr_scheduler=oqmgr"), "rqmgr");
        assert_eq!(entry_program("qmgr unix n"), None);
    }

    #[test]
    fn atomic_writes_replace_the_file_with_its_mode() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("master.cf");
        std::fs::write(&path, b"old").unwrap();
        write_atomic(&path, b"new\n", 0o644).unwrap();
        assert_eq!(std::fs::read(&path).unwrap(), b"new\n");
        assert_eq!(mode_of(&path), 0o644);
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 1);
    }
}
