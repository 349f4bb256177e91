//! Crash consistency: clients append messages and move runs through start and complete on
//! keep-alive connections while the server is SIGKILLed mid-flight. After a restart on the same
//! data dir, everything that was acknowledged must be there, the journals must be whole lines,
//! and the server must take new writes.

mod common;

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

use common::{get, get_json, poll_until, post_json, Client, ServerProc, TempDir};
use serde_json::{json, Value};

const THREADS: usize = 8;
/// Acknowledgements to wait for before the kill; the clients keep going meanwhile.
const ACKS_BEFORE_KILL: usize = 1500;
/// Bounds on each client, so a server that never dies cannot keep the test running.
const MAX_OPS_PER_THREAD: usize = 4000;
const TIME_LIMIT: Duration = Duration::from_secs(15);
/// More pages than the bound on messages could fill.
const MAX_PAGES: usize = (THREADS * MAX_OPS_PER_THREAD) / 1000 + 2;

/// What one client saw acknowledged.
#[derive(Default)]
struct Acked {
    /// Message ids and bodies, in the order this client got them acknowledged.
    messages: Vec<(String, Value)>,
    /// Runs whose start was acknowledged, and whether their completion was too.
    runs: Vec<(String, bool)>,
    /// Answers that were neither 2xx nor cut off by the kill.
    unexpected: Vec<String>,
}

/// POSTs `body` to `path`; the answer's JSON when it is a 2xx. `None` when the server is gone
/// (whatever was in flight is unacknowledged) or answered otherwise, which goes in
/// `acked.unexpected`.
fn post_acked(conn: &mut Client, path: &str, body: &Value, acked: &mut Acked) -> Option<Value> {
    let headers = [("Content-Type", "application/json")];
    let bytes = serde_json::to_vec(body).expect("serialize");
    let r = conn.send("POST", path, &headers, Some(&bytes)).ok()?;
    if !(200..300).contains(&r.status) {
        let text = String::from_utf8_lossy(&r.body);
        acked
            .unexpected
            .push(format!("POST {path}: {} {text}", r.status));
        return None;
    }
    Some(r.json())
}

/// Cycles through append, append, start, complete until told to stop, a bound is hit, or the
/// connection dies with the server.
fn client(addr: SocketAddr, t: usize, acks: &AtomicUsize, stop: &AtomicBool) -> Acked {
    let mut acked = Acked::default();
    let Ok(mut conn) = Client::connect(addr) else {
        return acked;
    };
    let deadline = Instant::now() + TIME_LIMIT;
    for i in 0..MAX_OPS_PER_THREAD {
        if stop.load(Ordering::Relaxed) || Instant::now() >= deadline {
            break;
        }
        let (path, body) = match i % 4 {
            0 | 1 => (
                "/api/v1/messages".to_string(),
                json!({"type": "crash", "body": {"t": t, "i": i}}),
            ),
            2 => (
                "/api/v1/runs".to_string(),
                json!({"run_id": format!("crash-{t}-{i}"), "agent": format!("agent-{t}")}),
            ),
            _ => match acked.runs.last() {
                Some((id, false)) => (format!("/api/v1/runs/{id}/complete"), json!({})),
                _ => continue,
            },
        };
        let Some(answer) = post_acked(&mut conn, &path, &body, &mut acked) else {
            break;
        };
        match i % 4 {
            0 | 1 => {
                let id = answer["msg_id"].as_str().expect("msg_id").to_string();
                acked.messages.push((id, body["body"].clone()));
            }
            2 => {
                assert_eq!(answer["status"], "running");
                acked
                    .runs
                    .push((body["run_id"].as_str().unwrap().to_string(), false));
            }
            _ => {
                assert_eq!(answer["status"], "completed");
                if let Some(run) = acked.runs.last_mut() {
                    run.1 = true;
                }
            }
        }
        acks.fetch_add(1, Ordering::Relaxed);
        if conn.server_will_close() {
            match Client::connect(addr) {
                Ok(c) => conn = c,
                Err(_) => break,
            }
        }
    }
    acked
}

