//! [`PresenceBucket`]: the stateless store over both buckets, and what a
//! connection does to it: join, refresh, leave, or depart unannounced.

use std::time::Duration;

use async_nats::jetstream::{self, kv};
use bytes::Bytes;
use switchboard_core::{BrokerError, ClientInfo, PresenceChange};

use super::bucket::{Bucket, CAS_ATTEMPTS};
use super::keys::{member_key, member_value};
use super::users::Users;
use crate::envelope::Kind;
use crate::subject::Subjects;
use crate::{unavailable, NatsError};

/// The members bucket's max age, in presence TTLs: a backstop should no sweeper run.
const BACKSTOP_TTLS: u32 = 4;

/// The presence buckets: stateless operations any replica can serve.
pub struct PresenceBucket {
    pub(super) members: Bucket,
    pub(super) users: Users,
    js: jetstream::Context,
    ttl: Duration,
    subjects: Subjects,
    /// Webhooks, told of the joins and leaves decided here.
    hooks: crate::hooks::Finder,
}

impl PresenceBucket {
    /// Opens (or creates) the buckets `<prefix>-presence` and
    /// `<prefix>-presence-users` for the given TTL.
    pub async fn open(
        js: &jetstream::Context,
        prefix: &str,
        ttl: Duration,
        replicas: usize,
    ) -> Result<PresenceBucket, NatsError> {
        // The backstop age leaves a sweeper that takes the lease over from one that
        // died (after half a TTL, on top of the TTL) time to announce every leave:
        // at twice the TTL, the bucket itself dropped the members of a dead gateway
        // before the second sweeper reached them, and their leaves were never sent.
        let members = Bucket::open(
            js,
            format!("{prefix}-presence"),
            ttl * BACKSTOP_TTLS,
            replicas,
        )
        .await?;
        let users = Users::open(js, prefix, replicas).await?;
        Ok(PresenceBucket {
            members,
            users,
            js: js.clone(),
            ttl,
            subjects: Subjects::new(prefix),
            hooks: crate::hooks::Finder::new(js, prefix),
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
        let joined = self.users.add(channel, &user, &client).await?;
        tracing::debug!(channel, client, joined, "presence join");
        Ok(joined)
    }

    /// Re-asserts a member (its gateway is alive); adds it if it is not there.
    pub async fn refresh(&self, channel: &str, info: ClientInfo) -> Result<(), BrokerError> {
        let key = member_key(channel, &info);
        tracing::debug!(channel, client = info.client, "presence refresh");
        self.put_raw(&key, member_value(info)).await
    }

    /// Refreshes a member whose node may have been away longer than the TTL: if
    /// the store lost it (the sweep expired it and announced its leave), it joins
    /// again: its user's key and its join announced. Returns whether it had to.
    pub async fn rejoin(&self, channel: &str, info: ClientInfo) -> Result<bool, BrokerError> {
        let key = member_key(channel, &info);
        self.rejoin_raw(channel, &key, member_value(info)).await
    }

    /// [`PresenceBucket::rejoin`] of a member's key as it was encoded once.
    pub(super) async fn rejoin_raw(
        &self,
        channel: &str,
        key: &str,
        value: Bytes,
    ) -> Result<bool, BrokerError> {
        let store = &self.members.store;
        let mut created = false;
        for _ in 0..CAS_ATTEMPTS {
            if self.members.create(key, value.clone()).await?.is_some() {
                created = true;
                break;
            }
            // Still there: refreshed by the revision read, not by a blind put. A
            // sweeper may be expiring it right now; should its delete come first,
            // the update fails and the member is created again, with its join,
            // rather than put back with its leave announced and no join.
            let Some(entry) = self.members.entry(key).await? else {
                continue;
            };
            match store.update(key, value.clone(), entry.revision).await {
                Ok(_) => {
                    tracing::debug!(channel, key, "presence refresh (lapsed)");
                    return Ok(false);
                }
                Err(e) if e.kind() == kv::UpdateErrorKind::WrongLastRevision => {}
                Err(e) => return Err(unavailable(e)),
            }
        }
        if !created {
            return Err(BrokerError::Unavailable(format!(
                "presence member {key} kept changing"
            )));
        }
        let info = crate::envelope::presence_info::decode(&value)
            .map_err(|e| BrokerError::Internal(format!("a member's own value: {e}")))?;
        let user_changed = self.users.add(channel, &info.user, &info.client).await?;
        tracing::info!(
            channel,
            client = info.client,
            "a member expired while its node was away joins again"
        );
        let join = PresenceChange { info, user_changed };
        self.announce(channel, Kind::Join, join, String::new())
            .await?;
        Ok(true)
    }

    /// Puts a member's key as it was encoded once, for a gateway that keeps it so.
    pub(super) async fn put_raw(&self, key: &str, value: Bytes) -> Result<(), BrokerError> {
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
            let left = self.delete_member(&key).await?;
            tracing::debug!(channel, client = info.client, left, "presence leave");
            return Ok(left);
        }
        // The user's key first. Should the member's delete then fail, the answer
        // stands and the member, no longer refreshed, is left to the sweeper; the
        // other way round, a failure would leave the connection in the user's key
        // for good.
        let user_left = self.users.remove(channel, &info.user, &info.client).await?;
        match self.delete_member(&key).await {
            Ok(deleted) => {
                tracing::debug!(
                    channel,
                    client = info.client,
                    user_left,
                    deleted,
                    "presence leave"
                )
            }
            Err(e) => {
                tracing::warn!(channel, error = %e, "presence member left to expire");
                return Ok(user_left);
            }
        }
        // Once more now that the member is gone: a sweeper undoing its leave may
        // have put the connection back between the two (it found the member still
        // there), and would leave it in the user's key for good. A sweeper that
        // looks after the delete finds the member gone and puts nothing back.
        let put_back = self.users.remove(channel, &info.user, &info.client).await?;
        Ok(user_left || put_back)
    }

    /// A connection leaves a channel without having said so (its gateway stopped):
    /// removes it and announces the leave to the channel's subscribers.
    pub async fn depart(&self, channel: &str, info: ClientInfo) -> Result<(), BrokerError> {
        let user_changed = self.leave(channel, &info).await?;
        self.announce_leave(channel, info, user_changed).await
    }

    pub(super) async fn announce_leave(
        &self,
        channel: &str,
        info: ClientInfo,
        user_changed: bool,
    ) -> Result<(), BrokerError> {
        let leave = PresenceChange { info, user_changed };
        self.announce(channel, Kind::Leave, leave, String::new())
            .await
    }

    /// Publishes a join or leave on the channel's live subject, for the gateways
    /// to deliver; `departure` is the id of a sweeper's announcement (see
    /// `Envelope.departure`), empty for none.
    pub(super) async fn announce(
        &self,
        channel: &str,
        kind: Kind,
        change: PresenceChange,
        departure: String,
    ) -> Result<(), BrokerError> {
        let user = change.user_changed.then(|| change.info.user.clone());
        let body = crate::envelope::departure(kind, change, departure.clone());
        self.js
            .client()
            .publish(self.subjects.live(channel), body)
            .await
            .map_err(unavailable)?;
        if let Some(user) = user {
            let joined = matches!(kind, Kind::Join);
            self.hooks.report(channel, joined, &user, &departure).await;
        }
        match kind {
            Kind::Leave => metrics::counter!("switchboard_presence_leaves_emitted_total"),
            _ => metrics::counter!("switchboard_presence_rejoins_emitted_total"),
        }
        .increment(1);
        Ok(())
    }

    /// Deletes a member; false if it was not there.
    async fn delete_member(&self, key: &str) -> Result<bool, BrokerError> {
        for _ in 0..CAS_ATTEMPTS {
            let Some(entry) = self.members.entry(key).await? else {
                return Ok(false);
            };
            // Refreshed between the read and the delete: read again.
            if self.members.delete_message(entry.revision).await? {
                return Ok(true);
            }
        }
        Err(BrokerError::Unavailable(format!(
            "presence member {key} kept changing"
        )))
    }
}
