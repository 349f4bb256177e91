//! End-to-end tests of the front, with a real tiny_http server behind it.

use super::test_support::{
    quick, start, start_local, wait_until, Backend, Client, Recorder, PATIENCE,
};
use super::{
    start_with, Answer, Backoff, Front, FrontConfig, FrontHandle, LocalHandler, LocalRequest,
    LocalResponse, BACKOFF_MAX,
};
use std::io::{self, BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::Duration;

#[test]
fn keep_alive_requests_share_one_upstream_connection() {
    let backend = Backend::start(2);
    let (front, _) = start(&backend, quick());
    let mut client = Client::connect(&front);
    assert_eq!(client.get("/a").text(), "GET /a 0");
    client.send(b"POST /b HTTP/1.1\r\nHost: t\r\nContent-Length: 5\r\n\r\nhello");
    let reply = client.reply();
    assert_eq!((reply.status, reply.text().as_str()), (200, "POST /b 5"));
    assert_eq!(client.get("/c").text(), "GET /c 0");
    let seen = backend.seen.lock().unwrap().clone();
    assert_eq!(seen.len(), 3);
    assert!(
        seen.iter()
            .all(|s| s.upstream_port == seen[0].upstream_port),
        "{seen:?}"
    );
}

#[test]
fn absurd_content_lengths_get_413_without_reaching_the_backend() {
    let backend = Backend::start(1);
    let (front, recorder) = start(&backend, quick());
    for length in ["18446744073709551615", "1000000000000000", "1048577"] {
        let mut client = Client::connect(&front);
        client.send(
            format!("POST /x HTTP/1.1\r\nHost: t\r\nContent-Length: {length}\r\n\r\n").as_bytes(),
        );
        let reply = client.reply();
        assert_eq!(reply.status, 413);
        assert!(reply.text().contains("\"PAYLOAD_TOO_LARGE\""));
        assert!(client.is_closed());
    }
    assert!(backend.urls().is_empty());
    assert_eq!(recorder.rejected.lock().unwrap().len(), 3);
    assert_eq!(Client::connect(&front).get("/ok").status, 200);
}

#[test]
fn chunked_bodies_are_decoded_and_limited() {
    let backend = Backend::start(1);
    let config = FrontConfig {
        max_body: 16,
        ..quick()
    };
    let (front, recorder) = start(&backend, config);
    let mut client = Client::connect(&front);
    client.send(b"POST /c HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n6;x=y\r\n world\r\n0\r\nT: v\r\n\r\n");
    assert_eq!(client.reply().text(), "POST /c 11");

    let mut client = Client::connect(&front);
    client.send(b"PUT /big HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\r\na\r\n0123456789\r\na\r\n0123456789\r\n0\r\n\r\n");
    assert_eq!(client.reply().status, 413);
    assert!(client.is_closed());
    assert_eq!(backend.urls(), ["/c"]);
    assert_eq!(
        *recorder.rejected.lock().unwrap(),
        [("PUT".to_string(), 413)]
    );
}

#[test]
fn a_slow_body_times_out_without_holding_a_worker() {
    let backend = Backend::start(1);
    let config = FrontConfig {
        body_timeout: Duration::from_millis(300),
        ..quick()
    };
    let (front, recorder) = start(&backend, config);
    let mut slow = Client::connect(&front);
    slow.send(b"POST /slow HTTP/1.1\r\nHost: t\r\nContent-Length: 100\r\n\r\n0123456789");
    // The only worker is free while the slow body trickles in.
    assert_eq!(Client::connect(&front).get("/fast").status, 200);
    assert!(slow.is_closed());
    assert!(recorder.has_reason("body_timeout"));
    assert_eq!(backend.urls(), ["/fast"]);
}

#[test]
fn malformed_requests_get_json_errors_and_are_closed() {
    let backend = Backend::start(1);
    let (front, recorder) = start(&backend, quick());
    let many_headers = format!(
        "GET / HTTP/1.1\r\n{}\r\n",
        "X-Filler: 0123456789abcdef\r\n".repeat(740)
    );
    let cases: [(&[u8], u16, &str, &str); 8] = [
        (
            b"GET / HTTP/2.0\r\nHost: t\r\n\r\n",
            505,
            "HTTP_VERSION_NOT_SUPPORTED",
            "GET",
        ),
        (
            b"GET / HTTP/1.1\nHost: t\r\n\r\n",
            400,
            "BAD_REQUEST",
            "GET",
        ),
        (
            "GET / HTTP/1.1\r\nX-Name: caf\u{e9}\r\n\r\n".as_bytes(),
            400,
            "BAD_REQUEST",
            "GET",
        ),
        (
            b"POST / HTTP/1.1\r\nContent-Length: 3\r\nTransfer-Encoding: chunked\r\n\r\n",
            400,
            "BAD_REQUEST",
            "POST",
        ),
        (
            b"POST / HTTP/1.1\r\nTransfer-Encoding: gzip\r\n\r\n",
            501,
            "NOT_IMPLEMENTED",
            "POST",
        ),
        (many_headers.as_bytes(), 431, "HEADERS_TOO_LARGE", "GET"),
        (
            b"DELETE /x HTTP/1.1\r\nContent-Length: -1\r\n\r\n",
            400,
            "BAD_REQUEST",
            "DELETE",
        ),
        (
            b"G(T / HTTP/1.1\r\nHost: t\r\n\r\n",
            400,
            "BAD_REQUEST",
            "OTHER",
        ),
    ];
    for (request, status, code, _) in cases {
        let mut client = Client::connect(&front);
        client.send(request);
        let reply = client.reply();
        assert_eq!(reply.status, status, "{}", String::from_utf8_lossy(request));
        assert_eq!(reply.header("Content-Type"), Some("application/json"));
        assert_eq!(reply.header("Connection"), Some("close"));
        assert!(reply
            .text()
            .starts_with(&format!("{{\"error\":{{\"code\":\"{code}\",\"message\":\"")));
        assert!(client.is_closed());
    }
    let expected: Vec<(String, u16)> = cases.iter().map(|c| (c.3.to_string(), c.1)).collect();
    assert_eq!(*recorder.rejected.lock().unwrap(), expected);
    assert!(backend.urls().is_empty());
}

#[test]
fn idle_and_slowloris_connections_are_closed() {
    let backend = Backend::start(1);
    let config = FrontConfig {
        idle_timeout: Duration::from_millis(200),
        header_timeout: Duration::from_millis(200),
        ..quick()
    };
    let (front, recorder) = start(&backend, config);
    let mut idle = Client::connect(&front);
    let mut slowloris = Client::connect(&front);
    slowloris.send(b"GET / HTTP/1.1\r\nX-a: b\r\n");
    assert!(idle.is_closed());
    assert!(slowloris.is_closed());
    assert!(recorder.has_reason("idle_timeout"));
    assert!(recorder.has_reason("header_timeout"));
    wait_until("both are gone", || {
        recorder.open.load(Ordering::SeqCst) == 0
    });
    assert!(backend.urls().is_empty());
}

#[test]
fn over_the_cap_the_longest_idle_connection_is_closed() {
    let backend = Backend::start(2);
    let config = FrontConfig {
        max_connections: 2,
        ..quick()
    };
    let (front, recorder) = start(&backend, config);
    let mut oldest = Client::connect(&front);
    wait_until("one is open", || recorder.open.load(Ordering::SeqCst) == 1);
    let mut newer = Client::connect(&front);
    wait_until("two are open", || recorder.open.load(Ordering::SeqCst) == 2);
    let mut newest = Client::connect(&front);
    assert!(oldest.is_closed());
    assert_eq!(newest.get("/3").status, 200);
    assert_eq!(newer.get("/2").status, 200);
    assert_eq!(*recorder.reasons.lock().unwrap(), ["evicted"]);
}

#[test]
fn over_the_cap_with_no_idle_connection_the_new_one_is_refused() {
    let backend = Backend::start(1);
    let config = FrontConfig {
        max_connections: 1,
        ..quick()
    };
    let (front, recorder) = start(&backend, config);
    let mut streaming = Client::connect(&front);
    streaming.send(b"GET /stream HTTP/1.1\r\nHost: t\r\n\r\n");
    assert_eq!(streaming.head().status, 200);
    assert_eq!(streaming.chunk(), b"data: one\n\n");
    let mut refused = Client::connect(&front);
    assert!(refused.is_closed());
    assert_eq!(*recorder.reasons.lock().unwrap(), ["limit"]);
    backend.release.send(()).unwrap();
    assert_eq!(streaming.chunk(), b"data: two\n\n");
    assert!(streaming.chunk().is_empty());
}

#[test]
fn streamed_events_arrive_before_the_stream_ends() {
    let backend = Backend::start(1);
    let (front, _) = start(&backend, quick());
    let mut client = Client::connect(&front);
    client.send(b"GET /stream HTTP/1.1\r\nHost: t\r\n\r\n");
    let head = client.head();
    assert_eq!(head.header("Content-Type"), Some("text/event-stream"));
    assert_eq!(head.header("Transfer-Encoding"), Some("chunked"));
    // The stream is still open upstream: this chunk was relayed on its own.
    assert_eq!(client.chunk(), b"data: one\n\n");
    backend.release.send(()).unwrap();
    assert_eq!(client.chunk(), b"data: two\n\n");
    assert!(client.chunk().is_empty());
    assert_eq!(client.get("/after").text(), "GET /after 0");
}

#[test]
fn an_upgrade_becomes_a_two_way_tunnel() {
    let backend = Backend::start(1);
    let (front, recorder) = start(&backend, quick());
    let mut client = Client::connect(&front);
    client.send(b"GET /ws HTTP/1.1\r\nHost: t\r\nConnection: Upgrade\r\nUpgrade: echo\r\n\r\n");
    let head = client.head();
    assert_eq!(head.status, 101);
    assert_eq!(head.header("Upgrade"), Some("echo"));
    assert_eq!(head.header("Connection"), Some("upgrade"));
    for message in [&b"ping"[..], b"and a longer message"] {
        client.send(message);
        let mut echo = vec![0; message.len()];
        client.0.read_exact(&mut echo).unwrap();
        assert_eq!(echo, message);
    }
    client
        .0
        .get_ref()
        .shutdown(std::net::Shutdown::Write)
        .unwrap();
    assert!(client.is_closed());
    wait_until("the tunnel is gone", || {
        recorder.open.load(Ordering::SeqCst) == 0
    });
}

#[test]
fn head_responses_have_no_body() {
    let backend = Backend::start(1);
    let (front, _) = start(&backend, quick());
    let mut client = Client::connect(&front);
    client.send(b"HEAD /h HTTP/1.1\r\nHost: t\r\n\r\n");
    let reply = client.reply_to(true);
    assert_eq!(
        (reply.status, reply.header("Content-Length")),
        (200, Some("9"))
    );
    client.send(b"HEAD /big HTTP/1.1\r\nHost: t\r\n\r\n");
    let reply = client.reply_to(true);
    assert_eq!(reply.header("Transfer-Encoding"), Some("chunked"));
    assert_eq!(client.get("/next").text(), "GET /next 0");
    assert_eq!(client.get("/big").body.len(), 100_000);
}

#[test]
fn a_bad_request_leaves_other_connections_unharmed() {
    let backend = Backend::start(1);
    let (front, _) = start(&backend, quick());
    let mut first = Client::connect(&front);
    assert_eq!(first.get("/1").status, 200);
    first.send(b"GET / HTTP/1.1\r\nContent-Length: 5\r\nContent-Length: 6\r\n\r\nhello!");
    assert_eq!(first.reply().status, 400);
    assert!(first.is_closed());
    let mut second = Client::connect(&front);
    assert_eq!(second.get("/2").text(), "GET /2 0");
    assert_eq!(backend.urls(), ["/1", "/2"]);
}

#[test]
fn expectations_are_handled_by_the_front() {
    let backend = Backend::start(1);
    let (front, recorder) = start(&backend, quick());
    let mut client = Client::connect(&front);
    client.send(b"PUT /e HTTP/1.1\r\nHost: t\r\nExpect: 100-continue\r\nContent-Length: 5\r\n\r\n");
    assert_eq!(client.head().status, 100);
    client.send(b"hello");
    assert_eq!(client.reply().text(), "PUT /e 5");

    client.send(b"PUT /e HTTP/1.1\r\nHost: t\r\nExpect: teapot\r\nContent-Length: 5\r\n\r\nhello");
    let reply = client.reply();
    assert_eq!(reply.status, 417);
    assert!(reply.text().contains("\"EXPECTATION_FAILED\""));
    assert!(client.is_closed());
    assert_eq!(backend.urls(), ["/e"]);
    assert_eq!(
        *recorder.rejected.lock().unwrap(),
        [("PUT".to_string(), 417)]
    );
}

/// Answers every path but `/stream*` in-process, none for `/none`, and
/// parks the answers of `/later*` for the test to send from its own thread.
#[derive(Default)]
struct Echo {
    parked: Mutex<Vec<(Answer, LocalResponse)>>,
}

impl LocalHandler for Echo {
    fn handles(&self, _method: &[u8], path: &[u8]) -> bool {
        !path.starts_with(b"/stream")
    }

    fn handle(&self, request: LocalRequest, answer: Answer) {
        if request.target == "/none" {
            return;
        }
        let headers: Vec<String> = request
            .headers
            .iter()
            .map(|(name, value)| format!("{name}={value}"))
            .collect();
        let body = format!(
            "local {} {} {} {}",
            request.method,
            request.target,
            request.body.len(),
            headers.join(",")
        );
        let response = LocalResponse {
            status: 200,
            headers: vec![("X-Local", "yes".to_string())],
            body: body.into_bytes(),
        };
        if request.target.starts_with("/later") {
            self.parked.lock().unwrap().push((answer, response));
        } else {
            answer.send(response);
        }
    }
}

impl Echo {
    /// Waits for a parked answer and sends it from this thread. With
    /// `detached`, waits until the connection thread has left it to its
    /// sender and gone back to reading, so the late path is always taken.
    fn send_parked(&self, detached: bool) {
        wait_until("a parked answer", || {
            self.parked
                .lock()
                .unwrap()
                .last()
                .is_some_and(|(answer, _)| !detached || answer.is_detached())
        });
        let (answer, response) = self.parked.lock().unwrap().pop().unwrap();
        answer.send(response);
    }
}

#[test]
fn answers_sent_later_from_another_thread_keep_their_order() {
    let backend = Backend::start(1);
    let echo = Arc::new(Echo::default());
    let (front, _) = start_local(&backend, quick(), Some(echo.clone()));
    let mut client = Client::connect(&front);
    for i in 0..3 {
        client.send(
            format!("POST /later-{i} HTTP/1.1\r\nHost: t\r\nContent-Length: 1\r\n\r\nx").as_bytes(),
        );
        echo.send_parked(true);
        assert_eq!(
            client.reply().text(),
            format!("local POST /later-{i} 1 Host=t")
        );
    }
    // Pipelined: the second request waits for the first answer to be written.
    client.send(b"POST /later HTTP/1.1\r\nHost: t\r\nContent-Length: 0\r\n\r\nGET /now HTTP/1.1\r\nHost: t\r\n\r\n");
    echo.send_parked(true);
    assert_eq!(client.reply().text(), "local POST /later 0 Host=t");
    assert_eq!(client.reply().text(), "local GET /now 0 Host=t");
    // Connection: close is answered, then the connection ends.
    client
        .send(b"POST /later HTTP/1.1\r\nHost: t\r\nConnection: close\r\nContent-Length: 0\r\n\r\n");
    echo.send_parked(false);
    let reply = client.reply();
    assert_eq!(reply.header("Connection"), Some("close"));
    assert!(client.is_closed());
    // An answer dropped unsent closes the connection.
    let mut client = Client::connect(&front);
    client.send(b"POST /later HTTP/1.1\r\nHost: t\r\nContent-Length: 0\r\n\r\n");
    let mut parked = None;
    wait_until("a parked answer", || {
        parked = echo.parked.lock().unwrap().pop();
        parked.is_some()
    });
    drop(parked);
    assert!(client.is_closed());
}

#[test]
fn handled_requests_are_answered_in_process_and_the_rest_go_upstream() {
    let backend = Backend::start(1);
    let (front, _) = start_local(&backend, quick(), Some(Arc::new(Echo::default())));
    let mut client = Client::connect(&front);
    let reply = client.get("/metrics?x=1");
    assert_eq!(reply.status, 200);
    assert_eq!(reply.text(), "local GET /metrics?x=1 0 Host=t");
    client.send(
        b"POST /m HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\nX-A: b\r\n\r\n3\r\nabc\r\n0\r\n\r\n",
    );
    assert_eq!(client.reply().text(), "local POST /m 3 Host=t,X-A=b");
    client.send(b"HEAD /h HTTP/1.1\r\nHost: t\r\n\r\n");
    let head = client.head();
    assert_eq!(head.status, 200);
    // Same connection: the streaming path goes upstream, then back to local.
    let stream = client.get("/stream-less");
    assert_eq!(stream.text(), "GET /stream-less 0");
    assert_eq!(client.get("/again").status, 200);
    assert_eq!(backend.urls(), ["/stream-less"]);
    // An upgrade always goes upstream, whatever the handler says.
    client.send(b"GET /ws HTTP/1.1\r\nHost: t\r\nConnection: upgrade\r\nUpgrade: echo\r\n\r\n");
    assert_eq!(client.head().status, 101);
    assert_eq!(backend.urls(), ["/stream-less", "/ws"]);
}

#[test]
fn a_local_request_without_an_answer_closes_the_connection() {
    let backend = Backend::start(1);
    let (front, _) = start_local(&backend, quick(), Some(Arc::new(Echo::default())));
    let mut client = Client::connect(&front);
    client.send(b"GET /none HTTP/1.1\r\nHost: t\r\n\r\n");
    assert!(client.is_closed());
    let mut client = Client::connect(&front);
    client.send(b"GET /x HTTP/1.0\r\nConnection: keep-alive\r\n\r\n");
    assert_eq!(client.reply().status, 200);
    client.send(b"GET /y HTTP/1.0\r\n\r\n");
    assert_eq!(client.reply().text(), "local GET /y 0 ");
    assert!(client.is_closed());
}

#[test]
fn a_body_over_the_limit_is_refused_before_100_continue() {
    let backend = Backend::start(1);
    let (front, _) = start(&backend, quick());
    let mut client = Client::connect(&front);
    client.send(b"PUT /e HTTP/1.1\r\nExpect: 100-continue\r\nContent-Length: 2000000\r\n\r\n");
    assert_eq!(client.head().status, 413);
    assert!(backend.urls().is_empty());
}

#[test]
fn http10_clients_get_identity_bodies() {
    let backend = Backend::start(1);
    let (front, _) = start(&backend, quick());
    let mut client = Client::connect(&front);
    client.send(b"GET /big HTTP/1.0\r\n\r\n");
    let reply = client.reply();
    assert_eq!(reply.header("Transfer-Encoding"), None);
    assert_eq!(reply.body.len(), 100_000);

    let mut client = Client::connect(&front);
    client.send(b"GET /k HTTP/1.0\r\nConnection: keep-alive\r\n\r\n");
    let reply = client.reply();
    assert_eq!(reply.header("Connection"), Some("keep-alive"));
    client.send(b"GET /l HTTP/1.0\r\n\r\n");
    assert_eq!(client.reply().text(), "GET /l 0");
    assert!(client.is_closed());
}

#[test]
fn forwarded_for_is_the_peer_address() {
    let backend = Backend::start(1);
    let (front, _) = start(&backend, quick());
    let mut client = Client::connect(&front);
    client.send(b"GET /f HTTP/1.1\r\nX-Forwarded-For: 6.6.6.6\r\n\r\n");
    assert_eq!(client.reply().status, 200);
    let seen = backend.seen.lock().unwrap();
    assert_eq!(seen[0].forwarded_for.as_deref(), Some("127.0.0.1"));
}

#[test]
fn pipelined_requests_are_answered_in_order() {
    let backend = Backend::start(2);
    let (front, _) = start(&backend, quick());
    let mut client = Client::connect(&front);
    client.send(b"GET /p1 HTTP/1.1\r\n\r\nPOST /p2 HTTP/1.1\r\nContent-Length: 2\r\n\r\nhiGET /p3 HTTP/1.1\r\n\r\n");
    assert_eq!(client.reply().text(), "GET /p1 0");
    assert_eq!(client.reply().text(), "POST /p2 2");
    assert_eq!(client.reply().text(), "GET /p3 0");
}

#[test]
fn a_burst_of_new_clients_is_served_promptly() {
    // tiny_http can queue a burst of new connections behind busy threads;
    // the front must not open its upstream connections that way.
    let backend = Backend::start(2);
    let (front, _) = start(&backend, quick());
    let addr = front.local_addr();
    let clients: Vec<_> = (0..32)
        .map(|i| {
            thread::spawn(move || {
                let stream = TcpStream::connect(addr).unwrap();
                stream.set_read_timeout(Some(PATIENCE)).unwrap();
                let mut client = Client(BufReader::new(stream));
                let reply = client.get(&format!("/burst/{i}"));
                (reply.status, client)
            })
        })
        .collect();
    let replies: Vec<_> = clients.into_iter().map(|c| c.join().unwrap()).collect();
    assert!(replies.iter().all(|(status, _)| *status == 200));
}

#[test]
fn a_stale_pooled_connection_is_replaced() {
    // An upstream that closes each connection after one response.
    let upstream = TcpListener::bind("127.0.0.1:0").unwrap();
    let upstream_addr = upstream.local_addr().unwrap();
    thread::spawn(move || {
        for (n, stream) in upstream.incoming().enumerate() {
            let mut reader = BufReader::new(stream.unwrap());
            let mut line = String::new();
            while reader.read_line(&mut line).unwrap() > 2 {
                line.clear();
            }
            let body = format!("answer {n}");
            let reply = format!(
                "HTTP/1.1 200 OK\r\nContent-Length: {}\r\n\r\n{body}",
                body.len()
            );
            reader.get_mut().write_all(reply.as_bytes()).unwrap();
        }
    });
    let recorder = Arc::new(Recorder::default());
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let front = Front::start(listener, upstream_addr, quick(), recorder, None).unwrap();
    let mut client = Client::connect(&front);
    assert_eq!(client.get("/").text(), "answer 0");
    assert_eq!(client.get("/").text(), "answer 1");
}

#[test]
fn an_unreachable_upstream_gets_502() {
    let unused = TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();
    let recorder = Arc::new(Recorder::default());
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let front = Front::start(listener, unused, quick(), recorder.clone(), None).unwrap();
    let mut client = Client::connect(&front);
    let reply = client.get("/");
    assert_eq!(reply.status, 502);
    assert!(reply.text().contains("\"BAD_GATEWAY\""));
    assert_eq!(
        *recorder.rejected.lock().unwrap(),
        [("GET".to_string(), 502)]
    );
}

#[test]
fn accepting_survives_errors() {
    let backend = Backend::start(1);
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    let mut failures = 3;
    let accept = move || {
        if failures > 0 {
            failures -= 1;
            return Err(io::Error::from_raw_os_error(24)); // EMFILE
        }
        listener.accept()
    };
    let recorder = Arc::new(Recorder::default());
    let front = start_with(accept, addr, backend.addr, quick(), recorder.clone(), None).unwrap();
    assert_eq!(Client::connect(&front).get("/after-errors").status, 200);
    assert_eq!(recorder.accept_errors.load(Ordering::SeqCst), 3);
}

#[test]
fn backoff_doubles_to_its_cap_and_resets() {
    let mut backoff = Backoff::default();
    let delays: Vec<u64> = (0..9)
        .map(|_| backoff.next_delay().as_millis() as u64)
        .collect();
    assert_eq!(delays, [1, 2, 4, 8, 16, 32, 64, 100, 100]);
    assert_eq!(backoff.next_delay(), BACKOFF_MAX);
    backoff.reset();
    assert_eq!(backoff.next_delay(), Duration::from_millis(1));
}

#[test]
fn shutdown_stops_accepting_and_closes_connections() {
    let backend = Backend::start(1);
    let (front, _) = start(&backend, quick());
    let mut client = Client::connect(&front);
    assert_eq!(client.get("/").status, 200);
    front.shutdown();
    front.shutdown();
    assert!(client.is_closed());
    assert!(TcpStream::connect(front.local_addr()).is_err());
}

#[test]
fn shared_types_are_thread_safe() {
    fn assert_send_sync<T: Send + Sync>() {}
    assert_send_sync::<FrontHandle>();
    assert_send_sync::<FrontConfig>();
}
