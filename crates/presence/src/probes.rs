//! `/metrics`, `/healthz` and `/readyz` over HTTP, for Prometheus and Kubernetes.

use std::convert::Infallible;
use std::future::Future;
use std::sync::Arc;

use bytes::Bytes;
use http::{Request, Response, StatusCode};
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use metrics_exporter_prometheus::PrometheusHandle;
use tokio::net::TcpListener;

/// Whether the process can serve (e.g. NATS connected).
pub type Readiness = Arc<dyn Fn() -> bool + Send + Sync>;

fn reply(status: StatusCode, body: impl Into<Bytes>) -> Response<Full<Bytes>> {
    let mut r = Response::new(Full::new(body.into()));
    *r.status_mut() = status;
    r
}

async fn route(
    req: Request<Incoming>,
    metrics: PrometheusHandle,
    ready: Readiness,
) -> Result<Response<Full<Bytes>>, Infallible> {
    Ok(match req.uri().path() {
        "/metrics" => reply(StatusCode::OK, metrics.render()),
        "/healthz" => reply(StatusCode::OK, "ok\n"),
        "/readyz" if ready() => reply(StatusCode::OK, "ready\n"),
        "/readyz" => reply(StatusCode::SERVICE_UNAVAILABLE, "not ready\n"),
        _ => reply(StatusCode::NOT_FOUND, "not found\n"),
    })
}

/// Serves the probes on `listener` until `shutdown` completes.
pub async fn serve(
    listener: TcpListener,
    metrics: PrometheusHandle,
    ready: Readiness,
    shutdown: impl Future<Output = ()>,
) {
    tokio::pin!(shutdown);
    loop {
        let stream = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok((stream, _)) => stream,
                Err(e) => {
                    tracing::warn!(error = %e, "probe accept failed");
                    tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                    continue;
                }
            },
            _ = &mut shutdown => return,
        };
        let (metrics, ready) = (metrics.clone(), ready.clone());
        tokio::spawn(async move {
            let service = service_fn(move |req| route(req, metrics.clone(), ready.clone()));
            let _ = http1::Builder::new()
                .serve_connection(TokioIo::new(stream), service)
                .await;
        });
    }
}
