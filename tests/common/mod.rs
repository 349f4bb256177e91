//! Shared support for integration tests: temp dirs, the server as a child process, and a std-only
//! HTTP/1.1 client.
//!
//! Every integration test binary includes this with `mod common;` and uses a subset of it, hence the
//! module-wide `dead_code` allowance. Everything here is bounded in time: a hung server fails a test
//! instead of hanging the suite.
#![allow(dead_code)]

pub mod ws_client;

use std::fmt::Write as _;
use std::io::{self, BufRead, BufReader, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdout, Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc;
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use conductor_metrics::client::read_response;

/// How long a server may take to print its listening line.
pub const STARTUP_TIMEOUT: Duration = Duration::from_secs(10);
/// Read and write timeout of every client socket.
pub const IO_TIMEOUT: Duration = Duration::from_secs(10);
/// How long `raw` waits for the server to finish answering.
pub const RAW_TIMEOUT: Duration = Duration::from_secs(5);

/// The prefix of the one line the server prints on stdout once it accepts connections.
const LISTENING_PREFIX: &str = "conductor-metrics listening on http://";
/// Variables the server reads; cleared for every child so the developer's shell cannot leak into a test.
const SERVER_ENV_VARS: [&str; 10] = [
    "CONDUCTOR_ADDR",
    "CONDUCTOR_DATA_DIR",
    "CONDUCTOR_WORKERS",
    "CONDUCTOR_MAX_BODY",
    "CONDUCTOR_API_KEY",
    "CONDUCTOR_LOG",
    "CONDUCTOR_IDLE_TIMEOUT",
    "CONDUCTOR_HEADER_TIMEOUT",
    "CONDUCTOR_WRITE_TIMEOUT",
    "CONDUCTOR_MAX_CONNECTIONS",
];

/// Path of the binary under test, as built by Cargo for integration tests.
pub fn bin() -> &'static str {
    env!("CARGO_BIN_EXE_conductor-metrics")
}

// ---------------------------------------------------------------------------------------------
// Temp dirs

/// A fresh directory under `std::env::temp_dir()`, removed with its contents on drop.
///
/// Declare it before the `ServerProc` that uses it, so the server is killed before its data goes.
pub struct TempDir {
    path: PathBuf,
}

impl TempDir {
    /// Creates a directory whose name is unique across processes, threads and earlier runs.
    pub fn new() -> TempDir {
        TempDir::with_prefix("conductor-metrics-test")
    }

    /// Creates a unique directory whose name starts with `prefix`.
    pub fn with_prefix(prefix: &str) -> TempDir {
        static COUNTER: AtomicU64 = AtomicU64::new(0);
        let base = std::env::temp_dir();
        let nanos = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.subsec_nanos())
            .unwrap_or(0);
        for _ in 0..1000 {
            let n = COUNTER.fetch_add(1, Ordering::Relaxed);
            let path = base.join(format!("{prefix}-{}-{n}-{nanos}", std::process::id()));
            match std::fs::create_dir(&path) {
                Ok(()) => return TempDir { path },
                // A leftover from an earlier run with a recycled pid: try the next name.
                Err(e) if e.kind() == io::ErrorKind::AlreadyExists => continue,
                Err(e) => panic!("cannot create temp dir {}: {e}", path.display()),
            }
        }
        panic!("no free temp dir name under {}", base.display());
    }

    /// The directory's absolute path.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// A path inside the directory.
    pub fn join(&self, name: impl AsRef<Path>) -> PathBuf {
        self.path.join(name)
    }
}

impl Default for TempDir {
    fn default() -> TempDir {
        TempDir::new()
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.path);
    }
}

// ---------------------------------------------------------------------------------------------
// The server as a child process

/// A running `conductor-metrics` child process, killed on drop.
///
/// Its stdout and stderr are drained by background threads, so a chatty server never blocks on
/// a full pipe; stderr lines (the JSON log) are kept for assertions.
pub struct ServerProc {
    child: Child,
    addr: SocketAddr,
    stdout: Arc<Mutex<Vec<String>>>,
    stderr: Arc<Mutex<Vec<String>>>,
    readers: Vec<JoinHandle<()>>,
}

