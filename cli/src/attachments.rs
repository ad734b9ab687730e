//! Packing a job's attachments, as Testflinger's CLI packs them.
//!
//! Each `attachments` entry of `provision_data`, `firmware_update_data` and `test_data` that
//! names a `local` file or directory is added to one tar.gz under `<phase>/<agent path>`, where
//! the agent path is the entry's `agent` (made relative), else the local path relative to the
//! reference directory, else the file's name. The entry is then rewritten as the agent sees it:
//! `local` removed, `agent` set. The agent unpacks the archive into `attachments/`, so a phase
//! finds its files under `attachments/<phase>/<agent path>`.
//!
//! Relative local paths start from the reference directory: `--attachments-relative-to`, else
//! the job file's directory, else (stdin) the current directory.

use serde_json::{Map, Value};
use std::path::{Component, Path, PathBuf};

/// The phases whose data may carry attachments.
pub const PHASES: [&str; 3] = ["provision", "firmware_update", "test"];

#[derive(Debug, thiserror::Error)]
pub enum AttachmentError {
    #[error("attachment {local:?} ({phase}_data): {source}")]
    Read {
        phase: String,
        local: String,
        source: std::io::Error,
    },
    #[error("attachment in {phase}_data.attachments[{index}]: {message}")]
    Invalid {
        phase: String,
        index: usize,
        message: String,
    },
    #[error("cannot write the attachments archive: {0}")]
    Archive(std::io::Error),
    #[error("--attachments-relative-to {0}: {1}")]
    Reference(PathBuf, std::io::Error),
}

/// The packed archive (a temporary file, removed when dropped) and what is in it.
pub struct Packed {
    pub archive: tempfile::NamedTempFile,
    pub files: usize,
}

/// Whether the job lists attachments (the server then waits for their upload).
pub fn has_attachments(doc: &Map<String, Value>) -> bool {
    PHASES.iter().any(|p| {
        doc.get(&format!("{p}_data"))
            .and_then(|d| d.get("attachments"))
            .and_then(Value::as_array)
            .is_some_and(|a| !a.is_empty())
    })
}

/// The directory relative local paths start from.
pub fn reference_dir(
    relative_to: Option<&Path>,
    job_file: Option<&Path>,
) -> Result<PathBuf, AttachmentError> {
    let dir = match (relative_to, job_file) {
        (Some(d), _) => d.to_path_buf(),
        (None, Some(f)) => match f.parent() {
            Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
            _ => PathBuf::from("."),
        },
        (None, None) => PathBuf::from("."),
    };
    dir.canonicalize().map_err(|e| AttachmentError::Reference(dir, e))
}

/// Packs the attachments of `doc` (rewriting their entries); `None` when it lists none.
pub fn pack(doc: &mut Map<String, Value>, reference: &Path) -> Result<Option<Packed>, AttachmentError> {
    if !has_attachments(doc) {
        return Ok(None);
    }
    let archive = tempfile::Builder::new()
        .prefix("flinger-attachments-")
        .suffix(".tar.gz")
        .tempfile()
        .map_err(AttachmentError::Archive)?;
    let gz = flate2::write::GzEncoder::new(
        archive.reopen().map_err(AttachmentError::Archive)?,
        flate2::Compression::default(),
    );
    let mut tar = tar::Builder::new(gz);
    tar.follow_symlinks(true);
    let mut files = 0;
    for phase in PHASES {
        let Some(list) = doc
            .get_mut(&format!("{phase}_data"))
            .and_then(|d| d.get_mut("attachments"))
            .and_then(Value::as_array_mut)
        else {
            continue;
        };
        for (index, entry) in list.iter_mut().enumerate() {
            let invalid = |message: &str| AttachmentError::Invalid {
                phase: phase.to_owned(),
                index,
                message: message.to_owned(),
            };
            let Some(entry) = entry.as_object_mut() else {
                return Err(invalid("an attachment is a mapping with `local` (and `agent`)"));
            };
            let Some(local) = entry.get("local") else { continue };
            let local = local
                .as_str()
                .ok_or_else(|| invalid("`local` is not a string"))?
                .to_owned();
            let read_error = |source| AttachmentError::Read {
                phase: phase.to_owned(),
                local: local.clone(),
                source,
            };
            let local_path = reference.join(&local).canonicalize().map_err(read_error)?;
            let agent_path = match entry.get("agent") {
                Some(a) => {
                    let a = a.as_str().ok_or_else(|| invalid("`agent` is not a string"))?;
                    strip_root(Path::new(a))
                }
                None => match local_path.strip_prefix(reference) {
                    Ok(rel) => rel.to_path_buf(),
                    Err(_) => PathBuf::from(local_path.file_name().unwrap_or_default()),
                },
            };
            if agent_path.as_os_str().is_empty()
                || agent_path
                    .components()
                    .any(|c| !matches!(c, Component::Normal(_)))
            {
                return Err(invalid(&format!(
                    "the agent path {:?} must stay inside the phase's attachments folder",
                    agent_path.display().to_string()
                )));
            }
            let name = Path::new(phase).join(&agent_path);
            let added = if local_path.is_dir() {
                tar.append_dir_all(&name, &local_path)
            } else {
                tar.append_path_with_name(&local_path, &name)
            };
            added.map_err(read_error)?;
            files += 1;
            entry.remove("local");
            entry.insert("agent".into(), Value::String(agent_path.display().to_string()));
        }
    }
    tar.into_inner()
        .and_then(|gz| gz.finish())
        .map_err(AttachmentError::Archive)?;
    Ok(Some(Packed { archive, files }))
}

