//! A job's artifacts: whatever its phases left in the run directory's `artifacts/` folder is
//! packed into a tar.gz (entries `artifacts/…`, as Testflinger packs them) and uploaded to the
//! gateway at the end of the run, before the run is reported finished, so that the artifacts
//! are there when the job shows as complete. No folder, nothing to do.
//!
//! Symbolic links are stored as links, never followed, and an `artifacts` that is itself a link
//! is refused: a job cannot make the agent upload a file from outside its run directory. The
//! archive is packed in the agent's own directory for the run, out of the job's reach.
//!
//! The job's secret values are masked in every file, as in the output: a test command that saved
//! its environment or `testflinger.json` (which held the values during the test phase) into
//! `artifacts/` uploads `****` instead. Values are also looked for as JSON writes them
//! (escaped), since a copied `testflinger.json` is JSON; values the job transformed otherwise
//! (base64, reversed…) are not recognised.

use crate::gateway::{GatewayClient, GatewayError};
use broker_schema::mask::Masker;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use tracing::info;
use uuid::Uuid;

/// The folder phases put artifacts in, inside the run directory.
pub const DIR: &str = "artifacts";

#[derive(Debug, thiserror::Error)]
pub enum ArtifactsError {
    #[error(
        "the job left artifacts but the agent has no server_address and its lease grant no files \
         credential (the scheduler's --gateway-url) to upload them with"
    )]
    NoGateway,
    #[error("cannot pack the artifacts: {0}")]
    Pack(std::io::Error),
    #[error("the run directory's artifacts is a symbolic link; only a real folder is uploaded")]
    Link,
    #[error("cannot upload the artifacts: {0}")]
    Upload(#[from] GatewayError),
}

