//! Clients that hold connections without finishing requests (issue 13, finding 2):
//! half-sent heads and bodies, silence, kept-alive idling, more connections than
//! descriptors, hang-ups. Raw TCP, since an HTTP client always finishes.
//!
//! Every wait here is a bound far above the setting under test (1 s), so a slow
//! machine cannot fail these; only a server that keeps the connection can.

use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::helpers::*;

/// Longer than any limit set in these tests, shorter than the defaults.
const BOUND: Duration = Duration::from_secs(20);

async fn connect(app: &TestApp) -> TcpStream {
    TcpStream::connect(app.url.trim_start_matches("http://"))
        .await
        .expect("connects")
}

/// Everything the server sends until it closes the connection (a reset counts as
/// closed); panics if it is still open after [`BOUND`].
async fn until_closed(stream: &mut TcpStream) -> String {
    let mut got = Vec::new();
    let read = async {
        let mut buf = [0u8; 4096];
        loop {
            match stream.read(&mut buf).await {
                Ok(0) | Err(_) => break,
                Ok(n) => got.extend_from_slice(&buf[..n]),
            }
        }
    };
    tokio::time::timeout(BOUND, read)
        .await
        .expect("the server closes the connection");
    String::from_utf8_lossy(&got).into_owned()
}

/// Reads until `needle` has arrived; panics if it has not after [`BOUND`].
async fn until_seen(stream: &mut TcpStream, needle: &str) -> String {
    let mut got = Vec::new();
    let read = async {
        let mut buf = [0u8; 4096];
        while !String::from_utf8_lossy(&got).contains(needle) {
            match stream.read(&mut buf).await {
                Ok(0) | Err(_) => break,
                Ok(n) => got.extend_from_slice(&buf[..n]),
            }
        }
    };
    tokio::time::timeout(BOUND, read)
        .await
        .unwrap_or_else(|_| panic!("{needle:?} arrives"));
    String::from_utf8_lossy(&got).into_owned()
}

fn limits(header: u64, body: u64, idle: u64) -> impl FnOnce(&mut billing::config::Config) {
    move |c| {
        c.http.header_read_timeout = Duration::from_secs(header);
        c.http.body_read_timeout = Duration::from_secs(body);
        c.http.idle_timeout = Duration::from_secs(idle);
    }
}

const HEALTHZ: &[u8] = b"GET /healthz HTTP/1.1\r\nHost: billing\r\n\r\n";

#[tokio::test]
async fn a_connection_that_sends_nothing_is_closed() {
    let app = TestApp::builder().config(limits(1, 60, 60)).start().await;
    let mut silent = connect(&app).await;
    let got = until_closed(&mut silent).await;
    assert!(!got.contains(" 200 "), "{got}");
}

#[tokio::test]
async fn a_request_head_that_never_ends_is_cut_off() {
    let app = TestApp::builder().config(limits(1, 60, 60)).start().await;
    let mut half = connect(&app).await;
    half.write_all(b"GET /healthz HTTP/1.1\r\nHost: billing\r\n")
        .await
        .unwrap();
    let got = until_closed(&mut half).await;
    assert!(!got.contains(" 200 "), "{got}");
}

/// The head deadline runs from the head's first byte, not from the idle wait, so a
/// kept-alive connection that trickles its next head is cut at the head timeout
/// (1 s here) although it may idle for a minute.
#[tokio::test]
async fn a_trickled_head_on_a_kept_alive_connection_is_cut_at_the_head_timeout() {
    let app = TestApp::builder().config(limits(1, 60, 60)).start().await;
    let stream = connect(&app).await;
    let (mut reader, mut writer) = stream.into_split();
    writer.write_all(HEALTHZ).await.unwrap();
    let mut first = Vec::new();
    let mut buf = [0u8; 4096];
    while !String::from_utf8_lossy(&first).contains("\"ok\"") {
        let n = reader.read(&mut buf).await.unwrap();
        assert!(n > 0, "the first request is answered");
        first.extend_from_slice(&buf[..n]);
    }
    let trickle = tokio::spawn(async move {
        writer
            .write_all(b"GET /healthz HTTP/1.1\r\nX-Slow: ")
            .await?;
        loop {
            tokio::time::sleep(Duration::from_millis(100)).await;
            writer.write_all(b"a").await?;
        }
        #[allow(unreachable_code)]
        Ok::<(), std::io::Error>(())
    });
    let closed = tokio::time::timeout(BOUND, async {
        loop {
            match reader.read(&mut buf).await {
                Ok(0) | Err(_) => break,
                Ok(_) => {}
            }
        }
    })
    .await;
    trickle.abort();
    assert!(closed.is_ok(), "the trickled head is still being read");
}

#[tokio::test]
async fn a_kept_alive_connection_is_closed_after_the_idle_timeout() {
    let app = TestApp::builder().config(limits(60, 60, 1)).start().await;
    let mut stream = connect(&app).await;
    stream.write_all(HEALTHZ).await.unwrap();
    let got = until_closed(&mut stream).await;
    assert!(
        got.starts_with("HTTP/1.1 200 "),
        "answered, then closed: {got}"
    );
}

