//! Routes HTTP requests: WebSocket upgrades, the server API, metrics and probes.

use std::convert::Infallible;
use std::sync::Arc;

use bytes::Bytes;
use http::{header, Method, Request, Response, StatusCode};
use http_body_util::{BodyExt, Full, Limited};
use hyper::body::Incoming;
use switchboard_protocol::centrifugo::codec::{JSON_SUBPROTOCOL, PROTOBUF_SUBPROTOCOL};
use switchboard_protocol::centrifugo::Encoding;

use crate::client::transport::Transport;
use crate::node::Node;

pub type Body = Full<Bytes>;

fn text(status: StatusCode, body: &'static str) -> Response<Body> {
    let mut r = Response::new(Full::new(Bytes::from_static(body.as_bytes())));
    *r.status_mut() = status;
    r.headers_mut().insert(
        header::CONTENT_TYPE,
        "text/plain; charset=utf-8".parse().expect("static header"),
    );
    r
}

fn refused(reason: &'static str) {
    metrics::counter!("switchboard_connections_refused_total", "reason" => reason).increment(1);
}

pub async fn route(node: Arc<Node>, req: Request<Incoming>) -> Result<Response<Body>, Infallible> {
    let path = req.uri().path().to_owned();
    let response = match (req.method(), path.as_str()) {
        (&Method::GET, "/connection/websocket") => websocket(node, req),
        (&Method::GET, "/healthz") => text(StatusCode::OK, "ok\n"),
        (&Method::GET, "/readyz") if node.is_ready() => text(StatusCode::OK, "ready\n"),
        (&Method::GET, "/readyz") => text(StatusCode::SERVICE_UNAVAILABLE, "not ready\n"),
        (&Method::GET, "/metrics") => {
            let mut r = Response::new(Full::new(Bytes::from(node.metrics.render())));
            r.headers_mut().insert(
                header::CONTENT_TYPE,
                "text/plain; version=0.0.4".parse().expect("static header"),
            );
            r
        }
        (&Method::POST, p) if p.starts_with("/api/") => {
            let method = p["/api/".len()..].to_owned();
            api(node, &method, req).await
        }
        (_, p) if p.starts_with("/api/") => text(StatusCode::METHOD_NOT_ALLOWED, "use POST\n"),
        _ => text(StatusCode::NOT_FOUND, "not found\n"),
    };
    Ok(response)
}

async fn api(node: Arc<Node>, method: &str, req: Request<Incoming>) -> Response<Body> {
    if !crate::api::authorized(&node, req.headers()) {
        return text(StatusCode::UNAUTHORIZED, "unauthorized\n");
    }
    let limit = node.config.limits.max_api_body_bytes;
    let body = match Limited::new(req.into_body(), limit).collect().await {
        Ok(collected) => collected.to_bytes(),
        Err(_) => {
            return text(
                StatusCode::PAYLOAD_TOO_LARGE,
                "request body too large or unreadable\n",
            )
        }
    };
    let answer = crate::api::call(&node, method, &body).await;
    let mut r = Response::new(Full::new(answer.body));
    *r.status_mut() = answer.status;
    r.headers_mut().insert(
        header::CONTENT_TYPE,
        "application/json".parse().expect("static header"),
    );
    r
}

fn websocket(node: Arc<Node>, mut req: Request<Incoming>) -> Response<Body> {
    if !fastwebsockets::upgrade::is_upgrade_request(&req) {
        return text(StatusCode::BAD_REQUEST, "expected a WebSocket upgrade\n");
    }
    if node.is_draining() {
        refused("shutting_down");
        return text(StatusCode::SERVICE_UNAVAILABLE, "shutting down\n");
    }
    if !node.broker.is_healthy() {
        refused("broker_unavailable");
        return text(StatusCode::SERVICE_UNAVAILABLE, "broker unavailable\n");
    }
    let Some(slot) = node.try_acquire_connection() else {
        refused("connection_limit");
        return text(
            StatusCode::SERVICE_UNAVAILABLE,
            "connection limit reached\n",
        );
    };
    let offered: Vec<String> = req
        .headers()
        .get_all(header::SEC_WEBSOCKET_PROTOCOL)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(',').map(|p| p.trim().to_owned()))
        .collect();
    let encoding = Encoding::negotiate(offered.iter().map(String::as_str), req.uri().query());
    let (mut response, upgrade) = match fastwebsockets::upgrade::upgrade(&mut req) {
        Ok(pair) => pair,
        Err(_) => {
            refused("bad_handshake");
            return text(StatusCode::BAD_REQUEST, "bad WebSocket handshake\n");
        }
    };
    // A client that offers subprotocols drops a handshake that names none of them.
    let chosen = match encoding {
        Encoding::Protobuf => PROTOBUF_SUBPROTOCOL,
        Encoding::Json => JSON_SUBPROTOCOL,
    };
    if offered.iter().any(|p| p == chosen) {
        response.headers_mut().insert(
            header::SEC_WEBSOCKET_PROTOCOL,
            header::HeaderValue::from_static(chosen),
        );
    }
    let tasks = node.tasks.clone();
    tasks.spawn(async move {
        // fastwebsockets completes the handshake; the connection task then
        // drives the socket itself (see `client::transport`).
        let socket = match upgrade.await {
            Ok(ws) => Transport::from_upgraded(ws.into_inner().into_inner()),
            Err(e) => {
                refused("upgrade_failed");
                tracing::debug!(error = %e, "WebSocket upgrade failed");
                return;
            }
        };
        match socket {
            Some((io, early)) => crate::client::serve(node, io, early, encoding, slot).await,
            None => {
                refused("upgrade_failed");
                tracing::warn!("upgraded connection of an unknown socket type");
            }
        }
    });
    response.map(|_| Full::new(Bytes::new()))
}
