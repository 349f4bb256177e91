//! A journal cut into segment files (`0000000001.jsonl`, ..., each a [`Journal`]), so history
//! goes by deleting whole files and a start reads only what is retained. Every segment but a
//! migrated one (0) begins with `{"segment":{"appended_before":N}}`, so the count of records
//! ever appended survives deletions exactly. The record after a full segment begins a new one,
//! its header in the same write and sync; then the oldest go while the newer ones cover what
//! is kept (a deletion lost to a crash is redone at the next rotation or start). One writer.

use std::collections::VecDeque;
use std::fs;
use std::path::{Path, PathBuf};

use crate::journal::{self, Journal, Tail};

/// The default journal growth after which a snapshotting store (runs, declared metrics) snapshots.
pub const DEFAULT_SNAPSHOT_BYTES: u64 = 16 * 1024 * 1024;

/// When a store's next snapshot is due, one at a time: once its journal grew by the configured
/// size or the last snapshot's, whichever is more, so a start reads at most about twice a
/// snapshot and snapshots write about as much again as the journal.
#[derive(Debug, Default)]
pub struct SnapshotDue {
    /// Journal bytes applied since the last snapshot, and that snapshot's size.
    since: u64,
    last: u64,
    busy: bool,
}

impl SnapshotDue {
    /// Counts `bytes` applied; true when a snapshot (every `every` bytes, 0: never) is due.
    pub fn grew(&mut self, bytes: u64, every: u64) -> bool {
        self.since += bytes;
        if self.busy || every == 0 || self.since < every.max(self.last) {
            return false;
        }
        self.busy = true;
        self.since = 0;
        true
    }

    /// Ends a snapshot: `written` is its size, or None when it failed.
    pub fn done(&mut self, written: Option<u64>) {
        self.busy = false;
        if let Some(size) = written {
            self.last = size;
        }
    }

    #[cfg(test)]
    pub fn busy(&self) -> bool {
        self.busy
    }
}

/// How much a segmented store keeps, and how big a segment grows; 0: no bound of that kind.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct SegmentRetention {
    /// The newest records and bytes of records kept.
    pub records: u64,
    pub bytes: u64,
    /// Records and bytes after which a segment is closed and a new one begun.
    pub segment_records: u64,
    pub segment_bytes: u64,
}

impl SegmentRetention {
    /// Segments closing every `snapshot_bytes` (0: the default size); only a snapshot drops them.
    pub fn snapshotted(snapshot_bytes: u64) -> SegmentRetention {
        SegmentRetention {
            segment_bytes: Some(snapshot_bytes)
                .filter(|&b| b > 0)
                .unwrap_or(DEFAULT_SNAPSHOT_BYTES),
            ..SegmentRetention::default()
        }
    }

    fn covered(&self, records: u64, bytes: u64) -> bool {
        (self.records > 0 && records >= self.records) || (self.bytes > 0 && bytes >= self.bytes)
    }
}

/// One segment file: its number, what it holds, and its header's count (`first`).
#[derive(Debug, Default, Clone, Copy)]
pub(crate) struct Segment {
    number: u64,
    records: u64,
    bytes: u64,
    pub(crate) first: Option<u64>,
}

impl Segment {
    fn new(number: u64, first: Option<u64>) -> Segment {
        Segment {
            number,
            first,
            ..Segment::default()
        }
    }

    /// False for an empty headerless segment (a crash just after its creation): the count runs on.
    fn holds(&self) -> bool {
        self.records > 0 || self.first.is_some()
    }
}

/// A segmented journal, open for appending to its newest segment.
pub struct Segments {
    dir: PathBuf,
    retention: SegmentRetention,
    /// Every segment kept, oldest first; the last is `current`'s.
    kept: VecDeque<Segment>,
    current: Journal,
    /// Whether `current` is new and empty, and still needs its header.
    headless: bool,
    /// Records appended durably, ever (the headers not counted).
    appended: u64,
    /// Whether the next write begins a new segment.
    rotate: bool,
}