/// `/a/b` → `a/b`: an absolute agent path lands inside the attachments folder.
fn strip_root(p: &Path) -> PathBuf {
    p.components()
        .filter(|c| !matches!(c, Component::RootDir | Component::Prefix(_) | Component::CurDir))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;
    use std::io::Read;

    fn names(archive: &Path) -> Vec<(String, String)> {
        let gz = flate2::read::GzDecoder::new(std::fs::File::open(archive).unwrap());
        let mut tar = tar::Archive::new(gz);
        let mut out = vec![];
        for e in tar.entries().unwrap() {
            let mut e = e.unwrap();
            let name = e.path().unwrap().display().to_string();
            let mut text = String::new();
            if e.header().entry_type().is_file() {
                e.read_to_string(&mut text).unwrap();
            }
            out.push((name, text));
        }
        out
    }

    #[test]
    fn attachments_are_packed_per_phase_under_their_agent_path() {
        let dir = tempfile::tempdir().unwrap();
        let reference = dir.path().canonicalize().unwrap();
        std::fs::create_dir_all(reference.join("data/sub")).unwrap();
        std::fs::write(reference.join("data/a.txt"), "A").unwrap();
        std::fs::write(reference.join("data/sub/b.txt"), "B").unwrap();
        std::fs::write(reference.join("script.sh"), "S").unwrap();
        let mut doc = json!({
            "job_queue": "q",
            "provision_data": {"attachments": [{"local": "script.sh", "agent": "/bin/flash.sh"}]},
            "test_data": {"attachments": [{"local": "data/a.txt"}, {"local": "data/sub"}, {"agent": "already/there"}]},
        });
        let packed = pack(doc.as_object_mut().unwrap(), &reference).unwrap().unwrap();
        assert_eq!(packed.files, 3);
        let entries = names(packed.archive.path());
        assert!(
            entries.contains(&("provision/bin/flash.sh".into(), "S".into())),
            "{entries:?}"
        );
        assert!(
            entries.contains(&("test/data/a.txt".into(), "A".into())),
            "{entries:?}"
        );
        assert!(
            entries.contains(&("test/data/sub/b.txt".into(), "B".into())),
            "{entries:?}"
        );
        assert_eq!(
            doc["test_data"]["attachments"],
            json!([{"agent": "data/a.txt"}, {"agent": "data/sub"}, {"agent": "already/there"}])
        );
        assert_eq!(
            doc["provision_data"]["attachments"],
            json!([{"agent": "bin/flash.sh"}])
        );
    }

    #[test]
    fn a_missing_file_or_an_escaping_agent_path_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let reference = dir.path().canonicalize().unwrap();
        let mut doc = json!({"test_data": {"attachments": [{"local": "nope.txt"}]}});
        let err = pack(doc.as_object_mut().unwrap(), &reference).err().unwrap();
        assert!(err.to_string().contains("nope.txt"), "{err}");
        std::fs::write(reference.join("x"), "x").unwrap();
        let mut doc = json!({"test_data": {"attachments": [{"local": "x", "agent": "../../etc/x"}]}});
        assert!(pack(doc.as_object_mut().unwrap(), &reference).is_err());
    }

    #[test]
    fn a_job_without_attachments_packs_nothing() {
        let mut doc = json!({"job_queue": "q", "test_data": {"test_cmds": "ls", "attachments": []}});
        assert!(
            pack(doc.as_object_mut().unwrap(), Path::new("/"))
                .unwrap()
                .is_none()
        );
    }
}
