//! The raw two-way copy after a `101 Switching Protocols` (WebSocket).

use std::io::{self, Read, Write};
use std::net::{Shutdown, TcpStream};
use std::thread;

use super::CONNECTION_STACK;

/// How much one read takes from either side.
const COPY_BUFFER: usize = 16 * 1024;

/// Copies bytes both ways between the client and the upstream until the
/// upstream closes or either side fails. The client's unread bytes go
/// upstream first, and the upstream's unread bytes to the client.
///
/// The client may half-close: its end of stream is passed on, and the copy
/// towards it goes on until the upstream closes. The upstream closing ends
/// the tunnel, so a client that never closes cannot keep this thread once
/// the server is done with it.
pub(super) fn run(
    client: TcpStream,
    client_leftover: &[u8],
    upstream: TcpStream,
    upstream_leftover: &[u8],
) {
    let started = start(&client, client_leftover, &upstream, upstream_leftover);
    if started.is_err() {
        close_both(&client, &upstream);
        return;
    }
    let (Ok(client_reader), Ok(upstream_writer)) = (client.try_clone(), upstream.try_clone())
    else {
        close_both(&client, &upstream);
        return;
    };
    let towards_upstream = thread::Builder::new()
        .name("front-tunnel".into())
        .stack_size(CONNECTION_STACK)
        .spawn(move || {
            if copy(&client_reader, &upstream_writer).is_ok() {
                let _ = upstream_writer.shutdown(Shutdown::Write);
            } else {
                close_both(&client_reader, &upstream_writer);
            }
        });
    let Ok(towards_upstream) = towards_upstream else {
        close_both(&client, &upstream);
        return;
    };
    let _ = copy(&upstream, &client);
    close_both(&client, &upstream);
    // The other direction ends now too: its read sees the shutdown.
    let _ = towards_upstream.join();
}

fn start(
    client: &TcpStream,
    client_leftover: &[u8],
    upstream: &TcpStream,
    upstream_leftover: &[u8],
) -> io::Result<()> {
    // Tunnelled protocols have their own idle rules; the head deadline no longer applies.
    client.set_read_timeout(None)?;
    let _ = upstream.set_nodelay(true);
    let mut client_w = client;
    let mut upstream_w = upstream;
    client_w.write_all(upstream_leftover)?;
    upstream_w.write_all(client_leftover)
}

/// Copies until `from` ends (`Ok`) or either side fails.
fn copy(mut from: &TcpStream, mut to: &TcpStream) -> io::Result<()> {
    let mut buf = vec![0u8; COPY_BUFFER];
    loop {
        match from.read(&mut buf) {
            Ok(0) => return Ok(()),
            Ok(n) => to.write_all(&buf[..n])?,
            Err(err) if err.kind() == io::ErrorKind::Interrupted => {}
            Err(err) => return Err(err),
        }
    }
}

fn close_both(a: &TcpStream, b: &TcpStream) {
    let _ = a.shutdown(Shutdown::Both);
    let _ = b.shutdown(Shutdown::Both);
}
