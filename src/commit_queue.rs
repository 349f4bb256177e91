//! The committer: a journal's one writer, a thread that appends everything queued in one
//! write and one fdatasync (group commit), then runs each record's callback in two stages:
//! the first in submission order right after the append, so a store changes its memory in
//! journal order and only once durable; the second, which it returns, answers. A small batch
//! is answered by the committer (waking a thread costs more); a larger one by the ack thread,
//! so that applying one batch overlaps the sync of the next.

use std::path::PathBuf;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::mpsc::{self, Receiver, Sender};
use std::sync::{Arc, Condvar, Mutex};
use std::thread;

use crate::journal;
use crate::segments::Segments;

/// Where a committer writes.
pub trait Sink: Send + 'static {
    /// Appends `records` durably and together, or none of them.
    fn append_all(&mut self, records: &[&[u8]]) -> Result<(), journal::Error>;

    /// The file records go to now, for errors.
    fn path(&self) -> PathBuf;
}

impl Sink for Segments {
    fn append_all(&mut self, records: &[&[u8]]) -> Result<(), journal::Error> {
        Segments::append_all(self, records)
    }

    fn path(&self) -> PathBuf {
        Segments::path(self).to_path_buf()
    }
}

/// What a callback learns: durable, or the journal error shared by its batch.
pub type Written = Result<(), Arc<journal::Error>>;

/// A callback's second stage: what answers.
pub type AfterApply = Box<dyn FnOnce() + Send>;

type Apply = Box<dyn FnOnce(Written) -> AfterApply + Send>;

type Submission = (Vec<Vec<u8>>, Apply);

/// The most records written with one sync.
const MAX_BATCH: usize = 4096;

/// The largest batch whose callbacks the committer runs itself: inline rather than through
/// the ack thread took 64-writer message appends from 0.75 to 0.85 of the pre-issue-23
/// binary's (`scripts/ab-throughput.sh`, medians of three).
const INLINE_CALLBACKS: usize = 64;

/// A one-value hand-off to a caller waiting on its own thread. A mutex and condvar: a channel
/// per write allocates cache-aligned blocks, about 40 heap bytes per run started (bench-lifecycle).
pub fn promise<T>() -> (Promise<T>, Waiting<T>) {
    let shot = Arc::new((Mutex::new(None), Condvar::new()));
    (Promise(Some(shot.clone())), Waiting(shot))
}

/// The value (`Some(None)`: the promise was dropped unkept) and its signal.
type Shot<T> = (Mutex<Option<Option<T>>>, Condvar);

/// The committer's half of [`promise`].
pub struct Promise<T>(Option<Arc<Shot<T>>>);

impl<T> Promise<T> {
    pub fn keep(mut self, value: T) {
        self.set(Some(value));
    }

    fn set(&mut self, value: Option<T>) {
        if let Some(shot) = self.0.take() {
            *shot.0.lock().unwrap_or_else(|e| e.into_inner()) = Some(value);
            shot.1.notify_one();
        }
    }
}

impl<T> Drop for Promise<T> {
    /// Wakes the caller empty-handed: the stage that held it panicked.
    fn drop(&mut self) {
        self.set(None);
    }
}

/// What a caller waits for: the value of its [`Promise`].
pub struct Waiting<T>(Arc<Shot<T>>);

impl<T> Waiting<T> {
    /// The promised value; `None` only when the stage that held the promise panicked.
    pub fn wait(self) -> Option<T> {
        let (value, ready) = &*self.0;
        let mut value = value.lock().unwrap_or_else(|e| e.into_inner());
        loop {
            if let Some(v) = value.take() {
                return v;
            }
            value = ready.wait(value).unwrap_or_else(|e| e.into_inner());
        }
    }
}

/// A queue of records waiting to become durable.
pub struct CommitQueue {
    /// `Sender` is `Sync`: callers on many threads send without a lock of ours.
    tx: Sender<Submission>,
    /// For the error of a record queued after the committer stopped.
    path: PathBuf,
}

impl CommitQueue {
    /// Starts the committer thread for `sink`; its ack thread starts with the first batch too
    /// large to answer inline, so an idle store has one thread.
    pub fn start(mut sink: impl Sink, name: &str) -> std::io::Result<CommitQueue> {
        let path = sink.path();
        let (tx, rx) = mpsc::channel();
        let name = name.to_string();
        thread::Builder::new()
            .name(format!("commit-{name}"))
            .spawn(move || commit_loop(&mut sink, &rx, &name))?;
        Ok(CommitQueue { tx, path })
    }

    /// Queues `record` (one line). `apply` runs once its batch is appended (or failed), before
    /// any later record's `apply`; the [`AfterApply`] it returns runs afterwards.
    pub fn submit_in_order(
        &self,
        record: Vec<u8>,
        apply: impl FnOnce(Written) -> AfterApply + Send + 'static,
    ) {
        self.send(vec![record], Box::new(apply));
    }

