//! A job's attachments: before its phases the agent downloads the archive the submitter
//! uploaded and unpacks it into the run directory's `attachments/` folder, where each phase
//! finds its files under `attachments/<phase>/` (Testflinger's layout).
//!
//! The archive comes from a user, so it is unpacked defensively: only regular files and
//! directories, every entry under `provision/`, `firmware_update/` or `test/` (as Testflinger's
//! secure filter insists), and none may land outside `attachments/` (absolute paths, `..`);
//! anything else fails the run before a phase starts. The downloaded archive itself is kept in
//! the agent's own directory for the run, out of the job's reach.

use crate::gateway::{GatewayClient, GatewayError};
use broker_schema::JobDefinition;
use std::path::{Component, Path, PathBuf};
use tracing::info;
use uuid::Uuid;

/// Where attachments are unpacked, inside the run directory.
pub const DIR: &str = "attachments";

#[derive(Debug, thiserror::Error)]
pub enum AttachmentsError {
    #[error(
        "the job has attachments but the agent has no server_address and its lease grant no files \
         credential (the scheduler's --gateway-url) to fetch them with"
    )]
    NoGateway,
    #[error("cannot download the attachments: {0}")]
    Download(#[from] GatewayError),
    #[error("the gateway has no attachments for this job")]
    Missing,
    #[error("attachments refused: entry {0:?} would land outside attachments/")]
    Escapes(PathBuf),
    #[error("attachments refused: entry {0:?} is not under provision/, firmware_update/ or test/")]
    NotUnderAPhase(PathBuf),
    #[error("attachments refused: entry {0:?} is not a regular file or directory")]
    NotAFile(PathBuf),
    #[error("cannot unpack the attachments: {0}")]
    Unpack(std::io::Error),
}

/// Fetches (through `gateway`) and unpacks the job's attachments, if it has any; returns how
/// many files it wrote.
pub async fn prepare(
    gateway: Option<&GatewayClient>,
    job: &JobDefinition,
    job_id: Uuid,
    run_dir: &Path,
    scratch: &Path,
) -> Result<usize, AttachmentsError> {
    if !job.has_attachments() {
        return Ok(0);
    }
    let client = gateway.ok_or(AttachmentsError::NoGateway)?;
    let archive = scratch.join("attachments.tar.gz");
    if !client
        .download(&format!("/v1/job/{job_id}/attachments"), &archive)
        .await?
    {
        return Err(AttachmentsError::Missing);
    }
    let dest = run_dir.join(DIR);
    let files = tokio::task::spawn_blocking({
        let (archive, dest) = (archive.clone(), dest.clone());
        move || unpack(&archive, &dest)
    })
    .await
    .map_err(|e| AttachmentsError::Unpack(std::io::Error::other(e)))??;
    let _ = tokio::fs::remove_file(&archive).await;
    info!(%job_id, files, "attachments unpacked");
    Ok(files)
}

/// The folders an archive's entries may be in: those of the phases that take attachments.
pub const PHASE_FOLDERS: [&str; 3] = ["provision", "firmware_update", "test"];

/// Whether `path` stays inside the directory it is joined to: only plain names (and `.`).
fn stays_inside(path: &Path) -> bool {
    path.components()
        .all(|c| matches!(c, Component::Normal(_) | Component::CurDir))
}

/// Whether `path` is one of the phase folders or below one.
fn under_a_phase(path: &Path) -> bool {
    let first = path.components().find(|c| !matches!(c, Component::CurDir));
    matches!(first, Some(Component::Normal(name)) if PHASE_FOLDERS.iter().any(|p| name == *p))
}

