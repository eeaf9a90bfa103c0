//! `--config FILE`: options from a TOML file, below flags and the environment.
//!
//! Every top-level key of the file is an option name (`subscribers = 5000`,
//! `url = ["ws://…", "ws://…"]`, `api-key` or `api_key`); it becomes the default of
//! the option's environment variable `SWITCHBOARD_<OPTION>` unless that is already
//! set, before the command line is parsed. So flags win over the environment, the
//! environment over the file, the file over built-in defaults, as for every
//! Switchboard binary.

use std::path::{Path, PathBuf};

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read {0}: {1}")]
    Read(PathBuf, std::io::Error),
    #[error("{0}: {1}")]
    Parse(PathBuf, String),
    #[error("{0}: option {1} must be a string, number, boolean or array of those")]
    Value(PathBuf, String),
}

/// The config file named by `--config FILE`, `--config=FILE` or `SWITCHBOARD_CONFIG`.
pub fn path_from(args: &[String]) -> Option<PathBuf> {
    let mut it = args.iter();
    while let Some(a) = it.next() {
        if a == "--config" {
            return it.next().map(PathBuf::from);
        }
        if let Some(p) = a.strip_prefix("--config=") {
            return Some(PathBuf::from(p));
        }
    }
    std::env::var_os("SWITCHBOARD_CONFIG").map(PathBuf::from)
}

/// The (variable, value) pairs a config file defines.
pub fn env_pairs(path: &Path) -> Result<Vec<(String, String)>, ConfigError> {
    let text = std::fs::read_to_string(path).map_err(|e| ConfigError::Read(path.into(), e))?;
    let table: toml::Table = text
        .parse()
        .map_err(|e: toml::de::Error| ConfigError::Parse(path.into(), e.to_string()))?;
    let mut out = Vec::new();
    for (key, value) in table {
        let var = format!("SWITCHBOARD_{}", key.to_uppercase().replace('-', "_"));
        let bad = || ConfigError::Value(path.into(), key.clone());
        let text = match &value {
            toml::Value::Array(items) => items
                .iter()
                .map(|v| scalar(v).ok_or_else(bad))
                .collect::<Result<Vec<_>, _>>()?
                .join(","),
            v => scalar(v).ok_or_else(bad)?,
        };
        out.push((var, text));
    }
    Ok(out)
}

fn scalar(v: &toml::Value) -> Option<String> {
    match v {
        toml::Value::String(s) => Some(s.clone()),
        toml::Value::Integer(i) => Some(i.to_string()),
        toml::Value::Float(f) => Some(f.to_string()),
        toml::Value::Boolean(b) => Some(b.to_string()),
        _ => None,
    }
}

/// Sets the file's variables that the environment does not already set. Call
/// before any thread starts (it changes the process environment).
pub fn apply(args: &[String]) -> Result<(), ConfigError> {
    let Some(path) = path_from(args) else {
        return Ok(());
    };
    for (var, value) in env_pairs(&path)? {
        if std::env::var_os(&var).is_none() {
            std::env::set_var(var, value);
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_become_switchboard_variables() {
        let dir = std::env::temp_dir().join(format!("sb-lt-config-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("lt.toml");
        std::fs::write(
            &path,
            "subscribers = 5000\napi-key = \"k\"\nprotobuf = true\nrate = 2.5\nurl = [\"ws://127.0.0.1:1\", \"ws://127.0.0.1:2\"]\n",
        )
        .unwrap();
        let mut pairs = env_pairs(&path).unwrap();
        pairs.sort();
        assert_eq!(
            pairs,
            vec![
                ("SWITCHBOARD_API_KEY".into(), "k".into()),
                ("SWITCHBOARD_PROTOBUF".into(), "true".into()),
                ("SWITCHBOARD_RATE".into(), "2.5".into()),
                ("SWITCHBOARD_SUBSCRIBERS".into(), "5000".into()),
                (
                    "SWITCHBOARD_URL".into(),
                    "ws://127.0.0.1:1,ws://127.0.0.1:2".into()
                ),
            ]
        );
        std::fs::write(&path, "nested = { a = 1 }\n").unwrap();
        assert!(env_pairs(&path).is_err());
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn config_path_from_flags() {
        let args = |v: &[&str]| v.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        assert_eq!(
            path_from(&args(&["x", "fanout", "--config", "a.toml"])),
            Some("a.toml".into())
        );
        assert_eq!(
            path_from(&args(&["x", "--config=b.toml"])),
            Some("b.toml".into())
        );
    }
}
