//! A crash-only, append-only journal of records as JSON Lines (so `jq` reads it); one writer,
//! its committer ([`crate::commit_queue`]). An append returns once synced (`fdatasync`); a crash
//! can only leave a torn last line, which an open cuts off. Each line ends with
//! `"crc32c":"xxxxxxxx"`, the CRC-32C of the record as given, so a flipped byte that still parses
//! is caught: an open refuses a damaged line (or one without, after one with) naming file, line,
//! offset and `conductor-metrics repair`. Lines from before checksums are taken if JSON.

use std::fmt;
use std::fs::{self, File, OpenOptions};
use std::io::{self, BufRead, BufReader, Write};
use std::path::{Path, PathBuf};

/// A journal file, with one writer. Open each once: a second `Journal` would roll back its bytes.
pub struct Journal {
    path: PathBuf,
    file: File,
    len: u64,
    /// Set when a failed append could not be rolled back: every later append gets this error.
    poisoned: Option<Error>,
}

/// How much of a journal a start reads at once: below glibc's mmap threshold, as a freed
/// 1 MiB buffer raised it and left 1 MiB resident for the life of an idle process.
const READ_CHUNK: usize = 64 << 10;

/// The member each record line ends with, before the checksum's eight hex digits and `"}`.
const CRC_MEMBER: &[u8] = b",\"crc32c\":\"";

/// The bytes a checksum adds in place of a record's closing brace.
const CRC_SUFFIX_LEN: usize = CRC_MEMBER.len() + 8 + 2;

/// Appends `record` (a JSON object with at least one member) as one line with its checksum.
pub(crate) fn push_line(out: &mut Vec<u8>, record: &[u8]) {
    out.extend_from_slice(&record[..record.len() - 1]);
    push_crc(out, crate::crc32c::checksum(record));
}

/// Appends the checksum member and the line's end, `"}` and the newline.
fn push_crc(out: &mut Vec<u8>, crc: u32) {
    out.extend_from_slice(CRC_MEMBER);
    for shift in (0..8).rev() {
        out.push(b"0123456789abcdef"[(crc >> (shift * 4)) as usize & 0xf]);
    }
    out.extend_from_slice(b"\"}\n");
}

/// Writes `lines` as a snapshot at `path` in the journal's line format, then `{"end":N}` (telling
/// a whole one from one cut short); returns its bytes. Crash-only: `.tmp` synced, renamed, dir
/// synced. Lines go straight into the file's buffer, so large records need no more memory.
pub fn write_snapshot<P: Printable>(
    path: &Path,
    lines: impl IntoIterator<Item = P>,
) -> io::Result<u64> {
    let tmp = path.with_extension("tmp");
    let write = || -> io::Result<u64> {
        let mut out = Checksummed {
            file: io::BufWriter::with_capacity(1 << 16, File::create(&tmp)?),
            crc: crate::crc32c::START,
            held: None,
        };
        let mut count = 0u64;
        for line in lines {
            line.print(&mut out)?;
            out.end_line()?;
            count += 1;
        }
        write!(out, "{{\"end\":{count}}}")?;
        out.end_line()?;
        let file = out
            .file
            .into_inner()
            .map_err(io::IntoInnerError::into_error)?;
        file.sync_all()?;
        let written = file.metadata()?.len();
        drop(file);
        #[cfg(test)]
        faults::halt(path, faults::Stage::BeforeRename);
        fs::rename(&tmp, path)?;
        File::open(path.parent().unwrap_or(Path::new(".")))?.sync_all()?;
        Ok(written)
    };
    let written = write();
    if written.is_err() {
        // A failed write (a full disk) leaves no half file behind.
        let _ = fs::remove_file(&tmp);
    }
    written
}

/// Reads the snapshot at `path`, handing each line but the end line to `each`; false when
/// there is none. A damaged or refused line points at a backup, not at `repair`: what a
/// snapshot holds is in no journal any more.
pub fn read_snapshot(
    path: &Path,
    mut each: impl FnMut(serde_json::Value) -> Result<(), String>,
) -> Result<bool, String> {
    if !path.is_file() {
        return Ok(false);
    }
    let (mut lines, mut ended) = (0u64, false);
    Journal::open_each(path, Tail::Cut, |record| {
        if ended {
            return Err("a line after the end line".into());
        }
        let v: serde_json::Value = serde_json::from_slice(record).map_err(|e| e.to_string())?;
        if v["end"].as_u64() == Some(lines) {
            ended = true;
            return Ok(());
        }
        lines += 1;
        each(v)
    })
    .map_err(|e| e.unrepairable().to_string())?;
    if !ended {
        return Err(format!(
            "snapshot {}: cut short after {lines} lines",
            path.display()
        ));
    }
    Ok(true)
}

