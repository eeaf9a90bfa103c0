//! The users bucket: one key per user present in a channel, valued with the
//! user's connections there. It changes only by compare-and-set, so that
//! exactly one call sees a user's first connection join and exactly one its
//! last leave, whichever gateways they are on.
//!
//! Anonymous connections (user "") have no key: nothing tells them apart, so
//! each joins and leaves as its own user, and one key shared by all of them
//! would make every join rewrite a value that grows with their number.

use std::time::Duration;

use async_nats::jetstream;
use async_nats::jetstream::kv::{self, CreateErrorKind, UpdateErrorKind};
use switchboard_core::BrokerError;

use super::bucket::{Bucket, CAS_ATTEMPTS};
use super::keys::{connections_of, connections_value, token, user_key};
use crate::{unavailable, NatsError};

/// `<prefix>-presence-users`.
pub(super) struct Users(Bucket);

fn kept_changing(channel: &str) -> BrokerError {
    BrokerError::Unavailable(format!("presence of a user in {channel} kept changing"))
}

impl Users {
    pub(super) async fn open(
        js: &jetstream::Context,
        prefix: &str,
        replicas: usize,
    ) -> Result<Users, NatsError> {
        // Users keys live until their last connection leaves (or is swept).
        let name = format!("{prefix}-presence-users");
        Ok(Users(
            Bucket::open(js, name, Duration::ZERO, replicas).await?,
        ))
    }

    /// Users present in a channel, anonymous ones not counted.
    pub(super) async fn count(&self, channel: &str) -> Result<u32, BrokerError> {
        self.0.count(&format!("{}.*", token(channel))).await
    }

    /// Users present, over every channel.
    pub(super) async fn total(&self) -> Result<u64, BrokerError> {
        self.0.keys().await
    }

    /// Adds a connection to its user's key. Returns whether the key was created:
    /// the user's first connection in the channel (always, for an anonymous one).
    pub(super) async fn add(
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
                    .0
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
    pub(super) async fn remove(
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
                if self.0.delete_message(entry.revision).await? {
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
        let entry = self.0.store.entry(key).await.map_err(unavailable)?;
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
            .0
            .store
            .update(key, connections_value(clients), revision)
            .await
        {
            Ok(_) => Ok(true),
            Err(e) if e.kind() == UpdateErrorKind::WrongLastRevision => Ok(false),
            Err(e) => Err(unavailable(e)),
        }
    }
}