/// Refuses a gap between consecutive segments: the newer one's header must count exactly the
/// records before, in and moved aside from the older. A headerless one (its first line moved
/// aside) but the first ever cannot be placed.
fn check_continuity(dir: &Path, older: &Segment, newer: &Segment) -> Result<(), String> {
    let older_path = path_of(dir, older.number);
    let newer_path = path_of(dir, newer.number);
    let headerless = |path: &Path| {
        format!(
            "segment {} has no header, so the records it holds cannot be numbered; \
             restore it from a backup",
            path.display()
        )
    };
    let newer_first = newer.first.ok_or_else(|| headerless(&newer_path))?;
    let expected = next_record(dir, older).ok_or_else(|| headerless(&older_path))?;
    if newer_first == expected {
        return Ok(());
    }
    if newer_first > expected {
        return Err(format!(
            "segments {}: {} records are missing: {} holds records up to number {}, \
             but {} begins at record {newer_first}; restore the segments from a backup",
            dir.display(),
            newer_first - expected,
            older_path.display(),
            expected.saturating_sub(1),
            newer_path.display()
        ));
    }
    Err(format!(
        "segments {}: {} begins at record {newer_first}, but {} ends at record {expected}; \
         a segment was lost, replaced or damaged: restore from a backup",
        dir.display(),
        newer_path.display(),
        older_path.display()
    ))
}

/// The records `repair` moved aside from the journal at `path` (into `.corrupt`): they count.
pub(crate) fn lines_aside(path: &Path) -> u64 {
    let aside = fs::read(aside(path, "corrupt"));
    aside.map_or(0, |b| b.iter().filter(|&&c| c == b'\n').count() as u64)
}

/// `path` with `.suffix` added: `runs.jsonl` -> `runs.jsonl.corrupt`.
pub(crate) fn aside(path: &Path, suffix: &str) -> PathBuf {
    let mut name = path.as_os_str().to_os_string();
    name.push(".");
    name.push(suffix);
    PathBuf::from(name)
}

/// The number of the record after `seg`; `None` for a headerless one but segment 0 (migrated).
pub(crate) fn next_record(dir: &Path, seg: &Segment) -> Option<u64> {
    let first = seg.first.or((seg.number == 0).then_some(0))?;
    Some(first + seg.records + lines_aside(&path_of(dir, seg.number)))
}

/// Segment `number` in `dir` as `repair` reads it, past damage; `None` without such a file (or
/// for a symlink, which `repair` does not walk into).
pub(crate) fn scan_segment(dir: &Path, number: u64) -> std::io::Result<Option<Segment>> {
    let path = path_of(dir, number);
    if !fs::symlink_metadata(&path).is_ok_and(|m| m.is_file()) {
        return Ok(None);
    }
    let data = fs::read(&path)?;
    let (lines, _) = journal::scan(&data);
    let first = lines.first().and_then(|l| l.record.as_deref().ok());
    let mut seg = Segment::new(number, first.and_then(read_header));
    seg.records = lines.iter().filter(|l| l.record.is_ok()).count() as u64;
    seg.records -= u64::from(seg.first.is_some());
    Ok(Some(seg))
}

/// Refuses a gap in the segment files' numbers (one deleted by hand).
fn check_numbers(dir: &Path, numbers: &[u64]) -> Result<(), String> {
    match numbers.windows(2).find(|w| w[1] != w[0] + 1) {
        None => Ok(()),
        Some(w) => Err(format!(
            "segments {}: segments {} to {} are missing between {} and {}; \
             restore them from a backup",
            dir.display(),
            w[0] + 1,
            w[1] - 1,
            path_of(dir, w[0]).display(),
            path_of(dir, w[1]).display()
        )),
    }
}

/// The header that begins a segment.
pub(crate) fn header(appended_before: u64) -> Vec<u8> {
    format!("{{\"segment\":{{\"appended_before\":{appended_before}}}}}").into_bytes()
}

