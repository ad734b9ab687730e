//! `flinger config [KEY | KEY=VALUE]`: every setting with the value in force and where it came
//! from (flag, environment, configuration file, default); one setting; or writes one into the
//! configuration file. The secret key is never printed.

use super::Ctx;
use crate::args::ConfigArgs;
use crate::config::{self, Setting, Source};
use crate::exit::{CliError, Exit};
use crate::output::table;
use serde_json::{Map, json};

/// One setting as shown: its value (masked for the secret key) and its source.
fn shown(key: &str, setting: Option<(String, &Source)>) -> (String, Option<Source>) {
    match setting {
        Some((_, source)) if key == "secret_key" => ("********".into(), Some(source.clone())),
        Some((value, source)) => (value, Some(source.clone())),
        None => (String::new(), None),
    }
}

fn setting_of<T: ToString>(s: &Option<Setting<T>>) -> Option<(String, &Source)> {
    s.as_ref().map(|s| (s.value.to_string(), &s.source))
}

pub fn run(ctx: &Ctx<'_>, args: ConfigArgs) -> Result<Exit, CliError> {
    let s = &ctx.settings;
    let ui = ctx.ui;
    if let Some(setting) = &args.setting
        && let Some((key, value)) = setting.split_once('=')
    {
        let path = s.config_target.as_deref().ok_or_else(|| {
            CliError::Usage("no configuration file: set $HOME, $XDG_CONFIG_HOME or --config".into())
        })?;
        config::write_setting(path, key.trim(), value.trim())?;
        ui.line(&format!(
            "{} = {} (written to {})",
            key.trim(),
            if key.trim() == "secret_key" {
                "********"
            } else {
                value.trim()
            },
            path.display()
        ))?;
        return Ok(Exit::Success);
    }
    let data_dir = s.data_dir.as_ref().map(|d| Setting {
        value: d.value.display().to_string(),
        source: d.source.clone(),
    });
    let rows: Vec<(&str, (String, Option<Source>))> = vec![
        (
            "server",
            shown("server", Some((s.server.value.to_string(), &s.server.source))),
        ),
        ("client_id", shown("client_id", setting_of(&s.client_id))),
        ("secret_key", shown("secret_key", setting_of(&s.secret_key))),
        ("data_dir", shown("data_dir", setting_of(&data_dir))),
    ];
    if let Some(key) = &args.setting {
        let Some((_, (value, source))) = rows.iter().find(|(k, _)| k == key) else {
            return Err(CliError::Usage(format!(
                "unknown setting {key:?}: the settings are {}",
                config::KEYS.join(", ")
            )));
        };
        if ui.is_json() {
            ui.document(&json!({"key": key, "value": source.as_ref().map(|_| value), "source": source.as_ref().map(Source::kind), "from": source.as_ref().map(ToString::to_string)}))?;
        } else {
            ui.line(&format!("{key} = {value}"))?;
        }
        return Ok(Exit::Success);
    }
    let login = ctx.client.session().map(|l| {
        json!({"client_id": l.client_id, "expires_at": l.expires_at, "refreshable": l.refresh_token.is_some()})
    });
    let path_of = |p: Option<&std::path::Path>| p.map(|p| p.display().to_string());
    let login_file = path_of(ctx.client.sessions().path());
    let history_file = path_of(ctx.history.path());
    if ui.is_json() {
        let mut settings = Map::new();
        for (key, (value, source)) in &rows {
            settings.insert(
                (*key).to_owned(),
                json!({
                    "value": source.as_ref().map(|_| value),
                    "source": source.as_ref().map(Source::kind),
                    "from": source.as_ref().map(ToString::to_string),
                }),
            );
        }
        ui.document(&json!({
            "settings": settings,
            "config_file": s.config_target.as_ref().map(|p| p.display().to_string()),
            "config_file_read": s.config_file.is_some(),
            "login": login,
            "login_file": login_file,
            "history_file": history_file,
        }))?;
        return Ok(Exit::Success);
    }
    let table_rows: Vec<Vec<String>> = rows
        .iter()
        .map(|(key, (value, source))| {
            vec![
                (*key).to_owned(),
                if source.is_some() {
                    value.clone()
                } else {
                    "(not set)".into()
                },
                source.as_ref().map_or(String::new(), |s| format!("from {s}")),
            ]
        })
        .collect();
    ui.line(&table(&["SETTING", "VALUE", "SOURCE"], &table_rows))?;
    ui.line("")?;
    let file = match (&s.config_file, &s.config_target) {
        (Some(p), _) => format!("{} (read)", p.display()),
        (None, Some(p)) => format!("{} (absent)", p.display()),
        (None, None) => "(none)".into(),
    };
    ui.line(&format!("configuration file: {file}"))?;
    let login = match ctx.client.session() {
        Some(l) => format!("client {} on {}", l.client_id, s.server.value),
        None => "none".into(),
    };
    ui.line(&format!("login: {login}"))?;
    ui.line(&format!(
        "login file: {}",
        login_file.as_deref().unwrap_or("(none)")
    ))?;
    ui.line(&format!(
        "job history: {}",
        history_file.as_deref().unwrap_or("(none)")
    ))?;
    Ok(Exit::Success)
}
