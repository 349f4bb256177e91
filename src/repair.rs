//! `conductor-metrics repair`: moves the damaged lines (those a journal's open refuses) of
//! every journal under a directory aside, as they were, into `<file>.corrupt`, so a server
//! refusing them starts again. Crash-only: the `.corrupt` file is synced before a synced copy
//! is renamed over the journal and the directory synced, so a crash leaves the old file or
//! the new (a rerun finishes, at worst copying a line aside twice). A torn last line is cut,
//! as a start does itself ([`cut_torn_tails`]) before its stores open, so each cut is logged.

use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::path::{Path, PathBuf};

use crate::journal;
use crate::segments::{self, aside, lines_aside};

/// A line moved aside (`line` 1-based), with its record number in its store where known: in a
/// segment with a header and none aside before.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Moved {
    pub file: PathBuf,
    pub line: u64,
    pub offset: u64,
    pub why: &'static str,
    pub record: Option<u64>,
}

/// A segment whose damaged header `repair` wrote again, as its neighbours number it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rebuilt {
    pub file: PathBuf,
    pub appended_before: u64,
}

/// A segment with a damaged header no neighbour numbers: left as it was, for a start to refuse;
/// its `records` stay out of the store.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Unnumbered {
    pub file: PathBuf,
    pub records: u64,
}

/// What a repair did: journal files checked, lines moved (in file and line order), torn bytes
/// cut, segment headers rebuilt, segments left unnumbered.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Report {
    pub files: usize,
    pub moved: Vec<Moved>,
    pub torn_bytes: u64,
    pub rebuilt: Vec<Rebuilt>,
    pub unnumbered: Vec<Unnumbered>,
}

impl Report {
    /// Whether every record the journals held is in them again.
    pub fn complete(&self) -> bool {
        self.moved.is_empty() && self.unnumbered.is_empty()
    }
}

/// The stores a data dir holds: one of these, or a server's lock, tells a data dir.
const STORES: [&str; 4] = ["runs", "messages", "metrics", "budget"];

/// Refuses a path that is not a data dir (missing, a file, or with neither lock nor store), such
/// as a store's directory inside one (its repair would take the wrong lock beside a live server).
pub fn check_data_dir(dir: &Path) -> Result<(), String> {
    if !dir.is_dir() {
        return Err(format!("{} is not a directory", dir.display()));
    }
    let looks_like = dir.join(crate::lock::LOCK_FILE).exists()
        || STORES.iter().any(|s| dir.join(s).is_dir())
        || dir.join("runs.jsonl").exists();
    if looks_like {
        return Ok(());
    }
    Err(match crate::lock::data_dir_of(dir) {
        Some(data) => format!(
            "{} is inside the data dir {}: run repair with --data-dir {}",
            dir.display(),
            data.display(),
            data.display()
        ),
        None => format!("{} is not a conductor-metrics data dir", dir.display()),
    })
}

/// Moves aside the damaged lines of every journal under the existing `dirs`. Stops at the first
/// I/O error; the files repaired before it stay so.
pub fn repair(dirs: &[&Path]) -> io::Result<Report> {
    let mut report = Report::default();
    // Name order repairs a store's segments oldest first: a damaged header is numbered from
    // the segment before, once repaired.
    for file in journal_files(dirs)? {
        // io::Error does not name its file; the operator needs to know which.
        repair_file(&file, &mut report)
            .map_err(|e| io::Error::new(e.kind(), format!("{}: {e}", file.display())))?;
    }
    Ok(report)
}

fn segment_number(path: &Path) -> Option<u64> {
    let name = path.file_name()?.to_str()?.strip_suffix(".jsonl")?;
    (name.len() == 10).then(|| name.parse().ok())?
}

/// The records before segment `number` at `path` (header damaged, `lines` lines besides) as
/// its neighbours number it: the (repaired) one before, or else the next.
fn number_segment(path: &Path, number: u64, lines: u64) -> io::Result<Option<u64>> {
    let dir = path.parent().unwrap_or(Path::new("."));
    let before = segments::scan_segment(dir, number - 1)?;
    if let Some(before) = before.and_then(|seg| segments::next_record(dir, &seg)) {
        return Ok(Some(before));
    }
    let next = segments::scan_segment(dir, number + 1)?.and_then(|seg| seg.first);
    Ok(next.and_then(|next| next.checked_sub(lines + lines_aside(path))))
}

