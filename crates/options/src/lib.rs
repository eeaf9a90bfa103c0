//! Options declared once.
//!
//! A binary's options are one struct, declared with [`layered!`], whose fields are all
//! `Option`s and which derives `clap::Args` and `serde::Deserialize`. Each field is one
//! option, and everything about the option comes from that field:
//!
//! | what | where it comes from | e.g. |
//! |---|---|---|
//! | flag | clap's `#[arg(long)]`: the name in kebab case | `--max-frame-bytes` |
//! | environment variable | `SWITCHBOARD_` and the name in capitals, added by [`command`] | `SWITCHBOARD_MAX_FRAME_BYTES` |
//! | TOML key | serde's name of the field | `max_frame_bytes` |
//! | default | `#[arg(default_value = …)]`: shown by `--help`, applied last by [`resolve`] | `65536` |
//! | help | the doc comment | |
//!
//! The sources rank: flags, then the environment (clap reads both into one value of the
//! struct), then the TOML file, then the defaults. [`layered!`] gives the struct
//! [`Layered::or`], which merges two values field by field.
//!
//! ```
//! use clap::{FromArgMatches, Parser};
//! use serde::Deserialize;
//!
//! switchboard_options::layered! {
//!     /// The options of `demo`.
//!     #[derive(Debug, Default, clap::Args, Deserialize)]
//!     #[serde(default, deny_unknown_fields)]
//!     pub struct Options {
//!         /// TOML configuration file.
//!         #[arg(long)]
//!         #[serde(skip)]
//!         pub config: Option<std::path::PathBuf>,
//!         /// Largest message, in bytes.
//!         #[arg(long, default_value = "65536")]
//!         pub max_frame_bytes: Option<usize>,
//!     }
//! }
//!
//! let command = switchboard_options::command::<Options>(clap::Command::new("demo"));
//! let flags = command.try_get_matches_from(["demo"]).unwrap();
//! let given = Options::from_arg_matches(&flags).unwrap();
//! // Not given (unless SWITCHBOARD_MAX_FRAME_BYTES is set): the default applies at the end.
//! let config = given.config.clone();
//! let options = switchboard_options::resolve(given, config.as_deref()).unwrap();
//! assert!(options.max_frame_bytes.is_some());
//! ```

#![forbid(unsafe_code)]
#![deny(rust_2018_idioms)]

use std::path::{Path, PathBuf};

use clap::{Arg, Args, Command, FromArgMatches, ValueEnum};
use serde::de::DeserializeOwned;

/// What the names of the environment variables start with.
pub const ENV_PREFIX: &str = "SWITCHBOARD_";

/// Options that come in layers (flags and environment, file, defaults).
pub trait Layered: Sized {
    /// `self`'s options where they are set, `lower`'s elsewhere.
    fn or(self, lower: Self) -> Self;
}

/// Declares an options struct (every field an `Option`) and implements [`Layered`] for it,
/// so that its fields are listed once.
#[macro_export]
macro_rules! layered {
    (
        $(#[$meta:meta])*
        $vis:vis struct $name:ident {
            $(
                $(#[$field_meta:meta])*
                $field_vis:vis $field:ident : $ty:ty
            ),* $(,)?
        }
    ) => {
        $(#[$meta])*
        $vis struct $name {
            $(
                $(#[$field_meta])*
                $field_vis $field: $ty,
            )*
        }

        impl $crate::Layered for $name {
            fn or(self, lower: Self) -> Self {
                $name {
                    $($field: ::core::option::Option::or(self.$field, lower.$field),)*
                }
            }
        }
    };
}

/// Why the file's options could not be read.
#[derive(Debug, thiserror::Error)]
pub enum FileError {
    #[error("cannot read {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("invalid configuration file {path}: {source}")]
    Parse {
        path: PathBuf,
        source: Box<toml::de::Error>,
    },
}

/// The environment variable of the option `id`: `SWITCHBOARD_MAX_FRAME_BYTES` for
/// `max_frame_bytes`.
pub fn env_name(id: &str) -> String {
    format!("{ENV_PREFIX}{}", id.to_uppercase().replace('-', "_"))
}

/// `cmd` with the options of `T`, each also read from its environment variable, and each
/// default shown in the help but not filled in: a parse yields what the flags and the
/// environment say and nothing else, so that the file can rank below them and the
/// defaults below the file.
pub fn command<T: Args>(cmd: Command) -> Command {
    T::augment_args(cmd).mut_args(|arg| {
        let env = env_name(arg.get_id().as_str());
        default_into_help(arg.env(env))
    })
}

fn default_into_help(arg: Arg) -> Arg {
    let values = arg.get_default_values();
    if values.is_empty() {
        return arg;
    }
    let values: Vec<_> = values.iter().map(|v| v.to_string_lossy()).collect();
    let shown = format!("[default: {}]", values.join(","));
    let help = match arg.get_help() {
        Some(help) => format!("{help} {shown}"),
        None => shown.clone(),
    };
    let long_help = arg.get_long_help().map(|help| format!("{help} {shown}"));
    let arg = arg.help(help).default_value(None::<&'static str>);
    match long_help {
        Some(long_help) => arg.long_help(long_help),
        None => arg,
    }
}

/// The name a value of `E` has as an option's value, for a default taken from a value:
/// `#[arg(default_value = value_name(&Storage::File))]`.
pub fn value_name<E: ValueEnum>(value: &E) -> String {
    value
        .to_possible_value()
        .map(|v| v.get_name().to_owned())
        .unwrap_or_default()
}

/// Every option's default, from its declaration; options without one are `None`.
pub fn defaults<T: Args + FromArgMatches>() -> T {
    // The command of the declarations as they are: no environment, defaults filled in.
    let matches = T::augment_args(Command::new("defaults").no_binary_name(true))
        .try_get_matches_from(std::iter::empty::<String>())
        .expect("the declared defaults parse");
    T::from_arg_matches(&matches).expect("the declared defaults have the options' types")
}

/// The options in the TOML file at `path`.
pub fn read_file<T: DeserializeOwned>(path: &Path) -> Result<T, FileError> {
    let text = std::fs::read_to_string(path).map_err(|source| FileError::Read {
        path: path.to_owned(),
        source,
    })?;
    toml::from_str(&text).map_err(|source| FileError::Parse {
        path: path.to_owned(),
        source: Box::new(source),
    })
}

/// The options in force: `given` (the flags and the environment) over the TOML file at
/// `file` over the defaults.
pub fn resolve<T>(given: T, file: Option<&Path>) -> Result<T, FileError>
where
    T: Layered + Args + FromArgMatches + DeserializeOwned,
{
    let given = match file {
        Some(path) => given.or(read_file(path)?),
        None => given,
    };
    Ok(given.or(defaults()))
}

#[cfg(test)]
mod tests;
