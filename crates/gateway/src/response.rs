//! HTTP responses every route builds from: the body type and plain answers.

use std::convert::Infallible;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};

use bytes::Bytes;
use http::{header, Response, StatusCode};
use hyper::body::{Frame, SizeHint};
use tokio::sync::{mpsc, OwnedSemaphorePermit};

/// A response body: the whole of it at once, or a stream of chunks a task sends
/// while the client keeps the response open (the HTTP-streaming transports).
/// The stream ends when the sender is dropped; a client that goes away drops
/// the receiver, which the sender sees.
pub enum Body {
    Full(Option<Bytes>),
    Stream(mpsc::Receiver<Bytes>),
}

impl Body {
    pub fn full(bytes: Bytes) -> Body {
        Body::Full(Some(bytes))
    }

    pub fn empty() -> Body {
        Body::Full(None)
    }
}

impl hyper::body::Body for Body {
    type Data = Bytes;
    type Error = Infallible;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Infallible>>> {
        match self.get_mut() {
            Body::Full(bytes) => Poll::Ready(bytes.take().map(|b| Ok(Frame::data(b)))),
            Body::Stream(chunks) => chunks.poll_recv(cx).map(|c| c.map(|b| Ok(Frame::data(b)))),
        }
    }

    fn is_end_stream(&self) -> bool {
        matches!(self, Body::Full(None))
    }

    fn size_hint(&self) -> SizeHint {
        match self {
            Body::Full(bytes) => SizeHint::with_exact(bytes.as_ref().map_or(0, |b| b.len() as u64)),
            Body::Stream(_) => SizeHint::default(),
        }
    }
}

/// An HTTP connection's place under `max_http_connections` (counted in
/// `switchboard_http_connections`), shared with its requests. The connection holds
/// it until it closes or upgrades; a request whose response becomes a client
/// connection (an HTTP stream, counted by `max_connections` from then on) gives
/// it back at once.
#[derive(Clone)]
pub struct HttpPlace(Arc<Mutex<Option<Permit>>>);

struct Permit(#[allow(dead_code)] OwnedSemaphorePermit);

impl Drop for Permit {
    fn drop(&mut self) {
        metrics::gauge!("switchboard_http_connections").decrement(1.0);
    }
}

impl HttpPlace {
    pub fn new(permit: OwnedSemaphorePermit) -> HttpPlace {
        metrics::gauge!("switchboard_http_connections").increment(1.0);
        HttpPlace(Arc::new(Mutex::new(Some(Permit(permit)))))
    }

    /// Gives the place back (once; later calls do nothing).
    pub fn release(&self) {
        let permit = self.0.lock().unwrap_or_else(|e| e.into_inner()).take();
        drop(permit);
    }
}

/// A plain-text answer.
pub fn text(status: StatusCode, body: &'static str) -> Response<Body> {
    with_type(
        status,
        Bytes::from_static(body.as_bytes()),
        "text/plain; charset=utf-8",
    )
}

/// An answer with `body` of `content_type`.
pub fn with_type(status: StatusCode, body: Bytes, content_type: &'static str) -> Response<Body> {
    let mut r = Response::new(Body::full(body));
    *r.status_mut() = status;
    r.headers_mut().insert(
        header::CONTENT_TYPE,
        header::HeaderValue::from_static(content_type),
    );
    r
}

/// Counts a connection refused before it was accepted.
pub fn refused(reason: &'static str) {
    metrics::counter!("switchboard_connections_refused_total", "reason" => reason).increment(1);
}
