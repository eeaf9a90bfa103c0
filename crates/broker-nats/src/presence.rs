//! Presence shared by every gateway: two JetStream key-value buckets.
//!
//! - `<prefix>-presence` holds one key per member, `<channel>.<user>.<client>`
//!   (each a base64url token), valued with the member's client info. Gateways
//!   re-put their members well inside the presence TTL; a member not refreshed
//!   within it belongs to a gateway that died: the [sweeper](crate::sweeper)
//!   deletes it and announces its leave. The bucket keeps entries for twice the
//!   TTL, a backstop should no sweeper run.
//! - `<prefix>-presence-users` holds one key per user present in a channel,
//!   `<channel>.<user>`, valued with the ids of the user's connections there. It
//!   changes only by compare-and-set, so that exactly one call sees a user's first
//!   connection join and exactly one its last leave, whichever gateways they are on.
//!   Anonymous connections (user "") have no key: nothing tells them apart, so
//!   each joins and leaves as its own user, and one key shared by all of them
//!   would make every join rewrite a value that grows with their number.
//!
//! Members and users go by deleting their message from the stream, not with a
//! key-value delete marker, so that the subjects matching `<channel>.*.*` are
//! exactly the channel's members: stats are three requests whatever the channel's
//! size, and the sweeper reads only the overdue members (the oldest messages).
//!
//! [`PresenceBucket`] is the stateless store (the presence service serves it);
//! [`KvPresence`] is a gateway using the buckets directly, remembering only its
//! own members, to refresh them.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, Weak};
use std::time::{Duration, SystemTime};

use async_nats::jetstream::consumer::{pull, AckPolicy, DeliverPolicy};
use async_nats::jetstream::kv::{CreateErrorKind, UpdateErrorKind};
use async_nats::jetstream::stream::DirectGetErrorKind;
use async_nats::jetstream::{self, kv};
use async_trait::async_trait;
use bytes::Bytes;
use futures::StreamExt;
use prost::Message as _;
use switchboard_core::{BrokerError, ClientInfo, PresenceChange, PresenceStats, PresenceStore};

use crate::envelope::presence_info;
use crate::subject::Subjects;
use crate::{unavailable, NatsError};

/// Most members listed for one channel by [`PresenceBucket::members`].
const MAX_LISTED: usize = 100_000;
/// Members read per request when listing a whole channel.
const LIST_PAGE: usize = 10_000;
/// Compare-and-set attempts on one user's key before giving up.
const CAS_ATTEMPTS: usize = 32;
/// `STREAM.INFO` past this offset lists no subjects, only their total.
const COUNT_ONLY: u32 = 1 << 30;

/// The presence buckets: stateless operations any replica can serve.
pub struct PresenceBucket {
    members: Bucket,
    users: Bucket,
    js: jetstream::Context,
    ttl: Duration,
    subjects: Subjects,
}

/// One key-value bucket and its stream.
struct Bucket {
    store: kv::Store,
    stream: jetstream::stream::Stream,
    /// `KV_<bucket>`.
    stream_name: String,
    /// `$KV.<bucket>.`, what every key's subject starts with.
    prefix: String,
}

/// A member whose refresh is overdue, as the sweeper finds it.
pub struct StaleMember {
    pub channel: String,
    pub info: ClientInfo,
    sequence: u64,
}

/// One page of a channel's members.
#[derive(Debug, Default)]
pub struct MemberPage {
    pub members: Vec<ClientInfo>,
    /// Where the next page starts; `None` on the last page.
    pub next: Option<u64>,
}

