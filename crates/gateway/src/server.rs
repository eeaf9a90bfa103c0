//! The accept loop and shutdown.
//!
//! [`run`] takes a bound listener and a shutdown future, so tests bind port 0 and
//! stop a gateway at will. HTTP connections not upgraded to WebSocket are capped
//! (`max_http_connections`) and must send their headers in time
//! (`http_header_timeout`, also the idle limit of a kept-alive connection), so
//! slow or half-open clients cannot hold file descriptors. On shutdown the node
//! turns unready for `shutdown_delay` while it still serves, then stops accepting,
//! tells every client to reconnect (spread over the drain window) and waits for
//! the connections to finish, bounded by a grace period. Before that, a cluster
//! gateway that has not reached NATS yet answers on its listener with the probes
//! alone ([`starting`]).

use std::convert::Infallible;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use hyper::server::conn::{http1, http2};
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpListener;
use tokio::sync::Semaphore;
use tokio_rustls::TlsAcceptor;

use metrics_exporter_prometheus::PrometheusHandle;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::config::Limits;
use crate::connection::identity::Peer;
use crate::http::Routes;
use crate::node::Node;
use crate::response::{Body, HttpPlace};
use crate::transport::deadline::WriteDeadline;

/// Connections the kernel queues before `accept`: tokio's default (128)
/// overflows under a reconnect storm, and dropped SYNs retry only after 1 s.
const ACCEPT_BACKLOG: u32 = 4096;

/// Binds the listening socket with a backlog fit for connection bursts.
pub fn bind(addr: std::net::SocketAddr) -> std::io::Result<TcpListener> {
    let socket = if addr.is_ipv4() {
        tokio::net::TcpSocket::new_v4()?
    } else {
        tokio::net::TcpSocket::new_v6()?
    };
    socket.set_reuseaddr(true)?;
    socket.bind(addr)?;
    socket.listen(ACCEPT_BACKLOG)
}

/// Time after the drain window that connections get to finish.
const GRACE: Duration = Duration::from_secs(5);
const TLS_HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

pub async fn run(
    listener: TcpListener,
    routes: Arc<Routes>,
    tls: Option<TlsAcceptor>,
    shutdown: impl Future<Output = ()>,
) {
    let node = routes.node.clone();
    let accept = Accept::new(&listener, tls, &node.config.limits);
    let front = Front::Routes(routes);
    accept
        .until(&front, &node.tasks, &node.drain, shutdown)
        .await;
    // Unready first, still serving: balancers polling /readyz stop sending clients
    // here before the listener closes.
    node.set_ready(false);
    let delay = node.config.shutdown_delay;
    if !delay.is_zero() {
        tracing::info!(
            ?delay,
            "unready; closing the listener after the shutdown delay"
        );
        let delayed = tokio::time::sleep(delay);
        accept
            .until(&front, &node.tasks, &node.drain, delayed)
            .await;
    }
    drop(accept);
    drop(listener);
    drain(&node).await;
}

/// Answers on `listener` while `connecting` runs, before there is a node (a
/// cluster gateway still reaching NATS): `/healthz` 200, `/readyz` 503, `/metrics`,
/// and 503 with `Retry-After` for everything else, each connection closed after
/// one answer. Probes see a live process that is not ready; clients are refused
/// at once instead of queueing in the backlog. Returns what `connecting` returns;
/// the listener stays bound for [`run`].
pub async fn starting<T>(
    listener: &TcpListener,
    tls: Option<TlsAcceptor>,
    limits: &Limits,
    connecting: impl Future<Output = T>,
) -> T {
    let accept = Accept::new(listener, tls, limits);
    let front = Front::Starting(crate::metrics::install());
    let mut out = None;
    let connected = async { out = Some(connecting.await) };
    accept
        .until(
            &front,
            &TaskTracker::new(),
            &CancellationToken::new(),
            connected,
        )
        .await;
    out.expect("the accept loop returns once `connecting` completed")
}

/// What answers HTTP on the listener.
#[derive(Clone)]
enum Front {
    /// The node's front ends, probes and APIs.
    Routes(Arc<Routes>),
    /// No node yet: the probes alone ([`starting`]).
    Starting(PrometheusHandle),
}

/// The accept side of a listener: TLS, and the cap on connections not upgraded.
struct Accept<'a> {
    listener: &'a TcpListener,
    tls: Option<TlsAcceptor>,
    http: Arc<Semaphore>,
    header_timeout: Duration,
}