/// Every message on the bus, paged with `after` and `limit`.
fn all_messages(server: &ServerProc) -> Vec<Value> {
    let mut all: Vec<Value> = Vec::new();
    for _ in 0..MAX_PAGES {
        let query = match all.last() {
            None => "?limit=1000".to_string(),
            Some(m) => format!(
                "?limit=1000&after={}",
                m["msg_id"].as_str().expect("msg_id")
            ),
        };
        let r = get_json(server.addr(), &format!("/api/v1/messages{query}"));
        assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
        let page = r.json()["messages"].as_array().expect("messages").clone();
        if page.is_empty() {
            return all;
        }
        all.extend(page);
    }
    panic!("more than {MAX_PAGES} pages of messages");
}

/// Every run, paged with `after` and `limit`.
fn all_runs(server: &ServerProc) -> Vec<Value> {
    let mut all: Vec<Value> = Vec::new();
    let mut query = "?limit=1000".to_string();
    for _ in 0..MAX_PAGES {
        let r = get_json(server.addr(), &format!("/api/v1/runs{query}"));
        assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
        let page = r.json();
        all.extend(page["runs"].as_array().expect("runs").iter().cloned());
        match page["next_after"].as_str() {
            None => return all,
            Some(id) => query = format!("?limit=1000&after={id}"),
        }
    }
    panic!("more than {MAX_PAGES} pages of runs");
}

/// Checks that every journal line, in the data dir and its subdirectories, is JSON and every
/// journal ends with a newline; returns the line count of each file, by its path under `data`.
fn clean_journals(data: &Path) -> HashMap<String, usize> {
    let mut counts = HashMap::new();
    let mut dirs = vec![data.to_path_buf()];
    while let Some(dir) = dirs.pop() {
        for entry in std::fs::read_dir(&dir).expect("read data dir") {
            let path = entry.expect("dir entry").path();
            if path.is_dir() {
                dirs.push(path);
                continue;
            }
            if path.extension().and_then(|e| e.to_str()) != Some("jsonl") {
                continue;
            }
            let bytes = std::fs::read(&path).expect("read journal");
            let name = path
                .strip_prefix(data)
                .unwrap()
                .to_string_lossy()
                .into_owned();
            if bytes.is_empty() {
                counts.insert(name, 0);
                continue;
            }
            assert_eq!(bytes.last(), Some(&b'\n'), "{name} has a torn tail");
            let lines: Vec<&[u8]> = bytes[..bytes.len() - 1].split(|&b| b == b'\n').collect();
            for line in &lines {
                assert!(
                    serde_json::from_slice::<Value>(line).is_ok(),
                    "{name}: torn or garbled line {:?}",
                    String::from_utf8_lossy(line)
                );
            }
            counts.insert(name, lines.len());
        }
    }
    counts
}

/// The message lines in the bus's segments: every line but the segment headers.
fn message_lines(data: &Path) -> usize {
    let mut n = 0;
    for entry in std::fs::read_dir(data.join("messages")).expect("read the segments") {
        let text = std::fs::read_to_string(entry.expect("dir entry").path()).expect("read");
        n += text
            .lines()
            .filter(|l| !l.starts_with("{\"segment\":"))
            .count();
    }
    n
}

fn metric(server: &ServerProc, name: &str) -> f64 {
    let text = get(server.addr(), "/metrics").text();
    text.lines()
        .find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.parse().ok())
        .unwrap_or_else(|| panic!("no {name} in:\n{text}"))
}