/// A line [`write_snapshot`] writes: one JSON object with at least one member.
pub trait Printable {
    /// Prints the record into `out`, on one line.
    fn print(&self, out: &mut dyn Write) -> io::Result<()>;
}

impl Printable for serde_json::Value {
    fn print(&self, out: &mut dyn Write) -> io::Result<()> {
        if self.as_object().is_none_or(|o| o.is_empty()) {
            return Err(invalid("not a JSON object with members"));
        }
        Ok(serde_json::to_writer(out, self)?)
    }
}

fn invalid(why: &str) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidInput, why)
}

/// Writes journal lines, checksumming, holding back each last byte: the checksum goes before it.
struct Checksummed {
    file: io::BufWriter<File>,
    crc: u32,
    held: Option<u8>,
}

impl Write for Checksummed {
    fn write(&mut self, bytes: &[u8]) -> io::Result<usize> {
        let Some((&last, body)) = bytes.split_last() else {
            return Ok(0);
        };
        if let Some(b) = self.held.take() {
            self.file.write_all(&[b])?;
        }
        self.file.write_all(body)?;
        self.crc = crate::crc32c::extend(self.crc, bytes);
        self.held = Some(last);
        Ok(bytes.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        self.file.flush()
    }
}

impl Checksummed {
    fn end_line(&mut self) -> io::Result<()> {
        if self.held.take() != Some(b'}') {
            return Err(invalid("a record is not an object"));
        }
        let crc = crate::crc32c::finish(std::mem::replace(&mut self.crc, crate::crc32c::START));
        let mut tail = Vec::with_capacity(CRC_SUFFIX_LEN + 1);
        push_crc(&mut tail, crc);
        self.file.write_all(&tail)
    }
}

/// Whether a journal takes `record`: a one-line JSON object with at least one member.
fn is_record(record: &[u8]) -> bool {
    record.len() > 2
        && record[0] == b'{'
        && record[record.len() - 1] == b'}'
        && !record.contains(&b'\n')
}

/// One complete line's record, or why it is damaged. `checked`: a checksummed line came yet.
fn check_line(line: &[u8], checked: &mut bool) -> Result<Vec<u8>, &'static str> {
    let n = line.len();
    let has_crc = n > CRC_SUFFIX_LEN
        && &line[n - CRC_SUFFIX_LEN..n - 10] == CRC_MEMBER
        && &line[n - 2..] == b"\"}";
    if !has_crc && *checked {
        return Err("it has no checksum, unlike the lines before it");
    }
    if !has_crc {
        // A line from before checksums: taken if it is JSON, as it was then.
        let json = serde_json::from_slice::<serde_json::Value>(line);
        return json.map(|_| line.to_vec()).map_err(|_| "it is not JSON");
    }
    let mismatch = "its checksum does not match";
    let hex = std::str::from_utf8(&line[n - 10..n - 2]).map_err(|_| mismatch)?;
    let crc = u32::from_str_radix(hex, 16).map_err(|_| mismatch)?;
    let mut record = Vec::with_capacity(n - CRC_SUFFIX_LEN + 1);
    record.extend_from_slice(&line[..n - CRC_SUFFIX_LEN]);
    record.push(b'}');
    if crate::crc32c::checksum(&record) != crc {
        return Err(mismatch);
    }
    *checked = true;
    Ok(record)
}

/// One complete line of a journal file, as [`scan`] found it; `line` is 1-based.
#[derive(Debug, PartialEq, Eq)]
pub(crate) struct Scanned<'a> {
    pub(crate) line: u64,
    pub(crate) offset: u64,
    /// Without its `'\n'`.
    pub(crate) bytes: &'a [u8],
    pub(crate) record: Result<Vec<u8>, &'static str>,
}

