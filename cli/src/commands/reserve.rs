//! `flinger reserve`: builds a reserve job from flags or answers (queue, image, ssh keys,
//! timeout), submits it, follows it until the reservation is up, and prints how to connect.
//! `reserve status JOB` and `reserve extend JOB --by|--until` read and move a reservation's
//! deadline (**[ext]** `GET /v1/job/<id>/reservation`, `POST …/reservation/extend`).

use super::Ctx;
use super::poll::{self, Follow, Stop, Until};
use crate::args::{ExtendArgs, ReserveArgs, ReserveCommand};
use crate::exit::{CliError, Exit};
use crate::model::{JobId, LogStream};
use crate::output::{Ui, human_duration};
use broker_schema::DeviceClass;
use broker_schema::job::{JobFile, PhaseData, ReserveData, ReserveTimeout};
use flinger_api::{Extend, ExtendBy, Reservation};
use serde_json::{Value, json};
use std::io::{BufRead, IsTerminal, Write};

pub async fn run(ctx: &Ctx<'_>, args: ReserveArgs) -> Result<Exit, CliError> {
    match args.action {
        Some(ReserveCommand::Status(a)) => status(ctx, a.job_id).await,
        Some(ReserveCommand::Extend(a)) => extend(ctx, a).await,
        None => reserve(ctx, args).await,
    }
}

/// Whether questions can be asked: stdin and stderr are terminals.
fn can_ask() -> bool {
    std::io::stdin().is_terminal() && std::io::stderr().is_terminal()
}

fn ask(question: &str) -> Result<String, CliError> {
    eprint!("{question}");
    std::io::stderr().flush()?;
    let mut answer = String::new();
    std::io::stdin().lock().read_line(&mut answer)?;
    Ok(answer.trim().to_owned())
}

/// How long to extend a reservation by: seconds, or a form like 2h30m (not zero).
fn extend_by(text: &str) -> Option<ExtendBy> {
    let t = text.trim();
    if let Ok(secs) = t.parse::<u64>() {
        return (secs > 0).then_some(ExtendBy::Seconds(secs));
    }
    broker_schema::job::parse_human_duration(t)
        .filter(|d| !d.is_zero())
        .map(|_| ExtendBy::Text(t.to_owned()))
}

/// A reservation timeout as the job file takes it: seconds as a number, else a form like 2h30m.
pub fn parse_timeout(text: &str) -> Result<ReserveTimeout, CliError> {
    ReserveTimeout::parse(text)
        .ok_or_else(|| CliError::Usage(format!("--timeout {text:?}: use seconds or a form like 2h30m")))
}

/// An ssh key id the agent can install: `lp:USER`, `gh:USER`, or a public key itself.
pub fn check_key(key: &str) -> Result<(), CliError> {
    let k = key.trim();
    let id = |p: &str| {
        k.strip_prefix(p)
            .is_some_and(|u| !u.is_empty() && !u.contains(char::is_whitespace))
    };
    let public =
        ["ssh-", "ecdsa-", "sk-"].iter().any(|p| k.starts_with(p)) && k.split_whitespace().count() >= 2;
    if id("lp:") || id("gh:") || public {
        Ok(())
    } else {
        Err(CliError::Usage(format!(
            "ssh key {key:?}: use lp:USER (Launchpad), gh:USER (GitHub) or a public key"
        )))
    }
}

/// The provisioning an image stands for: a URL, or a name the queue advertises (its
/// provision data, as YAML or JSON).
fn image_provision(
    image: &str,
    images: &std::collections::BTreeMap<String, Value>,
) -> Result<PhaseData, CliError> {
    let url = |url: &str| PhaseData {
        connector: [("url".to_owned(), json!(url))].into(),
        ..PhaseData::default()
    };
    if image.starts_with("http://") || image.starts_with("https://") {
        return Ok(url(image));
    }
    let Some(data) = images.get(image) else {
        let known: Vec<&str> = images.keys().map(String::as_str).collect();
        return Err(CliError::Usage(format!(
            "image {image:?} is neither a URL nor an image of the queue{}",
            if known.is_empty() {
                " (it advertises none)".to_owned()
            } else {
                format!(" ({})", known.join(", "))
            }
        )));
    };
    let parsed = match data {
        Value::String(text) => serde_yaml_ng::from_str::<Value>(text).unwrap_or(Value::Null),
        other => other.clone(),
    };
    match parsed {
        Value::Object(_) => serde_json::from_value(parsed)
            .map_err(|e| CliError::Usage(format!("image {image:?}: its provision data: {e}"))),
        // An image whose data is not a mapping is taken as a URL to flash.
        _ => Ok(url(data.as_str().unwrap_or(image))),
    }
}

