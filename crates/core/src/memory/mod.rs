//! The embedded mode's broker and presence store: one process, no other service,
//! the same semantics as the clustered ones.

mod broker;
mod presence;

pub use broker::{MemoryBroker, MemoryBrokerConfig};
pub use presence::MemoryPresence;