/// Cuts the torn tail off every journal under the existing `dirs`, as an open would.
pub fn cut_torn_tails(dirs: &[&Path]) -> io::Result<Vec<(PathBuf, u64)>> {
    let files = journal_files(dirs)?;
    // An older segment was complete when the next began: a torn end there is damage, not cut.
    let older_segment = |f: &PathBuf| {
        segment_number(f).is_some_and(|n| {
            files
                .iter()
                .any(|g| g.parent() == f.parent() && segment_number(g).is_some_and(|m| m > n))
        })
    };
    let mut cuts = Vec::new();
    for file in files.iter().filter(|f| !older_segment(f)) {
        let cut = cut_tail(file)
            .map_err(|e| io::Error::new(e.kind(), format!("{}: {e}", file.display())))?;
        if cut > 0 {
            cuts.push((file.clone(), cut));
        }
    }
    Ok(cuts)
}

/// Every journal under `dirs` with lines `repair` moved aside, and how many: every start says
/// their records are not in the store.
pub fn set_aside(dirs: &[&Path]) -> io::Result<Vec<(PathBuf, u64)>> {
    let all = journal_files(dirs)?
        .into_iter()
        .map(|f| (lines_aside(&f), f));
    Ok(all.filter(|a| a.0 > 0).map(|(n, f)| (f, n)).collect())
}

/// Cuts a file after its last newline, reading backwards (a torn tail is at most one record);
/// returns the bytes cut.
fn cut_tail(path: &Path) -> io::Result<u64> {
    use std::io::{Read, Seek, SeekFrom};
    const CHUNK: u64 = 64 * 1024;
    let mut file = OpenOptions::new().read(true).write(true).open(path)?;
    let len = file.metadata()?.len();
    let mut end = len;
    let mut chunk = Vec::new();
    let keep = loop {
        if end == 0 {
            break 0;
        }
        let start = end.saturating_sub(CHUNK);
        chunk.resize((end - start) as usize, 0);
        file.seek(SeekFrom::Start(start))?;
        file.read_exact(&mut chunk)?;
        if let Some(i) = chunk.iter().rposition(|&b| b == b'\n') {
            break start + i as u64 + 1;
        }
        end = start;
    };
    if keep < len {
        file.set_len(keep)?;
        file.sync_data()?;
    }
    Ok(len - keep)
}

/// Every journal (`*.jsonl`) under the existing `dirs`, subdirectories too, in name order, once.
fn journal_files(dirs: &[&Path]) -> io::Result<Vec<PathBuf>> {
    let mut files = Vec::new();
    for dir in dirs.iter().filter(|d| d.is_dir()) {
        journals(&dir.canonicalize()?, &mut files)?;
    }
    files.sort_unstable();
    files.dedup();
    Ok(files)
}

fn journals(dir: &Path, out: &mut Vec<PathBuf>) -> io::Result<()> {
    for entry in fs::read_dir(dir)? {
        let entry = entry?;
        let path = entry.path();
        let kind = entry.file_type()?;
        if kind.is_dir() {
            journals(&path, out)?;
        } else if kind.is_file() && path.extension().is_some_and(|e| e == "jsonl") {
            out.push(path);
        }
    }
    Ok(())
}

fn repair_file(path: &Path, report: &mut Report) -> io::Result<()> {
    report.files += 1;
    let data = fs::read(path)?;
    let (lines, torn) = journal::scan(&data);
    report.torn_bytes += torn as u64;
    if torn == 0 && lines.iter().all(|l| l.record.is_ok()) {
        return Ok(());
    }
    // A segment's header (but 0's) numbers its records: moved aside, all would be unreadable.
    let segment = segment_number(path).filter(|&n| n != 0);
    let header_damaged = segment.is_some() && lines.first().is_some_and(|l| l.record.is_err());
    let body = &lines[usize::from(header_damaged)..];
    let rebuilt = match segment.filter(|_| header_damaged) {
        Some(number) => number_segment(path, number, body.len() as u64)?,
        None => None,
    };
    if header_damaged && rebuilt.is_none() {
        report.unnumbered.push(Unnumbered {
            file: path.to_path_buf(),
            records: body.len() as u64,
        });
        return Ok(());
    }
    let first = lines.first().and_then(|l| l.record.as_deref().ok());
    let header = rebuilt.or_else(|| first.and_then(segments::read_header));
    // Record numbers are known while no line was moved aside before.
    let numbered = segment.and(header).filter(|_| lines_aside(path) == 0);
    let first_record = usize::from(rebuilt.is_none() && header.is_some());
    let damaged = body.iter().filter(|l| l.record.is_err());
    append_aside(path, "corrupt", damaged.map(|l| l.bytes))?;
    let mut kept = Vec::with_capacity(data.len());
    if let (Some(before), Some(first)) = (rebuilt, lines.first()) {
        // For a person to look at, apart from the moved records the segments' count includes.
        append_aside(path, "corrupt-header", [first.bytes])?;
        journal::push_line(&mut kept, &segments::header(before));
        report.rebuilt.push(Rebuilt {
            file: path.to_path_buf(),
            appended_before: before,
        });
    }
    for (i, line) in body.iter().enumerate() {
        match line.record {
            Ok(_) => {
                kept.extend_from_slice(line.bytes);
                kept.push(b'\n');
            }
            Err(why) => report.moved.push(Moved {
                file: path.to_path_buf(),
                line: line.line,
                offset: line.offset,
                why,
                record: numbered.map(|n| n + (i - first_record) as u64),
            }),
        }
    }
    let temp = aside(path, "repair");
    let mut out = File::create(&temp)?;
    out.write_all(&kept)?;
    out.sync_all()?;
    fs::rename(&temp, path)?;
    File::open(path.parent().unwrap_or(Path::new(".")))?.sync_all()
}