/// The reserve job the arguments (and answers) describe.
async fn build_job(ctx: &Ctx<'_>, args: &ReserveArgs) -> Result<JobFile, CliError> {
    let interactive = can_ask() && !ctx.ui.is_json();
    let queue = match &args.queue {
        Some(q) => q.clone(),
        None if interactive => {
            let queues = ctx.client.queues().await?;
            eprintln!("Queues:");
            for (name, d) in &queues {
                eprintln!(
                    "  {name}{}",
                    if d.is_empty() {
                        String::new()
                    } else {
                        format!(" - {d}")
                    }
                );
            }
            let q = ask("Queue: ")?;
            if q.is_empty() {
                return Err(CliError::Usage("no queue given".into()));
            }
            q
        }
        None => return Err(CliError::Usage("give the queue: --queue QUEUE".into())),
    };
    let job_queue =
        DeviceClass::parse(queue.clone()).map_err(|e| CliError::Usage(format!("queue {queue:?}: {e}")))?;
    let mut job = JobFile::for_queue(job_queue);
    let distro = |d: &str| {
        let mut connector = std::collections::BTreeMap::from([("distro".to_owned(), json!(d))]);
        if args.ephemeral {
            connector.insert("ephemeral".into(), json!(true));
        }
        PhaseData {
            connector,
            ..PhaseData::default()
        }
    };
    let provision = match (&args.distro, &args.image) {
        (Some(d), _) => Some(distro(d)),
        (None, Some(image)) => {
            let images = if image.starts_with("http") {
                Default::default()
            } else {
                ctx.client.images(&queue).await?
            };
            Some(image_provision(image, &images)?)
        }
        (None, None) if interactive => {
            let images = ctx.client.images(&queue).await.unwrap_or_default();
            if images.is_empty() {
                None
            } else {
                eprintln!(
                    "Images of queue {queue}: {}",
                    images.keys().cloned().collect::<Vec<_>>().join(", ")
                );
                match ask("Image (empty: as the device is): ")? {
                    i if i.is_empty() => None,
                    i => Some(image_provision(&i, &images)?),
                }
            }
        }
        (None, None) => None,
    };
    job.provision_data = provision;
    let keys = if !args.keys.is_empty() {
        args.keys.clone()
    } else if interactive {
        ask("SSH keys (lp:USER, gh:USER, comma-separated): ")?
            .split(',')
            .map(|k| k.trim().to_owned())
            .filter(|k| !k.is_empty())
            .collect()
    } else {
        return Err(CliError::Usage(
            "give at least one ssh key: -k lp:USER or -k gh:USER".into(),
        ));
    };
    if keys.is_empty() {
        return Err(CliError::Usage("no ssh key given".into()));
    }
    for k in &keys {
        check_key(k)?;
    }
    let timeout = match &args.timeout {
        Some(t) => parse_timeout(t)?,
        // Written out, as Testflinger's CLI does.
        None => broker_schema::job::DEFAULT_RESERVE_TIMEOUT.into(),
    };
    job.reserve_data = Some(ReserveData {
        ssh_keys: Some(keys),
        timeout: Some(timeout),
        ..ReserveData::default()
    });
    Ok(job)
}

async fn reserve(ctx: &Ctx<'_>, args: ReserveArgs) -> Result<Exit, CliError> {
    let ui = ctx.ui;
    let file = build_job(ctx, &args).await?;
    let queue = file.job_queue.to_string();
    let Value::Object(mut job) = serde_json::to_value(&file).map_err(std::io::Error::other)? else {
        unreachable!("a job file is a mapping")
    };
    let text = serde_json::to_string_pretty(&job).map_err(std::io::Error::other)?;
    if args.dry_run {
        if ui.is_json() {
            ui.document(&Value::Object(job))?;
        } else {
            ui.hint("The following job would be submitted:");
            ui.line(&text)?;
        }
        return Ok(Exit::Success);
    }
    if !ui.is_json() {
        ui.note(&format!("The following job will be submitted:\n{text}"));
    }
    if !args.yes && can_ask() && !ui.is_json() {
        let answer = ask("Proceed? (Y/n) ")?;
        if !matches!(answer.as_str(), "" | "y" | "Y" | "yes") {
            ui.note("Not submitted.");
            return Ok(Exit::Success);
        }
    }
    super::submit::check_queue(ctx, &queue, &[], false).await?;
    let id = super::submit::submit_doc(ctx, &mut job, "the reserve job").await?;
    if ui.is_json() {
        ui.event(&json!({"event": "submitted", "job_id": id.to_string()}))?;
    } else {
        ui.line("Job submitted successfully!")?;
        ui.line(&format!("job_id: {id}"))?;
    }
    match poll::follow(ctx, id, &Follow::from_start(LogStream::Output), Until::Reserved).await? {
        Stop::Ended(outcome) => {
            ui.note("The job ended before its reservation started.");
            Ok(outcome.exit())
        }
        Stop::PhaseEnded { .. } => unreachable!("reserve follows every phase"),
        Stop::Reserved(r) => {
            if ui.is_json() {
                let mut event = json!({"event": "reserved"});
                if let (Some(e), Ok(Value::Object(r))) = (event.as_object_mut(), serde_json::to_value(&r)) {
                    e.extend(r);
                }
                ui.event(&event)?;
            } else {
                print_connection(ui, id, &r)?;
            }
            Ok(Exit::Success)
        }
    }
}