/// `appended_before` of a header record; `None` for any other record.
pub(crate) fn read_header(record: &[u8]) -> Option<u64> {
    let rest = record.strip_prefix(b"{\"segment\":{\"appended_before\":")?;
    let digits = rest.strip_suffix(b"}}")?;
    std::str::from_utf8(digits).ok()?.parse().ok()
}

fn path_of(dir: &Path, number: u64) -> PathBuf {
    dir.join(format!("{number:010}.jsonl"))
}

fn storage(path: &Path, e: std::io::Error) -> String {
    format!("segments {}: {e}", path.display())
}

/// A segment a start read before the others, with its journal and its records.
type ReadAhead = (Journal, Segment, Vec<Vec<u8>>);

impl Segments {
    /// Opens the segments in `dir` (creating it; a `legacy` journal becomes segment 0), handing
    /// each record kept to `each`, oldest first. With `from`, a snapshot holds the records before
    /// it: the segments wholly before go, and only `retention`'s segment size counts
    /// ([`drop_covered`] deletes); without, the newest segments covering `retention` are read
    /// and the older deleted.
    pub fn open(
        dir: &Path,
        legacy: Option<&Path>,
        retention: SegmentRetention,
        from: Option<u64>,
        mut each: impl FnMut(&[u8]) -> Result<(), String>,
    ) -> Result<Segments, String> {
        let numbers = prepare(dir, legacy)?;
        let firsts: Vec<Option<u64>> = numbers.iter().map(|&n| first_of(dir, n)).collect();
        let (start, mut read) = match from {
            // The newest segment that begins at or before `from` holds it.
            Some(from) => {
                let start = firsts.iter().rposition(|f| f.is_some_and(|f| f <= from));
                (start.unwrap_or(0), Vec::new())
            }
            None => read_retained(dir, &numbers, retention)?,
        };
        for &number in &numbers[..start] {
            // One left behind is deleted at the next rotation or start; it is never read.
            let _ = fs::remove_file(path_of(dir, number));
        }
        let (numbers, firsts) = (&numbers[start..], &firsts[start..]);
        let mut appended = firsts[0].unwrap_or(0);
        if let Some(from) = from.filter(|&from| appended > from) {
            return Err(format!(
                "segments {}: records {from} to {} are missing; a snapshot covers the records before {from}",
                dir.display(),
                appended - 1
            ));
        }
        check_numbers(dir, numbers)?;
        let (mut loaded, mut newest, mut previous) = (Vec::new(), None, None::<Segment>);
        for (i, &number) in numbers.iter().enumerate() {
            if let (Some(older), Some(_)) = (&previous, firsts[i]) {
                // Before the segment is read, so a refused start cuts no torn tail.
                check_continuity(dir, older, &Segment::new(number, firsts[i]))?;
            }
            // The header numbers the records, so one moved aside earlier renumbers none.
            appended = firsts[i].unwrap_or(appended);
            let mut take = |record: &[u8]| {
                appended += 1;
                match appended > from.unwrap_or(0) {
                    true => each(record),
                    false => Ok(()),
                }
            };
            let (journal, seg) = match read.pop() {
                Some((journal, seg, records)) => {
                    records.iter().try_for_each(|r| take(r))?;
                    (journal, seg)
                }
                None => read_segment(dir, number, i + 1 == numbers.len(), take)?,
            };
            if seg.holds() {
                if let (Some(older), None) = (&previous, seg.first) {
                    check_continuity(dir, older, &seg)?;
                }
                previous = Some(seg);
            }
            loaded.push(seg);
            newest = Some((journal, seg));
        }
        // Records `repair` moved aside were appended all the same (a header counts those before).
        if let Some(last) = &previous {
            appended += lines_aside(&path_of(dir, last.number));
        }
        Segments::assemble(dir, retention, &loaded, newest, appended, from)
    }