impl<'a> Accept<'a> {
    fn new(listener: &'a TcpListener, tls: Option<TlsAcceptor>, limits: &Limits) -> Accept<'a> {
        Accept {
            listener,
            tls,
            http: Arc::new(Semaphore::new(limits.max_http_connections)),
            header_timeout: limits.http_header_timeout,
        }
    }

    /// Accepts connections until `stop` completes, each served by `front` in a
    /// task of `tasks` and told to finish when `drain` is cancelled. Each holds one
    /// of the `http` permits until it upgrades or closes; a connection finding none
    /// is closed at once.
    async fn until(
        &self,
        front: &Front,
        tasks: &TaskTracker,
        drain: &CancellationToken,
        stop: impl Future<Output = ()>,
    ) {
        tokio::pin!(stop);
        let mut backoff = Duration::from_millis(5);
        loop {
            tokio::select! {
                accepted = self.listener.accept() => match accepted {
                    Ok((stream, peer)) => {
                        backoff = Duration::from_millis(5);
                        let Ok(permit) = self.http.clone().try_acquire_owned() else {
                            metrics::counter!("switchboard_connections_refused_total", "reason" => "http_connection_limit").increment(1);
                            drop(stream);
                            continue;
                        };
                        let _ = stream.set_nodelay(true);
                        let (front, tls, drain) = (front.clone(), self.tls.clone(), drain.clone());
                        let header_timeout = self.header_timeout;
                        tasks.spawn(async move {
                            let place = HttpPlace::new(permit);
                            let http = Http { front, peer, drain, header_timeout, place };
                            match tls {
                                None => http.serve(stream).await,
                                Some(tls) => match tokio::time::timeout(TLS_HANDSHAKE_TIMEOUT, tls.accept(stream)).await {
                                    Ok(Ok(stream)) if stream.get_ref().1.alpn_protocol() == Some(b"h2") => http.serve_h2(stream).await,
                                    Ok(Ok(stream)) => http.serve(stream).await,
                                    Ok(Err(e)) => tracing::debug!(error = %e, "TLS handshake failed"),
                                    Err(_) => tracing::debug!("TLS handshake timed out"),
                                },
                            }
                        });
                    }
                    Err(e) => {
                        // Out of file descriptors, usually: back off instead of spinning.
                        tracing::warn!(error = %e, "accept failed");
                        metrics::counter!("switchboard_connections_refused_total", "reason" => "accept_error").increment(1);
                        tokio::time::sleep(backoff).await;
                        backoff = (backoff * 2).min(Duration::from_secs(1));
                    }
                },
                _ = &mut stop => return,
            }
        }
    }
}

/// Turns the node unready, asks every connection to leave, and waits for them.
pub async fn drain(node: &Node) {
    node.set_ready(false);
    node.start_draining();
    let (clients, _) = node.registry.counts();
    tracing::info!(clients, window = ?node.config.drain_window, "draining");
    node.drain.cancel();
    node.tasks.close();
    let grace = node.config.drain_window + GRACE;
    if tokio::time::timeout(grace, node.tasks.wait())
        .await
        .is_err()
    {
        tracing::warn!(
            left = node.tasks.len(),
            "drain grace period expired; exiting with connections open"
        );
    }
    // Listed, and answering the other gateways, for as long as it held connections.
    node.cluster.leave().await;
}

/// One accepted HTTP connection.
struct Http {
    front: Front,
    peer: std::net::SocketAddr,
    drain: CancellationToken,
    header_timeout: Duration,
    /// Its place under `max_http_connections`, until it closes, upgrades, or a
    /// request of it becomes a stream.
    place: HttpPlace,
}

impl Http {
    /// Serves HTTP/1.1 on `stream`, with upgrades (WebSocket).
    async fn serve<S>(self, stream: S)
    where
        S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    {
        let header_timeout = self.header_timeout;
        let drain = self.drain.clone();
        let conn = http1::Builder::new()
            .timer(hyper_util::rt::TokioTimer::new())
            .header_read_timeout(header_timeout)
            .serve_connection(TokioIo::new(WriteDeadline::new(stream)), self.service())
            .with_upgrades();
        tokio::pin!(conn);
        tokio::select! {
            result = conn.as_mut() => {
                if let Err(e) = result {
                    if e.is_timeout() {
                        metrics::counter!("switchboard_http_timeouts_total").increment(1);
                    }
                    tracing::debug!(error = %e, "HTTP connection ended with an error");
                }
                return;
            }
            _ = drain.cancelled() => conn.as_mut().graceful_shutdown(),
        }
        let _ = conn.await;
    }

    /// Serves HTTP/2 on `stream` (TLS that chose `h2`): many requests at once on
    /// one connection, the HTTP streams among them; no upgrades.
    async fn serve_h2<S>(self, stream: S)
    where
        S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    {
        let drain = self.drain.clone();
        let conn = http2::Builder::new(hyper_util::rt::TokioExecutor::new())
            .timer(hyper_util::rt::TokioTimer::new())
            .serve_connection(TokioIo::new(WriteDeadline::new(stream)), self.service());
        tokio::pin!(conn);
        tokio::select! {
            result = conn.as_mut() => {
                if let Err(e) = result {
                    tracing::debug!(error = %e, "HTTP/2 connection ended with an error");
                }
                return;
            }
            _ = drain.cancelled() => conn.as_mut().graceful_shutdown(),
        }
        let _ = conn.await;
    }

    /// The requests' service: the routes, or the probes of a node still starting.
    fn service(
        self,
    ) -> impl hyper::service::Service<
        hyper::Request<hyper::body::Incoming>,
        Response = hyper::Response<Body>,
        Error = Infallible,
        Future = Answer,
    > + Clone {
        let Http {
            front, peer, place, ..
        } = self;
        service_fn(move |mut req: hyper::Request<hyper::body::Incoming>| {
            req.extensions_mut().insert(Peer(peer));
            req.extensions_mut().insert(place.clone());
            let front = front.clone();
            Box::pin(async move {
                match front {
                    Front::Routes(routes) => crate::http::route(routes, req).await,
                    Front::Starting(metrics) => Ok(crate::http::starting(&metrics, &req)),
                }
            }) as Answer
        })
    }
}

/// The answer to one request.
type Answer =
    std::pin::Pin<Box<dyn Future<Output = Result<hyper::Response<Body>, Infallible>> + Send>>;
