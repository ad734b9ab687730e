//! The lab seen from the outside: `list-queues`, `list-agents`, `agent-status NAME` and
//! `queue-status QUEUE` (agents, jobs and wait times of a queue).

use super::Ctx;
use crate::args::{AgentStatusArgs, ListAgentsArgs, OFFLINE_STATES, ONLINE_STATES, Pattern, QueueStatusArgs};
use crate::exit::{CliError, Exit};
use crate::output::{human_duration, table};
use flinger_api::QueueJob;
use serde_json::{Map, Value, json};

fn str_of<'a>(v: &'a Value, key: &str) -> &'a str {
    v.get(key).and_then(Value::as_str).unwrap_or("")
}

fn queues_of(v: &Value) -> Vec<&str> {
    v.get("queues")
        .and_then(Value::as_array)
        .map(|q| q.iter().filter_map(Value::as_str).collect())
        .unwrap_or_default()
}

pub async fn list_queues(ctx: &Ctx<'_>) -> Result<Exit, CliError> {
    let queues = ctx.client.queues().await?;
    let ui = ctx.ui;
    if ui.is_json() {
        ui.document(&json!(queues))?;
        return Ok(Exit::Success);
    }
    // Testflinger's words.
    ui.line("Advertised queues on this server:")?;
    for (name, description) in &queues {
        match description.as_str() {
            "" => ui.line(&format!(" {name}"))?,
            d => ui.line(&format!(" {name} - {d}"))?,
        }
    }
    Ok(Exit::Success)
}

/// Whether an agent passes `list-agents`' filters (ours, exact; Testflinger's `--filter-*`,
/// regular expressions searched anywhere in the value).
pub fn matches(agent: &Value, args: &ListAgentsArgs) -> bool {
    let regex = |p: &Option<Pattern>, key: &str| p.as_ref().is_none_or(|p| p.is_match(str_of(agent, key)));
    args.queue
        .as_deref()
        .is_none_or(|q| queues_of(agent).contains(&q))
        && (args.state.is_empty() || args.state.iter().any(|s| s == str_of(agent, "state")))
        && args
            .location
            .as_deref()
            .is_none_or(|l| l == str_of(agent, "location"))
        && args
            .provision_type
            .as_deref()
            .is_none_or(|t| t == str_of(agent, "provision_type"))
        && status_allowed(&args.filter_status, str_of(agent, "state"))
        && regex(&args.filter_name, "name")
        && args
            .filter_queues
            .as_ref()
            .is_none_or(|p| queues_of(agent).iter().any(|q| p.is_match(q)))
        && regex(&args.filter_location, "location")
        && regex(&args.filter_provision_type, "provision_type")
        && regex(&args.filter_comment, "comment")
}

/// `--filter-status`, as Testflinger reads it: the states named (`online` and `offline` stand
/// for their groups; every state when only exclusions are given), minus those after a `^`.
fn status_allowed(filter: &[String], state: &str) -> bool {
    if filter.is_empty() {
        return true;
    }
    let expand = |name: &str| -> Vec<&'static str> {
        match name {
            "online" => ONLINE_STATES.to_vec(),
            "offline" => OFFLINE_STATES.to_vec(),
            other => ONLINE_STATES
                .iter()
                .chain(&OFFLINE_STATES)
                .copied()
                .filter(|s| *s == other)
                .collect(),
        }
    };
    let (excluded, included): (Vec<&String>, Vec<&String>) = filter.iter().partition(|f| f.starts_with('^'));
    let mut allowed: Vec<&str> = included.iter().flat_map(|f| expand(f)).collect();
    if allowed.is_empty() {
        allowed = ONLINE_STATES.iter().chain(&OFFLINE_STATES).copied().collect();
    }
    let excluded: Vec<&str> = excluded.iter().flat_map(|f| expand(&f[1..])).collect();
    allowed.contains(&state) && !excluded.contains(&state)
}

/// One column of `list-agents --fields`.
fn field(agent: &Value, name: &str) -> String {
    match name {
        "status" => str_of(agent, "state").to_owned(),
        "queues" => queues_of(agent).join(", "),
        other => match str_of(agent, other) {
            "" => "-".to_owned(),
            v => v.to_owned(),
        },
    }
}

/// `list-agents --summary`: how many agents are online and offline, per state.
fn summary(agents: &[Value]) -> String {
    let count = |state: &str| agents.iter().filter(|a| str_of(a, "state") == state).count();
    let mut lines = vec![];
    for (title, states) in [("Online", &ONLINE_STATES[..]), ("Offline", &OFFLINE_STATES[..])] {
        let counts: Vec<(&str, usize)> = states.iter().map(|s| (*s, count(s))).collect();
        lines.push(format!(
            "{:<18}{}",
            format!("{title}:"),
            counts.iter().map(|(_, n)| n).sum::<usize>()
        ));
        lines.extend(
            counts
                .iter()
                .filter(|(_, n)| *n > 0)
                .map(|(s, n)| format!("  {s:<16}{n}")),
        );
    }
    lines.join("\n")
}