/// Checks every complete line as an open does, but past damage; also returns the torn length.
pub(crate) fn scan(data: &[u8]) -> (Vec<Scanned<'_>>, usize) {
    let keep = data.iter().rposition(|&b| b == b'\n').map_or(0, |i| i + 1);
    let (mut lines, mut offset, mut checked) = (Vec::new(), 0u64, false);
    let split = data[..keep.saturating_sub(1)].split(|&b| b == b'\n');
    for (i, bytes) in split.filter(|_| keep > 0).enumerate() {
        lines.push(Scanned {
            line: i as u64 + 1,
            offset,
            bytes,
            record: check_line(bytes, &mut checked),
        });
        offset += bytes.len() as u64 + 1;
    }
    (lines, data.len() - keep)
}

/// An open's torn tail: cut (a crash leaves one), or refused in a file that was complete.
#[derive(Clone, Copy, PartialEq, Eq)]
pub(crate) enum Tail {
    Cut,
    Refuse,
}

impl Journal {
    /// Opens or creates the journal at `path` (and its dirs), streaming each record to `each`;
    /// cuts (synced) or refuses a torn tail as `tail` says, returning its bytes. An error from
    /// `each` refuses the open as damage does, naming the file, line and byte offset.
    pub(crate) fn open_each(
        path: &Path,
        tail: Tail,
        mut each: impl FnMut(&[u8]) -> Result<(), String>,
    ) -> Result<(Journal, u64), Error> {
        let fail = |kind, offset, e| Error::new(path, kind, offset, Some(e));
        let damaged = |line, offset, why, remedy| {
            let kind = Kind::Damaged { line, why, remedy };
            Error::new(path, kind, Some(offset), None)
        };
        let parent = path.parent().filter(|d| !d.as_os_str().is_empty());
        if let Some(dir) = parent {
            fs::create_dir_all(dir).map_err(|e| fail(Kind::Io(OPEN), None, e))?;
        }
        let mut options = OpenOptions::new();
        let opened = options.read(true).append(true).create(true).open(path);
        let mut file = opened.map_err(|e| fail(Kind::Io(OPEN), None, e))?;
        let (mut line, mut checked) = (0u64, false);
        let (total, offset) = each_line(&mut file, path, |offset, bytes| {
            line += 1;
            let record = check_line(bytes, &mut checked)
                .map_err(|why| damaged(line, offset, why.to_string(), Remedy::Repair))?;
            each(&record).map_err(|why| {
                let why = format!("it is not a record this version can read ({why})");
                damaged(line, offset, why, Remedy::Newer)
            })
        })?;
        if total == 0 {
            // The file may have just been created; its directory entry must be durable too.
            let dir = File::open(parent.unwrap_or(Path::new("."))).and_then(|d| d.sync_all());
            dir.map_err(|e| fail(Kind::Io(OPEN), None, e))?;
        }
        let torn = total - offset;
        if torn > 0 && tail == Tail::Refuse {
            let why = format!(
                "{torn} bytes after the last whole line, in a file no crash leaves \
                 torn: it was cut or damaged"
            );
            return Err(damaged(line + 1, offset, why, Remedy::Backup));
        }
        if torn > 0 {
            let cut = file.set_len(offset).and_then(|()| file.sync_data());
            cut.map_err(|e| fail(Kind::Io("cannot cut torn tail"), Some(offset), e))?;
        }
        let journal = Journal {
            path: path.to_path_buf(),
            file,
            len: offset,
            poisoned: None,
        };
        Ok((journal, torn))
    }

    /// Appends records in one write and one sync. If one is not a one-line JSON object with a
    /// member, nothing is written (not parsed: its writer built it).
    pub fn append_all(&mut self, records: &[&[u8]]) -> Result<(), Error> {
        if let Some(i) = records.iter().position(|r| !is_record(r)) {
            return Err(Error::new(&self.path, Kind::InvalidRecord(i), None, None));
        }
        if records.is_empty() {
            return Ok(());
        }
        if let Some(poisoned) = &self.poisoned {
            return Err(poisoned.duplicate());
        }
        let mut batch = Vec::new();
        for record in records {
            push_line(&mut batch, record);
        }
        let written = self.write_batch(&batch);
        match &written {
            Ok(()) => self.len += batch.len() as u64,
            Err(error) if matches!(error.kind, Kind::Io(ROLLBACK)) => {
                let mut poisoned = error.duplicate();
                poisoned.kind = Kind::Io("unusable since an append could not be rolled back");
                self.poisoned = Some(poisoned);
            }
            Err(_) => {}
        }
        written
    }