impl ServerProc {
    /// Starts `conductor-metrics serve --addr 127.0.0.1:0 --data-dir DIR EXTRA_ARGS` with `envs`
    /// and waits for its listening line; panics with the server's stderr if it does not come up.
    pub fn start(data_dir: &Path, extra_args: &[&str], envs: &[(&str, &str)]) -> ServerProc {
        let dir = data_dir
            .to_str()
            .unwrap_or_else(|| panic!("data dir is not UTF-8: {}", data_dir.display()));
        let mut args = vec!["serve", "--addr", "127.0.0.1:0", "--data-dir", dir];
        args.extend_from_slice(extra_args);
        ServerProc::start_args(&args, envs)
    }

    /// Starts the binary with exactly `args` (no implied `serve` or `--addr`), e.g. to test
    /// configuration through environment variables alone.
    pub fn start_args(args: &[&str], envs: &[(&str, &str)]) -> ServerProc {
        ServerProc::try_spawn(args, envs, None, STARTUP_TIMEOUT).unwrap_or_else(|e| panic!("{e}"))
    }

    /// Starts the binary with `args` in `cwd` and waits up to `startup` for its listening line.
    ///
    /// The error says why it did not come up (exit status or timeout) and includes its stderr.
    pub fn try_spawn(
        args: &[&str],
        envs: &[(&str, &str)],
        cwd: Option<&Path>,
        startup: Duration,
    ) -> Result<ServerProc, String> {
        let mut cmd = command(args, envs, cwd);
        cmd.stdout(Stdio::piped()).stderr(Stdio::piped());
        let mut child = cmd
            .spawn()
            .map_err(|e| format!("cannot spawn {} {args:?}: {e}", bin()))?;
        let stdout_pipe = child.stdout.take().expect("stdout is piped");
        let stderr_pipe = child.stderr.take().expect("stderr is piped");
        let stdout = Arc::new(Mutex::new(Vec::new()));
        let stderr = Arc::new(Mutex::new(Vec::new()));
        let (tx, rx) = mpsc::channel();
        let readers = vec![
            spawn_stdout_reader(stdout_pipe, Arc::clone(&stdout), tx),
            spawn_line_collector(stderr_pipe, Arc::clone(&stderr)),
        ];
        let mut proc = ServerProc {
            child,
            addr: SocketAddr::from(([127, 0, 0, 1], 0)),
            stdout,
            stderr,
            readers,
        };
        match rx.recv_timeout(startup) {
            Ok(addr) => {
                proc.addr = addr;
                Ok(proc)
            }
            Err(e) => {
                let why = match e {
                    mpsc::RecvTimeoutError::Timeout => {
                        format!("no listening line within {startup:?}")
                    }
                    mpsc::RecvTimeoutError::Disconnected => {
                        "stdout closed before the listening line".to_string()
                    }
                };
                proc.kill();
                let status = proc.wait();
                Err(format!(
                    "server {args:?} did not start: {why}; {status}\nstdout:\n{}\nstderr:\n{}",
                    proc.stdout_lines().join("\n"),
                    proc.stderr_lines().join("\n"),
                ))
            }
        }
    }

    /// The address the server announced.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// `http://ADDR` followed by `path`.
    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    /// The child's process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// The stderr lines so far (complete once `wait` has returned).
    pub fn stderr_lines(&self) -> Vec<String> {
        lock(&self.stderr).clone()
    }

    /// The stdout lines so far, the listening line included.
    pub fn stdout_lines(&self) -> Vec<String> {
        lock(&self.stdout).clone()
    }

    /// Every stderr line parsed as JSON; panics naming the first line that is not a JSON object.
    pub fn stderr_json(&self) -> Vec<serde_json::Value> {
        self.stderr_lines()
            .iter()
            .map(
                |line| match serde_json::from_str::<serde_json::Value>(line) {
                    Ok(v) if v.is_object() => v,
                    _ => panic!("stderr line is not a JSON object: {line:?}"),
                },
            )
            .collect()
    }

    /// Polls until a stderr line satisfies `pred` and returns it; panics after `deadline`.
    #[track_caller]
    pub fn wait_for_stderr(&self, deadline: Duration, pred: impl Fn(&str) -> bool) -> String {
        let start = Instant::now();
        loop {
            if let Some(line) = self.stderr_lines().into_iter().find(|l| pred(l)) {
                return line;
            }
            if start.elapsed() >= deadline {
                panic!(
                    "no matching stderr line within {deadline:?}; stderr:\n{}",
                    self.stderr_lines().join("\n")
                );
            }
            std::thread::sleep(Duration::from_millis(5));
        }
    }