pub async fn list_agents(ctx: &Ctx<'_>, args: ListAgentsArgs) -> Result<Exit, CliError> {
    let mut agents: Vec<Value> = ctx
        .client
        .agents()
        .await?
        .into_iter()
        .filter(|a| matches(a, &args))
        .collect();
    agents.sort_by(|a, b| str_of(a, "name").cmp(str_of(b, "name")));
    let ui = ctx.ui;
    if ui.is_json() {
        ui.document(&Value::Array(agents))?;
        return Ok(Exit::Success);
    }
    if args.summary {
        ui.line(&summary(&agents))?;
        return Ok(Exit::Success);
    }
    if args.single_column {
        for a in &agents {
            ui.line(str_of(a, "name"))?;
        }
        return Ok(Exit::Success);
    }
    if agents.is_empty() {
        ui.hint("No agent matches.");
        return Ok(Exit::Success);
    }
    let fields: Vec<&str> = match args.fields.is_empty() {
        true => vec!["name", "status", "queues", "location", "job_id", "comment"],
        false => args.fields.iter().map(String::as_str).collect(),
    };
    let header: Vec<String> = fields
        .iter()
        .map(|f| f.replace('_', " ").to_uppercase())
        .collect();
    let rows: Vec<Vec<String>> = agents
        .iter()
        .map(|a| fields.iter().map(|f| field(a, f)).collect())
        .collect();
    ui.line(&table(
        &header.iter().map(String::as_str).collect::<Vec<_>>(),
        &rows,
    ))?;
    Ok(Exit::Success)
}

pub async fn agent_status(ctx: &Ctx<'_>, args: AgentStatusArgs) -> Result<Exit, CliError> {
    let name = &args.agent_name;
    let Some(agent) = ctx.client.agent(name).await? else {
        return Err(CliError::Usage(format!("Agent '{name}' does not exist.")));
    };
    let ui = ctx.ui;
    if ui.is_json() {
        // Testflinger's CLI renames `name` and `state` here; scripts written for it read these.
        let mut m: Map<String, Value> = agent.as_object().cloned().unwrap_or_default();
        if let Some(n) = m.remove("name") {
            m.insert("agent".into(), n);
        }
        if let Some(s) = m.remove("state") {
            m.insert("status".into(), s);
        }
        ui.document(&Value::Object(m))?;
        return Ok(Exit::Success);
    }
    ui.line(str_of(&agent, "state"))?;
    let mut details = vec![format!("queues: {}", queues_of(&agent).join(", "))];
    for (key, label) in [
        ("job_id", "job"),
        ("location", "location"),
        ("comment", "comment"),
        ("updated_at", "last seen"),
    ] {
        let v = str_of(&agent, key);
        if !v.is_empty() {
            details.push(format!("{label}: {v}"));
        }
    }
    for d in details {
        ui.status(&d);
    }
    Ok(Exit::Success)
}

/// A queue's jobs by what they are doing: waiting, running, completed (cancelled ones are left
/// out, as Testflinger does).
fn sort_jobs(jobs: &[QueueJob]) -> (Vec<Value>, Vec<Value>, Vec<Value>) {
    let (mut waiting, mut running, mut completed) = (vec![], vec![], vec![]);
    for j in jobs {
        let entry = json!({"job_id": j.job_id, "created_at": j.created_at});
        match j.job_state.as_str() {
            "waiting" => waiting.push(entry),
            "complete" | "completed" => completed.push(entry),
            "cancelled" => {}
            _ => running.push(entry),
        }
    }
    (waiting, running, completed)
}

