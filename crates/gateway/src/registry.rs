//! The connections of this node, by client id and by user, for the control
//! plane's commands and for the node's counts; and the streams of the
//! HTTP-streaming transports by their session, for the commands their clients
//! send apart (`POST /emulation`).

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use switchboard_core::queue::Outbound;
use switchboard_core::StreamPosition;

/// What the server asks of a connection's task.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Control {
    /// End the connection's subscription to a channel.
    Unsubscribe { channel: String },
    /// Subscribe the connection to a channel on the server's authority, with the
    /// channel info and push data given, from `recover_since` when set.
    Subscribe {
        channel: String,
        info: Option<Bytes>,
        data: Option<Bytes>,
        recover_since: Option<StreamPosition>,
    },
    /// New credentials: they expire at `expire_at` (Unix seconds; `None`: never;
    /// a past instant closes the connection as expired), `info` replaces the
    /// connection info when given.
    Refresh {
        expire_at: Option<u64>,
        info: Option<Bytes>,
    },
    /// A subscription's new expiry (Unix seconds; `None`: never), and the
    /// channel info that replaces its own when given (the sub_refresh proxy).
    SubRefresh {
        channel: String,
        expire_at: Option<u64>,
        info: Option<Bytes>,
    },
}

/// Requests a connection has not handled yet. Its task is woken through its
/// outbound queue ([`Outbound::wake`]), so a connection waits on one thing.
#[derive(Debug, Default)]
pub struct Mailbox {
    requests: Mutex<Vec<Control>>,
    /// Client messages that came apart from the connection (emulation POSTs).
    messages: Mutex<Vec<Bytes>>,
}

/// Requests waiting at most; a connection with more is stuck, and refusing tells
/// the caller so.
const MAILBOX_LIMIT: usize = 16;

/// Client messages waiting at most: a client posting faster than its session
/// runs them is refused (and its command rate limit closes it soon after).
const MESSAGES_LIMIT: usize = 32;

impl Mailbox {
    /// Everything requested so far, oldest first.
    pub fn take(&self) -> Vec<Control> {
        std::mem::take(&mut *self.requests.lock().unwrap_or_else(|e| e.into_inner()))
    }

    /// The client messages posted so far, oldest first.
    pub fn take_messages(&self) -> Vec<Bytes> {
        std::mem::take(&mut *self.messages.lock().unwrap_or_else(|e| e.into_inner()))
    }
}

/// Queues `item` for a connection's task, unless `limit` wait already, and wakes
/// the task; false when refused.
fn deliver<T>(queue: &Mutex<Vec<T>>, limit: usize, item: T, outbound: &Outbound) -> bool {
    let mut queue = queue.lock().unwrap_or_else(|e| e.into_inner());
    if queue.len() >= limit {
        return false;
    }
    queue.push(item);
    drop(queue);
    outbound.wake();
    true
}

/// Why a posted client message did not reach its stream.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Undelivered {
    /// No stream of that session on this node (it ended, or never was).
    NoSession,
    /// The stream has [`MESSAGES_LIMIT`] messages waiting already.
    Busy,
}

/// How a posted message reaches one stream: its mailbox and its task's wake-up.
#[derive(Debug, Clone)]
pub struct StreamHandle {
    pub outbound: Arc<Outbound>,
    pub mailbox: Arc<Mailbox>,
}

/// How the rest of the node reaches one connection.
#[derive(Debug, Clone)]
pub struct ConnHandle {
    /// The Pusher app whose user space the connection is in; `None`: the
    /// Centrifugo front end's. The same user id in two spaces is two users.
    pub app: Option<Arc<str>>,
    pub user: String,
    pub outbound: Arc<Outbound>,
    pub mailbox: Arc<Mailbox>,
}

impl ConnHandle {
    /// Asks the connection's task to do `control`; false when its mailbox is full.
    pub fn request(&self, control: Control) -> bool {
        deliver(
            &self.mailbox.requests,
            MAILBOX_LIMIT,
            control,
            &self.outbound,
        )
    }
}

#[derive(Default)]
pub struct Registry {
    inner: Mutex<Inner>,
}

/// A user in its space: (Pusher app or `None`, user id).
type UserKey = (Option<Arc<str>>, String);

#[derive(Default)]
struct Inner {
    clients: HashMap<Arc<str>, ConnHandle>,
    users: HashMap<UserKey, HashSet<Arc<str>>>,
    /// By session: a secret of the stream, unlike the client id others may see.
    streams: HashMap<Arc<str>, StreamHandle>,
}

fn key_of(handle: &ConnHandle) -> UserKey {
    (handle.app.clone(), handle.user.clone())
}

impl Inner {
    fn forget_user(&mut self, client: &str, handle: &ConnHandle) {
        let key = key_of(handle);
        if let Some(set) = self.users.get_mut(&key) {
            set.remove(client);
            if set.is_empty() {
                self.users.remove(&key);
            }
        }
    }
}

impl Registry {
    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    pub fn add(&self, client: Arc<str>, handle: ConnHandle) {
        let mut inner = self.lock();
        inner
            .users
            .entry(key_of(&handle))
            .or_default()
            .insert(client.clone());
        inner.clients.insert(client, handle);
    }

    pub fn remove(&self, client: &str) {
        let mut inner = self.lock();
        if let Some(handle) = inner.clients.remove(client) {
            inner.forget_user(client, &handle);
        }
    }

    /// A connection authenticated as `user` after it was added (Pusher's signin).
    pub fn set_user(&self, client: &Arc<str>, user: String) {
        let mut inner = self.lock();
        let Some(handle) = inner.clients.get(&**client).cloned() else {
            return;
        };
        inner.forget_user(client, &handle);
        let handle = ConnHandle { user, ..handle };
        inner
            .users
            .entry(key_of(&handle))
            .or_default()
            .insert(client.clone());
        inner.clients.insert(client.clone(), handle);
    }

    /// A user's connections in `app`'s space (`None`: the Centrifugo front
    /// end's), or only the one with id `client` when given.
    pub fn of_user(&self, app: Option<&str>, user: &str, client: Option<&str>) -> Vec<ConnHandle> {
        let inner = self.lock();
        let key = (app.map(Arc::from), user.to_owned());
        let Some(clients) = inner.users.get(&key) else {
            return Vec::new();
        };
        clients
            .iter()
            .filter(|c| client.is_none_or(|want| &***c == want))
            .filter_map(|c| inner.clients.get(c).cloned())
            .collect()
    }

    /// A stream of an HTTP-streaming transport, open from now on.
    pub fn add_stream(&self, session: Arc<str>, handle: StreamHandle) {
        self.lock().streams.insert(session, handle);
    }

    pub fn remove_stream(&self, session: &str) {
        self.lock().streams.remove(session);
    }

    /// Hands a client message to the stream of `session`, whose task runs it as
    /// if it had come on the connection itself.
    pub fn post(&self, session: &str, message: Bytes) -> Result<(), Undelivered> {
        let Some(stream) = self.lock().streams.get(session).cloned() else {
            return Err(Undelivered::NoSession);
        };
        if deliver(
            &stream.mailbox.messages,
            MESSAGES_LIMIT,
            message,
            &stream.outbound,
        ) {
            Ok(())
        } else {
            Err(Undelivered::Busy)
        }
    }

    /// Every connection (for shutdown).
    pub fn all(&self) -> Vec<ConnHandle> {
        self.lock().clients.values().cloned().collect()
    }

    /// (connections, distinct users).
    pub fn counts(&self) -> (usize, usize) {
        let inner = self.lock();
        (inner.clients.len(), inner.users.len())
    }
}
