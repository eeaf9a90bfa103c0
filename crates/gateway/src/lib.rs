//! The Switchboard gateway: client connections, the server API, metrics and
//! probes, on one port.
//!
//! # Layout
//! Rooms by role; imports run one way: `http` → front ends (`centrifugo`, `pusher`) →
//! `transport` → `connection` → `node`, `cluster`, `registry`, `webhooks` → the core crates.
//! - [`http`]: routes (`/connection/websocket`, `/api/<method>`, `/app/{key}`,
//!   `/apps/{id}/*`, `/metrics`, `/healthz`, `/readyz`).
//! - [`centrifugo`]: the Centrifugo front end: protocol session, subscribe
//!   permissions, encoders, JWT, the server API.
//! - [`pusher`]: the Pusher Channels front end: apps, protocol 7 session, channel
//!   auth, encoder, the signed HTTP API.
//! - [`transport`]: bytes ↔ messages, protocol-blind: WebSocket (upgrade, frames, writer).
//! - [`connection`]: what every connection has: the `Session` trait a transport
//!   drives, the subscription algorithm (recovery and presence), identity, limits,
//!   delivery metrics.
//! - [`node`]: the node's shared state and channel operations every protocol uses.
//! - [`cluster`]: the cluster acting as one server: commands every live node runs,
//!   requests to one node, the node registry (NATS control plane, or in process).
//! - [`webhooks`]: Pusher webhooks, decided once per cluster (the core's `hooks`),
//!   queued, POSTed with retries.
//! - [`registry`]: this node's connections by client and user, and their mailboxes.
//! - [`server`]: the accept loop, TLS, and the drain on shutdown.
//! - [`config`]: flags, environment and TOML file resolved into one [`config::Config`].
//! - [`presence_client`]: presence over the presence service's gRPC API, calls spread
//!   over every replica its URLs resolve to, looked up again and again.
//! - [`response`]: HTTP response helpers every route uses.
//! - [`metrics`]: the Prometheus recorder and the metric names.
//! - [`tls`]: rustls acceptor from PEM files.

#![forbid(unsafe_code)]
#![deny(rust_2018_idioms)]

pub mod backend;
pub mod centrifugo;
pub mod cluster;
pub mod config;
pub mod connection;
pub mod http;
pub mod metrics;
pub mod node;
pub mod presence_client;
pub mod pusher;
pub mod registry;
pub mod response;
pub mod server;
pub mod tls;
pub mod transport;
pub mod webhooks;
