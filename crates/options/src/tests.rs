use std::io::Write;
use std::net::SocketAddr;
use std::path::PathBuf;

use clap::{Command, CommandFactory, Parser};
use serde::Deserialize;

use super::*;

crate::layered! {
    /// Options of a test binary; the names are unlike real options, so that no
    /// SWITCHBOARD_* variable of the machine running the tests reaches them.
    #[derive(Debug, Default, Clone, PartialEq, clap::Args, Deserialize)]
    #[serde(default, deny_unknown_fields)]
    struct Demo {
        /// TOML configuration file.
        #[arg(long)]
        #[serde(skip)]
        config: Option<PathBuf>,
        /// Where to listen.
        #[arg(long, default_value = "0.0.0.0:8000")]
        demo_listen: Option<SocketAddr>,
        /// Bytes at most.
        #[arg(long, default_value = "65536")]
        demo_max_bytes: Option<usize>,
        /// Servers, comma-separated.
        #[arg(long, value_delimiter = ',')]
        demo_servers: Option<Vec<String>>,
        /// File only.
        #[arg(skip)]
        demo_table: Option<Vec<String>>,
        /// Set in the environment by one test only.
        #[arg(long, default_value = "1")]
        demo_rank: Option<u32>,
    }
}

impl CommandFactory for Demo {
    fn command() -> Command {
        command::<Demo>(Command::new("demo"))
    }
    fn command_for_update() -> Command {
        Self::command()
    }
}

impl Parser for Demo {}

fn file(text: &str) -> tempfile::NamedTempFile {
    let mut f = tempfile::NamedTempFile::new().unwrap();
    f.write_all(text.as_bytes()).unwrap();
    f
}

#[test]
fn the_command_is_sound() {
    Demo::command().debug_assert();
}

#[test]
fn every_option_reads_its_environment_variable() {
    let command = Demo::command();
    for arg in command.get_arguments() {
        let id = arg.get_id().as_str();
        let env = arg.get_env().and_then(|e| e.to_str()).unwrap_or_default();
        assert_eq!(env, format!("SWITCHBOARD_{}", id.to_uppercase()), "{id}");
    }
    assert_eq!(env_name("nats-url"), "SWITCHBOARD_NATS_URL");
}

#[test]
fn help_shows_the_defaults_and_the_variables() {
    let help = Demo::command().render_long_help().to_string();
    assert!(
        help.contains("Where to listen [default: 0.0.0.0:8000]"),
        "{help}"
    );
    assert!(help.contains("Bytes at most [default: 65536]"), "{help}");
    assert!(
        help.contains("[env: SWITCHBOARD_DEMO_MAX_BYTES=]"),
        "{help}"
    );
}

#[test]
fn a_parse_yields_only_what_was_given() {
    let given = Demo::try_parse_from(["demo", "--demo-servers", "a,b"]).unwrap();
    assert_eq!(given.demo_servers, Some(vec!["a".into(), "b".into()]));
    assert_eq!((given.demo_listen, given.demo_max_bytes), (None, None));
}

#[test]
fn defaults_come_from_the_declarations() {
    let d = defaults::<Demo>();
    assert_eq!(d.demo_listen, Some("0.0.0.0:8000".parse().unwrap()));
    assert_eq!(d.demo_max_bytes, Some(65_536));
    assert_eq!((d.config, d.demo_servers, d.demo_table), (None, None, None));
}

#[test]
fn or_merges_field_by_field() {
    let high = Demo {
        demo_max_bytes: Some(1),
        ..Default::default()
    };
    let low = Demo {
        demo_max_bytes: Some(2),
        demo_servers: Some(vec!["s".into()]),
        ..Default::default()
    };
    let merged = high.or(low);
    assert_eq!(merged.demo_max_bytes, Some(1));
    assert_eq!(merged.demo_servers, Some(vec!["s".into()]));
}

#[test]
fn flags_over_the_file_over_defaults() {
    let f = file(
        "demo_max_bytes = 10\ndemo_servers = [\"x\", \"y\"]\ndemo_table = [\"t\"]\n\
         demo_listen = \"127.0.0.1:9\"\n",
    );
    let given = Demo::try_parse_from(["demo", "--demo-listen", "127.0.0.1:1"]).unwrap();
    let o = resolve(given, Some(f.path())).unwrap();
    assert_eq!(o.demo_listen, Some("127.0.0.1:1".parse().unwrap()));
    assert_eq!(o.demo_max_bytes, Some(10));
    assert_eq!(o.demo_servers, Some(vec!["x".into(), "y".into()]));
    assert_eq!(o.demo_table, Some(vec!["t".into()]));
    let o = resolve(Demo::default(), None).unwrap();
    assert_eq!(o.demo_max_bytes, Some(65_536));
}

#[test]
fn unknown_keys_and_wrong_types_are_refused() {
    for text in [
        "demo_max_byte = 1\n",
        "config = \"other.toml\"\n",
        "demo_max_bytes = \"ten\"\n",
    ] {
        let f = file(text);
        let result = resolve(Demo::default(), Some(f.path()));
        assert!(matches!(result, Err(FileError::Parse { .. })), "{text}");
    }
    let missing = resolve(
        Demo::default(),
        Some(std::path::Path::new("/nonexistent.toml")),
    );
    assert!(matches!(missing, Err(FileError::Read { .. })));
}

#[test]
fn the_environment_ranks_between_flags_and_the_file() {
    // The only test that reads demo_rank: setting its variable disturbs no other.
    std::env::set_var("SWITCHBOARD_DEMO_RANK", "2");
    let f = file("demo_rank = 3\n");
    let from_env = Demo::try_parse_from(["demo"]).unwrap();
    let from_flag = Demo::try_parse_from(["demo", "--demo-rank", "4"]).unwrap();
    std::env::remove_var("SWITCHBOARD_DEMO_RANK");
    let from_file = Demo::try_parse_from(["demo"]).unwrap();
    let rank = |given: Demo| resolve(given, Some(f.path())).unwrap().demo_rank;
    assert_eq!(rank(from_flag), Some(4));
    assert_eq!(rank(from_env), Some(2));
    assert_eq!(rank(from_file), Some(3));
    assert_eq!(resolve(Demo::default(), None).unwrap().demo_rank, Some(1));
}