/// A gateway's presence straight on the buckets.
pub struct KvPresence {
    bucket: Arc<PresenceBucket>,
    /// This gateway's members: key → (channel, encoded member), re-put as is on
    /// every refresh.
    local: Mutex<HashMap<String, (String, Bytes)>>,
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

fn kept_changing(channel: &str) -> BrokerError {
    BrokerError::Unavailable(format!("presence of a user in {channel} kept changing"))
}

/// A name as one key token: base64url, or `_` for the empty name (anonymous
/// users), which base64url never produces.
fn token(name: &str) -> String {
    if name.is_empty() {
        "_".into()
    } else {
        Subjects::channel_token(name)
    }
}

fn member_key(channel: &str, info: &ClientInfo) -> String {
    format!(
        "{}.{}.{}",
        token(channel),
        token(&info.user),
        token(&info.client)
    )
}

fn user_key(channel: &str, user: &str) -> String {
    format!("{}.{}", token(channel), token(user))
}

fn member_value(info: ClientInfo) -> Bytes {
    Bytes::from(presence_info::encode(info).encode_to_vec())
}

/// A user's connections in a channel, as its key holds them: one id per line.
fn connections_of(value: &[u8]) -> Vec<String> {
    String::from_utf8_lossy(value)
        .lines()
        .filter(|l| !l.is_empty())
        .map(str::to_owned)
        .collect()
}

fn connections_value(clients: &[String]) -> Bytes {
    Bytes::from(clients.join("\n"))
}

impl Bucket {
    async fn open(
        js: &jetstream::Context,
        name: String,
        max_age: Duration,
        replicas: usize,
    ) -> Result<Bucket, NatsError> {
        // The stream is made directly, with the key-value conventions (ADR-8), so
        // that any gateway or replica creates it idempotently, in the same way on
        // every server version we support. Deletes are allowed: members and users
        // go by deleting their message.
        let stream_config = jetstream::stream::Config {
            name: format!("KV_{name}"),
            subjects: vec![format!("$KV.{name}.>")],
            max_messages_per_subject: 1,
            max_age,
            duplicate_window: if max_age.is_zero() {
                Duration::from_secs(120)
            } else {
                max_age.min(Duration::from_secs(120))
            },
            num_replicas: replicas,
            discard: jetstream::stream::DiscardPolicy::New,
            allow_rollup: true,
            deny_delete: false,
            allow_direct: true,
            ..Default::default()
        };
        let stream_error = |e: &dyn std::fmt::Display| NatsError::Stream {
            stream: name.clone(),
            reason: e.to_string(),
        };
        let stream = crate::streams::create_or_update(js, stream_config)
            .await
            .map_err(|e| stream_error(&e))?;
        let store = js
            .get_key_value(&name)
            .await
            .map_err(|e| stream_error(&e))?;
        Ok(Bucket {
            store,
            stream,
            stream_name: format!("KV_{name}"),
            prefix: format!("$KV.{name}."),
        })
    }

    /// Deletes the message at `sequence`; `false` if it is not there (any more).
    /// The message is the key's value only while it is the key's last one, so
    /// this is a compare-and-delete.
    async fn delete_message(
        &self,
        js: &jetstream::Context,
        sequence: u64,
    ) -> Result<bool, BrokerError> {
        #[derive(serde::Deserialize)]
        struct Reply {
            #[serde(default)]
            success: bool,
            error: Option<ApiError>,
        }
        let reply: Reply = js
            .request(
                format!("STREAM.MSG.DELETE.{}", self.stream_name),
                &serde_json::json!({ "seq": sequence, "no_erase": true }),
            )
            .await
            .map_err(unavailable)?;
        match reply.error {
            None => Ok(reply.success),
            Some(e) if NOT_THERE.contains(&e.err_code) => Ok(false),
            Some(e) => Err(BrokerError::Unavailable(e.description)),
        }
    }

    /// How many keys match `filter` (a subject filter below `$KV.<bucket>.`).
    async fn count(&self, js: &jetstream::Context, filter: &str) -> Result<u32, BrokerError> {
        #[derive(serde::Deserialize)]
        struct Reply {
            #[serde(default)]
            total: u32,
            error: Option<ApiError>,
        }
        let reply: Reply = js
            .request(
                format!("STREAM.INFO.{}", self.stream_name),
                &serde_json::json!({
                    "subjects_filter": format!("{}{filter}", self.prefix),
                    "offset": COUNT_ONLY,
                }),
            )
            .await
            .map_err(unavailable)?;
        match reply.error {
            None => Ok(reply.total),
            Some(e) => Err(BrokerError::Unavailable(e.description)),
        }
    }