    /// The segments read, `loaded` oldest first, open for appending to the newest.
    fn assemble(
        dir: &Path,
        mut retention: SegmentRetention,
        loaded: &[Segment],
        newest: Option<(Journal, Segment)>,
        appended: u64,
        from: Option<u64>,
    ) -> Result<Segments, String> {
        let none = || format!("segments {}: none", dir.display());
        let (current, seg) = newest.ok_or_else(none)?;
        // A headerless segment with records but 0 would later pass for a migrated one: the
        // next records begin a new segment.
        let headerless = seg.number != 0 && seg.first.is_none();
        // A snapshot ahead of the segments (a data dir copied snapshot last) holds the records
        // between; the next begins a new segment.
        let ahead = from.is_some_and(|from| appended < from);
        if from.is_some() {
            // Only a snapshot drops the segments it holds.
            (retention.records, retention.bytes) = (0, 0);
        }
        let mut segments = Segments {
            dir: dir.to_path_buf(),
            retention,
            kept: loaded.iter().copied().collect(),
            current,
            headless: headerless && seg.records == 0,
            appended: appended.max(from.unwrap_or(0)),
            rotate: false,
        };
        segments.rotate = segments.full() || (headerless && seg.records > 0) || ahead;
        Ok(segments)
    }

    /// Appends `records` durably together, in a new segment if the current is full; drops old.
    pub fn append_all(&mut self, records: &[&[u8]]) -> Result<(), journal::Error> {
        if records.is_empty() {
            return Ok(());
        }
        if self.rotate {
            self.begin_segment(records)?;
        } else if self.headless {
            with_header(&mut self.current, self.appended, records)?;
            self.headless = false;
        } else {
            self.current.append_all(records)?;
        }
        self.appended += records.len() as u64;
        if let Some(seg) = self.kept.back_mut() {
            seg.records += records.len() as u64;
            seg.bytes += records.iter().map(|r| r.len() as u64 + 1).sum::<u64>();
        }
        self.rotate = self.full();
        if self.rotate {
            self.drop_old();
        }
        Ok(())
    }

    /// Writes the next segment's header with `records`, in one write and sync. A failure leaves
    /// the empty file (a start takes it as empty) and the next write tries again.
    fn begin_segment(&mut self, records: &[&[u8]]) -> Result<(), journal::Error> {
        let number = self.kept.back().map_or(1, |s| s.number + 1);
        let path = path_of(&self.dir, number);
        let (mut journal, _) = Journal::open_each(&path, Tail::Cut, |_| Ok(()))?;
        with_header(&mut journal, self.appended, records)?;
        self.current = journal;
        self.headless = false;
        self.kept
            .push_back(Segment::new(number, Some(self.appended)));
        self.rotate = false;
        Ok(())
    }

    fn full(&self) -> bool {
        let r = &self.retention;
        self.kept.back().is_some_and(|s| {
            (r.segment_records > 0 && s.records >= r.segment_records)
                || (r.segment_bytes > 0 && s.bytes >= r.segment_bytes)
        })
    }

    fn drop_old(&mut self) {
        while self.kept.len() > 1 {
            let newer = self.kept.iter().skip(1);
            let (records, bytes) = newer.fold((0, 0), |(r, b), s| (r + s.records, b + s.bytes));
            if !self.retention.covered(records, bytes) {
                break;
            }
            let oldest = self.kept[0].number;
            if fs::remove_file(path_of(&self.dir, oldest)).is_err() {
                break;
            }
            self.kept.pop_front();
        }
    }

    pub fn path(&self) -> &Path {
        self.current.path()
    }

    pub fn appended(&self) -> u64 {
        self.appended
    }

    #[cfg(test)]
    pub fn numbers(&self) -> Vec<u64> {
        self.kept.iter().map(|s| s.number).collect()
    }
}

/// Reads segment `number` in `dir`, handing each record after its header to `each`. Only the
/// newest can end torn by a crash; any other was complete when the next began: damage, refused.
fn read_segment(
    dir: &Path,
    number: u64,
    newest: bool,
    mut each: impl FnMut(&[u8]) -> Result<(), String>,
) -> Result<(Journal, Segment), String> {
    let mut seg = Segment::new(number, None);
    let tail = if newest { Tail::Cut } else { Tail::Refuse };
    let (journal, _) = Journal::open_each(&path_of(dir, number), tail, |record| {
        if !seg.holds() {
            seg.first = read_header(record);
            if seg.first.is_some() {
                return Ok(());
            }
        }
        seg.records += 1;
        seg.bytes += record.len() as u64 + 1;
        each(record)
    })
    .map_err(|e| e.to_string())?;
    Ok((journal, seg))
}