    /// Sends SIGKILL (a crash as far as the server can tell) and reaps the child.
    pub fn kill(&mut self) {
        // An error only means the child has already exited and been reaped.
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// Sends SIGTERM through the system `kill` utility, std having no signal API.
    pub fn terminate(&self) {
        let status = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status()
            .expect("run kill -TERM");
        assert!(status.success(), "kill -TERM {} failed", self.child.id());
    }

    /// Waits for the child to exit, then for its output to be drained, and returns its status.
    ///
    /// Blocks until the child exits: call `kill` or `terminate` first, or use `wait_timeout`.
    pub fn wait(&mut self) -> ExitStatus {
        let status = self.child.wait().expect("wait for server");
        self.join_readers();
        status
    }

    /// Polls for the child's exit for up to `deadline`; `None` if it is still running.
    pub fn wait_timeout(&mut self, deadline: Duration) -> Option<ExitStatus> {
        let start = Instant::now();
        loop {
            if let Some(status) = self.child.try_wait().expect("poll server") {
                self.join_readers();
                return Some(status);
            }
            if start.elapsed() >= deadline {
                return None;
            }
            std::thread::sleep(Duration::from_millis(5));
        }
    }

    /// Whether the child is still running.
    pub fn is_running(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(None))
    }

    fn join_readers(&mut self) {
        // The pipes reach EOF once the child is gone; the deadline covers a grandchild that
        // inherited them.
        let start = Instant::now();
        while self.readers.iter().any(|h| !h.is_finished()) && start.elapsed() < IO_TIMEOUT {
            std::thread::sleep(Duration::from_millis(2));
        }
        for handle in std::mem::take(&mut self.readers) {
            if handle.is_finished() {
                let _ = handle.join();
            }
        }
    }
}

impl Drop for ServerProc {
    fn drop(&mut self) {
        self.kill();
        if std::thread::panicking() {
            self.join_readers();
            eprintln!(
                "--- server {} stderr ---\n{}",
                self.addr,
                self.stderr_lines().join("\n")
            );
        }
    }
}

fn command(args: &[&str], envs: &[(&str, &str)], cwd: Option<&Path>) -> Command {
    let mut cmd = Command::new(bin());
    cmd.args(args).stdin(Stdio::null());
    for var in SERVER_ENV_VARS {
        cmd.env_remove(var);
    }
    cmd.envs(envs.iter().copied());
    if let Some(dir) = cwd {
        cmd.current_dir(dir);
    }
    cmd
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    // A reader thread that panicked mid-push leaves a usable Vec behind.
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// Reads lines until EOF; lossy so that a stray non-UTF-8 byte cannot stop the draining.
fn read_lines(pipe: impl Read, mut each: impl FnMut(String)) {
    let mut reader = BufReader::new(pipe);
    let mut buf = Vec::new();
    loop {
        buf.clear();
        match reader.read_until(b'\n', &mut buf) {
            Ok(0) | Err(_) => return,
            Ok(_) => {
                let line = String::from_utf8_lossy(&buf);
                each(line.trim_end_matches(['\r', '\n']).to_string());
            }
        }
    }
}

fn spawn_line_collector(
    pipe: impl Read + Send + 'static,
    sink: Arc<Mutex<Vec<String>>>,
) -> JoinHandle<()> {
    std::thread::spawn(move || read_lines(pipe, |line| lock(&sink).push(line)))
}

fn spawn_stdout_reader(
    pipe: ChildStdout,
    sink: Arc<Mutex<Vec<String>>>,
    tx: mpsc::Sender<SocketAddr>,
) -> JoinHandle<()> {
    std::thread::spawn(move || {
        let mut tx = Some(tx);
        read_lines(pipe, |line| {
            if let Some(rest) = line.strip_prefix(LISTENING_PREFIX) {
                if let (Some(sender), Ok(addr)) = (tx.as_ref(), rest.trim().parse()) {
                    let _ = sender.send(addr);
                    tx = None;
                }
            }
            lock(&sink).push(line);
        });
    })
}

/// Everything a finished run of the binary produced.
#[derive(Debug)]
pub struct CliOutput {
    /// How the process ended.
    pub status: ExitStatus,
    /// All of stdout, lossily decoded.
    pub stdout: String,
    /// All of stderr, lossily decoded.
    pub stderr: String,
}

/// Runs the binary with `args` to completion, for flags and configs that must make it exit;
/// kills it and panics if it is still running after `timeout`.
pub fn run_cli(
    args: &[&str],
    envs: &[(&str, &str)],
    cwd: Option<&Path>,
    timeout: Duration,
) -> CliOutput {
    let mut child = command(args, envs, cwd)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("cannot spawn {} {args:?}: {e}", bin()));
    let out = child.stdout.take().expect("stdout is piped");
    let err = child.stderr.take().expect("stderr is piped");
    let read_all = |mut pipe: Box<dyn Read + Send>| {
        std::thread::spawn(move || {
            let mut buf = Vec::new();
            let _ = pipe.read_to_end(&mut buf);
            String::from_utf8_lossy(&buf).into_owned()
        })
    };
    let out = read_all(Box::new(out));
    let err = read_all(Box::new(err));
    let start = Instant::now();
    let status = loop {
        if let Some(status) = child.try_wait().expect("poll child") {
            break status;
        }
        if start.elapsed() >= timeout {
            let _ = child.kill();
            let _ = child.wait();
            panic!(
                "{args:?} still running after {timeout:?}; stderr:\n{}",
                err.join().unwrap_or_default()
            );
        }
        std::thread::sleep(Duration::from_millis(5));
    };
    CliOutput {
        status,
        stdout: out.join().unwrap_or_default(),
        stderr: err.join().unwrap_or_default(),
    }
}

