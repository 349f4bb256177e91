//! The event seq high-water mark, so a restart never reuses a seq: one decimal number above every
//! seq handed out, written a block ahead and synced before the block is used, so a crash skips at
//! most one block. It is replaced whole (temp file, sync, rename, sync the directory), so a crash
//! mid-write leaves the old number or the new one.

use std::fs::{self, File};
use std::io::{ErrorKind, Write};
use std::path::{Path, PathBuf};

use crate::error::Error;

const SEQ_FILE: &str = "events.seq";

/// How many seqs each write of the file reserves ahead.
pub const SEQ_RESERVE: u64 = 10_000;

/// The sequence file of one data dir. Used under the hub's lock only.
#[derive(Debug)]
pub(super) struct SeqFile {
    dir: PathBuf,
    path: PathBuf,
}

impl SeqFile {
    /// Opens the file under `dir`, with the first seq this process may use.
    pub(super) fn open(dir: &Path) -> Result<(SeqFile, u64), Error> {
        let path = dir.join(SEQ_FILE);
        let shown = path.display();
        let first = match fs::read_to_string(&path) {
            Err(e) if e.kind() == ErrorKind::NotFound => Ok(1),
            Err(e) => Err(format!("cannot read event sequence file {shown}: {e}")),
            Ok(text) => match text.trim().parse::<u64>() {
                // Seqs never wrap: a mark with no room for one more block ends the sequence.
                Ok(n) if n > u64::MAX - 2 * SEQ_RESERVE => Err(format!(
                    "event sequence file {shown} holds {n}, too near the largest sequence \
                     number ({}) to reserve another block; refusing to start rather than wrap",
                    u64::MAX
                )),
                Ok(n) if n >= 1 => Ok(n),
                _ => Err(format!(
                    "event sequence file {shown} holds {text:?}, not a sequence number"
                )),
            },
        };
        let dir = dir.to_path_buf();
        Ok((SeqFile { dir, path }, first.map_err(Error::Storage)?))
    }

    /// Durably records that every seq below `limit` may have been used.
    pub(super) fn reserve(&self, limit: u64) -> Result<(), Error> {
        let tmp = self.dir.join(format!("{SEQ_FILE}.tmp"));
        let write = || -> std::io::Result<()> {
            let mut f = File::create(&tmp)?;
            f.write_all(format!("{limit}\n").as_bytes())?;
            f.sync_all()?;
            fs::rename(&tmp, &self.path)?;
            // The rename is only durable once the directory entry is.
            File::open(&self.dir)?.sync_all()
        };
        let path = self.path.display();
        let message = |e| format!("cannot write event sequence file {path}: {e}");
        write().map_err(|e| Error::Storage(message(e)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::TempDir;

    fn temp_dir(name: &str) -> TempDir {
        TempDir::new(&format!("events-seq-{name}"))
    }

    #[test]
    fn a_new_dir_starts_at_one_and_a_reservation_is_read_back() {
        let dir = temp_dir("new");
        let (file, first) = SeqFile::open(&dir).unwrap();
        assert_eq!(first, 1);
        file.reserve(10_001).unwrap();
        let (_, first) = SeqFile::open(&dir).unwrap();
        assert_eq!(first, 10_001);
        assert_eq!(fs::read_to_string(dir.join(SEQ_FILE)).unwrap(), "10001\n");
    }

    #[test]
    fn a_mark_at_the_end_of_the_sequence_refuses_to_start_rather_than_wrap() {
        let dir = temp_dir("exhausted");
        for n in [u64::MAX, u64::MAX - SEQ_RESERVE] {
            fs::write(dir.join(SEQ_FILE), format!("{n}\n")).unwrap();
            let e = SeqFile::open(&dir).unwrap_err();
            assert!(
                e.to_string().contains("refusing to start rather than wrap"),
                "{e}"
            );
        }
        let last = u64::MAX - 2 * SEQ_RESERVE;
        fs::write(dir.join(SEQ_FILE), format!("{last}\n")).unwrap();
        assert_eq!(SeqFile::open(&dir).unwrap().1, last);
    }

    #[test]
    fn a_corrupt_file_is_refused() {
        let dir = temp_dir("corrupt");
        fs::write(dir.join(SEQ_FILE), "12x\n").unwrap();
        let e = SeqFile::open(&dir).unwrap_err();
        assert!(
            e.to_string().contains("\"12x\\n\", not a sequence number"),
            "{e}"
        );
        fs::write(dir.join(SEQ_FILE), "0\n").unwrap();
        let e = SeqFile::open(&dir).unwrap_err();
        assert!(e.to_string().contains("not a sequence number"), "{e}");
    }
}