/// Runs the clients on `server` until [`ACKS_BEFORE_KILL`] acknowledgements, ends the server
/// with `end` while they keep writing, and returns what they saw acknowledged.
fn write_then(server: &mut ServerProc, end: impl FnOnce(&mut ServerProc)) -> Vec<Acked> {
    let addr = server.addr();
    let acks = Arc::new(AtomicUsize::new(0));
    let stop = Arc::new(AtomicBool::new(false));
    let clients: Vec<_> = (0..THREADS)
        .map(|t| {
            let (acks, stop) = (Arc::clone(&acks), Arc::clone(&stop));
            thread::spawn(move || client(addr, t, &acks, &stop))
        })
        .collect();
    poll_until(TIME_LIMIT, || {
        (acks.load(Ordering::Relaxed) >= ACKS_BEFORE_KILL).then_some(())
    });
    end(server);
    stop.store(true, Ordering::Relaxed);
    let acked: Vec<Acked> = clients
        .into_iter()
        .map(|h| h.join().expect("client thread"))
        .collect();
    for a in &acked {
        assert!(a.unexpected.is_empty(), "{:?}", a.unexpected);
    }
    assert!(acks.load(Ordering::Relaxed) >= ACKS_BEFORE_KILL);
    acked
}

/// Restarts on `data` and checks that everything acknowledged is there, and that the metrics
/// agree with it; returns the server and every message on the bus.
fn check_acknowledged(data: &Path, acked: &[Acked]) -> (ServerProc, Vec<Value>) {
    let acked_messages: usize = acked.iter().map(|a| a.messages.len()).sum();
    let acked_runs: usize = acked.iter().map(|a| a.runs.len()).sum();
    assert!(acked_messages > 0 && acked_runs > 0);
    let server = ServerProc::start(data, &[], &[]);
    clean_journals(data);

    // The bus: a gap-free prefix of sequence numbers holding every acknowledged message.
    let all = all_messages(&server);
    assert!(
        all.len() >= acked_messages,
        "{} < {acked_messages}",
        all.len()
    );
    let mut by_id = HashMap::new();
    for (n, m) in all.iter().enumerate() {
        let id = m["msg_id"].as_str().expect("msg_id");
        assert_eq!(
            id,
            format!("MSG-{:012}", n + 1),
            "ids are gap-free and in order"
        );
        assert_eq!(m["type"], "crash");
        by_id.insert(id.to_string(), m["body"].clone());
    }
    for a in acked {
        let mut previous = "";
        for (id, body) in &a.messages {
            assert_eq!(
                by_id.get(id),
                Some(body),
                "acknowledged {id} lost or changed"
            );
            assert!(id.as_str() > previous, "one client's ids increase");
            previous = id;
        }
    }
    assert_eq!(
        metric(&server, "conductor_messagebus_appends_total"),
        all.len() as f64
    );

    // Runs: every acknowledged start exists, every acknowledged completion holds.
    for a in acked {
        for (id, completed) in &a.runs {
            let r = get_json(server.addr(), &format!("/api/v1/runs/{id}"));
            assert_eq!(r.status, 200, "acknowledged run {id} lost");
            let status = r.json()["status"].as_str().unwrap_or_default().to_string();
            if *completed {
                assert_eq!(status, "completed", "{id}");
            } else {
                // A completion in flight at the kill may or may not have become durable.
                assert!(
                    status == "running" || status == "completed",
                    "{id}: {status}"
                );
            }
        }
    }
    let runs = all_runs(&server);
    let count = |s: &str| runs.iter().filter(|r| r["status"] == s).count() as f64;
    assert_eq!(metric(&server, "conductor_active_runs"), count("running"));
    assert_eq!(
        metric(&server, r#"agent_cycles_total{outcome="completed"}"#),
        count("completed")
    );
    eprintln!(
        "acknowledged {acked_messages} messages and {acked_runs} runs; {} messages durable",
        all.len()
    );
    (server, all)
}

#[test]
fn acknowledged_writes_survive_sigkill() {
    let dir = TempDir::new();
    let data = dir.join("data");
    let mut server = ServerProc::start(&data, &[], &[]);
    let acked = write_then(&mut server, ServerProc::kill);
    let (server, all) = check_acknowledged(&data, &acked);

    // New writes after the restart.
    let r = post_json(
        server.addr(),
        "/api/v1/messages",
        &json!({"type": "after", "body": "restart"}),
    );
    assert_eq!(r.status, 201);
    assert_eq!(r.json()["msg_id"], format!("MSG-{:012}", all.len() + 1));
    let r = post_json(server.addr(), "/api/v1/runs", &json!({"run_id": "after"}));
    assert_eq!(r.status, 201);
    let r = post_json(server.addr(), "/api/v1/runs/after/complete", &json!({}));
    assert_eq!(r.status, 200);
    clean_journals(&data);
    assert_eq!(message_lines(&data), all.len() + 1);
}

/// A SIGTERM while clients write: the server answers what is in flight and exits 0, so every
/// write it took was answered, and every answered write is on disk.
#[test]
fn sigterm_during_writes_answers_what_is_in_flight_and_exits_0() {
    let dir = TempDir::new();
    let data = dir.join("data");
    let mut server = ServerProc::start(&data, &[], &[]);
    let acked = write_then(&mut server, |server| {
        server.terminate();
        let status = server.wait_timeout(TIME_LIMIT).expect("the server exits");
        assert_eq!(status.code(), Some(0), "exit status");
    });
    let log = server.stderr_lines().join("\n");
    assert!(log.contains("\"signal\":\"SIGTERM\""), "{log}");
    assert!(log.contains("\"connections_cut\":false"), "{log}");
    let (restarted, all) = check_acknowledged(&data, &acked);
    // Nothing was cut off mid-answer: the bus holds exactly the acknowledged messages, and
    // every run on disk has the status its client was last told.
    let acked_messages: usize = acked.iter().map(|a| a.messages.len()).sum();
    assert_eq!(all.len(), acked_messages);
    for a in &acked {
        for (id, completed) in &a.runs {
            let r = get_json(restarted.addr(), &format!("/api/v1/runs/{id}"));
            let want = if *completed { "completed" } else { "running" };
            assert_eq!(r.json()["status"], want, "{id}");
        }
    }
}

/// A byte flipped on disk inside an acknowledged message, so the line is still JSON: the start
/// refuses with the file, line, offset and the repair command; `repair` moves the line aside
/// and the server starts with every other record.
#[test]
fn a_flipped_byte_refuses_the_start_until_repair_moves_the_line_aside() {
    let dir = TempDir::new();
    let data = dir.join("data");
    let mut server = ServerProc::start(&data, &[], &[]);
    for i in 1..=5 {
        let body = json!({"type": "flip", "body": format!("message-{i}")});
        assert_eq!(
            post_json(server.addr(), "/api/v1/messages", &body).status,
            201
        );
    }
    server.terminate();
    assert_eq!(server.wait().code(), Some(0));

    let journal = data.join("messages").join("0000000001.jsonl");
    let mut bytes = std::fs::read(&journal).expect("read journal");
    let at = bytes
        .windows(9)
        .position(|w| w == b"message-3")
        .expect("message 3 on disk");
    bytes[at] = b'M';
    std::fs::write(&journal, &bytes).expect("write journal");
    let line_start = bytes[..at]
        .iter()
        .rposition(|&b| b == b'\n')
        .map_or(0, |i| i + 1);
    let line = bytes[..at].iter().filter(|&&b| b == b'\n').count() + 1;

    let data_arg = data.to_str().expect("utf-8 path");
    let serve = ["serve", "--addr", "127.0.0.1:0", "--data-dir", data_arg];
    let refused = common::run_cli(&serve, &[], None, TIME_LIMIT);
    assert_eq!(refused.status.code(), Some(1), "{}", refused.stderr);
    let want = format!("line {line} (byte {line_start}) is damaged: its checksum does not match");
    // The command names the data dir itself, not the store's directory in it.
    let command = format!("`conductor-metrics repair --data-dir {data_arg}`");
    for part in ["0000000001.jsonl", want.as_str(), command.as_str()] {
        assert!(
            refused.stderr.contains(part),
            "{part:?} in {}",
            refused.stderr
        );
    }

    let repaired = common::run_cli(&["repair", "--data-dir", data_arg], &[], None, TIME_LIMIT);
    // Not a success: the damaged message stays out of the store.
    assert_eq!(repaired.status.code(), Some(3), "{}", repaired.stderr);
    assert!(
        repaired.stdout.contains(&format!("line {line} "))
            && repaired.stdout.contains("moved 1 damaged line"),
        "{}",
        repaired.stdout
    );
    assert!(
        repaired.stderr.contains("stays out of the store"),
        "{}",
        repaired.stderr
    );
    let aside = std::fs::read(data.join("messages").join("0000000001.jsonl.corrupt"))
        .expect("the .corrupt file");
    assert!(aside.windows(9).any(|w| w == b"Message-3"));

    let server = ServerProc::start(&data, &[], &[]);
    let bodies: Vec<Value> = all_messages(&server)
        .iter()
        .map(|m| m["body"].clone())
        .collect();
    assert_eq!(bodies, [1, 2, 4, 5].map(|i| json!(format!("message-{i}"))));
}

/// The seed of a test's kill points: `CRASH_SEED` when set, to replay a run, or a new one. It is
/// printed either way, so that a failing run can be replayed with the seed it names.
fn crash_seed(test: &str) -> u64 {
    let seed = match std::env::var("CRASH_SEED") {
        Ok(text) => text
            .trim()
            .parse()
            .expect("CRASH_SEED must be a whole number"),
        Err(_) => {
            let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH);
            std::process::id() as u64 ^ now.map_or(0, |d| d.as_nanos() as u64)
        }
    };
    eprintln!("{test}: seed {seed} (replay with CRASH_SEED={seed} cargo test --test crash {test})");
    seed
}