    fn write_batch(&mut self, batch: &[u8]) -> Result<(), Error> {
        let (path, offset) = (&self.path, self.len);
        #[cfg(test)]
        if let Some(e) = faults::take(path) {
            return Err(Error::new(
                path,
                Kind::Io(ROLLED_BACK),
                Some(offset),
                Some(e),
            ));
        }
        if let Err(e) = self.file.write_all(batch) {
            // Roll back so a half-written batch never shows after its callers saw an error.
            let rollback = self
                .file
                .set_len(offset)
                .and_then(|()| self.file.sync_data());
            let (kind, e) = match rollback {
                Ok(()) => (ROLLED_BACK, e),
                Err(r) => (ROLLBACK, io::Error::other(format!("{e}; rollback: {r}"))),
            };
            return Err(Error::new(path, Kind::Io(kind), Some(offset), Some(e)));
        }
        // After a failed fdatasync Linux may drop the dirty pages and report success next time,
        // so nothing on disk can be trusted: poison.
        self.file.sync_data().map_err(|e| {
            let e = io::Error::other(format!("fdatasync failed: {e}"));
            Error::new(path, Kind::Io(ROLLBACK), Some(offset), Some(e))
        })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The length of the durable part: below it a reader never sees a half-written record.
    pub fn durable_len(&self) -> u64 {
        self.len
    }
}

/// Hands each whole line of `file` and its offset to `each`; returns bytes read, end of last line.
fn each_line(
    file: &mut File,
    path: &Path,
    mut each: impl FnMut(u64, &[u8]) -> Result<(), Error>,
) -> Result<(u64, u64), Error> {
    // `read_until` finds newlines with std's word-at-a-time search: a byte loop here was a
    // tenth of a start's time.
    let mut reader = BufReader::with_capacity(READ_CHUNK, file);
    let (mut line, mut offset) = (Vec::new(), 0u64);
    loop {
        line.clear();
        let read = reader.read_until(b'\n', &mut line);
        let n = read.map_err(|e| Error::new(path, Kind::Io("cannot read"), None, Some(e)))?;
        let Some((b'\n', whole)) = line.split_last() else {
            return Ok((offset + n as u64, offset));
        };
        each(offset, whole)?;
        offset += n as u64;
    }
}

const OPEN: &str = "cannot open";
const ROLLED_BACK: &str = "append failed and was rolled back";
/// An append whose failure leaves the file untrusted: the journal is poisoned.
const ROLLBACK: &str = "append failed and could not be rolled back";

/// Error from a journal operation, with the path and, where known, the byte offset.
#[derive(Debug)]
pub struct Error {
    path: PathBuf,
    offset: Option<u64>,
    kind: Kind,
    source: Option<io::Error>,
}

#[derive(Debug, Clone)]
enum Kind {
    Io(&'static str),
    InvalidRecord(usize),
    Damaged {
        line: u64,
        why: String,
        remedy: Remedy,
    },
}

/// A damaged line's remedy: a backup where moving the line aside would lose what no journal holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Remedy {
    Repair,
    Newer,
    Backup,
}

impl Error {
    fn new(path: &Path, kind: Kind, offset: Option<u64>, source: Option<io::Error>) -> Error {
        Error {
            path: path.to_path_buf(),
            offset,
            kind,
            source,
        }
    }

    /// A copy for another caller of the same failed batch (`io::Error` is not `Clone`).
    pub(crate) fn duplicate(&self) -> Error {
        let copy = |e: &io::Error| io::Error::new(e.kind(), e.to_string());
        Error::new(
            &self.path,
            self.kind.clone(),
            self.offset,
            self.source.as_ref().map(copy),
        )
    }

    /// The error for a record queued after the journal's committer stopped.
    pub(crate) fn closed(path: &Path) -> Error {
        Error::new(path, Kind::Io("its committer has stopped"), None, None)
    }

