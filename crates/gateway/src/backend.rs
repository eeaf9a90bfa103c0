//! Calls from the gateway to the application backend: JSON over HTTP POST,
//! bounded in time and in number, and measured per kind of call.
//!
//! The Centrifugo proxies (`centrifugo/proxy.rs`) ask the backend to decide
//! (connect, subscribe, publish, rpc, send) through one [`Backend`] per gateway.
//! Every call holds one of `max_in_flight` places for its whole duration: a
//! backend that slows down makes later calls fail at once with
//! [`BackendError::Busy`] rather than pile up inside the gateway.

use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::header::{HeaderName, HeaderValue, CONTENT_TYPE};
use http::{Request, Uri};
use http_body_util::{BodyExt, Full, Limited};
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use tokio::sync::Semaphore;

/// Largest answer read from the backend.
const MAX_ANSWER_BYTES: usize = 1 << 20;

/// Why a call to the backend got no usable answer.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum BackendError {
    #[error("{0} calls to the backend already in flight")]
    Busy(usize),
    #[error("the backend did not answer within {0:?}")]
    Timeout(Duration),
    #[error("the backend could not be reached: {0}")]
    Unreachable(String),
    #[error("the backend answered HTTP {0}")]
    Status(u16),
    #[error("the backend's answer could not be read: {0}")]
    Answer(String),
}

impl BackendError {
    /// Its label in `switchboard_backend_requests_total`.
    fn label(&self) -> &'static str {
        match self {
            BackendError::Busy(_) => "busy",
            BackendError::Timeout(_) => "timeout",
            BackendError::Unreachable(_) => "unreachable",
            BackendError::Status(_) => "status",
            BackendError::Answer(_) => "answer",
        }
    }
}

/// The gateway's client of the application backend.
pub struct Backend {
    client: Client<HttpConnector, Full<Bytes>>,
    in_flight: Arc<Semaphore>,
    max_in_flight: usize,
    timeout: Duration,
}

impl Backend {
    /// At most `max_in_flight` calls at once, each answered within `timeout`.
    pub fn new(max_in_flight: usize, timeout: Duration) -> Backend {
        let mut connector = HttpConnector::new();
        connector.set_nodelay(true);
        connector.set_connect_timeout(Some(timeout));
        Backend {
            client: Client::builder(TokioExecutor::new()).build(connector),
            in_flight: Arc::new(Semaphore::new(max_in_flight)),
            max_in_flight,
            timeout,
        }
    }

    /// POSTs `body` (JSON) to `endpoint` with `headers`, and returns the answer's
    /// body when its status is 2xx. `call` names the kind of call in the metrics
    /// (`switchboard_backend_requests_total{call,result}`,
    /// `switchboard_backend_request_seconds{call}`).
    pub async fn post_json(
        &self,
        call: &'static str,
        endpoint: &Uri,
        headers: &[(HeaderName, HeaderValue)],
        body: Bytes,
    ) -> Result<Bytes, BackendError> {
        let started = Instant::now();
        let result = self.post(endpoint, headers, body).await;
        let label = match &result {
            Ok(_) => "ok",
            Err(e) => e.label(),
        };
        metrics::counter!("switchboard_backend_requests_total", "call" => call, "result" => label)
            .increment(1);
        metrics::histogram!("switchboard_backend_request_seconds", "call" => call)
            .record(started.elapsed().as_secs_f64());
        result
    }

    async fn post(
        &self,
        endpoint: &Uri,
        headers: &[(HeaderName, HeaderValue)],
        body: Bytes,
    ) -> Result<Bytes, BackendError> {
        let Ok(_place) = self.in_flight.clone().try_acquire_owned() else {
            return Err(BackendError::Busy(self.max_in_flight));
        };
        let mut request = Request::post(endpoint.clone());
        for (name, value) in headers {
            request = request.header(name, value);
        }
        let request = request
            .header(CONTENT_TYPE, HeaderValue::from_static("application/json"))
            .body(Full::new(body))
            .map_err(|e| BackendError::Unreachable(e.to_string()))?;
        let exchange = async {
            let response = self
                .client
                .request(request)
                .await
                .map_err(|e| BackendError::Unreachable(e.to_string()))?;
            let status = response.status();
            let body = Limited::new(response.into_body(), MAX_ANSWER_BYTES)
                .collect()
                .await
                .map_err(|e| BackendError::Answer(e.to_string()))?
                .to_bytes();
            if status.is_success() {
                Ok(body)
            } else {
                Err(BackendError::Status(status.as_u16()))
            }
        };
        tokio::time::timeout(self.timeout, exchange)
            .await
            .map_err(|_| BackendError::Timeout(self.timeout))?
    }
}

/// Checks an endpoint of the configuration: an absolute `http://` URL.
pub fn endpoint(url: &str) -> Result<Uri, String> {
    let uri: Uri = url
        .parse()
        .map_err(|e| format!("endpoint {url:?} is not a URL: {e}"))?;
    match (uri.scheme_str(), uri.authority()) {
        (Some("http"), Some(_)) => Ok(uri),
        (Some("https"), _) => Err(format!(
            "endpoint {url:?}: https is not supported; reach the backend over http \
             (a sidecar or the mesh can add TLS)"
        )),
        _ => Err(format!("endpoint {url:?} must be an absolute http:// URL")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn endpoints_must_be_absolute_http_urls() {
        assert!(endpoint("http://127.0.0.1:3000/centrifugo/connect").is_ok());
        for bad in [
            "",
            "/connect",
            "https://app/connect",
            "ftp://app/x",
            "app:3000",
        ] {
            assert!(endpoint(bad).is_err(), "{bad:?}");
        }
    }
}