/// The next number of a small generator, so that kill points differ from run to run.
fn next_random(seed: &mut u64) -> usize {
    *seed = seed
        .wrapping_mul(6364136223846793005)
        .wrapping_add(1442695040888963407);
    (*seed >> 33) as usize
}

/// A client of a kill round: its address, its number, the shared count of acknowledgements and
/// the flag that stops it.
type RoundClient = fn(SocketAddr, usize, &AtomicUsize, &AtomicBool) -> Acked;

/// Runs four `client`s on `server`, numbered after `round` so that each round's run ids are
/// new, SIGKILLs the server once they have `kill_after` acknowledgements while they keep
/// writing, and returns what they saw acknowledged, none of it unexpected.
fn kill_after_acks(
    server: &mut ServerProc,
    kill_after: usize,
    round: usize,
    client: RoundClient,
) -> Vec<Acked> {
    kill_when(server, round, client, None, |acks| acks >= kill_after)
}

/// Runs four `client`s on `server` as [`kill_after_acks`] does, and SIGKILLs it as soon as
/// `watch` (when given) exists or `enough` holds for the acknowledgements so far, watching in a
/// loop that only yields, so that a file that exists for a millisecond is seen.
fn kill_when(
    server: &mut ServerProc,
    round: usize,
    client: RoundClient,
    watch: Option<&Path>,
    enough: impl Fn(usize) -> bool,
) -> Vec<Acked> {
    let acks = Arc::new(AtomicUsize::new(0));
    let stop = Arc::new(AtomicBool::new(false));
    let addr = server.addr();
    let clients: Vec<_> = (0..4)
        .map(|t| {
            let (acks, stop) = (Arc::clone(&acks), Arc::clone(&stop));
            thread::spawn(move || client(addr, round * 10 + t, &acks, &stop))
        })
        .collect();
    let deadline = Instant::now() + TIME_LIMIT;
    while !enough(acks.load(Ordering::Relaxed)) && !watch.is_some_and(Path::exists) {
        assert!(
            Instant::now() < deadline,
            "no kill point within {TIME_LIMIT:?}"
        );
        thread::yield_now();
    }
    server.kill();
    stop.store(true, Ordering::Relaxed);
    let acked: Vec<Acked> = clients.into_iter().map(|h| h.join().unwrap()).collect();
    for a in &acked {
        assert!(a.unexpected.is_empty(), "{:?}", a.unexpected);
    }
    acked
}

