//! Publications read straight out of a JSON frame, without building a `Reply`.
//!
//! A receiver decodes one frame per delivery, and a full `Reply` is 1.3 KiB with
//! a `String` and a `Bytes` to allocate for every publication. So the two records
//! a receiver sees all the time, a ping (`{}`) and a publication push
//! (`{"push":{"channel":"…","pub":{"data":…,"offset":…}}}`), are read here with
//! their data borrowed from the frame. Anything else (a reply, another push, a
//! publication with `info` or `tags`, an escaped string, a malformed record) fails
//! this reading and takes the full decode instead, so both ways give the same
//! records, errors included.
//!
//! Why this stays here and not in the protocol crate: it is not a decoder of
//! replies but a peek at two record shapes, which hands out borrowed data and
//! gives up on anything else, a load generator's trade measured when it came in
//! (commit e169368). The framing (`Encoding::split_replies`, with its bound) and the
//! full decode (`Encoding::decode_reply`) are the protocol crate's, the same code
//! `Client::next_replies` runs.

use std::fmt;

use serde::de::{self, Deserialize, Deserializer, MapAccess, Visitor};
use serde_json::value::RawValue;
use switchboard_protocol::centrifugo::codec::is_ping;
use switchboard_protocol::centrifugo::pb::Reply;
use switchboard_protocol::centrifugo::Encoding;

use super::centrifugo::MAX_REPLIES_PER_FRAME;
use super::{undecodable, ClientError};

/// One record of a frame.
pub enum Record<'a> {
    Ping,
    Publication {
        offset: u64,
        data: &'a [u8],
    },
    /// Any other record, decoded in full (never a ping).
    Other(Box<Reply>),
}

impl Record<'_> {
    /// The offset and data of a publication push.
    pub fn publication(&self) -> Option<(u64, &[u8])> {
        match self {
            Record::Ping => None,
            Record::Publication { offset, data } => Some((*offset, data)),
            Record::Other(reply) => reply
                .push
                .as_ref()
                .and_then(|p| p.r#pub.as_ref())
                .map(|p| (p.offset, &p.data[..])),
        }
    }
}

/// The records of a JSON frame, at most [`MAX_REPLIES_PER_FRAME`] of them.
pub fn records(frame: &[u8]) -> Result<Vec<Record<'_>>, ClientError> {
    records_at_most(frame, MAX_REPLIES_PER_FRAME)
}

/// The protocol crate splits the frame (with the bound `Encoding::decode_replies`
/// is given) and decodes whatever is not a ping or a plain publication; all that is
/// done here is the peek, reading a record as one of those two without a `Reply`.
fn records_at_most(frame: &[u8], max: usize) -> Result<Vec<Record<'_>>, ClientError> {
    let mut out = Vec::new();
    for record in Encoding::Json.split_replies(frame, max) {
        let record = record.map_err(undecodable)?;
        out.push(match serde_json::from_slice::<Lean<'_>>(record) {
            Ok(Lean(None)) => Record::Ping,
            Ok(Lean(Some((offset, data)))) => Record::Publication { offset, data },
            Err(_) => {
                let reply = Encoding::Json.decode_reply(record).map_err(undecodable)?;
                if is_ping(&reply) {
                    Record::Ping
                } else {
                    Record::Other(Box::new(reply))
                }
            }
        });
    }
    Ok(out)
}

/// A ping (`None`) or a publication push's offset and data. Only JSON objects are
/// accepted, each key at most once, no key that a `Reply`, `Push` or
/// `Publication` would take differently or ignore.
struct Lean<'a>(Option<(u64, &'a [u8])>);

fn refuse<E: de::Error>() -> E {
    E::custom("not a ping or a plain publication push")
}

impl<'de> Deserialize<'de> for Lean<'de> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_map(ReplyVisitor)
    }
}

struct ReplyVisitor;

