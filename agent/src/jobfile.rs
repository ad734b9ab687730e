//! `testflinger.json`, the job as device connectors read it from the run directory.
//!
//! Normally it holds the job as submitted, with each secret's *path* under `test_data.secrets`.
//! A Testflinger agent writes the secrets' *values* there instead (its server resolves them when
//! it hands the job out), and Testflinger's device connectors rely on it: their `runtest` copies
//! `test_data.secrets` from the file into the test commands' environment, over what the agent
//! passed. So while the test phase of a connector that runs Testflinger device connectors runs,
//! the file holds the values — and only then:
//!
//! - written just before the phase starts, 0600, through a fresh file renamed into place (never
//!   through a link the job may have left there);
//! - taken out the moment the phase's processes are gone, whatever ended it: the agent empties
//!   the file it wrote *through its own handle*, so a hard link the job made to it is emptied
//!   too, then puts the path form back;
//! - if the agent itself is killed meanwhile, it removes the run directory when it starts again
//!   ([`crate::leftovers::remove_abandoned_runs`]).
//!
//! What the test commands copy elsewhere is theirs, as is their environment; copies left in
//! `artifacts/` are masked before upload ([`crate::artifacts`]). This module never writes a
//! value anywhere but the run directory's `testflinger.json`.

use broker_schema::JobDefinition;
use serde_json::Value;
use std::collections::BTreeMap;
use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use uuid::Uuid;

/// The file's name in the run directory.
pub const NAME: &str = "testflinger.json";

/// The job as every phase but a Testflinger test phase reads it: secret paths, not values.
pub fn path_form(job: &JobDefinition, job_id: Uuid) -> Vec<u8> {
    serde_json::to_vec_pretty(&job.to_json_with_id(&job_id)).expect("JSON values serialize")
}

/// The job as a Testflinger agent writes it: `test_data.secrets` maps each variable to its
/// value (an unavailable secret is `""`, as in Testflinger).
pub fn values_form(job: &JobDefinition, job_id: Uuid, values: &BTreeMap<String, String>) -> Vec<u8> {
    let mut doc = job.to_json_with_id(&job_id);
    if let Some(secrets) = doc
        .get_mut("test_data")
        .and_then(|t| t.get_mut("secrets"))
        .and_then(Value::as_object_mut)
    {
        for (name, v) in secrets.iter_mut() {
            *v = Value::String(values.get(name).cloned().unwrap_or_default());
        }
    }
    serde_json::to_vec_pretty(&doc).expect("JSON values serialize")
}

/// Puts `contents` at `dir/testflinger.json` with `mode`: written to a new file of a random
/// name (`O_EXCL`, so never through something the job put there) and renamed over the old one.
/// Returns the handle of the file written.
fn replace(dir: &Path, contents: &[u8], mode: u32) -> std::io::Result<std::fs::File> {
    let tmp = dir.join(format!(".{NAME}.{}", Uuid::new_v4().simple()));
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(mode)
        .custom_flags(nix::libc::O_NOFOLLOW)
        .open(&tmp)?;
    let written = f
        .write_all(contents)
        .and_then(|()| f.sync_data())
        .and_then(|()| std::fs::rename(&tmp, dir.join(NAME)));
    if let Err(e) = written {
        let _ = std::fs::remove_file(&tmp);
        return Err(e);
    }
    Ok(f)
}

/// Writes the path form (the run directory's starting `testflinger.json`).
pub async fn write(dir: &Path, job: &JobDefinition, job_id: Uuid) -> std::io::Result<()> {
    let (dir, text) = (dir.to_owned(), path_form(job, job_id));
    tokio::task::spawn_blocking(move || replace(&dir, &text, 0o644).map(drop))
        .await
        .map_err(std::io::Error::other)?
}

/// `testflinger.json` while it holds the secrets' values. Put the path form back with
/// [`Revealed::conceal`] once the phase's processes are gone.
pub struct Revealed {
    dir: PathBuf,
    /// The file holding the values: emptied through this handle, wherever the job linked it.
    file: std::fs::File,
}