/// SIGKILL at random moments while clients write to a bus that keeps only 64 messages, in
/// segments of 8, so that kills land during segment rotations and deletions too. After each
/// restart: the counter never went back and counts every acknowledged append, the kept messages
/// are the newest, gap-free, and every acknowledged one among them holds its body.
#[test]
fn sigkill_during_segment_rotation_and_deletion_loses_nothing_acknowledged() {
    const KEEP: usize = 64;
    const ROUNDS: usize = 5;
    let dir = TempDir::new();
    let data = dir.join("data");
    let keep = KEEP.to_string();
    let args = ["--retain-messages", keep.as_str()];
    // The kill points differ from run to run, and are printed.
    let mut seed =
        crash_seed("sigkill_during_segment_rotation_and_deletion_loses_nothing_acknowledged");
    let mut counted = 0.0;
    let mut acked_ever = 0usize;
    for round in 0..ROUNDS {
        let kill_after = 100 + next_random(&mut seed) % 400;
        let mut server = ServerProc::start(&data, &args, &[]);
        let after_restart = metric(&server, "conductor_messagebus_appends_total");
        assert!(
            after_restart >= counted,
            "the counter went back: {after_restart} < {counted}"
        );
        let acked = kill_after_acks(&mut server, kill_after, round, client);
        let acked_now: usize = acked.iter().map(|a| a.messages.len()).sum();
        acked_ever += acked_now;

        let server = ServerProc::start(&data, &args, &[]);
        clean_journals(&data);
        counted = metric(&server, "conductor_messagebus_appends_total");
        assert!(
            counted >= after_restart + acked_now as f64,
            "round {round}: {counted} < {after_restart} + {acked_now}"
        );
        assert!(counted >= acked_ever as f64);
        let kept = all_messages(&server);
        assert!(
            !kept.is_empty() && kept.len() <= KEEP,
            "{} kept",
            kept.len()
        );
        let newest = counted as usize;
        let first = newest + 1 - kept.len();
        let mut by_id = HashMap::new();
        for (n, m) in kept.iter().enumerate() {
            let id = m["msg_id"].as_str().expect("msg_id");
            assert_eq!(id, format!("MSG-{:012}", first + n), "the newest, gap-free");
            by_id.insert(id.to_string(), m["body"].clone());
        }
        let oldest_kept = format!("MSG-{first:012}");
        for a in &acked {
            for (id, body) in a.messages.iter().filter(|(id, _)| *id >= oldest_kept) {
                assert_eq!(by_id.get(id), Some(body), "round {round}: {id} lost");
            }
        }
        eprintln!(
            "round {round}: killed after {kill_after} acks; {acked_now} messages acknowledged, \
             counter {counted}, {} segments",
            std::fs::read_dir(data.join("messages")).unwrap().count()
        );
    }
}

