//! What the broker tests share.

use std::sync::Mutex;

use switchboard_core::{ChannelEvent, EventSink};

/// An event sink that keeps every event it receives, for a test to inspect.
#[derive(Default)]
pub struct Events(Mutex<Vec<ChannelEvent>>);

impl EventSink for Events {
    fn on_event(&self, _channel: &str, event: ChannelEvent) {
        self.0.lock().unwrap().push(event);
    }
    fn has_subscribers(&self, _channel: &str) -> bool {
        true
    }
    fn reset(&self, _channel: &str) {}
}

impl Events {
    /// What the events received so far map to, in arrival order, skipping `None`s.
    pub fn collect<T>(&self, pick: impl FnMut(&ChannelEvent) -> Option<T>) -> Vec<T> {
        self.0.lock().unwrap().iter().filter_map(pick).collect()
    }
}
