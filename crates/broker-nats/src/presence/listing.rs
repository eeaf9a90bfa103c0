//! A channel's presence as callers read it: counts, pages, the whole list.
//!
//! Members and users go by deleting their message, so the subjects matching
//! `<channel>.*.*` are exactly the channel's members: NATS counts them without
//! sending them, and a filtered consumer pages through them.

use std::collections::HashMap;

use async_nats::jetstream;
use async_nats::jetstream::consumer::DeliverPolicy;
use futures::StreamExt;
use switchboard_core::{BrokerError, ClientInfo, PresenceStats};

use super::keys::token;
use super::store::PresenceBucket;
use crate::envelope::presence_info;
use crate::unavailable;

/// Most members listed for one channel by [`PresenceBucket::members`].
const MAX_LISTED: usize = 100_000;
/// Members read per request when listing a whole channel.
const LIST_PAGE: usize = 10_000;

/// One page of a channel's members.
#[derive(Debug, Default)]
pub struct MemberPage {
    pub members: Vec<ClientInfo>,
    /// Where the next page starts; `None` on the last page.
    pub next: Option<u64>,
}

impl PresenceBucket {
    /// Counts of a channel's members and distinct users (anonymous connections
    /// count as one): three requests, whatever the channel's size (NATS counts
    /// the keys).
    pub async fn stats(&self, channel: &str) -> Result<PresenceStats, BrokerError> {
        let chan = token(channel);
        let member_keys = format!("{chan}.*.*");
        let anonymous_keys = format!("{chan}.{}.*", token(""));
        let (clients, users, anonymous) = tokio::try_join!(
            self.members.count(&member_keys),
            self.users.count(channel),
            self.members.count(&anonymous_keys),
        )?;
        Ok(PresenceStats {
            num_clients: clients,
            num_users: users + u32::from(anonymous > 0),
        })
    }

    /// Members in the bucket and users present, over every channel.
    pub async fn totals(&self) -> Result<(u64, u64), BrokerError> {
        let (members, users) = tokio::try_join!(self.members.keys(), self.users.total())?;
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
        let read = read_page(&consumer, pending.min(limit + 1), limit).await;
        self.members.drop_reader(&consumer).await;
        read
    }

    /// A channel's members, at most `MAX_LISTED` (100,000), one per client id.
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
}

/// Reads `wanted` messages: `limit` members and, past them, where the next
/// page starts.
async fn read_page(
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
