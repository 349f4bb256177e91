//! One process per data dir: an exclusive `flock(2)` on `DATA_DIR/lock`, taken before anything in
//! the dir is read. Held by the open file, it goes with the process however that ends: a
//! `kill -9` leaves no stale lock. The file holds the holder's pid, only for the message a second
//! process gets.

use std::fs::{File, OpenOptions, TryLockError};
use std::io::{Read, Seek, SeekFrom, Write};
use std::path::Path;

/// The lock file's name inside the data dir.
pub const LOCK_FILE: &str = "lock";

/// The data dir of a file at `path`: the nearest directory above it holding a server's lock.
pub fn data_dir_of(path: &Path) -> Option<&Path> {
    path.ancestors()
        .skip(1)
        .find(|d| d.join(LOCK_FILE).exists())
}

/// Takes the lock of `dir` (which must exist), held until the file is dropped, and writes our pid
/// into it. Fails when another process holds it (naming its pid) or on an I/O error.
pub fn lock(dir: &Path) -> Result<File, String> {
    let path = dir.join(LOCK_FILE);
    let io = |e: std::io::Error| format!("cannot lock {}: {e}", path.display());
    let mut file = OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .open(&path)
        .map_err(io)?;
    match file.try_lock() {
        Ok(()) => {}
        Err(TryLockError::Error(e)) => return Err(io(e)),
        Err(TryLockError::WouldBlock) => {
            let mut text = String::new();
            let pid: Option<u32> = file
                .read_to_string(&mut text)
                .ok()
                .and_then(|_| text.trim().parse().ok());
            let pid = pid.map_or(String::new(), |pid| format!(" (pid {pid})"));
            return Err(format!(
                "the data dir {} is in use by another conductor-metrics{pid}; \
                 stop it or choose another --data-dir",
                dir.display()
            ));
        }
    }
    let pid = format!("{}\n", std::process::id());
    let written = file
        .set_len(0)
        .and_then(|()| file.seek(SeekFrom::Start(0)))
        .and_then(|_| file.write_all(pid.as_bytes()));
    written.map_err(io)?;
    Ok(file)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::TempDir;

    #[test]
    fn a_second_lock_is_refused_with_the_holders_pid_until_the_first_goes() {
        let dir = TempDir::new("lock");
        let held = lock(&dir).unwrap();
        let text = std::fs::read_to_string(dir.join(LOCK_FILE)).unwrap();
        assert_eq!(text, format!("{}\n", std::process::id()));
        let err = lock(&dir).unwrap_err();
        let shown = err;
        let pid = format!("(pid {})", std::process::id());
        assert!(
            shown.contains(&pid) && shown.contains("--data-dir"),
            "{shown}"
        );
        drop(held);
        let again = lock(&dir).unwrap();
        drop(again);
    }
}
