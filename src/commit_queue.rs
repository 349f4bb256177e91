//! A committer thread in front of a journal: callers queue a record with a
//! callback and return at once; the thread appends everything queued in
//! one write and one fdatasync, then runs each callback in order.
//!
//! This is group commit without blocking the caller: an HTTP worker hands
//! over its request and is free for the next one, so a handful of workers
//! can keep thousands of durable appends a second in flight.

use std::sync::mpsc::{self, Receiver, Sender};
use std::sync::{Arc, Mutex};
use std::thread;

use crate::journal::{self, Journal};

/// What a callback learns: durable, or the journal error shared by its batch.
pub type Outcome = Result<(), Arc<journal::Error>>;

type Done = Box<dyn FnOnce(Outcome) + Send>;

/// The largest batch written with one sync; bounds the write size.
const MAX_BATCH: usize = 4096;

/// A queue of records waiting to become durable. Safe to share across threads.
pub struct CommitQueue {
    tx: Mutex<Sender<(Vec<u8>, Done)>>,
    journal: Arc<Journal>,
}

impl CommitQueue {
    /// Starts the committer thread for `journal`.
    pub fn start(journal: Arc<Journal>, name: &str) -> std::io::Result<CommitQueue> {
        let (tx, rx) = mpsc::channel();
        let j = journal.clone();
        thread::Builder::new()
            .name(format!("commit-{name}"))
            .spawn(move || commit_loop(&j, &rx))?;
        Ok(CommitQueue {
            tx: Mutex::new(tx),
            journal,
        })
    }

    /// Queues `record` (one line, no `\n`); `done` runs on the committer
    /// thread once the record is durable or its batch failed. Records are
    /// written in the order they are submitted.
    pub fn submit(&self, record: Vec<u8>, done: impl FnOnce(Outcome) + Send + 'static) {
        // The sender is only ever used under this lock, which no code path
        // can panic while holding, so poisoning cannot hide a broken state.
        let tx = self.tx.lock().unwrap_or_else(|e| e.into_inner());
        if let Err(mpsc::SendError((_, done))) = tx.send((record, Box::new(done))) {
            // The committer thread is gone; nothing can become durable.
            let err = journal::Error::closed(self.journal.path());
            done(Err(Arc::new(err)));
        }
    }

    /// The journal behind the queue.
    pub fn journal(&self) -> &Journal {
        &self.journal
    }
}

fn commit_loop(journal: &Journal, rx: &Receiver<(Vec<u8>, Done)>) {
    let mut batch: Vec<(Vec<u8>, Done)> = Vec::new();
    while let Ok(first) = rx.recv() {
        batch.push(first);
        while batch.len() < MAX_BATCH {
            match rx.try_recv() {
                Ok(item) => batch.push(item),
                Err(_) => break,
            }
        }
        let records: Vec<&[u8]> = batch.iter().map(|(r, _)| r.as_slice()).collect();
        let outcome = journal.append_all(&records).map_err(Arc::new);
        for (_, done) in batch.drain(..) {
            // A panicking callback must not stop every later commit.
            let o = outcome.clone();
            let _ = std::panic::catch_unwind(std::panic::AssertUnwindSafe(move || done(o)));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::mpsc::channel;

    #[test]
    fn callbacks_run_in_order_after_the_record_is_durable() {
        let dir = std::env::temp_dir().join(format!("cq-{}-{}", std::process::id(), line!()));
        let _ = std::fs::remove_dir_all(&dir);
        let path = dir.join("q.jsonl");
        let (journal, _) = Journal::open(&path).unwrap();
        let q = CommitQueue::start(Arc::new(journal), "test").unwrap();
        let (tx, rx) = channel();
        for i in 0..500u32 {
            let tx = tx.clone();
            q.submit(format!("{{\"i\":{i}}}").into_bytes(), move |o| {
                tx.send((i, o.is_ok())).unwrap();
            });
        }
        let got: Vec<(u32, bool)> = (0..500).map(|_| rx.recv().unwrap()).collect();
        assert_eq!(got, (0..500).map(|i| (i, true)).collect::<Vec<_>>());
        assert!(q.journal().syncs() <= 500);
        drop(q);
        let (_, replay) = Journal::open(&path).unwrap();
        assert_eq!(replay.records.len(), 500);
        assert_eq!(replay.records[499], b"{\"i\":499}");
        let _ = std::fs::remove_dir_all(&dir);
    }
}
