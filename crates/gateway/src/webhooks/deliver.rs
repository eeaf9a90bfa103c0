//! One webhook POST in Pusher's format: `{"time_ms","events":[…]}`, signed with
//! the app's secret.

use bytes::Bytes;
use http::header::{HeaderName, HeaderValue};
use switchboard_core::hooks::Job;
use switchboard_protocol::pusher::auth;

use crate::backend::{Backend, BackendError};
use crate::config::pusher::Webhook;
use crate::config::PusherApp;

/// The body of one job's POST: its event with the channel's Pusher name.
pub fn body(job: &Job) -> Bytes {
    let mut event = serde_json::to_value(&job.event).expect("an event serializes");
    if let Some(fields) = event.as_object_mut() {
        fields.insert(
            "channel".into(),
            switchboard_core::channel::local_name(&job.channel).into(),
        );
    }
    let body = serde_json::json!({ "time_ms": job.time_ms, "events": [event] });
    Bytes::from(serde_json::to_vec(&body).expect("a body serializes"))
}

/// POSTs `job` to `hook` of `app`; `Ok` once the backend answered 2xx.
pub async fn post(
    backend: &Backend,
    app: &PusherApp,
    hook: &Webhook,
    job: &Job,
) -> Result<(), BackendError> {
    let endpoint = crate::backend::endpoint(&hook.url).map_err(BackendError::Unreachable)?;
    let body = body(job);
    let text = std::str::from_utf8(&body).expect("JSON is UTF-8");
    let value =
        |s: &str| HeaderValue::from_str(s).map_err(|e| BackendError::Unreachable(e.to_string()));
    let headers = [
        (HeaderName::from_static("x-pusher-key"), value(&app.key)?),
        (
            HeaderName::from_static("x-pusher-signature"),
            value(&auth::sign(&app.secret, text))?,
        ),
        (
            HeaderName::from_static("x-switchboard-webhook-id"),
            value(&job.id)?,
        ),
    ];
    backend
        .post_json("webhook", &endpoint, &headers, body)
        .await?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use switchboard_core::hooks::HookEvent;

    #[test]
    fn bodies_name_the_pusher_channel_and_the_event_fields() {
        let mut job = Job::new(
            "~a1~p:presence-room",
            HookEvent::MemberAdded {
                user_id: "42".into(),
            },
        );
        job.time_ms = 1700000000000;
        let sent: serde_json::Value = serde_json::from_slice(&body(&job)).unwrap();
        assert_eq!(
            sent,
            serde_json::json!({"time_ms": 1700000000000u64, "events": [
                {"name": "member_added", "channel": "presence-room", "user_id": "42"}
            ]})
        );
        job.event = HookEvent::ClientEvent {
            event: "client-typing".into(),
            data: "{\"on\":true}".into(),
            socket_id: "1.2".into(),
            user_id: None,
        };
        let sent: serde_json::Value = serde_json::from_slice(&body(&job)).unwrap();
        assert_eq!(
            sent["events"][0],
            serde_json::json!({"name": "client_event", "channel": "presence-room",
                "event": "client-typing", "data": "{\"on\":true}", "socket_id": "1.2"})
        );
    }
}