/// Appends `lines` to `path`'s `.suffix` file beside it, synced; no lines create nothing.
fn append_aside<'a>(
    path: &Path,
    suffix: &str,
    lines: impl IntoIterator<Item = &'a [u8]>,
) -> io::Result<()> {
    let mut lines = lines.into_iter().peekable();
    if lines.peek().is_none() {
        return Ok(());
    }
    let mut file = OpenOptions::new()
        .create(true)
        .append(true)
        .open(aside(path, suffix))?;
    for line in lines {
        file.write_all(line)?;
        file.write_all(b"\n")?;
    }
    file.sync_all()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::journal::Journal;
    use crate::testing::TempDir;

    fn temp_dir(name: &str) -> TempDir {
        let dir = TempDir::new(&format!("repair-{name}"));
        fs::create_dir_all(dir.join("budget")).unwrap();
        dir
    }

    /// Flips one byte of line `n` (1-based) of `path`, inside its record.
    fn flip(path: &Path, n: usize) {
        let mut text = fs::read(path).unwrap();
        let start: usize = text
            .split(|&b| b == b'\n')
            .take(n - 1)
            .map(|l| l.len() + 1)
            .sum();
        text[start + 9] ^= 0x01;
        fs::write(path, text).unwrap();
    }

    #[test]
    fn damaged_lines_refuse_the_open_until_repaired_and_are_kept_aside() {
        let dir = temp_dir("moves");
        let runs = dir.join("runs.jsonl");
        let ledger = dir.join("budget").join("2026-12-03.jsonl");
        for path in [&runs, &ledger] {
            let (mut j, _) = Journal::open(path).unwrap();
            for i in 0..5 {
                j.append(format!(r#"{{"op":"start","n":{i}}}"#).as_bytes())
                    .unwrap();
            }
        }
        let clean = fs::read(&ledger).unwrap();
        flip(&runs, 2);
        flip(&runs, 4);
        let damaged = fs::read(&runs).unwrap();

        let err = Journal::open(&runs).err().expect("damage refuses the open");
        let shown = err.to_string();
        assert!(err.is_damaged(), "{shown}");
        let second_line = damaged.iter().position(|&b| b == b'\n').unwrap() + 1;
        let at = format!("line 2 (byte {second_line}) is damaged: its checksum does not match");
        assert!(shown.contains(&at), "{shown}");
        // Outside a data dir the hint can only name the settings.
        assert!(shown.contains("with the server's --data-dir"), "{shown}");
        // Inside one (a server's lock above the journal), it names that dir.
        fs::write(dir.join(crate::lock::LOCK_FILE), "").unwrap();
        let shown = Journal::open(&runs)
            .err()
            .expect("still damaged")
            .to_string();
        let hint = format!("`conductor-metrics repair --data-dir {}`", dir.display());
        assert!(shown.contains(&hint), "{shown}");
        fs::write(&runs, [&damaged[..], b"{\"torn"].concat()).unwrap();

        let report = repair(&[&dir, &dir.join("budget"), &dir.join("none")]).unwrap();
        assert_eq!(report.files, 2);
        assert_eq!(report.torn_bytes, 6);
        let lines: Vec<u64> = report.moved.iter().map(|m| m.line).collect();
        assert_eq!(lines, [2, 4]);
        let canonical = runs.canonicalize().unwrap();
        assert!(report.moved.iter().all(|m| m.file == canonical));
        let records = Journal::open(&runs).unwrap().1.records;
        let kept: Vec<String> = records
            .iter()
            .map(|r| String::from_utf8(r.clone()).unwrap())
            .collect();
        assert_eq!(
            kept,
            [0, 2, 4].map(|i| format!(r#"{{"op":"start","n":{i}}}"#))
        );
        let corrupt = fs::read(aside(&runs, "corrupt")).unwrap();
        let original: Vec<&[u8]> = damaged.split(|&b| b == b'\n').collect();
        assert_eq!(corrupt, [original[1], b"\n", original[3], b"\n"].concat());
        assert_eq!(
            fs::read(&ledger).unwrap(),
            clean,
            "a sound file is left alone"
        );
        assert!(!aside(&runs, "repair").exists());
        assert_eq!(
            repair(&[&dir]).unwrap().moved,
            [],
            "a second run finds nothing"
        );
    }

    #[test]
    fn lines_from_before_checksums_are_kept_unless_they_are_not_json() {
        let dir = temp_dir("legacy");
        let path = dir.join("messages.jsonl");
        fs::write(&path, "{\"seq\":1}\n{\"seq\":2\n").unwrap();
        let err = Journal::open(&path)
            .err()
            .expect("a legacy line that is not JSON");
        assert!(err
            .to_string()
            .contains("line 2 (byte 10) is damaged: it is not JSON"));
        fs::write(&path, "{\"seq\":1}\n{\"seq\":2}\n").unwrap();
        let (mut j, replay) = Journal::open(&path).unwrap();
        assert_eq!(replay.records.len(), 2);
        j.append(br#"{"seq":3}"#).unwrap();
        drop(j);
        // Once a line has a checksum, one without is damage.
        let mut text = fs::read_to_string(&path).unwrap();
        text.push_str("{\"seq\":4}\n");
        fs::write(&path, text).unwrap();
        let err = Journal::open(&path)
            .err()
            .expect("a line without a checksum");
        assert!(err.to_string().contains("line 4"), "{err}");
        assert!(err.to_string().contains("no checksum"), "{err}");
        let report = repair(&[&dir]).unwrap();
        assert_eq!(report.moved.len(), 1);
        assert_eq!(Journal::open(&path).unwrap().1.records.len(), 3);
    }

    #[test]
    fn torn_tails_are_cut_before_a_start_and_named() {
        let dir = temp_dir("tails");
        let write = |name: &str, bytes: &[u8]| {
            let path = dir.join(name);
            fs::create_dir_all(path.parent().unwrap()).unwrap();
            fs::write(&path, bytes).unwrap();
            path.canonicalize().unwrap()
        };
        let whole = b"{\"a\":1}\n{\"a\":2}\n".to_vec();
        let sound = write("sound.jsonl", &whole);
        let short = write(
            "messages/0000000001.jsonl",
            &[&whole[..], b"{\"torn"].concat(),
        );
        // Longer than the chunk read backwards, so the newline is found in an earlier one.
        let long_tail = vec![b'x'; 200_000];
        let long = write(
            "budget/2026-12-03.jsonl",
            &[&whole[..], &long_tail].concat(),
        );
        let no_line = write("runs/0000000001.jsonl", b"{\"half");
        write("empty.jsonl", b"");
        write("not-a-journal.txt", b"no newline");

        let cuts = cut_torn_tails(&[&dir, &dir.join("budget"), &dir.join("none")]).unwrap();
        let mut want = vec![(long, 200_000), (short.clone(), 6), (no_line.clone(), 6)];
        want.sort();
        assert_eq!(cuts, want);
        for path in [&sound, &short, &want[0].0] {
            assert_eq!(fs::read(path).unwrap(), whole, "{}", path.display());
        }
        assert_eq!(fs::read(&no_line).unwrap(), b"");
        assert_eq!(
            fs::read(dir.join("not-a-journal.txt")).unwrap(),
            b"no newline"
        );
        assert_eq!(Journal::open(&short).unwrap().1.truncated_bytes, 0);
        assert_eq!(
            cut_torn_tails(&[&dir]).unwrap(),
            [],
            "a second pass finds nothing"
        );
    }

    #[test]
    fn a_header_no_neighbour_numbers_is_left_as_it_was_and_reported() {
        let dir = temp_dir("unnumbered");
        let store = dir.join("messages");
        let path = store.join("0000000003.jsonl");
        let (mut journal, _) = Journal::open(&path).unwrap();
        journal
            .append_all(&[&crate::segments::header(40), br#"{"m":1}"#, br#"{"m":2}"#])
            .unwrap();
        drop(journal);
        flip(&path, 1);
        let damaged = fs::read(&path).unwrap();
        let report = repair(&[&dir]).unwrap();
        assert!(!report.complete() && report.moved.is_empty());
        assert_eq!(report.unnumbered.len(), 1);
        assert_eq!(report.unnumbered[0].records, 2);
        assert_eq!(fs::read(&path).unwrap(), damaged, "left as it was");
        // With the segment before it, it is numbered from where that ends.
        let (mut older, _) = Journal::open(store.join("0000000002.jsonl")).unwrap();
        older
            .append_all(&[&crate::segments::header(37), br#"{"m":0}"#])
            .unwrap();
        drop(older);
        fs::write(store.join("0000000002.jsonl.corrupt"), "x\ny\n").unwrap();
        let report = repair(&[&dir]).unwrap();
        assert!(report.complete(), "{report:?}");
        assert_eq!(report.rebuilt[0].appended_before, 40);
        let (_, replay) = Journal::open(&path).unwrap();
        assert_eq!(replay.records[0], crate::segments::header(40));
        assert_eq!(replay.records.len(), 3);
    }
}