impl<'de> Visitor<'de> for ReplyVisitor {
    type Value = Lean<'de>;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a reply object")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Lean<'de>, A::Error> {
        let mut push: Option<Option<PushOfPub<'de>>> = None;
        while let Some(key) = map.next_key::<&str>()? {
            match key {
                "push" if push.is_none() => push = Some(map.next_value()?),
                _ => return Err(refuse()),
            }
        }
        // `{}` and `{"push":null}` are both the default reply: a ping.
        Ok(Lean(push.flatten().map(|p| (p.0.offset, p.0.data))))
    }
}

/// A push that carries a publication and nothing but its channel.
struct PushOfPub<'a>(Pub<'a>);

impl<'de> Deserialize<'de> for PushOfPub<'de> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_map(PushVisitor)
    }
}

struct PushVisitor;

impl<'de> Visitor<'de> for PushVisitor {
    type Value = PushOfPub<'de>;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a push object")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<PushOfPub<'de>, A::Error> {
        let (mut channel, mut publication) = (false, None);
        while let Some(key) = map.next_key::<&str>()? {
            match key {
                "channel" if !channel => {
                    map.next_value::<&str>()?;
                    channel = true;
                }
                "pub" if publication.is_none() => {
                    publication = Some(map.next_value::<Option<Pub<'de>>>()?)
                }
                _ => return Err(refuse()),
            }
        }
        // A push without a publication is read in full (and skipped by receivers).
        publication.flatten().map(PushOfPub).ok_or_else(refuse)
    }
}

/// A publication with data and offset only (each defaulting as in `Publication`).
struct Pub<'a> {
    offset: u64,
    data: &'a [u8],
}

impl<'de> Deserialize<'de> for Pub<'de> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_map(PubVisitor)
    }
}

struct PubVisitor;

