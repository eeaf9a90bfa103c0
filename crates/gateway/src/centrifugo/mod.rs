//! The Centrifugo front end: its client protocol over any transport, its
//! connection and subscription tokens, and its server API.
//!
//! # Layout
//! - [`Centrifugo`]: the front end's state (token verifier, hub formats) and its
//!   WebSocket endpoint (its HTTP-stream endpoints are in `streams`).
//! - [`session`]: the protocol state machine of one connection (connect, refresh, dispatch).
//! - `streams`: the HTTP-streaming and SSE endpoints, `/emulation`, CORS.
//! - `subscribe`: permissions and replies around the shared subscription algorithm.
//! - `commands`: publish, presence, presence stats, history.
//! - [`encode`]: core events → protocol pushes, one hub format per encoding.
//! - [`errors`]: disconnect reasons → close codes, channel errors → reply codes.
//! - [`auth`]: connection and subscription tokens (JWT); `expiry`: when they end.
//! - [`api`]: the Centrifugo-compatible server HTTP API.

pub mod api;
pub mod auth;
mod commands;
mod connect;
mod delegate;
pub mod encode;
pub mod errors;
mod expiry;
pub mod proxy;
pub mod session;
mod streams;
mod subscribe;

use std::sync::Arc;

use http::{Request, Response, StatusCode};
use hyper::body::Incoming;
use switchboard_core::hub::FormatId;
use switchboard_protocol::centrifugo::codec::{JSON_SUBPROTOCOL, PROTOBUF_SUBPROTOCOL};
use switchboard_protocol::centrifugo::Encoding;

pub use commands::history_query;

use crate::connection::identity::Peer;
use crate::node::Node;
use crate::response::{text, Body};
use crate::transport::ws::upgrade::{offered_subprotocols, upgrade};
use auth::{KeyError, Verifier};
use encode::CentrifugeEncoder;
use proxy::ClientRequest;
use session::Session;

/// The Centrifugo front end of one node.
pub struct Centrifugo {
    pub node: Arc<Node>,
    /// `None` when no token key is configured: tokens are then refused.
    pub verifier: Option<Verifier>,
    json: FormatId,
    protobuf: FormatId,
}

impl Centrifugo {
    /// Starts the front end on `node`: loads the token key and registers one hub
    /// format per encoding.
    pub fn new(node: Arc<Node>) -> Result<Arc<Centrifugo>, KeyError> {
        let verifier = Verifier::new(&node.config.token)?;
        let json = node
            .hub
            .register(Arc::new(CentrifugeEncoder(Encoding::Json)));
        let protobuf = node
            .hub
            .register(Arc::new(CentrifugeEncoder(Encoding::Protobuf)));
        Ok(Arc::new(Centrifugo {
            node,
            verifier,
            json,
            protobuf,
        }))
    }

    /// The hub format of connections in `encoding`.
    pub fn format(&self, encoding: Encoding) -> FormatId {
        match encoding {
            Encoding::Json => self.json,
            Encoding::Protobuf => self.protobuf,
        }
    }

    /// `GET /connection/websocket`: JSON, or protobuf when the client offers the
    /// `centrifuge-protobuf` subprotocol or asks with `?cf_protocol=protobuf`.
    pub fn websocket(self: &Arc<Self>, req: Request<Incoming>) -> Response<Body> {
        let offered = offered_subprotocols(&req);
        let encoding = Encoding::negotiate(offered.iter().map(String::as_str), req.uri().query());
        let chosen = match encoding {
            Encoding::Protobuf => PROTOBUF_SUBPROTOCOL,
            Encoding::Json => JSON_SUBPROTOCOL,
        };
        let subprotocol = offered.iter().any(|p| p == chosen).then_some(chosen);
        let address = req.extensions().get::<Peer>().map(|p| p.0.ip());
        let request = ClientRequest::new(&self.node.config.proxies, "websocket", req.headers());
        if fastwebsockets::upgrade::is_upgrade_request(&req) {
            // Only for what would be upgraded: a plain GET is answered 400 below.
            match self.node.try_acquire_unauthenticated(address) {
                Ok(slot) => {
                    let front = self.clone();
                    return upgrade(
                        self.node.clone(),
                        req,
                        subprotocol,
                        move |outbound, mailbox| {
                            Session::new(
                                front,
                                encoding,
                                outbound,
                                mailbox,
                                Some(slot),
                                None,
                                request,
                            )
                        },
                    );
                }
                Err(reason) => {
                    metrics::counter!("switchboard_connections_refused_total", "reason" => reason)
                        .increment(1);
                    return text(
                        StatusCode::SERVICE_UNAVAILABLE,
                        "too many connections waiting to authenticate\n",
                    );
                }
            }
        }
        let front = self.clone();
        upgrade(
            self.node.clone(),
            req,
            subprotocol,
            move |outbound, mailbox| {
                Session::new(front, encoding, outbound, mailbox, None, None, request)
            },
        )
    }
}
