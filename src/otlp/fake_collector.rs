//! A fake OTLP collector for the exporter's tests: one connection at a
//! time on 127.0.0.1:0, answering each request as scripted.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

/// What the fake collector saw of one request.
pub(crate) struct Seen {
    pub(crate) head: String,
    pub(crate) body: String,
}

#[derive(Default)]
struct Log {
    seen: Mutex<Vec<Seen>>,
    grew: Condvar,
}

/// A one-connection-at-a-time collector on 127.0.0.1:0. Request `i` is
/// answered with `answers[i]`, or `then` past the end; `None` means
/// read the request and never answer.
pub(crate) struct Collector {
    addr: SocketAddr,
    log: Arc<Log>,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl Collector {
    pub(crate) fn start(answers: Vec<Option<u16>>, then: Option<u16>) -> Collector {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let log = Arc::new(Log::default());
        let stop = Arc::new(AtomicBool::new(false));
        let (l, s) = (log.clone(), stop.clone());
        let thread = thread::spawn(move || {
            let mut held = Vec::new();
            for (i, conn) in listener.incoming().enumerate() {
                if s.load(Ordering::SeqCst) {
                    break;
                }
                let mut conn = conn.unwrap();
                conn.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
                let seen = read_request(&mut conn);
                l.seen.lock().unwrap().push(seen);
                l.grew.notify_all();
                match answers.get(i).copied().unwrap_or(then) {
                    Some(code) => {
                        let answer = format!(
                            "HTTP/1.1 {code} X\r\nContent-Type: application/json\r\nContent-Length: 2\r\n\r\n{{}}"
                        );
                        let _ = conn.write_all(answer.as_bytes());
                    }
                    None => held.push(conn),
                }
            }
        });
        Collector {
            addr,
            log,
            stop,
            thread: Some(thread),
        }
    }

    pub(crate) fn endpoint(&self) -> String {
        format!("http://{}", self.addr)
    }

    pub(crate) fn seen(&self) -> MutexGuard<'_, Vec<Seen>> {
        self.log.seen.lock().unwrap()
    }

    /// Waits until `n` requests arrived, or `timeout` passed.
    pub(crate) fn wait_for(&self, n: usize, timeout: Duration) -> bool {
        let deadline = Instant::now() + timeout;
        let mut seen = self.seen();
        while seen.len() < n {
            let Some(left) = deadline.checked_duration_since(Instant::now()) else {
                return false;
            };
            seen = self.log.grew.wait_timeout(seen, left).unwrap().0;
        }
        true
    }
}

impl Drop for Collector {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        // A connection wakes the blocked accept so the thread can see
        // the flag and end.
        let _ = TcpStream::connect(self.addr);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

fn read_request(conn: &mut TcpStream) -> Seen {
    let mut raw = Vec::new();
    let mut buf = [0u8; 4096];
    let head_end = loop {
        if let Some(p) = raw.windows(4).position(|w| w == b"\r\n\r\n") {
            break p + 4;
        }
        match conn.read(&mut buf) {
            Ok(0) | Err(_) => break raw.len(),
            Ok(n) => raw.extend_from_slice(&buf[..n]),
        }
    };
    let head = String::from_utf8_lossy(&raw[..head_end]).to_string();
    let length: usize = head
        .lines()
        .find_map(|l| {
            l.to_ascii_lowercase()
                .strip_prefix("content-length:")
                .map(|v| v.trim().parse().unwrap())
        })
        .unwrap_or(0);
    while raw.len() < head_end + length {
        match conn.read(&mut buf) {
            Ok(0) | Err(_) => break,
            Ok(n) => raw.extend_from_slice(&buf[..n]),
        }
    }
    Seen {
        head,
        body: String::from_utf8_lossy(&raw[head_end..]).to_string(),
    }
}
