//! Presence shared by every gateway: two JetStream key-value buckets.
//!
//! - `<prefix>-presence` holds one key per member, `<channel>.<user>.<client>`
//!   (each a base64url token), valued with the member's client info. Gateways
//!   re-put their members well inside the presence TTL; a member not refreshed
//!   within it belongs to a gateway that died: the [`sweeper`] deletes it and
//!   announces its leave. The bucket keeps entries for four times the TTL, a
//!   backstop should no sweeper run (long enough for a sweeper that takes over
//!   from one that died to announce every leave first).
//! - `<prefix>-presence-users` holds one key per user present in a channel,
//!   `<channel>.<user>`, valued with the ids of the user's connections there,
//!   changed only by compare-and-set.
//!
//! Members and users go by deleting their message from the stream, not with a
//! key-value delete marker, so that the subjects matching `<channel>.*.*` are
//! exactly the channel's members: stats are three requests whatever the channel's
//! size, and the sweeper reads only the overdue members (the oldest messages).
//!
//! # Layout
//! Each module uses only the ones listed before it.
//! - `keys`: key tokens and the values the buckets hold.
//! - `bucket`: one bucket's stream and the raw JetStream requests on it
//!   (delete by sequence, count by filter, ephemeral readers).
//! - `users`: the users bucket and its one compare-and-set loop: a user's first
//!   join and last leave, exactly once.
//! - `store`: [`PresenceBucket`], the stateless store (the presence service
//!   serves it): join, refresh, leave, depart.
//! - `listing`: counts and pages of a channel's members.
//! - `expiry`: overdue members found and expired, departures finished.
//! - [`sweeper`]: the loop that expires them, one replica at a time by lease.
//! - `gateway`: [`KvPresence`], a gateway on the buckets directly, refreshing
//!   only its own members.

pub(crate) mod bucket;
mod expiry;
mod gateway;
mod keys;
mod listing;
mod store;
pub mod sweeper;
mod users;

pub use expiry::{Rejoin, StaleMember, Unfinished};
pub use gateway::KvPresence;
pub use listing::MemberPage;
pub use store::PresenceBucket;
