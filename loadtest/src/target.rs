//! Where the tool sends traffic: a gateway's WebSocket URL and, derived from it,
//! its HTTP API.
//!
//! Only `ws://IP:PORT/path?query` with a literal IP address: the tool resolves no
//! names and speaks no TLS, so it measures the gateway and not a resolver or a
//! handshake library.

use std::net::SocketAddr;
use std::str::FromStr;

/// The path of a URL that names none: Centrifugo's WebSocket endpoint.
pub const DEFAULT_PATH: &str = "/connection/websocket";

#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Target {
    pub addr: SocketAddr,
    /// Path and query of the WebSocket endpoint, e.g. `/connection/websocket`.
    pub path: String,
}

#[derive(Debug, thiserror::Error)]
#[error("{0}: expected ws://IP:PORT/path (a literal IP address, no TLS)")]
pub struct BadUrl(String);

impl FromStr for Target {
    type Err = BadUrl;

    fn from_str(s: &str) -> Result<Target, BadUrl> {
        let bad = || BadUrl(s.to_owned());
        let rest = s.strip_prefix("ws://").ok_or_else(bad)?;
        let (authority, path) = match rest.find('/') {
            Some(i) => (&rest[..i], &rest[i..]),
            None => (rest, DEFAULT_PATH),
        };
        let addr = authority.parse().map_err(|_| bad())?;
        Ok(Target {
            addr,
            path: path.to_owned(),
        })
    }
}

impl std::fmt::Display for Target {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "ws://{}{}", self.addr, self.path)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_ws_urls_with_literal_addresses() {
        let t: Target = "ws://127.0.0.1:8000/connection/websocket?cf_protocol=protobuf"
            .parse()
            .unwrap();
        assert_eq!(t.addr, "127.0.0.1:8000".parse().unwrap());
        assert_eq!(t.path, "/connection/websocket?cf_protocol=protobuf");
        let t: Target = "ws://127.0.0.1:1".parse().unwrap();
        assert_eq!(t.path, "/connection/websocket");
        assert!("http://127.0.0.1:1/".parse::<Target>().is_err());
        assert!("ws://localhost:1/".parse::<Target>().is_err());
    }
}
