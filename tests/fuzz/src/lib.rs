//! What the fuzz targets share: how an input's first byte picks the encoding,
//! tokens signed with the node's secret, and, for the targets that run a node,
//! its configuration and a fresh standalone node (in-memory broker and presence)
//! per input, so that a crash reproduces from its input alone.

use std::future::Future;
use std::sync::{Arc, OnceLock};

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use jsonwebtoken::{Algorithm, EncodingKey};
use switchboard_core::namespace::{Namespace, NamespaceOptions, Namespaces};
use switchboard_core::queue::{Batch, Outbound};
use switchboard_gateway::config::{Config, PusherApp};
use switchboard_gateway::node::Node;
use switchboard_protocol::centrifugo::Encoding;

/// The encoding a selector byte picks: bit 0 clear JSON, set protobuf.
pub fn encoding(selector: u8) -> Encoding {
    if selector & 1 == 0 {
        Encoding::Json
    } else {
        Encoding::Protobuf
    }
}

/// The Pusher app of the targets (client events on, small presence rooms).
pub const PUSHER_ID: &str = "fuzz-app";
pub const PUSHER_KEY: &str = "fuzz-key";
pub const PUSHER_SECRET: &str = "fuzz-pusher-secret";

/// The HMAC secret of the targets' tokens (seed tokens are signed with it).
pub const SECRET: &str = "fuzz-secret";

/// The header of the tokens the targets sign.
pub const HS256_HEADER: &[u8] = br#"{"alg":"HS256","typ":"JWT"}"#;

/// A token `header.claims.signature` signed with [`SECRET`]: header and claims
/// are taken as they are, so a target can hand any of them to the verifier.
pub fn signed_token(header: &[u8], claims: &[u8]) -> String {
    let message = format!(
        "{}.{}",
        URL_SAFE_NO_PAD.encode(header),
        URL_SAFE_NO_PAD.encode(claims)
    );
    let key = EncodingKey::from_secret(SECRET.as_bytes());
    let signature =
        jsonwebtoken::crypto::sign(message.as_bytes(), &key, Algorithm::HS256).expect("HMAC");
    format!("{message}.{signature}")
}

/// Everything on: history, presence, join and leave, client publish, so that
/// commands and API calls reach past their permission checks.
fn open() -> NamespaceOptions {
    NamespaceOptions {
        presence: true,
        join_leave: true,
        history_size: 10,
        history_ttl: 300,
        force_recovery: true,
        allow_subscribe_for_client: true,
        allow_publish_for_client: true,
        allow_presence_for_subscriber: true,
        allow_history_for_subscriber: true,
        ..Default::default()
    }
}

/// Anonymous connects allowed, HS256 tokens with [`SECRET`], an open default
/// namespace, `chat:` per user, `locked:` needing subscription tokens, and the
/// Pusher app [`PUSHER_ID`].
pub fn config() -> &'static Config {
    static CONFIG: OnceLock<Config> = OnceLock::new();
    CONFIG.get_or_init(|| {
        let mut c = Config {
            api_key: Some("fuzz-key".into()),
            // Anonymous connects only: `insecure` would also lift the permission
            // checks the targets are meant to reach.
            allow_anonymous_connect_without_token: true,
            ..Default::default()
        };
        c.token.hmac_secret = Some(SECRET.into());
        c.limits.max_commands_per_frame = 16;
        c.namespaces = Namespaces::new(
            open(),
            vec![
                Namespace {
                    name: "chat".into(),
                    options: NamespaceOptions {
                        join_leave_per_user: true,
                        ..open()
                    },
                },
                Namespace {
                    name: "locked".into(),
                    options: NamespaceOptions {
                        allow_subscribe_for_client: false,
                        ..open()
                    },
                },
            ],
        )
        .expect("valid namespaces");
        let mut app = PusherApp::new(PUSHER_ID, PUSHER_KEY, PUSHER_SECRET);
        app.enable_client_events = true;
        app.max_presence_members = 3;
        app.max_event_bytes = 1024;
        c.pusher_apps = vec![app];
        switchboard_gateway::config::pusher::register(&c.pusher_apps, &mut c.namespaces)
            .expect("a valid app");
        c
    })
}

/// Takes everything a session queued and hands each record to `check` (which
/// panics on one a client could not read); false once the connection is to be
/// closed.
pub fn drain(outbound: &Outbound, check: impl Fn(&[u8])) -> bool {
    let mut records = Vec::new();
    loop {
        match outbound.try_batch(&mut records) {
            None => return true,
            Some(Batch::Close(_)) => return false,
            Some(Batch::Records) => {}
        }
        for record in records.drain(..) {
            check(&record.data);
        }
    }
}

/// Runs `f` on a fresh standalone node in a runtime of its own; the runtime's
/// end stops the node's background tasks.
pub fn with_node<F, Fut>(f: F) -> Fut::Output
where
    F: FnOnce(Arc<Node>) -> Fut,
    Fut: Future,
{
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .build()
        .expect("a runtime");
    runtime.block_on(async {
        let node = Node::standalone(config().clone());
        f(node).await
    })
}

/// Panics unless `node` holds nothing of its closed sessions: no registered
/// connection, no hub subscriber.
pub fn assert_nothing_left(node: &Node) {
    assert_eq!(
        node.registry.counts(),
        (0, 0),
        "a closed session is still registered"
    );
    let held: Vec<_> = node
        .hub
        .channels()
        .into_iter()
        .filter(|(_, n)| *n > 0)
        .collect();
    assert!(
        held.is_empty(),
        "a closed session is still subscribed: {held:?}"
    );
}