pub async fn queue_status(ctx: &Ctx<'_>, args: QueueStatusArgs) -> Result<Exit, CliError> {
    let queue = &args.queue_name;
    let Some(agents) = ctx.client.queue_agents_raw(queue).await? else {
        // 404 (the queue is unknown, or no agent serves it) or 204: Testflinger's words.
        return Err(CliError::Usage(format!(
            "No agent is listening on queue '{queue}'."
        )));
    };
    let jobs = ctx.client.queue_jobs(queue).await?;
    let wait_times = ctx
        .client
        .wait_times(queue)
        .await?
        .and_then(|w| w.get(queue.as_str()).cloned());
    let (waiting, running, completed) = sort_jobs(&jobs);
    let ui = ctx.ui;
    if ui.is_json() {
        let mut doc =
            json!({"queue": queue, "agents": agents, "jobs_waiting": waiting, "wait_times": wait_times});
        if args.verbose {
            doc["jobs_running"] = json!(running);
            doc["jobs_completed"] = json!(completed);
        }
        ui.document(&doc)?;
        return Ok(Exit::Success);
    }
    let count = |f: &dyn Fn(&str) -> bool| agents.iter().filter(|a| f(str_of(a, "state"))).count();
    let mut lines = vec![
        format!("Agents in queue: {}", agents.len()),
        format!("Available:       {}", count(&|s| s == "waiting")),
        format!(
            "Busy:            {}",
            count(&|s| !matches!(s, "waiting" | "offline" | "maintenance"))
        ),
        format!("Maintenance:     {}", count(&|s| s == "maintenance")),
        format!("Offline:         {}", count(&|s| s == "offline")),
    ];
    if args.verbose {
        for (title, list) in [
            ("Jobs Waiting", &waiting),
            ("Jobs Running", &running),
            ("Jobs Completed", &completed),
        ] {
            if !list.is_empty() {
                lines.push(format!("\n{title}:"));
                lines.extend(
                    list.iter()
                        .map(|j| format!("  {} - {}", str_of(j, "job_id"), str_of(j, "created_at"))),
                );
            }
        }
    } else {
        lines.push(format!("Jobs waiting:    {}", waiting.len()));
        lines.push(format!("Jobs running:    {}", running.len()));
        lines.push(format!("Jobs completed:  {}", completed.len()));
    }
    if let Some(w) = &wait_times {
        let p = |k: &str| {
            w.get(k)
                .and_then(Value::as_f64)
                .map_or("?".into(), |s| human_duration(s.round() as u64))
        };
        lines.push(format!(
            "Wait before start (last 7 days): median {}, 90% under {}",
            p("50"),
            p("90")
        ));
    }
    ui.line(&lines.join("\n"))?;
    Ok(Exit::Success)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn list_agents_filters_combine() {
        let a = json!({"name": "a", "state": "waiting", "queues": ["q1", "q2"], "location": "lab1", "provision_type": "maas"});
        let mut args = ListAgentsArgs {
            queue: Some("q2".into()),
            state: vec!["maintenance".into(), "waiting".into()],
            location: Some("lab1".into()),
            ..Default::default()
        };
        assert!(matches(&a, &args));
        args.queue = Some("q3".into());
        assert!(!matches(&a, &args));
        args.queue = None;
        args.state = vec!["offline".into()];
        assert!(!matches(&a, &args));
    }

    #[test]
    fn status_filters_read_groups_and_exclusions_as_testflinger_does() {
        let f = |v: &[&str]| v.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        assert!(status_allowed(&[], "anything"));
        assert!(status_allowed(&f(&["online"]), "test"));
        assert!(!status_allowed(&f(&["online"]), "maintenance"));
        assert!(status_allowed(&f(&["offline"]), "maintenance"));
        assert!(!status_allowed(&f(&["online", "^waiting"]), "waiting"));
        assert!(status_allowed(&f(&["online", "^waiting"]), "provision"));
        assert!(status_allowed(&f(&["^online"]), "offline"));
        assert!(!status_allowed(&f(&["^online"]), "reserve"));
        assert!(status_allowed(&f(&["test", "offline"]), "test"));
    }

    #[test]
    fn regex_filters_search_anywhere_and_queues_match_any() {
        let a = json!({"name": "petilil", "state": "waiting", "queues": ["rpi4b", "arm"], "location": "TXR3-DH1", "comment": ""});
        let args = |f: &dyn Fn(&mut ListAgentsArgs)| {
            let mut a = ListAgentsArgs::default();
            f(&mut a);
            a
        };
        let p = |s: &str| Some(s.parse::<Pattern>().unwrap());
        assert!(matches(&a, &args(&|x| x.filter_name = p("petilil|audino"))));
        assert!(matches(&a, &args(&|x| x.filter_queues = p("^arm$"))));
        assert!(!matches(&a, &args(&|x| x.filter_queues = p("x86"))));
        assert!(matches(&a, &args(&|x| x.filter_location = p("DH1"))));
        assert!(!matches(&a, &args(&|x| x.filter_comment = p("cable"))));
        assert!("(unclosed".parse::<Pattern>().is_err());
    }

    #[test]
    fn the_summary_counts_agents_per_state() {
        let agents = [
            json!({"state": "waiting"}),
            json!({"state": "waiting"}),
            json!({"state": "test"}),
            json!({"state": "maintenance"}),
        ];
        assert_eq!(
            summary(&agents),
            "Online:           3\n  waiting         2\n  test            1\nOffline:          1\n  maintenance     1"
        );
    }

    #[test]
    fn queue_jobs_are_sorted_by_what_they_do() {
        let job = |state: &str| QueueJob {
            job_id: uuid::Uuid::new_v4(),
            created_at: "2026-12-04T10:00:00Z".into(),
            job_state: state.into(),
            job_queue: "q".into(),
        };
        let jobs = [job("waiting"), job("test"), job("complete"), job("cancelled")];
        let (w, r, c) = sort_jobs(&jobs);
        assert_eq!((w.len(), r.len(), c.len()), (1, 1, 1));
    }
}