// ---------------------------------------------------------------------------------------------
// Polling

/// Calls `f` until it returns `Some`, pausing a few milliseconds between attempts, and returns
/// the value; panics at the caller's line if `deadline` passes first.
#[track_caller]
pub fn poll_until<T>(deadline: Duration, mut f: impl FnMut() -> Option<T>) -> T {
    let start = Instant::now();
    loop {
        if let Some(v) = f() {
            return v;
        }
        if start.elapsed() >= deadline {
            panic!("poll_until: condition not met within {deadline:?}");
        }
        std::thread::sleep(Duration::from_millis(5));
    }
}

// ---------------------------------------------------------------------------------------------
// HTTP client

pub use conductor_metrics::client::Received;

/// Sends one request on a new connection with `Connection: close` and reads the response.
///
/// `Host`, `Connection` and (when `body` is given) `Content-Length` are added unless `headers`
/// already has them. A server that answers and closes before taking the whole body still has
/// its answer read.
pub fn request(
    addr: SocketAddr,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: Option<&[u8]>,
) -> io::Result<Received> {
    let stream = connect(addr)?;
    let mut reader = BufReader::new(stream);
    let bytes = encode_request(addr, method, path, headers, body, true);
    write_then_read(&mut reader, &bytes, is_head(method))
}

/// `GET path`; panics on a transport error.
#[track_caller]
pub fn get(addr: SocketAddr, path: &str) -> Received {
    request(addr, "GET", path, &[], None).unwrap_or_else(|e| panic!("GET {path}: {e}"))
}

/// `GET path` with `Accept: application/json`; panics on a transport error.
#[track_caller]
pub fn get_json(addr: SocketAddr, path: &str) -> Received {
    get_json_with(addr, path, &[])
}

/// `GET path` with `Accept: application/json` and extra headers; panics on a transport error.
#[track_caller]
pub fn get_json_with(addr: SocketAddr, path: &str, headers: &[(&str, &str)]) -> Received {
    let mut all = vec![("Accept", "application/json")];
    all.extend_from_slice(headers);
    request(addr, "GET", path, &all, None).unwrap_or_else(|e| panic!("GET {path}: {e}"))
}

/// `POST path` with `value` as a JSON body; panics on a transport error.
#[track_caller]
pub fn post_json(addr: SocketAddr, path: &str, value: &serde_json::Value) -> Received {
    post_json_with(addr, path, &[], value)
}

/// `POST path` with `value` as a JSON body and extra headers; panics on a transport error.
#[track_caller]
pub fn post_json_with(
    addr: SocketAddr,
    path: &str,
    headers: &[(&str, &str)],
    value: &serde_json::Value,
) -> Received {
    let body = serde_json::to_vec(value).expect("serialize JSON body");
    let mut all = vec![("Content-Type", "application/json")];
    all.extend_from_slice(headers);
    request(addr, "POST", path, &all, Some(&body)).unwrap_or_else(|e| panic!("POST {path}: {e}"))
}

/// A keep-alive connection that sends several requests over one `TcpStream`, to check that
/// one request cannot corrupt the next.
pub struct Client {
    addr: SocketAddr,
    reader: BufReader<TcpStream>,
    closing: bool,
}