/// The cost, in micro-dollars, client `t` gives the `i`th run it completes.
fn cost_micros(t: usize, i: usize) -> u64 {
    1_000 + ((t * 7919 + i * 104_729) % 9_000) as u64
}

/// Starts runs, reports tokens and completes them with a cost, until stopped; returns the runs
/// whose start was acknowledged, and whether their completion was.
fn run_client(addr: SocketAddr, t: usize, acks: &AtomicUsize, stop: &AtomicBool) -> Acked {
    let mut acked = Acked::default();
    let Ok(mut conn) = Client::connect(addr) else {
        return acked;
    };
    let deadline = Instant::now() + TIME_LIMIT;
    let tokens = json!([{"type": "tokens", "phase": "plan", "model": "m",
        "input_tokens": 1000, "output_tokens": 10}]);
    for i in 0..MAX_OPS_PER_THREAD {
        if stop.load(Ordering::Relaxed) || Instant::now() >= deadline {
            break;
        }
        let id = format!("cost-{t}-{}", i / 3);
        let (path, body) = match i % 3 {
            0 => ("/api/v1/runs".to_string(), json!({"run_id": id})),
            1 => (format!("/api/v1/runs/{id}/events"), tokens.clone()),
            _ => {
                let cost = cost_micros(t, i / 3) as f64 / 1e6;
                (format!("/api/v1/runs/{id}/complete"), json!({"cost": cost}))
            }
        };
        if post_acked(&mut conn, &path, &body, &mut acked).is_none() {
            break;
        }
        match i % 3 {
            0 => acked.runs.push((id, false)),
            2 => {
                let last = acked.runs.last_mut().expect("started");
                last.1 = true;
            }
            _ => {}
        }
        acks.fetch_add(1, Ordering::Relaxed);
    }
    acked
}

