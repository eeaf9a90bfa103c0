//! One history stream per namespace that keeps history, with the namespace's
//! limits: messages per channel (`max_messages_per_subject`) and age (`max_age`).

use std::collections::HashMap;
use std::sync::RwLock;
use std::time::Duration;

use async_nats::jetstream::{self, stream};
use switchboard_core::broker::HistoryOptions;
use switchboard_core::BrokerError;

use crate::subject::Subjects;
use crate::{NatsConfig, NatsError};

/// Where streams keep their messages. Also an option's value: `file` or `memory`
/// (`--nats-storage`, `nats_storage` in the gateway's file).
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum Storage {
    File,
    Memory,
}

/// The duplicate window for idempotent publishes, shortened for streams whose
/// messages live less long (NATS requires window ≤ max age).
const DUPLICATE_WINDOW: Duration = Duration::from_secs(120);

/// Attempts at creating a stream while several gateways race to do it or a
/// cluster elects its meta leader (about 20 s in all).
const ATTEMPTS: usize = 20;

pub(crate) struct Streams {
    /// stream name → (stream handle, epoch)
    by_name: HashMap<String, (stream::Stream, RwLock<String>)>,
}

fn epoch_of(info: &stream::Info) -> String {
    // The creation time names the stream: recreated, it gets a new one.
    format!("{:x}", info.created.unix_timestamp_nanos())
}

impl Streams {
    pub async fn ensure(
        js: &jetstream::Context,
        subjects: &Subjects,
        config: &NatsConfig,
        wanted: &[(Option<String>, HistoryOptions)],
    ) -> Result<Streams, NatsError> {
        let mut by_name = HashMap::new();
        for (namespace, history) in wanted {
            let name = subjects.stream_name(namespace.as_deref());
            let (stored, live) = subjects.stream_subjects(namespace.as_deref());
            let stream_config = stream::Config {
                name: name.clone(),
                subjects: vec![stored.clone()],
                max_messages_per_subject: history.size as i64,
                max_age: history.ttl,
                duplicate_window: DUPLICATE_WINDOW.min(history.ttl),
                storage: match config.storage {
                    Storage::File => stream::StorageType::File,
                    Storage::Memory => stream::StorageType::Memory,
                },
                num_replicas: config.replicas,
                discard: stream::DiscardPolicy::Old,
                republish: Some(stream::Republish {
                    source: stored,
                    destination: live,
                    headers_only: false,
                }),
                ..Default::default()
            };
            let stream = create_or_update(js, stream_config)
                .await
                .map_err(|reason| NatsError::Stream {
                    stream: name.clone(),
                    reason,
                })?;
            let epoch = epoch_of(stream.cached_info());
            by_name.insert(name, (stream, RwLock::new(epoch)));
        }
        Ok(Streams { by_name })
    }

    pub fn get(&self, name: &str) -> Result<&stream::Stream, BrokerError> {
        self.by_name
            .get(name)
            .map(|(s, _)| s)
            .ok_or_else(|| BrokerError::Internal(format!("no history stream {name}")))
    }

    pub fn epoch(&self, name: &str) -> Result<String, BrokerError> {
        let (_, epoch) = self
            .by_name
            .get(name)
            .ok_or_else(|| BrokerError::Internal(format!("no history stream {name}")))?;
        Ok(epoch.read().unwrap_or_else(|e| e.into_inner()).clone())
    }

    /// Re-reads a stream's creation time (after a reconnect, the stream may
    /// have been recreated).
    pub async fn refresh_epoch(&self, name: &str) -> Result<String, BrokerError> {
        let (stream, epoch) = self
            .by_name
            .get(name)
            .ok_or_else(|| BrokerError::Internal(format!("no history stream {name}")))?;
        let mut stream = stream.clone();
        let info = stream
            .info()
            .await
            .map_err(|e| BrokerError::Unavailable(e.to_string()))?;
        let fresh = epoch_of(info);
        *epoch.write().unwrap_or_else(|e| e.into_inner()) = fresh.clone();
        Ok(fresh)
    }
}

pub(crate) async fn create_or_update(
    js: &jetstream::Context,
    config: stream::Config,
) -> Result<stream::Stream, String> {
    let mut last_error = String::new();
    for attempt in 0..ATTEMPTS {
        match js.get_or_create_stream(config.clone()).await {
            Ok(mut stream) => {
                let current = stream
                    .info()
                    .await
                    .map_err(|e| e.to_string())?
                    .config
                    .clone();
                let differs = current.max_messages_per_subject != config.max_messages_per_subject
                    || current.max_age != config.max_age
                    || current.num_replicas != config.num_replicas
                    || current.republish != config.republish
                    || current.duplicate_window != config.duplicate_window;
                if differs {
                    tracing::info!(stream = config.name, "updating stream limits");
                    js.update_stream(config.clone())
                        .await
                        .map_err(|e| e.to_string())?;
                    return js.get_stream(&config.name).await.map_err(|e| e.to_string());
                }
                return Ok(stream);
            }
            Err(e) => {
                last_error = e.to_string();
                // Another gateway may be creating it right now, or the cluster is
                // still electing its meta leader: back off and look again.
                let wait = Duration::from_millis((100 * (attempt as u64 + 1)).min(1500));
                tokio::time::sleep(wait + Duration::from_millis(fastrand::u64(..100))).await;
            }
        }
    }
    Err(last_error)
}