impl Client {
    /// Opens the connection, with the usual read and write timeouts.
    pub fn connect(addr: SocketAddr) -> io::Result<Client> {
        Ok(Client {
            addr,
            reader: BufReader::new(connect(addr)?),
            closing: false,
        })
    }

    /// Sends one request (keep-alive unless `headers` says otherwise) and reads its response.
    ///
    /// Fails with `NotConnected` if the previous response announced that the server closes.
    pub fn send(
        &mut self,
        method: &str,
        path: &str,
        headers: &[(&str, &str)],
        body: Option<&[u8]>,
    ) -> io::Result<Received> {
        let bytes = encode_request(self.addr, method, path, headers, body, false);
        let resp = self.send_bytes(&bytes, is_head(method))?;
        // Asking for close ends the connection whether or not the server says so.
        let asked_close = headers.iter().any(|(n, v)| {
            n.eq_ignore_ascii_case("connection") && v.trim().eq_ignore_ascii_case("close")
        });
        self.closing |= asked_close;
        Ok(resp)
    }

    /// Writes `bytes` verbatim as one request and reads one response (never a HEAD one).
    pub fn send_raw(&mut self, bytes: &[u8]) -> io::Result<Received> {
        self.send_bytes(bytes, false)
    }

    /// Writes `bytes` verbatim without reading, e.g. to pipeline requests.
    pub fn write_raw(&mut self, bytes: &[u8]) -> io::Result<()> {
        let stream = self.reader.get_mut();
        stream.write_all(bytes)?;
        stream.flush()
    }

    /// Reads the next response; `head` says whether it answers a HEAD request.
    pub fn read_response(&mut self, head: bool) -> io::Result<Received> {
        let resp = read_response(&mut self.reader, head)?;
        self.closing = resp.closes;
        Ok(resp)
    }

    /// Whether the last exchange means the connection ends: the response said so, its body ran
    /// to EOF, or the request asked for `Connection: close`.
    pub fn server_will_close(&self) -> bool {
        self.closing
    }

    /// Whether the server closes the connection (EOF or reset) within `within`, without
    /// sending anything more.
    pub fn closed_by_peer(&mut self, within: Duration) -> io::Result<bool> {
        self.reader.get_ref().set_read_timeout(Some(within))?;
        let result = match self.reader.fill_buf() {
            Ok([]) => Ok(true),
            Ok(buf) => Err(io::Error::new(
                io::ErrorKind::InvalidData,
                format!(
                    "unexpected bytes from server: {:?}",
                    String::from_utf8_lossy(buf)
                ),
            )),
            Err(e) if is_timeout(&e) => Ok(false),
            Err(e) if e.kind() == io::ErrorKind::ConnectionReset => Ok(true),
            Err(e) => Err(e),
        };
        self.reader.get_ref().set_read_timeout(Some(IO_TIMEOUT))?;
        result
    }

    fn send_bytes(&mut self, bytes: &[u8], head: bool) -> io::Result<Received> {
        if self.closing {
            return Err(io::Error::new(
                io::ErrorKind::NotConnected,
                "the previous response said the server closes this connection",
            ));
        }
        let resp = write_then_read(&mut self.reader, bytes, head)?;
        self.closing = resp.closes;
        Ok(resp)
    }
}

/// Writes `bytes` on a new connection, shuts down the write half (the server sees EOF), and
/// returns whatever comes back until EOF, a reset, or `RAW_TIMEOUT`.
pub fn raw(addr: SocketAddr, bytes: &[u8]) -> io::Result<Vec<u8>> {
    raw_with(addr, bytes, true, RAW_TIMEOUT)
}

/// Like `raw`, with the choice to keep the write half open (the server sees no EOF) and a
/// total time limit. A timeout or reset is not an error: the bytes read so far are returned.
pub fn raw_with(
    addr: SocketAddr,
    bytes: &[u8],
    shutdown_write: bool,
    timeout: Duration,
) -> io::Result<Vec<u8>> {
    let mut stream = connect(addr)?;
    match stream.write_all(bytes).and_then(|()| stream.flush()) {
        Ok(()) => {}
        // The server may refuse the rest of the input and still have answered.
        Err(e) if is_disconnect(&e) => {}
        Err(e) => return Err(e),
    }
    if shutdown_write {
        let _ = stream.shutdown(Shutdown::Write);
    }
    let deadline = Instant::now() + timeout;
    let mut out = Vec::new();
    let mut buf = [0u8; 8192];
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Ok(out);
        }
        stream.set_read_timeout(Some(left))?;
        match stream.read(&mut buf) {
            Ok(0) => return Ok(out),
            Ok(n) => out.extend_from_slice(&buf[..n]),
            Err(e) if is_timeout(&e) || is_disconnect(&e) => return Ok(out),
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
}