impl<'de> Visitor<'de> for PubVisitor {
    type Value = Pub<'de>;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a publication object")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Pub<'de>, A::Error> {
        let (mut offset, mut data) = (None, None);
        while let Some(key) = map.next_key::<&str>()? {
            match key {
                // Raw, as `switchboard_protocol::centrifugo::json::raw` keeps it (`null` included).
                "data" if data.is_none() => {
                    data = Some(map.next_value::<&'de RawValue>()?.get().as_bytes())
                }
                "offset" if offset.is_none() => offset = Some(map.next_value::<u64>()?),
                _ => return Err(refuse()),
            }
        }
        Ok(Pub {
            offset: offset.unwrap_or(0),
            data: data.unwrap_or_default(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    type Seen = (usize, usize, Vec<(u64, Vec<u8>)>);

    /// Pings, other records and publications of a frame, the full way.
    fn full(frame: &[u8]) -> Option<Seen> {
        let replies = Encoding::Json
            .decode_replies(frame, MAX_REPLIES_PER_FRAME)
            .ok()?;
        let pings = replies.iter().filter(|r| is_ping(r)).count();
        let pubs = replies
            .iter()
            .filter_map(|r| r.push.as_ref()?.r#pub.as_ref())
            .map(|p| (p.offset, p.data.to_vec()))
            .collect();
        Some((pings, replies.len() - pings, pubs))
    }

    fn lean(frame: &[u8]) -> Option<Seen> {
        let records = records(frame).ok()?;
        let pings = records.iter().filter(|r| matches!(r, Record::Ping)).count();
        let pubs = records
            .iter()
            .filter_map(Record::publication)
            .map(|(o, d)| (o, d.to_vec()))
            .collect();
        Some((pings, records.len() - pings, pubs))
    }

    fn borrowed(line: &str) -> bool {
        matches!(
            records(line.as_bytes()).as_deref(),
            Ok([Record::Publication { .. }])
        )
    }

    const FRAMES: &[&str] = &[
        "{}",
        "{\"push\":null}",
        " { } \n\n\t\n{}",
        "{\"push\":{\"channel\":\"chat:lt0\",\"pub\":{\"data\":{\"lt\":[0,1,2],\"p\":\"xx\"},\"offset\":7}}}",
        "{\"push\":{\"pub\":{\"offset\":7,\"data\":{\"a\" : [1, 2]}},\"channel\":\"c\"}}\n{}\n{\"push\":{\"channel\":\"c\",\"pub\":{\"data\":1}}}",
        "{\"push\":{\"channel\":\"c\",\"pub\":{\"data\":null,\"offset\":1}}}",
        "{\"push\":{\"channel\":\"c\",\"pub\":{}}}",
        "{\"push\":{\"channel\":\"c\",\"pub\":null}}",
        "{\"push\":{\"channel\":\"c\"}}",
        "{\"push\":{}}",
        "{\"push\":{\"channel\":\"c\\u0030\",\"pub\":{\"data\":1,\"offset\":2}}}",
        "{\"push\":{\"channel\":\"c\",\"pub\":{\"data\":1,\"offset\":2,\"info\":{\"user\":\"u\",\"client\":\"x\"}}}}",
        "{\"push\":{\"channel\":\"c\",\"pub\":{\"data\":1,\"offset\":2,\"tags\":{\"k\":\"v\"}}}}",
        "{\"push\":{\"channel\":\"c\",\"join\":{\"info\":{\"user\":\"u\",\"client\":\"x\"}}}}",
        "{\"id\":3,\"subscribe\":{\"epoch\":\"e\",\"offset\":4}}",
        "{\"id\":0}",
        "{\"unknown\":1}",
        "{\"push\":{\"channel\":\"c\",\"pub\":{\"data\":1,\"offset\":2}},\"push\":null}",
        "{\"push\":{\"channel\":\"c\",\"channel\":\"d\",\"pub\":{\"data\":1}}}",
        "{\"push\":{\"channel\":\"c\",\"pub\":{\"data\":1,\"offset\":-1}}}",
        "{\"push\":{\"channel\":\"c\",\"pub\":{\"data\":1,\"offset\":null}}}",
        "{\"push\":{\"channel\":5,\"pub\":{\"data\":1}}}",
        "{\"push\":[\"c\",{\"data\":1,\"offset\":2}]}",
        "{\"push\":{\"channel\":\"c\",\"pub\":[1,2]}}",
        "[]",
        "[null]",
        "{} x",
        "{\"push\":",
        "not json",
    ];

    #[test]
    fn every_frame_reads_as_the_full_decode_reads_it() {
        for frame in FRAMES {
            assert_eq!(lean(frame.as_bytes()), full(frame.as_bytes()), "{frame}");
        }
        let all = FRAMES.join("\n");
        assert_eq!(lean(all.as_bytes()), full(all.as_bytes()));
    }

    #[test]
    fn plain_publications_are_borrowed_and_the_rest_decoded_in_full() {
        assert!(borrowed(FRAMES[3]));
        assert!(borrowed(FRAMES[5]));
        for other in [FRAMES[10], FRAMES[11], FRAMES[12]] {
            assert!(!borrowed(other), "{other}");
            assert!(lean(other.as_bytes()).is_some_and(|s| s.2.len() == 1));
        }
        assert!(matches!(records(b"{}").as_deref(), Ok([Record::Ping])));
    }

    #[test]
    fn lean_and_full_reads_share_the_bound() {
        let frame = FRAMES[4].as_bytes();
        for max in 0..5 {
            let lean = records_at_most(frame, max).map(|r| r.len());
            let full = Encoding::Json.decode_replies(frame, max);
            match (lean, full) {
                (Ok(a), Ok(b)) => assert_eq!(a, b.len(), "{max}"),
                (Err(ClientError::Decode(a)), Err(b)) => assert_eq!(a, b.to_string(), "{max}"),
                (lean, full) => panic!("{max}: lean {lean:?}, full {full:?}"),
            }
        }
    }
}
