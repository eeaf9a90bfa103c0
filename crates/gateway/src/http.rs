//! Routes HTTP requests to the front ends, the metrics and the probes.

use std::convert::Infallible;
use std::sync::Arc;

use bytes::Bytes;
use http::{header, HeaderValue, Method, Request, Response, StatusCode};
use http_body_util::{BodyExt, Limited};
use hyper::body::Incoming;
use metrics_exporter_prometheus::PrometheusHandle;

use crate::centrifugo::auth::KeyError;
use crate::centrifugo::{api, Centrifugo};
use crate::node::Node;
use crate::pusher::{self, Pusher};
use crate::response::{text, with_type, Body};

/// Everything a request can reach on one node: the node and its front ends.
pub struct Routes {
    pub node: Arc<Node>,
    pub centrifugo: Arc<Centrifugo>,
    pub pusher: Arc<Pusher>,
}

impl Routes {
    /// Starts every front end on `node`.
    pub fn new(node: Arc<Node>) -> Result<Arc<Routes>, KeyError> {
        Ok(Arc::new(Routes {
            centrifugo: Centrifugo::new(node.clone())?,
            pusher: Pusher::new(node.clone()),
            node,
        }))
    }
}

pub async fn route(
    routes: Arc<Routes>,
    req: Request<Incoming>,
) -> Result<Response<Body>, Infallible> {
    let node = &routes.node;
    let path = req.uri().path().to_owned();
    let response = match (req.method(), path.as_str()) {
        (&Method::GET, "/connection/websocket") => routes.centrifugo.websocket(req),
        (&Method::POST, "/connection/http_stream") => routes.centrifugo.http_stream(req).await,
        (&Method::GET | &Method::POST, "/connection/sse") => routes.centrifugo.sse(req).await,
        (&Method::POST, "/emulation") => routes.centrifugo.emulation(req).await,
        (&Method::OPTIONS, "/connection/http_stream" | "/connection/sse" | "/emulation") => {
            routes.centrifugo.preflight(&req)
        }
        (&Method::GET, "/healthz") => text(StatusCode::OK, "ok\n"),
        (&Method::GET, "/readyz") if node.is_ready() => text(StatusCode::OK, "ready\n"),
        (&Method::GET, "/readyz") => text(StatusCode::SERVICE_UNAVAILABLE, "not ready\n"),
        (&Method::GET, "/metrics") => with_type(
            StatusCode::OK,
            Bytes::from(node.metrics.render()),
            "text/plain; version=0.0.4",
        ),
        (&Method::POST, p) if p.starts_with("/api/") => {
            let method = p["/api/".len()..].to_owned();
            centrifugo_api(node, &method, req).await
        }
        (_, p) if p.starts_with("/api/") => text(StatusCode::METHOD_NOT_ALLOWED, "use POST\n"),
        (&Method::GET, p) if p.starts_with("/app/") => {
            let key = p["/app/".len()..].to_owned();
            routes.pusher.websocket(&key, req)
        }
        (_, p) if p.starts_with("/apps/") => pusher_api(&routes.pusher, req).await,
        _ => text(StatusCode::NOT_FOUND, "not found\n"),
    };
    Ok(response)
}

/// The answers of a gateway that has no node yet (still reaching NATS): see
/// [`crate::server::starting`]. Each closes its connection, so that a client's
/// next request after the start reaches the node.
pub fn starting<B>(metrics: &PrometheusHandle, req: &Request<B>) -> Response<Body> {
    let mut response = match (req.method(), req.uri().path()) {
        (&Method::GET, "/healthz") => text(StatusCode::OK, "ok\n"),
        (&Method::GET, "/readyz") => text(
            StatusCode::SERVICE_UNAVAILABLE,
            "not ready: connecting to NATS\n",
        ),
        (&Method::GET, "/metrics") => with_type(
            StatusCode::OK,
            Bytes::from(metrics.render()),
            "text/plain; version=0.0.4",
        ),
        _ => {
            crate::response::refused("starting");
            let mut r = text(
                StatusCode::SERVICE_UNAVAILABLE,
                "starting: not connected to NATS yet; retry shortly\n",
            );
            r.headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
            r
        }
    };
    response
        .headers_mut()
        .insert(header::CONNECTION, HeaderValue::from_static("close"));
    response
}

async fn centrifugo_api(node: &Arc<Node>, method: &str, req: Request<Incoming>) -> Response<Body> {
    if !api::authorized(node, req.headers()) {
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
    let answer = api::call(node, method, &body).await;
    with_type(answer.status, answer.body, "application/json")
}

async fn pusher_api(front: &Arc<Pusher>, req: Request<Incoming>) -> Response<Body> {
    let method = req.method().clone();
    let path = req.uri().path().to_owned();
    let query = req.uri().query().map(str::to_owned);
    let limit = front.node.config.limits.max_api_body_bytes;
    let body = match Limited::new(req.into_body(), limit).collect().await {
        Ok(collected) => collected.to_bytes(),
        Err(_) => {
            return with_type(
                StatusCode::PAYLOAD_TOO_LARGE,
                Bytes::from_static(br#"{"error":"request body too large or unreadable"}"#),
                "application/json",
            )
        }
    };
    let answer = pusher::api::call(front, &method, &path, query.as_deref(), &body).await;
    with_type(answer.status, answer.body, "application/json")
}
