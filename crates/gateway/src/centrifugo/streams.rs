//! Centrifugo over the HTTP streams, as centrifuge-js falls back to them:
//! `/connection/http_stream` (POST, the connect command in the body; JSON lines or
//! varint-delimited protobuf back), `/connection/sse` (GET with the connect
//! command in `cf_connect`, or POST; JSON only), and `/emulation`: a client's
//! later commands for the session its stream carries, run by whichever gateway
//! holds that stream (over the control plane when it is another one). CORS
//! answers for browsers on the origins `allowed_origins` lists.

use std::sync::Arc;

use base64::Engine as _;
use bytes::Bytes;
use http::{header, HeaderMap, HeaderValue, Method, Request, Response, StatusCode};
use http_body_util::{BodyExt, Limited};
use hyper::body::Incoming;
use switchboard_protocol::centrifugo::Encoding;

use super::proxy::ClientRequest;
use super::session::Session;
use super::Centrifugo;
use crate::cluster::command::Posted;
use crate::cluster::{Answer, Command};
use crate::connection::identity::Peer;
use crate::registry::Undelivered;
use crate::response::{refused, with_type, Body, HttpPlace};
use crate::transport::stream::{self, Kind};
use switchboard_broker_nats::control::ControlError;

/// An emulation request holds the commands and a little more (in JSON, the
/// commands as one string, escaped).
const EMULATION_OVERHEAD: usize = 1024;

/// A browser request from an origin `allowed_origins` does not list.
struct OriginRefused;

fn error(status: StatusCode, message: &str) -> Response<Body> {
    let body = serde_json::json!({ "error": message }).to_string();
    with_type(status, Bytes::from(body), "application/json")
}

fn is_protobuf(headers: &HeaderMap) -> bool {
    headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("application/octet-stream"))
}

fn emulation_result(result: &'static str) {
    emulation_counted(result, "none");
}

/// `route`: `local` (the stream is on this node), `forwarded` (on another), or
/// `none` (refused before).
fn emulation_counted(result: &'static str, route: &'static str) {
    metrics::counter!("switchboard_emulation_requests_total", "result" => result, "route" => route)
        .increment(1);
}

impl Centrifugo {
    /// The origin a browser request came from, when `allowed_origins` lets it
    /// (`None` for a request without an Origin, or of the gateway's own origin).
    fn origin(&self, headers: &HeaderMap) -> Result<Option<HeaderValue>, OriginRefused> {
        let Some(origin) = headers.get(header::ORIGIN) else {
            return Ok(None);
        };
        let allowed = &self.node.config.allowed_origins;
        let text = origin.to_str().unwrap_or_default();
        if allowed.iter().any(|a| a == "*" || a == text) {
            return Ok(Some(origin.clone()));
        }
        if allowed.is_empty() && same_origin(headers, text) {
            return Ok(None);
        }
        refused("origin");
        Err(OriginRefused)
    }

    /// `OPTIONS` on a stream or emulation endpoint: the CORS preflight.
    pub fn preflight(&self, req: &Request<Incoming>) -> Response<Body> {
        let origin = match self.origin(req.headers()) {
            Ok(origin) => origin,
            Err(OriginRefused) => return error(StatusCode::FORBIDDEN, "origin not allowed"),
        };
        let mut response = Response::new(Body::empty());
        *response.status_mut() = StatusCode::NO_CONTENT;
        let headers = response.headers_mut();
        if let Some(origin) = origin {
            allow(headers, origin);
            headers.insert(
                header::ACCESS_CONTROL_ALLOW_METHODS,
                HeaderValue::from_static("GET, POST, OPTIONS"),
            );
            let asked = req
                .headers()
                .get(header::ACCESS_CONTROL_REQUEST_HEADERS)
                .cloned()
                .unwrap_or(HeaderValue::from_static("content-type"));
            headers.insert(header::ACCESS_CONTROL_ALLOW_HEADERS, asked);
            headers.insert(
                header::ACCESS_CONTROL_MAX_AGE,
                HeaderValue::from_static("600"),
            );
        }
        response
    }

