//! Members nobody refreshed within the TTL: found, announced, deleted.
//!
//! Overdue members are the members stream's oldest messages (a refresh rewrites
//! a member's message at the end), so finding them reads only them. A stale
//! member's departure goes in an order that survives a sweeper killed half-way:
//! its connection out of its user's key (idempotent), its leave announced with
//! the departure's id (gateways deliver one leave per id), and only then its
//! message deleted, by the sequence that was found. Until that delete the member
//! stays overdue, so the next sweep (this replica's, or the replica that takes
//! the lease over) does it all again: no member is left behind unannounced, and
//! no leave reaches a client twice. A member refreshed meanwhile (its gateway was
//! alive after all, e.g. frozen and continued) is left in place and its leave
//! undone: its connection goes back into its user's key and a join is announced,
//! with the departure's id (a gateway delivers it only after that leave, never
//! after the connection's own). Should the member leave for real while its leave
//! is undone, the connection is taken out of its user's key again and no join is
//! announced.

use std::time::SystemTime;

use async_nats::jetstream;
use async_nats::jetstream::consumer::DeliverPolicy;
use async_nats::jetstream::kv;
use futures::StreamExt;
use switchboard_core::{BrokerError, ClientInfo, PresenceChange};

use super::store::PresenceBucket;
use crate::envelope::{presence_info, Kind};
use crate::subject::Subjects;
use crate::unavailable;

/// A member whose refresh is overdue, as the sweeper finds it.
pub struct StaleMember {
    pub channel: String,
    pub info: ClientInfo,
    /// Its key in the members bucket.
    key: String,
    sequence: u64,
}

impl StaleMember {
    /// The id its leave is announced with, the same from every sweeper.
    fn departure_id(&self) -> String {
        format!("{}@{}", self.key, self.sequence)
    }
}

/// A leave undone half-way: the member was refreshed after its leave went out,
/// and its connection is not back in its user's key, or its join not announced.
#[derive(Debug)]
pub struct Rejoin {
    channel: String,
    info: ClientInfo,
    /// Its key in the members bucket.
    key: String,
    /// The id of the leave it undoes.
    departure: String,
    /// Known once the user's key is updated.
    user_changed: Option<bool>,
}

impl StaleMember {
    /// The undoing of this member's leave, for a member found refreshed after it
    /// was announced.
    pub fn into_rejoin(self) -> Rejoin {
        Rejoin {
            departure: self.departure_id(),
            channel: self.channel,
            info: self.info,
            key: self.key,
            user_changed: None,
        }
    }
}

/// Why an expiry did not finish.
#[derive(Debug)]
pub struct Unfinished {
    pub error: BrokerError,
    /// `Some` when a leave was undone half-way: [finish] it later. `None`: the
    /// member is still overdue, and the next sweep expires it again.
    ///
    /// [finish]: PresenceBucket::undo_leave
    pub rejoin: Option<Rejoin>,
}

impl From<BrokerError> for Unfinished {
    fn from(error: BrokerError) -> Unfinished {
        Unfinished {
            error,
            rejoin: None,
        }
    }
}

impl PresenceBucket {
    /// Members not refreshed within the TTL, at most `limit` of them, oldest
    /// first. They are the stream's oldest messages: an ephemeral consumer reads
    /// from the first one, in batches, until one written within the TTL.
    pub async fn stale(&self, limit: usize) -> Result<Vec<StaleMember>, BrokerError> {
        let cutoff = SystemTime::now() - self.ttl();
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
                let key = message.subject[self.members.prefix.len()..].to_owned();
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
                    key,
                    sequence,
                });
            }
            if read == 0 {
                break; // the end of the stream
            }
        }
        Ok(stale)
    }

    /// Expires a stale member: [announces](PresenceBucket::announce_departure)
    /// its departure, then deletes its message if nobody refreshed or removed it
    /// since it was found. Returns whether this call deleted it: with several
    /// sweepers, exactly one does (each announces, with the same id). A member
    /// refreshed meanwhile gets its leave undone ([`Unfinished::rejoin`] when that
    /// fails half-way).
    pub async fn expire(&self, member: StaleMember) -> Result<bool, Unfinished> {
        self.announce_departure(&member).await?;
        if self.members.delete_message(member.sequence).await? {
            tracing::debug!(
                channel = member.channel,
                client = member.info.client,
                "presence member expired"
            );
            return Ok(true);
        }
        // Not at that sequence any more: deleted (another sweeper, or the member
        // left), or refreshed (a newer message under its key).
        match self.members.entry(&member.key).await? {
            Some(entry) if entry.revision > member.sequence => {
                tracing::info!(
                    channel = member.channel,
                    client = member.info.client,
                    "a member refreshed while it expired: its leave is undone"
                );
                let mut rejoin = member.into_rejoin();
                match self.undo_leave(&mut rejoin).await {
                    Ok(()) => Ok(false),
                    Err(error) => Err(Unfinished {
                        error,
                        rejoin: Some(rejoin),
                    }),
                }
            }
            _ => Ok(false),
        }
    }

    /// The first half of [`PresenceBucket::expire`], each step safe to repeat:
    /// takes the member's connection out of its user's key and announces its leave
    /// with the departure's id. A sweeper that stops here (killed) leaves the
    /// member overdue, for the next sweep to expire.
    pub async fn announce_departure(&self, member: &StaleMember) -> Result<(), BrokerError> {
        let info = &member.info;
        let user_changed = self
            .users
            .remove_departed(&member.channel, &info.user, &info.client)
            .await?;
        let leave = PresenceChange {
            info: info.clone(),
            user_changed,
        };
        self.announce(&member.channel, Kind::Leave, leave, member.departure_id())
            .await
    }

    /// Undoes a leave: the connection back into its user's key (once), and its join
    /// announced with the id of the leave it undoes. If the member is gone by then
    /// (its connection ended meanwhile), the connection comes out of its user's key
    /// again and nothing is announced: its gateway announces the leave, and a
    /// connection its gateway took out and this put back would stay for good. The
    /// gateway's leave takes the connection out once more after deleting the
    /// member, for an undo that found it still there.
    pub async fn undo_leave(&self, rejoin: &mut Rejoin) -> Result<(), BrokerError> {
        let info = &rejoin.info;
        let user_changed = match rejoin.user_changed {
            Some(changed) => changed,
            None => {
                let changed = self
                    .users
                    .add(&rejoin.channel, &info.user, &info.client)
                    .await?;
                rejoin.user_changed = Some(changed);
                changed
            }
        };
        let entry = self.members.entry(&rejoin.key).await?;
        if !entry.is_some_and(|e| e.operation == kv::Operation::Put) {
            self.users
                .remove(&rejoin.channel, &info.user, &info.client)
                .await?;
            tracing::info!(
                channel = rejoin.channel,
                client = info.client,
                "a member left while its leave was undone: the leave stands"
            );
            return Ok(());
        }
        let join = PresenceChange {
            info: info.clone(),
            user_changed,
        };
        self.announce(&rejoin.channel, Kind::Join, join, rejoin.departure.clone())
            .await
    }
}
