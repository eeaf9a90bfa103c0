//! `switchboard-loadtest`: the load generator for Switchboard and other
//! Centrifugo- or Pusher-protocol servers.
//!
//! # Layout
//! - [`cli`]: the command line; [`config`]: `--config FILE` (TOML).
//! - [`target`]: gateway URLs.
//! - [`client`]: protocol clients over fastwebsockets: Centrifugo (JSON and protobuf)
//!   and Pusher Channels, behind one `Connection`.
//! - [`api`]: the server HTTP API clients: Centrifugo's (`POST /api/publish`) and
//!   Pusher's (signed `POST /apps/{id}/events`).
//! - [`payload`]: the stamp each publication carries (channel, sequence, send time).
//! - [`accounting`]: exact loss, duplicate and order accounting.
//! - [`hist`]: HDR histograms, percentiles, and their form between processes.
//! - [`receivers`]: a share of a run's connections: set up, read, account, recover.
//! - [`publisher`]: publishers at a rate, through an HTTP API or as clients.
//! - [`workers`]: worker processes for more connections than one process may hold.
//! - [`limits`]: the fd limit and loopback source addresses.
//! - [`procstat`]: CPU and memory of the server (and this tool) from /proc.
//! - [`scenario`]: connect, fanout, churn, failover.
//! - [`report`], [`svg`]: the summary, the table, `--json`, `--report`.
//! - [`benchmd`]: sections of BENCHMARKS.md, with targets met or missed.

#![forbid(unsafe_code)]
#![deny(rust_2018_idioms)]

pub mod accounting;
pub mod api;
pub mod benchmd;
pub mod cli;
pub mod client;
pub mod config;
pub mod hist;
pub mod limits;
pub mod payload;
pub mod procstat;
pub mod publisher;
pub mod receivers;
pub mod report;
pub mod scenario;
pub mod svg;
pub mod target;
pub mod workers;