/// Reads the newest of `numbers` back until they cover `retention`, newest first; returns the
/// index of the oldest read. A start must read them to count their records and bytes.
fn read_retained(
    dir: &Path,
    numbers: &[u64],
    retention: SegmentRetention,
) -> Result<(usize, Vec<ReadAhead>), String> {
    let (mut read, mut records, mut bytes) = (Vec::new(), 0, 0);
    for &number in numbers.iter().rev() {
        if !read.is_empty() && retention.covered(records, bytes) {
            break;
        }
        let mut body = Vec::new();
        let (journal, seg) = read_segment(dir, number, read.is_empty(), |record| {
            body.push(record.to_vec());
            Ok(())
        })?;
        (records, bytes) = (records + seg.records, bytes + seg.bytes);
        read.push((journal, seg, body));
    }
    Ok((numbers.len() - read.len(), read))
}

/// Creates `dir`, moves a `legacy` journal into it, and lists its segment numbers (one at least).
fn prepare(dir: &Path, legacy: Option<&Path>) -> Result<Vec<u64>, String> {
    fs::create_dir_all(dir).map_err(|e| storage(dir, e))?;
    if let Some(old) = legacy.filter(|p| p.is_file()) {
        migrate(old, dir)?;
    }
    let mut numbers = Vec::new();
    for entry in fs::read_dir(dir).map_err(|e| storage(dir, e))? {
        let name = entry.map_err(|e| storage(dir, e))?.file_name();
        let number = name.to_str().and_then(|n| n.strip_suffix(".jsonl"));
        numbers.extend(number.and_then(|n| n.parse::<u64>().ok()));
    }
    numbers.sort_unstable();
    if numbers.is_empty() {
        numbers.push(1);
    }
    Ok(numbers)
}

/// The first record's number of segment `number` (0 for segment 0), `None` without a header.
pub(crate) fn first_of(dir: &Path, number: u64) -> Option<u64> {
    if number == 0 {
        return Some(0);
    }
    let mut head = [0u8; 256];
    let n = fs::File::open(path_of(dir, number))
        .and_then(|mut f| std::io::Read::read(&mut f, &mut head))
        .ok()?;
    let line = &head[..=head[..n].iter().position(|&b| b == b'\n')?];
    let (lines, _) = journal::scan(line);
    read_header(lines.first()?.record.as_deref().ok()?)
}

/// Deletes the segments in `dir` wholly before record `before` (a durable snapshot holds them) but
/// the newest; returns how many went. One a crash left goes at the next start.
pub fn drop_covered(dir: &Path, before: u64) -> Result<usize, String> {
    #[cfg(test)]
    crate::journal::faults::halt(dir, crate::journal::faults::Stage::BeforeDrop);
    let numbers = prepare(dir, None)?;
    let mut dropped = 0;
    for pair in numbers.windows(2) {
        // The next segment's first record is one past this one's last.
        if first_of(dir, pair[1]).is_none_or(|f| f > before) {
            break;
        }
        fs::remove_file(path_of(dir, pair[0])).map_err(|e| storage(dir, e))?;
        dropped += 1;
    }
    Ok(dropped)
}

/// Appends `records` to `journal` after the header, in one write and sync.
fn with_header(
    journal: &mut Journal,
    before: u64,
    records: &[&[u8]],
) -> Result<(), journal::Error> {
    let head = header(before);
    journal.append_all(&[&[&head[..]][..], records].concat())
}

