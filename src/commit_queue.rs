//! A committer thread in front of a journal: callers queue a record with a
//! callback and return at once; the thread appends everything queued in
//! one write and one fdatasync, then runs each callback.
//!
//! This is group commit: concurrent writers share one sync however many
//! there are. A connection thread that queued a record waits on its
//! request's answer, which a callback sends once the record is durable,
//! and writes it itself (see `http::answer`). The callbacks
//! of a large batch are spread over a few ack threads while the committer
//! syncs the next batch; a small batch is answered by the committer itself,
//! since waking a thread costs more than answering a few requests, and the
//! next batch gathers meanwhile. Callbacks run in no particular order.
//!
//! A store that must change its memory only once a record is durable, and
//! in the journal's order, queues it with [`CommitQueue::submit_in_order`]:
//! its first stage runs in submission order right after the append, and
//! hands back the second stage, which answers. With [`Acks::InOrder`] the
//! first stages run on a thread of their own, so that applying one batch
//! overlaps the sync of the next.

use std::path::PathBuf;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::mpsc::{self, Receiver, Sender};
use std::sync::{Arc, Mutex};
use std::thread;

use crate::journal::{self, Journal};
use crate::segments::Segments;

/// Where a committer writes: one journal, or a journal cut into segments.
pub trait Sink: Send + 'static {
    /// Appends `records` durably and together, or none of them.
    fn append_all(&mut self, records: &[&[u8]]) -> Result<(), journal::Error>;

    /// The file records go to now, for errors.
    fn path(&self) -> PathBuf;
}

impl Sink for Arc<Journal> {
    fn append_all(&mut self, records: &[&[u8]]) -> Result<(), journal::Error> {
        Journal::append_all(self, records)
    }

    fn path(&self) -> PathBuf {
        Journal::path(self).to_path_buf()
    }
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

/// The second stage of a callback: what answers, in no particular order.
pub type AfterApply = Box<dyn FnOnce() + Send>;

type Apply = Box<dyn FnOnce(Written) -> AfterApply + Send>;

/// The largest batch written with one sync; bounds the write size.
const MAX_BATCH: usize = 4096;

/// The largest batch whose callbacks the committer runs itself. With 64
/// writers, batches were 3 or 4 records and answering them inline raised
/// acknowledged appends from about 15,000 to 18,500 a second.
const INLINE_CALLBACKS: usize = 16;

/// A queue of records waiting to become durable. Safe to share across threads.
pub struct CommitQueue {
    tx: Mutex<Sender<(Vec<u8>, Apply)>>,
    /// The file written when the queue started, for the error of a record
    /// queued after the committer stopped.
    path: PathBuf,
}

/// Where a queue's callbacks run.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Acks {
    /// The committer runs the first stages itself, and answers a small
    /// batch too; the replies of a large one are spread over this many
    /// threads (at least one).
    Spread(usize),
    /// One thread runs the first stages and then the replies of each batch,
    /// batch after batch, while the committer writes and syncs the next:
    /// for a store whose first stages do real work, which would otherwise
    /// wait for every sync.
    InOrder,
}

/// How the committer hands over a batch's callbacks.
enum Handoff {
    Spread(Vec<Sender<Vec<AfterApply>>>),
    /// The thread, and how many batches it has not finished.
    InOrder(Sender<(Written, Vec<Apply>)>, Arc<AtomicUsize>),
}