    /// [`CommitQueue::submit_in_order`] for `records`, `apply`'s result going to the caller
    /// waiting on its own thread, so the answer is made and logged there.
    pub fn submit_waiting<T: Send + 'static>(
        &self,
        records: Vec<Vec<u8>>,
        apply: impl FnOnce(Written) -> T + Send + 'static,
    ) -> Waiting<T> {
        let (promise, waiting) = promise();
        let apply = move |outcome| -> AfterApply {
            promise.keep(apply(outcome));
            Box::new(|| ())
        };
        self.send(records, Box::new(apply));
        waiting
    }

    /// Appends `records` durably and together, or none of them, and returns once they are,
    /// after the first stages of every record queued before them.
    pub fn append_all(&self, records: &[&[u8]]) -> Result<(), journal::Error> {
        let records = records.iter().map(|r| r.to_vec()).collect();
        let waiting = self.submit_waiting(records, |outcome| outcome);
        let outcome = waiting.wait().unwrap_or_else(|| Err(self.closed()));
        outcome.map_err(|e| Arc::try_unwrap(e).unwrap_or_else(|e| e.duplicate()))
    }

    fn closed(&self) -> Arc<journal::Error> {
        Arc::new(journal::Error::closed(&self.path))
    }

    fn send(&self, records: Vec<Vec<u8>>, apply: Apply) {
        if let Err(mpsc::SendError((_, apply))) = self.tx.send((records, apply)) {
            // The committer is gone. The callback runs on a thread of its own, as the caller may
            // hold a lock it takes; failing that, the request goes unanswered until it times out.
            let err = self.closed();
            let answer = move || run_callbacks(&Err(err), vec![apply]);
            let _ = thread::Builder::new()
                .name("ack-closed".into())
                .spawn(answer);
        }
    }
}

/// The ack thread, running handed batches' callbacks in order, `unfinished` counting those not
/// done; `None` when it cannot start.
fn start_acks(name: &str, unfinished: &Arc<AtomicUsize>) -> Option<Sender<(Written, Vec<Apply>)>> {
    let (tx, rx) = mpsc::channel::<(Written, Vec<Apply>)>();
    let left = unfinished.clone();
    let acks = move || {
        while let Ok((outcome, applies)) = rx.recv() {
            run_callbacks(&outcome, applies);
            left.fetch_sub(1, Ordering::Release);
        }
    };
    let spawned = thread::Builder::new()
        .name(format!("ack-{name}"))
        .spawn(acks);
    spawned.ok().map(|_| tx)
}

fn commit_loop(sink: &mut impl Sink, rx: &Receiver<Submission>, name: &str) {
    let unfinished = Arc::new(AtomicUsize::new(0));
    let mut ack = None;
    let mut records: Vec<Vec<u8>> = Vec::new();
    while let Ok(first) = rx.recv() {
        let (mut applies, mut next) = (Vec::new(), Some(first));
        while let Some((group, apply)) = next {
            records.extend(group);
            applies.push(apply);
            next = (records.len() < MAX_BATCH)
                .then(|| rx.try_recv().ok())
                .flatten();
        }
        let refs: Vec<&[u8]> = records.iter().map(Vec::as_slice).collect();
        let outcome = sink.append_all(&refs).map_err(Arc::new);
        records.clear();
        // A small batch with nothing unfinished before it is answered here; order is kept,
        // as only this thread hands batches over.
        if applies.len() <= INLINE_CALLBACKS && unfinished.load(Ordering::Acquire) == 0 {
            run_callbacks(&outcome, applies);
            continue;
        }
        if ack.is_none() {
            ack = start_acks(name, &unfinished);
        }
        unfinished.fetch_add(1, Ordering::Relaxed);
        let sent = match &ack {
            Some(ack) => ack.send((outcome, applies)).map_err(|e| e.0),
            None => Err((outcome, applies)),
        };
        if let Err((o, applies)) = sent {
            // No ack thread; answer here rather than never.
            run_callbacks(&o, applies);
            unfinished.fetch_sub(1, Ordering::Relaxed);
        }
    }
}

