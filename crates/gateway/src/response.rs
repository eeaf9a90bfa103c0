//! HTTP responses every route builds from: the body type and plain answers.

use bytes::Bytes;
use http::{header, Response, StatusCode};
use http_body_util::Full;

pub type Body = Full<Bytes>;

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
    let mut r = Response::new(Full::new(body));
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
