//! Reads of a channel's stored messages.
//!
//! Offsets are stream sequences: monotonic per channel, not contiguous. JetStream
//! evicts a subject's messages oldest first (by count per subject or by age), so
//! *everything after offset N is still stored* exactly when the message at N is;
//! for N = 0 when the first stored message was stored as the channel's first
//! (see `Envelope.first`). That is the proof a recovery needs.

use async_nats::jetstream::message::StreamMessage;
use async_nats::jetstream::stream::{LastRawMessageErrorKind, Stream};
use switchboard_core::broker::HistoryOptions;
use switchboard_core::{BrokerError, HistoryQuery, HistoryResult, Publication, StreamPosition};

use crate::{envelope, unavailable, Shared};

pub(crate) async fn read(
    shared: &Shared,
    channel: &str,
    query: &HistoryQuery,
    options: HistoryOptions,
) -> Result<HistoryResult, BrokerError> {
    let stream_name = shared.subjects.stream_of(channel);
    let stream = shared.streams.get(&stream_name)?;
    let subject = shared.subjects.stored(channel);
    let epoch = shared.streams.epoch(&stream_name)?;
    let top = last_offset(stream, &subject).await?;
    let position = StreamPosition {
        offset: top,
        epoch: epoch.clone(),
    };
    let after = match &query.since {
        Some(since) => {
            if since.epoch != epoch || since.offset > top {
                return Err(BrokerError::Unrecoverable);
            }
            if since.offset < top {
                prove_complete(stream, &subject, since.offset).await?;
            }
            since.offset
        }
        None => 0,
    };
    let limit = query.limit.unwrap_or(usize::MAX);
    if limit == 0 || after >= top {
        return Ok(HistoryResult {
            publications: Vec::new(),
            position,
        });
    }
    let wanted = if query.reverse { usize::MAX } else { limit };
    let publications = range(stream, &subject, after, top, wanted, options.size).await?;
    let publications = if query.reverse {
        publications.into_iter().rev().take(limit).collect()
    } else {
        publications
    };
    Ok(HistoryResult {
        publications,
        position,
    })
}

/// The offset of the channel's newest stored message; 0 when it has none.
pub(crate) async fn last_offset(stream: &Stream, subject: &str) -> Result<u64, BrokerError> {
    match stream.get_last_raw_message_by_subject(subject).await {
        Ok(m) => Ok(m.sequence),
        Err(e) if e.kind() == LastRawMessageErrorKind::NoMessageFound => Ok(0),
        Err(e) => Err(unavailable(e)),
    }
}

/// The channel's first stored message at or after `from`.
async fn next(
    stream: &Stream,
    subject: &str,
    from: u64,
) -> Result<Option<StreamMessage>, BrokerError> {
    match stream
        .raw_message_builder()
        .sequence(from)
        .next_by_subject(subject)
        .send()
        .await
    {
        Ok(m) => Ok(Some(m)),
        Err(e) if e.kind() == LastRawMessageErrorKind::NoMessageFound => Ok(None),
        Err(e) => Err(unavailable(e)),
    }
}

/// Succeeds when every message of the channel after `offset` is still stored.
pub(crate) async fn prove_complete(
    stream: &Stream,
    subject: &str,
    offset: u64,
) -> Result<(), BrokerError> {
    if offset == 0 {
        return match next(stream, subject, 1).await? {
            None => Ok(()),
            Some(m) if envelope::decode(&m.payload).is_ok_and(|e| e.first) => Ok(()),
            Some(_) => Err(BrokerError::Unrecoverable),
        };
    }
    match stream.raw_message_builder().sequence(offset).send().await {
        Ok(m) if m.subject.as_str() == subject => Ok(()),
        // That sequence belongs to another channel: not a position of this one.
        Ok(_) => Err(BrokerError::Unrecoverable),
        Err(e) if e.kind() == LastRawMessageErrorKind::NoMessageFound => {
            Err(BrokerError::Unrecoverable)
        }
        Err(e) => Err(unavailable(e)),
    }
}

/// The channel's publications with offsets in (`after`, `upto`], at most `limit`.
/// A channel never holds more than `cap` messages, which bounds the reads.
pub(crate) async fn range(
    stream: &Stream,
    subject: &str,
    after: u64,
    upto: u64,
    limit: usize,
    cap: usize,
) -> Result<Vec<Publication>, BrokerError> {
    let mut out = Vec::new();
    let mut cursor = after + 1;
    for _ in 0..=cap {
        if out.len() >= limit {
            break;
        }
        let Some(m) = next(stream, subject, cursor).await? else {
            break;
        };
        if m.sequence > upto {
            break;
        }
        cursor = m.sequence + 1;
        if let Some(p) = publication(&m) {
            out.push(p);
        }
    }
    Ok(out)
}

fn publication(m: &StreamMessage) -> Option<Publication> {
    match envelope::decode(&m.payload) {
        Ok(env) => match envelope::event(env, m.sequence) {
            switchboard_core::ChannelEvent::Publication(p) => Some(p),
            _ => None,
        },
        Err(e) => {
            tracing::warn!(seq = m.sequence, error = %e, "undecodable stored message skipped");
            None
        }
    }
}
