//! Who a connection is, as the rest of the node sees it.

use std::sync::Arc;

use bytes::Bytes;
use switchboard_core::ClientInfo;

/// A connection's id and, once it authenticated, its user and connection info.
#[derive(Debug, Clone)]
pub struct Identity {
    /// Unique per connection (across the cluster).
    pub client: Arc<str>,
    /// The user id; empty for anonymous connections and before authentication.
    pub user: String,
    /// Connection info (JSON) the credentials carried.
    pub conn_info: Option<Bytes>,
}

impl Identity {
    /// An unauthenticated connection with a fresh id.
    pub fn new() -> Identity {
        Identity {
            client: uuid::Uuid::new_v4().to_string().into(),
            user: String::new(),
            conn_info: None,
        }
    }

    /// The connection as presence and join/leave events carry it, with the
    /// channel info of one subscription.
    pub fn client_info(&self, chan_info: Option<Bytes>) -> ClientInfo {
        ClientInfo {
            user: self.user.clone(),
            client: self.client.to_string(),
            conn_info: self.conn_info.clone(),
            chan_info,
        }
    }
}

/// The address a connection comes from, as the gateway sees it (a proxy's,
/// behind one); the server puts it in every request's extensions.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Peer(pub std::net::SocketAddr);

impl Default for Identity {
    fn default() -> Identity {
        Identity::new()
    }
}
