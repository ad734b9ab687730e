//! `flinger admin …`: taking agents out of service and back (`set agent-status`), and managing
//! clients (`set|get|delete client-permissions`), and the lab's retention (`get retention`). Needs a login with the admin or manager role;
//! the server decides what the role allows (403 exits 6).

use super::Ctx;
use crate::args::{AdminCommand, AdminDelete, AdminGet, AdminSet, SetAgentStatusArgs, SetClientArgs};
use crate::exit::{CliError, Exit};
use flinger_api::{ClientIn, RetentionSettings};
use serde::de::DeserializeOwned;
use serde_json::{Value, json};
use std::collections::BTreeMap;

pub async fn run(ctx: &Ctx<'_>, command: AdminCommand) -> Result<Exit, CliError> {
    ctx.require_login("an admin command").await?;
    match command {
        AdminCommand::Set(AdminSet::AgentStatus(args)) => set_agent_status(ctx, args).await,
        AdminCommand::Set(AdminSet::ClientPermissions(args)) => set_client(ctx, args).await,
        AdminCommand::Get(AdminGet::ClientPermissions(args)) => {
            let v = ctx
                .client
                .client_permissions(args.testflinger_client_id.as_deref())
                .await?;
            ctx.ui.document(&v)?;
            Ok(Exit::Success)
        }
        AdminCommand::Get(AdminGet::Retention) => {
            let r = ctx.client.retention().await?;
            if ctx.ui.is_json() {
                ctx.ui.document(&r)?;
            } else {
                for line in retention_lines(&r) {
                    ctx.ui.line(&line)?;
                }
            }
            Ok(Exit::Success)
        }
        AdminCommand::Delete(AdminDelete::ClientPermissions(args)) => {
            let id = &args.testflinger_client_id;
            ctx.client.delete_client_permissions(id).await?;
            if ctx.ui.is_json() {
                ctx.ui.document(&json!({"client_id": id, "deleted": true}))?;
            } else {
                ctx.ui.line(&format!("Successfully deleted {id} from database"))?;
            }
            Ok(Exit::Success)
        }
    }
}

/// The retention settings in words.
fn retention_lines(r: &RetentionSettings) -> Vec<String> {
    let kept = |days: Option<f64>| match days {
        Some(d) => format!("{d} days"),
        None => "forever".to_owned(),
    };
    let mut lines = vec![format!(
        "Ended jobs are kept {} (removed every {} s)",
        kept(r.keep_days),
        r.purge_every_secs
    )];
    for (queue, days) in &r.per_queue {
        lines.push(format!("  queue {queue}: kept {}", kept(*days)));
    }
    lines.push(format!("Recorded by {} at {}", r.recorded_by, r.recorded_at));
    lines
}

/// Phases: an agent in one of them is running a job, and a new state waits for its end.
fn is_busy(state: &str) -> bool {
    !matches!(state, "waiting" | "offline" | "maintenance" | "restart" | "")
}

async fn set_agent_status(ctx: &Ctx<'_>, args: SetAgentStatusArgs) -> Result<Exit, CliError> {
    let state = args.status.api_name();
    if state == "offline" && args.comment.as_deref().is_none_or(|c| c.trim().is_empty()) {
        return Err(CliError::Usage(
            "a --comment is required when setting agents offline".into(),
        ));
    }
    let comment = args.comment.clone().unwrap_or_default();
    let ui = ctx.ui;
    let mut results = vec![];
    let mut worst = Exit::Success;
    for name in &args.agents {
        let outcome = async {
            let Some(agent) = ctx.client.agent(name).await? else {
                return Err(CliError::Usage(format!("Agent {name} does not exist.")));
            };
            let before = agent.typed.state;
            ctx.client.set_agent_state(name, state, &comment).await?;
            Ok(before)
        }
        .await;
        match outcome {
            Ok(before) => {
                let deferred = is_busy(&before);
                if ui.is_json() {
                    results.push(json!({"agent": name, "status": state, "deferred": deferred}));
                } else if deferred {
                    ui.line(&format!(
                        "Agent {name} processing job. Status {state} deferred until job completion"
                    ))?;
                } else {
                    ui.line(&format!("Agent {name} status is now: {state}"))?;
                }
            }
            Err(e) => {
                if worst == Exit::Success {
                    worst = e.exit();
                }
                if ui.is_json() {
                    results.push(json!({"agent": name, "error": e.to_string()}));
                } else {
                    ui.error(&e);
                }
            }
        }
    }
    if ui.is_json() {
        ui.document(&Value::Array(results))?;
    }
    Ok(worst)
}