/// Packs and uploads (through `gateway`, retried with backoff) `run_dir/artifacts`, with
/// `secrets` masked in every file; returns the archive's size, or `None` when there was no
/// such folder.
pub async fn save(
    gateway: Option<&GatewayClient>,
    job_id: Uuid,
    run_dir: &Path,
    scratch: &Path,
    secrets: &Masker,
) -> Result<Option<u64>, ArtifactsError> {
    let folder = run_dir.join(DIR);
    match tokio::fs::symlink_metadata(&folder).await {
        Ok(m) if m.is_symlink() => return Err(ArtifactsError::Link),
        Ok(m) if m.is_dir() => {}
        _ => return Ok(None),
    }
    let client = gateway.ok_or(ArtifactsError::NoGateway)?;
    let archive = scratch.join("artifacts.tar.gz");
    let size = tokio::task::spawn_blocking({
        let (folder, archive, scratch) = (folder.clone(), archive.clone(), scratch.to_owned());
        let masker = with_json_forms(secrets);
        move || {
            if masker.is_empty() {
                pack(&folder, &archive)
            } else {
                pack_masked(&folder, &archive, &masker, &scratch)
            }
        }
    })
    .await
    .map_err(|e| ArtifactsError::Pack(std::io::Error::other(e)))?
    .map_err(ArtifactsError::Pack)?;
    let uploaded = client
        .upload(
            &format!("/v1/result/{job_id}/artifact"),
            &archive,
            "artifact.tar.gz",
            crate::gateway::upload_retries(),
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

/// The values of `secrets` and, where they differ, their forms inside a JSON string.
fn with_json_forms(secrets: &Masker) -> Masker {
    let values = secrets.values();
    let escaped = values.iter().filter_map(|v| {
        let v = String::from_utf8_lossy(v);
        let json = serde_json::to_string(&v).expect("a string serializes");
        let inner = json[1..json.len() - 1].to_owned();
        (inner != v).then_some(inner)
    });
    let mut all: Vec<String> = values
        .iter()
        .map(|v| String::from_utf8_lossy(v).into_owned())
        .collect();
    all.extend(escaped);
    Masker::new(all)
}

/// [`pack`], with every regular file's contents masked on the way: each file is masked into a
/// temporary copy in `scratch` (tar needs the size first), whose bytes go into the archive under
/// the file's name and metadata.
pub fn pack_masked(folder: &Path, archive: &Path, masker: &Masker, scratch: &Path) -> std::io::Result<u64> {
    let file = std::fs::File::create(archive)?;
    let gz = flate2::write::GzEncoder::new(file, flate2::Compression::default());
    let mut tar = tar::Builder::new(gz);
    tar.follow_symlinks(false);
    let copy = scratch.join("artifact.masked");
    let mut pending = vec![(folder.to_path_buf(), PathBuf::from(DIR))];
    while let Some((path, name)) = pending.pop() {
        let meta = std::fs::symlink_metadata(&path)?;
        if meta.is_file() {
            let size = mask_into(&path, &copy, masker)?;
            let mut header = tar::Header::new_gnu();
            header.set_metadata(&meta);
            header.set_size(size);
            tar.append_data(&mut header, &name, std::fs::File::open(&copy)?)?;
            continue;
        }
        // Directories, links and the rest as `pack` stores them (links as links).
        tar.append_path_with_name(&path, &name)?;
        if meta.is_dir() {
            let mut entries: Vec<_> = std::fs::read_dir(&path)?.collect::<Result<_, _>>()?;
            entries.sort_by_key(|e| std::cmp::Reverse(e.file_name()));
            for e in entries {
                pending.push((e.path(), name.join(e.file_name())));
            }
        }
    }
    let _ = std::fs::remove_file(&copy);
    tar.into_inner()?.finish()?.sync_all()?;
    Ok(std::fs::metadata(archive)?.len())
}

/// Copies `src` to `dst` with every value masked; returns the copy's size.
fn mask_into(src: &Path, dst: &Path, masker: &Masker) -> std::io::Result<u64> {
    use std::io::{Read, Write};
    let mut input = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(nix::libc::O_NOFOLLOW)
        .open(src)?;
    let mut out = std::io::BufWriter::new(std::fs::File::create(dst)?);
    let mut stream = masker.stream();
    let mut buf = vec![0; 64 * 1024];
    let mut size = 0u64;
    loop {
        let n = input.read(&mut buf)?;
        let masked = if n == 0 {
            stream.finish()
        } else {
            stream.push(&buf[..n])
        };
        out.write_all(&masked)?;
        size += masked.len() as u64;
        if n == 0 {
            break;
        }
    }
    out.into_inner().map_err(|e| e.into_error())?.sync_data()?;
    Ok(size)
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
        let gateway = GatewayClient::new(crate::gateway::GatewayConfig {
            url: "http://127.0.0.1:9".into(),
            client_id: None,
            client_secret: None,
            token_file: None,
        });
        let r = save(
            Some(&gateway),
            Uuid::new_v4(),
            &run_dir,
            dir.path(),
            &Masker::default(),
        )
        .await;
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

    #[test]
    fn secret_values_are_masked_in_every_file_even_as_json_writes_them() {
        let dir = tempfile::tempdir().unwrap();
        let folder = dir.path().join("artifacts");
        std::fs::create_dir_all(folder.join("logs")).unwrap();
        std::fs::write(folder.join("logs/env.txt"), "LAB_TOKEN=tok-123\nother\n").unwrap();
        std::fs::write(folder.join("job.json"), r#"{"secrets": {"Q": "say \"hi\""}}"#).unwrap();
        std::os::unix::fs::symlink("/etc/passwd", folder.join("link")).unwrap();
        let archive = dir.path().join("a.tar.gz");
        let masker = with_json_forms(&Masker::new(["tok-123", "say \"hi\""]));
        pack_masked(&folder, &archive, &masker, dir.path()).unwrap();
        let mut files = std::collections::BTreeMap::new();
        let mut t = tar::Archive::new(flate2::read::GzDecoder::new(
            std::fs::File::open(&archive).unwrap(),
        ));
        for e in t.entries().unwrap() {
            use std::io::Read;
            let mut e = e.unwrap();
            let name = e.path().unwrap().display().to_string();
            let kind = e.header().entry_type();
            let mut text = String::new();
            e.read_to_string(&mut text).unwrap();
            files.insert(name, (kind, text));
        }
        assert_eq!(files["artifacts/logs/env.txt"].1, "LAB_TOKEN=****\nother\n");
        assert_eq!(files["artifacts/job.json"].1, r#"{"secrets": {"Q": "****"}}"#);
        assert!(files["artifacts/link"].0.is_symlink(), "{files:?}");
        assert!(
            files.contains_key("artifacts/logs") || files.contains_key("artifacts/logs/"),
            "{files:?}"
        );
        // The originals are the job's: left as they were.
        assert!(
            std::fs::read_to_string(folder.join("logs/env.txt"))
                .unwrap()
                .contains("tok-123")
        );
    }
}
