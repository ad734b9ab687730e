//! Where the CLI's settings come from: command-line flags, then environment variables, then the
//! configuration file, then built-in defaults. Every resolved value remembers its source, so that
//! `flinger config` can show it.
//!
//! Reading is [`load`]; the only write is [`write_setting`] (`flinger config KEY=VALUE`).

use serde::Deserialize;
use std::fmt;
use std::path::{Path, PathBuf};
use url::Url;

/// Used when no flag, variable or file names a server: a gateway on this machine.
pub const DEFAULT_SERVER: &str = "http://127.0.0.1:8080";

/// Environment variables for the server, in order of precedence. `TESTFLINGER_SERVER` is
/// honoured so that Testflinger users' environments keep working.
pub const SERVER_ENV: [&str; 2] = ["FLINGER_SERVER", "TESTFLINGER_SERVER"];
/// The client id and secret key used to log in, Testflinger's variables second.
pub const CLIENT_ID_ENV: [&str; 2] = ["FLINGER_CLIENT_ID", "TESTFLINGER_CLIENT_ID"];
pub const SECRET_KEY_ENV: [&str; 2] = ["FLINGER_SECRET_KEY", "TESTFLINGER_SECRET_KEY"];
/// Where the job history and the login are kept.
pub const DATA_DIR_ENV: [&str; 1] = ["FLINGER_DATA_DIR"];

/// Names the configuration file when `--config` does not.
pub const CONFIG_ENV: &str = "FLINGER_CONFIG";

/// The keys of the configuration file, in the order `flinger config` shows them.
pub const KEYS: [&str; 4] = ["server", "client_id", "secret_key", "data_dir"];

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

    pub fn as_str(&self) -> &str {
        &self.0
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

impl Source {
    /// One word for scripts (`flinger config --json`): flag, env, file or default.
    pub fn kind(&self) -> &'static str {
        match self {
            Source::Flag(_) => "flag",
            Source::Env(_) => "env",
            Source::File(_) => "file",
            Source::Default => "default",
        }
    }
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
    /// The client to log in as, if any.
    pub client_id: Option<Setting<String>>,
    /// Its secret key. Never printed.
    pub secret_key: Option<Setting<String>>,
    /// Where the job history and the stored login live (`None` without any home directory).
    pub data_dir: Option<Setting<PathBuf>>,
    /// The configuration file that was read, if any.
    pub config_file: Option<PathBuf>,
    /// The configuration file `flinger config KEY=VALUE` writes: the one in use, else the
    /// default one.
    pub config_target: Option<PathBuf>,
}

/// The configuration file's keys. Unknown keys are refused, so a typo does not go unnoticed.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct FileConfig {
    server: Option<String>,
    client_id: Option<String>,
    secret_key: Option<String>,
    data_dir: Option<PathBuf>,
}

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read the configuration file {path}: {source}")]
    Read { path: PathBuf, source: std::io::Error },
    #[error("cannot write the configuration file {path}: {source}")]
    Write { path: PathBuf, source: std::io::Error },
    #[error("the configuration file {path} is not valid: {message}")]
    Invalid { path: PathBuf, message: String },
    #[error("bad server URL from {origin}: {message}")]
    BadServer { origin: Source, message: String },
    #[error("{0}")]
    Other(String),
}

/// The flags that take part in resolution.
#[derive(Clone, Debug, Default)]
pub struct Flags {
    pub server: Option<String>,
    pub config: Option<PathBuf>,
    pub client_id: Option<String>,
    pub secret_key: Option<String>,
}

