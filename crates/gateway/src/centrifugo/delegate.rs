//! The commands the application backend answers through the proxies
//! (`proxy.rs`): a connect without a token, `rpc`, `send`, and the subscribe
//! and publish of namespaces that ask for it. Each turns the backend's verdict
//! into the command's outcome.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::Uri;
use switchboard_core::Disconnect;
use switchboard_protocol::centrifugo::codes::ErrorCode;
use switchboard_protocol::centrifugo::{pb, Encoding};
use tokio::time::Instant;

use super::auth::now_secs;
use super::proxy::{self, Caller, ClientRequest, Connected, Subscribed, Verdict};
use super::session::{error_reply, reply, Outcome, Session};
use crate::node::Node;
use crate::registry::{ConnHandle, Control};

/// How long a connection goes on when the refresh proxy fails, before it is asked again:
/// a backend outage does not close every connection it let in.
const REFRESH_RETRY: Duration = Duration::from_secs(10);

/// A connection's side of a backend call made in a task of its own (the
/// refresh and sub_refresh proxies): owned, so the task outlives the borrow.
struct Asker {
    node: Arc<Node>,
    handle: ConnHandle,
    client: String,
    encoding: Encoding,
    request: ClientRequest,
}

impl Asker {
    fn caller(&self) -> Caller<'_> {
        Caller {
            client: &self.client,
            user: &self.handle.user,
            encoding: self.encoding,
            request: &self.request,
        }
    }
}

/// A refusal as the reply carries it.
pub(super) fn refused(id: u32, error: pb::Error) -> Outcome {
    Outcome::Reply(Box::new(pb::Reply {
        id,
        error: Some(error),
        ..Default::default()
    }))
}