#[tokio::test]
async fn a_body_that_stops_arriving_is_a_408_and_changes_nothing() {
    let app = TestApp::builder().config(limits(60, 1, 60)).start().await;
    let mut stream = connect(&app).await;
    stream
        .write_all(
            b"POST /webhooks/yookassa HTTP/1.1\r\nHost: billing\r\n\
              Content-Type: application/json\r\nContent-Length: 100\r\n\r\n{\"event\":",
        )
        .await
        .unwrap();
    let got = until_seen(&mut stream, "body_timeout").await;
    assert!(got.starts_with("HTTP/1.1 408 "), "{got}");
    assert!(got.contains("application/json"), "{got}");
    let conn = app.conn().await;
    let stored: i64 = conn
        .query_one("SELECT count(*) FROM webhook_inbox", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(stored, 0, "nothing was stored");
}

/// At the cap the server stops accepting; the next client waits in the backlog
/// until a connection ends, and is then served.
#[tokio::test]
async fn at_the_connection_cap_a_new_client_waits_for_a_free_slot() {
    let app = TestApp::builder()
        .config(limits(60, 60, 60))
        .config(|c| c.http.max_connections = 2)
        .start()
        .await;
    let first = connect(&app).await;
    let _second = connect(&app).await;
    let mut third = connect(&app).await;
    third.write_all(HEALTHZ).await.unwrap();
    let mut buf = [0u8; 64];
    let early = tokio::time::timeout(Duration::from_millis(500), third.read(&mut buf)).await;
    assert!(
        early.is_err(),
        "a third connection was served beside two open ones: {early:?}"
    );
    drop(first);
    let got = until_seen(&mut third, "\"ok\"").await;
    assert!(got.starts_with("HTTP/1.1 200 "), "{got}");
}

/// The real binary under a 256-descriptor limit (the finding: 300 idle connections
/// made `/healthz` time out with `accept error … Too many open files`, and every
/// client hang-up was an `ERROR` line). 450 clients: 300 that send nothing or half
/// a head and wait (more than the descriptors), 150 that send half a request and
/// hang up; `/healthz` is then served, and the log at `info` has no error in it.
#[tokio::test]
async fn idle_and_hung_up_clients_neither_starve_health_nor_log_errors() {
    use tokio::io::AsyncBufReadExt;

    let db = TestDb::new().await;
    let mut child = tokio::process::Command::new("sh")
        .arg("-c")
        .arg("ulimit -n 256 && exec \"$0\" serve")
        .arg(env!("CARGO_BIN_EXE_billing"))
        .env("DATABASE_URL", &db.url)
        .env("LISTEN_ADDR", "127.0.0.1:0")
        .env("AMQP_URL", "amqp://guest:guest@127.0.0.1:1/%2f")
        .env("HTTP_HEADER_READ_TIMEOUT", "1s")
        .env("LOG_FORMAT", "json")
        .env("RUST_LOG", "info")
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .expect("billing serve starts");
    let mut stdout = tokio::io::BufReader::new(child.stdout.take().unwrap()).lines();
    let mut stderr = tokio::io::BufReader::new(child.stderr.take().unwrap()).lines();
    let mut log = Vec::new();
    let addr = tokio::time::timeout(BOUND, async {
        while let Some(line) = stdout.next_line().await.unwrap() {
            let parsed: serde_json::Value = serde_json::from_str(&line).unwrap_or_default();
            log.push(line);
            if parsed["message"] == "listening" {
                return parsed["addr"].as_str().unwrap().to_owned();
            }
        }
        panic!("the service exited: {log:#?}");
    })
    .await
    .expect("the service listens");
    let collected = tokio::spawn(async move {
        let mut rest = Vec::new();
        loop {
            tokio::select! {
                Ok(Some(line)) = stdout.next_line() => rest.push(line),
                Ok(Some(line)) = stderr.next_line() => rest.push(line),
                else => break,
            }
        }
        rest
    });

    let mut held = Vec::new();
    for i in 0..450 {
        let mut stream = TcpStream::connect(&addr)
            .await
            .expect("the backlog takes it");
        match i % 3 {
            0 => held.push(stream),
            1 => {
                stream
                    .write_all(b"GET /healthz HTTP/1.1\r\nHost: bil")
                    .await
                    .unwrap();
                held.push(stream);
            }
            _ => {
                // Half a request, then the client hangs up.
                let _ = stream
                    .write_all(b"POST /webhooks/yookassa HTTP/1.1\r\nContent-Length: 50\r\n\r\n{")
                    .await;
            }
        }
    }

    let health = reqwest::Client::new()
        .get(format!("http://{addr}/healthz"))
        .timeout(BOUND)
        .send()
        .await
        .expect("/healthz is served while 300 idle clients wait");
    assert_eq!(health.status(), 200);
    drop(held);

    child.kill().await.unwrap();
    log.extend(collected.await.unwrap());
    let errors: Vec<_> = log.iter().filter(|l| l.contains("\"ERROR\"")).collect();
    assert!(errors.is_empty(), "{errors:#?}");
    assert!(
        log.iter()
            .any(|l| l.contains("HTTP_MAX_CONNECTIONS lowered")),
        "the cap follows the descriptor limit: {log:#?}"
    );
}
