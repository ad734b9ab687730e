//! Where the CLI's settings come from: command-line flags, then environment variables, then the
//! configuration file, then built-in defaults. Every resolved value remembers its source, so that
//! `flinger config` (to come) can show it.
//!
//! This module only reads; it never writes the configuration file.

use serde::Deserialize;
use std::fmt;
use std::path::{Path, PathBuf};
use url::Url;

/// Used when no flag, variable or file names a server: a gateway on this machine.
pub const DEFAULT_SERVER: &str = "http://127.0.0.1:8080";

/// Environment variables for the server, in order of precedence. `TESTFLINGER_SERVER` is
/// honoured so that Testflinger users' environments keep working.
pub const SERVER_ENV: [&str; 2] = ["FLINGER_SERVER", "TESTFLINGER_SERVER"];

/// Names the configuration file when `--config` does not.
pub const CONFIG_ENV: &str = "FLINGER_CONFIG";

/// The base URL of a Flinger (or Testflinger) server: http or https, with a host. Any path is
/// kept as a prefix (a gateway behind a reverse proxy at `https://lab.example/flinger`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ServerUrl(String);

impl ServerUrl {
    pub fn parse(s: &str) -> Result<ServerUrl, String> {
        let url = Url::parse(s.trim()).map_err(|e| format!("{s:?} is not a URL: {e}"))?;
        if !matches!(url.scheme(), "http" | "https") {
            return Err(format!(
                "{s:?}: the server URL must start with http:// or https://"
            ));
        }
        if url.host_str().is_none_or(str::is_empty) {
            return Err(format!("{s:?}: the server URL has no host"));
        }
        if url.query().is_some() || url.fragment().is_some() {
            return Err(format!("{s:?}: the server URL must not have a query or fragment"));
        }
        Ok(ServerUrl(url.as_str().trim_end_matches('/').to_owned()))
    }

    /// The URL of an API path (`/v1/job`).
    pub fn endpoint(&self, path: &str) -> String {
        format!("{}{path}", self.0)
    }
}

impl fmt::Display for ServerUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// Where a setting's value came from.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Source {
    Flag(&'static str),
    Env(&'static str),
    File(PathBuf),
    Default,
}

impl fmt::Display for Source {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Source::Flag(flag) => write!(f, "the {flag} flag"),
            Source::Env(var) => write!(f, "${var}"),
            Source::File(path) => write!(f, "{}", path.display()),
            Source::Default => f.write_str("the default"),
        }
    }
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Setting<T> {
    pub value: T,
    pub source: Source,
}

/// Every setting, resolved.
#[derive(Clone, Debug)]
pub struct Settings {
    pub server: Setting<ServerUrl>,
    /// The configuration file that was read, if any.
    #[allow(dead_code)] // shown by `flinger config` (to come)
    pub config_file: Option<PathBuf>,
}

/// The configuration file's keys. Unknown keys are refused, so a typo does not go unnoticed.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct FileConfig {
    server: Option<String>,
}

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read the configuration file {path}: {source}")]
    Read { path: PathBuf, source: std::io::Error },
    #[error("the configuration file {path} is not valid: {message}")]
    Invalid { path: PathBuf, message: String },
    #[error("bad server URL from {origin}: {message}")]
    BadServer { origin: Source, message: String },
}

/// The flags that take part in resolution.
#[derive(Clone, Debug, Default)]
pub struct Flags {
    pub server: Option<String>,
    pub config: Option<PathBuf>,
}

/// Resolves every setting. `env` looks a variable up (empty values count as unset).
pub fn load(flags: &Flags, env: &dyn Fn(&str) -> Option<String>) -> Result<Settings, ConfigError> {
    let env = |name: &str| env(name).filter(|v| !v.trim().is_empty());
    // A file named by a flag or variable must exist; the default one may be absent.
    let (path, required) = match (&flags.config, env(CONFIG_ENV)) {
        (Some(p), _) => (Some(p.clone()), true),
        (None, Some(p)) => (Some(PathBuf::from(p)), true),
        (None, None) => (default_config_path(&env), false),
    };
    let mut file = FileConfig::default();
    let mut config_file = None;
    if let Some(path) = path {
        match std::fs::read_to_string(&path) {
            Ok(text) => {
                file = parse_file(&path, &text)?;
                config_file = Some(path);
            }
            Err(e) if !required && e.kind() == std::io::ErrorKind::NotFound => {}
            Err(source) => return Err(ConfigError::Read { path, source }),
        }
    }

    let candidates = flags
        .server
        .clone()
        .map(|v| (v, Source::Flag("--server")))
        .into_iter()
        .chain(
            SERVER_ENV
                .iter()
                .filter_map(|var| env(var).map(|v| (v, Source::Env(var)))),
        )
        .chain(file.server.clone().zip(config_file.clone().map(Source::File)))
        .chain(std::iter::once((DEFAULT_SERVER.to_owned(), Source::Default)));
    let (raw, source) = candidates
        .into_iter()
        .next()
        .expect("the default is always there");
    let value = ServerUrl::parse(&raw).map_err(|message| ConfigError::BadServer {
        origin: source.clone(),
        message,
    })?;
    Ok(Settings {
        server: Setting { value, source },
        config_file,
    })
}