impl CommitQueue {
    /// Starts the committer thread for `sink`, and the threads `acks` asks
    /// for to run callbacks.
    pub fn start(mut sink: impl Sink, name: &str, acks: Acks) -> std::io::Result<CommitQueue> {
        let path = sink.path();
        let (tx, rx) = mpsc::channel();
        let handoff = match acks {
            Acks::Spread(n) => {
                let mut senders = Vec::with_capacity(n.max(1));
                for i in 0..n.max(1) {
                    let (ack_tx, ack_rx) = mpsc::channel::<Vec<AfterApply>>();
                    thread::Builder::new()
                        .name(format!("ack-{name}-{i}"))
                        .spawn(move || {
                            while let Ok(replies) = ack_rx.recv() {
                                run_replies(replies);
                            }
                        })?;
                    senders.push(ack_tx);
                }
                Handoff::Spread(senders)
            }
            Acks::InOrder => {
                let (ack_tx, ack_rx) = mpsc::channel::<(Written, Vec<Apply>)>();
                let unfinished = Arc::new(AtomicUsize::new(0));
                let left = unfinished.clone();
                thread::Builder::new()
                    .name(format!("ack-{name}"))
                    .spawn(move || {
                        while let Ok((outcome, applies)) = ack_rx.recv() {
                            run_replies(run_applies(&outcome, applies));
                            left.fetch_sub(1, Ordering::Release);
                        }
                    })?;
                Handoff::InOrder(ack_tx, unfinished)
            }
        };
        thread::Builder::new()
            .name(format!("commit-{name}"))
            .spawn(move || commit_loop(&mut sink, &rx, &handoff))?;
        Ok(CommitQueue {
            tx: Mutex::new(tx),
            path,
        })
    }

    /// Queues `record` (one line, no `\n`); `done` runs on the committer or
    /// an ack thread once the record is durable or its batch failed. Records are written
    /// in the order they are submitted; callbacks may run in any order.
    pub fn submit(&self, record: Vec<u8>, done: impl FnOnce(Written) + Send + 'static) {
        self.submit_in_order(record, move |o| -> AfterApply { Box::new(move || done(o)) });
    }

    /// Queues `record` like [`CommitQueue::submit`], with a callback in two
    /// stages: `apply` runs once the record's batch is appended (or
    /// failed), before any later record's `apply`, so a store can change
    /// its memory in the journal's order and only once the record is
    /// durable; the [`AfterApply`] it returns runs afterwards (see [`Acks`]).
    pub fn submit_in_order(
        &self,
        record: Vec<u8>,
        apply: impl FnOnce(Written) -> AfterApply + Send + 'static,
    ) {
        // The sender is only ever used under this lock, which no code path
        // can panic while holding, so poisoning cannot hide a broken state.
        let tx = self.tx.lock().unwrap_or_else(|e| e.into_inner());
        if let Err(mpsc::SendError((_, apply))) = tx.send((record, Box::new(apply))) {
            // The committer thread is gone; nothing can become durable. The
            // callback runs on a thread of its own, as the caller may hold a
            // lock it takes.
            let err = Arc::new(journal::Error::closed(&self.path));
            let answer = move || run_replies(run_applies(&Err(err), vec![apply]));
            // Should even that thread not start, the request goes unanswered
            // until its connection times out.
            let _ = thread::Builder::new()
                .name("ack-closed".into())
                .spawn(answer);
        }
    }
}

fn commit_loop(sink: &mut impl Sink, rx: &Receiver<(Vec<u8>, Apply)>, handoff: &Handoff) {
    let mut records: Vec<Vec<u8>> = Vec::new();
    let mut applies: Vec<Apply> = Vec::new();
    while let Ok((record, apply)) = rx.recv() {
        records.push(record);
        applies.push(apply);
        while records.len() < MAX_BATCH {
            match rx.try_recv() {
                Ok((record, apply)) => {
                    records.push(record);
                    applies.push(apply);
                }
                Err(_) => break,
            }
        }
        let refs: Vec<&[u8]> = records.iter().map(Vec::as_slice).collect();
        let outcome = sink.append_all(&refs).map_err(Arc::new);
        records.clear();
        let acks = match handoff {
            // A small batch with nothing before it unfinished is answered
            // here, as waking the thread costs more; order is kept, since
            // only this thread hands batches over.
            Handoff::InOrder(_, unfinished)
                if applies.len() <= INLINE_CALLBACKS && unfinished.load(Ordering::Acquire) == 0 =>
            {
                run_replies(run_applies(&outcome, std::mem::take(&mut applies)));
                continue;
            }
            Handoff::InOrder(ack, unfinished) => {
                unfinished.fetch_add(1, Ordering::Relaxed);
                if let Err(mpsc::SendError((o, applies))) =
                    ack.send((outcome, std::mem::take(&mut applies)))
                {
                    // The ack thread is gone; answer here rather than never.
                    run_replies(run_applies(&o, applies));
                    unfinished.fetch_sub(1, Ordering::Relaxed);
                }
                continue;
            }
            Handoff::Spread(acks) => acks,
        };
        let mut replies = run_applies(&outcome, std::mem::take(&mut applies));
        if replies.len() <= INLINE_CALLBACKS {
            run_replies(replies);
            continue;
        }
        let per_thread = replies.len().div_ceil(acks.len());
        for ack in acks {
            if replies.is_empty() {
                break;
            }
            let rest = replies.split_off(per_thread.min(replies.len()));
            let chunk = std::mem::replace(&mut replies, rest);
            if let Err(mpsc::SendError(chunk)) = ack.send(chunk) {
                // An ack thread is gone; answer here rather than never.
                run_replies(chunk);
            }
        }
    }
}