    /// An ephemeral consumer that reads the bucket's messages matching `filter`
    /// (empty: all) from `start`, without acks; gone 30 s after its last use
    /// should [`Bucket::drop_reader`] not reach NATS.
    async fn reader(
        &self,
        start: DeliverPolicy,
        filter: String,
    ) -> Result<jetstream::consumer::PullConsumer, BrokerError> {
        self.stream
            .create_consumer(pull::Config {
                deliver_policy: start,
                ack_policy: AckPolicy::None,
                filter_subject: filter,
                inactive_threshold: Duration::from_secs(30),
                memory_storage: true,
                ..Default::default()
            })
            .await
            .map_err(unavailable)
    }

    async fn drop_reader(&self, consumer: &jetstream::consumer::PullConsumer) {
        let name = &consumer.cached_info().name;
        if let Err(e) = self.stream.delete_consumer(name).await {
            tracing::debug!(error = %e, "presence reader left to expire");
        }
    }

    /// Messages in the bucket: one per key.
    async fn keys(&self) -> Result<u64, BrokerError> {
        let mut stream = self.stream.clone();
        let info = stream.info().await.map_err(unavailable)?;
        Ok(info.state.messages)
    }
}

/// The JetStream API's error body.
#[derive(serde::Deserialize)]
struct ApiError {
    #[serde(default)]
    err_code: u64,
    #[serde(default)]
    description: String,
}

/// `err_code`s of a delete whose message is not there: "no message found",
/// "sequence not found", and the file store's "error deleting message".
const NOT_THERE: [u64; 3] = [10037, 10043, 10057];

impl PresenceBucket {
    /// Opens (or creates) the buckets `<prefix>-presence` and
    /// `<prefix>-presence-users` for the given TTL.
    pub async fn open(
        js: &jetstream::Context,
        prefix: &str,
        ttl: Duration,
        replicas: usize,
    ) -> Result<PresenceBucket, NatsError> {
        let members = Bucket::open(js, format!("{prefix}-presence"), ttl * 2, replicas).await?;
        // Users keys live until their last connection leaves (or is swept).
        let users = Bucket::open(
            js,
            format!("{prefix}-presence-users"),
            Duration::ZERO,
            replicas,
        )
        .await?;
        Ok(PresenceBucket {
            members,
            users,
            js: js.clone(),
            ttl,
            subjects: Subjects::new(prefix),
        })
    }

    /// The presence TTL: a member not refreshed within it is gone.
    pub fn ttl(&self) -> Duration {
        self.ttl
    }

    /// The members' store, for the sweeper's lease.
    pub fn store(&self) -> &kv::Store {
        &self.members.store
    }

    /// A connection joins a channel. Returns whether its user joined with it (it
    /// is the user's first connection there).
    pub async fn join(&self, channel: &str, info: ClientInfo) -> Result<bool, BrokerError> {
        let (user, client) = (info.user.clone(), info.client.clone());
        self.refresh(channel, info).await?;
        self.add_connection(channel, &user, &client).await
    }

    /// Re-asserts a member (its gateway is alive); adds it if it is not there.
    pub async fn refresh(&self, channel: &str, info: ClientInfo) -> Result<(), BrokerError> {
        let key = member_key(channel, &info);
        self.put_raw(&key, member_value(info)).await
    }

    async fn put_raw(&self, key: &str, value: Bytes) -> Result<(), BrokerError> {
        self.members
            .store
            .put(key, value)
            .await
            .map(|_| ())
            .map_err(unavailable)
    }

