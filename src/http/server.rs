//! The server: the front guard owns the public socket and reads each
//! request whole and checked. It answers the plain request-and-response
//! routes itself, in the connection's thread, through the router inside a
//! panic guard. The long-lived streams (server-sent events and WebSockets)
//! go on to tiny_http on a private loopback socket, where a fixed pool of
//! workers hands each to the same router.
//!
//! Answering in-process saves a loopback hop, its copies and two thread
//! switches per request. A scrape or health check then never queues behind
//! bulk writes: each connection has its own thread.

use std::io;
use std::net::{SocketAddr, TcpListener};
use std::sync::Arc;
use std::thread::{self, JoinHandle};

use serde_json::json;

use super::exchange::{method_label, Exchange};
use super::front::{
    Answer, Front, FrontConfig, FrontHandle, FrontHooks, LocalHandler, LocalRequest,
};
use super::routes;
use crate::app::App;

/// The routes tiny_http serves: their answers stream for as long as the
/// client stays, which the front's request-and-response path cannot carry.
const STREAM_PATHS: [&[u8]; 2] = [b"/api/v1/events", b"/api/v1/ws"];

/// A running server: the front guard, the tiny_http server and its workers.
pub struct Server {
    server: Arc<tiny_http::Server>,
    front: FrontHandle,
    workers: Vec<JoinHandle<()>>,
}

/// Answers requests in the front's connection threads.
struct Local {
    app: Arc<App>,
}

impl LocalHandler for Local {
    fn handles(&self, _method: &[u8], path: &[u8]) -> bool {
        // Compared as the router does, without trailing slashes.
        let end = path.iter().rposition(|&b| b != b'/').map_or(0, |i| i + 1);
        !STREAM_PATHS.contains(&&path[..end])
    }

    fn handle(&self, request: LocalRequest, answer: Answer) {
        // Durable writes are answered later, by the journal's thread.
        dispatch(Exchange::local(request, answer, self.app.clone()));
    }
}

/// What the front reports, turned into metrics and log lines.
struct Hooks {
    app: Arc<App>,
}

impl FrontHooks for Hooks {
    fn request_rejected(&self, method: &str, status: u16) {
        let method = method_label(method);
        let status_label = super::exchange::status_text(status);
        self.app.http.requests.inc(&[method, status_label]);
        self.app.log.info(
            "request refused by the front guard",
            &[("method", json!(method)), ("status", json!(status))],
        );
    }

    fn connection_rejected(&self, reason: &str) {
        self.app.http.connections_rejected.inc(&[reason]);
    }

    fn connections(&self, open: usize) {
        self.app.http.connections.set(open as f64);
    }

    fn accept_error(&self, err: &io::Error) {
        self.app.http.connections_rejected.inc(&["accept_error"]);
        self.app.log.warn(
            "accept failed; retrying",
            &[("error", json!(err.to_string()))],
        );
    }
}

impl Server {
    /// Serves `app` on `listener` through the front guard, with `workers`
    /// tiny_http threads for the streaming routes.
    pub fn start(
        app: Arc<App>,
        listener: TcpListener,
        workers: usize,
        front: FrontConfig,
    ) -> io::Result<Server> {
        let (server, upstream) = inner_server()?;
        let mut handles = Vec::new();
        for i in 0..workers.max(1) {
            let (server, app) = (server.clone(), app.clone());
            handles.push(
                thread::Builder::new()
                    .name(format!("worker-{i}"))
                    .spawn(move || work(&server, &app))?,
            );
        }
        let hooks = Arc::new(Hooks { app: app.clone() });
        let local: Arc<dyn LocalHandler> = Arc::new(Local { app });
        let front = Front::start(listener, upstream, front, hooks, Some(local))?;
        Ok(Server {
            server,
            front,
            workers: handles,
        })
    }

    /// The public address the front guard listens on.
    pub fn addr(&self) -> SocketAddr {
        self.front.local_addr()
    }

    /// Waits for the workers, which run until the process ends.
    pub fn join(self) {
        for w in self.workers {
            let _ = w.join();
        }
        drop(self.server);
    }
}

/// A tiny_http server on a private loopback socket, and its address.
fn inner_server() -> io::Result<(Arc<tiny_http::Server>, SocketAddr)> {
    let inner = TcpListener::bind("127.0.0.1:0")?;
    let addr = inner.local_addr()?;
    // The front's own sockets set TCP_NODELAY; tiny_http's accepted
    // sockets inherit it from this listener.
    crate::sys::set_listener_nodelay(&inner)?;
    let server = tiny_http::Server::from_listener(inner, None)
        .map(Arc::new)
        .map_err(|e| io::Error::other(e.to_string()))?;
    Ok((server, addr))
}

fn work(server: &tiny_http::Server, app: &Arc<App>) {
    loop {
        let request = match server.recv() {
            Ok(r) => r,
            Err(e) => {
                app.log.error(
                    "accept failed",
                    &[("error", serde_json::json!(e.to_string()))],
                );
                continue;
            }
        };
        dispatch(Exchange::new(request, app.clone()));
    }
}

/// Routes `exchange`. A panic unwinds through the exchange, whose Drop
/// answers 500 and counts it; the thread then carries on.
fn dispatch(exchange: Exchange) {
    let _ = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| routes::route(exchange)));
}