/// Runs the first stages in order, then the second ones. A panic in either stops the server
/// (`serve`'s panic hook): memory could no longer be trusted to match the journal.
fn run_callbacks(outcome: &Written, applies: Vec<Apply>) {
    let replies: Vec<AfterApply> = applies.into_iter().map(|a| a(outcome.clone())).collect();
    for reply in replies {
        reply();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::journal::Journal;
    use crate::testing::TempDir;
    use std::sync::mpsc::channel;

    #[test]
    fn a_promise_hands_its_value_over_threads_and_one_dropped_unkept_wakes_empty() {
        let (kept, waiting) = promise();
        let keeper = thread::spawn(move || kept.keep(7u32));
        assert_eq!(waiting.wait(), Some(7));
        keeper.join().unwrap();
        let (unkept, waiting) = promise::<u32>();
        let dropper = thread::spawn(move || drop(unkept));
        assert_eq!(waiting.wait(), None);
        dropper.join().unwrap();
    }

    /// A journal that counts its batches' sizes.
    struct Counted(Journal, Arc<Mutex<Vec<usize>>>);

    impl Sink for Counted {
        fn append_all(&mut self, records: &[&[u8]]) -> Result<(), journal::Error> {
            self.0.append_all(records)?;
            self.1.lock().unwrap().push(records.len());
            Ok(())
        }

        fn path(&self) -> PathBuf {
            self.0.path().to_path_buf()
        }
    }

    fn counted(dir: &TempDir) -> (CommitQueue, Arc<Mutex<Vec<usize>>>) {
        let journal = Journal::open(dir.join("q.jsonl")).unwrap().0;
        let batches = Arc::new(Mutex::new(Vec::new()));
        let q = CommitQueue::start(Counted(journal, batches.clone()), "test").unwrap();
        (q, batches)
    }

    #[test]
    fn records_queued_meanwhile_share_one_sync_and_callbacks_follow_it() {
        let dir = TempDir::new("cq");
        let (q, batches) = counted(&dir);
        // The first record's first stage, which the committer runs itself,
        // holds it until the other 499 are queued: they must then become
        // durable together, with one sync.
        let (release, released) = channel::<()>();
        let (holding, held) = channel::<()>();
        let (tx, rx) = channel();
        let first = tx.clone();
        q.submit_in_order(b"{\"i\":0}".to_vec(), move |o| {
            holding.send(()).unwrap();
            released.recv().unwrap();
            Box::new(move || first.send((0, o.is_ok())).unwrap())
        });
        held.recv().unwrap();
        for i in 1..500u32 {
            let tx = tx.clone();
            q.submit_in_order(format!("{{\"i\":{i}}}").into_bytes(), move |o| {
                Box::new(move || tx.send((i, o.is_ok())).unwrap())
            });
        }
        release.send(()).unwrap();
        let got: Vec<(u32, bool)> = (0..500).map(|_| rx.recv().unwrap()).collect();
        assert_eq!(got, (0..500).map(|i| (i, true)).collect::<Vec<_>>());
        assert_eq!(*batches.lock().unwrap(), [1, 499], "one sync for the rest");
        drop(q);
        let (_, replay) = Journal::open(dir.join("q.jsonl")).unwrap();
        assert_eq!(replay.records.len(), 500);
        assert_eq!(replay.records[499], b"{\"i\":499}");
    }

    #[test]
    fn first_stages_run_in_submission_order_after_the_append() {
        let dir = TempDir::new("cq");
        let (q, batches) = counted(&dir);
        let order = Arc::new(Mutex::new(Vec::new()));
        let (tx, rx) = channel();
        for i in 0..300usize {
            let (order, batches, tx) = (order.clone(), batches.clone(), tx.clone());
            q.submit_in_order(format!("{{\"i\":{i}}}").into_bytes(), move |o| {
                // The record is durable before its first stage runs.
                let appended: usize = batches.lock().unwrap().iter().sum();
                assert!(o.is_ok() && appended > i);
                order.lock().unwrap().push(i);
                Box::new(move || tx.send(i).unwrap())
            });
        }
        let mut answered: Vec<usize> = (0..300).map(|_| rx.recv().unwrap()).collect();
        answered.sort();
        assert_eq!(answered, (0..300).collect::<Vec<_>>());
        assert_eq!(*order.lock().unwrap(), (0..300).collect::<Vec<_>>());
    }

    #[test]
    fn a_waiting_append_lands_whole_and_a_failed_one_changes_nothing() {
        let dir = TempDir::new("cq");
        let (q, _) = counted(&dir);
        let q = Arc::new(q);
        let writers: Vec<_> = (0..4u32)
            .map(|t| {
                let q = q.clone();
                thread::spawn(move || {
                    for i in 0..50u32 {
                        let a = format!("{{\"t\":{t},\"i\":{i}}}");
                        let b = format!("{{\"t\":{t},\"i\":{i},\"pair\":1}}");
                        q.append_all(&[a.as_bytes(), b.as_bytes()]).unwrap();
                    }
                })
            })
            .collect();
        writers.into_iter().for_each(|w| w.join().unwrap());
        journal::faults::fail_writes(dir.path(), 0, 1);
        let err = q.append_all(&[b"{\"lost\":1}"]).unwrap_err();
        assert!(err.to_string().contains("append failed"), "{err}");
        drop(q);
        let records = Journal::open(dir.join("q.jsonl")).unwrap().1.records;
        assert_eq!(records.len(), 400, "every pair, and not the failed record");
        for pair in records.chunks(2) {
            let text = String::from_utf8(pair[1].clone()).unwrap();
            assert!(
                text.starts_with(&String::from_utf8(pair[0].clone()).unwrap()[..pair[0].len() - 1])
            );
        }
    }
}