    /// The same error for a snapshot, whose damaged line only a backup mends.
    pub fn unrepairable(mut self) -> Error {
        if let Kind::Damaged { remedy, .. } = &mut self.kind {
            if *remedy == Remedy::Repair {
                *remedy = Remedy::Backup;
            }
        }
        self
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if let Kind::Damaged { line, why, remedy } = &self.kind {
            let offset = self.offset.unwrap_or(0);
            write!(
                f,
                "journal {}: line {line} (byte {offset}) is damaged: {why}",
                self.path.display()
            )?;
            return match remedy {
                Remedy::Repair => {
                    let how = match crate::lock::data_dir_of(&self.path) {
                        Some(dir) => format!(" --data-dir {}`", dir.display()),
                        // A ledger in AGENT_BUDGET_DIR, outside the data dir.
                        None => "`, with the server's --data-dir and AGENT_BUDGET_DIR,".into(),
                    };
                    let path = self.path.display();
                    let aside = format!("moves damaged lines aside into {path}.corrupt");
                    write!(f, "; `conductor-metrics repair{how} {aside}")
                }
                Remedy::Newer => f.write_str("; was it written by a newer conductor-metrics?"),
                Remedy::Backup => f.write_str(
                    "; `repair` cannot mend it, as what it holds is in no journal any more: \
                     restore the data dir from a backup",
                ),
            };
        }
        write!(f, "journal {}", self.path.display())?;
        if let Some(offset) = self.offset {
            write!(f, " at byte {offset}")?;
        }
        match self.kind {
            Kind::Io(what) => write!(f, ": {what}")?,
            Kind::InvalidRecord(i) => write!(f, ": record {i} is not a one-line JSON object")?,
            Kind::Damaged { .. } => {}
        }
        match &self.source {
            Some(e) => write!(f, ": {e}"),
            None => Ok(()),
        }
    }
}

impl std::error::Error for Error {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        self.source.as_ref().map(|e| e as _)
    }
}

/// The test-only ways in: a whole replay, one append, and what an error is.
#[cfg(test)]
mod test_api {
    use super::*;

    /// What [`Journal::open`] found on disk.
    #[derive(Debug, Clone, PartialEq, Eq)]
    pub struct Replay {
        /// Complete records in file order, as they were appended (without their checksum).
        pub records: Vec<Vec<u8>>,
        /// Bytes of torn tail that were cut off (0 if none).
        pub truncated_bytes: u64,
    }

    impl Journal {
        /// Opens or creates the journal at `path` like [`Journal::open_each`], and returns its records.
        pub fn open(path: impl AsRef<Path>) -> Result<(Journal, Replay), Error> {
            let mut records = Vec::new();
            let (journal, truncated_bytes) =
                Journal::open_each(path.as_ref(), Tail::Cut, |record| {
                    records.push(record.to_vec());
                    Ok(())
                })?;
            let replay = Replay {
                records,
                truncated_bytes,
            };
            Ok((journal, replay))
        }

        /// Appends one record and returns once it is durable.
        pub fn append(&mut self, record: &[u8]) -> Result<(), Error> {
            self.append_all(&[record])
        }
    }

    impl Error {
        /// The byte offset in the file where the failed operation started, where known.
        pub fn offset(&self) -> Option<u64> {
            self.offset
        }

        /// Whether the error is a rejected record (not a one-line JSON object); nothing was written.
        pub fn is_invalid_record(&self) -> bool {
            matches!(self.kind, Kind::InvalidRecord(_))
        }

        /// Whether the file holds a damaged line, so the journal was not opened.
        pub fn is_damaged(&self) -> bool {
            matches!(self.kind, Kind::Damaged { .. })
        }
    }
}

#[cfg(test)]
pub(crate) mod faults {
    //! Write failures on demand, for tests of what a failed write leaves behind: a full disk
    //! cannot be had without privileges, and tests of different stores run side by side in one
    //! process, so each arms only the journals under its own directory.

    use std::io;
    use std::path::{Path, PathBuf};
    use std::sync::Mutex;

    /// A point in writing a snapshot where a test can hold the writer, as
    /// if the process were killed there: what is on disk meanwhile is what
    /// a kill at that point leaves.
    #[derive(Clone, Copy, Debug, PartialEq, Eq)]
    pub(crate) enum Stage {
        /// The new snapshot is whole in its `.tmp` file, not yet renamed.
        BeforeRename,
        /// The new snapshot is in place; the segments it covers are not
        /// deleted yet.
        BeforeDrop,
    }

    /// Directories whose snapshot writers stop at a stage, and whether one
    /// is stopped there now.
    static HALTS: Mutex<Vec<(PathBuf, Stage, bool)>> = Mutex::new(Vec::new());
    static MOVED: std::sync::Condvar = std::sync::Condvar::new();