/// Runs the first stages in order; a panicking one answers nothing, and
/// must not stop the others.
fn run_applies(outcome: &Written, applies: Vec<Apply>) -> Vec<AfterApply> {
    let mut replies = Vec::with_capacity(applies.len());
    for apply in applies {
        let o = outcome.clone();
        let run = std::panic::AssertUnwindSafe(move || apply(o));
        if let Ok(reply) = std::panic::catch_unwind(run) {
            replies.push(reply);
        }
    }
    replies
}

fn run_replies(replies: Vec<AfterApply>) {
    for reply in replies {
        // A panicking reply must not stop every later acknowledgement.
        let _ = std::panic::catch_unwind(std::panic::AssertUnwindSafe(reply));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::TempDir;
    use std::sync::mpsc::channel;

    #[test]
    fn records_queued_meanwhile_share_one_sync_and_callbacks_follow_it() {
        let dir = TempDir::new("cq");
        let path = dir.join("q.jsonl");
        let journal = Arc::new(Journal::open(&path).unwrap().0);
        let q = CommitQueue::start(journal.clone(), "test", Acks::Spread(3)).unwrap();
        // The first record's callback, which the committer runs itself,
        // holds it until the other 499 are queued: they must then become
        // durable together, with one sync.
        let (release, released) = channel::<()>();
        let (holding, held) = channel::<()>();
        let (tx, rx) = channel();
        let first = tx.clone();
        q.submit(b"{\"i\":0}".to_vec(), move |o| {
            holding.send(()).unwrap();
            released.recv().unwrap();
            first.send((0, o.is_ok())).unwrap();
        });
        held.recv().unwrap();
        for i in 1..500u32 {
            let tx = tx.clone();
            q.submit(format!("{{\"i\":{i}}}").into_bytes(), move |o| {
                tx.send((i, o.is_ok())).unwrap();
            });
        }
        release.send(()).unwrap();
        let mut got: Vec<(u32, bool)> = (0..500).map(|_| rx.recv().unwrap()).collect();
        got.sort();
        assert_eq!(got, (0..500).map(|i| (i, true)).collect::<Vec<_>>());
        assert_eq!(
            journal.syncs(),
            2,
            "one sync for the first, one for the rest"
        );
        drop(q);
        let (_, replay) = Journal::open(&path).unwrap();
        assert_eq!(replay.records.len(), 500);
        assert_eq!(replay.records[499], b"{\"i\":499}");
    }

    #[test]
    fn first_stages_run_in_submission_order_after_the_append() {
        let dir = TempDir::new("cq");
        let path = dir.join("q.jsonl");
        let journal = Arc::new(Journal::open(&path).unwrap().0);
        let q = CommitQueue::start(journal.clone(), "test", Acks::InOrder).unwrap();
        let order = Arc::new(Mutex::new(Vec::new()));
        let (tx, rx) = channel();
        for i in 0..300u64 {
            let (order, journal, tx) = (order.clone(), journal.clone(), tx.clone());
            q.submit_in_order(format!("{{\"i\":{i}}}").into_bytes(), move |o| {
                // The record is durable before its first stage runs.
                assert!(o.is_ok() && journal.appended() > i);
                order.lock().unwrap().push(i);
                Box::new(move || tx.send(i).unwrap())
            });
        }
        let mut answered: Vec<u64> = (0..300).map(|_| rx.recv().unwrap()).collect();
        answered.sort();
        assert_eq!(answered, (0..300).collect::<Vec<_>>());
        assert_eq!(*order.lock().unwrap(), (0..300).collect::<Vec<_>>());
    }
}
