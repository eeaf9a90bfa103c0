//! The presence service's options, each declared once: its flag, its `SWITCHBOARD_*`
//! variable, its key in the `--config` file and its default all come from its field of
//! [`Cli`] (see `switchboard_options`); and the [`Config`] the binary runs with.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use clap::{Command, CommandFactory, Parser};
use serde::Deserialize;
use switchboard_broker_nats::NatsConfig;
use switchboard_options::FileError;

/// The shortest member TTL: gateways refresh several times within it.
const MIN_TTL_SECS: u64 = 3;

const ABOUT: &str = "The Switchboard presence service: who is in a channel, over gRPC. Stateless: \
                     members live in a NATS JetStream KV bucket, so any replica answers any call.";

switchboard_options::layered! {
    /// The service's options as one source gives them: the command line (flags and
    /// environment variables), the file, or the declared defaults.
    #[derive(Debug, Default, Clone, clap::Args, Deserialize)]
    #[serde(default, deny_unknown_fields)]
    pub struct Cli {
        /// TOML configuration file with the same options.
        #[arg(long)]
        #[serde(skip)]
        pub config: Option<PathBuf>,
        /// gRPC address.
        #[arg(long, default_value = "0.0.0.0:9000")]
        pub listen: Option<SocketAddr>,
        /// Address of /metrics, /healthz and /readyz.
        #[arg(long, default_value = "0.0.0.0:9001")]
        pub http_listen: Option<SocketAddr>,
        /// NATS server URLs, comma-separated.
        #[arg(long, value_delimiter = ',', default_values = NatsConfig::default().urls)]
        pub nats_url: Option<Vec<String>>,
        /// Prefix of the presence bucket's name; the gateways' --nats-prefix.
        #[arg(long, default_value = NatsConfig::default().prefix)]
        pub nats_prefix: Option<String>,
        /// Replicas of the presence bucket (3 in production).
        #[arg(long, default_value = NatsConfig::default().replicas.to_string())]
        pub nats_replicas: Option<usize>,
        /// Seconds a member lives without a refresh; the gateways' --presence-ttl.
        #[arg(long, default_value = "20")]
        pub presence_ttl: Option<u64>,
        /// Log filter.
        #[arg(long, default_value = "info")]
        pub log: Option<String>,
    }
}

impl CommandFactory for Cli {
    fn command() -> Command {
        let name = Command::new("switchboard-presence").version(env!("CARGO_PKG_VERSION"));
        switchboard_options::command::<Cli>(name).about(ABOUT)
    }

    fn command_for_update() -> Command {
        Cli::command()
    }
}

impl Parser for Cli {}

/// What the service runs with.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Config {
    pub listen: SocketAddr,
    pub http_listen: SocketAddr,
    pub nats_urls: Vec<String>,
    /// Prefix of the presence bucket's name.
    pub prefix: String,
    pub replicas: usize,
    /// How long a member lives without a refresh.
    pub ttl: Duration,
    pub log: String,
}

/// An option with a declared default, once resolved.
fn defaulted<T>(value: Option<T>) -> T {
    value.expect("switchboard_options::resolve sets every option that has a default")
}

impl Config {
    /// Resolves flags (with their environment variables) over the file they name over
    /// the defaults.
    pub fn resolve(cli: Cli) -> Result<Config, FileError> {
        let file = cli.config.clone();
        let o = switchboard_options::resolve(cli, file.as_deref())?;
        Ok(Config {
            listen: defaulted(o.listen),
            http_listen: defaulted(o.http_listen),
            nats_urls: defaulted(o.nats_url),
            prefix: defaulted(o.nats_prefix),
            replicas: defaulted(o.nats_replicas),
            ttl: Duration::from_secs(defaulted(o.presence_ttl).max(MIN_TTL_SECS)),
            log: defaulted(o.log),
        })
    }
}

#[cfg(test)]
mod tests {
    use std::io::Write;

    use super::*;

    const DEPLOY_TOML: &str = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../deploy/k8s/base/config/presence.toml"
    );

    fn file(text: &str) -> tempfile::NamedTempFile {
        let mut f = tempfile::NamedTempFile::new().unwrap();
        f.write_all(text.as_bytes()).unwrap();
        f
    }

    #[test]
    fn the_command_is_sound() {
        Cli::command().debug_assert();
    }

    #[test]
    fn defaults_are_the_declared_ones() {
        let c = Config::resolve(Cli::default()).unwrap();
        assert_eq!(
            c,
            Config {
                listen: "0.0.0.0:9000".parse().unwrap(),
                http_listen: "0.0.0.0:9001".parse().unwrap(),
                nats_urls: vec!["nats://127.0.0.1:4222".into()],
                prefix: "sb".into(),
                replicas: 1,
                ttl: Duration::from_secs(20),
                log: "info".into(),
            }
        );
    }

    #[test]
    fn each_source_wins_over_the_next_one_down() {
        let f = file(
            "listen = \"127.0.0.1:7000\"\nnats_url = [\"nats://a:4222\", \"nats://b:4222\"]\n\
             nats_prefix = \"file\"\npresence_ttl = 1\n",
        );
        let cli = Cli::try_parse_from([
            "switchboard-presence",
            "--config",
            f.path().to_str().unwrap(),
            "--nats-prefix",
            "flag",
        ])
        .unwrap();
        let c = Config::resolve(cli).unwrap();
        // A flag over the file, the file over defaults, defaults where neither says.
        assert_eq!(c.prefix, "flag");
        assert_eq!(c.listen, "127.0.0.1:7000".parse().unwrap());
        assert_eq!(c.nats_urls, ["nats://a:4222", "nats://b:4222"]);
        assert_eq!(c.ttl, Duration::from_secs(3), "at least 3 s");
        assert_eq!(c.http_listen, "0.0.0.0:9001".parse().unwrap());
        // A parse yields only what was given: defaults come last, below the file.
        let cli = Cli::try_parse_from(["switchboard-presence"]).unwrap();
        assert_eq!((cli.listen, cli.nats_prefix), (None, None));
    }

    #[test]
    fn keys_that_are_not_options_are_refused() {
        for text in [
            "lisen = \"127.0.0.1:9000\"\n",
            "config = \"other.toml\"\n",
            "nats_storage = \"file\"\n",
            "nats_replicas = \"three\"\n",
        ] {
            let f = file(text);
            let cli = Cli {
                config: Some(f.path().into()),
                ..Default::default()
            };
            assert!(
                matches!(Config::resolve(cli), Err(FileError::Parse { .. })),
                "{text}"
            );
        }
    }

    #[test]
    fn the_shipped_file_resolves() {
        let cli = Cli {
            config: Some(DEPLOY_TOML.into()),
            ..Default::default()
        };
        let c = Config::resolve(cli).unwrap();
        assert_eq!((c.replicas, c.ttl), (3, Duration::from_secs(20)));
    }

    #[test]
    fn help_shows_every_default() {
        let help = Cli::command().render_long_help().to_string();
        for shown in [
            "[default: 0.0.0.0:9000]",
            "[default: 0.0.0.0:9001]",
            "[default: nats://127.0.0.1:4222]",
            "[default: sb]",
            "[default: 1]",
            "[default: 20]",
            "[default: info]",
            "[env: SWITCHBOARD_HTTP_LISTEN=]",
        ] {
            assert!(help.contains(shown), "{shown} missing from:\n{help}");
        }
    }
}