/// SIGKILL at random moments while clients start runs, report tokens and complete them with a
/// cost. A run's end and its cost are one record: after each restart, every acknowledged
/// completion holds, the day's spend is exactly the sum of the costs of the completed runs
/// (never a cost without its end, nor an end without its cost), the completed counter equals
/// the completed runs and never goes back, and the ledger holds each run at most once.
#[test]
fn sigkill_during_run_ends_keeps_each_end_and_its_cost_together() {
    let dir = TempDir::new();
    let test = "sigkill_during_run_ends_keeps_each_end_and_its_cost_together";
    run_end_rounds(
        test,
        &dir.join("data"),
        &["--daily-budget", "1000000"],
        None,
    );
}

/// The same, with a snapshot of the run store after every 2 KiB of its journal: kills land
/// while a snapshot is written and while the segments it covers are deleted, and each start
/// reads the newest snapshot and the records after it.
#[test]
fn sigkill_during_run_snapshots_loses_nothing_acknowledged() {
    let dir = TempDir::new();
    let data = dir.join("data");
    let args = ["--daily-budget", "1000000", "--snapshot-bytes", "2KiB"];
    let tmp = data.join("runs").join("snapshot.tmp");
    run_end_rounds(
        "sigkill_during_run_snapshots_loses_nothing_acknowledged",
        &data,
        &args,
        Some(&tmp),
    );
    let store = data.join("runs");
    assert!(store.join("snapshot").is_file(), "a snapshot was written");
    let segments = std::fs::read_dir(&store)
        .unwrap()
        .filter_map(Result::ok)
        .filter(|e| e.file_name().to_string_lossy().ends_with(".jsonl"))
        .count();
    let first = store.join("0000000001.jsonl");
    assert!(!first.exists(), "covered segments were deleted");
    eprintln!("{segments} run journal segments left");
}

