//! The Pusher HTTP API client: events to a channel, `POST /apps/{id}/events`,
//! signed as every Pusher server SDK signs (`auth_key`, `auth_timestamp`,
//! `auth_version`, `body_md5`, `auth_signature`) with the protocol crate's
//! signatures.
//!
//! The API has no idempotency key: a retry of an event whose answer was lost may
//! be a second event (the publisher counts such publishes as uncertain).

use std::net::SocketAddr;
use std::time::Duration;

use serde::Serialize;
use switchboard_protocol::pusher::auth::{body_md5, request_signature, AUTH_VERSION};

use super::Http;
use crate::client::ClientError;
use crate::payload::now_us;

/// The name of the events the tool triggers.
pub const EVENT_NAME: &str = "loadtest";

/// A Pusher app: its id (HTTP API paths), key (WebSocket path, `auth_key`) and
/// secret (signatures).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PusherApp {
    pub id: String,
    pub key: String,
    pub secret: String,
}

pub struct PusherApi {
    http: Http,
    app: PusherApp,
}

impl PusherApi {
    pub fn new(addr: SocketAddr, app: &PusherApp, timeout: Duration) -> PusherApi {
        PusherApi {
            http: Http::new(addr, timeout),
            app: app.clone(),
        }
    }

    pub fn addr(&self) -> SocketAddr {
        self.http.addr()
    }

    /// Triggers the event [`EVENT_NAME`] on `channel` with `data` (sent as the
    /// JSON string Pusher's `data` is); anything but a 200 is an error.
    pub async fn trigger(&mut self, channel: &str, data: &[u8]) -> Result<(), ClientError> {
        #[derive(Serialize)]
        struct Event<'a> {
            name: &'a str,
            channel: &'a str,
            data: &'a str,
        }
        let data = std::str::from_utf8(data).map_err(|e| ClientError::Decode(e.to_string()))?;
        let body = serde_json::to_vec(&Event {
            name: EVENT_NAME,
            channel,
            data,
        })
        .map_err(|e| ClientError::Decode(e.to_string()))?;
        let path = format!("/apps/{}/events", self.app.id);
        let query = signed_query(&self.app, "POST", &path, &body, now_us() / 1_000_000);
        let (status, reply) = self
            .http
            .post(&format!("{path}?{query}"), &[], body)
            .await?;
        if status != 200 {
            // The reply says why (`{"error":"invalid auth_signature"}`); the label
            // groups by status like the other HTTP failures.
            let why = String::from_utf8_lossy(&reply);
            return Err(ClientError::Handshake(format!("status {status}: {why}")));
        }
        Ok(())
    }
}

/// The query string of a signed request: `auth_key`, `auth_timestamp`,
/// `auth_version`, `body_md5` (for a body) and their `auth_signature`.
pub fn signed_query(
    app: &PusherApp,
    method: &str,
    path: &str,
    body: &[u8],
    now_unix: u64,
) -> String {
    let mut params = vec![
        ("auth_key".to_owned(), app.key.clone()),
        ("auth_timestamp".to_owned(), now_unix.to_string()),
        ("auth_version".to_owned(), AUTH_VERSION.to_owned()),
    ];
    if !body.is_empty() {
        params.push(("body_md5".to_owned(), body_md5(body)));
    }
    let signature = request_signature(&app.secret, method, path, &params);
    params.push(("auth_signature".to_owned(), signature));
    form_urlencoded::Serializer::new(String::new())
        .extend_pairs(params)
        .finish()
}

#[cfg(test)]
mod tests {
    use super::*;
    use switchboard_protocol::pusher::auth::{parse_query, verify_request};

    fn app() -> PusherApp {
        PusherApp {
            id: "app-id".into(),
            key: "app key".into(),
            secret: "app-secret".into(),
        }
    }

    #[test]
    fn a_signed_query_verifies_as_the_server_checks_it() {
        let body = br#"{"name":"loadtest","channel":"lt-0","data":"{\"lt\":[0,1,2]}"}"#;
        let query = signed_query(&app(), "POST", "/apps/app-id/events", body, 1_700_000_000);
        let params = parse_query(&query);
        let secret = |key: &str| (key == "app key").then(|| "app-secret".to_owned());
        let verified = verify_request(
            "POST",
            "/apps/app-id/events",
            &params,
            body,
            secret,
            1_700_000_030,
        );
        assert_eq!(verified, Ok("app key"));
        // Another body, path or secret does not verify.
        let other = verify_request(
            "POST",
            "/apps/app-id/events",
            &params,
            b"{}",
            secret,
            1_700_000_030,
        );
        assert!(other.is_err());
        let elsewhere = verify_request(
            "POST",
            "/apps/x/events",
            &params,
            body,
            secret,
            1_700_000_030,
        );
        assert!(elsewhere.is_err());
        let wrong = |_: &str| Some("other".to_owned());
        assert!(verify_request(
            "POST",
            "/apps/app-id/events",
            &params,
            body,
            wrong,
            1_700_000_030
        )
        .is_err());
    }

    #[test]
    fn a_request_without_body_has_no_body_md5() {
        let query = signed_query(&app(), "GET", "/apps/app-id/channels", b"", 1);
        assert!(!query.contains("body_md5"));
        assert!(query.contains("auth_key=app+key"));
    }
}