/// Parses one response from raw bytes, e.g. the output of `raw`.
pub fn parse_response(bytes: &[u8], head: bool) -> io::Result<Received> {
    read_response(&mut io::Cursor::new(bytes), head)
}

/// Parses every response in `bytes`, e.g. the answers to pipelined requests (none for HEAD).
pub fn parse_responses(bytes: &[u8]) -> io::Result<Vec<Received>> {
    let mut cursor = io::Cursor::new(bytes);
    let mut out = Vec::new();
    while !cursor.fill_buf()?.is_empty() {
        out.push(read_response(&mut cursor, false)?);
    }
    Ok(out)
}

fn connect(addr: SocketAddr) -> io::Result<TcpStream> {
    let stream = TcpStream::connect_timeout(&addr, IO_TIMEOUT)?;
    stream.set_read_timeout(Some(IO_TIMEOUT))?;
    stream.set_write_timeout(Some(IO_TIMEOUT))?;
    stream.set_nodelay(true)?;
    Ok(stream)
}

fn is_head(method: &str) -> bool {
    method.eq_ignore_ascii_case("HEAD")
}

fn is_timeout(e: &io::Error) -> bool {
    matches!(
        e.kind(),
        io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
    )
}

fn is_disconnect(e: &io::Error) -> bool {
    matches!(
        e.kind(),
        io::ErrorKind::BrokenPipe
            | io::ErrorKind::ConnectionReset
            | io::ErrorKind::ConnectionAborted
    )
}

fn encode_request(
    addr: SocketAddr,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: Option<&[u8]>,
    close: bool,
) -> Vec<u8> {
    let has = |name: &str| headers.iter().any(|(n, _)| n.eq_ignore_ascii_case(name));
    let mut head = format!("{method} {path} HTTP/1.1\r\n");
    if !has("host") {
        let _ = write!(head, "Host: {addr}\r\n");
    }
    if close && !has("connection") {
        head.push_str("Connection: close\r\n");
    }
    if let Some(body) = body {
        if !has("content-length") && !has("transfer-encoding") {
            let _ = write!(head, "Content-Length: {}\r\n", body.len());
        }
    }
    for (name, value) in headers {
        let _ = write!(head, "{name}: {value}\r\n");
    }
    head.push_str("\r\n");
    let mut bytes = head.into_bytes();
    bytes.extend_from_slice(body.unwrap_or_default());
    bytes
}

fn write_then_read(
    reader: &mut BufReader<TcpStream>,
    bytes: &[u8],
    head: bool,
) -> io::Result<Received> {
    let stream = reader.get_mut();
    let written = stream.write_all(bytes).and_then(|()| stream.flush());
    match written {
        Ok(()) => read_response(reader, head),
        // E.g. a 413 sent before the body was taken: the answer is what the test wants.
        Err(e) if is_disconnect(&e) => read_response(reader, head).map_err(|_| e),
        Err(e) => Err(e),
    }
}

/// The value of the sample `series` (a name with its labels, as written) in
/// a text-format scrape, or `None` when it is not there.
pub fn sample(text: &str, series: &str) -> Option<f64> {
    let prefix = format!("{series} ");
    text.lines()
        .find_map(|l| l.strip_prefix(&prefix))
        .map(|v| v.parse().expect("a numeric sample"))
}

/// An address nothing listens on, and nothing can start listening on, while this lives: the
/// local end of a connection to a listener since closed. A connect to it is refused at once.
/// A port freed by dropping a listener would not do: a server started meanwhile by a test
/// running in parallel may be given it.
pub struct RefusedAddr {
    addr: SocketAddr,
    _ends: (TcpStream, TcpStream),
}

impl RefusedAddr {
    pub fn new() -> RefusedAddr {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind a listener");
        let client =
            TcpStream::connect(listener.local_addr().expect("its address")).expect("connect");
        let (server, _) = listener.accept().expect("accept");
        RefusedAddr {
            addr: client.local_addr().expect("the client's address"),
            _ends: (client, server),
        }
    }

    /// The address a connect to is refused.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }
}

impl Default for RefusedAddr {
    fn default() -> Self {
        RefusedAddr::new()
    }
}