    /// A connection leaves a channel. Returns whether its user left with it (it
    /// was the user's last connection there). Leaving twice is harmless.
    pub async fn leave(&self, channel: &str, info: &ClientInfo) -> Result<bool, BrokerError> {
        let key = member_key(channel, info);
        if info.user.is_empty() {
            // An anonymous connection is its own user: it left if it was there.
            return self.delete_member(&key).await;
        }
        // The user's key first. Should the member's delete then fail, the answer
        // stands and the member, no longer refreshed, is left to the sweeper; the
        // other way round, a failure would leave the connection in the user's key
        // for good.
        let user_left = self
            .remove_connection(channel, &info.user, &info.client)
            .await?;
        if let Err(e) = self.delete_member(&key).await {
            tracing::warn!(channel, error = %e, "presence member left to expire");
        }
        Ok(user_left)
    }

    /// A connection leaves a channel without having said so (its gateway stopped):
    /// removes it and announces the leave to the channel's subscribers.
    pub async fn depart(&self, channel: &str, info: ClientInfo) -> Result<(), BrokerError> {
        let user_changed = self.leave(channel, &info).await?;
        self.announce_leave(channel, info, user_changed).await
    }

    async fn announce_leave(
        &self,
        channel: &str,
        info: ClientInfo,
        user_changed: bool,
    ) -> Result<(), BrokerError> {
        let leave = PresenceChange { info, user_changed };
        let body = crate::envelope::presence(crate::envelope::Kind::Leave, leave);
        self.js
            .client()
            .publish(self.subjects.live(channel), body)
            .await
            .map_err(unavailable)?;
        metrics::counter!("switchboard_presence_leaves_emitted_total").increment(1);
        Ok(())
    }

    /// Deletes a member; false if it was not there.
    async fn delete_member(&self, key: &str) -> Result<bool, BrokerError> {
        let subject = format!("{}{key}", self.members.prefix);
        for _ in 0..CAS_ATTEMPTS {
            let message = match self
                .members
                .stream
                .direct_get_last_for_subject(subject.as_str())
                .await
            {
                Ok(m) => m,
                Err(e) if e.kind() == DirectGetErrorKind::NotFound => return Ok(false),
                Err(e) => return Err(unavailable(e)),
            };
            // Refreshed between the read and the delete: read again.
            if self
                .members
                .delete_message(&self.js, message.sequence)
                .await?
            {
                return Ok(true);
            }
        }
        Err(BrokerError::Unavailable(format!(
            "presence member {key} kept changing"
        )))
    }

    /// Adds a connection to its user's key. Returns whether the key was created:
    /// the user's first connection in the channel (always, for an anonymous one).
    async fn add_connection(
        &self,
        channel: &str,
        user: &str,
        client: &str,
    ) -> Result<bool, BrokerError> {
        if user.is_empty() {
            return Ok(true);
        }
        let key = user_key(channel, user);
        for _ in 0..CAS_ATTEMPTS {
            let Some(entry) = self.connections_entry(&key).await? else {
                match self
                    .users
                    .store
                    .create(&key, connections_value(&[client.to_owned()]))
                    .await
                {
                    Ok(_) => return Ok(true),
                    Err(e) if e.kind() == CreateErrorKind::AlreadyExists => continue,
                    Err(e) => return Err(unavailable(e)),
                }
            };
            let mut clients = connections_of(&entry.value);
            if clients.iter().any(|c| c == client) {
                // A retried join (the first answer was lost): it was the user's
                // first connection if it is still the only one.
                return Ok(clients.len() == 1);
            }
            clients.push(client.to_owned());
            if self
                .replace_connections(&key, &clients, entry.revision)
                .await?
            {
                return Ok(false);
            }
        }
        Err(kept_changing(channel))
    }

    /// Removes a connection from its user's key. Returns whether the key went
    /// with it: the user's last connection in the channel (always, for an
    /// anonymous one).
    async fn remove_connection(
        &self,
        channel: &str,
        user: &str,
        client: &str,
    ) -> Result<bool, BrokerError> {
        if user.is_empty() {
            return Ok(true);
        }
        let key = user_key(channel, user);
        for _ in 0..CAS_ATTEMPTS {
            let Some(entry) = self.connections_entry(&key).await? else {
                return Ok(false);
            };
            let mut clients = connections_of(&entry.value);
            let before = clients.len();
            clients.retain(|c| c != client);
            if clients.len() == before {
                return Ok(false);
            }
            if clients.is_empty() {
                if self.users.delete_message(&self.js, entry.revision).await? {
                    return Ok(true);
                }
                continue;
            }
            if self
                .replace_connections(&key, &clients, entry.revision)
                .await?
            {
                return Ok(false);
            }
        }
        Err(kept_changing(channel))
    }