/// How to reach the reserved device, how long it is held, and how to extend or end it.
fn print_connection(ui: &Ui, id: JobId, r: &Reservation) -> Result<(), CliError> {
    let s = |v: &Option<String>| v.clone().unwrap_or_default();
    let left = human_duration(r.remaining_secs);
    let agent = match s(&r.agent).as_str() {
        "" => String::new(),
        a => format!(" on agent {a}"),
    };
    ui.line(&format!(
        "Reservation is up{agent} until {} ({left} left).",
        r.until
    ))?;
    match s(&r.ssh).as_str() {
        "" => ui.line(&format!(
            "Device: {}",
            match s(&r.device_ip).as_str() {
                "" => "(address unknown)",
                ip => ip,
            }
        ))?,
        ssh => ui.line(&format!("Connect with: {ssh}"))?,
    }
    ui.line(&format!("Extend it with: flinger reserve extend {id} --by 1h"))?;
    ui.line(&format!("End it with:    flinger cancel {id}"))?;
    Ok(())
}

async fn status(ctx: &Ctx<'_>, id: JobId) -> Result<Exit, CliError> {
    let Some(r) = ctx.client.reservation(id).await? else {
        let state = ctx
            .client
            .info(id)
            .await
            .map(|i| i.job_state)
            .unwrap_or_else(|_| "unknown".into());
        return Err(CliError::Usage(format!(
            "job {id} holds no reservation (it is {state})"
        )));
    };
    let ui = ctx.ui;
    if ui.is_json() {
        ui.document(&r)?;
        return Ok(Exit::Success);
    }
    let s = |v: &Option<String>| v.clone().unwrap_or_default();
    let rows = [
        ("agent", s(&r.agent)),
        ("device_ip", s(&r.device_ip)),
        ("ssh", s(&r.ssh)),
        ("started_at", r.started_at.clone()),
        ("until", r.until.clone()),
        ("remaining", human_duration(r.remaining_secs)),
    ];
    for (k, v) in rows.iter().filter(|(_, v)| !v.is_empty()) {
        ui.line(&format!("{k}: {v}"))?;
    }
    Ok(Exit::Success)
}

async fn extend(ctx: &Ctx<'_>, args: ExtendArgs) -> Result<Exit, CliError> {
    let id = args.job_id;
    let body =
        match (&args.by, &args.until) {
            (Some(by), _) => Extend {
                by: Some(extend_by(by).ok_or_else(|| {
                    CliError::Usage(format!("--by {by:?}: use seconds or a form like 2h30m"))
                })?),
                until: None,
            },
            (None, Some(until)) => {
                if broker_schema::Millis::parse_rfc3339(until).is_none() {
                    return Err(CliError::Usage(format!(
                        "--until {until:?}: use an ISO-8601 time such as 2026-11-25T18:00:00Z"
                    )));
                }
                Extend {
                    by: None,
                    until: Some(until.clone()),
                }
            }
            (None, None) => unreachable!("clap requires --by or --until"),
        };
    let answer = ctx.client.extend(id, &body).await?;
    let ui = ctx.ui;
    if ui.is_json() {
        ui.document(&answer)?;
    } else {
        let until = answer.reserve_until.as_deref().unwrap_or("?");
        ui.line(&format!("The reservation of job {id} now ends at {until}."))?;
        if !answer.detail.is_empty() {
            ui.status(&answer.detail);
        }
    }
    Ok(Exit::Success)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_extension_is_positive_seconds_or_a_duration() {
        assert_eq!(extend_by("30"), Some(ExtendBy::Seconds(30)));
        assert_eq!(extend_by(" 2h30m "), Some(ExtendBy::Text("2h30m".into())));
        assert_eq!(extend_by("0"), None);
        assert_eq!(extend_by("soon"), None);
    }

    #[test]
    fn timeouts_are_seconds_or_durations() {
        let written = |t: &str| serde_json::to_value(parse_timeout(t).unwrap()).unwrap();
        assert_eq!(written("3600"), json!(3600));
        assert_eq!(written("2h30m"), json!("2h30m"));
        assert!(parse_timeout("soon").is_err());
        assert!(parse_timeout("0").is_err());
    }

    #[test]
    fn keys_are_ids_or_public_keys() {
        assert!(check_key("lp:alice").is_ok());
        assert!(check_key("gh:bob").is_ok());
        assert!(check_key("ssh-ed25519 AAAAC3Nz alice@host").is_ok());
        assert!(check_key("alice").is_err());
        assert!(check_key("lp:").is_err());
    }

    #[test]
    fn an_image_is_a_url_or_an_advertised_name() {
        let images = std::collections::BTreeMap::from([
            ("noble".to_owned(), json!("distro: noble")),
            ("custom".to_owned(), json!("http://images/custom.img")),
        ]);
        let provision = |image: &str| serde_json::to_value(image_provision(image, &images).unwrap()).unwrap();
        assert_eq!(provision("noble"), json!({"distro": "noble"}));
        assert_eq!(provision("custom"), json!({"url": "http://images/custom.img"}));
        assert_eq!(provision("https://x/y.img"), json!({"url": "https://x/y.img"}));
        assert!(image_provision("nope", &images).is_err());
    }
}