/// The first of flag, variables, file value that is given.
fn pick<T>(
    flag: Option<(T, &'static str)>,
    vars: &[&'static str],
    env: &dyn Fn(&str) -> Option<String>,
    parse_env: impl Fn(String) -> T,
    file: Option<(T, &Path)>,
) -> Option<Setting<T>> {
    if let Some((value, name)) = flag {
        return Some(Setting {
            value,
            source: Source::Flag(name),
        });
    }
    for var in vars {
        if let Some(v) = env(var) {
            return Some(Setting {
                value: parse_env(v),
                source: Source::Env(var),
            });
        }
    }
    file.map(|(value, path)| Setting {
        value,
        source: Source::File(path.to_owned()),
    })
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
    if let Some(path) = &path {
        match std::fs::read_to_string(path) {
            Ok(text) => {
                file = parse_file(path, &text)?;
                config_file = Some(path.clone());
            }
            Err(e) if !required && e.kind() == std::io::ErrorKind::NotFound => {}
            Err(source) => {
                return Err(ConfigError::Read {
                    path: path.clone(),
                    source,
                });
            }
        }
    }
    let file_path = config_file.as_deref();
    let in_file = |v: Option<String>| v.filter(|s| !s.trim().is_empty()).zip(file_path);

    let server = pick(
        flags.server.clone().map(|v| (v, "--server")),
        &SERVER_ENV,
        &env,
        |v| v,
        in_file(file.server.clone()),
    )
    .unwrap_or(Setting {
        value: DEFAULT_SERVER.to_owned(),
        source: Source::Default,
    });
    let server = Setting {
        value: ServerUrl::parse(&server.value).map_err(|message| ConfigError::BadServer {
            origin: server.source.clone(),
            message,
        })?,
        source: server.source,
    };
    let client_id = pick(
        flags.client_id.clone().map(|v| (v, "--client-id")),
        &CLIENT_ID_ENV,
        &env,
        |v| v,
        in_file(file.client_id.clone()),
    );
    let secret_key = pick(
        flags.secret_key.clone().map(|v| (v, "--secret-key")),
        &SECRET_KEY_ENV,
        &env,
        |v| v,
        in_file(file.secret_key.clone()),
    );
    let data_dir = pick(
        None,
        &DATA_DIR_ENV,
        &env,
        PathBuf::from,
        file.data_dir.clone().zip(file_path),
    )
    .or_else(|| {
        default_data_dir(&env).map(|value| Setting {
            value,
            source: Source::Default,
        })
    });
    Ok(Settings {
        server,
        client_id,
        secret_key,
        data_dir,
        config_target: config_file.clone().or(path),
        config_file,
    })
}

/// The section of Testflinger's CLI configuration (`testflinger-cli.conf`, an INI file).
const TESTFLINGER_SECTION: &str = "testflinger-cli";

/// Whether `text` is Testflinger's INI configuration rather than ours (TOML).
fn is_testflinger_ini(text: &str) -> bool {
    text.lines().any(|l| l.trim() == "[testflinger-cli]")
}

fn parse_file(path: &Path, text: &str) -> Result<FileConfig, ConfigError> {
    if is_testflinger_ini(text) {
        return parse_testflinger_ini(path, text);
    }
    toml::from_str(text).map_err(|e| ConfigError::Invalid {
        path: path.to_owned(),
        message: e.to_string(),
    })
}

/// Testflinger's `testflinger-cli.conf`: the keys we share from its `[testflinger-cli]`
/// section; the others (Testflinger's own) are left alone.
fn parse_testflinger_ini(path: &Path, text: &str) -> Result<FileConfig, ConfigError> {
    let ini = load_ini(path, text)?;
    let section = ini.section(Some(TESTFLINGER_SECTION));
    let get = |key: &str| section.and_then(|s| s.get(key)).map(str::to_owned);
    Ok(FileConfig {
        server: get("server"),
        client_id: get("client_id"),
        secret_key: get("secret_key"),
        data_dir: get("data_dir").map(PathBuf::from),
    })
}

fn load_ini(path: &Path, text: &str) -> Result<ini::Ini, ConfigError> {
    ini::Ini::load_from_str(text).map_err(|e| ConfigError::Invalid {
        path: path.to_owned(),
        message: e.to_string(),
    })
}

/// `text` (Testflinger's INI configuration) with `key` set to `value`, or removed when empty.
fn set_in_testflinger_ini(path: &Path, text: &str, key: &str, value: &str) -> Result<String, ConfigError> {
    let mut ini = load_ini(path, text)?;
    if value.is_empty() {
        ini.delete_from(Some(TESTFLINGER_SECTION), key);
    } else {
        ini.with_section(Some(TESTFLINGER_SECTION)).set(key, value);
    }
    let mut out = Vec::new();
    ini.write_to(&mut out)
        .map_err(|e| ConfigError::Other(e.to_string()))?;
    String::from_utf8(out).map_err(|e| ConfigError::Other(e.to_string()))
}

/// `$XDG_CONFIG_HOME/flinger/config.toml`, else `$HOME/.config/flinger/config.toml`.
pub fn default_config_path(env: &dyn Fn(&str) -> Option<String>) -> Option<PathBuf> {
    let base = env("XDG_CONFIG_HOME")
        .map(PathBuf::from)
        .filter(|p| p.is_absolute())
        .or_else(|| env("HOME").map(|h| Path::new(&h).join(".config")))?;
    Some(base.join("flinger").join("config.toml"))
}

/// `$XDG_DATA_HOME/flinger`, else `$HOME/.local/share/flinger`.
pub fn default_data_dir(env: &dyn Fn(&str) -> Option<String>) -> Option<PathBuf> {
    let base = env("XDG_DATA_HOME")
        .map(PathBuf::from)
        .filter(|p| p.is_absolute())
        .or_else(|| env("HOME").map(|h| Path::new(&h).join(".local").join("share")))?;
    Some(base.join("flinger"))
}

/// `flinger config KEY=VALUE`: sets (or, with an empty value, removes) one key of the
/// configuration file, creating it if needed. Comments in the file are not kept.
pub fn write_setting(path: &Path, key: &str, value: &str) -> Result<(), ConfigError> {
    if !KEYS.contains(&key) {
        return Err(ConfigError::Other(format!(
            "unknown setting {key:?}: the settings are {}",
            KEYS.join(", ")
        )));
    }
    if key == "server" && !value.is_empty() {
        ServerUrl::parse(value).map_err(|message| ConfigError::BadServer {
            origin: Source::File(path.to_owned()),
            message,
        })?;
    }
    let existing = match std::fs::read_to_string(path) {
        Ok(text) => {
            parse_file(path, &text)?;
            text
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => String::new(),
        Err(source) => {
            return Err(ConfigError::Read {
                path: path.to_owned(),
                source,
            });
        }
    };
    // Testflinger's file stays an INI file that its own CLI can still read.
    let text = if is_testflinger_ini(&existing) {
        set_in_testflinger_ini(path, &existing, key, value)?
    } else {
        let mut table = existing
            .parse::<toml::Table>()
            .map_err(|e| ConfigError::Invalid {
                path: path.to_owned(),
                message: e.to_string(),
            })?;
        if value.is_empty() {
            table.remove(key);
        } else {
            table.insert(key.to_owned(), toml::Value::String(value.to_owned()));
        }
        toml::to_string(&table).map_err(|e| ConfigError::Other(e.to_string()))?
    };
    let write = || -> std::io::Result<()> {
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir)?;
        }
        // The file may hold a secret key: only its owner may read it.
        crate::files::write_private(path, text.as_bytes())
    };
    write().map_err(|source| ConfigError::Write {
        path: path.to_owned(),
        source,
    })
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
            ..Flags::default()
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
            config: Some("/nonexistent/flinger.toml".into()),
            ..Flags::default()
        };
        assert!(matches!(
            load(&flags, &env_of(&[("HOME", "/h")])),
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
                config: Some(path),
                ..Flags::default()
            },
            &env_of(&[("HOME", "/h")]),
        )
        .unwrap_err();
        assert!(err.to_string().contains("sever"), "{err}");
    }

    #[test]
    fn a_bad_server_url_names_where_it_came_from() {
        let err = load(
            &Flags::default(),
            &env_of(&[("FLINGER_SERVER", "ftp://x"), ("HOME", "/h")]),
        )
        .unwrap_err();
        assert!(err.to_string().contains("$FLINGER_SERVER"), "{err}");
        assert!(ServerUrl::parse("localhost:8080").is_err());
        assert!(ServerUrl::parse("http://h:1/?a=b").is_err());
    }

    #[test]
    fn credentials_and_data_dir_have_sources_too() {
        let home = config_home(None);
        let xdg = home.path().to_str().unwrap();
        let env = env_of(&[
            ("XDG_CONFIG_HOME", xdg),
            ("HOME", "/home/u"),
            ("TESTFLINGER_CLIENT_ID", "legacy"),
            ("FLINGER_SECRET_KEY", "s3cret"),
        ]);
        let s = load(&Flags::default(), &env).unwrap();
        let id = s.client_id.unwrap();
        assert_eq!(
            (id.value.as_str(), id.source),
            ("legacy", Source::Env("TESTFLINGER_CLIENT_ID"))
        );
        assert_eq!(s.secret_key.unwrap().source, Source::Env("FLINGER_SECRET_KEY"));
        let data = s.data_dir.unwrap();
        assert_eq!(data.value, PathBuf::from("/home/u/.local/share/flinger"));
        assert_eq!(data.source, Source::Default);
        let flags = Flags {
            client_id: Some("me".into()),
            ..Flags::default()
        };
        assert_eq!(
            load(&flags, &env).unwrap().client_id.unwrap().source,
            Source::Flag("--client-id")
        );
    }

    #[test]
    fn written_settings_are_read_back_from_the_file() {
        let home = config_home(None);
        let path = home.path().join("flinger/config.toml");
        write_setting(&path, "server", "http://written:9").unwrap();
        write_setting(&path, "client_id", "me").unwrap();
        let env = env_of(&[("XDG_CONFIG_HOME", home.path().to_str().unwrap()), ("HOME", "/h")]);
        let s = load(&Flags::default(), &env).unwrap();
        assert_eq!(s.server.value.as_str(), "http://written:9");
        assert!(matches!(s.server.source, Source::File(_)));
        assert_eq!(s.client_id.unwrap().value, "me");
        write_setting(&path, "client_id", "").unwrap();
        assert!(load(&Flags::default(), &env).unwrap().client_id.is_none());
        assert!(write_setting(&path, "sever", "x").is_err());
        assert!(write_setting(&path, "server", "ftp://x").is_err());
    }

    #[test]
    fn testflingers_ini_configuration_is_read_and_written_as_ini() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("testflinger-cli.conf");
        std::fs::write(
            &path,
            "[testflinger-cli]\nserver = https://tf.example.com\nclient_id = ci-bot\nsecret_key = s3cret\nlog_level = debug\n",
        )
        .unwrap();
        let flags = Flags {
            config: Some(path.clone()),
            ..Flags::default()
        };
        let s = load(&flags, &env_of(&[])).unwrap();
        assert_eq!(s.server.value.as_str(), "https://tf.example.com");
        assert_eq!(s.client_id.map(|c| c.value).as_deref(), Some("ci-bot"));
        assert_eq!(s.secret_key.map(|c| c.value).as_deref(), Some("s3cret"));
        write_setting(&path, "client_id", "other-bot").unwrap();
        let text = std::fs::read_to_string(&path).unwrap();
        assert!(
            text.contains("[testflinger-cli]") && text.contains("log_level"),
            "{text}"
        );
        let s = load(&flags, &env_of(&[])).unwrap();
        assert_eq!(s.client_id.map(|c| c.value).as_deref(), Some("other-bot"));
    }
}
