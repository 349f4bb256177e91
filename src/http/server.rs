//! The server: the front guard owns the public socket and passes clean,
//! complete requests to tiny_http on a private loopback socket, where a
//! fixed pool of workers hands each to the router inside a panic guard.

use std::io;
use std::net::{SocketAddr, TcpListener};
use std::sync::Arc;
use std::thread::{self, JoinHandle};

use serde_json::json;

use super::exchange::Exchange;
use super::front::{Front, FrontConfig, FrontHandle, FrontHooks};
use super::routes;
use crate::app::App;

/// A running server: the front guard, tiny_http and its workers.
pub struct Server {
    server: Arc<tiny_http::Server>,
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
        let inner = TcpListener::bind("127.0.0.1:0")?;
        let upstream = inner.local_addr()?;
        // The front's own sockets set TCP_NODELAY; tiny_http's accepted
        // sockets inherit it from this listener.
        crate::sys::set_listener_nodelay(&inner)?;
        let listener_for_tiny = inner;
        let server = tiny_http::Server::from_listener(listener_for_tiny, None)
            .map(Arc::new)
            .map_err(|e| io::Error::other(e.to_string()))?;
        let workers = (0..workers.max(1))
            .map(|i| {
                let (server, app) = (server.clone(), app.clone());
                thread::Builder::new()
                    .name(format!("worker-{i}"))
                    .spawn(move || work(&server, &app))
            })
            .collect::<io::Result<Vec<_>>>()?;
        let hooks = Arc::new(Hooks { app });
        let front = Front::start(listener, upstream, front, hooks)?;
        Ok(Server {
            server,
            front,
            workers,
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