/// Moves a pre-segment journal into `dir` as segment 0: an atomic rename, then both dirs synced.
fn migrate(old: &Path, dir: &Path) -> Result<(), String> {
    let to = path_of(dir, 0);
    fs::rename(old, &to).map_err(|e| storage(old, e))?;
    for d in [Some(dir), old.parent()].into_iter().flatten() {
        let synced = fs::File::open(d).and_then(|f| f.sync_all());
        synced.map_err(|e| storage(d, e))?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::TempDir;

    fn temp_dir(name: &str) -> TempDir {
        TempDir::new(&format!("segments-{name}"))
    }

    fn retention(records: u64, segment_records: u64) -> SegmentRetention {
        SegmentRetention {
            records,
            bytes: 0,
            segment_records,
            segment_bytes: 0,
        }
    }

    fn record(i: u64) -> Vec<u8> {
        format!("{{\"seq\":{i}}}").into_bytes()
    }

    fn seqs(records: &[Vec<u8>]) -> Vec<u64> {
        records
            .iter()
            .map(|r| {
                let v: serde_json::Value = serde_json::from_slice(r).unwrap();
                v["seq"].as_u64().unwrap()
            })
            .collect()
    }

    /// Opens `dir` from record `from` and returns the store and the
    /// records handed over.
    fn from(dir: &Path, from: u64) -> (Segments, Vec<Vec<u8>>) {
        let mut seen = Vec::new();
        let s = Segments::open(dir, None, retention(0, 4), Some(from), |r| {
            seen.push(r.to_vec());
            Ok(())
        })
        .unwrap();
        (s, seen)
    }

    /// Opens `dir` keeping what `keep` retains, and returns the store and the records read.
    fn open(
        dir: &Path,
        legacy: Option<&Path>,
        keep: SegmentRetention,
    ) -> Result<(Segments, Vec<Vec<u8>>), String> {
        let mut seen = Vec::new();
        let s = Segments::open(dir, legacy, keep, None, |r| {
            seen.push(r.to_vec());
            Ok(())
        })?;
        Ok((s, seen))
    }

    #[test]
    fn a_snapshot_is_due_after_the_larger_of_the_size_and_the_last_snapshot_one_at_a_time() {
        let mut due = SnapshotDue::default();
        assert!(!due.grew(99, 100));
        assert!(due.grew(1, 100), "100 bytes since none was taken");
        assert!(!due.grew(150, 100), "one is being written");
        due.done(Some(300));
        assert!(
            !due.grew(149, 100),
            "the last one was 300 bytes, and 150 came meanwhile"
        );
        assert!(due.grew(1, 100));
        due.done(None);
        assert!(!due.grew(299, 100), "a failed one keeps the last size");
        assert!(due.grew(1, 100));
        assert!(!SnapshotDue::default().grew(u64::MAX, 0), "0: never");
    }

    #[test]
    fn a_line_moved_aside_leaves_the_later_records_their_numbers() {
        let dir = temp_dir("moved");
        let (mut s, _) = from(&dir, 0);
        for i in 0..10 {
            s.append_all(&[&record(i)]).unwrap();
        }
        drop(s);
        // As `repair` leaves a segment: its second record's line gone, and
        // kept in `.corrupt` beside it.
        let first = path_of(&dir, 1);
        let text = fs::read_to_string(&first).unwrap();
        let kept: Vec<&str> = text
            .lines()
            .enumerate()
            .filter(|(i, _)| *i != 2)
            .map(|(_, l)| l)
            .collect();
        fs::write(&first, kept.join("\n") + "\n").unwrap();
        let moved = text.lines().nth(2).unwrap().to_string() + "\n";
        fs::write(format!("{}.corrupt", first.display()), moved).unwrap();
        let (s, seen) = from(&dir, 0);
        assert_eq!(seen.len(), 9);
        assert_eq!(s.appended(), 10, "the next record is still number 10");
        let (_, seen) = from(&dir, 8);
        assert_eq!(seen, [record(8), record(9)]);
    }

    /// Ten records in segments of four: records 0-3, 4-7 and 8-9.
    fn three_segments(name: &str) -> TempDir {
        let dir = temp_dir(name);
        let (mut s, _) = from(&dir, 0);
        for i in 0..10 {
            s.append_all(&[&record(i)]).unwrap();
        }
        dir
    }

    fn refused(dir: &Path) -> String {
        let by_snapshot = Segments::open(dir, None, retention(0, 4), Some(0), |_| Ok(()));
        let whole = open(dir, None, retention(0, 4));
        let (Err(a), Err(b)) = (by_snapshot, whole) else {
            panic!("{} opened", dir.display());
        };
        assert_eq!(a.split(';').next(), b.split(';').next(), "{a} / {b}");
        a
    }

    #[test]
    fn a_gap_between_segments_refuses_the_start_naming_the_missing_records() {
        // A line gone from an older segment, with nothing in `.corrupt`.
        let dir = three_segments("gap-line");
        let first = path_of(&dir, 1);
        let text = fs::read_to_string(&first).unwrap();
        let kept: Vec<&str> = text.lines().filter(|l| !l.contains("\"seq\":2")).collect();
        assert_eq!(kept.len() + 1, text.lines().count());
        fs::write(&first, kept.join("\n") + "\n").unwrap();
        let e = refused(&dir);
        assert!(e.contains("1 records are missing"), "{e}");

        // A middle segment deleted.
        let dir = three_segments("gap-file");
        fs::remove_file(path_of(&dir, 2)).unwrap();
        let e = refused(&dir);
        assert!(e.contains("segments 2 to 2 are missing"), "{e}");
    }

    #[test]
    fn only_the_newest_segments_torn_tail_is_cut() {
        let dir = three_segments("torn-middle");
        let middle = path_of(&dir, 2);
        let len = fs::metadata(&middle).unwrap().len();
        let file = fs::OpenOptions::new().write(true).open(&middle).unwrap();
        file.set_len(len - 5).unwrap();
        let e = refused(&dir);
        assert!(e.contains("cut or damaged"), "{e}");
        assert!(e.contains("0000000002.jsonl"), "{e}");
        assert_eq!(fs::metadata(&middle).unwrap().len(), len - 5, "nothing cut");

        // The newest one's torn tail is a crash's, and is cut.
        let dir2 = three_segments("torn-newest");
        let newest = path_of(&dir2, 3);
        let mut file = fs::OpenOptions::new().append(true).open(&newest).unwrap();
        std::io::Write::write_all(&mut file, b"{\"torn").unwrap();
        let (s, seen) = from(&dir2, 0);
        assert_eq!((seen.len(), s.appended()), (10, 10));
    }

    #[test]
    fn a_start_from_a_snapshot_reads_the_records_after_it_and_drops_the_covered_segments() {
        let dir = temp_dir("from");
        let (mut s, seen) = from(&dir, 0);
        assert!(seen.is_empty());
        for i in 0..10 {
            s.append_all(&[&record(i)]).unwrap();
        }
        drop(s);
        // Segments of 4: records 0-3, 4-7 and 8-9.
        assert_eq!(
            drop_covered(&dir, 5).unwrap(),
            1,
            "only the first is wholly before 5"
        );
        let (_, seen) = from(&dir, 6);
        assert_eq!(seen, (6..10).map(record).collect::<Vec<_>>());
        let (s, seen) = from(&dir, 8);
        assert_eq!(seen, [record(8), record(9)]);
        assert_eq!(s.numbers(), [3], "the segment before 8 went");
        assert!(
            Segments::open(&dir, None, retention(0, 4), Some(3), |_| Ok(())).is_err(),
            "3 is gone"
        );
        // A snapshot ahead of the segments, as a copy of the data dir that
        // took the segments first and the snapshot after them has it: the
        // records between are in the snapshot, and the next one is
        // numbered after them.
        let (mut s, seen) = from(&dir, 12);
        assert!(seen.is_empty());
        assert_eq!(s.appended(), 12);
        s.append_all(&[&record(12)]).unwrap();
        drop(s);
        let (s, seen) = from(&dir, 12);
        assert_eq!((seen, s.appended()), (vec![record(12)], 13));
    }

    #[test]
    fn old_segments_go_while_the_count_of_appends_stays_exact() {
        let dir = temp_dir("retain");
        let keep = retention(25, 10);
        let (mut s, opened) = open(&dir, None, keep).unwrap();
        assert_eq!((opened.len(), s.appended()), (0, 0));
        for i in 1..=95 {
            s.append_all(&[&record(i)]).unwrap();
        }
        assert_eq!(s.appended(), 95);
        // Ten to a segment: 1-10 ... 81-90, then 91-95. When 81-90 filled
        // its segment, 71-90 covered 25, so segments 1-6 (1-60) went.
        assert_eq!(s.numbers(), [7, 8, 9, 10]);
        drop(s);
        // A start reads back from the newest until 25 are covered (71-95)
        // and deletes the rest.
        let (s, opened) = open(&dir, None, keep).unwrap();
        assert_eq!(s.appended(), 95);
        assert_eq!(seqs(&opened), (71..=95).collect::<Vec<_>>());
        assert_eq!(s.numbers(), [8, 9, 10]);
        // Reading needs only the newest segments: a smaller retention drops more.
        drop(s);
        let (s, opened) = open(&dir, None, retention(5, 10)).unwrap();
        assert_eq!((seqs(&opened), s.appended()), ((91..=95).collect(), 95));
        assert_eq!(s.numbers(), [10]);
        let names: Vec<String> = fs::read_dir(&dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .collect();
        assert_eq!(names, ["0000000010.jsonl"]);
    }

    #[test]
    fn a_batch_that_fills_a_segment_rotates_before_the_next_and_0_keeps_all() {
        let dir = temp_dir("batch");
        let keep = retention(0, 4);
        let (mut s, _) = open(&dir, None, keep).unwrap();
        let batch: Vec<Vec<u8>> = (1..=6).map(record).collect();
        let refs: Vec<&[u8]> = batch.iter().map(Vec::as_slice).collect();
        s.append_all(&refs).unwrap();
        s.append_all(&[&record(7)]).unwrap();
        s.append_all(&[&record(8)]).unwrap();
        assert_eq!(s.numbers(), [1, 2]);
        let second = fs::read_to_string(path_of(&dir, 2)).unwrap();
        assert!(second.starts_with("{\"segment\":{\"appended_before\":6},\"crc32c\""));
        drop(s);
        let (s, opened) = open(&dir, None, keep).unwrap();
        assert_eq!((seqs(&opened), s.appended()), ((1..=8).collect(), 8));
    }

    #[test]
    fn a_journal_from_before_segments_becomes_segment_0() {
        let dir = temp_dir("legacy");
        fs::create_dir_all(&dir).unwrap();
        let legacy = dir.join("messages.jsonl");
        fs::write(&legacy, "{\"seq\":1}\n{\"seq\":2}\n").unwrap();
        let segs = dir.join("messages");
        let (mut s, opened) = open(&segs, Some(&legacy), retention(100, 2)).unwrap();
        assert!(!legacy.exists());
        assert_eq!((seqs(&opened), s.appended()), ((1..=2).collect(), 2));
        s.append_all(&[&record(3)]).unwrap();
        assert_eq!(s.numbers(), [0, 1]);
        drop(s);
        let (s, opened) = open(&segs, Some(&legacy), retention(100, 2)).unwrap();
        assert_eq!((seqs(&opened), s.appended()), ((1..=3).collect(), 3));
    }

    #[test]
    fn a_retention_in_bytes_keeps_the_newest_bytes() {
        let dir = temp_dir("bytes");
        let keep = SegmentRetention {
            records: 0,
            bytes: 100,
            segment_records: 0,
            segment_bytes: 40,
        };
        let (mut s, _) = open(&dir, None, keep).unwrap();
        for i in 1..=50 {
            s.append_all(&[&record(i)]).unwrap();
        }
        drop(s);
        let (s, opened) = open(&dir, None, keep).unwrap();
        let bytes: usize = opened.iter().map(|r| r.len() + 1).sum();
        assert!((100..100 + 2 * 40 + 12).contains(&bytes), "{bytes}");
        assert_eq!(seqs(&opened).last(), Some(&50));
        assert_eq!(s.appended(), 50);
    }
}
