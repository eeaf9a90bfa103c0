//! The gateway's client of the application backend against a real (minimal)
//! HTTP server: what comes back for each way a backend can fail, and the bound
//! on calls in flight.

use std::time::Duration;

use bytes::Bytes;
use http::header::{HeaderName, HeaderValue};
use switchboard_gateway::backend::{Backend, BackendError};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;
use tokio::sync::mpsc;

/// How the test server answers each request.
#[derive(Clone, Copy)]
enum Behaviour {
    Status(u16),
    /// Reads the request and never answers.
    Silent,
}

/// Serves every connection with `behaviour`; each request's head and body
/// (as text) go to the returned receiver.
async fn server(behaviour: Behaviour) -> (String, mpsc::UnboundedReceiver<String>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/hook", listener.local_addr().unwrap());
    let (tx, rx) = mpsc::unbounded_channel();
    tokio::spawn(async move {
        loop {
            let Ok((mut socket, _)) = listener.accept().await else {
                return;
            };
            let tx = tx.clone();
            tokio::spawn(async move {
                let mut request = Vec::new();
                let mut buf = [0u8; 4096];
                // Bounded: one request of a few KiB at most.
                for _ in 0..64 {
                    let n = socket.read(&mut buf).await.unwrap_or(0);
                    if n == 0 {
                        return;
                    }
                    request.extend_from_slice(&buf[..n]);
                    let text = String::from_utf8_lossy(&request).to_string();
                    if let Some(head_end) = text.find("\r\n\r\n") {
                        let length = text[..head_end]
                            .lines()
                            .find_map(|l| {
                                l.to_ascii_lowercase()
                                    .strip_prefix("content-length:")
                                    .map(|v| v.trim().parse::<usize>().unwrap())
                            })
                            .unwrap_or(0);
                        if request.len() >= head_end + 4 + length {
                            let _ = tx.send(text);
                            break;
                        }
                    }
                }
                match behaviour {
                    Behaviour::Status(status) => {
                        let body = r#"{"result":{}}"#;
                        let response = format!(
                            "HTTP/1.1 {status} X\r\ncontent-type: application/json\r\ncontent-length: {}\r\n\r\n{body}",
                            body.len()
                        );
                        let _ = socket.write_all(response.as_bytes()).await;
                        // Keep the connection until the client is done with it.
                        let _ = socket.read(&mut buf).await;
                    }
                    Behaviour::Silent => {
                        let _ = socket.read(&mut buf).await;
                    }
                }
            });
        }
    });
    (url, rx)
}

fn header(name: &'static str, value: &'static str) -> (HeaderName, HeaderValue) {
    (
        HeaderName::from_static(name),
        HeaderValue::from_static(value),
    )
}

#[tokio::test]
async fn a_2xx_answer_is_returned_with_the_request_as_sent() {
    let (url, mut requests) = server(Behaviour::Status(200)).await;
    let backend = Backend::new(4, Duration::from_secs(5));
    let answer = backend
        .post_json(
            "test",
            &url.parse().unwrap(),
            &[header("cookie", "session=abc")],
            Bytes::from_static(br#"{"client":"c1"}"#),
        )
        .await
        .unwrap();
    assert_eq!(&answer[..], br#"{"result":{}}"#);
    let request = requests.recv().await.unwrap();
    assert!(request.starts_with("POST /hook HTTP/1.1\r\n"), "{request}");
    let lower = request.to_ascii_lowercase();
    assert!(lower.contains("cookie: session=abc\r\n"), "{request}");
    assert!(
        lower.contains("content-type: application/json\r\n"),
        "{request}"
    );
    assert!(request.ends_with(r#"{"client":"c1"}"#), "{request}");
}

#[tokio::test]
async fn other_statuses_are_errors_naming_them() {
    for status in [302, 404, 500, 503] {
        let (url, _requests) = server(Behaviour::Status(status)).await;
        let backend = Backend::new(4, Duration::from_secs(5));
        let result = backend
            .post_json(
                "test",
                &url.parse().unwrap(),
                &[],
                Bytes::from_static(b"{}"),
            )
            .await;
        assert_eq!(result, Err(BackendError::Status(status)));
    }
}

#[tokio::test]
async fn a_backend_that_does_not_answer_times_out() {
    let (url, mut requests) = server(Behaviour::Silent).await;
    let backend = Backend::new(4, Duration::from_millis(300));
    let result = backend
        .post_json(
            "test",
            &url.parse().unwrap(),
            &[],
            Bytes::from_static(b"{}"),
        )
        .await;
    assert!(requests.recv().await.is_some(), "the request arrived");
    assert_eq!(
        result,
        Err(BackendError::Timeout(Duration::from_millis(300)))
    );
}

#[tokio::test]
async fn a_backend_nobody_listens_on_is_unreachable() {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}/hook", listener.local_addr().unwrap());
    drop(listener);
    let backend = Backend::new(4, Duration::from_secs(5));
    let result = backend
        .post_json(
            "test",
            &url.parse().unwrap(),
            &[],
            Bytes::from_static(b"{}"),
        )
        .await;
    assert!(
        matches!(result, Err(BackendError::Unreachable(_))),
        "{result:?}"
    );
}

#[tokio::test]
async fn calls_beyond_the_bound_fail_at_once_while_the_others_wait() {
    let (url, mut requests) = server(Behaviour::Silent).await;
    let backend = std::sync::Arc::new(Backend::new(2, Duration::from_secs(30)));
    let uri: http::Uri = url.parse().unwrap();
    let mut held = Vec::new();
    for _ in 0..2 {
        let (backend, uri) = (backend.clone(), uri.clone());
        held.push(tokio::spawn(async move {
            backend
                .post_json("test", &uri, &[], Bytes::from_static(b"{}"))
                .await
        }));
    }
    // Both are at the server (so both hold their places) before the third call.
    requests.recv().await.unwrap();
    requests.recv().await.unwrap();
    let third = backend
        .post_json("test", &uri, &[], Bytes::from_static(b"{}"))
        .await;
    assert_eq!(third, Err(BackendError::Busy(2)));
    for call in &held {
        assert!(!call.is_finished(), "a held call ended");
    }
    for call in held {
        call.abort();
    }
}