    /// A user's key, if it holds connections.
    async fn connections_entry(&self, key: &str) -> Result<Option<kv::Entry>, BrokerError> {
        let entry = self.users.store.entry(key).await.map_err(unavailable)?;
        Ok(entry.filter(|e| e.operation == kv::Operation::Put))
    }

    /// Writes a user's connections if the key is still at `revision`; `false`
    /// if somebody changed it meanwhile.
    async fn replace_connections(
        &self,
        key: &str,
        clients: &[String],
        revision: u64,
    ) -> Result<bool, BrokerError> {
        match self
            .users
            .store
            .update(key, connections_value(clients), revision)
            .await
        {
            Ok(_) => Ok(true),
            Err(e) if e.kind() == UpdateErrorKind::WrongLastRevision => Ok(false),
            Err(e) => Err(unavailable(e)),
        }
    }

    /// Counts of a channel's members and distinct users (anonymous connections
    /// count as one): three requests, whatever the channel's size (NATS counts
    /// the keys).
    pub async fn stats(&self, channel: &str) -> Result<PresenceStats, BrokerError> {
        let chan = token(channel);
        let member_keys = format!("{chan}.*.*");
        let user_keys = format!("{chan}.*");
        let anonymous_keys = format!("{chan}.{}.*", token(""));
        let (clients, users, anonymous) = tokio::try_join!(
            self.members.count(&self.js, &member_keys),
            self.users.count(&self.js, &user_keys),
            self.members.count(&self.js, &anonymous_keys),
        )?;
        Ok(PresenceStats {
            num_clients: clients,
            num_users: users + u32::from(anonymous > 0),
        })
    }

    /// Members in the bucket and users present, over every channel.
    pub async fn totals(&self) -> Result<(u64, u64), BrokerError> {
        let (members, users) = tokio::try_join!(self.members.keys(), self.users.keys())?;
        Ok((members, users))
    }

    /// Up to `limit` of a channel's members, from position `start` (0 for the
    /// first page). Members come in the order they were last written; one
    /// refreshed while the pages are read may appear on two pages, so callers
    /// that gather every page keep one per client id.
    pub async fn page(
        &self,
        channel: &str,
        start: u64,
        limit: usize,
    ) -> Result<MemberPage, BrokerError> {
        let start = DeliverPolicy::ByStartSequence {
            start_sequence: start.max(1),
        };
        let filter = format!("{}{}.*.*", self.members.prefix, token(channel));
        let consumer = self.members.reader(start, filter).await?;
        let pending = consumer.cached_info().num_pending as usize;
        let read = self
            .read_page(&consumer, pending.min(limit + 1), limit)
            .await;
        self.members.drop_reader(&consumer).await;
        read
    }

    async fn read_page(
        &self,
        consumer: &jetstream::consumer::PullConsumer,
        wanted: usize,
        limit: usize,
    ) -> Result<MemberPage, BrokerError> {
        let mut page = MemberPage::default();
        if wanted == 0 {
            return Ok(page);
        }
        let mut batch = consumer
            .fetch()
            .max_messages(wanted)
            .messages()
            .await
            .map_err(unavailable)?;
        while let Some(message) = batch.next().await {
            let message = message.map_err(unavailable)?;
            let sequence = message.info().map_err(unavailable)?.stream_sequence;
            if page.members.len() == limit {
                page.next = Some(sequence);
                break;
            }
            if let Ok(info) = presence_info::decode(&message.payload) {
                page.members.push(info);
            }
        }
        Ok(page)
    }