/// `{"q": 10}` (JSON) or `q=10,*=5`, into a map of whole numbers of the API's width (`N`).
pub fn parse_limits<N>(flag: &str, text: &str) -> Result<BTreeMap<String, N>, CliError>
where
    N: std::str::FromStr + DeserializeOwned,
{
    let bad = |why: String| {
        CliError::Usage(format!(
            "{flag} {text:?}: {why} (use JSON like {{\"queue\": 10}} or queue=10,*=5)"
        ))
    };
    if text.trim_start().starts_with('{') {
        return serde_json::from_str(text).map_err(|e| bad(e.to_string()));
    }
    let mut limits = BTreeMap::new();
    for pair in text.split(',').map(str::trim).filter(|p| !p.is_empty()) {
        let (k, v) = pair
            .split_once('=')
            .ok_or_else(|| bad(format!("{pair:?} has no `=`")))?;
        let n = v
            .trim()
            .parse()
            .map_err(|_| bad(format!("{v:?} is not a whole number in range")))?;
        limits.insert(k.trim().to_owned(), n);
    }
    Ok(limits)
}

/// `--data`: Testflinger's whole body (which may also name the client, and spells the
/// reservation limits `max_reservation`), read as the API's [`ClientIn`]; a field it does not
/// have is named in the error. Also the client it names, if any.
fn client_data(text: &str) -> Result<(ClientIn, Option<String>), CliError> {
    let mut body = match serde_json::from_str(text) {
        Ok(Value::Object(m)) => m,
        Ok(_) => return Err(CliError::Usage("--data must be a JSON object".into())),
        Err(e) => return Err(CliError::Usage(format!("--data is not JSON: {e}"))),
    };
    let id = match body.remove("client_id") {
        None => None,
        Some(Value::String(id)) => Some(id),
        Some(_) => return Err(CliError::Usage("--data: client_id must be a string".into())),
    };
    if let Some(v) = body.remove("max_reservation") {
        body.insert("max_reservation_time".into(), v);
    }
    let client =
        serde_json::from_value(Value::Object(body)).map_err(|e| CliError::Usage(format!("--data: {e}")))?;
    Ok((client, id))
}

async fn set_client(ctx: &Ctx<'_>, args: SetClientArgs) -> Result<Exit, CliError> {
    let (mut body, from_data) = match &args.data {
        Some(text) => client_data(text)?,
        None => (ClientIn::default(), None),
    };
    let Some(id) = args.testflinger_client_id.clone().or(from_data) else {
        return Err(CliError::Usage(
            "give the client: --testflinger-client-id ID".into(),
        ));
    };
    if let Some(s) = args.testflinger_client_secret {
        body.client_secret = Some(s);
    }
    if let Some(r) = args.role {
        body.role = Some(r);
    }
    if let Some(e) = args.email {
        body.email = Some(e);
    }
    if let Some(p) = &args.max_priority {
        body.max_priority = Some(parse_limits("--max-priority", p)?);
    }
    if let Some(r) = &args.max_reservation {
        body.max_reservation_time = Some(parse_limits("--max-reservation", r)?);
    }
    let message = ctx.client.put_client_permissions(&id, &body).await?;
    if ctx.ui.is_json() {
        ctx.ui.document(&json!({"client_id": id, "message": message}))?;
    } else {
        ctx.ui.line(&message)?;
    }
    Ok(Exit::Success)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn limits_are_json_or_pairs() {
        let limits = |text| parse_limits::<u32>("--max-priority", text);
        let map = |pairs: &[(&str, u32)]| {
            pairs
                .iter()
                .map(|(k, v)| (k.to_string(), *v))
                .collect::<BTreeMap<_, _>>()
        };
        assert_eq!(limits(r#"{"q": 10}"#).unwrap(), map(&[("q", 10)]));
        assert_eq!(limits("q=10, *=5").unwrap(), map(&[("q", 10), ("*", 5)]));
        assert!(limits("q=ten").is_err());
        assert!(limits("q").is_err());
        assert!(limits("q=99999999999").is_err(), "wider than a priority");
    }

    #[test]
    fn testflingers_body_is_the_apis_client_with_its_spellings() {
        let (client, id) =
            client_data(r#"{"client_id": "bob", "role": "manager", "max_reservation": {"q": 3600}}"#)
                .unwrap();
        assert_eq!(id.as_deref(), Some("bob"));
        assert_eq!(client.role.as_deref(), Some("manager"));
        assert_eq!(client.max_reservation_time.unwrap()["q"], 3600);
        let err = client_data(r#"{"rolez": "admin"}"#).unwrap_err().to_string();
        assert!(err.contains("rolez"), "{err}");
        assert!(client_data("[1]").is_err());
    }
}
