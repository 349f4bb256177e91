//! One process per data dir: an exclusive lock on `DATA_DIR/lock`, taken
//! before anything in the dir is read.
//!
//! The lock is `flock(2)` (std's [`File::try_lock`]), held by the open file:
//! it goes with the process however that ends, so a `kill -9` leaves no
//! stale lock behind. The file holds the holder's pid, for the message a
//! second process gets; the pid is only informative, the lock decides.

use std::fmt;
use std::fs::{File, OpenOptions, TryLockError};
use std::io::{Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};

/// The lock file's name inside the data dir.
pub const LOCK_FILE: &str = "lock";

/// The data dir a file at `path` belongs to: the nearest directory above it
/// holding a server's lock, for errors to name.
pub fn data_dir_of(path: &std::path::Path) -> Option<&std::path::Path> {
    path.ancestors()
        .skip(1)
        .find(|d| d.join(LOCK_FILE).exists())
}

/// The data dir's lock, held until dropped. Safe to move across threads.
#[derive(Debug)]
pub struct DirLock {
    _file: File,
}

/// Why the lock was not taken.
#[derive(Debug)]
pub enum LockError {
    /// Another process holds it; its pid, when the file names one.
    Held {
        /// The data dir.
        dir: PathBuf,
        /// The holder's pid, as it wrote it.
        pid: Option<u32>,
    },
    /// The lock file could not be opened, locked or written.
    Io {
        /// The lock file.
        path: PathBuf,
        /// What failed.
        error: std::io::Error,
    },
}

impl fmt::Display for LockError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            LockError::Held { dir, pid } => {
                write!(
                    f,
                    "the data dir {} is in use by another conductor-metrics",
                    dir.display()
                )?;
                if let Some(pid) = pid {
                    write!(f, " (pid {pid})")?;
                }
                f.write_str("; stop it or choose another --data-dir")
            }
            LockError::Io { path, error } => {
                write!(f, "cannot lock {}: {error}", path.display())
            }
        }
    }
}

impl std::error::Error for LockError {}

/// Takes the lock of `dir` (which must exist) and writes our pid into it.
///
/// # Errors
///
/// [`LockError::Held`] when another process holds it, [`LockError::Io`]
/// when the file cannot be opened, locked or written.
pub fn lock(dir: &Path) -> Result<DirLock, LockError> {
    let path = dir.join(LOCK_FILE);
    let io = |error| LockError::Io {
        path: path.clone(),
        error,
    };
    let mut file = OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .open(&path)
        .map_err(io)?;
    match file.try_lock() {
        Ok(()) => {}
        Err(TryLockError::WouldBlock) => {
            let mut text = String::new();
            let pid = file
                .read_to_string(&mut text)
                .ok()
                .and_then(|_| text.trim().parse().ok());
            return Err(LockError::Held {
                dir: dir.to_path_buf(),
                pid,
            });
        }
        Err(TryLockError::Error(e)) => return Err(io(e)),
    }
    let pid = format!("{}\n", std::process::id());
    let written = file
        .set_len(0)
        .and_then(|()| file.seek(SeekFrom::Start(0)))
        .and_then(|_| file.write_all(pid.as_bytes()));
    written.map_err(io)?;
    Ok(DirLock { _file: file })
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
        let shown = err.to_string();
        let pid = format!("(pid {})", std::process::id());
        assert!(
            shown.contains(&pid) && shown.contains("--data-dir"),
            "{shown}"
        );
        drop(held);
        let again = lock(&dir).unwrap();
        drop(again);
    }

    /// Checked when the tests compile: the lock can move to another thread.
    const _: () = {
        const fn assert_send<T: Send>() {}
        assert_send::<DirLock>();
    };
}