impl Session {
    pub(super) fn caller(&self) -> Caller<'_> {
        Caller {
            client: &self.identity.client,
            user: &self.identity.user,
            encoding: self.encoding,
            request: &self.request,
        }
    }

    /// What a call to the backend made apart from the connection needs: the
    /// node, the way back to the connection, and who is asking.
    fn asker(&self) -> Asker {
        Asker {
            node: self.front.node.clone(),
            handle: ConnHandle {
                app: None,
                user: self.identity.user.clone(),
                outbound: self.outbound.clone(),
                mailbox: self.mailbox.clone(),
            },
            client: self.identity.client.to_string(),
            encoding: self.encoding,
            request: self.request.clone(),
        }
    }

    /// The connect proxy's verdict on a client that sent no token.
    pub(super) async fn connect_by_proxy(
        &self,
        id: u32,
        endpoint: &Uri,
        req: &pb::ConnectRequest,
    ) -> Result<Connected, Outcome> {
        match proxy::connect(&self.front.node, endpoint, &self.caller(), req).await {
            Verdict::Allow(connected) => Ok(connected),
            Verdict::Refuse(error) => Err(refused(id, error)),
            Verdict::Disconnect(d) => Err(Outcome::Disconnect(d)),
        }
    }

    /// The connection's credentials (from the connect proxy) have expired: if a
    /// refresh proxy is configured, asks it in a task of its own and returns true;
    /// the connection goes on until the answer arrives as a [`Control::Refresh`]
    /// (or a disconnect). False: nobody to ask, the connection has expired.
    pub(super) fn refresh_by_proxy(&mut self) -> bool {
        let node = &self.front.node;
        let Some(endpoint) = node.config.proxies.refresh.clone() else {
            return false;
        };
        if !self.proxied {
            return false;
        }
        // Until the backend answered (or its timeout passed), with a margin.
        let wait = node.config.proxies.timeout + Duration::from_secs(1);
        self.connected = Some(Some(Instant::now() + wait));
        let asker = self.asker();
        let task = tokio::spawn(async move {
            let (node, handle, caller) = (&asker.node, &asker.handle, asker.caller());
            let control = match proxy::refresh(node, &endpoint, &caller).await {
                Verdict::Allow(r) if r.expired => {
                    handle.outbound.close(Disconnect::EXPIRED, true);
                    return;
                }
                Verdict::Allow(r) => Control::Refresh {
                    expire_at: r.expire_at,
                    info: r.info,
                },
                Verdict::Refuse(_) => Control::Refresh {
                    expire_at: Some(now_secs() + REFRESH_RETRY.as_secs()),
                    info: None,
                },
                Verdict::Disconnect(d) => {
                    handle.outbound.close(d, true);
                    return;
                }
            };
            handle.request(control);
        });
        if let Some(previous) = self.refresher.replace(task.abort_handle()) {
            previous.abort();
        }
        true
    }

    /// A subscription the sub_refresh proxy decides has reached its expiry: asks
    /// the backend in a task of its own and returns true; the subscription goes
    /// on until the answer arrives as a [`Control::SubRefresh`] (or a
    /// disconnect). False: nobody to ask, the subscription has expired.
    pub(super) fn sub_refresh_by_proxy(&mut self, channel: &str) -> bool {
        let Some(endpoint) = self.sub_refreshers.get(channel).map(|r| r.endpoint.clone()) else {
            return false;
        };
        let Some(entry) = self.subs.get_mut(channel) else {
            return false;
        };
        // Until the backend answered (or its timeout passed), with a margin.
        let wait = self.front.node.config.proxies.timeout + Duration::from_secs(1);
        entry.expires_at = Some(Instant::now() + wait);
        let asker = self.asker();
        let asked = channel.to_owned();
        let task = tokio::spawn(async move {
            let (node, handle, caller) = (&asker.node, &asker.handle, asker.caller());
            let (expire_at, info) = match proxy::sub_refresh(node, &endpoint, &caller, &asked).await
            {
                Verdict::Allow(r) if r.expired => {
                    handle.outbound.close(Disconnect::SUB_EXPIRED, true);
                    return;
                }
                Verdict::Allow(r) => (r.expire_at, r.info),
                Verdict::Refuse(_) => (Some(now_secs() + REFRESH_RETRY.as_secs()), None),
                Verdict::Disconnect(d) => {
                    handle.outbound.close(d, true);
                    return;
                }
            };
            handle.request(Control::SubRefresh {
                channel: asked,
                expire_at,
                info,
            });
        });
        if let Some(refresher) = self.sub_refreshers.get_mut(channel) {
            if let Some(previous) = refresher.call.replace(task.abort_handle()) {
                previous.abort();
            }
        }
        true
    }

    /// `rpc`: the backend answers it, or nobody (108).
    pub(super) async fn rpc(&self, id: u32, req: pb::RpcRequest) -> Outcome {
        let Some(endpoint) = &self.front.node.config.proxies.rpc else {
            return error_reply(id, ErrorCode::NOT_AVAILABLE);
        };
        match proxy::rpc(&self.front.node, endpoint, &self.caller(), &req).await {
            Verdict::Allow(data) => reply(id, |r| r.rpc = Some(pb::RpcResult { data })),
            Verdict::Refuse(error) => refused(id, error),
            Verdict::Disconnect(d) => Outcome::Disconnect(d),
        }
    }

    /// `send`: to the backend, without a reply; with nowhere to send it, the
    /// connection is closed (3508), as Centrifugo does without a handler.
    pub(super) async fn send_message(&self, req: pb::SendRequest) -> Outcome {
        let Some(endpoint) = &self.front.node.config.proxies.send else {
            return Outcome::Disconnect(Disconnect::NOT_AVAILABLE);
        };
        match proxy::send(&self.front.node, endpoint, &self.caller(), &req).await {
            Some(d) => Outcome::Disconnect(d),
            None => Outcome::Done,
        }
    }

    /// The subscribe proxy's verdict: the channel info, the reply's data and
    /// the expiry.
    pub(super) async fn subscribe_by_proxy(
        &self,
        id: u32,
        endpoint: &Uri,
        req: &pb::SubscribeRequest,
    ) -> Result<Subscribed, Outcome> {
        match proxy::subscribe(&self.front.node, endpoint, &self.caller(), req).await {
            Verdict::Allow(s) => Ok(s),
            Verdict::Refuse(error) => Err(refused(id, error)),
            Verdict::Disconnect(d) => Err(Outcome::Disconnect(d)),
        }
    }

    /// The publish proxy's verdict: the data to publish and `skip_history`.
    pub(super) async fn publish_by_proxy(
        &self,
        id: u32,
        endpoint: &Uri,
        req: &pb::PublishRequest,
    ) -> Result<(Bytes, bool), Outcome> {
        match proxy::publish(&self.front.node, endpoint, &self.caller(), req).await {
            Verdict::Allow(p) => Ok((p.data, p.skip_history)),
            Verdict::Refuse(error) => Err(refused(id, error)),
            Verdict::Disconnect(d) => Err(Outcome::Disconnect(d)),
        }
    }
}
