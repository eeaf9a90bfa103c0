//! Members nobody refreshed within the TTL: found, deleted, announced.
//!
//! Overdue members are the members stream's oldest messages (a refresh rewrites
//! a member's message at the end), so finding them reads only them. Each delete
//! names the message that was found, so a member refreshed or removed since is
//! left alone, and with several sweepers exactly one expires each member.

use std::time::SystemTime;

use async_nats::jetstream;
use async_nats::jetstream::consumer::DeliverPolicy;
use futures::StreamExt;
use switchboard_core::{BrokerError, ClientInfo};

use super::store::PresenceBucket;
use crate::envelope::presence_info;
use crate::subject::Subjects;
use crate::unavailable;

/// A member whose refresh is overdue, as the sweeper finds it.
pub struct StaleMember {
    pub channel: String,
    pub info: ClientInfo,
    sequence: u64,
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
        match self.members.delete_message(member.sequence).await {
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
                    .users
                    .remove(&departure.channel, &info.user, &info.client)
                    .await?;
                departure.user_changed = Some(changed);
                changed
            }
        };
        self.announce_leave(&departure.channel, departure.info.clone(), user_changed)
            .await
    }
}
