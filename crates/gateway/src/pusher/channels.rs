//! Pusher channel names → the core channels of an app's space, and back.

use switchboard_core::broker::HistoryOptions;
use switchboard_core::channel::NAMESPACE_BOUNDARY;
use switchboard_core::namespace::NamespaceOptions;
use switchboard_protocol::pusher::channel::{self as names, Kind, NameError};

use crate::config::pusher::Space;
use crate::config::PusherApp;
use crate::node::history_options;

/// A Pusher channel of one app, located in the core.
#[derive(Debug, Clone)]
pub struct Located {
    /// The core channel: `~<app>~<space>:<name>`.
    pub internal: String,
    pub kind: Kind,
    pub options: NamespaceOptions,
}

impl Located {
    pub fn history(&self) -> Option<HistoryOptions> {
        history_options(&self.options)
    }
}

fn space_of(kind: Kind) -> Space {
    match (kind.is_presence(), kind.is_cache()) {
        (true, true) => Space::PresenceCache,
        (true, false) => Space::Presence,
        (false, true) => Space::Cache,
        (false, false) => Space::Basic,
    }
}

/// Checks a Pusher channel name against the app's rules and finds its core channel.
pub fn locate(app: &PusherApp, name: &str) -> Result<Located, NameError> {
    names::validate(name, app.max_channel_name_length)?;
    let kind = Kind::of(name);
    let space = space_of(kind);
    Ok(Located {
        internal: format!("{}{NAMESPACE_BOUNDARY}{name}", app.namespace(space)),
        kind,
        options: app.options(space),
    })
}

/// The Pusher name of a core channel of any app's space.
pub fn pusher_name(internal: &str) -> &str {
    switchboard_core::channel::local_name(internal)
}

#[cfg(test)]
mod tests {
    use super::*;
    use switchboard_core::channel;

    #[test]
    fn each_kind_lands_in_its_space_and_back() {
        let app = PusherApp::new("app1", "key", "secret");
        let cases = [
            ("orders", "~app1~b:orders", false, false),
            ("private-orders", "~app1~b:private-orders", false, false),
            ("presence-room", "~app1~p:presence-room", true, false),
            ("cache-prices", "~app1~c:cache-prices", false, true),
            (
                "presence-cache-room",
                "~app1~pc:presence-cache-room",
                true,
                true,
            ),
        ];
        for (name, internal, presence, history) in cases {
            let located = locate(&app, name).unwrap();
            assert_eq!(located.internal, internal);
            assert_eq!(located.options.presence, presence, "{name}");
            assert_eq!(located.history().is_some(), history, "{name}");
            assert_eq!(pusher_name(&located.internal), name);
            assert!(channel::is_reserved(&located.internal));
        }
    }

    #[test]
    fn names_follow_the_apps_rules() {
        let mut app = PusherApp::new("app1", "key", "secret");
        app.max_channel_name_length = 8;
        assert!(locate(&app, "orders").is_ok());
        assert!(locate(&app, "orders-of-today").is_err());
        assert!(locate(&app, "a:b").is_err());
        assert!(locate(&app, "").is_err());
    }
}