/// Unpacks a tar.gz into `dest` (created), refusing entries that are not plain files or
/// directories or would land outside it. Returns how many files it wrote.
pub fn unpack(archive: &Path, dest: &Path) -> Result<usize, AttachmentsError> {
    let file = std::fs::File::open(archive).map_err(AttachmentsError::Unpack)?;
    let mut tar = tar::Archive::new(flate2::read::GzDecoder::new(file));
    tar.set_preserve_permissions(true);
    tar.set_overwrite(true);
    std::fs::create_dir_all(dest).map_err(AttachmentsError::Unpack)?;
    let mut files = 0;
    for entry in tar.entries().map_err(AttachmentsError::Unpack)? {
        let mut entry = entry.map_err(AttachmentsError::Unpack)?;
        let path = entry.path().map_err(AttachmentsError::Unpack)?.into_owned();
        if !stays_inside(&path) {
            return Err(AttachmentsError::Escapes(path));
        }
        let kind = entry.header().entry_type();
        if !under_a_phase(&path) || (kind.is_file() && PHASE_FOLDERS.iter().any(|p| path == Path::new(p))) {
            return Err(AttachmentsError::NotUnderAPhase(path));
        }
        if !(kind.is_file() || kind.is_dir()) {
            return Err(AttachmentsError::NotAFile(path));
        }
        let target = dest.join(&path);
        if kind.is_dir() {
            std::fs::create_dir_all(&target).map_err(AttachmentsError::Unpack)?;
            continue;
        }
        if let Some(parent) = target.parent() {
            std::fs::create_dir_all(parent).map_err(AttachmentsError::Unpack)?;
        }
        entry.unpack(&target).map_err(AttachmentsError::Unpack)?;
        files += 1;
    }
    Ok(files)
}

#[cfg(test)]
mod tests {
    use super::*;
    use flate2::Compression;
    use flate2::write::GzEncoder;

    /// A tar.gz with `entries` (path, contents), written without the tar crate's own checks so
    /// that hostile paths can be made.
    fn archive(dir: &Path, entries: &[(&str, &[u8])]) -> PathBuf {
        let path = dir.join("a.tar.gz");
        let gz = GzEncoder::new(std::fs::File::create(&path).unwrap(), Compression::fast());
        let mut b = tar::Builder::new(gz);
        for (name, data) in entries {
            let mut h = tar::Header::new_gnu();
            h.set_size(data.len() as u64);
            h.set_mode(0o644);
            h.set_entry_type(tar::EntryType::Regular);
            let bytes = h.as_old_mut().name.as_mut();
            bytes[..name.len()].copy_from_slice(name.as_bytes());
            h.set_cksum();
            b.append(&h, *data).unwrap();
        }
        b.into_inner().unwrap().finish().unwrap();
        path
    }

    #[test]
    fn files_land_under_their_phase() {
        let dir = tempfile::tempdir().unwrap();
        let a = archive(
            dir.path(),
            &[("test/data/a.txt", b"hello"), ("provision/img", b"x")],
        );
        let dest = dir.path().join("run/attachments");
        assert_eq!(unpack(&a, &dest).unwrap(), 2);
        assert_eq!(std::fs::read(dest.join("test/data/a.txt")).unwrap(), b"hello");
    }

    #[test]
    fn entries_that_escape_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        for bad in ["../evil", "test/../../evil", "/etc/evil"] {
            let a = archive(dir.path(), &[(bad, b"x")]);
            let dest = dir.path().join("run/attachments");
            assert!(
                matches!(unpack(&a, &dest), Err(AttachmentsError::Escapes(_))),
                "{bad}"
            );
        }
        assert!(!dir.path().join("evil").exists());
        assert!(!dir.path().join("run/evil").exists());
    }

    #[test]
    fn only_the_phase_folders_may_be_unpacked() {
        let dir = tempfile::tempdir().unwrap();
        let dest = dir.path().join("run/attachments");
        let ok = archive(
            dir.path(),
            &[
                ("./test/a", b"1"),
                ("firmware_update/f", b"2"),
                ("provision/p", b"3"),
            ],
        );
        assert_eq!(unpack(&ok, &dest).unwrap(), 3);
        for bad in ["other/x", "testing/x", "reserve/keys", "top-level-file", "test"] {
            let a = archive(dir.path(), &[(bad, b"x")]);
            assert!(
                matches!(unpack(&a, &dest), Err(AttachmentsError::NotUnderAPhase(_))),
                "{bad}"
            );
        }
        assert!(!dest.join("other").exists());
    }

    #[test]
    fn links_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("l.tar.gz");
        let gz = GzEncoder::new(std::fs::File::create(&path).unwrap(), Compression::fast());
        let mut b = tar::Builder::new(gz);
        let mut h = tar::Header::new_gnu();
        h.set_entry_type(tar::EntryType::Symlink);
        h.set_size(0);
        b.append_link(&mut h, "test/link", "/etc/passwd").unwrap();
        b.into_inner().unwrap().finish().unwrap();
        assert!(matches!(
            unpack(&path, &dir.path().join("out")),
            Err(AttachmentsError::NotAFile(_))
        ));
    }
}