/// Writes the values form (0600) for the phase about to start.
pub async fn reveal(
    dir: &Path,
    job: &JobDefinition,
    job_id: Uuid,
    values: &BTreeMap<String, String>,
) -> std::io::Result<Revealed> {
    let (dir, text) = (dir.to_owned(), values_form(job, job_id, values));
    tokio::task::spawn_blocking(move || {
        let file = replace(&dir, &text, 0o600)?;
        Ok(Revealed { dir, file })
    })
    .await
    .map_err(std::io::Error::other)?
}

impl Revealed {
    /// Empties the file that held the values and puts the path form in its place. Emptying comes
    /// first and cannot be undone by the job (its processes are gone); the path form is a
    /// convenience for the later phases.
    pub async fn conceal(self, job: &JobDefinition, job_id: Uuid) -> std::io::Result<()> {
        let text = path_form(job, job_id);
        tokio::task::spawn_blocking(move || {
            self.file.set_len(0)?;
            self.file.sync_data()?;
            match replace(&self.dir, &text, 0o644) {
                // The job removed its run directory: nothing to put back.
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
                other => other.map(drop),
            }
        })
        .await
        .map_err(std::io::Error::other)?
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;
    use std::os::unix::fs::PermissionsExt;

    fn job() -> JobDefinition {
        JobDefinition::parse(json!({"job_queue": "q", "test_data": {"test_cmds": "x",
            "secrets": {"TOKEN": "ci/token", "GONE": "ci/gone"}}}))
        .unwrap()
    }

    #[tokio::test]
    async fn the_values_are_there_only_between_reveal_and_conceal_even_through_a_hard_link() {
        let dir = tempfile::tempdir().unwrap();
        let id = Uuid::new_v4();
        write(dir.path(), &job(), id).await.unwrap();
        let file = dir.path().join(NAME);
        let read = |p: &Path| std::fs::read_to_string(p).unwrap();
        assert!(read(&file).contains("ci/token"));

        let values = BTreeMap::from([("TOKEN".to_string(), "s3cret".to_string())]);
        let revealed = reveal(dir.path(), &job(), id, &values).await.unwrap();
        let doc: Value = serde_json::from_str(&read(&file)).unwrap();
        assert_eq!(
            doc["test_data"]["secrets"],
            json!({"TOKEN": "s3cret", "GONE": ""})
        );
        assert_eq!(doc["job_id"], json!(id.to_string()));
        assert_eq!(
            std::fs::metadata(&file).unwrap().permissions().mode() & 0o777,
            0o600
        );
        // The job keeps a hard link to it.
        std::fs::hard_link(&file, dir.path().join("kept.json")).unwrap();

        revealed.conceal(&job(), id).await.unwrap();
        assert!(read(&file).contains("ci/token") && !read(&file).contains("s3cret"));
        assert_eq!(read(&dir.path().join("kept.json")), "");
        let leftovers: Vec<_> = std::fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .filter(|n| n.starts_with('.'))
            .collect();
        assert!(leftovers.is_empty(), "{leftovers:?}");
    }

    #[tokio::test]
    async fn a_link_the_job_left_in_place_of_the_file_is_replaced_not_followed() {
        let dir = tempfile::tempdir().unwrap();
        let outside = dir.path().join("outside.txt");
        std::fs::write(&outside, "the agent's own file").unwrap();
        let run = dir.path().join("run");
        std::fs::create_dir(&run).unwrap();
        std::os::unix::fs::symlink(&outside, run.join(NAME)).unwrap();
        let values = BTreeMap::from([("TOKEN".to_string(), "s3cret".to_string())]);
        let r = reveal(&run, &job(), Uuid::new_v4(), &values).await.unwrap();
        assert_eq!(std::fs::read_to_string(&outside).unwrap(), "the agent's own file");
        assert!(!std::fs::symlink_metadata(run.join(NAME)).unwrap().is_symlink());
        r.conceal(&job(), Uuid::new_v4()).await.unwrap();
    }
}
