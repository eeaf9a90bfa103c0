//! The embedded mode's broker and presence store: one process, no other service,
//! the same semantics as the clustered ones.

mod broker;
mod hooks;
mod presence;

pub use broker::{MemoryBroker, MemoryBrokerConfig};
pub use hooks::{MemoryHookQueue, MemoryHookState};
pub use presence::MemoryPresence;