    /// Makes the next snapshot written under `dir` stop at `stage` until
    /// [`resume`].
    pub(crate) fn halt_at(dir: &Path, stage: Stage) {
        let mut halts = HALTS.lock().unwrap_or_else(|e| e.into_inner());
        halts.push((dir.to_path_buf(), stage, false));
    }

    /// Whether a writer under `dir` is stopped at its stage.
    pub(crate) fn halted(dir: &Path) -> bool {
        let halts = HALTS.lock().unwrap_or_else(|e| e.into_inner());
        halts.iter().any(|(d, _, waiting)| d == dir && *waiting)
    }

    /// Lets the writer under `dir` go on.
    pub(crate) fn resume(dir: &Path) {
        let mut halts = HALTS.lock().unwrap_or_else(|e| e.into_inner());
        halts.retain(|(d, ..)| d != dir);
        MOVED.notify_all();
    }

    /// Where a snapshot writer of `path` passes `stage`: waits while a
    /// halt there is armed for a directory holding it.
    pub(crate) fn halt(path: &Path, stage: Stage) {
        let mut halts = HALTS.lock().unwrap_or_else(|e| e.into_inner());
        let armed = |h: &[(PathBuf, Stage, bool)]| {
            h.iter()
                .position(|(d, s, _)| path.starts_with(d) && *s == stage)
        };
        let Some(i) = armed(&halts) else {
            return;
        };
        halts[i].2 = true;
        while armed(&halts).is_some() {
            halts = MOVED.wait(halts).unwrap_or_else(|e| e.into_inner());
        }
    }

    /// Directories whose journals fail writes: after `skip` more
    /// successful writes, the next `fail` writes fail.
    static ARMED: Mutex<Vec<(PathBuf, u64, u64)>> = Mutex::new(Vec::new());

    /// Makes writes of journals under `dir` fail as a full disk would:
    /// `skip` more succeed, then `fail` fail, then all succeed again.
    pub(crate) fn fail_writes(dir: &Path, skip: u64, fail: u64) {
        let mut armed = ARMED.lock().unwrap_or_else(|e| e.into_inner());
        armed.retain(|(d, ..)| d != dir);
        armed.push((dir.to_path_buf(), skip, fail));
    }

    /// How many writes under `dir` are still armed to fail.
    pub(crate) fn armed(dir: &Path) -> u64 {
        let armed = ARMED.lock().unwrap_or_else(|e| e.into_inner());
        armed.iter().find(|(d, ..)| d == dir).map_or(0, |a| a.2)
    }

    /// The error for this write of `path`, if one is armed.
    pub(super) fn take(path: &Path) -> Option<io::Error> {
        let mut armed = ARMED.lock().unwrap_or_else(|e| e.into_inner());
        let (_, skip, fail) = armed.iter_mut().find(|(d, ..)| path.starts_with(d))?;
        if *skip > 0 {
            *skip -= 1;
            return None;
        }
        if *fail == 0 {
            return None;
        }
        *fail -= 1;
        Some(io::Error::from_raw_os_error(28))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicU64, Ordering};

    /// A fresh path two levels below a unique temp dir, so `open` must create the parents.
    fn temp_path(name: &str) -> PathBuf {
        static N: AtomicU64 = AtomicU64::new(0);
        let n = N.fetch_add(1, Ordering::Relaxed);
        let dir = std::env::temp_dir().join(format!("journal-{name}-{}-{n}", std::process::id()));
        dir.join("sub").join("j.jsonl")
    }

    fn cleanup(path: &Path) {
        fs::remove_dir_all(path.parent().and_then(Path::parent).unwrap()).unwrap();
    }

    fn reopen(path: &Path) -> (usize, u64, u64) {
        let replay = Journal::open(path).unwrap().1;
        let len = fs::metadata(path).unwrap().len();
        (replay.records.len(), replay.truncated_bytes, len)
    }