    /// A channel's members, at most [`MAX_LISTED`], one per client id.
    pub async fn members(&self, channel: &str) -> Result<HashMap<String, ClientInfo>, BrokerError> {
        let mut members = HashMap::new();
        let mut start = 0;
        while members.len() < MAX_LISTED {
            let page = self.page(channel, start, LIST_PAGE).await?;
            for m in page.members {
                members.insert(m.client.clone(), m);
            }
            match page.next {
                Some(next) => start = next,
                None => break,
            }
        }
        Ok(members)
    }

    /// Members not refreshed within the TTL, at most `limit` of them, oldest
    /// first. They are the stream's oldest messages: an ephemeral consumer reads
    /// from the first one, in batches, until one written within the TTL.
    pub async fn stale(&self, limit: usize) -> Result<Vec<StaleMember>, BrokerError> {
        let cutoff = SystemTime::now() - self.ttl;
        let consumer = self
            .members
            .reader(DeliverPolicy::All, String::new())
            .await?;
        let read = self.read_stale(&consumer, cutoff, limit).await;
        self.members.drop_reader(&consumer).await;
        read
    }

    async fn read_stale(
        &self,
        consumer: &jetstream::consumer::PullConsumer,
        cutoff: SystemTime,
        limit: usize,
    ) -> Result<Vec<StaleMember>, BrokerError> {
        const FETCH: usize = 1_000;
        let mut stale = Vec::new();
        while stale.len() < limit {
            let mut batch = consumer
                .fetch()
                .max_messages(FETCH.min(limit - stale.len()))
                .messages()
                .await
                .map_err(unavailable)?;
            let mut read = 0;
            while let Some(message) = batch.next().await {
                let message = message.map_err(unavailable)?;
                read += 1;
                let info = message.info().map_err(unavailable)?;
                let written: SystemTime = info.published.into();
                if written > cutoff {
                    return Ok(stale);
                }
                let sequence = info.stream_sequence;
                let key = &message.subject[self.members.prefix.len()..];
                let mut tokens = key.split('.');
                let (Some(channel), Some(_user), Some(_client), None) =
                    (tokens.next(), tokens.next(), tokens.next(), tokens.next())
                else {
                    continue; // not a member: the sweeper's lease
                };
                let (Ok(info), Some(channel)) = (
                    presence_info::decode(&message.payload),
                    Subjects::channel_of_token(channel),
                ) else {
                    continue;
                };
                stale.push(StaleMember {
                    channel,
                    info,
                    sequence,
                });
            }
            if read == 0 {
                break; // the end of the stream
            }
        }
        Ok(stale)
    }

    /// Deletes a stale member if nobody refreshed or removed it since it was
    /// found, and announces its leave on the channel. Returns whether this call
    /// did it: with several sweepers, exactly one does. A failure after the
    /// delete hands back the unfinished [`Departure`], to be [finished] later.
    ///
    /// [finished]: PresenceBucket::finish
    pub async fn expire(&self, member: StaleMember) -> Result<bool, Unfinished> {
        match self.members.delete_message(&self.js, member.sequence).await {
            Ok(true) => {}
            Ok(false) => return Ok(false),
            Err(error) => {
                return Err(Unfinished {
                    error,
                    departure: None,
                })
            }
        }
        let mut departure = Departure {
            channel: member.channel,
            info: member.info,
            user_changed: None,
        };
        match self.finish(&mut departure).await {
            Ok(()) => Ok(true),
            Err(error) => Err(Unfinished {
                error,
                departure: Some(departure),
            }),
        }
    }