/// Rounds of run ends with costs, each killed at a random moment, and the checks after each
/// restart that [`sigkill_during_run_ends_keeps_each_end_and_its_cost_together`] names. With
/// `snapshot` (the file a snapshot is written to before its rename), every other round kills
/// the server the moment that file appears, and at least one kill must find it still there:
/// a snapshot cut short.
fn run_end_rounds(test: &str, data: &Path, args: &[&str], snapshot: Option<&Path>) {
    const ROUNDS: usize = 6;
    let mut cut_short = 0;
    let mut seed = crash_seed(test);
    let mut completed_before = 0.0;
    for round in 0..ROUNDS {
        let kill_after = 60 + next_random(&mut seed) % 300;
        let mut server = ServerProc::start(data, args, &[]);
        let acked = match snapshot.filter(|_| round % 2 == 1) {
            Some(tmp) => kill_when(&mut server, round, run_client, Some(tmp), |acks| {
                acks >= 30 * kill_after
            }),
            None => kill_after_acks(&mut server, kill_after, round, run_client),
        };
        let during = snapshot.is_some_and(Path::exists);
        cut_short += usize::from(during);

        let server = ServerProc::start(data, args, &[]);
        clean_journals(data);
        let runs = all_runs(&server);
        let status: HashMap<&str, &str> = runs
            .iter()
            .map(|r| (r["run_id"].as_str().unwrap(), r["status"].as_str().unwrap()))
            .collect();
        for a in &acked {
            for (id, completed) in &a.runs {
                let want: &[&str] = if *completed {
                    &["completed"]
                } else {
                    &["running", "completed"]
                };
                let got = status.get(id.as_str()).copied();
                assert!(
                    got.is_some_and(|s| want.contains(&s)),
                    "round {round}: {id} is {got:?}"
                );
            }
        }
        let mut spent = 0u64;
        let mut completed = 0;
        for r in runs.iter().filter(|r| r["status"] == "completed") {
            let id = r["run_id"].as_str().unwrap();
            let (t, n) = id
                .strip_prefix("cost-")
                .and_then(|rest| rest.split_once('-'))
                .expect("a run of this test");
            spent += cost_micros(t.parse().unwrap(), n.parse().unwrap());
            completed += 1;
        }
        let budget = get_json(server.addr(), "/api/v1/budget").json();
        let today = (budget["today_spend"].as_f64().unwrap() * 1e6).round() as u64;
        assert_eq!(
            today, spent,
            "round {round}: the spend is the completed runs' costs"
        );
        assert_eq!(budget["spend_events"].as_u64(), Some(completed));
        let counted = metric(&server, "agent_cycles_total{outcome=\"completed\"}");
        assert_eq!(counted, completed as f64);
        assert!(counted >= completed_before, "the counter went back");
        completed_before = counted;
        let ledgers = std::fs::read_dir(data.join("budget")).unwrap();
        let mut lines = 0;
        for entry in ledgers.filter_map(Result::ok) {
            let name = entry.file_name();
            if name.to_string_lossy().ends_with(".jsonl") {
                let text = std::fs::read_to_string(entry.path()).unwrap();
                lines += text
                    .lines()
                    .filter(|l| l.contains("\"kind\":\"run\""))
                    .count();
            }
        }
        assert_eq!(lines as u64, completed, "each run once in the ledger");
        eprintln!(
            "round {round}: killed after {kill_after} acks or a snapshot (during one: \
             {during}); {completed} runs completed, ${} spent",
            budget["today_spend"]
        );
    }
    if snapshot.is_some() {
        assert!(cut_short > 0, "no kill landed while a snapshot was written");
    }
}

/// Only the newest segment's torn tail is a crash's: an older segment cut
/// short refuses the start, naming it, and the start cuts nothing.
#[test]
fn an_older_segment_cut_short_refuses_the_start_and_is_left_as_it_is() {
    let dir = TempDir::new();
    let data = dir.join("data");
    let mut server = ServerProc::start(&data, &["--retain-messages", "64"], &[]);
    for i in 0..200 {
        let body = json!({"type": "note", "body": format!("message {i}")});
        assert_eq!(
            post_json(server.addr(), "/api/v1/messages", &body).status,
            201
        );
    }
    server.kill();
    let mut segments: Vec<_> = std::fs::read_dir(data.join("messages"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|x| x == "jsonl"))
        .collect();
    segments.sort();
    assert!(segments.len() >= 3, "{segments:?}");
    let older = &segments[segments.len() - 2];
    let len = std::fs::metadata(older).unwrap().len();
    let file = std::fs::OpenOptions::new().write(true).open(older).unwrap();
    file.set_len(len - 5).unwrap();
    let data_arg = data.to_str().unwrap();
    let serve = [
        "serve",
        "--addr",
        "127.0.0.1:0",
        "--data-dir",
        data_arg,
        "--retain-messages",
        "64",
    ];
    let refused = common::run_cli(&serve, &[], None, Duration::from_secs(60));
    assert_eq!(refused.status.code(), Some(1), "{}", refused.stderr);
    let name = older.file_name().unwrap().to_str().unwrap();
    assert!(refused.stderr.contains(name), "{}", refused.stderr);
    assert!(
        refused.stderr.contains("cut or damaged"),
        "{}",
        refused.stderr
    );
    assert_eq!(
        std::fs::metadata(older).unwrap().len(),
        len - 5,
        "nothing cut"
    );
}
