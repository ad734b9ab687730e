//! The lab seen from the outside: `list-queues`, `list-agents`, `agent-status NAME` and
//! `queue-status QUEUE` (agents, jobs and wait times of a queue).

use super::Ctx;
use crate::args::{AgentStatusArgs, ListAgentsArgs, OFFLINE_STATES, ONLINE_STATES, Pattern, QueueStatusArgs};
use crate::exit::{CliError, Exit};
use crate::model::{Agent, Answered};
use crate::output::{human_duration, table};
use flinger_api::QueueJob;
use serde_json::{Map, Value, json};

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
pub fn matches(agent: &Agent, args: &ListAgentsArgs) -> bool {
    let regex = |p: &Option<Pattern>, value: &str| p.as_ref().is_none_or(|p| p.is_match(value));
    args.queue
        .as_deref()
        .is_none_or(|q| agent.queues.iter().any(|a| a == q))
        && (args.state.is_empty() || args.state.contains(&agent.state))
        && args.location.as_deref().is_none_or(|l| l == agent.location)
        && args
            .provision_type
            .as_deref()
            .is_none_or(|t| t == agent.provision_type)
        && status_allowed(&args.filter_status, &agent.state)
        && regex(&args.filter_name, &agent.name)
        && args
            .filter_queues
            .as_ref()
            .is_none_or(|p| agent.queues.iter().any(|q| p.is_match(q)))
        && regex(&args.filter_location, &agent.location)
        && regex(&args.filter_provision_type, &agent.provision_type)
        && regex(&args.filter_comment, &agent.comment)
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

/// One column of `list-agents --fields`: a field of the agent as the server sent it (`status`
/// is its `state`).
fn field(agent: &Answered<Agent>, name: &str) -> String {
    let text = match name {
        "status" | "state" => agent.typed.state.clone(),
        "queues" => agent.typed.queues.join(", "),
        other => agent.raw[other].as_str().unwrap_or_default().to_owned(),
    };
    if text.is_empty() && name != "status" && name != "queues" {
        "-".to_owned()
    } else {
        text
    }
}

/// `list-agents --summary`: how many agents are online and offline, per state.
fn summary(agents: &[Answered<Agent>]) -> String {
    let count = |state: &str| agents.iter().filter(|a| a.typed.state == state).count();
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
    let mut agents: Vec<Answered<Agent>> = ctx
        .client
        .agents()
        .await?
        .into_iter()
        .filter(|a| matches(&a.typed, &args))
        .collect();
    agents.sort_by(|a, b| a.typed.name.cmp(&b.typed.name));
    let ui = ctx.ui;
    if ui.is_json() {
        ui.document(&Value::Array(agents.into_iter().map(|a| a.raw).collect()))?;
        return Ok(Exit::Success);
    }
    if args.summary {
        ui.line(&summary(&agents))?;
        return Ok(Exit::Success);
    }
    if args.single_column {
        for a in &agents {
            ui.line(&a.typed.name)?;
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
        let mut m: Map<String, Value> = agent.raw.as_object().cloned().unwrap_or_default();
        if let Some(n) = m.remove("name") {
            m.insert("agent".into(), n);
        }
        if let Some(s) = m.remove("state") {
            m.insert("status".into(), s);
        }
        ui.document(&Value::Object(m))?;
        return Ok(Exit::Success);
    }
    let agent = agent.typed;
    ui.line(&agent.state)?;
    let mut details = vec![format!("queues: {}", agent.queues.join(", "))];
    for (v, label) in [
        (&agent.job_id, "job"),
        (&agent.location, "location"),
        (&agent.comment, "comment"),
        (&agent.updated_at, "last seen"),
    ] {
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
fn sort_jobs(jobs: &[QueueJob]) -> (Vec<&QueueJob>, Vec<&QueueJob>, Vec<&QueueJob>) {
    let (mut waiting, mut running, mut completed) = (vec![], vec![], vec![]);
    for j in jobs {
        match j.job_state.as_str() {
            "waiting" => waiting.push(j),
            "complete" | "completed" => completed.push(j),
            "cancelled" => {}
            _ => running.push(j),
        }
    }
    (waiting, running, completed)
}

/// A job of `queue-status --json`, as Testflinger's CLI lists it.
fn listed(jobs: &[&QueueJob]) -> Value {
    jobs.iter()
        .map(|j| json!({"job_id": j.job_id, "created_at": j.created_at}))
        .collect()
}

pub async fn queue_status(ctx: &Ctx<'_>, args: QueueStatusArgs) -> Result<Exit, CliError> {
    let queue = &args.queue_name;
    let Some(agents) = ctx.client.queue_agents_answered(queue).await? else {
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
        let agents: Vec<&Value> = agents.iter().map(|a| &a.raw).collect();
        let mut doc = json!({"queue": queue, "agents": agents, "jobs_waiting": listed(&waiting),
            "wait_times": wait_times});
        if args.verbose {
            doc["jobs_running"] = listed(&running);
            doc["jobs_completed"] = listed(&completed);
        }
        ui.document(&doc)?;
        return Ok(Exit::Success);
    }
    let count = |f: &dyn Fn(&str) -> bool| agents.iter().filter(|a| f(&a.typed.state)).count();
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
                lines.extend(list.iter().map(|j| format!("  {} - {}", j.job_id, j.created_at)));
            }
        }
    } else {
        lines.push(format!("Jobs waiting:    {}", waiting.len()));
        lines.push(format!("Jobs running:    {}", running.len()));
        lines.push(format!("Jobs completed:  {}", completed.len()));
    }
    if let Some(w) = &wait_times {
        let p = |k: &str| w.get(k).map_or("?".into(), |s| human_duration(s.round() as u64));
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

    fn agent(v: Value) -> Agent {
        serde_json::from_value(v).unwrap()
    }

    #[test]
    fn list_agents_filters_combine() {
        let a = agent(
            json!({"name": "a", "state": "waiting", "queues": ["q1", "q2"], "location": "lab1", "provision_type": "maas"}),
        );
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
        let a = agent(
            json!({"name": "petilil", "state": "waiting", "queues": ["rpi4b", "arm"], "location": "TXR3-DH1", "comment": ""}),
        );
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
        let agents = ["waiting", "waiting", "test", "maintenance"]
            .map(|state| Answered::parse(json!({"name": "a", "state": state})).unwrap());
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
        assert_eq!(
            listed(&w),
            json!([{"job_id": jobs[0].job_id, "created_at": "2026-12-04T10:00:00Z"}])
        );
    }
}