    /// `POST /connection/http_stream`.
    pub async fn http_stream(self: &Arc<Self>, req: Request<Incoming>) -> Response<Body> {
        let encoding = if is_protobuf(req.headers()) {
            Encoding::Protobuf
        } else {
            Encoding::negotiate([], req.uri().query())
        };
        let content_type = match encoding {
            Encoding::Json => "application/json",
            Encoding::Protobuf => "application/octet-stream",
        };
        self.open(req, (Kind::Chunked, content_type), encoding)
            .await
    }

    /// `GET /connection/sse?cf_connect=…` (or `POST` with the command as the body).
    pub async fn sse(self: &Arc<Self>, req: Request<Incoming>) -> Response<Body> {
        self.open(
            req,
            (Kind::EventStream, "text/event-stream"),
            Encoding::Json,
        )
        .await
    }

    async fn open(
        self: &Arc<Self>,
        req: Request<Incoming>,
        kind: (Kind, &'static str),
        encoding: Encoding,
    ) -> Response<Body> {
        let origin = match self.origin(req.headers()) {
            Ok(origin) => origin,
            Err(OriginRefused) => return error(StatusCode::FORBIDDEN, "origin not allowed"),
        };
        let address = req.extensions().get::<Peer>().map(|p| p.0.ip());
        let place = req.extensions().get::<HttpPlace>().cloned();
        let transport = match kind.0 {
            Kind::Chunked => "http_stream",
            Kind::EventStream => "sse",
        };
        let request = ClientRequest::new(&self.node.config.proxies, transport, req.headers());
        let limit = self.node.config.limits.max_frame_bytes;
        let first = if req.method() == Method::GET {
            let connect = req.uri().query().and_then(|q| {
                form_urlencoded::parse(q.as_bytes())
                    .find(|(k, _)| k == "cf_connect")
                    .map(|(_, v)| v.into_owned())
            });
            match connect {
                Some(c) if c.len() <= limit => Bytes::from(c),
                Some(_) => {
                    return error(StatusCode::PAYLOAD_TOO_LARGE, "connect command too large")
                }
                None => return error(StatusCode::BAD_REQUEST, "cf_connect is missing"),
            }
        } else {
            match Limited::new(req.into_body(), limit).collect().await {
                Ok(body) => body.to_bytes(),
                Err(_) => {
                    return error(
                        StatusCode::PAYLOAD_TOO_LARGE,
                        "connect command too large or unreadable",
                    )
                }
            }
        };
        if first.is_empty() {
            return error(StatusCode::BAD_REQUEST, "no connect command");
        }
        let slot = match crate::transport::admit(&self.node) {
            Ok(slot) => slot,
            Err(message) => return crate::transport::refusal(message),
        };
        let unauthenticated = match self.node.try_acquire_unauthenticated(address) {
            Ok(u) => u,
            Err(reason) => {
                refused(reason);
                return error(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "too many connections waiting to authenticate",
                );
            }
        };
        // From here the connection is a client connection, counted by
        // max_connections: its place among HTTP connections goes back.
        if let Some(place) = &place {
            place.release();
        }
        let front = self.clone();
        let mut response = stream::open(
            &self.node,
            slot,
            kind,
            (first, encoding.is_binary()),
            move |outbound, mailbox, secret| {
                Session::new(
                    front,
                    encoding,
                    outbound,
                    mailbox,
                    Some(unauthenticated),
                    Some(secret),
                    request,
                )
            },
        );
        if let Some(origin) = origin {
            allow(response.headers_mut(), origin);
        }
        response
    }

    /// `POST /emulation`: `{session, node, data}` (JSON, `data` the commands as
    /// the client's codec wrote them) or its protobuf `EmulationRequest`. Answers
    /// 204 once the commands are on their way to the stream (their replies come
    /// down the stream), and also when the node no longer has that session (its
    /// stream has ended); 404 when no gateway `node` is live, so the client
    /// reconnects; 429 while the stream has too many messages waiting.
    pub async fn emulation(self: &Arc<Self>, req: Request<Incoming>) -> Response<Body> {
        let origin = match self.origin(req.headers()) {
            Ok(origin) => origin,
            Err(OriginRefused) => return error(StatusCode::FORBIDDEN, "origin not allowed"),
        };
        let mut response = self.emulate(req).await;
        if let Some(origin) = origin {
            allow(response.headers_mut(), origin);
        }
        response
    }

    async fn emulate(&self, req: Request<Incoming>) -> Response<Body> {
        let encoding = if is_protobuf(req.headers()) {
            Encoding::Protobuf
        } else {
            Encoding::Json
        };
        let limit = self.node.config.limits.max_frame_bytes;
        let body = match Limited::new(req.into_body(), 2 * limit + EMULATION_OVERHEAD)
            .collect()
            .await
        {
            Ok(body) => body.to_bytes(),
            Err(_) => {
                emulation_result("too_large");
                return error(
                    StatusCode::PAYLOAD_TOO_LARGE,
                    "request too large or unreadable",
                );
            }
        };
        let request = match encoding.decode_emulation(&body) {
            Ok(r) if !r.session.is_empty() => r,
            Ok(_) => {
                emulation_result("bad_request");
                return error(StatusCode::BAD_REQUEST, "session is missing");
            }
            Err(e) => {
                emulation_result("bad_request");
                return error(StatusCode::BAD_REQUEST, &e.to_string());
            }
        };
        if request.data.len() > limit {
            emulation_result("too_large");
            return error(StatusCode::PAYLOAD_TOO_LARGE, "commands too large");
        }
        let local = request.node.is_empty() || request.node == self.node.id;
        let route = if local { "local" } else { "forwarded" };
        let posted = if local {
            match self.node.registry.post(&request.session, request.data) {
                Ok(()) => Posted::Delivered,
                Err(Undelivered::NoSession) => Posted::NoSession,
                Err(Undelivered::Busy) => Posted::Busy,
            }
        } else {
            let command = Command::Post {
                session: request.session,
                data: base64::engine::general_purpose::STANDARD.encode(&request.data),
            };
            match self
                .node
                .cluster
                .request(&self.node, &request.node, command)
                .await
            {
                Ok(Answer::Posted { posted }) => posted,
                Ok(other) => {
                    tracing::debug!(?other, "unexpected answer to an emulation request");
                    emulation_result("unavailable");
                    return error(
                        StatusCode::SERVICE_UNAVAILABLE,
                        "the session's gateway did not take it",
                    );
                }
                Err(ControlError::NoSuchNode(_)) => {
                    emulation_result("unknown_node");
                    return error(StatusCode::NOT_FOUND, "no such node: reconnect");
                }
                Err(e) => {
                    tracing::debug!(error = %e, "emulation request not forwarded");
                    emulation_result("unavailable");
                    return error(
                        StatusCode::SERVICE_UNAVAILABLE,
                        "the session's gateway did not answer",
                    );
                }
            }
        };
        match posted {
            Posted::Delivered => {
                emulation_counted("delivered", route);
                let mut r = Response::new(Body::empty());
                *r.status_mut() = StatusCode::NO_CONTENT;
                r
            }
            Posted::NoSession => {
                emulation_counted("no_session", route);
                // 204 as centrifuge-js expects for a session that ended: its
                // stream ends (or has), and the client reconnects then.
                let mut r = Response::new(Body::empty());
                *r.status_mut() = StatusCode::NO_CONTENT;
                r.headers_mut()
                    .insert("x-switchboard-session", HeaderValue::from_static("gone"));
                r
            }
            Posted::Busy => {
                emulation_counted("busy", route);
                error(
                    StatusCode::TOO_MANY_REQUESTS,
                    "too many commands waiting for this session",
                )
            }
        }
    }
}

fn allow(headers: &mut HeaderMap, origin: HeaderValue) {
    headers.insert(header::ACCESS_CONTROL_ALLOW_ORIGIN, origin);
    headers.insert(
        header::ACCESS_CONTROL_ALLOW_CREDENTIALS,
        HeaderValue::from_static("true"),
    );
    headers.insert(header::VARY, HeaderValue::from_static("Origin"));
}

/// Whether `origin` names the host the request was sent to (a page of the
/// gateway's own origin, which needs no CORS).
fn same_origin(headers: &HeaderMap, origin: &str) -> bool {
    let host = headers.get(header::HOST).and_then(|h| h.to_str().ok());
    let origin_host = origin.split_once("://").map(|(_, rest)| rest);
    host.is_some() && origin_host == host
}