fn parse_file(path: &Path, text: &str) -> Result<FileConfig, ConfigError> {
    toml::from_str(text).map_err(|e| ConfigError::Invalid {
        path: path.to_owned(),
        message: e.to_string(),
    })
}

/// `$XDG_CONFIG_HOME/flinger/config.toml`, else `$HOME/.config/flinger/config.toml`.
pub fn default_config_path(env: &dyn Fn(&str) -> Option<String>) -> Option<PathBuf> {
    let base = env("XDG_CONFIG_HOME")
        .map(PathBuf::from)
        .filter(|p| p.is_absolute())
        .or_else(|| env("HOME").map(|h| Path::new(&h).join(".config")))?;
    Some(base.join("flinger").join("config.toml"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    fn env_of(pairs: &[(&str, &str)]) -> impl Fn(&str) -> Option<String> + use<> {
        let map: HashMap<String, String> = pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        move |k| map.get(k).cloned()
    }

    fn config_home(server: Option<&str>) -> tempfile::TempDir {
        let dir = tempfile::tempdir().unwrap();
        if let Some(s) = server {
            std::fs::create_dir_all(dir.path().join("flinger")).unwrap();
            std::fs::write(
                dir.path().join("flinger/config.toml"),
                format!("server = {s:?}\n"),
            )
            .unwrap();
        }
        dir
    }

    #[test]
    fn the_flag_beats_the_environment_and_the_file() {
        let home = config_home(Some("http://file:1"));
        let env = env_of(&[
            ("FLINGER_SERVER", "http://env:1"),
            ("XDG_CONFIG_HOME", home.path().to_str().unwrap()),
        ]);
        let flags = Flags {
            server: Some("http://flag:1/".into()),
            config: None,
        };
        let s = load(&flags, &env).unwrap();
        assert_eq!(s.server.value.to_string(), "http://flag:1");
        assert_eq!(s.server.source, Source::Flag("--server"));
    }

    #[test]
    fn flinger_server_beats_testflinger_server_which_beats_the_file() {
        let home = config_home(Some("http://file:1"));
        let xdg = home.path().to_str().unwrap();
        let both = env_of(&[
            ("FLINGER_SERVER", "http://a:1"),
            ("TESTFLINGER_SERVER", "http://b:1"),
            ("XDG_CONFIG_HOME", xdg),
        ]);
        assert_eq!(
            load(&Flags::default(), &both).unwrap().server.source,
            Source::Env("FLINGER_SERVER")
        );
        let legacy = env_of(&[("TESTFLINGER_SERVER", "http://b:1"), ("XDG_CONFIG_HOME", xdg)]);
        let s = load(&Flags::default(), &legacy).unwrap();
        assert_eq!(
            (s.server.value.to_string().as_str(), s.server.source),
            ("http://b:1", Source::Env("TESTFLINGER_SERVER"))
        );
    }

    #[test]
    fn the_file_beats_the_default_and_empty_variables_count_as_unset() {
        let home = config_home(Some("https://lab.example/flinger/"));
        let env = env_of(&[
            ("FLINGER_SERVER", ""),
            ("XDG_CONFIG_HOME", home.path().to_str().unwrap()),
        ]);
        let s = load(&Flags::default(), &env).unwrap();
        assert_eq!(
            s.server.value.endpoint("/v1/job"),
            "https://lab.example/flinger/v1/job"
        );
        assert!(matches!(s.server.source, Source::File(_)));
    }

    #[test]
    fn without_any_setting_the_local_gateway_is_used() {
        let home = config_home(None);
        let env = env_of(&[("XDG_CONFIG_HOME", home.path().to_str().unwrap())]);
        let s = load(&Flags::default(), &env).unwrap();
        assert_eq!(s.server.value.to_string(), DEFAULT_SERVER);
        assert_eq!(s.server.source, Source::Default);
        assert_eq!(s.config_file, None);
    }

    #[test]
    fn a_named_config_file_must_exist() {
        let flags = Flags {
            server: None,
            config: Some("/nonexistent/flinger.toml".into()),
        };
        assert!(matches!(
            load(&flags, &env_of(&[])),
            Err(ConfigError::Read { .. })
        ));
    }

    #[test]
    fn unknown_keys_in_the_file_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("c.toml");
        std::fs::write(&path, "sever = \"http://x\"\n").unwrap();
        let err = load(
            &Flags {
                server: None,
                config: Some(path),
            },
            &env_of(&[]),
        )
        .unwrap_err();
        assert!(err.to_string().contains("sever"), "{err}");
    }

    #[test]
    fn a_bad_server_url_names_where_it_came_from() {
        let err = load(&Flags::default(), &env_of(&[("FLINGER_SERVER", "ftp://x")])).unwrap_err();
        assert!(err.to_string().contains("$FLINGER_SERVER"), "{err}");
        assert!(ServerUrl::parse("localhost:8080").is_err());
        assert!(ServerUrl::parse("http://h:1/?a=b").is_err());
    }
}
