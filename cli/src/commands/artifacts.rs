//! `flinger artifacts JOB [--filename FILE]`: downloads the tarball of what the job's phases left
//! in their `artifacts/` folder (`GET /v1/result/<id>/artifact`), to `artifacts.tgz` by default
//! (`-` writes it to stdout). A job without artifacts exits 2.

use super::Ctx;
use crate::args::ArtifactsArgs;
use crate::exit::{CliError, Exit};
use serde_json::json;

pub async fn run(ctx: &Ctx<'_>, args: ArtifactsArgs) -> Result<Exit, CliError> {
    let id = args.job_id;
    let to_stdout = args.filename.as_os_str() == "-";
    if to_stdout && ctx.ui.is_json() {
        return Err(CliError::Usage("--json cannot be used with --filename -".into()));
    }
    let dest = (!to_stdout).then_some(args.filename.as_path());
    if !to_stdout {
        ctx.ui.hint("Downloading artifacts tarball...");
    }
    if !ctx.client.download_artifact(id, dest).await? {
        return Err(CliError::Usage(format!("job {id} has no artifacts")));
    }
    if let Some(path) = dest {
        let size = std::fs::metadata(path).map(|m| m.len()).unwrap_or(0);
        if ctx.ui.is_json() {
            ctx.ui.document(
                &json!({"job_id": id.to_string(), "filename": path.display().to_string(), "bytes": size}),
            )?;
        } else {
            ctx.ui
                .line(&format!("Artifacts downloaded to {}", path.display()))?;
        }
    }
    Ok(Exit::Success)
}
