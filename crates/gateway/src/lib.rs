//! The Switchboard gateway: client WebSocket connections, the server API,
//! metrics and probes, on one port.
//!
//! # Layout
//! - [`config`]: flags, environment and TOML file resolved into one [`config::Config`].
//! - [`node`]: the node's shared state and channel operations both protocols use.
//! - [`server`]: the accept loop, TLS, and the drain on shutdown.
//! - [`http`]: routing of `/connection/websocket`, `/api/<method>`, `/metrics`, `/healthz`, `/readyz`.
//! - [`client`]: one Centrifugo-protocol connection (reader, session, writer).
//! - [`api`]: the Centrifugo-compatible server HTTP API.
//! - [`auth`]: connection and subscription tokens (JWT).
//! - [`encode`]: core events → Centrifugo protocol pushes, per encoding.
//! - [`presence_client`]: presence over the presence service's gRPC API.
//! - [`registry`]: this node's connections by client and user.
//! - [`metrics`]: the Prometheus recorder and the metric names.
//! - [`tls`]: rustls acceptor from PEM files.

#![forbid(unsafe_code)]
#![deny(rust_2018_idioms)]

pub mod api;
pub mod auth;
pub mod client;
pub mod config;
pub mod encode;
pub mod http;
pub mod metrics;
pub mod node;
pub mod presence_client;
pub mod registry;
pub mod server;
pub mod tls;
