//! The server: the front guard owns the public socket and passes clean,
//! complete requests to tiny_http on a private loopback socket, where a
//! fixed pool of workers hands each to the router inside a panic guard.
//!
//! Scrapes and health checks take a lane of their own: a second tiny_http
//! server on another loopback socket, with its own workers, so that they
//! never queue behind bulk writes.

use std::io;
use std::net::{SocketAddr, TcpListener};
use std::sync::Arc;
use std::thread::{self, JoinHandle};

use serde_json::json;

use super::exchange::Exchange;
use super::front::{Front, FrontConfig, FrontHandle, FrontHooks};
use super::routes;
use crate::app::App;

/// Workers of the priority lane. Scrapes and health checks are quick and
/// few; two workers answer them while the others are busy with bulk writes,
/// so that a slow scrape does not hold up a health check.
const PRIORITY_WORKERS: usize = 2;

/// A running server: the front guard, the two tiny_http servers and their workers.
pub struct Server {
    servers: [Arc<tiny_http::Server>; 2],
    front: FrontHandle,
    workers: Vec<JoinHandle<()>>,
}

/// What the front reports, turned into metrics and log lines.
struct Hooks {
    app: Arc<App>,
}

impl FrontHooks for Hooks {
    fn request_rejected(&self, method: &str, status: u16) {
        let method = match method {
            "GET" | "HEAD" | "POST" | "PUT" | "DELETE" | "PATCH" | "OPTIONS" => method,
            _ => "OTHER",
        };
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
    /// handler threads.
    pub fn start(
        app: Arc<App>,
        listener: TcpListener,
        workers: usize,
        front: FrontConfig,
    ) -> io::Result<Server> {
        let (server, upstream) = inner_server()?;
        let (priority, priority_upstream) = inner_server()?;
        let lanes = [
            (&server, workers.max(1), "worker"),
            (&priority, PRIORITY_WORKERS, "priority-worker"),
        ];
        let mut handles = Vec::new();
        for (server, count, name) in lanes {
            for i in 0..count {
                let (server, app) = (server.clone(), app.clone());
                handles.push(
                    thread::Builder::new()
                        .name(format!("{name}-{i}"))
                        .spawn(move || work(&server, &app))?,
                );
            }
        }
        let hooks = Arc::new(Hooks { app });
        let front = FrontConfig {
            priority_upstream: Some(priority_upstream),
            ..front
        };
        let front = Front::start(listener, upstream, front, hooks)?;
        Ok(Server {
            servers: [server, priority],
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
        drop(self.servers);
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
        let exchange = Exchange::new(request, app.clone());
        // A panic unwinds through the exchange, whose Drop answers 500 and
        // counts it; the worker then carries on with the next request.
        let _ = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| routes::route(exchange)));
    }
}