    /// Takes a deleted member's connection out of its user's key (once) and
    /// announces its leave.
    pub async fn finish(&self, departure: &mut Departure) -> Result<(), BrokerError> {
        let user_changed = match departure.user_changed {
            Some(changed) => changed,
            None => {
                let info = &departure.info;
                let changed = self
                    .remove_connection(&departure.channel, &info.user, &info.client)
                    .await?;
                departure.user_changed = Some(changed);
                changed
            }
        };
        self.announce_leave(&departure.channel, departure.info.clone(), user_changed)
            .await
    }
}

/// A member the sweeper deleted whose departure is not finished: its user's key
/// and its leave announcement.
#[derive(Debug)]
pub struct Departure {
    channel: String,
    info: ClientInfo,
    /// Known once the user's key is updated.
    user_changed: Option<bool>,
}

/// Why an expiry did not finish, and what is left of it.
#[derive(Debug)]
pub struct Unfinished {
    pub error: BrokerError,
    /// `Some` when the member is already deleted: finish it later, or its
    /// connection stays in its user's key.
    pub departure: Option<Departure>,
}

impl KvPresence {
    /// Opens the buckets, starts refreshing this gateway's members every third of
    /// the TTL, and takes part in sweeping the members of gateways that died
    /// (`node` names this gateway in the sweep lease).
    pub async fn open(
        js: &jetstream::Context,
        prefix: &str,
        ttl: Duration,
        replicas: usize,
        node: String,
    ) -> Result<Arc<KvPresence>, NatsError> {
        let presence = Arc::new(KvPresence {
            bucket: Arc::new(PresenceBucket::open(js, prefix, ttl, replicas).await?),
            local: Mutex::new(HashMap::new()),
        });
        tokio::spawn(refresh(Arc::downgrade(&presence), ttl / 3));
        tokio::spawn(crate::sweeper::run_while(
            Arc::downgrade(&presence.bucket),
            node,
        ));
        Ok(presence)
    }
}

async fn refresh(presence: Weak<KvPresence>, every: Duration) {
    let mut ticker = tokio::time::interval(every.max(Duration::from_millis(100)));
    ticker.tick().await;
    loop {
        ticker.tick().await;
        let Some(p) = presence.upgrade() else { return };
        let members: Vec<(String, Bytes)> = lock(&p.local)
            .iter()
            .map(|(key, (_, value))| (key.clone(), value.clone()))
            .collect();
        for (key, value) in members {
            // A member removed meanwhile must not be put back.
            if !lock(&p.local).contains_key(&key) {
                continue;
            }
            if let Err(e) = p.bucket.put_raw(&key, value).await {
                tracing::warn!(error = %e, "presence refresh failed");
                break;
            }
        }
        metrics::gauge!("switchboard_presence_local_members").set(lock(&p.local).len() as f64);
    }
}

#[async_trait]
impl PresenceStore for KvPresence {
    async fn add(&self, channel: &str, info: ClientInfo) -> Result<bool, BrokerError> {
        let key = member_key(channel, &info);
        lock(&self.local).insert(key, (channel.to_owned(), member_value(info.clone())));
        self.bucket.join(channel, info).await
    }

    async fn remove(&self, channel: &str, member: &ClientInfo) -> Result<bool, BrokerError> {
        lock(&self.local).remove(&member_key(channel, member));
        self.bucket.leave(channel, member).await
    }

    async fn get(&self, channel: &str) -> Result<HashMap<String, ClientInfo>, BrokerError> {
        self.bucket.members(channel).await
    }

    async fn stats(&self, channel: &str) -> Result<PresenceStats, BrokerError> {
        self.bucket.stats(channel).await
    }

    async fn node_gone(&self) -> Result<(), BrokerError> {
        let left: Vec<(String, Bytes)> = lock(&self.local).drain().map(|(_, m)| m).collect();
        for (channel, value) in left {
            let Ok(info) = presence_info::decode(&value) else {
                continue; // encoded by this process: cannot happen
            };
            self.bucket.depart(&channel, info).await?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_are_tokens_that_cannot_collide() {
        let info = ClientInfo {
            user: String::new(),
            client: "a.b".into(),
            ..Default::default()
        };
        let key = member_key("chat:1", &info);
        assert_eq!(key.split('.').count(), 3, "{key}");
        assert!(key.contains("._."), "anonymous users get a token: {key}");
        assert_eq!(user_key("chat:1", "").split('.').count(), 2);
        assert_ne!(token(""), token("_"));
    }

    #[test]
    fn connections_round_trip() {
        let clients = vec!["c1".to_owned(), "c2".to_owned()];
        assert_eq!(connections_of(&connections_value(&clients)), clients);
        assert!(connections_of(b"").is_empty());
    }
}
