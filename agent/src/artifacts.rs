//! A job's artifacts: whatever its phases left in the run directory's `artifacts/` folder is
//! packed into a tar.gz (entries `artifacts/…`, as Testflinger packs them) and uploaded to the
//! gateway at the end of the run, before the run is reported finished, so that the artifacts
//! are there when the job shows as complete. No folder, nothing to do.
//!
//! Symbolic links are stored as links, never followed, and an `artifacts` that is itself a link
//! is refused: a job cannot make the agent upload a file from outside its run directory. The
//! archive is packed in the agent's own directory for the run, out of the job's reach.

use crate::config::AgentConfig;
use crate::gateway::{GatewayClient, GatewayError};
use std::path::Path;
use tracing::info;
use uuid::Uuid;

/// The folder phases put artifacts in, inside the run directory.
pub const DIR: &str = "artifacts";

#[derive(Debug, thiserror::Error)]
pub enum ArtifactsError {
    #[error("the job left artifacts but the agent has no server_address to upload them to")]
    NoGateway,
    #[error("cannot pack the artifacts: {0}")]
    Pack(std::io::Error),
    #[error("the run directory's artifacts is a symbolic link; only a real folder is uploaded")]
    Link,
    #[error("cannot upload the artifacts: {0}")]
    Upload(#[from] GatewayError),
}

/// Packs and uploads `run_dir/artifacts`; returns the archive's size, or `None` when there was
/// no such folder.
pub async fn save(
    config: &AgentConfig,
    job_id: Uuid,
    run_dir: &Path,
    scratch: &Path,
) -> Result<Option<u64>, ArtifactsError> {
    let folder = run_dir.join(DIR);
    match tokio::fs::symlink_metadata(&folder).await {
        Ok(m) if m.is_symlink() => return Err(ArtifactsError::Link),
        Ok(m) if m.is_dir() => {}
        _ => return Ok(None),
    }
    let gateway = config.gateway.clone().ok_or(ArtifactsError::NoGateway)?;
    let archive = scratch.join("artifacts.tar.gz");
    let size = tokio::task::spawn_blocking({
        let (folder, archive) = (folder.clone(), archive.clone());
        move || pack(&folder, &archive)
    })
    .await
    .map_err(|e| ArtifactsError::Pack(std::io::Error::other(e)))?
    .map_err(ArtifactsError::Pack)?;
    let client = GatewayClient::new(gateway);
    let uploaded = client
        .upload(
            &format!("/v1/result/{job_id}/artifact"),
            &archive,
            "artifact.tar.gz",
        )
        .await;
    let _ = tokio::fs::remove_file(&archive).await;
    uploaded?;
    info!(%job_id, bytes = size, "artifacts uploaded");
    Ok(Some(size))
}

/// Packs `folder` as `artifacts/…` into the tar.gz `archive`; returns its size.
pub fn pack(folder: &Path, archive: &Path) -> std::io::Result<u64> {
    let file = std::fs::File::create(archive)?;
    let gz = flate2::write::GzEncoder::new(file, flate2::Compression::default());
    let mut tar = tar::Builder::new(gz);
    tar.follow_symlinks(false);
    tar.append_dir_all(DIR, folder)?;
    tar.into_inner()?.finish()?.sync_all()?;
    Ok(std::fs::metadata(archive)?.len())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_linked_artifacts_folder_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let elsewhere = dir.path().join("agent-files");
        std::fs::create_dir_all(&elsewhere).unwrap();
        std::fs::write(elsewhere.join("secret"), b"x").unwrap();
        let run_dir = dir.path().join("run");
        std::fs::create_dir_all(&run_dir).unwrap();
        std::os::unix::fs::symlink(&elsewhere, run_dir.join(DIR)).unwrap();
        // A gateway nobody listens on: the refusal must come before any upload.
        let config = AgentConfig::parse(
            "agent_id: a\njob_queues: [q]\ntest_command: x\nserver_address: http://127.0.0.1:9\n",
        )
        .unwrap();
        let r = save(&config, Uuid::new_v4(), &run_dir, dir.path()).await;
        assert!(matches!(r, Err(ArtifactsError::Link)), "{r:?}");
    }

    #[test]
    fn the_folder_is_packed_under_artifacts() {
        let dir = tempfile::tempdir().unwrap();
        let folder = dir.path().join("artifacts");
        std::fs::create_dir_all(folder.join("logs")).unwrap();
        std::fs::write(folder.join("logs/x.log"), b"log").unwrap();
        std::os::unix::fs::symlink("/etc/passwd", folder.join("link")).unwrap();
        let archive = dir.path().join("a.tar.gz");
        pack(&folder, &archive).unwrap();
        let mut names = vec![];
        let mut t = tar::Archive::new(flate2::read::GzDecoder::new(
            std::fs::File::open(&archive).unwrap(),
        ));
        for e in t.entries().unwrap() {
            let e = e.unwrap();
            names.push((e.path().unwrap().display().to_string(), e.header().entry_type()));
        }
        assert!(
            names.iter().any(|(n, _)| n == "artifacts/logs/x.log"),
            "{names:?}"
        );
        assert!(
            names.iter().any(|(n, k)| n == "artifacts/link" && k.is_symlink()),
            "links stay links: {names:?}"
        );
    }
}
