//! In-place queue file updates, as Postfix's queue manager and agents make them.
//!
//! Job: mark a recipient done (`R` → `D`), kill a record (type → `K`) and
//! rewrite the `W` warning time, all without moving any other byte of the
//! file.
//!
//! Invariants: each update overwrites either one type byte or one
//! same-size record, so every record offset in the file stays valid and a
//! concurrent reader sees either the old or the new byte. Writes use
//! positional I/O and do not move the file position.
//!
//! Failure: operating-system errors are returned as they are. Requests
//! that would corrupt the file (offset 0, a `W` value that does not fit
//! the 15-character field, a target that is not a `W` record) fail with
//! `InvalidInput`/`InvalidData` before anything is written.
//!
//! Limits: nothing is fsync'ed, as Postfix does not fsync these updates
//! either; the caller decides about durability.

use std::fs::File;
use std::io;
use std::os::unix::fs::FileExt;

use crate::record::rec_type;

fn overwrite_type(file: &File, offset: u64, new_type: u8) -> io::Result<()> {
    if offset == 0 {
        // Offset 0 is the size record; Postfix treats this as a caller bug.
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            "refusing to overwrite the type of the record at offset 0",
        ));
    }
    file.write_all_at(&[new_type], offset)
}

/// Marks the recipient whose `R` record is at `rcpt_offset` as done.
pub fn mark_done(file: &File, rcpt_offset: u64) -> io::Result<()> {
    overwrite_type(file, rcpt_offset, rec_type::DONE)
}

/// Turns the record at `offset` into a killed (ignored) record.
pub fn kill_record(file: &File, offset: u64) -> io::Result<()> {
    overwrite_type(file, offset, rec_type::KILL)
}

/// The `W` record as Postfix writes it: type, length 15, `%15ld`.
fn warn_record(time: i64) -> io::Result<Vec<u8>> {
    let text = format!("{time:15}");
    if text.len() != rec_type::FIXED_WIDTH {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            "warning time does not fit the 15-character field",
        ));
    }
    let mut rec = Vec::with_capacity(2 + rec_type::FIXED_WIDTH);
    crate::record::put_record(&mut rec, rec_type::WARN, text.as_bytes());
    Ok(rec)
}

/// Rewrites the `W` record at `w_offset` to say `time` (qmgr writes -1
/// after sending a delay warning).
pub fn set_warn_time(file: &File, w_offset: u64, time: i64) -> io::Result<()> {
    let rec = warn_record(time)?;
    let mut head = [0u8; 2];
    file.read_exact_at(&mut head, w_offset)?;
    if head != rec[..2] {
        return Err(io::Error::new(
            io::ErrorKind::InvalidData,
            "no 15-byte W record at the given offset",
        ));
    }
    file.write_all_at(&rec, w_offset)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::fs::OpenOptions;
    use std::io::Write;

    #[test]
    fn in_place_updates() -> io::Result<()> {
        let tmp = tempfile::tempdir()?;
        let path = tmp.path().join("f");
        let mut bytes = Vec::new();
        crate::record::put_record(&mut bytes, b'C', b"x");
        let w_off = bytes.len() as u64;
        bytes.extend(warn_record(1_800_000_000)?);
        let r_off = bytes.len() as u64;
        crate::record::put_record(&mut bytes, b'R', b"a@b");
        File::create(&path)?.write_all(&bytes)?;
        let f = OpenOptions::new().read(true).write(true).open(&path)?;
        mark_done(&f, r_off)?;
        set_warn_time(&f, w_off, -1)?;
        assert!(set_warn_time(&f, r_off, -1).is_err());
        assert!(kill_record(&f, 0).is_err());
        assert!(warn_record(i64::MIN).is_err());
        let got = std::fs::read(&path)?;
        assert_eq!(
            &got[w_off as usize..r_off as usize],
            b"W\x0f             -1"
        );
        assert_eq!(got[r_off as usize], b'D');
        kill_record(&f, w_off)?;
        assert_eq!(std::fs::read(&path)?[w_off as usize], b'K');
        Ok(())
    }
}
