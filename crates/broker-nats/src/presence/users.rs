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
use async_nats::jetstream::kv::{self, UpdateErrorKind};
use switchboard_core::BrokerError;

use super::bucket::{Bucket, CAS_ATTEMPTS};
use super::keys::{connections_of, connections_value, token, user_key};
use crate::{unavailable, NatsError};

/// `<prefix>-presence-users`.
pub(super) struct Users(Bucket);

/// What a change does to a user's connections, given what they are.
#[derive(Debug, PartialEq)]
enum Edit {
    /// Nothing to write: the answer stands as read.
    Answer(bool),
    /// Write these connections (none: delete the key), then answer.
    Write(Vec<String>, bool),
}

impl Edit {
    /// `client` joins; the answer is whether it is the user's first connection.
    fn add(clients: Option<Vec<String>>, client: &str) -> Edit {
        match clients {
            None => Edit::Write(vec![client.to_owned()], true),
            // A retried join (the first answer was lost): it was the user's first
            // connection if it is still the only one.
            Some(clients) if clients.iter().any(|c| c == client) => {
                Edit::Answer(clients.len() == 1)
            }
            Some(mut clients) => {
                clients.push(client.to_owned());
                Edit::Write(clients, false)
            }
        }
    }

    /// `client` leaves; the answer is whether it was the user's last connection.
    fn remove(clients: Option<Vec<String>>, client: &str) -> Edit {
        let Some(mut clients) = clients else {
            return Edit::Answer(false);
        };
        let before = clients.len();
        clients.retain(|c| c != client);
        match clients.len() {
            n if n == before => Edit::Answer(false),
            0 => Edit::Write(clients, true),
            _ => Edit::Write(clients, false),
        }
    }
}

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
        self.edit_named(channel, user, |clients| Edit::add(clients, client))
            .await
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
        self.edit_named(channel, user, |clients| Edit::remove(clients, client))
            .await
    }

    /// [`Users::remove`] for a sweeper's departure, which may repeat one a sweeper
    /// killed half-way did: a key already gone means the connection was the
    /// user's last.
    pub(super) async fn remove_departed(
        &self,
        channel: &str,
        user: &str,
        client: &str,
    ) -> Result<bool, BrokerError> {
        self.edit_named(channel, user, |clients| match clients {
            None => Edit::Answer(true),
            clients => Edit::remove(clients, client),
        })
        .await
    }

    /// Whether a named user has a connection in `channel`.
    pub(super) async fn present(&self, channel: &str, user: &str) -> Result<bool, BrokerError> {
        if user.is_empty() {
            return Ok(false);
        }
        Ok(self.entry(&user_key(channel, user)).await?.is_some())
    }

    /// [`Users::edit`] for a named user; an anonymous connection is its own user,
    /// so every change to it is its user's (the answer is always true).
    async fn edit_named(
        &self,
        channel: &str,
        user: &str,
        edit: impl Fn(Option<Vec<String>>) -> Edit,
    ) -> Result<bool, BrokerError> {
        if user.is_empty() {
            return Ok(true);
        }
        self.edit(channel, user, edit).await
    }

    /// The compare-and-set loop every change of a user's key goes through: reads
    /// the key's connections (`None`: no key), lets `edit` decide, and writes
    /// only if nobody changed the key since the read; otherwise reads again.
    async fn edit(
        &self,
        channel: &str,
        user: &str,
        edit: impl Fn(Option<Vec<String>>) -> Edit,
    ) -> Result<bool, BrokerError> {
        let key = user_key(channel, user);
        for _ in 0..CAS_ATTEMPTS {
            let entry = self.entry(&key).await?;
            let revision = entry.as_ref().map(|e| e.revision);
            let (clients, answer) = match edit(entry.map(|e| connections_of(&e.value))) {
                Edit::Answer(answer) => return Ok(answer),
                Edit::Write(clients, answer) => (clients, answer),
            };
            if self.write(&key, revision, &clients).await? {
                return Ok(answer);
            }
        }
        Err(kept_changing(channel))
    }

    /// A user's key, if it holds connections.
    async fn entry(&self, key: &str) -> Result<Option<kv::Entry>, BrokerError> {
        let entry = self.0.entry(key).await?;
        Ok(entry.filter(|e| e.operation == kv::Operation::Put))
    }

    /// Writes a user's connections, no connections deleting the key, if the key
    /// is still at `revision` (`None`: still absent); `false` if somebody changed
    /// it meanwhile.
    async fn write(
        &self,
        key: &str,
        revision: Option<u64>,
        clients: &[String],
    ) -> Result<bool, BrokerError> {
        let value = connections_value(clients);
        match (revision, clients.is_empty()) {
            (None, true) => Ok(true),
            (None, false) => Ok(self.0.create(key, value).await?.is_some()),
            // A key's revision is its message's sequence.
            (Some(revision), true) => self.0.delete_message(revision).await,
            (Some(revision), false) => match self.0.store.update(key, value, revision).await {
                Ok(_) => Ok(true),
                Err(e) if e.kind() == UpdateErrorKind::WrongLastRevision => Ok(false),
                Err(e) => Err(unavailable(e)),
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::Edit;

    fn ids(ids: &[&str]) -> Vec<String> {
        ids.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn the_first_connection_creates_the_key_and_a_retry_still_says_so() {
        assert_eq!(Edit::add(None, "a"), Edit::Write(ids(&["a"]), true));
        assert_eq!(Edit::add(Some(ids(&["a"])), "a"), Edit::Answer(true));
        assert_eq!(
            Edit::add(Some(ids(&["a"])), "b"),
            Edit::Write(ids(&["a", "b"]), false)
        );
        assert_eq!(Edit::add(Some(ids(&["a", "b"])), "b"), Edit::Answer(false));
    }

    #[test]
    fn the_last_connection_deletes_the_key_and_an_unknown_one_changes_nothing() {
        assert_eq!(Edit::remove(None, "a"), Edit::Answer(false));
        assert_eq!(Edit::remove(Some(ids(&["b"])), "a"), Edit::Answer(false));
        assert_eq!(
            Edit::remove(Some(ids(&["a", "b"])), "a"),
            Edit::Write(ids(&["b"]), false)
        );
        assert_eq!(
            Edit::remove(Some(ids(&["a"])), "a"),
            Edit::Write(Vec::new(), true)
        );
    }
}
