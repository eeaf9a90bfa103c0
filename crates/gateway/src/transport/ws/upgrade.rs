//! The WebSocket upgrade: admission ([`crate::transport::admit`]), the
//! handshake, and the hand-over of the socket to [`super::serve`].

use std::sync::Arc;

use http::{header, Request, Response, StatusCode};
use hyper::body::Incoming;
use switchboard_core::queue::Outbound;

use super::socket::Socket;
use crate::connection::Session;
use crate::node::Node;
use crate::registry::Mailbox;
use crate::response::{refused, text, Body};

/// The subprotocols a client offers (`Sec-WebSocket-Protocol`), in its order.
pub fn offered_subprotocols(req: &Request<Incoming>) -> Vec<String> {
    req.headers()
        .get_all(header::SEC_WEBSOCKET_PROTOCOL)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(',').map(|p| p.trim().to_owned()))
        .collect()
}

/// Upgrades `req` and serves the connection with the session `make` builds
/// (from the connection's queue and mailbox). `subprotocol` is named in the
/// handshake: the one the protocol chose among those the client offered.
pub fn upgrade<S, F>(
    node: Arc<Node>,
    mut req: Request<Incoming>,
    subprotocol: Option<&'static str>,
    make: F,
) -> Response<Body>
where
    S: Session,
    F: FnOnce(Arc<Outbound>, Arc<Mailbox>) -> S + Send + 'static,
{
    if !fastwebsockets::upgrade::is_upgrade_request(&req) {
        return text(StatusCode::BAD_REQUEST, "expected a WebSocket upgrade\n");
    }
    let slot = match crate::transport::admit(&node) {
        Ok(slot) => slot,
        Err(message) => return crate::transport::refusal(message),
    };
    let (mut response, upgrade) = match fastwebsockets::upgrade::upgrade(&mut req) {
        Ok(pair) => pair,
        Err(_) => {
            refused("bad_handshake");
            return text(StatusCode::BAD_REQUEST, "bad WebSocket handshake\n");
        }
    };
    // A client that offers subprotocols drops a handshake that names none of them.
    if let Some(chosen) = subprotocol {
        response.headers_mut().insert(
            header::SEC_WEBSOCKET_PROTOCOL,
            header::HeaderValue::from_static(chosen),
        );
    }
    let tasks = node.tasks.clone();
    tasks.spawn(async move {
        // fastwebsockets completes the handshake; the connection task then
        // drives the socket itself (see `socket`).
        let socket = match upgrade.await {
            Ok(ws) => Socket::from_upgraded(ws.into_inner().into_inner()),
            Err(e) => {
                refused("upgrade_failed");
                tracing::debug!(error = %e, "WebSocket upgrade failed");
                return;
            }
        };
        let Some(socket) = socket else {
            refused("upgrade_failed");
            tracing::warn!("upgraded connection of an unknown socket type");
            return;
        };
        super::serve(node, socket, make, slot).await;
    });
    response.map(|_| Body::empty())
}
