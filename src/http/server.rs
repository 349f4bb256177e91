//! The server loop: tiny_http accepts and parses, a fixed pool of workers
//! pulls requests and hands each to the router inside a panic guard.

use std::net::{SocketAddr, TcpListener};
use std::sync::Arc;
use std::thread::{self, JoinHandle};

use super::exchange::Exchange;
use super::routes;
use crate::app::App;

/// A running tiny_http server and its workers.
pub struct Server {
    server: Arc<tiny_http::Server>,
    addr: SocketAddr,
    workers: Vec<JoinHandle<()>>,
}

impl Server {
    /// Serves `app` on `listener` with `workers` handler threads.
    pub fn start(app: Arc<App>, listener: TcpListener, workers: usize) -> std::io::Result<Server> {
        let addr = listener.local_addr()?;
        crate::sys::set_listener_nodelay(&listener)?;
        let server = tiny_http::Server::from_listener(listener, None)
            .map(Arc::new)
            .map_err(|e| std::io::Error::other(e.to_string()))?;
        let workers = (0..workers.max(1))
            .map(|i| {
                let (server, app) = (server.clone(), app.clone());
                thread::Builder::new()
                    .name(format!("worker-{i}"))
                    .spawn(move || work(&server, &app))
            })
            .collect::<std::io::Result<Vec<_>>>()?;
        Ok(Server {
            server,
            addr,
            workers,
        })
    }

    /// The address tiny_http listens on.
    pub fn addr(&self) -> SocketAddr {
        self.addr
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