    #[test]
    fn appends_and_batches_replay_in_order() {
        let path = temp_path("order");
        let (mut j, replay) = Journal::open(&path).unwrap();
        assert_eq!((replay.records.len(), replay.truncated_bytes), (0, 0));
        j.append(br#"{"a":1}"#).unwrap();
        j.append_all(&[br#"{"b":""}"#, br#"{"c":2}"#, br#"{"d":[3]}"#])
            .unwrap();
        j.append_all(&[]).unwrap();
        assert_eq!(j.path(), path.as_path());
        assert_eq!(j.durable_len(), fs::metadata(&path).unwrap().len());
        drop(j);
        let records = Journal::open(&path).unwrap().1.records;
        let want: [&[u8]; 4] = [
            br#"{"a":1}"#,
            br#"{"b":""}"#,
            br#"{"c":2}"#,
            br#"{"d":[3]}"#,
        ];
        assert_eq!(records, want);
        // Each line is the record with its checksum as a last member, so it is still JSON.
        let text = fs::read_to_string(&path).unwrap();
        let first = text.lines().next().unwrap();
        let crc = crate::crc32c::checksum(br#"{"a":1}"#);
        assert_eq!(first, format!(r#"{{"a":1,"crc32c":"{crc:08x}"}}"#));
        for line in text.lines() {
            serde_json::from_str::<serde_json::Value>(line).unwrap();
        }
        cleanup(&path);
    }

    #[test]
    fn open_each_streams_lines_longer_than_a_chunk_and_names_what_it_refuses() {
        let path = temp_path("each");
        let (mut j, _) = Journal::open(&path).unwrap();
        let long = format!(r#"{{"x":"{}"}}"#, "y".repeat(READ_CHUNK * 2 + 17));
        let records: Vec<Vec<u8>> = (0..5)
            .map(|i| match i {
                2 => long.clone().into_bytes(),
                _ => format!(r#"{{"i":{i}}}"#).into_bytes(),
            })
            .collect();
        let refs: Vec<&[u8]> = records.iter().map(Vec::as_slice).collect();
        j.append_all(&refs).unwrap();
        drop(j);
        let mut file = OpenOptions::new().append(true).open(&path).unwrap();
        file.write_all(br#"{"torn":"#).unwrap();
        let mut seen = Vec::new();
        let (_, cut) = Journal::open_each(&path, Tail::Cut, |r| {
            seen.push(r.to_vec());
            Ok(())
        })
        .unwrap();
        assert_eq!(cut, 8, "the torn tail is cut");
        assert!(seen == records, "the records, whole and in order");
        assert!(Journal::open(&path).unwrap().1.records == records);
        let refused = Journal::open_each(&path, Tail::Cut, |r| match r.starts_with(b"{\"x\"") {
            true => Err("too long".to_string()),
            false => Ok(()),
        });
        let e = refused.err().unwrap().to_string();
        let offset = 2 * (records[0].len() + CRC_SUFFIX_LEN);
        assert!(
            e.contains("line 3") && e.contains(&offset.to_string()),
            "{e}"
        );
        assert!(e.contains("too long"), "{e}");
        cleanup(&path);
    }

    #[test]
    fn a_replaced_file_reads_back_as_its_records_with_their_checksums() {
        let path = temp_path("replace");
        fs::create_dir_all(path.parent().unwrap()).unwrap();
        let records = vec![
            serde_json::json!({"a": {"b": [1, {"c": "}"}]}, "d": "x".repeat(100_000)}),
            serde_json::json!({"e": "line\nbreak \"quoted\""}),
        ];
        let written = write_snapshot(&path, records.clone()).unwrap();
        assert_eq!(written, fs::metadata(&path).unwrap().len());
        let (_, replay) = Journal::open(&path).unwrap();
        let mut want: Vec<Vec<u8>> = records.iter().map(|r| r.to_string().into_bytes()).collect();
        want.push(b"{\"end\":2}".to_vec());
        assert_eq!(replay.records, want);
        let mut lines = Vec::new();
        for r in &want {
            push_line(&mut lines, r);
        }
        assert_eq!(
            fs::read(&path).unwrap(),
            lines,
            "the bytes an append writes"
        );
        assert!(write_snapshot(&path, [serde_json::json!({})]).is_err());
        assert!(write_snapshot(&path, [serde_json::json!([1])]).is_err());
        assert!(
            !path.with_extension("tmp").exists(),
            "a failed write leaves no .tmp behind"
        );
        assert_eq!(
            Journal::open(&path).unwrap().1.records,
            want,
            "a refused write leaves the file"
        );
        cleanup(&path);
    }

    #[test]
    fn a_snapshot_reads_back_whole_and_one_cut_short_is_refused() {
        let path = temp_path("snapshot");
        fs::create_dir_all(path.parent().unwrap()).unwrap();
        let lines = vec![serde_json::json!({"a": 1}), serde_json::json!({"end": 0})];
        write_snapshot(&path, lines.clone()).unwrap();
        let mut seen = Vec::new();
        let read = read_snapshot(&path, |v| {
            seen.push(v);
            Ok(())
        });
        assert_eq!(read, Ok(true));
        assert_eq!(seen, lines, "a line that only looks like the end is a line");
        let text = fs::read_to_string(&path).unwrap();
        let cut: String = text.lines().take(2).map(|l| format!("{l}\n")).collect();
        fs::write(&path, cut).unwrap();
        let refused = read_snapshot(&path, |_| Ok(())).unwrap_err();
        assert!(refused.contains("cut short after 2 lines"), "{refused}");
        assert_eq!(
            read_snapshot(&path.with_extension("none"), |_| Ok(())),
            Ok(false)
        );
        cleanup(&path);
    }

    #[test]
    fn torn_tails_are_cut_on_disk() {
        let path = temp_path("torn");
        fs::create_dir_all(path.parent().unwrap()).unwrap();
        fs::write(&path, "").unwrap();
        assert_eq!(reopen(&path), (0, 0, 0));
        fs::write(&path, r#"{"a""#).unwrap();
        assert_eq!(reopen(&path), (0, 4, 0));
        fs::write(&path, "{\"a\":1}\n{\"b\":2}\n{\"c\"").unwrap();
        assert_eq!(reopen(&path), (2, 4, 16));
        Journal::open(&path)
            .unwrap()
            .0
            .append(br#"{"c":3}"#)
            .unwrap();
        let text = fs::read_to_string(&path).unwrap();
        let crc = crate::crc32c::checksum(br#"{"c":3}"#);
        let want = format!("{{\"a\":1}}\n{{\"b\":2}}\n{{\"c\":3,\"crc32c\":\"{crc:08x}\"}}\n");
        assert_eq!(text, want);
        cleanup(&path);
    }

    #[test]
    fn record_with_newline_is_rejected_and_nothing_written() {
        let path = temp_path("newline");
        let (mut j, _) = Journal::open(&path).unwrap();
        assert!(j.append(b"{\"a\":\n1}").unwrap_err().is_invalid_record());
        for not_an_object in [&b"{}"[..], b"", b"2", b"[1]", b"{\"a\":1"] {
            assert!(j.append(not_an_object).unwrap_err().is_invalid_record());
        }
        let err = j
            .append_all(&[b"{\"ok\":1}", b"{\"bad\":\n1}"])
            .unwrap_err();
        assert!(err.is_invalid_record() && err.to_string().contains("record 1"));
        assert_eq!(j.durable_len(), 0);
        assert_eq!(reopen(&path), (0, 0, 0));
        cleanup(&path);
    }

    /// Checked when the tests compile: journal is send and sync.
    const _: () = {
        const fn assert_send_sync<T: Send + Sync>() {}
        assert_send_sync::<Journal>();
        assert_send_sync::<Error>();
    };

    #[test]
    fn error_display_names_the_path() {
        let path = temp_path("display");
        fs::create_dir_all(path.parent().unwrap()).unwrap();
        fs::write(&path, "").unwrap();
        let below_a_file = path.join("j.jsonl");
        let err = Journal::open(&below_a_file).err().unwrap();
        let shown = format!("journal {}: cannot open: ", below_a_file.display());
        assert!(err.to_string().starts_with(&shown), "{err}");
        assert!(std::error::Error::source(&err).is_some() && err.offset().is_none());
        cleanup(&path);
    }

    #[cfg(target_os = "linux")]
    #[test]
    fn failed_write_is_reported_and_failed_rollback_poisons() {
        // /dev/full fails every write with ENOSPC and cannot be truncated.
        let file = OpenOptions::new().append(true).open("/dev/full").unwrap();
        let mut j = Journal {
            path: PathBuf::from("/dev/full"),
            file,
            len: 7,
            poisoned: None,
        };
        let err = j.append(b"{\"x\":1}").unwrap_err();
        let shown = "journal /dev/full at byte 7: append failed and could not be rolled back";
        assert!(err.to_string().starts_with(shown), "{err}");
        assert!(!err.is_invalid_record() && err.offset() == Some(7));
        let err = j.append(b"{\"y\":1}").unwrap_err();
        assert!(err.to_string().contains("at byte 7: unusable"), "{err}");
        assert_eq!(j.durable_len(), 7);
    }
}
